//! Rating files in every format: parsed, or refused naming a line.
#![no_main]
use libfuzzer_sys::fuzz_target;
use recs_train::ratings::{parse_ratings, Format, RatingsError};

fuzz_target!(|data: &[u8]| {
    let Some((&kind, bytes)) = data.split_first() else { return };
    let formats = [Format::Auto, Format::Ml100k, Format::Ml1m, Format::MovielensCsv, Format::Csv, Format::Tsv];
    let format = formats[usize::from(kind) % formats.len()];
    match parse_ratings("fuzz", bytes, format, kind & 0x80 != 0) {
        Ok(r) => assert!(r.rows.iter().all(|x| x.user >= 0 && x.item >= 0)),
        Err(RatingsError::Malformed { line, .. }) => assert!(line >= 1),
        Err(e) => panic!("unexpected error {e}"),
    }
});
