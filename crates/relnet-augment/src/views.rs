//! K-view batches and a prefetcher that builds them on other threads while the model trains.

use std::sync::mpsc::{Receiver, SyncSender, sync_channel};
use std::thread::JoinHandle;

use rand::SeedableRng;
use rayon::prelude::*;

use crate::AugRng;
use crate::image::RgbImage;
use crate::pipeline::Pipeline;

/// A batch of normalised views, `n x channels x height x width` f32 (NCHW, as burn's conv takes).
#[derive(Clone, Debug, PartialEq)]
pub struct ViewBatch {
    pub data: Vec<f32>,
    pub n: usize,
    pub channels: usize,
    pub height: usize,
    pub width: usize,
}

/// The RNG of view `k` of image `m` in the batch seeded `seed`: independent of thread count.
pub fn view_rng(seed: u64, k: usize, m: usize) -> AugRng {
    let mut s = seed ^ 0x9E37_79B9_7F4A_7C15;
    for v in [k as u64, m as u64] {
        s = (s ^ v).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        s ^= s >> 31;
    }
    AugRng::seed_from_u64(s)
}

/// Builds the `M*K` batch of views of `images` (each `width x height` RGB u8, HWC) in
/// augmentation-major order: rows `k*M .. (k+1)*M - 1` hold view `k` of images `0 .. M-1`.
/// Every view is drawn independently with [`view_rng`]`(seed, k, m)`. `out_side` is the
/// pipeline's output side (the crop size, or the input size for size-preserving pipelines).
pub fn build_views(
    pipeline: &Pipeline,
    images: &[&[u8]],
    width: usize,
    height: usize,
    k: usize,
    out_side: usize,
    seed: u64,
) -> ViewBatch {
    let m = images.len();
    let per = 3 * out_side * out_side;
    let mut data = vec![0f32; m * k * per];
    data.par_chunks_mut(per).enumerate().for_each(|(row, out)| {
        let (kk, mm) = (row / m, row % m);
        let mut rng = view_rng(seed, kk, mm);
        let img = RgbImage::from_slice(width, height, images[mm]);
        let (h, w) = pipeline.apply_into(img, &mut rng, out);
        debug_assert_eq!((h, w), (out_side, out_side));
    });
    ViewBatch { data, n: m * k, channels: 3, height: out_side, width: out_side }
}

/// Runs a producer on a background thread, `depth` items ahead of the consumer.
///
/// The producer typically calls [`build_views`] (which spreads each batch over rayon's pool);
/// the training loop takes items with `next()`, so augmentation overlaps with compute.
/// Dropping the prefetcher stops the producer after its current item.
pub struct Prefetcher<T: Send + 'static> {
    rx: Option<Receiver<T>>,
    handle: Option<JoinHandle<()>>,
}

impl<T: Send + 'static> Prefetcher<T> {
    pub fn new(depth: usize, mut produce: impl FnMut() -> Option<T> + Send + 'static) -> Self {
        let (tx, rx): (SyncSender<T>, Receiver<T>) = sync_channel(depth.max(1));
        let handle = std::thread::Builder::new()
            .name("relnet-augment".into())
            .spawn(move || {
                while let Some(item) = produce() {
                    if tx.send(item).is_err() {
                        break;
                    }
                }
            })
            .expect("spawn augmentation thread");
        Prefetcher { rx: Some(rx), handle: Some(handle) }
    }
}

impl<T: Send + 'static> Iterator for Prefetcher<T> {
    type Item = T;
    fn next(&mut self) -> Option<T> {
        self.rx.as_ref()?.recv().ok()
    }
}

impl<T: Send + 'static> Drop for Prefetcher<T> {
    fn drop(&mut self) {
        drop(self.rx.take());
        if let Some(h) = self.handle.take() {
            let _ = h.join();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pipeline::{Preset, PresetParams};

    fn params() -> PresetParams {
        PresetParams { side: 8, padding: 2, cutout: None, mean: [0.5; 3], std: [0.25; 3] }
    }

    #[test]
    fn augmentation_major_order_and_determinism() {
        let plain = Preset::Plain.build(&params()).unwrap();
        let imgs: Vec<Vec<u8>> = (0..3).map(|i| vec![i as u8 * 100; 8 * 8 * 3]).collect();
        let refs: Vec<&[u8]> = imgs.iter().map(|v| v.as_slice()).collect();
        let b = build_views(&plain, &refs, 8, 8, 2, 8, 7);
        assert_eq!((b.n, b.channels, b.height, b.width), (6, 3, 8, 8));
        // Row k*M + m holds image m: first value of each row = (m*100/255 - 0.5)/0.25.
        for row in 0..6 {
            let m = row % 3;
            let want = (m as f32 * 100.0 / 255.0 - 0.5) / 0.25;
            assert!((b.data[row * 192] - want).abs() < 1e-5);
        }
        let rel = Preset::Relational.build(&params()).unwrap();
        let a1 = build_views(&rel, &refs, 8, 8, 4, 8, 11);
        let a2 = build_views(&rel, &refs, 8, 8, 4, 8, 11);
        assert_eq!(a1, a2);
        assert_ne!(a1, build_views(&rel, &refs, 8, 8, 4, 8, 12));
    }

    #[test]
    fn prefetcher_yields_in_order_and_stops() {
        let mut n = 0;
        let p = Prefetcher::new(2, move || {
            n += 1;
            (n <= 5).then_some(n)
        });
        assert_eq!(p.collect::<Vec<_>>(), vec![1, 2, 3, 4, 5]);
        // Dropped early: the producer thread ends.
        let mut it = Prefetcher::new(1, || Some(0u8));
        assert_eq!(it.next(), Some(0));
        drop(it);
    }
}
