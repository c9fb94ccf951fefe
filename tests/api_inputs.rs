//! The HTTP contract on a registry the test writes itself: bad input is a 400 with a
//! JSON body (and changes nothing), unknown users get the popularity fallback,
//! known users never see what they already rated.

use std::collections::{BTreeMap, BTreeSet};

use e2e_tests::{block_on, get, json, service, small_config, synthetic_registry};
use recs_core::Titles;
use recs_serve::api;
use recs_serve::Service;
use recs_train::gen_data::generate;

fn svc() -> (tempfile::TempDir, std::sync::Arc<Service>) {
    let (dir, registry) = synthetic_registry();
    let loaded = block_on(registry.load("v0.1")).unwrap();
    let titles = Titles::from_pairs((1..=5).map(|i| (i, format!("Title {i}"))));
    (dir, service(loaded, titles))
}

fn assert_400(
    svc: &std::sync::Arc<Service>,
    uri: &str,
    headers: &[(&str, &str)],
    error_type: &str,
) {
    let resp = e2e_tests::route(svc, &get(uri, headers));
    assert_eq!(resp.status(), 400, "{uri}: {:?}", resp.body());
    assert_eq!(resp.headers()["content-type"], "application/json");
    let body = json(&resp);
    assert_eq!(body["error_type"], error_type, "{uri}: {body}");
    assert!(!body["detail"].as_str().unwrap().is_empty(), "{uri}");
}

#[test]
fn bad_inputs_are_400_with_a_json_body() {
    let (_d, svc) = svc();
    for uri in [
        "/recommend/1?k=0",
        "/recommend/1?k=-1",
        "/recommend/1?k=101",
        "/recommend/1?k=abc",
        "/recommend/1?k=",
        "/recommend/1?k=5&k=6",
        "/recommend/abc",
        "/recommend/-5",
        "/recommend/1.5",
        "/recommend/99999999999999999999999",
        "/recommend/",
        "/recommend/1/2",
    ] {
        assert_400(&svc, uri, &[], "invalid_input");
    }
    let long_id = "a".repeat(129);
    assert_400(
        &svc,
        "/recommend/1",
        &[("x-request-id", &long_id)],
        "invalid_input",
    );
    assert_400(
        &svc,
        "/recommend/1",
        &[("x-request-id", "evil id\twith spaces")],
        "invalid_input",
    );
    for model in ["v9.9", "..%2F..%2Fetc", "v0.1%2Fals", "%00"] {
        assert_400(
            &svc,
            &format!("/recommend/1?model={model}"),
            &[],
            "invalid_model",
        );
    }
    // Every 400 is counted, with its status, so error ratios come out right.
    let text = String::from_utf8(
        e2e_tests::route(&svc, &get("/metrics", &[]))
            .body()
            .to_vec(),
    )
    .unwrap();
    assert!(
        text.contains(
            "recommend_requests_total{status=\"400\",endpoint=\"recommend\",version=\"\",variant=\"\"} 18"
        ),
        "{text}"
    );
    assert!(text
        .contains("recommend_errors_total{error_type=\"invalid_model\",endpoint=\"recommend\"} 4"));
}

#[test]
fn k_bounds_are_inclusive() {
    let (_d, svc) = svc();
    for (k, n) in [(1, 1), (100, 100)] {
        let resp = e2e_tests::route(&svc, &get(&format!("/recommend/999999?k={k}"), &[]));
        assert_eq!(resp.status(), 200);
        // The catalogue has 90 items: k=100 returns all of them.
        assert_eq!(json(&resp)["items"].as_array().unwrap().len(), n.min(90));
    }
}

#[test]
fn known_user_gets_unseen_items_with_titles_and_provenance() {
    let (_d, svc) = svc();
    let loaded = svc.model().unwrap();
    let model = loaded.model.als().unwrap();
    let row = model.user_row(1).unwrap();
    let seen: Vec<i64> = model
        .seen()
        .row(row)
        .iter()
        .map(|&r| model.item_id(r))
        .collect();
    let resp = e2e_tests::route(
        &svc,
        &get(
            "/recommend/1?k=10&model=v0.1",
            &[("X-Request-ID", "trace-42")],
        ),
    );
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.headers()["x-request-id"], "trace-42");
    let body = json(&resp);
    assert_eq!(body["user_id"], 1);
    assert_eq!(body["model"], "v0.1");
    assert!(body["fallback"].is_null() && body["variant"].is_null());
    let items = e2e_tests::items(&body);
    assert_eq!(items.len(), 10);
    assert!(
        items.iter().all(|i| !seen.contains(i)),
        "seen item recommended"
    );
    let recs = body["recommendations"].as_array().unwrap();
    let scores: Vec<f64> = recs.iter().map(|r| r["score"].as_f64().unwrap()).collect();
    assert!(
        scores.windows(2).all(|w| w[0] >= w[1]),
        "not sorted: {scores:?}"
    );
    for r in recs {
        let id = r["movie_id"].as_i64().unwrap();
        let expect = if id <= 5 {
            format!("Title {id}")
        } else {
            format!("Movie {id}")
        };
        assert_eq!(r["title"], expect);
    }
    let p = &body["provenance"];
    assert_eq!(p["request_id"], "trace-42");
    assert_eq!(p["model_version"], "v0.1");
    assert_eq!(p["model_name"], "als");
    assert_eq!(p["data_snapshot_id"], "synthetic-seed-42");
    assert!(p["timestamp"].as_u64().unwrap() > 1_700_000_000_000);
    // An int of at least 1 ms, as the Python API had it, plus the precise value.
    assert!(p["latency_ms"].as_u64().unwrap() >= 1, "{p}");
    assert!(p["latency_ms_precise"].as_f64().unwrap() >= 0.0);
}

#[test]
fn unknown_user_gets_popularity_fallback() {
    let (_d, svc) = svc();
    // The expected ranking comes from the generated ratings themselves, not from
    // the model code: distinct users per movie, most first, ties to the lower id.
    let data = generate(&small_config());
    let mut users_of: BTreeMap<i64, BTreeSet<i64>> = BTreeMap::new();
    for r in &data.ratings {
        users_of.entry(r.item).or_default().insert(r.user);
    }
    let mut counts: Vec<(i64, usize)> = users_of.iter().map(|(m, u)| (*m, u.len())).collect();
    counts.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
    let expected: Vec<i64> = counts.iter().take(5).map(|(m, _)| *m).collect();
    let resp = e2e_tests::route(&svc, &get("/recommend/123456?k=5", &[]));
    assert_eq!(resp.status(), 200);
    let body = json(&resp);
    assert_eq!(body["fallback"], "popularity");
    let items = e2e_tests::items(&body);
    assert_eq!(items, expected);
    // The score is the interaction count.
    let scores: Vec<usize> = body["recommendations"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["score"].as_f64().unwrap() as usize)
        .collect();
    let expected_scores: Vec<usize> = counts.iter().take(5).map(|(_, c)| *c).collect();
    assert_eq!(scores, expected_scores);
    // The generated request id is a UUID, echoed in the header and provenance.
    let rid = resp.headers()["x-request-id"].to_str().unwrap();
    assert_eq!(rid.len(), 36);
    assert_eq!(body["provenance"]["request_id"], rid);
}

#[test]
fn health_names_the_version_and_other_routes_are_404_405() {
    let (_d, svc) = svc();
    let resp = e2e_tests::route(&svc, &get("/healthz", &[]));
    assert_eq!(resp.status(), 200);
    let body = json(&resp);
    assert_eq!(
        (body["status"].as_str(), body["version"].as_str()),
        (Some("ok"), Some("v0.1"))
    );
    // Public: no salt (it would let a caller pick a variant), registry, checksum or
    // previous version.
    let text = body.to_string();
    for secret in [
        "salt",
        "registry",
        "artifact_sha",
        "previous_version",
        "environment",
    ] {
        assert!(!text.contains(secret), "/healthz shows {secret}: {text}");
    }
    assert_eq!(body["rollout"]["strategy"], "fixed");
    assert_eq!(body["model"]["users"], 120);
    let status = json(&e2e_tests::route(&svc, &get("/rollout/status", &[])));
    assert_eq!(status["rollout"]["strategy"], "fixed");
    assert_eq!(status["served"]["model"]["users"], 120);

    assert_eq!(e2e_tests::route(&svc, &get("/nope", &[])).status(), 404);
    let post = http::Request::builder()
        .method("POST")
        .uri("/recommend/1")
        .body(bytes::Bytes::new())
        .unwrap();
    let resp = e2e_tests::route(&svc, &post);
    assert_eq!(resp.status(), 405);
    assert_eq!(resp.headers()["allow"], "GET");
    // A function only answers its own route.
    let resp = block_on(e2e_tests::call(
        &svc,
        &[api::Endpoint::Health],
        &get("/recommend/1", &[]),
    ));
    assert_eq!(resp.status(), 404);
}

mod props {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(200))]

        /// Random paths, queries and request ids: every answer is a documented status
        /// with a JSON body, and never a 5xx.
        #[test]
        fn random_requests_get_documented_answers(
            user in "([0-9]{0,21}|[ -~]{0,8}|%[0-9A-F]{2})",
            query in "([a-z]{1,5}=[ -~&&[^#]]{0,8}&?){0,4}",
            rid in prop::option::of("[ -~]{0,130}"),
        ) {
            use std::sync::OnceLock;
            static SVC: OnceLock<(tempfile::TempDir, std::sync::Arc<Service>)> = OnceLock::new();
            let (_, svc) = SVC.get_or_init(svc);
            let uri = format!("/recommend/{user}?{query}");
            let Ok(uri) = uri.parse::<http::Uri>() else { return Ok(()); };
            let headers: Vec<(&str, &str)> = rid.iter().map(|r| ("x-request-id", r.as_str())).collect();
            if rid.as_deref().is_some_and(|r| http::HeaderValue::from_str(r).is_err()) {
                return Ok(());
            }
            let req = get(&uri.to_string(), &headers);
            let resp = e2e_tests::route(svc, &req);
            let status = resp.status().as_u16();
            prop_assert!([200, 400, 404].contains(&status), "{uri}: {status} {:?}", resp.body());
            let body = json(&resp);
            if status != 200 {
                prop_assert!(body["error_type"].is_string() && body["detail"].is_string(), "{body}");
            } else {
                prop_assert!(body["items"].is_array());
            }
        }
    }
}

#[test]
fn openapi_document_is_served_and_names_every_route() {
    let (_d, svc) = svc();
    let resp = e2e_tests::route(&svc, &get("/openapi.json", &[]));
    assert_eq!(resp.status(), 200);
    let doc = json(&resp);
    assert!(doc["openapi"].as_str().unwrap().starts_with("3."));
    let mut paths: Vec<&str> = doc["paths"]
        .as_object()
        .unwrap()
        .keys()
        .map(String::as_str)
        .collect();
    paths.sort_unstable();
    // The routes `recs serve` answers (api::Endpoint::ALL), written out here.
    assert_eq!(
        paths,
        [
            "/catalog/block",
            "/catalog/blocked",
            "/catalog/unblock",
            "/experiment/analyze",
            "/experiment/promote",
            "/healthz",
            "/metrics",
            "/openapi.json",
            "/recommend",
            "/recommend/{user_id}",
            "/rollout/status",
            "/rollout/update",
            "/similar/{movie_id}",
            "/switch",
            "/trace/{request_id}",
        ]
    );
    // A request to trace, so /trace/{request_id} has something to find.
    let probe = get("/recommend/1?k=2", &[("X-Request-ID", "openapi-probe")]);
    assert_eq!(e2e_tests::route(&svc, &probe).status(), 200);
    // Every documented operation is routed (not a 404 or 405). POSTs carry a field
    // no route accepts, so they are refused before anything is written.
    for (path, ops) in doc["paths"].as_object().unwrap() {
        for method in ops.as_object().unwrap().keys() {
            let uri = path
                .replace("{user_id}", "1")
                .replace("{request_id}", "openapi-probe");
            let body = if method == "post" {
                &br#"{"no_such_field":1}"#[..]
            } else {
                b""
            };
            let req = http::Request::builder()
                .method(method.to_uppercase().as_str())
                .uri(uri.as_str())
                .body(bytes::Bytes::from_static(body))
                .unwrap();
            let resp = e2e_tests::route(&svc, &req);
            let status = resp.status().as_u16();
            assert!(status != 404 && status != 405, "{method} {path}: {status}");
            // Each status answered is one the document lists for the operation.
            assert!(
                ops[method]["responses"].get(status.to_string()).is_some(),
                "{method} {path}: {status} is not documented"
            );
        }
    }
}

#[test]
fn trace_returns_the_python_shape_or_404() {
    let (_d, svc) = svc();
    let resp = e2e_tests::route(
        &svc,
        &get("/recommend/1?k=3", &[("X-Request-ID", "trace-me")]),
    );
    assert_eq!(resp.status(), 200);
    let rec = json(&resp);
    let t = e2e_tests::route(&svc, &get("/trace/trace-me", &[]));
    assert_eq!(t.status(), 200, "{:?}", t.body());
    let body = json(&t);
    assert_eq!(body["request_id"], "trace-me");
    let trace = &body["trace"];
    assert_eq!(trace["user_id"], 1);
    assert_eq!(trace["k"], 3);
    assert_eq!(trace["status"], 200);
    assert_eq!(trace["model_version"], "v0.1");
    assert_eq!(trace["git_sha"], rec["provenance"]["git_sha"]);
    assert_eq!(
        trace["data_snapshot_id"],
        rec["provenance"]["data_snapshot_id"]
    );
    assert_eq!(trace["latency_ms"], rec["provenance"]["latency_ms"]);
    assert_eq!(trace["movie_ids"], rec["items"]);
    let missing = e2e_tests::route(&svc, &get("/trace/nope", &[]));
    assert_eq!(missing.status(), 404);
    assert_eq!(json(&missing)["detail"], "not found");
}

#[test]
fn refused_requests_are_traced_with_the_status_they_got() {
    let (_d, svc) = svc();
    // A bad k (400) for a valid user, and a malformed user id (400, no user).
    let resp = e2e_tests::route(&svc, &get("/recommend/1?k=0", &[("X-Request-ID", "bad-k")]));
    assert_eq!(resp.status(), 400);
    let resp = e2e_tests::route(
        &svc,
        &get("/recommend/abc", &[("X-Request-ID", "bad-user")]),
    );
    assert_eq!(resp.status(), 400);
    let trace = |id: &str| {
        let t = e2e_tests::route(&svc, &get(&format!("/trace/{id}"), &[]));
        assert_eq!(t.status(), 200, "{id}: {:?}", t.body());
        json(&t)["trace"].clone()
    };
    let t = trace("bad-k");
    assert_eq!(t["status"], 400);
    assert_eq!(t["user_id"], 1);
    assert_eq!(t["movie_ids"], serde_json::json!([]));
    assert_eq!(t["model_version"], "");
    let t = trace("bad-user");
    assert_eq!(t["status"], 400);
    assert!(t["user_id"].is_null());
    // One record per request: a repeated id replaces, it does not add.
    let again = e2e_tests::route(&svc, &get("/recommend/1?k=2", &[("X-Request-ID", "bad-k")]));
    assert_eq!(again.status(), 200);
    assert_eq!(trace("bad-k")["status"], 200);
}

/// With RECS_ADMIN_TOKEN set (recs serve), every admin route needs it: /trace and
/// /rollout/status included (they name users and the salt); public routes do not.
#[test]
fn every_admin_route_needs_the_token_when_one_is_set() {
    let (_dir, registry) = synthetic_registry();
    let loaded = block_on(registry.load("v0.1")).unwrap();
    let svc = std::sync::Arc::new(Service::with_model(
        recs_serve::Config {
            admin_token: Some("s3cret".into()),
            ..recs_serve::Config::default()
        },
        loaded,
        Titles::default(),
    ));
    for uri in [
        "/trace/some-id",
        "/rollout/status",
        "/switch?model=v0.1",
        "/experiment/analyze",
    ] {
        let resp = e2e_tests::route(&svc, &get(uri, &[]));
        assert_eq!(resp.status(), 401, "{uri}");
        let resp = e2e_tests::route(&svc, &get(uri, &[("Authorization", "Bearer wrong")]));
        assert_eq!(resp.status(), 403, "{uri}");
    }
    let ok = e2e_tests::route(
        &svc,
        &get("/rollout/status", &[("Authorization", "Bearer s3cret")]),
    );
    assert_eq!(ok.status(), 200);
    for uri in ["/healthz", "/recommend/1?k=3"] {
        assert_eq!(
            e2e_tests::route(&svc, &get(uri, &[])).status(),
            200,
            "{uri}"
        );
    }
}
