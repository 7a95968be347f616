//! Geometric transforms: horizontal flip, rotation by multiples of 90 degrees, RandomAffine.

use rand::Rng;

use crate::crop::uniform;
use crate::image::RgbImage;
use crate::{AugError, AugRng, Transform, check_prob};

/// Mirrors an image left-right.
pub fn hflip(img: &mut RgbImage) {
    let w = img.width;
    for row in img.data.chunks_exact_mut(w * 3) {
        row.as_chunks_mut::<3>().0.reverse();
    }
}

/// `RandomHorizontalFlip(p)`.
#[derive(Clone, Debug)]
pub struct RandomHorizontalFlip {
    p: f64,
}

impl RandomHorizontalFlip {
    pub fn new(p: f64) -> Result<Self, AugError> {
        check_prob("RandomHorizontalFlip", "p", p)?;
        Ok(RandomHorizontalFlip { p })
    }
}

impl Transform for RandomHorizontalFlip {
    fn apply(&self, mut img: RgbImage, rng: &mut AugRng) -> RgbImage {
        if rng.random::<f64>() < self.p {
            hflip(&mut img);
        }
        img
    }
}

/// Rotates counter-clockwise by `quarter * 90` degrees (as `torch.rot90(img, quarter)` on HW).
pub fn rotate90(img: &RgbImage, quarter: u8) -> RgbImage {
    let (w, h) = (img.width, img.height);
    match quarter % 4 {
        0 => img.clone(),
        2 => {
            let mut data = Vec::with_capacity(img.data.len());
            for p in img.data.chunks_exact(3).rev() {
                data.extend_from_slice(p);
            }
            RgbImage { width: w, height: h, data }
        }
        q => {
            // Output is h wide and w high.
            let mut out = RgbImage::zeros(h, w);
            for y in 0..w {
                for x in 0..h {
                    // CCW 90: out(y, x) = in(x, w-1-y); CW 90 (q = 3): out(y, x) = in(h-1-x, y).
                    let (sy, sx) = if q == 1 { (x, w - 1 - y) } else { (h - 1 - x, y) };
                    let o = (y * h + x) * 3;
                    out.data[o..o + 3].copy_from_slice(&img.data[(sy * w + sx) * 3..(sy * w + sx) * 3 + 3]);
                }
            }
            out
        }
    }
}

/// A fixed rotation by `quarter * 90` degrees counter-clockwise (RotationNet's views).
#[derive(Clone, Debug)]
pub struct Rotate90(pub u8);

impl Transform for Rotate90 {
    fn apply(&self, img: RgbImage, _rng: &mut AugRng) -> RgbImage {
        rotate90(&img, self.0)
    }
}

/// `RandomApply([RandomAffine(degrees, translate, scale, shear, bilinear, fill=0)], p)`, with PIL's
/// affine transform (inverse matrix evaluated at pixel centres, bilinear, out of bounds = fill).
#[derive(Clone, Debug)]
pub struct RandomAffine {
    degrees: f64,
    translate: (f64, f64),
    scale: (f64, f64),
    shear: f64,
    p: f64,
}

impl RandomAffine {
    pub fn new(degrees: f64, translate: (f64, f64), scale: (f64, f64), shear: f64, p: f64) -> Result<Self, AugError> {
        let err = |param, problem: String| Err(AugError { transform: "RandomAffine", param, problem });
        if !(degrees >= 0.0 && degrees.is_finite()) {
            return err("degrees", format!("= {degrees} must be >= 0"));
        }
        if !((0.0..=1.0).contains(&translate.0) && (0.0..=1.0).contains(&translate.1)) {
            return err("translate", format!("= {translate:?} must be in [0, 1]"));
        }
        if !(scale.0 > 0.0 && scale.0 <= scale.1 && scale.1.is_finite()) {
            return err("scale", format!("= {scale:?} must satisfy 0 < min <= max"));
        }
        if !(0.0..90.0).contains(&shear) {
            return err("shear", format!("= {shear} must be in [0, 90)"));
        }
        check_prob("RandomAffine", "p", p)?;
        Ok(RandomAffine { degrees, translate, scale, shear, p })
    }

    /// torchvision's `get_params`: (angle, (tx, ty), scale, shear_x).
    pub fn params(&self, width: usize, height: usize, rng: &mut AugRng) -> (f64, (f64, f64), f64, f64) {
        let angle = uniform(rng, -self.degrees, self.degrees);
        let (mdx, mdy) = (self.translate.0 * width as f64, self.translate.1 * height as f64);
        let tx = uniform(rng, -mdx, mdx).round_ties_even();
        let ty = uniform(rng, -mdy, mdy).round_ties_even();
        let scale = uniform(rng, self.scale.0, self.scale.1);
        let shear = uniform(rng, -self.shear, self.shear);
        (angle, (tx, ty), scale, shear)
    }
}

/// torchvision's `_get_inverse_affine_matrix` (shear along x only), centre at (w/2, h/2).
pub fn inverse_affine(center: (f64, f64), angle: f64, t: (f64, f64), scale: f64, shear_x: f64) -> [f64; 6] {
    let rot = angle.to_radians();
    let (sx, sy) = (shear_x.to_radians(), 0.0f64);
    let (cx, cy) = center;
    let a = (rot - sy).cos() / sy.cos();
    let b = -(rot - sy).cos() * sx.tan() / sy.cos() - rot.sin();
    let c = (rot - sy).sin() / sy.cos();
    let d = -(rot - sy).sin() * sx.tan() / sy.cos() + rot.cos();
    let mut m = [d / scale, -b / scale, 0.0, -c / scale, a / scale, 0.0];
    m[2] += m[0] * (-cx - t.0) + m[1] * (-cy - t.1);
    m[5] += m[3] * (-cx - t.0) + m[4] * (-cy - t.1);
    m[2] += cx;
    m[5] += cy;
    m
}

/// PIL's `Image.transform(size, AFFINE, m, BILINEAR, fillcolor=0)`.
pub fn affine_pil(img: &RgbImage, m: [f64; 6]) -> RgbImage {
    let (w, h) = (img.width, img.height);
    let mut out = RgbImage::zeros(w, h);
    for y in 0..h {
        for x in 0..w {
            let (xo, yo) = (x as f64 + 0.5, y as f64 + 0.5);
            let xin = m[0] * xo + m[1] * yo + m[2];
            let yin = m[3] * xo + m[4] * yo + m[5];
            if xin < 0.0 || xin >= w as f64 || yin < 0.0 || yin >= h as f64 {
                continue;
            }
            let (xi, yi) = (xin - 0.5, yin - 0.5);
            let (x0, y0) = (xi.floor() as isize, yi.floor() as isize);
            let (dx, dy) = (xi - x0 as f64, yi - y0 as f64);
            let clipx = |v: isize| v.clamp(0, w as isize - 1) as usize;
            let (xa, xb) = (clipx(x0), clipx(x0 + 1));
            let ya = y0.clamp(0, h as isize - 1) as usize;
            let yb_ok = y0 + 1 >= 0 && y0 + 1 < h as isize;
            let o = (y * w + x) * 3;
            for c in 0..3 {
                let px = |yy: usize, xx: usize| img.data[(yy * w + xx) * 3 + c] as f64;
                let v1 = px(ya, xa) + (px(ya, xb) - px(ya, xa)) * dx;
                let v2 = if yb_ok {
                    px((y0 + 1) as usize, xa) + (px((y0 + 1) as usize, xb) - px((y0 + 1) as usize, xa)) * dx
                } else {
                    v1
                };
                let v = v1 + (v2 - v1) * dy;
                out.data[o + c] = (v + 0.5).clamp(0.0, 255.0) as u8;
            }
        }
    }
    out
}

impl Transform for RandomAffine {
    fn apply(&self, img: RgbImage, rng: &mut AugRng) -> RgbImage {
        if self.p < rng.random::<f64>() {
            return img;
        }
        let (angle, t, scale, shear) = self.params(img.width, img.height, rng);
        let m = inverse_affine((img.width as f64 * 0.5, img.height as f64 * 0.5), angle, t, scale, shear);
        affine_pil(&img, m)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rotations_compose_and_identity_affine() {
        let img = RgbImage::new(3, 2, (0..18).collect());
        assert_eq!(rotate90(&rotate90(&img, 1), 3), img);
        assert_eq!(rotate90(&rotate90(&img, 1), 1), rotate90(&img, 2));
        assert_eq!(rotate90(&rotate90(&rotate90(&rotate90(&img, 1), 1), 1), 1), img);
        // CCW: the top-right pixel goes to the top-left.
        assert_eq!(rotate90(&img, 1).pixel(0, 0), img.pixel(2, 0));
        let m = inverse_affine((1.5, 1.0), 0.0, (0.0, 0.0), 1.0, 0.0);
        assert_eq!(affine_pil(&img, m), img);
    }
}
