//! Training and offline evaluation (docs/TRAINING.md):
//!
//! - [`ratings`]: rating files in the MovieLens formats, malformed rows, duplicates.
//! - [`split`]: the peer's holdout and leave-last-out splits, byte for byte.
//! - [`als`]: implicit-feedback ALS with implicit 0.7.3's conjugate-gradient solver.
//! - [`eval`]: P, R, NDCG, MAP, HR at k, R@20, coverage and popularity bias, ALS
//!   and popularity side by side.
//! - [`tune`]: hyper-parameter search (successive halving, then local refinement).
//! - `gate` ([`GateReport`]): what must hold before `recs train` publishes.
//! - The `recs` CLI (shared/cli) runs `recs split`, `recs train` and `recs eval`.
//!
//! [`train`] runs the whole pipeline: read, build the matrix, fit, evaluate, gate,
//! publish through [`Registry::publish`].

#![warn(missing_docs)]
#![deny(unsafe_op_in_unsafe_fn)]

pub mod als;
#[cfg(feature = "emr")]
pub mod emr;
pub mod eval;
mod gate;
pub mod gen_data;
mod kernels;
pub mod ratings;
pub mod retrain;
mod rng;
#[cfg(feature = "spark")]
pub mod spark;
pub mod split;
pub mod tune;

use std::collections::HashMap;
use std::path::PathBuf;
use std::time::Instant;

use serde_json::{json, Value};

use als::{AlsConfig, AlsFactors, Csr};
use eval::{Evaluation, TestSet};
pub use gate::GateReport;
use gate::Incumbent;
use ratings::{Format, Rating};
use recs_core::{
    validate_version, AlsModel, Artifacts, CsrPattern, Factors, PopularityArtifacts, Registry,
    RegistryError,
};

/// The name `recs train` gives a popularity version unless told otherwise.
pub const DEFAULT_POPULARITY_VERSION: &str = "v_popularity";

/// How raw ids become matrix rows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[cfg_attr(feature = "cli", derive(clap::ValueEnum))]
#[serde(rename_all = "lowercase")]
pub enum IdRows {
    /// The distinct ids that have a positive, ascending.
    Sorted,
    /// Row = id - 1 for ids 1..=max (as the peer script and implicit's MovieLens
    /// examples index): rows without positives take part in the random
    /// initialisation and the first Y'Y, as in implicit, and are dropped from the
    /// published model. With the same seed this starts from exactly implicit's
    /// factors for `csr_matrix(..., shape=(max user id, max item id))`.
    Dense,
}

/// The training matrix and the raw id of every row and column.
#[derive(Debug, Clone)]
pub struct Dataset {
    /// Raw user id of each matrix row.
    users: Vec<i64>,
    /// Raw movie id of each matrix column.
    items: Vec<i64>,
    /// users x items, 1.0 per positive.
    pub matrix: Csr,
}

// Our defaults, chosen on the validation splits of five data sets (ml-100k, ml-1m
// and two synthetic shapes), never on a test file: docs/TRAINING.md has the table.
/// Default [`AlsConfig::factors`].
pub const DEFAULT_FACTORS: usize = 128;
/// [`AlsConfig::regularization`] when the data size is not known (retraining a
/// version whose meta.json lacks it): [`auto_regularization`] of ml-1m's size.
pub const DEFAULT_REGULARIZATION: f32 = 45.8;
/// The default lambda is this times the number of TRAIN positives to the 1/4
/// ([`auto_regularization`]).
pub const DEFAULT_REG_SCALE: f32 = 1.6;
/// Default [`AlsConfig::alpha`].
pub const DEFAULT_ALPHA: f32 = 2.0;
/// Default [`AlsConfig::confidence`]: C = 1 + alpha r.
pub const DEFAULT_CONFIDENCE: als::Confidence = als::Confidence::OnePlusAlpha;
/// Default [`AlsConfig::iterations`].
pub const DEFAULT_ITERATIONS: usize = 32;
/// Default [`AlsConfig::cg_steps`].
pub const DEFAULT_CG_STEPS: usize = 3;
/// Default [`AlsConfig::reg_exponent`] (frequency-scaled lambda).
pub const DEFAULT_REG_EXPONENT: f32 = 0.75;

/// `recs train`'s default lambda for `positives` TRAIN positives:
/// [`DEFAULT_REG_SCALE`] x positives^(1/4), to three significant digits (the best
/// lambda of the default configuration grows with the data: about 20 on ml-100k,
/// 45 on ml-1m; docs/TRAINING.md).
pub fn auto_regularization(positives: usize) -> f32 {
    tune::round3(DEFAULT_REG_SCALE * (positives.max(1) as f32).powf(0.25))
}

/// [`AlsConfig`] with `recs train`'s defaults.
pub(crate) fn default_als() -> als::AlsConfig {
    als::AlsConfig {
        factors: DEFAULT_FACTORS,
        regularization: DEFAULT_REGULARIZATION,
        alpha: DEFAULT_ALPHA,
        confidence: DEFAULT_CONFIDENCE,
        iterations: DEFAULT_ITERATIONS,
        cg_steps: DEFAULT_CG_STEPS,
        reg_exponent: DEFAULT_REG_EXPONENT,
        seed: 42,
        threads: 0,
        calculate_loss: false,
    }
}

/// Why training could not run or publish.
#[derive(Debug, thiserror::Error)]
pub enum TrainError {
    /// The training or test file could not be read or parsed.
    #[error(transparent)]
    Ratings(#[from] ratings::RatingsError),
    /// Opening the registry, a version name, or picking the next version failed.
    #[error(transparent)]
    Registry(#[from] RegistryError),
    /// The fitted factors do not make a servable model.
    #[error(transparent)]
    Model(#[from] recs_core::ModelError),
    /// Unusable input or settings: ids for `IdRows::Dense`, an existing version, ALS settings.
    #[error("invalid training input: {0}")]
    Invalid(String),
    /// The local registry folder could not be created.
    #[error("creating {path}: {source}")]
    Io {
        /// The folder.
        path: String,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// Publishing the version failed.
    #[error("publishing {version} to {registry}: {source}")]
    Publish {
        /// The version being published.
        version: String,
        /// The registry location.
        registry: String,
        /// The registry's error.
        #[source]
        source: Box<RegistryError>,
    },
    /// The version was published, but its drift baseline could not be written.
    #[error("writing the drift baseline of {version}: {source}")]
    Baseline {
        /// The version just published.
        version: String,
        /// The baseline error.
        #[source]
        source: Box<recs_drift::BaselineError>,
    },
}

type Result<T, E = TrainError> = std::result::Result<T, E>;

/// Largest id `IdRows::Dense` accepts (the matrix has one row per id).
const DENSE_MAX_ID: i64 = 50_000_000;

/// Builds the users x items matrix of `positives` (1.0 each).
pub fn build_dataset(positives: &[Rating], id_rows: IdRows) -> Result<Dataset> {
    let (users, items): (Vec<i64>, Vec<i64>) = match id_rows {
        IdRows::Sorted => {
            let mut u: Vec<i64> = positives.iter().map(|r| r.user).collect();
            let mut i: Vec<i64> = positives.iter().map(|r| r.item).collect();
            u.sort_unstable();
            u.dedup();
            i.sort_unstable();
            i.dedup();
            (u, i)
        }
        IdRows::Dense => {
            let max_u = positives.iter().map(|r| r.user).max().unwrap_or(0);
            let max_i = positives.iter().map(|r| r.item).max().unwrap_or(0);
            if let Some(r) = positives.iter().find(|r| r.user < 1 || r.item < 1) {
                return Err(TrainError::Invalid(format!(
                    "--id-rows dense needs ids from 1, found user {} item {}",
                    r.user, r.item
                )));
            }
            if max_u > DENSE_MAX_ID || max_i > DENSE_MAX_ID {
                return Err(TrainError::Invalid(format!("--id-rows dense: ids up to {max_u}/{max_i} are too sparse for one row per id; use --id-rows sorted")));
            }
            ((1..=max_u).collect(), (1..=max_i).collect())
        }
    };
    let index = |ids: &[i64]| -> HashMap<i64, u32> {
        ids.iter()
            .enumerate()
            .map(|(row, &id)| (id, row as u32))
            .collect()
    };
    let (urow, irow) = (index(&users), index(&items));
    let triplets: Vec<(u32, u32, f32)> = positives
        .iter()
        .map(|r| (urow[&r.user], irow[&r.item], 1.0))
        .collect();
    let matrix = Csr::from_triplets(users.len(), items.len(), &triplets);
    Ok(Dataset {
        users,
        items,
        matrix,
    })
}

/// Turns fitted factors into registry artifacts: rows and columns without any
/// positive are dropped; `seen` is the training matrix. Metadata is left empty.
fn to_artifacts(ds: &Dataset, fit: &AlsFactors) -> Artifacts {
    let f = fit.factors;
    let keep_users: Vec<usize> = (0..ds.matrix.rows)
        .filter(|&u| ds.matrix.row_len(u) > 0)
        .collect();
    let mut item_count = vec![0usize; ds.matrix.cols];
    for &c in &ds.matrix.indices {
        item_count[c as usize] += 1;
    }
    let keep_items: Vec<usize> = (0..ds.matrix.cols).filter(|&i| item_count[i] > 0).collect();
    let mut new_col = vec![u32::MAX; ds.matrix.cols];
    for (new, &old) in keep_items.iter().enumerate() {
        new_col[old] = new as u32;
    }
    let take = |src: &[f32], rows: &[usize]| -> Vec<f32> {
        rows.iter()
            .flat_map(|&r| src[r * f..(r + 1) * f].iter().copied())
            .collect()
    };
    let seen_rows: Vec<Vec<u32>> = keep_users
        .iter()
        .map(|&u| {
            ds.matrix.indices[ds.matrix.indptr[u]..ds.matrix.indptr[u + 1]]
                .iter()
                .map(|&c| new_col[c as usize])
                .collect()
        })
        .collect();
    Artifacts {
        user_factors: Factors {
            shape: vec![keep_users.len(), f],
            data: take(&fit.user_factors, &keep_users),
        },
        item_factors: Factors {
            shape: vec![keep_items.len(), f],
            data: take(&fit.item_factors, &keep_items),
        },
        users: keep_users.iter().map(|&u| ds.users[u]).collect(),
        items: keep_items.iter().map(|&i| ds.items[i]).collect(),
        seen: CsrPattern::from_rows(keep_items.len(), seen_rows),
        model_meta: Value::Null,
        version_fields: serde_json::Map::new(),
        ann: recs_core::ann::AnnBuild::Auto,
    }
}

/// A servable model from artifacts (for evaluation before publishing).
fn model_of(a: &Artifacts) -> Result<AlsModel> {
    let copy = |f: &Factors| Factors {
        shape: f.shape.clone(),
        data: f.data.clone(),
    };
    Ok(AlsModel::new(
        copy(&a.user_factors),
        copy(&a.item_factors),
        a.users.clone(),
        a.items.clone(),
        a.seen.clone(),
    )?)
}

/// Process CPU time (all threads), seconds.
fn process_cpu_seconds() -> f64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes one timespec through a valid pointer.
    let rc = unsafe { libc::clock_gettime(libc::CLOCK_PROCESS_CPUTIME_ID, &mut ts) };
    if rc != 0 {
        return f64::NAN;
    }
    ts.tv_sec as f64 + ts.tv_nsec as f64 * 1e-9
}

/// `$GIT_SHA`, else `git rev-parse HEAD`, else "unknown".
fn git_sha() -> String {
    if let Ok(sha) = std::env::var("GIT_SHA") {
        if !sha.trim().is_empty() {
            return sha.trim().to_string();
        }
    }
    std::process::Command::new("git")
        .args(["rev-parse", "HEAD"])
        .stderr(std::process::Stdio::null())
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| "unknown".into())
}

/// Everything `recs train` needs.
#[derive(Debug, Clone)]
pub struct TrainOptions {
    /// The training rating file.
    pub ratings: PathBuf,
    /// Its format (`Auto`: detected from the first line).
    pub format: Format,
    /// Drop (and count) malformed rows instead of failing on the first one.
    pub skip_bad_rows: bool,
    /// Ratings at or above this are positives; rows without a rating always are.
    pub min_rating: f32,
    /// Where to publish: a folder or `s3://bucket/prefix`.
    pub registry: String,
    /// The version to publish as (default: `vX.Y` after the highest existing one).
    pub version: Option<String>,
    /// ALS hyper-parameters and run settings.
    pub als: AlsConfig,
    /// How raw ids become matrix rows.
    pub id_rows: IdRows,
    /// Test file for offline metrics and the quality checks (none: structure only).
    pub test: Option<PathBuf>,
    /// Cut-off of the offline metrics.
    pub k: usize,
    /// Refuse to publish when the gate fails.
    pub gate: bool,
    /// How far the candidate's NDCG@k may fall below the latest version's.
    pub gate_margin: f64,
    /// Train, evaluate and gate, but publish nothing.
    pub dry_run: bool,
    /// Draw a progress bar on stderr (when it is a terminal).
    pub progress: bool,
    /// Also publish the training data's popularity ranking under this name, next to
    /// the ALS version (skipped with a note when that version already exists).
    pub popularity_version: Option<String>,
    /// The snapshot this training data is part of (retrain: the whole new snapshot,
    /// of which `ratings` is the part before the holdout). `None`: the ratings file.
    pub snapshot: Option<SnapshotRef>,
    /// Gate against this version instead of latest.txt's (retrain: the served one).
    pub incumbent: Option<String>,
    /// meta.json's `trained_by`.
    pub trained_by: &'static str,
    /// Set `als.regularization` to [`auto_regularization`] of the TRAIN positives
    /// (`recs train` without `--regularization`).
    pub auto_regularization: bool,
    /// Recorded as meta.json's `metrics.tuning` (`recs tune`: the search summary).
    pub tuning: Option<Value>,
    /// Recorded as meta.json's `metrics.evaluation_protocol` with the offline metrics.
    pub protocol: Option<String>,
}

/// Copies the training file into the registry as `snapshot` names it (content
/// addressed: a copy already there is the same bytes and is left alone).
async fn keep_snapshot(
    registry: &Registry,
    ratings: &std::path::Path,
    snapshot: &SnapshotRef,
) -> Result<()> {
    let key = format!(
        "{}/{}",
        recs_core::SNAPSHOTS_DIR,
        snapshot.uri.rsplit('/').next().unwrap_or_default()
    );
    if registry.store().get(&key).await.is_ok() {
        return Ok(());
    }
    let bytes = std::fs::read(ratings).map_err(|e| {
        TrainError::Invalid(format!("reading {} to keep it: {e}", ratings.display()))
    })?;
    registry.store().put(&key, bytes).await.map_err(|e| {
        TrainError::Invalid(format!(
            "keeping the training data as {}: {e}",
            snapshot.uri
        ))
    })?;
    Ok(())
}

/// A training snapshot: its id (`data_snapshot_id`) and where it is stored
/// (`data_snapshot_uri`, read back by `recs retrain`).
#[derive(Debug, Clone)]
pub struct SnapshotRef {
    /// SHA-256 of the snapshot's bytes.
    pub id: String,
    /// A file path or `s3://bucket/key`.
    pub uri: String,
}

impl Dataset {
    /// Raw user id of each matrix row.
    pub fn users(&self) -> &[i64] {
        &self.users
    }
    /// Raw movie id of each matrix column.
    pub fn items(&self) -> &[i64] {
        &self.items
    }
}

impl TrainOptions {
    /// Options with `recs train`'s defaults.
    pub fn new(ratings: impl Into<PathBuf>, registry: impl Into<String>) -> Self {
        TrainOptions {
            ratings: ratings.into(),
            format: Format::Auto,
            skip_bad_rows: false,
            min_rating: 4.0,
            registry: registry.into(),
            version: None,
            als: default_als(),
            id_rows: IdRows::Sorted,
            test: None,
            k: 10,
            gate: true,
            gate_margin: 0.01,
            dry_run: false,
            progress: false,
            popularity_version: None,
            snapshot: None,
            incumbent: None,
            trained_by: "recs train",
            auto_regularization: false,
            tuning: None,
            protocol: None,
        }
    }
}

/// What `recs train` did.
#[derive(Debug)]
pub struct TrainReport {
    /// The published version; `None` for a dry run or a refusal.
    pub published: Option<String>,
    /// The popularity version published next to it, if any.
    pub popularity: Option<String>,
    /// What happened to the popularity version when it was not published.
    pub notes: Vec<String>,
    /// The gate's checks (they run even when the gate is off).
    pub gate: GateReport,
    /// Whether the gate was applied (false with `--no-gate`).
    gated: bool,
    /// Offline metrics on the test file (`None` without one, or when a structural check failed).
    pub evaluation: Option<Evaluation>,
    /// The JSON `recs train` prints.
    pub summary: Value,
}

impl TrainReport {
    /// True when the gate was on and said no.
    pub fn refused(&self) -> bool {
        self.gated && !self.gate.passed()
    }
}

fn progress_bar(iterations: usize, enabled: bool) -> indicatif::ProgressBar {
    if !enabled {
        return indicatif::ProgressBar::hidden();
    }
    let bar = indicatif::ProgressBar::with_draw_target(
        Some(iterations as u64),
        indicatif::ProgressDrawTarget::stderr(),
    );
    bar.set_style(
        indicatif::ProgressStyle::with_template(
            "ALS {bar:30.cyan/blue} {pos}/{len} iterations  {elapsed_precise}  {msg}",
        )
        .expect("valid template")
        .progress_chars("=> "),
    );
    bar
}

/// Reads, trains, evaluates, gates and (unless refused or a dry run) publishes.
pub async fn train(opts: &TrainOptions) -> Result<TrainReport> {
    if let Some(v) = &opts.version {
        validate_version(v)?;
    }
    let registry = Registry::open(&opts.registry)?;
    if let Some(v) = &opts.version {
        if !opts.dry_run && registry.versions().await.unwrap_or_default().contains(v) {
            return Err(TrainError::Invalid(format!(
                "version {v} already exists in {}; pick another --version",
                opts.registry
            )));
        }
    }
    let data = ratings::read_ratings(&opts.ratings, opts.format, opts.skip_bad_rows)?;
    let positives = data.positives(opts.min_rating);
    let test = match &opts.test {
        Some(path) => {
            let t = ratings::read_ratings(path, Format::Auto, opts.skip_bad_rows)?;
            let set = TestSet::from_ratings(&t, opts.min_rating);
            Some((t, set))
        }
        None => None,
    };
    let ds = build_dataset(&positives, opts.id_rows)?;
    let mut opts = std::borrow::Cow::Borrowed(opts);
    if opts.auto_regularization {
        opts.to_mut().als.regularization = auto_regularization(positives.len());
    }
    let opts: &TrainOptions = &opts;

    let bar = progress_bar(opts.als.iterations, opts.progress);
    let (wall0, cpu0) = (Instant::now(), process_cpu_seconds());
    let fit = if positives.is_empty() {
        AlsFactors {
            factors: opts.als.factors,
            user_factors: vec![],
            item_factors: vec![],
            loss: None,
        }
    } else {
        als::fit(&ds.matrix, &opts.als, &mut |s| {
            bar.set_position(s.iteration as u64);
            bar.set_message(match s.loss {
                Some(l) => format!("loss {l:.6}"),
                None => format!("{:.3} s/iteration", s.seconds),
            });
        })
        .map_err(TrainError::Invalid)?
    };
    let (fit_seconds, fit_cpu) = (wall0.elapsed().as_secs_f64(), process_cpu_seconds() - cpu0);
    bar.finish_and_clear();

    let mut artifacts = to_artifacts(&ds, &fit);
    let (n_users, n_items) = (artifacts.users.len(), artifacts.items.len());
    let mut gate = gate::check_structure(
        n_users,
        n_items,
        fit.factors,
        &artifacts.user_factors.data,
        &artifacts.item_factors.data,
    );
    let mut evaluation = None;
    let mut incumbent_json = Value::Null;
    if let (true, Some((_, set))) = (gate.passed(), &test) {
        let model = model_of(&artifacts)?;
        let (e, inc) = evaluate_and_gate(
            &registry,
            &model,
            set,
            opts.k,
            opts.gate_margin,
            opts.incumbent.as_deref(),
            &mut gate,
        )
        .await;
        incumbent_json = inc;
        evaluation = Some(e);
    } else if test.is_none() {
        gate.notes.push(
            "no --test file: only the structural checks ran (pass --test to compare with popularity and the latest version)"
                .into(),
        );
    }

    let hyper = json!({
        "factors": opts.als.factors,
        "iterations": opts.als.iterations,
        "regularization": opts.als.regularization,
        "alpha": opts.als.alpha,
        "confidence": opts.als.confidence,
        "cg_steps": opts.als.cg_steps,
        "reg_exponent": opts.als.reg_exponent,
        "regularization_rule": if opts.auto_regularization {
            json!(format!("auto: {DEFAULT_REG_SCALE} * positives^(1/4)"))
        } else {
            Value::Null
        },
        "random_state": opts.als.seed,
        "id_rows": opts.id_rows,
        "min_rating": opts.min_rating,
    });
    let mut model_meta = json!({
        "type": "ALS",
        "trainer": format!("recs {} train (conjugate gradient, implicit 0.7.3 semantics)", env!("CARGO_PKG_VERSION")),
        "users": n_users,
        "items": n_items,
        "interactions": artifacts.seen.nnz(),
        "threads": opts.als.threads,
        "simd": kernels::Simd::detected().name(),
        "fit_seconds": fit_seconds,
        "fit_cpu_seconds": fit_cpu,
        "training_loss": fit.loss,
        "data": data.summary(opts.min_rating),
        "gate": gate.to_json(),
    });
    for (k, v) in hyper.as_object().expect("object") {
        model_meta[k] = v.clone();
    }
    if let (Some(e), Some((t, _))) = (&evaluation, &test) {
        model_meta["offline_metrics"] = e.to_json();
        model_meta["offline_metrics"]["test_file"] = json!(t.path);
        model_meta["offline_metrics"]["test_sha256"] = json!(t.sha256);
        model_meta["offline_metrics"]["protocol"] =
            json!(opts.protocol.clone().unwrap_or_else(|| format!(
                "held-out positives of {}, TRAIN items masked, full ranking",
                t.path
            )));
    }
    if let Some(t) = &opts.tuning {
        model_meta["tuning"] = t.clone();
    }
    artifacts.model_meta = model_meta.clone();
    artifacts
        .version_fields
        .insert("git_sha".into(), git_sha().into());
    // Where the data is, so `recs retrain` can start from it: kept in the registry
    // (`snapshots/<sha256>.<ext>`, written when the version is published), not where
    // the ratings file happened to be (a split's temp folder is gone by then).
    let kept = opts.snapshot.is_none();
    let snapshot = opts.snapshot.clone().unwrap_or_else(|| {
        let ext = opts
            .ratings
            .extension()
            .and_then(|e| e.to_str())
            .filter(|e| e.bytes().all(|b| b.is_ascii_alphanumeric()))
            .unwrap_or("csv");
        SnapshotRef {
            id: data.sha256.clone(),
            uri: format!(
                "{}/{}/{}.{ext}",
                registry.location().trim_end_matches('/'),
                recs_core::SNAPSHOTS_DIR,
                data.sha256
            ),
        }
    });
    artifacts
        .version_fields
        .insert("data_snapshot_id".into(), snapshot.id.clone().into());
    artifacts
        .version_fields
        .insert("data_snapshot_uri".into(), snapshot.uri.clone().into());
    artifacts
        .version_fields
        .insert("trained_by".into(), opts.trained_by.into());

    let gated = opts.gate;
    let mut published = None;
    let (mut popularity, mut notes) = (None, Vec::new());
    let refused = gated && !gate.passed();
    if !refused && !opts.dry_run {
        if kept {
            keep_snapshot(&registry, &opts.ratings, &snapshot).await?;
        }
        let version = publish_als(
            &registry,
            &opts.registry,
            opts.version.as_deref(),
            &artifacts,
            &data.rows,
            &opts.ratings,
        )
        .await?;
        published = Some(version);
        if let Some(name) = &opts.popularity_version {
            if registry.versions().await?.contains(name) {
                notes.push(format!(
                    "{name} already exists, so it is not replaced (pass another --popularity-version to publish this data's ranking)"
                ));
            } else {
                match publish_popularity(&registry, opts, name, &artifacts, &data.rows, false).await
                {
                    Ok(()) => popularity = Some(name.clone()),
                    // A concurrent publisher claimed the name first: theirs stands.
                    Err(TrainError::Publish { source, .. })
                        if matches!(*source, recs_core::RegistryError::VersionExists(_)) =>
                    {
                        notes.push(format!(
                            "{name} was published by another publisher meanwhile, so it is not replaced"
                        ));
                    }
                    Err(e) => return Err(e),
                }
            }
        }
    }
    let summary = json!({
        "published": published,
        "popularity": popularity,
        "registry": opts.registry,
        "dry_run": opts.dry_run,
        "refused": refused,
        "model": model_meta,
        "incumbent": incumbent_json,
    });
    Ok(TrainReport {
        published,
        popularity,
        notes,
        gate,
        gated,
        evaluation,
        summary,
    })
}

/// Offline metrics of `model` on `set` and the gate's quality checks (beats popularity,
/// not worse than the incumbent: `incumbent`, else latest.txt's version), appended to
/// `gate`. Returns the evaluation and the incumbent's metrics as JSON (`null` when none).
/// Shared by `recs train` and `recs import`, so every version is gated the same way.
pub(crate) async fn evaluate_and_gate(
    registry: &Registry,
    model: &AlsModel,
    set: &TestSet,
    k: usize,
    margin: f64,
    incumbent: Option<&str>,
    gate: &mut GateReport,
) -> (Evaluation, Value) {
    let e = eval::evaluate(model, set, k);
    let named = match incumbent {
        Some(v) => Ok(v.to_string()),
        None => registry.latest().await,
    };
    let found = match named {
        Err(RegistryError::NoLatest(_)) => Incumbent::None,
        Err(e) => Incumbent::Unloadable {
            version: "latest.txt".into(),
            error: e.to_string(),
        },
        Ok(v) => match registry.load(&v).await {
            Ok(old) => match old.model.als() {
                Some(als) => Incumbent::Evaluated {
                    eval: eval::evaluate(als, set, k),
                    version: v,
                },
                // The candidate is compared with popularity anyway.
                None => Incumbent::Unloadable {
                    version: v,
                    error: format!("it is a {} model, not ALS", old.model.kind()),
                },
            },
            Err(e) => Incumbent::Unloadable {
                version: v,
                error: e.to_string(),
            },
        },
    };
    let mut incumbent_json = Value::Null;
    if let Incumbent::Evaluated { version, eval } = &found {
        incumbent_json = json!({"version": version, "metrics": eval.to_json()});
    }
    gate::check_quality(gate, &e, &found, margin);
    // A retrain must beat the version it replaces, not merely skip the comparison.
    if incumbent.is_some() && !matches!(found, Incumbent::Evaluated { .. }) {
        gate.push(
            "current_version_evaluated",
            false,
            format!(
                "the current version {} could not be evaluated on the holdout, so the new one cannot be shown not worse",
                incumbent.unwrap_or("?")
            ),
        );
    }
    (e, incumbent_json)
}

/// Publishes `artifacts` as the ALS version `version` (default: the next `vX.Y`;
/// verified on the way: [`Registry::publish`] loads it back) after
/// [`prepare_registry`], then its drift baseline from `rows`; returns the version.
/// Shared by `recs train` and `recs import`.
pub(crate) async fn publish_als(
    registry: &Registry,
    location: &str,
    version: Option<&str>,
    artifacts: &Artifacts,
    rows: &[recs_core::Interaction],
    source: &std::path::Path,
) -> Result<String> {
    prepare_registry(registry).await?;
    // An explicit name is published or refused; an automatic one moves on to the
    // next name when a concurrent publisher claimed it first.
    let mut attempts = if version.is_some() { 1 } else { 8 };
    let (version, loaded) = loop {
        let version = match version {
            Some(v) => v.to_string(),
            None => registry.next_version().await?,
        };
        attempts -= 1;
        match registry.publish(&version, artifacts).await {
            Ok(loaded) => break (version, loaded),
            Err(recs_core::RegistryError::VersionExists(_)) if attempts > 0 => continue,
            Err(source) => {
                return Err(TrainError::Publish {
                    version,
                    registry: location.to_string(),
                    source: Box::new(source),
                })
            }
        }
    };
    // The drift job compares live traffic with the data this version learnt from.
    let als = loaded.model.als().ok_or_else(|| {
        TrainError::Invalid(format!(
            "{version} was published as ALS but reads back as another kind"
        ))
    })?;
    let baseline = recs_drift::Baseline::compute(rows, als);
    save_baseline(registry, &version, &baseline, source).await?;
    Ok(version)
}

/// Before a version is published: a folder registry is created, and what is served
/// now is pinned in active.json, so publishing never switches (`active::pin_served`).
async fn prepare_registry(registry: &Registry) -> Result<()> {
    if let Some(root) = registry.local_root() {
        std::fs::create_dir_all(root).map_err(|source| TrainError::Io {
            path: root.display().to_string(),
            source,
        })?;
    }
    recs_core::active::pin_served(registry)
        .await
        .map_err(|e| TrainError::Invalid(format!("recording the served version: {e}")))?;
    Ok(())
}

/// Saves a freshly published version's drift baseline, saying first what it lacks.
async fn save_baseline(
    registry: &Registry,
    version: &str,
    baseline: &recs_drift::Baseline,
    source: &std::path::Path,
) -> Result<()> {
    warn_partial_baseline(version, baseline, source);
    recs_drift::save_baseline(registry, version, baseline)
        .await
        .map_err(|source| TrainError::Baseline {
            version: version.to_string(),
            source: Box::new(source),
        })
}

/// A baseline is never silently partial: each feature it could not hold is recorded in
/// it (`missing`) and said loudly here, when training, not first when drift runs.
pub fn warn_partial_baseline(
    version: &str,
    baseline: &recs_drift::Baseline,
    source: &std::path::Path,
) {
    for (feature, why) in &baseline.missing {
        tracing::warn!(%version, %feature, reason = %why, "drift baseline is partial");
        eprintln!(
            "WARNING: {version}'s drift baseline has no {feature}: {why} ({}); `recs drift` will skip it",
            source.display()
        );
    }
}

/// Publishes the popularity ranking of `artifacts`' interactions (with every user's
/// seen items) as `version`, and its drift baseline.
async fn publish_popularity(
    registry: &Registry,
    opts: &TrainOptions,
    version: &str,
    artifacts: &Artifacts,
    rows: &[recs_core::Interaction],
    move_latest: bool,
) -> Result<()> {
    let mut pop =
        PopularityArtifacts::from_interactions(&artifacts.users, &artifacts.items, &artifacts.seen);
    pop.model_meta = json!({
        "type": "popularity",
        "trainer": format!("recs {} train --model popularity", env!("CARGO_PKG_VERSION")),
        "ranking": "positives per item, descending; ties by lower movie id",
        "users": artifacts.users.len(),
        "items": artifacts.items.len(),
        "interactions": artifacts.seen.nnz(),
        "min_rating": opts.min_rating,
    });
    pop.version_fields = artifacts.version_fields.clone();
    let loaded = registry
        .publish_popularity(version, &pop, move_latest)
        .await
        .map_err(|source| TrainError::Publish {
            version: version.to_string(),
            registry: opts.registry.clone(),
            source: Box::new(source),
        })?;
    let index = recs_drift::ModelIndex::of(&loaded.model);
    let baseline = recs_drift::Baseline::compute_indexed(rows, &index, &[]);
    save_baseline(registry, version, &baseline, &opts.ratings).await
}

/// `recs train --model popularity`: reads the positives and publishes their
/// popularity ranking alone as `opts.version` (default `v_popularity`), moving
/// `latest.txt` to it. No ALS is fitted, so there is nothing to gate.
pub async fn train_popularity(opts: &TrainOptions) -> Result<TrainReport> {
    let version = opts
        .version
        .clone()
        .unwrap_or_else(|| DEFAULT_POPULARITY_VERSION.to_string());
    validate_version(&version)?;
    let registry = Registry::open(&opts.registry)?;
    if !opts.dry_run
        && registry
            .versions()
            .await
            .unwrap_or_default()
            .contains(&version)
    {
        return Err(TrainError::Invalid(format!(
            "version {version} already exists in {}; pick another --version",
            opts.registry
        )));
    }
    let data = ratings::read_ratings(&opts.ratings, opts.format, opts.skip_bad_rows)?;
    let positives = data.positives(opts.min_rating);
    if positives.is_empty() {
        return Err(TrainError::Invalid(format!(
            "{}: no positives (ratings >= {}) to rank",
            opts.ratings.display(),
            opts.min_rating
        )));
    }
    let ds = build_dataset(&positives, IdRows::Sorted)?;
    let no_factors = AlsFactors {
        factors: 0,
        user_factors: vec![],
        item_factors: vec![],
        loss: None,
    };
    let mut artifacts = to_artifacts(&ds, &no_factors);
    artifacts
        .version_fields
        .insert("git_sha".into(), git_sha().into());
    artifacts
        .version_fields
        .insert("data_snapshot_id".into(), data.sha256.clone().into());
    artifacts
        .version_fields
        .insert("trained_by".into(), "recs train --model popularity".into());
    let mut published = None;
    if !opts.dry_run {
        prepare_registry(&registry).await?;
        publish_popularity(&registry, opts, &version, &artifacts, &data.rows, true).await?;
        published = Some(version.clone());
    }
    let summary = json!({
        "published": published,
        "registry": opts.registry,
        "dry_run": opts.dry_run,
        "refused": false,
        "model": {"type": "popularity", "users": artifacts.users.len(), "items": artifacts.items.len(),
                  "interactions": artifacts.seen.nnz(), "data": data.summary(opts.min_rating)},
    });
    Ok(TrainReport {
        published,
        popularity: None,
        notes: vec![],
        gate: GateReport::default(),
        gated: false,
        evaluation: None,
        summary,
    })
}
