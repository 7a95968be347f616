//! Pipelines: transforms composed, then ToTensor + Normalize into a CHW f32 view, then an
//! optional cutout; and the presets of the reference (section 3.3 of the reference file).

use crate::color::{ColorJitter, RandomGrayscale};
use crate::crop::{RandomCrop, RandomResizedCrop};
use crate::erase::RandomErasing;
use crate::geometry::{RandomAffine, RandomHorizontalFlip};
use crate::image::RgbImage;
use crate::{AugError, AugRng, Transform};

/// `ToTensor` + `Normalize(mean, std)`: u8 HWC -> f32 CHW, `(v / 255 - mean) / std`.
#[derive(Clone, Debug)]
pub struct Normalize {
    mean: [f32; 3],
    std: [f32; 3],
}

impl Normalize {
    pub fn new(mean: [f32; 3], std: [f32; 3]) -> Result<Self, AugError> {
        if std.iter().any(|&s| !(s > 0.0 && s.is_finite())) || mean.iter().any(|m| !m.is_finite()) {
            return Err(AugError {
                transform: "Normalize",
                param: "std",
                problem: format!("= {std:?} must be positive (mean {mean:?} finite)"),
            });
        }
        Ok(Normalize { mean, std })
    }

    /// Writes `img` into `out` (`3 * height * width` values, channel planes).
    pub fn write(&self, img: &RgbImage, out: &mut [f32]) {
        let plane = img.width * img.height;
        debug_assert_eq!(out.len(), 3 * plane);
        for c in 0..3 {
            let scale = 1.0 / (255.0 * self.std[c]);
            let shift = self.mean[c] / self.std[c];
            let dst = &mut out[c * plane..(c + 1) * plane];
            for (d, p) in dst.iter_mut().zip(img.data.chunks_exact(3)) {
                *d = p[c] as f32 * scale - shift;
            }
        }
    }
}

/// A composed pipeline producing normalised `3 x size x size` views.
#[derive(Debug)]
pub struct Pipeline {
    transforms: Vec<Box<dyn Transform>>,
    normalize: Normalize,
    erase: Option<RandomErasing>,
}

impl Pipeline {
    pub fn new(transforms: Vec<Box<dyn Transform>>, normalize: Normalize, erase: Option<RandomErasing>) -> Self {
        Pipeline { transforms, normalize, erase }
    }

    /// Runs the u8 transforms only.
    pub fn augment(&self, img: RgbImage, rng: &mut AugRng) -> RgbImage {
        self.transforms.iter().fold(img, |im, t| t.apply(im, rng))
    }

    /// Augments `img`, normalises it into `out` (CHW) and applies the cutout. Returns (h, w).
    pub fn apply_into(&self, img: RgbImage, rng: &mut AugRng, out: &mut [f32]) -> (usize, usize) {
        let a = self.augment(img, rng);
        self.normalize.write(&a, out);
        if let Some(e) = &self.erase {
            e.apply(out, 3, a.height, a.width, rng);
        }
        (a.height, a.width)
    }
}

/// The reference's augmentation pipelines by method.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Preset {
    /// Relational reasoning and SimCLR: RandomResizedCrop(side, 0.08-1) -> flip 0.5 ->
    /// ColorJitter(0.8, 0.8, 0.8, 0.2) with p 0.8 -> grayscale p 0.2 -> normalise.
    Relational,
    /// Supervised, RotationNet, DeepCluster: RandomCrop(side, padding) -> flip -> normalise.
    CropFlip,
    /// Deep InfoMax: flip -> normalise.
    Flip,
    /// Linear evaluation and test: normalise only.
    Plain,
    /// Fine-tune (supervised STL-10 in the reference): flip -> affine p 0.5 -> normalise -> cutout.
    Finetune,
}

/// Dataset constants the presets need.
#[derive(Clone, Copy, Debug)]
pub struct PresetParams {
    pub side: usize,
    pub padding: usize,
    /// Cutout area fraction (CIFAR-10 0.25, STL-10 0.111, CIFAR-100 0.0625); `None` = no cutout.
    pub cutout: Option<f64>,
    pub mean: [f32; 3],
    pub std: [f32; 3],
}

impl Preset {
    pub fn build(self, p: &PresetParams) -> Result<Pipeline, AugError> {
        let norm = Normalize::new(p.mean, p.std)?;
        let flip = || RandomHorizontalFlip::new(0.5).map(|t| Box::new(t) as Box<dyn Transform>);
        Ok(match self {
            Preset::Relational => Pipeline::new(
                vec![
                    Box::new(RandomResizedCrop::new(p.side, (0.08, 1.0), (3.0 / 4.0, 4.0 / 3.0))?),
                    flip()?,
                    Box::new(ColorJitter::new(0.8, 0.8, 0.8, 0.2, 0.8)?),
                    Box::new(RandomGrayscale::new(0.2)?),
                ],
                norm,
                None,
            ),
            Preset::CropFlip => Pipeline::new(vec![Box::new(RandomCrop::new(p.side, p.padding)?), flip()?], norm, None),
            Preset::Flip => Pipeline::new(vec![flip()?], norm, None),
            Preset::Plain => Pipeline::new(vec![], norm, None),
            Preset::Finetune => Pipeline::new(
                vec![flip()?, Box::new(RandomAffine::new(18.0, (0.1, 0.1), (0.9, 1.1), 10.0, 0.5)?)],
                norm,
                p.cutout.map(RandomErasing::cutout).transpose()?,
            ),
        })
    }
}
