//! The pretraining methods behind one interface, one file each, and the registry that names them.
//!
//! A method says what it needs ([`MethodSpec`]: augmentation preset, views per image, split,
//! optimiser, defaults), builds its model (a backbone plus its heads), and computes the loss of
//! one batch. The shared loop in [`crate::trainer`] does the rest (data order, augmentation on a
//! background thread, optimiser, progress, checkpoints, resume, NaN stop). Every method ends in
//! the same backbone artifact, so every evaluator works on every method.
//!
//! Adding a method: a new file implementing [`Method`] plus one line in [`MethodKind`].

pub mod deepcluster;
pub mod deepinfomax;
pub mod relational;
pub mod rotation;
pub mod simclr;
pub mod supervised;

use burn::module::Module;
use burn::prelude::*;
use relnet_augment::Preset;
use relnet_models::Backbone;

use crate::data::ImageSet;

/// Every method by name (`relnet pretrain --method NAME`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum MethodKind {
    Relational,
    Simclr,
    Rotation,
    Deepcluster,
    Deepinfomax,
    Supervised,
    Random,
}

impl MethodKind {
    pub fn spec(self) -> MethodSpec {
        match self {
            MethodKind::Relational => relational::SPEC,
            MethodKind::Simclr => simclr::SPEC,
            MethodKind::Rotation => rotation::SPEC,
            MethodKind::Deepcluster => deepcluster::SPEC,
            MethodKind::Deepinfomax => deepinfomax::SPEC,
            MethodKind::Supervised => supervised::SPEC,
            MethodKind::Random => RANDOM,
        }
    }
}

/// How many augmented views of each image a batch holds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Views {
    /// The run's K (relational reasoning).
    K,
    Fixed(usize),
}

/// The optimiser a method trains with.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum OptimKind {
    Adam,
    /// SGD with momentum 0.9 (no dampening, no weight decay), lr x0.1 at 50% and 75% of the
    /// epochs (the reference's supervised schedule).
    SgdStep,
}

/// What a method needs from the shared loop.
#[derive(Clone, Copy, Debug)]
pub struct MethodSpec {
    pub name: &'static str,
    pub summary: &'static str,
    pub preset: Preset,
    pub views: Views,
    /// Drop the last partial batch (DIM's `drop_last=True`); others keep it as the reference.
    pub drop_last: bool,
    /// Trains on the labelled train split (supervised) instead of the pretraining split.
    pub needs_labels: bool,
    pub optim: OptimKind,
    pub default_lr: f64,
    pub default_batch: usize,
    /// Name of the per-step accuracy the method reports.
    pub metric: &'static str,
}

const RANDOM: MethodSpec = MethodSpec {
    name: "random",
    summary: "the randomly initialised backbone saved as is (the lower bound)",
    preset: Preset::Plain,
    views: Views::Fixed(1),
    drop_last: false,
    needs_labels: false,
    optim: OptimKind::Adam,
    default_lr: 1e-3,
    default_batch: 128,
    metric: "-",
};

/// One training batch: `m` images, `k` views each, augmentation-major (`x[v * m + i]` is view
/// `v` of image `indices[i]`).
pub struct Batch {
    pub x: Tensor<4>,
    pub m: usize,
    pub k: usize,
    /// Dataset indices of the batch's images (labels, pseudo-labels).
    pub indices: Vec<usize>,
}

/// What one step reports.
pub struct StepOutput {
    /// Mean loss (a one-element tensor on the autodiff device).
    pub loss: Tensor<1>,
    /// The method's per-step accuracy in [0, 1] (see [`MethodSpec::metric`]).
    pub accuracy: f32,
}

/// What a method sees of the run when it is built and at each epoch start.
pub struct Context<'a> {
    pub images: &'a ImageSet,
    pub classes: usize,
    pub mean: [f32; 3],
    pub std: [f32; 3],
    pub seed: u64,
    pub epoch: usize,
    pub device: &'a Device,
    pub report: &'a mut dyn FnMut(&str),
}

/// A pretraining method: its model and its loss.
pub trait Method {
    type Model: Module;

    fn model(&self, ctx: &Context, device: &Device) -> Self::Model;

    fn backbone(model: &Self::Model) -> &Backbone;

    /// Loss and accuracy of one batch (training mode).
    fn step(&self, model: &Self::Model, batch: &Batch) -> StepOutput;

    /// Called before every epoch (also when a run resumes mid-epoch): DeepCluster clusters here.
    fn begin_epoch(&mut self, model: Self::Model, _ctx: &mut Context) -> Result<Self::Model, String> {
        Ok(model)
    }

    /// Called once after the last epoch with the trained model in eval mode.
    fn finish(&self, _model: &Self::Model, _ctx: &mut Context) -> Result<(), String> {
        Ok(())
    }
}

/// Labels of `indices` as an int tensor.
pub(crate) fn label_tensor(labels: &[i64], device: &Device) -> Tensor<1, Int> {
    Tensor::<1, Int>::from_data(burn::tensor::TensorData::new(labels.to_vec(), [labels.len()]), device)
}

/// Cross-entropy of `logits` against `labels` (optionally weighted per class) and the argmax
/// accuracy: the step of every classification-shaped method (supervised, rotation, DeepCluster).
pub(crate) fn classification_step(logits: Tensor<2>, labels: &[i64], weights: Option<Vec<f32>>) -> StepOutput {
    let device = logits.device();
    let accuracy = argmax_accuracy(logits.clone().detach(), labels);
    let loss = burn::nn::loss::CrossEntropyLossConfig::new().with_weights(weights).init(&device).forward(logits, label_tensor(labels, &device));
    StepOutput { loss, accuracy }
}

/// Fraction of rows whose argmax equals the label.
pub(crate) fn argmax_accuracy(logits: Tensor<2>, labels: &[i64]) -> f32 {
    let pred: Vec<i64> = logits.argmax(1).into_data().iter::<i64>().collect();
    let hits = pred.iter().zip(labels).filter(|(p, l)| p == l).count();
    hits as f32 / labels.len().max(1) as f32
}

#[cfg(test)]
mod tests {
    use burn::optim::{AdamConfig, GradientsParams};
    use burn::tensor::Distribution;
    use relnet_models::BackboneKind;

    use super::*;
    use crate::data::synthetic::{SyntheticSpec, generate};

    /// Fixed views: per image a random pattern, each view a noisy copy of it.
    fn views(m: usize, k: usize, device: &Device) -> Tensor<4> {
        let base = Tensor::<4>::random([m, 3, 16, 16], Distribution::Normal(0.0, 1.0), device);
        Tensor::cat((0..k).map(|_| base.clone() + Tensor::<4>::random([m, 3, 16, 16], Distribution::Normal(0.0, 0.3), device)).collect(), 0)
    }

    /// Trains `method` on one fixed batch and returns the first and last three losses' means.
    fn fit<T: Method>(mut method: T, k: usize, classes: usize, steps: usize, lr: f64) -> (f32, f32) {
        let device = Device::flex().autodiff();
        device.seed(7);
        let images = generate(&SyntheticSpec { seed: 3, train: 16, test: 1, side: 16 }, true);
        let mut say = |_: &str| {};
        let mut ctx = Context { images: &images, classes, mean: [0.5; 3], std: [0.25; 3], seed: 1, epoch: 0, device: &device, report: &mut say };
        let mut model = method.model(&ctx, &device);
        model = method.begin_epoch(model, &mut ctx).unwrap();
        let m = 16;
        let batch = Batch { x: views(m, k, &device), m, k, indices: (0..m).collect() };
        let mut optim = AdamConfig::new().with_epsilon(1e-8).init();
        let mut losses = Vec::new();
        for _ in 0..steps {
            let out = method.step(&model, &batch);
            losses.push(out.loss.clone().into_scalar::<f32>());
            let grads = GradientsParams::from_grads(out.loss.backward(), &model);
            model = optim.step(lr, model, grads);
        }
        let mean = |v: &[f32]| v.iter().sum::<f32>() / v.len() as f32;
        (mean(&losses[..3]), mean(&losses[steps - 3..]))
    }

    fn decreases(name: &str, (first, last): (f32, f32), factor: f32) {
        assert!(last.is_finite() && last < factor * first, "{name}: loss {first} -> {last}");
    }

    #[test]
    fn every_method_lowers_its_loss_on_a_fixed_batch() {
        let b = BackboneKind::Conv4;
        decreases("supervised", fit(supervised::Supervised { backbone: b, labels: (0..16).map(|i| i % 4).collect(), test: None }, 1, 4, 30, 1e-2), 0.8);
        decreases("rotation", fit(rotation::Rotation { backbone: b }, 1, 1, 30, 1e-3), 0.8);
        decreases("simclr", fit(simclr::Simclr { backbone: b, temperature: 0.5, variant: simclr::NtXent::MeanLog }, 2, 1, 30, 1e-3), 0.8);
        decreases("deepcluster", fit(deepcluster::DeepCluster::new(b, deepcluster::ClusterWeights::Reference), 1, 1, 30, 1e-3), 0.8);
        // DIM starts at the JSD's chance value (2 ln 2 + 0.1 * 2 ln 2) and its local
        // discriminator learns slowly at Adam 1e-3 (the reference trains it at 1e-4).
        decreases("deepinfomax", fit(deepinfomax::DeepInfomax { backbone: b, prior: deepinfomax::PriorMode::Joint }, 1, 1, 30, 1e-3), 0.95);
    }
}
