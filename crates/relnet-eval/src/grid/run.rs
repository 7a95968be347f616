//! Running cells: pretraining (resumed where it stopped), then each evaluation, each outcome
//! recorded in the cell's `cell.json` with the SHA-256 of the result file it wrote.
//!
//! A cell whose `cell.json` says done, and whose result files all match their recorded checksums
//! and parse as records, is skipped. Anything else is run again: pretraining resumes from its
//! checkpoint (or returns at once when it had finished), evaluations whose records still verify
//! are kept, the others (missing, truncated, hand-edited) are run again. A dataset that is absent
//! makes the cell (or the evaluation) `skipped` with the reason and how to obtain it, and a rerun
//! tries it again once the dataset is there; any other
//! error, or a panic, makes it `failed` with the error, and the grid goes on.

use std::collections::BTreeMap;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

use relnet_core::data::DataRoot;
use relnet_core::data::registry::lookup;
use relnet_core::device::DeviceSpec;
use relnet_core::pretrain::{Outcome, Reporter, Tick, fmt_secs};
use relnet_core::record::{Integrity, ResultRecord, sha256_file};
use relnet_core::{DataError, Error, Result};
use serde::{Deserialize, Serialize};

use super::{Cell, Grid, Profile, estimate_seconds};
use crate::{EvalConfig, evaluate};

/// The `cell.json` format's version.
pub const MANIFEST_SCHEMA: u32 = 1;

#[derive(Serialize, Deserialize, Debug, Clone, Copy, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    Running,
    Done,
    Failed,
    Skipped,
}

impl Status {
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Running => "running",
            Status::Done => "done",
            Status::Failed => "failed",
            Status::Skipped => "skipped",
        }
    }
}

/// The outcome of one evaluation of a cell.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
pub struct EvalOutcome {
    pub key: String,
    pub status: Status,
    /// The result record, relative to the cell's directory.
    pub record: Option<PathBuf>,
    /// SHA-256 of the record file as written.
    pub record_sha256: Option<String>,
    pub error: Option<String>,
    pub seconds: f64,
}

/// A cell's `cell.json`: what it is and how far it got.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Manifest {
    pub schema_version: u32,
    pub cell: Cell,
    pub status: Status,
    /// Why the cell failed or was skipped.
    pub error: Option<String>,
    pub backbone_sha256: Option<String>,
    pub pretrain_seconds: f64,
    pub evals: Vec<EvalOutcome>,
    pub relnet_version: String,
    /// The commits of the relnet builds that ran part of the cell ([`build_commit`]), in order:
    /// one entry when one build ran it all.
    #[serde(default)]
    pub commits: Vec<String>,
    /// The machines that ran part of it ([`host_description`]), in order.
    #[serde(default)]
    pub hosts: Vec<String>,
    pub updated_unix: u64,
}

/// The git commit this binary was built from (`<hash>`, `<hash>+dirty`, or `unknown`).
pub fn build_commit() -> &'static str {
    env!("RELNET_COMMIT")
}

/// This machine as a results table names it: CPU model, threads, and the vector extensions that
/// decide relnet's kernels (`avx2 fma avx512f avx512_bf16 amx_bf16`, those present).
pub fn host_description() -> String {
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let field = |name: &str| {
        cpuinfo.lines().find_map(|l| {
            let (k, v) = l.split_once(':')?;
            (k.trim() == name).then(|| v.trim().to_string())
        })
    };
    let model = field("model name").unwrap_or_else(|| std::env::consts::ARCH.to_string());
    let flags = field("flags").unwrap_or_default();
    let have: Vec<&str> = ["avx2", "fma", "avx512f", "avx512_bf16", "amx_bf16"]
        .into_iter()
        .filter(|f| flags.split_whitespace().any(|x| x == *f))
        .collect();
    let mut d = format!("{model}, {} threads", rayon::current_num_threads());
    if !have.is_empty() {
        d.push_str(", ");
        d.push_str(&have.join(" "));
    }
    d
}

impl Manifest {
    fn new(cell: &Cell) -> Self {
        Manifest {
            schema_version: MANIFEST_SCHEMA,
            cell: cell.clone(),
            status: Status::Running,
            error: None,
            backbone_sha256: None,
            pretrain_seconds: 0.0,
            evals: Vec::new(),
            relnet_version: env!("CARGO_PKG_VERSION").into(),
            commits: Vec::new(),
            hosts: Vec::new(),
            updated_unix: 0,
        }
    }

    pub fn path(cell_dir: &Path) -> PathBuf {
        cell_dir.join("cell.json")
    }

    /// Reads a cell's manifest; `Ok(None)` when there is none.
    pub fn load(cell_dir: &Path) -> Result<Option<Manifest>> {
        let path = Manifest::path(cell_dir);
        let bytes = match std::fs::read(&path) {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(Error::io(&path, e)),
        };
        let value: serde_json::Value =
            serde_json::from_slice(&bytes).map_err(|e| Error::artifact(&path, format!("not a cell manifest: {e}")))?;
        match value.get("schema_version").and_then(|v| v.as_u64()) {
            Some(v) if v == MANIFEST_SCHEMA as u64 => {}
            Some(v) => {
                return Err(Error::artifact(
                    &path,
                    format!("cell manifest schema version {v}; this relnet reads version {MANIFEST_SCHEMA}"),
                ));
            }
            None => return Err(Error::artifact(&path, "not a cell manifest: no schema_version")),
        }
        serde_json::from_value(value).map(Some).map_err(|e| Error::artifact(&path, format!("bad cell manifest: {e}")))
    }

    fn save(&mut self, cell_dir: &Path) -> Result<()> {
        self.updated_unix =
            std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs());
        let path = Manifest::path(cell_dir);
        let json = serde_json::to_vec_pretty(self).map_err(|e| Error::Invalid(e.to_string()))?;
        relnet_core::fsutil::write_atomic(&path, &json).map_err(|e| Error::io(&path, e))
    }

    pub fn eval(&self, key: &str) -> Option<&EvalOutcome> {
        self.evals.iter().find(|e| e.key == key)
    }

    /// Whether the configuration the manifest records still hashes to the cell's name: a
    /// manifest whose settings were edited (or that came from elsewhere with other settings) is
    /// not trusted, whatever its records say.
    pub fn config_verifies(&self) -> std::result::Result<(), Untrusted> {
        let c = &self.cell;
        let actual = super::config_hash(&c.pretrain);
        if actual != c.hash {
            return Err(Untrusted::ConfigEdited { cell: c.dir_name(), actual });
        }
        // The cell's own fields name what its configuration says.
        let p = &c.pretrain;
        if c.seed != p.seed
            || c.dataset != p.dataset
            || c.backbone != p.backbone.to_string()
            || c.method != p.method.get().spec().name
        {
            return Err(Untrusted::IdentityEdited { cell: c.dir_name() });
        }
        Ok(())
    }

    /// [`Manifest::config_verifies`], and that the manifest lies in its own cell's folder.
    pub fn verifies_in(&self, dir: &Path) -> std::result::Result<(), Untrusted> {
        self.config_verifies()?;
        if dir.file_name().is_none_or(|n| n.to_string_lossy() != self.cell.dir_name()) {
            return Err(Untrusted::Moved { dir: dir.to_path_buf(), cell: self.cell.dir_name() });
        }
        Ok(())
    }
}

/// Why an evaluation's record cannot be trusted: the report shows it, the runner reruns the
/// evaluation.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum Untrusted {
    #[error("the manifest names no record file")]
    NoRecord,
    #[error("{} is missing", .0.display())]
    Missing(PathBuf),
    #[error("{}: {problem}", path.display())]
    Unreadable { path: PathBuf, problem: String },
    #[error("{} changed since it was written (checksum mismatch)", .0.display())]
    Changed(PathBuf),
    #[error("{} was measured on another backbone than the cell's", .0.display())]
    OtherBackbone(PathBuf),
    #[error("{}: the settings of evaluation {key} changed", dir.display())]
    SettingsChanged { dir: PathBuf, key: String },
    #[error("cell {cell}: its manifest's pretraining settings hash to {actual}, not to the cell's name (edited)")]
    ConfigEdited { cell: String, actual: String },
    #[error("cell {cell}: its manifest's method, dataset, backbone or seed differ from its settings (edited)")]
    IdentityEdited { cell: String },
    #[error("{}: holds the manifest of cell {cell} (moved or copied)", dir.display())]
    Moved { dir: PathBuf, cell: String },
    #[error("{}: written without a checksum (schema version 1); a grid cell's records carry one", .0.display())]
    NoChecksum(PathBuf),
}

/// Checks an evaluation's record against its manifest entry: present, same bytes, a valid
/// record of `backbone_sha256`. Returns the record or why it cannot be trusted.
pub fn verify_record(
    cell_dir: &Path,
    outcome: &EvalOutcome,
    backbone_sha256: Option<&str>,
) -> std::result::Result<ResultRecord, Untrusted> {
    let rel = outcome.record.as_ref().ok_or(Untrusted::NoRecord)?;
    let path = cell_dir.join(rel);
    if !path.exists() {
        return Err(Untrusted::Missing(path));
    }
    let sha = sha256_file(&path).map_err(|e| Untrusted::Unreadable { path: path.clone(), problem: e.to_string() })?;
    if Some(sha.as_str()) != outcome.record_sha256.as_deref() {
        return Err(Untrusted::Changed(path));
    }
    let (record, integrity) = ResultRecord::load_checked(&path)
        .map_err(|e| Untrusted::Unreadable { path: path.clone(), problem: e.to_string() })?;
    match integrity {
        Integrity::Verified => {}
        Integrity::Unverified => return Err(Untrusted::NoChecksum(path)),
        Integrity::Edited { problem } => {
            return Err(Untrusted::Unreadable {
                path: path.clone(),
                problem: format!("result record edited after it was written: {problem}"),
            });
        }
    }
    if backbone_sha256.is_some_and(|b| b != record.backbone.sha256) {
        return Err(Untrusted::OtherBackbone(path));
    }
    Ok(record)
}

/// Where cells run: the results directory and the machine's data root and device.
#[derive(Clone, Debug)]
pub struct Env {
    pub results: PathBuf,
    pub data_root: Option<PathBuf>,
    pub device: DeviceSpec,
}

/// What became of one cell in this invocation.
#[derive(Debug, Clone, PartialEq)]
pub enum CellRun {
    /// Finished before and verified: nothing run.
    AlreadyDone,
    /// Ran now; the manifest's status says how it ended.
    Ran(Status),
    /// Interrupted (Ctrl-C); the cell resumes on the next run.
    Interrupted,
    /// Another process holds the cell's lock.
    Locked(String),
}

/// A line of the reporter given, prefixed with the cell and the grid's position.
struct Prefixed<'a> {
    inner: &'a mut dyn Reporter,
    prefix: String,
}

impl Reporter for Prefixed<'_> {
    fn line(&mut self, text: &str) {
        self.inner.line(&format!("{} {text}", self.prefix));
    }
    fn tick(&mut self, t: &Tick) {
        self.inner.tick(t)
    }
}

/// The error as a manifest records it, and whether it is an absent dataset.
fn classify(e: &Error) -> (Status, String) {
    match e {
        Error::Data(DataError::Missing { .. }) => (Status::Skipped, e.to_string()),
        _ => (Status::Failed, e.to_string()),
    }
}

fn panic_text(p: Box<dyn std::any::Any + Send>) -> String {
    let msg = p
        .downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| p.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "unknown panic".into());
    format!("panicked: {msg}")
}

/// Whether `dataset` can be found under the data root (`Err` with the reason and the download
/// command when not).
fn dataset_present(dataset: &str, root: &DataRoot) -> std::result::Result<(), Error> {
    let info = lookup(dataset)?;
    info.locate(root).map(|_| ()).map_err(Error::from)
}

/// Puts `o` in `m.evals`, replacing the entry of the same key.
fn set_outcome(m: &mut Manifest, o: EvalOutcome) {
    match m.evals.iter_mut().find(|e| e.key == o.key) {
        Some(e) => *e = o,
        None => m.evals.push(o),
    }
}

/// Whether the outcome `o` of `spec` in the manifest `m` can be kept: measured with the same
/// evaluation settings, and either done with a record that verifies or skipped for a dataset
/// that is still absent.
fn keeps(dir: &Path, m: &Manifest, spec: &super::EvalSpec, root: &DataRoot) -> std::result::Result<bool, Untrusted> {
    let Some(o) = m.eval(&spec.key()) else { return Ok(false) };
    let skipped = o.status == Status::Skipped;
    if o.status != Status::Done && !skipped {
        return Ok(false);
    }
    if m.cell.evals.iter().find(|e| e.key() == spec.key()) != Some(spec) {
        return Err(Untrusted::SettingsChanged { dir: dir.to_path_buf(), key: spec.key() });
    }
    if skipped {
        // Tried again once the dataset is there.
        return Ok(dataset_present(&spec.dataset, root).is_err());
    }
    verify_record(dir, o, m.backbone_sha256.as_deref()).map(|_| true)
}

/// Runs one cell (or finds it done). Errors are only those of the cell's own bookkeeping (its
/// directory or manifest cannot be written); a failing pretraining or evaluation is recorded.
pub fn run_cell(cell: &Cell, env: &Env, stop: Arc<AtomicBool>, report: &mut dyn Reporter) -> Result<CellRun> {
    let dir = cell.dir(&env.results);
    std::fs::create_dir_all(&dir).map_err(|e| Error::io(&dir, e))?;
    let _lock =
        match relnet_core::fsutil::DirLock::take(&dir, "cell.lock").map_err(|e| Error::io(dir.join("cell.lock"), e))? {
            Ok(l) => l,
            Err(why) => return Ok(CellRun::Locked(format!("{} is {why}", dir.display()))),
        };
    // Read under the lock: another process may have just finished the cell.
    let prior = match Manifest::load(&dir) {
        Ok(m) => m.filter(|m| m.cell.hash == cell.hash).filter(|m| match m.verifies_in(&dir) {
            Ok(()) => true,
            Err(why) => {
                report.line(&format!("{why}: running the cell again"));
                false
            }
        }),
        Err(e) => {
            report.line(&format!("{e}: running the cell again"));
            None
        }
    };
    let root = DataRoot::resolve(env.data_root.as_deref());
    if let Some(m) = &prior
        && m.status == Status::Done
    {
        let mut all = true;
        for spec in &cell.evals {
            match keeps(&dir, m, spec, &root) {
                Ok(true) => {}
                Ok(false) => all = false,
                Err(why) => {
                    report.line(&format!("{why}: running that evaluation again"));
                    all = false;
                }
            }
        }
        if all {
            // The experiments and variants a cell serves are the grid file's labels, not results:
            // kept up to date without running anything.
            if m.cell.experiments != cell.experiments || m.cell.variants != cell.variants {
                let mut m = m.clone();
                m.cell.experiments = cell.experiments.clone();
                m.cell.variants = cell.variants.clone();
                m.save(&dir)?;
            }
            let asked = cell.evals.iter().filter_map(|spec| m.eval(&spec.key()));
            for o in asked.filter(|o| o.status == Status::Skipped) {
                report.line(&format!("{}: still skipped ({})", o.key, o.error.as_deref().unwrap_or("dataset absent")));
            }
            return Ok(CellRun::AlreadyDone);
        }
    }
    // The manifest starts from the prior one, so that a kill or an error loses none of its
    // verified outcomes; evaluations this run does not ask for (another `protocol` filter) stay
    // as they were.
    let mut all = cell.clone();
    if let Some(p) = &prior {
        for e in &p.cell.evals {
            if !all.evals.iter().any(|x| x.key() == e.key()) {
                all.evals.push(e.clone());
            }
        }
    }
    let mut m = match &prior {
        Some(p) => Manifest { cell: all.clone(), status: Status::Running, error: None, ..p.clone() },
        None => Manifest::new(&all),
    };
    // Outcomes whose settings changed are dropped (their records stay on disk, unreferenced).
    let changed: Vec<String> = m
        .evals
        .iter()
        .filter(|o| {
            prior.as_ref().is_some_and(|p| {
                p.cell.evals.iter().find(|e| e.key() == o.key) != all.evals.iter().find(|e| e.key() == o.key)
            })
        })
        .map(|o| o.key.clone())
        .collect();
    m.evals.retain(|o| !changed.contains(&o.key));
    // This build and machine run part of the cell now.
    for (list, item) in [(&mut m.commits, build_commit().to_string()), (&mut m.hosts, host_description())] {
        if !list.contains(&item) {
            list.push(item);
        }
    }
    m.save(&dir)?;

    // Pretraining.
    let mut cfg = cell.pretrain.clone();
    cfg.out = dir.clone();
    cfg.data_root = env.data_root.clone();
    cfg.device = env.device;
    let started = Instant::now();
    let pre = if cell.pretrain.method.get().spec().needs_data { dataset_present(&cell.dataset, &root) } else { Ok(()) };
    let outcome =
        pre.and_then(|()| match catch_unwind(AssertUnwindSafe(|| crate::pretrain(&cfg, true, stop.clone(), report))) {
            Ok(r) => r,
            Err(p) => Err(Error::Invalid(panic_text(p))),
        });
    m.pretrain_seconds += started.elapsed().as_secs_f64();
    let fail = |m: &mut Manifest, status: Status, why: String, report: &mut dyn Reporter| -> Result<CellRun> {
        m.status = status;
        report.line(&format!("{}: {why}", status.as_str()));
        m.error = Some(why);
        m.save(&dir)?;
        Ok(CellRun::Ran(status))
    };
    let backbone = match outcome {
        Ok(Outcome::Finished { backbone }) => backbone,
        Ok(Outcome::Interrupted { .. }) => {
            m.save(&dir)?;
            return Ok(CellRun::Interrupted);
        }
        Err(e) => {
            let (status, why) = classify(&e);
            return fail(&mut m, status, format!("pretraining: {why}"), report);
        }
    };
    match sha256_file(&backbone) {
        Ok(sha) => {
            if m.backbone_sha256.as_ref().is_some_and(|old| *old != sha) {
                // Another backbone than the one the kept outcomes measured.
                m.evals.clear();
            }
            m.backbone_sha256 = Some(sha);
        }
        Err(e) => return fail(&mut m, Status::Failed, format!("pretraining: {e}"), report),
    }
    m.save(&dir)?;

    // Evaluations.
    for spec in &cell.evals {
        let key = spec.key();
        if matches!(keeps(&dir, &m, spec, &root), Ok(true)) {
            continue;
        }
        report.line(&format!("evaluation {key}"));
        let t = Instant::now();
        let ecfg = EvalConfig {
            backbone: backbone.clone(),
            dataset: spec.dataset.clone(),
            data_root: env.data_root.clone(),
            seed: cell.seed,
            device: env.device,
            results: None,
            evaluator: spec.evaluator.clone(),
        };
        let result = dataset_present(&spec.dataset, &root).and_then(|()| {
            match catch_unwind(AssertUnwindSafe(|| evaluate(&ecfg, stop.clone(), report))) {
                Ok(r) => r,
                Err(p) => Err(Error::Invalid(panic_text(p))),
            }
        });
        if stop.load(Ordering::SeqCst) {
            m.save(&dir)?;
            return Ok(CellRun::Interrupted);
        }
        let mut o = EvalOutcome {
            key: key.clone(),
            status: Status::Done,
            record: None,
            record_sha256: None,
            error: None,
            seconds: t.elapsed().as_secs_f64(),
        };
        match result.and_then(|(_, path)| Ok((sha256_file(&path)?, path))) {
            Ok((sha, path)) => {
                o.record_sha256 = Some(sha);
                o.record = Some(path.strip_prefix(&dir).map(Path::to_path_buf).unwrap_or(path));
            }
            Err(e) => {
                let (status, why) = classify(&e);
                report.line(&format!("evaluation {key} {}: {why}", status.as_str()));
                o.status = status;
                o.error = Some(why);
            }
        }
        set_outcome(&mut m, o);
        m.save(&dir)?;
    }
    let asked: Vec<&EvalOutcome> = cell.evals.iter().filter_map(|e| m.eval(&e.key())).collect();
    m.status = if m.evals.iter().any(|e| e.status == Status::Failed) {
        Status::Failed
    } else if !asked.is_empty() && asked.iter().all(|e| e.status == Status::Skipped) {
        Status::Skipped
    } else {
        Status::Done
    };
    m.error = match m.status {
        Status::Failed => Some("an evaluation failed".into()),
        Status::Skipped => Some("every evaluation was skipped (dataset absent)".into()),
        _ => None,
    };
    m.save(&dir)?;
    Ok(CellRun::Ran(m.status))
}

/// The grid's outcome in this invocation.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct Summary {
    pub total: usize,
    pub already_done: usize,
    pub done: usize,
    pub failed: usize,
    pub skipped: usize,
    pub locked: usize,
    pub interrupted: bool,
    pub seconds: f64,
}

impl std::fmt::Display for Summary {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} cells: {} done now, {} already done, {} failed, {} skipped (dataset absent){}{} in {}",
            self.total,
            self.done,
            self.already_done,
            self.failed,
            self.skipped,
            if self.locked > 0 { format!(", {} locked by another process", self.locked) } else { String::new() },
            if self.interrupted { ", interrupted" } else { "" },
            fmt_secs(self.seconds)
        )
    }
}

/// Writes the grid file (for the report's paper values) and the invocation beside the cells.
pub fn write_grid_files(env: &Env, grid_text: &str, profile: &str, only: &str) -> Result<()> {
    let g = env.results.join("grid.toml");
    relnet_core::fsutil::write_atomic(&g, grid_text.as_bytes()).map_err(|e| Error::io(&g, e))?;
    let inv = env.results.join(format!("invocation-{}.toml", relnet_core::record::sanitize(profile)));
    let text = format!(
        "# written by `relnet reproduce`\nprofile = {profile:?}\nonly = {only:?}\ndevice = \"{}\"\ndata_root = {:?}\nrelnet_version = \"{}\"\n",
        env.device,
        env.data_root.as_ref().map(|p| p.display().to_string()).unwrap_or_default(),
        env!("CARGO_PKG_VERSION")
    );
    relnet_core::fsutil::write_atomic(&inv, text.as_bytes()).map_err(|e| Error::io(&inv, e))
}

/// Runs `cells` one after another, with progress and an ETA for the whole grid.
pub fn run_grid(
    grid: &Grid,
    profile: &Profile,
    cells: &[Cell],
    env: &Env,
    stop: Arc<AtomicBool>,
    report: &mut dyn Reporter,
) -> Result<Summary> {
    let started = Instant::now();
    // Cells whose manifest says done cost nothing (they are verified and skipped).
    let done_before =
        |c: &Cell| matches!(Manifest::load(&c.dir(&env.results)), Ok(Some(m)) if m.status == Status::Done);
    let estimates: Vec<f64> = cells
        .iter()
        .map(|c| if done_before(c) { 0.0 } else { estimate_seconds(grid, profile, c).unwrap_or(0.0) })
        .collect();
    let mut s = Summary { total: cells.len(), ..Default::default() };
    // Measured seconds per estimated second, over the cells run in this invocation.
    let (mut spent, mut estimated) = (0.0f64, 0.0f64);
    for (i, cell) in cells.iter().enumerate() {
        let rest: f64 = estimates[i..].iter().sum();
        let pace = if estimated > 0.0 { spent / estimated } else { 1.0 };
        let prefix = format!("[cell {}/{}]", i + 1, cells.len());
        report.line(&format!(
            "{prefix} {} -> {} (grid: {} done, {} failed, {} skipped; ETA {})",
            cell.label(),
            cell.dir(&env.results).display(),
            s.done + s.already_done,
            s.failed,
            s.skipped,
            fmt_secs(rest * pace)
        ));
        let t = Instant::now();
        let run = run_cell(cell, env, stop.clone(), &mut Prefixed { inner: report, prefix: prefix.clone() })?;
        match &run {
            CellRun::AlreadyDone => {
                s.already_done += 1;
                report.line(&format!("{prefix} already done: skipped"));
                continue;
            }
            CellRun::Ran(Status::Done) => s.done += 1,
            CellRun::Ran(Status::Skipped) => s.skipped += 1,
            CellRun::Ran(_) => s.failed += 1,
            CellRun::Locked(why) => {
                s.locked += 1;
                report.line(&format!("{prefix} {why}: left to that process"));
                continue;
            }
            CellRun::Interrupted => {
                s.interrupted = true;
                report.line(&format!("{prefix} interrupted; rerun the same command to resume"));
                break;
            }
        }
        spent += t.elapsed().as_secs_f64();
        estimated += estimates[i];
        report.line(&format!(
            "{prefix} {} in {}",
            match run {
                CellRun::Ran(st) => st.as_str(),
                _ => "",
            },
            fmt_secs(t.elapsed().as_secs_f64())
        ));
    }
    s.seconds = started.elapsed().as_secs_f64();
    Ok(s)
}

/// The manifests under a results directory (`cells/*/cell.json`), each read or its error.
pub fn manifests(results: &Path) -> Result<Vec<(PathBuf, Result<Manifest>)>> {
    let cells = results.join("cells");
    let mut dirs: Vec<PathBuf> = match std::fs::read_dir(&cells) {
        Ok(rd) => rd.flatten().map(|e| e.path()).filter(|p| p.is_dir()).collect(),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Vec::new(),
        Err(e) => return Err(Error::io(&cells, e)),
    };
    dirs.sort();
    Ok(dirs
        .into_iter()
        .map(|d| {
            let m = Manifest::load(&d).and_then(|m| {
                m.ok_or_else(|| {
                    Error::artifact(
                        Manifest::path(&d),
                        "no cell manifest (the cell never started or its manifest was deleted)",
                    )
                })
            });
            (d, m)
        })
        .collect())
}

/// Metrics of a cell's verified records by evaluation key.
pub fn verified_metrics(dir: &Path, m: &Manifest) -> BTreeMap<String, std::result::Result<ResultRecord, Untrusted>> {
    m.evals
        .iter()
        .filter(|e| e.status == Status::Done)
        .map(|e| (e.key.clone(), verify_record(dir, e, m.backbone_sha256.as_deref())))
        .collect()
}
