//! Heads: the relation module and the heads of the baselines.

use burn::nn::conv::{Conv2d, Conv2dConfig};
use burn::nn::{BatchNorm, BatchNormConfig, Linear, LinearConfig};
use burn::prelude::*;
use burn::tensor::activation::{leaky_relu, relu};

/// Linear(in, hidden) -> BatchNorm1d -> LeakyReLU(0.01) -> Linear(hidden, out): the shape of the
/// relation head, the SimCLR projection head and the DeepCluster head.
#[derive(Module, Debug)]
pub struct MlpHead {
    pub fc1: Linear,
    pub bn: BatchNorm,
    pub fc2: Linear,
}

impl MlpHead {
    pub fn new(input: usize, hidden: usize, output: usize, device: &Device) -> Self {
        MlpHead {
            fc1: LinearConfig::new(input, hidden).init(device),
            bn: BatchNormConfig::new(hidden).init(device),
            fc2: LinearConfig::new(hidden, output).init(device),
        }
    }

    /// Relation head: `in` = 2F for concatenation, F for sum / mean / max; one logit.
    pub fn relation(input: usize, device: &Device) -> Self {
        Self::new(input, 256, 1, device)
    }

    /// SimCLR projection head: F -> 256 -> 64.
    pub fn simclr(features: usize, device: &Device) -> Self {
        Self::new(features, 256, 64, device)
    }

    /// DeepCluster head: F -> 256 -> k clusters.
    pub fn deepcluster(features: usize, k: usize, device: &Device) -> Self {
        Self::new(features, 256, k, device)
    }

    /// Re-initialises the last layer (DeepCluster does so after every clustering).
    pub fn reset_last(mut self, device: &Device) -> Self {
        let [i, o] = self.fc2.weight.dims();
        self.fc2 = LinearConfig::new(i, o).init(device);
        self
    }

    pub fn forward(&self, x: Tensor<2>) -> Tensor<2> {
        self.forward_after_fc1(self.fc1.forward(x))
    }

    /// The rest of the head from the output of `fc1` (BN, LeakyReLU, `fc2`), for callers that
    /// compute `fc1` themselves (the relational pairs, projected once per view).
    pub fn forward_after_fc1(&self, h: Tensor<2>) -> Tensor<2> {
        let h = leaky_relu(self.bn.forward(h), 0.01);
        self.fc2.forward(h)
    }
}

/// A linear layer on features: RotationNet's 4-way head and the linear classifier.
pub fn linear_head(features: usize, classes: usize, device: &Device) -> Linear {
    LinearConfig::new(features, classes).init(device)
}

/// Deep InfoMax local discriminator: the global feature is tiled over the first block's map,
/// concatenated along channels and scored by 1x1 convolutions (C+F -> 256 -> 256 -> 1).
#[derive(Module, Debug)]
pub struct LocalDiscriminator {
    pub c0: Conv2d,
    pub c1: Conv2d,
    pub c2: Conv2d,
}

impl LocalDiscriminator {
    pub fn new(map_channels: usize, features: usize, device: &Device) -> Self {
        let c = |i, o| Conv2dConfig::new([i, o], [1, 1]).init(device);
        LocalDiscriminator { c0: c(map_channels + features, 256), c1: c(256, 256), c2: c(256, 1) }
    }

    /// Scores `[N, 1, h, w]` for global features `[N, F]` against maps `[N, C, h, w]`.
    pub fn forward(&self, global: Tensor<2>, map: Tensor<4>) -> Tensor<4> {
        let [n, _, h, w] = map.dims();
        let [_, f] = global.dims();
        let tiled = global.reshape([n, f, 1, 1]).expand([n, f, h, w]);
        let x = Tensor::cat(vec![map, tiled], 1);
        let x = relu(self.c0.forward(x));
        let x = relu(self.c1.forward(x));
        self.c2.forward(x)
    }
}

/// Deep InfoMax prior discriminator: F -> 512 -> 128 -> 1 with ReLU (the sigmoid is applied by
/// the loss).
#[derive(Module, Debug)]
pub struct PriorDiscriminator {
    pub l0: Linear,
    pub l1: Linear,
    pub l2: Linear,
}

impl PriorDiscriminator {
    pub fn new(features: usize, device: &Device) -> Self {
        PriorDiscriminator {
            l0: LinearConfig::new(features, 512).init(device),
            l1: LinearConfig::new(512, 128).init(device),
            l2: LinearConfig::new(128, 1).init(device),
        }
    }

    pub fn forward(&self, x: Tensor<2>) -> Tensor<2> {
        let x = relu(self.l0.forward(x));
        let x = relu(self.l1.forward(x));
        self.l2.forward(x)
    }
}
