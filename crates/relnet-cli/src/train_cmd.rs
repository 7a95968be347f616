//! `relnet pretrain` and `relnet eval linear`.

use std::io::Write;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use anyhow::anyhow;
use clap::Args;
use relnet_core::config;
use relnet_core::pretrain::{Outcome, PretrainConfig, pretrain};
use relnet_eval::{LinearConfig, linear_probe};

use crate::flags::Flags;

/// Flags of `relnet pretrain`; each overrides the same key of `--config`.
#[derive(Args, Debug)]
pub struct PretrainArgs {
    /// TOML file with any of the keys below (written resolved to <out>/config.toml).
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// relational (default), simclr, rotation, deepcluster, deepinfomax, supervised (upper bound,
    /// uses labels) or random (the initialised backbone, the lower bound).
    #[arg(long)]
    pub method: Option<String>,
    /// Dataset name (see `relnet data list`); default synthetic.
    #[arg(long)]
    pub dataset: Option<String>,
    /// Folder holding the datasets (default: $RELNET_DATA, else ./data).
    #[arg(long, value_name = "DIR")]
    pub data_root: Option<PathBuf>,
    /// conv4, resnet8, resnet32, resnet56 or resnet34.
    #[arg(long)]
    pub backbone: Option<String>,
    /// Augmentations per image K, relational only (default 32; 4 on synthetic).
    #[arg(long)]
    pub k: Option<usize>,
    /// Images per mini-batch M (default 64 for relational, 128 for the other methods).
    #[arg(long)]
    pub batch_size: Option<usize>,
    /// Relation loss: bce or focal (default focal, as the reference code).
    #[arg(long)]
    pub loss: Option<String>,
    /// Relation aggregation: cat, sum, mean or max (default cat).
    #[arg(long)]
    pub aggregation: Option<String>,
    /// SimCLR NT-Xent temperature (default 0.5).
    #[arg(long)]
    pub temperature: Option<f64>,
    /// SimCLR loss form: log-mean (default, the reference code's) or mean-log (standard).
    #[arg(long, value_name = "FORM")]
    pub simclr_loss: Option<String>,
    /// Deep InfoMax prior term: joint (default, the reference's) or adversarial (DIM paper).
    #[arg(long, value_name = "MODE")]
    pub dim_prior: Option<String>,
    /// DeepCluster class weights: reference (default, 1 - count/N) or inverse (N / (k count)).
    #[arg(long, value_name = "RULE")]
    pub cluster_weights: Option<String>,
    /// DeepCluster k-means restarts (default 5).
    #[arg(long, value_name = "N")]
    pub kmeans_restarts: Option<usize>,
    /// Epochs (default 200; 3 on synthetic).
    #[arg(long)]
    pub epochs: Option<usize>,
    /// Learning rate (default: Adam 1e-3; deepinfomax 1e-4; supervised SGD 0.1).
    #[arg(long)]
    pub lr: Option<f64>,
    /// Seed of initialisation, data order and augmentations (default 1).
    #[arg(long)]
    pub seed: Option<u64>,
    /// Run directory: config.toml, metrics.jsonl, checkpoint/, backbone.bpk.
    #[arg(long, value_name = "DIR")]
    pub out: Option<PathBuf>,
    /// Use only N images of the pretraining split, drawn at random (fixed by --seed).
    #[arg(long, value_name = "N")]
    pub limit_images: Option<usize>,
    /// cpu, cuda or cuda:N.
    #[arg(long)]
    pub device: Option<String>,
    /// Continue the run in --out from its last checkpoint.
    #[arg(long)]
    pub resume: bool,
}

#[derive(Args, Debug)]
pub struct LinearArgs {
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Backbone artifact (backbone.bpk of a pretraining run).
    #[arg(long, value_name = "FILE")]
    pub backbone: Option<PathBuf>,
    #[arg(long)]
    pub dataset: Option<String>,
    #[arg(long, value_name = "DIR")]
    pub data_root: Option<PathBuf>,
    /// Probe epochs (default 100).
    #[arg(long)]
    pub epochs: Option<usize>,
    /// Mini-batch (default 128).
    #[arg(long)]
    pub batch_size: Option<usize>,
    #[arg(long)]
    pub lr: Option<f64>,
    #[arg(long)]
    pub seed: Option<u64>,
    #[arg(long)]
    pub device: Option<String>,
}

static STOP: std::sync::OnceLock<Arc<AtomicBool>> = std::sync::OnceLock::new();

/// A flag set by Ctrl-C (installed once per process).
fn stop_flag() -> Arc<AtomicBool> {
    STOP.get_or_init(|| {
        let flag = Arc::new(AtomicBool::new(false));
        let f = flag.clone();
        let _ = ctrlc::set_handler(move || {
            if f.swap(true, Ordering::SeqCst) {
                eprintln!("second Ctrl-C: exiting without a checkpoint");
                std::process::exit(130);
            }
            eprintln!("Ctrl-C: finishing this step and saving a checkpoint (press again to quit at once)");
        });
        flag
    })
    .clone()
}

pub fn pretrain_cmd(a: PretrainArgs, out: &mut dyn Write, err: &mut dyn Write) -> anyhow::Result<()> {
    let mut f = Flags::default();
    f.set("method", a.method);
    f.set("dataset", a.dataset);
    f.path("data_root", a.data_root);
    f.set("backbone", a.backbone);
    f.int("k", a.k);
    f.int("batch_size", a.batch_size);
    f.set("loss", a.loss);
    f.set("aggregation", a.aggregation);
    f.set("temperature", a.temperature);
    f.set("simclr_loss", a.simclr_loss);
    f.set("dim_prior", a.dim_prior);
    f.set("cluster_weights", a.cluster_weights);
    f.int("kmeans_restarts", a.kmeans_restarts);
    f.int("epochs", a.epochs);
    f.set("lr", a.lr);
    f.int("seed", a.seed);
    f.path("out", a.out);
    f.int("limit_images", a.limit_images);
    f.set("device", a.device);
    let cfg: PretrainConfig = config::resolve(a.config.as_deref(), f.0)?;
    let cfg = cfg.resolved();
    writeln!(err, "# relnet pretrain, resolved config\n{}", config::to_toml(&cfg))?;
    let stop = stop_flag();
    let outcome = pretrain(&cfg, a.resume, stop, &mut |line: &str| {
        let _ = writeln!(err, "{line}");
    })
    .map_err(|e| anyhow!(e))?;
    match outcome {
        Outcome::Finished { backbone } => writeln!(out, "backbone={}", backbone.display())?,
        Outcome::Interrupted { epoch, batch } => {
            writeln!(out, "interrupted at epoch {} batch {batch}; resume with --resume", epoch + 1)?;
            anyhow::bail!("interrupted");
        }
    }
    Ok(())
}

pub fn linear_cmd(a: LinearArgs, out: &mut dyn Write, err: &mut dyn Write) -> anyhow::Result<()> {
    let mut f = Flags::default();
    f.path("backbone", a.backbone);
    f.set("dataset", a.dataset);
    f.path("data_root", a.data_root);
    f.int("epochs", a.epochs);
    f.int("batch_size", a.batch_size);
    f.set("lr", a.lr);
    f.int("seed", a.seed);
    f.set("device", a.device);
    let cfg: LinearConfig = config::resolve(a.config.as_deref(), f.0)?;
    writeln!(err, "# relnet eval linear, resolved config\n{}", config::to_toml(&cfg))?;
    let r = linear_probe(&cfg, &mut |line: &str| {
        let _ = writeln!(err, "{line}");
    })
    .map_err(|e| anyhow!(e))?;
    writeln!(out, "train_accuracy={:.2}", r.train_accuracy)?;
    writeln!(out, "test_accuracy={:.2}", r.test_accuracy)?;
    Ok(())
}
