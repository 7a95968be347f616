//! Batch normalisation in training mode for burn-flex (NCHW f32): statistics in two passes per
//! channel, the output and the input gradient in one pass per image, registered through burn's
//! backend extension like [`crate::fastconv`]. burn 0.22 computes it for flex out of generic
//! tensor operations (axis swaps, copies and several reductions, forward and backward).
//! [`batch_norm_relu`] fuses the ReLU that follows it in every backbone: one pass out, one
//! mask in the backward pass, recomputed from the input with the forward's exact arithmetic.
//! [`batch_norm_add_relu`] is the end of every residual block, batch norm, the shortcut's
//! addition and the ReLU, as one operation.
//!
//! It computes what burn's `batch_norm_train` and `batch_norm_train_backward` compute (the
//! biased variance, which burn-nn feeds its running statistics) and updates the running
//! statistics as `BatchNorm::forward` does. Inference, other backends, `RELNET_CONV=burn` and
//! `RELNET_BN=burn` (this one alone) keep burn's path.
//!
//! [`bn_autodiff`] is the autodiff step shared by the batch-norm-like operations of `(x, gamma,
//! beta)` ([`BnKernels`]: this module's batch norm, `bn1d`'s batch norm + LeakyReLU of rows,
//! `bn_relu_pool`'s batch norm + ReLU + pool).

use std::mem::MaybeUninit;

use burn::backend::autodiff::Autodiff;
use burn::backend::autodiff::NodeId;
use burn::backend::autodiff::checkpoint::base::Checkpointer;
use burn::backend::autodiff::checkpoint::strategy::CheckpointStrategy;
use burn::backend::autodiff::grads::Gradients;
use burn::backend::autodiff::ops::{Backward, Ops, OpsKind};
use burn::backend::flex::FlexTensor;
use burn::backend::tensor::FloatTensor;
use burn::backend::{Backend, Dispatch, Flex, backend_extension};
use burn::nn::BatchNorm;
use burn::prelude::*;
use burn::tensor::TensorData;
use rayon::prelude::*;

use crate::fastconv::{flex_autodiff_f32, mul, par_filled, values};
use crate::lanes::{Arith, PairSum, sums2};

/// Panics, naming `what`, unless `x` values are whole images of `channels` planes of `plane`
/// values (`n` of them, where given): what the kernels below index by. Returns the length of
/// one image, `channels * plane`, which is non-zero unless `x` is 0.
pub(crate) fn check_images(what: &str, x: usize, n: Option<usize>, channels: usize, plane: usize) -> usize {
    let len = mul(channels, plane, what);
    match n {
        Some(n) => assert!(
            mul(n, len, what) == x,
            "{what}: {x} values are not {n} images of {channels} channels x {plane} values"
        ),
        None => assert!(
            if len == 0 { x == 0 } else { x.is_multiple_of(len) },
            "{what}: {x} values are not whole images of {channels} channels x {plane} values"
        ),
    }
    len
}

/// Panics, naming `what`, unless each of `per_channel` (name, values) has one value per channel.
pub(crate) fn check_channels(what: &str, channels: usize, per_channel: &[(&str, &[f32])]) {
    for (name, v) in per_channel {
        assert!(v.len() == channels, "{what}: {name} has {} values for {channels} channels", v.len());
    }
}

/// Per channel `c` of `x` (`[n, channels, plane]`): `f(c, the channel's n planes)` in parallel.
fn per_channel<T: Send>(
    x: &[f32],
    n: usize,
    channels: usize,
    plane: usize,
    f: impl Fn(usize, &mut dyn Iterator<Item = &[f32]>) -> T + Sync,
) -> Vec<T> {
    (0..channels)
        .into_par_iter()
        .map(|c| f(c, &mut (0..n).map(|i| &x[(i * channels + c) * plane..(i * channels + c + 1) * plane])))
        .collect()
}

/// The sum of a plane's values (`first`; `second` is 0): the first pass of [`statistics`].
pub(crate) struct PlaneSum;

impl PairSum for PlaneSum {
    fn first<T: Arith>(&self, v: T, _: T) -> T {
        v
    }
    fn second<T: Arith>(&self, _: T, _: T) -> T {
        T::splat(0.0)
    }
}

/// The sum of a plane's squared deviations from `mean` (`first`; `second` is 0): the second
/// pass of [`statistics`].
pub(crate) struct SquaredDeviations {
    pub(crate) mean: f32,
}

impl PairSum for SquaredDeviations {
    fn first<T: Arith>(&self, v: T, _: T) -> T {
        let d = v.sub(T::splat(self.mean));
        d.mul(d)
    }
    fn second<T: Arith>(&self, _: T, _: T) -> T {
        T::splat(0.0)
    }
}

/// The backward pass's per-channel sums over the output gradient `dy` and the input `x`:
/// `first` is `dy` itself or, with `relu` (the forward pass's per-channel `(scale, shift)`),
/// `dy` only where `x * scale + shift` was positive (decided by the forward pass's float
/// operations) and 0 elsewhere; `second` is `first * (x - mean)`.
pub(crate) struct GradSums {
    pub(crate) mean: f32,
    pub(crate) relu: Option<(f32, f32)>,
}

impl PairSum for GradSums {
    fn first<T: Arith>(&self, dy: T, x: T) -> T {
        match self.relu {
            Some((a, b)) => x.mul(T::splat(a)).add(T::splat(b)).pass_if_positive(dy),
            None => dy,
        }
    }
    fn second<T: Arith>(&self, dy: T, x: T) -> T {
        self.first(dy, x).mul(x.sub(T::splat(self.mean)))
    }
}

/// Mean and biased variance of every channel of `x` (`[n, channels, plane]`): per plane in f32
/// lanes, across planes in f64. Panics unless `x` has `n * channels * plane` values.
pub fn statistics(x: &[f32], n: usize, channels: usize, plane: usize) -> (Vec<f32>, Vec<f32>) {
    check_images("fastbn::statistics", x.len(), Some(n), channels, plane);
    let count = (n * plane).max(1) as f64;
    let stats = per_channel(x, n, channels, plane, |_, planes| {
        let (mut s, mut ss) = (0f64, 0f64);
        let planes: Vec<&[f32]> = planes.collect();
        for p in &planes {
            s += sums2(p, p, &PlaneSum).0;
        }
        let mean = s / count;
        let dev = SquaredDeviations { mean: mean as f32 };
        for p in &planes {
            ss += sums2(p, p, &dev).0;
        }
        (mean as f32, (ss / count) as f32)
    });
    stats.into_iter().unzip()
}

/// Per channel, the affine map `x -> x * scale + shift` that batch norm applies.
pub(crate) fn affine(
    channels: usize,
    mean: &[f32],
    var: &[f32],
    gamma: &[f32],
    beta: &[f32],
    eps: f64,
) -> (Vec<f32>, Vec<f32>) {
    let scale: Vec<f32> = (0..channels).map(|c| gamma[c] / ((var[c] as f64 + eps).sqrt() as f32)).collect();
    let shift: Vec<f32> = (0..channels).map(|c| beta[c] - mean[c] * scale[c]).collect();
    (scale, shift)
}

/// `y = (x - mean) / sqrt(var + eps) * gamma + beta`, per channel, then `max(y, 0)` if `relu`,
/// for `x` of whole images of `channels` planes of `plane` values.
///
/// # Panics
///
/// Unless `x` is such images (a multiple of `channels * plane` values, none if that is 0) and
/// `mean`, `var`, `gamma` and `beta` have one value per channel.
#[allow(clippy::too_many_arguments)]
pub fn normalise(
    x: &[f32],
    channels: usize,
    plane: usize,
    mean: &[f32],
    var: &[f32],
    gamma: &[f32],
    beta: &[f32],
    eps: f64,
    relu: bool,
) -> Vec<f32> {
    const WHAT: &str = "fastbn::normalise";
    let len = check_images(WHAT, x.len(), None, channels, plane);
    check_channels(WHAT, channels, &[("mean", mean), ("var", var), ("gamma", gamma), ("beta", beta)]);
    let (scale, shift) = affine(channels, mean, var, gamma, beta, eps);
    let floor = if relu { 0.0 } else { f32::NEG_INFINITY };
    let fill = |i: usize, yi: &mut [MaybeUninit<f32>]| {
        let xi = &x[i * len..(i + 1) * len];
        for c in 0..channels {
            let (a, b) = (scale[c], shift[c]);
            for (o, &v) in yi[c * plane..(c + 1) * plane].iter_mut().zip(&xi[c * plane..(c + 1) * plane]) {
                o.write((v * a + b).max(floor));
            }
        }
    };
    // SAFETY: `len` divides `x.len()` and is non-zero unless `x` is empty (checked above), so
    // every chunk is one whole image of `len` values, and `fill` writes each of its `channels`
    // runs of `plane` values.
    unsafe { par_filled(x.len(), len, fill) }
}

/// `dy` with zeros where the fused ReLU was inactive: where `x * scale + shift <= 0`, the same
/// expression, in the same float operations, as the forward pass decided on. The tests' reference
/// for [`backward`] with a ReLU, which masks as it reads instead of writing this copy.
#[cfg(test)]
#[allow(clippy::too_many_arguments)]
fn relu_mask(
    x: &[f32],
    dy: &[f32],
    channels: usize,
    plane: usize,
    mean: &[f32],
    var: &[f32],
    gamma: &[f32],
    beta: &[f32],
    eps: f64,
) -> Vec<f32> {
    const WHAT: &str = "fastbn::relu_mask";
    let len = check_images(WHAT, x.len(), None, channels, plane);
    assert!(dy.len() == x.len(), "{WHAT}: output gradient of {} values for an input of {}", dy.len(), x.len());
    check_channels(WHAT, channels, &[("mean", mean), ("var", var), ("gamma", gamma), ("beta", beta)]);
    let (scale, shift) = affine(channels, mean, var, gamma, beta, eps);
    let fill = |i: usize, o: &mut [MaybeUninit<f32>]| {
        let (xi, di) = (&x[i * len..(i + 1) * len], &dy[i * len..(i + 1) * len]);
        for c in 0..channels {
            let (a, b) = (scale[c], shift[c]);
            let r = c * plane..(c + 1) * plane;
            for ((o, &v), &g) in o[r.clone()].iter_mut().zip(&xi[r.clone()]).zip(&di[r]) {
                o.write(if v * a + b > 0.0 { g } else { 0.0 });
            }
        }
    };
    // SAFETY: as in `normalise` (`dy` is as long as `x`): every chunk is one whole image of
    // `len` values, and `fill` writes each of its `channels` runs of `plane` values.
    unsafe { par_filled(x.len(), len, fill) }
}

/// The gradients of the training-mode batch norm of `x` (`[n, channels, plane]`) for `dy` (the
/// same shape): `(dx, dgamma, dbeta)`. With `relu_beta` (batch norm's shift), of batch norm
/// followed by ReLU: the output gradient passes only where the forward pass's `x * scale +
/// shift` was positive, decided by the same float operations, as each pass reads it (no masked
/// copy of `dy`).
///
/// # Panics
///
/// Unless `x` and `dy` have `n * channels * plane` values and `mean`, `var`, `gamma` (and
/// `relu_beta`) one per channel.
#[allow(clippy::too_many_arguments)]
pub fn backward(
    x: &[f32],
    dy: &[f32],
    n: usize,
    channels: usize,
    plane: usize,
    mean: &[f32],
    var: &[f32],
    gamma: &[f32],
    eps: f64,
    relu_beta: Option<&[f32]>,
) -> (Vec<f32>, Vec<f32>, Vec<f32>) {
    const WHAT: &str = "fastbn::backward";
    check_images(WHAT, x.len(), Some(n), channels, plane);
    assert!(dy.len() == x.len(), "{WHAT}: output gradient of {} values for an input of {}", dy.len(), x.len());
    check_channels(WHAT, channels, &[("mean", mean), ("var", var), ("gamma", gamma)]);
    // The fused ReLU's per-channel map, as the forward pass computed it.
    let relu = relu_beta.map(|beta| {
        check_channels(WHAT, channels, &[("beta", beta)]);
        affine(channels, mean, var, gamma, beta, eps)
    });
    // Channel `c`'s sums, whose first function is also the gradient `finish` passes on: `dy`
    // where the ReLU let the value through (or there is none), 0 where it did not.
    let op = |c: usize| GradSums { mean: mean[c], relu: relu.as_ref().map(|(s, t)| (s[c], t[c])) };
    let pass = |c: usize| {
        let op = op(c);
        move |g: f32, v: f32| op.first(g, v)
    };
    let dy = Plain::new(WHAT, dy, n, channels, plane);
    let sums = grad_sums(x, &dy, n, channels, plane, op);
    finish(x, &dy, n, channels, plane, mean, var, gamma, eps, &sums, pass)
}

/// Where batch norm's backward pass reads the output gradient: plane by plane, from a tensor of
/// the input's shape ([`Plain`]) or built from a smaller one (`bn_relu_pool`'s pooled
/// gradient, spread over its blocks).
pub(crate) trait GradPlanes: Sync {
    /// Image `i`'s plane of channel `c` of the output gradient (the input's plane length):
    /// borrowed from the gradient, or written into `buf`.
    fn plane<'a>(&'a self, i: usize, c: usize, buf: &'a mut Vec<f32>) -> &'a [f32];
}

/// An output gradient of the input's shape: images of `len` values, planes of `plane`.
pub(crate) struct Plain<'a> {
    dy: &'a [f32],
    len: usize,
    plane: usize,
}

impl<'a> Plain<'a> {
    /// `dy` as `n` images of `channels` planes of `plane` values; panics, naming `what`, unless
    /// it has that many.
    pub(crate) fn new(what: &str, dy: &'a [f32], n: usize, channels: usize, plane: usize) -> Self {
        let len = check_images(what, dy.len(), Some(n), channels, plane);
        Plain { dy, len, plane }
    }
}

impl GradPlanes for Plain<'_> {
    fn plane<'a>(&'a self, i: usize, c: usize, _: &'a mut Vec<f32>) -> &'a [f32] {
        &self.dy[i * self.len + c * self.plane..][..self.plane]
    }
}

/// Per channel `c`, in parallel: the sums of `op(c)`'s `first` (dbeta) and `second` (dgamma,
/// before `inv_std`) over `dy`'s planes and `x`'s (`[n, channels, plane]`), each plane in f32
/// lanes ([`sums2`]), the planes added in image order in f64.
pub(crate) fn grad_sums(
    x: &[f32],
    dy: &impl GradPlanes,
    n: usize,
    channels: usize,
    plane: usize,
    op: impl Fn(usize) -> GradSums + Sync,
) -> Vec<(f64, f64)> {
    (0..channels)
        .into_par_iter()
        .map(|c| {
            let (mut sd, mut sdx) = (0f64, 0f64);
            let (op, mut buf) = (op(c), Vec::new());
            for i in 0..n {
                let xs = &x[(i * channels + c) * plane..(i * channels + c + 1) * plane];
                let (a, b) = sums2(dy.plane(i, c, &mut buf), xs, &op);
                sd += a;
                sdx += b;
            }
            (sd, sdx)
        })
        .collect()
}

/// A batch norm's weight gradients and, per channel, the coefficients of its input gradient
/// `k * (g - md - (x - mean) * is * mdx)` (one value per channel in each), from the per-channel
/// sums of the output gradient `g` and of `g * (x - mean)` ([`GradCoefficients::new`]).
pub(crate) struct GradCoefficients {
    pub(crate) dgamma: Vec<f32>,
    pub(crate) dbeta: Vec<f32>,
    /// `gamma * inv_std`.
    pub(crate) k: Vec<f32>,
    /// `mean(g)`.
    pub(crate) md: Vec<f32>,
    /// `mean(g * x_hat)`.
    pub(crate) mdx: Vec<f32>,
    /// `inv_std = 1 / sqrt(var + eps)`.
    pub(crate) is: Vec<f32>,
}

impl GradCoefficients {
    /// From the sums over `count` values per channel; `var`, `gamma` and `sums` have one value
    /// per channel (checked by the callers).
    pub(crate) fn new(count: usize, var: &[f32], gamma: &[f32], eps: f64, sums: &[(f64, f64)]) -> Self {
        let inv_std: Vec<f64> = var.iter().map(|&v| 1.0 / (v as f64 + eps).sqrt()).collect();
        let count = count.max(1) as f64;
        let each = |f: &dyn Fn(usize) -> f64| (0..sums.len()).map(|c| f(c) as f32).collect::<Vec<f32>>();
        GradCoefficients {
            dgamma: each(&|c| sums[c].1 * inv_std[c]),
            dbeta: each(&|c| sums[c].0),
            k: each(&|c| gamma[c] as f64 * inv_std[c]),
            md: each(&|c| sums[c].0 / count),
            mdx: each(&|c| sums[c].1 * inv_std[c] / count),
            is: each(&|c| inv_std[c]),
        }
    }
}

/// The rest of [`backward`] from the per-channel sums of `dy` and of `dy * (x - mean)` (`dy`
/// passed through `pass(c)`): `(dx, dgamma, dbeta)`, with
/// `dx = gamma * inv_std * (dy - mean(dy) - x_hat * mean(dy * x_hat))` in one pass.
#[allow(clippy::too_many_arguments)]
pub(crate) fn finish<P: Fn(f32, f32) -> f32>(
    x: &[f32],
    dy: &impl GradPlanes,
    n: usize,
    channels: usize,
    plane: usize,
    mean: &[f32],
    var: &[f32],
    gamma: &[f32],
    eps: f64,
    sums: &[(f64, f64)],
    pass: impl Fn(usize) -> P + Sync,
) -> (Vec<f32>, Vec<f32>, Vec<f32>) {
    const WHAT: &str = "fastbn::finish";
    let len = check_images(WHAT, x.len(), Some(n), channels, plane);
    check_channels(WHAT, channels, &[("mean", mean), ("var", var), ("gamma", gamma)]);
    assert!(sums.len() == channels, "{WHAT}: {} sums for {channels} channels", sums.len());
    let coef = GradCoefficients::new(n * plane, var, gamma, eps, sums);
    let fill = |i: usize, o: &mut [MaybeUninit<f32>]| {
        let (xi, mut buf) = (&x[i * len..(i + 1) * len], Vec::new());
        // `mean` has one value per channel (checked above).
        for (c, &m) in mean.iter().enumerate() {
            let (k, md, mdx, is) = (coef.k[c], coef.md[c], coef.mdx[c], coef.is[c]);
            let pass = pass(c);
            let r = c * plane..(c + 1) * plane;
            let di = dy.plane(i, c, &mut buf);
            assert!(di.len() == plane, "{WHAT}: a gradient plane of {} values for planes of {plane}", di.len());
            for ((o, &v), &g) in o[r.clone()].iter_mut().zip(&xi[r]).zip(di) {
                o.write(k * (pass(g, v) - md - (v - m) * is * mdx));
            }
        }
    };
    // SAFETY: `x` is `n` images of `len` values (checked above; `len` is non-zero unless `x` is
    // empty), so every chunk is one whole image, and `fill` writes each of its `channels` runs
    // of `plane` values (each gradient plane is `plane` values long, asserted).
    let dx = unsafe { par_filled(x.len(), len, fill) };
    (dx, coef.dgamma, coef.dbeta)
}

/// `relu(batch_norm(y) + s)`: the end of a residual block in one pass, with its statistics
/// `(out, mean, var)`. The same float operations as [`normalise`] followed by `relu(a + b)`.
///
/// # Panics
///
/// Unless `y` and `s` are `n` images of `channels` planes of `plane` values and `gamma` and
/// `beta` have one value per channel.
#[allow(clippy::too_many_arguments)]
pub fn bn_add_relu_forward(
    y: &[f32],
    s: &[f32],
    n: usize,
    channels: usize,
    plane: usize,
    gamma: &[f32],
    beta: &[f32],
    eps: f64,
) -> (Vec<f32>, Vec<f32>, Vec<f32>) {
    const WHAT: &str = "fastbn::bn_add_relu_forward";
    let len = check_images(WHAT, y.len(), Some(n), channels, plane);
    assert!(s.len() == y.len(), "{WHAT}: a shortcut of {} values for an input of {}", s.len(), y.len());
    check_channels(WHAT, channels, &[("gamma", gamma), ("beta", beta)]);
    let (mean, var) = statistics(y, n, channels, plane);
    let (scale, shift) = affine(channels, &mean, &var, gamma, beta, eps);
    let fill = |i: usize, o: &mut [MaybeUninit<f32>]| {
        let (yi, si) = (&y[i * len..(i + 1) * len], &s[i * len..(i + 1) * len]);
        for c in 0..channels {
            let (a, b) = (scale[c], shift[c]);
            let r = c * plane..(c + 1) * plane;
            for ((o, &v), &u) in o[r.clone()].iter_mut().zip(&yi[r.clone()]).zip(&si[r]) {
                o.write((v * a + b + u).max(0.0));
            }
        }
    };
    // SAFETY: `y` and `s` are `n` images of `len` values (checked above; `len` is non-zero
    // unless they are empty): every chunk is one whole image, and `fill` writes each of its
    // `channels` runs of `plane` values.
    let out = unsafe { par_filled(y.len(), len, fill) };
    (out, mean, var)
}

/// The gradients of [`bn_add_relu_forward`] for `dout`, from its input `y` and its output `out`:
/// `(dy, dgamma, dbeta, ds)`, where `ds` (the shortcut's gradient) is `dout` where `out` is
/// positive and 0 elsewhere. That mask is written and summed in one pass per image (the
/// per-channel sums of each image combined in image order: the bits of [`backward`] on the
/// masked gradient, whatever the thread count), then `dy` in one more.
///
/// # Panics
///
/// Unless `y`, `out` and `dout` have `n * channels * plane` values and `mean`, `var` and `gamma`
/// one per channel.
#[allow(clippy::too_many_arguments)]
pub fn bn_add_relu_backward(
    y: &[f32],
    out: &[f32],
    dout: &[f32],
    n: usize,
    channels: usize,
    plane: usize,
    mean: &[f32],
    var: &[f32],
    gamma: &[f32],
    eps: f64,
) -> (Vec<f32>, Vec<f32>, Vec<f32>, Vec<f32>) {
    const WHAT: &str = "fastbn::bn_add_relu_backward";
    let len = check_images(WHAT, y.len(), Some(n), channels, plane);
    assert!(
        out.len() == y.len() && dout.len() == y.len(),
        "{WHAT}: an output of {} values and its gradient of {} for an input of {}",
        out.len(),
        dout.len(),
        y.len()
    );
    check_channels(WHAT, channels, &[("mean", mean), ("var", var), ("gamma", gamma)]);
    let mut ds: Vec<f32> = Vec::with_capacity(y.len());
    let per_image: Vec<Vec<(f64, f64)>> = ds.spare_capacity_mut()[..y.len()]
        .par_chunks_mut(len.max(1))
        .enumerate()
        .map(|(i, di)| {
            let (oi, gi, yi) =
                (&out[i * len..(i + 1) * len], &dout[i * len..(i + 1) * len], &y[i * len..(i + 1) * len]);
            for ((d, &o), &g) in di.iter_mut().zip(oi).zip(gi) {
                d.write(if o > 0.0 { g } else { 0.0 });
            }
            // SAFETY: `y` is `n` images of `len` values, so chunk `i` is image `i`, `len` values
            // long, as are `oi` and `gi`: the loop above wrote every value of `di`.
            let di = unsafe { std::slice::from_raw_parts(di.as_ptr().cast::<f32>(), di.len()) };
            (0..channels)
                .map(|c| {
                    let r = c * plane..(c + 1) * plane;
                    sums2(&di[r.clone()], &yi[r], &GradSums { mean: mean[c], relu: None })
                })
                .collect()
        })
        .collect();
    // SAFETY: the capacity is `y.len()`, and the chunks above partition it, each written whole.
    unsafe { ds.set_len(y.len()) };
    let sums: Vec<(f64, f64)> = (0..channels)
        .map(|c| per_image.iter().fold((0f64, 0f64), |(a, b), img| (a + img[c].0, b + img[c].1)))
        .collect();
    let (dy, dgamma, dbeta) =
        finish(y, &Plain::new(WHAT, &ds, n, channels, plane), n, channels, plane, mean, var, gamma, eps, &sums, |_| {
            |g: f32, _: f32| g
        });
    (dy, dgamma, dbeta, ds)
}

#[backend_extension(Flex, Autodiff)]
pub trait FastBatchNorm: Backend {
    /// Training-mode batch norm of an NCHW input, followed by a ReLU if `relu`: (output, mean,
    /// biased variance).
    fn fast_batch_norm_train(
        x: FloatTensor<Self>,
        gamma: FloatTensor<Self>,
        beta: FloatTensor<Self>,
        epsilon: f64,
        relu: bool,
    ) -> (FloatTensor<Self>, FloatTensor<Self>, FloatTensor<Self>);
}

/// A batch norm's output of `shape` and its per-channel mean and variance as flex tensors.
pub(crate) fn outputs(
    y: Vec<f32>,
    shape: Vec<usize>,
    mean: Vec<f32>,
    var: Vec<f32>,
) -> (FlexTensor, FlexTensor, FlexTensor) {
    let c = mean.len();
    (
        FlexTensor::from_data(TensorData::new(y, shape)),
        FlexTensor::from_data(TensorData::new(mean, [c])),
        FlexTensor::from_data(TensorData::new(var, [c])),
    )
}

/// Registers each gradient whose node is tracked (`Some` id).
fn register<const N: usize>(grads: &mut Gradients, pairs: [(Option<NodeId>, FlexTensor); N]) {
    for (id, g) in pairs {
        if let Some(id) = id {
            grads.register::<Flex>(id, g);
        }
    }
}

/// Registers a batch norm's gradients `(dx, dgamma, dbeta)`, of its input (of `shape`), gamma and
/// beta, for the nodes `ids` (in that order) that are tracked.
pub(crate) fn register_bn(
    grads: &mut Gradients,
    ids: [Option<NodeId>; 3],
    shape: Vec<usize>,
    (dx, dgamma, dbeta): (Vec<f32>, Vec<f32>, Vec<f32>),
) {
    let c = dgamma.len();
    let [x, gamma, beta] = ids;
    register(
        grads,
        [
            (x, FlexTensor::from_data(TensorData::new(dx, shape))),
            (gamma, FlexTensor::from_data(TensorData::new(dgamma, [c]))),
            (beta, FlexTensor::from_data(TensorData::new(dbeta, [c]))),
        ],
    );
}

impl FastBatchNorm for Flex {
    fn fast_batch_norm_train(
        x: FlexTensor,
        gamma: FlexTensor,
        beta: FlexTensor,
        epsilon: f64,
        relu: bool,
    ) -> (FlexTensor, FlexTensor, FlexTensor) {
        Images { relu }.outputs(&x, &gamma, &beta, epsilon)
    }
}

/// The two halves of a batch-norm-like operation of `(x, gamma, beta)` on burn-flex, for
/// [`bn_autodiff`]: the output and statistics from flex tensors, and the three gradients from
/// slices. `self` carries the operation's own parameter (a ReLU's flag, a LeakyReLU's slope).
pub(crate) trait BnKernels: Copy + Send + std::fmt::Debug + 'static {
    /// `(output, mean, biased variance)`, checking the shapes.
    fn outputs(self, x: &FlexTensor, gamma: &FlexTensor, beta: &FlexTensor, eps: f64) -> FlexOut;
    /// `(dx, dgamma, dbeta)` from what the forward pass kept and the output gradient.
    fn grads(self, saved: &Saved) -> (Vec<f32>, Vec<f32>, Vec<f32>);
}

/// Three flex tensors: a batch norm's output, mean and variance.
pub(crate) type FlexOut = (FlexTensor, FlexTensor, FlexTensor);

/// A float tensor of burn-flex under autodiff. The same type for every checkpoint strategy `C`
/// (burn's autodiff tensor does not name it), so callers of [`bn_autodiff`] name `C`.
pub(crate) type AdTensor<C> = FloatTensor<Autodiff<Flex, C>>;

/// What a batch norm's backward step reads: the forward pass's input `x` (of `shape`, as the
/// forward pass checked it), parameters, statistics and epsilon, and the gradient `dy` of the
/// operation's output (of `x`'s shape, or the pooled one's for `bn_relu_pool`). `beta` is always
/// there; an operation reads it where its mask needs it.
pub(crate) struct Saved<'a> {
    pub(crate) x: &'a [f32],
    pub(crate) shape: &'a [usize],
    pub(crate) dy: &'a [f32],
    pub(crate) gamma: &'a [f32],
    pub(crate) beta: &'a [f32],
    pub(crate) mean: &'a [f32],
    pub(crate) var: &'a [f32],
    pub(crate) eps: f64,
}

/// `kernels` under burn's autodiff: the forward pass, and a backward step that registers the
/// gradients of `x`, `gamma` and `beta` (those that are tracked). `(output, mean, var)`.
pub(crate) fn bn_autodiff<C: CheckpointStrategy, K: BnKernels>(
    kernels: K,
    x: AdTensor<C>,
    gamma: AdTensor<C>,
    beta: AdTensor<C>,
    eps: f64,
) -> (AdTensor<C>, AdTensor<C>, AdTensor<C>) {
    #[derive(Debug)]
    struct BnBackward<K>(K);
    impl<K: BnKernels> Backward<Flex, 3> for BnBackward<K> {
        /// x, gamma, beta, mean, variance, epsilon.
        type State = (FlexTensor, FlexTensor, FlexTensor, FlexTensor, FlexTensor, f64);
        fn backward(self, ops: Ops<Self::State, 3>, grads: &mut Gradients, _: &mut Checkpointer) {
            let [node_x, node_gamma, node_beta] = ops.parents;
            let dy = grads.consume::<Flex>(&ops.node);
            let (x, gamma, beta, mean, var, eps) = ops.state;
            let ((shape, xv), (_, dyv), (_, gv), (_, bv), (_, mv), (_, vv)) =
                (values(&x), values(&dy), values(&gamma), values(&beta), values(&mean), values(&var));
            let saved = Saved { x: &xv, shape: &shape, dy: &dyv, gamma: &gv, beta: &bv, mean: &mv, var: &vv, eps };
            let grad = self.0.grads(&saved);
            let ids = [node_x, node_gamma, node_beta].map(|node| node.map(|n| n.id));
            register_bn(grads, ids, shape, grad);
        }
    }
    let (xp, gp, bp) = (x.primitive().clone(), gamma.primitive().clone(), beta.primitive().clone());
    let (y, mean, var) = kernels.outputs(&xp, &gp, &bp, eps);
    let output =
        match BnBackward(kernels).prepare::<C>([x.node(), gamma.node(), beta.node()]).compute_bound().stateful() {
            OpsKind::Tracked(prep) => prep.finish((xp, gp, bp, mean.clone(), var.clone(), eps), y),
            OpsKind::UnTracked(prep) => prep.finish(y),
        };
    (output, <AdTensor<C>>::new(mean), <AdTensor<C>>::new(var))
}

/// Batch norm of NCHW images, followed by a ReLU where `relu` is set.
#[derive(Clone, Copy, Debug)]
struct Images {
    relu: bool,
}

impl BnKernels for Images {
    fn outputs(self, x: &FlexTensor, gamma: &FlexTensor, beta: &FlexTensor, eps: f64) -> FlexOut {
        let ((shape, xv), (_, gv), (_, bv)) = (values(x), values(gamma), values(beta));
        let (n, c, plane) = bn_shape("fast_batch_norm_train", &shape, &gv, &bv);
        let (mean, var) = statistics(&xv, n, c, plane);
        let y = normalise(&xv, c, plane, &mean, &var, &gv, &bv, eps, self.relu);
        outputs(y, shape, mean, var)
    }

    fn grads(self, s: &Saved) -> (Vec<f32>, Vec<f32>, Vec<f32>) {
        // The forward pass checked the input's shape; the kernel `backward` checks the rest.
        let (n, c, plane) = images(s.shape);
        backward(s.x, s.dy, n, c, plane, s.mean, s.var, s.gamma, s.eps, self.relu.then_some(s.beta))
    }
}

impl<C: CheckpointStrategy> FastBatchNorm for Autodiff<Flex, C> {
    fn fast_batch_norm_train(
        x: FloatTensor<Self>,
        gamma: FloatTensor<Self>,
        beta: FloatTensor<Self>,
        epsilon: f64,
        relu: bool,
    ) -> (FloatTensor<Self>, FloatTensor<Self>, FloatTensor<Self>) {
        bn_autodiff::<C, _>(Images { relu }, x, gamma, beta, epsilon)
    }
}

/// `bn.forward(x)`, through [`FastBatchNorm`] in training mode on burn-flex (f32, NCHW), with
/// the running statistics updated as burn-nn's `BatchNorm` does; burn's path everywhere else.
pub fn batch_norm(bn: &BatchNorm, x: Tensor<4>) -> Tensor<4> {
    fused(bn, x, false)
}

/// `relu(bn.forward(x))`, fused into one pass forward and backward where [`batch_norm`] applies.
pub fn batch_norm_relu(bn: &BatchNorm, x: Tensor<4>) -> Tensor<4> {
    fused(bn, x, true)
}

fn fused(bn: &BatchNorm, x: Tensor<4>, relu: bool) -> Tensor<4> {
    let device = x.device();
    if !fast_path(bn, &x) {
        let y = bn.forward(x);
        return if relu { burn::tensor::activation::relu(y) } else { y };
    }
    let out = <Dispatch as FastBatchNorm>::fast_batch_norm_train(
        x.into_dispatch(),
        bn.gamma.val().into_dispatch(),
        bn.beta.val().into_dispatch(),
        bn.epsilon,
        relu,
    );
    trained(bn, &device, out)
}

/// Whether the fused kernels take `x` through `bn`: burn-flex with relnet's kernels on (and
/// `RELNET_BN` not `burn`), autodiff, training mode, f32.
pub(crate) fn fast_path<const D: usize>(bn: &BatchNorm, x: &Tensor<D>) -> bool {
    static BN_ON: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    let bn_on = *BN_ON.get_or_init(|| std::env::var("RELNET_BN").map(|v| v != "burn").unwrap_or(true));
    bn_on && bn.training.is_enabled() && flex_autodiff_f32(x)
}

/// The output of one of relnet's training-mode batch-norm operations (`(output, mean, var)`, as
/// the backend extensions return them), with its batch statistics fed to `bn`'s running
/// statistics ([`update_running`]).
pub(crate) fn trained<const D: usize>(
    bn: &BatchNorm,
    device: &Device,
    (out, mean, var): (FloatTensor<Dispatch>, FloatTensor<Dispatch>, FloatTensor<Dispatch>),
) -> Tensor<D> {
    update_running(bn, Tensor::from_dispatch(mean), Tensor::from_dispatch(var), device);
    Tensor::from_dispatch(out)
}

/// The running statistics' update of burn-nn's `BatchNorm` from a batch's mean and variance.
fn update_running(bn: &BatchNorm, mean: Tensor<1>, var: Tensor<1>, device: &Device) {
    let running_mean = bn
        .running_mean
        .value_sync()
        .to_device(device)
        .mul_scalar(1.0 - bn.momentum)
        .add(mean.detach().mul_scalar(bn.momentum));
    let running_var = bn
        .running_var
        .value_sync()
        .to_device(device)
        .mul_scalar(1.0 - bn.momentum)
        .add(var.detach().mul_scalar(bn.momentum));
    bn.running_mean.update(running_mean.detach());
    bn.running_var.update(running_var.detach());
}

/// `relu(batch_norm(y) + shortcut)` in training mode: the end of every residual block as one
/// operation. Forward ([`bn_add_relu_forward`]): the statistics, then one pass, where the
/// separate batch norm and addition took two after them; backward ([`bn_add_relu_backward`]):
/// two passes, where they took three. Only in training mode on burn-flex with relnet's batch
/// norm ([`batch_norm`]'s conditions); elsewhere (inference, `RELNET_BN=burn`) burn's batch norm,
/// addition and ReLU, three operations.
#[backend_extension(Flex, Autodiff)]
pub trait FastBatchNormAddRelu: Backend {
    /// (output, mean, biased variance) of `relu(batch_norm(y) + shortcut)`, NCHW, equal shapes.
    fn fast_batch_norm_add_relu(
        y: FloatTensor<Self>,
        gamma: FloatTensor<Self>,
        beta: FloatTensor<Self>,
        shortcut: FloatTensor<Self>,
        epsilon: f64,
    ) -> (FloatTensor<Self>, FloatTensor<Self>, FloatTensor<Self>);
}

/// The image count, channels and plane of an NCHW shape (the plane of every axis after the
/// second), with `gamma` and `beta` checked against its channels.
pub(crate) fn bn_shape(what: &str, shape: &[usize], gamma: &[f32], beta: &[f32]) -> (usize, usize, usize) {
    assert!(shape.len() >= 2, "{what}: input of shape {shape:?} has no channel axis");
    let (n, c, plane) = images(shape);
    check_channels(what, c, &[("gamma", gamma), ("beta", beta)]);
    (n, c, plane)
}

/// `(n, channels, plane)` of a shape of at least two axes (the plane: every axis after the
/// second), as the forward passes checked it.
pub(crate) fn images(shape: &[usize]) -> (usize, usize, usize) {
    (shape[0], shape[1], shape[2..].iter().product::<usize>())
}

fn flex_bn_add_relu_forward(
    y: &FlexTensor,
    gamma: &FlexTensor,
    beta: &FlexTensor,
    shortcut: &FlexTensor,
    eps: f64,
) -> (FlexTensor, FlexTensor, FlexTensor) {
    const WHAT: &str = "fast_batch_norm_add_relu";
    let ((shape, yv), (_, gv), (_, bv), (s_shape, sv)) = (values(y), values(gamma), values(beta), values(shortcut));
    assert!(shape == s_shape, "{WHAT}: the shapes {shape:?} and {s_shape:?} differ");
    let (n, c, plane) = bn_shape(WHAT, &shape, &gv, &bv);
    let (out, mean, var) = bn_add_relu_forward(&yv, &sv, n, c, plane, &gv, &bv, eps);
    outputs(out, shape, mean, var)
}

impl FastBatchNormAddRelu for Flex {
    fn fast_batch_norm_add_relu(
        y: FlexTensor,
        gamma: FlexTensor,
        beta: FlexTensor,
        shortcut: FlexTensor,
        epsilon: f64,
    ) -> (FlexTensor, FlexTensor, FlexTensor) {
        flex_bn_add_relu_forward(&y, &gamma, &beta, &shortcut, epsilon)
    }
}

impl<C: CheckpointStrategy> FastBatchNormAddRelu for Autodiff<Flex, C> {
    fn fast_batch_norm_add_relu(
        y: FloatTensor<Self>,
        gamma: FloatTensor<Self>,
        beta: FloatTensor<Self>,
        shortcut: FloatTensor<Self>,
        epsilon: f64,
    ) -> (FloatTensor<Self>, FloatTensor<Self>, FloatTensor<Self>) {
        #[derive(Debug)]
        struct BatchNormAddReluBackward;
        impl Backward<Flex, 4> for BatchNormAddReluBackward {
            /// y, the output, gamma, mean, variance, epsilon.
            type State = (FlexTensor, FlexTensor, FlexTensor, FlexTensor, FlexTensor, f64);
            fn backward(self, ops: Ops<Self::State, 4>, grads: &mut Gradients, _: &mut Checkpointer) {
                let [node_y, node_gamma, node_beta, node_short] = ops.parents;
                let dout = grads.consume::<Flex>(&ops.node);
                let (y, out, gamma, mean, var, eps) = ops.state;
                let ((shape, yv), (_, ov), (_, dv), (_, gv), (_, mv), (_, vv)) =
                    (values(&y), values(&out), values(&dout), values(&gamma), values(&mean), values(&var));
                // The forward pass checked the shapes; `bn_add_relu_backward` checks the lengths.
                let (n, c, plane) = images(&shape);
                let (dy, dgamma, dbeta, ds) = bn_add_relu_backward(&yv, &ov, &dv, n, c, plane, &mv, &vv, &gv, eps);
                let ids = [node_y, node_gamma, node_beta].map(|node| node.map(|n| n.id));
                register_bn(grads, ids, shape.clone(), (dy, dgamma, dbeta));
                register(grads, [(node_short.map(|n| n.id), FlexTensor::from_data(TensorData::new(ds, shape)))]);
            }
        }
        let (yp, gp, bp, sp) =
            (y.primitive().clone(), gamma.primitive().clone(), beta.primitive().clone(), shortcut.primitive().clone());
        let (out, mean, var) = flex_bn_add_relu_forward(&yp, &gp, &bp, &sp, epsilon);
        let parents = [y.node(), gamma.node(), beta.node(), shortcut.node()];
        let output = match BatchNormAddReluBackward.prepare::<C>(parents).compute_bound().stateful() {
            OpsKind::Tracked(prep) => prep.finish((yp, out.clone(), gp, mean.clone(), var.clone(), epsilon), out),
            OpsKind::UnTracked(prep) => prep.finish(out),
        };
        (output, <FloatTensor<Self>>::new(mean), <FloatTensor<Self>>::new(var))
    }
}

/// `relu(bn.forward(y) + shortcut)`, through [`FastBatchNormAddRelu`] where [`batch_norm`]
/// takes its fused path (and `shortcut` is f32 of `y`'s shape), with the running statistics
/// updated as burn-nn's `BatchNorm` does; burn's operations everywhere else.
pub fn batch_norm_add_relu(bn: &BatchNorm, y: Tensor<4>, shortcut: Tensor<4>) -> Tensor<4> {
    if !(fast_path(bn, &y) && shortcut.dtype() == burn::tensor::DType::F32 && shortcut.dims() == y.dims()) {
        return burn::tensor::activation::relu(bn.forward(y) + shortcut);
    }
    let device = y.device();
    let out = <Dispatch as FastBatchNormAddRelu>::fast_batch_norm_add_relu(
        y.into_dispatch(),
        bn.gamma.val().into_dispatch(),
        bn.beta.val().into_dispatch(),
        shortcut.into_dispatch(),
        bn.epsilon,
    );
    trained(bn, &device, out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kernels_equal_the_definition() {
        let (n, c, plane, eps) = (5, 3, 7, 1e-5);
        let x: Vec<f32> =
            (0..n * c * plane).map(|i| ((i * 37 % 101) as f32 / 50.0 - 1.0) * (1 + i % 3) as f32).collect();
        let dy: Vec<f32> = (0..x.len()).map(|i| (i * 53 % 97) as f32 / 48.0 - 1.0).collect();
        let (gamma, beta) = (vec![0.5, 1.5, -2.0], vec![0.1, -0.2, 0.3]);
        let (mean, var) = statistics(&x, n, c, plane);
        let y = normalise(&x, c, plane, &mean, &var, &gamma, &beta, eps, false);
        let (dx, dgamma, dbeta) = backward(&x, &dy, n, c, plane, &mean, &var, &gamma, eps, None);
        let m = (n * plane) as f64;
        for ch in 0..c {
            let idx: Vec<usize> = (0..n).flat_map(|i| (0..plane).map(move |p| (i * c + ch) * plane + p)).collect();
            let mu = idx.iter().map(|&i| x[i] as f64).sum::<f64>() / m;
            let v = idx.iter().map(|&i| (x[i] as f64 - mu).powi(2)).sum::<f64>() / m;
            assert!((mean[ch] as f64 - mu).abs() < 1e-6 && (var[ch] as f64 - v).abs() < 1e-5);
            let is = 1.0 / (v + eps).sqrt();
            let xhat: Vec<f64> = idx.iter().map(|&i| (x[i] as f64 - mu) * is).collect();
            let sd: f64 = idx.iter().map(|&i| dy[i] as f64).sum();
            let sdx: f64 = idx.iter().zip(&xhat).map(|(&i, h)| dy[i] as f64 * h).sum();
            assert!((dbeta[ch] as f64 - sd).abs() < 1e-4 && (dgamma[ch] as f64 - sdx).abs() < 1e-4);
            for (k, &i) in idx.iter().enumerate() {
                assert!((y[i] as f64 - (xhat[k] * gamma[ch] as f64 + beta[ch] as f64)).abs() < 1e-5);
                let want = gamma[ch] as f64 * is * (dy[i] as f64 - sd / m - xhat[k] * sdx / m);
                assert!((dx[i] as f64 - want).abs() < 1e-4, "dx {} against {want}", dx[i]);
            }
        }
    }

    #[test]
    fn bn_add_relu_backward_has_the_bits_of_a_mask_then_batch_norms_backward() {
        // Planes of 7 (the sums' tail only) and 19 (an 8-lane body and a tail).
        for plane in [7, 19] {
            let (n, c, eps) = (5, 3, 1e-5);
            let y: Vec<f32> =
                (0..n * c * plane).map(|i| ((i * 37 % 101) as f32 / 50.0 - 1.0) * (1 + i % 3) as f32).collect();
            let s: Vec<f32> = (0..y.len()).map(|i| (i * 29 % 89) as f32 / 44.0 - 1.0).collect();
            let dout: Vec<f32> = (0..y.len()).map(|i| (i * 53 % 97) as f32 / 48.0 - 1.0).collect();
            let (gamma, beta) = (vec![0.5, 1.5, -2.0], vec![0.1, -0.2, 0.3]);
            let (out, mean, var) = bn_add_relu_forward(&y, &s, n, c, plane, &gamma, &beta, eps);
            let masked: Vec<f32> = out.iter().zip(&dout).map(|(&o, &g)| if o > 0.0 { g } else { 0.0 }).collect();
            assert!(masked.iter().zip(&dout).any(|(m, d)| m != d) && masked.iter().any(|&m| m != 0.0));
            let (dy, dgamma, dbeta) = backward(&y, &masked, n, c, plane, &mean, &var, &gamma, eps, None);
            let got = bn_add_relu_backward(&y, &out, &dout, n, c, plane, &mean, &var, &gamma, eps);
            let bits = |v: &[f32]| v.iter().map(|f| f.to_bits()).collect::<Vec<_>>();
            assert_eq!(bits(&got.0), bits(&dy), "dy, plane {plane}");
            assert_eq!(bits(&got.1), bits(&dgamma), "dgamma, plane {plane}");
            assert_eq!(bits(&got.2), bits(&dbeta), "dbeta, plane {plane}");
            assert_eq!(bits(&got.3), bits(&masked), "the shortcut's gradient, plane {plane}");
        }
    }

    #[test]
    fn statistics_keep_their_precision_far_from_zero() {
        // Channels at means of 0, 1e2 and -3e4 with a spread of about 1, over planes whose own
        // means differ, pseudo-random values: a sum of squares taken in one pass would lose the
        // variance to cancellation.
        let (n, c, plane) = (6, 3, 256);
        let offsets = [0.0f64, 1e2, -3e4];
        let mut state = 0x2545_f491_4f6c_dd1du64;
        let mut uniform = move || {
            state = state.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
            (state >> 11) as f64 / (1u64 << 53) as f64
        };
        let x: Vec<f32> = (0..n * c * plane)
            .map(|i| {
                let (img, ch) = (i / (c * plane), i / plane % c);
                (offsets[ch] + img as f64 * 0.25 + 2.0 * uniform() - 1.0) as f32
            })
            .collect();
        let (mean, var) = statistics(&x, n, c, plane);
        for ch in 0..c {
            let v: Vec<f64> =
                (0..n).flat_map(|i| (0..plane).map(move |p| (i * c + ch) * plane + p)).map(|i| x[i] as f64).collect();
            let mu = v.iter().sum::<f64>() / v.len() as f64;
            let var64 = v.iter().map(|a| (a - mu).powi(2)).sum::<f64>() / v.len() as f64;
            assert!((mean[ch] as f64 - mu).abs() <= 1e-6 * mu.abs().max(1.0), "mean {} against {mu}", mean[ch]);
            assert!(
                (var[ch] as f64 - var64).abs() <= 1e-5 * var64,
                "channel {ch}: variance {} against {var64}",
                var[ch]
            );
        }
    }

    #[test]
    fn relu_backward_masks_as_it_reads_with_the_bits_of_a_masked_copy() {
        // Planes of 7 (the sums' tail only) and 19 (their 8-lane body and a tail).
        for plane in [7, 19] {
            let (n, c, eps) = (5, 3, 1e-5);
            let x: Vec<f32> =
                (0..n * c * plane).map(|i| ((i * 37 % 101) as f32 / 50.0 - 1.0) * (1 + i % 3) as f32).collect();
            let dy: Vec<f32> = (0..x.len()).map(|i| (i * 53 % 97) as f32 / 48.0 - 1.0).collect();
            let (gamma, beta) = (vec![0.5, 1.5, -2.0], vec![0.1, -0.2, 0.3]);
            let (mean, var) = statistics(&x, n, c, plane);
            let masked = relu_mask(&x, &dy, c, plane, &mean, &var, &gamma, &beta, eps);
            assert!(
                masked.iter().zip(&dy).any(|(m, d)| m != d) && masked.iter().any(|&m| m != 0.0),
                "a mask that does something"
            );
            let want = backward(&x, &masked, n, c, plane, &mean, &var, &gamma, eps, None);
            let got = backward(&x, &dy, n, c, plane, &mean, &var, &gamma, eps, Some(&beta));
            let bits = |v: &[f32]| v.iter().map(|f| f.to_bits()).collect::<Vec<_>>();
            assert_eq!(bits(&got.0), bits(&want.0), "dx, plane {plane}");
            assert_eq!(bits(&got.1), bits(&want.1), "dgamma, plane {plane}");
            assert_eq!(bits(&got.2), bits(&want.2), "dbeta, plane {plane}");
        }
    }
}
