//! Lambda function `batch`: recommendations for a file of users in AWS Personalize's
//! batch-inference format (`recs_core::batch`, the same code as `recs batch`), from
//! one S3 object to another. Started by hand or by an S3 "Object Created" event.
//!
//! - By hand: `{"input": "s3://bucket/in.jsonl", "output": "s3://bucket/out.jsonl",
//!   "k": 20, "version": "v1.2", "genres": ["Drama"], "exclude_genres": [],
//!   "year_min": 1990, "year_max": 2000}` (all but `input` optional).
//! - From an S3 event (a notification's `Records`, or EventBridge's `detail`): each
//!   object `s3://B/K` is answered into `s3://B/<BATCH_OUTPUT_PREFIX><name of K>.out`.
//!
//! Environment: `MODEL_REGISTRY` (folder or s3://bucket/prefix), `BATCH_K` (20),
//! `BATCH_OUTPUT_PREFIX` (`batch/output/`). Answers with the served primary version
//! (active.json's) unless the payload names one, with the registry's blocked set
//! and catalog. Returns the summary; a refused input or an unreadable registry is
//! an error (the invocation fails; nothing is written).

use anyhow::{bail, Context, Result};
use lambda_runtime::{service_fn, LambdaEvent};
use serde_json::{json, Value};

use recs_core::batch;
use recs_core::filter::ItemFilter;
use recs_core::Registry;

/// Settings from the environment.
#[derive(Debug, Clone)]
struct Config {
    registry: String,
    k: usize,
    output_prefix: String,
}

impl Config {
    fn from_env() -> Result<Config> {
        let get = |k: &str| std::env::var(k).ok().filter(|v| !v.trim().is_empty());
        let k = match get("BATCH_K") {
            Some(v) => v
                .parse()
                .ok()
                .filter(|k| (1..=1000).contains(k))
                .with_context(|| format!("BATCH_K={v:?}: an integer from 1 to 1000"))?,
            None => 20,
        };
        Ok(Config {
            registry: get("MODEL_REGISTRY").unwrap_or_else(|| "model_registry".into()),
            k,
            output_prefix: get("BATCH_OUTPUT_PREFIX").unwrap_or_else(|| "batch/output/".into()),
        })
    }
}

/// One job: where from, where to, and what to ask.
#[derive(Debug, Clone, PartialEq)]
struct Job {
    input: String,
    output: String,
    k: usize,
    version: Option<String>,
    genres: Vec<String>,
    exclude_genres: Vec<String>,
    year_min: Option<i32>,
    year_max: Option<i32>,
}

/// `%2F`-style escapes and `+` for spaces, as S3 event keys are encoded.
fn decode_key(key: &str) -> String {
    let bytes = key.replace('+', " ").into_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = |b: u8| (b as char).to_digit(16);
        match (bytes[i], bytes.get(i + 1), bytes.get(i + 2)) {
            (b'%', Some(&h), Some(&l)) if hex(h).is_some() && hex(l).is_some() => {
                out.push((hex(h).unwrap_or(0) * 16 + hex(l).unwrap_or(0)) as u8);
                i += 3;
            }
            (b, _, _) => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn strings(v: &Value, name: &str) -> Result<Vec<String>> {
    match v.get(name) {
        None | Some(Value::Null) => Ok(Vec::new()),
        Some(Value::Array(a)) => a
            .iter()
            .map(|g| {
                g.as_str()
                    .map(String::from)
                    .with_context(|| format!("{name} must list strings"))
            })
            .collect(),
        Some(_) => bail!("{name} must be an array of strings"),
    }
}

fn year(v: &Value, name: &str) -> Result<Option<i32>> {
    match v.get(name) {
        None | Some(Value::Null) => Ok(None),
        Some(y) => y
            .as_i64()
            .and_then(|y| i32::try_from(y).ok())
            .filter(|y| (0..=9999).contains(y))
            .map(Some)
            .with_context(|| format!("{name} must be a year from 0 to 9999, got {y}")),
    }
}

/// The jobs an invocation asks for.
fn jobs(payload: &Value, cfg: &Config) -> Result<Vec<Job>> {
    let from_object = |bucket: &str, key: &str| {
        let key = decode_key(key);
        let name = key.rsplit('/').next().unwrap_or(&key).to_string();
        Job {
            input: format!("s3://{bucket}/{key}"),
            output: format!("s3://{bucket}/{}{name}.out", cfg.output_prefix),
            k: cfg.k,
            version: None,
            genres: Vec::new(),
            exclude_genres: Vec::new(),
            year_min: None,
            year_max: None,
        }
    };
    if let Some(records) = payload.get("Records").and_then(Value::as_array) {
        return records
            .iter()
            .map(|r| {
                let bucket = r.pointer("/s3/bucket/name").and_then(Value::as_str);
                let key = r.pointer("/s3/object/key").and_then(Value::as_str);
                match (bucket, key) {
                    (Some(b), Some(k)) => Ok(from_object(b, k)),
                    _ => bail!("an S3 event record without s3.bucket.name and s3.object.key"),
                }
            })
            .collect();
    }
    if let Some(detail) = payload
        .get("detail")
        .filter(|_| payload.get("source").is_some())
    {
        let bucket = detail.pointer("/bucket/name").and_then(Value::as_str);
        let key = detail.pointer("/object/key").and_then(Value::as_str);
        return match (bucket, key) {
            (Some(b), Some(k)) => Ok(vec![from_object(b, k)]),
            _ => bail!("an EventBridge event without detail.bucket.name and detail.object.key"),
        };
    }
    let Some(input) = payload.get("input").and_then(Value::as_str) else {
        bail!("expected an S3 event, or {{\"input\": \"s3://bucket/key\", \"output\": optional}}");
    };
    let output = match payload.get("output").and_then(Value::as_str) {
        Some(o) => o.to_string(),
        None => format!("{input}.out"),
    };
    let k = match payload.get("k") {
        None | Some(Value::Null) => cfg.k,
        Some(k) => k
            .as_u64()
            .filter(|k| (1..=1000).contains(k))
            .with_context(|| format!("k must be an integer from 1 to 1000, got {k}"))?
            as usize,
    };
    Ok(vec![Job {
        input: input.to_string(),
        output,
        k,
        version: payload
            .get("version")
            .and_then(Value::as_str)
            .map(String::from),
        genres: strings(payload, "genres")?,
        exclude_genres: strings(payload, "exclude_genres")?,
        year_min: year(payload, "year_min")?,
        year_max: year(payload, "year_max")?,
    }])
}

async fn invoke(payload: &Value, cfg: &Config) -> Result<Value> {
    let registry = Registry::open(&cfg.registry).context("MODEL_REGISTRY")?;
    let mut done = Vec::new();
    for job in jobs(payload, cfg)? {
        let started = std::time::Instant::now();
        let prepared = batch::prepare(&registry, job.version.as_deref())
            .await
            .with_context(|| {
                format!(
                    "loading what answers the batch from {}",
                    registry.location()
                )
            })?;
        let filter = ItemFilter::new(
            &prepared.catalog,
            &job.genres,
            &job.exclude_genres,
            job.year_min,
            job.year_max,
        )?;
        let summary = batch::run_job(
            &prepared,
            &job.input,
            &job.output,
            job.k,
            &[],
            filter.as_ref(),
            &|_| {},
        )
        .await
        .with_context(|| format!("batch {} -> {}", job.input, job.output))?;
        let seconds = started.elapsed().as_secs_f64();
        tracing::info!(input = %job.input, output = %job.output, version = %prepared.model.version,
            lines = summary.lines, answered = summary.answered, fallback = summary.fallback,
            errors = summary.errors, seconds, "batch done");
        done.push(json!({
            "input": job.input,
            "output": job.output,
            "version": prepared.model.version,
            "summary": summary,
            "seconds": seconds,
        }));
    }
    Ok(json!({"jobs": done}))
}

#[tokio::main]
async fn main() -> Result<(), lambda_runtime::Error> {
    recs_telemetry::init_logging();
    // A bad configuration does not exit at start: every invocation answers with the reason.
    let cfg = Config::from_env().map_err(|e| format!("{e:#}"));
    if let Err(e) = &cfg {
        tracing::error!(error = %e, "batch: configuration is invalid; every run will fail until it is fixed");
    }
    let cfg = &cfg;
    lambda_runtime::run(service_fn(move |event: LambdaEvent<Value>| async move {
        let cfg = cfg
            .as_ref()
            .map_err(|e| lambda_runtime::Error::from(e.clone()))?;
        invoke(&event.payload, cfg).await.map_err(|e| {
            tracing::error!(error = %format!("{e:#}"), "batch failed");
            lambda_runtime::Error::from(format!("{e:#}"))
        })
    }))
    .await
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg(registry: &str) -> Config {
        Config {
            registry: registry.to_string(),
            k: 5,
            output_prefix: "batch/output/".into(),
        }
    }

    fn event(name: &str) -> Value {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../../events")
            .join(name);
        serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
    }

    #[test]
    fn s3_and_eventbridge_events_name_the_object_and_its_output() {
        let jobs = jobs(&event("batch-s3-put.json"), &cfg("r")).unwrap();
        assert_eq!(jobs.len(), 1);
        assert_eq!(
            jobs[0].input,
            "s3://movie-recs-events/batch/input/users 2026.jsonl"
        );
        assert_eq!(
            jobs[0].output,
            "s3://movie-recs-events/batch/output/users 2026.jsonl.out"
        );
        let jobs = jobs_of(&event("batch-eventbridge.json"));
        assert_eq!(
            jobs[0].input,
            "s3://movie-recs-events/batch/input/users.jsonl"
        );
        assert_eq!(jobs[0].k, 5);
    }

    fn jobs_of(v: &Value) -> Vec<Job> {
        jobs(v, &cfg("r")).unwrap()
    }

    #[test]
    fn manual_payloads_are_checked() {
        let j = jobs_of(
            &json!({"input": "s3://b/in.jsonl", "k": 3, "genres": ["Drama"], "year_min": 1990}),
        );
        assert_eq!(j[0].output, "s3://b/in.jsonl.out");
        assert_eq!((j[0].k, j[0].year_min), (3, Some(1990)));
        assert_eq!(j[0].genres, ["Drama"]);
        for bad in [
            json!({}),
            json!({"input": "s3://b/in", "k": 0}),
            json!({"input": "s3://b/in", "k": "5"}),
            json!({"input": "s3://b/in", "genres": "Drama"}),
            json!({"input": "s3://b/in", "year_max": 10000}),
            json!({"Records": [{"s3": {}}]}),
        ] {
            assert!(jobs(&bad, &cfg("r")).is_err(), "{bad}");
        }
        assert_eq!(decode_key("a%2Fb+c%zz"), "a/b c%zz");
    }

    #[tokio::test]
    async fn a_manual_run_writes_the_output_and_a_refused_input_writes_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let reg = dir.path().join("reg");
        let registry = Registry::open(reg.to_str().unwrap()).unwrap();
        let data = recs_train::gen_data::generate(&recs_train::gen_data::GenConfig {
            users: 30,
            items: 40,
            ..Default::default()
        });
        registry
            .publish("v0.1", &data.planted_artifacts())
            .await
            .unwrap();
        let input = dir.path().join("users.jsonl");
        std::fs::write(&input, "{\"userId\": \"1\"}\n{\"userId\": \"2\"}\nnope\n").unwrap();
        let output = dir.path().join("out.jsonl");
        let payload = json!({"input": input, "output": output, "k": 4});
        let res = invoke(&payload, &cfg(reg.to_str().unwrap())).await.unwrap();
        assert_eq!(res["jobs"][0]["summary"]["answered"], 2);
        assert_eq!(res["jobs"][0]["summary"]["errors"], 1);
        let lines: Vec<Value> = std::fs::read_to_string(&output)
            .unwrap()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        assert_eq!(lines.len(), 3);
        assert_eq!(
            lines[0]["output"]["recommendedItems"]
                .as_array()
                .unwrap()
                .len(),
            4
        );
        assert!(lines[2]["error"].is_string());
        std::fs::write(&input, "nope\n[]\n").unwrap();
        let output2 = dir.path().join("out2.jsonl");
        let err = invoke(
            &json!({"input": input, "output": output2}),
            &cfg(reg.to_str().unwrap()),
        )
        .await
        .unwrap_err();
        assert!(
            format!("{err:#}").contains("no line of the input"),
            "{err:#}"
        );
        assert!(!output2.exists());
    }
}
