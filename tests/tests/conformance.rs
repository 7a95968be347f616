//! The backend-conformance suite (relnet_core::conformance) on the backends CI has:
//! burn-flex with burn's own operations, and burn-ndarray, each against burn-flex with relnet's
//! operations. `relnet device --device NAME --conformance` runs the same suite on any device a
//! build offers (cuda, wgpu: docs/backends.md).

use relnet_core::conformance::{self, Options};
use relnet_core::device::DeviceSpec;

/// burn's random generator is one per process and parameters are drawn lazily: one suite at a
/// time.
static ONE: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn suite(spec: DeviceSpec) {
    let _one = ONE.lock().unwrap_or_else(|e| e.into_inner());
    let device = spec.device().expect("device");
    let report = conformance::run(&device, &spec.to_string(), &Options::default(), &mut |s: &str| eprintln!("{s}"))
        .expect("suite runs");
    eprintln!("{}", report.table());
    // CI prints the tables from here (.ci/run) rather than running the suite again.
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/conformance");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join(format!("{spec}.txt")), report.table()).unwrap();
    // Every backbone, every method but `random` (it trains nothing), in every group.
    assert!(report.checks.iter().filter(|c| c.group == "backbone").count() >= 12, "{}", report.table());
    assert_eq!(
        report.checks.iter().filter(|c| c.group == "method").count(),
        3 * (relnet_core::methods::names().len() - 1)
    );
    assert!(report.checks.iter().any(|c| c.group == "artifact"));
    assert!(report.failures().is_empty(), "{}", report.table());
    // The target really ran other operations than the reference: not bit-identical everywhere.
    assert!(report.checks.iter().any(|c| c.error > 0.0), "{}", report.table());
}

#[test]
fn conformance_flex_with_burns_operations() {
    suite(DeviceSpec::Cpu);
}

#[test]
fn conformance_ndarray() {
    suite(DeviceSpec::Ndarray);
}

#[test]
fn a_wrong_result_fails_the_suite() {
    // The suite's own comparison, on tensors a broken kernel would give (one value off by 1%).
    let r = vec![("x".to_string(), vec![1.0f32, 2.0, 3.0])];
    let t = vec![("x".to_string(), vec![1.0f32, 2.0, 3.03])];
    for metric in [conformance::Metric::MaxRelative, conformance::Metric::L2Relative] {
        let (e, _) = conformance::relative_error(&t, &r, metric);
        assert!(e > conformance::DEFAULT_TOLERANCE, "{metric:?}: {e}");
    }
}
