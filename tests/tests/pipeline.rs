//! The crates together: a dataset split from the registry, K augmented views per image in
//! augmentation-major order, one backbone pass over the M*K batch.

use burn::prelude::*;
use burn::tensor::TensorData;
use relnet_augment::{Preset, PresetParams, build_views};
use relnet_core::data::DataRoot;
use relnet_core::data::registry::lookup;
use relnet_models::BackboneKind;

#[test]
fn synthetic_views_through_conv4() {
    let info = lookup("synthetic").unwrap();
    let root = DataRoot::resolve(None);
    let split = info.load(info.pretrain_split, &root).unwrap();
    let (mean, std) = info.norm_stats(&root).unwrap();
    let (h, w) = (split.images.height, split.images.width);
    let pipe = Preset::Relational
        .build(&PresetParams { side: w, padding: info.crop_padding, cutout: None, mean, std })
        .unwrap();
    let (m, k) = (16, 4);
    let imgs: Vec<&[u8]> = (0..m).map(|i| split.images.image(i)).collect();
    let batch = build_views(&pipe, &imgs, w, h, k, w, 42);
    assert_eq!(batch.n, m * k);

    let device = Device::flex();
    let x = Tensor::<4>::from_data(TensorData::new(batch.data, [batch.n, 3, batch.height, batch.width]), &device);
    let backbone = BackboneKind::Conv4.init(&device).valid();
    let z = backbone.forward(x);
    assert_eq!(z.dims(), [m * k, 64]);
    let values = z.into_data().try_to_vec::<f32>().unwrap();
    assert!(values.iter().all(|v| v.is_finite()));
    // Views of one image differ from each other (independent augmentations) ...
    let row = |r: usize| &values[r * 64..(r + 1) * 64];
    assert_ne!(row(0), row(m));
    // ... and the same seed gives the same batch.
    let again = build_views(&pipe, &imgs, w, h, k, w, 42);
    let first = build_views(&pipe, &imgs, w, h, k, w, 42);
    assert_eq!(again, first);
}
