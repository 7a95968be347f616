//! Helpers for relnet's end-to-end tests (the tests themselves are in `tests/tests/`).

use std::path::PathBuf;

/// Output of one in-process `relnet` run.
pub struct Run {
    pub code: u8,
    pub stdout: String,
    pub stderr: String,
}

/// Runs `relnet ARGS...` in-process.
pub fn relnet(args: &[&str]) -> Run {
    let mut out = Vec::new();
    let mut err = Vec::new();
    let argv = std::iter::once("relnet").chain(args.iter().copied());
    let code = relnet_cli::run(argv, &mut out, &mut err);
    Run { code, stdout: String::from_utf8_lossy(&out).into(), stderr: String::from_utf8_lossy(&err).into() }
}

/// `../shared/data` beside the repository (or `$RELNET_SHARED_DATA`), if present.
/// Tests that need it print why they skip when it is absent.
pub fn shared_data() -> Option<PathBuf> {
    let p = std::env::var_os("RELNET_SHARED_DATA")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../shared/data"));
    if p.is_dir() {
        Some(p)
    } else {
        eprintln!("SKIPPED: {} not found (set RELNET_SHARED_DATA to run this test)", p.display());
        None
    }
}

/// The body of a test binary's `subprocess_entry_point` test: when the binary is re-executed by
/// [`subprocess_command`] (`RELNET_TEST_ARGS` set), runs `relnet` with those arguments and exits
/// with its code; otherwise returns at once. Tests run `relnet` as a separate process to kill it
/// with SIGKILL, to set environment variables (fault hooks, thread counts) without leaking them
/// into the tests beside, and to compare numbers across runs: runs inside one process share
/// burn's global random generator with the tests running beside them.
pub fn subprocess_entry() {
    let Ok(args) = std::env::var("RELNET_TEST_ARGS") else { return };
    let argv: Vec<&str> = args.split('\u{1f}').collect();
    let code = relnet_cli::run(std::iter::once("relnet").chain(argv), &mut std::io::stdout(), &mut std::io::stderr());
    std::process::exit(code as i32);
}

/// This test binary re-executed to run `relnet ARGS` through its `subprocess_entry_point` test.
pub fn subprocess_command(args: &[&str]) -> std::process::Command {
    let mut cmd = std::process::Command::new(std::env::current_exe().expect("the test binary"));
    cmd.args(["--exact", "subprocess_entry_point", "--nocapture", "--test-threads=1"])
        .env("RELNET_TEST_ARGS", args.join("\u{1f}"))
        .env("RELNET_PLAIN_PROGRESS", "1");
    cmd
}

/// Runs `relnet ARGS` in a separate process, with `env` set, to its end.
pub fn subprocess(args: &[&str], env: &[(&str, &str)]) -> Run {
    let out = subprocess_command(args).envs(env.iter().copied()).output().expect("the test binary runs");
    let stdout = String::from_utf8_lossy(&out.stdout);
    // libtest's own lines ("running 1 test") are not relnet's output.
    let stdout = stdout.lines().filter(|l| !l.starts_with("running ") && !l.is_empty()).collect::<Vec<_>>().join("\n");
    Run {
        code: out.status.code().unwrap_or(255) as u8,
        stdout,
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}
