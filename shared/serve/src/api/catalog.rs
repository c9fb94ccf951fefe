//! The takedown routes (admin): `POST /catalog/block`, `POST /catalog/unblock`,
//! `GET /catalog/blocked`. The blocked set lives in the registry (`blocked.json`);
//! this instance applies a change at once, every other one on its next poll.

use std::sync::Arc;

use axum::extract::State;
use bytes::Bytes;
use serde::Deserialize;
use serde_json::{json, Value};

use super::{ok_json, ApiError, ErrorKind, Reply};
use crate::state::Service;

/// The body of a block or unblock.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Change {
    movie_ids: Vec<i64>,
    #[serde(default)]
    reason: Option<String>,
}

fn parse(body: &[u8], block: bool) -> Result<Change, ApiError> {
    let shape = if block {
        r#"{"movie_ids": [movie ids], "reason": optional text}"#
    } else {
        r#"{"movie_ids": [movie ids]}"#
    };
    let change: Change = serde_json::from_slice(body)
        .map_err(|e| ApiError::invalid(format!("the body must be a JSON object {shape}: {e}")))?;
    if !block && change.reason.is_some() {
        return Err(ApiError::invalid("an unblock takes no reason"));
    }
    Ok(change)
}

pub(super) async fn block(State(svc): State<Arc<Service>>, body: Bytes) -> Result<Reply, ApiError> {
    let change = parse(&body, true)?;
    let done = svc
        .change_blocked(
            true,
            &change.movie_ids,
            change.reason.as_deref().unwrap_or(""),
        )
        .await?;
    Ok(ok_json(json!({
        "status": "ok",
        "blocked": done.change.changed,
        "already_blocked": done.change.unchanged,
        "unknown": done.unknown,
        "revision": done.change.set.revision,
        "count": done.change.set.movies.len(),
    })))
}

pub(super) async fn unblock(
    State(svc): State<Arc<Service>>,
    body: Bytes,
) -> Result<Reply, ApiError> {
    let change = parse(&body, false)?;
    let done = svc.change_blocked(false, &change.movie_ids, "").await?;
    Ok(ok_json(json!({
        "status": "ok",
        "unblocked": done.change.changed,
        "not_blocked": done.change.unchanged,
        "revision": done.change.set.revision,
        "count": done.change.set.movies.len(),
    })))
}

/// `GET /catalog/blocked`: the registry's blocked set as stored now (what every
/// instance converges on), and the revision this instance applies.
pub(super) async fn blocked(State(svc): State<Arc<Service>>) -> Result<Reply, ApiError> {
    let stored = svc
        .stored_blocked()
        .await
        .map_err(|e| ApiError::new(ErrorKind::RegistryUnavailable, e))?;
    let movies: Vec<Value> = stored
        .movies
        .iter()
        .map(|(&id, e)| json!({"movie_id": id, "title": svc.titles.get(id), "reason": e.reason, "at": e.at}))
        .collect();
    Ok(ok_json(json!({
        "revision": stored.revision,
        "updated_at": stored.updated_at,
        "count": movies.len(),
        "movies": movies,
        "applied_revision": svc.blocked().set.revision,
    })))
}
