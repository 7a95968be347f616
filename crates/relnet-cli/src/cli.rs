//! Command-line definitions.

use std::io::Write;
use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};
use relnet_core::device::DeviceSpec;

#[derive(Parser, Debug)]
#[command(
    name = "relnet",
    version,
    about = "Self-supervised relational reasoning (Patacchiola & Storkey, NeurIPS 2020) and baselines, on burn",
    long_about = "relnet learns image representations without labels by self-supervised relational reasoning, \
runs the paper's baselines beside it and evaluates them.\n\n\
Datasets are looked for under the data root: --data-root, else $RELNET_DATA, else ./data. \
The `synthetic` dataset is generated in memory and needs no download."
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Datasets: list, inspect, download, preview.
    #[command(subcommand)]
    Data(DataCommand),
    /// Pretraining with relational reasoning or a baseline method, writing a backbone artifact.
    Pretrain(crate::train_cmd::PretrainArgs),
    /// Evaluate a backbone: linear, knn, finetune, retrieval or embed; each writes a result record.
    Eval(crate::train_cmd::EvalArgs),
    /// Figures: t-SNE of features, training curves of runs.
    #[command(subcommand)]
    Plot(crate::plot_cmd::PlotCommand),
    /// The paper's experiment grid in one command: `--profile paper|cpu|smoke`, resumable;
    /// `--dry-run` lists the cells, `--launcher slurm` writes a job-array script.
    Reproduce(crate::reproduce_cmd::ReproduceArgs),
    /// Render a results directory of `relnet reproduce` as Markdown and CSV tables beside the
    /// paper's values, with figures.
    Report(crate::reproduce_cmd::ReportArgs),
    /// Print the result records under a folder as a table, each verified against its checksum
    /// (exit status 1 when one was edited after it was written or does not read).
    Results {
        /// A run folder, a results/ folder, a tree of runs (searched recursively), or one record file.
        #[arg(default_value = "runs")]
        dir: PathBuf,
    },
    /// List the backends and devices of this build, check one (`--device cuda:0`), or run the
    /// backend-conformance suite on it (`--conformance`).
    Device(DeviceArgs),
    /// Speed measurements.
    #[command(subcommand)]
    Bench(BenchCommand),
}

#[derive(Subcommand, Debug)]
pub enum BenchCommand {
    /// Relational pretraining throughput: augment-only, step-only and end-to-end views/s and peak
    /// memory, as ../shared/bench/torch_reference.py prints them.
    Pretrain(crate::bench_cmd::BenchPretrainArgs),
    /// The GPU check: the backend-conformance suite on a device, then pretraining speed
    /// (Conv-4 and ResNet-32, K = 4 and 32, M = 64) on the embedded synthetic data, as one summary.
    Device(crate::bench_cmd::BenchDeviceArgs),
}

/// Where datasets live.
#[derive(Args, Debug, Clone)]
pub struct DataRootArg {
    /// Folder holding the datasets (default: $RELNET_DATA, else ./data).
    #[arg(long, value_name = "DIR")]
    pub data_root: Option<PathBuf>,
}

#[derive(Subcommand, Debug)]
pub enum DataCommand {
    /// List the registered datasets and whether each is found under the data root.
    List(DataRootArg),
    /// Print splits, counts, image size, classes and per-channel mean/std computed from the data.
    Info {
        /// Dataset name (see `relnet data list`), e.g. cifar10, mnist, synthetic, folder:/path.
        name: String,
        /// Only these splits (default: all of the dataset's splits).
        #[arg(long = "split", value_name = "SPLIT")]
        splits: Vec<String>,
        #[command(flatten)]
        root: DataRootArg,
    },
    /// Fetch a dataset's official archive into the data root (needs internet).
    Download {
        name: String,
        /// Base URL used instead of the official host (a local mirror or file:///dir).
        #[arg(long, env = "RELNET_DOWNLOAD_MIRROR", value_name = "URL")]
        mirror: Option<String>,
        /// Do not check the files against the dataset's published MD5 (only for a repacked local
        /// copy served by --mirror; official files are always checked otherwise).
        #[arg(long)]
        skip_checksum: bool,
        #[command(flatten)]
        root: DataRootArg,
    },
    /// Write a PNG grid of sample images, one row per class (at most 20 rows).
    Preview(crate::data_cmd::PreviewArgs),
}

#[derive(Args, Debug)]
pub struct DeviceArgs {
    /// The device to check: cpu, ndarray, cuda, cuda:N, wgpu or wgpu:N (backends other than cpu
    /// are cargo features). Without it (and without --conformance): list what this build offers.
    #[arg(long, env = "RELNET_DEVICE")]
    pub device: Option<DeviceSpec>,
    /// Run the backend-conformance suite on the device against the CPU reference: every
    /// backbone's forward and backward, one step of every method, artifacts across backends.
    /// Exits non-zero when a check fails.
    #[arg(long)]
    pub conformance: bool,
    /// Relative error allowed by the conformance suite (default 1e-3).
    #[arg(long, requires = "conformance")]
    pub tolerance: Option<f64>,
    /// Also write the conformance report as JSON to this file.
    #[arg(long, requires = "conformance")]
    pub json: Option<PathBuf>,
    /// The backbones the conformance suite checks (comma-separated; default: conv4, resnet8,
    /// resnet32, resnet34 and every registered backbone). A slow device (a software rasterizer)
    /// may take fewer.
    #[arg(long, requires = "conformance", value_delimiter = ',')]
    pub backbones: Option<Vec<String>>,
    /// The backbone under every method's training step in the conformance suite (default conv4).
    #[arg(long, requires = "conformance", value_name = "BACKBONE")]
    pub method_backbone: Option<String>,
}

pub fn dispatch(cli: Cli, out: &mut dyn Write, err: &mut dyn Write) -> anyhow::Result<()> {
    match cli.command {
        Command::Data(d) => crate::data_cmd::run(d, out, err),
        Command::Device(a) => crate::device_cmd::run(a, out, err),
        Command::Pretrain(a) => crate::train_cmd::pretrain_cmd(a, out, err),
        Command::Eval(a) => crate::train_cmd::eval_cmd(a, out, err),
        Command::Plot(p) => crate::plot_cmd::run(p, out, err),
        Command::Reproduce(a) => crate::reproduce_cmd::reproduce(a, out, err),
        Command::Report(a) => crate::reproduce_cmd::report_cmd(a, out),
        Command::Results { dir } => crate::train_cmd::results_cmd(dir, out),
        Command::Bench(BenchCommand::Pretrain(a)) => crate::bench_cmd::pretrain(a, out, err),
        Command::Bench(BenchCommand::Device(a)) => crate::bench_cmd::device_check(a, out, err),
    }
}
