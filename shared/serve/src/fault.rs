//! Fault injection for the alert drills (`recs drill`, `make drill`, `tests/drill_lambda.rs`).
//!
//! Off unless the process was started with `RECS_FAULT_INJECTION=1`: without it every
//! hook returns at once and nothing is read. `infra/template.yaml` never sets the
//! variable (`infra/tests/check_template.py` checks it), so a deployed function
//! cannot inject anything.
//!
//! With injection on, the faults come from [`install`] (in-process tests) or from the
//! JSON file named by `RECS_FAULT_FILE` (a running `recs serve`), re-read whenever its
//! modification time or size changes, so a drill turns a fault on and off without a
//! restart. A missing or unreadable file means no fault.
//!
//! ```json
//! {"version": "v0.2", "delay_ms": 150, "error_ratio": 0.02, "load_delay_ms": 0}
//! ```
//!
//! Only `GET|POST /recommend` requests are affected, and only those answered by
//! `version` when it is set: a drill "deploys" a bad version, and the runbook's
//! action (a rollback) really removes the cause.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock, RwLock};
use std::time::{Duration, SystemTime};

use serde::Deserialize;

/// The variable that enables fault injection (`1`); anything else leaves it off.
pub const ENABLE_VAR: &str = "RECS_FAULT_INJECTION";
/// The variable naming the JSON file the faults are read from.
pub const FILE_VAR: &str = "RECS_FAULT_FILE";

/// The faults to inject.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Faults {
    /// Only requests answered by this model version are affected (`None`: all).
    pub version: Option<String>,
    /// Added to each affected recommend request before it is answered, in ms.
    pub delay_ms: u64,
    /// Share (0..=1) of affected recommend requests answered 500, spread evenly:
    /// after n requests, exactly floor(n x ratio) were failed.
    pub error_ratio: f64,
    /// Added to every model load from the registry, in ms (a slow S3 read).
    pub load_delay_ms: u64,
}

struct State {
    /// (modification time, length) of the file the faults were read from.
    stamp: Option<(SystemTime, u64)>,
    faults: Arc<Faults>,
    /// Affected requests since these faults were installed.
    seen: Arc<AtomicU64>,
}

fn state() -> &'static RwLock<State> {
    static STATE: OnceLock<RwLock<State>> = OnceLock::new();
    STATE.get_or_init(|| {
        RwLock::new(State {
            stamp: None,
            faults: Arc::default(),
            seen: Arc::default(),
        })
    })
}

/// True when `RECS_FAULT_INJECTION=1` was set when the process first asked.
pub fn enabled() -> bool {
    static ENABLED: OnceLock<bool> = OnceLock::new();
    *ENABLED.get_or_init(|| {
        let on = std::env::var(ENABLE_VAR).is_ok_and(|v| v == "1");
        if on {
            tracing::warn!(
                "{ENABLE_VAR}=1: fault injection is ON (drills only; never in production)"
            );
        }
        on
    })
}

/// Installs `faults` (in-process drills). Returns false, installing nothing, when
/// injection is not enabled.
pub fn install(faults: Faults) -> bool {
    if !enabled() {
        return false;
    }
    let mut s = state().write().unwrap_or_else(|p| p.into_inner());
    s.faults = Arc::new(faults);
    s.seen = Arc::default();
    s.stamp = None;
    true
}

/// The faults in force now (re-reading `RECS_FAULT_FILE` when it changed).
fn current() -> Option<(Arc<Faults>, Arc<AtomicU64>)> {
    if !enabled() {
        return None;
    }
    if let Some(path) = std::env::var_os(FILE_VAR) {
        let stamp = std::fs::metadata(&path)
            .ok()
            .map(|m| (m.modified().unwrap_or(SystemTime::UNIX_EPOCH), m.len()));
        let changed = state().read().unwrap_or_else(|p| p.into_inner()).stamp != stamp;
        if changed {
            let faults = match std::fs::read(&path) {
                Ok(bytes) => serde_json::from_slice(&bytes).unwrap_or_else(|e| {
                    tracing::warn!(error = %e, "{FILE_VAR}: not a fault file; no fault");
                    Faults::default()
                }),
                Err(_) => Faults::default(),
            };
            tracing::warn!(?faults, "fault injection: faults changed");
            let mut s = state().write().unwrap_or_else(|p| p.into_inner());
            s.faults = Arc::new(faults);
            s.seen = Arc::default();
            s.stamp = stamp;
        }
    }
    let s = state().read().unwrap_or_else(|p| p.into_inner());
    Some((s.faults.clone(), s.seen.clone()))
}

/// The request hook (the API's contract layer, for recommend requests): for a
/// request answered by `version`, waits the injected delay and says whether to
/// answer it with an injected 500.
pub async fn on_request(version: Option<&str>) -> bool {
    let Some((faults, seen)) = current() else {
        return false;
    };
    if faults
        .version
        .as_deref()
        .is_some_and(|v| Some(v) != version)
    {
        return false;
    }
    if faults.delay_ms > 0 {
        tokio::time::sleep(Duration::from_millis(faults.delay_ms)).await;
    }
    let n = seen.fetch_add(1, Ordering::Relaxed);
    let ratio = faults.error_ratio.clamp(0.0, 1.0);
    ((n + 1) as f64 * ratio).floor() > (n as f64 * ratio).floor()
}

/// The model-load hook (`Service` before a registry load): waits the injected delay.
pub async fn before_load() {
    if let Some((faults, _)) = current() {
        if faults.load_delay_ms > 0 {
            tokio::time::sleep(Duration::from_millis(faults.load_delay_ms)).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_fault_file_format() {
        let f: Faults = serde_json::from_str(r#"{"version": "v0.2", "error_ratio": 0.5}"#).unwrap();
        assert_eq!(f.version.as_deref(), Some("v0.2"));
        assert_eq!(f.error_ratio, 0.5);
        assert_eq!(f.delay_ms, 0);
        assert!(serde_json::from_str::<Faults>(r#"{"delay": 1}"#).is_err());
    }

    #[tokio::test]
    async fn off_without_the_variable() {
        // The unit tests never set RECS_FAULT_INJECTION.
        if std::env::var(ENABLE_VAR).is_ok() {
            return;
        }
        assert!(!install(Faults {
            error_ratio: 1.0,
            ..Faults::default()
        }));
        assert!(!on_request(None).await);
    }
}
