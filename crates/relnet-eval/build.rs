//! Stamps the binary with the git commit it was built from (`RELNET_COMMIT`), so that every grid
//! cell records which code produced it. `<short hash>` for a clean work tree, `<short hash>+dirty`
//! when tracked code (crates/, examples/, tests/, the workspace manifest and lock file) differs from it; docs do not count, `unknown` outside a git checkout.

use std::path::Path;
use std::process::Command;

fn git(args: &[&str], dir: &Path) -> Option<String> {
    let out = Command::new("git").args(args).current_dir(dir).output().ok()?;
    out.status.success().then(|| String::from_utf8_lossy(&out.stdout).trim().to_string())
}

fn main() {
    let manifest = std::env::var("CARGO_MANIFEST_DIR").expect("cargo sets CARGO_MANIFEST_DIR");
    let crate_dir = Path::new(&manifest);
    let stamp = match git(&["rev-parse", "--short=12", "HEAD"], crate_dir) {
        Some(hash) if !hash.is_empty() => {
            let dirty = git(
                &[
                    "--no-optional-locks",
                    "status",
                    "--porcelain",
                    "--",
                    ":/crates",
                    ":/examples",
                    ":/tests",
                    ":/xtask",
                    ":/Cargo.toml",
                    ":/Cargo.lock",
                ],
                crate_dir,
            )
            .is_some_and(|s| !s.is_empty());
            if dirty { format!("{hash}+dirty") } else { hash }
        }
        _ => "unknown".to_string(),
    };
    println!("cargo:rustc-env=RELNET_COMMIT={stamp}");
    // Rerun when the commit moves or a source file changes (the dirty flag).
    if let Some(git_dir) = git(&["rev-parse", "--absolute-git-dir"], crate_dir) {
        let g = Path::new(&git_dir);
        println!("cargo:rerun-if-changed={}", g.join("HEAD").display());
        println!("cargo:rerun-if-changed={}", g.join("index").display());
        if let Some(r) = git(&["symbolic-ref", "-q", "HEAD"], crate_dir) {
            println!("cargo:rerun-if-changed={}", g.join(r).display());
        }
    }
    if let Some(top) = git(&["rev-parse", "--show-toplevel"], crate_dir) {
        for d in ["crates", "examples", "tests", "xtask", "Cargo.toml", "Cargo.lock"] {
            let p = Path::new(&top).join(d);
            if p.exists() {
                println!("cargo:rerun-if-changed={}", p.display());
            }
        }
    }
}
