//! The service's metrics, defined once (names and labels from DESIGN.md, "Metrics")
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

#[derive(Default)]
struct Series {
    requests: BTreeMap<(String, u16), u64>,
    latency: BTreeMap<String, Histogram>,
    errors: BTreeMap<(String, String), u64>,
    version: Option<VersionInfo>,
    model_load_seconds: Option<f64>,
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
        endpoint: &str,
        status: u16,
        seconds: f64,
        error_type: Option<&str>,
    ) {
        let mut s = self.series();
        *s.requests
            .entry((endpoint.to_string(), status))
            .or_default() += 1;
        s.latency
            .entry(endpoint.to_string())
            .or_default()
            .observe(seconds);
        if let Some(kind) = error_type {
            *s.errors
                .entry((kind.to_string(), endpoint.to_string()))
                .or_default() += 1;
        }
    }

    /// Counts an error that is not a request's answer (e.g. a failed model load).
    pub fn count_error(&self, error_type: &str, endpoint: &str) {
        *self
            .series()
            .errors
            .entry((error_type.to_string(), endpoint.to_string()))
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
    pub fn requests(&self, endpoint: &str, status: u16) -> u64 {
        self.series()
            .requests
            .get(&(endpoint.to_string(), status))
            .copied()
            .unwrap_or(0)
    }

    /// Prometheus text exposition format 0.0.4.
    pub fn render_prometheus(&self) -> String {
        let s = self.series();
        let mut out = String::with_capacity(4096);
        family(
            &mut out,
            "recommend_requests_total",
            "counter",
            "Requests answered, by HTTP status and endpoint.",
        );
        for ((endpoint, status), n) in &s.requests {
            let _ = writeln!(
                out,
                "recommend_requests_total{{status=\"{status}\",endpoint=\"{}\"}} {n}",
                escape(endpoint)
            );
        }
        family(
            &mut out,
            "recommend_latency_seconds",
            "histogram",
            "Request latency in seconds, by endpoint.",
        );
        for (endpoint, h) in &s.latency {
            let ep = escape(endpoint);
            let mut cumulative = 0;
            for (bound, n) in LATENCY_BUCKETS.iter().zip(h.buckets) {
                cumulative += n;
                let _ = writeln!(out, "recommend_latency_seconds_bucket{{endpoint=\"{ep}\",le=\"{bound}\"}} {cumulative}");
            }
            let _ = writeln!(
                out,
                "recommend_latency_seconds_bucket{{endpoint=\"{ep}\",le=\"+Inf\"}} {}",
                h.count
            );
            let _ = writeln!(
                out,
                "recommend_latency_seconds_sum{{endpoint=\"{ep}\"}} {}",
                h.sum
            );
            let _ = writeln!(
                out,
                "recommend_latency_seconds_count{{endpoint=\"{ep}\"}} {}",
                h.count
            );
        }
        family(
            &mut out,
            "recommend_errors_total",
            "counter",
            "Errors by kind and endpoint.",
        );
        for ((kind, endpoint), n) in &s.errors {
            let _ = writeln!(
                out,
                "recommend_errors_total{{error_type=\"{}\",endpoint=\"{}\"}} {n}",
                escape(kind),
                escape(endpoint)
            );
        }
        family(
            &mut out,
            "model_switches_total",
            "counter",
            "Model switches performed by this process.",
        );
        let _ = writeln!(
            out,
            "model_switches_total {}",
            self.model_switches.load(Ordering::Relaxed)
        );
        family(
            &mut out,
            "model_load_seconds",
            "gauge",
            "Seconds the served model took to load and verify.",
        );
        if let Some(v) = s.model_load_seconds {
            let _ = writeln!(out, "model_load_seconds {v}");
        }
        family(
            &mut out,
            "model_version_info",
            "gauge",
            "The served model version (1 for the served version only).",
        );
        if let Some(v) = &s.version {
            let _ = writeln!(
                out,
                "model_version_info{{model_name=\"{}\",version=\"{}\",git_sha=\"{}\",data_snapshot=\"{}\"}} 1",
                escape(&v.model_name),
                escape(&v.version),
                escape(&v.git_sha),
                escape(&v.data_snapshot)
            );
        }
        family(
            &mut out,
            "service_health_status",
            "gauge",
            "1 when a model is loaded and servable, else 0.",
        );
        let _ = writeln!(
            out,
            "service_health_status {}",
            u8::from(self.healthy.load(Ordering::Relaxed))
        );
        family(
            &mut out,
            "service_uptime_seconds",
            "gauge",
            "Seconds since the process started.",
        );
        let _ = writeln!(
            out,
            "service_uptime_seconds {}",
            self.started.elapsed().as_secs_f64()
        );
        if let Some(rss) = resident_memory_bytes() {
            family(
                &mut out,
                "process_resident_memory_bytes",
                "gauge",
                "Resident memory size in bytes.",
            );
            let _ = writeln!(out, "process_resident_memory_bytes {rss}");
        }
        family(
            &mut out,
            "slo_latency_target_seconds",
            "gauge",
            "The runbook's p95 latency target.",
        );
        let _ = writeln!(
            out,
            "slo_latency_target_seconds {SLO_LATENCY_TARGET_SECONDS}"
        );
        family(
            &mut out,
            "slo_availability_target_ratio",
            "gauge",
            "The runbook's availability target.",
        );
        let _ = writeln!(
            out,
            "slo_availability_target_ratio {SLO_AVAILABILITY_TARGET_RATIO}"
        );
        out
    }
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
