//! Lambda function `drift`: on an EventBridge schedule, PSI per feature of the last
//! window of events against the served version's training baseline
//! (`recs_drift::run`, the same computation as `recs drift`). Writes one EMF line per
//! feature (`data_drift_psi`, dimensions service + feature), sends the same values
//! with CloudWatch `PutMetricData`, and logs one summary line.
//!
//! Environment: `MODEL_REGISTRY` (folder or s3://bucket/prefix), `EVENTS` or
//! `DRIFT_EVENTS_URI` (the SAM template's name), `DRIFT_WINDOW` (default 24h),
//! `DRIFT_MIN_COUNT` (500), `DRIFT_PUT_METRIC_DATA` (default on; `0`/`false` = EMF
//! only), `DRIFT_WRITE_LATEST` (default off; on = also store
//! `<registry>/drift/latest.json`, which needs s3:PutObject there),
//! `DRIFT_RATINGS_ONLY` (default off; on = watch events are left out).
//!
//! The window ends at the scheduled event's `time` (now when absent). A manual
//! invocation may pass `{"window": "6h", "until": "2026-11-28T00:00:00Z"}`.

use anyhow::{bail, Context, Result};
use aws_sdk_cloudwatch::primitives::DateTime;
use aws_sdk_cloudwatch::types::{Dimension, MetricDatum, StandardUnit};
use lambda_runtime::{service_fn, LambdaEvent};
use serde_json::Value;

use recs_core::{Registry, Store};
use recs_drift::{self as drift, Summary};
use recs_telemetry::{emf, names};

/// Settings from the environment.
#[derive(Debug, Clone)]
struct Config {
    registry: String,
    events: String,
    window_secs: u64,
    min_count: u64,
    put_metric_data: bool,
    write_latest: bool,
    ratings_only: bool,
}

fn flag(name: &str, default: bool) -> bool {
    match std::env::var(name) {
        Ok(v) => !matches!(
            v.trim().to_ascii_lowercase().as_str(),
            "0" | "false" | "no" | "off" | ""
        ),
        Err(_) => default,
    }
}

impl Config {
    fn from_env() -> Result<Config> {
        let get = |k: &str| std::env::var(k).ok().filter(|v| !v.trim().is_empty());
        let Some(events) = drift::events_location(get("EVENTS")) else {
            bail!("set EVENTS (or DRIFT_EVENTS_URI) to the events folder or s3://bucket/prefix");
        };
        let window = get("DRIFT_WINDOW").unwrap_or_else(|| "24h".into());
        Ok(Config {
            registry: get("MODEL_REGISTRY").unwrap_or_else(|| "model_registry".into()),
            events,
            window_secs: drift::parse_window(&window)
                .with_context(|| format!("DRIFT_WINDOW={window:?}: use e.g. 24h, 6h, 90m"))?,
            min_count: match get("DRIFT_MIN_COUNT") {
                Some(v) => v
                    .parse()
                    .with_context(|| format!("DRIFT_MIN_COUNT={v:?}"))?,
                None => drift::DEFAULT_MIN_COUNT,
            },
            put_metric_data: flag("DRIFT_PUT_METRIC_DATA", true),
            write_latest: flag("DRIFT_WRITE_LATEST", false),
            ratings_only: flag("DRIFT_RATINGS_ONLY", false),
        })
    }
}

/// The window for this invocation: `window`/`until` from a manual payload, else the
/// configured length ending at the schedule's `time`, else now.
fn window_of(payload: &Value, cfg: &Config) -> Result<(u64, i64)> {
    let secs = match payload.get("window").and_then(Value::as_str) {
        Some(w) => drift::parse_window(w).with_context(|| format!("window {w:?}"))?,
        None => cfg.window_secs,
    };
    let until = payload
        .get("until")
        .or_else(|| payload.get("time"))
        .and_then(Value::as_str);
    let until_ms = match until {
        Some(t) => recs_core::time::parse_time(t).with_context(|| format!("time {t:?}"))?,
        None => recs_core::time::now_ms(),
    };
    Ok((secs, until_ms))
}

/// One `MetricDatum` per reported feature: `data_drift_psi`, dimensions service and
/// feature, unit None (infra/METRICS.md).
fn metric_data(summary: &Summary, at: DateTime) -> Vec<MetricDatum> {
    summary
        .psi()
        .into_iter()
        .map(|(feature, psi)| {
            MetricDatum::builder()
                .metric_name(names::DATA_DRIFT_PSI)
                .dimensions(
                    Dimension::builder()
                        .name("service")
                        .value(emf::SERVICE)
                        .build(),
                )
                .dimensions(Dimension::builder().name("feature").value(feature).build())
                .value(psi)
                .unit(StandardUnit::None)
                .timestamp(at)
                .build()
        })
        .collect()
}

/// Sends the summary's PSI values in one PutMetricData call (nothing for an empty
/// summary).
async fn put_metrics(cw: &aws_sdk_cloudwatch::Client, summary: &Summary) -> Result<usize> {
    let data = metric_data(summary, DateTime::from(std::time::SystemTime::now()));
    if data.is_empty() {
        return Ok(0);
    }
    let n = data.len();
    cw.put_metric_data()
        .namespace(emf::NAMESPACE)
        .set_metric_data(Some(data))
        .send()
        .await
        .map_err(|e| anyhow::anyhow!(aws_sdk_cloudwatch::error::DisplayErrorContext(e)))?;
    Ok(n)
}

/// One run: the summary (the invocation's response) and its EMF lines.
async fn invoke(
    payload: &Value,
    cfg: &Config,
    cw: &aws_sdk_cloudwatch::Client,
) -> Result<(Summary, Vec<String>)> {
    let (window_secs, until_ms) = window_of(payload, cfg)?;
    let registry = Registry::open(&cfg.registry)?;
    let events = Store::open(&cfg.events)?;
    let opts = drift::Options {
        window_secs,
        until_ms,
        min_count: cfg.min_count,
        version: None,
        ratings_only: cfg.ratings_only,
    };
    let summary = drift::run(&registry, &events, &opts).await?;
    let lines: Vec<String> = summary
        .psi()
        .iter()
        .map(|(f, p)| emf::drift_line(f, *p, &summary.version, summary.events))
        .collect();
    if cfg.put_metric_data {
        match put_metrics(cw, &summary).await {
            Ok(n) => tracing::info!(metrics = n, "drift: PutMetricData sent"),
            // The EMF lines carry the same values; a failed call is not fatal.
            Err(e) => tracing::error!(error = %e, "drift: PutMetricData failed"),
        }
    }
    // An empty window measured nothing: the last stored result stays.
    if cfg.write_latest && summary.events > 0 {
        if let Err(e) = drift::write_latest(registry.store(), &summary).await {
            tracing::error!(error = %e, "drift: could not store drift/latest.json");
        }
    }
    Ok((summary, lines))
}

#[tokio::main]
async fn main() -> Result<(), lambda_runtime::Error> {
    recs_telemetry::init_logging();
    // A bad configuration does not exit at start: every invocation answers with the
    // reason (an exit at INIT leaves `cargo lambda invoke` waiting forever and shows
    // operators nothing but a restart loop).
    let cfg = Config::from_env().map_err(|e| format!("{e:#}"));
    if let Err(e) = &cfg {
        tracing::error!(error = %e, "drift: configuration is invalid; every run will fail until it is fixed");
    }
    let aws = aws_config::load_from_env().await;
    let cw = aws_sdk_cloudwatch::Client::new(&aws);
    let (cfg, cw) = (&cfg, &cw);
    lambda_runtime::run(service_fn(move |event: LambdaEvent<Value>| async move {
        let result = match cfg {
            Ok(cfg) => invoke(&event.payload, cfg, cw)
                .await
                .map_err(|e| format!("{e:#}")),
            Err(e) => Err(format!("configuration: {e}")),
        };
        match result {
            Ok((summary, lines)) => {
                emf::emit(&lines);
                eprint!("{}", summary.table());
                Ok(serde_json::to_value(&summary)?)
            }
            Err(e) => {
                tracing::error!(error = %e, "drift run failed");
                // Counted as well as logged: the drift-failure alarm reads it.
                emf::emit(&[emf::error_line("drift_failed", Some(&e), None)]);
                Err(lambda_runtime::Error::from(e))
            }
        }
    }))
    .await
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::{Arc, Mutex};

    use aws_sdk_cloudwatch::operation::put_metric_data::{PutMetricDataInput, PutMetricDataOutput};
    use aws_sdk_cloudwatch::Client;
    use aws_smithy_mocks::{mock, mock_client, RuleMode};
    use recs_core::Interaction;
    use recs_drift::{synth, Baseline};
    use recs_train::gen_data::{generate, GenConfig};

    /// The schedule's time in events/drift-schedule.json.
    const UNTIL: i64 = 1_795_824_000_000;
    const DAY: i64 = 86_400_000;

    fn schedule_event() -> Value {
        let path = concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../../events/drift-schedule.json"
        );
        serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
    }

    /// A folder registry with v0.1 and its baseline, and an events folder holding a
    /// shifted window (or nothing in the window when `empty`).
    async fn setup(empty: bool) -> (tempfile::TempDir, Config) {
        let dir = tempfile::tempdir().unwrap();
        let reg_path = dir.path().join("registry");
        let registry = Registry::open(reg_path.to_str().unwrap()).unwrap();
        let cfg = GenConfig {
            factors: 4,
            ..GenConfig::default()
        };
        let model = registry
            .publish("v0.1", &generate(&cfg).planted_artifacts())
            .await
            .unwrap();
        let synth_cfg = synth::SynthConfig::from_model(model.model.als().unwrap(), 1);
        let train = synth::events(&synth_cfg, UNTIL - 15 * DAY, UNTIL - DAY);
        let rows: Vec<Interaction> = train.to_vec();
        drift::save_baseline(
            &registry,
            "v0.1",
            &Baseline::compute(&rows, model.model.als().unwrap()),
        )
        .await
        .unwrap();
        let offset = if empty { 3 * DAY } else { 0 };
        let mut window = synth::events(
            &synth::SynthConfig::from_model(model.model.als().unwrap(), 2),
            UNTIL - DAY - offset,
            UNTIL - offset,
        );
        synth::shift(&mut window, synth::Shift::planted(10_000), 3);
        let events = dir.path().join("events");
        synth::write_events(
            &Store::open(events.to_str().unwrap()).unwrap(),
            &window,
            500,
        )
        .await
        .unwrap();
        let config = Config {
            registry: reg_path.to_str().unwrap().into(),
            events: events.to_str().unwrap().into(),
            window_secs: 86_400,
            min_count: 200,
            put_metric_data: true,
            write_latest: true,
            ratings_only: false,
        };
        (dir, config)
    }

    /// A mocked CloudWatch client that records every PutMetricData request.
    fn recording_client() -> (
        Client,
        Arc<Mutex<Vec<PutMetricDataInput>>>,
        aws_smithy_mocks::Rule,
    ) {
        let seen = Arc::new(Mutex::new(Vec::new()));
        let record = seen.clone();
        let rule = mock!(Client::put_metric_data)
            .match_requests(move |req| {
                record.lock().unwrap().push(req.clone());
                true
            })
            .then_output(|| PutMetricDataOutput::builder().build());
        let client = mock_client!(aws_sdk_cloudwatch, RuleMode::MatchAny, [&rule]);
        (client, seen, rule)
    }

    #[tokio::test]
    async fn a_scheduled_run_emits_emf_and_put_metric_data_for_every_feature() {
        let (_dir, cfg) = setup(false).await;
        let (cw, seen, rule) = recording_client();
        let (summary, lines) = invoke(&schedule_event(), &cfg, &cw).await.unwrap();
        assert_eq!(summary.window_end, "2026-11-28T00:00:00Z");
        assert_eq!(summary.features.len(), 8, "{}", summary.table());
        assert!(summary.max_psi.unwrap() > 0.5);
        assert_eq!(summary.action, "retrain now");

        // EMF: one contract-valid line per feature.
        assert_eq!(lines.len(), 8);
        for (line, (feature, psi)) in lines.iter().zip(summary.psi()) {
            let doc = emf::check_document(line).unwrap_or_else(|e| panic!("{e}: {line}"));
            assert_eq!(doc["feature"], feature.as_str());
            assert_eq!(doc["data_drift_psi"].as_f64(), Some(psi));
            assert_eq!(doc["model_version"], "v0.1");
        }

        // PutMetricData: one call, namespace MovieRecs, the metric's name, exactly the
        // dimensions service + feature, unit None, the summary's values.
        assert_eq!(rule.num_calls(), 1);
        let requests = seen.lock().unwrap().clone();
        assert_eq!(requests.len(), 1);
        let req = &requests[0];
        assert_eq!(req.namespace(), Some("MovieRecs"));
        let data = req.metric_data();
        assert_eq!(data.len(), 8);
        let mut features = Vec::new();
        for d in data {
            assert_eq!(d.metric_name(), Some("data_drift_psi"));
            assert_eq!(d.unit(), Some(&StandardUnit::None));
            let dims: Vec<(&str, &str)> = d
                .dimensions()
                .iter()
                .map(|x| (x.name().unwrap(), x.value().unwrap()))
                .collect();
            assert_eq!(dims.len(), 2, "{dims:?}");
            assert_eq!(dims[0], ("service", "movie-recs"));
            assert_eq!(dims[1].0, "feature");
            assert_eq!(d.value(), summary.features.get(dims[1].1).copied());
            assert!(d.timestamp().is_some());
            features.push(dims[1].1.to_string());
        }
        features.sort();
        let mut expected: Vec<String> = drift::FEATURES.iter().map(|f| f.to_string()).collect();
        expected.sort();
        assert_eq!(features, expected);

        // DRIFT_WRITE_LATEST stored the summary for `recs serve`.
        let latest = drift::read_latest(&Store::open(&cfg.registry).unwrap()).await;
        assert_eq!(latest.unwrap().features, summary.features);
    }

    #[tokio::test]
    async fn an_empty_window_sends_nothing() {
        let (_dir, cfg) = setup(true).await;
        let (cw, _, rule) = recording_client();
        let (summary, lines) = invoke(&schedule_event(), &cfg, &cw).await.unwrap();
        assert_eq!(summary.events, 0);
        assert!(lines.is_empty());
        assert_eq!(rule.num_calls(), 0);
        assert_eq!(summary.action, "none");
    }

    #[tokio::test]
    async fn a_manual_payload_sets_the_window_and_a_missing_baseline_fails() {
        let (dir, cfg) = setup(false).await;
        let payload = serde_json::json!({"window": "6h", "until": "2026-11-28T00:00:00Z"});
        assert_eq!(window_of(&payload, &cfg).unwrap(), (21_600, UNTIL));
        assert!(window_of(&serde_json::json!({"window": "soon"}), &cfg).is_err());
        let (cw, _, rule) = recording_client();
        std::fs::remove_file(dir.path().join("registry/v0.1/drift_baseline.json")).unwrap();
        let err = invoke(&schedule_event(), &cfg, &cw).await.unwrap_err();
        assert!(
            format!("{err:#}").contains("recs drift baseline"),
            "{err:#}"
        );
        assert_eq!(rule.num_calls(), 0);
    }
}
