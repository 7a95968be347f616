//! Turning u8 images into normalised float batches on a device.

use std::sync::Arc;

use burn::prelude::*;
use burn::tensor::TensorData;
use relnet_augment::{Pipeline, Prefetcher, ViewBatch, build_views};

use crate::data::ImageSet;
use crate::streams::{Purpose, stream};

/// A view batch (NCHW f32) as a tensor on `device`.
pub fn to_tensor(batch: ViewBatch, device: &Device) -> Tensor<4> {
    let shape = [batch.n, batch.channels, batch.height, batch.width];
    Tensor::<4>::from_data(TensorData::new(batch.data, shape), device)
}

/// The deterministic order of an epoch: a permutation of `0..n` from (seed, epoch).
pub fn epoch_order(n: usize, seed: u64, epoch: usize) -> Vec<usize> {
    shuffled(n, stream(seed, Purpose::EpochOrder, &[epoch as u64]))
}

/// A permutation of `0..n` drawn with the stream seed `stream_seed`.
pub fn shuffled(n: usize, stream_seed: u64) -> Vec<usize> {
    use rand::SeedableRng;
    use rand::seq::SliceRandom;
    let mut idx: Vec<usize> = (0..n).collect();
    idx.shuffle(&mut rand_chacha::ChaCha8Rng::seed_from_u64(stream_seed));
    idx
}

/// Splits an epoch's order into batches of `m`. The last partial batch is kept as the
/// reference does (`drop_last=False`) unless it has fewer than `min_last` images.
pub fn batches(order: &[usize], m: usize, min_last: usize) -> Vec<&[usize]> {
    order.chunks(m).filter(|c| c.len() >= min_last.min(m)).collect()
}

/// The seed of the augmentation draws of batch `b` in `epoch`: a resumed run redraws the same
/// views, and no two (seed, epoch, batch) share them (see [`crate::streams`]).
pub fn view_seed(seed: u64, epoch: usize, b: usize) -> u64 {
    stream(seed, Purpose::Views, &[epoch as u64, b as u64])
}

/// The `k` views of the images at `indices` (in `k` blocks), drawn with `seed`.
pub fn batch_views(images: &ImageSet, pipeline: &Pipeline, indices: &[usize], k: usize, seed: u64) -> ViewBatch {
    let refs: Vec<&[u8]> = indices.iter().map(|&i| images.image(i)).collect();
    build_views(pipeline, &refs, images.width, images.height, k, images.width, seed)
}

/// The views (K per image, in `k` blocks) of the planned batches of `epoch`, from batch `first`
/// on, built on a prefetch thread two batches ahead of the model. Yields `(indices, views)`.
pub fn view_feed(
    images: Arc<ImageSet>,
    pipeline: Arc<Pipeline>,
    plan: Vec<Vec<usize>>,
    first: usize,
    k: usize,
    epoch: usize,
    seed: u64,
) -> Prefetcher<(Vec<usize>, ViewBatch)> {
    let mut feed = plan.into_iter().enumerate().skip(first);
    Prefetcher::new(2, move || {
        let (b, idx) = feed.next()?;
        let views = batch_views(&images, &pipeline, &idx, k, view_seed(seed, epoch, b));
        Some((idx, views))
    })
}
