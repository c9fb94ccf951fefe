//! The HTTP contract (DESIGN.md, "HTTP API"): routes, input validation, response
//! and error bodies, `X-Request-ID`, provenance, and the model-management routes.
//! Lambda functions and the local server both call [`handle`] / [`route`] with a
//! plain `http::Request`.

use std::collections::HashSet;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use http::{header, HeaderValue, Method, Request, Response, StatusCode};
use serde::Serialize;
use serde_json::{json, Value};

use crate::active::Strategy;
use crate::model::Scored;
use crate::registry::{validate_version, LoadedModel};
use crate::service::{RolloutPatch, Service, SwitchError};

/// The longest `X-Request-ID` accepted.
pub const MAX_REQUEST_ID_LEN: usize = 128;
/// The largest JSON body accepted by the POST routes.
const MAX_BODY: usize = 16 * 1024;

/// The endpoints, as named in metrics.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Endpoint {
    Recommend,
    Health,
    Metrics,
    Switch,
    RolloutStatus,
    RolloutUpdate,
    /// No route matched.
    Unknown,
}

impl Endpoint {
    /// Every endpoint `recs serve` answers.
    pub const ALL: [Endpoint; 6] = [
        Endpoint::Recommend,
        Endpoint::Health,
        Endpoint::Metrics,
        Endpoint::Switch,
        Endpoint::RolloutStatus,
        Endpoint::RolloutUpdate,
    ];
    /// The routes of the `switch` Lambda function.
    pub const ADMIN: [Endpoint; 3] = [
        Endpoint::Switch,
        Endpoint::RolloutStatus,
        Endpoint::RolloutUpdate,
    ];

    /// The `endpoint` label.
    pub fn name(self) -> &'static str {
        match self {
            Endpoint::Recommend => "recommend",
            Endpoint::Health => "healthz",
            Endpoint::Metrics => "metrics",
            Endpoint::Switch => "switch",
            Endpoint::RolloutStatus => "rollout_status",
            Endpoint::RolloutUpdate => "rollout_update",
            Endpoint::Unknown => "unknown",
        }
    }

    /// The endpoint a path belongs to.
    pub fn for_path(path: &str) -> Endpoint {
        match path {
            "/healthz" => Endpoint::Health,
            "/metrics" => Endpoint::Metrics,
            "/switch" => Endpoint::Switch,
            "/rollout/status" => Endpoint::RolloutStatus,
            "/rollout/update" => Endpoint::RolloutUpdate,
            p if p.starts_with("/recommend/") || p == "/recommend" => Endpoint::Recommend,
            _ => Endpoint::Unknown,
        }
    }

    /// The methods the endpoint accepts.
    fn methods(self) -> &'static [Method] {
        match self {
            Endpoint::Switch => &[Method::GET, Method::POST],
            Endpoint::RolloutUpdate => &[Method::POST],
            _ => &[Method::GET],
        }
    }

    /// Routes that change what is served need authorization.
    fn is_admin(self) -> bool {
        matches!(self, Endpoint::Switch | Endpoint::RolloutUpdate)
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

impl From<SwitchError> for ApiError {
    fn from(e: SwitchError) -> Self {
        let (status, kind) = match &e {
            SwitchError::BadRequest(_) => (StatusCode::BAD_REQUEST, "invalid_model"),
            SwitchError::NotFound(_) => (StatusCode::NOT_FOUND, "not_found"),
            SwitchError::Verification { .. } => (StatusCode::UNPROCESSABLE_ENTITY, "model_load"),
            SwitchError::Unavailable(_) => {
                (StatusCode::SERVICE_UNAVAILABLE, "registry_unavailable")
            }
            SwitchError::Conflict(_) => (StatusCode::CONFLICT, "conflict"),
        };
        ApiError::new(status, kind, e.to_string())
    }
}

/// What an endpoint produced, before headers and metrics are added.
enum Reply {
    /// A status, a serialised JSON body, and the error kind when it is an error.
    Json(StatusCode, String, Option<&'static str>),
    Text(String),
}

fn ok_json(v: Value) -> Reply {
    Reply::Json(StatusCode::OK, v.to_string(), None)
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

/// Serves every route (the local server).
pub async fn route(svc: &Service, req: &Request<Bytes>) -> Response<Bytes> {
    handle(svc, &Endpoint::ALL, req).await
}

/// Answers `req` if its route is one of `allowed` (a Lambda function passes its own
/// routes, so a misrouted request is a 404, not another function's answer).
pub async fn handle(svc: &Service, allowed: &[Endpoint], req: &Request<Bytes>) -> Response<Bytes> {
    handle_with_outcome(svc, allowed, req).await.0
}

/// [`handle`], also returning the [`Outcome`] for sinks outside the process
/// (the Lambda adapter writes it as an EMF line). Every request is counted in
/// the Prometheus metrics, whatever its status.
pub async fn handle_with_outcome(
    svc: &Service,
    allowed: &[Endpoint],
    req: &Request<Bytes>,
) -> (Response<Bytes>, Outcome) {
    let started = Instant::now();
    let timestamp_ms = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0);
    let (request_id, id_error) = request_id(req);
    let endpoint = Endpoint::for_path(req.uri().path());
    let mut model_version = None;
    let result = match id_error {
        Some(e) => Err(e),
        None if endpoint == Endpoint::Unknown || !allowed.contains(&endpoint) => {
            Err(ApiError::new(
                StatusCode::NOT_FOUND,
                "not_found",
                format!("no route for {} {}", req.method(), req.uri().path()),
            ))
        }
        None if !endpoint.methods().contains(req.method()) => Err(ApiError::new(
            StatusCode::METHOD_NOT_ALLOWED,
            "method_not_allowed",
            format!("{} is not allowed on {}", req.method(), req.uri().path()),
        )),
        None => match authorize(svc, endpoint, req) {
            Err(e) => Err(e),
            Ok(()) => match endpoint {
                Endpoint::Recommend => recommend(svc, req, &request_id, timestamp_ms, started).map(
                    |(reply, version)| {
                        model_version = Some(version);
                        reply
                    },
                ),
                Endpoint::Health => Ok(health(svc)),
                Endpoint::Metrics => Ok(Reply::Text(svc.metrics.render_prometheus())),
                Endpoint::Switch => switch(svc, req).await,
                Endpoint::RolloutStatus => Ok(rollout_status(svc)),
                Endpoint::RolloutUpdate => rollout_update(svc, req).await,
                Endpoint::Unknown => unreachable!("handled above"),
            },
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
            // One structured line per refused request: what operators grep for.
            tracing::info!(%request_id, endpoint = endpoint.name(), status = e.status.as_u16(),
                error_type = e.error_type, detail = %e.detail, "request refused");
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
    let mut builder = Response::builder()
        .status(status)
        .header(header::CONTENT_TYPE, content_type);
    if let Ok(v) = HeaderValue::from_str(&request_id) {
        builder = builder.header("x-request-id", v);
    }
    if status == StatusCode::METHOD_NOT_ALLOWED {
        let allow: Vec<&str> = endpoint.methods().iter().map(Method::as_str).collect();
        builder = builder.header(header::ALLOW, allow.join(", "));
    }
    if status == StatusCode::UNAUTHORIZED {
        builder = builder.header(header::WWW_AUTHENTICATE, "Bearer");
    }
    let resp = builder
        .body(Bytes::from(body))
        .expect("static headers are valid");
    let outcome = Outcome {
        endpoint,
        status: status.as_u16(),
        latency_seconds,
        error_type,
        request_id,
        model_version,
    };
    (resp, outcome)
}

/// The admin routes need `Authorization: Bearer $RECS_ADMIN_TOKEN` when a token is
/// configured: 401 without credentials, 403 with wrong ones.
fn authorize(svc: &Service, endpoint: Endpoint, req: &Request<Bytes>) -> Result<(), ApiError> {
    let Some(expected) = svc
        .config
        .admin_token
        .as_deref()
        .filter(|_| endpoint.is_admin())
    else {
        return Ok(());
    };
    let given = req
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "));
    match given {
        None => Err(ApiError::new(
            StatusCode::UNAUTHORIZED,
            "unauthorized",
            "this route needs Authorization: Bearer <RECS_ADMIN_TOKEN>",
        )),
        // Compare without an early exit, so timing does not reveal the prefix.
        Some(g)
            if g.len() == expected.len()
                && g.bytes()
                    .zip(expected.bytes())
                    .fold(0u8, |acc, (a, b)| acc | (a ^ b))
                    == 0 =>
        {
            Ok(())
        }
        Some(_) => Err(ApiError::new(
            StatusCode::FORBIDDEN,
            "forbidden",
            "wrong admin token",
        )),
    }
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
) -> Result<(Reply, String), ApiError> {
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
            latency_ms,
        },
    };
    // Serialised straight from the struct: field order as documented, f32 scores
    // printed as f32 (no widening noise).
    let text = serde_json::to_string(&body).expect("response serialises");
    Ok((
        Reply::Json(StatusCode::OK, text, None),
        loaded.version.clone(),
    ))
}

/// The user's top-k, or the popularity ranking for a user the model does not know.
fn top_k(loaded: &LoadedModel, user_id: i64, k: usize) -> (Vec<Scored>, Option<&'static str>) {
    let model = &loaded.model;
    match model.user_row(user_id) {
        Some(row) => (model.recommend_row(row, k), None),
        None => (model.popular(k).to_vec(), Some("popularity")),
    }
}

fn health(svc: &Service) -> Reply {
    let served = svc.served();
    match &served.primary {
        Ok(m) => ok_json(json!({
            "status": "ok",
            "version": m.version,
            "rollout": svc.rollout_json(),
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
            "previous_version": served.previous_version,
            "registry": svc.config.registry,
        })),
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

async fn switch(svc: &Service, req: &Request<Bytes>) -> Result<Reply, ApiError> {
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

fn rollout_status(svc: &Service) -> Reply {
    let served = svc.served();
    ok_json(json!({
        "rollout": svc.rollout_json(),
        "active_version": served.primary.as_ref().ok().map(|m| m.version.clone()),
        "previous_version": served.previous_version,
        "canary_loaded": served.canary.as_ref().map(|m| m.version.clone()),
    }))
}

async fn rollout_update(svc: &Service, req: &Request<Bytes>) -> Result<Reply, ApiError> {
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
        "rollout": svc.rollout_json(),
        "revision": state.revision,
    })))
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
        assert_eq!(Endpoint::for_path("/switch"), Endpoint::Switch);
        assert_eq!(
            Endpoint::for_path("/rollout/update"),
            Endpoint::RolloutUpdate
        );
    }
}
