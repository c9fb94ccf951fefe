//! Offline ranking metrics, defined as in the peer baseline
//! (../shared/peer/implicit_baseline.py), so numbers compare one to one.
//!
//! For every user with at least one TEST positive, the top k of the full catalogue
//! minus that user's TRAIN items (the model's `seen_csr` row), then with
//! hits = |top k ∩ test|:
//!
//! - P@k = hits / k, R@k = hits / |test|, HR@k = 1 if hits > 0
//! - NDCG@k = sum over hit ranks r of 1/log2(r+1), divided by the same sum over
//!   ranks 1..=min(|test|, k)
//! - MAP@k = (1/min(|test|, k)) * sum over hit ranks r of (hits in the top r) / r
//!
//! averaged over those users. The ALS ranking is [`AlsModel::recommend_row`], what
//! the service serves; a test user the model does not know gets the popularity
//! ranking, as the service would answer (counted in `fallback_users`). Popularity:
//! items by number of TRAIN positives (the seen matrix's column counts), ties to
//! the lower catalogue row, the user's TRAIN items skipped. Test items outside the
//! model's catalogue count in |test| but can never be hit.

use std::collections::{BTreeMap, HashSet};

use rayon::prelude::*;
use serde_json::{json, Value};

use super::ratings::Ratings;
use recs_core::AlsModel;

/// Test positives per raw user id.
#[derive(Debug, Clone, Default)]
pub struct TestSet {
    users: Vec<(i64, Vec<i64>)>,
}

impl TestSet {
    /// The positives of a test file at `min_rating` (rows without a rating count).
    pub fn from_ratings(ratings: &Ratings, min_rating: f32) -> TestSet {
        let mut by_user: BTreeMap<i64, Vec<i64>> = BTreeMap::new();
        for r in ratings.positives(min_rating) {
            by_user.entry(r.user).or_default().push(r.item);
        }
        TestSet {
            users: by_user.into_iter().collect(),
        }
    }

    fn pairs(&self) -> usize {
        self.users.iter().map(|(_, v)| v.len()).sum()
    }
}

/// Mean metrics at k for one ranking.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Metrics {
    /// Mean P@k.
    pub(crate) precision: f64,
    /// Mean R@k.
    pub(crate) recall: f64,
    /// Mean NDCG@k.
    pub ndcg: f64,
    /// Mean MAP@k.
    pub(crate) map: f64,
    /// Mean HR@k.
    pub(crate) hit_rate: f64,
}

impl Metrics {
    /// `{"P@k", "R@k", "NDCG@k", "MAP@k", "HR@k"}` with `k` in the keys.
    fn to_json(self, k: usize) -> Value {
        json!({
            format!("P@{k}"): self.precision,
            format!("R@{k}"): self.recall,
            format!("NDCG@{k}"): self.ndcg,
            format!("MAP@{k}"): self.map,
            format!("HR@{k}"): self.hit_rate,
        })
    }
}

/// ALS and popularity side by side on one test set.
#[derive(Debug, Clone, PartialEq)]
pub struct Evaluation {
    /// The cut-off of every metric.
    pub(crate) k: usize,
    /// The ALS ranking's metrics.
    pub model: Metrics,
    /// The popularity ranking's metrics.
    pub popularity: Metrics,
    /// Users with at least one test positive (the denominator).
    pub eval_users: usize,
    /// Of those, users the model does not know (ranked by popularity).
    pub fallback_users: usize,
    /// Test positives over all users.
    pub(crate) test_pairs: usize,
}

impl Evaluation {
    /// The JSON of `recs eval` and meta.json's `offline_metrics`: `k`, the user and
    /// pair counts, and the `als` and `popularity` metrics.
    pub fn to_json(&self) -> Value {
        json!({
            "k": self.k,
            "n_eval_users": self.eval_users,
            "fallback_users": self.fallback_users,
            "test_pairs": self.test_pairs,
            "als": self.model.to_json(self.k),
            "popularity": self.popularity.to_json(self.k),
        })
    }
}

/// Metrics of one ranked list against one user's test items.
fn score_list(ranked: &[i64], test: &HashSet<i64>, k: usize) -> Metrics {
    let mut hits = 0usize;
    let mut dcg = 0f64;
    let mut ap = 0f64;
    for (pos, item) in ranked.iter().take(k).enumerate() {
        if test.contains(item) {
            hits += 1;
            dcg += 1.0 / ((pos + 2) as f64).log2();
            ap += hits as f64 / (pos + 1) as f64;
        }
    }
    let ideal = test.len().min(k);
    let idcg: f64 = (0..ideal).map(|pos| 1.0 / ((pos + 2) as f64).log2()).sum();
    Metrics {
        precision: hits as f64 / k as f64,
        recall: hits as f64 / test.len() as f64,
        ndcg: if idcg > 0.0 { dcg / idcg } else { 0.0 },
        map: if ideal > 0 { ap / ideal as f64 } else { 0.0 },
        hit_rate: if hits > 0 { 1.0 } else { 0.0 },
    }
}

/// Evaluates `model` (and the popularity ranking from its seen matrix) on `test`.
pub fn evaluate(model: &AlsModel, test: &TestSet, k: usize) -> Evaluation {
    let by_popularity: Vec<u32> = model
        .popular(model.n_items())
        .iter()
        .map(|s| s.row)
        .collect();
    let per_user: Vec<(Metrics, Metrics, bool)> = test
        .users
        .par_iter()
        .filter(|(_, items)| !items.is_empty())
        .map(|(user, items)| {
            let truth: HashSet<i64> = items.iter().copied().collect();
            let row = model.user_row(*user);
            let seen = row.map(|r| model.seen().row(r)).unwrap_or(&[]);
            let popular: Vec<i64> = by_popularity
                .iter()
                .filter(|i| seen.binary_search(i).is_err())
                .take(k)
                .map(|&i| model.item_id(i))
                .collect();
            let als: Vec<i64> = match row {
                Some(r) => model
                    .recommend_row(r, k)
                    .iter()
                    .map(|s| model.item_id(s.row))
                    .collect(),
                None => popular.clone(),
            };
            (
                score_list(&als, &truth, k),
                score_list(&popular, &truth, k),
                row.is_none(),
            )
        })
        .collect();
    let n = per_user.len();
    let mean = |pick: &dyn Fn(&(Metrics, Metrics, bool)) -> Metrics| {
        let mut m = Metrics::default();
        for x in &per_user {
            let v = pick(x);
            m.precision += v.precision;
            m.recall += v.recall;
            m.ndcg += v.ndcg;
            m.map += v.map;
            m.hit_rate += v.hit_rate;
        }
        if n > 0 {
            let d = n as f64;
            m.precision /= d;
            m.recall /= d;
            m.ndcg /= d;
            m.map /= d;
            m.hit_rate /= d;
        }
        m
    };
    Evaluation {
        k,
        model: mean(&|x| x.0),
        popularity: mean(&|x| x.1),
        eval_users: n,
        fallback_users: per_user.iter().filter(|x| x.2).count(),
        test_pairs: test.pairs(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn metrics_match_the_peer_definitions() {
        let truth: HashSet<i64> = [5, 7, 9].into_iter().collect();
        // Hits at ranks 1 and 3 of 10.
        let m = score_list(&[5, 1, 7, 2, 3, 4, 6, 8, 10, 11], &truth, 10);
        let idcg = 1.0 + 1.0 / 3f64.log2() + 0.5;
        assert!((m.ndcg - (1.0 + 0.5) / idcg).abs() < 1e-12);
        assert!((m.map - (1.0 + 2.0 / 3.0) / 3.0).abs() < 1e-12);
        assert!((m.precision - 0.2).abs() < 1e-12);
        assert!((m.recall - 2.0 / 3.0).abs() < 1e-12);
        assert_eq!(m.hit_rate, 1.0);
        let none = score_list(&[1, 2], &truth, 10);
        assert_eq!(none, Metrics::default());
    }
}
