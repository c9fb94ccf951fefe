//! The exposure log: one line per recommendation response.
//!
//! Layout under the events location (the same root the drift job reads):
//!
//! ```text
//! reco_response/<YYYY-MM-DD>/<HH>/batch_<YYYYmmdd_HHMMSS>_<writer>_<seq>.jsonl
//! ```
//!
//! Each line is one [`Exposure`]. On Lambda the same records reach this layout
//! through CloudWatch Logs and Kinesis Data Firehose (infra/template.yaml).

use recs_core::{Store, StoreError};
use serde::{Deserialize, Serialize};

/// One recommendation response: the Python team's `reco_response` Avro record
/// (`stream/schemas/reco_response.avsc`) plus `variant` and the precise latency.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Exposure {
    /// The response's X-Request-ID.
    pub request_id: String,
    /// When the request arrived, epoch milliseconds.
    pub ts: i64,
    /// The user (`None` for a fold-in without one).
    pub user_id: Option<i64>,
    /// HTTP status of the response.
    pub status: u16,
    /// Whole milliseconds, at least 1 (the Avro schema's int).
    pub latency_ms: u64,
    /// The same latency to the microsecond (absent in the Python team's records).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub latency_ms_precise: Option<f64>,
    /// Items asked for.
    pub k: u64,
    /// The movies recommended, in order (empty for an error).
    pub movie_ids: Vec<i64>,
    /// The version that answered (empty for an error before one was chosen).
    pub model_version: String,
    /// Its model name.
    #[serde(default)]
    pub model_name: String,
    /// Its git sha.
    #[serde(default)]
    pub git_sha: String,
    /// Its training data snapshot.
    #[serde(default)]
    pub data_snapshot_id: String,
    /// The image that served it, when known.
    #[serde(default)]
    pub container_image_digest: Option<String>,
    /// `variant_A` / `variant_B` (A/B test), `primary` / `canary`, or none.
    #[serde(default)]
    pub variant: Option<String>,
}

/// The key, relative to the events root, of a batch whose first record is at
/// `ts_ms`: partitioned by day and hour like the Python team's ingestor, unique per
/// `writer` (a process or instance id) and `seq`.
pub fn exposure_key(ts_ms: i64, writer: &str, seq: u64) -> String {
    let secs = ts_ms.div_euclid(1000);
    let day = secs.div_euclid(86_400);
    let sod = secs.rem_euclid(86_400);
    let date = recs_core::time::date_of_day(day);
    let compact = date.replace('-', "");
    let (h, m, s) = (sod / 3600, sod % 3600 / 60, sod % 60);
    format!(
        "reco_response/{date}/{h:02}/batch_{compact}_{h:02}{m:02}{s:02}_{writer}_{seq:06}.jsonl"
    )
}

/// What reading the exposure log found besides the exposures.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct ExposureStats {
    /// Exposure files read.
    pub files: u64,
    /// Lines that are not an exposure record (skipped, never fatal).
    pub malformed: u64,
}

/// Exposures in `bytes` (JSON lines); lines that are not a record are counted.
pub fn parse_exposures(bytes: &[u8], stats: &mut ExposureStats) -> Vec<Exposure> {
    let mut out = Vec::new();
    for line in bytes.split(|&b| b == b'\n') {
        let line = line.trim_ascii();
        if line.is_empty() {
            continue;
        }
        match serde_json::from_slice::<Exposure>(line) {
            Ok(e) => out.push(e),
            Err(_) => stats.malformed += 1,
        }
    }
    out
}

/// Is this key (relative to the events root) in the exposure log? The kind folder
/// is `reco_response` or a team-prefixed `<team>.reco_responses`, as in Kafka.
fn is_exposure_key(key: &str) -> bool {
    let kind = key.split('/').next().unwrap_or("");
    kind == "reco_response"
        || kind == "reco_responses"
        || kind.ends_with(".reco_response")
        || kind.ends_with(".reco_responses")
}

/// Every exposure with `start_ms <= ts < end_ms` under `store`, oldest first.
pub async fn read_exposures(
    store: &Store,
    start_ms: i64,
    end_ms: i64,
) -> Result<(Vec<Exposure>, ExposureStats), StoreError> {
    let seconds = u64::try_from(end_ms.saturating_sub(start_ms).max(0) / 1000 + 1).unwrap_or(0);
    let window = recs_drift::Window::ending(end_ms, seconds);
    let keys = recs_drift::list_window_files(store, window).await?;
    let mut stats = ExposureStats::default();
    let mut out = Vec::new();
    for key in keys.iter().filter(|k| is_exposure_key(k)) {
        let bytes = store.get(key).await?;
        stats.files += 1;
        out.extend(
            parse_exposures(&bytes, &mut stats)
                .into_iter()
                .filter(|e| e.ts >= start_ms && e.ts < end_ms),
        );
    }
    out.sort_by(|a, b| {
        a.ts.cmp(&b.ts)
            .then_with(|| a.request_id.cmp(&b.request_id))
    });
    Ok((out, stats))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_partitioned_by_day_and_hour() {
        // 2025-12-01T13:04:05.678Z
        let ts = 1_764_594_245_678;
        assert_eq!(
            exposure_key(ts, "p42", 7),
            "reco_response/2025-12-01/13/batch_20251201_130405_p42_000007.jsonl"
        );
        assert!(is_exposure_key(&exposure_key(ts, "x", 0)));
        assert!(is_exposure_key("myteam.reco_responses/2026-12-01/a.jsonl"));
        assert!(!is_exposure_key("rate/2026-12-01/a.jsonl"));
    }

    #[test]
    fn python_records_parse_and_junk_is_counted() {
        // The Avro record's fields only, as the Python probe wrote them.
        let py = br#"{"request_id":"r1","ts":5,"user_id":3,"status":200,"latency_ms":2,"k":2,"movie_ids":[1,2],"model_version":"v0.1","model_name":"als","git_sha":"abc","data_snapshot_id":"d","container_image_digest":null}
not json
{"ts":1}

"#;
        let mut stats = ExposureStats::default();
        let got = parse_exposures(py, &mut stats);
        assert_eq!(got.len(), 1);
        assert_eq!(got[0].movie_ids, vec![1, 2]);
        assert_eq!(got[0].variant, None);
        assert_eq!(stats.malformed, 2);
    }

    #[test]
    fn written_records_read_back_equal() {
        let e = Exposure {
            request_id: "r".into(),
            ts: 1,
            user_id: None,
            status: 503,
            latency_ms: 1,
            latency_ms_precise: Some(0.25),
            k: 10,
            movie_ids: vec![],
            model_version: String::new(),
            model_name: String::new(),
            git_sha: String::new(),
            data_snapshot_id: String::new(),
            container_image_digest: None,
            variant: Some("variant_B".into()),
        };
        let line = serde_json::to_string(&e).unwrap();
        let mut stats = ExposureStats::default();
        assert_eq!(parse_exposures(line.as_bytes(), &mut stats), vec![e]);
    }
}
