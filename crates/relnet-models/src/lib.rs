//! relnet-models: the backbones and heads of the paper, each with `new(&Device)` (or a kind's
//! `init(&Device)`), generic over the device.
//!
//! Unsafe code lives only in the burn-flex kernels (`fastconv`, `fastbn`, `bn1d`, `bn_relu_pool`,
//! `fastpool`, `direct3x3`, `direct_bf16`, `bf16_layout`, `simd`, `lanes`): outputs written
//! without zeroing them first, the `gemm` crate's raw-pointer GEMM and the SSE, AVX2 + FMA,
//! AVX-512F and AVX512-BF16 intrinsics. Their public functions check every length against the
//! shape they are given and panic on a mismatch, so no input makes them read or write out of
//! range or return unwritten values.
#![deny(clippy::undocumented_unsafe_blocks, clippy::missing_safety_doc, unsafe_op_in_unsafe_fn)]

pub mod backbone;
mod bf16_layout;
pub mod bn1d;
pub mod bn_relu_conv;
pub mod bn_relu_pool;
pub mod conv4;
mod direct3x3;
mod direct_bf16;
pub mod fastbn;
pub mod fastconv;
pub mod fastpool;
pub mod heads;
pub mod io;
mod lanes;
pub mod layers;
pub mod params;
pub mod peaks;
pub mod plan;
pub mod precision;
pub mod registry;
pub mod resnet34;
pub mod resnet_cifar;
mod simd;
mod winograd;

pub use backbone::{Backbone, BackboneEntry, BackboneKind, BackboneSpec, global_avg_pool};
pub use heads::{LocalDiscriminator, MlpHead, PriorDiscriminator, linear_head};
pub use plan::{Layer, PlanBackbone};
pub use precision::Precision;
