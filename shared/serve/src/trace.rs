//! The last recommendation traces of this process, by request id, for
//! `GET /trace/{request_id}` (the Python service's route). Bounded: the oldest
//! trace is dropped once [`CAPACITY`] are held, so memory never grows with traffic.

use std::collections::{HashMap, VecDeque};
use std::sync::Mutex;

use serde_json::Value;

/// How many traces are kept.
pub const CAPACITY: usize = 10_000;

/// A bounded map from request id to its trace (insertion order evicts).
#[derive(Debug, Default)]
pub struct TraceStore {
    inner: Mutex<(VecDeque<String>, HashMap<String, Value>)>,
}

impl TraceStore {
    /// Records a trace; a repeated request id replaces the earlier one.
    pub fn insert(&self, request_id: &str, trace: Value) {
        let Ok(mut g) = self.inner.lock() else { return };
        let (order, map) = &mut *g;
        if map.insert(request_id.to_string(), trace).is_none() {
            order.push_back(request_id.to_string());
            while order.len() > CAPACITY {
                if let Some(old) = order.pop_front() {
                    map.remove(&old);
                }
            }
        }
    }

    /// The trace of a request id, if still held.
    pub fn get(&self, request_id: &str) -> Option<Value> {
        self.inner.lock().ok()?.1.get(request_id).cloned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bounded_oldest_first() {
        let s = TraceStore::default();
        for i in 0..CAPACITY + 5 {
            s.insert(&format!("r{i}"), Value::from(i));
        }
        assert_eq!(s.get("r0"), None);
        assert_eq!(s.get("r4"), None);
        assert_eq!(s.get("r5"), Some(Value::from(5)));
        s.insert("r5", Value::from("again"));
        assert_eq!(s.get("r5"), Some(Value::from("again")));
        assert_eq!(s.inner.lock().unwrap().0.len(), CAPACITY);
    }
}
