//! Data drift: does the traffic the served model sees still look like the data it was
//! trained on? (docs/DRIFT.md has the operator's view.)
//!
//! - `baseline`: each feature's binned training distribution, stored per version as
//!   `<version>/drift_baseline.json` ([`Baseline::compute`], [`save_baseline`]).
//! - `events`: the rating and watch events under an `EVENTS` location (folder or
//!   `s3://bucket/prefix`, partitioned by date), every schema the Python system wrote
//!   ([`read_window`]).
//! - `psi`: bins ([`Binned`]), the Population Stability Index, the runbook's action bands.
//! - [`compute`]: PSI per feature of one window against a baseline -> [`Summary`];
//!   [`run`] does the whole job (served version, baseline, model, events).
//! - `synth` (cargo feature `synth`, off by default): synthetic events for tests, the
//!   benchmark and demos.
//! - The `recs` CLI (shared/cli) runs `recs drift`, `recs drift baseline` and
//!   `recs drift gen-events`.
//!
//! The summary of the last run is stored as `<registry>/drift/latest.json`
//! ([`write_latest`], [`read_latest`]) for `recs serve`'s `/metrics`.

#![warn(missing_docs)]

mod baseline;
mod events;
#[cfg(test)]
mod invariance_tests;
mod psi;
#[cfg(feature = "synth")]
pub mod synth;

use std::collections::{BTreeMap, HashMap};
use std::hash::BuildHasherDefault;

use serde::{Deserialize, Serialize};

use baseline::load_baseline;
pub use baseline::{
    save_baseline, Baseline, BaselineError, ModelIndex, Spread, BASELINE_FILE, FEATURES,
    REFERENCE_MIN_COUNT, REFERENCE_WINDOWS,
};
#[doc(hidden)]
pub use events::fuzz_parse_file;
pub use events::{list_window_files, read_window, Event, ReadStats, Window};
pub use psi::Binned;

use recs_core::{Interaction, Registry, RegistryError, Store, StoreError};

/// Where the last summary is stored, relative to the registry root.
pub use recs_core::DRIFT_LATEST_KEY as LATEST_KEY;
/// Features with fewer observations than this in the window are not reported
/// (sampling noise alone makes small samples read high: at 500 a same-distribution
/// window reaches PSI 0.1 about once in ten million, see the `psi` module).
pub const DEFAULT_MIN_COUNT: u64 = 500;

/// The result of one drift run. Serialised as
/// `{"version","window","events","features":{name:psi},"max_psi","action", ...}`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Summary {
    /// The served version the window was compared with.
    pub version: String,
    /// The window length, e.g. `24h`.
    pub window: String,
    /// Interaction events in the window.
    pub events: u64,
    /// Distinct (user, movie) pairs among them: the unit every feature counts.
    #[serde(default)]
    interactions: u64,
    /// PSI per reported feature.
    pub features: BTreeMap<String, f64>,
    /// Per reported feature: its runbook band and its place in the reference spread.
    #[serde(default)]
    pub reference: BTreeMap<String, Reference>,
    /// The largest PSI (`null` when no feature was reported).
    pub max_psi: Option<f64>,
    /// The runbook's action for `max_psi`.
    pub action: String,
    /// Start of the window (inclusive), RFC 3339 UTC, to the second.
    window_start: String,
    /// End of the window (exclusive), RFC 3339 UTC, to the second.
    pub window_end: String,
    /// When the summary was computed, RFC 3339 UTC.
    computed_at: String,
    /// Observations per feature (user-movie pairs of the window it counts).
    observations: BTreeMap<String, u64>,
    /// Features not reported, and why.
    pub skipped: BTreeMap<String, String>,
    /// The fewest observations a feature needed to be reported.
    min_count: u64,
    /// What was read: files, lines, malformed and ignored lines.
    read: ReadStats,
    /// Set when nothing could be compared (an empty window).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
}

impl Summary {
    /// The PSI of each reported feature in [`FEATURES`] order.
    pub fn psi(&self) -> Vec<(String, f64)> {
        FEATURES
            .iter()
            .filter_map(|f| self.features.get(*f).map(|&p| (f.to_string(), p)))
            .collect()
    }

    /// The runbook action band of one PSI value.
    fn band(psi: f64) -> &'static str {
        psi::action(Some(psi))
    }

    /// A plain-text table (what `recs drift` prints).
    pub fn table(&self) -> String {
        use std::fmt::Write;
        let mut out = String::new();
        let _ = writeln!(
            out,
            "drift of {} over {} ({} .. {}): {} events ({} user-movie pairs); {} lines read, {} malformed, {} ignored, {} files",
            self.version,
            self.window,
            self.window_start,
            self.window_end,
            self.events,
            self.interactions,
            self.read.lines,
            self.read.malformed,
            self.read.ignored,
            self.read.files
        );
        let _ = writeln!(
            out,
            "{:<20} {:>8} {:>9}  {:<24} {:>22} {:>7}",
            "feature", "psi", "n", "band (runbook)", "reference windows", "z"
        );
        for f in FEATURES {
            let n = self.observations.get(f).copied().unwrap_or(0);
            match (self.features.get(f), self.skipped.get(f)) {
                (Some(p), _) => {
                    let r = self.reference.get(f);
                    let spread = match r {
                        Some(Reference {
                            ref_windows: w @ 1..,
                            ref_mean: Some(m),
                            ref_std: Some(sd),
                            ..
                        }) => format!("{m:.3}±{sd:.3} over {w}"),
                        _ => "none".to_string(),
                    };
                    let z = r
                        .and_then(|r| r.z)
                        .map_or("-".to_string(), |z| format!("{z:.1}"));
                    let unusual = if r.is_some_and(|r| r.unusual) {
                        "  unusual"
                    } else {
                        ""
                    };
                    let _ = writeln!(
                        out,
                        "{f:<20} {p:>8.4} {n:>9}  {:<24} {spread:>22} {z:>7}{unusual}",
                        Summary::band(*p)
                    );
                }
                (None, reason) => {
                    let _ = writeln!(
                        out,
                        "{f:<20} {:>8} {n:>9}  ({})",
                        "-",
                        reason.map_or("not computed", String::as_str)
                    );
                }
            }
        }
        match self.max_psi {
            Some(m) => {
                let _ = writeln!(out, "max PSI {m:.4}: {}", self.action);
            }
            None => {
                let _ = writeln!(
                    out,
                    "no PSI: {}",
                    self.note.as_deref().unwrap_or("no feature had enough data")
                );
            }
        }
        out
    }
}

/// Window lengths: `24h`, `90m`, `7d`, `1h30m`, `3600s`, `2w`; a bare number is seconds.
pub fn parse_window(s: &str) -> Option<u64> {
    let s = s.trim();
    if let Ok(secs) = s.parse::<u64>() {
        return (secs > 0).then_some(secs);
    }
    let mut total: u64 = 0;
    let mut num = String::new();
    for c in s.chars() {
        if c.is_ascii_digit() {
            num.push(c);
            continue;
        }
        let unit = match c {
            's' => 1,
            'm' => 60,
            'h' => 3_600,
            'd' => 86_400,
            'w' => 604_800,
            _ => return None,
        };
        let n: u64 = num.parse().ok()?;
        total = total.checked_add(n.checked_mul(unit)?)?;
        num.clear();
    }
    (num.is_empty() && total > 0).then_some(total)
}

/// `86400` -> `24h`, `5400` -> `90m`.
pub fn format_window(secs: u64) -> String {
    if secs.is_multiple_of(3_600) {
        format!("{}h", secs / 3_600)
    } else if secs.is_multiple_of(60) {
        format!("{}m", secs / 60)
    } else {
        format!("{secs}s")
    }
}

fn rfc3339_ms(ms: i64) -> String {
    recs_core::time::rfc3339((ms.max(0) / 1000) as u64)
}

/// PSI of each feature of the events in `window` against `baseline`.
///
/// The unit of observation is a (user, movie) pair of the window (its first time, its
/// latest rating), and every feature is a value per pair, so neither the window's
/// length nor its volume moves it; `hour_of_day` is compared with the training hours
/// the window's clock covers. A feature is not reported when the baseline lacks it,
/// or when it has fewer than `min_count` observations; an empty window reports
/// nothing (no false alarm). Each reported PSI also gets its place in the spread of
/// same-length reference windows ([`Reference`]).
pub fn compute(
    baseline: &Baseline,
    index: &ModelIndex,
    events: &[Event],
    window: Window,
    min_count: u64,
) -> Summary {
    let window_secs = ((window.end_ms - window.start_ms) / 1000).max(0) as u64;
    let mut current: Vec<Option<psi::Binned>> = FEATURES
        .iter()
        .map(|f| baseline.features.get(*f).map(psi::Binned::empty_like))
        .collect();
    // One observation per (user, movie) pair in the window, like the training data's
    // one row per pair: a watch stream's per-minute events or a re-rating count once,
    // at the pair's first time, with its latest rating.
    let mut pairs: HashMap<(i64, i64), Pair, BuildHasherDefault<baseline::IdHasher>> =
        HashMap::default();
    let mut n_events = 0u64;
    let timed = events
        .iter()
        .filter_map(|e| e.ts_ms.filter(|_| window.contains(e.ts_ms)).map(|t| (e, t)));
    for (e, ts) in timed {
        n_events += 1;
        let p = pairs.entry((e.user, e.item)).or_insert(Pair {
            first_ts: ts,
            rating_ts: i64::MIN,
            rating: None,
        });
        p.first_ts = p.first_ts.min(ts);
        if e.rating.is_some() && ts >= p.rating_ts {
            p.rating_ts = ts;
            p.rating = e.rating;
        }
    }
    for (&(user, item), p) in &pairs {
        let row = Interaction {
            user,
            item,
            rating: p.rating,
            ts_ms: Some(p.first_ts),
        };
        for (bins, v) in current.iter_mut().zip(baseline::event_values(index, &row)) {
            if let (Some(b), Some(v)) = (bins.as_mut(), v) {
                b.add(v);
            }
        }
    }

    let mut features = BTreeMap::new();
    let mut observations = BTreeMap::new();
    let mut skipped = BTreeMap::new();
    let mut reference = BTreeMap::new();
    for (name, actual) in FEATURES.iter().zip(current) {
        let name = name.to_string();
        if name == "events_per_user" && baseline.is_legacy() {
            skipped.insert(
                name,
                "the baseline is schema 1 (per-window counts, not volume-invariant); rebuild it with `recs drift baseline`".into(),
            );
            continue;
        }
        let (Some(expected), Some(actual)) = (
            baseline.expected(&name, window.start_ms, window.end_ms),
            actual,
        ) else {
            let why = baseline.missing.get(&name).cloned().unwrap_or_else(|| {
                if name == "hour_of_day" {
                    "the training rows had no timestamps".to_string()
                } else {
                    format!("the baseline has no {name} (no training values)")
                }
            });
            skipped.insert(name, why);
            continue;
        };
        let n = actual.total();
        observations.insert(name.clone(), n);
        if n == 0 {
            skipped.insert(name, "no observations in the window".into());
        } else if n < min_count {
            skipped.insert(
                name,
                format!("only {n} observations (min_count {min_count})"),
            );
        } else if let Some(p) = psi::psi_weighted(&expected, &actual) {
            // Six decimals: plenty for thresholds at 0.1, and exact through JSON.
            let p = (p * 1e6).round() / 1e6;
            reference.insert(
                name.clone(),
                Reference::of(p, baseline.spread_of(window_secs, &name)),
            );
            features.insert(name, p);
        } else {
            skipped.insert(name, "baseline has no observations".into());
        }
    }

    let (features, reference, note) = if n_events == 0 {
        (
            BTreeMap::new(),
            BTreeMap::new(),
            Some("no events in the window: no PSI reported".to_string()),
        )
    } else {
        (features, reference, None)
    };
    let max_psi = features
        .values()
        .copied()
        .fold(None, |m: Option<f64>, p| Some(m.map_or(p, |m| m.max(p))));
    Summary {
        version: baseline.version.clone(),
        window: format_window(window_secs),
        events: n_events,
        interactions: pairs.len() as u64,
        max_psi,
        action: psi::action(max_psi).to_string(),
        features,
        reference,
        window_start: rfc3339_ms(window.start_ms),
        window_end: rfc3339_ms(window.end_ms),
        computed_at: rfc3339_ms(recs_core::time::now_ms()),
        observations,
        skipped,
        min_count,
        read: ReadStats::default(),
        note,
    }
}

/// How one feature's PSI reads: the runbook's fixed band, and how unusual it is
/// against the spread of PSI between same-length reference windows and the whole
/// reference (NannyML's method). The alarm keeps the runbook's threshold; this says
/// whether a value is sampling noise or unlike anything the training history showed.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Reference {
    /// The runbook's action band of this PSI alone.
    pub band: String,
    /// Reference windows of the same length the spread was taken over (0: none had
    /// enough observations, e.g. a training history shorter than the window).
    pub ref_windows: u64,
    /// Their mean PSI against the whole reference.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ref_mean: Option<f64>,
    /// Its standard deviation.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ref_std: Option<f64>,
    /// The largest reference-window PSI.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ref_max: Option<f64>,
    /// `(psi - ref_mean) / ref_std` (absent without a spread or with no variation).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub z: Option<f64>,
    /// Above `ref_mean + 3 ref_std` (NannyML's default threshold).
    pub unusual: bool,
}

impl Reference {
    fn of(psi: f64, spread: Option<&baseline::Spread>) -> Reference {
        let band = psi::action(Some(psi)).to_string();
        let Some(s) = spread else {
            return Reference {
                band,
                ref_windows: 0,
                ref_mean: None,
                ref_std: None,
                ref_max: None,
                z: None,
                unusual: false,
            };
        };
        let z = (s.std > 0.0).then(|| ((psi - s.mean) / s.std * 100.0).round() / 100.0);
        Reference {
            band,
            ref_windows: s.windows,
            ref_mean: Some(s.mean),
            ref_std: Some(s.std),
            ref_max: Some(s.max),
            z,
            unusual: psi > s.mean + 3.0 * s.std,
        }
    }
}

/// A (user, movie) pair's interactions in the window.
struct Pair {
    first_ts: i64,
    rating_ts: i64,
    rating: Option<f32>,
}

/// How to run the job.
#[derive(Debug, Clone)]
pub struct Options {
    /// Window length, seconds.
    pub window_secs: u64,
    /// Window end, epoch milliseconds.
    pub until_ms: i64,
    /// Features with fewer observations are not reported ([`DEFAULT_MIN_COUNT`]).
    pub min_count: u64,
    /// Compare with this version instead of the served one.
    pub version: Option<String>,
    /// Only rated events count (leave watch events out of every feature), for
    /// training data that holds ratings only and a stream that also carries watches.
    pub ratings_only: bool,
}

/// The events location: `given` (`--events`), else [`recs_core::events_location`]
/// (`EVENTS`, else `DRIFT_EVENTS_URI`).
pub fn events_location(given: Option<String>) -> Option<String> {
    given
        .filter(|s| !s.is_empty())
        .or_else(recs_core::events_location_from_env)
}

/// Why the drift job could not produce a summary.
#[derive(Debug, thiserror::Error)]
pub enum DriftError {
    /// No `version` was given and the served one could not be worked out.
    #[error("working out the served version: {0}")]
    Served(#[from] recs_core::active::ServedError),
    /// The version's baseline is missing, invalid or unreadable.
    #[error(transparent)]
    Baseline(#[from] BaselineError),
    /// The version's model could not be loaded.
    #[error("loading model {version}: {source}")]
    Model {
        /// The version compared with.
        version: String,
        /// Why loading failed.
        #[source]
        source: RegistryError,
    },
    /// The events location could not be listed or a file in it fetched.
    #[error("reading events under {location}: {source}")]
    Events {
        /// The events location (folder or `s3://bucket/prefix`).
        location: String,
        /// The storage error.
        #[source]
        source: StoreError,
    },
}

/// The whole job: the served version's baseline and model, the window's events, PSI
/// per feature. Logs one summary line (and a warning for an empty window).
pub async fn run(
    registry: &Registry,
    events: &Store,
    opts: &Options,
) -> Result<Summary, DriftError> {
    let version = match &opts.version {
        Some(v) => v.clone(),
        None => recs_core::active::served_version(registry, None).await?.1,
    };
    let (baseline, loaded) =
        tokio::join!(load_baseline(registry, &version), registry.load(&version));
    let mut baseline = baseline?;
    baseline.version = version.clone();
    let model = loaded.map_err(|source| DriftError::Model {
        version: version.clone(),
        source,
    })?;
    let index = ModelIndex::of(&model.model);
    let window = Window::ending(opts.until_ms, opts.window_secs);
    let (mut evs, stats) =
        read_window(events, window)
            .await
            .map_err(|source| DriftError::Events {
                location: events.location(),
                source,
            })?;
    if opts.ratings_only {
        evs.retain(|e| e.rating.is_some());
    }
    let mut summary = compute(&baseline, &index, &evs, window, opts.min_count);
    summary.read = stats;
    log_summary(&summary, &events.location());
    Ok(summary)
}

/// One summary log line (JSON in Lambda); a warning when the window was empty.
fn log_summary(s: &Summary, events_location: &str) {
    if s.events == 0 {
        tracing::warn!(
            version = %s.version,
            window = %s.window,
            window_start = %s.window_start,
            window_end = %s.window_end,
            events = %events_location,
            files = s.read.files,
            malformed = s.read.malformed,
            "drift: no events in the window, so no PSI is reported (no alarm); check that events are being written"
        );
    }
    if s.read.malformed > 0 {
        tracing::warn!(
            malformed = s.read.malformed,
            examples = ?s.read.examples,
            "drift: malformed event lines were skipped"
        );
    }
    let json = serde_json::to_string(s).expect("summary serialises");
    tracing::info!(
        version = %s.version,
        events = s.events,
        max_psi = s.max_psi.unwrap_or(0.0),
        action = %s.action,
        summary = %json,
        "drift summary"
    );
}

/// Stores the summary as `drift/latest.json` in the registry.
pub async fn write_latest(store: &Store, summary: &Summary) -> Result<(), StoreError> {
    let bytes = serde_json::to_vec_pretty(summary).expect("summary serialises");
    store.put(LATEST_KEY, bytes).await.map(|_| ())
}

/// The last stored summary, if there is a readable one (for `/metrics`).
pub async fn read_latest(store: &Store) -> Option<Summary> {
    recs_core::read_drift_latest(store).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn windows_parse_and_print() {
        assert_eq!(parse_window("24h"), Some(86_400));
        assert_eq!(parse_window("90m"), Some(5_400));
        assert_eq!(parse_window("1h30m"), Some(5_400));
        assert_eq!(parse_window("7d"), Some(604_800));
        assert_eq!(parse_window("3600"), Some(3_600));
        for bad in ["", "0", "0h", "h", "24x", "-1h", "24h5"] {
            assert_eq!(parse_window(bad), None, "{bad}");
        }
        assert_eq!(format_window(86_400), "24h");
        assert_eq!(format_window(5_400), "90m");
        assert_eq!(format_window(61), "61s");
    }
}
