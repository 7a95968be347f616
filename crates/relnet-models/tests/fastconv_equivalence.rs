//! The backbones with relnet's convolution (`fastconv`) against the same backbones with burn's:
//! forward output, the input's gradient and every parameter's gradient, within 1e-4 of the
//! largest magnitude; and single convolutions and batch norms on their own.

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

/// burn's random generator is one per process: tests that seed it and draw from it (parameters
/// are drawn lazily, at first use) take this lock so that parallel tests do not interleave draws.
static RNG: std::sync::Mutex<()> = std::sync::Mutex::new(());

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
    let mut all = vec![
        ("output".to_string(), y.to_data().iter::<f32>().collect()),
        ("input gradient".to_string(), values(x.grad(&grads).expect("input gradient"))),
    ];
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

/// Relative L2 distance of every tensor of `a` from `b`'s, at most `tol`.
fn assert_close_l2(a: &[(String, Vec<f32>)], b: &[(String, Vec<f32>)], what: &str, tol: f64) {
    assert_eq!(a.len(), b.len(), "{what}: as many gradients");
    for ((name, p), (_, q)) in a.iter().zip(b) {
        let d = p.iter().zip(q).map(|(u, v)| ((u - v) as f64).powi(2)).sum::<f64>();
        let n = q.iter().map(|v| (*v as f64).powi(2)).sum::<f64>().max(1e-30);
        assert!((d / n).sqrt() <= tol, "{what} {name}: relative L2 distance {:.2e}", (d / n).sqrt());
    }
}

#[test]
fn every_backbone_matches_burns_convolution_forward_and_backward() {
    let _rng = RNG.lock().unwrap_or_else(|e| e.into_inner());
    let device = Device::flex().autodiff();
    for (kind, side) in [
        (BackboneKind::Conv4, 32),
        (BackboneKind::Resnet8, 32),
        (BackboneKind::Resnet32, 32),
        (BackboneKind::Resnet34, 96),
    ] {
        let init = || {
            device.seed(7);
            kind.init(&device)
        };
        let model = init();
        device.seed(8);
        // Batch 8: at smaller batches the deep ResNets' gradients are ill-conditioned enough that
        // the two paths' different summation orders can move them by about 1%
        // (docs/performance.md).
        let nb = 8;
        let x = Tensor::<4>::random([nb, 3, side, side], Distribution::Normal(0.0, 1.0), &device);
        let t = Tensor::<2>::random([nb, kind.features()], Distribution::Normal(0.0, 1.0), &device);
        let fast = pass(&model, &x, &t);
        let reference = with_burn_conv(|| pass(&model, &x, &t));
        assert!(fast.len() > 2, "{kind:?}: parameter gradients collected");
        if matches!(kind, BackboneKind::Conv4 | BackboneKind::Resnet8) {
            assert_close(&fast, &reference, kind.name());
        } else {
            // The deep ResNets from a random initialisation are chaotic in their input, so float
            // rounding (the two paths sum in other orders) moves gradients by up to about 1%
            // (docs/performance.md). The outputs must agree within 1e-4, the gradients within 2%
            // in L2.
            assert_close(&fast[..1], &reference[..1], kind.name());
            assert_close_l2(&fast, &reference, kind.name(), 2e-2);
        }
    }
}

#[test]
fn the_fast_path_runs_and_other_geometries_fall_back() {
    let _rng = RNG.lock().unwrap_or_else(|e| e.into_inner());
    // The fast path and burn's conv differ in their float rounding: equal within tolerance but
    // not bit for bit, which shows the fast path is the one that ran.
    let device = Device::flex();
    device.seed(3);
    let conv = burn::nn::conv::Conv2dConfig::new([4, 5], [3, 3])
        .with_padding(burn::nn::PaddingConfig2d::Explicit(1, 1, 1, 1))
        .init(&device);
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

#[test]
fn batch_norm_alone_matches_burns() {
    let _rng = RNG.lock().unwrap_or_else(|e| e.into_inner());
    let device = Device::flex().autodiff();
    for (n, c, side) in [(4, 16, 32), (4, 64, 8), (3, 8, 2), (64, 32, 4)] {
        device.seed(11);
        let bn = burn::nn::BatchNormConfig::new(c).init(&device);
        let x = Tensor::<4>::random([n, c, side, side], Distribution::Normal(0.5, 2.0), &device);
        let t = Tensor::<4>::random([n, c, side, side], Distribution::Normal(0.0, 1.0), &device);
        // Alone, and fused with the ReLU that follows it (about half the outputs are cut).
        for relu in [false, true] {
            let run = |x: Tensor<4>| {
                let x = x.require_grad();
                let y = if relu {
                    relnet_models::fastbn::batch_norm_relu(&bn, x.clone())
                } else {
                    relnet_models::fastbn::batch_norm(&bn, x.clone())
                };
                let g = (y.clone() * t.clone()).sum().backward();
                vec![
                    ("output".to_string(), values(y)),
                    ("input gradient".to_string(), values(x.grad(&g).unwrap())),
                    ("gamma gradient".to_string(), bn.gamma.val().grad(&g).unwrap().to_data().iter::<f32>().collect()),
                    ("beta gradient".to_string(), bn.beta.val().grad(&g).unwrap().to_data().iter::<f32>().collect()),
                ]
            };
            let fast = run(x.clone());
            let reference = with_burn_conv(|| run(x.clone()));
            assert_ne!(fast[0].1, reference[0].1, "the fast path ran");
            if relu {
                let zeros = fast[0].1.iter().filter(|&&v| v == 0.0).count();
                assert!(zeros > fast[0].1.len() / 4, "the ReLU cut {zeros} of {} outputs", fast[0].1.len());
            }
            assert_close(&fast, &reference, &format!("batch norm (relu {relu}) {n}x{c}x{side}x{side}"));
        }
        // The running statistics one training pass leaves, fast against burn's.
        let (bn, fresh) =
            (burn::nn::BatchNormConfig::new(c).init(&device), burn::nn::BatchNormConfig::new(c).init(&device));
        let _ = relnet_models::fastbn::batch_norm(&bn, x.clone().require_grad());
        let _ = with_burn_conv(|| fresh.forward(x.clone().require_grad()));
        let stats = |b: &burn::nn::BatchNorm| {
            let v = |t: Tensor<1>| t.to_data().iter::<f32>().collect::<Vec<f32>>();
            vec![
                ("running mean".to_string(), v(b.running_mean.value_sync())),
                ("running variance".to_string(), v(b.running_var.value_sync())),
            ]
        };
        assert_close(&stats(&bn), &stats(&fresh), "running statistics");
    }
}

#[test]
fn single_convolutions_of_every_resnet_geometry_match() {
    let _rng = RNG.lock().unwrap_or_else(|e| e.into_inner());
    let device = Device::flex().autodiff();
    for (n, ci, co, side, s, k) in [
        (4, 3, 16, 32, 1, 3),
        (4, 16, 32, 32, 2, 1),
        (3, 16, 32, 32, 2, 1),
        (4, 32, 64, 16, 2, 1),
        (4, 32, 64, 16, 2, 3),
        (4, 64, 64, 8, 1, 3),
    ] {
        device.seed(11);
        let conv = relnet_models::layers::conv(ci, co, k, s, k / 2, &device);
        let x = Tensor::<4>::random([n, ci, side, side], Distribution::Normal(0.5, 2.0), &device);
        let t = Tensor::<4>::random([n, co, side / s, side / s], Distribution::Normal(0.0, 1.0), &device);
        let run = |x: Tensor<4>| {
            let x = x.require_grad();
            let y = relnet_models::fastconv::conv2d(&conv, x.clone());
            let g = (y.clone() * t.clone()).sum().backward();
            vec![
                ("output".to_string(), values(y)),
                ("input gradient".to_string(), values(x.grad(&g).unwrap())),
                ("w".to_string(), conv.weight.val().grad(&g).unwrap().to_data().iter::<f32>().collect()),
            ]
        };
        let fast = run(x.clone());
        let reference = with_burn_conv(|| run(x.clone()));
        assert_close(&fast, &reference, &format!("conv {n} {ci} {co} {side} {s}"));
    }
}

#[test]
fn average_pooling_alone_matches_burns() {
    let _rng = RNG.lock().unwrap_or_else(|e| e.into_inner());
    let device = Device::flex().autodiff();
    // Conv-4's 2x2 pools, an odd size (the last row and column dropped) and a 3x2 kernel.
    for (n, c, h, w, k) in [(4, 8, 32, 32, [2, 2]), (3, 5, 7, 9, [2, 2]), (2, 3, 9, 8, [3, 2])] {
        device.seed(5);
        let pool = burn::nn::pool::AvgPool2dConfig::new(k).init();
        let x = Tensor::<4>::random([n, c, h, w], Distribution::Normal(0.5, 2.0), &device);
        let t = Tensor::<4>::random([n, c, h / k[0], w / k[1]], Distribution::Normal(0.0, 1.0), &device);
        let run = |x: Tensor<4>| {
            let x = x.require_grad();
            let y = relnet_models::fastpool::avg_pool2d(&pool, x.clone());
            let g = (y.clone() * t.clone()).sum().backward();
            vec![("output".to_string(), values(y)), ("input gradient".to_string(), values(x.grad(&g).unwrap()))]
        };
        let fast = run(x.clone());
        let reference = with_burn_conv(|| run(x.clone()));
        assert_close(&fast, &reference, &format!("average pool {n}x{c}x{h}x{w} kernel {k:?}"));
    }
}

#[test]
fn add_relu_matches_burns() {
    let _rng = RNG.lock().unwrap_or_else(|e| e.into_inner());
    let device = Device::flex().autodiff();
    device.seed(3);
    let a = Tensor::<4>::random([3, 4, 5, 6], Distribution::Normal(0.0, 1.0), &device);
    let b = Tensor::<4>::random([3, 4, 5, 6], Distribution::Normal(0.0, 1.0), &device);
    let t = Tensor::<4>::random([3, 4, 5, 6], Distribution::Normal(0.0, 1.0), &device);
    let run = |a: Tensor<4>, b: Tensor<4>| {
        let (a, b) = (a.require_grad(), b.require_grad());
        let y = relnet_models::fastbn::add_relu(a.clone(), b.clone());
        let g = (y.clone() * t.clone()).sum().backward();
        vec![
            ("output".to_string(), values(y)),
            ("a gradient".to_string(), values(a.grad(&g).unwrap())),
            ("b gradient".to_string(), values(b.grad(&g).unwrap())),
        ]
    };
    let fast = run(a.clone(), b.clone());
    let zeros = fast[0].1.iter().filter(|&&v| v == 0.0).count();
    assert!(zeros > 60 && zeros < 300, "{zeros} of 360 outputs cut");
    assert_eq!(fast, with_burn_conv(|| run(a.clone(), b.clone())), "the same bits as burn's add and relu");
}
