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
//! averaged over those users, and R@20 the same as R@k at 20. Over the whole
//! list of users: **coverage** = distinct items in any top k / catalogue items;
//! **popularity bias** (ARP@k) = mean over users and their top-k items of the
//! item's share of TRAIN users (its seen-matrix column count / model users).
//! A test set may carry a **mask** ([`TestSet::with_mask`]): items per user that are
//! left out of the ranking besides TRAIN (RecBole masks VALID when testing).
//! The ALS ranking is [`AlsModel::recommend_row`], what
//! the service serves; a test user the model does not know gets the popularity
//! ranking, as the service would answer (counted in `fallback_users`). Popularity:
//! items by number of TRAIN positives (the seen matrix's column counts), ties to
//! the lower catalogue row, the user's TRAIN items skipped. Test items outside the
//! model's catalogue count in |test| but can never be hit.

use std::collections::{BTreeMap, HashMap, HashSet};

use rayon::prelude::*;
use serde_json::{json, Value};

use super::ratings::Ratings;
use recs_core::AlsModel;

/// Test positives per raw user id.
#[derive(Debug, Clone, Default)]
pub struct TestSet {
    users: Vec<(i64, Vec<i64>)>,
    /// Items per user left out of the ranking besides TRAIN.
    mask: HashMap<i64, Vec<i64>>,
}

impl TestSet {
    /// The positives of a test file at `min_rating` (rows without a rating count).
    pub fn from_ratings(ratings: &Ratings, min_rating: f32) -> TestSet {
        Self::from_pairs(
            ratings
                .positives(min_rating)
                .iter()
                .map(|r| (r.user, r.item)),
        )
    }

    /// Test positives from (user, item) pairs.
    pub fn from_pairs(pairs: impl IntoIterator<Item = (i64, i64)>) -> TestSet {
        let mut by_user: BTreeMap<i64, Vec<i64>> = BTreeMap::new();
        for (u, i) in pairs {
            by_user.entry(u).or_default().push(i);
        }
        TestSet {
            users: by_user.into_iter().collect(),
            mask: HashMap::new(),
        }
    }

    /// The same test set with `mask`'s (user, item) pairs also left out of every
    /// ranking (e.g. VALID when testing under RecBole's protocol).
    pub fn with_mask(mut self, mask: impl IntoIterator<Item = (i64, i64)>) -> TestSet {
        for (u, i) in mask {
            self.mask.entry(u).or_default().push(i);
        }
        self
    }

    /// Users with at least one test positive.
    pub fn n_users(&self) -> usize {
        self.users.iter().filter(|(_, v)| !v.is_empty()).count()
    }

    /// The raw ids of the users with test positives, ascending.
    pub fn user_ids(&self) -> impl Iterator<Item = i64> + '_ {
        self.users.iter().map(|(u, _)| *u)
    }

    /// Test pairs over all users.
    pub fn len(&self) -> usize {
        self.pairs()
    }

    /// True when there are no test pairs.
    pub fn is_empty(&self) -> bool {
        self.pairs() == 0
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
    /// Mean R@20.
    pub recall_20: f64,
    /// Distinct items in any user's top k / catalogue items.
    pub coverage: f64,
    /// Mean TRAIN-user share of the recommended items (ARP@k).
    pub popularity_bias: f64,
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
            "R@20": self.recall_20,
            format!("coverage@{k}"): self.coverage,
            format!("popularity_bias@{k}"): self.popularity_bias,
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

/// Metrics of one ranked list (at least `max(k, 20)` long when the catalogue allows)
/// against one user's test items; coverage and popularity bias are left 0.
fn score_list(ranked: &[i64], test: &HashSet<i64>, k: usize) -> Metrics {
    let hits_20 = ranked.iter().take(20).filter(|i| test.contains(i)).count();
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
        recall_20: hits_20 as f64 / test.len() as f64,
        ..Metrics::default()
    }
}

/// Evaluates `model` (and the popularity ranking from its seen matrix) on `test`.
pub fn evaluate(model: &AlsModel, test: &TestSet, k: usize) -> Evaluation {
    let depth = k.max(20);
    let by_popularity: Vec<u32> = model
        .popular(model.n_items())
        .iter()
        .map(|s| s.row)
        .collect();
    let seen = model.seen();
    let mut item_users = vec![0usize; model.n_items()];
    for r in 0..model.users().len() {
        for &i in seen.row(r) {
            item_users[i as usize] += 1;
        }
    }
    let n_model_users = model.users().len().max(1) as f64;
    // One user's result: ALS metrics, popularity metrics, fallback, and the item rows
    // of both top k.
    type PerUser = (Metrics, Metrics, bool, Vec<u32>, Vec<u32>);
    let per_user: Vec<PerUser> = test
        .users
        .par_iter()
        .filter(|(_, items)| !items.is_empty())
        .map(|(user, items)| {
            let truth: HashSet<i64> = items.iter().copied().collect();
            let row = model.user_row(*user);
            let mut masked: Vec<u32> = test
                .mask
                .get(user)
                .map(|m| m.iter().filter_map(|&i| model.item_row(i)).collect())
                .unwrap_or_default();
            masked.sort_unstable();
            masked.dedup();
            let seen_row = row.map(|r| seen.row(r)).unwrap_or(&[]);
            let popular: Vec<u32> = by_popularity
                .iter()
                .filter(|i| seen_row.binary_search(i).is_err() && masked.binary_search(i).is_err())
                .take(depth)
                .copied()
                .collect();
            let als: Vec<u32> = match row {
                Some(r) => model
                    .recommend_row_excluding(r, &masked, depth)
                    .iter()
                    .map(|s| s.row)
                    .collect(),
                None => popular.clone(),
            };
            let ids =
                |rows: &[u32]| -> Vec<i64> { rows.iter().map(|&i| model.item_id(i)).collect() };
            let bias = |rows: &[u32]| -> f64 {
                let top = &rows[..rows.len().min(k)];
                if top.is_empty() {
                    return 0.0;
                }
                top.iter()
                    .map(|&i| item_users[i as usize] as f64 / n_model_users)
                    .sum::<f64>()
                    / top.len() as f64
            };
            let mut m_als = score_list(&ids(&als), &truth, k);
            m_als.popularity_bias = bias(&als);
            let mut m_pop = score_list(&ids(&popular), &truth, k);
            m_pop.popularity_bias = bias(&popular);
            let top = |mut v: Vec<u32>| {
                v.truncate(k);
                v
            };
            (m_als, m_pop, row.is_none(), top(als), top(popular))
        })
        .collect();
    let n = per_user.len();
    let mean = |pick: &dyn Fn(&PerUser) -> Metrics| {
        let mut m = Metrics::default();
        for x in &per_user {
            let v = pick(x);
            m.precision += v.precision;
            m.recall += v.recall;
            m.ndcg += v.ndcg;
            m.map += v.map;
            m.hit_rate += v.hit_rate;
            m.recall_20 += v.recall_20;
            m.popularity_bias += v.popularity_bias;
        }
        if n > 0 {
            let d = n as f64;
            m.precision /= d;
            m.recall /= d;
            m.ndcg /= d;
            m.map /= d;
            m.hit_rate /= d;
            m.recall_20 /= d;
            m.popularity_bias /= d;
        }
        m
    };
    let coverage = |pick: &dyn Fn(&PerUser) -> &[u32]| -> f64 {
        let distinct: HashSet<u32> = per_user
            .iter()
            .flat_map(|x| pick(x).iter().copied())
            .collect();
        distinct.len() as f64 / model.n_items().max(1) as f64
    };
    let mut als = mean(&|x| x.0);
    als.coverage = coverage(&|x| &x.3);
    let mut popularity = mean(&|x| x.1);
    popularity.coverage = coverage(&|x| &x.4);
    Evaluation {
        k,
        model: als,
        popularity,
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
        // R@20 counts hits in the first 20: ranks 1, 3 and 15 here.
        let long: Vec<i64> = (100..120).collect();
        let mut ranked = long.clone();
        ranked[0] = 5;
        ranked[2] = 7;
        ranked[14] = 9;
        let m = score_list(&ranked, &truth, 10);
        assert!((m.recall - 2.0 / 3.0).abs() < 1e-12);
        assert!((m.recall_20 - 1.0).abs() < 1e-12);
    }

    /// Users 1, 2; items 10..13 scored 4, 3, 2, 1 for both (one factor); user 1 has
    /// seen item 10.
    fn tiny_model() -> AlsModel {
        use recs_core::{CsrPattern, Factors};
        AlsModel::new(
            Factors {
                shape: vec![2, 1],
                data: vec![1.0, 1.0],
            },
            Factors {
                shape: vec![4, 1],
                data: vec![4.0, 3.0, 2.0, 1.0],
            },
            vec![1, 2],
            vec![10, 11, 12, 13],
            CsrPattern::from_rows(4, vec![vec![0], vec![]]),
        )
        .unwrap()
    }

    #[test]
    fn coverage_bias_and_masks_by_hand() {
        let m = tiny_model();
        let test = TestSet::from_pairs([(1, 13), (2, 12)]);
        // k = 2. User 1: 11, 12 (10 seen); user 2: 10, 11. Three distinct of four
        // items: coverage 0.75. Item 10 is seen by 1 of 2 users (share 0.5), the
        // others by none: user 1's lists average 0, user 2's (0.5 + 0) / 2.
        let e = evaluate(&m, &test, 2);
        assert!((e.model.coverage - 0.75).abs() < 1e-12, "{:?}", e.model);
        assert!((e.model.popularity_bias - 0.125).abs() < 1e-12);
        // User 2's test item 12 is third: no hit at 2; user 1's 13 is never in 2.
        assert_eq!(e.model.ndcg, 0.0);
        // R@20: both test items are within their top 20 (the whole catalogue).
        assert!((e.model.recall_20 - 1.0).abs() < 1e-12);
        // Masking 10 for user 2: 11, 12, a hit at rank 2 for user 2.
        let masked = TestSet::from_pairs([(1, 13), (2, 12)]).with_mask([(2, 10)]);
        let e = evaluate(&m, &masked, 2);
        assert!((e.model.coverage - 0.5).abs() < 1e-12);
        assert_eq!(e.model.popularity_bias, 0.0);
        let ndcg_user2 = (1.0 / 3f64.log2()) / 1.0;
        assert!(
            (e.model.ndcg - ndcg_user2 / 2.0).abs() < 1e-12,
            "{}",
            e.model.ndcg
        );
    }
}
