//! RotationNet (Gidaris et al. 2018; reference section 4, `rotationnet`): every (cropped,
//! flipped) image at 0, 90, 180 and 270 degrees, a `Linear(F, 4)` head predicting which,
//! cross-entropy, Adam 1e-3.

use burn::nn::Linear;
use burn::prelude::*;
use relnet_augment::Preset;
use relnet_models::{Backbone, BackboneKind, linear_head};
use serde::{Deserialize, Serialize};
use std::sync::Arc;
use std::sync::atomic::AtomicBool;

use crate::trainer::{Monitor, Outcome, Reporter, Run, train};

use super::{
    Batch, Context, Method, MethodOptions, MethodSpec, OptimKind, Schedule, StepOutput, Views, classification_step,
};

pub const SPEC: MethodSpec = MethodSpec {
    name: "rotation",
    display: "RotationNet",
    order: 3,
    cost: 2.5,
    highlight: false,
    summary: "RotationNet: predict the rotation (0/90/180/270) of each image, 4-way cross-entropy",
    preset: Preset::CropFlip,
    views: Views::Fixed(1),
    drop_last: false,
    needs_labels: false,
    needs_data: true,
    optim: OptimKind::Adam { weight_decay: None },
    schedule: Schedule::Constant,
    default_lr: 1e-3,
    default_batch: 128,
    metric: "rotation accuracy",
};

/// Options of RotationNet (`[method] kind = "rotation"`): none beyond the run's.
#[derive(clap::Args, Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[serde(default, deny_unknown_fields)]
pub struct RotationOptions {}

impl MethodOptions for RotationOptions {
    const NAME: &'static str = "rotation";

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
    ) -> crate::Result<Outcome> {
        let backbone = run.backbone;
        train(&mut Rotation { backbone }, run, stop, report, monitor)
    }

    fn conformance(&self, case: &mut crate::conformance::MethodCase) -> crate::Result<Vec<crate::conformance::Check>> {
        case.step(&mut Rotation { backbone: case.backbone })
    }
}

#[derive(Module, Debug)]
pub struct RotationModel {
    pub backbone: Backbone,
    pub head: Linear,
}

pub struct Rotation {
    pub backbone: BackboneKind,
}

/// `x` rotated by `quarter` x 90 degrees counter-clockwise in the (H, W) plane, as
/// `torch.rot90(x, quarter, dims=(2, 3))`.
pub fn rot90(x: Tensor<4>, quarter: usize) -> Tensor<4> {
    match quarter % 4 {
        0 => x,
        1 => x.flip([3]).swap_dims(2, 3),
        2 => x.flip([2, 3]),
        _ => x.swap_dims(2, 3).flip([3]),
    }
}

/// The batch expanded x4: block `r` holds every image rotated by `r` quarters; labels `r`.
pub fn rotations(x: Tensor<4>) -> (Tensor<4>, Vec<i64>) {
    let n = x.dims()[0];
    let blocks: Vec<Tensor<4>> = (0..4).map(|r| rot90(x.clone(), r)).collect();
    let labels = (0..4).flat_map(|r| std::iter::repeat_n(r as i64, n)).collect();
    (Tensor::cat(blocks, 0), labels)
}

impl Method for Rotation {
    type Model = RotationModel;

    fn model(&self, _ctx: &Context, device: &Device) -> RotationModel {
        RotationModel { backbone: self.backbone.init(device), head: linear_head(self.backbone.features(), 4, device) }
    }

    fn backbone(model: &RotationModel) -> &Backbone {
        &model.backbone
    }

    fn with_backbone(model: RotationModel, backbone: Backbone) -> RotationModel {
        RotationModel { backbone, ..model }
    }

    fn step(&self, model: &RotationModel, batch: &Batch) -> StepOutput {
        let (x, y) = rotations(batch.x.clone());
        classification_step(relnet_models::precision::linear(&model.head, model.backbone.forward(x)), &y, None)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn grid(x: Tensor<4>) -> Vec<f32> {
        x.into_data().iter::<f32>().collect()
    }

    /// torch.rot90([[1, 2], [3, 4]], 1) = [[2, 4], [1, 3]]; k = 2: [[4, 3], [2, 1]];
    /// k = 3: [[3, 1], [4, 2]].
    #[test]
    fn rot90_matches_torch() {
        let d = Device::flex();
        let x = Tensor::<4>::from_floats([[[[1.0, 2.0], [3.0, 4.0]]]], &d);
        assert_eq!(grid(rot90(x.clone(), 0)), vec![1.0, 2.0, 3.0, 4.0]);
        assert_eq!(grid(rot90(x.clone(), 1)), vec![2.0, 4.0, 1.0, 3.0]);
        assert_eq!(grid(rot90(x.clone(), 2)), vec![4.0, 3.0, 2.0, 1.0]);
        assert_eq!(grid(rot90(x.clone(), 3)), vec![3.0, 1.0, 4.0, 2.0]);
        // Non-square: shape [1, 1, 2, 3] -> [1, 1, 3, 2].
        let y = Tensor::<4>::from_floats([[[[1.0, 2.0, 3.0], [4.0, 5.0, 6.0]]]], &d);
        let r = rot90(y, 1);
        assert_eq!(r.dims(), [1, 1, 3, 2]);
        assert_eq!(grid(r), vec![3.0, 6.0, 2.0, 5.0, 1.0, 4.0]);
    }

    #[test]
    fn rotations_expand_four_times_with_labels() {
        let d = Device::flex();
        let x = Tensor::<4>::zeros([3, 2, 4, 4], &d);
        let (r, y) = rotations(x);
        assert_eq!(r.dims(), [12, 2, 4, 4]);
        assert_eq!(y, vec![0, 0, 0, 1, 1, 1, 2, 2, 2, 3, 3, 3]);
    }
}
