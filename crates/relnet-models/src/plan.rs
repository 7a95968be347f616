//! Backbones described as a list of layers, the form a crate outside relnet registers its own
//! backbone in (`backbone::register`).
//!
//! burn's `Module` trait is not object-safe (its visitors and mappers are generic), so a backbone
//! cannot be a boxed trait object that relnet saves, loads, forks onto devices and optimises. A
//! [`PlanBackbone`] is one concrete module whatever the plan: a `Vec` of [`Layer`]s, each one of
//! relnet's layers (convolution, batch norm and average pooling on relnet's burn-flex kernels;
//! ReLU alone and max pooling are burn's). That covers the feed-forward networks self-supervised papers use as small backbones
//! (Conv-4/Conv-6, VGG-style stacks, all-convolutional nets); a residual network is added as a
//! built-in (`resnet_cifar.rs` is the pattern).

use burn::nn::conv::Conv2d;
use burn::nn::pool::{AvgPool2d, AvgPool2dConfig, MaxPool2d, MaxPool2dConfig};
use burn::nn::{BatchNorm, Relu};
use burn::prelude::*;

use crate::bn_relu_pool::batch_norm_relu_pool;
use crate::fastbn::{batch_norm, batch_norm_relu};
use crate::fastconv::conv2d;
use crate::fastpool::avg_pool2d;
use crate::layers::{bn, conv};

/// One layer of a [`PlanBackbone`].
#[derive(Module, Debug)]
pub enum Layer {
    /// A convolution (relnet's kernels on burn-flex, burn's elsewhere).
    Conv(Conv2d),
    /// Batch normalisation.
    BatchNorm(BatchNorm),
    /// Batch normalisation followed by ReLU, fused on burn-flex.
    BatchNormRelu(BatchNorm),
    Relu(Relu),
    AvgPool(AvgPool2d),
    MaxPool(MaxPool2d),
}

impl Layer {
    /// A bias-free `k x k` convolution (`k` odd), stride `stride`, padding `k / 2` (so stride 1
    /// keeps the size), He fan-out initialised as the reference's convolutions are.
    pub fn conv(cin: usize, cout: usize, k: usize, stride: usize, device: &Device) -> Layer {
        assert!(k % 2 == 1, "Layer::conv takes an odd kernel size, not {k}: padding k / 2 keeps the size only then");
        Layer::Conv(conv(cin, cout, k, stride, k / 2, device))
    }

    /// Batch norm (weight 1, bias 0) and ReLU.
    pub fn bn_relu(channels: usize, device: &Device) -> Layer {
        Layer::BatchNormRelu(bn(channels, device))
    }

    /// Batch norm (weight 1, bias 0) without an activation.
    pub fn bn(channels: usize, device: &Device) -> Layer {
        Layer::BatchNorm(bn(channels, device))
    }

    pub fn relu() -> Layer {
        Layer::Relu(Relu::new())
    }

    /// `k x k` average pooling with stride `k`.
    pub fn avg_pool(k: usize) -> Layer {
        Layer::AvgPool(AvgPool2dConfig::new([k, k]).with_strides([k, k]).init())
    }

    /// `k x k` max pooling with stride `k`.
    pub fn max_pool(k: usize) -> Layer {
        Layer::MaxPool(MaxPool2dConfig::new([k, k]).with_strides([k, k]).init())
    }

    pub fn forward(&self, x: Tensor<4>) -> Tensor<4> {
        match self {
            Layer::Conv(c) => conv2d(c, x),
            Layer::BatchNorm(b) => batch_norm(b, x),
            Layer::BatchNormRelu(b) => batch_norm_relu(b, x),
            Layer::Relu(r) => r.forward(x),
            Layer::AvgPool(p) => avg_pool2d(p, x),
            Layer::MaxPool(p) => p.forward(x),
        }
    }
}

/// A backbone that runs its layers in order; the features are the global average of the last
/// map, and the output of layer `first` is the first block's map (Deep InfoMax's local map).
#[derive(Module, Debug)]
pub struct PlanBackbone {
    pub layers: Vec<Layer>,
    pub first: usize,
}

impl PlanBackbone {
    /// Panics when `first` is not one of the layers (the registered plan is malformed).
    pub fn new(layers: Vec<Layer>, first: usize) -> Self {
        assert!(
            first < layers.len(),
            "a plan of {} layers has no layer {first} to take the first map from",
            layers.len()
        );
        PlanBackbone { layers, first }
    }

    /// The final feature map and the output of layer `first`. A batch norm + ReLU followed by
    /// an average pool runs as one operation ([`batch_norm_relu_pool`], the same values) unless
    /// layer `first` is the batch norm.
    pub fn forward_maps(&self, mut x: Tensor<4>) -> (Tensor<4>, Tensor<4>) {
        let mut first = None;
        let mut i = 0;
        while i < self.layers.len() {
            match (&self.layers[i], self.layers.get(i + 1)) {
                (Layer::BatchNormRelu(b), Some(Layer::AvgPool(p))) if i != self.first => {
                    x = batch_norm_relu_pool(b, p, x);
                    // The pool is done too: `i` is now its index.
                    i += 1;
                }
                (layer, _) => x = layer.forward(x),
            }
            if i == self.first {
                first = Some(x.clone());
            }
            i += 1;
        }
        let first = first.expect("PlanBackbone::new checked that layer `first` exists");
        (x, first)
    }
}
