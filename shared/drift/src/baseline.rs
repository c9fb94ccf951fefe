//! The drift baseline of a version: each feature's binned distribution over the
//! training ratings, stored as `<version>/drift_baseline.json` beside (not inside)
//! the model's `als/` folder, so the version's `artifact_sha` does not change.
//!
//! Every feature is a value per observation (a training row, or a (user, movie) pair
//! of the window), never a count over the window, so neither the window's length nor
//! its traffic volume moves it (docs/DRIFT.md):
//!
//! | feature | value |
//! |---|---|
//! | `rating` | the rating (events without one are not counted) |
//! | `events_per_user` | how many training positives the model holds for the event's user (how heavy the users behind the traffic are); unknown users are not counted here |
//! | `item_popularity` | the item's training popularity rank (0 = most interacted-with, [`AlsModel::popular`] order); items the model does not know are not counted here |
//! | `unknown_user_share` | 1 if the model does not know the user, else 0 |
//! | `unknown_item_share` | 1 if the model does not know the item, else 0 |
//! | `hour_of_day` | UTC hour of the event (0-23), compared with the training hours the window's clock covers |
//! | `user`, `item` | the raw id as a number (the Python system's two features) |
//!
//! Beside the bins, a baseline holds the spread of PSI between windows of the
//! training history and the whole of it ([`Spread`], NannyML's reference method), for
//! the window lengths in [`REFERENCE_WINDOWS`] and any asked for.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::hash::{BuildHasherDefault, Hasher};

use serde::{Deserialize, Serialize};

use crate::psi::{self, Binned};
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

/// Window lengths (seconds) the baseline holds a reference spread for: 1 h, 6 h,
/// 12 h, 24 h, 7 d (plus any length asked for when building it).
pub const REFERENCE_WINDOWS: [u64; 5] = [3_600, 21_600, 43_200, 86_400, 604_800];

/// A reference window counts towards the spread of a feature when it holds at least
/// this many observations of it (fewer read high from sampling noise alone).
pub const REFERENCE_MIN_COUNT: u64 = 100;

/// The baseline file name inside a version folder.
pub const BASELINE_FILE: &str = "drift_baseline.json";

/// The current baseline format. Schema 1 held `events_per_user` as per-window counts
/// (not volume-invariant); it still loads, and that feature is then skipped.
const SCHEMA: u32 = 2;

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

/// What the drift features need from a model: which users it knows (and how many
/// training positives each has) and each known item's popularity rank.
#[derive(Debug, Clone)]
pub struct ModelIndex {
    users: IdSet,
    /// Training positives per user; empty when the model does not carry them.
    user_activity: IdMap<u32>,
    item_rank: IdMap<u32>,
}

impl ModelIndex {
    /// Indexes a served model of either kind: its users (for popularity, the users
    /// whose seen items it carries) and the popularity rank of each of its items.
    /// A popularity version does not expose per-user counts, so it has no
    /// `events_per_user` (the baseline records that).
    pub fn of(model: &ServedModel) -> ModelIndex {
        match model {
            ServedModel::Als(m) => ModelIndex::new(m),
            ServedModel::Popularity(p) => ModelIndex {
                users: p.users().iter().copied().collect(),
                user_activity: IdMap::default(),
                item_rank: p
                    .items()
                    .iter()
                    .enumerate()
                    .map(|(rank, &id)| (id, rank as u32))
                    .collect(),
            },
        }
    }

    /// Indexes `model`'s users, their training positives and the popularity rank of
    /// each of its items.
    pub fn new(model: &AlsModel) -> ModelIndex {
        let users = model.users().iter().copied().collect();
        let seen = model.seen();
        let user_activity = model
            .users()
            .iter()
            .enumerate()
            .map(|(row, &id)| (id, seen.row_len(row) as u32))
            .collect();
        let item_rank = model
            .popular(model.n_items())
            .iter()
            .enumerate()
            .map(|(rank, s)| (model.item_id(s.row), rank as u32))
            .collect();
        ModelIndex {
            users,
            user_activity,
            item_rank,
        }
    }

    /// An index from its parts (tests build one without a model).
    #[cfg(test)]
    pub(crate) fn from_parts(
        users: IdSet,
        user_activity: IdMap<u32>,
        item_rank: IdMap<u32>,
    ) -> ModelIndex {
        ModelIndex {
            users,
            user_activity,
            item_rank,
        }
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
pub(crate) fn hour_of_day(ts_ms: i64) -> usize {
    ts_ms.div_euclid(3_600_000).rem_euclid(24) as usize
}

/// The feature values of one observation (`None` = not counted for that feature),
/// in [`FEATURES`] order.
#[inline]
pub(crate) fn event_values(index: &ModelIndex, r: &Interaction) -> [Option<f64>; 8] {
    let rank = index.item_rank(r.item);
    [
        r.rating.map(f64::from),
        index.user_activity.get(&r.user).map(|&c| f64::from(c)),
        rank.map(f64::from),
        Some(if index.knows_user(r.user) { 0.0 } else { 1.0 }),
        Some(if rank.is_some() { 0.0 } else { 1.0 }),
        r.ts_ms.map(|t| hour_of_day(t) as f64),
        Some(r.user as f64),
        Some(r.item as f64),
    ]
}

/// Index of `hour_of_day` in [`FEATURES`].
pub(crate) const HOUR: usize = 5;

fn is_binary(feature: &str) -> bool {
    feature.ends_with("_share")
}

/// Milliseconds of `[start_ms, end_ms)` in each UTC hour of the day: what a window's
/// clock covers, so its `hour_of_day` is compared with the training hours it could
/// hold (a 1 h window holds one hour; a 36 h window twelve hours twice).
pub(crate) fn hour_coverage(start_ms: i64, end_ms: i64) -> [f64; 24] {
    const H: i64 = 3_600_000;
    let mut cov = [0.0; 24];
    if end_ms <= start_ms {
        return cov;
    }
    let span = end_ms - start_ms;
    // Whole days cover every hour equally; only the remainder needs walking.
    let days = span / (24 * H);
    for c in cov.iter_mut() {
        *c = (days * H) as f64;
    }
    let mut t = start_ms + days * 24 * H;
    while t < end_ms {
        let next = ((t.div_euclid(H)) + 1) * H;
        let stop = next.min(end_ms);
        cov[hour_of_day(t)] += (stop - t) as f64;
        t = stop;
    }
    cov
}

/// How far PSI between reference windows of one length and the whole reference
/// spreads, for one feature (NannyML's method): a window's PSI is unusual when it
/// is above `mean + 3 std` of these.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Spread {
    /// Reference windows with at least [`REFERENCE_MIN_COUNT`] observations.
    pub windows: u64,
    /// Median observations per such window.
    pub median_n: u64,
    /// Mean PSI of those windows against the whole reference.
    pub mean: f64,
    /// Standard deviation of that PSI.
    pub std: f64,
    /// The largest.
    pub max: f64,
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
    /// Rows with a timestamp (`hour_of_day` and the reference spread use only these).
    pub rows_with_time: u64,
    /// Where the rows came from (a file path, "recs train", ...).
    #[serde(default)]
    pub source: String,
    /// Each feature's bins (absent: no training value, see `missing`).
    pub features: BTreeMap<String, Binned>,
    /// Training rows per UTC hour (for the window's clock coverage).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub(crate) hour_counts: Vec<u64>,
    /// Per window length (seconds), per feature: the reference spread.
    #[serde(default)]
    pub reference: BTreeMap<u64, BTreeMap<String, Spread>>,
    /// Features that could not be baselined, and why (never silently partial).
    #[serde(default)]
    pub missing: BTreeMap<String, String>,
    /// Schema 1's per-window `events_per_user` counts: read, never used.
    #[serde(default, rename = "events_per_user", skip_serializing)]
    legacy_events_per_user: BTreeMap<u64, Binned>,
}

impl Baseline {
    /// Bins every feature at the training deciles of `rows` (the share features:
    /// known / unknown), against `model`'s known users and item popularity ranks.
    /// Repeated (user, movie) rows count once (first time, latest rating), as in the window.
    pub fn compute(rows: &[Interaction], model: &AlsModel) -> Baseline {
        Baseline::compute_indexed(rows, &ModelIndex::new(model), &[])
    }

    /// [`Baseline::compute`] with a prepared index and extra reference window
    /// lengths (seconds).
    pub fn compute_indexed(
        rows: &[Interaction],
        index: &ModelIndex,
        extra_windows: &[u64],
    ) -> Baseline {
        let rows = &dedup_pairs(rows);
        let mut values: Vec<Vec<f64>> = vec![Vec::with_capacity(rows.len()); FEATURES.len()];
        let mut hour_counts = vec![0u64; 24];
        let mut rows_with_time = 0u64;
        for r in rows {
            if let Some(t) = r.ts_ms {
                hour_counts[hour_of_day(t)] += 1;
                rows_with_time += 1;
            }
            for (i, v) in event_values(index, r).into_iter().enumerate() {
                if let Some(v) = v {
                    values[i].push(v);
                }
            }
        }
        let mut features = BTreeMap::new();
        let mut missing = BTreeMap::new();
        for (name, mut vals) in FEATURES.iter().zip(values) {
            if vals.is_empty() {
                missing.insert(name.to_string(), why_missing(name, rows.len(), index));
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
        if rows_with_time == 0 {
            hour_counts.clear();
        }
        let mut b = Baseline {
            schema: SCHEMA,
            version: String::new(),
            created_at: recs_core::time::now_rfc3339(),
            rows: rows.len() as u64,
            rows_with_time,
            source: String::new(),
            features,
            hour_counts,
            reference: BTreeMap::new(),
            missing,
            legacy_events_per_user: BTreeMap::new(),
        };
        if rows_with_time > 0 {
            let mut windows: Vec<u64> = REFERENCE_WINDOWS.to_vec();
            windows.extend(extra_windows.iter().filter(|&&w| w > 0));
            windows.sort_unstable();
            windows.dedup();
            let mut timed: Vec<&Interaction> = rows.iter().filter(|r| r.ts_ms.is_some()).collect();
            timed.sort_unstable_by_key(|r| r.ts_ms);
            for w in windows {
                b.reference.insert(w, b.spread(&timed, index, w));
            }
        } else {
            b.missing.insert(
                "reference_spread".into(),
                "the training rows have no timestamps, so no reference windows can be cut".into(),
            );
        }
        b
    }

    /// The bins a window is compared with for feature `name`: the baseline's, except
    /// `hour_of_day`, whose training hours are weighted by what the window's clock
    /// covers. `None` when the baseline lacks the feature.
    pub(crate) fn expected(&self, name: &str, start_ms: i64, end_ms: i64) -> Option<Vec<f64>> {
        let b = self.features.get(name)?;
        if name == FEATURES[HOUR] && self.hour_counts.len() == 24 {
            let cov = hour_coverage(start_ms, end_ms);
            let mut e = vec![0.0; b.n_bins()];
            for (h, (&c, &w)) in self.hour_counts.iter().zip(&cov).enumerate() {
                e[b.bin_of(h as f64)] += c as f64 * w;
            }
            return Some(e);
        }
        Some(b.counts_f64())
    }

    /// PSI of every feature of the reference windows of `seconds` (consecutive, from
    /// the first training time) against the whole reference.
    fn spread(
        &self,
        timed: &[&Interaction],
        index: &ModelIndex,
        seconds: u64,
    ) -> BTreeMap<String, Spread> {
        let w = seconds as i64 * 1000;
        let mut per_feature: Vec<Vec<(f64, u64)>> = vec![Vec::new(); FEATURES.len()];
        let mut i = 0;
        while i < timed.len() {
            let t0 = timed[i].ts_ms.unwrap_or(0);
            // Windows start on multiples of their length (as a scheduled job's do).
            let start = t0.div_euclid(w) * w;
            let end = start + w;
            let mut actual: Vec<Option<Binned>> = FEATURES
                .iter()
                .map(|f| self.features.get(*f).map(Binned::empty_like))
                .collect();
            while i < timed.len() && timed[i].ts_ms.unwrap_or(0) < end {
                for (a, v) in actual.iter_mut().zip(event_values(index, timed[i])) {
                    if let (Some(a), Some(v)) = (a.as_mut(), v) {
                        a.add(v);
                    }
                }
                i += 1;
            }
            for (k, a) in actual.into_iter().enumerate() {
                let Some(a) = a else { continue };
                let n = a.total();
                if n < REFERENCE_MIN_COUNT {
                    continue;
                }
                if let Some(e) = self.expected(FEATURES[k], start, end) {
                    if let Some(p) = psi::psi_weighted(&e, &a) {
                        per_feature[k].push((p, n));
                    }
                }
            }
        }
        let mut out = BTreeMap::new();
        for (k, mut v) in per_feature.into_iter().enumerate() {
            if v.is_empty() {
                continue;
            }
            let m = v.len() as f64;
            let mean = v.iter().map(|x| x.0).sum::<f64>() / m;
            let var = v.iter().map(|x| (x.0 - mean).powi(2)).sum::<f64>() / m;
            let max = v.iter().map(|x| x.0).fold(0.0, f64::max);
            v.sort_unstable_by_key(|x| x.1);
            let round = |x: f64| (x * 1e6).round() / 1e6;
            out.insert(
                FEATURES[k].to_string(),
                Spread {
                    windows: v.len() as u64,
                    median_n: v[v.len() / 2].1,
                    mean: round(mean),
                    std: round(var.sqrt()),
                    max: round(max),
                },
            );
        }
        out
    }

    /// The reference spread of `feature` for windows of `seconds`.
    pub(crate) fn spread_of(&self, seconds: u64, feature: &str) -> Option<&Spread> {
        self.reference.get(&seconds)?.get(feature)
    }

    /// Schema 1 baselines predate the volume-invariant `events_per_user`.
    pub(crate) fn is_legacy(&self) -> bool {
        self.schema == 1
    }

    /// Checks a baseline read from storage.
    fn check(&self) -> Result<(), String> {
        if self.schema != 1 && self.schema != SCHEMA {
            return Err(format!("unknown baseline schema {}", self.schema));
        }
        if !self.hour_counts.is_empty() && self.hour_counts.len() != 24 {
            return Err("hour_counts must hold 24 hours".into());
        }
        let all = self
            .features
            .values()
            .chain(self.legacy_events_per_user.values());
        if all.into_iter().any(|b| !b.is_valid()) {
            return Err("a feature's bins are inconsistent".into());
        }
        Ok(())
    }
}

/// Why a feature has no training values.
fn why_missing(name: &str, rows: usize, index: &ModelIndex) -> String {
    if rows == 0 {
        return "no training rows".into();
    }
    match name {
        "rating" => "the training rows carry no ratings (a split file holds user, movie pairs only; train on the rating file to baseline it)".into(),
        "hour_of_day" => "the training rows carry no timestamps (a split file holds user, movie pairs only; train on the rating file to baseline it)".into(),
        "events_per_user" if index.user_activity.is_empty() => {
            "the model carries no per-user training counts (a popularity version)".into()
        }
        "item_popularity" => "no training row is on an item the model knows".into(),
        "events_per_user" => "no training row is from a user the model knows".into(),
        _ => "no training values".into(),
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

    #[test]
    fn hour_coverage_counts_the_clock_a_window_spans() {
        let h = 3_600_000.0;
        // 01:30 .. 03:00: half of hour 1, all of hour 2.
        let c = hour_coverage(5_400_000, 10_800_000);
        assert_eq!((c[1], c[2], c[0] + c[3]), (h / 2.0, h, 0.0));
        // 36 h from midnight: hours 0-11 twice, 12-23 once.
        let c = hour_coverage(0, 36 * 3_600_000);
        assert_eq!((c[0], c[11], c[12], c[23]), (2.0 * h, 2.0 * h, h, h));
    }
}
