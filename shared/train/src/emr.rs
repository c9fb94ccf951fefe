//! The retrain's Spark path (feature `emr`): past the size one Lambda can train
//! (`EmrConfig::above_rows`), the retrain trains on Spark (EMR Serverless) instead, and
//! the result is imported, gated, published and started as a canary exactly like a
//! version the Lambda trained.
//!
//! A Lambda cannot wait for a Spark job, so the work is split over invocations, each a
//! [`step`]. The job's state lives in the registry, in one small object,
//! `spark-jobs/current.json` ([`JobRecord`]), only ever replaced with a conditional PUT
//! on the ETag just read (as active.json):
//!
//! 1. No job in flight: [`retrain::prepare`] (the new snapshot, the train and holdout
//!    files). At or below the threshold it trains here ([`retrain::train_prepared`]).
//!    Above it: the job script ([`JOB_SCRIPT`], content-addressed), the train and
//!    holdout files go to `EmrConfig::work`, the record is written `starting` (with the
//!    StartJobRun idempotency token), the job run is started, and the record becomes
//!    `running` with its id.
//! 2. A `running` job: GetJobRun. Still going: nothing else happens (a retrain never
//!    starts while one runs). Past `max_run_minutes`: CancelJobRun, record `cancelled`.
//!    FAILED / CANCELLED: record `failed` / `cancelled` with EMR's reason.
//!    SUCCESS: the record becomes `importing` with the version name it will publish.
//! 3. `importing`: the output is downloaded and checked against what was sent (the
//!    input files' SHA-256, the job's summary: rows, positives, users, items, rank),
//!    then `spark::import` (the `recs import spark` path) with the holdout as the test
//!    set, the retrained-from version as the incumbent, the new snapshot as the
//!    version's data: gated, published, and [`retrain::start_canary`]. The record
//!    becomes `published` or `refused` (the gate) or `failed` (a bad output).
//!
//! A storage or API error leaves the record as it was (the next step retries from
//! there); a bad output or a failed job is recorded and never reaches the registry's
//! versions. A step interrupted after publishing finds the version on the next step and
//! only starts its canary.

use std::path::{Path, PathBuf};

use aws_sdk_emrserverless::types::{
    ConfigurationOverrides, JobDriver, JobRunState, MonitoringConfiguration,
    S3MonitoringConfiguration, SparkSubmit,
};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use sha2::{Digest, Sha256};

use crate::ratings::{self, Format};
use crate::retrain::{self, Canary, Prepared, RetrainCanary, RetrainOptions, RetrainReport};
use crate::spark::{self, ImportOptions};
use crate::SnapshotRef;
use recs_core::{Precondition, Registry, Store, StoreError, SPARK_JOBS_DIR};

/// The PySpark job (`shared/train/spark/als_job.py`), shipped in the binary and
/// uploaded as `scripts/als_job-<sha256 prefix>.py` under the work location.
pub const JOB_SCRIPT: &str = include_str!("../spark/als_job.py");

/// The record's key in the registry.
pub fn record_key() -> String {
    format!("{SPARK_JOBS_DIR}/current.json")
}

/// Where and how the Spark path runs.
#[derive(Debug, Clone)]
pub struct EmrConfig {
    /// The EMR Serverless application (Spark).
    pub application_id: String,
    /// The role the job runs as (reads the work inputs, writes the output and logs).
    pub execution_role_arn: String,
    /// `s3://bucket/prefix` (or a folder, in tests) for the script, inputs, outputs, logs.
    pub work: String,
    /// Snapshots with more rows than this train on Spark; others train here.
    pub above_rows: usize,
    /// A job run not finished this many minutes after it was started is cancelled
    /// (also passed to EMR as the run's execution timeout).
    pub max_run_minutes: u64,
    /// Spark ALS `regParam` (Spark scales it by each row's count: not `recs train`'s lambda).
    pub reg_param: f64,
    /// Spark ALS `alpha` (confidence 1 + alpha * r).
    pub alpha: f64,
    /// `numUserBlocks` = `numItemBlocks`.
    pub blocks: u32,
    /// Extra `sparkSubmitParameters` (e.g. `--conf spark.executor.memory=16g`).
    pub spark_submit_parameters: Option<String>,
}

impl EmrConfig {
    /// Defaults: above 30 million rows (docs/TRAINING.md), 240 minutes, regParam 0.1,
    /// alpha 1, 10 blocks.
    pub fn new(
        application_id: impl Into<String>,
        execution_role_arn: impl Into<String>,
        work: impl Into<String>,
    ) -> Self {
        EmrConfig {
            application_id: application_id.into(),
            execution_role_arn: execution_role_arn.into(),
            work: work.into(),
            above_rows: 30_000_000,
            max_run_minutes: 240,
            reg_param: 0.1,
            alpha: 1.0,
            blocks: 10,
            spark_submit_parameters: None,
        }
    }
}

/// Where a recorded job is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RecordState {
    /// Recorded, StartJobRun not yet answered (retried with the same token).
    Starting,
    /// Started; EMR has the job run.
    Running,
    /// The job succeeded; its output is being imported as `version`.
    Importing,
    /// Imported, published, canary started (or failed to start: see `detail`).
    Published,
    /// Imported, and the gate refused it: nothing published.
    Refused,
    /// The job failed, or its output was refused: nothing published.
    Failed,
    /// The job was cancelled (by an operator, or here as stuck): nothing published.
    Cancelled,
}

impl RecordState {
    /// No job in flight: a new retrain may start.
    pub fn is_terminal(self) -> bool {
        matches!(
            self,
            RecordState::Published
                | RecordState::Refused
                | RecordState::Failed
                | RecordState::Cancelled
        )
    }
}

/// What the orchestrator knows of the job's input, checked against its output.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Expected {
    /// Rows of the training file.
    pub rows: u64,
    /// Its positives (rating >= min_rating).
    pub positives: u64,
    /// Distinct users with a positive (Spark's userFactors rows).
    pub users: u64,
    /// Distinct items with a positive (Spark's itemFactors rows).
    pub items: u64,
    /// The factors asked for.
    pub rank: u64,
    /// SHA-256 of the training file as uploaded.
    pub train_sha256: String,
    /// SHA-256 of the holdout file as uploaded.
    pub holdout_sha256: String,
}

/// `spark-jobs/current.json`: the Spark job a retrain started and what became of it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct JobRecord {
    /// Where the job is.
    pub state: RecordState,
    /// EMR's job run id (once StartJobRun answered).
    pub job_run_id: Option<String>,
    /// The application it runs on.
    pub application_id: String,
    /// StartJobRun's idempotency token.
    pub client_token: String,
    /// When the retrain started it (epoch ms).
    pub started_ms: i64,
    /// When it reached a terminal state.
    pub finished_ms: Option<i64>,
    /// The version retrained from (the gate's incumbent, the canary's active version).
    pub base_version: String,
    /// Its snapshot.
    pub base_snapshot: String,
    /// The version to publish (asked for, or named when the import starts).
    pub version: Option<String>,
    /// The new snapshot (the published version's data).
    pub snapshot_id: String,
    /// Where it is.
    pub snapshot_uri: String,
    /// Rows of the new snapshot.
    pub rows: usize,
    /// Rate events read since the base snapshot.
    pub new_events: usize,
    /// Rows held out.
    pub holdout_rows: usize,
    /// Hyper-parameters missing from the base version (defaults used).
    pub defaulted: Vec<String>,
    /// The job's inputs and outputs, relative to the work location.
    pub run_dir: String,
    /// The work location.
    pub work: String,
    /// The job script as uploaded.
    pub script_uri: String,
    /// What the output must agree with.
    pub expected: Expected,
    /// Positive threshold, NDCG cut-off, gate margin, canary share (as the retrain had them).
    pub min_rating: f32,
    /// NDCG cut-off.
    pub k: usize,
    /// Gate margin.
    pub gate_margin: f64,
    /// Canary share, 0..=100.
    pub canary_percentage: f64,
    /// EMR's last state, and why it ended (failures, the gate's reasons).
    pub detail: Option<String>,
}

impl JobRecord {
    fn uri(&self, rel: &str) -> String {
        format!("{}/{}/{rel}", self.work.trim_end_matches('/'), self.run_dir)
    }

    /// Whole minutes from the start to `now_ms` (0 for a start in the future).
    fn minutes_since_start(&self, now_ms: i64) -> u64 {
        ((now_ms - self.started_ms).max(0) / 60_000) as u64
    }
}

/// Why a step stopped.
#[derive(Debug, thiserror::Error)]
pub enum EmrError {
    /// The canary share is outside 0..=100 (checked before anything else).
    #[error(transparent)]
    CanaryPercentage(recs_control::SwitchError),
    /// Reading or writing storage failed; the record is as it was before this step.
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
    /// The record exists but does not parse (written by something else).
    #[error("{key} does not parse as a Spark job record: {detail}; fix or remove it before the next retrain")]
    BadRecord {
        /// The record's location.
        key: String,
        /// The parse error.
        detail: String,
    },
    /// Another writer changed the record between this step's read and write.
    #[error("{0} was changed by another retrain meanwhile; this step stopped")]
    Conflict(String),
    /// An EMR Serverless call failed.
    #[error("EMR Serverless {call}: {detail}")]
    Api {
        /// The operation.
        call: &'static str,
        /// The SDK's error, with its context.
        detail: String,
    },
    /// The job run ended without success; recorded, nothing published.
    #[error("Spark job run {job_run_id} ended {state}: {details}; nothing published")]
    JobEnded {
        /// The job run.
        job_run_id: String,
        /// FAILED or CANCELLED.
        state: String,
        /// EMR's stateDetails.
        details: String,
    },
    /// The job run was still unfinished past the limit and was cancelled; recorded.
    #[error("Spark job run {job_run_id} still {state} {minutes} minutes after it started (limit {limit}): cancelled, nothing published")]
    Stuck {
        /// The job run.
        job_run_id: String,
        /// Its last state.
        state: String,
        /// Minutes since it was started.
        minutes: u64,
        /// The limit.
        limit: u64,
    },
    /// The job's output is missing, truncated or does not match its input; recorded as
    /// failed, nothing published.
    #[error("the Spark job's output under {location} is refused: {detail}; nothing published")]
    Output {
        /// The output location.
        location: String,
        /// What is wrong.
        detail: String,
    },
    /// The retrain before the job (snapshot, events, holdout) or the local training.
    #[error(transparent)]
    Retrain(#[from] retrain::RetrainError),
    /// The import (factor files, ratings, registry, publishing).
    #[error("importing the Spark model: {0}")]
    Import(#[source] spark::ImportError),
    /// A scratch file could not be written.
    #[error("scratch file {path}: {source}")]
    Io {
        /// The file.
        path: String,
        /// The error.
        #[source]
        source: std::io::Error,
    },
}

/// What one [`step`] did.
#[derive(Debug)]
pub enum Step {
    /// At or below the threshold: trained here, as without the Spark path.
    Trained(Box<RetrainCanary>),
    /// A Spark job was started and recorded.
    Started(JobRecord),
    /// The recorded job is still running (EMR's state); nothing else was done.
    Waiting {
        /// The record (unchanged).
        record: JobRecord,
        /// EMR's state.
        state: String,
    },
    /// The recorded job succeeded and its output was imported and gated.
    Finished {
        /// The record as written (published or refused).
        record: JobRecord,
        /// The import's report (`None` when a previous step had already published
        /// the version and this one only started its canary).
        report: Option<Box<RetrainReport>>,
        /// What happened to the rollout.
        canary: Canary,
    },
}

/// An EMR Serverless client from the environment (region, credentials,
/// `AWS_ENDPOINT_URL_EMR_SERVERLESS` / `AWS_ENDPOINT_URL` for a local emulator).
pub async fn client_from_env() -> aws_sdk_emrserverless::Client {
    let config = aws_config::load_from_env().await;
    aws_sdk_emrserverless::Client::new(&config)
}

fn store_err(what: &'static str, location: String) -> impl FnOnce(StoreError) -> EmrError {
    move |source| EmrError::Store {
        what,
        location,
        source,
    }
}

fn api<E: std::error::Error>(call: &'static str) -> impl FnOnce(E) -> EmrError {
    move |e| EmrError::Api {
        call,
        detail: aws_sdk_emrserverless::error::DisplayErrorContext(e).to_string(),
    }
}

/// The registry's record and its ETag (`None` when no job was ever recorded).
pub async fn read_record(registry: &str) -> Result<Option<(JobRecord, String)>, EmrError> {
    let store = Store::open(registry).map_err(store_err("opening", registry.to_string()))?;
    let key = record_key();
    match store.get_object(&key, None).await {
        Ok(Some(obj)) => {
            let record = serde_json::from_slice(&obj.bytes).map_err(|e| EmrError::BadRecord {
                key: format!("{registry}/{key}"),
                detail: e.to_string(),
            })?;
            Ok(Some((record, obj.etag)))
        }
        Ok(None) => Err(EmrError::Store {
            what: "reading",
            location: format!("{registry}/{key}"),
            source: StoreError::Unavailable {
                location: registry.to_string(),
                detail: "a GET without If-None-Match answered 304".into(),
            },
        }),
        Err(StoreError::NotFound(_)) => Ok(None),
        Err(e) => Err(EmrError::Store {
            what: "reading the Spark job record",
            location: format!("{registry}/{key}"),
            source: e,
        }),
    }
}

/// Replaces the record if it is still `etag` (or creates it when `etag` is `None`);
/// returns the new ETag.
async fn write_record(
    registry: &str,
    record: &JobRecord,
    etag: Option<&str>,
) -> Result<String, EmrError> {
    let store = Store::open(registry).map_err(store_err("opening", registry.to_string()))?;
    let key = record_key();
    let bytes = serde_json::to_vec_pretty(record).map_err(|e| EmrError::BadRecord {
        key: key.clone(),
        detail: e.to_string(),
    })?;
    if let Some(root) = store.local_root() {
        // A folder registry: the lock file of the conditional write needs the folder.
        let dir = root.join(SPARK_JOBS_DIR);
        std::fs::create_dir_all(&dir).map_err(|source| EmrError::Io {
            path: dir.display().to_string(),
            source,
        })?;
    }
    let cond = etag.map_or(Precondition::Absent, Precondition::Matches);
    match store.put_if(&key, bytes, cond).await {
        Ok(tag) => {
            tracing::info!(state = ?record.state, job_run_id = ?record.job_run_id, "spark: recorded the job");
            Ok(tag)
        }
        Err(StoreError::Conflict(_)) => Err(EmrError::Conflict(format!("{registry}/{key}"))),
        Err(e) => Err(EmrError::Store {
            what: "writing the Spark job record",
            location: format!("{registry}/{key}"),
            source: e,
        }),
    }
}

/// One step of the retrain with the Spark path (see the module docs).
pub async fn step(
    opts: &RetrainOptions,
    canary_percentage: f64,
    cfg: &EmrConfig,
    emr: &aws_sdk_emrserverless::Client,
) -> Result<Step, EmrError> {
    recs_control::check_canary_percentage(canary_percentage).map_err(EmrError::CanaryPercentage)?;
    let current = read_record(&opts.registry).await?;
    if let Some((record, etag)) = &current {
        match record.state {
            RecordState::Starting => {
                return restart_job(opts, cfg, emr, record.clone(), etag).await
            }
            RecordState::Running => return poll(opts, cfg, emr, record.clone(), etag).await,
            RecordState::Importing => return import(opts, record.clone(), etag).await,
            _ => {}
        }
    }
    let prepared = retrain::prepare(opts).await?;
    if prepared.rows.len() <= cfg.above_rows {
        tracing::info!(
            rows = prepared.rows.len(),
            above_rows = cfg.above_rows,
            "spark: at or below the threshold, training here"
        );
        let report = retrain::train_prepared(opts, prepared).await?;
        let published = report
            .train
            .published
            .clone()
            .filter(|_| !report.train.refused());
        let canary = retrain::start_canary(
            &opts.registry,
            &report.base_version,
            published,
            canary_percentage,
        )
        .await;
        return Ok(Step::Trained(Box::new(RetrainCanary {
            report,
            canary_percentage,
            canary,
        })));
    }
    let etag = current.as_ref().map(|(_, e)| e.as_str());
    let record = upload_inputs(opts, canary_percentage, cfg, &prepared).await?;
    let _ = std::fs::remove_dir_all(&prepared.scratch);
    let etag = write_record(&opts.registry, &record, etag).await?;
    start_job(opts, cfg, emr, record, &etag).await
}

/// Counts of the training file the job must reproduce.
fn expected_counts(
    train: &Path,
    min_rating: f32,
) -> Result<(u64, u64, u64, u64), retrain::RetrainError> {
    let data = ratings::read_ratings(train, Format::Auto, false)?;
    let pos = data.positives(min_rating);
    let mut users: Vec<i64> = pos.iter().map(|r| r.user).collect();
    let mut items: Vec<i64> = pos.iter().map(|r| r.item).collect();
    users.sort_unstable();
    users.dedup();
    items.sort_unstable();
    items.dedup();
    Ok((
        data.rows.len() as u64,
        pos.len() as u64,
        users.len() as u64,
        items.len() as u64,
    ))
}

/// The first `n` characters of an id (all of it when shorter or not ASCII: a record
/// read back from the registry is never trusted to be well formed).
fn prefix(id: &str, n: usize) -> &str {
    id.get(..n).unwrap_or(id)
}

fn read_file(path: &Path) -> Result<Vec<u8>, EmrError> {
    std::fs::read(path).map_err(|source| EmrError::Io {
        path: path.display().to_string(),
        source,
    })
}

/// Uploads the script and the inputs; the record to write (`starting`).
async fn upload_inputs(
    opts: &RetrainOptions,
    canary_percentage: f64,
    cfg: &EmrConfig,
    p: &Prepared,
) -> Result<JobRecord, EmrError> {
    let work = Store::open(&cfg.work).map_err(store_err("opening", cfg.work.clone()))?;
    let started_ms = recs_core::time::now_ms();
    let script_sha = recs_core::hash::hex(&Sha256::digest(JOB_SCRIPT.as_bytes()));
    let script_key = format!("scripts/als_job-{}.py", prefix(&script_sha, 16));
    work.put(&script_key, JOB_SCRIPT.as_bytes().to_vec())
        .await
        .map_err(store_err("uploading the job script to", cfg.work.clone()))?;
    let run_dir = format!("runs/{started_ms}-{}", prefix(&p.snapshot_id, 16));
    let train = read_file(&p.train_path)?;
    let holdout = read_file(&p.test_path)?;
    let (rows, positives, users, items) = expected_counts(&p.train_path, p.min_rating)?;
    let expected = Expected {
        rows,
        positives,
        users,
        items,
        rank: p.als.factors as u64,
        train_sha256: recs_core::hash::hex(&Sha256::digest(&train)),
        holdout_sha256: recs_core::hash::hex(&Sha256::digest(&holdout)),
    };
    for (name, bytes) in [("train.csv", train), ("holdout.csv", holdout)] {
        work.put(&format!("{run_dir}/{name}"), bytes)
            .await
            .map_err(store_err("uploading the job input to", cfg.work.clone()))?;
    }
    let work_uri = cfg.work.trim_end_matches('/').to_string();
    Ok(JobRecord {
        state: RecordState::Starting,
        job_run_id: None,
        application_id: cfg.application_id.clone(),
        // At most 64 characters, unique per attempt.
        client_token: format!("{}-{started_ms}", prefix(&p.snapshot_id, 32)),
        started_ms,
        finished_ms: None,
        base_version: p.base_version.clone(),
        base_snapshot: p.base_snapshot.clone(),
        version: opts.version.clone(),
        snapshot_id: p.snapshot_id.clone(),
        snapshot_uri: p.snapshot_uri.clone(),
        rows: p.rows.len(),
        new_events: p.new_events,
        holdout_rows: p.holdout_rows,
        defaulted: p.defaulted.clone(),
        script_uri: format!("{work_uri}/{script_key}"),
        run_dir,
        work: work_uri,
        expected,
        min_rating: p.min_rating,
        k: opts.k,
        gate_margin: opts.gate_margin,
        canary_percentage,
        detail: None,
    })
}

/// The job's arguments (`als_job.py`'s command line).
pub fn job_arguments(record: &JobRecord, cfg: &EmrConfig, max_iter: u64, seed: u64) -> Vec<String> {
    vec![
        "--train".into(),
        record.uri("train.csv"),
        "--out".into(),
        record.uri("out"),
        "--rank".into(),
        record.expected.rank.to_string(),
        "--max-iter".into(),
        max_iter.to_string(),
        "--reg-param".into(),
        cfg.reg_param.to_string(),
        "--alpha".into(),
        cfg.alpha.to_string(),
        "--seed".into(),
        seed.to_string(),
        "--min-rating".into(),
        record.min_rating.to_string(),
        "--blocks".into(),
        cfg.blocks.to_string(),
    ]
}

/// The job run's name: it carries the client token, so a run EMR started while its
/// answer was lost can be found again ([`restart_job`]).
fn job_name(record: &JobRecord) -> String {
    format!("movie-recs-als-{}", record.client_token)
}

/// Whether EMR may have started the run although StartJobRun failed: the request may
/// have reached it (a timeout, a lost connection, a 5xx, throttling). A 4xx other
/// than throttling, or a request never sent, started nothing.
fn may_have_started<E>(
    e: &aws_sdk_emrserverless::error::SdkError<
        E,
        aws_sdk_emrserverless::config::http::HttpResponse,
    >,
) -> bool {
    use aws_sdk_emrserverless::error::SdkError;
    match e {
        SdkError::ConstructionFailure(_) => false,
        SdkError::ServiceError(s) => {
            let status = s.raw().status().as_u16();
            status >= 500 || status == 429
        }
        _ => true,
    }
}

/// A `starting` record found by a later step: StartJobRun was never answered. The run
/// is looked for by name first (EMR may have started it); if it is not there, it is
/// started again with the same idempotency token, unless the record is older than
/// `max_run_minutes`, when it is recorded failed (the next retrain starts afresh).
async fn restart_job(
    opts: &RetrainOptions,
    cfg: &EmrConfig,
    emr: &aws_sdk_emrserverless::Client,
    mut record: JobRecord,
    etag: &str,
) -> Result<Step, EmrError> {
    if let Some(id) = find_job_run(emr, &record).await? {
        tracing::warn!(job_run_id = %id, "spark: found the job run a lost StartJobRun answer had started");
        record.job_run_id = Some(id);
        record.state = RecordState::Running;
        record.detail = Some("found by name after an unanswered StartJobRun".into());
        write_record(&opts.registry, &record, Some(etag)).await?;
        return Ok(Step::Started(record));
    }
    let minutes = record.minutes_since_start(recs_core::time::now_ms());
    if minutes > cfg.max_run_minutes {
        record.state = RecordState::Failed;
        record.finished_ms = Some(recs_core::time::now_ms());
        record.detail = Some(format!(
            "StartJobRun unanswered and no job run named {} after {minutes} minutes (limit {}): not started; the next retrain starts afresh",
            job_name(&record),
            cfg.max_run_minutes
        ));
        write_record(&opts.registry, &record, Some(etag)).await?;
        return Err(EmrError::Api {
            call: "StartJobRun",
            detail: record.detail.unwrap_or_default(),
        });
    }
    start_job(opts, cfg, emr, record, etag).await
}

/// The id of the application's job run named [`job_name`], created at most a day
/// before the record (ListJobRuns, every page).
async fn find_job_run(
    emr: &aws_sdk_emrserverless::Client,
    record: &JobRecord,
) -> Result<Option<String>, EmrError> {
    let name = job_name(record);
    let after =
        aws_sdk_emrserverless::primitives::DateTime::from_millis(record.started_ms - 86_400_000);
    let mut pages = emr
        .list_job_runs()
        .application_id(&record.application_id)
        .created_at_after(after)
        .into_paginator()
        .send();
    while let Some(page) = pages.next().await {
        let page = page.map_err(api("ListJobRuns"))?;
        if let Some(run) = page
            .job_runs()
            .iter()
            .find(|r| r.name() == Some(name.as_str()))
        {
            return Ok(Some(run.id().to_string()));
        }
    }
    Ok(None)
}

/// StartJobRun for a `starting` record (again with the same token after an
/// interruption: EMR answers with the same job run), then the record `running`.
async fn start_job(
    opts: &RetrainOptions,
    cfg: &EmrConfig,
    emr: &aws_sdk_emrserverless::Client,
    mut record: JobRecord,
    etag: &str,
) -> Result<Step, EmrError> {
    // The base version's iterations and seed, as the Lambda path would use them.
    let (max_iter, seed) = base_iterations_and_seed(&opts.registry, &record.base_version).await;
    let driver = SparkSubmit::builder()
        .entry_point(&record.script_uri)
        .set_entry_point_arguments(Some(job_arguments(&record, cfg, max_iter, seed)))
        .set_spark_submit_parameters(cfg.spark_submit_parameters.clone())
        .build()
        .map_err(api("StartJobRun (building the request)"))?;
    let logs = S3MonitoringConfiguration::builder()
        .log_uri(record.uri("logs/"))
        .build();
    let started = emr
        .start_job_run()
        .application_id(&record.application_id)
        .client_token(&record.client_token)
        .execution_role_arn(&cfg.execution_role_arn)
        .name(job_name(&record))
        .job_driver(JobDriver::SparkSubmit(driver))
        .configuration_overrides(
            ConfigurationOverrides::builder()
                .monitoring_configuration(
                    MonitoringConfiguration::builder()
                        .s3_monitoring_configuration(logs)
                        .build(),
                )
                .build(),
        )
        .execution_timeout_minutes(cfg.max_run_minutes as i64)
        .send()
        .await;
    let out = match started {
        Ok(out) => out,
        Err(e) if may_have_started(&e) => {
            // EMR may have the run: keep `starting`, so the next step looks for it by
            // name and retries with the same token (never a second run).
            let err = api("StartJobRun")(e);
            record.detail = Some(format!("unanswered, retried by the next step: {err}"));
            if let Err(w) = write_record(&opts.registry, &record, Some(etag)).await {
                tracing::error!(error = %w, "spark: could not record the unanswered start");
            }
            return Err(err);
        }
        Err(e) => {
            let err = api("StartJobRun")(e);
            // Nothing runs: record the failure so the next retrain starts afresh.
            record.state = RecordState::Failed;
            record.finished_ms = Some(recs_core::time::now_ms());
            record.detail = Some(err.to_string());
            if let Err(w) = write_record(&opts.registry, &record, Some(etag)).await {
                tracing::error!(error = %w, "spark: could not record the failed start");
            }
            return Err(err);
        }
    };
    record.job_run_id = Some(out.job_run_id().to_string());
    record.state = RecordState::Running;
    record.detail = Some("SUBMITTED".into());
    write_record(&opts.registry, &record, Some(etag)).await?;
    tracing::info!(job_run_id = %out.job_run_id(), rows = record.rows, "spark: started the job run");
    Ok(Step::Started(record))
}

async fn base_iterations_and_seed(registry: &str, base: &str) -> (u64, u64) {
    let d = crate::default_als();
    let meta = match Registry::open(registry) {
        Ok(r) => r.load(base).await.ok().map(|m| m.model_meta),
        Err(_) => None,
    };
    let get = |k: &str| meta.as_ref().and_then(|m| m.get(k)).and_then(Value::as_u64);
    (
        get("iterations").unwrap_or(d.iterations as u64),
        get("random_state").unwrap_or(d.seed),
    )
}

/// GetJobRun for a `running` record.
async fn poll(
    opts: &RetrainOptions,
    cfg: &EmrConfig,
    emr: &aws_sdk_emrserverless::Client,
    mut record: JobRecord,
    etag: &str,
) -> Result<Step, EmrError> {
    let Some(id) = record.job_run_id.clone() else {
        return Err(EmrError::BadRecord {
            key: record_key(),
            detail: "state running without a job_run_id".into(),
        });
    };
    let out = emr
        .get_job_run()
        .application_id(&record.application_id)
        .job_run_id(&id)
        .send()
        .await
        .map_err(api("GetJobRun"))?;
    let Some(run) = out.job_run() else {
        return Err(EmrError::Api {
            call: "GetJobRun",
            detail: format!("no jobRun in the answer for {id}"),
        });
    };
    let state = run.state().clone();
    let details = run.state_details().to_string();
    tracing::info!(job_run_id = %id, state = %state, details = %details, "spark: job run state");
    let now = recs_core::time::now_ms();
    match state {
        JobRunState::Success => {
            record.state = RecordState::Importing;
            record.detail = Some("SUCCESS".into());
            if record.version.is_none() {
                let registry = Registry::open(&opts.registry)
                    .map_err(|e| EmrError::Import(spark::ImportError::from(e)))?;
                record.version = Some(
                    registry
                        .next_version()
                        .await
                        .map_err(|e| EmrError::Import(e.into()))?,
                );
            }
            let etag = write_record(&opts.registry, &record, Some(etag)).await?;
            import(opts, record, &etag).await
        }
        JobRunState::Failed | JobRunState::Cancelled => {
            let failed = state == JobRunState::Failed;
            record.state = if failed {
                RecordState::Failed
            } else {
                RecordState::Cancelled
            };
            record.finished_ms = Some(now);
            record.detail = Some(format!("{state}: {details}"));
            write_record(&opts.registry, &record, Some(etag)).await?;
            Err(EmrError::JobEnded {
                job_run_id: id,
                state: state.to_string(),
                details,
            })
        }
        other => {
            let minutes = record.minutes_since_start(now);
            if minutes < cfg.max_run_minutes {
                return Ok(Step::Waiting {
                    record,
                    state: other.to_string(),
                });
            }
            emr.cancel_job_run()
                .application_id(&record.application_id)
                .job_run_id(&id)
                .send()
                .await
                .map_err(api("CancelJobRun"))?;
            record.state = RecordState::Cancelled;
            record.finished_ms = Some(now);
            record.detail = Some(format!(
                "{other} after {minutes} minutes (limit {}): cancelled as stuck",
                cfg.max_run_minutes
            ));
            write_record(&opts.registry, &record, Some(etag)).await?;
            Err(EmrError::Stuck {
                job_run_id: id,
                state: other.to_string(),
                minutes,
                limit: cfg.max_run_minutes,
            })
        }
    }
}

/// Records a refused output (`failed`) and returns the error.
async fn refuse(
    opts: &RetrainOptions,
    mut record: JobRecord,
    etag: &str,
    err: EmrError,
) -> Result<Step, EmrError> {
    record.state = RecordState::Failed;
    record.finished_ms = Some(recs_core::time::now_ms());
    record.detail = Some(err.to_string());
    write_record(&opts.registry, &record, Some(etag)).await?;
    Err(err)
}

/// A key of the job's output as a relative path that stays under the scratch folder.
fn safe_relative(key: &str) -> Option<PathBuf> {
    let path = Path::new(key);
    let ok = !key.is_empty()
        && path
            .components()
            .all(|c| matches!(c, std::path::Component::Normal(_)));
    ok.then(|| path.to_path_buf())
}

/// Downloads the output (model/, summary/) and the inputs into `dir`; checks the
/// inputs' SHA-256 and the summary's counts. `Ok(Err(_))` is a refused output,
/// `Err(_)` a storage failure (retried by the next step).
async fn fetch_output(record: &JobRecord, dir: &Path) -> Result<Result<(), String>, EmrError> {
    let work = Store::open(&record.work).map_err(store_err("opening", record.work.clone()))?;
    let out_dir = format!("{}/out", record.run_dir);
    let keys = work
        .list(&out_dir)
        .await
        .map_err(store_err("listing the job output", record.uri("out")))?;
    let mut summary = None;
    for key in &keys {
        let Some(rel) = safe_relative(key) else {
            return Ok(Err(format!(
                "an output key that leaves its folder: {key:?}"
            )));
        };
        if !(key.starts_with("model/") || key.starts_with("summary/")) || key.ends_with(".crc") {
            continue;
        }
        let bytes = work
            .get(&format!("{out_dir}/{key}"))
            .await
            .map_err(store_err("downloading the job output", record.uri("out")))?;
        if key.starts_with("summary/part-") {
            summary = Some(bytes.clone());
        }
        let path = dir.join("out").join(rel);
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent).map_err(|source| EmrError::Io {
                path: parent.display().to_string(),
                source,
            })?;
        }
        std::fs::write(&path, bytes).map_err(|source| EmrError::Io {
            path: path.display().to_string(),
            source,
        })?;
    }
    for folder in ["model/userFactors", "model/itemFactors"] {
        if !keys.iter().any(|k| k == &format!("{folder}/_SUCCESS")) {
            return Ok(Err(format!(
                "{folder}/_SUCCESS is missing (Spark did not finish writing it)"
            )));
        }
    }
    let Some(summary) = summary else {
        return Ok(Err(
            "summary/part-* is missing (the job writes it last)".into()
        ));
    };
    let summary: Value = match std::str::from_utf8(&summary)
        .ok()
        .and_then(|s| s.lines().next())
        .and_then(|l| serde_json::from_str(l).ok())
    {
        Some(v) => v,
        None => return Ok(Err("summary is not one JSON line".into())),
    };
    let e = &record.expected;
    for (name, want) in [
        ("rows", e.rows),
        ("positives", e.positives),
        ("users", e.users),
        ("items", e.items),
        ("rank", e.rank),
    ] {
        let got = summary.get(name).and_then(Value::as_u64);
        if got != Some(want) {
            return Ok(Err(format!(
                "summary says {name} = {}, the input has {want}",
                got.map_or("nothing".to_string(), |g| g.to_string())
            )));
        }
    }
    for (name, want) in [
        ("train.csv", &e.train_sha256),
        ("holdout.csv", &e.holdout_sha256),
    ] {
        let bytes = work
            .get(&format!("{}/{name}", record.run_dir))
            .await
            .map_err(store_err("downloading the job input", record.uri(name)))?;
        let got = recs_core::hash::hex(&Sha256::digest(&bytes));
        if &got != want {
            return Ok(Err(format!(
                "{name} changed since it was uploaded (sha256 {got}, recorded {want})"
            )));
        }
        let path = dir.join(name);
        std::fs::write(&path, bytes).map_err(|source| EmrError::Io {
            path: path.display().to_string(),
            source,
        })?;
    }
    Ok(Ok(()))
}

/// Imports an `importing` record's output: checked, gated, published, canary.
async fn import(
    opts: &RetrainOptions,
    mut record: JobRecord,
    etag: &str,
) -> Result<Step, EmrError> {
    let Some(version) = record.version.clone() else {
        return Err(EmrError::BadRecord {
            key: record_key(),
            detail: "state importing without a version".into(),
        });
    };
    let registry = Registry::open(&opts.registry)
        .map_err(|e| EmrError::Import(spark::ImportError::from(e)))?;
    let versions = registry
        .versions()
        .await
        .map_err(|e| EmrError::Import(e.into()))?;
    let mut version = version;
    let mut etag = etag.to_string();
    if versions.contains(&version) && !is_ours(&registry, &version, &record).await {
        // Another publisher took the name meanwhile: name the next one.
        version = registry
            .next_version()
            .await
            .map_err(|e| EmrError::Import(e.into()))?;
        tracing::warn!(version = %version, "spark: the version name was taken meanwhile; importing as the next one");
        record.version = Some(version.clone());
        etag = write_record(&opts.registry, &record, Some(&etag)).await?;
    } else if versions.contains(&version) {
        // A previous step published it and stopped before recording: finish the rollout.
        tracing::warn!(version = %version, "spark: the version is already published; starting its canary");
        let canary = retrain::start_canary(
            &opts.registry,
            &record.base_version,
            Some(version),
            record.canary_percentage,
        )
        .await;
        return finished(opts, record, &etag, None, canary).await;
    }
    let etag = etag.as_str();
    let started = std::time::Instant::now();
    let dir = opts
        .work_dir
        .clone()
        .unwrap_or_else(std::env::temp_dir)
        .join(format!("recs-spark-{}", record.client_token));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).map_err(|source| EmrError::Io {
        path: dir.display().to_string(),
        source,
    })?;
    let location = record.uri("out");
    match fetch_output(&record, &dir).await {
        Err(e) => {
            let _ = std::fs::remove_dir_all(&dir);
            return Err(e);
        }
        Ok(Err(detail)) => {
            let _ = std::fs::remove_dir_all(&dir);
            return refuse(opts, record, etag, EmrError::Output { location, detail }).await;
        }
        Ok(Ok(())) => {}
    }
    let import_opts = ImportOptions {
        user_factors: dir.join("out/model/userFactors"),
        item_factors: dir.join("out/model/itemFactors"),
        ratings: dir.join("train.csv"),
        format: Format::Auto,
        skip_bad_rows: false,
        min_rating: record.min_rating,
        registry: opts.registry.clone(),
        version: Some(version.clone()),
        test: Some(dir.join("holdout.csv")),
        k: record.k,
        gate: true,
        gate_margin: record.gate_margin,
        incumbent: Some(record.base_version.clone()),
        snapshot: Some(SnapshotRef {
            id: record.snapshot_id.clone(),
            uri: record.snapshot_uri.clone(),
        }),
        trained_by: "recs retrain (Spark ALS on EMR Serverless)",
    };
    let imported = spark::import(&import_opts).await;
    let _ = std::fs::remove_dir_all(&dir);
    let (train, _ids) = match imported {
        Ok(r) => r,
        // Unreadable, NaN, ragged or mismatched factors: the output is refused.
        Err(spark::ImportError::Factors(e)) => {
            let err = EmrError::Output {
                location,
                detail: e.to_string(),
            };
            return refuse(opts, record, etag, err).await;
        }
        // Storage, registry or publishing: the record stays `importing`, retried.
        Err(e) => return Err(EmrError::Import(e)),
    };
    let k = format!("NDCG@{}", record.k);
    let report = RetrainReport {
        base_version: record.base_version.clone(),
        base_snapshot: record.base_snapshot.clone(),
        new_events: record.new_events,
        snapshot_id: record.snapshot_id.clone(),
        snapshot_uri: record.snapshot_uri.clone(),
        rows: record.rows,
        users: record.expected.users as usize,
        items: record.expected.items as usize,
        holdout_rows: record.holdout_rows,
        ndcg_new: train.evaluation.as_ref().map(|e| e.model.ndcg),
        ndcg_current: train.summary["incumbent"]["metrics"]["als"][k.as_str()].as_f64(),
        ndcg_popularity: train.evaluation.as_ref().map(|e| e.popularity.ndcg),
        defaulted: record.defaulted.clone(),
        // Spark trains with its own settings; re-tuning is the Lambda path's.
        tuned: None,
        seconds: started.elapsed().as_secs_f64(),
        train,
    };
    let published = report
        .train
        .published
        .clone()
        .filter(|_| !report.train.refused());
    if published.is_none() {
        record.detail = Some(format!(
            "the gate refused it: {}",
            report.train.gate.reasons()
        ));
    }
    let canary = retrain::start_canary(
        &opts.registry,
        &record.base_version,
        published,
        record.canary_percentage,
    )
    .await;
    finished(opts, record, etag, Some(Box::new(report)), canary).await
}

/// Whether `version` is this record's import (its data is the record's snapshot).
async fn is_ours(registry: &Registry, version: &str, record: &JobRecord) -> bool {
    match registry.load(version).await {
        Ok(m) => {
            m.meta.raw.get("data_snapshot_id").and_then(Value::as_str)
                == Some(record.snapshot_id.as_str())
        }
        Err(_) => false,
    }
}

/// Records the end of an import (published or refused).
async fn finished(
    opts: &RetrainOptions,
    mut record: JobRecord,
    etag: &str,
    report: Option<Box<RetrainReport>>,
    canary: Canary,
) -> Result<Step, EmrError> {
    record.finished_ms = Some(recs_core::time::now_ms());
    match &canary {
        Canary::Refused => record.state = RecordState::Refused,
        Canary::Started { version, .. } => {
            record.state = RecordState::Published;
            record.detail = Some(format!(
                "published {version}; canary at {}%",
                record.canary_percentage
            ));
        }
        Canary::Failed { version, error } => {
            record.state = RecordState::Published;
            record.detail = Some(format!(
                "published {version}; starting its canary failed: {error}"
            ));
        }
    }
    write_record(&opts.registry, &record, Some(etag)).await?;
    Ok(Step::Finished {
        record,
        report,
        canary,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use aws_sdk_emrserverless::operation::cancel_job_run::CancelJobRunOutput;
    use aws_sdk_emrserverless::operation::get_job_run::GetJobRunOutput;
    use aws_sdk_emrserverless::operation::list_job_runs::ListJobRunsOutput;
    use aws_sdk_emrserverless::operation::start_job_run::StartJobRunOutput;
    use aws_sdk_emrserverless::types::{JobRun, JobRunSummary};
    use aws_sdk_emrserverless::Client;
    use aws_smithy_mocks::{mock, mock_client, RuleMode};

    /// GetJobRun's answer for a job run in `state` (EMR's shape: every required field).
    fn job_run(state: JobRunState, details: &str) -> GetJobRunOutput {
        let t = aws_smithy_types::DateTime::from_secs(1_795_824_000);
        GetJobRunOutput::builder()
            .job_run(
                JobRun::builder()
                    .application_id("00app")
                    .job_run_id("00run")
                    .arn("arn:aws:emr-serverless:us-east-1:123456789012:/applications/00app/jobruns/00run")
                    .created_by("arn:aws:sts::123456789012:assumed-role/retrain/x")
                    .created_at(t)
                    .updated_at(t)
                    .execution_role("arn:aws:iam::123456789012:role/job")
                    .state(state)
                    .state_details(details)
                    .release_label("emr-7.5.0")
                    .job_driver(JobDriver::SparkSubmit(
                        SparkSubmit::builder().entry_point("s3://b/als_job.py").build().unwrap(),
                    ))
                    .build()
                    .unwrap(),
            )
            .build()
    }

    /// A folder registry holding a `running` record started `minutes_ago`.
    async fn running(minutes_ago: i64) -> (tempfile::TempDir, RetrainOptions, JobRecord) {
        let dir = tempfile::tempdir().unwrap();
        let registry = dir.path().join("registry").display().to_string();
        let record = JobRecord {
            state: RecordState::Running,
            job_run_id: Some("00run".into()),
            application_id: "00app".into(),
            client_token: "t".into(),
            started_ms: recs_core::time::now_ms() - minutes_ago * 60_000,
            finished_ms: None,
            base_version: "v0.1".into(),
            base_snapshot: "s3://b/snap.csv".into(),
            version: None,
            snapshot_id: "ab".repeat(32),
            snapshot_uri: "s3://b/x.csv".into(),
            rows: 10,
            new_events: 1,
            holdout_rows: 1,
            defaulted: vec![],
            run_dir: "runs/1".into(),
            work: dir.path().join("work").display().to_string(),
            script_uri: "s3://b/als_job.py".into(),
            expected: Expected {
                rows: 9,
                positives: 5,
                users: 2,
                items: 3,
                rank: 4,
                train_sha256: String::new(),
                holdout_sha256: String::new(),
            },
            min_rating: 4.0,
            k: 10,
            gate_margin: 0.0,
            canary_percentage: 10.0,
            detail: None,
        };
        write_record(&registry, &record, None).await.unwrap();
        let opts = RetrainOptions::new(&registry, dir.path().join("events").display().to_string());
        (dir, opts, record)
    }

    fn cfg() -> EmrConfig {
        EmrConfig {
            max_run_minutes: 240,
            ..EmrConfig::new("00app", "arn:aws:iam::123456789012:role/job", "/nowhere")
        }
    }

    /// Only the record exists: no version, no latest.txt, no active.json.
    fn only_the_record(opts: &RetrainOptions) {
        let root = Path::new(&opts.registry);
        let mut names: Vec<String> = std::fs::read_dir(root)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        assert_eq!(names, vec![SPARK_JOBS_DIR.to_string()]);
    }

    #[tokio::test]
    async fn a_failed_job_run_is_recorded_with_emrs_reason_and_publishes_nothing() {
        let (_dir, opts, _) = running(30).await;
        let get = mock!(Client::get_job_run).then_output(|| {
            job_run(
                JobRunState::Failed,
                "Job failed: ExecutorLostFailure (OutOfMemory)",
            )
        });
        let emr = mock_client!(aws_sdk_emrserverless, RuleMode::MatchAny, [&get]);
        let e = step(&opts, 10.0, &cfg(), &emr).await.unwrap_err();
        assert!(matches!(e, EmrError::JobEnded { .. }), "{e:?}");
        assert!(e.to_string().contains("OutOfMemory"), "{e}");
        let (r, _) = read_record(&opts.registry).await.unwrap().unwrap();
        assert_eq!(r.state, RecordState::Failed);
        assert!(r.detail.unwrap().contains("OutOfMemory"));
        assert!(r.finished_ms.is_some());
        only_the_record(&opts);
        // The next step starts afresh (here: no snapshot to read), not from the failed job.
        let e = step(&opts, 10.0, &cfg(), &emr).await.unwrap_err();
        assert!(matches!(e, EmrError::Retrain(_)), "{e:?}");
        assert_eq!(get.num_calls(), 1);
    }

    #[tokio::test]
    async fn a_running_job_is_waited_for_and_the_record_is_left_alone() {
        let (_dir, opts, _) = running(30).await;
        let before = std::fs::read(Path::new(&opts.registry).join(record_key())).unwrap();
        let get = mock!(Client::get_job_run).then_output(|| job_run(JobRunState::Running, ""));
        let emr = mock_client!(aws_sdk_emrserverless, RuleMode::MatchAny, [&get]);
        for _ in 0..2 {
            match step(&opts, 10.0, &cfg(), &emr).await.unwrap() {
                Step::Waiting { state, record } => {
                    assert_eq!(state, "RUNNING");
                    assert_eq!(record.state, RecordState::Running);
                }
                other => panic!("{other:?}"),
            }
        }
        assert_eq!(
            std::fs::read(Path::new(&opts.registry).join(record_key())).unwrap(),
            before
        );
        only_the_record(&opts);
    }

    #[tokio::test]
    async fn a_job_stuck_past_the_limit_is_cancelled_and_recorded() {
        let (_dir, opts, _) = running(241).await;
        let get = mock!(Client::get_job_run).then_output(|| job_run(JobRunState::Pending, ""));
        let cancel = mock!(Client::cancel_job_run)
            .match_requests(|r| {
                r.job_run_id() == Some("00run") && r.application_id() == Some("00app")
            })
            .then_output(|| {
                CancelJobRunOutput::builder()
                    .application_id("00app")
                    .job_run_id("00run")
                    .build()
                    .unwrap()
            });
        let emr = mock_client!(aws_sdk_emrserverless, RuleMode::MatchAny, [&get, &cancel]);
        let e = step(&opts, 10.0, &cfg(), &emr).await.unwrap_err();
        assert!(
            matches!(
                e,
                EmrError::Stuck {
                    minutes: 241,
                    limit: 240,
                    ..
                }
            ),
            "{e:?}"
        );
        assert_eq!(cancel.num_calls(), 1);
        let (r, _) = read_record(&opts.registry).await.unwrap().unwrap();
        assert_eq!(r.state, RecordState::Cancelled);
        assert!(r.detail.unwrap().contains("PENDING after 241 minutes"));
        only_the_record(&opts);
    }

    #[tokio::test]
    async fn an_api_outage_leaves_the_record_as_it_was() {
        let (_dir, opts, _) = running(30).await;
        let before = std::fs::read(Path::new(&opts.registry).join(record_key())).unwrap();
        let get = mock!(Client::get_job_run)
            .then_http_response(|| http(503, "{\"message\":\"Service Unavailable\"}"));
        let emr = mock_client!(aws_sdk_emrserverless, RuleMode::MatchAny, [&get]);
        let e = step(&opts, 10.0, &cfg(), &emr).await.unwrap_err();
        assert!(
            matches!(
                e,
                EmrError::Api {
                    call: "GetJobRun",
                    ..
                }
            ),
            "{e:?}"
        );
        assert_eq!(
            std::fs::read(Path::new(&opts.registry).join(record_key())).unwrap(),
            before
        );
    }

    #[tokio::test]
    async fn a_refused_start_job_run_is_recorded_and_nothing_runs() {
        let (_dir, opts) = starting(0).await;
        let start = mock!(Client::start_job_run)
            .match_requests(|r| r.client_token() == Some("t"))
            .then_http_response(|| {
                http(
                    400,
                    "{\"message\":\"Application 00app is in TERMINATED state\"}",
                )
            });
        let list = mock!(Client::list_job_runs).then_output(|| listed(&[]));
        let emr = mock_client!(aws_sdk_emrserverless, RuleMode::MatchAny, [&start, &list]);
        start_job_run_fails(&opts, &emr).await;
        assert_eq!(start.num_calls(), 1);
        let (r, _) = read_record(&opts.registry).await.unwrap().unwrap();
        assert_eq!((r.state, r.job_run_id), (RecordState::Failed, None));
        assert!(r.detail.unwrap().contains("StartJobRun"));
        only_the_record(&opts);
    }

    /// ListJobRuns' answer: runs `(id, name)` of application 00app.
    fn listed(runs: &[(&str, &str)]) -> ListJobRunsOutput {
        let t = aws_smithy_types::DateTime::from_secs(1_795_824_000);
        ListJobRunsOutput::builder()
            .set_job_runs(Some(
                runs.iter()
                    .map(|(id, name)| {
                        JobRunSummary::builder()
                            .application_id("00app")
                            .id(*id)
                            .name(*name)
                            .arn(format!("arn:aws:emr-serverless:us-east-1:123456789012:/applications/00app/jobruns/{id}"))
                            .created_by("arn:aws:sts::123456789012:assumed-role/retrain/x")
                            .created_at(t)
                            .updated_at(t)
                            .execution_role("arn:aws:iam::123456789012:role/job")
                            .state(JobRunState::Running)
                            .state_details("")
                            .release_label("emr-7.5.0")
                            .build()
                            .unwrap()
                    })
                    .collect(),
            ))
            .build()
            .unwrap()
    }

    /// A folder registry holding a `starting` record (StartJobRun not yet answered)
    /// recorded `minutes_ago`.
    async fn starting(minutes_ago: i64) -> (tempfile::TempDir, RetrainOptions) {
        let (dir, opts, mut record) = running(minutes_ago).await;
        record.state = RecordState::Starting;
        record.job_run_id = None;
        let (_, etag) = read_record(&opts.registry).await.unwrap().unwrap();
        write_record(&opts.registry, &record, Some(&etag))
            .await
            .unwrap();
        (dir, opts)
    }

    /// An HTTP answer of `status` with `body`.
    fn http(status: u16, body: &'static str) -> aws_smithy_runtime_api::http::Response {
        aws_smithy_runtime_api::http::Response::new(
            aws_smithy_runtime_api::http::StatusCode::try_from(status).unwrap(),
            aws_smithy_types::body::SdkBody::from(body),
        )
    }

    /// A step fails on StartJobRun.
    async fn start_job_run_fails(opts: &RetrainOptions, emr: &Client) {
        let e = step(opts, 10.0, &cfg(), emr).await.unwrap_err();
        assert!(
            matches!(
                e,
                EmrError::Api {
                    call: "StartJobRun",
                    ..
                }
            ),
            "{e:?}"
        );
    }

    /// The record says `running` with job run `id`.
    async fn assert_running(opts: &RetrainOptions, id: &str) {
        let (r, _) = read_record(&opts.registry).await.unwrap().unwrap();
        assert_eq!(
            (r.state, r.job_run_id.as_deref()),
            (RecordState::Running, Some(id))
        );
    }

    #[tokio::test]
    async fn an_unanswered_start_is_kept_and_the_run_it_started_is_found_by_name() {
        let (_dir, opts) = starting(0).await;
        // EMR answers 500: it may or may not have started the run.
        let start = mock!(Client::start_job_run)
            .match_requests(|r| {
                r.client_token() == Some("t") && r.name() == Some("movie-recs-als-t")
            })
            .then_http_response(|| http(500, "{\"message\":\"Internal error\"}"));
        let none =
            mock!(Client::list_job_runs).then_output(|| listed(&[("00other", "movie-recs-als-u")]));
        let emr = mock_client!(aws_sdk_emrserverless, RuleMode::MatchAny, [&start, &none]);
        start_job_run_fails(&opts, &emr).await;
        assert!(start.num_calls() >= 1);
        let (r, _) = read_record(&opts.registry).await.unwrap().unwrap();
        assert_eq!(
            (r.state, r.job_run_id.as_deref(), r.client_token.as_str()),
            (RecordState::Starting, None, "t")
        );
        assert!(r.detail.unwrap().contains("unanswered"));
        only_the_record(&opts);

        // The next step finds the run EMR did start, and starts nothing.
        let list = mock!(Client::list_job_runs)
            .match_requests(|r| r.application_id() == Some("00app"))
            .then_output(|| {
                listed(&[
                    ("00other", "movie-recs-als-u"),
                    ("00run", "movie-recs-als-t"),
                ])
            });
        let start = mock!(Client::start_job_run).then_http_response(|| http(500, "{}"));
        let emr = mock_client!(aws_sdk_emrserverless, RuleMode::MatchAny, [&list, &start]);
        match step(&opts, 10.0, &cfg(), &emr).await.unwrap() {
            Step::Started(r) => assert_eq!(r.job_run_id.as_deref(), Some("00run")),
            other => panic!("{other:?}"),
        }
        assert_eq!((list.num_calls(), start.num_calls()), (1, 0));
        assert_running(&opts, "00run").await;
    }

    #[tokio::test]
    async fn an_unanswered_start_not_found_is_retried_with_the_same_token() {
        let (_dir, opts) = starting(5).await;
        let list = mock!(Client::list_job_runs).then_output(|| listed(&[]));
        let start = mock!(Client::start_job_run)
            .match_requests(|r| r.client_token() == Some("t"))
            .then_output(|| {
                StartJobRunOutput::builder()
                    .application_id("00app")
                    .job_run_id("00run2")
                    .arn("arn:aws:emr-serverless:us-east-1:123456789012:/applications/00app/jobruns/00run2")
                    .build()
                    .unwrap()
            });
        let emr = mock_client!(aws_sdk_emrserverless, RuleMode::MatchAny, [&list, &start]);
        assert!(matches!(
            step(&opts, 10.0, &cfg(), &emr).await.unwrap(),
            Step::Started(_)
        ));
        assert_eq!((list.num_calls(), start.num_calls()), (1, 1));
        assert_running(&opts, "00run2").await;
    }

    #[tokio::test]
    async fn an_unanswered_start_past_the_limit_is_recorded_failed_without_starting() {
        let (_dir, opts) = starting(241).await;
        let list = mock!(Client::list_job_runs).then_output(|| listed(&[]));
        let start = mock!(Client::start_job_run).then_http_response(|| http(500, "{}"));
        let emr = mock_client!(aws_sdk_emrserverless, RuleMode::MatchAny, [&list, &start]);
        let e = step(&opts, 10.0, &cfg(), &emr).await.unwrap_err();
        assert!(e.to_string().contains("not started"), "{e}");
        assert_eq!(start.num_calls(), 0);
        let (r, _) = read_record(&opts.registry).await.unwrap().unwrap();
        assert_eq!(r.state, RecordState::Failed);
        assert!(r.finished_ms.is_some());
        only_the_record(&opts);
    }

    /// A step that published and stopped before recording it: the next one finds its
    /// version (by the snapshot id) and only starts the canary.
    #[tokio::test]
    async fn an_import_interrupted_after_publishing_only_starts_the_canary() {
        let (_dir, opts, mut record) = running(10).await;
        let registry = Registry::open(&opts.registry).unwrap();
        let data = crate::gen_data::generate(&crate::gen_data::GenConfig {
            users: 60,
            items: 40,
            ..Default::default()
        });
        registry
            .publish("v0.1", &data.planted_artifacts())
            .await
            .unwrap();
        let mut ours = data.planted_artifacts();
        ours.version_fields
            .insert("data_snapshot_id".into(), record.snapshot_id.clone().into());
        registry.publish("v0.2", &ours).await.unwrap();
        record.state = RecordState::Importing;
        record.version = Some("v0.2".into());
        let (_, etag) = read_record(&opts.registry).await.unwrap().unwrap();
        write_record(&opts.registry, &record, Some(&etag))
            .await
            .unwrap();
        let emr = mock_client!(aws_sdk_emrserverless, RuleMode::MatchAny, []);
        match step(&opts, 25.0, &cfg(), &emr).await.unwrap() {
            Step::Finished {
                record,
                report: None,
                canary: Canary::Started { version, state },
            } => {
                assert_eq!(version, "v0.2");
                assert_eq!(record.state, RecordState::Published);
                assert_eq!(state.active_version, "v0.1");
            }
            other => panic!("{other:?}"),
        }
        let active: Value = serde_json::from_slice(
            &std::fs::read(Path::new(&opts.registry).join("active.json")).unwrap(),
        )
        .unwrap();
        assert_eq!(active["rollout"]["canary_version"], "v0.2");
        assert_eq!(active["rollout"]["canary_percentage"].as_f64(), Some(10.0));
        assert_eq!(registry.versions().await.unwrap(), vec!["v0.1", "v0.2"]);
    }

    #[tokio::test]
    async fn a_record_written_by_something_else_is_a_clear_error() {
        let (_dir, opts, _) = running(1).await;
        std::fs::write(
            Path::new(&opts.registry).join(record_key()),
            b"{\"state\": \"fine\"}",
        )
        .unwrap();
        let emr = mock_client!(aws_sdk_emrserverless, RuleMode::MatchAny, []);
        let e = step(&opts, 10.0, &cfg(), &emr).await.unwrap_err();
        assert!(matches!(e, EmrError::BadRecord { .. }), "{e:?}");
        assert!(e.to_string().contains("spark-jobs/current.json"), "{e}");
    }

    #[test]
    fn short_or_odd_ids_are_never_sliced_past_their_end() {
        assert_eq!(prefix("abcdef", 4), "abcd");
        assert_eq!(prefix("ab", 12), "ab");
        assert_eq!(prefix("é", 1), "é");
    }

    #[test]
    fn output_keys_stay_under_their_folder() {
        assert!(safe_relative("model/userFactors/part-0.parquet").is_some());
        for bad in ["", "../x", "model/../../etc/passwd", "/abs", "model//../x"] {
            assert!(safe_relative(bad).is_none(), "{bad:?}");
        }
    }

    #[test]
    fn terminal_states_let_a_new_retrain_start() {
        use RecordState::*;
        for s in [Published, Refused, Failed, Cancelled] {
            assert!(s.is_terminal());
        }
        for s in [Starting, Running, Importing] {
            assert!(!s.is_terminal());
        }
    }
}
