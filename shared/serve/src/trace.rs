//! The last answers of this process, by request id, for `GET /trace/{request_id}`
//! (the Python service's route): every recommend request, refused and failed ones
//! included, with the status it got. Bounded and compact: a trace is a few plain
//! fields, the model's provenance is shared between the traces of one version, and
//! the oldest trace is dropped once [`CAPACITY`] are held.

use std::collections::{HashMap, VecDeque};
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

#[derive(Debug, Default)]
struct Inner {
    order: VecDeque<Arc<str>>,
    map: HashMap<Arc<str>, Trace>,
    /// The tags of the versions seen lately, so traces share them.
    tags: Vec<Arc<ModelTag>>,
}

/// A bounded map from request id to its trace (insertion order evicts).
#[derive(Debug, Default)]
pub struct TraceStore {
    inner: Mutex<Inner>,
}

impl TraceStore {
    /// The shared tag equal to `tag` (interned: at most a few versions are served).
    pub(crate) fn tag(&self, tag: ModelTag) -> Arc<ModelTag> {
        let Ok(mut g) = self.inner.lock() else {
            return Arc::new(tag);
        };
        if let Some(t) = g.tags.iter().find(|t| ***t == tag) {
            return t.clone();
        }
        let t = Arc::new(tag);
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
        if let Some(old) = inner.map.get_mut(request_id) {
            *old = trace;
            return;
        }
        let key: Arc<str> = Arc::from(request_id);
        inner.map.insert(key.clone(), trace);
        inner.order.push_back(key);
        while inner.order.len() > CAPACITY {
            if let Some(old) = inner.order.pop_front() {
                inner.map.remove(&old);
            }
        }
    }

    /// The trace of a request id, if still held.
    pub(crate) fn get(&self, request_id: &str) -> Option<Trace> {
        self.inner.lock().ok()?.map.get(request_id).cloned()
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
        assert_eq!(s.inner.lock().unwrap().order.len(), CAPACITY);
    }

    #[test]
    fn tags_are_shared() {
        let s = TraceStore::default();
        let tag = || ModelTag {
            version: "v1".into(),
            model_name: "als".into(),
            git_sha: "abc".into(),
            data_snapshot_id: "d".into(),
        };
        assert!(Arc::ptr_eq(&s.tag(tag()), &s.tag(tag())));
    }
}
