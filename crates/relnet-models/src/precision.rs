//! The arithmetic precision of convolutions and linear layers: fp32, or bf16 mixed precision as
//! PyTorch's CPU autocast does it.
//!
//! In bf16 every convolution and linear layer (and the relational head's split first layer)
//! takes its input and weights rounded to bf16 (round to nearest even), accumulates in fp32, and
//! rounds its output to bf16; in the backward pass the incoming gradient is rounded to bf16 and
//! the input and weight gradients each come out rounded to bf16. Master weights, optimiser state,
//! batch-norm statistics, activations other than those outputs, and the loss stay fp32.
//!
//! Values stay in f32 tensors holding bf16-representable numbers (the rounding is a cast to bf16
//! and back, with burn's own operations, on any backend), so every kernel computes what a bf16
//! kernel with fp32 accumulation computes, up to summation order: the numerics of the bf16 path
//! on every host. On a CPU with AVX512-BF16 (and AVX-512VL) whose `vdpbf16ps` has at least 1.5x
//! the fp32 FMA's arithmetic (measured once per process, `peaks.rs`), burn-flex's 3x3 stride-1
//! convolutions (the bulk of the backbones' work) read their operands as bf16 and multiply them
//! with `vdpbf16ps` (`direct_bf16.rs`); everything else runs fp32 kernels on the rounded values
//! (rounded as the kernels' bordered copies are made where they can be), so elsewhere bf16 is
//! not faster than fp32 ([`bf16_hardware`] says which path runs and why).
//!
//! The precision belongs to a thread: the trainer runs a run's steps at the run's precision
//! ([`with_precision`]) and data-parallel replicas take it to their threads.

use burn::nn::Linear;
use burn::prelude::*;
use burn::tensor::DType;

/// The precision of convolutions and linear layers.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum Precision {
    /// Everything in fp32.
    #[default]
    Fp32,
    /// bf16 inputs, weights and outputs of convolutions and linear layers, fp32 accumulation.
    Bf16,
}

impl Precision {
    pub fn name(self) -> &'static str {
        match self {
            Precision::Fp32 => "fp32",
            Precision::Bf16 => "bf16",
        }
    }

    /// For `#[serde(skip_serializing_if)]`: configs and records written before precision existed
    /// were fp32, and an fp32 run's config stays as it was (grid cell hashes included).
    pub fn is_fp32(&self) -> bool {
        *self == Precision::Fp32
    }
}

impl std::fmt::Display for Precision {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

thread_local! {
    static CURRENT: std::cell::Cell<Precision> = const { std::cell::Cell::new(Precision::Fp32) };
}

/// Sets this thread's precision. Layers read it on the thread that runs them: a run sets it on
/// the thread that trains (and data-parallel replicas on theirs), so runs on other threads, tests
/// running in parallel among them, keep their own.
pub fn set(p: Precision) {
    CURRENT.set(p);
}

/// This thread's precision.
pub fn current() -> Precision {
    CURRENT.get()
}

/// Sets this thread's precision to `p` until the returned value is dropped.
#[must_use = "the precision reverts when the guard is dropped"]
pub fn scoped(p: Precision) -> Scoped {
    Scoped(CURRENT.replace(p), std::marker::PhantomData)
}

/// Restores the precision before [`scoped`] when dropped (also on a panic). Not `Send`: it
/// restores the thread it was made on.
pub struct Scoped(Precision, std::marker::PhantomData<*const ()>);

impl Drop for Scoped {
    fn drop(&mut self) {
        CURRENT.set(self.0);
    }
}

/// Runs `f` at precision `p` on this thread, then restores the one before (also on a panic).
pub fn with_precision<R>(p: Precision, f: impl FnOnce() -> R) -> R {
    let _restore = scoped(p);
    f()
}

/// Whether relnet's bf16 convolutions run its bf16 kernels here: AVX512-BF16 with AVX-512VL, the
/// direct kernels on and not capped below AVX-512, `RELNET_BF16=emulate` not set, and either
/// `RELNET_BF16=native` set or `vdpbf16ps` measured at 1.5x the fp32 FMA's arithmetic or more
/// (the bf16 kernels are slower than the fp32 kernels on rounded values below that); `Err` says
/// why not.
pub fn bf16_hardware() -> Result<(), String> {
    use crate::direct_bf16;
    if direct_bf16::chosen() {
        return Ok(());
    }
    if direct_bf16::emulation_asked() {
        return Err("RELNET_BF16=emulate asked for the emulated numerics".into());
    }
    if direct_bf16::hardware() {
        return Err(match direct_bf16::peaks() {
            Some((fp32, bf16)) => format!(
                "this CPU's vdpbf16ps peak ({bf16:.0} GFLOP/s a thread) is under {}x its fp32 FMA peak ({fp32:.0}), \
                 where the fp32 kernels on bf16-rounded values are the faster (RELNET_BF16=native uses the bf16 kernels)",
                direct_bf16::BF16_OVER_FP32
            ),
            None => "the bf16 kernels' peak could not be measured".into(),
        });
    }
    #[cfg(target_arch = "x86_64")]
    {
        if !std::is_x86_feature_detected!("avx512bf16") {
            return Err("this CPU has no AVX512-BF16 (avx512_bf16)".into());
        }
        if !std::is_x86_feature_detected!("avx512vl") {
            return Err("this CPU has no AVX-512VL (avx512vl)".into());
        }
        Err("RELNET_SIMD or RELNET_DIRECT_CONV switched the AVX-512 kernels off".into())
    }
    #[cfg(not(target_arch = "x86_64"))]
    Err("relnet has bf16 kernels for x86-64 with AVX512-BF16 only".into())
}

/// What bf16 means on this host, for the line a run prints once.
pub fn bf16_note() -> String {
    match bf16_hardware() {
        Ok(()) => format!(
            "bf16 on AVX512-BF16: 3x3 stride-1 convolutions in vdpbf16ps, the rest fp32 kernels on bf16 values{}",
            if crate::direct_bf16::native_asked() {
                " (RELNET_BF16=native)".to_string()
            } else if let Some((fp32, bf16)) = crate::direct_bf16::peaks() {
                format!(" (vdpbf16ps {bf16:.0} GFLOP/s a thread against fp32 FMA's {fp32:.0})")
            } else {
                String::new()
            }
        ),
        Err(why) => {
            format!("bf16 numerics on the fp32 kernels (operands rounded to bf16), not faster than fp32: {why}")
        }
    }
}

/// `t` rounded to bf16 (kept as f32) in bf16 mode, and its gradient rounded likewise; `t` itself
/// in fp32 mode or when `t` is not f32.
pub fn round<const D: usize>(t: Tensor<D>) -> Tensor<D> {
    if current() == Precision::Fp32 || t.dtype() != DType::F32 {
        return t;
    }
    t.cast(DType::BF16).cast(DType::F32)
}

/// `x W + b` of a linear layer at this thread's precision.
pub fn linear<const D: usize>(layer: &Linear, x: Tensor<D>) -> Tensor<D> {
    if current() == Precision::Fp32 {
        return layer.forward(x);
    }
    let bias = layer.bias.as_ref().map(|b| round(b.val()));
    round(burn::tensor::module::linear(round(x), round(layer.weight.val()), bias))
}

/// `x W + b` with the operands rounded at bf16 precision but not the output: the parts of a
/// layer that the caller sums and rounds once (Deep InfoMax's split first layer).
pub fn linear_operands<const D: usize>(layer: &Linear, x: Tensor<D>) -> Tensor<D> {
    if current() == Precision::Fp32 {
        return layer.forward(x);
    }
    let bias = layer.bias.as_ref().map(|b| round(b.val()));
    burn::tensor::module::linear(round(x), round(layer.weight.val()), bias)
}

/// `a b` of two matrices at this thread's precision.
pub fn matmul(a: Tensor<2>, b: Tensor<2>) -> Tensor<2> {
    round(round(a).matmul(round(b)))
}
