//! Heads: the relation module and the heads of the baselines.

use burn::nn::{BatchNorm, BatchNormConfig, Initializer, Linear, LinearConfig};
use burn::prelude::*;
use burn::tensor::activation::relu;

use crate::fastconv::flex_autodiff_f32;
use crate::precision::linear;

/// Linear(in, hidden) -> BatchNorm1d -> LeakyReLU(0.01) -> Linear(hidden, out): the shape of the
/// relation head, the SimCLR projection head and the DeepCluster head.
#[derive(Module, Debug)]
pub struct MlpHead {
    pub fc1: Linear,
    pub bn: BatchNorm,
    pub fc2: Linear,
}

impl MlpHead {
    pub fn new(input: usize, hidden: usize, output: usize, device: &Device) -> Self {
        MlpHead {
            fc1: LinearConfig::new(input, hidden).init(device),
            bn: BatchNormConfig::new(hidden).init(device),
            fc2: LinearConfig::new(hidden, output).init(device),
        }
    }

    /// Relation head: `in` = 2F for concatenation, F for sum / mean / max; one logit.
    pub fn relation(input: usize, device: &Device) -> Self {
        Self::new(input, 256, 1, device)
    }

    /// SimCLR projection head: F -> 256 -> 64.
    pub fn simclr(features: usize, device: &Device) -> Self {
        Self::new(features, 256, 64, device)
    }

    /// DeepCluster head: F -> 256 -> k clusters.
    pub fn deepcluster(features: usize, k: usize, device: &Device) -> Self {
        Self::new(features, 256, k, device)
    }

    pub fn forward(&self, x: Tensor<2>) -> Tensor<2> {
        self.forward_after_fc1(linear(&self.fc1, x))
    }

    /// The rest of the head from the output of `fc1` (BN, LeakyReLU, `fc2`), for callers that
    /// compute `fc1` themselves (the relational pairs, projected once per view).
    pub fn forward_after_fc1(&self, h: Tensor<2>) -> Tensor<2> {
        linear(&self.fc2, self.bn_leaky_relu(h))
    }

    /// `LeakyReLU(0.01)(bn(h))` on the hidden layer `[rows, hidden]`: one fused operation in
    /// training on burn-flex under autodiff ([`crate::bn1d`]), burn's batch norm and LeakyReLU
    /// elsewhere.
    pub fn bn_leaky_relu(&self, h: Tensor<2>) -> Tensor<2> {
        match crate::bn1d::batch_norm_leaky_relu(&self.bn, &h, 0.01) {
            Some(y) => y,
            None => leaky_relu(self.bn.forward(h), 0.01),
        }
    }
}

/// LeakyReLU: [`leaky_relu_by_mask`] on burn-flex under autodiff (f32, relnet's kernels on), burn's
/// `leaky_relu` everywhere else: without autodiff burn-flex's own `leaky_relu` is one pass, and
/// on the CubeCL backends burn's decomposition fuses into one kernel where the mask's cast would
/// not.
fn leaky_relu<const D: usize>(x: Tensor<D>, slope: f64) -> Tensor<D> {
    if flex_autodiff_f32(&x) { leaky_relu_by_mask(x, slope) } else { burn::tensor::activation::leaky_relu(x, slope) }
}

/// LeakyReLU as `x * m`, with `m` 1 where `x < 0` is false (`x >= 0`, and NaN) and `slope`
/// elsewhere, taken from `x` through a boolean (so no gradient flows into it). Under autodiff,
/// burn's `leaky_relu` is the backend trait's default, a comparison, a scaled copy and
/// `mask_where` forward and two masked copies added backward, and burn-flex's in-place
/// `mask_where` branches on every value: 12% of the profile's samples of a Conv-4 K = 16, M = 64
/// pretraining step, in the relation head's 15,360 x 256 activations (docs/performance.md). On
/// f32 values on burn-flex this gives burn's values and input gradients bit for bit (`x * 1` and
/// `x * slope` forward, `g * 1` and `g * slope` backward), except that a zero gradient keeps its
/// sign where burn's sum of the two branches makes it `+0`. `m`'s two values are exact: `1 * (1 -
/// slope) + slope` rounds to 1 in f32 (checked for 0.01, the slope used here, by the test).
pub(crate) fn leaky_relu_by_mask<const D: usize>(x: Tensor<D>, slope: f64) -> Tensor<D> {
    let m = x.clone().lower_elem(0.0).bool_not().float().mul_scalar(1.0 - slope).add_scalar(slope);
    x * m
}

/// A linear layer on features: RotationNet's 4-way head and the linear classifier.
pub fn linear_head(features: usize, classes: usize, device: &Device) -> Linear {
    LinearConfig::new(features, classes).init(device)
}

/// Deep InfoMax local discriminator (reference: the global feature tiled over the first block's
/// map, concatenated along channels, then 1x1 convolutions C+F -> 256 -> 256 -> 1 with ReLU).
///
/// A 1x1 convolution is a matrix product per position, and the first one acts on a concatenation,
/// so it splits exactly: `W [M; y] + b = W_M M + (W_y y + b)`. relnet computes `W_M M` once per
/// image and `W_y y + b` once per global feature, and scores every position of the batch with two
/// row-wise GEMMs. Same function and initialisation as the reference (uniform in
/// `±1/sqrt(fan_in)`, fan_in = C+F for the split layer). On a CIFAR-10 batch of 128 on 2 cores this
/// took Deep InfoMax from 10.9 s to 3.9 s per step against tiling `y` and running `Conv2d`s (whose
/// layout copies dominated), and the negatives can reuse `W_M M`.
#[derive(Module, Debug)]
pub struct LocalDiscriminator {
    /// The map's share of the first 1x1 convolution (C -> 256, no bias).
    pub map_in: Linear,
    /// The global feature's share of the first 1x1 convolution, with its bias (F -> 256).
    pub global_in: Linear,
    pub hidden: Linear,
    pub out: Linear,
}

impl LocalDiscriminator {
    pub const WIDTH: usize = 256;

    pub fn new(map_channels: usize, features: usize, device: &Device) -> Self {
        let w = Self::WIDTH;
        let bound = 1.0 / ((map_channels + features) as f64).sqrt();
        let split = Initializer::Uniform { min: -bound, max: bound };
        LocalDiscriminator {
            map_in: LinearConfig::new(map_channels, w).with_bias(false).with_initializer(split.clone()).init(device),
            global_in: LinearConfig::new(features, w).with_initializer(split).init(device),
            hidden: LinearConfig::new(w, w).init(device),
            out: LinearConfig::new(w, 1).init(device),
        }
    }

    /// `W_M M` for maps `[N, C, h, w]`: `[N, h*w, 256]`, positions in row-major order.
    pub fn project_map(&self, map: Tensor<4>) -> Tensor<3> {
        let [n, c, h, w] = map.dims();
        let rows = map.permute([0, 2, 3, 1]).reshape([n * h * w, c]);
        crate::precision::linear_operands(&self.map_in, rows).reshape([n, h * w, Self::WIDTH])
    }

    /// `W_y y + b` for global features `[N, F]`: `[N, 1, 256]`, to broadcast over positions.
    pub fn project_global(&self, global: Tensor<2>) -> Tensor<3> {
        let n = global.dims()[0];
        crate::precision::linear_operands(&self.global_in, global).reshape([n, 1, Self::WIDTH])
    }

    /// Scores from first-layer pre-activations `[N, P, 256]` (P positions): `[N, P]`.
    pub fn score(&self, pre: Tensor<3>) -> Tensor<2> {
        let [n, p, w] = pre.dims();
        // The first layer's output, rounded once at bf16 precision (its parts are not).
        let x = relu(crate::precision::round(pre)).reshape([n * p, w]);
        let x = relu(linear(&self.hidden, x));
        linear(&self.out, x).reshape([n, p])
    }

    /// Scores `[N, 1, h, w]` for global features `[N, F]` against maps `[N, C, h, w]`.
    pub fn forward(&self, global: Tensor<2>, map: Tensor<4>) -> Tensor<4> {
        let [n, _, h, w] = map.dims();
        let pre = self.project_map(map) + self.project_global(global);
        self.score(pre).reshape([n, 1, h, w])
    }
}

/// Deep InfoMax prior discriminator: F -> 512 -> 128 -> 1 with ReLU (the sigmoid is applied by
/// the loss).
#[derive(Module, Debug)]
pub struct PriorDiscriminator {
    pub l0: Linear,
    pub l1: Linear,
    pub l2: Linear,
}

impl PriorDiscriminator {
    pub fn new(features: usize, device: &Device) -> Self {
        PriorDiscriminator {
            l0: LinearConfig::new(features, 512).init(device),
            l1: LinearConfig::new(512, 128).init(device),
            l2: LinearConfig::new(128, 1).init(device),
        }
    }

    pub fn forward(&self, x: Tensor<2>) -> Tensor<2> {
        let x = relu(linear(&self.l0, x));
        let x = relu(linear(&self.l1, x));
        linear(&self.l2, x)
    }
}

#[cfg(test)]
mod tests {
    use burn::tensor::TensorData;
    use burn::tensor::activation::leaky_relu;

    use super::*;

    /// A function's values and input gradient, as bits.
    type Bits = (Vec<u32>, Vec<u32>);

    /// The values and input gradients of burn's `leaky_relu` and of [`leaky_relu_by_mask`] under
    /// autodiff on burn-flex, as bits, on the same fixed input: values of both signs, zeros of
    /// both signs, the smallest normal and subnormal numbers, infinities and a NaN; the incoming
    /// gradient has a zero of each sign too.
    fn both(slope: f64) -> (Bits, Bits) {
        let device = Device::flex().autodiff();
        let mut v: Vec<f32> = (0..64 * 48).map(|i| ((i * 53 % 97) as f32 - 48.2) / 9.7).collect();
        let special =
            [0.0, -0.0, f32::MIN_POSITIVE, -f32::MIN_POSITIVE, f32::from_bits(1), -f32::from_bits(1), f32::INFINITY];
        v[..special.len()].copy_from_slice(&special);
        v[special.len()] = f32::NEG_INFINITY;
        v[special.len() + 1] = f32::NAN;
        let mut g: Vec<f32> = (0..v.len()).map(|i| ((i * 37 % 101) as f32 - 50.3) / 7.1).collect();
        g[20] = 0.0;
        g[21] = -0.0;
        let run = |f: &dyn Fn(Tensor<2>) -> Tensor<2>| {
            let x = Tensor::<2>::from_data(TensorData::new(v.clone(), [64, 48]), &device).require_grad();
            let y = f(x.clone());
            let w = Tensor::<2>::from_data(TensorData::new(g.clone(), [64, 48]), &device);
            // `y` is kept for its bits after `backward` takes the graph.
            let grads = (y.clone() * w).sum().backward();
            let dx = x.grad(&grads).expect("a gradient for x");
            let bits = |t: Tensor<2>| t.into_data().try_to_vec::<f32>().unwrap().iter().map(|x| x.to_bits()).collect();
            (bits(y), bits(dx))
        };
        (run(&|x| leaky_relu(x, slope)), run(&|x| leaky_relu_by_mask(x, slope)))
    }

    /// In training on burn-flex under autodiff, the head's batch norm + LeakyReLU is
    /// `bn1d`'s kernel: the same bits.
    #[test]
    fn the_head_takes_the_fused_batch_norm_in_training() {
        let device = Device::flex().autodiff();
        let head = MlpHead::new(8, 256, 1, &device);
        let (rows, width) = (70, 256);
        let v: Vec<f32> = (0..rows * width).map(|i| ((i * 37 % 101) as f32 - 50.0) / 13.0).collect();
        let h = Tensor::<2>::from_data(TensorData::new(v.clone(), [rows, width]), &device).require_grad();
        let got = head.bn_leaky_relu(h).into_data().try_to_vec::<f32>().unwrap();
        let gamma = head.bn.gamma.val().into_data().try_to_vec::<f32>().unwrap();
        let beta = head.bn.beta.val().into_data().try_to_vec::<f32>().unwrap();
        let (want, _, _) = crate::bn1d::forward(&v, rows, width, &gamma, &beta, head.bn.epsilon, 0.01);
        assert!(got.iter().zip(&want).all(|(a, b)| a.to_bits() == b.to_bits()), "bn1d's bits");
    }

    #[test]
    fn leaky_relu_by_mask_is_burns_leaky_relu_bit_for_bit() {
        let ((y0, dx0), (y1, dx1)) = both(0.01);
        let first_difference = |a: &[u32], b: &[u32]| {
            (a.len() != b.len()).then_some(usize::MAX).or_else(|| a.iter().zip(b).position(|(x, y)| x != y))
        };
        assert_eq!(first_difference(&y0, &y1), None, "values: the first index where the bits differ");
        // Gradients: equal bits but for the sign of a zero (burn adds `+0` from the other branch).
        let unsigned_zero = |d: &[u32]| d.iter().map(|&b| if b == 0x8000_0000 { 0 } else { b }).collect::<Vec<_>>();
        assert_eq!(
            first_difference(&unsigned_zero(&dx0), &unsigned_zero(&dx1)),
            None,
            "input gradients: the first index where the bits differ"
        );
        // The signed zero is the one difference, and the incoming `-0` reached it.
        assert_eq!(dx1[21], (-0f32).to_bits(), "the new path keeps the sign of a zero gradient");
        assert_eq!(dx0[21], 0, "burn's sum of the two branches gives +0");
        // Not the identity or a ReLU: both sides of the kink were taken, and the NaN stayed NaN.
        assert!(y0.iter().any(|&b| f32::from_bits(b) < 0.0) && y0.iter().any(|&b| f32::from_bits(b) > 0.0));
        assert!(f32::from_bits(y1[8]).is_nan() && f32::from_bits(dx0[8]) == f32::from_bits(dx1[8]));
    }
}
