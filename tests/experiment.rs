//! The exposure log and the A/B routes end to end on folder storage: real
//! recommendation traffic is logged by the service, watch events with a planted
//! lift are written in the Python team's layout, and `/experiment/analyze` and
//! `/experiment/promote` judge it.

use std::path::Path;

use e2e_tests::{get, json};
use recs_core::active::Strategy;
use recs_core::hash::splitmix64;
use recs_core::Registry;
use recs_serve::control::RolloutPatch;
use recs_serve::{Config, ExposureSink, Service};
use serde_json::Value;

struct Setup {
    rt: tokio::runtime::Runtime,
    _dirs: (tempfile::TempDir, tempfile::TempDir),
    events: std::path::PathBuf,
    registry: String,
    svc: std::sync::Arc<Service>,
}

/// Two versions (v0.1 active, v0.2 other factors), an A/B test at `pct` % for
/// v0.2, and the exposure log under a fresh events folder.
fn setup(pct: f64) -> Setup {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let reg = tempfile::tempdir().unwrap();
    let ev = tempfile::tempdir().unwrap();
    let location = reg.path().to_str().unwrap().to_string();
    let events = ev.path().to_path_buf();
    let svc = rt.block_on(async {
        let registry = Registry::open(&location).unwrap();
        let location = location.clone();
        e2e_tests::publish_two_versions(&registry).await;
        let svc = std::sync::Arc::new(
            Service::start(Config {
                registry: location.clone(),
                version: Some("v0.1".into()),
                events: Some(events.to_str().unwrap().into()),
                exposure_log: ExposureSink::Events(events.to_str().unwrap().into()),
                ..Config::default()
            })
            .await,
        );
        svc.switch("v0.1").await.unwrap();
        svc.update_rollout(RolloutPatch {
            strategy: Some(Strategy::AbTest),
            canary_version: Some(Some("v0.2".into())),
            canary_percentage: Some(pct),
            salt: None,
        })
        .await
        .unwrap();
        svc
    });
    Setup {
        rt,
        _dirs: (reg, ev),
        events,
        registry: location,
        svc,
    }
}

impl Setup {
    fn call(&self, req: http::Request<bytes::Bytes>) -> (u16, Value) {
        let resp = self.rt.block_on(e2e_tests::call_all(&self.svc, &req));
        (resp.status().as_u16(), json(&resp))
    }

    fn get(&self, uri: &str) -> (u16, Value) {
        self.call(get(uri, &[]))
    }

    fn post(&self, uri: &str) -> (u16, Value) {
        self.call(http::Request::post(uri).body(bytes::Bytes::new()).unwrap())
    }

    /// One request per user 1..=n; each answer converts (a watch of its first
    /// movie 1 ms later) with probability `rate_a` or `rate_b` by its variant.
    /// Returns the responses' variants, counted.
    fn traffic(&self, n: i64, rate_a: f64, rate_b: f64) -> (u64, u64) {
        let mut lines = String::new();
        let (mut a, mut b) = (0, 0);
        for user in 1..=n {
            let (status, body) = self.get(&format!("/recommend/{user}?k=5"));
            assert_eq!(status, 200, "{body}");
            let rate = match body["variant"].as_str() {
                Some("variant_A") => {
                    a += 1;
                    rate_a
                }
                Some("variant_B") => {
                    b += 1;
                    rate_b
                }
                other => panic!("an A/B test answers with a variant, got {other:?}"),
            };
            let u = (splitmix64(user as u64 ^ 0xE7) >> 11) as f64 / (1u64 << 53) as f64;
            if u < rate {
                let ts = body["provenance"]["timestamp"].as_i64().unwrap() + 1;
                let movie = body["items"][0].as_i64().unwrap();
                lines.push_str(&format!(
                    "{{\"user_id\":{user},\"movie_id\":{movie},\"ts\":{ts}}}\n"
                ));
            }
        }
        write_events(&self.events, "watch", &lines);
        // Conversions are counted up to now: let the last watch be in the past.
        std::thread::sleep(std::time::Duration::from_millis(5));
        (a, b)
    }
}

fn today() -> String {
    recs_core::time::date_of_day(recs_core::time::now_ms() / 86_400_000)
}

fn write_events(root: &Path, kind: &str, lines: &str) {
    let dir = root.join(kind).join(today());
    std::fs::create_dir_all(&dir).unwrap();
    let n = std::fs::read_dir(&dir).unwrap().count();
    std::fs::write(dir.join(format!("part-{n}.jsonl")), lines).unwrap();
}

#[test]
fn every_response_is_logged_in_the_reco_response_schema() {
    let s = setup(50.0);
    let (_, ok) = s.call(get("/recommend/3?k=4", &[("X-Request-ID", "logged-1")]));
    let (bad, _) = s.call(get("/recommend/3?k=0", &[("X-Request-ID", "logged-2")]));
    assert_eq!(bad, 400);
    s.rt.block_on(s.svc.exposures.flush());
    let dir = s.events.join("reco_response").join(today());
    let mut records: Vec<Value> = Vec::new();
    for hour in std::fs::read_dir(&dir).unwrap() {
        for f in std::fs::read_dir(hour.unwrap().path()).unwrap() {
            let text = std::fs::read_to_string(f.unwrap().path()).unwrap();
            records.extend(
                text.lines()
                    .map(|l| serde_json::from_str::<Value>(l).unwrap()),
            );
        }
    }
    let by_id = |id: &str| {
        records
            .iter()
            .find(|r| r["request_id"] == id)
            .unwrap_or_else(|| panic!("{id} not logged: {records:?}"))
    };
    let r = by_id("logged-1");
    // The Python team's reco_response fields, plus variant.
    for field in [
        "request_id",
        "ts",
        "user_id",
        "status",
        "latency_ms",
        "k",
        "movie_ids",
        "model_version",
        "model_name",
        "git_sha",
        "data_snapshot_id",
        "container_image_digest",
        "variant",
    ] {
        assert!(r.get(field).is_some(), "{field} missing: {r}");
    }
    assert_eq!(r["status"], 200);
    assert_eq!(r["user_id"], 3);
    assert_eq!(r["k"], 4);
    assert_eq!(r["movie_ids"], ok["items"]);
    assert_eq!(r["model_version"], ok["model"]);
    assert_eq!(r["variant"], ok["variant"]);
    assert!(r["latency_ms"].as_u64().unwrap() >= 1);
    let refused = by_id("logged-2");
    assert_eq!(refused["status"], 400);
    assert_eq!(refused["variant"], ok["variant"], "same user, same variant");
}

#[test]
fn a_planted_lift_wins_and_promote_switches_to_it() {
    // Latencies here are a shared machine's noise: the latency guardrail has its own
    // deterministic tests (recs-experiment), so these pass a bound it cannot reach.
    let s = setup(50.0);
    let (a, b) = s.traffic(3000, 0.10, 0.16);
    assert!(a > 1200 && b > 1200, "{a} / {b}");
    let (status, r) =
        s.get("/experiment/analyze?time_window_minutes=60&max_latency_regression_pct=1000");
    assert_eq!(status, 200, "{r}");
    assert_eq!(r["experiment"]["variant_a"], "v0.1");
    assert_eq!(r["experiment"]["variant_b"], "v0.2");
    assert_eq!(r["analysis"]["variant_a"]["exposures"], a);
    assert_eq!(r["analysis"]["variant_b"]["exposures"], b);
    let p = r["analysis"]["z_test"]["p_value"].as_f64().unwrap();
    assert!(p < 0.05, "{r}");
    let rate_b = r["analysis"]["variant_b"]["conversion_rate"]
        .as_f64()
        .unwrap();
    assert!((rate_b - 0.16).abs() < 0.03, "{rate_b}");
    assert_eq!(r["decision"]["promote"], true, "{}", r["decision"]);
    // A dry run (the default) changes nothing.
    let (_, dry) =
        s.post("/experiment/promote?time_window_minutes=60&max_latency_regression_pct=1000");
    assert_eq!(
        (dry["promoted"].clone(), dry["would_promote"].clone()),
        (false.into(), true.into())
    );
    assert_eq!(s.get("/rollout/status").1["rollout"]["strategy"], "ab_test");
    let (status, done) = s.post(
        "/experiment/promote?time_window_minutes=60&dry_run=false&max_latency_regression_pct=1000",
    );
    assert_eq!(status, 200, "{done}");
    assert_eq!(done["promoted"], true);
    assert_eq!(done["switch_result"]["previous_version"], "v0.1");
    assert_eq!(done["switch_result"]["new_version"], "v0.2");
    // Everyone is served v0.2 now; the experiment is over.
    assert_eq!(s.get("/recommend/1?k=3").1["model"], "v0.2");
    assert_eq!(s.get("/recommend/2?k=3").1["model"], "v0.2");
    let status = s.get("/rollout/status").1["rollout"].clone();
    assert_eq!(status["strategy"], "fixed", "{status}");
}

#[test]
fn no_lift_is_not_promoted() {
    let s = setup(50.0);
    s.traffic(3000, 0.12, 0.12);
    let (status, done) =
        s.post("/experiment/promote?dry_run=false&max_latency_regression_pct=1000");
    assert_eq!(status, 200, "{done}");
    assert_eq!(done["promoted"], false);
    assert_eq!(done["reason"], "significant_lift");
    assert_eq!(s.get("/rollout/status").1["active_version"], "v0.1");
    assert_eq!(s.get("/rollout/status").1["rollout"]["strategy"], "ab_test");
}

#[test]
fn a_skewed_assignment_is_a_sample_ratio_mismatch() {
    let s = setup(50.0);
    s.traffic(3000, 0.10, 0.16);
    s.rt.block_on(s.svc.exposures.flush());
    // 600 more B users appear in the log than the 50 % split can give: a broken
    // assignment (a cache, a bot, a client that retries on B only).
    let now = recs_core::time::now_ms() - 1;
    let mut lines = String::new();
    for u in 0..600 {
        lines.push_str(&format!(
            "{{\"request_id\":\"x{u}\",\"ts\":{now},\"user_id\":{},\"status\":200,\"latency_ms\":1,\"k\":5,\"movie_ids\":[1],\"model_version\":\"v0.2\",\"model_name\":\"als\",\"git_sha\":\"\",\"data_snapshot_id\":\"\",\"container_image_digest\":null,\"variant\":\"variant_B\"}}\n",
            100_000 + u
        ));
    }
    write_events(&s.events, "reco_response", &lines);
    let (_, done) = s.post("/experiment/promote?dry_run=false&max_latency_regression_pct=1000");
    assert_eq!(done["promoted"], false, "{done}");
    assert_eq!(done["reason"], "sample_ratio");
    let srm = &done["analysis"]["analysis"]["sample_ratio"];
    assert!(srm["p_value"].as_f64().unwrap() < 0.001, "{srm}");
}

#[test]
fn analysis_needs_an_experiment_and_an_events_location() {
    let s = setup(50.0);
    // Another instance over the same registry (the A/B test is in active.json), but
    // with no EVENTS: a clear 503, not an empty analysis.
    let other = std::sync::Arc::new(s.rt.block_on(Service::start(Config {
        registry: s.registry.clone(),
        ..Config::default()
    })));
    let resp = s.rt.block_on(e2e_tests::call_all(
        &other,
        &get("/experiment/analyze", &[]),
    ));
    assert_eq!(resp.status(), 503);
    assert_eq!(json(&resp)["error_type"], "events_unavailable");
    for bad in [
        "time_window_minutes=0",
        "time_window_minutes=abc",
        "dry_run=maybe",
    ] {
        let (status, body) = s.post(&format!("/experiment/promote?{bad}"));
        assert_eq!(status, 400, "{bad}: {body}");
    }
    assert_eq!(s.get("/experiment/promote").0, 405);
    s.rt.block_on(s.svc.update_rollout(RolloutPatch {
        strategy: Some(Strategy::Fixed),
        ..RolloutPatch::default()
    }))
    .unwrap();
    let (status, body) = s.get("/experiment/analyze");
    assert_eq!(
        (status, body["error_type"].as_str()),
        (400, Some("not_in_experiment")),
        "{body}"
    );
}

#[test]
fn trace_finds_another_instances_answer_in_the_exposure_log() {
    let s = setup(50.0);
    let (status, answered) = s.call(get("/recommend/5?k=3", &[("X-Request-ID", "elsewhere-1")]));
    assert_eq!(status, 200);
    s.rt.block_on(s.svc.exposures.flush());
    // A second instance never saw the request: it finds it in the shared log.
    let other = std::sync::Arc::new(s.rt.block_on(Service::start(Config {
        registry: s.registry.clone(),
        events: Some(s.events.to_str().unwrap().into()),
        ..Config::default()
    })));
    let resp =
        s.rt.block_on(e2e_tests::call_all(&other, &get("/trace/elsewhere-1", &[])));
    assert_eq!(resp.status(), 200, "{:?}", resp.body());
    let body = json(&resp);
    assert_eq!(body["request_id"], "elsewhere-1");
    let t = &body["trace"];
    assert_eq!(t["source"], "exposure_log");
    assert_eq!(t["user_id"], 5);
    assert_eq!(t["k"], 3);
    assert_eq!(t["movie_ids"], answered["items"]);
    assert_eq!(t["model_version"], answered["model"]);
    assert_eq!(t["latency_ms"], answered["provenance"]["latency_ms"]);
    let missing =
        s.rt.block_on(e2e_tests::call_all(&other, &get("/trace/never-seen", &[])));
    assert_eq!(missing.status(), 404);
    let bad = s.rt.block_on(e2e_tests::call_all(
        &other,
        &get("/trace/elsewhere-1?lookback_minutes=0", &[]),
    ));
    assert_eq!(bad.status(), 400);
}

/// The admin Lambda function's routes over API Gateway v2 events (events/): the
/// analysis, a dry-run promotion, and a trace found in the exposure log.
#[test]
fn the_admin_function_serves_the_experiment_routes_and_trace() {
    let s = setup(50.0);
    s.traffic(200, 0.1, 0.1);
    let (_, _) = s.call(get(
        "/recommend/9?k=2",
        &[("X-Request-ID", "lambda-trace-1")],
    ));
    s.rt.block_on(s.svc.exposures.flush());
    let admin = std::sync::Arc::new(s.rt.block_on(Service::start(Config {
        registry: s.registry.clone(),
        events: Some(s.events.to_str().unwrap().into()),
        exposure_log: ExposureSink::Off,
        ..Config::default()
    })));
    let routes = &recs_serve::api::Endpoint::ADMIN;
    let (status, r) =
        s.rt.block_on(e2e_tests::invoke(&admin, routes, "experiment-analyze.json"));
    assert_eq!(status, 200, "{r}");
    assert_eq!(r["experiment"]["variant_b"], "v0.2");
    assert_eq!(
        r["decision"]["reason"], "sample_size",
        "200 users are too few"
    );
    let (status, p) =
        s.rt.block_on(e2e_tests::invoke(&admin, routes, "experiment-promote.json"));
    assert_eq!(status, 200, "{p}");
    assert_eq!(
        (p["dry_run"].clone(), p["promoted"].clone()),
        (true.into(), false.into())
    );
    let (status, t) =
        s.rt.block_on(e2e_tests::invoke(&admin, routes, "trace.json"));
    assert_eq!(status, 200, "{t}");
    assert_eq!(t["trace"]["user_id"], 9);
    assert_eq!(t["trace"]["source"], "exposure_log");
}
