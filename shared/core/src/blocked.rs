//! Takedowns: the registry's blocked set (`blocked.json`, next to `active.json`),
//! movies no answer may contain whatever version is served. Written with the same
//! conditional writes as `active.json` (a concurrent writer is re-read and
//! re-applied, never overwritten), polled with it by every instance.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::store::{Precondition, Store, StoreError};

/// The blocked set's key in the registry.
pub const BLOCKED_KEY: &str = "blocked.json";

/// The most movie ids one block or unblock may name.
pub const MAX_PER_CHANGE: usize = 1000;

/// The most movies the set may hold (a bound on what every instance loads).
pub const MAX_BLOCKED: usize = 100_000;

/// The longest reason kept, in characters.
pub const MAX_REASON: usize = 500;

/// Conditional-write attempts before a change gives up.
const ATTEMPTS: usize = 8;

/// Why a blocked-set operation failed.
#[derive(Debug, thiserror::Error)]
pub enum BlockedError {
    /// The store could not read or write blocked.json.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// blocked.json is not valid JSON or fails the checks.
    #[error("blocked.json is invalid: {0}")]
    Invalid(String),
    /// The change asked for is not acceptable (no ids, too many, negative ids).
    #[error("{0}")]
    BadRequest(String),
    /// Every conditional write lost to a concurrent writer; nothing was written.
    #[error("blocked.json kept changing under {ATTEMPTS} attempts; nothing was written, retry")]
    Conflict,
}

/// Why one movie is blocked, and since when.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Entry {
    /// The operator's reason (may be empty).
    pub reason: String,
    /// When it was blocked (RFC 3339).
    pub at: String,
}

/// The blocked set as stored.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BlockedSet {
    /// Incremented by every write.
    pub revision: u64,
    /// When it was last written (RFC 3339; empty before the first write).
    #[serde(default)]
    pub updated_at: String,
    /// Blocked movie id -> why.
    pub movies: BTreeMap<i64, Entry>,
}

impl BlockedSet {
    /// The blocked movie ids, ascending.
    pub fn ids(&self) -> Vec<i64> {
        self.movies.keys().copied().collect()
    }

    fn check(&self) -> Result<(), String> {
        if let Some(id) = self.movies.keys().find(|&&id| id < 0) {
            return Err(format!("movie id {id} is negative"));
        }
        if self.movies.len() > MAX_BLOCKED {
            return Err(format!(
                "{} movies blocked; at most {MAX_BLOCKED} are supported",
                self.movies.len()
            ));
        }
        Ok(())
    }
}

/// What a block or unblock did.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Change {
    /// The set as written (or as found, when nothing changed).
    pub set: BlockedSet,
    /// The ids whose state changed.
    pub changed: Vec<i64>,
    /// The ids already in the asked state.
    pub unchanged: Vec<i64>,
}

/// Parses and checks `blocked.json`.
pub fn parse(bytes: &[u8]) -> Result<BlockedSet, BlockedError> {
    let set: BlockedSet =
        serde_json::from_slice(bytes).map_err(|e| BlockedError::Invalid(e.to_string()))?;
    set.check().map_err(BlockedError::Invalid)?;
    Ok(set)
}

/// Reads the blocked set and its ETag; `None` when none was ever written.
pub async fn read(store: &Store) -> Result<Option<(BlockedSet, String)>, BlockedError> {
    match store.get_object(BLOCKED_KEY, None).await {
        Ok(Some(obj)) => Ok(Some((parse(&obj.bytes)?, obj.etag))),
        Ok(None) => Err(BlockedError::Invalid(
            "unconditional GET answered 304".into(),
        )),
        Err(StoreError::NotFound(_)) => Ok(None),
        Err(e) => Err(e.into()),
    }
}

/// Reads the blocked set only if it changed since `etag`: `Ok(None)` = unchanged,
/// `Ok(Some(None))` = there is none.
pub async fn read_if_changed(
    store: &Store,
    etag: Option<&str>,
) -> Result<Option<Option<(BlockedSet, String)>>, BlockedError> {
    match store.get_object(BLOCKED_KEY, etag).await {
        Ok(None) => Ok(None),
        Ok(Some(obj)) => Ok(Some(Some((parse(&obj.bytes)?, obj.etag)))),
        Err(StoreError::NotFound(_)) => Ok(Some(None)),
        Err(e) => Err(e.into()),
    }
}

/// Checks the ids of one change: 1..=[`MAX_PER_CHANGE`], none negative. Repeats
/// are dropped; the result is ascending.
pub fn check_ids(ids: &[i64]) -> Result<Vec<i64>, BlockedError> {
    if ids.is_empty() {
        return Err(BlockedError::BadRequest("movie_ids lists no movie".into()));
    }
    if ids.len() > MAX_PER_CHANGE {
        return Err(BlockedError::BadRequest(format!(
            "movie_ids lists {} movies; at most {MAX_PER_CHANGE} per request",
            ids.len()
        )));
    }
    if let Some(id) = ids.iter().find(|&&id| id < 0) {
        return Err(BlockedError::BadRequest(format!(
            "movie_ids must be non-negative movie ids, got {id}"
        )));
    }
    let mut ids = ids.to_vec();
    ids.sort_unstable();
    ids.dedup();
    Ok(ids)
}

/// Blocks `ids` with `reason` (ids already blocked keep their first reason).
pub async fn block(store: &Store, ids: &[i64], reason: &str) -> Result<Change, BlockedError> {
    let ids = check_ids(ids)?;
    if reason.chars().count() > MAX_REASON {
        return Err(BlockedError::BadRequest(format!(
            "reason is longer than {MAX_REASON} characters"
        )));
    }
    update(store, &ids, |set, id, now| {
        if set.movies.contains_key(&id) {
            return false;
        }
        set.movies.insert(
            id,
            Entry {
                reason: reason.to_string(),
                at: now.to_string(),
            },
        );
        true
    })
    .await
}

/// Unblocks `ids`.
pub async fn unblock(store: &Store, ids: &[i64]) -> Result<Change, BlockedError> {
    let ids = check_ids(ids)?;
    update(store, &ids, |set, id, _| set.movies.remove(&id).is_some()).await
}

/// Applies `apply` to each id on the current set and writes the result
/// conditionally, re-reading on a concurrent write. Writes nothing when no id changes.
async fn update(
    store: &Store,
    ids: &[i64],
    mut apply: impl FnMut(&mut BlockedSet, i64, &str) -> bool,
) -> Result<Change, BlockedError> {
    for _ in 0..ATTEMPTS {
        let current = read(store).await?;
        let mut set = current.as_ref().map(|(s, _)| s.clone()).unwrap_or_default();
        let now = crate::time::now_rfc3339();
        let (changed, unchanged): (Vec<i64>, Vec<i64>) =
            ids.iter().partition(|&&id| apply(&mut set, id, &now));
        if changed.is_empty() {
            return Ok(Change {
                set,
                changed,
                unchanged,
            });
        }
        set.check().map_err(BlockedError::BadRequest)?;
        set.revision += 1;
        set.updated_at = now;
        let bytes = serde_json::to_vec_pretty(&set)
            .map_err(|e| BlockedError::Invalid(format!("cannot serialise: {e}")))?;
        let cond = match &current {
            Some((_, etag)) => Precondition::Matches(etag),
            None => Precondition::Absent,
        };
        #[cfg(any(test, feature = "test-hooks"))]
        crate::active::hooks::run(&store.location());
        match store.put_if(BLOCKED_KEY, bytes, cond).await {
            Ok(_) => {
                return Ok(Change {
                    set,
                    changed,
                    unchanged,
                })
            }
            Err(StoreError::Conflict(_)) => continue,
            Err(e) => return Err(e.into()),
        }
    }
    Err(BlockedError::Conflict)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn store() -> (tempfile::TempDir, Store) {
        let dir = tempfile::tempdir().unwrap();
        let s = Store::open(dir.path().to_str().unwrap()).unwrap();
        (dir, s)
    }

    #[tokio::test]
    async fn block_and_unblock_round_trip_through_the_store() {
        let (_d, s) = store();
        assert!(read(&s).await.unwrap().is_none());
        let c = block(&s, &[5, 3, 5], "legal").await.unwrap();
        assert_eq!(
            (c.changed.clone(), c.unchanged.clone()),
            (vec![3, 5], vec![])
        );
        assert_eq!(c.set.revision, 1);
        let c = block(&s, &[3, 9], "other").await.unwrap();
        assert_eq!((c.changed.clone(), c.unchanged.clone()), (vec![9], vec![3]));
        let (set, _) = read(&s).await.unwrap().unwrap();
        assert_eq!(set.ids(), [3, 5, 9]);
        assert_eq!(set.movies[&3].reason, "legal", "the first reason stays");
        assert_eq!(set.revision, 2);
        // Nothing to change: nothing written.
        let c = unblock(&s, &[4]).await.unwrap();
        assert_eq!(c.unchanged, [4]);
        assert_eq!(read(&s).await.unwrap().unwrap().0.revision, 2);
        let c = unblock(&s, &[3, 5]).await.unwrap();
        assert_eq!(c.changed, [3, 5]);
        assert_eq!(read(&s).await.unwrap().unwrap().0.ids(), [9]);
    }

    #[tokio::test]
    async fn bad_changes_are_refused_and_write_nothing() {
        let (d, s) = store();
        for (ids, reason) in [
            (vec![], ""),
            ((0..1001).collect::<Vec<i64>>(), ""),
            (vec![1, -2], ""),
            (vec![1], &*"x".repeat(501)),
        ] {
            let err = block(&s, &ids, reason).await.unwrap_err();
            assert!(matches!(err, BlockedError::BadRequest(_)), "{err}");
        }
        assert!(!d.path().join(BLOCKED_KEY).exists());
        assert!(block(&s, &(0..1000).collect::<Vec<i64>>(), "")
            .await
            .is_ok());
    }

    #[tokio::test]
    async fn a_concurrent_write_is_reapplied_not_lost() {
        let (_d, s) = store();
        block(&s, &[1], "first").await.unwrap();
        let other = s.clone();
        let mut once = true;
        crate::active::hooks::before_conditional_put(&s.location(), move || {
            if std::mem::take(&mut once) {
                // Another writer blocks 2 between our read and our write.
                let bytes = serde_json::to_vec(&serde_json::json!({
                    "revision": 2, "updated_at": "", "movies": {
                        "1": {"reason": "first", "at": ""}, "2": {"reason": "theirs", "at": ""}}
                }))
                .unwrap();
                let root = other.local_root().unwrap().join(BLOCKED_KEY);
                std::fs::write(root, bytes).unwrap();
            }
        });
        let c = block(&s, &[3], "ours").await.unwrap();
        crate::active::hooks::clear(&s.location());
        assert_eq!(c.set.ids(), [1, 2, 3]);
        assert_eq!(c.set.revision, 3);
        assert_eq!(read(&s).await.unwrap().unwrap().0.ids(), [1, 2, 3]);
    }

    #[test]
    fn crafted_files_are_refused() {
        assert!(parse(b"{").is_err());
        assert!(parse(br#"{"revision": 1, "movies": {"-1": {"reason": "", "at": ""}}}"#).is_err());
        assert!(parse(br#"{"revision": 1, "movies": {"x": {"reason": "", "at": ""}}}"#).is_err());
        assert!(parse(br#"{"revision": 1, "movies": {}, "extra": 1}"#).is_err());
        let ok = parse(br#"{"revision": 4, "movies": {"7": {"reason": "r", "at": "t"}}}"#).unwrap();
        assert_eq!(ok.ids(), [7]);
    }
}
