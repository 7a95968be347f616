//! The vector operations the direct convolution (`direct3x3.rs`) and the Winograd tiles
//! (`winograd.rs`) are written in, once per
//! instruction set: AVX-512F (16 lanes), AVX2 + FMA (8 lanes), and portable Rust at 8 or 16
//! lanes (any CPU; NEON hosts compile it). The kernels are generic over [`Simd`]; each
//! instruction set gets one entry point with `#[target_feature]`, into which the generic body and
//! these operations (`#[inline(always)]`) are inlined, so the same source becomes AVX-512 code,
//! AVX2 code or plain code. Every set multiplies and adds with one rounding (a fused
//! multiply-add; the portable set through `f32::mul_add`), and the kernels sum in an order that
//! does not depend on the width, so every set gives the same bits: the tests hold the portable
//! 16-lane set, which runs on any CPU with AVX-512's tile sizes, to the AVX2 set's bits, which is
//! how the AVX-512 tiling is checked on a host without AVX-512.
//!
//! Why `std::arch` and not `pulp` or `macerator` (both in the dependency tree): the kernels need
//! a few operations on one vector type, which a small trait gives without a new direct dependency
//! or a framework's abstractions in the kernels' inner loops; `macerator` is burn's internal
//! choice, not an API we can pin. (`pulp`'s AVX-512 level is used where it pays without our own
//! code: gemm's `x86-v4` feature, on for the convolutions still on im2col + GEMM.)

/// One instruction set's vector of `W` floats and the operations on it, with its register tile
/// sizes (chosen so the accumulators, the loaded operands and one broadcast fit the register file:
/// 16 registers for AVX2, 32 for AVX-512).
///
/// Every operation is `unsafe`: it may be called only on a CPU that has the set's features
/// (checked once by the caller, see [`Isa::detect`]), and the pointer ones only on memory
/// valid for what they read or write.
pub(crate) trait Simd {
    /// Lanes per vector.
    const W: usize;
    /// Output channels per forward register tile, at most (even).
    const ROWS: usize;
    /// Taps per weight-gradient register tile, at most (a multiple of 3).
    const TAPS: usize;
    /// The vector.
    type V: Copy;

    /// A vector of zeros.
    ///
    /// # Safety
    ///
    /// The CPU has this set's features.
    unsafe fn zero() -> Self::V;

    /// `W` floats from `p` (any alignment).
    ///
    /// # Safety
    ///
    /// The CPU has this set's features; `p` is valid for reads of `W` floats.
    unsafe fn load(p: *const f32) -> Self::V;

    /// The float at `p` in every lane.
    ///
    /// # Safety
    ///
    /// The CPU has this set's features; `p` is valid for a read of one float.
    unsafe fn splat(p: *const f32) -> Self::V;

    /// `a * b + c` in every lane, rounded once.
    ///
    /// # Safety
    ///
    /// The CPU has this set's features.
    unsafe fn fma(a: Self::V, b: Self::V, c: Self::V) -> Self::V;

    /// Writes `v` to the `W` floats at `p` (any alignment).
    ///
    /// # Safety
    ///
    /// The CPU has this set's features; `p` is valid for writes of `W` floats.
    unsafe fn store(p: *mut f32, v: Self::V);

    /// `a + b` in every lane.
    ///
    /// # Safety
    ///
    /// The CPU has this set's features.
    unsafe fn add(a: Self::V, b: Self::V) -> Self::V;

    /// `a - b` in every lane.
    ///
    /// # Safety
    ///
    /// The CPU has this set's features.
    unsafe fn sub(a: Self::V, b: Self::V) -> Self::V;

    /// Lanes `0 .. W/2` from the `W/2` floats at `p0`, lanes `W/2 .. W` from those at `p1` (any
    /// alignment).
    ///
    /// # Safety
    ///
    /// The CPU has this set's features; `p0` and `p1` are valid for reads of `W/2` floats.
    unsafe fn load_halves(p0: *const f32, p1: *const f32) -> Self::V;

    /// Writes `a` and `b` interleaved, lanes `0 .. W/2` to the `W` floats at `p0` and lanes
    /// `W/2 .. W` to those at `p1` (any alignment): `p0[2i] = a[i]`, `p0[2i + 1] = b[i]`, and
    /// `p1[2i] = a[W/2 + i]`, `p1[2i + 1] = b[W/2 + i]`, for `i < W/2`.
    ///
    /// # Safety
    ///
    /// The CPU has this set's features; `p0` and `p1` are valid for writes of `W` floats.
    unsafe fn store_pairs(p0: *mut f32, p1: *mut f32, a: Self::V, b: Self::V);
}

/// The widest set this CPU runs, or none where the direct kernels are off.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) enum Isa {
    /// Plain Rust (used only where asked for with `RELNET_SIMD=portable`: on a CPU without
    /// AVX2 the im2col + GEMM path is kept, since the `gemm` crate has its own SSE and NEON code).
    Portable,
    /// AVX2 + FMA.
    Avx2,
    /// AVX-512F.
    Avx512,
}

impl Isa {
    /// The widest set this CPU has (`None` without AVX2 and FMA), capped by `RELNET_SIMD`
    /// (`avx512`, `avx2` or `portable`); `None` where `RELNET_DIRECT_CONV=off`. Read once.
    pub(crate) fn detect() -> Option<Isa> {
        static ISA: std::sync::OnceLock<Option<Isa>> = std::sync::OnceLock::new();
        *ISA.get_or_init(|| {
            if std::env::var("RELNET_DIRECT_CONV").is_ok_and(|v| v == "off") {
                return None;
            }
            let cap = match std::env::var("RELNET_SIMD").as_deref() {
                Ok("portable") => return Some(Isa::Portable),
                Ok("avx2") => Isa::Avx2,
                Ok("avx512") | Err(_) => Isa::Avx512,
                Ok(other) => {
                    eprintln!("warning: RELNET_SIMD={other} is none of avx512, avx2, portable: ignored");
                    Isa::Avx512
                }
            };
            Isa::hardware().map(|h| h.min(cap))
        })
    }

    /// The widest set this CPU has, ignoring the environment (`None` without AVX2 and FMA). The
    /// AVX-512 set also needs AVX2 and FMA (a CPU with AVX-512F has them, but a virtual machine
    /// can hide features one by one, and the AVX-512 build may use them).
    pub(crate) fn hardware() -> Option<Isa> {
        #[cfg(target_arch = "x86_64")]
        {
            let avx2 = std::is_x86_feature_detected!("avx2") && std::is_x86_feature_detected!("fma");
            if avx2 && std::is_x86_feature_detected!("avx512f") {
                return Some(Isa::Avx512);
            }
            if avx2 {
                return Some(Isa::Avx2);
            }
        }
        None
    }
}

/// AVX2 + FMA: 8 lanes, 16 registers (a 6 x 2 forward tile, 6 taps x 2 vectors of gradient).
#[cfg(target_arch = "x86_64")]
pub(crate) struct Avx2;

#[cfg(target_arch = "x86_64")]
impl Simd for Avx2 {
    const W: usize = 8;
    const ROWS: usize = 6;
    const TAPS: usize = 6;
    type V = std::arch::x86_64::__m256;

    #[inline(always)]
    unsafe fn zero() -> Self::V {
        // SAFETY: the caller's contract: the CPU has AVX2.
        unsafe { std::arch::x86_64::_mm256_setzero_ps() }
    }

    #[inline(always)]
    unsafe fn load(p: *const f32) -> Self::V {
        // SAFETY: the caller's contract: AVX2, and `p` valid for 8 floats.
        unsafe { std::arch::x86_64::_mm256_loadu_ps(p) }
    }

    #[inline(always)]
    unsafe fn splat(p: *const f32) -> Self::V {
        // SAFETY: the caller's contract: AVX2, and `p` valid for one float.
        unsafe { std::arch::x86_64::_mm256_broadcast_ss(&*p) }
    }

    #[inline(always)]
    unsafe fn fma(a: Self::V, b: Self::V, c: Self::V) -> Self::V {
        // SAFETY: the caller's contract: the CPU has FMA.
        unsafe { std::arch::x86_64::_mm256_fmadd_ps(a, b, c) }
    }

    #[inline(always)]
    unsafe fn store(p: *mut f32, v: Self::V) {
        // SAFETY: the caller's contract: AVX2, and `p` valid for writes of 8 floats.
        unsafe { std::arch::x86_64::_mm256_storeu_ps(p, v) }
    }

    #[inline(always)]
    unsafe fn add(a: Self::V, b: Self::V) -> Self::V {
        // SAFETY: the caller's contract: the CPU has AVX2.
        unsafe { std::arch::x86_64::_mm256_add_ps(a, b) }
    }

    #[inline(always)]
    unsafe fn sub(a: Self::V, b: Self::V) -> Self::V {
        // SAFETY: the caller's contract: the CPU has AVX2.
        unsafe { std::arch::x86_64::_mm256_sub_ps(a, b) }
    }

    #[inline(always)]
    unsafe fn load_halves(p0: *const f32, p1: *const f32) -> Self::V {
        use std::arch::x86_64::*;
        // SAFETY: the caller's contract: AVX2, and `p0`, `p1` valid for 4 floats each.
        unsafe { _mm256_insertf128_ps::<1>(_mm256_castps128_ps256(_mm_loadu_ps(p0)), _mm_loadu_ps(p1)) }
    }

    #[inline(always)]
    unsafe fn store_pairs(p0: *mut f32, p1: *mut f32, a: Self::V, b: Self::V) {
        use std::arch::x86_64::*;
        // SAFETY: the caller's contract: AVX2, and `p0`, `p1` valid for writes of 8 floats each.
        unsafe {
            // Within each 128-bit half: `lo` = a0 b0 a1 b1 | a4 b4 a5 b5, `hi` = a2 b2 a3 b3 |
            // a6 b6 a7 b7; the halves put in order.
            let (lo, hi) = (_mm256_unpacklo_ps(a, b), _mm256_unpackhi_ps(a, b));
            _mm256_storeu_ps(p0, _mm256_permute2f128_ps::<0x20>(lo, hi));
            _mm256_storeu_ps(p1, _mm256_permute2f128_ps::<0x31>(lo, hi));
        }
    }
}

/// AVX-512F: 16 lanes, 32 registers (a 12 x 2 forward tile, 12 taps x 2 vectors of gradient).
#[cfg(target_arch = "x86_64")]
pub(crate) struct Avx512;

#[cfg(target_arch = "x86_64")]
impl Simd for Avx512 {
    const W: usize = 16;
    const ROWS: usize = 12;
    const TAPS: usize = 12;
    type V = std::arch::x86_64::__m512;

    #[inline(always)]
    unsafe fn zero() -> Self::V {
        // SAFETY: the caller's contract: the CPU has AVX-512F.
        unsafe { std::arch::x86_64::_mm512_setzero_ps() }
    }

    #[inline(always)]
    unsafe fn load(p: *const f32) -> Self::V {
        // SAFETY: the caller's contract: AVX-512F, and `p` valid for 16 floats.
        unsafe { std::arch::x86_64::_mm512_loadu_ps(p) }
    }

    #[inline(always)]
    unsafe fn splat(p: *const f32) -> Self::V {
        // SAFETY: the caller's contract: AVX-512F, and `p` valid for one float.
        unsafe { std::arch::x86_64::_mm512_set1_ps(*p) }
    }

    #[inline(always)]
    unsafe fn fma(a: Self::V, b: Self::V, c: Self::V) -> Self::V {
        // SAFETY: the caller's contract: the CPU has AVX-512F (which includes FMA on 512 bits).
        unsafe { std::arch::x86_64::_mm512_fmadd_ps(a, b, c) }
    }

    #[inline(always)]
    unsafe fn store(p: *mut f32, v: Self::V) {
        // SAFETY: the caller's contract: AVX-512F, and `p` valid for writes of 16 floats.
        unsafe { std::arch::x86_64::_mm512_storeu_ps(p, v) }
    }

    #[inline(always)]
    unsafe fn add(a: Self::V, b: Self::V) -> Self::V {
        // SAFETY: the caller's contract: the CPU has AVX-512F.
        unsafe { std::arch::x86_64::_mm512_add_ps(a, b) }
    }

    #[inline(always)]
    unsafe fn sub(a: Self::V, b: Self::V) -> Self::V {
        // SAFETY: the caller's contract: the CPU has AVX-512F.
        unsafe { std::arch::x86_64::_mm512_sub_ps(a, b) }
    }

    #[inline(always)]
    unsafe fn load_halves(p0: *const f32, p1: *const f32) -> Self::V {
        use std::arch::x86_64::*;
        // SAFETY: the caller's contract: AVX-512F (and AVX, which `Isa::hardware` requires with
        // it), and `p0`, `p1` valid for 8 floats each. The halves move as 4 doubles' bits.
        unsafe {
            let lo = _mm512_castpd256_pd512(_mm256_castps_pd(_mm256_loadu_ps(p0)));
            _mm512_castpd_ps(_mm512_insertf64x4::<1>(lo, _mm256_castps_pd(_mm256_loadu_ps(p1))))
        }
    }

    #[inline(always)]
    unsafe fn store_pairs(p0: *mut f32, p1: *mut f32, a: Self::V, b: Self::V) {
        use std::arch::x86_64::*;
        // SAFETY: the caller's contract: AVX-512F, and `p0`, `p1` valid for writes of 16 floats.
        unsafe {
            // Index i < 16 picks `a` lane i, 16 + i picks `b` lane i.
            let lo = _mm512_setr_epi32(0, 16, 1, 17, 2, 18, 3, 19, 4, 20, 5, 21, 6, 22, 7, 23);
            let hi = _mm512_setr_epi32(8, 24, 9, 25, 10, 26, 11, 27, 12, 28, 13, 29, 14, 30, 15, 31);
            _mm512_storeu_ps(p0, _mm512_permutex2var_ps(a, lo, b));
            _mm512_storeu_ps(p1, _mm512_permutex2var_ps(a, hi, b));
        }
    }
}

/// Plain Rust at `N` lanes (arrays the compiler may vectorise): any CPU. At 16 lanes the tile
/// sizes of AVX-512, at 8 those of AVX2, so the tests run both tilings on any CPU.
pub(crate) struct Portable<const N: usize>;

impl<const N: usize> Simd for Portable<N> {
    const W: usize = N;
    const ROWS: usize = if N >= 16 { 12 } else { 6 };
    const TAPS: usize = if N >= 16 { 12 } else { 6 };
    type V = [f32; N];

    #[inline(always)]
    unsafe fn zero() -> Self::V {
        [0.0; N]
    }

    #[inline(always)]
    unsafe fn load(p: *const f32) -> Self::V {
        // SAFETY: the caller's contract: `p` valid for reads of `N` floats; unaligned read.
        unsafe { p.cast::<[f32; N]>().read_unaligned() }
    }

    #[inline(always)]
    unsafe fn splat(p: *const f32) -> Self::V {
        // SAFETY: the caller's contract: `p` valid for a read of one float.
        [unsafe { p.read() }; N]
    }

    #[inline(always)]
    unsafe fn fma(a: Self::V, b: Self::V, c: Self::V) -> Self::V {
        std::array::from_fn(|i| a[i].mul_add(b[i], c[i]))
    }

    #[inline(always)]
    unsafe fn store(p: *mut f32, v: Self::V) {
        // SAFETY: the caller's contract: `p` valid for writes of `N` floats; unaligned write.
        unsafe { p.cast::<[f32; N]>().write_unaligned(v) }
    }

    #[inline(always)]
    unsafe fn add(a: Self::V, b: Self::V) -> Self::V {
        std::array::from_fn(|i| a[i] + b[i])
    }

    #[inline(always)]
    unsafe fn sub(a: Self::V, b: Self::V) -> Self::V {
        std::array::from_fn(|i| a[i] - b[i])
    }

    #[inline(always)]
    unsafe fn load_halves(p0: *const f32, p1: *const f32) -> Self::V {
        // SAFETY: the caller's contract: `p0` and `p1` valid for reads of `N / 2` floats.
        std::array::from_fn(|i| unsafe { if i < N / 2 { p0.add(i).read() } else { p1.add(i - N / 2).read() } })
    }

    #[inline(always)]
    unsafe fn store_pairs(p0: *mut f32, p1: *mut f32, a: Self::V, b: Self::V) {
        for i in 0..N / 2 {
            // SAFETY: the caller's contract: `p0` and `p1` valid for writes of `N` floats.
            unsafe {
                p0.add(2 * i).write(a[i]);
                p0.add(2 * i + 1).write(b[i]);
                p1.add(2 * i).write(a[N / 2 + i]);
                p1.add(2 * i + 1).write(b[N / 2 + i]);
            }
        }
    }
}
