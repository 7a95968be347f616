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
    for kind in BackboneKind::BUILTIN {
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
    for kind in [BackboneKind::Resnet32, BackboneKind::Resnet56] {
        let f = kind.init(&d).forward(Tensor::<4>::zeros([2, 3, 32, 32], &d));
        assert_eq!(f.dims(), [2, 64], "{kind}");
    }
    let r34 = BackboneKind::Resnet34.init(&d);
    for side in [32, 64, 96] {
        let (f, first) = r34.forward_with_first(Tensor::<4>::zeros([1, 3, side, side], &d));
        assert_eq!(f.dims(), [1, 512]);
        assert_eq!(first.dims(), [1, 64, side / 2, side / 2]);
    }
}

#[test]
fn reference_initialisation() {
    let d = device();
    d.seed(1);
    let b = BackboneKind::Resnet8.init(&d);
    let Backbone::ResNetCifar(r) = &b else { panic!() };
    // He fan-out normal: std = sqrt(2 / (k * k * out)). layer3's second conv: 3*3*64 = 576.
    let w = r.layer3[0].conv2.weight.val();
    let n = w.dims().iter().product::<usize>() as f32;
    let mean = w.clone().mean().into_scalar::<f32>();
    let std = ((w - mean).powi_scalar(2).sum().into_scalar::<f32>() / n).sqrt();
    let want = (2.0f32 / 576.0).sqrt();
    assert!((std - want).abs() < 0.05 * want, "std {std} vs {want}");
    assert!(mean.abs() < 0.1 * want);
    // BatchNorm weight 1, bias 0; convolutions have no bias.
    assert_eq!(r.bn1.gamma.val().min().into_scalar::<f32>(), 1.0);
    assert_eq!(r.bn1.beta.val().abs().max().into_scalar::<f32>(), 0.0);
    assert!(r.conv1.bias.is_none() && r.layer1[0].conv1.bias.is_none());
}

#[test]
fn heads_shapes() {
    let d = device();
    let x = Tensor::<2>::zeros([6, 64], &d);
    assert_eq!(MlpHead::relation(64, &d).forward(x.clone()).dims(), [6, 1]);
    assert_eq!(MlpHead::simclr(64, &d).forward(x.clone()).dims(), [6, 64]);
    let dc = MlpHead::deepcluster(64, 100, &d);
    assert_eq!(dc.forward(x.clone()).dims(), [6, 100]);
    assert_eq!(linear_head(64, 4, &d).forward(x.clone()).dims(), [6, 4]);
    assert_eq!(PriorDiscriminator::new(64, &d).forward(x.clone()).dims(), [6, 1]);
    let map = Tensor::<4>::zeros([6, 8, 32, 32], &d);
    assert_eq!(LocalDiscriminator::new(8, 64, &d).forward(x, map).dims(), [6, 1, 32, 32]);
}

/// The reference's formulation, written out: `y` tiled over the map, concatenated on channels,
/// three 1x1 convolutions. The split discriminator must compute the same scores.
#[test]
fn local_discriminator_equals_tiled_concat_and_1x1_convs() {
    use burn::tensor::Distribution;
    use burn::tensor::activation::relu;
    use burn::tensor::module::conv2d;
    use burn::tensor::ops::ConvOptions;
    let d = device();
    d.seed(7);
    let (n, c, f, h, w) = (3, 8, 64, 5, 4);
    let disc = LocalDiscriminator::new(c, f, &d);
    let y = Tensor::<2>::random([n, f], Distribution::Normal(0.0, 1.0), &d);
    let map = Tensor::<4>::random([n, c, h, w], Distribution::Normal(0.0, 1.0), &d);

    // Linear weights are [in, out]; a 1x1 convolution's are [out, in, 1, 1].
    let as_conv = |weight: Tensor<2>| {
        let [i, o] = weight.dims();
        weight.transpose().reshape([o, i, 1, 1])
    };
    let opts = || ConvOptions::new([1, 1], [0, 0], [1, 1], 1);
    let w0 = Tensor::cat(vec![disc.map_in.weight.val(), disc.global_in.weight.val()], 0);
    let tiled = y.clone().reshape([n, f, 1, 1]).expand([n, f, h, w]);
    let x = Tensor::cat(vec![map.clone(), tiled], 1);
    let x = relu(conv2d(x, as_conv(w0), disc.global_in.bias.as_ref().map(|b| b.val()), opts()));
    let x = relu(conv2d(x, as_conv(disc.hidden.weight.val()), disc.hidden.bias.as_ref().map(|b| b.val()), opts()));
    let want = conv2d(x, as_conv(disc.out.weight.val()), disc.out.bias.as_ref().map(|b| b.val()), opts());

    let got = disc.forward(y, map);
    assert_eq!(got.dims(), [n, 1, h, w]);
    let diff = (got - want.clone()).abs().max().into_scalar::<f32>();
    let scale = want.abs().max().into_scalar::<f32>();
    assert!(scale > 1e-3 && diff < 1e-5 * scale.max(1.0), "max diff {diff} (scale {scale})");
}

/// The split first layer is initialised like the reference's single 1x1 convolution over C+F
/// channels: uniform in +-1/sqrt(C+F), weights and bias alike.
#[test]
fn local_discriminator_first_layer_init_uses_the_joint_fan_in() {
    let d = device();
    let disc = LocalDiscriminator::new(8, 64, &d);
    let bound = 1.0 / 72f32.sqrt();
    for t in [
        disc.map_in.weight.val().flatten::<1>(0, 1),
        disc.global_in.weight.val().flatten::<1>(0, 1),
        disc.global_in.bias.clone().unwrap().val(),
    ] {
        let max = t.abs().max().into_scalar::<f32>();
        assert!(max <= bound && max > 0.8 * bound, "max |w| {max}, bound {bound}");
    }
    assert!(disc.map_in.bias.is_none());
}
