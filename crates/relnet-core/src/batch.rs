//! Turning u8 images into normalised float batches on a device.

use burn::prelude::*;
use burn::tensor::TensorData;
use relnet_augment::ViewBatch;

/// A view batch (NCHW f32) as a tensor on `device`.
pub fn to_tensor(batch: ViewBatch, device: &Device) -> Tensor<4> {
    let shape = [batch.n, batch.channels, batch.height, batch.width];
    Tensor::<4>::from_data(TensorData::new(batch.data, shape), device)
}

/// The deterministic order of an epoch: a permutation of `0..n` from (seed, epoch).
pub fn epoch_order(n: usize, seed: u64, epoch: usize) -> Vec<usize> {
    use rand::SeedableRng;
    use rand::seq::SliceRandom;
    let mut idx: Vec<usize> = (0..n).collect();
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed ^ (epoch as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15));
    idx.shuffle(&mut rng);
    idx
}

/// Splits an epoch's order into batches of `m`. The last partial batch is kept as the
/// reference does (`drop_last=False`) unless it has fewer than `min_last` images.
pub fn batches(order: &[usize], m: usize, min_last: usize) -> Vec<&[usize]> {
    order.chunks(m).filter(|c| c.len() >= min_last.min(m)).collect()
}
