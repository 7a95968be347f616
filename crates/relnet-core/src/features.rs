//! Outputs of a frozen network over a whole split, computed once (eval mode, no augmentation):
//! the features of linear probes and of DeepCluster's clustering, a supervised model's logits.

use burn::prelude::*;
use relnet_augment::{Preset, PresetParams, build_views};
use relnet_models::Backbone;

use crate::batch::to_tensor;
use crate::data::ImageSet;

/// Row-major `[N, D]` outputs of `f` on every image (normalised, no augmentation), in batches.
pub fn extract_with(
    images: &ImageSet,
    mean: [f32; 3],
    std: [f32; 3],
    batch: usize,
    device: &Device,
    f: impl Fn(Tensor<4>) -> Tensor<2>,
) -> crate::Result<(Vec<f32>, usize)> {
    let (h, w) = (images.height, images.width);
    let plain = Preset::Plain.build(&PresetParams { side: w, padding: 0, cutout: None, mean, std })?;
    let mut out = Vec::new();
    let mut dim = 0;
    for start in (0..images.len()).step_by(batch.max(1)) {
        let end = (start + batch).min(images.len());
        let refs: Vec<&[u8]> = (start..end).map(|i| images.image(i)).collect();
        let y = f(to_tensor(build_views(&plain, &refs, w, h, 1, w, 0), device));
        dim = y.dims()[1];
        out.extend(y.into_data().iter::<f32>());
    }
    Ok((out, dim))
}

/// Backbone features `[N, F]` of every image, backbone in eval mode.
pub fn extract(
    backbone: &Backbone,
    images: &ImageSet,
    mean: [f32; 3],
    std: [f32; 3],
    batch: usize,
    device: &Device,
) -> crate::Result<(Vec<f32>, usize)> {
    extract_with(images, mean, std, batch, device, |x| backbone.forward(x))
}
