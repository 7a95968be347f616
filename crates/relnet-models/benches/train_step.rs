//! Forward + backward images/s of Conv-4 and ResNet-32 at batch 256 on 32x32 input, CPU
//! (burn-flex). Run: `cargo bench -p relnet-models --bench train_step`.

use burn::prelude::*;
use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use relnet_models::BackboneKind;

fn bench(c: &mut Criterion) {
    let device = Device::flex().autodiff();
    let batch = 256;
    let mut g = c.benchmark_group("forward_backward_b256_32x32");
    g.sample_size(10);
    g.throughput(Throughput::Elements(batch as u64));
    for kind in [BackboneKind::Conv4, BackboneKind::Resnet32] {
        let model = kind.init(&device);
        device.seed(1);
        let x = Tensor::<4>::random([batch, 3, 32, 32], burn::tensor::Distribution::Normal(0.0, 1.0), &device);
        g.bench_function(kind.name(), |b| {
            b.iter(|| {
                let loss = model.forward(x.clone()).powi_scalar(2).mean();
                loss.backward()
            })
        });
    }
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
