//! Image retrieval on frozen features: every test image is a query against a gallery (the train
//! split by default), ranked by cosine similarity or Euclidean distance; a gallery image is
//! relevant when its class is the query's. The paper shows this as a figure (Figure 3:
//! relational reasoning against RotationNet); relnet prints the numbers too.
//!
//! Definitions, for a query with `R` relevant gallery images and `rel(i)` = 1 when the image at
//! rank `i` (from 1) is relevant:
//! - precision@k = sum(rel(1..k)) / k (k capped at the gallery size);
//! - recall@k = sum(rel(1..k)) / R;
//! - hit@k = 1 when some image of the first k is relevant (what metric-learning papers call
//!   "Recall@k");
//! - AP = (1 / R) sum over relevant ranks i of precision@i, over the full ranking; mAP its mean.
//!
//! precision@k and hit@k average over all queries (a query whose class is absent from the
//! gallery scores 0); recall@k and mAP are undefined for such a query and average over the
//! others (the record counts them in `queries_without_relevant`). Equal scores rank the lower
//! gallery index first. When the gallery is the query split, a query never retrieves itself.

use std::path::PathBuf;
use std::time::Instant;

use burn::prelude::*;
use rand::SeedableRng;
use rand::seq::index::sample;
use rayon::prelude::*;
use relnet_core::config::{ConfigError, check_range};
use relnet_core::data::ImageSet;
use relnet_core::data::registry::Split;
use relnet_core::record::ResultRecord;
use relnet_core::{Error, Result};
use serde::{Deserialize, Serialize};

use crate::features::Features;
use crate::knn::{dot_blocks, l2_normalized, nearer};
use crate::plot::retrieval::{GridRow, Thumb, grid_png};
use crate::{EvalContext, EvaluatorOptions};

/// How gallery images are ranked.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum Distance {
    /// Cosine similarity of the features (largest first).
    Cosine,
    /// Euclidean distance of the raw features (smallest first).
    Euclidean,
}

/// Options of retrieval (`[evaluator] kind = "retrieval"`).
#[derive(clap::Args, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct RetrievalOptions {
    /// Gallery split (default: the dataset's train split); queries are the test split.
    #[arg(long, value_name = "SPLIT")]
    pub gallery: Option<Split>,
    /// Ranking.
    #[arg(long, value_enum, default_value_t = Distance::Cosine)]
    pub distance: Distance,
    /// Cut-offs of precision@k, recall@k and hit@k (comma-separated).
    #[arg(long = "k", value_delimiter = ',', default_values_t = [1, 5, 10, 20, 50])]
    pub k: Vec<usize>,
    /// Draw N queries, chosen with the seed, each with its top-10 neighbours, into --out.
    #[arg(long, value_name = "N")]
    pub show: Option<usize>,
    /// Draw these queries (test-split indices, comma-separated) instead of random ones.
    #[arg(long, value_delimiter = ',', value_name = "I,J,...")]
    pub queries: Vec<usize>,
    /// The PNG file of --show / --queries.
    #[arg(long, value_name = "FILE.png")]
    pub out: Option<PathBuf>,
}

impl Default for RetrievalOptions {
    fn default() -> Self {
        relnet_core::config::clap_defaults()
    }
}

/// Neighbours drawn per query in the figure.
pub const SHOWN_NEIGHBOURS: usize = 10;

impl EvaluatorOptions for RetrievalOptions {
    const NAME: &'static str = "retrieval";

    fn spec(&self) -> crate::EvaluatorSpec {
        crate::EvaluatorSpec {
            name: "retrieval",
            about: "Retrieval of test images from a gallery: precision@k, recall@k, mAP; --show N draws the neighbours",
            order: 3,
            report: &[("map", "mAP"), ("precision_at_10", "P@10")],
            headline: &["map", "precision_at_*", "recall_at_*"],
            frozen_features: true,
        }
    }

    fn validate(&self) -> std::result::Result<(), ConfigError> {
        if self.k.is_empty() {
            return Err(ConfigError::key("k", "at least one cut-off is needed"));
        }
        for &k in &self.k {
            check_range("k", k, 1, 1_000_000)?;
        }
        if let Some(n) = self.show {
            check_range("show", n, 1, 100)?;
        }
        if (self.show.is_some() || !self.queries.is_empty()) && self.out.is_none() {
            return Err(ConfigError::key("out", "a PNG file is needed to draw queries (show or queries given)"));
        }
        if self.queries.len() > 100 {
            return Err(ConfigError::key("queries", "at most 100 queries can be drawn"));
        }
        Ok(())
    }

    fn run(&self, ctx: &mut EvalContext) -> Result<ResultRecord> {
        let gallery_split = self.gallery.unwrap_or(ctx.info.train_split);
        let query_split = ctx.info.test_split;
        let gallery = ctx.features(gallery_split)?;
        let query = ctx.features(query_split)?;
        let drawn: Vec<usize> = if !self.queries.is_empty() {
            if let Some(&bad) = self.queries.iter().find(|&&q| q >= query.n) {
                return Err(Error::Invalid(format!(
                    "query {bad} does not exist: the {} split has {} images",
                    query_split.as_str(),
                    query.n
                )));
            }
            self.queries.clone()
        } else if let Some(n) = self.show {
            let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(relnet_core::streams::stream(
                ctx.seed,
                relnet_core::streams::Purpose::RetrievalQueries,
                &[],
            ));
            let mut v = sample(&mut rng, query.n, n.min(query.n)).into_vec();
            v.sort_unstable();
            v
        } else {
            Vec::new()
        };
        let t = Instant::now();
        let r = retrieve(&gallery, &query, &self.k, self.distance, gallery_split == query_split, &drawn, &ctx.device);
        let seconds = t.elapsed().as_secs_f64();
        ctx.report.line(&format!(
            "retrieval of {} queries against {} gallery features in {seconds:.2} s: mAP {:.2}%, {}",
            query.n,
            gallery.n,
            100.0 * r.map,
            self.k
                .iter()
                .zip(&r.precision)
                .map(|(k, p)| format!("P@{k} {:.2}%", 100.0 * p))
                .collect::<Vec<_>>()
                .join(", ")
        ));
        let mut record = ctx.record(Self::NAME, self, None, query_split.as_str());
        record.metrics.insert("map".into(), 100.0 * r.map);
        for (i, k) in self.k.iter().enumerate() {
            record.metrics.insert(format!("precision_at_{k}"), 100.0 * r.precision[i]);
            record.metrics.insert(format!("recall_at_{k}"), 100.0 * r.recall[i]);
            record.metrics.insert(format!("hit_at_{k}"), 100.0 * r.hit[i]);
        }
        record.metrics.insert("queries".into(), query.n as f64);
        record.metrics.insert("gallery_images".into(), gallery.n as f64);
        record.metrics.insert("queries_without_relevant".into(), r.without_relevant as f64);
        record.metrics.insert("retrieval_seconds".into(), seconds);
        record.metrics.insert("gallery_is_train".into(), (gallery_split == ctx.info.train_split) as u8 as f64);
        if let Some(out) = &self.out {
            let names = ctx.class_names().to_vec();
            let qimg = ctx.info.load(query_split, &ctx.root)?.images;
            let gimg = if gallery_split == query_split {
                qimg.clone()
            } else {
                ctx.info.load(gallery_split, &ctx.root)?.images
            };
            let class = |l: i64| names.get(l as usize).cloned().unwrap_or_else(|| format!("class {l}"));
            let rows: Vec<GridRow> = drawn
                .iter()
                .zip(&r.top)
                .map(|(&q, top)| GridRow {
                    query: thumb(&qimg, q, class(query.labels[q])),
                    neighbours: top
                        .iter()
                        .map(|&g| {
                            (
                                thumb(&gimg, g as usize, class(gallery.labels[g as usize])),
                                gallery.labels[g as usize] == query.labels[q],
                            )
                        })
                        .collect(),
                })
                .collect();
            let title = format!(
                "{} retrieval, {} ({} queries of {}, gallery {}; green: same class)",
                ctx.config.dataset,
                ctx.artifact.path.display(),
                rows.len(),
                query_split.as_str(),
                gallery_split.as_str()
            );
            grid_png(out, &rows, &title)?;
            ctx.report.line(&format!("retrieval figure written to {}", out.display()));
            record.outputs.insert("figure".into(), out.clone());
        }
        Ok(record)
    }
}

/// Image `i` of a set as an RGB thumbnail.
fn thumb(set: &ImageSet, i: usize, class: String) -> Thumb {
    let per = set.height * set.width * set.channels;
    let px = &set.pixels[i * per..(i + 1) * per];
    let rgb = if set.channels == 3 { px.to_vec() } else { px.iter().flat_map(|&v| [v, v, v]).collect() };
    Thumb { rgb, height: set.height, width: set.width, class }
}

/// Retrieval metrics (fractions) and the top neighbours of the drawn queries.
#[derive(Clone, Debug, PartialEq)]
pub struct Retrieval {
    pub precision: Vec<f64>,
    pub recall: Vec<f64>,
    pub hit: Vec<f64>,
    pub map: f64,
    pub without_relevant: usize,
    /// For each drawn query, its first [`SHOWN_NEIGHBOURS`] gallery indices.
    pub top: Vec<Vec<u32>>,
}

/// What one query contributes.
struct QueryScore {
    hits: Vec<usize>,
    relevant: usize,
    ap: f64,
    /// Length of the ranking (the gallery, less the query itself when it is in it).
    ranked: usize,
}

/// Ranks the whole gallery for every query (similarities as GEMMs on `device`, in blocks) and
/// computes the metrics of the module's definitions for each cut-off of `ks`.
pub fn retrieve(
    gallery: &Features,
    query: &Features,
    ks: &[usize],
    distance: Distance,
    same_split: bool,
    drawn: &[usize],
    device: &Device,
) -> Retrieval {
    let normalised;
    let (g, q): (&[f32], &[f32]) = match distance {
        Distance::Cosine => {
            normalised = (l2_normalized(gallery), l2_normalized(query));
            (&normalised.0, &normalised.1)
        }
        Distance::Euclidean => (&gallery.data, &query.data),
    };
    // Euclidean: |q - g|^2 = |q|^2 + |g|^2 - 2 q.g ranks like the score 2 q.g - |g|^2 (larger first).
    let g_sq: Vec<f32> = g.chunks_exact(gallery.dim.max(1)).map(|r| r.iter().map(|v| v * v).sum()).collect();
    let mut scores: Vec<QueryScore> = Vec::with_capacity(query.n);
    let mut top = vec![Vec::new(); drawn.len()];
    dot_blocks(g, q, query.dim, device, |start, sims| {
        let part: Vec<(QueryScore, Option<Vec<u32>>)> = sims
            .par_chunks(gallery.n)
            .enumerate()
            .map(|(r, row)| {
                let qi = start + r;
                let mut ranked: Vec<(f32, u32)> = row
                    .iter()
                    .enumerate()
                    .filter(|&(j, _)| !(same_split && j == qi))
                    .map(|(j, &s)| (if distance == Distance::Euclidean { 2.0 * s - g_sq[j] } else { s }, j as u32))
                    .collect();
                ranked.sort_unstable_by(nearer);
                let ids: Vec<u32> = ranked.iter().map(|&(_, j)| j).collect();
                let keep = drawn.contains(&qi).then(|| ids.iter().take(SHOWN_NEIGHBOURS).copied().collect());
                (score_ranking(&ids, &gallery.labels, query.labels[qi], ks), keep)
            })
            .collect();
        for (r, (s, keep)) in part.into_iter().enumerate() {
            if let Some(t) = keep {
                for (slot, &d) in drawn.iter().enumerate() {
                    if d == start + r {
                        top[slot] = t.clone();
                    }
                }
            }
            scores.push(s);
        }
    });
    aggregate(&scores, ks, top)
}

/// Hits at each cut-off, relevant count and average precision of one full ranking.
fn score_ranking(ranked: &[u32], labels: &[i64], truth: i64, ks: &[usize]) -> QueryScore {
    let (mut found, mut ap) = (0usize, 0.0f64);
    let mut hits = vec![0usize; ks.len()];
    for (rank, &j) in ranked.iter().enumerate() {
        if labels[j as usize] == truth {
            found += 1;
            ap += found as f64 / (rank + 1) as f64;
        }
        for (h, &k) in hits.iter_mut().zip(ks) {
            if rank + 1 == k {
                *h = found;
            }
        }
    }
    for (h, &k) in hits.iter_mut().zip(ks) {
        if k > ranked.len() {
            *h = found;
        }
    }
    QueryScore { ap: if found > 0 { ap / found as f64 } else { 0.0 }, relevant: found, hits, ranked: ranked.len() }
}

fn aggregate(scores: &[QueryScore], ks: &[usize], top: Vec<Vec<u32>>) -> Retrieval {
    let n = scores.len().max(1) as f64;
    let with: Vec<&QueryScore> = scores.iter().filter(|s| s.relevant > 0).collect();
    let m = with.len().max(1) as f64;
    Retrieval {
        precision: ks
            .iter()
            .enumerate()
            .map(|(i, &k)| scores.iter().map(|s| s.hits[i] as f64 / k.min(s.ranked).max(1) as f64).sum::<f64>() / n)
            .collect(),
        recall: ks
            .iter()
            .enumerate()
            .map(|(i, _)| with.iter().map(|s| s.hits[i] as f64 / s.relevant as f64).sum::<f64>() / m)
            .collect(),
        hit: ks.iter().enumerate().map(|(i, _)| scores.iter().filter(|s| s.hits[i] > 0).count() as f64 / n).collect(),
        map: with.iter().map(|s| s.ap).sum::<f64>() / m,
        without_relevant: scores.len() - with.len(),
        top,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn feats(rows: &[[f32; 2]], labels: &[i64], classes: usize) -> Features {
        Features {
            data: rows.iter().flatten().copied().collect(),
            n: rows.len(),
            dim: 2,
            labels: labels.to_vec(),
            classes,
        }
    }

    fn close(a: f64, b: f64) -> bool {
        (a - b).abs() < 1e-9
    }

    #[test]
    fn metrics_match_the_hand_computed_answer_with_ties_and_an_absent_class() {
        // Cosine similarities to query 0 = (1, 0): g0 1, g1 0.707, g2 0, g3 0.707 (a tie with g1:
        // the lower index ranks first), g4 -1. Ranking g0+ g1- g3+ g2+ g4-: R = 3,
        // AP = (1/1 + 2/3 + 3/4) / 3 = 29/36.
        let gallery = feats(&[[1.0, 0.0], [1.0, 1.0], [0.0, 1.0], [1.0, 1.0], [-1.0, 0.0]], &[0, 1, 0, 0, 1], 3);
        // Query 1 is of class 2, which the gallery lacks. Query 2 = (-1, 0), class 1: ranking
        // g4+ g2- g1+ g3- g0-: R = 2, AP = (1 + 2/3) / 2 = 5/6.
        let query = feats(&[[1.0, 0.0], [0.0, 1.0], [-1.0, 0.0]], &[0, 2, 1], 3);
        let r = retrieve(&gallery, &query, &[1, 2, 3, 5, 50], Distance::Cosine, false, &[0, 2], &Device::flex());
        let expect_p = [2.0 / 3.0, 1.0 / 3.0, 4.0 / 9.0, 1.0 / 3.0, 1.0 / 3.0]; // k = 50 is capped at the 5 gallery images
        let expect_r = [5.0 / 12.0, 5.0 / 12.0, 5.0 / 6.0, 1.0, 1.0];
        for i in 0..5 {
            assert!(close(r.precision[i], expect_p[i]), "P@{i}: {} vs {}", r.precision[i], expect_p[i]);
            assert!(close(r.recall[i], expect_r[i]), "R@{i}: {} vs {}", r.recall[i], expect_r[i]);
            assert!(close(r.hit[i], 2.0 / 3.0), "hit@{i}");
        }
        assert!(close(r.map, (29.0 / 36.0 + 5.0 / 6.0) / 2.0), "mAP {}", r.map);
        assert_eq!(r.without_relevant, 1);
        assert_eq!(r.top, vec![vec![0, 1, 3, 2, 4], vec![4, 2, 1, 3, 0]]);
    }

    #[test]
    fn euclidean_ranks_by_distance_and_a_query_never_retrieves_itself() {
        // Cosine puts the far (10, 0) first for (1, 0); Euclidean the near (0.9, 0.3).
        let gallery = feats(&[[10.0, 0.0], [0.9, 0.3]], &[0, 1], 2);
        let query = feats(&[[1.0, 0.0]], &[1], 2);
        let d = Device::flex();
        assert_eq!(retrieve(&gallery, &query, &[1], Distance::Cosine, false, &[0], &d).top, vec![vec![0, 1]]);
        let e = retrieve(&gallery, &query, &[1], Distance::Euclidean, false, &[0], &d);
        assert_eq!(e.top, vec![vec![1, 0]]);
        assert!(close(e.precision[0], 1.0) && close(e.map, 1.0));
        // The gallery is the query split: each point's own copy is skipped.
        let set = feats(&[[1.0, 0.0], [0.9, 0.1], [0.0, 1.0]], &[0, 0, 1], 2);
        let s = retrieve(&set, &set, &[1, 2], Distance::Cosine, true, &[0, 1, 2], &d);
        assert_eq!(s.top, vec![vec![1, 2], vec![0, 2], vec![1, 0]]);
        assert!(close(s.precision[0], 2.0 / 3.0), "the class-1 query's only candidates are of class 0");
        assert_eq!(s.without_relevant, 1);
    }

    #[test]
    fn agrees_with_the_definition_written_out_on_random_features() {
        // Small integer features: every distance is exact in f32, so the written-out ranking
        // (with its many ties, to the lower index) must be the same ranking.
        use rand::Rng;
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(7);
        let mut make = |n: usize| {
            let data: Vec<f32> = (0..n * 6).map(|_| rng.random_range(-3i32..=3) as f32).collect();
            let labels: Vec<i64> = (0..n).map(|_| rng.random_range(0..4)).collect();
            Features { data, n, dim: 6, labels, classes: 4 }
        };
        let (gallery, query) = (make(300), make(40));
        let ks = [1, 5, 10, 20, 50];
        let r = retrieve(&gallery, &query, &ks, Distance::Euclidean, false, &[], &Device::flex());
        let (g, q) = (&gallery.data, &query.data);
        let (mut map, mut p10) = (0.0, 0.0);
        for i in 0..query.n {
            let mut all: Vec<(f32, usize)> = (0..gallery.n)
                .map(|j| ((0..6).map(|c| (q[i * 6 + c] - g[j * 6 + c]).powi(2)).sum::<f32>(), j))
                .collect();
            all.sort_by(|a, b| a.0.partial_cmp(&b.0).unwrap().then(a.1.cmp(&b.1)));
            let rel: Vec<bool> = all.iter().map(|&(_, j)| gallery.labels[j] == query.labels[i]).collect();
            let total = rel.iter().filter(|&&x| x).count() as f64;
            let mut ap = 0.0;
            for k in 1..=rel.len() {
                if rel[k - 1] {
                    ap += rel[..k].iter().filter(|&&x| x).count() as f64 / k as f64;
                }
            }
            map += ap / total;
            p10 += rel[..10].iter().filter(|&&x| x).count() as f64 / 10.0;
        }
        assert!((r.map - map / 40.0).abs() < 1e-12, "{} vs {}", r.map, map / 40.0);
        assert!((r.precision[2] - p10 / 40.0).abs() < 1e-9);
    }
}
