//! The `relnet` command-line tool. `run` is the whole program, callable in-process by tests.

mod bench_cmd;
mod cli;
mod data_cmd;
mod device_cmd;
mod flags;
mod plot_cmd;
mod reproduce_cmd;
mod train_cmd;

use std::ffi::OsString;
use std::io::Write;

use clap::Parser;

pub use cli::Cli;

/// Runs `relnet` with `args` (the first is the program name), writing to `out` and `err`.
/// Returns the process exit code: 0 success, 1 failure, 2 bad usage.
pub fn run<I, T>(args: I, out: &mut dyn Write, err: &mut dyn Write) -> u8
where
    I: IntoIterator<Item = T>,
    T: Into<OsString> + Clone,
{
    let cli = match Cli::try_parse_from(args) {
        Ok(c) => c,
        Err(e) => {
            let code = if e.use_stderr() { 2 } else { 0 };
            let text = e.render().ansi().to_string();
            let _ = if code == 0 { write!(out, "{text}") } else { write!(err, "{text}") };
            return code;
        }
    };
    match cli::dispatch(cli, out, err) {
        Ok(()) => 0,
        Err(e) => {
            // A subcommand that parses its own flags (`pretrain`: one method's at a time).
            if let Some(e) = e.downcast_ref::<clap::Error>() {
                let code = if e.use_stderr() { 2 } else { 0 };
                let text = e.render().ansi().to_string();
                let _ = if code == 0 { write!(out, "{text}") } else { write!(err, "{text}") };
                return code;
            }
            let _ = writeln!(err, "error: {e:#}");
            e.downcast_ref::<train_cmd::CliError>().map_or(1, |c| train_cmd::exit_code(&c.0))
        }
    }
}
