//! `toy-cnn`: a three-block convolutional network registered from outside relnet as a list of
//! relnet's layers. 32-d features, 6,088 trainable parameters.

use burn::prelude::*;
use relnet_models::backbone::{BackboneEntry, BackboneSpec};
use relnet_models::plan::Layer;

/// What relnet asks about `toy-cnn`; the conformance suite checks each number against the network.
pub const SPEC: BackboneSpec = BackboneSpec {
    name: "toy-cnn",
    features: 32,
    // The first block's map: conv 3 -> 8, BN, ReLU at full resolution.
    first_channels: 8,
    // Two 2x2 poolings leave one pixel of a 4x4 image.
    min_side: 4,
    // Convolutions 3*8*9 + 8*16*9 + 16*32*9 = 5,976; batch-norm scales and shifts 2*(8+16+32) = 112.
    reference_params: 6_088,
    check_side: 16,
    deep: false,
};

fn layers(device: &Device) -> Vec<Layer> {
    vec![
        Layer::conv(3, 8, 3, 1, device),
        Layer::bn_relu(8, device),
        Layer::max_pool(2),
        Layer::conv(8, 16, 3, 1, device),
        Layer::bn_relu(16, device),
        Layer::avg_pool(2),
        Layer::conv(16, 32, 3, 1, device),
        Layer::bn_relu(32, device),
    ]
}

/// The registry entry: the spec, the layers and which layer's output is the first block's map.
pub fn entry() -> BackboneEntry {
    BackboneEntry { spec: SPEC, layers, first_map: 1 }
}
