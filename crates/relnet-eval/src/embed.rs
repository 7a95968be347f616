//! Embeddings out: the frozen features and labels of a split written as a safetensors file, for
//! analysis in numpy or PyTorch (`safetensors.numpy.load_file`, `safetensors.torch.load_file`)
//! and for `relnet plot tsne FILE`.
//!
//! The file holds `features` (F32, `[n, dim]`) and `labels` (I64, `[n]`); its metadata holds the
//! dataset, split, class names (JSON list), backbone path and SHA-256.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use relnet_core::config::ConfigError;
use relnet_core::data::registry::Split;
use relnet_core::record::ResultRecord;
use relnet_core::{Error, Result};
use safetensors::tensor::{Dtype, TensorView};
use serde::{Deserialize, Serialize};

use crate::features::Features;
use crate::{EvalContext, EvaluatorOptions, artifact_dir};

/// Options of `embed` (`[evaluator] kind = "embed"`).
#[derive(clap::Args, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct EmbedOptions {
    /// Split whose features are written.
    #[arg(long, default_value = "test", value_name = "SPLIT")]
    pub split: Split,
    /// Output file (default: <backbone dir>/embeddings/<dataset>-<split>.safetensors).
    #[arg(long, value_name = "FILE.safetensors")]
    pub out: Option<PathBuf>,
}

impl Default for EmbedOptions {
    fn default() -> Self {
        relnet_core::config::clap_defaults()
    }
}

impl EvaluatorOptions for EmbedOptions {
    const NAME: &'static str = "embed";

    fn spec(&self) -> crate::EvaluatorSpec {
        crate::EvaluatorSpec {
            name: "embed",
            about: "Write the frozen features and labels of a split as safetensors (numpy, PyTorch, `relnet plot tsne`)",
            order: 4,
            report: &[],
            headline: &[],
            frozen_features: true,
        }
    }

    fn validate(&self) -> std::result::Result<(), ConfigError> {
        Ok(())
    }

    fn run(&self, ctx: &mut EvalContext) -> Result<ResultRecord> {
        let f = ctx.features(self.split)?;
        let out = self.out.clone().unwrap_or_else(|| {
            artifact_dir(&ctx.config.backbone).join("embeddings").join(format!(
                "{}-{}.safetensors",
                relnet_core::record::sanitize(&ctx.config.dataset),
                self.split.as_str()
            ))
        });
        let meta = Metadata {
            dataset: ctx.config.dataset.clone(),
            split: self.split.as_str().to_string(),
            class_names: ctx.class_names().to_vec(),
            backbone: ctx.artifact.path.display().to_string(),
            backbone_sha256: ctx.artifact.sha256.clone(),
        };
        write_embeddings(&out, &f, &meta)?;
        ctx.report.line(&format!(
            "{} x {} features of {} {} written to {}",
            f.n,
            f.dim,
            ctx.config.dataset,
            self.split.as_str(),
            out.display()
        ));
        let mut record = ctx.record(Self::NAME, self, None, self.split.as_str());
        record.metrics.insert("images".into(), f.n as f64);
        record.metrics.insert("dim".into(), f.dim as f64);
        record.outputs.insert("embeddings".into(), out);
        Ok(record)
    }
}

/// What an embeddings file says about itself.
#[derive(Clone, Debug, PartialEq, Default)]
pub struct Metadata {
    pub dataset: String,
    pub split: String,
    pub class_names: Vec<String>,
    pub backbone: String,
    pub backbone_sha256: String,
}

/// Writes features and labels as safetensors, atomically.
pub fn write_embeddings(path: &Path, f: &Features, meta: &Metadata) -> Result<()> {
    let feat_bytes: Vec<u8> = f.data.iter().flat_map(|v| v.to_le_bytes()).collect();
    let label_bytes: Vec<u8> = f.labels.iter().flat_map(|v| v.to_le_bytes()).collect();
    let bad = |e: safetensors::SafeTensorError| Error::Invalid(format!("{}: {e}", path.display()));
    let tensors = vec![
        ("features".to_string(), TensorView::new(Dtype::F32, vec![f.n, f.dim], &feat_bytes).map_err(bad)?),
        ("labels".to_string(), TensorView::new(Dtype::I64, vec![f.n], &label_bytes).map_err(bad)?),
    ];
    let mut m = HashMap::new();
    m.insert("dataset".to_string(), meta.dataset.clone());
    m.insert("split".to_string(), meta.split.clone());
    m.insert("class_names".to_string(), serde_json::to_string(&meta.class_names).unwrap_or_default());
    m.insert("backbone".to_string(), meta.backbone.clone());
    m.insert("backbone_sha256".to_string(), meta.backbone_sha256.clone());
    m.insert("written_by".to_string(), format!("relnet {}", env!("CARGO_PKG_VERSION")));
    let bytes = safetensors::serialize(tensors, Some(m)).map_err(bad)?;
    relnet_core::fsutil::write_atomic(path, &bytes).map_err(|e| Error::io(path, e))
}

/// Reads an embeddings file: `features` (F32 `[n, dim]`) and, when present, `labels` (I64 or I32
/// `[n]`; all 0 when absent), with its metadata. Errors name the file.
pub fn read_embeddings(path: &Path) -> Result<(Features, Metadata)> {
    let bytes = std::fs::read(path).map_err(|e| Error::io(path, e))?;
    let bad = |what: String| Error::artifact(path, what);
    let (_, header) =
        safetensors::SafeTensors::read_metadata(&bytes).map_err(|e| bad(format!("not a safetensors file: {e}")))?;
    let st = safetensors::SafeTensors::deserialize(&bytes).map_err(|e| bad(format!("not a safetensors file: {e}")))?;
    let feats = st.tensor("features").map_err(|_| bad("no `features` tensor".into()))?;
    if feats.dtype() != Dtype::F32 || feats.shape().len() != 2 {
        return Err(bad(format!("`features` must be F32 [n, dim], found {:?} {:?}", feats.dtype(), feats.shape())));
    }
    let (n, dim) = (feats.shape()[0], feats.shape()[1]);
    let data: Vec<f32> =
        feats.data().chunks_exact(4).map(|c| f32::from_le_bytes(c.try_into().expect("4 bytes"))).collect();
    let labels: Vec<i64> = match st.tensor("labels") {
        Ok(l) if l.shape() == [n] && l.dtype() == Dtype::I64 => {
            l.data().chunks_exact(8).map(|c| i64::from_le_bytes(c.try_into().expect("8 bytes"))).collect()
        }
        Ok(l) if l.shape() == [n] && l.dtype() == Dtype::I32 => {
            l.data().chunks_exact(4).map(|c| i32::from_le_bytes(c.try_into().expect("4 bytes")) as i64).collect()
        }
        Ok(l) => return Err(bad(format!("`labels` must be I64 or I32 [{n}], found {:?} {:?}", l.dtype(), l.shape()))),
        Err(_) => vec![0; n],
    };
    if labels.iter().any(|&l| l < 0) {
        return Err(bad("`labels` holds a negative class".into()));
    }
    let meta_map = header.metadata().clone().unwrap_or_default();
    let get = |k: &str| meta_map.get(k).cloned().unwrap_or_default();
    let meta = Metadata {
        dataset: get("dataset"),
        split: get("split"),
        class_names: serde_json::from_str(&get("class_names")).unwrap_or_default(),
        backbone: get("backbone"),
        backbone_sha256: get("backbone_sha256"),
    };
    let classes = labels.iter().copied().max().map_or(0, |m| m as usize + 1).max(meta.class_names.len());
    Ok((Features { data, n, dim, labels, classes }, meta))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn embeddings_round_trip_and_bad_files_are_named() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("e.safetensors");
        let f =
            Features { data: vec![0.5, -1.0, 2.0, 3.25, 0.0, 1e-3], n: 3, dim: 2, labels: vec![2, 0, 1], classes: 3 };
        let meta = Metadata {
            dataset: "synthetic".into(),
            split: "test".into(),
            class_names: vec!["a".into(), "b".into(), "c".into()],
            backbone: "b.bpk".into(),
            backbone_sha256: "ab".into(),
        };
        write_embeddings(&path, &f, &meta).unwrap();
        assert_eq!(read_embeddings(&path).unwrap(), (f, meta));
        // The layout numpy and PyTorch read: u64 header length, JSON header, little-endian data.
        let bytes = std::fs::read(&path).unwrap();
        let hlen = u64::from_le_bytes(bytes[..8].try_into().unwrap()) as usize;
        let header: serde_json::Value = serde_json::from_slice(&bytes[8..8 + hlen]).unwrap();
        assert_eq!(header["features"]["dtype"], "F32");
        assert_eq!(header["features"]["shape"], serde_json::json!([3, 2]));
        assert_eq!(header["labels"]["dtype"], "I64");
        std::fs::write(&path, b"garbage").unwrap();
        let e = read_embeddings(&path).unwrap_err().to_string();
        assert!(e.contains("e.safetensors") && e.contains("not a safetensors file"), "{e}");
    }
}
