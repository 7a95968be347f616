//! Supervised training, the upper bound (reference section 4, `standard`): backbone and
//! `Linear(F, C)` trained together with cross-entropy on the true labels, SGD lr 0.1 momentum 0.9,
//! lr x0.1 at 50% and 75% of the epochs, random crop + flip. At the end it reports its own
//! test accuracy (`supervised_<dataset>.json`); the backbone is probed like any other.

use burn::nn::Linear;
use std::path::PathBuf;

use burn::prelude::*;
use burn::tensor::TensorData;
use relnet_augment::Preset;
use relnet_models::{Backbone, BackboneKind, linear_head};

use crate::data::ImageSet;
use crate::features::extract_with;
use crate::fsutil::write_atomic;
use super::{Batch, Context, Method, MethodSpec, OptimKind, StepOutput, Views, argmax_accuracy, classification_step};

pub const SPEC: MethodSpec = MethodSpec {
    name: "supervised",
    summary: "cross-entropy on the true labels, SGD 0.1 with step decay (the upper bound)",
    preset: Preset::CropFlip,
    views: Views::Fixed(1),
    drop_last: false,
    needs_labels: true,
    optim: OptimKind::SgdStep,
    default_lr: 0.1,
    default_batch: 128,
    metric: "train accuracy",
};

#[derive(Module, Debug)]
pub struct SupervisedModel {
    pub backbone: Backbone,
    pub classifier: Linear,
}

impl SupervisedModel {
    pub fn logits(&self, x: Tensor<4>) -> Tensor<2> {
        self.classifier.forward(self.backbone.forward(x))
    }
}

pub struct Supervised {
    pub backbone: BackboneKind,
    /// Labels of the training split, by dataset index.
    pub labels: Vec<i64>,
    /// The test split and where to write its accuracy (`None`: no final evaluation).
    pub test: Option<(ImageSet, PathBuf)>,
}

/// The supervised model's own test accuracy.
#[derive(serde::Serialize, serde::Deserialize, Debug)]
pub struct SupervisedResult {
    pub test_accuracy: f64,
    pub test_images: usize,
}

impl Method for Supervised {
    type Model = SupervisedModel;

    fn model(&self, ctx: &Context, device: &Device) -> SupervisedModel {
        SupervisedModel { backbone: self.backbone.init(device), classifier: linear_head(self.backbone.features(), ctx.classes, device) }
    }

    fn backbone(model: &SupervisedModel) -> &Backbone {
        &model.backbone
    }

    fn step(&self, model: &SupervisedModel, batch: &Batch) -> StepOutput {
        let y: Vec<i64> = batch.indices.iter().map(|&i| self.labels[i]).collect();
        classification_step(model.logits(batch.x.clone()), &y, None)
    }

    fn finish(&self, model: &SupervisedModel, ctx: &mut Context) -> Result<(), String> {
        let Some((test, path)) = &self.test else { return Ok(()) };
        let labels: Vec<i64> = test.labels.as_ref().ok_or("the test split has no labels")?.iter().map(|&l| l as i64).collect();
        let device = ctx.device.clone().without_autodiff();
        let (logits, classes) = extract_with(test, ctx.mean, ctx.std, 256, &device, |x| model.logits(x))?;
        let n = labels.len();
        let logits = Tensor::<2>::from_data(TensorData::new(logits, [n, classes]), &device);
        let acc = 100.0 * argmax_accuracy(logits, &labels) as f64;
        (ctx.report)(&format!("supervised test accuracy {acc:.2}% on {n} images (test_accuracy={acc:.2})"));
        let json = serde_json::to_vec_pretty(&SupervisedResult { test_accuracy: acc, test_images: n }).map_err(|e| e.to_string())?;
        write_atomic(path, &json).map_err(|e| format!("{}: {e}", path.display()))
    }
}
