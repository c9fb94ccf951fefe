//! Request-time catalog filters (`genres`, `exclude_genres`, `year_min`,
//! `year_max`) and the set of item rows that pass one, per model.
//!
//! A filter is checked against the catalog ([`Titles`]) once per model, through a
//! per-row table of genre bits and years built on first use ([`ItemAttributes`]);
//! a request then costs one pass over that table, no hash lookups.

use std::sync::{Arc, Mutex, OnceLock};

use crate::Titles;

/// Filters whose rows one model keeps ([`RowCache`]); the oldest goes first.
pub const CACHED_FILTERS: usize = 64;

/// One model's per-row genre and year table (built on first use from the process's
/// catalog) and the rows of its [`CACHED_FILTERS`] most recent filters, so a
/// repeated filter costs a lookup, not a pass over the catalogue.
#[derive(Debug, Default)]
pub struct RowCache {
    attributes: OnceLock<ItemAttributes>,
    allowed: Mutex<Vec<(ItemFilter, Arc<Allowed>)>>,
}

impl RowCache {
    /// The rows that pass `filter`; `attributes` builds the table the first time.
    pub fn allowed(
        &self,
        filter: &ItemFilter,
        attributes: impl FnOnce() -> ItemAttributes,
    ) -> Arc<Allowed> {
        let attrs = self.attributes.get_or_init(attributes);
        let lock = || self.allowed.lock().unwrap_or_else(|p| p.into_inner());
        if let Some((_, rows)) = lock().iter().find(|(f, _)| f == filter) {
            return rows.clone();
        }
        let rows = Arc::new(filter.allowed(attrs));
        let mut cache = lock();
        if cache.len() >= CACHED_FILTERS {
            cache.remove(0);
        }
        cache.push((*filter, rows.clone()));
        rows
    }
}

/// Why a filter cannot be built.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum FilterError {
    /// A genre the catalog does not name.
    #[error("unknown genre {name:?} in {param}; the catalog's genres are: {known}")]
    UnknownGenre {
        /// `genres` or `exclude_genres`.
        param: &'static str,
        /// The name given.
        name: String,
        /// The catalog's genres, comma-separated (`none` when it names none).
        known: String,
    },
    /// `year_min` is after `year_max`: nothing could pass.
    #[error("year_min {min} is greater than year_max {max}")]
    YearRange {
        /// `year_min`.
        min: i32,
        /// `year_max`.
        max: i32,
    },
}

/// Which movies may be returned: any of `genres` (when given), none of
/// `exclude_genres`, a year within the bounds (a movie without a year fails any
/// year bound). Built by [`ItemFilter::new`] against one catalog.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct ItemFilter {
    any_of: u64,
    none_of: u64,
    year_min: Option<i32>,
    year_max: Option<i32>,
}

impl ItemFilter {
    /// A filter over `catalog`'s genres; `None` when it would let every movie pass
    /// (nothing given). Genre names are exact (case-sensitive), as the catalog has them.
    pub fn new<S: AsRef<str>>(
        catalog: &Titles,
        genres: &[S],
        exclude_genres: &[S],
        year_min: Option<i32>,
        year_max: Option<i32>,
    ) -> Result<Option<ItemFilter>, FilterError> {
        if let (Some(min), Some(max)) = (year_min, year_max) {
            if min > max {
                return Err(FilterError::YearRange { min, max });
            }
        }
        let bits = |param: &'static str, names: &[S]| -> Result<u64, FilterError> {
            names.iter().try_fold(0u64, |acc, name| {
                let name = name.as_ref();
                catalog
                    .genre_bit(name)
                    .map(|b| acc | b)
                    .ok_or_else(|| FilterError::UnknownGenre {
                        param,
                        name: name.to_string(),
                        known: if catalog.genres().is_empty() {
                            "none".to_string()
                        } else {
                            catalog.genres().join(", ")
                        },
                    })
            })
        };
        let filter = ItemFilter {
            any_of: bits("genres", genres)?,
            none_of: bits("exclude_genres", exclude_genres)?,
            year_min,
            year_max,
        };
        Ok((filter != ItemFilter::default()).then_some(filter))
    }

    /// Whether a movie with these genre bits and year passes.
    pub fn passes(&self, genres: u64, year: Option<i32>) -> bool {
        (self.any_of == 0 || genres & self.any_of != 0)
            && genres & self.none_of == 0
            && self.year_min.is_none_or(|m| year.is_some_and(|y| y >= m))
            && self.year_max.is_none_or(|m| year.is_some_and(|y| y <= m))
    }

    /// The rows of `attrs` that pass.
    pub fn allowed(&self, attrs: &ItemAttributes) -> Allowed {
        let mut bits = vec![0u64; attrs.genres.len().div_ceil(64)];
        let mut count = 0;
        for (row, (&g, &y)) in attrs.genres.iter().zip(&attrs.years).enumerate() {
            let year = (y != NO_YEAR).then_some(y);
            if self.passes(g, year) {
                bits[row / 64] |= 1 << (row % 64);
                count += 1;
            }
        }
        Allowed {
            bits,
            count,
            rows: attrs.genres.len(),
        }
    }
}

const NO_YEAR: i32 = i32::MIN;

/// Each item row's genre bits and year, from the catalog, in a model's row order.
#[derive(Debug, Clone, Default)]
pub struct ItemAttributes {
    genres: Vec<u64>,
    years: Vec<i32>,
}

impl ItemAttributes {
    /// The attributes of `items` (movie ids in row order) in `catalog`.
    pub fn new(catalog: &Titles, items: &[i64]) -> Self {
        let (genres, years) = items
            .iter()
            .map(|&id| {
                let (g, y) = catalog.attributes(id);
                (g, y.unwrap_or(NO_YEAR))
            })
            .unzip();
        ItemAttributes { genres, years }
    }
}

/// The item rows a filter lets through: a bitmap, with its count.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Allowed {
    bits: Vec<u64>,
    count: usize,
    rows: usize,
}

impl Allowed {
    /// Every one of `rows` rows (no filter).
    pub fn all(rows: usize) -> Self {
        let mut bits = vec![u64::MAX; rows.div_ceil(64)];
        if !rows.is_multiple_of(64) {
            if let Some(last) = bits.last_mut() {
                *last = (1u64 << (rows % 64)) - 1;
            }
        }
        Allowed {
            bits,
            count: rows,
            rows,
        }
    }

    /// Just these rows (each < `rows`; repeats count once).
    pub fn from_rows(rows: usize, which: impl IntoIterator<Item = u32>) -> Self {
        let mut bits = vec![0u64; rows.div_ceil(64)];
        for r in which {
            let r = r as usize;
            if r < rows {
                bits[r / 64] |= 1 << (r % 64);
            }
        }
        let count = bits.iter().map(|w| w.count_ones() as usize).sum();
        Allowed { bits, count, rows }
    }

    /// Whether `row` passes.
    #[inline]
    pub fn contains(&self, row: u32) -> bool {
        let r = row as usize;
        self.bits
            .get(r / 64)
            .is_some_and(|w| w & (1 << (r % 64)) != 0)
    }

    /// Sets `scores[j]` to negative infinity for each row `first + j` that does not
    /// pass (rows past the end do not pass), with bit arithmetic rather than a branch
    /// per row. `first` must be a multiple of 64.
    pub fn refuse(&self, first: usize, scores: &mut [f32]) {
        assert!(
            first.is_multiple_of(64),
            "refuse: first row {first} is not a multiple of 64"
        );
        const NEG_INF: u32 = 0xff80_0000;
        let words = self.bits.get(first / 64..).unwrap_or(&[]);
        for (i, chunk) in scores.chunks_mut(64).enumerate() {
            let w = words.get(i).copied().unwrap_or(0);
            for (j, s) in chunk.iter_mut().enumerate() {
                // All ones when the row passes, else zero.
                let keep = 0u32.wrapping_sub(((w >> j) & 1) as u32);
                *s = f32::from_bits((s.to_bits() & keep) | (NEG_INF & !keep));
            }
        }
    }

    /// How many rows pass.
    pub fn count(&self) -> usize {
        self.count
    }

    /// The rows of the model this was built for.
    pub fn rows(&self) -> usize {
        self.rows
    }

    /// The passing rows, ascending.
    pub fn iter(&self) -> impl Iterator<Item = u32> + '_ {
        self.bits.iter().enumerate().flat_map(|(w, &word)| {
            let mut word = word;
            std::iter::from_fn(move || {
                if word == 0 {
                    return None;
                }
                let b = word.trailing_zeros();
                word &= word - 1;
                Some((w * 64) as u32 + b)
            })
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn catalog() -> Titles {
        Titles::parse(
            "movie_titles.csv",
            b"movie_id,title,genres\n1,A (1990),Comedy|Drama\n2,B (2000),Action\n3,C,Drama\n4,D (2010),(no genres listed)\n"
                .to_vec(),
        )
        .unwrap()
    }

    fn passing(f: &ItemFilter, c: &Titles) -> Vec<i64> {
        let ids = [1, 2, 3, 4, 5];
        let allowed = f.allowed(&ItemAttributes::new(c, &ids));
        allowed.iter().map(|r| ids[r as usize]).collect()
    }

    #[test]
    fn each_part_of_a_filter_selects_what_it_says() {
        let c = catalog();
        let none: [&str; 0] = [];
        let f = |g: &[&str], x: &[&str], lo, hi| ItemFilter::new(&c, g, x, lo, hi).unwrap();
        assert_eq!(f(&none, &none, None, None), None);
        assert_eq!(
            passing(&f(&["Drama"], &none, None, None).unwrap(), &c),
            [1, 3]
        );
        assert_eq!(
            passing(&f(&["Drama", "Action"], &none, None, None).unwrap(), &c),
            [1, 2, 3]
        );
        // Movies 4 and 5 have no genres: they pass an exclusion.
        assert_eq!(
            passing(&f(&none, &["Drama"], None, None).unwrap(), &c),
            [2, 4, 5]
        );
        // Movie 3 has no year and 5 is not in the catalog: no year bound lets them by.
        assert_eq!(
            passing(&f(&none, &none, Some(2000), None).unwrap(), &c),
            [2, 4]
        );
        assert_eq!(
            passing(&f(&none, &none, None, Some(2000)).unwrap(), &c),
            [1, 2]
        );
        assert_eq!(
            passing(&f(&["Drama"], &["Comedy"], None, None).unwrap(), &c),
            [3]
        );
        assert_eq!(
            passing(&f(&none, &none, Some(2000), Some(2000)).unwrap(), &c),
            [2]
        );
    }

    #[test]
    fn unknown_genres_and_empty_ranges_are_refused() {
        let c = catalog();
        let err = ItemFilter::new(&c, &["drama"], &[], None, None).unwrap_err();
        assert_eq!(
            err.to_string(),
            "unknown genre \"drama\" in genres; the catalog's genres are: Comedy, Drama, Action"
        );
        let err = ItemFilter::new::<&str>(&c, &[], &[], Some(2001), Some(2000)).unwrap_err();
        assert_eq!(
            err,
            FilterError::YearRange {
                min: 2001,
                max: 2000
            }
        );
        let err = ItemFilter::new(&Titles::default(), &[], &["X"], None, None).unwrap_err();
        assert!(err.to_string().ends_with("are: none"), "{err}");
    }

    #[test]
    fn a_repeated_filter_is_answered_from_the_cache_and_the_cache_is_bounded() {
        let c = catalog();
        let ids = [1, 2, 3, 4, 5];
        let cache = RowCache::default();
        let built = std::cell::Cell::new(0);
        let attrs = || {
            built.set(built.get() + 1);
            ItemAttributes::new(&c, &ids)
        };
        let drama = ItemFilter::new(&c, &["Drama"], &[], None, None)
            .unwrap()
            .unwrap();
        let first = cache.allowed(&drama, attrs);
        let again = cache.allowed(&drama, attrs);
        assert!(Arc::ptr_eq(&first, &again));
        assert_eq!(first.iter().collect::<Vec<_>>(), [0, 2]);
        for year in 0..(CACHED_FILTERS as i32 + 5) {
            let f = ItemFilter::new::<&str>(&c, &[], &[], Some(year), None)
                .unwrap()
                .unwrap();
            cache.allowed(&f, attrs);
        }
        assert_eq!(built.get(), 1, "the per-row table is built once");
        assert_eq!(cache.allowed.lock().unwrap().len(), CACHED_FILTERS);
        // The oldest (Drama) was dropped: a new Arc, the same rows.
        let rebuilt = cache.allowed(&drama, attrs);
        assert!(!Arc::ptr_eq(&first, &rebuilt));
        assert_eq!(*first, *rebuilt);
    }

    #[test]
    fn allowed_sets_iterate_what_they_contain() {
        for rows in [0usize, 1, 63, 64, 65, 130] {
            let all = Allowed::all(rows);
            assert_eq!(all.count(), rows);
            assert_eq!(all.iter().count(), rows);
            assert!(!all.contains(rows as u32));
            let some = Allowed::from_rows(rows, (0..rows as u32).filter(|r| r % 3 == 1));
            let expect: Vec<u32> = (0..rows as u32).filter(|r| r % 3 == 1).collect();
            assert_eq!(some.iter().collect::<Vec<_>>(), expect);
            assert_eq!(some.count(), expect.len());
            for r in 0..rows as u32 {
                assert_eq!(some.contains(r), r % 3 == 1);
            }
        }
    }

    proptest::proptest! {
        /// `refuse` sets -inf exactly on the rows `from_rows` left out (and rows past
        /// the end), and leaves every other score as it was.
        #[test]
        fn refuse_masks_exactly_the_rows_that_do_not_pass(
            rows in 1usize..700,
            which in proptest::collection::vec(0u32..700, 0..400),
            block in 0usize..12,
            len in 0usize..300,
        ) {
            let a = Allowed::from_rows(rows, which.iter().copied());
            let first = block * 64;
            let scores: Vec<f32> = (0..len).map(|j| j as f32 * 0.37 - 20.0).collect();
            let mut got = scores.clone();
            a.refuse(first, &mut got);
            for j in 0..len {
                let row = first + j;
                let passes = row < rows && which.contains(&(row as u32));
                if passes {
                    proptest::prop_assert_eq!(got[j].to_bits(), scores[j].to_bits());
                } else {
                    proptest::prop_assert_eq!(got[j], f32::NEG_INFINITY);
                }
            }
        }
    }
}
