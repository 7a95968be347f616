//! Random weights, the lower bound: the initialised backbone saved as is.

use std::sync::Arc;
use std::sync::atomic::AtomicBool;

use burn::module::Module;
use relnet_augment::Preset;
use serde::{Deserialize, Serialize};

use super::{MethodOptions, MethodSpec, OptimKind, Schedule, Views};
use crate::error::Result;
use crate::trainer::{Monitor, Outcome, Reporter, Run};

pub const SPEC: MethodSpec = MethodSpec {
    name: "random",
    display: "Random weights (lower bound)",
    order: 1,
    cost: 0.0,
    highlight: false,
    summary: "the randomly initialised backbone saved as is (the lower bound)",
    preset: Preset::Plain,
    views: Views::Fixed(1),
    drop_last: false,
    needs_labels: false,
    needs_data: false,
    optim: OptimKind::Adam { weight_decay: None },
    schedule: Schedule::Constant,
    default_lr: 1e-3,
    default_batch: 128,
    metric: "-",
};

/// Options of the random-weights backbone (`[method] kind = "random"`): none.
#[derive(clap::Args, Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[serde(default, deny_unknown_fields)]
pub struct RandomOptions {}

impl MethodOptions for RandomOptions {
    const NAME: &'static str = "random";

    fn spec(&self) -> MethodSpec {
        SPEC
    }

    fn views(&self) -> usize {
        1
    }

    fn launch(
        &self,
        run: Run,
        _stop: Arc<AtomicBool>,
        report: &mut dyn Reporter,
        _monitor: Option<&mut dyn Monitor>,
    ) -> Result<Outcome> {
        let backbone = run.out.join("backbone.bpk");
        let weights = crate::streams::with_device_seed(&run.device, run.seed, || {
            crate::streams::materialise(run.backbone.init(&run.device))
        });
        relnet_models::io::save_backbone(&weights.valid(), run.backbone, &backbone)?;
        report.line(&format!("random-weights backbone saved to {}", backbone.display()));
        Ok(Outcome::Finished { backbone })
    }

    fn conformance(&self, case: &mut crate::conformance::MethodCase) -> crate::Result<Vec<crate::conformance::Check>> {
        // Random weights train nothing: the backbone checks cover its initialisation.
        let _ = case;
        Ok(Vec::new())
    }
}
