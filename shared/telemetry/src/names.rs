//! Metric names, shared by the Prometheus renderer and the EMF writer so the two
//! sinks can never disagree (DESIGN.md, "Metrics").

/// Requests answered, by status and endpoint.
pub const REQUESTS: &str = "recommend_requests_total";
/// Request latency in seconds.
pub const LATENCY: &str = "recommend_latency_seconds";
/// Errors by kind and endpoint.
pub const ERRORS: &str = "recommend_errors_total";
/// Model switches performed.
pub const MODEL_SWITCHES: &str = "model_switches_total";
/// Seconds the served model took to load and verify.
pub const MODEL_LOAD_SECONDS: &str = "model_load_seconds";
/// The served version and its provenance (labels).
pub const MODEL_VERSION_INFO: &str = "model_version_info";
/// PSI per drift feature.
pub const DATA_DRIFT_PSI: &str = "data_drift_psi";
/// 1 when a model is servable.
pub const HEALTH: &str = "service_health_status";
/// Seconds since the process started.
pub const UPTIME: &str = "service_uptime_seconds";
/// Resident memory in bytes.
pub const RSS: &str = "process_resident_memory_bytes";
/// The runbook's p95 latency target.
pub const SLO_LATENCY: &str = "slo_latency_target_seconds";
/// The runbook's availability target.
pub const SLO_AVAILABILITY: &str = "slo_availability_target_ratio";
/// Top-k overlap of the shadow version with the served one (a histogram).
pub const SHADOW_OVERLAP: &str = "recommend_shadow_overlap_ratio";
/// Wall seconds of one retrain run (functions/retrain).
pub const RETRAIN_DURATION: &str = "retrain_duration_seconds";
/// Rows (user-movie pairs) in the retrain's new snapshot.
pub const RETRAIN_ROWS: &str = "retrain_rows";
/// NDCG@10 of the retrained model on the holdout.
pub const RETRAIN_NDCG: &str = "retrain_ndcg";
/// 1 when the retrain's gate refused, the data was empty, or the run failed (the
/// retrain-failure alarm sums it).
pub const RETRAIN_FAILURES: &str = "retrain_failures_total";
/// Movies in the registry's blocked set (takedowns), as this process last read it.
pub const CATALOG_BLOCKED: &str = "catalog_blocked_items";
/// Changes to the blocked set this process wrote or picked up from the registry.
pub const CATALOG_BLOCK_UPDATES: &str = "catalog_block_updates_total";
/// Every name, for checks that the sinks only use defined metrics.
pub const ALL: [&str; 19] = [
    REQUESTS,
    LATENCY,
    ERRORS,
    MODEL_SWITCHES,
    MODEL_LOAD_SECONDS,
    MODEL_VERSION_INFO,
    DATA_DRIFT_PSI,
    HEALTH,
    UPTIME,
    RSS,
    SLO_LATENCY,
    SLO_AVAILABILITY,
    SHADOW_OVERLAP,
    RETRAIN_DURATION,
    RETRAIN_ROWS,
    RETRAIN_NDCG,
    RETRAIN_FAILURES,
    CATALOG_BLOCKED,
    CATALOG_BLOCK_UPDATES,
];
