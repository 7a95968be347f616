//! `relnet pretrain`, `relnet eval <evaluator>` and `relnet results`.
//!
//! The flags are not declared here: they derive from the library's option structs
//! (`PretrainConfig` and the chosen method's options, `EvalConfig` and each registered
//! evaluator's), and the flags given are laid over `--config FILE` by config key, with no
//! hand-kept list.

use std::ffi::OsString;
use std::io::{IsTerminal, Write};
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use clap::{ArgMatches, Args, FromArgMatches};
use relnet_core::Error;
use relnet_core::config::{self, given};
use relnet_core::methods::{MethodConfig, MethodEntry};
use relnet_core::pretrain::{Outcome, PretrainConfig, Reporter, Tick};
use relnet_eval::{EvalConfig, evaluate};

/// A library error as the user reads it: with the flag that fixes it where there is one.
pub fn explain(e: &Error) -> String {
    match e {
        Error::RunExists { dir } => {
            format!("{} already holds a run; pass --resume to continue it, or choose another --out", dir.display())
        }
        Error::ConfigChanged { config, keys } => format!(
            "{}: --resume with a different configuration than the run was started with (differs: {}); use the same flags (or none: `relnet pretrain --config {} --resume`)",
            config.display(),
            keys.join(", "),
            config.display()
        ),
        Error::NonFinite { .. } => format!("{e} (try a lower --lr)"),
        _ => e.to_string(),
    }
}

/// The exit code of a library error: 3 for a missing dataset, 4 for a diverged run, 1 otherwise.
pub fn exit_code(e: &Error) -> u8 {
    match e {
        Error::Data(relnet_core::DataError::Missing { .. }) => 3,
        Error::NonFinite { .. } => 4,
        _ => 1,
    }
}

/// Progress on stderr: a live bar redrawn in place on a terminal, plain lines every 20 steps
/// when stderr is redirected (a log file, CI).
pub struct Progress<'a> {
    pub err: &'a mut dyn Write,
    pub live: bool,
    drawn: bool,
}

impl<'a> Progress<'a> {
    pub fn new(err: &'a mut dyn Write) -> Self {
        // In-process callers (tests) pass a buffer: only the real stderr of a terminal is live.
        let live = std::io::stderr().is_terminal() && std::env::var_os("RELNET_PLAIN_PROGRESS").is_none();
        Progress { err, live, drawn: false }
    }
}

impl Reporter for Progress<'_> {
    fn line(&mut self, text: &str) {
        if self.drawn {
            let _ = write!(self.err, "\r\x1b[2K");
            self.drawn = false;
        }
        let _ = writeln!(self.err, "{text}");
    }

    fn tick(&mut self, t: &Tick) {
        if !self.live {
            if t.step.is_multiple_of(20) || t.step == t.steps {
                self.line(&t.to_string());
            }
            return;
        }
        let width = 24;
        let filled = (width * t.step) / t.steps.max(1);
        let bar: String = (0..width).map(|i| if i < filled { '#' } else { '.' }).collect();
        let _ = write!(
            self.err,
            "\r\x1b[2Kepoch {}/{} [{bar}] {}/{} loss {:.4} acc {:.3} {:.0} views/s ETA {}",
            t.epoch,
            t.epochs,
            t.step,
            t.steps,
            t.loss,
            t.accuracy,
            t.views_per_s,
            relnet_core::pretrain::fmt_secs(t.eta_s)
        );
        let _ = self.err.flush();
        self.drawn = true;
    }
}

static STOP: std::sync::OnceLock<Arc<AtomicBool>> = std::sync::OnceLock::new();

/// A flag set by Ctrl-C (installed once per process).
pub fn stop_flag() -> Arc<AtomicBool> {
    STOP.get_or_init(|| {
        let flag = Arc::new(AtomicBool::new(false));
        let f = flag.clone();
        let _ = ctrlc::set_handler(move || {
            if f.swap(true, Ordering::SeqCst) {
                eprintln!("second Ctrl-C: exiting without a checkpoint");
                std::process::exit(130);
            }
            eprintln!("Ctrl-C: finishing this step and saving a checkpoint (press again to quit at once)");
        });
        flag
    })
    .clone()
}

/// `relnet pretrain`: the run's flags (from `PretrainConfig`), `--method`, `--config`,
/// `--resume`, and the flags of the run's method (from its options struct).
///
/// A command holds one method's flags at a time, so two methods may have flags of the same name:
/// the words after `pretrain` are kept as given, the method is found first (`--method`, else the
/// config file's `[method] kind`, else relational), and they are parsed by [`pretrain_command`]
/// for that method.
#[derive(Debug)]
pub struct PretrainArgs(Vec<OsString>);

impl FromArgMatches for PretrainArgs {
    fn from_arg_matches(m: &ArgMatches) -> Result<Self, clap::Error> {
        Ok(PretrainArgs(m.get_many::<OsString>("args").map(|v| v.cloned().collect()).unwrap_or_default()))
    }
    fn update_from_arg_matches(&mut self, m: &ArgMatches) -> Result<(), clap::Error> {
        *self = Self::from_arg_matches(m)?;
        Ok(())
    }
}

impl Args for PretrainArgs {
    fn augment_args(cmd: clap::Command) -> clap::Command {
        cmd.disable_help_flag(true).arg(
            clap::Arg::new("args")
                .num_args(0..)
                .trailing_var_arg(true)
                .allow_hyphen_values(true)
                .value_parser(clap::value_parser!(OsString))
                .help("Run `relnet pretrain --help` (with `--method NAME` for that method's options)"),
        )
    }
    fn augment_args_for_update(cmd: clap::Command) -> clap::Command {
        Self::augment_args(cmd)
    }
}

/// The value of `--name VALUE` or `--name=VALUE` in `args`.
fn raw_value(args: &[OsString], name: &str) -> Option<String> {
    let flag = format!("--{name}");
    let mut it = args.iter().map(|a| a.to_string_lossy().to_string());
    while let Some(a) = it.next() {
        if a == flag {
            return it.next();
        }
        if let Some(v) = a.strip_prefix(&format!("{flag}=")) {
            return Some(v.to_string());
        }
    }
    None
}

/// The method `args` select: `--method`, else the config file's `[method] kind`, else the default.
fn chosen_method(args: &[OsString]) -> String {
    if let Some(m) = raw_value(args, "method") {
        return m;
    }
    let from_file = raw_value(args, "config")
        .and_then(|f| std::fs::read_to_string(f).ok())
        .and_then(|t| t.parse::<toml::Table>().ok())
        .and_then(|t| t.get("method")?.get("kind")?.as_str().map(str::to_string));
    from_file.unwrap_or_else(|| MethodConfig::default().get().name().to_string())
}

/// The command `relnet pretrain` for `method`: the run's flags and that method's.
pub fn pretrain_command(method: &MethodEntry) -> clap::Command {
    let names = relnet_core::methods::names();
    let list: Vec<String> =
        relnet_core::methods::entries().iter().map(|e| format!("  {:<12} {}", e.name, e.spec.summary)).collect();
    let cmd = clap::Command::new("pretrain")
        .bin_name("relnet pretrain")
        .about("Pretraining with relational reasoning or a baseline method, writing a backbone artifact")
        .after_help(format!("Methods (`relnet pretrain --method NAME --help` lists that method's options):\n{}", list.join("\n")))
        .arg(clap::Arg::new("config").long("config").value_name("FILE").value_parser(clap::value_parser!(PathBuf)).help(
            "TOML file with any run key below and a [method] table (kind = \"relational\" and the method's keys); flags override it. Written resolved to <out>/config.toml",
        ))
        .arg(
            clap::Arg::new("method")
                .long("method")
                .value_parser(clap::builder::PossibleValuesParser::new(names))
                .help("Pretraining method (default relational); `--method NAME --help` lists NAME's options"),
        )
        .arg(clap::Arg::new("resume").long("resume").action(clap::ArgAction::SetTrue).help("Continue the run in --out from its last checkpoint"));
    let cmd = PretrainConfig::augment_args(cmd).next_help_heading(format!("Options of the {} method", method.name));
    // The options struct's doc comment would become the command's description: set it after.
    method
        .augment_args(cmd)
        .next_help_heading(None::<&str>)
        .about("Pretraining with relational reasoning or a baseline method, writing a backbone artifact")
}

/// The clap error of an unknown flag as a config error naming the method that has it, when one
/// does: a flag never switches methods.
fn flag_of_another_method(e: &clap::Error, kind: &str) -> Option<config::ConfigError> {
    if e.kind() != clap::error::ErrorKind::UnknownArgument {
        return None;
    }
    let flag = match e.get(clap::error::ContextKind::InvalidArg)? {
        clap::error::ContextValue::String(s) => s.split('=').next()?.to_string(),
        _ => return None,
    };
    let long = flag.strip_prefix("--")?;
    let owner = relnet_core::methods::entries().into_iter().find(|m| {
        m.name != kind && m.augment_args(clap::Command::new(m.name)).get_arguments().any(|a| a.get_long() == Some(long))
    })?;
    Some(config::ConfigError::key(
        &long.replace('-', "_"),
        format!("{flag} is an option of the {} method; this run's method is {kind}", owner.name),
    ))
}

pub fn pretrain_cmd(a: PretrainArgs, out: &mut dyn Write, err: &mut dyn Write) -> anyhow::Result<()> {
    let kind = chosen_method(&a.0);
    let entry = match relnet_core::methods::entry(&kind) {
        Some(e) => e,
        // `--method` with an unknown name: clap's parser of `--method` lists the known ones.
        None if raw_value(&a.0, "method").is_some() => relnet_core::methods::entries()[0],
        None => {
            let known = relnet_core::methods::names().join(", ");
            let mut e = config::ConfigError::key("kind", format!("unknown method `{kind}` (known: {known})"));
            e.file = raw_value(&a.0, "config").map(PathBuf::from);
            return Err(e.into());
        }
    };
    let m = match pretrain_command(entry)
        .try_get_matches_from(std::iter::once(OsString::from("relnet pretrain")).chain(a.0.iter().cloned()))
    {
        Ok(m) => m,
        Err(e) => {
            return Err(flag_of_another_method(&e, &kind).map_or_else(|| anyhow::Error::new(e), anyhow::Error::new));
        }
    };
    let file = m.get_one::<PathBuf>("config").map(PathBuf::as_path);
    let mut overrides = given(&PretrainConfig::from_arg_matches(&m)?, &m);
    let mut method = entry.given(&m);
    if m.get_one::<String>("method").is_some() || !method.is_empty() {
        method.insert("kind".into(), kind.clone().into());
        overrides.insert("method".into(), toml::Value::Table(method));
    }
    let cfg: PretrainConfig = config::resolve(file, overrides)?;
    let cfg = cfg.resolved();
    writeln!(err, "# relnet pretrain, resolved config\n{}", config::to_toml(&cfg))?;
    let stop = stop_flag();
    let mut progress = Progress::new(err);
    let outcome = relnet_eval::pretrain(&cfg, m.get_flag("resume"), stop, &mut progress).map_err(CliError::from)?;
    match outcome {
        Outcome::Finished { backbone } => writeln!(out, "backbone={}", backbone.display())?,
        Outcome::Interrupted { epoch, batch } => {
            writeln!(out, "interrupted at epoch {} batch {batch}; resume with --resume", epoch + 1)?;
            anyhow::bail!("interrupted");
        }
    }
    Ok(())
}

/// A library error carried to `run`, which prints it and picks the exit code.
#[derive(Debug)]
pub struct CliError(pub Error);

impl std::fmt::Display for CliError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&explain(&self.0))
    }
}

impl std::error::Error for CliError {}

impl From<Error> for CliError {
    fn from(e: Error) -> Self {
        CliError(e)
    }
}

/// `relnet eval <evaluator>`: one subcommand per registered evaluator, each with the common
/// evaluation flags (from `EvalConfig`) and its own (from its options struct).
#[derive(Debug)]
pub struct EvalArgs(ArgMatches);

impl FromArgMatches for EvalArgs {
    fn from_arg_matches(m: &ArgMatches) -> Result<Self, clap::Error> {
        Ok(EvalArgs(m.clone()))
    }
    fn update_from_arg_matches(&mut self, m: &ArgMatches) -> Result<(), clap::Error> {
        self.0 = m.clone();
        Ok(())
    }
}

impl Args for EvalArgs {
    fn augment_args(cmd: clap::Command) -> clap::Command {
        let config = clap::Arg::new("config")
            .long("config")
            .value_name("FILE")
            .global(true)
            .value_parser(clap::value_parser!(PathBuf))
            .help("TOML file with the keys below and an [evaluator] table (kind = \"linear\" and its keys); flags override it");
        relnet_eval::entries()
            .into_iter()
            .fold(cmd.arg(config), |cmd, e| cmd.subcommand(e.subcommand()))
            .subcommand_required(true)
    }
    fn augment_args_for_update(cmd: clap::Command) -> clap::Command {
        Self::augment_args(cmd)
    }
}

pub fn eval_cmd(a: EvalArgs, out: &mut dyn Write, err: &mut dyn Write) -> anyhow::Result<()> {
    let (name, sub) = a.0.subcommand().ok_or_else(|| anyhow::anyhow!("no evaluator given"))?;
    let common = EvalConfig::from_arg_matches(sub)?;
    let mut overrides = given(&common, sub);
    let entry = relnet_eval::entry(name).ok_or_else(|| anyhow::anyhow!("unknown evaluator `{name}`"))?;
    overrides.insert("evaluator".into(), toml::Value::Table(entry.given(sub)));
    let file = sub.get_one::<PathBuf>("config").or_else(|| a.0.get_one::<PathBuf>("config"));
    let cfg: EvalConfig = config::resolve(file.map(PathBuf::as_path), overrides)?;
    writeln!(err, "# relnet eval {name}, resolved config\n{}", config::to_toml(&cfg))?;
    let mut progress = Progress::new(err);
    let (record, path) = evaluate(&cfg, stop_flag(), &mut progress).map_err(CliError::from)?;
    // Files produced, then the headline metrics, the main one last, as `key=value` lines a
    // script can read.
    for (role, p) in &record.outputs {
        writeln!(out, "{role}={}", p.display())?;
    }
    let spec = cfg.evaluator.get().spec();
    for (k, v) in &record.metrics {
        if !spec.is_headline(k) {
            continue;
        }
        if k != &format!("{}_accuracy", record.eval_split) {
            writeln!(out, "{k}={v:.2}")?;
        }
    }
    if let Some(v) = record.metrics.get(&format!("{}_accuracy", record.eval_split)) {
        writeln!(out, "{}_accuracy={v:.2}", record.eval_split)?;
    }
    writeln!(err, "record: {}", path.display())?;
    Ok(())
}

/// `relnet results DIR`: the table of every record at DIR (a run, a `results/` folder, a tree,
/// one file), each verified against its checksum. The whole table is always printed; the exit
/// status is 1 (after it) when a record was edited after it was written or does not read, so a
/// script notices; records without a checksum (schema version 1) are listed as `unverified` and
/// do not fail.
pub fn results_cmd(dir: PathBuf, out: &mut dyn Write) -> anyhow::Result<()> {
    let listing = relnet_eval::results::listing(&dir).map_err(CliError::from)?;
    write!(out, "{}", listing.text)?;
    if !listing.trusted() {
        let mut problems = Vec::new();
        if listing.edited > 0 {
            problems.push(format!("{} edited after it was written", listing.edited));
        }
        if listing.unreadable > 0 {
            problems.push(format!("{} unreadable", listing.unreadable));
        }
        anyhow::bail!(
            "{}: {} result record(s) cannot be trusted ({}); they are named below the table",
            dir.display(),
            listing.edited + listing.unreadable,
            problems.join(", ")
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tick(step: usize) -> Tick {
        Tick { epoch: 1, epochs: 2, step, steps: 40, loss: 0.5, accuracy: 0.7, views_per_s: 100.0, eta_s: 65.0 }
    }

    #[test]
    fn plain_progress_prints_every_twenty_steps_and_live_progress_redraws_a_bar() {
        let mut buf = Vec::new();
        let mut p = Progress { err: &mut buf, live: false, drawn: false };
        for s in 1..=40 {
            p.tick(&tick(s));
        }
        let text = String::from_utf8(buf).unwrap();
        assert_eq!(text.lines().count(), 2, "{text}");
        assert!(text.contains("step 20/40") && text.contains("ETA 1m05s") && !text.contains('\r'), "{text}");

        let mut buf = Vec::new();
        let mut p = Progress { err: &mut buf, live: true, drawn: false };
        p.tick(&tick(10));
        p.tick(&tick(20));
        p.line("epoch 1/2 done");
        let text = String::from_utf8(buf).unwrap();
        assert_eq!(text.matches('\r').count(), 3, "two redraws and one clear: {text:?}");
        assert!(text.contains("[######..................] 10/40") && text.contains("ETA 1m05s"), "{text:?}");
        assert!(text.ends_with("\r\x1b[2Kepoch 1/2 done\n"), "a message clears the bar first: {text:?}");
    }
}
