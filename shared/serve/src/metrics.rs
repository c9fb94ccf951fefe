//! The service's metrics (names from [`recs_telemetry::names`], labels from DESIGN.md)
//! and rendered as Prometheus text for `recs serve`'s `/metrics`.

use std::collections::BTreeMap;
use std::fmt::Write;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::Instant;

/// Latency histogram bounds in seconds: fine enough to tell 1 ms from 5 ms, wide
/// enough to see the runbook's 100 ms and 500 ms thresholds.
pub const LATENCY_BUCKETS: [f64; 13] = [
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
];

/// SLO targets from the runbook, exported so dashboards and rules can read them.
pub const SLO_LATENCY_TARGET_SECONDS: f64 = 0.1;
pub const SLO_AVAILABILITY_TARGET_RATIO: f64 = 0.999;

#[derive(Debug, Clone, Default)]
struct Histogram {
    buckets: [u64; LATENCY_BUCKETS.len()],
    count: u64,
    sum: f64,
}

impl Histogram {
    fn observe(&mut self, v: f64) {
        if let Some(i) = LATENCY_BUCKETS.iter().position(|&b| v <= b) {
            self.buckets[i] += 1;
        }
        self.count += 1;
        self.sum += v;
    }
}

/// The provenance labels of `model_version_info`.
#[derive(Debug, Clone, PartialEq)]
pub struct VersionInfo {
    pub model_name: String,
    pub version: String,
    pub git_sha: String,
    pub data_snapshot: String,
}

impl VersionInfo {
    /// The labels of a loaded version.
    pub fn of(m: &recs_core::LoadedModel) -> VersionInfo {
        VersionInfo {
            model_name: m.meta.model_name.clone(),
            version: m.version.clone(),
            git_sha: m.meta.git_sha.clone(),
            data_snapshot: m.meta.data_snapshot_id.clone(),
        }
    }
}

#[derive(Default)]
struct Series {
    // Labels are static names (endpoints, error kinds): no allocation per request.
    requests: BTreeMap<(&'static str, u16), u64>,
    latency: BTreeMap<&'static str, Histogram>,
    errors: BTreeMap<(&'static str, &'static str), u64>,
    version: Option<VersionInfo>,
    model_load_seconds: Option<f64>,
    drift: BTreeMap<String, f64>,
    shadow: (u64, f64),
}

/// Process-wide metrics. Cheap to update from request handlers.
pub struct Metrics {
    series: Mutex<Series>,
    model_switches: AtomicU64,
    healthy: AtomicBool,
    started: Instant,
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics {
            series: Mutex::default(),
            model_switches: AtomicU64::new(0),
            healthy: AtomicBool::new(false),
            started: Instant::now(),
        }
    }
}

fn family(out: &mut String, name: &str, kind: &str, help: &str) {
    let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
}

fn escape(v: &str) -> String {
    v.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

impl Metrics {
    fn series(&self) -> std::sync::MutexGuard<'_, Series> {
        // A panic while holding the lock leaves plain counters behind: still valid.
        self.series.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Counts one answered request (every status, 4xx included) and its latency.
    pub fn observe_request(
        &self,
        endpoint: &'static str,
        status: u16,
        seconds: f64,
        error_type: Option<&'static str>,
    ) {
        let mut s = self.series();
        *s.requests.entry((endpoint, status)).or_default() += 1;
        s.latency.entry(endpoint).or_default().observe(seconds);
        if let Some(kind) = error_type {
            *s.errors.entry((kind, endpoint)).or_default() += 1;
        }
    }

    /// Counts an error that is not a request's answer (e.g. a failed model load).
    pub fn count_error(&self, error_type: &'static str, endpoint: &'static str) {
        *self
            .series()
            .errors
            .entry((error_type, endpoint))
            .or_default() += 1;
    }

    /// Records a successful load: the served version and how long loading took.
    pub fn model_loaded(&self, info: VersionInfo, seconds: f64) {
        let mut s = self.series();
        s.version = Some(info);
        s.model_load_seconds = Some(seconds);
    }

    pub fn count_switch(&self) {
        self.model_switches.fetch_add(1, Ordering::Relaxed);
    }

    pub fn set_healthy(&self, healthy: bool) {
        self.healthy.store(healthy, Ordering::Relaxed);
    }

    /// Number of requests counted for (endpoint, status).
    pub fn requests(&self, endpoint: &'static str, status: u16) -> u64 {
        self.series()
            .requests
            .get(&(endpoint, status))
            .copied()
            .unwrap_or(0)
    }

    /// Prometheus text exposition format 0.0.4.
    pub fn render_prometheus(&self) -> String {
        use recs_telemetry::names::*;
        let s = self.series();
        let mut out = String::with_capacity(4096);
        let o = &mut out;
        family(
            o,
            REQUESTS,
            "counter",
            "Requests answered, by HTTP status and endpoint.",
        );
        for ((endpoint, status), n) in &s.requests {
            let labels = format!("status=\"{status}\",endpoint=\"{}\"", escape(endpoint));
            sample(o, REQUESTS, &labels, *n);
        }
        family(
            o,
            LATENCY,
            "histogram",
            "Request latency in seconds, by endpoint.",
        );
        for (endpoint, h) in &s.latency {
            let ep = escape(endpoint);
            let mut cumulative = 0;
            for (bound, n) in LATENCY_BUCKETS.iter().zip(h.buckets) {
                cumulative += n;
                let labels = format!("endpoint=\"{ep}\",le=\"{bound}\"");
                sample(o, &format!("{LATENCY}_bucket"), &labels, cumulative);
            }
            let inf = format!("endpoint=\"{ep}\",le=\"+Inf\"");
            sample(o, &format!("{LATENCY}_bucket"), &inf, h.count);
            let labels = format!("endpoint=\"{ep}\"");
            sample(o, &format!("{LATENCY}_sum"), &labels, h.sum);
            sample(o, &format!("{LATENCY}_count"), &labels, h.count);
        }
        family(o, ERRORS, "counter", "Errors by kind and endpoint.");
        for ((kind, endpoint), n) in &s.errors {
            let labels = format!(
                "error_type=\"{}\",endpoint=\"{}\"",
                escape(kind),
                escape(endpoint)
            );
            sample(o, ERRORS, &labels, *n);
        }
        family(
            o,
            MODEL_SWITCHES,
            "counter",
            "Model switches performed by this process.",
        );
        sample(
            o,
            MODEL_SWITCHES,
            "",
            self.model_switches.load(Ordering::Relaxed),
        );
        family(
            o,
            MODEL_LOAD_SECONDS,
            "gauge",
            "Seconds the served model took to load and verify.",
        );
        if let Some(v) = s.model_load_seconds {
            sample(o, MODEL_LOAD_SECONDS, "", v);
        }
        family(
            o,
            MODEL_VERSION_INFO,
            "gauge",
            "The served model version (1 for the served version only).",
        );
        if let Some(v) = &s.version {
            let labels = format!(
                "model_name=\"{}\",version=\"{}\",git_sha=\"{}\",data_snapshot=\"{}\"",
                escape(&v.model_name),
                escape(&v.version),
                escape(&v.git_sha),
                escape(&v.data_snapshot)
            );
            sample(o, MODEL_VERSION_INFO, &labels, 1);
        }
        if !s.drift.is_empty() {
            family(
                o,
                DATA_DRIFT_PSI,
                "gauge",
                "Population stability index of each feature (last drift run).",
            );
            for (feature, psi) in &s.drift {
                sample(
                    o,
                    DATA_DRIFT_PSI,
                    &format!("feature=\"{}\"", escape(feature)),
                    psi,
                );
            }
        }
        family(
            o,
            HEALTH,
            "gauge",
            "1 when a model is loaded and servable, else 0.",
        );
        sample(
            o,
            HEALTH,
            "",
            u8::from(self.healthy.load(Ordering::Relaxed)),
        );
        family(o, UPTIME, "gauge", "Seconds since the process started.");
        sample(o, UPTIME, "", self.started.elapsed().as_secs_f64());
        if let Some(rss) = resident_memory_bytes() {
            family(o, RSS, "gauge", "Resident memory size in bytes.");
            sample(o, RSS, "", rss);
        }
        family(o, SLO_LATENCY, "gauge", "The runbook's p95 latency target.");
        sample(o, SLO_LATENCY, "", SLO_LATENCY_TARGET_SECONDS);
        family(
            o,
            SLO_AVAILABILITY,
            "gauge",
            "The runbook's availability target.",
        );
        sample(o, SLO_AVAILABILITY, "", SLO_AVAILABILITY_TARGET_RATIO);
        out
    }

    /// Records one shadow comparison's top-k overlap (0..=1).
    pub fn observe_shadow(&self, overlap: f64) {
        let mut s = self.series();
        s.shadow.0 += 1;
        s.shadow.1 += overlap;
    }

    /// Records the latest PSI of each drift feature.
    pub fn set_drift(&self, psi: impl IntoIterator<Item = (String, f64)>) {
        let mut s = self.series();
        s.drift = psi.into_iter().collect();
    }
}

fn sample(out: &mut String, name: &str, labels: &str, value: impl std::fmt::Display) {
    let _ = if labels.is_empty() {
        writeln!(out, "{name} {value}")
    } else {
        writeln!(out, "{name}{{{labels}}} {value}")
    };
}

/// Resident set size from /proc (Linux only; None elsewhere).
fn resident_memory_bytes() -> Option<u64> {
    let statm = std::fs::read_to_string("/proc/self/statm").ok()?;
    let pages: u64 = statm.split_whitespace().nth(1)?.parse().ok()?;
    Some(pages * 4096)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_counters_and_cumulative_buckets() {
        let m = Metrics::default();
        m.observe_request("recommend", 200, 0.0008, None);
        m.observe_request("recommend", 200, 0.004, None);
        m.observe_request("recommend", 400, 0.0001, Some("invalid_input"));
        m.set_healthy(true);
        let text = m.render_prometheus();
        assert!(text.contains("recommend_requests_total{status=\"200\",endpoint=\"recommend\"} 2"));
        assert!(text.contains("recommend_requests_total{status=\"400\",endpoint=\"recommend\"} 1"));
        assert!(text
            .contains("recommend_latency_seconds_bucket{endpoint=\"recommend\",le=\"0.0005\"} 1"));
        assert!(text
            .contains("recommend_latency_seconds_bucket{endpoint=\"recommend\",le=\"0.001\"} 2"));
        assert!(text
            .contains("recommend_latency_seconds_bucket{endpoint=\"recommend\",le=\"0.005\"} 3"));
        assert!(
            text.contains("recommend_latency_seconds_bucket{endpoint=\"recommend\",le=\"+Inf\"} 3")
        );
        assert!(text.contains(
            "recommend_errors_total{error_type=\"invalid_input\",endpoint=\"recommend\"} 1"
        ));
        assert!(text.contains("service_health_status 1"));
        assert_eq!(m.requests("recommend", 200), 2);
    }

    #[test]
    fn version_info_shows_only_the_served_version() {
        let m = Metrics::default();
        let info = |v: &str| VersionInfo {
            model_name: "als".into(),
            version: v.into(),
            git_sha: "abc".into(),
            data_snapshot: "d\"q".into(),
        };
        m.model_loaded(info("v1.0"), 0.5);
        m.model_loaded(info("v1.1"), 0.25);
        let text = m.render_prometheus();
        assert_eq!(text.matches("model_version_info{").count(), 1);
        assert!(text.contains("version=\"v1.1\""));
        assert!(text.contains("data_snapshot=\"d\\\"q\""));
        assert!(text.contains("model_load_seconds 0.25"));
    }
}
