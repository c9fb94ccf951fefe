//! The HTTP contract (DESIGN.md, "HTTP API"): routes, input validation, response
//! and error bodies, `X-Request-ID` and provenance. Lambda functions and the local
//! server both call [`handle`] / [`route`] with a plain `http::Request`.

use std::time::{Instant, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use http::{header, HeaderValue, Method, Request, Response, StatusCode};
use serde::Serialize;
use serde_json::json;

use crate::model::Scored;
use crate::registry::validate_version;
use crate::service::Service;

/// The longest `X-Request-ID` accepted.
pub const MAX_REQUEST_ID_LEN: usize = 128;

/// The endpoints, as named in metrics.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Endpoint {
    Recommend,
    Health,
    Metrics,
    /// No route matched.
    Unknown,
}

impl Endpoint {
    /// The `endpoint` label.
    pub fn name(self) -> &'static str {
        match self {
            Endpoint::Recommend => "recommend",
            Endpoint::Health => "healthz",
            Endpoint::Metrics => "metrics",
            Endpoint::Unknown => "unknown",
        }
    }

    /// The endpoint a path belongs to.
    pub fn for_path(path: &str) -> Endpoint {
        if path == "/healthz" {
            Endpoint::Health
        } else if path == "/metrics" {
            Endpoint::Metrics
        } else if path.starts_with("/recommend/") || path == "/recommend" {
            Endpoint::Recommend
        } else {
            Endpoint::Unknown
        }
    }
}

/// A request that cannot be answered normally: its status, kind and message.
#[derive(Debug, Clone, PartialEq)]
pub struct ApiError {
    pub status: StatusCode,
    pub error_type: &'static str,
    pub detail: String,
}

impl ApiError {
    fn new(status: StatusCode, error_type: &'static str, detail: impl Into<String>) -> Self {
        ApiError {
            status,
            error_type,
            detail: detail.into(),
        }
    }

    fn invalid(detail: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "invalid_input", detail)
    }
}

/// What an endpoint produced, before headers and metrics are added.
enum Reply {
    /// A status, a serialised JSON body, and the error kind when it is an error.
    Json(StatusCode, String, Option<&'static str>),
    Text(String),
}

/// What happened to one request: the facts metrics sinks (Prometheus, EMF) record.
#[derive(Debug, Clone, PartialEq)]
pub struct Outcome {
    pub endpoint: Endpoint,
    pub status: u16,
    pub latency_seconds: f64,
    pub error_type: Option<&'static str>,
    pub request_id: String,
    /// The version that answered, when a model did.
    pub model_version: Option<String>,
}

/// Serves every route (the local server). Lambda functions use [`handle`] with their
/// own endpoint so that a misrouted request is a 404, not another function's answer.
pub fn route(svc: &Service, req: &Request<Bytes>) -> Response<Bytes> {
    handle(svc, Endpoint::for_path(req.uri().path()), req)
}

/// Answers `req` as `endpoint`: validates the request id, dispatches, builds the
/// response with `X-Request-ID`, and counts the request (every status) in metrics.
pub fn handle(svc: &Service, endpoint: Endpoint, req: &Request<Bytes>) -> Response<Bytes> {
    handle_with_outcome(svc, endpoint, req).0
}

/// [`handle`], also returning the [`Outcome`] for sinks outside the process
/// (the Lambda adapter writes it as an EMF line).
pub fn handle_with_outcome(
    svc: &Service,
    endpoint: Endpoint,
    req: &Request<Bytes>,
) -> (Response<Bytes>, Outcome) {
    let started = Instant::now();
    let timestamp_ms = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0);
    let (request_id, id_error) = request_id(req);
    let path_endpoint = Endpoint::for_path(req.uri().path());
    let result = match id_error {
        Some(e) => Err(e),
        None if path_endpoint != endpoint || endpoint == Endpoint::Unknown => Err(ApiError::new(
            StatusCode::NOT_FOUND,
            "not_found",
            format!("no route for {} {}", req.method(), req.uri().path()),
        )),
        None if req.method() != Method::GET => Err(ApiError::new(
            StatusCode::METHOD_NOT_ALLOWED,
            "method_not_allowed",
            format!("{} is not allowed here; use GET", req.method()),
        )),
        None => match endpoint {
            Endpoint::Recommend => recommend(svc, req, &request_id, timestamp_ms, started),
            Endpoint::Health => Ok(health(svc)),
            Endpoint::Metrics => Ok(Reply::Text(svc.metrics.render_prometheus())),
            Endpoint::Unknown => unreachable!("handled above"),
        },
    };
    let (status, error_type, body, content_type) = match result {
        Ok(Reply::Json(status, body, error_type)) => (status, error_type, body, "application/json"),
        Ok(Reply::Text(t)) => (
            StatusCode::OK,
            None,
            t,
            "text/plain; version=0.0.4; charset=utf-8",
        ),
        Err(e) => {
            let body = json!({"detail": e.detail, "error_type": e.error_type}).to_string();
            (e.status, Some(e.error_type), body, "application/json")
        }
    };
    let latency_seconds = started.elapsed().as_secs_f64();
    svc.metrics.observe_request(
        endpoint.name(),
        status.as_u16(),
        latency_seconds,
        error_type,
    );
    let outcome = Outcome {
        endpoint,
        status: status.as_u16(),
        latency_seconds,
        error_type,
        model_version: match (&svc.model, endpoint, status.is_success()) {
            (Ok(m), Endpoint::Recommend, true) => Some(m.version.clone()),
            _ => None,
        },
        request_id,
    };
    let mut builder = Response::builder()
        .status(status)
        .header(header::CONTENT_TYPE, content_type);
    if let Ok(v) = HeaderValue::from_str(&outcome.request_id) {
        builder = builder.header("x-request-id", v);
    }
    if status == StatusCode::METHOD_NOT_ALLOWED {
        builder = builder.header(header::ALLOW, "GET");
    }
    let resp = builder
        .body(Bytes::from(body))
        .expect("static headers are valid");
    (resp, outcome)
}

/// The client's `X-Request-ID` when valid, else a fresh UUID (and the error, if the
/// client sent an invalid one: it is not echoed back).
fn request_id(req: &Request<Bytes>) -> (String, Option<ApiError>) {
    let Some(v) = req.headers().get("x-request-id") else {
        return (uuid::Uuid::new_v4().to_string(), None);
    };
    let ok = v.len() <= MAX_REQUEST_ID_LEN
        && !v.is_empty()
        && v.as_bytes()
            .iter()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b':'));
    if ok {
        // Checked ASCII above.
        (v.to_str().unwrap_or_default().to_string(), None)
    } else {
        (
            uuid::Uuid::new_v4().to_string(),
            Some(ApiError::invalid(format!(
                "X-Request-ID must be 1 to {MAX_REQUEST_ID_LEN} characters of A-Z a-z 0-9 . _ : - (got {} bytes)",
                v.len()
            ))),
        )
    }
}

/// Query parameters in order, percent-decoded.
fn query(req: &Request<Bytes>) -> Vec<(String, String)> {
    req.uri()
        .query()
        .map(|q| form_urlencoded::parse(q.as_bytes()).into_owned().collect())
        .unwrap_or_default()
}

/// One query parameter; a parameter given twice is ambiguous and refused.
fn param<'a>(params: &'a [(String, String)], name: &str) -> Result<Option<&'a str>, ApiError> {
    let mut values = params.iter().filter(|(k, _)| k == name);
    let first = values.next();
    if values.next().is_some() {
        return Err(ApiError::invalid(format!(
            "query parameter {name} is given more than once"
        )));
    }
    Ok(first.map(|(_, v)| v.as_str()))
}

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
    latency_ms: f64,
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

fn recommend(
    svc: &Service,
    req: &Request<Bytes>,
    request_id: &str,
    timestamp_ms: u64,
    started: Instant,
) -> Result<Reply, ApiError> {
    let raw_user = req
        .uri()
        .path()
        .strip_prefix("/recommend/")
        .unwrap_or_default();
    let user_id = parse_id(raw_user).ok_or_else(|| {
        ApiError::invalid(format!(
            "user_id must be a non-negative integer up to {}, got {raw_user:?}",
            i64::MAX
        ))
    })?;
    let params = query(req);
    let k = parse_k(param(&params, "k")?, svc.config.max_k)?;
    let loaded = svc.model.as_ref().map_err(|reason| {
        ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "model_unavailable",
            format!("no model is being served: {reason}"),
        )
    })?;
    if let Some(wanted) = param(&params, "model")? {
        let invalid_model =
            |detail: String| ApiError::new(StatusCode::BAD_REQUEST, "invalid_model", detail);
        validate_version(wanted).map_err(|e| invalid_model(e.to_string()))?;
        if wanted != loaded.version {
            return Err(invalid_model(format!(
                "model version {wanted} is not served here (serving {})",
                loaded.version
            )));
        }
    }
    let model = &loaded.model;
    let (scored, fallback): (Vec<Scored>, _) = match model.user_row(user_id) {
        Some(row) => (model.recommend_row(row, k), None),
        None => (model.popular(k).to_vec(), Some("popularity")),
    };
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
        variant: None,
        fallback,
        provenance: Provenance {
            request_id,
            timestamp: timestamp_ms,
            model_name: &loaded.meta.model_name,
            model_version: &loaded.version,
            git_sha: &loaded.meta.git_sha,
            data_snapshot_id: &loaded.meta.data_snapshot_id,
            container_image_digest: image_digest,
            latency_ms,
        },
    };
    // Serialised straight from the struct: field order as documented, f32 scores
    // printed as f32 (no widening noise).
    Ok(Reply::Json(
        StatusCode::OK,
        serde_json::to_string(&body).expect("response serialises"),
        None,
    ))
}

fn health(svc: &Service) -> Reply {
    match &svc.model {
        Ok(m) => Reply::Json(
            StatusCode::OK,
            json!({
                "status": "ok",
                "version": m.version,
                "rollout": {
                    "strategy": "fixed",
                    "primary_version": m.version,
                    "canary_version": null,
                    "canary_percentage": 0.0,
                    "environment": svc.config.environment,
                },
                "model": {
                    "name": m.meta.model_name,
                    "version": m.version,
                    "users": m.model.n_users(),
                    "items": m.model.n_items(),
                    "factors": m.model.factors(),
                    "artifact_sha": m.artifact_sha,
                    "created_at": m.meta.created_at,
                    "load_seconds": m.load_seconds,
                },
                "registry": svc.config.registry,
            })
            .to_string(),
            None,
        ),
        Err(reason) => Reply::Json(
            StatusCode::SERVICE_UNAVAILABLE,
            json!({
                "status": "unavailable",
                "detail": reason,
                "error_type": "model_unavailable",
                "registry": svc.config.registry,
            })
            .to_string(),
            Some("model_unavailable"),
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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

    #[test]
    fn endpoints_by_path() {
        assert_eq!(Endpoint::for_path("/recommend/1"), Endpoint::Recommend);
        assert_eq!(Endpoint::for_path("/healthz"), Endpoint::Health);
        assert_eq!(Endpoint::for_path("/metrics"), Endpoint::Metrics);
        assert_eq!(Endpoint::for_path("/recommendx"), Endpoint::Unknown);
    }
}
