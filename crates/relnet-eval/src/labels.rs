//! Fewer labels (the paper's Figure 2c): train an evaluator on a stratified part of the labelled
//! train split, `--labels 10%` or `--labels 4-per-class`.
//!
//! The part is drawn per class with a seed, so the same seed gives the same images, a larger
//! budget of the same seed does not reuse a smaller one's draw order by accident of position, and
//! the test split is never touched (the part is drawn from the train split only).

use std::collections::BTreeMap;
use std::fmt;
use std::str::FromStr;

use rand::SeedableRng;
use rand::seq::SliceRandom;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// How many labelled train images an evaluator may use.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum LabelBudget {
    /// This percentage of every class (rounded, at least one image per class), `10%`.
    Percent(f64),
    /// This many images of every class (all of a smaller class), `4-per-class`.
    PerClass(usize),
}

impl FromStr for LabelBudget {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        let s = s.trim();
        let bad =
            || format!("`{s}` is not a label budget: use a percentage such as 10% or a count such as 4-per-class");
        if let Some(p) = s.strip_suffix('%') {
            let p: f64 = p.trim().parse().map_err(|_| bad())?;
            if !(p > 0.0 && p <= 100.0) {
                return Err(format!("label percentage {p}% out of range (allowed (0, 100])"));
            }
            Ok(LabelBudget::Percent(p))
        } else if let Some(n) = s.strip_suffix("-per-class") {
            let n: usize = n.trim().parse().map_err(|_| bad())?;
            if n == 0 {
                return Err("label count per class must be at least 1".into());
            }
            Ok(LabelBudget::PerClass(n))
        } else {
            Err(bad())
        }
    }
}

impl fmt::Display for LabelBudget {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            LabelBudget::Percent(p) => write!(f, "{p}%"),
            LabelBudget::PerClass(n) => write!(f, "{n}-per-class"),
        }
    }
}

impl Serialize for LabelBudget {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.to_string())
    }
}

impl<'de> Deserialize<'de> for LabelBudget {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        String::deserialize(d)?.parse().map_err(serde::de::Error::custom)
    }
}

impl LabelBudget {
    /// How many of a class of `n` images are kept.
    pub fn of_class(&self, n: usize) -> usize {
        match *self {
            LabelBudget::Percent(p) => ((n as f64 * p / 100.0).round() as usize).clamp(n.min(1), n),
            LabelBudget::PerClass(k) => k.min(n),
        }
    }
}

/// The indices of each class in `labels`, in order, classes ascending.
pub fn indices_by_class(labels: &[i64]) -> BTreeMap<i64, Vec<usize>> {
    let mut by_class: BTreeMap<i64, Vec<usize>> = BTreeMap::new();
    for (i, &l) in labels.iter().enumerate() {
        by_class.entry(l).or_default().push(i);
    }
    by_class
}

/// The indices (into `labels`, sorted) of the labelled part allowed by `budget`, drawn per class
/// with `seed`. Classes are visited in order and each class's images are shuffled by their own
/// stream, so a class's pick does not depend on the other classes' sizes.
pub fn label_subset(labels: &[i64], budget: LabelBudget, seed: u64) -> Vec<usize> {
    let mut keep = Vec::new();
    for (class, mut idx) in indices_by_class(labels) {
        let stream = relnet_core::streams::stream(seed, relnet_core::streams::Purpose::LabelSubset, &[class as u64]);
        idx.shuffle(&mut rand_chacha::ChaCha8Rng::seed_from_u64(stream));
        keep.extend_from_slice(&idx[..budget.of_class(idx.len())]);
    }
    keep.sort_unstable();
    keep
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn budgets_parse_print_and_refuse_nonsense() {
        assert_eq!("10%".parse::<LabelBudget>(), Ok(LabelBudget::Percent(10.0)));
        assert_eq!("0.5%".parse::<LabelBudget>(), Ok(LabelBudget::Percent(0.5)));
        assert_eq!("4-per-class".parse::<LabelBudget>(), Ok(LabelBudget::PerClass(4)));
        assert_eq!(LabelBudget::Percent(25.0).to_string(), "25%");
        assert_eq!(LabelBudget::PerClass(3).to_string(), "3-per-class");
        for bad in ["10", "0%", "101%", "-5%", "0-per-class", "x-per-class", "ten%"] {
            assert!(bad.parse::<LabelBudget>().is_err(), "{bad}");
        }
    }

    #[test]
    fn subsets_are_stratified_seed_stable_and_nested_in_the_train_indices() {
        // 3 classes of 100, 50 and 7 images, interleaved.
        let labels: Vec<i64> = (0..157)
            .map(|i| {
                if i < 100 {
                    0
                } else if i < 150 {
                    1
                } else {
                    2
                }
            })
            .collect();
        let count = |v: &[usize], c: i64| v.iter().filter(|&&i| labels[i] == c).count();
        let ten = label_subset(&labels, LabelBudget::Percent(10.0), 1);
        assert_eq!((count(&ten, 0), count(&ten, 1), count(&ten, 2)), (10, 5, 1), "10% rounded, at least one per class");
        let one = label_subset(&labels, LabelBudget::Percent(1.0), 1);
        assert_eq!((count(&one, 0), count(&one, 1), count(&one, 2)), (1, 1, 1));
        let per = label_subset(&labels, LabelBudget::PerClass(20), 1);
        assert_eq!((count(&per, 0), count(&per, 1), count(&per, 2)), (20, 20, 7), "a smaller class keeps all it has");
        assert_eq!(label_subset(&labels, LabelBudget::Percent(100.0), 1), (0..157).collect::<Vec<_>>());
        assert_eq!(label_subset(&labels, LabelBudget::Percent(10.0), 1), ten, "fixed by the seed");
        assert_ne!(label_subset(&labels, LabelBudget::Percent(10.0), 2), ten, "another seed, another draw");
        let mut dedup = ten.clone();
        dedup.dedup();
        assert_eq!(dedup, ten, "sorted, no repeats");
        assert!(ten.iter().all(|&i| i < labels.len()));
    }
}
