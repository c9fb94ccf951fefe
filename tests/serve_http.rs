//! The local server over real HTTP on a loopback port.

use std::net::SocketAddr;
use std::sync::Arc;

use e2e_tests::{block_on, http_get, service, synthetic_registry};
use recs::titles::Titles;

#[test]
fn local_server_answers_over_http() {
    let (_dir, registry) = synthetic_registry();
    let loaded = block_on(registry.load("v0.1")).unwrap();
    let svc = Arc::new(service(loaded, Titles::default()));
    let rt = tokio::runtime::Runtime::new().unwrap();
    let (listener, addr) = rt
        .block_on(recs::server::bind(SocketAddr::from(([127, 0, 0, 1], 0))))
        .unwrap();
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let server = rt.spawn(recs::server::serve(listener, svc, async {
        let _ = stop_rx.await;
    }));

    let (status, headers, body) = http_get(addr, "/recommend/1?k=10", &[("X-Request-ID", "abc-1")]);
    assert_eq!(status, 200, "{body}");
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(v["items"].as_array().unwrap().len(), 10);
    assert_eq!(
        v["recommendations"][0]["title"]
            .as_str()
            .unwrap()
            .split(' ')
            .next(),
        Some("Movie")
    );
    assert!(headers.contains(&("x-request-id".into(), "abc-1".into())));

    let (status, _, body) = http_get(addr, "/healthz", &[]);
    assert_eq!(status, 200);
    assert!(body.contains("\"version\":\"v0.1\""), "{body}");

    let (status, _, body) = http_get(addr, "/recommend/abc", &[]);
    assert_eq!(status, 400);
    assert!(body.contains("\"error_type\":\"invalid_input\""), "{body}");

    let (status, headers, metrics) = http_get(addr, "/metrics", &[]);
    assert_eq!(status, 200);
    assert!(headers
        .iter()
        .any(|(k, v)| k == "content-type" && v.starts_with("text/plain")));
    for needle in [
        "recommend_requests_total{status=\"200\",endpoint=\"recommend\"} 1",
        "recommend_requests_total{status=\"400\",endpoint=\"recommend\"} 1",
        "recommend_requests_total{status=\"200\",endpoint=\"healthz\"} 1",
        "recommend_latency_seconds_bucket{endpoint=\"recommend\",le=\"+Inf\"} 2",
        "model_version_info{model_name=\"als\",version=\"v0.1\"",
        "service_health_status 1",
    ] {
        assert!(metrics.contains(needle), "missing {needle:?} in\n{metrics}");
    }
    stop_tx.send(()).unwrap();
    rt.block_on(server).unwrap().unwrap();
}
