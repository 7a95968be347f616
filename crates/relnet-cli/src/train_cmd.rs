//! `relnet pretrain`, `relnet eval <evaluator>` and `relnet results`.
//!
//! The flags are not declared here: they derive from the library's option structs
//! (`PretrainConfig` and every method's options, `EvalConfig` and every evaluator's options),
//! and the flags given are laid over `--config FILE` by config key, with no hand-kept list.

use std::io::{IsTerminal, Write};
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use clap::{ArgMatches, Args, FromArgMatches};
use relnet_core::config::{self, given};
use relnet_core::methods::MethodConfig;
use relnet_core::pretrain::{MonitorSpec, Outcome, PretrainConfig, Reporter, Tick, pretrain};
use relnet_core::Error;
use relnet_eval::knn::KnnMonitor;
use relnet_eval::{EvalConfig, EvaluatorConfig, evaluate};

/// A library error as the user reads it: with the flag that fixes it where there is one.
pub fn explain(e: &Error) -> String {
    match e {
        Error::RunExists { dir } => format!("{} already holds a run; pass --resume to continue it, or choose another --out", dir.display()),
        Error::ConfigChanged { config } => format!(
            "{}: --resume with a different configuration than the run was started with; use the same flags (or none: `relnet pretrain --config {} --resume`)",
            config.display(),
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
            if t.step % 20 == 0 || t.step == t.steps {
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

/// `relnet pretrain`: the run's flags (from `PretrainConfig`), `--method` and every method's
/// flags (from the method registry), `--config`, `--resume`.
#[derive(Debug)]
pub struct PretrainArgs(ArgMatches);

impl FromArgMatches for PretrainArgs {
    fn from_arg_matches(m: &ArgMatches) -> Result<Self, clap::Error> {
        Ok(PretrainArgs(m.clone()))
    }
    fn update_from_arg_matches(&mut self, m: &ArgMatches) -> Result<(), clap::Error> {
        self.0 = m.clone();
        Ok(())
    }
}

impl Args for PretrainArgs {
    fn augment_args(cmd: clap::Command) -> clap::Command {
        let cmd = cmd
            .arg(clap::Arg::new("config").long("config").value_name("FILE").value_parser(clap::value_parser!(PathBuf)).help(
                "TOML file with any run key below and a [method] table (kind = \"relational\" and the method's keys); flags override it. Written resolved to <out>/config.toml",
            ))
            .arg(
                clap::Arg::new("method")
                    .long("method")
                    .value_parser(clap::builder::PossibleValuesParser::new(MethodConfig::NAMES))
                    .help("Pretraining method (default relational); each method's options are listed below under its name"),
            )
            .arg(clap::Arg::new("resume").long("resume").action(clap::ArgAction::SetTrue).help("Continue the run in --out from its last checkpoint"));
        MethodConfig::augment_args(PretrainConfig::augment_args(cmd))
    }
    fn augment_args_for_update(cmd: clap::Command) -> clap::Command {
        Self::augment_args(cmd)
    }
}

/// The flags of a run as a TOML table of overrides, with the method's flags in `[method]`.
/// Without `--method`, the method is the config file's (or the default): `file_kind` names it,
/// and a flag of another method is refused rather than switching methods.
fn pretrain_overrides(m: &ArgMatches, file_kind: &str) -> Result<toml::Table, config::ConfigError> {
    let run = PretrainConfig::from_arg_matches(m).map_err(|e| config::ConfigError::key("flags", e.to_string()))?;
    let mut table = given(&run, m);
    let chosen = m.get_one::<String>("method").cloned();
    let kind = chosen.clone().unwrap_or_else(|| file_kind.to_string());
    let mut method = toml::Table::new();
    if chosen.is_some() {
        method.insert("kind".into(), kind.clone().into());
    }
    for (name, flags) in MethodConfig::given(m) {
        if name != kind {
            let keys: Vec<String> = flags.keys().map(|k| format!("--{}", k.replace('_', "-"))).collect();
            return Err(config::ConfigError::key(
                flags.keys().next().map(String::as_str).unwrap_or("method"),
                format!("{} is an option of the {name} method; this run's method is {kind}", keys.join(", ")),
            ));
        }
        method.extend(flags);
    }
    if !method.is_empty() {
        method.insert("kind".into(), kind.into());
        table.insert("method".into(), toml::Value::Table(method));
    }
    Ok(table)
}

pub fn pretrain_cmd(a: PretrainArgs, out: &mut dyn Write, err: &mut dyn Write) -> anyhow::Result<()> {
    let m = a.0;
    let file = m.get_one::<PathBuf>("config").map(PathBuf::as_path);
    // The method the file (or the default, or --method) selects, with the run's flags laid on
    // but not yet the method's.
    let mut first = given(&PretrainConfig::from_arg_matches(&m)?, &m);
    if let Some(kind) = m.get_one::<String>("method") {
        first.insert("method".into(), toml::Value::Table([("kind".to_string(), toml::Value::from(kind.clone()))].into_iter().collect()));
    }
    let from_file: PretrainConfig = config::resolve(file, first)?;
    let overrides = pretrain_overrides(&m, from_file.method.get().name())?;
    let cfg: PretrainConfig = config::resolve(file, overrides)?;
    let cfg = cfg.resolved();
    writeln!(err, "# relnet pretrain, resolved config\n{}", config::to_toml(&cfg))?;
    let stop = stop_flag();
    let mut progress = Progress::new(err);
    let mut monitor = match cfg.monitor {
        Some(MonitorSpec::Knn { every }) => {
            let device = cfg.device.device().map_err(CliError::from)?;
            Some(KnnMonitor::new(&cfg.dataset, cfg.data_root.as_deref(), every, device).map_err(CliError::from)?)
        }
        None => None,
    };
    let outcome = pretrain(&cfg, m.get_flag("resume"), stop, &mut progress, monitor.as_mut().map(|k| k as &mut dyn relnet_core::pretrain::Monitor))
        .map_err(CliError::from)?;
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
        EvaluatorConfig::subcommands(cmd.arg(config)).subcommand_required(true)
    }
    fn augment_args_for_update(cmd: clap::Command) -> clap::Command {
        Self::augment_args(cmd)
    }
}

pub fn eval_cmd(a: EvalArgs, out: &mut dyn Write, err: &mut dyn Write) -> anyhow::Result<()> {
    let (name, sub) = a.0.subcommand().ok_or_else(|| anyhow::anyhow!("no evaluator given"))?;
    let common = EvalConfig::from_arg_matches(sub)?;
    let mut overrides = given(&common, sub);
    let own = EvaluatorConfig::given(name, sub).ok_or_else(|| anyhow::anyhow!("unknown evaluator `{name}`"))?;
    overrides.insert("evaluator".into(), toml::Value::Table(own));
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
    let headline = |k: &str| k.ends_with("accuracy") || k.starts_with("top1") || k == "map" || k.starts_with("precision_at_") || k.starts_with("recall_at_");
    for (k, v) in &record.metrics {
        if !headline(k) {
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

pub fn results_cmd(dir: PathBuf, out: &mut dyn Write) -> anyhow::Result<()> {
    write!(out, "{}", relnet_eval::results::table(&dir).map_err(CliError::from)?)?;
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
