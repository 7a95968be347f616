//! ResNet-32's forward and backward at a batch of 256 (K = 4, M = 64) with every residual
//! block's `bn1 -> ReLU -> conv2` as one operation (`bn_relu_conv`, what `BasicBlock::forward`
//! runs) against the same blocks with the operations apart, rounds alternating in one process:
//! the step's share of the fusion without the host's drift between processes.
//! `cargo run --release -p relnet-models --example block_ab [-- ROUNDS]` (the `relnet` binary's
//! allocator settings: run it with
//! `GLIBC_TUNABLES=glibc.malloc.mmap_max=0:glibc.malloc.trim_threshold=2147483647`).
use std::time::Instant;

use burn::prelude::*;
use burn::tensor::Distribution;
use relnet_models::fastbn::{batch_norm, batch_norm_add_relu, batch_norm_relu};
use relnet_models::fastconv::conv2d;
use relnet_models::resnet_cifar::{BasicBlock, ResNetCifar};
use relnet_models::{Backbone, BackboneKind};

/// `BasicBlock::forward` with batch norm + ReLU and the second convolution apart.
fn block_apart(b: &BasicBlock, x: Tensor<4>) -> Tensor<4> {
    let out = batch_norm_relu(&b.bn1, conv2d(&b.conv1, x.clone()));
    let short = match &b.downsample {
        Some(d) => batch_norm(&d.bn, conv2d(&d.conv, x)),
        None => x,
    };
    batch_norm_add_relu(&b.bn2, conv2d(&b.conv2, out), short)
}

fn forward(model: &ResNetCifar, x: Tensor<4>, fused: bool) -> Tensor<4> {
    let mut x = batch_norm_relu(&model.bn1, conv2d(&model.conv1, x));
    for b in model.layer1.iter().chain(&model.layer2).chain(&model.layer3) {
        x = if fused { b.forward(x) } else { block_apart(b, x) };
    }
    x
}

fn main() {
    let rounds: usize = std::env::args().nth(1).map_or(5, |r| r.parse().expect("ROUNDS: a number"));
    let device = Device::flex().autodiff();
    device.seed(1);
    let Backbone::ResNetCifar(model) = BackboneKind::Resnet32.init(&device) else {
        panic!("ResNet-32 builds a ResNetCifar")
    };
    let x = Tensor::<4>::random([256, 3, 32, 32], Distribution::Normal(0.0, 1.0), &device);
    let step = |fused: bool| {
        let t = Instant::now();
        let y = forward(&model, x.clone(), fused);
        let grads = (y.clone() * y).sum().backward();
        drop(grads);
        t.elapsed().as_secs_f64()
    };
    step(true);
    step(false);
    let (mut fused, mut apart) = (Vec::new(), Vec::new());
    for r in 0..rounds {
        // Alternate which goes first.
        let (a, f) = if r % 2 == 0 {
            let a = step(false);
            (a, step(true))
        } else {
            let f = step(true);
            (step(false), f)
        };
        println!("round {r}: apart {:.1} ms, fused {:.1} ms", a * 1e3, f * 1e3);
        apart.push(a);
        fused.push(f);
    }
    let median = |v: &mut Vec<f64>| {
        v.sort_by(f64::total_cmp);
        v[v.len() / 2]
    };
    let (ma, mf) = (median(&mut apart), median(&mut fused));
    println!(
        "median of {rounds}: apart {:.1} ms, fused {:.1} ms ({:+.1}%); best: apart {:.1} ms, fused {:.1} ms",
        ma * 1e3,
        mf * 1e3,
        (mf / ma - 1.0) * 100.0,
        apart[0] * 1e3,
        fused[0] * 1e3
    );
}
