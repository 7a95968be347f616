//! The loop every method shares: deterministic data order, views built on a background thread
//! while the model trains on the previous batch, optimiser and learning-rate schedule, progress
//! with ETA, `metrics.jsonl`, checkpoints at 25/50/75/100% and on Ctrl-C, resume, NaN stop, and
//! the final backbone artifact.
//!
//! Data order and augmentation draws are functions of (seed, epoch, batch), so a run resumed
//! from a checkpoint continues exactly where it stopped.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

use burn::module::Module;
use burn::optim::decay::WeightDecayConfig;
use burn::optim::momentum::MomentumConfig;
use burn::optim::{AdamConfig, GradientsParams, ModuleOptimizer, SgdConfig};
use burn::prelude::*;
use relnet_augment::Pipeline;
use relnet_models::{Backbone, BackboneKind};
use serde::{Deserialize, Serialize};

use crate::batch::{batches, epoch_order, to_tensor, view_feed};
use crate::checkpoint::{Checkpoint, Progress};
use crate::data::registry::DatasetInfo;
use crate::data::{DataRoot, ImageSet};
use crate::error::{Error, Result};
use crate::methods::{Batch, Context, Method, MethodSpec, OptimKind, Schedule};

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
    /// What the epoch monitor measured (e.g. `knn_top1_k20`), on the epochs it ran.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub monitor: BTreeMap<String, f64>,
    /// Steps skipped for a non-finite loss or gradient (`on_nonfinite = "skip"`), with their step indices.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub skipped_steps: Vec<usize>,
}

/// The sum of every element of every gradient in `grads` (of `model`'s parameters): non-finite
/// when any element is NaN or infinite (or, harmlessly, when finite gradients overflow f32).
/// One reduction per parameter and one read back per step.
fn gradient_sum<M: Module>(model: &M, grads: &GradientsParams) -> f32 {
    struct Sum<'a> {
        grads: &'a GradientsParams,
        sum: Option<Tensor<1>>,
    }
    impl burn::module::ModuleVisitor for Sum<'_> {
        fn visit_float<const D: usize>(&mut self, param: &burn::module::Param<Tensor<D>>) {
            if let Some(g) = self.grads.get::<D>(param.id) {
                let s = g.sum();
                self.sum = Some(match self.sum.take() {
                    Some(a) => a + s,
                    None => s,
                });
            }
        }
    }
    let mut v = Sum { grads, sum: None };
    model.visit(&mut v);
    v.sum.map_or(0.0, |s| s.into_scalar::<f32>())
}

/// Makes the first element of the first gradient NaN (the `:grad` fault of the test hook).
fn poison_gradient<M: Module>(model: &M, grads: &mut GradientsParams) {
    struct Poison<'a> {
        grads: &'a mut GradientsParams,
        done: bool,
    }
    impl burn::module::ModuleVisitor for Poison<'_> {
        fn visit_float<const D: usize>(&mut self, param: &burn::module::Param<Tensor<D>>) {
            if self.done {
                return;
            }
            if let Some(g) = self.grads.remove::<D>(param.id) {
                let mut values: Vec<f32> = g.to_data().iter::<f32>().collect();
                values[0] = f32::NAN;
                let poisoned = Tensor::<D>::from_data(TensorData::new(values, g.shape()), &g.device());
                self.grads.register::<D>(param.id, poisoned);
                self.done = true;
            }
        }
    }
    model.visit(&mut Poison { grads, done: false });
}

/// Keeps the lines of `metrics.jsonl` of the epochs before `epochs_done` (1-based, inclusive):
/// a run resumed from an earlier checkpoint than its last logged epoch logs those epochs again,
/// and each epoch must appear once.
fn trim_metrics(path: &Path, epochs_done: usize) -> Result<()> {
    let Ok(text) = std::fs::read_to_string(path) else { return Ok(()) };
    let kept: Vec<&str> = text
        .lines()
        .filter(|l| {
            serde_json::from_str::<serde_json::Value>(l)
                .ok()
                .and_then(|v| v["epoch"].as_u64())
                .is_some_and(|e| e as usize <= epochs_done)
        })
        .collect();
    if kept.len() == text.lines().count() {
        return Ok(());
    }
    let mut out = kept.join("\n");
    if !out.is_empty() {
        out.push('\n');
    }
    crate::fsutil::write_atomic(path, out.as_bytes()).map_err(|e| Error::io(path, e))
}

/// How a run ended.
#[derive(Debug, PartialEq, Eq)]
pub enum Outcome {
    Finished { backbone: PathBuf },
    Interrupted { epoch: usize, batch: usize },
}

/// Where a run stands after a step: what a progress display shows.
#[derive(Debug, Clone)]
pub struct Tick {
    pub epoch: usize,
    pub epochs: usize,
    pub step: usize,
    pub steps: usize,
    pub loss: f64,
    pub accuracy: f64,
    pub views_per_s: f64,
    /// Seconds left for the whole run, from this epoch's pace.
    pub eta_s: f64,
}

impl std::fmt::Display for Tick {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "epoch {}/{} step {}/{} loss {:.4} acc {:.3} | {:.0} views/s | ETA {}",
            self.epoch,
            self.epochs,
            self.step,
            self.steps,
            self.loss,
            self.accuracy,
            self.views_per_s,
            fmt_secs(self.eta_s)
        )
    }
}

/// Progress for the user. `line` prints a message; `tick` is called after every step, and by
/// default prints a plain line every 20 steps (a terminal front end draws a live bar instead).
pub trait Reporter {
    fn line(&mut self, text: &str);

    fn tick(&mut self, t: &Tick) {
        if t.step.is_multiple_of(20) || t.step == t.steps {
            self.line(&t.to_string());
        }
    }
}

impl<F: FnMut(&str)> Reporter for F {
    fn line(&mut self, text: &str) {
        self(text)
    }
}

/// Something measured on the backbone (eval mode) every `every()` epochs and after the last,
/// written into `metrics.jsonl` and the epoch's progress line (`--monitor knn:EVERY`).
pub trait Monitor {
    fn every(&self) -> usize;
    fn measure(&mut self, backbone: &Backbone, report: &mut dyn FnMut(&str)) -> Result<BTreeMap<String, f64>>;
}

/// Everything the loop needs besides the method.
pub struct Run<'a> {
    pub spec: MethodSpec,
    pub backbone: BackboneKind,
    /// Start from this saved backbone artifact instead of a fresh initialisation.
    pub init: Option<PathBuf>,
    pub out: &'a Path,
    pub dataset: String,
    pub dataset_info: DatasetInfo,
    pub root: DataRoot,
    /// The images trained on (already cut to a subset when one was asked for).
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
    /// More devices for data-parallel training beside `device` (autodiff; empty: one device).
    pub replicas: Vec<Device>,
    pub resume: Option<Progress>,
    /// What a non-finite loss does: `None` stops the run at once (the last good checkpoint is
    /// kept); `Some(n)` skips the step (no update), logs it, and stops after `n` in a row.
    pub on_nonfinite: Option<usize>,
    /// The precision of convolutions and linear layers (set on the training thread for the run).
    pub precision: relnet_models::Precision,
}

impl Run<'_> {
    fn optimizer(&self) -> ModuleOptimizer {
        optimizer(self.spec.optim)
    }

    /// Learning rate of an epoch under the method's schedule.
    pub fn lr_at(&self, epoch: usize) -> f64 {
        lr_schedule(self.spec.schedule, self.lr, self.epochs, epoch)
    }
}

/// A fresh optimiser of the kind a method trains with.
pub fn optimizer(optim: OptimKind) -> ModuleOptimizer {
    match optim {
        OptimKind::Adam { weight_decay } => AdamConfig::new()
            .with_epsilon(1e-8)
            .with_weight_decay(weight_decay.map(|w| WeightDecayConfig::new(w as f32)))
            .init(),
        OptimKind::Sgd => {
            SgdConfig::new().with_momentum(Some(MomentumConfig::new().with_momentum(0.9).with_dampening(0.0))).init()
        }
    }
}

/// The rate of `epoch` (0-based): constant, or x0.1 from `int(0.5 E)` and again from `int(0.75 E)`
/// (PyTorch `MultiStepLR` as the reference), `E` the run's epochs or the schedule's nominal count.
pub fn lr_schedule(schedule: Schedule, lr: f64, epochs: usize, epoch: usize) -> f64 {
    match schedule {
        Schedule::Constant => lr,
        Schedule::Step { nominal_epochs } => {
            let e = nominal_epochs.unwrap_or(epochs);
            let drops = [e / 2, e * 3 / 4].iter().filter(|&&m| epoch >= m).count();
            lr * 0.1f64.powi(drops as i32)
        }
    }
}

/// Trains `method` to the end of the run (or to a Ctrl-C) and saves the backbone.
pub fn train<T: Method + Sync>(
    method: &mut T,
    run: Run,
    stop: Arc<AtomicBool>,
    report: &mut dyn Reporter,
    monitor: Option<&mut dyn Monitor>,
) -> Result<Outcome> {
    relnet_models::precision::with_precision(run.precision, || train_at_precision(method, run, stop, report, monitor))
}

/// [`train`] at the thread's precision (set by [`train`] from the run).
fn train_at_precision<T: Method + Sync>(
    method: &mut T,
    run: Run,
    stop: Arc<AtomicBool>,
    report: &mut dyn Reporter,
    mut monitor: Option<&mut dyn Monitor>,
) -> Result<Outcome> {
    let ckpt = Checkpoint::new(run.out);
    if run.precision == relnet_models::Precision::Bf16 {
        report.line(&format!("precision bf16: {}", relnet_models::precision::bf16_note()));
    }
    let model = initial_model(method, &run, report)?;
    let mut optim = run.optimizer();
    let mut replicas = crate::ddp::Replicas::<T::Model>::new(&run.device, &run.replicas, run.spec.optim);
    if !replicas.is_empty() {
        report.line(&format!(
            "data-parallel over {} devices: {} images per device per step",
            replicas.devices(),
            run.batch_size / replicas.devices()
        ));
    }
    let (mut model, start) = match resume(method, &run, &ckpt, model, &mut optim, &mut replicas, report)? {
        Resumed::Finished => return Ok(Outcome::Finished { backbone: run.out.join("backbone.bpk") }),
        Resumed::At(model, start) => (model, start),
    };
    let mut guard = NonFiniteGuard { limit: run.on_nonfinite, in_a_row: 0, faults: faults::nonfinite() };
    let milestones: Vec<usize> = [1, 2, 3, 4].iter().map(|q| (run.epochs * q).div_ceil(4)).collect();
    for epoch in start.epoch..run.epochs {
        let first = if epoch == start.epoch { start.batch } else { 0 };
        let mut loop_state =
            EpochLoop { optim: &mut optim, replicas: &mut replicas, guard: &mut guard, ckpt: &ckpt, stop: &stop };
        let (trained, end) = train_epoch(method, &run, model, &mut loop_state, epoch, first, report)?;
        model = trained;
        let mut metrics = match end {
            EpochEnd::Done(metrics) => metrics,
            EpochEnd::Interrupted { batch } => return Ok(Outcome::Interrupted { epoch, batch }),
        };
        if let Some(mon) = monitor.as_deref_mut()
            && ((epoch + 1) % mon.every().max(1) == 0 || epoch + 1 == run.epochs)
        {
            let backbone = T::backbone(&model).clone().valid();
            metrics.monitor = mon.measure(&backbone, &mut |s: &str| report.line(s))?;
        }
        log_epoch(&run, &metrics, report)?;
        let finished = epoch + 1 == run.epochs;
        if milestones.contains(&(epoch + 1)) || stop.load(Ordering::SeqCst) {
            ckpt.save(&model, &optim, Progress { epoch: epoch + 1, batch: 0, finished })?;
        }
        if stop.load(Ordering::SeqCst) && !finished {
            report.line(&format!("interrupted after epoch {}; the run can be resumed", epoch + 1));
            return Ok(Outcome::Interrupted { epoch: epoch + 1, batch: 0 });
        }
    }
    finish(method, &run, model, report)
}

/// The method's model, with its backbone from `run.init` when the run starts from an artifact.
fn initial_model<T: Method>(method: &T, run: &Run, report: &mut dyn Reporter) -> Result<T::Model> {
    let backbone = match &run.init {
        None => None,
        Some(init) => {
            let (backbone, kind) = relnet_models::io::load_backbone(init, &run.device)?;
            if kind != run.backbone {
                return Err(Error::artifact(
                    init,
                    format!("holds a {kind} backbone, but the run is configured for {}", run.backbone),
                ));
            }
            report.line(&format!("starting from the backbone in {}", init.display()));
            Some(backbone)
        }
    };
    // Drawn under the process's generator lock, so a run in parallel in this process cannot
    // interleave its draws with these. A loaded backbone goes in before anything is drawn (burn
    // draws parameters lazily), so the rest of the model takes the generator's first values.
    Ok(crate::streams::with_device_seed(&run.device, run.seed, || {
        let model = method.model(&context(run, 0, &mut |s: &str| report.line(s)), &run.device);
        crate::streams::materialise(match backbone {
            Some(b) => T::with_backbone(model, b),
            None => model,
        })
    }))
}

enum Resumed<M> {
    /// The run had finished: nothing to train.
    Finished,
    /// Train on from here.
    At(M, Progress),
}

/// The model, optimiser state and position of a resumed run (or a fresh start).
#[allow(clippy::too_many_arguments)]
fn resume<T: Method>(
    method: &mut T,
    run: &Run,
    ckpt: &Checkpoint,
    model: T::Model,
    optim: &mut ModuleOptimizer,
    replicas: &mut crate::ddp::Replicas<T::Model>,
    report: &mut dyn Reporter,
) -> Result<Resumed<T::Model>> {
    let Some(p) = run.resume else {
        // A fresh start in a folder that holds an earlier run's curve without its checkpoint (a
        // grid cell committed without it, run again) starts the curve again too.
        trim_metrics(&run.out.join("metrics.jsonl"), 0)?;
        return Ok(Resumed::At(model, Progress { epoch: 0, batch: 0, finished: false }));
    };
    if p.finished {
        // The method's closing measurement (fine-tuning's test accuracy) is taken again from the
        // saved model, so that resuming a finished run still yields it.
        let (model, _) = ckpt.load(model, run.optimizer())?;
        let trained = model.valid();
        report.line("run already finished; nothing to train");
        // The backbone is saved again from the checkpoint's model (the same bytes: artifacts carry
        // no parameter ids): a run stopped between its last checkpoint and the backbone's save
        // has none yet, and a `backbone.bpk` left in the folder by an earlier run is replaced.
        let backbone = run.out.join("backbone.bpk");
        relnet_models::io::save_backbone(T::backbone(&trained), run.backbone, &backbone)?;
        report.line(&format!("backbone saved to {}", backbone.display()));
        method.finish(&trained, &mut context(run, run.epochs, &mut |s: &str| report.line(s)))?;
        return Ok(Resumed::Finished);
    }
    let fresh = std::mem::replace(optim, run.optimizer());
    let (model, loaded) = ckpt.load(model, fresh)?;
    *optim = loaded;
    replicas.set_optimizers(optim);
    trim_metrics(&run.out.join("metrics.jsonl"), p.epoch)?;
    report.line(&format!("resuming at epoch {} batch {}", p.epoch + 1, p.batch));
    Ok(Resumed::At(model, p))
}

/// What a non-finite loss or gradient does: stop, or skip up to `limit` steps in a row.
struct NonFiniteGuard {
    limit: Option<usize>,
    in_a_row: usize,
    faults: Vec<faults::Fault>,
}

impl NonFiniteGuard {
    /// The gradients of step `at` = (epoch, step) when its loss and gradients are finite; `Ok(None)` when it is to be
    /// skipped; the error that stops the run otherwise.
    fn check<M: Module>(
        &mut self,
        model: &M,
        run: &Run,
        at: (usize, usize),
        mut loss: f32,
        grads: Option<GradientsParams>,
        report: &mut dyn Reporter,
    ) -> Result<Option<(f32, GradientsParams)>> {
        let (epoch, step) = at;
        if self.faults.iter().any(|f| f.hits(epoch, step, false)) {
            loss = f32::NAN;
        }
        let checked = match grads {
            Some(mut g) if loss.is_finite() => {
                if self.faults.iter().any(|f| f.hits(epoch, step, true)) {
                    poison_gradient(model, &mut g);
                }
                let sum = gradient_sum(model, &g);
                if sum.is_finite() { Ok(g) } else { Err(("gradient", sum)) }
            }
            _ => Err(("loss", loss)),
        };
        match checked {
            Ok(g) => {
                self.in_a_row = 0;
                Ok(Some((loss, g)))
            }
            Err((what, value)) => {
                self.in_a_row += 1;
                match self.limit {
                    Some(max) if self.in_a_row <= max => {
                        report.line(&format!(
                            "epoch {} step {step}: {what} {value}: step skipped ({} in a row, at most {max})",
                            epoch + 1,
                            self.in_a_row
                        ));
                        Ok(None)
                    }
                    _ => Err(Error::NonFinite {
                        what,
                        epoch: epoch + 1,
                        step,
                        value,
                        checkpoint: run.out.join("checkpoint"),
                    }),
                }
            }
        }
    }
}

/// Fault injection for the tests of the non-finite handling: compiled in only with the
/// `fault-injection` feature (the test build), where `RELNET_FAULT_NONFINITE=EPOCH:STEP[:grad],...`
/// (epochs from 1, steps from 0) makes the loss, or with `:grad` one gradient element under a
/// finite loss, non-finite.
mod faults {
    #[derive(Clone, Copy, Debug, PartialEq, Eq)]
    pub struct Fault {
        pub epoch: usize,
        pub step: usize,
        pub gradient: bool,
    }

    impl Fault {
        /// Whether the fault strikes step `step` of epoch `epoch` (0-based), in the loss or a gradient.
        pub fn hits(&self, epoch: usize, step: usize, gradient: bool) -> bool {
            self.epoch == epoch + 1 && self.step == step && self.gradient == gradient
        }
    }

    #[cfg(feature = "fault-injection")]
    pub fn nonfinite() -> Vec<Fault> {
        std::env::var("RELNET_FAULT_NONFINITE").map(|v| parse(&v)).unwrap_or_default()
    }

    #[cfg(not(feature = "fault-injection"))]
    pub fn nonfinite() -> Vec<Fault> {
        Vec::new()
    }

    #[cfg_attr(not(feature = "fault-injection"), allow(dead_code))]
    pub fn parse(v: &str) -> Vec<Fault> {
        v.split(',')
            .filter_map(|p| {
                let mut it = p.trim().split(':');
                let (epoch, step, g) = (it.next()?.parse().ok()?, it.next()?.parse().ok()?, it.next());
                Some(Fault { epoch, step, gradient: g == Some("grad") })
            })
            .collect()
    }

    #[cfg(test)]
    mod tests {
        #[test]
        fn fault_lists_parse() {
            let f = super::parse("2:1, 1:0:grad,bad");
            assert_eq!(f.len(), 2);
            assert!(f[0].hits(1, 1, false) && !f[0].hits(1, 1, true) && !f[0].hits(0, 1, false));
            assert!(f[1].hits(0, 0, true));
        }
    }
}

/// What one epoch's loop borrows from the run's state.
struct EpochLoop<'a, M: Module> {
    optim: &'a mut ModuleOptimizer,
    replicas: &'a mut crate::ddp::Replicas<M>,
    guard: &'a mut NonFiniteGuard,
    ckpt: &'a Checkpoint,
    stop: &'a Arc<AtomicBool>,
}

enum EpochEnd {
    Done(EpochMetrics),
    /// Ctrl-C mid-epoch: a checkpoint was saved before this batch.
    Interrupted {
        batch: usize,
    },
}

/// One epoch from batch `first`: the steps, progress ticks, and a checkpoint on Ctrl-C.
fn train_epoch<T: Method + Sync>(
    method: &mut T,
    run: &Run,
    model: T::Model,
    st: &mut EpochLoop<T::Model>,
    epoch: usize,
    first: usize,
    report: &mut dyn Reporter,
) -> Result<(T::Model, EpochEnd)> {
    let (k, m, epochs) = (run.views, run.batch_size, run.epochs);
    let mut model = method.begin_epoch(model, &mut context(run, epoch, &mut |s: &str| report.line(s)))?;
    model = st.replicas.sync(model);
    let lr = run.lr_at(epoch);
    let order = epoch_order(run.images.len(), run.seed, epoch);
    let plan: Vec<Vec<usize>> =
        batches(&order, m, if run.spec.drop_last { m } else { 2 }).into_iter().map(|b| b.to_vec()).collect();
    let steps = plan.len();
    let mut next = first;
    let prefetch = view_feed(run.images.clone(), run.pipeline.clone(), plan, first, k, epoch, run.seed);
    let t0 = Instant::now();
    let (mut loss_sum, mut acc_sum, mut done) = (0.0f64, 0.0f64, 0usize);
    let mut skipped = Vec::new();
    for (indices, views) in prefetch {
        // One device: the step, then its gradients only when the loss is finite. Several: every
        // replica steps and all-reduces (a collective every device must join).
        let (loss_value, accuracy, grads) = if st.replicas.is_empty() {
            let batch = Batch { x: to_tensor(views, &run.device), m: indices.len(), k, indices };
            let out = method.step(&model, &batch);
            let loss_value = out.loss.clone().into_scalar::<f32>();
            let grads = if loss_value.is_finite() {
                Some(GradientsParams::from_grads(out.loss.backward(), &model))
            } else {
                None
            };
            (loss_value, out.accuracy, grads)
        } else {
            let (l, a, g) = st.replicas.step(&*method, &model, views, indices, k);
            (l, a, Some(g))
        };
        let checked = st.guard.check(&model, run, (epoch, next), loss_value, grads, report);
        if !matches!(checked, Ok(Some(_))) {
            // Skipped or stopping: the replicas' averaged gradients are not applied.
            st.replicas.discard();
        }
        let Some((loss_value, grads)) = checked? else {
            skipped.push(next);
            next += 1;
            continue;
        };
        let rates = method.learning_rates(&model, lr);
        model = st.optim.step(rates, model, grads);
        st.replicas.apply(|m| method.learning_rates(m, lr));
        loss_sum += loss_value as f64;
        acc_sum += accuracy as f64;
        done += 1;
        next += 1;
        let per = t0.elapsed().as_secs_f64() / done as f64;
        report.tick(&Tick {
            epoch: epoch + 1,
            epochs,
            step: next,
            steps,
            loss: loss_sum / done as f64,
            accuracy: acc_sum / done as f64,
            views_per_s: (done * m * k) as f64 / t0.elapsed().as_secs_f64().max(1e-9),
            eta_s: (steps - next) as f64 * per + (epochs - epoch - 1) as f64 * steps as f64 * per,
        });
        if st.stop.load(Ordering::SeqCst) && next < steps {
            st.ckpt.save(&model, st.optim, Progress { epoch, batch: next, finished: false })?;
            report.line(&format!(
                "interrupted: checkpoint saved at epoch {} batch {next}; the run can be resumed",
                epoch + 1
            ));
            return Ok((model, EpochEnd::Interrupted { batch: next }));
        }
    }
    let secs = t0.elapsed().as_secs_f64();
    let metrics = EpochMetrics {
        epoch: epoch + 1,
        loss: loss_sum / done.max(1) as f64,
        accuracy: acc_sum / done.max(1) as f64,
        metric: run.spec.metric.into(),
        lr,
        steps: done,
        seconds: secs,
        views_per_s: (done * m * k) as f64 / secs.max(1e-9),
        monitor: BTreeMap::new(),
        skipped_steps: skipped,
    };
    Ok((model, EpochEnd::Done(metrics)))
}

/// Appends an epoch's metrics to `metrics.jsonl` and reports them.
fn log_epoch(run: &Run, metrics: &EpochMetrics, report: &mut dyn Reporter) -> Result<()> {
    append_metrics(&run.out.join("metrics.jsonl"), metrics)?;
    let monitored: String = metrics.monitor.iter().map(|(k, v)| format!(", {k} {v:.2}")).collect();
    report.line(&format!(
        "epoch {}/{} done: loss {:.4} {} {:.3}{monitored} in {} ({:.0} views/s)",
        metrics.epoch,
        run.epochs,
        metrics.loss,
        run.spec.metric,
        metrics.accuracy,
        fmt_secs(metrics.seconds),
        metrics.views_per_s
    ));
    Ok(())
}

/// Saves the trained backbone and runs the method's closing hook.
fn finish<T: Method>(method: &mut T, run: &Run, model: T::Model, report: &mut dyn Reporter) -> Result<Outcome> {
    let trained = model.valid();
    let backbone = run.out.join("backbone.bpk");
    relnet_models::io::save_backbone(T::backbone(&trained), run.backbone, &backbone)?;
    report.line(&format!("backbone saved to {}", backbone.display()));
    method.finish(&trained, &mut context(run, run.epochs, &mut |s: &str| report.line(s)))?;
    Ok(Outcome::Finished { backbone })
}

fn context<'a>(run: &'a Run, epoch: usize, report: &'a mut dyn FnMut(&str)) -> Context<'a> {
    Context {
        images: &run.images,
        classes: run.classes,
        mean: run.mean,
        std: run.std,
        seed: run.seed,
        epoch,
        device: &run.device,
        out: run.out,
        report,
    }
}

fn append_metrics(path: &Path, m: &EpochMetrics) -> Result<()> {
    use std::io::Write;
    let line = serde_json::to_string(m).map_err(|e| Error::Invalid(e.to_string()))?;
    let mut f = std::fs::OpenOptions::new().create(true).append(true).open(path).map_err(|e| Error::io(path, e))?;
    writeln!(f, "{line}").map_err(|e| Error::io(path, e))
}

pub fn fmt_secs(s: f64) -> String {
    let s = s.max(0.0).round() as u64;
    if s >= 3600 { format!("{}h{:02}m", s / 3600, (s % 3600) / 60) } else { format!("{}m{:02}s", s / 60, s % 60) }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn step_schedule_drops_at_half_and_three_quarters() {
        let lrs: Vec<f64> = (0..10).map(|e| lr_schedule(Schedule::Step { nominal_epochs: None }, 0.1, 10, e)).collect();
        let want = [0.1, 0.1, 0.1, 0.1, 0.1, 0.01, 0.01, 0.001, 0.001, 0.001];
        for (a, b) in lrs.iter().zip(want) {
            assert!((a - b).abs() < 1e-12, "{lrs:?}");
        }
        // 200 epochs: drops at 100 and 150, as the reference.
        assert!((lr_schedule(Schedule::Step { nominal_epochs: None }, 0.1, 200, 99) - 0.1).abs() < 1e-12);
        assert!((lr_schedule(Schedule::Step { nominal_epochs: None }, 0.1, 200, 100) - 0.01).abs() < 1e-12);
        assert!((lr_schedule(Schedule::Step { nominal_epochs: None }, 0.1, 200, 150) - 0.001).abs() < 1e-12);
        assert_eq!(lr_schedule(Schedule::Constant, 1e-3, 10, 9), 1e-3);
        // The reference's fine-tuning: milestones from a nominal 200 epochs never fire in 100.
        let reference = Schedule::Step { nominal_epochs: Some(200) };
        assert!((0..100).all(|e| lr_schedule(reference, 1e-3, 100, e) == 1e-3));
        assert!((lr_schedule(reference, 1e-3, 300, 150) - 1e-5).abs() < 1e-15);
    }
}
