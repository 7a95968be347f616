//! The relational objective (reference §1.1): pairs of augmentation blocks, aggregation, and the
//! BCE / focal losses on the relation head's logits.

use std::fmt;
use std::str::FromStr;

use burn::prelude::*;
use burn::tensor::activation::{log_sigmoid, sigmoid};
use burn::tensor::{Int, TensorData};

/// How two feature vectors are combined before the relation head.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum Aggregation {
    /// Concatenation (head input 2F): the reference's default and best.
    Cat,
    Sum,
    Mean,
    Max,
}

impl Aggregation {
    /// Relation-head input size for features of size `f`.
    pub fn head_input(self, f: usize) -> usize {
        if self == Aggregation::Cat { 2 * f } else { f }
    }

    pub fn apply(self, a: Tensor<2>, b: Tensor<2>) -> Tensor<2> {
        match self {
            Aggregation::Cat => Tensor::cat(vec![a, b], 1),
            Aggregation::Sum => a + b,
            Aggregation::Mean => (a + b).div_scalar(2.0),
            Aggregation::Max => a.max_pair(b),
        }
    }
}

impl FromStr for Aggregation {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "cat" => Ok(Aggregation::Cat),
            "sum" => Ok(Aggregation::Sum),
            "mean" => Ok(Aggregation::Mean),
            "max" => Ok(Aggregation::Max),
            _ => Err(format!("unknown aggregation `{s}` (expected cat, sum, mean or max)")),
        }
    }
}

impl fmt::Display for Aggregation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Aggregation::Cat => "cat",
            Aggregation::Sum => "sum",
            Aggregation::Mean => "mean",
            Aggregation::Max => "max",
        })
    }
}

/// The negative shift of block pair number `p` (0-based, loop order i < j): one counter that
/// runs 1..M-1 across all block pairs and is not reset when `i` changes.
pub fn shift(p: usize, m: usize) -> usize {
    p % (m - 1) + 1
}

/// Builds the relation pairs from features `z` (`[M*K, F]`, augmentation-major: rows
/// `k*M..(k+1)*M` are view `k`). For every block pair `i < j` in nested-loop order it emits `M`
/// positives `agg(B_i[m], B_j[m])` then `M` negatives `agg(B_i[m], B_j[(m - s) mod M])`
/// (`B_j` rolled by the shift `s`, so an image is never its own negative). Returns the
/// aggregated pairs `[M*K*(K-1), in]` and the targets (1 positive, 0 negative).
///
/// Panics if `m < 2` (no negatives exist); callers validate M.
pub fn relation_pairs(z: Tensor<2>, m: usize, k: usize, agg: Aggregation) -> (Tensor<2>, Tensor<1>) {
    assert!(m >= 2, "relational pairs need at least 2 images per batch");
    let [rows, _] = z.dims();
    assert_eq!(rows, m * k, "features have {rows} rows, expected M*K = {}", m * k);
    let device = z.device();
    let (left, right) = pair_indices(m, k);
    let n = left.len();
    // Two gathers (one scatter-add each in backward) instead of a slice and a concatenation
    // per block pair: at K = 16 that is 2 graph nodes instead of several hundred.
    let idx = |v: Vec<i64>| Tensor::<1, Int>::from_data(TensorData::new(v, [n]), &device);
    let pairs = agg.apply(z.clone().select(0, idx(left)), z.select(0, idx(right)));
    (pairs, relation_targets(m, k, &device))
}

/// Targets of the pairs in [`relation_pairs`] order: per block pair `M` ones then `M` zeros.
pub fn relation_targets(m: usize, k: usize, device: &Device) -> Tensor<1> {
    let pattern: Vec<f32> =
        (0..k * (k - 1) / 2).flat_map(|_| std::iter::repeat_n(1.0, m).chain(std::iter::repeat_n(0.0, m))).collect();
    Tensor::<1>::from_floats(pattern.as_slice(), device)
}

/// Row indices into the `[M*K, F]` features of the left and right member of every pair, in the
/// order of [`relation_pairs`]: for block pair `i < j` (pair number `p`), `M` positives
/// `(i*M + r, j*M + r)` then `M` negatives `(i*M + r, j*M + (r - s) mod M)`, `s = shift(p, M)`.
pub fn pair_indices(m: usize, k: usize) -> (Vec<i64>, Vec<i64>) {
    let n = m * k * (k - 1);
    let (mut left, mut right) = (Vec::with_capacity(n), Vec::with_capacity(n));
    let mut p = 0;
    for i in 0..k {
        for j in i + 1..k {
            let s = shift(p, m);
            for r in 0..m {
                left.push((i * m + r) as i64);
                right.push((j * m + r) as i64);
            }
            for r in 0..m {
                left.push((i * m + r) as i64);
                right.push((j * m + (r + m - s) % m) as i64);
            }
            p += 1;
        }
    }
    (left, right)
}

/// The loss on relation logits.
#[derive(Clone, Copy, Debug, PartialEq, serde::Serialize, serde::Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum RelationLoss {
    /// Binary cross-entropy with logits, mean over pairs (the essential notebook's loss).
    Bce,
    /// Sigmoid focal loss, gamma 2, alpha 0.5 (the reference code's loss).
    Focal,
}

impl FromStr for RelationLoss {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "bce" => Ok(RelationLoss::Bce),
            "focal" => Ok(RelationLoss::Focal),
            _ => Err(format!("unknown loss `{s}` (expected bce or focal)")),
        }
    }
}

impl fmt::Display for RelationLoss {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(if *self == RelationLoss::Bce { "bce" } else { "focal" })
    }
}

/// Element-wise BCE with logits, stable: `-(t log s(x) + (1 - t) log(1 - s(x)))`.
pub fn bce_with_logits(logits: Tensor<1>, targets: Tensor<1>) -> Tensor<1> {
    let log_p = log_sigmoid(logits.clone());
    let log_not_p = log_sigmoid(logits.neg());
    (targets.clone() * log_p + (targets.neg().add_scalar(1.0)) * log_not_p).neg()
}

/// Sigmoid focal loss per element: `alpha_t (1 - p_t)^gamma BCE`.
pub fn focal_with_logits(logits: Tensor<1>, targets: Tensor<1>, gamma: f64, alpha: f64) -> Tensor<1> {
    let p = sigmoid(logits.clone());
    let not_t = targets.clone().neg().add_scalar(1.0);
    let p_t = p.clone() * targets.clone() + (p.neg().add_scalar(1.0)) * not_t.clone();
    let alpha_t = targets.clone().mul_scalar(alpha) + not_t.mul_scalar(1.0 - alpha);
    alpha_t * p_t.neg().add_scalar(1.0).powf_scalar(gamma) * bce_with_logits(logits, targets)
}

impl RelationLoss {
    /// Mean loss over pairs.
    pub fn mean(self, logits: Tensor<1>, targets: Tensor<1>) -> Tensor<1> {
        match self {
            RelationLoss::Bce => bce_with_logits(logits, targets).mean(),
            RelationLoss::Focal => focal_with_logits(logits, targets, 2.0, 0.5).mean(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dev() -> Device {
        Device::flex()
    }

    fn vec1(t: Tensor<1>) -> Vec<f32> {
        t.into_data().try_to_vec::<f32>().unwrap()
    }

    #[test]
    fn shift_schedule_runs_one_counter() {
        // M = 4: shifts 1, 2, 3, 1, 2, 3, ... across block pairs, never 0.
        let s: Vec<usize> = (0..7).map(|p| shift(p, 4)).collect();
        assert_eq!(s, vec![1, 2, 3, 1, 2, 3, 1]);
        assert_eq!((0..10).map(|p| shift(p, 2)).collect::<Vec<_>>(), vec![1; 10]);
    }

    /// Layout derived by hand for M = 3, K = 3, features = the row id (F = 1):
    /// blocks B0 = [0, 1, 2], B1 = [3, 4, 5], B2 = [6, 7, 8]; block pairs (0,1) s=1, (0,2) s=2,
    /// (1,2) s=1 (the counter wraps after M-1 = 2). roll(B, s)[r] = B[(r - s) mod 3].
    #[test]
    fn pair_layout_golden() {
        let z = Tensor::<2>::from_floats([[0.0], [1.], [2.], [3.], [4.], [5.], [6.], [7.], [8.]], &dev());
        let (pairs, t) = relation_pairs(z, 3, 3, Aggregation::Cat);
        assert_eq!(pairs.dims(), [18, 2]);
        let v = pairs.into_data().try_to_vec::<f32>().unwrap();
        let got: Vec<(u8, u8)> = v.chunks(2).map(|c| (c[0] as u8, c[1] as u8)).collect();
        let want = vec![
            (0, 3),
            (1, 4),
            (2, 5), // pos (0,1)
            (0, 5),
            (1, 3),
            (2, 4), // neg (0,1), s = 1
            (0, 6),
            (1, 7),
            (2, 8), // pos (0,2)
            (0, 7),
            (1, 8),
            (2, 6), // neg (0,2), s = 2
            (3, 6),
            (4, 7),
            (5, 8), // pos (1,2)
            (3, 8),
            (4, 6),
            (5, 7), // neg (1,2), s = 1
        ];
        assert_eq!(got, want);
        assert_eq!(vec1(t), [1., 1., 1., 0., 0., 0.].repeat(3));
    }

    #[test]
    fn pair_properties_and_aggregations() {
        for (m, k) in [(2, 2), (5, 4), (7, 6)] {
            let flat: Vec<f32> = (0..m * k).flat_map(|r| [r as f32, 100.0 + r as f32]).collect();
            let z = Tensor::<2>::from_data(burn::tensor::TensorData::new(flat, [m * k, 2]), &dev());
            let (pairs, t) = relation_pairs(z.clone(), m, k, Aggregation::Cat);
            assert_eq!(pairs.dims(), [m * k * (k - 1), 4]);
            let t = vec1(t);
            assert_eq!(t.iter().filter(|&&x| x == 1.0).count(), m * k * (k - 1) / 2);
            let v = pairs.into_data().try_to_vec::<f32>().unwrap();
            for (row, pair) in v.chunks(4).enumerate() {
                let (a, b) = (pair[0] as usize, pair[2] as usize);
                // Same image iff positive; an image is never paired with itself.
                assert_ne!(a, b);
                assert_eq!(a % m == b % m, t[row] == 1.0, "row {row}: {a} {b}");
                assert!(a / m < b / m, "left block before right block");
            }
            for agg in [Aggregation::Sum, Aggregation::Mean, Aggregation::Max] {
                let (p, _) = relation_pairs(z.clone(), m, k, agg);
                assert_eq!(p.dims(), [m * k * (k - 1), agg.head_input(2)]);
            }
        }
        let a = Tensor::<2>::from_floats([[1.0, 5.0]], &dev());
        let b = Tensor::<2>::from_floats([[3.0, 2.0]], &dev());
        assert_eq!(vec1(Aggregation::Sum.apply(a.clone(), b.clone()).reshape([2])), [4.0, 7.0]);
        assert_eq!(vec1(Aggregation::Mean.apply(a.clone(), b.clone()).reshape([2])), [2.0, 3.5]);
        assert_eq!(vec1(Aggregation::Max.apply(a, b).reshape([2])), [3.0, 5.0]);
    }

    /// Golden values from the closed forms, computed independently by `tests/golden/objective.py`:
    /// logits [2, -1, 0.5, -3], targets [1, 0, 0, 1].
    #[test]
    fn loss_golden_values() {
        let x = Tensor::<1>::from_floats([2.0, -1.0, 0.5, -3.0], &dev());
        let t = Tensor::<1>::from_floats([1.0, 0.0, 0.0, 1.0], &dev());
        let bce = vec1(bce_with_logits(x.clone(), t.clone()));
        // softplus(-2), softplus(-1), softplus(0.5), softplus(3)
        let want_bce = [0.126_928_01, 0.313_261_7, 0.974_077, 3.048_587_4];
        for (g, w) in bce.iter().zip(want_bce) {
            assert!((g - w).abs() < 1e-5, "{bce:?}");
        }
        let focal = vec1(focal_with_logits(x.clone(), t.clone(), 2.0, 0.5));
        // 0.5 * (1 - p_t)^2 * bce with p_t = s(2), 1 - s(-1), 1 - s(0.5), s(-3).
        let want_focal = [0.000_901_78, 0.011_329_03, 0.188_705_8, 1.383_140_2];
        for (g, w) in focal.iter().zip(want_focal) {
            assert!((g - w).abs() < 1e-5, "{focal:?}");
        }
        let mean_bce = RelationLoss::Bce.mean(x.clone(), t.clone()).into_scalar::<f32>();
        assert!((mean_bce - want_bce.iter().sum::<f32>() / 4.0).abs() < 1e-5);
        let mean_focal = RelationLoss::Focal.mean(x, t).into_scalar::<f32>();
        assert!((mean_focal - want_focal.iter().sum::<f32>() / 4.0).abs() < 1e-5);
    }
}
