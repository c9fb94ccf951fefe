//! The adapter between lambda_http's events and [`crate::api`]: the only Lambda-specific
//! code, shared by every HTTP function so each `main` stays a few lines. It also keeps
//! the served model current (active.json polling) and writes the EMF lines CloudWatch
//! turns into the alarms' metrics.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use bytes::Bytes;
use lambda_http::{Body, Request, RequestExt, Response};

use crate::api::{self, ApiError, Endpoint, Outcome, Route};
use crate::state::Service;
use recs_telemetry::emf;

/// Converts an API Gateway / Function URL request into a plain `http::Request`,
/// using the path without the stage prefix (`raw_http_path`).
fn to_http(event: Request) -> http::Request<Bytes> {
    let path = event.raw_http_path().to_string();
    let (mut parts, body) = event.into_parts();
    let path_and_query = match parts.uri.query() {
        Some(q) => format!("{path}?{q}"),
        None => path,
    };
    if let Ok(uri) = path_and_query.parse() {
        parts.uri = uri;
    }
    let body = match body {
        Body::Empty => Bytes::new(),
        Body::Text(t) => Bytes::from(t),
        Body::Binary(b) => Bytes::from(b),
        _ => Bytes::new(),
    };
    http::Request::from_parts(parts, body)
}

/// Converts a response back; JSON and text bodies stay text so API Gateway does not
/// base64-encode them.
fn from_http(resp: http::Response<Bytes>) -> Response<Body> {
    let (parts, body) = resp.into_parts();
    let body = match String::from_utf8(body.to_vec()) {
        Ok(text) => Body::Text(text),
        Err(e) => Body::Binary(e.into_bytes()),
    };
    Response::from_parts(parts, body)
}

/// Keeps the served model current. With no model, the retry happens in the request
/// (it cannot be answered otherwise); with one, the poll runs in the background and
/// the request answers from the model already loaded.
async fn keep_current(svc: &Arc<Service>) {
    if !svc.refresh_due() {
        return;
    }
    if svc.model().is_err() {
        svc.refresh().await;
    } else {
        let svc = svc.clone();
        tokio::spawn(async move { svc.refresh().await });
    }
}

/// Answers one invocation if its route is one of `allowed`, and returns the response
/// plus the EMF lines to write for it. A panic becomes a counted 500, never a silent
/// crash.
pub async fn respond_with_metrics(
    svc: &Arc<Service>,
    allowed: &'static [Endpoint],
    event: Request,
    cold_start: bool,
) -> (http::Response<Bytes>, Vec<String>) {
    keep_current(svc).await;
    let req = to_http(event);
    // The endpoint named if the handler panics (the handler routes the request itself).
    let endpoint = Route::of(req.uri().path()).endpoint;
    let task_svc = svc.clone();
    let (resp, outcome) =
        tokio::spawn(async move { api::handle_with_outcome(&task_svc, allowed, &req).await })
            .await
            .unwrap_or_else(|_| internal_error(endpoint));
    // Loads, failures, switches and shadow comparisons since the last invocation
    // (start-up included), then this request.
    let mut lines = svc.metrics.take_emf();
    lines.extend(emf::request_lines(&outcome, cold_start));
    (resp, lines)
}

fn internal_error(endpoint: Endpoint) -> (http::Response<Bytes>, Outcome) {
    tracing::error!(endpoint = endpoint.name(), "handler panicked");
    let error = ApiError {
        status: http::StatusCode::INTERNAL_SERVER_ERROR,
        error_type: "internal_error",
        detail: "internal error".into(),
    };
    let outcome = Outcome {
        endpoint: endpoint.name(),
        status: 500,
        latency_seconds: 0.0,
        error_type: Some(error.error_type),
        request_id: String::new(),
        model_version: None,
    };
    (error.into_response(), outcome)
}

static COLD: AtomicBool = AtomicBool::new(true);

/// Runs an HTTP Lambda function answering `routes`: logging set up and the model
/// loaded once per execution environment (INIT), then one [`respond`] per event.
pub async fn run_http(routes: &'static [Endpoint]) -> Result<(), lambda_http::Error> {
    recs_telemetry::init_logging();
    let config = crate::Config::from_env()?;
    let svc = Arc::new(Service::start_with(config, crate::Metrics::with_emf_outbox()).await);
    let svc = &svc;
    lambda_http::run(lambda_http::service_fn(move |event| async move {
        Ok::<_, std::convert::Infallible>(respond(svc, routes, event).await)
    }))
    .await
}

/// Answers one Lambda invocation and writes its EMF lines to stdout.
pub async fn respond(
    svc: &Arc<Service>,
    allowed: &'static [Endpoint],
    event: Request,
) -> Response<Body> {
    let cold_start = COLD.swap(false, Ordering::Relaxed);
    let (resp, lines) = respond_with_metrics(svc, allowed, event, cold_start).await;
    emf::emit(&lines);
    from_http(resp)
}
