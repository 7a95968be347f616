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
}

pub fn pretrain(a: BenchPretrainArgs, out: &mut dyn Write, err: &mut dyn Write) -> anyhow::Result<()> {
    anyhow::ensure!(a.k >= 2 && a.batch_size >= 2 && a.steps >= 1, "--k and --batch-size must be at least 2, --steps at least 1");
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
    };
    writeln!(out, "relnet bench pretrain: dataset={} backbone={} K={} M={} loss={} steps={} threads={}", cfg.dataset, cfg.backbone, cfg.k, cfg.m, cfg.loss, cfg.steps, rayon::current_num_threads())?;
    let r = bench_pretrain(&cfg, &mut |line: &str| {
        let _ = writeln!(err, "{line}");
    })
    ?;
    write!(out, "{}", r.lines())?;
    Ok(())
}
