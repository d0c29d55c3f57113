//! Training small models on a submitted dataset: linear regression (least squares), logistic
//! regression (binary, L2-regularized, Newton's method) and k-means (k-means++ starts, Lloyd
//! iterations, the best of several starts). The last `round(n × test_fraction)` rows are held out,
//! and the metrics are measured on them.
//!
//! A job's work is estimated before it is accepted ([`work`]) and held to a bound; its cancel flag
//! is looked at once a row inside every pass over the rows (and once a column in the solver), so a
//! cancel is seen within one row's work, not at the end of an iteration.

use std::sync::atomic::{AtomicBool, Ordering};

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde::{Deserialize, Serialize};

use crate::{Error, Prediction};

pub use wire::ai::{Dataset, Params};

/// A trained model's parameters.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Trained {
    LinearRegression { coef: Vec<f64>, intercept: f64 },
    LogisticRegression { coef: Vec<f64>, intercept: f64 },
    Kmeans { centers: Vec<Vec<f64>> },
}

pub use wire::ai::Metrics;

/// The limits a dataset is held to.
#[derive(Debug, Clone, Copy)]
pub struct DataLimits {
    /// `[services.ai] max_dataset_rows`.
    pub max_rows: usize,
    /// `[services.ai] max_features`.
    pub max_features: usize,
    /// The most [`work`] a job may take (`[services.ai] max_training_work`).
    pub max_work: u64,
}

/// Newton steps logistic regression takes at most.
const NEWTON_ITERATIONS: u64 = 100;
/// Lloyd iterations one k-means start takes at most.
const LLOYD_ITERATIONS: u64 = 300;

/// The work of training `params` on `rows` rows of `features` features, in multiply-adds of the
/// dominant loops, as a bound taken before the job runs (saturating: a product past `u64::MAX` is
/// `u64::MAX`):
///
/// - linear regression: `rows × features²` (the normal equations; solving them, `features³`, is
///   less, as there are more rows than features);
/// - logistic regression: `rows × (features + 1)² × 100` (the Hessian, at most 100 Newton steps);
/// - k-means: `rows × features × k × (300 + k) × n_init` (at most 300 Lloyd iterations of `k`
///   distances a row, and the k-means++ start's fewer than `k²` distances a row, for each start).
pub fn work(rows: usize, features: usize, params: &Params) -> u64 {
    let (n, d) = (rows as u64, features as u64);
    let per_row = match params {
        Params::LinearRegression => d.saturating_mul(d),
        Params::LogisticRegression { .. } => {
            let p = d.saturating_add(1);
            p.saturating_mul(p).saturating_mul(NEWTON_ITERATIONS)
        }
        Params::Kmeans { k, n_init, .. } => {
            let k = *k as u64;
            d.saturating_mul(k)
                .saturating_mul(LLOYD_ITERATIONS.saturating_add(k))
                .saturating_mul(*n_init as u64)
        }
    };
    n.saturating_mul(per_row)
}

/// A job's cancel flag, as the training loops look at it.
#[derive(Clone, Copy)]
struct Stop<'a>(&'a AtomicBool);

impl Stop<'_> {
    /// [`Error::Cancelled`] once the job is cancelled.
    fn check(self) -> Result<(), Error> {
        if self.0.load(Ordering::Relaxed) {
            Err(Error::Cancelled)
        } else {
            Ok(())
        }
    }
}

fn bad(m: impl Into<String>) -> Error {
    Error::BadInput(m.into())
}

/// A dataset whose every part has the documented shape, but that does not fit together or fit
/// the kind of model (see [`Error::Dataset`]).
fn unfit(m: impl Into<String>) -> Error {
    Error::Dataset(m.into())
}

/// Checks a dataset for `params`: shape, finiteness, labels.
pub fn check(
    data: &Dataset,
    params: &Params,
    test_fraction: f64,
    limits: DataLimits,
) -> Result<(), Error> {
    let n = data.features.len();
    if n == 0 {
        return Err(bad("the dataset is empty"));
    }
    if n > limits.max_rows {
        return Err(Error::TooLarge {
            what: "the number of rows".into(),
            size: n as u64,
            limit: limits.max_rows as u64,
            service: "ai",
            setting: crate::MAX_DATASET_ROWS.name(),
        });
    }
    let d = data.features[0].len();
    if d == 0 {
        return Err(bad("rows have no features"));
    }
    if d > limits.max_features {
        return Err(Error::TooLarge {
            what: "the number of features per row".into(),
            size: d as u64,
            limit: limits.max_features as u64,
            service: "ai",
            setting: crate::MAX_FEATURES.name(),
        });
    }
    for (i, row) in data.features.iter().enumerate() {
        if row.len() != d {
            return Err(unfit(format!(
                "features[{i}] has {} values; the first row has {d}",
                row.len()
            )));
        }
        if let Some(j) = row.iter().position(|v| !v.is_finite()) {
            return Err(bad(format!("features[{i}][{j}] is not a finite number")));
        }
    }
    if !(0.0..1.0).contains(&test_fraction) {
        return Err(bad("test_fraction must be at least 0 and below 1"));
    }
    let (train, _) = split(n, test_fraction);
    match params {
        Params::Kmeans { k, n_init, .. } => {
            if data.targets.is_some() {
                return Err(unfit("k-means takes no targets"));
            }
            if *k == 0 {
                return Err(bad("k must be at least 1"));
            }
            if *k > train {
                return Err(unfit(format!(
                    "k must be from 1 to the number of training rows ({train})"
                )));
            }
            if *n_init == 0 || *n_init > 100 {
                return Err(bad("n_init must be from 1 to 100"));
            }
        }
        Params::LinearRegression | Params::LogisticRegression { .. } => {
            let targets = data
                .targets
                .as_ref()
                .ok_or_else(|| unfit("this kind needs targets"))?;
            if targets.len() != n {
                return Err(unfit(format!("{} targets for {n} rows", targets.len())));
            }
            if let Some(i) = targets.iter().position(|v| !v.is_finite()) {
                return Err(bad(format!("targets[{i}] is not a finite number")));
            }
            if train <= d {
                return Err(unfit(format!(
                    "{train} training rows for {d} features: give more rows than features"
                )));
            }
            if let Params::LogisticRegression { c } = params {
                if !(c.is_finite() && *c > 0.0) {
                    return Err(bad("c must be a positive number"));
                }
                if let Some(i) = targets.iter().position(|t| *t != 0.0 && *t != 1.0) {
                    return Err(unfit(format!("targets[{i}] is not a label 0 or 1")));
                }
                let ones = targets[..train].iter().filter(|t| **t == 1.0).count();
                if ones == 0 || ones == train {
                    return Err(unfit("the training rows hold only one label"));
                }
            }
        }
    }
    let work = work(n, d, params);
    if work > limits.max_work {
        return Err(Error::TooLarge {
            what: format!(
                "the training work (multiply-adds: {})",
                match params {
                    Params::LinearRegression => "rows × features²",
                    Params::LogisticRegression { .. } => "rows × (features + 1)² × 100",
                    Params::Kmeans { .. } => "rows × features × k × (300 + k) × n_init",
                }
            ),
            size: work,
            limit: limits.max_work,
            service: "ai",
            setting: crate::MAX_TRAINING_WORK.name(),
        });
    }
    Ok(())
}

/// Rows for training and for testing: the last `round(n × fraction)` rows are the test set.
pub(crate) fn split(n: usize, fraction: f64) -> (usize, usize) {
    let test = ((n as f64) * fraction).round() as usize;
    let test = test.min(n.saturating_sub(1));
    (n - test, test)
}

/// Trains; `cancel` is checked inside every pass over the rows, so a cancel is seen within one
/// row's work.
pub fn train(
    data: &Dataset,
    params: &Params,
    test_fraction: f64,
    cancel: &AtomicBool,
) -> Result<(Trained, Metrics), Error> {
    let stop = Stop(cancel);
    let (n_train, n_test) = split(data.features.len(), test_fraction);
    let (x_train, x_test) = data.features.split_at(n_train);
    let mut metrics = Metrics {
        train_rows: n_train,
        test_rows: n_test,
        ..Metrics::default()
    };
    let trained = match params {
        Params::LinearRegression => {
            let y = data.targets.as_deref().unwrap_or_default();
            let (y_train, y_test) = y.split_at(n_train);
            let (coef, intercept) = least_squares(x_train, y_train, stop)?;
            let predict = |x: &[f64]| dot(&coef, x) + intercept;
            metrics.r2_train = Some(r2(x_train.iter().map(|r| predict(r)), y_train));
            if n_test >= 2 {
                metrics.r2_test = Some(r2(x_test.iter().map(|r| predict(r)), y_test));
            }
            Trained::LinearRegression { coef, intercept }
        }
        Params::LogisticRegression { c } => {
            let y = data.targets.as_deref().unwrap_or_default();
            let (y_train, y_test) = y.split_at(n_train);
            let (coef, intercept, iterations) = logistic(x_train, y_train, *c, stop)?;
            let p = |x: &[f64]| sigmoid(dot(&coef, x) + intercept);
            let accuracy = |xs: &[Vec<f64>], ys: &[f64]| {
                let right = xs
                    .iter()
                    .zip(ys)
                    .filter(|(x, y)| (p(x) >= 0.5) == (**y == 1.0))
                    .count();
                right as f64 / xs.len() as f64
            };
            // The mean log-loss, probabilities clipped as scikit-learn's `log_loss` does.
            let log_loss = |xs: &[Vec<f64>], ys: &[f64]| {
                let loss: f64 = xs
                    .iter()
                    .zip(ys)
                    .map(|(x, y)| {
                        let q = p(x).clamp(1e-15, 1.0 - 1e-15);
                        -(y * q.ln() + (1.0 - y) * (1.0 - q).ln())
                    })
                    .sum();
                loss / xs.len() as f64
            };
            metrics.accuracy_train = Some(accuracy(x_train, y_train));
            metrics.log_loss_train = Some(log_loss(x_train, y_train));
            if n_test > 0 {
                metrics.accuracy_test = Some(accuracy(x_test, y_test));
                metrics.log_loss_test = Some(log_loss(x_test, y_test));
            }
            metrics.iterations = Some(iterations);
            Trained::LogisticRegression { coef, intercept }
        }
        Params::Kmeans { k, n_init, seed } => {
            let (centers, iterations) = kmeans(x_train, *k, *n_init, *seed, stop)?;
            metrics.inertia_train = Some(inertia(x_train, &centers));
            if n_test > 0 {
                metrics.inertia_test = Some(inertia(x_test, &centers));
            }
            metrics.iterations = Some(iterations);
            Trained::Kmeans { centers }
        }
    };
    Ok((trained, metrics))
}

fn dot(a: &[f64], b: &[f64]) -> f64 {
    a.iter().zip(b).map(|(x, y)| x * y).sum()
}

fn sigmoid(z: f64) -> f64 {
    if z >= 0.0 {
        1.0 / (1.0 + (-z).exp())
    } else {
        let e = z.exp();
        e / (1.0 + e)
    }
}

fn r2(predicted: impl Iterator<Item = f64>, y: &[f64]) -> f64 {
    let mean = y.iter().sum::<f64>() / y.len() as f64;
    let (mut ss_res, mut ss_tot) = (0.0, 0.0);
    for (p, t) in predicted.zip(y) {
        ss_res += (t - p) * (t - p);
        ss_tot += (t - mean) * (t - mean);
    }
    if ss_tot == 0.0 {
        if ss_res == 0.0 { 1.0 } else { 0.0 }
    } else {
        1.0 - ss_res / ss_tot
    }
}

/// Solves `a x = b` (a is `n × n`, row-major) by Gaussian elimination with partial pivoting.
/// `Ok(None)` when `a` is singular.
fn solve(mut a: Vec<Vec<f64>>, mut b: Vec<f64>, stop: Stop<'_>) -> Result<Option<Vec<f64>>, Error> {
    let n = b.len();
    let scale = a
        .iter()
        .flatten()
        .fold(0.0f64, |m, v| m.max(v.abs()))
        .max(1.0);
    for col in 0..n {
        stop.check()?;
        let Some(pivot) = (col..n).max_by(|&i, &j| a[i][col].abs().total_cmp(&a[j][col].abs()))
        else {
            return Ok(None);
        };
        if a[pivot][col].abs() <= 1e-12 * scale {
            return Ok(None);
        }
        a.swap(col, pivot);
        b.swap(col, pivot);
        let (above, below) = a.split_at_mut(col + 1);
        let pivot_row = &above[col];
        for (offset, row) in below.iter_mut().enumerate() {
            let f = row[col] / pivot_row[col];
            if f != 0.0 {
                for (x, p) in row[col..].iter_mut().zip(&pivot_row[col..]) {
                    *x -= f * p;
                }
                b[col + 1 + offset] -= f * b[col];
            }
        }
    }
    let mut x = vec![0.0; n];
    for row in (0..n).rev() {
        let s: f64 = (row + 1..n).map(|k| a[row][k] * x[k]).sum();
        x[row] = (b[row] - s) / a[row][row];
    }
    Ok(Some(x))
}

/// Least squares with an intercept, through the centered normal equations (better conditioned than
/// the raw ones).
fn least_squares(x: &[Vec<f64>], y: &[f64], stop: Stop<'_>) -> Result<(Vec<f64>, f64), Error> {
    let n = x.len() as f64;
    let d = x[0].len();
    let mean_x: Vec<f64> = (0..d)
        .map(|j| x.iter().map(|r| r[j]).sum::<f64>() / n)
        .collect();
    let mean_y = y.iter().sum::<f64>() / n;
    let mut xtx = vec![vec![0.0; d]; d];
    let mut xty = vec![0.0; d];
    for (row, t) in x.iter().zip(y) {
        stop.check()?;
        let c: Vec<f64> = row.iter().zip(&mean_x).map(|(v, m)| v - m).collect();
        for i in 0..d {
            xty[i] += c[i] * (t - mean_y);
            for j in 0..d {
                xtx[i][j] += c[i] * c[j];
            }
        }
    }
    let coef = solve(xtx, xty, stop)?.ok_or_else(|| {
        bad("the features are collinear (or constant): least squares has no unique solution")
    })?;
    let intercept = mean_y - dot(&coef, &mean_x);
    Ok((coef, intercept))
}

/// Newton's method on `c × Σ log-loss + ½‖w‖²`, intercept unpenalized, with step halving.
fn logistic(
    x: &[Vec<f64>],
    y: &[f64],
    c: f64,
    stop: Stop<'_>,
) -> Result<(Vec<f64>, f64, usize), Error> {
    let d = x[0].len();
    // Parameters: w[0..d] weights, w[d] intercept.
    let mut w = vec![0.0; d + 1];
    let objective = |w: &[f64]| {
        let mut loss = 0.0;
        for (row, t) in x.iter().zip(y) {
            stop.check()?;
            let z = dot(&w[..d], row) + w[d];
            // log(1 + e^z) - t z, computed stably.
            loss += if z > 0.0 {
                z + (-z).exp().ln_1p()
            } else {
                z.exp().ln_1p()
            } - t * z;
        }
        Ok::<_, Error>(c * loss + 0.5 * w[..d].iter().map(|v| v * v).sum::<f64>())
    };
    let mut current = objective(&w)?;
    for iteration in 1..=NEWTON_ITERATIONS as usize {
        let mut grad = vec![0.0; d + 1];
        let mut hess = vec![vec![0.0; d + 1]; d + 1];
        for (row, t) in x.iter().zip(y) {
            stop.check()?;
            let p = sigmoid(dot(&w[..d], row) + w[d]);
            let r = c * (p - t);
            let s = c * p * (1.0 - p);
            let xi = |i: usize| if i < d { row[i] } else { 1.0 };
            for (i, (g, h)) in grad.iter_mut().zip(hess.iter_mut()).enumerate() {
                *g += r * xi(i);
                for (j, hij) in h.iter_mut().enumerate() {
                    *hij += s * xi(i) * xi(j);
                }
            }
        }
        for i in 0..d {
            grad[i] += w[i];
            hess[i][i] += 1.0;
        }
        let norm = grad.iter().map(|g| g * g).sum::<f64>().sqrt();
        if norm < 1e-10 {
            let intercept = w[d];
            w.truncate(d);
            return Ok((w, intercept, iteration - 1));
        }
        let step = solve(hess, grad.clone(), stop)?
            .ok_or_else(|| bad("the problem is degenerate (a singular Hessian)"))?;
        let mut t = 1.0;
        loop {
            let trial: Vec<f64> = w.iter().zip(&step).map(|(a, s)| a - t * s).collect();
            let value = objective(&trial)?;
            if value <= current || t < 1e-10 {
                w = trial;
                current = value;
                break;
            }
            t /= 2.0;
        }
    }
    let intercept = w[d];
    w.truncate(d);
    Ok((w, intercept, NEWTON_ITERATIONS as usize))
}

fn distance2(a: &[f64], b: &[f64]) -> f64 {
    a.iter().zip(b).map(|(x, y)| (x - y) * (x - y)).sum()
}

fn nearest(row: &[f64], centers: &[Vec<f64>]) -> (usize, f64) {
    centers
        .iter()
        .enumerate()
        .map(|(i, c)| (i, distance2(row, c)))
        .min_by(|a, b| a.1.total_cmp(&b.1))
        .expect("at least one center")
}

pub(crate) fn inertia(x: &[Vec<f64>], centers: &[Vec<f64>]) -> f64 {
    x.iter().map(|r| nearest(r, centers).1).sum()
}

/// The index of each row's nearest center.
pub(crate) fn assign(x: &[Vec<f64>], centers: &[Vec<f64>]) -> Vec<usize> {
    x.iter().map(|r| nearest(r, centers).0).collect()
}

/// Each row's nearest center, as [`nearest`], the cancel flag looked at once a row.
fn nearest_each(
    x: &[Vec<f64>],
    centers: &[Vec<f64>],
    stop: Stop<'_>,
) -> Result<Vec<(usize, f64)>, Error> {
    x.iter()
        .map(|r| {
            stop.check()?;
            Ok(nearest(r, centers))
        })
        .collect()
}

fn kmeans(
    x: &[Vec<f64>],
    k: usize,
    n_init: usize,
    seed: u64,
    stop: Stop<'_>,
) -> Result<(Vec<Vec<f64>>, usize), Error> {
    let mut rng = StdRng::seed_from_u64(seed);
    let mut best: Option<(f64, Vec<Vec<f64>>, usize)> = None;
    for _ in 0..n_init {
        // k-means++: each next center drawn with probability proportional to its squared distance.
        let mut centers = vec![x[rng.gen_range(0..x.len())].clone()];
        while centers.len() < k {
            let d2: Vec<f64> = nearest_each(x, &centers, stop)?
                .into_iter()
                .map(|(_, d2)| d2)
                .collect();
            let total: f64 = d2.iter().sum();
            let next = if total == 0.0 {
                rng.gen_range(0..x.len())
            } else {
                let mut pick = rng.gen_range(0.0..total);
                d2.iter()
                    .position(|v| {
                        pick -= v;
                        pick < 0.0
                    })
                    .unwrap_or(x.len() - 1)
            };
            centers.push(x[next].clone());
        }
        let mut iterations = 0;
        for _ in 0..LLOYD_ITERATIONS {
            iterations += 1;
            let labels = nearest_each(x, &centers, stop)?;
            let d = x[0].len();
            let mut sums = vec![vec![0.0; d]; k];
            let mut counts = vec![0usize; k];
            for (row, &(l, _)) in x.iter().zip(&labels) {
                counts[l] += 1;
                for (s, v) in sums[l].iter_mut().zip(row) {
                    *s += v;
                }
            }
            let mut moved = 0.0f64;
            for i in 0..k {
                // An empty cluster keeps its center.
                if counts[i] > 0 {
                    let new: Vec<f64> = sums[i].iter().map(|s| s / counts[i] as f64).collect();
                    moved = moved.max(distance2(&new, &centers[i]));
                    centers[i] = new;
                }
            }
            if moved <= 1e-20 {
                break;
            }
        }
        let score: f64 = nearest_each(x, &centers, stop)?
            .into_iter()
            .map(|(_, d2)| d2)
            .sum();
        if best.as_ref().is_none_or(|(b, _, _)| score < *b) {
            best = Some((score, centers, iterations));
        }
    }
    let (_, centers, iterations) = best.expect("n_init is at least 1");
    Ok((centers, iterations))
}

impl Trained {
    /// Predictions for `rows`: values (linear), labels and probabilities of label 1 (logistic), or
    /// cluster indices (k-means).
    pub(crate) fn predict(&self, rows: &[Vec<f64>]) -> Result<Prediction, Error> {
        let d = match self {
            Trained::LinearRegression { coef, .. } | Trained::LogisticRegression { coef, .. } => {
                coef.len()
            }
            Trained::Kmeans { centers } => centers[0].len(),
        };
        for (i, row) in rows.iter().enumerate() {
            if row.len() != d {
                return Err(Error::Shape(format!(
                    "features[{i}] has {} values; the model takes {d}",
                    row.len()
                )));
            }
            if let Some(j) = row.iter().position(|v| !v.is_finite()) {
                return Err(bad(format!("features[{i}][{j}] is not a finite number")));
            }
        }
        Ok(match self {
            Trained::LinearRegression { coef, intercept } => Prediction::Values {
                predictions: rows.iter().map(|r| dot(coef, r) + intercept).collect(),
            },
            Trained::LogisticRegression { coef, intercept } => {
                let p: Vec<f64> = rows
                    .iter()
                    .map(|r| sigmoid(dot(coef, r) + intercept))
                    .collect();
                Prediction::Classes {
                    predictions: p.iter().map(|q| u8::from(*q >= 0.5)).collect(),
                    probabilities: p,
                }
            }
            Trained::Kmeans { centers } => Prediction::Clusters {
                clusters: assign(rows, centers),
            },
        })
    }
}
