//! Where a Deep InfoMax training step spends its time, against the arithmetic of the method.
//! `cargo run --release --example dim_profile -- [BACKBONE] [BATCH] [STEPS]`
//! (default conv4 128 3; CIFAR-sized 32x32 inputs, forward and backward of each part).
//!
//! Prints the seconds of each part per batch, the views/s of the whole step, and the GFLOP/s
//! the local discriminator's hidden layer reaches (its multiply-adds are counted exactly: two
//! pair sets, `B * h * w` rows each, a 256x256 layer, forward plus the two gradient products).
use std::time::Instant;

use burn::prelude::*;
use burn::tensor::Distribution;
use relnet_core::methods::deepinfomax::{dim_loss, local_scores};
use relnet_models::{BackboneKind, LocalDiscriminator, PriorDiscriminator};

fn time<R>(steps: usize, device: &Device, mut f: impl FnMut() -> R) -> f64 {
    f();
    let _ = device.sync();
    let t = Instant::now();
    for _ in 0..steps {
        f();
    }
    let _ = device.sync();
    t.elapsed().as_secs_f64() / steps as f64
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let kind: BackboneKind = args.first().map(|s| s.parse().unwrap()).unwrap_or(BackboneKind::Conv4);
    let b: usize = args.get(1).map(|s| s.parse().unwrap()).unwrap_or(128);
    let steps: usize = args.get(2).map(|s| s.parse().unwrap()).unwrap_or(3);
    let device = Device::flex().autodiff();
    device.seed(1);
    let backbone = kind.init(&device);
    let local = LocalDiscriminator::new(kind.first_channels(), kind.features(), &device);
    let prior = PriorDiscriminator::new(kind.features(), &device);
    let x = Tensor::<4>::random([b, 3, 32, 32], Distribution::Normal(0.0, 1.0), &device);
    let (y, map) = backbone.forward_with_first(x.clone());
    let [_, c, h, w] = map.dims();
    println!(
        "deepinfomax step, {kind}, batch {b}, 32x32: first map {c}x{h}x{w}, features {}, threads {}",
        kind.features(),
        rayon::current_num_threads()
    );
    let (y0, map0) = (y.detach(), map.detach());

    let backbone_s = time(steps, &device, || {
        let (y, map) = backbone.forward_with_first(x.clone());
        let _ = (y.sum() + map.sum()).backward();
    });
    let local_s = time(steps, &device, || {
        let (t_pos, t_neg) = local_scores(&local, y0.clone().require_grad(), map0.clone().require_grad());
        let _ = (t_pos.sum() + t_neg.sum()).backward();
    });
    let whole_s = time(steps, &device, || {
        let (y, map) = backbone.forward_with_first(x.clone());
        let (t_pos, t_neg) = local_scores(&local, y.clone(), map);
        let u = Tensor::<2>::random(y.dims(), Distribution::Default, &device);
        let loss = dim_loss(t_pos, t_neg, prior.forward(u), prior.forward(y), 1.0, 0.1);
        let _ = loss.backward();
    });
    let rows = (2 * b * h * w) as f64;
    let hidden = LocalDiscriminator::WIDTH as f64;
    let hidden_flop = 3.0 * 2.0 * rows * hidden * hidden;
    let first_flop = 3.0 * 2.0 * (b * h * w) as f64 * c as f64 * hidden; // the map's projection, shared
    println!("backbone forward+backward          {:8.3} s/batch", backbone_s);
    println!("local discriminator fwd+bwd        {:8.3} s/batch", local_s);
    println!("whole step (no optimiser)          {:8.3} s/batch = {:.1} views/s", whole_s, b as f64 / whole_s);
    println!(
        "local discriminator arithmetic      {:.1} GFLOP/batch (hidden layer {:.1}), {:.1} GFLOP/s reached",
        (hidden_flop + first_flop) / 1e9,
        hidden_flop / 1e9,
        (hidden_flop + first_flop) / local_s / 1e9
    );
    println!("views/s if the hidden layer alone ran at P GFLOP/s: {:.1} * P / 100", b as f64 / (hidden_flop / 100e9));
}
