//! Interaction events: what the drift job reads (format in docs/DRIFT.md).
//!
//! Layout under the `EVENTS` location (a folder or `s3://bucket/prefix`):
//!
//! ```text
//! <kind>/<YYYY-MM-DD>/<any sub-folders>/<file>.jsonl|.ndjson|.json|.csv|.tsv
//! <YYYY-MM-DD>/<file>...                      (no kind level)
//! ```
//!
//! `<kind>` is any name (`rate`, `watch`, `myteam.rate`); date folders may also be
//! written `dt=YYYY-MM-DD` or `date=YYYY-MM-DD`. Only the date folders that can hold
//! the window (the day before its start through its end day) are listed, and every
//! event's own time decides whether it is in the window.
//!
//! One event per line. JSON lines accept the Python system's four schemas
//! (seed-system.md, section 8): `user_id` (or `user`, `userId`), `movie_id` (or
//! `item`, `item_id`, `movieId`), optional `rating` (integer, float or numeric string;
//! absent or null = a watch event), and the time as `ts` (epoch milliseconds; a value
//! below 1e11 is taken as seconds) or `timestamp` (ISO 8601 / RFC 3339, or epoch
//! numbers as for `ts`). Lines of other event types (`reco_requests`,
//! `reco_responses`: no `movie_id`, or a `movie_ids` list) are counted as ignored.
//! Anything else that does not parse is counted as malformed and skipped, never fatal.

use std::borrow::Cow;
use std::fmt;

use serde::de::{self, Deserializer, Visitor};
use serde::Deserialize;

use crate::store::{Store, StoreError};

/// One interaction in the window.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Event {
    pub user: i64,
    pub item: i64,
    /// `None` for a watch event.
    pub rating: Option<f32>,
    /// Epoch milliseconds, UTC.
    pub ts_ms: i64,
}

/// How many lines and files were read, skipped and why.
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct ReadStats {
    /// Event files read.
    pub files: u64,
    /// Non-blank lines read (CSV headers excluded).
    pub lines: u64,
    /// Interaction events inside the window.
    pub events: u64,
    /// Interaction events outside the window (in a listed date folder).
    pub out_of_window: u64,
    /// Lines that did not parse (counted and skipped).
    pub malformed: u64,
    /// Lines of other event types (recommendation requests and responses).
    pub ignored: u64,
    /// Files skipped because their format is not read (.parquet, .gz, ...).
    pub unsupported_files: u64,
    /// Bytes read.
    pub bytes: u64,
    /// The first few malformed lines as `file:line: reason`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub examples: Vec<String>,
}

const MAX_EXAMPLES: usize = 5;

impl ReadStats {
    pub fn merge(&mut self, o: ReadStats) {
        self.files += o.files;
        self.lines += o.lines;
        self.events += o.events;
        self.out_of_window += o.out_of_window;
        self.malformed += o.malformed;
        self.ignored += o.ignored;
        self.unsupported_files += o.unsupported_files;
        self.bytes += o.bytes;
        for e in o.examples {
            if self.examples.len() < MAX_EXAMPLES {
                self.examples.push(e);
            }
        }
    }

    fn malformed(&mut self, file: &str, line: usize, reason: impl fmt::Display) {
        self.malformed += 1;
        if self.examples.len() < MAX_EXAMPLES {
            self.examples.push(format!("{file}:{line}: {reason}"));
        }
    }
}

/// The window `[start_ms, end_ms)`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Window {
    pub start_ms: i64,
    pub end_ms: i64,
}

impl Window {
    /// The `seconds` before `end_ms`.
    pub fn ending(end_ms: i64, seconds: u64) -> Window {
        Window {
            start_ms: end_ms - (seconds as i64) * 1000,
            end_ms,
        }
    }

    #[inline]
    pub fn contains(&self, ts_ms: i64) -> bool {
        ts_ms >= self.start_ms && ts_ms < self.end_ms
    }

    /// Every instant (no filtering), for reading whole files.
    pub fn all() -> Window {
        Window {
            start_ms: i64::MIN,
            end_ms: i64::MAX,
        }
    }
}

// ---------------------------------------------------------------------------- time

/// Days since 1970-01-01 of a proleptic Gregorian date (Howard Hinnant's algorithm).
pub fn days_from_civil(y: i64, m: u32, d: u32) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y.rem_euclid(400);
    let m = m as i64;
    let doy = (153 * (if m > 2 { m - 3 } else { m + 9 }) + 2) / 5 + d as i64 - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// `YYYY-MM-DD` of a day number.
pub fn date_of_day(day: i64) -> String {
    crate::timefmt::rfc3339((day.max(0) as u64) * 86_400)[..10].to_string()
}

fn digits(s: &[u8]) -> Option<u32> {
    if s.is_empty() || !s.iter().all(u8::is_ascii_digit) {
        return None;
    }
    s.iter().try_fold(0u32, |a, &b| {
        a.checked_mul(10)?.checked_add((b - b'0') as u32)
    })
}

/// `YYYY-MM-DD` -> day number.
pub fn parse_date(s: &str) -> Option<i64> {
    let b = s.as_bytes();
    if b.len() != 10 || b[4] != b'-' || b[7] != b'-' {
        return None;
    }
    let (y, m, d) = (digits(&b[..4])?, digits(&b[5..7])?, digits(&b[8..10])?);
    if !(1..=12).contains(&m) || !(1..=31).contains(&d) {
        return None;
    }
    Some(days_from_civil(y as i64, m, d))
}

/// ISO 8601 / RFC 3339 to epoch milliseconds: `YYYY-MM-DD`, optionally `T` or a space
/// and `HH:MM[:SS[.fraction]]`, optionally `Z` or `+HH:MM` / `-HH:MM` / `+HHMM` / `+HH`.
/// No offset means UTC (the Python producers wrote naive UTC times).
pub fn parse_iso(s: &str) -> Option<i64> {
    let s = s.trim();
    let day = parse_date(s.get(..10)?)?;
    let mut ms = day * 86_400_000;
    let rest = &s[10..];
    if rest.is_empty() {
        return Some(ms);
    }
    let rest = rest.strip_prefix(['T', 't', ' '])?;
    let b = rest.as_bytes();
    if b.len() < 5 || b[2] != b':' {
        return None;
    }
    let (h, mi) = (digits(&b[..2])?, digits(&b[3..5])?);
    let mut i = 5;
    let mut sec = 0;
    if b.get(i) == Some(&b':') {
        sec = digits(b.get(i + 1..i + 3)?)?;
        i += 3;
        if matches!(b.get(i), Some(b'.') | Some(b',')) {
            let start = i + 1;
            let mut end = start;
            while end < b.len() && b[end].is_ascii_digit() {
                end += 1;
            }
            if end == start {
                return None;
            }
            let frac = &rest[start..end.min(start + 3)];
            let scale = 10i64.pow(3 - frac.len() as u32);
            ms += frac.parse::<i64>().ok()? * scale;
            i = end;
        }
    }
    if h > 23 || mi > 59 || sec > 60 {
        return None;
    }
    ms += (h as i64 * 3600 + mi as i64 * 60 + sec as i64) * 1000;
    let tz = &rest[i..];
    let offset_min = match tz.as_bytes() {
        [] | [b'Z'] | [b'z'] => 0,
        [sign @ (b'+' | b'-'), r @ ..] => {
            let (oh, om) = match r {
                [a, b] => (digits(&[*a, *b])?, 0),
                [a, b, b':', c, d] | [a, b, c, d] => (digits(&[*a, *b])?, digits(&[*c, *d])?),
                _ => return None,
            };
            let m = (oh * 60 + om) as i64;
            if *sign == b'+' {
                m
            } else {
                -m
            }
        }
        _ => return None,
    };
    Some(ms - offset_min * 60_000)
}

/// Epoch seconds or milliseconds (below 1e11 = seconds) to milliseconds.
pub fn epoch_ms(v: f64) -> Option<i64> {
    if !v.is_finite() || v <= 0.0 {
        return None;
    }
    let ms = if v < 1e11 { v * 1000.0 } else { v };
    (ms < 1e15).then_some(ms as i64)
}

/// A time given as epoch seconds/milliseconds or ISO text.
pub fn parse_time(s: &str) -> Option<i64> {
    let s = s.trim();
    match s.parse::<f64>() {
        Ok(v) => epoch_ms(v),
        Err(_) => parse_iso(s),
    }
}

// ---------------------------------------------------------------------------- JSON

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
    if v.is_finite() {
        Ok(Some(v as f32))
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
pub enum Line {
    Event(Event),
    /// Another event type (recommendation request or response).
    Ignored,
    Malformed(&'static str),
}

/// Parses one JSON line.
pub fn parse_json_line(line: &str) -> Line {
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
        Some(ts_ms) => Line::Event(Event {
            user,
            item,
            rating,
            ts_ms,
        }),
        None => Line::Malformed("ts/timestamp is not epoch seconds/ms or ISO 8601"),
    }
}

// ---------------------------------------------------------------------------- CSV

/// Column positions of a CSV/TSV file.
#[derive(Debug, Clone, Copy)]
struct Columns {
    user: usize,
    item: usize,
    rating: Option<usize>,
    ts: Option<usize>,
    width: usize,
}

/// Without a header: `user,item,rating,timestamp`.
const POSITIONAL: Columns = Columns {
    user: 0,
    item: 1,
    rating: Some(2),
    ts: Some(3),
    width: 4,
};

fn header_columns(fields: &[&str]) -> Option<Columns> {
    let find = |names: &[&str]| {
        fields.iter().position(|f| {
            let f = f.trim().trim_matches('"').to_ascii_lowercase();
            names.contains(&f.as_str())
        })
    };
    let user = find(&["user_id", "user", "userid"])?;
    let item = find(&["movie_id", "movie", "movieid", "item", "item_id", "itemid"])?;
    Some(Columns {
        user,
        item,
        rating: find(&["rating"]),
        ts: find(&["ts", "timestamp", "time"]),
        width: fields.len(),
    })
}

fn parse_csv_fields(fields: &[&str], c: &Columns) -> Line {
    let get = |i: usize| fields.get(i).map(|f| f.trim().trim_matches('"'));
    let id = |i| {
        get(i)
            .and_then(|f| f.parse::<i64>().ok())
            .filter(|&v| v >= 0)
    };
    let (Some(user), Some(item)) = (id(c.user), id(c.item)) else {
        return Line::Malformed("user and movie must be non-negative integers");
    };
    let rating = match c.rating.and_then(get) {
        None | Some("") => None,
        Some(r) => match r.parse::<f32>() {
            Ok(v) if v.is_finite() => Some(v),
            _ => return Line::Malformed("rating is not a finite number"),
        },
    };
    match c.ts.and_then(get).and_then(parse_time) {
        Some(ts_ms) => Line::Event(Event {
            user,
            item,
            rating,
            ts_ms,
        }),
        None => Line::Malformed("no valid timestamp column"),
    }
}

// ---------------------------------------------------------------------------- files

/// How a file is read, from its name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FileKind {
    JsonLines,
    Delimited(u8),
    Unsupported,
}

impl FileKind {
    pub fn of(name: &str) -> FileKind {
        let lower = name.to_ascii_lowercase();
        let ext = lower.rsplit_once('.').map_or("", |(_, e)| e);
        match ext {
            "jsonl" | "ndjson" | "json" => FileKind::JsonLines,
            "csv" => FileKind::Delimited(b','),
            "tsv" | "data" => FileKind::Delimited(b'\t'),
            _ => FileKind::Unsupported,
        }
    }
}

/// Parses one file's bytes, keeping the events inside `window`.
pub fn parse_file(
    name: &str,
    bytes: &[u8],
    kind: FileKind,
    window: Window,
) -> (Vec<Event>, ReadStats) {
    let mut stats = ReadStats {
        files: 1,
        bytes: bytes.len() as u64,
        ..ReadStats::default()
    };
    let mut events = Vec::with_capacity(bytes.len() / 64);
    let text = String::from_utf8_lossy(bytes);
    let mut columns: Option<Columns> = None;
    let mut keep = |line: Line, no: usize, stats: &mut ReadStats| match line {
        Line::Event(e) if window.contains(e.ts_ms) => {
            stats.events += 1;
            events.push(e);
        }
        Line::Event(_) => stats.out_of_window += 1,
        Line::Ignored => stats.ignored += 1,
        Line::Malformed(reason) => stats.malformed(name, no, reason),
    };
    for (i, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() {
            continue;
        }
        match kind {
            FileKind::JsonLines => {
                stats.lines += 1;
                keep(parse_json_line(line), i + 1, &mut stats);
            }
            FileKind::Delimited(sep) => {
                let fields: Vec<&str> = line.split(sep as char).collect();
                if columns.is_none() {
                    if let Some(h) = header_columns(&fields) {
                        columns = Some(h);
                        continue;
                    }
                    columns = Some(POSITIONAL);
                }
                stats.lines += 1;
                let c = columns.expect("set above");
                if fields.len() < c.width.min(2) {
                    stats.malformed(name, i + 1, "too few columns");
                    continue;
                }
                keep(parse_csv_fields(&fields, &c), i + 1, &mut stats);
            }
            FileKind::Unsupported => {}
        }
    }
    if kind == FileKind::Unsupported {
        stats.files = 0;
        stats.unsupported_files = 1;
        stats.bytes = 0;
    }
    (events, stats)
}

// ---------------------------------------------------------------------------- listing

/// The day of a date folder name (`2026-11-27`, `dt=2026-11-27`, `date=2026-11-27`).
pub fn partition_day(name: &str) -> Option<i64> {
    let d = name
        .strip_prefix("dt=")
        .or_else(|| name.strip_prefix("date="))
        .unwrap_or(name);
    parse_date(d)
}

/// The keys (relative to the events root) of the files that can hold `window`'s
/// events: the date folders from the day before the window starts through the day
/// it ends, at the top level or one `<kind>/` level down.
pub async fn list_window_files(store: &Store, window: Window) -> Result<Vec<String>, StoreError> {
    if let Some(root) = store.local_root() {
        if root.is_file() {
            return Ok(vec![String::new()]);
        }
    }
    let first = window.start_ms.div_euclid(86_400_000) - 1;
    let last = (window.end_ms - 1).div_euclid(86_400_000);
    let mut keys = Vec::new();
    let mut kinds = Vec::new();
    for name in store.list_dirs().await? {
        match partition_day(&name) {
            Some(day) if (first..=last).contains(&day) => {
                for k in store.list(&name).await? {
                    keys.push(format!("{name}/{k}"));
                }
            }
            Some(_) => {}
            None => kinds.push(name),
        }
    }
    if last - first > 400 {
        // A window longer than a year: list everything under each kind once.
        for kind in kinds {
            for k in store.list(&kind).await? {
                let day = k.split('/').next().and_then(partition_day);
                if day.is_some_and(|d| (first..=last).contains(&d)) {
                    keys.push(format!("{kind}/{k}"));
                }
            }
        }
    } else {
        let mut tasks = tokio::task::JoinSet::new();
        for kind in &kinds {
            for day in first..=last {
                let date = date_of_day(day);
                for dir in [date.clone(), format!("dt={date}"), format!("date={date}")] {
                    let store = store.clone();
                    let prefix = format!("{kind}/{dir}");
                    tasks.spawn(async move {
                        store.list(&prefix).await.map(|ks| {
                            ks.into_iter()
                                .map(|k| format!("{prefix}/{k}"))
                                .collect::<Vec<_>>()
                        })
                    });
                }
            }
        }
        while let Some(r) = tasks.join_next().await {
            keys.extend(r.expect("list task panicked")?);
        }
    }
    keys.sort();
    Ok(keys)
}

/// Files fetched concurrently, at most this many at once.
const FETCH_CONCURRENCY: usize = 16;

/// Reads every event of `window` under `store`: lists the date folders, fetches the
/// files concurrently and parses them in parallel. Unreadable storage is an error;
/// bad lines and unsupported files are only counted.
pub async fn read_window(
    store: &Store,
    window: Window,
) -> Result<(Vec<Event>, ReadStats), StoreError> {
    let keys = list_window_files(store, window).await?;
    let mut stats = ReadStats::default();
    let mut wanted = Vec::new();
    for k in keys {
        let name = if k.is_empty() {
            store.location()
        } else {
            k.clone()
        };
        match FileKind::of(&name) {
            FileKind::Unsupported => {
                stats.unsupported_files += 1;
                if stats.unsupported_files <= 3 {
                    tracing::warn!(file = %name, "drift: skipping a file of an unsupported format (read: .jsonl .ndjson .json .csv .tsv)");
                }
            }
            kind => wanted.push((k, name, kind)),
        }
    }
    let mut files: Vec<(String, FileKind, Vec<u8>)> = Vec::with_capacity(wanted.len());
    let mut tasks = tokio::task::JoinSet::new();
    let mut queue = wanted.into_iter();
    loop {
        while tasks.len() < FETCH_CONCURRENCY {
            let Some((key, name, kind)) = queue.next() else {
                break;
            };
            let store = store.clone();
            tasks.spawn(async move {
                let bytes =
                    match &store {
                        Store::Local(root) if key.is_empty() => tokio::fs::read(root)
                            .await
                            .map_err(|e| StoreError::Unavailable {
                                location: root.display().to_string(),
                                detail: e.to_string(),
                            }),
                        _ => store.get(&key).await,
                    };
                bytes.map(|b| (name, kind, b))
            });
        }
        match tasks.join_next().await {
            Some(r) => files.push(r.expect("fetch task panicked")?),
            None => break,
        }
    }
    files.sort_by(|a, b| a.0.cmp(&b.0));
    let parsed = parse_all(&files, window);
    let mut events = Vec::with_capacity(parsed.iter().map(|(e, _)| e.len()).sum());
    for (e, s) in parsed {
        events.extend(e);
        stats.merge(s);
    }
    Ok((events, stats))
}

/// Parses fetched files in parallel (rayon), in order.
pub fn parse_all(
    files: &[(String, FileKind, Vec<u8>)],
    window: Window,
) -> Vec<(Vec<Event>, ReadStats)> {
    use rayon::prelude::*;
    files
        .par_iter()
        .map(|(name, kind, bytes)| parse_file(name, bytes, *kind, window))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ev(line: &str) -> Event {
        match parse_json_line(line) {
            Line::Event(e) => e,
            other => panic!("{line}: {other:?}"),
        }
    }

    #[test]
    fn iso_and_epoch_times() {
        let t = 1_795_824_000_000; // 2026-11-28T00:00:00Z
        assert_eq!(parse_iso("2026-11-28T00:00:00Z"), Some(t));
        assert_eq!(parse_iso("2026-11-28"), Some(t));
        assert_eq!(parse_iso("2026-11-28 01:02:03"), Some(t + 3_723_000));
        assert_eq!(parse_iso("2026-11-28T01:02:03.5Z"), Some(t + 3_723_500));
        assert_eq!(
            parse_iso("2026-11-28T01:02:03.123456+00:00"),
            Some(t + 3_723_123)
        );
        assert_eq!(parse_iso("2026-11-28T02:00:00+02:00"), Some(t));
        assert_eq!(parse_iso("2026-11-27T22:30:00-0130"), Some(t));
        assert_eq!(parse_iso("2026-11-28T00:00"), Some(t));
        for bad in [
            "2026-13-01",
            "yesterday",
            "2026-11-28T25:00:00Z",
            "2026-11-28X",
            "2026-11-28T00:00:00+2",
        ] {
            assert_eq!(parse_iso(bad), None, "{bad}");
        }
        assert_eq!(parse_time("1795824000"), Some(t));
        assert_eq!(parse_time("1795824000000"), Some(t));
        assert_eq!(epoch_ms(-1.0), None);
        assert_eq!(days_from_civil(1970, 1, 1), 0);
        assert_eq!(date_of_day(days_from_civil(2024, 2, 29)), "2024-02-29");
        assert_eq!(partition_day("dt=2026-11-28"), Some(t / 86_400_000));
    }

    #[test]
    fn the_four_python_schemas_parse() {
        let t = 1_795_824_000_000;
        // 1. .avsc: ts in ms, integer rating; watch with minute.
        assert_eq!(
            ev(r#"{"ts":1795824000000,"user_id":1,"movie_id":2,"rating":4}"#),
            Event {
                user: 1,
                item: 2,
                rating: Some(4.0),
                ts_ms: t
            }
        );
        assert_eq!(
            ev(r#"{"ts":1795824000000,"user_id":1,"movie_id":2,"minute":17}"#).rating,
            None
        );
        // 2. schemas.py: ISO timestamp, float rating; a null timestamp is malformed.
        assert_eq!(
            ev(r#"{"user_id":1,"movie_id":2,"rating":3.5,"timestamp":"2026-11-28T00:00:00Z"}"#)
                .rating,
            Some(3.5)
        );
        assert_eq!(
            parse_json_line(r#"{"user_id":1,"movie_id":2,"timestamp":null}"#),
            Line::Malformed("no ts or timestamp")
        );
        // 3. ingestor: ts as seconds, float rating; naive datetime with microseconds.
        assert_eq!(
            ev(r#"{"user_id":1,"movie_id":2,"rating":4.0,"ts":1795824000}"#).ts_ms,
            t
        );
        assert_eq!(
            ev(r#"{"user_id":1,"movie_id":2,"timestamp":"2026-11-28T00:00:00.000001"}"#).ts_ms,
            t
        );
        // 4. producers: evidence rate events; probe and reco lines are ignored.
        assert_eq!(
            ev(r#"{"user_id":"7","movie_id":8.0,"rating":"5","ts":1795824000000}"#).user,
            7
        );
        assert_eq!(
            parse_json_line(r#"{"ts":1795824000000,"user_id":1}"#),
            Line::Ignored
        );
        assert_eq!(
            parse_json_line(r#"{"user_id":1,"movie_ids":[1,2],"model_version":"v1","ts":1}"#),
            Line::Ignored
        );
        for bad in [
            "not json",
            "[1,2]",
            r#"{"movie_id":2,"ts":1795824000000}"#,
            r#"{"user_id":-1,"movie_id":2,"ts":1795824000000}"#,
            r#"{"user_id":1.5,"movie_id":2,"ts":1795824000000}"#,
            r#"{"user_id":1,"movie_id":2,"rating":"good","ts":1795824000000}"#,
            r#"{"user_id":1,"movie_id":2,"ts":"soon"}"#,
            r#"{"user_id":1,"movie_id":2}"#,
            r#"{"user_id":1,"movie_id":2,"ts":1795824000000"#,
        ] {
            assert!(matches!(parse_json_line(bad), Line::Malformed(_)), "{bad}");
        }
    }

    #[test]
    fn csv_with_and_without_headers_and_bad_lines_counted() {
        let w = Window::all();
        let csv = "userId,movieId,rating,timestamp\n1,2,4,1795824000\n1,3,,1795824000\nx,2,3,1\n\n2,5,4.5,2026-11-28T00:00:00Z\n";
        let (events, stats) = parse_file("a.csv", csv.as_bytes(), FileKind::of("a.csv"), w);
        assert_eq!(events.len(), 3);
        assert_eq!(events[1].rating, None);
        assert_eq!((stats.lines, stats.malformed, stats.events), (4, 1, 3));
        assert_eq!(
            stats.examples,
            vec!["a.csv:4: user and movie must be non-negative integers"]
        );
        // ml-100k u.data: tab-separated, no header.
        let tsv = "196\t242\t3\t881250949\n186\t302\t3\t891717742\n";
        let (events, _) = parse_file("u.data", tsv.as_bytes(), FileKind::of("u.data"), w);
        assert_eq!(
            events[0],
            Event {
                user: 196,
                item: 242,
                rating: Some(3.0),
                ts_ms: 881_250_949_000
            }
        );
        // Window filtering counts the rest.
        let win = Window {
            start_ms: 885_000_000_000,
            end_ms: 900_000_000_000,
        };
        let (events, stats) = parse_file("u.data", tsv.as_bytes(), FileKind::Delimited(b'\t'), win);
        assert_eq!((events.len(), stats.out_of_window), (1, 1));
        assert_eq!(FileKind::of("part-1.parquet"), FileKind::Unsupported);
        assert_eq!(FileKind::of("x.JSONL"), FileKind::JsonLines);
    }
}
