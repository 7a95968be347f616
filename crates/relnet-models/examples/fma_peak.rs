//! Measures this machine's fp32 peak: twelve independent chains of 8-wide fused multiply-adds
//! (enough to cover the FMA latency on both FMA units) on every core at once, nothing loaded or
//! stored. The figure that docs/performance.md divides the training step's GFLOP/s by.
//! `cargo run --release -p relnet-models --example fma_peak` (x86-64 with AVX2 and FMA).
use std::time::Instant;

/// Twelve chains of `iters` fused multiply-adds from `seed`; returns a checksum.
///
/// # Safety
///
/// The CPU has AVX2 and FMA.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn chains(iters: u64, seed: f32) -> f32 {
    use std::arch::x86_64::*;
    let (b, c) = (_mm256_set1_ps(0.9999), _mm256_set1_ps(1e-4));
    let mut a = [_mm256_setzero_ps(); 12];
    for (i, v) in a.iter_mut().enumerate() {
        *v = _mm256_set1_ps(seed * (i + 1) as f32);
    }
    for _ in 0..iters {
        for v in a.iter_mut() {
            *v = _mm256_fmadd_ps(*v, b, c);
        }
    }
    let mut out = [0f32; 8];
    let s = a.iter().fold(_mm256_setzero_ps(), |s, v| _mm256_add_ps(s, *v));
    // SAFETY: `out` holds the 8 floats stored.
    unsafe { _mm256_storeu_ps(out.as_mut_ptr(), s) };
    out[0]
}

fn main() {
    #[cfg(target_arch = "x86_64")]
    {
        assert!(std::is_x86_feature_detected!("avx2") && std::is_x86_feature_detected!("fma"), "needs AVX2 and FMA");
        let threads = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1);
        let iters = 200_000_000u64;
        let flop_per_thread = iters as f64 * 12.0 * 8.0 * 2.0;
        for run in 0..3 {
            let t = Instant::now();
            let sums: Vec<f32> = std::thread::scope(|s| {
                // SAFETY: AVX2 and FMA were detected above.
                let hs: Vec<_> =
                    (0..threads).map(|i| s.spawn(move || unsafe { chains(iters, 1e-3 * (i + 1) as f32) })).collect();
                hs.into_iter().map(|h| h.join().unwrap()).collect()
            });
            let secs = t.elapsed().as_secs_f64();
            println!(
                "run {run}: {threads} threads, {:.1} GFLOP/s in all, {:.1} per thread (checksum {:.3})",
                flop_per_thread * threads as f64 / secs / 1e9,
                flop_per_thread / secs / 1e9,
                sums.iter().sum::<f32>()
            );
        }
    }
}
