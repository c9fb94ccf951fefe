//! Fold-in (`POST /recommend`, `GET /recommend[/{user}]?history=`) and request
//! exclusions (`exclude=`).
//!
//! The agreement test compares with implicit's own `recommend(...,
//! recalculate_user=True)` on implicit's ml-100k model: the expected lists were
//! computed by implicit (tests/fixtures/gen_foldin_implicit.py), never by this code.

use std::path::Path;

use bytes::Bytes;
use e2e_tests::{block_on, get, json, service, shared_or_skip, small_config};
use recs_core::{Registry, Titles};
use recs_serve::Service;
use recs_train::gen_data::generate;
use serde_json::{json, Value};

fn post(uri: &str, body: &str) -> http::Request<Bytes> {
    http::Request::builder()
        .method("POST")
        .uri(uri)
        .header("content-type", "application/json")
        .body(Bytes::from(body.to_string()))
        .unwrap()
}

fn scores(body: &Value) -> Vec<f64> {
    body["recommendations"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["score"].as_f64().unwrap())
        .collect()
}

fn ints(v: &Value) -> Vec<i64> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_i64().unwrap())
        .collect()
}

fn join(ids: &[i64]) -> String {
    ids.iter().map(i64::to_string).collect::<Vec<_>>().join(",")
}

/// Same top-10 and scores within 1e-4; two items may trade places only when
/// implicit's scores for them are within 1e-4 of each other.
fn assert_same(what: &str, body: &Value, want_items: &[i64], want_scores: &[f64]) {
    let got = e2e_tests::items(body);
    let got_scores = scores(body);
    assert_eq!(got.len(), want_items.len(), "{what}: {body}");
    for i in 0..got.len() {
        assert!(
            (got_scores[i] - want_scores[i]).abs() <= 1e-4,
            "{what} rank {i}: score {} vs implicit's {}",
            got_scores[i],
            want_scores[i]
        );
        if got[i] != want_items[i] {
            let j = want_items.iter().position(|&m| m == got[i]);
            let tied = j.is_some_and(|j| (want_scores[j] - want_scores[i]).abs() <= 1e-4)
                || (i == got.len() - 1 && (got_scores[i] - want_scores[i]).abs() <= 1e-5);
            assert!(
                tied,
                "{what} rank {i}: {} vs implicit's {}",
                got[i], want_items[i]
            );
        }
    }
}

/// The implicit registry copied to a temporary folder, its version meta.json
/// carrying `regularization` and `alpha` as given (the factors are untouched, so the
/// checksum over als/ still holds).
fn implicit_registry_with(
    shared: &Path,
    regularization: f64,
    alpha: f64,
) -> (tempfile::TempDir, std::sync::Arc<Service>) {
    let src = shared.join("fixtures/implicit-ml100k");
    let dir = tempfile::tempdir().unwrap();
    let version = std::fs::read_to_string(src.join("latest.txt")).unwrap();
    let version = version.trim();
    std::fs::write(dir.path().join("latest.txt"), version).unwrap();
    let als = dir.path().join(version).join("als");
    std::fs::create_dir_all(&als).unwrap();
    for entry in std::fs::read_dir(src.join(version).join("als")).unwrap() {
        let entry = entry.unwrap();
        std::fs::copy(entry.path(), als.join(entry.file_name())).unwrap();
    }
    let mut meta: Value =
        serde_json::from_slice(&std::fs::read(src.join(version).join("meta.json")).unwrap())
            .unwrap();
    meta["metrics"]["regularization"] = json!(regularization);
    meta["metrics"]["alpha"] = json!(alpha);
    std::fs::write(
        dir.path().join(version).join("meta.json"),
        serde_json::to_vec(&meta).unwrap(),
    )
    .unwrap();
    let registry = Registry::open(dir.path().to_str().unwrap()).unwrap();
    let loaded = block_on(registry.load(version)).unwrap();
    let titles = Titles::load(&shared.join("data/ml-100k/u.item")).unwrap();
    (dir, service(loaded, titles))
}

#[test]
fn needs_shared_fold_in_equals_implicits_recalculate_user() {
    let Some(shared) = shared_or_skip("needs_shared_fold_in_equals_implicits_recalculate_user")
    else {
        return;
    };
    let fixture: Value = serde_json::from_str(include_str!("fixtures/foldin_implicit_ml100k.json"))
        .expect("fixture");
    let params = fixture["params"].as_array().unwrap();
    let mut checked = 0;
    for (p_index, p) in params.iter().enumerate() {
        let (_dir, svc) = implicit_registry_with(
            &shared,
            p["regularization"].as_f64().unwrap(),
            p["alpha"].as_f64().unwrap(),
        );
        for (n, case) in fixture["cases"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|c| c["params"] == p_index)
            .enumerate()
        {
            let items = ints(&case["items"]);
            let want_items = ints(&case["top10"]);
            let want_scores: Vec<f64> = case["scores"]
                .as_array()
                .unwrap()
                .iter()
                .map(|s| s.as_f64().unwrap())
                .collect();
            let what = format!("params {p_index} case {n} ({} items)", items.len());
            let body = match case["user_id"].as_i64() {
                // A known user: the generator folded in the training row plus three
                // newer items (the last three); the service adds the training row
                // itself, so only the newer ones are sent.
                Some(user) => {
                    let newer = &items[items.len() - 3..];
                    let resp = e2e_tests::route(
                        &svc,
                        &get(
                            &format!("/recommend/{user}?k=10&history={}", join(newer)),
                            &[],
                        ),
                    );
                    assert_eq!(resp.status(), 200, "{what}");
                    json(&resp)
                }
                // A new user, alternately by POST and by the user-less GET.
                None if n % 2 == 0 => {
                    let body = json!({"items": items, "k": 10}).to_string();
                    let resp = e2e_tests::route(&svc, &post("/recommend", &body));
                    assert_eq!(resp.status(), 200, "{what}");
                    json(&resp)
                }
                None => {
                    let resp = e2e_tests::route(
                        &svc,
                        &get(&format!("/recommend?k=10&history={}", join(&items)), &[]),
                    );
                    assert_eq!(resp.status(), 200, "{what}");
                    json(&resp)
                }
            };
            assert_eq!(body["fallback"], "folded_in", "{what}");
            assert_eq!(body["unknown_items"], json!([]), "{what}");
            let got = e2e_tests::items(&body);
            assert!(
                got.iter().all(|m| !items.contains(m)),
                "{what}: a given item returned"
            );
            assert_same(&what, &body, &want_items, &want_scores);
            checked += 1;
        }
    }
    assert_eq!(checked, fixture["cases"].as_array().unwrap().len());
}

/// A synthetic registry whose version records the training hyper-parameters.
fn svc_with_params() -> (tempfile::TempDir, std::sync::Arc<Service>) {
    let dir = tempfile::tempdir().unwrap();
    let registry = Registry::open(dir.path().to_str().unwrap()).unwrap();
    let mut artifacts = generate(&small_config()).planted_artifacts();
    artifacts.model_meta["regularization"] = json!(0.1);
    artifacts.model_meta["alpha"] = json!(2.0);
    block_on(registry.publish("v0.1", &artifacts)).unwrap();
    let loaded = block_on(registry.load("v0.1")).unwrap();
    (
        dir,
        service(loaded, Titles::from_pairs([(1, "One".to_string())])),
    )
}

#[test]
fn fold_in_lists_unknown_ids_and_excludes_given_items() {
    let (_d, svc) = svc_with_params();
    let resp = e2e_tests::route(
        &svc,
        &get("/recommend?history=3,5,999999,3,7,888888&k=90", &[]),
    );
    assert_eq!(resp.status(), 200);
    let body = json(&resp);
    assert_eq!(body["fallback"], "folded_in");
    assert!(body["user_id"].is_null());
    assert_eq!(body["unknown_items"], json!([999999, 888888]));
    let got = e2e_tests::items(&body);
    // 90 items, 3 given (one twice): 87 left, none of them given.
    assert_eq!(got.len(), 87);
    assert!(got.iter().all(|m| ![3, 5, 7].contains(m)));
    // POST gives the same answer, and `exclude` drops more.
    let resp = e2e_tests::route(
        &svc,
        &post(
            "/recommend",
            r#"{"items": [3, 5, 999999, 7, 888888], "k": 90, "exclude": [10, 11]}"#,
        ),
    );
    assert_eq!(resp.status(), 200);
    let post_body = json(&resp);
    let post_items = e2e_tests::items(&post_body);
    let without: Vec<i64> = got
        .iter()
        .copied()
        .filter(|m| ![10, 11].contains(m))
        .collect();
    assert_eq!(post_items, without);
    // Only unknown ids: nothing to fold in, the popularity list (given ids excluded).
    let resp = e2e_tests::route(&svc, &get("/recommend?history=999999&k=5", &[]));
    let body = json(&resp);
    assert_eq!(
        (resp.status().as_u16(), body["fallback"].as_str()),
        (200, Some("popularity"))
    );
    assert_eq!(body["unknown_items"], json!([999999]));
}

#[test]
fn known_user_fold_in_adds_newer_items_to_the_training_row() {
    let (_d, svc) = svc_with_params();
    let plain = json(&e2e_tests::route(&svc, &get("/recommend/1?k=10", &[])));
    assert!(plain["fallback"].is_null());
    assert!(
        plain.get("unknown_items").is_none(),
        "the plain contract is unchanged"
    );
    let top = e2e_tests::items(&plain)[0];
    let resp = e2e_tests::route(&svc, &get(&format!("/recommend/1?k=10&history={top}"), &[]));
    assert_eq!(resp.status(), 200);
    let body = json(&resp);
    assert_eq!(body["fallback"], "folded_in");
    assert_eq!(body["user_id"], 1);
    let got = e2e_tests::items(&body);
    assert!(!got.contains(&top), "the newer item is excluded");
    assert_ne!(
        scores(&body),
        scores(&plain)[1..].to_vec(),
        "a new vector, not the stored one"
    );
}

#[test]
fn exclude_is_merged_with_the_seen_items() {
    let (_d, svc) = svc_with_params();
    let plain = e2e_tests::items(&json(&e2e_tests::route(
        &svc,
        &get("/recommend/1?k=10", &[]),
    )));
    let dropped = [plain[0], plain[3]];
    let resp = e2e_tests::route(
        &svc,
        &get(
            &format!(
                "/recommend/1?k=8&exclude={},{},999999",
                dropped[0], dropped[1]
            ),
            &[],
        ),
    );
    assert_eq!(resp.status(), 200);
    let body = json(&resp);
    assert!(body["fallback"].is_null());
    let want: Vec<i64> = plain
        .iter()
        .copied()
        .filter(|m| !dropped.contains(m))
        .collect();
    assert_eq!(e2e_tests::items(&body), want);
    // An unknown user: the popularity list without the excluded items.
    let pop = e2e_tests::items(&json(&e2e_tests::route(
        &svc,
        &get("/recommend/99999?k=5", &[]),
    )));
    let body = json(&e2e_tests::route(
        &svc,
        &get(&format!("/recommend/99999?k=4&exclude={}", pop[1]), &[]),
    ));
    assert_eq!(body["fallback"], "popularity");
    assert_eq!(
        e2e_tests::items(&body),
        vec![pop[0], pop[2], pop[3], pop[4]]
    );
}

#[test]
fn bad_fold_in_and_exclude_inputs_are_400_and_change_nothing() {
    let (_d, svc) = svc_with_params();
    let before = e2e_tests::route(&svc, &get("/recommend/1?k=10", &[])).into_body();
    let over = (0..501)
        .map(|i| i.to_string())
        .collect::<Vec<_>>()
        .join(",");
    for uri in [
        "/recommend?history=1,,2".to_string(),
        "/recommend?history=1,a".to_string(),
        "/recommend?history=-1".to_string(),
        "/recommend?history=1&history=2".to_string(),
        format!("/recommend?history={over}"),
        "/recommend/1?exclude=1,x".to_string(),
        format!("/recommend/1?exclude={over}"),
        "/recommend?k=5".to_string(),
    ] {
        let resp = e2e_tests::route(&svc, &get(&uri, &[]));
        assert_eq!(resp.status(), 400, "{uri}");
        assert_eq!(json(&resp)["error_type"], "invalid_input", "{uri}");
    }
    let over_json = format!("{{\"items\": [{over}]}}");
    for body in [
        "",
        "[]",
        "{}",
        r#"{"items": "1,2"}"#,
        r#"{"items": [1, "2"]}"#,
        r#"{"items": [1.5]}"#,
        r#"{"items": [-1]}"#,
        r#"{"items": [1], "k": 0}"#,
        r#"{"items": [1], "k": 101}"#,
        r#"{"items": [1], "user_id": -3}"#,
        r#"{"items": [1], "exclude": [-3]}"#,
        r#"{"items": [1], "itemz": [2]}"#,
        over_json.as_str(),
    ] {
        let resp = e2e_tests::route(&svc, &post("/recommend", body));
        assert_eq!(resp.status(), 400, "{body}");
        assert_eq!(json(&resp)["error_type"], "invalid_input", "{body}");
    }
    let after = e2e_tests::route(&svc, &get("/recommend/1?k=10", &[])).into_body();
    let strip = |b: &Bytes| {
        let mut v: Value = serde_json::from_slice(b).unwrap();
        v["provenance"] = Value::Null;
        v
    };
    assert_eq!(strip(&before), strip(&after));
}

#[test]
fn fold_in_without_recorded_hyper_parameters_is_422() {
    // The planted registry records no regularization or alpha.
    let (_d, registry) = e2e_tests::synthetic_registry();
    let loaded = block_on(registry.load("v0.1")).unwrap();
    let svc = service(loaded, Titles::from_pairs([(1, "One".to_string())]));
    let resp = e2e_tests::route(&svc, &get("/recommend?history=1,2", &[]));
    assert_eq!(resp.status(), 422);
    let body = json(&resp);
    assert_eq!(body["error_type"], "fold_in_unavailable");
    assert!(
        body["detail"].as_str().unwrap().contains("regularization"),
        "{body}"
    );
}
