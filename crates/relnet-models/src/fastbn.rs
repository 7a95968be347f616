//! Batch normalisation in training mode for burn-flex (NCHW f32): statistics in one pass per
//! channel, the output and the input gradient in one pass per image, registered through burn's
//! backend extension like [`crate::fastconv`]. burn 0.22 computes it for flex out of generic
//! tensor operations (axis swaps, copies and several reductions, forward and backward).
//! [`batch_norm_relu`] fuses the ReLU that follows it in every backbone: one pass out, one
//! mask in the backward pass, recomputed from the input with the forward's exact arithmetic.
//!
//! It computes what burn's `batch_norm_train` and `batch_norm_train_backward` compute (the
//! biased variance, which burn-nn feeds its running statistics) and updates the running
//! statistics as `BatchNorm::forward` does. Inference, other backends, `RELNET_CONV=burn` and
//! `RELNET_BN=burn` (this one alone) keep burn's path.

use std::mem::MaybeUninit;

use burn::backend::autodiff::Autodiff;
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

use crate::fastconv::{enabled, mul, on_flex, par_filled, values};

/// Panics, naming `what`, unless `x` values are whole images of `channels` planes of `plane`
/// values (`n` of them, where given): what the kernels below index by. Returns the length of
/// one image, `channels * plane`, which is non-zero unless `x` is 0.
fn check_images(what: &str, x: usize, n: Option<usize>, channels: usize, plane: usize) -> usize {
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
fn check_channels(what: &str, channels: usize, per_channel: &[(&str, &[f32])]) {
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

/// `(sum of f(a, b), sum of g(a, b))` over two equally long slices: eight f32 lanes each (which
/// the compiler vectorises), summed in f64 at the end. A fixed order: the same bits every time.
fn sums2(a: &[f32], b: &[f32], f: impl Fn(f32, f32) -> f32, g: impl Fn(f32, f32) -> f32) -> (f64, f64) {
    let (mut u, mut v) = ([0f32; 8], [0f32; 8]);
    let (ca, cb) = (a.chunks_exact(8), b.chunks_exact(8));
    let (ra, rb) = (ca.remainder(), cb.remainder());
    for (x, y) in ca.zip(cb) {
        for l in 0..8 {
            u[l] += f(x[l], y[l]);
            v[l] += g(x[l], y[l]);
        }
    }
    let (mut su, mut sv) = (u.iter().map(|&t| t as f64).sum::<f64>(), v.iter().map(|&t| t as f64).sum::<f64>());
    for (&x, &y) in ra.iter().zip(rb) {
        su += f(x, y) as f64;
        sv += g(x, y) as f64;
    }
    (su, sv)
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
            s += sums2(p, p, |v, _| v, |_, _| 0.0).0;
        }
        let mean = s / count;
        let m = mean as f32;
        for p in &planes {
            ss += sums2(p, p, |v, _| (v - m) * (v - m), |_, _| 0.0).0;
        }
        (mean as f32, (ss / count) as f32)
    });
    stats.into_iter().unzip()
}

/// Per channel, the affine map `x -> x * scale + shift` that batch norm applies.
fn affine(channels: usize, mean: &[f32], var: &[f32], gamma: &[f32], beta: &[f32], eps: f64) -> (Vec<f32>, Vec<f32>) {
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
    let len = check_images(WHAT, x.len(), Some(n), channels, plane);
    assert!(dy.len() == x.len(), "{WHAT}: output gradient of {} values for an input of {}", dy.len(), x.len());
    check_channels(WHAT, channels, &[("mean", mean), ("var", var), ("gamma", gamma)]);
    // The fused ReLU's per-channel map, as the forward pass computed it.
    let relu = relu_beta.map(|beta| {
        check_channels(WHAT, channels, &[("beta", beta)]);
        affine(channels, mean, var, gamma, beta, eps)
    });
    // `g` where the ReLU let the value through (or there is none), 0 where it did not.
    let pass = |c: usize| {
        let (a, b) = relu.as_ref().map_or((0.0, 0.0), |(s, t)| (s[c], t[c]));
        let on = relu.is_some();
        move |g: f32, v: f32| if !on || v * a + b > 0.0 { g } else { 0.0 }
    };
    let inv_std: Vec<f64> = var.iter().map(|&v| 1.0 / (v as f64 + eps).sqrt()).collect();
    // Per channel: sum of dy (dbeta) and of dy * x_hat (dgamma).
    let sums = per_channel(dy, n, channels, plane, |c, dys| {
        let (mut sd, mut sdx) = (0f64, 0f64);
        let (m, pass) = (mean[c], pass(c));
        for (i, d) in dys.enumerate() {
            let xs = &x[(i * channels + c) * plane..(i * channels + c + 1) * plane];
            let (a, b) = sums2(d, xs, pass, |g, v| pass(g, v) * (v - m));
            sd += a;
            sdx += b;
        }
        (sd, sdx * inv_std[c])
    });
    let count = (n * plane).max(1) as f64;
    let dbeta: Vec<f32> = sums.iter().map(|s| s.0 as f32).collect();
    let dgamma: Vec<f32> = sums.iter().map(|s| s.1 as f32).collect();
    // dx = gamma * inv_std * (dy - mean(dy) - x_hat * mean(dy * x_hat))
    let coef: Vec<(f32, f32, f32, f32)> = (0..channels)
        .map(|c| {
            let k = gamma[c] as f64 * inv_std[c];
            (k as f32, (sums[c].0 / count) as f32, (sums[c].1 / count) as f32, inv_std[c] as f32)
        })
        .collect();
    let fill = |i: usize, o: &mut [MaybeUninit<f32>]| {
        let (xi, di) = (&x[i * len..(i + 1) * len], &dy[i * len..(i + 1) * len]);
        for c in 0..channels {
            let (k, md, mdx, is) = coef[c];
            let (m, pass) = (mean[c], pass(c));
            let r = c * plane..(c + 1) * plane;
            for ((o, &v), &g) in o[r.clone()].iter_mut().zip(&xi[r.clone()]).zip(&di[r]) {
                o.write(k * (pass(g, v) - md - (v - m) * is * mdx));
            }
        }
    };
    // SAFETY: `x` and `dy` are `n` images of `len` values (checked above; `len` is non-zero
    // unless they are empty), so every chunk is one whole image, and `fill` writes each of its
    // `channels` runs of `plane` values.
    let dx = unsafe { par_filled(x.len(), len, fill) };
    (dx, dgamma, dbeta)
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

fn flex_forward(
    x: &FlexTensor,
    gamma: &FlexTensor,
    beta: &FlexTensor,
    eps: f64,
    relu: bool,
) -> (FlexTensor, FlexTensor, FlexTensor) {
    let ((shape, xv), (_, gv), (_, bv)) = (values(x), values(gamma), values(beta));
    assert!(shape.len() >= 2, "fast_batch_norm_train: input of shape {shape:?} has no channel axis");
    let (n, c) = (shape[0], shape[1]);
    check_channels("fast_batch_norm_train", c, &[("gamma", &gv), ("beta", &bv)]);
    let plane = shape[2..].iter().product::<usize>();
    let (mean, var) = statistics(&xv, n, c, plane);
    let y = normalise(&xv, c, plane, &mean, &var, &gv, &bv, eps, relu);
    (
        FlexTensor::from_data(TensorData::new(y, shape)),
        FlexTensor::from_data(TensorData::new(mean, [c])),
        FlexTensor::from_data(TensorData::new(var, [c])),
    )
}

impl FastBatchNorm for Flex {
    fn fast_batch_norm_train(
        x: FlexTensor,
        gamma: FlexTensor,
        beta: FlexTensor,
        epsilon: f64,
        relu: bool,
    ) -> (FlexTensor, FlexTensor, FlexTensor) {
        flex_forward(&x, &gamma, &beta, epsilon, relu)
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
        #[derive(Debug)]
        struct BatchNormBackward;
        impl Backward<Flex, 3> for BatchNormBackward {
            /// x, gamma, beta (read only with `relu`), mean, variance, epsilon, relu.
            type State = (FlexTensor, FlexTensor, FlexTensor, FlexTensor, FlexTensor, f64, bool);
            fn backward(self, ops: Ops<Self::State, 3>, grads: &mut Gradients, _: &mut Checkpointer) {
                let [node_x, node_gamma, node_beta] = ops.parents;
                let dy = grads.consume::<Flex>(&ops.node);
                let (x, gamma, beta, mean, var, eps, relu) = ops.state;
                let ((shape, xv), (_, dyv), (_, gv), (_, mv), (_, vv)) =
                    (values(&x), values(&dy), values(&gamma), values(&mean), values(&var));
                // The forward pass checked the input's shape; `backward` checks the rest.
                let (n, c) = (shape[0], shape[1]);
                let plane = shape[2..].iter().product::<usize>();
                let (_, bv) = values(&beta);
                let (dx, dgamma, dbeta) = backward(&xv, &dyv, n, c, plane, &mv, &vv, &gv, eps, relu.then_some(&bv[..]));
                if let Some(node) = node_x {
                    grads.register::<Flex>(node.id, FlexTensor::from_data(TensorData::new(dx, shape)));
                }
                if let Some(node) = node_gamma {
                    grads.register::<Flex>(node.id, FlexTensor::from_data(TensorData::new(dgamma, [c])));
                }
                if let Some(node) = node_beta {
                    grads.register::<Flex>(node.id, FlexTensor::from_data(TensorData::new(dbeta, [c])));
                }
            }
        }
        let (xp, gp, bp) = (x.primitive().clone(), gamma.primitive().clone(), beta.primitive().clone());
        let (y, mean, var) = flex_forward(&xp, &gp, &bp, epsilon, relu);
        let output =
            match BatchNormBackward.prepare::<C>([x.node(), gamma.node(), beta.node()]).compute_bound().stateful() {
                OpsKind::Tracked(prep) => prep.finish((xp, gp, bp, mean.clone(), var.clone(), epsilon, relu), y),
                OpsKind::UnTracked(prep) => prep.finish(y),
            };
        (output, <FloatTensor<Self>>::new(mean), <FloatTensor<Self>>::new(var))
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
    static BN_ON: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    let bn_on = *BN_ON.get_or_init(|| std::env::var("RELNET_BN").map(|v| v != "burn").unwrap_or(true));
    if !(on_flex(&device)
        && enabled()
        && bn_on
        && device.is_autodiff()
        && bn.training.is_enabled()
        && x.dtype() == burn::tensor::DType::F32)
    {
        let y = bn.forward(x);
        return if relu { burn::tensor::activation::relu(y) } else { y };
    }
    let (y, mean, var) = <Dispatch as FastBatchNorm>::fast_batch_norm_train(
        x.into_dispatch(),
        bn.gamma.val().into_dispatch(),
        bn.beta.val().into_dispatch(),
        bn.epsilon,
        relu,
    );
    let (y, mean, var): (Tensor<4>, Tensor<1>, Tensor<1>) =
        (Tensor::from_dispatch(y), Tensor::from_dispatch(mean), Tensor::from_dispatch(var));
    let running_mean = bn
        .running_mean
        .value_sync()
        .to_device(&device)
        .mul_scalar(1.0 - bn.momentum)
        .add(mean.detach().mul_scalar(bn.momentum));
    let running_var = bn
        .running_var
        .value_sync()
        .to_device(&device)
        .mul_scalar(1.0 - bn.momentum)
        .add(var.detach().mul_scalar(bn.momentum));
    bn.running_mean.update(running_mean.detach());
    bn.running_var.update(running_var.detach());
    y
}

/// `relu(a + b)` and its backward pass, each one pass over memory: the end of every residual
/// block. burn computes the sum and the ReLU as two tensors forward and two passes backward.
#[backend_extension(Flex, Autodiff)]
pub trait FastAddRelu: Backend {
    /// `max(a + b, 0)` for two tensors of the same shape.
    fn fast_add_relu(a: FloatTensor<Self>, b: FloatTensor<Self>) -> FloatTensor<Self>;
}

/// Elements per task of the element-wise passes.
const CHUNK: usize = 1 << 14;

fn flex_add_relu(a: &FlexTensor, b: &FlexTensor) -> FlexTensor {
    let ((shape, av), (shape_b, bv)) = (values(a), values(b));
    assert!(shape == shape_b, "fast_add_relu: the shapes {shape:?} and {shape_b:?} differ");
    let fill = |i: usize, y: &mut [MaybeUninit<f32>]| {
        for ((o, &u), &v) in y.iter_mut().zip(&av[i * CHUNK..]).zip(&bv[i * CHUNK..]) {
            o.write((u + v).max(0.0));
        }
    };
    // SAFETY: chunk `i` is `y = out[i * CHUNK..][..y.len()]`, and `av` and `bv` are as long as
    // the output (equal shapes), so the zip runs over all of `y` and writes it.
    let y = unsafe { par_filled(av.len(), CHUNK, fill) };
    FlexTensor::from_data(TensorData::new(y, shape))
}

impl FastAddRelu for Flex {
    fn fast_add_relu(a: FlexTensor, b: FlexTensor) -> FlexTensor {
        flex_add_relu(&a, &b)
    }
}

impl<C: CheckpointStrategy> FastAddRelu for Autodiff<Flex, C> {
    fn fast_add_relu(a: FloatTensor<Self>, b: FloatTensor<Self>) -> FloatTensor<Self> {
        #[derive(Debug)]
        struct AddReluBackward;
        impl Backward<Flex, 2> for AddReluBackward {
            /// The output: the gradient passes where it is positive.
            type State = FlexTensor;
            fn backward(self, ops: Ops<Self::State, 2>, grads: &mut Gradients, _: &mut Checkpointer) {
                let [node_a, node_b] = ops.parents;
                let dy = grads.consume::<Flex>(&ops.node);
                let ((shape, yv), (dy_shape, dv)) = (values(&ops.state), values(&dy));
                assert!(
                    shape == dy_shape,
                    "fast_add_relu backward: output {shape:?} and its gradient {dy_shape:?} differ in shape"
                );
                let fill = |i: usize, o: &mut [MaybeUninit<f32>]| {
                    for ((o, &y), &d) in o.iter_mut().zip(&yv[i * CHUNK..]).zip(&dv[i * CHUNK..]) {
                        o.write(if y > 0.0 { d } else { 0.0 });
                    }
                };
                // SAFETY: chunk `i` is `dx[i * CHUNK..][..o.len()]`, and `yv` and `dv` are as
                // long as `dx` (equal shapes), so the zip runs over all of `o` and writes it.
                let dx = unsafe { par_filled(yv.len(), CHUNK, fill) };
                let dx = FlexTensor::from_data(TensorData::new(dx, shape));
                match (node_a, node_b) {
                    (Some(a), Some(b)) => {
                        grads.register::<Flex>(a.id, dx.clone());
                        grads.register::<Flex>(b.id, dx);
                    }
                    (Some(n), None) | (None, Some(n)) => grads.register::<Flex>(n.id, dx),
                    (None, None) => {}
                }
            }
        }
        let y = flex_add_relu(a.primitive(), b.primitive());
        match AddReluBackward.prepare::<C>([a.node(), b.node()]).compute_bound().stateful() {
            OpsKind::Tracked(prep) => prep.finish(y.clone(), y),
            OpsKind::UnTracked(prep) => prep.finish(y),
        }
    }
}

/// `relu(a + b)`, fused on burn-flex (f32, same shapes); burn's two operations elsewhere.
pub fn add_relu(a: Tensor<4>, b: Tensor<4>) -> Tensor<4> {
    if !(on_flex(&a.device())
        && enabled()
        && a.dtype() == burn::tensor::DType::F32
        && b.dtype() == burn::tensor::DType::F32
        && a.dims() == b.dims())
    {
        return burn::tensor::activation::relu(a + b);
    }
    Tensor::from_dispatch(<Dispatch as FastAddRelu>::fast_add_relu(a.into_dispatch(), b.into_dispatch()))
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
