//! `recs retrain`: the runbook's "trigger manual retrain". The job is
//! `recs_train::retrain` (snapshot + events -> new snapshot -> gated version); this
//! module adds the progress lines and the summary table. The loop itself (retrain,
//! then the published version as a canary through `recs_control::update_rollout`,
//! like `recs rollout update`) is `recs_train::retrain::retrain_then_canary`, which
//! the `retrain` Lambda function runs too.

use std::path::PathBuf;

use anyhow::{bail, Context, Result};

use recs_train::retrain::{self, Canary, RetrainOptions};

/// `recs retrain`.
#[derive(Debug, Clone, clap::Args)]
pub struct RetrainArgs {
    /// Set from the global `--registry` (before or after the subcommand).
    #[arg(skip)]
    pub registry: String,
    /// Rate events since the snapshot, in the Python team's layout (folder or s3://).
    #[arg(long, env = "EVENTS")]
    pub events: String,
    /// Where to write the new snapshot (default: beside the current version's).
    #[arg(long, env = "RETRAIN_SNAPSHOTS")]
    pub snapshots: Option<String>,
    /// Retrain from this version (default: the served one).
    #[arg(long)]
    pub base_version: Option<String>,
    /// Name of the new version (default: the next vX.Y).
    #[arg(long)]
    pub version: Option<String>,
    /// Read events up to this instant: RFC 3339 or epoch (default: now).
    #[arg(long)]
    pub until: Option<String>,
    /// The latest share of rows (by time) held out to evaluate and gate on.
    #[arg(long, default_value_t = 0.1)]
    pub holdout: f64,
    /// Cut-off of NDCG.
    #[arg(long, default_value_t = 10)]
    pub k: usize,
    /// How far below the current version's NDCG the new one may be (0: not worse).
    #[arg(long, default_value_t = 0.0)]
    pub gate_margin: f64,
    /// Share of users the new version gets as a canary, 0-100.
    #[arg(long, env = "RETRAIN_CANARY_PERCENTAGE", default_value_t = 10.0)]
    pub canary_percentage: f64,
    /// Worker threads (0: one per core).
    #[arg(long, default_value_t = 0)]
    pub threads: usize,
    /// Scratch folder for the train and holdout files (default: a temporary one).
    #[arg(long)]
    pub work_dir: Option<PathBuf>,
    /// Re-tune the hyper-parameters (`recs tune`'s search on a seeded 10 % of the new
    /// TRAIN) instead of reusing the current version's.
    #[arg(long)]
    pub tune: bool,
    /// Also re-tune when this many retrains (this one included) have run since the
    /// last tuned version (0: only with --tune).
    #[arg(long, env = "RETUNE_EVERY", default_value_t = 0)]
    pub retune_every: usize,
    /// The search's wall-time budget, seconds.
    #[arg(long, env = "RETUNE_BUDGET_SECONDS", default_value_t = recs_train::tune::DEFAULT_BUDGET_SECONDS)]
    pub tune_budget_seconds: u64,
    /// The search's trials.
    #[arg(long, default_value_t = recs_train::tune::DEFAULT_TRIALS)]
    pub tune_trials: usize,
    /// Print the report as JSON instead of the table.
    #[arg(long)]
    pub json: bool,
}

/// Runs the retrain; fails (non-zero exit, nothing published, nothing switched) when
/// the data is empty or the gate refuses.
pub async fn run(a: RetrainArgs) -> Result<()> {
    recs_control::check_canary_percentage(a.canary_percentage).context("--canary-percentage")?;
    if a.tune_budget_seconds == 0 || a.tune_trials == 0 {
        bail!("--tune-budget-seconds and --tune-trials must be at least 1");
    }
    let until_ms = crate::drift_cmd::parse_until(a.until.as_deref())?;
    let opts = RetrainOptions {
        snapshots: a.snapshots.clone(),
        base_version: a.base_version.clone(),
        version: a.version.clone(),
        until_ms,
        holdout_fraction: a.holdout,
        k: a.k,
        gate_margin: a.gate_margin,
        threads: a.threads,
        work_dir: a.work_dir.clone(),
        progress: !a.json,
        tune: a.tune,
        retune_every: a.retune_every,
        tune_budget_seconds: a.tune_budget_seconds,
        tune_trials: a.tune_trials,
        ..RetrainOptions::new(&a.registry, &a.events)
    };
    eprintln!(
        "retrain: {} (served version's snapshot) + rate events under {} up to {}",
        a.base_version.as_deref().unwrap_or("the served version"),
        a.events,
        recs_core::time::rfc3339((until_ms / 1000).max(0) as u64)
    );
    let done = retrain::retrain_then_canary(&opts, a.canary_percentage)
        .await
        .context("retrain refused or failed; nothing published, nothing switched")?;
    let report = &done.report;
    if let Some(t) = &report.tuned {
        eprintln!(
            "retrain: re-tuned ({} trials, {:.0} s): {}",
            t["trials_run"],
            t["search_seconds"].as_f64().unwrap_or(0.0),
            t["best_params"]
        );
    }
    eprintln!(
        "retrain: {} new rate events, snapshot {} ({} rows), trained and gated: {}",
        report.new_events,
        report.snapshot_uri,
        report.rows,
        report.decision()
    );
    let rollout = match done.canary {
        Canary::Refused => None,
        Canary::Started { version, state } => Some(format!(
            "canary {version} at {}% (active {})",
            a.canary_percentage, state.active_version
        )),
        Canary::Failed { version, error } => {
            return Err(anyhow::Error::new(error).context(format!(
                "{version} was published, but starting its canary failed"
            )))
        }
    };
    if a.json {
        let mut j = report.to_json();
        j["rollout"] = serde_json::json!(rollout);
        println!("{}", serde_json::to_string_pretty(&j)?);
    } else {
        print!("{}", report.table(rollout.as_deref().unwrap_or("none")));
    }
    if let (false, Some(v)) = (report.train.refused(), &report.train.published) {
        // Publishing is not switching: say what is served and how to go further.
        eprintln!(
            "served: {} to {}% of users, {v} to {}% (canary); to switch everyone: recs switch --registry {} {v}",
            report.base_version,
            100.0 - a.canary_percentage,
            a.canary_percentage,
            a.registry
        );
    }
    if report.train.refused() {
        bail!(
            "the gate refused the retrained model (nothing published, nothing switched): {}",
            report.train.gate.reasons()
        );
    }
    Ok(())
}
