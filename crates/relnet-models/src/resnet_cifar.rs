//! CIFAR-style ResNet-8/32/56 (the reference's `resnet_small.py`): 3x3 stem to 16 channels,
//! three stages of BasicBlocks at 16/32/64 channels (strides 1/2/2), a projection shortcut
//! (1x1 conv + BN, "option B") wherever stride or width changes, global average pooling.

use burn::nn::BatchNorm;
use burn::nn::conv::Conv2d;
use burn::prelude::*;

use crate::backbone::BackboneSpec;

use crate::bn_relu_conv::batch_norm_relu_conv;
use crate::fastbn::{batch_norm, batch_norm_add_relu, batch_norm_relu};
use crate::fastconv::conv2d;
use crate::layers::{bn, conv};

/// 1x1 convolution + BN on the shortcut path.
#[derive(Module, Debug)]
pub struct Downsample {
    pub conv: Conv2d,
    pub bn: BatchNorm,
}

/// conv3x3 -> BN -> ReLU -> conv3x3 -> BN, plus the shortcut, then ReLU.
#[derive(Module, Debug)]
pub struct BasicBlock {
    pub conv1: Conv2d,
    pub bn1: BatchNorm,
    pub conv2: Conv2d,
    pub bn2: BatchNorm,
    pub downsample: Option<Downsample>,
}

impl BasicBlock {
    pub fn new(cin: usize, cout: usize, stride: usize, device: &Device) -> Self {
        let downsample = (stride != 1 || cin != cout)
            .then(|| Downsample { conv: conv(cin, cout, 1, stride, 0, device), bn: bn(cout, device) });
        BasicBlock {
            conv1: conv(cin, cout, 3, stride, 1, device),
            bn1: bn(cout, device),
            conv2: conv(cout, cout, 3, 1, 1, device),
            bn2: bn(cout, device),
            downsample,
        }
    }

    pub fn forward(&self, x: Tensor<4>) -> Tensor<4> {
        // `bn1 -> relu -> conv2` as one operation where it applies (`bn_relu_conv`).
        let y = batch_norm_relu_conv(&self.bn1, &self.conv2, conv2d(&self.conv1, x.clone()));
        let short = match &self.downsample {
            Some(d) => batch_norm(&d.bn, conv2d(&d.conv, x)),
            None => x,
        };
        batch_norm_add_relu(&self.bn2, y, short)
    }
}

/// A stage of blocks; the first may change stride and width.
pub fn stage(cin: usize, cout: usize, blocks: usize, stride: usize, device: &Device) -> Vec<BasicBlock> {
    (0..blocks)
        .map(
            |i| {
                if i == 0 { BasicBlock::new(cin, cout, stride, device) } else { BasicBlock::new(cout, cout, 1, device) }
            },
        )
        .collect()
}

#[derive(Module, Debug)]
pub struct ResNetCifar {
    pub conv1: Conv2d,
    pub bn1: BatchNorm,
    pub layer1: Vec<BasicBlock>,
    pub layer2: Vec<BasicBlock>,
    pub layer3: Vec<BasicBlock>,
}

const fn cifar_spec(name: &'static str, reference_params: usize, deep: bool) -> BackboneSpec {
    // Two stride-2 stages: any side of 4 or more leaves a map.
    BackboneSpec {
        name,
        features: ResNetCifar::FEATURES,
        first_channels: 16,
        min_side: 4,
        reference_params,
        check_side: 32,
        deep,
    }
}

/// ResNet-8 (one block per stage).
pub const RESNET8: BackboneSpec = cifar_spec("resnet8", 77_392, false);
/// ResNet-32 (five blocks per stage).
pub const RESNET32: BackboneSpec = cifar_spec("resnet32", 466_256, true);
/// ResNet-56 (nine blocks per stage).
pub const RESNET56: BackboneSpec = cifar_spec("resnet56", 855_120, true);

impl ResNetCifar {
    pub const FEATURES: usize = 64;

    /// `blocks` per stage: 1 (ResNet-8), 5 (ResNet-32), 9 (ResNet-56).
    pub fn new(blocks: usize, device: &Device) -> Self {
        ResNetCifar {
            conv1: conv(3, 16, 3, 1, 1, device),
            bn1: bn(16, device),
            layer1: stage(16, 16, blocks, 1, device),
            layer2: stage(16, 32, blocks, 2, device),
            layer3: stage(32, 64, blocks, 2, device),
        }
    }

    /// The final feature map and the stem's conv -> BN -> ReLU map (16 channels, full size).
    pub fn forward_maps(&self, x: Tensor<4>) -> (Tensor<4>, Tensor<4>) {
        let first = batch_norm_relu(&self.bn1, conv2d(&self.conv1, x));
        let mut x = first.clone();
        for b in self.layer1.iter().chain(&self.layer2).chain(&self.layer3) {
            x = b.forward(x);
        }
        (x, first)
    }
}
