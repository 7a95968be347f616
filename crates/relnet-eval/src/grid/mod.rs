//! The paper's experiment grid as data, and the runner that reproduces it.
//!
//! A grid file (TOML; the paper's is embedded, [`PAPER_GRID`]) holds the pretraining rules,
//! the protocols, the profiles and the paper's values. [`Grid::cells`] expands a profile into
//! cells: one pretraining run (method x dataset x backbone x seed, with every setting resolved)
//! and the evaluations that use its backbone. A cell's directory is named by a hash of its
//! resolved pretraining configuration, so that the same cell always lands in the same place and a
//! changed setting never reuses a stale backbone. [`run`] executes cells and records each
//! outcome in the cell's `cell.json`; [`report`] renders a results directory beside the paper's
//! values; [`slurm`] writes a job-array script that runs one cell per task.

pub mod docs;
pub mod report;
pub mod run;
pub mod slurm;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use relnet_core::config::{self, ConfigError};
use relnet_core::device::DeviceSpec;
use relnet_core::pretrain::PretrainConfig;
use relnet_core::record::{sanitize, sha256_hex};
use relnet_core::{Error, Result};
use serde::{Deserialize, Serialize};

use relnet_core::methods::Views;

use crate::{CostInputs, EvaluatorConfig};

/// The grid of the paper, embedded in the binary (`crates/relnet-eval/grids/reproduce.toml`).
pub const PAPER_GRID: &str = include_str!("../../grids/reproduce.toml");

/// The grid file format's version.
pub const GRID_SCHEMA: u32 = 1;

/// A grid file.
#[derive(Deserialize, Debug, Clone)]
#[serde(deny_unknown_fields)]
pub struct Grid {
    pub schema: u32,
    #[serde(default)]
    pub pretrain: PretrainRules,
    pub protocols: BTreeMap<String, Protocol>,
    pub profiles: BTreeMap<String, Profile>,
    #[serde(default)]
    pub estimate: Estimates,
    /// protocol -> "<backbone>/<dataset>[-><target>][@<budget>]" -> the paper's values.
    #[serde(default)]
    pub paper: BTreeMap<String, BTreeMap<String, PaperTable>>,
}

/// Pretraining settings by "*", "<dataset>" or "<backbone>/<dataset>" (most specific wins).
#[derive(Deserialize, Debug, Clone, Default)]
#[serde(deny_unknown_fields)]
pub struct PretrainRules {
    #[serde(default)]
    pub epochs: BTreeMap<String, usize>,
    /// The relational method's K.
    #[serde(default)]
    pub k: BTreeMap<String, usize>,
}

fn rule<T: Copy>(map: &BTreeMap<String, T>, backbone: &str, dataset: &str) -> Option<T> {
    map.get(&format!("{backbone}/{dataset}")).or_else(|| map.get(dataset)).or_else(|| map.get("*")).copied()
}

/// How a backbone is evaluated.
#[derive(Deserialize, Debug, Clone)]
#[serde(deny_unknown_fields)]
pub struct Protocol {
    pub title: String,
    /// Rank of the protocol's section in the report (then by name).
    #[serde(default = "last")]
    pub order: u32,
    pub evaluator: String,
    #[serde(default)]
    pub options: toml::Table,
    /// Pretraining dataset -> evaluation dataset (empty: the pretraining dataset).
    #[serde(default)]
    pub targets: BTreeMap<String, String>,
    /// One evaluation per label budget (`labels` option of the evaluator).
    #[serde(default)]
    pub labels: Vec<String>,
}

#[derive(Deserialize, Debug, Clone)]
#[serde(deny_unknown_fields)]
pub struct Profile {
    pub description: String,
    pub seeds: Vec<u64>,
    /// Which `[estimate.*]` table times this profile (`cpu`, `gpu`).
    #[serde(default = "default_estimate")]
    pub estimate: String,
    /// Run keys laid over every cell (epochs, limit_images, batch_size...).
    #[serde(default)]
    pub pretrain: toml::Table,
    /// Method name -> options laid over that method's.
    #[serde(default)]
    pub method: BTreeMap<String, toml::Table>,
    /// Protocol name -> evaluator options laid over the protocol's.
    #[serde(default)]
    pub options: BTreeMap<String, toml::Table>,
    /// What the report says of the profile's budget: where its values can be set beside the
    /// paper's and where they cannot.
    #[serde(default)]
    pub note: Option<String>,
    /// Reference values for this profile's cells in place of the grid's `[paper]` tables (the
    /// official notebook's run, for instance), keyed like them.
    #[serde(default)]
    pub paper: BTreeMap<String, BTreeMap<String, PaperTable>>,
    pub experiments: Vec<Experiment>,
}

fn last() -> u32 {
    u32::MAX
}

fn default_estimate() -> String {
    "cpu".into()
}

#[derive(Deserialize, Debug, Clone)]
#[serde(deny_unknown_fields)]
pub struct Experiment {
    pub name: String,
    pub methods: Vec<String>,
    pub backbones: Vec<String>,
    pub datasets: Vec<String>,
    pub protocols: Vec<String>,
    /// The experiment's own seeds, in place of the profile's.
    #[serde(default)]
    pub seeds: Option<Vec<u64>>,
    /// Settings compared within the experiment (an ablation): every cell of the experiment is
    /// run once per variant, with the variant's options laid over the profile's.
    #[serde(default)]
    pub variants: Vec<Variant>,
    /// The variant the others' gains are measured from (seed by seed).
    #[serde(default)]
    pub baseline: Option<String>,
    /// Where the paper reports this comparison; absent: the paper does not report it.
    #[serde(default)]
    pub paper: Option<String>,
    /// The x axis of the variants' figure (each variant's `x` places it).
    #[serde(default)]
    pub axis: Option<String>,
    /// A paragraph the report prints with the experiment's table.
    #[serde(default)]
    pub note: Option<String>,
}

/// One setting of an ablation.
#[derive(Deserialize, Debug, Clone)]
#[serde(deny_unknown_fields)]
pub struct Variant {
    /// The row's name in the report ("K = 8", "sum", "focal").
    pub name: String,
    /// Method name -> options laid over that method's (after the profile's).
    #[serde(default)]
    pub method: BTreeMap<String, toml::Table>,
    /// Run keys laid over the profile's `pretrain` (`precision`, `epochs`...).
    #[serde(default)]
    pub pretrain: toml::Table,
    /// The variant's place on the figure's x axis (K, for instance); no figure without it.
    #[serde(default)]
    pub x: Option<f64>,
    /// The paper's gain of this variant over the baseline, in points.
    #[serde(default)]
    pub paper_gain: Option<f64>,
}

/// `[estimate.images]` and one `[estimate.<device>]` table per device class (serde cannot deny
/// unknown fields beside a flattened map: every other key is read as a device table).
#[derive(Deserialize, Debug, Clone, Default)]
pub struct Estimates {
    #[serde(default)]
    pub images: BTreeMap<String, [usize; 3]>,
    #[serde(flatten)]
    pub devices: BTreeMap<String, Throughput>,
}

/// Measured (or, where `source` says so, assumed) speeds for time estimates.
#[derive(Deserialize, Debug, Clone)]
#[serde(deny_unknown_fields)]
pub struct Throughput {
    pub source: String,
    pub views_per_s: BTreeMap<String, f64>,
    pub method_cost: BTreeMap<String, f64>,
    pub forward_speedup: f64,
    pub probe_epoch_s_per_10k: f64,
    pub fixed_eval_s: f64,
}

/// The paper's values for one column of one table.
#[derive(Deserialize, Debug, Clone)]
#[serde(deny_unknown_fields)]
pub struct PaperTable {
    pub source: String,
    /// `verified` or `approximate`, as the reference marks it.
    pub status: String,
    /// method -> [mean] or [mean, std].
    pub values: BTreeMap<String, Vec<f64>>,
    /// The word the report sets before these values (default `paper`; `notebook` for the
    /// official notebook's run).
    #[serde(default)]
    pub label: Option<String>,
}

impl PaperTable {
    /// The word the report sets before the values.
    pub fn label(&self) -> &str {
        self.label.as_deref().unwrap_or("paper")
    }
}

/// One evaluation of a cell.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
pub struct EvalSpec {
    pub protocol: String,
    /// The evaluation dataset (the target).
    pub dataset: String,
    /// The label budget, for protocols run per budget.
    pub labels: Option<String>,
    pub evaluator: EvaluatorConfig,
}

impl EvalSpec {
    /// `<protocol>:<target>[@<budget>]`, unique within a cell.
    pub fn key(&self) -> String {
        let mut k = format!("{}:{}", self.protocol, self.dataset);
        if let Some(b) = &self.labels {
            k.push('@');
            k.push_str(b);
        }
        k
    }
}

/// One pretraining run and its evaluations.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
pub struct Cell {
    pub method: String,
    pub dataset: String,
    pub backbone: String,
    pub seed: u64,
    /// The resolved pretraining configuration (its `out`, `data_root` and `device` are set when
    /// the cell runs; they are not part of the hash).
    pub pretrain: PretrainConfig,
    pub evals: Vec<EvalSpec>,
    /// The experiments (paper tables) the cell serves.
    pub experiments: Vec<String>,
    /// Experiment -> the variant of it this cell is, for the experiments that compare variants.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub variants: BTreeMap<String, String>,
    /// SHA-256 (hex, 12 digits) of the resolved pretraining configuration.
    pub hash: String,
}

impl Cell {
    /// The cell's directory name: `<method>-<dataset>-<backbone>-s<seed>-<hash>`.
    pub fn dir_name(&self) -> String {
        format!("{}-{}-{}-s{}-{}", self.method, sanitize(&self.dataset), self.backbone, self.seed, self.hash)
    }

    /// The cell's directory under a results directory.
    pub fn dir(&self, results: &Path) -> PathBuf {
        results.join("cells").join(self.dir_name())
    }

    /// `method/dataset/backbone/seed`, for progress lines.
    pub fn label(&self) -> String {
        format!("{} {} {} seed {}", self.method, self.dataset, self.backbone, self.seed)
    }
}

/// `--only key=value,...`: cells (and evaluations, for `protocol`) to keep. Several values of one
/// key are alternatives: `method=simclr,method=relational`.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Filter {
    pub keys: BTreeMap<String, Vec<String>>,
}

impl std::str::FromStr for Filter {
    type Err = String;
    fn from_str(s: &str) -> std::result::Result<Self, String> {
        let mut f = Filter::default();
        for part in s.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            let (k, v) = part.split_once('=').ok_or_else(|| {
                format!("`{part}` is not key=value (keys: method, dataset, backbone, seed, protocol)")
            })?;
            let k = k.trim();
            if !["method", "dataset", "backbone", "seed", "protocol"].contains(&k) {
                return Err(format!("unknown filter key `{k}` (keys: method, dataset, backbone, seed, protocol)"));
            }
            f.keys.entry(k.to_string()).or_default().push(v.trim().to_string());
        }
        Ok(f)
    }
}

impl Filter {
    fn admits(&self, key: &str, value: &str) -> bool {
        self.keys.get(key).is_none_or(|vs| vs.iter().any(|v| v == value))
    }
}

/// Lays `over` onto `base`, tables merged key by key.
fn lay(base: &mut toml::Table, over: &toml::Table) {
    config::merge(base, over.clone());
}

impl Grid {
    /// Parses and checks a grid file's text; `origin` names it in errors.
    pub fn parse(text: &str, origin: &Path) -> Result<Grid> {
        let bad = |problem: String| Error::Config(ConfigError { file: Some(origin.to_path_buf()), key: None, problem });
        let grid: Grid =
            toml::from_str(text).map_err(|e| bad(format!("not a valid grid file: {}", e.message().trim())))?;
        if grid.schema != GRID_SCHEMA {
            return Err(bad(format!("grid schema {}; this relnet reads schema {GRID_SCHEMA}", grid.schema)));
        }
        for (name, p) in &grid.profiles {
            for e in &p.experiments {
                for proto in &e.protocols {
                    if !grid.protocols.contains_key(proto) {
                        return Err(bad(format!(
                            "profile `{name}`, experiment `{}`: unknown protocol `{proto}`",
                            e.name
                        )));
                    }
                }
            }
            for e in &p.experiments {
                let in_exp = |what: String| bad(format!("profile `{name}`, experiment `{}`: {what}", e.name));
                for (i, v) in e.variants.iter().enumerate() {
                    if e.variants[..i].iter().any(|w| w.name == v.name) {
                        return Err(in_exp(format!("two variants are named `{}`", v.name)));
                    }
                    if let Some(m) = v.method.keys().find(|m| !e.methods.contains(m)) {
                        return Err(in_exp(format!(
                            "variant `{}` sets options of `{m}`, not a method of the experiment",
                            v.name
                        )));
                    }
                }
                if let Some(b) = &e.baseline
                    && !e.variants.iter().any(|v| &v.name == b)
                {
                    return Err(in_exp(format!("baseline `{b}` is not one of its variants")));
                }
                if let Some(v) = e.variants.iter().find(|v| v.paper_gain.is_some())
                    && (e.paper.is_none() || e.baseline.is_none())
                {
                    return Err(in_exp(format!(
                        "variant `{}` has a `paper_gain` but the experiment names no `paper` source or no `baseline`",
                        v.name
                    )));
                }
            }
            if p.seeds.is_empty() || p.experiments.iter().any(|e| e.seeds.as_ref().is_some_and(Vec::is_empty)) {
                return Err(bad(format!("profile `{name}` has no seeds")));
            }
        }
        for (name, p) in &grid.protocols {
            if crate::entry(&p.evaluator).is_none() {
                return Err(bad(format!(
                    "protocol `{name}`: unknown evaluator `{}` (known: {})",
                    p.evaluator,
                    crate::names().join(", ")
                )));
            }
        }
        Ok(grid)
    }

    /// The grid in `path`, or the embedded paper grid.
    pub fn load(path: Option<&Path>) -> Result<Grid> {
        match path {
            Some(p) => {
                let text = std::fs::read_to_string(p).map_err(|e| Error::io(p, e))?;
                Grid::parse(&text, p)
            }
            None => Grid::parse(PAPER_GRID, Path::new("<embedded grids/reproduce.toml>")),
        }
    }

    pub fn profile(&self, name: &str) -> Result<&Profile> {
        self.profiles.get(name).ok_or_else(|| {
            Error::Config(ConfigError::key(
                "profile",
                format!(
                    "no profile `{name}` in the grid (profiles: {})",
                    self.profiles.keys().cloned().collect::<Vec<_>>().join(", ")
                ),
            ))
        })
    }

    /// The cells of a profile that pass `only`, in a fixed order (experiment order, then method,
    /// dataset, backbone, seed as listed). Each cell's settings are resolved and validated.
    pub fn cells(&self, profile: &str, only: &Filter) -> Result<Vec<Cell>> {
        let prof = self.profile(profile)?;
        let mut cells: Vec<Cell> = Vec::new();
        for exp in &prof.experiments {
            let variants: Vec<Option<&Variant>> =
                if exp.variants.is_empty() { vec![None] } else { exp.variants.iter().map(Some).collect() };
            for variant in variants {
                for method in &exp.methods {
                    for dataset in &exp.datasets {
                        for backbone in &exp.backbones {
                            for &seed in exp.seeds.as_ref().unwrap_or(&prof.seeds) {
                                if !(only.admits("method", method)
                                    && only.admits("dataset", dataset)
                                    && only.admits("backbone", backbone)
                                    && only.admits("seed", &seed.to_string()))
                                {
                                    continue;
                                }
                                let evals = self.evals(prof, exp, dataset, only)?;
                                if evals.is_empty() {
                                    continue;
                                }
                                // Cells are one per resolved configuration: an ablation's
                                // variant that equals another experiment's cell (K = 4 with
                                // concatenation and focal loss) is that cell.
                                let new = self.cell(prof, method, dataset, backbone, seed, variant)?;
                                let cell = match cells.iter().position(|c| c.hash == new.hash) {
                                    Some(i) => &mut cells[i],
                                    None => {
                                        cells.push(new);
                                        cells.last_mut().expect("pushed")
                                    }
                                };
                                if !cell.experiments.contains(&exp.name) {
                                    cell.experiments.push(exp.name.clone());
                                }
                                if let Some(v) = variant
                                    && let Some(other) = cell.variants.insert(exp.name.clone(), v.name.clone())
                                    && other != v.name
                                {
                                    return Err(Error::Config(ConfigError::key(
                                        "variants",
                                        format!(
                                            "profile `{profile}`, experiment `{}`: variants `{other}` and `{}` resolve to the same settings",
                                            exp.name, v.name
                                        ),
                                    )));
                                }
                                for e in evals {
                                    if !cell.evals.iter().any(|x| x.key() == e.key()) {
                                        cell.evals.push(e);
                                    }
                                }
                            }
                        }
                    }
                }
            }
        }
        Ok(cells)
    }

    fn evals(&self, prof: &Profile, exp: &Experiment, dataset: &str, only: &Filter) -> Result<Vec<EvalSpec>> {
        let mut out = Vec::new();
        for name in &exp.protocols {
            if !only.admits("protocol", name) {
                continue;
            }
            let p = &self.protocols[name];
            let target = if p.targets.is_empty() {
                dataset.to_string()
            } else {
                match p.targets.get(dataset) {
                    Some(t) => t.clone(),
                    None => continue,
                }
            };
            let budgets: Vec<Option<String>> =
                if p.labels.is_empty() { vec![None] } else { p.labels.iter().cloned().map(Some).collect() };
            for budget in budgets {
                let mut table = toml::Table::new();
                table.insert("kind".into(), p.evaluator.clone().into());
                lay(&mut table, &p.options);
                if let Some(o) = prof.options.get(name) {
                    lay(&mut table, o);
                }
                if let Some(b) = &budget {
                    table.insert("labels".into(), b.clone().into());
                }
                let evaluator: EvaluatorConfig =
                    toml::Value::Table(table).try_into().map_err(|e: toml::de::Error| {
                        Error::Config(ConfigError::key(name, format!("protocol `{name}`: {}", e.message().trim())))
                    })?;
                evaluator.get().validate().map_err(Error::Config)?;
                out.push(EvalSpec { protocol: name.clone(), dataset: target.clone(), labels: budget, evaluator });
            }
        }
        Ok(out)
    }

    fn cell(
        &self,
        prof: &Profile,
        method: &str,
        dataset: &str,
        backbone: &str,
        seed: u64,
        variant: Option<&Variant>,
    ) -> Result<Cell> {
        let mut table = toml::Table::new();
        table.insert("dataset".into(), dataset.into());
        table.insert("backbone".into(), backbone.into());
        table.insert("seed".into(), toml::Value::Integer(seed as i64));
        if let Some(e) = rule(&self.pretrain.epochs, backbone, dataset) {
            table.insert("epochs".into(), toml::Value::Integer(e as i64));
        }
        let mut m = toml::Table::new();
        m.insert("kind".into(), method.into());
        let spec = relnet_core::methods::entry(method)
            .ok_or_else(|| {
                Error::Config(ConfigError::key(
                    "methods",
                    format!("unknown method `{method}` (known: {})", relnet_core::methods::names().join(", ")),
                ))
            })?
            .spec;
        if let Views::K { option } = spec.views
            && let Some(k) = rule(&self.pretrain.k, backbone, dataset)
        {
            m.insert(option.into(), toml::Value::Integer(k as i64));
        }
        lay(&mut table, &prof.pretrain);
        if let Some(v) = variant {
            lay(&mut table, &v.pretrain);
        }
        if let Some(o) = prof.method.get(method) {
            lay(&mut m, o);
        }
        if let Some(o) = variant.and_then(|v| v.method.get(method)) {
            lay(&mut m, o);
        }
        table.insert("method".into(), toml::Value::Table(m));
        let cfg: PretrainConfig = config::resolve(None, table).map_err(|mut e| {
            let v = variant.map_or(String::new(), |v| format!(" (variant `{}`)", v.name));
            e.problem = format!("cell {method}/{dataset}/{backbone}{v}: {}", e.problem);
            Error::Config(e)
        })?;
        let cfg = cfg.resolved();
        let hash = config_hash(&cfg);
        Ok(Cell {
            method: method.into(),
            dataset: dataset.into(),
            backbone: backbone.into(),
            seed,
            pretrain: cfg,
            evals: Vec::new(),
            experiments: Vec::new(),
            variants: BTreeMap::new(),
            hash,
        })
    }

    /// The paper's value for a method in one evaluation of a cell: (mean, std, table).
    pub fn paper_value(&self, cell: &Cell, eval: &EvalSpec) -> Option<(f64, Option<f64>, &PaperTable)> {
        self.reference_value(&self.paper, cell, eval)
    }

    /// The value a profile sets beside a cell: the profile's own `paper` tables where they hold
    /// the cell's key, else the grid's.
    pub fn profile_value<'a>(
        &'a self,
        profile: Option<&'a Profile>,
        cell: &Cell,
        eval: &EvalSpec,
    ) -> Option<(f64, Option<f64>, &'a PaperTable)> {
        profile.and_then(|p| self.reference_value(&p.paper, cell, eval)).or_else(|| self.paper_value(cell, eval))
    }

    fn reference_value<'a>(
        &self,
        tables: &'a BTreeMap<String, BTreeMap<String, PaperTable>>,
        cell: &Cell,
        eval: &EvalSpec,
    ) -> Option<(f64, Option<f64>, &'a PaperTable)> {
        let table = tables.get(&eval.protocol)?.get(&paper_key(
            &cell.backbone,
            &cell.dataset,
            &eval.dataset,
            eval.labels.as_deref(),
        ))?;
        let v = table.values.get(&cell.method)?;
        Some((*v.first()?, v.get(1).copied(), table))
    }
}

/// The key of the paper's tables: `<backbone>/<dataset>[-><target>][@<budget>]`.
pub fn paper_key(backbone: &str, source: &str, target: &str, budget: Option<&str>) -> String {
    let mut k = format!("{backbone}/{source}");
    if target != source {
        k.push_str("->");
        k.push_str(target);
    }
    if let Some(b) = budget {
        k.push('@');
        k.push_str(b);
    }
    k
}

/// The hash that names a cell: SHA-256 of the resolved pretraining configuration without the
/// keys that say where and on what it runs (`out`, `data_root`, `device`), and with the version
/// of the random streams (a cell drawn with other streams is another cell).
pub fn config_hash(cfg: &PretrainConfig) -> String {
    let mut c = cfg.clone();
    c.out = PathBuf::new();
    c.data_root = None;
    c.device = DeviceSpec::Cpu;
    let text = format!("# streams {}\n{}", relnet_core::streams::VERSION, config::to_toml(&c));
    sha256_hex(text.as_bytes())[..12].to_string()
}

/// The hash of a cell's pretraining without its seed, dataset and backbone (the report's
/// columns): cells of one method that share it differ only there, and the report averages over
/// seeds only within one such variant.
pub fn variant_hash(cfg: &PretrainConfig) -> String {
    let mut c = cfg.clone();
    c.seed = 0;
    c.dataset = String::new();
    c.backbone = relnet_models::BackboneKind::Conv4;
    config_hash(&c)
}

/// A rough duration of a cell in seconds, from the profile's `[estimate.*]` table.
pub fn estimate_seconds(grid: &Grid, profile: &Profile, cell: &Cell) -> Option<f64> {
    let t = grid.estimate.devices.get(&profile.estimate)?;
    let images = |d: &str| grid.estimate.images.get(d).copied();
    let vps = *t.views_per_s.get(&cell.backbone)?;
    let spec = cell.pretrain.method.get().spec();
    let cost = t.method_cost.get(&cell.method).copied().unwrap_or(spec.cost);
    let [pre, train, _] = images(&cell.dataset)?;
    let n = if spec.needs_labels { train } else { pre };
    let n = cell.pretrain.limit_images.map_or(n, |l| l.min(n)) as f64;
    let views = cell.pretrain.epochs() as f64 * n * cell.pretrain.method.get().views() as f64;
    let mut s = views * cost / vps;
    let mut featurised: Vec<&str> = Vec::new();
    for e in &cell.evals {
        let [_, tr, te] = images(&e.dataset).unwrap_or([50_000, 50_000, 10_000]);
        let evaluator = e.evaluator.get();
        if !featurised.contains(&e.dataset.as_str()) && evaluator.spec().frozen_features {
            featurised.push(&e.dataset);
            s += (tr + te) as f64 / (vps * t.forward_speedup);
        }
        s += t.fixed_eval_s;
        let inputs = CostInputs {
            train_images: tr,
            test_images: te,
            views_per_s: vps,
            forward_speedup: t.forward_speedup,
            probe_epoch_s_per_10k: t.probe_epoch_s_per_10k,
        };
        s += evaluator.cost_seconds(&inputs);
    }
    Some(s)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_paper_grid_expands_into_the_published_cells() {
        let g = Grid::load(None).unwrap();
        let cells = g.cells("paper", &Filter::default()).unwrap();
        // Table 2: 7 methods x 2 backbones x 3 datasets; Table 1 adds ResNet-34 STL-10 (6
        // methods); Table 3 adds SlimageNet64 (5 methods); transfer, grain and fewer labels reuse
        // the ResNet-32 CIFAR cells. Times 3 seeds.
        assert_eq!(cells.len(), (42 + 6 + 5) * 3);
        let rel = cells
            .iter()
            .find(|c| c.method == "relational" && c.backbone == "resnet32" && c.dataset == "cifar100" && c.seed == 2)
            .unwrap();
        let keys: Vec<String> = rel.evals.iter().map(EvalSpec::key).collect();
        assert_eq!(
            keys,
            [
                "linear:cifar100",
                "transfer:cifar10",
                "grain:cifar100-20",
                "fewer-labels:cifar100@1%",
                "fewer-labels:cifar100@10%",
                "fewer-labels:cifar100@25%",
                "fewer-labels:cifar100@50%",
                "fewer-labels:cifar100@100%"
            ]
        );
        assert_eq!(rel.pretrain.epochs, Some(200));
        assert_eq!(rel.pretrain.method.get().views(), 32);
        let tiny = cells
            .iter()
            .find(|c| c.method == "relational" && c.backbone == "resnet32" && c.dataset == "tiny-imagenet")
            .unwrap();
        assert_eq!(tiny.pretrain.method.get().views(), 16, "K = 16 for ResNet-32 on tiny-ImageNet");
        let stl = cells.iter().find(|c| c.method == "relational" && c.dataset == "stl10").unwrap();
        assert_eq!((stl.pretrain.epochs, stl.pretrain.method.get().views()), (Some(300), 25));
        // Every cell has the paper's value for each of its evaluations, but kNN/retrieval.
        for c in &cells {
            for e in &c.evals {
                assert!(g.paper_value(c, e).is_some(), "no paper value for {} {}", c.dir_name(), e.key());
            }
        }
        // Hashes are distinct and stable.
        let mut names: Vec<String> = cells.iter().map(Cell::dir_name).collect();
        names.sort();
        names.dedup();
        assert_eq!(names.len(), cells.len());
        assert_eq!(g.cells("paper", &Filter::default()).unwrap()[0].hash, cells[0].hash);
    }

    #[test]
    fn filters_and_profile_overrides_apply() {
        let g = Grid::load(None).unwrap();
        let only: Filter = "method=relational,method=simclr,protocol=linear".parse().unwrap();
        let cells = g.cells("cpu", &only).unwrap();
        assert_eq!(cells.iter().map(|c| c.method.as_str()).collect::<Vec<_>>(), ["simclr", "relational"]);
        assert!(cells.iter().all(|c| c.evals.len() == 1 && c.pretrain.epochs == Some(2)));
        assert_eq!(cells[1].pretrain.method.get().views(), 4);
        let linear = cells[1].evals[0]
            .evaluator
            .downcast_ref::<crate::linear::LinearOptions>()
            .expect("the linear protocol's evaluator");
        assert_eq!(linear.epochs, 10);
        let all = g.cells("cpu", &Filter::default()).unwrap();
        assert_eq!(all.len(), 7);
        let rel = all.iter().find(|c| c.method == "relational").unwrap();
        assert_eq!(rel.hash, cells[1].hash, "the protocol filter does not change the cell's directory");
        assert!("colour=red".parse::<Filter>().unwrap_err().contains("unknown filter key"));
        assert!(
            g.cells("gpu-cluster", &Filter::default()).unwrap_err().to_string().contains("no profile `gpu-cluster`")
        );
        // An estimate exists for every cell of the shipped profiles.
        for p in ["paper", "cpu", "smoke", "notebook", "ablations", "quickstart"] {
            let prof = g.profile(p).unwrap();
            for c in g.cells(p, &Filter::default()).unwrap() {
                assert!(
                    estimate_seconds(&g, prof, &c).is_some_and(|s| s > 0.0 || c.method == "random"),
                    "{p} {}",
                    c.dir_name()
                );
            }
        }
    }

    #[test]
    fn the_ablation_profile_expands_into_one_cell_per_distinct_setting() {
        use relnet_core::objective::{Aggregation, RelationLoss};
        let g = Grid::load(None).unwrap();
        let cells = g.cells("ablations", &Filter::default()).unwrap();
        // K = 2, 4, 8, 16; sum, mean, max (cat is K = 4); BCE (focal is K = 4): 8 settings x 3 seeds.
        assert_eq!(cells.len(), 8 * 3);
        let opts = |c: &Cell| {
            c.pretrain.method.downcast_ref::<relnet_core::methods::relational::RelationalOptions>().unwrap().clone()
        };
        let mut settings: Vec<(usize, String, String)> = cells
            .iter()
            .filter(|c| c.seed == 1)
            .map(|c| {
                let o = opts(c);
                (o.k.unwrap(), format!("{:?}", o.aggregation), format!("{:?}", o.loss))
            })
            .collect();
        settings.sort();
        let want: Vec<(usize, &str, &str)> = vec![
            (2, "Cat", "Focal"),
            (4, "Cat", "Bce"),
            (4, "Cat", "Focal"),
            (4, "Max", "Focal"),
            (4, "Mean", "Focal"),
            (4, "Sum", "Focal"),
            (8, "Cat", "Focal"),
            (16, "Cat", "Focal"),
        ];
        assert_eq!(settings, want.iter().map(|(k, a, l)| (*k, a.to_string(), l.to_string())).collect::<Vec<_>>());
        for c in &cells {
            assert_eq!(c.pretrain.epochs, Some(3));
            assert_eq!(
                c.evals.iter().map(EvalSpec::key).collect::<Vec<_>>(),
                ["linear:cifar10", "knn:cifar10", "retrieval:cifar10"]
            );
            let linear = c.evals[0].evaluator.downcast_ref::<crate::linear::LinearOptions>().unwrap();
            assert_eq!(linear.epochs, 10);
        }
        // The shared cell (K = 4, cat, focal) is a variant of all three experiments.
        let shared = cells
            .iter()
            .find(|c| {
                let o = opts(c);
                c.seed == 2 && o.k == Some(4) && o.aggregation == Aggregation::Cat && o.loss == RelationLoss::Focal
            })
            .unwrap();
        assert_eq!(shared.experiments.len(), 3);
        assert_eq!(
            shared.variants.values().cloned().collect::<Vec<_>>(),
            ["cat", "K = 4", "focal"],
            "by experiment name: {:?}",
            shared.variants
        );
        let bce = cells.iter().find(|c| opts(c).loss == RelationLoss::Bce).unwrap();
        assert_eq!(bce.variants.len(), 1);
        assert_eq!(bce.variants.values().next().unwrap(), "BCE");
        // Distinct settings, distinct directories.
        let mut dirs: Vec<String> = cells.iter().map(Cell::dir_name).collect();
        dirs.sort();
        dirs.dedup();
        assert_eq!(dirs.len(), cells.len());
        // The variants' hashes (seed, dataset and backbone aside) group the seeds of one setting.
        let mut variants: Vec<String> = cells.iter().map(|c| variant_hash(&c.pretrain)).collect();
        variants.sort();
        variants.dedup();
        assert_eq!(variants.len(), 8);
    }

    #[test]
    fn the_notebook_profile_is_the_notebooks_run_with_its_value_beside_it() {
        let g = Grid::load(None).unwrap();
        let prof = g.profile("notebook").unwrap();
        let all = g.cells("notebook", &Filter::default()).unwrap();
        // fp32 (the notebook's run, also the precision experiment's baseline) and bf16.
        assert_eq!(
            all.iter().map(|c| (c.seed, c.pretrain.precision.to_string())).collect::<Vec<_>>(),
            [
                (1, "fp32".to_string()),
                (2, "fp32".into()),
                (3, "fp32".into()),
                (1, "bf16".into()),
                (2, "bf16".into()),
                (3, "bf16".into())
            ]
        );
        assert_eq!(all[0].experiments.len(), 2);
        assert_eq!(all[3].experiments.len(), 1);
        let cells = &all[..3];
        for c in cells {
            let o = c.pretrain.method.downcast_ref::<relnet_core::methods::relational::RelationalOptions>().unwrap();
            assert_eq!((o.k, o.loss), (Some(4), relnet_core::objective::RelationLoss::Bce));
            assert_eq!((c.pretrain.epochs, c.pretrain.batch_size()), (Some(10), 64));
            let (v, std, table) = g.profile_value(Some(prof), c, &c.evals[0]).unwrap();
            assert_eq!((v, std), (52.33, None));
            assert!(table.source.contains("notebook"));
            // Without the profile, the paper's Table 2 value.
            assert_eq!(g.profile_value(None, c, &c.evals[0]).unwrap().0, 61.03);
        }
    }

    #[test]
    fn bad_variants_are_refused_with_the_experiment_named() {
        let p = Path::new("my-grid.toml");
        let base = "schema = 1\n[protocols.linear]\ntitle = \"l\"\nevaluator = \"linear\"\n[profiles.a]\ndescription = \"a\"\nseeds = [1]\n[[profiles.a.experiments]]\nname = \"abl\"\nmethods = [\"relational\"]\nbackbones = [\"conv4\"]\ndatasets = [\"synthetic\"]\nprotocols = [\"linear\"]\n";
        let e = Grid::parse(&format!("{base}baseline = \"K = 3\"\nvariants = [{{ name = \"K = 2\" }}]\n"), p)
            .unwrap_err()
            .to_string();
        assert!(e.contains("my-grid.toml") && e.contains("`abl`") && e.contains("baseline `K = 3`"), "{e}");
        let e = Grid::parse(&format!("{base}variants = [{{ name = \"a\" }}, {{ name = \"a\" }}]\n"), p)
            .unwrap_err()
            .to_string();
        assert!(e.contains("two variants are named `a`"), "{e}");
        let g = Grid::parse(&format!("{base}variants = [{{ name = \"a\" }}, {{ name = \"b\" }}]\n"), p).unwrap();
        let same = g.cells("a", &Filter::default()).unwrap_err().to_string();
        assert!(same.contains("variants `a` and `b` resolve to the same settings"), "{same}");
        let e2 = Grid::parse(&format!("{base}variants = [{{ name = \"a\", paper_gain = 1.0 }}]\n"), p)
            .unwrap_err()
            .to_string();
        assert!(e2.contains("has a `paper_gain` but"), "{e2}");
        let e = Grid::parse(
            &format!("{base}variants = [{{ name = \"a\", method.simclr = {{ temperature = 0.1 }} }}]\n"),
            p,
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("`simclr`, not a method of the experiment"), "{e}");
        // A variant's option that the method refuses names the variant.
        let g =
            Grid::parse(&format!("{base}variants = [{{ name = \"huge\", method.relational = {{ k = 99 }} }}]\n"), p)
                .unwrap();
        let e = g.cells("a", &Filter::default()).unwrap_err().to_string();
        assert!(e.contains("variant `huge`") && e.contains('k'), "{e}");
    }

    #[test]
    fn bad_grid_files_are_refused_with_the_file_named() {
        let p = Path::new("my-grid.toml");
        let e = Grid::parse("schema = 1\n[protocols.x]\ntitle = \"x\"\nevaluator = \"nope\"\n[profiles]\n", p)
            .unwrap_err()
            .to_string();
        assert!(e.contains("my-grid.toml") && e.contains("unknown evaluator `nope`"), "{e}");
        let e = Grid::parse("schema = 7\n[protocols]\n[profiles]\n", p).unwrap_err().to_string();
        assert!(e.contains("grid schema 7"), "{e}");
        let e = Grid::parse("schema = 1\nprotocols = 3\n", p).unwrap_err().to_string();
        assert!(e.contains("my-grid.toml") && e.contains("not a valid grid file"), "{e}");
        let text = PAPER_GRID.replace("epochs = 2 }", "epochs = 0 }");
        let e = Grid::parse(&text, p).unwrap().cells("cpu", &Filter::default()).unwrap_err().to_string();
        assert!(e.contains("epochs") && e.contains("out of range"), "{e}");
    }
}
