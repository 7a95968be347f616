//! relnet-models: the backbones and heads of the paper, each with `new(&Device)` (or a kind's
//! `init(&Device)`), generic over the device.

pub mod backbone;
pub mod conv4;
mod direct3x3;
pub mod fastbn;
pub mod fastconv;
pub mod fastpool;
pub mod heads;
pub mod io;
pub mod layers;
pub mod params;
pub mod resnet34;
pub mod resnet_cifar;

pub use backbone::{Backbone, BackboneKind, global_avg_pool};
pub use heads::{LocalDiscriminator, MlpHead, PriorDiscriminator, linear_head};
