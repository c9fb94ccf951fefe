//! Binning and the Population Stability Index.
//!
//! # Bins
//!
//! A feature's bins are fixed when the baseline is built, from the training values:
//! the cut points are the training deciles (`B = 10` target bins), the value at rank
//! `ceil(k n / B)` for `k = 1..B`, with repeated cut points merged and a cut point equal
//! to the training maximum dropped. Bin `i` holds values in `(edge[i-1], edge[i]]`; the
//! first bin is open below and the last open above, so a value outside the training
//! range lands in the first or last bin (the Python system dropped such values, hiding
//! exactly the drift it should show). Every bin therefore holds training data, about a
//! tenth each for continuous features; discrete features (ratings 1-5) get one bin per
//! value, or a few merged values, because repeated cut points merge.
//!
//! The two share features (`unknown_user_share`, `unknown_item_share`) are binary
//! (0 = the model knows the id, 1 = it does not) and use the fixed cut `[0]`: two bins,
//! known and unknown, even when training had no unknown ids at all.
//!
//! # PSI
//!
//! With training proportions `p_i = c_i / N` and current proportions `q_i = d_i / M`:
//!
//! ```text
//! PSI = sum_i (q_i - p_i) * ln(q_i / p_i)
//! ```
//!
//! where every proportion is floored at [`EPSILON`] = 1e-4 before the sum (no
//! renormalisation). Each term is >= 0, so PSI >= 0 and is 0 for identical
//! distributions. A bin empty on both sides contributes 0; a bin empty on one side
//! contributes `(x - 1e-4) ln(x / 1e-4)`, a finite number (for a baseline share of 0
//! unknown ids: 1 % current -> 0.046, 3.5 % -> 0.20, 5 % -> 0.31, 8.5 % -> 0.50).
//! PSI is undefined (`None`) when either side has no observations.
//!
//! Sampling noise: for two samples of the same distribution PSI is about
//! `(bins - 1) (1/N + 1/M)` on average, so small windows read high. The drift job does
//! not report a feature with fewer than `min_count` observations (default 200: at most
//! about 0.05 of noise with 10 bins).

use serde::{Deserialize, Serialize};

/// Floor of every proportion in the PSI sum.
const EPSILON: f64 = 1e-4;
/// Target number of quantile bins.
const QUANTILE_BINS: usize = 10;

/// A binned distribution: `counts[i]` values fell in bin `i`; `counts.len() ==
/// edges.len() + 1`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Binned {
    /// Upper-inclusive cut points, strictly increasing.
    edges: Vec<f64>,
    counts: Vec<u64>,
}

impl Binned {
    /// Empty bins with these cut points.
    fn with_edges(edges: Vec<f64>) -> Binned {
        let counts = vec![0; edges.len() + 1];
        Binned { edges, counts }
    }

    /// Cut points at the training deciles of `values` (see the module docs) and the
    /// counts of `values` in them. `values` is sorted in place.
    pub(crate) fn quantiles(values: &mut [f64]) -> Binned {
        values.sort_unstable_by(f64::total_cmp);
        let mut b = Binned::with_edges(quantile_edges(values, QUANTILE_BINS));
        for &v in values.iter() {
            b.add(v);
        }
        b
    }

    /// The two-bin known (0) / unknown (1) distribution.
    pub(crate) fn binary() -> Binned {
        Binned::with_edges(vec![0.0])
    }

    /// The bin of `x`.
    #[inline]
    fn bin(&self, x: f64) -> usize {
        self.edges.partition_point(|&e| e < x)
    }

    #[inline]
    pub(crate) fn add(&mut self, x: f64) {
        let i = self.bin(x);
        self.counts[i] += 1;
    }

    pub(crate) fn total(&self) -> u64 {
        self.counts.iter().sum()
    }

    /// Number of bins.
    pub(crate) fn n_bins(&self) -> usize {
        self.counts.len()
    }

    /// The bin `x` falls in.
    pub(crate) fn bin_of(&self, x: f64) -> usize {
        self.bin(x)
    }

    /// The counts as weights (for [`psi_weighted`]).
    pub(crate) fn counts_f64(&self) -> Vec<f64> {
        self.counts.iter().map(|&c| c as f64).collect()
    }

    /// The same cut points with no counts.
    pub(crate) fn empty_like(&self) -> Binned {
        Binned::with_edges(self.edges.clone())
    }

    /// Whether the stored shape is consistent (for baselines read from storage).
    pub(crate) fn is_valid(&self) -> bool {
        self.counts.len() == self.edges.len() + 1
            && self.edges.windows(2).all(|w| w[0] < w[1])
            && self.edges.iter().all(|e| e.is_finite())
    }
}

/// Decile cut points of sorted `values`: merged when equal, the maximum dropped; a
/// single-valued sample keeps its value as the one cut (so anything above it shows).
fn quantile_edges(sorted: &[f64], bins: usize) -> Vec<f64> {
    let n = sorted.len();
    if n == 0 {
        return Vec::new();
    }
    let max = sorted[n - 1];
    let mut edges: Vec<f64> = Vec::with_capacity(bins);
    for k in 1..bins {
        let idx = (k * n).div_ceil(bins).saturating_sub(1);
        let v = sorted[idx.min(n - 1)];
        if edges.last() != Some(&v) && v < max {
            edges.push(v);
        }
    }
    if edges.is_empty() {
        edges.push(max);
    }
    edges
}

/// PSI of `actual` against expected bin weights (not necessarily integers: the
/// `hour_of_day` reference is weighted by the window's clock coverage).
pub(crate) fn psi_weighted(expected: &[f64], actual: &Binned) -> Option<f64> {
    let a: Vec<f64> = actual.counts_f64();
    psi_f64(expected, &a)
}

/// PSI over raw bin counts (see the module docs for the formula and the floor).
#[cfg(test)]
fn psi_counts(expected: &[u64], actual: &[u64]) -> Option<f64> {
    let e: Vec<f64> = expected.iter().map(|&c| c as f64).collect();
    let a: Vec<f64> = actual.iter().map(|&c| c as f64).collect();
    psi_f64(&e, &a)
}

fn psi_f64(expected: &[f64], actual: &[f64]) -> Option<f64> {
    let (n, m) = (expected.iter().sum::<f64>(), actual.iter().sum::<f64>());
    if n == 0.0 || m == 0.0 || expected.len() != actual.len() {
        return None;
    }
    let sum = expected
        .iter()
        .zip(actual)
        .map(|(&e, &a)| {
            let p = (e / n).max(EPSILON);
            let q = (a / m).max(EPSILON);
            (q - p) * (q / p).ln()
        })
        .sum::<f64>();
    // Rounding can leave -1e-17 for identical inputs.
    Some(sum.max(0.0))
}

/// What the runbook says to do at this PSI.
pub(crate) fn action(max_psi: Option<f64>) -> &'static str {
    match max_psi {
        Some(p) if p > 0.5 => "retrain now",
        Some(p) if p > 0.3 => "retrain within 2-3 days",
        Some(p) if p > 0.2 => "retrain within a week",
        _ => "none",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn edges_follow_deciles_and_merge_repeats() {
        let mut v: Vec<f64> = (1..=100).map(f64::from).collect();
        let b = Binned::quantiles(&mut v);
        assert_eq!(
            b.edges,
            vec![10.0, 20.0, 30.0, 40.0, 50.0, 60.0, 70.0, 80.0, 90.0]
        );
        assert_eq!(b.counts, vec![10; 10]);
        // Ratings: one bin per value, the top value's cut dropped.
        let mut r: Vec<f64> = [1.0, 2.0, 3.0, 3.0, 4.0, 4.0, 4.0, 5.0, 5.0, 5.0]
            .repeat(10)
            .to_vec();
        let b = Binned::quantiles(&mut r);
        assert_eq!(b.edges, vec![1.0, 2.0, 3.0, 4.0]);
        assert_eq!(b.counts, vec![10, 10, 20, 30, 30]);
        assert_eq!(b.bin(0.5), 0);
        assert_eq!(b.bin(3.5), 3);
        assert_eq!(b.bin(9.0), 4);
        // A constant sample keeps one cut.
        assert_eq!(quantile_edges(&[7.0; 5], 10), vec![7.0]);
        assert!(quantile_edges(&[], 10).is_empty());
    }

    #[test]
    fn psi_is_zero_for_equal_shapes_and_finite_for_empty_bins() {
        assert_eq!(psi_counts(&[10, 20, 30], &[1, 2, 3]), Some(0.0));
        assert_eq!(psi_counts(&[10, 20], &[0, 0]), None);
        assert_eq!(psi_counts(&[], &[]), None);
        // Known-only baseline, 5 % unknown now.
        let p = psi_counts(&[1000, 0], &[95, 5]).unwrap();
        let expected = (0.95f64 - 1.0) * (0.95f64).ln() + (0.05 - 1e-4) * (0.05f64 / 1e-4).ln();
        assert!((p - expected).abs() < 1e-12, "{p} vs {expected}");
        assert!((0.30..0.32).contains(&p));
        // Both sides empty in a bin: no contribution.
        assert_eq!(psi_counts(&[5, 0, 5], &[5, 0, 5]), Some(0.0));
    }

    #[test]
    fn action_bands_follow_the_runbook() {
        assert_eq!(action(None), "none");
        assert_eq!(action(Some(0.2)), "none");
        assert_eq!(action(Some(0.21)), "retrain within a week");
        assert_eq!(action(Some(0.3)), "retrain within a week");
        assert_eq!(action(Some(0.31)), "retrain within 2-3 days");
        assert_eq!(action(Some(0.5)), "retrain within 2-3 days");
        assert_eq!(action(Some(0.51)), "retrain now");
    }
}
