//! Switch and rollout, implemented once: verify, then record in `active.json` with a
//! conditional write. The HTTP routes (through [`crate::Service`]) and the CLI both
//! call [`switch`] and [`update_rollout`].

use std::sync::Arc;

use recs_core::active::{self, ActiveError, ActiveState, Strategy};
use recs_core::{validate_version, LoadedModel, Registry, RegistryError};

/// Why a switch or rollout change was refused.
#[derive(Debug, thiserror::Error)]
pub enum SwitchError {
    /// A malformed version name or rollout field (400).
    #[error("{0}")]
    BadRequest(String),
    /// The version is not in the registry (404).
    #[error("version {0} does not exist in the registry")]
    NotFound(String),
    /// The version exists but failed verification (422); nothing was written.
    #[error("version {version} failed verification: {reason}; still serving {serving}")]
    Verification {
        /// The refused version.
        version: String,
        /// What verification found.
        reason: String,
        /// What keeps being served.
        serving: String,
    },
    /// The registry could not be read or written (503).
    #[error("registry unavailable: {0}")]
    Unavailable(String),
    /// The conditional write kept losing to other writers (409); nothing written.
    #[error("{0}")]
    Conflict(String),
}

/// What a successful switch reports.
#[derive(Debug, Clone)]
pub struct Switched {
    /// The verified model now recorded as active.
    pub model: Arc<LoadedModel>,
    /// The version it replaced (the rollback target).
    pub previous_version: Option<String>,
    /// active.json as written.
    pub state: ActiveState,
}

/// A partial rollout change: only the fields given are changed.
#[derive(Debug, Clone, Default)]
pub struct RolloutPatch {
    /// The new strategy.
    pub strategy: Option<Strategy>,
    /// `Some(None)` clears the canary version.
    pub canary_version: Option<Option<String>>,
    /// Share of users on the canary, 0..=100.
    pub canary_percentage: Option<f64>,
    /// A new salt (reassigns users to variants).
    pub salt: Option<String>,
}

impl RolloutPatch {
    /// Checks the fields that need no registry access.
    fn check(&self) -> Result<(), SwitchError> {
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
                "strategy {} needs a canary_version",
                r.strategy.name()
            )));
        }
        Ok(())
    }
}

/// Maps a failed load of `version` to what a switch reports: 404 unknown, 422 failed
/// verification (naming what is still served), 503 registry unreachable.
fn switch_error(e: RegistryError, version: &str, serving: Option<&str>) -> SwitchError {
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
async fn record_switch(
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
async fn record_rollout(
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

/// Loads and verifies `version`, reusing a model already in memory (`loaded`), and
/// maps failures to what a switch reports.
async fn verified(
    registry: &Registry,
    version: &str,
    serving: Option<&str>,
    loaded: &[&Arc<LoadedModel>],
) -> Result<Arc<LoadedModel>, SwitchError> {
    validate_version(version).map_err(|e| SwitchError::BadRequest(e.to_string()))?;
    reuse_or_load(registry, loaded, version)
        .await
        .map(|(m, _)| m)
        .map_err(|e| switch_error(e, version, serving))
}

/// `version` from `loaded` when it is there (already verified: no second download),
/// else loaded and verified from the registry; `true` when it was loaded now.
pub(crate) async fn reuse_or_load(
    registry: &Registry,
    loaded: &[&Arc<LoadedModel>],
    version: &str,
) -> Result<(Arc<LoadedModel>, bool), RegistryError> {
    if let Some(m) = loaded.iter().find(|m| m.version == version) {
        return Ok((Arc::clone(m), false));
    }
    Ok((Arc::new(registry.load(version).await?), true))
}

/// Switches every instance to `version`: verifies it first (a bad version is refused
/// and nothing is written), then records it in active.json with a conditional write
/// (previous = what was served). `serving` is the version served now: what an
/// instance has loaded, or for the CLI what active.json / latest.txt say
/// ([`recs_core::active::served_version`]); it stands in for the active version when
/// no active.json exists yet, so a first switch still records a rollback target.
pub async fn switch(
    registry: &Registry,
    version: &str,
    serving: Option<&str>,
    loaded: &[&Arc<LoadedModel>],
) -> Result<Switched, SwitchError> {
    let model = verified(registry, version, serving, loaded).await?;
    let state = record_switch(registry, version, serving).await?;
    Ok(Switched {
        previous_version: state.previous_version.clone(),
        model,
        state,
    })
}

/// Promotes an experiment's candidate: switches every instance to `version` (a
/// verified switch), then ends the rollout (fixed, no canary), so the old control
/// is no longer served to anyone.
pub async fn promote(
    registry: &Registry,
    version: &str,
    serving: Option<&str>,
    loaded: &[&Arc<LoadedModel>],
) -> Result<Switched, SwitchError> {
    let mut done = switch(registry, version, serving, loaded).await?;
    let end = RolloutPatch {
        strategy: Some(Strategy::Fixed),
        canary_version: Some(None),
        ..RolloutPatch::default()
    };
    let (state, _) = update_rollout(registry, &end, Some(version), &[&done.model]).await?;
    done.state = state;
    Ok(done)
}

/// Applies a partial rollout change: validated, a canary version verified before it
/// is recorded. Returns the new state and the verified canary, if one was named.
pub async fn update_rollout(
    registry: &Registry,
    patch: &RolloutPatch,
    serving: Option<&str>,
    loaded: &[&Arc<LoadedModel>],
) -> Result<(ActiveState, Option<Arc<LoadedModel>>), SwitchError> {
    patch.check()?;
    let canary = match &patch.canary_version {
        Some(Some(v)) => Some(verified(registry, v, serving, loaded).await?),
        _ => None,
    };
    let state = record_rollout(registry, patch, serving).await?;
    Ok((state, canary))
}
