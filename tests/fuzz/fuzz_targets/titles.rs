//! Titles files (CSV with quotes, u.item, movies.dat): parsed or a typed error.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((&kind, bytes)) = data.split_first() else { return };
    let name = ["movie_titles.csv", "u.item", "movies.dat"][usize::from(kind) % 3];
    let _ = recs_core::Titles::parse(name, bytes.to_vec());
});
