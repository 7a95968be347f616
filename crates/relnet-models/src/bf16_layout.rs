//! fp32 values rounded to bf16 as they are copied into the layouts the bf16 kernels read
//! (`direct_bf16`): a row as bf16 values, two rows as interleaved pairs, and a `[co][p]` map as
//! pixel pairs `[p/2][co][2]` (a transposition).
//!
//! Written once in plain Rust (the definition, one `to_bf16` a value) and once on AVX-512F, 16
//! values an instruction, the transposition in 16 x 16 blocks of registers; the two give the
//! same bits (tested on ties, NaNs, infinities, denormals and every tail length). The hardware
//! bf16 kernels run only on CPUs with AVX-512F, so they always get the vector build; the plain
//! one serves the emulated builds (the tests) and `RELNET_SIMD` capped below AVX-512. Before
//! these, the layouts took 16% of a ResNet-32 bf16 step (docs/performance.md).
//!
//! Also the rounding of the emulated bf16 convolution (`fastconv::forward_emulated`: the fp32
//! kernels on bf16-rounded values, which bf16 runs where `vdpbf16ps` does not pay): fp32 values
//! rounded to bf16 and kept as fp32 ([`round_f32_into`], [`round_f32_in_place`]), on AVX-512F,
//! AVX2 or plain, the same bits as `fastconv::round_value`. Scalar, that rounding took more of
//! the step than the copies it rides on (docs/performance.md, 2026-12-05).

use std::mem::MaybeUninit;
use std::ops::Range;

use super::direct_bf16::to_bf16;

/// Whether the AVX-512F build runs here (`RELNET_SIMD` not capping below it). Read once.
fn wide() -> bool {
    super::simd::Isa::detect() == Some(super::simd::Isa::Avx512)
}

/// `dst[i] = to_bf16(src[i])`.
///
/// # Panics
///
/// Unless the lengths are equal.
pub(crate) fn round_row(src: &[f32], dst: &mut [u16]) {
    assert_eq!(src.len(), dst.len(), "round_row: {} values into {}", src.len(), dst.len());
    #[cfg(target_arch = "x86_64")]
    if wide() {
        // SAFETY: `wide` found AVX-512F; `src` holds `len` values to read and `dst` as many to
        // write (the assert), and the borrows keep anything else from touching `dst`.
        unsafe { x86::round_row(src.as_ptr(), dst.as_mut_ptr(), src.len()) };
        return;
    }
    plain_round_row(src, dst);
}

/// `dst[i] = round_value(src[i])` (`fastconv::round_value`: bf16 rounding, kept as an f32) for
/// every `i`: each value of `dst` is written. The emulated bf16 numerics' rounded copies, 16
/// values an instruction on AVX-512F, 8 on AVX2, one at a time elsewhere: the set the direct
/// kernels use (`simd::Isa::detect`: `RELNET_SIMD` caps it, and with `RELNET_DIRECT_CONV=off`
/// the rounding is plain too). The same bits every way.
///
/// # Panics
///
/// Unless the lengths are equal.
pub(crate) fn round_f32_into(src: &[f32], dst: &mut [MaybeUninit<f32>]) {
    assert_eq!(src.len(), dst.len(), "round_f32_into: {} values into {}", src.len(), dst.len());
    // SAFETY: `src` holds `len` values to read and `dst` as many to write (the assert); the
    // borrows keep them apart and keep anything else from touching `dst`.
    unsafe { round_f32_raw(src.as_ptr(), dst.as_mut_ptr().cast(), src.len()) }
}

/// Each value of `v` rounded as [`round_f32_into`] rounds it, in place.
pub(crate) fn round_f32_in_place(v: &mut [f32]) {
    let p = v.as_mut_ptr();
    // SAFETY: `v` holds `len` values, read and written at the same positions (each read before
    // its write), borrowed mutably.
    unsafe { round_f32_raw(p, p, v.len()) }
}

/// [`round_f32_into`] on pointers, the widest way this CPU runs.
///
/// # Safety
///
/// `src` is valid for `n` reads and `dst` for `n` writes that nothing else accesses during the
/// call; `dst` is `src` (in place) or the two ranges do not overlap.
unsafe fn round_f32_raw(src: *const f32, dst: *mut f32, n: usize) {
    #[cfg(target_arch = "x86_64")]
    match super::simd::Isa::detect() {
        // SAFETY: the set was detected; the caller's contract.
        Some(super::simd::Isa::Avx512) => return unsafe { x86::round_f32_avx512(src, dst, n) },
        // SAFETY: as above.
        Some(super::simd::Isa::Avx2) => return unsafe { x86::round_f32_avx2(src, dst, n) },
        _ => {}
    }
    // SAFETY: the caller's contract.
    unsafe { plain_round_f32(src, dst, 0, n) }
}

/// Values `from .. n` of [`round_f32_raw`], one at a time.
///
/// # Safety
///
/// As [`round_f32_raw`].
unsafe fn plain_round_f32(src: *const f32, dst: *mut f32, from: usize, n: usize) {
    for i in from..n {
        // SAFETY: `i < n`: inside both ranges (the caller's contract); each value read before
        // its write.
        unsafe { dst.add(i).write(super::fastconv::round_value(src.add(i).read())) };
    }
}

fn plain_round_row(src: &[f32], dst: &mut [u16]) {
    for (d, &v) in dst.iter_mut().zip(src) {
        *d = to_bf16(v);
    }
}

/// `dst[2i] = to_bf16(a[i])`, `dst[2i + 1] = to_bf16(b[i])` (0 without `b`): two rows as
/// interleaved pairs, `a` in the low half of each 32-bit pair.
///
/// # Panics
///
/// Unless `dst` holds twice `a`'s values and `b`, where given, as many as `a`.
pub(crate) fn pair_row(a: &[f32], b: Option<&[f32]>, dst: &mut [u16]) {
    assert_eq!(dst.len(), 2 * a.len(), "pair_row: {} values into {} pairs", a.len(), dst.len());
    if let Some(b) = b {
        assert_eq!(a.len(), b.len(), "pair_row: rows of {} and {} values", a.len(), b.len());
    }
    #[cfg(target_arch = "x86_64")]
    if wide() {
        // SAFETY: AVX-512F (`wide`); `a` (and `b`) hold `len` values, `dst` `2 * len` (the
        // asserts), borrowed mutably.
        unsafe { x86::pair_row(a.as_ptr(), b.map(<[f32]>::as_ptr), dst.as_mut_ptr(), a.len()) };
        return;
    }
    plain_pair_row(a, b, dst);
}

fn plain_pair_row(a: &[f32], b: Option<&[f32]>, dst: &mut [u16]) {
    for (i, d) in dst.chunks_exact_mut(2).enumerate() {
        d[0] = to_bf16(a[i]);
        d[1] = b.map_or(0, |b| to_bf16(b[i]));
    }
}

/// `dyt[(q * co + o) * 2 + e] = to_bf16(dy[o * p + 2q + e])`: the map `dy` (`[co][p]`) as pixel
/// pairs, `[p/2][co][2]`.
///
/// # Panics
///
/// Unless `p` is even and `dy` and `dyt` hold `co * p` values.
pub(crate) fn pixel_pairs(dy: &[f32], co: usize, p: usize, dyt: &mut [u16]) {
    assert!(p.is_multiple_of(2), "pixel_pairs: an odd count of pixels, {p}");
    let len = co.checked_mul(p).expect("pixel_pairs: co * p overflows");
    assert!(dy.len() == len && dyt.len() == len, "pixel_pairs: {} and {} values for {co} x {p}", dy.len(), dyt.len());
    #[cfg(target_arch = "x86_64")]
    if wide() {
        // SAFETY: AVX-512F (`wide`); `p` even and both slices `co * p` long (the asserts),
        // `dyt` borrowed mutably.
        unsafe { x86::pixel_pairs(dy.as_ptr(), co, p, dyt.as_mut_ptr()) };
        return;
    }
    plain_pixel_pairs(dy, co, p, dyt, 0..co, 0..p / 2);
}

/// [`pixel_pairs`] for the channels `os` and the pixel pairs `qs` only.
fn plain_pixel_pairs(dy: &[f32], co: usize, p: usize, dyt: &mut [u16], os: Range<usize>, qs: Range<usize>) {
    // In blocks of 32 pixel pairs, so the block of `dyt` being written stays in L1 while every
    // channel's row of `dy` is read in order.
    for qb in qs.clone().step_by(32) {
        let qe = (qb + 32).min(qs.end);
        for o in os.clone() {
            for q in qb..qe {
                let at = (q * co + o) * 2;
                dyt[at] = to_bf16(dy[o * p + 2 * q]);
                dyt[at + 1] = to_bf16(dy[o * p + 2 * q + 1]);
            }
        }
    }
}

#[cfg(target_arch = "x86_64")]
pub(crate) mod x86 {
    use std::arch::x86_64::*;

    /// Each lane of `v` rounded to bf16 as `to_bf16` rounds it (to nearest even; a NaN made
    /// quiet), the bf16 bits in the lane's high half; the low half is not cleared.
    #[target_feature(enable = "avx512f")]
    #[inline]
    pub(crate) fn rounded16(v: __m512) -> __m512i {
        let b = _mm512_castps_si512(v);
        let lsb = _mm512_and_si512(_mm512_srli_epi32::<16>(b), _mm512_set1_epi32(1));
        let r = _mm512_add_epi32(b, _mm512_add_epi32(lsb, _mm512_set1_epi32(0x7fff)));
        let nan = _mm512_cmp_ps_mask::<_CMP_UNORD_Q>(v, v);
        _mm512_mask_blend_epi32(nan, r, _mm512_or_si512(b, _mm512_set1_epi32(0x0040_0000)))
    }

    /// [`rounded16`] on 8 lanes.
    #[target_feature(enable = "avx2")]
    #[inline]
    pub(crate) fn rounded8(v: __m256) -> __m256i {
        let b = _mm256_castps_si256(v);
        let lsb = _mm256_and_si256(_mm256_srli_epi32::<16>(b), _mm256_set1_epi32(1));
        let r = _mm256_add_epi32(b, _mm256_add_epi32(lsb, _mm256_set1_epi32(0x7fff)));
        let nan = _mm256_castps_si256(_mm256_cmp_ps::<_CMP_UNORD_Q>(v, v));
        _mm256_blendv_epi8(r, _mm256_or_si256(b, _mm256_set1_epi32(0x0040_0000)), nan)
    }

    /// The first `n` lanes of 16 (all of them from 16 on).
    fn first(n: usize) -> __mmask16 {
        if n >= 16 { 0xffff } else { ((1u32 << n) - 1) as __mmask16 }
    }

    /// [`super::round_f32_raw`] on AVX-512F: 16 values an instruction, the tail masked.
    ///
    /// # Safety
    ///
    /// The CPU has AVX-512F; [`super::round_f32_raw`]'s contract.
    #[target_feature(enable = "avx512f")]
    pub(super) unsafe fn round_f32_avx512(src: *const f32, dst: *mut f32, n: usize) {
        let high = _mm512_set1_epi32(0xffff_0000u32 as i32);
        for i in (0..n).step_by(16) {
            let k = first(n - i);
            // SAFETY: lanes `i .. i + min(16, n - i)` only (the mask), inside `src`.
            let v = unsafe { _mm512_maskz_loadu_ps(k, src.add(i)) };
            let r = _mm512_castsi512_ps(_mm512_and_si512(rounded16(v), high));
            // SAFETY: the same lanes of `dst`.
            unsafe { _mm512_mask_storeu_ps(dst.add(i), k, r) };
        }
    }

    /// [`super::round_f32_raw`] on AVX2: 8 values an instruction, the tail one at a time.
    ///
    /// # Safety
    ///
    /// The CPU has AVX2; [`super::round_f32_raw`]'s contract.
    #[target_feature(enable = "avx2")]
    pub(super) unsafe fn round_f32_avx2(src: *const f32, dst: *mut f32, n: usize) {
        let high = _mm256_set1_epi32(0xffff_0000u32 as i32);
        let body = n - n % 8;
        for i in (0..body).step_by(8) {
            // SAFETY: values `i .. i + 8 <= n` of `src` and `dst`.
            unsafe {
                let r = _mm256_and_si256(rounded8(_mm256_loadu_ps(src.add(i))), high);
                _mm256_storeu_ps(dst.add(i), _mm256_castsi256_ps(r));
            }
        }
        // SAFETY: the caller's contract, values `body .. n`.
        unsafe { super::plain_round_f32(src, dst, body, n) }
    }

    /// [`super::round_row`] of `n` values.
    ///
    /// # Safety
    ///
    /// The CPU has AVX-512F; `src` is valid for `n` reads and `dst` for `n` writes that nothing
    /// else accesses during the call.
    #[target_feature(enable = "avx512f")]
    pub(super) unsafe fn round_row(src: *const f32, dst: *mut u16, n: usize) {
        for i in (0..n).step_by(16) {
            let k = first(n - i);
            // SAFETY: lanes `i .. i + min(16, n - i)` only (the mask), inside `src`.
            let v = unsafe { _mm512_maskz_loadu_ps(k, src.add(i)) };
            let h = _mm512_srli_epi32::<16>(rounded16(v));
            // SAFETY: the same lanes of `dst`, each written as its low 16 bits.
            unsafe { _mm512_mask_cvtepi32_storeu_epi16(dst.add(i).cast(), k, h) };
        }
    }

    /// [`super::pair_row`] of `n` values a row.
    ///
    /// # Safety
    ///
    /// The CPU has AVX-512F; `a` (and `b`) are valid for `n` reads and `dst` for `2n` writes
    /// that nothing else accesses during the call.
    #[target_feature(enable = "avx512f")]
    pub(super) unsafe fn pair_row(a: *const f32, b: Option<*const f32>, dst: *mut u16, n: usize) {
        let high = _mm512_set1_epi32(0xffff_0000u32 as i32);
        for i in (0..n).step_by(16) {
            let k = first(n - i);
            // SAFETY: lanes `i .. i + min(16, n - i)` only (the mask), inside `a`.
            let lo = _mm512_srli_epi32::<16>(rounded16(unsafe { _mm512_maskz_loadu_ps(k, a.add(i)) }));
            let word = match b {
                // SAFETY: the same lanes of `b`.
                Some(b) => _mm512_or_si512(
                    lo,
                    _mm512_and_si512(rounded16(unsafe { _mm512_maskz_loadu_ps(k, b.add(i)) }), high),
                ),
                None => lo,
            };
            // SAFETY: pairs `i ..` of the same lanes: u16 values `2i .. 2i + 2 min(16, n - i)`
            // of `dst`, written as 32-bit words (unaligned).
            unsafe { _mm512_mask_storeu_epi32(dst.add(2 * i).cast(), k, word) };
        }
    }

    /// 16 rows of 16 words transposed: lane `j` of row `r` becomes lane `r` of row `j`.
    #[target_feature(enable = "avx512f")]
    #[inline]
    fn transpose16(r: [__m512i; 16]) -> [__m512i; 16] {
        // Pairs of rows interleaved within each 128-bit lane `L`: `t[2i]` holds columns 4L,
        // 4L + 1 of rows 2i, 2i + 1, `t[2i + 1]` columns 4L + 2, 4L + 3.
        let t: [__m512i; 16] = std::array::from_fn(|i| {
            let (a, b) = (r[i & !1], r[i | 1]);
            if i % 2 == 0 { _mm512_unpacklo_epi32(a, b) } else { _mm512_unpackhi_epi32(a, b) }
        });
        // `u[4i + k]`, lane `L`: column 4L + k of rows 4i .. 4i + 4.
        let u: [__m512i; 16] = std::array::from_fn(|j| {
            let (i, k) = (j / 4, j % 4);
            let (a, b) = (t[4 * i + k / 2], t[4 * i + 2 + k / 2]);
            if k % 2 == 0 { _mm512_unpacklo_epi64(a, b) } else { _mm512_unpackhi_epi64(a, b) }
        });
        // Column c = 4L + k gathers lane L of u[k], u[4 + k], u[8 + k], u[12 + k].
        let mut out = [_mm512_setzero_si512(); 16];
        for k in 0..4 {
            let even = _mm512_shuffle_i32x4::<0x88>(u[k], u[4 + k]);
            let odd = _mm512_shuffle_i32x4::<0xdd>(u[k], u[4 + k]);
            let even2 = _mm512_shuffle_i32x4::<0x88>(u[8 + k], u[12 + k]);
            let odd2 = _mm512_shuffle_i32x4::<0xdd>(u[8 + k], u[12 + k]);
            out[k] = _mm512_shuffle_i32x4::<0x88>(even, even2);
            out[8 + k] = _mm512_shuffle_i32x4::<0xdd>(even, even2);
            out[4 + k] = _mm512_shuffle_i32x4::<0x88>(odd, odd2);
            out[12 + k] = _mm512_shuffle_i32x4::<0xdd>(odd, odd2);
        }
        out
    }

    /// [`super::pixel_pairs`]: blocks of 16 channels by 16 pixel pairs in registers, the rest
    /// (channels past the last full block of 16, pixel pairs past the last full block) plain.
    ///
    /// # Safety
    ///
    /// The CPU has AVX-512F; `p` is even; `dy` points to `co * p` initialised values that nothing
    /// writes during the call, and `dyt` to `co * p` initialised values that nothing else reads
    /// or writes during the call (the function views both as slices).
    #[target_feature(enable = "avx512f")]
    pub(super) unsafe fn pixel_pairs(dy: *const f32, co: usize, p: usize, dyt: *mut u16) {
        let (pairs, high) = (p / 2, _mm512_set1_epi32(0xffff_0000u32 as i32));
        let even = _mm512_setr_epi32(0, 2, 4, 6, 8, 10, 12, 14, 16, 18, 20, 22, 24, 26, 28, 30);
        let odd = _mm512_setr_epi32(1, 3, 5, 7, 9, 11, 13, 15, 17, 19, 21, 23, 25, 27, 29, 31);
        let (o16, q16) = (co - co % 16, pairs - pairs % 16);
        for o0 in (0..o16).step_by(16) {
            for q0 in (0..q16).step_by(16) {
                // Row r: the 16 pixel pairs from q0 of channel o0 + r, as 32-bit pairs.
                let rows: [__m512i; 16] = std::array::from_fn(|r| {
                    // SAFETY: pixels `2 q0 .. 2 q0 + 32 <= p` of channel `o0 + r < co`, inside
                    // `dy`.
                    let src = unsafe { dy.add((o0 + r) * p + 2 * q0) };
                    // SAFETY: as above.
                    let (a, b) = unsafe { (rounded16(_mm512_loadu_ps(src)), rounded16(_mm512_loadu_ps(src.add(16)))) };
                    let lo = _mm512_permutex2var_epi32(a, even, b);
                    let hi = _mm512_permutex2var_epi32(a, odd, b);
                    _mm512_or_si512(_mm512_srli_epi32::<16>(lo), _mm512_and_si512(hi, high))
                });
                for (j, col) in transpose16(rows).into_iter().enumerate() {
                    // SAFETY: words `(q0 + j) * co + o0 ..` `+ 16` with `q0 + j < p / 2` and
                    // `o0 + 16 <= co`: u16 values inside `dyt`'s `co * p` (unaligned store).
                    unsafe { _mm512_storeu_si512(dyt.add(((q0 + j) * co + o0) * 2).cast(), col) };
                }
            }
        }
        // The remainder: pixel pairs from q16 in the full channel blocks, then every pixel pair
        // of the channels from o16.
        // SAFETY: the caller's contract: `co * p` values each, `dyt` exclusively ours.
        let (dy, dyt) =
            unsafe { (std::slice::from_raw_parts(dy, co * p), std::slice::from_raw_parts_mut(dyt, co * p)) };
        super::plain_pixel_pairs(dy, co, p, dyt, 0..o16, q16..pairs);
        super::plain_pixel_pairs(dy, co, p, dyt, o16..co, 0..pairs);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Values that exercise the rounding: ordinary ones, exact ties (to even, both ways), NaNs
    /// (signalling and quiet), infinities, zeros, denormals and the largest finite values.
    fn awkward(len: usize, seed: u32) -> Vec<f32> {
        let special = [
            f32::from_bits(0x3f80_8000),
            f32::from_bits(0x3f81_8000),
            f32::from_bits(0xbf80_8001),
            f32::NAN,
            f32::from_bits(0x7f80_0001),
            -f32::NAN,
            f32::INFINITY,
            f32::NEG_INFINITY,
            0.0,
            -0.0,
            f32::from_bits(0x0000_8000),
            f32::from_bits(0x007f_ffff),
            f32::MAX,
            f32::MIN,
            f32::from_bits(0x7f7f_8000),
            // NaNs whose plain rounding would carry into the exponent or wrap.
            f32::from_bits(0x7fff_ffff),
            f32::from_bits(0xffff_8000),
        ];
        let mut s = seed.wrapping_mul(2_654_435_761).max(1);
        (0..len)
            .map(|i| {
                s ^= s << 13;
                s ^= s >> 17;
                s ^= s << 5;
                if i % 5 == 0 { special[(s as usize / 5) % special.len()] } else { f32::from_bits(s) }
            })
            .collect()
    }

    fn skip_unless_wide() -> bool {
        if !wide() {
            eprintln!("SKIP: no AVX-512F here (or RELNET_SIMD caps it): the vector build is not run, the plain one is");
        }
        wide()
    }

    #[test]
    fn f32_rows_round_as_round_value_at_every_tail_and_in_place() {
        use crate::fastconv::round_value;
        let isa = crate::simd::Isa::detect();
        for n in (0..40).chain([64, 100]) {
            let src = awkward(n, n as u32 + 11);
            let want: Vec<u32> = src.iter().map(|&v| round_value(v).to_bits()).collect();
            // One guard value past the end: the masked stores must not touch it.
            let mut got = vec![MaybeUninit::new(7f32); n + 1];
            round_f32_into(&src, &mut got[..n]);
            // SAFETY: every value was initialised above (and overwritten by `round_f32_into`).
            let got: Vec<u32> = got.iter().map(|v| unsafe { v.assume_init() }.to_bits()).collect();
            assert_eq!(&got[..n], &want[..], "round_f32_into, {n} values ({isa:?})");
            assert_eq!(got[n], 7f32.to_bits(), "round_f32_into wrote past {n} values");
            let mut v = src.clone();
            round_f32_in_place(&mut v);
            assert_eq!(v.iter().map(|x| x.to_bits()).collect::<Vec<_>>(), want, "in place, {n} values ({isa:?})");
            let mut plain = src.clone();
            let p = plain.as_mut_ptr();
            // SAFETY: `plain` holds `n` values, rounded in place.
            unsafe { plain_round_f32(p, p, 0, n) };
            assert_eq!(plain.iter().map(|x| x.to_bits()).collect::<Vec<_>>(), want, "plain, {n} values");
            #[cfg(target_arch = "x86_64")]
            if crate::simd::Isa::hardware().is_some() {
                let mut v = src.clone();
                let p = v.as_mut_ptr();
                // SAFETY: the CPU has AVX2 (`hardware`); `v` holds `n` values, in place.
                unsafe { x86::round_f32_avx2(p, p, n) };
                assert_eq!(v.iter().map(|x| x.to_bits()).collect::<Vec<_>>(), want, "AVX2, {n} values");
            }
            #[cfg(target_arch = "x86_64")]
            if crate::simd::Isa::hardware() == Some(crate::simd::Isa::Avx512) {
                let mut v = src.clone();
                v.push(7.0);
                let p = v.as_mut_ptr();
                // SAFETY: the CPU has AVX-512F (`hardware`); `v` holds `n + 1` values, the first
                // `n` rounded in place.
                unsafe { x86::round_f32_avx512(p, p, n) };
                assert_eq!(v[..n].iter().map(|x| x.to_bits()).collect::<Vec<_>>(), want, "AVX-512, {n} values");
                assert_eq!(v[n], 7.0, "AVX-512 wrote past {n} values");
            }
        }
        if crate::simd::Isa::hardware() != Some(crate::simd::Isa::Avx512) {
            eprintln!("SKIP the AVX-512F rounding of f32 rows: this CPU has no AVX-512F");
        }
    }

    #[test]
    fn rows_round_as_to_bf16_at_every_tail() {
        let wide = skip_unless_wide();
        for n in (0..40).chain([64, 100]) {
            let src = awkward(n, n as u32 + 1);
            let mut want = vec![7u16; n];
            plain_round_row(&src, &mut want);
            for (i, (&w, &v)) in want.iter().zip(&src).enumerate() {
                assert_eq!(w, to_bf16(v), "plain at {i}");
            }
            // One guard value past the end: the masked stores must not touch it.
            let mut got = vec![7u16; n + 1];
            round_row(&src, &mut got[..n]);
            assert_eq!(&got[..n], &want[..], "round_row, {n} values (vector build: {wide})");
            assert_eq!(got[n], 7, "round_row wrote past {n} values");
        }
    }

    #[test]
    fn pairs_interleave_two_rows_or_one_and_zeros() {
        let wide = skip_unless_wide();
        for n in (0..40).chain([64, 100]) {
            let (a, b) = (awkward(n, 2 * n as u32 + 1), awkward(n, 3 * n as u32 + 7));
            for b in [Some(&b[..]), None] {
                let mut want = vec![7u16; 2 * n];
                plain_pair_row(&a, b, &mut want);
                for i in 0..n {
                    assert_eq!(want[2 * i], to_bf16(a[i]));
                    assert_eq!(want[2 * i + 1], b.map_or(0, |b| to_bf16(b[i])));
                }
                let mut got = vec![7u16; 2 * n + 2];
                pair_row(&a, b, &mut got[..2 * n]);
                assert_eq!(
                    &got[..2 * n],
                    &want[..],
                    "pair_row, {n} values, second row {} (vector: {wide})",
                    b.is_some()
                );
                assert_eq!(&got[2 * n..], &[7, 7], "pair_row wrote past {n} pairs");
            }
        }
    }

    #[test]
    fn pixel_pairs_transpose_every_block_and_remainder() {
        let wide = skip_unless_wide();
        // Full blocks, channel and pixel remainders, and both.
        for (co, p) in [(16, 32), (16, 1024), (32, 64), (64, 64), (8, 64), (24, 40), (17, 34), (3, 2), (48, 8), (1, 0)]
        {
            let dy = awkward(co * p, (co * 131 + p) as u32);
            let mut want = vec![7u16; co * p];
            plain_pixel_pairs(&dy, co, p, &mut want, 0..co, 0..p / 2);
            for q in 0..p / 2 {
                for o in 0..co {
                    for e in 0..2 {
                        assert_eq!(want[(q * co + o) * 2 + e], to_bf16(dy[o * p + 2 * q + e]), "plain {co} x {p}");
                    }
                }
            }
            // One guard value past the end: no store may touch it.
            let mut got = vec![7u16; co * p + 1];
            pixel_pairs(&dy, co, p, &mut got[..co * p]);
            assert_eq!(&got[..co * p], &want[..], "pixel_pairs {co} x {p} (vector: {wide})");
            assert_eq!(got[co * p], 7, "pixel_pairs wrote past {co} x {p}");
        }
    }
}
