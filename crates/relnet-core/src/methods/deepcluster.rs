//! DeepCluster (Caron et al. 2018; reference section 4, `deepcluster`). At the start of every
//! epoch: features of the whole pretraining split (backbone in eval mode), PCA-whitened to F
//! dimensions (F/2 when F >= 512), L2-normalised, k-means with k = 10 x classes (k-means++,
//! 5 restarts, 30 iterations); the last head layer re-initialised (weights N(0, 0.01), bias 0);
//! then an epoch of weighted cross-entropy on the cluster labels, crop + flip, Adam 1e-3.
//!
//! Choices against the reference's quirks (reference section 9):
//! - Features for clustering are of the plain images; the reference extracts them through the
//!   crop + flip transform and then augments and normalises the pseudo-labelled images a second
//!   time (a bug, not reproduced).
//! - Class weights: `weights = "reference"` (default) `1 - count/N` as the reference;
//!   `"inverse"` `N / (k_used * count)`, the original DeepCluster's uniform sampling over clusters
//!   as a loss weight.
//! - A run resumed in the middle of an epoch re-clusters with the weights it resumed from.

use std::time::Instant;

use burn::prelude::*;
use burn::tensor::Distribution;
use relnet_augment::Preset;
use relnet_models::{Backbone, BackboneKind, MlpHead};
use serde::{Deserialize, Serialize};
use std::sync::Arc;
use std::sync::atomic::AtomicBool;

use crate::trainer::{Monitor, Outcome, Reporter, Run, train};

use super::{
    Batch, Context, Method, MethodOptions, MethodSpec, OptimKind, Schedule, StepOutput, Views, classification_step,
};
use crate::cluster::{KMeansConfig, kmeans, l2_normalize, pca_whiten};
use crate::features::extract;

pub const SPEC: MethodSpec = MethodSpec {
    name: "deepcluster",
    display: "DeepCluster",
    order: 2,
    cost: 1.4,
    highlight: false,
    summary: "DeepCluster: k-means of PCA-whitened features each epoch, cross-entropy on the clusters",
    preset: Preset::CropFlip,
    views: Views::Fixed(1),
    drop_last: false,
    needs_labels: false,
    needs_data: true,
    optim: OptimKind::Adam { weight_decay: None },
    schedule: Schedule::Constant,
    default_lr: 1e-3,
    default_batch: 128,
    metric: "cluster accuracy",
};

/// Options of DeepCluster (`[method] kind = "deepcluster"`).
#[derive(clap::Args, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct DeepclusterOptions {
    /// Class weights of the cross-entropy on the clusters.
    #[arg(long, value_enum, value_name = "RULE", default_value_t = ClusterWeights::Reference)]
    pub cluster_weights: ClusterWeights,
    /// k-means restarts per epoch (the reference's 5).
    #[arg(long, value_name = "N", default_value_t = 5)]
    pub kmeans_restarts: usize,
}

impl Default for DeepclusterOptions {
    fn default() -> Self {
        crate::config::clap_defaults()
    }
}

impl MethodOptions for DeepclusterOptions {
    const NAME: &'static str = "deepcluster";

    fn spec(&self) -> MethodSpec {
        SPEC
    }

    fn views(&self) -> usize {
        1
    }

    fn validate(&self) -> Result<(), crate::config::ConfigError> {
        crate::config::check_range("kmeans_restarts", self.kmeans_restarts, 1, 100)
    }

    fn launch(
        &self,
        run: Run,
        stop: Arc<AtomicBool>,
        report: &mut dyn Reporter,
        monitor: Option<&mut dyn Monitor>,
    ) -> crate::Result<Outcome> {
        let mut dc = DeepCluster::new(run.backbone, self.cluster_weights);
        dc.n_init = self.kmeans_restarts;
        train(&mut dc, run, stop, report, monitor)
    }

    fn conformance(&self, case: &mut crate::conformance::MethodCase) -> crate::Result<Vec<crate::conformance::Check>> {
        // One k-means restart: the check compares one step, not the clustering's quality.
        let mut dc = DeepCluster::new(case.backbone, self.cluster_weights);
        dc.n_init = 1;
        case.step(&mut dc)
    }
}

/// How clusters are weighted in the cross-entropy.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum ClusterWeights {
    /// `1 - count / N`, the reference's.
    Reference,
    /// `N / (k_used count)`, the original DeepCluster's uniform sampling as a weight.
    Inverse,
}

/// Per-cluster loss weights from the cluster sizes.
pub fn cluster_weights(counts: &[usize], mode: ClusterWeights) -> Vec<f32> {
    let n: usize = counts.iter().sum();
    let used = counts.iter().filter(|&&c| c > 0).count().max(1);
    counts
        .iter()
        .map(|&c| match mode {
            ClusterWeights::Reference => 1.0 - c as f32 / n.max(1) as f32,
            ClusterWeights::Inverse if c == 0 => 0.0,
            ClusterWeights::Inverse => n as f32 / (used * c) as f32,
        })
        .collect()
}

#[derive(Module, Debug)]
pub struct ClusterModel {
    pub backbone: Backbone,
    pub head: MlpHead,
}

pub struct DeepCluster {
    pub backbone: BackboneKind,
    pub weights: ClusterWeights,
    /// k-means restarts (reference 5).
    pub n_init: usize,
    /// Pseudo-label of every image of the pretraining split, and the loss weights (this epoch).
    labels: Vec<i64>,
    class_weights: Vec<f32>,
}

impl DeepCluster {
    pub fn new(backbone: BackboneKind, weights: ClusterWeights) -> Self {
        DeepCluster { backbone, weights, n_init: 5, labels: Vec::new(), class_weights: Vec::new() }
    }

    fn k(classes: usize) -> usize {
        10 * classes.max(1)
    }
}

impl Method for DeepCluster {
    type Model = ClusterModel;

    fn model(&self, ctx: &Context, device: &Device) -> ClusterModel {
        ClusterModel {
            backbone: self.backbone.init(device),
            head: MlpHead::deepcluster(self.backbone.features(), Self::k(ctx.classes), device),
        }
    }

    fn backbone(model: &ClusterModel) -> &Backbone {
        &model.backbone
    }

    fn with_backbone(model: ClusterModel, backbone: Backbone) -> ClusterModel {
        ClusterModel { backbone, ..model }
    }

    fn begin_epoch(&mut self, mut model: ClusterModel, ctx: &mut Context) -> crate::Result<ClusterModel> {
        let t = Instant::now();
        let eval_device = ctx.device.clone().without_autodiff();
        let backbone = model.backbone.valid();
        let (mut feats, f) = extract(&backbone, ctx.images, ctx.mean, ctx.std, 256, &eval_device)?;
        let n = ctx.images.len();
        let dims = if f >= 512 { f / 2 } else { f };
        let t_feat = t.elapsed().as_secs_f64();
        feats = pca_whiten(&feats, n, f, dims);
        l2_normalize(&mut feats, dims);
        let k = Self::k(ctx.classes).min(n);
        let seed = crate::streams::stream(ctx.seed, crate::streams::Purpose::Clustering, &[ctx.epoch as u64]);
        let result = kmeans(&feats, n, dims, KMeansConfig { k, n_init: self.n_init, max_iter: 30, seed });
        let mut counts = vec![0usize; Self::k(ctx.classes)];
        for &l in &result.labels {
            counts[l as usize] += 1;
        }
        self.labels = result.labels.iter().map(|&l| l as i64).collect();
        self.class_weights = cluster_weights(&counts, self.weights);
        (ctx.report)(&format!(
            "epoch {}: clustered {n} images into {} non-empty of k = {} clusters (features {:.1} s, PCA + k-means {:.1} s)",
            ctx.epoch + 1,
            counts.iter().filter(|&&c| c > 0).count(),
            counts.len(),
            t_feat,
            t.elapsed().as_secs_f64() - t_feat
        ));
        // Re-initialise the last layer: weights N(0, 0.01), bias 0 (reference).
        // Same parameter ids, so the optimiser keeps its state for them, as in the reference.
        // Drawn from burn's generator seeded by (seed, epoch): a resumed run redraws what the
        // interrupted one drew, and a run in parallel in this process cannot interleave.
        let reinit = crate::streams::stream(ctx.seed, crate::streams::Purpose::HeadReinit, &[ctx.epoch as u64]);
        model.head.fc2.weight = model.head.fc2.weight.map(|w| {
            let grad = w.is_require_grad();
            crate::streams::with_device_seed(&w.device(), reinit, || {
                Tensor::<2>::random(w.shape(), Distribution::Normal(0.0, 0.01), &w.device())
            })
            .set_require_grad(grad)
        });
        model.head.fc2.bias = model.head.fc2.bias.map(|b| {
            b.map(|b| {
                let grad = b.is_require_grad();
                b.zeros_like().set_require_grad(grad)
            })
        });
        Ok(model)
    }

    fn step(&self, model: &ClusterModel, batch: &Batch) -> StepOutput {
        let y: Vec<i64> = batch.indices.iter().map(|&i| self.labels[i]).collect();
        classification_step(
            model.head.forward(model.backbone.forward(batch.x.clone())),
            &y,
            Some(self.class_weights.clone()),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn weights_follow_the_chosen_rule() {
        let counts = [50, 30, 20, 0];
        let r = cluster_weights(&counts, ClusterWeights::Reference);
        assert_eq!(r, vec![0.5, 0.7, 0.8, 1.0]);
        let i = cluster_weights(&counts, ClusterWeights::Inverse);
        // N / (used * count) with N = 100, 3 clusters used.
        for (w, want) in i.iter().zip([100.0 / 150.0, 100.0 / 90.0, 100.0 / 60.0, 0.0]) {
            assert!((w - want).abs() < 1e-6, "{w} vs {want}");
        }
    }
}
