//! Lambda function `retrain`: the same job as `recs retrain` (`recs_train::retrain`:
//! the served version's snapshot plus the rate events since, deduplicated, a new
//! content-addressed snapshot, the version's hyper-parameters, a time-based holdout,
//! the gate, publish), then a canary at `RETRAIN_CANARY_PERCENTAGE` through
//! `recs_control::update_rollout`: both steps are `recs_train::retrain::retrain_then_canary`,
//! which the CLI runs too. No HTTP stack is linked (no `recs-serve`). Runs on the template's schedule (twice a
//! week) and when drift reaches the runbook's "retrain now" band (an alarm's state
//! change, through EventBridge).
//!
//! Writes one EMF line per run (`retrain_duration_seconds`, `retrain_rows`,
//! `retrain_ndcg`, `retrain_failures_total`, with the gate's decision): a refused,
//! empty or failed run counts one failure and fails the invocation, so the
//! retrain-failure alarm fires instead of a silent schedule.
//!
//! Environment: `MODEL_REGISTRY`, `EVENTS` (or `DRIFT_EVENTS_URI`), `RETRAIN_SNAPSHOTS`
//! (default: beside the current snapshot), `RETRAIN_CANARY_PERCENTAGE` (10),
//! `RETRAIN_HOLDOUT` (0.1), `RETRAIN_GATE_MARGIN` (0), `RETUNE_EVERY` (0: never; N:
//! re-tune the hyper-parameters when N runs have passed since the last tuned version),
//! `RETUNE_BUDGET_SECONDS` (300). A manual invocation may pass
//! `{"base_version": "v0.3", "until": "2026-11-28T00:00:00Z"}`.
//!
//! `RETRAIN_ENGINE=emr-serverless` turns on the Spark path (`recs_train::emr`): each
//! invocation is one `emr::step` (snapshots above `RETRAIN_SPARK_ABOVE_ROWS` rows train
//! as a Spark job on `EMR_APPLICATION_ID` as `EMR_JOB_ROLE_ARN`, files under
//! `EMR_WORK_URI`; a later invocation, or the job's EventBridge state change, imports,
//! gates, publishes and starts the canary). Also `EMR_MAX_RUN_MINUTES` (240),
//! `RETRAIN_SPARK_REG_PARAM` (0.1), `RETRAIN_SPARK_ALPHA` (1), `RETRAIN_SPARK_BLOCKS`
//! (10), `EMR_SPARK_SUBMIT_PARAMETERS`.

use std::time::Instant;

use anyhow::{bail, Context, Result};
use lambda_runtime::{service_fn, LambdaEvent};
use serde_json::{json, Value};

use recs_telemetry::emf;
use recs_train::emr::{self, EmrConfig, EmrError, Step};
use recs_train::retrain::{self, Canary, RetrainCanary, RetrainError, RetrainOptions};

/// Settings from the environment.
#[derive(Debug, Clone)]
struct Config {
    registry: String,
    events: String,
    snapshots: Option<String>,
    canary_percentage: f64,
    holdout: f64,
    gate_margin: f64,
    /// `RETRAIN_ENGINE=emr-serverless`: the Spark path's settings.
    spark: Option<EmrConfig>,
    retune_every: usize,
    retune_budget_seconds: u64,
}

impl Config {
    fn from_env() -> Result<Config> {
        let get = |k: &str| std::env::var(k).ok().filter(|v| !v.trim().is_empty());
        let num = |k: &str, default: f64| -> Result<f64> {
            get(k).map_or(Ok(default), |v| {
                v.trim().parse().with_context(|| format!("{k}={v:?}"))
            })
        };
        let Some(events) = recs_core::events_location(get) else {
            bail!(
                "set EVENTS (or DRIFT_EVENTS_URI) to the rate events folder or s3://bucket/prefix"
            );
        };
        let canary_percentage =
            recs_control::check_canary_percentage(num("RETRAIN_CANARY_PERCENTAGE", 10.0)?)
                .context("RETRAIN_CANARY_PERCENTAGE")?;
        Ok(Config {
            registry: get("MODEL_REGISTRY").unwrap_or_else(|| "model_registry".into()),
            events,
            snapshots: get("RETRAIN_SNAPSHOTS"),
            canary_percentage,
            holdout: num("RETRAIN_HOLDOUT", 0.1)?,
            gate_margin: num("RETRAIN_GATE_MARGIN", 0.0)?,
            spark: spark_from_env(&get, &num)?,
            retune_every: get("RETUNE_EVERY").map_or(Ok(0), |v| {
                v.trim()
                    .parse()
                    .with_context(|| format!("RETUNE_EVERY={v:?}: a whole number of runs"))
            })?,
            retune_budget_seconds: get("RETUNE_BUDGET_SECONDS").map_or(Ok(300), |v| {
                v.trim()
                    .parse::<u64>()
                    .ok()
                    .filter(|&n| n > 0)
                    .with_context(|| format!("RETUNE_BUDGET_SECONDS={v:?}: seconds, at least 1"))
            })?,
        })
    }
}

/// The Spark path's settings, when `RETRAIN_ENGINE` is `emr-serverless`.
fn spark_from_env(
    get: &dyn Fn(&str) -> Option<String>,
    num: &dyn Fn(&str, f64) -> Result<f64>,
) -> Result<Option<EmrConfig>> {
    match get("RETRAIN_ENGINE").as_deref().map(str::trim) {
        None | Some("lambda") => return Ok(None),
        Some("emr-serverless") => {}
        Some(other) => bail!("RETRAIN_ENGINE={other:?}: expected lambda or emr-serverless"),
    }
    let need = |k: &str| get(k).with_context(|| format!("RETRAIN_ENGINE=emr-serverless needs {k}"));
    let mut c = EmrConfig::new(
        need("EMR_APPLICATION_ID")?,
        need("EMR_JOB_ROLE_ARN")?,
        need("EMR_WORK_URI")?,
    );
    let whole = |k: &str, default: f64| -> Result<f64> {
        let v = num(k, default)?;
        if v.is_finite() && v >= 0.0 && v.fract() == 0.0 {
            Ok(v)
        } else {
            bail!("{k}={v}: expected a whole number >= 0")
        }
    };
    c.above_rows = whole("RETRAIN_SPARK_ABOVE_ROWS", c.above_rows as f64)? as usize;
    c.max_run_minutes = whole("EMR_MAX_RUN_MINUTES", c.max_run_minutes as f64)? as u64;
    c.blocks = whole("RETRAIN_SPARK_BLOCKS", f64::from(c.blocks))?.max(1.0) as u32;
    c.reg_param = num("RETRAIN_SPARK_REG_PARAM", c.reg_param)?;
    c.alpha = num("RETRAIN_SPARK_ALPHA", c.alpha)?;
    c.spark_submit_parameters = get("EMR_SPARK_SUBMIT_PARAMETERS");
    Ok(Some(c))
}

/// One Spark-path step as the function's result: `Ok(None)` when it trained here (the
/// caller reports that run as usual), else the result and the EMF line.
async fn spark_step(
    opts: &RetrainOptions,
    cfg: &Config,
    spark: &EmrConfig,
    t0: Instant,
) -> std::result::Result<RetrainCanary, (Result<Value>, String)> {
    let emr_client = emr::client_from_env().await;
    let line = |rows: usize, ndcg: Option<f64>, gate: &str, v: Option<&str>| {
        emf::retrain_line(t0.elapsed().as_secs_f64(), rows as u64, ndcg, gate, v)
    };
    match emr::step(opts, cfg.canary_percentage, spark, &emr_client).await {
        Ok(Step::Trained(done)) => Ok(*done),
        Ok(Step::Started(r)) => Err((
            Ok(json!({"spark": "started", "record": r})),
            line(r.rows, None, "spark-started", None),
        )),
        Ok(Step::Waiting { record, state }) => Err((
            Ok(json!({"spark": "running", "state": state, "record": record})),
            line(record.rows, None, "spark-running", None),
        )),
        Ok(Step::Finished {
            record,
            report: Some(report),
            canary,
        }) => Ok(RetrainCanary {
            report: *report,
            canary_percentage: record.canary_percentage,
            canary,
        }),
        Ok(Step::Finished {
            record,
            report: None,
            canary,
        }) => {
            let v = record.version.as_deref();
            match canary {
                Canary::Started { .. } => Err((
                    Ok(json!({"spark": "published", "record": record})),
                    line(record.rows, None, "passed", v),
                )),
                _ => Err((
                    Err(anyhow::anyhow!(
                        "{}",
                        record.detail.clone().unwrap_or_default()
                    )),
                    line(record.rows, None, "failed", v),
                )),
            }
        }
        Err(e) => {
            let gate = match e {
                EmrError::Retrain(RetrainError::Empty(_) | RetrainError::NoHoldout(_)) => "empty",
                _ => "failed",
            };
            Err((
                Err(anyhow::Error::new(e).context("retrain (Spark path)")),
                line(0, None, gate, None),
            ))
        }
    }
}

/// One run. `Ok` only when a version was published and its canary started; the EMF
/// line is returned either way.
async fn invoke(payload: &Value, cfg: &Config) -> (Result<Value>, String) {
    let t0 = Instant::now();
    let until_ms = match payload.get("until").and_then(Value::as_str) {
        Some(t) => match recs_core::time::parse_time(t) {
            Some(ms) => ms,
            None => {
                let line = emf::retrain_line(0.0, 0, None, "failed", None);
                return (Err(anyhow::anyhow!("until {t:?} is not a time")), line);
            }
        },
        None => recs_core::time::now_ms(),
    };
    let opts = RetrainOptions {
        snapshots: cfg.snapshots.clone(),
        base_version: payload
            .get("base_version")
            .and_then(Value::as_str)
            .map(str::to_string),
        until_ms,
        holdout_fraction: cfg.holdout,
        gate_margin: cfg.gate_margin,
        retune_every: cfg.retune_every,
        tune_budget_seconds: cfg.retune_budget_seconds,
        // Lambda's only writable folder.
        work_dir: Some(std::env::temp_dir().join("recs-retrain")),
        ..RetrainOptions::new(&cfg.registry, &cfg.events)
    };
    let done = match &cfg.spark {
        Some(spark) => match spark_step(&opts, cfg, spark, t0).await {
            Ok(done) => Ok(done),
            Err(reported) => return reported,
        },
        None => retrain::retrain_then_canary(&opts, cfg.canary_percentage).await,
    };
    let RetrainCanary {
        report,
        canary_percentage,
        canary,
    } = match done {
        Ok(r) => r,
        Err(e) => {
            let gate = match e {
                RetrainError::Empty(_) | RetrainError::NoHoldout(_) => "empty",
                _ => "failed",
            };
            let line = emf::retrain_line(t0.elapsed().as_secs_f64(), 0, None, gate, None);
            return (Err(anyhow::Error::new(e).context("retrain")), line);
        }
    };
    let line = |gate: &str| {
        emf::retrain_line(
            t0.elapsed().as_secs_f64(),
            report.rows as u64,
            report.ndcg_new,
            gate,
            report.train.published.as_deref(),
        )
    };
    match canary {
        Canary::Refused => (
            Err(anyhow::anyhow!(
                "the gate refused the retrained model (nothing published, nothing switched): {}",
                report.train.gate.reasons()
            )),
            line("refused"),
        ),
        Canary::Failed { version, error } => (
            Err(anyhow::Error::new(error).context(format!(
                "{version} was published, but starting its canary failed"
            ))),
            line("failed"),
        ),
        Canary::Started { version, .. } => {
            let mut out = report.to_json();
            out["rollout"] = json!({"strategy": "canary", "canary_version": version,
                                    "canary_percentage": canary_percentage});
            (Ok(out), line("passed"))
        }
    }
}

#[tokio::main]
async fn main() -> Result<(), lambda_runtime::Error> {
    recs_telemetry::init_logging();
    // As functions/drift: a bad configuration answers every invocation with the
    // reason instead of exiting at INIT.
    let cfg = Config::from_env().map_err(|e| format!("{e:#}"));
    if let Err(e) = &cfg {
        tracing::error!(error = %e, "retrain: configuration is invalid; every run will fail until it is fixed");
    }
    let cfg = &cfg;
    lambda_runtime::run(service_fn(move |event: LambdaEvent<Value>| async move {
        let (result, line) = match cfg {
            Ok(cfg) => invoke(&event.payload, cfg).await,
            Err(e) => (
                Err(anyhow::anyhow!("configuration: {e}")),
                emf::retrain_line(0.0, 0, None, "failed", None),
            ),
        };
        emf::emit(&[line]);
        match result {
            Ok(summary) => {
                tracing::info!(summary = %summary, "retrain published and started its canary");
                Ok(summary)
            }
            Err(e) => {
                let e = format!("{e:#}");
                tracing::error!(error = %e, "retrain refused or failed");
                Err(lambda_runtime::Error::from(e))
            }
        }
    }))
    .await
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn spark(env: &[(&str, &str)]) -> Result<Option<EmrConfig>> {
        let env: HashMap<String, String> = env
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        let get = |k: &str| env.get(k).cloned();
        let num = |k: &str, d: f64| -> Result<f64> {
            get(k).map_or(Ok(d), |v| v.parse().with_context(|| format!("{k}={v:?}")))
        };
        spark_from_env(&get, &num)
    }

    const EMR: [(&str, &str); 4] = [
        ("RETRAIN_ENGINE", "emr-serverless"),
        ("EMR_APPLICATION_ID", "00fv3pk1r0n6ji09"),
        ("EMR_JOB_ROLE_ARN", "arn:aws:iam::123456789012:role/job"),
        ("EMR_WORK_URI", "s3://b/model_registry-spark"),
    ];

    #[test]
    fn the_engine_is_lambda_unless_emr_serverless_is_asked_for_completely() {
        assert!(spark(&[]).unwrap().is_none());
        assert!(spark(&[("RETRAIN_ENGINE", "lambda")]).unwrap().is_none());
        let e = spark(&[("RETRAIN_ENGINE", "spark")]).unwrap_err();
        assert!(
            e.to_string().contains("expected lambda or emr-serverless"),
            "{e}"
        );
        let e = spark(&EMR[..3]).unwrap_err();
        assert!(e.to_string().contains("needs EMR_WORK_URI"), "{e}");
        let c = spark(&EMR).unwrap().unwrap();
        assert_eq!(
            (c.application_id.as_str(), c.above_rows, c.max_run_minutes),
            ("00fv3pk1r0n6ji09", 30_000_000, 240)
        );
        let mut env = EMR.to_vec();
        env.push(("RETRAIN_SPARK_ABOVE_ROWS", "2.5"));
        let e = spark(&env).unwrap_err();
        assert!(e.to_string().contains("whole number"), "{e}");
        env.pop();
        env.push(("RETRAIN_SPARK_ABOVE_ROWS", "25000000"));
        assert_eq!(spark(&env).unwrap().unwrap().above_rows, 25_000_000);
    }

    #[test]
    fn the_retrain_line_meets_the_emf_contract() {
        for (gate, failures) in [("passed", 0), ("refused", 1), ("empty", 1)] {
            let l = emf::retrain_line(12.5, 1000, Some(0.31), gate, Some("v0.2"));
            let doc = emf::check_document(&l).unwrap_or_else(|e| panic!("{e}: {l}"));
            assert_eq!(doc["retrain_failures_total"], failures, "{l}");
            assert_eq!(doc["retrain_rows"], 1000);
            assert_eq!(doc["gate"], gate);
        }
        // The Spark path's "started" and "still running" are not failures.
        for gate in ["spark-started", "spark-running"] {
            let l = emf::retrain_line(0.5, 9_000, None, gate, None);
            let doc = emf::check_document(&l).unwrap_or_else(|e| panic!("{e}: {l}"));
            assert_eq!(doc["retrain_failures_total"], 0, "{l}");
        }
        // No NDCG when it stopped before evaluating: the metric is left out.
        let l = emf::retrain_line(1.0, 0, None, "failed", None);
        let doc = emf::check_document(&l).unwrap();
        assert!(doc.get("retrain_ndcg").is_none());
    }
}
