//! Non-overlapping average pooling (kernel = stride, no padding, NCHW f32) for burn-flex, with a
//! direct backward pass, registered through burn's backend extension like [`crate::fastconv`].
//! burn-flex 0.22 runs the 2D pool as a 3D one, and its backward pass, generic over kernel,
//! stride and padding, would be a large part of Conv-4's training step (docs/performance.md).
//!
//! Other backends, other pool shapes, `ceil_mode` and `RELNET_CONV=burn` keep burn's pool.

use std::mem::MaybeUninit;

use burn::backend::autodiff::Autodiff;
use burn::backend::autodiff::checkpoint::base::Checkpointer;
use burn::backend::autodiff::checkpoint::strategy::CheckpointStrategy;
use burn::backend::autodiff::grads::Gradients;
use burn::backend::autodiff::ops::{Backward, Ops, OpsKind};
use burn::backend::flex::FlexTensor;
use burn::backend::tensor::FloatTensor;
use burn::backend::{Backend, Dispatch, Flex, backend_extension};
use burn::nn::PaddingConfig2d;
use burn::nn::pool::AvgPool2d;
use burn::prelude::*;
use burn::tensor::TensorData;
use rayon::prelude::*;

use crate::fastconv::{enabled, mul, on_flex, par_filled, values};

/// Panics, naming `what`, unless the kernel is at least 1x1 and `len` values are `planes`
/// planes of `h x w` (the input) or, if `pooled`, of `h / kh x w / kw` (the output).
fn check(what: &str, len: usize, planes: usize, (h, w): (usize, usize), (kh, kw): (usize, usize), pooled: bool) {
    assert!(kh > 0 && kw > 0, "{what}: kernel {kh}x{kw} must be at least 1x1");
    let (ph, pw) = if pooled { (h / kh, w / kw) } else { (h, w) };
    let want = mul(mul(ph, pw, what), planes, what);
    assert!(len == want, "{what}: {len} values are not {planes} planes of {ph}x{pw}");
}

/// The mean of every `kh x kw` block of every `h x w` plane of `x` (`planes` of them): planes of
/// `(h / kh) x (w / kw)`; rows and columns past the last whole block are dropped.
///
/// # Panics
///
/// Unless the kernel is at least 1x1 and `x` has `planes * h * w` values.
pub fn forward(x: &[f32], planes: usize, h: usize, w: usize, kh: usize, kw: usize) -> Vec<f32> {
    check("fastpool::forward", x.len(), planes, (h, w), (kh, kw), false);
    let (oh, ow) = (h / kh, w / kw);
    let scale = 1.0 / (kh * kw) as f32;
    if kh == 2 && kw == 2 && oh * ow > 0 {
        // Conv-4's pools: each output the sum of its two row pairs, in the order the general
        // loop below adds them, written once (the general loop's per-block sums do not
        // vectorise; this form does).
        let fill = |i: usize, yp: &mut [MaybeUninit<f32>]| {
            let xp = &x[i * h * w..(i + 1) * h * w];
            for (oy, out) in yp.chunks_exact_mut(ow).enumerate() {
                let (a, b) = (&xp[2 * oy * w..2 * oy * w + 2 * ow], &xp[(2 * oy + 1) * w..(2 * oy + 1) * w + 2 * ow]);
                for (ox, o) in out.iter_mut().enumerate() {
                    o.write(((a[2 * ox] + a[2 * ox + 1]) + (b[2 * ox] + b[2 * ox + 1])) * scale);
                }
            }
        };
        // SAFETY: `oh * ow > 0` divides the output's length, so every chunk is one whole output
        // plane, which `fill` writes row by row (`oh` rows of `ow` values).
        return unsafe { par_filled(planes * oh * ow, oh * ow, fill) };
    }
    let mut y = vec![0f32; planes * oh * ow];
    if oh * ow == 0 {
        return y;
    }
    y.par_chunks_mut(oh * ow).zip(x.par_chunks(h * w)).for_each(|(yp, xp)| {
        for oy in 0..oh {
            let out = &mut yp[oy * ow..(oy + 1) * ow];
            for ky in 0..kh {
                let row = &xp[(oy * kh + ky) * w..(oy * kh + ky + 1) * w];
                for (o, block) in out.iter_mut().zip(row.chunks_exact(kw)) {
                    *o += block.iter().sum::<f32>();
                }
            }
            for o in out.iter_mut() {
                *o *= scale;
            }
        }
    });
    y
}

/// The input gradient of [`forward`] for `dy` (`planes` planes of `(h / kh) x (w / kw)`): each
/// output gradient, divided by `kh * kw`, spread over its block; zero on the dropped rows and
/// columns.
///
/// # Panics
///
/// Unless the kernel is at least 1x1 and `dy` has `planes * (h / kh) * (w / kw)` values.
pub fn backward(dy: &[f32], planes: usize, h: usize, w: usize, kh: usize, kw: usize) -> Vec<f32> {
    check("fastpool::backward", dy.len(), planes, (h, w), (kh, kw), true);
    let (oh, ow) = (h / kh, w / kw);
    let scale = 1.0 / (kh * kw) as f32;
    if oh * ow > 0 && h.is_multiple_of(kh) && w.is_multiple_of(kw) {
        // The blocks tile the plane: every value is written, so nothing is zeroed first.
        let fill = |i: usize, xp: &mut [MaybeUninit<f32>]| {
            let dp = &dy[i * oh * ow..(i + 1) * oh * ow];
            for oy in 0..oh {
                let d = &dp[oy * ow..(oy + 1) * ow];
                for ky in 0..kh {
                    let row = &mut xp[(oy * kh + ky) * w..(oy * kh + ky + 1) * w];
                    if kw == 2 {
                        // Pairs zipped with the gradients: no index arithmetic or bounds checks
                        // in the loop, which the compiler then vectorises.
                        let pairs = row.as_chunks_mut::<2>().0;
                        debug_assert!(
                            pairs.len() == d.len(),
                            "fastpool::backward: {} pairs for {} values",
                            pairs.len(),
                            d.len()
                        );
                        for (pair, &g) in pairs.iter_mut().zip(d) {
                            *pair = [MaybeUninit::new(g * scale); 2];
                        }
                    } else {
                        for (block, &g) in row.chunks_exact_mut(kw).zip(d) {
                            block.fill(MaybeUninit::new(g * scale));
                        }
                    }
                }
            }
        };
        // SAFETY: `h * w > 0` divides the length, so every chunk is one whole plane; with
        // `h = oh * kh` and `w = ow * kw`, `fill` writes its `h` rows, each as `ow` blocks of `kw`.
        return unsafe { par_filled(planes * h * w, h * w, fill) };
    }
    let mut dx = vec![0f32; planes * h * w];
    if oh * ow == 0 {
        return dx;
    }
    dx.par_chunks_mut(h * w).zip(dy.par_chunks(oh * ow)).for_each(|(xp, dp)| {
        for oy in 0..oh {
            let d = &dp[oy * ow..(oy + 1) * ow];
            for ky in 0..kh {
                let row = &mut xp[(oy * kh + ky) * w..(oy * kh + ky + 1) * w];
                for (block, &g) in row.chunks_exact_mut(kw).zip(d) {
                    block.fill(g * scale);
                }
            }
        }
    });
    dx
}

#[backend_extension(Flex, Autodiff)]
pub trait FastAvgPool: Backend {
    /// Average pooling of an NCHW input with a `kh x kw` kernel and the same stride, no padding.
    fn fast_avg_pool2d(x: FloatTensor<Self>, kh: usize, kw: usize) -> FloatTensor<Self>;
}

fn flex_forward(x: &FlexTensor, kh: usize, kw: usize) -> FlexTensor {
    let (s, xv) = values(x);
    assert!(s.len() == 4, "fast_avg_pool2d: input of shape {s:?} is not NCHW");
    let y = forward(&xv, s[0] * s[1], s[2], s[3], kh, kw);
    FlexTensor::from_data(TensorData::new(y, [s[0], s[1], s[2] / kh, s[3] / kw]))
}

impl FastAvgPool for Flex {
    fn fast_avg_pool2d(x: FlexTensor, kh: usize, kw: usize) -> FlexTensor {
        flex_forward(&x, kh, kw)
    }
}

impl<C: CheckpointStrategy> FastAvgPool for Autodiff<Flex, C> {
    fn fast_avg_pool2d(x: FloatTensor<Self>, kh: usize, kw: usize) -> FloatTensor<Self> {
        #[derive(Debug)]
        struct PoolBackward;
        impl Backward<Flex, 1> for PoolBackward {
            /// The input's shape and the kernel.
            type State = (Vec<usize>, usize, usize);
            fn backward(self, ops: Ops<Self::State, 1>, grads: &mut Gradients, _: &mut Checkpointer) {
                let [node] = ops.parents;
                let dy = grads.consume::<Flex>(&ops.node);
                let (s, kh, kw) = ops.state;
                if let Some(node) = node {
                    let dx = backward(&values(&dy).1, s[0] * s[1], s[2], s[3], kh, kw);
                    grads.register::<Flex>(node.id, FlexTensor::from_data(TensorData::new(dx, s)));
                }
            }
        }
        let out = flex_forward(x.primitive(), kh, kw);
        match PoolBackward.prepare::<C>([x.node()]).compute_bound().stateful() {
            OpsKind::Tracked(prep) => prep.finish((x.primitive().layout().shape().to_vec(), kh, kw), out),
            OpsKind::UnTracked(prep) => prep.finish(out),
        }
    }
}

/// `pool.forward(x)`, through [`FastAvgPool`] on burn-flex (f32, stride = kernel, no padding, no
/// `ceil_mode`); burn's pool everywhere else.
pub fn avg_pool2d(pool: &AvgPool2d, x: Tensor<4>) -> Tensor<4> {
    let [kh, kw] = pool.kernel_size;
    if !(on_flex(&x.device())
        && enabled()
        && x.dtype() == burn::tensor::DType::F32
        && pool.stride == pool.kernel_size
        && matches!(pool.padding, PaddingConfig2d::Valid)
        && !pool.ceil_mode)
    {
        return pool.forward(x);
    }
    Tensor::from_dispatch(<Dispatch as FastAvgPool>::fast_avg_pool2d(x.into_dispatch(), kh, kw))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kernels_equal_the_definition() {
        // 2 planes of 5 x 7, kernel 2 x 3: the last row and column are dropped.
        let (planes, h, w, kh, kw) = (2, 5, 7, 2, 3);
        let x: Vec<f32> =
            (0..planes * h * w).map(|i| ((i * 37 % 101) as f32 / 50.0 - 1.0) * (1 + i % 3) as f32).collect();
        let y = forward(&x, planes, h, w, kh, kw);
        let (oh, ow) = (h / kh, w / kw);
        assert_eq!(y.len(), planes * oh * ow);
        let dy: Vec<f32> = (0..y.len()).map(|i| i as f32 - 3.0).collect();
        let dx = backward(&dy, planes, h, w, kh, kw);
        for p in 0..planes {
            for oy in 0..oh {
                for ox in 0..ow {
                    let want: f32 = (0..kh)
                        .flat_map(|a| (0..kw).map(move |b| (a, b)))
                        .map(|(a, b)| x[(p * h + oy * kh + a) * w + ox * kw + b])
                        .sum::<f32>()
                        / 6.0;
                    assert!((y[(p * oh + oy) * ow + ox] - want).abs() < 1e-6);
                }
            }
            for yy in 0..h {
                for xx in 0..w {
                    let inside = yy / kh < oh && xx / kw < ow;
                    let want = if inside { dy[(p * oh + yy / kh) * ow + xx / kw] / 6.0 } else { 0.0 };
                    assert_eq!(dx[(p * h + yy) * w + xx], want);
                }
            }
        }
    }
}
