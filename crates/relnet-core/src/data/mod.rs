//! The data layer: readers that load a dataset split into memory as compact u8 images
//! (N x H x W x C, row-major, channels last) plus labels, and the registry that finds them.
//!
//! Readers never panic on bad input: every failure is a [`DataError`] naming the file.

pub mod cifar;
pub mod download;
pub mod folder;
pub mod idx;
pub mod registry;
pub mod stl10;
pub mod synthetic;
pub mod tiny;
mod util;

pub use registry::{DataRoot, DatasetId, DatasetInfo, LoadedSplit, Normalization, Split};

use crate::error::{DataError, DataResult};

/// A split held in memory: `n` images of `height x width x channels` u8 values, channels last.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ImageSet {
    pub height: usize,
    pub width: usize,
    pub channels: usize,
    /// `n * height * width * channels` bytes, image after image, each row-major HWC.
    pub pixels: Vec<u8>,
    /// One label per image, or `None` for an unlabelled split (STL-10 `unlabeled`).
    pub labels: Option<Vec<u16>>,
}

impl ImageSet {
    pub fn new(
        height: usize,
        width: usize,
        channels: usize,
        pixels: Vec<u8>,
        labels: Option<Vec<u16>>,
    ) -> DataResult<Self> {
        let per = height * width * channels;
        if per == 0 || !pixels.len().is_multiple_of(per) {
            return Err(DataError::Invalid(format!(
                "internal: {} bytes is not a whole number of {height}x{width}x{channels} images",
                pixels.len()
            )));
        }
        if let Some(l) = &labels
            && l.len() != pixels.len() / per
        {
            return Err(DataError::Invalid(format!("internal: {} labels for {} images", l.len(), pixels.len() / per)));
        }
        Ok(ImageSet { height, width, channels, pixels, labels })
    }

    /// Number of images.
    pub fn len(&self) -> usize {
        self.pixels.len() / self.image_bytes()
    }

    pub fn is_empty(&self) -> bool {
        self.pixels.is_empty()
    }

    /// Keeps only the images at `indices`, in that order, with their labels.
    pub fn keep(&mut self, indices: &[usize]) {
        let per = self.image_bytes();
        let mut pixels = Vec::with_capacity(indices.len() * per);
        for &i in indices {
            pixels.extend_from_slice(&self.pixels[i * per..(i + 1) * per]);
        }
        self.pixels = pixels;
        self.labels = self.labels.take().map(|l| indices.iter().map(|&i| l[i]).collect());
    }

    /// Bytes per image (`height * width * channels`).
    pub fn image_bytes(&self) -> usize {
        self.height * self.width * self.channels
    }

    /// The HWC bytes of image `i`.
    pub fn image(&self, i: usize) -> &[u8] {
        let b = self.image_bytes();
        &self.pixels[i * b..(i + 1) * b]
    }

    pub fn label(&self, i: usize) -> Option<u16> {
        self.labels.as_ref().map(|l| l[i])
    }

    /// Replicates a 1-channel set to 3 identical channels (relnet's rule for grey data: every
    /// backbone takes RGB). A 3-channel set is returned unchanged.
    pub fn into_rgb(self) -> Self {
        if self.channels != 1 {
            return self;
        }
        let mut pixels = Vec::with_capacity(self.pixels.len() * 3);
        for &v in &self.pixels {
            pixels.extend_from_slice(&[v, v, v]);
        }
        ImageSet { channels: 3, pixels, ..self }
    }

    /// Number of images per class (index = label), given the number of classes.
    pub fn class_counts(&self, num_classes: usize) -> Vec<usize> {
        let mut counts = vec![0; num_classes];
        if let Some(labels) = &self.labels {
            for &l in labels {
                if (l as usize) < num_classes {
                    counts[l as usize] += 1;
                }
            }
        }
        counts
    }

    /// Per-channel mean and standard deviation of the pixels scaled to [0, 1]
    /// (the population std over all pixels of all images, as torchvision users compute it).
    pub fn channel_stats(&self) -> (Vec<f64>, Vec<f64>) {
        use rayon::prelude::*;
        let c = self.channels;
        let chunk = (self.image_bytes() * 256).max(c);
        let (sum, sq) = self
            .pixels
            .par_chunks(chunk)
            .map(|px| {
                let mut s = vec![0u64; c];
                let mut q = vec![0u64; c];
                for (i, &v) in px.iter().enumerate() {
                    s[i % c] += v as u64;
                    q[i % c] += (v as u64) * (v as u64);
                }
                (s, q)
            })
            .reduce(
                || (vec![0u64; c], vec![0u64; c]),
                |(mut a, mut b), (x, y)| {
                    for i in 0..c {
                        a[i] += x[i];
                        b[i] += y[i];
                    }
                    (a, b)
                },
            );
        let n = (self.pixels.len() / c).max(1) as f64;
        let mean: Vec<f64> = sum.iter().map(|&s| s as f64 / n / 255.0).collect();
        let std =
            sq.iter().zip(&mean).map(|(&q, &m)| ((q as f64 / n / (255.0 * 255.0)) - m * m).max(0.0).sqrt()).collect();
        (mean, std)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keep_selects_images_with_their_labels() {
        // Four 1x1 grey images whose pixel is 10 x their label.
        let mut set = ImageSet::new(1, 1, 1, vec![0, 10, 20, 30], Some(vec![0, 1, 2, 3])).unwrap();
        set.keep(&[1, 3]);
        assert_eq!(set.len(), 2);
        assert_eq!((set.image(0), set.image(1)), (&[10u8][..], &[30u8][..]));
        assert_eq!(set.labels, Some(vec![1, 3]));
    }

    #[test]
    fn stats_of_constant_and_two_level_images() {
        let set = ImageSet::new(1, 2, 3, vec![0, 255, 51, 255, 255, 51], None).unwrap();
        let (m, s) = set.channel_stats();
        assert!((m[0] - 0.5).abs() < 1e-12 && (s[0] - 0.5).abs() < 1e-12);
        assert!((m[1] - 1.0).abs() < 1e-12 && s[1].abs() < 1e-12);
        assert!((m[2] - 0.2).abs() < 1e-12 && s[2].abs() < 1e-6);
    }

    #[test]
    fn grey_is_replicated_to_rgb() {
        let set = ImageSet::new(1, 2, 1, vec![7, 9], Some(vec![1])).unwrap().into_rgb();
        assert_eq!(set.channels, 3);
        assert_eq!(set.pixels, vec![7, 7, 7, 9, 9, 9]);
        assert_eq!(set.labels, Some(vec![1]));
    }

    #[test]
    fn new_rejects_inconsistent_sizes() {
        assert!(ImageSet::new(2, 2, 3, vec![0; 11], None).is_err());
        assert!(ImageSet::new(2, 2, 3, vec![0; 24], Some(vec![0])).is_err());
    }
}
