//! The stride-1 3x3 convolution as Winograd's F(2x2, 3x3) (Lavin & Gray, 2016) for NCHW f32:
//! each 2x2 block of output pixels ("a tile") from the 4x4 block of bordered input that covers
//! it, with 16 multiplications per input channel and output channel where the direct kernel
//! (`direct3x3.rs`) does 36. Written once over [`Simd`], in the builds of `direct3x3::Kernel`.
//!
//! Per image, the tiles are taken two vectors at a time (`W` consecutive tiles of one tile row a
//! vector, so the width must be a multiple of `2 W`: [`shape_ok`] takes widths that are
//! multiples of 16, which at 8 lanes are two runs; a 16-lane build runs a width that is not a
//! multiple of 32 at 8 lanes, with the same bits). For each block of tiles:
//!
//! 1. the input transform `V = Bᵀ d B` of every input channel, from the bordered image whose
//!    rows are stored as their even columns, then their odd columns (`direct3x3::border_as`), so
//!    that the four columns a tile reads are four plain vector loads: `V[ξ][c][tile]`, 16
//!    positions `ξ`;
//! 2. for each register tile of output channels (`direct3x3::tiles`), 16 small products
//!    `M[ξ][k][tile] = Σ_c U[ξ][k][c] V[ξ][c][tile]` (the weights transformed once per call,
//!    `U = G g Gᵀ`, computed in f64 and rounded once), summed over channels in order, one
//!    rounding per multiply-add, into a small buffer that stays in L1;
//! 3. the output transform `Y = Aᵀ M A`, stored as interleaved pairs of columns.
//!
//! Each output is a fixed sequence of operations on its own tile, the same in every lane and at
//! every width: the same bits on any thread count and any instruction set. They are not the
//! direct kernel's bits: Winograd's sums round differently (the transforms add and subtract up
//! to four inputs before multiplying).
//!
//! **Off by default; `RELNET_WINOGRAD=on` turns it on** (the forward convolutions and the
//! stride-1 input gradients that `direct3x3::forward_with` runs). On an AVX2 host it made
//! ResNet-32's stride-1 convolutions (forward) 1.15-1.45x faster, but with it on, relnet's deep ResNets no
//! longer met `fastconv_equivalence`'s float64 check: on ResNet-34 an fp32 ReLU flipped against
//! float64 on all four seeds (worst-tensor errors 1.2e-3 to 1.6e-2, burn's smallest 1.4e-5),
//! where the direct kernel flips on two of four, as burn does. Until that is understood (more
//! seeds, the tiles' own error on the deep layers), the direct kernel stays the default
//! (docs/performance.md, "Winograd F(2x2, 3x3), tried").

use rayon::prelude::*;

use super::direct3x3::{self, Kernel, Map};
use super::fastconv::Geometry;
#[cfg(target_arch = "x86_64")]
use super::simd::{Avx2, Avx512};
use super::simd::{Portable, Simd};

/// Whether the shape is one the Winograd tiles cover: the direct kernel's shape
/// (`direct3x3::shape_ok`) at stride 1 with an even height, and a width that is a multiple of 16
/// (vectors of 8 tiles in one tile row), or 8 with a height that is a multiple of 4 (vectors of
/// 4 tiles in each of two tile rows).
pub(crate) fn shape_ok(g: &Geometry) -> bool {
    direct3x3::shape_ok(g)
        && (g.sh, g.sw) == (1, 1)
        && g.h.is_multiple_of(2)
        && (g.w.is_multiple_of(16) || (g.w == 8 && g.h.is_multiple_of(4)))
}

/// Whether the forward convolution of `g` runs here: [`shape_ok`], where asked for with
/// `RELNET_WINOGRAD=on` (read once; off by default, see the module's documentation).
pub(crate) fn runs(g: &Geometry) -> bool {
    static ON: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    shape_ok(g) && *ON.get_or_init(|| std::env::var("RELNET_WINOGRAD").is_ok_and(|v| v == "on"))
}

/// Whether `lanes` lanes take `g`'s tiles (`w / 2` a row): whole vectors in a tile row, or half a
/// vector in each of two tile rows.
fn fits(lanes: usize, g: &Geometry) -> bool {
    let per_row = g.w / 2;
    per_row.is_multiple_of(lanes) || (2 * per_row == lanes && g.h.is_multiple_of(4))
}

/// The build that runs `g`'s tiles for the direct build `kernel`: `kernel` where its lanes
/// [`fits`], else its 8-lane sibling (which fits every [`shape_ok`] shape).
fn build(kernel: Kernel, g: &Geometry) -> Kernel {
    if fits(kernel.lanes(), g) {
        return kernel;
    }
    match kernel {
        Kernel::Avx512 => Kernel::Avx2,
        Kernel::Portable16 => Kernel::Portable8,
        k => k,
    }
}

/// `G g Gᵀ` of one 3x3 kernel `k` (rows `ky`, columns `kx`), position `ξ = 4i + j`: `G` is
/// `[[1, 0, 0], [½, ½, ½], [½, -½, ½], [0, 0, 1]]`, computed in f64 and rounded once.
fn transform_kernel(k: &[f32]) -> [f32; 16] {
    let g = |r: usize| -> [f64; 4] {
        let (a, b, c) = (k[r] as f64, k[r + 3] as f64, k[r + 6] as f64);
        [a, (a + b + c) / 2.0, (a - b + c) / 2.0, c]
    };
    // Columns of `G g` (one per kx), then `G` along each row of the result.
    let cols = [g(0), g(1), g(2)];
    let mut u = [0f32; 16];
    for i in 0..4 {
        let (a, b, c) = (cols[0][i], cols[1][i], cols[2][i]);
        let row = [a, (a + b + c) / 2.0, (a - b + c) / 2.0, c];
        for j in 0..4 {
            u[4 * i + j] = row[j] as f32;
        }
    }
    u
}

/// `[co, ci, 3, 3]` transformed ([`transform_kernel`]) and packed tile by tile of output channels
/// (`direct3x3::tiles` with tiles of at most `rows`): a tile of `n` channels from channel `first`
/// at `first * 16 * ci` as `[16][ci][n]`, in the order the products read it.
fn pack(g: &Geometry, weight: &[f32], rows: usize) -> Vec<f32> {
    let mut out = vec![0f32; 16 * g.co * g.ci];
    for (first, n) in direct3x3::tiles(g.co, rows) {
        for r in 0..n {
            for c in 0..g.ci {
                let u = transform_kernel(&weight[((first + r) * g.ci + c) * 9..][..9]);
                for (xi, &v) in u.iter().enumerate() {
                    out[first * 16 * g.ci + (xi * g.ci + c) * n + r] = v;
                }
            }
        }
    }
    out
}

/// The convolution of `x` (`[n, ci, h, w]`, or `map(x)` with `map`) with `weight`
/// (`[co, ci, 3, 3]`), stride 1, padding 1, for a `g` that [`shape_ok`] accepts, in the
/// direct build `kernel` (which must run here) or its 8-lane sibling ([`build`]): `[n, co, h, w]`,
/// one image per rayon task.
pub(crate) fn forward_with(kernel: Kernel, g: &Geometry, x: &[f32], weight: &[f32], map: Option<Map>) -> Vec<f32> {
    assert!(shape_ok(g), "{g:?} is not a shape the Winograd tiles cover");
    let kernel = build(kernel, g);
    assert!(kernel.runs_here(), "{kernel:?} does not run on this CPU");
    // `image` writes every output value only where its lanes fit the shape: checked here, not
    // only in debug builds, because the output's length is set on it below.
    assert!(fits(kernel.lanes(), g), "{kernel:?}'s lanes do not fit the tiles of {g:?}");
    assert_eq!(x.len(), g.n * g.ci * g.h * g.w);
    assert_eq!(weight.len(), g.co * g.ci * 9);
    let packed = pack(g, weight, kernel.rows());
    let (len_in, len_out) = (g.ci * g.h * g.w, g.co * g.h * g.w);
    // Not zeroed first: `image` writes every value.
    let mut out: Vec<f32> = Vec::with_capacity(g.n * len_out);
    out.spare_capacity_mut()[..g.n * len_out].par_chunks_mut(len_out).zip(x.par_chunks(len_in)).for_each_init(
        || (Vec::new(), Vec::new(), Vec::new()),
        |(buf, v, m), (o, xi)| {
            direct3x3::border_as(g, xi, buf, map, true);
            let lanes = kernel.lanes();
            v.resize(16 * g.ci * 2 * lanes, 0.0);
            m.resize(16 * kernel.rows() * 2 * lanes, 0.0);
            assert_eq!(buf.len(), g.ci * (g.h + 2) * (g.w + 2));
            assert_eq!(o.len(), len_out);
            // SAFETY: what `image` requires: the CPU runs `kernel` (asserted above), `g` is a
            // `shape_ok` shape that the build's lanes `fits` (asserted above), `buf` is `border_as`'s split copy of the image (length asserted),
            // `packed` is `pack`'s for the build's rows, `v` and `m` have the lengths set just
            // above, and `o` holds `co * h * w` values, borrowed mutably.
            unsafe { dispatch(kernel, g, buf, &packed, v, m, o.as_mut_ptr().cast::<f32>()) };
            if map.is_some_and(|m| m.bf16()) {
                // A bf16 map's output rounded while the image is in the caches, as the direct
                // kernel's (`direct3x3::Map::Bf16`).
                // SAFETY: `image` wrote every value of `o` (its contract, with the asserts
                // above), so all of them are initialised.
                let o = unsafe { std::slice::from_raw_parts_mut(o.as_mut_ptr().cast::<f32>(), o.len()) };
                crate::bf16_layout::round_f32_in_place(o);
            }
        },
    );
    // SAFETY: the capacity is `n * len_out`; `len_in` and `len_out` are non-zero (`shape_ok`) and
    // `x` holds `n` images, so the zip pairs each of the `n` chunks of `len_out` values with an
    // image, and `image` wrote each chunk whole before `for_each_init` returned (had it panicked,
    // the panic would have propagated before this line).
    unsafe { out.set_len(g.n * len_out) };
    out
}

/// [`image`] in the build `kernel`.
///
/// # Safety
///
/// What [`image`] requires, with the build's `S`, and the CPU runs the build.
unsafe fn dispatch(
    kernel: Kernel,
    g: &Geometry,
    buf: &[f32],
    packed: &[f32],
    v: &mut [f32],
    m: &mut [f32],
    out: *mut f32,
) {
    // SAFETY: the caller's contract, for the build each arm runs.
    unsafe {
        match kernel {
            #[cfg(target_arch = "x86_64")]
            Kernel::Avx512 => x86::image_avx512(g, buf, packed, v, m, out),
            #[cfg(target_arch = "x86_64")]
            Kernel::Avx2 => x86::image_avx2(g, buf, packed, v, m, out),
            Kernel::Portable16 => image::<Portable<16>>(g, buf, packed, v, m, out),
            Kernel::Portable8 => image::<Portable<8>>(g, buf, packed, v, m, out),
            #[cfg(not(target_arch = "x86_64"))]
            Kernel::Avx512 | Kernel::Avx2 => unreachable!("an x86 build on another CPU"),
        }
    }
}

/// The entry points with the instruction sets enabled (see `direct3x3`'s).
#[cfg(target_arch = "x86_64")]
mod x86 {
    use super::*;

    /// [`image`] in AVX2.
    ///
    /// # Safety
    ///
    /// The CPU has AVX2 and FMA; what [`image`] requires with `S = Avx2`.
    #[target_feature(enable = "avx2,fma")]
    pub(super) unsafe fn image_avx2(
        g: &Geometry,
        buf: &[f32],
        packed: &[f32],
        v: &mut [f32],
        m: &mut [f32],
        out: *mut f32,
    ) {
        // SAFETY: the caller's contract.
        unsafe { image::<Avx2>(g, buf, packed, v, m, out) }
    }

    /// [`image`] in AVX-512.
    ///
    /// # Safety
    ///
    /// The CPU has AVX-512F; what [`image`] requires with `S = Avx512`.
    #[target_feature(enable = "avx512f")]
    pub(super) unsafe fn image_avx512(
        g: &Geometry,
        buf: &[f32],
        packed: &[f32],
        v: &mut [f32],
        m: &mut [f32],
        out: *mut f32,
    ) {
        // SAFETY: the caller's contract.
        unsafe { image::<Avx512>(g, buf, packed, v, m, out) }
    }
}

/// Where a vector's tiles are: (tile row, first tile column) of its lanes `0 .. W/2` and of its
/// lanes `W/2 .. W`.
type Halves = [(usize, usize); 2];

/// Every tile of one image: blocks of up to two vectors of `W` tiles, each block's input
/// transform, then each register tile of output channels. A vector is `W` consecutive tiles of a
/// tile row where the row has a multiple of `W` tiles, else the `W/2` tiles of each of two
/// consecutive tile rows ([`fits`]).
///
/// # Safety
///
/// The CPU has `S`'s features; `g` is a shape [`shape_ok`] accepts that `S::W` lanes [`fits`];
/// `buf` is `direct3x3::border_as`'s split copy of one image (`ci * (h + 2) * (w + 2)`
/// values); `packed` is [`pack`]'s for tiles of at most `S::ROWS` channels (`16 * co * ci`
/// values); `v` holds at least `16 * ci * 2 * S::W` values and `m` at least
/// `16 * S::ROWS * 2 * S::W`; `out` is valid for writes of `co * h * w` values, and nothing else
/// accesses them.
#[inline(always)]
unsafe fn image<S: Simd>(g: &Geometry, buf: &[f32], packed: &[f32], v: &mut [f32], m: &mut [f32], out: *mut f32) {
    debug_assert!(shape_ok(g) && fits(S::W, g));
    debug_assert!(buf.len() == g.ci * (g.h + 2) * (g.w + 2) && packed.len() == 16 * g.co * g.ci);
    debug_assert!(v.len() >= 16 * g.ci * 2 * S::W && m.len() >= 16 * S::ROWS * 2 * S::W);
    let (per_row, half) = (g.w / 2, S::W / 2);
    let split = !per_row.is_multiple_of(S::W);
    let vectors = if split { g.h / 4 } else { g.h / 2 * (per_row / S::W) };
    let at = |k: usize| -> Halves {
        if split {
            [(2 * k, 0), (2 * k + 1, 0)]
        } else {
            let (tr, t0) = (k / (per_row / S::W), k % (per_row / S::W) * S::W);
            [(tr, t0), (tr, t0 + half)]
        }
    };
    let tiles = direct3x3::tiles(g.co, S::ROWS);
    let mut first = 0;
    while first < vectors {
        let s = (vectors - first).min(2);
        let pos = [at(first), at(first + s - 1)];
        // SAFETY: the caller's contract; the block's vectors are tile rows `< h / 2`, columns
        // `t0 + W/2 <= w / 2` in each half, and `v` is long enough for `s <= 2` vectors.
        unsafe {
            match (s, split) {
                (2, false) => transform_in::<S, 2, false>(g, buf, pos, v.as_mut_ptr()),
                (2, true) => transform_in::<S, 2, true>(g, buf, pos, v.as_mut_ptr()),
                (_, false) => transform_in::<S, 1, false>(g, buf, [pos[0]], v.as_mut_ptr()),
                (_, true) => transform_in::<S, 1, true>(g, buf, [pos[0]], v.as_mut_ptr()),
            }
        }
        for &(co, rows) in &tiles {
            let w = &packed[co * 16 * g.ci..][..16 * g.ci * rows];
            // SAFETY: the caller's contract is `tile`'s, with `co + rows <= g.co` (`tiles`
            // yields consecutive even tiles up to `S::ROWS` ending at `co`), `w` the tile's
            // weights, `v` the block's transform just written.
            unsafe {
                macro_rules! run {
                    ($($r:literal),*) => {
                        match (rows, s) {
                            $(($r, 2) => tile::<S, $r, 2>(g, v, w, m, out, co, pos),
                              ($r, 1) => tile::<S, $r, 1>(g, v, w, m, out, co, [pos[0]]),)*
                            _ => unreachable!("tile of {rows} channels by {s} vectors"),
                        }
                    };
                }
                run!(12, 10, 8, 6, 4, 2)
            }
        }
        first += s;
    }
}

/// The input transform `Bᵀ d B` of the `N` vectors of tiles at `pos`, every channel, into `v`
/// as `[16][ci][N][W]`. Along a row (and then down the columns), the four bordered inputs
/// `d0..d3` of a tile become `d0 - d2`, `d1 + d2`, `d2 - d1`, `d1 - d3`; with the row split into
/// even and odd columns, tile `t`'s `d0, d1, d2, d3` are `even[t], odd[t], even[t + 1],
/// odd[t + 1]`, so each is one vector load (`SPLIT`: two half loads, one per tile row).
///
/// # Safety
///
/// The CPU has `S`'s features; `buf` as [`image`] requires; each half of each `pos` a tile row
/// `< h / 2` and a first column with `t0 + W/2 <= w / 2`, and without `SPLIT` the second half
/// the first's next `W/2` tiles; `v` valid for writes of `16 * ci * N * W` values.
#[inline(always)]
#[allow(clippy::needless_range_loop)]
unsafe fn transform_in<S: Simd, const N: usize, const SPLIT: bool>(
    g: &Geometry,
    buf: &[f32],
    pos: [Halves; N],
    v: *mut f32,
) {
    let wp = g.w + 2;
    let (plane, even) = ((g.h + 2) * wp, wp.div_ceil(2));
    let b = buf.as_ptr();
    for c in 0..g.ci {
        for (i, &[(tr0, t0), (tr1, t1)]) in pos.iter().enumerate() {
            // SAFETY: the caller's contract: the CPU has `S`'s features.
            let zero = unsafe { S::zero() };
            let mut t = [[zero; 4]; 4];
            for (r, t) in t.iter_mut().enumerate() {
                // Bordered rows `2 tr + r <= h + 1`; the loads end at `even + t0 + 1 + W/2 <=
                // even + w / 2 + 1 = wp` (a whole vector from `t0`: `t0 + W <= w / 2`): inside
                // the row.
                // SAFETY: inside channel `c`'s plane, inside `buf` (see above).
                unsafe {
                    let p0 = b.add(c * plane + (2 * tr0 + r) * wp + t0);
                    let p1 = b.add(c * plane + (2 * tr1 + r) * wp + t1);
                    let ld = |o: usize| if SPLIT { S::load_halves(p0.add(o), p1.add(o)) } else { S::load(p0.add(o)) };
                    let (e0, e1, o0, o1) = (ld(0), ld(1), ld(even), ld(even + 1));
                    *t = [S::sub(e0, e1), S::add(o0, e1), S::sub(e1, o0), S::sub(o0, o1)];
                }
            }
            for j in 0..4 {
                // SAFETY: the caller's contract: the CPU has `S`'s features; `v` holds
                // `16 * ci * N * W` values, and position `4r + j`, channel `c`, vector `i` is
                // inside.
                unsafe {
                    let col = [
                        S::sub(t[0][j], t[2][j]),
                        S::add(t[1][j], t[2][j]),
                        S::sub(t[2][j], t[1][j]),
                        S::sub(t[1][j], t[3][j]),
                    ];
                    for (r, x) in col.into_iter().enumerate() {
                        S::store(v.add((((4 * r + j) * g.ci + c) * N + i) * S::W), x);
                    }
                }
            }
        }
    }
}

/// Output channels `co .. co + RR` of the `N` vectors of tiles at `pos`: the 16 products over
/// the channels into `m` (`[16][RR][N][W]`), then the output transform `Aᵀ M A` (`Aᵀ` is
/// `[[1, 1, 1, 0], [0, 1, -1, -1]]`) into `out`, each half of a vector's lanes into its tile row.
///
/// # Safety
///
/// The CPU has `S`'s features; `v` is [`transform_in`]'s for these `N` vectors; `w` is this tile's
/// packed weights (`16 * ci * RR`); `m` holds at least `16 * RR * N * W` values; `co + RR <= g.co`,
/// each `pos` as [`transform_in`] requires, and `out` valid for writes of `co * h * w` values.
#[inline(always)]
#[allow(clippy::needless_range_loop)]
unsafe fn tile<S: Simd, const RR: usize, const N: usize>(
    g: &Geometry,
    v: &[f32],
    w: &[f32],
    m: &mut [f32],
    out: *mut f32,
    co: usize,
    pos: [Halves; N],
) {
    debug_assert!(v.len() >= 16 * g.ci * N * S::W && w.len() == 16 * g.ci * RR && m.len() >= 16 * RR * N * S::W);
    // SAFETY: the caller's contract: the CPU has `S`'s features.
    let zero = unsafe { S::zero() };
    let (vp, wp, mp) = (v.as_ptr(), w.as_ptr(), m.as_mut_ptr());
    for xi in 0..16 {
        let mut acc = [[zero; N]; RR];
        for c in 0..g.ci {
            let mut x = [zero; N];
            for i in 0..N {
                // SAFETY: position `xi`, channel `c`, vector `i` of `v` (see `# Safety`).
                x[i] = unsafe { S::load(vp.add(((xi * g.ci + c) * N + i) * S::W)) };
            }
            for r in 0..RR {
                // SAFETY: weight `(xi, c, r)` of the tile, inside `w`.
                let k = unsafe { S::splat(wp.add((xi * g.ci + c) * RR + r)) };
                for i in 0..N {
                    // SAFETY: the CPU has `S`'s features.
                    acc[r][i] = unsafe { S::fma(k, x[i], acc[r][i]) };
                }
            }
        }
        for r in 0..RR {
            for i in 0..N {
                // SAFETY: `(xi, r, i)` of `m`'s `16 * RR * N * W` values.
                unsafe { S::store(mp.add(((xi * RR + r) * N + i) * S::W), acc[r][i]) };
            }
        }
    }
    let plane = g.h * g.w;
    for r in 0..RR {
        for (i, &[(tr0, t0), (tr1, t1)]) in pos.iter().enumerate() {
            // SAFETY: `m`'s values written above; the CPU has `S`'s features; output channel
            // `co + r < g.co`, rows `2 tr, 2 tr + 1 < h`, columns `2 t0 .. 2 t0 + W <= w` for
            // each half: inside `out`.
            unsafe {
                let at = |xi: usize| S::load(mp.add(((xi * RR + r) * N + i) * S::W));
                // Along each row of `M` (j), then down the two results' columns.
                let mut a = [[zero; 2]; 4];
                for (q, a) in a.iter_mut().enumerate() {
                    let (m0, m1, m2, m3) = (at(4 * q), at(4 * q + 1), at(4 * q + 2), at(4 * q + 3));
                    *a = [S::add(S::add(m0, m1), m2), S::sub(S::sub(m1, m2), m3)];
                }
                let y0 = |j: usize| S::add(S::add(a[0][j], a[1][j]), a[2][j]);
                let y1 = |j: usize| S::sub(S::sub(a[1][j], a[2][j]), a[3][j]);
                let d0 = out.add((co + r) * plane + 2 * tr0 * g.w + 2 * t0);
                let d1 = out.add((co + r) * plane + 2 * tr1 * g.w + 2 * t1);
                S::store_pairs(d0, d1, y0(0), y0(1));
                S::store_pairs(d0.add(g.w), d1.add(g.w), y1(0), y1(1));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::direct3x3::BnRelu;
    use crate::simd::Isa;

    fn geometry(n: usize, ci: usize, h: usize, w: usize, co: usize) -> Geometry {
        Geometry { n, ci, h, w, co, kh: 3, kw: 3, sh: 1, sw: 1, ph: 1, pw: 1 }
    }

    /// Deterministic values in [-1, 1) from a seed.
    fn values(len: usize, seed: u64) -> Vec<f32> {
        let mut s = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
        (0..len)
            .map(|_| {
                s ^= s << 13;
                s ^= s >> 7;
                s ^= s << 17;
                (s >> 40) as f32 / (1u64 << 23) as f32 - 1.0
            })
            .collect()
    }

    /// The definition in f64: `[n, co, h, w]`.
    fn reference(g: &Geometry, x: &[f32], weight: &[f32]) -> Vec<f64> {
        let (h, w) = (g.h as isize, g.w as isize);
        let mut out = vec![0f64; g.n * g.co * g.h * g.w];
        for n in 0..g.n {
            for o in 0..g.co {
                for y in 0..h {
                    for x0 in 0..w {
                        let mut s = 0f64;
                        for c in 0..g.ci {
                            for ky in 0..3isize {
                                for kx in 0..3isize {
                                    let (iy, ix) = (y + ky - 1, x0 + kx - 1);
                                    if iy < 0 || ix < 0 || iy >= h || ix >= w {
                                        continue;
                                    }
                                    let xv = x[((n * g.ci + c) * g.h + iy as usize) * g.w + ix as usize] as f64;
                                    let wv = weight[((o * g.ci + c) * 3 + ky as usize) * 3 + kx as usize] as f64;
                                    s += xv * wv;
                                }
                            }
                        }
                        out[((n * g.co + o) * g.h + y as usize) * g.w + x0 as usize] = s;
                    }
                }
            }
        }
        out
    }

    fn rel_l2(a: &[f32], r: &[f64]) -> f64 {
        let d: f64 = a.iter().zip(r).map(|(a, r)| (*a as f64 - r).powi(2)).sum();
        let n: f64 = r.iter().map(|r| r * r).sum();
        (d / n.max(1e-300)).sqrt()
    }

    /// Winograd's tiles and the direct kernel against the definition in f64 on odd channel
    /// counts, a height of 2, widths of 16, 32 and 48 (one, two and three vectors of 8 tiles a
    /// row: blocks of two vectors and a last block of one) and 8 (vectors across two tile rows,
    /// 12 rows: a last block of one), and the portable builds' bits against each other and
    /// against AVX2's (and AVX-512's) where they run.
    #[test]
    fn matches_the_definition_and_every_build() {
        for (n, ci, h, w, co) in [
            (2, 3, 4, 16, 6),
            (1, 5, 2, 32, 10),
            (3, 16, 6, 48, 16),
            (1, 32, 16, 16, 32),
            (2, 7, 8, 32, 14),
            (2, 9, 8, 8, 12),
            (1, 64, 12, 8, 8),
        ] {
            let g = geometry(n, ci, h, w, co);
            assert!(shape_ok(&g));
            let x = values(n * ci * h * w, (ci * 31 + w) as u64);
            let wt = values(co * ci * 9, (co * 17 + h) as u64);
            let want = reference(&g, &x, &wt);
            let p16 = forward_with(Kernel::Portable16, &g, &x, &wt, None);
            let p8 = forward_with(Kernel::Portable8, &g, &x, &wt, None);
            assert_eq!(p16, p8, "{g:?}: 16 and 8 portable lanes");
            let direct = direct3x3::direct_with(Kernel::Portable8, &g, &x, &wt, None);
            let (ew, ed) = (rel_l2(&p8, &want), rel_l2(&direct, &want));
            assert!(ew < 1e-6 && ew <= 2.0 * ed + 1e-7, "{g:?}: Winograd {ew:.2e}, direct {ed:.2e} against f64");
            if Isa::hardware().is_some() {
                let a = forward_with(Kernel::Avx2, &g, &x, &wt, None);
                assert_eq!(a, p8, "{g:?}: AVX2 and portable");
            }
            if Isa::hardware() == Some(Isa::Avx512) {
                assert_eq!(forward_with(Kernel::Avx512, &g, &x, &wt, None), p8, "{g:?}: AVX-512 and portable");
            }
        }
    }

    /// With a batch-norm map, the bits of the map applied first.
    #[test]
    fn mapped_input_is_the_map_applied_first() {
        let g = geometry(2, 4, 4, 16, 8);
        let x = values(2 * 4 * 4 * 16, 5);
        let wt = values(8 * 4 * 9, 6);
        let (scale, shift) = (values(4, 7), values(4, 8));
        let mapped: Vec<f32> =
            x.iter().enumerate().map(|(i, v)| (v * scale[i / 64 % 4] + shift[i / 64 % 4]).max(0.0)).collect();
        let map = BnRelu { scale: &scale, shift: &shift };
        assert_eq!(
            forward_with(Kernel::Portable8, &g, &x, &wt, Some(map.into())),
            forward_with(Kernel::Portable8, &g, &mapped, &wt, None)
        );
        // Rounded to bf16: the tiles of the rounded input, each output rounded.
        let round = |v: &[f32]| v.iter().map(|&v| crate::fastconv::round_value(v).to_bits()).collect::<Vec<_>>();
        let rounded_x: Vec<f32> = x.iter().map(|&v| crate::fastconv::round_value(v)).collect();
        let bits = |v: Vec<f32>| v.into_iter().map(f32::to_bits).collect::<Vec<_>>();
        assert_eq!(
            bits(forward_with(Kernel::Portable8, &g, &x, &wt, Some(Map::Bf16))),
            round(&forward_with(Kernel::Portable8, &g, &rounded_x, &wt, None))
        );
    }
}
