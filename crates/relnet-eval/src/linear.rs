//! Linear evaluation (reference §5.1): the backbone frozen in eval mode, features of the train
//! and test splits computed once, a `Linear(F, C)` trained with Adam (lr 1e-3) and cross-entropy,
//! top-1 accuracy on the test split. Computing features once, instead of a backbone pass per
//! epoch as the reference does, gives the same result (no augmentation, BN frozen) far faster.

use std::path::PathBuf;
use std::time::Instant;

use burn::nn::loss::CrossEntropyLoss;
use burn::optim::{AdamConfig, GradientsParams};
use burn::prelude::*;
use burn::tensor::{Int, TensorData};
use rand::SeedableRng;
use rand::seq::SliceRandom;
use relnet_core::config::{ConfigError, RunConfig, check_range};
use relnet_core::data::registry::lookup;
use relnet_core::data::DataRoot;
use relnet_core::device::DeviceSpec;
use relnet_models::linear_head;
use serde::{Deserialize, Serialize};

#[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct LinearConfig {
    /// Backbone artifact (`backbone.bpk` of a pretraining run).
    pub backbone: PathBuf,
    pub dataset: String,
    pub data_root: Option<PathBuf>,
    pub epochs: usize,
    pub batch_size: usize,
    pub lr: f64,
    pub seed: u64,
    pub device: DeviceSpec,
}

impl Default for LinearConfig {
    fn default() -> Self {
        LinearConfig {
            backbone: PathBuf::from("backbone.bpk"),
            dataset: "synthetic".into(),
            data_root: None,
            epochs: 100,
            batch_size: 128,
            lr: 1e-3,
            seed: 1,
            device: DeviceSpec::Cpu,
        }
    }
}

impl RunConfig for LinearConfig {
    fn validate(&self) -> Result<(), ConfigError> {
        lookup(&self.dataset).map_err(|e| ConfigError::key("dataset", e.to_string()))?;
        check_range("epochs", self.epochs, 1, 100_000)?;
        check_range("batch_size", self.batch_size, 1, 65_536)?;
        if !(self.lr > 0.0 && self.lr <= 1.0) {
            return Err(ConfigError::key("lr", format!("value {} out of range (allowed (0, 1])", self.lr)));
        }
        Ok(())
    }
}

#[derive(Serialize, Deserialize, Debug, Clone)]
pub struct ProbeResult {
    pub dataset: String,
    pub backbone: PathBuf,
    pub backbone_kind: String,
    pub epochs: usize,
    pub train_accuracy: f64,
    pub test_accuracy: f64,
    pub feature_seconds: f64,
    pub train_seconds: f64,
    pub config: LinearConfig,
}

/// Top-1 accuracy (fraction) of `logits` `[N, C]` against `labels`.
pub fn accuracy(logits: Tensor<2>, labels: &[i64]) -> f64 {
    // Convert whatever integer type the backend uses for indices.
    let pred: Vec<i64> = logits.argmax(1).into_data().iter::<i64>().collect();
    assert_eq!(pred.len(), labels.len(), "one prediction per label");
    let hits = pred.iter().zip(labels).filter(|(p, l)| p == l).count();
    hits as f64 / labels.len().max(1) as f64
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
}

/// Runs the linear probe and writes `linear_<dataset>.json` beside the backbone.
pub fn linear_probe(cfg: &LinearConfig, report: &mut dyn FnMut(&str)) -> Result<ProbeResult, String> {
    let device = cfg.device.device()?;
    let (backbone, kind) = relnet_models::io::load_backbone(&cfg.backbone, &device).map_err(|e| e.to_string())?;
    let backbone = backbone.valid();
    let info = lookup(&cfg.dataset).map_err(|e| e.to_string())?;
    let root = DataRoot::resolve(cfg.data_root.as_deref());
    let t = Instant::now();
    let train = info.load(info.train_split, &root).map_err(|e| e.to_string())?;
    let (mean, std) = info.norm_stats_reusing(&root, Some(&train)).map_err(|e| e.to_string())?;
    let test = info.load(info.test_split, &root).map_err(|e| e.to_string())?;
    let mut splits = Vec::new();
    for s in [train, test] {
        let split = s.split;
        let labels: Vec<i64> = s.images.labels.as_ref().ok_or(format!("{} {split} has no labels", cfg.dataset))?.iter().map(|&l| l as i64).collect();
        let (feats, dim) = super::features::extract(&backbone, &s.images, mean, std, 256, &device)?;
        report(&format!("features of {} {split}: {} x {dim}", cfg.dataset, labels.len()));
        splits.push((feats, dim, labels, s.classes.len()));
    }
    let feature_seconds = t.elapsed().as_secs_f64();
    let (train_f, dim, train_y, classes) = splits.remove(0);
    let (test_f, _, test_y, _) = splits.remove(0);

    let ad = device.clone().autodiff();
    ad.seed(cfg.seed);
    let n = train_y.len();
    let x_train = Tensor::<2>::from_data(TensorData::new(train_f, [n, dim]), &ad);
    let y_train = Tensor::<1, Int>::from_data(TensorData::new(train_y.clone(), [n]), &ad);
    let mut head = linear_head(dim, classes, &ad);
    let mut optim = AdamConfig::new().with_epsilon(1e-8).init();
    let ce = CrossEntropyLoss::new(None, &ad);
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(cfg.seed);
    let t = Instant::now();
    for epoch in 0..cfg.epochs {
        let mut order: Vec<i64> = (0..n as i64).collect();
        order.shuffle(&mut rng);
        let mut loss_sum = 0.0;
        let mut steps = 0;
        for chunk in order.chunks(cfg.batch_size) {
            let idx = Tensor::<1, Int>::from_data(TensorData::new(chunk.to_vec(), [chunk.len()]), &ad);
            let logits = head.forward(x_train.clone().select(0, idx.clone()));
            let loss = ce.forward(logits, y_train.clone().select(0, idx));
            loss_sum += loss.clone().into_scalar::<f32>() as f64;
            steps += 1;
            let grads = GradientsParams::from_grads(loss.backward(), &head);
            head = optim.step(cfg.lr, head, grads);
        }
        if (epoch + 1) % 10 == 0 || epoch + 1 == cfg.epochs {
            report(&format!("probe epoch {}/{}: loss {:.4}", epoch + 1, cfg.epochs, loss_sum / steps as f64));
        }
    }
    let train_seconds = t.elapsed().as_secs_f64();
    let head = head.valid();
    let x_tr = x_train.inner();
    let train_accuracy = accuracy(head.forward(x_tr), &train_y);
    let nt = test_y.len();
    let x_test = Tensor::<2>::from_data(TensorData::new(test_f, [nt, dim]), &device);
    let test_accuracy = accuracy(head.forward(x_test), &test_y);
    let result = ProbeResult {
        dataset: cfg.dataset.clone(),
        backbone: cfg.backbone.clone(),
        backbone_kind: kind.name().into(),
        epochs: cfg.epochs,
        train_accuracy: 100.0 * train_accuracy,
        test_accuracy: 100.0 * test_accuracy,
        feature_seconds,
        train_seconds,
        config: cfg.clone(),
    };
    let name = format!("linear_{}.json", cfg.dataset.replace([':', '/'], "_"));
    let path = cfg.backbone.with_file_name(name);
    let json = serde_json::to_vec_pretty(&result).map_err(|e| e.to_string())?;
    relnet_core::fsutil::write_atomic(&path, &json).map_err(|e| format!("{}: {e}", path.display()))?;
    report(&format!("result written to {}", path.display()));
    Ok(result)
}
