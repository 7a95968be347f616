//! The public kernels of `fastconv`, `fastbn` and `fastpool`, and their backend extensions,
//! given shapes that do not match their slices: each must panic with a message naming the
//! mismatch, never read or write out of range nor return values it did not write (their outputs
//! are built without zeroing). Shapes that are degenerate but consistent (nothing to compute)
//! must give fully written outputs, and ordinary ones the values of the definition.

use burn::backend::Dispatch;
use burn::prelude::*;
use burn::tensor::TensorData;
use relnet_models::fastbn::{self, FastBatchNorm, FastBatchNormAddRelu};
use relnet_models::fastconv::{self, FastConv, Geometry};
use relnet_models::fastpool::{self, FastAvgPool};

fn ramp(len: usize) -> Vec<f32> {
    (0..len).map(|i| (i * 37 % 101) as f32 / 50.0 - 1.0).collect()
}

fn tensor(values: Vec<f32>, shape: [usize; 4]) -> Tensor<4> {
    Tensor::<4>::from_data(TensorData::new(values, shape), &Device::flex())
}

fn vector(values: Vec<f32>) -> Tensor<1> {
    let n = values.len();
    Tensor::<1>::from_data(TensorData::new(values, [n]), &Device::flex())
}

/// A 3x3, stride-1, padding-1 geometry that the direct kernel takes where the CPU allows.
fn direct() -> Geometry {
    Geometry { n: 2, ci: 3, h: 8, w: 8, co: 4, kh: 3, kw: 3, sh: 1, sw: 1, ph: 1, pw: 1 }
}

/// A strided geometry the direct kernels decline (output width 4): im2col + GEMM.
fn strided() -> Geometry {
    Geometry { n: 2, ci: 3, h: 7, w: 7, co: 4, kh: 3, kw: 3, sh: 2, sw: 2, ph: 1, pw: 1 }
}

fn lens(g: &Geometry) -> (usize, usize, usize) {
    (g.n * g.ci * g.h * g.w, g.co * g.ci * g.kh * g.kw, g.n * g.co * g.oh() * g.ow())
}

// Batch norm.

#[test]
#[should_panic(expected = "fastbn::normalise: 6 values are not whole images of 0 channels x 3 values")]
fn normalise_rejects_values_with_zero_channels() {
    fastbn::normalise(&ramp(6), 0, 3, &[], &[], &[], &[], 1e-5, false);
}

#[test]
#[should_panic(expected = "fastbn::normalise: 6 values are not whole images of 2 channels x 0 values")]
fn normalise_rejects_values_with_an_empty_plane() {
    let c = [0.5f32; 2];
    fastbn::normalise(&ramp(6), 2, 0, &c, &c, &c, &c, 1e-5, true);
}

#[test]
#[should_panic(expected = "fastbn::normalise: 9 values are not whole images of 2 channels x 3 values")]
fn normalise_rejects_a_partial_image() {
    let c = [0.5f32; 2];
    fastbn::normalise(&ramp(9), 2, 3, &c, &c, &c, &c, 1e-5, false);
}

#[test]
#[should_panic(expected = "fastbn::normalise: gamma has 1 values for 2 channels")]
fn normalise_rejects_per_channel_values_of_the_wrong_length() {
    let c = [0.5f32; 2];
    fastbn::normalise(&ramp(12), 2, 3, &c, &c, &c[..1], &c, 1e-5, false);
}

#[test]
#[should_panic(expected = "fastbn::statistics: 11 values are not 2 images of 2 channels x 3 values")]
fn statistics_rejects_values_that_are_not_n_images() {
    fastbn::statistics(&ramp(11), 2, 2, 3);
}

#[test]
#[should_panic(expected = "fastbn::backward: output gradient of 11 values for an input of 12")]
fn batch_norm_backward_rejects_a_short_output_gradient() {
    let c = [0.5f32; 2];
    fastbn::backward(&ramp(12), &ramp(11), 2, 2, 3, &c, &c, &c, 1e-5, None);
}

#[test]
#[should_panic(expected = "fastbn::backward: 12 values are not 3 images of 2 channels x 3 values")]
fn batch_norm_backward_rejects_the_wrong_batch() {
    let c = [0.5f32; 2];
    fastbn::backward(&ramp(12), &ramp(12), 3, 2, 3, &c, &c, &c, 1e-5, None);
}

#[test]
#[should_panic(expected = "fastbn::backward: var has 3 values for 2 channels")]
fn batch_norm_backward_rejects_per_channel_values_of_the_wrong_length() {
    let c = [0.5f32; 3];
    fastbn::backward(&ramp(12), &ramp(12), 2, 2, 3, &c[..2], &c, &c[..2], 1e-5, None);
}

#[test]
#[should_panic(expected = "fast_batch_norm_train: gamma has 2 values for 3 channels")]
fn the_batch_norm_extension_rejects_a_gamma_of_the_wrong_length() {
    let x = tensor(ramp(24), [2, 3, 2, 2]);
    let _ = <Dispatch as FastBatchNorm>::fast_batch_norm_train(
        x.into_dispatch(),
        vector(vec![1.0; 2]).into_dispatch(),
        vector(vec![0.0; 3]).into_dispatch(),
        1e-5,
        false,
    );
}

/// The extension's forward pass for `y` and `shortcut`, gamma and beta of `c` channels.
fn bn_add_relu(y: Tensor<4>, shortcut: Tensor<4>, c: usize) -> Tensor<4> {
    let (out, _, _) = <Dispatch as FastBatchNormAddRelu>::fast_batch_norm_add_relu(
        y.into_dispatch(),
        vector(vec![1.0; c]).into_dispatch(),
        vector(vec![0.0; c]).into_dispatch(),
        shortcut.into_dispatch(),
        1e-5,
    );
    Tensor::from_dispatch(out)
}

#[test]
#[should_panic(expected = "fast_batch_norm_add_relu: the shapes [2, 3, 4, 5] and [2, 3, 4, 4] differ")]
fn the_bn_add_relu_extension_rejects_a_shortcut_of_another_length() {
    let _ = bn_add_relu(tensor(ramp(120), [2, 3, 4, 5]), tensor(ramp(96), [2, 3, 4, 4]), 3);
}

#[test]
#[should_panic(expected = "fast_batch_norm_add_relu: the shapes [2, 3, 4, 5] and [2, 3, 5, 4] differ")]
fn the_bn_add_relu_extension_rejects_a_shortcut_of_another_shape() {
    let _ = bn_add_relu(tensor(ramp(120), [2, 3, 4, 5]), tensor(ramp(120), [2, 3, 5, 4]), 3);
}

#[test]
#[should_panic(expected = "fast_batch_norm_add_relu: gamma has 3 values for 2 channels")]
fn the_bn_add_relu_extension_rejects_parameters_of_another_channel_count() {
    let _ = bn_add_relu(tensor(ramp(120), [3, 2, 4, 5]), tensor(ramp(120), [3, 2, 4, 5]), 3);
}

#[test]
#[should_panic(
    expected = "fastbn::bn_add_relu_backward: an output of 12 values and its gradient of 11 for an input of 12"
)]
fn the_bn_add_relu_backward_rejects_a_gradient_of_another_length() {
    let c = [1.0f32; 2];
    fastbn::bn_add_relu_backward(&ramp(12), &ramp(12), &ramp(11), 2, 2, 3, &c, &c, &c, 1e-5);
}

// Convolution.

#[test]
#[should_panic(expected = "fastconv::forward: input of 383 values")]
fn conv_forward_rejects_a_short_input_on_the_direct_path() {
    let g = direct();
    let (x, w, _) = lens(&g);
    fastconv::forward(&g, &ramp(x - 1), &ramp(w));
}

#[test]
#[should_panic(expected = "fastconv::forward: input of 293 values")]
fn conv_forward_rejects_a_short_input_on_the_gemm_path() {
    let g = strided();
    let (x, w, _) = lens(&g);
    fastconv::forward(&g, &ramp(x - 1), &ramp(w));
}

#[test]
#[should_panic(expected = "fastconv::forward: weight of 109 values")]
fn conv_forward_rejects_a_long_weight() {
    let g = direct();
    let (x, w, _) = lens(&g);
    fastconv::forward(&g, &ramp(x), &ramp(w + 1));
}

#[test]
#[should_panic(expected = "fastconv::backward: output gradient of 127 values")]
fn conv_backward_rejects_a_short_output_gradient() {
    let g = strided();
    let (x, w, y) = lens(&g);
    fastconv::backward(&g, &ramp(x), &ramp(w), &ramp(y - 1), true, true);
}

#[test]
#[should_panic(expected = "fastconv::backward: output gradient of 513 values")]
fn conv_backward_rejects_a_long_output_gradient_on_the_direct_path() {
    let g = direct();
    let (x, w, y) = lens(&g);
    fastconv::backward(&g, &ramp(x), &ramp(w), &ramp(y + 1), true, true);
}

#[test]
#[should_panic(expected = "fastconv::forward: kernel 3x3 and stride 0x2 must be at least 1")]
fn conv_rejects_a_zero_stride() {
    let g = Geometry { sh: 0, ..strided() };
    fastconv::forward(&g, &ramp(g.n * g.ci * g.h * g.w), &ramp(g.co * g.ci * 9));
}

#[test]
#[should_panic(expected = "fastconv::forward: kernel 5x5 is larger than the padded input 2x2")]
fn conv_rejects_a_kernel_larger_than_the_padded_input() {
    let g = Geometry { n: 1, ci: 1, h: 2, w: 2, co: 1, kh: 5, kw: 5, sh: 1, sw: 1, ph: 1, pw: 1 };
    fastconv::forward(&g, &ramp(4), &ramp(25));
}

#[test]
#[should_panic(expected = "fast_conv2d: the weight [4, 2, 3, 3] has 2 input channels, the input [1, 3, 5, 5] 3")]
fn the_conv_extension_rejects_a_weight_for_other_input_channels() {
    let (x, w) = (tensor(ramp(75), [1, 3, 5, 5]), tensor(ramp(72), [4, 2, 3, 3]));
    let _ = <Dispatch as FastConv>::fast_conv2d(x.into_dispatch(), w.into_dispatch(), 1, 1, 1, 1, false);
}

// Average pooling.

#[test]
#[should_panic(expected = "fastpool::forward: 31 values are not 2 planes of 4x4")]
fn pool_forward_rejects_a_short_input() {
    fastpool::forward(&ramp(31), 2, 4, 4, 2, 2);
}

#[test]
#[should_panic(expected = "fastpool::backward: 9 values are not 2 planes of 2x2")]
fn pool_backward_rejects_a_long_output_gradient() {
    fastpool::backward(&ramp(9), 2, 4, 4, 2, 2);
}

#[test]
#[should_panic(expected = "fastpool::forward: kernel 0x2 must be at least 1x1")]
fn pool_rejects_a_zero_kernel() {
    fastpool::forward(&ramp(32), 2, 4, 4, 0, 2);
}

#[test]
#[should_panic(expected = "fast_avg_pool2d: input of shape [2, 4, 4] is not NCHW")]
fn the_pool_extension_rejects_an_input_that_is_not_nchw() {
    let x = Tensor::<3>::from_data(TensorData::new(ramp(32), [2, 4, 4]), &Device::flex());
    let _ = <Dispatch as FastAvgPool>::fast_avg_pool2d(x.into_dispatch(), 2, 2);
}

#[test]
#[should_panic(expected = "fastpool::forward: kernel 2x0 must be at least 1x1")]
fn the_pool_extension_rejects_a_zero_kernel() {
    let x = tensor(ramp(64), [2, 2, 4, 4]);
    let _ = <Dispatch as FastAvgPool>::fast_avg_pool2d(x.into_dispatch(), 2, 0);
}

// Degenerate but consistent shapes, and ordinary ones.

#[test]
fn consistent_empty_shapes_give_fully_written_outputs() {
    // Batch norm: no images, no channels.
    assert!(fastbn::normalise(&[], 0, 3, &[], &[], &[], &[], 1e-5, true).is_empty());
    assert!(fastbn::normalise(&[], 2, 0, &[1.0; 2], &[1.0; 2], &[1.0; 2], &[0.0; 2], 1e-5, false).is_empty());
    assert!(fastbn::normalise(&[], 2, 3, &[1.0; 2], &[1.0; 2], &[1.0; 2], &[0.0; 2], 1e-5, false).is_empty());
    let (mean, var) = fastbn::statistics(&[], 0, 2, 3);
    assert_eq!((mean, var), (vec![0.0; 2], vec![0.0; 2]));
    let (dx, dgamma, dbeta) = fastbn::backward(&[], &[], 0, 2, 3, &[0.0; 2], &[1.0; 2], &[1.0; 2], 1e-5, None);
    assert_eq!((dx, dgamma, dbeta), (vec![], vec![0.0; 2], vec![0.0; 2]));
    let (out, mean, var) = fastbn::bn_add_relu_forward(&[], &[], 0, 2, 3, &[1.0; 2], &[0.0; 2], 1e-5);
    assert_eq!((out, mean, var), (vec![], vec![0.0; 2], vec![0.0; 2]));
    let g = fastbn::bn_add_relu_backward(&[], &[], &[], 0, 2, 3, &[0.0; 2], &[1.0; 2], &[1.0; 2], 1e-5);
    assert_eq!(g, (vec![], vec![0.0; 2], vec![0.0; 2], vec![]));
    // Convolution: no images, no input channels (the output is all zeros: padding only), no
    // output channels.
    for g in [
        Geometry { n: 0, ..direct() },
        Geometry { n: 0, ..strided() },
        Geometry { ci: 0, ..direct() },
        Geometry { ci: 0, ..strided() },
        Geometry { co: 0, ..direct() },
        Geometry { co: 0, ..strided() },
    ] {
        let (x, w, y) = lens(&g);
        assert_eq!(fastconv::forward(&g, &ramp(x), &ramp(w)), vec![0.0; y], "{g:?}");
        let (dx, dw) = fastconv::backward(&g, &ramp(x), &ramp(w), &ramp(y), true, true);
        assert_eq!((dx.unwrap(), dw.unwrap()), (vec![0.0; x], vec![0.0; w]), "{g:?}");
    }
    // Pooling: no planes, and planes smaller than the kernel (every value is dropped).
    assert!(fastpool::forward(&[], 0, 4, 4, 2, 2).is_empty());
    assert!(fastpool::forward(&ramp(6), 2, 1, 3, 2, 2).is_empty());
    assert_eq!(fastpool::backward(&[], 2, 1, 3, 2, 2), vec![0.0; 6]);
}

#[test]
fn ordinary_shapes_give_the_definitions_values() {
    // Batch norm with the fused ReLU, images of 2 channels x 5 values: the same float
    // operations as the kernel, so the same bits.
    let (n, c, plane, eps) = (3, 2, 5, 1e-5);
    let x = ramp(n * c * plane);
    let (gamma, beta) = ([0.5f32, -1.5], [0.25f32, 0.1]);
    let (mean, var) = fastbn::statistics(&x, n, c, plane);
    let y = fastbn::normalise(&x, c, plane, &mean, &var, &gamma, &beta, eps, true);
    for (i, (&v, &o)) in x.iter().zip(&y).enumerate() {
        let ch = i / plane % c;
        let scale = gamma[ch] / ((var[ch] as f64 + eps).sqrt() as f32);
        assert_eq!(o, (v * scale + (beta[ch] - mean[ch] * scale)).max(0.0), "at {i}");
    }
    // `relu(batch_norm(y) + s)`: the same float operations as batch norm's normalisation
    // followed by the sum and the ReLU, so the same bits.
    let s: Vec<f32> = x.iter().rev().map(|v| v * 0.5 - 0.1).collect();
    let (out, m2, v2) = fastbn::bn_add_relu_forward(&x, &s, n, c, plane, &gamma, &beta, eps);
    assert_eq!((&m2, &v2), (&mean, &var));
    let plain = fastbn::normalise(&x, c, plane, &mean, &var, &gamma, &beta, eps, false);
    let want: Vec<f32> = plain.iter().zip(&s).map(|(u, v)| (u + v).max(0.0)).collect();
    assert!(want.contains(&0.0) && want.iter().any(|&v| v > 0.0), "the ReLU cuts some values");
    assert_eq!(out, want);
    let y = bn_add_relu(tensor(x.clone(), [n, c, 1, plane]), tensor(s.clone(), [n, c, 1, plane]), c);
    let unit = fastbn::bn_add_relu_forward(&x, &s, n, c, plane, &[1.0; 2], &[0.0; 2], eps).0;
    assert_eq!(y.to_data().iter::<f32>().collect::<Vec<f32>>(), unit);
    // Pooling: 2x2 (the unzeroed path) and 3x2 with a dropped row.
    for (planes, h, w, kh, kw) in [(3, 4, 6, 2, 2), (2, 7, 4, 3, 2)] {
        let x = ramp(planes * h * w);
        let (oh, ow) = (h / kh, w / kw);
        let y = fastpool::forward(&x, planes, h, w, kh, kw);
        let dx = fastpool::backward(&y, planes, h, w, kh, kw);
        let scale = 1.0 / (kh * kw) as f32;
        for p in 0..planes {
            for oy in 0..oh {
                for ox in 0..ow {
                    let want: f32 = (0..kh)
                        .flat_map(|a| (0..kw).map(move |b| (a, b)))
                        .map(|(a, b)| x[(p * h + oy * kh + a) * w + ox * kw + b])
                        .sum::<f32>()
                        * scale;
                    assert!((y[(p * oh + oy) * ow + ox] - want).abs() < 1e-6);
                }
            }
            for yy in 0..h {
                for xx in 0..w {
                    let want = if yy / kh < oh { y[(p * oh + yy / kh) * ow + xx / kw] * scale } else { 0.0 };
                    assert_eq!(dx[(p * h + yy) * w + xx], want);
                }
            }
        }
    }
}
