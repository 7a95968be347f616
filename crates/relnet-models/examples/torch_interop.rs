//! Helper for `tests/torch/interop.py`, which checks that PyTorch loads relnet's safetensors
//! export and that relnet imports a PyTorch state dict, with identical outputs both ways.
//!
//! `cargo run -p relnet-models --example torch_interop -- export DIR`: for conv4 and resnet8,
//! writes `DIR/<kind>.safetensors` (BN statistics updated by one training forward), a fixed
//! input `DIR/<kind>_input.f32` and relnet's eval-mode features `DIR/<kind>_relnet.f32`.
//! `... -- import DIR`: reads `DIR/<kind>_torch.safetensors` (saved by PyTorch) and writes
//! relnet's features of the same input to `DIR/<kind>_imported.f32`.

use std::path::Path;

use burn::prelude::*;
use relnet_models::BackboneKind;
use relnet_models::io::{export_safetensors, import_safetensors};

fn write_f32(path: &Path, t: Tensor<2>) {
    let v = t.into_data().try_to_vec::<f32>().unwrap();
    std::fs::write(path, v.iter().flat_map(|x| x.to_le_bytes()).collect::<Vec<u8>>()).unwrap();
}

fn input(device: &Device) -> Tensor<4> {
    device.seed(3);
    Tensor::<4>::random([2, 3, 32, 32], burn::tensor::Distribution::Normal(0.0, 1.0), device)
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let (mode, dir) = (args[0].as_str(), Path::new(&args[1]));
    let device = Device::flex();
    for kind in [BackboneKind::Conv4, BackboneKind::Resnet8] {
        let x = input(&device);
        if mode == "export" {
            let ad = Device::flex().autodiff();
            ad.seed(5);
            let b = kind.init(&ad);
            let _ = b.forward(input(&ad).mul_scalar(2.0).add_scalar(0.5));
            let b = b.valid();
            export_safetensors(&b, kind, &dir.join(format!("{kind}.safetensors"))).unwrap();
            let v = x.clone().into_data().try_to_vec::<f32>().unwrap();
            std::fs::write(
                dir.join(format!("{kind}_input.f32")),
                v.iter().flat_map(|x| x.to_le_bytes()).collect::<Vec<u8>>(),
            )
            .unwrap();
            write_f32(&dir.join(format!("{kind}_relnet.f32")), b.forward(x));
        } else {
            let (b, _) =
                import_safetensors(&dir.join(format!("{kind}_torch.safetensors")), Some(kind), &device).unwrap();
            write_f32(&dir.join(format!("{kind}_imported.f32")), b.valid().forward(x));
        }
    }
}
