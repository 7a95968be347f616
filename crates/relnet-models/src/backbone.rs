//! The backbone registry: one enum over every network, built from its name.

use std::fmt;
use std::str::FromStr;

use burn::prelude::*;

use crate::conv4::Conv4;
use crate::resnet_cifar::ResNetCifar;
use crate::resnet34::ResNet34;

/// What the rest of relnet asks about a backbone, declared in the backbone's own file.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BackboneSpec {
    /// The name as the reference spells it (`--backbone`, configs, artifacts).
    pub name: &'static str,
    /// Size of the pooled feature vector.
    pub features: usize,
    /// Channels of the first conv -> BN -> ReLU map (Deep InfoMax's local map).
    pub first_channels: usize,
    /// The smallest image side the backbone takes (its downsampling must leave one pixel).
    pub min_side: usize,
    /// Trainable parameters of the reference implementation (BN running statistics excluded).
    pub reference_params: usize,
    /// The image side the conformance suite checks it at.
    pub check_side: usize,
    /// Deep enough that f32 gradients differ between backends by more than the default
    /// tolerance (the conformance suite uses its deep-gradient tolerance).
    pub deep: bool,
}

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
    pub const ALL: [BackboneKind; 5] = [
        BackboneKind::Conv4,
        BackboneKind::Resnet8,
        BackboneKind::Resnet32,
        BackboneKind::Resnet56,
        BackboneKind::Resnet34,
    ];

    /// Everything relnet asks about the backbone, declared in the backbone's own file.
    pub fn spec(self) -> BackboneSpec {
        match self {
            BackboneKind::Conv4 => crate::conv4::SPEC,
            BackboneKind::Resnet8 => crate::resnet_cifar::RESNET8,
            BackboneKind::Resnet32 => crate::resnet_cifar::RESNET32,
            BackboneKind::Resnet56 => crate::resnet_cifar::RESNET56,
            BackboneKind::Resnet34 => crate::resnet34::SPEC,
        }
    }

    pub fn name(self) -> &'static str {
        self.spec().name
    }

    /// Size of the pooled feature vector.
    pub fn features(self) -> usize {
        self.spec().features
    }

    /// Channels of the first conv -> BN -> ReLU map (Deep InfoMax's local map).
    pub fn first_channels(self) -> usize {
        self.spec().first_channels
    }

    /// Trainable parameters of the reference implementation (BN running statistics excluded).
    pub fn reference_params(self) -> usize {
        self.spec().reference_params
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
        BackboneKind::ALL.into_iter().find(|k| k.name() == s).ok_or_else(|| {
            format!("unknown backbone `{s}` (expected {})", BackboneKind::ALL.map(BackboneKind::name).join(", "))
        })
    }
}

/// Any backbone. `forward` gives the pooled features `[N, F]`.
// One value per model, never stored in bulk: the largest variant's size costs nothing.
#[allow(clippy::large_enum_variant)]
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
