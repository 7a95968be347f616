//! `stripes`: four classes of striped images generated in memory, a dataset defined outside relnet.

use relnet_core::DataResult;
use relnet_core::data::ImageSet;
use relnet_core::data::registry::{DataRoot, DatasetInfo, DatasetSource, Split};

/// The class names, one per stripe direction.
pub const CLASSES: [&str; 4] = ["horizontal", "vertical", "diagonal", "anti-diagonal"];

/// Sizes of the generated splits.
#[derive(Clone, Copy, Debug)]
pub struct Stripes {
    pub train: usize,
    pub test: usize,
    pub side: usize,
}

impl Default for Stripes {
    fn default() -> Self {
        Stripes { train: 512, test: 256, side: 32 }
    }
}

/// A small deterministic generator (SplitMix64), so the data is the same everywhere.
struct Mix(u64);

impl Mix {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

impl Stripes {
    /// `n` images (class `i % 4`), stripes of a random period, phase and pair of colours, with noise.
    pub fn generate(&self, n: usize, seed: u64) -> (Vec<u8>, Vec<u16>) {
        let s = self.side;
        let mut rng = Mix(seed);
        let mut pixels = Vec::with_capacity(n * s * s * 3);
        let mut labels = Vec::with_capacity(n);
        for i in 0..n {
            let class = i % CLASSES.len();
            let period = 4 + rng.below(5) as usize;
            let phase = rng.below(period as u64) as usize;
            let fg: Vec<u8> = (0..3).map(|_| 128 + rng.below(128) as u8).collect();
            let bg: Vec<u8> = (0..3).map(|_| rng.below(100) as u8).collect();
            for y in 0..s {
                for x in 0..s {
                    let t = match class {
                        0 => y,
                        1 => x,
                        2 => x + y,
                        _ => x + s - y,
                    };
                    let on = (t + phase) % period < period / 2;
                    for c in 0..3 {
                        let base = if on { fg[c] } else { bg[c] } as i32;
                        let noise = rng.below(41) as i32 - 20;
                        pixels.push((base + noise).clamp(0, 255) as u8);
                    }
                }
            }
            labels.push(class as u16);
        }
        (pixels, labels)
    }
}

impl DatasetSource for Stripes {
    fn info(&self) -> DatasetInfo {
        DatasetInfo {
            small: true,
            ..DatasetInfo::new(
                "stripes",
                CLASSES.len(),
                self.side,
                "stripes: generated in memory (relnet-toy), nothing to obtain.",
            )
        }
    }

    fn load(&self, split: Split, _root: &DataRoot) -> DataResult<(ImageSet, Vec<String>)> {
        let (n, seed) = if split == Split::Train { (self.train, 1) } else { (self.test, 2) };
        let (pixels, labels) = self.generate(n, seed);
        let set = ImageSet::new(self.side, self.side, 3, pixels, Some(labels))?;
        Ok((set, CLASSES.iter().map(|c| c.to_string()).collect()))
    }
}
