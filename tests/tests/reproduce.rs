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

const ABLATION_GRID: &str = r#"
schema = 1
[protocols.linear]
title = "Linear evaluation"
evaluator = "linear"
options = { epochs = 1 }
[protocols.knn]
title = "kNN"
evaluator = "knn"
[profiles.abl]
description = "two ablations on the embedded data"
seeds = [1, 2]
pretrain = { epochs = 1, limit_images = 192 }
method.relational = { k = 2 }
note = "a test budget"
[[profiles.abl.experiments]]
name = "K"
methods = ["relational"]
backbones = ["conv4"]
datasets = ["synthetic"]
protocols = ["linear", "knn"]
baseline = "K = 2"
paper = "Figure 9 of nowhere"
axis = "K"
variants = [
  { name = "K = 2", method.relational = { k = 2 }, x = 2 },
  { name = "K = 3", method.relational = { k = 3 }, x = 3, paper_gain = 1.5 },
]
[[profiles.abl.experiments]]
name = "aggregation"
methods = ["relational"]
backbones = ["conv4"]
datasets = ["synthetic"]
protocols = ["linear", "knn"]
baseline = "cat"
variants = [
  { name = "cat", method.relational = { aggregation = "cat" } },
  { name = "max", method.relational = { aggregation = "max" } },
]
[[profiles.abl.experiments]]
name = "precision"
methods = ["relational"]
backbones = ["conv4"]
datasets = ["synthetic"]
protocols = ["linear", "knn"]
baseline = "fp32"
variants = [
  { name = "fp32", pretrain = { precision = "fp32" } },
  { name = "bf16", pretrain = { precision = "bf16" } },
]
"#;

fn git(dir: &Path, args: &[&str]) -> String {
    let out = Command::new("git")
        .args(["-c", "user.name=relnet-test", "-c", "user.email=test@relnet", "-c", "init.defaultBranch=main"])
        .args(args)
        .current_dir(dir)
        .output()
        .expect("git runs");
    assert!(out.status.success(), "git {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The ablation tables of a report's CSV, by (experiment, variant, metric): the mean.
fn ablation_means(results: &Path) -> Vec<(String, String, String, String)> {
    let csv = std::fs::read_to_string(results.join("ablations.csv")).unwrap();
    csv.lines()
        .skip(1)
        .map(|l| {
            let f: Vec<&str> = l.split(',').collect();
            (f[0].to_string(), f[1].to_string(), f[5].to_string(), f[7].to_string())
        })
        .collect()
}

#[test]
fn ablations_are_reported_and_a_grid_committed_without_checkpoints_is_done_until_tampered() {
    let tmp = tempfile::tempdir().unwrap();
    let repo = tmp.path().join("repo");
    let results = repo.join("docs/grids/abl");
    std::fs::create_dir_all(&results).unwrap();
    let grid = tmp.path().join("grid.toml");
    std::fs::write(&grid, ABLATION_GRID).unwrap();
    let args = |results: &Path| -> Vec<String> {
        ["reproduce", "--grid", s(&grid), "--profile", "abl", "--results", s(results)].map(String::from).to_vec()
    };
    let argv = args(&results);
    let r = sub(&argv.iter().map(String::as_str).collect::<Vec<_>>());
    assert_eq!(r.code, 0, "{}\n{}", r.stdout, r.stderr);
    // K = 2 is also the aggregation's `cat` and the precision's `fp32`: 4 settings x 2 seeds.
    assert!(r.stdout.contains("8 cells: 8 done now"), "{}", r.stdout);
    let md = std::fs::read_to_string(results.join("report.md")).unwrap();
    for want in [
        "## Ablations",
        "### K",
        "### aggregation",
        "| variant | linear accuracy | knn k=20 | knn k=200 | seed spread (linear accuracy) | gain over K = 2 (linear accuracy) | the paper's gain (read off its figure) | pretraining loss, last epoch (each variant's own loss) |",
        "| variant | linear accuracy | knn k=20 | knn k=200 | seed spread (linear accuracy) | gain over fp32 (linear accuracy) | pretraining loss, last epoch (each variant's own loss) | largest per-epoch loss gap to fp32 (same seed) |",
        "| K = 2 |",
        "(baseline)",
        "≈ +1.5",
        "The paper: Figure 9 of nowhere.",
        "Not reported in the paper.",
        "**The `abl` profile.** a test budget",
        "All 8 cells ran with",
    ] {
        assert!(md.contains(want), "`{want}` missing from the report:\n{md}");
    }
    assert!(!md.contains("## Linear evaluation"), "ablation cells are in the ablation tables only:\n{md}");
    for f in ["figures/ablation-K.png", "figures/ablation-K-gain.png", "ablations.csv"] {
        assert!(results.join(f).exists(), "{f}");
    }
    // Gains are seed by seed: K = 3's mean gain is its mean minus K = 2's, over the two seeds.
    let means = ablation_means(&results);
    assert_eq!(means.len(), 6 * 3, "6 variant rows x 3 metrics: {means:?}");
    let mean_of = |exp: &str, v: &str, metric: &str| -> f64 {
        means
            .iter()
            .find(|m| m.0 == format!("\"{exp}\"") && m.1 == format!("\"{v}\"") && m.2 == metric)
            .unwrap()
            .3
            .parse()
            .unwrap()
    };
    let csv = std::fs::read_to_string(results.join("ablations.csv")).unwrap();
    let k3 = csv.lines().find(|l| l.starts_with("\"K\",\"K = 3\"") && l.contains(",test_accuracy,")).unwrap();
    let gain: f64 = k3.split(',').nth(10).unwrap().parse().unwrap();
    let want = mean_of("K", "K = 3", "test_accuracy") - mean_of("K", "K = 2", "test_accuracy");
    assert!((gain - want).abs() < 1e-3, "gain {gain} against {want}: {k3}");
    // The shared cell's values are the same in every ablation.
    assert_eq!(mean_of("K", "K = 2", "top1_k20"), mean_of("aggregation", "cat", "top1_k20"));
    assert_eq!(mean_of("K", "K = 2", "top1_k20"), mean_of("precision", "fp32", "top1_k20"));
    // bf16 trains the same objective: its loss stays within a bf16 rounding's reach of fp32's.
    let bf16_row = md.lines().find(|l| l.starts_with("| bf16 |")).unwrap();
    let gap: f64 = bf16_row.trim_end_matches(" |").rsplit("| ").next().unwrap().parse().unwrap();
    assert!(gap > 0.0 && gap < 0.05, "per-epoch loss gap {gap}: {bf16_row}");

    // Commit the results the way the repository's .gitignore does, and clone them: the clone
    // holds manifests, configs, curves and records, no backbone or checkpoint.
    std::fs::copy(Path::new(env!("CARGO_MANIFEST_DIR")).join("../.gitignore"), repo.join(".gitignore")).unwrap();
    git(&repo, &["init", "-q"]);
    git(&repo, &["add", "-A"]);
    git(&repo, &["commit", "-qm", "grid"]);
    let files = git(&repo, &["ls-files"]);
    assert!(files.lines().any(|f| f.ends_with("/cell.json")), "{files}");
    assert!(files.lines().any(|f| f.contains("/results/") && f.ends_with(".json")), "{files}");
    assert!(!files.contains(".bpk") && !files.contains("checkpoint") && !files.contains(".lock"), "{files}");
    let clone = tmp.path().join("clone");
    git(tmp.path(), &["clone", "-q", s(&repo), s(&clone)]);
    let cloned = clone.join("docs/grids/abl");
    let argv = args(&cloned);
    let argv: Vec<&str> = argv.iter().map(String::as_str).collect();
    let r = sub(&argv);
    assert_eq!(r.code, 0, "{}\n{}", r.stdout, r.stderr);
    assert!(r.stdout.contains("0 done now, 8 already done"), "committed cells are done: {}", r.stdout);
    assert_eq!(ablation_means(&cloned), means, "the clone's report is the original's");
    let backbones: Vec<PathBuf> = std::fs::read_dir(cloned.join("cells"))
        .unwrap()
        .flatten()
        .map(|e| e.path().join("backbone.bpk"))
        .filter(|p| p.exists())
        .collect();
    assert!(backbones.is_empty(), "nothing was trained: {backbones:?}");

    // A record edited in the clone: its cell is trained again (no checkpoint travelled) and
    // evaluated, to the same values (same seed, same bits).
    let cells_k3: Vec<PathBuf> = std::fs::read_dir(cloned.join("cells"))
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .filter(|p| manifest(p)["cell"]["variants"]["K"] == "K = 3" && manifest(p)["cell"]["seed"] == 2)
        .collect();
    assert_eq!(cells_k3.len(), 1);
    let k3 = &cells_k3[0];
    let m = manifest(k3);
    let knn = k3.join(
        m["evals"].as_array().unwrap().iter().find(|e| e["key"] == "knn:synthetic").unwrap()["record"]
            .as_str()
            .unwrap(),
    );
    let before = metric(k3, "knn:synthetic", "top1_k20");
    let text = std::fs::read_to_string(&knn).unwrap();
    std::fs::write(&knn, text.replacen("\"top1_k20\": ", "\"top1_k20\": 1", 1)).unwrap();
    let r = sub(&argv);
    assert_eq!(r.code, 0, "{}\n{}", r.stdout, r.stderr);
    assert!(r.stdout.contains("1 done now, 7 already done"), "{}", r.stdout);
    assert!(r.stderr.contains("checksum mismatch"), "{}", r.stderr);
    assert!(k3.join("backbone.bpk").exists(), "pretrained again");
    assert_eq!(metric(k3, "knn:synthetic", "top1_k20"), before);
    assert_eq!(ablation_means(&cloned), means);

    // A manifest whose settings were edited (the record checksums still verify): distrusted by
    // the report, run again by the runner, and its curve starts again rather than growing.
    let other: PathBuf = std::fs::read_dir(cloned.join("cells"))
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .find(|p| manifest(p)["cell"]["variants"]["aggregation"] == "max" && manifest(p)["cell"]["seed"] == 1)
        .unwrap();
    let text = std::fs::read_to_string(other.join("cell.json")).unwrap();
    let edited = text.replacen("\"limit_images\": 192", "\"limit_images\": 191", 1);
    assert_ne!(text, edited, "the manifest records limit_images");
    std::fs::write(other.join("cell.json"), edited).unwrap();
    let r = relnet(&["report", s(&cloned)]);
    assert!(r.stdout.contains("not to the cell's name (edited)"), "{}", r.stdout);
    let r = sub(&argv);
    assert_eq!(r.code, 0, "{}\n{}", r.stdout, r.stderr);
    assert!(r.stderr.contains("not to the cell's name (edited): running the cell again"), "{}", r.stderr);
    assert!(r.stdout.contains("1 done now, 7 already done"), "{}", r.stdout);
    let curve = std::fs::read_to_string(other.join("metrics.jsonl")).unwrap();
    assert_eq!(curve.lines().count(), 1, "one epoch, logged once: {curve}");
    assert_eq!(ablation_means(&cloned), means);

    // A manifest whose seed was edited (its settings, and so its hash, untouched), and one whose
    // variant label was: the first is distrusted and run again, the second only relabelled from
    // the grid file (labels are not results).
    let pick = |exp: &str, v: &str, seed: u64| -> PathBuf {
        std::fs::read_dir(cloned.join("cells"))
            .unwrap()
            .flatten()
            .map(|e| e.path())
            .find(|p| manifest(p)["cell"]["variants"][exp] == v && manifest(p)["cell"]["seed"] == seed)
            .unwrap()
    };
    let (seeded, labelled) = (pick("precision", "bf16", 2), pick("aggregation", "max", 2));
    let text = std::fs::read_to_string(seeded.join("cell.json")).unwrap();
    std::fs::write(seeded.join("cell.json"), text.replacen("\"seed\": 2", "\"seed\": 1", 1)).unwrap();
    // The label's "max" is the manifest's last (the settings' aggregation comes first).
    let mut text = std::fs::read_to_string(labelled.join("cell.json")).unwrap();
    let at = text.rfind("\"max\"").unwrap();
    text.replace_range(at..at + 5, "\"sum\"");
    std::fs::write(labelled.join("cell.json"), text).unwrap();
    let r = relnet(&["report", s(&cloned)]);
    assert!(r.stdout.contains("differ from its settings (edited)"), "{}", r.stdout);
    assert!(!r.stdout.contains("| sum"), "labels come from the grid file: {}", r.stdout);
    let r = sub(&argv);
    assert_eq!(r.code, 0, "{}\n{}", r.stdout, r.stderr);
    assert!(r.stdout.contains("1 done now, 7 already done"), "{}", r.stdout);
    assert_eq!(manifest(&labelled)["cell"]["variants"]["aggregation"], "max");
    assert_eq!(ablation_means(&cloned), means);
}

/// docs/results.md and the README's headline blocks are what `cargo xtask docs` makes of the
/// committed grid results: a hand edit, or results committed without regenerating, fail here.
#[test]
fn the_results_page_and_the_readme_headline_are_generated_from_the_committed_grids() {
    use relnet_eval::grid::docs::GENERATED;
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let page = std::fs::read_to_string(root.join("docs/results.md")).unwrap();
    assert!(page.starts_with(GENERATED), "docs/results.md is generated by `cargo xtask docs`");
    let readme = std::fs::read_to_string(root.join("README.md")).unwrap();
    assert!(readme.contains("<!-- headline: docs/grids/notebook -->"), "the README's headline is generated");
    // What `cargo xtask docs` runs, from the workspace root, checking instead of writing.
    let args = [
        "report",
        "--template",
        "docs/results.in.md",
        "--out",
        "docs/results.md",
        "--headlines",
        "README.md",
        "--check",
    ];
    let out = subprocess_command(&args).current_dir(&root).output().unwrap();
    let (stdout, stderr) = (String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success(), "{stdout}\n{stderr}");
    assert!(stdout.contains("up to date"), "{stdout}");
    // The page names its sources: the paper's tables and figures, never a path outside the
    // repository.
    assert!(!page.contains("../shared"), "the results page points outside the repository");
    // Every committed cell verified and finished: a tampered record shows as untrusted, an
    // unfinished cell as incomplete or not run, and the page would still regenerate.
    for (doc, text) in [("docs/results.md", &page), ("README.md", &readme)] {
        for word in ["untrusted", "not run", "incomplete"] {
            // The report's mark: the kind, then its numbered note.
            let mark = format!("{word} [");
            assert!(!text.contains(&mark), "{doc} shows a cell as {word}: rerun or repair it, then `cargo xtask docs`");
        }
    }
}
