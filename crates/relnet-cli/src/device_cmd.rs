//! `relnet device`: check that a device works (a small computation on it).

use std::io::Write;


use crate::cli::DeviceArgs;

pub fn run(args: DeviceArgs, out: &mut dyn Write) -> anyhow::Result<()> {
    let device = args.device.device()?;
    let t = burn::tensor::Tensor::<2>::ones([64, 64], &device);
    let sum: f32 = t.clone().matmul(t).sum().into_scalar::<f32>();
    anyhow::ensure!(sum == 64.0 * 64.0 * 64.0, "device {} computed a wrong result ({sum})", args.device);
    writeln!(out, "device {} ok (cuda compiled in: {})", args.device, relnet_core::device::CUDA_COMPILED)?;
    Ok(())
}
