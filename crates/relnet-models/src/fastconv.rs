//! A 2D convolution for burn-flex (NCHW f32, groups 1, no dilation) as per-image im2col + GEMM
//! on the `gemm` crate, with its own input- and weight-gradient, registered through burn's
//! backend-extension mechanism. Every other backend, and every geometry this does not cover,
//! keeps burn's own `conv2d`.
//!
//! Why: burn-flex 0.22 converts the whole input to NHWC and the weights to another layout for
//! each forward pass, and has no convolution backward of its own (burn's generic one runs the
//! input gradient as a transposed convolution and the weight gradient as a convolution whose
//! kernel is the whole output map). Here each image's `[C_in*kh*kw, H_out*W_out]` patch matrix
//! is built in a per-thread buffer, the forward pass is one GEMM per image (or per fixed chunk
//! of images on small maps) written into the NCHW output. Backward, the weight gradient rebuilds
//! the patches and computes `dW^T` (so that `gemm` reads the patches in place and packs only
//! dY); the input gradient of a stride-1 convolution is itself a forward convolution of dY with
//! the flipped kernel, and otherwise `W^T * dY` added back through col2im. Chunks are spread
//! over rayon's pool; each GEMM runs on one thread.
//!
//! The 3x3, padding-1 convolutions at stride 1 or 2 whose output width is a multiple of 8 (the
//! backbones' main ones and the ResNets' stride-2 ones), and at stride 1 those on planes of a
//! multiple of 8 pixels, at most 64 (Conv-4's 4x4 block, through column-shifted copies of the
//! input), skip the patch matrix altogether on CPUs
//! with AVX2 and FMA: forward, input gradient (at stride 2 where the height, the width and the
//! input channels are even) and weight gradient (with a multiple of 8 output channels) go
//! through the register-tiled kernels of `direct3x3.rs` (`RELNET_DIRECT_CONV=off` keeps the
//! patch matrix and GEMM for them too), built for the widest vector the CPU has (AVX-512 or
//! AVX2). At bf16 precision on a CPU with AVX512-BF16, the stride-1 ones read bf16 and use
//! `vdpbf16ps` (`direct_bf16.rs`).
//!
//! `RELNET_CONV=burn` switches it off (for comparisons); the equivalence tests compare both.

use std::sync::OnceLock;

use burn::backend::autodiff::Autodiff;
use burn::backend::autodiff::checkpoint::base::Checkpointer;
use burn::backend::autodiff::checkpoint::strategy::CheckpointStrategy;
use burn::backend::autodiff::grads::Gradients;
use burn::backend::autodiff::ops::{Backward, Ops, OpsKind};
use burn::backend::flex::FlexTensor;
use burn::backend::tensor::FloatTensor;
use burn::backend::{Backend, Dispatch, DispatchDevice, Flex, backend_extension};
use burn::nn::PaddingConfig2d;
use burn::nn::conv::Conv2d;
use burn::prelude::*;
use burn::tensor::TensorData;
use rayon::prelude::*;

use crate::{direct_bf16, direct3x3};

/// The shape of one convolution: input `[n, ci, h, w]`, weight `[co, ci, kh, kw]`, stride and
/// symmetric zero padding.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Geometry {
    pub n: usize,
    pub ci: usize,
    pub h: usize,
    pub w: usize,
    pub co: usize,
    pub kh: usize,
    pub kw: usize,
    pub sh: usize,
    pub sw: usize,
    pub ph: usize,
    pub pw: usize,
}

impl Geometry {
    pub fn oh(&self) -> usize {
        (self.h + 2 * self.ph - self.kh) / self.sh + 1
    }
    pub fn ow(&self) -> usize {
        (self.w + 2 * self.pw - self.kw) / self.sw + 1
    }
    /// Rows of the patch matrix: `ci * kh * kw`.
    fn rows(&self) -> usize {
        self.ci * self.kh * self.kw
    }
    /// Columns of the patch matrix: output pixels per image.
    fn cols(&self) -> usize {
        self.oh() * self.ow()
    }
    /// A 1x1, stride-1, unpadded convolution: the image itself is its patch matrix.
    fn pointwise(&self) -> bool {
        self.kh == 1 && self.kw == 1 && self.sh == 1 && self.sw == 1 && self.ph == 0 && self.pw == 0
    }
    fn input_len(&self) -> usize {
        self.ci * self.h * self.w
    }
    fn output_len(&self) -> usize {
        self.co * self.cols()
    }
    /// Panics, naming `what`, unless the kernels can run this geometry on slices of these
    /// lengths: kernel and stride at least 1, a kernel no larger than the padded input, no size
    /// overflowing `usize`, and `x` (`[n, ci, h, w]`), `weight` (`[co, ci, kh, kw]`) and `dy`
    /// (`[n, co, oh, ow]`, when given) exactly as long as the geometry says.
    pub(crate) fn check(&self, what: &str, x: usize, weight: usize, dy: Option<usize>) {
        assert!(
            self.kh > 0 && self.kw > 0 && self.sh > 0 && self.sw > 0,
            "{what}: kernel {}x{} and stride {}x{} must be at least 1",
            self.kh,
            self.kw,
            self.sh,
            self.sw
        );
        let padded = |len: usize, p: usize| {
            mul(2, p, what).checked_add(len).unwrap_or_else(|| panic!("{what}: padded size overflows usize"))
        };
        assert!(
            padded(self.h, self.ph) >= self.kh && padded(self.w, self.pw) >= self.kw,
            "{what}: kernel {}x{} is larger than the padded input {}x{} (padding {}x{})",
            self.kh,
            self.kw,
            self.h,
            self.w,
            self.ph,
            self.pw
        );
        // Per image (or per output channel) first, so that each partial product is checked
        // even where the batch (or `co`) is 0.
        let size = |dims: [usize; 4]| dims.into_iter().fold(1, |p, d| mul(p, d, what));
        let want = size([self.ci, self.h, self.w, self.n]);
        assert!(x == want, "{what}: input of {x} values, {self:?} needs {want}");
        let want = size([self.ci, self.kh, self.kw, self.co]);
        assert!(weight == want, "{what}: weight of {weight} values, {self:?} needs {want}");
        let want = size([self.co, self.oh(), self.ow(), self.n]);
        if let Some(dy) = dy {
            assert!(dy == want, "{what}: output gradient of {dy} values, {self:?} needs {want}");
        }
    }
    /// Whether some image, input channel or output value is missing: then the convolution's
    /// output and gradients are all zeros (sums of nothing), which the kernels, working on
    /// whole non-empty images, are not asked to compute.
    fn empty(&self) -> bool {
        self.n == 0 || self.input_len() == 0 || self.output_len() == 0
    }
    /// The stride-1 convolution that maps this one's output gradient to its input gradient:
    /// `co` input channels, `ci` output channels, padding `k - 1 - p` (the same size as the input).
    fn transposed(&self) -> Geometry {
        debug_assert!(self.sh == 1 && self.sw == 1 && self.ph < self.kh && self.pw < self.kw);
        Geometry {
            n: self.n,
            ci: self.co,
            h: self.oh(),
            w: self.ow(),
            co: self.ci,
            kh: self.kh,
            kw: self.kw,
            sh: 1,
            sw: 1,
            ph: self.kh - 1 - self.ph,
            pw: self.kw - 1 - self.pw,
        }
    }
}

/// The kernel of [`Geometry::transposed`]: `w'[c, o, ky, kx] = w[o, c, kh-1-ky, kw-1-kx]`.
fn flipped(g: &Geometry, weight: &[f32]) -> Vec<f32> {
    let (kh, kw) = (g.kh, g.kw);
    let mut out = vec![0f32; weight.len()];
    for o in 0..g.co {
        for c in 0..g.ci {
            for ky in 0..kh {
                for kx in 0..kw {
                    out[((c * g.co + o) * kh + ky) * kw + kx] =
                        weight[((o * g.ci + c) * kh + kh - 1 - ky) * kw + kw - 1 - kx];
                }
            }
        }
    }
    out
}

/// The output columns `ox` whose input column `ox * s + k - p` lies in `0..len`: `lo..hi`.
fn valid_range(out: usize, len: usize, s: usize, k: usize, p: usize) -> (usize, usize) {
    let lo = if p > k { (p - k).div_ceil(s) } else { 0 };
    // ox * s + k - p <= len - 1  <=>  ox <= (len - 1 + p - k) / s
    let hi = if len + p > k { ((len - 1 + p - k) / s + 1).min(out) } else { 0 };
    (lo.min(hi), hi)
}

/// The patch matrix `[ci*kh*kw, oh*ow]` of one image `x` (`[ci, h, w]`) into `col`, whose rows
/// are `ld` apart (several images' patches side by side: this image's start at `col[0]`).
fn im2col(g: &Geometry, x: &[f32], col: &mut [f32], ld: usize) {
    let (oh, ow) = (g.oh(), g.ow());
    // Stride 1 and as wide as the input: a row of the patch matrix is the plane shifted by
    // (ky - ph) rows and (kx - pw) columns, so the valid rows copy as one run and only the
    // columns that wrapped around an edge are zeroed afterwards.
    let shifted = g.sh == 1 && g.sw == 1 && ow == g.w && g.pw < g.kw;
    for c in 0..g.ci {
        let plane = &x[c * g.h * g.w..(c + 1) * g.h * g.w];
        for ky in 0..g.kh {
            for kx in 0..g.kw {
                let row = (c * g.kh + ky) * g.kw + kx;
                let dst = &mut col[row * ld..row * ld + oh * ow];
                if shifted {
                    // Output rows oy whose input row oy + ky - ph lies in 0..h.
                    let (y0, y1) = valid_range(oh, g.h, 1, ky, g.ph);
                    dst[..y0 * ow].fill(0.0);
                    dst[y1.max(y0) * ow..].fill(0.0);
                    if y0 < y1 {
                        let run = &mut dst[y0 * ow..y1 * ow];
                        let shift = kx as isize - g.pw as isize;
                        let start = (y0 + ky - g.ph) as isize * g.w as isize + shift;
                        // The run may reach `|shift|` floats before or after the plane: those
                        // positions are edge columns, zeroed below.
                        let (a, b) = (start.max(0) as usize, ((start + run.len() as isize) as usize).min(plane.len()));
                        let skip = (a as isize - start) as usize;
                        run[skip..skip + (b - a)].copy_from_slice(&plane[a..b]);
                        if shift < 0 {
                            for r in run.chunks_exact_mut(ow) {
                                r[..(-shift) as usize].fill(0.0);
                            }
                        } else if shift > 0 {
                            for r in run.chunks_exact_mut(ow) {
                                r[ow - shift as usize..].fill(0.0);
                            }
                        }
                    }
                    continue;
                }
                let (lo, hi) = valid_range(ow, g.w, g.sw, kx, g.pw);
                for oy in 0..oh {
                    let out = &mut dst[oy * ow..(oy + 1) * ow];
                    let iy = (oy * g.sh + ky) as isize - g.ph as isize;
                    if iy < 0 || iy >= g.h as isize || lo >= hi {
                        out.fill(0.0);
                        continue;
                    }
                    let src = &plane[iy as usize * g.w..(iy as usize + 1) * g.w];
                    out[..lo].fill(0.0);
                    out[hi..].fill(0.0);
                    let first = lo * g.sw + kx - g.pw;
                    if g.sw == 1 {
                        out[lo..hi].copy_from_slice(&src[first..first + (hi - lo)]);
                    } else {
                        for (o, i) in out[lo..hi].iter_mut().zip((first..).step_by(g.sw)) {
                            *o = src[i];
                        }
                    }
                }
            }
        }
    }
}

/// Adds the patch matrix in `col` (rows `ld` apart) back onto one image's gradient `dx`: the
/// adjoint of [`im2col`].
fn col2im_add(g: &Geometry, col: &[f32], ld: usize, dx: &mut [f32]) {
    let (oh, ow) = (g.oh(), g.ow());
    for c in 0..g.ci {
        let plane = &mut dx[c * g.h * g.w..(c + 1) * g.h * g.w];
        for ky in 0..g.kh {
            for kx in 0..g.kw {
                let row = (c * g.kh + ky) * g.kw + kx;
                let src = &col[row * ld..row * ld + oh * ow];
                let (lo, hi) = valid_range(ow, g.w, g.sw, kx, g.pw);
                for oy in 0..oh {
                    let iy = (oy * g.sh + ky) as isize - g.ph as isize;
                    if iy < 0 || iy >= g.h as isize || lo >= hi {
                        continue;
                    }
                    let dst = &mut plane[iy as usize * g.w..(iy as usize + 1) * g.w];
                    let s = &src[oy * ow + lo..oy * ow + hi];
                    let first = lo * g.sw + kx - g.pw;
                    if g.sw == 1 {
                        for (d, v) in dst[first..first + (hi - lo)].iter_mut().zip(s) {
                            *d += v;
                        }
                    } else {
                        for (v, i) in s.iter().zip((first..).step_by(g.sw)) {
                            dst[i] += v;
                        }
                    }
                }
            }
        }
    }
}

/// A vector of `len` values made chunk by chunk on rayon's pool, without zeroing it first:
/// `fill(i, c)` gets the `i`-th run `c` of `chunk` values (the last may be shorter). For
/// outputs that a pass overwrites whole, where `vec![0.0; len]` would add a memset of the
/// same size as the pass's own writes.
///
/// # Safety
///
/// Every call of `fill` that returns must have written every element of the slice it was
/// given (`MaybeUninit::write`); the vector's values are read as initialised afterwards. A
/// `fill` that panics exposes nothing: the panic propagates and the vector is dropped empty.
pub(crate) unsafe fn par_filled(
    len: usize,
    chunk: usize,
    fill: impl Fn(usize, &mut [std::mem::MaybeUninit<f32>]) + Sync + Send,
) -> Vec<f32> {
    let mut out: Vec<f32> = Vec::with_capacity(len);
    out.spare_capacity_mut()[..len].par_chunks_mut(chunk.max(1)).enumerate().for_each(|(i, c)| fill(i, c));
    // SAFETY: the capacity is at least `len`, and the chunks partition `..len`, each written
    // whole by `fill` (the caller's contract); `for_each` returns only after every chunk.
    unsafe { out.set_len(len) };
    out
}

/// `a * b`, panicking with `what` where it overflows `usize` (a release build would wrap).
pub(crate) fn mul(a: usize, b: usize, what: &str) -> usize {
    a.checked_mul(b).unwrap_or_else(|| panic!("{what}: {a} x {b} overflows usize"))
}

/// `dst (m x n, row-major) (+)= a (m x k) * b (k x n)`, with `a` and `b` addressed by (row
/// stride, column stride), on the calling thread.
#[allow(clippy::too_many_arguments)]
fn matmul(
    m: usize,
    n: usize,
    k: usize,
    dst: &mut [f32],
    accumulate: bool,
    a: &[f32],
    a_rs: usize,
    a_cs: usize,
    b: &[f32],
    b_rs: usize,
    b_cs: usize,
) {
    matmul_to(m, n, k, dst, n, 1, accumulate, a, a_rs, a_cs, b, b_rs, b_cs)
}

/// [`matmul`] into a `dst` addressed by (row stride, column stride) too: a column-major `dst`
/// lets the `gemm` crate read a `b` whose columns are contiguous without packing it, and pack
/// `a` instead (the weight gradient: `a` is dY, a ninth of the patch matrix `b`).
#[allow(clippy::too_many_arguments)]
fn matmul_to(
    m: usize,
    n: usize,
    k: usize,
    dst: &mut [f32],
    d_rs: usize,
    d_cs: usize,
    accumulate: bool,
    a: &[f32],
    a_rs: usize,
    a_cs: usize,
    b: &[f32],
    b_rs: usize,
    b_cs: usize,
) {
    // The last element a `rows x cols` matrix with these strides addresses, in checked
    // arithmetic (a wrapped product could pass the length check below).
    let last = |rows: usize, cols: usize, rs: usize, cs: usize| {
        (rows - 1).checked_mul(rs).and_then(|r| (cols - 1).checked_mul(cs).and_then(|c| r.checked_add(c)))
    };
    let fits = |len: usize, rows: usize, cols: usize, rs: usize, cs: usize| {
        rows == 0 || cols == 0 || last(rows, cols, rs, cs).is_some_and(|l| l < len)
    };
    assert!(fits(dst.len(), m, n, d_rs, d_cs), "matmul: dst of {} values is too short for {m}x{n}", dst.len());
    assert!(fits(a.len(), m, k, a_rs, a_cs), "matmul: a of {} values is too short for {m}x{k}", a.len());
    assert!(fits(b.len(), k, n, b_rs, b_cs), "matmul: b of {} values is too short for {k}x{n}", b.len());
    // SAFETY: the asserts above keep every element the GEMM reads or writes inside the three
    // slices (each slice is at most `isize::MAX` bytes, so the offsets fit in `isize`), and
    // `dst`, borrowed mutably, overlaps neither `a` nor `b`.
    unsafe {
        gemm::gemm(
            m,
            n,
            k,
            dst.as_mut_ptr(),
            d_cs as isize,
            d_rs as isize,
            accumulate,
            a.as_ptr(),
            a_cs as isize,
            a_rs as isize,
            b.as_ptr(),
            b_cs as isize,
            b_rs as isize,
            1.0f32,
            1.0f32,
            false,
            false,
            false,
            gemm::Parallelism::None,
        );
    }
}

/// Images per GEMM: enough for about 1,024 output pixels (one image of a 32x32 map, 16 of an
/// 8x8 one), at most an eighth of the batch (work for every core); the exact figure is not
/// critical (docs/performance.md). A function of the shape only, never of the thread count: the
/// weight gradient sums chunks in chunk order, so one thread or many give the same bits.
fn chunk(g: &Geometry) -> usize {
    (1024 / g.cols().max(1)).clamp(1, (g.n / 8).max(1))
}

/// `[b, co, P]` (NCHW) from `[co, b*P]` (`to_nchw`) or back.
fn relayout(g: &Geometry, b: usize, src: &[f32], dst: &mut [f32], to_nchw: bool) {
    let p = g.cols();
    for j in 0..b {
        for o in 0..g.co {
            let (nchw, wide) = ((j * g.co + o) * p, o * b * p + j * p);
            if to_nchw {
                dst[nchw..nchw + p].copy_from_slice(&src[wide..wide + p]);
            } else {
                dst[wide..wide + p].copy_from_slice(&src[nchw..nchw + p]);
            }
        }
    }
}

/// One thread's buffers in [`backward_at`]: the patch matrix and its gradient, `dY` of a chunk
/// side by side, and the bf16 kernels' bordered image and pixel-paired `dY`.
#[derive(Default)]
struct Scratch {
    col: Vec<f32>,
    dcol: Vec<f32>,
    wide: Vec<f32>,
    hbuf: Vec<u16>,
    hdy: Vec<u16>,
}

/// The patch matrices of the `b` images of `x` side by side: `[rows, b*P]`.
/// Returns the distance between its rows: `b*P` plus 16 floats, so that rows `b*P` = 1,024
/// floats (4 KiB, every map of the backbones) apart do not all fall in the same L1 cache set
/// when a GEMM walks down a column.
fn patches(g: &Geometry, x: &[f32], b: usize, col: &mut Vec<f32>) -> usize {
    let (rows, p) = (g.rows(), g.cols());
    let ld = b * p + 16;
    col.resize(rows * ld, 0.0);
    for j in 0..b {
        let xi = &x[j * g.input_len()..(j + 1) * g.input_len()];
        if g.pointwise() {
            for c in 0..rows {
                col[c * ld + j * p..c * ld + (j + 1) * p].copy_from_slice(&xi[c * p..(c + 1) * p]);
            }
        } else {
            im2col(g, xi, &mut col[j * p..], ld);
        }
    }
    ld
}

/// The convolution of `x` (`[n, ci, h, w]`) with `weight` (`[co, ci, kh, kw]`), no bias:
/// `[n, co, oh, ow]`, row-major.
///
/// # Panics
///
/// Where the slices' lengths do not match `g`, or `g` has a zero kernel or stride or a kernel
/// larger than the padded input.
pub fn forward(g: &Geometry, x: &[f32], weight: &[f32]) -> Vec<f32> {
    forward_at(g, x, weight, false)
}

/// [`forward`], with `x` and `weight` rounded to bf16 and summed in fp32, and the output rounded
/// to bf16, where `bf16` is set and the AVX512-BF16 kernel covers `g` (`direct_bf16`); the fp32
/// kernels, with an fp32 output, everywhere else (the bf16 path's callers round the operands, and
/// there the output, themselves, so the numerics are the same).
pub(crate) fn forward_at(g: &Geometry, x: &[f32], weight: &[f32], bf16: bool) -> Vec<f32> {
    g.check("fastconv::forward", x.len(), weight.len(), None);
    let (rows, p, b) = (g.rows(), g.cols(), chunk(g));
    if bf16 && direct_bf16::covers(g) {
        return direct_bf16::forward(g, x, weight);
    }
    if direct3x3::covers(g) {
        return direct3x3::forward(g, x, weight);
    }
    let mut out = vec![0f32; g.n * g.output_len()];
    if g.empty() {
        return out;
    }
    out.par_chunks_mut(b * g.output_len()).zip(x.par_chunks(b * g.input_len())).for_each_init(
        || (Vec::new(), Vec::new()),
        |(col, wide), (o, xc)| {
            let b = xc.len() / g.input_len();
            if b == 1 && g.pointwise() {
                matmul(g.co, p, rows, o, false, weight, rows, 1, xc, p, 1);
                return;
            }
            let ld = patches(g, xc, b, col);
            if b == 1 {
                matmul(g.co, p, rows, o, false, weight, rows, 1, col, ld, 1);
                return;
            }
            wide.resize(g.co * b * p, 0.0);
            matmul(g.co, b * p, rows, wide, false, weight, rows, 1, col, ld, 1);
            relayout(g, b, wide, o, true);
        },
    );
    out
}

/// The gradients of [`forward`] for the output gradient `dy` (`[n, co, oh, ow]`): the input's
/// (if `want_x`) and the weight's (if `want_w`).
///
/// # Panics
///
/// Where [`forward`] panics, or where `dy`'s length does not match `g`.
pub fn backward(
    g: &Geometry,
    x: &[f32],
    weight: &[f32],
    dy: &[f32],
    want_x: bool,
    want_w: bool,
) -> (Option<Vec<f32>>, Option<Vec<f32>>) {
    backward_at(g, x, weight, dy, want_x, want_w, false)
}

/// [`backward`], in bf16 where `bf16` is set and the AVX512-BF16 kernels cover `g`, as
/// [`forward_at`].
pub(crate) fn backward_at(
    g: &Geometry,
    x: &[f32],
    weight: &[f32],
    dy: &[f32],
    want_x: bool,
    want_w: bool,
    bf16: bool,
) -> (Option<Vec<f32>>, Option<Vec<f32>>) {
    g.check("fastconv::backward", x.len(), weight.len(), Some(dy.len()));
    let (rows, p, b) = (g.rows(), g.cols(), chunk(g));
    if g.empty() {
        return (want_x.then(|| vec![0f32; g.n * g.input_len()]), want_w.then(|| vec![0f32; g.co * rows]));
    }
    // With stride 1 (and not pointwise, which needs no patches at all), the input gradient is a
    // convolution of `dy` with the flipped, transposed kernel: one GEMM of depth co*kh*kw per
    // chunk, like the forward pass, instead of a GEMM of depth co and a scatter-add (col2im).
    if want_x && g.sh == 1 && g.sw == 1 && g.ph < g.kh && g.pw < g.kw && !g.pointwise() {
        let (dx, dw) = rayon::join(
            || forward_at(&g.transposed(), dy, &flipped(g, weight), bf16),
            || if want_w { backward_at(g, x, weight, dy, false, true, bf16).1 } else { None },
        );
        return (Some(dx), dw);
    }
    // At stride 2, the direct kernel's four walks over `dy`, one per parity of input pixels,
    // where it covers the shape (`direct3x3::input_grad`): no patch matrix, no scatter-add.
    if want_x && direct3x3::covers_input_grad(g) {
        let (dx, dw) = rayon::join(
            || direct3x3::input_grad(g, dy, weight),
            || if want_w { backward_at(g, x, weight, dy, false, true, bf16).1 } else { None },
        );
        return (Some(dx), dw);
    }
    let mut dx = if want_x { vec![0f32; g.n * g.input_len()] } else { Vec::new() };
    // One chunk of images: its share of the weight gradient, and its input gradient into `dxc`.
    let work = |Scratch { col, dcol, wide, hbuf, hdy }: &mut Scratch,
                xc: &[f32],
                dyc: &[f32],
                dxc: Option<&mut [f32]>|
     -> Vec<f32> {
        let b = xc.len() / g.input_len();
        // dY of the chunk as one [co, b*P] matrix, for the GEMMs only (the direct weight
        // gradient reads `dyc` as it is).
        let bf16_direct = bf16 && direct_bf16::covers_weight_grad(g);
        let direct_w = bf16_direct || direct3x3::covers_weight_grad(g);
        let dyw: &[f32] = if b == 1 || !((want_w && !direct_w) || dxc.is_some()) {
            dyc
        } else {
            wide.resize(g.co * b * p, 0.0);
            relayout(g, b, dyc, wide, false);
            wide
        };
        let mut dw = Vec::new();
        if want_w && direct_w {
            // The same `[rows, co]` layout, without the patch matrix (`col` and `dcol`, or the
            // bf16 kernel's `hbuf` and `hdy`, lend their buffers as scratch).
            dw = vec![0f32; g.co * rows];
            if bf16_direct {
                for j in 0..b {
                    let (xi, dyi) = (
                        &xc[j * g.input_len()..(j + 1) * g.input_len()],
                        &dyc[j * g.output_len()..(j + 1) * g.output_len()],
                    );
                    direct_bf16::weight_grad_image(g, xi, dyi, &mut dw, hbuf, hdy);
                }
            } else {
                direct3x3::weight_grad_images(g, xc, dyc, &mut dw, col, dcol, None);
            }
        } else if want_w {
            let ld = patches(g, xc, b, col);
            // dW (co x rows) = dY (co x bP) * patches^T (bP x rows), stored column-major
            // (as dW^T, `[rows, co]`), transposed back when the chunks are summed.
            dw = vec![0f32; g.co * rows];
            matmul_to(g.co, rows, b * p, &mut dw, 1, g.co, false, dyw, b * p, 1, col, 1, ld);
        }
        if let Some(dxc) = dxc {
            // dpatches (rows x bP) = W^T (rows x co) * dY (co x bP)
            if b == 1 && g.pointwise() {
                matmul(rows, p, g.co, dxc, false, weight, 1, rows, dyw, p, 1);
            } else {
                dcol.resize(rows * b * p, 0.0);
                matmul(rows, b * p, g.co, dcol, false, weight, 1, rows, dyw, b * p, 1);
                for j in 0..b {
                    let dxi = &mut dxc[j * g.input_len()..(j + 1) * g.input_len()];
                    if g.pointwise() {
                        for c in 0..rows {
                            dxi[c * p..(c + 1) * p].copy_from_slice(&dcol[c * b * p + j * p..c * b * p + (j + 1) * p]);
                        }
                    } else {
                        col2im_add(g, &dcol[j * p..], b * p, dxi);
                    }
                }
            }
        }
        dw
    };
    let scratch = Scratch::default;
    let xs = x.par_chunks(b * g.input_len());
    let dys = dy.par_chunks(b * g.output_len());
    let parts: Vec<Vec<f32>> = if want_x {
        xs.zip(dys)
            .zip(dx.par_chunks_mut(b * g.input_len()))
            .map_init(scratch, |s, ((xc, dyc), dxc)| work(s, xc, dyc, Some(dxc)))
            .collect()
    } else {
        xs.zip(dys).map_init(scratch, |s, (xc, dyc)| work(s, xc, dyc, None)).collect()
    };
    (want_x.then_some(dx), want_w.then(|| sum_chunks(g, &parts)))
}

/// The chunks' weight gradients (each `[rows, co]`, transposed) summed in chunk order into
/// `[co, rows]`: the same bits on any thread count.
fn sum_chunks(g: &Geometry, parts: &[Vec<f32>]) -> Vec<f32> {
    let rows = g.rows();
    // Summed in the parts' own layout (contiguous adds), then transposed once: each value is
    // the same sum, in the same order, as summing into `[co, rows]` directly.
    let mut sum = vec![0f32; rows * g.co];
    for part in parts {
        assert_eq!(part.len(), sum.len(), "sum_chunks: a part of {} values for {}", part.len(), sum.len());
        for (s, v) in sum.iter_mut().zip(part) {
            *s += v;
        }
    }
    let mut out = vec![0f32; g.co * rows];
    for (r, row) in sum.chunks_exact(g.co).enumerate() {
        for (o, v) in row.iter().enumerate() {
            out[o * rows + r] = *v;
        }
    }
    out
}

/// The gradients of the stride-1 direct convolution of `map(x)` ([`direct3x3::BnRelu`], which
/// [`direct3x3::forward_mapped`] applies in its bordered copies) for `dy`: of its input `map(x)`
/// (`want_x`) and of `weight` (`want_w`), with the bits [`backward`] gives on the mapped input,
/// which is never written; with a bf16 map ([`direct3x3::Map::Bf16`], `BnReluBf16`), the
/// gradients of the convolution of the rounded (mapped) input and the rounded weights for the
/// rounded `dy`, each rounded to bf16 ([`backward_emulated`]'s numerics). `weight` is the
/// unrounded weight either way. Only where `g` is 3x3, stride 1, padding 1, and the direct
/// kernels cover the forward pass and the weight gradient ([`direct3x3::covers_weight_grad`],
/// [`direct3x3::shape_ok`]).
pub(crate) fn backward_mapped(
    g: &Geometry,
    x: &[f32],
    weight: &[f32],
    dy: &[f32],
    map: direct3x3::Map,
    want_x: bool,
    want_w: bool,
) -> (Option<Vec<f32>>, Option<Vec<f32>>) {
    g.check("fastconv::backward_mapped", x.len(), weight.len(), Some(dy.len()));
    assert!(
        (g.sh, g.sw, g.ph, g.pw) == (1, 1, 1, 1) && direct3x3::covers_mapped(g),
        "backward_mapped: {g:?} is not a stride-1 shape the direct kernels cover"
    );
    let gt = g.transposed();
    rayon::join(
        // As `backward_at`'s stride-1 input gradient: the convolution of `dy` with the flipped
        // kernel; with a bf16 map, of the rounded `dy` (rounded in its bordered copy where the
        // bordered walk covers the transposed shape, a rounded copy elsewhere) with the rounded
        // kernel, each output rounded right after the kernel wrote its image.
        || {
            want_x.then(|| {
                if !map.bf16() {
                    return forward_at(&gt, dy, &flipped(g, weight), false);
                }
                let wf = rounded(&flipped(g, weight));
                if direct3x3::covers(&gt) && direct3x3::shape_ok(&gt) {
                    return direct3x3::forward_mapped(&gt, dy, &wf, direct3x3::Map::Bf16);
                }
                let mut dx = forward_at(&gt, &rounded(dy), &wf, false);
                round_bf16(&mut dx);
                dx
            })
        },
        || {
            // As `backward_at`'s direct weight gradient: chunks of `chunk(g)` images, summed in order.
            let b = chunk(g);
            want_w.then(|| {
                let parts: Vec<Vec<f32>> = x
                    .par_chunks(b * g.input_len())
                    .zip(dy.par_chunks(b * g.output_len()))
                    .map_init(Scratch::default, |s, (xc, dyc)| {
                        let mut dw = vec![0f32; g.co * g.rows()];
                        direct3x3::weight_grad_images(g, xc, dyc, &mut dw, &mut s.col, &mut s.dcol, Some(map));
                        dw
                    })
                    .collect();
                let mut dw = sum_chunks(g, &parts);
                if map.bf16() {
                    round_bf16(&mut dw);
                }
                dw
            })
        },
    )
}

/// `x` rounded to the nearest bf16 value (ties to even): what a cast to bf16 and back gives. A
/// NaN stays a (quiet) NaN. Branch-free, so the compiler vectorises loops of it.
#[inline]
pub(crate) fn round_value(x: f32) -> f32 {
    let b = x.to_bits();
    let r = b.wrapping_add(0x7fff + ((b >> 16) & 1)) & 0xffff_0000;
    f32::from_bits(if x.is_nan() { (b | 0x0040_0000) & 0xffff_0000 } else { r })
}

/// Values a rayon task rounds at a time.
const ROUND_CHUNK: usize = 1 << 15;

/// `v` rounded to bf16 ([`round_value`]), in place.
fn round_bf16(v: &mut [f32]) {
    v.par_chunks_mut(ROUND_CHUNK).for_each(crate::bf16_layout::round_f32_in_place);
}

/// A copy of `v` rounded to bf16 ([`round_value`]), written in one pass.
pub(crate) fn rounded(v: &[f32]) -> Vec<f32> {
    // SAFETY: chunk `i` of the output is `ROUND_CHUNK` values from `i * ROUND_CHUNK` (the last
    // one shorter), the same range of `v`, and `round_f32_into` writes each of its values.
    unsafe {
        par_filled(v.len(), ROUND_CHUNK, |i, out| {
            let n = out.len();
            crate::bf16_layout::round_f32_into(&v[i * ROUND_CHUNK..][..n], out);
        })
    }
}

/// The convolution at bf16 precision as autocast defines it: `x` and `weight` rounded to bf16,
/// summed in fp32 (the AVX512-BF16 kernels where they cover `g`, the fp32 kernels on rounded
/// copies elsewhere), the output rounded to bf16.
///
/// # Panics
///
/// Where [`forward`] panics.
pub fn forward_bf16(g: &Geometry, x: &[f32], weight: &[f32]) -> Vec<f32> {
    g.check("fastconv::forward", x.len(), weight.len(), None);
    // The bf16 kernel rounds its operands as it lays them out and its outputs as it stores
    // them: no rounded copies, no rounding pass.
    if direct_bf16::covers(g) {
        return forward_at(g, x, weight, true);
    }
    forward_emulated(g, x, weight)
}

/// [`forward_bf16`]'s emulated numerics, what it runs where the bf16 kernels do not: the fp32
/// kernels on `x` and `weight` rounded to bf16, the output rounded. Where the direct kernels'
/// bordered walk covers `g` the input is rounded as its bordered copy is made
/// ([`direct3x3::Map::Bf16`]); elsewhere the kernels get a rounded copy. The same bits either way.
pub(crate) fn forward_emulated(g: &Geometry, x: &[f32], weight: &[f32]) -> Vec<f32> {
    g.check("fastconv::forward", x.len(), weight.len(), None);
    if direct3x3::covers(g) && direct3x3::shape_ok(g) {
        // Rounds the input in its bordered copy and each image's output right after the kernel.
        return direct3x3::forward_mapped(g, x, &rounded(weight), direct3x3::Map::Bf16);
    }
    let mut out = forward_at(g, &rounded(x), &rounded(weight), false);
    round_bf16(&mut out);
    out
}

/// The gradients of [`forward_bf16`]: `dy` rounded to bf16, the gradients of the convolution of
/// the rounded operands, each rounded to bf16 (what the casts' own gradients do in autocast).
///
/// # Panics
///
/// Where [`backward`] panics.
pub fn backward_bf16(
    g: &Geometry,
    x: &[f32],
    weight: &[f32],
    dy: &[f32],
    want_x: bool,
    want_w: bool,
) -> (Option<Vec<f32>>, Option<Vec<f32>>) {
    g.check("fastconv::backward", x.len(), weight.len(), Some(dy.len()));
    // Where the bf16 kernels take both gradients (stride 1, see `backward_at`), they round the
    // operands as they lay them out; elsewhere the emulated numerics (`backward_emulated`).
    let stride1 = g.sh == 1 && g.sw == 1 && g.ph < g.kh && g.pw < g.kw;
    let direct =
        stride1 && (!want_x || direct_bf16::covers(&g.transposed())) && (!want_w || direct_bf16::covers_weight_grad(g));
    if !direct {
        return backward_emulated(g, x, weight, dy, want_x, want_w);
    }
    let (dx, mut dw) = backward_at(g, x, weight, dy, want_x, want_w, true);
    // The input gradient is the bf16 forward kernel's output, rounded as it was stored: `direct`
    // with `want_x` means `backward_at` takes its stride-1 path, the forward of the transposed
    // geometry, which `direct_bf16::covers` (checked in `direct`).
    debug_assert!(!want_x || (stride1 && !g.pointwise() && direct_bf16::covers(&g.transposed())));
    if let Some(d) = dw.as_mut() {
        round_bf16(d);
    }
    (dx, dw)
}

/// [`backward_bf16`]'s emulated numerics, what it runs where the bf16 kernels do not: the
/// gradients of the fp32 convolution of the rounded operands for the rounded `dy`, each rounded.
/// At stride 1 where the direct kernels' bordered walks cover the forward and transposed
/// shapes, `x` and `dy` are rounded as their bordered copies are made ([`backward_mapped`]
/// with [`direct3x3::Map::Bf16`]); elsewhere the kernels get rounded copies (`x` only for the
/// weight gradient, `weight` only for the input gradient), and where the bf16 kernels cover one
/// of the two gradients (not both: [`backward_bf16`] takes those) they take it, as
/// [`backward_bf16`] has always done. The fp32 kernels give the same bits either way.
pub(crate) fn backward_emulated(
    g: &Geometry,
    x: &[f32],
    weight: &[f32],
    dy: &[f32],
    want_x: bool,
    want_w: bool,
) -> (Option<Vec<f32>>, Option<Vec<f32>>) {
    g.check("fastconv::backward", x.len(), weight.len(), Some(dy.len()));
    let mapped = (g.sh, g.sw, g.ph, g.pw) == (1, 1, 1, 1)
        && direct3x3::covers_mapped(g)
        && (!want_x || {
            let gt = g.transposed();
            direct3x3::covers(&gt) && direct3x3::shape_ok(&gt) && !direct_bf16::covers(&gt)
        })
        && (!want_w || !direct_bf16::covers_weight_grad(g));
    if mapped {
        // Both gradients come out rounded (`Map::Bf16`).
        return backward_mapped(g, x, weight, dy, direct3x3::Map::Bf16, want_x, want_w);
    }
    let xr = if want_w { std::borrow::Cow::Owned(rounded(x)) } else { std::borrow::Cow::Borrowed(x) };
    let wr = if want_x { std::borrow::Cow::Owned(rounded(weight)) } else { std::borrow::Cow::Borrowed(weight) };
    let (mut dx, mut dw) = backward_at(g, &xr, &wr, &rounded(dy), want_x, want_w, true);
    for d in [dx.as_mut(), dw.as_mut()].into_iter().flatten() {
        round_bf16(d);
    }
    (dx, dw)
}

#[backend_extension(Flex, Autodiff)]
pub trait FastConv: Backend {
    /// A bias-free 2D convolution with stride (sh, sw) and symmetric padding (ph, pw); with
    /// `bf16`, at bf16 precision ([`forward_bf16`], [`backward_bf16`]).
    fn fast_conv2d(
        x: FloatTensor<Self>,
        weight: FloatTensor<Self>,
        sh: usize,
        sw: usize,
        ph: usize,
        pw: usize,
        bf16: bool,
    ) -> FloatTensor<Self>;
}

/// The shape and row-major values of a flex tensor.
pub(crate) fn values(t: &FlexTensor) -> (Vec<usize>, std::borrow::Cow<'_, [f32]>) {
    let shape = t.layout().shape().to_vec();
    match t.as_slice::<f32>() {
        Some(s) => (shape, std::borrow::Cow::Borrowed(s)),
        _ => (shape, std::borrow::Cow::Owned(t.to_contiguous().as_slice::<f32>().expect("contiguous f32").to_vec())),
    }
}

fn geometry(x: &[usize], w: &[usize], sh: usize, sw: usize, ph: usize, pw: usize) -> Geometry {
    assert!(x.len() == 4 && w.len() == 4, "fast_conv2d: input {x:?} and weight {w:?} must both have rank 4");
    assert!(x[1] == w[1], "fast_conv2d: the weight {w:?} has {} input channels, the input {x:?} {}", w[1], x[1]);
    Geometry { n: x[0], ci: x[1], h: x[2], w: x[3], co: w[0], kh: w[2], kw: w[3], sh, sw, ph, pw }
}

fn flex_forward(x: &FlexTensor, weight: &FlexTensor, [sh, sw, ph, pw]: [usize; 4], bf16: bool) -> FlexTensor {
    let ((xs, xv), (ws, wv)) = (values(x), values(weight));
    let g = geometry(&xs, &ws, sh, sw, ph, pw);
    let out = if bf16 { forward_bf16(&g, &xv, &wv) } else { forward(&g, &xv, &wv) };
    FlexTensor::from_data(TensorData::new(out, [g.n, g.co, g.oh(), g.ow()]))
}

impl FastConv for Flex {
    fn fast_conv2d(
        x: FlexTensor,
        weight: FlexTensor,
        sh: usize,
        sw: usize,
        ph: usize,
        pw: usize,
        bf16: bool,
    ) -> FlexTensor {
        flex_forward(&x, &weight, [sh, sw, ph, pw], bf16)
    }
}

impl<C: CheckpointStrategy> FastConv for Autodiff<Flex, C> {
    fn fast_conv2d(
        x: FloatTensor<Self>,
        weight: FloatTensor<Self>,
        sh: usize,
        sw: usize,
        ph: usize,
        pw: usize,
        bf16: bool,
    ) -> FloatTensor<Self> {
        #[derive(Debug)]
        struct ConvBackward;
        impl Backward<Flex, 2> for ConvBackward {
            type State = (FlexTensor, FlexTensor, [usize; 4], bool);
            fn backward(self, ops: Ops<Self::State, 2>, grads: &mut Gradients, _: &mut Checkpointer) {
                let [node_x, node_w] = ops.parents;
                let dy = grads.consume::<Flex>(&ops.node);
                let (x, weight, [sh, sw, ph, pw], bf16) = ops.state;
                let ((xs, xv), (ws, wv), (_, dyv)) = (values(&x), values(&weight), values(&dy));
                let g = geometry(&xs, &ws, sh, sw, ph, pw);
                let (want_x, want_w) = (node_x.is_some(), node_w.is_some());
                let (dx, dw) = if bf16 {
                    backward_bf16(&g, &xv, &wv, &dyv, want_x, want_w)
                } else {
                    backward(&g, &xv, &wv, &dyv, want_x, want_w)
                };
                if let (Some(node), Some(dx)) = (node_x, dx) {
                    grads.register::<Flex>(node.id, FlexTensor::from_data(TensorData::new(dx, xs)));
                }
                if let (Some(node), Some(dw)) = (node_w, dw) {
                    grads.register::<Flex>(node.id, FlexTensor::from_data(TensorData::new(dw, ws)));
                }
            }
        }
        match ConvBackward.prepare::<C>([x.node(), weight.node()]).compute_bound().stateful() {
            OpsKind::Tracked(prep) => {
                let (xp, wp) = (x.primitive().clone(), weight.primitive().clone());
                let out = flex_forward(&xp, &wp, [sh, sw, ph, pw], bf16);
                prep.finish((xp, wp, [sh, sw, ph, pw], bf16), out)
            }
            OpsKind::UnTracked(prep) => {
                prep.finish(flex_forward(x.primitive(), weight.primitive(), [sh, sw, ph, pw], bf16))
            }
        }
    }
}

thread_local! {
    static FORCE_BURN: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

/// Whether relnet's direct 3x3 kernels run on this CPU in this process: AVX2 and FMA (or
/// `RELNET_SIMD=portable`), and not `RELNET_DIRECT_CONV=off`. Where they do not, the shapes they
/// cover run on im2col + GEMM, and the operations that need them (`bn_relu_conv`) run apart.
pub fn direct_kernels_run_here() -> bool {
    crate::simd::Isa::detect().is_some()
}

/// Whether the fast path is on: everywhere but where `RELNET_CONV=burn`, or inside
/// [`with_burn_conv`] on this thread.
pub fn enabled() -> bool {
    static ON: OnceLock<bool> = OnceLock::new();
    !FORCE_BURN.get() && *ON.get_or_init(|| std::env::var("RELNET_CONV").map(|v| v != "burn").unwrap_or(true))
}

/// Runs `f` with burn's own convolution on this thread (the equivalence tests' reference).
pub fn with_burn_conv<R>(f: impl FnOnce() -> R) -> R {
    let before = FORCE_BURN.replace(true);
    let r = f();
    FORCE_BURN.set(before);
    r
}

/// Whether `device` is burn-flex (plain or under autodiff): where relnet's own operations run.
pub fn is_flex(device: &Device) -> bool {
    on_flex(device)
}

pub(crate) fn on_flex(device: &Device) -> bool {
    matches!(device.as_dispatch().clone().inner(), DispatchDevice::Flex(_))
}

/// Whether relnet's own autodiff operations take `x`: f32 on burn-flex under autodiff, with
/// relnet's kernels on ([`enabled`]). The operations add their own conditions (batch norm's
/// training mode and `RELNET_BN`, for instance).
pub(crate) fn flex_autodiff_f32<const D: usize>(x: &Tensor<D>) -> bool {
    let device = x.device();
    on_flex(&device) && enabled() && device.is_autodiff() && x.dtype() == burn::tensor::DType::F32
}

/// `conv.forward(x)` at the thread's precision ([`crate::precision`]), through [`FastConv`]
/// where it applies (burn-flex, f32, groups 1, no dilation, symmetric padding), through burn's
/// `conv2d` everywhere else.
pub fn conv2d(conv: &Conv2d, x: Tensor<4>) -> Tensor<4> {
    use crate::precision::{Precision, current, round};
    let bias = conv.bias.as_ref().map(|b| b.val());
    if current() == Precision::Bf16 {
        if bias.is_none()
            && let Some(y) = fast_conv(conv, x.clone(), conv.weight.val(), true)
        {
            // The rounding of operands, output and gradients inside one operation.
            return y;
        }
        // The same convolution on bf16-rounded input, weight and bias, its output rounded.
        let y = conv2d_with(conv, round(x), round(conv.weight.val()), bias.map(round));
        return round(y);
    }
    conv2d_with(conv, x, conv.weight.val(), bias)
}

/// `conv`'s convolution of `x` with `weight` through [`FastConv`] (at bf16 precision with
/// `bf16`), or `None` where it does not apply: not burn-flex, not f32, groups or dilation, or
/// asymmetric padding.
fn fast_conv(conv: &Conv2d, x: Tensor<4>, weight: Tensor<4>, bf16: bool) -> Option<Tensor<4>> {
    if !(on_flex(&x.device())
        && enabled()
        && x.dtype() == burn::tensor::DType::F32
        && conv.groups == 1
        && conv.dilation == [1, 1])
    {
        return None;
    }
    let (top, left) = match conv.padding {
        PaddingConfig2d::Valid => (0, 0),
        PaddingConfig2d::Explicit(top, left, bottom, right) if top == bottom && left == right => (top, left),
        _ => return None,
    };
    let [sh, sw] = conv.stride;
    Some(Tensor::from_dispatch(<Dispatch as FastConv>::fast_conv2d(
        x.into_dispatch(),
        weight.into_dispatch(),
        sh,
        sw,
        top,
        left,
        bf16,
    )))
}

/// `conv`'s convolution (its stride, padding, dilation, groups) of `x` with `weight` and `bias`.
fn conv2d_with(conv: &Conv2d, x: Tensor<4>, weight: Tensor<4>, bias: Option<Tensor<1>>) -> Tensor<4> {
    // burn's convolution with these operands: the module with its tensors replaced (as values
    // computed from its parameters, so gradients reach them).
    let burn_conv = |x: Tensor<4>, weight: Tensor<4>, bias: Option<Tensor<1>>| {
        use burn::module::{Param, ParamId};
        let mut c = conv.clone();
        c.weight = Param::initialized(ParamId::new(), weight);
        c.bias = bias.map(|b| Param::initialized(ParamId::new(), b));
        c.forward(x)
    };
    let Some(out) = fast_conv(conv, x.clone(), weight.clone(), false) else {
        return burn_conv(x, weight, bias);
    };
    match bias {
        Some(b) => {
            let co = b.dims()[0];
            out + b.reshape([1, co, 1, 1])
        }
        None => out,
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// The convolution and its gradients by definition, one multiply-add at a time.
    fn naive(g: &Geometry, x: &[f32], w: &[f32], dy: &[f32]) -> (Vec<f32>, Vec<f32>, Vec<f32>) {
        let (oh, ow) = (g.oh(), g.ow());
        let mut y = vec![0f32; g.n * g.co * oh * ow];
        let (mut dx, mut dw) = (vec![0f32; x.len()], vec![0f32; w.len()]);
        for n in 0..g.n {
            for o in 0..g.co {
                for oy in 0..oh {
                    for ox in 0..ow {
                        let yi = ((n * g.co + o) * oh + oy) * ow + ox;
                        for c in 0..g.ci {
                            for ky in 0..g.kh {
                                for kx in 0..g.kw {
                                    let iy = (oy * g.sh + ky) as isize - g.ph as isize;
                                    let ix = (ox * g.sw + kx) as isize - g.pw as isize;
                                    if iy < 0 || ix < 0 || iy >= g.h as isize || ix >= g.w as isize {
                                        continue;
                                    }
                                    let xi = ((n * g.ci + c) * g.h + iy as usize) * g.w + ix as usize;
                                    let wi = ((o * g.ci + c) * g.kh + ky) * g.kw + kx;
                                    y[yi] += x[xi] * w[wi];
                                    dx[xi] += dy[yi] * w[wi];
                                    dw[wi] += dy[yi] * x[xi];
                                }
                            }
                        }
                    }
                }
            }
        }
        (y, dx, dw)
    }

    /// `len` values in [-1, 1] from an xorshift seeded by `seed`: the tests' inputs (also
    /// `lanes.rs`'s).
    pub(crate) fn noise(len: usize, seed: u32) -> Vec<f32> {
        let mut s = seed.wrapping_mul(2_654_435_761).wrapping_add(1);
        (0..len)
            .map(|_| {
                s ^= s << 13;
                s ^= s >> 17;
                s ^= s << 5;
                (s as f32 / u32::MAX as f32) * 2.0 - 1.0
            })
            .collect()
    }

    fn close(a: &[f32], b: &[f32], what: &str) {
        assert_eq!(a.len(), b.len());
        let scale = b.iter().fold(0f32, |m, v| m.max(v.abs())).max(1e-6);
        let err = a.iter().zip(b).fold(0f32, |m, (p, q)| m.max((p - q).abs()));
        assert!(err <= 1e-5 * scale, "{what}: max error {err} against max magnitude {scale}");
    }

    #[test]
    fn kernels_equal_the_definition_on_every_geometry_of_the_backbones() {
        // (ci, h, w, co, k, stride, pad): Conv-4 and ResNet 3x3 s1/s2, 1x1 s1/s2 shortcuts,
        // ResNet-34's 7x7 s2 stem, odd sizes, padding wider than needed (stride 1: the input
        // gradient as a transposed convolution, and, with padding >= kernel, the fallback).
        let cases = [
            (3, 8, 8, 4, 3, 1, 1),
            (5, 7, 6, 3, 3, 2, 1),
            (4, 8, 8, 6, 1, 2, 0),
            (4, 5, 7, 2, 1, 1, 0),
            (3, 11, 9, 4, 7, 2, 3),
            (2, 4, 4, 3, 3, 1, 2),
            (2, 3, 5, 2, 3, 3, 0),
            (2, 5, 4, 3, 3, 1, 3),
            (3, 6, 5, 2, 5, 1, 2),
            // 3x3 stride 2 on the direct kernels: an even map (the parity walks' input
            // gradient) and an odd one (direct forward and weight gradient, col2im's input
            // gradient).
            (4, 16, 16, 8, 3, 2, 1),
            (3, 15, 15, 8, 3, 2, 1),
            // Planes whose width is not a multiple of 8 but whose pixel count is (the direct
            // kernels' column-shifted copies): 2x4 with a weight gradient on the direct kernels
            // (8 output channels), Conv-4's 4x4 block (3 images: a partial forward group), 4x2
            // without (6 output channels, 17 images).
            (3, 2, 4, 8, 3, 1, 1),
            (8, 4, 4, 16, 3, 1, 1),
            (5, 4, 2, 6, 3, 1, 1),
        ];
        for (i, &(ci, h, w, co, k, s, p)) in cases.iter().enumerate() {
            let g = Geometry { n: [3, 17, 1][i % 3], ci, h, w, co, kh: k, kw: k, sh: s, sw: s, ph: p, pw: p };
            let x = noise(g.n * ci * h * w, 1 + i as u32);
            let wt = noise(co * ci * k * k, 100 + i as u32);
            let dy = noise(g.n * co * g.oh() * g.ow(), 200 + i as u32);
            let (y, dx, dw) = naive(&g, &x, &wt, &dy);
            close(&forward(&g, &x, &wt), &y, &format!("{g:?} forward"));
            let (fdx, fdw) = backward(&g, &x, &wt, &dy, true, true);
            close(&fdx.unwrap(), &dx, &format!("{g:?} input gradient"));
            close(&fdw.unwrap(), &dw, &format!("{g:?} weight gradient"));
            let (none, only_w) = backward(&g, &x, &wt, &dy, false, true);
            assert!(none.is_none());
            close(&only_w.unwrap(), &dw, "weight gradient alone");
            let (only_x, none) = backward(&g, &x, &wt, &dy, true, false);
            assert!(none.is_none());
            close(&only_x.unwrap(), &dx, "input gradient alone");
        }
    }

    #[test]
    fn the_emulated_bf16_convolution_rounds_in_its_bordered_copies_with_the_bits_of_rounded_copies() {
        // One-pass rounded copies: every value, across chunk edges, and an empty slice.
        let v = noise(2 * ROUND_CHUNK + 3, 9);
        assert!(rounded(&v).iter().zip(&v).all(|(r, x)| r.to_bits() == round_value(*x).to_bits()));
        assert_eq!(rounded(&v).len(), v.len());
        assert!(rounded(&[]).is_empty());
        let probe = Geometry { n: 1, ci: 2, h: 8, w: 8, co: 8, kh: 3, kw: 3, sh: 1, sw: 1, ph: 1, pw: 1 };
        if !direct3x3::covers(&probe) {
            eprintln!("SKIP the bordered copies' rounding: the direct kernels do not run on this CPU");
            return;
        }
        // The emulation's definition: the fp32 kernels on rounded copies, their results rounded.
        // (ci, h, w, co, stride): ResNet-32's 3x3 stride-1 shapes (16x16, and 8x8 planes: split
        // runs); 5 input channels (the input gradient's transposed shape has 5 outputs, so the
        // input gradient takes rounded copies, the weight gradient the rounding border);
        // stride 2 (the forward's strided bordered copy; its gradients on copies); a 4x4 plane
        // (column-shifted copies: copies throughout); 8 output channels (no bf16 weight
        // gradient kernel).
        let cases = [(16, 16, 16, 16, 1), (5, 16, 16, 8, 1), (32, 8, 8, 32, 1), (16, 16, 16, 32, 2), (8, 4, 4, 16, 1)];
        // The reference rounds one value at a time (`round_value`), not through the vector code
        // (`bf16_layout`) that the path under test uses.
        let round = |v: Vec<f32>| v.into_iter().map(round_value).collect::<Vec<_>>();
        let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
        for (i, &(ci, h, w, co, s)) in cases.iter().enumerate() {
            let g = Geometry { n: 5, ci, h, w, co, kh: 3, kw: 3, sh: s, sw: s, ph: 1, pw: 1 };
            let mut x = noise(g.n * g.input_len(), 10 + i as u32);
            // Exact ties between two bf16 values: to the even one (down, then up).
            x[0] = f32::from_bits(0x3f80_8000);
            x[1] = f32::from_bits(0x3f81_8000);
            let wt = noise(g.co * g.rows(), 20 + i as u32);
            let dy = noise(g.n * g.output_len(), 30 + i as u32);
            let (xr, wr, dyr) = (round(x.clone()), round(wt.clone()), round(dy.clone()));
            let want_y = round(forward_at(&g, &xr, &wr, false));
            assert_eq!(bits(&forward_emulated(&g, &x, &wt)), bits(&want_y), "{g:?} forward");
            if direct3x3::shape_ok(&g) {
                // Not rounded here: each image's output is rounded right after the kernel wrote it.
                let y = direct3x3::forward_mapped(&g, &x, &wr, direct3x3::Map::Bf16);
                assert_eq!(bits(&y), bits(&want_y), "{g:?} forward through the rounding border");
            }
            let (dx, dw) = backward_at(&g, &xr, &wr, &dyr, true, true, false);
            let (want_dx, want_dw) = (round(dx.unwrap()), round(dw.unwrap()));
            if s == 1 && direct3x3::covers_mapped(&g) {
                let gt = g.transposed();
                let want_x = direct3x3::covers(&gt) && direct3x3::shape_ok(&gt);
                let (mx, mw) = backward_mapped(&g, &x, &wt, &dy, direct3x3::Map::Bf16, want_x, true);
                assert_eq!(bits(&mw.unwrap()), bits(&want_dw), "{g:?} weight gradient through the border");
                if want_x {
                    // Not rounded here: `backward_mapped` rounds both gradients.
                    assert_eq!(bits(&mx.unwrap()), bits(&want_dx), "{g:?} input gradient through the border");
                }
            }
            // `backward_emulated` against what `backward_bf16` computed before the rounding
            // border: the kernels on rounded copies (the bf16 kernels where bf16 convolutions
            // use them and they cover a gradient, the fp32 kernels elsewhere), then rounded.
            // It tests the rounding border where the bf16 kernels are not chosen (there the
            // reference is `want_dx`, `want_dw`); where they are, and for the shapes the border
            // does not take, `backward_emulated` makes the reference's own call.
            let (bx, bw) = backward_at(&g, &xr, &wr, &dyr, true, true, true);
            let (ex, ew) = backward_emulated(&g, &x, &wt, &dy, true, true);
            assert_eq!(bits(&ex.unwrap()), bits(&round(bx.unwrap())), "{g:?} input gradient");
            assert_eq!(bits(&ew.unwrap()), bits(&round(bw.unwrap())), "{g:?} weight gradient");
        }
    }

    #[test]
    fn one_thread_or_three_give_the_same_bits() {
        // Stride 1, stride 2 (the parity walks' input gradient), and a 4x4 plane (the column-shifted
        // copies, images in groups).
        let s1 = Geometry { n: 37, ci: 8, h: 8, w: 8, co: 16, kh: 3, kw: 3, sh: 1, sw: 1, ph: 1, pw: 1 };
        for g in [s1, Geometry { h: 16, w: 16, sh: 2, sw: 2, ..s1 }, Geometry { h: 4, w: 4, ..s1 }] {
            let x = noise(g.n * g.input_len(), 1);
            let wt = noise(g.co * g.rows(), 2);
            let dy = noise(g.n * g.output_len(), 3);
            let run = |threads: usize| {
                let pool = rayon::ThreadPoolBuilder::new().num_threads(threads).build().unwrap();
                pool.install(|| (forward(&g, &x, &wt), backward(&g, &x, &wt, &dy, true, true)))
            };
            assert!(run(1) == run(3), "{g:?}");
        }
    }
}
