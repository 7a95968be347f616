//! The backbone registry: relnet's own networks and the ones other crates register, each built
//! from its name.

use std::fmt;
use std::str::FromStr;

use burn::prelude::*;

use crate::conv4::Conv4;
use crate::plan::{Layer, PlanBackbone};
use crate::registry::{Named, Registry, RegistryError};
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

/// A backbone registered by a crate outside relnet: its spec and the layers it is built from.
#[derive(Debug)]
pub struct BackboneEntry {
    pub spec: BackboneSpec,
    /// The layers, freshly initialised on `device`.
    pub layers: fn(&Device) -> Vec<Layer>,
    /// Index of the layer whose output is the first block's map (`spec.first_channels` wide).
    pub first_map: usize,
}

impl Named for BackboneEntry {
    fn name(&self) -> &str {
        self.spec.name
    }
}

static REGISTRY: Registry<BackboneEntry> = Registry::new("backbone", Vec::new);

/// Adds a backbone built from a list of layers; from then on `--backbone`, configs, grids,
/// artifacts and the conformance suite know it by `entry.spec.name`.
///
/// Refused when the name is taken or not a plain file name (`[a-z0-9._-]`: it names run and grid
/// folders), or when the network contradicts its spec: it is built once on the CPU and run at
/// `spec.check_side` (feature width, first map's channels, trainable parameters) and at
/// `spec.min_side` (a non-empty final map).
pub fn register(entry: BackboneEntry) -> Result<(), RegistryError> {
    let name = entry.spec.name;
    if BackboneKind::BUILTIN.iter().any(|k| k.name() == name) {
        return Err(RegistryError::Duplicate { kind: "backbone", name: name.to_string() });
    }
    if let Err(problem) = check_entry(&entry) {
        return Err(RegistryError::Invalid { kind: "backbone", name: name.to_string(), problem });
    }
    REGISTRY.add(entry)
}

/// What is wrong with a backbone entry, if anything (see [`register`]).
fn check_entry(entry: &BackboneEntry) -> Result<(), String> {
    let spec = entry.spec;
    let plain = |c: char| c.is_ascii_lowercase() || c.is_ascii_digit() || matches!(c, '.' | '_' | '-');
    if spec.name.is_empty() || spec.name.starts_with('.') || !spec.name.chars().all(plain) {
        return Err("the name is one word of a-z, 0-9, `.`, `_` and `-`, not starting with `.`".into());
    }
    if spec.features == 0 || spec.first_channels == 0 || spec.min_side == 0 {
        return Err("features, first_channels and min_side are at least 1".into());
    }
    if spec.check_side < spec.min_side {
        return Err(format!("check_side {} is below min_side {}", spec.check_side, spec.min_side));
    }
    let device = Device::flex();
    let layers = (entry.layers)(&device);
    if entry.first_map >= layers.len() {
        return Err(format!("first_map {} is not one of its {} layers", entry.first_map, layers.len()));
    }
    let model = Backbone::Plan(PlanBackbone::new(layers, entry.first_map));
    let params = crate::params::trainable_params(&model);
    if params != spec.reference_params {
        return Err(format!("it has {params} trainable parameters, its spec says {}", spec.reference_params));
    }
    for side in [spec.check_side, spec.min_side] {
        let run = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            model.forward_maps(Tensor::<4>::zeros([2, 3, side, side], &device))
        }));
        let (last, first) = run.map_err(|p| {
            let why = p.downcast_ref::<String>().cloned().or_else(|| p.downcast_ref::<&str>().map(|s| s.to_string()));
            format!("its layers fail on {side}x{side} RGB images: {}", why.unwrap_or_default())
        })?;
        let [_, c, h, w] = last.dims();
        if c != spec.features || h == 0 || w == 0 {
            return Err(format!(
                "on {side}x{side} images its final map is {c}x{h}x{w}, the spec says {} features",
                spec.features
            ));
        }
        if first.dims()[1] != spec.first_channels {
            return Err(format!(
                "layer {} gives {} channels, the spec says first_channels = {}",
                entry.first_map,
                first.dims()[1],
                spec.first_channels
            ));
        }
    }
    Ok(())
}

/// A backbone by name: one of relnet's (as the reference spells them) or a registered one.
#[derive(Clone, Copy, Debug)]
pub enum BackboneKind {
    Conv4,
    Resnet8,
    Resnet32,
    Resnet56,
    Resnet34,
    Registered(&'static BackboneEntry),
}

impl PartialEq for BackboneKind {
    fn eq(&self, other: &Self) -> bool {
        self.name() == other.name()
    }
}

impl Eq for BackboneKind {}

impl std::hash::Hash for BackboneKind {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        self.name().hash(state)
    }
}

impl serde::Serialize for BackboneKind {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.name())
    }
}

impl<'de> serde::Deserialize<'de> for BackboneKind {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let name = <String as serde::Deserialize>::deserialize(d)?;
        name.parse().map_err(serde::de::Error::custom)
    }
}

impl BackboneKind {
    /// relnet's own backbones.
    pub const BUILTIN: [BackboneKind; 5] = [
        BackboneKind::Conv4,
        BackboneKind::Resnet8,
        BackboneKind::Resnet32,
        BackboneKind::Resnet56,
        BackboneKind::Resnet34,
    ];

    /// Every backbone: relnet's, then the registered ones in registration order.
    pub fn all() -> Vec<BackboneKind> {
        let registered = REGISTRY.all().into_iter().map(BackboneKind::Registered);
        BackboneKind::BUILTIN.into_iter().chain(registered).collect()
    }

    /// Every backbone's name, in [`BackboneKind::all`]'s order.
    pub fn names() -> Vec<&'static str> {
        BackboneKind::all().into_iter().map(BackboneKind::name).collect()
    }

    /// A `--backbone` value parser that lists every backbone known when the command is built.
    pub fn value_parser() -> impl clap::builder::TypedValueParser<Value = BackboneKind> {
        use clap::builder::TypedValueParser;
        clap::builder::PossibleValuesParser::new(BackboneKind::names()).try_map(|s| s.parse::<BackboneKind>())
    }

    /// Everything relnet asks about the backbone, declared in the backbone's own file.
    pub fn spec(self) -> BackboneSpec {
        match self {
            BackboneKind::Registered(e) => e.spec,
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
            BackboneKind::Registered(e) => Backbone::Plan(PlanBackbone::new((e.layers)(device), e.first_map)),
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
        BackboneKind::all()
            .into_iter()
            .find(|k| k.name() == s)
            .ok_or_else(|| format!("unknown backbone `{s}` (expected {})", BackboneKind::names().join(", ")))
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
    /// A registered backbone.
    Plan(PlanBackbone),
}

impl Backbone {
    /// The final feature map `[N, C, h, w]` and the first block's map (for Deep InfoMax).
    pub fn forward_maps(&self, x: Tensor<4>) -> (Tensor<4>, Tensor<4>) {
        match self {
            Backbone::Conv4(m) => m.forward_maps(x),
            Backbone::ResNetCifar(m) => m.forward_maps(x),
            Backbone::ResNet34(m) => m.forward_maps(x),
            Backbone::Plan(m) => m.forward_maps(x),
        }
    }

    /// Pooled features `[N, F]` (global average pooling of the final map).
    pub fn forward(&self, x: Tensor<4>) -> Tensor<2> {
        global_avg_pool(match self {
            // Without the first block's map, which Conv-4 then need not keep.
            Backbone::Conv4(m) => m.forward_last(x),
            _ => self.forward_maps(x).0,
        })
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
