//! `relnet report RESULTS`: every cell of a results directory, one table per protocol as the paper
//! lays it out (methods as rows, conditions as columns), mean +- std over seeds beside the paper's
//! value and the difference; missing, skipped, failed and untrustworthy cells marked with why;
//! a CSV of the same; figures (pretraining curves, bars against the paper, accuracy against
//! pretraining epochs where a cell was run at several budgets).

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use relnet_core::pretrain::fmt_secs;
use relnet_core::{Error, Result};

use super::run::{Manifest, Status, manifests, verify_record};
use super::{Cell, EvalSpec, Experiment, Filter, Grid, PaperTable, Profile};
use crate::EvaluatorConfig;
use crate::plot::bars::{Bar, ErrorLine, Line, bars_png, error_bars_png, lines_png};
use crate::plot::metrics::{curves_png, read_run};

/// A method's row name (its spec's `display`; the name itself for a method no longer registered).
fn method_name(m: &str) -> String {
    relnet_core::methods::entry(m).map_or_else(|| m.to_string(), |e| e.spec.display.to_string())
}

/// The pretraining epochs of a row: "—" for a method that does not train (random weights).
pub(crate) fn epochs_text(method: &str, epochs: usize) -> String {
    match relnet_core::methods::entry(method) {
        Some(e) if !e.spec.needs_data => "—".into(),
        _ => epochs.to_string(),
    }
}

/// A method's rank among the rows (its spec's `order`; unknown methods last).
fn method_rank(m: &str) -> usize {
    relnet_core::methods::entry(m).map_or(usize::MAX, |e| e.spec.order as usize)
}

/// The metrics a protocol's evaluator reports, the first compared with the paper.
fn metrics_of(e: &EvaluatorConfig) -> &'static [(&'static str, &'static str)] {
    e.get().spec().report
}

/// The sum of the `seconds` of the epochs in `dir/metrics.jsonl` (the last line of each epoch,
/// should a resumed run have written one twice); 0 where there is none or it does not read.
fn epoch_seconds(dir: &Path) -> f64 {
    let Ok(text) = std::fs::read_to_string(dir.join("metrics.jsonl")) else { return 0.0 };
    let mut by_epoch = BTreeMap::new();
    for v in text.lines().filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok()) {
        if let (Some(e), Some(s)) = (v["epoch"].as_u64(), v["seconds"].as_f64()) {
            by_epoch.insert(e, s);
        }
    }
    by_epoch.values().sum()
}

/// The methods of one column in the order of their first metric, here and in the paper, and how
/// many pairs of methods the two orders agree on: what a budget far below the paper's can still
/// be compared on. `None` under three methods with both values.
fn ordering(values: &[Measured], protocol: &str, condition: &str) -> Option<String> {
    let first = values.iter().find(|m| m.protocol == protocol)?.metric.0.clone();
    let mut both: Vec<(&str, f64, f64)> = values
        .iter()
        .filter(|m| m.protocol == protocol && m.condition == condition && m.metric.0 == first)
        .filter_map(|m| Some((m.method.as_str(), m.mean?, m.reference.as_ref()?.0)))
        .collect();
    // A method run with several settings in one column is ordered by its first.
    let mut seen = std::collections::BTreeSet::new();
    both.retain(|m| seen.insert(m.0));
    if both.len() < 3 {
        return None;
    }
    let order = |by: fn(&(&str, f64, f64)) -> f64| {
        let mut v = both.clone();
        v.sort_by(|a, b| by(b).total_cmp(&by(a)));
        v.iter().map(|m| method_name(m.0)).collect::<Vec<_>>().join(" > ")
    };
    let (mut agree, mut pairs) = (0, 0);
    for (i, a) in both.iter().enumerate() {
        for b in &both[i + 1..] {
            pairs += 1;
            if (a.1 - b.1) * (a.2 - b.2) > 0.0 {
                agree += 1;
            }
        }
    }
    Some(format!(
        "Order of the methods ({condition}, {}): here {}; in the paper {}. {agree} of {pairs} pairs of methods are in \
         the paper's order.",
        values.iter().find(|m| m.metric.0 == first).map_or(first.as_str(), |m| m.metric.1.as_str()),
        order(|m| m.1),
        order(|m| m.2)
    ))
}

/// One evaluation of one cell as the report sees it.
#[derive(Clone, Debug)]
struct Entry {
    cell: Cell,
    eval: EvalSpec,
    /// Metric -> value, when the evaluation is done and its record verifies.
    values: BTreeMap<String, f64>,
    /// Why there is no value (not run, skipped, failed, corrupt...).
    missing: Option<(String, String)>,
}

/// A column of a protocol's table: backbone, source, target, budget.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Condition {
    backbone: String,
    source: String,
    target: String,
    labels: Option<String>,
}

/// A label budget as a number to sort by (percentages before counts per class).
fn budget_order(b: &Option<String>) -> (u8, u64) {
    match b {
        None => (0, 0),
        Some(s) => match s.strip_suffix('%').and_then(|p| p.parse::<f64>().ok()) {
            Some(p) => (1, (p * 1000.0) as u64),
            None => (2, s.trim_end_matches("-per-class").parse().unwrap_or(u64::MAX)),
        },
    }
}

impl Ord for Condition {
    fn cmp(&self, o: &Self) -> std::cmp::Ordering {
        (&self.backbone, &self.source, &self.target, budget_order(&self.labels)).cmp(&(
            &o.backbone,
            &o.source,
            &o.target,
            budget_order(&o.labels),
        ))
    }
}

impl PartialOrd for Condition {
    fn partial_cmp(&self, o: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(o))
    }
}

impl Condition {
    fn title(&self) -> String {
        let mut t = format!("{} {}", self.backbone, self.source);
        if self.target != self.source {
            t = format!("{t} → {}", self.target);
        }
        if let Some(b) = &self.labels {
            t = format!("{t} @{b}");
        }
        t
    }

    fn file_stem(&self) -> String {
        relnet_core::record::sanitize(
            &self.title().replace(" → ", "-to-").replace(' ', "-").replace('@', "").replace('%', "pct"),
        )
    }
}

/// A group of a protocol's column: (rank, method, pretraining epochs, settings hash without seed,
/// dataset and backbone).
type Row = (usize, String, usize, String);

/// What `relnet report` produces.
#[derive(Clone, Debug)]
pub struct Report {
    pub markdown: String,
    pub csv: String,
    /// The ablation tables as CSV (`ablations.csv`), when the results hold ablation cells.
    pub ablations_csv: Option<String>,
    pub figures: Vec<PathBuf>,
    /// Which builds and machines ran the cells.
    pub provenance: Provenance,
    /// The protocol tables' values (what the CSV holds), for documents built from the report.
    pub values: Vec<Measured>,
    /// The ablation tables' values.
    pub ablation_values: Vec<AblationValue>,
}

/// One value of a protocol table: a method's metric in one condition, over seeds.
#[derive(Clone, Debug, PartialEq)]
pub struct Measured {
    pub protocol: String,
    /// The column's title (`conv4 cifar10`, `resnet32 cifar10 → cifar100`...).
    pub condition: String,
    pub method: String,
    pub pretrain_epochs: usize,
    /// The metric's key and its name in the report.
    pub metric: (String, String),
    pub seeds: usize,
    pub mean: Option<f64>,
    pub std: Option<f64>,
    /// The reference value set beside it: (mean, std, label, source).
    pub reference: Option<(f64, Option<f64>, String, String)>,
}

/// One value of an ablation table.
#[derive(Clone, Debug, PartialEq)]
pub struct AblationValue {
    pub experiment: String,
    pub variant: String,
    /// `<protocol> <metric name>`, the column's title.
    pub column: String,
    pub seeds: usize,
    pub mean: Option<f64>,
    pub std: Option<f64>,
    /// Gain over the baseline variant, seed by seed: (mean, std, seeds); the headline column only.
    pub gain: Option<(f64, Option<f64>, usize)>,
    pub paper_gain: Option<f64>,
    pub is_baseline: bool,
}

/// Which builds and machines ran a results directory's cells, as their manifests record it.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Provenance {
    /// Commit -> the number of cells it ran (part of).
    pub commits: BTreeMap<String, usize>,
    /// Host -> the number of cells it ran (part of).
    pub hosts: BTreeMap<String, usize>,
    /// Cells whose manifest records no commit (written before relnet recorded it).
    pub unrecorded: usize,
    pub cells: usize,
}

impl Provenance {
    pub fn of(manifests: &[Manifest]) -> Provenance {
        let mut p = Provenance { cells: manifests.len(), ..Default::default() };
        for m in manifests {
            if m.commits.is_empty() {
                p.unrecorded += 1;
            }
            for c in &m.commits {
                *p.commits.entry(c.clone()).or_default() += 1;
            }
            for h in &m.hosts {
                *p.hosts.entry(h.clone()).or_default() += 1;
            }
        }
        p
    }

    /// The one commit that ran every cell, if there is one.
    pub fn single_commit(&self) -> Option<&str> {
        match (self.unrecorded, self.commits.iter().next()) {
            (0, Some((c, n))) if self.commits.len() == 1 && *n == self.cells => Some(c),
            _ => None,
        }
    }

    /// One sentence: the commit and the host, or what is mixed.
    pub fn sentence(&self) -> String {
        let list = |m: &BTreeMap<String, usize>| {
            m.iter().map(|(k, n)| format!("`{k}` ({n} cells)")).collect::<Vec<_>>().join(", ")
        };
        let code = match self.single_commit() {
            Some(c) => match c.strip_suffix("+dirty") {
                Some(base) => {
                    format!("All {} cells ran with uncommitted changes on top of commit `{base}`", self.cells)
                }
                None => format!("All {} cells ran with the code of commit `{c}`", self.cells),
            },
            None if self.commits.is_empty() => "No cell records the commit that ran it".to_string(),
            None => {
                let mut t = format!("**The cells ran with several builds**: {}", list(&self.commits));
                if self.unrecorded > 0 {
                    let _ = write!(t, ", {} cells without a recorded commit", self.unrecorded);
                }
                t
            }
        };
        let host = match self.hosts.len() {
            0 => String::new(),
            1 => format!(", on {}", self.hosts.keys().next().expect("one host")),
            _ => format!(", on several hosts: {}", list(&self.hosts)),
        };
        format!("{code}{host}.")
    }
}

/// A multi-line error as one line (a Markdown list item).
fn one_line(s: &str) -> String {
    s.split_whitespace().collect::<Vec<_>>().join(" ")
}

fn mean_std(v: &[f64]) -> (f64, Option<f64>) {
    let n = v.len() as f64;
    let mean = v.iter().sum::<f64>() / n;
    if v.len() < 2 {
        return (mean, None);
    }
    let var = v.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / (n - 1.0);
    (mean, Some(var.sqrt()))
}

/// What [`entries`] reads: the evaluations, the cell folders that could not be read (and why),
/// and the manifests.
type Cells = (Vec<Entry>, Vec<(PathBuf, String)>, Vec<Manifest>);

/// Reads every cell of `results` (and the cells its invocations asked for that never started).
fn entries(results: &Path, grid: &Grid) -> Result<Cells> {
    let mut out = Vec::new();
    let mut unreadable = Vec::new();
    let mut found: Vec<Manifest> = Vec::new();
    // The cells the recorded invocations expect: their experiments and variants (labels of the
    // grid file, not results) replace what a manifest says, and those with no directory yet are
    // listed as not run.
    let mut invocations: Vec<PathBuf> = std::fs::read_dir(results)
        .map_err(|e| Error::io(results, e))?
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.file_name().is_some_and(|n| n.to_string_lossy().starts_with("invocation-")))
        .collect();
    invocations.sort();
    let mut expected: Vec<Cell> = Vec::new();
    for inv in invocations {
        let Ok(text) = std::fs::read_to_string(&inv) else { continue };
        let Ok(t) = text.parse::<toml::Table>() else { continue };
        let (Some(profile), only) =
            (t.get("profile").and_then(|v| v.as_str()), t.get("only").and_then(|v| v.as_str()).unwrap_or(""))
        else {
            continue;
        };
        let Ok(filter) = only.parse::<Filter>() else { continue };
        let Ok(cells) = grid.cells(profile, &filter) else { continue };
        for c in cells {
            if !expected.iter().any(|x| x.hash == c.hash) {
                expected.push(c);
            }
        }
    }
    for (dir, m) in manifests(results)? {
        match m {
            Ok(mut m) => {
                if let Some(c) = expected.iter().find(|c| c.hash == m.cell.hash) {
                    m.cell.experiments = c.experiments.clone();
                    m.cell.variants = c.variants.clone();
                }
                let config = m.verifies_in(&dir);
                for spec in &m.cell.evals {
                    let o = m.eval(&spec.key());
                    let mut e =
                        Entry { cell: m.cell.clone(), eval: spec.clone(), values: BTreeMap::new(), missing: None };
                    match (m.status, o) {
                        (_, Some(o)) if o.status == Status::Done && config.is_err() => {
                            let why = config.clone().unwrap_err();
                            e.missing = Some(("untrusted".into(), format!("{why}; `relnet reproduce` runs it again")))
                        }
                        (_, Some(o)) if o.status == Status::Done => {
                            match verify_record(&dir, o, m.backbone_sha256.as_deref()) {
                                Ok(r) => e.values = r.metrics,
                                Err(why) => {
                                    e.missing =
                                        Some(("untrusted".into(), format!("{why}; `relnet reproduce` runs it again")))
                                }
                            }
                        }
                        (_, Some(o)) => {
                            e.missing = Some((o.status.as_str().into(), o.error.clone().unwrap_or_default()))
                        }
                        (Status::Skipped | Status::Failed, None) => {
                            e.missing = Some((m.status.as_str().into(), m.error.clone().unwrap_or_default()))
                        }
                        (_, None) => {
                            e.missing = Some((
                                "incomplete".into(),
                                format!("the cell stopped before this evaluation ({}); rerun to resume", dir.display()),
                            ))
                        }
                    }
                    out.push(e);
                }
                found.push(m);
            }
            Err(e) => unreadable.push((dir, e.to_string())),
        }
    }
    // Cells the recorded invocations expect but that have no directory yet.
    {
        for c in expected {
            for spec in &c.evals {
                let known = out.iter().any(|e| e.cell.hash == c.hash && e.eval.key() == spec.key())
                    || unreadable.iter().any(|(d, _)| d.ends_with(c.dir_name()));
                if !known {
                    out.push(Entry {
                        cell: c.clone(),
                        eval: spec.clone(),
                        values: BTreeMap::new(),
                        missing: Some(("not run".into(), format!("cell {} has not been started", c.dir_name()))),
                    });
                }
            }
        }
    }
    Ok((out, unreadable, found))
}

/// Renders `results` (Markdown, CSV, figures under `<results>/figures/`).
pub fn report(results: &Path) -> Result<Report> {
    render(results, true)
}

/// Renders `results`; draws the figures only when `draw` (the Markdown links them either way).
pub fn render(results: &Path, draw: bool) -> Result<Report> {
    let grid_path = results.join("grid.toml");
    let grid = if grid_path.exists() { Grid::load(Some(&grid_path))? } else { Grid::load(None)? };
    let (entries, unreadable, manifests) = entries(results, &grid)?;
    let profiles: Vec<(String, &Profile)> =
        invoked_profiles(results).into_iter().filter_map(|n| grid.profiles.get(&n).map(|p| (n, p))).collect();
    // The profile whose experiments a cell serves (for its reference values).
    let profile_of = |cell: &Cell| -> Option<&Profile> {
        profiles.iter().map(|(_, p)| *p).find(|p| p.experiments.iter().any(|x| cell.experiments.contains(&x.name)))
    };
    let reference = |cell: &Cell, eval: &EvalSpec| grid.profile_value(profile_of(cell), cell, eval);
    let provenance = Provenance::of(&manifests);
    let figures_dir = results.join("figures");
    let mut figures = Vec::new();
    let mut md = String::new();
    let mut csv = String::from(
        "protocol,backbone,dataset,target,labels,method,pretrain_epochs,settings,metric,seeds,mean,std,paper_mean,paper_std,paper_status,paper_source,difference,status,note\n",
    );
    let mut notes: Vec<String> = Vec::new();
    let mut values: Vec<Measured> = Vec::new();
    let mut note_of = |why: &str| -> usize {
        match notes.iter().position(|n| n == why) {
            Some(i) => i + 1,
            None => {
                notes.push(why.to_string());
                notes.len()
            }
        }
    };

    let _ = writeln!(md, "# relnet reproduce: results\n");
    let _ = writeln!(
        md,
        "Results directory `{}`: {} cells, {} evaluations. Values are mean ± std over seeds (std when there are two or more; the number of seeds in brackets), in percent.{}\n",
        results.display(),
        manifests.len(),
        entries.len(),
        if entries.iter().any(|e| reference(&e.cell, &e.eval).is_some()) {
            " Where a published value exists, it and the difference (relnet − published) follow; each table names \
             its source (the paper's tables and figures, Patacchiola & Storkey, NeurIPS 2020, or the official \
             notebook), and *approx.* marks values read off a figure."
        } else {
            ""
        }
    );
    if !manifests.is_empty() {
        let _ = writeln!(md, "{}\n", provenance.sentence());
    }
    for (name, p) in &profiles {
        if let Some(n) = &p.note {
            let _ = writeln!(md, "**The `{name}` profile.** {}\n", one_line(n));
        }
    }

    // protocol -> condition -> (method, epochs, variant) -> entries, one per seed.
    let mut by_protocol: BTreeMap<String, BTreeMap<Condition, BTreeMap<Row, Vec<&Entry>>>> = BTreeMap::new();
    // Cells that serve only ablation experiments are shown in those experiments' tables.
    for e in entries.iter().filter(|e| e.cell.experiments.iter().any(|x| !e.cell.variants.contains_key(x))) {
        let c = Condition {
            backbone: e.cell.backbone.clone(),
            source: e.cell.dataset.clone(),
            target: e.eval.dataset.clone(),
            labels: e.eval.labels.clone(),
        };
        let epochs = e.cell.pretrain.epochs();
        let variant = super::variant_hash(&e.cell.pretrain);
        let group = by_protocol
            .entry(e.eval.protocol.clone())
            .or_default()
            .entry(c)
            .or_default()
            .entry((method_rank(&e.cell.method), e.cell.method.clone(), epochs, variant))
            .or_default();
        if !group.iter().any(|x| x.cell.seed == e.cell.seed) {
            group.push(e);
        }
    }
    let mut protocols: Vec<&String> = by_protocol.keys().collect();
    protocols.sort_by_key(|p| (grid.protocols.get(*p).map_or(u32::MAX, |p| p.order), (*p).clone()));
    let mut epoch_lines: BTreeMap<String, Vec<Line>> = BTreeMap::new();

    for proto in protocols {
        let conditions = &by_protocol[proto];
        let title = grid.protocols.get(proto).map_or(proto.as_str(), |p| p.title.as_str());
        let _ = writeln!(md, "## {title} (`{proto}`)\n");
        let first = conditions.values().flat_map(|m| m.values()).flatten().next().expect("a protocol has entries");
        let metrics = metrics_of(&first.eval.evaluator);
        let conds: Vec<&Condition> = conditions.keys().collect();
        // Rows: every (method, epochs) of any condition; a method run with other settings at
        // the same epoch count (another K, learning rate...) shows one value per setting.
        let mut rows: Vec<(usize, String, usize)> =
            conditions.values().flat_map(|m| m.keys().map(|r| (r.0, r.1.clone(), r.2))).collect();
        rows.sort();
        rows.dedup();
        let head: Vec<String> = conds.iter().map(|c| c.title()).collect();
        let _ = writeln!(md, "| method | pretraining epochs | {} |", head.join(" | "));
        let _ = writeln!(md, "|---|---|{}", "---|".repeat(conds.len()));
        for row in &rows {
            let (_, method, epochs) = row;
            let mut line = format!("| {} | {} |", method_name(method), epochs_text(method, *epochs));
            for cond in &conds {
                let groups: Vec<(&Row, &Vec<&Entry>)> =
                    conditions[*cond].iter().filter(|(k, _)| k.0 == row.0 && k.1 == row.1 && k.2 == row.2).collect();
                if groups.is_empty() {
                    line.push_str(" |");
                    continue;
                }
                let mut texts = Vec::new();
                for (variant_row, es) in &groups {
                    let es: &Vec<&Entry> = es;
                    let mut parts = Vec::new();
                    for (mi, (key, mname)) in metrics.iter().enumerate() {
                        let vals: Vec<f64> = es.iter().filter_map(|e| e.values.get(*key).copied()).collect();
                        let paper = if mi == 0 { reference(&es[0].cell, &es[0].eval) } else { None };
                        let (text, mean, std) = if vals.is_empty() {
                            (String::from("—"), None, None)
                        } else {
                            let (m, s) = mean_std(&vals);
                            (
                                format!("{m:.2}{} [{}]", s.map_or(String::new(), |s| format!(" ± {s:.2}")), vals.len()),
                                Some(m),
                                s,
                            )
                        };
                        let mut cell = if metrics.len() > 1 { format!("{mname} {text}") } else { text };
                        if let Some((pm, ps, table)) = paper {
                            let approx = if table.status == "verified" { "" } else { " approx." };
                            let _ = write!(
                                cell,
                                " · {} {pm:.2}{}{approx}",
                                table.label(),
                                ps.map_or(String::new(), |s| format!(" ± {s:.2}"))
                            );
                            if let Some(m) = mean {
                                let _ = write!(cell, " · Δ {:+.2}", m - pm);
                            }
                        }
                        parts.push(cell);
                        let status = if vals.len() == es.len() {
                            "done".to_string()
                        } else {
                            es.iter().find_map(|e| e.missing.as_ref().map(|m| m.0.clone())).unwrap_or_default()
                        };
                        let note = es
                            .iter()
                            .find_map(|e| e.missing.as_ref().map(|m| m.1.replace(['\n', '"'], " ")))
                            .unwrap_or_default();
                        let (pm, ps, pst, psrc) = match paper {
                            Some((m, s, t)) => (
                                format!("{m}"),
                                s.map_or(String::new(), |s| s.to_string()),
                                t.status.clone(),
                                t.source.clone(),
                            ),
                            None => Default::default(),
                        };
                        let diff = match (mean, paper) {
                            (Some(m), Some((p, _, _))) => format!("{:.4}", m - p),
                            _ => String::new(),
                        };
                        values.push(Measured {
                            protocol: proto.clone(),
                            condition: cond.title(),
                            method: method.clone(),
                            pretrain_epochs: *epochs,
                            metric: (key.to_string(), mname.to_string()),
                            seeds: vals.len(),
                            mean,
                            std,
                            reference: paper.map(|(m, s, t)| (m, s, t.label().to_string(), t.source.clone())),
                        });
                        let _ = writeln!(
                            csv,
                            "{proto},{},{},{},{},{method},{epochs},{},{key},{},{},{},{pm},{ps},{pst},\"{psrc}\",{diff},{status},\"{note}\"",
                            cond.backbone,
                            cond.source,
                            cond.target,
                            cond.labels.clone().unwrap_or_default(),
                            variant_row.3,
                            vals.len(),
                            mean.map_or(String::new(), |m| format!("{m:.4}")),
                            std.map_or(String::new(), |s| format!("{s:.4}"))
                        );
                    }
                    // Why values are missing, as numbered notes.
                    let mut marks: Vec<String> = Vec::new();
                    for e in es {
                        if let Some((kind, why)) = &e.missing {
                            let n = note_of(&format!("{kind}: {}", one_line(why)));
                            let mark = format!("{kind} [{n}]");
                            if !marks.contains(&mark) {
                                marks.push(mark);
                            }
                        }
                    }
                    let mut text = parts.join("; ");
                    if !marks.is_empty() {
                        let _ = write!(text, " ({})", marks.join(", "));
                    }
                    if groups.len() > 1 {
                        let _ = write!(text, " (settings {})", &variant_row.3[..6]);
                    }
                    texts.push(text);
                }
                let _ = write!(line, " {} |", texts.join("<br>"));
            }
            let _ = writeln!(md, "{line}");
        }
        // Where the paper's values come from.
        let sources: Vec<String> = conds
            .iter()
            .filter_map(|c| {
                let e = conditions[*c].values().flatten().next()?;
                let t: &PaperTable = reference(&e.cell, &e.eval)?.2;
                Some(format!("{}: {} value from {} ({})", c.title(), t.label(), t.source, t.status))
            })
            .collect();
        if !sources.is_empty() {
            let _ = writeln!(md, "\n{}.", sources.join("; "));
        }
        for cond in &conds {
            if let Some(line) = ordering(&values, proto, &cond.title()) {
                let _ = writeln!(md, "\n{line}");
            }
        }
        let _ = writeln!(md);

        // Accuracy against the label budget, one figure per backbone and dataset.
        let budgets = conds.iter().any(|c| c.labels.is_some());
        if metrics[0].0 == "test_accuracy" && budgets {
            if draw {
                std::fs::create_dir_all(&figures_dir).map_err(|e| Error::io(&figures_dir, e))?;
            }
            let mut groups: BTreeMap<(String, String, String), Vec<Line>> = BTreeMap::new();
            for cond in &conds {
                let Some(pct) =
                    cond.labels.as_deref().and_then(|l| l.strip_suffix('%')).and_then(|p| p.parse::<f64>().ok())
                else {
                    continue;
                };
                let lines =
                    groups.entry((cond.backbone.clone(), cond.source.clone(), cond.target.clone())).or_default();
                for (row, es) in &conditions[*cond] {
                    let vals: Vec<f64> = es.iter().filter_map(|e| e.values.get("test_accuracy").copied()).collect();
                    let mut add = |label: String, v: f64| match lines.iter_mut().find(|l| l.label == label) {
                        Some(l) => l.points.push((pct, v)),
                        None => lines.push(Line { label, points: vec![(pct, v)] }),
                    };
                    if !vals.is_empty() {
                        add(format!("{} ({} ep)", row.1, row.2), mean_std(&vals).0);
                    }
                    if let Some((p, _, t)) = reference(&es[0].cell, &es[0].eval) {
                        add(format!("{} ({})", row.1, t.label()), p);
                    }
                }
            }
            for ((backbone, source, target), lines) in groups {
                let stem = relnet_core::record::sanitize(&format!("{proto}-{backbone}-{source}-{target}"));
                let path = figures_dir.join(format!("{stem}.png"));
                draw.then(|| {
                    lines_png(
                        &path,
                        &format!("{title}: {backbone} {source}"),
                        "labelled train images (%)",
                        "test accuracy (%)",
                        &lines,
                    )
                })
                .transpose()?;
                let _ = writeln!(md, "![{proto} {backbone} {source}](figures/{stem}.png)\n");
                figures.push(path);
            }
        }
        // Bars for single-budget accuracy protocols; lines where a method has several budgets.
        if metrics[0].0 == "test_accuracy" && !budgets {
            if draw {
                std::fs::create_dir_all(&figures_dir).map_err(|e| Error::io(&figures_dir, e))?;
            }
            for cond in &conds {
                let mut bars = Vec::new();
                for (row, es) in &conditions[*cond] {
                    let vals: Vec<f64> = es.iter().filter_map(|e| e.values.get("test_accuracy").copied()).collect();
                    let (mean, std) = if vals.is_empty() {
                        (None, None)
                    } else {
                        let (m, s) = mean_std(&vals);
                        (Some(m), s)
                    };
                    let paper = reference(&es[0].cell, &es[0].eval).map(|p| p.0);
                    let label = if rows.iter().filter(|r| r.1 == row.1).count() > 1 {
                        format!("{} {}ep", row.1, row.2)
                    } else {
                        row.1.clone()
                    };
                    let highlight = relnet_core::methods::entry(&row.1).is_some_and(|e| e.spec.highlight);
                    bars.push(Bar { label, mean, std, paper, highlight });
                    if let Some(m) = mean {
                        let key = format!("{proto}-{}", cond.file_stem());
                        let lines = epoch_lines.entry(key).or_default();
                        match lines.iter_mut().find(|l| l.label == row.1) {
                            Some(l) => l.points.push((row.2 as f64, m)),
                            None => lines.push(Line { label: row.1.clone(), points: vec![(row.2 as f64, m)] }),
                        }
                    }
                }
                let path = figures_dir.join(format!("{proto}-{}.png", cond.file_stem()));
                draw.then(|| bars_png(&path, &format!("{title}: {}", cond.title()), "test accuracy (%)", &bars))
                    .transpose()?;
                let _ = writeln!(
                    md,
                    "![{proto} {}](figures/{})\n",
                    cond.title(),
                    path.file_name().unwrap().to_string_lossy()
                );
                figures.push(path);
            }
        }
    }
    for (key, lines) in epoch_lines {
        if lines.iter().any(|l| l.points.len() > 1) {
            let path = figures_dir.join(format!("epochs-{key}.png"));
            draw.then(|| {
                lines_png(
                    &path,
                    &format!("accuracy against pretraining epochs: {key}"),
                    "pretraining epochs",
                    "test accuracy (%)",
                    &lines,
                )
            })
            .transpose()?;
            let _ = writeln!(
                md,
                "![accuracy against epochs {key}](figures/{})\n",
                path.file_name().unwrap().to_string_lossy()
            );
            figures.push(path);
        }
    }

    let mut ablation_values = Vec::new();
    let ablations_csv =
        ablations(&mut md, &mut figures, &mut ablation_values, results, &entries, &grid, &profiles, draw)?;

    // Pretraining curves, one figure per (backbone, dataset).
    let mut runs: BTreeMap<(String, String), Vec<crate::plot::metrics::RunCurves>> = BTreeMap::new();
    for m in &manifests {
        let dir = m.cell.dir(results);
        if let Ok(mut r) = read_run(&dir) {
            r.name = format!("{} s{} ({} ep)", m.cell.method, m.cell.seed, m.cell.pretrain.epochs());
            // An ablation's cells differ by their variants: name them.
            let mut vs: Vec<&String> = m.cell.variants.values().collect();
            vs.dedup();
            if !vs.is_empty() {
                r.name = format!("{} {}", r.name, vs.iter().map(|v| v.as_str()).collect::<Vec<_>>().join(" / "));
            }
            runs.entry((m.cell.backbone.clone(), m.cell.dataset.clone())).or_default().push(r);
        }
    }
    if !runs.is_empty() {
        let _ = writeln!(md, "## Pretraining curves\n");
        if draw {
            std::fs::create_dir_all(&figures_dir).map_err(|e| Error::io(&figures_dir, e))?;
        }
        for ((backbone, dataset), mut rs) in runs {
            rs.sort_by_key(|r| (method_rank(r.name.split(' ').next().unwrap_or("")), r.name.clone()));
            let path =
                figures_dir.join(format!("pretraining-{backbone}-{}.png", relnet_core::record::sanitize(&dataset)));
            draw.then(|| curves_png(&path, &rs)).transpose()?;
            let _ = writeln!(
                md,
                "![pretraining {backbone} {dataset}](figures/{})\n",
                path.file_name().unwrap().to_string_lossy()
            );
            figures.push(path);
        }
    }

    // Time per cell, as recorded.
    let _ = writeln!(md, "## Cells\n");
    let _ = writeln!(md, "| cell | status | pretraining | evaluations | total |\n|---|---|---|---|---|");
    let mut total = 0.0;
    let mut manifests = manifests;
    manifests.sort_by_key(|m| (method_rank(&m.cell.method), m.cell.dir_name()));
    for m in &manifests {
        let evals: f64 = m.evals.iter().map(|e| e.seconds).sum();
        // A run killed without warning loses the manifest's clock for the part it ran; the
        // epochs it finished are in metrics.jsonl with their own times.
        let pretrain = m.pretrain_seconds.max(epoch_seconds(&m.cell.dir(results)));
        total += pretrain + evals;
        let status = match &m.error {
            Some(e) => {
                format!("{} [{}]", m.status.as_str(), note_of(&format!("{}: {}", m.status.as_str(), one_line(e))))
            }
            None => m.status.as_str().to_string(),
        };
        let _ = writeln!(
            md,
            "| `{}` | {status} | {} | {} | {} |",
            m.cell.dir_name(),
            fmt_secs(pretrain),
            fmt_secs(evals),
            fmt_secs(pretrain + evals)
        );
    }
    let _ = writeln!(
        md,
        "\nCompute time recorded in the cells: {} (pretraining and evaluations, summed). Pretraining is the larger of \
         the cell's clock and the sum of its finished epochs' times (`metrics.jsonl`): a run killed without warning \
         loses its clock, and the unfinished part of an epoch it was in is not counted.\n",
        fmt_secs(total)
    );
    for (dir, e) in &unreadable {
        let n = note_of(&format!("unreadable cell: {e}"));
        let _ = writeln!(md, "- `{}`: unreadable [{n}]", dir.display());
    }
    if !notes.is_empty() {
        let _ = writeln!(md, "## Notes\n");
        for (i, n) in notes.iter().enumerate() {
            let _ = writeln!(md, "{}. {}", i + 1, n);
        }
        let _ = writeln!(md);
    }
    Ok(Report { markdown: md, csv, ablations_csv, figures, provenance, values, ablation_values })
}

/// The profiles a results directory was run with (its `invocation-<profile>.toml` files).
fn invoked_profiles(results: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(results)
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| {
            let text = std::fs::read_to_string(e.path()).ok()?;
            e.file_name().to_string_lossy().starts_with("invocation-").then_some(())?;
            text.parse::<toml::Table>().ok()?.get("profile")?.as_str().map(str::to_string)
        })
        .collect();
    names.sort();
    names.dedup();
    names
}

/// Per-seed values of one variant: eval key -> metric -> seed -> value.
type SeedValues = BTreeMap<String, BTreeMap<String, BTreeMap<u64, f64>>>;

/// `mean ± std [n]`, or a dash.
fn summary(v: &[f64]) -> String {
    if v.is_empty() {
        return "—".into();
    }
    let (m, s) = mean_std(v);
    format!("{m:.2}{} [{}]", s.map_or(String::new(), |s| format!(" ± {s:.2}")), v.len())
}

/// The ablation experiments (those with variants): per experiment a table of the variants,
/// mean ± std over seeds of every metric, the spread between seeds, the gain over the baseline
/// (seed by seed) beside the paper's where it reports one, and a figure where the variants have
/// places on an axis. Returns the rows as CSV.
#[allow(clippy::too_many_arguments)]
fn ablations(
    md: &mut String,
    figures: &mut Vec<PathBuf>,
    out: &mut Vec<AblationValue>,
    results: &Path,
    entries: &[Entry],
    grid: &Grid,
    profiles: &[(String, &Profile)],
    draw: bool,
) -> Result<Option<String>> {
    let figures_dir = &results.join("figures");
    let mut names: Vec<&String> = entries.iter().flat_map(|e| e.cell.variants.keys()).collect();
    names.sort();
    names.dedup();
    if names.is_empty() {
        return Ok(None);
    }
    // In the profiles' order of experiments.
    let def = |name: &str| -> Option<&Experiment> {
        profiles.iter().flat_map(|(_, p)| p.experiments.iter()).find(|x| x.name == name)
    };
    let position = |name: &str| -> usize {
        profiles.iter().flat_map(|(_, p)| p.experiments.iter()).position(|x| x.name == name).unwrap_or(usize::MAX)
    };
    names.sort_by_key(|n| (position(n), (*n).clone()));
    let mut csv = String::from(
        "experiment,variant,x,protocol,target,metric,seeds,mean,std,spread,gain_mean,gain_std,gain_seeds,paper_gain,values\n",
    );
    let _ = writeln!(md, "## Ablations\n");
    for name in names {
        let exp = def(name);
        let mine: Vec<&Entry> = entries.iter().filter(|e| e.cell.variants.contains_key(name.as_str())).collect();
        // Variants in the experiment's order (then any the grid file no longer lists).
        let mut variants: Vec<String> =
            exp.map(|x| x.variants.iter().map(|v| v.name.clone()).collect()).unwrap_or_default();
        for e in &mine {
            let v = &e.cell.variants[name.as_str()];
            if !variants.contains(v) {
                variants.push(v.clone());
            }
        }
        // Columns: (eval key, protocol, metric key, metric name), in the protocols' order.
        let mut columns: Vec<(String, String, &'static str, &'static str)> = Vec::new();
        let mut evals: Vec<&EvalSpec> = mine.iter().map(|e| &e.eval).collect();
        // The experiment's order of protocols, then the grid's.
        let listed = |p: &str| exp.and_then(|x| x.protocols.iter().position(|q| q == p)).unwrap_or(usize::MAX);
        evals.sort_by_key(|e| {
            (listed(&e.protocol), grid.protocols.get(&e.protocol).map_or(u32::MAX, |p| p.order), e.key())
        });
        for ev in evals {
            for (key, mname) in metrics_of(&ev.evaluator) {
                if !columns.iter().any(|c| c.0 == ev.key() && c.2 == *key) {
                    columns.push((ev.key(), ev.protocol.clone(), key, mname));
                }
            }
        }
        let mut values: BTreeMap<String, SeedValues> = BTreeMap::new();
        let mut missing: BTreeMap<String, Vec<String>> = BTreeMap::new();
        let mut reasons: Vec<String> = Vec::new();
        for e in &mine {
            let v = e.cell.variants[name.as_str()].clone();
            if let Some((kind, why)) = &e.missing {
                let m = missing.entry(v.clone()).or_default();
                let t = format!("seed {}: {kind}", e.cell.seed);
                if !m.contains(&t) {
                    m.push(t.clone());
                }
                let r = format!("- {v}, {t}: {}", one_line(why));
                if !reasons.contains(&r) {
                    reasons.push(r);
                }
            }
            for (metric, x) in &e.values {
                values
                    .entry(v.clone())
                    .or_default()
                    .entry(e.eval.key())
                    .or_default()
                    .entry(metric.clone())
                    .or_default()
                    .insert(e.cell.seed, *x);
            }
        }
        // Pretraining loss per epoch, by variant and seed (from each cell's metrics.jsonl).
        let mut losses: BTreeMap<String, BTreeMap<u64, Vec<f64>>> = BTreeMap::new();
        // Only cells whose records verify: a curve has no checksum of its own, and an unfinished
        // cell's curve is partial.
        for e in mine.iter().filter(|e| e.missing.is_none() && !e.values.is_empty()) {
            let v = &e.cell.variants[name.as_str()];
            if losses.get(v).is_some_and(|m| m.contains_key(&e.cell.seed)) {
                continue;
            }
            if let Ok(r) = read_run(&e.cell.dir(results)) {
                losses.entry(v.clone()).or_default().insert(e.cell.seed, r.epochs.iter().map(|x| x.1).collect());
            }
        }
        // Variants that change only run keys (precision...) train the same objective: their
        // losses can be compared epoch by epoch with the baseline's.
        let same_objective = exp.is_some_and(|x| x.variants.iter().all(|v| v.method.is_empty()));
        let seeds_of = |v: &str, col: &(String, String, &str, &str)| -> BTreeMap<u64, f64> {
            values.get(v).and_then(|m| m.get(&col.0)).and_then(|m| m.get(col.2)).cloned().unwrap_or_default()
        };
        let baseline = exp.and_then(|x| x.baseline.clone());
        let paper = exp.and_then(|x| x.paper.clone());
        let variant_def = |v: &str| exp.and_then(|x| x.variants.iter().find(|d| d.name == v));
        let head = columns.first().cloned();

        let setting = mine.first().map(|e| {
            format!("{} on {}, {} pretraining epochs", e.cell.backbone, e.cell.dataset, e.cell.pretrain.epochs())
        });
        let _ = writeln!(md, "### {name}\n");
        if let Some(s) = setting {
            let _ = writeln!(md, "{} ({}), seeds as listed in brackets.", method_name(&mine[0].cell.method), s);
        }
        if let Some(n) = exp.and_then(|x| x.note.as_ref()) {
            let _ = writeln!(md, "{}", one_line(n));
        }
        let _ = writeln!(md);
        let mut header = vec!["variant".to_string()];
        header.extend(columns.iter().map(|c| format!("{} {}", c.1, c.3)));
        if let Some(h) = &head {
            header.push(format!("seed spread ({} {})", h.1, h.3));
            if let Some(b) = &baseline {
                header.push(format!("gain over {b} ({} {})", h.1, h.3));
                if paper.is_some() {
                    header.push("the paper's gain (read off its figure)".into());
                }
            }
        }
        header.push("pretraining loss, last epoch (each variant's own loss)".into());
        if same_objective && let Some(b) = &baseline {
            header.push(format!("largest per-epoch loss gap to {b} (same seed)"));
        }
        let _ = writeln!(md, "| {} |", header.join(" | "));
        let _ = writeln!(md, "|{}", "---|".repeat(header.len()));
        let mut gains: Vec<(f64, f64, Option<f64>)> = Vec::new();
        let mut paper_gains: Vec<(f64, f64, Option<f64>)> = Vec::new();
        let mut series: BTreeMap<String, Vec<(f64, f64, Option<f64>)>> = BTreeMap::new();
        for v in &variants {
            let d = variant_def(v);
            let mut row = vec![v.clone()];
            let mut tail = None;
            for col in &columns {
                let seeds = seeds_of(v, col);
                let vals: Vec<f64> = seeds.values().copied().collect();
                row.push(summary(&vals));
                let (mean, std) = if vals.is_empty() {
                    (None, None)
                } else {
                    let (m, s) = mean_std(&vals);
                    (Some(m), s)
                };
                let spread = (vals.len() > 1).then(|| {
                    vals.iter().copied().fold(f64::NEG_INFINITY, f64::max)
                        - vals.iter().copied().fold(f64::INFINITY, f64::min)
                });
                // Gains seed by seed against the baseline's same seed.
                let gain: Vec<f64> = match &baseline {
                    Some(b) => {
                        let base = seeds_of(b, col);
                        seeds.iter().filter_map(|(s, x)| base.get(s).map(|y| x - y)).collect()
                    }
                    None => Vec::new(),
                };
                let (gm, gs) = if gain.is_empty() {
                    (None, None)
                } else {
                    let (m, s) = mean_std(&gain);
                    (Some(m), s)
                };
                out.push(AblationValue {
                    experiment: name.clone(),
                    variant: v.clone(),
                    column: format!("{} {}", col.1, col.3),
                    seeds: vals.len(),
                    mean,
                    std,
                    gain: if Some(col) == head.as_ref() { gm.map(|m| (m, gs, gain.len())) } else { None },
                    paper_gain: d.and_then(|d| d.paper_gain),
                    is_baseline: baseline.as_deref() == Some(v.as_str()),
                });
                let f = |x: Option<f64>| x.map_or(String::new(), |x| format!("{x:.4}"));
                let _ = writeln!(
                    csv,
                    "\"{}\",\"{}\",{},{},{},{},{},{},{},{},{},{},{},{},\"{}\"",
                    name.replace('"', "\"\""),
                    v.replace('"', "\"\""),
                    d.and_then(|d| d.x).map_or(String::new(), |x| x.to_string()),
                    col.1,
                    col.0.split_once(':').map_or("", |k| k.1),
                    col.2,
                    vals.len(),
                    f(mean),
                    f(std),
                    f(spread),
                    f(gm),
                    f(gs),
                    gain.len(),
                    d.and_then(|d| d.paper_gain).map_or(String::new(), |g| g.to_string()),
                    seeds.iter().map(|(s, x)| format!("{s}:{x:.4}")).collect::<Vec<_>>().join(";")
                );
                // The figure: each protocol's first metric when it is an accuracy (retrieval's mAP
                // is on another scale).
                let accuracy = col.2.contains("accuracy") || col.2.starts_with("top1");
                if let (Some(x), Some(m), true) = (d.and_then(|d| d.x), mean, accuracy)
                    && columns.iter().find(|c| c.0 == col.0).is_some_and(|c| c.2 == col.2)
                {
                    series.entry(format!("{} {}", col.1, col.3)).or_default().push((x, m, std));
                }
                if Some(col) != head.as_ref() {
                    continue;
                }
                tail = Some((spread, gain.clone()));
                if let (Some(x), Some(m)) = (d.and_then(|d| d.x), gm) {
                    gains.push((x, m, gs));
                }
                if let Some(x) = d.and_then(|d| d.x) {
                    if baseline.as_deref() == Some(v.as_str()) {
                        paper_gains.push((x, 0.0, None));
                    } else if let Some(g) = d.and_then(|d| d.paper_gain) {
                        paper_gains.push((x, g, None));
                    }
                }
            }
            if let Some((spread, gain)) = tail {
                row_tail(&mut row, spread, &baseline, v, &gain, paper.is_some(), d.and_then(|d| d.paper_gain));
            }
            let last: Vec<f64> =
                losses.get(v).map_or(Vec::new(), |m| m.values().filter_map(|l| l.last().copied()).collect());
            row.push(if last.is_empty() {
                "—".into()
            } else {
                let (m, s) = mean_std(&last);
                format!("{m:.4}{}", s.map_or(String::new(), |s| format!(" ± {s:.4}")))
            });
            if same_objective && let Some(b) = &baseline {
                let gap = losses.get(v).zip(losses.get(b)).map(|(mine, base)| {
                    mine.iter()
                        .filter_map(|(seed, l)| base.get(seed).map(|b| (l, b)))
                        .flat_map(|(l, b)| l.iter().zip(b).map(|(x, y)| (x - y).abs()))
                        .fold(f64::NAN, f64::max)
                });
                row.push(if b == v {
                    "(baseline)".into()
                } else {
                    gap.filter(|g| !g.is_nan()).map_or("—".into(), |g| format!("{g:.4}"))
                });
            }
            if let Some(m) = missing.get(v) {
                let _ = write!(row[0], " ({})", m.join(", "));
            }
            let _ = writeln!(md, "| {} |", row.join(" | "));
        }
        let _ = writeln!(md);
        if !reasons.is_empty() {
            let _ = writeln!(md, "Missing values:\n\n{}\n", reasons.join("\n"));
        }
        match &paper {
            Some(p) => {
                let _ = writeln!(md, "The paper: {}.\n", one_line(p));
            }
            None => {
                let _ = writeln!(md, "Not reported in the paper.\n");
            }
        }
        // Figures where the variants have places on an axis.
        if !series.is_empty() {
            if draw {
                std::fs::create_dir_all(figures_dir).map_err(|e| Error::io(figures_dir, e))?;
            }
            let stem = relnet_core::record::sanitize(&format!("ablation-{name}").replace([' ', ':'], "-"));
            let axis = exp.and_then(|x| x.axis.clone()).unwrap_or_else(|| "variant".into());
            let lines: Vec<ErrorLine> =
                series.into_iter().map(|(label, points)| ErrorLine { label, points, reference: false }).collect();
            let path = figures_dir.join(format!("{stem}.png"));
            draw.then(|| error_bars_png(&path, name, &axis, "mean ± std over seeds (%)", &lines, true)).transpose()?;
            let _ = writeln!(md, "![{name}](figures/{stem}.png)\n");
            figures.push(path);
            if let (Some(b), Some(h)) = (&baseline, &head)
                && gains.len() > 1
            {
                let mut lines =
                    vec![ErrorLine { label: format!("relnet ({} {})", h.1, h.3), points: gains, reference: false }];
                if paper_gains.len() > 1 {
                    lines.push(ErrorLine { label: "the paper".into(), points: paper_gains, reference: true });
                }
                let path = figures_dir.join(format!("{stem}-gain.png"));
                draw.then(|| error_bars_png(&path, &format!("gain over {b}"), &axis, "gain (points)", &lines, true))
                    .transpose()?;
                let _ = writeln!(md, "![{name}: gain over {b}](figures/{stem}-gain.png)\n");
                figures.push(path);
            }
        }
    }
    Ok(Some(csv))
}

/// The spread, gain and paper's-gain cells of an ablation row.
fn row_tail(
    row: &mut Vec<String>,
    spread: Option<f64>,
    baseline: &Option<String>,
    variant: &str,
    gain: &[f64],
    paper_column: bool,
    paper_gain: Option<f64>,
) {
    row.push(spread.map_or("—".into(), |s| format!("{s:.2}")));
    let Some(b) = baseline else { return };
    row.push(if b == variant {
        "(baseline)".into()
    } else if gain.is_empty() {
        "—".into()
    } else {
        let (m, s) = mean_std(gain);
        format!("{m:+.2}{} [{}]", s.map_or(String::new(), |s| format!(" ± {s:.2}")), gain.len())
    });
    if paper_column {
        row.push(if b == variant {
            "(baseline)".into()
        } else {
            paper_gain.map_or("—".into(), |g| format!("≈ {g:+.1}"))
        });
    }
}

/// Renders `results` and writes `report.md` and `report.csv` into it; returns the report.
pub fn write(results: &Path) -> Result<Report> {
    let r = report(results)?;
    let mut files = vec![("report.md", &r.markdown), ("report.csv", &r.csv)];
    if let Some(a) = &r.ablations_csv {
        files.push(("ablations.csv", a));
    }
    for (name, text) in files {
        let p = results.join(name);
        relnet_core::fsutil::write_atomic(&p, text.as_bytes()).map_err(|e| Error::io(&p, e))?;
    }
    Ok(r)
}
