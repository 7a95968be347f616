//! Fine-tuning (reference §5, `finetune`): the backbone (train mode) and a `Linear(F, C)`
//! trained together from the artifact on the labelled train split, through the same training
//! loop as pretraining (data order, views, checkpoints, resume, NaN stop), then measured on the
//! test split in eval mode. Writes the fine-tuned backbone and its record.
//!
//! The reference's settings: Adam, backbone lr 1e-3, classifier lr 1e-4, weight decay 1e-5 on
//! both, lr x0.1 at 50% and 75% of the epochs, where the reference computes the milestones from
//! its default of 200 epochs, so that in a 100-epoch run its schedule never fires. relnet follows
//! the reference by default (`schedule = "reference"`: milestones at 100 and 150 whatever the
//! run's length) and offers `schedule = "scaled"` (milestones at 50% and 75% of this run's epochs).

use relnet_augment::Preset;
use relnet_core::config::{ConfigError, check_range};
use relnet_core::methods::supervised::{Classifier, labels_of};
use relnet_core::methods::{MethodSpec, OptimKind, Schedule, Views};
use relnet_core::pretrain::{Outcome, check_lr};
use relnet_core::record::{ResultRecord, sanitize};
use relnet_core::run::{RunBuilder, load_task_data, prepare_run_dir};
use relnet_core::trainer::train;
use relnet_core::{Error, Result};
use serde::{Deserialize, Serialize};

use crate::labels::{LabelBudget, label_subset};
use crate::{EvalContext, EvaluatorOptions, artifact_dir};

/// Which milestones the learning-rate drops use.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum FinetuneSchedule {
    /// The reference's: x0.1 at epochs 100 and 150 (50% and 75% of its default 200).
    Reference,
    /// x0.1 at 50% and 75% of this run's epochs.
    Scaled,
}

/// The augmentation of the fine-tuning images.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum FinetuneAugment {
    /// Normalisation only (the reference's fine-tuning).
    Plain,
    /// Flip, affine (p 0.5), normalisation, cutout (the paper's STL-10 comparison).
    Finetune,
}

/// Options of fine-tuning (`[evaluator] kind = "finetune"`).
#[derive(clap::Args, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct FinetuneOptions {
    /// Epochs.
    #[arg(long, default_value_t = 100)]
    pub epochs: usize,
    /// Mini-batch size.
    #[arg(long, default_value_t = 128)]
    pub batch_size: usize,
    /// Adam learning rate of the backbone.
    #[arg(long, default_value_t = 1e-3)]
    pub lr: f64,
    /// Adam learning rate of the classifier.
    #[arg(long, default_value_t = 1e-4)]
    pub classifier_lr: f64,
    /// L2 weight decay of every parameter.
    #[arg(long, default_value_t = 1e-5)]
    pub weight_decay: f64,
    /// Milestones of the x0.1 drops.
    #[arg(long, value_enum, default_value_t = FinetuneSchedule::Reference)]
    pub schedule: FinetuneSchedule,
    /// Augmentation preset.
    #[arg(long, value_enum, default_value_t = FinetuneAugment::Plain)]
    pub augmentation: FinetuneAugment,
    /// Cutout area fraction of the `finetune` preset (default: the reference's per dataset:
    /// CIFAR-100 0.0625, STL-10 0.111, others 0.25).
    #[arg(long, value_name = "FRACTION")]
    pub cutout: Option<f64>,
    /// Use only N images of the train split, drawn at random (quick runs).
    #[arg(long, value_name = "N", conflicts_with = "labels")]
    pub limit_images: Option<usize>,
    /// Fine-tune on fewer labels: a percentage of every class (`10%`) or a count per class
    /// (`4-per-class`), drawn with the seed (the paper's Figure 2c).
    #[arg(long, value_name = "BUDGET")]
    pub labels: Option<LabelBudget>,
    /// Continue an interrupted fine-tuning of the same evaluation from its checkpoint.
    #[arg(long)]
    pub resume: bool,
    /// Precision of convolutions and linear layers: fp32, or bf16 mixed precision (bf16 inputs,
    /// weights and outputs, fp32 accumulation; weights, optimiser, batch norm and loss in fp32).
    #[arg(long, value_enum, default_value_t = relnet_models::Precision::Fp32)]
    #[serde(skip_serializing_if = "relnet_models::Precision::is_fp32")]
    pub precision: relnet_models::Precision,
}

impl Default for FinetuneOptions {
    fn default() -> Self {
        relnet_core::config::clap_defaults()
    }
}

impl EvaluatorOptions for FinetuneOptions {
    const NAME: &'static str = "finetune";

    fn spec(&self) -> crate::EvaluatorSpec {
        crate::EvaluatorSpec {
            name: "finetune",
            about: "Fine-tune backbone and a linear classifier from the artifact; writes the fine-tuned backbone",
            order: 1,
            report: &[("test_accuracy", "accuracy")],
            headline: &["*accuracy"],
            frozen_features: false,
        }
    }

    fn cost_seconds(&self, c: &crate::CostInputs) -> f64 {
        let frac = match self.labels {
            Some(crate::labels::LabelBudget::Percent(p)) => p / 100.0,
            _ => 1.0,
        };
        let n = self.limit_images.map_or(c.train_images as f64 * frac, |l| l as f64);
        // A training view costs about 0.6 of a pretraining view (one view, no relation head);
        // then one forward pass over the test split.
        self.epochs as f64 * n * 0.6 / c.views_per_s + c.test_images as f64 / (c.views_per_s * c.forward_speedup)
    }

    fn validate(&self) -> std::result::Result<(), ConfigError> {
        check_range("epochs", self.epochs, 1, 100_000)?;
        check_range("batch_size", self.batch_size, 2, 65_536)?;
        check_lr("lr", self.lr)?;
        check_lr("classifier_lr", self.classifier_lr)?;
        if !(0.0..=1.0).contains(&self.weight_decay) {
            return Err(ConfigError::key(
                "weight_decay",
                format!("value {} out of range (allowed [0, 1])", self.weight_decay),
            ));
        }
        if let Some(c) = self.cutout
            && !(c > 0.0 && c < 1.0)
        {
            return Err(ConfigError::key("cutout", format!("value {c} out of range (allowed (0, 1))")));
        }
        if let Some(n) = self.limit_images {
            check_range("limit_images", n, 2, usize::MAX)?;
            if self.labels.is_some() {
                return Err(ConfigError::key("limit_images", "cannot be combined with `labels`; use one of them"));
            }
        }
        Ok(())
    }

    fn run(&self, ctx: &mut EvalContext) -> Result<ResultRecord> {
        let cfg = ctx.config;
        let mut resolved = self.clone();
        resolved.resume = false;
        let probe =
            ctx.record(Self::NAME, &resolved, Some(ctx.info.train_split.as_str()), ctx.info.test_split.as_str());
        // The run directory belongs to this evaluation: another option or artifact gets another.
        let out =
            artifact_dir(&cfg.backbone).join("finetune").join(format!("{}-{}", sanitize(&cfg.dataset), probe.id()));
        if !self.resume && out.exists() {
            // A fresh evaluation replaces an earlier identical one (as its record does).
            for stale in ["checkpoint", "metrics.jsonl", "backbone.bpk"] {
                let p = out.join(stale);
                let _ = if p.is_dir() { std::fs::remove_dir_all(&p) } else { std::fs::remove_file(&p) };
            }
        }
        // The run's config.toml: the evaluation as resolved (resuming is not part of it).
        let mut written = cfg.clone();
        written.evaluator = crate::EvaluatorConfig::new(resolved.clone());
        let (saved, _lock) = prepare_run_dir(&out, &written, self.resume)?;
        let mut data =
            load_task_data(ctx.info.clone(), ctx.root.clone(), ctx.info.train_split, self.limit_images, ctx.seed)?;
        let available = data.images.len();
        if let Some(budget) = self.labels {
            let labels = labels_of(&data.images, &cfg.dataset)?;
            data.images.keep(&label_subset(&labels, budget, ctx.seed));
            ctx.report.line(&format!(
                "fine-tuning on {} labelled images of {available} (label budget {budget})",
                data.images.len()
            ));
        }
        let labelled = data.images.len();
        let test = ctx.info.load(ctx.info.test_split, &ctx.root)?.images;
        let (preset, cutout) = match self.augmentation {
            FinetuneAugment::Plain => (Preset::Plain, None),
            FinetuneAugment::Finetune => (Preset::Finetune, Some(self.cutout.unwrap_or(ctx.info.cutout))),
        };
        let spec = MethodSpec {
            name: "finetune",
            display: "Fine-tuning",
            order: u32::MAX,
            cost: 0.6,
            highlight: false,
            summary: "backbone + linear classifier from a saved backbone, cross-entropy on labels",
            preset,
            views: Views::Fixed(1),
            drop_last: false,
            needs_labels: true,
            needs_data: true,
            optim: OptimKind::Adam { weight_decay: Some(self.weight_decay) },
            schedule: Schedule::Step {
                nominal_epochs: match self.schedule {
                    FinetuneSchedule::Reference => Some(200),
                    FinetuneSchedule::Scaled => None,
                },
            },
            default_lr: self.lr,
            default_batch: self.batch_size,
            metric: "train accuracy",
        };
        let mut method = Classifier {
            backbone: ctx.kind,
            labels: labels_of(&data.images, &cfg.dataset)?,
            classifier_lr: Some((self.classifier_lr, self.lr)),
            test: Some(test),
            test_accuracy: None,
        };
        let device = ctx.device.clone().autodiff();
        let run = RunBuilder::new(spec, ctx.kind, &out, &cfg.dataset, data, device)
            .init(Some(cfg.backbone.clone()))
            .batch_size(self.batch_size)
            .epochs(self.epochs)
            .lr(self.lr)
            .seed(ctx.seed)
            .resume(saved)
            .cutout(cutout)
            .precision(self.precision)
            .build()?;
        let report = &mut *ctx.report;
        let outcome = train(&mut method, run, ctx.stop.clone(), report, None)?;
        let backbone = match outcome {
            Outcome::Finished { backbone } => backbone,
            Outcome::Interrupted { .. } => {
                return Err(Error::Invalid(format!("fine-tuning interrupted; its checkpoint is in {}", out.display())));
            }
        };
        let (acc, n) = method.test_accuracy.ok_or_else(|| {
            Error::Invalid(format!(
                "{}: the fine-tuning had already finished; run it again without resuming to measure it",
                out.display()
            ))
        })?;
        let mut record = probe;
        record.metrics.insert("test_accuracy".into(), acc);
        record.metrics.insert("test_images".into(), n as f64);
        record.metrics.insert("train_images".into(), labelled as f64);
        record.metrics.insert("label_fraction".into(), labelled as f64 / available.max(1) as f64);
        if let Some(last) =
            std::fs::read_to_string(out.join("metrics.jsonl")).ok().and_then(|m| m.lines().last().map(str::to_string))
            && let Some(a) = serde_json::from_str::<serde_json::Value>(&last).ok().and_then(|v| v["accuracy"].as_f64())
        {
            record.metrics.insert("last_epoch_train_accuracy".into(), 100.0 * a);
        }
        record.outputs.insert("finetuned_backbone".into(), backbone);
        record.outputs.insert("run_dir".into(), out);
        Ok(record)
    }
}
