//! Helpers shared by the end-to-end tests: where `../shared` is, registries written
//! on the fly from synthetic data, requests, and a minimal HTTP/1.1 client.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::time::Duration;

use bytes::Bytes;
use recs_core::Titles;
use recs_core::{LoadedModel, Registry};
use recs_serve::{Config, Service};
use recs_train::gen_data::{generate, GenConfig};

/// `../shared` beside the repository (or `$RECS_SHARED_DIR`), when present.
pub fn shared_dir() -> Option<PathBuf> {
    let dir = std::env::var_os("RECS_SHARED_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../../shared"));
    dir.join("fixtures").is_dir().then_some(dir)
}

/// True when running in CI (`CI=true`, as CI sets it): a missing `../shared` is then
/// a failure, not a skip, so CI notices when the tests that need it stop running.
pub fn in_ci() -> bool {
    std::env::var("CI").is_ok_and(|v| v.eq_ignore_ascii_case("true") || v == "1")
}

/// `shared_dir()`, or prints why the test is skipped; panics under `CI=true`.
pub fn shared_or_skip(test: &str) -> Option<PathBuf> {
    let dir = shared_dir();
    if dir.is_none() {
        assert!(
            !in_ci(),
            "{test}: ../shared (fixtures, MovieLens) is missing and CI=true: \
             the tests that need it must run in CI"
        );
        eprintln!(
            "SKIP {test}: ../shared (fixtures, MovieLens) is not present beside the repository"
        );
    }
    dir
}

/// A small synthetic configuration: fast to generate, big enough to rank.
pub fn small_config() -> GenConfig {
    GenConfig {
        users: 120,
        items: 90,
        factors: 6,
        ratings_per_user: 15,
        ..GenConfig::default()
    }
}

/// A temporary registry holding one published planted version, `v0.1`.
pub fn synthetic_registry() -> (tempfile::TempDir, Registry) {
    let dir = tempfile::tempdir().expect("tempdir");
    let registry = Registry::open(dir.path().to_str().expect("utf-8 path")).expect("open");
    let artifacts = generate(&small_config()).planted_artifacts();
    block_on(registry.publish("v0.1", &artifacts)).expect("publish");
    (dir, registry)
}

/// Publishes v0.1 and v0.2 into `registry`: the same users and items with other
/// factors (seed 7), so the two versions rank differently (rollout tests).
pub async fn publish_two_versions(registry: &Registry) {
    let v1 = generate(&small_config()).planted_artifacts();
    registry.publish("v0.1", &v1).await.expect("publish v0.1");
    let other = GenConfig {
        seed: 7,
        ..small_config()
    };
    registry
        .publish("v0.2", &generate(&other).planted_artifacts())
        .await
        .expect("publish v0.2");
}

/// Runs a future to completion on a fresh current-thread runtime.
pub fn block_on<F: std::future::Future>(f: F) -> F::Output {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime")
        .block_on(f)
}

/// A service over a loaded model with default configuration.
pub fn service(model: LoadedModel, titles: Titles) -> std::sync::Arc<Service> {
    std::sync::Arc::new(Service::with_model(Config::default(), model, titles))
}

/// A GET request for `uri` with optional headers.
pub fn get(uri: &str, headers: &[(&str, &str)]) -> http::Request<Bytes> {
    let mut b = http::Request::builder().method("GET").uri(uri);
    for (k, v) in headers {
        b = b.header(*k, *v);
    }
    b.body(Bytes::new()).expect("request")
}

/// The JSON body of a response.
pub fn json(resp: &http::Response<Bytes>) -> serde_json::Value {
    serde_json::from_slice(resp.body()).unwrap_or_else(|e| {
        panic!(
            "body is not JSON ({e}): {}",
            String::from_utf8_lossy(resp.body())
        )
    })
}

/// The `items` (movie ids) of a recommend response body.
pub fn items(body: &serde_json::Value) -> Vec<i64> {
    body["items"]
        .as_array()
        .expect("items is an array")
        .iter()
        .map(|v| v.as_i64().expect("integer movie id"))
        .collect()
}

/// A raw HTTP/1.1 GET over TCP: (status, lower-cased headers, body).
pub fn http_get(
    addr: SocketAddr,
    path: &str,
    headers: &[(&str, &str)],
) -> (u16, Vec<(String, String)>, String) {
    let mut s = TcpStream::connect(addr).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(10)))
        .expect("timeout");
    let mut req = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n");
    for (k, v) in headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    req.push_str("\r\n");
    s.write_all(req.as_bytes()).expect("write");
    let mut raw = Vec::new();
    s.read_to_end(&mut raw).expect("read");
    let text = String::from_utf8_lossy(&raw).to_string();
    let (head, body) = text.split_once("\r\n\r\n").expect("HTTP response");
    let mut lines = head.lines();
    let status = lines
        .next()
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|c| c.parse().ok())
        .expect("status line");
    let headers = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_string()))
        .collect();
    (status, headers, body.to_string())
}

/// The one way the tests ask the API: the app answering `routes`
/// ([`recs_serve::api::app`]) called with `tower::ServiceExt::oneshot`, no server
/// (as axum's `examples/testing` does); the body collected.
pub async fn call(
    svc: &std::sync::Arc<Service>,
    routes: &[recs_serve::api::Endpoint],
    req: &http::Request<Bytes>,
) -> http::Response<Bytes> {
    use tower::ServiceExt;
    let mut copy = http::Request::builder()
        .method(req.method().clone())
        .uri(req.uri().clone());
    for (k, v) in req.headers() {
        copy = copy.header(k, v);
    }
    let copy = copy
        .body(axum::body::Body::from(req.body().clone()))
        .expect("request");
    let app = recs_serve::api::app(svc.clone(), routes);
    let resp = match app.oneshot(copy).await {
        Ok(resp) => resp,
        Err(never) => match never {},
    };
    let (parts, body) = resp.into_parts();
    let body = axum::body::to_bytes(body, usize::MAX).await.expect("body");
    http::Response::from_parts(parts, body)
}

/// [`call`] with every route `recs serve` answers.
pub async fn call_all(
    svc: &std::sync::Arc<Service>,
    req: &http::Request<Bytes>,
) -> http::Response<Bytes> {
    call(svc, &recs_serve::api::Endpoint::ALL, req).await
}

/// [`call_all`], synchronously.
pub fn route(svc: &std::sync::Arc<Service>, req: &http::Request<Bytes>) -> http::Response<Bytes> {
    block_on(call_all(svc, req))
}

/// An API Gateway HTTP API (v2) event from `events/`, parsed by lambda_http.
pub fn lambda_event(name: &str) -> lambda_http::Request {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../events")
        .join(name);
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    lambda_http::request::from_str(&text).unwrap_or_else(|e| panic!("{name}: {e}"))
}

/// A service over a fresh folder registry holding planted versions (name, seed) of a
/// small synthetic model; the last one is latest. Built as the Lambda adapter builds
/// it (metrics with an EMF outbox).
pub async fn service_over(
    versions: &[(&str, u64)],
) -> (tempfile::TempDir, std::sync::Arc<Service>) {
    let dir = tempfile::tempdir().expect("tempdir");
    let registry = Registry::open(dir.path().to_str().expect("utf-8 path")).expect("open");
    for &(version, seed) in versions {
        let data = generate(&GenConfig {
            users: 50,
            items: 40,
            seed,
            ..GenConfig::default()
        });
        let mut artifacts = data.planted_artifacts();
        // Hyper-parameters for fold-in (planted factors record none of their own).
        artifacts.model_meta["regularization"] = serde_json::json!(0.1);
        artifacts.model_meta["alpha"] = serde_json::json!(2.0);
        registry
            .publish(version, &artifacts)
            .await
            .expect("publish");
    }
    let config = Config {
        registry: dir.path().display().to_string(),
        ..Config::default()
    };
    let metrics = recs_serve::Metrics::with_emf_outbox();
    (
        dir,
        std::sync::Arc::new(Service::start_with(config, metrics).await),
    )
}

/// Runs an `events/` file through a function's handler: (status, JSON body).
pub async fn invoke(
    svc: &std::sync::Arc<Service>,
    routes: &'static [recs_serve::api::Endpoint],
    name: &str,
) -> (u16, serde_json::Value) {
    let resp = recs_serve::lambda::respond(svc, routes, lambda_event(name)).await;
    let status = resp.status().as_u16();
    let lambda_http::Body::Text(body) = resp.body() else {
        panic!("{name}: expected a text body")
    };
    (status, serde_json::from_str(body).expect("JSON body"))
}
