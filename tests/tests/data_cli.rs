//! End-to-end tests of `relnet data ...` on data written in the official formats.

use std::path::Path;

use relnet_core::data::{cifar, idx};
use relnet_tests::{relnet, shared_data};

fn image(seed: u8) -> Vec<u8> {
    (0..3072).map(|i| (i as u8).wrapping_mul(13).wrapping_add(seed)).collect()
}

/// A small CIFAR-10 in the official binary layout: 5 train files of 20 records, 1 test file.
fn write_cifar10_binary(root: &Path) {
    let dir = root.join("cifar-10-batches-bin");
    std::fs::create_dir_all(&dir).unwrap();
    for f in cifar::cifar10_split_files(&dir, true).iter().chain(&cifar::cifar10_split_files(&dir, false)) {
        let labels: Vec<Vec<u8>> = (0..20).map(|i| vec![(i % 10) as u8]).collect();
        let imgs: Vec<Vec<u8>> = (0..20).map(|i| image(i as u8)).collect();
        cifar::write_records(f, &labels, &imgs).unwrap();
    }
}

#[test]
fn info_on_official_cifar10_binary() {
    let root = tempfile::tempdir().unwrap();
    write_cifar10_binary(root.path());
    let r = relnet(&["data", "info", "cifar10", "--data-root", root.path().to_str().unwrap()]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert!(r.stdout.contains("split train: 100 images"), "{}", r.stdout);
    assert!(r.stdout.contains("split test: 20 images"), "{}", r.stdout);
    assert!(r.stdout.contains("per class: 10..10 images"), "{}", r.stdout);
    assert!(r.stdout.contains("classes (10): airplane, automobile"), "{}", r.stdout);
}

#[test]
fn missing_and_corrupt_datasets_are_clear_errors() {
    let root = tempfile::tempdir().unwrap();
    let r = relnet(&["data", "info", "cifar100", "--data-root", root.path().to_str().unwrap()]);
    assert_eq!(r.code, 1);
    assert!(r.stderr.contains("cifar-100-binary") && r.stderr.contains("cifar-100-binary.tar.gz"), "{}", r.stderr);

    write_cifar10_binary(root.path());
    let f = root.path().join("cifar-10-batches-bin/data_batch_3.bin");
    let bytes = std::fs::read(&f).unwrap();
    std::fs::write(&f, &bytes[..bytes.len() - 100]).unwrap();
    let r = relnet(&["data", "info", "cifar10", "--split", "train", "--data-root", root.path().to_str().unwrap()]);
    assert_eq!(r.code, 1);
    assert!(r.stderr.contains("data_batch_3.bin") && r.stderr.contains("not a whole number"), "{}", r.stderr);
    // The test split is intact and still loads.
    let r = relnet(&["data", "info", "cifar10", "--split", "test", "--data-root", root.path().to_str().unwrap()]);
    assert_eq!(r.code, 0, "{}", r.stderr);

    let r = relnet(&["data", "info", "imagenet-1k"]);
    assert_eq!(r.code, 1);
    assert!(r.stderr.contains("unknown dataset `imagenet-1k`"), "{}", r.stderr);
}

#[test]
fn info_on_mnist_idx_written_here() {
    let root = tempfile::tempdir().unwrap();
    let dir = root.path().join("fashion-mnist");
    std::fs::create_dir_all(&dir).unwrap();
    let (tx, ty) = idx::TRAIN_STEMS;
    let (sx, sy) = idx::TEST_STEMS;
    idx::write_idx(&dir.join(format!("{tx}.gz")), &[30, 28, 28], &vec![128; 30 * 784], true).unwrap();
    idx::write_idx(&dir.join(format!("{ty}.gz")), &[30], &(0..30).map(|i| (i % 10) as u8).collect::<Vec<_>>(), true)
        .unwrap();
    idx::write_idx(&dir.join(sx), &[10, 28, 28], &vec![0; 10 * 784], false).unwrap();
    idx::write_idx(&dir.join(sy), &[10], &(0..10).collect::<Vec<u8>>(), false).unwrap();
    let r = relnet(&["data", "info", "fashion-mnist", "--data-root", root.path().to_str().unwrap()]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert!(r.stdout.contains("split train: 30 images") && r.stdout.contains("split test: 10 images"), "{}", r.stdout);
    assert!(r.stdout.contains("28x28x3") && r.stdout.contains("loaded as 3 identical channels"), "{}", r.stdout);
    assert!(r.stdout.contains("mean (0.5020, 0.5020, 0.5020)"), "{}", r.stdout);
}

#[test]
fn synthetic_info_and_preview_with_config() {
    let r = relnet(&["data", "info", "synthetic"]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert!(r.stdout.contains("split train: 5000 images") && r.stdout.contains("per class: 500..500"), "{}", r.stdout);
    assert!(r.stdout.contains("split test: 1000 images"), "{}", r.stdout);

    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("p.toml");
    std::fs::write(&cfg, "per_class = 4\nsplit = \"test\"\n").unwrap();
    let png = dir.path().join("grid.png");
    let r = relnet(&[
        "data",
        "preview",
        "synthetic",
        "--config",
        cfg.to_str().unwrap(),
        "--scale",
        "2",
        "--out",
        png.to_str().unwrap(),
    ]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert!(r.stderr.contains("per_class = 4") && r.stderr.contains("scale = 2"), "{}", r.stderr);
    let (w, h) = image_dims(&png);
    assert_eq!((w, h), (4 * 33 * 2, 10 * 33 * 2));
    let saved = std::fs::read_to_string(dir.path().join("grid.png.config.toml")).unwrap();
    assert!(saved.contains("split = \"test\"") && saved.contains("per_class = 4"), "{saved}");

    std::fs::write(&cfg, "per_clas = 4\n").unwrap();
    let r = relnet(&["data", "preview", "--config", cfg.to_str().unwrap(), "--out", png.to_str().unwrap()]);
    assert_eq!(r.code, 1);
    assert!(r.stderr.contains("p.toml") && r.stderr.contains("per_clas"), "{}", r.stderr);
    let r = relnet(&["data", "preview", "--per-class", "0", "--out", png.to_str().unwrap()]);
    assert_eq!(r.code, 1);
    assert!(r.stderr.contains("`per_class`") && r.stderr.contains("out of range"), "{}", r.stderr);
}

fn image_dims(png: &Path) -> (u32, u32) {
    let b = std::fs::read(png).unwrap();
    assert_eq!(&b[1..4], b"PNG");
    (u32::from_be_bytes(b[16..20].try_into().unwrap()), u32::from_be_bytes(b[20..24].try_into().unwrap()))
}

#[test]
fn usage_help_and_device_errors() {
    let r = relnet(&["--help"]);
    assert_eq!(r.code, 0);
    assert!(r.stdout.contains("data") && r.stdout.contains("device"), "{}", r.stdout);
    let r = relnet(&["data", "infoo"]);
    assert_eq!(r.code, 2);
    let r = relnet(&["device", "--device", "tpu"]);
    assert_eq!(r.code, 2);
    assert!(r.stderr.contains("unknown device `tpu`"), "{}", r.stderr);
    let r = relnet(&["device", "--device", "cpu"]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    if !relnet_core::device::CUDA_COMPILED {
        let r = relnet(&["device", "--device", "cuda:1"]);
        assert_eq!(r.code, 1);
        assert!(
            r.stderr.contains("built without cuda support") && r.stderr.contains("--features cuda"),
            "{}",
            r.stderr
        );
    }
    if !relnet_core::device::WGPU_COMPILED {
        let r = relnet(&["device", "--device", "wgpu:0"]);
        assert_eq!(r.code, 1);
        assert!(
            r.stderr.contains("built without wgpu support") && r.stderr.contains("--features wgpu"),
            "{}",
            r.stderr
        );
    }
    // Without --device: what this build offers.
    let r = relnet(&["device"]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert!(r.stdout.contains("flex (CPU)") && r.stdout.contains("cuda") && r.stdout.contains("wgpu"), "{}", r.stdout);
    assert_eq!(
        r.stdout.contains("not built: `cargo build --release --features cuda`"),
        !relnet_core::device::CUDA_COMPILED,
        "{}",
        r.stdout
    );
    // The GPU check's own command, on the CPU, speed only and small.
    let r = relnet(&[
        "bench",
        "device",
        "--device",
        "cpu",
        "--no-conformance",
        "--steps",
        "1",
        "--warmup",
        "1",
        "--k",
        "2",
        "--backbones",
        "conv4",
    ]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert!(
        r.stdout.contains("pretraining speed")
            && r.stdout.contains("conv4")
            && r.stdout.contains("conformance skipped"),
        "{}",
        r.stdout
    );
}

/// The real data of ../shared/data: CIFAR-10 (JPEG image folders) and MNIST (gzip IDX).
#[test]
fn shared_cifar10_jpeg_and_mnist() {
    let Some(shared) = shared_data() else { return };
    let root = tempfile::tempdir().unwrap();
    let cifar = root.path().join("cifar10");
    std::fs::create_dir_all(&cifar).unwrap();
    let f = std::fs::File::open(shared.join("cifar10-jpg.tar.gz")).unwrap();
    tar::Archive::new(flate2::read::GzDecoder::new(f)).unpack(&cifar).unwrap();
    #[cfg(unix)]
    std::os::unix::fs::symlink(std::fs::canonicalize(shared.join("mnist")).unwrap(), root.path().join("mnist"))
        .unwrap();

    let r = relnet(&["data", "info", "cifar10", "--data-root", root.path().to_str().unwrap()]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert!(
        r.stdout.contains("split train: 50000 images") && r.stdout.contains("split test: 10000 images"),
        "{}",
        r.stdout
    );
    assert!(r.stdout.contains("per class: 5000..5000") && r.stdout.contains("per class: 1000..1000"), "{}", r.stdout);
    // Means of the decoded JPEG train set: 0.4913 / 0.4821 / 0.4465 (data README), within 0.002.
    let line = r.stdout.lines().skip_while(|l| !l.starts_with("split train")).find(|l| l.contains("mean (")).unwrap();
    let means: Vec<f64> =
        line.split('(').nth(1).unwrap().split(')').next().unwrap().split(", ").map(|v| v.parse().unwrap()).collect();
    for (m, want) in means.iter().zip([0.4913, 0.4821, 0.4465]) {
        assert!((m - want).abs() < 0.002, "{line}");
    }

    let r = relnet(&["data", "info", "mnist", "--data-root", root.path().to_str().unwrap()]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert!(
        r.stdout.contains("split train: 60000 images") && r.stdout.contains("split test: 10000 images"),
        "{}",
        r.stdout
    );
}
