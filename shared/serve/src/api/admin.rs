//! The model-management routes: `/switch`, `/rollout/status`, `/rollout/update`,
//! and `/healthz`'s view of the rollout.

use std::sync::Arc;

use axum::extract::State;
use bytes::Bytes;
use http::{Method, Uri};
use serde_json::{json, Value};

use super::{ok_json, query, ApiError, ErrorKind, Reply};
use crate::control::RolloutPatch;
use crate::state::Service;

/// Parameters from the query string and, for POST, a JSON object body (body wins).
fn inputs(method: &Method, uri: &Uri, body: &[u8]) -> Result<Vec<(String, Value)>, ApiError> {
    let mut out: Vec<(String, Value)> = query(uri)
        .into_iter()
        .map(|(k, v)| (k, Value::String(v)))
        .collect();
    if method == Method::POST && !body.is_empty() {
        let body: Value = serde_json::from_slice(body)
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

pub(super) async fn switch(
    State(svc): State<Arc<Service>>,
    method: Method,
    uri: Uri,
    body: Bytes,
) -> Result<Reply, ApiError> {
    let inputs = inputs(&method, &uri, &body)?;
    let version = text_input(&inputs, "model")?
        .filter(|v| !v.is_empty())
        .ok_or_else(|| {
            ApiError::new(
                ErrorKind::InvalidModel,
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

/// `GET /rollout/status`: what this instance serves (`rollout`, `active_version`,
/// `previous_version`, `canary_loaded`, `served`) and, separately, the registry's
/// active.json (`active_json`), which every instance converges on: a rollback target
/// is read from the latter.
pub(super) async fn rollout_status(State(svc): State<Arc<Service>>) -> Reply {
    let served = svc.served();
    let active_json = match svc.active_state().await {
        Ok(Some(state)) => json!({
            "active_version": state.active_version,
            "previous_version": state.previous_version,
            "rollout": state.rollout,
            "revision": state.revision,
        }),
        Ok(None) => Value::Null,
        Err(reason) => json!({"error": reason}),
    };
    ok_json(json!({
        "rollout": super::rollout_json(&svc),
        "active_version": served.primary.as_ref().ok().map(|m| m.version.clone()),
        "previous_version": served.previous_version,
        "canary_loaded": served.canary.as_ref().map(|m| m.version.clone()),
        "served": super::served_json(&svc),
        "active_json": active_json,
    }))
}

pub(super) async fn rollout_update(
    State(svc): State<Arc<Service>>,
    method: Method,
    uri: Uri,
    body: Bytes,
) -> Result<Reply, ApiError> {
    let inputs = inputs(&method, &uri, &body)?;
    let patch = RolloutPatch::from_fields(inputs).map_err(|e| ApiError::invalid(e.to_string()))?;
    let state = svc.update_rollout(patch).await?;
    Ok(ok_json(json!({
        "status": "ok",
        "rollout": super::rollout_json(&svc),
        "revision": state.revision,
    })))
}
