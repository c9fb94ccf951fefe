//! Batch recommendations in AWS Personalize's batch-inference format: one JSON
//! object per input line, `{"userId": "1"}`; one per output line,
//! `{"input": {"userId": "1"}, "output": {"recommendedItems": ["..."], "scores": [...]}, "error": null}`.
//!
//! Every user is answered by [`LoadedModel::answer`] with the same exclusions,
//! takedowns and filter as `/recommend` (so the output equals what
//! `/recommend/{user}?model=<version>` serves). A user the version does not know
//! gets the popularity fallback and a `note`; a line that is not a JSON object with
//! a `userId` gets `error` set and the batch goes on. An input in which no line is
//! such an object is refused whole: nothing is written. Lines are answered on all
//! cores, in input order.

use rayon::prelude::*;
use serde_json::Value;

use crate::filter::ItemFilter;
use crate::{LoadedModel, Query, Registry, RegistryError, Store, StoreError, Titles};

/// The longest input line read, in bytes; longer lines are answered with an error.
pub const MAX_LINE: usize = 4096;

/// Lines answered between two progress reports.
const CHUNK: usize = 2048;

/// What every user of a batch is asked.
#[derive(Debug, Clone, Copy, Default)]
pub struct BatchOptions<'a> {
    /// Movies per user.
    pub k: usize,
    /// Movie ids never returned.
    pub exclude: &'a [i64],
    /// Blocked movie ids (ascending).
    pub blocked: &'a [i64],
    /// Only movies that pass this filter.
    pub filter: Option<&'a ItemFilter>,
    /// The catalog the filter reads.
    pub catalog: Option<&'a Titles>,
}

/// What a batch did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct BatchSummary {
    /// Non-blank input lines.
    pub lines: usize,
    /// Lines answered with the user's own ranking.
    pub answered: usize,
    /// Lines answered with the popularity fallback (users the version does not know).
    pub fallback: usize,
    /// Lines with `error` set.
    pub errors: usize,
}

/// Why a batch input was refused whole.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum BatchError {
    /// The input has no non-blank line.
    #[error("the input has no lines; expected JSON lines like {{\"userId\": \"1\"}}")]
    Empty,
    /// No line is a JSON object with a `userId`: not a batch input.
    #[error("no line of the input is a JSON object with a userId (line 1: {first}); expected JSON lines like {{\"userId\": \"1\"}}")]
    NotJsonLines {
        /// Why the first non-blank line was refused.
        first: String,
    },
    /// The model failed for a reason that would fail every line.
    #[error(transparent)]
    Answer(#[from] crate::AnswerError),
}

/// One parsed input line: the user, or why the line is refused.
fn parse_line(line: &[u8]) -> Result<(Value, i64), String> {
    if line.len() > MAX_LINE {
        return Err(format!("line is longer than {MAX_LINE} bytes"));
    }
    let v: Value = serde_json::from_slice(line).map_err(|e| format!("not JSON: {e}"))?;
    let user = match v.get("userId") {
        _ if !v.is_object() => return Err("not a JSON object".into()),
        None => return Err("no userId".into()),
        Some(Value::String(s)) => s
            .parse::<i64>()
            .ok()
            .filter(|u| *u >= 0 && !s.starts_with('+'))
            .ok_or_else(|| format!("userId must be a non-negative integer id, got {s:?}"))?,
        Some(Value::Number(n)) => n
            .as_i64()
            .filter(|u| *u >= 0)
            .ok_or_else(|| format!("userId must be a non-negative integer id, got {n}"))?,
        Some(other) => return Err(format!("userId must be a string, got {other}")),
    };
    Ok((v, user))
}

/// Answers every line of `input` with `model`; `progress` is called with the lines
/// done so far after each chunk. Returns the output (one line per non-blank input
/// line, in order) and the summary.
pub fn run(
    model: &LoadedModel,
    input: &[u8],
    opts: &BatchOptions<'_>,
    progress: &(dyn Fn(usize) + Sync),
) -> Result<(Vec<u8>, BatchSummary), BatchError> {
    let lines: Vec<&[u8]> = input
        .split(|&b| b == b'\n')
        .map(|l| l.strip_suffix(b"\r").unwrap_or(l))
        .filter(|l| !l.iter().all(u8::is_ascii_whitespace))
        .collect();
    let Some(first) = lines.first() else {
        return Err(BatchError::Empty);
    };
    let parsed: Vec<Result<(Value, i64), String>> =
        lines.par_iter().map(|l| parse_line(l)).collect();
    if parsed.iter().all(Result::is_err) {
        return Err(BatchError::NotJsonLines {
            first: parse_line(first).err().unwrap_or_default(),
        });
    }
    let mut out = Vec::with_capacity(lines.len() * 160);
    let mut summary = BatchSummary {
        lines: lines.len(),
        ..Default::default()
    };
    for (c, chunk) in parsed.chunks(CHUNK).enumerate() {
        let answered: Vec<Result<(OutLine, Option<&'static str>), crate::AnswerError>> = chunk
            .par_iter()
            .zip(&lines[c * CHUNK..])
            .map(|(p, raw)| answer_line(model, p, raw, opts))
            .collect();
        for a in answered {
            let (line, fallback) = a?;
            match (&line.error, fallback) {
                (None, None) => summary.answered += 1,
                (None, Some(_)) => summary.fallback += 1,
                _ => summary.errors += 1,
            }
            // Strings, numbers and finite scores: serialising cannot fail.
            let _ = serde_json::to_writer(&mut out, &line);
            out.push(b'\n');
        }
        progress((c * CHUNK + chunk.len()).min(lines.len()));
    }
    Ok((out, summary))
}

/// One output line. Scores are written as f32 (as `/recommend` writes them).
#[derive(serde::Serialize)]
struct OutLine {
    input: Value,
    output: Option<Output>,
    error: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    note: Option<String>,
}

#[derive(serde::Serialize)]
#[serde(rename_all = "camelCase")]
struct Output {
    recommended_items: Vec<String>,
    scores: Vec<f32>,
}

fn answer_line(
    model: &LoadedModel,
    parsed: &Result<(Value, i64), String>,
    raw: &[u8],
    opts: &BatchOptions<'_>,
) -> Result<(OutLine, Option<&'static str>), crate::AnswerError> {
    let (input, user) = match parsed {
        Ok(p) => p,
        Err(reason) => {
            let shown = String::from_utf8_lossy(&raw[..raw.len().min(200)]).to_string();
            return Ok((
                OutLine {
                    input: shown.into(),
                    output: None,
                    error: Some(reason.clone()),
                    note: None,
                },
                None,
            ));
        }
    };
    let ranked = model.answer(&Query {
        user_id: Some(*user),
        k: opts.k,
        exclude: opts.exclude,
        blocked: opts.blocked,
        filter: opts.filter,
        catalog: opts.catalog,
        ..Default::default()
    })?;
    let note = ranked.fallback.map(|_| {
        format!(
            "user {user} is not in model version {}: the most popular movies",
            model.version
        )
    });
    Ok((
        OutLine {
            input: input.clone(),
            output: Some(Output {
                recommended_items: ranked
                    .scored
                    .iter()
                    .map(|s| model.model.item_id(s.row).to_string())
                    .collect(),
                scores: ranked.scored.iter().map(|s| s.score).collect(),
            }),
            error: None,
            note,
        },
        ranked.fallback,
    ))
}

/// What a batch job answers with, read from a registry.
#[derive(Debug)]
pub struct Prepared {
    /// The version that answers: the one named, else the served primary.
    pub model: LoadedModel,
    /// The registry's catalog (`movie_titles.csv`; empty without one).
    pub catalog: Titles,
    /// The registry's blocked movie ids, ascending.
    pub blocked: Vec<i64>,
}

/// Why a batch job could not run.
#[derive(Debug, thiserror::Error)]
pub enum JobError {
    /// The version could not be resolved or loaded.
    #[error(transparent)]
    Registry(#[from] RegistryError),
    /// active.json could not be read.
    #[error(transparent)]
    Served(#[from] crate::active::ServedError),
    /// blocked.json could not be read: a batch never serves blocked movies, so it stops.
    #[error(transparent)]
    Blocked(#[from] crate::blocked::BlockedError),
    /// The registry's titles file is malformed.
    #[error(transparent)]
    Titles(#[from] crate::TitlesError),
    /// The input could not be read or the output written.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// An input or output location is not `s3://bucket/key` or a file path.
    #[error("{0}")]
    Location(String),
    /// The input was refused whole.
    #[error(transparent)]
    Batch(#[from] BatchError),
}

/// Loads what a batch answers with: `version`, else the served primary
/// (active.json's, else latest.txt's), the catalog and the blocked set.
pub async fn prepare(registry: &Registry, version: Option<&str>) -> Result<Prepared, JobError> {
    let version = match version {
        Some(v) => v.to_string(),
        None => crate::active::served_version(registry, None).await?.1,
    };
    let (model, catalog, blocked) = tokio::join!(
        registry.load(&version),
        async {
            match registry.store().get("movie_titles.csv").await {
                Ok(bytes) => {
                    Titles::parse(&format!("{}/movie_titles.csv", registry.location()), bytes)
                        .map_err(JobError::from)
                }
                Err(StoreError::NotFound(_)) => Ok(Titles::default()),
                Err(e) => Err(e.into()),
            }
        },
        crate::blocked::read(registry.store())
    );
    Ok(Prepared {
        model: model?,
        catalog: catalog?,
        blocked: blocked?.map(|(s, _)| s.ids()).unwrap_or_default(),
    })
}

/// The store holding one object, and its key: `s3://bucket/dir/name` or a file path.
pub fn object(location: &str) -> Result<(Store, String), JobError> {
    let bad = || {
        JobError::Location(format!(
            "{location:?} is not s3://bucket/key or a file path"
        ))
    };
    let (parent, key) = match location.strip_prefix("s3://") {
        Some(rest) => {
            let (bucket_and_dir, key) = rest.rsplit_once('/').ok_or_else(bad)?;
            (format!("s3://{bucket_and_dir}"), key.to_string())
        }
        None => {
            let path = std::path::Path::new(location);
            let key = path.file_name().and_then(|n| n.to_str()).ok_or_else(bad)?;
            let parent = match path.parent().map(|p| p.to_string_lossy().to_string()) {
                Some(p) if !p.is_empty() => p,
                _ => ".".to_string(),
            };
            (parent, key.to_string())
        }
    };
    if key.is_empty() {
        return Err(bad());
    }
    Ok((Store::open(&parent)?, key))
}

/// Reads the input at `input`, answers it ([`run`]) and writes the whole output to
/// `output` in one put (nothing is written when the input is refused).
pub async fn run_job(
    prepared: &Prepared,
    input: &str,
    output: &str,
    k: usize,
    exclude: &[i64],
    filter: Option<&ItemFilter>,
    progress: &(dyn Fn(usize) + Sync),
) -> Result<BatchSummary, JobError> {
    let (in_store, in_key) = object(input)?;
    let (out_store, out_key) = object(output)?;
    let bytes = in_store.get(&in_key).await?;
    let opts = BatchOptions {
        k,
        exclude,
        blocked: &prepared.blocked,
        filter,
        catalog: Some(&prepared.catalog),
    };
    let (out, summary) = run(&prepared.model, &bytes, &opts, progress)?;
    out_store.put(&out_key, out).await?;
    Ok(summary)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn user_ids_are_strings_or_integers_of_digits() {
        assert_eq!(parse_line(br#"{"userId": "12"}"#).unwrap().1, 12);
        assert_eq!(parse_line(br#"{"userId": 7, "x": 1}"#).unwrap().1, 7);
        for (bad, why) in [
            (&br#"{"userId": "-1"}"#[..], "non-negative"),
            (br#"{"userId": "+1"}"#, "non-negative"),
            (br#"{"userId": "1.5"}"#, "non-negative"),
            (br#"{"userId": 1.5}"#, "non-negative"),
            (br#"{"userId": null}"#, "must be a string"),
            (br#"{"user": "1"}"#, "no userId"),
            (br#"["1"]"#, "not a JSON object"),
            (br#"{"userId": "1""#, "not JSON"),
        ] {
            let err = parse_line(bad).unwrap_err();
            assert!(err.contains(why), "{}: {err}", String::from_utf8_lossy(bad));
        }
        let long = format!(r#"{{"userId": "1", "pad": "{}"}}"#, "x".repeat(MAX_LINE));
        assert!(parse_line(long.as_bytes()).unwrap_err().contains("longer"));
    }
}
