//! A 2-D t-SNE of features and its scatter plot, coloured by class.
//!
//! The optimisation is the `bhtsne` crate's Barnes-Hut t-SNE (van der Maaten 2014: sparse input
//! affinities from the 3 x perplexity nearest neighbours, tree-approximated repulsion, early
//! exaggeration for the first 250 iterations, momentum 0.5 then 0.8). relnet gives it what makes
//! a run reproducible: the nearest neighbours, computed exactly here (L2-normalised features, so
//! Euclidean distance ranks like cosine similarity; ties to the lower index), and the initial
//! layout, drawn from the seed.
//!
//! With one thread (`threads: Some(1)`) the same features and seed give the same layout, bit for
//! bit. With several, bhtsne sums the repulsive forces' normalisation as a parallel float
//! reduction whose order depends on work stealing, so two runs differ in the last digits, which
//! the optimisation amplifies into visibly moved points (the structure stays).

use std::path::Path;

use plotters::prelude::*;
use rand::{Rng, SeedableRng};
use rayon::prelude::*;
use relnet_core::{Error, Result};

use super::{FONT_FAMILY, class_colour, render_png};
use crate::knn::l2_normalize_rows;

/// Settings of a t-SNE run.
#[derive(Clone, Debug, PartialEq)]
pub struct TsneSettings {
    pub perplexity: f32,
    pub iterations: usize,
    /// Barnes-Hut accuracy (0.5 is the usual trade-off; smaller is slower and closer to exact).
    pub theta: f32,
    pub learning_rate: f32,
    pub seed: u64,
    /// Threads of the optimisation (None: rayon's global pool). `Some(1)` is bit-reproducible.
    pub threads: Option<usize>,
}

impl Default for TsneSettings {
    fn default() -> Self {
        TsneSettings { perplexity: 30.0, iterations: 1000, theta: 0.5, learning_rate: 200.0, seed: 1, threads: None }
    }
}

/// The `k` nearest neighbours of every row (itself excluded), nearest first, exactly: Euclidean
/// distance, ties to the lower index.
pub fn nearest_neighbours(data: &[f32], dim: usize, k: usize) -> Vec<Vec<bhtsne::Neighbor<f32>>> {
    let n = data.len() / dim.max(1);
    let k = k.min(n.saturating_sub(1));
    (0..n)
        .into_par_iter()
        .map(|i| {
            let a = &data[i * dim..(i + 1) * dim];
            let mut d: Vec<(f32, usize)> = (0..n)
                .filter(|&j| j != i)
                .map(|j| {
                    let b = &data[j * dim..(j + 1) * dim];
                    (a.iter().zip(b).map(|(x, y)| (x - y) * (x - y)).sum::<f32>(), j)
                })
                .collect();
            let order = |x: &(f32, usize), y: &(f32, usize)| x.0.total_cmp(&y.0).then(x.1.cmp(&y.1));
            if k < d.len() && k > 0 {
                d.select_nth_unstable_by(k - 1, order);
                d.truncate(k);
            }
            d.sort_unstable_by(order);
            d.into_iter().map(|(d2, j)| bhtsne::Neighbor { index: j, distance: d2.max(0.0).sqrt() }).collect()
        })
        .collect()
}

/// The 2-D t-SNE layout of `n x dim` features, one `[x, y]` per row.
pub fn tsne_2d(data: &[f32], dim: usize, s: &TsneSettings) -> Result<Vec<[f32; 2]>> {
    match s.threads {
        Some(n) => {
            let pool = rayon::ThreadPoolBuilder::new()
                .num_threads(n.max(1))
                .build()
                .map_err(|e| Error::Invalid(format!("t-SNE thread pool: {e}")))?;
            pool.install(|| layout(data, dim, s))
        }
        None => layout(data, dim, s),
    }
}

fn layout(data: &[f32], dim: usize, s: &TsneSettings) -> Result<Vec<[f32; 2]>> {
    let n = data.len() / dim.max(1);
    if dim == 0 || n * dim != data.len() {
        return Err(Error::Invalid(format!("t-SNE needs n x dim features; got {} values for dim {dim}", data.len())));
    }
    // bhtsne needs the perplexity's 3x neighbours to exist: at least 3 * perplexity + 1 points.
    if (n as f32) < 3.0 * s.perplexity + 2.0 {
        return Err(Error::Invalid(format!(
            "t-SNE of {n} points needs a perplexity below {:.1} (got {})",
            (n as f32 - 2.0) / 3.0,
            s.perplexity
        )));
    }
    let x = l2_normalize_rows(data, dim);
    let k = ((3.0 * s.perplexity) as usize).min(n - 1);
    let neighbours = nearest_neighbours(&x, dim, k);
    // The initial layout: N(0, 1e-4^2) per coordinate, from the seed (Box-Muller).
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(s.seed ^ 0x7_5E);
    let init: Vec<f32> = (0..2 * n)
        .map(|_| {
            let (u1, u2): (f64, f64) = (rng.random::<f64>().max(1e-300), rng.random());
            (1e-4 * (-2.0 * u1.ln()).sqrt() * (2.0 * std::f64::consts::PI * u2).cos()) as f32
        })
        .collect();
    let rows: Vec<&[f32]> = x.chunks(dim).collect();
    let mut t: bhtsne::tSNE<f32, &[f32]> = bhtsne::tSNE::new(&rows);
    t.embedding_dim(2)
        .perplexity(s.perplexity)
        .epochs(s.iterations)
        .learning_rate(s.learning_rate)
        .initial_embedding(init)
        .barnes_hut_with_neighbors(s.theta, &neighbours);
    let y = t.embedding();
    if y.iter().any(|v| !v.is_finite()) {
        return Err(Error::Invalid(
            "the t-SNE layout diverged (non-finite coordinates); try a smaller learning rate".into(),
        ));
    }
    Ok(y.chunks_exact(2).map(|p| [p[0], p[1]]).collect())
}

/// A scatter plot of `points` coloured by `labels`, with a legend of `class_names`.
pub fn scatter_png(
    path: &Path,
    points: &[[f32; 2]],
    labels: &[i64],
    class_names: &[String],
    title: &str,
) -> Result<()> {
    let (w, h) = (1100u32, 900u32);
    let lo = |i: usize| points.iter().map(|p| p[i]).fold(f32::INFINITY, f32::min);
    let hi = |i: usize| points.iter().map(|p| p[i]).fold(f32::NEG_INFINITY, f32::max);
    let pad = |a: f32, b: f32| ((b - a) * 0.03).max(1e-3);
    let (x0, x1, y0, y1) = (lo(0), hi(0), lo(1), hi(1));
    let (px, py) = (pad(x0, x1), pad(y0, y1));
    let classes = labels.iter().copied().max().map_or(0, |m| m as usize + 1).max(class_names.len());
    render_png(path, w, h, |area| {
        let (plot, legend) = area.split_horizontally(w - 190);
        let mut chart = ChartBuilder::on(&plot)
            .caption(title, (FONT_FAMILY, 20))
            .margin(12)
            .build_cartesian_2d((x0 - px)..(x1 + px), (y0 - py)..(y1 + py))?;
        chart.configure_mesh().disable_mesh().disable_x_axis().disable_y_axis().draw()?;
        for c in 0..classes {
            let colour = class_colour(c);
            chart.draw_series(
                points
                    .iter()
                    .zip(labels)
                    .filter(|&(_, &l)| l as usize == c)
                    .map(|(p, _)| Circle::new((p[0], p[1]), 2, colour.mix(0.75).filled())),
            )?;
        }
        for c in 0..classes {
            let y = 50 + 24 * c as i32;
            legend.draw(&Circle::new((16, y), 6, class_colour(c).filled()))?;
            let name = class_names.get(c).cloned().unwrap_or_else(|| format!("class {c}"));
            legend.draw(&Text::new(name, (30, y - 8), (FONT_FAMILY, 16)))?;
        }
        Ok(())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Three tight clusters far apart in 20 dimensions.
    fn blobs(per: usize) -> (Vec<f32>, Vec<i64>) {
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(3);
        let (mut data, mut labels) = (Vec::new(), Vec::new());
        for c in 0..3 {
            for _ in 0..per {
                for d in 0..20 {
                    let centre = if d % 3 == c { 1.0 } else { 0.0 };
                    data.push(centre + 0.05 * (rng.random::<f32>() - 0.5));
                }
                labels.push(c as i64);
            }
        }
        (data, labels)
    }

    #[test]
    fn neighbours_are_exact_and_exclude_the_point() {
        let data = [0.0, 0.0, 1.0, 0.0, 3.0, 0.0, 1.0, 1.0f32];
        let nn = nearest_neighbours(&data, 2, 2);
        let idx = |i: usize| nn[i].iter().map(|n| n.index).collect::<Vec<_>>();
        assert_eq!(idx(0), vec![1, 3]);
        assert_eq!(idx(1), vec![0, 3], "distance 1 to both: the lower index first");
        assert_eq!(idx(2), vec![1, 3]);
        assert!((nn[2][1].distance - 5f32.sqrt()).abs() < 1e-6);
    }

    #[test]
    fn separated_clusters_stay_separated_and_the_seed_fixes_the_layout() {
        let (data, labels) = blobs(40);
        let s = TsneSettings { perplexity: 10.0, iterations: 400, threads: Some(1), ..Default::default() };
        let y = tsne_2d(&data, 20, &s).unwrap();
        assert_eq!(y.len(), 120);
        // Every point's nearest neighbour in the layout is of its own cluster, and clusters are
        // farther apart than they are wide.
        let d = |a: [f32; 2], b: [f32; 2]| ((a[0] - b[0]).powi(2) + (a[1] - b[1]).powi(2)).sqrt();
        for i in 0..y.len() {
            let j = (0..y.len()).filter(|&j| j != i).min_by(|&a, &b| d(y[i], y[a]).total_cmp(&d(y[i], y[b]))).unwrap();
            assert_eq!(labels[i], labels[j], "point {i}");
        }
        let centre = |c: i64| {
            let pts: Vec<_> = y.iter().zip(&labels).filter(|&(_, &l)| l == c).map(|(p, _)| *p).collect();
            [
                pts.iter().map(|p| p[0]).sum::<f32>() / pts.len() as f32,
                pts.iter().map(|p| p[1]).sum::<f32>() / pts.len() as f32,
            ]
        };
        let spread =
            |c: i64| y.iter().zip(&labels).filter(|&(_, &l)| l == c).map(|(p, _)| d(*p, centre(c))).fold(0.0, f32::max);
        for (a, b) in [(0, 1), (0, 2), (1, 2)] {
            assert!(d(centre(a), centre(b)) > spread(a).max(spread(b)), "clusters {a} and {b} overlap");
        }
        assert_eq!(tsne_2d(&data, 20, &s).unwrap(), y, "one thread: same seed, same layout, bit for bit");
        assert_ne!(tsne_2d(&data, 20, &TsneSettings { seed: 2, ..s.clone() }).unwrap(), y);
    }

    #[test]
    fn too_few_points_for_the_perplexity_is_an_error() {
        let (data, _) = blobs(5);
        assert!(tsne_2d(&data, 20, &TsneSettings::default()).is_err());
    }

    #[test]
    fn the_scatter_plot_is_a_png_of_the_stated_size() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("t.png");
        let names: Vec<String> = ["cat", "dog", "ship"].iter().map(|s| s.to_string()).collect();
        scatter_png(&path, &[[0.0, 0.0], [1.0, 2.0], [3.0, -1.0]], &[0, 1, 2], &names, "test").unwrap();
        let (w, h, colours) = crate::plot::testutil::png_info(&path);
        assert_eq!((w, h), (1100, 900));
        assert!(colours > 10, "something was drawn ({colours} colours)");
    }
}
