//! The model-management routes: `/switch`, `/rollout/status`, `/rollout/update`,
//! and `/healthz`'s view of the rollout.

use bytes::Bytes;
use http::{Method, Request, StatusCode};
use serde_json::{json, Value};

use super::error::ApiError;
use super::{ok_json, query, Reply, MAX_BODY};
use crate::control::RolloutPatch;
use crate::state::Service;
use recs_core::active::Strategy;

/// Parameters from the query string and, for POST, a JSON object body (body wins).
fn inputs(req: &Request<Bytes>) -> Result<Vec<(String, Value)>, ApiError> {
    let mut out: Vec<(String, Value)> = query(req)
        .into_iter()
        .map(|(k, v)| (k, Value::String(v)))
        .collect();
    if req.method() == Method::POST && !req.body().is_empty() {
        if req.body().len() > MAX_BODY {
            return Err(ApiError::invalid(format!("body over {MAX_BODY} bytes")));
        }
        let body: Value = serde_json::from_slice(req.body())
            .map_err(|e| ApiError::invalid(format!("body is not JSON: {e}")))?;
        let Value::Object(map) = body else {
            return Err(ApiError::invalid("body must be a JSON object"));
        };
        out.retain(|(k, _)| !map.contains_key(k));
        out.extend(map);
    }
    Ok(out)
}

fn text_input<'a>(inputs: &'a [(String, Value)], name: &str) -> Result<Option<&'a str>, ApiError> {
    match inputs.iter().find(|(k, _)| k == name).map(|(_, v)| v) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s)),
        Some(other) => Err(ApiError::invalid(format!(
            "{name} must be a string, got {other}"
        ))),
    }
}

pub(super) async fn switch(svc: &Service, req: &Request<Bytes>) -> Result<Reply, ApiError> {
    let inputs = inputs(req)?;
    let version = text_input(&inputs, "model")?
        .filter(|v| !v.is_empty())
        .ok_or_else(|| {
            ApiError::new(
                StatusCode::BAD_REQUEST,
                "invalid_model",
                "model is required, e.g. ?model=v0.2",
            )
        })?;
    let done = svc.switch(version).await?;
    let m = &done.model;
    Ok(ok_json(json!({
        "status": "ok",
        "model_name": m.meta.model_name,
        "model_version": m.version,
        "previous_version": done.previous_version,
        "meta": {"model": m.model_meta, "version": m.meta.raw},
        "revision": done.state.revision,
    })))
}

pub(super) fn rollout_status(svc: &Service) -> Reply {
    let served = svc.served();
    ok_json(json!({
        "rollout": super::rollout_json(svc),
        "active_version": served.primary.as_ref().ok().map(|m| m.version.clone()),
        "previous_version": served.previous_version,
        "canary_loaded": served.canary.as_ref().map(|m| m.version.clone()),
    }))
}

pub(super) async fn rollout_update(svc: &Service, req: &Request<Bytes>) -> Result<Reply, ApiError> {
    let inputs = inputs(req)?;
    for (k, _) in &inputs {
        if !["strategy", "canary_version", "canary_percentage", "salt"].contains(&k.as_str()) {
            return Err(ApiError::invalid(format!("unknown field {k}")));
        }
    }
    let strategy = text_input(&inputs, "strategy")?
        .map(|s| {
            Strategy::parse(s).ok_or_else(|| {
                ApiError::invalid(format!(
                    "strategy must be fixed, canary, ab_test or shadow, got {s:?}"
                ))
            })
        })
        .transpose()?;
    let canary_version = match inputs
        .iter()
        .find(|(k, _)| k == "canary_version")
        .map(|(_, v)| v)
    {
        None => None,
        Some(Value::Null) => Some(None),
        Some(Value::String(s)) if s.is_empty() || s == "none" => Some(None),
        Some(Value::String(s)) => Some(Some(s.clone())),
        Some(other) => {
            return Err(ApiError::invalid(format!(
                "canary_version must be a string, got {other}"
            )))
        }
    };
    let canary_percentage = match inputs
        .iter()
        .find(|(k, _)| k == "canary_percentage")
        .map(|(_, v)| v)
    {
        None => None,
        Some(Value::Number(n)) => n.as_f64(),
        Some(Value::String(s)) => Some(s.parse::<f64>().map_err(|_| {
            ApiError::invalid(format!("canary_percentage must be a number, got {s:?}"))
        })?),
        Some(other) => {
            return Err(ApiError::invalid(format!(
                "canary_percentage must be a number, got {other}"
            )))
        }
    };
    let salt = text_input(&inputs, "salt")?.map(str::to_string);
    let patch = RolloutPatch {
        strategy,
        canary_version,
        canary_percentage,
        salt,
    };
    let state = svc.update_rollout(patch).await?;
    Ok(ok_json(json!({
        "status": "ok",
        "rollout": super::rollout_json(svc),
        "revision": state.revision,
    })))
}
