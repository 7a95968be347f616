//! PCA whitening and k-means for DeepCluster, in plain Rust (f64 statistics, f32 distances,
//! rayon over points). 50,000 x 64 features cluster into 100 groups in a few seconds on 2 cores.

use rand::{Rng, SeedableRng};
use rayon::prelude::*;

/// Eigen-decomposition of a symmetric `d x d` matrix (row-major) by cyclic Jacobi rotations:
/// eigenvalues in descending order and the matching eigenvectors as columns of `v`.
pub fn symmetric_eigen(a: &[f64], d: usize) -> (Vec<f64>, Vec<f64>) {
    let mut a = a.to_vec();
    let mut v = vec![0.0; d * d];
    for i in 0..d {
        v[i * d + i] = 1.0;
    }
    for _sweep in 0..100 {
        let off: f64 = (0..d)
            .flat_map(|i| (0..d).filter(move |&j| j != i).map(move |j| (i, j)))
            .map(|(i, j)| a[i * d + j].powi(2))
            .sum();
        let scale: f64 = (0..d).map(|i| a[i * d + i].powi(2)).sum::<f64>().max(1e-300);
        if off <= 1e-24 * scale {
            break;
        }
        for p in 0..d {
            for q in p + 1..d {
                let apq = a[p * d + q];
                if apq.abs() < 1e-300 {
                    continue;
                }
                let theta = (a[q * d + q] - a[p * d + p]) / (2.0 * apq);
                let t = theta.signum() / (theta.abs() + (theta * theta + 1.0).sqrt());
                let t = if theta == 0.0 { 1.0 } else { t };
                let c = 1.0 / (t * t + 1.0).sqrt();
                let s = t * c;
                for k in 0..d {
                    let (akp, akq) = (a[k * d + p], a[k * d + q]);
                    a[k * d + p] = c * akp - s * akq;
                    a[k * d + q] = s * akp + c * akq;
                }
                for k in 0..d {
                    let (apk, aqk) = (a[p * d + k], a[q * d + k]);
                    a[p * d + k] = c * apk - s * aqk;
                    a[q * d + k] = s * apk + c * aqk;
                }
                for k in 0..d {
                    let (vkp, vkq) = (v[k * d + p], v[k * d + q]);
                    v[k * d + p] = c * vkp - s * vkq;
                    v[k * d + q] = s * vkp + c * vkq;
                }
            }
        }
    }
    let mut order: Vec<usize> = (0..d).collect();
    order.sort_by(|&i, &j| a[j * d + j].total_cmp(&a[i * d + i]));
    let values = order.iter().map(|&i| a[i * d + i]).collect();
    let mut vectors = vec![0.0; d * d];
    for (col, &i) in order.iter().enumerate() {
        for k in 0..d {
            vectors[k * d + col] = v[k * d + i];
        }
    }
    (values, vectors)
}

/// PCA with whitening (as scikit-learn's `PCA(dims, whiten=True)`): rows of `x` (`n x d`)
/// centred, projected on the top `dims` principal axes and divided by the square root of each
/// axis' variance (denominator `n - 1`).
pub fn pca_whiten(x: &[f32], n: usize, d: usize, dims: usize) -> Vec<f32> {
    assert!(dims <= d && x.len() == n * d && n > 1);
    let mut mean = vec![0.0f64; d];
    for row in x.chunks(d) {
        for (m, &v) in mean.iter_mut().zip(row) {
            *m += v as f64;
        }
    }
    mean.iter_mut().for_each(|m| *m /= n as f64);
    let cov = x
        .par_chunks(d * 1024)
        .map(|block| {
            let mut c = vec![0.0f64; d * d];
            let mut centred = vec![0.0f64; d];
            for row in block.chunks(d) {
                for j in 0..d {
                    centred[j] = row[j] as f64 - mean[j];
                }
                for i in 0..d {
                    let ci = centred[i];
                    for j in i..d {
                        c[i * d + j] += ci * centred[j];
                    }
                }
            }
            c
        })
        .reduce(|| vec![0.0; d * d], |a, b| a.iter().zip(&b).map(|(x, y)| x + y).collect());
    let mut cov = cov;
    for i in 0..d {
        for j in i..d {
            let v = cov[i * d + j] / (n as f64 - 1.0);
            cov[i * d + j] = v;
            cov[j * d + i] = v;
        }
    }
    let (values, vectors) = symmetric_eigen(&cov, d);
    let scale: Vec<f64> = values[..dims].iter().map(|&l| 1.0 / l.max(1e-12).sqrt()).collect();
    let mut out = vec![0.0f32; n * dims];
    out.par_chunks_mut(dims).zip(x.par_chunks(d)).for_each(|(o, row)| {
        for (c, oc) in o.iter_mut().enumerate() {
            let mut s = 0.0f64;
            for k in 0..d {
                s += (row[k] as f64 - mean[k]) * vectors[k * d + c];
            }
            *oc = (s * scale[c]) as f32;
        }
    });
    out
}

/// Rows scaled to unit L2 norm (zero rows left as they are).
pub fn l2_normalize(x: &mut [f32], d: usize) {
    x.par_chunks_mut(d).for_each(|row| {
        let norm = row.iter().map(|v| v * v).sum::<f32>().sqrt();
        if norm > 0.0 {
            row.iter_mut().for_each(|v| *v /= norm);
        }
    });
}

fn sq_dist(a: &[f32], b: &[f32]) -> f32 {
    // Eight independent accumulators so that the loop vectorises.
    let mut acc = [0.0f32; 8];
    let (ca, cb) = (a.chunks_exact(8), b.chunks_exact(8));
    let (ra, rb) = (ca.remainder(), cb.remainder());
    for (x, y) in ca.zip(cb) {
        for i in 0..8 {
            let t = x[i] - y[i];
            acc[i] += t * t;
        }
    }
    let tail: f32 = ra.iter().zip(rb).map(|(x, y)| (x - y) * (x - y)).sum();
    acc.iter().sum::<f32>() + tail
}

/// Settings of [`kmeans`] (scikit-learn's names; the reference uses n_init 5, max_iter 30).
#[derive(Clone, Copy, Debug)]
pub struct KMeansConfig {
    pub k: usize,
    pub n_init: usize,
    pub max_iter: usize,
    pub seed: u64,
}

/// The best of `n_init` runs.
#[derive(Clone, Debug)]
pub struct KMeansResult {
    pub labels: Vec<u32>,
    pub centroids: Vec<f32>,
    /// Sum of squared distances of points to their centroid.
    pub inertia: f64,
    pub iterations: usize,
}

/// Nearest centroid of every point and the total squared distance.
fn assign(x: &[f32], d: usize, centroids: &[f32], labels: &mut [u32], dist: &mut [f32]) -> f64 {
    labels.par_iter_mut().zip(dist.par_iter_mut()).zip(x.par_chunks(d)).for_each(|((l, dd), row)| {
        let (mut best, mut bd) = (0u32, f32::INFINITY);
        for (c, cent) in centroids.chunks(d).enumerate() {
            let v = sq_dist(row, cent);
            if v < bd {
                bd = v;
                best = c as u32;
            }
        }
        *l = best;
        *dd = bd;
    });
    dist.iter().map(|&v| v as f64).sum()
}

/// k-means++ seeding (D^2 sampling).
fn kmeans_pp(x: &[f32], n: usize, d: usize, k: usize, rng: &mut impl Rng) -> Vec<f32> {
    let mut centroids = Vec::with_capacity(k * d);
    let first = rng.random_range(0..n);
    centroids.extend_from_slice(&x[first * d..(first + 1) * d]);
    let mut closest: Vec<f32> = x.par_chunks(d).map(|r| sq_dist(r, &centroids[..d])).collect();
    for _ in 1..k {
        let total: f64 = closest.iter().map(|&v| v as f64).sum();
        let pick = if total > 0.0 {
            let mut target = rng.random::<f64>() * total;
            let mut idx = n - 1;
            for (i, &v) in closest.iter().enumerate() {
                target -= v as f64;
                if target <= 0.0 {
                    idx = i;
                    break;
                }
            }
            idx
        } else {
            rng.random_range(0..n)
        };
        let c = x[pick * d..(pick + 1) * d].to_vec();
        closest.par_iter_mut().zip(x.par_chunks(d)).for_each(|(v, r)| *v = v.min(sq_dist(r, &c)));
        centroids.extend_from_slice(&c);
    }
    centroids
}

/// k-means (Lloyd) with k-means++ seeding, `n_init` restarts, empty clusters moved to the point
/// farthest from its centroid; stops early when no label changes.
pub fn kmeans(x: &[f32], n: usize, d: usize, cfg: KMeansConfig) -> KMeansResult {
    assert!(cfg.k >= 1 && n >= cfg.k && x.len() == n * d);
    let mut best: Option<KMeansResult> = None;
    for run in 0..cfg.n_init.max(1) {
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(cfg.seed.wrapping_add(run as u64 * 0x9E37_79B9));
        let mut centroids = kmeans_pp(x, n, d, cfg.k, &mut rng);
        let mut labels = vec![u32::MAX; n];
        let mut dist = vec![0.0f32; n];
        let mut inertia = 0.0;
        let mut iterations = 0;
        for _ in 0..cfg.max_iter.max(1) {
            let before = labels.clone();
            inertia = assign(x, d, &centroids, &mut labels, &mut dist);
            iterations += 1;
            if labels == before {
                break;
            }
            let mut sums = vec![0.0f64; cfg.k * d];
            let mut counts = vec![0usize; cfg.k];
            for (row, &l) in x.chunks(d).zip(&labels) {
                counts[l as usize] += 1;
                for (s, &v) in sums[l as usize * d..(l as usize + 1) * d].iter_mut().zip(row) {
                    *s += v as f64;
                }
            }
            for c in 0..cfg.k {
                if counts[c] == 0 {
                    // Re-seed an empty cluster at the worst-served point.
                    let far = (0..n).max_by(|&a, &b| dist[a].total_cmp(&dist[b])).unwrap_or(0);
                    centroids[c * d..(c + 1) * d].copy_from_slice(&x[far * d..(far + 1) * d]);
                    dist[far] = 0.0;
                } else {
                    for j in 0..d {
                        centroids[c * d + j] = (sums[c * d + j] / counts[c] as f64) as f32;
                    }
                }
            }
        }
        if best.as_ref().is_none_or(|b| inertia < b.inertia) {
            best = Some(KMeansResult { labels, centroids, inertia, iterations });
        }
    }
    best.expect("at least one run")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn eigen_of_a_known_matrix() {
        // [[2, 1], [1, 2]]: eigenvalues 3 and 1, vectors (1, 1)/sqrt2 and (1, -1)/sqrt2.
        let (vals, vecs) = symmetric_eigen(&[2.0, 1.0, 1.0, 2.0], 2);
        assert!((vals[0] - 3.0).abs() < 1e-12 && (vals[1] - 1.0).abs() < 1e-12, "{vals:?}");
        let h = 0.5f64.sqrt();
        assert!((vecs[0].abs() - h).abs() < 1e-12 && (vecs[2].abs() - h).abs() < 1e-12);
        assert!((vecs[0] * vecs[2]) > 0.0, "first vector is (1, 1) up to sign");
    }

    #[test]
    fn eigen_reconstructs_a_random_symmetric_matrix() {
        let d = 12;
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(4);
        let b: Vec<f64> = (0..d * d).map(|_| rng.random::<f64>() - 0.5).collect();
        let mut a = vec![0.0; d * d];
        for i in 0..d {
            for j in 0..d {
                a[i * d + j] = (0..d).map(|k| b[i * d + k] * b[j * d + k]).sum();
            }
        }
        let (vals, v) = symmetric_eigen(&a, d);
        assert!(vals.windows(2).all(|w| w[0] >= w[1]));
        for i in 0..d {
            for j in 0..d {
                let r: f64 = (0..d).map(|k| v[i * d + k] * vals[k] * v[j * d + k]).sum();
                assert!((r - a[i * d + j]).abs() < 1e-9, "({i},{j}) {r} vs {}", a[i * d + j]);
            }
        }
    }

    #[test]
    fn whitened_components_have_unit_variance_and_no_correlation() {
        let (n, d) = (2000, 5);
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(9);
        let x: Vec<f32> = (0..n)
            .flat_map(|_| {
                let a = rng.random::<f32>() * 4.0;
                let b = rng.random::<f32>();
                let c = rng.random::<f32>() * 0.1;
                [a, a + b, b - c, 3.0 * c + 1.0, a - 2.0 * b]
            })
            .collect();
        let y = pca_whiten(&x, n, d, 3);
        for p in 0..3 {
            for q in 0..3 {
                let mp: f64 = y.chunks(3).map(|r| r[p] as f64).sum::<f64>() / n as f64;
                let mq: f64 = y.chunks(3).map(|r| r[q] as f64).sum::<f64>() / n as f64;
                let c: f64 =
                    y.chunks(3).map(|r| (r[p] as f64 - mp) * (r[q] as f64 - mq)).sum::<f64>() / (n as f64 - 1.0);
                let want = if p == q { 1.0 } else { 0.0 };
                assert!((c - want).abs() < 1e-3, "cov[{p}][{q}] = {c}");
            }
        }
    }

    #[test]
    fn kmeans_finds_separated_blobs() {
        let (d, per) = (4, 200);
        let centres = [[0.0f32, 0.0, 0.0, 0.0], [10.0, 0.0, 0.0, 0.0], [0.0, 10.0, 0.0, 0.0], [0.0, 0.0, 10.0, 10.0]];
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(2);
        let mut x = Vec::new();
        for c in &centres {
            for _ in 0..per {
                x.extend(c.iter().map(|v| v + rng.random::<f32>() - 0.5));
            }
        }
        let r = kmeans(&x, centres.len() * per, d, KMeansConfig { k: 4, n_init: 3, max_iter: 30, seed: 1 });
        for blob in r.labels.chunks(per) {
            assert!(blob.iter().all(|&l| l == blob[0]), "a blob was split");
        }
        let mut firsts: Vec<u32> = r.labels.chunks(per).map(|b| b[0]).collect();
        firsts.sort();
        firsts.dedup();
        assert_eq!(firsts.len(), 4, "blobs merged");
        assert!(r.inertia / (x.len() as f64) < 0.1);
    }
}
