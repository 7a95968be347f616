//! Measures this machine's fp32 peak: twelve independent chains of fused multiply-adds (enough to
//! cover the FMA latency on both FMA units) on every core at once, nothing loaded or stored, once
//! with 8-wide AVX2 code and once with 16-wide AVX-512 code where the CPU has AVX-512F (a host
//! without it prints SKIP), and the bf16 peak of `vdpbf16ps` where the CPU has AVX512-BF16
//! (each instruction 32 multiply-adds). The figure that docs/performance.md divides the training
//! step's GFLOP/s by: the AVX-512 peak where the host has it (the bf16 peak for bf16 steps).
//! `cargo run --release -p relnet-models --example fma_peak` (x86-64).
use std::time::Instant;

/// Twelve chains of `iters` 8-wide fused multiply-adds from `seed`; returns a checksum.
///
/// # Safety
///
/// The CPU has AVX2 and FMA.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn chains_avx2(iters: u64, seed: f32) -> f32 {
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

/// Twelve chains of `iters` 16-wide fused multiply-adds from `seed`; returns a checksum.
///
/// # Safety
///
/// The CPU has AVX-512F.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
unsafe fn chains_avx512(iters: u64, seed: f32) -> f32 {
    use std::arch::x86_64::*;
    let (b, c) = (_mm512_set1_ps(0.9999), _mm512_set1_ps(1e-4));
    let mut a = [_mm512_setzero_ps(); 12];
    for (i, v) in a.iter_mut().enumerate() {
        *v = _mm512_set1_ps(seed * (i + 1) as f32);
    }
    for _ in 0..iters {
        for v in a.iter_mut() {
            *v = _mm512_fmadd_ps(*v, b, c);
        }
    }
    let s = a.iter().fold(_mm512_setzero_ps(), |s, v| _mm512_add_ps(s, *v));
    _mm512_reduce_add_ps(s)
}

/// Twelve chains of `iters` 512-bit bf16 dot products (`vdpbf16ps`: 32 multiply-adds each) from
/// `seed`; returns a checksum.
///
/// # Safety
///
/// The CPU has AVX-512F and AVX512-BF16.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx512bf16")]
unsafe fn chains_bf16(iters: u64, seed: f32) -> f32 {
    use std::arch::x86_64::*;
    // Pairs of small bf16 values (0x3a83 is about 1e-3), so the sums stay finite.
    // SAFETY: both are 64 bytes of plain bits.
    let (x, y) = unsafe {
        (
            std::mem::transmute::<__m512i, __m512bh>(_mm512_set1_epi16(0x3a83)),
            std::mem::transmute::<__m512i, __m512bh>(_mm512_set1_epi16(0x3f80)),
        )
    };
    let mut a = [_mm512_setzero_ps(); 12];
    for (i, v) in a.iter_mut().enumerate() {
        *v = _mm512_set1_ps(seed * (i + 1) as f32);
    }
    for _ in 0..iters {
        for v in a.iter_mut() {
            *v = _mm512_dpbf16_ps(*v, x, y);
        }
    }
    let s = a.iter().fold(_mm512_setzero_ps(), |s, v| _mm512_add_ps(s, *v));
    _mm512_reduce_add_ps(s)
}

/// Runs `chain(iters, seed)` on every thread three times and prints GFLOP/s.
#[cfg(target_arch = "x86_64")]
fn measure(what: &str, width: usize, chain: fn(u64, f32) -> f32) {
    let threads = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1);
    let iters = 200_000_000u64 * 8 / width as u64;
    let flop_per_thread = iters as f64 * 12.0 * width as f64 * 2.0;
    for run in 0..3 {
        let t = Instant::now();
        let sums: Vec<f32> = std::thread::scope(|s| {
            let hs: Vec<_> = (0..threads).map(|i| s.spawn(move || chain(iters, 1e-3 * (i + 1) as f32))).collect();
            hs.into_iter().map(|h| h.join().unwrap()).collect()
        });
        let secs = t.elapsed().as_secs_f64();
        println!(
            "{what} run {run}: {threads} threads, {:.1} GFLOP/s in all, {:.1} per thread (checksum {:.3})",
            flop_per_thread * threads as f64 / secs / 1e9,
            flop_per_thread / secs / 1e9,
            sums.iter().sum::<f32>()
        );
    }
}

fn main() {
    #[cfg(target_arch = "x86_64")]
    {
        let flags = ["avx2", "fma", "avx512f", "avx512_bf16", "amx_bf16"];
        let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
        let line = cpuinfo.lines().find(|l| l.starts_with("flags")).unwrap_or("");
        let have: Vec<&str> = flags.into_iter().filter(|f| line.split_whitespace().any(|w| w == *f)).collect();
        println!("cpu flags: {}", have.join(" "));
        if std::is_x86_feature_detected!("avx2") && std::is_x86_feature_detected!("fma") {
            // SAFETY: AVX2 and FMA were detected.
            measure("avx2", 8, |n, s| unsafe { chains_avx2(n, s) });
        } else {
            println!("avx2: SKIP (no AVX2 and FMA)");
        }
        if std::is_x86_feature_detected!("avx512f") {
            // SAFETY: AVX-512F was detected.
            measure("avx512", 16, |n, s| unsafe { chains_avx512(n, s) });
        } else {
            println!("avx512: SKIP (this CPU has no AVX-512F)");
        }
        if std::is_x86_feature_detected!("avx512f") && std::is_x86_feature_detected!("avx512bf16") {
            // SAFETY: AVX-512F and AVX512-BF16 were detected.
            measure("avx512-bf16 (vdpbf16ps)", 32, |n, s| unsafe { chains_bf16(n, s) });
        } else {
            println!("avx512-bf16: SKIP (this CPU has no AVX512-BF16)");
        }
    }
}
