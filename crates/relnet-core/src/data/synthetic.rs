//! `synthetic`: the embedded default dataset, generated procedurally from a seed (no download).
//!
//! Ten classes of shapes: disk, ring, square, frame (hollow square), triangle, plus, cross (X),
//! horizontal stripes, vertical stripes, four dots. Each image is a jittered grid of copies of
//! its class's shape (2 to 7 copies across, so that any crop still shows the shape) and draws
//! independently:
//! * a background and a foreground grey level at least 100 levels apart, each with a random tint
//!   of +-20 per channel;
//! * a linear background gradient of random direction and strength (up to +-40 levels) and
//!   per-pixel noise (+-12 levels);
//! * the grid's cell size (38-55% of the side), the shape's size in its cell (half-size 36-46%
//!   of the cell), the grid's offset, and a rotation of at most +-17 degrees (small enough that
//!   plus and cross, or the two stripe directions, stay distinct classes);
//! * anti-aliasing by 4 sub-samples per pixel.
//!
//! Brightness, contrast, tint, scale, offset and background carry no class information: only
//! shape does. A randomly initialised backbone's pooled features mostly follow brightness and
//! contrast; relational reasoning, relating crops of one image under colour jitter, has to learn
//! the shape (3 epochs lift the linear probe far above random weights; figures in docs/results.md).
//! Several copies of the shape and grey levels with a small tint, rather than one shape in fully
//! random colours, keep it learnable in a minute: with one shape a crop can lose it, and with
//! random colours colour alone identifies an image.
//!
//! Labels are balanced (`label = index % 10`) and each image is drawn from its own RNG stream
//! (seeded by seed, split and index), so a set is identical whatever the thread count.

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use rayon::prelude::*;

use super::ImageSet;

pub const CLASSES: [&str; 10] =
    ["disk", "ring", "square", "frame", "triangle", "plus", "cross", "hstripes", "vstripes", "dots"];

/// Generator settings. The registry's `synthetic` dataset uses [`SyntheticSpec::default`].
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct SyntheticSpec {
    pub seed: u64,
    pub train: usize,
    pub test: usize,
    pub side: usize,
}

impl Default for SyntheticSpec {
    fn default() -> Self {
        SyntheticSpec { seed: 0x5e1f, train: 5000, test: 1000, side: 32 }
    }
}

/// Generates the train (`train = true`) or test split.
pub fn generate(spec: &SyntheticSpec, train: bool) -> ImageSet {
    let n = if train { spec.train } else { spec.test };
    let side = spec.side.max(1);
    let per = side * side * 3;
    let split_tag: u64 = if train { 1 } else { 2 };
    let mut pixels = vec![0u8; n * per];
    pixels.par_chunks_mut(per).enumerate().for_each(|(i, dst)| {
        let stream = spec.seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ (split_tag << 56) ^ i as u64;
        let mut rng = ChaCha8Rng::seed_from_u64(stream);
        render(&mut rng, i % CLASSES.len(), side, dst);
    });
    let labels = (0..n).map(|i| (i % CLASSES.len()) as u16).collect();
    ImageSet::new(side, side, 3, pixels, Some(labels)).expect("consistent sizes")
}

fn render(rng: &mut ChaCha8Rng, class: usize, side: usize, dst: &mut [u8]) {
    let s = side as f32;
    // Grey levels at least 100 apart, each with a small random tint (+-20 per channel).
    let back_level = rng.random_range(0.0..255.0f32);
    let mut fore_level = back_level;
    while (fore_level - back_level).abs() < 100.0 {
        fore_level = rng.random_range(0.0..255.0f32);
    }
    let bg: [f32; 3] = std::array::from_fn(|_| back_level + rng.random_range(-20.0..20.0f32));
    let fg: [f32; 3] = std::array::from_fn(|_| fore_level + rng.random_range(-20.0..20.0f32));
    let grad_angle = rng.random_range(0.0..std::f32::consts::TAU);
    let grad_amp = rng.random_range(0.0..40.0f32);
    let (gx, gy) = (grad_angle.cos() * grad_amp / s, grad_angle.sin() * grad_amp / s);
    // A jittered grid of copies of the class shape: every crop of the image still shows the
    // shape, at a per-image cell size, offset and rotation.
    let cell = rng.random_range(0.38..0.55f32) * s;
    let half = cell * rng.random_range(0.36..0.46f32);
    let (ox, oy) = (rng.random_range(0.0..cell), rng.random_range(0.0..cell));
    let theta = rng.random_range(-0.3..0.3f32);
    let (sin, cos) = theta.sin_cos();
    const SUB: [(f32, f32); 4] = [(0.25, 0.25), (0.75, 0.25), (0.25, 0.75), (0.75, 0.75)];
    for y in 0..side {
        for x in 0..side {
            let mut cover = 0.0;
            for (sx, sy) in SUB {
                let (px, py) = (x as f32 + sx - ox, y as f32 + sy - oy);
                let (dx, dy) = (px - ((px / cell).floor() + 0.5) * cell, py - ((py / cell).floor() + 0.5) * cell);
                let u = (cos * dx + sin * dy) / half;
                let v = (-sin * dx + cos * dy) / half;
                if inside(class, u, v) {
                    cover += 0.25;
                }
            }
            let shade = gx * (x as f32 - s / 2.0) + gy * (y as f32 - s / 2.0);
            let noise = rng.random_range(-12.0..12.0f32);
            let o = (y * side + x) * 3;
            for c in 0..3 {
                let back = bg[c] + shade + noise;
                dst[o + c] = (back * (1.0 - cover) + fg[c] * cover).round().clamp(0.0, 255.0) as u8;
            }
        }
    }
}

/// Whether the point (u, v) (shape units, v pointing down) lies inside shape `class`.
fn inside(class: usize, u: f32, v: f32) -> bool {
    let (au, av) = (u.abs(), v.abs());
    let r2 = u * u + v * v;
    let bars = |t: f32, other: f32| other.abs() <= 0.9 && t.abs() <= 0.9 && (t + 0.9).rem_euclid(0.6) < 0.3;
    match class {
        0 => r2 <= 1.0,
        1 => (0.3..=1.0).contains(&r2),
        2 => au <= 0.8 && av <= 0.8,
        3 => au <= 0.85 && av <= 0.85 && !(au <= 0.45 && av <= 0.45),
        4 => (-0.9..=0.8).contains(&v) && au <= 0.95 * (v + 0.9) / 1.7,
        5 => (au <= 0.25 && av <= 0.95) || (av <= 0.25 && au <= 0.95),
        6 => {
            let (p, q) = (((u + v) / std::f32::consts::SQRT_2).abs(), ((u - v) / std::f32::consts::SQRT_2).abs());
            (p <= 0.22 && q <= 1.0) || (q <= 0.22 && p <= 1.0)
        }
        7 => bars(v, u),
        8 => bars(u, v),
        _ => [(-0.5, -0.5), (0.5, -0.5), (-0.5, 0.5), (0.5, 0.5)]
            .iter()
            .any(|(a, b)| (u - a).powi(2) + (v - b).powi(2) <= 0.35 * 0.35),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn deterministic_balanced_and_seed_dependent() {
        let spec = SyntheticSpec { train: 40, test: 20, ..Default::default() };
        let a = generate(&spec, true);
        let b = generate(&spec, true);
        assert_eq!(a, b);
        assert_eq!((a.len(), a.height, a.width, a.channels), (40, 32, 32, 3));
        assert_eq!(a.class_counts(10), vec![4; 10]);
        let test = generate(&spec, false);
        assert_ne!(test.image(0), a.image(0));
        let other = generate(&SyntheticSpec { seed: 1, ..spec }, true);
        assert_ne!(other.pixels, a.pixels);
    }

    #[test]
    fn every_shape_is_drawn_with_foreground_pixels() {
        // Over each class's images the shape covers a plausible share of the image: non-empty
        // and never the whole frame.
        for class in 0..CLASSES.len() {
            let mut covered = 0;
            let n = 2000;
            for k in 0..n {
                let u = (k % 50) as f32 / 25.0 - 1.0;
                let v = (k / 50) as f32 / 20.0 - 1.0;
                covered += inside(class, u, v) as usize;
            }
            assert!(covered > n / 10 && covered < n * 9 / 10, "class {class}: {covered}/{n}");
        }
    }

    #[test]
    fn shapes_differ_from_each_other() {
        let grid: Vec<Vec<bool>> = (0..CLASSES.len())
            .map(|c| (0..1600).map(|k| inside(c, (k % 40) as f32 / 20.0 - 1.0, (k / 40) as f32 / 20.0 - 1.0)).collect())
            .collect();
        for a in 0..grid.len() {
            for b in a + 1..grid.len() {
                let diff = grid[a].iter().zip(&grid[b]).filter(|(x, y)| x != y).count();
                assert!(diff > 100, "classes {a} and {b} differ on only {diff} points");
            }
        }
    }
}
