//! Linear evaluation (reference §5.1): the backbone frozen in eval mode, features of the train
//! and test splits computed once (and cached, [`crate::features`]), a `Linear(F, C)` trained with
//! Adam (lr 1e-3) and cross-entropy, top-1 accuracy. Computing features once, instead of a
//! backbone pass per epoch as the reference does, gives the same result (no augmentation, BN
//! frozen) far faster.
//!
//! `val_fraction`: a stratified part of the train split (fixed by the seed) is held out, the
//! probe trains on the rest and is measured on it; the record's `eval_split` is then `val`.
//!
//! `labels` (fewer labels, [`crate::labels`]): the probe trains on a stratified part of the
//! (remaining) train split only; the record holds the count and the fraction used.
//!
//! Transfer and grain are this evaluator on another dataset than the backbone's: the target's
//! own normalisation and image size, and the record names both (`source_dataset`, `dataset`).

use std::time::Instant;

use burn::nn::loss::CrossEntropyLoss;
use burn::optim::{AdamConfig, GradientsParams};
use burn::prelude::*;
use burn::tensor::{Int, TensorData};
use rand::SeedableRng;
use rand::seq::SliceRandom;
use relnet_core::Result;
use relnet_core::config::{ConfigError, check_range};
use relnet_core::pretrain::check_lr;
use relnet_core::record::ResultRecord;
use relnet_models::linear_head;
use serde::{Deserialize, Serialize};

use crate::features::Features;
use crate::labels::{LabelBudget, indices_by_class, label_subset};
use crate::{EvalContext, EvaluatorOptions};

/// Options of the linear probe (`[evaluator] kind = "linear"`).
#[derive(clap::Args, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct LinearOptions {
    /// Probe epochs.
    #[arg(long, default_value_t = 100)]
    pub epochs: usize,
    /// Mini-batch size.
    #[arg(long, default_value_t = 128)]
    pub batch_size: usize,
    /// Adam learning rate.
    #[arg(long, default_value_t = 1e-3)]
    pub lr: f64,
    /// Hold out this fraction of the train split (stratified per class) and measure on it
    /// instead of the test split.
    #[arg(long, value_name = "F")]
    pub val_fraction: Option<f64>,
    /// Train on fewer labels: a percentage of every class (`10%`) or a count per class
    /// (`4-per-class`), drawn with the seed.
    #[arg(long, value_name = "BUDGET")]
    pub labels: Option<LabelBudget>,
}

impl Default for LinearOptions {
    fn default() -> Self {
        relnet_core::config::clap_defaults()
    }
}

impl EvaluatorOptions for LinearOptions {
    const NAME: &'static str = "linear";

    fn spec(&self) -> crate::EvaluatorSpec {
        crate::EvaluatorSpec {
            name: "linear",
            about: "Linear probe on frozen, cached features; prints test_accuracy=<percent> last",
            order: 0,
            report: &[("test_accuracy", "accuracy")],
            headline: &["*_accuracy"],
            frozen_features: true,
        }
    }

    fn cost_seconds(&self, c: &crate::CostInputs) -> f64 {
        self.epochs as f64 * c.probe_epoch_s_per_10k * c.train_images as f64 / 1e4
    }

    fn validate(&self) -> std::result::Result<(), ConfigError> {
        check_range("epochs", self.epochs, 1, 100_000)?;
        check_range("batch_size", self.batch_size, 1, 65_536)?;
        check_lr("lr", self.lr)?;
        if let Some(f) = self.val_fraction
            && !(f > 0.0 && f < 1.0)
        {
            return Err(ConfigError::key("val_fraction", format!("value {f} out of range (allowed (0, 1))")));
        }
        Ok(())
    }

    fn run(&self, ctx: &mut EvalContext) -> Result<ResultRecord> {
        let train_all = ctx.features(ctx.info.train_split)?;
        let (train, eval, eval_split) = match self.val_fraction {
            Some(f) => {
                let (fit, val) = stratified_split(&train_all.labels, f, ctx.seed);
                (train_all.subset(&fit), train_all.subset(&val), "val")
            }
            None => (train_all, ctx.features(ctx.info.test_split)?, ctx.info.test_split.as_str()),
        };
        let available = train.n;
        let train = match self.labels {
            Some(budget) => train.subset(&label_subset(&train.labels, budget, ctx.seed)),
            None => train,
        };
        let t = Instant::now();
        let report = &mut *ctx.report;
        let (train_acc, eval_acc) = probe(&train, &eval, self, ctx.seed, &ctx.device, &mut |l: &str| report.line(l));
        let mut record = ctx.record(Self::NAME, self, Some(ctx.info.train_split.as_str()), eval_split);
        record.metrics.insert("train_accuracy".into(), 100.0 * train_acc);
        record.metrics.insert(format!("{eval_split}_accuracy"), 100.0 * eval_acc);
        record.metrics.insert("train_images".into(), train.n as f64);
        record.metrics.insert("label_fraction".into(), train.n as f64 / available.max(1) as f64);
        record.metrics.insert("eval_images".into(), eval.n as f64);
        record.metrics.insert("probe_seconds".into(), t.elapsed().as_secs_f64());
        Ok(record)
    }
}

/// Indices of a stratified split of `labels`: about `fraction` of every class held out (at
/// least one image of a class with two or more), drawn with `seed`. Returns (kept, held out),
/// each sorted.
pub fn stratified_split(labels: &[i64], fraction: f64, seed: u64) -> (Vec<usize>, Vec<usize>) {
    let by_class = indices_by_class(labels);
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(relnet_core::streams::stream(
        seed,
        relnet_core::streams::Purpose::ProbeSplit,
        &[],
    ));
    let (mut keep, mut held) = (Vec::new(), Vec::new());
    for (_, mut idx) in by_class {
        idx.shuffle(&mut rng);
        let n = idx.len();
        let h = if n >= 2 { ((n as f64 * fraction).round() as usize).clamp(1, n - 1) } else { 0 };
        held.extend_from_slice(&idx[..h]);
        keep.extend_from_slice(&idx[h..]);
    }
    keep.sort_unstable();
    held.sort_unstable();
    (keep, held)
}

/// Top-1 accuracy (fraction) of `logits` `[N, C]` against `labels`.
pub fn accuracy(logits: Tensor<2>, labels: &[i64]) -> f64 {
    let pred: Vec<i64> = logits.argmax(1).into_data().iter::<i64>().collect();
    assert_eq!(pred.len(), labels.len(), "one prediction per label");
    let hits = pred.iter().zip(labels).filter(|(p, l)| p == l).count();
    hits as f64 / labels.len().max(1) as f64
}

/// Trains `Linear(F, C)` on `train` and returns its accuracy on `train` and on `eval`.
pub fn probe(
    train: &Features,
    eval: &Features,
    o: &LinearOptions,
    seed: u64,
    device: &Device,
    report: &mut dyn FnMut(&str),
) -> (f64, f64) {
    let ad = device.clone().autodiff();
    let (n, dim) = (train.n, train.dim);
    let classes = train.classes.max(eval.classes);
    let x_train = Tensor::<2>::from_data(TensorData::new(train.data.clone(), [n, dim]), &ad);
    let y_train = Tensor::<1, Int>::from_data(TensorData::new(train.labels.clone(), [n]), &ad);
    let mut head = relnet_core::streams::with_device_seed(&ad, seed, || {
        relnet_core::streams::materialise(linear_head(dim, classes, &ad))
    });
    let mut optim = AdamConfig::new().with_epsilon(1e-8).init();
    let ce = CrossEntropyLoss::new(None, &ad);
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(relnet_core::streams::stream(
        seed,
        relnet_core::streams::Purpose::ProbeOrder,
        &[],
    ));
    for epoch in 0..o.epochs {
        let mut order: Vec<i64> = (0..n as i64).collect();
        order.shuffle(&mut rng);
        let (mut loss_sum, mut steps) = (0.0, 0);
        for chunk in order.chunks(o.batch_size) {
            let idx = Tensor::<1, Int>::from_data(TensorData::new(chunk.to_vec(), [chunk.len()]), &ad);
            let logits = head.forward(x_train.clone().select(0, idx.clone()));
            let loss = ce.forward(logits, y_train.clone().select(0, idx));
            loss_sum += loss.clone().into_scalar::<f32>() as f64;
            steps += 1;
            let grads = GradientsParams::from_grads(loss.backward(), &head);
            head = optim.step(o.lr, head, grads);
        }
        if (epoch + 1) % 10 == 0 || epoch + 1 == o.epochs {
            report(&format!("probe epoch {}/{}: loss {:.4}", epoch + 1, o.epochs, loss_sum / steps.max(1) as f64));
        }
    }
    let head = head.valid();
    let train_acc = accuracy(head.forward(x_train.inner()), &train.labels);
    let x_eval = Tensor::<2>::from_data(TensorData::new(eval.data.clone(), [eval.n, dim]), device);
    (train_acc, accuracy(head.forward(x_eval), &eval.labels))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accuracy_counts_argmax_hits() {
        let d = Device::flex();
        let logits = Tensor::<2>::from_floats([[0.1, 2.0, 0.3], [5.0, 1.0, 0.0], [0.0, 0.0, 9.0], [1.0, 3.0, 2.0]], &d);
        assert_eq!(accuracy(logits, &[1, 0, 1, 1]), 0.75);
    }

    #[test]
    fn stratified_split_holds_out_each_class_in_proportion() {
        // Class-sorted labels, 3 classes of 100, 50 and 10.
        let labels: Vec<i64> = (0..160)
            .map(|i| {
                if i < 100 {
                    0
                } else if i < 150 {
                    1
                } else {
                    2
                }
            })
            .collect();
        let (keep, held) = stratified_split(&labels, 0.1, 1);
        assert_eq!(keep.len() + held.len(), 160);
        let count = |v: &[usize], c: i64| v.iter().filter(|&&i| labels[i] == c).count();
        assert_eq!((count(&held, 0), count(&held, 1), count(&held, 2)), (10, 5, 1));
        let mut all: Vec<usize> = keep.iter().chain(&held).copied().collect();
        all.sort_unstable();
        assert_eq!(all, (0..160).collect::<Vec<_>>(), "disjoint and complete");
        assert_eq!(stratified_split(&labels, 0.1, 1), (keep, held.clone()), "fixed by the seed");
        assert_ne!(stratified_split(&labels, 0.1, 2).1, held);
    }
}
