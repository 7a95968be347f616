//! `RandomErasing(p, scale=(c, c), ratio=(1, 1), value=0)` on the normalised CHW view: the
//! reference's square cutout, applied after normalisation as torchvision does.

use rand::Rng;

use crate::crop::uniform;
use crate::{AugError, AugRng, check_prob};

#[derive(Clone, Debug)]
pub struct RandomErasing {
    p: f64,
    scale: (f64, f64),
    log_ratio: (f64, f64),
    value: f32,
}

impl RandomErasing {
    pub fn new(p: f64, scale: (f64, f64), ratio: (f64, f64), value: f32) -> Result<Self, AugError> {
        check_prob("RandomErasing", "p", p)?;
        if !(scale.0 > 0.0 && scale.0 <= scale.1 && scale.1 <= 1.0) {
            return Err(AugError {
                transform: "RandomErasing",
                param: "scale",
                problem: format!("= {scale:?} must satisfy 0 < min <= max <= 1"),
            });
        }
        if !(ratio.0 > 0.0 && ratio.0 <= ratio.1 && ratio.1.is_finite()) {
            return Err(AugError {
                transform: "RandomErasing",
                param: "ratio",
                problem: format!("= {ratio:?} must satisfy 0 < min <= max"),
            });
        }
        Ok(RandomErasing { p, scale, log_ratio: (ratio.0.ln(), ratio.1.ln()), value })
    }

    /// The square cutout of the reference: area fraction `c`, ratio 1, value 0, probability 0.5.
    pub fn cutout(c: f64) -> Result<Self, AugError> {
        Self::new(0.5, (c, c), (1.0, 1.0), 0.0)
    }

    /// Erases a box of the `channels x height x width` view in place (or nothing).
    pub fn apply(&self, view: &mut [f32], channels: usize, height: usize, width: usize, rng: &mut AugRng) {
        if rng.random::<f64>() >= self.p {
            return;
        }
        let area = (height * width) as f64;
        for _ in 0..10 {
            let erase = area * uniform(rng, self.scale.0, self.scale.1);
            let aspect = uniform(rng, self.log_ratio.0, self.log_ratio.1).exp();
            let h = (erase * aspect).sqrt().round_ties_even() as usize;
            let w = (erase / aspect).sqrt().round_ties_even() as usize;
            if !(h < height && w < width) {
                continue;
            }
            let i = rng.random_range(0..=height - h);
            let j = rng.random_range(0..=width - w);
            for c in 0..channels {
                for y in i..i + h {
                    let row = (c * height + y) * width;
                    view[row + j..row + j + w].fill(self.value);
                }
            }
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;

    #[test]
    fn cutout_erases_a_square_of_the_given_area() {
        let e = RandomErasing::new(1.0, (0.25, 0.25), (1.0, 1.0), 0.0).unwrap();
        let mut rng = AugRng::seed_from_u64(1);
        let mut v = vec![1.0f32; 3 * 32 * 32];
        e.apply(&mut v, 3, 32, 32, &mut rng);
        assert_eq!(v.iter().filter(|&&x| x == 0.0).count(), 3 * 16 * 16);
        assert!(RandomErasing::cutout(0.0).is_err());
        assert!(RandomErasing::new(1.5, (0.1, 0.1), (1.0, 1.0), 0.0).is_err());
    }
}
