//! `GET /experiment/analyze` and `POST /experiment/promote` (the Python service's
//! routes and parameters): the exposure log joined with watch/rate events, per
//! variant, and a promotion that is a verified switch. Also `GET /trace/{request_id}`,
//! which falls back to the same exposure log.

use std::sync::Arc;

use axum::extract::State;
use http::Uri;
use serde_json::json;

use super::{ok_json, param, query, ApiError, ErrorKind, Reply};
use crate::state::Service;
use recs_core::Store;
use recs_experiment::{Experiment, ExperimentError, PromoteRule, Report, RunParams};

/// A bounded number from the query string, or its default.
fn number(
    params: &[(String, String)],
    name: &str,
    default: f64,
    range: std::ops::RangeInclusive<f64>,
) -> Result<f64, ApiError> {
    let Some(raw) = param(params, name)? else {
        return Ok(default);
    };
    match raw.parse::<f64>() {
        Ok(v) if v.is_finite() && range.contains(&v) => Ok(v),
        _ => Err(ApiError::invalid(format!(
            "{name} must be a number in {}..={}, got {raw:?}",
            range.start(),
            range.end()
        ))),
    }
}

fn whole(params: &[(String, String)], name: &str, default: u64, max: u64) -> Result<u64, ApiError> {
    let Some(raw) = param(params, name)? else {
        return Ok(default);
    };
    match raw.parse::<u64>() {
        Ok(v) if (1..=max).contains(&v) => Ok(v),
        _ => Err(ApiError::invalid(format!(
            "{name} must be an integer in 1..={max}, got {raw:?}"
        ))),
    }
}

/// The analysis the request asks for, on this instance's view of the rollout.
async fn report(svc: &Service, params: &[(String, String)]) -> Result<Report, ApiError> {
    let window_minutes = whole(params, "time_window_minutes", 60, 60 * 24 * 90)?;
    let conversion_minutes = whole(params, "conversion_window_minutes", 24 * 60, 60 * 24 * 30)?;
    let defaults = PromoteRule::default();
    let rule = PromoteRule {
        max_latency_regression_pct: number(
            params,
            "max_latency_regression_pct",
            defaults.max_latency_regression_pct,
            0.0..=1000.0,
        )?,
        min_exposures: whole(params, "min_exposures", defaults.min_exposures, 1 << 40)?,
        ..defaults
    };
    let served = svc.served();
    let active = match &served.primary {
        Ok(m) => m.version.clone(),
        Err(reason) => {
            return Err(ApiError::new(
                ErrorKind::ModelUnavailable,
                format!("no model is being served: {reason}"),
            ))
        }
    };
    let experiment = Experiment::of(&active, &served.rollout)
        .map_err(|e| ApiError::new(ErrorKind::NotInExperiment, e.to_string()))?;
    let unavailable = |detail: String| ApiError::new(ErrorKind::EventsUnavailable, detail);
    let location = svc.config.events.as_deref().ok_or_else(|| {
        unavailable("no events location: set EVENTS to the folder or s3:// prefix holding the exposure log and watch/rate events".into())
    })?;
    let store = Store::open(location).map_err(|e| unavailable(e.to_string()))?;
    // This process's latest exposures belong in the analysis too.
    svc.exposures.flush().await;
    let run = RunParams {
        window_minutes,
        conversion_minutes,
        rule,
    };
    recs_experiment::run(&store, experiment, recs_core::time::now_ms(), &run)
        .await
        .map_err(|e| match e {
            ExperimentError::NotAnExperiment(e) => {
                ApiError::new(ErrorKind::NotInExperiment, e.to_string())
            }
            ExperimentError::Events(e) => unavailable(e.to_string()),
        })
}

pub(super) async fn analyze(State(svc): State<Arc<Service>>, uri: Uri) -> Result<Reply, ApiError> {
    let params = query(&uri);
    let r = report(&svc, &params).await?;
    Ok(ok_json(serde_json::to_value(&r).map_err(|e| {
        ApiError::new(ErrorKind::Internal, e.to_string())
    })?))
}

pub(super) async fn promote(State(svc): State<Arc<Service>>, uri: Uri) -> Result<Reply, ApiError> {
    let params = query(&uri);
    let dry_run = match param(&params, "dry_run")? {
        None | Some("true" | "1") => true,
        Some("false" | "0") => false,
        Some(other) => {
            return Err(ApiError::invalid(format!(
                "dry_run must be true or false, got {other:?}"
            )))
        }
    };
    let r = report(&svc, &params).await?;
    let target = r.experiment.variant_b.clone();
    let decision = r.decision.clone();
    let switch_result = if decision.promote && !dry_run {
        let done = svc.promote(&target).await?;
        Some(json!({
            "previous_version": done.previous_version,
            "new_version": done.model.version,
        }))
    } else {
        None
    };
    Ok(ok_json(json!({
        "promoted": switch_result.is_some(),
        "dry_run": dry_run,
        "would_promote": decision.promote,
        "reason": decision.reason,
        "action": decision.action,
        "target_version": target,
        "switch_result": switch_result,
        "analysis": r,
    })))
}

/// How far back `/trace` searches the exposure log unless `lookback_minutes` says.
const TRACE_LOOKBACK_MINUTES: u64 = 60;

/// `GET /trace/{request_id}`: this process's recent answers first (in memory), then
/// the exposure log of the last `lookback_minutes` (default 60) under `EVENTS`, which
/// holds every instance's answers (on Lambda, what Firehose delivered: about a
/// minute behind). The Python service's shape; 404 `not found` otherwise.
pub(super) async fn trace(State(svc): State<Arc<Service>>, uri: Uri) -> Result<Reply, ApiError> {
    let request_id = uri.path().strip_prefix("/trace/").unwrap_or("");
    let params = query(&uri);
    let lookback = whole(
        params.as_slice(),
        "lookback_minutes",
        TRACE_LOOKBACK_MINUTES,
        24 * 60,
    )?;
    if let Some(trace) = svc.traces.get(request_id) {
        return Ok(ok_json(
            json!({"request_id": request_id, "trace": trace.to_json()}),
        ));
    }
    let not_found = || ApiError::new(ErrorKind::NotFound, "not found");
    let Some(location) = svc.config.events.as_deref() else {
        return Err(not_found());
    };
    let store = Store::open(location)
        .map_err(|e| ApiError::new(ErrorKind::EventsUnavailable, e.to_string()))?;
    svc.exposures.flush().await;
    let now = recs_core::time::now_ms();
    let start = now.saturating_sub((lookback * 60_000) as i64);
    let (exposures, _) = recs_experiment::read_exposures(&store, start, now.saturating_add(1))
        .await
        .map_err(|e| ApiError::new(ErrorKind::EventsUnavailable, e.to_string()))?;
    let Some(x) = exposures
        .into_iter()
        .rev()
        .find(|x| x.request_id == request_id)
    else {
        return Err(not_found());
    };
    Ok(ok_json(json!({
        "request_id": request_id,
        "trace": {
            "user_id": x.user_id,
            "k": x.k,
            "model_version": x.model_version,
            "model_name": x.model_name,
            "git_sha": x.git_sha,
            "data_snapshot_id": x.data_snapshot_id,
            "latency_ms": x.latency_ms,
            "latency_ms_precise": x.latency_ms_precise,
            "status": x.status,
            "ts": x.ts,
            "movie_ids": x.movie_ids,
            "variant": x.variant,
            "source": "exposure_log",
        }
    })))
}
