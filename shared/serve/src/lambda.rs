//! The Lambda side of the one app: lambda_http's events become plain requests for
//! [`crate::api::app`] (stage prefix stripped, query kept as the client sent it), and
//! one layer keeps the served model current (active.json polling) and turns each
//! invocation's outcome into the EMF lines CloudWatch makes the alarms' metrics of.
//! Each HTTP function's `main` is one call to [`run_http`] with its routes.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use axum::extract::State;
use axum::middleware::{self, Next};
use axum::Router;
use bytes::Bytes;
use lambda_http::request::RequestContext;
use lambda_http::{Body, Request, RequestExt};
use tower::ServiceExt;

use crate::api::{self, Endpoint, Outcome};
use crate::state::Service;
use recs_telemetry::emf;

/// Converts an API Gateway / Function URL request into a plain `http::Request`,
/// using the path without the stage prefix (`raw_http_path`).
/// The query: lambda_http puts API Gateway's `rawQueryString` (as the client sent it,
/// percent-encoded) in the URI. An event without one still carries the parameters
/// in `queryStringParameters`, already percent-decoded by API Gateway: they are
/// re-encoded here, so `/switch?model=../x` is refused the same way either way.
fn to_http(event: Request) -> http::Request<axum::body::Body> {
    let (stage, claims) = match event.request_context_ref() {
        Some(RequestContext::ApiGatewayV2(ctx)) => (
            ctx.stage.clone(),
            ctx.authorizer
                .as_ref()
                .and_then(|a| a.jwt.as_ref())
                .map(|jwt| api::Claims(jwt.claims.clone())),
        ),
        _ => (None, None),
    };
    let path = strip_stage(event.raw_http_path(), stage.as_deref()).to_string();
    let decoded = event.query_string_parameters();
    let (mut parts, body) = event.into_parts();
    let query = match parts.uri.query() {
        Some(q) => Some(q.to_string()),
        None if !decoded.is_empty() => Some(
            form_urlencoded::Serializer::new(String::new())
                .extend_pairs(decoded.iter())
                .finish(),
        ),
        None => None,
    };
    let path_and_query = match query {
        Some(q) => format!("{path}?{q}"),
        None => path,
    };
    if let Ok(uri) = path_and_query.parse() {
        parts.uri = uri;
    }
    if let Some(claims) = claims {
        parts.extensions.insert(claims);
    }
    let body = match body {
        Body::Empty => Bytes::new(),
        Body::Text(t) => Bytes::from(t),
        Body::Binary(b) => Bytes::from(b),
        _ => Bytes::new(),
    };
    http::Request::from_parts(parts, axum::body::Body::from(body))
}

/// The route path without a named stage's prefix: an HTTP API's `rawPath` carries it
/// (`/prod/recommend/1` on stage `prod`); the `$default` stage has none.
fn strip_stage<'p>(path: &'p str, stage: Option<&str>) -> &'p str {
    match stage {
        Some(stage) if stage != "$default" && !stage.is_empty() => path
            .strip_prefix('/')
            .and_then(|p| p.strip_prefix(stage))
            .filter(|rest| rest.is_empty() || rest.starts_with('/'))
            .map_or(path, |rest| if rest.is_empty() { "/" } else { rest }),
        _ => path,
    }
}

/// Converts a response for tests and the drills: the body collected, JSON and text
/// bodies as text (as API Gateway receives them).
fn from_http(resp: http::Response<Bytes>) -> lambda_http::Response<Body> {
    let (parts, body) = resp.into_parts();
    let body = match String::from_utf8(body.to_vec()) {
        Ok(text) => Body::Text(text),
        Err(e) => Body::Binary(e.into_bytes()),
    };
    lambda_http::Response::from_parts(parts, body)
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
        // Takedowns are checked before answering (one conditional GET per poll
        // interval): the environment may freeze as soon as the answer is sent, and a
        // blocked movie must not be served past the interval. The model poll
        // (downloads, verification) stays off the request path.
        svc.refresh_blocked().await;
        let svc = svc.clone();
        tokio::spawn(async move { svc.refresh().await });
    }
}

/// Whether an invocation is the execution environment's first (a test sets it).
#[derive(Debug, Clone, Copy)]
struct ColdStart(bool);

/// The EMF lines of one invocation, on the response until they are written.
#[derive(Debug, Clone)]
struct EmfLines(Vec<String>);

static COLD: AtomicBool = AtomicBool::new(true);

/// The invocation layer: the model kept current first; after the answer, the EMF
/// lines of what happened since the last invocation (loads, failures, switches,
/// shadow comparisons, start-up included), then this request's.
async fn invocation(
    State(svc): State<Arc<Service>>,
    req: axum::extract::Request,
    next: Next,
) -> axum::response::Response {
    keep_current(&svc).await;
    let cold = match req.extensions().get::<ColdStart>() {
        Some(c) => c.0,
        None => COLD.swap(false, Ordering::Relaxed),
    };
    let mut resp = next.run(req).await;
    let mut lines = svc.metrics.take_emf();
    if let Some(outcome) = resp.extensions().get::<Outcome>() {
        lines.extend(emf::request_lines(outcome, cold));
    }
    resp.extensions_mut().insert(EmfLines(lines));
    resp
}

/// The app of an HTTP function answering `routes`: [`api::app`] with the
/// invocation layer.
pub fn app(svc: Arc<Service>, routes: &[Endpoint]) -> Router {
    with_invocation_layer(api::app(svc.clone(), routes), svc)
}

fn with_invocation_layer(router: Router, svc: Arc<Service>) -> Router {
    router.layer(middleware::from_fn_with_state(svc, invocation))
}

/// Runs an HTTP Lambda function answering `routes`: logging set up and the model
/// loaded once per execution environment (INIT), then the app per event.
pub async fn run_http(routes: &'static [Endpoint]) -> Result<(), lambda_http::Error> {
    crate::alloc::tune();
    recs_telemetry::init_logging();
    let mut config = crate::Config::from_env()?;
    if config.admin_token.take().is_some() {
        // Under AWS_IAM the Authorization header carries the SigV4 signature.
        tracing::warn!(
            "RECS_ADMIN_TOKEN is ignored on Lambda: the admin routes are IAM-authorised"
        );
    }
    let svc = Arc::new(Service::start_with(config, crate::Metrics::with_emf_outbox()).await);
    let app =
        app(svc, routes)
            .map_request(to_http)
            .map_response(|mut resp: axum::response::Response| {
                if let Some(EmfLines(lines)) = resp.extensions_mut().remove() {
                    emf::emit(&lines);
                }
                resp
            });
    lambda_http::run(app).await
}

/// One invocation through `app`: the response (body collected) and its EMF lines.
async fn invoke(
    app: Router,
    event: Request,
    cold_start: bool,
) -> (http::Response<Bytes>, Vec<String>) {
    let mut req = to_http(event);
    req.extensions_mut().insert(ColdStart(cold_start));
    let resp = match app.oneshot(req).await {
        Ok(resp) => resp,
        Err(never) => match never {},
    };
    let (mut parts, body) = resp.into_parts();
    let lines = parts
        .extensions
        .remove::<EmfLines>()
        .map(|l| l.0)
        .unwrap_or_default();
    // The bodies are built in memory (at most a few hundred KB): reading cannot fail.
    let body = axum::body::to_bytes(body, usize::MAX)
        .await
        .unwrap_or_default();
    (http::Response::from_parts(parts, body), lines)
}

/// Answers one invocation as the function answering `allowed` would, and returns
/// the response plus the EMF lines it writes (the drills and tests read them).
pub async fn respond_with_metrics(
    svc: &Arc<Service>,
    allowed: &[Endpoint],
    event: Request,
    cold_start: bool,
) -> (http::Response<Bytes>, Vec<String>) {
    invoke(app(svc.clone(), allowed), event, cold_start).await
}

/// Answers one invocation and writes its EMF lines to stdout, as `bootstrap` does.
pub async fn respond(
    svc: &Arc<Service>,
    allowed: &[Endpoint],
    event: Request,
) -> lambda_http::Response<Body> {
    let cold_start = COLD.swap(false, Ordering::Relaxed);
    let (resp, lines) = respond_with_metrics(svc, allowed, event, cold_start).await;
    emf::emit(&lines);
    from_http(resp)
}

#[cfg(test)]
mod tests {
    use super::*;
    use recs_core::Registry;
    use recs_train::gen_data::{generate, GenConfig};
    use serde_json::Value;
    use std::time::{Duration, Instant};

    const RECOMMEND: &[Endpoint] = &[Endpoint::Recommend];

    /// An `events/` file as JSON, to be changed by a test before lambda_http parses it.
    fn event_json(name: &str) -> Value {
        let path = format!("{}/../../events/{name}", env!("CARGO_MANIFEST_DIR"));
        serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap()
    }

    fn event(v: &Value) -> Request {
        lambda_http::request::from_str(&v.to_string()).unwrap()
    }

    async fn publish(location: &str, version: &str, seed: u64) {
        let data = generate(&GenConfig {
            users: 50,
            items: 40,
            seed,
            ..GenConfig::default()
        });
        Registry::open(location)
            .unwrap()
            .publish(version, &data.planted_artifacts())
            .await
            .unwrap();
    }

    /// A service over `location` that polls on every invocation.
    async fn service(location: &str) -> Arc<Service> {
        Arc::new(
            Service::start(crate::Config {
                registry: location.to_string(),
                poll: Duration::ZERO,
                ..crate::Config::default()
            })
            .await,
        )
    }

    async fn call(svc: &Arc<Service>, allowed: &'static [Endpoint], e: &Value) -> (u16, Value) {
        let (resp, _) = respond_with_metrics(svc, allowed, event(e), false).await;
        let body = serde_json::from_slice(resp.body()).unwrap();
        (resp.status().as_u16(), body)
    }

    /// Standard base64 with padding (RFC 4648), a few lines rather than a crate.
    fn base64(bytes: &[u8]) -> String {
        const A: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
        let mut out = String::new();
        for c in bytes.chunks(3) {
            let n = (u32::from(c[0]) << 16)
                | (u32::from(*c.get(1).unwrap_or(&0)) << 8)
                | u32::from(*c.get(2).unwrap_or(&0));
            for i in 0..4 {
                if i <= c.len() {
                    out.push(A[((n >> (18 - 6 * i)) & 63) as usize] as char);
                } else {
                    out.push('=');
                }
            }
        }
        out
    }

    #[test]
    fn base64_matches_rfc4648_vectors() {
        assert_eq!(base64(b"foobar"), "Zm9vYmFy");
        assert_eq!(base64(b"fooba"), "Zm9vYmE=");
        assert_eq!(base64(b"foob"), "Zm9vYg==");
    }

    #[test]
    fn stage_prefixes_are_stripped_only_for_named_stages() {
        assert_eq!(
            strip_stage("/prod/recommend/1", Some("prod")),
            "/recommend/1"
        );
        assert_eq!(strip_stage("/prod", Some("prod")), "/");
        assert_eq!(strip_stage("/production/x", Some("prod")), "/production/x");
        assert_eq!(
            strip_stage("/recommend/1", Some("$default")),
            "/recommend/1"
        );
        assert_eq!(strip_stage("/recommend/1", None), "/recommend/1");
        assert_eq!(strip_stage("/recommend/1", Some("prod")), "/recommend/1");
    }

    #[tokio::test]
    async fn stage_prefixed_paths_reach_their_route() {
        let dir = tempfile::tempdir().unwrap();
        let location = dir.path().to_str().unwrap();
        publish(location, "v0.1", 1).await;
        let svc = service(location).await;
        // A named stage: API Gateway's rawPath and http.path carry the stage.
        let mut e = event_json("recommend.json");
        e["rawPath"] = "/prod/recommend/1".into();
        e["requestContext"]["http"]["path"] = "/prod/recommend/1".into();
        e["requestContext"]["stage"] = "prod".into();
        let (status, body) = call(&svc, RECOMMEND, &e).await;
        assert_eq!(status, 200, "{body}");
        assert_eq!(body["user_id"], 1);
        // A path under another stage's name is not ours.
        e["rawPath"] = "/other/recommend/1".into();
        let (status, _) = call(&svc, RECOMMEND, &e).await;
        assert_eq!(status, 404);
    }

    #[tokio::test]
    async fn base64_bodies_and_decoded_query_strings() {
        let dir = tempfile::tempdir().unwrap();
        let location = dir.path().to_str().unwrap();
        publish(location, "v0.1", 1).await;
        publish(location, "v0.2", 2).await;
        let svc = service(location).await;
        assert_eq!(svc.model().unwrap().version, "v0.2");
        // POST /switch with its JSON body base64-encoded, as API Gateway sends a
        // body it treats as binary.
        let mut e = event_json("switch-post.json");
        e["body"] = base64(br#"{"model":"v0.1"}"#).into();
        e["isBase64Encoded"] = true.into();
        let (status, body) = call(&svc, &Endpoint::ADMIN, &e).await;
        assert_eq!(status, 200, "{body}");
        assert_eq!(body["model_version"], "v0.1");

        // The hostile name as API Gateway delivers it: rawQueryString encoded,
        // queryStringParameters decoded. Refused by name either way.
        let hostile = event_json("switch-hostile.json");
        assert_eq!(
            hostile["queryStringParameters"]["model"], "../../etc/passwd",
            "the event holds the decoded value, as API Gateway sends it"
        );
        let (status, body) = call(&svc, &Endpoint::ADMIN, &hostile).await;
        assert_eq!(
            (status, body["error_type"].as_str()),
            (400, Some("invalid_model")),
            "{body}"
        );
        // Only the decoded parameters (no rawQueryString): still read, still refused.
        let mut decoded_only = hostile.clone();
        decoded_only
            .as_object_mut()
            .unwrap()
            .remove("rawQueryString");
        let (status, body) = call(&svc, &Endpoint::ADMIN, &decoded_only).await;
        assert_eq!(
            (status, body["error_type"].as_str()),
            (400, Some("invalid_model")),
            "{body}"
        );
        // And a good name given only decoded switches.
        let mut good = event_json("switch-get.json");
        good.as_object_mut().unwrap().remove("rawQueryString");
        good["queryStringParameters"] = serde_json::json!({"model": "v0.2"});
        let (status, body) = call(&svc, &Endpoint::ADMIN, &good).await;
        assert_eq!(status, 200, "{body}");
        assert_eq!(body["model_version"], "v0.2");
        // Recommend reads k from decoded-only parameters too.
        let mut k = event_json("recommend.json");
        k.as_object_mut().unwrap().remove("rawQueryString");
        k["queryStringParameters"] = serde_json::json!({"k": "3"});
        let (status, body) = call(&svc, RECOMMEND, &k).await;
        assert_eq!(status, 200, "{body}");
        assert_eq!(body["items"].as_array().unwrap().len(), 3);
    }

    #[tokio::test]
    async fn a_panicking_handler_is_a_counted_500() {
        let dir = tempfile::tempdir().unwrap();
        let location = dir.path().to_str().unwrap();
        publish(location, "v0.1", 1).await;
        let svc = service(location).await;
        let panicking = axum::Router::new().route(
            "/recommend/{*user_id}",
            axum::routing::get(|| async { panic!("injected") as &'static str }),
        );
        let app = with_invocation_layer(api::with_contract(panicking, svc.clone()), svc.clone());
        let (resp, lines) = invoke(app, event(&event_json("recommend.json")), false).await;
        assert_eq!(resp.status(), 500);
        let body: Value = serde_json::from_slice(resp.body()).unwrap();
        assert_eq!(body["error_type"], "internal_error");
        let docs: Vec<Value> = lines
            .iter()
            .map(|l| recs_telemetry::emf::check_document(l).unwrap())
            .collect();
        assert_eq!(docs[0]["status_class"], "5xx", "{docs:?}");
        assert!(
            docs.iter().any(|d| d["error_type"] == "internal_error"),
            "{docs:?}"
        );
        assert_eq!(svc.metrics.requests("recommend", 500), 1);
        // The next invocation is answered normally.
        let (status, _) = call(&svc, RECOMMEND, &event_json("recommend.json")).await;
        assert_eq!(status, 200);
    }

    #[tokio::test]
    async fn a_switch_elsewhere_is_seen_through_the_poll() {
        let dir = tempfile::tempdir().unwrap();
        let location = dir.path().to_str().unwrap();
        publish(location, "v0.1", 1).await;
        publish(location, "v0.2", 2).await;
        let (a, b) = (service(location).await, service(location).await);
        let (_, body) = call(&b, RECOMMEND, &event_json("recommend.json")).await;
        assert_eq!(body["model"], "v0.2");
        a.switch("v0.1").await.unwrap();
        // b polls in the background of its invocations; it follows within a few.
        let start = Instant::now();
        loop {
            let (status, body) = call(&b, RECOMMEND, &event_json("recommend.json")).await;
            assert_eq!(status, 200, "{body}");
            if body["model"] == "v0.1" {
                break;
            }
            assert!(
                start.elapsed() < Duration::from_secs(10),
                "b never followed the switch"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    #[tokio::test]
    async fn no_model_retries_in_the_request_and_recovers_when_the_registry_returns() {
        let dir = tempfile::tempdir().unwrap();
        let location = dir.path().join("registry");
        let away = dir.path().join("away");
        let location_s = location.to_str().unwrap().to_string();
        publish(&location_s, "v0.1", 1).await;
        // The registry is unreachable at cold start.
        std::fs::rename(&location, &away).unwrap();
        let svc = service(&location_s).await;
        let (status, body) = call(&svc, RECOMMEND, &event_json("recommend.json")).await;
        assert_eq!(
            (status, body["error_type"].as_str()),
            (503, Some("model_unavailable")),
            "{body}"
        );
        // It comes back: the very next invocation loads the model in the request.
        std::fs::rename(&away, &location).unwrap();
        let (status, body) = call(&svc, RECOMMEND, &event_json("recommend.json")).await;
        assert_eq!(status, 200, "{body}");
        assert_eq!(body["model"], "v0.1");
    }
}
