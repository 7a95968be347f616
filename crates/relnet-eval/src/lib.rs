//! relnet-eval: the evaluators, the frozen-feature cache they share, and the result records they
//! write.
//!
//! An evaluator is one file: its options struct (the `[evaluator]` table of an evaluation config
//! and, through clap's derive, the flags of `relnet eval <name>`) implementing
//! [`EvaluatorOptions`], plus one [`register`] call (relnet's own are in the registry below; any
//! crate that depends on relnet-eval can add its own). [`evaluate`] does the rest:
//! it hashes and loads the backbone artifact, resolves the dataset, hands the evaluator an
//! [`EvalContext`] (frozen features computed once and cached), and writes the record it returns
//! under `<backbone dir>/results/`.

pub mod embed;
pub mod features;
pub mod finetune;
pub mod grid;
pub mod knn;
pub mod labels;
pub mod linear;
pub mod plot;
pub mod results;
pub mod retrieval;

use std::any::Any;
use std::collections::HashMap;
use std::fmt::Debug;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::time::Instant;

use burn::prelude::*;
use clap::{ArgMatches, Args, FromArgMatches};
use relnet_core::config::{ConfigError, RunConfig};
use relnet_core::data::DataRoot;
use relnet_core::data::registry::{DatasetInfo, Split, lookup};
use relnet_core::device::DeviceSpec;
use relnet_core::pretrain::Reporter;
use relnet_core::record::{ArtifactRef, ResultRecord};
use relnet_core::registry::{Named, Registry, RegistryError};
use relnet_core::run::check_image_size;
use relnet_core::{Error, Result};
use relnet_models::{Backbone, BackboneKind};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use crate::features::{Features, frozen_features, load_split};

/// What the rest of relnet asks about an evaluator: its name and help, where reports put it and
/// which of its metrics they show, and what its cost is made of.
#[derive(Clone, Copy, Debug)]
pub struct EvaluatorSpec {
    /// The name in configs (`kind = "..."`) and on the command line (`relnet eval <name>`).
    pub name: &'static str,
    /// One line of help (`relnet eval --help`).
    pub about: &'static str,
    /// Rank among evaluators in reports.
    pub order: u32,
    /// The metrics a grid report shows, `(record key, column label)`; the first is compared with
    /// the paper's value.
    pub report: &'static [(&'static str, &'static str)],
    /// The metrics `relnet eval` prints as `key=value` lines: exact keys, `prefix*` or `*suffix`.
    pub headline: &'static [&'static str],
    /// Reads the frozen features of the evaluation dataset (the grid's estimate counts one
    /// forward pass per dataset for all such evaluators of a cell).
    pub frozen_features: bool,
}

impl EvaluatorSpec {
    /// Whether `relnet eval` prints metric `key`.
    pub fn is_headline(&self, key: &str) -> bool {
        self.headline.iter().any(|p| match (p.strip_suffix('*'), p.strip_prefix('*')) {
            (Some(prefix), _) => key.starts_with(prefix),
            (_, Some(suffix)) => key.ends_with(suffix),
            _ => key == *p,
        })
    }
}

/// What the grid's time estimate knows of an evaluation: the sizes of the evaluation dataset's
/// splits and the device's measured speeds.
#[derive(Clone, Copy, Debug)]
pub struct CostInputs {
    pub train_images: usize,
    pub test_images: usize,
    /// Training views per second of the cell's backbone.
    pub views_per_s: f64,
    /// How much faster an eval-mode forward pass is than a training view.
    pub forward_speedup: f64,
    /// Seconds of one linear-probe epoch per 10,000 training images.
    pub probe_epoch_s_per_10k: f64,
}

/// An evaluator's options: the `[evaluator]` table of an evaluation config and its flags.
///
/// Implemented once per evaluator, in its own file; [`register`] makes it known to relnet
/// (relnet's own evaluators are registered from the start).
pub trait EvaluatorOptions:
    Args + FromArgMatches + Serialize + DeserializeOwned + Default + Clone + Debug + PartialEq + Send + Sync + 'static
{
    /// The name in configs (`kind = "..."`) and on the command line (`relnet eval <name>`).
    const NAME: &'static str;
    /// What reports, the CLI and the grid ask about the evaluator.
    fn spec(&self) -> EvaluatorSpec;
    /// Checks every value's range; errors name the key.
    fn validate(&self) -> std::result::Result<(), ConfigError> {
        Ok(())
    }
    /// Seconds this evaluation adds beyond the shared feature pass (the grid's estimates).
    fn cost_seconds(&self, _inputs: &CostInputs) -> f64 {
        0.0
    }
    /// Runs the evaluation and returns its record (metrics filled in; the runtime adds the wall
    /// time and writes it).
    fn run(&self, ctx: &mut EvalContext) -> Result<ResultRecord>;
}

/// [`EvaluatorOptions`] behind a pointer: what [`EvaluatorConfig`] holds.
pub trait DynEvaluator: Debug + Send + Sync {
    fn name(&self) -> &'static str;
    fn spec(&self) -> EvaluatorSpec;
    fn validate(&self) -> std::result::Result<(), ConfigError>;
    fn cost_seconds(&self, inputs: &CostInputs) -> f64;
    fn run(&self, ctx: &mut EvalContext) -> Result<ResultRecord>;
    /// The options as the `[evaluator]` table, without `kind`.
    fn to_table(&self) -> toml::Table;
    fn clone_box(&self) -> Box<dyn DynEvaluator>;
    fn as_any(&self) -> &dyn Any;
}

impl<T: EvaluatorOptions> DynEvaluator for T {
    fn name(&self) -> &'static str {
        T::NAME
    }
    fn spec(&self) -> EvaluatorSpec {
        EvaluatorOptions::spec(self)
    }
    fn validate(&self) -> std::result::Result<(), ConfigError> {
        EvaluatorOptions::validate(self)
    }
    fn cost_seconds(&self, inputs: &CostInputs) -> f64 {
        EvaluatorOptions::cost_seconds(self, inputs)
    }
    fn run(&self, ctx: &mut EvalContext) -> Result<ResultRecord> {
        EvaluatorOptions::run(self, ctx)
    }
    fn to_table(&self) -> toml::Table {
        toml::Table::try_from(self).expect("evaluator options serialise to a TOML table")
    }
    fn clone_box(&self) -> Box<dyn DynEvaluator> {
        Box::new(self.clone())
    }
    fn as_any(&self) -> &dyn Any {
        self
    }
}

/// A registered evaluator: its spec, and how to build, parse and flag its options.
pub struct EvaluatorEntry {
    pub spec: EvaluatorSpec,
    default: fn() -> Box<dyn DynEvaluator>,
    parse: fn(&str) -> std::result::Result<Box<dyn DynEvaluator>, toml::de::Error>,
    augment_args: fn(clap::Command) -> clap::Command,
    given: fn(&ArgMatches) -> Option<toml::Table>,
}

impl EvaluatorEntry {
    /// The entry of the options type `T`.
    pub fn of<T: EvaluatorOptions>() -> Self {
        EvaluatorEntry {
            spec: T::default().spec(),
            default: || Box::new(T::default()),
            parse: |text| toml::from_str::<T>(text).map(|o| Box::new(o) as Box<dyn DynEvaluator>),
            augment_args: <T as Args>::augment_args,
            given: |m| <T as FromArgMatches>::from_arg_matches(m).ok().map(|v| relnet_core::config::given(&v, m)),
        }
    }

    pub fn name(&self) -> &'static str {
        self.spec.name
    }

    /// The evaluator with its default options.
    pub fn default_config(&self) -> EvaluatorConfig {
        EvaluatorConfig((self.default)())
    }

    /// The subcommand `relnet eval <name>`: the common evaluation flags and the evaluator's own.
    pub fn subcommand(&self) -> clap::Command {
        let cmd = EvalConfig::augment_args(clap::Command::new(self.spec.name).about(self.spec.about));
        (self.augment_args)(cmd.next_help_heading(format!("Options of {}", self.spec.name)))
    }

    /// The evaluator's options given explicitly in its subcommand's `matches`, `kind` included.
    pub fn given(&self, matches: &ArgMatches) -> toml::Table {
        let mut t = (self.given)(matches).unwrap_or_default();
        t.insert("kind".into(), self.spec.name.into());
        t
    }
}

impl Named for EvaluatorEntry {
    fn name(&self) -> &str {
        self.spec.name
    }
}

static REGISTRY: Registry<EvaluatorEntry> = Registry::new("evaluator", || {
    vec![
        EvaluatorEntry::of::<linear::LinearOptions>(),
        EvaluatorEntry::of::<knn::KnnOptions>(),
        EvaluatorEntry::of::<finetune::FinetuneOptions>(),
        EvaluatorEntry::of::<retrieval::RetrievalOptions>(),
        EvaluatorEntry::of::<embed::EmbedOptions>(),
    ]
});

/// Makes the evaluator whose options are `T` known to relnet: `relnet eval T::NAME` with its
/// flags, `[evaluator] kind = T::NAME` in configs, grid protocols and the report.
pub fn register<T: EvaluatorOptions>() -> std::result::Result<(), RegistryError> {
    REGISTRY.add(EvaluatorEntry::of::<T>())
}

/// Every registered evaluator, in registration order (relnet's own first).
pub fn entries() -> Vec<&'static EvaluatorEntry> {
    REGISTRY.all()
}

/// The registered evaluator `name`.
pub fn entry(name: &str) -> Option<&'static EvaluatorEntry> {
    REGISTRY.get(name)
}

/// Every registered evaluator's name.
pub fn names() -> Vec<String> {
    REGISTRY.names()
}

/// The evaluator of an evaluation with its options: the `[evaluator]` table, tagged by `kind`.
pub struct EvaluatorConfig(Box<dyn DynEvaluator>);

impl EvaluatorConfig {
    /// A config holding `options`.
    pub fn new<T: EvaluatorOptions>(options: T) -> Self {
        EvaluatorConfig(Box::new(options))
    }

    pub fn get(&self) -> &dyn DynEvaluator {
        &*self.0
    }

    /// The options, when they are of type `T`.
    pub fn downcast_ref<T: EvaluatorOptions>(&self) -> Option<&T> {
        self.0.as_any().downcast_ref::<T>()
    }

    /// The `[evaluator]` table, `kind` included.
    pub fn to_table(&self) -> toml::Table {
        let mut t = toml::Table::new();
        t.insert("kind".into(), self.0.name().into());
        t.extend(self.0.to_table());
        t
    }

    /// Parses an `[evaluator]` table (with its `kind`); errors name the key.
    pub fn from_table(mut table: toml::Table) -> std::result::Result<Self, ConfigError> {
        let kind = match table.remove("kind") {
            Some(toml::Value::String(k)) => k,
            Some(_) => return Err(ConfigError::key("kind", "must be an evaluator name (a string)")),
            None => {
                return Err(ConfigError::key(
                    "kind",
                    format!("missing: the evaluator's name, one of {}", names().join(", ")),
                ));
            }
        };
        let e = entry(&kind).ok_or_else(|| {
            ConfigError::key("kind", format!("unknown evaluator `{kind}` (known: {})", names().join(", ")))
        })?;
        let text = toml::to_string(&table).unwrap_or_default();
        (e.parse)(&text).map(EvaluatorConfig).map_err(|err| relnet_core::config::error_in(&text, &err))
    }
}

impl Clone for EvaluatorConfig {
    fn clone(&self) -> Self {
        EvaluatorConfig(self.0.clone_box())
    }
}

impl Debug for EvaluatorConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.0.fmt(f)
    }
}

impl PartialEq for EvaluatorConfig {
    fn eq(&self, other: &Self) -> bool {
        self.0.name() == other.0.name() && self.0.to_table() == other.0.to_table()
    }
}

impl Default for EvaluatorConfig {
    fn default() -> Self {
        EvaluatorConfig::new(linear::LinearOptions::default())
    }
}

impl Serialize for EvaluatorConfig {
    fn serialize<S: serde::Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        self.to_table().serialize(s)
    }
}

impl<'de> Deserialize<'de> for EvaluatorConfig {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        let table = toml::Table::deserialize(d)?;
        EvaluatorConfig::from_table(table)
            .map_err(|e| serde::de::Error::custom(relnet_core::config::nested_message(&e)))
    }
}

/// An evaluation: the backbone, the dataset and the evaluator with its options (the top-level
/// keys of an evaluation config plus its `[evaluator]` table). Flags derive from this struct.
#[derive(clap::Args, Serialize, Deserialize, Debug, Clone, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct EvalConfig {
    /// Backbone artifact (backbone.bpk of a pretraining run).
    #[arg(long, value_name = "FILE", default_value = "runs/pretrain/backbone.bpk")]
    pub backbone: PathBuf,
    /// Dataset name (see `relnet data list`).
    #[arg(long, default_value = "synthetic")]
    pub dataset: String,
    /// Folder holding the datasets (default: $RELNET_DATA, else ./data).
    #[arg(long, value_name = "DIR")]
    pub data_root: Option<PathBuf>,
    /// Seed of the evaluator's own randomness (probe initialisation and order, splits).
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// Compute device: cpu, cuda or cuda:N.
    #[arg(long, default_value_t = DeviceSpec::Cpu, env = "RELNET_DEVICE")]
    pub device: DeviceSpec,
    /// Folder whose results/ receives the record (default: the backbone's folder).
    #[arg(long, value_name = "DIR")]
    pub results: Option<PathBuf>,
    /// The evaluator and its options.
    #[arg(skip)]
    pub evaluator: EvaluatorConfig,
}

impl Default for EvalConfig {
    fn default() -> Self {
        relnet_core::config::clap_defaults()
    }
}

impl RunConfig for EvalConfig {
    fn validate(&self) -> std::result::Result<(), ConfigError> {
        lookup(&self.dataset).map_err(|e| ConfigError::key("dataset", e.to_string()))?;
        self.evaluator.get().validate()
    }
}

/// What an evaluator works with: the dataset, the artifact, the device, and frozen features
/// computed once per split (and cached on disk).
pub struct EvalContext<'a> {
    pub config: &'a EvalConfig,
    pub artifact: ArtifactRef,
    pub kind: BackboneKind,
    pub info: DatasetInfo,
    pub root: DataRoot,
    pub seed: u64,
    /// The evaluation device (no autodiff).
    pub device: Device,
    pub stop: Arc<AtomicBool>,
    pub report: &'a mut dyn Reporter,
    backbone: Option<Backbone>,
    features: HashMap<Split, Features>,
    /// The dataset's normalisation, once a split has been loaded.
    norm: Option<crate::features::Norm>,
    class_names: Vec<String>,
}

impl<'a> EvalContext<'a> {
    /// Hashes the artifact of `cfg`, reads its kind, resolves the dataset and the device.
    pub fn new(cfg: &'a EvalConfig, stop: Arc<AtomicBool>, report: &'a mut dyn Reporter) -> Result<Self> {
        let artifact = ArtifactRef::of(&cfg.backbone)?;
        let kind: BackboneKind = artifact.kind.parse().map_err(|e: String| Error::artifact(&cfg.backbone, e))?;
        let info = lookup(&cfg.dataset)?;
        let root = DataRoot::resolve(cfg.data_root.as_deref());
        let device = cfg.device.device()?;
        Ok(EvalContext {
            config: cfg,
            artifact,
            kind,
            info,
            root,
            seed: cfg.seed,
            device,
            stop,
            report,
            backbone: None,
            features: HashMap::new(),
            norm: None,
            class_names: Vec::new(),
        })
    }

    /// The frozen, eval-mode backbone.
    pub fn backbone(&mut self) -> Result<&Backbone> {
        if self.backbone.is_none() {
            let (b, _) = relnet_models::io::load_backbone(&self.artifact.path, &self.device)?;
            self.backbone = Some(b);
        }
        Ok(self.backbone.as_ref().expect("loaded"))
    }

    /// The frozen features of `split` (labelled), from memory, the disk cache, or computed.
    pub fn features(&mut self, split: Split) -> Result<Features> {
        if let Some(f) = self.features.get(&split) {
            return Ok(f.clone());
        }
        let s = load_split(&self.info, &self.root, split, self.norm)?;
        self.norm = Some((s.mean, s.std));
        self.class_names = s.class_names.clone();
        check_image_size(self.kind, &self.config.dataset, s.images.height, s.images.width)?;
        self.backbone()?;
        let backbone = self.backbone.as_ref().expect("loaded");
        let report = &mut *self.report;
        let f = frozen_features(&self.artifact, backbone, &self.config.dataset, &s, &self.device, &mut |l: &str| {
            report.line(l)
        })?;
        self.features.insert(split, f.clone());
        Ok(f)
    }

    /// A record of this evaluation with the evaluator's resolved options.
    pub fn record(
        &self,
        evaluator: &str,
        options: &impl Serialize,
        train_split: Option<&str>,
        eval_split: &str,
    ) -> ResultRecord {
        let options = serde_json::to_value(options).unwrap_or(serde_json::Value::Null);
        let mut r = ResultRecord::new(
            evaluator,
            options,
            self.artifact.clone(),
            &self.config.dataset,
            self.seed,
            train_split,
            eval_split,
        );
        r.source_dataset = source_dataset(&self.artifact.path);
        r.source_precision = source_key(&self.artifact.path, "precision");
        r
    }

    /// The class names of the dataset (after a split has been loaded; else none).
    pub fn class_names(&self) -> &[String] {
        &self.class_names
    }
}

/// The folder of a backbone artifact (`.` for a bare file name): where its run's `config.toml`,
/// its feature cache, records, embeddings and fine-tunings live.
pub fn artifact_dir(artifact: &Path) -> &Path {
    artifact.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new("."))
}

/// The dataset a backbone artifact was trained on: the `dataset` of the `config.toml` of its run
/// (pretraining or fine-tuning), when there is one beside it.
pub fn source_dataset(artifact: &Path) -> Option<String> {
    source_key(artifact, "dataset")
}

/// A string key of the `config.toml` beside a backbone artifact, when there is one.
fn source_key(artifact: &Path, key: &str) -> Option<String> {
    let text = std::fs::read_to_string(artifact_dir(artifact).join("config.toml")).ok()?;
    let table: toml::Table = text.parse().ok()?;
    table.get(key)?.as_str().map(str::to_string)
}

/// Runs the evaluation of `cfg` and writes its record; returns the record and its path.
pub fn evaluate(cfg: &EvalConfig, stop: Arc<AtomicBool>, report: &mut dyn Reporter) -> Result<(ResultRecord, PathBuf)> {
    let started = Instant::now();
    let mut ctx = EvalContext::new(cfg, stop, report)?;
    let mut record = cfg.evaluator.get().run(&mut ctx)?;
    record.wall_seconds = started.elapsed().as_secs_f64();
    let dir = match &cfg.results {
        Some(d) => d.clone(),
        None => artifact_dir(&cfg.backbone).to_path_buf(),
    };
    let path = record.save(&dir)?;
    ctx.report.line(&format!("result record written to {}", path.display()));
    Ok((record, path))
}

/// Runs (or resumes) a pretraining run with the monitor its config names (`monitor = "knn:2"`:
/// kNN accuracy of the eval-mode backbone every 2 epochs, into `metrics.jsonl`). The command line
/// and the grid both start runs here, so a grid profile's `monitor` key is honoured.
pub fn pretrain(
    cfg: &relnet_core::pretrain::PretrainConfig,
    resume: bool,
    stop: Arc<AtomicBool>,
    report: &mut dyn Reporter,
) -> Result<relnet_core::pretrain::Outcome> {
    use relnet_core::pretrain::{Monitor, MonitorSpec};
    let mut monitor = match cfg.monitor {
        Some(MonitorSpec::Knn { every }) => {
            Some(knn::KnnMonitor::new(&cfg.dataset, cfg.data_root.as_deref(), every, cfg.device.device()?)?)
        }
        None => None,
    };
    relnet_core::pretrain::pretrain(cfg, resume, stop, report, monitor.as_mut().map(|k| k as &mut dyn Monitor))
}
