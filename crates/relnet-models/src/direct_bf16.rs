//! The direct 3x3 convolution of `direct3x3.rs` in bf16 with fp32 accumulation, on AVX512-BF16's
//! `vdpbf16ps`: each instruction multiplies 16 (or 8) pairs of bf16 values and adds both products
//! to 16 (or 8) fp32 accumulators, twice the multiply-adds of an fp32 FMA of the same width, and
//! the operands take half the memory.
//!
//! The pairs run along the sum. Forward (and the input gradient, the same kernel on the flipped
//! weights), the sum is over input channels: the bordered image is stored as channel pairs,
//! `[ci/2][h+2][w+2][2]` bf16 (an odd last channel paired with zeros), so a run of `W` output
//! pixels loads its `2W` inputs for a tap in one load (two halves for a split run, below), and each tap's two weights (channels
//! `2c`, `2c+1`) are broadcast as one 32-bit pair. The weight gradient sums over pixels: `dy`
//! is stored as pixel pairs, `[h*w/2][co][2]` (pixels `2q`, `2q+1` of a row; the width is even),
//! and each tap's two inputs at those pixels are adjacent in the plain bordered image
//! `[ci][h+2][w+2]` bf16, broadcast as one pair. The register tiles are `direct3x3`'s AVX-512
//! ones (12 output channels by 2 runs; 12 taps by 2 vectors of channels). As there, output planes
//! 8 pixels wide with an even number of rows run at 16 accumulators, each run the same 8 columns
//! of two consecutive rows loaded as two halves ([`Build::fits`]); other planes whose width is a
//! multiple of 8 but not of 16 (8-wide ones of an odd number of rows included) run at 8.
//!
//! Values are rounded to bf16 (to nearest even) as they are copied into those layouts, so the
//! kernel computes what the emulated bf16 path computes (`crate::precision`): products of
//! bf16 values, summed in fp32. The sum's order is fixed (channel pair, row, column; within a
//! pair the odd element first, as the instruction does), so the bits do not depend on the
//! thread count; they differ from the fp32 kernels' in the last places, since the sums are
//! grouped in pairs. The instruction treats denormal inputs and results as zero.
//!
//! Used where the thread's precision is bf16 (`--precision bf16`), the CPU has AVX512-BF16 and
//! AVX-512VL, and the shape is a stride-1 one `direct3x3` covers; everything else (its stride-2
//! shapes included) keeps the fp32 kernels on bf16-rounded values.

use std::mem::MaybeUninit;

use rayon::prelude::*;

use super::fastconv::Geometry;

/// `v` rounded to bf16, to nearest even (NaN stays NaN).
#[inline(always)]
pub(crate) fn to_bf16(v: f32) -> u16 {
    // Branch-free (a select), so the layout loops vectorise.
    let b = v.to_bits();
    let r = (b.wrapping_add(0x7fff + ((b >> 16) & 1)) >> 16) as u16;
    if v.is_nan() { ((b >> 16) | 0x40) as u16 } else { r }
}

/// The f32 value of the bf16 `h`.
#[inline(always)]
pub(crate) fn from_bf16(h: u16) -> f32 {
    f32::from_bits((h as u32) << 16)
}

/// One build of the bf16 kernels: `W` fp32 accumulators, each fed a pair of bf16 products.
///
/// Every operation is `unsafe`: it may be called only on a CPU that has the build's features,
/// and the pointer ones only on memory valid for what they read or write.
pub(crate) trait Dot {
    /// Accumulators per vector.
    const W: usize;
    /// The fp32 accumulator vector.
    type Acc: Copy;
    /// `W` pairs of bf16 values.
    type Pairs: Copy;

    /// Zeros.
    ///
    /// # Safety
    ///
    /// The CPU has the build's features.
    unsafe fn zero() -> Self::Acc;
    /// `W` floats from `p`.
    ///
    /// # Safety
    ///
    /// The CPU has the build's features; `p` is valid for reads of `W` floats.
    unsafe fn load(p: *const f32) -> Self::Acc;
    /// Writes `W` floats to `p`.
    ///
    /// # Safety
    ///
    /// The CPU has the build's features; `p` is valid for writes of `W` floats.
    unsafe fn store(p: *mut f32, v: Self::Acc);
    /// Writes `W` floats to `p`, each rounded to bf16 first (`to_bf16`, kept as an fp32 value).
    ///
    /// # Safety
    ///
    /// The CPU has the build's features; `p` is valid for writes of `W` floats.
    unsafe fn store_bf16(p: *mut f32, v: Self::Acc);
    /// `2W` bf16 values from `p`: pair `j` is `p[2j], p[2j+1]`.
    ///
    /// # Safety
    ///
    /// The CPU has the build's features; `p` is valid for reads of `2W` bf16 values.
    unsafe fn pairs(p: *const u16) -> Self::Pairs;
    /// `W` pairs as two halves: pairs `0 .. W/2` from `p0` (`p0[2j], p0[2j+1]`), pairs
    /// `W/2 .. W` from `p1` (`p1[2j - W], p1[2j - W + 1]`): a split run's inputs, two rows' `W/2`
    /// pixels each (`direct3x3::Kernel::fits`).
    ///
    /// # Safety
    ///
    /// The CPU has the build's features; `p0` and `p1` are each valid for reads of `W` bf16
    /// values.
    unsafe fn pairs_halves(p0: *const u16, p1: *const u16) -> Self::Pairs;
    /// The pair `p[0], p[1]` in every lane.
    ///
    /// # Safety
    ///
    /// The CPU has the build's features; `p` is valid for reads of 2 bf16 values.
    unsafe fn splat(p: *const u16) -> Self::Pairs;
    /// `acc[j] + a[2j+1] * b[2j+1] + a[2j] * b[2j]`, summed in that order in fp32.
    ///
    /// # Safety
    ///
    /// The CPU has the build's features.
    unsafe fn dot(acc: Self::Acc, a: Self::Pairs, b: Self::Pairs) -> Self::Acc;
}

#[cfg(target_arch = "x86_64")]
mod x86 {
    use std::arch::x86_64::*;

    use super::Dot;
    use crate::bf16_layout::x86::{rounded8, rounded16};

    /// AVX512-BF16 on 512 bits: 16 accumulators.
    pub(crate) struct Bf16x16;

    impl Dot for Bf16x16 {
        const W: usize = 16;
        type Acc = __m512;
        type Pairs = __m512bh;

        #[inline(always)]
        unsafe fn zero() -> __m512 {
            // SAFETY: the caller's contract: AVX-512F.
            unsafe { _mm512_setzero_ps() }
        }
        #[inline(always)]
        unsafe fn load(p: *const f32) -> __m512 {
            // SAFETY: the caller's contract: AVX-512F, `p` valid for 16 floats.
            unsafe { _mm512_loadu_ps(p) }
        }
        #[inline(always)]
        unsafe fn store(p: *mut f32, v: __m512) {
            // SAFETY: the caller's contract: AVX-512F, `p` valid for writes of 16 floats.
            unsafe { _mm512_storeu_ps(p, v) }
        }
        #[inline(always)]
        unsafe fn store_bf16(p: *mut f32, v: __m512) {
            // SAFETY: the caller's contract: AVX-512F, `p` valid for writes of 16 floats.
            unsafe {
                let r = rounded16(v);
                _mm512_storeu_ps(p, _mm512_castsi512_ps(_mm512_and_si512(r, _mm512_set1_epi32(0xffff_0000u32 as i32))))
            }
        }
        #[inline(always)]
        unsafe fn pairs(p: *const u16) -> __m512bh {
            // SAFETY: the caller's contract: AVX-512F, `p` valid for 32 bf16 values (64 bytes);
            // `__m512i` and `__m512bh` are both 64 bytes of plain bits.
            unsafe { std::mem::transmute::<__m512i, __m512bh>(_mm512_loadu_si512(p.cast())) }
        }
        #[inline(always)]
        unsafe fn pairs_halves(p0: *const u16, p1: *const u16) -> __m512bh {
            // SAFETY: the caller's contract: AVX-512F (and AVX, which `Isa::hardware` requires with
            // it, for the 256-bit loads), `p0` and `p1` valid for 16 bf16 values (32 bytes) each;
            // both vector types are 64 bytes of plain bits.
            unsafe {
                let lo = _mm512_castsi256_si512(_mm256_loadu_si256(p0.cast()));
                std::mem::transmute::<__m512i, __m512bh>(_mm512_inserti64x4::<1>(lo, _mm256_loadu_si256(p1.cast())))
            }
        }
        #[inline(always)]
        unsafe fn splat(p: *const u16) -> __m512bh {
            // SAFETY: the caller's contract: AVX-512F, `p` valid for 2 bf16 values (4 bytes,
            // read unaligned); both vector types are 64 bytes of plain bits.
            unsafe { std::mem::transmute::<__m512i, __m512bh>(_mm512_set1_epi32(p.cast::<i32>().read_unaligned())) }
        }
        #[inline(always)]
        unsafe fn dot(acc: __m512, a: __m512bh, b: __m512bh) -> __m512 {
            // SAFETY: the caller's contract: AVX512-BF16.
            unsafe { _mm512_dpbf16_ps(acc, a, b) }
        }
    }

    /// AVX512-BF16 on 256 bits (AVX-512VL): 8 accumulators, for widths and channel counts that
    /// are multiples of 8 but not of 16 (but 8-wide planes of an even number of rows, which run
    /// split runs at 16: `Build::fits`).
    pub(crate) struct Bf16x8;

    impl Dot for Bf16x8 {
        const W: usize = 8;
        type Acc = __m256;
        type Pairs = __m256bh;

        #[inline(always)]
        unsafe fn zero() -> __m256 {
            // SAFETY: the caller's contract: AVX.
            unsafe { _mm256_setzero_ps() }
        }
        #[inline(always)]
        unsafe fn load(p: *const f32) -> __m256 {
            // SAFETY: the caller's contract: AVX, `p` valid for 8 floats.
            unsafe { _mm256_loadu_ps(p) }
        }
        #[inline(always)]
        unsafe fn store(p: *mut f32, v: __m256) {
            // SAFETY: the caller's contract: AVX, `p` valid for writes of 8 floats.
            unsafe { _mm256_storeu_ps(p, v) }
        }
        #[inline(always)]
        unsafe fn store_bf16(p: *mut f32, v: __m256) {
            // SAFETY: the caller's contract: AVX2 (the hardware builds run only where `hardware()`
            // found AVX-512, which `Isa::hardware` grants only with AVX2 and FMA detected), `p`
            // valid for writes of 8 floats.
            unsafe {
                let r = rounded8(v);
                _mm256_storeu_ps(p, _mm256_castsi256_ps(_mm256_and_si256(r, _mm256_set1_epi32(0xffff_0000u32 as i32))))
            }
        }
        #[inline(always)]
        unsafe fn pairs(p: *const u16) -> __m256bh {
            // SAFETY: the caller's contract: AVX, `p` valid for 16 bf16 values (32 bytes);
            // both vector types are 32 bytes of plain bits.
            unsafe { std::mem::transmute::<__m256i, __m256bh>(_mm256_loadu_si256(p.cast())) }
        }
        /// Never reached by the kernels today: 8 accumulators never split (widths are multiples
        /// of 8, never half of 8), kept so every build has the whole trait.
        #[inline(always)]
        unsafe fn pairs_halves(p0: *const u16, p1: *const u16) -> __m256bh {
            // SAFETY: the caller's contract: AVX2 (granted with AVX-512, as in `store_bf16`),
            // `p0` and `p1` valid for 8 bf16 values (16 bytes) each; both vector types are 32
            // bytes of plain bits.
            unsafe {
                let lo = _mm256_castsi128_si256(_mm_loadu_si128(p0.cast()));
                std::mem::transmute::<__m256i, __m256bh>(_mm256_inserti128_si256::<1>(lo, _mm_loadu_si128(p1.cast())))
            }
        }
        #[inline(always)]
        unsafe fn splat(p: *const u16) -> __m256bh {
            // SAFETY: the caller's contract: AVX, `p` valid for 2 bf16 values (read unaligned).
            unsafe { std::mem::transmute::<__m256i, __m256bh>(_mm256_set1_epi32(p.cast::<i32>().read_unaligned())) }
        }
        #[inline(always)]
        unsafe fn dot(acc: __m256, a: __m256bh, b: __m256bh) -> __m256 {
            // SAFETY: the caller's contract: AVX512-BF16 and AVX-512VL.
            unsafe { _mm256_dpbf16_ps(acc, a, b) }
        }
    }

    /// [`super::image`] with 16 accumulators.
    ///
    /// # Safety
    ///
    /// The CPU has AVX-512F and AVX512-BF16; what `image` requires with `D = Bf16x16`.
    #[target_feature(enable = "avx512f,avx512bf16")]
    pub(super) unsafe fn image16(g: &super::Geometry, buf: &[u16], packed: &[u32], out: *mut f32, round: bool) {
        // SAFETY: the caller's contract.
        unsafe { super::image::<Bf16x16>(g, buf, packed, out, round) }
    }

    /// [`super::image`] with 8 accumulators.
    ///
    /// # Safety
    ///
    /// The CPU has AVX-512F, AVX-512VL and AVX512-BF16; what `image` requires with `D = Bf16x8`.
    #[target_feature(enable = "avx512f,avx512vl,avx512bf16")]
    pub(super) unsafe fn image8(g: &super::Geometry, buf: &[u16], packed: &[u32], out: *mut f32, round: bool) {
        // SAFETY: the caller's contract.
        unsafe { super::image::<Bf16x8>(g, buf, packed, out, round) }
    }

    /// [`super::weight_grad`] with 16 accumulators.
    ///
    /// # Safety
    ///
    /// The CPU has AVX-512F and AVX512-BF16; what `weight_grad` requires with `D = Bf16x16`.
    #[target_feature(enable = "avx512f,avx512bf16")]
    pub(super) unsafe fn weight_grad16(g: &super::Geometry, buf: &[u16], dyt: &[u16], dwt: &mut [f32]) {
        // SAFETY: the caller's contract.
        unsafe { super::weight_grad::<Bf16x16>(g, buf, dyt, dwt) }
    }

    /// [`super::weight_grad`] with 8 accumulators.
    ///
    /// # Safety
    ///
    /// The CPU has AVX-512F, AVX-512VL and AVX512-BF16; what `weight_grad` requires with
    /// `D = Bf16x8`.
    #[target_feature(enable = "avx512f,avx512vl,avx512bf16")]
    pub(super) unsafe fn weight_grad8(g: &super::Geometry, buf: &[u16], dyt: &[u16], dwt: &mut [f32]) {
        // SAFETY: the caller's contract.
        unsafe { super::weight_grad::<Bf16x8>(g, buf, dyt, dwt) }
    }
}

/// The instruction's arithmetic in plain Rust, at `N` accumulators: checks the layouts and
/// tiles on a CPU without AVX512-BF16 (the tests), to the last bit but for denormals.
pub(crate) struct Emulated<const N: usize>;

impl<const N: usize> Dot for Emulated<N> {
    const W: usize = N;
    type Acc = [f32; N];
    type Pairs = [[u16; 2]; N];

    #[inline(always)]
    unsafe fn zero() -> Self::Acc {
        [0.0; N]
    }
    #[inline(always)]
    unsafe fn load(p: *const f32) -> Self::Acc {
        // SAFETY: the caller's contract: `p` valid for `N` floats; unaligned read.
        unsafe { p.cast::<[f32; N]>().read_unaligned() }
    }
    #[inline(always)]
    unsafe fn store(p: *mut f32, v: Self::Acc) {
        // SAFETY: the caller's contract: `p` valid for writes of `N` floats; unaligned write.
        unsafe { p.cast::<[f32; N]>().write_unaligned(v) }
    }
    #[inline(always)]
    unsafe fn store_bf16(p: *mut f32, v: Self::Acc) {
        // SAFETY: the caller's contract, as `store`.
        unsafe { Self::store(p, v.map(|x| from_bf16(to_bf16(x)))) }
    }
    #[inline(always)]
    unsafe fn pairs(p: *const u16) -> Self::Pairs {
        // SAFETY: the caller's contract: `p` valid for `2N` bf16 values; unaligned read.
        unsafe { p.cast::<[[u16; 2]; N]>().read_unaligned() }
    }
    #[inline(always)]
    unsafe fn pairs_halves(p0: *const u16, p1: *const u16) -> Self::Pairs {
        // SAFETY: the caller's contract: `p0` and `p1` valid for `N` bf16 values (`N / 2` pairs)
        // each; unaligned reads.
        std::array::from_fn(|j| unsafe {
            if j < N / 2 {
                p0.cast::<[u16; 2]>().add(j).read_unaligned()
            } else {
                p1.cast::<[u16; 2]>().add(j - N / 2).read_unaligned()
            }
        })
    }
    #[inline(always)]
    unsafe fn splat(p: *const u16) -> Self::Pairs {
        // SAFETY: the caller's contract: `p` valid for 2 bf16 values; unaligned read.
        [unsafe { p.cast::<[u16; 2]>().read_unaligned() }; N]
    }
    #[inline(always)]
    unsafe fn dot(acc: Self::Acc, a: Self::Pairs, b: Self::Pairs) -> Self::Acc {
        // A product of two bf16 values is exact in fp32, so each step rounds once, as the
        // instruction's two additions do.
        std::array::from_fn(|j| {
            let s = from_bf16(a[j][1]).mul_add(from_bf16(b[j][1]), acc[j]);
            from_bf16(a[j][0]).mul_add(from_bf16(b[j][0]), s)
        })
    }
}

/// One build of the bf16 kernels.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Build {
    /// AVX512-BF16, 16 accumulators.
    Hw16,
    /// AVX512-BF16 with AVX-512VL, 8 accumulators.
    Hw8,
    /// Plain Rust, 16 accumulators (the tests' check of the layouts on any CPU).
    #[cfg_attr(not(test), allow(dead_code))]
    Emulated16,
    /// Plain Rust, 8 accumulators.
    #[cfg_attr(not(test), allow(dead_code))]
    Emulated8,
}

impl Build {
    /// Accumulators per vector.
    pub(crate) fn lanes(self) -> usize {
        match self {
            Build::Hw16 | Build::Emulated16 => 16,
            Build::Hw8 | Build::Emulated8 => 8,
        }
    }

    /// Whether this CPU runs the build.
    pub(crate) fn runs_here(self) -> bool {
        match self {
            Build::Hw16 | Build::Hw8 => hardware(),
            Build::Emulated16 | Build::Emulated8 => true,
        }
    }

    /// The hardware build whose width divides `n` (a multiple of 8): the weight gradient's
    /// output channels.
    fn pick(n: usize) -> Build {
        if n.is_multiple_of(16) { Build::Hw16 } else { Build::Hw8 }
    }

    /// The hardware build for output planes of `h` rows of `w` pixels (a multiple of 8): 16
    /// accumulators also where `w` is 8 and `h` even, each run then two rows' halves
    /// ([`Build::fits`]), as `direct3x3::Kernel::pick_plane`.
    fn pick_plane(w: usize, h: usize) -> Build {
        if Build::Hw16.fits(w, h) { Build::Hw16 } else { Build::Hw8 }
    }

    /// Whether this build's runs of [`Build::lanes`] output pixels tile planes of `h` rows of `w`
    /// pixels without crossing a row: `w` a multiple of the lanes, or exactly half of them with
    /// `h` even (a *split* run: the first half in row `y`, the second in row `y + 1`, loaded as
    /// two halves, [`Dot::pairs_halves`]): `direct3x3::runs_fit`, the rule of
    /// `direct3x3::Kernel::fits`.
    pub(crate) fn fits(self, w: usize, h: usize) -> bool {
        super::direct3x3::runs_fit(self.lanes(), w, h)
    }
}

/// Whether `RELNET_BF16=emulate` asks for bf16's emulated numerics (the rounding around the fp32
/// kernels) on a CPU that has the bf16 kernels. Read once.
pub(crate) fn emulation_asked() -> bool {
    static ASKED: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *ASKED.get_or_init(|| std::env::var("RELNET_BF16").is_ok_and(|v| v == "emulate"))
}

/// Whether `RELNET_BF16=native` asks for the bf16 kernels wherever the CPU runs them, whatever
/// [`measured_faster`] says. Read once.
pub(crate) fn native_asked() -> bool {
    static ASKED: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *ASKED.get_or_init(|| std::env::var("RELNET_BF16").is_ok_and(|v| v == "native"))
}

/// Whether this CPU runs the bf16 kernels: AVX512-BF16 and AVX-512VL (and AVX-512F), unless
/// `RELNET_DIRECT_CONV` is `off`, `RELNET_SIMD` caps the width below AVX-512 or
/// `RELNET_BF16=emulate` ([`emulation_asked`]). The kernels' own tests run where this holds;
/// the convolutions use them where [`chosen`] holds. Read once.
pub(crate) fn hardware() -> bool {
    static OK: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *OK.get_or_init(|| {
        #[cfg(target_arch = "x86_64")]
        {
            !emulation_asked()
                && super::simd::Isa::detect() == Some(super::simd::Isa::Avx512)
                && std::is_x86_feature_detected!("avx512bf16")
                && std::is_x86_feature_detected!("avx512vl")
        }
        #[cfg(not(target_arch = "x86_64"))]
        {
            false
        }
    })
}

/// How many times the fp32 FMA's arithmetic `vdpbf16ps` must have on this CPU for the bf16
/// kernels to be used: at equal peaks the fp32 kernels on rounded values are as fast (their
/// rounding costs about what the bf16 kernels' layouts do), and on the Intel Xeon measured
/// (`vdpbf16ps` at half the fp32 peak) they are 13-33% faster (docs/performance.md). The hosts
/// measured sit at 0.5 and 2.0: 1.5 leaves a margin either way that the measurement's noise
/// does not cross.
pub(crate) const BF16_OVER_FP32: f64 = 1.5;

/// This CPU's fp32 FMA and `vdpbf16ps` peaks on one thread (GFLOP/s), measured once
/// ([`crate::peaks::fp32_and_bf16_per_thread`], about 30 ms) where the CPU runs the bf16 kernels.
pub(crate) fn peaks() -> Option<(f64, f64)> {
    static PEAKS: std::sync::OnceLock<Option<(f64, f64)>> = std::sync::OnceLock::new();
    *PEAKS.get_or_init(|| if hardware() { crate::peaks::fp32_and_bf16_per_thread() } else { None })
}

/// Whether `vdpbf16ps` has at least [`BF16_OVER_FP32`] times the fp32 FMA's arithmetic here.
fn measured_faster() -> bool {
    peaks().is_some_and(|(fp32, bf16)| bf16 >= BF16_OVER_FP32 * fp32)
}

/// Whether bf16 convolutions run the bf16 kernels: where the CPU runs them ([`hardware`]) and
/// `RELNET_BF16=native` asks for them or they are measured to pay ([`measured_faster`]);
/// elsewhere bf16's numerics run on the fp32 kernels with rounded operands
/// (`fastconv::forward_emulated`). Decided once per process.
pub(crate) fn chosen() -> bool {
    static ON: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *ON.get_or_init(|| hardware() && (native_asked() || measured_faster()))
}

/// Whether the bf16 forward kernel handles `g` on this CPU (the stride-1 shapes of `direct3x3`,
/// `stride_one_ok`: these layouts have no strided form), where bf16 convolutions use the bf16
/// kernels ([`chosen`]).
pub(crate) fn covers(g: &Geometry) -> bool {
    super::direct3x3::stride_one_ok(g) && chosen()
}

/// Whether the bf16 weight-gradient kernel handles `g` on this CPU: also `co` a multiple of 8.
pub(crate) fn covers_weight_grad(g: &Geometry) -> bool {
    covers(g) && g.co.is_multiple_of(8)
}

/// Register tile: output channels (forward) and taps (weight gradient), at most.
const ROWS: usize = 12;
const TAPS: usize = 12;

/// `[co, ci, 3, 3]` as bf16 pairs of input channels, tile by tile (`direct3x3::tiles`): a tile of
/// `n` channels from channel `first` at `first * cp * 9` as `[cp * 9][n]`, each a pair (channel
/// `2c` in the low half, `2c + 1`, or zero past `ci`, in the high half), `cp = ceil(ci / 2)`.
fn pack(g: &Geometry, weight: &[f32]) -> Vec<u32> {
    let cp = g.ci.div_ceil(2);
    let taps = cp * 9;
    let w = |o: usize, c: usize, t: usize| if c < g.ci { to_bf16(weight[(o * g.ci + c) * 9 + t]) as u32 } else { 0 };
    let mut out = vec![0u32; g.co * taps];
    for (first, n) in super::direct3x3::tiles(g.co, ROWS) {
        for c in 0..cp {
            for t in 0..9 {
                for r in 0..n {
                    let o = first + r;
                    out[first * taps + (c * 9 + t) * n + r] = w(o, 2 * c, t) | (w(o, 2 * c + 1, t) << 16);
                }
            }
        }
    }
    out
}

/// The bordered copy of one image `x` (`[ci, h, w]`) as channel pairs, `[cp][h+2][w+2][2]` bf16,
/// zero border, zero partner for an odd last channel. Every value is written.
fn border_pairs(g: &Geometry, x: &[f32], buf: &mut Vec<u16>) {
    let (hp, wp, cp) = (g.h + 2, g.w + 2, g.ci.div_ceil(2));
    // Every value is overwritten below: only a new length needs the resize.
    if buf.len() != cp * hp * wp * 2 {
        buf.clear();
        buf.resize(cp * hp * wp * 2, 0);
    }
    for (c, plane) in buf.chunks_exact_mut(hp * wp * 2).enumerate() {
        plane[..wp * 2].fill(0);
        plane[(hp - 1) * wp * 2..].fill(0);
        let (a, b) = (2 * c, 2 * c + 1);
        for y in 0..g.h {
            let row = &mut plane[(y + 1) * wp * 2..(y + 2) * wp * 2];
            row[..2].fill(0);
            row[(wp - 1) * 2..].fill(0);
            let xa = &x[(a * g.h + y) * g.w..(a * g.h + y + 1) * g.w];
            let xb = (b < g.ci).then(|| &x[(b * g.h + y) * g.w..(b * g.h + y + 1) * g.w]);
            super::bf16_layout::pair_row(xa, xb, &mut row[2..(wp - 1) * 2]);
        }
    }
}

/// The bordered copy of one image `x` (`[ci, h, w]`) in bf16, `[ci][h+2][w+2]`, zero border.
fn border_plain(g: &Geometry, x: &[f32], buf: &mut Vec<u16>) {
    let (hp, wp) = (g.h + 2, g.w + 2);
    if buf.len() != g.ci * hp * wp {
        buf.clear();
        buf.resize(g.ci * hp * wp, 0);
    }
    for (c, plane) in buf.chunks_exact_mut(hp * wp).enumerate() {
        plane[..wp].fill(0);
        plane[(hp - 1) * wp..].fill(0);
        for y in 0..g.h {
            let row = &mut plane[(y + 1) * wp..(y + 2) * wp];
            row[0] = 0;
            row[wp - 1] = 0;
            super::bf16_layout::round_row(&x[(c * g.h + y) * g.w..(c * g.h + y + 1) * g.w], &mut row[1..wp - 1]);
        }
    }
}

/// The convolution of `x` (`[n, ci, h, w]`) with `weight` (`[co, ci, 3, 3]`), padding 1, both
/// rounded to bf16, summed in fp32, each output rounded to bf16 as it is stored (the rounding
/// autocast gives a bf16 convolution's output, without a pass of its own): `[n, co, h, w]`, in
/// the hardware build. Only for a `g` that [`covers`] accepts.
pub(crate) fn forward(g: &Geometry, x: &[f32], weight: &[f32]) -> Vec<f32> {
    assert!(covers(g));
    forward_with(Build::pick_plane(g.w, g.h), g, x, weight, true)
}

/// [`forward`] in the build `build`, which must run here and whose runs tile `g`'s planes
/// ([`Build::fits`]); the outputs rounded to bf16 with `round`, the fp32 sums without.
pub(crate) fn forward_with(build: Build, g: &Geometry, x: &[f32], weight: &[f32], round: bool) -> Vec<f32> {
    assert!(super::direct3x3::stride_one_ok(g), "{g:?} is not a shape the direct kernel covers");
    assert!(build.runs_here(), "{build:?} does not run on this CPU");
    assert!(build.fits(g.w, g.h), "{build:?}'s runs do not tile {}x{} planes", g.h, g.w);
    assert_eq!(x.len(), g.n * g.ci * g.h * g.w);
    assert_eq!(weight.len(), g.co * g.ci * 9);
    let packed = pack(g, weight);
    let (len_in, len_out) = (g.ci * g.h * g.w, g.co * g.h * g.w);
    let mut out: Vec<f32> = Vec::with_capacity(g.n * len_out);
    out.spare_capacity_mut()[..g.n * len_out]
        .par_chunks_mut(len_out)
        .zip(x.par_chunks(len_in))
        .for_each_init(Vec::new, |buf, (o, xi)| forward_image(build, g, xi, &packed, o, buf, round));
    // SAFETY: the capacity is `n * len_out`; `len_in` and `len_out` are non-zero (`stride_one_ok`)
    // and `x` holds `n` images, so the zip pairs each of the `n` chunks of `len_out` values with
    // an image, and `forward_image` wrote each chunk whole before `for_each_init` returned (had
    // it panicked, the panic would have propagated before this line).
    unsafe { out.set_len(g.n * len_out) };
    out
}

/// One image into `out` (`[co, h, w]`, every value written, rounded to bf16 with `round`);
/// `buf` is scratch.
fn forward_image(
    build: Build,
    g: &Geometry,
    x: &[f32],
    packed: &[u32],
    out: &mut [MaybeUninit<f32>],
    buf: &mut Vec<u16>,
    round: bool,
) {
    assert!(super::direct3x3::stride_one_ok(g) && build.runs_here() && build.fits(g.w, g.h));
    assert_eq!(x.len(), g.ci * g.h * g.w);
    assert_eq!(out.len(), g.co * g.h * g.w);
    assert_eq!(packed.len(), g.co * g.ci.div_ceil(2) * 9);
    border_pairs(g, x, buf);
    let o = out.as_mut_ptr().cast::<f32>();
    // SAFETY: the asserts give what `image` requires (a CPU that runs the build, the shape,
    // planes its runs tile, the lengths of `packed` and `out`), `border_pairs`
    // the length of `buf`; `out` is borrowed mutably, so nothing else accesses it.
    unsafe {
        match build {
            #[cfg(target_arch = "x86_64")]
            Build::Hw16 => x86::image16(g, buf, packed, o, round),
            #[cfg(target_arch = "x86_64")]
            Build::Hw8 => x86::image8(g, buf, packed, o, round),
            Build::Emulated16 => image::<Emulated<16>>(g, buf, packed, o, round),
            Build::Emulated8 => image::<Emulated<8>>(g, buf, packed, o, round),
            #[cfg(not(target_arch = "x86_64"))]
            Build::Hw16 | Build::Hw8 => unreachable!("an x86 build on another CPU"),
        }
    }
}

/// Adds one image's weight gradient, from bf16-rounded `x` and `dy`, to `dwt` (`[ci * 9, co]`,
/// fp32), as `direct3x3::weight_grad_image_with` does; `buf` and `dyt` are scratch. In the hardware
/// build; only for a `g` that [`covers_weight_grad`] accepts.
pub(crate) fn weight_grad_image(
    g: &Geometry,
    x: &[f32],
    dy: &[f32],
    dwt: &mut [f32],
    buf: &mut Vec<u16>,
    dyt: &mut Vec<u16>,
) {
    assert!(covers_weight_grad(g));
    weight_grad_image_with(Build::pick(g.co), g, x, dy, dwt, buf, dyt)
}

/// [`weight_grad_image`] in the build `build`, which must run here and whose width divides
/// `g.co`.
pub(crate) fn weight_grad_image_with(
    build: Build,
    g: &Geometry,
    x: &[f32],
    dy: &[f32],
    dwt: &mut [f32],
    buf: &mut Vec<u16>,
    dyt: &mut Vec<u16>,
) {
    assert!(super::direct3x3::stride_one_ok(g), "{g:?} is not a shape the direct kernel covers");
    assert!(build.runs_here(), "{build:?} does not run on this CPU");
    assert!(g.co.is_multiple_of(build.lanes()), "{build:?} needs a multiple of {} channels", build.lanes());
    assert_eq!(x.len(), g.ci * g.h * g.w);
    assert_eq!(dy.len(), g.co * g.h * g.w);
    assert_eq!(dwt.len(), g.co * g.ci * 9);
    border_plain(g, x, buf);
    let p = g.h * g.w;
    // `dy` as pixel pairs: `dyt[(q * co + o) * 2 + e] = dy[o][2q + e]` (`p` is even: `w` is).
    if dyt.len() != p * g.co {
        dyt.clear();
        dyt.resize(p * g.co, 0);
    }
    super::bf16_layout::pixel_pairs(dy, g.co, p, dyt);
    // SAFETY: the asserts give what `weight_grad` requires (a CPU that runs the build, the
    // shape, `co` a multiple of its lanes, the length of `dwt`); `border_plain` and the resize of
    // `dyt` give the lengths of `buf` and `dyt`.
    unsafe {
        match build {
            #[cfg(target_arch = "x86_64")]
            Build::Hw16 => x86::weight_grad16(g, buf, dyt, dwt),
            #[cfg(target_arch = "x86_64")]
            Build::Hw8 => x86::weight_grad8(g, buf, dyt, dwt),
            Build::Emulated16 => weight_grad::<Emulated<16>>(g, buf, dyt, dwt),
            Build::Emulated8 => weight_grad::<Emulated<8>>(g, buf, dyt, dwt),
            #[cfg(not(target_arch = "x86_64"))]
            Build::Hw16 | Build::Hw8 => unreachable!("an x86 build on another CPU"),
        }
    }
}

/// Every tile of one image, as `direct3x3::image` but over channel pairs: split runs
/// ([`Build::fits`]) where the plane is half a vector wide.
///
/// # Safety
///
/// The CPU has `D`'s features; `g` is a shape `direct3x3::stride_one_ok` accepts whose planes
/// `D`'s runs tile (`w` a multiple of `D::W`, or `2 * w == D::W` with `h` even); `buf` holds the
/// bordered pairs (`cp * (h+2) * (w+2) * 2` values, [`border_pairs`]), `packed` the packed
/// weights (`co * cp * 9`, [`pack`]), and `out` is valid for writes of `co * h * w` floats that
/// nothing else accesses during the call.
#[inline(always)]
unsafe fn image<D: Dot>(g: &Geometry, buf: &[u16], packed: &[u32], out: *mut f32, round: bool) {
    // SAFETY: the caller's contract, which is `runs`'s, with `SPLIT` exactly where the plane is
    // half a run wide (so, by the contract, `h` is even; 8 accumulators never split: `w` is a
    // multiple of 8, so never half of them).
    unsafe {
        if D::W >= 16 && 2 * g.w == D::W {
            runs::<D, true>(g, buf, packed, out, round)
        } else {
            runs::<D, false>(g, buf, packed, out, round)
        }
    }
}

/// [`image`]'s tiles, runs of `D::W` pixels of one row, or with `SPLIT` of two.
///
/// # Safety
///
/// What [`image`] requires, and `SPLIT` exactly where `2 * w == D::W`.
#[inline(always)]
unsafe fn runs<D: Dot, const SPLIT: bool>(g: &Geometry, buf: &[u16], packed: &[u32], out: *mut f32, round: bool) {
    let cp = g.ci.div_ceil(2);
    debug_assert!(buf.len() == cp * (g.h + 2) * (g.w + 2) * 2 && packed.len() == g.co * cp * 9);
    debug_assert!(SPLIT == (2 * g.w == D::W) && (g.w.is_multiple_of(D::W) || (SPLIT && g.h.is_multiple_of(2))));
    let runs = g.h * g.w / D::W;
    let tiles = super::direct3x3::tiles(g.co, ROWS);
    let mut first = 0;
    while first < runs {
        let s = (runs - first).min(2);
        for &(co, rows) in &tiles {
            // SAFETY: the caller's contract is `tile`'s, with `first + s <= runs` and `co + rows
            // <= g.co` (`tiles` yields consecutive tiles of an even count up to 12 ending at
            // `g.co`).
            unsafe {
                super::direct3x3::tile_by_shape!(rows, s, tile::<D; SPLIT>(g, buf, packed, out, co, first, round))
            }
        }
        first += s;
    }
}

/// Output channels `co .. co + RR` at the `N` runs of `W` pixels from run `first`; with `SPLIT`,
/// each run the `W/2` pixels of rows `y` and `y + 1` (`w = W/2`).
///
/// # Safety
///
/// What [`runs`] requires, and `co + RR <= g.co`, `first + N <= h * w / W`. Then a run at
/// output (y, x..x+L) with tap (ky, kx) of channel pair `c` reads the pairs (offsets counted in
/// pairs, two bf16 values each) `(c * plane + (y + ky) * wp + x + kx) ..` `+ L`, with `L = W`;
/// with `SPLIT`, `L = W/2`, `x = 0`, and the same columns of bordered row `y + 1 + ky <= h + 1`
/// too; inside `buf` as in `direct3x3::tile`. The tile's weights are
/// `packed[co * cp * 9 .. (co + RR) * cp * 9]`; it stores `W` consecutive outputs a run
/// (consecutive also across a split run's two rows of `w` pixels), inside `out`.
#[inline(always)]
#[allow(clippy::needless_range_loop)]
unsafe fn tile<D: Dot, const RR: usize, const N: usize, const SPLIT: bool>(
    g: &Geometry,
    buf: &[u16],
    packed: &[u32],
    out: *mut f32,
    co: usize,
    first: usize,
    round: bool,
) {
    let (wp, plane) = (g.w + 2, (g.h + 2) * (g.w + 2));
    let taps = g.ci.div_ceil(2) * 9;
    let mut at = [0usize; N];
    let mut dst = [0usize; N];
    for i in 0..N {
        let pix = (first + i) * D::W;
        let (y, x) = (pix / g.w, pix % g.w);
        at[i] = y * wp + x;
        dst[i] = pix;
    }
    // SAFETY: the caller's contract: the CPU has `D`'s features.
    let zero = unsafe { D::zero() };
    let mut acc = [[zero; N]; RR];
    let b = buf.as_ptr();
    // SAFETY: `co < g.co`: the start of this tile's weights, inside `packed`.
    let mut w = unsafe { packed.as_ptr().add(co * taps) };
    for c in 0..g.ci.div_ceil(2) {
        // SAFETY: `c < cp`: the start of pair plane `c`, inside `buf`.
        let base = unsafe { b.add(c * plane * 2) };
        for ky in 0..3 {
            for kx in 0..3 {
                let off = ky * wp + kx;
                // SAFETY: the caller's contract: the CPU has `D`'s features; `W` pairs of row
                // `y + ky`, columns `x + kx ..` (with `SPLIT`, `W/2` of that row and `W/2` of
                // the next), inside `buf` (see `# Safety`).
                let v: [D::Pairs; N] = std::array::from_fn(|i| unsafe {
                    let p = base.add((at[i] + off) * 2);
                    if SPLIT { D::pairs_halves(p, p.add(wp * 2)) } else { D::pairs(p) }
                });
                for r in 0..RR {
                    // SAFETY: `w` walks this tile's `cp * 9 * RR` weight pairs, `r < RR`.
                    let k = unsafe { D::splat(w.add(r).cast::<u16>()) };
                    for i in 0..N {
                        // SAFETY: the caller's contract: the CPU has `D`'s features.
                        acc[r][i] = unsafe { D::dot(acc[r][i], v[i], k) };
                    }
                }
                // SAFETY: at most one past this tile's weights, inside `packed` or at its end.
                w = unsafe { w.add(RR) };
            }
        }
    }
    for r in 0..RR {
        let row = (co + r) * g.h * g.w;
        for i in 0..N {
            // SAFETY: channel `co + r < g.co`, pixels `dst[i] .. dst[i] + W <= h * w`.
            unsafe {
                if round {
                    D::store_bf16(out.add(row + dst[i]), acc[r][i]);
                } else {
                    D::store(out.add(row + dst[i]), acc[r][i]);
                }
            }
        }
    }
}

/// Adds one image's weight gradient onto `dwt`, band of rows by band of rows, as
/// `direct3x3::weight_grad` but over pixel pairs.
///
/// # Safety
///
/// The CPU has `D`'s features; `g` is a shape `direct3x3::stride_one_ok` accepts with `co` a multiple
/// of `D::W`; `buf` holds the bordered image in bf16 (`ci * (h+2) * (w+2)`, [`border_plain`]),
/// `dyt` the output gradient as pixel pairs (`h * w * co`), `dwt` holds `ci * 9 * co` values.
#[inline(always)]
unsafe fn weight_grad<D: Dot>(g: &Geometry, buf: &[u16], dyt: &[u16], dwt: &mut [f32]) {
    let (wp, plane) = (g.w + 2, (g.h + 2) * (g.w + 2));
    let offs: Vec<usize> = (0..g.ci * 9).map(|k| (k / 9) * plane + (k % 9 / 3) * wp + k % 3).collect();
    let band = (128 / g.w).max(1);
    let mut y0 = 0;
    while y0 < g.h {
        let y1 = (y0 + band).min(g.h);
        for k in (0..g.ci * 9).step_by(TAPS) {
            let taps = (g.ci * 9 - k).min(TAPS);
            for o in (0..g.co).step_by(2 * D::W) {
                let offs = &offs[k..k + taps];
                let two = g.co - o >= 2 * D::W;
                // SAFETY: the caller's contract is `grad_tile`'s, with `y1 <= h`, `offs` the
                // `taps` (3, 6, 9 or 12: `ci * 9` and `TAPS` are multiples of 3) offsets from tap
                // `k`, `k + taps <= ci * 9`, and `co - o` at least `2W` or exactly `W`.
                unsafe {
                    match (taps, two) {
                        (12, true) => grad_tile::<D, 12, 2>(g, buf, dyt, dwt, offs, k, o, y0, y1),
                        (12, false) => grad_tile::<D, 12, 1>(g, buf, dyt, dwt, offs, k, o, y0, y1),
                        (9, true) => grad_tile::<D, 9, 2>(g, buf, dyt, dwt, offs, k, o, y0, y1),
                        (9, false) => grad_tile::<D, 9, 1>(g, buf, dyt, dwt, offs, k, o, y0, y1),
                        (6, true) => grad_tile::<D, 6, 2>(g, buf, dyt, dwt, offs, k, o, y0, y1),
                        (6, false) => grad_tile::<D, 6, 1>(g, buf, dyt, dwt, offs, k, o, y0, y1),
                        (3, true) => grad_tile::<D, 3, 2>(g, buf, dyt, dwt, offs, k, o, y0, y1),
                        (3, false) => grad_tile::<D, 3, 1>(g, buf, dyt, dwt, offs, k, o, y0, y1),
                        (t, _) => unreachable!("weight-gradient tile of {t} taps"),
                    }
                }
            }
        }
        y0 = y1;
    }
}

/// `dwt[k + t][o .. o + W*V] += sum over pixel pairs of rows y0..y1 of the pair products`, for
/// `t < T`.
///
/// # Safety
///
/// What [`weight_grad`] requires, and `offs.len() == T` with `offs[t]` the bordered offset of
/// tap `k + t`, `k + T <= ci * 9`, `o + W * V <= co`, `y1 <= h`. Pixel pair (y, x), (y, x + 1)
/// (`x` even) reads bordered positions `offs[t] + y * wp + x ..+2`: inside `buf`, as in
/// `direct3x3::grad_tile`; `dyt[((y * w + x) / 2 * co + o) * 2 ..]`, `2 * W * V` values, and
/// `dwt[(k + t) * co + o ..]`, `W * V` values: inside theirs.
#[inline(always)]
#[allow(clippy::too_many_arguments, clippy::needless_range_loop)]
unsafe fn grad_tile<D: Dot, const T: usize, const V: usize>(
    g: &Geometry,
    buf: &[u16],
    dyt: &[u16],
    dwt: &mut [f32],
    offs: &[usize],
    k: usize,
    o: usize,
    y0: usize,
    y1: usize,
) {
    let wp = g.w + 2;
    let (b, d, dw) = (buf.as_ptr(), dyt.as_ptr(), dwt.as_mut_ptr());
    // SAFETY: the caller's contract: the CPU has `D`'s features.
    let zero = unsafe { D::zero() };
    let mut acc = [[zero; V]; T];
    for t in 0..T {
        for v in 0..V {
            // SAFETY: row `k + t < ci * 9` of `dwt`, columns `o + Wv .. + W <= co`.
            acc[t][v] = unsafe { D::load(dw.add((k + t) * g.co + o + D::W * v)) };
        }
    }
    let mut at = [0usize; T];
    at.copy_from_slice(offs);
    for y in y0..y1 {
        // SAFETY: `y < h`: bordered row `y` of channel 0, inside `buf`.
        let row = unsafe { b.add(y * wp) };
        for x in (0..g.w).step_by(2) {
            let q = (y * g.w + x) / 2;
            // SAFETY: pixel pair `q`'s `dy` for channels `o + Wv ..`, `2W` values per vector,
            // inside `dyt`; the caller's contract: the CPU has `D`'s features.
            let dv: [D::Pairs; V] = std::array::from_fn(|v| unsafe { D::pairs(d.add((q * g.co + o + D::W * v) * 2)) });
            for t in 0..T {
                // SAFETY: tap `k + t`'s inputs at pixels (y, x), (y, x + 1), inside `buf`.
                let bv = unsafe { D::splat(row.add(at[t] + x)) };
                for v in 0..V {
                    // SAFETY: the caller's contract: the CPU has `D`'s features.
                    acc[t][v] = unsafe { D::dot(acc[t][v], dv[v], bv) };
                }
            }
        }
    }
    for t in 0..T {
        for v in 0..V {
            // SAFETY: the same `dwt` values as loaded above.
            unsafe { D::store(dw.add((k + t) * g.co + o + D::W * v), acc[t][v]) };
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn round(v: &[f32]) -> Vec<f32> {
        v.iter().map(|&x| from_bf16(to_bf16(x))).collect()
    }

    /// Every build, and the ones this CPU does not run named once.
    fn builds() -> Vec<Build> {
        let all = [Build::Hw16, Build::Hw8, Build::Emulated16, Build::Emulated8];
        for b in all.iter().filter(|b| !b.runs_here()) {
            eprintln!("SKIP: this CPU does not run the {b:?} bf16 build (no AVX512-BF16 + AVX-512VL)");
        }
        all.into_iter().filter(|b| b.runs_here()).collect()
    }

    #[test]
    fn rounds_to_nearest_even() {
        assert_eq!(to_bf16(1.0), 0x3f80);
        // Ties: 1 + 2^-8 lies halfway between 0x3f80 and 0x3f81 (goes to the even one),
        // 1 + 3 * 2^-8 between 0x3f81 and 0x3f82.
        assert_eq!(to_bf16(f32::from_bits(0x3f80_8000)), 0x3f80);
        assert_eq!(to_bf16(f32::from_bits(0x3f81_8000)), 0x3f82);
        assert_eq!(to_bf16(f32::from_bits(0x3f80_8001)), 0x3f81);
        assert_eq!(to_bf16(-2.5), 0xc020);
        assert!(from_bf16(to_bf16(f32::NAN)).is_nan());
        assert_eq!(from_bf16(to_bf16(f32::INFINITY)), f32::INFINITY);
        for v in [0.1f32, -3.7, 1e-3, 12345.0] {
            let r = from_bf16(to_bf16(v));
            assert!((r - v).abs() <= v.abs() / 256.0, "{v} -> {r}");
        }
    }

    #[test]
    fn every_build_equals_the_definition_on_bf16_values() {
        let builds = builds();
        let (mut checked, mut split) = (0, 0);
        // (ci, h, w, co): odd channel counts (a channel paired with zeros), every tile tail of
        // 12, widths of one and several runs at 8 and 16 lanes, 8-wide planes of an even number
        // of rows (split runs at 16 lanes) and of an odd one (8 lanes only).
        for (ci, h, w, co) in [
            (3, 32, 32, 16),
            (16, 16, 16, 16),
            (32, 8, 8, 32),
            (5, 3, 8, 4),
            (1, 2, 16, 26),
            (7, 4, 24, 22),
            (4, 3, 48, 2),
            (7, 6, 8, 14),
            (3, 2, 8, 12),
        ] {
            let g = Geometry { n: 2, ci, h, w, co, kh: 3, kw: 3, sh: 1, sw: 1, ph: 1, pw: 1 };
            let x: Vec<f32> = (0..2 * ci * h * w).map(|i| ((i * 37 % 101) as f32 - 50.3) / 25.7).collect();
            let wt: Vec<f32> = (0..co * ci * 9).map(|i| ((i * 53 % 89) as f32 - 44.1) / 40.3).collect();
            let (xr, wr) = (round(&x), round(&wt));
            let mut want = vec![0f64; 2 * co * h * w];
            for n in 0..2 {
                for o in 0..co {
                    for y in 0..h {
                        for xx in 0..w {
                            let mut s = 0f64;
                            for c in 0..ci {
                                for t in 0..9 {
                                    let (iy, ix) = ((y + t / 3) as isize - 1, (xx + t % 3) as isize - 1);
                                    if iy >= 0 && ix >= 0 && (iy as usize) < h && (ix as usize) < w {
                                        s += wr[(o * ci + c) * 9 + t] as f64
                                            * xr[((n * ci + c) * h + iy as usize) * w + ix as usize] as f64;
                                    }
                                }
                            }
                            want[((n * co + o) * h + y) * w + xx] = s;
                        }
                    }
                }
            }
            let scale = want.iter().fold(0f64, |m, v| m.max(v.abs()));
            let mut outs: Vec<(Build, Vec<f32>)> = Vec::new();
            for &b in builds.iter().filter(|b| b.fits(w, h)) {
                split += usize::from(2 * w == b.lanes());
                let out = forward_with(b, &g, &x, &wt, false);
                // Rounding as the outputs are stored gives the bits of rounding them afterwards.
                assert_eq!(forward_with(b, &g, &x, &wt, true), round(&out), "{b:?} {g:?}: rounded outputs");
                for (i, (a, e)) in out.iter().zip(&want).enumerate() {
                    // fp32 sums of exact products: a few roundings of the running sum.
                    assert!((*a as f64 - e).abs() <= 1e-5 * scale, "{b:?} {g:?} at {i}: {a} vs {e}");
                }
                outs.push((b, out));
                checked += 1;
            }
            // The hardware and the emulation sum in the same order: equal but for denormals
            // (none here), checked to 1e-6 of the scale in case a CPU rounds its pair sum once.
            for (b, out) in &outs[1..] {
                for (a, c) in outs[0].1.iter().zip(out) {
                    assert!((a - c).abs() as f64 <= 1e-6 * scale, "{b:?} vs {:?} on {g:?}: {a} vs {c}", outs[0].0);
                }
            }
        }
        // Per pair of builds that runs here (the emulated pair always, the hardware pair where
        // the CPU has AVX512-BF16 and AVX-512VL): 7 shapes at 16 lanes (3 of them split runs)
        // and 9 at 8 lanes.
        let hw = usize::from(hardware());
        assert_eq!((checked, split), (16 * (1 + hw), 3 * (1 + hw)), "runs, split runs");
    }

    #[test]
    #[should_panic(expected = "runs do not tile 3x8 planes")]
    fn sixteen_accumulators_refuse_an_8_wide_plane_of_an_odd_number_of_rows() {
        let g = Geometry { n: 1, ci: 2, h: 3, w: 8, co: 2, kh: 3, kw: 3, sh: 1, sw: 1, ph: 1, pw: 1 };
        forward_with(Build::Emulated16, &g, &[0.5; 2 * 3 * 8], &[0.25; 2 * 2 * 9], false);
    }

    #[test]
    fn each_plane_picks_sixteen_accumulators_where_its_runs_fit() {
        assert_eq!(Build::pick_plane(32, 32), Build::Hw16);
        assert_eq!(Build::pick_plane(8, 8), Build::Hw16);
        assert_eq!(Build::pick_plane(8, 3), Build::Hw8);
        assert_eq!(Build::pick_plane(24, 4), Build::Hw8);
        assert_eq!(Build::pick(8), Build::Hw8);
        assert!(!Build::Hw16.fits(0, 2) && !Build::Hw16.fits(4, 2) && !Build::Emulated16.fits(8, 3));
        assert!(Build::Emulated16.fits(8, 2) && Build::Hw8.fits(8, 1) && !Build::Emulated8.fits(4, 2));
    }

    #[test]
    fn every_build_gives_the_weight_gradient_of_the_definition_on_bf16_values() {
        let builds = builds();
        let mut checked = 0;
        for (ci, h, w, co) in [(16, 32, 32, 16), (32, 8, 8, 32), (3, 4, 16, 48), (5, 3, 8, 8), (2, 40, 8, 24)] {
            let g = Geometry { n: 1, ci, h, w, co, kh: 3, kw: 3, sh: 1, sw: 1, ph: 1, pw: 1 };
            let x: Vec<f32> = (0..ci * h * w).map(|i| ((i * 37 % 101) as f32 - 50.3) / 25.7).collect();
            let dy: Vec<f32> = (0..co * h * w).map(|i| ((i * 53 % 89) as f32 - 44.1) / 40.3).collect();
            let (xr, dyr) = (round(&x), round(&dy));
            let start: Vec<f32> = (0..co * ci * 9).map(|i| (i % 7) as f32).collect();
            let mut want: Vec<f64> = start.iter().map(|&v| v as f64).collect();
            let mut scale = 1f64;
            for o in 0..co {
                for c in 0..ci {
                    for t in 0..9 {
                        let mut s = 0f64;
                        for y in 0..h {
                            for xx in 0..w {
                                let (iy, ix) = ((y + t / 3) as isize - 1, (xx + t % 3) as isize - 1);
                                if iy >= 0 && ix >= 0 && (iy as usize) < h && (ix as usize) < w {
                                    s += dyr[(o * h + y) * w + xx] as f64
                                        * xr[(c * h + iy as usize) * w + ix as usize] as f64;
                                }
                            }
                        }
                        want[(c * 9 + t) * co + o] += s;
                        scale = scale.max(s.abs());
                    }
                }
            }
            for &b in builds.iter().filter(|b| co.is_multiple_of(b.lanes())) {
                let mut dwt = start.clone();
                let (mut buf, mut dyt) = (Vec::new(), Vec::new());
                weight_grad_image_with(b, &g, &x, &dy, &mut dwt, &mut buf, &mut dyt);
                for (i, (a, e)) in dwt.iter().zip(&want).enumerate() {
                    assert!((*a as f64 - e).abs() <= 1e-5 * scale, "{b:?} {g:?} at {i}: {a} vs {e}");
                }
                checked += 1;
            }
        }
        assert!(checked >= 5 + 3, "{checked} runs");
    }
}
