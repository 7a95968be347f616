//! Colour transforms with PIL's 8-bit semantics (torchvision applies `ImageEnhance` to PIL images):
//! brightness, contrast and saturation are PIL blends with a degenerate image (truncating to u8),
//! hue is a shift of the 8-bit H channel in PIL's HSV, grey is PIL's ITU-R 601-2 luma.

use rand::Rng;
use rand::seq::SliceRandom;

use crate::crop::uniform;
use crate::image::{RgbImage, luma};
use crate::{AugError, AugRng, Transform, check_prob};

/// PIL `Image.blend(a, b, alpha)` on one value: `a + alpha * (b - a)`, truncated (clipped
/// outside [0, 1]).
#[inline]
fn blend(a: u8, b: u8, alpha: f32) -> u8 {
    let v = a as f32 + alpha * (b as f32 - a as f32);
    if (0.0..=1.0).contains(&alpha) {
        v as u8
    } else if v <= 0.0 {
        0
    } else if v >= 255.0 {
        255
    } else {
        v as u8
    }
}

/// `ImageEnhance.Brightness(img).enhance(f)`: blend with black.
pub fn adjust_brightness(img: &mut RgbImage, f: f32) {
    for v in img.data.iter_mut() {
        *v = blend(0, *v, f);
    }
}

/// `ImageEnhance.Contrast(img).enhance(f)`: blend with the mean grey level (rounded).
pub fn adjust_contrast(img: &mut RgbImage, f: f32) {
    let n = (img.width * img.height).max(1);
    let sum: u64 = img.data.chunks_exact(3).map(|p| luma(p[0], p[1], p[2]) as u64).sum();
    let mean = (sum as f64 / n as f64 + 0.5) as u8;
    for v in img.data.iter_mut() {
        *v = blend(mean, *v, f);
    }
}

/// `ImageEnhance.Color(img).enhance(f)`: blend with the grey version of the image.
pub fn adjust_saturation(img: &mut RgbImage, f: f32) {
    for p in img.data.chunks_exact_mut(3) {
        let l = luma(p[0], p[1], p[2]);
        for v in p.iter_mut() {
            *v = blend(l, *v, f);
        }
    }
}

/// PIL's RGB -> HSV (each channel 8-bit).
///
/// Same arithmetic as Pillow's `rgb2hsv_row`, written to avoid libm calls in the hot loop:
/// `fmod(h / 6 + 1, 1)` is an exact subtraction here because the argument lies in [5/6, 11/6].
#[inline]
pub fn rgb_to_hsv(r: u8, g: u8, b: u8) -> [u8; 3] {
    let maxc = r.max(g).max(b);
    let minc = r.min(g).min(b);
    if maxc == minc {
        return [0, 0, maxc];
    }
    let cr = (maxc - minc) as f32;
    let s = cr / maxc as f32;
    let h = if r == maxc {
        (maxc - b) as f32 / cr - (maxc - g) as f32 / cr
    } else if g == maxc {
        2.0 + (maxc - r) as f32 / cr - (maxc - b) as f32 / cr
    } else {
        4.0 + (maxc - g) as f32 / cr - (maxc - r) as f32 / cr
    };
    let x = h as f64 / 6.0 + 1.0;
    let h = (if x >= 1.0 { x - 1.0 } else { x }) as f32;
    // `(int)(v * 255.0)` of non-negative values: truncation, clipped to 255.
    [((h * 255.0) as i32).min(255) as u8, ((s * 255.0) as i32).min(255) as u8, maxc]
}

/// C's `round` (half away from zero) for non-negative values, without a libm call.
#[inline]
fn round_pos(x: f32) -> i32 {
    let t = x as i32;
    if x - t as f32 >= 0.5 { t + 1 } else { t }
}

/// PIL's HSV -> RGB.
#[inline]
pub fn hsv_to_rgb(h: u8, s: u8, v: u8) -> [u8; 3] {
    if s == 0 {
        return [v, v, v];
    }
    let hf = h as f32 * 6.0 / 255.0;
    let i = hf as i32; // floor: hf >= 0
    let f = hf - i as f32;
    let fs = s as f32 / 255.0;
    let vf = v as f32;
    let c8 = |x: f32| round_pos(x).clamp(0, 255) as u8;
    let p = c8(vf * (1.0 - fs));
    let q = c8(vf * (1.0 - fs * f));
    let t = c8(vf * (1.0 - fs * (1.0 - f)));
    match i % 6 {
        0 => [v, t, p],
        1 => [q, v, p],
        2 => [p, v, t],
        3 => [p, q, v],
        4 => [t, p, v],
        _ => [v, p, q],
    }
}

/// torchvision's `adjust_hue` for PIL images: H (8-bit) += trunc(factor * 255), wrapping.
pub fn adjust_hue(img: &mut RgbImage, factor: f32) {
    // Even a zero shift round-trips through HSV (lossy), as torchvision does.
    let shift = (factor * 255.0) as i32 as u8;
    for p in img.data.chunks_exact_mut(3) {
        let [h, s, v] = rgb_to_hsv(p[0], p[1], p[2]);
        let [r, g, b] = hsv_to_rgb(h.wrapping_add(shift), s, v);
        p[0] = r;
        p[1] = g;
        p[2] = b;
    }
}

/// `RandomApply([ColorJitter(brightness, contrast, saturation, hue)], p)`.
///
/// Factors are drawn as torchvision draws them: brightness, contrast and saturation uniformly
/// in `[max(0, 1 - x), 1 + x]`, hue in `[-h, h]`, applied in a random order; a parameter of 0
/// leaves that adjustment out.
#[derive(Clone, Debug)]
pub struct ColorJitter {
    brightness: f32,
    contrast: f32,
    saturation: f32,
    hue: f32,
    p: f64,
}

impl ColorJitter {
    pub fn new(brightness: f32, contrast: f32, saturation: f32, hue: f32, p: f64) -> Result<Self, AugError> {
        for (param, v) in [("brightness", brightness), ("contrast", contrast), ("saturation", saturation)] {
            if !(v >= 0.0 && v.is_finite()) {
                return Err(AugError { transform: "ColorJitter", param, problem: format!("= {v} must be >= 0") });
            }
        }
        if !(0.0..=0.5).contains(&hue) {
            return Err(AugError {
                transform: "ColorJitter",
                param: "hue",
                problem: format!("= {hue} must be in [0, 0.5]"),
            });
        }
        check_prob("ColorJitter", "p", p)?;
        Ok(ColorJitter { brightness, contrast, saturation, hue, p })
    }

    /// Draws (order, brightness, contrast, saturation, hue) as `ColorJitter.get_params`.
    pub fn params(&self, rng: &mut AugRng) -> ([usize; 4], [Option<f32>; 4]) {
        let mut order = [0, 1, 2, 3];
        order.shuffle(rng);
        let factor = |rng: &mut AugRng, x: f32| {
            (x > 0.0).then(|| uniform(rng, (1.0 - x).max(0.0) as f64, (1.0 + x) as f64) as f32)
        };
        let b = factor(rng, self.brightness);
        let c = factor(rng, self.contrast);
        let s = factor(rng, self.saturation);
        let h = (self.hue > 0.0).then(|| uniform(rng, -self.hue as f64, self.hue as f64) as f32);
        (order, [b, c, s, h])
    }

    /// Applies the adjustments with the given order and factors.
    pub fn apply_with(img: &mut RgbImage, order: [usize; 4], f: [Option<f32>; 4]) {
        for i in order {
            match (i, f[i]) {
                (0, Some(b)) => adjust_brightness(img, b),
                (1, Some(c)) => adjust_contrast(img, c),
                (2, Some(s)) => adjust_saturation(img, s),
                (3, Some(h)) => adjust_hue(img, h),
                _ => {}
            }
        }
    }
}

impl Transform for ColorJitter {
    fn apply(&self, mut img: RgbImage, rng: &mut AugRng) -> RgbImage {
        // RandomApply: `if p < rand: skip`.
        if self.p < rng.random::<f64>() {
            return img;
        }
        let (order, f) = self.params(rng);
        Self::apply_with(&mut img, order, f);
        img
    }
}

/// Grey with three equal channels (PIL `convert("L")`, then back to RGB).
pub struct Grayscale;

impl Grayscale {
    pub fn apply_in_place(img: &mut RgbImage) {
        for p in img.data.chunks_exact_mut(3) {
            let l = luma(p[0], p[1], p[2]);
            p.fill(l);
        }
    }
}

/// `RandomGrayscale(p)`.
#[derive(Clone, Debug)]
pub struct RandomGrayscale {
    p: f64,
}

impl RandomGrayscale {
    pub fn new(p: f64) -> Result<Self, AugError> {
        check_prob("RandomGrayscale", "p", p)?;
        Ok(RandomGrayscale { p })
    }
}

impl Transform for RandomGrayscale {
    fn apply(&self, mut img: RgbImage, rng: &mut AugRng) -> RgbImage {
        if rng.random::<f64>() < self.p {
            Grayscale::apply_in_place(&mut img);
        }
        img
    }
}
