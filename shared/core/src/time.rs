//! The one clock and the one calendar: now, RFC 3339 text, and the ISO 8601 / epoch
//! times the Python producers wrote, without a date-time dependency.

use std::time::{SystemTime, UNIX_EPOCH};

/// Milliseconds since the Unix epoch (0 if the system clock is before it).
pub fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

/// Seconds since the Unix epoch.
fn now_secs() -> u64 {
    (now_ms() / 1000) as u64
}

/// Now as `YYYY-MM-DDTHH:MM:SSZ`.
pub fn now_rfc3339() -> String {
    rfc3339(now_secs())
}

/// `YYYY-MM-DDTHH:MM:SSZ` for seconds since the Unix epoch.
pub fn rfc3339(secs: u64) -> String {
    let days = (secs / 86_400) as i64;
    let rem = secs % 86_400;
    let (y, m, d) = civil_from_days(days);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

/// Howard Hinnant's days-to-civil algorithm (proleptic Gregorian calendar).
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y, m, d)
}

/// Days since 1970-01-01 of a proleptic Gregorian date (Howard Hinnant's algorithm).
fn days_from_civil(y: i64, m: u32, d: u32) -> i64 {
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
    // Saturating: a day number from hostile input must not overflow.
    rfc3339((day.max(0) as u64).saturating_mul(86_400))[..10].to_string()
}

fn digits(s: &[u8]) -> Option<u32> {
    if s.is_empty() || !s.iter().all(u8::is_ascii_digit) {
        return None;
    }
    s.iter().try_fold(0u32, |a, &b| {
        a.checked_mul(10)?.checked_add((b - b'0') as u32)
    })
}

/// Days in month `m` (1..=12) of year `y`, proleptic Gregorian.
fn days_in_month(y: i64, m: u32) -> u32 {
    match m {
        2 if y % 4 == 0 && (y % 100 != 0 || y % 400 == 0) => 29,
        2 => 28,
        4 | 6 | 9 | 11 => 30,
        _ => 31,
    }
}

/// `YYYY-MM-DD` -> day number.
pub fn parse_date(s: &str) -> Option<i64> {
    let b = s.as_bytes();
    if b.len() != 10 || b[4] != b'-' || b[7] != b'-' {
        return None;
    }
    let (y, m, d) = (digits(&b[..4])?, digits(&b[5..7])?, digits(&b[8..10])?);
    // The day must exist in that month: 2026-02-31 is refused, not read as March 3.
    if !(1..=12).contains(&m) || !(1..=days_in_month(i64::from(y), m)).contains(&d) {
        return None;
    }
    Some(days_from_civil(y as i64, m, d))
}

/// ISO 8601 / RFC 3339 to epoch milliseconds: `YYYY-MM-DD`, optionally `T` or a space
/// and `HH:MM[:SS[.fraction]]`, optionally `Z` or `+HH:MM` / `-HH:MM` / `+HHMM` / `+HH`.
/// No offset means UTC (the Python producers wrote naive UTC times).
fn parse_iso(s: &str) -> Option<i64> {
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
            // RFC 3339 offsets are at most 23:59; +99:99 is garbage, not an offset.
            if oh > 23 || om > 59 {
                return None;
            }
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn known_instants() {
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00Z");
        assert_eq!(rfc3339(951_782_400), "2000-02-29T00:00:00Z");
        assert_eq!(rfc3339(1_795_824_000 + 3_661), "2026-11-28T01:01:01Z");
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
    }

    #[test]
    fn impossible_dates_and_offsets_are_refused() {
        // Found by the property tests below: these were accepted (2026-02-31 read as
        // 2026-03-03; +99:99 as an offset of 100 h 39 min).
        for bad in [
            "2026-02-31",
            "2026-02-29",
            "2026-04-31",
            "1900-02-29",
            "2026-11-28T00:00:00+99:99",
            "2026-11-28T00:00:00+24:00",
            "2026-11-28T00:00:00-00:60",
        ] {
            assert_eq!(parse_iso(bad), None, "{bad}");
        }
        // Independently known: 2024 and 2000 are leap years.
        assert_eq!(parse_iso("2024-02-29"), Some(1_709_164_800_000));
        assert_eq!(parse_iso("2000-02-29"), Some(951_782_400_000));
        assert_eq!(
            parse_iso("2026-11-28T00:00:00+23:59"),
            Some(1_795_824_000_000 - 86_340_000)
        );
        assert_eq!(date_of_day(i64::MAX).len(), 10);
    }

    mod props {
        use super::super::*;
        use proptest::prelude::*;

        proptest! {
            #[test]
            fn rfc3339_round_trips(secs in 0u64..253_402_300_800) {
                // Years 1970..=9999: what rfc3339 writes, parse_iso reads back.
                let text = rfc3339(secs);
                prop_assert_eq!(parse_iso(&text), Some(secs as i64 * 1000));
                prop_assert_eq!(parse_time(&text), Some(secs as i64 * 1000));
                let day = (secs / 86_400) as i64;
                prop_assert_eq!(parse_date(&date_of_day(day)), Some(day));
            }

            #[test]
            fn offsets_shift_by_their_value(
                secs in 0u64..4_102_444_800,
                oh in 0u32..24,
                om in 0u32..60,
                minus in any::<bool>(),
            ) {
                let base = rfc3339(secs);
                let sign = if minus { '-' } else { '+' };
                let text = format!("{}{sign}{oh:02}:{om:02}", &base[..19]);
                let offset = i64::from(oh * 60 + om) * 60_000;
                let expect = secs as i64 * 1000 - if minus { -offset } else { offset };
                prop_assert_eq!(parse_iso(&text), Some(expect));
            }

            #[test]
            fn any_text_never_panics(s in "\\PC{0,40}") {
                let _ = parse_time(&s);
                let _ = parse_date(&s);
                if let Some(ms) = parse_iso(&s) {
                    // Whatever is accepted starts with a real calendar date.
                    prop_assert!(parse_date(&s.trim()[..10]).is_some(), "{s:?} -> {ms}");
                }
            }

            #[test]
            fn iso_shaped_text_never_panics(
                s in "[0-9]{4}-[0-9]{2}-[0-9]{2}([Tt ][0-9]{2}:[0-9]{2}(:[0-9]{2}([.,][0-9]{0,9})?)?)?([Zz]|[+-][0-9]{2}(:?[0-9]{2})?|[ -~]{0,3})?",
            ) {
                if let Some(ms) = parse_iso(&s) {
                    let day = parse_date(&s[..10]).expect("accepted text has a valid date");
                    // Within a day (plus the largest offset) of its date.
                    prop_assert!((ms - day * 86_400_000).abs() <= 2 * 86_400_000, "{s:?}");
                }
            }
        }
    }
}
