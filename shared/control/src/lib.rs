//! movie-recs control: switch, promote and rollout changes, implemented once. Each
//! verifies first (a bad version is refused and nothing is written), then records the
//! change in `active.json` with a conditional write. The HTTP routes (`recs-serve`),
//! the CLI (`recs switch`, `recs rollout update`, `recs experiment promote`) and the
//! retrain job (`recs_train::retrain::retrain_then_canary`) all call these.
//!
//! - [`switch`], [`promote`], [`update_rollout`]: the operations.
//! - [`RolloutPatch`]: a partial rollout change; [`RolloutPatch::from_fields`] parses
//!   one from name/value pairs (HTTP query or body, CLI flags), [`RolloutPatch::canary`]
//!   builds the "start a canary" change.
//! - [`check_canary_percentage`]: the one range check of a canary share.
//! - [`SwitchError`]: why a change was refused, one variant per HTTP status.
//!
//! Of the workspace it depends on `recs-core` only: no HTTP stack, no training code.

#![deny(missing_docs)]

use std::sync::Arc;

use serde_json::Value;

use recs_core::active::{self, ActiveError, ActiveState, Strategy};
use recs_core::{validate_version, LoadedModel, Registry, RegistryError};

/// Why a switch or rollout change was refused.
#[derive(Debug, thiserror::Error)]
pub enum SwitchError {
    /// A malformed version name or rollout field (400).
    #[error("{0}")]
    BadRequest(String),
    /// The version is not in the registry (404).
    #[error("version {version} does not exist in registry {registry} (it has: {})", if versions.is_empty() { "no versions".to_string() } else { versions.join(", ") })]
    NotFound {
        /// The version asked for.
        version: String,
        /// The registry's location.
        registry: String,
        /// The versions it has.
        versions: Vec<String>,
    },
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

/// Checks a canary share (percent of users): finite and within 0..=100. Returns it
/// unchanged when it is valid. The one copy of this rule: [`update_rollout`] applies
/// it, and so do the callers that take a percentage before anything is written (the
/// retrain job's settings).
pub fn check_canary_percentage(p: f64) -> Result<f64, SwitchError> {
    if p.is_finite() && (0.0..=100.0).contains(&p) {
        Ok(p)
    } else {
        Err(SwitchError::BadRequest(format!(
            "canary_percentage must be in 0..=100, got {p}"
        )))
    }
}

/// A rollout field that [`RolloutPatch::from_fields`] cannot take: an unknown name or
/// a value of the wrong type (the message names the field). Range, version-name and
/// salt checks come later, in [`update_rollout`], as [`SwitchError::BadRequest`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct RolloutFieldError(pub String);

impl From<RolloutFieldError> for SwitchError {
    fn from(e: RolloutFieldError) -> Self {
        SwitchError::BadRequest(e.0)
    }
}

impl RolloutPatch {
    /// The field names [`RolloutPatch::from_fields`] accepts.
    pub const FIELDS: [&'static str; 4] =
        ["strategy", "canary_version", "canary_percentage", "salt"];

    /// The change that starts `version` as a canary for `percentage` % of users
    /// (strategy canary; the salt is kept).
    pub fn canary(version: impl Into<String>, percentage: f64) -> RolloutPatch {
        RolloutPatch {
            strategy: Some(Strategy::Canary),
            canary_version: Some(Some(version.into())),
            canary_percentage: Some(percentage),
            salt: None,
        }
    }

    /// Parses a rollout change from name/value pairs: an HTTP query string (values as
    /// JSON strings), a JSON body, or CLI flags. Of a name given twice, the first
    /// counts.
    ///
    /// - `strategy`: `fixed`, `canary`, `ab_test` or `shadow`; `null`: unchanged.
    /// - `canary_version`: a version; `null`, `""` or `"none"` clear it.
    /// - `canary_percentage`: a number, or a string holding one; `null`: unchanged.
    /// - `salt`: a string; `null`: unchanged.
    ///
    /// Any other name, or a value of another type, is a [`RolloutFieldError`]. Values
    /// are not range-checked here: [`update_rollout`] does that.
    pub fn from_fields<S: AsRef<str>>(
        fields: impl IntoIterator<Item = (S, Value)>,
    ) -> Result<RolloutPatch, RolloutFieldError> {
        let mut seen: Vec<&'static str> = Vec::new();
        let mut patch = RolloutPatch::default();
        for (name, value) in fields {
            let Some(&name) = Self::FIELDS.iter().find(|f| **f == name.as_ref()) else {
                return Err(RolloutFieldError(format!(
                    "unknown field {}",
                    name.as_ref()
                )));
            };
            if seen.contains(&name) {
                continue;
            }
            seen.push(name);
            match (name, value) {
                ("canary_version", Value::Null) => patch.canary_version = Some(None),
                (_, Value::Null) => {}
                ("canary_percentage", Value::Number(n)) => patch.canary_percentage = n.as_f64(),
                ("canary_percentage", Value::String(s)) => match s.trim().parse::<f64>() {
                    Ok(p) => patch.canary_percentage = Some(p),
                    Err(_) => {
                        return Err(RolloutFieldError(format!(
                            "canary_percentage must be a number, got {s:?}"
                        )))
                    }
                },
                ("canary_percentage", other) => {
                    return Err(RolloutFieldError(format!(
                        "canary_percentage must be a number, got {other}"
                    )))
                }
                ("strategy", Value::String(s)) => match Strategy::parse(&s) {
                    Some(x) => patch.strategy = Some(x),
                    None => {
                        return Err(RolloutFieldError(format!(
                            "strategy must be fixed, canary, ab_test or shadow, got {s:?}"
                        )))
                    }
                },
                ("canary_version", Value::String(s)) => {
                    patch.canary_version = Some((!s.is_empty() && s != "none").then_some(s))
                }
                ("salt", Value::String(s)) => patch.salt = Some(s),
                (_, other) => {
                    return Err(RolloutFieldError(format!(
                        "{name} must be a string, got {other}"
                    )))
                }
            }
        }
        Ok(patch)
    }

    /// Checks the fields that need no registry access.
    fn check(&self) -> Result<(), SwitchError> {
        if let Some(p) = self.canary_percentage {
            check_canary_percentage(p)?;
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
        RegistryError::UnknownVersion(v) => SwitchError::NotFound {
            version: v,
            registry: String::new(),
            versions: Vec::new(),
        },
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
        // The canary became the primary (a rollback or a switch to it): a rollout
        // comparing a version with itself means nothing, so it ends.
        if s.rollout.canary_version.as_deref() == Some(version) {
            s.rollout.canary_version = None;
            s.rollout.strategy = Strategy::Fixed;
        }
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
        if let Some(c) = s.rollout.canary_version.as_deref() {
            if c == s.active_version {
                return Err(SwitchError::BadRequest(format!(
                    "the canary {c} is the primary version: there is nothing to compare; name another version or clear the canary"
                )));
            }
        }
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
    match reuse_or_load(registry, loaded, version).await {
        Ok((m, _)) => Ok(m),
        Err(RegistryError::UnknownVersion(v)) => Err(SwitchError::NotFound {
            version: v,
            registry: registry.location(),
            versions: registry.versions().await.unwrap_or_default(),
        }),
        Err(e) => Err(switch_error(e, version, serving)),
    }
}

/// `version` from `loaded` when it is there (already verified: no second download),
/// else loaded and verified from the registry; `true` when it was loaded now.
pub async fn reuse_or_load(
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

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn parse(fields: Value) -> Result<RolloutPatch, RolloutFieldError> {
        let Value::Object(map) = fields else {
            panic!("an object")
        };
        RolloutPatch::from_fields(map)
    }

    #[test]
    fn canary_percentage_is_checked_once_here() {
        for ok in [0.0, 0.5, 10.0, 100.0] {
            assert_eq!(check_canary_percentage(ok).unwrap(), ok);
        }
        for bad in [-0.1, 100.01, f64::NAN, f64::INFINITY, f64::NEG_INFINITY] {
            let e = check_canary_percentage(bad).unwrap_err();
            assert!(matches!(e, SwitchError::BadRequest(_)), "{bad}: {e:?}");
            assert!(e
                .to_string()
                .starts_with("canary_percentage must be in 0..=100"));
        }
    }

    #[test]
    fn fields_parse_from_query_strings_and_json_alike() {
        let from_query = parse(json!({"strategy": "canary", "canary_version": "v0.2",
                                      "canary_percentage": "12.5", "salt": "s1"}))
        .unwrap();
        let from_body = parse(json!({"strategy": "canary", "canary_version": "v0.2",
                                     "canary_percentage": 12.5, "salt": "s1"}))
        .unwrap();
        for p in [from_query, from_body] {
            assert_eq!(p.strategy, Some(Strategy::Canary));
            assert_eq!(p.canary_version, Some(Some("v0.2".to_string())));
            assert_eq!(p.canary_percentage, Some(12.5));
            assert_eq!(p.salt.as_deref(), Some("s1"));
        }
        let empty = parse(json!({})).unwrap();
        assert!(empty.strategy.is_none() && empty.canary_version.is_none());
        assert!(empty.canary_percentage.is_none() && empty.salt.is_none());
    }

    #[test]
    fn null_leaves_a_field_unchanged_and_clears_the_canary_version() {
        let p = parse(
            json!({"strategy": null, "canary_percentage": null, "salt": null,
                             "canary_version": null}),
        )
        .unwrap();
        assert!(p.strategy.is_none() && p.canary_percentage.is_none() && p.salt.is_none());
        assert_eq!(p.canary_version, Some(None));
        for clear in ["", "none"] {
            let p = parse(json!({ "canary_version": clear })).unwrap();
            assert_eq!(p.canary_version, Some(None), "{clear:?}");
        }
    }

    #[test]
    fn unknown_names_and_wrong_types_are_refused() {
        let cases = [
            (
                json!({"strategy": "fixed", "percent": 5}),
                "unknown field percent",
            ),
            (
                json!({"strategy": "blue_green"}),
                "strategy must be fixed, canary, ab_test or shadow, got \"blue_green\"",
            ),
            (json!({"strategy": 1}), "strategy must be a string, got 1"),
            (
                json!({"canary_version": ["v0.2"]}),
                "canary_version must be a string, got [\"v0.2\"]",
            ),
            (
                json!({"canary_percentage": "ten"}),
                "canary_percentage must be a number, got \"ten\"",
            ),
            (
                json!({"canary_percentage": true}),
                "canary_percentage must be a number, got true",
            ),
            (
                json!({"salt": {"a": 1}}),
                "salt must be a string, got {\"a\":1}",
            ),
        ];
        for (fields, want) in cases {
            let e = parse(fields.clone()).unwrap_err();
            assert_eq!(e.to_string(), want, "{fields}");
            assert!(matches!(SwitchError::from(e), SwitchError::BadRequest(m) if m == want));
        }
    }

    #[test]
    fn the_first_of_a_repeated_name_counts() {
        let fields = vec![
            ("canary_percentage", json!("5")),
            ("canary_percentage", json!("50")),
        ];
        let p = RolloutPatch::from_fields(fields).unwrap();
        assert_eq!(p.canary_percentage, Some(5.0));
    }

    #[test]
    fn ranges_are_left_to_update_rollout() {
        // Parsing is about names and types; the range check is check_canary_percentage's.
        let p = parse(json!({"canary_percentage": 150})).unwrap();
        assert_eq!(p.canary_percentage, Some(150.0));
        assert!(p.check().is_err());
    }

    #[test]
    fn a_canary_patch_sets_strategy_version_and_share() {
        let p = RolloutPatch::canary("v0.3", 10.0);
        assert_eq!(p.strategy, Some(Strategy::Canary));
        assert_eq!(p.canary_version, Some(Some("v0.3".to_string())));
        assert_eq!(p.canary_percentage, Some(10.0));
        assert!(p.salt.is_none());
        p.check().unwrap();
        let mut s = ActiveState::new("v0.2");
        p.apply(&mut s).unwrap();
        assert_eq!(s.rollout.strategy, Strategy::Canary);
        assert_eq!(s.rollout.canary_version.as_deref(), Some("v0.3"));
        assert_eq!(s.rollout.canary_percentage, 10.0);
    }

    #[test]
    fn a_canary_strategy_without_a_canary_version_is_refused() {
        let p = RolloutPatch {
            strategy: Some(Strategy::Canary),
            ..RolloutPatch::default()
        };
        let e = p.apply(&mut ActiveState::new("v0.2")).unwrap_err();
        assert!(e.to_string().contains("needs a canary_version"), "{e}");
    }

    #[tokio::test]
    async fn an_invalid_patch_writes_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let registry = Registry::open(dir.path().to_str().unwrap()).unwrap();
        for patch in [
            RolloutPatch::canary("v0.3", 101.0),
            RolloutPatch::canary("../etc", 10.0),
            RolloutPatch {
                salt: Some(String::new()),
                ..RolloutPatch::default()
            },
        ] {
            let e = update_rollout(&registry, &patch, Some("v0.2"), &[])
                .await
                .unwrap_err();
            assert!(matches!(e, SwitchError::BadRequest(_)), "{e:?}");
        }
        assert!(active::read(registry.store()).await.unwrap().is_none());
    }

    #[tokio::test]
    async fn a_switch_to_the_canary_ends_the_rollout() {
        let dir = tempfile::tempdir().unwrap();
        let registry = Registry::open(dir.path().to_str().unwrap()).unwrap();
        let canary = RolloutPatch {
            strategy: Some(Strategy::Canary),
            ..RolloutPatch::canary("v0.2", 10.0)
        };
        record_rollout(&registry, &canary, Some("v0.1"))
            .await
            .unwrap();
        // A rollback (or a switch) to the canary's version: primary and canary would
        // be one version, which a rollout update refuses; the rollout ends instead.
        let s = record_switch(&registry, "v0.2", Some("v0.1"))
            .await
            .unwrap();
        assert_eq!(s.active_version, "v0.2");
        assert_eq!(s.previous_version.as_deref(), Some("v0.1"));
        assert_eq!(s.rollout.strategy, Strategy::Fixed);
        assert_eq!(s.rollout.canary_version, None);
        // A switch to another version leaves a canary alone.
        record_rollout(&registry, &RolloutPatch::canary("v0.3", 10.0), Some("v0.2"))
            .await
            .unwrap();
        let s = record_switch(&registry, "v0.1", Some("v0.2"))
            .await
            .unwrap();
        assert_eq!(s.rollout.canary_version.as_deref(), Some("v0.3"));
    }
}
