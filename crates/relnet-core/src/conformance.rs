//! The backend-conformance suite: the same computations on a target device and on the
//! reference (burn-flex with relnet's own operations), compared number by number.
//!
//! What it covers, each with the same weights and the same input on both sides:
//! - every backbone: forward output, the input's gradient and every parameter's gradient;
//! - one training step of every method (its heads and losses): the loss, every parameter's
//!   gradient, and the update its optimiser makes;
//! - artifacts across backends: a backbone saved on one side and loaded on the other computes
//!   the same features.
//!
//! relnet's own operations (`fastconv`, `fastbn`, `fastpool`) run on burn-flex only, so against
//! any other backend they are compared with burn's generic operations there; against `cpu`
//! itself the target side runs burn's operations on flex (`fastconv::with_burn_conv`).
//!
//! The error of a tensor is `max |target - reference| / max |reference|`; a check passes at
//! most at the tolerance ([`DEFAULT_TOLERANCE`] unless asked otherwise).

use std::time::Instant;

use burn::module::{Module, ModuleVisitor, Param, ParamId};
use burn::optim::GradientsParams;
use burn::prelude::*;
use burn::tensor::Gradients;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use relnet_models::{Backbone, BackboneKind};

use crate::data::{DataRoot, ImageSet, Split};
use crate::methods::{Batch, Context, Method, MethodConfig, MethodSpec};

/// Relative error allowed by default: f32 on two backends whose kernels sum in different orders
/// (measured between flex and ndarray: see docs/backends.md).
pub const DEFAULT_TOLERANCE: f64 = 1e-3;
/// Relative L2 error allowed on the deep ResNets' gradients (the equivalence tests' bound).
pub const DEEP_GRADIENT_TOLERANCE: f64 = 2e-2;

/// One comparison.
#[derive(Clone, Debug, serde::Serialize)]
pub struct Check {
    pub group: String,
    pub name: String,
    /// Worst relative error over the tensors compared (and which one it was).
    pub error: f64,
    pub worst: String,
    pub tolerance: f64,
}

impl Check {
    pub fn passed(&self) -> bool {
        self.error <= self.tolerance // NaN fails
    }
}

/// What one run of the suite found.
#[derive(Clone, Debug, serde::Serialize)]
pub struct Report {
    pub reference: String,
    pub target: String,
    pub checks: Vec<Check>,
    pub seconds: f64,
}

impl Report {
    pub fn failures(&self) -> Vec<&Check> {
        self.checks.iter().filter(|c| !c.passed()).collect()
    }

    /// One line per check, then a summary line.
    pub fn table(&self) -> String {
        let mut s = format!(
            "conformance of {} against {}\n(error: outputs max|t - r| / max|r|; gradients and updates ||t - r|| / ||r||, per tensor, the worst shown)\n",
            self.target, self.reference
        );
        for c in &self.checks {
            s += &format!(
                "{:4} {:<10} {:<44} {:>9.2e} (tolerance {:.0e}){}\n",
                if c.passed() { "ok" } else { "FAIL" },
                c.group,
                c.name,
                c.error,
                c.tolerance,
                if c.worst.is_empty() { String::new() } else { format!("  worst: {}", c.worst) }
            );
        }
        let failed = self.failures().len();
        s += &format!(
            "{} of {} checks passed on {} in {:.1} s{}\n",
            self.checks.len() - failed,
            self.checks.len(),
            self.target,
            self.seconds,
            if failed > 0 { " — FAILED" } else { "" }
        );
        s
    }
}

/// What to run.
#[derive(Clone, Debug)]
pub struct Options {
    pub tolerance: f64,
    /// Gradients of the deep ResNets (32, 34, 56 layers) from a random initialisation: chaotic
    /// enough that f32 rounding alone moves them by about 1% in L2 (docs/performance.md).
    pub deep_gradient_tolerance: f64,
    pub backbones: Vec<BackboneKind>,
    /// The backbone under every method's step.
    pub method_backbone: BackboneKind,
    /// The methods whose step is checked (`None`: every registered method).
    pub methods: Option<Vec<String>>,
    pub seed: u64,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            tolerance: DEFAULT_TOLERANCE,
            deep_gradient_tolerance: DEEP_GRADIENT_TOLERANCE,
            // ResNet-56 is ResNet-32 with more blocks; registered backbones are all checked.
            backbones: BackboneKind::all().into_iter().filter(|k| *k != BackboneKind::Resnet56).collect(),
            method_backbone: BackboneKind::Conv4,
            methods: None,
            seed: 7,
        }
    }
}

/// Named tensors (flattened), in a fixed order.
pub type Values = Vec<(String, Vec<f32>)>;

fn values<const D: usize>(t: Tensor<D>) -> Vec<f32> {
    t.into_data().convert::<f32>().iter::<f32>().collect()
}

/// How two sets of tensors are compared.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
pub enum Metric {
    /// `max |a - b| / max |b|` per tensor (outputs, losses, features).
    MaxRelative,
    /// `||a - b|| / max(||b||, 1% of the largest ||b|| of the set)` per tensor (gradients and
    /// updates): a tensor whose gradient is nearly zero (a bias under batch norm) is measured
    /// against the set's scale, not against its own rounding noise.
    L2Relative,
}

/// The worst error over each pair of tensors, and its name.
pub fn relative_error(target: &Values, reference: &Values, metric: Metric) -> (f64, String) {
    if target.len() != reference.len() {
        return (f64::INFINITY, format!("{} tensors against {}", target.len(), reference.len()));
    }
    let norm = |v: &[f32]| v.iter().map(|x| (*x as f64).powi(2)).sum::<f64>().sqrt();
    let floor = match metric {
        Metric::MaxRelative => 1e-12,
        Metric::L2Relative => (reference.iter().map(|(_, b)| norm(b)).fold(0f64, f64::max) * 1e-2).max(1e-30),
    };
    let mut worst = (0.0f64, String::new());
    for ((name, a), (_, b)) in target.iter().zip(reference) {
        let e = if a.len() != b.len() {
            f64::INFINITY
        } else {
            match metric {
                Metric::MaxRelative => {
                    let scale = b.iter().fold(0f64, |m, v| m.max(v.abs() as f64)).max(floor);
                    let diff = a.iter().zip(b).fold(0f64, |m, (u, v)| {
                        let d = (*u as f64 - *v as f64).abs();
                        if d.is_nan() || m.is_nan() { f64::NAN } else { m.max(d) }
                    });
                    diff / scale
                }
                Metric::L2Relative => {
                    let d = a.iter().zip(b).map(|(u, v)| (*u as f64 - *v as f64).powi(2)).sum::<f64>().sqrt();
                    d / norm(b).max(floor)
                }
            }
        };
        if e.is_nan() || e > worst.0 || worst.1.is_empty() {
            worst = (e, name.clone());
            if e.is_nan() {
                break;
            }
        }
    }
    worst
}

/// Every float parameter's value (this also draws lazily initialised parameters, so they are
/// drawn on the device they were created for, before the model moves).
struct ParamValues(Values);

impl ModuleVisitor for ParamValues {
    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<D>>) {
        let i = self.0.len();
        self.0.push((format!("parameter {i} {:?}", param.val().dims()), values(param.val())));
    }
}

pub(crate) fn params<M: Module>(m: &M) -> Values {
    let mut v = ParamValues(Vec::new());
    m.visit(&mut v);
    v.0
}

/// Every float parameter's gradient, from burn's `Gradients` or from `GradientsParams`.
struct ParamGrads<'a> {
    grads: Either<'a>,
    out: Values,
    n: usize,
}

enum Either<'a> {
    Raw(&'a Gradients),
    Params(&'a GradientsParams),
}

impl ModuleVisitor for ParamGrads<'_> {
    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<D>>) {
        let id: ParamId = param.id;
        let g = match self.grads {
            Either::Raw(g) => param.val().grad(g),
            Either::Params(g) => g.get::<D>(id),
        };
        let name = format!("parameter {} gradient {:?}", self.n, param.val().dims());
        self.n += 1;
        if let Some(g) = g {
            self.out.push((name, values(g)));
        } else {
            self.out.push((name, Vec::new()));
        }
    }
}

/// Every float parameter's gradient in `grads` (empty where it has none).
pub(crate) fn param_grads<M: Module>(model: &M, grads: &GradientsParams) -> Values {
    let mut g = ParamGrads { grads: Either::Params(grads), out: Vec::new(), n: 0 };
    model.visit(&mut g);
    g.out
}

/// Seeded inputs drawn on the host, identical on both sides: roughly standard normal.
fn host_normal(n: usize, seed: u64) -> Vec<f32> {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    (0..n).map(|_| (0..4).map(|_| rng.random::<f32>() - 0.5).sum::<f32>() * 1.7).collect()
}

fn tensor4(v: &[f32], shape: [usize; 4], device: &Device) -> Tensor<4> {
    Tensor::from_data(TensorData::new(v.to_vec(), shape), device)
}

/// The two sides of the comparison.
struct Sides {
    reference: Device,
    target: Device,
    /// The target is flex too: run it with burn's operations.
    target_is_flex: bool,
}

impl Sides {
    fn on_target<R>(&self, f: impl FnOnce() -> R) -> R {
        if self.target_is_flex { relnet_models::fastconv::with_burn_conv(f) } else { f() }
    }
}

/// Runs the suite: `target` against burn-flex with relnet's operations. `progress` gets a line
/// per group.
pub fn run(
    target: &Device,
    target_name: &str,
    opts: &Options,
    progress: &mut dyn FnMut(&str),
) -> crate::Result<Report> {
    let t0 = Instant::now();
    let sides = Sides {
        reference: Device::flex(),
        target: target.clone().without_autodiff(),
        target_is_flex: relnet_models::fastconv::is_flex(target),
    };
    let tmp = tempdir()?;
    let mut checks = Vec::new();
    for &kind in &opts.backbones {
        progress(&format!("backbone {kind}: forward, backward, artifacts"));
        checks.extend(backbone_checks(&sides, kind, opts, &tmp)?);
    }
    let mut synthetic =
        crate::data::registry::lookup("synthetic")?.load(Split::Train, &DataRoot(std::path::PathBuf::from(".")))?;
    synthetic.images.keep(&(0..64).collect::<Vec<_>>());
    let labels: Vec<i64> =
        synthetic.images.labels.as_ref().map(|l| l.iter().map(|&v| v as i64).collect()).unwrap_or_default();
    for entry in crate::methods::entries() {
        if opts.methods.as_ref().is_some_and(|only| !only.iter().any(|m| m == entry.name)) {
            continue;
        }
        let mut cfg = entry.default_config();
        cfg.get_mut().resolve(true);
        progress(&format!("method {}: one training step", entry.name));
        let mut case = MethodCase {
            sides: &sides,
            opts,
            cfg: &cfg,
            images: &synthetic.images,
            classes: synthetic.classes.len(),
            tmp: &tmp,
            backbone: opts.method_backbone,
            labels: labels.clone(),
        };
        checks.extend(cfg.get().conformance(&mut case)?);
    }
    let _ = std::fs::remove_dir_all(&tmp);
    Ok(Report {
        reference: "cpu (burn-flex with relnet's operations)".into(),
        target: target_name.to_string(),
        checks,
        seconds: t0.elapsed().as_secs_f64(),
    })
}

fn tempdir() -> crate::Result<std::path::PathBuf> {
    let dir = std::env::temp_dir().join(
        format!("relnet-conformance-{}-{:?}", std::process::id(), std::thread::current().id()).replace(['(', ')'], ""),
    );
    std::fs::create_dir_all(&dir).map_err(|e| crate::Error::io(&dir, e))?;
    Ok(dir)
}

/// Output, input gradient and parameter gradients of one forward + backward.
fn backbone_pass(model: &Backbone, x: Tensor<4>, cot: Tensor<2>) -> (Values, Values) {
    let x = x.require_grad();
    let y = model.forward(x.clone());
    let grads = (y.clone() * cot).sum().backward();
    let mut g = ParamGrads { grads: Either::Raw(&grads), out: Vec::new(), n: 0 };
    model.visit(&mut g);
    let outs = vec![
        ("output".to_string(), values(y)),
        ("input gradient".to_string(), x.grad(&grads).map(values).unwrap_or_default()),
    ];
    (outs, g.out)
}

/// The backbone's declared spec against what its network does: feature width, first map's
/// channels and trainable parameters. The error is the largest relative difference (0 when all
/// three agree, which the check requires).
fn spec_check(kind: BackboneKind, model: &Backbone, side: usize, device: &Device) -> Check {
    let spec = kind.spec();
    let (features, first) = model.valid().forward_with_first(Tensor::<4>::zeros([2, 3, side, side], device));
    let found = [features.dims()[1], first.dims()[1], relnet_models::params::trainable_params(model)];
    let declared = [spec.features, spec.first_channels, spec.reference_params];
    let what = ["features", "first map channels", "parameters"];
    let (error, worst) = found
        .iter()
        .zip(declared)
        .zip(what)
        .map(|((&f, d), w)| ((f as f64 - d as f64).abs() / d.max(1) as f64, format!("{w}: {f} (declared {d})")))
        .fold((0.0, String::from("-")), |a, b| if b.0 > a.0 { b } else { a });
    let name = format!(
        "{kind} spec: {} features, {} first-map channels, {} parameters",
        spec.features, spec.first_channels, spec.reference_params
    );
    Check { group: "backbone".into(), name, error, worst, tolerance: 0.0 }
}

fn check(group: &str, name: String, target: &Values, reference: &Values, metric: Metric, tolerance: f64) -> Check {
    let (error, worst) = relative_error(target, reference, metric);
    Check { group: group.to_string(), name, error, worst, tolerance }
}

fn backbone_checks(s: &Sides, kind: BackboneKind, opts: &Options, tmp: &std::path::Path) -> crate::Result<Vec<Check>> {
    let (seed, tol) = (opts.seed, opts.tolerance);
    let spec = kind.spec();
    let grad_tol = if spec.deep { opts.deep_gradient_tolerance } else { tol };
    // Batch 8: at batches of 3-4 batch norm over a 8x8 map is ill-conditioned enough to move
    // gradients by 0.5%.
    let (batch, side) = (8, spec.check_side);
    let ra = s.reference.clone().autodiff();
    let ta = s.target.clone().autodiff();
    // Every parameter drawn on the reference, under the process's generator lock.
    let model = crate::streams::with_device_seed(&ra, seed, || crate::streams::materialise(kind.init(&ra)));
    let spec_check = spec_check(kind, &model, side, &s.reference);
    if !spec_check.passed() {
        // The numerical checks are shaped by the spec; against a network that contradicts it
        // they would only fail on shapes.
        return Ok(vec![spec_check]);
    }
    let model_t = model.clone().fork(&ta);
    let x = host_normal(batch * 3 * side * side, seed + 1);
    let cot = host_normal(batch * kind.features(), seed + 2);
    let cot = |d: &Device| Tensor::<2>::from_data(TensorData::new(cot.clone(), [batch, kind.features()]), d);
    let (out_r, grad_r) = backbone_pass(&model, tensor4(&x, [batch, 3, side, side], &ra), cot(&ra));
    let (out_t, grad_t) = s.on_target(|| backbone_pass(&model_t, tensor4(&x, [batch, 3, side, side], &ta), cot(&ta)));
    let g = "backbone";
    let mut checks = vec![
        spec_check,
        check(
            g,
            format!("{kind} forward output"),
            &out_t[..1].to_vec(),
            &out_r[..1].to_vec(),
            Metric::MaxRelative,
            tol,
        ),
        check(
            g,
            format!("{kind} input gradient"),
            &out_t[1..].to_vec(),
            &out_r[1..].to_vec(),
            Metric::L2Relative,
            grad_tol,
        ),
        check(
            g,
            format!("{kind} parameter gradients ({})", grad_r.len()),
            &grad_t,
            &grad_r,
            Metric::L2Relative,
            grad_tol,
        ),
    ];
    // Artifacts: saved on one side, loaded on the other, same features (eval mode).
    let eval = |m: &Backbone, d: &Device| {
        vec![("features".to_string(), values(m.forward(tensor4(&x, [batch, 3, side, side], d))))]
    };
    let (r, t) = (s.reference.clone(), s.target.clone());
    let path = tmp.join(format!("{kind}-target.bpk"));
    let saved_t = model_t.valid();
    relnet_models::io::save_backbone(&saved_t, kind, &path)?;
    let (loaded_r, k) = relnet_models::io::load_backbone(&path, &r)?;
    debug_assert_eq!(k, kind);
    let feats_t = s.on_target(|| eval(&saved_t, &t));
    checks.push(check(
        "artifact",
        format!("{kind} saved on target, loaded on cpu"),
        &eval(&loaded_r, &r),
        &feats_t,
        Metric::MaxRelative,
        tol,
    ));
    let path = tmp.join(format!("{kind}-reference.bpk"));
    let saved_r = model.valid();
    relnet_models::io::save_backbone(&saved_r, kind, &path)?;
    let (loaded_t, _) = relnet_models::io::load_backbone(&path, &t)?;
    let feats_t = s.on_target(|| eval(&loaded_t, &t));
    checks.push(check(
        "artifact",
        format!("{kind} saved on cpu, loaded on target"),
        &feats_t,
        &eval(&saved_r, &r),
        Metric::MaxRelative,
        tol,
    ));
    Ok(checks)
}

/// One method's case in the suite: what [`crate::methods::MethodOptions::conformance`] gets.
pub struct MethodCase<'a> {
    sides: &'a Sides,
    opts: &'a Options,
    cfg: &'a MethodConfig,
    images: &'a ImageSet,
    classes: usize,
    tmp: &'a std::path::Path,
    /// The backbone the methods are checked on.
    pub backbone: BackboneKind,
    /// The labels of the images the case trains on (for methods that need them).
    pub labels: Vec<i64>,
}

impl MethodCase<'_> {
    /// One training step of `method` on the reference and on the target, from the same weights:
    /// the loss, the parameter gradients and the optimiser's update compared.
    pub fn step<T: Method>(&mut self, method: &mut T) -> crate::Result<Vec<Check>> {
        step_checks(self.sides, method, self.cfg, self.opts, self.images, self.classes, self.tmp)
    }
}

/// One step of `method` on both sides from the same weights: loss, gradients, update.
fn step_checks<T: Method>(
    s: &Sides,
    method: &mut T,
    cfg: &MethodConfig,
    opts: &Options,
    images: &ImageSet,
    classes: usize,
    tmp: &std::path::Path,
) -> crate::Result<Vec<Check>> {
    let spec: MethodSpec = cfg.get().spec();
    let name = spec.name;
    let ra = s.reference.clone().autodiff();
    let ta = s.target.clone().autodiff();
    let mut lines = |_: &str| {};
    let mut ctx = Context {
        images,
        classes,
        mean: [0.5; 3],
        std: [0.25; 3],
        seed: opts.seed,
        epoch: 0,
        device: &ra,
        out: tmp,
        report: &mut lines,
    };
    let model =
        crate::streams::with_device_seed(&ra, opts.seed, || crate::streams::materialise(method.model(&ctx, &ra)));
    let model = method.begin_epoch(model, &mut ctx)?; // DeepCluster clusters here, on the reference
    let before = params(&model);
    let model_t = model.clone().fork(&ta);
    let (m, k) = (8, cfg.get().views());
    let side = images.height;
    let x = host_normal(m * k * 3 * side * side, opts.seed + 3);
    let lr = spec.default_lr;
    let one = |model: T::Model, device: &Device| {
        let batch = Batch { x: tensor4(&x, [m * k, 3, side, side], device), m, k, indices: (0..m).collect() };
        let out = method.step(&model, &batch);
        let loss = vec![("loss".to_string(), values(out.loss.clone()))];
        let grads = GradientsParams::from_grads(out.loss.backward(), &model);
        let grad_values = param_grads(&model, &grads);
        let mut optim = crate::trainer::optimizer(spec.optim);
        let rates = method.learning_rates(&model, lr);
        let stepped = optim.step(rates, model, grads);
        (loss, grad_values, params(&stepped))
    };
    let (loss_r, grad_r, after_r) = one(model, &ra);
    let (loss_t, grad_t, after_t) = s.on_target(|| one(model_t, &ta));
    let g = "method";
    Ok(vec![
        check(g, format!("{name} loss"), &loss_t, &loss_r, Metric::MaxRelative, opts.tolerance),
        check(
            g,
            format!("{name} parameter gradients ({})", grad_r.len()),
            &grad_t,
            &grad_r,
            Metric::L2Relative,
            opts.tolerance,
        ),
        update_check(name, &before, &after_t, &after_r, &grad_t, &grad_r, opts.tolerance),
    ])
}

/// The optimiser's update on the entries whose gradient both sides agree on to 10%: elsewhere
/// an adaptive optimiser's first step, `lr * g / (|g| + eps)`, turns the f32 noise of a
/// near-zero gradient (a bias under batch norm) into a full step of either sign.
///
/// Those entries are a minority; the check fails (error infinite) when the filter leaves fewer
/// than half of the elements that have a gradient on the reference, or none at all: otherwise
/// backends whose gradients disagree everywhere would compare nothing and pass. Measured (flex
/// with burn's operations and ndarray against the reference, Conv-4, seed 7): 99.4-99.99% of
/// the elements compared for every method but deepinfomax, 68.4% for it, on both backends.
fn update_check(
    name: &str,
    before: &Values,
    after_t: &Values,
    after_r: &Values,
    grad_t: &Values,
    grad_r: &Values,
    tol: f64,
) -> Check {
    /// The least fraction of the elements with a reference gradient that must be compared.
    const MIN_COMPARED: f64 = 0.5;
    let check_name = format!("{name} optimiser update");
    let fail = |worst: String| Check {
        group: "method".into(),
        name: check_name.clone(),
        error: f64::INFINITY,
        worst,
        tolerance: tol,
    };
    if before.len() != after_t.len()
        || before.len() != after_r.len()
        || before.len() != grad_r.len()
        || before.len() != grad_t.len()
    {
        return fail("parameter count differs".into());
    }
    let mut dt = Vec::new();
    let mut dr = Vec::new();
    // Elements with a reference gradient (batch-norm running statistics have none), and of
    // those the ones compared.
    let (mut with_grad, mut compared) = (0usize, 0usize);
    for ((((b, t), r), gt), gr) in before.iter().zip(after_t).zip(after_r).zip(grad_t).zip(grad_r) {
        if gr.1.len() == b.1.len() {
            with_grad += b.1.len();
        }
        let keep: Vec<usize> = (0..b.1.len()).filter(|&i| matches!((gt.1.get(i), gr.1.get(i)), (Some(u), Some(v)) if (u - v).abs() <= 0.1 * v.abs() && v.abs() > 1e-6)).collect();
        compared += keep.len();
        dt.push((t.0.clone(), keep.iter().map(|&i| t.1[i] - b.1[i]).collect()));
        dr.push((r.0.clone(), keep.iter().map(|&i| r.1[i] - b.1[i]).collect()));
    }
    let fraction = compared as f64 / with_grad.max(1) as f64;
    if compared == 0 || fraction < MIN_COMPARED {
        return fail(format!(
            "{compared} of {with_grad} elements with a gradient compared ({:.1}%, at least {:.0}% needed): the two sides' gradients agree to 10% on too few elements",
            100.0 * fraction,
            100.0 * MIN_COMPARED
        ));
    }
    let mut c = check("method", check_name.clone(), &dt, &dr, Metric::L2Relative, tol);
    c.worst = format!("{}; {compared} of {with_grad} elements compared", c.worst);
    c
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn relative_error_finds_the_worst_tensor_and_nan() {
        let r: Values = vec![("a".into(), vec![1.0, -2.0]), ("b".into(), vec![10.0, 0.0])];
        let t: Values = vec![("a".into(), vec![1.0, -2.002]), ("b".into(), vec![10.0, 0.5])];
        let (e, w) = relative_error(&t, &r, Metric::MaxRelative);
        assert!((e - 0.05).abs() < 1e-6 && w == "b", "{e} {w}");
        let (e, w) = relative_error(&t, &r, Metric::L2Relative);
        assert!((e - 0.5 / 10.0).abs() < 1e-6 && w == "b", "{e} {w}");
        let t: Values = vec![("a".into(), vec![f32::NAN, -2.0]), ("b".into(), vec![10.0, 0.0])];
        let (e, w) = relative_error(&t, &r, Metric::MaxRelative);
        assert!(e.is_nan() && w == "a");
        let c = Check { group: "g".into(), name: "n".into(), error: e, worst: w, tolerance: 1.0 };
        assert!(!c.passed());
        assert!(relative_error(&r[..1].to_vec(), &r, Metric::L2Relative).0.is_infinite());
        // A nearly-zero tensor is measured against 1% of the set's largest norm.
        let r: Values = vec![("big".into(), vec![100.0]), ("tiny".into(), vec![1e-9])];
        let t: Values = vec![("big".into(), vec![100.0]), ("tiny".into(), vec![-1e-9])];
        assert!(relative_error(&t, &r, Metric::L2Relative).0 < 1e-8);
        assert!(relative_error(&t, &r, Metric::MaxRelative).0 >= 2.0);
    }

    #[test]
    fn update_check_fails_when_too_few_elements_are_compared() {
        let v = |x: &[f32]| -> Values { vec![("w".into(), x.to_vec())] };
        let before = v(&[1.0, 1.0, 1.0, 1.0]);
        let after = v(&[0.9, 0.9, 0.9, 0.9]);
        let grad = v(&[0.5, -0.5, 0.25, 1.0]);
        // Agreeing gradients, the same update: every element compared, error 0.
        let c = update_check("m", &before, &after, &after, &grad, &grad, 1e-3);
        assert!(c.passed() && c.error == 0.0, "{c:?}");
        assert!(c.worst.contains("4 of 4 elements compared"), "{c:?}");
        // A wrong update where the gradients agree is measured and fails.
        let c = update_check("m", &before, &v(&[0.9, 0.9, 0.9, 0.8]), &after, &grad, &grad, 1e-3);
        assert!(!c.passed() && c.error.is_finite() && c.error > 0.1, "{c:?}");
        // Gradients that disagree everywhere: nothing compared. Before the fix this passed with
        // error 0 (empty tensors on both sides), whatever the updates were.
        let other = v(&[-0.5, 0.5, -0.25, -1.0]);
        let c = update_check("m", &before, &v(&[5.0, -5.0, 5.0, -5.0]), &after, &other, &grad, 1e-3);
        assert!(!c.passed() && c.error.is_infinite(), "{c:?}");
        assert!(c.worst.contains("0 of 4 elements with a gradient compared"), "{c:?}");
        // All-zero reference gradients (below the 1e-6 floor): nothing compared either.
        let zero = v(&[0.0; 4]);
        let c = update_check("m", &before, &after, &after, &zero, &zero, 1e-3);
        assert!(c.error.is_infinite() && c.worst.contains("0 of 4"), "{c:?}");
        // One element of four (25%) is too few; two of four (50%) is enough.
        let one_agrees = v(&[0.5, 0.5, -0.25, -1.0]);
        let c = update_check("m", &before, &after, &after, &one_agrees, &grad, 1e-3);
        assert!(c.error.is_infinite() && c.worst.contains("1 of 4") && c.worst.contains("25.0%"), "{c:?}");
        let two_agree = v(&[0.5, -0.5, -0.25, -1.0]);
        let c = update_check("m", &before, &after, &after, &two_agree, &grad, 1e-3);
        assert!(c.passed() && c.worst.contains("2 of 4 elements compared"), "{c:?}");
        // Tensors without a reference gradient (running statistics) are not counted.
        let mut before2 = before.clone();
        before2.push(("running mean".into(), vec![0.0; 100]));
        let mut after2 = after.clone();
        after2.push(("running mean".into(), vec![0.1; 100]));
        let mut grad2 = grad.clone();
        grad2.push(("running mean".into(), Vec::new()));
        let c = update_check("m", &before2, &after2, &after2, &grad2, &grad2, 1e-3);
        assert!(c.passed() && c.worst.contains("4 of 4 elements compared"), "{c:?}");
        // Parameter counts that differ are still their own failure.
        let c = update_check("m", &before2, &after, &after, &grad, &grad, 1e-3);
        assert!(c.error.is_infinite() && c.worst == "parameter count differs", "{c:?}");
    }
}
