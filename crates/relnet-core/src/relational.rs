//! The relational model: a backbone and a relation head trained together on pairs of views.

use burn::prelude::*;
use relnet_models::{Backbone, BackboneKind, MlpHead};

use crate::objective::{Aggregation, RelationLoss, relation_pairs};

/// Backbone + relation head (reference §1.6).
#[derive(Module, Debug)]
pub struct RelationalModel {
    pub backbone: Backbone,
    pub head: MlpHead,
}

/// What one step reports.
pub struct StepOutput {
    /// Mean loss over pairs (a scalar tensor on the autodiff device).
    pub loss: Tensor<1>,
    /// Fraction of pairs whose rounded sigmoid equals the target.
    pub accuracy: f32,
}

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
