//! `relnet device`: what this build and machine offer, a check of one device, and the
//! backend-conformance suite against the CPU reference.

use std::io::Write;

use crate::cli::DeviceArgs;
use relnet_core::conformance;

pub fn run(args: DeviceArgs, out: &mut dyn Write, err: &mut dyn Write) -> anyhow::Result<()> {
    if args.device.is_none() && !args.conformance {
        writeln!(out, "backends of this build (pick one with --device; a missing one is a cargo feature away):")?;
        for b in relnet_core::device::backends() {
            let how = match b.feature {
                None => "always built".to_string(),
                Some(f) if b.compiled => format!("feature `{f}`"),
                Some(f) => format!("not built: `cargo build --release --features {f}`"),
            };
            let devices = match &b.devices {
                Ok(d) if d.is_empty() => "no device found on this machine".to_string(),
                Ok(d) => d.join(", "),
                Err(e) => e.clone(),
            };
            writeln!(out, "  {:<36} {:<52} {}", b.name, how, if b.compiled { devices } else { String::new() })?;
        }
        writeln!(
            out,
            "check one: relnet device --device NAME; compare it with the CPU: relnet device --device NAME --conformance"
        )?;
        return Ok(());
    }
    let spec = args.device.unwrap_or_default();
    let device = spec.device()?;
    let t = burn::tensor::Tensor::<2>::ones([64, 64], &device);
    let sum: f32 = t.clone().matmul(t).sum().into_scalar::<f32>();
    anyhow::ensure!(sum == 64.0 * 64.0 * 64.0, "device {spec} computed a wrong result ({sum})");
    writeln!(out, "device {spec} ok")?;
    if args.conformance {
        let mut opts = conformance::Options::default();
        if let Some(t) = args.tolerance {
            opts.tolerance = t;
        }
        if let Some(b) = &args.backbones {
            opts.backbones =
                b.iter().map(|s| s.parse().map_err(|e: String| anyhow::anyhow!(e))).collect::<anyhow::Result<_>>()?;
        }
        if let Some(b) = &args.method_backbone {
            opts.method_backbone = b.parse().map_err(|e: String| anyhow::anyhow!(e))?;
        }
        let report = conformance::run(&device, &spec.to_string(), &opts, &mut |s: &str| {
            let _ = writeln!(err, "conformance: {s}");
        })?;
        write!(out, "{}", report.table())?;
        if let Some(path) = &args.json {
            let text = serde_json::to_string_pretty(&report)?;
            relnet_core::fsutil::write_atomic(path, text.as_bytes())?;
        }
        let failed = report.failures().len();
        anyhow::ensure!(failed == 0, "{failed} conformance check(s) failed on {spec}");
    }
    Ok(())
}
