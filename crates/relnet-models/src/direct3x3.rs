//! A direct 3x3, stride-1, padding-1 convolution for NCHW f32 on AVX2 + FMA: no patch matrix.
//!
//! Each image is copied once into a zero-bordered buffer (`[ci, h+2, w+2]`). Forward, a register
//! tile of [`R`] output channels by [`S`] runs of 8 output pixels (6 x 2: twelve 8-float
//! accumulators, with room in the 16 registers for the two runs and one weight) walks the
//! `ci * 9` taps, loading each run of 8 input pixels straight from the bordered image (an
//! unaligned load, no edge tests: the border is the padding) and broadcasting each tap's weight.
//! The weights are packed once per call, tile by tile, each tile as `[ci*9][rows]`, so a tile
//! reads them in order. The width is a multiple of 8, so a run never crosses an output row and
//! its 8 inputs are contiguous for every tap. The input gradient of a stride-1 convolution is
//! this same kernel on the flipped, transposed weights (`fastconv::backward`). The weight
//! gradient ([`weight_grad_image`]) turns the tile around: 6 taps by 16 output channels.
//!
//! This replaces im2col + GEMM for the convolutions of the CIFAR ResNets' stages and Conv-4's
//! first three blocks: the patch matrix is 9x the input, and writing it and reading it back is
//! memory traffic that the direct kernel does not have. Each output value is summed over
//! channels, then rows, then columns of the kernel, in that fixed order: the same bits on any
//! thread count. Where the CPU lacks AVX2 or FMA, where `RELNET_DIRECT_CONV=off`, or where the
//! shape is not covered ([`covers`]), the caller keeps im2col + GEMM.

use std::mem::MaybeUninit;

use rayon::prelude::*;

use super::fastconv::Geometry;

/// Output channels per register tile (the last tile of a layer may have fewer: 2 or 4).
const R: usize = 6;
/// Runs of 8 output pixels per register tile (at most).
const S: usize = 2;

/// Whether this CPU has what the kernel needs (AVX2 and FMA), checked once.
fn cpu_ok() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        static OK: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
        *OK.get_or_init(|| {
            std::is_x86_feature_detected!("avx2")
                && std::is_x86_feature_detected!("fma")
                && std::env::var("RELNET_DIRECT_CONV").map(|v| v != "off").unwrap_or(true)
        })
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        false
    }
}

/// Whether [`forward_image`] handles `g`: a 3x3 kernel, stride 1, padding 1, a width that is a
/// multiple of 8, an even number of output channels, on a CPU with AVX2 and FMA.
pub(crate) fn covers(g: &Geometry) -> bool {
    g.kh == 3
        && g.kw == 3
        && g.sh == 1
        && g.sw == 1
        && g.ph == 1
        && g.pw == 1
        && g.w.is_multiple_of(8)
        && g.w > 0
        && g.h > 0
        && g.co > 0
        && g.co.is_multiple_of(2)
        && g.ci > 0
        && cpu_ok()
}

/// The register tiles' output channels, as (first, count): `R` at a time, the last tile 2 or
/// 4 (`co` is even), except that a tail of 2 after a full tile becomes two tiles of 4 (a tile
/// of 2 has only four accumulators, too few to keep both FMA units busy).
fn tiles(co: usize) -> impl Iterator<Item = (usize, usize)> {
    let split = co % R == 2 && co > R;
    let full = if split { co / R - 1 } else { co / R };
    let tail: &[usize] = if split {
        &[4, 4]
    } else if co % R == 4 {
        &[4]
    } else if co % R == 2 {
        &[2]
    } else {
        &[]
    };
    let mut counts: Vec<usize> = std::iter::repeat_n(R, full).chain(tail.iter().copied()).collect();
    counts.retain(|&c| c > 0);
    let mut first = 0;
    counts.into_iter().map(move |c| {
        let t = (first, c);
        first += c;
        t
    })
}

/// `[co, ci, 3, 3]` packed tile by tile ([`tiles`]), a tile of `rows` channels from channel
/// `first` at `first * ci * 9` as `[ci * 9][rows]`: each tile's weights in the order it reads them.
pub(crate) fn pack(g: &Geometry, weight: &[f32]) -> Vec<f32> {
    let taps = g.ci * 9;
    let mut out = vec![0f32; g.co * taps];
    for (first, rows) in tiles(g.co) {
        for k in 0..taps {
            for r in 0..rows {
                out[first * taps + k * rows + r] = weight[(first + r) * taps + k];
            }
        }
    }
    out
}

/// The bordered copy of one image `x` (`[ci, h, w]`) into `buf` (`[ci, h+2, w+2]`, zero border).
fn border(g: &Geometry, x: &[f32], buf: &mut Vec<f32>) {
    let (hp, wp) = (g.h + 2, g.w + 2);
    if buf.len() != g.ci * hp * wp {
        buf.clear();
        buf.resize(g.ci * hp * wp, 0.0);
    }
    // Every position is written: the border rows whole, then each inner row's two border
    // columns and its values (the buffer is reused from image to image, never zeroed whole).
    for (c, plane) in buf.chunks_exact_mut(hp * wp).enumerate() {
        plane[..wp].fill(0.0);
        plane[(hp - 1) * wp..].fill(0.0);
        for y in 0..g.h {
            let row = &mut plane[(y + 1) * wp..(y + 2) * wp];
            row[0] = 0.0;
            row[wp - 1] = 0.0;
            row[1..wp - 1].copy_from_slice(&x[(c * g.h + y) * g.w..(c * g.h + y + 1) * g.w]);
        }
    }
}

/// The convolution of `x` (`[n, ci, h, w]`) with `weight` (`[co, ci, 3, 3]`), padding 1:
/// `[n, co, h, w]`, one image per rayon task. Only for a `g` that [`covers`] accepts.
pub(crate) fn forward(g: &Geometry, x: &[f32], weight: &[f32]) -> Vec<f32> {
    assert!(covers(g));
    assert_eq!(x.len(), g.n * g.ci * g.h * g.w);
    assert_eq!(weight.len(), g.co * g.ci * 9);
    let packed = pack(g, weight);
    let (len_in, len_out) = (g.ci * g.h * g.w, g.co * g.h * g.w);
    // Not zeroed first: `forward_image` writes every value.
    let mut out: Vec<f32> = Vec::with_capacity(g.n * len_out);
    out.spare_capacity_mut()[..g.n * len_out]
        .par_chunks_mut(len_out)
        .zip(x.par_chunks(len_in))
        .for_each_init(Vec::new, |buf, (o, xi)| forward_image(g, xi, &packed, o, buf));
    // SAFETY: the capacity is `n * len_out`; `len_in` and `len_out` are non-zero (`covers`)
    // and `x` holds `n` images, so the zip pairs each of the `n` chunks of `len_out` values
    // with an image, and `forward_image` wrote each chunk whole before `for_each_init` returned
    // (had it panicked, the panic would have propagated before this line).
    unsafe { out.set_len(g.n * len_out) };
    out
}

/// The convolution of one image `x` (`[ci, h, w]`) with the packed weights `packed` ([`pack`]),
/// into `out` (`[co, h, w]`): every value of `out` is written ([`forward`] relies on it). `buf`
/// is scratch (the bordered image). Only for a `g` that [`covers`] accepts.
fn forward_image(g: &Geometry, x: &[f32], packed: &[f32], out: &mut [MaybeUninit<f32>], buf: &mut Vec<f32>) {
    assert!(covers(g));
    assert_eq!(x.len(), g.ci * g.h * g.w);
    assert_eq!(out.len(), g.co * g.h * g.w);
    assert_eq!(packed.len(), g.co * g.ci * 9);
    border(g, x, buf);
    #[cfg(target_arch = "x86_64")]
    // SAFETY: `covers` checked AVX2 and FMA at run time and the shape `avx::image` needs; the
    // asserts above and `border` give the lengths it requires of `buf`, `packed` and `out`.
    unsafe {
        avx::image(g, buf, packed, out.as_mut_ptr().cast::<f32>())
    }
}

/// Whether [`weight_grad_image`] handles `g`: what [`covers`] takes, with a multiple of 8
/// output channels.
pub(crate) fn covers_weight_grad(g: &Geometry) -> bool {
    covers(g) && g.co.is_multiple_of(8)
}

/// Adds one image's share of the weight gradient to `dwt`, which holds `dW` transposed
/// (`[ci * 9, co]`): `dW[o, k] += sum_p dy[o, p] * x[k at p]`, with `x` the image (`[ci, h, w]`)
/// and `dy` its output gradient (`[co, h, w]`). `buf` and `dyt` are scratch (the bordered
/// image and `dy` as `[h*w, co]`). Only for a `g` that [`covers_weight_grad`] accepts.
///
/// The kernel is the forward's turned around: a tile of 6 taps by 16 output channels, each
/// pixel's 16 `dy` values loaded as two vectors, each tap's input value broadcast (a layer's
/// last tiles may have 3 taps, or 8 channels). Pixels are taken a band of rows at a time
/// (about 128 pixels: the band's inputs and `dy` stay in L1 while every tile passes over them),
/// and each tile sums the band's pixels in order onto `dwt`: a fixed order, so the same bits on
/// any thread count.
pub(crate) fn weight_grad_image(
    g: &Geometry,
    x: &[f32],
    dy: &[f32],
    dwt: &mut [f32],
    buf: &mut Vec<f32>,
    dyt: &mut Vec<f32>,
) {
    assert!(covers_weight_grad(g));
    assert_eq!(x.len(), g.ci * g.h * g.w);
    assert_eq!(dy.len(), g.co * g.h * g.w);
    assert_eq!(dwt.len(), g.co * g.ci * 9);
    border(g, x, buf);
    let p = g.h * g.w;
    // Every value is overwritten below: only a new length needs the resize.
    if dyt.len() != p * g.co {
        dyt.clear();
        dyt.resize(p * g.co, 0.0);
    }
    for o in 0..g.co {
        for (i, v) in dy[o * p..(o + 1) * p].iter().enumerate() {
            dyt[i * g.co + o] = *v;
        }
    }
    #[cfg(target_arch = "x86_64")]
    // SAFETY: `covers_weight_grad` checked AVX2 and FMA at run time and the shape
    // `avx::weight_grad` needs; the asserts above, `border` and the resize of `dyt` give the
    // lengths it requires of `buf`, `dyt` and `dwt`.
    unsafe {
        avx::weight_grad(g, buf, dyt, dwt)
    }
}

#[cfg(target_arch = "x86_64")]
// The register tile is indexed by its (constant) row and run numbers, which the compiler unrolls.
#[allow(clippy::needless_range_loop)]
mod avx {
    use std::arch::x86_64::*;

    use super::{Geometry, S, tiles};

    /// Every tile of one image: writes each of the `co * h * w` values at `out`. Pixel runs
    /// outer (a run's inputs stay in L1 across the output channel tiles), output channel tiles
    /// inner.
    ///
    /// # Safety
    ///
    /// The CPU has AVX2 and FMA; `g` is one that [`super::covers`] accepts (3x3, stride 1,
    /// padding 1, `w` a non-zero multiple of 8, `co` even and non-zero, `ci` and `h` non-zero);
    /// `buf` holds the bordered image (`ci * (h+2) * (w+2)` values), `packed` the packed
    /// weights (`co * ci * 9`, [`super::pack`]), and `out` is valid for writes of `co * h * w`
    /// floats that nothing else accesses during the call.
    #[target_feature(enable = "avx2,fma")]
    pub(super) unsafe fn image(g: &Geometry, buf: &[f32], packed: &[f32], out: *mut f32) {
        debug_assert!(buf.len() == g.ci * (g.h + 2) * (g.w + 2) && packed.len() == g.co * g.ci * 9);
        // `w` is a multiple of 8: the runs tile the plane, and `tiles` covers `0..co`.
        let p = g.h * g.w;
        let runs = p / 8;
        let tiles: Vec<(usize, usize)> = tiles(g.co).collect();
        let mut first = 0;
        while first < runs {
            let s = (runs - first).min(S);
            for &(co, rows) in &tiles {
                // SAFETY: the caller's contract is `tile`'s, with `first + s <= runs` and, since
                // `tiles` yields consecutive tiles of 2, 4 or 6 channels ending at `g.co`,
                // `co + rows <= g.co`.
                unsafe {
                    match (rows, s) {
                        (6, 2) => tile::<6, 2>(g, buf, packed, out, co, first),
                        (6, 1) => tile::<6, 1>(g, buf, packed, out, co, first),
                        (4, 2) => tile::<4, 2>(g, buf, packed, out, co, first),
                        (4, 1) => tile::<4, 1>(g, buf, packed, out, co, first),
                        (2, 2) => tile::<2, 2>(g, buf, packed, out, co, first),
                        (2, 1) => tile::<2, 1>(g, buf, packed, out, co, first),
                        _ => unreachable!("tile of {rows} channels by {s} runs"),
                    }
                }
            }
            first += s;
        }
    }

    /// Output channels `co .. co + RR` at the `N` runs of 8 pixels from run `first`.
    ///
    /// # Safety
    ///
    /// What [`image`] requires, and `co + RR <= g.co`, `first + N <= h * w / 8`. Then a run at
    /// output (y, x..x+8) with tap (ky, kx) reads bordered row `y + ky <= h + 1`, columns
    /// `x + kx .. x + kx + 8 <= w + 2`: inside `buf`; the tile's weights are
    /// `packed[co * ci * 9 .. (co + RR) * ci * 9]`; it stores channels `co .. co + RR` at
    /// pixels `first * 8 .. (first + N) * 8`: inside `out`.
    #[target_feature(enable = "avx2,fma")]
    #[inline]
    unsafe fn tile<const RR: usize, const N: usize>(
        g: &Geometry,
        buf: &[f32],
        packed: &[f32],
        out: *mut f32,
        co: usize,
        first: usize,
    ) {
        let (wp, plane) = (g.w + 2, (g.h + 2) * (g.w + 2));
        let taps = g.ci * 9;
        // Where each run starts in the bordered image (tap (0, 0)) and in the output plane.
        let mut at = [0usize; N];
        let mut dst = [0usize; N];
        for i in 0..N {
            let pix = (first + i) * 8;
            let (y, x) = (pix / g.w, pix % g.w);
            at[i] = y * wp + x;
            dst[i] = pix;
        }
        let mut acc = [[_mm256_setzero_ps(); N]; RR];
        let b = buf.as_ptr();
        // SAFETY: `co < g.co`: the start of this tile's weights, inside `packed`.
        let mut w = unsafe { packed.as_ptr().add(co * taps) };
        for c in 0..g.ci {
            // SAFETY: `c < ci`: the start of channel `c`'s bordered plane, inside `buf`.
            let base = unsafe { b.add(c * plane) };
            for ky in 0..3 {
                for kx in 0..3 {
                    let off = ky * wp + kx;
                    let mut v = [_mm256_setzero_ps(); N];
                    for i in 0..N {
                        // SAFETY: 8 values of bordered row `y + ky`, columns `x + kx ..`, of
                        // channel `c` (see `# Safety`): inside `buf`.
                        v[i] = unsafe { _mm256_loadu_ps(base.add(at[i] + off)) };
                    }
                    for r in 0..RR {
                        // SAFETY: `w` walks this tile's `ci * 9 * RR` weights, `r < RR`.
                        let k = unsafe { _mm256_broadcast_ss(&*w.add(r)) };
                        for i in 0..N {
                            acc[r][i] = _mm256_fmadd_ps(k, v[i], acc[r][i]);
                        }
                    }
                    // SAFETY: at most one past this tile's weights, which end inside `packed`
                    // or at its end.
                    w = unsafe { w.add(RR) };
                }
            }
        }
        let o = out;
        for r in 0..RR {
            let row = (co + r) * g.h * g.w;
            for i in 0..N {
                // SAFETY: channel `co + r < g.co`, pixels `dst[i] .. dst[i] + 8 <= h * w`:
                // inside `out`.
                unsafe { _mm256_storeu_ps(o.add(row + dst[i]), acc[r][i]) };
            }
        }
    }

    /// Taps per weight-gradient tile (the last may have 3: `ci * 9` is a multiple of 3).
    const TAPS: usize = 6;

    /// Adds one image's weight gradient onto `dwt`: every tile, band of rows by band of rows.
    ///
    /// # Safety
    ///
    /// The CPU has AVX2 and FMA; `g` is one that [`super::covers_weight_grad`] accepts (what
    /// [`super::covers`] accepts, with `co` a multiple of 8); `buf` holds the bordered image
    /// (`ci * (h+2) * (w+2)` values), `dyt` the output gradient as `[h * w, co]`, and `dwt`
    /// holds `ci * 9 * co` values.
    #[target_feature(enable = "avx2,fma")]
    pub(super) unsafe fn weight_grad(g: &Geometry, buf: &[f32], dyt: &[f32], dwt: &mut [f32]) {
        debug_assert!(
            buf.len() == g.ci * (g.h + 2) * (g.w + 2) && dyt.len() == g.h * g.w * g.co && dwt.len() == g.ci * 9 * g.co
        );
        let (wp, plane) = (g.w + 2, (g.h + 2) * (g.w + 2));
        // Where each tap's input starts in the bordered image (for output pixel (0, 0)).
        let offs: Vec<usize> = (0..g.ci * 9).map(|k| (k / 9) * plane + (k % 9 / 3) * wp + k % 3).collect();
        let band = (128 / g.w).max(1);
        let mut y0 = 0;
        while y0 < g.h {
            let y1 = (y0 + band).min(g.h);
            for k in (0..g.ci * 9).step_by(TAPS) {
                let taps = (g.ci * 9 - k).min(TAPS);
                for o in (0..g.co).step_by(16) {
                    let offs = &offs[k..k + taps];
                    // SAFETY: the caller's contract is `grad_tile`'s, with `y1 <= h`, `offs` the
                    // `taps` offsets from tap `k`, and `k + taps <= ci * 9`; `ci * 9` is a
                    // multiple of 3, so `taps` is 6 or 3, and `co` a multiple of 8, so `co - o`
                    // is at least 16 (two vectors) or exactly 8 (one).
                    unsafe {
                        match (taps, g.co - o) {
                            (TAPS, 16..) => grad_tile::<TAPS, 2>(g, buf, dyt, dwt, offs, k, o, y0, y1),
                            (TAPS, 8) => grad_tile::<TAPS, 1>(g, buf, dyt, dwt, offs, k, o, y0, y1),
                            (3, 16..) => grad_tile::<3, 2>(g, buf, dyt, dwt, offs, k, o, y0, y1),
                            (3, 8) => grad_tile::<3, 1>(g, buf, dyt, dwt, offs, k, o, y0, y1),
                            (t, c) => unreachable!("weight-gradient tile of {t} taps by {c} channels"),
                        }
                    }
                }
            }
            y0 = y1;
        }
    }

    /// `dwt[k + t][o .. o + 8V] += sum over output rows y0..y1 of buf[offs[t] + pixel] * dyt[pixel][o .. o + 8V]`, for `t < T`.
    ///
    /// # Safety
    ///
    /// What [`weight_grad`] requires, and `offs.len() == T` with `offs[t]` the offset of tap
    /// `k + t` (channel c, row ky, column kx) in the bordered image, `c * plane + ky * wp + kx`,
    /// `k + T <= ci * 9`, `o + 8 * V <= co`, `y1 <= h`. Then output pixel (y, x) reads bordered
    /// position `c * plane + (y + ky) * wp + x + kx`: inside `buf`; `dyt[(y * w + x) * co + o ..]`
    /// and `dwt[(k + t) * co + o ..]`, `8 * V` values each: inside theirs.
    #[target_feature(enable = "avx2,fma")]
    #[inline]
    #[allow(clippy::too_many_arguments)]
    unsafe fn grad_tile<const T: usize, const V: usize>(
        g: &Geometry,
        buf: &[f32],
        dyt: &[f32],
        dwt: &mut [f32],
        offs: &[usize],
        k: usize,
        o: usize,
        y0: usize,
        y1: usize,
    ) {
        let wp = g.w + 2;
        let (b, d, dw) = (buf.as_ptr(), dyt.as_ptr(), dwt.as_mut_ptr());
        let mut acc = [[_mm256_setzero_ps(); V]; T];
        for t in 0..T {
            for v in 0..V {
                // SAFETY: row `k + t < ci * 9` of `dwt`, columns `o + 8v .. o + 8v + 8 <= co`.
                acc[t][v] = unsafe { _mm256_loadu_ps(dw.add((k + t) * g.co + o + 8 * v)) };
            }
        }
        let mut at = [0usize; T];
        at.copy_from_slice(offs);
        for y in y0..y1 {
            // SAFETY: `y < h`: the start of bordered row `y` of channel 0, inside `buf`.
            let row = unsafe { b.add(y * wp) };
            // Pixel (y, 0)'s `dy` from channel `o`. Stepped with `wrapping_add`: after the last
            // row's last pixel it points past the end of `dyt`, where it is never read.
            let mut dp = d.wrapping_add(y * g.w * g.co + o);
            for x in 0..g.w {
                let mut d = [_mm256_setzero_ps(); V];
                for v in 0..V {
                    // SAFETY: pixel (y, x)'s `dy` for channels `o + 8v .. o + 8v + 8 <= co`,
                    // inside `dyt`.
                    d[v] = unsafe { _mm256_loadu_ps(dp.add(8 * v)) };
                }
                for t in 0..T {
                    // SAFETY: tap `k + t`'s input for pixel (y, x), inside `buf` (see `# Safety`).
                    let b = unsafe { _mm256_broadcast_ss(&*row.add(at[t] + x)) };
                    for v in 0..V {
                        acc[t][v] = _mm256_fmadd_ps(b, d[v], acc[t][v]);
                    }
                }
                dp = dp.wrapping_add(g.co);
            }
        }
        for t in 0..T {
            for v in 0..V {
                // SAFETY: the same `dwt` values as loaded above.
                unsafe { _mm256_storeu_ps(dw.add((k + t) * g.co + o + 8 * v), acc[t][v]) };
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// By definition, one multiply-add at a time, summed in the kernel's order.
    fn naive(g: &Geometry, x: &[f32], w: &[f32]) -> Vec<f32> {
        let mut out = vec![0f32; g.co * g.h * g.w];
        for o in 0..g.co {
            for y in 0..g.h {
                for xx in 0..g.w {
                    let mut s = 0f32;
                    for c in 0..g.ci {
                        for ky in 0..3 {
                            for kx in 0..3 {
                                let (iy, ix) = (y as isize + ky as isize - 1, xx as isize + kx as isize - 1);
                                if iy >= 0 && ix >= 0 && (iy as usize) < g.h && (ix as usize) < g.w {
                                    s += w[((o * g.ci + c) * 3 + ky) * 3 + kx]
                                        * x[(c * g.h + iy as usize) * g.w + ix as usize];
                                }
                            }
                        }
                    }
                    out[(o * g.h + y) * g.w + xx] = s;
                }
            }
        }
        out
    }

    #[test]
    fn equals_the_definition_on_every_covered_shape_of_the_backbones() {
        if !cpu_ok() {
            eprintln!("SKIP: this CPU lacks AVX2 or FMA; the direct kernel is never used here");
            return;
        }
        // (ci, side, co): ResNet stages, Conv-4's blocks, the stem, odd heights and widths of
        // 8, 24 (a tail of one and two runs) and 40.
        for (ci, h, w, co) in [
            (3, 32, 32, 16),
            (16, 32, 32, 16),
            (32, 16, 16, 32),
            (64, 8, 8, 64),
            (8, 16, 16, 16),
            (5, 3, 8, 4),
            (2, 7, 24, 8),
            (1, 1, 40, 12),
            (3, 8, 8, 2),
            (4, 8, 16, 10),
            (3, 32, 32, 8),
            (8, 16, 16, 14),
        ] {
            let g = Geometry { n: 1, ci, h, w, co, kh: 3, kw: 3, sh: 1, sw: 1, ph: 1, pw: 1 };
            assert!(covers(&g));
            let x: Vec<f32> = (0..ci * h * w).map(|i| ((i * 37 % 101) as f32 - 50.0) / 25.0).collect();
            let wt: Vec<f32> = (0..co * ci * 9).map(|i| ((i * 53 % 89) as f32 - 44.0) / 40.0).collect();
            // Two images: the second the first negated.
            let g = Geometry { n: 2, ..g };
            let x2: Vec<f32> = x.iter().copied().chain(x.iter().map(|v| -v)).collect();
            let out = forward(&g, &x2, &wt);
            let mut want = naive(&g, &x, &wt);
            want.extend(want.clone().iter().map(|v| -v));
            let scale = want.iter().fold(0f32, |m, v| m.max(v.abs()));
            for (i, (a, b)) in out.iter().zip(&want).enumerate() {
                // FMA rounds once per multiply-add where the definition rounds twice.
                assert!((a - b).abs() <= 1e-5 * scale, "{g:?} at {i}: {a} vs {b}");
            }
        }
    }

    #[test]
    fn weight_gradient_equals_the_definition() {
        if !cpu_ok() {
            eprintln!("SKIP: this CPU lacks AVX2 or FMA; the direct kernel is never used here");
            return;
        }
        for (ci, h, w, co) in [
            (16, 32, 32, 16),
            (32, 16, 16, 32),
            (64, 8, 8, 64),
            (3, 32, 32, 16),
            (3, 32, 32, 8),
            (8, 16, 16, 16),
            (2, 3, 8, 16),
            (4, 5, 24, 48),
            (2, 40, 8, 16),
            (5, 8, 8, 24),
        ] {
            let g = Geometry { n: 1, ci, h, w, co, kh: 3, kw: 3, sh: 1, sw: 1, ph: 1, pw: 1 };
            assert!(covers_weight_grad(&g));
            let x: Vec<f32> = (0..ci * h * w).map(|i| ((i * 37 % 101) as f32 - 50.0) / 25.0).collect();
            let dy: Vec<f32> = (0..co * h * w).map(|i| ((i * 53 % 89) as f32 - 44.0) / 40.0).collect();
            // Two images summed onto a start that is not zero.
            let start: Vec<f32> = (0..co * ci * 9).map(|i| (i % 7) as f32).collect();
            let mut dwt = start.clone();
            let (mut buf, mut dyt) = (Vec::new(), Vec::new());
            weight_grad_image(&g, &x, &dy, &mut dwt, &mut buf, &mut dyt);
            weight_grad_image(&g, &x, &dy, &mut dwt, &mut buf, &mut dyt);
            let mut scale = 0f32;
            let mut want = start.clone();
            for o in 0..co {
                for c in 0..ci {
                    for ky in 0..3 {
                        for kx in 0..3 {
                            let mut s = 0f64;
                            for y in 0..h {
                                for xx in 0..w {
                                    let (iy, ix) = (y as isize + ky as isize - 1, xx as isize + kx as isize - 1);
                                    if iy >= 0 && ix >= 0 && (iy as usize) < h && (ix as usize) < w {
                                        s += (dy[(o * h + y) * w + xx] * x[(c * h + iy as usize) * w + ix as usize])
                                            as f64;
                                    }
                                }
                            }
                            let k = (c * 3 + ky) * 3 + kx;
                            want[k * co + o] += 2.0 * s as f32;
                            scale = scale.max((2.0 * s).abs() as f32);
                        }
                    }
                }
            }
            for (i, (a, b)) in dwt.iter().zip(&want).enumerate() {
                assert!((a - b).abs() <= 1e-5 * scale.max(1.0), "{g:?} at {i}: {a} vs {b}");
            }
        }
        let g = Geometry { n: 1, ci: 4, h: 8, w: 8, co: 16, kh: 3, kw: 3, sh: 1, sw: 1, ph: 1, pw: 1 };
        for bad in [Geometry { co: 4, ..g }, Geometry { co: 12, ..g }, Geometry { w: 4, ..g }] {
            assert!(!covers_weight_grad(&bad), "{bad:?}");
        }
    }

    #[test]
    fn tiles_cover_the_channels_once() {
        for co in (2..=130).step_by(2) {
            let t: Vec<(usize, usize)> = tiles(co).collect();
            let mut next = 0;
            for &(first, count) in &t {
                assert_eq!(first, next, "co {co}: {t:?}");
                assert!(matches!(count, 2 | 4 | 6), "co {co}: {t:?}");
                next += count;
            }
            assert_eq!(next, co, "co {co}: {t:?}");
            // A tile of 2 only where the layer has 2 channels.
            assert!(co == 2 || t.iter().all(|&(_, c)| c > 2), "co {co}: {t:?}");
        }
    }

    #[test]
    fn declines_what_it_does_not_cover() {
        let g = Geometry { n: 1, ci: 4, h: 8, w: 8, co: 8, kh: 3, kw: 3, sh: 1, sw: 1, ph: 1, pw: 1 };
        for bad in [
            Geometry { w: 4, ..g },
            Geometry { co: 7, ..g },
            Geometry { co: 0, ..g },
            Geometry { sh: 2, ..g },
            Geometry { ph: 0, ..g },
            Geometry { kh: 1, kw: 1, ph: 0, pw: 0, ..g },
        ] {
            assert!(!covers(&bad), "{bad:?}");
        }
    }
}
