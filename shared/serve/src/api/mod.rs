//! The HTTP contract (DESIGN.md, "HTTP API"): one route table, input validation,
//! response and error bodies, `X-Request-ID`, provenance, and the model-management
//! routes. Lambda functions and the local server both call [`handle`] / [`route`]
//! with a plain `http::Request`.

mod admin;
mod error;
mod experiment;
mod recommend;

use std::sync::OnceLock;
use std::time::Instant;

use bytes::Bytes;
use http::{header, HeaderValue, Method, Request, Response, StatusCode};
use serde_json::{json, Value};

pub use error::ApiError;
pub use recs_telemetry::emf::Outcome;

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
    /// No route matched.
    Unknown,
}

/// The route table, built once. matchit is axum's router: the path patterns here
/// are the API Gateway routes of `infra/template.yaml`.
fn router() -> &'static matchit::Router<Endpoint> {
    static ROUTER: OnceLock<matchit::Router<Endpoint>> = OnceLock::new();
    ROUTER.get_or_init(|| {
        let mut r = matchit::Router::new();
        for (path, endpoint) in [
            ("/recommend/{*user_id}", Endpoint::Recommend),
            // No id, or an empty one: still the recommend route (a 400, not a 404).
            ("/recommend", Endpoint::Recommend),
            ("/recommend/", Endpoint::Recommend),
            ("/healthz", Endpoint::Health),
            ("/metrics", Endpoint::Metrics),
            ("/openapi.json", Endpoint::OpenApi),
            ("/switch", Endpoint::Switch),
            ("/rollout/status", Endpoint::RolloutStatus),
            ("/rollout/update", Endpoint::RolloutUpdate),
            ("/trace/{*request_id}", Endpoint::Trace),
            ("/experiment/analyze", Endpoint::ExperimentAnalyze),
            ("/experiment/promote", Endpoint::ExperimentPromote),
        ] {
            r.insert(path, endpoint)
                .expect("static routes do not overlap");
        }
        r
    })
}

/// A matched request path: its endpoint and the raw `{user_id}`, if any.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Route<'p> {
    /// The endpoint the path belongs to ([`Endpoint::Unknown`] when none).
    pub endpoint: Endpoint,
    user_id: &'p str,
}

impl<'p> Route<'p> {
    /// Matches `path` against the route table.
    pub fn of(path: &'p str) -> Route<'p> {
        match router().at(path) {
            Ok(m) => Route {
                endpoint: *m.value,
                user_id: m
                    .params
                    .get("user_id")
                    .or_else(|| m.params.get("request_id"))
                    .unwrap_or(""),
            },
            Err(_) => Route {
                endpoint: Endpoint::Unknown,
                user_id: "",
            },
        }
    }
}

impl Route<'_> {
    /// The methods the matched path accepts: `POST /recommend` (fold-in, the user
    /// in the body) as well as GET; every other path as its endpoint says.
    fn methods(&self) -> &'static [Method] {
        if self.endpoint == Endpoint::Recommend && self.user_id.is_empty() {
            &[Method::GET, Method::POST]
        } else {
            self.endpoint.methods()
        }
    }
}

impl Endpoint {
    /// Every endpoint `recs serve` answers.
    pub const ALL: [Endpoint; 10] = [
        Endpoint::Recommend,
        Endpoint::Health,
        Endpoint::Metrics,
        Endpoint::Switch,
        Endpoint::RolloutStatus,
        Endpoint::RolloutUpdate,
        Endpoint::OpenApi,
        Endpoint::Trace,
        Endpoint::ExperimentAnalyze,
        Endpoint::ExperimentPromote,
    ];
    /// The routes of the `switch` Lambda function.
    pub const ADMIN: [Endpoint; 6] = [
        Endpoint::Switch,
        Endpoint::RolloutStatus,
        Endpoint::RolloutUpdate,
        Endpoint::ExperimentAnalyze,
        Endpoint::ExperimentPromote,
        Endpoint::Trace,
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
            Endpoint::OpenApi => "openapi",
            Endpoint::Trace => "trace",
            Endpoint::ExperimentAnalyze => "experiment_analyze",
            Endpoint::ExperimentPromote => "experiment_promote",
            Endpoint::Unknown => "unknown",
        }
    }

    /// The methods the endpoint accepts.
    fn methods(self) -> &'static [Method] {
        match self {
            Endpoint::Switch => &[Method::GET, Method::POST],
            Endpoint::RolloutUpdate | Endpoint::ExperimentPromote => &[Method::POST],
            _ => &[Method::GET],
        }
    }

    /// Routes that change what is served need authorization.
    fn is_admin(self) -> bool {
        matches!(
            self,
            Endpoint::Switch
                | Endpoint::RolloutUpdate
                | Endpoint::ExperimentAnalyze
                | Endpoint::ExperimentPromote
        )
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
    let timestamp_ms = recs_core::time::now_ms().max(0) as u64;
    let (request_id, id_error) = request_id(req);
    let route = Route::of(req.uri().path());
    let endpoint = route.endpoint;
    let mut model_version = None;
    let result = match id_error {
        Some(e) => Err(e),
        None => dispatch(svc, allowed, route, req, &request_id, timestamp_ms, started)
            .await
            .map(|(reply, version)| {
                model_version = version;
                reply
            }),
    };
    // Drills only: off unless RECS_FAULT_INJECTION=1 (serve::fault).
    let result = match crate::fault::on_request(endpoint.name(), model_version.as_deref()).await {
        Some(injected) => Err(injected),
        None => result,
    };
    let (status, error_type, body, content_type) = match result {
        Ok(Reply::Json(status, body, error_type)) => (status, error_type, body, "application/json"),
        Ok(Reply::Text(t)) => (StatusCode::OK, None, t, crate::metrics::CONTENT_TYPE),
        Err(e) => {
            // One structured line per refused request: what operators grep for.
            tracing::info!(%request_id, endpoint = endpoint.name(), status = e.status.as_u16(),
                error_type = e.error_type, detail = %e.detail, "request refused");
            (e.status, Some(e.error_type), e.body(), "application/json")
        }
    };
    let latency_seconds = started.elapsed().as_secs_f64();
    if endpoint == Endpoint::Recommend && status != StatusCode::OK {
        recommend::record_failure(
            svc,
            route.user_id,
            &request_id,
            timestamp_ms,
            status,
            latency_seconds * 1e3,
        );
    }
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
        let allow: Vec<&str> = route.methods().iter().map(Method::as_str).collect();
        builder = builder.header(header::ALLOW, allow.join(", "));
    }
    if status == StatusCode::UNAUTHORIZED {
        builder = builder.header(header::WWW_AUTHENTICATE, "Bearer");
    }
    let resp = builder
        .body(Bytes::from(body))
        .expect("static headers are valid");
    let outcome = Outcome {
        endpoint: endpoint.name(),
        status: status.as_u16(),
        latency_seconds,
        error_type,
        request_id,
        model_version,
    };
    (resp, outcome)
}

/// Routing, method and authorization checks, then the endpoint itself. Returns the
/// reply and, for a recommendation, the version that answered.
async fn dispatch(
    svc: &Service,
    allowed: &[Endpoint],
    route: Route<'_>,
    req: &Request<Bytes>,
    request_id: &str,
    timestamp_ms: u64,
    started: Instant,
) -> Result<(Reply, Option<String>), ApiError> {
    let endpoint = route.endpoint;
    if endpoint == Endpoint::Unknown || !allowed.contains(&endpoint) {
        return Err(ApiError::new(
            StatusCode::NOT_FOUND,
            "not_found",
            format!("no route for {} {}", req.method(), req.uri().path()),
        ));
    }
    if !route.methods().contains(req.method()) {
        return Err(ApiError::new(
            StatusCode::METHOD_NOT_ALLOWED,
            "method_not_allowed",
            format!("{} is not allowed on {}", req.method(), req.uri().path()),
        ));
    }
    authorize(svc, endpoint, req)?;
    let reply = match endpoint {
        Endpoint::Recommend => {
            let (reply, version) =
                recommend::recommend(svc, req, route.user_id, request_id, timestamp_ms, started)?;
            return Ok((reply, Some(version)));
        }
        Endpoint::Health => health(svc),
        Endpoint::Metrics => Reply::Text(svc.metrics.render_prometheus()),
        Endpoint::Switch => admin::switch(svc, req).await?,
        Endpoint::RolloutStatus => admin::rollout_status(svc),
        Endpoint::RolloutUpdate => admin::rollout_update(svc, req).await?,
        Endpoint::ExperimentAnalyze => experiment::analyze(svc, req).await?,
        Endpoint::ExperimentPromote => experiment::promote(svc, req).await?,
        Endpoint::OpenApi => Reply::Json(StatusCode::OK, OPENAPI.to_string(), None),
        // The Python service's shape; 404 "not found" like its API.
        Endpoint::Trace => experiment::trace(svc, req, route.user_id).await?,
        Endpoint::Unknown => unreachable!("refused above"),
    };
    Ok((reply, None))
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

fn health(svc: &Service) -> Reply {
    let served = svc.served();
    match &served.primary {
        Ok(m) => ok_json(json!({
            "status": "ok",
            "version": m.version,
            "rollout": rollout_json(svc),
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
    fn endpoints_by_path() {
        let at = |p| Route::of(p).endpoint;
        assert_eq!(at("/recommend/1"), Endpoint::Recommend);
        assert_eq!(Route::of("/recommend/12").user_id, "12");
        assert_eq!(Route::of("/recommend/1/2").user_id, "1/2");
        assert_eq!(at("/recommend"), Endpoint::Recommend);
        assert_eq!(at("/recommend/"), Endpoint::Recommend);
        assert_eq!(at("/healthz"), Endpoint::Health);
        assert_eq!(at("/metrics"), Endpoint::Metrics);
        assert_eq!(at("/recommendx"), Endpoint::Unknown);
        assert_eq!(at("/switch"), Endpoint::Switch);
        assert_eq!(at("/rollout/update"), Endpoint::RolloutUpdate);
        assert_eq!(at("/healthz/"), Endpoint::Unknown);
    }

    mod props {
        use super::super::*;
        use proptest::prelude::*;

        fn with_header(v: &[u8]) -> Option<Request<Bytes>> {
            let value = HeaderValue::from_bytes(v).ok()?;
            let mut req = Request::new(Bytes::new());
            req.headers_mut().insert("x-request-id", value);
            Some(req)
        }

        proptest! {
            #[test]
            fn request_ids_are_echoed_exactly_when_valid(v in prop::collection::vec(any::<u8>(), 0..140)) {
                let valid = !v.is_empty()
                    && v.len() <= 128
                    && v.iter().all(|b| b.is_ascii_alphanumeric() || b"-_.:".contains(b));
                let Some(req) = with_header(&v) else {
                    // Not a legal header value: http refuses it before we see it.
                    return Ok(());
                };
                let (id, err) = request_id(&req);
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
                let Ok(req) = Request::builder().uri(uri.as_str()).body(Bytes::new()) else {
                    return Ok(());
                };
                let params = query(&req);
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

            #[test]
            fn any_path_routes_without_panic(p in "/\\PC{0,30}") {
                let _ = Route::of(&p);
            }
        }
    }
}
