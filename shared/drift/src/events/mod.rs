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

mod csv;
mod files;
mod json;
mod listing;

use files::{parse_file, FileKind};
#[cfg(test)]
pub(crate) use json::{parse_json_line, Line};
pub use listing::list_window_files;

use recs_core::{Store, StoreError};

/// Fuzzing entry point (tests/fuzz): parses one event file's bytes as the drift job
/// would, `name` choosing the format by its extension, every instant in the window.
/// Not part of the API.
#[doc(hidden)]
pub fn fuzz_parse_file(name: &str, bytes: &[u8]) -> (Vec<Event>, ReadStats) {
    let window = Window {
        start_ms: i64::MIN,
        end_ms: i64::MAX,
    };
    parse_file(name, bytes, FileKind::of(name), window)
}

/// One rate or watch event: the shared interaction type. Its time is always set (an
/// event line without a readable time is counted as malformed), and a watch event has
/// no rating.
pub type Event = recs_core::Interaction;

/// How many lines and files were read, skipped and why.
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct ReadStats {
    /// Event files read.
    pub files: u64,
    /// Non-blank lines read (CSV headers excluded).
    pub lines: u64,
    /// Interaction events inside the window.
    events: u64,
    /// Interaction events outside the window (in a listed date folder).
    out_of_window: u64,
    /// Lines that did not parse (counted and skipped).
    pub malformed: u64,
    /// Lines of other event types (recommendation requests and responses).
    pub ignored: u64,
    /// Files skipped because their format is not read (.parquet, .gz, ...).
    pub unsupported_files: u64,
    /// Bytes read.
    bytes: u64,
    /// The first few malformed lines as `file:line: reason`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub examples: Vec<String>,
}

const MAX_EXAMPLES: usize = 5;

impl ReadStats {
    fn merge(&mut self, o: ReadStats) {
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

    fn malformed(&mut self, file: &str, line: usize, reason: impl std::fmt::Display) {
        self.malformed += 1;
        if self.examples.len() < MAX_EXAMPLES {
            self.examples.push(format!("{file}:{line}: {reason}"));
        }
    }
}

/// The window `[start_ms, end_ms)`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Window {
    pub(crate) start_ms: i64,
    pub(crate) end_ms: i64,
}

impl Window {
    /// The `seconds` before `end_ms`.
    pub fn ending(end_ms: i64, seconds: u64) -> Window {
        Window {
            // Saturating: a window longer than the epoch range starts at its beginning.
            start_ms: end_ms.saturating_sub(
                i64::try_from(seconds)
                    .unwrap_or(i64::MAX)
                    .saturating_mul(1000),
            ),
            end_ms,
        }
    }

    #[inline]
    pub(crate) fn contains(&self, ts_ms: Option<i64>) -> bool {
        ts_ms.is_some_and(|t| t >= self.start_ms && t < self.end_ms)
    }

    /// Every instant (no filtering), for reading whole files in tests.
    #[cfg(test)]
    fn all() -> Window {
        Window {
            start_ms: i64::MIN,
            end_ms: i64::MAX,
        }
    }
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
fn parse_all(
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
    use super::listing::partition_day;
    use super::*;

    #[test]
    fn partition_folders_name_their_day() {
        let day = recs_core::time::parse_date("2026-11-28").unwrap();
        assert_eq!(partition_day("dt=2026-11-28"), Some(day));
        assert_eq!(partition_day("date=2026-11-28"), Some(day));
        assert_eq!(partition_day("2026-11-28"), Some(day));
        assert_eq!(partition_day("2026-13-01"), None);
    }

    fn ev(line: &str) -> Event {
        match parse_json_line(line) {
            Line::Event(e) => e,
            other => panic!("{line}: {other:?}"),
        }
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
                ts_ms: Some(t)
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
            ev(r#"{"user_id":1,"movie_id":2,"rating":4.0,"ts":1795824000}"#)
                .ts_ms
                .unwrap(),
            t
        );
        assert_eq!(
            ev(r#"{"user_id":1,"movie_id":2,"timestamp":"2026-11-28T00:00:00.000001"}"#)
                .ts_ms
                .unwrap(),
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
                ts_ms: Some(881_250_949_000)
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
