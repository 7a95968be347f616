//! `relnet data ...`: list, info, download, preview.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{Context, bail};
use clap::Args;
use relnet_core::config::{self, ConfigError, RunConfig, check_range};
use relnet_core::data::registry::{self, Normalization};
use relnet_core::data::{DataRoot, Split, download, folder};
use serde::{Deserialize, Serialize};

use crate::cli::DataCommand;

pub fn run(cmd: DataCommand, out: &mut dyn Write, err: &mut dyn Write) -> anyhow::Result<()> {
    match cmd {
        DataCommand::List(root) => list(&DataRoot::resolve(root.data_root.as_deref()), out),
        DataCommand::Info { name, splits, root } => {
            info(&name, &splits, &DataRoot::resolve(root.data_root.as_deref()), out, err)
        }
        DataCommand::Download { name, mirror, skip_checksum, root } => {
            let info = registry::lookup(&name)?;
            let root = DataRoot::resolve(root.data_root.as_deref());
            let verify = if skip_checksum { download::Verify::Skip } else { download::Verify::Published };
            let outcome = download::download_verified(&info, &root, mirror.as_deref(), verify, &mut |line| {
                let _ = writeln!(err, "{line}");
            })?;
            match outcome {
                download::Outcome::AlreadyPresent(p) => writeln!(out, "{name} is already present at {}", p.display())?,
                download::Outcome::Downloaded(p) => writeln!(out, "{name} downloaded to {}", p.display())?,
                download::Outcome::NothingToDownload => {
                    writeln!(out, "{name} is generated in memory: nothing to download")?
                }
            }
            Ok(())
        }
        DataCommand::Preview(args) => preview(args, out, err),
    }
}

fn list(root: &DataRoot, out: &mut dyn Write) -> anyhow::Result<()> {
    writeln!(out, "data root: {}", root.path().display())?;
    for name in registry::names().iter().filter(|n| !n.starts_with("folder:")) {
        let info = registry::lookup(name)?;
        let status = match info.locate(root) {
            Ok(_) if matches!(info.source, registry::Source::Generated) => "built in".to_string(),
            Ok(loc) => format!("found at {}", loc.path().display()),
            Err(_) => "not found".to_string(),
        };
        writeln!(
            out,
            "{name:<14} {:>4} classes  {}  {status}",
            info.num_classes.unwrap_or(0),
            size_str(info.image_size)
        )?;
    }
    writeln!(out, "folder:<path>  any image folder <path>/{{train,test}}/<class>/*")?;
    Ok(())
}

fn size_str(s: Option<(usize, usize)>) -> String {
    s.map_or("any size".into(), |(h, w)| format!("{h}x{w}"))
}

fn fmt3(v: &[f64]) -> String {
    format!("({})", v.iter().map(|x| format!("{x:.4}")).collect::<Vec<_>>().join(", "))
}

fn info(
    name: &str,
    splits: &[String],
    root: &DataRoot,
    out: &mut dyn Write,
    err: &mut dyn Write,
) -> anyhow::Result<()> {
    let info = registry::lookup(name)?;
    let splits: Vec<Split> = if splits.is_empty() {
        info.splits.clone()
    } else {
        splits.iter().map(|s| s.parse::<Split>().map_err(anyhow::Error::msg)).collect::<Result<_, _>>()?
    };
    writeln!(out, "dataset: {}", info.id)?;
    writeln!(out, "data root: {}", root.path().display())?;
    writeln!(
        out,
        "splits: {} (pretrain: {}, train: {}, test: {})",
        info.splits.iter().map(|s| s.as_str()).collect::<Vec<_>>().join(", "),
        info.pretrain_split,
        info.train_split,
        info.test_split
    )?;
    match &info.normalization {
        Normalization::Fixed { mean, std } => writeln!(out, "normalisation (registry): mean {mean:?} std {std:?}")?,
        Normalization::FromTrainSplit => writeln!(out, "normalisation: computed from the train split")?,
    }
    if info.file_channels == 1 {
        writeln!(out, "channels: 1 in the files, loaded as 3 identical channels")?;
    }
    let mut classes_printed = false;
    for split in splits {
        let _ = writeln!(err, "loading {} {split} ...", info.id);
        let t = Instant::now();
        let s = info.load(split, root)?;
        let secs = t.elapsed().as_secs_f64();
        let set = &s.images;
        if !classes_printed {
            if let Some(src) = &s.source {
                writeln!(out, "source: {}", src.display())?;
            }
            writeln!(out, "image size: {}x{}x{} (height x width x channels)", set.height, set.width, set.channels)?;
            writeln!(out, "classes ({}): {}", s.classes.len(), s.classes.join(", "))?;
            classes_printed = true;
        }
        let (mean, std) = set.channel_stats();
        writeln!(
            out,
            "split {split}: {} images, loaded in {secs:.2} s, {:.1} MB in memory",
            set.len(),
            set.pixels.len() as f64 / 1e6
        )?;
        if set.labels.is_some() {
            let counts = set.class_counts(s.classes.len());
            let (lo, hi) = (counts.iter().min().unwrap_or(&0), counts.iter().max().unwrap_or(&0));
            writeln!(out, "  per class: {lo}..{hi} images")?;
        } else {
            writeln!(out, "  unlabelled")?;
        }
        writeln!(out, "  mean {}  std {}", fmt3(&mean), fmt3(&std))?;
    }
    Ok(())
}

/// `relnet data preview`: its own typed config, as every command that writes output.
#[derive(Args, Debug)]
pub struct PreviewArgs {
    /// Dataset name.
    pub name: Option<String>,
    /// TOML file with any of the keys below; flags override it.
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Split to sample from (train, test, unlabeled).
    #[arg(long)]
    pub split: Option<String>,
    /// Images per class (columns of the grid).
    #[arg(long)]
    pub per_class: Option<usize>,
    /// Pixel scale factor of the grid.
    #[arg(long)]
    pub scale: Option<usize>,
    /// Output PNG file; the resolved config is written beside it as `<file>.config.toml`.
    #[arg(long, value_name = "FILE.png")]
    pub out: Option<PathBuf>,
    #[arg(long, value_name = "DIR")]
    pub data_root: Option<PathBuf>,
}

#[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct PreviewConfig {
    pub dataset: String,
    pub split: Split,
    pub per_class: usize,
    pub scale: usize,
    pub out: PathBuf,
    pub data_root: Option<PathBuf>,
}

impl Default for PreviewConfig {
    fn default() -> Self {
        PreviewConfig {
            dataset: "synthetic".into(),
            split: Split::Train,
            per_class: 10,
            scale: 3,
            out: PathBuf::from("preview.png"),
            data_root: None,
        }
    }
}

impl RunConfig for PreviewConfig {
    fn validate(&self) -> Result<(), ConfigError> {
        registry::lookup(&self.dataset).map_err(|e| ConfigError::key("dataset", e.to_string()))?;
        check_range("per_class", self.per_class, 1, 64)?;
        check_range("scale", self.scale, 1, 16)
    }
}

fn preview(a: PreviewArgs, out: &mut dyn Write, err: &mut dyn Write) -> anyhow::Result<()> {
    let mut f = crate::flags::Flags::default();
    f.set("dataset", a.name);
    f.set("split", a.split);
    f.int("per_class", a.per_class);
    f.int("scale", a.scale);
    f.path("out", a.out);
    f.path("data_root", a.data_root);
    let cfg: PreviewConfig = config::resolve(a.config.as_deref(), f.0)?;
    writeln!(err, "# resolved config\n{}", config::to_toml(&cfg))?;

    let info = registry::lookup(&cfg.dataset)?;
    let root = DataRoot::resolve(cfg.data_root.as_deref());
    let s = info.load(cfg.split, &root)?;
    let img = &s.images;
    let rows = s.classes.len().clamp(1, 20);
    let cols = cfg.per_class;
    let (h, w, c) = (img.height, img.width, img.channels);
    let k = cfg.scale;
    let (gw, gh) = (cols * (w + 1) * k, rows * (h + 1) * k);
    let mut grid = vec![255u8; gw * gh * 3];
    let mut filled = vec![0usize; rows];
    for i in 0..img.len() {
        let row = img.label(i).map_or(i % rows, |l| l as usize);
        if row >= rows || filled[row] >= cols {
            continue;
        }
        let col = filled[row];
        filled[row] += 1;
        let src = img.image(i);
        for y in 0..h * k {
            for x in 0..w * k {
                let p = ((y / k) * w + x / k) * c;
                let gx = col * (w + 1) * k + x;
                let gy = row * (h + 1) * k + y;
                for ch in 0..3 {
                    grid[(gy * gw + gx) * 3 + ch] = src[p + ch.min(c - 1)];
                }
            }
        }
        if filled.iter().all(|&f| f >= cols) {
            break;
        }
    }
    folder::save_png(&cfg.out, gw, gh, 3, &grid)?;
    let cfg_path = sidecar(&cfg.out);
    config::save(&cfg, &cfg_path).with_context(|| format!("writing {}", cfg_path.display()))?;
    if filled.iter().all(|&f| f == 0) {
        bail!("no images to preview");
    }
    writeln!(
        out,
        "wrote {} ({} rows: {})",
        cfg.out.display(),
        rows,
        s.classes.iter().take(rows).cloned().collect::<Vec<_>>().join(", ")
    )?;
    Ok(())
}

fn sidecar(out: &Path) -> PathBuf {
    let mut name = out.file_name().unwrap_or_default().to_os_string();
    name.push(".config.toml");
    out.with_file_name(name)
}
