//! What every task on the shared loop goes through before its first step, in one place: the run
//! directory (lock, resume check, resolved config), the training split, and [`RunBuilder`], which
//! checks the images against the backbone, builds the augmentation pipeline and assembles the
//! [`Run`]. Pretraining and fine-tuning both start here.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use burn::prelude::*;
use relnet_augment::{Preset, PresetParams};
use relnet_models::BackboneKind;
use serde::Serialize;

use crate::checkpoint::{Checkpoint, Progress};
use crate::data::registry::{DatasetInfo, Split};
use crate::data::{DataRoot, ImageSet};
use crate::error::{Error, Result};
use crate::methods::MethodSpec;
use crate::pretrain::limited_subset;
use crate::trainer::Run;

/// An error unless `kind` can take `height x width` images of `dataset`.
pub fn check_image_size(kind: BackboneKind, dataset: &str, height: usize, width: usize) -> Result<()> {
    let min = kind.spec().min_side;
    if height < min || width < min {
        return Err(Error::Invalid(format!(
            "dataset `{dataset}` has {height}x{width} images; the {kind} backbone needs at least {min}x{min}"
        )));
    }
    Ok(())
}

/// A split loaded for training: the images (optionally a random subset), the class count and the
/// normalisation of the dataset.
pub struct TaskData {
    pub info: DatasetInfo,
    pub root: DataRoot,
    pub split: Split,
    pub images: ImageSet,
    pub classes: usize,
    pub mean: [f32; 3],
    pub std: [f32; 3],
}

/// Loads `split` of a dataset (and its normalisation), keeping `limit` random images when given.
pub fn load_task_data(
    info: DatasetInfo,
    root: DataRoot,
    split: Split,
    limit: Option<usize>,
    seed: u64,
) -> Result<TaskData> {
    let loaded = info.load(split, &root)?;
    let (mean, std) = info.norm_stats_reusing(&root, Some(&loaded))?;
    let classes = loaded.classes.len();
    let mut images = loaded.images;
    if let Some(limit) = limit {
        images.keep(&limited_subset(images.len(), limit, seed));
    }
    Ok(TaskData { info, root, split, images, classes, mean, std })
}

/// The top-level keys (and `table.key` one level down) whose values differ between two configs.
fn changed_keys(before: Option<toml::Table>, now: Option<toml::Table>) -> Vec<String> {
    let (Some(before), Some(now)) = (before, now) else { return vec!["(unreadable saved config)".into()] };
    let mut keys: Vec<String> = Vec::new();
    let names: std::collections::BTreeSet<&String> = before.keys().chain(now.keys()).collect();
    for k in names {
        match (before.get(k), now.get(k)) {
            (Some(toml::Value::Table(a)), Some(toml::Value::Table(b))) => {
                let inner: std::collections::BTreeSet<&String> = a.keys().chain(b.keys()).collect();
                keys.extend(inner.into_iter().filter(|i| a.get(*i) != b.get(*i)).map(|i| format!("{k}.{i}")));
            }
            (a, b) if a != b => keys.push(k.clone()),
            _ => {}
        }
    }
    keys
}

/// Prepares a run directory: refuses one that holds a run unless resuming, refuses a resume whose
/// configuration differs (the device, data root and paths may change), writes the resolved
/// configuration. Returns the
/// saved progress to resume from.
///
/// The run directory is locked first (`run.lock`): a second process on the same directory is
/// refused with `Error::Locked`, and the lock, returned with the progress, is held until it is
/// dropped at the end of the run.
pub fn prepare_run_dir<C: Serialize>(
    out: &Path,
    config: &C,
    resume: bool,
) -> Result<(Option<Progress>, crate::fsutil::DirLock)> {
    std::fs::create_dir_all(out).map_err(|e| Error::io(out, e))?;
    let lock = match crate::fsutil::DirLock::take(out, "run.lock").map_err(|e| Error::io(out.join("run.lock"), e))? {
        Ok(l) => l,
        Err(holder) => return Err(Error::Locked { dir: out.to_path_buf(), holder }),
    };
    let saved = Checkpoint::new(out).progress()?;
    if saved.is_some() && !resume {
        return Err(Error::RunExists { dir: out.to_path_buf() });
    }
    let path = out.join("config.toml");
    let now = crate::config::to_toml(config);
    if resume && let Ok(before) = std::fs::read_to_string(&path) {
        // Where the run reads and writes (device, data root, its own folder, where results
        // go, the path of the backbone it fine-tunes, whose content its folder's name
        // already fixes) may change between the start and the resume: a moved results
        // folder or another machine's data root resumes the same run.
        let strip = |t: &str| -> Option<toml::Table> {
            let mut table: toml::Table = t.parse().ok()?;
            for key in ["device", "devices", "data_root", "out", "results", "backbone"] {
                table.remove(key);
            }
            Some(table)
        };
        let (before, now_table) = (strip(&before), strip(&now));
        if before.is_none() || before != now_table {
            return Err(Error::ConfigChanged { config: path, keys: changed_keys(before, now_table) });
        }
    }
    crate::fsutil::write_atomic(&path, now.as_bytes()).map_err(|e| Error::io(&path, e))?;
    Ok((if resume { saved } else { None }, lock))
}

/// A preset's pipeline for `images` of a dataset.
pub fn pipeline_for(
    preset: Preset,
    images: &ImageSet,
    info: &DatasetInfo,
    cutout: Option<f64>,
    mean: [f32; 3],
    std: [f32; 3],
) -> Result<relnet_augment::Pipeline> {
    Ok(preset.build(&PresetParams { side: images.width, padding: info.crop_padding, cutout, mean, std })?)
}

/// Assembles a [`Run`]: the method's spec, the backbone, the run directory and the training data,
/// then the loop's settings (each with a default: one view, the spec's batch size and learning
/// rate, one epoch, seed 1, one device, a fresh start, stop on a non-finite step, no cutout).
pub struct RunBuilder<'a> {
    spec: MethodSpec,
    backbone: BackboneKind,
    out: &'a Path,
    dataset: String,
    data: TaskData,
    device: Device,
    init: Option<PathBuf>,
    views: usize,
    batch_size: usize,
    epochs: usize,
    lr: f64,
    seed: u64,
    replicas: Vec<Device>,
    resume: Option<Progress>,
    on_nonfinite: Option<usize>,
    cutout: Option<f64>,
    precision: relnet_models::Precision,
}

impl<'a> RunBuilder<'a> {
    pub fn new(
        spec: MethodSpec,
        backbone: BackboneKind,
        out: &'a Path,
        dataset: &str,
        data: TaskData,
        device: Device,
    ) -> Self {
        RunBuilder {
            spec,
            backbone,
            out,
            dataset: dataset.to_string(),
            data,
            device,
            init: None,
            views: 1,
            batch_size: spec.default_batch,
            epochs: 1,
            lr: spec.default_lr,
            seed: 1,
            replicas: Vec::new(),
            resume: None,
            on_nonfinite: None,
            cutout: None,
            precision: relnet_models::Precision::Fp32,
        }
    }

    /// Start from this saved backbone artifact.
    pub fn init(mut self, init: Option<PathBuf>) -> Self {
        self.init = init;
        self
    }

    pub fn views(mut self, views: usize) -> Self {
        self.views = views;
        self
    }

    pub fn batch_size(mut self, m: usize) -> Self {
        self.batch_size = m;
        self
    }

    pub fn epochs(mut self, epochs: usize) -> Self {
        self.epochs = epochs;
        self
    }

    pub fn lr(mut self, lr: f64) -> Self {
        self.lr = lr;
        self
    }

    pub fn seed(mut self, seed: u64) -> Self {
        self.seed = seed;
        self
    }

    /// More devices for data-parallel training (autodiff).
    pub fn replicas(mut self, replicas: Vec<Device>) -> Self {
        self.replicas = replicas;
        self
    }

    /// The progress to resume from ([`prepare_run_dir`] returns it).
    pub fn resume(mut self, progress: Option<Progress>) -> Self {
        self.resume = progress;
        self
    }

    /// `Some(n)`: skip non-finite steps, stop after `n` in a row; `None`: stop at the first.
    pub fn on_nonfinite(mut self, limit: Option<usize>) -> Self {
        self.on_nonfinite = limit;
        self
    }

    /// Cutout of this size (fraction of the image area) in the preset's pipeline.
    pub fn cutout(mut self, cutout: Option<f64>) -> Self {
        self.cutout = cutout;
        self
    }

    /// The precision of convolutions and linear layers.
    pub fn precision(mut self, precision: relnet_models::Precision) -> Self {
        self.precision = precision;
        self
    }

    /// Checks the images against the backbone and builds the augmentation pipeline.
    pub fn build(self) -> Result<Run<'a>> {
        let d = self.data;
        if !d.images.is_empty() {
            check_image_size(self.backbone, &self.dataset, d.images.height, d.images.width)?;
        }
        let pipeline = Arc::new(pipeline_for(self.spec.preset, &d.images, &d.info, self.cutout, d.mean, d.std)?);
        Ok(Run {
            spec: self.spec,
            backbone: self.backbone,
            init: self.init,
            out: self.out,
            dataset: self.dataset,
            dataset_info: d.info,
            root: d.root,
            images: Arc::new(d.images),
            classes: d.classes,
            mean: d.mean,
            std: d.std,
            pipeline,
            views: self.views,
            batch_size: self.batch_size,
            epochs: self.epochs,
            lr: self.lr,
            seed: self.seed,
            device: self.device,
            replicas: self.replicas,
            resume: self.resume,
            on_nonfinite: self.on_nonfinite,
            precision: self.precision,
        })
    }
}
