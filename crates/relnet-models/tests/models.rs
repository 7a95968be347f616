//! Shapes, parameter counts against the reference, heads.

use burn::prelude::*;
use relnet_models::params::trainable_params;
use relnet_models::*;

fn device() -> Device {
    Device::flex()
}

#[test]
fn parameter_counts_equal_the_reference() {
    let d = device();
    for kind in BackboneKind::ALL {
        let b = kind.init(&d);
        assert_eq!(trainable_params(&b), kind.reference_params(), "{kind}");
    }
    // Relation head for F = 64 with concatenation: 33,793 (reference §1.6), F = 512: 263,169.
    assert_eq!(trainable_params(&MlpHead::relation(128, &d)), 33_793);
    assert_eq!(trainable_params(&MlpHead::relation(1024, &d)), 263_169);
}

#[test]
fn shapes_for_32_64_96_inputs() {
    let d = device();
    for kind in [BackboneKind::Conv4, BackboneKind::Resnet8] {
        let b = kind.init(&d);
        for side in [32, 64, 96] {
            let x = Tensor::<4>::zeros([2, 3, side, side], &d);
            let (f, first) = b.forward_with_first(x);
            assert_eq!(f.dims(), [2, kind.features()], "{kind} {side}");
            let c = if kind == BackboneKind::Conv4 { 8 } else { 16 };
            assert_eq!(first.dims(), [2, c, side, side], "{kind} {side}");
        }
    }
    let r34 = BackboneKind::Resnet34.init(&d);
    let (f, first) = r34.forward_with_first(Tensor::<4>::zeros([1, 3, 64, 64], &d));
    assert_eq!(f.dims(), [1, 512]);
    assert_eq!(first.dims(), [1, 64, 32, 32]);
}
