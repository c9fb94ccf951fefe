//! The EMF contract, end to end: each function's handler runs over the events in
//! `events/` (healthy traffic, bad input, a switch, a refused switch, a rollout change,
//! a registry with no servable model, a drift run), and every EMF line it prints is
//! checked by `infra/tests/emf_contract.py` against the metrics that
//! `infra/template.yaml`'s alarms and dashboard read, taken from the template itself.

use std::process::Command;

use e2e_tests::{lambda_event, service_over};
use recs_core::Registry;
use recs_serve::api::Endpoint;
use recs_serve::lambda::respond_with_metrics;
use recs_telemetry::emf;

const RECOMMEND: &[Endpoint] = &[Endpoint::Recommend];
const HEALTH: &[Endpoint] = &[Endpoint::Health];
const SWITCH: &[Endpoint] = &Endpoint::ADMIN;

/// An events/ file with its query string and parameters replaced.
fn with_query(name: &str, query: &str) -> lambda_http::Request {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../events")
        .join(name);
    let mut v: serde_json::Value = serde_json::from_slice(&std::fs::read(path).unwrap()).unwrap();
    v["rawQueryString"] = query.into();
    let params: serde_json::Map<String, serde_json::Value> = query
        .split('&')
        .filter_map(|kv| kv.split_once('='))
        .map(|(k, val)| (k.to_string(), val.into()))
        .collect();
    v["queryStringParameters"] = params.into();
    lambda_http::request::from_str(&v.to_string()).unwrap()
}

#[tokio::test]
async fn every_metric_the_template_reads_is_written_by_a_function() {
    let mut lines = Vec::new();
    let mut run = |out: Vec<String>| {
        for l in &out {
            emf::check_document(l).unwrap_or_else(|e| panic!("{e}: {l}"));
        }
        lines.extend(out);
    };

    // recommend, health and switch over a healthy registry (cold start first).
    let (dir, svc) = service_over(&[("v0.1", 42), ("v0.2", 7)]).await;
    let mut cold = true;
    for (routes, event) in [
        (RECOMMEND, "recommend.json"),
        (RECOMMEND, "recommend-unknown-user.json"),
        (RECOMMEND, "recommend-bad-k.json"),
        (RECOMMEND, "recommend-bad-user.json"),
        (HEALTH, "healthz.json"),
        (SWITCH, "switch-get.json"),
        (SWITCH, "switch-hostile.json"),
        (SWITCH, "rollout-status.json"),
        (SWITCH, "rollout-update.json"),
    ] {
        let (_, out) = respond_with_metrics(&svc, routes, lambda_event(event), cold).await;
        cold = false;
        run(out);
    }
    // A switch to a corrupt version is refused (switch_refused, not model_load).
    let registry = Registry::open(dir.path().to_str().unwrap()).unwrap();
    let v3 = e2e_tests::small_config();
    registry
        .publish(
            "v0.3",
            &recs_train::gen_data::generate(&v3).planted_artifacts(),
        )
        .await
        .unwrap();
    std::fs::write(dir.path().join("v0.3/als/items.json"), "[1, 2").unwrap();
    let (resp, out) = respond_with_metrics(
        &svc,
        SWITCH,
        with_query("switch-get.json", "model=v0.3"),
        false,
    )
    .await;
    assert_eq!(resp.status(), 422);
    assert!(out.iter().any(|l| l.contains("\"switch_refused\"")));
    run(out);

    // No servable model: the start-up failure (model_load) and a 503 on recommend.
    let (broken, svc) = service_over(&[("v0.1", 42)]).await;
    std::fs::write(broken.path().join("latest.txt"), "v9.9").unwrap();
    let svc = std::sync::Arc::new(
        recs_serve::Service::start_with(
            recs_serve::Config {
                registry: broken.path().display().to_string(),
                ..svc.config.clone()
            },
            recs_serve::Metrics::with_emf_outbox(),
        )
        .await,
    );
    let (resp, out) =
        respond_with_metrics(&svc, RECOMMEND, lambda_event("recommend.json"), true).await;
    assert_eq!(resp.status(), 503);
    assert!(out.iter().any(|l| l.contains("\"model_load\"")));
    run(out);

    // A panic in a handler: the adapter answers 500 with these lines (the same
    // Outcome lambda::respond_with_metrics builds when the handler task panics).
    run(emf::request_lines(
        &emf::Outcome {
            endpoint: "recommend",
            status: 500,
            latency_seconds: 0.0,
            error_type: Some("internal_error"),
            request_id: String::new(),
            model_version: None,
            variant: None,
        },
        false,
    ));

    // The registry becomes unreadable under a serving instance: the background poll
    // fails (registry_unavailable) and the model keeps serving.
    let (flaky, svc) = service_over(&[("v0.1", 42)]).await;
    let svc = std::sync::Arc::new(
        recs_serve::Service::start_with(
            recs_serve::Config {
                registry: flaky.path().display().to_string(),
                poll: std::time::Duration::ZERO,
                ..svc.config.clone()
            },
            recs_serve::Metrics::with_emf_outbox(),
        )
        .await,
    );
    // A folder where active.json should be: reading it fails (not "absent").
    std::fs::create_dir(flaky.path().join("active.json")).unwrap();
    let mut saw_unavailable = false;
    for _ in 0..50 {
        let (resp, out) =
            respond_with_metrics(&svc, RECOMMEND, lambda_event("recommend.json"), false).await;
        assert_eq!(resp.status(), 200, "the loaded model keeps serving");
        saw_unavailable |= out.iter().any(|l| l.contains("\"registry_unavailable\""));
        run(out);
        if saw_unavailable {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    assert!(saw_unavailable, "the failed poll reaches EMF");

    // The drift function writes one line per feature with drift_line.
    for feature in recs_drift::FEATURES {
        run(vec![emf::drift_line(feature, 0.05, "v0.1", 1000)]);
    }

    // The retrain function writes one line per run with retrain_line, whether the gate
    // passed or refused (a run trains a model: too slow to run here).
    run(vec![
        emf::retrain_line(12.5, 1000, Some(0.31), "passed", Some("v0.2")),
        emf::retrain_line(1.0, 0, None, "failed", None),
    ]);

    let has_yaml = Command::new("python3").args(["-c", "import yaml"]).status();
    if !has_yaml.is_ok_and(|s| s.success()) {
        let pip = Command::new("python3")
            .args(["-m", "pip", "install", "--quiet", "pyyaml"])
            .status()
            .expect("python3 is needed for the EMF contract check");
        assert!(
            pip.success(),
            "pip install pyyaml failed; the contract check reads YAML"
        );
    }
    let file = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(file.path(), lines.join("\n")).unwrap();
    let checker =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../infra/tests/emf_contract.py");
    let out = Command::new("python3")
        .arg(&checker)
        .arg(file.path())
        .output()
        .expect("python3 runs the contract check");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "{text}");
    eprintln!("{text}");
}
