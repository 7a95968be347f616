//! Faults injected into runs: a second process on one run directory, a stale lock left by a
//! killed process, an output folder that cannot be created; bad image headers.

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use relnet_tests::{relnet, subprocess, subprocess_command};

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

/// Not a test: the entry point of `relnet_tests::subprocess_command` (see `subprocess_entry`).
#[test]
fn subprocess_entry_point() {
    relnet_tests::subprocess_entry();
}

#[test]
fn a_second_process_on_one_run_directory_is_refused_and_a_stale_lock_is_taken_over() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("run");
    let args =
        ["pretrain", "--limit-images", "128", "--k", "2", "--batch-size", "32", "--epochs", "30", "--out", s(&out)];
    let mut child = subprocess_command(&args).stdout(Stdio::null()).stderr(Stdio::null()).spawn().unwrap();
    // Wait until the first run holds the lock and has saved its first checkpoint (after epoch 8
    // of 30).
    let started = Instant::now();
    while !out.join("checkpoint/progress.json").exists() {
        assert!(child.try_wait().unwrap().is_none(), "the first run ended early");
        assert!(started.elapsed() < Duration::from_secs(300), "the first run did not start");
        std::thread::sleep(Duration::from_millis(20));
    }
    let holder = std::fs::read_to_string(out.join("run.lock")).unwrap();
    assert!(holder.contains(&child.id().to_string()), "the lock names the first process: {holder}");

    // A second process on the same directory is refused, whatever its flags.
    let mut second: Vec<&str> = args.to_vec();
    second.push("--resume");
    let r = relnet(&second);
    assert_eq!(r.code, 1);
    assert!(
        r.stderr.contains(&format!("is in use by process {}", child.id())) && r.stderr.contains("run.lock"),
        "{}",
        r.stderr
    );

    // Killed, it leaves its lock behind; the next run recognises it as stale and resumes.
    child.kill().unwrap();
    child.wait().unwrap();
    assert!(out.join("run.lock").exists(), "a killed process cannot remove its lock");
    let r = relnet(&second);
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert!(r.stderr.contains("resuming at epoch"), "{}", r.stderr);
    assert!(!out.join("run.lock").exists(), "the lock is released at the end");
}

#[test]
fn an_output_folder_that_cannot_be_made_is_a_clear_error() {
    let tmp = tempfile::tempdir().unwrap();
    let file = tmp.path().join("a-file");
    std::fs::write(&file, b"x").unwrap();
    let out = file.join("run");
    let r = relnet(&["pretrain", "--limit-images", "64", "--epochs", "1", "--out", s(&out)]);
    assert_eq!(r.code, 1);
    assert!(r.stderr.contains(s(&out)), "names the folder: {}", r.stderr);
    assert_eq!(std::fs::read(&file).unwrap(), b"x", "nothing else touched");
}

#[test]
fn an_image_folder_with_a_symlink_loop_is_an_error_not_a_hang() {
    let tmp = tempfile::tempdir().unwrap();
    let class = tmp.path().join("loop/train/cat");
    std::fs::create_dir_all(&class).unwrap();
    relnet_core::data::folder::save_png(&class.join("a.png"), 8, 8, 3, &[5u8; 192]).unwrap();
    // cat/again -> cat: a walker that followed links would never end.
    std::os::unix::fs::symlink(&class, class.join("again")).unwrap();
    let t = std::time::Instant::now();
    let e = relnet_core::data::folder::list_class_folders(&tmp.path().join("loop/train"), "").unwrap_err().to_string();
    assert!(t.elapsed() < Duration::from_secs(5));
    assert!(e.contains("again") && e.contains("unexpected folder"), "{e}");
}

/// `relnet ARGS` in a separate process with `env` set (the fault-injection hooks are environment
/// variables, which must not leak into the tests running beside this one).
fn sub_env(args: &[&str], env: &[(&str, &str)]) -> relnet_tests::Run {
    subprocess(args, env)
}

#[test]
fn a_nonfinite_loss_or_gradient_stops_the_run_or_is_skipped() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("stop");
    let base = ["pretrain", "--limit-images", "96", "--k", "2", "--batch-size", "32", "--epochs", "3"];
    // Stop (the default): the error names epoch and step, the checkpoint of epoch 1 is kept,
    // and the run resumes from it once the fault is gone.
    let args: Vec<&str> = base.iter().copied().chain(["--out", s(&out)]).collect();
    let r = sub_env(&args, &[("RELNET_FAULT_NONFINITE", "2:1")]);
    assert_eq!(r.code, 4, "{}", r.stderr);
    assert!(r.stderr.contains("loss became NaN at epoch 2 step 1") && r.stderr.contains("checkpoint"), "{}", r.stderr);
    let progress = std::fs::read_to_string(out.join("checkpoint/progress.json")).unwrap();
    assert!(progress.contains("\"epoch\": 1"), "{progress}");
    let resumed: Vec<&str> = args.iter().copied().chain(["--resume"]).collect();
    let r = sub_env(&resumed, &[]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    let metrics = std::fs::read_to_string(out.join("metrics.jsonl")).unwrap();
    let epochs: Vec<u64> = metrics
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap()["epoch"].as_u64().unwrap())
        .collect();
    assert_eq!(epochs, [1, 2, 3], "each epoch once: {metrics}");

    // Skip: the steps are skipped and logged; one more in a row than allowed stops the run.
    let out = tmp.path().join("skip");
    let args: Vec<&str> =
        base.iter().copied().chain(["--on-nonfinite", "skip", "--max-nonfinite", "2", "--out", s(&out)]).collect();
    let r = sub_env(&args, &[("RELNET_FAULT_NONFINITE", "1:0,1:1")]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert!(r.stderr.contains("epoch 1 step 1: loss NaN: step skipped (2 in a row, at most 2)"), "{}", r.stderr);
    let first = std::fs::read_to_string(out.join("metrics.jsonl")).unwrap().lines().next().unwrap().to_string();
    let v: serde_json::Value = serde_json::from_str(&first).unwrap();
    assert_eq!(v["skipped_steps"], serde_json::json!([0, 1]), "{first}");
    assert_eq!(v["steps"], 1, "96 images in batches of 32: 3 steps, 2 skipped: {first}");
    let config = std::fs::read_to_string(out.join("config.toml")).unwrap();
    assert!(config.contains("on_nonfinite = \"skip\"") && config.contains("max_nonfinite = 2"), "{config}");
    let out = tmp.path().join("skip-too-many");
    let args: Vec<&str> =
        base.iter().copied().chain(["--on-nonfinite", "skip", "--max-nonfinite", "2", "--out", s(&out)]).collect();
    let r = sub_env(&args, &[("RELNET_FAULT_NONFINITE", "1:0,1:1,1:2")]);
    assert_eq!(r.code, 4, "{}", r.stderr);
    assert!(r.stderr.contains("at epoch 1 step 2"), "{}", r.stderr);

    // A finite loss with a NaN gradient element: the gradient check catches it, in both modes.
    let out = tmp.path().join("grad-stop");
    let args: Vec<&str> = base.iter().copied().chain(["--out", s(&out)]).collect();
    let r = sub_env(&args, &[("RELNET_FAULT_NONFINITE", "1:1:grad")]);
    assert_eq!(r.code, 4, "{}", r.stderr);
    assert!(r.stderr.contains("gradient became NaN at epoch 1 step 1"), "{}", r.stderr);
    let out = tmp.path().join("grad-skip");
    let args: Vec<&str> = base.iter().copied().chain(["--on-nonfinite", "skip", "--out", s(&out)]).collect();
    let r = sub_env(&args, &[("RELNET_FAULT_NONFINITE", "2:0:grad")]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert!(r.stderr.contains("epoch 2 step 0: gradient NaN: step skipped"), "{}", r.stderr);
    let second = std::fs::read_to_string(out.join("metrics.jsonl")).unwrap().lines().nth(1).unwrap().to_string();
    assert!(second.contains("\"skipped_steps\":[0]"), "{second}");
}

#[test]
fn the_same_seed_gives_the_same_bits_and_another_seed_does_not() {
    let tmp = tempfile::tempdir().unwrap();
    let run = |name: &str, seed: &str, threads: &str| {
        let out = tmp.path().join(name);
        let r = sub_env(
            &[
                "pretrain",
                "--limit-images",
                "128",
                "--k",
                "2",
                "--batch-size",
                "32",
                "--epochs",
                "2",
                "--seed",
                seed,
                "--out",
                s(&out),
            ],
            &[("RAYON_NUM_THREADS", threads)],
        );
        assert_eq!(r.code, 0, "{}", r.stderr);
        out
    };
    let (a, b, c, one) = (run("a", "5", "2"), run("b", "5", "2"), run("c", "6", "2"), run("one-thread", "5", "1"));
    let bytes = |d: &Path| std::fs::read(d.join("backbone.bpk")).unwrap();
    assert!(bytes(&a) == bytes(&b), "two runs with one seed write the same backbone file");
    assert!(bytes(&a) == bytes(&one), "one thread or two: the same backbone file");
    assert!(bytes(&a) != bytes(&c), "another seed, another backbone");
    // metrics.jsonl: equal but for the timings.
    let metrics = |d: &Path| -> Vec<serde_json::Value> {
        std::fs::read_to_string(d.join("metrics.jsonl"))
            .unwrap()
            .lines()
            .map(|l| {
                let mut v: serde_json::Value = serde_json::from_str(l).unwrap();
                v.as_object_mut().unwrap().retain(|k, _| k != "seconds" && k != "views_per_s");
                v
            })
            .collect()
    };
    assert_eq!(metrics(&a), metrics(&b));
    assert_ne!(metrics(&a), metrics(&c));
    // The checkpoints' model weights too (their files also hold burn's random parameter ids,
    // which key the optimiser state: compared through the loaded backbone instead).
    let ckpt = |d: &Path| std::fs::read(d.join("checkpoint/progress.json")).unwrap();
    assert_eq!(ckpt(&a), ckpt(&b));
}

/// Unmounts a test's tmpfs when dropped.
struct Mounted(std::path::PathBuf);

impl Drop for Mounted {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(&self.0).status();
    }
}

#[test]
fn a_full_disk_mid_run_keeps_the_last_checkpoint_whole_and_resumable() {
    let tmp = tempfile::tempdir().unwrap();
    let small = tmp.path().join("small");
    std::fs::create_dir_all(&small).unwrap();
    // A 1.2 MB tmpfs: room for one checkpoint of this run (about 720 kB), not for two.
    let mounted = Command::new("mount")
        .args(["-t", "tmpfs", "-o", "size=1200k", "tmpfs"])
        .arg(&small)
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if !mounted {
        eprintln!("SKIPPED: cannot mount a tmpfs here (needs root); the full-disk test did not run");
        return;
    }
    let _guard = Mounted(small.clone());
    let out = small.join("run");
    let args = ["pretrain", "--limit-images", "128", "--k", "2", "--batch-size", "32", "--epochs", "4"];
    let first: Vec<&str> = args.iter().copied().chain(["--out", s(&out)]).collect();
    let r = sub_env(&first, &[]);
    assert_eq!(r.code, 1, "the disk fills at the second checkpoint: {}", r.stderr);
    assert!(r.stderr.contains("No space left on device") && r.stderr.contains(s(&out)), "{}", r.stderr);
    // The first checkpoint is whole: its progress names generation 1, whose files are there.
    let progress: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("checkpoint/progress.json")).unwrap()).unwrap();
    assert_eq!((progress["epoch"].as_u64(), progress["generation"].as_u64()), (Some(1), Some(1)), "{progress}");
    let mut names: Vec<String> = std::fs::read_dir(out.join("checkpoint"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    assert_eq!(names, ["model.1.bpk", "optimizer.1.bpk", "progress.json"], "the failed generation was cleaned up");
    // Moved to a disk with room, it resumes from that checkpoint and finishes.
    let big = tmp.path().join("big");
    std::fs::create_dir_all(big.join("run/checkpoint")).unwrap();
    for f in [
        "config.toml",
        "metrics.jsonl",
        "checkpoint/model.1.bpk",
        "checkpoint/optimizer.1.bpk",
        "checkpoint/progress.json",
    ] {
        std::fs::copy(out.join(f), big.join("run").join(f)).unwrap();
    }
    let big_run = big.join("run");
    let resumed: Vec<&str> = args.iter().copied().chain(["--out", s(&big_run), "--resume"]).collect();
    let r = sub_env(&resumed, &[]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert!(r.stderr.contains("resuming at epoch 2 batch 0"), "{}", r.stderr);
    assert!(big.join("run/backbone.bpk").exists());
}

#[test]
fn a_finetuning_killed_mid_run_resumes_to_the_uninterrupted_result() {
    let tmp = tempfile::tempdir().unwrap();
    let pre = tmp.path().join("pre");
    let r = sub_env(
        &["pretrain", "--limit-images", "128", "--k", "2", "--batch-size", "32", "--epochs", "1", "--out", s(&pre)],
        &[],
    );
    assert_eq!(r.code, 0, "{}", r.stderr);
    // The same backbone bytes in two folders: one fine-tuning runs through, one is killed.
    let (whole, killed) = (tmp.path().join("whole"), tmp.path().join("killed"));
    for d in [&whole, &killed] {
        std::fs::create_dir_all(d).unwrap();
        std::fs::copy(pre.join("backbone.bpk"), d.join("backbone.bpk")).unwrap();
    }
    let ft = |d: &Path| -> Vec<String> {
        [
            "eval",
            "finetune",
            "--backbone",
            s(&d.join("backbone.bpk")),
            "--epochs",
            "12",
            "--limit-images",
            "256",
            "--resume",
        ]
        .iter()
        .map(|a| a.to_string())
        .collect()
    };
    let accuracy = |stdout: &str| {
        stdout
            .lines()
            .find_map(|l| l.strip_prefix("test_accuracy="))
            .unwrap_or_else(|| panic!("no accuracy in {stdout}"))
            .to_string()
    };
    let a = ft(&whole);
    let r = sub_env(&a.iter().map(String::as_str).collect::<Vec<_>>(), &[]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    let whole_acc = accuracy(&r.stdout);

    let a = ft(&killed);
    let argv: Vec<&str> = a.iter().map(String::as_str).collect();
    let mut child = subprocess_command(&argv).stdout(Stdio::null()).stderr(Stdio::null()).spawn().unwrap();
    let run_dir =
        || std::fs::read_dir(killed.join("finetune")).ok().and_then(|mut rd| rd.next()).map(|e| e.unwrap().path());
    let started = Instant::now();
    while !run_dir().is_some_and(|d| d.join("checkpoint/progress.json").exists()) {
        assert!(child.try_wait().unwrap().is_none(), "the fine-tuning ended before it could be killed");
        assert!(started.elapsed() < Duration::from_secs(300));
        std::thread::sleep(Duration::from_millis(10));
    }
    child.kill().unwrap(); // SIGKILL
    child.wait().unwrap();
    let r = sub_env(&a.iter().map(String::as_str).collect::<Vec<_>>(), &[]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert!(r.stderr.contains("resuming at epoch"), "{}", r.stderr);
    assert_eq!(accuracy(&r.stdout), whole_acc, "the resumed fine-tuning measures what the uninterrupted one did");
    let bytes = |root: &Path| {
        let d = std::fs::read_dir(root.join("finetune")).unwrap().next().unwrap().unwrap().path();
        std::fs::read(d.join("backbone.bpk")).unwrap()
    };
    assert!(bytes(&killed) == bytes(&whole), "the fine-tuned backbone is bit-identical");
}

#[test]
fn a_pretraining_killed_anywhere_resumes_to_the_same_bits() {
    let tmp = tempfile::tempdir().unwrap();
    // 4 epochs of 3 steps, a checkpoint after each epoch (generations 1-4).
    let base = ["pretrain", "--limit-images", "96", "--k", "2", "--batch-size", "32", "--epochs", "4", "--seed", "3"];
    let with_out = |out: &Path| -> Vec<String> {
        base.iter().map(|a| a.to_string()).chain(["--out".into(), s(out).into()]).collect()
    };
    let run = |args: &[String], env: &[(&str, &str)]| {
        let a: Vec<&str> = args.iter().map(String::as_str).collect();
        sub_env(&a, env)
    };
    let reference = tmp.path().join("reference");
    let t0 = Instant::now();
    let r = run(&with_out(&reference), &[]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    let duration = t0.elapsed();
    let want = std::fs::read(reference.join("backbone.bpk")).unwrap();
    let resume_and_compare = |out: &Path, what: &str| {
        // Whatever the kill left, the committed checkpoint is whole: progress.json parses and
        // names files that exist.
        if let Ok(text) = std::fs::read_to_string(out.join("checkpoint/progress.json")) {
            let v: serde_json::Value =
                serde_json::from_str(&text).unwrap_or_else(|e| panic!("{what}: progress.json half-written: {e}"));
            let g = v["generation"].as_u64().unwrap();
            for f in [format!("model.{g}.bpk"), format!("optimizer.{g}.bpk")] {
                assert!(out.join("checkpoint").join(&f).exists(), "{what}: {f} of the committed generation");
            }
        }
        let mut args = with_out(out);
        args.push("--resume".into());
        let r = run(&args, &[]);
        assert_eq!(r.code, 0, "{what}: {}", r.stderr);
        assert!(
            std::fs::read(out.join("backbone.bpk")).unwrap() == want,
            "{what}: the resumed backbone differs from the uninterrupted one"
        );
    };
    // Inside checkpoint writes: between the model's temporary file and its rename, before the
    // optimiser, before the commit; and after the last generation's commit, before the backbone
    // is saved (the checkpoint says finished, the backbone is not there).
    for (point, name) in [("2:model", "a"), ("3:optimizer", "b"), ("2:progress", "c"), ("4:committed", "d")] {
        let out = tmp.path().join(name);
        let r = run(&with_out(&out), &[("RELNET_FAULT_ABORT", point)]);
        assert_ne!(r.code, 0, "{point}: the hook aborts the run");
        // The last generation committed says finished, and no backbone was saved yet.
        assert!(point != "4:committed" || !out.join("backbone.bpk").exists(), "{point}: a backbone before the save");
        resume_and_compare(&out, point);
    }
    // Real SIGKILLs at instants spread over the run (fixed fractions of the reference's time).
    for (i, frac) in [0.35f64, 0.6, 0.85].iter().enumerate() {
        let out = tmp.path().join(format!("kill{i}"));
        let args = with_out(&out);
        let a: Vec<&str> = args.iter().map(String::as_str).collect();
        let mut child = subprocess_command(&a).stdout(Stdio::null()).stderr(Stdio::null()).spawn().unwrap();
        std::thread::sleep(duration.mul_f64(*frac));
        let _ = child.kill();
        child.wait().unwrap();
        resume_and_compare(&out, &format!("SIGKILL at {:.0}% of the run", frac * 100.0));
    }
}
