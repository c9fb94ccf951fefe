//! The registry on a real S3 API (moto server): switching across processes, switches
//! under load, refused versions, concurrent writers, authorization, and S3 outages.

mod common;

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use common::{aws_env, bucket, curl, shared_moto, wait_until, Moto, Server};
use recs_core::Store;
use recs_core::{artifact_sha, encode_artifacts, Registry};
use recs_train::gen_data::{generate, GenConfig};

fn small(seed: u64) -> GenConfig {
    GenConfig {
        users: 60,
        items: 50,
        factors: 4,
        ratings_per_user: 10,
        seed,
        ..GenConfig::default()
    }
}

fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Runtime::new().unwrap()
}

/// A bucket with v0.1 and v0.2 published (latest.txt -> v0.2); returns its location.
fn registry_with_two_versions(rt: &tokio::runtime::Runtime, name: &str) -> String {
    shared_moto();
    rt.block_on(async {
        bucket(name).await;
        let location = format!("s3://{name}/registry");
        let registry = Registry::open(&location).unwrap();
        registry
            .publish("v0.1", &generate(&small(1)).planted_artifacts())
            .await
            .unwrap();
        registry
            .publish("v0.2", &generate(&small(2)).planted_artifacts())
            .await
            .unwrap();
        location
    })
}

/// Writes a version's files as given (already broken by the caller), with a
/// meta.json whose artifact_sha matches them unless `sha` overrides it.
async fn put_version(
    store: &Store,
    version: &str,
    files: Vec<(String, Vec<u8>)>,
    sha: Option<String>,
) {
    let sha =
        sha.unwrap_or_else(|| artifact_sha(files.iter().map(|(n, b)| (n.as_str(), b.as_slice()))));
    for (name, bytes) in files {
        store
            .put(&format!("{version}/als/{name}"), bytes)
            .await
            .unwrap();
    }
    let meta = serde_json::json!({"version": version, "artifact_sha": sha, "model_name": "als"});
    store
        .put(
            &format!("{version}/meta.json"),
            meta.to_string().into_bytes(),
        )
        .await
        .unwrap();
}

fn json(body: &str) -> serde_json::Value {
    serde_json::from_str(body).unwrap_or_else(|e| panic!("not JSON ({e}): {body}"))
}

fn env_for(endpoint: &str, poll: &str) -> Vec<(&'static str, String)> {
    let mut env = aws_env(endpoint);
    env.push(("ACTIVE_POLL_SECONDS", poll.into()));
    env
}

#[test]
fn a_switch_through_one_server_is_served_by_the_other_within_the_poll_interval() {
    let rt = rt();
    let location = registry_with_two_versions(&rt, "two-servers");
    let env = env_for(shared_moto(), "1");
    let a = Server::start(&location, &env);
    let b = Server::start(&location, &env);
    for s in [&a, &b] {
        let (status, body) = curl("GET", &format!("{}/healthz", s.base), &[], None);
        assert_eq!(
            (status, json(&body)["version"].as_str()),
            (200, Some("v0.2")),
            "{body}"
        );
    }
    let (status, body) = curl("GET", &format!("{}/switch?model=v0.1", a.base), &[], None);
    assert_eq!(status, 200, "{body}");
    assert_eq!(json(&body)["previous_version"], "v0.2");
    let took = wait_until(Duration::from_secs(10), || {
        let (_, body) = curl("GET", &format!("{}/recommend/1?k=3", b.base), &[], None);
        json(&body)["model"] == "v0.1"
    })
    .expect("the other server never served v0.1");
    eprintln!("switch seen by the second process after {took:?} (poll 1 s)");
    assert!(
        took < Duration::from_secs(3),
        "took {took:?} with a 1 s poll"
    );

    // Rollback = switch to previous_version, the runbook's way.
    let (_, status_body) = curl("GET", &format!("{}/rollout/status", b.base), &[], None);
    assert_eq!(json(&status_body)["previous_version"], "v0.2");
    let (status, _) = curl(
        "POST",
        &format!("{}/switch", b.base),
        &[],
        Some(r#"{"model":"v0.2"}"#),
    );
    assert_eq!(status, 200);
    wait_until(Duration::from_secs(10), || {
        let (_, body) = curl("GET", &format!("{}/healthz", a.base), &[], None);
        json(&body)["version"] == "v0.2"
    })
    .expect("rollback not seen");
}

#[test]
fn a_switch_under_concurrent_load_has_no_5xx_and_no_mixed_responses() {
    let rt = rt();
    let location = registry_with_two_versions(&rt, "switch-under-load");
    // The lists each version must give, computed from the models themselves.
    let (expected, server) = rt.block_on(async {
        let registry = Registry::open(&location).unwrap();
        let mut expected: HashMap<(String, i64), Vec<i64>> = HashMap::new();
        for v in ["v0.1", "v0.2"] {
            let m = registry.load(v).await.unwrap();
            for user in 1..=20i64 {
                let row = m.model.als().unwrap().user_row(user).unwrap();
                let items = m
                    .model
                    .als()
                    .unwrap()
                    .recommend_row(row, 5)
                    .iter()
                    .map(|s| m.model.als().unwrap().item_id(s.row))
                    .collect();
                expected.insert((v.to_string(), user), items);
            }
        }
        let config = recs_serve::Config {
            registry: location.clone(),
            ..recs_serve::Config::default()
        };
        let svc = Arc::new(recs_serve::Service::start(config).await);
        let (listener, addr) = recs::server::bind(([127, 0, 0, 1], 0).into())
            .await
            .unwrap();
        tokio::spawn(recs::server::serve(listener, svc, std::future::pending()));
        (expected, format!("http://{addr}"))
    });
    let stop = Arc::new(AtomicBool::new(false));
    let workers: Vec<_> = (0..4)
        .map(|w| {
            let (stop, server, expected) = (stop.clone(), server.clone(), expected.clone());
            std::thread::spawn(move || {
                let mut seen = HashSet::new();
                let mut n = 0;
                while !stop.load(Ordering::Relaxed) || n < 20 {
                    let user = (n + w * 7) % 20 + 1;
                    let (status, body) =
                        curl("GET", &format!("{server}/recommend/{user}?k=5"), &[], None);
                    assert_eq!(status, 200, "{body}");
                    let v = json(&body);
                    let version = v["model"].as_str().unwrap().to_string();
                    assert_eq!(
                        v["provenance"]["model_version"],
                        version.as_str(),
                        "provenance disagrees"
                    );
                    let items: Vec<i64> = v["items"]
                        .as_array()
                        .unwrap()
                        .iter()
                        .map(|i| i.as_i64().unwrap())
                        .collect();
                    assert_eq!(
                        items,
                        expected[&(version.clone(), user)],
                        "a mix of versions for user {user}"
                    );
                    seen.insert(version);
                    n += 1;
                }
                (n, seen)
            })
        })
        .collect();
    for target in ["v0.1", "v0.2", "v0.1", "v0.2", "v0.1"] {
        std::thread::sleep(Duration::from_millis(150));
        let (status, body) = curl("GET", &format!("{server}/switch?model={target}"), &[], None);
        assert_eq!(status, 200, "{body}");
    }
    stop.store(true, Ordering::Relaxed);
    let mut total = 0;
    let mut versions = HashSet::new();
    for w in workers {
        let (n, seen) = w.join().expect("worker saw a 5xx or a mixed response");
        total += n;
        versions.extend(seen);
    }
    assert_eq!(
        versions.len(),
        2,
        "both versions answered during the switches"
    );
    eprintln!("{total} requests across 5 switches: all 200, none mixed");
}

#[test]
fn broken_versions_are_refused_with_422_and_the_old_one_keeps_serving() {
    let rt = rt();
    let location = registry_with_two_versions(&rt, "broken-versions");
    let env = env_for(shared_moto(), "1");
    rt.block_on(async {
        let store = Store::open(&location).unwrap();
        let good = || encode_artifacts(&generate(&small(3)).planted_artifacts());
        let mut truncated = good();
        let f = truncated
            .iter_mut()
            .find(|(n, _)| n == "item_factors.npy")
            .unwrap();
        f.1.truncate(f.1.len() - 5);
        put_version(&store, "v-truncated", truncated, None).await;
        put_version(&store, "v-checksum", good(), Some("0".repeat(64))).await;
        let mut swapped = good();
        let (u, i) = (
            swapped
                .iter()
                .position(|(n, _)| n == "user_factors.npy")
                .unwrap(),
            swapped
                .iter()
                .position(|(n, _)| n == "item_factors.npy")
                .unwrap(),
        );
        let tmp = swapped[u].1.clone();
        swapped[u].1 = swapped[i].1.clone();
        swapped[i].1 = tmp;
        put_version(&store, "v-swapped", swapped, None).await;
        let mut empty = good();
        for (name, bytes) in empty.iter_mut() {
            match name.as_str() {
                "user_factors.npy" | "item_factors.npy" => {
                    *bytes = recs_core::npy::write_f32(&[0, 5], &[])
                }
                "users.json" | "items.json" => *bytes = b"[]".to_vec(),
                "seen_csr.npz" => {
                    *bytes = recs_core::npz::write_csr(&recs_core::CsrPattern::from_rows(0, vec![]))
                }
                _ => {}
            }
        }
        put_version(&store, "v-empty", empty, None).await;
    });
    let server = Server::start(&location, &env);
    for (version, reason) in [
        ("v-truncated", "truncated data"),
        ("v-checksum", "checksum mismatch"),
        ("v-swapped", "swapped"),
        ("v-empty", "empty model"),
    ] {
        let (status, body) = curl(
            "GET",
            &format!("{}/switch?model={version}", server.base),
            &[],
            None,
        );
        assert_eq!(status, 422, "{version}: {body}");
        let detail = json(&body)["detail"].as_str().unwrap().to_string();
        assert!(
            detail.contains(reason) && detail.contains("still serving v0.2"),
            "{version}: {detail}"
        );
        let (status, body) = curl(
            "GET",
            &format!("{}/recommend/1?k=3", server.base),
            &[],
            None,
        );
        assert_eq!(
            (status, json(&body)["model"].as_str()),
            (200, Some("v0.2")),
            "{body}"
        );
    }
    let (status, _) = curl(
        "GET",
        &format!("{}/switch?model=v9.9", server.base),
        &[],
        None,
    );
    assert_eq!(status, 404);
    // Nothing was recorded: every instance still serves v0.2.
    let (_, body) = curl("GET", &format!("{}/rollout/status", server.base), &[], None);
    assert_eq!(json(&body)["active_version"], "v0.2");
    let (_, metrics) = curl("GET", &format!("{}/metrics", server.base), &[], None);
    assert!(
        metrics.contains(
            "recommend_errors_total{error_type=\"switch_refused\",endpoint=\"switch\"} 4"
        ) && !metrics.contains("error_type=\"model_load\",endpoint=\"switch\""),
        "{metrics}"
    );
}

#[test]
fn concurrent_switches_are_all_recorded_in_order() {
    let rt = rt();
    let location = registry_with_two_versions(&rt, "concurrent-switches");
    rt.block_on(async {
        let registry = Registry::open(&location).unwrap();
        registry
            .publish("v0.3", &generate(&small(3)).planted_artifacts())
            .await
            .unwrap();
        let start = |_| {
            let location = location.clone();
            async move {
                Arc::new(
                    recs_serve::Service::start(recs_serve::Config {
                        registry: location,
                        ..recs_serve::Config::default()
                    })
                    .await,
                )
            }
        };
        let (a, b) = (start(0).await, start(1).await);
        let (ra, rb) = tokio::join!(a.switch("v0.1"), b.switch("v0.3"));
        // Both must succeed: the loser of a conditional write re-reads and retries.
        assert!(ra.is_ok(), "switch to v0.1 failed: {:?}", ra.err());
        assert!(rb.is_ok(), "switch to v0.3 failed: {:?}", rb.err());
        let (state, _) = recs_core::active::read(registry.store())
            .await
            .unwrap()
            .unwrap();
        let switches: Vec<&str> = state
            .history
            .iter()
            .filter(|c| c.action == "switch")
            .map(|c| c.version.as_str())
            .collect();
        // Each switch is in the history exactly once, in revision order, and the
        // active version is the last one written, the previous the first.
        let mut sorted = switches.clone();
        sorted.sort_unstable();
        assert_eq!(sorted, ["v0.1", "v0.3"], "{:?}", state.history);
        assert!(state
            .history
            .windows(2)
            .all(|w| w[0].revision < w[1].revision));
        assert_eq!(state.active_version, switches[1]);
        assert_eq!(state.previous_version.as_deref(), Some(switches[0]));
    });
}

#[test]
fn admin_routes_need_the_token_and_refuse_hostile_names() {
    let rt = rt();
    let location = registry_with_two_versions(&rt, "auth-and-names");
    let mut env = env_for(shared_moto(), "10");
    env.push(("RECS_ADMIN_TOKEN", "s3cret".into()));
    let server = Server::start(&location, &env);
    let url = format!("{}/switch?model=v0.1", server.base);
    assert_eq!(curl("GET", &url, &[], None).0, 401);
    assert_eq!(
        curl("GET", &url, &["Authorization: Bearer nope"], None).0,
        403
    );
    let auth = "Authorization: Bearer s3cret";
    let upd = format!("{}/rollout/update", server.base);
    assert_eq!(
        curl("POST", &upd, &[], Some(r#"{"strategy":"canary"}"#)).0,
        401
    );
    for hostile in [
        "..%2F..%2Fetc%2Fpasswd",
        "v0.1%2F..%2Fv0.2",
        "%2Fetc",
        "v0.1%00",
        "a%0Ab",
        "..",
    ] {
        let (status, body) = curl(
            "GET",
            &format!("{}/switch?model={hostile}", server.base),
            &[auth],
            None,
        );
        assert_eq!(status, 400, "{hostile}: {body}");
    }
    let (status, body) = curl("POST", &upd, &[auth], Some(r#"{"canary_percentage":150}"#));
    assert_eq!(status, 400, "{body}");
    let (status, body) = curl(
        "POST",
        &upd,
        &[auth],
        Some(r#"{"strategy":"canary","canary_version":"../x"}"#),
    );
    assert_eq!(status, 400, "{body}");
    // A partial update changes only what it names.
    let (status, body) = curl(
        "POST",
        &upd,
        &[auth],
        Some(r#"{"strategy":"ab_test","canary_version":"v0.1","canary_percentage":50}"#),
    );
    assert_eq!(status, 200, "{body}");
    let (status, body) = curl(
        "POST",
        &format!("{upd}?canary_percentage=20"),
        &[auth],
        None,
    );
    assert_eq!(status, 200, "{body}");
    let r = &json(&body)["rollout"];
    assert_eq!(
        (
            r["strategy"].as_str(),
            r["canary_version"].as_str(),
            r["canary_percentage"].as_f64()
        ),
        (Some("ab_test"), Some("v0.1"), Some(20.0))
    );
    // Variants are stable per user and both appear.
    let mut variants = HashSet::new();
    for user in 1..=40 {
        let (_, b1) = curl(
            "GET",
            &format!("{}/recommend/{user}?k=2", server.base),
            &[],
            None,
        );
        let (_, b2) = curl(
            "GET",
            &format!("{}/recommend/{user}?k=2", server.base),
            &[],
            None,
        );
        let (v1, v2) = (json(&b1), json(&b2));
        assert_eq!(v1["variant"], v2["variant"], "user {user} changed variant");
        let expect_model = if v1["variant"] == "variant_B" {
            "v0.1"
        } else {
            "v0.2"
        };
        assert_eq!(v1["model"], expect_model);
        variants.insert(v1["variant"].as_str().unwrap().to_string());
    }
    assert_eq!(variants.len(), 2, "{variants:?}");
    // The served share of variant_B is a binomial draw (n = 400, p = 0.2): within
    // 4.5 standard deviations of 80, so a 1 % or a 50 % split fails.
    let (n, p) = (400.0f64, 0.2f64);
    let b = (1..=400)
        .filter(|user| {
            let (status, body) = curl(
                "GET",
                &format!("{}/recommend/{user}?k=1", server.base),
                &[],
                None,
            );
            assert_eq!(status, 200, "{body}");
            json(&body)["variant"] == "variant_B"
        })
        .count() as f64;
    let sd = (n * p * (1.0 - p)).sqrt();
    assert!(
        (b - n * p).abs() <= 4.5 * sd,
        "{b} of 400 users got variant_B at 20 %"
    );
}

#[test]
fn s3_outages_at_cold_start_and_later() {
    let rt = rt();
    shared_moto();
    // Cold start against an endpoint where nothing listens: 503 with the reason.
    let dead = "http://127.0.0.1:9"; // discard port: connection refused
    let server = Server::start("s3://no-such-server/registry", &env_for(dead, "1"));
    let (status, body) = curl("GET", &format!("{}/healthz", server.base), &[], None);
    assert_eq!(status, 503, "{body}");
    assert!(
        !body.contains("no-such-server"),
        "public /healthz names the registry: {body}"
    );
    let (_, body) = curl("GET", &format!("{}/rollout/status", server.base), &[], None);
    let detail = json(&body)["served"]["detail"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(
        detail.contains("unavailable") && detail.contains("s3://no-such-server/registry"),
        "{detail}"
    );
    drop(server);

    // Later: the model is loaded, then S3 goes away; it keeps serving, errors counted.
    let mut moto = Moto::start();
    let location = rt.block_on(async {
        // A private S3 server, so stopping it affects this test only.
        let config = aws_config::from_env()
            .endpoint_url(&moto.endpoint)
            .load()
            .await;
        let s3 = aws_sdk_s3::Client::from_conf(
            aws_sdk_s3::config::Builder::from(&config)
                .force_path_style(true)
                .build(),
        );
        s3.create_bucket()
            .bucket("outage-later")
            .send()
            .await
            .unwrap();
        let dir = tempfile::tempdir().unwrap();
        let local = Registry::open(dir.path().to_str().unwrap()).unwrap();
        local
            .publish("v0.1", &generate(&small(1)).planted_artifacts())
            .await
            .unwrap();
        for key in local.store().list("v0.1").await.unwrap() {
            let bytes = local.store().get(&format!("v0.1/{key}")).await.unwrap();
            s3.put_object()
                .bucket("outage-later")
                .key(format!("registry/v0.1/{key}"))
                .body(bytes.into())
                .send()
                .await
                .unwrap();
        }
        s3.put_object()
            .bucket("outage-later")
            .key("registry/latest.txt")
            .body(b"v0.1".to_vec().into())
            .send()
            .await
            .unwrap();
        "s3://outage-later/registry".to_string()
    });
    let server = Server::start(&location, &env_for(&moto.endpoint, "1"));
    assert_eq!(
        curl("GET", &format!("{}/healthz", server.base), &[], None).0,
        200
    );
    moto.stop();
    std::thread::sleep(Duration::from_millis(2500));
    for _ in 0..5 {
        let (status, body) = curl(
            "GET",
            &format!("{}/recommend/1?k=3", server.base),
            &[],
            None,
        );
        assert_eq!(
            (status, json(&body)["model"].as_str()),
            (200, Some("v0.1")),
            "{body}"
        );
    }
    assert_eq!(
        curl("GET", &format!("{}/healthz", server.base), &[], None).0,
        200
    );
    let counted = wait_until(Duration::from_secs(15), || {
        let (_, metrics) = curl("GET", &format!("{}/metrics", server.base), &[], None);
        metrics.contains(
            "recommend_errors_total{error_type=\"registry_unavailable\",endpoint=\"refresh\"}",
        )
    });
    assert!(counted.is_some(), "the failed poll was not counted");
    // A switch while S3 is down: 503 registry_unavailable, and what is served stays.
    for model in ["v0.1", "v0.2"] {
        let (status, body) = curl(
            "GET",
            &format!("{}/switch?model={model}", server.base),
            &[],
            None,
        );
        assert_eq!(status, 503, "{model}: {body}");
        assert_eq!(json(&body)["error_type"], "registry_unavailable", "{body}");
    }
    let (status, body) = curl("GET", &format!("{}/healthz", server.base), &[], None);
    assert_eq!(
        (status, json(&body)["version"].as_str()),
        (200, Some("v0.1"))
    );
    let (status, body) = curl(
        "GET",
        &format!("{}/recommend/1?k=3", server.base),
        &[],
        None,
    );
    assert_eq!(
        (status, json(&body)["model"].as_str()),
        (200, Some("v0.1")),
        "{body}"
    );
}

/// `recs` with the moto environment; panics with its output unless it succeeds.
fn recs_ok(endpoint: &str, args: &[&str]) -> String {
    let out = std::process::Command::new(common::RECS)
        .args(args)
        .envs(aws_env(endpoint))
        .env("RUST_LOG", "warn")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(
        out.status.success(),
        "recs {args:?}: {stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
}

#[test]
fn an_ab_test_on_s3_is_logged_analyzed_and_promoted_by_the_cli() {
    let rt = rt();
    let location = registry_with_two_versions(&rt, "experiment-bucket");
    let endpoint = shared_moto();
    let events = "s3://experiment-bucket/events".to_string();
    recs_ok(endpoint, &["switch", "v0.1", "--registry", &location]);
    recs_ok(
        endpoint,
        &[
            "rollout",
            "update",
            "--registry",
            &location,
            "--strategy",
            "ab_test",
            "--canary-version",
            "v0.2",
            "--canary-percentage",
            "50",
        ],
    );
    let mut env = env_for(endpoint, "1");
    env.push(("EVENTS", events.clone()));
    let server = Server::start(&location, &env);
    // Real traffic, 200 URLs per curl; each answer converts (a watch of its first
    // movie 1 ms later) at 10 % for A and 17 % for B, drawn from a fixed hash.
    let mut watches = String::new();
    let (mut a, mut b) = (0, 0);
    for chunk in (1..=2600i64).collect::<Vec<_>>().chunks(200) {
        let urls: Vec<String> = chunk
            .iter()
            .map(|u| format!("{}/recommend/{u}?k=5", server.base))
            .collect();
        let out = std::process::Command::new("curl")
            .args(["-sS", "-w", "\n"])
            .args(&urls)
            .output()
            .unwrap();
        for (line, user) in String::from_utf8_lossy(&out.stdout).lines().zip(chunk) {
            let body = json(line);
            let rate = match body["variant"].as_str() {
                Some("variant_A") => {
                    a += 1;
                    0.10
                }
                Some("variant_B") => {
                    b += 1;
                    0.17
                }
                other => panic!("no variant in an A/B test: {other:?} {line}"),
            };
            let draw = (recs_core::hash::splitmix64(*user as u64 ^ 0xAB) >> 11) as f64
                / (1u64 << 53) as f64;
            if draw < rate {
                watches.push_str(&format!(
                    "{{\"user_id\":{user},\"movie_id\":{},\"ts\":{}}}\n",
                    body["items"][0],
                    body["provenance"]["timestamp"].as_i64().unwrap() + 1
                ));
            }
        }
    }
    assert_eq!(a + b, 2600);
    let day = recs_core::time::date_of_day(recs_core::time::now_ms() / 86_400_000);
    rt.block_on(async {
        Store::open(&events)
            .unwrap()
            .put(&format!("watch/{day}/part-0.jsonl"), watches.into_bytes())
            .await
            .unwrap()
    });
    std::thread::sleep(Duration::from_millis(5));
    // The route flushes the server's exposure log to S3 and analyzes it.
    let (status, body) = curl(
        "GET",
        // Latency here is a shared machine's noise; the guardrail has its own tests.
        &format!(
            "{}/experiment/analyze?max_latency_regression_pct=1000",
            server.base
        ),
        &[],
        None,
    );
    assert_eq!(status, 200, "{body}");
    let r = json(&body);
    assert_eq!(r["analysis"]["variant_a"]["exposures"], a, "{body}");
    assert_eq!(r["analysis"]["variant_b"]["exposures"], b, "{body}");
    assert_eq!(r["decision"]["promote"], true, "{}", r["decision"]);
    // The CLI reads the same S3 log; a dry run first, then --apply.
    let dry = recs_ok(
        endpoint,
        &[
            "experiment",
            "promote",
            "--registry",
            &location,
            "--events",
            &events,
            "--max-latency-regression-pct",
            "1000",
        ],
    );
    assert!(dry.contains("would promote v0.2"), "{dry}");
    let applied = recs_ok(
        endpoint,
        &[
            "experiment",
            "promote",
            "--registry",
            &location,
            "--events",
            &events,
            "--max-latency-regression-pct",
            "1000",
            "--apply",
        ],
    );
    assert!(applied.contains("promoted v0.2"), "{applied}");
    let (state, _) = rt
        .block_on(recs_core::active::read(
            Registry::open(&location).unwrap().store(),
        ))
        .unwrap()
        .unwrap();
    assert_eq!(state.active_version, "v0.2");
    assert_eq!(state.previous_version.as_deref(), Some("v0.1"));
    assert_eq!(state.rollout.strategy, recs_core::active::Strategy::Fixed);
}

/// Objects over one range (8 MiB) come back byte for byte from parallel ranged GETs:
/// an odd size (the last range short), one exactly two ranges, one whose rest is
/// split into the four largest ranges (not 8 MiB ones), a small and an empty one.
#[test]
fn large_objects_read_back_exactly_through_parallel_ranges() {
    let rt = rt();
    shared_moto();
    rt.block_on(async {
        bucket("ranges-bucket").await;
        let store = Store::open("s3://ranges-bucket/x").unwrap();
        for (name, len) in [
            ("odd", 8 * 1024 * 1024 * 3 + 12_345),
            ("even", 16 * 1024 * 1024),
            ("four", 8 * 1024 * 1024 * 6 + 7),
            ("small", 1000),
            ("empty", 0),
        ] {
            let mut x = len as u64 + 1;
            let bytes: Vec<u8> = (0..len)
                .map(|_| {
                    x = recs_core::hash::splitmix64(x);
                    x as u8
                })
                .collect();
            store.put(name, bytes.clone()).await.unwrap();
            let got = store.get(name).await.unwrap();
            assert_eq!(got.len(), bytes.len(), "{name}");
            assert!(got == bytes, "{name}: bytes differ");
        }
    });
}

/// Four `recs train` processes publish into one S3 registry at once, none naming a
/// version: each gets its own, every one verifies, nothing is overwritten.
#[test]
fn concurrent_publishers_get_distinct_verifiable_versions() {
    let rt = rt();
    let endpoint = shared_moto();
    rt.block_on(bucket("publish-race"));
    let location = "s3://publish-race/registry".to_string();
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let out = std::process::Command::new(common::RECS)
        .args([
            "gen-data",
            "--out",
            data.to_str().unwrap(),
            "--users",
            "80",
            "--items",
            "60",
        ])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let ratings = data.join("ratings.csv");
    let children: Vec<_> = (0..4)
        .map(|seed| {
            std::process::Command::new(common::RECS)
                .args([
                    "train",
                    "--ratings",
                    ratings.to_str().unwrap(),
                    "--registry",
                    &location,
                    "--no-gate",
                    "--factors",
                    "8",
                    "--iterations",
                    "3",
                    "--seed",
                    &seed.to_string(),
                ])
                .envs(aws_env(endpoint))
                .env("RUST_LOG", "warn")
                .stdout(std::process::Stdio::piped())
                .stderr(std::process::Stdio::piped())
                .spawn()
                .unwrap()
        })
        .collect();
    for child in children {
        let out = child.wait_with_output().unwrap();
        assert!(
            out.status.success(),
            "{}\n{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    rt.block_on(async {
        let registry = Registry::open(&location).unwrap();
        let all = registry.versions().await.unwrap();
        // recs train also publishes the popularity baseline once, when absent.
        assert!(all.iter().any(|v| v == "v_popularity"), "{all:?}");
        let versions: Vec<&String> = all.iter().filter(|v| *v != "v_popularity").collect();
        assert_eq!(versions, ["v0.1", "v0.2", "v0.3", "v0.4"], "{all:?}");
        let mut shas = HashSet::new();
        for v in &versions {
            // Each verifies (shapes, finiteness, checksum) and was written by one
            // publisher: its four seeds give four different artifact checksums.
            let loaded = registry.load(v).await.unwrap();
            shas.insert(loaded.artifact_sha.clone());
        }
        assert_eq!(
            shas.len(),
            4,
            "a version was overwritten by another publisher"
        );
    });
}

/// Takedowns and batches on S3: `recs catalog block` writes blocked.json in the
/// bucket, `recs batch` reads its input object and writes its output object there,
/// leaving the blocked movie out; an input that is not JSON lines writes nothing.
#[test]
fn a_batch_on_s3_reads_and_writes_objects_and_leaves_blocked_movies_out() {
    let rt = rt();
    let location = registry_with_two_versions(&rt, "batch-bucket");
    let endpoint = shared_moto();
    let store = Store::open("s3://batch-bucket").unwrap();
    let users: String = (1..=40)
        .map(|u| format!("{{\"userId\": \"{u}\"}}\n"))
        .collect();
    rt.block_on(async {
        store
            .put("in/users.jsonl", format!("{users}not json\n").into_bytes())
            .await
            .unwrap();
        store
            .put("in/bad.jsonl", b"a,b\n1,2\n".to_vec())
            .await
            .unwrap();
    });
    let run = |out: &str| {
        recs_ok(
            endpoint,
            &[
                "batch",
                "--registry",
                &location,
                "--input",
                "s3://batch-bucket/in/users.jsonl",
                "--output",
                out,
                "--k",
                "5",
            ],
        )
    };
    let before = run("s3://batch-bucket/out/before.jsonl");
    let summary: serde_json::Value = serde_json::from_str(&before).unwrap();
    assert_eq!(summary["summary"]["lines"], 41);
    assert_eq!(summary["summary"]["errors"], 1);
    assert_eq!(summary["version"], "v0.2");
    let read = |key: &str| -> Vec<serde_json::Value> {
        let bytes = rt.block_on(store.get(key)).unwrap();
        String::from_utf8(bytes)
            .unwrap()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect()
    };
    let lines = read("out/before.jsonl");
    assert_eq!(lines.len(), 41);
    let top = lines[0]["output"]["recommendedItems"][0]
        .as_str()
        .unwrap()
        .to_string();
    recs_ok(
        endpoint,
        &[
            "catalog",
            "block",
            &top,
            "--reason",
            "test",
            "--registry",
            &location,
        ],
    );
    let listed: serde_json::Value = serde_json::from_str(&recs_ok(
        endpoint,
        &["catalog", "list", "--registry", &location],
    ))
    .unwrap();
    assert!(listed["movies"].get(&top).is_some(), "{listed}");
    run("s3://batch-bucket/out/after.jsonl");
    for line in read("out/after.jsonl").iter().take(40) {
        let items = line["output"]["recommendedItems"].as_array().unwrap();
        assert_eq!(items.len(), 5);
        assert!(
            items.iter().all(|i| i.as_str() != Some(top.as_str())),
            "{line}"
        );
    }
    let out = std::process::Command::new(common::RECS)
        .args([
            "batch",
            "--registry",
            &location,
            "--input",
            "s3://batch-bucket/in/bad.jsonl",
            "--output",
            "s3://batch-bucket/out/bad.jsonl.out",
        ])
        .envs(aws_env(endpoint))
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("no line of the input is a JSON object"));
    assert!(matches!(
        rt.block_on(store.get("out/bad.jsonl.out")),
        Err(recs_core::StoreError::NotFound(_))
    ));
}

/// A takedown through one `recs serve` process reaches the other on its next poll
/// (ACTIVE_POLL_SECONDS=1), on S3, with the served version unchanged.
#[test]
fn a_block_through_one_server_is_applied_by_the_other_within_the_poll_interval() {
    let rt = rt();
    let location = registry_with_two_versions(&rt, "two-servers-block");
    let env = env_for(shared_moto(), "1");
    let a = Server::start(&location, &env);
    let b = Server::start(&location, &env);
    let top = |s: &Server| {
        let (status, body) = curl("GET", &format!("{}/recommend/1?k=5", s.base), &[], None);
        assert_eq!(status, 200, "{body}");
        let body = json(&body);
        let items: Vec<i64> = body["items"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_i64().unwrap())
            .collect();
        (items, body["model"].clone())
    };
    let (before, model) = top(&b);
    let body = format!(r#"{{"movie_ids": [{}], "reason": "test"}}"#, before[0]);
    let (status, resp) = curl(
        "POST",
        &format!("{}/catalog/block", a.base),
        &[],
        Some(&body),
    );
    assert_eq!(status, 200, "{resp}");
    let took = wait_until(Duration::from_secs(10), || !top(&b).0.contains(&before[0]))
        .expect("the other server kept serving the blocked movie");
    eprintln!("block applied by the second process after {took:?} (poll 1 s)");
    assert!(
        took < Duration::from_secs(3),
        "took {took:?} with a 1 s poll"
    );
    assert_eq!(top(&b).1, model, "the version served did not change");
    let (_, listed) = curl("GET", &format!("{}/catalog/blocked", b.base), &[], None);
    assert_eq!(json(&listed)["applied_revision"], 1, "{listed}");
}
