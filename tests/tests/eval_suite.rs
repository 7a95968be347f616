//! The rest of the evaluation suite end to end: retrieval with its figure, fewer labels, embeddings,
//! transfer and grain on CIFAR-100 files in the official binary format, and the plots.

use std::path::{Path, PathBuf};

use relnet_core::data::registry::lookup;
use relnet_core::data::{DataRoot, cifar};
use relnet_tests::relnet;

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

fn pretrain(dir: &Path, name: &str) -> PathBuf {
    let out = dir.join(name);
    let r = relnet(&["pretrain", "--limit-images", "256", "--k", "2", "--batch-size", "32", "--epochs", "2", "--out", s(&out)]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    out.join("backbone.bpk")
}

fn value(stdout: &str, key: &str) -> f64 {
    let line = stdout.lines().find(|l| l.starts_with(&format!("{key}="))).unwrap_or_else(|| panic!("no {key} in {stdout}"));
    line[key.len() + 1..].parse().unwrap()
}

fn output(stdout: &str, key: &str) -> PathBuf {
    let line = stdout.lines().find(|l| l.starts_with(&format!("{key}="))).unwrap_or_else(|| panic!("no {key} in {stdout}"));
    PathBuf::from(&line[key.len() + 1..])
}

/// The record of the last evaluation (its path is printed on stderr).
fn record(stderr: &str) -> serde_json::Value {
    let line = stderr.lines().find(|l| l.starts_with("record: ")).unwrap_or_else(|| panic!("no record in {stderr}"));
    serde_json::from_str(&std::fs::read_to_string(&line[8..]).unwrap()).unwrap()
}

fn png_size(p: &Path) -> (u32, u32) {
    let img = image::open(p).unwrap_or_else(|e| panic!("{}: not a PNG: {e}", p.display()));
    (img.width(), img.height())
}

#[test]
fn retrieval_embeddings_and_plots_on_a_frozen_backbone() {
    let dir = tempfile::tempdir().unwrap();
    let bb = pretrain(dir.path(), "rel");
    let before = std::fs::read(&bb).unwrap();

    let fig = dir.path().join("neighbours.png");
    let r = relnet(&["eval", "retrieval", "--backbone", s(&bb), "--show", "3", "--out", s(&fig)]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    let rec = record(&r.stderr);
    for k in [1, 5, 10, 20, 50] {
        let p = rec["metrics"][format!("precision_at_{k}")].as_f64().unwrap();
        let rc = rec["metrics"][format!("recall_at_{k}")].as_f64().unwrap();
        assert!((0.0..=100.0).contains(&p) && (0.0..=100.0).contains(&rc), "{rec}");
    }
    let map = value(&r.stdout, "map");
    // Ten balanced classes: a ranking by chance has mAP and P@k of about 10%. Features of
    // shapes beat it, and the nearest neighbours are more often right than the 50th.
    let p = |k: usize| value(&r.stdout, &format!("precision_at_{k}"));
    assert!(map > 10.5 && map <= 100.0, "mAP {map}");
    assert!(p(1) > p(50) && p(50) > 10.5, "P@1 {} P@50 {}", p(1), p(50));
    assert_eq!(rec["metrics"]["queries"].as_f64(), Some(1000.0));
    assert_eq!(rec["metrics"]["gallery_images"].as_f64(), Some(5000.0));
    // The figure: 3 rows of the query and 10 neighbours, 32x32 images drawn at 2x.
    assert_eq!(output(&r.stdout, "figure"), fig);
    assert_eq!(png_size(&fig), relnet_eval::plot::retrieval::grid_size(3, 10, 32, 2));
    // The test split as its own gallery: no query finds itself, so P@1 < 100 is possible but
    // the figure is not needed.
    let r = relnet(&["eval", "retrieval", "--backbone", s(&bb), "--gallery", "test", "--distance", "euclidean", "--k", "1,10"]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert_eq!(record(&r.stderr)["metrics"]["gallery_images"].as_f64(), Some(1000.0));
    assert!(record(&r.stderr)["metrics"].get("precision_at_50").is_none());
    // --show needs --out.
    let r = relnet(&["eval", "retrieval", "--backbone", s(&bb), "--show", "2"]);
    assert_eq!(r.code, 1);
    assert!(r.stderr.contains("out"), "{}", r.stderr);
    let r = relnet(&["eval", "retrieval", "--backbone", s(&bb), "--queries", "5,5000", "--out", s(&fig)]);
    assert_eq!(r.code, 1);
    assert!(r.stderr.contains("5000") && r.stderr.contains("1000 images"), "{}", r.stderr);

    // Embeddings: safetensors with the features and labels of the split.
    let r = relnet(&["eval", "embed", "--backbone", s(&bb), "--split", "test"]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    let emb = output(&r.stdout, "embeddings");
    let (f, meta) = relnet_eval::embed::read_embeddings(&emb).unwrap();
    assert_eq!((f.n, f.dim, meta.dataset.as_str(), meta.split.as_str()), (1000, 64, "synthetic", "test"));
    assert_eq!(meta.class_names.len(), 10);
    assert_eq!(f.labels.iter().filter(|&&l| l == 3).count(), 100, "labels kept");

    assert_eq!(std::fs::read(&bb).unwrap(), before, "the frozen backbone is bit-identical after retrieval and embed");

    // t-SNE of the embeddings file, and of the backbone directly (features from the cache).
    let tsne = dir.path().join("tsne.png");
    let r = relnet(&["plot", "tsne", s(&emb), "--limit", "300", "--iterations", "300", "--out", s(&tsne)]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert_eq!(png_size(&tsne), (1100, 900));
    let r = relnet(&["plot", "tsne", "--backbone", s(&bb), "--dataset", "synthetic", "--limit", "200", "--iterations", "250"]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert!(r.stderr.contains("from the cache"), "{}", r.stderr);
    assert_eq!(png_size(Path::new(r.stdout.trim())), (1100, 900));

    // Training curves of two runs on one figure.
    let other = pretrain(dir.path(), "rel2");
    let curves = dir.path().join("curves.png");
    let r = relnet(&["plot", "metrics", s(bb.parent().unwrap()), s(other.parent().unwrap()), "--out", s(&curves)]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert_eq!(png_size(&curves), relnet_eval::plot::metrics::SIZE);
    assert!(r.stderr.contains("rel: 2 epochs") && r.stderr.contains("rel2: 2 epochs"), "{}", r.stderr);
    let r = relnet(&["plot", "metrics", s(dir.path())]);
    assert_eq!(r.code, 1);
    assert!(r.stderr.contains("metrics.jsonl"), "{}", r.stderr);
}

#[test]
fn fewer_labels_are_stratified_and_recorded() {
    let dir = tempfile::tempdir().unwrap();
    let bb = pretrain(dir.path(), "rel");
    let before = std::fs::read(&bb).unwrap();
    let r = relnet(&["eval", "linear", "--backbone", s(&bb), "--epochs", "2", "--labels", "10%"]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    let rec = record(&r.stderr);
    assert_eq!(rec["metrics"]["train_images"].as_f64(), Some(500.0), "10% of 500 per class: {rec}");
    assert_eq!(rec["metrics"]["label_fraction"].as_f64(), Some(0.1));
    assert_eq!(rec["options"]["labels"], "10%");
    assert_eq!(rec["metrics"]["eval_images"].as_f64(), Some(1000.0), "measured on the whole test split");
    let r = relnet(&["eval", "finetune", "--backbone", s(&bb), "--epochs", "1", "--labels", "3-per-class"]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    let rec = record(&r.stderr);
    assert_eq!(rec["metrics"]["train_images"].as_f64(), Some(30.0), "{rec}");
    assert!(r.stderr.contains("fine-tuning on 30 labelled images of 5000"), "{}", r.stderr);
    assert_eq!(std::fs::read(&bb).unwrap(), before, "fine-tuning writes a new backbone and leaves the artifact as it was");
    // The same budget and seed pick the same images: the same probe again gives the same figure.
    let a = relnet(&["eval", "linear", "--backbone", s(&bb), "--epochs", "2", "--labels", "2-per-class", "--seed", "4"]);
    let b = relnet(&["eval", "linear", "--backbone", s(&bb), "--epochs", "2", "--labels", "2-per-class", "--seed", "4"]);
    assert_eq!(value(&a.stdout, "test_accuracy"), value(&b.stdout, "test_accuracy"));
    // Nonsense budgets are usage errors; combining with --limit-images is refused.
    let r = relnet(&["eval", "linear", "--backbone", s(&bb), "--labels", "150%"]);
    assert_eq!(r.code, 2, "{}", r.stderr);
    assert!(r.stderr.contains("150"), "{}", r.stderr);
    let r = relnet(&["eval", "finetune", "--backbone", s(&bb), "--labels", "1%", "--limit-images", "100"]);
    assert_eq!(r.code, 2, "{}", r.stderr);
}

/// CIFAR-100 in the official binary layout: `n` records of (coarse, fine, 3072 bytes).
fn write_cifar100(root: &Path, train: usize, test: usize) {
    let dir = root.join("cifar-100-binary");
    std::fs::create_dir_all(&dir).unwrap();
    for (file, n, salt) in [("train.bin", train, 3u8), ("test.bin", test, 7u8)] {
        let labels: Vec<Vec<u8>> = (0..n).map(|i| vec![(i % 20) as u8, (i % 100) as u8]).collect();
        // Each coarse class gets its own colour cast, so there is something to learn.
        let images: Vec<Vec<u8>> = (0..n)
            .map(|i| (0..3072).map(|j| ((j / 1024) as u8 * 60).wrapping_add((i % 20) as u8 * 11).wrapping_add(((j * 7 + i) as u8).wrapping_mul(salt) / 8)).collect())
            .collect();
        cifar::write_records(&dir.join(file), &labels, &images).unwrap();
    }
    std::fs::write(dir.join("coarse_label_names.txt"), (0..20).map(|i| format!("super_{i}\n")).collect::<String>()).unwrap();
    std::fs::write(dir.join("fine_label_names.txt"), (0..100).map(|i| format!("fine_{i}\n")).collect::<String>()).unwrap();
}

/// The preprocessing string of the cached features of `split`, read from the cache file header.
fn cached_preprocessing(backbone: &Path, dataset: &str, split: &str) -> String {
    for e in std::fs::read_dir(backbone.parent().unwrap().join("features")).unwrap() {
        let b = std::fs::read(e.unwrap().path()).unwrap();
        let n = u32::from_le_bytes(b[8..12].try_into().unwrap()) as usize;
        let h: serde_json::Value = serde_json::from_slice(&b[12..12 + n]).unwrap();
        if h["key"]["dataset"] == dataset && h["key"]["split"] == split {
            return h["key"]["preprocessing"].as_str().unwrap().to_string();
        }
    }
    panic!("no cached {dataset} {split} features");
}

#[test]
fn transfer_and_grain_probe_another_dataset_with_its_own_normalisation() {
    let dir = tempfile::tempdir().unwrap();
    let bb = pretrain(dir.path(), "rel");
    let root = dir.path().join("data");
    write_cifar100(&root, 400, 100);
    for (dataset, classes) in [("cifar100", 100.0), ("cifar100-20", 20.0)] {
        let r = relnet(&["eval", "linear", "--backbone", s(&bb), "--dataset", dataset, "--data-root", s(&root), "--epochs", "3"]);
        assert_eq!(r.code, 0, "{}", r.stderr);
        let rec = record(&r.stderr);
        assert_eq!(rec["source_dataset"], "synthetic", "{rec}");
        assert_eq!(rec["dataset"], dataset);
        assert_eq!(rec["metrics"]["eval_images"].as_f64(), Some(100.0));
        let acc = value(&r.stdout, "test_accuracy");
        assert!((0.0..=100.0).contains(&acc) && classes > 0.0);
        // The features were computed with the target's normalisation, not the source's.
        let info = lookup(dataset).unwrap();
        let (mean, std) = info.norm_stats_reusing(&DataRoot(root.clone()), None).unwrap();
        let pre = cached_preprocessing(&bb, dataset, "test");
        assert!(pre.contains(&format!("mean={mean:?} std={std:?}")), "{pre} vs {mean:?} {std:?}");
        let synth = lookup("synthetic").unwrap().norm_stats_reusing(&DataRoot(root.clone()), None).unwrap();
        assert_ne!(synth.0, mean, "the source's normalisation differs");
    }
    // Grain with fewer labels: 2 per coarse class.
    let r = relnet(&["eval", "linear", "--backbone", s(&bb), "--dataset", "cifar100-20", "--data-root", s(&root), "--epochs", "2", "--labels", "2-per-class"]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert_eq!(record(&r.stderr)["metrics"]["train_images"].as_f64(), Some(40.0));
}
