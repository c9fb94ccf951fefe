//! The one (user, item, rating, time) record: a row of a ratings file, a rate or
//! watch event, a synthetic rating, a split pair.

/// One user-item interaction.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Interaction {
    /// Raw user id.
    pub user: i64,
    /// Raw movie id.
    pub item: i64,
    /// The rating; `None` for a watch event or a file without ratings.
    pub rating: Option<f32>,
    /// Epoch milliseconds, UTC; `None` when the source has no time.
    pub ts_ms: Option<i64>,
}

impl Interaction {
    /// Whether this is a positive interaction at threshold `min_rating` (no rating
    /// counts as an implicit positive).
    pub fn is_positive(&self, min_rating: f32) -> bool {
        self.rating.is_none_or(|r| r >= min_rating)
    }
}

/// Epoch seconds or milliseconds to milliseconds: MovieLens files carry seconds, and
/// values from 1e11 on are milliseconds already.
pub fn file_ts_ms(ts: i64) -> i64 {
    // unsigned_abs: i64::MIN.abs() overflows (a panic in debug builds).
    if ts.unsigned_abs() < 100_000_000_000 {
        ts * 1000
    } else {
        ts
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn extreme_timestamps_do_not_overflow() {
        // Regression: i64::MIN (a parseable timestamp field) panicked in `abs()`.
        assert_eq!(super::file_ts_ms(i64::MIN), i64::MIN);
        assert_eq!(super::file_ts_ms(i64::MAX), i64::MAX);
        assert_eq!(super::file_ts_ms(-5), -5_000);
        assert_eq!(super::file_ts_ms(99_999_999_999), 99_999_999_999_000);
    }
}
