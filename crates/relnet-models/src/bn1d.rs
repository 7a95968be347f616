//! Batch normalisation of rows followed by LeakyReLU, in training mode on burn-flex (f32): the
//! hidden layer of the MLP heads (`[rows, 256]`; the relation head has `M*K*(K-1)` rows, 15,360
//! at M = 64, K = 16). burn 0.22 computes `BatchNorm` on a 2-D input out of generic tensor
//! operations, a dozen passes forward and more backward: burn's `BatchNorm` alone, forward +
//! backward on 15,360 x 256, took 69 ms against a Conv-4 K = 16 step of about 166 ms
//! (`examples/head_profile.rs` in relnet-core; docs/performance.md, "The heads' batch norm +
//! LeakyReLU as one operation"). Here the forward pass is three passes (mean, variance, output)
//! and the backward pass two (sums, input gradient), with the LeakyReLU's mask recomputed from
//! the input by the forward pass's float operations, as [`crate::fastbn`] does for the
//! backbones' ReLU.
//!
//! The statistics are summed over chunks of [`ROWS`] rows in f32 lanes (one lane per channel:
//! the rows are contiguous), the chunks added in order in f64: fixed chunks, so the bits do not
//! depend on the number of threads. It computes what burn's batch norm computes (the biased
//! variance in the running statistics, as burn-nn's `BatchNorm`) and burn's `leaky_relu` after
//! it, up to summation order, but for no rows at all: a mean and variance of 0 where burn's are
//! NaN (as in [`crate::fastbn`]). Inference, other backends and `RELNET_CONV=burn` or
//! `RELNET_BN=burn` keep burn's operations.

use std::mem::MaybeUninit;

use burn::backend::autodiff::Autodiff;
use burn::backend::autodiff::checkpoint::strategy::CheckpointStrategy;
use burn::backend::flex::FlexTensor;
use burn::backend::tensor::FloatTensor;
use burn::backend::{Backend, Dispatch, Flex, backend_extension};
use burn::nn::BatchNorm;
use burn::prelude::*;
use rayon::prelude::*;

use crate::fastbn::{
    BnKernels, FlexOut, GradCoefficients, Saved, affine, bn_autodiff, check_channels, fast_path, outputs, trained,
};
use crate::fastconv::{mul, par_filled, values};

/// Rows per chunk of the statistics and of the parallel passes.
pub const ROWS: usize = 64;

/// LeakyReLU of one value: `z * slope` where `z < 0`, `z` elsewhere (NaN included), as burn's
/// `leaky_relu` computes it.
#[inline(always)]
fn leaky(z: f32, slope: f32) -> f32 {
    z * if z < 0.0 { slope } else { 1.0 }
}

/// The LeakyReLU's gradient at one value: `g * slope` where the forward pass's `v * a + b` was
/// negative (the same float operations), `g` elsewhere.
#[inline(always)]
fn leaky_grad(g: f32, v: f32, a: f32, b: f32, slope: f32) -> f32 {
    g * if v * a + b < 0.0 { slope } else { 1.0 }
}

/// Panics, naming `what`, unless `x` has `rows * channels` values. Returns that count and the
/// count of a chunk of [`ROWS`] rows (of fewer where there are fewer: never more than `x`).
fn check_rows(what: &str, x: usize, rows: usize, channels: usize) -> (usize, usize) {
    let len = mul(rows, channels, what);
    assert!(x == len, "{what}: {x} values are not {rows} rows of {channels} channels");
    (len, ROWS.min(rows) * channels)
}

/// Per column of `[rows, width]` sums: `add_row(r, acc)` adds row `r`'s terms to the `width`
/// f32 accumulators of its chunk of [`ROWS`] rows (in parallel over chunks); the chunks' sums
/// are added in chunk order in f64.
fn column_sums(rows: usize, width: usize, add_row: impl Fn(usize, &mut [f32]) + Sync) -> Vec<f64> {
    let chunks: Vec<Vec<f32>> = (0..rows.div_ceil(ROWS))
        .into_par_iter()
        .map(|k| {
            let mut acc = vec![0f32; width];
            for r in k * ROWS..((k + 1) * ROWS).min(rows) {
                add_row(r, &mut acc);
            }
            acc
        })
        .collect();
    let mut total = vec![0f64; width];
    for chunk in &chunks {
        for (t, &s) in total.iter_mut().zip(chunk) {
            *t += s as f64;
        }
    }
    total
}

/// Mean and biased variance of every column of `x` (`[rows, channels]`), in two passes.
/// Panics unless `x` has `rows * channels` values.
pub fn statistics(x: &[f32], rows: usize, channels: usize) -> (Vec<f32>, Vec<f32>) {
    if check_rows("bn1d::statistics", x.len(), rows, channels).0 == 0 {
        // No rows (or no channels): nothing to sum.
        return (vec![0.0; channels], vec![0.0; channels]);
    }
    let count = rows.max(1) as f64;
    let row = |r: usize| &x[r * channels..(r + 1) * channels];
    let sums = column_sums(rows, channels, |r, acc| {
        for (a, &v) in acc.iter_mut().zip(row(r)) {
            *a += v;
        }
    });
    let mean: Vec<f32> = sums.iter().map(|s| (s / count) as f32).collect();
    let squares = column_sums(rows, channels, |r, acc| {
        for ((a, &v), &m) in acc.iter_mut().zip(row(r)).zip(&mean) {
            let d = v - m;
            *a += d * d;
        }
    });
    (mean, squares.iter().map(|s| (s / count) as f32).collect())
}

/// `leaky(batch_norm(x))` for `x` of `[rows, channels]` in training mode: `(y, mean, var)`, with
/// `y = leaky(x * scale + shift)` per channel, where `scale = gamma / sqrt(var + eps)` and
/// `shift = beta - mean * scale`, and `leaky(z) = z * slope` where `z < 0`, `z` elsewhere.
///
/// # Panics
///
/// Unless `x` has `rows * channels` values and `gamma` and `beta` one per channel.
pub fn forward(
    x: &[f32],
    rows: usize,
    channels: usize,
    gamma: &[f32],
    beta: &[f32],
    eps: f64,
    slope: f32,
) -> (Vec<f32>, Vec<f32>, Vec<f32>) {
    const WHAT: &str = "bn1d::forward";
    let (len, chunk) = check_rows(WHAT, x.len(), rows, channels);
    check_channels(WHAT, channels, &[("gamma", gamma), ("beta", beta)]);
    let (mean, var) = statistics(x, rows, channels);
    let (scale, shift) = affine(channels, &mean, &var, gamma, beta, eps);
    let (scale, shift) = (&scale[..channels], &shift[..channels]);
    // A `move` closure holds `slope` itself, not a reference to it: read through a reference,
    // the compiler did not vectorise the loops here and in `backward` (15 times slower there,
    // measured).
    let fill = move |k: usize, out: &mut [MaybeUninit<f32>]| {
        let xs = &x[k * chunk..][..out.len()];
        for (o, v) in out.chunks_exact_mut(channels).zip(xs.chunks_exact(channels)) {
            let (o, v) = (&mut o[..channels], &v[..channels]);
            for j in 0..channels {
                o[j].write(leaky(v[j] * scale[j] + shift[j], slope));
            }
        }
    };
    // SAFETY: `x` is `rows` rows of `channels` values (checked above) and `chunk` is
    // `min(ROWS, rows)` rows, so every chunk of the output is whole rows (the last may be
    // fewer), and `fill` writes each value of each of its rows (`chunks_exact` over a multiple
    // of `channels`); with no values there are no chunks.
    let y = unsafe { par_filled(len, chunk, fill) };
    (y, mean, var)
}

/// The gradients of [`forward`] for the output gradient `dy` (`[rows, channels]`): `(dx, dgamma,
/// dbeta)`. The LeakyReLU passes `dy * slope` where the forward pass's `x * scale + shift` was
/// negative (the same float operations decide) and `dy` elsewhere; two passes: the per-channel
/// sums of that gradient `g` and of `g * (x - mean)`, then `dx`.
///
/// # Panics
///
/// Unless `x` and `dy` have `rows * channels` values and `mean`, `var`, `gamma` and `beta` one
/// per channel.
#[allow(clippy::too_many_arguments)]
pub fn backward(
    x: &[f32],
    dy: &[f32],
    rows: usize,
    channels: usize,
    mean: &[f32],
    var: &[f32],
    gamma: &[f32],
    beta: &[f32],
    eps: f64,
    slope: f32,
) -> (Vec<f32>, Vec<f32>, Vec<f32>) {
    const WHAT: &str = "bn1d::backward";
    let (len, chunk) = check_rows(WHAT, x.len(), rows, channels);
    assert!(dy.len() == len, "{WHAT}: output gradient of {} values for an input of {len}", dy.len());
    check_channels(WHAT, channels, &[("mean", mean), ("var", var), ("gamma", gamma), ("beta", beta)]);
    if len == 0 {
        // No rows (or no channels): no input gradient, and sums of nothing.
        return (Vec::new(), vec![0.0; channels], vec![0.0; channels]);
    }
    let (scale, shift) = affine(channels, mean, var, gamma, beta, eps);
    let (scale, shift, mean) = (&scale[..channels], &shift[..channels], &mean[..channels]);
    // `move` closures here and in `fill` below, as in `forward`.
    let sums = column_sums(rows, 2 * channels, move |r, acc| {
        let (v, d) = (&x[r * channels..][..channels], &dy[r * channels..][..channels]);
        let (sg, sgx) = acc.split_at_mut(channels);
        let (sg, sgx) = (&mut sg[..channels], &mut sgx[..channels]);
        for j in 0..channels {
            let g = leaky_grad(d[j], v[j], scale[j], shift[j], slope);
            sg[j] += g;
            sgx[j] += g * (v[j] - mean[j]);
        }
    });
    let sums: Vec<(f64, f64)> = (0..channels).map(|c| (sums[c], sums[channels + c])).collect();
    let coef = GradCoefficients::new(rows, var, gamma, eps, &sums);
    let (k, md, mdx, is) = (&coef.k[..channels], &coef.md[..channels], &coef.mdx[..channels], &coef.is[..channels]);
    let fill = move |i: usize, out: &mut [MaybeUninit<f32>]| {
        let start = i * chunk;
        let (xs, ds) = (&x[start..][..out.len()], &dy[start..][..out.len()]);
        for ((o, v), d) in out.chunks_exact_mut(channels).zip(xs.chunks_exact(channels)).zip(ds.chunks_exact(channels))
        {
            let (o, v, d) = (&mut o[..channels], &v[..channels], &d[..channels]);
            for j in 0..channels {
                let g = leaky_grad(d[j], v[j], scale[j], shift[j], slope);
                o[j].write(k[j] * (g - md[j] - (v[j] - mean[j]) * is[j] * mdx[j]));
            }
        }
    };
    // SAFETY: `x` and `dy` are `rows` rows of `channels` values (checked above), and `chunk`
    // is `min(ROWS, rows)` rows: as in `forward`, `fill` writes every value of every row of its
    // chunk.
    let dx = unsafe { par_filled(len, chunk, fill) };
    (dx, coef.dgamma, coef.dbeta)
}

#[backend_extension(Flex, Autodiff)]
pub trait FastBatchNormRows: Backend {
    /// Training-mode batch norm of `[rows, channels]` followed by LeakyReLU(`slope`): (output,
    /// mean, biased variance).
    fn fast_batch_norm_rows_leaky(
        x: FloatTensor<Self>,
        gamma: FloatTensor<Self>,
        beta: FloatTensor<Self>,
        epsilon: f64,
        slope: f32,
    ) -> (FloatTensor<Self>, FloatTensor<Self>, FloatTensor<Self>);
}

impl FastBatchNormRows for Flex {
    fn fast_batch_norm_rows_leaky(
        x: FlexTensor,
        gamma: FlexTensor,
        beta: FlexTensor,
        epsilon: f64,
        slope: f32,
    ) -> (FlexTensor, FlexTensor, FlexTensor) {
        Rows { slope }.outputs(&x, &gamma, &beta, epsilon)
    }
}

/// The batch norm + LeakyReLU of rows, for [`bn_autodiff`].
#[derive(Clone, Copy, Debug)]
struct Rows {
    slope: f32,
}

impl BnKernels for Rows {
    fn outputs(self, x: &FlexTensor, gamma: &FlexTensor, beta: &FlexTensor, eps: f64) -> FlexOut {
        let ((shape, xv), (_, gv), (_, bv)) = (values(x), values(gamma), values(beta));
        assert!(shape.len() == 2, "fast_batch_norm_rows_leaky: input of shape {shape:?} is not [rows, channels]");
        let (y, mean, var) = forward(&xv, shape[0], shape[1], &gv, &bv, eps, self.slope);
        outputs(y, shape, mean, var)
    }

    fn grads(self, s: &Saved) -> (Vec<f32>, Vec<f32>, Vec<f32>) {
        // The forward pass checked the rank; the kernel `backward` checks the lengths.
        backward(s.x, s.dy, s.shape[0], s.shape[1], s.mean, s.var, s.gamma, s.beta, s.eps, self.slope)
    }
}

impl<C: CheckpointStrategy> FastBatchNormRows for Autodiff<Flex, C> {
    fn fast_batch_norm_rows_leaky(
        x: FloatTensor<Self>,
        gamma: FloatTensor<Self>,
        beta: FloatTensor<Self>,
        epsilon: f64,
        slope: f32,
    ) -> (FloatTensor<Self>, FloatTensor<Self>, FloatTensor<Self>) {
        bn_autodiff::<C, _>(Rows { slope }, x, gamma, beta, epsilon)
    }
}

/// `leaky_relu(bn.forward(x), slope)` for `x` of `[rows, channels]`: through
/// [`FastBatchNormRows`] where [`crate::fastbn::batch_norm`] takes its fused path (burn-flex,
/// autodiff, training mode, f32, relnet's kernels on), with the running statistics updated as
/// burn-nn's `BatchNorm` does; `None` elsewhere (the caller runs its own operations).
pub fn batch_norm_leaky_relu(bn: &BatchNorm, x: &Tensor<2>, slope: f64) -> Option<Tensor<2>> {
    if !fast_path(bn, x) {
        return None;
    }
    let device = x.device();
    let out = <Dispatch as FastBatchNormRows>::fast_batch_norm_rows_leaky(
        x.clone().into_dispatch(),
        bn.gamma.val().into_dispatch(),
        bn.beta.val().into_dispatch(),
        bn.epsilon,
        slope as f32,
    );
    Some(trained(bn, &device, out))
}

#[cfg(test)]
mod tests {
    use burn::module::Param;
    use burn::nn::BatchNormConfig;
    use burn::tensor::TensorData;

    use super::*;

    /// Pseudo-random values, column `c` spread over about `±(1 + c)` around `c / 2 - 1`.
    fn values_for(rows: usize, channels: usize, seed: u64) -> Vec<f32> {
        let mut state = seed;
        (0..rows * channels)
            .map(|i| {
                state = state.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
                let u = (state >> 11) as f64 / (1u64 << 53) as f64;
                ((2.0 * u - 1.0) * (1.0 + (i % channels) as f64) + (i % channels) as f64 * 0.5 - 1.0) as f32
            })
            .collect()
    }

    /// The forward and backward passes against the definition in f64, on row counts around and
    /// across a chunk (a tail, several chunks), channel counts that are not a multiple of a
    /// vector, and slopes 0.01 (the heads'), 0 (ReLU) and 1 (batch norm alone).
    #[test]
    fn forward_and_backward_equal_the_definition() {
        let eps = 1e-5;
        for (rows, channels, slope) in [(5, 3, 0.01f32), (64, 7, 0.01), (133, 19, 0.01), (200, 5, 0.0), (70, 9, 1.0)] {
            let x = values_for(rows, channels, 7 + rows as u64);
            let dy = values_for(rows, channels, 11 + channels as u64);
            let gamma: Vec<f32> =
                (0..channels).map(|c| 0.5 + 0.25 * c as f32 - if c == 2 { 2.0 } else { 0.0 }).collect();
            let beta: Vec<f32> = (0..channels).map(|c| 0.1 * c as f32 - 0.3).collect();
            let (y, mean, var) = forward(&x, rows, channels, &gamma, &beta, eps, slope);
            let (dx, dgamma, dbeta) = backward(&x, &dy, rows, channels, &mean, &var, &gamma, &beta, eps, slope);
            let (mut negatives, mut positives) = (0, 0);
            for c in 0..channels {
                let col: Vec<f64> = (0..rows).map(|r| x[r * channels + c] as f64).collect();
                let n = rows as f64;
                let mu = col.iter().sum::<f64>() / n;
                let v = col.iter().map(|a| (a - mu).powi(2)).sum::<f64>() / n;
                assert!((mean[c] as f64 - mu).abs() <= 1e-6 * (1.0 + mu.abs()), "mean {} against {mu}", mean[c]);
                assert!((var[c] as f64 - v).abs() <= 1e-5 * v, "variance {} against {v}", var[c]);
                let is = 1.0 / (v + eps).sqrt();
                let xhat: Vec<f64> = col.iter().map(|a| (a - mu) * is).collect();
                let z: Vec<f64> = xhat.iter().map(|h| h * gamma[c] as f64 + beta[c] as f64).collect();
                // The gradient through the LeakyReLU, then batch norm's. Its mask as the forward
                // pass decides it, in f32 from the (checked) statistics: a value within rounding of
                // 0 in `z` may fall on either side.
                let a = gamma[c] / ((var[c] as f64 + eps).sqrt() as f32);
                let b = beta[c] - mean[c] * a;
                let negative = |r: usize| x[r * channels + c] * a + b < 0.0;
                let g: Vec<f64> = (0..rows)
                    .map(|r| dy[r * channels + c] as f64 * if negative(r) { slope as f64 } else { 1.0 })
                    .collect();
                let (sg, sgx) = (g.iter().sum::<f64>(), g.iter().zip(&xhat).map(|(g, h)| g * h).sum::<f64>());
                let tol = 1e-4 * (1.0 + g.iter().map(|g| g.abs()).sum::<f64>());
                assert!((dbeta[c] as f64 - sg).abs() <= tol, "dbeta {} against {sg}", dbeta[c]);
                assert!((dgamma[c] as f64 - sgx).abs() <= tol, "dgamma {} against {sgx}", dgamma[c]);
                for r in 0..rows {
                    let want_y = if z[r] < 0.0 { z[r] * slope as f64 } else { z[r] };
                    let got = y[r * channels + c] as f64;
                    assert!((got - want_y).abs() <= 1e-5 * (1.0 + want_y.abs()), "y {got} against {want_y}");
                    let want = gamma[c] as f64 * is * (g[r] - sg / n - xhat[r] * sgx / n);
                    let got = dx[r * channels + c] as f64;
                    assert!((got - want).abs() <= 1e-4 * (1.0 + want.abs()), "dx {got} against {want}");
                    if z[r] < -1e-3 {
                        negatives += 1
                    } else if z[r] > 1e-3 {
                        positives += 1
                    }
                }
            }
            assert!(negatives > 0 && positives > 0, "both sides of the kink, rows {rows}");
        }
    }

    #[test]
    fn the_bits_do_not_depend_on_the_thread_count() {
        let (rows, channels) = (1000, 37);
        let x = values_for(rows, channels, 3);
        let dy = values_for(rows, channels, 5);
        let (gamma, beta) = (vec![1.25; channels], vec![-0.5; channels]);
        let run = |threads: usize| {
            let pool = rayon::ThreadPoolBuilder::new().num_threads(threads).build().unwrap();
            pool.install(|| {
                let (y, mean, var) = forward(&x, rows, channels, &gamma, &beta, 1e-5, 0.01);
                let (dx, dg, db) = backward(&x, &dy, rows, channels, &mean, &var, &gamma, &beta, 1e-5, 0.01);
                [y, mean, var, dx, dg, db].map(|v| v.iter().map(|f| f.to_bits()).collect::<Vec<_>>())
            })
        };
        assert_eq!(run(1), run(3));
    }

    #[test]
    #[should_panic(expected = "bn1d::forward: 20 values are not 3 rows of 7 channels")]
    fn a_wrong_length_panics_naming_the_function() {
        forward(&[0.0; 20], 3, 7, &[1.0; 7], &[0.0; 7], 1e-5, 0.01);
    }

    #[test]
    #[should_panic(expected = "bn1d::backward: output gradient of 20 values for an input of 21")]
    fn a_gradient_of_the_wrong_length_panics_naming_the_function() {
        let one = [1.0; 7];
        backward(&[0.0; 21], &[0.0; 20], 3, 7, &one, &one, &one, &one, 1e-5, 0.01);
    }

    /// No rows, or rows of no channels: empty outputs, statistics and weight gradients of 0.
    #[test]
    fn no_values_give_empty_outputs() {
        let (g, b) = ([1.0; 3], [0.0; 3]);
        let (y, mean, var) = forward(&[], 0, 3, &g, &b, 1e-5, 0.01);
        assert!(y.is_empty() && mean == [0.0; 3] && var == [0.0; 3]);
        let (dx, dg, db) = backward(&[], &[], 0, 3, &mean, &var, &g, &b, 1e-5, 0.01);
        assert!(dx.is_empty() && dg == [0.0; 3] && db == [0.0; 3]);
        let (y, mean, var) = forward(&[], usize::MAX, 0, &[], &[], 1e-5, 0.01);
        assert!(y.is_empty() && mean.is_empty() && var.is_empty());
        let (dx, dg, db) = backward(&[], &[], usize::MAX, 0, &[], &[], &[], &[], 1e-5, 0.01);
        assert!(dx.is_empty() && dg.is_empty() && db.is_empty());
    }

    /// The operation under autodiff on burn-flex against burn's `BatchNorm` and `leaky_relu`:
    /// output, the gradients of the input, gamma and beta, and the running statistics.
    #[test]
    fn matches_burns_batch_norm_and_leaky_relu() {
        let device = Device::flex().autodiff();
        let (rows, channels) = (150, 24);
        let x0 = values_for(rows, channels, 13);
        let w0 = values_for(rows, channels, 17);
        let run = |ours: bool| {
            let mut bn = BatchNormConfig::new(channels).init(&device);
            // Scales of both signs (a negative one flips the mask's side), non-zero shifts.
            let gamma: Vec<f32> = (0..channels).map(|c| if c % 5 == 2 { -1.5 } else { 0.5 + 0.1 * c as f32 }).collect();
            let beta: Vec<f32> = (0..channels).map(|c| 0.05 * c as f32 - 0.4).collect();
            bn.gamma = Param::from_tensor(Tensor::from_data(TensorData::new(gamma, [channels]), &device));
            bn.beta = Param::from_tensor(Tensor::from_data(TensorData::new(beta, [channels]), &device));
            let x = Tensor::<2>::from_data(TensorData::new(x0.clone(), [rows, channels]), &device).require_grad();
            let y = if ours {
                batch_norm_leaky_relu(&bn, &x, 0.01).expect("the fused path on flex under autodiff")
            } else {
                crate::fastconv::with_burn_conv(|| {
                    assert!(batch_norm_leaky_relu(&bn, &x, 0.01).is_none(), "burn's path when forced");
                    burn::tensor::activation::leaky_relu(bn.forward(x.clone()), 0.01)
                })
            };
            let w = Tensor::<2>::from_data(TensorData::new(w0.clone(), [rows, channels]), &device);
            let grads = (y.clone() * w).sum().backward();
            let v = |t: Tensor<2>| t.into_data().try_to_vec::<f32>().unwrap();
            let v1 = |t: Tensor<1>| t.into_data().try_to_vec::<f32>().unwrap();
            (
                v(y),
                v(x.grad(&grads).unwrap()),
                v1(bn.gamma.val().grad(&grads).unwrap()),
                v1(bn.beta.val().grad(&grads).unwrap()),
                v1(bn.running_mean.value_sync()),
                v1(bn.running_var.value_sync()),
            )
        };
        let (ours, burns) = (run(true), run(false));
        let close = |what: &str, a: &[f32], b: &[f32], tol: f32| {
            assert_eq!(a.len(), b.len(), "{what}: lengths");
            let worst = a.iter().zip(b).map(|(x, y)| (x - y).abs() / (1.0 + y.abs())).fold(0f32, f32::max);
            assert!(worst <= tol, "{what}: relative difference {worst} over {tol}");
        };
        close("output", &ours.0, &burns.0, 1e-5);
        close("input gradient", &ours.1, &burns.1, 1e-5);
        close("gamma gradient", &ours.2, &burns.2, 1e-4);
        close("beta gradient", &ours.3, &burns.3, 1e-4);
        close("running mean", &ours.4, &burns.4, 1e-6);
        close("running variance", &ours.5, &burns.5, 1e-6);
        assert!(ours.4.iter().any(|&m| m != 0.0), "the running mean moved");
    }
}
