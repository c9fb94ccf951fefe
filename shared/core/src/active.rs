//! What every instance serves: one small object, `active.json`, at the registry
//! root. It holds the active and previous versions and the rollout settings, and is
//! only ever written with a conditional PUT on the ETag read just before, so two
//! writers can never lose each other's update: the loser re-reads and retries.

use serde::{Deserialize, Serialize};

use crate::hash::{fnv1a, splitmix64};
use crate::registry::{validate_version, Registry, RegistryError};
use crate::store::{Precondition, Store, StoreError};

/// The key of the active-state object.
const ACTIVE_KEY: &str = "active.json";
/// How many past changes `history` keeps.
const HISTORY: usize = 50;
/// Attempts at a conditional write before reporting a conflict.
const ATTEMPTS: usize = 8;

/// How traffic is split between the active (primary) and the canary version.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum Strategy {
    /// Everyone gets the active version.
    #[default]
    Fixed,
    /// `canary_percentage` of users get the canary version.
    Canary,
    /// `canary_percentage` of users are variant_B (canary), the rest variant_A.
    AbTest,
    /// Everyone gets the active version; the canary is scored too and compared.
    Shadow,
}

impl Strategy {
    /// Parses a strategy's snake_case name (`fixed`, `canary`, `ab_test`, `shadow`).
    pub fn parse(s: &str) -> Option<Strategy> {
        Some(match s {
            "fixed" => Strategy::Fixed,
            "canary" => Strategy::Canary,
            "ab_test" => Strategy::AbTest,
            "shadow" => Strategy::Shadow,
            _ => return None,
        })
    }

    /// The snake_case name, as the CLI and the API spell it.
    pub fn name(self) -> &'static str {
        match self {
            Strategy::Fixed => "fixed",
            Strategy::Canary => "canary",
            Strategy::AbTest => "ab_test",
            Strategy::Shadow => "shadow",
        }
    }

    /// True for every strategy but `Fixed`: the canary version is served or scored.
    pub fn uses_canary(self) -> bool {
        self != Strategy::Fixed
    }
}

/// Rollout settings.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Rollout {
    /// How traffic is split; `Fixed` when absent.
    #[serde(default)]
    pub strategy: Strategy,
    /// The version canary (or variant_B, or shadow) traffic gets; ignored under `Fixed`.
    #[serde(default)]
    pub canary_version: Option<String>,
    /// 0..=100.
    #[serde(default)]
    pub canary_percentage: f64,
    /// Changing the salt reshuffles which users get which variant.
    #[serde(default = "default_salt")]
    pub salt: String,
}

fn default_salt() -> String {
    "movie-recs".into()
}

impl Default for Rollout {
    fn default() -> Self {
        Rollout {
            strategy: Strategy::Fixed,
            canary_version: None,
            canary_percentage: 0.0,
            salt: default_salt(),
        }
    }
}

/// One recorded change.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Change {
    /// The state's `revision` once this change was written.
    pub revision: u64,
    /// What made the change, e.g. `switch` or `rollout`.
    pub action: String,
    /// The active version after the change.
    pub version: String,
    /// When it was written, RFC 3339 UTC (`YYYY-MM-DDTHH:MM:SSZ`).
    pub at: String,
}

/// The content of `active.json`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ActiveState {
    /// The primary version every instance serves.
    pub active_version: String,
    /// The version active before the last switch (the rollback target), if any.
    #[serde(default)]
    pub previous_version: Option<String>,
    /// Canary, A/B or shadow settings; no rollout when absent.
    #[serde(default)]
    pub rollout: Rollout,
    /// Increases by one with every write.
    #[serde(default)]
    pub revision: u64,
    /// When the state was last written, RFC 3339 UTC; empty before the first write.
    #[serde(default)]
    pub updated_at: String,
    /// The last changes, oldest first.
    #[serde(default)]
    pub history: Vec<Change>,
}

impl ActiveState {
    /// A state serving `version` with no rollout.
    pub fn new(version: &str) -> Self {
        ActiveState {
            active_version: version.to_string(),
            previous_version: None,
            rollout: Rollout::default(),
            revision: 0,
            updated_at: String::new(),
            history: Vec::new(),
        }
    }

    /// The versions this state serves: active, then the canary when the strategy
    /// uses one.
    pub fn versions(&self) -> (String, Option<String>) {
        let canary = self
            .rollout
            .canary_version
            .clone()
            .filter(|_| self.rollout.strategy.uses_canary());
        (self.active_version.clone(), canary)
    }

    fn check(&self) -> Result<(), String> {
        validate_version(&self.active_version).map_err(|e| e.to_string())?;
        if let Some(c) = &self.rollout.canary_version {
            validate_version(c).map_err(|e| e.to_string())?;
        }
        if !(0.0..=100.0).contains(&self.rollout.canary_percentage) {
            return Err("canary_percentage outside 0..=100".into());
        }
        Ok(())
    }
}

/// Why reading or updating the active state failed.
#[derive(Debug, thiserror::Error)]
pub enum ActiveError {
    /// The store could not read or write active.json.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// active.json is not valid JSON or fails the checks (version names, 0..=100 percentage).
    #[error("active.json is invalid: {0}")]
    Invalid(String),
    /// Every conditional write (8 attempts) lost to a concurrent writer; nothing was written.
    #[error("active.json kept changing under {ATTEMPTS} attempts; nothing was written, retry")]
    Conflict,
}

/// Reads the active state and its ETag; `None` when no `active.json` exists yet.
pub async fn read(store: &Store) -> Result<Option<(ActiveState, String)>, ActiveError> {
    match store.get_object(ACTIVE_KEY, None).await {
        Ok(Some(obj)) => Ok(Some((parse(&obj.bytes)?, obj.etag))),
        Ok(None) => unreachable!("unconditional get"),
        Err(StoreError::NotFound(_)) => Ok(None),
        Err(e) => Err(e.into()),
    }
}

/// Reads the active state only if it changed since `etag`: `Ok(None)` = unchanged.
pub async fn read_if_changed(
    store: &Store,
    etag: Option<&str>,
) -> Result<Option<Option<(ActiveState, String)>>, ActiveError> {
    match store.get_object(ACTIVE_KEY, etag).await {
        Ok(None) => Ok(None),
        Ok(Some(obj)) => Ok(Some(Some((parse(&obj.bytes)?, obj.etag)))),
        Err(StoreError::NotFound(_)) => Ok(Some(None)),
        Err(e) => Err(e.into()),
    }
}

/// Parses and checks `active.json`.
pub fn parse(bytes: &[u8]) -> Result<ActiveState, ActiveError> {
    let state: ActiveState =
        serde_json::from_slice(bytes).map_err(|e| ActiveError::Invalid(e.to_string()))?;
    state.check().map_err(ActiveError::Invalid)?;
    Ok(state)
}

/// Applies `change` to the current state (or to `None` when there is none yet) and
/// writes the result conditionally; on a concurrent write it re-reads and re-applies.
/// `change` decides what the new state is and may refuse (its error is returned
/// untouched). Returns the state that was written.
pub async fn update<E>(
    store: &Store,
    action: &str,
    mut change: impl FnMut(Option<&ActiveState>) -> Result<ActiveState, E>,
) -> Result<Result<ActiveState, E>, ActiveError> {
    for _ in 0..ATTEMPTS {
        let current = read(store).await?;
        let mut next = match change(current.as_ref().map(|(s, _)| s)) {
            Ok(s) => s,
            Err(e) => return Ok(Err(e)),
        };
        next.check().map_err(ActiveError::Invalid)?;
        next.revision = current.as_ref().map_or(0, |(s, _)| s.revision) + 1;
        next.updated_at = crate::time::now_rfc3339();
        next.history.push(Change {
            revision: next.revision,
            action: action.to_string(),
            version: next.active_version.clone(),
            at: next.updated_at.clone(),
        });
        let excess = next.history.len().saturating_sub(HISTORY);
        next.history.drain(..excess);
        let bytes = serde_json::to_vec_pretty(&next).expect("state serialises");
        let cond = match &current {
            Some((_, etag)) => Precondition::Matches(etag),
            None => Precondition::Absent,
        };
        match store.put_if(ACTIVE_KEY, bytes, cond).await {
            Ok(_) => return Ok(Ok(next)),
            Err(StoreError::Conflict(_)) => continue,
            Err(e) => return Err(e.into()),
        }
    }
    Err(ActiveError::Conflict)
}

/// Publishing is not switching: before a new version moves latest.txt, record what
/// is served now (latest.txt's version) in a new active.json, so running instances
/// and restarted ones keep serving it, and the first switch has a rollback target.
/// Does nothing when active.json exists or nothing was published yet. Returns the
/// version pinned, if any.
pub async fn pin_served(registry: &Registry) -> Result<Option<String>, ActiveError> {
    let Ok(current) = registry.latest().await else {
        return Ok(None);
    };
    let written = update(registry.store(), "pin", |cur| match cur {
        Some(_) => Err(()),
        None => Ok(ActiveState::new(&current)),
    })
    .await?;
    Ok(written.ok().map(|s| s.active_version))
}

/// The versions instances serve: `(primary, canary)` from active.json's `state`, else
/// `pinned` (`MODEL_VERSION`), else latest.txt's. The one place this is decided.
pub async fn resolve_served(
    registry: &Registry,
    state: Option<&ActiveState>,
    pinned: Option<&str>,
) -> Result<(String, Option<String>), RegistryError> {
    match (state, pinned) {
        (Some(s), _) => Ok(s.versions()),
        (None, Some(v)) => Ok((v.to_string(), None)),
        (None, None) => Ok((registry.latest().await?, None)),
    }
}

/// Why the served version could not be worked out.
#[derive(Debug, thiserror::Error)]
pub enum ServedError {
    /// active.json could not be read.
    #[error(transparent)]
    Active(#[from] ActiveError),
    /// There is no active.json and latest.txt could not be read.
    #[error("reading latest.txt: {0}")]
    Latest(#[from] RegistryError),
}

/// Reads active.json and resolves what is served ([`resolve_served`]): the state
/// (when active.json exists) and the primary version.
pub async fn served_version(
    registry: &Registry,
    pinned: Option<&str>,
) -> Result<(Option<ActiveState>, String), ServedError> {
    let state = read(registry.store()).await?.map(|(s, _)| s);
    let (primary, _) = resolve_served(registry, state.as_ref(), pinned).await?;
    Ok((state, primary))
}

/// Which variant a user gets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Assignment {
    /// Serve from the canary version.
    pub canary: bool,
    /// The `variant` field of the response.
    pub variant: Option<&'static str>,
    /// Also score the canary and compare (shadow).
    pub shadow: bool,
}

impl Rollout {
    /// A user's bucket in 0..10000: a stable hash of (salt, user id), so a user keeps
    /// their variant until the salt changes (unlike the Python `user_id % 100`).
    pub fn bucket(&self, user_id: i64) -> u32 {
        // FNV-1a over the salt, then mixed with the id.
        let salt = fnv1a(self.salt.as_bytes());
        (splitmix64(salt ^ splitmix64(user_id as u64)) % 10_000) as u32
    }

    /// The assignment of `user_id` under this rollout.
    pub fn assign(&self, user_id: i64) -> Assignment {
        let in_canary = f64::from(self.bucket(user_id)) < self.canary_percentage * 100.0;
        match self.strategy {
            Strategy::Fixed => Assignment {
                canary: false,
                variant: None,
                shadow: false,
            },
            Strategy::Canary => Assignment {
                canary: in_canary,
                variant: Some(if in_canary { "canary" } else { "primary" }),
                shadow: false,
            },
            Strategy::AbTest => Assignment {
                canary: in_canary,
                variant: Some(if in_canary { "variant_B" } else { "variant_A" }),
                shadow: false,
            },
            Strategy::Shadow => Assignment {
                canary: false,
                variant: None,
                shadow: true,
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn assignment_is_stable_and_proportional() {
        let r = Rollout {
            strategy: Strategy::Canary,
            canary_version: Some("v2".into()),
            canary_percentage: 10.0,
            salt: "s1".into(),
        };
        let canaries = (0..20_000).filter(|&u| r.assign(u).canary).count();
        assert!(
            (1_700..2_300).contains(&canaries),
            "{canaries} of 20000 at 10%"
        );
        assert_eq!(r.assign(42), r.assign(42));
        let resalted = Rollout {
            salt: "s2".into(),
            ..r.clone()
        };
        let moved = (0..1000)
            .filter(|&u| r.assign(u).canary != resalted.assign(u).canary)
            .count();
        assert!(moved > 50, "a new salt reshuffles users");
        let ab = Rollout {
            strategy: Strategy::AbTest,
            canary_percentage: 50.0,
            ..r.clone()
        };
        assert!(matches!(
            ab.assign(7).variant,
            Some("variant_A") | Some("variant_B")
        ));
        let full = Rollout {
            canary_percentage: 100.0,
            ..r.clone()
        };
        assert!((0..1000).all(|u| full.assign(u).canary));
        let none = Rollout {
            canary_percentage: 0.0,
            ..r
        };
        assert!((0..1000).all(|u| !none.assign(u).canary));
    }

    #[tokio::test]
    async fn concurrent_updates_are_all_recorded_in_order() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path().to_str().unwrap()).unwrap();
        let mut tasks = Vec::new();
        for i in 0..6 {
            let store = store.clone();
            tasks.push(tokio::spawn(async move {
                update(&store, "switch", |cur| {
                    let mut s = cur.cloned().unwrap_or_else(|| ActiveState::new("v0.1"));
                    s.previous_version = Some(s.active_version.clone());
                    s.active_version = format!("v1.{i}");
                    Ok::<_, ()>(s)
                })
                .await
            }));
        }
        for t in tasks {
            t.await.unwrap().unwrap().unwrap();
        }
        let (state, _) = read(&store).await.unwrap().unwrap();
        assert_eq!(state.revision, 6);
        let revisions: Vec<u64> = state.history.iter().map(|c| c.revision).collect();
        assert_eq!(
            revisions,
            vec![1, 2, 3, 4, 5, 6],
            "every write recorded, in order"
        );
        let mut versions: Vec<String> = state.history.iter().map(|c| c.version.clone()).collect();
        versions.sort();
        versions.dedup();
        assert_eq!(versions.len(), 6, "no update lost");
        assert_eq!(
            state.previous_version.as_deref(),
            Some(state.history[4].version.as_str())
        );
    }

    #[test]
    fn invalid_states_are_refused() {
        assert!(parse(br#"{"active_version":"../x"}"#).is_err());
        assert!(parse(br#"{"active_version":"v1","rollout":{"canary_percentage":101}}"#).is_err());
        assert!(parse(b"not json").is_err());
        let s = parse(br#"{"active_version":"v1"}"#).unwrap();
        assert_eq!(s.rollout.strategy, Strategy::Fixed);
    }
}
