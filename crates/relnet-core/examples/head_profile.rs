//! Where the relation head's share of a training step goes, forward plus backward on burn-flex
//! under autodiff, for the features of `M*K` views (Conv-4's 64 features, concatenation): the
//! whole head from the features (the first layer by view, the pairs, batch norm, LeakyReLU, the
//! last layer, the loss), the head after its first layer, its batch norm + LeakyReLU
//! (`MlpHead::bn_leaky_relu`: relnet's `bn1d` operation), and burn's `BatchNorm` alone on the
//! same rows for comparison; then `bn1d`'s slice kernels alone.
//! `cargo run --release -p relnet-core --example head_profile -- [M] [K] [STEPS]`
//! (default 64 16 10); milliseconds per step. Run it with the allocator settings of
//! docs/performance.md ("The allocator settings"). `RELNET_BN=burn` gives burn's batch norm
//! everywhere (the head before `bn1d`).
use std::time::Instant;

use burn::prelude::*;
use burn::tensor::Distribution;
use relnet_core::methods::relational::RelationalModel;
use relnet_core::objective::{Aggregation, RelationLoss, relation_targets};
use relnet_models::BackboneKind;

fn time(steps: usize, mut f: impl FnMut()) -> f64 {
    f();
    let t = Instant::now();
    for _ in 0..steps {
        f();
    }
    t.elapsed().as_secs_f64() * 1e3 / steps as f64
}

fn main() {
    let args: Vec<usize> = std::env::args().skip(1).map(|s| s.parse().expect("M K STEPS: numbers")).collect();
    let (m, k, steps) =
        (args.first().copied().unwrap_or(64), args.get(1).copied().unwrap_or(16), args.get(2).copied().unwrap_or(10));
    assert!(m >= 1 && k >= 2 && steps >= 1, "M >= 1, K >= 2 and STEPS >= 1");
    let device = Device::flex().autodiff();
    device.seed(1);
    let agg = Aggregation::Cat;
    let model = RelationalModel::new(BackboneKind::Conv4, agg, &device);
    let f = BackboneKind::Conv4.features();
    let rows = m * k * (k - 1);
    let width = model.head.bn.gamma.dims()[0];
    println!("M = {m}, K = {k}: {} views, {rows} pairs, hidden width {width}", m * k);
    // Inputs drawn once, outside the timings (15,360 x 256 normal values take tens of ms to draw).
    let z0 = Tensor::<2>::random([m * k, f], Distribution::Normal(0.0, 1.0), &device);
    let h0 = Tensor::<2>::random([rows, width], Distribution::Normal(0.0, 1.0), &device);
    let z = || z0.clone().detach().require_grad();
    let h = || h0.clone().detach().require_grad();
    let targets = relation_targets(m, k, &device);
    let whole = time(steps, || {
        let z = z();
        let logits = model.relation_logits(z.clone(), m, k, agg);
        let loss = RelationLoss::Bce.mean(logits, targets.clone());
        let g = loss.backward();
        let _ = z.grad(&g).unwrap().into_data();
    });
    let after_fc1 = time(steps, || {
        let h = h();
        let logits = model.head.forward_after_fc1(h.clone()).reshape([rows]);
        let loss = RelationLoss::Bce.mean(logits, targets.clone());
        let g = loss.backward();
        let _ = h.grad(&g).unwrap().into_data();
    });
    let bn_leaky = time(steps, || {
        let h = h();
        let y = model.head.bn_leaky_relu(h.clone());
        let g = y.sum().backward();
        let _ = h.grad(&g).unwrap().into_data();
    });
    let bn = time(steps, || {
        let h = h();
        let y = model.head.bn.forward(h.clone());
        let g = y.sum().backward();
        let _ = h.grad(&g).unwrap().into_data();
    });
    let xv: Vec<f32> = h0.clone().into_data().try_to_vec().unwrap();
    let (gamma, beta) = (vec![1.0f32; width], vec![0.0f32; width]);
    let kf = time(steps, || {
        let _ = relnet_models::bn1d::forward(&xv, rows, width, &gamma, &beta, 1e-5, 0.01);
    });
    let (_, mean, var) = relnet_models::bn1d::forward(&xv, rows, width, &gamma, &beta, 1e-5, 0.01);
    let kb = time(steps, || {
        let _ = relnet_models::bn1d::backward(&xv, &xv, rows, width, &mean, &var, &gamma, &beta, 1e-5, 0.01);
    });
    let ks = time(steps, || {
        let _ = relnet_models::bn1d::statistics(&xv, rows, width);
    });
    println!("kernels: forward {kf:.2} ms (statistics {ks:.2}), backward {kb:.2} ms");
    if std::env::var("ONLY_KERNELS").is_ok() {
        return;
    }
    println!("whole head from the features (fc1 by view, pairs, rest, loss): {whole:8.2} ms");
    println!("after fc1 (batch norm, LeakyReLU, fc2, loss):                  {after_fc1:8.2} ms");
    println!("batch norm + LeakyReLU (MlpHead::bn_leaky_relu):                {bn_leaky:8.2} ms");
    println!("batch norm alone (burn's BatchNorm):                           {bn:8.2} ms");
}
