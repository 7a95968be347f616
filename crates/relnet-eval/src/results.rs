//! `relnet results DIR`: the records under a folder as one table.
//!
//! `DIR` may be a run folder, a `results/` folder, a tree of runs or one record file
//! ([`relnet_core::record::collect`]). Every record's checksum is verified: the last column says
//! `ok`, `unverified` (a schema version 1 record, written before checksums) or `EDITED` (its
//! content changed after relnet wrote it), and a note below the table names each edited or
//! unreadable file and why. Edited records are still listed, with the figures the file now holds.

use std::path::Path;

use relnet_core::Result;
use relnet_core::record::{Integrity, collect};

/// The table of [`listing`] and what it found.
#[derive(Debug, Clone, PartialEq)]
pub struct Listing {
    /// The Markdown table and the notes below it.
    pub text: String,
    /// Records whose checksum verifies.
    pub verified: usize,
    /// Records without a checksum (schema version 1).
    pub unverified: usize,
    /// Records edited after they were written (listed, marked `EDITED`, named below the table).
    pub edited: usize,
    /// Files that are not readable records (named below the table).
    pub unreadable: usize,
}

impl Listing {
    /// Whether every record read and none was edited (unverified ones are fine).
    pub fn trusted(&self) -> bool {
        self.edited == 0 && self.unreadable == 0
    }
}

/// The records under `dir` as a Markdown table (problems listed after it).
pub fn table(dir: &Path) -> Result<String> {
    Ok(listing(dir)?.text)
}

/// The records at `dir` (folder or file) as a Markdown table with each record's verification,
/// then a note naming every edited or unreadable file.
pub fn listing(dir: &Path) -> Result<Listing> {
    let mut rows = Vec::new();
    let mut edited = Vec::new();
    let mut bad = Vec::new();
    let (mut verified, mut unverified) = (0, 0);
    // Paths in the table relative to `dir` (its folder when `dir` is a record file).
    let base = if dir.is_dir() { dir } else { dir.parent().unwrap_or(Path::new("")) };
    for (path, rec) in collect(dir)? {
        match rec {
            Ok((r, integrity)) => {
                let backbone = r.backbone.path.strip_prefix(base).unwrap_or(&r.backbone.path).display().to_string();
                let metrics: Vec<String> = r
                    .metrics
                    .iter()
                    .filter(|(k, _)| {
                        k.contains("accuracy") || k.starts_with("top1") || *k == "map" || k.starts_with("precision_at_")
                    })
                    .map(|(k, v)| format!("{k} {v:.2}"))
                    .collect();
                let options = match &r.options {
                    serde_json::Value::Object(m) => m
                        .iter()
                        .filter(|(_, v)| !v.is_null())
                        .map(|(k, v)| format!("{k}={v}"))
                        .collect::<Vec<_>>()
                        .join(" "),
                    _ => String::new(),
                };
                let dataset = match &r.source_dataset {
                    Some(src) if src != &r.dataset => format!("{src} -> {}", r.dataset),
                    _ => r.dataset.clone(),
                };
                let check = match &integrity {
                    Integrity::Verified => {
                        verified += 1;
                        "ok".to_string()
                    }
                    Integrity::Unverified => {
                        unverified += 1;
                        "unverified".to_string()
                    }
                    Integrity::Edited { problem } => {
                        let shown = path.strip_prefix(base).unwrap_or(&path).display().to_string();
                        let shown = if shown.is_empty() { path.display().to_string() } else { shown };
                        edited.push(format!("{}: {problem}", path.display()));
                        format!("**EDITED** ({shown})")
                    }
                };
                rows.push(format!(
                    "| {} | {} | {} | {} ({}, {}) | {} | {} | {:.1} | {} |",
                    r.evaluator,
                    dataset,
                    r.eval_split,
                    backbone,
                    r.backbone.kind,
                    &r.backbone.sha256[..r.backbone.sha256.len().min(8)],
                    metrics.join(", "),
                    options,
                    r.wall_seconds,
                    check
                ));
            }
            Err(e) => bad.push(format!("unreadable: {e}")),
        }
    }
    let mut out = String::from(
        "| evaluator | dataset (source -> target) | split | backbone (kind, sha256) | metrics (%) | options | seconds | record |\n|---|---|---|---|---|---|---|---|\n",
    );
    for r in &rows {
        out.push_str(r);
        out.push('\n');
    }
    if rows.is_empty() {
        out.push_str("(no result records)\n");
    }
    if !edited.is_empty() {
        out.push_str(&format!(
            "\nEDITED: {} record{} changed after relnet wrote {} (checksum mismatch): {} figures are not what the evaluation measured:\n",
            edited.len(),
            if edited.len() == 1 { "" } else { "s" },
            if edited.len() == 1 { "it" } else { "them" },
            if edited.len() == 1 { "its" } else { "their" },
        ));
        for e in &edited {
            out.push_str(&format!("  {e}\n"));
        }
    }
    if unverified > 0 {
        out.push_str(&format!(
            "\nunverified: {unverified} record{} written before records carried a checksum (schema version 1): {} content cannot be verified\n",
            if unverified == 1 { "" } else { "s" },
            if unverified == 1 { "its" } else { "their" },
        ));
    }
    if !bad.is_empty() {
        out.push('\n');
    }
    for b in &bad {
        out.push_str(b);
        out.push('\n');
    }
    Ok(Listing { text: out, verified, unverified, edited: edited.len(), unreadable: bad.len() })
}

#[cfg(test)]
mod tests {
    use super::*;
    use relnet_core::record::{ArtifactRef, ResultRecord};

    fn save(dir: &Path, seed: u64) -> std::path::PathBuf {
        let a = ArtifactRef { path: dir.join("backbone.bpk"), sha256: "ab".repeat(32), kind: "conv4".into() };
        let mut r =
            ResultRecord::new("linear", serde_json::json!({"epochs": 10}), a, "synthetic", seed, Some("train"), "test");
        r.metrics.insert("test_accuracy".into(), 66.0);
        r.save(dir).unwrap()
    }

    #[test]
    fn the_table_marks_edited_and_unverified_records_and_names_the_edited_file() {
        let dir = tempfile::tempdir().unwrap();
        let run = dir.path().join("run");
        let ok = save(&run, 1);
        let edited = save(&run, 2);
        let legacy = save(&run, 3);
        let text = std::fs::read_to_string(&edited).unwrap();
        std::fs::write(&edited, text.replace("66.0", "99.0")).unwrap();
        let mut v: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&legacy).unwrap()).unwrap();
        v.as_object_mut().unwrap().remove("checksum");
        v["schema_version"] = 1.into();
        std::fs::write(&legacy, serde_json::to_vec_pretty(&v).unwrap()).unwrap();
        std::fs::write(run.join("results/broken.json"), b"[1, 2").unwrap();

        for at in [dir.path(), run.as_path(), run.join("results").as_path()] {
            let l = listing(at).unwrap();
            assert_eq!((l.verified, l.unverified, l.edited, l.unreadable), (1, 1, 1, 1), "{}", l.text);
            assert!(!l.trusted());
            let row = |needle: &str| {
                l.text
                    .lines()
                    .find(|x| x.starts_with("| linear") && x.contains(needle))
                    .unwrap_or_else(|| panic!("no row with {needle}: {}", l.text))
                    .to_string()
            };
            assert!(
                row("test_accuracy 99.00").ends_with(&format!("({}) |", edited.strip_prefix(at).unwrap().display())),
                "{}",
                l.text
            );
            assert!(row("test_accuracy 99.00").contains("**EDITED**"), "{}", l.text);
            assert_eq!(l.text.lines().filter(|x| x.ends_with("| ok |")).count(), 1, "{}", l.text);
            assert_eq!(l.text.lines().filter(|x| x.ends_with("| unverified |")).count(), 1, "{}", l.text);
            let note = l.text.split("\nEDITED:").nth(1).expect("a note below the table");
            assert!(note.contains(&edited.display().to_string()) && note.contains("checksum mismatch"), "{}", l.text);
            assert!(l.text.contains("unreadable: ") && l.text.contains("broken.json"), "{}", l.text);
            assert!(!l.text.contains(&ok.display().to_string()), "a verified record needs no note: {}", l.text);
        }
        // One record file.
        let l = listing(&ok).unwrap();
        assert_eq!((l.verified, l.unverified, l.edited, l.unreadable), (1, 0, 0, 0), "{}", l.text);
        assert!(l.trusted());
    }
}
