//! Result records verify themselves: every record carries the SHA-256 of its own content, a
//! record edited after it was written is marked and named by `relnet results` (which exits 1
//! after printing the whole table), a record from before checksums is listed as `unverified`, and
//! `relnet results` finds records from any folder: a run, its `results/`, a tree, one file.

use std::path::{Path, PathBuf};

use relnet_core::record::{ArtifactRef, Integrity, ResultRecord};
use relnet_tests::relnet;

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

/// A short relational pretraining on 256 synthetic images and a kNN evaluation of it; returns
/// the run folder and the record the evaluation wrote.
fn evaluated_run(dir: &Path) -> (PathBuf, PathBuf) {
    let run = dir.join("rel");
    let r = relnet(&[
        "pretrain",
        "--limit-images",
        "256",
        "--k",
        "2",
        "--batch-size",
        "32",
        "--epochs",
        "1",
        "--out",
        s(&run),
    ]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    let r = relnet(&["eval", "knn", "--backbone", s(&run.join("backbone.bpk")), "--k", "5"]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    let line =
        r.stderr.lines().find(|l| l.starts_with("record: ")).unwrap_or_else(|| panic!("no record line: {}", r.stderr));
    let record = PathBuf::from(&line["record: ".len()..]);
    assert!(record.starts_with(run.join("results")), "{}", record.display());
    (run, record)
}

/// A record saved through the library, as an evaluation would, under `dir/results/`.
fn saved(dir: &Path, seed: u64, accuracy: f64) -> PathBuf {
    let a = ArtifactRef { path: dir.join("backbone.bpk"), sha256: "cd".repeat(32), kind: "conv4".into() };
    let mut r =
        ResultRecord::new("linear", serde_json::json!({"epochs": 3}), a, "synthetic", seed, Some("train"), "test");
    r.metrics.insert("test_accuracy".into(), accuracy);
    r.save(dir).unwrap()
}

fn json(p: &Path) -> serde_json::Value {
    serde_json::from_str(&std::fs::read_to_string(p).unwrap()).unwrap()
}

/// Table rows of `relnet results` output (lines of the Markdown table below its header).
fn rows(stdout: &str) -> Vec<&str> {
    stdout.lines().filter(|l| l.starts_with("| ") && !l.starts_with("| evaluator")).collect()
}

#[test]
fn an_evaluation_writes_a_record_that_verifies_and_an_edit_to_it_is_flagged_by_name() {
    let dir = tempfile::tempdir().unwrap();
    let (run, record) = evaluated_run(dir.path());

    // The record carries its checksum and verifies; saved and loaded, it round-trips.
    let v = json(&record);
    assert_eq!(v["schema_version"], 2, "{v}");
    let checksum = v["checksum"].as_str().unwrap_or_else(|| panic!("no checksum: {v}"));
    assert!(checksum.starts_with("sha256:") && checksum.len() == 7 + 64, "{checksum}");
    assert_eq!(
        Some(checksum),
        relnet_core::record::content_checksum(&std::fs::read_to_string(&record).unwrap()).as_deref()
    );
    let (loaded, integrity) = ResultRecord::load_checked(&record).unwrap();
    assert_eq!(integrity, Integrity::Verified);
    assert_eq!(loaded.checksum.as_deref(), Some(checksum));

    // `relnet results` on the run, its results/ folder, the tree above and the file itself.
    for at in [dir.path().to_path_buf(), run.clone(), run.join("results"), record.clone()] {
        let r = relnet(&["results", s(&at)]);
        assert_eq!(r.code, 0, "{}: {}", at.display(), r.stderr);
        let rows = rows(&r.stdout);
        assert_eq!(rows.len(), 1, "{}: {}", at.display(), r.stdout);
        assert!(rows[0].starts_with("| knn") && rows[0].ends_with("| ok |"), "{}: {}", at.display(), r.stdout);
        assert!(!r.stdout.contains("no result records") && !r.stdout.contains("EDITED"), "{}", r.stdout);
    }

    // Edit a metric on disk: the record no longer verifies, loading it strictly fails naming
    // it, and `relnet results` still lists it, marked, names the file below the table and exits 1.
    // (A text edit, as by hand: the other figures keep their digits.)
    let text = std::fs::read_to_string(&record).unwrap();
    let metric = json(&record)["metrics"]["top1_k5"].as_f64().expect("a kNN record has top1_k5");
    let line = text.lines().find(|l| l.trim_start().starts_with("\"top1_k5\": ")).unwrap_or_else(|| panic!("{text}"));
    let forged = if metric < 90.0 { metric + 9.5 } else { metric - 9.5 };
    let edited_line =
        format!("{}: {forged:?}{}", line.split(':').next().unwrap(), if line.ends_with(',') { "," } else { "" });
    let edited = text.replacen(line, &edited_line, 1);
    assert_ne!(edited, text);
    std::fs::write(&record, &edited).unwrap();
    assert!(matches!(ResultRecord::load_checked(&record).unwrap().1, Integrity::Edited { .. }));
    let e = ResultRecord::load(&record).unwrap_err().to_string();
    assert!(e.contains(s(&record)) && e.contains("edited"), "{e}");
    for at in [run.join("results"), dir.path().to_path_buf()] {
        let r = relnet(&["results", s(&at)]);
        assert_eq!(r.code, 1, "an edited record fails the listing's status: {} {}", r.stdout, r.stderr);
        let rows = rows(&r.stdout);
        assert_eq!(rows.len(), 1, "the edited record is still listed: {}", r.stdout);
        assert!(rows[0].contains("**EDITED**") && rows[0].contains(&format!("top1_k5 {forged:.2}")), "{}", r.stdout);
        let note =
            r.stdout.split("\nEDITED:").nth(1).unwrap_or_else(|| panic!("no note below the table: {}", r.stdout));
        assert!(note.contains(s(&record)) && note.contains("checksum mismatch"), "{}", r.stdout);
        assert!(r.stderr.contains("1 edited"), "{}", r.stderr);
    }

    // The original text back: it verifies again.
    std::fs::write(&record, &text).unwrap();
    let r = relnet(&["results", s(&run)]);
    assert_eq!(r.code, 0, "{} {}", r.stdout, r.stderr);
    assert!(rows(&r.stdout)[0].ends_with("| ok |"), "{}", r.stdout);
}

#[test]
fn a_record_from_before_checksums_is_listed_as_unverified_not_rejected() {
    let dir = tempfile::tempdir().unwrap();
    let run = dir.path().join("old");
    let p = saved(&run, 1, 61.25);
    // As relnet wrote records before this change: schema version 1, no checksum field.
    let mut v = json(&p);
    v.as_object_mut().unwrap().remove("checksum");
    v["schema_version"] = 1.into();
    std::fs::write(&p, serde_json::to_vec_pretty(&v).unwrap()).unwrap();
    let fresh = saved(&run, 2, 70.0);

    assert_eq!(ResultRecord::load_checked(&p).unwrap().1, Integrity::Unverified);
    assert!(ResultRecord::load(&p).is_ok());
    let r = relnet(&["results", s(&run.join("results"))]);
    assert_eq!(r.code, 0, "legacy records do not fail the listing: {} {}", r.stdout, r.stderr);
    let rows = rows(&r.stdout);
    assert_eq!(rows.len(), 2, "{}", r.stdout);
    let legacy = rows.iter().find(|l| l.contains("test_accuracy 61.25")).expect("the legacy record is listed");
    assert!(legacy.ends_with("| unverified |"), "{}", r.stdout);
    assert!(rows.iter().any(|l| l.contains("test_accuracy 70.00") && l.ends_with("| ok |")), "{}", r.stdout);
    assert!(r.stdout.contains("unverified: 1 record"), "{}", r.stdout);
    assert!(!r.stdout.contains("EDITED"), "{}", r.stdout);

    // Removing the checksum of a current record does not pass it off as a legacy one.
    let mut v = json(&fresh);
    v.as_object_mut().unwrap().remove("checksum");
    std::fs::write(&fresh, serde_json::to_vec_pretty(&v).unwrap()).unwrap();
    let r = relnet(&["results", s(&run)]);
    assert_eq!(r.code, 1, "{} {}", r.stdout, r.stderr);
    assert!(r.stdout.contains("**EDITED**") && r.stdout.contains(s(&fresh)), "{}", r.stdout);
}

#[test]
fn broken_records_are_named_with_their_problem_and_nothing_else_is_lost() {
    let dir = tempfile::tempdir().unwrap();
    let run = dir.path().join("run");
    let good = saved(&run, 1, 50.0);
    let results = run.join("results");
    std::fs::write(results.join("truncated.json"), b"{\"schema_version\": 2, \"evalu").unwrap();
    std::fs::write(results.join("future.json"), b"{\"schema_version\": 99, \"evaluator\": \"linear\"}").unwrap();
    let mut v = json(&good);
    v["metrics"] = serde_json::json!("not a map");
    std::fs::write(results.join("wrong-shape.json"), serde_json::to_vec_pretty(&v).unwrap()).unwrap();
    // Not records, outside results/: left alone.
    std::fs::write(run.join("cell.json"), b"{\"schema_version\": 1, \"cell\": {}}").unwrap();

    let r = relnet(&["results", s(dir.path())]);
    assert_eq!(r.code, 1, "{} {}", r.stdout, r.stderr);
    let rows = rows(&r.stdout);
    assert_eq!(rows.len(), 1, "the good record is still listed: {}", r.stdout);
    assert!(rows[0].ends_with("| ok |"), "{}", r.stdout);
    let line = |name: &str| {
        r.stdout
            .lines()
            .find(|l| l.starts_with("unreadable: ") && l.contains(name))
            .unwrap_or_else(|| panic!("{name} not named: {}", r.stdout))
            .to_string()
    };
    assert!(line("truncated.json").contains("not valid JSON"), "{}", r.stdout);
    assert!(line("future.json").contains("schema version 99"), "{}", r.stdout);
    assert!(line("wrong-shape.json").contains("bad result record"), "{}", r.stdout);
    assert!(!r.stdout.contains("cell.json"), "{}", r.stdout);
    assert!(r.stderr.contains("3 unreadable"), "{}", r.stderr);

    // A path that does not exist is an error naming it.
    let r = relnet(&["results", s(&dir.path().join("nowhere"))]);
    assert_ne!(r.code, 0);
    assert!(r.stderr.contains("nowhere"), "{}", r.stderr);
}
