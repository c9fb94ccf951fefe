//! HTTP requests through the API (path, query string, X-Request-ID, method, body):
//! every answer a documented status with a JSON body, never a 5xx.
#![no_main]
use std::sync::{Arc, OnceLock};

use libfuzzer_sys::fuzz_target;
use recs_serve::api::{self, Endpoint};
use recs_serve::{Config, Service};
use tower::ServiceExt;

fn runtime() -> &'static tokio::runtime::Runtime {
    static RT: OnceLock<tokio::runtime::Runtime> = OnceLock::new();
    RT.get_or_init(|| {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap()
    })
}

/// The app over the demo registry, with its admin routes locked (a fuzzer must not
/// switch): the router `recs serve` runs.
fn app() -> &'static axum::Router {
    static APP: OnceLock<axum::Router> = OnceLock::new();
    APP.get_or_init(|| {
        let registry = format!("{}/../../model_registry", env!("CARGO_MANIFEST_DIR"));
        let svc = runtime().block_on(Service::start(Config {
            registry,
            admin_token: Some("fuzz-token-never-sent".into()),
            ..Config::default()
        }));
        assert!(svc.model().is_ok(), "the demo registry loads");
        api::app(Arc::new(svc), &Endpoint::ALL)
    })
}

fuzz_target!(|data: &[u8]| {
    // Fields separated by newlines: method, path and query, X-Request-ID, body.
    let mut parts = data.splitn(4, |&b| b == b'\n');
    let method = parts.next().unwrap_or_default();
    let uri = parts.next().unwrap_or_default();
    let rid = parts.next();
    let body = parts.next().unwrap_or_default();
    let method = match method.first().map(|b| b % 3) {
        Some(0) => http::Method::POST,
        Some(1) => http::Method::PUT,
        _ => http::Method::GET,
    };
    let Ok(uri) = http::Uri::try_from(uri) else { return };
    let mut req = http::Request::builder().method(method).uri(uri);
    if let Some(rid) = rid {
        let Ok(v) = http::HeaderValue::from_bytes(rid) else { return };
        req = req.header("x-request-id", v);
    }
    let Ok(req) = req.body(axum::body::Body::from(body.to_vec())) else { return };
    let what = format!("{} {}", req.method(), req.uri());
    // Built outside block_on: building it starts (and blocks on) the service.
    let app = app().clone();
    let (resp, bytes) = runtime().block_on(async {
        let resp = match app.oneshot(req).await {
            Ok(resp) => resp,
            Err(never) => match never {},
        };
        let (parts, body) = resp.into_parts();
        let bytes = axum::body::to_bytes(body, usize::MAX).await.expect("body");
        (parts, bytes)
    });
    let status = resp.status.as_u16();
    assert!(status < 500, "{what} -> {status}: {bytes:?}");
    if resp.headers["content-type"] == "application/json" {
        let v: serde_json::Value = serde_json::from_slice(&bytes).expect("JSON body");
        if status >= 400 {
            assert!(v["error_type"].is_string(), "{v}");
        }
    }
});
