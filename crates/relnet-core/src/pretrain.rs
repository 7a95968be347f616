//! `relnet pretrain --method relational`: self-supervised relational reasoning, end to end.
//!
//! Data order and augmentation draws are functions of (seed, epoch, batch), so a run resumed
//! from a checkpoint continues exactly where it stopped. Views are built on a background thread
//! (`relnet_augment::Prefetcher`) while the model trains on the previous batch.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

use burn::optim::{AdamConfig, GradientsParams};
use burn::prelude::*;
use relnet_augment::{Prefetcher, Preset, PresetParams, ViewBatch, build_views};
use relnet_models::BackboneKind;
use serde::{Deserialize, Serialize};

use crate::batch::{batches, epoch_order, to_tensor};
use crate::checkpoint::{Checkpoint, Progress};
use crate::config::{ConfigError, RunConfig, check_range};
use crate::data::registry::lookup;
use crate::data::DataRoot;
use crate::device::DeviceSpec;
use crate::objective::{Aggregation, RelationLoss};
use crate::relational::RelationalModel;

/// The resolved configuration of a pretraining run (written to `<out>/config.toml`).
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct PretrainConfig {
    /// `relational`, or `random` (the initialised backbone saved as is: the lower bound).
    /// The other baselines are a later issue.
    pub method: String,
    pub dataset: String,
    pub data_root: Option<PathBuf>,
    pub backbone: BackboneKind,
    /// Augmentations per image (reference 32; 4 for `synthetic` when unset).
    pub k: Option<usize>,
    /// Images per mini-batch M (reference 64).
    pub batch_size: usize,
    pub loss: RelationLoss,
    pub aggregation: Aggregation,
    /// Epochs (reference 200; 3 for `synthetic` when unset).
    pub epochs: Option<usize>,
    /// Adam learning rate for backbone and head (reference 1e-3).
    pub lr: f64,
    pub seed: u64,
    pub out: PathBuf,
    pub device: DeviceSpec,
    /// Use only the first N images of the pretraining split (quick runs, tests).
    pub limit_images: Option<usize>,
}

impl Default for PretrainConfig {
    fn default() -> Self {
        PretrainConfig {
            method: "relational".into(),
            dataset: "synthetic".into(),
            data_root: None,
            backbone: BackboneKind::Conv4,
            k: None,
            batch_size: 64,
            loss: RelationLoss::Focal,
            aggregation: Aggregation::Cat,
            epochs: None,
            lr: 1e-3,
            seed: 1,
            out: PathBuf::from("runs/pretrain"),
            device: DeviceSpec::Cpu,
            limit_images: None,
        }
    }
}

impl PretrainConfig {
    /// Fills dataset-dependent defaults: the reference's K = 32 and 200 epochs, or a small fast
    /// setting (K = 4, 3 epochs) on the embedded `synthetic` data.
    pub fn resolved(mut self) -> Self {
        let small = self.dataset == "synthetic";
        self.k.get_or_insert(if small { 4 } else { 32 });
        self.epochs.get_or_insert(if small { 3 } else { 200 });
        self
    }

    pub fn k(&self) -> usize {
        self.k.unwrap_or(32)
    }

    pub fn epochs(&self) -> usize {
        self.epochs.unwrap_or(200)
    }
}

impl RunConfig for PretrainConfig {
    fn validate(&self) -> Result<(), ConfigError> {
        if self.method != "relational" && self.method != "random" {
            return Err(ConfigError::key("method", format!("`{}` is not available yet (relational, random)", self.method)));
        }
        lookup(&self.dataset).map_err(|e| ConfigError::key("dataset", e.to_string()))?;
        if let Some(k) = self.k {
            check_range("k", k, 2, 64)?;
        }
        check_range("batch_size", self.batch_size, 2, 4096)?;
        if let Some(e) = self.epochs {
            check_range("epochs", e, 1, 100_000)?;
        }
        if !(self.lr > 0.0 && self.lr <= 1.0) {
            return Err(ConfigError::key("lr", format!("value {} out of range (allowed (0, 1])", self.lr)));
        }
        if let Some(n) = self.limit_images {
            check_range("limit_images", n, 2, usize::MAX)?;
        }
        Ok(())
    }
}

/// One line of `metrics.jsonl`.
#[derive(Serialize, Deserialize, Debug, Clone)]
pub struct EpochMetrics {
    pub epoch: usize,
    pub loss: f64,
    pub relation_accuracy: f64,
    pub steps: usize,
    pub seconds: f64,
    pub views_per_s: f64,
}

/// How a run ended.
#[derive(Debug, PartialEq, Eq)]
pub enum Outcome {
    Finished { backbone: PathBuf },
    Interrupted { epoch: usize, batch: usize },
}

/// Progress lines for the user (ETA, per-epoch summary).
pub trait Reporter {
    fn line(&mut self, text: &str);
}

impl<F: FnMut(&str)> Reporter for F {
    fn line(&mut self, text: &str) {
        self(text)
    }
}

/// Runs (or resumes) a pretraining run. `stop` is polled after every step (Ctrl-C): the run
/// then checkpoints and returns `Interrupted`.
pub fn pretrain(cfg: &PretrainConfig, resume: bool, stop: Arc<AtomicBool>, report: &mut dyn Reporter) -> Result<Outcome, String> {
    let cfg = cfg.clone().resolved();
    let (k, m, epochs) = (cfg.k(), cfg.batch_size, cfg.epochs());
    let out = &cfg.out;
    let ckpt = Checkpoint::new(out);
    let saved = ckpt.progress()?;
    if saved.is_some() && !resume {
        return Err(format!("{} already holds a run; pass --resume to continue it, or choose another --out", out.display()));
    }
    if resume {
        check_same_config(out, &cfg)?;
    }
    std::fs::create_dir_all(out).map_err(|e| format!("{}: cannot create: {e}", out.display()))?;
    crate::config::save(&cfg, &out.join("config.toml")).map_err(|e| format!("{}: {e}", out.join("config.toml").display()))?;

    let info = lookup(&cfg.dataset).map_err(|e| e.to_string())?;
    let root = DataRoot::resolve(cfg.data_root.as_deref());
    let t = Instant::now();
    let split = info.load(info.pretrain_split, &root).map_err(|e| e.to_string())?;
    let (mean, std) = info.norm_stats_reusing(&root, Some(&split)).map_err(|e| e.to_string())?;
    let images = Arc::new(split.images);
    let n = cfg.limit_images.unwrap_or(images.len()).min(images.len());
    report.line(&format!("loaded {} {} ({n} images) in {:.1} s", cfg.dataset, info.pretrain_split, t.elapsed().as_secs_f64()));
    let (h, w) = (images.height, images.width);
    let pipeline = Arc::new(
        Preset::Relational
            .build(&PresetParams { side: w, padding: info.crop_padding, cutout: None, mean, std })
            .map_err(|e| e.to_string())?,
    );

    let device = cfg.device.device()?.autodiff();
    device.seed(cfg.seed);
    let mut model = RelationalModel::new(cfg.backbone, cfg.aggregation, &device);
    if cfg.method == "random" {
        let backbone = out.join("backbone.bpk");
        relnet_models::io::save_backbone(&model.valid().backbone, cfg.backbone, &backbone).map_err(|e| e.to_string())?;
        report.line(&format!("random-weights backbone saved to {}", backbone.display()));
        return Ok(Outcome::Finished { backbone });
    }
    let mut optim = AdamConfig::new().with_epsilon(1e-8).init();
    let mut start = Progress { epoch: 0, batch: 0, finished: false };
    if let (true, Some(p)) = (resume, saved) {
        if p.finished {
            report.line("run already finished; nothing to do");
            return Ok(Outcome::Finished { backbone: out.join("backbone.bpk") });
        }
        (model, optim) = ckpt.load(model, optim)?;
        start = p;
        report.line(&format!("resuming at epoch {} batch {}", p.epoch + 1, p.batch));
    }
    let milestones: Vec<usize> = [1, 2, 3, 4].iter().map(|q| (epochs * q).div_ceil(4)).collect();

    for epoch in start.epoch..epochs {
        let order = epoch_order(n, cfg.seed, epoch);
        let plan: Vec<Vec<usize>> = batches(&order, m, 2).into_iter().map(|b| b.to_vec()).collect();
        let first = if epoch == start.epoch { start.batch } else { 0 };
        let steps = plan.len();
        let (imgs, pipe) = (images.clone(), pipeline.clone());
        let seed = cfg.seed;
        let mut next = first;
        let todo: Vec<(usize, Vec<usize>)> = plan.into_iter().enumerate().skip(first).collect();
        let mut feed = todo.into_iter();
        let prefetch = Prefetcher::new(2, move || {
            let (b, idx) = feed.next()?;
            let refs: Vec<&[u8]> = idx.iter().map(|&i| imgs.image(i)).collect();
            let view_seed = seed ^ ((epoch as u64) << 32) ^ b as u64;
            Some((idx.len(), build_views(&pipe, &refs, w, h, k, w, view_seed)))
        });
        let t0 = Instant::now();
        let (mut loss_sum, mut acc_sum, mut done) = (0.0f64, 0.0f64, 0usize);
        for (mb, views) in prefetch {
            let views: ViewBatch = views;
            let x = to_tensor(views, &device);
            let step = model.forward_step(x, mb, k, cfg.aggregation, cfg.loss);
            let loss_value = step.loss.clone().into_scalar::<f32>();
            if !loss_value.is_finite() {
                return Err(format!(
                    "loss became {loss_value} at epoch {} batch {next}: stopping; the last good checkpoint in {} is kept \
                     (try a lower --lr)",
                    epoch + 1,
                    out.join("checkpoint").display()
                ));
            }
            let grads = GradientsParams::from_grads(step.loss.backward(), &model);
            model = optim.step(cfg.lr, model, grads);
            loss_sum += loss_value as f64;
            acc_sum += step.accuracy as f64;
            done += 1;
            next += 1;
            if done % 20 == 0 || next == steps {
                let per = t0.elapsed().as_secs_f64() / done as f64;
                let left = (steps - next) as f64 * per + (epochs - epoch - 1) as f64 * steps as f64 * per;
                report.line(&format!(
                    "epoch {}/{epochs} step {next}/{steps} loss {:.4} acc {:.3} | {:.0} views/s | ETA {}",
                    epoch + 1,
                    loss_sum / done as f64,
                    acc_sum / done as f64,
                    (done * m * k) as f64 / t0.elapsed().as_secs_f64(),
                    fmt_secs(left)
                ));
            }
            if stop.load(Ordering::SeqCst) && next < steps {
                ckpt.save(&model, &optim, Progress { epoch, batch: next, finished: false })?;
                report.line(&format!("interrupted: checkpoint saved at epoch {} batch {next}; continue with --resume", epoch + 1));
                return Ok(Outcome::Interrupted { epoch, batch: next });
            }
        }
        let secs = t0.elapsed().as_secs_f64();
        let metrics = EpochMetrics {
            epoch: epoch + 1,
            loss: loss_sum / done.max(1) as f64,
            relation_accuracy: acc_sum / done.max(1) as f64,
            steps: done,
            seconds: secs,
            views_per_s: (done * m * k) as f64 / secs.max(1e-9),
        };
        append_metrics(&out.join("metrics.jsonl"), &metrics)?;
        report.line(&format!(
            "epoch {}/{epochs} done: loss {:.4} relation accuracy {:.3} in {} ({:.0} views/s)",
            epoch + 1,
            metrics.loss,
            metrics.relation_accuracy,
            fmt_secs(secs),
            metrics.views_per_s
        ));
        let finished = epoch + 1 == epochs;
        if milestones.contains(&(epoch + 1)) || stop.load(Ordering::SeqCst) {
            ckpt.save(&model, &optim, Progress { epoch: epoch + 1, batch: 0, finished })?;
        }
        if stop.load(Ordering::SeqCst) && !finished {
            report.line(&format!("interrupted after epoch {}; continue with --resume", epoch + 1));
            return Ok(Outcome::Interrupted { epoch: epoch + 1, batch: 0 });
        }
    }
    let backbone = out.join("backbone.bpk");
    let trained = model.valid().backbone;
    relnet_models::io::save_backbone(&trained, cfg.backbone, &backbone).map_err(|e| e.to_string())?;
    report.line(&format!("backbone saved to {}", backbone.display()));
    Ok(Outcome::Finished { backbone })
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

fn append_metrics(path: &Path, m: &EpochMetrics) -> Result<(), String> {
    use std::io::Write;
    let line = serde_json::to_string(m).map_err(|e| e.to_string())?;
    let mut f = std::fs::OpenOptions::new().create(true).append(true).open(path).map_err(|e| format!("{}: {e}", path.display()))?;
    writeln!(f, "{line}").map_err(|e| format!("{}: {e}", path.display()))
}

pub fn fmt_secs(s: f64) -> String {
    let s = s.max(0.0).round() as u64;
    if s >= 3600 {
        format!("{}h{:02}m", s / 3600, (s % 3600) / 60)
    } else {
        format!("{}m{:02}s", s / 60, s % 60)
    }
}
