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

use std::sync::{Arc, Mutex};
use std::time::Instant;

use arc_swap::ArcSwap;

use crate::config::Config;
use crate::control::{self, RolloutPatch, SwitchError, Switched};
use crate::metrics::{Metrics, VersionInfo};
use recs_core::active::{self, ActiveState, Rollout};
use recs_core::blocked::{self, BlockedError, BlockedSet};
use recs_core::{LoadedModel, Registry, RegistryError, Titles};

/// The primary model, or why there is none.
pub type ModelState = Result<Arc<LoadedModel>, String>;

/// One consistent view of what is served.
#[derive(Debug)]
pub struct Served {
    /// The primary (active) model, or why there is none.
    pub primary: ModelState,
    /// The canary version, when the rollout uses one and it loaded.
    pub canary: Option<Arc<LoadedModel>>,
    /// The rollout in force.
    pub rollout: Rollout,
    /// active.json's previous version (the rollback target).
    pub previous_version: Option<String>,
    /// ETag of the active.json this view came from (`None`: there was none).
    etag: Option<String>,
}

impl Served {
    /// The models loaded in this view (primary, canary): a switch to one of them
    /// reuses it instead of downloading it again.
    fn loaded(&self) -> Vec<&Arc<LoadedModel>> {
        self.primary
            .as_ref()
            .ok()
            .into_iter()
            .chain(&self.canary)
            .collect()
    }
}

/// The blocked set this instance applies: the ids (ascending), the set as read, and
/// the ETag of the blocked.json it came from.
#[derive(Debug, Default)]
pub struct Blocked {
    /// Blocked movie ids, ascending.
    pub ids: Vec<i64>,
    /// The set as read (`revision` 0: none was ever written).
    pub set: BlockedSet,
    etag: Option<String>,
}

impl Blocked {
    fn of(set: BlockedSet, etag: Option<String>) -> Blocked {
        Blocked {
            ids: set.ids(),
            set,
            etag,
        }
    }
}

/// What a block or unblock did, for the caller.
#[derive(Debug, Clone)]
pub struct BlockDone {
    /// The change as written.
    pub change: blocked::Change,
    /// The ids neither the served versions nor the catalog know (accepted: a
    /// takedown may precede the release that brings the movie).
    pub unknown: Vec<i64>,
}

/// Shared state of one execution environment.
pub struct Service {
    /// Settings, read once at start.
    pub config: Config,
    /// Movie titles for responses.
    pub titles: Titles,
    /// This process's Prometheus metrics.
    pub metrics: Arc<Metrics>,
    registry: Result<Registry, String>,
    served: ArcSwap<Served>,
    blocked: ArcSwap<Blocked>,
    last_poll: Mutex<Option<Instant>>,
    refreshing: tokio::sync::Mutex<()>,
    /// Recent recommendation traces (`GET /trace/{request_id}`).
    pub(crate) traces: crate::trace::TraceStore,
    /// Where each recommendation response is recorded (`EXPOSURE_LOG`).
    pub exposures: crate::ExposureLog,
}

impl Service {
    /// Resolves what to serve (active.json, else `MODEL_VERSION`, else latest.txt),
    /// loads it and the titles. Never fails: a model that cannot be served becomes
    /// the reason `/healthz` reports, and is counted as a `model_load` error.
    pub async fn start(config: Config) -> Service {
        Self::start_with(config, Metrics::default()).await
    }

    /// [`Service::start`] with the given metrics (the Lambda adapter passes
    /// [`Metrics::with_emf_outbox`], so every load and failure also becomes an EMF line).
    pub async fn start_with(config: Config, metrics: Metrics) -> Service {
        let metrics = Arc::new(metrics);
        let registry = Registry::open(&config.registry).map_err(|e| e.to_string());
        let empty = Served {
            primary: Err("not loaded yet".into()),
            canary: None,
            rollout: Rollout::default(),
            previous_version: None,
            etag: None,
        };
        let exposures = crate::ExposureLog::start(&config.exposure_log);
        let mut svc = Service {
            config,
            titles: Titles::default(),
            metrics,
            registry,
            served: ArcSwap::from_pointee(empty),
            blocked: Default::default(),
            last_poll: Mutex::new(None),
            refreshing: tokio::sync::Mutex::new(()),
            traces: Default::default(),
            exposures,
        };
        // Titles, the model and the blocked set are independent fetches: one round
        // trip, not three.
        let (titles, (), ()) = tokio::join!(
            load_titles(&svc.config, svc.registry.as_ref().ok()),
            svc.reload(None),
            svc.refresh_blocked()
        );
        svc.titles = titles;
        *svc.last_poll.lock().unwrap_or_else(|p| p.into_inner()) = Some(Instant::now());
        svc
    }

    /// A service over an already-loaded model, with no registry behind it (tests,
    /// benchmarks).
    pub fn with_model(config: Config, model: LoadedModel, titles: Titles) -> Service {
        let metrics = Arc::new(Metrics::default());
        metrics.model_loaded(VersionInfo::of(&model), model.load_seconds);
        metrics.set_healthy(true);
        let registry = Registry::open(&config.registry).map_err(|e| e.to_string());
        let exposures = crate::ExposureLog::start(&config.exposure_log);
        Service {
            exposures,
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
            blocked: Default::default(),
            last_poll: Mutex::new(Some(Instant::now())),
            refreshing: tokio::sync::Mutex::new(()),
            traces: Default::default(),
        }
    }

    /// The current snapshot. Load it once per request.
    pub fn served(&self) -> Arc<Served> {
        self.served.load_full()
    }

    /// The blocked set applied now. Load it once per request.
    pub fn blocked(&self) -> Arc<Blocked> {
        self.blocked.load_full()
    }

    /// Reads blocked.json if it changed (conditional GET) and applies it. Errors are
    /// logged and counted; the set already applied stays. [`Service::refresh`] calls
    /// it too.
    pub async fn refresh_blocked(&self) {
        let Ok(registry) = self.registry.as_ref() else {
            return;
        };
        let current = self.blocked();
        match blocked::read_if_changed(registry.store(), current.etag.as_deref()).await {
            Ok(None) => {}
            Ok(Some(found)) => {
                let (set, etag) = match found {
                    Some((set, etag)) => (set, Some(etag)),
                    None => (BlockedSet::default(), None),
                };
                if set != current.set {
                    tracing::info!(
                        revision = set.revision,
                        blocked = set.movies.len(),
                        "blocked set changed"
                    );
                    self.metrics
                        .count_block_update("poll", set.movies.len(), set.revision);
                }
                self.blocked.store(Arc::new(Blocked::of(set, etag)));
            }
            Err(e) => {
                tracing::warn!(error = %e, "cannot check blocked.json; applying the set already read");
                self.metrics
                    .count_error("registry_unavailable", "refresh", &e.to_string());
            }
        }
    }

    /// The registry's blocked set as stored now (empty when none was written).
    pub async fn stored_blocked(&self) -> Result<BlockedSet, String> {
        let registry = self.registry.as_ref().map_err(|e| e.clone())?;
        blocked::read(registry.store())
            .await
            .map(|s| s.map(|(set, _)| set).unwrap_or_default())
            .map_err(|e| e.to_string())
    }

    /// Blocks (`block` true) or unblocks `ids` in the registry for every instance,
    /// and applies the result here at once.
    pub async fn change_blocked(
        &self,
        block: bool,
        ids: &[i64],
        reason: &str,
    ) -> Result<BlockDone, BlockedError> {
        let registry = self.registry.as_ref().map_err(|e| {
            BlockedError::Store(recs_core::StoreError::Unavailable {
                location: self.config.registry.clone(),
                detail: e.clone(),
            })
        })?;
        let change = if block {
            blocked::block(registry.store(), ids, reason).await?
        } else {
            blocked::unblock(registry.store(), ids).await?
        };
        let action = if block { "block" } else { "unblock" };
        if !change.changed.is_empty() {
            self.metrics
                .count_block_update(action, change.set.movies.len(), change.set.revision);
            tracing::info!(action, ids = ?change.changed, revision = change.set.revision, "blocked set written");
        }
        // The next poll fetches the written object once (new ETag) and finds it equal.
        let etag = self.blocked().etag.clone();
        self.blocked
            .store(Arc::new(Blocked::of(change.set.clone(), etag)));
        let served = self.served();
        let mut asked: Vec<i64> = change
            .changed
            .iter()
            .chain(&change.unchanged)
            .copied()
            .collect();
        asked.sort_unstable();
        let unknown = asked
            .into_iter()
            .filter(|&id| {
                let in_model = served.loaded().iter().any(|m| m.knows_item(id));
                !in_model && !self.titles.contains(id)
            })
            .collect();
        Ok(BlockDone { change, unknown })
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
        let (changed, ()) = tokio::join!(
            active::read_if_changed(registry.store(), etag),
            self.refresh_blocked()
        );
        match changed {
            Ok(None) => {}
            Ok(Some(state)) => {
                if current.primary.is_err() || state.is_some() || current.etag.is_some() {
                    self.reload(state).await
                }
            }
            Err(e) => {
                tracing::warn!(error = %e, "cannot check active.json; serving what is loaded");
                self.metrics
                    .count_error("registry_unavailable", "refresh", &e.to_string());
            }
        }
    }

    /// Copies the last drift result (`recs drift` / the drift function write it to
    /// the registry) into the metrics, for `/metrics` on the local server.
    pub async fn refresh_drift(&self) {
        if let Ok(registry) = &self.registry {
            if let Some((version, psi)) = registry.drift_psi().await {
                self.metrics.set_drift(&version, psi);
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
        let resolved =
            active::resolve_served(registry, state.as_ref(), self.config.version.as_deref()).await;
        let (primary_version, canary_version) = match resolved {
            Ok(v) => v,
            Err(e) => {
                self.fail_load(format!("cannot resolve the version to serve: {e}"));
                return;
            }
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
                    self.metrics.count_error("model_load", "refresh", &reason);
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
                    self.metrics.count_error(
                        "model_load",
                        "refresh",
                        &format!("canary version {v}: {e}"),
                    );
                    None
                }
            },
            None => None,
        };
        match &primary {
            Ok(m) => {
                self.metrics
                    .model_loaded(VersionInfo::of(m), m.load_seconds);
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
        self.metrics.count_error("model_load", "startup", &reason);
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
        crate::fault::before_load().await; // drills only: off unless RECS_FAULT_INJECTION=1
        let (model, fresh) = control::reuse_or_load(registry, &current.loaded(), version).await?;
        if fresh {
            self.metrics.count_load(&model.version, model.load_seconds);
        }
        Ok(model)
    }

    /// The version served now, if any.
    fn serving_version(&self) -> Option<String> {
        self.served()
            .primary
            .as_ref()
            .ok()
            .map(|m| m.version.clone())
    }

    /// The registry's active.json as stored now (what every instance converges on),
    /// as opposed to [`Service::served`] (what this instance serves).
    pub async fn active_state(&self) -> Result<Option<ActiveState>, String> {
        let registry = self.registry.as_ref().map_err(|e| e.clone())?;
        active::read(registry.store())
            .await
            .map(|s| s.map(|(state, _)| state))
            .map_err(|e| e.to_string())
    }

    /// Switches every instance to `version` ([`control::switch`]) and serves it here
    /// at once.
    pub async fn switch(&self, version: &str) -> Result<Switched, SwitchError> {
        let current = self.served();
        let loaded = current.loaded();
        let serving = self.serving_version();
        let done = control::switch(self.registry()?, version, serving.as_deref(), &loaded).await?;
        self.metrics.count_switch("switch", version);
        tracing::info!(version, previous = ?done.previous_version, revision = done.state.revision, "switched");
        self.install(&done.state, done.model.clone(), None).await;
        Ok(done)
    }

    /// Promotes an experiment's candidate ([`control::promote`]) and serves it here
    /// at once.
    pub async fn promote(&self, version: &str) -> Result<Switched, SwitchError> {
        let current = self.served();
        let loaded = current.loaded();
        let serving = self.serving_version();
        let done = control::promote(self.registry()?, version, serving.as_deref(), &loaded).await?;
        self.metrics.count_switch("promote", version);
        tracing::info!(version, previous = ?done.previous_version, revision = done.state.revision, "promoted");
        self.install(&done.state, done.model.clone(), None).await;
        Ok(done)
    }

    /// Applies a partial rollout change ([`control::update_rollout`]) and serves it
    /// here at once.
    pub async fn update_rollout(&self, patch: RolloutPatch) -> Result<ActiveState, SwitchError> {
        let current = self.served();
        let loaded = current.loaded();
        let serving = self.serving_version();
        // The canary comes back verified (or reused): it is installed as it is.
        let (state, canary) =
            control::update_rollout(self.registry()?, &patch, serving.as_deref(), &loaded).await?;
        self.metrics.count_switch(
            "rollout",
            state
                .rollout
                .canary_version
                .as_deref()
                .unwrap_or(&state.active_version),
        );
        tracing::info!(strategy = ?state.rollout.strategy, canary = ?state.rollout.canary_version,
            percentage = state.rollout.canary_percentage, revision = state.revision, "rollout changed");
        if let Ok(p) = self.served().primary.clone() {
            self.install(&state, p, canary).await;
        }
        Ok(state)
    }

    /// Serves `state` here at once (the other instances follow on their next poll),
    /// with the canary already verified when the caller has it.
    async fn install(
        &self,
        state: &ActiveState,
        primary: Arc<LoadedModel>,
        canary: Option<Arc<LoadedModel>>,
    ) {
        let current = self.served();
        let (_, canary_version) = state.versions();
        let canary = match (canary_version, canary) {
            (Some(v), Some(c)) if c.version == v => Some(c),
            (Some(v), _) => match self.registry() {
                Ok(r) => self.load_reusing(r, &current, &v).await.ok(),
                Err(_) => None,
            },
            (None, _) => None,
        };
        self.metrics
            .model_loaded(VersionInfo::of(&primary), primary.load_seconds);
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
