//! Times relnet's batch-norm and pooling passes on Conv-4's and ResNet-32's map shapes at a batch
//! of 256 (K = 4, M = 64): statistics, normalisation, the backward pass without and with the
//! fused ReLU, the residual block's end (batch norm + shortcut + ReLU) forward and backward.
//! `cargo run --release -p relnet-models --example bn_ops`.
use std::time::Instant;

use relnet_models::{fastbn, fastpool};

fn best(f: &dyn Fn()) -> f64 {
    f();
    (0..5)
        .map(|_| {
            let t = Instant::now();
            f();
            t.elapsed().as_secs_f64()
        })
        .fold(f64::INFINITY, f64::min)
}

fn main() {
    let n = 256;
    for (c, side) in [(8, 32), (16, 16), (32, 8), (64, 4), (16, 32), (32, 16), (64, 8)] {
        let plane = side * side;
        let x: Vec<f32> = (0..n * c * plane).map(|i| ((i * 37 % 101) as f32 - 50.0) / 25.0).collect();
        let dy: Vec<f32> = (0..n * c * plane).map(|i| ((i * 53 % 89) as f32 - 44.0) / 40.0).collect();
        let (gamma, beta) = (vec![1.0f32; c], vec![0.1f32; c]);
        let (mean, var) = fastbn::statistics(&x, n, c, plane);
        let ts = best(&|| drop(fastbn::statistics(&x, n, c, plane)));
        let tn = best(&|| drop(fastbn::normalise(&x, c, plane, &mean, &var, &gamma, &beta, 1e-5, true)));
        let tb = best(&|| drop(fastbn::backward(&x, &dy, n, c, plane, &mean, &var, &gamma, 1e-5, None)));
        let tbr = best(&|| drop(fastbn::backward(&x, &dy, n, c, plane, &mean, &var, &gamma, 1e-5, Some(&beta))));
        let taf = best(&|| drop(fastbn::bn_add_relu_forward(&x, &dy, n, c, plane, &gamma, &beta, 1e-5)));
        let (out, ..) = fastbn::bn_add_relu_forward(&x, &dy, n, c, plane, &gamma, &beta, 1e-5);
        let tab = best(&|| drop(fastbn::bn_add_relu_backward(&x, &out, &dy, n, c, plane, &mean, &var, &gamma, 1e-5)));
        let (tpf, tpb) = if side >= 8 {
            (
                best(&|| drop(fastpool::forward(&x, n * c, side, side, 2, 2))),
                best(&|| drop(fastpool::backward(&dy[..n * c * plane / 4], n * c, side, side, 2, 2))),
            )
        } else {
            (0.0, 0.0)
        };
        let mb = (n * c * plane * 4) as f64 / 1e6;
        println!(
            "{c:>3} x {side:>2}x{side:<2} ({mb:5.1} MB): statistics {:6.2} ms, normalise {:6.2} ms, backward {:6.2} ms, with ReLU {:6.2} ms | +shortcut+ReLU fwd {:6.2} ms, bwd {:6.2} ms | pool fwd {:5.2} ms, bwd {:5.2} ms",
            ts * 1e3,
            tn * 1e3,
            tb * 1e3,
            tbr * 1e3,
            taf * 1e3,
            tab * 1e3,
            tpf * 1e3,
            tpb * 1e3
        );
    }
}
