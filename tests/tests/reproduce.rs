//! `relnet reproduce` and `relnet report` end to end: the smoke profile (every method and
//! protocol on the embedded data), a grid killed with SIGKILL in the middle of a cell and resumed,
//! tampered result files, a cell whose dataset is absent, the SLURM script and `--cell`.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use relnet_tests::{relnet, shared_data, subprocess, subprocess_command};

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

/// Not a test: the entry point of `relnet_tests::subprocess_command` (see `subprocess_entry`).
#[test]
fn subprocess_entry_point() {
    relnet_tests::subprocess_entry();
}

fn spawn(args: &[&str], log: &Path) -> std::process::Child {
    subprocess_command(args).stdout(Stdio::null()).stderr(std::fs::File::create(log).unwrap()).spawn().unwrap()
}

fn sub(args: &[&str]) -> relnet_tests::Run {
    subprocess(args, &[])
}

fn cell_dir(results: &Path, prefix: &str) -> PathBuf {
    let cells = results.join("cells");
    let found: Vec<PathBuf> = std::fs::read_dir(&cells)
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.file_name().unwrap().to_string_lossy().starts_with(prefix))
        .collect();
    assert_eq!(found.len(), 1, "one cell {prefix}* in {}", cells.display());
    found[0].clone()
}

fn manifest(dir: &Path) -> serde_json::Value {
    serde_json::from_str(&std::fs::read_to_string(dir.join("cell.json")).unwrap()).unwrap()
}

/// Metric `key` of the record of evaluation `eval_key` of a cell.
fn metric(dir: &Path, eval_key: &str, key: &str) -> f64 {
    let m = manifest(dir);
    let e = m["evals"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["key"] == eval_key)
        .unwrap_or_else(|| panic!("no {eval_key} in {m}"));
    assert_eq!(e["status"], "done", "{e}");
    let rec: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join(e["record"].as_str().unwrap())).unwrap()).unwrap();
    rec["metrics"][key].as_f64().unwrap()
}

const TEST_GRID: &str = r#"
schema = 1
[protocols.linear]
title = "Linear evaluation"
evaluator = "linear"
options = { epochs = 2 }
[protocols.knn]
title = "kNN"
evaluator = "knn"
[profiles.t]
description = "two methods, one present and one absent dataset"
seeds = [1]
pretrain = { epochs = 6, limit_images = 384 }
method.relational = { k = 2 }
[[profiles.t.experiments]]
name = "x"
methods = ["random", "relational"]
backbones = ["conv4"]
datasets = ["synthetic", "cifar100"]
protocols = ["linear", "knn"]
[paper.linear."conv4/cifar100"]
source = "Table 2"
status = "verified"
values = { random = [10.79, 0.59], relational = [33.38, 1.02] }
"#;

#[test]
fn a_grid_killed_mid_cell_resumes_to_the_uninterrupted_results_and_absent_data_is_skipped() {
    let tmp = tempfile::tempdir().unwrap();
    let grid = tmp.path().join("grid.toml");
    std::fs::write(&grid, TEST_GRID).unwrap();
    let empty_root = tmp.path().join("no-data");
    std::fs::create_dir_all(&empty_root).unwrap();
    let args = |results: &Path| -> Vec<String> {
        ["reproduce", "--grid", s(&grid), "--profile", "t", "--results", s(results), "--data-root", s(&empty_root)]
            .iter()
            .map(|a| a.to_string())
            .collect()
    };

    // Uninterrupted.
    let whole = tmp.path().join("whole");
    let a = args(&whole);
    let r = sub(&a.iter().map(String::as_str).collect::<Vec<_>>());
    assert_eq!(r.code, 0, "{}\n{}", r.stdout, r.stderr);
    // random-cifar100 pretrains (random weights need no data) but every evaluation is skipped.
    assert!(r.stdout.contains("4 cells: 2 done now, 0 already done, 0 failed, 2 skipped"), "{}", r.stdout);

    // The same grid in a separate process, killed during the relational cell's pretraining once
    // it has finished three epochs (of 6: checkpoints after epochs 2, 3, 5 and 6, so the one of
    // epoch 2 is on disk).
    let killed = tmp.path().join("killed");
    let a = args(&killed);
    let log = tmp.path().join("killed.log");
    let mut child = spawn(&a.iter().map(String::as_str).collect::<Vec<_>>(), &log);
    let started = Instant::now();
    let relational_metrics = loop {
        let found = std::fs::read_dir(killed.join("cells")).ok().and_then(|rd| {
            rd.flatten()
                .map(|e| e.path())
                .find(|p| p.file_name().unwrap().to_string_lossy().starts_with("relational-synthetic"))
        });
        if let Some(d) = found {
            let m = d.join("metrics.jsonl");
            if std::fs::read_to_string(&m).map(|t| t.lines().count() >= 3).unwrap_or(false) {
                break m;
            }
        }
        if let Ok(Some(status)) = child.try_wait() {
            panic!(
                "the grid ended ({status}) before it could be killed:\n{}",
                std::fs::read_to_string(&log).unwrap_or_default()
            );
        }
        assert!(started.elapsed() < Duration::from_secs(600), "timed out waiting for the relational cell");
        std::thread::sleep(Duration::from_millis(20));
    };
    child.kill().unwrap(); // SIGKILL
    child.wait().unwrap();
    let rel = relational_metrics.parent().unwrap().to_path_buf();
    assert_eq!(manifest(&rel)["status"], "running", "killed inside the cell");
    let random = cell_dir(&killed, "random-synthetic");
    let before = manifest(&random);
    assert_eq!(before["status"], "done");

    // Resume: the finished cell is not redone, the relational cell continues from its checkpoint.
    let a = args(&killed);
    let r = sub(&a.iter().map(String::as_str).collect::<Vec<_>>());
    assert_eq!(r.code, 0, "{}\n{}", r.stdout, r.stderr);
    assert!(r.stdout.contains("1 already done"), "{}", r.stdout);
    assert!(r.stderr.contains("resuming at epoch"), "the relational cell resumed from its checkpoint: {}", r.stderr);
    assert_eq!(manifest(&random), before, "the finished cell was left alone");
    let whole_rel = cell_dir(&whole, "relational-synthetic");
    assert_eq!(
        manifest(&rel)["backbone_sha256"],
        manifest(&whole_rel)["backbone_sha256"],
        "the resumed backbone is bit-identical to the uninterrupted one"
    );
    for (eval, key) in
        [("linear:synthetic", "test_accuracy"), ("knn:synthetic", "top1_k20"), ("knn:synthetic", "top1_k200")]
    {
        assert_eq!(
            metric(&rel, eval, key),
            metric(&whole_rel, eval, key),
            "{eval} {key}: the resumed grid matches the uninterrupted one"
        );
    }

    // The absent dataset: the relational cell is skipped at pretraining, the random cell's
    // evaluations are skipped; the report says why and how to get the data.
    let skipped = manifest(&cell_dir(&whole, "relational-cifar100"));
    assert_eq!(skipped["status"], "skipped");
    assert!(skipped["error"].as_str().unwrap().contains("relnet data download cifar100"), "{skipped}");
    let r = relnet(&["report", s(&whole)]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert!(r.stdout.contains("skipped [") && r.stdout.contains("relnet data download cifar100"), "{}", r.stdout);
    assert!(r.stdout.contains("paper 33.38 ± 1.02"), "paper values beside the cells: {}", r.stdout);
    assert!(whole.join("report.csv").exists() && whole.join("figures").join("linear-conv4-synthetic.png").exists());

    // A corrupt manifest is reported and its cell run again.
    let random = cell_dir(&whole, "random-synthetic");
    std::fs::write(random.join("cell.json"), b"{\"schema_version\": 1, \"cel").unwrap();
    let a = args(&whole);
    let r =
        relnet(&a.iter().map(String::as_str).chain(["--only", "method=random,dataset=synthetic"]).collect::<Vec<_>>());
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert!(r.stderr.contains("not a cell manifest") && r.stdout.contains("1 done now"), "{}\n{}", r.stdout, r.stderr);
    assert_eq!(manifest(&random)["status"], "done");

    // The same method at another pretraining budget in the same results: another cell (another
    // hash), and the report draws accuracy against pretraining epochs.
    std::fs::write(&grid, TEST_GRID.replace("epochs = 6", "epochs = 2")).unwrap();
    let a = args(&whole);
    let r = relnet(
        &a.iter().map(String::as_str).chain(["--only", "method=relational,dataset=synthetic"]).collect::<Vec<_>>(),
    );
    assert_eq!(r.code, 0, "{}", r.stderr);
    let r = relnet(&["report", s(&whole)]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert!(
        r.stdout.contains("| Relational reasoning | 2 |") && r.stdout.contains("| Relational reasoning | 6 |"),
        "{}",
        r.stdout
    );
    assert!(whole.join("figures").join("epochs-linear-conv4-synthetic.png").exists(), "{}", r.stdout);
}

#[test]
fn the_smoke_profile_runs_every_method_and_protocol_and_distrusts_tampered_results() {
    let tmp = tempfile::tempdir().unwrap();
    let results = tmp.path().join("smoke");
    let root = shared_data().unwrap_or_else(|| tmp.path().to_path_buf());
    let mnist = root.join("mnist").is_dir();
    let r = sub(&["reproduce", "--profile", "smoke", "--results", s(&results), "--data-root", s(&root)]);
    assert_eq!(r.code, 0, "{}\n{}", r.stdout, r.stderr);
    assert!(r.stdout.contains("7 cells: 7 done now, 0 already done, 0 failed"), "{}", r.stdout);
    for title in [
        "## Linear evaluation",
        "## Fine-tuning",
        "## Fewer labels",
        "## kNN",
        "## Retrieval",
        "## Domain transfer",
        "## Pretraining curves",
        "Relational reasoning",
        "Deep InfoMax",
    ] {
        assert!(r.stdout.contains(title), "{title} missing from the report:\n{}", r.stdout);
    }
    let rel = cell_dir(&results, "relational-synthetic");
    let m = manifest(&rel);
    assert_eq!(
        m["evals"].as_array().unwrap().len(),
        4 + 1 + 5,
        "linear, knn, retrieval, finetune, transfer, 5 label budgets"
    );
    let transfer = m["evals"].as_array().unwrap().iter().find(|e| e["key"] == "transfer:mnist").unwrap().clone();
    assert_eq!(transfer["status"], if mnist { "done" } else { "skipped" }, "{transfer}");
    for f in [
        "report.md",
        "report.csv",
        "figures/linear-conv4-synthetic.png",
        "figures/pretraining-conv4-synthetic.png",
        "figures/fewer-labels-conv4-synthetic-synthetic.png",
    ] {
        assert!(results.join(f).exists(), "{f}");
    }
    let csv = std::fs::read_to_string(results.join("report.csv")).unwrap();
    assert!(csv.lines().count() > 7 * 4, "{csv}");

    // A rerun does nothing.
    let r =
        relnet(&["reproduce", "--profile", "smoke", "--results", s(&results), "--data-root", s(&root), "--no-report"]);
    assert!(r.stdout.contains("0 done now, 7 already done"), "{}", r.stdout);

    // Truncate one record and hand-edit another: both are detected, reported and measured again.
    let linear_acc = metric(&rel, "linear:synthetic", "test_accuracy");
    let knn = metric(&rel, "knn:synthetic", "top1_k20");
    let rec = |key: &str| {
        rel.join(m["evals"].as_array().unwrap().iter().find(|e| e["key"] == key).unwrap()["record"].as_str().unwrap())
    };
    let linear_rec = rec("linear:synthetic");
    let text = std::fs::read_to_string(&linear_rec).unwrap();
    std::fs::write(&linear_rec, &text[..text.len() / 2]).unwrap();
    let knn_rec = rec("knn:synthetic");
    let text = std::fs::read_to_string(&knn_rec).unwrap();
    let edited = text.replacen("\"top1_k20\": ", "\"top1_k20\": 9", 1);
    assert_ne!(edited, text);
    std::fs::write(&knn_rec, edited).unwrap();
    // And a fine-tuning's: it had finished, so it is measured again from its saved model.
    let finetune_acc = metric(&rel, "finetune:synthetic", "test_accuracy");
    std::fs::write(rec("finetune:synthetic"), b"{").unwrap();
    let r = relnet(&["report", s(&results)]);
    assert!(
        r.stdout.contains("untrusted [") && r.stdout.contains("checksum mismatch"),
        "the report distrusts them: {}",
        r.stdout
    );
    let r = sub(&["reproduce", "--profile", "smoke", "--results", s(&results), "--data-root", s(&root), "--no-report"]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert_eq!(r.stderr.matches("checksum mismatch").count(), 3, "{}", r.stderr);
    assert!(r.stderr.contains("run already finished; nothing to train"), "{}", r.stderr);
    assert!(r.stdout.contains("1 done now, 6 already done"), "{}", r.stdout);
    assert_eq!(metric(&rel, "linear:synthetic", "test_accuracy"), linear_acc);
    assert_eq!(metric(&rel, "knn:synthetic", "top1_k20"), knn);
    assert_eq!(metric(&rel, "finetune:synthetic", "test_accuracy"), finetune_acc);
    // A deleted manifest: the cell is run again, pretraining returns at once from its checkpoint.
    std::fs::remove_file(rel.join("cell.json")).unwrap();
    let r = sub(&[
        "reproduce",
        "--profile",
        "smoke",
        "--only",
        "method=relational,protocol=linear",
        "--results",
        s(&results),
        "--data-root",
        s(&root),
        "--no-report",
    ]);
    assert!(r.stdout.contains("1 cells: 1 done now"), "{}", r.stdout);
    assert_eq!(metric(&rel, "linear:synthetic", "test_accuracy"), linear_acc);
}

#[test]
fn dry_run_slurm_script_and_single_cells() {
    let tmp = tempfile::tempdir().unwrap();
    let r = relnet(&["reproduce", "--profile", "paper", "--dry-run", "--data-root", s(tmp.path())]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert!(r.stdout.contains("159 cells, 252 evaluations") && r.stdout.contains("NOT MEASURED"), "{}", r.stdout);
    assert!(r.stdout.contains("dataset `tiny-imagenet` is absent"), "{}", r.stdout);
    let r = relnet(&["reproduce", "--profile", "cpu", "--only", "method=relational", "--dry-run"]);
    assert!(
        r.stdout.contains("relational-cifar10-conv4-s1-") && r.stdout.contains("1 cells, 3 evaluations"),
        "{}",
        r.stdout
    );
    let r = relnet(&["reproduce", "--profile", "cpu", "--only", "method=nothing"]);
    assert_eq!(r.code, 1);
    assert!(r.stderr.contains("no cell of profile `cpu`"), "{}", r.stderr);

    // The SLURM script: one array task per cell, each `--cell i` into the same results.
    let results = tmp.path().join("res");
    let r = relnet(&[
        "reproduce",
        "--profile",
        "smoke",
        "--only",
        "method=random,method=rotation",
        "--launcher",
        "slurm",
        "--results",
        s(&results),
        "--sbatch=--partition=debug",
    ]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    let script = results.join("slurm/reproduce.sbatch");
    let text = std::fs::read_to_string(&script).unwrap();
    assert!(
        text.contains("#SBATCH --array=0-1\n")
            && text.contains("#SBATCH --partition=debug\n")
            && text.contains("--cell \"${CELLS[$SLURM_ARRAY_TASK_ID]}\""),
        "{text}"
    );
    assert!(text.contains("--only 'method=random,method=rotation'"), "{text}");
    let syntax = Command::new("bash").arg("-n").arg(&script).status().unwrap();
    assert!(syntax.success(), "the script parses");
    // What array task 1 runs.
    let r = relnet(&[
        "reproduce",
        "--grid",
        s(&results.join("grid.toml")),
        "--profile",
        "smoke",
        "--only",
        "method=random,method=rotation",
        "--results",
        s(&results),
        "--cell",
        "1",
    ]);
    assert_eq!(r.code, 0, "{}\n{}", r.stdout, r.stderr);
    assert!(r.stdout.contains("cell 1 rotation-synthetic-conv4-s1-") && r.stdout.contains(": done"), "{}", r.stdout);
    assert_eq!(manifest(&cell_dir(&results, "rotation-synthetic"))["status"], "done");
    assert!(
        !results
            .join("cells")
            .read_dir()
            .unwrap()
            .flatten()
            .any(|e| e.file_name().to_string_lossy().starts_with("random")),
        "only that cell ran"
    );
    let r = relnet(&["reproduce", "--profile", "smoke", "--results", s(&results), "--cell", "99"]);
    assert!(r.stderr.contains("cell 99 does not exist"), "{}", r.stderr);
    // The report marks the cells the invocation asked for and that never started.
    let r = relnet(&["report", s(&results)]);
    assert!(r.stdout.contains("not run ["), "{}", r.stdout);
}
