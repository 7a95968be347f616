//! `relnet pretrain` and `relnet eval linear` end to end on the embedded dataset (kept small).

use relnet_tests::relnet;

fn small(out: &str, extra: &[&str]) -> Vec<String> {
    let mut v: Vec<String> = [
        "pretrain",
        "--dataset",
        "synthetic",
        "--limit-images",
        "192",
        "--k",
        "3",
        "--batch-size",
        "32",
        "--epochs",
        "2",
        "--loss",
        "bce",
        "--out",
        out,
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    v.extend(extra.iter().map(|s| s.to_string()));
    v
}

fn run(args: &[String]) -> relnet_tests::Run {
    relnet(&args.iter().map(String::as_str).collect::<Vec<_>>())
}

#[test]
fn pretrain_writes_config_metrics_backbone_and_probe_reads_it() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("run");
    let out_s = out.to_str().unwrap();
    let r = run(&small(out_s, &[]));
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert!(r.stderr.contains("k = 3") && r.stderr.contains("ETA"), "{}", r.stderr);
    assert!(out.join("backbone.bpk").is_file() && out.join("config.toml").is_file());
    let metrics = std::fs::read_to_string(out.join("metrics.jsonl")).unwrap();
    assert_eq!(metrics.lines().count(), 2, "{metrics}");
    assert!(metrics.contains("\"metric\":\"relation accuracy\""));
    // The first epoch's loss is still near binary cross-entropy's chance value ln 2 (0.693):
    // measured 0.680-0.697 (seeds 1-6). 15% either side, as in methods_cli.rs: a loss summed over
    // the pairs, or in another base, is off by 30% or more.
    let first: serde_json::Value = serde_json::from_str(metrics.lines().next().unwrap()).unwrap();
    let loss = first["loss"].as_f64().unwrap();
    assert!((loss - 2f64.ln()).abs() <= 0.15 * 2f64.ln(), "first-epoch loss {loss} against ln 2");
    let cfg = std::fs::read_to_string(out.join("config.toml")).unwrap();
    assert!(cfg.contains("epochs = 2") && cfg.contains("loss = \"bce\""), "{cfg}");

    // A second run into the same folder needs --resume; a finished run has nothing to do.
    let r = run(&small(out_s, &[]));
    assert_eq!(r.code, 1);
    assert!(r.stderr.contains("--resume"), "{}", r.stderr);
    let r = run(&small(out_s, &["--resume"]));
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert!(r.stderr.contains("already finished"), "{}", r.stderr);
    // Resuming with other settings is refused.
    let mut other = small(out_s, &["--resume"]);
    other[10] = "5".into();
    let r = run(&other);
    assert_eq!(r.code, 1);
    assert!(r.stderr.contains("different configuration"), "{}", r.stderr);

    let bb = out.join("backbone.bpk");
    let r =
        relnet(&["eval", "linear", "--backbone", bb.to_str().unwrap(), "--dataset", "synthetic", "--epochs", "100"]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    let last = r.stdout.lines().last().unwrap();
    let acc: f64 = last.strip_prefix("test_accuracy=").unwrap().parse().unwrap();
    // Ten classes, 1000 test images: chance is 10% (standard error 1 point), what a probe of
    // features that carry nothing, or of labels that do not belong to them, gives. This backbone
    // measured 27.5-37.8 with the 100-epoch probe (seeds 1-6; with the 2-epoch probe this test
    // used before 12.6-18.8, too close to chance to bound): 20 is 10 points above chance and 7
    // below the lowest.
    assert!(acc > 20.0, "linear probe {acc}%: chance is 10");
    let records: Vec<_> = std::fs::read_dir(out.join("results"))
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    assert!(records.len() == 1 && records[0].starts_with("linear-synthetic-"), "{records:?}");
}

#[test]
fn random_backbone_and_bad_values() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("rand");
    let r = relnet(&["pretrain", "--method", "random", "--out", out.to_str().unwrap()]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert!(out.join("backbone.bpk").is_file());

    let r = relnet(&["pretrain", "--k", "1", "--out", dir.path().join("x").to_str().unwrap()]);
    assert_eq!(r.code, 1);
    assert!(r.stderr.contains("`k`") && r.stderr.contains("out of range"), "{}", r.stderr);
    // An unknown method: the flag lists the registered ones (usage error); in a file, the
    // `kind` of the `[method]` table is named with the file.
    let r = relnet(&["pretrain", "--method", "byol", "--out", dir.path().join("y").to_str().unwrap()]);
    assert_eq!(r.code, 2);
    assert!(
        r.stderr.contains("byol") && r.stderr.contains("relational") && r.stderr.contains("deepinfomax"),
        "{}",
        r.stderr
    );
    let cfg = dir.path().join("c.toml");
    std::fs::write(&cfg, "[method]\nkind = \"byol\"\n").unwrap();
    let r = relnet(&["pretrain", "--config", cfg.to_str().unwrap(), "--out", dir.path().join("y").to_str().unwrap()]);
    assert_eq!(r.code, 1);
    assert!(r.stderr.contains("c.toml") && r.stderr.contains("byol") && r.stderr.contains("simclr"), "{}", r.stderr);
    std::fs::write(&cfg, "epochs = 2\nbatchsize = 3\n").unwrap();
    let r = relnet(&["pretrain", "--config", cfg.to_str().unwrap()]);
    assert_eq!(r.code, 1);
    assert!(r.stderr.contains("c.toml") && r.stderr.contains("batchsize"), "{}", r.stderr);
    let r = relnet(&["eval", "linear", "--backbone", dir.path().join("missing.bpk").to_str().unwrap()]);
    assert_eq!(r.code, 1);
    assert!(r.stderr.contains("missing.bpk"), "{}", r.stderr);
}

#[test]
fn bench_prints_the_yardstick_lines() {
    let r = relnet(&[
        "bench",
        "pretrain",
        "--dataset",
        "synthetic",
        "--k",
        "2",
        "--batch-size",
        "8",
        "--steps",
        "1",
        "--warmup",
        "0",
    ]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    for key in ["augment_only_views_per_s=", "step_only_views_per_s=", "end_to_end_views_per_s="] {
        let line = r.stdout.lines().find(|l| l.starts_with(key)).unwrap_or_else(|| panic!("no {key}: {}", r.stdout));
        let v: f64 = line[key.len()..].parse().unwrap();
        assert!(v > 0.0 && v.is_finite(), "{line}");
    }
}

#[test]
fn data_parallel_over_two_cpu_replicas_trains_and_resumes() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("ddp");
    let out_s = out.to_str().unwrap();
    // Two replicas on the one CPU device exercise the host all-reduce path (burn-flex has no
    // collective operations; CUDA uses burn's NCCL all-reduce instead).
    let r = run(&small(out_s, &["--devices", "cpu,cpu"]));
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert!(r.stderr.contains("data-parallel over 2 devices: 16 images per device"), "{}", r.stderr);
    assert!(out.join("backbone.bpk").is_file());
    let cfg = std::fs::read_to_string(out.join("config.toml")).unwrap();
    assert!(cfg.contains("devices = \"cpu,cpu\""), "{cfg}");
    // Resuming a finished data-parallel run finds nothing to do.
    let r = run(&small(out_s, &["--devices", "cpu,cpu", "--resume"]));
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert!(r.stderr.contains("already finished"), "{}", r.stderr);
    // Too many devices for the batch, and an unknown device, are clear errors.
    let r = run(&small(
        dir.path().join("x").to_str().unwrap(),
        &["--devices", "cpu,cpu,cpu,cpu,cpu,cpu,cpu,cpu,cpu,cpu,cpu,cpu,cpu,cpu,cpu,cpu,cpu"],
    ));
    assert_eq!(r.code, 1);
    assert!(r.stderr.contains("over 17 devices needs a batch of at least 34 images"), "{}", r.stderr);
    let r = run(&small(dir.path().join("y").to_str().unwrap(), &["--devices", "cpu,gpu"]));
    assert_ne!(r.code, 0);
    assert!(r.stderr.contains("unknown device `gpu`"), "{}", r.stderr);
}

#[test]
fn bf16_precision_is_recorded_and_a_resume_cannot_change_it() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("bf16");
    let out_s = out.to_str().unwrap();
    let r = run(&small(out_s, &["--precision", "bf16"]));
    assert_eq!(r.code, 0, "{}", r.stderr);
    // The run says what bf16 means on this host (emulated unless it has AVX512-BF16).
    assert!(r.stderr.contains("precision bf16:"), "{}", r.stderr);
    let cfg = std::fs::read_to_string(out.join("config.toml")).unwrap();
    assert!(cfg.contains("precision = \"bf16\""), "{cfg}");
    let metrics = std::fs::read_to_string(out.join("metrics.jsonl")).unwrap();
    let first: serde_json::Value = serde_json::from_str(metrics.lines().next().unwrap()).unwrap();
    let loss = first["loss"].as_f64().unwrap();
    assert!((loss - 2f64.ln()).abs() <= 0.15 * 2f64.ln(), "first-epoch bf16 loss {loss} against ln 2");
    // Resuming at fp32 is refused, naming the key; at bf16 it goes on.
    let r = run(&small(out_s, &["--precision", "fp32", "--resume"]));
    assert_ne!(r.code, 0);
    assert!(r.stderr.contains("differs: precision"), "{}", r.stderr);
    let r = run(&small(out_s, &["--precision", "bf16", "--resume"]));
    assert_eq!(r.code, 0, "{}", r.stderr);
    // An fp32 run's config does not mention precision (configs written before it existed read
    // back the same, and grid cell hashes are unchanged).
    let fp32 = dir.path().join("fp32");
    let r = run(&small(fp32.to_str().unwrap(), &[]));
    assert_eq!(r.code, 0, "{}", r.stderr);
    let cfg = std::fs::read_to_string(fp32.join("config.toml")).unwrap();
    assert!(!cfg.contains("precision"), "{cfg}");
    // The trainer ran the bf16 run at bf16: the same seed's losses differ from fp32's, by little.
    // Both runs start from the same weights (drawn under the generator lock, whatever the other
    // tests of this binary draw meanwhile); the notebook run's per-epoch gap is at most 0.0054
    // (docs/performance.md), this first epoch's about 1e-4.
    let loss_of = |dir: &std::path::Path| -> f64 {
        let m = std::fs::read_to_string(dir.join("metrics.jsonl")).unwrap();
        let first: serde_json::Value = serde_json::from_str(m.lines().next().unwrap()).unwrap();
        first["loss"].as_f64().unwrap()
    };
    let (l16, l32) = (loss_of(&out), loss_of(&fp32));
    assert!(l16 != l32 && (l16 - l32).abs() < 0.005, "first-epoch loss bf16 {l16} against fp32 {l32}");
    // An evaluation of the bf16 backbone says so in its record.
    let r =
        relnet(&["eval", "knn", "--backbone", out.join("backbone.bpk").to_str().unwrap(), "--dataset", "synthetic"]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    let records: Vec<_> = std::fs::read_dir(out.join("results")).unwrap().map(|e| e.unwrap().path()).collect();
    let text = std::fs::read_to_string(&records[0]).unwrap();
    assert!(text.contains("\"source_precision\": \"bf16\""), "{text}");
}
