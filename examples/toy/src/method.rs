//! `toy-mvc`: multi-view contrast, a method defined outside relnet.

use std::sync::Arc;
use std::sync::atomic::AtomicBool;

use burn::prelude::*;
use relnet_core::config::{ConfigError, check_range};
use relnet_core::conformance::{Check, MethodCase};
use relnet_core::methods::{Batch, Context, Method, MethodOptions, MethodSpec, OptimKind, Schedule, StepOutput, Views};
use relnet_core::trainer::{Monitor, Outcome, Reporter, Run, train};
use relnet_models::{Backbone, BackboneKind, MlpHead};
use serde::{Deserialize, Serialize};

/// What relnet asks about the method.
pub const SPEC: MethodSpec = MethodSpec {
    name: "toy-mvc",
    display: "Toy multi-view contrast",
    order: 100,
    cost: 1.0,
    highlight: false,
    summary: "toy: each of K views classified against the mean projection of every image's views",
    preset: relnet_augment::Preset::Relational,
    views: Views::K { option: "k" },
    drop_last: false,
    needs_labels: false,
    needs_data: true,
    optim: OptimKind::Adam { weight_decay: None },
    schedule: Schedule::Constant,
    default_lr: 1e-3,
    default_batch: 32,
    metric: "view top-1",
};

/// Options of `toy-mvc` (`[method] kind = "toy-mvc"`).
#[derive(clap::Args, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct ToyMvcOptions {
    /// Views per image K (default 4, 2 on small datasets).
    #[arg(long)]
    pub k: Option<usize>,
    /// Softmax temperature of the view-to-centre logits.
    #[arg(long, default_value_t = 0.2)]
    pub temperature: f64,
}

impl Default for ToyMvcOptions {
    fn default() -> Self {
        relnet_core::config::clap_defaults()
    }
}

impl MethodOptions for ToyMvcOptions {
    const NAME: &'static str = "toy-mvc";

    fn spec(&self) -> MethodSpec {
        SPEC
    }

    fn views(&self) -> usize {
        self.k.unwrap_or(4)
    }

    fn resolve(&mut self, small: bool) {
        self.k.get_or_insert(if small { 2 } else { 4 });
    }

    fn validate(&self) -> Result<(), ConfigError> {
        check_range("temperature", self.temperature, 0.01, 10.0)?;
        match self.k {
            Some(k) => check_range("k", k, 2, 16),
            None => Ok(()),
        }
    }

    fn launch(
        &self,
        run: Run,
        stop: Arc<AtomicBool>,
        report: &mut dyn Reporter,
        monitor: Option<&mut dyn Monitor>,
    ) -> relnet_core::Result<Outcome> {
        let backbone = run.backbone;
        train(&mut ToyMvc { backbone, temperature: self.temperature }, run, stop, report, monitor)
    }

    fn conformance(&self, case: &mut MethodCase) -> relnet_core::Result<Vec<Check>> {
        case.step(&mut ToyMvc { backbone: case.backbone, temperature: self.temperature })
    }
}

/// The method with its settings.
pub struct ToyMvc {
    pub backbone: BackboneKind,
    pub temperature: f64,
}

#[derive(Module, Debug)]
pub struct ToyMvcModel {
    pub backbone: Backbone,
    pub projector: MlpHead,
}

/// Rows scaled to unit L2 norm.
fn normalise(z: Tensor<2>) -> Tensor<2> {
    let norm = z.clone().powf_scalar(2.0).sum_dim(1).sqrt().clamp_min(1e-12);
    z / norm
}

/// The loss of `k` views of `m` images, `z` `[k * m, d]` view-major, and the fraction of views
/// whose own image's centre scores highest.
pub fn multi_view_contrast(z: Tensor<2>, m: usize, k: usize, temperature: f64) -> (Tensor<1>, f32) {
    let [n, d] = z.dims();
    assert_eq!(n, m * k, "{n} projections for {k} views of {m} images");
    let device = z.device();
    let z = normalise(z);
    let centres = normalise(z.clone().reshape([k, m, d]).mean_dim(0).reshape([m, d]));
    let logits = z.matmul(centres.transpose()).div_scalar(temperature);
    let targets: Vec<i64> = (0..n).map(|i| (i % m) as i64).collect();
    let pred: Vec<i64> = logits.clone().detach().argmax(1).into_data().iter::<i64>().collect();
    let hits = pred.iter().zip(&targets).filter(|(p, t)| p == t).count();
    let targets = Tensor::<1, Int>::from_data(burn::tensor::TensorData::new(targets, [n]), &device);
    let loss = burn::nn::loss::CrossEntropyLossConfig::new().init(&device).forward(logits, targets);
    (loss, hits as f32 / n as f32)
}

impl Method for ToyMvc {
    type Model = ToyMvcModel;

    fn model(&self, _ctx: &Context, device: &Device) -> ToyMvcModel {
        ToyMvcModel {
            backbone: self.backbone.init(device),
            projector: MlpHead::simclr(self.backbone.features(), device),
        }
    }

    fn backbone(model: &ToyMvcModel) -> &Backbone {
        &model.backbone
    }

    fn with_backbone(model: ToyMvcModel, backbone: Backbone) -> ToyMvcModel {
        ToyMvcModel { backbone, ..model }
    }

    fn step(&self, model: &ToyMvcModel, batch: &Batch) -> StepOutput {
        let z = model.projector.forward(model.backbone.forward(batch.x.clone()));
        let (loss, accuracy) = multi_view_contrast(z, batch.m, batch.k, self.temperature);
        StepOutput { loss, accuracy }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Two images, two views each, with projections on orthogonal axes: every view is nearest its
    /// own centre, and the loss is the closed-form cross-entropy of logits (1/T, 0).
    #[test]
    fn loss_and_accuracy_of_separated_views() {
        let d = Device::flex();
        let z = Tensor::<2>::from_floats([[1.0, 0.0], [0.0, 1.0], [2.0, 0.0], [0.0, 3.0]], &d);
        let (loss, acc) = multi_view_contrast(z, 2, 2, 0.5);
        let expected = (1.0f32 + (-2.0f32).exp()).ln(); // -log(e^2 / (e^2 + e^0))
        assert!((loss.into_scalar::<f32>() - expected).abs() < 1e-5);
        assert_eq!(acc, 1.0);
        // Swapped centres: every view is nearest the other image's centre.
        let z = Tensor::<2>::from_floats([[1.0, 0.0], [0.0, 1.0], [0.0, 1.0], [1.0, 0.0]], &d);
        let (_, acc) = multi_view_contrast(z, 2, 2, 0.5);
        assert!(acc < 1.0);
    }
}
