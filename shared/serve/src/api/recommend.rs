//! `GET /recommend/{user_id}`: parsing, the rollout's choice of model, shadow
//! scoring, and the response with its provenance.

use std::collections::HashSet;
use std::time::Instant;

use bytes::Bytes;
use http::{Request, StatusCode};
use serde::Serialize;

use super::error::ApiError;
use super::{param, query, Reply};
use crate::state::Service;
use recs_core::{validate_version, LoadedModel, Scored};

/// A non-negative decimal integer that fits in i64; anything else is None.
fn parse_id(s: &str) -> Option<i64> {
    if s.is_empty() || s.len() > 19 || !s.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    s.parse().ok()
}

/// `k` in 1..=max_k; default 20 (the Python API's default).
fn parse_k(raw: Option<&str>, max_k: usize) -> Result<usize, ApiError> {
    let Some(raw) = raw else {
        return Ok(20.min(max_k));
    };
    let detail = || format!("k must be an integer from 1 to {max_k}, got {raw:?}");
    let k = raw
        .parse::<i128>()
        .map_err(|_| ApiError::invalid(detail()))?;
    if k < 1 || k > max_k as i128 {
        return Err(ApiError::invalid(detail()));
    }
    Ok(k as usize)
}

#[derive(Serialize)]
struct Recommendation<'a> {
    movie_id: i64,
    title: std::borrow::Cow<'a, str>,
    score: f32,
}

#[derive(Serialize)]
struct Provenance<'a> {
    request_id: &'a str,
    timestamp: u64,
    model_name: &'a str,
    model_version: &'a str,
    git_sha: &'a str,
    data_snapshot_id: &'a str,
    container_image_digest: Option<&'a str>,
    /// Whole milliseconds, at least 1: the Python API's and `reco_response`'s int.
    latency_ms: u64,
    /// The same latency to the microsecond.
    latency_ms_precise: f64,
}

/// The Python service's `max(1, round(ms))` (Python rounds halves to even), for
/// clients that read an int.
fn whole_ms(precise_ms: f64) -> u64 {
    (precise_ms.round_ties_even() as u64).max(1)
}

#[derive(Serialize)]
struct RecommendBody<'a> {
    user_id: i64,
    model: &'a str,
    items: Vec<i64>,
    recommendations: Vec<Recommendation<'a>>,
    variant: Option<&'a str>,
    fallback: Option<&'a str>,
    provenance: Provenance<'a>,
}

pub(super) fn recommend(
    svc: &Service,
    req: &Request<Bytes>,
    raw_user: &str,
    request_id: &str,
    timestamp_ms: u64,
    started: Instant,
) -> Result<(Reply, String), ApiError> {
    let user_id = parse_id(raw_user).ok_or_else(|| {
        ApiError::invalid(format!(
            "user_id must be a non-negative integer up to {}, got {raw_user:?}",
            i64::MAX
        ))
    })?;
    let params = query(req);
    let k = parse_k(param(&params, "k")?, svc.config.max_k)?;
    // One snapshot for the whole request: a concurrent switch never mixes versions.
    let served = svc.served();
    let primary = served.primary.as_ref().map_err(|reason| {
        ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "model_unavailable",
            format!("no model is being served: {reason}"),
        )
    })?;
    let assignment = served.rollout.assign(user_id);
    let (mut loaded, mut variant): (&LoadedModel, Option<&str>) =
        match (&served.canary, assignment.canary) {
            (Some(c), true) => (c, assignment.variant),
            (None, true) => (primary, None),
            _ => (primary, assignment.variant),
        };
    if let Some(wanted) = param(&params, "model")? {
        let invalid_model =
            |detail: String| ApiError::new(StatusCode::BAD_REQUEST, "invalid_model", detail);
        validate_version(wanted).map_err(|e| invalid_model(e.to_string()))?;
        // An explicit version is honoured only among the versions served right now:
        // a request never changes what everyone else is served.
        loaded = [Some(primary.as_ref()), served.canary.as_deref()]
            .into_iter()
            .flatten()
            .find(|m| m.version == wanted)
            .ok_or_else(|| {
                invalid_model(format!(
                    "model version {wanted} is not served here (serving {})",
                    primary.version
                ))
            })?;
        variant = None;
    }
    let (scored, fallback) = top_k(loaded, user_id, k);
    if assignment.shadow {
        if let Some(shadow) = &served.canary {
            let (theirs, _) = top_k(shadow, user_id, k);
            let ours: HashSet<u32> = scored.iter().map(|s| s.row).collect();
            let same = theirs.iter().filter(|s| ours.contains(&s.row)).count();
            let overlap = if scored.is_empty() {
                1.0
            } else {
                same as f64 / scored.len() as f64
            };
            svc.metrics.observe_shadow(overlap);
            tracing::info!(user_id, primary = %loaded.version, shadow = %shadow.version, overlap, "shadow comparison");
        }
    }
    let model = &loaded.model;
    let items: Vec<i64> = scored.iter().map(|s| model.item_id(s.row)).collect();
    let recommendations = scored
        .iter()
        .zip(&items)
        .map(|(s, &movie_id)| Recommendation {
            movie_id,
            title: svc.titles.get(movie_id),
            score: s.score,
        })
        .collect();
    let image_digest = loaded
        .meta
        .image_digest
        .as_deref()
        .or(svc.config.image_digest.as_deref());
    let latency_ms = (started.elapsed().as_secs_f64() * 1e6).round() / 1e3;
    let body = RecommendBody {
        user_id,
        model: &loaded.version,
        items,
        recommendations,
        variant,
        fallback,
        provenance: Provenance {
            request_id,
            timestamp: timestamp_ms,
            model_name: &loaded.meta.model_name,
            model_version: &loaded.version,
            git_sha: &loaded.meta.git_sha,
            data_snapshot_id: &loaded.meta.data_snapshot_id,
            container_image_digest: image_digest,
            latency_ms: whole_ms(latency_ms),
            latency_ms_precise: latency_ms,
        },
    };
    // Serialised straight from the struct: field order as documented, f32 scores
    // printed as f32 (no widening noise).
    let text = serde_json::to_string(&body).expect("response serialises");
    svc.traces.insert(
        request_id,
        serde_json::json!({
            "user_id": user_id,
            "k": k,
            "model_version": loaded.version,
            "model_name": loaded.meta.model_name,
            "git_sha": loaded.meta.git_sha,
            "data_snapshot_id": loaded.meta.data_snapshot_id,
            "latency_ms": body.provenance.latency_ms,
            "latency_ms_precise": latency_ms,
            "status": 200,
            "ts": timestamp_ms,
            "movie_ids": body.items,
            "variant": variant,
            "fallback": fallback,
        }),
    );
    Ok((
        Reply::Json(StatusCode::OK, text, None),
        loaded.version.clone(),
    ))
}

/// The user's top-k: ALS (popularity for a user it does not know) or a popularity
/// version's ranking without the user's seen items.
fn top_k(loaded: &LoadedModel, user_id: i64, k: usize) -> (Vec<Scored>, Option<&'static str>) {
    loaded.model.recommend(user_id, k)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn latency_is_whole_ms_at_least_one() {
        assert_eq!(whole_ms(0.0), 1);
        assert_eq!(whole_ms(0.197), 1);
        assert_eq!(whole_ms(1.49), 1);
        assert_eq!(whole_ms(1.5), 2);
        assert_eq!(whole_ms(2.5), 2); // Python: round(2.5) == 2
        assert_eq!(whole_ms(250.2), 250);
    }

    #[test]
    fn ids_and_k() {
        assert_eq!(parse_id("0"), Some(0));
        assert_eq!(parse_id("9223372036854775807"), Some(i64::MAX));
        for bad in [
            "",
            "-5",
            "+5",
            "abc",
            "1.0",
            " 1",
            "9223372036854775808",
            "99999999999999999999",
        ] {
            assert_eq!(parse_id(bad), None, "{bad}");
        }
        assert_eq!(parse_k(None, 100).unwrap(), 20);
        assert_eq!(parse_k(None, 5).unwrap(), 5);
        assert_eq!(parse_k(Some("100"), 100).unwrap(), 100);
        for bad in [
            "0",
            "-1",
            "101",
            "abc",
            "",
            "1e3",
            "99999999999999999999999999999999999999999",
        ] {
            assert!(parse_k(Some(bad), 100).is_err(), "{bad}");
        }
    }
}
