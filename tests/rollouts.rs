//! Rollouts through the service on a folder registry: shadow mode serves the active
//! version to everyone, scores the shadow version too, and observes the top-k
//! overlap in `recommend_shadow_overlap_ratio`.

use std::collections::HashSet;

use e2e_tests::{get, json, small_config};
use recs_core::active::Strategy;
use recs_core::Registry;
use recs_serve::control::RolloutPatch;
use recs_serve::{Config, Service};
use recs_train::gen_data::generate;

/// `name`'s value in an OpenMetrics text, e.g. `recommend_shadow_overlap_ratio_count`.
fn metric(text: &str, name: &str) -> f64 {
    text.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' '))
        .unwrap_or_else(|| panic!("{name} missing from:\n{text}"))
        .trim()
        .parse()
        .unwrap_or_else(|e| panic!("{name}: {e}"))
}

#[test]
fn shadow_serves_the_active_version_and_observes_the_overlap() {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let location = dir.path().to_str().unwrap().to_string();
    let svc = rt.block_on(async {
        let registry = Registry::open(&location).unwrap();
        e2e_tests::publish_two_versions(&registry).await;
        let svc = std::sync::Arc::new(
            Service::start(Config {
                registry: location.clone(),
                version: Some("v0.1".into()),
                ..Config::default()
            })
            .await,
        );
        svc.switch("v0.1").await.unwrap();
        svc.update_rollout(RolloutPatch {
            strategy: Some(Strategy::Shadow),
            canary_version: Some(Some("v0.2".into())),
            canary_percentage: Some(50.0),
            salt: None,
        })
        .await
        .unwrap();
        svc
    });
    let route = |uri: &str| rt.block_on(e2e_tests::call_all(&svc, &get(uri, &[])));
    let before = route("/metrics");
    let text = String::from_utf8_lossy(before.body()).to_string();
    assert_eq!(metric(&text, "recommend_shadow_overlap_ratio_count"), 0.0);

    let k = 10;
    let users = 1..=30;
    let mut expected_sum = 0.0;
    let mut comparisons = 0.0;
    for user in users {
        let resp = route(&format!("/recommend/{user}?k={k}"));
        assert_eq!(resp.status(), 200);
        let body = json(&resp);
        // Everyone gets the active version, whatever their bucket; no variant.
        assert_eq!(body["model"], "v0.1", "user {user}");
        assert!(body["variant"].is_null(), "user {user}: {body}");
        let ours: HashSet<i64> = e2e_tests::items(&body).into_iter().collect();
        // The shadow version's own answer (an explicit model among those served).
        let resp = route(&format!("/recommend/{user}?k={k}&model=v0.2"));
        assert_eq!(resp.status(), 200);
        let theirs = e2e_tests::items(&json(&resp));
        assert_eq!(json(&resp)["model"], "v0.2");
        let same = theirs.iter().filter(|m| ours.contains(m)).count();
        expected_sum += same as f64 / k as f64;
        // The explicit request is compared too: v0.2 against itself, overlap 1.
        expected_sum += 1.0;
        comparisons += 2.0;
    }
    let text = String::from_utf8_lossy(route("/metrics").body()).to_string();
    assert_eq!(
        metric(&text, "recommend_shadow_overlap_ratio_count"),
        comparisons
    );
    let sum = metric(&text, "recommend_shadow_overlap_ratio_sum");
    assert!(
        (sum - expected_sum).abs() < 1e-9,
        "overlap sum {sum}, expected {expected_sum}"
    );
    // The two versions rank differently, so the overlap is not trivially 1.
    assert!(
        expected_sum < comparisons,
        "{expected_sum} of {comparisons}"
    );
}

/// A service on a folder registry holding v0.1 (served) and v0.2.
fn two_versions() -> (
    tempfile::TempDir,
    tokio::runtime::Runtime,
    std::sync::Arc<Service>,
) {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let location = dir.path().to_str().unwrap().to_string();
    let svc = rt.block_on(async {
        let registry = Registry::open(&location).unwrap();
        let artifacts = generate(&small_config()).planted_artifacts();
        registry.publish("v0.1", &artifacts).await.unwrap();
        registry.publish("v0.2", &artifacts).await.unwrap();
        let svc = std::sync::Arc::new(
            Service::start(Config {
                registry: location.clone(),
                ..Config::default()
            })
            .await,
        );
        svc.switch("v0.1").await.unwrap();
        svc
    });
    (dir, rt, svc)
}

#[test]
fn switch_losing_every_conditional_write_is_a_409_and_writes_nothing() {
    let (dir, rt, svc) = two_versions();
    let path = dir.path().join("active.json");
    let location = recs_core::Store::open(dir.path().to_str().unwrap())
        .unwrap()
        .location();
    let before = std::fs::read(&path).unwrap();
    // Another writer lands between every read and conditional put: it rewrites
    // active.json with one more revision (same active version), so the ETag moves.
    let rival_path = path.clone();
    let rivals = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let counter = rivals.clone();
    recs_core::active::hooks::before_conditional_put(&location, move || {
        let mut s: serde_json::Value =
            serde_json::from_slice(&std::fs::read(&rival_path).unwrap()).unwrap();
        s["revision"] = (s["revision"].as_u64().unwrap() + 1).into();
        std::fs::write(&rival_path, serde_json::to_vec(&s).unwrap()).unwrap();
        counter.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
    });
    let resp = rt.block_on(e2e_tests::call_all(&svc, &get("/switch?model=v0.2", &[])));
    recs_core::active::hooks::clear(&location);
    assert_eq!(resp.status(), 409, "{:?}", resp.body());
    assert_eq!(json(&resp)["error_type"], "conflict");
    assert_eq!(rivals.load(std::sync::atomic::Ordering::SeqCst), 8);
    // Nothing of ours was written: only the rival's revision bumps, v0.1 active.
    let after: serde_json::Value = serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
    let before: serde_json::Value = serde_json::from_slice(&before).unwrap();
    assert_eq!(after["active_version"], "v0.1");
    assert_eq!(after["history"], before["history"]);
    assert_eq!(
        after["revision"].as_u64().unwrap(),
        before["revision"].as_u64().unwrap() + 8
    );
    // And this instance still serves v0.1.
    let resp = rt.block_on(e2e_tests::call_all(&svc, &get("/recommend/1?k=3", &[])));
    assert_eq!(json(&resp)["model"], "v0.1");
    // Without the rival the same switch goes through.
    let resp = rt.block_on(e2e_tests::call_all(&svc, &get("/switch?model=v0.2", &[])));
    assert_eq!(resp.status(), 200, "{:?}", resp.body());
}

/// /rollout/status reports the registry's active.json apart from what this instance
/// serves: another writer's switch shows there at once, and a corrupt active.json
/// is reported as such (the rollback target is never guessed from this instance).
#[test]
fn rollout_status_reports_active_json_apart_from_what_is_served_here() {
    let (dir, rt, svc) = two_versions();
    let status = || json(&rt.block_on(e2e_tests::call_all(&svc, &get("/rollout/status", &[]))));
    let s = status();
    assert_eq!(s["active_json"]["active_version"], "v0.1");
    assert_eq!(s["served"]["version"], "v0.1");
    // Another writer (the CLI) switches: active.json says v0.2 while this instance,
    // before its next poll, still serves v0.1.
    rt.block_on(async {
        let registry = Registry::open(dir.path().to_str().unwrap()).unwrap();
        recs_serve::control::switch(&registry, "v0.2", Some("v0.1"), &[])
            .await
            .unwrap();
    });
    let s = status();
    assert_eq!(s["active_json"]["active_version"], "v0.2");
    assert_eq!(s["active_json"]["previous_version"], "v0.1");
    assert_eq!(s["served"]["version"], "v0.1");
    // A hand-corrupted active.json: an error, not this instance's view.
    std::fs::write(dir.path().join("active.json"), b"{\"active_version\": ").unwrap();
    let s = status();
    assert!(s["active_json"]["error"].is_string(), "{s}");
    assert!(s["active_json"]["previous_version"].is_null(), "{s}");
}
