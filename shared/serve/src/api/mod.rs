//! The HTTP contract (DESIGN.md, "HTTP API") as one axum [`Router`]: the three HTTP
//! Lambda functions run it with `lambda_http::run` (each with its own routes), and
//! `recs serve` runs it with `axum::serve` (every route).
//!
//! One layer, [`contract`], wraps every route, the unknown-route fallback and the
//! 405s alike: the request id, the body limit (413), a panic (500), fault injection,
//! the recommend request's one trace and exposure record, the log line and the
//! metrics. Handlers parse the request into the domain's terms, call the domain
//! ([`Service`], [`crate::control`]) and serialise the answer; refusals are
//! [`ApiError`]s, which become responses in one place (`crate::error`).

mod admin;
mod catalog;
mod experiment;
mod recommend;

use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::time::Instant;

use axum::body::Body;
use axum::extract::{MatchedPath, Request, State};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post, MethodRouter};
use axum::Router;
use futures_util::FutureExt;
use http::{header, HeaderMap, HeaderValue, Method, StatusCode, Uri};
use serde_json::{json, Value};

pub use crate::error::{ApiError, ErrorKind};
pub use recs_telemetry::emf::Outcome;

use crate::error::ErrorInfo;
use crate::recommender::Record;
use crate::state::Service;

/// The longest `X-Request-ID` accepted.
const MAX_REQUEST_ID_LEN: usize = 128;
/// The largest request body accepted (the POST routes take small JSON objects).
pub const MAX_BODY: usize = 16 * 1024;

/// The OpenAPI 3 document of this API (every route, parameter, body, response and
/// error shape), served at `/openapi.json` and checked against the server by
/// schemathesis in `make test`.
pub const OPENAPI: &str = include_str!("../../openapi.json");

/// The endpoints, as named in metrics.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Endpoint {
    /// `GET /recommend/{user_id}`, and fold-in: `GET /recommend[/{user_id}]?history=`
    /// and `POST /recommend`
    Recommend,
    /// `GET /similar/{movie_id}`: the movies most like one
    Similar,
    /// `GET /healthz`
    Health,
    /// `GET /metrics` (local server only)
    Metrics,
    /// `GET|POST /switch`
    Switch,
    /// `GET /rollout/status`
    RolloutStatus,
    /// `POST /rollout/update`
    RolloutUpdate,
    /// `GET /openapi.json` (local server only): the OpenAPI 3 document.
    OpenApi,
    /// `GET /trace/{request_id}`: this process's recent requests, then the exposure log
    Trace,
    /// `GET /experiment/analyze`
    ExperimentAnalyze,
    /// `POST /experiment/promote`
    ExperimentPromote,
    /// `POST /catalog/block`: take movies down everywhere
    CatalogBlock,
    /// `POST /catalog/unblock`
    CatalogUnblock,
    /// `GET /catalog/blocked`
    CatalogBlocked,
    /// No route matched.
    Unknown,
}

impl Endpoint {
    /// Every endpoint `recs serve` answers.
    pub const ALL: [Endpoint; 14] = [
        Endpoint::Recommend,
        Endpoint::Similar,
        Endpoint::Health,
        Endpoint::Metrics,
        Endpoint::Switch,
        Endpoint::RolloutStatus,
        Endpoint::RolloutUpdate,
        Endpoint::OpenApi,
        Endpoint::Trace,
        Endpoint::ExperimentAnalyze,
        Endpoint::ExperimentPromote,
        Endpoint::CatalogBlock,
        Endpoint::CatalogUnblock,
        Endpoint::CatalogBlocked,
    ];
    /// The routes of the `recommend` Lambda function.
    pub const RECOMMEND: [Endpoint; 2] = [Endpoint::Recommend, Endpoint::Similar];
    /// The routes of the `switch` Lambda function.
    pub const ADMIN: [Endpoint; 9] = [
        Endpoint::Switch,
        Endpoint::RolloutStatus,
        Endpoint::RolloutUpdate,
        Endpoint::ExperimentAnalyze,
        Endpoint::ExperimentPromote,
        Endpoint::Trace,
        Endpoint::CatalogBlock,
        Endpoint::CatalogUnblock,
        Endpoint::CatalogBlocked,
    ];

    /// The `endpoint` label.
    pub fn name(self) -> &'static str {
        match self {
            Endpoint::Recommend => "recommend",
            Endpoint::Similar => "similar",
            Endpoint::Health => "healthz",
            Endpoint::Metrics => "metrics",
            Endpoint::Switch => "switch",
            Endpoint::RolloutStatus => "rollout_status",
            Endpoint::RolloutUpdate => "rollout_update",
            Endpoint::OpenApi => "openapi",
            Endpoint::Trace => "trace",
            Endpoint::ExperimentAnalyze => "experiment_analyze",
            Endpoint::ExperimentPromote => "experiment_promote",
            Endpoint::CatalogBlock => "catalog_block",
            Endpoint::CatalogUnblock => "catalog_unblock",
            Endpoint::CatalogBlocked => "catalog_blocked",
            Endpoint::Unknown => "unknown",
        }
    }

    /// The path patterns of the endpoint: the API Gateway routes of
    /// `infra/template.yaml`.
    fn patterns(self) -> &'static [&'static str] {
        match self {
            // No id, or an empty one: still the recommend route (a 400, not a 404).
            Endpoint::Recommend => &["/recommend/{*user_id}", "/recommend", "/recommend/"],
            Endpoint::Similar => &["/similar/{*movie_id}"],
            Endpoint::Health => &["/healthz"],
            Endpoint::Metrics => &["/metrics"],
            Endpoint::OpenApi => &["/openapi.json"],
            Endpoint::Switch => &["/switch"],
            Endpoint::RolloutStatus => &["/rollout/status"],
            Endpoint::RolloutUpdate => &["/rollout/update"],
            Endpoint::Trace => &["/trace/{*request_id}"],
            Endpoint::ExperimentAnalyze => &["/experiment/analyze"],
            Endpoint::ExperimentPromote => &["/experiment/promote"],
            Endpoint::CatalogBlock => &["/catalog/block"],
            Endpoint::CatalogUnblock => &["/catalog/unblock"],
            Endpoint::CatalogBlocked => &["/catalog/blocked"],
            Endpoint::Unknown => &[],
        }
    }

    /// The handlers of the endpoint at `pattern`.
    fn handlers(self, pattern: &str) -> MethodRouter<Arc<Service>> {
        match self {
            Endpoint::Recommend if pattern.ends_with('}') => get(recommend::get),
            Endpoint::Recommend => get(recommend::get).post(recommend::post),
            Endpoint::Similar => get(recommend::similar),
            Endpoint::Health => get(health),
            Endpoint::Metrics => get(metrics),
            Endpoint::OpenApi => get(openapi),
            Endpoint::Switch => get(admin::switch).post(admin::switch),
            Endpoint::RolloutStatus => get(admin::rollout_status),
            Endpoint::RolloutUpdate => post(admin::rollout_update),
            Endpoint::Trace => get(experiment::trace),
            Endpoint::ExperimentAnalyze => get(experiment::analyze),
            Endpoint::ExperimentPromote => post(experiment::promote),
            Endpoint::CatalogBlock => post(catalog::block),
            Endpoint::CatalogUnblock => post(catalog::unblock),
            Endpoint::CatalogBlocked => get(catalog::blocked),
            Endpoint::Unknown => MethodRouter::new(),
        }
    }

    /// The endpoint a matched path pattern belongs to.
    fn of_pattern(pattern: &str) -> Endpoint {
        Endpoint::ALL
            .into_iter()
            .find(|e| e.patterns().contains(&pattern))
            .unwrap_or(Endpoint::Unknown)
    }

    /// The methods the endpoint accepts at `path`: `POST /recommend` (fold-in, the
    /// user in the body) as well as GET; every other path as its endpoint says.
    fn methods(self, path: &str) -> &'static [Method] {
        match self {
            Endpoint::Recommend if recommend::raw_user(path).is_empty() => {
                &[Method::GET, Method::POST]
            }
            Endpoint::Switch => &[Method::GET, Method::POST],
            Endpoint::RolloutUpdate
            | Endpoint::ExperimentPromote
            | Endpoint::CatalogBlock
            | Endpoint::CatalogUnblock => &[Method::POST],
            _ => &[Method::GET],
        }
    }

    /// Routes that change what is served, or show who asked for what, need the
    /// admin token when one is configured (`recs serve`; on Lambda the switch
    /// function is behind IAM).
    fn is_admin(self) -> bool {
        matches!(
            self,
            Endpoint::Switch
                | Endpoint::RolloutStatus
                | Endpoint::RolloutUpdate
                | Endpoint::ExperimentAnalyze
                | Endpoint::ExperimentPromote
                | Endpoint::Trace
                | Endpoint::CatalogBlock
                | Endpoint::CatalogUnblock
                | Endpoint::CatalogBlocked
        )
    }
}

/// The app answering `routes`, every response through the [`contract`] layer; any
/// other path is a 404 `not_found`.
pub fn app(svc: Arc<Service>, routes: &[Endpoint]) -> Router {
    let mut router = Router::new();
    for &endpoint in routes {
        for &path in endpoint.patterns() {
            let mut method_router = endpoint.handlers(path);
            if endpoint.is_admin() {
                method_router = method_router
                    .route_layer(middleware::from_fn_with_state(svc.clone(), authorize));
            }
            router = router.route(path, method_router);
        }
    }
    with_contract(router.fallback(not_found), svc)
}

/// Adds the [`contract`] layer and the state (tests add their own routes first).
pub(crate) fn with_contract(router: Router<Arc<Service>>, svc: Arc<Service>) -> Router {
    router
        .layer(middleware::from_fn_with_state(svc.clone(), contract))
        .with_state(svc)
}

/// What every handler gets besides the state: the request id and when it arrived.
#[derive(Debug, Clone)]
pub(crate) struct Ctx {
    pub(crate) request_id: String,
    pub(crate) timestamp_ms: u64,
    pub(crate) started: Instant,
}

/// The verified claims of the caller's JWT (API Gateway's JWT authorizer puts them in
/// the event's `requestContext.authorizer.jwt.claims`; `lambda` copies them here).
#[derive(Debug, Clone, Default)]
pub struct Claims(pub std::collections::HashMap<String, String>);

/// A recommend answer on its way out: the contract layer records it (trace and
/// exposure) with the status the client finally gets.
#[derive(Debug, Clone)]
struct Pending(Record);

/// A successful answer's body.
pub(crate) enum Reply {
    /// A serialised JSON body.
    Json(String),
    /// A static JSON document.
    StaticJson(&'static str),
    /// Prometheus text.
    Metrics(String),
}

impl IntoResponse for Reply {
    fn into_response(self) -> Response {
        let (body, content_type) = match self {
            Reply::Json(s) => (Body::from(s), "application/json"),
            Reply::StaticJson(s) => (Body::from(s), "application/json"),
            Reply::Metrics(s) => (Body::from(s), crate::metrics::CONTENT_TYPE),
        };
        ([(header::CONTENT_TYPE, content_type)], body).into_response()
    }
}

fn ok_json(v: Value) -> Reply {
    Reply::Json(v.to_string())
}

/// The layer every response goes through.
async fn contract(State(svc): State<Arc<Service>>, req: Request, next: Next) -> Response {
    let started = Instant::now();
    let timestamp_ms = recs_core::time::now_ms().max(0) as u64;
    let endpoint = req
        .extensions()
        .get::<MatchedPath>()
        .map_or(Endpoint::Unknown, |m| Endpoint::of_pattern(m.as_str()));
    let path = req.uri().path().to_string();
    let (request_id, id_error) = request_id(req.headers());
    let mut resp = match id_error {
        Some(e) => e.into_response(),
        None => {
            let (parts, body) = req.into_parts();
            match axum::body::to_bytes(body, MAX_BODY).await {
                Err(_) => ApiError::new(
                    ErrorKind::PayloadTooLarge,
                    format!("request body over {MAX_BODY} bytes or unreadable"),
                )
                .into_response(),
                Ok(bytes) => {
                    let mut req = Request::from_parts(parts, Body::from(bytes));
                    req.extensions_mut().insert(Ctx {
                        request_id: request_id.clone(),
                        timestamp_ms,
                        started,
                    });
                    match AssertUnwindSafe(next.run(req)).catch_unwind().await {
                        Ok(resp) => resp,
                        Err(_) => {
                            tracing::error!(%request_id, endpoint = endpoint.name(), "handler panicked");
                            ApiError::new(ErrorKind::Internal, "internal error").into_response()
                        }
                    }
                }
            }
        }
    };
    if resp.status() == StatusCode::METHOD_NOT_ALLOWED
        && resp.extensions().get::<ErrorInfo>().is_none()
    {
        resp = method_not_allowed(endpoint, &path);
    }
    let pending = resp.extensions_mut().remove::<Pending>();
    if endpoint == Endpoint::Recommend {
        // Drills only: off unless RECS_FAULT_INJECTION=1 (serve::fault).
        let version = pending
            .as_ref()
            .and_then(|p| p.0.answer.as_ref())
            .map(|a| a.model.version.as_str());
        if crate::fault::on_request(version).await {
            resp = ApiError::new(
                ErrorKind::Internal,
                format!("injected fault ({})", crate::fault::ENABLE_VAR),
            )
            .into_response();
        }
    }
    let status = resp.status();
    let latency_seconds = started.elapsed().as_secs_f64();
    let error = resp.extensions().get::<ErrorInfo>().cloned();
    let error_type = error.as_ref().map(|e| e.error_type);
    if let Some(e) = &error {
        if status.is_server_error() {
            tracing::error!(%request_id, endpoint = endpoint.name(), status = status.as_u16(),
                error_type = e.error_type, detail = %e.detail, "request failed");
        } else {
            // One structured line per refused request: what operators grep for.
            tracing::info!(%request_id, endpoint = endpoint.name(), status = status.as_u16(),
                error_type = e.error_type, detail = %e.detail, "request refused");
        }
    }
    let mut model_version = None;
    let mut variant = "";
    if endpoint == Endpoint::Recommend {
        let mut record = match pending {
            Some(Pending(r)) => r,
            None => {
                let user_id = recommend::parse_id(recommend::raw_user(&path));
                Record {
                    user_id,
                    k: 0,
                    answer: None,
                    variant: user_id.and_then(|u| svc.variant_of(u)),
                    status: 0,
                    ts: timestamp_ms,
                    latency_ms: latency_seconds * 1e3,
                }
            }
        };
        record.status = status.as_u16();
        variant = record.variant.unwrap_or("");
        if status == StatusCode::OK {
            model_version = record.answer.as_ref().map(|a| a.model.version.clone());
        } else {
            // The client was shown nothing: the trace and exposure say so.
            record.answer = None;
            record.latency_ms = latency_seconds * 1e3;
        }
        svc.record(&request_id, record);
    }
    let version = {
        let served = svc.served();
        let names: Vec<&str> = served
            .primary
            .iter()
            .chain(&served.canary)
            .map(|m| m.version.as_str())
            .collect();
        svc.metrics.version_label(model_version.as_deref(), &names)
    };
    svc.metrics.observe_request(
        endpoint.name(),
        status.as_u16(),
        latency_seconds,
        error_type,
        version,
        variant,
    );
    if let Ok(v) = HeaderValue::from_str(&request_id) {
        resp.headers_mut().insert("x-request-id", v);
    }
    if status == StatusCode::UNAUTHORIZED {
        resp.headers_mut()
            .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
    }
    resp.extensions_mut().insert(Outcome {
        endpoint: endpoint.name(),
        status: status.as_u16(),
        latency_seconds,
        error_type,
        request_id,
        model_version,
        variant: (!variant.is_empty()).then_some(variant),
    });
    resp
}

fn method_not_allowed(endpoint: Endpoint, path: &str) -> Response {
    let allow: Vec<&str> = endpoint.methods(path).iter().map(Method::as_str).collect();
    let mut resp = ApiError::new(
        ErrorKind::MethodNotAllowed,
        format!(
            "this method is not allowed on {path} (allowed: {})",
            allow.join(", ")
        ),
    )
    .into_response();
    if let Ok(v) = HeaderValue::from_str(&allow.join(", ")) {
        resp.headers_mut().insert(header::ALLOW, v);
    }
    resp
}

async fn not_found(method: Method, uri: Uri) -> ApiError {
    ApiError::new(
        ErrorKind::NotFound,
        format!("no route for {method} {}", uri.path()),
    )
}

/// The admin routes need `Authorization: Bearer $RECS_ADMIN_TOKEN` when a token is
/// configured: 401 without credentials, 403 with wrong ones.
async fn authorize(State(svc): State<Arc<Service>>, req: Request, next: Next) -> Response {
    match check_token(svc.config.admin_token.as_deref(), req.headers()) {
        Ok(()) => next.run(req).await,
        Err(e) => e.into_response(),
    }
}

fn check_token(expected: Option<&str>, headers: &HeaderMap) -> Result<(), ApiError> {
    let Some(expected) = expected else {
        return Ok(());
    };
    let given = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "));
    match given {
        None => Err(ApiError::new(
            ErrorKind::Unauthorized,
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
        Some(_) => Err(ApiError::new(ErrorKind::Forbidden, "wrong admin token")),
    }
}

/// The client's `X-Request-ID` when valid, else a fresh UUID (and the error, if the
/// client sent an invalid one: it is not echoed back).
fn request_id(headers: &HeaderMap) -> (String, Option<ApiError>) {
    let Some(v) = headers.get("x-request-id") else {
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
fn query(uri: &Uri) -> Vec<(String, String)> {
    uri.query()
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

/// `GET /healthz`, public: the status, the version served, the rollout's shape and
/// the model's size (DESIGN.md's contract), nothing that helps an attacker: no salt
/// (it would let a caller pick their A/B variant), no registry location, no artifact
/// checksum, no load error. Those are for admins: `/rollout/status`.
async fn health(State(svc): State<Arc<Service>>) -> Result<Reply, ApiError> {
    let served = svc.served();
    match &served.primary {
        Ok(m) => Ok(ok_json(json!({
            "status": "ok",
            "version": m.version,
            "rollout": {
                "strategy": served.rollout.strategy,
                "primary_version": m.version,
                "canary_version": served.rollout.canary_version,
                "canary_percentage": served.rollout.canary_percentage,
            },
            "model": model_json(m),
            "catalog": {
                "movies": svc.titles.len(),
                "genres": svc.titles.genres(),
                "blocked": svc.blocked().ids.len(),
            },
        }))),
        Err(_) => Err(ApiError::new(
            ErrorKind::ModelUnavailable,
            "no model is being served (the reason: GET /rollout/status, an admin route)",
        )
        .health_unavailable()),
    }
}

/// The served model's name, version and size, as `/healthz` and `/rollout/status`
/// show it.
fn model_json(m: &recs_core::LoadedModel) -> Value {
    json!({
        "name": m.meta.model_name,
        "version": m.version,
        "users": m.model.n_users(),
        "items": m.model.n_items(),
        "factors": m.model.factors(),
        "created_at": m.meta.created_at,
        "load_seconds": m.load_seconds,
    })
}

fn with_field(mut v: Value, key: &str, value: Value) -> Value {
    v[key] = value;
    v
}

/// What this instance serves, for admins: the model's details, or why there is none.
fn served_json(svc: &Service) -> Value {
    let served = svc.served();
    match &served.primary {
        Ok(m) => json!({
            "status": "ok",
            "version": m.version,
            "model": with_field(model_json(m), "artifact_sha", m.artifact_sha.clone().into()),
            "registry": svc.config.registry,
        }),
        Err(reason) => json!({
            "status": "unavailable",
            "version": null,
            "error_type": ErrorKind::ModelUnavailable.name(),
            "detail": reason,
            "registry": svc.config.registry,
        }),
    }
}

async fn metrics(State(svc): State<Arc<Service>>) -> Reply {
    Reply::Metrics(svc.metrics.render_prometheus())
}

async fn openapi() -> Reply {
    Reply::StaticJson(OPENAPI)
}

/// The rollout as `/healthz` and `/rollout/status` show it.
fn rollout_json(svc: &Service) -> Value {
    let s = svc.served();
    json!({
        "strategy": s.rollout.strategy,
        "primary_version": s.primary.as_ref().ok().map(|m| m.version.clone()),
        "canary_version": s.rollout.canary_version,
        "canary_percentage": s.rollout.canary_percentage,
        "salt": s.rollout.salt,
        "environment": svc.config.environment,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoints_by_pattern() {
        for e in Endpoint::ALL {
            for p in e.patterns() {
                assert_eq!(Endpoint::of_pattern(p), e, "{p}");
            }
        }
        assert_eq!(Endpoint::of_pattern("/recommendx"), Endpoint::Unknown);
        assert_eq!(
            Endpoint::Recommend.methods("/recommend"),
            &[Method::GET, Method::POST]
        );
        assert_eq!(Endpoint::Recommend.methods("/recommend/12"), &[Method::GET]);
    }

    mod props {
        use super::super::*;
        use proptest::prelude::*;

        fn with_header(v: &[u8]) -> Option<HeaderMap> {
            let value = HeaderValue::from_bytes(v).ok()?;
            let mut headers = HeaderMap::new();
            headers.insert("x-request-id", value);
            Some(headers)
        }

        proptest! {
            #[test]
            fn request_ids_are_echoed_exactly_when_valid(v in prop::collection::vec(any::<u8>(), 0..140)) {
                let valid = !v.is_empty()
                    && v.len() <= 128
                    && v.iter().all(|b| b.is_ascii_alphanumeric() || b"-_.:".contains(b));
                let Some(headers) = with_header(&v) else {
                    // Not a legal header value: http refuses it before we see it.
                    return Ok(());
                };
                let (id, err) = request_id(&headers);
                if valid {
                    prop_assert!(err.is_none());
                    prop_assert_eq!(id.as_bytes(), &v[..]);
                } else {
                    let e = err.expect("refused");
                    prop_assert_eq!(e.status, StatusCode::BAD_REQUEST);
                    // Never echoed: a fresh UUID instead.
                    prop_assert_eq!(id.len(), 36);
                }
            }

            #[test]
            fn query_strings_decode_and_duplicates_are_refused(
                pairs in prop::collection::vec(("[a-z]{1,3}", "\\PC{0,10}"), 0..6),
            ) {
                let q: String = form_urlencoded::Serializer::new(String::new())
                    .extend_pairs(pairs.iter())
                    .finish();
                let uri = format!("/recommend/1?{q}");
                let Ok(uri) = uri.parse::<Uri>() else {
                    return Ok(());
                };
                let params = query(&uri);
                prop_assert_eq!(&params, &pairs);
                for (name, value) in &pairs {
                    let n = pairs.iter().filter(|(k, _)| k == name).count();
                    match param(&params, name) {
                        Ok(Some(v)) => prop_assert!(n == 1 && v == value),
                        Ok(None) => prop_assert!(false, "{name} is present"),
                        Err(e) => prop_assert!(n > 1 && e.error_type == "invalid_input"),
                    }
                }
            }
        }
    }
}
