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
        #[cfg(any(test, feature = "test-hooks"))]
        hooks::run(&store.location());
        match store.put_if(ACTIVE_KEY, bytes, cond).await {
            Ok(_) => return Ok(Ok(next)),
            Err(StoreError::Conflict(_)) => continue,
            Err(e) => return Err(e.into()),
        }
    }
    Err(ActiveError::Conflict)
}

/// Deterministic conflict tests: a hook that runs between `update`'s read of
/// active.json and its conditional write, so a test can slip a competing write in
/// there instead of hoping a race interleaves. Compiled only for tests (this crate's,
/// or with the `test-hooks` feature for other crates' tests).
#[cfg(any(test, feature = "test-hooks"))]
#[doc(hidden)]
pub mod hooks {
    use std::sync::Mutex;

    type Hook = Box<dyn FnMut() + Send>;
    static HOOKS: Mutex<Vec<(String, Hook)>> = Mutex::new(Vec::new());

    /// Runs `hook` before every conditional write of active.json in the store at
    /// `location` ([`crate::Store::location`]), until [`clear`].
    pub fn before_conditional_put(location: &str, hook: impl FnMut() + Send + 'static) {
        let mut hooks = HOOKS.lock().unwrap_or_else(|e| e.into_inner());
        hooks.push((location.to_string(), Box::new(hook)));
    }

    /// Removes the hooks of `location`.
    pub fn clear(location: &str) {
        let mut hooks = HOOKS.lock().unwrap_or_else(|e| e.into_inner());
        hooks.retain(|(l, _)| l != location);
    }

    pub(crate) fn run(location: &str) {
        let mut hooks = HOOKS.lock().unwrap_or_else(|e| e.into_inner());
        for (l, hook) in hooks.iter_mut() {
            if l == location {
                hook();
            }
        }
    }
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
        // The share is a binomial draw: n = 20000, p = 0.1, within 4.5 standard
        // deviations of n p (a 9 % or 11 % split fails).
        let (n, p) = (20_000.0f64, 0.10f64);
        let canaries = (0..20_000).filter(|&u| r.assign(u).canary).count() as f64;
        let sd = (n * p * (1.0 - p)).sqrt();
        assert!(
            (canaries - n * p).abs() <= 4.5 * sd,
            "{canaries} of 20000 at 10% (allowed {} +- {})",
            n * p,
            4.5 * sd
        );
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

    /// Buckets pinned to values computed outside this crate (a Python transcription
    /// of splitmix64 and FNV-1a: bucket = splitmix64(fnv1a(salt) ^ splitmix64(user))
    /// mod 10000), so a change to the hash, the mixing or the modulus is caught,
    /// and every release assigns a user to the same variant.
    #[test]
    fn buckets_are_pinned_for_fixed_salt_and_user() {
        let cases: &[(&str, &[(i64, u32)])] = &[
            (
                "movie-recs",
                &[
                    (0, 5413),
                    (1, 8399),
                    (7, 4543),
                    (42, 9154),
                    (1000, 317),
                    (-1, 1681),
                    (1 << 62, 2620),
                ],
            ),
            (
                "s1",
                &[
                    (0, 4362),
                    (1, 2478),
                    (7, 4192),
                    (42, 1686),
                    (1000, 8307),
                    (-1, 3138),
                    (1 << 62, 5074),
                ],
            ),
            (
                "s2",
                &[
                    (0, 6052),
                    (1, 185),
                    (7, 8594),
                    (42, 6811),
                    (1000, 8579),
                    (-1, 1217),
                    (1 << 62, 7055),
                ],
            ),
            (
                "",
                &[
                    (0, 4604),
                    (1, 4149),
                    (7, 8625),
                    (42, 3682),
                    (1000, 8708),
                    (-1, 3237),
                    (1 << 62, 4259),
                ],
            ),
        ];
        for (salt, users) in cases {
            let r = Rollout {
                strategy: Strategy::Canary,
                canary_version: Some("v2".into()),
                canary_percentage: 20.0,
                salt: salt.to_string(),
            };
            for &(user, bucket) in users.iter() {
                assert_eq!(r.bucket(user), bucket, "salt {salt:?}, user {user}");
                // 20 % = buckets 0..2000 go to the canary.
                assert_eq!(
                    r.assign(user).canary,
                    bucket < 2000,
                    "salt {salt:?}, user {user}"
                );
            }
        }
        // The default salt is part of the contract too.
        assert_eq!(Rollout::default().bucket(42), 9154);
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

    /// A folder store and a function that writes a competing active.json into it
    /// (a plain file write, as another instance's conditional PUT would land).
    fn store_with_rival() -> (tempfile::TempDir, Store, impl Fn(&str) + Send + Clone) {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path().to_str().unwrap()).unwrap();
        let path = dir.path().join(ACTIVE_KEY);
        let rival = move |version: &str| {
            let mut s = std::fs::read(&path)
                .ok()
                .and_then(|b| parse(&b).ok())
                .unwrap_or_else(|| ActiveState::new("v0.1"));
            s.revision += 1;
            s.active_version = version.to_string();
            s.history.push(Change {
                revision: s.revision,
                action: "rival".into(),
                version: version.into(),
                at: crate::time::now_rfc3339(),
            });
            std::fs::write(&path, serde_json::to_vec(&s).unwrap()).unwrap();
        };
        (dir, store, rival)
    }

    #[tokio::test]
    async fn a_write_between_read_and_put_is_retried_on_the_fresh_state() {
        let (_dir, store, rival) = store_with_rival();
        update(&store, "switch", |_| Ok::<_, ()>(ActiveState::new("v0.1")))
            .await
            .unwrap()
            .unwrap();
        // One competing write, slipped in before our first conditional put only.
        let fired = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let (f, r) = (fired.clone(), rival.clone());
        hooks::before_conditional_put(&store.location(), move || {
            if f.fetch_add(1, std::sync::atomic::Ordering::SeqCst) == 0 {
                r("v0.7");
            }
        });
        let mut seen = Vec::new();
        let written = update(&store, "switch", |cur| {
            let cur = cur.unwrap();
            seen.push(cur.active_version.clone());
            let mut s = cur.clone();
            s.previous_version = Some(s.active_version.clone());
            s.active_version = "v0.2".into();
            Ok::<_, ()>(s)
        })
        .await
        .unwrap()
        .unwrap();
        hooks::clear(&store.location());
        // The change was applied twice: first to v0.1, then to the rival's v0.7.
        assert_eq!(seen, ["v0.1", "v0.7"]);
        assert_eq!(fired.load(std::sync::atomic::Ordering::SeqCst), 2);
        let (state, _) = read(&store).await.unwrap().unwrap();
        assert_eq!(state, written);
        assert_eq!(state.active_version, "v0.2");
        assert_eq!(state.previous_version.as_deref(), Some("v0.7"));
        let actions: Vec<&str> = state.history.iter().map(|c| c.action.as_str()).collect();
        assert_eq!(actions, ["switch", "rival", "switch"]);
        assert_eq!(state.revision, 3);
    }

    #[tokio::test]
    async fn losing_every_attempt_is_a_conflict_and_writes_nothing() {
        let (_dir, store, rival) = store_with_rival();
        update(&store, "switch", |_| Ok::<_, ()>(ActiveState::new("v0.1")))
            .await
            .unwrap()
            .unwrap();
        let attempts = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let a = attempts.clone();
        hooks::before_conditional_put(&store.location(), move || {
            a.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            rival("v0.9");
        });
        let result = update(&store, "switch", |cur| {
            let mut s = cur.unwrap().clone();
            s.active_version = "v0.2".into();
            Ok::<_, ()>(s)
        })
        .await;
        hooks::clear(&store.location());
        assert!(matches!(result, Err(ActiveError::Conflict)), "{result:?}");
        assert_eq!(attempts.load(std::sync::atomic::Ordering::SeqCst), 8);
        // Only the rival's writes are there: none of ours.
        let (state, _) = read(&store).await.unwrap().unwrap();
        assert_eq!(state.active_version, "v0.9");
        assert!(state.history.iter().all(|c| c.version != "v0.2"));
        assert_eq!(state.revision, 1 + 8);
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
