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

/// Single-threaded cost of each stage on one 32x32 image (where the time goes).
fn stages(c: &mut Criterion) {
    use rand::SeedableRng;
    use relnet_augment::*;
    let img = RgbImage::new(32, 32, images(1, 32).remove(0));
    let mut rng = AugRng::seed_from_u64(1);
    let mut g = c.benchmark_group("stage_32x32");
    let rrc = RandomResizedCrop::new(32, (0.08, 1.0), (0.75, 4.0 / 3.0)).unwrap();
    g.bench_function("random_resized_crop", |b| b.iter(|| rrc.apply(img.clone(), &mut rng)));
    g.bench_function("hflip", |b| {
        b.iter(|| {
            let mut i = img.clone();
            hflip(&mut i);
            i
        })
    });
    g.bench_function("brightness", |b| {
        b.iter(|| {
            let mut i = img.clone();
            adjust_brightness(&mut i, 1.3);
            i
        })
    });
    g.bench_function("contrast", |b| {
        b.iter(|| {
            let mut i = img.clone();
            adjust_contrast(&mut i, 1.3);
            i
        })
    });
    g.bench_function("saturation", |b| {
        b.iter(|| {
            let mut i = img.clone();
            adjust_saturation(&mut i, 1.3);
            i
        })
    });
    g.bench_function("hue", |b| {
        b.iter(|| {
            let mut i = img.clone();
            adjust_hue(&mut i, 0.1);
            i
        })
    });
    g.bench_function("grayscale", |b| {
        b.iter(|| {
            let mut i = img.clone();
            Grayscale::apply_in_place(&mut i);
            i
        })
    });
    let norm = Normalize::new([0.49, 0.48, 0.45], [0.25; 3]).unwrap();
    let mut out = vec![0f32; 3 * 32 * 32];
    g.bench_function("normalize", |b| b.iter(|| norm.write(&img, &mut out)));
    g.bench_function("rng_seed", |b| b.iter(|| view_rng(7, 1, 2)));
    g.finish();
}

criterion_group!(benches, bench, stages);
criterion_main!(benches);
