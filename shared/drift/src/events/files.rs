//! One fetched event file: its kind by name, and its lines parsed.

use super::csv::{header_columns, parse_csv_fields, Columns, POSITIONAL};
use super::json::{parse_json_line, Line};
use super::{Event, ReadStats, Window};

/// How a file is read, from its name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum FileKind {
    JsonLines,
    Delimited(u8),
    Unsupported,
}

impl FileKind {
    pub(crate) fn of(name: &str) -> FileKind {
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
pub(crate) fn parse_file(
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

#[cfg(test)]
mod props {
    use super::*;
    use proptest::prelude::*;

    /// Events with times on whole seconds in 1970..2100 (what every schema can carry).
    fn events() -> impl Strategy<Value = Vec<Event>> {
        prop::collection::vec(
            (
                0i64..1 << 40,
                0i64..1 << 40,
                prop::option::of((1u8..=10).prop_map(|h| f32::from(h) / 2.0)),
                100_000_000i64..4_102_444_800,
            )
                .prop_map(|(user, item, rating, secs)| Event {
                    user,
                    item,
                    rating,
                    ts_ms: Some(secs * 1000),
                }),
            0..20,
        )
    }

    /// `YYYY-MM-DDTHH:MM:SSZ` of epoch seconds, computed with a civil-date loop here
    /// rather than recs_core's formatter.
    fn iso(secs: i64) -> String {
        let (mut days, rem) = (secs / 86_400, secs % 86_400);
        let mut year = 1970;
        loop {
            let len = if year % 4 == 0 && (year % 100 != 0 || year % 400 == 0) {
                366
            } else {
                365
            };
            if days < len {
                break;
            }
            days -= len;
            year += 1;
        }
        let leap = year % 4 == 0 && (year % 100 != 0 || year % 400 == 0);
        let months = [
            31,
            if leap { 29 } else { 28 },
            31,
            30,
            31,
            30,
            31,
            31,
            30,
            31,
            30,
            31,
        ];
        let mut month = 0;
        while days >= months[month] {
            days -= months[month];
            month += 1;
        }
        format!(
            "{year:04}-{:02}-{:02}T{:02}:{:02}:{:02}Z",
            month + 1,
            days + 1,
            rem / 3600,
            rem % 3600 / 60,
            rem % 60
        )
    }

    fn json_line(e: &Event, schema: u8) -> String {
        let rating = e
            .rating
            .map_or(String::new(), |r| format!(",\"rating\":{r}"));
        match schema {
            0 => format!(
                "{{\"user_id\":{},\"movie_id\":{}{rating},\"ts\":\"{}\"}}",
                e.user,
                e.item,
                iso(e.ts_ms.unwrap() / 1000)
            ),
            1 => format!(
                "{{\"user_id\":\"{}\",\"movie_id\":{}{rating},\"timestamp\":{}}}",
                e.user,
                e.item,
                e.ts_ms.unwrap() / 1000
            ),
            _ => format!(
                "{{\"timestamp\":{},\"movie_id\":{},\"user_id\":{}{rating}}}",
                e.ts_ms.unwrap(),
                e.item,
                e.user
            ),
        }
    }

    #[test]
    fn ratings_beyond_f32_are_malformed() {
        // Regression (property tests): 1e39 passed the f64 finiteness check and was
        // stored as an infinite f32 rating; the CSV reader already refused it.
        let line = r#"{"user_id":1,"movie_id":2,"rating":1e39,"ts":1795824000}"#;
        assert!(matches!(parse_json_line(line), Line::Malformed(_)));
        let (_, stats) = parse_file(
            "e.csv",
            b"1,2,1e39,1795824000\n",
            FileKind::Delimited(b','),
            Window::all(),
        );
        assert_eq!(stats.malformed, 1);
    }

    proptest! {
        #[test]
        fn json_lines_round_trip(events in events(), schema in 0u8..3) {
            let text: String = events.iter().map(|e| json_line(e, schema) + "\n").collect();
            let (back, stats) = parse_file("e.jsonl", text.as_bytes(), FileKind::JsonLines, Window::all());
            prop_assert_eq!(stats.malformed, 0, "{:?}\n{}", stats, text);
            prop_assert_eq!(back, events);
        }

        #[test]
        fn delimited_lines_round_trip(events in events(), tab in any::<bool>(), header in any::<bool>()) {
            let sep = if tab { '\t' } else { ',' };
            let mut text = if header { format!("user_id{sep}movie_id{sep}rating{sep}ts\n") } else { String::new() };
            for e in &events {
                let rating = e.rating.map_or(String::new(), |r| r.to_string());
                text.push_str(&format!("{}{sep}{}{sep}{rating}{sep}{}\n", e.user, e.item, iso(e.ts_ms.unwrap() / 1000)));
            }
            let (kind, name) = if tab { (FileKind::Delimited(b'\t'), "e.tsv") } else { (FileKind::Delimited(b','), "e.csv") };
            let (back, stats) = parse_file(name, text.as_bytes(), kind, Window::all());
            prop_assert_eq!(stats.malformed, 0, "{:?}\n{}", stats, text);
            prop_assert_eq!(back, events);
        }

        #[test]
        fn any_bytes_are_counted_never_panic(
            bytes in prop::collection::vec(any::<u8>(), 0..300),
            name in "(e.jsonl|e.csv|e.tsv|e.txt)",
        ) {
            let (events, stats) = parse_file(&name, &bytes, FileKind::of(&name), Window::all());
            // Every non-blank line is an event, ignored, out of window or malformed.
            prop_assert_eq!(
                stats.events + stats.ignored + stats.out_of_window + stats.malformed,
                stats.lines
            );
            prop_assert_eq!(events.len() as u64, stats.events);
        }

        #[test]
        fn json_shaped_lines_never_panic(
            line in "\\{(\"(user_id|movie_id|movie_ids|rating|ts|timestamp)\":(-?[0-9]{1,25}(\\.[0-9]{0,5})?(e[0-9]{1,3})?|\"[ -~]{0,25}\"|null|true|\\[[0-9,]{0,6}\\]|\\{\\}),?){0,6}\\}",
        ) {
            let _ = parse_json_line(&line);
        }
    }
}
