//! ISO 8601 / epoch times: accepted text starts with a real calendar date.
#![no_main]
use libfuzzer_sys::fuzz_target;
use recs_core::time;

fuzz_target!(|data: &[u8]| {
    let Ok(s) = std::str::from_utf8(data) else { return };
    let _ = time::parse_date(s);
    if let Some(ms) = time::parse_time(s) {
        let t = s.trim();
        if t.parse::<f64>().is_err() {
            let day = time::parse_date(&t[..10]).expect("an accepted ISO time has a valid date");
            assert!((ms - day * 86_400_000).abs() <= 2 * 86_400_000, "{s:?} -> {ms}");
        }
    }
});
