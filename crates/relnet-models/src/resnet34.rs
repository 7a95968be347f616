//! ResNet-34 in torchvision's layout (the reference's `resnet_large.py`): 7x7 stride-2 stem,
//! 3x3 stride-2 max-pool, stages of [3, 4, 6, 3] BasicBlocks at 64/128/256/512 channels, no fc.

use burn::nn::conv::Conv2d;
use burn::nn::pool::{MaxPool2d, MaxPool2dConfig};
use burn::nn::{BatchNorm, PaddingConfig2d};
use burn::prelude::*;

use crate::backbone::BackboneSpec;

use crate::fastbn::batch_norm_relu;
use crate::fastconv::conv2d;
use crate::layers::{bn, conv};
use crate::resnet_cifar::{BasicBlock, stage};

#[derive(Module, Debug)]
pub struct ResNet34 {
    pub conv1: Conv2d,
    pub bn1: BatchNorm,
    pub maxpool: MaxPool2d,
    pub layer1: Vec<BasicBlock>,
    pub layer2: Vec<BasicBlock>,
    pub layer3: Vec<BasicBlock>,
    pub layer4: Vec<BasicBlock>,
}

/// What relnet asks about ResNet-34 (the 64x64 backbone of tiny-ImageNet and SlimageNet64).
pub const SPEC: BackboneSpec = BackboneSpec {
    name: "resnet34",
    features: ResNet34::FEATURES,
    first_channels: 64,
    // The stem's stride 2 and max-pool, then three stride-2 stages.
    min_side: 32,
    reference_params: 21_284_672,
    check_side: 64,
    deep: true,
};

impl ResNet34 {
    pub const FEATURES: usize = 512;

    pub fn new(device: &Device) -> Self {
        ResNet34 {
            conv1: conv(3, 64, 7, 2, 3, device),
            bn1: bn(64, device),
            maxpool: MaxPool2dConfig::new([3, 3])
                .with_strides([2, 2])
                .with_padding(PaddingConfig2d::Explicit(1, 1, 1, 1))
                .init(),
            layer1: stage(64, 64, 3, 1, device),
            layer2: stage(64, 128, 4, 2, device),
            layer3: stage(128, 256, 6, 2, device),
            layer4: stage(256, 512, 3, 2, device),
        }
    }

    /// The final feature map and the stem's conv -> BN -> ReLU map (64 channels, half size,
    /// before the max-pool).
    pub fn forward_maps(&self, x: Tensor<4>) -> (Tensor<4>, Tensor<4>) {
        let first = batch_norm_relu(&self.bn1, conv2d(&self.conv1, x));
        let mut x = self.maxpool.forward(first.clone());
        for b in self.layer1.iter().chain(&self.layer2).chain(&self.layer3).chain(&self.layer4) {
            x = b.forward(x);
        }
        (x, first)
    }
}
