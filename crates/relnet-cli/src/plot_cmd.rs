//! `relnet plot tsne` and `relnet plot metrics`.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Instant;

use clap::{Args, Subcommand};
use rand::SeedableRng;
use relnet_core::data::registry::Split;
use relnet_core::device::DeviceSpec;
use relnet_eval::embed::read_embeddings;
use relnet_eval::plot::tsne::{TsneSettings, scatter_png, tsne_2d};
use relnet_eval::{EvalConfig, EvalContext};

use crate::train_cmd::{CliError, Progress, stop_flag};

#[derive(Subcommand, Debug)]
pub enum PlotCommand {
    /// 2-D t-SNE of frozen features, a scatter plot coloured by class with a legend. Reads an
    /// embeddings file of `relnet eval embed`, or computes (and caches) the features of
    /// --backbone on --dataset.
    Tsne(TsneArgs),
    /// Loss and the method's accuracy per epoch (and the kNN monitor when recorded) of one or
    /// more runs, on one figure.
    Metrics(MetricsArgs),
}

#[derive(Args, Debug)]
pub struct TsneArgs {
    /// An embeddings file (`relnet eval embed`); or give --backbone and --dataset.
    #[arg(value_name = "FEATURES.safetensors", required_unless_present = "backbone", conflicts_with = "backbone")]
    pub features: Option<PathBuf>,
    /// Backbone artifact whose features are plotted.
    #[arg(long, value_name = "FILE", requires = "dataset")]
    pub backbone: Option<PathBuf>,
    /// Dataset of --backbone's features.
    #[arg(long)]
    pub dataset: Option<String>,
    /// Split of --backbone's features.
    #[arg(long, default_value = "test")]
    pub split: Split,
    /// Folder holding the datasets (default: $RELNET_DATA, else ./data).
    #[arg(long, value_name = "DIR")]
    pub data_root: Option<PathBuf>,
    /// Plot at most N points, drawn at random with the seed.
    #[arg(long, value_name = "N", default_value_t = 10_000)]
    pub limit: usize,
    /// t-SNE perplexity.
    #[arg(long, default_value_t = 30.0)]
    pub perplexity: f32,
    /// Gradient-descent iterations.
    #[arg(long, default_value_t = 1000)]
    pub iterations: usize,
    /// Seed of the subsample and the initial layout.
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// Threads of the optimisation (default: all cores). With 1 the layout is bit-identical
    /// from run to run; with more, parallel float sums move points slightly between runs.
    #[arg(long, value_name = "N")]
    pub threads: Option<usize>,
    /// Compute device of the feature pass.
    #[arg(long, default_value_t = DeviceSpec::Cpu, env = "RELNET_DEVICE")]
    pub device: DeviceSpec,
    /// Output PNG (default: beside the input, `tsne-<dataset>-<split>.png`).
    #[arg(long, value_name = "FILE.png")]
    pub out: Option<PathBuf>,
}

#[derive(Args, Debug)]
pub struct MetricsArgs {
    /// Run folders (each with a metrics.jsonl).
    #[arg(required = true, value_name = "RUN_DIR")]
    pub runs: Vec<PathBuf>,
    /// Output PNG (default: <first run>/metrics.png).
    #[arg(long, value_name = "FILE.png")]
    pub out: Option<PathBuf>,
}

pub fn run(c: PlotCommand, out: &mut dyn Write, err: &mut dyn Write) -> anyhow::Result<()> {
    match c {
        PlotCommand::Tsne(a) => tsne(a, out, err),
        PlotCommand::Metrics(a) => {
            let dest = a.out.clone().unwrap_or_else(|| a.runs[0].join("metrics.png"));
            let runs = relnet_eval::plot::metrics::plot_runs(&a.runs, &dest).map_err(CliError::from)?;
            for r in &runs {
                writeln!(
                    err,
                    "{}: {} epochs{}",
                    r.name,
                    r.epochs.len(),
                    if r.monitor.is_empty() {
                        String::new()
                    } else {
                        format!(", {} kNN monitor points", r.monitor.len())
                    }
                )?;
            }
            writeln!(out, "{}", dest.display())?;
            Ok(())
        }
    }
}

fn tsne(a: TsneArgs, out: &mut dyn Write, err: &mut dyn Write) -> anyhow::Result<()> {
    let (features, names, dataset, split, default_dir) = match (&a.features, &a.backbone) {
        (Some(file), _) => {
            let (f, meta) = read_embeddings(file).map_err(CliError::from)?;
            let dir = file.parent().map_or(PathBuf::from("."), Path::to_path_buf);
            let dataset = if meta.dataset.is_empty() { "features".to_string() } else { meta.dataset };
            (f, meta.class_names, dataset, meta.split, dir)
        }
        (None, Some(backbone)) => {
            let dataset = a.dataset.clone().unwrap_or_default();
            let cfg = EvalConfig {
                backbone: backbone.clone(),
                dataset: dataset.clone(),
                data_root: a.data_root.clone(),
                seed: a.seed,
                device: a.device,
                ..Default::default()
            };
            let mut progress = Progress::new(err);
            let mut ctx = EvalContext::new(&cfg, stop_flag(), &mut progress).map_err(CliError::from)?;
            let f = ctx.features(a.split).map_err(CliError::from)?;
            let names = ctx.class_names().to_vec();
            let dir = relnet_eval::artifact_dir(backbone).to_path_buf();
            (f, names, dataset, a.split.as_str().to_string(), dir)
        }
        (None, None) => anyhow::bail!("give an embeddings file or --backbone and --dataset"),
    };
    let features = if features.n > a.limit {
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(a.seed ^ 0x75_4E);
        let mut idx = rand::seq::index::sample(&mut rng, features.n, a.limit).into_vec();
        idx.sort_unstable();
        features.subset(&idx)
    } else {
        features
    };
    let dest = a
        .out
        .clone()
        .unwrap_or_else(|| default_dir.join(format!("tsne-{}-{split}.png", relnet_core::record::sanitize(&dataset))));
    writeln!(
        err,
        "t-SNE of {} x {} features (perplexity {}, {} iterations, seed {})...",
        features.n, features.dim, a.perplexity, a.iterations, a.seed
    )?;
    let t = Instant::now();
    let settings = TsneSettings {
        perplexity: a.perplexity,
        iterations: a.iterations,
        seed: a.seed,
        threads: a.threads,
        ..Default::default()
    };
    let points = tsne_2d(&features.data, features.dim, &settings).map_err(CliError::from)?;
    writeln!(err, "t-SNE of {} points in {:.1} s", features.n, t.elapsed().as_secs_f64())?;
    let title = format!("t-SNE of {dataset} {split} features ({} points, perplexity {})", features.n, a.perplexity);
    scatter_png(&dest, &points, &features.labels, &names, &title).map_err(CliError::from)?;
    writeln!(out, "{}", dest.display())?;
    Ok(())
}
