//! Movie titles for responses: `movie_titles.csv` (`movie_id,title,genres`),
//! ml-100k's `u.item` (pipe-separated) or ml-1m's `movies.dat` (`::`-separated).
//! The MovieLens files are Latin-1; a CSV that is not valid UTF-8 is read as Latin-1 too.

use std::borrow::Cow;
use std::collections::HashMap;
use std::path::Path;

/// Why a titles file could not be read.
#[derive(Debug, thiserror::Error)]
pub enum TitlesError {
    /// The file could not be read.
    #[error("reading {path}: {source}")]
    Io {
        /// The file, as displayed.
        path: String,
        /// The read error.
        #[source]
        source: std::io::Error,
    },
    /// A line is not a valid record, or the CSV header lacks `movie_id`/`title`.
    #[error("{path} line {line}: {reason}")]
    Malformed {
        /// The file (or name) being parsed.
        path: String,
        /// 1-based line number.
        line: usize,
        /// What is wrong with the line.
        reason: String,
    },
}

/// Movie id to title.
#[derive(Debug, Default, Clone)]
pub struct Titles {
    by_id: HashMap<i64, String>,
}

fn latin1(bytes: &[u8]) -> String {
    bytes.iter().map(|&b| b as char).collect()
}

/// RFC 4180 records of `text`: fields split on commas, `"quoted, fields"` with `""`
/// for a quote and line breaks inside quotes. Yields (first line number, fields), or
/// (line, reason) for an unterminated quote. Blank lines are skipped. A few lines of
/// our own keep the serving functions free of a CSV dependency.
fn csv_records(
    text: &str,
) -> impl Iterator<Item = Result<(usize, Vec<String>), (usize, &'static str)>> + '_ {
    let mut chars = text.chars().peekable();
    let mut line = 1;
    std::iter::from_fn(move || loop {
        chars.peek()?;
        let start = line;
        let mut fields = Vec::new();
        let mut field = String::new();
        let mut quoted = false;
        let mut any = false;
        loop {
            match (chars.next(), quoted) {
                (None, true) => return Some(Err((start, "unterminated quoted field"))),
                (None, false) => break,
                (Some('"'), true) if chars.peek() == Some(&'"') => {
                    chars.next();
                    field.push('"');
                }
                (Some('"'), true) => quoted = false,
                (Some('"'), false) if field.is_empty() => quoted = true,
                (Some(','), false) => fields.push(std::mem::take(&mut field)),
                (Some('\n'), false) => {
                    line += 1;
                    break;
                }
                (Some('\r'), false) if chars.peek() == Some(&'\n') => {}
                (Some(c), _) => {
                    if c == '\n' {
                        line += 1;
                    }
                    field.push(c);
                }
            }
            any = true;
        }
        if !any || (fields.is_empty() && field.is_empty()) {
            continue;
        }
        fields.push(field);
        return Some(Ok((start, fields)));
    })
}

impl Titles {
    /// Reads a titles file, choosing the format from its name and first line.
    pub fn load(path: &Path) -> Result<Self, TitlesError> {
        let shown = path.display().to_string();
        let bytes = std::fs::read(path).map_err(|source| TitlesError::Io {
            path: shown.clone(),
            source,
        })?;
        Self::parse(&shown, bytes)
    }

    /// Parses a titles file's bytes; `name` picks the format (and names errors).
    pub fn parse(name: &str, bytes: Vec<u8>) -> Result<Self, TitlesError> {
        let shown = name.to_string();
        let text = match String::from_utf8(bytes) {
            Ok(t) => t,
            Err(e) => latin1(e.as_bytes()),
        };
        let first = text.lines().next().unwrap_or("");
        if first.contains("::") {
            Self::parse_separated(&shown, &text, "::")
        } else if first.contains('|') && !first.contains(',') || shown.ends_with("u.item") {
            Self::parse_separated(&shown, &text, "|")
        } else {
            Self::parse_csv(&shown, &text)
        }
    }

    fn parse_separated(path: &str, text: &str, sep: &str) -> Result<Self, TitlesError> {
        let mut by_id = HashMap::new();
        for (i, line) in text
            .lines()
            .enumerate()
            .filter(|(_, l)| !l.trim().is_empty())
        {
            let mut fields = line.split(sep);
            let malformed = |reason: &str| TitlesError::Malformed {
                path: path.to_string(),
                line: i + 1,
                reason: reason.to_string(),
            };
            let id = fields
                .next()
                .and_then(|s| s.trim().parse().ok())
                .ok_or_else(|| malformed("first field is not a movie id"))?;
            let title = fields.next().ok_or_else(|| malformed("no title field"))?;
            by_id.insert(id, title.to_string());
        }
        Ok(Titles { by_id })
    }

    fn parse_csv(path: &str, text: &str) -> Result<Self, TitlesError> {
        let mut records = csv_records(text);
        let malformed = |line: usize, reason: String| TitlesError::Malformed {
            path: path.to_string(),
            line,
            reason,
        };
        let headers = match records.next() {
            Some(Ok((_, h))) => h,
            Some(Err((line, reason))) => return Err(malformed(line, reason.into())),
            None => Vec::new(),
        };
        let col = |names: &[&str]| headers.iter().position(|h| names.contains(&h.trim()));
        let (Some(id_col), Some(title_col)) = (col(&["movie_id", "movieId"]), col(&["title"]))
        else {
            return Err(malformed(1, "header must name movie_id and title".into()));
        };
        let mut by_id = HashMap::new();
        for record in records {
            let (line, record) = record.map_err(|(line, reason)| malformed(line, reason.into()))?;
            let id = record
                .get(id_col)
                .and_then(|s| s.trim().parse().ok())
                .ok_or_else(|| malformed(line, "movie_id is not an integer".into()))?;
            let title = record
                .get(title_col)
                .ok_or_else(|| malformed(line, "no title".into()))?;
            by_id.insert(id, title.clone());
        }
        Ok(Titles { by_id })
    }

    /// Builds titles from pairs (tests, generated data).
    pub fn from_pairs(pairs: impl IntoIterator<Item = (i64, String)>) -> Self {
        Titles {
            by_id: pairs.into_iter().collect(),
        }
    }

    /// The title, or "Movie <id>" when unknown.
    pub fn get(&self, id: i64) -> Cow<'_, str> {
        match self.by_id.get(&id) {
            Some(t) => Cow::Borrowed(t),
            None => Cow::Owned(format!("Movie {id}")),
        }
    }

    /// Number of movies with a title.
    pub fn len(&self) -> usize {
        self.by_id.len()
    }

    /// True when no titles are known.
    pub fn is_empty(&self) -> bool {
        self.by_id.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(bytes: &[u8], name: &str) -> (tempfile::TempDir, std::path::PathBuf) {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join(name);
        std::fs::write(&p, bytes).unwrap();
        (dir, p)
    }

    #[test]
    fn reads_csv_with_quoted_commas() {
        let (_d, p) = write(
            b"movie_id,title,genres\n1,\"American President, The (1995)\",Comedy|Drama\n2,Heat (1995),Action\n",
            "movie_titles.csv",
        );
        let t = Titles::load(&p).unwrap();
        assert_eq!(t.get(1), "American President, The (1995)");
        assert_eq!(t.get(2), "Heat (1995)");
        assert_eq!(t.get(3), "Movie 3");
    }

    #[test]
    fn reads_latin1_u_item_and_movies_dat() {
        let (_d, p) = write(
            b"543|Mis\xe9rables, Les (1995)|01-Jan-1995||http://x|0|0\n",
            "u.item",
        );
        assert_eq!(Titles::load(&p).unwrap().get(543), "Misérables, Les (1995)");
        let (_d2, p2) = write(b"1::Toy Story (1995)::Animation|Children's\n", "movies.dat");
        assert_eq!(Titles::load(&p2).unwrap().get(1), "Toy Story (1995)");
    }

    #[test]
    fn malformed_lines_name_the_line() {
        let (_d, p) = write(b"movie_id,title\n1,A\nx,B\n", "t.csv");
        let err = Titles::load(&p).unwrap_err().to_string();
        assert!(err.contains("line 3"), "{err}");
    }

    mod props {
        use super::super::*;
        use proptest::prelude::*;

        /// RFC 4180 encoding, written here independently of the reader: a field with
        /// a comma, quote or line break is quoted, quotes doubled.
        fn encode(records: &[Vec<String>], eol: &str) -> String {
            let field = |f: &String| {
                if f.contains([',', '"', '\n', '\r']) || f.is_empty() {
                    format!("\"{}\"", f.replace('"', "\"\""))
                } else {
                    f.clone()
                }
            };
            records
                .iter()
                .map(|r| r.iter().map(field).collect::<Vec<_>>().join(","))
                .map(|line| line + eol)
                .collect()
        }

        proptest! {
            #[test]
            fn csv_round_trips(
                records in prop::collection::vec(
                    prop::collection::vec("[a-z ,\"\r\n\\PC]{0,8}", 1..5), 0..6),
                crlf in any::<bool>(),
            ) {
                let text = encode(&records, if crlf { "\r\n" } else { "\n" });
                let back: Vec<Vec<String>> = csv_records(&text)
                    .map(|r| r.map(|(_, f)| f))
                    .collect::<Result<_, _>>()
                    .unwrap();
                // A line holding one empty field reads as a blank line (skipped).
                let expected: Vec<Vec<String>> = records
                    .into_iter()
                    .filter(|r| !(r.len() == 1 && r[0].is_empty()))
                    .collect();
                prop_assert_eq!(back, expected);
            }

            #[test]
            fn titles_csv_round_trips(titles in prop::collection::btree_map(0i64..1_000_000, "[A-Za-z0-9 ,.()'\"]{1,30}", 0..20)) {
                let records: Vec<Vec<String>> = std::iter::once(vec!["movie_id".to_string(), "title".to_string(), "genres".to_string()])
                    .chain(titles.iter().map(|(id, t)| vec![id.to_string(), t.clone(), "Drama".into()]))
                    .collect();
                let t = Titles::parse("movie_titles.csv", encode(&records, "\n").into_bytes()).unwrap();
                prop_assert_eq!(t.len(), titles.len());
                for (id, title) in &titles {
                    prop_assert_eq!(t.get(*id), title.as_str());
                }
            }

            #[test]
            fn any_bytes_never_panic(
                bytes in prop::collection::vec(any::<u8>(), 0..300),
                name in "(movie_titles.csv|u.item|movies.dat)",
            ) {
                let _ = Titles::parse(&name, bytes.clone());
                for r in csv_records(&String::from_utf8_lossy(&bytes)) {
                    let _ = r;
                }
            }

            #[test]
            fn csv_shaped_text_never_panics(text in "[a-z0-9,\"\r\n|:]{0,80}") {
                let _ = Titles::parse("movie_titles.csv", format!("movie_id,title\n{text}").into_bytes());
                let _ = Titles::parse("movies.dat", text.clone().into_bytes());
                let _ = csv_records(&text).count();
            }
        }
    }
}
