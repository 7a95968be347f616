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
use super::{Cell, EvalSpec, Filter, Grid, PaperTable};
use crate::EvaluatorConfig;
use crate::plot::bars::{Bar, Line, bars_png, lines_png};
use crate::plot::metrics::{curves_png, read_run};

/// A method's row name (its spec's `display`; the name itself for a method no longer registered).
fn method_name(m: &str) -> String {
    relnet_core::methods::entry(m).map_or_else(|| m.to_string(), |e| e.spec.display.to_string())
}

/// A method's rank among the rows (its spec's `order`; unknown methods last).
fn method_rank(m: &str) -> usize {
    relnet_core::methods::entry(m).map_or(usize::MAX, |e| e.spec.order as usize)
}

/// The metrics a protocol's evaluator reports, the first compared with the paper.
fn metrics_of(e: &EvaluatorConfig) -> &'static [(&'static str, &'static str)] {
    e.get().spec().report
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
pub struct Report {
    pub markdown: String,
    pub csv: String,
    pub figures: Vec<PathBuf>,
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
    for (dir, m) in manifests(results)? {
        match m {
            Ok(m) => {
                for spec in &m.cell.evals {
                    let o = m.eval(&spec.key());
                    let mut e =
                        Entry { cell: m.cell.clone(), eval: spec.clone(), values: BTreeMap::new(), missing: None };
                    match (m.status, o) {
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
    let mut invocations: Vec<PathBuf> = std::fs::read_dir(results)
        .map_err(|e| Error::io(results, e))?
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.file_name().is_some_and(|n| n.to_string_lossy().starts_with("invocation-")))
        .collect();
    invocations.sort();
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
    let grid_path = results.join("grid.toml");
    let grid = if grid_path.exists() { Grid::load(Some(&grid_path))? } else { Grid::load(None)? };
    let (entries, unreadable, manifests) = entries(results, &grid)?;
    let figures_dir = results.join("figures");
    let mut figures = Vec::new();
    let mut md = String::new();
    let mut csv = String::from(
        "protocol,backbone,dataset,target,labels,method,pretrain_epochs,settings,metric,seeds,mean,std,paper_mean,paper_std,paper_status,paper_source,difference,status,note\n",
    );
    let mut notes: Vec<String> = Vec::new();
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
        "Results directory `{}`: {} cells, {} evaluations. Values are mean ± std over seeds (std when there are two or more; the number of seeds in brackets), in percent; the paper's value and the difference (relnet − paper) follow. Paper values are those of the paper's tables (Patacchiola & Storkey, NeurIPS 2020; the grid file's `[paper]` tables name each one); *approx.* marks values read off a figure.\n",
        results.display(),
        manifests.len(),
        entries.len()
    );

    // protocol -> condition -> (method, epochs, variant) -> entries, one per seed.
    let mut by_protocol: BTreeMap<String, BTreeMap<Condition, BTreeMap<Row, Vec<&Entry>>>> = BTreeMap::new();
    for e in &entries {
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
            let mut line = format!("| {} | {epochs} |", method_name(method));
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
                        let paper = if mi == 0 { grid.paper_value(&es[0].cell, &es[0].eval) } else { None };
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
                                " · paper {pm:.2}{}{approx}",
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
                let t: &PaperTable = grid.paper.get(proto)?.get(&super::paper_key(
                    &c.backbone,
                    &c.source,
                    &c.target,
                    c.labels.as_deref(),
                ))?;
                Some(format!("{}: paper {} ({})", c.title(), t.source, t.status))
            })
            .collect();
        if !sources.is_empty() {
            let _ = writeln!(md, "\n{}.", sources.join("; "));
        }
        let _ = writeln!(md);

        // Accuracy against the label budget, one figure per backbone and dataset.
        let budgets = conds.iter().any(|c| c.labels.is_some());
        if metrics[0].0 == "test_accuracy" && budgets {
            std::fs::create_dir_all(&figures_dir).map_err(|e| Error::io(&figures_dir, e))?;
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
                    if let Some((p, _, _)) = grid.paper_value(&es[0].cell, &es[0].eval) {
                        add(format!("{} (paper)", row.1), p);
                    }
                }
            }
            for ((backbone, source, target), lines) in groups {
                let stem = relnet_core::record::sanitize(&format!("{proto}-{backbone}-{source}-{target}"));
                let path = figures_dir.join(format!("{stem}.png"));
                lines_png(
                    &path,
                    &format!("{title}: {backbone} {source}"),
                    "labelled train images (%)",
                    "test accuracy (%)",
                    &lines,
                )?;
                let _ = writeln!(md, "![{proto} {backbone} {source}](figures/{stem}.png)\n");
                figures.push(path);
            }
        }
        // Bars for single-budget accuracy protocols; lines where a method has several budgets.
        if metrics[0].0 == "test_accuracy" && !budgets {
            std::fs::create_dir_all(&figures_dir).map_err(|e| Error::io(&figures_dir, e))?;
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
                    let paper = grid.paper_value(&es[0].cell, &es[0].eval).map(|p| p.0);
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
                bars_png(&path, &format!("{title}: {}", cond.title()), "test accuracy (%)", &bars)?;
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
            lines_png(
                &path,
                &format!("accuracy against pretraining epochs: {key}"),
                "pretraining epochs",
                "test accuracy (%)",
                &lines,
            )?;
            let _ = writeln!(
                md,
                "![accuracy against epochs {key}](figures/{})\n",
                path.file_name().unwrap().to_string_lossy()
            );
            figures.push(path);
        }
    }

    // Pretraining curves, one figure per (backbone, dataset).
    let mut runs: BTreeMap<(String, String), Vec<crate::plot::metrics::RunCurves>> = BTreeMap::new();
    for m in &manifests {
        let dir = m.cell.dir(results);
        if let Ok(mut r) = read_run(&dir) {
            r.name = format!("{} s{} ({} ep)", m.cell.method, m.cell.seed, m.cell.pretrain.epochs());
            runs.entry((m.cell.backbone.clone(), m.cell.dataset.clone())).or_default().push(r);
        }
    }
    if !runs.is_empty() {
        let _ = writeln!(md, "## Pretraining curves\n");
        std::fs::create_dir_all(&figures_dir).map_err(|e| Error::io(&figures_dir, e))?;
        for ((backbone, dataset), mut rs) in runs {
            rs.sort_by_key(|r| (method_rank(r.name.split(' ').next().unwrap_or("")), r.name.clone()));
            let path =
                figures_dir.join(format!("pretraining-{backbone}-{}.png", relnet_core::record::sanitize(&dataset)));
            curves_png(&path, &rs)?;
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
        total += m.pretrain_seconds + evals;
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
            fmt_secs(m.pretrain_seconds),
            fmt_secs(evals),
            fmt_secs(m.pretrain_seconds + evals)
        );
    }
    let _ = writeln!(
        md,
        "\nCompute time recorded in the cells: {} (pretraining and evaluations, summed; a resumed cell counts each part once).\n",
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
    Ok(Report { markdown: md, csv, figures })
}

/// Renders `results` and writes `report.md` and `report.csv` into it; returns the report.
pub fn write(results: &Path) -> Result<Report> {
    let r = report(results)?;
    for (name, text) in [("report.md", &r.markdown), ("report.csv", &r.csv)] {
        let p = results.join(name);
        relnet_core::fsutil::write_atomic(&p, text.as_bytes()).map_err(|e| Error::io(&p, e))?;
    }
    Ok(r)
}
