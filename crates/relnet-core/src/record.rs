//! Result records: every evaluation leaves one typed, versioned JSON file.
//!
//! A record holds the evaluator and its resolved options, the backbone artifact (path, SHA-256 of
//! its bytes, kind), the dataset and splits, the metrics, the wall time and relnet's version. Its
//! file name carries a hash of what makes the evaluation distinct (evaluator, options, artifact
//! hash, dataset, splits), so two different evaluations never overwrite each other, and running
//! the same one again replaces its own record. Records are written atomically under
//! `<dir>/results/`; [`collect`] finds them under any folder.

use std::collections::BTreeMap;
use std::io::Read;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::error::{Error, Result};

/// The record format's version; bumped when a field changes meaning.
pub const SCHEMA_VERSION: u32 = 1;

/// A backbone artifact as a record names it.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
pub struct ArtifactRef {
    pub path: PathBuf,
    /// SHA-256 of the file's bytes (hex).
    pub sha256: String,
    /// The backbone kind in the file (`conv4`...).
    pub kind: String,
}

impl ArtifactRef {
    /// Hashes the artifact at `path` and reads its kind.
    pub fn of(path: &Path) -> Result<Self> {
        let kind = relnet_models::io::backbone_kind(path)?;
        Ok(ArtifactRef { path: path.to_path_buf(), sha256: sha256_file(path)?, kind: kind.name().into() })
    }
}

#[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct ResultRecord {
    pub schema_version: u32,
    /// `linear`, `knn`, `finetune`, `supervised`...
    pub evaluator: String,
    /// The evaluator's resolved options.
    pub options: serde_json::Value,
    pub backbone: ArtifactRef,
    /// The dataset the backbone was trained on, when its run's `config.toml` says (differs from
    /// `dataset` in a transfer or grain evaluation).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source_dataset: Option<String>,
    /// The dataset evaluated on (the target).
    pub dataset: String,
    /// The seed of the evaluator's own randomness.
    pub seed: u64,
    /// The split trained on (`None` for evaluators that train nothing).
    pub train_split: Option<String>,
    /// The split the metrics were measured on (`test`, or `val` when tuning on a held-out part).
    pub eval_split: String,
    /// Metric name -> value (accuracies in percent).
    pub metrics: BTreeMap<String, f64>,
    pub wall_seconds: f64,
    pub relnet_version: String,
    /// Seconds since the Unix epoch when the record was written.
    pub created_unix: u64,
    /// Files the evaluation produced (a fine-tuned backbone...), by role.
    #[serde(default)]
    pub outputs: BTreeMap<String, PathBuf>,
}

impl ResultRecord {
    pub fn new(evaluator: &str, options: serde_json::Value, backbone: ArtifactRef, dataset: &str, seed: u64, train_split: Option<&str>, eval_split: &str) -> Self {
        ResultRecord {
            schema_version: SCHEMA_VERSION,
            evaluator: evaluator.into(),
            options,
            backbone,
            source_dataset: None,
            dataset: dataset.into(),
            seed,
            train_split: train_split.map(str::to_string),
            eval_split: eval_split.into(),
            metrics: BTreeMap::new(),
            wall_seconds: 0.0,
            relnet_version: env!("CARGO_PKG_VERSION").into(),
            created_unix: 0,
            outputs: BTreeMap::new(),
        }
    }

    /// What makes this evaluation distinct, hashed: evaluator, options, artifact bytes, dataset,
    /// seed and splits (not the metrics, times or paths).
    pub fn id(&self) -> String {
        let key = serde_json::json!([self.evaluator, self.options, self.backbone.sha256, self.dataset, self.seed, self.train_split, self.eval_split]);
        hex(&Sha256::digest(key.to_string().as_bytes()))[..16].to_string()
    }

    /// The file name: `<evaluator>-<dataset>-<id>.json`.
    pub fn file_name(&self) -> String {
        format!("{}-{}-{}.json", self.evaluator, sanitize(&self.dataset), self.id())
    }

    /// Writes the record atomically to `<dir>/results/<file_name>` and returns the path.
    pub fn save(&mut self, dir: &Path) -> Result<PathBuf> {
        self.created_unix = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs());
        let path = dir.join("results").join(self.file_name());
        let json = serde_json::to_vec_pretty(self).map_err(|e| Error::Invalid(e.to_string()))?;
        crate::fsutil::write_atomic(&path, &json).map_err(|e| Error::io(&path, e))?;
        Ok(path)
    }

    /// Reads and checks one record file.
    pub fn load(path: &Path) -> Result<Self> {
        let bytes = std::fs::read(path).map_err(|e| Error::io(path, e))?;
        let value: serde_json::Value = serde_json::from_slice(&bytes).map_err(|e| Error::artifact(path, format!("not a result record: {e}")))?;
        match value.get("schema_version").and_then(|v| v.as_u64()) {
            Some(v) if v == SCHEMA_VERSION as u64 => {}
            Some(v) => return Err(Error::artifact(path, format!("result record schema version {v}; this relnet reads version {SCHEMA_VERSION}"))),
            None => return Err(Error::artifact(path, "not a result record: no schema_version")),
        }
        serde_json::from_value(value).map_err(|e| Error::artifact(path, format!("bad result record: {e}")))
    }
}

/// Every `results/*.json` under `dir` (recursively), sorted by path, each read or its error.
pub fn collect(dir: &Path) -> Result<Vec<(PathBuf, Result<ResultRecord>)>> {
    let mut found = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    if !dir.is_dir() {
        return Err(Error::io(dir, std::io::Error::new(std::io::ErrorKind::NotFound, "no such folder")));
    }
    while let Some(d) = stack.pop() {
        let entries = std::fs::read_dir(&d).map_err(|e| Error::io(&d, e))?;
        for entry in entries.flatten() {
            let p = entry.path();
            if p.is_dir() {
                stack.push(p);
            } else if p.extension().is_some_and(|e| e == "json") && p.parent().and_then(Path::file_name).is_some_and(|n| n == "results") {
                found.push(p);
            }
        }
    }
    found.sort();
    Ok(found.into_iter().map(|p| {
        let r = ResultRecord::load(&p);
        (p, r)
    }).collect())
}

/// SHA-256 of a file's bytes, hex.
pub fn sha256_file(path: &Path) -> Result<String> {
    let mut f = std::fs::File::open(path).map_err(|e| Error::io(path, e))?;
    let mut h = Sha256::new();
    let mut buf = vec![0u8; 1 << 16];
    loop {
        let n = f.read(&mut buf).map_err(|e| Error::io(path, e))?;
        if n == 0 {
            break;
        }
        h.update(&buf[..n]);
    }
    Ok(hex(&h.finalize()))
}

/// SHA-256 of bytes, hex.
pub fn sha256_hex(bytes: &[u8]) -> String {
    hex(&Sha256::digest(bytes))
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// A dataset name usable in a file name (`folder:/x/y` -> `folder__x_y`).
pub fn sanitize(name: &str) -> String {
    name.chars().map(|c| if c.is_ascii_alphanumeric() || c == '-' || c == '_' { c } else { '_' }).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(opts: serde_json::Value) -> ResultRecord {
        let a = ArtifactRef { path: "b.bpk".into(), sha256: "ab".into(), kind: "conv4".into() };
        ResultRecord::new("linear", opts, a, "synthetic", 1, Some("train"), "test")
    }

    #[test]
    fn distinct_evaluations_get_distinct_files_and_records_round_trip() {
        let dir = tempfile::tempdir().unwrap();
        let mut a = record(serde_json::json!({"epochs": 10}));
        let mut b = record(serde_json::json!({"epochs": 20}));
        a.metrics.insert("test_accuracy".into(), 50.0);
        let pa = a.save(dir.path()).unwrap();
        let pb = b.save(dir.path()).unwrap();
        assert_ne!(pa, pb);
        let mut c = record(serde_json::json!({"epochs": 10}));
        c.seed = 2;
        assert_ne!(c.save(dir.path()).unwrap(), pa, "another seed is another evaluation");
        assert_eq!(ResultRecord::load(&pa).unwrap(), a);
        // The same evaluation again replaces its own file.
        let mut a2 = record(serde_json::json!({"epochs": 10}));
        assert_eq!(a2.save(dir.path()).unwrap(), pa);
        let all = collect(dir.path()).unwrap();
        assert_eq!(all.len(), 3);
        // A truncated record is an error naming the file, not a panic.
        std::fs::write(&pa, b"{\"schema_version\": 1, \"evalu").unwrap();
        let e = ResultRecord::load(&pa).unwrap_err().to_string();
        assert!(e.contains(pa.file_name().unwrap().to_str().unwrap()), "{e}");
        std::fs::write(&pa, b"{\"schema_version\": 99}").unwrap();
        assert!(ResultRecord::load(&pa).unwrap_err().to_string().contains("schema version 99"));
    }
}
