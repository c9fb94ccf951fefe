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
