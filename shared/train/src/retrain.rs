//! Retraining as one job (`recs retrain`, `functions/retrain`): the snapshot the
//! current version was trained on plus the rate events since, deduplicated (the
//! latest rating of a pair wins), written as a new content-addressed snapshot (its id
//! is the new version's `data_snapshot_id`), trained with the current version's
//! hyper-parameters, evaluated on a time-based holdout, gated against popularity and
//! the current version, and published ([`retrain`]). [`retrain_then_canary`] is the
//! whole loop both callers run: that, then the published version started as a canary
//! through [`recs_control::update_rollout`] (the same verified, conditional write as
//! `recs rollout update` and `POST /rollout/update`).
//!
//! It never publishes an empty or worse model: no rows, no holdout, or a refusing
//! gate end in a [`RetrainError`] or a refused [`RetrainReport`], and nothing is written
//! to the registry but the snapshot.

use std::path::{Path, PathBuf};
use std::time::Instant;

use serde_json::{json, Value};
use sha2::{Digest, Sha256};

use crate::als::{AlsConfig, Confidence};
use crate::ratings::{self, Format, Rating};
use crate::{train, IdRows, TrainOptions, TrainReport};
use recs_control::{RolloutPatch, SwitchError};
use recs_core::active::ActiveState;
use recs_core::{Registry, Store, StoreError};

/// What to retrain and where.
#[derive(Debug, Clone)]
pub struct RetrainOptions {
    /// The registry (folder or `s3://bucket/prefix`).
    pub registry: String,
    /// The rate events location, in the Python team's layout (read by `recs-drift`).
    pub events: String,
    /// Where the new snapshot goes (folder or `s3://`); default: beside the current one.
    pub snapshots: Option<String>,
    /// Retrain from this version instead of the served one.
    pub base_version: Option<String>,
    /// The new version's name (default: the next `vX.Y`).
    pub version: Option<String>,
    /// Events up to this instant (epoch ms, exclusive) are read.
    pub until_ms: i64,
    /// The latest share of rows (by time) held out for evaluation.
    pub holdout_fraction: f64,
    /// Cut-off of the offline metrics.
    pub k: usize,
    /// How far the new NDCG@k may fall below the current version's and still pass.
    pub gate_margin: f64,
    /// Worker threads (0: one per core).
    pub threads: usize,
    /// Scratch folder for the train / holdout files (default: a temporary one).
    pub work_dir: Option<PathBuf>,
    /// Draw the ALS progress bar.
    pub progress: bool,
    /// Re-tune the hyper-parameters ([`crate::tune`]) before training, instead of
    /// reusing the current version's.
    pub tune: bool,
    /// Also re-tune when this many retrains (this one included) have run since the
    /// last tuned version (meta.json `tuning.runs_since_tune`; a version without it
    /// counts as due). 0: only with `tune`.
    pub retune_every: usize,
    /// The search's wall-time budget, seconds.
    pub tune_budget_seconds: u64,
    /// The search's trials.
    pub tune_trials: usize,
}

impl RetrainOptions {
    /// Defaults: served version, 10 % holdout, NDCG@10, margin 0.
    pub fn new(registry: impl Into<String>, events: impl Into<String>) -> Self {
        RetrainOptions {
            registry: registry.into(),
            events: events.into(),
            snapshots: None,
            base_version: None,
            version: None,
            until_ms: recs_core::time::now_ms(),
            holdout_fraction: 0.1,
            k: 10,
            gate_margin: 0.0,
            threads: 0,
            work_dir: None,
            progress: false,
            tune: false,
            retune_every: 0,
            tune_budget_seconds: crate::tune::DEFAULT_BUDGET_SECONDS,
            tune_trials: crate::tune::DEFAULT_TRIALS,
        }
    }
}

/// Whether this retrain re-tunes (see [`RetrainOptions::retune_every`]) and the
/// current version's `tuning.runs_since_tune`, if recorded.
pub fn retune_due(opts: &RetrainOptions, current_meta: &Value) -> (bool, Option<u64>) {
    let since = current_meta
        .get("tuning")
        .and_then(|t| t.get("runs_since_tune"))
        .and_then(Value::as_u64);
    let due = opts.tune
        || (opts.retune_every > 0 && since.is_none_or(|n| n + 1 >= opts.retune_every as u64));
    (due, since)
}

/// Why a retrain stopped before the gate (nothing was published).
#[derive(Debug, thiserror::Error)]
pub enum RetrainError {
    /// Working out or loading the current version failed.
    #[error("the current version: {0}")]
    Current(String),
    /// The current version's meta.json names no training snapshot.
    #[error("{0} records no data_snapshot_uri in its meta.json (train it with `recs train`, which records it, or pass --base-version)")]
    NoSnapshot(String),
    /// The snapshot or the events could not be read, or the new snapshot written.
    #[error("{what} {location}: {source}")]
    Store {
        /// What was being done.
        what: &'static str,
        /// Where.
        location: String,
        /// The storage error.
        #[source]
        source: StoreError,
    },
    /// The snapshot does not parse.
    #[error(transparent)]
    Ratings(#[from] ratings::RatingsError),
    /// There is nothing to train on: the Python team's retrain published empty models.
    #[error("refused: no training data ({0}); nothing published")]
    Empty(String),
    /// The data has no time spread to hold out.
    #[error("refused: no time-based holdout ({0}); nothing published")]
    NoHoldout(String),
    /// A scratch file could not be written.
    #[error("scratch file {path}: {source}")]
    Io {
        /// The file.
        path: String,
        /// The error.
        #[source]
        source: std::io::Error,
    },
    /// Training, evaluation or publishing failed.
    #[error(transparent)]
    Train(#[from] crate::TrainError),
    /// The canary share asked of [`retrain_then_canary`] is outside 0..=100 (checked
    /// before anything is read or written).
    #[error(transparent)]
    CanaryPercentage(SwitchError),
}

/// What a retrain did (also when the gate refused: then `published` is `None`).
#[derive(Debug)]
pub struct RetrainReport {
    /// The version retrained from.
    pub base_version: String,
    /// Its snapshot.
    pub base_snapshot: String,
    /// Rate events read since the snapshot's last time.
    pub new_events: usize,
    /// The new snapshot's id (SHA-256 of its bytes) and location.
    pub snapshot_id: String,
    /// Where it was written.
    pub snapshot_uri: String,
    /// Rows (user-movie pairs) in the new snapshot, users and items in it.
    pub rows: usize,
    /// Distinct users.
    pub users: usize,
    /// Distinct items.
    pub items: usize,
    /// Rows held out (the latest by time).
    pub holdout_rows: usize,
    /// NDCG@k of the new model, the current version and popularity on the holdout.
    pub ndcg_new: Option<f64>,
    /// The current version's (`None` when it could not be evaluated).
    pub ndcg_current: Option<f64>,
    /// Popularity's.
    pub ndcg_popularity: Option<f64>,
    /// Hyper-parameters that were not in the current version's meta.json (defaults used).
    pub defaulted: Vec<String>,
    /// The search's summary when this retrain re-tuned.
    pub tuned: Option<Value>,
    /// Wall seconds of the whole job.
    pub seconds: f64,
    /// The training run (gate checks, published version, summary).
    pub train: TrainReport,
}

impl RetrainReport {
    /// The gate's decision in one word.
    pub fn decision(&self) -> &'static str {
        if self.train.refused() {
            "refused"
        } else {
            "passed"
        }
    }

    /// The summary table the CLI prints; `rollout` says what was started.
    pub fn table(&self, rollout: &str) -> String {
        let f = |x: Option<f64>| x.map_or("-".to_string(), |v| format!("{v:.4}"));
        let mut rows = vec![
            ("retrained from".to_string(), self.base_version.clone()),
            ("new events".into(), self.new_events.to_string()),
            ("rows".into(), self.rows.to_string()),
            ("users".into(), self.users.to_string()),
            ("items".into(), self.items.to_string()),
            ("holdout rows".into(), self.holdout_rows.to_string()),
            ("snapshot".into(), self.snapshot_uri.clone()),
            ("NDCG@10 new".into(), f(self.ndcg_new)),
            (
                format!("NDCG@10 current ({})", self.base_version),
                f(self.ndcg_current),
            ),
            ("NDCG@10 popularity".into(), f(self.ndcg_popularity)),
            ("gate".into(), self.decision().to_string()),
            (
                "version published".into(),
                self.train
                    .published
                    .clone()
                    .unwrap_or_else(|| "none".into()),
            ),
            ("rollout started".into(), rollout.to_string()),
        ];
        if self.train.refused() {
            rows.push(("gate refused because".into(), self.train.gate.reasons()));
        }
        for note in &self.train.gate.notes {
            rows.push(("gate note".into(), note.clone()));
        }
        if !self.defaulted.is_empty() {
            rows.push((
                "defaulted hyper-parameters".into(),
                self.defaulted.join(", "),
            ));
        }
        let w = rows.iter().map(|r| r.0.len()).max().unwrap_or(0);
        rows.iter()
            .map(|(k, v)| format!("{k:<w$}  {v}\n"))
            .collect()
    }

    /// The report as JSON (the Lambda's result, `--json`).
    pub fn to_json(&self) -> Value {
        json!({
            "base_version": self.base_version,
            "base_snapshot": self.base_snapshot,
            "new_events": self.new_events,
            "snapshot_id": self.snapshot_id,
            "snapshot_uri": self.snapshot_uri,
            "rows": self.rows, "users": self.users, "items": self.items,
            "holdout_rows": self.holdout_rows,
            "ndcg_new": self.ndcg_new, "ndcg_current": self.ndcg_current,
            "ndcg_popularity": self.ndcg_popularity,
            "gate": self.decision(),
            "gate_reasons": self.train.gate.reasons(),
            "published": self.train.published,
            "defaulted": self.defaulted,
            "retuned": self.tuned.is_some(),
            "tuned_params": self.tuned.as_ref().map(|t| t["best_params"].clone()),
            "seconds": self.seconds,
        })
    }
}

/// A location `dir/name` (folder path or `s3://bucket/prefix/name`) as a store of its
/// folder and the key of the file in it.
fn split_uri(uri: &str) -> Result<(Store, String), StoreError> {
    let (dir, name) = match uri.rsplit_once('/') {
        Some((d, n)) if !d.is_empty() && !d.ends_with(':') && !d.ends_with("s3:/") => (d, n),
        _ => (".", uri),
    };
    Ok((Store::open(dir)?, name.to_string()))
}

fn store_err(what: &'static str, location: &str) -> impl FnOnce(StoreError) -> RetrainError {
    let location = location.to_string();
    move |source| RetrainError::Store {
        what,
        location,
        source,
    }
}

/// What a retrain trains with: the current version's hyper-parameters.
#[derive(Debug, Clone)]
struct Hyper {
    als: AlsConfig,
    id_rows: IdRows,
    min_rating: f32,
    /// Recompute lambda from this retrain's positives (the version recorded the
    /// rule, or its settings are not ours).
    auto_regularization: bool,
    /// What was not taken from the version (defaults used), and why.
    defaulted: Vec<String>,
}

/// The current version's hyper-parameters from its `als/meta.json`, and what was
/// defaulted. A version that recorded the lambda rule gets the rule again (lambda
/// grows with the data). A Spark-imported version's settings are Spark's (`regParam`
/// is not our lambda, Spark's alpha not our confidence): its factors, iterations and
/// seed are kept, the rest are `recs train`'s defaults.
fn hyper_parameters(meta: &Value, threads: usize) -> Hyper {
    let mut c = crate::default_als();
    c.threads = threads;
    let mut missing = Vec::new();
    let num = |k: &str, missing: &mut Vec<String>| {
        let v = meta.get(k).and_then(Value::as_f64);
        if v.is_none() {
            missing.push(k.to_string());
        }
        v
    };
    let id_rows = match meta.get("id_rows").and_then(Value::as_str) {
        Some("dense") => IdRows::Dense,
        Some(_) => IdRows::Sorted,
        None => {
            missing.push("id_rows".into());
            IdRows::Sorted
        }
    };
    let min_rating = num("min_rating", &mut missing).unwrap_or(4.0) as f32;
    if let Some(v) = num("factors", &mut missing) {
        c.factors = v as usize;
    }
    if let Some(v) = num("iterations", &mut missing) {
        c.iterations = v as usize;
    }
    if let Some(v) = num("random_state", &mut missing) {
        c.seed = v as u64;
    }
    // rank, maxIter and seed mean what ours do; regParam and alpha do not.
    let spark = meta.get("spark").is_some_and(Value::is_object);
    if spark {
        missing.push(
            "regularization, alpha, confidence, reg_exponent, cg_steps (a Spark-trained version: its regParam and alpha are not ours)"
                .into(),
        );
    } else {
        if let Some(v) = num("regularization", &mut missing) {
            c.regularization = v as f32;
        }
        if let Some(v) = num("alpha", &mut missing) {
            c.alpha = v as f32;
        }
        if let Some(v) = num("cg_steps", &mut missing) {
            c.cg_steps = v as usize;
        }
        if let Some(v) = num("reg_exponent", &mut missing) {
            c.reg_exponent = v as f32;
        }
        match meta.get("confidence").and_then(Value::as_str) {
            Some("one_plus_alpha" | "one-plus-alpha") => c.confidence = Confidence::OnePlusAlpha,
            Some(_) => c.confidence = Confidence::Alpha,
            None => missing.push("confidence".into()),
        }
    }
    let auto_regularization = spark
        || meta
            .get("regularization_rule")
            .and_then(Value::as_str)
            .is_some_and(|r| r.starts_with("auto"));
    Hyper {
        als: c,
        id_rows,
        min_rating,
        auto_regularization,
        defaulted: missing,
    }
}

/// Snapshot rows plus events, one row per (user, movie): the latest rating wins
/// (rows without a time count as older than any timed one; among equal times the
/// event, read later, wins). Sorted by (user, movie).
pub fn merge_latest(snapshot: &[Rating], events: &[Rating]) -> Vec<Rating> {
    let mut all: Vec<(usize, Rating)> =
        snapshot.iter().chain(events).copied().enumerate().collect();
    all.sort_by_key(|(i, r)| (r.user, r.item, r.ts_ms, *i));
    let mut out: Vec<Rating> = Vec::with_capacity(all.len());
    for (_, r) in all {
        match out.last_mut() {
            Some(last) if last.user == r.user && last.item == r.item => *last = r,
            _ => out.push(r),
        }
    }
    out
}

/// A snapshot's bytes: MovieLens CSV `userId,movieId,rating,timestamp` (seconds;
/// milliseconds kept as a decimal fraction would not round-trip, so times are written
/// in ms when they are not whole seconds). A rating-less pair (a split file's) is
/// written at the positive threshold `min_rating`: the reader needs a rating, and a
/// rating-less row trains as a positive either way.
pub fn snapshot_bytes(rows: &[Rating], min_rating: f32) -> Vec<u8> {
    use std::fmt::Write;
    let mut s = String::with_capacity(rows.len() * 24 + 32);
    s.push_str("userId,movieId,rating,timestamp\n");
    for r in rows {
        let rating = r.rating.unwrap_or(min_rating);
        let ts = match r.ts_ms {
            Some(t) if t % 1000 == 0 => (t / 1000).to_string(),
            Some(t) => t.to_string(),
            None => String::new(),
        };
        let _ = writeln!(s, "{},{},{rating},{ts}", r.user, r.item);
    }
    s.into_bytes()
}

/// The time-based holdout: the latest `fraction` of the timed rows (by time; ties go
/// to the holdout together) and the rest (with every untimed row).
fn holdout(rows: &[Rating], fraction: f64) -> (Vec<Rating>, Vec<Rating>) {
    let mut times: Vec<i64> = rows.iter().filter_map(|r| r.ts_ms).collect();
    if times.is_empty() {
        return (rows.to_vec(), Vec::new());
    }
    times.sort_unstable();
    let idx = ((times.len() as f64) * (1.0 - fraction)).floor() as usize;
    let cut = times[idx.min(times.len() - 1)];
    rows.iter()
        .copied()
        .partition(|r| r.ts_ms.is_none_or(|t| t < cut))
}

fn write_file(path: &Path, bytes: &[u8]) -> Result<(), RetrainError> {
    std::fs::write(path, bytes).map_err(|source| RetrainError::Io {
        path: path.display().to_string(),
        source,
    })
}

/// A retrain up to the training itself ([`prepare`]): the new snapshot written, the
/// train and holdout files in the scratch folder. [`train_prepared`] trains it here;
/// the Spark path (`crate::emr`, feature `emr`) hands the same files to a Spark job.
#[derive(Debug)]
pub struct Prepared {
    /// When the retrain started.
    pub started: Instant,
    /// The version retrained from.
    pub base_version: String,
    /// Its snapshot.
    pub base_snapshot: String,
    /// Rate events read since the snapshot's last time.
    pub new_events: usize,
    /// The current version's hyper-parameters.
    pub als: AlsConfig,
    /// Its id-to-row mapping.
    pub id_rows: IdRows,
    /// Its positive threshold.
    pub min_rating: f32,
    /// Whether lambda is recomputed from this retrain's positives
    /// (`recs train`'s rule).
    pub auto_regularization: bool,
    /// Hyper-parameters that were not taken from its meta.json (defaults used).
    pub defaulted: Vec<String>,
    /// The new snapshot's rows (one per user-movie pair).
    pub rows: Vec<Rating>,
    /// Rows held out (the latest by time).
    pub holdout_rows: usize,
    /// The new snapshot's id (SHA-256 of its bytes).
    pub snapshot_id: String,
    /// Where it was written.
    pub snapshot_uri: String,
    /// The scratch folder holding the two files below.
    pub scratch: PathBuf,
    /// The training rows (MovieLens CSV).
    pub train_path: PathBuf,
    /// The holdout rows (MovieLens CSV).
    pub test_path: PathBuf,
    /// [`retune_due`] for the current version: whether this run re-tunes, and the
    /// runs since the last tuned version.
    pub retune: (bool, Option<u64>),
    /// The training rows, kept only when this run re-tunes (it searches on them).
    pub train_rows: Option<Vec<Rating>>,
}

/// The job up to training (see the module docs): the new snapshot written, the train
/// and holdout files in the scratch folder; nothing written to the registry.
pub async fn prepare(opts: &RetrainOptions) -> Result<Prepared, RetrainError> {
    let t0 = Instant::now();
    if !(0.0..1.0).contains(&opts.holdout_fraction) || opts.holdout_fraction == 0.0 {
        return Err(RetrainError::NoHoldout(format!(
            "holdout fraction must be in (0, 1), got {}",
            opts.holdout_fraction
        )));
    }
    let registry =
        Registry::open(&opts.registry).map_err(|e| RetrainError::Current(e.to_string()))?;
    let base = match &opts.base_version {
        Some(v) => v.clone(),
        None => {
            recs_core::active::served_version(&registry, None)
                .await
                .map_err(|e| RetrainError::Current(e.to_string()))?
                .1
        }
    };
    let current = registry
        .load(&base)
        .await
        .map_err(|e| RetrainError::Current(format!("loading {base}: {e}")))?;
    let base_snapshot = current
        .meta
        .raw
        .get("data_snapshot_uri")
        .and_then(Value::as_str)
        .filter(|s| !s.is_empty())
        .ok_or_else(|| RetrainError::NoSnapshot(base.clone()))?
        .to_string();
    tracing::info!(version = %base, snapshot = %base_snapshot, "retrain: reading the current snapshot");
    let (snap_store, snap_key) =
        split_uri(&base_snapshot).map_err(store_err("opening", &base_snapshot))?;
    let bytes = snap_store
        .get(&snap_key)
        .await
        .map_err(store_err("reading the snapshot", &base_snapshot))?;
    let snapshot = ratings::parse_ratings(&base_snapshot, &bytes, Format::Auto, true)?;
    let since = snapshot
        .rows
        .iter()
        .filter_map(|r| r.ts_ms)
        .max()
        .unwrap_or(0);

    // The events since the snapshot's last time, through the drift job's reader.
    let events_store = Store::open(&opts.events).map_err(store_err("opening", &opts.events))?;
    let secs = ((opts.until_ms - since).max(1000) as u64).div_ceil(1000);
    let window = recs_drift::Window::ending(opts.until_ms, secs);
    let (events, stats) = recs_drift::read_window(&events_store, window)
        .await
        .map_err(store_err("reading events under", &opts.events))?;
    let rated: Vec<Rating> = events.into_iter().filter(|e| e.rating.is_some()).collect();
    tracing::info!(
        events = rated.len(),
        files = stats.files,
        malformed = stats.malformed,
        "retrain: read the rate events since the snapshot"
    );

    let Hyper {
        als,
        id_rows,
        min_rating,
        auto_regularization,
        defaulted,
    } = hyper_parameters(&current.model_meta, opts.threads);
    let rows = merge_latest(&snapshot.rows, &rated);
    let positives = rows.iter().filter(|r| r.is_positive(min_rating)).count();
    if positives == 0 {
        return Err(RetrainError::Empty(format!(
            "{} snapshot rows and {} new rate events give {} rows, none a positive (rating >= {min_rating})",
            snapshot.rows.len(),
            rated.len(),
            rows.len()
        )));
    }
    let (train_rows, test_rows) = holdout(&rows, opts.holdout_fraction);
    if test_rows
        .iter()
        .filter(|r| r.is_positive(min_rating))
        .count()
        == 0
        || !train_rows.iter().any(|r| r.is_positive(min_rating))
    {
        return Err(RetrainError::NoHoldout(format!(
            "{} rows, {} held out by time, no positive on one side",
            rows.len(),
            test_rows.len()
        )));
    }

    // The new snapshot, content-addressed.
    let bytes = snapshot_bytes(&rows, min_rating);
    let snapshot_id = recs_core::hash::hex(&Sha256::digest(&bytes));
    let (dest, dest_loc) = match &opts.snapshots {
        Some(loc) => (
            Store::open(loc).map_err(store_err("opening", loc))?,
            loc.clone(),
        ),
        None => {
            let dir = base_snapshot
                .rsplit_once('/')
                .map_or(".".to_string(), |(d, _)| d.to_string());
            (snap_store.clone(), dir)
        }
    };
    let key = format!("{snapshot_id}.csv");
    dest.put(&key, bytes)
        .await
        .map_err(store_err("writing the snapshot to", &dest_loc))?;
    let snapshot_uri = format!("{}/{key}", dest_loc.trim_end_matches('/'));
    tracing::info!(snapshot = %snapshot_uri, rows = rows.len(), "retrain: wrote the new snapshot");

    let scratch = match &opts.work_dir {
        Some(d) => d.clone(),
        // Per process: two retrains of the same data at once must not share (and
        // remove) each other's scratch files.
        None => std::env::temp_dir().join(format!(
            "recs-retrain-{}-{}",
            &snapshot_id[..16],
            std::process::id()
        )),
    };
    std::fs::create_dir_all(&scratch).map_err(|source| RetrainError::Io {
        path: scratch.display().to_string(),
        source,
    })?;
    let (train_path, test_path) = (scratch.join("train.csv"), scratch.join("holdout.csv"));
    write_file(&train_path, &snapshot_bytes(&train_rows, min_rating))?;
    write_file(&test_path, &snapshot_bytes(&test_rows, min_rating))?;
    let retune = retune_due(opts, &current.model_meta);
    Ok(Prepared {
        retune,
        train_rows: retune.0.then_some(train_rows),
        started: t0,
        base_version: base,
        base_snapshot,
        new_events: rated.len(),
        als,
        id_rows,
        min_rating,
        auto_regularization,
        defaulted,
        rows,
        holdout_rows: test_rows.len(),
        snapshot_id,
        snapshot_uri,
        scratch,
        train_path,
        test_path,
    })
}

/// Runs the whole job up to and including publishing (see the module docs). Returns
/// a refused report when the gate says no; the caller then exits non-zero and starts
/// no rollout.
pub async fn retrain(opts: &RetrainOptions) -> Result<RetrainReport, RetrainError> {
    let prepared = prepare(opts).await?;
    train_prepared(opts, prepared).await
}

/// Trains a prepared retrain here (`recs train`'s ALS, the gate, publish).
pub async fn train_prepared(
    opts: &RetrainOptions,
    prepared: Prepared,
) -> Result<RetrainReport, RetrainError> {
    let Prepared {
        started: t0,
        base_version: base,
        base_snapshot,
        new_events,
        als,
        id_rows,
        min_rating,
        auto_regularization,
        defaulted,
        rows,
        holdout_rows,
        snapshot_id,
        snapshot_uri,
        scratch,
        train_path,
        test_path,
        retune: (due, since),
        train_rows,
    } = prepared;
    let mut t = TrainOptions::new(&train_path, &opts.registry);
    t.version = opts.version.clone();
    t.als = als;
    t.auto_regularization = auto_regularization;
    t.id_rows = id_rows;
    t.min_rating = min_rating;
    t.test = Some(test_path);
    t.k = opts.k;
    t.gate = true;
    t.gate_margin = opts.gate_margin;
    t.progress = opts.progress;
    t.snapshot = Some(crate::SnapshotRef {
        id: snapshot_id.clone(),
        uri: snapshot_uri.clone(),
    });
    t.incumbent = Some(base.clone());
    t.trained_by = "recs retrain";
    let mut tuned = None;
    if let (true, Some(train_rows)) = (due, &train_rows) {
        // Tune on TRAIN alone (a seeded 10 % of it validates), never on the holdout
        // the gate compares on.
        let pairs: Vec<crate::ratings::Rating> = train_rows
            .iter()
            .filter(|r| r.is_positive(min_rating))
            .copied()
            .collect();
        let (rest, held) = crate::tune::holdout_validation(&pairs, t.als.seed);
        let ds = crate::build_dataset(&rest, IdRows::Sorted)?;
        let valid = crate::eval::TestSet::from_pairs(held.iter().map(|p| (p.user, p.item)));
        let mut to = crate::tune::TuneOptions::new(t.als.seed);
        to.budget = std::time::Duration::from_secs(opts.tune_budget_seconds.max(1));
        to.trials = opts.tune_trials.max(1);
        to.base = t.als.clone();
        let report = crate::tune::tune(&ds, &valid, &to, &mut |_| {})
            .map_err(|e| crate::TrainError::Invalid(format!("re-tuning: {e}")))?;
        t.als = report.best().params.apply(&t.als);
        // The search chose lambda; the rule must not overwrite it.
        t.auto_regularization = false;
        let mut j = report.to_json();
        j["runs_since_tune"] = serde_json::json!(0);
        tuned = Some(j.clone());
        t.tuning = Some(j);
    } else {
        t.tuning = Some(serde_json::json!({
            "runs_since_tune": since.map(|n| n + 1),
            "hyper_parameters_from": base,
        }));
    }
    let report = train(&t).await?;
    let _ = std::fs::remove_dir_all(&scratch);

    let users = {
        let mut u: Vec<i64> = rows.iter().map(|r| r.user).collect();
        u.sort_unstable();
        u.dedup();
        u.len()
    };
    let items = {
        let mut i: Vec<i64> = rows.iter().map(|r| r.item).collect();
        i.sort_unstable();
        i.dedup();
        i.len()
    };
    let ndcg_current =
        report.summary["incumbent"]["metrics"]["als"][format!("NDCG@{}", opts.k)].as_f64();
    Ok(RetrainReport {
        base_version: base,
        base_snapshot,
        new_events,
        snapshot_id,
        snapshot_uri,
        rows: rows.len(),
        users,
        items,
        holdout_rows,
        ndcg_new: report.evaluation.as_ref().map(|e| e.model.ndcg),
        ndcg_current,
        ndcg_popularity: report.evaluation.as_ref().map(|e| e.popularity.ndcg),
        defaulted,
        tuned,
        seconds: t0.elapsed().as_secs_f64(),
        train: report,
    })
}

/// What [`retrain_then_canary`] did after the retrain itself.
#[derive(Debug)]
pub enum Canary {
    /// The gate refused: nothing published, the rollout untouched.
    Refused,
    /// The new version was published and recorded as the canary.
    Started {
        /// The published version, now the canary.
        version: String,
        /// active.json as written (its `rollout` names the version and the share).
        state: ActiveState,
    },
    /// The new version was published, but recording it as the canary failed: it is
    /// in the registry and served to no one.
    Failed {
        /// The published version.
        version: String,
        /// Why the rollout change was refused.
        error: SwitchError,
    },
}

/// A retrain ([`retrain`]) and the canary it started.
#[derive(Debug)]
pub struct RetrainCanary {
    /// The retrain (also when the gate refused).
    pub report: RetrainReport,
    /// The canary's share of users, 0..=100.
    pub canary_percentage: f64,
    /// What happened to the rollout.
    pub canary: Canary,
}

/// The retrain loop of `recs retrain` and the `retrain` Lambda function, written
/// once: checks `canary_percentage` ([`recs_control::check_canary_percentage`])
/// before anything is read, runs [`retrain`], and when the gate passed starts the
/// published version as a canary for `canary_percentage` % of users through
/// [`recs_control::update_rollout`] (verified, then a conditional write of
/// active.json; the retrained-from version stands in for the active one when there
/// is no active.json yet).
///
/// `Err` when the retrain stopped before publishing; otherwise the report and what
/// happened to the rollout ([`Canary`]): a refused gate or a failed canary are the
/// caller's to report as failures.
pub async fn retrain_then_canary(
    opts: &RetrainOptions,
    canary_percentage: f64,
) -> Result<RetrainCanary, RetrainError> {
    recs_control::check_canary_percentage(canary_percentage)
        .map_err(RetrainError::CanaryPercentage)?;
    let report = retrain(opts).await?;
    let published = report
        .train
        .published
        .clone()
        .filter(|_| !report.train.refused());
    let canary = start_canary(
        &opts.registry,
        &report.base_version,
        published,
        canary_percentage,
    )
    .await;
    Ok(RetrainCanary {
        report,
        canary_percentage,
        canary,
    })
}

/// Starts `published` (when the gate passed) as a canary for `canary_percentage` % of
/// users through [`recs_control::update_rollout`]; `base_version` stands in for the
/// active one when there is no active.json yet. Shared by both training engines.
pub async fn start_canary(
    registry: &str,
    base_version: &str,
    published: Option<String>,
    canary_percentage: f64,
) -> Canary {
    match published {
        None => Canary::Refused,
        Some(version) => {
            let patch = RolloutPatch::canary(version.clone(), canary_percentage);
            let started = match Registry::open(registry) {
                Ok(registry) => {
                    recs_control::update_rollout(&registry, &patch, Some(base_version), &[])
                        .await
                        .map(|(state, _)| state)
                }
                Err(e) => Err(SwitchError::Unavailable(e.to_string())),
            };
            match started {
                Ok(state) => Canary::Started { version, state },
                Err(error) => Canary::Failed { version, error },
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_bad_canary_share_stops_before_anything_is_read() {
        // Neither the registry nor the events exist: the share is refused first.
        for bad in [-1.0, 100.5, f64::NAN] {
            let opts = RetrainOptions::new("/nonexistent/registry", "/nonexistent/events");
            let e = retrain_then_canary(&opts, bad).await.unwrap_err();
            assert!(
                matches!(e, RetrainError::CanaryPercentage(_)),
                "{bad}: {e:?}"
            );
            assert!(e.to_string().contains("0..=100"), "{e}");
        }
    }

    fn r(user: i64, item: i64, rating: Option<f32>, ts: Option<i64>) -> Rating {
        Rating {
            user,
            item,
            rating,
            ts_ms: ts,
        }
    }

    #[test]
    fn a_retrain_takes_the_versions_settings_and_its_lambda_rule() {
        // recs train with the rule: lambda is recomputed, the rest kept.
        let ours = serde_json::json!({
            "factors": 96, "iterations": 20, "regularization": 45.8, "alpha": 3.2,
            "confidence": "one_plus_alpha", "cg_steps": 3, "reg_exponent": 1.0,
            "random_state": 7, "id_rows": "sorted", "min_rating": 3.0,
            "regularization_rule": "auto: 1.6 * positives^(1/4)",
        });
        let h = hyper_parameters(&ours, 2);
        assert!(h.auto_regularization);
        assert!(h.defaulted.is_empty(), "{:?}", h.defaulted);
        assert_eq!((h.als.factors, h.als.iterations, h.als.seed), (96, 20, 7));
        assert_eq!(
            (h.als.alpha, h.als.reg_exponent, h.min_rating),
            (3.2, 1.0, 3.0)
        );
        assert_eq!(h.als.confidence, Confidence::OnePlusAlpha);

        // A fixed lambda (the Python team's meta.json) stays fixed.
        let fixed = serde_json::json!({"factors": 64, "regularization": 0.01, "alpha": 1.0});
        let h = hyper_parameters(&fixed, 2);
        assert!(!h.auto_regularization);
        assert_eq!(
            (h.als.factors, h.als.regularization, h.als.alpha),
            (64, 0.01, 1.0)
        );
        assert!(h.defaulted.contains(&"confidence".to_string()));

        // A Spark import's regParam and alpha are Spark's: recs train's defaults.
        let spark = serde_json::json!({
            "factors": 10, "regularization": 0.1, "alpha": 1.0, "iterations": 15,
            "min_rating": 3.5, "spark": {"regParam": 0.1, "alpha": 1.0, "rank": 10},
        });
        let h = hyper_parameters(&spark, 2);
        assert!(h.auto_regularization);
        assert_eq!(
            (h.als.factors, h.als.iterations, h.als.alpha),
            (10, 15, 2.0)
        );
        assert_eq!(h.als.reg_exponent, 0.75);
        assert_eq!(h.als.confidence, Confidence::OnePlusAlpha);
        assert_eq!(h.min_rating, 3.5);
        assert!(
            h.defaulted.iter().any(|d| d.contains("Spark")),
            "{:?}",
            h.defaulted
        );
    }

    #[test]
    fn the_latest_rating_of_a_pair_wins() {
        let snap = [r(1, 1, Some(5.0), Some(1000)), r(1, 2, Some(2.0), None)];
        let events = [
            r(1, 1, Some(1.0), Some(3000)),
            r(1, 1, Some(3.0), Some(2000)),
            r(1, 2, Some(4.0), Some(500)),
            r(2, 9, Some(4.0), Some(10)),
        ];
        assert_eq!(
            merge_latest(&snap, &events),
            vec![
                r(1, 1, Some(1.0), Some(3000)),
                r(1, 2, Some(4.0), Some(500)),
                r(2, 9, Some(4.0), Some(10)),
            ]
        );
    }

    #[test]
    fn snapshots_round_trip_through_the_rating_reader() {
        let rows = vec![
            r(1, 2, Some(4.5), Some(1_000_000)),
            r(1, 3, Some(4.0), Some(1_795_824_000_123)),
            r(2, 3, Some(1.0), Some(5_000)),
        ];
        let bytes = snapshot_bytes(&rows, 4.0);
        let back = ratings::parse_ratings("s.csv", &bytes, Format::Auto, false).unwrap();
        assert_eq!(back.rows, rows);
        // Content-addressed: same rows, same bytes.
        assert_eq!(bytes, snapshot_bytes(&merge_latest(&rows, &[]), 4.0));
        // A split file's rating-less pair is written at the positive threshold.
        let pair = snapshot_bytes(&[r(7, 8, None, Some(1_000))], 4.0);
        assert_eq!(
            String::from_utf8(pair).unwrap().lines().nth(1),
            Some("7,8,4,1")
        );
    }

    #[test]
    fn the_holdout_is_the_latest_rows() {
        let rows: Vec<Rating> = (0..10)
            .map(|i| r(1, i, Some(4.0), Some(i * 1000)))
            .collect();
        let (train, test) = holdout(&rows, 0.2);
        assert_eq!(test.iter().map(|r| r.item).collect::<Vec<_>>(), vec![8, 9]);
        assert_eq!(train.len(), 8);
    }

    #[test]
    fn uris_split_into_folder_and_file() {
        let (s, k) = split_uri("/tmp/x/snap.csv").unwrap();
        assert_eq!(
            (s.location(), k.as_str()),
            ("/tmp/x".to_string(), "snap.csv")
        );
    }
}
