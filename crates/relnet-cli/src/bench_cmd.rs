//! `relnet bench pretrain`: pretraining speed, in the PyTorch yardstick's terms.

use std::io::Write;
use std::path::PathBuf;

use anyhow::anyhow;
use clap::Args;
use relnet_core::bench::{BenchConfig, bench_pretrain};

#[derive(Args, Debug)]
pub struct BenchPretrainArgs {
    #[arg(long, default_value = "cifar10")]
    pub dataset: String,
    #[arg(long, value_name = "DIR")]
    pub data_root: Option<PathBuf>,
    #[arg(long, default_value = "conv4")]
    pub backbone: String,
    /// Augmentations per image K.
    #[arg(long, default_value_t = 4)]
    pub k: usize,
    /// Images per mini-batch M.
    #[arg(long, default_value_t = 64)]
    pub batch_size: usize,
    /// bce or focal (the yardstick's default: focal).
    #[arg(long, default_value = "focal")]
    pub loss: String,
    /// Timed steps per part (the yardstick's default: 30).
    #[arg(long, default_value_t = 30)]
    pub steps: usize,
    /// Untimed steps first (the yardstick's default: 5).
    #[arg(long, default_value_t = 5)]
    pub warmup: usize,
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    #[arg(long, default_value = "cpu", env = "RELNET_DEVICE")]
    pub device: String,
    /// Precision of convolutions and linear layers (bf16: mixed precision, fp32 accumulation).
    #[arg(long, value_enum, default_value_t = relnet_models::Precision::Fp32)]
    pub precision: relnet_models::Precision,
}

pub fn pretrain(a: BenchPretrainArgs, out: &mut dyn Write, err: &mut dyn Write) -> anyhow::Result<()> {
    anyhow::ensure!(
        a.k >= 2 && a.batch_size >= 2 && a.steps >= 1,
        "--k and --batch-size must be at least 2, --steps at least 1"
    );
    let cfg = BenchConfig {
        dataset: a.dataset,
        data_root: a.data_root,
        backbone: a.backbone.parse().map_err(|e: String| anyhow!(e))?,
        k: a.k,
        m: a.batch_size,
        loss: a.loss.parse().map_err(|e: String| anyhow!(e))?,
        steps: a.steps,
        warmup: a.warmup,
        seed: a.seed,
        device: a.device.parse().map_err(|e| anyhow!("--device: {e}"))?,
        precision: a.precision,
    };
    writeln!(
        out,
        "relnet bench pretrain: dataset={} backbone={} K={} M={} loss={} steps={} precision={} threads={}",
        cfg.dataset,
        cfg.backbone,
        cfg.k,
        cfg.m,
        cfg.loss,
        cfg.steps,
        cfg.precision,
        rayon::current_num_threads()
    )?;
    let r = bench_pretrain(&cfg, &mut |line: &str| {
        let _ = writeln!(err, "{line}");
    })?;
    write!(out, "{}", r.lines())?;
    Ok(())
}

/// `relnet bench device`: the GPU check. The conformance suite on the device, then pretraining
/// speed (Conv-4 and ResNet-32 at K = 4 and 32, M = 64, on the embedded `synthetic` set: no data
/// and no network needed), as one summary. `cargo xtask gpu-check` builds and runs it;
/// `scripts/gpu-check.sh` runs a binary built elsewhere.
#[derive(Args, Debug)]
pub struct BenchDeviceArgs {
    /// The device to check: cuda, cuda:N, wgpu, wgpu:N (or cpu, ndarray).
    #[arg(long, env = "RELNET_DEVICE")]
    pub device: String,
    /// Timed steps per speed measurement.
    #[arg(long, default_value_t = 10)]
    pub steps: usize,
    /// Untimed steps before each (kernel compilation, autotuning).
    #[arg(long, default_value_t = 3)]
    pub warmup: usize,
    /// Augmentations per image to time (comma-separated).
    #[arg(long, default_value = "4,32", value_delimiter = ',')]
    pub k: Vec<usize>,
    /// Backbones to time (comma-separated).
    #[arg(long, default_value = "conv4,resnet32", value_delimiter = ',')]
    pub backbones: Vec<String>,
    /// Skip the conformance suite (speed only).
    #[arg(long)]
    pub no_conformance: bool,
    /// Write the conformance report and the speeds as JSON into this folder.
    #[arg(long, value_name = "DIR")]
    pub out: Option<PathBuf>,
}

pub fn device_check(a: BenchDeviceArgs, out: &mut dyn Write, err: &mut dyn Write) -> anyhow::Result<()> {
    use relnet_core::conformance;
    let spec: relnet_core::device::DeviceSpec = a.device.parse().map_err(|e| anyhow!("--device: {e}"))?;
    let device = spec.device()?;
    let t0 = std::time::Instant::now();
    writeln!(out, "relnet {} GPU check on {spec} ({})", env!("CARGO_PKG_VERSION"), relnet_core::fsutil::host())?;
    for b in relnet_core::device::backends().iter().filter(|b| b.compiled) {
        writeln!(
            out,
            "  backend {}: {}",
            b.name,
            b.devices.as_ref().map(|d| d.join(", ")).unwrap_or_else(|e| e.clone())
        )?;
    }
    let mut summary = serde_json::json!({ "device": spec.to_string(), "host": relnet_core::fsutil::host() });
    let mut failed = 0;
    if !a.no_conformance {
        let report = conformance::run(&device, &spec.to_string(), &conformance::Options::default(), &mut |s: &str| {
            let _ = writeln!(err, "conformance: {s}");
        })?;
        write!(out, "{}", report.table())?;
        failed = report.failures().len();
        summary["conformance"] = serde_json::to_value(&report)?;
    }
    writeln!(
        out,
        "pretraining speed (relational, M = 64, synthetic data; views/s; {} timed steps after {} warm-up)",
        a.steps, a.warmup
    )?;
    writeln!(out, "  {:<10} {:>3} {:>14} {:>12} {:>12}", "backbone", "K", "augment only", "step only", "end to end")?;
    let mut speeds = Vec::new();
    for b in &a.backbones {
        for &k in &a.k {
            let cfg = BenchConfig {
                dataset: "synthetic".into(),
                data_root: None,
                backbone: b.parse().map_err(|e: String| anyhow!(e))?,
                k,
                m: 64,
                loss: "focal".parse().map_err(|e: String| anyhow!(e))?,
                steps: a.steps,
                warmup: a.warmup,
                seed: 1,
                device: spec,
                precision: relnet_models::Precision::Fp32,
            };
            let r = bench_pretrain(&cfg, &mut |line: &str| {
                let _ = writeln!(err, "{b} K={k}: {line}");
            })?;
            writeln!(
                out,
                "  {:<10} {:>3} {:>14.1} {:>12.1} {:>12.1}",
                b, k, r.augment_only, r.step_only, r.end_to_end
            )?;
            speeds.push(serde_json::json!({ "backbone": b, "k": k, "m": 64, "augment_only": r.augment_only, "step_only": r.step_only, "end_to_end": r.end_to_end }));
        }
    }
    summary["speed"] = serde_json::Value::Array(speeds);
    summary["seconds"] = serde_json::json!(t0.elapsed().as_secs_f64());
    if let Some(dir) = &a.out {
        std::fs::create_dir_all(dir)?;
        let path = dir.join("gpu-check.json");
        relnet_core::fsutil::write_atomic(&path, serde_json::to_string_pretty(&summary)?.as_bytes())?;
        writeln!(out, "written: {}", path.display())?;
    }
    writeln!(
        out,
        "GPU check finished in {:.0} s: conformance {}",
        t0.elapsed().as_secs_f64(),
        if a.no_conformance {
            "skipped".to_string()
        } else if failed == 0 {
            "passed".to_string()
        } else {
            format!("FAILED ({failed} checks)")
        }
    )?;
    anyhow::ensure!(failed == 0, "{failed} conformance check(s) failed on {spec}");
    Ok(())
}
