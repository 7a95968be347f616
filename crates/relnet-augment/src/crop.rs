//! RandomResizedCrop and RandomCrop (with zero padding), as torchvision draws them.

use rand::Rng;

use crate::image::RgbImage;
use crate::resize::resize_bilinear;
use crate::{AugError, AugRng, Transform};

/// `RandomResizedCrop(size, scale, ratio)` with bilinear resampling.
#[derive(Clone, Debug)]
pub struct RandomResizedCrop {
    size: usize,
    scale: (f64, f64),
    log_ratio: (f64, f64),
    ratio: (f64, f64),
}

impl RandomResizedCrop {
    /// torchvision's defaults are scale (0.08, 1.0) and ratio (3/4, 4/3).
    pub fn new(size: usize, scale: (f64, f64), ratio: (f64, f64)) -> Result<Self, AugError> {
        let err = |param, problem: String| Err(AugError { transform: "RandomResizedCrop", param, problem });
        if size == 0 {
            return err("size", "must be at least 1".into());
        }
        if !(scale.0 > 0.0 && scale.0 <= scale.1 && scale.1 <= 1.0) {
            return err("scale", format!("= {scale:?} must satisfy 0 < min <= max <= 1"));
        }
        if !(ratio.0 > 0.0 && ratio.0 <= ratio.1 && ratio.1.is_finite()) {
            return err("ratio", format!("= {ratio:?} must satisfy 0 < min <= max"));
        }
        Ok(RandomResizedCrop { size, scale, ratio, log_ratio: (ratio.0.ln(), ratio.1.ln()) })
    }

    /// The crop box (top, left, height, width), drawn exactly as torchvision's `get_params`:
    /// up to 10 tries of area and log-uniform aspect ratio, then a centre crop fallback.
    pub fn params(&self, height: usize, width: usize, rng: &mut AugRng) -> (usize, usize, usize, usize) {
        let area = (height * width) as f64;
        for _ in 0..10 {
            let target = area * uniform(rng, self.scale.0, self.scale.1);
            let aspect = uniform(rng, self.log_ratio.0, self.log_ratio.1).exp();
            let w = (target * aspect).sqrt().round_ties_even() as usize;
            let h = (target / aspect).sqrt().round_ties_even() as usize;
            if 0 < w && w <= width && 0 < h && h <= height {
                let i = rng.random_range(0..=height - h);
                let j = rng.random_range(0..=width - w);
                return (i, j, h, w);
            }
        }
        let in_ratio = width as f64 / height as f64;
        let (w, h) = if in_ratio < self.ratio.0 {
            (width, ((width as f64) / self.ratio.0).round_ties_even() as usize)
        } else if in_ratio > self.ratio.1 {
            (((height as f64) * self.ratio.1).round_ties_even() as usize, height)
        } else {
            (width, height)
        };
        ((height - h) / 2, (width - w) / 2, h, w)
    }
}

impl Transform for RandomResizedCrop {
    fn apply(&self, img: RgbImage, rng: &mut AugRng) -> RgbImage {
        let (i, j, h, w) = self.params(img.height, img.width, rng);
        resize_bilinear(&img, (j, i, w, h), self.size, self.size)
    }
}

/// Uniform draw in [lo, hi), as `torch.empty(1).uniform_(lo, hi)`.
#[inline]
pub(crate) fn uniform(rng: &mut AugRng, lo: f64, hi: f64) -> f64 {
    lo + (hi - lo) * rng.random::<f64>()
}

/// `RandomCrop(size, padding)`: zero padding on every side, then a uniformly placed crop.
#[derive(Clone, Debug)]
pub struct RandomCrop {
    size: usize,
    padding: usize,
}

impl RandomCrop {
    pub fn new(size: usize, padding: usize) -> Result<Self, AugError> {
        if size == 0 {
            return Err(AugError { transform: "RandomCrop", param: "size", problem: "must be at least 1".into() });
        }
        Ok(RandomCrop { size, padding })
    }
}

impl Transform for RandomCrop {
    fn apply(&self, img: RgbImage, rng: &mut AugRng) -> RgbImage {
        let p = self.padding;
        let (ph, pw) = (img.height + 2 * p, img.width + 2 * p);
        // A crop larger than the padded image would need more padding: torchvision errors there;
        // relnet centres it with zero fill instead (never reached by the presets).
        let i = if ph > self.size { rng.random_range(0..=ph - self.size) as isize } else { 0 };
        let j = if pw > self.size { rng.random_range(0..=pw - self.size) as isize } else { 0 };
        let mut out = RgbImage::zeros(self.size, self.size);
        for y in 0..self.size {
            let sy = y as isize + i - p as isize;
            if sy < 0 || sy >= img.height as isize {
                continue;
            }
            for x in 0..self.size {
                let sx = x as isize + j - p as isize;
                if sx < 0 || sx >= img.width as isize {
                    continue;
                }
                let s = (sy as usize * img.width + sx as usize) * 3;
                let o = (y * self.size + x) * 3;
                out.data[o..o + 3].copy_from_slice(&img.data[s..s + 3]);
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;

    #[test]
    fn params_stay_inside_and_follow_the_scale() {
        let t = RandomResizedCrop::new(32, (0.08, 1.0), (0.75, 4.0 / 3.0)).unwrap();
        let mut rng = AugRng::seed_from_u64(3);
        for _ in 0..2000 {
            let (i, j, h, w) = t.params(32, 48, &mut rng);
            assert!(h >= 1 && w >= 1 && i + h <= 32 && j + w <= 48);
        }
        let full = RandomResizedCrop::new(8, (1.0, 1.0), (1.0, 1.0)).unwrap();
        assert_eq!(full.params(8, 8, &mut rng), (0, 0, 8, 8));
        // Fallback: an impossible aspect ratio gives the centre crop.
        let thin = RandomResizedCrop::new(8, (1.0, 1.0), (3.0, 3.0)).unwrap();
        assert_eq!(thin.params(10, 10, &mut rng), (3, 0, 3, 10));
    }

    #[test]
    fn random_crop_with_padding_shifts_and_fills_zero() {
        let img = RgbImage::new(2, 2, vec![9; 12]);
        let t = RandomCrop::new(2, 1).unwrap();
        let mut rng = AugRng::seed_from_u64(0);
        let mut seen_zero = false;
        for _ in 0..50 {
            let out = t.apply(img.clone(), &mut rng);
            assert_eq!((out.width, out.height), (2, 2));
            assert!(out.data.contains(&9));
            seen_zero |= out.data.contains(&0);
        }
        assert!(seen_zero);
        assert!(RandomCrop::new(0, 4).is_err());
        assert!(RandomResizedCrop::new(32, (0.0, 1.0), (0.75, 1.3)).is_err());
        assert!(RandomResizedCrop::new(32, (0.5, 1.2), (0.75, 1.3)).is_err());
        assert!(RandomResizedCrop::new(0, (0.5, 1.0), (0.75, 1.3)).is_err());
    }
}
