//! Frozen-backbone features of a whole split, computed once (eval mode, no augmentation).

use burn::prelude::*;
use relnet_augment::{Preset, PresetParams, build_views};
use relnet_core::batch::to_tensor;
use relnet_core::data::ImageSet;
use relnet_models::Backbone;

/// Features `[N, F]` (row-major) of every image, in batches of `batch`, backbone in eval mode.
pub fn extract(backbone: &Backbone, images: &ImageSet, mean: [f32; 3], std: [f32; 3], batch: usize, device: &Device) -> Result<(Vec<f32>, usize), String> {
    let (h, w) = (images.height, images.width);
    let plain = Preset::Plain.build(&PresetParams { side: w, padding: 0, cutout: None, mean, std }).map_err(|e| e.to_string())?;
    let mut out = Vec::new();
    let mut dim = 0;
    for start in (0..images.len()).step_by(batch.max(1)) {
        let end = (start + batch).min(images.len());
        let refs: Vec<&[u8]> = (start..end).map(|i| images.image(i)).collect();
        let x = to_tensor(build_views(&plain, &refs, w, h, 1, w, 0), device);
        let f = backbone.forward(x);
        dim = f.dims()[1];
        out.extend(f.into_data().try_to_vec::<f32>().map_err(|e| format!("{e:?}"))?);
    }
    Ok((out, dim))
}
