//! `relnet bench pretrain` (and `cargo xtask bench pretrain`): the speed of relational pretraining
//! measured the way `../shared/bench/torch_reference.py speed` measures the PyTorch reference, so
//! the two can be compared line by line:
//! - `augment_only_views_per_s`: building K-view batches (decode-free: the images are in memory);
//! - `step_only_views_per_s`: forward, pairs, loss, backward and Adam on one fixed batch;
//! - `end_to_end_views_per_s`: the real loop, views built on the prefetch thread while the model
//!   trains on the previous batch (what `relnet pretrain` does);
//! - `peak_rss_mb`: the process's peak resident memory (Linux `VmHWM`).
//!
//! "Views" are images through the backbone: M*K per step.

use std::sync::Arc;
use std::time::Instant;

use burn::optim::{AdamConfig, GradientsParams};
use relnet_augment::{Preset, PresetParams};
use relnet_models::BackboneKind;

use crate::batch::{batch_views, batches, epoch_order, to_tensor, view_feed, view_seed};
use crate::data::DataRoot;
use crate::data::registry::lookup;
use crate::device::DeviceSpec;
use crate::methods::relational::RelationalModel;
use crate::objective::{Aggregation, RelationLoss};

/// What to measure.
#[derive(Clone, Debug)]
pub struct BenchConfig {
    pub dataset: String,
    pub data_root: Option<std::path::PathBuf>,
    pub backbone: BackboneKind,
    pub k: usize,
    pub m: usize,
    pub loss: RelationLoss,
    pub steps: usize,
    pub warmup: usize,
    pub seed: u64,
    pub device: DeviceSpec,
    /// The precision of convolutions and linear layers.
    pub precision: relnet_models::Precision,
}

/// Views per second of each part, and peak memory.
#[derive(Clone, Debug)]
pub struct BenchResult {
    pub augment_only: f64,
    pub step_only: f64,
    pub end_to_end: f64,
    pub peak_rss_mb: Option<f64>,
}

impl BenchResult {
    /// The lines the PyTorch yardstick prints, plus peak memory.
    pub fn lines(&self) -> String {
        let mut s = format!(
            "augment_only_views_per_s={:.1}\nstep_only_views_per_s={:.1}\nend_to_end_views_per_s={:.1}\n",
            self.augment_only, self.step_only, self.end_to_end
        );
        if let Some(mb) = self.peak_rss_mb {
            s.push_str(&format!("peak_rss_mb={mb:.0}\n"));
        }
        s
    }
}

fn sync(device: &burn::tensor::Device) {
    if let Err(e) = device.sync() {
        eprintln!("warning: device sync failed: {e:?}");
    }
}

/// Peak resident set size of this process in MB (Linux), if known.
pub fn peak_rss_mb() -> Option<f64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kb: f64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb / 1024.0)
}

pub fn bench_pretrain(cfg: &BenchConfig, report: &mut dyn FnMut(&str)) -> crate::Result<BenchResult> {
    let info = lookup(&cfg.dataset)?;
    let root = DataRoot::resolve(cfg.data_root.as_deref());
    let split = info.load(info.pretrain_split, &root)?;
    let (mean, std) = info.norm_stats_reusing(&root, Some(&split))?;
    let images = Arc::new(split.images);
    let pipeline = Arc::new(Preset::Relational.build(&PresetParams {
        side: images.width,
        padding: info.crop_padding,
        cutout: None,
        mean,
        std,
    })?);
    let (k, m, total) = (cfg.k, cfg.m, cfg.warmup + cfg.steps);
    let order = epoch_order(images.len(), cfg.seed, 0);
    let plan: Vec<Vec<usize>> = batches(&order, m, m).into_iter().take(total).map(|b| b.to_vec()).collect();
    if plan.len() < total {
        return Err(crate::Error::Invalid(format!(
            "{} has only {} full batches of {m}; ask for fewer steps",
            cfg.dataset,
            plan.len()
        )));
    }
    let views_of = |b: usize, idx: &[usize]| batch_views(&images, &pipeline, idx, k, view_seed(cfg.seed, 0, b));
    let per_step = (m * k) as f64;

    report("augment only ...");
    for (b, idx) in plan.iter().enumerate().take(cfg.warmup) {
        std::hint::black_box(views_of(b, idx));
    }
    let t = Instant::now();
    for (b, idx) in plan.iter().enumerate().skip(cfg.warmup) {
        std::hint::black_box(views_of(b, idx));
    }
    let augment_only = cfg.steps as f64 * per_step / t.elapsed().as_secs_f64();

    let device = cfg.device.device()?.autodiff();
    let _precision = relnet_models::precision::scoped(cfg.precision);
    if cfg.precision == relnet_models::Precision::Bf16 {
        report(&format!("precision bf16: {}", relnet_models::precision::bf16_note()));
    }
    let (agg, loss) = (Aggregation::Cat, cfg.loss);
    let mut model = crate::streams::with_device_seed(&device, cfg.seed, || {
        crate::streams::materialise(RelationalModel::new(cfg.backbone, agg, &device))
    });
    let mut optim = AdamConfig::new().with_epsilon(1e-8).init();
    let fixed = views_of(0, &plan[0]);
    report("step only ...");
    let mut step_secs = 0.0;
    let mut parts = [0.0f64; 3];
    for s in 0..total {
        let t = Instant::now();
        let x = to_tensor(fixed.clone(), &device);
        let out = model.forward_step(x, m, k, agg, loss);
        // burn-flex runs eagerly, so each part's time is spent inside it.
        std::hint::black_box(out.loss.clone().into_scalar::<f32>());
        let t_fwd = t.elapsed().as_secs_f64();
        let grads = GradientsParams::from_grads(out.loss.backward(), &model);
        let t_bwd = t.elapsed().as_secs_f64();
        model = optim.step(1e-3, model, grads);
        std::hint::black_box(out.accuracy);
        // A GPU queues work: wait for the step to finish before reading the clock.
        sync(&device);
        if s >= cfg.warmup {
            let total = t.elapsed().as_secs_f64();
            step_secs += total;
            parts[0] += t_fwd;
            parts[1] += t_bwd - t_fwd;
            parts[2] += total - t_bwd;
        }
    }
    let step_only = cfg.steps as f64 * per_step / step_secs;
    let per = |x: f64| 1000.0 * x / cfg.steps as f64;
    report(&format!(
        "step breakdown per step: forward + loss {:.1} ms, backward {:.1} ms, Adam {:.1} ms",
        per(parts[0]),
        per(parts[1]),
        per(parts[2])
    ));

    report("end to end ...");
    let prefetch = view_feed(images.clone(), pipeline.clone(), plan.clone(), 0, k, 0, cfg.seed);
    let mut t = Instant::now();
    for (s, (_, views)) in prefetch.enumerate() {
        if s == cfg.warmup {
            t = Instant::now();
        }
        let out = model.forward_step(to_tensor(views, &device), m, k, agg, loss);
        // Read the loss as the training loop does (NaN check, logging).
        std::hint::black_box(out.loss.clone().into_scalar::<f32>());
        let grads = GradientsParams::from_grads(out.loss.backward(), &model);
        model = optim.step(1e-3, model, grads);
    }
    sync(&device);
    let end_to_end = cfg.steps as f64 * per_step / t.elapsed().as_secs_f64();
    Ok(BenchResult { augment_only, step_only, end_to_end, peak_rss_mb: peak_rss_mb() })
}
