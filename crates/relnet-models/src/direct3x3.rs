//! A direct 3x3, stride-1, padding-1 convolution for NCHW f32 on AVX2 + FMA: no patch matrix.
//!
//! Each image is copied once into a zero-bordered buffer (`[ci, h+2, w+2]`); then a register
//! tile of [`R`] output channels by [`S`] runs of 8 output pixels (6 x 2: twelve 8-float
//! accumulators, and room in the 16 registers for the two runs and one weight) walks the `ci * 9` taps, loading each run of 8 input pixels straight from the
//! bordered image (an unaligned load, no edge tests: the border is the padding) and
//! broadcasting each tap's weight. The weights are packed once per call tile by tile, each tile
//! as `[ci*9][rows]`, so a tile reads them in order. A run of 8 never crosses an output row because the width is a
//! multiple of 8, so a run's 8 inputs are contiguous for every tap.
//!
//! This replaces im2col + GEMM (the patch matrix is 9x the input, and building it was 16% of
//! ResNet-32's step) for the convolutions of the CIFAR ResNets' stages and Conv-4's first three
//! blocks, forward and (through the flipped kernel) the input gradient. Each output value is
//! summed over channels, then rows, then columns of the kernel, in that fixed order: the same
//! bits on any thread count. Where the CPU lacks AVX2 or FMA, or the shape is not covered
//! ([`covers`]), the caller keeps im2col + GEMM.

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
        *OK.get_or_init(|| std::is_x86_feature_detected!("avx2") && std::is_x86_feature_detected!("fma") && std::env::var("RELNET_DIRECT_CONV").map(|v| v != "off").unwrap_or(true))
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        false
    }
}

/// Whether [`forward_image`] handles `g`: a 3x3 kernel, stride 1, padding 1, a width that is a
/// multiple of 8, an even number of output channels, on a CPU with AVX2 and FMA.
pub(crate) fn covers(g: &Geometry) -> bool {
    g.kh == 3 && g.kw == 3 && g.sh == 1 && g.sw == 1 && g.ph == 1 && g.pw == 1 && g.w % 8 == 0 && g.w > 0 && g.h > 0 && g.co % 2 == 0 && g.ci > 0 && cpu_ok()
}

/// The register tiles' output channels: `R` at a time, the last tile 2 or 4 (`co` is even).
fn tiles(co: usize) -> impl Iterator<Item = (usize, usize)> {
    (0..co).step_by(R).map(move |first| (first, (co - first).min(R)))
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
    buf.clear();
    buf.resize(g.ci * hp * wp, 0.0);
    for c in 0..g.ci {
        for y in 0..g.h {
            let src = &x[(c * g.h + y) * g.w..(c * g.h + y + 1) * g.w];
            let at = (c * hp + y + 1) * wp + 1;
            buf[at..at + g.w].copy_from_slice(src);
        }
    }
}

/// The convolution of one image `x` (`[ci, h, w]`) with the packed weights `packed` ([`pack`]),
/// into `out` (`[co, h, w]`, overwritten). `buf` is scratch (the bordered image). Only for a `g`
/// that [`covers`] accepts.
pub(crate) fn forward_image(g: &Geometry, x: &[f32], packed: &[f32], out: &mut [f32], buf: &mut Vec<f32>) {
    assert!(covers(g));
    assert_eq!(x.len(), g.ci * g.h * g.w);
    assert_eq!(out.len(), g.co * g.h * g.w);
    assert_eq!(packed.len(), g.co * g.ci * 9);
    border(g, x, buf);
    #[cfg(target_arch = "x86_64")]
    // SAFETY: `covers` checked AVX2 and FMA at run time; the asserts above and `border` fix the
    // slices' lengths that the kernel's pointer arithmetic relies on (see `tile`).
    unsafe {
        avx::image(g, buf, packed, out)
    }
}

#[cfg(target_arch = "x86_64")]
mod avx {
    use std::arch::x86_64::*;

    use super::{Geometry, S, tiles};

    /// Every tile of one image. Pixel runs outer (a run's inputs stay in L1 across the output
    /// channel tiles), output channel tiles inner.
    #[target_feature(enable = "avx2,fma")]
    pub(super) unsafe fn image(g: &Geometry, buf: &[f32], packed: &[f32], out: &mut [f32]) {
        let p = g.h * g.w;
        let runs = p / 8;
        let mut first = 0;
        while first < runs {
            let s = (runs - first).min(S);
            for (co, rows) in tiles(g.co) {
                // SAFETY: forwarded from the caller; `first + s <= runs`, `co + rows <= g.co`.
                unsafe {
                    match (rows, s) {
                        (6, 2) => tile::<6, 2>(g, buf, packed, out, co, first),
                        (6, _) => tile::<6, 1>(g, buf, packed, out, co, first),
                        (4, 2) => tile::<4, 2>(g, buf, packed, out, co, first),
                        (4, _) => tile::<4, 1>(g, buf, packed, out, co, first),
                        (_, 2) => tile::<2, 2>(g, buf, packed, out, co, first),
                        _ => tile::<2, 1>(g, buf, packed, out, co, first),
                    }
                }
            }
            first += s;
        }
    }

    /// Output channels `co .. co + RR` at the `N` runs of 8 pixels from run `first`.
    ///
    /// SAFETY: AVX2 and FMA present; `buf` is the bordered image (`ci * (h+2) * (w+2)`),
    /// `packed` is `co * ci * 9`, `out` is `co * h * w`, `co + RR <= g.co`, `first + N <= h*w/8`,
    /// and `w % 8 == 0`. A run at output (y, x..x+8) with tap (ky, kx) reads bordered row
    /// `y + ky <= h + 1`, columns `x + kx .. x + kx + 8 <= w + 2`: inside `buf`.
    #[target_feature(enable = "avx2,fma")]
    #[inline]
    unsafe fn tile<const RR: usize, const N: usize>(g: &Geometry, buf: &[f32], packed: &[f32], out: &mut [f32], co: usize, first: usize) {
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
        let mut w = unsafe { packed.as_ptr().add(co * taps) };
        for c in 0..g.ci {
            let base = unsafe { b.add(c * plane) };
            for ky in 0..3 {
                for kx in 0..3 {
                    let off = ky * wp + kx;
                    let mut v = [_mm256_setzero_ps(); N];
                    for i in 0..N {
                        v[i] = unsafe { _mm256_loadu_ps(base.add(at[i] + off)) };
                    }
                    for r in 0..RR {
                        let k = unsafe { _mm256_broadcast_ss(&*w.add(r)) };
                        for i in 0..N {
                            acc[r][i] = _mm256_fmadd_ps(k, v[i], acc[r][i]);
                        }
                    }
                    w = unsafe { w.add(RR) };
                }
            }
        }
        let o = out.as_mut_ptr();
        for r in 0..RR {
            let row = (co + r) * g.h * g.w;
            for i in 0..N {
                unsafe { _mm256_storeu_ps(o.add(row + dst[i]), acc[r][i]) };
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
                                    s += w[((o * g.ci + c) * 3 + ky) * 3 + kx] * x[(c * g.h + iy as usize) * g.w + ix as usize];
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
        for (ci, h, w, co) in [(3, 32, 32, 16), (16, 32, 32, 16), (32, 16, 16, 32), (64, 8, 8, 64), (8, 16, 16, 16), (5, 3, 8, 4), (2, 7, 24, 8), (1, 1, 40, 12), (3, 8, 8, 2), (4, 8, 16, 10)] {
            let g = Geometry { n: 1, ci, h, w, co, kh: 3, kw: 3, sh: 1, sw: 1, ph: 1, pw: 1 };
            assert!(covers(&g));
            let x: Vec<f32> = (0..ci * h * w).map(|i| ((i * 37 % 101) as f32 - 50.0) / 25.0).collect();
            let wt: Vec<f32> = (0..co * ci * 9).map(|i| ((i * 53 % 89) as f32 - 44.0) / 40.0).collect();
            let mut out = vec![f32::NAN; co * h * w];
            forward_image(&g, &x, &pack(&g, &wt), &mut out, &mut Vec::new());
            let want = naive(&g, &x, &wt);
            let scale = want.iter().fold(0f32, |m, v| m.max(v.abs()));
            for (i, (a, b)) in out.iter().zip(&want).enumerate() {
                // FMA rounds once per multiply-add where the definition rounds twice.
                assert!((a - b).abs() <= 1e-5 * scale, "{g:?} at {i}: {a} vs {b}");
            }
        }
    }

    #[test]
    fn declines_what_it_does_not_cover() {
        let g = Geometry { n: 1, ci: 4, h: 8, w: 8, co: 8, kh: 3, kw: 3, sh: 1, sw: 1, ph: 1, pw: 1 };
        for bad in [Geometry { w: 4, ..g }, Geometry { co: 7, ..g }, Geometry { sh: 2, ..g }, Geometry { ph: 0, ..g }, Geometry { kh: 1, kw: 1, ph: 0, pw: 0, ..g }] {
            assert!(!covers(&bad), "{bad:?}");
        }
    }
}
