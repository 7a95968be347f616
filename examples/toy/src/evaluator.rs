//! `centroid`: nearest class centroid on frozen features, an evaluator defined outside relnet.

use relnet_core::Result;
use relnet_core::config::{ConfigError, check_range};
use relnet_core::record::ResultRecord;
use relnet_eval::features::Features;
use relnet_eval::knn::l2_normalize_rows;
use relnet_eval::{EvalContext, EvaluatorOptions, EvaluatorSpec};
use serde::{Deserialize, Serialize};

/// Options of `centroid` (`[evaluator] kind = "centroid"`).
#[derive(clap::Args, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct CentroidOptions {
    /// Use at most this many training images per class for the centroids (all by default).
    #[arg(long, value_name = "N")]
    pub per_class: Option<usize>,
}

impl Default for CentroidOptions {
    fn default() -> Self {
        relnet_core::config::clap_defaults()
    }
}

impl EvaluatorOptions for CentroidOptions {
    const NAME: &'static str = "centroid";

    fn spec(&self) -> EvaluatorSpec {
        EvaluatorSpec {
            name: "centroid",
            about: "Nearest class centroid on L2-normalised frozen features (toy evaluator)",
            order: 10,
            report: &[("test_accuracy", "accuracy")],
            headline: &["test_accuracy"],
            frozen_features: true,
        }
    }

    fn validate(&self) -> std::result::Result<(), ConfigError> {
        match self.per_class {
            Some(n) => check_range("per_class", n, 1, usize::MAX),
            None => Ok(()),
        }
    }

    fn run(&self, ctx: &mut EvalContext) -> Result<ResultRecord> {
        let train = ctx.features(ctx.info.train_split)?;
        let test = ctx.features(ctx.info.test_split)?;
        let accuracy = centroid_accuracy(&train, &test, self.per_class);
        let mut record =
            ctx.record(Self::NAME, self, Some(ctx.info.train_split.as_str()), ctx.info.test_split.as_str());
        record.metrics.insert("test_accuracy".into(), 100.0 * accuracy);
        Ok(record)
    }
}

/// The fraction of `test` rows whose nearest class centroid (cosine, centroids of the normalised
/// `train` rows, at most `per_class` of each class) is their own class.
pub fn centroid_accuracy(train: &Features, test: &Features, per_class: Option<usize>) -> f64 {
    let dim = train.dim;
    let classes = train.labels.iter().map(|&l| l as usize + 1).max().unwrap_or(0);
    let rows = l2_normalize_rows(&train.data, dim);
    let mut sums = vec![0.0f32; classes * dim];
    let mut counts = vec![0usize; classes];
    for (row, &l) in rows.chunks_exact(dim).zip(&train.labels) {
        let c = l as usize;
        if per_class.is_some_and(|n| counts[c] >= n) {
            continue;
        }
        counts[c] += 1;
        sums[c * dim..(c + 1) * dim].iter_mut().zip(row).for_each(|(s, v)| *s += v);
    }
    let centres = l2_normalize_rows(&sums, dim);
    let queries = l2_normalize_rows(&test.data, dim);
    let hits = queries
        .chunks_exact(dim)
        .zip(&test.labels)
        .filter(|(q, l)| {
            let score = |c: usize| {
                if counts[c] == 0 {
                    f32::NEG_INFINITY
                } else {
                    centres[c * dim..(c + 1) * dim].iter().zip(*q).map(|(a, b)| a * b).sum()
                }
            };
            let best = (0..classes).max_by(|&a, &b| score(a).total_cmp(&score(b)));
            best == Some(**l as usize)
        })
        .count();
    hits as f64 / test.n.max(1) as f64
}

#[cfg(test)]
mod tests {
    use super::*;

    fn features(rows: &[[f32; 2]], labels: &[i64]) -> Features {
        Features {
            data: rows.iter().flatten().copied().collect(),
            n: rows.len(),
            dim: 2,
            labels: labels.to_vec(),
            classes: 2,
        }
    }

    #[test]
    fn counts_queries_nearest_their_class_centre() {
        let train = features(&[[1.0, 0.1], [1.0, -0.1], [0.1, 1.0], [-0.1, 1.0]], &[0, 0, 1, 1]);
        // Three queries on class 0's side, one of them labelled 1: 3 of 4 correct.
        let test = features(&[[2.0, 0.0], [0.0, 3.0], [1.0, 0.2], [1.0, -0.3]], &[0, 1, 0, 1]);
        assert_eq!(centroid_accuracy(&train, &test, None), 0.75);
        // One image per class: the centroids are the first of each class, the same answer here.
        assert_eq!(centroid_accuracy(&train, &test, Some(1)), 0.75);
    }
}
