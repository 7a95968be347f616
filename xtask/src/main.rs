//! Project automation: `cargo xtask <task>`.
//!
//! * `ci`: what `.ci/run` runs: the README's test command, the conformance tables of flex and
//!   burn-ndarray, then the type-check of the CUDA path.
//! * `bench pretrain [FLAGS]`: builds the release binary and runs `relnet bench pretrain FLAGS`
//!   (augment-only, step-only and end-to-end views/s and peak memory, in the terms of
//!   `../shared/bench/torch_reference.py speed`); `--features cuda` style cargo flags are not
//!   forwarded, everything after `pretrain` goes to relnet.
//!
//! * `reproduce [FLAGS]`: the paper's grid, `relnet reproduce FLAGS` in a release build
//!   (`--profile paper|cpu|notebook|ablations|quickstart|smoke`, `--only`, `--dry-run`, `--launcher slurm`...).
//! * `report [DIR]`: `relnet report DIR` in a release build.
//! * `docs`: `relnet report --template docs/results.in.md --out docs/results.md --headlines
//!   README.md` from the workspace root: the results page and the README's headline from the
//!   grid results committed under docs/grids (docs/reproduce.md, "Documents generated from
//!   reports"); `cargo xtask docs --check` only says whether they are up to date.
//! * `gpu-check [cuda|wgpu] [FLAGS]`: builds the release binary with that backend (default
//!   `cuda`) and runs `relnet bench device --device BACKEND FLAGS`: the conformance suite on the
//!   GPU, then pretraining speed, as one summary (docs/backends.md, "GPU check").

use std::process::{Command, ExitCode};

fn cargo(args: &[&str], envs: &[(&str, &str)]) -> bool {
    eprintln!("$ {}cargo {}", envs.iter().map(|(k, v)| format!("{k}={v} ")).collect::<String>(), args.join(" "));
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    Command::new(cargo).args(args).envs(envs.iter().copied()).status().is_ok_and(|s| s.success())
}

const USAGE: &str = "usage: cargo xtask <task>

tasks:
  ci                      run the test suite and type-check the CUDA build (what .ci/run does)
  bench pretrain [FLAGS]  pretraining speed: relnet bench pretrain FLAGS in a release build
                          (e.g. --dataset cifar10 --data-root DIR --backbone conv4 --k 4 --batch-size 64)
  reproduce [FLAGS]       the paper's experiment grid: relnet reproduce FLAGS in a release build
                          (e.g. --profile cpu --data-root DIR; --dry-run lists the cells)
  report [DIR]            the results of a grid beside the paper's: relnet report DIR
  docs [--check]          docs/results.md from docs/results.in.md and the grid results in
                          docs/grids, and the README's headline blocks from the same reports
                          (--check: fail where they differ from what is committed, write nothing)
  gpu-check [cuda|wgpu] [FLAGS]
                          build with that backend (default cuda) and run the GPU check:
                          relnet bench device --device BACKEND FLAGS (conformance + speed)";

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let ok = match args.first().map(String::as_str) {
        Some("ci") => {
            let show = |d: &str| {
                cargo(
                    &[
                        "run",
                        "-q",
                        "-p",
                        "relnet-cli",
                        "--features",
                        "ndarray",
                        "--",
                        "device",
                        "--device",
                        d,
                        "--conformance",
                    ],
                    &[],
                )
            };
            cargo(&["test", "--workspace"], &[])
                && show("cpu")
                && show("ndarray")
                && cargo(&["check", "--workspace", "--features", "cuda"], &[("DOCS_RS", "1")])
        }
        Some("bench") if args.get(1).map(String::as_str) == Some("pretrain") => {
            let mut a = vec!["run", "--release", "--quiet", "-p", "relnet-cli", "--", "bench", "pretrain"];
            a.extend(args[2..].iter().map(String::as_str));
            cargo(&a, &[])
        }
        Some(task @ ("reproduce" | "report")) => {
            let mut a = vec!["run", "--release", "--quiet", "-p", "relnet-cli", "--", task];
            a.extend(args[1..].iter().map(String::as_str));
            cargo(&a, &[])
        }
        Some("docs") => {
            // docs/results.md from its template and the committed grid results, and the
            // README's headline blocks from the same reports.
            let mut a = vec![
                "run",
                "--release",
                "--quiet",
                "-p",
                "relnet-cli",
                "--",
                "report",
                "--template",
                "docs/results.in.md",
                "--out",
                "docs/results.md",
                "--headlines",
                "README.md",
            ];
            a.extend(args[1..].iter().map(String::as_str));
            // The documents' paths are the workspace's, wherever this is run from.
            let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
            if std::env::set_current_dir(&root).is_err() {
                eprintln!("cannot enter the workspace root {}", root.display());
                return ExitCode::from(1);
            }
            cargo(&a, &[])
        }
        Some("gpu-check") => {
            let (backend, rest) = match args.get(1).map(String::as_str) {
                Some(b @ ("cuda" | "wgpu")) => (b, &args[2..]),
                _ => ("cuda", &args[1..]),
            };
            let mut a = vec![
                "run",
                "--release",
                "--quiet",
                "-p",
                "relnet-cli",
                "--features",
                backend,
                "--",
                "bench",
                "device",
                "--device",
                backend,
            ];
            a.extend(rest.iter().map(String::as_str));
            cargo(&a, &[])
        }
        _ => {
            eprintln!("{USAGE}");
            return ExitCode::from(2);
        }
    };
    if ok { ExitCode::SUCCESS } else { ExitCode::FAILURE }
}
