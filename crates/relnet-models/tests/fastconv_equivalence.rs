//! The backbones with relnet's convolution (`fastconv`) against the same backbones with burn's:
//! forward output, the input's gradient and every parameter's gradient, within 1e-4 relative.

use burn::module::{Module, ModuleVisitor, Param};
use burn::prelude::*;
use burn::tensor::Distribution;
use burn::tensor::Gradients;
use relnet_models::BackboneKind;
use relnet_models::fastconv::with_burn_conv;

struct Grads<'a> {
    grads: &'a Gradients,
    out: Vec<(String, Vec<f32>)>,
    n: usize,
}

impl ModuleVisitor for Grads<'_> {
    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<D>>) {
        self.n += 1;
        if let Some(g) = param.val().grad(self.grads) {
            self.out.push((format!("parameter {} {:?}", self.n, g.dims()), g.to_data().iter::<f32>().collect()));
        }
    }
}

fn values(t: Tensor<4>) -> Vec<f32> {
    t.to_data().iter::<f32>().collect()
}

/// Output, input gradient and parameter gradients of one forward + backward of `model`.
fn pass(model: &relnet_models::Backbone, x: &Tensor<4>, t: &Tensor<2>) -> Vec<(String, Vec<f32>)> {
    let x = x.clone().require_grad();
    let y = model.forward(x.clone());
    let grads = (y.clone() * t.clone()).sum().backward();
    let mut v = Grads { grads: &grads, out: Vec::new(), n: 0 };
    model.visit(&mut v);
    let mut all = vec![("output".to_string(), y.to_data().iter::<f32>().collect()), ("input gradient".to_string(), values(x.grad(&grads).expect("input gradient")))];
    all.extend(v.out);
    all
}

fn assert_close(a: &[(String, Vec<f32>)], b: &[(String, Vec<f32>)], what: &str) {
    assert_eq!(a.len(), b.len(), "{what}: as many gradients");
    for ((name, p), (_, q)) in a.iter().zip(b) {
        let scale = q.iter().fold(0f32, |m, v| m.max(v.abs())).max(1e-12);
        let err = p.iter().zip(q).fold(0f32, |m, (u, v)| m.max((u - v).abs()));
        assert!(err <= 1e-4 * scale, "{what} {name}: max error {err} against max magnitude {scale}");
    }
}

#[test]
fn every_backbone_matches_burns_convolution_forward_and_backward() {
    let device = Device::flex().autodiff();
    for (kind, side) in [(BackboneKind::Conv4, 32), (BackboneKind::Resnet8, 32), (BackboneKind::Resnet32, 32), (BackboneKind::Resnet34, 64)] {
        device.seed(7);
        let model = kind.init(&device);
        let x = Tensor::<4>::random([3, 3, side, side], Distribution::Normal(0.0, 1.0), &device);
        let t = Tensor::<2>::random([3, kind.features()], Distribution::Normal(0.0, 1.0), &device);
        let fast = pass(&model, &x, &t);
        let reference = with_burn_conv(|| pass(&model, &x, &t));
        assert!(fast.len() > 2, "{kind:?}: parameter gradients collected");
        assert_close(&fast, &reference, kind.name());
    }
}

#[test]
fn the_fast_path_runs_and_other_geometries_fall_back() {
    // The fast path and burn's conv differ in their float rounding: equal within tolerance but
    // not bit for bit, which shows the fast path is the one that ran.
    let device = Device::flex();
    device.seed(3);
    let conv = burn::nn::conv::Conv2dConfig::new([4, 5], [3, 3]).with_padding(burn::nn::PaddingConfig2d::Explicit(1, 1, 1, 1)).init(&device);
    let x = Tensor::<4>::random([2, 4, 9, 9], Distribution::Normal(0.0, 1.0), &device);
    let fast = values(relnet_models::fastconv::conv2d(&conv, x.clone()));
    let burn = values(conv.forward(x.clone()));
    assert_ne!(fast, burn, "the fast path ran");
    let err = fast.iter().zip(&burn).fold(0f32, |m, (a, b)| m.max((a - b).abs()));
    assert!(err < 1e-4, "{err}");
    // `Same` padding and groups other than 1 go to burn's conv: bit for bit the same.
    for conv in [
        burn::nn::conv::Conv2dConfig::new([4, 5], [3, 3]).with_padding(burn::nn::PaddingConfig2d::Same).init(&device),
        burn::nn::conv::Conv2dConfig::new([4, 4], [3, 3]).with_groups(2).init(&device),
    ] {
        assert_eq!(values(relnet_models::fastconv::conv2d(&conv, x.clone())), values(conv.forward(x.clone())));
    }
}
