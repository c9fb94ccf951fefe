//! Drift event files (JSON lines, CSV, TSV): every line counted, never a panic.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((&kind, bytes)) = data.split_first() else { return };
    let name = ["e.jsonl", "e.csv", "e.tsv", "u.data"][usize::from(kind) % 4];
    let (events, stats) = recs_drift::fuzz_parse_file(name, bytes);
    assert!(events.len() as u64 <= stats.lines);
    assert!(stats.malformed + stats.ignored <= stats.lines);
});
