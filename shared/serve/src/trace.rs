//! The last answers of this process, by request id, for `GET /trace/{request_id}`
//! (the Python service's route): every recommend request, refused and failed ones
//! included, with the status it got. Bounded and compact: a trace is a few plain
//! fields, the model's provenance is shared between the traces of one version, and
//! the oldest trace is dropped once [`CAPACITY`] are held.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use serde_json::{json, Value};

/// How many traces are kept.
pub const CAPACITY: usize = 10_000;

/// Which model answered: shared by every trace of one version.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct ModelTag {
    pub(crate) version: String,
    pub(crate) model_name: String,
    pub(crate) git_sha: String,
    pub(crate) data_snapshot_id: String,
}

/// One request's trace.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Trace {
    pub(crate) user_id: Option<i64>,
    pub(crate) k: u32,
    /// `None` when no model answered (a refused or failed request).
    pub(crate) model: Option<Arc<ModelTag>>,
    pub(crate) latency_ms: u64,
    pub(crate) latency_ms_precise: f64,
    pub(crate) status: u16,
    pub(crate) ts: u64,
    pub(crate) movie_ids: Box<[i64]>,
    pub(crate) variant: Option<&'static str>,
    pub(crate) fallback: Option<&'static str>,
}

impl Trace {
    /// The `trace` object of `GET /trace/{request_id}`.
    pub(crate) fn to_json(&self) -> Value {
        // No model answered: empty strings, as the exposure log records it.
        let tag = |f: fn(&ModelTag) -> &str| self.model.as_deref().map_or("", f);
        json!({
            "user_id": self.user_id,
            "k": self.k,
            "model_version": tag(|t| &t.version),
            "model_name": tag(|t| &t.model_name),
            "git_sha": tag(|t| &t.git_sha),
            "data_snapshot_id": tag(|t| &t.data_snapshot_id),
            "latency_ms": self.latency_ms,
            "latency_ms_precise": self.latency_ms_precise,
            "status": self.status,
            "ts": self.ts,
            "movie_ids": self.movie_ids,
            "variant": self.variant,
            "fallback": self.fallback,
        })
    }
}

/// A ring of at most [`CAPACITY`] traces, each with its request id, and an index
/// from the id's hash to its slot: one table of small entries rather than a map of
/// traces (whose buckets, sized to a power of two, would hold every trace inline).
#[derive(Debug, Default)]
struct Inner {
    slots: Vec<(Box<str>, Trace)>,
    /// The slot the next new trace replaces once the ring is full (the oldest).
    next: usize,
    index: HashMap<u64, u32>,
    /// The tags of the versions seen lately, so traces share them.
    tags: Vec<Arc<ModelTag>>,
    hasher: std::collections::hash_map::RandomState,
}

impl Inner {
    fn key(&self, request_id: &str) -> u64 {
        std::hash::BuildHasher::hash_one(&self.hasher, request_id)
    }

    fn slot_of(&self, request_id: &str) -> Option<usize> {
        let slot = *self.index.get(&self.key(request_id))? as usize;
        (&*self.slots.get(slot)?.0 == request_id).then_some(slot)
    }
}

/// A bounded map from request id to its trace (insertion order evicts).
#[derive(Debug, Default)]
pub struct TraceStore {
    inner: Mutex<Inner>,
}

impl TraceStore {
    /// The shared tag of these fields (interned: at most a few versions are served,
    /// and a request that finds its version's tag allocates nothing).
    pub(crate) fn tag(
        &self,
        version: &str,
        model_name: &str,
        git_sha: &str,
        data_snapshot_id: &str,
    ) -> Arc<ModelTag> {
        let make = || ModelTag {
            version: version.to_string(),
            model_name: model_name.to_string(),
            git_sha: git_sha.to_string(),
            data_snapshot_id: data_snapshot_id.to_string(),
        };
        let Ok(mut g) = self.inner.lock() else {
            return Arc::new(make());
        };
        if let Some(t) = g.tags.iter().find(|t| {
            t.version == version
                && t.model_name == model_name
                && t.git_sha == git_sha
                && t.data_snapshot_id == data_snapshot_id
        }) {
            return t.clone();
        }
        let t = Arc::new(make());
        g.tags.push(t.clone());
        if g.tags.len() > 8 {
            g.tags.remove(0);
        }
        t
    }

    /// Records a trace; a repeated request id replaces the earlier one.
    pub(crate) fn insert(&self, request_id: &str, trace: Trace) {
        let Ok(mut g) = self.inner.lock() else { return };
        let inner = &mut *g;
        if let Some(slot) = inner.slot_of(request_id) {
            inner.slots[slot].1 = trace;
            return;
        }
        let entry = (Box::from(request_id), trace);
        let slot = if inner.slots.len() < CAPACITY {
            inner.slots.push(entry);
            inner.slots.len() - 1
        } else {
            let slot = inner.next;
            inner.next = (slot + 1) % CAPACITY;
            let old = inner.key(&inner.slots[slot].0);
            if inner.index.get(&old) == Some(&(slot as u32)) {
                inner.index.remove(&old);
            }
            inner.slots[slot] = entry;
            slot
        };
        let key = inner.key(request_id);
        inner.index.insert(key, slot as u32);
    }

    /// The trace of a request id, if still held.
    pub(crate) fn get(&self, request_id: &str) -> Option<Trace> {
        let g = self.inner.lock().ok()?;
        let slot = g.slot_of(request_id)?;
        Some(g.slots[slot].1.clone())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn trace(status: u16) -> Trace {
        Trace {
            user_id: Some(1),
            k: 10,
            model: None,
            latency_ms: 1,
            latency_ms_precise: 0.5,
            status,
            ts: 0,
            movie_ids: Box::new([]),
            variant: None,
            fallback: None,
        }
    }

    #[test]
    fn bounded_oldest_first() {
        let s = TraceStore::default();
        for i in 0..CAPACITY + 5 {
            s.insert(&format!("r{i}"), trace(i as u16));
        }
        assert_eq!(s.get("r0"), None);
        assert_eq!(s.get("r4"), None);
        assert_eq!(s.get("r5").map(|t| t.status), Some(5));
        s.insert("r5", trace(500));
        assert_eq!(s.get("r5").map(|t| t.status), Some(500));
        let g = s.inner.lock().unwrap();
        assert_eq!((g.slots.len(), g.index.len()), (CAPACITY, CAPACITY));
    }

    #[test]
    fn tags_are_shared() {
        let s = TraceStore::default();
        let a = s.tag("v1", "als", "abc", "d");
        assert!(Arc::ptr_eq(&a, &s.tag("v1", "als", "abc", "d")));
        assert!(!Arc::ptr_eq(&a, &s.tag("v2", "als", "abc", "d")));
    }
}
