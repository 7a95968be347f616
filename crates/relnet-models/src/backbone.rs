//! The backbone registry: one enum over every network, built from its name.

use std::fmt;
use std::str::FromStr;

use burn::prelude::*;

use crate::conv4::Conv4;
use crate::resnet34::ResNet34;
use crate::resnet_cifar::ResNetCifar;

/// Backbone names as the reference spells them.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum BackboneKind {
    Conv4,
    Resnet8,
    Resnet32,
    Resnet56,
    Resnet34,
}

impl BackboneKind {
    pub const ALL: [BackboneKind; 5] =
        [BackboneKind::Conv4, BackboneKind::Resnet8, BackboneKind::Resnet32, BackboneKind::Resnet56, BackboneKind::Resnet34];

    pub fn name(self) -> &'static str {
        match self {
            BackboneKind::Conv4 => "conv4",
            BackboneKind::Resnet8 => "resnet8",
            BackboneKind::Resnet32 => "resnet32",
            BackboneKind::Resnet56 => "resnet56",
            BackboneKind::Resnet34 => "resnet34",
        }
    }

    /// Size of the pooled feature vector.
    pub fn features(self) -> usize {
        match self {
            BackboneKind::Resnet34 => ResNet34::FEATURES,
            BackboneKind::Conv4 => Conv4::FEATURES,
            _ => ResNetCifar::FEATURES,
        }
    }

    /// Channels of the first conv -> BN -> ReLU map (Deep InfoMax's local map).
    pub fn first_channels(self) -> usize {
        match self {
            BackboneKind::Conv4 => 8,
            BackboneKind::Resnet34 => 64,
            _ => 16,
        }
    }

    /// Trainable parameters of the reference implementation (BN running statistics excluded).
    pub fn reference_params(self) -> usize {
        match self {
            BackboneKind::Conv4 => 24_648,
            BackboneKind::Resnet8 => 77_392,
            BackboneKind::Resnet32 => 466_256,
            BackboneKind::Resnet56 => 855_120,
            BackboneKind::Resnet34 => 21_284_672,
        }
    }

    pub fn init(self, device: &Device) -> Backbone {
        match self {
            BackboneKind::Conv4 => Backbone::Conv4(Conv4::new(device)),
            BackboneKind::Resnet8 => Backbone::ResNetCifar(ResNetCifar::new(1, device)),
            BackboneKind::Resnet32 => Backbone::ResNetCifar(ResNetCifar::new(5, device)),
            BackboneKind::Resnet56 => Backbone::ResNetCifar(ResNetCifar::new(9, device)),
            BackboneKind::Resnet34 => Backbone::ResNet34(ResNet34::new(device)),
        }
    }
}

impl fmt::Display for BackboneKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for BackboneKind {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        BackboneKind::ALL
            .into_iter()
            .find(|k| k.name() == s)
            .ok_or_else(|| format!("unknown backbone `{s}` (expected conv4, resnet8, resnet32, resnet56 or resnet34)"))
    }
}

/// Any backbone. `forward` gives the pooled features `[N, F]`.
#[derive(Module, Debug)]
pub enum Backbone {
    Conv4(Conv4),
    ResNetCifar(ResNetCifar),
    ResNet34(ResNet34),
}

impl Backbone {
    /// The final feature map `[N, C, h, w]` and the first block's map (for Deep InfoMax).
    pub fn forward_maps(&self, x: Tensor<4>) -> (Tensor<4>, Tensor<4>) {
        match self {
            Backbone::Conv4(m) => m.forward_maps(x),
            Backbone::ResNetCifar(m) => m.forward_maps(x),
            Backbone::ResNet34(m) => m.forward_maps(x),
        }
    }

    /// Pooled features `[N, F]` (global average pooling of the final map).
    pub fn forward(&self, x: Tensor<4>) -> Tensor<2> {
        global_avg_pool(self.forward_maps(x).0)
    }

    /// Pooled features and the first block's feature map.
    pub fn forward_with_first(&self, x: Tensor<4>) -> (Tensor<2>, Tensor<4>) {
        let (last, first) = self.forward_maps(x);
        (global_avg_pool(last), first)
    }
}

/// `AdaptiveAvgPool2d(1)` + flatten.
pub fn global_avg_pool(x: Tensor<4>) -> Tensor<2> {
    let [n, c, _, _] = x.dims();
    x.mean_dim(3).mean_dim(2).reshape([n, c])
}
