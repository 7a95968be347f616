//! Pretraining runs: the configuration (top-level run keys plus the method's own `[method]`
//! table), and the preparation every task on the shared loop goes through (data, run directory,
//! resume checks), used by pretraining here and by fine-tuning in relnet-eval.

use relnet_models::Precision;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::time::Instant;

use relnet_models::BackboneKind;
use serde::{Deserialize, Serialize};

use crate::config::{ConfigError, RunConfig, check_range};
use crate::data::registry::lookup;
use crate::data::{DataRoot, ImageSet};
use crate::device::{DeviceList, DeviceSpec};
use crate::error::{Error, Result};
use crate::methods::MethodConfig;
use crate::run::{RunBuilder, TaskData, load_task_data, prepare_run_dir};
pub use crate::trainer::{EpochMetrics, Monitor, Outcome, Reporter, Tick, fmt_secs};

/// What is measured during pretraining: `knn:EVERY` (kNN accuracy of the eval-mode backbone every
/// EVERY epochs and after the last).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MonitorSpec {
    Knn { every: usize },
}

impl std::str::FromStr for MonitorSpec {
    type Err = String;
    fn from_str(s: &str) -> std::result::Result<Self, String> {
        let (kind, every) = s.split_once(':').unwrap_or((s, "1"));
        let every: usize = every
            .parse()
            .ok()
            .filter(|&e| e >= 1)
            .ok_or_else(|| format!("bad monitor `{s}`: the period must be a whole number of epochs >= 1"))?;
        match kind {
            "knn" => Ok(MonitorSpec::Knn { every }),
            _ => Err(format!("unknown monitor `{kind}` (expected knn or knn:EVERY)")),
        }
    }
}

impl std::fmt::Display for MonitorSpec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            MonitorSpec::Knn { every } => write!(f, "knn:{every}"),
        }
    }
}

impl Serialize for MonitorSpec {
    fn serialize<S: serde::Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for MonitorSpec {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        String::deserialize(d)?.parse().map_err(serde::de::Error::custom)
    }
}

/// The run-level options of `relnet pretrain` (flags derive from this struct; the method's own
/// options are in [`PretrainConfig::method`]).
#[derive(clap::Args, Serialize, Deserialize, Debug, Clone, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct PretrainConfig {
    /// Dataset name (see `relnet data list`): cifar10, stl10, mnist, synthetic, folder:/path...
    #[arg(long, default_value = "synthetic")]
    pub dataset: String,
    /// Folder holding the datasets (default: $RELNET_DATA, else ./data).
    #[arg(long, value_name = "DIR")]
    pub data_root: Option<PathBuf>,
    /// Precision of convolutions and linear layers: fp32, or bf16 mixed precision (bf16 inputs,
    /// weights and outputs, fp32 accumulation; weights, optimiser, batch norm and loss in fp32).
    #[arg(long, value_enum, default_value_t = Precision::Fp32)]
    #[serde(skip_serializing_if = "Precision::is_fp32")]
    pub precision: Precision,
    /// Backbone network.
    #[arg(long, value_parser = BackboneKind::value_parser(), default_value_t = BackboneKind::Conv4)]
    pub backbone: BackboneKind,
    /// Start from this saved backbone artifact instead of a random initialisation.
    #[arg(long, value_name = "FILE")]
    pub init: Option<PathBuf>,
    /// Images per mini-batch M (default: the method's, 64 for relational, 128 for the others).
    #[arg(long, value_name = "M")]
    pub batch_size: Option<usize>,
    /// Epochs (default 200, the reference's; 3 on synthetic).
    #[arg(long)]
    pub epochs: Option<usize>,
    /// Learning rate (default: the method's: Adam 1e-3, deepinfomax 1e-4, supervised SGD 0.1).
    #[arg(long)]
    pub lr: Option<f64>,
    /// Seed of initialisation, data order and augmentations.
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// Run directory: config.toml, metrics.jsonl, checkpoint/, backbone.bpk.
    #[arg(long, value_name = "DIR", default_value = "runs/pretrain")]
    pub out: PathBuf,
    /// Compute device: cpu, cuda, cuda:N, wgpu, wgpu:N (the last ones are cargo features).
    #[arg(long, default_value_t = DeviceSpec::Cpu, env = "RELNET_DEVICE")]
    pub device: DeviceSpec,
    /// Data-parallel training over several devices, e.g. cuda:0,cuda:1 (replaces --device): each
    /// device takes M/N images of every batch; gradients are averaged (docs/backends.md).
    #[arg(long, value_name = "LIST")]
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub devices: Option<DeviceList>,
    /// Use only N images of the training split, drawn at random (fixed by the seed; quick runs).
    #[arg(long, value_name = "N")]
    pub limit_images: Option<usize>,
    /// Measure the backbone during training: knn[:EVERY] (kNN accuracy in eval mode every EVERY
    /// epochs, into metrics.jsonl; off by default).
    #[arg(long, value_name = "knn[:EVERY]")]
    pub monitor: Option<MonitorSpec>,
    /// A step whose loss or gradient is NaN or infinite: stop (keep the last good checkpoint, name the epoch
    /// and step), or skip it (no update; logged in metrics.jsonl) and stop after
    /// --max-nonfinite in a row.
    #[arg(long, value_enum, default_value_t = OnNonFinite::Stop)]
    #[serde(skip_serializing_if = "OnNonFinite::is_stop")]
    pub on_nonfinite: OnNonFinite,
    /// With --on-nonfinite skip: stop after this many non-finite steps in a row.
    #[arg(long, value_name = "N", default_value_t = 10)]
    #[serde(skip_serializing_if = "is_ten")]
    pub max_nonfinite: usize,
    /// The method and its options (`[method]` table, `kind = "relational"` ...).
    #[arg(skip)]
    pub method: MethodConfig,
}

/// What a non-finite loss or gradient does to a run.
#[derive(clap::ValueEnum, Serialize, Deserialize, Debug, Clone, Copy, PartialEq, Eq, Default)]
#[serde(rename_all = "lowercase")]
pub enum OnNonFinite {
    /// Stop with an error naming the epoch and step; the last good checkpoint is kept.
    #[default]
    Stop,
    /// Skip the step (no update), log it, and stop after `max_nonfinite` in a row.
    Skip,
}

impl OnNonFinite {
    fn is_stop(&self) -> bool {
        *self == OnNonFinite::Stop
    }
}

// Written into config.toml only when not the default, so configurations (and the grid's cell
// hashes) of runs that never set them stay as they were.
fn is_ten(n: &usize) -> bool {
    *n == 10
}

impl Default for PretrainConfig {
    fn default() -> Self {
        crate::config::clap_defaults()
    }
}

impl PretrainConfig {
    /// Fills method- and dataset-dependent defaults: the reference's K = 32 and 200 epochs, or a
    /// small fast setting (K = 4, 3 epochs) on the embedded `synthetic` data; the method's batch
    /// size and learning rate.
    pub fn resolved(mut self) -> Self {
        let small = lookup(&self.dataset).is_ok_and(|info| info.small);
        let spec = self.method.get().spec();
        self.method.get_mut().resolve(small);
        self.epochs.get_or_insert(if small { 3 } else { 200 });
        self.batch_size.get_or_insert(spec.default_batch);
        self.lr.get_or_insert(spec.default_lr);
        self
    }

    pub fn epochs(&self) -> usize {
        self.epochs.unwrap_or(200)
    }

    pub fn batch_size(&self) -> usize {
        self.batch_size.unwrap_or(self.method.get().spec().default_batch)
    }

    pub fn lr(&self) -> f64 {
        self.lr.unwrap_or(self.method.get().spec().default_lr)
    }
}

impl RunConfig for PretrainConfig {
    fn validate(&self) -> std::result::Result<(), ConfigError> {
        lookup(&self.dataset).map_err(|e| ConfigError::key("dataset", e.to_string()))?;
        if let Some(b) = self.batch_size {
            check_range("batch_size", b, 2, 4096)?;
        }
        if let Some(e) = self.epochs {
            check_range("epochs", e, 1, 100_000)?;
        }
        if let Some(lr) = self.lr {
            check_lr("lr", lr)?;
        }
        if let Some(n) = self.limit_images {
            check_range("limit_images", n, 2, usize::MAX)?;
        }
        check_range("max_nonfinite", self.max_nonfinite, 1, 1_000_000)?;
        self.method.get().validate()
    }
}

/// A learning rate in (0, 1].
pub fn check_lr(key: &str, lr: f64) -> std::result::Result<(), ConfigError> {
    if lr > 0.0 && lr <= 1.0 {
        Ok(())
    } else {
        Err(ConfigError::key(key, format!("value {lr} out of range (allowed (0, 1])")))
    }
}

/// Runs (or resumes) a pretraining run. `stop` is polled after every step (Ctrl-C): the run
/// then checkpoints and returns `Interrupted`. `monitor` is what `cfg.monitor` names, built by
/// the caller (relnet-eval's kNN), or `None`.
pub fn pretrain(
    cfg: &PretrainConfig,
    resume: bool,
    stop: Arc<AtomicBool>,
    report: &mut dyn Reporter,
    monitor: Option<&mut dyn Monitor>,
) -> Result<Outcome> {
    let cfg = cfg.clone().resolved();
    let method = cfg.method.get();
    let spec = method.spec();
    let out = &cfg.out;
    let (saved, _lock) = prepare_run_dir(out, &cfg, resume)?;
    let (device, replicas) = match &cfg.devices {
        Some(DeviceList(list)) if list.len() > 1 => {
            let m = cfg.batch_size();
            if m < 2 * list.len() {
                return Err(Error::Invalid(format!(
                    "data-parallel training over {} devices needs a batch of at least {} images (2 per device), not {m}",
                    list.len(),
                    2 * list.len()
                )));
            }
            let all = list.iter().map(|d| Ok(d.device()?.autodiff())).collect::<Result<Vec<_>>>()?;
            (all[0].clone(), all[1..].to_vec())
        }
        Some(DeviceList(list)) => (list[0].device()?.autodiff(), Vec::new()),
        None => (cfg.device.device()?.autodiff(), Vec::new()),
    };
    let info = lookup(&cfg.dataset)?;
    let root = DataRoot::resolve(cfg.data_root.as_deref());
    let t = Instant::now();
    let split = if spec.needs_labels { info.train_split } else { info.pretrain_split };
    let data = if spec.needs_data {
        let d = load_task_data(info.clone(), root.clone(), split, cfg.limit_images, cfg.seed)?;
        report.line(&format!(
            "loaded {} {} ({} images) in {:.1} s",
            cfg.dataset,
            split.as_str(),
            d.images.len(),
            t.elapsed().as_secs_f64()
        ));
        d
    } else {
        let side = info.image_size.map_or(32, |(h, _)| h);
        TaskData {
            info: info.clone(),
            root: root.clone(),
            split,
            images: ImageSet::new(side, side, 3, Vec::new(), None)?,
            classes: 0,
            mean: [0.0; 3],
            std: [1.0; 3],
        }
    };
    let run = RunBuilder::new(spec, cfg.backbone, out, &cfg.dataset, data, device)
        .init(cfg.init.clone())
        .views(method.views())
        .batch_size(cfg.batch_size())
        .epochs(cfg.epochs())
        .lr(cfg.lr())
        .seed(cfg.seed)
        .replicas(replicas)
        .resume(saved)
        .on_nonfinite((cfg.on_nonfinite == OnNonFinite::Skip).then_some(cfg.max_nonfinite))
        .precision(cfg.precision)
        .build()?;
    method.launch(run, stop, report, monitor)
}

/// The images `--limit-images N` keeps: N of the `total`, drawn without replacement with a
/// generator fixed by `seed`, in dataset order. Not the first N: dataset files are often sorted
/// by class (image folders, the CIFAR-10 JPEG copy), where the first N would be one or two classes.
pub fn limited_subset(total: usize, limit: usize, seed: u64) -> Vec<usize> {
    if limit >= total {
        return (0..total).collect();
    }
    let mut idx =
        crate::batch::shuffled(total, crate::streams::stream(seed, crate::streams::Purpose::ImageSubset, &[]));
    idx.truncate(limit);
    idx.sort_unstable();
    idx
}

#[cfg(test)]
mod subset_tests {
    use super::limited_subset;

    #[test]
    fn limited_subset_spans_a_class_sorted_set() {
        // 1,000 images sorted by class, 100 per class: the first 100 would be one class.
        let got = limited_subset(1000, 100, 1);
        assert_eq!(got.len(), 100);
        assert!(got.windows(2).all(|w| w[0] < w[1]), "sorted and distinct");
        let mut classes: Vec<usize> = got.iter().map(|i| i / 100).collect();
        classes.dedup();
        assert_eq!(classes.len(), 10, "every class represented");
        assert_eq!(limited_subset(1000, 100, 1), got, "fixed by the seed");
        assert_ne!(limited_subset(1000, 100, 2), got, "a different seed draws differently");
        assert_eq!(limited_subset(5, 9, 1), vec![0, 1, 2, 3, 4]);
    }
}
