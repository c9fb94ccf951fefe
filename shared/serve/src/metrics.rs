//! The service's metrics, held in a prometheus-client registry (the Prometheus
//! project's own Rust client) and rendered as OpenMetrics text for `recs serve`'s
//! `/metrics`. Names come from [`recs_telemetry::names`], shared with the EMF sink.

use std::fmt::Write as _;
use std::sync::atomic::AtomicU64;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use prometheus_client::encoding::{EncodeLabelSet, EncodeLabelValue, LabelValueEncoder};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;
use recs_telemetry::names;

/// Latency histogram bounds in seconds: fine enough to tell 1 ms from 5 ms, wide
/// enough to see the runbook's 100 ms and 500 ms thresholds.
const LATENCY_BUCKETS: [f64; 13] = [
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
];
/// Shadow top-k overlap bounds (a share, 0..=1).
const OVERLAP_BUCKETS: [f64; 6] = [0.0, 0.2, 0.4, 0.6, 0.8, 1.0];

/// The runbook's p95 latency target, exported so dashboards and rules can read it.
const SLO_LATENCY_TARGET_SECONDS: f64 = 0.1;
/// The runbook's availability target.
const SLO_AVAILABILITY_TARGET_RATIO: f64 = 0.999;

/// The provenance labels of `model_version_info`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
pub struct VersionInfo {
    /// `meta.json`'s model name.
    pub model_name: String,
    /// The served version.
    pub version: String,
    /// The commit the model was trained from.
    pub git_sha: String,
    /// The training data's snapshot id.
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

/// A label value shared by every series of one version (an interned name): labelling
/// a request allocates nothing once its version has been seen.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Default)]
pub struct VersionLabel(Arc<str>);

impl EncodeLabelValue for VersionLabel {
    fn encode(&self, encoder: &mut LabelValueEncoder) -> Result<(), std::fmt::Error> {
        encoder.write_str(&self.0)
    }
}

/// Versions beyond those served share this label value, so series stay bounded.
const OTHER_VERSION: &str = "other";

// Labels are static names (endpoints, error kinds) or interned versions: no
// allocation per request.
#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct RequestLabels {
    status: u16,
    endpoint: &'static str,
    /// The version that answered ("" when none did).
    version: VersionLabel,
    /// The rollout's variant for the user ("" when none).
    variant: &'static str,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct EndpointLabel {
    endpoint: &'static str,
    version: VersionLabel,
    variant: &'static str,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct ErrorLabels {
    error_type: &'static str,
    endpoint: &'static str,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct FeatureLabel {
    feature: String,
    /// The version whose training baseline the window was compared with.
    version: String,
}

type FloatGauge = Gauge<f64, AtomicU64>;
type HistogramFamily<L> = Family<L, Histogram, fn() -> Histogram>;

/// Process-wide metrics. Cheap to update from request handlers.
pub struct Metrics {
    registry: Registry,
    requests: Family<RequestLabels, Counter>,
    latency: HistogramFamily<EndpointLabel>,
    errors: Family<ErrorLabels, Counter>,
    switches: Counter,
    blocked: Gauge,
    block_updates: Counter,
    model_load_seconds: FloatGauge,
    version: Family<VersionInfo, Gauge>,
    drift: Family<FeatureLabel, FloatGauge>,
    shadow_overlap: Histogram,
    health: Gauge,
    uptime: FloatGauge,
    rss: Gauge,
    started: Instant,
    // Rendering reads the process gauges; one render at a time keeps them consistent.
    render: Mutex<()>,
    /// The version label values seen (at most a few: the served ones and "other").
    versions: Mutex<Vec<VersionLabel>>,
    /// EMF lines waiting to be written (Lambda only: the adapter drains them with
    /// every invocation; `None` locally, where Prometheus scrapes instead).
    outbox: Option<Mutex<Vec<String>>>,
}

/// EMF lines kept at most between two invocations: a flood of failures must not grow
/// memory without bound (the counters still count every one).
const OUTBOX_CAP: usize = 1000;

/// Registers `metric` under the full sample name `full` (OpenMetrics adds `_total`
/// to counters, so their family name drops it).
fn register<M: prometheus_client::registry::Metric + Clone>(
    r: &mut Registry,
    full: &str,
    help: &str,
    metric: &M,
) {
    let family = full.strip_suffix("_total").unwrap_or(full);
    r.register(family, help, metric.clone());
}

impl Default for Metrics {
    fn default() -> Self {
        let m = Metrics {
            registry: Registry::default(),
            requests: Family::default(),
            latency: Family::new_with_constructor(|| Histogram::new(LATENCY_BUCKETS)),
            errors: Family::default(),
            switches: Counter::default(),
            blocked: Gauge::default(),
            block_updates: Counter::default(),
            model_load_seconds: FloatGauge::default(),
            version: Family::default(),
            drift: Family::default(),
            shadow_overlap: Histogram::new(OVERLAP_BUCKETS),
            health: Gauge::default(),
            uptime: FloatGauge::default(),
            rss: Gauge::default(),
            started: Instant::now(),
            render: Mutex::new(()),
            versions: Mutex::new(Vec::new()),
            outbox: None,
        };
        let slo_latency = FloatGauge::default();
        slo_latency.set(SLO_LATENCY_TARGET_SECONDS);
        let slo_availability = FloatGauge::default();
        slo_availability.set(SLO_AVAILABILITY_TARGET_RATIO);
        let mut r = Registry::default();
        let reg = &mut r;
        register(
            reg,
            names::REQUESTS,
            "Requests answered, by HTTP status and endpoint",
            &m.requests,
        );
        register(
            reg,
            names::LATENCY,
            "Request latency in seconds, by endpoint",
            &m.latency,
        );
        register(reg, names::ERRORS, "Errors by kind and endpoint", &m.errors);
        register(
            reg,
            names::MODEL_SWITCHES,
            "Model switches performed by this process",
            &m.switches,
        );
        register(
            reg,
            names::CATALOG_BLOCKED,
            "Movies in the registry's blocked set, as this process last read it",
            &m.blocked,
        );
        register(
            reg,
            names::CATALOG_BLOCK_UPDATES,
            "Changes to the blocked set this process wrote or picked up",
            &m.block_updates,
        );
        register(
            reg,
            names::MODEL_LOAD_SECONDS,
            "Seconds the served model took to load and verify",
            &m.model_load_seconds,
        );
        register(
            reg,
            names::MODEL_VERSION_INFO,
            "The served model version (1 for the served version only)",
            &m.version,
        );
        register(
            reg,
            names::DATA_DRIFT_PSI,
            "Population stability index of each feature (last drift run)",
            &m.drift,
        );
        register(
            reg,
            names::SHADOW_OVERLAP,
            "Top-k overlap of the shadow version with the served one, per compared request",
            &m.shadow_overlap,
        );
        register(
            reg,
            names::HEALTH,
            "1 when a model is loaded and servable, else 0",
            &m.health,
        );
        register(
            reg,
            names::UPTIME,
            "Seconds since the process started",
            &m.uptime,
        );
        register(reg, names::RSS, "Resident memory size in bytes", &m.rss);
        register(
            reg,
            names::SLO_LATENCY,
            "The runbook's p95 latency target",
            &slo_latency,
        );
        register(
            reg,
            names::SLO_AVAILABILITY,
            "The runbook's availability target",
            &slo_availability,
        );
        Metrics { registry: r, ..m }
    }
}

impl Metrics {
    /// Metrics that also queue an EMF line for every event that is not a request's
    /// answer (model loads and their failures, switches, shadow comparisons), for the
    /// Lambda adapter to write ([`Metrics::take_emf`]).
    pub fn with_emf_outbox() -> Metrics {
        Metrics {
            outbox: Some(Mutex::new(Vec::new())),
            ..Metrics::default()
        }
    }

    fn queue(&self, line: impl FnOnce() -> String) {
        if let Some(outbox) = &self.outbox {
            let mut q = outbox.lock().unwrap_or_else(|p| p.into_inner());
            if q.len() < OUTBOX_CAP {
                q.push(line());
            }
        }
    }

    /// The EMF lines queued since the last call.
    pub fn take_emf(&self) -> Vec<String> {
        match &self.outbox {
            Some(outbox) => std::mem::take(&mut *outbox.lock().unwrap_or_else(|p| p.into_inner())),
            None => Vec::new(),
        }
    }

    /// The label value of `version`: itself when it is one of `served` (the versions
    /// in the rollout), else "other", so a request naming old versions cannot grow
    /// the series; "" for none. Interned.
    pub fn version_label(&self, version: Option<&str>, served: &[&str]) -> VersionLabel {
        let name = match version {
            None => "",
            Some(v) if served.contains(&v) => v,
            Some(_) => OTHER_VERSION,
        };
        let Ok(mut known) = self.versions.lock() else {
            return VersionLabel(Arc::from(name));
        };
        if let Some(l) = known.iter().find(|l| &*l.0 == name) {
            return l.clone();
        }
        let l = VersionLabel(Arc::from(name));
        known.push(l.clone());
        if known.len() > 16 {
            known.remove(0);
        }
        l
    }

    /// Counts one answered request (every status, 4xx included) and its latency,
    /// by the version that answered and the user's variant.
    pub fn observe_request(
        &self,
        endpoint: &'static str,
        status: u16,
        seconds: f64,
        error_type: Option<&'static str>,
        version: VersionLabel,
        variant: &'static str,
    ) {
        self.requests
            .get_or_create(&RequestLabels {
                status,
                endpoint,
                version: version.clone(),
                variant,
            })
            .inc();
        self.latency
            .get_or_create(&EndpointLabel {
                endpoint,
                version,
                variant,
            })
            .observe(seconds);
        // The request's own EMF line carries its error (emf::request_lines).
        if let Some(error_type) = error_type {
            self.errors
                .get_or_create(&ErrorLabels {
                    error_type,
                    endpoint,
                })
                .inc();
        }
    }

    /// Counts an error that is not a request's answer (e.g. a failed model load),
    /// in both sinks; `detail` says what failed.
    pub fn count_error(&self, error_type: &'static str, endpoint: &'static str, detail: &str) {
        self.errors
            .get_or_create(&ErrorLabels {
                error_type,
                endpoint,
            })
            .inc();
        self.queue(|| recs_telemetry::emf::error_line(error_type, Some(detail), None));
    }

    /// Records a successful load: the served version (the only one shown) and how
    /// long loading took.
    pub fn model_loaded(&self, info: VersionInfo, seconds: f64) {
        if self.version.get_or_create(&info).get() == 0 {
            self.version.clear();
            self.version.get_or_create(&info).set(1);
        }
        self.model_load_seconds.set(seconds);
    }

    /// Records one completed model load (every attempt that succeeded, including
    /// reloads after a switch), in both sinks.
    pub fn count_load(&self, version: &str, seconds: f64) {
        self.queue(|| recs_telemetry::emf::model_load_line(seconds, version));
    }

    /// Counts one switch or rollout change this process recorded, in both sinks.
    pub fn count_switch(&self, action: &str, version: &str) {
        self.switches.inc();
        self.queue(|| recs_telemetry::emf::switch_line(action, version));
    }

    /// Counts one change of the blocked set (`block`, `unblock`, or `poll` for one
    /// picked up from the registry) and records its size, in both sinks.
    pub fn count_block_update(&self, action: &str, blocked: usize, revision: u64) {
        self.block_updates.inc();
        self.blocked.set(blocked as i64);
        self.queue(|| recs_telemetry::emf::block_line(action, blocked, revision));
    }

    /// Records the blocked set's size without counting a change (its first read).
    pub fn set_blocked(&self, blocked: usize) {
        self.blocked.set(blocked as i64);
    }

    /// Whether a model is loaded and servable.
    pub fn set_healthy(&self, healthy: bool) {
        self.health.set(i64::from(healthy));
    }

    /// Number of requests counted for (endpoint, status) that no model answered.
    pub fn requests(&self, endpoint: &'static str, status: u16) -> u64 {
        self.requests
            .get_or_create(&RequestLabels {
                status,
                endpoint,
                version: VersionLabel::default(),
                variant: "",
            })
            .get()
    }

    /// Records one shadow comparison's top-k overlap (0..=1).
    pub fn observe_shadow(&self, overlap: f64, primary: &str, shadow: &str) {
        self.shadow_overlap.observe(overlap);
        self.queue(|| recs_telemetry::emf::shadow_line(overlap, primary, shadow));
    }

    /// Records the latest PSI of each drift feature (replacing the previous run's),
    /// labelled with the version whose baseline the window was compared with.
    pub fn set_drift(&self, version: &str, psi: impl IntoIterator<Item = (String, f64)>) {
        self.drift.clear();
        for (feature, value) in psi {
            self.drift
                .get_or_create(&FeatureLabel {
                    feature,
                    version: version.to_string(),
                })
                .set(value);
        }
    }

    /// The OpenMetrics text exposition (`# EOF`-terminated).
    pub fn render_prometheus(&self) -> String {
        let _one = self.render.lock().unwrap_or_else(|p| p.into_inner());
        self.uptime.set(self.started.elapsed().as_secs_f64());
        if let Some(rss) = resident_memory_bytes() {
            self.rss.set(rss as i64);
        }
        let mut out = String::with_capacity(4096);
        // Writing to a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }
}

/// The content type of [`Metrics::render_prometheus`].
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

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
        let none = || m.version_label(None, &[]);
        m.observe_request("recommend", 200, 0.0008, None, none(), "");
        m.observe_request("recommend", 200, 0.004, None, none(), "");
        m.observe_request("recommend", 400, 0.0001, Some("invalid_input"), none(), "");
        m.set_healthy(true);
        let text = m.render_prometheus();
        let l = r#"endpoint="recommend",version="",variant="""#;
        assert!(
            text.contains(&format!("recommend_requests_total{{status=\"200\",{l}}} 2")),
            "{text}"
        );
        assert!(text.contains(&format!("recommend_requests_total{{status=\"400\",{l}}} 1")));
        assert!(text.contains(&format!(
            "recommend_latency_seconds_bucket{{le=\"0.0005\",{l}}} 1"
        )));
        assert!(text.contains(&format!(
            "recommend_latency_seconds_bucket{{le=\"0.001\",{l}}} 2"
        )));
        assert!(text.contains(&format!(
            "recommend_latency_seconds_bucket{{le=\"0.005\",{l}}} 3"
        )));
        assert!(text.contains(&format!(
            "recommend_latency_seconds_bucket{{le=\"+Inf\",{l}}} 3"
        )));
        assert!(text.contains(
            "recommend_errors_total{error_type=\"invalid_input\",endpoint=\"recommend\"} 1"
        ));
        assert!(text.contains("service_health_status 1"));
        assert!(text.ends_with("# EOF\n"), "OpenMetrics ends with # EOF");
        assert_eq!(m.requests("recommend", 200), 2);
    }

    #[test]
    fn requests_are_labelled_by_version_and_variant_with_bounded_values() {
        let m = Metrics::default();
        let served = ["v0.1", "v0.2"];
        for v in ["v0.1", "v0.2", "v0.0", "v_old"] {
            let label = m.version_label(Some(v), &served);
            m.observe_request("recommend", 200, 0.001, None, label, "variant_A");
        }
        let text = m.render_prometheus();
        for (v, n) in [("v0.1", 1), ("v0.2", 1), ("other", 2)] {
            let want = format!(
                "recommend_requests_total{{status=\"200\",endpoint=\"recommend\",version=\"{v}\",variant=\"variant_A\"}} {n}"
            );
            assert!(text.contains(&want), "{want} in {text}");
        }
        assert!(!text.contains("v_old") && !text.contains("v0.0"));
        m.set_drift("v0.2", [("rating".to_string(), 0.3)]);
        assert!(m
            .render_prometheus()
            .contains("data_drift_psi{feature=\"rating\",version=\"v0.2\"} 0.3"));
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
