//! Batch norm (training mode) and ReLU followed by a 3x3, stride-1 convolution, as one operation
//! for burn-flex (NCHW f32): the middle of every residual block (`bn1 -> relu -> conv2`). Apart,
//! batch norm writes the normalised activation, the convolution copies it into its bordered
//! buffer image by image, and keeps it for the backward pass, where the weight gradient copies it
//! again. Here the convolution reads batch norm's input and applies the normalisation and the
//! ReLU as it makes its bordered copies ([`direct3x3::BnRelu`]), forward and in the weight
//! gradient: the activation is never written, one pass over it (a write and a read of a full
//! activation) and its memory are saved.
//!
//! Every value has the bits of [`fastbn`](crate::fastbn)'s batch norm + ReLU followed by
//! [`fastconv`](crate::fastconv)'s convolution, forward and backward: the same float operations
//! in the same order (the tests hold them to it). The one caveat of
//! [`bn_relu_pool`](crate::bn_relu_pool) applies: `max(-0.0, 0.0)` may give either zero, and the
//! ReLU's `max` is compiled separately here; the convolution's products with either zero are
//! zeros whose sum is the same value. The fused path runs where [`fuses`] says so; everywhere
//! else the two operations run as before.
//!
//! At bf16 precision it runs where bf16 convolutions take the emulated numerics (the fp32
//! kernels on bf16-rounded operands, `fastconv::forward_emulated`): the mapped copy is rounded
//! ([`direct3x3::Map::BnReluBf16`]), the weights, outputs and gradients as the emulation rounds
//! them; batch norm stays fp32. Where bf16 convolutions run the `vdpbf16ps` kernels
//! (`direct_bf16::chosen`) the operations run apart, so the kernels' own bits are kept.

use burn::backend::autodiff::Autodiff;
use burn::backend::autodiff::checkpoint::base::Checkpointer;
use burn::backend::autodiff::checkpoint::strategy::CheckpointStrategy;
use burn::backend::autodiff::grads::Gradients;
use burn::backend::autodiff::ops::{Backward, Ops, OpsKind};
use burn::backend::flex::FlexTensor;
use burn::backend::tensor::FloatTensor;
use burn::backend::{Backend, Dispatch, Flex, backend_extension};
use burn::nn::BatchNorm;
use burn::nn::PaddingConfig2d;
use burn::nn::conv::Conv2d;
use burn::prelude::*;
use burn::tensor::TensorData;

use crate::direct3x3::{self, BnRelu, Map};
use crate::fastbn::{
    affine, batch_norm_relu, bn_shape, check_channels, fast_path, images, outputs, register_bn, statistics, trained,
};
use crate::fastconv::{self, Geometry, conv2d, values};
use crate::precision::{Precision, current};

/// The geometry of the 3x3, stride-1, padding-1 convolution of `n` images of `ci` channels of
/// `h x w` to `co` channels.
fn geometry(n: usize, ci: usize, h: usize, w: usize, co: usize) -> Geometry {
    Geometry { n, ci, h, w, co, kh: 3, kw: 3, sh: 1, sw: 1, ph: 1, pw: 1 }
}

/// `conv3x3(relu(batch_norm(y)))` of `y` (`n` images of `ci` planes of `h x w`) in training
/// mode, with `weight` (`[co, ci, 3, 3]`), padding 1, no bias: `(output, mean, var)`, the output
/// `n` images of `co` planes of `h x w`, the biased batch variance. With `bf16`, the convolution
/// at bf16 precision on the emulated numerics (`fastconv::forward_emulated`: the normalised,
/// rectified input and the weights rounded to bf16, the output rounded); batch norm stays fp32.
///
/// # Panics
///
/// Where the lengths do not match (`gamma` and `beta` one value per input channel), or the
/// direct kernels do not cover the shape on this CPU.
#[allow(clippy::too_many_arguments)]
pub fn forward(
    y: &[f32],
    [n, ci, h, w]: [usize; 4],
    gamma: &[f32],
    beta: &[f32],
    eps: f64,
    weight: &[f32],
    co: usize,
    bf16: bool,
) -> (Vec<f32>, Vec<f32>, Vec<f32>) {
    const WHAT: &str = "bn_relu_conv::forward";
    let g = geometry(n, ci, h, w, co);
    g.check(WHAT, y.len(), weight.len(), None);
    check_channels(WHAT, ci, &[("gamma", gamma), ("beta", beta)]);
    assert!(direct3x3::covers_mapped(&g), "bn_relu_conv::forward: {g:?} is not a shape the direct kernels cover here");
    let (mean, var) = statistics(y, n, ci, h * w);
    let (scale, shift) = affine(ci, &mean, &var, gamma, beta, eps);
    let m = BnRelu { scale: &scale, shift: &shift };
    let out = if bf16 {
        direct3x3::forward_mapped(&g, y, &fastconv::rounded(weight), Map::BnReluBf16(m))
    } else {
        direct3x3::forward_mapped(&g, y, weight, m.into())
    };
    (out, mean, var)
}

/// The gradients of [`forward`] for the output gradient `dout`: `(dy, dgamma, dbeta, dweight)`,
/// `dweight` only where `want_w` (batch norm's three gradients all need the convolution's input
/// gradient, so they are computed together); with `bf16`, of [`forward`] with `bf16` (the
/// convolution's gradients rounded as `fastconv::backward_emulated` rounds them).
///
/// # Panics
///
/// As [`forward`], and unless `dout` is the output's size and `mean` and `var` have one value
/// per input channel.
#[allow(clippy::too_many_arguments)]
pub fn backward(
    y: &[f32],
    [n, ci, h, w]: [usize; 4],
    dout: &[f32],
    mean: &[f32],
    var: &[f32],
    gamma: &[f32],
    beta: &[f32],
    eps: f64,
    weight: &[f32],
    co: usize,
    want_w: bool,
    bf16: bool,
) -> (Vec<f32>, Vec<f32>, Vec<f32>, Option<Vec<f32>>) {
    const WHAT: &str = "bn_relu_conv::backward";
    let g = geometry(n, ci, h, w, co);
    g.check(WHAT, y.len(), weight.len(), Some(dout.len()));
    check_channels(WHAT, ci, &[("mean", mean), ("var", var), ("gamma", gamma), ("beta", beta)]);
    assert!(direct3x3::covers_mapped(&g), "{WHAT}: {g:?} is not a shape the direct kernels cover here");
    let (scale, shift) = affine(ci, mean, var, gamma, beta, eps);
    let m = BnRelu { scale: &scale, shift: &shift };
    let map = if bf16 { Map::BnReluBf16(m) } else { m.into() };
    let (da, dweight) = fastconv::backward_mapped(&g, y, weight, dout, map, true, want_w);
    let da = da.expect("asked for");
    let (dy, dgamma, dbeta) = crate::fastbn::backward(y, &da, n, ci, h * w, mean, var, gamma, eps, Some(beta));
    (dy, dgamma, dbeta, dweight)
}

#[backend_extension(Flex, Autodiff)]
pub trait FastBatchNormReluConv: Backend {
    /// (output, mean, biased variance) of `conv3x3(relu(batch_norm(y)))`, NCHW, stride 1,
    /// padding 1, no bias; with `bf16`, the convolution at bf16 precision ([`forward`]).
    fn fast_batch_norm_relu_conv(
        y: FloatTensor<Self>,
        gamma: FloatTensor<Self>,
        beta: FloatTensor<Self>,
        weight: FloatTensor<Self>,
        epsilon: f64,
        bf16: bool,
    ) -> (FloatTensor<Self>, FloatTensor<Self>, FloatTensor<Self>);
}

fn flex_forward(
    y: &FlexTensor,
    gamma: &FlexTensor,
    beta: &FlexTensor,
    weight: &FlexTensor,
    eps: f64,
    bf16: bool,
) -> (FlexTensor, FlexTensor, FlexTensor) {
    const WHAT: &str = "fast_batch_norm_relu_conv";
    let ((shape, yv), (_, gv), (_, bv), (ws, wv)) = (values(y), values(gamma), values(beta), values(weight));
    assert!(shape.len() == 4 && ws.len() == 4, "{WHAT}: input {shape:?} and weight {ws:?} are not NCHW");
    bn_shape(WHAT, &shape, &gv, &bv);
    let dims = [shape[0], shape[1], shape[2], shape[3]];
    let (out, mean, var) = forward(&yv, dims, &gv, &bv, eps, &wv, ws[0], bf16);
    outputs(out, vec![dims[0], ws[0], dims[2], dims[3]], mean, var)
}

impl FastBatchNormReluConv for Flex {
    fn fast_batch_norm_relu_conv(
        y: FlexTensor,
        gamma: FlexTensor,
        beta: FlexTensor,
        weight: FlexTensor,
        epsilon: f64,
        bf16: bool,
    ) -> (FlexTensor, FlexTensor, FlexTensor) {
        flex_forward(&y, &gamma, &beta, &weight, epsilon, bf16)
    }
}

impl<C: CheckpointStrategy> FastBatchNormReluConv for Autodiff<Flex, C> {
    fn fast_batch_norm_relu_conv(
        y: FloatTensor<Self>,
        gamma: FloatTensor<Self>,
        beta: FloatTensor<Self>,
        weight: FloatTensor<Self>,
        epsilon: f64,
        bf16: bool,
    ) -> (FloatTensor<Self>, FloatTensor<Self>, FloatTensor<Self>) {
        #[derive(Debug)]
        struct BatchNormReluConvBackward;
        impl Backward<Flex, 4> for BatchNormReluConvBackward {
            /// y, gamma, beta, weight, mean, variance, epsilon, bf16.
            type State = (FlexTensor, FlexTensor, FlexTensor, FlexTensor, FlexTensor, FlexTensor, f64, bool);
            fn backward(self, ops: Ops<Self::State, 4>, grads: &mut Gradients, _: &mut Checkpointer) {
                let [node_y, node_gamma, node_beta, node_w] = ops.parents;
                let dout = grads.consume::<Flex>(&ops.node);
                let (y, gamma, beta, weight, mean, var, eps, bf16) = ops.state;
                let ((shape, yv), (_, dv), (_, gv), (_, bv), (ws, wv), (_, mv), (_, vv)) = (
                    values(&y),
                    values(&dout),
                    values(&gamma),
                    values(&beta),
                    values(&weight),
                    values(&mean),
                    values(&var),
                );
                // The forward pass checked the shapes; the kernels check the lengths.
                let (n, c, _) = images(&shape);
                let dims = [n, c, shape[2], shape[3]];
                let (dy, dgamma, dbeta, dw) =
                    backward(&yv, dims, &dv, &mv, &vv, &gv, &bv, eps, &wv, ws[0], node_w.is_some(), bf16);
                let ids = [node_y, node_gamma, node_beta].map(|node| node.map(|n| n.id));
                register_bn(grads, ids, shape, (dy, dgamma, dbeta));
                if let (Some(node), Some(dw)) = (node_w, dw) {
                    grads.register::<Flex>(node.id, FlexTensor::from_data(TensorData::new(dw, ws)));
                }
            }
        }
        let (yp, gp, bp, wp) =
            (y.primitive().clone(), gamma.primitive().clone(), beta.primitive().clone(), weight.primitive().clone());
        let (out, mean, var) = flex_forward(&yp, &gp, &bp, &wp, epsilon, bf16);
        let parents = [y.node(), gamma.node(), beta.node(), weight.node()];
        let output = match BatchNormReluConvBackward.prepare::<C>(parents).compute_bound().stateful() {
            OpsKind::Tracked(prep) => prep.finish((yp, gp, bp, wp, mean.clone(), var.clone(), epsilon, bf16), out),
            OpsKind::UnTracked(prep) => prep.finish(out),
        };
        (output, <FloatTensor<Self>>::new(mean), <FloatTensor<Self>>::new(var))
    }
}

/// Whether [`batch_norm_relu_conv`] runs `bn`, ReLU and `conv` on `y` as one operation: where
/// [`batch_norm_relu`] takes relnet's path, at fp32 precision or at bf16 where bf16
/// convolutions run the emulated numerics (`direct_bf16::chosen` false: the fused operation
/// has their bits, not the `vdpbf16ps` kernels'), `conv` is 3x3 with stride 1,
/// padding 1, no dilation, groups or bias, and the direct kernels cover the shape in this process
/// (forward and weight gradient through the bordered copy: an output width and a number of output
/// channels that are multiples of 8, on a CPU with AVX2 and FMA or with `RELNET_SIMD=portable`,
/// not with `RELNET_DIRECT_CONV=off`; see [`fastconv::direct_kernels_run_here`]).
pub fn fuses(bn: &BatchNorm, conv: &Conv2d, y: &Tensor<4>) -> bool {
    let [n, ci, h, w] = y.dims();
    let [co, wci, ..] = conv.weight.dims();
    conv.kernel_size == [3, 3]
        && conv.stride == [1, 1]
        && conv.dilation == [1, 1]
        && conv.groups == 1
        && conv.bias.is_none()
        && matches!(conv.padding, PaddingConfig2d::Explicit(1, 1, 1, 1))
        && wci == ci
        && match current() {
            Precision::Fp32 => true,
            Precision::Bf16 => !crate::direct_bf16::chosen(),
        }
        && fast_path(bn, y)
        && direct3x3::covers_mapped(&geometry(n, ci, h, w, co))
}

/// `conv.forward(relu(bn.forward(y)))`: through [`FastBatchNormReluConv`] where [`fuses`] says
/// so, with the running statistics updated as burn-nn's `BatchNorm` does; [`batch_norm_relu`]
/// then [`conv2d`] everywhere else.
pub fn batch_norm_relu_conv(bn: &BatchNorm, conv: &Conv2d, y: Tensor<4>) -> Tensor<4> {
    if !fuses(bn, conv, &y) {
        return conv2d(conv, batch_norm_relu(bn, y));
    }
    let device = y.device();
    let out = <Dispatch as FastBatchNormReluConv>::fast_batch_norm_relu_conv(
        y.into_dispatch(),
        bn.gamma.val().into_dispatch(),
        bn.beta.val().into_dispatch(),
        conv.weight.val().into_dispatch(),
        bn.epsilon,
        current() == Precision::Bf16,
    );
    trained(bn, &device, out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fastbn;

    fn bits(v: &[f32]) -> Vec<u32> {
        v.iter().map(|f| f.to_bits()).collect()
    }

    #[test]
    fn fused_has_the_bits_of_batch_norm_relu_then_the_convolution_at_fp32_and_bf16() {
        if !fastconv::direct_kernels_run_here() {
            eprintln!("SKIP: the direct kernels do not run on this CPU (no AVX2 + FMA, or RELNET_DIRECT_CONV=off)");
            return;
        }
        // ResNet-32's three stages, an odd height and channel count, a width of 16; gammas of
        // both signs, so that the ReLU cuts both ways.
        // n = 16 and 17 on 8x8 planes: chunks of two images in the weight gradient, the last
        // one short at 17.
        for (n, ci, co, h, w) in [
            (3, 16, 16, 32, 32),
            (2, 32, 32, 16, 16),
            (2, 64, 64, 8, 8),
            (3, 5, 8, 7, 16),
            (16, 8, 8, 8, 8),
            (17, 6, 16, 8, 8),
        ] {
            let (eps, plane) = (1e-5, h * w);
            let y: Vec<f32> =
                (0..n * ci * plane).map(|i| ((i * 37 % 101) as f32 / 50.0 - 1.0) * (1 + i % 3) as f32).collect();
            let weight: Vec<f32> = (0..co * ci * 9).map(|i| (i * 29 % 83) as f32 / 41.0 - 1.0).collect();
            let dout: Vec<f32> = (0..n * co * plane).map(|i| (i * 53 % 97) as f32 / 48.0 - 1.0).collect();
            let gamma: Vec<f32> = (0..ci).map(|c| [0.5, -1.5, 2.0][c % 3]).collect();
            let beta: Vec<f32> = (0..ci).map(|c| [0.1, -0.2, 0.3, 0.0][c % 4]).collect();
            let g = geometry(n, ci, h, w, co);
            // Apart: batch norm + ReLU, the convolution; backward the convolution's, then batch
            // norm's. At bf16, the convolution's emulated numerics by their definition: the fp32
            // kernels on operands rounded one value at a time, each result rounded.
            let (mean, var) = statistics(&y, n, ci, plane);
            let a = fastbn::normalise(&y, ci, plane, &mean, &var, &gamma, &beta, eps, true);
            assert!(a.contains(&0.0) && a.iter().any(|&v| v > 0.0), "a ReLU that does something");
            let round = |v: &[f32]| v.iter().map(|&x| fastconv::round_value(x)).collect::<Vec<_>>();
            for bf16 in [false, true] {
                let (out, da, dw) = if bf16 {
                    let (ar, wr, dr) = (round(&a), round(&weight), round(&dout));
                    let out = round(&fastconv::forward_at(&g, &ar, &wr, false));
                    let (da, dw) = fastconv::backward_at(&g, &ar, &wr, &dr, true, true, false);
                    (out, round(&da.expect("asked")), round(&dw.expect("asked")))
                } else {
                    let out = fastconv::forward(&g, &a, &weight);
                    let (da, dw) = fastconv::backward(&g, &a, &weight, &dout, true, true);
                    (out, da.expect("asked"), dw.expect("asked"))
                };
                let (dy, dgamma, dbeta) =
                    fastbn::backward(&y, &da, n, ci, plane, &mean, &var, &gamma, eps, Some(&beta));
                // Fused.
                let dims = [n, ci, h, w];
                let (got, got_mean, got_var) = forward(&y, dims, &gamma, &beta, eps, &weight, co, bf16);
                let (gdy, gdgamma, gdbeta, gdw) =
                    backward(&y, dims, &dout, &mean, &var, &gamma, &beta, eps, &weight, co, true, bf16);
                let shape = (n, ci, co, h, w, bf16);
                assert_eq!(bits(&got), bits(&out), "output, {shape:?}");
                assert_eq!(bits(&got_mean), bits(&mean), "mean, {shape:?}");
                assert_eq!(bits(&got_var), bits(&var), "variance, {shape:?}");
                assert_eq!(bits(&gdy), bits(&dy), "dy, {shape:?}");
                assert_eq!(bits(&gdgamma), bits(&dgamma), "dgamma, {shape:?}");
                assert_eq!(bits(&gdbeta), bits(&dbeta), "dbeta, {shape:?}");
                assert_eq!(bits(&gdw.expect("asked")), bits(&dw), "dweight, {shape:?}");
            }
        }
    }

    #[test]
    #[should_panic(expected = "not a shape the direct kernels cover")]
    fn a_width_the_kernels_do_not_cover_is_refused() {
        // A 6-wide plane: no run of 8 outputs fits a row.
        let _ = forward(&[0.5; 2 * 36], [1, 2, 6, 6], &[1.0; 2], &[0.0; 2], 1e-5, &[0.1; 8 * 2 * 9], 8, false);
    }

    #[test]
    #[should_panic(expected = "bn_relu_conv::forward: input of 127 values")]
    fn an_input_of_the_wrong_length_is_refused() {
        let _ = forward(&[0.5; 2 * 64 - 1], [1, 2, 8, 8], &[1.0; 2], &[0.0; 2], 1e-5, &[0.1; 8 * 2 * 9], 8, false);
    }

    #[test]
    #[should_panic(expected = "bn_relu_conv::forward: gamma has 3 values for 2 channels")]
    fn a_gamma_of_the_wrong_length_is_refused() {
        let _ = forward(&[0.5; 2 * 64], [1, 2, 8, 8], &[1.0; 3], &[0.0; 2], 1e-5, &[0.1; 8 * 2 * 9], 8, false);
    }
}
