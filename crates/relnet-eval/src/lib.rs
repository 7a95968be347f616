//! relnet-eval: the evaluators, the frozen-feature cache they share, and the result records they
//! write.
//!
//! An evaluator is one file: its options struct (the `[evaluator]` table of an evaluation config
//! and, through clap's derive, the flags of `relnet eval <name>`) implementing
//! [`EvaluatorOptions`], plus one line in the `registry!` below. [`evaluate`] does the rest:
//! it hashes and loads the backbone artifact, resolves the dataset, hands the evaluator an
//! [`EvalContext`] (frozen features computed once and cached), and writes the record it returns
//! under `<backbone dir>/results/`.

pub mod embed;
pub mod features;
pub mod grid;
pub mod finetune;
pub mod knn;
pub mod labels;
pub mod linear;
pub mod plot;
pub mod results;
pub mod retrieval;

use std::collections::HashMap;
use std::fmt::Debug;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::time::Instant;

use burn::prelude::*;
use clap::{ArgMatches, Args, FromArgMatches};
use relnet_core::config::{ConfigError, RunConfig};
use relnet_core::data::registry::{DatasetInfo, Split, lookup};
use relnet_core::data::DataRoot;
use relnet_core::device::DeviceSpec;
use relnet_core::pretrain::{Reporter, check_image_size};
use relnet_core::record::{ArtifactRef, ResultRecord};
use relnet_core::{Error, Result};
use relnet_models::{Backbone, BackboneKind};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use crate::features::{Features, frozen_features, load_split};

/// An evaluator's options: the `[evaluator]` table of an evaluation config and its flags.
pub trait EvaluatorOptions: Args + FromArgMatches + Serialize + DeserializeOwned + Default + Clone + Debug + PartialEq + 'static {
    /// The name in configs (`kind = "..."`) and on the command line (`relnet eval <name>`).
    const NAME: &'static str;
    /// Checks every value's range; errors name the key.
    fn validate(&self) -> std::result::Result<(), ConfigError> {
        Ok(())
    }
    /// Runs the evaluation and returns its record (metrics filled in; the runtime adds the wall
    /// time and writes it).
    fn run(&self, ctx: &mut EvalContext) -> Result<ResultRecord>;
}

/// [`EvaluatorOptions`] behind a pointer.
pub trait DynEvaluator: Debug {
    fn name(&self) -> &'static str;
    fn validate(&self) -> std::result::Result<(), ConfigError>;
    fn run(&self, ctx: &mut EvalContext) -> Result<ResultRecord>;
}

impl<T: EvaluatorOptions> DynEvaluator for T {
    fn name(&self) -> &'static str {
        T::NAME
    }
    fn validate(&self) -> std::result::Result<(), ConfigError> {
        EvaluatorOptions::validate(self)
    }
    fn run(&self, ctx: &mut EvalContext) -> Result<ResultRecord> {
        EvaluatorOptions::run(self, ctx)
    }
}

/// The registry: one line per evaluator (`Variant => options type, "one-line help"`).
macro_rules! registry {
    ($($variant:ident => $opts:ty, $about:literal),* $(,)?) => {
        /// The evaluator of an evaluation with its options: the `[evaluator]` table, tagged by `kind`.
        #[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
        #[serde(tag = "kind", rename_all = "lowercase")]
        pub enum EvaluatorConfig {
            $($variant($opts)),*
        }

        impl EvaluatorConfig {
            pub const NAMES: &'static [&'static str] = &[$(<$opts as EvaluatorOptions>::NAME),*];

            pub fn get(&self) -> &dyn DynEvaluator {
                match self { $(EvaluatorConfig::$variant(o) => o),* }
            }

            /// One subcommand per evaluator, each with the common evaluation flags and its own.
            pub fn subcommands(mut cmd: clap::Command) -> clap::Command {
                $(cmd = cmd.subcommand(
                    <$opts as Args>::augment_args(
                        EvalConfig::augment_args(clap::Command::new(<$opts as EvaluatorOptions>::NAME).about($about))
                            .next_help_heading(concat!("Options of ", stringify!($variant)))
                    )
                );)*
                cmd
            }

            /// The evaluator's name and its options given explicitly in the subcommand's `matches`.
            pub fn given(name: &str, matches: &ArgMatches) -> Option<toml::Table> {
                $(if name == <$opts as EvaluatorOptions>::NAME {
                    let v = <$opts as FromArgMatches>::from_arg_matches(matches).ok()?;
                    let mut t = relnet_core::config::given(&v, matches);
                    t.insert("kind".into(), name.into());
                    return Some(t);
                })*
                None
            }
        }
    };
}

registry! {
    Linear => linear::LinearOptions, "Linear probe on frozen, cached features; prints test_accuracy=<percent> last",
    Knn => knn::KnnOptions, "Weighted kNN on L2-normalised frozen features (k = 20 and 200, T = 0.07)",
    Finetune => finetune::FinetuneOptions, "Fine-tune backbone and a linear classifier from the artifact; writes the fine-tuned backbone",
    Retrieval => retrieval::RetrievalOptions, "Retrieval of test images from a gallery: precision@k, recall@k, mAP; --show N draws the neighbours",
    Embed => embed::EmbedOptions, "Write the frozen features and labels of a split as safetensors (numpy, PyTorch, `relnet plot tsne`)",
}

impl Default for EvaluatorConfig {
    fn default() -> Self {
        EvaluatorConfig::Linear(Default::default())
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
        Ok(EvalContext { config: cfg, artifact, kind, info, root, seed: cfg.seed, device, stop, report, backbone: None, features: HashMap::new(), norm: None, class_names: Vec::new() })
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
        let f = frozen_features(&self.artifact, backbone, &self.config.dataset, &s, &self.device, &mut |l: &str| report.line(l))?;
        self.features.insert(split, f.clone());
        Ok(f)
    }

    /// A record of this evaluation with the evaluator's resolved options.
    pub fn record(&self, evaluator: &str, options: &impl Serialize, train_split: Option<&str>, eval_split: &str) -> ResultRecord {
        let options = serde_json::to_value(options).unwrap_or(serde_json::Value::Null);
        let mut r = ResultRecord::new(evaluator, options, self.artifact.clone(), &self.config.dataset, self.seed, train_split, eval_split);
        r.source_dataset = source_dataset(&self.artifact.path);
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
    let text = std::fs::read_to_string(artifact_dir(artifact).join("config.toml")).ok()?;
    let table: toml::Table = text.parse().ok()?;
    table.get("dataset")?.as_str().map(str::to_string)
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
