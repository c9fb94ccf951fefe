//! The catalog: each movie's title, genres and year, from `movie_titles.csv`
//! (`movie_id,title[,genres]`, genres `|`-separated as in ml-latest's `movies.csv`),
//! ml-100k's `u.item` (pipe-separated, 19 genre flags) or ml-1m's `movies.dat`
//! (`::`-separated). The year is the `(YYYY)` that ends a MovieLens title (u.item:
//! else its release date). The MovieLens files are Latin-1; a CSV that is not valid
//! UTF-8 is read as Latin-1 too.

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

/// The most distinct genres a catalog may name (a genre is one bit of a `u64`).
pub const MAX_GENRES: usize = 64;

/// ml-100k's genres, in the order of `u.item`'s flags (`u.genre`).
const U_ITEM_GENRES: [&str; 19] = [
    "unknown",
    "Action",
    "Adventure",
    "Animation",
    "Children's",
    "Comedy",
    "Crime",
    "Documentary",
    "Drama",
    "Fantasy",
    "Film-Noir",
    "Horror",
    "Musical",
    "Mystery",
    "Romance",
    "Sci-Fi",
    "Thriller",
    "War",
    "Western",
];

/// What the catalog knows of one movie.
#[derive(Debug, Clone)]
struct Movie {
    title: String,
    /// Bit g set: the movie has genre g ([`Titles::genres`]).
    genres: u64,
    year: Option<i32>,
}

/// The catalog: movie id to title, genres and year. Loaded once per process and
/// shared by every route.
#[derive(Debug, Default, Clone)]
pub struct Titles {
    by_id: HashMap<i64, Movie>,
    /// Genre names; a movie's genre bit g is `genres[g]`.
    genres: Vec<String>,
}

/// The `(YYYY)` that ends a MovieLens title ("Heat (1995)"), if any.
pub fn year_of_title(title: &str) -> Option<i32> {
    let t = title.trim_end();
    let inner = t.strip_suffix(')')?;
    let open = inner.rfind('(')?;
    let digits = &inner[open + 1..];
    if digits.len() == 4 && digits.bytes().all(|b| b.is_ascii_digit()) {
        digits.parse().ok()
    } else {
        None
    }
}

/// Collects genre names into bits while a catalog is parsed.
#[derive(Default)]
struct GenreTable {
    names: Vec<String>,
    index: HashMap<String, u32>,
}

impl GenreTable {
    /// The bits of `names` (`|`-separated; `(no genres listed)` and blanks are none).
    fn bits(&mut self, names: &str) -> Result<u64, String> {
        let mut bits = 0u64;
        for name in names.split('|').map(str::trim) {
            if name.is_empty() || name == "(no genres listed)" {
                continue;
            }
            bits |= 1 << self.bit(name)?;
        }
        Ok(bits)
    }

    fn bit(&mut self, name: &str) -> Result<u32, String> {
        if let Some(&b) = self.index.get(name) {
            return Ok(b);
        }
        if self.names.len() == MAX_GENRES {
            return Err(format!(
                "more than {MAX_GENRES} distinct genres (at {name:?})"
            ));
        }
        let b = self.names.len() as u32;
        self.names.push(name.to_string());
        self.index.insert(name.to_string(), b);
        Ok(b)
    }
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
        let mut table = GenreTable::default();
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
            let rest: Vec<&str> = fields.collect();
            let (genres, year) = if sep == "::" {
                // movies.dat: id::title::Genre|Genre
                let genres = table
                    .bits(rest.first().copied().unwrap_or(""))
                    .map_err(|r| malformed(&r))?;
                (genres, year_of_title(title))
            } else {
                // u.item: id|title|release date|video date|url|19 flags
                let mut genres = 0u64;
                for (flag, name) in rest.iter().skip(3).zip(U_ITEM_GENRES) {
                    if flag.trim() == "1" {
                        genres |= 1 << table.bit(name).map_err(|r| malformed(&r))?;
                    }
                }
                let released = rest.first().and_then(|d| d.rsplit('-').next());
                let year = year_of_title(title).or_else(|| {
                    released
                        .filter(|y| y.len() == 4)
                        .and_then(|y| y.parse().ok())
                });
                (genres, year)
            };
            by_id.insert(
                id,
                Movie {
                    title: title.to_string(),
                    genres,
                    year,
                },
            );
        }
        Ok(Titles {
            by_id,
            genres: table.names,
        })
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
        let genres_col = col(&["genres"]);
        let mut table = GenreTable::default();
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
            let genres = match genres_col.and_then(|c| record.get(c)) {
                Some(g) => table.bits(g).map_err(|r| malformed(line, r))?,
                None => 0,
            };
            by_id.insert(
                id,
                Movie {
                    year: year_of_title(title),
                    title: title.clone(),
                    genres,
                },
            );
        }
        Ok(Titles {
            by_id,
            genres: table.names,
        })
    }

    /// Builds titles from pairs (tests, generated data); the year comes from the title.
    pub fn from_pairs(pairs: impl IntoIterator<Item = (i64, String)>) -> Self {
        Titles {
            by_id: pairs
                .into_iter()
                .map(|(id, title)| {
                    let year = year_of_title(&title);
                    (
                        id,
                        Movie {
                            title,
                            genres: 0,
                            year,
                        },
                    )
                })
                .collect(),
            genres: Vec::new(),
        }
    }

    /// The title, or "Movie <id>" when unknown.
    pub fn get(&self, id: i64) -> Cow<'_, str> {
        match self.by_id.get(&id) {
            Some(m) => Cow::Borrowed(&m.title),
            None => Cow::Owned(format!("Movie {id}")),
        }
    }

    /// The movie ids the catalog lists, in no particular order.
    pub fn ids(&self) -> Vec<i64> {
        self.by_id.keys().copied().collect()
    }

    /// Whether the catalog lists the movie.
    pub fn contains(&self, id: i64) -> bool {
        self.by_id.contains_key(&id)
    }

    /// Every genre the catalog names, in the order first seen.
    pub fn genres(&self) -> &[String] {
        &self.genres
    }

    /// The bit of genre `name` (exact, case-sensitive), if the catalog knows it.
    pub fn genre_bit(&self, name: &str) -> Option<u64> {
        self.genres
            .iter()
            .position(|g| g == name)
            .map(|b| 1u64 << b)
    }

    /// A movie's genre bits and year; `(0, None)` for a movie the catalog lacks.
    pub fn attributes(&self, id: i64) -> (u64, Option<i32>) {
        self.by_id
            .get(&id)
            .map_or((0, None), |m| (m.genres, m.year))
    }

    /// The names of a movie's genres.
    pub fn genre_names(&self, id: i64) -> Vec<&str> {
        let (bits, _) = self.attributes(id);
        (0..self.genres.len())
            .filter(|g| bits & (1 << g) != 0)
            .map(|g| self.genres[g].as_str())
            .collect()
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
        assert_eq!(t.genres(), ["Comedy", "Drama", "Action"]);
        assert_eq!(t.genre_names(1), ["Comedy", "Drama"]);
        assert_eq!(t.attributes(2), (0b100, Some(1995)));
        assert_eq!(t.attributes(3), (0, None));
    }

    #[test]
    fn reads_genres_and_years_of_every_format() {
        let flags = |on: &[usize]| {
            (0..19)
                .map(|i| if on.contains(&i) { "1" } else { "0" })
                .collect::<Vec<_>>()
                .join("|")
        };
        let u_item = format!(
            "1|Toy Story (1995)|01-Jan-1995||http://x|{}\n2|Untitled|12-Mar-1997||http://y|{}\n",
            flags(&[3, 4, 5]),
            flags(&[8])
        );
        let (_d, p) = write(u_item.as_bytes(), "u.item");
        let t = Titles::load(&p).unwrap();
        assert_eq!(t.genre_names(1), ["Animation", "Children's", "Comedy"]);
        assert_eq!(t.attributes(1).1, Some(1995));
        // No year in the title: the release date's.
        assert_eq!(t.attributes(2).1, Some(1997));
        assert_eq!(t.genre_names(2), ["Drama"]);
        let (_d2, p2) = write(
            b"1::Toy Story (1995)::Animation|Children's|Comedy\n2::Heat (1995)::(no genres listed)\n",
            "movies.dat",
        );
        let t = Titles::load(&p2).unwrap();
        assert_eq!(t.genre_names(1), ["Animation", "Children's", "Comedy"]);
        assert!(t.genre_names(2).is_empty());
        assert_eq!(t.genre_bit("Comedy"), Some(4));
        assert_eq!(t.genre_bit("comedy"), None);
    }

    #[test]
    fn years_come_only_from_a_closing_four_digit_parenthesis() {
        assert_eq!(year_of_title("Heat (1995)"), Some(1995));
        assert_eq!(year_of_title("Heat (1995) "), Some(1995));
        assert_eq!(
            year_of_title("City of Lost Children, The (Cité des enfants perdus, La) (1995)"),
            Some(1995)
        );
        assert_eq!(year_of_title("1995"), None);
        assert_eq!(year_of_title("Babylon 5 (1994-1998)"), None);
        assert_eq!(year_of_title("(12345)"), None);
        assert_eq!(year_of_title(""), None);
    }

    #[test]
    fn more_than_64_genres_is_refused_naming_the_line() {
        let mut csv = String::from("movie_id,title,genres\n");
        for i in 0..65 {
            csv.push_str(&format!("{i},T{i},G{i}\n"));
        }
        let err = Titles::parse("movie_titles.csv", csv.into_bytes())
            .unwrap_err()
            .to_string();
        assert!(err.contains("line 66") && err.contains("64"), "{err}");
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
