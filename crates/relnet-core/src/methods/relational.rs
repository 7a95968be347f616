//! Self-supervised relational reasoning (reference section 1): K views of M images through the
//! backbone, pairs of views of the same image (positives) and of shifted images (negatives)
//! aggregated and scored by a relation head, BCE or focal loss.

use burn::prelude::*;
use relnet_augment::Preset;
use relnet_models::{Backbone, BackboneKind, MlpHead};

use super::{Batch, Context, Method, MethodSpec, OptimKind, Views};
use crate::objective::{Aggregation, RelationLoss, relation_pairs};

pub const SPEC: MethodSpec = MethodSpec {
    name: "relational",
    summary: "self-supervised relational reasoning (K views, relation head, BCE or focal loss)",
    preset: Preset::Relational,
    views: Views::K,
    drop_last: false,
    needs_labels: false,
    optim: OptimKind::Adam,
    default_lr: 1e-3,
    default_batch: 64,
    metric: "relation accuracy",
};

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
    pub fn new(kind: BackboneKind, agg: Aggregation, device: &Device) -> Self {
        RelationalModel { backbone: kind.init(device), head: MlpHead::relation(agg.head_input(kind.features()), device) }
    }

    /// One forward pass over the `M*K` views (augmentation-major), pairs, head, loss.
    pub fn forward_step(&self, views: Tensor<4>, m: usize, k: usize, agg: Aggregation, loss: RelationLoss) -> StepOutput {
        let z = self.backbone.forward(views);
        let (pairs, targets) = relation_pairs(z, m, k, agg);
        let [p, _] = pairs.dims();
        let logits = self.head.forward(pairs).reshape([p]);
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

    #[test]
    fn loss_decreases_on_a_fixed_batch() {
        let device = Device::flex().autodiff();
        device.seed(3);
        let (m, k) = (8, 4);
        let mut model = RelationalModel::new(BackboneKind::Conv4, Aggregation::Cat, &device);
        // Fixed views: per image a random pattern, each view a noisy copy of it.
        let base = Tensor::<4>::random([m, 3, 16, 16], burn::tensor::Distribution::Normal(0.0, 1.0), &device);
        let views = Tensor::cat(
            (0..k).map(|_| base.clone() + Tensor::<4>::random([m, 3, 16, 16], burn::tensor::Distribution::Normal(0.0, 0.3), &device)).collect(),
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
