//! Times relnet's convolution kernels on ResNet-32's geometries at batch 256 (K = 4, M = 64):
//! forward, weight gradient alone, input gradient alone, in GFLOP/s. With the argument `bf16`,
//! the convolution at bf16 precision as training runs it (`fastconv::forward_bf16`: the
//! AVX512-BF16 kernels where the CPU has them, the rounding passes included); `RELNET_SIMD=avx2`
//! caps the vector width.
//! With the argument `conv4`, Conv-4's four convolutions instead; with `n=N`, a batch of `N`
//! images (a small batch stays in the caches: the kernels' own speed, without the memory's).
//! `cargo run --release -p relnet-models --example fastconv_ops -- [bf16] [conv4] [n=16]`
use std::time::Instant;

use relnet_models::fastconv::{Geometry, backward, backward_bf16, forward, forward_bf16};

fn main() {
    let bf16 = std::env::args().skip(1).any(|a| a == "bf16");
    let conv4 = std::env::args().skip(1).any(|a| a == "conv4");
    let model = if conv4 { "Conv-4" } else { "ResNet-32" };
    println!("precision: {}, {model}", if bf16 { "bf16" } else { "fp32" });
    let n = std::env::args()
        .skip(1)
        .find_map(|a| {
            a.strip_prefix("n=")
                .map(|v| v.parse::<usize>().ok().filter(|&n| n > 0).expect("n=N: a batch size of at least 1"))
        })
        .unwrap_or(256);
    println!("batch: {n} images");
    // (ci, side, co, k, stride, pad, how many in ResNet-32)
    let resnet32 = [
        (3, 32, 16, 3, 1, 1, 1),
        (16, 32, 16, 3, 1, 1, 10),
        (16, 32, 32, 3, 2, 1, 1),
        (16, 32, 32, 1, 2, 0, 1),
        (32, 16, 32, 3, 1, 1, 9),
        (32, 16, 64, 3, 2, 1, 1),
        (32, 16, 64, 1, 2, 0, 1),
        (64, 8, 64, 3, 1, 1, 9),
    ];
    let conv4_cases =
        [(3, 32, 8, 3, 1, 1, 1), (8, 16, 16, 3, 1, 1, 1), (16, 8, 32, 3, 1, 1, 1), (32, 4, 64, 3, 1, 1, 1)];
    let cases: &[_] = if conv4 { &conv4_cases } else { &resnet32 };
    let (mut tf, mut tw, mut tx) = (0.0, 0.0, 0.0);
    for &(ci, side, co, k, s, p, count) in cases {
        let g = Geometry { n, ci, h: side, w: side, co, kh: k, kw: k, sh: s, sw: s, ph: p, pw: p };
        let x: Vec<f32> = (0..n * ci * side * side).map(|i| (i % 7) as f32 * 0.1).collect();
        let w: Vec<f32> = (0..co * ci * k * k).map(|i| (i % 5) as f32 * 0.1).collect();
        let dy: Vec<f32> = (0..n * co * g.oh() * g.ow()).map(|i| (i % 3) as f32 * 0.1).collect();
        let flop = 2.0 * (n * co * g.oh() * g.ow() * ci * k * k) as f64;
        let time = |f: &dyn Fn()| {
            f();
            let t = Instant::now();
            // Three passes at batch 256; as many images in all at smaller batches.
            let reps = (768 / n).max(3);
            for _ in 0..reps {
                f();
            }
            t.elapsed().as_secs_f64() / reps as f64
        };
        let fwd = |x: &[f32], w: &[f32]| if bf16 { forward_bf16(&g, x, w) } else { forward(&g, x, w) };
        let bwd = |want_x, want_w| {
            if bf16 {
                backward_bf16(&g, &x, &w, &dy, want_x, want_w)
            } else {
                backward(&g, &x, &w, &dy, want_x, want_w)
            }
        };
        let f = time(&|| drop(fwd(&x, &w)));
        let dw = time(&|| drop(bwd(false, true)));
        let dx = time(&|| drop(bwd(true, false)));
        println!(
            "{ci:>3}->{co:<3} {side:>2}x{side:<2} k{k} s{s} x{count:<2}: forward {:6.1} ms {:5.1} GFLOP/s | dW {:6.1} ms {:5.1} | dX {:6.1} ms {:5.1}",
            f * 1e3,
            flop / f / 1e9,
            dw * 1e3,
            flop / dw / 1e9,
            dx * 1e3,
            flop / dx / 1e9
        );
        tf += f * count as f64;
        tw += dw * count as f64;
        tx += dx * count as f64;
    }
    println!(
        "{model}'s convolutions per step of {n} images: forward {:.0} ms, dW {:.0} ms, dX {:.0} ms",
        tf * 1e3,
        tw * 1e3,
        tx * 1e3,
    );
}
