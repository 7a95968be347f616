//! A direct 3x3, padding-1 convolution at stride 1 or 2 for NCHW f32: no patch matrix. Written
//! once over the vector operations of [`Simd`] and compiled for AVX-512F (16 lanes), AVX2 + FMA
//! (8 lanes) and portable Rust, the widest the CPU has chosen at run time ([`Isa::detect`]).
//!
//! Each image is copied once into a zero-bordered buffer (`[ci, h+2, w+2]`; at stride 2 each
//! bordered row stored as its even columns, then its odd columns, so that consecutive outputs
//! read consecutive inputs for every tap, see [`Walk`]). Forward, a register
//! tile of up to `ROWS` output channels by up to two runs of `W` output pixels (AVX2: 6 x 2,
//! twelve 8-float accumulators, with room in the 16 registers for the two runs and one weight;
//! AVX-512: 12 x 2, twenty-four 16-float accumulators of its 32 registers) walks the `ci * 9`
//! taps, loading each run of `W` input pixels straight from the bordered image (an unaligned
//! load, no edge tests: the border is the padding) and broadcasting each tap's weight. The
//! weights are packed once per call, tile by tile, each tile as `[ci*9][rows]`, so a tile reads
//! them in order. The output width is a multiple of `W`, so a run never crosses an output row and
//! its inputs are contiguous for every tap (a layer whose output width is a multiple of 8 but not
//! of 16 runs at 8 lanes on an AVX-512 CPU), except 8-wide planes of an even number of rows, which
//! run at 16 lanes: a *split* run is the same 8 columns of two consecutive output rows, each
//! half's inputs contiguous, loaded as two halves ([`Kernel::fits`]). The input gradient of a stride-1 convolution is this
//! same kernel on the flipped, transposed weights (`fastconv::backward`); at stride 2 it is four
//! walks of the same register tiles over the output gradient, one per parity of input pixels
//! ([`input_grad`]). The weight gradient
//! ([`weight_grad_images`]) turns the tile around: up to `TAPS` taps (6; 12 on AVX-512) by two
//! vectors of output channels.
//!
//! Planes whose width is not a multiple of 8 but whose pixel count is (at most 64 pixels, such as
//! Conv-4's 4x4 maps; [`small_ok`]) are stored instead as three column-shifted copies without
//! border columns, so a run of `W` outputs crosses the plane's rows and still reads consecutive
//! inputs for every tap ([`Walk::patches`]), a few images at a time.
//!
//! This replaces im2col + GEMM for the 3x3 convolutions of the CIFAR ResNets (their stride-2
//! ones included) and of Conv-4 on 32x32 images: the patch matrix is 9x the input, and writing it and reading it back is
//! memory traffic that the direct kernel does not have. Each output value is summed over
//! channels, then rows, then columns of the kernel, in that fixed order and with one rounding per
//! multiply-add, whatever the width: the same bits on any thread count and any instruction set.
//! Where the CPU lacks AVX2 or FMA, where `RELNET_DIRECT_CONV=off`, or where the shape is not
//! covered ([`covers`]), the caller keeps im2col + GEMM. `RELNET_SIMD=avx2` caps the width (to
//! compare widths on one host); `RELNET_SIMD=portable` runs the plain-Rust build.

use std::mem::MaybeUninit;

use rayon::prelude::*;

use super::fastconv::Geometry;
#[cfg(target_arch = "x86_64")]
use super::simd::{Avx2, Avx512};
use super::simd::{Isa, Portable, Simd};

/// One compiled build of the kernels: an instruction set at one width.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Kernel {
    /// AVX-512F, 16 lanes.
    Avx512,
    /// AVX2 + FMA, 8 lanes.
    Avx2,
    /// Portable Rust, 16 lanes.
    Portable16,
    /// Portable Rust, 8 lanes.
    Portable8,
}

/// Whether runs of `lanes` output pixels (8 or 16) tile a plane of `oh` rows of `ow` pixels
/// without crossing a row: `ow` a multiple of 8 and of the lanes, or exactly half of them with
/// `oh` even (split runs). The rule of [`Kernel::fits`] and of the bf16 kernels' `Build::fits`.
pub(crate) fn runs_fit(lanes: usize, ow: usize, oh: usize) -> bool {
    ow > 0 && ow.is_multiple_of(8) && (ow.is_multiple_of(lanes) || (2 * ow == lanes && oh.is_multiple_of(2)))
}

impl Kernel {
    /// The build for `isa` whose width divides `n` (the plane's pixel count for a [`small_ok`]
    /// shape; the output channels for the weight gradient), or its 8-lane sibling. `n` is a
    /// multiple of 8. Output planes of the bordered walks take [`Kernel::pick_plane`].
    fn pick(isa: Isa, n: usize) -> Kernel {
        match (isa, n.is_multiple_of(16)) {
            (Isa::Avx512, true) => Kernel::Avx512,
            (Isa::Avx512 | Isa::Avx2, _) => Kernel::Avx2,
            (Isa::Portable, true) => Kernel::Portable16,
            (Isa::Portable, false) => Kernel::Portable8,
        }
    }

    /// [`Kernel::pick`] for an output plane of `oh` rows of `ow` pixels (a multiple of 8): the
    /// 16-lane build also where `ow` is 8 and `oh` even, its runs two output rows each
    /// ([`Kernel::fits`]), instead of the 8-lane one.
    fn pick_plane(isa: Isa, ow: usize, oh: usize) -> Kernel {
        let wide = match isa {
            Isa::Avx512 => Kernel::Avx512,
            Isa::Portable => Kernel::Portable16,
            Isa::Avx2 => return Kernel::pick(isa, ow),
        };
        if wide.fits(ow, oh) { wide } else { Kernel::pick(isa, ow) }
    }

    /// Whether this build's runs of [`Kernel::lanes`] output pixels tile a plane of `oh` rows of
    /// `ow` pixels without crossing a row: `ow` a multiple of the lanes, or exactly half of them
    /// with `oh` even, each run then two rows' halves (a *split* run: the first half row `y`, the
    /// second row `y + 1`, loaded as two halves, [`Simd::load_halves`]).
    pub(crate) fn fits(self, ow: usize, oh: usize) -> bool {
        runs_fit(self.lanes(), ow, oh)
    }

    /// Lanes per vector.
    pub(crate) fn lanes(self) -> usize {
        match self {
            Kernel::Avx512 | Kernel::Portable16 => 16,
            Kernel::Avx2 | Kernel::Portable8 => 8,
        }
    }

    /// Output channels per forward register tile, at most: the build's `Simd::ROWS`, which
    /// [`pack`] and the kernel must agree on.
    pub(crate) fn rows(self) -> usize {
        match self {
            #[cfg(target_arch = "x86_64")]
            Kernel::Avx512 => Avx512::ROWS,
            #[cfg(target_arch = "x86_64")]
            Kernel::Avx2 => Avx2::ROWS,
            #[cfg(not(target_arch = "x86_64"))]
            Kernel::Avx512 | Kernel::Avx2 => unreachable!("an x86 build on another CPU"),
            Kernel::Portable16 => Portable::<16>::ROWS,
            Kernel::Portable8 => Portable::<8>::ROWS,
        }
    }

    /// Whether this CPU runs this build.
    pub(crate) fn runs_here(self) -> bool {
        match self {
            Kernel::Avx512 => Isa::hardware() == Some(Isa::Avx512),
            Kernel::Avx2 => Isa::hardware().is_some(),
            Kernel::Portable16 | Kernel::Portable8 => true,
        }
    }

    /// Every tile of one image ([`image`]) in this build.
    ///
    /// # Safety
    ///
    /// What [`image`] requires, with this build's `S`, and the CPU runs this build.
    unsafe fn image(self, walk: &Walk, buf: &[f32], packed: &[f32], out: *mut f32) {
        // Once an image: runs that do not fit the plane would leave outputs unwritten.
        assert!(self.fits(walk.ow, walk.oh), "{self:?}'s runs do not tile {}x{} planes", walk.oh, walk.ow);
        // SAFETY: the caller's contract, for the build each arm runs.
        unsafe {
            match self {
                #[cfg(target_arch = "x86_64")]
                Kernel::Avx512 => x86::image_avx512(walk, buf, packed, out),
                #[cfg(target_arch = "x86_64")]
                Kernel::Avx2 => x86::image_avx2(walk, buf, packed, out),
                Kernel::Portable16 => image::<Portable<16>>(walk, buf, packed, out),
                Kernel::Portable8 => image::<Portable<8>>(walk, buf, packed, out),
                #[cfg(not(target_arch = "x86_64"))]
                Kernel::Avx512 | Kernel::Avx2 => unreachable!("an x86 build on another CPU"),
            }
        }
    }

    /// One image's weight gradient ([`weight_grad`]) in this build.
    ///
    /// # Safety
    ///
    /// What [`weight_grad`] requires, with this build's `S`, and the CPU runs this build.
    unsafe fn weight_grad(self, walk: &Walk, buf: &[f32], dyt: &[f32], dwt: &mut [f32]) {
        // SAFETY: the caller's contract, for the build each arm runs.
        unsafe {
            match self {
                #[cfg(target_arch = "x86_64")]
                Kernel::Avx512 => x86::weight_grad_avx512(walk, buf, dyt, dwt),
                #[cfg(target_arch = "x86_64")]
                Kernel::Avx2 => x86::weight_grad_avx2(walk, buf, dyt, dwt),
                Kernel::Portable16 => weight_grad::<Portable<16>>(walk, buf, dyt, dwt),
                Kernel::Portable8 => weight_grad::<Portable<8>>(walk, buf, dyt, dwt),
                #[cfg(not(target_arch = "x86_64"))]
                Kernel::Avx512 | Kernel::Avx2 => unreachable!("an x86 build on another CPU"),
            }
        }
    }
}

/// The entry points with the instruction sets enabled: the generic bodies and the [`Simd`]
/// operations are `#[inline(always)]`, so each of these is compiled whole for its set.
#[cfg(target_arch = "x86_64")]
mod x86 {
    use super::*;

    /// [`image`] in AVX2.
    ///
    /// # Safety
    ///
    /// The CPU has AVX2 and FMA; what [`image`] requires with `S = Avx2`.
    #[target_feature(enable = "avx2,fma")]
    pub(super) unsafe fn image_avx2(walk: &Walk, buf: &[f32], packed: &[f32], out: *mut f32) {
        // SAFETY: the caller's contract.
        unsafe { image::<Avx2>(walk, buf, packed, out) }
    }

    /// [`image`] in AVX-512.
    ///
    /// # Safety
    ///
    /// The CPU has AVX-512F; what [`image`] requires with `S = Avx512`.
    #[target_feature(enable = "avx512f")]
    pub(super) unsafe fn image_avx512(walk: &Walk, buf: &[f32], packed: &[f32], out: *mut f32) {
        // SAFETY: the caller's contract.
        unsafe { image::<Avx512>(walk, buf, packed, out) }
    }

    /// [`weight_grad`] in AVX2.
    ///
    /// # Safety
    ///
    /// The CPU has AVX2 and FMA; what [`weight_grad`] requires with `S = Avx2`.
    #[target_feature(enable = "avx2,fma")]
    pub(super) unsafe fn weight_grad_avx2(walk: &Walk, buf: &[f32], dyt: &[f32], dwt: &mut [f32]) {
        // SAFETY: the caller's contract.
        unsafe { weight_grad::<Avx2>(walk, buf, dyt, dwt) }
    }

    /// The 8 x 8 blocks of [`transpose`]: for every `r0 < rb` and `c0 < cb` (multiples of 8),
    /// `dst[(c0 + c) * rows + r0 + r] = src[(r0 + r) * cols + c0 + c]` for `r, c < 8`.
    ///
    /// # Safety
    ///
    /// The CPU has AVX2; `src.len() == dst.len() == rows * cols`; `rb <= rows` and `cb <= cols`
    /// are multiples of 8.
    #[target_feature(enable = "avx2")]
    pub(super) unsafe fn transpose_blocks_avx2(
        src: &[f32],
        rows: usize,
        cols: usize,
        rb: usize,
        cb: usize,
        dst: &mut [f32],
    ) {
        use std::arch::x86_64::*;
        let len = rows.checked_mul(cols).expect("transpose: rows * cols overflows usize");
        assert!(src.len() == len && dst.len() == len && rb <= rows && cb <= cols);
        assert!(rb.is_multiple_of(8) && cb.is_multiple_of(8));
        let (s, d) = (src.as_ptr(), dst.as_mut_ptr());
        for r0 in (0..rb).step_by(8) {
            for c0 in (0..cb).step_by(8) {
                let mut r = [_mm256_setzero_ps(); 8];
                for (i, v) in r.iter_mut().enumerate() {
                    // SAFETY: row `r0 + i < rb <= rows`, columns `c0 .. c0 + 8 <= cb <= cols`:
                    // the eight values end at most at `(r0 + i) * cols + cols <= rows * cols`,
                    // inside `src`.
                    *v = unsafe { _mm256_loadu_ps(s.add((r0 + i) * cols + c0)) };
                }
                // Pairs of rows interleaved, then pairs of pairs: `u[k]` holds rows 0-3 (k < 4)
                // or 4-7 of column k % 4 in its low half and of column k % 4 + 4 in its high half.
                let t = [
                    _mm256_unpacklo_ps(r[0], r[1]),
                    _mm256_unpackhi_ps(r[0], r[1]),
                    _mm256_unpacklo_ps(r[2], r[3]),
                    _mm256_unpackhi_ps(r[2], r[3]),
                    _mm256_unpacklo_ps(r[4], r[5]),
                    _mm256_unpackhi_ps(r[4], r[5]),
                    _mm256_unpacklo_ps(r[6], r[7]),
                    _mm256_unpackhi_ps(r[6], r[7]),
                ];
                let u = [
                    _mm256_shuffle_ps::<0x44>(t[0], t[2]),
                    _mm256_shuffle_ps::<0xEE>(t[0], t[2]),
                    _mm256_shuffle_ps::<0x44>(t[1], t[3]),
                    _mm256_shuffle_ps::<0xEE>(t[1], t[3]),
                    _mm256_shuffle_ps::<0x44>(t[4], t[6]),
                    _mm256_shuffle_ps::<0xEE>(t[4], t[6]),
                    _mm256_shuffle_ps::<0x44>(t[5], t[7]),
                    _mm256_shuffle_ps::<0xEE>(t[5], t[7]),
                ];
                // Column c: the low halves (c < 4) or the high halves of `u[c % 4]`, `u[c % 4 + 4]`.
                let out = [
                    _mm256_permute2f128_ps::<0x20>(u[0], u[4]),
                    _mm256_permute2f128_ps::<0x20>(u[1], u[5]),
                    _mm256_permute2f128_ps::<0x20>(u[2], u[6]),
                    _mm256_permute2f128_ps::<0x20>(u[3], u[7]),
                    _mm256_permute2f128_ps::<0x31>(u[0], u[4]),
                    _mm256_permute2f128_ps::<0x31>(u[1], u[5]),
                    _mm256_permute2f128_ps::<0x31>(u[2], u[6]),
                    _mm256_permute2f128_ps::<0x31>(u[3], u[7]),
                ];
                for (c, v) in out.into_iter().enumerate() {
                    // SAFETY: row `c0 + c < cb <= cols` of `dst` (`[cols, rows]`), columns
                    // `r0 .. r0 + 8 <= rb <= rows`: inside `dst`, which is borrowed mutably.
                    unsafe { _mm256_storeu_ps(d.add((c0 + c) * rows + r0), v) };
                }
            }
        }
    }

    /// [`weight_grad`] in AVX-512.
    ///
    /// # Safety
    ///
    /// The CPU has AVX-512F; what [`weight_grad`] requires with `S = Avx512`.
    #[target_feature(enable = "avx512f")]
    pub(super) unsafe fn weight_grad_avx512(walk: &Walk, buf: &[f32], dyt: &[f32], dwt: &mut [f32]) {
        // SAFETY: the caller's contract.
        unsafe { weight_grad::<Avx512>(walk, buf, dyt, dwt) }
    }
}

/// Whether the shape is one the kernels handle: a 3x3 kernel, stride 1 or 2 (the same both
/// ways), padding 1, an output width that is a non-zero multiple of 8, an even number of output
/// channels, nothing empty.
pub(crate) fn shape_ok(g: &Geometry) -> bool {
    g.kh == 3
        && g.kw == 3
        && matches!((g.sh, g.sw), (1, 1) | (2, 2))
        && g.ph == 1
        && g.pw == 1
        && g.h > 0
        && g.w > 0
        && g.ow().is_multiple_of(8)
        && g.co > 0
        && g.co.is_multiple_of(2)
        && g.ci > 0
}

/// The most pixels a plane may have for [`small_ok`]: its copies ([`shifted_group`], `3 (h + 2) /
/// h` times the input: 4.5x at 4x4) stay small enough for the cache.
const SMALL_PIXELS: usize = 64;

/// Whether the shape is one the kernels handle through patches ([`Walk::patches`]): a 3x3
/// kernel, stride 1, padding 1, a width that is not a multiple of 8 (those are [`shape_ok`]'s)
/// but a plane of a multiple of 8 pixels, at most [`SMALL_PIXELS`] (Conv-4's 4x4 maps), an even
/// number of output channels, nothing empty.
pub(crate) fn small_ok(g: &Geometry) -> bool {
    let p = g.h * g.w;
    g.kh == 3
        && g.kw == 3
        && (g.sh, g.sw) == (1, 1)
        && g.ph == 1
        && g.pw == 1
        && g.w > 0
        && !g.w.is_multiple_of(8)
        && p > 0
        && p.is_multiple_of(8)
        && p <= SMALL_PIXELS
        && g.co > 0
        && g.co.is_multiple_of(2)
        && g.ci > 0
}

/// [`shape_ok`] at stride 1: the shapes of the bf16 kernels (`direct_bf16`), whose bordered
/// layouts have no strided form.
pub(crate) fn stride_one_ok(g: &Geometry) -> bool {
    shape_ok(g) && g.sh == 1
}

/// What the register tiles ([`image`], [`tile`]) walk: `co` output channels of `oh * ow` pixels,
/// each the sum over `ci` channels of a bordered buffer (channel `c`'s plane from `c * plane`)
/// and over `n` taps, the run of output pixels from (y, x) reading tap `t` at
/// `y * row + x + taps[t]`, consecutive values, one per output pixel (a split run,
/// [`Kernel::fits`]: half of them there, half one `row` further on; [`Walk::reads_inside`]
/// checks that every read lies in the buffer). The weights are packed in
/// the same tap order ([`pack`], [`pack_phase`]).
///
/// The forward convolution ([`Walk::forward`]) reads the bordered image that [`border`] writes,
/// nine taps in the order (ky, kx). At stride 1 a bordered row is `w + 2` values and a tap is a
/// shift by a row or a column. At stride 2 each bordered row is stored as its even columns, then
/// its odd columns, so that the input columns `2x + kx` of consecutive outputs `x` are
/// consecutive: column shift 0 reads the even half, 1 the odd half, 2 the even half one further
/// on, and an output row is two bordered rows. The input gradient at stride 2 is four such walks
/// over the output gradient ([`Walk::input_grad_phase`]). A [`small_ok`] plane is read through
/// three column-shifted copies of each image's channels ([`shifted_group`], [`Walk::patches`]),
/// a walk row per image: a run crosses the plane's rows.
#[derive(Clone, Copy, Debug)]
struct Walk {
    ci: usize,
    co: usize,
    oh: usize,
    ow: usize,
    plane: usize,
    row: usize,
    taps: [usize; 9],
    n: usize,
}

impl Walk {
    /// The forward convolution of `g` (a [`shape_ok`] shape) over [`border`]'s copy.
    fn forward(g: &Geometry) -> Walk {
        let wp = g.w + 2;
        let (row, shift) = if g.sw == 1 { (wp, [0, 1, 2]) } else { (2 * wp, [0, wp.div_ceil(2), 1]) };
        Walk {
            ci: g.ci,
            co: g.co,
            oh: g.oh(),
            ow: g.ow(),
            plane: (g.h + 2) * wp,
            row,
            taps: std::array::from_fn(|k| k / 3 * wp + shift[k % 3]),
            n: 9,
        }
    }

    /// The input gradient of the stride-2 convolution `g` ([`input_grad_shape_ok`]) at the input
    /// pixels of row parity `py` and column parity `px`, over [`border_dy`]'s copy of `dy`
    /// (`[co, oh + 1, ow + 1]`, a zero last row and column): input pixel (2m + py, 2j + px)
    /// receives `dy` at (m + dm, j + dj) through tap (ky, kx), where `(ky, dm)` is `(1, 0)` for
    /// an even row and `(2, 0)`, `(0, 1)` for an odd one (the same for columns). An even height
    /// and width: every parity has `oh = h / 2` rows of `ow = w / 2` pixels. The taps of
    /// [`phase_taps`], in its order.
    fn input_grad_phase(g: &Geometry, py: usize, px: usize) -> Walk {
        let (oh, ow) = (g.oh(), g.ow());
        let taps = phase_taps(py, px);
        let mut offs = [0; 9];
        for (o, &(_, _, dm, dj)) in offs.iter_mut().zip(&taps) {
            *o = dm * (ow + 1) + dj;
        }
        Walk { ci: g.co, co: g.ci, oh, ow, plane: (oh + 1) * (ow + 1), row: ow + 1, taps: offs, n: taps.len() }
    }

    /// The convolution of `g` (a [`small_ok`] shape) over [`shifted_group`]'s copies of
    /// `images` images: each image's `p = h * w` output pixels a row of the walk (`oh = images`,
    /// `ow = p`). With one zero row above and below and no border columns, output pixel
    /// `q = y * w + x` reads tap (ky, kx) at `q + ky * w` of the copy shifted by `kx`, so a run of
    /// `W` outputs (`p` is a multiple of 8) reads `W` consecutive values for every tap, across
    /// the plane's rows. The output is `[co, images, p]`.
    fn patches(g: &Geometry, images: usize) -> Walk {
        let (w, copy) = (g.w, (g.h + 2) * g.w);
        Walk {
            ci: g.ci,
            co: g.co,
            oh: images,
            ow: g.h * w,
            plane: images * 3 * copy,
            row: 3 * copy,
            taps: std::array::from_fn(|t| t % 3 * copy + t / 3 * w),
            n: 9,
        }
    }

    /// The bordered buffer's length: `ci` planes.
    fn len(&self) -> usize {
        self.ci * self.plane
    }

    /// Whether every read of the register tiles lies in a plane, so in a buffer of [`Walk::len`]
    /// values: the last run of `W` (a divisor of `ow`, or twice it, split) outputs, at (oh - 1, ow - W), reads up to
    /// `(oh - 1) * row + ow + max(taps) <= plane`, and every other run less (a split run's second
    /// half, at (oh - 1, 0..ow), the same); and `ow` is a multiple of 8 (the callers check the
    /// build's own lanes, [`Kernel::fits`]). The constructors' arithmetic,
    /// checked where a walk is used.
    fn reads_inside(&self) -> bool {
        let far = self.taps[..self.n].iter().max().map(|t| (self.oh.max(1) - 1) * self.row + self.ow + t);
        self.n > 0 && self.ow.is_multiple_of(8) && far.is_some_and(|f| f <= self.plane)
    }
}

/// The taps (ky, kx, dm, dj) through which input pixel (2m + py, 2j + px) of a stride-2,
/// padding-1 3x3 convolution receives the output gradient at (m + dm, j + dj): input row
/// `2 * oy + ky - 1`, so an even row is output row m through ky = 1, an odd one output row m
/// through ky = 2 and output row m + 1 through ky = 0; the same for columns.
fn phase_taps(py: usize, px: usize) -> Vec<(usize, usize, usize, usize)> {
    let side = |p: usize| if p == 0 { vec![(1, 0)] } else { vec![(2, 0), (0, 1)] };
    let mut taps = Vec::new();
    for (ky, dm) in side(py) {
        for &(kx, dj) in &side(px) {
            taps.push((ky, kx, dm, dj));
        }
    }
    taps
}

/// Whether [`forward`] handles `g`: the shape ([`shape_ok`], or [`small_ok`] through the
/// column-shifted copies) on a CPU with AVX2 and FMA (or with `RELNET_SIMD=portable`), the direct
/// kernels not switched off.
pub(crate) fn covers(g: &Geometry) -> bool {
    (shape_ok(g) || small_ok(g)) && Isa::detect().is_some()
}

/// The register tiles' output channels for tiles of at most `rows` (even) channels, as (first,
/// count): as few tiles as `rows` allows, their (even) sizes as equal as can be, so no tile is
/// left with few accumulators (16 channels at 12 a tile are 8 + 8, not 12 + 4: a tile of 2 or 4
/// has too few accumulators to keep both FMA units busy). A tile of 2 only where `co` is 2.
pub(crate) fn tiles(co: usize, rows: usize) -> Vec<(usize, usize)> {
    let count = co.div_ceil(rows).max(1);
    let (pairs, extra) = (co / 2 / count, co / 2 % count);
    let mut first = 0;
    (0..count)
        .map(|i| {
            let n = 2 * (pairs + usize::from(i < extra));
            let t = (first, n);
            first += n;
            t
        })
        .filter(|&(_, n)| n > 0)
        .collect()
}

/// `[co, ci, 3, 3]` packed tile by tile ([`tiles`] with tiles of at most `rows` channels), a
/// tile of `n` channels from channel `first` at `first * ci * 9` as `[ci * 9][n]`: each tile's
/// weights in the order it reads them.
fn pack(g: &Geometry, weight: &[f32], rows: usize) -> Vec<f32> {
    let taps = g.ci * 9;
    let mut out = vec![0f32; g.co * taps];
    for (first, n) in tiles(g.co, rows) {
        for k in 0..taps {
            for r in 0..n {
                out[first * taps + k * n + r] = weight[(first + r) * taps + k];
            }
        }
    }
    out
}

/// `dst.copy_from_slice(src)` written out in eight-float blocks, for the short rows and planes
/// of the bordered and shifted copies (rows of 4 to 32 floats, planes of up to 64), which made
/// a call to `memcpy` each.
/// (The compiler keeps these as inline moves in `border`, checked in its disassembly; it may
/// turn such a loop back into a `memcpy` call elsewhere.)
#[inline]
fn copy_short(dst: &mut [f32], src: &[f32]) {
    assert_eq!(dst.len(), src.len(), "copy_short: {} values into {}", src.len(), dst.len());
    let (d8, d1) = dst.as_chunks_mut::<8>();
    let (s8, s1) = src.as_chunks::<8>();
    for (d, s) in d8.iter_mut().zip(s8) {
        *d = *s;
    }
    for (d, s) in d1.iter_mut().zip(s1) {
        *d = *s;
    }
}

/// Batch norm's per-channel map followed by a ReLU, `max(v * scale[c] + shift[c], 0)` (the float
/// operations of `fastbn::normalise`, so the same bits), applied to a convolution's input as its
/// bordered copy is made ([`border`]): the convolution of `relu(batch_norm(y))` reads `y` and the
/// normalised activation is never written (`bn_relu_conv`).
#[derive(Clone, Copy, Debug)]
pub(crate) struct BnRelu<'a> {
    pub scale: &'a [f32],
    pub shift: &'a [f32],
}

impl BnRelu<'_> {
    /// `max(v * a + b, 0)` with channel `c`'s `a` and `b`.
    #[inline]
    fn value(&self, c: usize, v: f32) -> f32 {
        (v * self.scale[c] + self.shift[c]).max(0.0)
    }

    /// [`Self::value`] of each of `src` into `dst`, a row of channel `c`.
    #[inline]
    fn row(&self, c: usize, dst: &mut [f32], src: &[f32]) {
        let (a, b) = (self.scale[c], self.shift[c]);
        for (d, &v) in dst.iter_mut().zip(src) {
            *d = (v * a + b).max(0.0);
        }
    }
}

/// What a convolution's bordered copy does to each value of its input, so that the convolution
/// of `map(x)` reads `x` and `map(x)` is never written.
#[derive(Clone, Copy, Debug)]
pub(crate) enum Map<'a> {
    /// Batch norm + ReLU ([`BnRelu`]; `bn_relu_conv` at fp32).
    BnRelu(BnRelu<'a>),
    /// Rounded to bf16 (`fastconv::round_value`): the emulated bf16 convolution's rounded
    /// operand (`fastconv::forward_emulated`). The forward convolution ([`forward_mapped`])
    /// also rounds its output, each image's as soon as the kernel has written it (still in the
    /// caches; Winograd's tiles the same); in the weight gradient it rounds `dy` as well
    /// ([`weight_grad_image_with`]). The rounding is `bf16_layout`'s vector code.
    Bf16,
    /// [`Map::BnRelu`], then rounded to bf16 as [`Map::Bf16`] rounds (the output and, in the
    /// weight gradient, `dy` too): `bn_relu_conv` at bf16 precision, on the emulated numerics.
    BnReluBf16(BnRelu<'a>),
}

impl Map<'_> {
    /// Whether the map rounds to bf16 ([`Map::Bf16`], [`Map::BnReluBf16`]).
    pub(crate) fn bf16(&self) -> bool {
        matches!(self, Map::Bf16 | Map::BnReluBf16(_))
    }
}

impl<'a> From<BnRelu<'a>> for Map<'a> {
    fn from(m: BnRelu<'a>) -> Self {
        Map::BnRelu(m)
    }
}

/// The bordered copy of one image `x` (`[ci, h, w]`) into `buf` (`[ci, h+2, w+2]`, zero border),
/// each row in [`Walk::forward`]'s order for `g`'s stride; with `map`, each value mapped (the
/// border stays zero: the padding of the mapped image): [`Map::BnRelu`] as it is copied,
/// [`Map::Bf16`] in one pass over the copy, [`Map::BnReluBf16`] both.
fn border(g: &Geometry, x: &[f32], buf: &mut Vec<f32>, map: Option<Map>) {
    border_as(g, x, buf, map, g.sw != 1)
}

/// [`border`], each bordered row stored as its even columns, then its odd columns, where `split`
/// is set (the stride-2 walk's order, and the Winograd tiles' at stride 1: `winograd.rs`), in
/// column order otherwise.
pub(crate) fn border_as(g: &Geometry, x: &[f32], buf: &mut Vec<f32>, map: Option<Map>, split: bool) {
    // One instantiation of one body per map (one body choosing per row compiled the plain rows
    // into a `memcpy` call each).
    match map {
        None => border_with(g, x, buf, split, |_, dst, src| copy_short(dst, src), |_, v| v),
        Some(Map::Bf16) => {
            // The plain copy, then the whole bordered buffer rounded in place while it is in the
            // caches: one vector pass an image (a rounding call a row cost more than the
            // rounding; the border's zeros stay zeros).
            border_as(g, x, buf, None, split);
            super::bf16_layout::round_f32_in_place(buf);
        }
        Some(Map::BnReluBf16(m)) => {
            // As `Map::Bf16`: the mapped copy, then one rounding pass over it.
            border_as(g, x, buf, Some(Map::BnRelu(m)), split);
            super::bf16_layout::round_f32_in_place(buf);
        }
        Some(Map::BnRelu(m)) => {
            assert!(
                m.scale.len() == g.ci && m.shift.len() == g.ci,
                "border: a map of {} and {} values for {} channels",
                m.scale.len(),
                m.shift.len(),
                g.ci
            );
            border_with(g, x, buf, split, |c, dst, src| m.row(c, dst, src), |c, v| m.value(c, v))
        }
    }
}

/// [`border_as`], each plain row copied by `row(channel, dst, src)` and each value of a split
/// row by `value(channel, v)`. A function of its own per instantiation: inlined into `border`,
/// the plain copy's rows became a `memcpy` call each (checked in the disassembly).
#[inline(never)]
fn border_with(
    g: &Geometry,
    x: &[f32],
    buf: &mut Vec<f32>,
    split: bool,
    row_of: impl Fn(usize, &mut [f32], &[f32]),
    value: impl Fn(usize, f32) -> f32,
) {
    let (hp, wp) = (g.h + 2, g.w + 2);
    if buf.len() != g.ci * hp * wp {
        buf.clear();
        buf.resize(g.ci * hp * wp, 0.0);
    }
    // Every position is written: the border rows whole, then each inner row whole (the buffer
    // is reused from image to image, never zeroed whole).
    for (c, plane) in buf.chunks_exact_mut(hp * wp).enumerate() {
        plane[..wp].fill(0.0);
        plane[(hp - 1) * wp..].fill(0.0);
        for y in 0..g.h {
            let row = &mut plane[(y + 1) * wp..(y + 2) * wp];
            let src = &x[(c * g.h + y) * g.w..(c * g.h + y + 1) * g.w];
            if !split {
                row[0] = 0.0;
                row[wp - 1] = 0.0;
                row_of(c, &mut row[1..wp - 1], src);
            } else {
                // Bordered column 2j (the even half) is input column 2j - 1, bordered column
                // 2j + 1 (the odd half) input column 2j; columns 0 and w + 1 are the border.
                row.fill(0.0);
                let (even, odd) = row.split_at_mut(wp.div_ceil(2));
                let pairs = src.chunks_exact(2);
                if let [last] = pairs.remainder() {
                    odd[g.w / 2] = value(c, *last);
                }
                for ((p, o), e) in pairs.zip(odd.iter_mut()).zip(&mut even[1..]) {
                    *o = value(c, p[0]);
                    *e = value(c, p[1]);
                }
            }
        }
    }
}

/// The convolution of `x` (`[n, ci, h, w]`) with `weight` (`[co, ci, 3, 3]`), padding 1:
/// `[n, co, h, w]`, one image per rayon task ([`forward_small_with`]: one group of images), in
/// the widest build this CPU runs. Only for a `g` that [`covers`] accepts.
pub(crate) fn forward(g: &Geometry, x: &[f32], weight: &[f32]) -> Vec<f32> {
    assert!(covers(g));
    let isa = Isa::detect().expect("covers checked it");
    if shape_ok(g) {
        forward_with(Kernel::pick_plane(isa, g.ow(), g.oh()), g, x, weight, None)
    } else {
        forward_small_with(Kernel::pick(isa, g.h * g.w), g, x, weight)
    }
}

/// The column-shifted copies of `images` images `x` (`[images, ci, h, w]`, a [`small_ok`]
/// shape) into `buf`, as [`Walk::patches`] reads them: for channel `c` of image `i`, at
/// `((c * images + i) * 3 + kx) * (h + 2) * w`, the plane with one zero row above and below and
/// its columns shifted so that column `x` holds input column `x + kx - 1` (0 outside the
/// image). Every value of `buf` is written; a `buf` of the right length is not zeroed first.
fn shifted_group(g: &Geometry, x: &[f32], images: usize, buf: &mut Vec<f32>) {
    let (w, p) = (g.w, g.h * g.w);
    let copy = (g.h + 2) * w;
    assert_eq!(x.len(), images * g.ci * p, "shifted_group: {} values for {images} images of {g:?}", x.len());
    if buf.len() != g.ci * images * 3 * copy {
        buf.clear();
        buf.resize(g.ci * images * 3 * copy, 0.0);
    }
    // Image `i`'s channel `c` is `x[(i * ci + c) * p ..]`; its copies sit at `(c * images + i) * 3`.
    for (j, copies) in buf.chunks_exact_mut(3 * copy).enumerate() {
        let (c, i) = (j / images, j % images);
        let src = &x[(i * g.ci + c) * p..][..p];
        for (kx, plane) in copies.chunks_exact_mut(copy).enumerate() {
            let (top, rest) = plane.split_at_mut(w);
            let (inner, bottom) = rest.split_at_mut(p);
            top.fill(0.0);
            bottom.fill(0.0);
            // The rows are consecutive in both: the plane is copied whole, shifted by one value
            // for kx = 0 and 2, then the column each row takes from its neighbour is zeroed.
            match kx {
                0 => {
                    inner[0] = 0.0;
                    copy_short(&mut inner[1..], &src[..p - 1]);
                    inner.iter_mut().step_by(w).for_each(|v| *v = 0.0);
                }
                1 => copy_short(inner, src),
                _ => {
                    copy_short(&mut inner[..p - 1], &src[1..]);
                    inner.iter_mut().skip(w - 1).step_by(w).for_each(|v| *v = 0.0);
                }
            }
        }
    }
}

/// Images per forward group of a [`small_ok`] shape with `p` pixels a plane: about 32 output
/// pixels, two runs of 16 lanes.
fn forward_group(p: usize) -> usize {
    (32 / p).max(1)
}

/// [`forward`] of a [`small_ok`] shape in the build `kernel`, which must run here and whose width
/// divides `h * w`: the images taken [`forward_group`] at a time, their patches
/// ([`shifted_group`]) walked by the same register tiles ([`Walk::patches`]), then each image's
/// channels copied out of the group's `[co, images, p]` result. The sums are those of the
/// bordered walk: channels, then taps, one rounding per multiply-add.
pub(crate) fn forward_small_with(kernel: Kernel, g: &Geometry, x: &[f32], weight: &[f32]) -> Vec<f32> {
    assert!(small_ok(g), "{g:?} is not a shape the patch walk covers");
    assert!(kernel.runs_here(), "{kernel:?} does not run on this CPU");
    let p = g.h * g.w;
    assert!(p.is_multiple_of(kernel.lanes()), "{kernel:?} needs planes of a multiple of {} pixels", kernel.lanes());
    assert_eq!(x.len(), g.n * g.ci * p);
    assert_eq!(weight.len(), g.co * g.ci * 9);
    let packed = pack(g, weight, kernel.rows());
    let (len_in, len_out, group) = (g.ci * p, g.co * p, forward_group(p));
    let mut out: Vec<f32> = Vec::with_capacity(g.n * len_out);
    out.spare_capacity_mut()[..g.n * len_out]
        .par_chunks_mut(group * len_out)
        .zip(x.par_chunks(group * len_in))
        .for_each_init(
            || (Vec::new(), Vec::new()),
            |(buf, tmp), (o, xg)| {
                let images = xg.len() / len_in;
                shifted_group(g, xg, images, buf);
                let walk = Walk::patches(g, images);
                assert!(walk.reads_inside() && buf.len() == walk.len(), "{walk:?} reads outside {} values", buf.len());
                tmp.clear();
                tmp.resize(g.co * images * p, 0.0);
                // SAFETY: what `Kernel::image` requires: a CPU that runs the build (asserted), the
                // patch walk of a `small_ok` shape over `shifted_group`'s buffer, reading inside it
                // (asserted), `ow = p` a multiple of the build's lanes (asserted), `packed` the
                // `co * ci * 9` weights packed for the build's rows, and `tmp` holding
                // `co * images * p` values, borrowed mutably.
                unsafe { kernel.image(&walk, buf, &packed, tmp.as_mut_ptr()) };
                for c in 0..g.co {
                    for i in 0..images {
                        let src = &tmp[(c * images + i) * p..][..p];
                        for (d, &v) in o[i * len_out + c * p..][..p].iter_mut().zip(src) {
                            d.write(v);
                        }
                    }
                }
            },
        );
    // SAFETY: the capacity is `n * len_out`; `x` holds `n` images and the chunks of `x` and of
    // the output pair up (`group` images each, the last one fewer), and each group's loop wrote
    // channel `c` of image `i` for every `c < co`, `i < images`: every value, before
    // `for_each_init` returned (a panic would have propagated before this line).
    unsafe { out.set_len(g.n * len_out) };
    out
}

/// Whether the kernels take `g` with a [`BnRelu`]-mapped input, forward and weight gradient:
/// [`covers_weight_grad`] through the bordered walk ([`shape_ok`]).
pub(crate) fn covers_mapped(g: &Geometry) -> bool {
    covers_weight_grad(g) && shape_ok(g)
}

/// The convolution of `map(x)` ([`Map`], applied in the bordered copy) with `weight`, for a
/// `g` that [`covers`] and [`shape_ok`] accept, in the widest build this CPU runs: the bits of
/// [`forward`] on the mapped input, without writing it; with a bf16 map ([`Map::bf16`]), those
/// bits rounded to bf16 (`fastconv::round_value`).
pub(crate) fn forward_mapped(g: &Geometry, x: &[f32], weight: &[f32], map: Map) -> Vec<f32> {
    assert!(covers(g) && shape_ok(g), "{g:?} is not a shape the bordered walk covers");
    forward_with(Kernel::pick_plane(Isa::detect().expect("covers checked it"), g.ow(), g.oh()), g, x, weight, Some(map))
}

/// [`forward`] (of `map(x)` with `map`, the output rounded with a bf16 map) in the build
/// `kernel`, which must run here and whose runs fit the output plane ([`Kernel::fits`]).
/// Winograd's tiles take it where `RELNET_WINOGRAD=on` asks for them.
pub(crate) fn forward_with(kernel: Kernel, g: &Geometry, x: &[f32], weight: &[f32], map: Option<Map>) -> Vec<f32> {
    if super::winograd::runs(g) {
        return super::winograd::forward_with(kernel, g, x, weight, map);
    }
    direct_with(kernel, g, x, weight, map)
}

/// [`forward_with`] on the direct kernel, also where Winograd's tiles would run
/// (`RELNET_WINOGRAD=on`).
pub(crate) fn direct_with(kernel: Kernel, g: &Geometry, x: &[f32], weight: &[f32], map: Option<Map>) -> Vec<f32> {
    assert!(shape_ok(g), "{g:?} is not a shape the direct kernel covers");
    assert!(kernel.runs_here(), "{kernel:?} does not run on this CPU");
    assert!(kernel.fits(g.ow(), g.oh()), "{kernel:?}'s runs do not tile {}x{} output planes", g.oh(), g.ow());
    assert_eq!(x.len(), g.n * g.ci * g.h * g.w);
    assert_eq!(weight.len(), g.co * g.ci * 9);
    let packed = pack(g, weight, kernel.rows());
    let (len_in, len_out) = (g.ci * g.h * g.w, g.co * g.oh() * g.ow());
    // Not zeroed first: `forward_image` writes every value.
    let mut out: Vec<f32> = Vec::with_capacity(g.n * len_out);
    out.spare_capacity_mut()[..g.n * len_out]
        .par_chunks_mut(len_out)
        .zip(x.par_chunks(len_in))
        .for_each_init(Vec::new, |buf, (o, xi)| forward_image(kernel, g, xi, &packed, o, buf, map));
    // SAFETY: the capacity is `n * len_out`; `len_in` and `len_out` are non-zero (`shape_ok`)
    // and `x` holds `n` images, so the zip pairs each of the `n` chunks of `len_out` values
    // with an image, and `forward_image` wrote each chunk whole before `for_each_init` returned
    // (had it panicked, the panic would have propagated before this line).
    unsafe { out.set_len(g.n * len_out) };
    out
}

/// The convolution of one image `x` (`[ci, h, w]`) with the weights `packed` ([`pack`] for
/// `kernel`'s tiles), into `out` (`[co, oh, ow]`): every value of `out` is written ([`forward`]
/// relies on it), and with a bf16 map rounded to bf16 right after. `buf` is scratch (the
/// bordered image).
fn forward_image(
    kernel: Kernel,
    g: &Geometry,
    x: &[f32],
    packed: &[f32],
    out: &mut [MaybeUninit<f32>],
    buf: &mut Vec<f32>,
    map: Option<Map>,
) {
    assert!(shape_ok(g) && kernel.runs_here());
    assert_eq!(x.len(), g.ci * g.h * g.w);
    assert_eq!(out.len(), g.co * g.oh() * g.ow());
    assert_eq!(packed.len(), g.co * g.ci * 9);
    border(g, x, buf, map);
    let walk = Walk::forward(g);
    assert!(walk.reads_inside() && buf.len() == walk.len(), "{walk:?} reads outside {} values", buf.len());
    // SAFETY: the asserts give what `Kernel::image` requires: a CPU that runs the build, the
    // walk of the shape over `border`'s copy (reading inside it), the lengths of `buf`, `packed`
    // and `out` (that the build's runs fit the output plane `Kernel::image` asserts); `out` is borrowed
    // mutably, so nothing else accesses it.
    unsafe { kernel.image(&walk, buf, packed, out.as_mut_ptr().cast::<f32>()) }
    if map.is_some_and(|m| m.bf16()) {
        // A bf16 map's output rounded while this image's is still in the caches (a pass over
        // the whole batch afterwards would read and write it from memory).
        // SAFETY: `Kernel::image` wrote every value of `out` (its contract: the runs tile the
        // output plane and `tiles` covers every channel), so all of them are initialised.
        let out = unsafe { std::slice::from_raw_parts_mut(out.as_mut_ptr().cast::<f32>(), out.len()) };
        super::bf16_layout::round_f32_in_place(out);
    }
}

/// Whether the shape is one [`input_grad_with`] handles: a 3x3 kernel, stride 2, padding 1, an
/// even height and width (so each parity of input pixels is `oh` rows of `ow`), `ow` a non-zero
/// multiple of 8, an even number of input channels (the register tiles' channels here), at
/// least one output channel.
fn input_grad_shape_ok(g: &Geometry) -> bool {
    g.kh == 3
        && g.kw == 3
        && (g.sh, g.sw) == (2, 2)
        && (g.ph, g.pw) == (1, 1)
        && g.h > 0
        && g.w > 0
        && g.h.is_multiple_of(2)
        && g.w.is_multiple_of(2)
        && g.ow() > 0
        && g.ow().is_multiple_of(8)
        && g.ci > 0
        && g.ci.is_multiple_of(2)
        && g.co > 0
}

/// Whether [`input_grad`] handles `g`: the shape ([`input_grad_shape_ok`]) on a CPU that runs
/// the kernels.
pub(crate) fn covers_input_grad(g: &Geometry) -> bool {
    input_grad_shape_ok(g) && Isa::detect().is_some()
}

/// `[co, ci, 3, 3]` packed for the parity (`py`, `px`) of [`input_grad`]: tile by tile of input
/// channels ([`tiles`] with tiles of at most `rows`), a tile of `n` channels from channel
/// `first` at `first * co * t` as `[co][t][n]`, the `t` taps of [`phase_taps`] in its order.
fn pack_phase(g: &Geometry, weight: &[f32], rows: usize, py: usize, px: usize) -> Vec<f32> {
    let taps = phase_taps(py, px);
    let t = taps.len();
    let mut out = vec![0f32; g.ci * g.co * t];
    for (first, n) in tiles(g.ci, rows) {
        for o in 0..g.co {
            for (k, &(ky, kx, _, _)) in taps.iter().enumerate() {
                for r in 0..n {
                    out[first * g.co * t + (o * t + k) * n + r] = weight[((o * g.ci + first + r) * 3 + ky) * 3 + kx];
                }
            }
        }
    }
    out
}

/// One image's output gradient `dy` (`[co, oh, ow]`) into `buf` as `[co, oh + 1, ow + 1]`, a
/// zero last row and column: where the odd input rows and columns read one output further on.
fn border_dy(g: &Geometry, dy: &[f32], buf: &mut Vec<f32>) {
    let (oh, ow) = (g.oh(), g.ow());
    let wp = ow + 1;
    if buf.len() != g.co * (oh + 1) * wp {
        buf.clear();
        buf.resize(g.co * (oh + 1) * wp, 0.0);
    }
    // Every position is written (the buffer is reused from image to image).
    for (o, plane) in buf.chunks_exact_mut((oh + 1) * wp).enumerate() {
        for y in 0..oh {
            let row = &mut plane[y * wp..(y + 1) * wp];
            copy_short(&mut row[..ow], &dy[(o * oh + y) * ow..(o * oh + y + 1) * ow]);
            row[ow] = 0.0;
        }
        plane[oh * wp..].fill(0.0);
    }
}

/// The input gradient of the stride-2 convolution `g` ([`covers_input_grad`]) for the output
/// gradient `dy` (`[n, co, oh, ow]`) and `weight` (`[co, ci, 3, 3]`): `[n, ci, h, w]`, one
/// image per rayon task, in the widest build this CPU runs.
///
/// Each input pixel of row parity `py` and column parity `px` receives the output gradient
/// through one, two or four taps ([`phase_taps`]), so the gradient is four small direct
/// convolutions of `dy` (one per parity, [`Walk::input_grad_phase`]) by the same register
/// tiles as the forward pass, each written into its rows and columns of the image: no patch
/// matrix, no scatter-add. Each value is summed over output channels, then taps, in a fixed
/// order: the same bits on any thread count and any instruction set.
pub(crate) fn input_grad(g: &Geometry, dy: &[f32], weight: &[f32]) -> Vec<f32> {
    assert!(covers_input_grad(g));
    let isa = Isa::detect().expect("covers_input_grad checked it");
    input_grad_with(Kernel::pick_plane(isa, g.ow(), g.oh()), g, dy, weight)
}

/// [`input_grad`] in the build `kernel`, which must run here and whose runs fit the parity planes
/// (`g.oh()` rows of `g.ow()`, [`Kernel::fits`]).
pub(crate) fn input_grad_with(kernel: Kernel, g: &Geometry, dy: &[f32], weight: &[f32]) -> Vec<f32> {
    assert!(input_grad_shape_ok(g), "{g:?} is not a shape the direct input gradient covers");
    assert!(kernel.runs_here(), "{kernel:?} does not run on this CPU");
    assert!(kernel.fits(g.ow(), g.oh()), "{kernel:?}'s runs do not tile {}x{} output planes", g.oh(), g.ow());
    let (oh, ow) = (g.oh(), g.ow());
    assert_eq!(dy.len(), g.n * g.co * oh * ow);
    assert_eq!(weight.len(), g.co * g.ci * 9);
    let phases: Vec<(Walk, Vec<f32>)> = [(0, 0), (0, 1), (1, 0), (1, 1)]
        .into_iter()
        .map(|(py, px)| (Walk::input_grad_phase(g, py, px), pack_phase(g, weight, kernel.rows(), py, px)))
        .collect();
    let (len_in, len_dy, len_part) = (g.ci * g.h * g.w, g.co * oh * ow, g.ci * oh * ow);
    let mut dx = vec![0f32; g.n * len_in];
    dx.par_chunks_mut(len_in).zip(dy.par_chunks(len_dy)).for_each_init(
        || (Vec::new(), Vec::new()),
        |(buf, parts): &mut (Vec<f32>, Vec<f32>), (dxi, dyi)| {
            border_dy(g, dyi, buf);
            // The four parities' gradients, `[ci, oh, ow]` each, in the order of `phases`.
            parts.resize(4 * len_part, 0.0);
            for ((walk, packed), part) in phases.iter().zip(parts.chunks_exact_mut(len_part)) {
                assert!(walk.reads_inside() && buf.len() == walk.len() && part.len() == walk.co * walk.oh * walk.ow);
                assert_eq!(packed.len(), walk.co * walk.ci * walk.n);
                // SAFETY: the asserts give what `Kernel::image` requires: a CPU that runs the
                // build, the walk of a shape `input_grad_shape_ok` accepts (`oh = h / 2` rows of
                // `ow = w / 2`, which the build's runs fit: `kernel.fits(ow, oh)`, asserted at the
                // top) over `border_dy`'s copy, reading
                // inside it, and the lengths of `buf`, `packed` and `part`; `part` is borrowed
                // mutably, so nothing else accesses it.
                unsafe { kernel.image(walk, buf, packed, part.as_mut_ptr()) };
            }
            // Input pixel (2m + py, 2j + px) of channel c is parity (py, px)'s (c, m, j): each
            // input row interleaves the even and the odd columns of its row parity.
            for c in 0..g.ci {
                for iy in 0..g.h {
                    let (py, m) = (iy % 2, iy / 2);
                    let at = 2 * py * len_part + (c * oh + m) * ow;
                    let (even, odd) = (&parts[at..at + ow], &parts[at + len_part..at + len_part + ow]);
                    let row = &mut dxi[(c * g.h + iy) * g.w..(c * g.h + iy + 1) * g.w];
                    for ((d, e), o) in row.chunks_exact_mut(2).zip(even).zip(odd) {
                        d[0] = *e;
                        d[1] = *o;
                    }
                }
            }
        },
    );
    dx
}

/// Whether [`weight_grad_images`] handles `g`: what [`covers`] takes, with a multiple of 8
/// output channels.
pub(crate) fn covers_weight_grad(g: &Geometry) -> bool {
    covers(g) && g.co.is_multiple_of(8)
}

/// Adds one image's share of the weight gradient to `dwt`, which holds `dW` transposed
/// (`[ci * 9, co]`): `dW[o, k] += sum_p dy[o, p] * x[k at p]`, with `x` the image (`[ci, h, w]`)
/// and `dy` its output gradient (`[co, oh, ow]`). `buf` and `dyt` are scratch (the bordered
/// image and `dy` as `[oh*ow, co]`), in the build `kernel`, which must run here and whose width
/// divides `g.co`; only for a `g` that [`shape_ok`] accepts ([`weight_grad_images`] chooses the
/// build and takes the [`small_ok`] shapes too). With `map`, the gradient for the input
/// `map(x)` ([`Map`], applied in the bordered copy); with a bf16 map, for the rounded `dy` too.
///
/// The kernel is the forward's turned around: a tile of `TAPS` taps by two vectors of output
/// channels, each pixel's `dy` values loaded as vectors, each tap's input value broadcast (a
/// layer's last tiles may have fewer taps, or one vector). Pixels are taken a band of rows at a
/// time (about 128 pixels: the band's inputs and `dy` stay in L1 while every tile passes over
/// them), and each tile sums the band's pixels in order onto `dwt`: a fixed order, so the same
/// bits on any thread count and any width.
#[allow(clippy::too_many_arguments)]
pub(crate) fn weight_grad_image_with(
    kernel: Kernel,
    g: &Geometry,
    x: &[f32],
    dy: &[f32],
    dwt: &mut [f32],
    buf: &mut Vec<f32>,
    dyt: &mut Vec<f32>,
    map: Option<Map>,
) {
    assert!(shape_ok(g), "{g:?} is not a shape the direct kernel covers");
    assert!(kernel.runs_here(), "{kernel:?} does not run on this CPU");
    assert!(g.co.is_multiple_of(kernel.lanes()), "{kernel:?} needs a multiple of {} channels", kernel.lanes());
    assert_eq!(x.len(), g.ci * g.h * g.w);
    assert_eq!(dy.len(), g.co * g.oh() * g.ow());
    assert_eq!(dwt.len(), g.co * g.ci * 9);
    border(g, x, buf, map);
    let walk = Walk::forward(g);
    assert!(walk.reads_inside() && buf.len() == walk.len(), "{walk:?} reads outside {} values", buf.len());
    let p = g.oh() * g.ow();
    // Every value is overwritten below: only a new length needs the resize.
    if dyt.len() != p * g.co {
        dyt.clear();
        dyt.resize(p * g.co, 0.0);
    }
    transpose(dy, g.co, p, dyt);
    if map.is_some_and(|m| m.bf16()) {
        // The rounded `dy` (rounding and transposing commute).
        super::bf16_layout::round_f32_in_place(dyt);
    }
    // SAFETY: the asserts give what `Kernel::weight_grad` requires: a CPU that runs the build,
    // the shape, `co` a multiple of its lanes, the length of `dwt`, the forward walk reading
    // inside `buf` (the weight gradient reads what the forward tiles read); `border` and the
    // resize of `dyt` give the lengths of `buf` and `dyt`.
    unsafe { kernel.weight_grad(&walk, buf, dyt, dwt) }
}

/// Adds the weight gradient of the images `x` (`[b, ci, h, w]`, any `b`) for their output
/// gradient `dy` to `dwt` (`[ci * 9, co]`), image after image in order: [`weight_grad_image_with`]
/// one image at a time, or, for a [`small_ok`] shape, groups of images through their patches
/// ([`weight_grad_small_with`]). Each value of `dwt` receives the same products in the same
/// order either way. In the widest build this CPU runs; only for a `g` that
/// [`covers_weight_grad`] accepts. `buf` and `dyt` are scratch. With `map` (a [`shape_ok`]
/// shape only), as [`weight_grad_image_with`].
pub(crate) fn weight_grad_images(
    g: &Geometry,
    x: &[f32],
    dy: &[f32],
    dwt: &mut [f32],
    buf: &mut Vec<f32>,
    dyt: &mut Vec<f32>,
    map: Option<Map>,
) {
    assert!(covers_weight_grad(g));
    assert!(map.is_none() || shape_ok(g), "{g:?}: a mapped input needs the bordered walk");
    let kernel = Kernel::pick(Isa::detect().expect("covers_weight_grad checked it"), g.co);
    if shape_ok(g) {
        let (len_in, len_out) = (g.ci * g.h * g.w, g.co * g.oh() * g.ow());
        assert_eq!(x.len() / len_in * len_out, dy.len(), "weight_grad_images: {} and {} values", x.len(), dy.len());
        for (xi, dyi) in x.chunks_exact(len_in).zip(dy.chunks_exact(len_out)) {
            weight_grad_image_with(kernel, g, xi, dyi, dwt, buf, dyt, map);
        }
    } else {
        weight_grad_small_with(kernel, g, x, dy, dwt, buf, dyt);
    }
}

/// [`weight_grad_images`] for a [`small_ok`] shape in the build `kernel`, which must run here
/// and whose width divides `g.co`: groups of up to `128 / p` images (about 128 pixels, the band
/// the tiles sum at a time), their patches ([`shifted_group`]) and their `dy` transposed to
/// `[images * p, co]`, walked by the weight gradient's tiles ([`Walk::patches`]).
pub(crate) fn weight_grad_small_with(
    kernel: Kernel,
    g: &Geometry,
    x: &[f32],
    dy: &[f32],
    dwt: &mut [f32],
    buf: &mut Vec<f32>,
    dyt: &mut Vec<f32>,
) {
    assert!(small_ok(g), "{g:?} is not a shape the patch walk covers");
    assert!(kernel.runs_here(), "{kernel:?} does not run on this CPU");
    assert!(g.co.is_multiple_of(kernel.lanes()), "{kernel:?} needs a multiple of {} channels", kernel.lanes());
    let p = g.h * g.w;
    let (len_in, len_out) = (g.ci * p, g.co * p);
    assert!(
        x.len().is_multiple_of(len_in) && dy.len() == x.len() / len_in * len_out,
        "weight_grad_small_with: {} input and {} gradient values for {g:?}",
        x.len(),
        dy.len()
    );
    assert_eq!(dwt.len(), g.co * g.ci * 9);
    let group = (128 / p).max(1);
    for (xg, dyg) in x.chunks(group * len_in).zip(dy.chunks(group * len_out)) {
        let images = xg.len() / len_in;
        shifted_group(g, xg, images, buf);
        let walk = Walk::patches(g, images);
        assert!(walk.reads_inside() && buf.len() == walk.len(), "{walk:?} reads outside {} values", buf.len());
        dyt.clear();
        dyt.resize(images * p * g.co, 0.0);
        for (dyi, dst) in dyg.chunks_exact(len_out).zip(dyt.chunks_exact_mut(p * g.co)) {
            transpose(dyi, g.co, p, dst);
        }
        // SAFETY: what `Kernel::weight_grad` requires: a CPU that runs the build (asserted), the
        // nine-tap patch walk of a `small_ok` shape over `shifted_group`'s buffer, reading inside
        // it (asserted), `co` a multiple of the build's lanes (asserted), `dyt` the group's
        // `images * p` pixels by `co` (resized above), `dwt` `ci * 9 * co` values (asserted).
        unsafe { kernel.weight_grad(&walk, buf, dyt, dwt) }
    }
}

/// `dst[i * rows + r] = src[r * cols + i]`: `src` (`[rows, cols]`) transposed into `dst`
/// (`[cols, rows]`), in 8 x 8 blocks where both sides allow (a block reads eight runs of eight
/// values and writes eight), element by element at the edges. The blocks are moved in 256-bit
/// AVX registers (eight loads, 24 shuffles, eight stores) where the direct kernels run AVX2 or wider,
/// in plain Rust otherwise (`RELNET_SIMD=portable` included); it is a copy, so the two agree.
fn transpose(src: &[f32], rows: usize, cols: usize, dst: &mut [f32]) {
    transpose_with(Isa::detect().is_some_and(|isa| isa >= Isa::Avx2), src, rows, cols, dst)
}

/// [`transpose`], its blocks in AVX2 registers where `avx2` (which then must run here) or in
/// plain Rust.
fn transpose_with(avx2: bool, src: &[f32], rows: usize, cols: usize, dst: &mut [f32]) {
    let len = rows.checked_mul(cols).unwrap_or_else(|| panic!("transpose: {rows} x {cols} overflows usize"));
    assert!(
        src.len() == len && dst.len() == len,
        "transpose: {} and {} values for {rows} x {cols}",
        src.len(),
        dst.len()
    );
    let (rb, cb) = (rows - rows % 8, cols - cols % 8);
    #[cfg(target_arch = "x86_64")]
    if avx2 {
        assert!(std::is_x86_feature_detected!("avx2"), "transpose: AVX2 asked for on a CPU without it");
        // SAFETY: the CPU has AVX2 (asserted); `src` and `dst` hold `rows * cols` values
        // (asserted above, the product checked); `rb = rows - rows % 8` and `cb = cols - cols % 8`
        // are multiples of 8 and at most `rows` and `cols`.
        unsafe { x86::transpose_blocks_avx2(src, rows, cols, rb, cb, dst) };
    }
    #[cfg(not(target_arch = "x86_64"))]
    assert!(!avx2, "transpose: AVX2 asked for on a CPU that is not x86-64");
    if !avx2 {
        for r0 in (0..rb).step_by(8) {
            for c0 in (0..cb).step_by(8) {
                let mut t = [[0f32; 8]; 8];
                for (r, row) in t.iter_mut().enumerate() {
                    row.copy_from_slice(&src[(r0 + r) * cols + c0..][..8]);
                }
                for c in 0..8 {
                    let out: &mut [f32; 8] = (&mut dst[(c0 + c) * rows + r0..][..8]).try_into().expect("8 values");
                    for r in 0..8 {
                        out[r] = t[r][c];
                    }
                }
            }
        }
    }
    // The edges: the last `rows % 8` rows whole, and the last `cols % 8` columns of the rest.
    for r in 0..rows {
        let from = if r < rb { cb } else { 0 };
        for c in from..cols {
            dst[c * rows + r] = src[r * cols + c];
        }
    }
}

/// Every tile of one image: writes each of the `co * oh * ow` values at `out`. Pixel runs outer (a
/// run's inputs stay in L1 across the output channel tiles), output channel tiles inner.
///
/// # Safety
///
/// The CPU has `S`'s features; `walk` is [`Walk::forward`] of a shape [`shape_ok`] accepts, with
/// `buf` the bordered image ([`border`]), or [`Walk::input_grad_phase`] of a shape
/// [`input_grad_shape_ok`] accepts, with `buf` the bordered output gradient ([`border_dy`]), or
/// [`Walk::patches`] of a shape [`small_ok`] accepts, with `buf` the column-shifted copies of
/// the same images ([`shifted_group`]); `walk.reads_inside()`; `walk.ow` is a multiple of `S::W`,
/// or half of it with `walk.oh` even (split runs, [`Kernel::fits`]; never for the patch walk,
/// whose `ow` its callers make a multiple of the lanes); `buf` holds `walk.len()` values,
/// `packed` the packed weights
/// (`co * ci * n`, [`pack`] or [`pack_phase`] with `S::ROWS`), and `out` is valid for writes of
/// `co * oh * ow` floats that nothing else accesses during the call.
#[inline(always)]
unsafe fn image<S: Simd>(walk: &Walk, buf: &[f32], packed: &[f32], out: *mut f32) {
    // SAFETY: the caller's contract, which is `runs`'s, with `SPLIT` exactly where `ow` is half
    // of `W` (so, by the contract, `oh` is even; the 8-lane builds never split: `ow` is a
    // multiple of 8, so never half of their lanes).
    unsafe {
        if S::W >= 16 && 2 * walk.ow == S::W {
            runs::<S, true>(walk, buf, packed, out)
        } else {
            runs::<S, false>(walk, buf, packed, out)
        }
    }
}

/// Calls `$tile::<$pre, RR, N, $post>($args)` with `RR = $rows` output channels (an even count up
/// to 12: what [`tiles`] yields) and `N = $runs` runs (1 or 2) as const parameters: the dispatch
/// of the forward tiles of the fp32 kernels ([`runs`]) and of the bf16 ones (`direct_bf16::runs`).
/// `$tile` is the bare name of an `unsafe fn` in scope where the macro is called. It adds no
/// `unsafe` of its own: the caller's `unsafe` block and `SAFETY` comment cover the call.
macro_rules! tile_by_shape {
    ($rows:expr, $runs:expr, $tile:ident::<$pre:ty; $post:tt>($($arg:expr),* $(,)?)) => {
        match ($rows, $runs) {
            (12, 2) => $tile::<$pre, 12, 2, $post>($($arg),*),
            (12, 1) => $tile::<$pre, 12, 1, $post>($($arg),*),
            (10, 2) => $tile::<$pre, 10, 2, $post>($($arg),*),
            (10, 1) => $tile::<$pre, 10, 1, $post>($($arg),*),
            (8, 2) => $tile::<$pre, 8, 2, $post>($($arg),*),
            (8, 1) => $tile::<$pre, 8, 1, $post>($($arg),*),
            (6, 2) => $tile::<$pre, 6, 2, $post>($($arg),*),
            (6, 1) => $tile::<$pre, 6, 1, $post>($($arg),*),
            (4, 2) => $tile::<$pre, 4, 2, $post>($($arg),*),
            (4, 1) => $tile::<$pre, 4, 1, $post>($($arg),*),
            (2, 2) => $tile::<$pre, 2, 2, $post>($($arg),*),
            (2, 1) => $tile::<$pre, 2, 1, $post>($($arg),*),
            (rows, runs) => ::core::unreachable!("tile of {rows} channels by {runs} runs"),
        }
    };
}
pub(crate) use tile_by_shape;

/// [`image`] with runs of `W` pixels in one output row (`SPLIT` false: `ow` a multiple of `W`)
/// or split over two (`SPLIT` true: `ow = W / 2`, `oh` even, see [`Kernel::fits`]).
///
/// # Safety
///
/// What [`image`] requires, and `SPLIT` is `2 * walk.ow == S::W` (`SPLIT` only at 16 lanes).
#[inline(always)]
unsafe fn runs<S: Simd, const SPLIT: bool>(walk: &Walk, buf: &[f32], packed: &[f32], out: *mut f32) {
    debug_assert!(walk.reads_inside() && buf.len() == walk.len() && packed.len() == walk.co * walk.ci * walk.n);
    debug_assert!(
        SPLIT == (2 * walk.ow == S::W) && (walk.ow.is_multiple_of(S::W) || (SPLIT && walk.oh.is_multiple_of(2)))
    );
    // `ow` is a multiple of `W`, or half of it with `oh` even: the runs tile the output plane
    // (`oh * ow` is a multiple of `W` either way), and `tiles` covers `0..co`.
    let runs = walk.oh * walk.ow / S::W;
    let tiles = tiles(walk.co, S::ROWS);
    let mut first = 0;
    while first < runs {
        let s = (runs - first).min(2);
        for &(co, rows) in &tiles {
            // SAFETY: the caller's contract is `tile`'s, with `first + s <= runs` and, since
            // `tiles` yields consecutive tiles of an even number of channels up to `S::ROWS`
            // (at most 12) ending at `walk.co`, `co + rows <= walk.co`.
            unsafe { tile_by_shape!(rows, s, tile::<S; SPLIT>(walk, buf, packed, out, co, first)) }
        }
        first += s;
    }
}

/// Output channels `co .. co + RR` at the `N` runs of `W` pixels from run `first`.
///
/// # Safety
///
/// What [`runs`] requires, and `co + RR <= walk.co`, `first + N <= oh * ow / W`. A run is `L`
/// consecutive outputs of one output row: `L = W`, or `L = W / 2 = ow` for each of a split run's
/// two halves (rows `y` and `y + 1 < oh`, `SPLIT`). A run at output (y, x..x+L), `x + L <= ow`,
/// reads, for the forward walk at stride 1 and tap (ky, kx), bordered row `y + ky <= h + 1`,
/// columns `x + kx .. x + kx + L <= w + 2`; at stride 2, bordered row `2y + ky <= 2 * oh <= h + 1`,
/// in the even half (`(w + 3) / 2` values) columns `x + kx / 2 .. x + kx / 2 + L <= ow + 1 <=
/// (w + 3) / 2` or in the odd half (`(w + 2) / 2`) columns `x .. x + L <= ow <= (w + 2) / 2`; for
/// an input-gradient walk, row `y + dm <= oh`, columns `x + dj .. x + dj + L <= ow + 1` of `dy`'s
/// bordered plane (`oh + 1` rows of `ow + 1`); for the patch walk (never split), image `y`'s
/// pixels `q = x .. x + W <= p` (`ow = p = h * w`) at `kx * (h + 2) * w + ky * w + q`, at most
/// `(kx + 1) * (h + 2) * w`, inside copy `kx` of the image's `3 (h + 2) w` values: inside `buf`;
/// the tile's weights are `packed[co * ci * n .. (co + RR) * ci * n]`; it stores channels
/// `co .. co + RR` at pixels `first * W .. (first + N) * W <= oh * ow` (a split run's two rows are
/// consecutive there): inside `out`.
#[inline(always)]
// The register tile is indexed by its (constant) row and run numbers, which the compiler unrolls.
#[allow(clippy::needless_range_loop)]
unsafe fn tile<S: Simd, const RR: usize, const N: usize, const SPLIT: bool>(
    walk: &Walk,
    buf: &[f32],
    packed: &[f32],
    out: *mut f32,
    co: usize,
    first: usize,
) {
    let (ow, plane) = (walk.ow, walk.plane);
    let taps = walk.ci * walk.n;
    // A split run's second half: the same columns one output row down.
    let half = if SPLIT { walk.row } else { 0 };
    // Where each run starts in the bordered image (tap (0, 0)) and in the output plane.
    let mut at = [0usize; N];
    let mut dst = [0usize; N];
    for i in 0..N {
        let pix = (first + i) * S::W;
        let (y, x) = (pix / ow, pix % ow);
        at[i] = y * walk.row + x;
        dst[i] = pix;
    }
    // SAFETY: the caller's contract: the CPU has `S`'s features.
    let zero = unsafe { S::zero() };
    let mut acc = [[zero; N]; RR];
    let b = buf.as_ptr();
    // SAFETY: `co < walk.co`: the start of this tile's weights, inside `packed`.
    let mut w = unsafe { packed.as_ptr().add(co * taps) };
    let offs = &walk.taps[..walk.n];
    for c in 0..walk.ci {
        // SAFETY: `c < ci`: the start of channel `c`'s bordered plane, inside `buf`.
        let base = unsafe { b.add(c * plane) };
        for &off in offs {
            let mut v = [zero; N];
            for i in 0..N {
                // SAFETY: `W` values of this tap for the run, of channel `c`, or `W / 2` for
                // each of a split run's two rows (see `# Safety`): inside `buf`.
                v[i] = unsafe {
                    if SPLIT {
                        S::load_halves(base.add(at[i] + off), base.add(at[i] + half + off))
                    } else {
                        S::load(base.add(at[i] + off))
                    }
                };
            }
            for r in 0..RR {
                // SAFETY: `w` walks this tile's `ci * n * RR` weights, `r < RR`.
                let k = unsafe { S::splat(w.add(r)) };
                for i in 0..N {
                    // SAFETY: the caller's contract: the CPU has `S`'s features.
                    acc[r][i] = unsafe { S::fma(k, v[i], acc[r][i]) };
                }
            }
            // SAFETY: at most one past this tile's weights, which end inside `packed` or at its
            // end.
            w = unsafe { w.add(RR) };
        }
    }
    for r in 0..RR {
        let row = (co + r) * walk.oh * ow;
        for i in 0..N {
            // SAFETY: channel `co + r < walk.co`, pixels `dst[i] .. dst[i] + W <= oh * ow`: inside
            // `out`.
            unsafe { S::store(out.add(row + dst[i]), acc[r][i]) };
        }
    }
}

/// Adds the weight gradient of the pixels that `walk` covers onto `dwt`: every tile, band of
/// rows by band of rows.
///
/// # Safety
///
/// The CPU has `S`'s features; `walk` is nine taps ([`Walk::forward`] of a shape [`shape_ok`]
/// accepts, with `buf` the bordered image of [`border`], or [`Walk::patches`] of a shape
/// [`small_ok`] accepts, with `buf` the patches of [`shifted_group`]), `walk.co` a multiple of
/// `S::W`, `walk.reads_inside()` and `buf.len() == walk.len()`; `dyt` holds the output gradient
/// as `[oh * ow, co]` (the walk's `oh` and `ow`), and `dwt` holds `ci * 9 * co` values.
#[inline(always)]
unsafe fn weight_grad<S: Simd>(walk: &Walk, buf: &[f32], dyt: &[f32], dwt: &mut [f32]) {
    let (oh, ow, ci, co) = (walk.oh, walk.ow, walk.ci, walk.co);
    debug_assert!(
        walk.n == 9
            && walk.reads_inside()
            && buf.len() == walk.len()
            && dyt.len() == oh * ow * co
            && dwt.len() == ci * 9 * co
    );
    // Where each tap's input starts in the buffer (for output pixel (0, 0)).
    let offs: Vec<usize> = (0..ci * 9).map(|k| (k / 9) * walk.plane + walk.taps[k % 9]).collect();
    let band = (128 / ow).max(1);
    let mut y0 = 0;
    while y0 < oh {
        let y1 = (y0 + band).min(oh);
        for k in (0..ci * 9).step_by(S::TAPS) {
            let taps = (ci * 9 - k).min(S::TAPS);
            for o in (0..co).step_by(2 * S::W) {
                let offs = &offs[k..k + taps];
                let two = co - o >= 2 * S::W;
                // SAFETY: the caller's contract is `grad_tile`'s, with `y1 <= oh`, `offs` the
                // `taps` offsets from tap `k`, and `k + taps <= ci * 9`; `ci * 9` and `S::TAPS`
                // are multiples of 3 and `S::TAPS <= 12`, so `taps` is 3, 6, 9 or 12; `co` is a
                // multiple of `W`, so `co - o` is at least `2W` (two vectors) or exactly `W`.
                unsafe {
                    match (taps, two) {
                        (12, true) => grad_tile::<S, 12, 2>(walk, buf, dyt, dwt, offs, k, o, y0, y1),
                        (12, false) => grad_tile::<S, 12, 1>(walk, buf, dyt, dwt, offs, k, o, y0, y1),
                        (9, true) => grad_tile::<S, 9, 2>(walk, buf, dyt, dwt, offs, k, o, y0, y1),
                        (9, false) => grad_tile::<S, 9, 1>(walk, buf, dyt, dwt, offs, k, o, y0, y1),
                        (6, true) => grad_tile::<S, 6, 2>(walk, buf, dyt, dwt, offs, k, o, y0, y1),
                        (6, false) => grad_tile::<S, 6, 1>(walk, buf, dyt, dwt, offs, k, o, y0, y1),
                        (3, true) => grad_tile::<S, 3, 2>(walk, buf, dyt, dwt, offs, k, o, y0, y1),
                        (3, false) => grad_tile::<S, 3, 1>(walk, buf, dyt, dwt, offs, k, o, y0, y1),
                        (t, _) => unreachable!("weight-gradient tile of {t} taps"),
                    }
                }
            }
        }
        y0 = y1;
    }
}

/// `dwt[k + t][o .. o + W*V] += sum over output rows y0..y1 of buf[offs[t] + pixel] *
/// dyt[pixel][o .. o + W*V]`, for `t < T`.
///
/// # Safety
///
/// What [`weight_grad`] requires, and `offs.len() == T` with `offs[t]` the offset of tap `k + t`
/// (channel c, row ky, column kx) in the buffer, `c * walk.plane + walk.taps[ky * 3 + kx]`,
/// `k + T <= ci * 9`, `o + W * V <= co`, `y1 <= oh`. Then output pixel (y, x) reads position
/// `offs[t] + y * walk.row + x`, the value [`tile`] reads for it: inside `buf`;
/// `dyt[(y * ow + x) * co + o ..]` and `dwt[(k + t) * co + o ..]`, `W * V` values each: inside
/// theirs.
#[inline(always)]
#[allow(clippy::too_many_arguments, clippy::needless_range_loop)]
unsafe fn grad_tile<S: Simd, const T: usize, const V: usize>(
    walk: &Walk,
    buf: &[f32],
    dyt: &[f32],
    dwt: &mut [f32],
    offs: &[usize],
    k: usize,
    o: usize,
    y0: usize,
    y1: usize,
) {
    let (ow, co) = (walk.ow, walk.co);
    let (b, d, dw) = (buf.as_ptr(), dyt.as_ptr(), dwt.as_mut_ptr());
    // SAFETY: the caller's contract: the CPU has `S`'s features.
    let zero = unsafe { S::zero() };
    let mut acc = [[zero; V]; T];
    for t in 0..T {
        for v in 0..V {
            // SAFETY: row `k + t < ci * 9` of `dwt`, columns `o + Wv .. o + Wv + W <= co`.
            acc[t][v] = unsafe { S::load(dw.add((k + t) * co + o + S::W * v)) };
        }
    }
    let mut at = [0usize; T];
    at.copy_from_slice(offs);
    for y in y0..y1 {
        // SAFETY: `y < oh`: where output row `y` reads channel 0 (`y * walk.row`), inside `buf`.
        let row = unsafe { b.add(y * walk.row) };
        // Pixel (y, 0)'s `dy` from channel `o`. Stepped with `wrapping_add`: after the last
        // row's last pixel it points past the end of `dyt`, where it is never read.
        let mut dp = d.wrapping_add(y * ow * co + o);
        for x in 0..ow {
            let mut dv = [zero; V];
            for v in 0..V {
                // SAFETY: pixel (y, x)'s `dy` for channels `o + Wv .. o + Wv + W <= co`, inside
                // `dyt`.
                dv[v] = unsafe { S::load(dp.add(S::W * v)) };
            }
            for t in 0..T {
                // SAFETY: tap `k + t`'s input for pixel (y, x), inside `buf` (see `# Safety`).
                let bv = unsafe { S::splat(row.add(at[t] + x)) };
                for v in 0..V {
                    // SAFETY: the caller's contract: the CPU has `S`'s features.
                    acc[t][v] = unsafe { S::fma(bv, dv[v], acc[t][v]) };
                }
            }
            dp = dp.wrapping_add(co);
        }
    }
    for t in 0..T {
        for v in 0..V {
            // SAFETY: the same `dwt` values as loaded above.
            unsafe { S::store(dw.add((k + t) * co + o + S::W * v), acc[t][v]) };
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The input position (row, column) that output (y, x) reads for tap (ky, kx) at `g`'s
    /// stride and padding 1, if it is inside the image.
    fn input_at(g: &Geometry, y: usize, x: usize, ky: usize, kx: usize) -> Option<(usize, usize)> {
        let (iy, ix) = ((y * g.sh + ky) as isize - 1, (x * g.sw + kx) as isize - 1);
        (iy >= 0 && ix >= 0 && (iy as usize) < g.h && (ix as usize) < g.w).then_some((iy as usize, ix as usize))
    }

    /// By definition, one multiply-add at a time, summed in the kernel's order.
    fn naive(g: &Geometry, x: &[f32], w: &[f32]) -> Vec<f32> {
        let (oh, ow) = (g.oh(), g.ow());
        let mut out = vec![0f32; g.co * oh * ow];
        for o in 0..g.co {
            for y in 0..oh {
                for xx in 0..ow {
                    let mut s = 0f32;
                    for c in 0..g.ci {
                        for ky in 0..3 {
                            for kx in 0..3 {
                                if let Some((iy, ix)) = input_at(g, y, xx, ky, kx) {
                                    s += w[((o * g.ci + c) * 3 + ky) * 3 + kx] * x[(c * g.h + iy) * g.w + ix];
                                }
                            }
                        }
                    }
                    out[(o * oh + y) * ow + xx] = s;
                }
            }
        }
        out
    }

    #[test]
    fn the_strided_layout_puts_each_tap_where_the_kernels_read_it() {
        // Every output pixel, tap and channel: the value at `Walk::forward`'s offset in the bordered
        // copy is the input the definition reads there (0 in the padding), at both strides.
        // The buffer starts full of NaN and is reused for a second image, as the kernels reuse
        // it: every position must be written each time.
        for (ci, h, w, s) in [(2, 5, 8, 1), (3, 7, 15, 2), (2, 6, 16, 2), (1, 1, 17, 2), (2, 4, 9, 1), (1, 2, 1, 2)] {
            let g = Geometry { n: 1, ci, h, w, co: 2, kh: 3, kw: 3, sh: s, sw: s, ph: 1, pw: 1 };
            let l = Walk::forward(&g);
            // Where the kernels run (an output width that is a multiple of 8), at stride 1 (and at
            // stride 2 with an odd height and width) the last run's last tap reads the plane's
            // last value: one value less is a walk that reads outside.
            if l.ow.is_multiple_of(8) {
                assert!(l.reads_inside(), "{l:?}");
                if s == 1 || (h % 2 == 1 && w % 2 == 1) {
                    assert!(!Walk { plane: l.plane - 1, ..l }.reads_inside(), "{l:?}");
                }
            }
            let mut buf = vec![f32::NAN; l.len()];
            for image in 0..2 {
                let x: Vec<f32> =
                    (0..ci * h * w).map(|i| (i + 1) as f32 * if image == 0 { 1.0 } else { -0.5 }).collect();
                border(&g, &x, &mut buf, None);
                assert_eq!(buf.len(), l.len(), "{g:?}");
                assert!(buf.iter().all(|v| !v.is_nan()), "{g:?}: a position left unwritten");
                check_taps(&g, &l, &x, &buf);
            }
        }
    }

    #[test]
    fn a_mapped_border_is_the_border_of_the_mapped_image() {
        // At both strides, odd and even widths, a buffer reused from NaN: `border` with a
        // `BnRelu` map gives the bits of the plain border of `max(x * scale + shift, 0)`
        // (`fastbn::normalise`'s operations), border zeros included.
        for (ci, h, w, s) in [(3, 5, 8, 1), (2, 4, 9, 1), (3, 7, 15, 2), (2, 6, 16, 2)] {
            let g = Geometry { n: 1, ci, h, w, co: 2, kh: 3, kw: 3, sh: s, sw: s, ph: 1, pw: 1 };
            let x: Vec<f32> = (0..ci * h * w).map(|i| ((i * 37 % 101) as f32 - 50.0) / 25.0).collect();
            let (scale, shift) = ([0.5, -1.5, 2.0][..ci].to_vec(), [0.1, -0.2, 0.0][..ci].to_vec());
            let mapped: Vec<f32> =
                x.iter().enumerate().map(|(i, &v)| (v * scale[i / (h * w)] + shift[i / (h * w)]).max(0.0)).collect();
            assert!(mapped.contains(&0.0) && mapped.iter().any(|&v| v > 0.0), "a ReLU that does something");
            let (mut want, mut got) = (Vec::new(), vec![f32::NAN; ci * (h + 2) * (w + 2)]);
            border(&g, &mapped, &mut want, None);
            border(&g, &x, &mut got, Some(BnRelu { scale: &scale, shift: &shift }.into()));
            let bits = |v: &[f32]| v.iter().map(|f| f.to_bits()).collect::<Vec<_>>();
            assert_eq!(bits(&got), bits(&want), "{g:?}");
        }
    }

    #[test]
    #[should_panic(expected = "border: a map of 1 and 2 values for 2 channels")]
    fn a_map_of_the_wrong_length_is_refused() {
        let g = Geometry { n: 1, ci: 2, h: 2, w: 8, co: 2, kh: 3, kw: 3, sh: 1, sw: 1, ph: 1, pw: 1 };
        border(&g, &[0.0; 32], &mut Vec::new(), Some(BnRelu { scale: &[1.0], shift: &[0.0; 2] }.into()));
    }

    #[test]
    fn copy_short_copies_every_value_and_nothing_else() {
        // Lengths around the eight-float blocks; the copy lands in the middle of a NaN buffer,
        // which must keep its NaNs on both sides.
        for n in [0, 1, 7, 8, 9, 15, 16, 17, 64, 67] {
            let src: Vec<f32> = (0..n).map(|i| i as f32 - 2.5).collect();
            let mut dst = vec![f32::NAN; n + 6];
            copy_short(&mut dst[3..3 + n], &src);
            assert!(dst[..3].iter().chain(&dst[3 + n..]).all(|v| v.is_nan()), "{n}: wrote outside");
            assert_eq!(dst[3..3 + n], src[..], "{n}");
        }
    }

    #[test]
    fn the_shifted_copies_put_each_tap_where_the_patch_walk_reads_it() {
        // Every image, channel, output pixel and tap of a group: the value at `Walk::patches`'
        // offset is the input the definition reads there (0 in the padding). The buffer starts
        // full of NaN and is reused for a second group, as the kernels reuse it.
        for (ci, h, w, images) in [(2, 4, 4, 2), (3, 2, 4, 4), (1, 8, 3, 1), (2, 4, 6, 3), (2, 8, 5, 2)] {
            let g = Geometry { n: images, ci, h, w, co: 2, kh: 3, kw: 3, sh: 1, sw: 1, ph: 1, pw: 1 };
            let l = Walk::patches(&g, images);
            // The last image's last run's last tap reads the buffer's last value.
            assert!(l.reads_inside(), "{l:?}");
            assert!(!Walk { plane: l.plane - 1, ..l }.reads_inside(), "{l:?}");
            let mut buf = vec![f32::NAN; l.len()];
            for group in 0..2 {
                let x: Vec<f32> =
                    (0..images * ci * h * w).map(|i| (i + 1) as f32 * if group == 0 { 1.0 } else { -0.5 }).collect();
                shifted_group(&g, &x, images, &mut buf);
                assert_eq!(buf.len(), l.len(), "{g:?}");
                assert!(buf.iter().all(|v| !v.is_nan()), "{g:?}: a position left unwritten");
                for i in 0..images {
                    let one = Geometry { n: 1, ..g };
                    let xi = &x[i * ci * h * w..(i + 1) * ci * h * w];
                    for c in 0..ci {
                        for q in 0..h * w {
                            for k in 0..9 {
                                let want = input_at(&one, q / w, q % w, k / 3, k % 3)
                                    .map_or(0.0, |(iy, ix)| xi[(c * h + iy) * w + ix]);
                                let got = buf[c * l.plane + i * l.row + q + l.taps[k]];
                                assert_eq!(
                                    got.to_bits(),
                                    want.to_bits(),
                                    "{g:?} image {i} channel {c} pixel {q} tap {k}"
                                );
                            }
                        }
                    }
                }
            }
        }
    }

    /// `len` test values, `((i * a) % b - b / 2) / scale`.
    fn pattern(len: usize, a: usize, b: usize, scale: f32) -> Vec<f32> {
        (0..len).map(|i| ((i * a % b) as f32 - (b / 2) as f32) / scale).collect()
    }

    #[test]
    fn small_planes_give_the_definition_and_the_same_bits_in_every_build() {
        // (ci, h, w, co, n): Conv-4's last block and its input gradient, 2x4 (groups of four
        // images), 4x2, 4x6 and 8x3 (24 pixels: three runs at 8 lanes), 8x5, 8x1, 2x12, 8x7 (56)
        // and 16x4 (64, the most), and 7x8, which the patch walk declines; batches that leave a
        // partial group.
        let builds = builds();
        let mut checked = 0;
        for (ci, h, w, co, n) in [
            (32, 4, 4, 64, 3),
            (64, 4, 4, 32, 2),
            (3, 4, 4, 8, 1),
            (5, 2, 4, 6, 5),
            (2, 4, 2, 10, 3),
            (4, 4, 6, 12, 2),
            (1, 8, 3, 2, 2),
            (3, 8, 5, 26, 1),
            (2, 8, 1, 4, 3),
            (3, 2, 12, 6, 2),
            (2, 8, 7, 8, 1),
            (1, 16, 4, 2, 2),
            (2, 7, 8, 4, 1),
        ] {
            let g = Geometry { n, ci, h, w, co, kh: 3, kw: 3, sh: 1, sw: 1, ph: 1, pw: 1 };
            if w.is_multiple_of(8) {
                // 7x8 is the bordered walk's: the patch walk declines it.
                assert!(shape_ok(&g) && !small_ok(&g), "{g:?}");
                continue;
            }
            assert!(small_ok(&g) && !shape_ok(&g), "{g:?}");
            let x = pattern(n * ci * h * w, 37, 101, 25.0);
            let wt = pattern(co * ci * 9, 53, 89, 40.0);
            let one = Geometry { n: 1, ..g };
            let want: Vec<f32> = x.chunks_exact(ci * h * w).flat_map(|xi| naive(&one, xi, &wt)).collect();
            let scale = want.iter().fold(0f32, |m, v| m.max(v.abs()));
            let mut first: Option<(Kernel, Vec<f32>)> = None;
            for &k in builds.iter().filter(|k| (h * w).is_multiple_of(k.lanes())) {
                close_and_same_bits(&mut first, k, forward_small_with(k, &g, &x, &wt), &want, scale, &g);
                checked += 1;
            }
        }
        // Portable8 runs all twelve shapes, Portable16 the four of 16 or 64 pixels.
        assert!(checked >= 12 + 4, "{checked} runs");
    }

    #[test]
    fn small_planes_give_the_weight_gradient_of_the_definition_and_the_same_bits() {
        // (ci, h, w, co, n): Conv-4's last block (a partial group of 8 and 3 images), 2x4
        // (groups of 16), 4x6, 8x3.
        let builds = builds();
        let mut checked = 0;
        for (ci, h, w, co, n) in
            [(32, 4, 4, 64, 11), (3, 4, 4, 16, 2), (2, 2, 4, 8, 19), (4, 4, 6, 24, 3), (1, 8, 3, 32, 2)]
        {
            let g = Geometry { n, ci, h, w, co, kh: 3, kw: 3, sh: 1, sw: 1, ph: 1, pw: 1 };
            assert!(small_ok(&g), "{g:?}");
            let p = h * w;
            let x = pattern(n * ci * p, 37, 101, 25.0);
            let dy = pattern(n * co * p, 53, 89, 40.0);
            // Summed onto a start that is not zero.
            let start: Vec<f32> = (0..co * ci * 9).map(|i| (i % 7) as f32).collect();
            let one = Geometry { n: 1, ..g };
            let (mut want, mut scale) = (start.clone(), 1f32);
            for o in 0..co {
                for c in 0..ci {
                    for k in 0..9 {
                        let mut s = 0f64;
                        for i in 0..n {
                            for q in 0..p {
                                if let Some((iy, ix)) = input_at(&one, q / w, q % w, k / 3, k % 3) {
                                    s += (dy[(i * co + o) * p + q] * x[((i * ci + c) * h + iy) * w + ix]) as f64;
                                }
                            }
                        }
                        want[(c * 9 + k) * co + o] += s as f32;
                        scale = scale.max(s.abs() as f32);
                    }
                }
            }
            let mut first: Option<(Kernel, Vec<f32>)> = None;
            for &kern in builds.iter().filter(|k| co.is_multiple_of(k.lanes())) {
                let mut dwt = start.clone();
                let (mut buf, mut dyt) = (vec![f32::NAN; 5], Vec::new());
                weight_grad_small_with(kern, &g, &x, &dy, &mut dwt, &mut buf, &mut dyt);
                for (i, (a, b)) in dwt.iter().zip(&want).enumerate() {
                    assert!((a - b).abs() <= 1e-5 * scale, "{kern:?} {g:?} at {i}: {a} vs {b}");
                }
                same_bits_as_first(&mut first, kern, dwt, &g);
                checked += 1;
            }
        }
        // Portable8 runs all five shapes, Portable16 the three with 64, 16 and 32 channels.
        assert!(checked >= 5 + 3, "{checked} runs");
    }

    #[test]
    fn small_planes_give_the_same_weight_gradient_in_groups_as_one_image_at_a_time() {
        // A batch in groups of eight (19 images: two whole groups and a partial one) gives the bits of the same images one at a time: each value
        // of the gradient receives the same products in the same order (what lets
        // `weight_grad_images` group images without changing the result).
        let g = Geometry { n: 19, ci: 8, h: 4, w: 4, co: 16, kh: 3, kw: 3, sh: 1, sw: 1, ph: 1, pw: 1 };
        let x = pattern(19 * 8 * 16, 37, 101, 25.0);
        let dy = pattern(19 * 16 * 16, 53, 89, 40.0);
        let kern = Kernel::Portable8;
        let (mut buf, mut dyt) = (Vec::new(), Vec::new());
        let mut whole = vec![0f32; 16 * 8 * 9];
        weight_grad_small_with(kern, &g, &x, &dy, &mut whole, &mut buf, &mut dyt);
        let mut apart = vec![0f32; 16 * 8 * 9];
        let one = Geometry { n: 1, ..g };
        for (xi, dyi) in x.chunks_exact(8 * 16).zip(dy.chunks_exact(16 * 16)) {
            weight_grad_small_with(kern, &one, xi, dyi, &mut apart, &mut buf, &mut dyt);
        }
        assert!(whole.iter().zip(&apart).all(|(a, b)| a.to_bits() == b.to_bits()));
    }

    /// Every output pixel, tap and channel of `g`: the value at `l`'s offset in `buf` is the
    /// input the definition reads there (0 in the padding).
    fn check_taps(g: &Geometry, l: &Walk, x: &[f32], buf: &[f32]) {
        let (ci, h, w) = (g.ci, g.h, g.w);
        for c in 0..ci {
            for y in 0..g.oh() {
                for xx in 0..g.ow() {
                    for k in 0..9 {
                        let want = input_at(g, y, xx, k / 3, k % 3).map_or(0.0, |(iy, ix)| x[(c * h + iy) * w + ix]);
                        let got = buf[c * l.plane + y * l.row + xx + l.taps[k]];
                        assert_eq!(got.to_bits(), want.to_bits(), "{g:?} channel {c} output ({y}, {xx}) tap {k}");
                    }
                }
            }
        }
    }

    #[test]
    fn the_output_gradients_border_puts_each_tap_where_the_parity_walks_read_it() {
        // Every parity, input pixel, tap and output channel: the value at the walk's offset in
        // `border_dy`'s copy (NaN first, then reused) is the `dy` the definition sends there.
        for (co, h, w) in [(2, 4, 32), (3, 2, 16), (1, 10, 48)] {
            let g = Geometry { n: 1, ci: 2, h, w, co, kh: 3, kw: 3, sh: 2, sw: 2, ph: 1, pw: 1 };
            let (oh, ow) = (g.oh(), g.ow());
            let mut buf = vec![f32::NAN; co * (oh + 1) * (ow + 1)];
            for image in 0..2 {
                let dy: Vec<f32> =
                    (0..co * oh * ow).map(|i| (i + 1) as f32 * if image == 0 { 1.0 } else { -0.5 }).collect();
                border_dy(&g, &dy, &mut buf);
                for (py, px) in [(0, 0), (0, 1), (1, 0), (1, 1)] {
                    let walk = Walk::input_grad_phase(&g, py, px);
                    assert!(walk.reads_inside() && buf.len() == walk.len(), "{walk:?}");
                    // The odd rows' and columns' walk reads the plane's last value (the border's).
                    if (py, px) == (1, 1) {
                        assert!(!Walk { plane: walk.plane - 1, ..walk }.reads_inside(), "{walk:?}");
                    }
                    assert!(!Walk { n: 0, ..walk }.reads_inside());
                    for (t, &(ky, kx, dm, dj)) in phase_taps(py, px).iter().enumerate() {
                        for o in 0..co {
                            for m in 0..oh {
                                for j in 0..ow {
                                    // Output (oy, ox) reaches input (2m + py, 2j + px) through
                                    // (ky, kx) where 2 * oy + ky - 1 = 2m + py: `dm`, `dj`.
                                    let (oy, ox) = (m + dm, j + dj);
                                    assert_eq!(2 * oy + ky, 2 * m + py + 1);
                                    assert_eq!(2 * ox + kx, 2 * j + px + 1);
                                    let want = if oy < oh && ox < ow { dy[(o * oh + oy) * ow + ox] } else { 0.0 };
                                    let got = buf[o * walk.plane + m * walk.row + j + walk.taps[t]];
                                    assert_eq!(
                                        got.to_bits(),
                                        want.to_bits(),
                                        "{g:?} parity ({py}, {px}) tap {t} at ({m}, {j})"
                                    );
                                }
                            }
                        }
                    }
                }
            }
        }
    }

    #[test]
    fn transpose_moves_every_value_on_block_and_edge_shapes() {
        // Plain Rust everywhere, AVX2 registers where the direct kernels run AVX2 or wider.
        let avx2 = Isa::hardware().is_some();
        if !avx2 {
            eprintln!("SKIP the AVX2 transposition: this CPU has no AVX2 + FMA");
        }
        // Whole 8 x 8 blocks, edges of rows, of columns and of both, and shapes under one block.
        for (rows, cols) in
            [(16, 64), (8, 8), (11, 24), (16, 13), (19, 21), (3, 5), (1, 9), (0, 4), (64, 1024), (24, 40)]
        {
            let src: Vec<f32> = (0..rows * cols).map(|i| i as f32 + 0.5).collect();
            for with_avx2 in [false, true].into_iter().filter(|&v| !v || avx2) {
                let mut dst = vec![f32::NAN; rows * cols];
                transpose_with(with_avx2, &src, rows, cols, &mut dst);
                for r in 0..rows {
                    for c in 0..cols {
                        assert_eq!(
                            dst[c * rows + r].to_bits(),
                            src[r * cols + c].to_bits(),
                            "{rows} x {cols} at ({r}, {c}), AVX2 {with_avx2}"
                        );
                    }
                }
            }
        }
    }

    /// Every build, and whether it runs on this CPU (the ones that do not are named once).
    fn builds() -> Vec<Kernel> {
        let all = [Kernel::Avx512, Kernel::Avx2, Kernel::Portable16, Kernel::Portable8];
        for k in all.iter().filter(|k| !k.runs_here()) {
            eprintln!("SKIP: this CPU does not run the {k:?} build (Portable16 and Portable8 run its tiling)");
        }
        all.into_iter().filter(|k| k.runs_here()).collect()
    }

    /// Keeps the first build's output, or asserts that build `k`'s `out` has its bits.
    fn same_bits_as_first(first: &mut Option<(Kernel, Vec<f32>)>, k: Kernel, out: Vec<f32>, g: &Geometry) {
        match first {
            None => *first = Some((k, out)),
            Some((k0, o0)) => {
                let same = o0.iter().zip(&out).all(|(a, b)| a.to_bits() == b.to_bits());
                assert!(same, "{k:?} and {k0:?} differ in bits on {g:?}");
            }
        }
    }

    /// Asserts that build `k`'s forward output `out` is the definition's `want` within
    /// `1e-5 * scale` (FMA rounds once per multiply-add where the definition rounds twice), then
    /// that it has the first build's bits ([`same_bits_as_first`]).
    fn close_and_same_bits(
        first: &mut Option<(Kernel, Vec<f32>)>,
        k: Kernel,
        out: Vec<f32>,
        want: &[f32],
        scale: f32,
        g: &Geometry,
    ) {
        assert_eq!(out.len(), want.len(), "{k:?} {g:?}");
        for (i, (a, b)) in out.iter().zip(want).enumerate() {
            assert!((a - b).abs() <= 1e-5 * scale, "{k:?} {g:?} at {i}: {a} vs {b}");
        }
        same_bits_as_first(first, k, out, g);
    }

    #[test]
    fn every_build_equals_the_definition_and_the_others_bit_for_bit() {
        // (ci, h, w, co): ResNet stages, Conv-4's blocks, the stem, odd heights and widths of
        // 8, 24 (a tail of one and two runs at 8 lanes), 40, 48 (three runs at 16 lanes), and
        // channel counts that leave every tail of a 6- and a 12-channel tile.
        let builds = builds();
        let (mut checked, mut wide) = (0, 0);
        let strided = [
            (16, 32, 32, 32),
            (32, 16, 16, 64),
            (3, 15, 15, 8),
            (2, 7, 16, 10),
            (4, 2, 47, 12),
            (1, 3, 31, 26),
            (2, 1, 16, 4),
            (3, 12, 16, 14),
        ];
        for (ci, h, w, co, s) in [
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
            (3, 5, 48, 26),
            (2, 3, 16, 22),
            (1, 2, 32, 18),
            (2, 1, 16, 2),
            (5, 6, 8, 26),
        ]
        .map(|(ci, h, w, co)| (ci, h, w, co, 1))
        .into_iter()
        .chain(strided.map(|(ci, h, w, co)| (ci, h, w, co, 2)))
        {
            let g = Geometry { n: 1, ci, h, w, co, kh: 3, kw: 3, sh: s, sw: s, ph: 1, pw: 1 };
            assert!(shape_ok(&g), "{g:?}");
            let x: Vec<f32> = (0..ci * h * w).map(|i| ((i * 37 % 101) as f32 - 50.0) / 25.0).collect();
            let wt: Vec<f32> = (0..co * ci * 9).map(|i| ((i * 53 % 89) as f32 - 44.0) / 40.0).collect();
            // Two images: the second the first negated.
            let g = Geometry { n: 2, ..g };
            let x2: Vec<f32> = x.iter().copied().chain(x.iter().map(|v| -v)).collect();
            let mut want = naive(&g, &x, &wt);
            want.extend(want.clone().iter().map(|v| -v));
            let scale = want.iter().fold(0f32, |m, v| m.max(v.abs()));
            let mut first: Option<(Kernel, Vec<f32>)> = None;
            for &k in builds.iter().filter(|k| k.fits(g.ow(), g.oh())) {
                close_and_same_bits(&mut first, k, direct_with(k, &g, &x2, &wt, None), &want, scale, &g);
                checked += 1;
                wide += usize::from(k == Kernel::Portable16);
            }
        }
        // Portable8 runs every shape, Portable16 the thirteen whose output width is a multiple of
        // 16 and the seven 8-wide ones of an even number of rows (split runs).
        assert!(checked >= 25 + 13 + 7, "{checked} runs");
        assert_eq!(wide, 13 + 7, "Portable16's runs");
    }

    #[test]
    fn every_build_gives_the_weight_gradient_of_the_definition_and_the_same_bits() {
        let builds = builds();
        let mut checked = 0;
        let strided =
            [(16, 32, 32, 32), (32, 16, 16, 64), (3, 15, 15, 8), (2, 7, 16, 16), (4, 2, 47, 24), (1, 3, 31, 32)];
        for (ci, h, w, co, s) in [
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
            (1, 4, 16, 48),
            (3, 2, 8, 80),
            (7, 3, 8, 32),
        ]
        .map(|(ci, h, w, co)| (ci, h, w, co, 1))
        .into_iter()
        .chain(strided.map(|(ci, h, w, co)| (ci, h, w, co, 2)))
        {
            let g = Geometry { n: 1, ci, h, w, co, kh: 3, kw: 3, sh: s, sw: s, ph: 1, pw: 1 };
            let (oh, ow) = (g.oh(), g.ow());
            let x: Vec<f32> = (0..ci * h * w).map(|i| ((i * 37 % 101) as f32 - 50.0) / 25.0).collect();
            let dy: Vec<f32> = (0..co * oh * ow).map(|i| ((i * 53 % 89) as f32 - 44.0) / 40.0).collect();
            // Two images summed onto a start that is not zero.
            let start: Vec<f32> = (0..co * ci * 9).map(|i| (i % 7) as f32).collect();
            let mut scale = 0f32;
            let mut want = start.clone();
            for o in 0..co {
                for c in 0..ci {
                    for ky in 0..3 {
                        for kx in 0..3 {
                            let mut s = 0f64;
                            for y in 0..oh {
                                for xx in 0..ow {
                                    if let Some((iy, ix)) = input_at(&g, y, xx, ky, kx) {
                                        s += (dy[(o * oh + y) * ow + xx] * x[(c * h + iy) * w + ix]) as f64;
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
            let mut first: Option<(Kernel, Vec<f32>)> = None;
            for &kern in builds.iter().filter(|k| co.is_multiple_of(k.lanes())) {
                let mut dwt = start.clone();
                let (mut buf, mut dyt) = (Vec::new(), Vec::new());
                weight_grad_image_with(kern, &g, &x, &dy, &mut dwt, &mut buf, &mut dyt, None);
                weight_grad_image_with(kern, &g, &x, &dy, &mut dwt, &mut buf, &mut dyt, None);
                for (i, (a, b)) in dwt.iter().zip(&want).enumerate() {
                    assert!((a - b).abs() <= 1e-5 * scale.max(1.0), "{kern:?} {g:?} at {i}: {a} vs {b}");
                }
                same_bits_as_first(&mut first, kern, dwt, &g);
                checked += 1;
            }
        }
        assert!(checked >= 19 + 13, "{checked} runs");
        let g = Geometry { n: 1, ci: 4, h: 8, w: 8, co: 16, kh: 3, kw: 3, sh: 1, sw: 1, ph: 1, pw: 1 };
        for bad in [Geometry { co: 4, ..g }, Geometry { co: 12, ..g }, Geometry { w: 4, h: 3, ..g }] {
            assert!(!covers_weight_grad(&bad), "{bad:?}");
        }
    }

    #[test]
    fn every_build_gives_the_strided_input_gradient_of_the_definition_and_the_same_bits() {
        let builds = builds();
        let (mut checked, mut wide) = (0, 0);
        // (ci, h, w, co): ResNet-32's two stride-2 convolutions, then widths of one, two, three
        // and four runs at 8 lanes, non-square maps, channel counts that leave tile tails, and a
        // single output channel.
        for (ci, h, w, co) in [
            (16, 32, 32, 32),
            (32, 16, 16, 64),
            (2, 2, 16, 3),
            (6, 6, 32, 5),
            (4, 10, 48, 8),
            (2, 16, 16, 1),
            (26, 4, 16, 7),
            (2, 4, 64, 3),
        ] {
            let g = Geometry { n: 2, ci, h, w, co, kh: 3, kw: 3, sh: 2, sw: 2, ph: 1, pw: 1 };
            let (oh, ow) = (g.oh(), g.ow());
            let dy: Vec<f32> = (0..2 * co * oh * ow).map(|i| ((i * 37 % 101) as f32 - 50.0) / 25.0).collect();
            let wt: Vec<f32> = (0..co * ci * 9).map(|i| ((i * 53 % 89) as f32 - 44.0) / 40.0).collect();
            // By definition: every output pixel's gradient sent back through every tap.
            let mut want = vec![0f64; 2 * ci * h * w];
            for i in 0..2 {
                for o in 0..co {
                    for y in 0..oh {
                        for xx in 0..ow {
                            for c in 0..ci {
                                for k in 0..9 {
                                    if let Some((iy, ix)) = input_at(&g, y, xx, k / 3, k % 3) {
                                        want[((i * ci + c) * h + iy) * w + ix] +=
                                            (wt[(o * ci + c) * 9 + k] * dy[((i * co + o) * oh + y) * ow + xx]) as f64;
                                    }
                                }
                            }
                        }
                    }
                }
            }
            let scale = want.iter().fold(0f64, |m, v| m.max(v.abs())) as f32;
            let mut first: Option<(Kernel, Vec<f32>)> = None;
            for &k in builds.iter().filter(|k| k.fits(ow, oh)) {
                wide += usize::from(k == Kernel::Portable16);
                let dx = input_grad_with(k, &g, &dy, &wt);
                assert_eq!(dx.len(), want.len(), "{k:?} {g:?}");
                for (j, (a, b)) in dx.iter().zip(&want).enumerate() {
                    assert!((a - *b as f32).abs() <= 1e-5 * scale, "{k:?} {g:?} at {j}: {a} vs {b}");
                }
                same_bits_as_first(&mut first, k, dx, &g);
                checked += 1;
            }
        }
        // Portable8 runs every shape, Portable16 the three whose output width is 16 or 32 and the
        // three 8-wide ones of an even number of rows (split runs).
        assert!(checked >= 8 + 3 + 3, "{checked} runs");
        assert_eq!(wide, 3 + 3, "Portable16's runs");
        let g = Geometry { n: 1, ci: 4, h: 16, w: 16, co: 8, kh: 3, kw: 3, sh: 2, sw: 2, ph: 1, pw: 1 };
        assert!(Isa::detect().is_none() || covers_input_grad(&g));
        for bad in [
            Geometry { sh: 1, sw: 1, ..g },
            Geometry { w: 15, ..g },
            Geometry { h: 15, ..g },
            Geometry { ci: 3, ..g },
            Geometry { w: 8, ..g },
            Geometry { w: 0, ..g },
            Geometry { h: 0, ..g },
        ] {
            assert!(!covers_input_grad(&bad), "{bad:?}");
        }
    }

    #[test]
    #[should_panic(expected = "do not tile")]
    fn sixteen_lanes_refuse_an_8_wide_plane_of_an_odd_number_of_rows() {
        // Split runs pair rows: a third row would be left unwritten.
        let g = Geometry { n: 1, ci: 2, h: 3, w: 8, co: 2, kh: 3, kw: 3, sh: 1, sw: 1, ph: 1, pw: 1 };
        direct_with(Kernel::Portable16, &g, &[0.0; 48], &[0.0; 36], None);
    }

    #[test]
    fn each_cpu_picks_the_widest_build_whose_runs_fit() {
        assert_eq!(Kernel::pick(Isa::Avx512, 32), Kernel::Avx512);
        assert_eq!(Kernel::pick(Isa::Avx512, 8), Kernel::Avx2);
        assert_eq!(Kernel::pick(Isa::Avx512, 24), Kernel::Avx2);
        assert_eq!(Kernel::pick(Isa::Avx2, 32), Kernel::Avx2);
        assert_eq!(Kernel::pick(Isa::Portable, 16), Kernel::Portable16);
        assert_eq!(Kernel::pick(Isa::Portable, 40), Kernel::Portable8);
        // 8-wide planes of an even number of rows: 16 lanes, a run two rows' halves.
        assert_eq!(Kernel::pick_plane(Isa::Avx512, 8, 8), Kernel::Avx512);
        assert_eq!(Kernel::pick_plane(Isa::Avx512, 8, 3), Kernel::Avx2);
        assert_eq!(Kernel::pick_plane(Isa::Avx512, 24, 2), Kernel::Avx2);
        assert_eq!(Kernel::pick_plane(Isa::Avx512, 32, 3), Kernel::Avx512);
        assert_eq!(Kernel::pick_plane(Isa::Avx2, 8, 8), Kernel::Avx2);
        assert_eq!(Kernel::pick_plane(Isa::Portable, 8, 4), Kernel::Portable16);
        assert_eq!(Kernel::pick_plane(Isa::Portable, 8, 1), Kernel::Portable8);
        assert!(!Kernel::Avx512.fits(0, 2) && !Kernel::Avx512.fits(4, 2) && Kernel::Avx2.fits(8, 1));
        assert!(!Kernel::Avx2.fits(4, 2) && !Kernel::Portable8.fits(4, 2) && !Kernel::Portable16.fits(8, 3));
        let flags = |f| std::fs::read_to_string("/proc/cpuinfo").is_ok_and(|s| s.split_whitespace().any(|w| w == f));
        if std::path::Path::new("/proc/cpuinfo").exists() && cfg!(target_arch = "x86_64") {
            let avx2 = flags("avx2") && flags("fma");
            assert_eq!(Kernel::Avx512.runs_here(), avx2 && flags("avx512f"));
            assert_eq!(Kernel::Avx2.runs_here(), avx2);
        }
    }

    #[test]
    fn tiles_cover_the_channels_once() {
        for rows in [6, 12] {
            for co in (2..=130).step_by(2) {
                let t = tiles(co, rows);
                let mut next = 0;
                for &(first, count) in &t {
                    assert_eq!(first, next, "co {co}: {t:?}");
                    assert!(count % 2 == 0 && (2..=rows).contains(&count), "co {co}: {t:?}");
                    next += count;
                }
                assert_eq!(next, co, "co {co}: {t:?}");
                // A tile of 2 only where the layer has 2 channels.
                assert!(co == 2 || t.iter().all(|&(_, c)| c > 2), "co {co}: {t:?}");
            }
        }
        assert_eq!(tiles(26, 12), vec![(0, 10), (10, 8), (18, 8)]);
        assert_eq!(tiles(16, 12), vec![(0, 8), (8, 8)]);
        assert_eq!(tiles(14, 6), vec![(0, 6), (6, 4), (10, 4)]);
        assert_eq!(tiles(64, 6).len(), 11);
    }

    #[test]
    fn declines_what_it_does_not_cover() {
        let g = Geometry { n: 1, ci: 4, h: 8, w: 8, co: 8, kh: 3, kw: 3, sh: 1, sw: 1, ph: 1, pw: 1 };
        for bad in [
            Geometry { w: 4, h: 3, ..g },
            Geometry { w: 4, h: 17, ..g },
            Geometry { w: 4, h: 18, ..g },
            Geometry { w: 12, ..g },
            Geometry { co: 7, ..g },
            Geometry { co: 0, ..g },
            Geometry { sh: 2, ..g },
            Geometry { sh: 3, sw: 3, ..g },
            Geometry { sh: 2, sw: 2, w: 12, ..g },
            Geometry { ph: 0, ..g },
            Geometry { kh: 1, kw: 1, ph: 0, pw: 0, ..g },
        ] {
            assert!(!shape_ok(&bad) && !covers(&bad), "{bad:?}");
        }
        // A plane of a multiple of 8 pixels, at most 64, whose width is not one: the patch walk's,
        // at stride 1 only, and not the bf16 kernels'.
        let small = Geometry { w: 4, h: 4, ..g };
        assert!(small_ok(&small) && !shape_ok(&small) && !stride_one_ok(&small) && !crate::direct_bf16::covers(&small));
        assert!(!small_ok(&Geometry { sh: 2, sw: 2, ..small }) && !small_ok(&Geometry { co: 3, ..small }));
        // Stride 2 is a direct shape, but not one of the bf16 kernels, whose layouts are stride 1.
        let s2 = Geometry { sh: 2, sw: 2, w: 16, ..g };
        assert!(shape_ok(&s2) && !stride_one_ok(&s2) && !crate::direct_bf16::covers(&s2));
        assert!(stride_one_ok(&g) && !crate::direct_bf16::covers_weight_grad(&s2));
    }
}
