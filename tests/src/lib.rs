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
