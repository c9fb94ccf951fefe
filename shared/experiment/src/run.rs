//! One analysis of the experiment in force: which versions, which windows, the
//! data read, the analysis and the rule's decision. The API routes and the CLI
//! both call [`run`].

use recs_core::active::{Rollout, Strategy};
use recs_core::{Store, StoreError};
use serde::Serialize;

use crate::{analyze, decide, read_exposures, Analysis, AnalyzeParams, Decision, PromoteRule};

/// The rollout does not split traffic between two versions.
#[derive(Debug, thiserror::Error)]
#[error("not in an A/B test or canary: the strategy is {strategy}{}", .canary.as_deref().map(|c| format!(" (canary {c})")).unwrap_or_default())]
pub struct NotAnExperiment {
    /// The strategy in force.
    pub strategy: &'static str,
    /// Its canary version, if any.
    pub canary: Option<String>,
}

/// Why an analysis could not run.
#[derive(Debug, thiserror::Error)]
pub enum ExperimentError {
    /// Nothing to analyze.
    #[error(transparent)]
    NotAnExperiment(#[from] NotAnExperiment),
    /// The events location could not be read.
    #[error("events: {0}")]
    Events(#[from] StoreError),
}

/// The versions under test.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Experiment {
    /// `ab_test` or `canary`.
    pub strategy: &'static str,
    /// A: the active version.
    pub variant_a: String,
    /// B: the rollout's canary version.
    pub variant_b: String,
    /// Share of users configured for B, percent.
    pub percentage_b: f64,
}

impl Experiment {
    /// The experiment of an A/B test or canary rollout over `active`.
    pub fn of(active: &str, rollout: &Rollout) -> Result<Experiment, NotAnExperiment> {
        match (rollout.strategy, &rollout.canary_version) {
            (Strategy::AbTest | Strategy::Canary, Some(b)) if b != active => Ok(Experiment {
                strategy: rollout.strategy.name(),
                variant_a: active.to_string(),
                variant_b: b.clone(),
                percentage_b: rollout.canary_percentage,
            }),
            _ => Err(NotAnExperiment {
                strategy: rollout.strategy.name(),
                canary: rollout.canary_version.clone(),
            }),
        }
    }
}

/// What to read and how to judge it.
#[derive(Debug, Clone)]
pub struct RunParams {
    /// Exposures of the last this many minutes are analyzed.
    pub window_minutes: u64,
    /// Conversion window after each exposure, minutes (default 24 h).
    pub conversion_minutes: u64,
    /// The promotion rule.
    pub rule: PromoteRule,
}

/// Counts of what was read.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct DataRead {
    /// Exposure files and records read.
    pub exposure_files: u64,
    /// Exposure records in the window.
    pub exposures: u64,
    /// Exposure lines that were not a record.
    pub exposures_malformed: u64,
    /// Watch and rate events read (from the window's start to now).
    pub events: u64,
    /// Event lines that did not parse.
    pub events_malformed: u64,
}

/// One analysis: the experiment, the windows, the data, the numbers and the rule.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Report {
    /// The versions under test.
    pub experiment: Experiment,
    /// The analysis window, minutes, ending at `end`.
    pub time_window_minutes: u64,
    /// Conversion window, minutes.
    pub conversion_window_minutes: u64,
    /// Window start, RFC 3339.
    pub start: String,
    /// Window end (now), RFC 3339.
    pub end: String,
    /// What was read.
    pub data: DataRead,
    /// Per-variant numbers and the tests.
    pub analysis: Analysis,
    /// The promotion rule's answer.
    pub decision: Decision,
}

/// Reads the exposures of the window ending at `now_ms` and the watch/rate events
/// from its start to `now_ms` under `events`, and analyzes the experiment.
pub async fn run(
    events: &Store,
    experiment: Experiment,
    now_ms: i64,
    p: &RunParams,
) -> Result<Report, ExperimentError> {
    let window_ms = i64::try_from(p.window_minutes.saturating_mul(60_000)).unwrap_or(i64::MAX);
    let start_ms = now_ms.saturating_sub(window_ms);
    let (exposures, xstats) = read_exposures(events, start_ms, now_ms).await?;
    let seconds = p.window_minutes.saturating_mul(60);
    let (watch_rate, estats) =
        recs_drift::read_window(events, recs_drift::Window::ending(now_ms, seconds)).await?;
    let params = AnalyzeParams {
        version_a: experiment.variant_a.clone(),
        version_b: experiment.variant_b.clone(),
        expected_share_b: experiment.percentage_b / 100.0,
        conversion_window_ms: i64::try_from(p.conversion_minutes.saturating_mul(60_000))
            .unwrap_or(i64::MAX),
        max_exposures_per_user: crate::analysis::MAX_EXPOSURES_PER_USER,
    };
    let analysis = analyze(&exposures, &watch_rate, &params);
    let decision = decide(&analysis, &p.rule);
    let secs = |ms: i64| recs_core::time::rfc3339(ms.max(0) as u64 / 1000);
    Ok(Report {
        experiment,
        time_window_minutes: p.window_minutes,
        conversion_window_minutes: p.conversion_minutes,
        start: secs(start_ms),
        end: secs(now_ms),
        data: DataRead {
            exposure_files: xstats.files,
            exposures: exposures.len() as u64,
            exposures_malformed: xstats.malformed,
            events: watch_rate.len() as u64,
            events_malformed: estats.malformed,
        },
        analysis,
        decision,
    })
}
