//! CloudWatch Embedded Metric Format: the Lambda sink of the metrics named in
//! [`crate::names`]. One JSON document per line on stdout; CloudWatch Logs turns
//! each into metric data (contract: infra/METRICS.md).
//!
//! Limits kept here by construction: at most 100 metrics per directive (we use 1-2),
//! one value per metric, dimension sets of at most 3 low-cardinality keys. Request
//! ids, user ids and versions are plain properties, never dimensions.

use std::io::Write;

use serde_json::{json, Map, Value};

use crate::names;

/// The CloudWatch namespace every alarm reads.
pub const NAMESPACE: &str = "MovieRecs";
/// The value of the `service` dimension.
pub const SERVICE: &str = "movie-recs";

/// Milliseconds since the Unix epoch (0 if the clock is before it).
fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// What happened to one HTTP request: the facts both metrics sinks record.
#[derive(Debug, Clone, PartialEq)]
pub struct Outcome {
    /// The `endpoint` label (`recommend`, `healthz`, ...).
    pub endpoint: &'static str,
    /// The HTTP status answered.
    pub status: u16,
    /// Time spent in the handler.
    pub latency_seconds: f64,
    /// The error kind, when the answer is an error.
    pub error_type: Option<&'static str>,
    /// The request id echoed in `X-Request-ID`.
    pub request_id: String,
    /// The version that answered, when a model did.
    pub model_version: Option<String>,
    /// The user's rollout variant (`primary`/`canary`, `variant_A`/`variant_B`), when
    /// the request named a user and a rollout assigns variants.
    pub variant: Option<&'static str>,
}

/// One metric directive: these metrics, aggregated by each of these dimension sets.
fn directive(dimensions: &[&[&str]], metrics: &[(&str, &str)]) -> Value {
    json!({
        "Namespace": NAMESPACE,
        "Dimensions": dimensions,
        "Metrics": metrics
            .iter()
            .map(|(name, unit)| json!({"Name": name, "Unit": unit}))
            .collect::<Vec<_>>(),
    })
}

fn document(timestamp_ms: u64, directives: Vec<Value>, members: Map<String, Value>) -> String {
    let mut root = Map::new();
    root.insert(
        "_aws".into(),
        json!({"Timestamp": timestamp_ms, "CloudWatchMetrics": directives}),
    );
    root.insert("service".into(), SERVICE.into());
    root.extend(members);
    Value::Object(root).to_string()
}

/// `2xx`, `4xx`, `5xx`: the `status_class` dimension.
pub fn status_class(status: u16) -> String {
    format!("{}xx", status / 100)
}

/// The lines for one HTTP invocation: the request (count and latency), plus one line
/// for its error when it had one (a member holds one value per line).
pub fn request_lines(o: &Outcome, cold_start: bool) -> Vec<String> {
    let ts = now_ms();
    let mut m = Map::new();
    m.insert("endpoint".into(), o.endpoint.into());
    m.insert("status_class".into(), status_class(o.status).into());
    m.insert(names::REQUESTS.into(), 1.into());
    m.insert(names::LATENCY.into(), o.latency_seconds.into());
    m.insert("status".into(), o.status.into());
    m.insert("request_id".into(), o.request_id.clone().into());
    m.insert("cold_start".into(), cold_start.into());
    // Per version and variant: properties, not dimensions (the contract keeps
    // model_version off the dimensions); Logs Insights groups by them.
    if let Some(v) = &o.model_version {
        m.insert("model_version".into(), v.clone().into());
    }
    if let Some(v) = o.variant {
        m.insert("variant".into(), v.into());
    }
    let mut directives = vec![
        directive(
            // The last set lets the SLO alarms read one route's errors only.
            &[
                &["service"],
                &["service", "endpoint"],
                &["service", "status_class"],
                &["service", "endpoint", "status_class"],
            ],
            &[(names::REQUESTS, "Count")],
        ),
        directive(
            &[&["service"], &["service", "endpoint"]],
            &[(names::LATENCY, "Seconds")],
        ),
    ];
    // Per version (and variant), when a model answered: a separate directive, so the
    // alarms' dimension sets above stay exactly as they are. `version` holds only
    // served versions (the primary or the canary), so it stays bounded.
    if let Some(v) = &o.model_version {
        m.insert("version".into(), v.clone().into());
        let by_variant: &[&str] = &["service", "endpoint", "version", "variant"];
        let sets: Vec<&[&str]> = match o.variant {
            Some(_) => vec![&["service", "endpoint", "version"], by_variant],
            None => vec![&["service", "endpoint", "version"]],
        };
        directives.push(directive(
            &sets,
            &[(names::REQUESTS, "Count"), (names::LATENCY, "Seconds")],
        ));
    }
    let mut lines = vec![document(ts, directives, m)];
    if let Some(kind) = o.error_type {
        lines.push(error_line(kind, None, Some(&o.request_id)));
    }
    lines
}

/// One counted error (`recommend_errors_total{error_type}`), e.g. a failed model load.
pub fn error_line(error_type: &str, detail: Option<&str>, request_id: Option<&str>) -> String {
    let mut m = Map::new();
    m.insert("error_type".into(), error_type.into());
    m.insert(names::ERRORS.into(), 1.into());
    if let Some(d) = detail {
        m.insert("detail".into(), d.into());
    }
    if let Some(r) = request_id {
        m.insert("request_id".into(), r.into());
    }
    document(
        now_ms(),
        vec![directive(
            &[&["service", "error_type"]],
            &[(names::ERRORS, "Count")],
        )],
        m,
    )
}

/// A successful model load and how long it took.
pub fn model_load_line(seconds: f64, version: &str) -> String {
    let mut m = Map::new();
    m.insert(names::MODEL_LOAD_SECONDS.into(), seconds.into());
    m.insert("model_version".into(), version.into());
    document(
        now_ms(),
        vec![directive(
            &[&["service"]],
            &[(names::MODEL_LOAD_SECONDS, "Seconds")],
        )],
        m,
    )
}

/// One drift result: `data_drift_psi` of one feature (dimensions service, feature;
/// unit None), with the compared model version and the window's event count as
/// properties. The drift job writes one line per feature (a member holds one value).
pub fn drift_line(feature: &str, psi: f64, version: &str, events: u64) -> String {
    let mut m = Map::new();
    m.insert("feature".into(), feature.into());
    m.insert(names::DATA_DRIFT_PSI.into(), psi.into());
    m.insert("model_version".into(), version.into());
    m.insert("events".into(), events.into());
    document(
        now_ms(),
        vec![directive(
            &[&["service", "feature"]],
            &[(names::DATA_DRIFT_PSI, "None")],
        )],
        m,
    )
}

/// One retrain run (functions/retrain): duration, rows and NDCG@10 (absent when it
/// stopped before evaluating), and `retrain_failures_total` 1 when it published
/// nothing (`gate` says why: `passed`, `refused`, `empty`, `failed`). The Spark path's
/// `spark-started` and `spark-running` (a job started, or still running: nothing to
/// publish yet) are not failures.
pub fn retrain_line(
    seconds: f64,
    rows: u64,
    ndcg: Option<f64>,
    gate: &str,
    version: Option<&str>,
) -> String {
    let mut m = Map::new();
    m.insert(names::RETRAIN_DURATION.into(), seconds.into());
    m.insert(names::RETRAIN_ROWS.into(), rows.into());
    let failed = u64::from(!matches!(
        gate,
        "passed" | "spark-started" | "spark-running"
    ));
    m.insert(names::RETRAIN_FAILURES.into(), failed.into());
    m.insert("gate".into(), gate.into());
    let mut metrics = vec![
        (names::RETRAIN_DURATION, "Seconds"),
        (names::RETRAIN_ROWS, "Count"),
        (names::RETRAIN_FAILURES, "Count"),
    ];
    if let Some(n) = ndcg {
        m.insert(names::RETRAIN_NDCG.into(), n.into());
        metrics.push((names::RETRAIN_NDCG, "None"));
    }
    if let Some(v) = version {
        m.insert("model_version".into(), v.into());
    }
    document(now_ms(), vec![directive(&[&["service"]], &metrics)], m)
}

/// One model switch or rollout change recorded in active.json
/// (`model_switches_total`, dimension set service; action and version as properties).
pub fn switch_line(action: &str, version: &str) -> String {
    let mut m = Map::new();
    m.insert(names::MODEL_SWITCHES.into(), 1.into());
    m.insert("action".into(), action.into());
    m.insert("model_version".into(), version.into());
    document(
        now_ms(),
        vec![directive(
            &[&["service"]],
            &[(names::MODEL_SWITCHES, "Count")],
        )],
        m,
    )
}

/// One change of the blocked set seen by this process (`action`: `block`,
/// `unblock` or `poll`), with the number of movies blocked after it.
pub fn block_line(action: &str, blocked: usize, revision: u64) -> String {
    let mut m = Map::new();
    m.insert(names::CATALOG_BLOCK_UPDATES.into(), 1.into());
    m.insert(names::CATALOG_BLOCKED.into(), blocked.into());
    m.insert("action".into(), action.into());
    m.insert("revision".into(), revision.into());
    document(
        now_ms(),
        vec![directive(
            &[&["service"]],
            &[
                (names::CATALOG_BLOCK_UPDATES, "Count"),
                (names::CATALOG_BLOCKED, "Count"),
            ],
        )],
        m,
    )
}

/// One shadow comparison: the top-k overlap (0..=1) of the shadow version with the
/// served one.
pub fn shadow_line(overlap: f64, primary: &str, shadow: &str) -> String {
    let mut m = Map::new();
    m.insert(names::SHADOW_OVERLAP.into(), overlap.into());
    m.insert("model_version".into(), primary.into());
    m.insert("shadow_version".into(), shadow.into());
    document(
        now_ms(),
        vec![directive(
            &[&["service"]],
            &[(names::SHADOW_OVERLAP, "None")],
        )],
        m,
    )
}

/// Writes lines to stdout in one locked write, so they never interleave with other
/// output mid-line.
pub fn emit(lines: &[String]) {
    let mut buf = String::new();
    for l in lines {
        buf.push_str(l);
        buf.push('\n');
    }
    let mut out = std::io::stdout().lock();
    // Losing a metric line must not fail the request.
    let _ = out.write_all(buf.as_bytes()).and_then(|()| out.flush());
}

/// Checks one line against the EMF specification's structure and limits and this
/// service's contract (defined metric names, string dimensions, no high-cardinality
/// dimension keys); returns it parsed. Used by tests of every function.
pub fn check_document(line: &str) -> Result<Value, String> {
    if line.contains('\n') {
        return Err("a document must be one line".into());
    }
    let v: Value = serde_json::from_str(line).map_err(|e| format!("not JSON: {e}"))?;
    let aws = &v["_aws"];
    if aws["Timestamp"]
        .as_u64()
        .is_none_or(|t| t < 1_600_000_000_000)
    {
        return Err("_aws.Timestamp must be epoch milliseconds".into());
    }
    let directives = aws["CloudWatchMetrics"]
        .as_array()
        .filter(|d| !d.is_empty())
        .ok_or("_aws.CloudWatchMetrics must be a non-empty array")?;
    for d in directives {
        if d["Namespace"] != NAMESPACE {
            return Err(format!("namespace {} is not {NAMESPACE}", d["Namespace"]));
        }
        let metrics = d["Metrics"].as_array().ok_or("Metrics must be an array")?;
        if metrics.is_empty() || metrics.len() > 100 {
            return Err(format!(
                "{} metrics in a directive (1..=100)",
                metrics.len()
            ));
        }
        for m in metrics {
            let name = m["Name"].as_str().ok_or("metric without a Name")?;
            if !names::ALL.contains(&name) {
                return Err(format!("{name} is not a defined metric"));
            }
            match &v[name] {
                Value::Number(_) => {}
                Value::Array(a) if a.len() <= 100 && a.iter().all(Value::is_number) => {}
                other => {
                    return Err(format!(
                        "{name} must be a number or up to 100 numbers, is {other}"
                    ))
                }
            }
        }
        for set in d["Dimensions"]
            .as_array()
            .ok_or("Dimensions must be an array")?
        {
            let keys = set.as_array().ok_or("a dimension set must be an array")?;
            if keys.len() > 9 {
                return Err("more than 9 keys in a dimension set".into());
            }
            for k in keys {
                let k = k.as_str().ok_or("dimension keys are strings")?;
                if ["request_id", "user_id", "model_version"].contains(&k) {
                    return Err(format!(
                        "{k} is high-cardinality and must not be a dimension"
                    ));
                }
                if !v[k].is_string() {
                    return Err(format!("dimension {k} needs a string member"));
                }
            }
        }
    }
    Ok(v)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check_emf(line: &str) -> Value {
        check_document(line).unwrap_or_else(|e| panic!("{e}: {line}"))
    }

    #[test]
    fn the_checker_refuses_broken_documents() {
        let good = model_load_line(0.5, "v1");
        check_emf(&good);
        for bad in [
            good.replace("MovieRecs", "Other"),
            good.replace("model_load_seconds\":0.5", "model_load_seconds\":\"x\""),
            good.replace("[[\"service\"]]", "[[\"service\",\"model_version\"]]"),
            good.replace("\"Name\":\"model_load_seconds\"", "\"Name\":\"undefined\""),
            "{}".to_string(),
        ] {
            assert!(check_document(&bad).is_err(), "{bad}");
        }
    }

    fn outcome(status: u16, error_type: Option<&'static str>) -> Outcome {
        Outcome {
            endpoint: "recommend",
            status,
            latency_seconds: 0.0123,
            error_type,
            request_id: "rid-1".into(),
            model_version: (status == 200).then(|| "v1.0".into()),
            variant: (status == 200).then_some("canary"),
        }
    }

    #[test]
    fn request_line_matches_the_contract() {
        let lines = request_lines(&outcome(200, None), true);
        assert_eq!(lines.len(), 1);
        let v = check_emf(&lines[0]);
        assert_eq!(v["service"], "movie-recs");
        assert_eq!(v["endpoint"], "recommend");
        assert_eq!(v["status_class"], "2xx");
        assert_eq!(v[names::REQUESTS], 1);
        assert_eq!(v[names::LATENCY], 0.0123);
        assert_eq!(v["model_version"], "v1.0");
        assert_eq!(v["variant"], "canary");
        // Per version and variant: a third directive, the alarms' two unchanged.
        let per_version = &v["_aws"]["CloudWatchMetrics"][2];
        assert_eq!(
            per_version["Dimensions"],
            serde_json::json!([
                ["service", "endpoint", "version"],
                ["service", "endpoint", "version", "variant"]
            ])
        );
        assert_eq!(v["version"], "v1.0");
        assert_eq!(v["cold_start"], true);
        let dims = &v["_aws"]["CloudWatchMetrics"][0]["Dimensions"];
        assert_eq!(
            dims,
            &json!([
                ["service"],
                ["service", "endpoint"],
                ["service", "status_class"],
                ["service", "endpoint", "status_class"]
            ])
        );
    }

    #[test]
    fn an_error_adds_its_own_line() {
        let lines = request_lines(&outcome(400, Some("invalid_input")), false);
        assert_eq!(lines.len(), 2);
        assert_eq!(check_emf(&lines[0])["status_class"], "4xx");
        let e = check_emf(&lines[1]);
        assert_eq!(
            (e["error_type"].as_str(), e[names::ERRORS].as_i64()),
            (Some("invalid_input"), Some(1))
        );
        assert_eq!(e["request_id"], "rid-1");
        let load = check_emf(&model_load_line(0.25, "v1.0"));
        assert_eq!(load[names::MODEL_LOAD_SECONDS], 0.25);
        let switch = check_emf(&switch_line("switch", "v0.2"));
        assert_eq!(
            (
                switch[names::MODEL_SWITCHES].as_i64(),
                switch["model_version"].as_str()
            ),
            (Some(1), Some("v0.2"))
        );
        let shadow = check_emf(&shadow_line(0.7, "v0.1", "v0.2"));
        assert_eq!(shadow[names::SHADOW_OVERLAP], 0.7);
    }

    #[test]
    fn drift_line_matches_the_contract() {
        let v = check_emf(&drift_line("rating", 0.034, "v0.3", 18231));
        assert_eq!(v["service"], "movie-recs");
        assert_eq!(v["feature"], "rating");
        assert_eq!(v[names::DATA_DRIFT_PSI], 0.034);
        assert_eq!(
            (v["model_version"].as_str(), v["events"].as_u64()),
            (Some("v0.3"), Some(18231))
        );
        let d = &v["_aws"]["CloudWatchMetrics"][0];
        assert_eq!(d["Dimensions"], json!([["service", "feature"]]));
        assert_eq!(
            d["Metrics"],
            json!([{"Name": "data_drift_psi", "Unit": "None"}])
        );
    }
}
