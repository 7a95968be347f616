//! Self-supervised relational reasoning (reference section 1): K views of M images through the
//! backbone, pairs of views of the same image (positives) and of shifted images (negatives)
//! aggregated and scored by a relation head, BCE or focal loss.

use burn::prelude::*;
use relnet_augment::Preset;
use relnet_models::precision::round;
use relnet_models::{Backbone, BackboneKind, MlpHead};

use super::{Batch, Context, Method, MethodOptions, MethodSpec, OptimKind, Schedule, Views};
use burn::tensor::{Int, TensorData};
use serde::{Deserialize, Serialize};
use std::sync::Arc;
use std::sync::atomic::AtomicBool;

use crate::trainer::{Monitor, Outcome, Reporter, Run, train};

use crate::objective::{Aggregation, RelationLoss, pair_indices, relation_pairs, relation_targets};

pub const SPEC: MethodSpec = MethodSpec {
    name: "relational",
    display: "Relational reasoning",
    order: 6,
    cost: 1.0,
    highlight: true,
    summary: "self-supervised relational reasoning (K views, relation head, BCE or focal loss)",
    preset: Preset::Relational,
    views: Views::K { option: "k" },
    drop_last: false,
    needs_labels: false,
    needs_data: true,
    optim: OptimKind::Adam { weight_decay: None },
    schedule: Schedule::Constant,
    default_lr: 1e-3,
    default_batch: 64,
    metric: "relation accuracy",
};

/// Options of relational reasoning (`[method] kind = "relational"`).
#[derive(clap::Args, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct RelationalOptions {
    /// Augmentations per image K (reference 32; 4 on synthetic when unset).
    #[arg(long, value_name = "K")]
    pub k: Option<usize>,
    /// Relation loss (focal: the reference code's; bce: the notebook's).
    #[arg(long, value_enum, default_value_t = RelationLoss::Focal)]
    pub loss: RelationLoss,
    /// How the two features of a pair are combined before the relation head.
    #[arg(long, value_enum, default_value_t = Aggregation::Cat)]
    pub aggregation: Aggregation,
}

impl Default for RelationalOptions {
    fn default() -> Self {
        crate::config::clap_defaults()
    }
}

impl MethodOptions for RelationalOptions {
    const NAME: &'static str = "relational";

    fn spec(&self) -> MethodSpec {
        SPEC
    }

    fn views(&self) -> usize {
        self.k.unwrap_or(32)
    }

    fn resolve(&mut self, small: bool) {
        self.k.get_or_insert(if small { 4 } else { 32 });
    }

    fn validate(&self) -> Result<(), crate::config::ConfigError> {
        match self.k {
            Some(k) => crate::config::check_range("k", k, 2, 64),
            None => Ok(()),
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
        train(&mut Relational { backbone, aggregation: self.aggregation, loss: self.loss }, run, stop, report, monitor)
    }

    fn conformance(&self, case: &mut crate::conformance::MethodCase) -> crate::Result<Vec<crate::conformance::Check>> {
        case.step(&mut Relational { backbone: case.backbone, aggregation: self.aggregation, loss: self.loss })
    }
}

/// The method with its settings.
pub struct Relational {
    pub backbone: BackboneKind,
    pub aggregation: Aggregation,
    pub loss: RelationLoss,
}

impl Method for Relational {
    type Model = RelationalModel;

    fn model(&self, _ctx: &Context, device: &Device) -> RelationalModel {
        RelationalModel::new(self.backbone, self.aggregation, device)
    }

    fn backbone(model: &RelationalModel) -> &Backbone {
        &model.backbone
    }

    fn with_backbone(model: RelationalModel, backbone: Backbone) -> RelationalModel {
        RelationalModel { backbone, ..model }
    }

    fn step(&self, model: &RelationalModel, batch: &Batch) -> StepOutput {
        model.forward_step(batch.x.clone(), batch.m, batch.k, self.aggregation, self.loss)
    }
}

/// Backbone + relation head (reference §1.6).
#[derive(Module, Debug)]
pub struct RelationalModel {
    pub backbone: Backbone,
    pub head: MlpHead,
}

pub use super::StepOutput;

impl RelationalModel {
    /// Relation logits of every pair of the `[M*K, F]` features, in [`relation_pairs`] order.
    ///
    /// For cat, sum and mean the head's first layer is linear in each member of a pair, so it is
    /// applied once per view (`M*K` rows) and the pairs gather its outputs:
    /// `fc1(cat(a, b)) = a W_a + b W_b + bias`. That is the same function as building the
    /// `M*K*(K-1)` aggregated pairs and applying `fc1` to them, with `K-1` times fewer
    /// multiply-adds in that layer. Max is not linear: its pairs are built first.
    pub fn relation_logits(&self, z: Tensor<2>, m: usize, k: usize, agg: Aggregation) -> Tensor<1> {
        let device = z.device();
        let [_, f] = z.dims();
        let gather = |t: Tensor<2>, idx: Vec<i64>| {
            let n = idx.len();
            t.select(0, Tensor::<1, Int>::from_data(TensorData::new(idx, [n]), &device))
        };
        if agg == Aggregation::Max {
            let (pairs, _) = relation_pairs(z, m, k, agg);
            return self.head.forward(pairs).reshape([m * k * (k - 1)]);
        }
        // At bf16 precision: the operands rounded, fp32 products, the layer's output rounded once
        // (after the bias). For cat that is the unsplit layer up to summation order; for sum and
        // mean the unsplit layer would round the aggregated pair, here each member is rounded
        // (within one bf16 step of it).
        let (z, w) = (round(z), round(self.head.fc1.weight.val()));
        let hidden = match agg {
            Aggregation::Max => unreachable!("handled above"),
            Aggregation::Cat => {
                let (left, right) = pair_indices(m, k);
                let a = z.clone().matmul(w.clone().narrow(0, 0, f));
                let b = z.matmul(w.narrow(0, f, f));
                gather(a, left) + gather(b, right)
            }
            Aggregation::Sum | Aggregation::Mean => {
                let (left, right) = pair_indices(m, k);
                let zw = z.matmul(w);
                let h = gather(zw.clone(), left) + gather(zw, right);
                if agg == Aggregation::Mean { h.div_scalar(2.0) } else { h }
            }
        };
        let hidden = round(match &self.head.fc1.bias {
            Some(b) => hidden + round(b.val()).unsqueeze::<2>(),
            None => hidden,
        });
        let logits = self.head.forward_after_fc1(hidden);
        let p = logits.dims()[0];
        logits.reshape([p])
    }

    pub fn new(kind: BackboneKind, agg: Aggregation, device: &Device) -> Self {
        RelationalModel {
            backbone: kind.init(device),
            head: MlpHead::relation(agg.head_input(kind.features()), device),
        }
    }

    /// One forward pass over the `M*K` views (augmentation-major), pairs, head, loss.
    pub fn forward_step(
        &self,
        views: Tensor<4>,
        m: usize,
        k: usize,
        agg: Aggregation,
        loss: RelationLoss,
    ) -> StepOutput {
        let z = self.backbone.forward(views);
        let logits = self.relation_logits(z, m, k, agg);
        let p = logits.dims()[0];
        let targets = relation_targets(m, k, &logits.device());
        let predicted = logits.clone().greater_elem(0.0).float();
        let correct = predicted.equal(targets.clone()).float().sum().into_scalar::<f32>();
        let loss = loss.mean(logits, targets);
        StepOutput { loss, accuracy: correct / p as f32 }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::optim::{AdamConfig, GradientsParams};

    /// The per-view projection gives the head's output on the explicitly built pairs.
    #[test]
    fn projected_pairs_equal_explicit_pairs() {
        let device = Device::flex();
        device.seed(11);
        let (m, k, f) = (6, 4, 64);
        for agg in [Aggregation::Cat, Aggregation::Sum, Aggregation::Mean, Aggregation::Max] {
            let model = RelationalModel::new(BackboneKind::Conv4, agg, &device).valid();
            let z = Tensor::<2>::random([m * k, f], burn::tensor::Distribution::Normal(0.0, 1.0), &device);
            let fast: Vec<f32> = model.relation_logits(z.clone(), m, k, agg).into_data().iter::<f32>().collect();
            let (pairs, _) = relation_pairs(z, m, k, agg);
            let slow: Vec<f32> = model.head.forward(pairs).into_data().iter::<f32>().collect();
            assert_eq!(fast.len(), m * k * (k - 1));
            let worst = fast.iter().zip(&slow).map(|(a, b)| (a - b).abs()).fold(0.0f32, f32::max);
            assert!(worst < 1e-4, "{agg}: max difference {worst}");
        }
    }

    #[test]
    fn loss_decreases_on_a_fixed_batch() {
        let device = Device::flex().autodiff();
        device.seed(3);
        let (m, k) = (8, 4);
        let mut model = RelationalModel::new(BackboneKind::Conv4, Aggregation::Cat, &device);
        // Fixed views: per image a random pattern, each view a noisy copy of it.
        let base = Tensor::<4>::random([m, 3, 16, 16], burn::tensor::Distribution::Normal(0.0, 1.0), &device);
        let views = Tensor::cat(
            (0..k)
                .map(|_| {
                    base.clone()
                        + Tensor::<4>::random([m, 3, 16, 16], burn::tensor::Distribution::Normal(0.0, 0.3), &device)
                })
                .collect(),
            0,
        );
        let mut optim = AdamConfig::new().with_epsilon(1e-8).init();
        let mut losses = Vec::new();
        for _ in 0..30 {
            {
                let lossfn = RelationLoss::Bce;
                let out = model.forward_step(views.clone(), m, k, Aggregation::Cat, lossfn);
                losses.push(out.loss.clone().into_scalar::<f32>());
                let grads = GradientsParams::from_grads(out.loss.backward(), &model);
                model = optim.step(1e-3, model, grads);
            }
        }
        let first = losses[..3].iter().sum::<f32>() / 3.0;
        let last = losses[losses.len() - 3..].iter().sum::<f32>() / 3.0;
        assert!(last < 0.7 * first, "loss did not decrease: {losses:?}");
    }
}
