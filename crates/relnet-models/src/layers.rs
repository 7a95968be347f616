//! Layer constructors with the reference's settings: convolutions without bias, He fan-out
//! normal initialisation, BatchNorm with weight 1 and bias 0 (burn's BatchNorm default).

use burn::module::Initializer;
use burn::nn::conv::{Conv2d, Conv2dConfig};
use burn::nn::{BatchNorm, BatchNormConfig, PaddingConfig2d};
use burn::prelude::*;

/// `N(0, sqrt(2 / (k * k * out_channels)))`: PyTorch's `kaiming_normal_(mode="fan_out", relu)`.
pub fn he_fan_out() -> Initializer {
    Initializer::KaimingNormal { gain: std::f64::consts::SQRT_2, fan_out_only: true }
}

/// A bias-free `k x k` convolution with symmetric padding `pad`.
pub fn conv(cin: usize, cout: usize, k: usize, stride: usize, pad: usize, device: &Device) -> Conv2d {
    Conv2dConfig::new([cin, cout], [k, k])
        .with_stride([stride, stride])
        .with_padding(PaddingConfig2d::Explicit(pad, pad, pad, pad))
        .with_bias(false)
        .with_initializer(he_fan_out())
        .init(device)
}

pub fn bn(channels: usize, device: &Device) -> BatchNorm {
    BatchNormConfig::new(channels).init(device)
}
