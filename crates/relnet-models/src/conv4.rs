//! Conv-4: four blocks conv3x3 (no bias) -> BN -> ReLU -> AvgPool 2x2, channels 3-8-16-32-64,
//! no pool after block 4, then global average pooling: 64-d features, 24,648 parameters.

use burn::nn::BatchNorm;
use burn::nn::conv::Conv2d;
use burn::nn::pool::{AvgPool2d, AvgPool2dConfig};
use burn::prelude::*;

use crate::backbone::BackboneSpec;

use crate::bn_relu_pool::batch_norm_relu_pool;
use crate::fastbn::batch_norm_relu;
use crate::fastconv::conv2d;
use crate::fastpool::avg_pool2d;
use crate::layers::{bn, conv};

#[derive(Module, Debug)]
pub struct ConvBlock {
    pub conv: Conv2d,
    pub bn: BatchNorm,
    pub pool: Option<AvgPool2d>,
}

impl ConvBlock {
    fn new(cin: usize, cout: usize, pool: bool, device: &Device) -> Self {
        ConvBlock {
            conv: conv(cin, cout, 3, 1, 1, device),
            bn: bn(cout, device),
            pool: pool.then(|| AvgPool2dConfig::new([2, 2]).init()),
        }
    }

    /// conv -> BN -> ReLU (before the pool).
    pub fn activate(&self, x: Tensor<4>) -> Tensor<4> {
        batch_norm_relu(&self.bn, conv2d(&self.conv, x))
    }

    pub fn pool(&self, x: Tensor<4>) -> Tensor<4> {
        match &self.pool {
            Some(p) => avg_pool2d(p, x),
            None => x,
        }
    }

    /// conv -> BN -> ReLU -> pool: the last three as one operation where
    /// [`batch_norm_relu_pool`] can (the same values).
    pub fn forward(&self, x: Tensor<4>) -> Tensor<4> {
        match &self.pool {
            Some(p) => batch_norm_relu_pool(&self.bn, p, conv2d(&self.conv, x)),
            None => self.activate(x),
        }
    }
}

#[derive(Module, Debug)]
pub struct Conv4 {
    pub layer1: ConvBlock,
    pub layer2: ConvBlock,
    pub layer3: ConvBlock,
    pub layer4: ConvBlock,
}

/// What relnet asks about Conv-4.
pub const SPEC: BackboneSpec = BackboneSpec {
    name: "conv4",
    features: Conv4::FEATURES,
    first_channels: 8,
    // Four 2x2 poolings: 8 pixels is the smallest side that leaves one.
    min_side: 8,
    reference_params: 24_648,
    check_side: 32,
    deep: false,
};

impl Conv4 {
    pub const FEATURES: usize = 64;

    pub fn new(device: &Device) -> Self {
        Conv4 {
            layer1: ConvBlock::new(3, 8, true, device),
            layer2: ConvBlock::new(8, 16, true, device),
            layer3: ConvBlock::new(16, 32, true, device),
            layer4: ConvBlock::new(32, 64, false, device),
        }
    }

    /// The final feature map (before global pooling) and the first conv -> BN -> ReLU map
    /// (8 channels at full resolution, before the first pool).
    pub fn forward_maps(&self, x: Tensor<4>) -> (Tensor<4>, Tensor<4>) {
        let first = self.layer1.activate(x);
        let x = self.layer1.pool(first.clone());
        (self.after_first(x), first)
    }

    /// The final feature map alone: the same values as `forward_maps(x).0`, without keeping the
    /// first block's map (so that block too ends in one operation).
    pub fn forward_last(&self, x: Tensor<4>) -> Tensor<4> {
        self.after_first(self.layer1.forward(x))
    }

    fn after_first(&self, x: Tensor<4>) -> Tensor<4> {
        self.layer4.forward(self.layer3.forward(self.layer2.forward(x)))
    }
}
