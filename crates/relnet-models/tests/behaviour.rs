//! Train/eval behaviour, gradients, and saving: burnpack and safetensors round trips.

use burn::module::{Module, ModuleVisitor, Param};
use burn::prelude::*;
use relnet_models::io::{export_safetensors, import_safetensors, load_backbone, save_backbone};
use relnet_models::*;

fn input(device: &Device, n: usize, side: usize) -> Tensor<4> {
    device.seed(7);
    Tensor::<4>::random([n, 3, side, side], burn::tensor::Distribution::Normal(0.0, 1.0), device)
}

fn max_diff(a: Tensor<2>, b: Tensor<2>) -> f32 {
    (a - b).abs().max().into_scalar::<f32>()
}

#[test]
fn eval_uses_running_stats_and_is_deterministic() {
    let device = Device::flex().autodiff();
    let b = BackboneKind::Conv4.init(&device);
    let x = input(&device, 8, 32);
    // A training-mode forward updates BN running statistics (and uses batch statistics).
    let train_out = b.forward(x.clone());
    let eval = b.valid();
    let xv = x.clone().inner();
    let e1 = eval.forward(xv.clone());
    let e2 = eval.forward(xv);
    assert_eq!(max_diff(e1.clone(), e2), 0.0);
    assert!(max_diff(train_out.inner(), e1) > 1e-3, "eval mode must use running statistics");
}

struct GradCheck<'a> {
    grads: &'a burn::optim::GradientsParams,
    path: Vec<String>,
    missing: Vec<String>,
    checked: usize,
}

impl ModuleVisitor for GradCheck<'_> {
    fn enter_module(&mut self, name: &str, _c: &str) {
        self.path.push(name.to_string());
    }
    fn exit_module(&mut self, _n: &str, _c: &str) {
        self.path.pop();
    }
    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<D>>) {
        if self.path.last().is_some_and(|n| n.starts_with("running_")) {
            return;
        }
        self.checked += 1;
        let ok = self.grads.get::<D>(param.id).is_some_and(|g| g.abs().sum().into_scalar::<f32>() > 0.0);
        if !ok {
            self.missing.push(self.path.join("."));
        }
    }
}

#[test]
fn gradients_reach_every_parameter() {
    let device = Device::flex().autodiff();
    for kind in [BackboneKind::Conv4, BackboneKind::Resnet8] {
        let b = kind.init(&device);
        let head = MlpHead::relation(2 * kind.features(), &device);
        let f = b.forward(input(&device, 4, 32));
        let pairs = Tensor::cat(vec![f.clone(), f.flip([0])], 1);
        let loss = head.forward(pairs).powi_scalar(2).mean();
        let grads = burn::optim::GradientsParams::from_grads(loss.backward(), &b);
        let mut v = GradCheck { grads: &grads, path: vec![], missing: vec![], checked: 0 };
        b.visit(&mut v);
        assert!(v.checked > 10, "{kind}: visited {}", v.checked);
        assert!(v.missing.is_empty(), "{kind}: no gradient for {:?}", v.missing);
    }
}

#[test]
fn burnpack_and_safetensors_round_trips() {
    let device = Device::flex();
    let dir = tempfile::tempdir().unwrap();
    for kind in [BackboneKind::Conv4, BackboneKind::Resnet8] {
        // Train a step's worth of BN statistics so running stats are not the init values.
        let ad = Device::flex().autodiff();
        let b = kind.init(&ad);
        let _ = b.forward(input(&ad, 4, 32));
        let b = b.valid();
        let x = input(&device, 3, 32);
        let want = b.forward(x.clone());

        let bpk = dir.path().join(format!("{kind}.bpk"));
        save_backbone(&b, kind, &bpk).unwrap();
        let (loaded, k) = load_backbone(&bpk, &device).unwrap();
        assert_eq!(k, kind);
        assert_eq!(max_diff(loaded.valid().forward(x.clone()), want.clone()), 0.0, "{kind} burnpack");

        let st = dir.path().join(format!("{kind}.safetensors"));
        export_safetensors(&b, kind, &st).unwrap();
        let (imported, k) = import_safetensors(&st, None, &device).unwrap();
        assert_eq!(k, kind);
        assert_eq!(max_diff(imported.valid().forward(x), want), 0.0, "{kind} safetensors");
        let names = safetensor_names(&st);
        match kind {
            BackboneKind::Conv4 => {
                for n in [
                    "layer1.conv.weight",
                    "layer4.bn.weight",
                    "layer4.bn.bias",
                    "layer2.bn.running_mean",
                    "layer3.bn.running_var",
                ] {
                    assert!(names.contains(&n.to_string()), "{n} not in {names:?}");
                }
            }
            _ => {
                for n in [
                    "conv1.weight",
                    "bn1.weight",
                    "layer1.0.conv1.weight",
                    "layer2.0.downsample.0.weight",
                    "layer3.0.downsample.1.running_var",
                ] {
                    assert!(names.contains(&n.to_string()), "{n} not in {names:?}");
                }
            }
        }
    }
}

fn safetensor_names(path: &std::path::Path) -> Vec<String> {
    let bytes = std::fs::read(path).unwrap();
    let n = u64::from_le_bytes(bytes[..8].try_into().unwrap()) as usize;
    let v: serde_json::Value = serde_json::from_slice(&bytes[8..8 + n]).unwrap();
    v.as_object().unwrap().keys().filter(|k| *k != "__metadata__").cloned().collect()
}

#[test]
fn bad_artifacts_are_named_errors() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("junk.bpk");
    std::fs::write(&p, b"not a model").unwrap();
    let e = load_backbone(&p, &Device::flex()).unwrap_err().to_string();
    assert!(e.contains("junk.bpk"), "{e}");
    let s = dir.path().join("junk.safetensors");
    std::fs::write(&s, 1_000_000u64.to_le_bytes()).unwrap();
    let e = import_safetensors(&s, None, &Device::flex()).unwrap_err().to_string();
    assert!(e.contains("junk.safetensors") && e.contains("header"), "{e}");
    assert!(
        load_backbone(&dir.path().join("none.bpk"), &Device::flex()).unwrap_err().to_string().contains("no such file")
    );
}
