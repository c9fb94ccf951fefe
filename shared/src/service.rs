//! What one execution environment (a Lambda instance, or one `recs serve` process)
//! holds: configuration, the registry, the served models, titles and metrics. Built
//! once at start, never per request.
//!
//! The served models are one immutable snapshot ([`Served`]) behind an `ArcSwap`: a
//! request loads the snapshot once and answers from it, so it never sees half a
//! switch. Switches are persisted in the registry's `active.json` (see
//! [`crate::active`]); every instance polls it with a conditional GET at most every
//! `ACTIVE_POLL_SECONDS`, loads and verifies what changed off the request path, and
//! swaps the new snapshot in.

use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;
use serde_json::Value;

use crate::active::{self, ActiveError, ActiveState, Rollout, Strategy};
use crate::metrics::{Metrics, VersionInfo};
use crate::registry::{validate_version, LoadedModel, Registry, RegistryError};
use crate::titles::Titles;

/// Largest `k` accepted unless `MAX_K` says otherwise.
pub const DEFAULT_MAX_K: usize = 100;

/// A configuration value that cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("{name}={value:?} is invalid: {reason}")]
    Invalid {
        name: &'static str,
        value: String,
        reason: &'static str,
    },
}

/// Settings read from the environment (README, "Configuration").
#[derive(Debug, Clone)]
pub struct Config {
    /// `MODEL_REGISTRY`: a folder or `s3://bucket/prefix` (default `./model_registry`).
    pub registry: String,
    /// `MODEL_VERSION`: serve this version when the registry has no active.json.
    pub version: Option<String>,
    /// `MAX_K`: the largest `k` a request may ask for (default 100).
    pub max_k: usize,
    /// `MOVIE_TITLES`: a titles file; default `<registry>/movie_titles.csv` when present.
    pub titles: Option<PathBuf>,
    /// `CONTAINER_IMAGE_DIGEST`: reported in provenance when the version meta has none.
    pub image_digest: Option<String>,
    /// `ENVIRONMENT`: reported by `/healthz` (default `production`).
    pub environment: String,
    /// `ACTIVE_POLL_SECONDS`: how often to check active.json (default 10).
    pub poll: Duration,
    /// `RECS_ADMIN_TOKEN`: bearer token for /switch and /rollout/update; when unset
    /// they are open (API Gateway's AWS_IAM protects them on AWS).
    pub admin_token: Option<String>,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            registry: "model_registry".into(),
            version: None,
            max_k: DEFAULT_MAX_K,
            titles: None,
            image_digest: None,
            environment: "production".into(),
            poll: Duration::from_secs(10),
            admin_token: None,
        }
    }
}

impl Config {
    /// Reads the configuration from environment variables.
    pub fn from_env() -> Result<Self, ConfigError> {
        Self::from_lookup(|k| std::env::var(k).ok().filter(|v| !v.is_empty()))
    }

    /// Reads the configuration through `get` (the environment, or a map in tests).
    pub fn from_lookup(get: impl Fn(&str) -> Option<String>) -> Result<Self, ConfigError> {
        let d = Config::default();
        let number =
            |name: &'static str, lo: u64, hi: u64, default: u64, reason: &'static str| match get(
                name,
            ) {
                None => Ok(default),
                Some(v) => match v.parse::<u64>() {
                    Ok(n) if (lo..=hi).contains(&n) => Ok(n),
                    _ => Err(ConfigError::Invalid {
                        name,
                        value: v,
                        reason,
                    }),
                },
            };
        let max_k = number(
            "MAX_K",
            1,
            10_000,
            d.max_k as u64,
            "must be an integer in 1..=10000",
        )? as usize;
        let poll = number(
            "ACTIVE_POLL_SECONDS",
            0,
            3600,
            10,
            "must be an integer in 0..=3600",
        )?;
        Ok(Config {
            registry: get("MODEL_REGISTRY").unwrap_or(d.registry),
            version: get("MODEL_VERSION"),
            max_k,
            titles: get("MOVIE_TITLES").map(PathBuf::from),
            image_digest: get("CONTAINER_IMAGE_DIGEST"),
            environment: get("ENVIRONMENT").unwrap_or(d.environment),
            poll: Duration::from_secs(poll),
            admin_token: get("RECS_ADMIN_TOKEN"),
        })
    }
}

/// The primary model, or why there is none.
pub type ModelState = Result<Arc<LoadedModel>, String>;

/// One consistent view of what is served.
#[derive(Debug)]
pub struct Served {
    pub primary: ModelState,
    /// The canary version, when the rollout uses one and it loaded.
    pub canary: Option<Arc<LoadedModel>>,
    pub rollout: Rollout,
    pub previous_version: Option<String>,
    /// ETag of the active.json this view came from (`None`: there was none).
    etag: Option<String>,
}

/// Why a switch or rollout change was refused.
#[derive(Debug, thiserror::Error)]
pub enum SwitchError {
    #[error("{0}")]
    BadRequest(String),
    #[error("version {0} does not exist in the registry")]
    NotFound(String),
    #[error("version {version} failed verification: {reason}; still serving {serving}")]
    Verification {
        version: String,
        reason: String,
        serving: String,
    },
    #[error("registry unavailable: {0}")]
    Unavailable(String),
    #[error("{0}")]
    Conflict(String),
}

/// What a successful switch reports.
#[derive(Debug, Clone)]
pub struct Switched {
    pub model: Arc<LoadedModel>,
    pub previous_version: Option<String>,
    pub state: ActiveState,
}

/// A partial rollout change: only the fields given are changed.
#[derive(Debug, Clone, Default)]
pub struct RolloutPatch {
    pub strategy: Option<Strategy>,
    /// `Some(None)` clears the canary version.
    pub canary_version: Option<Option<String>>,
    pub canary_percentage: Option<f64>,
    pub salt: Option<String>,
}

/// Shared state of one execution environment.
pub struct Service {
    pub config: Config,
    pub titles: Titles,
    pub metrics: Arc<Metrics>,
    registry: Result<Registry, String>,
    served: ArcSwap<Served>,
    last_poll: Mutex<Option<Instant>>,
    refreshing: tokio::sync::Mutex<()>,
}

impl Service {
    /// Resolves what to serve (active.json, else `MODEL_VERSION`, else latest.txt),
    /// loads it and the titles. Never fails: a model that cannot be served becomes
    /// the reason `/healthz` reports, and is counted as a `model_load` error.
    pub async fn start(config: Config) -> Service {
        let metrics = Arc::new(Metrics::default());
        let registry = Registry::open(&config.registry).map_err(|e| e.to_string());
        let empty = Served {
            primary: Err("not loaded yet".into()),
            canary: None,
            rollout: Rollout::default(),
            previous_version: None,
            etag: None,
        };
        let mut svc = Service {
            config,
            titles: Titles::default(),
            metrics,
            registry,
            served: ArcSwap::from_pointee(empty),
            last_poll: Mutex::new(None),
            refreshing: tokio::sync::Mutex::new(()),
        };
        // Titles and the model are independent fetches: one round trip, not two.
        let (titles, ()) = tokio::join!(
            load_titles(&svc.config, svc.registry.as_ref().ok()),
            svc.reload(None)
        );
        svc.titles = titles;
        *svc.last_poll.lock().unwrap_or_else(|p| p.into_inner()) = Some(Instant::now());
        svc
    }

    /// A service over an already-loaded model, with no registry behind it (tests,
    /// benchmarks).
    pub fn with_model(config: Config, model: LoadedModel, titles: Titles) -> Service {
        let metrics = Arc::new(Metrics::default());
        metrics.model_loaded(version_info(&model), model.load_seconds);
        metrics.set_healthy(true);
        let registry = Registry::open(&config.registry).map_err(|e| e.to_string());
        Service {
            config,
            titles,
            metrics,
            registry,
            served: ArcSwap::from_pointee(Served {
                primary: Ok(Arc::new(model)),
                canary: None,
                rollout: Rollout::default(),
                previous_version: None,
                etag: None,
            }),
            last_poll: Mutex::new(Some(Instant::now())),
            refreshing: tokio::sync::Mutex::new(()),
        }
    }

    /// The current snapshot. Load it once per request.
    pub fn served(&self) -> Arc<Served> {
        self.served.load_full()
    }

    /// The primary model, or why there is none.
    pub fn model(&self) -> ModelState {
        self.served().primary.clone()
    }

    fn registry(&self) -> Result<&Registry, SwitchError> {
        self.registry
            .as_ref()
            .map_err(|e| SwitchError::Unavailable(e.clone()))
    }

    /// True when the poll interval has passed since the last check. A missing model
    /// is retried on the same schedule, so an S3 outage costs a request a fast 503,
    /// not a timeout every time.
    pub fn refresh_due(&self) -> bool {
        let last = *self.last_poll.lock().unwrap_or_else(|p| p.into_inner());
        last.is_none_or(|t| t.elapsed() >= self.config.poll)
    }

    /// Checks active.json (conditional GET) and swaps in what changed. Concurrent
    /// callers do not queue: one refreshes, the others return at once. Errors are
    /// logged and counted; the loaded models keep serving.
    pub async fn refresh(&self) {
        let Ok(_guard) = self.refreshing.try_lock() else {
            return;
        };
        *self.last_poll.lock().unwrap_or_else(|p| p.into_inner()) = Some(Instant::now());
        let current = self.served();
        let Ok(registry) = self.registry.as_ref() else {
            return;
        };
        let etag = if current.primary.is_ok() {
            current.etag.as_deref()
        } else {
            None
        };
        match active::read_if_changed(registry.store(), etag).await {
            Ok(None) => {}
            Ok(Some(state)) => {
                if current.primary.is_err() || state.is_some() || current.etag.is_some() {
                    self.reload(state).await
                }
            }
            Err(e) => {
                tracing::warn!(error = %e, "cannot check active.json; serving what is loaded");
                self.metrics.count_error("registry_unavailable", "refresh");
            }
        }
    }

    /// Copies the last drift result (`recs drift` / the drift function write it to
    /// the registry) into the metrics, for `/metrics` on the local server.
    pub async fn refresh_drift(&self) {
        if let Ok(registry) = &self.registry {
            if let Some(summary) = crate::drift::read_latest(registry.store()).await {
                self.metrics.set_drift(summary.psi());
            }
        }
    }

    /// Builds and swaps in a snapshot for `state` (or, without active.json, for
    /// `MODEL_VERSION` / latest.txt), reusing models already loaded.
    async fn reload(&self, state: Option<(ActiveState, String)>) {
        let current = self.served();
        let registry = match &self.registry {
            Ok(r) => r,
            Err(e) => {
                self.fail_load(format!("registry {}: {e}", self.config.registry));
                return;
            }
        };
        let (state, etag) = match state {
            Some((s, tag)) => (Some(s), Some(tag)),
            None => match current.etag {
                // Never polled: read it now (cold start).
                None if current.primary.is_err() => match active::read(registry.store()).await {
                    Ok(Some((s, tag))) => (Some(s), Some(tag)),
                    Ok(None) => (None, None),
                    Err(e) => {
                        self.fail_load(format!(
                            "cannot read active.json from {}: {e}",
                            registry.location()
                        ));
                        return;
                    }
                },
                _ => (None, None),
            },
        };
        let (primary_version, canary_version) = match &state {
            Some(s) => s.versions(),
            None => match &self.config.version {
                Some(v) => (v.clone(), None),
                None => match registry.latest().await {
                    Ok(v) => (v, None),
                    Err(e) => {
                        self.fail_load(format!("cannot resolve the version to serve: {e}"));
                        return;
                    }
                },
            },
        };
        let primary = match self
            .load_reusing(registry, &current, &primary_version)
            .await
        {
            Ok(m) => Ok(m),
            Err(e) => {
                let reason = format!(
                    "version {primary_version} from {}: {e}",
                    registry.location()
                );
                if let Ok(old) = &current.primary {
                    // Keep serving the old model; the failure is counted and retried.
                    tracing::error!(%reason, serving = %old.version, "new active version failed to load");
                    self.metrics.count_error("model_load", "refresh");
                    return;
                }
                Err(reason)
            }
        };
        let canary = match canary_version {
            Some(v) => match self.load_reusing(registry, &current, &v).await {
                Ok(m) => Some(m),
                Err(e) => {
                    tracing::error!(version = %v, error = %e, "canary version failed to load; serving primary only");
                    self.metrics.count_error("model_load", "refresh");
                    None
                }
            },
            None => None,
        };
        match &primary {
            Ok(m) => {
                self.metrics.model_loaded(version_info(m), m.load_seconds);
                self.metrics.set_healthy(true);
                tracing::info!(version = %m.version, users = m.model.n_users(), items = m.model.n_items(),
                    factors = m.model.factors(), load_seconds = m.load_seconds, "serving model");
            }
            Err(reason) => self.fail_load(reason.clone()),
        }
        self.served.store(Arc::new(Served {
            primary,
            canary,
            rollout: state
                .as_ref()
                .map(|s| s.rollout.clone())
                .unwrap_or_default(),
            previous_version: state.as_ref().and_then(|s| s.previous_version.clone()),
            etag,
        }));
    }

    fn fail_load(&self, reason: String) {
        tracing::error!(registry = %self.config.registry, %reason, "no servable model");
        self.metrics.count_error("model_load", "startup");
        self.metrics.set_healthy(self.served().primary.is_ok());
        if self.served().primary.is_err() {
            let current = self.served();
            self.served.store(Arc::new(Served {
                primary: Err(reason),
                canary: None,
                rollout: current.rollout.clone(),
                previous_version: current.previous_version.clone(),
                etag: None,
            }));
        }
    }

    async fn load_reusing(
        &self,
        registry: &Registry,
        current: &Served,
        version: &str,
    ) -> Result<Arc<LoadedModel>, RegistryError> {
        let loaded = [current.primary.as_ref().ok(), current.canary.as_ref()];
        if let Some(m) = loaded.into_iter().flatten().find(|m| m.version == version) {
            return Ok(m.clone());
        }
        registry.load(version).await.map(Arc::new)
    }

    /// The version served now, if any.
    fn serving_version(&self) -> Option<String> {
        self.served()
            .primary
            .as_ref()
            .ok()
            .map(|m| m.version.clone())
    }

    /// Loads and verifies `version`, mapping failures to what a switch reports.
    async fn verified(&self, version: &str) -> Result<Arc<LoadedModel>, SwitchError> {
        validate_version(version).map_err(|e| SwitchError::BadRequest(e.to_string()))?;
        let registry = self.registry()?;
        let current = self.served();
        let serving = current.primary.as_ref().ok().map(|m| m.version.clone());
        // A refused version is counted once, as the 422's error_type (model_load).
        self.load_reusing(registry, &current, version)
            .await
            .map_err(|e| switch_error(e, version, serving.as_deref()))
    }

    /// Switches every instance to `version`: verifies it first (a bad version is
    /// refused and the old one keeps serving), then records it in active.json with a
    /// conditional write, then serves it here at once.
    pub async fn switch(&self, version: &str) -> Result<Switched, SwitchError> {
        let model = self.verified(version).await?;
        let serving = self.serving_version();
        let state = record_switch(self.registry()?, version, serving.as_deref()).await?;
        self.metrics.count_switch();
        self.install(&state, model.clone()).await;
        Ok(Switched {
            previous_version: state.previous_version.clone(),
            model,
            state,
        })
    }

    /// Applies a partial rollout change (validated; a canary version is verified
    /// before it is recorded) and returns the new state.
    pub async fn update_rollout(&self, patch: RolloutPatch) -> Result<ActiveState, SwitchError> {
        patch.check()?;
        if let Some(Some(v)) = &patch.canary_version {
            self.verified(v).await?;
        }
        let serving = self.serving_version();
        let state = record_rollout(self.registry()?, &patch, serving.as_deref()).await?;
        let primary = self.served().primary.clone();
        if let Ok(p) = primary {
            self.install(&state, p).await;
        }
        Ok(state)
    }

    /// Serves `state` here at once (the other instances follow on their next poll).
    async fn install(&self, state: &ActiveState, primary: Arc<LoadedModel>) {
        let current = self.served();
        let (_, canary_version) = state.versions();
        let canary = match canary_version {
            Some(v) => match self.registry() {
                Ok(r) => self.load_reusing(r, &current, &v).await.ok(),
                Err(_) => None,
            },
            None => None,
        };
        self.metrics
            .model_loaded(version_info(&primary), primary.load_seconds);
        self.metrics.set_healthy(true);
        // The next poll fetches the written object once (new ETag) and finds it equal.
        self.served.store(Arc::new(Served {
            primary: Ok(primary),
            canary,
            rollout: state.rollout.clone(),
            previous_version: state.previous_version.clone(),
            etag: current.etag.clone(),
        }));
    }

    /// The rollout as `/healthz` and `/rollout/status` show it.
    pub fn rollout_json(&self) -> Value {
        let s = self.served();
        serde_json::json!({
            "strategy": s.rollout.strategy,
            "primary_version": s.primary.as_ref().ok().map(|m| m.version.clone()),
            "canary_version": s.rollout.canary_version,
            "canary_percentage": s.rollout.canary_percentage,
            "salt": s.rollout.salt,
            "environment": self.config.environment,
        })
    }
}

impl RolloutPatch {
    /// Checks the fields that need no registry access.
    pub fn check(&self) -> Result<(), SwitchError> {
        if let Some(p) = self.canary_percentage {
            if !(0.0..=100.0).contains(&p) || !p.is_finite() {
                return Err(SwitchError::BadRequest(format!(
                    "canary_percentage must be in 0..=100, got {p}"
                )));
            }
        }
        if let Some(Some(v)) = &self.canary_version {
            validate_version(v).map_err(|e| SwitchError::BadRequest(e.to_string()))?;
        }
        if let Some(salt) = &self.salt {
            if salt.is_empty() || salt.len() > 64 {
                return Err(SwitchError::BadRequest(
                    "salt must be 1 to 64 characters".into(),
                ));
            }
        }
        Ok(())
    }

    fn apply(&self, s: &mut ActiveState) -> Result<(), SwitchError> {
        let r = &mut s.rollout;
        if let Some(x) = self.strategy {
            r.strategy = x;
        }
        if let Some(x) = &self.canary_version {
            r.canary_version = x.clone();
        }
        if let Some(x) = self.canary_percentage {
            r.canary_percentage = x;
        }
        if let Some(x) = &self.salt {
            r.salt = x.clone();
        }
        if r.strategy.uses_canary() && r.canary_version.is_none() {
            return Err(SwitchError::BadRequest(format!(
                "strategy {:?} needs a canary_version",
                r.strategy
            )));
        }
        Ok(())
    }
}

/// Maps a failed load of `version` to what a switch reports: 404 unknown, 422 failed
/// verification (naming what is still served), 503 registry unreachable.
pub fn switch_error(e: RegistryError, version: &str, serving: Option<&str>) -> SwitchError {
    match e {
        RegistryError::UnknownVersion(v) => SwitchError::NotFound(v),
        RegistryError::InvalidVersion(_) => SwitchError::BadRequest(e.to_string()),
        e if e.is_verification_failure() => SwitchError::Verification {
            version: version.to_string(),
            reason: e.to_string(),
            serving: serving.unwrap_or("nothing").to_string(),
        },
        e => SwitchError::Unavailable(e.to_string()),
    }
}

fn finish_update(
    written: Result<Result<ActiveState, SwitchError>, ActiveError>,
) -> Result<ActiveState, SwitchError> {
    match written {
        Ok(r) => r,
        Err(ActiveError::Conflict) => Err(SwitchError::Conflict(ActiveError::Conflict.to_string())),
        Err(e) => Err(SwitchError::Unavailable(e.to_string())),
    }
}

/// Records `version` (already verified) as active: previous = what was active.
/// `serving` stands in for the active version when no active.json exists yet.
pub async fn record_switch(
    registry: &Registry,
    version: &str,
    serving: Option<&str>,
) -> Result<ActiveState, SwitchError> {
    let written = active::update(registry.store(), "switch", |cur| {
        let mut s = match cur {
            Some(s) => s.clone(),
            None => ActiveState::new(serving.unwrap_or(version)),
        };
        if s.active_version != version {
            s.previous_version = Some(s.active_version.clone());
        }
        s.active_version = version.to_string();
        Ok::<_, SwitchError>(s)
    })
    .await;
    finish_update(written)
}

/// Records a rollout change (canary version already verified by the caller).
pub async fn record_rollout(
    registry: &Registry,
    patch: &RolloutPatch,
    serving: Option<&str>,
) -> Result<ActiveState, SwitchError> {
    let written = active::update(registry.store(), "rollout", |cur| {
        let mut s = match (cur, serving) {
            (Some(s), _) => s.clone(),
            (None, Some(v)) => ActiveState::new(v),
            (None, None) => {
                return Err(SwitchError::BadRequest(
                    "no active version to roll out from".into(),
                ))
            }
        };
        patch.apply(&mut s)?;
        Ok(s)
    })
    .await;
    finish_update(written)
}

/// The `model_version_info` labels of a loaded version.
pub fn version_info(m: &LoadedModel) -> VersionInfo {
    VersionInfo {
        model_name: m.meta.model_name.clone(),
        version: m.version.clone(),
        git_sha: m.meta.git_sha.clone(),
        data_snapshot: m.meta.data_snapshot_id.clone(),
    }
}

/// Titles from `MOVIE_TITLES`, else the registry's `movie_titles.csv` (folder or S3).
async fn load_titles(config: &Config, registry: Option<&Registry>) -> Titles {
    let loaded = match (&config.titles, registry) {
        (Some(path), _) => Titles::load(path),
        (None, Some(r)) => match r.store().get("movie_titles.csv").await {
            Ok(bytes) => Titles::parse(&format!("{}/movie_titles.csv", r.location()), bytes),
            Err(_) => return Titles::default(),
        },
        (None, None) => return Titles::default(),
    };
    match loaded {
        Ok(t) => {
            tracing::info!(titles = t.len(), "titles loaded");
            t
        }
        Err(e) => {
            // Titles are decoration: serve "Movie <id>" rather than refuse to start.
            tracing::warn!(error = %e, "titles unavailable; using \"Movie <id>\"");
            Titles::default()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    #[test]
    fn config_defaults_and_validation() {
        let c = Config::from_lookup(|_| None).unwrap();
        assert_eq!((c.max_k, c.registry.as_str()), (100, "model_registry"));
        assert_eq!(c.poll, Duration::from_secs(10));
        let env: HashMap<&str, &str> = [
            ("MAX_K", "50"),
            ("MODEL_VERSION", "v1.0"),
            ("ACTIVE_POLL_SECONDS", "1"),
        ]
        .into();
        let c = Config::from_lookup(|k| env.get(k).map(|v| v.to_string())).unwrap();
        assert_eq!((c.max_k, c.version.as_deref()), (50, Some("v1.0")));
        assert_eq!(c.poll, Duration::from_secs(1));
        for bad in ["0", "-1", "abc", "100000"] {
            let err = Config::from_lookup(|k| (k == "MAX_K").then(|| bad.to_string()));
            assert!(err.is_err(), "{bad}");
        }
    }

    #[tokio::test]
    async fn missing_registry_is_a_reason_not_a_crash() {
        let dir = tempfile::tempdir().unwrap();
        let config = Config {
            registry: dir.path().join("nothing").display().to_string(),
            ..Config::default()
        };
        let svc = Service::start(config).await;
        let reason = svc.model().unwrap_err();
        assert!(reason.contains("latest.txt"), "{reason}");
    }
}
