//! Project automation: `cargo xtask <task>`.
//!
//! * `ci`: what `.ci/run` runs: the README's test command, then the type-check of the CUDA path.
//!
//! Later tasks (`bench`, `reproduce`) live here too.

use std::process::{Command, ExitCode};

fn cargo(args: &[&str], envs: &[(&str, &str)]) -> bool {
    eprintln!("$ {}cargo {}", envs.iter().map(|(k, v)| format!("{k}={v} ")).collect::<String>(), args.join(" "));
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    Command::new(cargo).args(args).envs(envs.iter().copied()).status().is_ok_and(|s| s.success())
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args.first().map(String::as_str) {
        Some("ci") => {
            let ok = cargo(&["test", "--workspace"], &[])
                && cargo(&["check", "--workspace", "--features", "cuda"], &[("DOCS_RS", "1")]);
            if ok { ExitCode::SUCCESS } else { ExitCode::FAILURE }
        }
        _ => {
            eprintln!("usage: cargo xtask <task>\n\ntasks:\n  ci    run the test suite and type-check the CUDA build (what .ci/run does)");
            ExitCode::from(2)
        }
    }
}
