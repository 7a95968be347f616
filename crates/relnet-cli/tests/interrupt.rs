//! The real binary: Ctrl-C (SIGINT) during pretraining saves a checkpoint; `--resume` finishes
//! the run with every epoch's metrics.

#[cfg(unix)]
#[test]
fn sigint_checkpoints_and_resume_finishes() {
    use std::io::{BufRead, BufReader};
    use std::process::{Command, Stdio};

    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("run");
    let args = [
        "pretrain",
        "--dataset",
        "synthetic",
        "--limit-images",
        "640",
        "--k",
        "2",
        "--batch-size",
        "16",
        "--epochs",
        "3",
        "--out",
        out.to_str().unwrap(),
    ];
    let mut child = Command::new(env!("CARGO_BIN_EXE_relnet"))
        .args(args)
        .stderr(Stdio::piped())
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    // Wait for the first progress line, then interrupt.
    let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
    for line in lines.by_ref() {
        if line.unwrap().contains("step 20/") {
            break;
        }
    }
    Command::new("kill").args(["-INT", &child.id().to_string()]).status().unwrap();
    let rest: Vec<String> = lines.map_while(Result::ok).collect();
    let status = child.wait().unwrap();
    assert!(!status.success(), "an interrupted run must not report success");
    assert!(rest.iter().any(|l| l.contains("checkpoint saved")), "{rest:?}");
    assert!(out.join("checkpoint/progress.json").is_file());
    assert!(!out.join("backbone.bpk").exists());

    let r = Command::new(env!("CARGO_BIN_EXE_relnet")).args(args).arg("--resume").output().unwrap();
    let stderr = String::from_utf8_lossy(&r.stderr);
    assert!(r.status.success(), "{stderr}");
    assert!(stderr.contains("resuming at epoch 1"), "{stderr}");
    assert!(out.join("backbone.bpk").is_file());
    let metrics = std::fs::read_to_string(out.join("metrics.jsonl")).unwrap();
    assert_eq!(metrics.lines().count(), 3, "{metrics}");
}
