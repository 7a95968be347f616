//! A method, an evaluator, a backbone and a dataset defined in this crate, outside relnet, run through
//! everything relnet offers its own: flags and help, pretraining with checkpoints, evaluation and
//! its record, a grid cell and its report, and the backend-conformance suite.

use std::path::Path;

use relnet_core::conformance::{self, Options};
use relnet_core::device::DeviceSpec;
use relnet_models::BackboneKind;

struct Out {
    code: u8,
    stdout: String,
    stderr: String,
}

fn relnet(args: &[&str]) -> Out {
    relnet_toy::register();
    let (mut out, mut err) = (Vec::new(), Vec::new());
    let code = relnet_cli::run(std::iter::once("relnet").chain(args.iter().copied()), &mut out, &mut err);
    Out { code, stdout: String::from_utf8_lossy(&out).into(), stderr: String::from_utf8_lossy(&err).into() }
}

fn value(stdout: &str, key: &str) -> f64 {
    let prefix = format!("{key}=");
    stdout
        .lines()
        .find_map(|l| l.strip_prefix(&prefix))
        .unwrap_or_else(|| panic!("no {key} in {stdout}"))
        .parse()
        .unwrap()
}

/// Every file named `name` under `dir`.
fn walk(dir: &Path, name: &str) -> Vec<std::path::PathBuf> {
    let mut found = Vec::new();
    for e in std::fs::read_dir(dir).unwrap() {
        let path = e.unwrap().path();
        if path.is_dir() {
            found.extend(walk(&path, name));
        } else if path.file_name().is_some_and(|n| n == name) {
            found.push(path);
        }
    }
    found
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

#[test]
fn the_toy_method_has_its_own_flags_and_help() {
    let r = relnet(&["pretrain", "--method", "toy-mvc", "--help"]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert!(
        r.stdout.contains("Options of the toy-mvc method")
            && r.stdout.contains("Pretraining with relational reasoning"),
        "{}",
        r.stdout
    );
    // `--temperature` is also SimCLR's and `--k` relational reasoning's: each method has its own.
    assert!(r.stdout.contains("--temperature") && r.stdout.contains("--k"), "{}", r.stdout);
    assert!(!r.stdout.contains("--aggregation"), "only the chosen method's flags: {}", r.stdout);
    // The registered backbone is a `--backbone` value like relnet's own.
    assert!(r.stdout.contains("conv4") && r.stdout.contains("toy-cnn"), "{}", r.stdout);
    let r = relnet(&["pretrain", "--method", "simclr", "--help"]);
    assert!(r.stdout.contains("--temperature") && r.stdout.contains("--simclr-loss"), "{}", r.stdout);
    // A flag of another method is refused, naming the method that has it.
    let r = relnet(&["pretrain", "--method", "toy-mvc", "--aggregation", "sum"]);
    assert_ne!(r.code, 0);
    assert!(
        r.stderr.contains("--aggregation") && r.stderr.contains("relational") && r.stderr.contains("toy-mvc"),
        "{}",
        r.stderr
    );
    // Its options are validated by key.
    let r = relnet(&["pretrain", "--method", "toy-mvc", "--temperature", "0", "--dataset", "stripes"]);
    assert_ne!(r.code, 0);
    assert!(r.stderr.contains("`temperature`") && r.stderr.contains("out of range"), "{}", r.stderr);
    // The dataset is listed with relnet's own.
    let r = relnet(&["data", "list"]);
    assert!(r.stdout.lines().any(|l| l.starts_with("stripes") && l.contains("4 classes")), "{}", r.stdout);
}

#[test]
fn pretrain_evaluate_grid_and_report() {
    let dir = tempfile::tempdir().unwrap();
    let pre = dir.path().join("toy");
    let r = relnet(&[
        "pretrain",
        "--method",
        "toy-mvc",
        "--backbone",
        "toy-cnn",
        "--dataset",
        "stripes",
        "--epochs",
        "2",
        "--k",
        "3",
        "--temperature",
        "0.3",
        "--out",
        s(&pre),
    ]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    let config = std::fs::read_to_string(pre.join("config.toml")).unwrap();
    assert!(
        config.contains("kind = \"toy-mvc\"")
            && config.contains("k = 3")
            && config.contains("temperature = 0.3")
            && config.contains("backbone = \"toy-cnn\""),
        "{config}"
    );
    // The shared loop wrote its metrics and checkpoints; the same run resumes as finished.
    let metrics = std::fs::read_to_string(pre.join("metrics.jsonl")).unwrap();
    assert_eq!(metrics.lines().count(), 2, "{metrics}");
    let r = relnet(&["pretrain", "--config", s(&pre.join("config.toml")), "--resume"]);
    assert_eq!(r.code, 0, "{}", r.stderr);

    let rnd = dir.path().join("random");
    let r =
        relnet(&["pretrain", "--method", "random", "--backbone", "toy-cnn", "--dataset", "stripes", "--out", s(&rnd)]);
    assert_eq!(r.code, 0, "{}", r.stderr);

    let eval = |backbone: &Path| {
        let r = relnet(&["eval", "centroid", "--backbone", s(&backbone.join("backbone.bpk")), "--dataset", "stripes"]);
        assert_eq!(r.code, 0, "{}", r.stderr);
        value(&r.stdout, "test_accuracy")
    };
    let (trained, random) = (eval(&pre), eval(&rnd));
    eprintln!("centroid accuracy on stripes: toy-mvc {trained:.2}%, random weights {random:.2}%");
    // Random conv features already separate stripe directions well (68% here, chance 25%); two
    // epochs of toy-mvc on toy-cnn measured 82%. A method whose loss taught nothing stays at the
    // random weights' level, which ten points above them excludes.
    assert!(trained > random + 10.0, "toy-mvc {trained}% vs random weights {random}%");
    // relnet's own evaluators work on the registered dataset too.
    let r = relnet(&["eval", "knn", "--backbone", s(&pre.join("backbone.bpk")), "--dataset", "stripes"]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    let r = relnet(&["results", s(&pre)]);
    assert!(r.stdout.contains("centroid") && r.stdout.contains("knn"), "{}", r.stdout);

    // A one-cell grid of the toy method with the toy protocol, and its report.
    let grid = dir.path().join("grid.toml");
    std::fs::write(
        &grid,
        r#"schema = 1

[protocols.centroid]
order = 1
title = "Nearest class centroid"
evaluator = "centroid"

[profiles.toy]
description = "the toy method on stripes"
seeds = [1]
pretrain = { epochs = 1 }
method.toy-mvc = { k = 2 }

[[profiles.toy.experiments]]
name = "toy"
methods = ["toy-mvc"]
backbones = ["toy-cnn"]
datasets = ["stripes"]
protocols = ["centroid"]
"#,
    )
    .unwrap();
    let results = dir.path().join("results");
    let r = relnet(&["reproduce", "--grid", s(&grid), "--profile", "toy", "--results", s(&results)]);
    assert_eq!(r.code, 0, "{}\n{}", r.stdout, r.stderr);
    let report = std::fs::read_to_string(results.join("report.md")).unwrap();
    assert!(report.contains("Nearest class centroid") && report.contains("Toy multi-view contrast"), "{report}");
    let manifests = walk(&results, "cell.json");
    assert_eq!(manifests.len(), 1, "{manifests:?}");
    let cell = std::fs::read_to_string(&manifests[0]).unwrap();
    assert!(cell.contains("\"toy-cnn\"") && cell.contains("\"status\": \"done\""), "{cell}");
}

#[test]
fn the_toy_method_and_backbone_pass_the_conformance_suite() {
    relnet_toy::register();
    let device = DeviceSpec::Cpu.device().unwrap();
    let toy_cnn: BackboneKind = "toy-cnn".parse().unwrap();
    let opts = Options {
        backbones: vec![toy_cnn],
        method_backbone: toy_cnn,
        methods: Some(vec!["toy-mvc".into()]),
        ..Options::default()
    };
    let report = conformance::run(&device, "cpu", &opts, &mut |_: &str| {}).unwrap();
    eprintln!("{}", report.table());
    let names: Vec<&str> = report.checks.iter().map(|c| c.name.as_str()).collect();
    // toy-cnn: its spec, forward output, input and parameter gradients, two artifact round trips;
    // toy-mvc: loss, gradients and update.
    assert_eq!(names.len(), 9, "{names:?}");
    assert_eq!(names.iter().filter(|n| n.starts_with("toy-cnn")).count(), 6, "{names:?}");
    assert_eq!(names.iter().filter(|n| n.starts_with("toy-mvc")).count(), 3, "{names:?}");
    assert!(report.failures().is_empty(), "{}", report.table());
}

#[test]
fn a_backbone_whose_spec_is_wrong_is_refused_and_fails_the_conformance_suite() {
    use relnet_models::backbone::{BackboneEntry, BackboneSpec, register};
    use relnet_toy::backbone::{SPEC, entry};
    relnet_toy::register();
    let refused = |spec: BackboneSpec, first_map: usize| {
        let e = register(BackboneEntry { spec, first_map, ..entry() }).unwrap_err();
        e.to_string()
    };
    let named = |name: &'static str| BackboneSpec { name, ..SPEC };
    assert!(refused(SPEC, 1).contains("already registered"));
    assert!(refused(named("conv4"), 1).contains("already registered"));
    assert!(refused(named("../x"), 1).contains("one word"));
    let e = refused(BackboneSpec { features: 64, ..named("t1") }, 1);
    assert!(e.contains("final map is 32x") && e.contains("64 features"), "{e}");
    let e = refused(BackboneSpec { first_channels: 16, ..named("t2") }, 1);
    assert!(e.contains("layer 1 gives 8 channels"), "{e}");
    let e = refused(BackboneSpec { reference_params: 6_000, ..named("t3") }, 1);
    assert!(e.contains("6088 trainable parameters"), "{e}");
    let e = refused(named("t4"), 8);
    assert!(e.contains("first_map 8 is not one of its 8 layers"), "{e}");
    // Two 2x2 poolings of a 3x3 image leave nothing.
    let e = refused(BackboneSpec { min_side: 3, ..named("t5") }, 1);
    assert!(e.contains("fail on 3x3 RGB images") && e.contains("larger than the padded input"), "{e}");

    // The conformance suite checks the spec of any backbone it is given, registered or not.
    let wrong = BackboneSpec { features: 64, ..named("toy-cnn-misdeclared") };
    let kind = BackboneKind::Registered(Box::leak(Box::new(BackboneEntry { spec: wrong, ..entry() })));
    let opts = Options { backbones: vec![kind], methods: Some(Vec::new()), ..Options::default() };
    let report = conformance::run(&DeviceSpec::Cpu.device().unwrap(), "cpu", &opts, &mut |_: &str| {}).unwrap();
    assert_eq!(report.checks.len(), 1, "only the spec check, the others need a true spec: {}", report.table());
    assert!(!report.checks[0].passed() && report.table().contains("features: 32 (declared 64)"), "{}", report.table());
}

#[test]
fn nothing_inside_relnet_names_the_toy_crate() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../crates");
    let mut stack = vec![root];
    let mut checked = 0;
    while let Some(p) = stack.pop() {
        for e in std::fs::read_dir(&p).unwrap() {
            let path = e.unwrap().path();
            if path.is_dir() {
                stack.push(path);
            } else if path.extension().is_some_and(|x| x == "rs" || x == "toml") {
                let text = std::fs::read_to_string(&path).unwrap();
                checked += 1;
                for needle in
                    ["toy-mvc", "ToyMvc", "toy-cnn", "CentroidOptions", "\"stripes\"", "relnet_toy", "relnet-toy"]
                {
                    assert!(!text.contains(needle), "{} names {needle}", path.display());
                }
            }
        }
    }
    assert!(checked > 50, "read {checked} files");
}
