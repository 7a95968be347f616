//! Times relnet's batch-norm and pooling passes on Conv-4's and ResNet-32's map shapes at a batch
//! of 256 (K = 4, M = 64): statistics, normalisation, the backward pass without and with the
//! fused ReLU, the residual block's end (batch norm + shortcut + ReLU) forward and backward; then,
//! on Conv-4's pooled maps, batch norm + ReLU + 2x2 pool apart against `bn_relu_pool` (rounds
//! alternating the two in one process, the best round of each); then, on ResNet-32's three
//! stages, batch norm + ReLU then the 3x3 convolution apart against `bn_relu_conv` (the same way).
//! `cargo run --release -p relnet-models --example bn_ops`.
use std::time::Instant;

use relnet_models::fastconv::{self, Geometry};
use relnet_models::{bn_relu_conv, bn_relu_pool, fastbn, fastpool};

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
    // Conv-4's blocks 1-3: statistics, normalise + ReLU, pool forward; pool backward, batch
    // norm + ReLU backward; against the same as one operation. Alternating, best of each.
    for (c, side) in [(8, 32), (16, 16), (32, 8)] {
        let plane = side * side;
        let x: Vec<f32> = (0..n * c * plane).map(|i| ((i * 37 % 101) as f32 - 50.0) / 25.0).collect();
        let dp: Vec<f32> = (0..n * c * plane / 4).map(|i| ((i * 53 % 89) as f32 - 44.0) / 40.0).collect();
        let (gamma, beta) = (vec![1.0f32; c], vec![0.1f32; c]);
        let (mean, var) = fastbn::statistics(&x, n, c, plane);
        let apart_fwd = || {
            let (m, v) = fastbn::statistics(&x, n, c, plane);
            let a = fastbn::normalise(&x, c, plane, &m, &v, &gamma, &beta, 1e-5, true);
            drop(fastpool::forward(&a, n * c, side, side, 2, 2));
        };
        let apart_bwd = || {
            let da = fastpool::backward(&dp, n * c, side, side, 2, 2);
            drop(fastbn::backward(&x, &da, n, c, plane, &mean, &var, &gamma, 1e-5, Some(&beta)));
        };
        let fused_fwd = || drop(bn_relu_pool::forward(&x, n, c, side, side, &gamma, &beta, 1e-5));
        let fused_bwd = || drop(bn_relu_pool::backward(&x, &dp, n, c, side, side, &mean, &var, &gamma, &beta, 1e-5));
        let mut t = [f64::INFINITY; 4];
        for _ in 0..5 {
            for (k, f) in [&apart_fwd as &dyn Fn(), &fused_fwd, &apart_bwd, &fused_bwd].into_iter().enumerate() {
                t[k] = t[k].min(best(f));
            }
        }
        println!(
            "{c:>3} x {side:>2}x{side:<2}: batch norm + ReLU + pool apart fwd {:6.2} ms, bwd {:6.2} ms | fused fwd {:6.2} ms, bwd {:6.2} ms",
            t[0] * 1e3,
            t[2] * 1e3,
            t[1] * 1e3,
            t[3] * 1e3
        );
    }
    // ResNet-32's blocks, `bn1 -> relu -> conv2`: statistics, normalise + ReLU, the convolution;
    // backward the convolution's two gradients, then batch norm + ReLU's; against
    // `bn_relu_conv`. Alternating, best of each.
    if !fastconv::direct_kernels_run_here() {
        println!("bn_relu_conv: SKIP, the direct kernels do not run on this CPU");
        return;
    }
    for (c, side) in [(16, 32), (32, 16), (64, 8)] {
        let plane = side * side;
        let g = Geometry { n, ci: c, h: side, w: side, co: c, kh: 3, kw: 3, sh: 1, sw: 1, ph: 1, pw: 1 };
        let y: Vec<f32> = (0..n * c * plane).map(|i| ((i * 37 % 101) as f32 - 50.0) / 25.0).collect();
        let dout: Vec<f32> = (0..n * c * plane).map(|i| ((i * 53 % 89) as f32 - 44.0) / 40.0).collect();
        let w: Vec<f32> = (0..c * c * 9).map(|i| ((i * 29 % 83) as f32 - 41.0) / 200.0).collect();
        let (gamma, beta) = (vec![1.0f32; c], vec![0.1f32; c]);
        let (mean, var) = fastbn::statistics(&y, n, c, plane);
        let a = fastbn::normalise(&y, c, plane, &mean, &var, &gamma, &beta, 1e-5, true);
        let apart_fwd = || {
            let (m, v) = fastbn::statistics(&y, n, c, plane);
            let a = fastbn::normalise(&y, c, plane, &m, &v, &gamma, &beta, 1e-5, true);
            drop(fastconv::forward(&g, &a, &w));
        };
        let apart_bwd = || {
            let (da, dw) = fastconv::backward(&g, &a, &w, &dout, true, true);
            drop((dw, fastbn::backward(&y, &da.expect("asked"), n, c, plane, &mean, &var, &gamma, 1e-5, Some(&beta))));
        };
        let dims = [n, c, side, side];
        let fused_fwd = || drop(bn_relu_conv::forward(&y, dims, &gamma, &beta, 1e-5, &w, c, false));
        let fused_bwd =
            || drop(bn_relu_conv::backward(&y, dims, &dout, &mean, &var, &gamma, &beta, 1e-5, &w, c, true, false));
        let mut t = [f64::INFINITY; 4];
        for _ in 0..5 {
            for (k, f) in [&apart_fwd as &dyn Fn(), &fused_fwd, &apart_bwd, &fused_bwd].into_iter().enumerate() {
                t[k] = t[k].min(best(f));
            }
        }
        println!(
            "{c:>3} x {side:>2}x{side:<2}: batch norm + ReLU + conv apart fwd {:6.2} ms, bwd {:6.2} ms | fused fwd {:6.2} ms, bwd {:6.2} ms",
            t[0] * 1e3,
            t[2] * 1e3,
            t[1] * 1e3,
            t[3] * 1e3
        );
    }
}
