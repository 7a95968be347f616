//! The pretraining methods behind one interface, one file each, and the registry that names them.
//!
//! A method has two parts, both in its file:
//! - its **options**, a typed struct (`RelationalOptions`, `SimclrOptions`...) that is the
//!   `[method]` table of a run's config (`kind = "simclr"` selects it) and, through clap's derive,
//!   its command-line flags, their help and allowed values: defaults are written once, in the
//!   struct's `#[arg(default_value_t = ...)]`, and validation names the key;
//! - the **method** itself ([`Method`]): its model (a backbone plus its heads) and the loss of
//!   one batch. The shared loop in [`crate::trainer`] does the rest (data order, augmentation on a
//!   background thread, optimiser and schedule, progress, checkpoints, resume, NaN stop). Every
//!   method ends in the same backbone artifact, so every evaluator works on every method.
//!
//! Adding a method: a new file with both parts and one [`register`] call, in relnet or in any
//! crate that depends on it (see `docs/architecture.md`).

pub mod deepcluster;
pub mod deepinfomax;
pub mod random;
pub mod relational;
pub mod rotation;
pub mod simclr;
pub mod supervised;

use std::fmt::Debug;
use std::sync::Arc;
use std::sync::atomic::AtomicBool;

use burn::module::Module;
use burn::optim::lr_scheduler::module_lr_scheduler::ModuleLearningRate;
use burn::prelude::*;
use clap::{ArgMatches, Args, FromArgMatches};
use relnet_augment::Preset;
use relnet_models::Backbone;
use serde::Serialize;
use serde::de::DeserializeOwned;
use std::any::Any;

use crate::config::ConfigError;
use crate::data::ImageSet;
use crate::error::Result;
use crate::registry::{Named, Registry, RegistryError};
use crate::trainer::{Monitor, Outcome, Reporter, Run};

/// A method's options: the `[method]` table of a run's config and its command-line flags.
///
/// Implemented once per method, in the method's own file; [`register`] makes it known to every
/// part of relnet (relnet's own methods are registered from the start).
pub trait MethodOptions:
    Args + FromArgMatches + Serialize + DeserializeOwned + Default + Clone + Debug + PartialEq + Send + Sync + 'static
{
    /// The name in configs (`kind = "..."`) and on the command line.
    const NAME: &'static str;
    /// What the method needs from the shared loop, and how reports show it.
    fn spec(&self) -> MethodSpec;
    /// Views per image of a batch (K for relational reasoning). No default: a method that takes
    /// the run's K must read it here, and one that does not says how many it uses.
    fn views(&self) -> usize;
    /// Fills defaults that depend on the dataset (`small`: a dataset whose spec says it is small,
    /// such as the embedded `synthetic`).
    fn resolve(&mut self, _small: bool) {}
    /// Checks every value's range; errors name the key.
    fn validate(&self) -> Result<(), ConfigError> {
        Ok(())
    }
    /// Builds the method and trains it with the shared loop.
    fn launch(
        &self,
        run: Run,
        stop: Arc<AtomicBool>,
        report: &mut dyn Reporter,
        monitor: Option<&mut dyn Monitor>,
    ) -> Result<Outcome>;
    /// The method's case in the backend-conformance suite: usually `case.step(&mut TheMethod { .. })`,
    /// one training step on the reference and on the target from the same weights. A method that
    /// trains nothing returns no checks.
    fn conformance(&self, case: &mut crate::conformance::MethodCase) -> Result<Vec<crate::conformance::Check>>;
}

/// [`MethodOptions`] behind a pointer: what [`MethodConfig`] holds.
pub trait DynMethod: Debug + Send + Sync {
    fn name(&self) -> &'static str;
    fn spec(&self) -> MethodSpec;
    fn views(&self) -> usize;
    fn resolve(&mut self, small: bool);
    fn validate(&self) -> Result<(), ConfigError>;
    fn launch(
        &self,
        run: Run,
        stop: Arc<AtomicBool>,
        report: &mut dyn Reporter,
        monitor: Option<&mut dyn Monitor>,
    ) -> Result<Outcome>;
    fn conformance(&self, case: &mut crate::conformance::MethodCase) -> Result<Vec<crate::conformance::Check>>;
    /// The options as the `[method]` table, without `kind`.
    fn to_table(&self) -> toml::Table;
    fn clone_box(&self) -> Box<dyn DynMethod>;
    fn as_any(&self) -> &dyn Any;
}

impl<T: MethodOptions> DynMethod for T {
    fn name(&self) -> &'static str {
        T::NAME
    }
    fn spec(&self) -> MethodSpec {
        MethodOptions::spec(self)
    }
    fn views(&self) -> usize {
        MethodOptions::views(self)
    }
    fn resolve(&mut self, small: bool) {
        MethodOptions::resolve(self, small)
    }
    fn validate(&self) -> Result<(), ConfigError> {
        MethodOptions::validate(self)
    }
    fn launch(
        &self,
        run: Run,
        stop: Arc<AtomicBool>,
        report: &mut dyn Reporter,
        monitor: Option<&mut dyn Monitor>,
    ) -> Result<Outcome> {
        MethodOptions::launch(self, run, stop, report, monitor)
    }
    fn conformance(&self, case: &mut crate::conformance::MethodCase) -> Result<Vec<crate::conformance::Check>> {
        MethodOptions::conformance(self, case)
    }
    fn to_table(&self) -> toml::Table {
        toml::Table::try_from(self).expect("method options serialise to a TOML table")
    }
    fn clone_box(&self) -> Box<dyn DynMethod> {
        Box::new(self.clone())
    }
    fn as_any(&self) -> &dyn Any {
        self
    }
}

/// A registered method: its name and spec, and how to build, parse and flag its options.
pub struct MethodEntry {
    pub name: &'static str,
    pub spec: MethodSpec,
    default: fn() -> Box<dyn DynMethod>,
    parse: fn(&str) -> std::result::Result<Box<dyn DynMethod>, toml::de::Error>,
    augment_args: fn(clap::Command) -> clap::Command,
    given: fn(&ArgMatches) -> Option<toml::Table>,
}

impl MethodEntry {
    /// The entry of the options type `T`.
    pub fn of<T: MethodOptions>() -> Self {
        MethodEntry {
            name: T::NAME,
            spec: T::default().spec(),
            default: || Box::new(T::default()),
            parse: |text| toml::from_str::<T>(text).map(|o| Box::new(o) as Box<dyn DynMethod>),
            augment_args: <T as Args>::augment_args,
            given: |m| <T as FromArgMatches>::from_arg_matches(m).ok().map(|v| crate::config::given(&v, m)),
        }
    }

    /// The method with its default options.
    pub fn default_config(&self) -> MethodConfig {
        MethodConfig((self.default)())
    }

    /// Adds the method's flags to `cmd` (a command holds one method's flags at a time, so two
    /// methods may have flags of the same name).
    pub fn augment_args(&self, cmd: clap::Command) -> clap::Command {
        (self.augment_args)(cmd)
    }

    /// The method's options given explicitly in `matches` (of a command built with
    /// [`MethodEntry::augment_args`]), by config key.
    pub fn given(&self, matches: &ArgMatches) -> toml::Table {
        (self.given)(matches).unwrap_or_default()
    }
}

impl Named for MethodEntry {
    fn name(&self) -> &str {
        self.name
    }
}

static REGISTRY: Registry<MethodEntry> = Registry::new("method", || {
    vec![
        MethodEntry::of::<relational::RelationalOptions>(),
        MethodEntry::of::<simclr::SimclrOptions>(),
        MethodEntry::of::<rotation::RotationOptions>(),
        MethodEntry::of::<deepcluster::DeepclusterOptions>(),
        MethodEntry::of::<deepinfomax::DeepinfomaxOptions>(),
        MethodEntry::of::<supervised::SupervisedOptions>(),
        MethodEntry::of::<random::RandomOptions>(),
    ]
});

/// Makes the method whose options are `T` known to relnet: `[method] kind = T::NAME` in configs,
/// `--method T::NAME` with its flags, the grid, the report and the conformance suite.
///
/// Refused when the name is taken or the declarations disagree: the spec's `name` must be
/// `T::NAME`, a fixed view count must be what `views()` returns, and a K-view spec must name an
/// option the struct has. The spec is read once, from the default options: its report name, rank
/// and cost must not depend on option values.
pub fn register<T: MethodOptions>() -> std::result::Result<(), RegistryError> {
    let entry = MethodEntry::of::<T>();
    let invalid = |problem: String| RegistryError::Invalid { kind: "method", name: T::NAME.into(), problem };
    if entry.spec.name != T::NAME {
        return Err(invalid(format!("its spec is named `{}`", entry.spec.name)));
    }
    if let Views::Fixed(n) = entry.spec.views {
        let views = MethodOptions::views(&T::default());
        if views != n {
            return Err(invalid(format!("its spec says {n} views per image, but views() gives {views}")));
        }
    }
    if let Views::K { option } = entry.spec.views {
        let cmd = <T as Args>::augment_args(clap::Command::new(T::NAME));
        if !cmd.get_arguments().any(|a| a.get_id() == option) {
            return Err(invalid(format!(
                "its spec takes the run's K from option `{option}`, which its options do not have"
            )));
        }
    }
    REGISTRY.add(entry)
}

/// Every registered method, in registration order (relnet's own first).
pub fn entries() -> Vec<&'static MethodEntry> {
    REGISTRY.all()
}

/// The registered method `name`.
pub fn entry(name: &str) -> Option<&'static MethodEntry> {
    REGISTRY.get(name)
}

/// Every registered method's name.
pub fn names() -> Vec<String> {
    REGISTRY.names()
}

/// The method of a run with its options: the `[method]` table of a config, tagged by `kind`.
/// Any registered method (see [`register`]).
pub struct MethodConfig(Box<dyn DynMethod>);

impl MethodConfig {
    /// A config holding `options`.
    pub fn new<T: MethodOptions>(options: T) -> Self {
        MethodConfig(Box::new(options))
    }

    pub fn get(&self) -> &dyn DynMethod {
        &*self.0
    }

    pub fn get_mut(&mut self) -> &mut dyn DynMethod {
        &mut *self.0
    }

    /// The options, when they are of type `T`.
    pub fn downcast_ref<T: MethodOptions>(&self) -> Option<&T> {
        self.0.as_any().downcast_ref::<T>()
    }

    /// The method `name` with its default options.
    pub fn default_for(name: &str) -> Option<MethodConfig> {
        entry(name).map(MethodEntry::default_config)
    }

    /// The `[method]` table, `kind` included.
    pub fn to_table(&self) -> toml::Table {
        let mut t = toml::Table::new();
        t.insert("kind".into(), self.0.name().into());
        t.extend(self.0.to_table());
        t
    }

    /// Parses a `[method]` table (with its `kind`); errors name the key.
    pub fn from_table(mut table: toml::Table) -> std::result::Result<Self, ConfigError> {
        let kind = match table.remove("kind") {
            Some(toml::Value::String(k)) => k,
            Some(_) => return Err(ConfigError::key("kind", "must be a method name (a string)")),
            None => {
                return Err(ConfigError::key(
                    "kind",
                    format!("missing: the method's name, one of {}", names().join(", ")),
                ));
            }
        };
        let e = entry(&kind).ok_or_else(|| {
            ConfigError::key("kind", format!("unknown method `{kind}` (known: {})", names().join(", ")))
        })?;
        let text = toml::to_string(&table).unwrap_or_default();
        (e.parse)(&text).map(MethodConfig).map_err(|err| crate::config::error_in(&text, &err))
    }
}

impl Clone for MethodConfig {
    fn clone(&self) -> Self {
        MethodConfig(self.0.clone_box())
    }
}

impl Debug for MethodConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.0.fmt(f)
    }
}

impl PartialEq for MethodConfig {
    fn eq(&self, other: &Self) -> bool {
        self.0.name() == other.0.name() && self.0.to_table() == other.0.to_table()
    }
}

impl Default for MethodConfig {
    fn default() -> Self {
        MethodConfig::new(relational::RelationalOptions::default())
    }
}

impl Serialize for MethodConfig {
    fn serialize<S: serde::Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        self.to_table().serialize(s)
    }
}

impl<'de> serde::Deserialize<'de> for MethodConfig {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        let table = toml::Table::deserialize(d)?;
        MethodConfig::from_table(table).map_err(|e| serde::de::Error::custom(crate::config::nested_message(&e)))
    }
}

/// How many augmented views of each image a batch holds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Views {
    /// The run's K (relational reasoning), held in the option named `option`: the grid sets it
    /// from its K rules.
    K {
        option: &'static str,
    },
    Fixed(usize),
}

/// The optimiser a method trains with.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum OptimKind {
    /// Adam, epsilon 1e-8, with an optional L2 weight decay (PyTorch's `weight_decay`).
    Adam { weight_decay: Option<f64> },
    /// SGD with momentum 0.9 (no dampening, no weight decay).
    Sgd,
}

/// How the learning rate moves over the epochs.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Schedule {
    Constant,
    /// x0.1 from epoch `int(0.5 E)` and again from `int(0.75 E)` (PyTorch `MultiStepLR` as the
    /// reference), with `E` the run's epochs (`None`) or a fixed nominal count (`Some(E)`: the
    /// reference's fine-tuning computes its milestones from a default of 200 epochs).
    Step {
        nominal_epochs: Option<usize>,
    },
}

/// What a method needs from the shared loop.
#[derive(Clone, Copy, Debug)]
pub struct MethodSpec {
    pub name: &'static str,
    /// The name reports print ("Relational reasoning").
    pub display: &'static str,
    /// Rank in reports (rows sorted by it; the paper's order for relnet's methods).
    pub order: u32,
    /// Training cost per view relative to relational reasoning's, for the grid's estimates
    /// (a grid file's `method_cost` overrides it).
    pub cost: f64,
    /// Drawn in the highlight colour in the report's figures (relnet's own: relational reasoning).
    pub highlight: bool,
    pub summary: &'static str,
    pub preset: Preset,
    pub views: Views,
    /// Drop the last partial batch (DIM's `drop_last=True`); others keep it as the reference.
    pub drop_last: bool,
    /// Trains on the labelled train split (supervised) instead of the pretraining split.
    pub needs_labels: bool,
    /// Reads the dataset at all (`random` does not).
    pub needs_data: bool,
    pub optim: OptimKind,
    pub schedule: Schedule,
    pub default_lr: f64,
    pub default_batch: usize,
    /// Name of the per-step accuracy the method reports.
    pub metric: &'static str,
}

/// One training batch: `m` images, `k` views each, augmentation-major (`x[v * m + i]` is view
/// `v` of image `indices[i]`).
pub struct Batch {
    pub x: Tensor<4>,
    pub m: usize,
    pub k: usize,
    /// Dataset indices of the batch's images (labels, pseudo-labels).
    pub indices: Vec<usize>,
}

/// What one step reports.
pub struct StepOutput {
    /// Mean loss (a one-element tensor on the autodiff device).
    pub loss: Tensor<1>,
    /// The method's per-step accuracy in [0, 1] (see [`MethodSpec::metric`]).
    pub accuracy: f32,
}

/// What a method sees of the run when it is built and at each epoch start.
pub struct Context<'a> {
    pub images: &'a ImageSet,
    pub classes: usize,
    pub mean: [f32; 3],
    pub std: [f32; 3],
    pub seed: u64,
    pub epoch: usize,
    pub device: &'a Device,
    /// The run directory.
    pub out: &'a std::path::Path,
    pub report: &'a mut dyn FnMut(&str),
}

/// A pretraining method: its model and its loss.
pub trait Method {
    type Model: Module;

    fn model(&self, ctx: &Context, device: &Device) -> Self::Model;

    fn backbone(model: &Self::Model) -> &Backbone;

    /// The model with its backbone replaced (a run that starts from a saved backbone).
    fn with_backbone(model: Self::Model, backbone: Backbone) -> Self::Model;

    /// The learning rate of each parameter at base rate `lr` (one rate for all by default;
    /// fine-tuning gives its classifier its own).
    fn learning_rates(&self, _model: &Self::Model, lr: f64) -> ModuleLearningRate {
        lr.into()
    }

    /// Loss and accuracy of one batch (training mode).
    fn step(&self, model: &Self::Model, batch: &Batch) -> StepOutput;

    /// Called before every epoch (also when a run resumes mid-epoch): DeepCluster clusters here.
    fn begin_epoch(&mut self, model: Self::Model, _ctx: &mut Context) -> Result<Self::Model> {
        Ok(model)
    }

    /// Called once after the last epoch with the trained model in eval mode.
    fn finish(&mut self, _model: &Self::Model, _ctx: &mut Context) -> Result<()> {
        Ok(())
    }
}

/// Labels of `indices` as an int tensor.
pub(crate) fn label_tensor(labels: &[i64], device: &Device) -> Tensor<1, Int> {
    Tensor::<1, Int>::from_data(burn::tensor::TensorData::new(labels.to_vec(), [labels.len()]), device)
}

/// Cross-entropy of `logits` against `labels` (optionally weighted per class) and the argmax
/// accuracy: the step of every classification-shaped method (supervised, rotation, DeepCluster).
pub(crate) fn classification_step(logits: Tensor<2>, labels: &[i64], weights: Option<Vec<f32>>) -> StepOutput {
    let device = logits.device();
    let accuracy = argmax_accuracy(logits.clone().detach(), labels);
    let loss = burn::nn::loss::CrossEntropyLossConfig::new()
        .with_weights(weights)
        .init(&device)
        .forward(logits, label_tensor(labels, &device));
    StepOutput { loss, accuracy }
}

/// Fraction of rows whose argmax equals the label.
pub(crate) fn argmax_accuracy(logits: Tensor<2>, labels: &[i64]) -> f32 {
    let pred: Vec<i64> = logits.argmax(1).into_data().iter::<i64>().collect();
    let hits = pred.iter().zip(labels).filter(|(p, l)| p == l).count();
    hits as f32 / labels.len().max(1) as f32
}

#[cfg(test)]
mod registry_tests {
    use super::*;

    /// Registers relnet's own methods again: every one is refused as taken, which also proves
    /// their declarations pass the checks that run first.
    #[test]
    fn registering_a_taken_name_is_refused() {
        assert!(matches!(register::<relational::RelationalOptions>(), Err(RegistryError::Duplicate { .. })));
        assert!(matches!(register::<simclr::SimclrOptions>(), Err(RegistryError::Duplicate { .. })));
        assert_eq!(
            names()[..7],
            ["relational", "simclr", "rotation", "deepcluster", "deepinfomax", "supervised", "random"]
        );
    }

    #[test]
    fn configs_round_trip_through_their_table() {
        for e in entries() {
            let mut cfg = e.default_config();
            cfg.get_mut().resolve(true);
            let back = MethodConfig::from_table(cfg.to_table()).unwrap();
            assert_eq!(back, cfg, "{}", e.name);
        }
        let err = MethodConfig::from_table(toml::toml! { kind = "simclr"  temperature = "hot" }).unwrap_err();
        assert_eq!(err.key.as_deref(), Some("temperature"), "{err}");
        let err = MethodConfig::from_table(toml::toml! { kind = "byol" }).unwrap_err();
        assert!(err.to_string().contains("unknown method `byol`") && err.to_string().contains("relational"), "{err}");
    }
}

#[cfg(test)]
mod tests {
    use burn::optim::{AdamConfig, GradientsParams};
    use burn::tensor::Distribution;
    use relnet_models::BackboneKind;

    use super::*;
    use crate::data::synthetic::{SyntheticSpec, generate};

    /// Fixed views: per image a random pattern, each view a noisy copy of it.
    fn views(m: usize, k: usize, device: &Device) -> Tensor<4> {
        let base = Tensor::<4>::random([m, 3, 16, 16], Distribution::Normal(0.0, 1.0), device);
        Tensor::cat(
            (0..k)
                .map(|_| base.clone() + Tensor::<4>::random([m, 3, 16, 16], Distribution::Normal(0.0, 0.3), device))
                .collect(),
            0,
        )
    }

    /// Trains `method` on one fixed batch and returns the first and last three losses' means.
    fn fit<T: Method>(mut method: T, k: usize, classes: usize, steps: usize, lr: f64) -> (f32, f32) {
        let device = Device::flex().autodiff();
        device.seed(7);
        let images = generate(&SyntheticSpec { seed: 3, train: 16, test: 1, side: 16 }, true);
        let mut say = |_: &str| {};
        let mut ctx = Context {
            images: &images,
            classes,
            mean: [0.5; 3],
            std: [0.25; 3],
            seed: 1,
            epoch: 0,
            device: &device,
            out: std::path::Path::new("."),
            report: &mut say,
        };
        let mut model = method.model(&ctx, &device);
        model = method.begin_epoch(model, &mut ctx).unwrap();
        let m = 16;
        let batch = Batch { x: views(m, k, &device), m, k, indices: (0..m).collect() };
        let mut optim = AdamConfig::new().with_epsilon(1e-8).init();
        let mut losses = Vec::new();
        for _ in 0..steps {
            let out = method.step(&model, &batch);
            losses.push(out.loss.clone().into_scalar::<f32>());
            let grads = GradientsParams::from_grads(out.loss.backward(), &model);
            model = optim.step(lr, model, grads);
        }
        let mean = |v: &[f32]| v.iter().sum::<f32>() / v.len() as f32;
        (mean(&losses[..3]), mean(&losses[steps - 3..]))
    }

    fn decreases(name: &str, (first, last): (f32, f32), factor: f32) {
        assert!(last.is_finite() && last < factor * first, "{name}: loss {first} -> {last}");
    }

    #[test]
    fn every_method_lowers_its_loss_on_a_fixed_batch() {
        let b = BackboneKind::Conv4;
        decreases(
            "supervised",
            fit(
                supervised::Classifier {
                    backbone: b,
                    labels: (0..16).map(|i| i % 4).collect(),
                    classifier_lr: None,
                    test: None,
                    test_accuracy: None,
                },
                1,
                4,
                30,
                1e-2,
            ),
            0.8,
        );
        decreases("rotation", fit(rotation::Rotation { backbone: b }, 1, 1, 30, 1e-3), 0.8);
        decreases(
            "simclr",
            fit(simclr::Simclr { backbone: b, temperature: 0.5, variant: simclr::NtXent::MeanLog }, 2, 1, 30, 1e-3),
            0.8,
        );
        decreases(
            "deepcluster",
            fit(deepcluster::DeepCluster::new(b, deepcluster::ClusterWeights::Reference), 1, 1, 30, 1e-3),
            0.8,
        );
        // DIM starts at the JSD's chance value (2 ln 2 + 0.1 * 2 ln 2) and its local
        // discriminator learns slowly at Adam 1e-3 (the reference trains it at 1e-4).
        decreases(
            "deepinfomax",
            fit(deepinfomax::DeepInfomax::new(b, deepinfomax::PriorMode::Joint), 1, 1, 30, 1e-3),
            0.95,
        );
    }
}
