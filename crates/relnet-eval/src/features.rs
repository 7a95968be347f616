//! Frozen-backbone features of a whole split, computed once and cached on disk.
//!
//! The features of a (backbone artifact, dataset, split, preprocessing) are computed in eval
//! mode without augmentation and stored in `<backbone dir>/features/<key hash>.feat`. The key
//! holds the SHA-256 of the artifact's bytes and the preprocessing (the plain preset's image
//! side, mean and std), so a retrained artifact or a changed normalisation never reuses stale
//! features; the full key is stored in the file and checked on every read (a hash collision or a
//! damaged file is recomputed, never trusted). Every evaluator that reads frozen features (linear,
//! kNN) goes through [`frozen_features`].

use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Instant;

use burn::prelude::*;
use relnet_core::data::registry::{DatasetInfo, Split};
use relnet_core::data::{DataRoot, ImageSet};
pub use relnet_core::features::{extract, extract_with};
use relnet_core::methods::supervised::labels_of;
use relnet_core::record::{ArtifactRef, sha256_hex};
use relnet_core::{Error, Result};
use relnet_models::Backbone;
use serde::{Deserialize, Serialize};

const MAGIC: &[u8; 8] = b"RNFEAT01";

/// Features `[n, dim]` (row-major) of a split with its labels.
#[derive(Clone, Debug, PartialEq)]
pub struct Features {
    pub data: Vec<f32>,
    pub n: usize,
    pub dim: usize,
    pub labels: Vec<i64>,
    pub classes: usize,
}

impl Features {
    pub fn row(&self, i: usize) -> &[f32] {
        &self.data[i * self.dim..(i + 1) * self.dim]
    }

    /// The rows at `idx`, in that order.
    pub fn subset(&self, idx: &[usize]) -> Features {
        let mut data = Vec::with_capacity(idx.len() * self.dim);
        for &i in idx {
            data.extend_from_slice(self.row(i));
        }
        Features {
            data,
            n: idx.len(),
            dim: self.dim,
            labels: idx.iter().map(|&i| self.labels[i]).collect(),
            classes: self.classes,
        }
    }
}

/// What identifies cached features.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
pub struct FeatureKey {
    pub artifact_sha256: String,
    pub dataset: String,
    pub split: String,
    /// The preprocessing: preset, image side, mean and std.
    pub preprocessing: String,
    /// SHA-256 of the split's pixels and labels (a replaced image changes it).
    pub data_sha256: String,
    pub format: u32,
}

impl FeatureKey {
    pub fn hash(&self) -> String {
        sha256_hex(serde_json::to_string(self).unwrap_or_default().as_bytes())[..24].to_string()
    }
}

#[derive(Serialize, Deserialize, Debug)]
struct Header {
    key: FeatureKey,
    n: usize,
    dim: usize,
    classes: usize,
}

/// A dataset's split loaded for evaluation with the dataset's normalisation.
pub struct EvalSplit {
    pub split: Split,
    pub images: ImageSet,
    pub classes: usize,
    pub class_names: Vec<String>,
    pub mean: [f32; 3],
    pub std: [f32; 3],
}

/// The dataset's normalisation (mean, std).
pub type Norm = ([f32; 3], [f32; 3]);

/// Loads a labelled split with the dataset's normalisation: `norm` when already known, else
/// computed (from this split when it is the train split, so that it is not loaded twice).
pub fn load_split(info: &DatasetInfo, root: &DataRoot, split: Split, norm: Option<Norm>) -> Result<EvalSplit> {
    let loaded = info.load(split, root)?;
    let (mean, std) = match norm {
        Some(n) => n,
        None => info.norm_stats_reusing(root, if split == info.train_split { Some(&loaded) } else { None })?,
    };
    if loaded.images.labels.is_none() {
        return Err(Error::Invalid(format!("dataset `{}` split `{}` has no labels", info.id.name(), split.as_str())));
    }
    Ok(EvalSplit {
        split,
        classes: loaded.classes.len(),
        class_names: loaded.classes,
        images: loaded.images,
        mean,
        std,
    })
}

/// SHA-256 of a split's pixels, shape and labels.
pub fn data_hash(images: &ImageSet) -> String {
    use sha2::{Digest, Sha256};
    let mut h = Sha256::new();
    h.update(format!("{}x{}x{} n={}", images.height, images.width, images.channels, images.len()).as_bytes());
    h.update(&images.pixels);
    if let Some(labels) = &images.labels {
        for l in labels {
            h.update(l.to_le_bytes());
        }
    }
    h.finalize().iter().map(|b| format!("{b:02x}")).collect()
}

/// Where the features of `key` are cached for the artifact at `artifact`.
pub fn cache_path(artifact: &Path, key: &FeatureKey) -> PathBuf {
    crate::artifact_dir(artifact).join("features").join(format!("{}.feat", key.hash()))
}

/// The features of `split` through the frozen `backbone` (eval mode), from the cache when it
/// holds them for exactly this artifact and preprocessing, else computed and cached.
pub fn frozen_features(
    artifact: &ArtifactRef,
    backbone: &Backbone,
    dataset: &str,
    split: &EvalSplit,
    device: &Device,
    report: &mut dyn FnMut(&str),
) -> Result<Features> {
    let key = FeatureKey {
        artifact_sha256: artifact.sha256.clone(),
        dataset: dataset.to_string(),
        split: split.split.as_str().to_string(),
        preprocessing: format!(
            "plain side={}x{} mean={:?} std={:?}",
            split.images.height, split.images.width, split.mean, split.std
        ),
        data_sha256: data_hash(&split.images),
        format: 1,
    };
    let path = cache_path(&artifact.path, &key);
    let labels = labels_of(&split.images, dataset)?;
    match read_cache(&path, &key, &labels) {
        Ok(Some(f)) => {
            report(&format!(
                "features of {dataset} {}: {} x {} from the cache {}",
                key.split,
                f.n,
                f.dim,
                path.display()
            ));
            return Ok(f);
        }
        Ok(None) => {}
        Err(problem) => report(&format!("{}: {problem}; recomputing", path.display())),
    }
    let t = Instant::now();
    let (data, dim) = extract(backbone, &split.images, split.mean, split.std, 256, device)?;
    let f = Features { n: labels.len(), data, dim, labels, classes: split.classes };
    report(&format!(
        "features of {dataset} {}: {} x {dim} in {:.1} s, cached in {}",
        key.split,
        f.n,
        t.elapsed().as_secs_f64(),
        path.display()
    ));
    write_cache(&path, &key, &f)?;
    Ok(f)
}

fn read_cache(path: &Path, key: &FeatureKey, labels: &[i64]) -> std::result::Result<Option<Features>, String> {
    let Ok(bytes) = std::fs::read(path) else { return Ok(None) };
    if bytes.len() < 12 || &bytes[..8] != MAGIC {
        return Err("not a relnet feature cache".into());
    }
    let hlen = u32::from_le_bytes(bytes[8..12].try_into().unwrap()) as usize;
    let header: Header =
        bytes.get(12..12 + hlen).and_then(|h| serde_json::from_slice(h).ok()).ok_or("damaged header")?;
    if &header.key != key {
        return Err("holds features of another artifact or preprocessing".into());
    }
    let body = &bytes[12 + hlen..];
    if body.len() != header.n * header.dim * 4 || header.n != labels.len() {
        return Err(format!("truncated or resized: {} bytes for {} x {} features", body.len(), header.n, header.dim));
    }
    let data = body.chunks_exact(4).map(|c| f32::from_le_bytes(c.try_into().unwrap())).collect();
    Ok(Some(Features { data, n: header.n, dim: header.dim, labels: labels.to_vec(), classes: header.classes }))
}

fn write_cache(path: &Path, key: &FeatureKey, f: &Features) -> Result<()> {
    let header = serde_json::to_vec(&Header { key: key.clone(), n: f.n, dim: f.dim, classes: f.classes })
        .map_err(|e| Error::Invalid(e.to_string()))?;
    let mut bytes = Vec::with_capacity(12 + header.len() + f.data.len() * 4);
    bytes.write_all(MAGIC).unwrap();
    bytes.extend_from_slice(&(header.len() as u32).to_le_bytes());
    bytes.extend_from_slice(&header);
    for v in &f.data {
        bytes.extend_from_slice(&v.to_le_bytes());
    }
    relnet_core::fsutil::write_atomic(path, &bytes).map_err(|e| Error::io(path, e))
}
