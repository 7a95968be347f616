//! Supervised training, the upper bound (reference section 4, `standard`): backbone and
//! `Linear(F, C)` trained together with cross-entropy on the true labels, SGD lr 0.1 momentum 0.9,
//! lr x0.1 at 50% and 75% of the epochs, random crop + flip. At the end it measures its own test
//! accuracy and writes it as a result record (`<out>/results/`); the backbone is probed like any
//! other.
//!
//! [`Classifier`] is also the method of fine-tuning (`relnet eval finetune` in relnet-eval): the
//! same model and loss started from a saved backbone, with its own optimiser settings and a
//! classifier learning rate of its own.

use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::time::Instant;

use burn::module::ParamGroup;
use burn::nn::Linear;
use burn::optim::lr_scheduler::module_lr_scheduler::{ModuleLearningRate, ModuleLrScheduler};
use burn::prelude::*;
use burn::tensor::TensorData;
use relnet_augment::Preset;
use relnet_models::{Backbone, BackboneKind, linear_head};
use serde::{Deserialize, Serialize};

use super::{
    Batch, Context, Method, MethodOptions, MethodSpec, OptimKind, Schedule, StepOutput, Views, argmax_accuracy,
    classification_step,
};
use crate::data::ImageSet;
use crate::error::{Error, Result};
use crate::features::extract_with;
use crate::record::{ArtifactRef, ResultRecord};
use crate::trainer::{Monitor, Outcome, Reporter, Run, train};

pub const SPEC: MethodSpec = MethodSpec {
    name: "supervised",
    display: "Supervised (upper bound)",
    order: 0,
    cost: 0.6,
    highlight: false,
    summary: "cross-entropy on the true labels, SGD 0.1 with step decay (the upper bound)",
    preset: Preset::CropFlip,
    views: Views::Fixed(1),
    drop_last: false,
    needs_labels: true,
    needs_data: true,
    optim: OptimKind::Sgd,
    schedule: Schedule::Step { nominal_epochs: None },
    default_lr: 0.1,
    default_batch: 128,
    metric: "train accuracy",
};

/// Options of the supervised baseline (`[method] kind = "supervised"`): none beyond the run's.
#[derive(clap::Args, Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[serde(default, deny_unknown_fields)]
pub struct SupervisedOptions {}

impl MethodOptions for SupervisedOptions {
    const NAME: &'static str = "supervised";

    fn spec(&self) -> MethodSpec {
        SPEC
    }

    fn views(&self) -> usize {
        1
    }

    fn launch(
        &self,
        run: Run,
        stop: Arc<AtomicBool>,
        report: &mut dyn Reporter,
        monitor: Option<&mut dyn Monitor>,
    ) -> Result<Outcome> {
        let labels = labels_of(&run.images, &run.dataset)?;
        let test = run.dataset_info.load(run.dataset_info.test_split, &run.root)?;
        let mut method = Classifier {
            backbone: run.backbone,
            labels,
            classifier_lr: None,
            test: Some(test.images),
            test_accuracy: None,
        };
        let (dataset, out, seed, started) = (run.dataset.clone(), run.out.to_path_buf(), run.seed, Instant::now());
        let split = run.dataset_info.train_split.as_str().to_string();
        let outcome = train(&mut method, run, stop, report, monitor)?;
        if let (Outcome::Finished { backbone }, Some((acc, n))) = (&outcome, method.test_accuracy) {
            let mut record = ResultRecord::new(
                "supervised",
                serde_json::json!({}),
                ArtifactRef::of(backbone)?,
                &dataset,
                seed,
                Some(&split),
                "test",
            );
            record.metrics.insert("test_accuracy".into(), acc);
            record.metrics.insert("test_images".into(), n as f64);
            record.wall_seconds = started.elapsed().as_secs_f64();
            let path = record.save(&out)?;
            report.line(&format!("supervised test accuracy {acc:.2}% on {n} images; record {}", path.display()));
        }
        Ok(outcome)
    }

    fn conformance(&self, case: &mut crate::conformance::MethodCase) -> crate::Result<Vec<crate::conformance::Check>> {
        case.step(&mut Classifier {
            backbone: case.backbone,
            labels: case.labels.clone(),
            classifier_lr: None,
            test: None,
            test_accuracy: None,
        })
    }
}

/// The labels of a labelled split as `i64`, or an error naming the dataset.
pub fn labels_of(images: &ImageSet, dataset: &str) -> Result<Vec<i64>> {
    Ok(images
        .labels
        .as_ref()
        .ok_or_else(|| Error::Invalid(format!("dataset `{dataset}`: the split has no labels")))?
        .iter()
        .map(|&l| l as i64)
        .collect())
}

#[derive(Module, Debug)]
pub struct ClassifierModel {
    pub backbone: Backbone,
    pub classifier: Linear,
}

impl ClassifierModel {
    pub fn logits(&self, x: Tensor<4>) -> Tensor<2> {
        relnet_models::precision::linear(&self.classifier, self.backbone.forward(x))
    }
}

/// Backbone + `Linear(F, C)` trained with cross-entropy on labels: the supervised baseline and
/// fine-tuning.
pub struct Classifier {
    pub backbone: BackboneKind,
    /// Labels of the training split, by dataset index.
    pub labels: Vec<i64>,
    /// The classifier's own base learning rate and the run's base rate it stands beside
    /// (fine-tuning); `None`: the run's rate for every parameter.
    pub classifier_lr: Option<(f64, f64)>,
    /// The test split measured after the last epoch (`None`: no final evaluation).
    pub test: Option<ImageSet>,
    /// Set by the final evaluation: test accuracy in percent and the number of test images.
    pub test_accuracy: Option<(f64, usize)>,
}

impl Method for Classifier {
    type Model = ClassifierModel;

    fn model(&self, ctx: &Context, device: &Device) -> ClassifierModel {
        ClassifierModel {
            backbone: self.backbone.init(device),
            classifier: linear_head(self.backbone.features(), ctx.classes, device),
        }
    }

    fn backbone(model: &ClassifierModel) -> &Backbone {
        &model.backbone
    }

    fn with_backbone(model: ClassifierModel, backbone: Backbone) -> ClassifierModel {
        ClassifierModel { backbone, ..model }
    }

    fn learning_rates(&self, model: &ClassifierModel, lr: f64) -> ModuleLearningRate {
        match self.classifier_lr {
            None => lr.into(),
            // `lr` is the backbone's rate at this epoch; the classifier's follows the same schedule.
            // `lr` is the backbone's rate this epoch (the base rate after the schedule's drops); the
            // classifier's rate follows the same schedule from its own base.
            Some((classifier, base)) => ModuleLrScheduler::new(lr)
                .with_group(ParamGroup::ids_from_module(model.classifier.clone()), classifier * lr / base)
                .step(),
        }
    }

    fn step(&self, model: &ClassifierModel, batch: &Batch) -> StepOutput {
        let y: Vec<i64> = batch.indices.iter().map(|&i| self.labels[i]).collect();
        classification_step(model.logits(batch.x.clone()), &y, None)
    }

    fn finish(&mut self, model: &ClassifierModel, ctx: &mut Context) -> Result<()> {
        let Some(test) = &self.test else { return Ok(()) };
        let labels = labels_of(test, "test")?;
        let device = ctx.device.clone().without_autodiff();
        let (logits, classes) = extract_with(test, ctx.mean, ctx.std, 256, &device, |x| model.logits(x))?;
        let n = labels.len();
        let logits = Tensor::<2>::from_data(TensorData::new(logits, [n, classes]), &device);
        let acc = 100.0 * argmax_accuracy(logits, &labels) as f64;
        (ctx.report)(&format!("test accuracy {acc:.2}% on {n} images (test_accuracy={acc:.2})"));
        self.test_accuracy = Some((acc, n));
        Ok(())
    }
}
