//! `relnet results DIR`: the records under a folder as one table.

use std::path::Path;

use relnet_core::Result;
use relnet_core::record::collect;

/// The records under `dir` as a Markdown table (unreadable files listed after it).
pub fn table(dir: &Path) -> Result<String> {
    let mut rows = Vec::new();
    let mut bad = Vec::new();
    for (_, rec) in collect(dir)? {
        match rec {
            Ok(r) => {
                let backbone = r.backbone.path.strip_prefix(dir).unwrap_or(&r.backbone.path).display().to_string();
                let metrics: Vec<String> = r
                    .metrics
                    .iter()
                    .filter(|(k, _)| k.contains("accuracy") || k.starts_with("top1") || *k == "map" || k.starts_with("precision_at_"))
                    .map(|(k, v)| format!("{k} {v:.2}"))
                    .collect();
                let options = match &r.options {
                    serde_json::Value::Object(m) => m.iter().filter(|(_, v)| !v.is_null()).map(|(k, v)| format!("{k}={v}")).collect::<Vec<_>>().join(" "),
                    _ => String::new(),
                };
                let dataset = match &r.source_dataset {
                    Some(src) if src != &r.dataset => format!("{src} -> {}", r.dataset),
                    _ => r.dataset.clone(),
                };
                rows.push(format!(
                    "| {} | {} | {} | {} ({}, {}) | {} | {} | {:.1} |",
                    r.evaluator,
                    dataset,
                    r.eval_split,
                    backbone,
                    r.backbone.kind,
                    &r.backbone.sha256[..r.backbone.sha256.len().min(8)],
                    metrics.join(", "),
                    options,
                    r.wall_seconds
                ));
            }
            Err(e) => bad.push(format!("unreadable: {e}")),
        }
    }
    let mut out = String::from("| evaluator | dataset (source -> target) | split | backbone (kind, sha256) | metrics (%) | options | seconds |\n|---|---|---|---|---|---|---|\n");
    for r in &rows {
        out.push_str(r);
        out.push('\n');
    }
    if rows.is_empty() {
        out.push_str("(no result records)\n");
    }
    for b in bad {
        out.push_str(&b);
        out.push('\n');
    }
    Ok(out)
}
