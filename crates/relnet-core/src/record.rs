//! Result records: every evaluation leaves one typed, versioned JSON file.
//!
//! A record holds the evaluator and its resolved options, the backbone artifact (path, SHA-256 of
//! its bytes, kind), the dataset and splits, the metrics, the wall time and relnet's version. Its
//! file name carries a hash of what makes the evaluation distinct (evaluator, options, artifact
//! hash, dataset, splits), so two different evaluations never overwrite each other, and running
//! the same one again replaces its own record. Records are written atomically under
//! `<dir>/results/`; [`collect`] finds them under any folder.
//!
//! Every record carries its own checksum (`"checksum": "sha256:<hex>"`, schema version 2): the
//! SHA-256 of the record's canonical JSON without the `checksum` field ([`content_checksum`]).
//! [`ResultRecord::load_checked`] says whether a record verifies ([`Integrity`]); a record whose
//! content was edited after relnet wrote it no longer does. Records of schema version 1 (before
//! checksums) still load, as [`Integrity::Unverified`]. The checksum catches hand edits and
//! damage, not forgery: anyone can compute a SHA-256.

use std::collections::{BTreeMap, HashSet};
use std::io::Read;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::error::{Error, Result};

/// The record format's version; bumped when a field changes meaning. Version 2 added
/// `checksum`; version 1 records (without it) are still read.
pub const SCHEMA_VERSION: u32 = 2;

/// The oldest record format this relnet reads.
pub const OLDEST_SCHEMA_VERSION: u32 = 1;

/// The prefix of a record's `checksum` value.
pub const CHECKSUM_PREFIX: &str = "sha256:";

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
    /// The precision the backbone was trained at, when its run's `config.toml` says bf16 (fp32
    /// runs write no key, and records of them none).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source_precision: Option<String>,
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
    /// `sha256:<hex>` of the record's canonical JSON without this field ([`content_checksum`]),
    /// set by [`ResultRecord::save`]. Absent in schema version 1 records.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub checksum: Option<String>,
}

/// Whether a record's content is what relnet wrote.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Integrity {
    /// Its checksum matches its content.
    Verified,
    /// Written before records carried checksums (schema version 1): it cannot be checked.
    Unverified,
    /// Its content changed after it was written (the checksum does not match, or the checksum a
    /// version-2 record carries was removed); `problem` says which.
    Edited { problem: String },
}

impl Integrity {
    /// `ok`, `unverified` or `EDITED`.
    pub fn label(&self) -> &'static str {
        match self {
            Integrity::Verified => "ok",
            Integrity::Unverified => "unverified",
            Integrity::Edited { .. } => "EDITED",
        }
    }
}

impl ResultRecord {
    pub fn new(
        evaluator: &str,
        options: serde_json::Value,
        backbone: ArtifactRef,
        dataset: &str,
        seed: u64,
        train_split: Option<&str>,
        eval_split: &str,
    ) -> Self {
        ResultRecord {
            schema_version: SCHEMA_VERSION,
            evaluator: evaluator.into(),
            options,
            backbone,
            source_dataset: None,
            source_precision: None,
            dataset: dataset.into(),
            seed,
            train_split: train_split.map(str::to_string),
            eval_split: eval_split.into(),
            metrics: BTreeMap::new(),
            wall_seconds: 0.0,
            relnet_version: env!("CARGO_PKG_VERSION").into(),
            created_unix: 0,
            outputs: BTreeMap::new(),
            checksum: None,
        }
    }

    /// What makes this evaluation distinct, hashed: evaluator, options, artifact bytes, dataset,
    /// seed and splits (not the metrics, times or paths).
    pub fn id(&self) -> String {
        let key = serde_json::json!([
            self.evaluator,
            self.options,
            self.backbone.sha256,
            self.dataset,
            self.seed,
            self.train_split,
            self.eval_split
        ]);
        hex(&Sha256::digest(key.to_string().as_bytes()))[..16].to_string()
    }

    /// The file name: `<evaluator>-<dataset>-<id>.json`.
    pub fn file_name(&self) -> String {
        format!("{}-{}-{}.json", self.evaluator, sanitize(&self.dataset), self.id())
    }

    /// Writes the record atomically to `<dir>/results/<file_name>` with its checksum (both set
    /// here, with the creation time) and returns the path. The file is written once, complete:
    /// its bytes are final (the grid runner hashes them after this returns).
    pub fn save(&mut self, dir: &Path) -> Result<PathBuf> {
        self.created_unix =
            std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs());
        self.schema_version = SCHEMA_VERSION;
        self.checksum = None;
        // The serialised text is hashed (numbers as written, never parsed back): the file holds
        // the same number literals.
        let unsigned = serde_json::to_string(self).map_err(|e| Error::Invalid(e.to_string()))?;
        self.checksum =
            Some(content_checksum(&unsigned).ok_or_else(|| Error::Invalid("result record: no canonical JSON".into()))?);
        let path = dir.join("results").join(self.file_name());
        let json = serde_json::to_vec_pretty(self).map_err(|e| Error::Invalid(e.to_string()))?;
        crate::fsutil::write_atomic(&path, &json).map_err(|e| Error::io(&path, e))?;
        Ok(path)
    }

    /// Reads one record file and checks it: an error (naming the file) when it is not JSON, not
    /// a result record or of an unknown schema version, or when its content was edited after it
    /// was written; a version-1 record without a checksum loads. Use [`ResultRecord::load_checked`]
    /// to list an edited record rather than reject it.
    pub fn load(path: &Path) -> Result<Self> {
        let (record, integrity) = Self::load_checked(path)?;
        match integrity {
            Integrity::Edited { problem } => {
                Err(Error::artifact(path, format!("result record edited after it was written: {problem}")))
            }
            Integrity::Verified | Integrity::Unverified => Ok(record),
        }
    }

    /// Reads one record file and says whether its checksum verifies. Errors (naming the file)
    /// only when it is not JSON, not a result record or of an unknown schema version.
    pub fn load_checked(path: &Path) -> Result<(Self, Integrity)> {
        let bytes = std::fs::read(path).map_err(|e| Error::io(path, e))?;
        let value: serde_json::Value = serde_json::from_slice(&bytes)
            .map_err(|e| Error::artifact(path, format!("not a result record: not valid JSON ({e})")))?;
        if !value.is_object() {
            return Err(Error::artifact(path, "not a result record: not a JSON object"));
        }
        match value.get("schema_version").and_then(|v| v.as_u64()) {
            Some(v) if (OLDEST_SCHEMA_VERSION as u64..=SCHEMA_VERSION as u64).contains(&v) => {}
            Some(v) => {
                return Err(Error::artifact(
                    path,
                    format!(
                        "result record schema version {v}; this relnet reads versions {OLDEST_SCHEMA_VERSION} to {SCHEMA_VERSION}"
                    ),
                ));
            }
            None => return Err(Error::artifact(path, "not a result record: no schema_version")),
        }
        let record: Self =
            serde_json::from_value(value).map_err(|e| Error::artifact(path, format!("bad result record: {e}")))?;
        let integrity = match &record.checksum {
            None if record.schema_version < 2 => Integrity::Unverified,
            None => Integrity::Edited {
                problem: format!(
                    "its checksum was removed (schema version {} records carry one)",
                    record.schema_version
                ),
            },
            Some(stored) => {
                // Valid JSON (parsed above), so UTF-8 and canonicalisable.
                let actual = std::str::from_utf8(&bytes).ok().and_then(content_checksum).unwrap_or_default();
                if *stored == actual {
                    Integrity::Verified
                } else {
                    Integrity::Edited {
                        problem: format!("checksum mismatch: the record says {stored}, its content hashes to {actual}"),
                    }
                }
            }
        };
        Ok((record, integrity))
    }
}

/// A record's checksum: `sha256:` and the hex SHA-256 of its canonical JSON, computed from the
/// JSON text `json` of the record: the record without its top-level `checksum` field, written
/// with no whitespace, every object's keys in sorted order, strings re-escaped the one way
/// serde_json writes them, and numbers exactly as written (never parsed into floats, so the
/// checksum does not depend on how a reader rounds decimals). Layout and key order do not change
/// it; a change of any key or value does. `None` when `json` is not JSON.
pub fn content_checksum(json: &str) -> Option<String> {
    let mut c = Canonical { text: json, s: json.as_bytes(), i: 0 };
    let mut out = String::with_capacity(json.len());
    c.ws();
    c.value(&mut out, 0)?;
    c.ws();
    (c.i == c.s.len()).then(|| format!("{CHECKSUM_PREFIX}{}", sha256_hex(out.as_bytes())))
}

/// A small JSON reader that writes the canonical form as it goes (see [`content_checksum`]).
struct Canonical<'a> {
    text: &'a str,
    s: &'a [u8],
    i: usize,
}

impl Canonical<'_> {
    fn ws(&mut self) {
        while self.s.get(self.i).is_some_and(|b| matches!(b, b' ' | b'\t' | b'\n' | b'\r')) {
            self.i += 1;
        }
    }

    fn eat(&mut self, b: u8) -> Option<()> {
        (self.s.get(self.i) == Some(&b)).then(|| self.i += 1)
    }

    /// A string literal, decoded.
    fn string(&mut self) -> Option<String> {
        let start = self.i;
        self.eat(b'"')?;
        loop {
            match *self.s.get(self.i)? {
                b'\\' => self.i += 2,
                b'"' => break,
                _ => self.i += 1,
            }
        }
        self.i += 1;
        serde_json::from_str(self.text.get(start..self.i)?).ok()
    }

    fn value(&mut self, out: &mut String, depth: usize) -> Option<()> {
        if depth > 256 {
            return None;
        }
        match *self.s.get(self.i)? {
            b'{' => {
                self.i += 1;
                let mut entries: Vec<(String, String)> = Vec::new();
                self.ws();
                if self.eat(b'}').is_none() {
                    loop {
                        self.ws();
                        let key = self.string()?;
                        self.ws();
                        self.eat(b':')?;
                        self.ws();
                        let mut v = String::new();
                        self.value(&mut v, depth + 1)?;
                        entries.push((key, v));
                        self.ws();
                        if self.eat(b'}').is_some() {
                            break;
                        }
                        self.eat(b',')?;
                    }
                }
                if depth == 0 {
                    entries.retain(|(k, _)| k != "checksum");
                }
                entries.sort_by(|a, b| a.0.cmp(&b.0));
                out.push('{');
                for (n, (k, v)) in entries.iter().enumerate() {
                    if n > 0 {
                        out.push(',');
                    }
                    out.push_str(&serde_json::to_string(k).ok()?);
                    out.push(':');
                    out.push_str(v);
                }
                out.push('}');
            }
            b'[' => {
                self.i += 1;
                out.push('[');
                self.ws();
                if self.eat(b']').is_none() {
                    loop {
                        self.ws();
                        self.value(out, depth + 1)?;
                        self.ws();
                        if self.eat(b']').is_some() {
                            break;
                        }
                        self.eat(b',')?;
                        out.push(',');
                    }
                }
                out.push(']');
            }
            b'"' => {
                let s = self.string()?;
                out.push_str(&serde_json::to_string(&s).ok()?);
            }
            _ => {
                // A number as written, or true / false / null.
                let start = self.i;
                while self.s.get(self.i).is_some_and(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'+' | b'.')) {
                    self.i += 1;
                }
                if start == self.i {
                    return None;
                }
                out.push_str(self.text.get(start..self.i)?);
            }
        }
        Some(())
    }
}

/// What [`collect`] found: a record file and the record with its [`Integrity`], or why it could
/// not be read.
pub type Found = (PathBuf, Result<(ResultRecord, Integrity)>);

/// The result records at `path`, sorted by path, each read and checked or its error. `path` may
/// be a single record file, a `results/` folder, a run folder, or any tree of them: every
/// `*.json` in a folder named `results` is taken as a record (one that does not read is reported,
/// not skipped), and a `*.json` elsewhere when it is a JSON object with `schema_version` and
/// `evaluator` (so manifests, checkpoints' `progress.json` and the like are left alone). Hidden
/// entries (`.git`, the temporary files of atomic writes) are skipped; symbolic links are
/// followed, each folder read once.
pub fn collect(path: &Path) -> Result<Vec<Found>> {
    let meta = std::fs::metadata(path).map_err(|e| Error::io(path, e))?;
    if !meta.is_dir() {
        return Ok(vec![(path.to_path_buf(), ResultRecord::load_checked(path))]);
    }
    let is_results = |p: &Path| p.file_name().is_some_and(|n| n == "results");
    // `.` or `..` inside a results folder is one too.
    let root_is_results = is_results(path) || std::fs::canonicalize(path).is_ok_and(|c| is_results(&c));
    let mut files = Vec::new();
    let mut errors = Vec::new();
    let mut seen = HashSet::new();
    let mut stack = vec![(path.to_path_buf(), root_is_results)];
    while let Some((d, in_results)) = stack.pop() {
        if let Ok(c) = std::fs::canonicalize(&d)
            && !seen.insert(c)
        {
            continue;
        }
        let entries = match std::fs::read_dir(&d) {
            Ok(e) => e,
            Err(e) if d == path => return Err(Error::io(&d, e)),
            Err(e) => {
                errors.push((d.clone(), Err(Error::io(&d, e))));
                continue;
            }
        };
        for entry in entries.flatten() {
            let name = entry.file_name();
            if name.to_string_lossy().starts_with('.') {
                continue;
            }
            let p = entry.path();
            if p.is_dir() {
                let r = is_results(&p);
                stack.push((p, r));
            } else if p.extension().is_some_and(|e| e == "json") && (in_results || looks_like_record(&p)) {
                files.push(p);
            }
        }
    }
    let mut found: Vec<Found> = files
        .into_iter()
        .map(|p| {
            let r = ResultRecord::load_checked(&p);
            (p, r)
        })
        .collect();
    found.extend(errors);
    found.sort_by(|a, b| a.0.cmp(&b.0));
    Ok(found)
}

/// A JSON file outside a `results/` folder that is a result record (an object with
/// `schema_version` and `evaluator`), judged by its content; large files are not read.
fn looks_like_record(path: &Path) -> bool {
    if !std::fs::metadata(path).is_ok_and(|m| m.len() <= 16 << 20) {
        return false;
    }
    let Ok(bytes) = std::fs::read(path) else { return false };
    let Ok(serde_json::Value::Object(m)) = serde_json::from_slice::<serde_json::Value>(&bytes) else { return false };
    m.contains_key("schema_version") && m.contains_key("evaluator")
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

    fn saved(dir: &Path) -> (ResultRecord, PathBuf) {
        let mut r = record(serde_json::json!({"epochs": 10, "lr": 0.001, "name": "a\"b\\c\u{e9}"}));
        // Figures that do not survive a naive decimal round trip still verify.
        for (i, v) in [12.873015873015873, 0.1 + 0.2, 100.0 / 3.0, 1e-300, 5e300, 66.00000000000001, 0.0, -1.5]
            .into_iter()
            .enumerate()
        {
            r.metrics.insert(format!("m{i}"), v);
        }
        for i in 0..200 {
            r.metrics.insert(format!("ratio{i:03}"), (i as f64 * 7.3 + 0.17) / 9.1 * 100.0);
        }
        r.wall_seconds = 12.345678901234567;
        let p = r.save(dir).unwrap();
        (r, p)
    }

    #[test]
    fn a_saved_record_carries_a_checksum_that_verifies() {
        let dir = tempfile::tempdir().unwrap();
        let (r, p) = saved(dir.path());
        let c = r.checksum.clone().expect("save sets the checksum");
        assert!(c.starts_with("sha256:") && c.len() == 7 + 64, "{c}");
        let text = std::fs::read_to_string(&p).unwrap();
        assert!(text.contains(&format!("\"checksum\": \"{c}\"")), "{text}");
        assert!(text.contains("\"schema_version\": 2"), "{text}");
        assert_eq!(content_checksum(&text).as_ref(), Some(&c));
        let (back, integrity) = ResultRecord::load_checked(&p).unwrap();
        assert_eq!(integrity, Integrity::Verified);
        // serde_json (without `float_roundtrip`) may read a 17-digit decimal one ulp off: the
        // figures agree to that, everything else exactly.
        for (k, v) in &r.metrics {
            assert!((back.metrics[k] - v).abs() <= v.abs() * 4.0 * f64::EPSILON, "{k}: {} vs {v}", back.metrics[k]);
        }
        let mut same = back.clone();
        same.metrics = r.metrics.clone();
        same.wall_seconds = r.wall_seconds;
        assert_eq!(same, r);
        assert!(ResultRecord::load(&p).is_ok());
        // The checksum is of the content, not of the layout: the same record compact, its keys in
        // another order, verifies.
        let compact = text.replace("\n", "").replace("  ", "");
        let compact = compact.replacen("{\"schema_version\": 2,", "{", 1).replacen(
            "\"checksum\"",
            "\"schema_version\": 2, \"checksum\"",
            1,
        );
        assert_ne!(compact, text);
        std::fs::write(&p, &compact).unwrap();
        assert_eq!(ResultRecord::load_checked(&p).unwrap().1, Integrity::Verified, "{compact}");
        // Saving again gives the same checksum for the same content (creation time aside).
        let mut again = r.clone();
        again.save(dir.path()).unwrap();
        again.created_unix = r.created_unix;
        again.checksum = None;
        let mut first = r.clone();
        first.checksum = None;
        assert_eq!(
            content_checksum(&serde_json::to_string(&again).unwrap()),
            content_checksum(&serde_json::to_string(&first).unwrap())
        );
        // Not JSON: no checksum.
        assert_eq!(content_checksum("{\"a\": 1"), None);
        assert_eq!(content_checksum("{\"a\": 1} x"), None);
    }

    #[test]
    fn an_edited_record_fails_verification_and_load_names_it() {
        let dir = tempfile::tempdir().unwrap();
        let (_, p) = saved(dir.path());
        let text = std::fs::read_to_string(&p).unwrap();
        let edits = [
            ("a metric", text.replacen("\"m6\": 0.0", "\"m6\": 99.0", 1)),
            ("the seed", text.replacen("\"seed\": 1", "\"seed\": 2", 1)),
            ("an option", text.replacen("\"epochs\": 10", "\"epochs\": 100", 1)),
            ("the checksum", text.replacen("\"checksum\": \"sha256:", "\"checksum\": \"sha256:0", 1)),
        ];
        for (what, edited) in edits {
            assert_ne!(edited, text, "{what}: the edit applies");
            std::fs::write(&p, &edited).unwrap();
            let (_, integrity) = ResultRecord::load_checked(&p).unwrap();
            assert!(
                matches!(&integrity, Integrity::Edited { problem } if problem.contains("checksum mismatch")),
                "{what}: {integrity:?}"
            );
            let e = ResultRecord::load(&p).unwrap_err().to_string();
            assert!(e.contains(p.file_name().unwrap().to_str().unwrap()) && e.contains("edited"), "{what}: {e}");
        }
        // Removing the checksum of a version-2 record does not make it pass as a legacy one.
        let mut v: serde_json::Value = serde_json::from_str(&text).unwrap();
        v.as_object_mut().unwrap().remove("checksum");
        std::fs::write(&p, serde_json::to_vec_pretty(&v).unwrap()).unwrap();
        assert!(matches!(ResultRecord::load_checked(&p).unwrap().1, Integrity::Edited { .. }));
        // A checksum of the wrong type is a bad record, named.
        v["checksum"] = 5.into();
        std::fs::write(&p, serde_json::to_vec_pretty(&v).unwrap()).unwrap();
        let e = ResultRecord::load_checked(&p).unwrap_err().to_string();
        assert!(e.contains(p.to_str().unwrap()) && e.contains("bad result record"), "{e}");
    }

    #[test]
    fn a_version_1_record_without_checksum_loads_unverified() {
        let dir = tempfile::tempdir().unwrap();
        let (_, p) = saved(dir.path());
        let mut v: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&p).unwrap()).unwrap();
        v.as_object_mut().unwrap().remove("checksum");
        v["schema_version"] = 1.into();
        std::fs::write(&p, serde_json::to_vec_pretty(&v).unwrap()).unwrap();
        let (r, integrity) = ResultRecord::load_checked(&p).unwrap();
        assert_eq!(integrity, Integrity::Unverified);
        assert_eq!((r.schema_version, r.checksum), (1, None));
        assert!(ResultRecord::load(&p).is_ok(), "legacy records are read, not rejected");
    }

    #[test]
    fn collect_finds_records_from_any_folder_or_file() {
        let dir = tempfile::tempdir().unwrap();
        let run = dir.path().join("runs").join("a");
        let (_, p) = saved(&run);
        let mut other = record(serde_json::json!({"epochs": 3}));
        let q = other.save(&dir.path().join("runs").join("b")).unwrap();
        // Not records: a manifest beside a run, a checkpoint's progress file, a temporary file.
        std::fs::write(run.join("cell.json"), b"{\"schema_version\": 1, \"cell\": {}}").unwrap();
        std::fs::create_dir_all(run.join("checkpoint")).unwrap();
        std::fs::write(run.join("checkpoint/progress.json"), b"{\"epoch\": 1}").unwrap();
        std::fs::write(run.join("results/.x.json.1.tmp"), b"{").unwrap();
        let paths = |at: &Path| {
            collect(at).unwrap().into_iter().map(|(p, r)| (p.canonicalize().unwrap(), r.is_ok())).collect::<Vec<_>>()
        };
        let both = vec![(p.canonicalize().unwrap(), true), (q.canonicalize().unwrap(), true)];
        assert_eq!(paths(dir.path()), both, "a tree of runs");
        assert_eq!(paths(&dir.path().join("runs")), both);
        assert_eq!(paths(&run), both[..1], "a run folder");
        assert_eq!(paths(&run.join("results")), both[..1], "the results folder itself");
        assert_eq!(paths(&p), both[..1], "one record file");
        // A results folder reached under another name (a link `latest` to it).
        #[cfg(unix)]
        {
            let link = dir.path().join("latest");
            std::os::unix::fs::symlink(run.join("results"), &link).unwrap();
            assert_eq!(paths(&link), both[..1]);
            std::fs::remove_file(&link).unwrap();
        }
        // A record copied outside a results folder is still found, by its content.
        std::fs::copy(&p, dir.path().join("copy.json")).unwrap();
        assert_eq!(collect(dir.path()).unwrap().len(), 3);
        // A broken file in a results folder is reported with its path, not skipped.
        let bad = run.join("results").join("broken.json");
        std::fs::write(&bad, b"{\"schema_version\": 2, \"evalu").unwrap();
        let all = collect(&run).unwrap();
        let (bp, br) = all.iter().find(|(p, _)| p.ends_with("broken.json")).expect("listed");
        let e = br.as_ref().unwrap_err().to_string();
        assert!(e.contains(bp.to_str().unwrap()) && e.contains("not valid JSON"), "{e}");
        // A missing path is an error naming it.
        assert!(collect(&dir.path().join("nope")).unwrap_err().to_string().contains("nope"));
    }
}
