//! One JSON event line, in any of the Python system's four schemas.

use std::borrow::Cow;
use std::fmt;

use serde::de::{self, Deserializer, Visitor};
use serde::Deserialize;

use super::Event;
use recs_core::time::{epoch_ms, parse_time};

/// A JSON scalar, borrowed where possible (no `serde_json::Value` per line).
#[derive(Debug)]
enum Scalar<'a> {
    I(i64),
    F(f64),
    S(Cow<'a, str>),
    Other,
}

impl<'de: 'a, 'a> Deserialize<'de> for Scalar<'a> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Scalar<'de>;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a number or a string")
            }
            fn visit_i64<E>(self, v: i64) -> Result<Self::Value, E> {
                Ok(Scalar::I(v))
            }
            fn visit_u64<E>(self, v: u64) -> Result<Self::Value, E> {
                Ok(i64::try_from(v).map_or(Scalar::F(v as f64), Scalar::I))
            }
            fn visit_f64<E>(self, v: f64) -> Result<Self::Value, E> {
                Ok(Scalar::F(v))
            }
            fn visit_borrowed_str<E>(self, v: &'de str) -> Result<Self::Value, E> {
                Ok(Scalar::S(Cow::Borrowed(v)))
            }
            fn visit_str<E>(self, v: &str) -> Result<Self::Value, E> {
                Ok(Scalar::S(Cow::Owned(v.to_string())))
            }
            fn visit_bool<E>(self, _: bool) -> Result<Self::Value, E> {
                Ok(Scalar::Other)
            }
            fn visit_seq<A: de::SeqAccess<'de>>(self, mut a: A) -> Result<Self::Value, A::Error> {
                while a.next_element::<de::IgnoredAny>()?.is_some() {}
                Ok(Scalar::Other)
            }
            fn visit_map<A: de::MapAccess<'de>>(self, mut a: A) -> Result<Self::Value, A::Error> {
                while a.next_entry::<de::IgnoredAny, de::IgnoredAny>()?.is_some() {}
                Ok(Scalar::Other)
            }
        }
        d.deserialize_any(V)
    }
}

#[derive(Deserialize)]
struct RawEvent<'a> {
    #[serde(borrow, default, alias = "user", alias = "userId", alias = "userid")]
    user_id: Option<Scalar<'a>>,
    #[serde(
        borrow,
        default,
        alias = "movie",
        alias = "movieId",
        alias = "item",
        alias = "item_id",
        alias = "itemId"
    )]
    movie_id: Option<Scalar<'a>>,
    #[serde(borrow, default)]
    rating: Option<Scalar<'a>>,
    #[serde(borrow, default)]
    ts: Option<Scalar<'a>>,
    #[serde(borrow, default)]
    timestamp: Option<Scalar<'a>>,
    /// Present on recommendation responses.
    #[serde(default)]
    movie_ids: Option<de::IgnoredAny>,
}

fn id_of(s: &Scalar) -> Option<i64> {
    let v = match s {
        Scalar::I(v) => *v,
        Scalar::F(f) if f.fract() == 0.0 && f.abs() < 9e15 => *f as i64,
        Scalar::S(t) => t.trim().parse().ok()?,
        _ => return None,
    };
    (v >= 0).then_some(v)
}

fn rating_of(s: &Scalar) -> Result<Option<f32>, ()> {
    let v = match s {
        Scalar::I(v) => *v as f64,
        Scalar::F(f) => *f,
        Scalar::S(t) if t.trim().is_empty() => return Ok(None),
        Scalar::S(t) => t.trim().parse::<f64>().map_err(|_| ())?,
        Scalar::Other => return Err(()),
    };
    // Finite as the f32 it is stored as: 1e39 is finite in f64 but inf in f32.
    let r = v as f32;
    if r.is_finite() {
        Ok(Some(r))
    } else {
        Err(())
    }
}

fn time_of(s: &Scalar) -> Option<i64> {
    match s {
        Scalar::I(v) => epoch_ms(*v as f64),
        Scalar::F(f) => epoch_ms(*f),
        Scalar::S(t) => parse_time(t),
        Scalar::Other => None,
    }
}

/// What one line is.
#[derive(Debug, PartialEq)]
pub(crate) enum Line {
    Event(Event),
    /// Another event type (recommendation request or response).
    Ignored,
    Malformed(&'static str),
}

/// Parses one JSON line.
pub(crate) fn parse_json_line(line: &str) -> Line {
    let raw: RawEvent = match serde_json::from_str(line) {
        Ok(r) => r,
        Err(_) => return Line::Malformed("not a JSON object of the event schema"),
    };
    if raw.movie_ids.is_some() || (raw.movie_id.is_none() && raw.user_id.is_some()) {
        return Line::Ignored;
    }
    let (Some(u), Some(m)) = (&raw.user_id, &raw.movie_id) else {
        return Line::Malformed("no user_id or movie_id");
    };
    let (Some(user), Some(item)) = (id_of(u), id_of(m)) else {
        return Line::Malformed("user_id and movie_id must be non-negative integers");
    };
    let rating = match raw.rating.as_ref().map(rating_of) {
        None => None,
        Some(Ok(r)) => r,
        Some(Err(())) => return Line::Malformed("rating is not a finite number"),
    };
    let ts = match (&raw.ts, &raw.timestamp) {
        (Some(t), _) => time_of(t),
        (None, Some(t)) => time_of(t),
        (None, None) => return Line::Malformed("no ts or timestamp"),
    };
    match ts {
        Some(ts) => Line::Event(Event {
            user,
            item,
            rating,
            ts_ms: Some(ts),
        }),
        None => Line::Malformed("ts/timestamp is not epoch seconds/ms or ISO 8601"),
    }
}
