//! Every pretraining method through the CLI on the embedded dataset: one short epoch each, the
//! same backbone artifact, readable by the linear probe.

use relnet_tests::relnet;

fn one_epoch(method: &str, dir: &std::path::Path, extra: &[&str]) -> std::path::PathBuf {
    let out = dir.join(method);
    let out_s = out.to_str().unwrap();
    let mut args = vec!["pretrain", "--method", method, "--dataset", "synthetic", "--limit-images", "128", "--batch-size", "32", "--epochs", "1", "--out", out_s];
    args.extend_from_slice(extra);
    let r = relnet(&args);
    assert_eq!(r.code, 0, "{method}: {}", r.stderr);
    assert!(out.join("backbone.bpk").is_file(), "{method}: no backbone");
    assert!(out.join("config.toml").is_file(), "{method}: no config");
    let metrics = std::fs::read_to_string(out.join("metrics.jsonl")).unwrap();
    assert_eq!(metrics.lines().count(), 1, "{method}: {metrics}");
    let m: serde_json::Value = serde_json::from_str(metrics.lines().next().unwrap()).unwrap();
    let loss = m["loss"].as_f64().unwrap();
    assert!(loss.is_finite() && loss > 0.0, "{method}: loss {loss}");
    let acc = m["accuracy"].as_f64().unwrap();
    assert!((0.0..=1.0).contains(&acc), "{method}: accuracy {acc}");
    out.join("backbone.bpk")
}

fn probe(backbone: &std::path::Path) {
    let r = relnet(&["eval", "linear", "--backbone", backbone.to_str().unwrap(), "--dataset", "synthetic", "--epochs", "1"]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert!(r.stdout.contains("test_accuracy="), "{}", r.stdout);
}

#[test]
fn every_method_trains_an_epoch_and_its_backbone_is_probed() {
    let dir = tempfile::tempdir().unwrap();
    for (method, extra) in [
        ("rotation", &[][..]),
        ("simclr", &["--simclr-loss", "mean-log"][..]),
        ("deepinfomax", &["--dim-prior", "adversarial"][..]),
        ("deepcluster", &["--kmeans-restarts", "2"][..]),
    ] {
        one_epoch(method, dir.path(), extra);
    }
    // Supervised also reports its own test accuracy; its backbone goes through the probe.
    let sup = one_epoch("supervised", dir.path(), &[]);
    let record = std::fs::read_dir(dir.path().join("supervised/results")).unwrap().next().unwrap().unwrap().path();
    let json = std::fs::read_to_string(&record).unwrap();
    let v: serde_json::Value = serde_json::from_str(&json).unwrap();
    assert_eq!(v["evaluator"], "supervised");
    assert!((0.0..=100.0).contains(&v["metrics"]["test_accuracy"].as_f64().unwrap()), "{json}");
    probe(&sup);
}

#[test]
fn method_specific_values_are_checked() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("x");
    // Values outside a typed option's set are refused by the derived parser (usage error, exit
    // 2) naming the flag and the allowed values.
    for (method, flag, value, allowed) in [("simclr", "--simclr-loss", "logmean", "log-mean"), ("deepinfomax", "--dim-prior", "minmax", "adversarial")] {
        let r = relnet(&["pretrain", "--method", method, flag, value, "--out", out.to_str().unwrap()]);
        assert_eq!(r.code, 2, "{flag} {value}");
        assert!(r.stderr.contains(flag) && r.stderr.contains(allowed), "{flag} {value}: {}", r.stderr);
    }
    // A range check of the method's own validation names the key.
    let r = relnet(&["pretrain", "--method", "simclr", "--temperature", "0", "--out", out.to_str().unwrap()]);
    assert_eq!(r.code, 1);
    assert!(r.stderr.contains("`temperature`") && r.stderr.contains("out of range"), "{}", r.stderr);
    // The same in a config file: key and file named.
    let cfg = dir.path().join("m.toml");
    std::fs::write(&cfg, "[method]\nkind = \"deepinfomax\"\ndim_prior = \"minmax\"\n").unwrap();
    let r = relnet(&["pretrain", "--config", cfg.to_str().unwrap(), "--out", out.to_str().unwrap()]);
    assert_eq!(r.code, 1);
    assert!(r.stderr.contains("m.toml") && r.stderr.contains("minmax"), "{}", r.stderr);
}
