//! Views/s of the relational preset (K=4 views of M=64 images per iteration), on 32x32 and
//! 96x96 inputs, all cores (rayon). Run: `cargo bench -p relnet-augment --bench views`.

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use relnet_augment::{Preset, PresetParams, build_views};

fn images(n: usize, side: usize) -> Vec<Vec<u8>> {
    // Deterministic textured images (a cheap hash), so no stage is trivially constant.
    (0..n)
        .map(|i| (0..side * side * 3).map(|j| ((j as u32).wrapping_mul(2654435761) ^ (i as u32 * 97)) as u8).collect())
        .collect()
}

fn bench(c: &mut Criterion) {
    let (k, m) = (4, 64);
    let mut g = c.benchmark_group("relational_views");
    g.throughput(Throughput::Elements((k * m) as u64));
    for side in [32usize, 96] {
        let p = PresetParams { side, padding: 4, cutout: None, mean: [0.49, 0.48, 0.45], std: [0.25; 3] };
        let pipe = Preset::Relational.build(&p).unwrap();
        let imgs = images(m, side);
        let refs: Vec<&[u8]> = imgs.iter().map(|v| v.as_slice()).collect();
        let mut seed = 0u64;
        g.bench_function(format!("{side}x{side}_k{k}_m{m}"), |b| {
            b.iter(|| {
                seed += 1;
                build_views(&pipe, &refs, side, side, k, side, seed)
            })
        });
    }
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
