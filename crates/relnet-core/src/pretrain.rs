//! `relnet pretrain`: the run configuration, and the dispatch from a method name to its
//! implementation (`crate::methods`) trained by the shared loop (`crate::trainer`).

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::time::Instant;

use burn::prelude::*;
use relnet_augment::PresetParams;
use relnet_models::BackboneKind;
use serde::{Deserialize, Serialize};

use crate::batch::epoch_order;
use crate::checkpoint::Checkpoint;
use crate::config::{ConfigError, RunConfig, check_range};
use crate::data::DataRoot;
use crate::data::registry::lookup;
use crate::device::DeviceSpec;
use crate::methods::deepcluster::{ClusterWeights, DeepCluster};
use crate::methods::deepinfomax::{DeepInfomax, PriorMode};
use crate::methods::relational::Relational;
use crate::methods::rotation::Rotation;
use crate::methods::simclr::{NtXent, Simclr};
use crate::methods::supervised::Supervised;
use crate::methods::{MethodKind, Views};
use crate::objective::{Aggregation, RelationLoss};
pub use crate::trainer::{EpochMetrics, Outcome, Reporter, fmt_secs};
use crate::trainer::{Run, train};

/// The resolved configuration of a pretraining run (written to `<out>/config.toml`).
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct PretrainConfig {
    /// relational, simclr, rotation, deepcluster, deepinfomax, supervised or random.
    pub method: MethodKind,
    pub dataset: String,
    pub data_root: Option<PathBuf>,
    pub backbone: BackboneKind,
    /// Augmentations per image for `relational` (reference 32; 4 for `synthetic` when unset).
    pub k: Option<usize>,
    /// Images per mini-batch (reference: 64 for relational, 128 for the baselines).
    pub batch_size: Option<usize>,
    /// Relation loss (relational).
    pub loss: RelationLoss,
    /// Pair aggregation (relational).
    pub aggregation: Aggregation,
    /// Epochs (reference 200; 3 for `synthetic` when unset).
    pub epochs: Option<usize>,
    /// Learning rate (Adam 1e-3; Deep InfoMax 1e-4; supervised SGD 0.1).
    pub lr: Option<f64>,
    /// NT-Xent temperature (simclr).
    pub temperature: f64,
    /// NT-Xent form (simclr): `log-mean` (reference code) or `mean-log` (standard).
    pub simclr_loss: NtXent,
    /// Prior term (deepinfomax): `joint` (reference) or `adversarial` (DIM paper).
    pub dim_prior: PriorMode,
    /// Cluster weights (deepcluster): `reference` (1 - count/N) or `inverse`.
    pub cluster_weights: ClusterWeights,
    /// k-means restarts (deepcluster; reference 5).
    pub kmeans_restarts: usize,
    pub seed: u64,
    pub out: PathBuf,
    pub device: DeviceSpec,
    /// Use only N images of the training split, drawn at random (fixed by `seed`; quick runs, tests).
    pub limit_images: Option<usize>,
}

impl Default for PretrainConfig {
    fn default() -> Self {
        PretrainConfig {
            method: MethodKind::Relational,
            dataset: "synthetic".into(),
            data_root: None,
            backbone: BackboneKind::Conv4,
            k: None,
            batch_size: None,
            loss: RelationLoss::Focal,
            aggregation: Aggregation::Cat,
            epochs: None,
            lr: None,
            temperature: 0.5,
            simclr_loss: NtXent::LogMean,
            dim_prior: PriorMode::Joint,
            cluster_weights: ClusterWeights::Reference,
            kmeans_restarts: 5,
            seed: 1,
            out: PathBuf::from("runs/pretrain"),
            device: DeviceSpec::Cpu,
            limit_images: None,
        }
    }
}

impl PretrainConfig {
    /// Fills method- and dataset-dependent defaults: the reference's K = 32 and 200 epochs, or a
    /// small fast setting (K = 4, 3 epochs) on the embedded `synthetic` data; the method's batch
    /// size and learning rate.
    pub fn resolved(mut self) -> Self {
        let small = self.dataset == "synthetic";
        let spec = self.method.spec();
        self.k.get_or_insert(if small { 4 } else { 32 });
        self.epochs.get_or_insert(if small { 3 } else { 200 });
        self.batch_size.get_or_insert(spec.default_batch);
        self.lr.get_or_insert(spec.default_lr);
        self
    }

    pub fn k(&self) -> usize {
        self.k.unwrap_or(32)
    }

    pub fn epochs(&self) -> usize {
        self.epochs.unwrap_or(200)
    }

    pub fn batch_size(&self) -> usize {
        self.batch_size.unwrap_or(self.method.spec().default_batch)
    }

    pub fn lr(&self) -> f64 {
        self.lr.unwrap_or(self.method.spec().default_lr)
    }
}

impl RunConfig for PretrainConfig {
    fn validate(&self) -> Result<(), ConfigError> {
        lookup(&self.dataset).map_err(|e| ConfigError::key("dataset", e.to_string()))?;
        if let Some(k) = self.k {
            check_range("k", k, 2, 64)?;
        }
        if let Some(b) = self.batch_size {
            check_range("batch_size", b, 2, 4096)?;
        }
        if let Some(e) = self.epochs {
            check_range("epochs", e, 1, 100_000)?;
        }
        if let Some(lr) = self.lr {
            if !(lr > 0.0 && lr <= 1.0) {
                return Err(ConfigError::key("lr", format!("value {lr} out of range (allowed (0, 1])")));
            }
        }
        if !(self.temperature > 0.0 && self.temperature <= 100.0) {
            return Err(ConfigError::key("temperature", format!("value {} out of range (allowed (0, 100])", self.temperature)));
        }
        check_range("kmeans_restarts", self.kmeans_restarts, 1, 100)?;
        if let Some(n) = self.limit_images {
            check_range("limit_images", n, 2, usize::MAX)?;
        }
        Ok(())
    }
}

/// The images `--limit-images N` keeps: N of the `total`, drawn without replacement with a
/// generator fixed by `seed`, in dataset order. Not the first N: dataset files are often sorted
/// by class (image folders, the CIFAR-10 JPEG copy), where the first N would be one or two classes.
pub fn limited_subset(total: usize, limit: usize, seed: u64) -> Vec<usize> {
    if limit >= total {
        return (0..total).collect();
    }
    let mut idx = epoch_order(total, seed ^ 0x0005_EED5_0B5E_7000, 0);
    idx.truncate(limit);
    idx.sort_unstable();
    idx
}

/// Runs (or resumes) a pretraining run. `stop` is polled after every step (Ctrl-C): the run
/// then checkpoints and returns `Interrupted`.
pub fn pretrain(cfg: &PretrainConfig, resume: bool, stop: Arc<AtomicBool>, report: &mut dyn Reporter) -> Result<Outcome, String> {
    let cfg = cfg.clone().resolved();
    let spec = cfg.method.spec();
    let out = &cfg.out;
    let saved = Checkpoint::new(out).progress()?;
    if saved.is_some() && !resume {
        return Err(format!("{} already holds a run; pass --resume to continue it, or choose another --out", out.display()));
    }
    if resume {
        check_same_config(out, &cfg)?;
    }
    std::fs::create_dir_all(out).map_err(|e| format!("{}: cannot create: {e}", out.display()))?;
    crate::config::save(&cfg, &out.join("config.toml")).map_err(|e| format!("{}: {e}", out.join("config.toml").display()))?;

    let device = cfg.device.device()?.autodiff();
    device.seed(cfg.seed);
    if cfg.method == MethodKind::Random {
        let backbone = out.join("backbone.bpk");
        relnet_models::io::save_backbone(&cfg.backbone.init(&device).valid(), cfg.backbone, &backbone).map_err(|e| e.to_string())?;
        report.line(&format!("random-weights backbone saved to {}", backbone.display()));
        return Ok(Outcome::Finished { backbone });
    }

    let info = lookup(&cfg.dataset).map_err(|e| e.to_string())?;
    let root = DataRoot::resolve(cfg.data_root.as_deref());
    let t = Instant::now();
    let split_name = if spec.needs_labels { info.train_split } else { info.pretrain_split };
    let split = info.load(split_name, &root).map_err(|e| e.to_string())?;
    let (mean, std) = info.norm_stats_reusing(&root, Some(&split)).map_err(|e| e.to_string())?;
    let classes = split.classes.len();
    let mut images = split.images;
    if let Some(limit) = cfg.limit_images {
        images.keep(&limited_subset(images.len(), limit, cfg.seed));
    }
    let n = images.len();
    let images = Arc::new(images);
    report.line(&format!("loaded {} {split_name} ({n} images) in {:.1} s", cfg.dataset, t.elapsed().as_secs_f64()));
    let pipeline = Arc::new(
        spec.preset
            .build(&PresetParams { side: images.width, padding: info.crop_padding, cutout: None, mean, std })
            .map_err(|e| e.to_string())?,
    );
    let run = Run {
        spec,
        backbone: cfg.backbone,
        out,
        images: images.clone(),
        classes,
        mean,
        std,
        pipeline,
        views: match spec.views {
            Views::K => cfg.k(),
            Views::Fixed(v) => v,
        },
        batch_size: cfg.batch_size(),
        epochs: cfg.epochs(),
        lr: cfg.lr(),
        seed: cfg.seed,
        device,
        resume: if resume { saved } else { None },
    };
    let b = cfg.backbone;
    match cfg.method {
        MethodKind::Relational => train(Relational { backbone: b, aggregation: cfg.aggregation, loss: cfg.loss }, run, stop, report),
        MethodKind::Simclr => train(Simclr { backbone: b, temperature: cfg.temperature, variant: cfg.simclr_loss }, run, stop, report),
        MethodKind::Rotation => train(Rotation { backbone: b }, run, stop, report),
        MethodKind::Deepinfomax => train(DeepInfomax { backbone: b, prior: cfg.dim_prior }, run, stop, report),
        MethodKind::Deepcluster => {
            let mut dc = DeepCluster::new(b, cfg.cluster_weights);
            dc.n_init = cfg.kmeans_restarts;
            train(dc, run, stop, report)
        }
        MethodKind::Supervised => {
            let labels = images.labels.as_ref().ok_or(format!("{} {split_name} has no labels", cfg.dataset))?.iter().map(|&l| l as i64).collect();
            let test = info.load(info.test_split, &root).map_err(|e| e.to_string())?.images;
            let path = out.join(format!("supervised_{}.json", cfg.dataset.replace([':', '/'], "_")));
            train(Supervised { backbone: b, labels, test: Some((test, path)) }, run, stop, report)
        }
        MethodKind::Random => unreachable!("handled above"),
    }
}

fn check_same_config(out: &Path, cfg: &PretrainConfig) -> Result<(), String> {
    let p = out.join("config.toml");
    let Ok(text) = std::fs::read_to_string(&p) else { return Ok(()) };
    let before: PretrainConfig = toml::from_str(&text).map_err(|e| format!("{}: {}", p.display(), e.message()))?;
    let mut a = before.clone();
    let mut b = cfg.clone();
    // The device may change between sessions; everything else must match.
    a.device = DeviceSpec::Cpu;
    b.device = DeviceSpec::Cpu;
    if a != b {
        return Err(format!(
            "{}: --resume with a different configuration than the run was started with; use the same flags (or none: \
             `relnet pretrain --config {} --resume`)",
            p.display(),
            p.display()
        ));
    }
    Ok(())
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
