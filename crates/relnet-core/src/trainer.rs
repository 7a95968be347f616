//! The loop every method shares: deterministic data order, views built on a background thread
//! while the model trains on the previous batch, optimiser and learning-rate schedule, progress
//! with ETA, `metrics.jsonl`, checkpoints at 25/50/75/100% and on Ctrl-C, resume, NaN stop, and
//! the final backbone artifact.
//!
//! Data order and augmentation draws are functions of (seed, epoch, batch), so a run resumed
//! from a checkpoint continues exactly where it stopped.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

use burn::module::Module;
use burn::optim::momentum::MomentumConfig;
use burn::optim::{AdamConfig, GradientsParams, ModuleOptimizer, SgdConfig};
use burn::prelude::*;
use relnet_augment::Pipeline;
use relnet_models::BackboneKind;
use serde::{Deserialize, Serialize};

use crate::batch::{batches, epoch_order, to_tensor, view_feed};
use crate::checkpoint::{Checkpoint, Progress};
use crate::data::ImageSet;
use crate::methods::{Batch, Context, Method, MethodSpec, OptimKind};

/// One line of `metrics.jsonl`.
#[derive(Serialize, Deserialize, Debug, Clone)]
pub struct EpochMetrics {
    pub epoch: usize,
    pub loss: f64,
    /// The method's accuracy (`metric` names it: relation accuracy, rotation accuracy, ...).
    pub accuracy: f64,
    pub metric: String,
    pub lr: f64,
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

/// Everything the loop needs besides the method.
pub struct Run<'a> {
    pub spec: MethodSpec,
    pub backbone: BackboneKind,
    pub out: &'a Path,
    /// The images trained on (already cut to `--limit-images`).
    pub images: Arc<ImageSet>,
    pub classes: usize,
    pub mean: [f32; 3],
    pub std: [f32; 3],
    pub pipeline: Arc<Pipeline>,
    pub views: usize,
    pub batch_size: usize,
    pub epochs: usize,
    pub lr: f64,
    pub seed: u64,
    pub device: Device,
    pub resume: Option<Progress>,
}

impl Run<'_> {
    fn optimizer(&self) -> ModuleOptimizer {
        match self.spec.optim {
            OptimKind::Adam => AdamConfig::new().with_epsilon(1e-8).init(),
            OptimKind::SgdStep => SgdConfig::new().with_momentum(Some(MomentumConfig::new().with_momentum(0.9).with_dampening(0.0))).init(),
        }
    }

    /// Learning rate of an epoch: constant, or x0.1 from `int(0.5 E)` and again from
    /// `int(0.75 E)` (PyTorch `MultiStepLR` as the reference's supervised run).
    pub fn lr_at(&self, epoch: usize) -> f64 {
        lr_schedule(self.spec.optim, self.lr, self.epochs, epoch)
    }
}

pub fn lr_schedule(optim: OptimKind, lr: f64, epochs: usize, epoch: usize) -> f64 {
    match optim {
        OptimKind::Adam => lr,
        OptimKind::SgdStep => {
            let drops = [epochs / 2, epochs * 3 / 4].iter().filter(|&&m| epoch >= m).count();
            lr * 0.1f64.powi(drops as i32)
        }
    }
}

/// Trains `method` to the end of the run (or to a Ctrl-C) and saves the backbone.
pub fn train<T: Method>(mut method: T, run: Run, stop: Arc<AtomicBool>, report: &mut dyn Reporter) -> Result<Outcome, String> {
    let (k, m, epochs) = (run.views, run.batch_size, run.epochs);
    let spec = run.spec;
    let ckpt = Checkpoint::new(run.out);
    let device = run.device.clone();
    let mut say = |s: &str| report.line(s);
    let mut model = method.model(&context(&run, 0, &mut say), &device);
    let mut optim = run.optimizer();
    let mut start = Progress { epoch: 0, batch: 0, finished: false };
    if let Some(p) = run.resume {
        if p.finished {
            say("run already finished; nothing to do");
            return Ok(Outcome::Finished { backbone: run.out.join("backbone.bpk") });
        }
        (model, optim) = ckpt.load(model, optim)?;
        start = p;
        say(&format!("resuming at epoch {} batch {}", p.epoch + 1, p.batch));
    }
    let milestones: Vec<usize> = [1, 2, 3, 4].iter().map(|q| (epochs * q).div_ceil(4)).collect();

    for epoch in start.epoch..epochs {
        model = method.begin_epoch(model, &mut context(&run, epoch, &mut say))?;
        let lr = run.lr_at(epoch);
        let order = epoch_order(run.images.len(), run.seed, epoch);
        let plan: Vec<Vec<usize>> = batches(&order, m, if spec.drop_last { m } else { 2 }).into_iter().map(|b| b.to_vec()).collect();
        let first = if epoch == start.epoch { start.batch } else { 0 };
        let steps = plan.len();
        let mut next = first;
        let prefetch = view_feed(run.images.clone(), run.pipeline.clone(), plan, first, k, epoch, run.seed);
        let t0 = Instant::now();
        let (mut loss_sum, mut acc_sum, mut done) = (0.0f64, 0.0f64, 0usize);
        for (indices, views) in prefetch {
            let batch = Batch { x: to_tensor(views, &device), m: indices.len(), k, indices };
            let out = method.step(&model, &batch);
            let loss_value = out.loss.clone().into_scalar::<f32>();
            if !loss_value.is_finite() {
                return Err(format!(
                    "loss became {loss_value} at epoch {} batch {next}: stopping; the last good checkpoint in {} is kept \
                     (try a lower --lr)",
                    epoch + 1,
                    run.out.join("checkpoint").display()
                ));
            }
            let grads = GradientsParams::from_grads(out.loss.backward(), &model);
            model = optim.step(lr, model, grads);
            loss_sum += loss_value as f64;
            acc_sum += out.accuracy as f64;
            done += 1;
            next += 1;
            if done % 20 == 0 || next == steps {
                let per = t0.elapsed().as_secs_f64() / done as f64;
                let left = (steps - next) as f64 * per + (epochs - epoch - 1) as f64 * steps as f64 * per;
                say(&format!(
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
                say(&format!("interrupted: checkpoint saved at epoch {} batch {next}; continue with --resume", epoch + 1));
                return Ok(Outcome::Interrupted { epoch, batch: next });
            }
        }
        let secs = t0.elapsed().as_secs_f64();
        let metrics = EpochMetrics {
            epoch: epoch + 1,
            loss: loss_sum / done.max(1) as f64,
            accuracy: acc_sum / done.max(1) as f64,
            metric: spec.metric.into(),
            lr,
            steps: done,
            seconds: secs,
            views_per_s: (done * m * k) as f64 / secs.max(1e-9),
        };
        append_metrics(&run.out.join("metrics.jsonl"), &metrics)?;
        say(&format!(
            "epoch {}/{epochs} done: loss {:.4} {} {:.3} in {} ({:.0} views/s)",
            epoch + 1,
            metrics.loss,
            spec.metric,
            metrics.accuracy,
            fmt_secs(secs),
            metrics.views_per_s
        ));
        let finished = epoch + 1 == epochs;
        if milestones.contains(&(epoch + 1)) || stop.load(Ordering::SeqCst) {
            ckpt.save(&model, &optim, Progress { epoch: epoch + 1, batch: 0, finished })?;
        }
        if stop.load(Ordering::SeqCst) && !finished {
            say(&format!("interrupted after epoch {}; continue with --resume", epoch + 1));
            return Ok(Outcome::Interrupted { epoch: epoch + 1, batch: 0 });
        }
    }
    let trained = model.valid();
    method.finish(&trained, &mut context(&run, epochs, &mut say))?;
    let backbone = run.out.join("backbone.bpk");
    relnet_models::io::save_backbone(T::backbone(&trained), run.backbone, &backbone).map_err(|e| e.to_string())?;
    say(&format!("backbone saved to {}", backbone.display()));
    Ok(Outcome::Finished { backbone })
}

fn context<'a>(run: &'a Run, epoch: usize, report: &'a mut dyn FnMut(&str)) -> Context<'a> {
    Context { images: &run.images, classes: run.classes, mean: run.mean, std: run.std, seed: run.seed, epoch, device: &run.device, report }
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn step_schedule_drops_at_half_and_three_quarters() {
        let lrs: Vec<f64> = (0..10).map(|e| lr_schedule(OptimKind::SgdStep, 0.1, 10, e)).collect();
        let want = [0.1, 0.1, 0.1, 0.1, 0.1, 0.01, 0.01, 0.001, 0.001, 0.001];
        for (a, b) in lrs.iter().zip(want) {
            assert!((a - b).abs() < 1e-12, "{lrs:?}");
        }
        // 200 epochs: drops at 100 and 150, as the reference.
        assert!((lr_schedule(OptimKind::SgdStep, 0.1, 200, 99) - 0.1).abs() < 1e-12);
        assert!((lr_schedule(OptimKind::SgdStep, 0.1, 200, 100) - 0.01).abs() < 1e-12);
        assert!((lr_schedule(OptimKind::SgdStep, 0.1, 200, 150) - 0.001).abs() < 1e-12);
        assert_eq!(lr_schedule(OptimKind::Adam, 1e-3, 10, 9), 1e-3);
    }
}
