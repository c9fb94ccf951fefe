//! Rating files: ml-100k `u.data` (tab-separated), ml-1m `ratings.dat`
//! (`::`-separated), MovieLens CSV with a header (`userId,movieId,rating,timestamp`)
//! and plain `user,item[,rating[,timestamp]]` CSV or TSV, with or without a header.
//!
//! Rules (docs/TRAINING.md repeats them):
//! - Ids are non-negative integers; a rating is a finite number; a timestamp an integer.
//! - A row with no rating column (e.g. the `user \t item` split files) is an
//!   interaction without a rating: it always counts as a positive.
//! - Blank lines are ignored; anything else that does not parse is an error naming
//!   the file and the 1-based line, unless `skip_bad_rows` is set, in which case the
//!   row is counted in [`Ratings::skipped`] and dropped.
//! - Duplicate (user, item) pairs: the row with the latest timestamp wins; at equal
//!   (or absent) timestamps the later line wins. So a re-rating replaces the old
//!   rating, and a film re-rated 5 -> 2 is not a positive. Dropped rows are counted in
//!   the summary's `duplicates_dropped`.

use std::fmt;
use std::path::Path;

use sha2::{Digest, Sha256};

/// How to read a rating file.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[cfg_attr(feature = "cli", derive(clap::ValueEnum))]
#[serde(rename_all = "kebab-case")]
pub enum Format {
    /// Detect from the first line: `::` -> ml-1m, a tab -> tsv, a comma -> csv; a
    /// first field that is not a number is a header.
    Auto,
    /// ml-100k `u.data`: `user \t item \t rating \t timestamp`, no header.
    #[cfg_attr(feature = "cli", value(name = "ml-100k"))]
    #[serde(rename = "ml-100k")]
    Ml100k,
    /// ml-1m `ratings.dat`: `user::item::rating::timestamp`, no header.
    #[cfg_attr(feature = "cli", value(name = "ml-1m"))]
    #[serde(rename = "ml-1m")]
    Ml1m,
    /// MovieLens CSV (ml-latest, ml-25m ...): a header naming the columns is required.
    MovielensCsv,
    /// Comma-separated `user,item[,rating[,timestamp]]`; a header is optional.
    Csv,
    /// Tab-separated `user \t item [\t rating [\t timestamp]]`; a header is optional.
    Tsv,
}

impl fmt::Display for Format {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let s = match self {
            Format::Auto => "auto",
            Format::Ml100k => "ml-100k",
            Format::Ml1m => "ml-1m",
            Format::MovielensCsv => "movielens-csv",
            Format::Csv => "csv",
            Format::Tsv => "tsv",
        };
        f.write_str(s)
    }
}

/// One (deduplicated) row: the shared interaction type, times in epoch ms.
pub use recs_core::Interaction as Rating;

/// Why a rating file could not be read.
#[derive(Debug, thiserror::Error)]
pub enum RatingsError {
    /// The file could not be read.
    #[error("reading {path}: {source}")]
    Io {
        /// The file.
        path: String,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// A line does not parse (a row, or the header or format the first line implies).
    #[error("{path}:{line}: {reason} (line {line}: {text:?}; --skip-bad-rows drops such rows)")]
    Malformed {
        /// The file.
        path: String,
        /// 1-based line number.
        line: usize,
        /// What is wrong with the line.
        reason: String,
        /// The line, cut to 120 characters.
        text: String,
    },
}

/// A parsed rating file.
#[derive(Debug, Clone)]
pub struct Ratings {
    /// The file, as given.
    pub path: String,
    /// The format actually used (never `Auto`).
    pub format: Format,
    /// Whether the first non-blank line was a header.
    pub header: bool,
    /// Rows after deduplication, sorted by (user, item).
    pub rows: Vec<Rating>,
    /// Non-blank data lines read (header excluded), bad ones included.
    lines: usize,
    /// Rows dropped as malformed (only with `skip_bad_rows`).
    pub skipped: usize,
    /// The first few skipped rows: (line, reason).
    skipped_examples: Vec<(usize, String)>,
    /// Rows dropped because a later/newer row had the same (user, item).
    duplicates: usize,
    /// SHA-256 of the file's bytes: the version's `data_snapshot_id`.
    pub sha256: String,
}

impl Ratings {
    /// The positive (user, item) pairs at `min_rating`, sorted.
    pub fn positives(&self, min_rating: f32) -> Vec<Rating> {
        self.rows
            .iter()
            .filter(|r| r.is_positive(min_rating))
            .copied()
            .collect()
    }

    /// A JSON summary for meta.json and command output.
    pub fn summary(&self, min_rating: f32) -> serde_json::Value {
        serde_json::json!({
            "file": self.path,
            "format": self.format,
            "sha256": self.sha256,
            "lines": self.lines,
            "rows": self.rows.len(),
            "positives": self.rows.iter().filter(|r| r.is_positive(min_rating)).count(),
            "min_rating": min_rating,
            "skipped_bad_rows": self.skipped,
            "skipped_examples": self.skipped_examples.iter()
                .map(|(line, reason)| format!("line {line}: {reason}"))
                .collect::<Vec<_>>(),
            "duplicates_dropped": self.duplicates,
        })
    }
}

#[derive(Clone, Copy)]
enum Sep {
    Tab,
    Comma,
    DoubleColon,
}

impl Sep {
    fn split_into<'a>(self, line: &'a str, out: &mut Vec<&'a str>) {
        out.clear();
        match self {
            Sep::Tab => out.extend(line.split('\t')),
            Sep::Comma => out.extend(line.split(',')),
            Sep::DoubleColon => out.extend(line.split("::")),
        }
    }
}

/// Column positions.
#[derive(Clone, Copy)]
struct Columns {
    user: usize,
    item: usize,
    rating: Option<usize>,
    timestamp: Option<usize>,
    /// Without a header: 2..=4 fields. With one: at least `needed`.
    min_fields: usize,
    max_fields: Option<usize>,
}

fn header_columns(fields: &[&str]) -> Result<Columns, String> {
    let find = |names: &[&str]| {
        fields.iter().position(|f| {
            let f = f.trim().trim_matches('"').to_ascii_lowercase();
            names.contains(&f.as_str())
        })
    };
    let user = find(&["userid", "user_id", "user", "uid"]);
    let item = find(&[
        "movieid", "movie_id", "movie", "itemid", "item_id", "item", "item_idx", "iid",
    ]);
    let rating = find(&["rating", "ratings", "score", "value", "weight"]);
    let timestamp = find(&["timestamp", "ts", "time"]);
    match (user, item) {
        (Some(user), Some(item)) => {
            let needed = [Some(user), Some(item), rating, timestamp]
                .into_iter()
                .flatten()
                .max()
                .unwrap_or(0)
                + 1;
            Ok(Columns {
                user,
                item,
                rating,
                timestamp,
                min_fields: needed,
                max_fields: None,
            })
        }
        _ => Err(format!(
            "header {:?} names no user column (userId, user_id, user) or no item column \
             (movieId, movie_id, item_id, item, item_idx)",
            fields.join(",")
        )),
    }
}

const POSITIONAL: Columns = Columns {
    user: 0,
    item: 1,
    rating: Some(2),
    timestamp: Some(3),
    min_fields: 2,
    max_fields: Some(4),
};

fn parse_id(field: &str, what: &str) -> Result<i64, String> {
    let f = field.trim();
    match f.parse::<i64>() {
        Ok(v) if v >= 0 => Ok(v),
        Ok(v) => Err(format!("{what} id {v} is negative")),
        Err(_) => Err(format!("{what} id {f:?} is not an integer")),
    }
}

fn parse_row(fields: &[&str], cols: &Columns) -> Result<Rating, String> {
    let n = fields.len();
    if n < cols.min_fields || cols.max_fields.is_some_and(|m| n > m) {
        return Err(match cols.max_fields {
            Some(m) => format!(
                "expected {}..={m} fields (user, item[, rating[, timestamp]]), found {n}",
                cols.min_fields
            ),
            None => format!("expected at least {} fields, found {n}", cols.min_fields),
        });
    }
    let user = parse_id(fields[cols.user], "user")?;
    let item = parse_id(fields[cols.item], "item")?;
    let rating = match cols.rating.filter(|&c| c < n) {
        None => None,
        Some(c) => {
            let f = fields[c].trim();
            match f.parse::<f32>() {
                Ok(v) if v.is_finite() => Some(v),
                _ => return Err(format!("rating {f:?} is not a finite number")),
            }
        }
    };
    let timestamp = match cols.timestamp.filter(|&c| c < n) {
        None => None,
        // An empty timestamp is an untimed row (retrain's snapshots write rows whose
        // source had no time, e.g. a split file, that way).
        Some(c) if fields[c].trim().is_empty() => None,
        Some(c) => {
            let f = fields[c].trim();
            Some(
                f.parse::<i64>()
                    .map_err(|_| format!("timestamp {f:?} is not an integer"))?,
            )
        }
    };
    Ok(Rating {
        user,
        item,
        rating,
        ts_ms: timestamp.map(recs_core::file_ts_ms),
    })
}

/// Reads and parses a rating file.
pub fn read_ratings(
    path: &Path,
    format: Format,
    skip_bad_rows: bool,
) -> Result<Ratings, RatingsError> {
    let display = path.display().to_string();
    let bytes = std::fs::read(path).map_err(|source| RatingsError::Io {
        path: display.clone(),
        source,
    })?;
    parse_ratings(&display, &bytes, format, skip_bad_rows)
}

/// Parses rating-file bytes; `path` is only used in messages. Public only for the
/// fuzz targets (tests/fuzz); use [`read_ratings`].
#[doc(hidden)]
pub fn parse_ratings(
    path: &str,
    bytes: &[u8],
    format: Format,
    skip_bad_rows: bool,
) -> Result<Ratings, RatingsError> {
    let sha256 = recs_core::hash::hex(&Sha256::digest(bytes));
    // Latin-1 or other non-UTF-8 bytes can only be in fields we reject anyway; decode
    // lossily so the error names the line rather than the file.
    let text = String::from_utf8_lossy(bytes);
    let malformed = |line: usize, reason: String, text: &str| RatingsError::Malformed {
        path: path.to_string(),
        line,
        reason,
        text: text.chars().take(120).collect(),
    };

    let mut lines = text
        .split('\n')
        .enumerate()
        .map(|(i, l)| (i + 1, l.strip_suffix('\r').unwrap_or(l)))
        .filter(|(_, l)| !l.trim().is_empty())
        .peekable();

    // Resolve the format and the columns from the first non-blank line.
    let first = lines.peek().copied();
    let resolved = match format {
        Format::Auto => match first {
            Some((_, l)) if l.contains("::") => Format::Ml1m,
            Some((_, l)) if l.contains('\t') => Format::Tsv,
            Some((_, l)) if l.contains(',') => Format::Csv,
            Some((n, l)) => {
                return Err(malformed(
                    n,
                    "cannot detect the format (no tab, comma or '::'); name it with --format"
                        .into(),
                    l,
                ))
            }
            None => Format::Csv,
        },
        f => f,
    };
    let sep = match resolved {
        Format::Ml100k | Format::Tsv => Sep::Tab,
        Format::Ml1m => Sep::DoubleColon,
        _ => Sep::Comma,
    };
    let mut cols = POSITIONAL;
    if matches!(resolved, Format::Ml100k | Format::Ml1m) {
        cols.min_fields = 4;
    }
    let mut header = false;
    if let Some((n, l)) = first {
        let mut fields = Vec::new();
        sep.split_into(l, &mut fields);
        let looks_like_header = fields[0].trim().parse::<i64>().is_err();
        let wants_header = match resolved {
            Format::MovielensCsv => true,
            Format::Csv | Format::Tsv => looks_like_header,
            _ => false,
        };
        if wants_header {
            cols = header_columns(&fields).map_err(|reason| malformed(n, reason, l))?;
            header = true;
            lines.next();
        }
    }

    let mut rows = Vec::new();
    let mut order = Vec::new();
    let mut n_lines = 0;
    let mut skipped = 0;
    let mut skipped_examples = Vec::new();
    let mut fields: Vec<&str> = Vec::with_capacity(8);
    for (n, l) in lines {
        n_lines += 1;
        sep.split_into(l, &mut fields);
        match parse_row(&fields, &cols) {
            Ok(r) => {
                rows.push(r);
                order.push(n);
            }
            Err(reason) if skip_bad_rows => {
                skipped += 1;
                if skipped_examples.len() < 5 {
                    skipped_examples.push((n, reason));
                }
            }
            Err(reason) => return Err(malformed(n, reason, l)),
        }
    }

    // Deduplicate: sort by (user, item, timestamp, line) and keep the last of each pair.
    let mut idx: Vec<u32> = (0..rows.len() as u32).collect();
    idx.sort_unstable_by_key(|&i| {
        let r = &rows[i as usize];
        (r.user, r.item, r.ts_ms, order[i as usize])
    });
    let mut deduped: Vec<Rating> = Vec::with_capacity(rows.len());
    for i in idx {
        let r = rows[i as usize];
        match deduped.last_mut() {
            Some(last) if last.user == r.user && last.item == r.item => *last = r,
            _ => deduped.push(r),
        }
    }
    let duplicates = rows.len() - deduped.len();
    Ok(Ratings {
        path: path.to_string(),
        format: resolved,
        header,
        rows: deduped,
        lines: n_lines,
        skipped,
        skipped_examples,
        duplicates,
        sha256,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str, format: Format) -> Result<Ratings, RatingsError> {
        parse_ratings("f", text.as_bytes(), format, false)
    }

    #[test]
    fn detects_every_format() {
        let cases = [
            ("1\t10\t5\t100\n2\t20\t3\t200\n", Format::Tsv, false),
            ("1::10::5::100\r\n2::20::3::200\r\n", Format::Ml1m, false),
            (
                "userId,movieId,rating,timestamp\n1,10,5.0,100\n2,20,3.5,200\n",
                Format::Csv,
                true,
            ),
            (
                "user_id,item_idx,rating\n1,10,5\n2,20,3\n",
                Format::Csv,
                true,
            ),
            ("1,10,5\n2,20,3\n", Format::Csv, false),
        ];
        for (text, format, header) in cases {
            let r = parse(text, Format::Auto).unwrap();
            assert_eq!((r.format, r.header), (format, header), "{text}");
            assert_eq!(r.rows.len(), 2);
            assert_eq!((r.rows[0].user, r.rows[0].item), (1, 10));
            assert_eq!(r.positives(4.0).len(), 1, "{text}");
        }
        let r = parse("3\t7\n1\t2\n", Format::Auto).unwrap();
        assert_eq!(r.rows[0].rating, None);
        assert_eq!(r.positives(4.0).len(), 2, "no rating column: all positive");
        let r = parse(
            "movieId,userId,timestamp,rating\n10,1,5,4\n",
            Format::MovielensCsv,
        )
        .unwrap();
        assert_eq!(
            r.rows[0],
            Rating {
                user: 1,
                item: 10,
                rating: Some(4.0),
                ts_ms: Some(5_000)
            }
        );
    }

    #[test]
    fn malformed_rows_name_file_and_line() {
        for (text, line, needle) in [
            ("1\t2\t5\t9\n\n1\tx\t5\t9\n", 3, "item id \"x\""),
            ("1,2,5\n1,2,abc\n", 2, "rating \"abc\""),
            ("1,2,5\n1,2,5,6,7\n", 2, "found 5"),
            ("1,2,5\n-3,2,5\n", 2, "negative"),
            ("1,2,5\n1,2,nan\n", 2, "finite"),
            ("1\n", 1, "cannot detect"),
        ] {
            let err = parse(text, Format::Auto).unwrap_err().to_string();
            assert!(
                err.starts_with(&format!("f:{line}: ")) && err.contains(needle),
                "{err}"
            );
        }
        let err = parse("a,b,c\n1,2,3\n", Format::Auto)
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("f:1:") && err.contains("no user column"),
            "{err}"
        );
        let err = parse("1\t2\t5\n", Format::Ml100k).unwrap_err().to_string();
        assert!(err.contains("f:1:"), "{err}");
        let ok = parse_ratings("f", b"1,2,5\n1,x,5\n3,4,5\n,,\n", Format::Auto, true).unwrap();
        assert_eq!((ok.rows.len(), ok.skipped, ok.lines), (2, 2, 4));
        assert_eq!(ok.skipped_examples[0].0, 2);
    }

    #[test]
    fn duplicates_keep_the_latest_row() {
        // (1, 2): ts 50 beats ts 10 whatever the order; (3, 4) no ts: the later line wins.
        let r = parse("1,2,5,50\n1,2,1,10\n3,4,5\n3,4,2\n", Format::Auto).unwrap();
        assert_eq!(r.duplicates, 2);
        assert_eq!(r.rows[0].rating, Some(5.0));
        assert_eq!(r.rows[1].rating, Some(2.0));
        assert_eq!(r.positives(4.0).len(), 1);
    }

    #[test]
    fn extreme_timestamp_is_read_not_a_panic() {
        // Regression (property tests): i64::MIN as a timestamp overflowed in file_ts_ms.
        let r = parse("1,2,5,-9223372036854775808\n", Format::Csv).unwrap();
        assert_eq!(r.rows[0].ts_ms, Some(i64::MIN));
    }

    mod props {
        use super::*;
        use proptest::prelude::*;
        use std::collections::BTreeMap;

        /// Distinct (user, item) pairs with a whole- or half-star rating and epoch seconds.
        fn rows() -> impl Strategy<Value = BTreeMap<(i64, i64), (f32, i64)>> {
            prop::collection::btree_map(
                (0i64..1_000_000_000, 0i64..1_000_000_000),
                (
                    (1u8..=10).prop_map(|h| f32::from(h) / 2.0),
                    0i64..99_999_999_999,
                ),
                0..40,
            )
        }

        /// The file `rows` make in `format`, written here independently of the reader.
        fn write(rows: &BTreeMap<(i64, i64), (f32, i64)>, format: Format) -> String {
            let (sep, head) = match format {
                Format::Ml100k | Format::Tsv => ("\t", None),
                Format::Ml1m => ("::", None),
                Format::MovielensCsv => (",", Some("userId,movieId,rating,timestamp")),
                _ => (",", None),
            };
            let mut out = head.map(|h| format!("{h}\n")).unwrap_or_default();
            for ((u, i), (r, t)) in rows {
                out.push_str(&format!("{u}{sep}{i}{sep}{r}{sep}{t}\n"));
            }
            out
        }

        proptest! {
            #[test]
            fn every_format_round_trips(
                rows in rows(),
                format in prop::sample::select(vec![
                    Format::Ml100k, Format::Ml1m, Format::MovielensCsv, Format::Csv, Format::Tsv, Format::Auto,
                ]),
            ) {
                let text = write(&rows, format);
                let r = parse(&text, format).unwrap();
                let back: Vec<(i64, i64, Option<f32>, Option<i64>)> =
                    r.rows.iter().map(|x| (x.user, x.item, x.rating, x.ts_ms)).collect();
                let expected: Vec<(i64, i64, Option<f32>, Option<i64>)> = rows
                    .iter()
                    .map(|(&(u, i), &(rating, secs))| (u, i, Some(rating), Some(secs * 1000)))
                    .collect();
                prop_assert_eq!(back, expected);
                prop_assert_eq!(r.skipped, 0);
            }

            #[test]
            fn any_bytes_are_read_or_refused_with_a_line(
                bytes in prop::collection::vec(any::<u8>(), 0..200),
                format in prop::sample::select(vec![
                    Format::Ml100k, Format::Ml1m, Format::MovielensCsv, Format::Csv, Format::Tsv, Format::Auto,
                ]),
                skip in any::<bool>(),
            ) {
                match parse_ratings("f", &bytes, format, skip) {
                    Ok(r) => prop_assert!(r.rows.iter().all(|x| x.user >= 0 && x.item >= 0)),
                    Err(RatingsError::Malformed { line, .. }) => prop_assert!(line >= 1),
                    Err(e) => prop_assert!(false, "unexpected error {e}"),
                }
            }

            #[test]
            fn rating_shaped_lines_never_panic(
                lines in prop::collection::vec("[0-9 .eE+-]{0,12}([,\t]|::)[0-9 -]{0,22}(([,\t]|::)[0-9a-zA-Z. +-]{0,10}){0,3}", 0..8),
                skip in any::<bool>(),
            ) {
                let text = lines.join("\n");
                let _ = parse_ratings("f", text.as_bytes(), Format::Auto, skip);
            }
        }
    }
}
