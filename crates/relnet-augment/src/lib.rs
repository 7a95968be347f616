//! relnet-augment: the augmentations of the reference pipelines, as small independent transforms
//! composed into per-method presets, and the K-view batch builder.
//!
//! Transforms follow torchvision applied to PIL images (what the reference code does): the same
//! parameter draws, and PIL's 8-bit arithmetic for resizing, blending, grey and HSV conversion.
//! Each transform is built with validated parameters (`new` returns an error, never panics later)
//! and applied with a caller-supplied RNG, so a seed fixes every view.

mod color;
mod crop;
mod erase;
mod geometry;
mod image;
mod pipeline;
mod resize;
mod views;

pub use color::{
    ColorJitter, Grayscale, RandomGrayscale, adjust_brightness, adjust_contrast, adjust_hue, adjust_saturation,
    hsv_to_rgb, rgb_to_hsv,
};
pub use crop::{RandomCrop, RandomResizedCrop};
pub use erase::RandomErasing;
pub use geometry::{RandomAffine, RandomHorizontalFlip, Rotate90, affine_pil, hflip, inverse_affine, rotate90};
pub use image::RgbImage;
pub use pipeline::{Normalize, Pipeline, Preset, PresetParams};
pub use resize::resize_bilinear;
pub use views::{Prefetcher, ViewBatch, build_views, view_rng};

/// The RNG every transform draws from.
pub type AugRng = rand_chacha::ChaCha8Rng;

/// A bad transform parameter, caught at construction.
#[derive(Debug, thiserror::Error, PartialEq)]
#[error("{transform}: parameter `{param}` {problem}")]
pub struct AugError {
    pub transform: &'static str,
    pub param: &'static str,
    pub problem: String,
}

pub(crate) fn check_prob(transform: &'static str, param: &'static str, p: f64) -> Result<(), AugError> {
    if (0.0..=1.0).contains(&p) {
        Ok(())
    } else {
        Err(AugError { transform, param, problem: format!("= {p} must be in [0, 1]") })
    }
}

/// A transform of an RGB u8 image.
pub trait Transform: Send + Sync + std::fmt::Debug {
    fn apply(&self, img: RgbImage, rng: &mut AugRng) -> RgbImage;
}
