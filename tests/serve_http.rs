//! The local server over real HTTP on a loopback port.

use std::net::SocketAddr;

use e2e_tests::{block_on, http_get, service, synthetic_registry};
use recs_core::Titles;

#[test]
fn local_server_answers_over_http() {
    let (_dir, registry) = synthetic_registry();
    let loaded = block_on(registry.load("v0.1")).unwrap();
    let svc = service(loaded, Titles::default());
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
        .any(|(k, v)| k == "content-type" && v.starts_with("application/openmetrics-text")));
    for needle in [
        // By version and variant: the 200 answered by v0.1, the 400 by none.
        "recommend_requests_total{status=\"200\",endpoint=\"recommend\",version=\"v0.1\",variant=\"\"} 1",
        "recommend_requests_total{status=\"400\",endpoint=\"recommend\",version=\"\",variant=\"\"} 1",
        "recommend_requests_total{status=\"200\",endpoint=\"healthz\",version=\"\",variant=\"\"} 1",
        "recommend_latency_seconds_bucket{le=\"+Inf\",endpoint=\"recommend\",version=\"v0.1\",variant=\"\"} 1",
        "recommend_latency_seconds_bucket{le=\"+Inf\",endpoint=\"recommend\",version=\"\",variant=\"\"} 1",
        "model_version_info{model_name=\"als\",version=\"v0.1\"",
        "service_health_status 1",
    ] {
        assert!(metrics.contains(needle), "missing {needle:?} in\n{metrics}");
    }
    stop_tx.send(()).unwrap();
    rt.block_on(server).unwrap().unwrap();
}

/// Parses OpenMetrics text strictly enough to catch malformed output: every sample
/// line is `name{label="value",...} number` and belongs to a family declared by
/// `# TYPE` before it (a counter's samples end in `_total`), and the text ends with
/// `# EOF`. Returns the metric names (counters with `_total`).
fn parse_exposition(text: &str) -> Vec<String> {
    let mut declared: Vec<(String, String)> = Vec::new();
    let mut samples = Vec::new();
    assert!(text.ends_with("# EOF\n"), "no # EOF at the end");
    for line in text.lines() {
        if line == "# EOF" {
            continue;
        }
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            let (name, kind) = rest.split_once(' ').expect("TYPE name kind");
            assert!(["counter", "gauge", "histogram"].contains(&kind), "{line}");
            declared.push((name.to_string(), kind.to_string()));
            continue;
        }
        if line.starts_with("# HELP ") || line.is_empty() {
            continue;
        }
        let (series, value) = line.rsplit_once(' ').expect("sample has a value");
        value
            .parse::<f64>()
            .unwrap_or_else(|_| panic!("bad value in {line:?}"));
        let name = match series.split_once('{') {
            Some((name, labels)) => {
                let labels = labels.strip_suffix('}').expect("labels close");
                for pair in labels.split("\",").filter(|p| !p.is_empty()) {
                    let (k, v) = pair.split_once("=\"").expect("label=\"value\"");
                    assert!(
                        k.chars().all(|c| c.is_ascii_alphanumeric() || c == '_'),
                        "{line}"
                    );
                    assert!(!v.contains('\n'));
                }
                name
            }
            None => series,
        };
        let family = declared
            .iter()
            .find(|(f, kind)| {
                (kind != "counter" && name == f)
                    || (kind == "counter" && name == format!("{f}_total"))
                    || (kind == "histogram"
                        && [
                            format!("{f}_bucket"),
                            format!("{f}_sum"),
                            format!("{f}_count"),
                        ]
                        .contains(&name.to_string()))
            })
            .unwrap_or_else(|| panic!("{name} has no # TYPE before it"));
        samples.push(if family.1 == "counter" {
            format!("{}_total", family.0)
        } else {
            family.0.clone()
        });
    }
    samples
}

#[test]
fn metrics_parse_and_carry_every_design_name() {
    let (_dir, registry) = synthetic_registry();
    let loaded = block_on(registry.load("v0.1")).unwrap();
    let svc = service(loaded, Titles::default());
    for uri in ["/recommend/1?k=5", "/recommend/x", "/healthz", "/nope"] {
        e2e_tests::route(&svc, &e2e_tests::get(uri, &[]));
    }
    svc.metrics
        .set_drift("v0.1", [("rating".to_string(), 0.05)]);
    let text = String::from_utf8(
        e2e_tests::route(&svc, &e2e_tests::get("/metrics", &[]))
            .body()
            .to_vec(),
    )
    .unwrap();
    let names = parse_exposition(&text);
    // DESIGN.md, "Metrics" (the SLO targets are the two slo_* gauges).
    for name in [
        "recommend_requests_total",
        "recommend_latency_seconds",
        "recommend_errors_total",
        "model_switches_total",
        "model_load_seconds",
        "model_version_info",
        "data_drift_psi",
        "service_health_status",
        "service_uptime_seconds",
        "process_resident_memory_bytes",
        "slo_latency_target_seconds",
        "slo_availability_target_ratio",
    ] {
        assert!(
            names.iter().any(|n| n == name),
            "{name} missing from /metrics:\n{text}"
        );
    }
    assert!(text.contains(
        "recommend_requests_total{status=\"404\",endpoint=\"unknown\",version=\"\",variant=\"\"} 1"
    ));
}
