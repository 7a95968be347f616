//! Deep InfoMax (Hjelm et al. 2019; reference section 4, `deepinfomax`), local-only with a prior
//! term: alpha (global) 0, beta (local) 1, gamma (prior) 0.1, Adam 1e-4, flip only, last partial
//! batch dropped.
//!
//! Local JSD term: the global feature `y` against the first conv-BN-ReLU map `M` of the same image
//! (positive) and of the next image in the batch (negative, `M'[i] = M[(i + 1) mod B]`):
//! `beta * (mean softplus(T(y, M')) + mean softplus(-T(y, M)))`.
//! Prior term with `D = sigmoid(P(.))` and `u ~ U[0, 1)`:
//! `-gamma * (mean log D(u) + mean log(1 - D(y)))`.
//!
//! `prior = "joint"` (default, the reference's): encoder and discriminators minimise the sum
//! together, so the encoder also pushes `D(y)` down (not an adversarial game: a quirk of the
//! implementation the reference took). `prior = "adversarial"`: the encoder receives the
//! reversed gradient of the prior term (the DIM paper's min-max), through a gradient-reversal
//! of `y` on its way into `P`.

use burn::prelude::*;
use burn::tensor::activation::softplus;
use relnet_augment::Preset;
use relnet_models::{Backbone, BackboneKind, LocalDiscriminator, PriorDiscriminator};
use serde::{Deserialize, Serialize};
use std::sync::Arc;
use std::sync::atomic::AtomicBool;

use crate::trainer::{Monitor, Outcome, Reporter, Run, train};

use super::{Batch, Context, Method, MethodOptions, MethodSpec, OptimKind, Schedule, StepOutput, Views};

pub const SPEC: MethodSpec = MethodSpec {
    name: "deepinfomax",
    display: "Deep InfoMax",
    order: 4,
    cost: 16.0,
    highlight: false,
    summary: "Deep InfoMax: local JSD mutual information with the first feature map, prior matching",
    preset: Preset::Flip,
    views: Views::Fixed(1),
    drop_last: true,
    needs_labels: false,
    needs_data: true,
    optim: OptimKind::Adam { weight_decay: None },
    schedule: Schedule::Constant,
    default_lr: 1e-4,
    default_batch: 128,
    metric: "local discriminator accuracy",
};

pub const BETA: f64 = 1.0;
pub const GAMMA: f64 = 0.1;

/// Options of Deep InfoMax (`[method] kind = "deepinfomax"`).
#[derive(clap::Args, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct DeepinfomaxOptions {
    /// Prior term: joint (the reference's: encoder and discriminator minimise it together) or
    /// adversarial (the DIM paper's min-max).
    #[arg(long, value_enum, value_name = "MODE", default_value_t = PriorMode::Joint)]
    pub dim_prior: PriorMode,
}

impl Default for DeepinfomaxOptions {
    fn default() -> Self {
        crate::config::clap_defaults()
    }
}

impl MethodOptions for DeepinfomaxOptions {
    const NAME: &'static str = "deepinfomax";

    fn spec(&self) -> MethodSpec {
        SPEC
    }

    fn views(&self) -> usize {
        1
    }

    fn launch(
        &self,
        run: Run,
        stop: Arc<AtomicBool>,
        report: &mut dyn Reporter,
        monitor: Option<&mut dyn Monitor>,
    ) -> crate::Result<Outcome> {
        let backbone = run.backbone;
        train(&mut DeepInfomax::new(backbone, self.dim_prior), run, stop, report, monitor)
    }

    fn conformance(&self, case: &mut crate::conformance::MethodCase) -> crate::Result<Vec<crate::conformance::Check>> {
        case.step(&mut DeepInfomax::new(case.backbone, self.dim_prior))
    }
}

/// How the prior term trains the encoder.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum PriorMode {
    Joint,
    Adversarial,
}

/// The DIM loss from discriminator logits: local scores of positive and negative pairs
/// (`[B, positions]`) and prior scores of prior samples and of encoder features (`[B, 1]`).
pub fn dim_loss(
    t_pos: Tensor<2>,
    t_neg: Tensor<2>,
    p_prior: Tensor<2>,
    p_feat: Tensor<2>,
    beta: f64,
    gamma: f64,
) -> Tensor<1> {
    let local = softplus(t_neg, 1.0).mean() + softplus(t_pos.neg(), 1.0).mean();
    let prior = softplus(p_prior.neg(), 1.0).mean() + softplus(p_feat, 1.0).mean();
    local.mul_scalar(beta) + prior.mul_scalar(gamma)
}

/// Rolled by one image along the batch axis: row `i` holds row `(i - 1) mod B`.
pub fn previous_image<const D: usize>(t: Tensor<D>) -> Tensor<D> {
    let b = t.dims()[0];
    Tensor::cat(vec![t.clone().slice(b - 1..b), t.slice(0..b - 1)], 0)
}

/// Local scores `[B, h*w]` of the positive pairs `(y[i], M[i])` and of the negative pairs
/// `(y[i], M[(i + 1) mod B])`.
///
/// Row `j` of the negatives holds the pair `(y[(j - 1) mod B], M[j])`: the same set of pairs as
/// the reference's rolled map, so the same loss (a mean over all of them), but the roll moves the
/// `[B, 256]` projection of `y` instead of the `[B, h*w, 256]` projection of the map, and both
/// terms share the map's projection.
pub fn local_scores(local: &LocalDiscriminator, y: Tensor<2>, map: Tensor<4>) -> (Tensor<2>, Tensor<2>) {
    let map_part = local.project_map(map);
    let global_part = local.project_global(y);
    let t_pos = local.score(map_part.clone() + global_part.clone());
    let t_neg = local.score(map_part + previous_image(global_part));
    (t_pos, t_neg)
}

#[derive(Module, Debug)]
pub struct InfomaxModel {
    pub backbone: Backbone,
    pub local: LocalDiscriminator,
    pub prior: PriorDiscriminator,
}

pub struct DeepInfomax {
    pub backbone: BackboneKind,
    pub prior: PriorMode,
    /// The run's seed and the epoch (set by `begin_epoch`): the prior's samples are drawn on the
    /// host from them and the batch, so every backend draws the same ones.
    seed: u64,
    epoch: u64,
}

impl DeepInfomax {
    pub fn new(backbone: BackboneKind, prior: PriorMode) -> Self {
        DeepInfomax { backbone, prior, seed: 0, epoch: 0 }
    }
}

impl DeepInfomax {
    /// Uniform(0, 1) samples of the prior for one batch, from the host's generator.
    fn prior_samples(&self, dims: [usize; 2], indices: &[usize], device: &Device) -> Tensor<2> {
        use rand::{Rng, SeedableRng};
        let first = indices.first().copied().unwrap_or(0) as u64;
        let seed = crate::streams::stream(
            self.seed,
            crate::streams::Purpose::Prior,
            &[self.epoch, first, indices.len() as u64],
        );
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
        let v: Vec<f32> = (0..dims[0] * dims[1]).map(|_| rng.random::<f32>()).collect();
        Tensor::from_data(TensorData::new(v, dims), device)
    }
}

impl Method for DeepInfomax {
    type Model = InfomaxModel;

    fn model(&self, _ctx: &Context, device: &Device) -> InfomaxModel {
        let f = self.backbone.features();
        InfomaxModel {
            backbone: self.backbone.init(device),
            local: LocalDiscriminator::new(self.backbone.first_channels(), f, device),
            prior: PriorDiscriminator::new(f, device),
        }
    }

    fn backbone(model: &InfomaxModel) -> &Backbone {
        &model.backbone
    }

    fn with_backbone(model: InfomaxModel, backbone: Backbone) -> InfomaxModel {
        InfomaxModel { backbone, ..model }
    }

    fn begin_epoch(&mut self, model: InfomaxModel, ctx: &mut Context) -> crate::Result<InfomaxModel> {
        (self.seed, self.epoch) = (ctx.seed, ctx.epoch as u64);
        Ok(model)
    }

    fn step(&self, model: &InfomaxModel, batch: &Batch) -> StepOutput {
        let (y, map) = model.backbone.forward_with_first(batch.x.clone());
        let (t_pos, t_neg) = local_scores(&model.local, y.clone(), map);
        let u = self.prior_samples(y.dims(), &batch.indices, &y.device());
        let y_prior = match self.prior {
            PriorMode::Joint => y,
            // Same value, reversed gradient towards the encoder.
            PriorMode::Adversarial => y.clone().detach().mul_scalar(2.0) - y,
        };
        let p_prior = model.prior.forward(u);
        let p_feat = model.prior.forward(y_prior);
        let right = t_pos.clone().detach().greater_elem(0.0).float().mean().into_scalar::<f32>()
            + t_neg.clone().detach().lower_elem(0.0).float().mean().into_scalar::<f32>();
        StepOutput { loss: dim_loss(t_pos, t_neg, p_prior, p_feat, BETA, GAMMA), accuracy: right / 2.0 }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The reference's roll of the map: row `i` holds row `(i + 1) mod B`.
    fn next_image<const D: usize>(t: Tensor<D>) -> Tensor<D> {
        let b = t.dims()[0];
        Tensor::cat(vec![t.clone().slice(1..b), t.slice(0..1)], 0)
    }

    /// Golden value from `tests/golden/baselines.py` (closed form, standard library only).
    #[test]
    fn dim_loss_golden_value() {
        let d = Device::flex();
        let t_pos = Tensor::<2>::from_floats([[1.0, -0.5], [2.0, 0.3]], &d);
        let t_neg = Tensor::<2>::from_floats([[-1.0, 0.2], [0.7, -2.0]], &d);
        let p_prior = Tensor::<2>::from_floats([[0.5], [-1.5]], &d);
        let p_feat = Tensor::<2>::from_floats([[1.2], [-0.4]], &d);
        let got = dim_loss(t_pos, t_neg, p_prior, p_feat, BETA, GAMMA).into_scalar::<f32>();
        assert!((got - GOLDEN).abs() < 1e-5, "{got} vs {GOLDEN}");
    }

    const GOLDEN: f32 = 1.285_123_5;

    /// The shared-projection scores against the discriminator applied to the reference's
    /// pairs: positives row by row, negatives as the same multiset as `T(y, M rolled by one)`.
    #[test]
    fn local_scores_match_the_reference_pairs() {
        use burn::tensor::Distribution;
        let d = Device::flex();
        d.seed(3);
        let local = LocalDiscriminator::new(8, 16, &d);
        let y = Tensor::<2>::random([4, 16], Distribution::Normal(0.0, 1.0), &d);
        let map = Tensor::<4>::random([4, 8, 3, 2], Distribution::Normal(0.0, 1.0), &d);
        let (t_pos, t_neg) = local_scores(&local, y.clone(), map.clone());
        let flat = |t: Tensor<4>| t.reshape([4, 6]);
        let sorted = |t: Tensor<2>| {
            let mut v: Vec<f32> = t.into_data().iter::<f32>().collect();
            v.sort_by(f32::total_cmp);
            v
        };
        let close = |a: Vec<f32>, b: Vec<f32>| a.iter().zip(&b).all(|(x, y)| (x - y).abs() < 1e-5);
        let rows = |t: Tensor<2>| t.into_data().iter::<f32>().collect::<Vec<f32>>();
        assert!(close(rows(t_pos.clone()), rows(flat(local.forward(y.clone(), map.clone())))));
        let want_neg = flat(local.forward(y.clone(), next_image(map.clone())));
        assert!(close(sorted(t_neg.clone()), sorted(want_neg)));
        // Not trivially equal: negatives differ from positives, and rolling the wrong way differs.
        assert!(!close(sorted(t_neg.clone()), sorted(t_pos)));
        assert!(!close(sorted(t_neg), sorted(flat(local.forward(y, previous_image(map))))));
    }

    #[test]
    fn rolls_by_one_image_both_ways() {
        let d = Device::flex();
        let m = Tensor::<4>::from_floats([[[[0.0]]], [[[1.0]]], [[[2.0]]]], &d);
        let v: Vec<f32> = previous_image(m.clone()).into_data().iter::<f32>().collect();
        assert_eq!(v, vec![2.0, 0.0, 1.0]);
    }

    #[test]
    fn negatives_are_the_next_image() {
        let d = Device::flex();
        let m = Tensor::<4>::from_floats([[[[0.0]]], [[[1.0]]], [[[2.0]]]], &d);
        let v: Vec<f32> = next_image(m).into_data().iter::<f32>().collect();
        assert_eq!(v, vec![1.0, 2.0, 0.0]);
    }

    #[test]
    fn gradient_reversal_keeps_value_and_flips_gradient() {
        let d = Device::flex().autodiff();
        let y = Tensor::<1>::from_floats([0.5, -2.0], &d).require_grad();
        let r = y.clone().detach().mul_scalar(2.0) - y.clone();
        assert_eq!(r.clone().into_data().iter::<f32>().collect::<Vec<_>>(), vec![0.5, -2.0]);
        let grads = r.sum().backward();
        let g: Vec<f32> = y.grad(&grads).unwrap().into_data().iter::<f32>().collect();
        assert_eq!(g, vec![-1.0, -1.0]);
    }
}
