//! `relnet reproduce`: the paper's grid (or a profile of it) in one command, and `relnet report`.

use std::io::Write;
use std::path::{Path, PathBuf};

use clap::{Args, ValueEnum};
use relnet_core::data::DataRoot;
use relnet_core::data::registry::lookup;
use relnet_core::device::DeviceSpec;
use relnet_core::pretrain::fmt_secs;
use relnet_eval::grid::run::{CellRun, Env, Status, run_cell, run_grid, write_grid_files};
use relnet_eval::grid::slurm::{SlurmJob, script};
use relnet_eval::grid::{Cell, Filter, Grid, PAPER_GRID, estimate_seconds};

use crate::train_cmd::{CliError, Progress, stop_flag};

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Launcher {
    /// Run the cells here, one after another.
    Local,
    /// Write a SLURM job-array script (one cell per array task) and print how to submit it.
    Slurm,
}

#[derive(Args, Debug)]
pub struct ReproduceArgs {
    /// The profile: paper (the published grid, a GPU job), cpu (Table 2's Conv-4 / CIFAR-10
    /// column at 2 epochs), notebook (the official notebook's run, 3 seeds, fp32 and bf16),
    /// ablations (K, aggregation and loss at 3 epochs), quickstart and smoke (the embedded
    /// dataset, minutes), or one of --grid's.
    #[arg(long, default_value = "cpu")]
    pub profile: String,
    /// A grid file to use instead of the embedded one (crates/relnet-eval/grids/reproduce.toml).
    #[arg(long, value_name = "FILE")]
    pub grid: Option<PathBuf>,
    /// Keep only these cells: key=value pairs, comma-separated (keys method, dataset, backbone,
    /// seed, protocol; a key given twice means either value).
    #[arg(long, value_name = "FILTER", default_value = "")]
    pub only: String,
    /// Results directory (default: results/<profile>). Cells go to <DIR>/cells/<name>-<hash>/.
    #[arg(long, value_name = "DIR")]
    pub results: Option<PathBuf>,
    /// Folder holding the datasets (default: $RELNET_DATA, else ./data).
    #[arg(long, value_name = "DIR")]
    pub data_root: Option<PathBuf>,
    /// Compute device: cpu, cuda or cuda:N.
    #[arg(long, default_value_t = DeviceSpec::Cpu, env = "RELNET_DEVICE")]
    pub device: DeviceSpec,
    /// List the cells with their estimated time and whether their data is present; run nothing.
    #[arg(long)]
    pub dry_run: bool,
    /// Run only this cell: its index in the (filtered) list, as `--dry-run` numbers them, or its
    /// directory name or hash. What a SLURM array task runs.
    #[arg(long, value_name = "ID")]
    pub cell: Option<String>,
    /// Where cells run.
    #[arg(long, value_enum, default_value_t = Launcher::Local)]
    pub launcher: Launcher,
    /// An extra #SBATCH option for the SLURM script (repeatable), e.g. --sbatch=--partition=gpu.
    #[arg(long = "sbatch", value_name = "OPTION", allow_hyphen_values = true)]
    pub sbatch: Vec<String>,
    /// Do not render the report after the grid.
    #[arg(long)]
    pub no_report: bool,
}

fn results_dir(a: &ReproduceArgs) -> PathBuf {
    a.results.clone().unwrap_or_else(|| PathBuf::from("results").join(&a.profile))
}

fn find_cell<'a>(cells: &'a [Cell], id: &str) -> anyhow::Result<(usize, &'a Cell)> {
    if let Some(hit) = cells.iter().enumerate().find(|(_, c)| c.hash == id || c.dir_name() == id) {
        return Ok(hit);
    }
    if let Ok(i) = id.parse::<usize>() {
        return cells.get(i).map(|c| (i, c)).ok_or_else(|| {
            anyhow::anyhow!(
                "cell {i} does not exist: the grid has {} cells (0..{})",
                cells.len(),
                cells.len().saturating_sub(1)
            )
        });
    }
    let hits: Vec<(usize, &Cell)> =
        cells.iter().enumerate().filter(|(_, c)| c.dir_name() == id || c.hash.starts_with(id)).collect();
    match hits.as_slice() {
        [one] => Ok(*one),
        [] => anyhow::bail!("no cell named `{id}` in this grid (see --dry-run)"),
        _ => anyhow::bail!("`{id}` matches {} cells; give more of the hash", hits.len()),
    }
}

pub fn reproduce(a: ReproduceArgs, out: &mut dyn Write, err: &mut dyn Write) -> anyhow::Result<()> {
    let grid_text = match &a.grid {
        Some(p) => std::fs::read_to_string(p).map_err(|e| CliError(relnet_core::Error::io(p, e)))?,
        None => PAPER_GRID.to_string(),
    };
    let origin = a.grid.clone().unwrap_or_else(|| PathBuf::from("<embedded grids/reproduce.toml>"));
    let grid = Grid::parse(&grid_text, &origin).map_err(CliError)?;
    let only: Filter = a.only.parse().map_err(|e: String| anyhow::anyhow!("--only: {e}"))?;
    let profile = grid.profile(&a.profile).map_err(CliError)?;
    let cells = grid.cells(&a.profile, &only).map_err(CliError)?;
    if cells.is_empty() {
        anyhow::bail!("no cell of profile `{}` passes --only {}", a.profile, a.only);
    }
    let results = results_dir(&a);
    let env = Env { results: results.clone(), data_root: a.data_root.clone(), device: a.device };

    if a.dry_run {
        return dry_run(&grid, &a, &cells, &env, out);
    }
    if a.launcher == Launcher::Slurm {
        return slurm(&grid, &a, &grid_text, &cells, &env, out);
    }
    std::fs::create_dir_all(&results).map_err(|e| CliError(relnet_core::Error::io(&results, e)))?;
    // A single cell (a SLURM array task) writes only into its own cell directory; the grid files
    // beside the cells are written by the invocation that runs the grid or writes the script.
    if a.cell.is_none() {
        write_grid_files(&env, &grid_text, &a.profile, &a.only).map_err(CliError)?;
    }
    let stop = stop_flag();
    let mut progress = Progress::new(err);
    if let Some(id) = &a.cell {
        let (i, cell) = find_cell(&cells, id)?;
        use relnet_core::pretrain::Reporter;
        progress.line(&format!("cell {i}: {} -> {}", cell.label(), cell.dir(&results).display()));
        let run = run_cell(cell, &env, stop, &mut progress).map_err(CliError)?;
        let m = relnet_eval::grid::run::Manifest::load(&cell.dir(&results)).ok().flatten();
        match run {
            CellRun::AlreadyDone => writeln!(out, "cell {i} {}: already done", cell.dir_name())?,
            CellRun::Ran(st) => {
                writeln!(out, "cell {i} {}: {}", cell.dir_name(), st.as_str())?;
                if let Some(e) = m.and_then(|m| m.error) {
                    writeln!(out, "  {e}")?;
                }
                if st == Status::Failed {
                    anyhow::bail!("cell {i} failed");
                }
            }
            CellRun::Interrupted => anyhow::bail!("interrupted; run the same command again to resume"),
            CellRun::Locked(why) => anyhow::bail!("{why}"),
        }
        return Ok(());
    }
    let summary = run_grid(&grid, profile, &cells, &env, stop, &mut progress).map_err(CliError)?;
    writeln!(out, "{summary}")?;
    writeln!(out, "results: {}", results.display())?;
    if !a.no_report && !summary.interrupted {
        crate::reproduce_cmd::write_report(&results, out)?;
    }
    if summary.interrupted {
        anyhow::bail!("interrupted; run the same command again to resume");
    }
    if summary.failed > 0 {
        anyhow::bail!("{} cell(s) failed; their errors are in the report and in cells/*/cell.json", summary.failed);
    }
    Ok(())
}

fn dry_run(grid: &Grid, a: &ReproduceArgs, cells: &[Cell], env: &Env, out: &mut dyn Write) -> anyhow::Result<()> {
    let profile = grid.profile(&a.profile).map_err(CliError)?;
    let root = DataRoot::resolve(env.data_root.as_deref());
    writeln!(out, "profile {}: {}", a.profile, profile.description)?;
    writeln!(out, "results: {}", env.results.display())?;
    writeln!(out, "{:>4}  {:<52} {:>9}  {:<10} evaluations", "cell", "directory", "estimate", "data")?;
    let mut total = 0.0;
    let mut absent = std::collections::BTreeSet::new();
    for (i, c) in cells.iter().enumerate() {
        let est = estimate_seconds(grid, profile, c);
        total += est.unwrap_or(0.0);
        let mut missing: Vec<&str> = Vec::new();
        for d in std::iter::once(c.dataset.as_str()).chain(c.evals.iter().map(|e| e.dataset.as_str())) {
            let present = lookup(d).is_ok_and(|info| info.locate(&root).is_ok());
            if !present && !missing.contains(&d) {
                missing.push(d);
                absent.insert(d.to_string());
            }
        }
        let data = if missing.is_empty() { "present".to_string() } else { format!("absent: {}", missing.join(" ")) };
        let done = match relnet_eval::grid::run::Manifest::load(&c.dir(&env.results)) {
            Ok(Some(m)) if m.status == Status::Done => " (done)",
            Ok(Some(_)) => " (started)",
            _ => "",
        };
        let evals: Vec<String> = c.evals.iter().map(|e| e.key()).collect();
        writeln!(
            out,
            "{i:>4}  {:<52} {:>9}  {:<10} {}{done}",
            c.dir_name(),
            est.map_or("?".into(), fmt_secs),
            data,
            evals.join(" ")
        )?;
    }
    let evals: usize = cells.iter().map(|c| c.evals.len()).sum();
    writeln!(
        out,
        "{} cells, {evals} evaluations; estimated {} in all on {} ({})",
        cells.len(),
        fmt_secs(total),
        profile.estimate,
        grid.estimate.devices.get(&profile.estimate).map_or("no estimate table", |t| t.source.as_str())
    )?;
    for d in absent {
        let help = lookup(&d).ok().and_then(|info| info.locate(&root).err()).map(|e| e.to_string()).unwrap_or_default();
        writeln!(out, "\ndataset `{d}` is absent: its cells or evaluations would be reported as skipped.\n{help}")?;
    }
    Ok(())
}

fn slurm(
    grid: &Grid,
    a: &ReproduceArgs,
    grid_text: &str,
    cells: &[Cell],
    env: &Env,
    out: &mut dyn Write,
) -> anyhow::Result<()> {
    let profile = grid.profile(&a.profile).map_err(CliError)?;
    let abs = |p: &Path| std::path::absolute(p).unwrap_or_else(|_| p.to_path_buf());
    let results = abs(&env.results);
    let env = Env { results: results.clone(), data_root: env.data_root.as_deref().map(abs), device: env.device };
    std::fs::create_dir_all(results.join("slurm")).map_err(|e| CliError(relnet_core::Error::io(&results, e)))?;
    write_grid_files(&env, grid_text, &a.profile, &a.only).map_err(CliError)?;
    let relnet = std::env::current_exe()?;
    let longest = cells
        .iter()
        .filter_map(|c| estimate_seconds(grid, profile, c))
        .fold(None, |m: Option<f64>, s| Some(m.map_or(s, |m| m.max(s))));
    let device = env.device.to_string();
    let grid_path = results.join("grid.toml");
    let job = SlurmJob {
        relnet: &relnet,
        grid: &grid_path,
        profile: &a.profile,
        only: &a.only,
        results: &results,
        data_root: env.data_root.as_deref(),
        device: &device,
        extra: &a.sbatch,
        longest_estimate_s: longest,
    };
    let path = results.join("slurm").join("reproduce.sbatch");
    relnet_core::fsutil::write_atomic(&path, script(&job, cells).as_bytes())
        .map_err(|e| CliError(relnet_core::Error::io(&path, e)))?;
    writeln!(out, "SLURM job-array script: {} ({} tasks, one cell each)", path.display(), cells.len())?;
    writeln!(out, "submit:  sbatch {}", path.display())?;
    writeln!(out, "then:    {} report {}", relnet.display(), results.display())?;
    Ok(())
}

#[derive(Args, Debug)]
pub struct ReportArgs {
    /// A results directory of `relnet reproduce`.
    #[arg(default_value = "results/cpu")]
    pub results: PathBuf,
    /// Build a document from a template instead: each line `<!-- report: DIR -->` becomes the
    /// report of the results directory DIR (relative to the template's folder), each
    /// `<!-- provenance -->` the commit and host that ran them. Needs --out.
    #[arg(long, value_name = "FILE", requires = "out")]
    pub template: Option<PathBuf>,
    /// Where --template's document is written.
    #[arg(long, value_name = "FILE", requires = "template")]
    pub out: Option<PathBuf>,
    /// Refill, in place, the `<!-- headline: DIR -->` ... `<!-- /headline -->` blocks of this
    /// document (DIR relative to its folder) with a table of DIR's report (repeatable).
    #[arg(long, value_name = "FILE")]
    pub headlines: Vec<PathBuf>,
    /// With --template or --headlines: write nothing, and fail when a document differs from
    /// what the reports make of it (a stale or hand-edited document).
    #[arg(long)]
    pub check: bool,
}

pub fn report_cmd(a: ReportArgs, out: &mut dyn Write) -> anyhow::Result<()> {
    if a.template.is_none() && a.headlines.is_empty() {
        anyhow::ensure!(
            !a.check,
            "--check compares generated documents with what is on disk: give --template and --out, or --headlines"
        );
        return write_report(&a.results, out);
    }
    use relnet_eval::grid::docs::{fill_headlines, render_template};
    let folder = |p: &Path| p.parent().map(Path::to_path_buf).unwrap_or_default();
    let read = |p: &Path| std::fs::read_to_string(p).map_err(|e| CliError(relnet_core::Error::io(p, e)));
    let mut stale: Vec<String> = Vec::new();
    // Writes `doc` to `path`, or (with --check) notes whether it differs from what is there.
    let mut put = |path: &Path, doc: String, what: &str, out: &mut dyn Write| -> anyhow::Result<()> {
        if a.check {
            if std::fs::read_to_string(path).ok().as_deref() != Some(doc.as_str()) {
                stale.push(path.display().to_string());
            }
            return Ok(());
        }
        relnet_core::fsutil::write_atomic(path, doc.as_bytes())
            .map_err(|e| CliError(relnet_core::Error::io(path, e)))?;
        writeln!(out, "{what} {}", path.display())?;
        Ok(())
    };
    if let (Some(t), Some(o)) = (&a.template, &a.out) {
        let doc = render_template(&read(t)?, &folder(t), !a.check).map_err(CliError)?;
        put(o, doc, &format!("{} ->", t.display()), out)?;
    }
    for d in &a.headlines {
        let doc = fill_headlines(&read(d)?, &folder(d)).map_err(CliError)?;
        put(d, doc, "refilled the headline blocks of", out)?;
    }
    if !stale.is_empty() {
        anyhow::bail!("not what the reports make of them (run `cargo xtask docs`): {}", stale.join(", "));
    }
    if a.check {
        writeln!(out, "up to date")?;
    }
    Ok(())
}

pub fn write_report(results: &Path, out: &mut dyn Write) -> anyhow::Result<()> {
    let r = relnet_eval::grid::report::write(results).map_err(CliError)?;
    write!(out, "{}", r.markdown)?;
    writeln!(
        out,
        "report: {} and {} ({} figures in {})",
        results.join("report.md").display(),
        results.join("report.csv").display(),
        r.figures.len(),
        results.join("figures").display()
    )?;
    Ok(())
}
