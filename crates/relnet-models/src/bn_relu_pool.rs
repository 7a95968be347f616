//! Batch norm (training mode), ReLU and a 2x2 average pool as one operation for burn-flex
//! (NCHW f32): Conv-4's blocks 1 to 3 end this way. Apart, the three write the full-size
//! activation forward and read it back in the pool, and backward the pool writes a full-size
//! gradient that batch norm's backward reads twice. Here the forward pass writes only the pooled
//! output (after the statistics, one pass over the input), and the backward pass spreads each
//! pooled gradient over its 2x2 block plane by plane, into a buffer that stays in cache, as
//! batch norm's sums and its input gradient read it.
//!
//! Every value has the bits of [`fastbn`](crate::fastbn)'s batch norm + ReLU followed by
//! [`fastpool`](crate::fastpool)'s pool, forward and backward (the same float operations in the
//! same order; the tests hold them to it), so a run is the same whichever path it takes. (One
//! caveat in principle: `max(-0.0, 0.0)` may give either zero, and the ReLU's `max` is compiled
//! separately here; a batch-normed value is -0.0 only where the shift is -0.0 too.) The fused
//! path runs where [`fuses`] says so: where [`batch_norm_relu`] takes relnet's path (training
//! mode, burn-flex under autodiff, f32, neither `RELNET_BN=burn` nor `RELNET_CONV=burn`), with
//! a 2x2 pool of stride 2 without padding or `ceil_mode`, on even heights and widths. Everywhere
//! else the three operations run as before.

use std::mem::MaybeUninit;

use burn::backend::autodiff::Autodiff;
use burn::backend::autodiff::checkpoint::strategy::CheckpointStrategy;
use burn::backend::flex::FlexTensor;
use burn::backend::tensor::FloatTensor;
use burn::backend::{Backend, Dispatch, Flex, backend_extension};
use burn::nn::BatchNorm;
use burn::nn::PaddingConfig2d;
use burn::nn::pool::AvgPool2d;
use burn::prelude::*;

use crate::fastbn::{
    BnKernels, FlexOut, GradPlanes, GradSums, Saved, affine, batch_norm_relu, bn_autodiff, bn_shape, check_channels,
    check_images, fast_path, finish, grad_sums, images, outputs, statistics, trained,
};
use crate::fastconv::{mul, par_filled, values};
use crate::fastpool::avg_pool2d;
use crate::lanes::PairSum;

/// The pool's weight: `1 / (2 * 2)`, as `fastpool` computes it.
const QUARTER: f32 = 1.0 / (2 * 2) as f32;

/// Whether an `h x w` plane is whole 2x2 blocks, at least one: `h` and `w` even and non-zero.
fn whole_2x2_blocks(h: usize, w: usize) -> bool {
    h > 0 && w > 0 && h.is_multiple_of(2) && w.is_multiple_of(2)
}

/// Panics, naming `what`, unless the `h x w` plane is whole 2x2 blocks; returns its length,
/// checked for overflow.
fn check_plane(what: &str, h: usize, w: usize) -> usize {
    assert!(whole_2x2_blocks(h, w), "{what}: a {h}x{w} plane is not whole 2x2 blocks");
    mul(h, w, what)
}

/// `avg_pool_2x2(relu(batch_norm(y)))` of `y` (`n` images of `channels` planes of `h x w`, both
/// even) in training mode: `(pooled, mean, var)`, the pooled output `n` images of `channels`
/// planes of `h/2 x w/2`.
///
/// # Panics
///
/// Unless `y` has `n * channels * h * w` values, `h` and `w` are even and non-zero, and `gamma`
/// and `beta` have one value per channel.
#[allow(clippy::too_many_arguments)]
pub fn forward(
    y: &[f32],
    n: usize,
    channels: usize,
    h: usize,
    w: usize,
    gamma: &[f32],
    beta: &[f32],
    eps: f64,
) -> (Vec<f32>, Vec<f32>, Vec<f32>) {
    const WHAT: &str = "bn_relu_pool::forward";
    let plane = check_plane(WHAT, h, w);
    let len = check_images(WHAT, y.len(), Some(n), channels, plane);
    check_channels(WHAT, channels, &[("gamma", gamma), ("beta", beta)]);
    let (mean, var) = statistics(y, n, channels, plane);
    let (scale, shift) = affine(channels, &mean, &var, gamma, beta, eps);
    let (oh, ow) = (h / 2, w / 2);
    let fill = |i: usize, o: &mut [MaybeUninit<f32>]| {
        let yi = &y[i * len..(i + 1) * len];
        for c in 0..channels {
            let (a, b) = (scale[c], shift[c]);
            // `fastbn::normalise`'s output with its ReLU, then `fastpool::forward`'s 2x2 sum.
            let f = |v: f32| (v * a + b).max(0.0);
            let yc = &yi[c * plane..(c + 1) * plane];
            for (oy, out) in o[c * oh * ow..(c + 1) * oh * ow].chunks_exact_mut(ow).enumerate() {
                let (r0, r1) = (&yc[2 * oy * w..(2 * oy + 1) * w], &yc[(2 * oy + 1) * w..(2 * oy + 2) * w]);
                for ((o, p), q) in out.iter_mut().zip(r0.as_chunks::<2>().0).zip(r1.as_chunks::<2>().0) {
                    o.write(((f(p[0]) + f(p[1])) + (f(q[0]) + f(q[1]))) * QUARTER);
                }
            }
        }
    };
    // SAFETY: `y` is `n` images of `len = channels * h * w` values (checked above, the
    // products checked for overflow: so is `n * channels * oh * ow`, a quarter of `y.len()`),
    // so the output is `n` chunks of `channels * oh * ow` values (non-zero unless `channels` is
    // 0, when the output is empty), one per image; `fill` writes each chunk's `channels` planes of `oh`
    // rows of `ow` values (each row zips `ow` pairs of both input rows, `w = 2 * ow`).
    let pooled = unsafe { par_filled(n * channels * oh * ow, channels * oh * ow, fill) };
    (pooled, mean, var)
}

/// The pooled output gradient spread over the input's planes: each value, times a quarter, over
/// its 2x2 block, as `fastpool::backward` writes it, one plane at a time.
struct Spread<'a> {
    dpool: &'a [f32],
    channels: usize,
    h: usize,
    w: usize,
}

impl GradPlanes for Spread<'_> {
    fn plane<'a>(&'a self, i: usize, c: usize, buf: &'a mut Vec<f32>) -> &'a [f32] {
        let (h, w) = (self.h, self.w);
        let (oh, ow) = (h / 2, w / 2);
        let d = &self.dpool[(i * self.channels + c) * oh * ow..][..oh * ow];
        // Every value is written below: only a new length needs the resize.
        if buf.len() != h * w {
            buf.clear();
            buf.resize(h * w, 0.0);
        }
        for (rows, g) in buf.chunks_exact_mut(2 * w).zip(d.chunks_exact(ow)) {
            let (r0, r1) = rows.split_at_mut(w);
            spread_rows(g, r0, r1);
        }
        buf
    }
}

/// Each value of `g` times a quarter, twice in a row, into both `r0` and `r1` (each twice as
/// long as `g`): one row of pooled gradients spread over its two rows of 2x2 blocks. On x86-64
/// four values at a time in SSE registers (the compiler made one scalar multiply and four scalar
/// stores of each); the same multiply, so the same bits, as the scalar tail.
fn spread_rows(g: &[f32], r0: &mut [f32], r1: &mut [f32]) {
    assert!(
        r0.len() == 2 * g.len() && r1.len() == 2 * g.len(),
        "bn_relu_pool::spread_rows: rows of {} and {} values for {} gradients",
        r0.len(),
        r1.len(),
        g.len()
    );
    // How many of `g` the SSE loop spread: its whole blocks of four (none on other CPUs).
    #[cfg(not(target_arch = "x86_64"))]
    let done = 0;
    #[cfg(target_arch = "x86_64")]
    let done = {
        use std::arch::x86_64::{
            _mm_loadu_ps, _mm_mul_ps, _mm_set1_ps, _mm_storeu_ps, _mm_unpackhi_ps, _mm_unpacklo_ps,
        };
        let (g4, _) = g.as_chunks::<4>();
        for ((g, a), b) in g4.iter().zip(r0.as_chunks_mut::<8>().0).zip(r1.as_chunks_mut::<8>().0) {
            // SAFETY: SSE is in every x86-64 build; each load reads the 4 values of `g` and each
            // store writes 4 of the 8 values of `a` or `b` (at offsets 0 and 4), all unaligned.
            unsafe {
                let q = _mm_mul_ps(_mm_loadu_ps(g.as_ptr()), _mm_set1_ps(QUARTER));
                let (lo, hi) = (_mm_unpacklo_ps(q, q), _mm_unpackhi_ps(q, q));
                _mm_storeu_ps(a.as_mut_ptr(), lo);
                _mm_storeu_ps(a.as_mut_ptr().add(4), hi);
                _mm_storeu_ps(b.as_mut_ptr(), lo);
                _mm_storeu_ps(b.as_mut_ptr().add(4), hi);
            }
        }
        4 * g4.len()
    };
    let (p, q) = (r0[2 * done..].as_chunks_mut::<2>().0, r1[2 * done..].as_chunks_mut::<2>().0);
    for ((p, q), &g) in p.iter_mut().zip(q).zip(&g[done..]) {
        *p = [g * QUARTER; 2];
        *q = [g * QUARTER; 2];
    }
}

/// The gradients of [`forward`] for `dpool` (the pooled output's gradient), from its input `y`:
/// `(dy, dgamma, dbeta)`, with the bits of `fastpool::backward` followed by `fastbn::backward`
/// with its ReLU.
///
/// # Panics
///
/// Unless `y` has `n * channels * h * w` values and `dpool` a quarter of that, `h` and `w` are
/// even and non-zero, and `mean`, `var`, `gamma` and `beta` have one value per channel.
#[allow(clippy::too_many_arguments)]
pub fn backward(
    y: &[f32],
    dpool: &[f32],
    n: usize,
    channels: usize,
    h: usize,
    w: usize,
    mean: &[f32],
    var: &[f32],
    gamma: &[f32],
    beta: &[f32],
    eps: f64,
) -> (Vec<f32>, Vec<f32>, Vec<f32>) {
    const WHAT: &str = "bn_relu_pool::backward";
    let plane = check_plane(WHAT, h, w);
    let len = check_images(WHAT, y.len(), Some(n), channels, plane);
    assert!(
        dpool.len() * 4 == y.len(),
        "{WHAT}: a pooled gradient of {} values for an input of {} ({n} images of {len})",
        dpool.len(),
        y.len()
    );
    check_channels(WHAT, channels, &[("mean", mean), ("var", var), ("gamma", gamma), ("beta", beta)]);
    let (scale, shift) = affine(channels, mean, var, gamma, beta, eps);
    let op = |c: usize| GradSums { mean: mean[c], relu: Some((scale[c], shift[c])) };
    let pass = |c: usize| {
        let op = op(c);
        move |g: f32, v: f32| op.first(g, v)
    };
    let dy = Spread { dpool, channels, h, w };
    let sums = grad_sums(y, &dy, n, channels, plane, op);
    finish(y, &dy, n, channels, plane, mean, var, gamma, eps, &sums, pass)
}

#[backend_extension(Flex, Autodiff)]
pub trait FastBatchNormReluPool: Backend {
    /// (pooled output, mean, biased variance) of `avg_pool_2x2(relu(batch_norm(x)))`, NCHW, even
    /// heights and widths.
    fn fast_batch_norm_relu_pool(
        x: FloatTensor<Self>,
        gamma: FloatTensor<Self>,
        beta: FloatTensor<Self>,
        epsilon: f64,
    ) -> (FloatTensor<Self>, FloatTensor<Self>, FloatTensor<Self>);
}

/// Batch norm + ReLU + 2x2 average pool, for [`bn_autodiff`]: its output gradient is the pooled
/// one, spread over the blocks by [`backward`].
#[derive(Clone, Copy, Debug)]
struct Pool;

impl BnKernels for Pool {
    fn outputs(self, x: &FlexTensor, gamma: &FlexTensor, beta: &FlexTensor, eps: f64) -> FlexOut {
        const WHAT: &str = "fast_batch_norm_relu_pool";
        let ((shape, xv), (_, gv), (_, bv)) = (values(x), values(gamma), values(beta));
        assert!(shape.len() == 4, "{WHAT}: input of shape {shape:?} is not NCHW");
        let (n, c, _) = bn_shape(WHAT, &shape, &gv, &bv);
        let (pooled, mean, var) = forward(&xv, n, c, shape[2], shape[3], &gv, &bv, eps);
        outputs(pooled, vec![n, c, shape[2] / 2, shape[3] / 2], mean, var)
    }

    fn grads(self, s: &Saved) -> (Vec<f32>, Vec<f32>, Vec<f32>) {
        // The forward pass checked the shape; the kernel `backward` checks the lengths.
        let (n, c, _) = images(s.shape);
        backward(s.x, s.dy, n, c, s.shape[2], s.shape[3], s.mean, s.var, s.gamma, s.beta, s.eps)
    }
}

impl FastBatchNormReluPool for Flex {
    fn fast_batch_norm_relu_pool(
        x: FlexTensor,
        gamma: FlexTensor,
        beta: FlexTensor,
        epsilon: f64,
    ) -> (FlexTensor, FlexTensor, FlexTensor) {
        Pool.outputs(&x, &gamma, &beta, epsilon)
    }
}

impl<C: CheckpointStrategy> FastBatchNormReluPool for Autodiff<Flex, C> {
    fn fast_batch_norm_relu_pool(
        x: FloatTensor<Self>,
        gamma: FloatTensor<Self>,
        beta: FloatTensor<Self>,
        epsilon: f64,
    ) -> (FloatTensor<Self>, FloatTensor<Self>, FloatTensor<Self>) {
        bn_autodiff::<C, _>(Pool, x, gamma, beta, epsilon)
    }
}

/// Whether [`batch_norm_relu_pool`] runs `bn`, ReLU and `pool` on `x` as one operation: where
/// [`batch_norm_relu`] takes relnet's path, `pool` is 2x2 with stride 2, no padding and no
/// `ceil_mode`, and `x`'s height and width are even and non-zero.
pub fn fuses(bn: &BatchNorm, pool: &AvgPool2d, x: &Tensor<4>) -> bool {
    let [_, _, h, w] = x.dims();
    pool.kernel_size == [2, 2]
        && pool.stride == [2, 2]
        && matches!(pool.padding, PaddingConfig2d::Valid)
        && !pool.ceil_mode
        && whole_2x2_blocks(h, w)
        && fast_path(bn, x)
}

/// `pool.forward(relu(bn.forward(x)))`: through [`FastBatchNormReluPool`] where [`fuses`] says
/// so, with the running statistics updated as burn-nn's `BatchNorm` does; [`batch_norm_relu`]
/// then [`avg_pool2d`] everywhere else.
pub fn batch_norm_relu_pool(bn: &BatchNorm, pool: &AvgPool2d, x: Tensor<4>) -> Tensor<4> {
    if !fuses(bn, pool, &x) {
        return avg_pool2d(pool, batch_norm_relu(bn, x));
    }
    let device = x.device();
    let out = <Dispatch as FastBatchNormReluPool>::fast_batch_norm_relu_pool(
        x.into_dispatch(),
        bn.gamma.val().into_dispatch(),
        bn.beta.val().into_dispatch(),
        bn.epsilon,
    );
    trained(bn, &device, out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{fastbn, fastpool};

    fn bits(v: &[f32]) -> Vec<u32> {
        v.iter().map(|f| f.to_bits()).collect()
    }

    #[test]
    fn fused_has_the_bits_of_batch_norm_relu_then_the_pool() {
        // Planes of 2x2 (the sums' tail only), 4x6 (three-value pooled rows), 8x8 (8-lane bodies,
        // no tail) and 6x10 (a body and a tail; five-value pooled rows: the spread's SSE block
        // and its tail); gammas of both signs, so that the ReLU cuts both ways.
        for (n, c, h, w) in [(3, 2, 2, 2), (5, 3, 4, 6), (2, 3, 8, 8), (4, 3, 6, 10)] {
            let eps = 1e-5;
            let plane = h * w;
            let y: Vec<f32> =
                (0..n * c * plane).map(|i| ((i * 37 % 101) as f32 / 50.0 - 1.0) * (1 + i % 3) as f32).collect();
            let dpool: Vec<f32> = (0..y.len() / 4).map(|i| (i * 53 % 97) as f32 / 48.0 - 1.0).collect();
            let (gamma, beta) = (vec![0.5, -1.5, 2.0][..c].to_vec(), vec![0.1, -0.2, 0.3][..c].to_vec());
            // Apart: batch norm + ReLU, the pool; backward the pool's gradient, then batch norm's.
            let (mean, var) = fastbn::statistics(&y, n, c, plane);
            let a = fastbn::normalise(&y, c, plane, &mean, &var, &gamma, &beta, eps, true);
            assert!(a.contains(&0.0) && a.iter().any(|&v| v > 0.0), "a ReLU that does something");
            let pooled = fastpool::forward(&a, n * c, h, w, 2, 2);
            let da = fastpool::backward(&dpool, n * c, h, w, 2, 2);
            let (dy, dgamma, dbeta) = fastbn::backward(&y, &da, n, c, plane, &mean, &var, &gamma, eps, Some(&beta));
            // Fused.
            let (got, got_mean, got_var) = forward(&y, n, c, h, w, &gamma, &beta, eps);
            let (gdy, gdgamma, gdbeta) = backward(&y, &dpool, n, c, h, w, &mean, &var, &gamma, &beta, eps);
            let shape = (n, c, h, w);
            assert_eq!(bits(&got), bits(&pooled), "pooled output, {shape:?}");
            assert_eq!(bits(&got_mean), bits(&mean), "mean, {shape:?}");
            assert_eq!(bits(&got_var), bits(&var), "variance, {shape:?}");
            assert_eq!(bits(&gdy), bits(&dy), "dy, {shape:?}");
            assert_eq!(bits(&gdgamma), bits(&dgamma), "dgamma, {shape:?}");
            assert_eq!(bits(&gdbeta), bits(&dbeta), "dbeta, {shape:?}");
        }
    }

    #[test]
    fn spread_rows_writes_each_quarter_twice_in_both_rows() {
        // Lengths around the four-value blocks, rows in NaN-filled buffers.
        for n in [0, 1, 3, 4, 5, 8, 11, 16] {
            let g: Vec<f32> = (0..n).map(|i| i as f32 * 1.75 - 3.0).collect();
            let (mut r0, mut r1) = (vec![f32::NAN; 2 * n], vec![f32::NAN; 2 * n]);
            spread_rows(&g, &mut r0, &mut r1);
            let want: Vec<u32> = g.iter().flat_map(|&v| [(v * QUARTER).to_bits(); 2]).collect();
            assert_eq!(bits(&r0), want, "{n}, first row");
            assert_eq!(bits(&r1), want, "{n}, second row");
        }
    }

    #[test]
    #[should_panic(expected = "not whole 2x2 blocks")]
    fn an_odd_plane_is_refused() {
        let y = vec![0f32; 2 * 3 * 4];
        let _ = forward(&y, 1, 2, 3, 4, &[1.0, 1.0], &[0.0, 0.0], 1e-5);
    }

    #[test]
    #[should_panic(expected = "overflows usize")]
    fn a_plane_whose_size_overflows_is_refused() {
        // `h * w` wraps to 16 in a release build: the length check alone would pass.
        let _ = forward(&[0.0; 16], 1, 1, 8, (1 << 63) + 2, &[1.0], &[0.0], 1e-5);
    }

    #[test]
    #[should_panic(expected = "pooled gradient of")]
    fn a_pooled_gradient_of_the_wrong_length_is_refused() {
        let y = vec![0.5f32; 2 * 4 * 4];
        let _ = backward(&y, &[0.0; 7], 1, 2, 4, 4, &[0.0, 0.0], &[1.0, 1.0], &[1.0, 1.0], &[0.0, 0.0], 1e-5);
    }
}
