//! The drift baseline of a version: each feature's binned distribution over the
//! training ratings, stored as `<version>/drift_baseline.json` beside (not inside)
//! the model's `als/` folder, so the version's `artifact_sha` does not change.
//!
//! Feature values, per event (a training rating or a live interaction):
//!
//! | feature | value |
//! |---|---|
//! | `rating` | the rating (events without one are not counted) |
//! | `item_popularity` | the item's training popularity rank (0 = most interacted-with, [`AlsModel::popular`] order); items the model does not know are not counted here |
//! | `unknown_user_share` | 1 if the model does not know the user, else 0 |
//! | `unknown_item_share` | 1 if the model does not know the item, else 0 |
//! | `hour_of_day` | UTC hour of the event (0-23) |
//! | `user`, `item` | the raw id as a number (the Python system's two features) |
//!
//! and per (user, window): `events_per_user` = how many events a user who was active
//! in a window of the drift job's length had in it. For the baseline, windows of each
//! length in [`EVENTS_PER_USER_WINDOWS`] slide over the training period with a stride
//! of a quarter window (only windows entirely inside the period), which is what a
//! window ending at a random instant sees.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::hash::{BuildHasherDefault, Hasher};

use serde::{Deserialize, Serialize};

use crate::psi::Binned;
use recs_core::{
    validate_version, AlsModel, Interaction, Registry, RegistryError, ServedModel, StoreError,
};

/// The features, in report order. `infra/METRICS.md` and the alarms use these names.
pub const FEATURES: [&str; 8] = [
    "rating",
    "events_per_user",
    "item_popularity",
    "unknown_user_share",
    "unknown_item_share",
    "hour_of_day",
    "user",
    "item",
];

/// Window lengths (seconds) the baseline holds an `events_per_user` distribution
/// for: 1 h, 6 h, 12 h, 24 h, 7 d (plus any length asked for when building it).
const EVENTS_PER_USER_WINDOWS: [u64; 5] = [3_600, 21_600, 43_200, 86_400, 604_800];

/// The baseline file name inside a version folder.
pub const BASELINE_FILE: &str = "drift_baseline.json";

/// A fast hasher for integer ids (Fx-style multiply-rotate); ids are not
/// attacker-chosen keys here.
#[derive(Default, Clone, Copy)]
pub(crate) struct IdHasher(u64);

impl Hasher for IdHasher {
    #[inline]
    fn finish(&self) -> u64 {
        self.0
    }
    #[inline]
    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.write_u64(b as u64);
        }
    }
    #[inline]
    fn write_u64(&mut self, v: u64) {
        self.0 = (self.0.rotate_left(5) ^ v).wrapping_mul(0x51_7c_c1_b7_27_22_0a_95);
    }
    #[inline]
    fn write_i64(&mut self, v: i64) {
        self.write_u64(v as u64);
    }
}

pub(crate) type IdMap<V> = HashMap<i64, V, BuildHasherDefault<IdHasher>>;
pub(crate) type IdSet = HashSet<i64, BuildHasherDefault<IdHasher>>;

/// What the drift features need from a model: which users it knows and each known
/// item's popularity rank.
#[derive(Debug, Clone)]
pub struct ModelIndex {
    users: IdSet,
    item_rank: IdMap<u32>,
}

impl ModelIndex {
    /// Indexes a served model of either kind: its users (for popularity, the users
    /// whose seen items it carries) and the popularity rank of each of its items.
    pub fn of(model: &ServedModel) -> ModelIndex {
        match model {
            ServedModel::Als(m) => ModelIndex::new(m),
            ServedModel::Popularity(p) => ModelIndex {
                users: p.users().iter().copied().collect(),
                item_rank: p
                    .items()
                    .iter()
                    .enumerate()
                    .map(|(rank, &id)| (id, rank as u32))
                    .collect(),
            },
        }
    }

    /// Indexes `model`'s users and the popularity rank of each of its items.
    pub fn new(model: &AlsModel) -> ModelIndex {
        let users = model.users().iter().copied().collect();
        let item_rank = model
            .popular(model.n_items())
            .iter()
            .enumerate()
            .map(|(rank, s)| (model.item_id(s.row), rank as u32))
            .collect();
        ModelIndex { users, item_rank }
    }

    #[inline]
    fn knows_user(&self, user: i64) -> bool {
        self.users.contains(&user)
    }

    /// The popularity rank of a known item.
    #[inline]
    fn item_rank(&self, item: i64) -> Option<u32> {
        self.item_rank.get(&item).copied()
    }
}

/// UTC hour of an epoch-millisecond instant.
#[inline]
fn hour_of_day(ts_ms: i64) -> f64 {
    (ts_ms.div_euclid(3_600_000).rem_euclid(24)) as f64
}

/// The per-event feature values of one event (`None` = not counted for that
/// feature), in [`PER_EVENT`] order.
#[inline]
pub(crate) fn event_values(index: &ModelIndex, r: &Interaction) -> [Option<f64>; 7] {
    let rank = index.item_rank(r.item);
    [
        r.rating.map(f64::from),
        rank.map(f64::from),
        Some(if index.knows_user(r.user) { 0.0 } else { 1.0 }),
        Some(if rank.is_some() { 0.0 } else { 1.0 }),
        r.ts_ms.map(hour_of_day),
        Some(r.user as f64),
        Some(r.item as f64),
    ]
}

/// The per-event features (all but `events_per_user`), in [`event_values`] order.
pub(crate) const PER_EVENT: [&str; 7] = [
    "rating",
    "item_popularity",
    "unknown_user_share",
    "unknown_item_share",
    "hour_of_day",
    "user",
    "item",
];

fn is_binary(feature: &str) -> bool {
    feature.ends_with("_share")
}

/// A version's drift baseline.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Baseline {
    /// Format version of this file.
    schema: u32,
    pub(crate) version: String,
    created_at: String,
    /// Training rows the distributions were computed from (one per user-movie pair).
    pub rows: u64,
    /// Rows with a timestamp (`hour_of_day`, `events_per_user` use only these).
    pub rows_with_time: u64,
    /// Where the rows came from (a file path, "recs train", ...).
    #[serde(default)]
    pub source: String,
    /// The per-event features (absent: no training value, e.g. no timestamps).
    pub features: BTreeMap<String, Binned>,
    /// `events_per_user` per window length in seconds.
    pub events_per_user: BTreeMap<u64, Binned>,
}

impl Baseline {
    /// Bins every feature at the training deciles of `rows` (the share features:
    /// known / unknown), against `model`'s known users and item popularity ranks.
    /// Repeated (user, movie) rows count once (first time, latest rating), as in the window.
    pub fn compute(rows: &[Interaction], model: &AlsModel) -> Baseline {
        Baseline::compute_indexed(rows, &ModelIndex::new(model), &[])
    }

    /// [`Baseline::compute`] with a prepared index and extra `events_per_user`
    /// window lengths (seconds).
    pub fn compute_indexed(
        rows: &[Interaction],
        index: &ModelIndex,
        extra_windows: &[u64],
    ) -> Baseline {
        let rows = &dedup_pairs(rows);
        let mut values: Vec<Vec<f64>> = vec![Vec::with_capacity(rows.len()); PER_EVENT.len()];
        for r in rows {
            for (i, v) in event_values(index, r).into_iter().enumerate() {
                if let Some(v) = v {
                    values[i].push(v);
                }
            }
        }
        let mut features = BTreeMap::new();
        for (name, mut vals) in PER_EVENT.iter().zip(values) {
            if vals.is_empty() {
                continue;
            }
            let binned = if is_binary(name) {
                let mut b = Binned::binary();
                vals.iter().for_each(|&v| b.add(v));
                b
            } else {
                Binned::quantiles(&mut vals)
            };
            features.insert(name.to_string(), binned);
        }
        let mut timed: Vec<(i64, i64)> = rows
            .iter()
            .filter_map(|r| r.ts_ms.map(|t| (r.user, t)))
            .collect();
        let mut events_per_user = BTreeMap::new();
        if !timed.is_empty() {
            timed.sort_unstable();
            let mut windows: Vec<u64> = EVENTS_PER_USER_WINDOWS.to_vec();
            windows.extend(extra_windows.iter().filter(|&&w| w > 0));
            windows.sort_unstable();
            windows.dedup();
            for w in windows {
                let mut counts = sliding_window_counts(&timed, w);
                events_per_user.insert(w, Binned::quantiles(&mut counts));
            }
        }
        Baseline {
            schema: 1,
            version: String::new(),
            created_at: recs_core::time::now_rfc3339(),
            rows: rows.len() as u64,
            rows_with_time: timed.len() as u64,
            source: String::new(),
            features,
            events_per_user,
        }
    }

    /// The `events_per_user` distribution for a window of `seconds`.
    pub(crate) fn events_per_user(&self, seconds: u64) -> Option<&Binned> {
        self.events_per_user.get(&seconds)
    }

    /// Checks a baseline read from storage.
    fn check(&self) -> Result<(), String> {
        if self.schema != 1 {
            return Err(format!("unknown baseline schema {}", self.schema));
        }
        let all = self.features.values().chain(self.events_per_user.values());
        if all.into_iter().any(|b| !b.is_valid()) {
            return Err("a feature's bins are inconsistent".into());
        }
        Ok(())
    }
}

/// One row per (user, movie) pair, as training files hold them and as the drift job
/// counts a window: the pair's first time and its latest rating (rows without a time
/// count as earlier than any timed row). Order: by (user, movie).
fn dedup_pairs(rows: &[Interaction]) -> Vec<Interaction> {
    let mut sorted: Vec<Interaction> = rows.to_vec();
    sorted.sort_by_key(|r| (r.user, r.item, r.ts_ms));
    let mut out: Vec<Interaction> = Vec::with_capacity(sorted.len());
    for r in sorted {
        match out.last_mut() {
            Some(last) if last.user == r.user && last.item == r.item => {
                if r.rating.is_some() {
                    last.rating = r.rating;
                }
            }
            _ => out.push(r),
        }
    }
    out
}

/// Events per (user, window) for windows of `seconds` sliding by a quarter window
/// over the period of `timed` ((user, ts_ms) sorted by user then time), keeping
/// windows that lie entirely inside the period; a period shorter than one window is
/// one window.
fn sliding_window_counts(timed: &[(i64, i64)], seconds: u64) -> Vec<f64> {
    let w = (seconds as i64) * 1000;
    let stride = (w / 4).max(1);
    let (t0, t1) = timed
        .iter()
        .fold((i64::MAX, i64::MIN), |(lo, hi), &(_, t)| {
            (lo.min(t), hi.max(t))
        });
    let span = t1 - t0 + 1;
    // Last window index k with t0 + k*stride + w <= t1 + 1.
    let k_max = if span >= w { (span - w) / stride } else { 0 };
    let mut out = Vec::new();
    let mut per_window: BTreeMap<i64, u32> = BTreeMap::new();
    let mut i = 0;
    while i < timed.len() {
        let user = timed[i].0;
        per_window.clear();
        while i < timed.len() && timed[i].0 == user {
            let d = timed[i].1 - t0;
            let k_hi = (d / stride).min(k_max);
            // Windows k with k*stride <= d < k*stride + w.
            let k_lo = if d >= w { (d - w) / stride + 1 } else { 0 };
            for k in k_lo..=k_hi {
                *per_window.entry(k).or_default() += 1;
            }
            i += 1;
        }
        out.extend(per_window.values().map(|&c| c as f64));
    }
    out
}

/// Why a baseline could not be read or written.
#[derive(Debug, thiserror::Error)]
pub enum BaselineError {
    /// The named version has no baseline file.
    #[error("version {0} has no drift baseline ({0}/{BASELINE_FILE}); build it with `recs drift baseline --ratings <training file> --version {0}`")]
    Missing(String),
    /// A stored baseline does not parse or is inconsistent: (version, reason).
    #[error("{0}/{BASELINE_FILE} is invalid: {1}")]
    Invalid(String, String),
    /// The version name is not a valid one.
    #[error(transparent)]
    Registry(#[from] RegistryError),
    /// The baseline file could not be read or written.
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// Writes `baseline` as `<version>/drift_baseline.json` (the version must exist).
pub async fn save_baseline(
    registry: &Registry,
    version: &str,
    baseline: &Baseline,
) -> Result<(), BaselineError> {
    validate_version(version)?;
    let mut b = baseline.clone();
    b.version = version.to_string();
    let bytes = serde_json::to_vec(&b).expect("baseline serialises");
    registry
        .store()
        .put(&format!("{version}/{BASELINE_FILE}"), bytes)
        .await?;
    Ok(())
}

/// Reads a version's baseline.
pub(crate) async fn load_baseline(
    registry: &Registry,
    version: &str,
) -> Result<Baseline, BaselineError> {
    validate_version(version)?;
    let bytes = match registry
        .store()
        .get(&format!("{version}/{BASELINE_FILE}"))
        .await
    {
        Ok(b) => b,
        Err(StoreError::NotFound(_)) => return Err(BaselineError::Missing(version.into())),
        Err(e) => return Err(e.into()),
    };
    let b: Baseline = serde_json::from_slice(&bytes)
        .map_err(|e| BaselineError::Invalid(version.into(), e.to_string()))?;
    b.check()
        .map_err(|e| BaselineError::Invalid(version.into(), e))?;
    Ok(b)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sliding_windows_cover_the_period() {
        let h = 3_600_000;
        // Period 0h..30h, window 24h, stride 6h: windows [0h, 24h) and [6h, 30h).
        let timed = vec![(1, 0), (1, h), (1, 29 * h), (2, 0), (3, 30 * h)];
        let mut c = sliding_window_counts(&timed, 86_400);
        c.sort_by(f64::total_cmp);
        // user 1: 2 events in the first window, 1 in the second; user 2: 1 in the
        // first; user 3's event is at the period's very end, in no whole window.
        assert_eq!(c, vec![1.0, 1.0, 2.0]);
        // A period shorter than the window is one window.
        let c = sliding_window_counts(&[(1, 0), (1, h), (2, 5 * h)], 86_400);
        assert_eq!(c, vec![2.0, 1.0]);
    }

    #[test]
    fn pairs_keep_the_first_time_and_the_latest_rating() {
        let r = |item, rating, ts| Interaction {
            user: 1,
            item,
            rating,
            ts_ms: ts,
        };
        let rows = [
            r(2, Some(5.0), Some(30)),
            r(2, None, Some(10)),
            r(2, Some(1.0), Some(20)),
            r(3, None, None),
        ];
        assert_eq!(
            dedup_pairs(&rows),
            vec![r(2, Some(5.0), Some(10)), r(3, None, None)]
        );
    }

    #[test]
    fn id_hasher_spreads_small_ids() {
        let s: IdSet = (0..1000).collect();
        assert_eq!(s.len(), 1000);
        assert!(s.contains(&999));
    }
}
