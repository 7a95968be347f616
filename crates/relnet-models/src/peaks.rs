//! This CPU's arithmetic peaks, measured: twelve independent chains of fused multiply-adds
//! (enough to cover the latency on both FMA units), nothing loaded or stored, in 8-wide AVX2,
//! 16-wide AVX-512 and `vdpbf16ps` (AVX512-BF16: 32 multiply-adds an instruction) code.
//!
//! Two users: the `fma_peak` example (every core at once, the figure docs/performance.md divides
//! a step's GFLOP/s by) and the choice of bf16 kernels ([`crate::precision`]): the bf16 kernels
//! pay only where `vdpbf16ps` has more arithmetic than the fp32 FMA, which the CPU flags do not
//! say (half the fp32 peak on the Intel Xeon measured in docs/performance.md, twice it on the
//! AMD EPYC), so it is measured once, on one thread.

use std::time::Instant;

/// What the chains run.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Chain {
    /// 8-wide fp32 FMA (AVX2 + FMA).
    Avx2,
    /// 16-wide fp32 FMA (AVX-512F).
    Avx512,
    /// `vdpbf16ps` on 512-bit registers (AVX-512F + AVX512-BF16).
    Bf16,
}

impl Chain {
    /// Multiply-adds an instruction.
    pub fn width(self) -> usize {
        match self {
            Chain::Avx2 => 8,
            Chain::Avx512 => 16,
            Chain::Bf16 => 32,
        }
    }

    /// Whether this CPU runs the chain; `Err` names the missing feature.
    pub fn runs_here(self) -> Result<(), &'static str> {
        #[cfg(target_arch = "x86_64")]
        {
            let (avx2, avx512) = (
                std::is_x86_feature_detected!("avx2") && std::is_x86_feature_detected!("fma"),
                std::is_x86_feature_detected!("avx512f"),
            );
            match self {
                Chain::Avx2 if !avx2 => Err("no AVX2 and FMA"),
                Chain::Avx512 | Chain::Bf16 if !avx512 => Err("no AVX-512F"),
                Chain::Bf16 if !std::is_x86_feature_detected!("avx512bf16") => Err("no AVX512-BF16"),
                _ => Ok(()),
            }
        }
        #[cfg(not(target_arch = "x86_64"))]
        {
            Err("not x86-64")
        }
    }

    /// Runs twelve chains of `iters` instructions on this thread; returns a checksum (so the
    /// work is not optimised away), or `None` where the CPU does not run the chain.
    pub fn run(self, iters: u64, seed: f32) -> Option<f32> {
        self.runs_here().ok()?;
        #[cfg(target_arch = "x86_64")]
        {
            // SAFETY: `runs_here` checked the features each function enables.
            Some(unsafe {
                match self {
                    Chain::Avx2 => chains_avx2(iters, seed),
                    Chain::Avx512 => chains_avx512(iters, seed),
                    Chain::Bf16 => chains_bf16(iters, seed),
                }
            })
        }
        #[cfg(not(target_arch = "x86_64"))]
        {
            let _ = (iters, seed);
            None
        }
    }

    /// GFLOP/s (two a multiply-add) of `iters` instructions a chain on this thread, or `None`
    /// where the CPU does not run the chain.
    pub fn gflops(self, iters: u64) -> Option<f64> {
        // Opaque inputs: chains of constants could be folded away.
        let (iters, seed) = std::hint::black_box((iters, 1e-3f32));
        let t = Instant::now();
        let sum = self.run(iters, seed)?;
        let secs = t.elapsed().as_secs_f64();
        std::hint::black_box(sum);
        Some(iters as f64 * 12.0 * self.width() as f64 * 2.0 / secs / 1e9)
    }
}

/// The fp32 FMA peak (widest build) and the `vdpbf16ps` peak of one thread, GFLOP/s: the best
/// of three alternating measurements of about 5 ms each (30 ms in all), or `None` where the
/// CPU lacks AVX-512F or AVX512-BF16.
pub fn fp32_and_bf16_per_thread() -> Option<(f64, f64)> {
    Chain::Bf16.runs_here().ok()?;
    let (mut fp32, mut bf16) = (0f64, 0f64);
    // 0.77 GFLOP of FMA and of vdpbf16ps each time: 3.5 and 7 ms on the Intel Xeon measured.
    for _ in 0..3 {
        fp32 = fp32.max(Chain::Avx512.gflops(2_000_000)?);
        bf16 = bf16.max(Chain::Bf16.gflops(1_000_000)?);
    }
    Some((fp32, bf16))
}

/// Twelve chains of `iters` 8-wide fused multiply-adds from `seed`; returns a checksum.
///
/// # Safety
///
/// The CPU has AVX2 and FMA.
#[cfg(target_arch = "x86_64")]
#[inline(never)]
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
#[inline(never)]
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
#[inline(never)]
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chains_run_where_the_cpu_has_them_and_measure_positive_rates() {
        for c in [Chain::Avx2, Chain::Avx512, Chain::Bf16] {
            match c.runs_here() {
                Ok(()) => {
                    // Twelve chains from 1e-3 * (i + 1) after 10 steps of v * 0.9999 + 1e-4
                    // (FMA) or + 32 * 1e-3 (dot products): finite and positive.
                    let sum = c.run(10, 1e-3).unwrap();
                    assert!(sum.is_finite() && sum > 0.0, "{c:?}: {sum}");
                    assert!(c.gflops(10_000).unwrap() > 0.0);
                }
                Err(why) => {
                    eprintln!("SKIP {c:?}: {why}");
                    assert!(c.run(10, 1e-3).is_none());
                }
            }
        }
    }
}
