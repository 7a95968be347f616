//! Weighted k-nearest-neighbour classification on frozen features (the protocol solo-learn and
//! lightly report; Wu et al. 2018): features L2-normalised, cosine similarity of every query to
//! every gallery feature, the k most similar vote for their class with weight `exp(sim / T)`,
//! the class with the largest sum wins. Defaults: k = 20 and 200, T = 0.07.
//!
//! Ties are broken deterministically: among equal similarities the lower gallery index is the
//! nearer neighbour, and among equal class scores the lower class wins.

use std::collections::BTreeMap;
use std::time::Instant;

use burn::prelude::*;
use burn::tensor::TensorData;
use rayon::prelude::*;
use relnet_core::Result;
use relnet_core::config::{ConfigError, check_range};
use relnet_core::data::DataRoot;
use relnet_core::data::registry::lookup;
use relnet_core::methods::supervised::labels_of;
use relnet_core::pretrain::Monitor;
use relnet_core::record::ResultRecord;
use relnet_models::Backbone;
use serde::{Deserialize, Serialize};

use crate::features::{EvalSplit, Features, extract, load_split};
use crate::{EvalContext, EvaluatorOptions};

/// Options of the kNN evaluator (`[evaluator] kind = "knn"`).
#[derive(clap::Args, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct KnnOptions {
    /// Neighbour counts to report (comma-separated).
    #[arg(long = "k", value_delimiter = ',', default_values_t = [20, 200])]
    pub k: Vec<usize>,
    /// Temperature of the vote weights exp(sim / T).
    #[arg(long, default_value_t = 0.07)]
    pub temperature: f64,
}

impl Default for KnnOptions {
    fn default() -> Self {
        relnet_core::config::clap_defaults()
    }
}

impl EvaluatorOptions for KnnOptions {
    const NAME: &'static str = "knn";

    fn spec(&self) -> crate::EvaluatorSpec {
        crate::EvaluatorSpec {
            name: "knn",
            about: "Weighted kNN on L2-normalised frozen features (k = 20 and 200, T = 0.07)",
            order: 2,
            report: &[("top1_k20", "k=20"), ("top1_k200", "k=200")],
            headline: &["top1_*"],
            frozen_features: true,
        }
    }

    fn validate(&self) -> std::result::Result<(), ConfigError> {
        if self.k.is_empty() {
            return Err(ConfigError::key("k", "at least one neighbour count is needed"));
        }
        for &k in &self.k {
            check_range("k", k, 1, 10_000)?;
        }
        if !(self.temperature > 0.0 && self.temperature <= 100.0) {
            return Err(ConfigError::key(
                "temperature",
                format!("value {} out of range (allowed (0, 100])", self.temperature),
            ));
        }
        Ok(())
    }

    fn run(&self, ctx: &mut EvalContext) -> Result<ResultRecord> {
        let train = ctx.features(ctx.info.train_split)?;
        let test = ctx.features(ctx.info.test_split)?;
        let t = Instant::now();
        let acc = knn_accuracy(&train, &test, &self.k, self.temperature as f32, &ctx.device);
        ctx.report.line(&format!(
            "kNN of {} queries against {} gallery features in {:.2} s",
            test.n,
            train.n,
            t.elapsed().as_secs_f64()
        ));
        let mut record = ctx.record(Self::NAME, self, None, ctx.info.test_split.as_str());
        for (k, a) in acc {
            record.metrics.insert(format!("top1_k{k}"), 100.0 * a);
        }
        record.metrics.insert("knn_seconds".into(), t.elapsed().as_secs_f64());
        Ok(record)
    }
}

/// Rows scaled to unit L2 norm (zero rows stay zero).
pub fn l2_normalized(f: &Features) -> Vec<f32> {
    l2_normalize_rows(&f.data, f.dim)
}

/// Rows of `data` (`dim` wide) scaled to unit L2 norm (zero rows stay zero).
pub fn l2_normalize_rows(data: &[f32], dim: usize) -> Vec<f32> {
    let mut out = data.to_vec();
    for row in out.chunks_exact_mut(dim.max(1)) {
        let norm = row.iter().map(|v| v * v).sum::<f32>().sqrt();
        if norm > 0.0 {
            row.iter_mut().for_each(|v| *v /= norm);
        }
    }
    out
}

/// Dot products of every row of `query` with every row of `gallery` (both `dim` wide,
/// row-major), as GEMMs on `device` in blocks of 256 queries: `each(first_query, sims)` receives
/// each block's `rows x gallery rows` similarities, row-major.
pub fn dot_blocks(gallery: &[f32], query: &[f32], dim: usize, device: &Device, mut each: impl FnMut(usize, &[f32])) {
    let (n_g, n_q) = (gallery.len() / dim.max(1), query.len() / dim.max(1));
    let g = Tensor::<2>::from_data(TensorData::new(gallery.to_vec(), [n_g, dim]), device).transpose();
    let block = 256;
    for start in (0..n_q).step_by(block) {
        let end = (start + block).min(n_q);
        let qb =
            Tensor::<2>::from_data(TensorData::new(query[start * dim..end * dim].to_vec(), [end - start, dim]), device);
        let sims: Vec<f32> = qb.matmul(g.clone()).into_data().iter::<f32>().collect();
        each(start, &sims);
    }
}

/// `(similarity, gallery index)` ordered nearest first: larger similarity, then lower index.
pub(crate) fn nearer(a: &(f32, u32), b: &(f32, u32)) -> std::cmp::Ordering {
    b.0.total_cmp(&a.0).then(a.1.cmp(&b.1))
}

/// The class predicted from neighbours (nearest first) by the weighted vote over the first `k`.
pub fn vote(neighbours: &[(f32, u32)], labels: &[i64], classes: usize, k: usize, temperature: f32) -> i64 {
    let mut scores = vec![0.0f64; classes.max(1)];
    for &(sim, j) in neighbours.iter().take(k) {
        scores[labels[j as usize] as usize] += ((sim / temperature) as f64).exp();
    }
    let mut best = 0;
    for c in 1..scores.len() {
        if scores[c] > scores[best] {
            best = c;
        }
    }
    best as i64
}

/// Top-1 accuracy (fraction) of the weighted kNN of every `query` row against `gallery`, for
/// each k of `ks`. Similarities are computed as GEMMs on `device` in blocks of queries.
pub fn knn_accuracy(
    gallery: &Features,
    query: &Features,
    ks: &[usize],
    temperature: f32,
    device: &Device,
) -> Vec<(usize, f64)> {
    let kmax = ks.iter().copied().max().unwrap_or(1).min(gallery.n).max(1);
    let classes = gallery.classes.max(query.classes);
    let mut hits = vec![0usize; ks.len()];
    dot_blocks(&l2_normalized(gallery), &l2_normalized(query), query.dim, device, |start, sims| {
        let row_hits: Vec<Vec<bool>> = sims
            .par_chunks(gallery.n)
            .enumerate()
            .map(|(r, row)| {
                let mut cand: Vec<(f32, u32)> = row.iter().enumerate().map(|(j, &s)| (s, j as u32)).collect();
                if kmax < cand.len() {
                    cand.select_nth_unstable_by(kmax - 1, nearer);
                    cand.truncate(kmax);
                }
                cand.sort_unstable_by(nearer);
                let truth = query.labels[start + r];
                ks.iter().map(|&k| vote(&cand, &gallery.labels, classes, k, temperature) == truth).collect()
            })
            .collect();
        for h in row_hits {
            for (i, hit) in h.into_iter().enumerate() {
                hits[i] += hit as usize;
            }
        }
    });
    ks.iter().zip(hits).map(|(&k, h)| (k, h as f64 / query.n.max(1) as f64)).collect()
}

/// `--monitor knn:EVERY` during pretraining: the kNN accuracy (k = 20 and 200, T = 0.07) of the
/// eval-mode backbone, the train split as gallery and the test split as queries.
pub struct KnnMonitor {
    dataset: String,
    every: usize,
    train: EvalSplit,
    test: EvalSplit,
    device: Device,
}

impl KnnMonitor {
    pub fn new(dataset: &str, data_root: Option<&std::path::Path>, every: usize, device: Device) -> Result<Self> {
        let info = lookup(dataset)?;
        let root = DataRoot::resolve(data_root);
        let train = load_split(&info, &root, info.train_split, None)?;
        let test = load_split(&info, &root, info.test_split, Some((train.mean, train.std)))?;
        Ok(KnnMonitor { dataset: dataset.to_string(), every, train, test, device })
    }
}

impl Monitor for KnnMonitor {
    fn every(&self) -> usize {
        self.every
    }

    fn measure(&mut self, backbone: &Backbone, report: &mut dyn FnMut(&str)) -> Result<BTreeMap<String, f64>> {
        let t = Instant::now();
        let feats = |s: &EvalSplit| -> Result<Features> {
            let (data, dim) = extract(backbone, &s.images, s.mean, s.std, 256, &self.device)?;
            let labels = labels_of(&s.images, &self.dataset)?;
            Ok(Features { n: s.images.len(), data, dim, labels, classes: s.classes })
        };
        let (train, test) = (feats(&self.train)?, feats(&self.test)?);
        let acc = knn_accuracy(&train, &test, &[20, 200], 0.07, &self.device);
        report(&format!(
            "kNN monitor: {} in {:.1} s",
            acc.iter().map(|(k, a)| format!("k={k} {:.2}%", 100.0 * a)).collect::<Vec<_>>().join(", "),
            t.elapsed().as_secs_f64()
        ));
        Ok(acc.into_iter().map(|(k, a)| (format!("knn_top1_k{k}"), 100.0 * a)).collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The definition, written out: every similarity by a plain loop, the full list sorted.
    fn brute_force(gallery: &Features, query: &Features, k: usize, t: f32) -> Vec<i64> {
        let (g, q) = (l2_normalized(gallery), l2_normalized(query));
        let d = gallery.dim;
        (0..query.n)
            .map(|i| {
                let mut all: Vec<(f32, u32)> = (0..gallery.n)
                    .map(|j| ((0..d).map(|c| q[i * d + c] * g[j * d + c]).sum::<f32>(), j as u32))
                    .collect();
                all.sort_by(|a, b| b.0.partial_cmp(&a.0).unwrap().then(a.1.cmp(&b.1)));
                let mut scores = vec![0.0f64; gallery.classes];
                for &(s, j) in &all[..k.min(all.len())] {
                    scores[gallery.labels[j as usize] as usize] += ((s / t) as f64).exp();
                }
                // First maximum: the lowest class among equal scores.
                let mut best = 0;
                for c in 0..scores.len() {
                    if scores[c] > scores[best] {
                        best = c;
                    }
                }
                best as i64
            })
            .collect()
    }

    fn accuracy_of(pred: &[i64], truth: &[i64]) -> f64 {
        pred.iter().zip(truth).filter(|(a, b)| a == b).count() as f64 / truth.len() as f64
    }

    fn lcg(seed: &mut u64) -> u64 {
        *seed = seed.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
        *seed >> 33
    }

    #[test]
    fn matches_brute_force_with_many_ties() {
        // Entries in {0, +-0.5} with exactly four non-zeros: unit vectors whose dot products are
        // exact in f32, so equal similarities are really equal and the tie rules decide.
        let mut seed = 7;
        let mut make = |n: usize, classes: usize| {
            let dim = 6;
            let mut data = vec![0.0f32; n * dim];
            for i in 0..n {
                let mut picked = 0;
                while picked < 4 {
                    let c = (lcg(&mut seed) % dim as u64) as usize;
                    if data[i * dim + c] == 0.0 {
                        data[i * dim + c] = if lcg(&mut seed).is_multiple_of(2) { 0.5 } else { -0.5 };
                        picked += 1;
                    }
                }
            }
            let labels = (0..n).map(|_| (lcg(&mut seed) % classes as u64) as i64).collect();
            Features { data, n, dim, labels, classes }
        };
        let gallery = make(300, 4);
        let query = make(97, 4);
        let device = Device::flex();
        for k in [1, 5, 20, 200, 300] {
            let want = accuracy_of(&brute_force(&gallery, &query, k, 0.07), &query.labels);
            let got = knn_accuracy(&gallery, &query, &[k], 0.07, &device)[0].1;
            assert_eq!(got, want, "k = {k}");
        }
        // Several k in one call give the same as one at a time.
        let both = knn_accuracy(&gallery, &query, &[20, 5], 0.07, &device);
        assert_eq!(both[1].1, knn_accuracy(&gallery, &query, &[5], 0.07, &device)[0].1);
    }

    #[test]
    fn tie_rules_on_a_hand_made_case() {
        // Query (1, 0). Gallery: two exact ties at similarity 1 with classes 1 and 0 (indices 0
        // and 1), then an orthogonal vector of class 2.
        let g = Features { data: vec![1.0, 0.0, 1.0, 0.0, 0.0, 1.0], n: 3, dim: 2, labels: vec![1, 0, 2], classes: 3 };
        let q = Features { data: vec![1.0, 0.0], n: 1, dim: 2, labels: vec![1], classes: 3 };
        let d = Device::flex();
        // k = 1: the lower gallery index (class 1) is the nearer neighbour.
        assert_eq!(knn_accuracy(&g, &q, &[1], 0.07, &d)[0].1, 1.0);
        // k = 2: classes 1 and 0 score the same; the lower class (0) wins.
        assert_eq!(knn_accuracy(&g, &q, &[2], 0.07, &d)[0].1, 0.0);
    }

    #[test]
    fn random_features_agree_with_brute_force() {
        let mut seed = 3;
        let mut make = |n: usize| {
            let dim = 16;
            let labels: Vec<i64> = (0..n).map(|i| (i % 5) as i64).collect();
            let data = (0..n * dim)
                .map(|j| {
                    (lcg(&mut seed) % 1000) as f32 / 500.0 - 1.0
                        + labels[j / dim] as f32 * ((j % dim == (labels[j / dim] as usize)) as i32 as f32)
                })
                .collect();
            Features { data, n, dim, labels, classes: 5 }
        };
        let (g, q) = (make(500), make(200));
        let got = knn_accuracy(&g, &q, &[20, 200], 0.07, &Device::flex());
        for (k, acc) in got {
            let want = accuracy_of(&brute_force(&g, &q, k, 0.07), &q.labels);
            // Without exact ties, GEMM and loop rounding can only swap near-equal neighbours.
            assert!((acc - want).abs() <= 0.01, "k = {k}: {acc} vs {want}");
            assert!(acc > 0.3, "the planted class signal is found: {acc}");
        }
    }
}
