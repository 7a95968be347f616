//! SimCLR (Chen et al. 2020; reference section 4): two views of every image with the relational
//! augmentations, projection head F -> 256 -> 64, NT-Xent with temperature 0.5.
//!
//! Views are augmentation-major (row `i` and row `i + M` are the same image; the reference
//! interleaves them, which only permutes rows). Two forms of the loss, with
//! `ratio_i = exp(s(i, p(i)) / t) / sum_{j != i} exp(s(i, j) / t)`:
//! - `log-mean` (default, the reference code's): `-log(mean_i ratio_i)`;
//! - `mean-log` (the standard NT-Xent): `mean_i -log(ratio_i)`.
//!
//! The self term is masked out of the denominator (the reference subtracts `e^(1/t)`, the same
//! value when rows are unit vectors).

use burn::prelude::*;
use relnet_augment::Preset;
use relnet_models::{Backbone, BackboneKind, MlpHead};
use serde::{Deserialize, Serialize};
use std::sync::Arc;
use std::sync::atomic::AtomicBool;

use crate::trainer::{Monitor, Outcome, Reporter, Run, train};

use super::{Batch, Context, Method, MethodOptions, MethodSpec, OptimKind, Schedule, StepOutput, Views};

pub const SPEC: MethodSpec = MethodSpec {
    name: "simclr",
    display: "SimCLR",
    order: 5,
    cost: 1.0,
    highlight: false,
    summary: "SimCLR: two views, projection head, NT-Xent (temperature 0.5)",
    preset: Preset::Relational,
    views: Views::Fixed(2),
    drop_last: false,
    needs_labels: false,
    needs_data: true,
    optim: OptimKind::Adam { weight_decay: None },
    schedule: Schedule::Constant,
    default_lr: 1e-3,
    default_batch: 128,
    metric: "positive top-1",
};

/// Options of SimCLR (`[method] kind = "simclr"`).
#[derive(clap::Args, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct SimclrOptions {
    /// NT-Xent temperature.
    #[arg(long, default_value_t = 0.5)]
    pub temperature: f64,
    /// NT-Xent form: log-mean (the reference code's) or mean-log (the standard one).
    #[arg(long, value_enum, value_name = "FORM", default_value_t = NtXent::LogMean)]
    pub simclr_loss: NtXent,
}

impl Default for SimclrOptions {
    fn default() -> Self {
        crate::config::clap_defaults()
    }
}

impl MethodOptions for SimclrOptions {
    const NAME: &'static str = "simclr";

    fn spec(&self) -> MethodSpec {
        SPEC
    }

    fn views(&self) -> usize {
        2
    }

    fn validate(&self) -> Result<(), crate::config::ConfigError> {
        if self.temperature > 0.0 && self.temperature <= 100.0 {
            Ok(())
        } else {
            Err(crate::config::ConfigError::key(
                "temperature",
                format!("value {} out of range (allowed (0, 100])", self.temperature),
            ))
        }
    }

    fn launch(
        &self,
        run: Run,
        stop: Arc<AtomicBool>,
        report: &mut dyn Reporter,
        monitor: Option<&mut dyn Monitor>,
    ) -> crate::Result<Outcome> {
        let backbone = run.backbone;
        train(
            &mut Simclr { backbone, temperature: self.temperature, variant: self.simclr_loss },
            run,
            stop,
            report,
            monitor,
        )
    }

    fn conformance(&self, case: &mut crate::conformance::MethodCase) -> crate::Result<Vec<crate::conformance::Check>> {
        case.step(&mut Simclr { backbone: case.backbone, temperature: self.temperature, variant: self.simclr_loss })
    }
}

/// Which form of NT-Xent.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize, clap::ValueEnum)]
pub enum NtXent {
    /// `-log(mean ratio)`, the reference code's variant.
    #[serde(rename = "log-mean")]
    LogMean,
    /// `mean(-log ratio)`, the standard one.
    #[serde(rename = "mean-log")]
    MeanLog,
}

/// NT-Xent of projections `[2M, D]` (row `i` pairs with row `(i + M) mod 2M`), and the fraction
/// of rows whose partner is the most similar other row.
pub fn nt_xent(z: Tensor<2>, temperature: f64, variant: NtXent) -> (Tensor<1>, f32) {
    let [n, _] = z.dims();
    let device = z.device();
    let norm = z.clone().powf_scalar(2.0).sum_dim(1).sqrt().clamp_min(1e-12);
    let z = z / norm;
    let half = n / 2;
    let partner = Tensor::cat(vec![z.clone().slice(half..n), z.clone().slice(0..half)], 0);
    let pos = (z.clone() * partner).sum_dim(1).reshape([n]).div_scalar(temperature);
    // Cosine similarities / t with the diagonal pushed to -inf-like (exp underflows to 0).
    let eye = Tensor::<2>::eye(n, &device);
    // A matmul: bf16 at bf16 precision, as autocast runs it.
    let logits =
        relnet_models::precision::matmul(z.clone(), z.transpose()).div_scalar(temperature) - eye.mul_scalar(1e4);
    let log_denominator = logits.clone().exp().sum_dim(1).log().reshape([n]);
    let log_ratio = pos.clone() - log_denominator;
    let loss = match variant {
        NtXent::MeanLog => log_ratio.neg().mean(),
        NtXent::LogMean => log_ratio.exp().mean().log().neg(),
    };
    let best = logits.detach().max_dim(1).reshape([n]);
    let hits = pos.detach().greater_equal(best).float().sum().into_scalar::<f32>();
    (loss, hits / n as f32)
}

#[derive(Module, Debug)]
pub struct SimclrModel {
    pub backbone: Backbone,
    pub projector: MlpHead,
}

pub struct Simclr {
    pub backbone: BackboneKind,
    pub temperature: f64,
    pub variant: NtXent,
}

impl Method for Simclr {
    type Model = SimclrModel;

    fn model(&self, _ctx: &Context, device: &Device) -> SimclrModel {
        SimclrModel {
            backbone: self.backbone.init(device),
            projector: MlpHead::simclr(self.backbone.features(), device),
        }
    }

    fn backbone(model: &SimclrModel) -> &Backbone {
        &model.backbone
    }

    fn with_backbone(model: SimclrModel, backbone: Backbone) -> SimclrModel {
        SimclrModel { backbone, ..model }
    }

    fn step(&self, model: &SimclrModel, batch: &Batch) -> StepOutput {
        let z = model.projector.forward(model.backbone.forward(batch.x.clone()));
        let (loss, accuracy) = nt_xent(z, self.temperature, self.variant);
        StepOutput { loss, accuracy }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Golden values from `tests/golden/baselines.py` (standard library only, closed form).
    #[test]
    fn nt_xent_golden_values() {
        let d = Device::flex();
        let z = Tensor::<2>::from_floats([[1.0, 0.0, 0.5], [0.2, 1.0, -0.3], [0.9, 0.1, 0.4], [-0.1, 0.8, 0.0]], &d);
        let (mean_log, acc) = nt_xent(z.clone(), 0.5, NtXent::MeanLog);
        let (log_mean, _) = nt_xent(z, 0.5, NtXent::LogMean);
        let (a, b) = (mean_log.into_scalar::<f32>(), log_mean.into_scalar::<f32>());
        assert!((a - GOLDEN_MEAN_LOG).abs() < 1e-5, "mean-log {a} vs {GOLDEN_MEAN_LOG}");
        assert!((b - GOLDEN_LOG_MEAN).abs() < 1e-5, "log-mean {b} vs {GOLDEN_LOG_MEAN}");
        assert_eq!(acc, 1.0);
    }

    const GOLDEN_MEAN_LOG: f32 = 0.273_394_44;
    const GOLDEN_LOG_MEAN: f32 = 0.272_660_98;

    #[test]
    fn log_mean_is_at_most_mean_log() {
        // Jensen: -log(mean r) <= mean(-log r), equal when all ratios are equal.
        let d = Device::flex();
        d.seed(5);
        let z = Tensor::<2>::random([16, 8], burn::tensor::Distribution::Normal(0.0, 1.0), &d);
        let a = nt_xent(z.clone(), 0.5, NtXent::MeanLog).0.into_scalar::<f32>();
        let b = nt_xent(z, 0.5, NtXent::LogMean).0.into_scalar::<f32>();
        assert!(b <= a + 1e-6, "{b} > {a}");
    }
}
