//! `GET /recommend/{user_id}` and fold-in (`GET /recommend[/{user_id}]?history=`,
//! `POST /recommend`): the request parsed into an [`Ask`], the domain's
//! [`Answer`] serialised with its provenance.

use std::sync::Arc;

use axum::extract::State;
use axum::response::{IntoResponse, Response};
use axum::Extension;
use bytes::Bytes;
use http::Uri;
use recs_core::Because;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use super::{param, query, ApiError, Claims, Ctx, ErrorKind, Pending, Reply};
use crate::config::RecommendAuth;
use crate::recommender::{whole_ms, Answer, Ask, Record};
use crate::state::Service;

/// The `{user_id}` part of a recommend path (empty for `/recommend` and `/recommend/`).
pub(super) fn raw_user(path: &str) -> &str {
    path.strip_prefix("/recommend/").unwrap_or("")
}

/// The most movie ids a fold-in history (or an exclusion list) may name.
pub const MAX_HISTORY: usize = 500;

/// A non-negative decimal integer that fits in i64; anything else is None.
pub(super) fn parse_id(s: &str) -> Option<i64> {
    if s.is_empty() || s.len() > 19 || !s.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    s.parse().ok()
}

/// The most history items `explain=` may name per movie.
pub const MAX_EXPLAIN: usize = 50;

/// A year bound: an integer from 0 to 9999.
fn parse_year(name: &str, raw: &str) -> Result<i32, ApiError> {
    match raw.parse::<i32>() {
        Ok(y) if (0..=9999).contains(&y) => Ok(y),
        _ => Err(ApiError::invalid(format!(
            "{name} must be a year from 0 to 9999, got {raw:?}"
        ))),
    }
}

/// `explain` in 0..=MAX_EXPLAIN (0 or absent: no explanations).
fn parse_explain(raw: Option<&str>) -> Result<usize, ApiError> {
    let Some(raw) = raw else { return Ok(0) };
    match raw.parse::<usize>() {
        Ok(n) if n <= MAX_EXPLAIN => Ok(n),
        _ => Err(ApiError::invalid(format!(
            "explain must be an integer from 0 to {MAX_EXPLAIN}, got {raw:?}"
        ))),
    }
}

/// A comma-separated genre list (`genres=`, `exclude_genres=`); empty names are skipped.
fn genre_list(raw: Option<&str>) -> Vec<&str> {
    raw.map(|r| {
        r.split(',')
            .map(str::trim)
            .filter(|g| !g.is_empty())
            .collect()
    })
    .unwrap_or_default()
}

/// The catalog filter of a GET request's query string.
fn parse_filter(
    svc: &Service,
    params: &[(String, String)],
) -> Result<Option<recs_core::filter::ItemFilter>, ApiError> {
    let year = |name: &str| -> Result<Option<i32>, ApiError> {
        param(params, name)?
            .map(|raw| parse_year(name, raw))
            .transpose()
    };
    Ok(svc.filter(
        &genre_list(param(params, "genres")?),
        &genre_list(param(params, "exclude_genres")?),
        year("year_min")?,
        year("year_max")?,
    )?)
}

/// `k` in 1..=max_k; default 20 (the Python API's default).
fn parse_k(raw: Option<&str>, max_k: usize) -> Result<usize, ApiError> {
    let Some(raw) = raw else {
        return Ok(20.min(max_k));
    };
    let detail = || format!("k must be an integer from 1 to {max_k}, got {raw:?}");
    let k = raw
        .parse::<i128>()
        .map_err(|_| ApiError::invalid(detail()))?;
    if k < 1 || k > max_k as i128 {
        return Err(ApiError::invalid(detail()));
    }
    Ok(k as usize)
}

/// A comma-separated list of movie ids (`history=`, `exclude=`): each a
/// non-negative integer, at most [`MAX_HISTORY`] of them; empty means none.
fn parse_id_list(name: &str, raw: &str) -> Result<Vec<i64>, ApiError> {
    if raw.is_empty() {
        return Ok(Vec::new());
    }
    let parts: Vec<&str> = raw.split(',').collect();
    check_len(name, parts.len())?;
    parts
        .iter()
        .map(|p| {
            parse_id(p).ok_or_else(|| {
                ApiError::invalid(format!(
                    "{name} must be comma-separated non-negative integer movie ids, got {p:?} in it"
                ))
            })
        })
        .collect()
}

fn check_len(name: &str, n: usize) -> Result<(), ApiError> {
    if n > MAX_HISTORY {
        return Err(ApiError::invalid(format!(
            "{name} lists {n} movie ids; at most {MAX_HISTORY} are accepted"
        )));
    }
    Ok(())
}

fn check_ids(name: &str, ids: &[i64]) -> Result<(), ApiError> {
    check_len(name, ids.len())?;
    match ids.iter().find(|&&id| id < 0) {
        Some(id) => Err(ApiError::invalid(format!(
            "{name} must list non-negative movie ids, got {id}"
        ))),
        None => Ok(()),
    }
}

/// The `POST /recommend` body.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct FoldInBody {
    user_id: Option<i64>,
    items: Vec<i64>,
    k: Option<i64>,
    exclude: Option<Vec<i64>>,
    genres: Option<Vec<String>>,
    exclude_genres: Option<Vec<String>>,
    year_min: Option<i64>,
    year_max: Option<i64>,
    explain: Option<i64>,
}

/// `POST /recommend`: a fold-in, the user (if any) in the body.
fn parse_post(svc: &Service, body: &[u8], params: &[(String, String)]) -> Result<Ask, ApiError> {
    let max_k = svc.config.max_k;
    let body: FoldInBody = serde_json::from_slice(body).map_err(|e| {
        ApiError::invalid(format!(
            "the body must be a JSON object {{\"items\": [movie ids], optional: \"user_id\", \"k\", \"exclude\", \"genres\", \"exclude_genres\", \"year_min\", \"year_max\", \"explain\"}}: {e}"
        ))
    })?;
    if let Some(u) = body.user_id.filter(|&u| u < 0) {
        return Err(ApiError::invalid(format!(
            "user_id must be a non-negative integer, got {u}"
        )));
    }
    check_ids("items", &body.items)?;
    let exclude = body.exclude.unwrap_or_default();
    check_ids("exclude", &exclude)?;
    let k = match body.k {
        None => 20.min(max_k),
        Some(k) => parse_k(Some(&k.to_string()), max_k)?,
    };
    let year = |name: &str, v: Option<i64>| v.map(|y| parse_year(name, &y.to_string())).transpose();
    let filter = svc.filter(
        &body.genres.unwrap_or_default(),
        &body.exclude_genres.unwrap_or_default(),
        year("year_min", body.year_min)?,
        year("year_max", body.year_max)?,
    )?;
    Ok(Ask {
        user_id: body.user_id,
        k,
        history: Some(body.items),
        exclude,
        model: param(params, "model")?.map(str::to_string),
        filter,
        explain: parse_explain(body.explain.map(|n| n.to_string()).as_deref())?,
    })
}

/// `GET /recommend[/{user_id}]`: everything in the path and the query.
fn parse_get(svc: &Service, raw_user: &str, params: &[(String, String)]) -> Result<Ask, ApiError> {
    let history = param(params, "history")?
        .map(|raw| parse_id_list("history", raw))
        .transpose()?;
    let exclude = match param(params, "exclude")? {
        Some(raw) => parse_id_list("exclude", raw)?,
        None => Vec::new(),
    };
    let user_id = match (raw_user, &history) {
        // `GET /recommend?history=...`: a user the service has never seen.
        ("", Some(_)) => None,
        _ => Some(parse_id(raw_user).ok_or_else(|| {
            ApiError::invalid(format!(
                "user_id must be a non-negative integer up to {}, got {raw_user:?}",
                i64::MAX
            ))
        })?),
    };
    let k = parse_k(param(params, "k")?, svc.config.max_k)?;
    Ok(Ask {
        user_id,
        k,
        history,
        exclude,
        model: param(params, "model")?.map(str::to_string),
        filter: parse_filter(svc, params)?,
        explain: parse_explain(param(params, "explain")?)?,
    })
}

/// `RECOMMEND_AUTH=jwt`: the token's user claim must name the user asked for (a
/// user-less fold-in names nobody's data). The other modes leave it to API Gateway.
fn authorize_user(
    svc: &Service,
    claims: Option<&Claims>,
    user_id: Option<i64>,
) -> Result<(), ApiError> {
    let RecommendAuth::Jwt { claim } = &svc.config.recommend_auth else {
        return Ok(());
    };
    let Some(claims) = claims else {
        return Err(ApiError::new(
            ErrorKind::Unauthorized,
            "this route needs a JWT (RECOMMEND_AUTH=jwt)",
        ));
    };
    let Some(user) = user_id else {
        return Ok(());
    };
    match claims.0.get(claim) {
        Some(v) if *v == user.to_string() => Ok(()),
        Some(_) => Err(ApiError::new(
            ErrorKind::Forbidden,
            format!("the token's {claim} claim is not user {user}"),
        )),
        None => Err(ApiError::new(
            ErrorKind::Forbidden,
            format!("the token has no {claim} claim"),
        )),
    }
}

pub(super) async fn get(
    State(svc): State<Arc<Service>>,
    Extension(ctx): Extension<Ctx>,
    claims: Option<Extension<Claims>>,
    uri: Uri,
) -> Result<Recommended, ApiError> {
    let params = query(&uri);
    let ask = parse_get(&svc, raw_user(uri.path()), &params)?;
    authorize_user(&svc, claims.as_ref().map(|c| &c.0), ask.user_id)?;
    answer(&svc, &ctx, &ask)
}

pub(super) async fn post(
    State(svc): State<Arc<Service>>,
    Extension(ctx): Extension<Ctx>,
    claims: Option<Extension<Claims>>,
    uri: Uri,
    body: Bytes,
) -> Result<Recommended, ApiError> {
    let params = query(&uri);
    let ask = parse_post(&svc, &body, &params)?;
    authorize_user(&svc, claims.as_ref().map(|c| &c.0), ask.user_id)?;
    answer(&svc, &ctx, &ask)
}

#[derive(Serialize)]
struct Recommendation<'a> {
    movie_id: i64,
    title: std::borrow::Cow<'a, str>,
    score: f32,
    /// With `explain`: the history items behind it, or `"popular"`.
    #[serde(skip_serializing_if = "Option::is_none")]
    because: Option<Value>,
}

/// A recommendation's `because`: the user's history items that add most to its
/// score (`movie_id`, `title`, `contribution`), or `"popular"`.
fn because_json(svc: &Service, because: Option<&Because>, i: usize) -> Option<Value> {
    match because? {
        Because::Popular => Some(Value::from("popular")),
        Because::History(parts) => Some(Value::Array(
            parts
                .get(i)?
                .iter()
                .map(|&(movie_id, contribution)| {
                    json!({"movie_id": movie_id, "title": svc.titles.get(movie_id), "contribution": contribution})
                })
                .collect(),
        )),
    }
}

#[derive(Serialize)]
struct Provenance<'a> {
    request_id: &'a str,
    timestamp: u64,
    model_name: &'a str,
    model_version: &'a str,
    git_sha: &'a str,
    data_snapshot_id: &'a str,
    container_image_digest: Option<&'a str>,
    /// Whole milliseconds, at least 1: the Python API's and `reco_response`'s int.
    latency_ms: u64,
    /// The same latency to the microsecond.
    latency_ms_precise: f64,
}

#[derive(Serialize)]
struct RecommendBody<'a> {
    user_id: Option<i64>,
    model: &'a str,
    items: &'a [i64],
    recommendations: Vec<Recommendation<'a>>,
    variant: Option<&'a str>,
    fallback: Option<&'a str>,
    /// Fold-in only: the history's movie ids the model does not know (ignored).
    #[serde(skip_serializing_if = "Option::is_none")]
    unknown_items: Option<&'a [i64]>,
    /// With a filter: how many of the version's movies pass it.
    #[serde(skip_serializing_if = "Option::is_none")]
    filter_passed: Option<usize>,
    provenance: Provenance<'a>,
}

/// A recommend answer: the body, and the record the contract layer writes.
pub(super) struct Recommended {
    body: String,
    record: Record,
}

impl IntoResponse for Recommended {
    fn into_response(self) -> Response {
        let mut resp = Reply::Json(self.body).into_response();
        resp.extensions_mut().insert(Pending(self.record));
        resp
    }
}

fn answer(svc: &Service, ctx: &Ctx, ask: &Ask) -> Result<Recommended, ApiError> {
    let answer: Answer = svc.recommend(ask)?;
    let loaded = &answer.model;
    let recommendations = answer
        .scored
        .iter()
        .zip(&answer.items)
        .enumerate()
        .map(|(i, (s, &movie_id))| Recommendation {
            movie_id,
            title: svc.titles.get(movie_id),
            score: s.score,
            because: because_json(svc, answer.because.as_ref(), i),
        })
        .collect();
    let latency_ms = (ctx.started.elapsed().as_secs_f64() * 1e6).round() / 1e3;
    // Commit, data snapshot and image name internals: only for callers the operator
    // trusts (IAM: the app's backend), never to end users (jwt, public).
    let internals = svc.config.recommend_auth == RecommendAuth::Iam;
    fn internal(internals: bool, v: &str) -> &str {
        if internals {
            v
        } else {
            ""
        }
    }
    let body = RecommendBody {
        user_id: ask.user_id,
        model: &loaded.version,
        items: &answer.items,
        recommendations,
        variant: answer.variant,
        fallback: answer.fallback,
        unknown_items: answer.unknown.as_deref(),
        filter_passed: answer.passed,
        provenance: Provenance {
            request_id: &ctx.request_id,
            timestamp: ctx.timestamp_ms,
            model_name: &loaded.meta.model_name,
            model_version: &loaded.version,
            git_sha: internal(internals, &loaded.meta.git_sha),
            data_snapshot_id: internal(internals, &loaded.meta.data_snapshot_id),
            container_image_digest: svc.image_digest(loaded).filter(|_| internals),
            latency_ms: whole_ms(latency_ms),
            latency_ms_precise: latency_ms,
        },
    };
    // Serialised straight from the struct: field order as documented, f32 scores
    // printed as f32 (no widening noise).
    let body = serde_json::to_string(&body)
        .map_err(|e| ApiError::new(super::ErrorKind::Internal, format!("response: {e}")))?;
    let record = Record {
        user_id: ask.user_id,
        k: ask.k,
        variant: answer.variant,
        answer: Some(answer),
        status: 200,
        ts: ctx.timestamp_ms,
        latency_ms,
    };
    Ok(Recommended { body, record })
}

/// `GET /similar/{movie_id}`: the movies most like one (cosine of the item
/// factors), with `k`, `exclude`, the catalog filter and `model` as on `/recommend`.
pub(super) async fn similar(
    State(svc): State<Arc<Service>>,
    Extension(ctx): Extension<Ctx>,
    claims: Option<Extension<Claims>>,
    uri: Uri,
) -> Result<Reply, ApiError> {
    // Nobody's data: under RECOMMEND_AUTH=jwt any valid token may ask.
    authorize_user(&svc, claims.as_ref().map(|c| &c.0), None)?;
    let params = query(&uri);
    let raw = uri.path().strip_prefix("/similar/").unwrap_or("");
    let movie_id = parse_id(raw).ok_or_else(|| {
        ApiError::invalid(format!(
            "movie_id must be a non-negative integer up to {}, got {raw:?}",
            i64::MAX
        ))
    })?;
    let ask = Ask {
        user_id: None,
        k: parse_k(param(&params, "k")?, svc.config.max_k)?,
        history: None,
        exclude: match param(&params, "exclude")? {
            Some(raw) => parse_id_list("exclude", raw)?,
            None => Vec::new(),
        },
        model: param(&params, "model")?.map(str::to_string),
        filter: parse_filter(&svc, &params)?,
        explain: 0,
    };
    let answer = svc.similar(movie_id, &ask)?;
    #[derive(Serialize)]
    struct SimilarBody<'a> {
        movie_id: i64,
        title: std::borrow::Cow<'a, str>,
        model: &'a str,
        items: &'a [i64],
        similar: Vec<Recommendation<'a>>,
        request_id: &'a str,
        #[serde(skip_serializing_if = "Option::is_none")]
        filter_passed: Option<usize>,
    }
    let body = SimilarBody {
        movie_id,
        title: svc.titles.get(movie_id),
        model: &answer.model.version,
        items: &answer.items,
        // Scores as f32, as /recommend prints them.
        similar: answer
            .scored
            .iter()
            .zip(&answer.items)
            .map(|(s, &id)| Recommendation {
                movie_id: id,
                title: svc.titles.get(id),
                score: s.score,
                because: None,
            })
            .collect(),
        request_id: &ctx.request_id,
        filter_passed: answer.passed,
    };
    let body = serde_json::to_string(&body)
        .map_err(|e| ApiError::new(super::ErrorKind::Internal, format!("response: {e}")))?;
    Ok(Reply::Json(body))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_and_k() {
        assert_eq!(parse_id("0"), Some(0));
        assert_eq!(parse_id("9223372036854775807"), Some(i64::MAX));
        for bad in [
            "",
            "-5",
            "+5",
            "abc",
            "1.0",
            " 1",
            "9223372036854775808",
            "99999999999999999999",
        ] {
            assert_eq!(parse_id(bad), None, "{bad}");
        }
        assert_eq!(parse_id_list("history", "").unwrap(), Vec::<i64>::new());
        assert_eq!(parse_id_list("history", "1,20,3").unwrap(), vec![1, 20, 3]);
        for bad in ["1,,2", "1,", ",1", "a", "1;2", "-1", "1, 2"] {
            assert!(parse_id_list("history", bad).is_err(), "{bad}");
        }
        let cap = vec!["7"; MAX_HISTORY].join(",");
        assert_eq!(parse_id_list("history", &cap).unwrap().len(), MAX_HISTORY);
        let over = vec!["7"; MAX_HISTORY + 1].join(",");
        assert!(parse_id_list("history", &over).is_err());
        assert_eq!(parse_k(None, 100).unwrap(), 20);
        assert_eq!(parse_k(None, 5).unwrap(), 5);
        assert_eq!(parse_k(Some("100"), 100).unwrap(), 100);
        for bad in [
            "0",
            "-1",
            "101",
            "abc",
            "",
            "1e3",
            "99999999999999999999999999999999999999999",
        ] {
            assert!(parse_k(Some(bad), 100).is_err(), "{bad}");
        }
    }

    mod props {
        use super::super::*;
        use proptest::prelude::*;

        /// The contract, written out: 1..=19 ASCII digits whose value fits in i64.
        fn oracle_id(s: &str) -> Option<i64> {
            let digits = !s.is_empty() && s.len() <= 19 && s.bytes().all(|b| b.is_ascii_digit());
            digits
                .then(|| s.bytes().fold(0u128, |a, b| a * 10 + u128::from(b - b'0')))
                .filter(|&v| v <= i64::MAX as u128)
                .map(|v| v as i64)
        }

        proptest! {
            #[test]
            fn user_ids_follow_the_contract(s in "(\\PC{0,22}|[0-9]{1,21}|[+-]?[0-9]{1,5})") {
                prop_assert_eq!(parse_id(&s), oracle_id(&s));
            }

            #[test]
            fn any_integer_id_round_trips(v in 0i64..=i64::MAX) {
                prop_assert_eq!(parse_id(&v.to_string()), Some(v));
                prop_assert_eq!(parse_id(&format!("-{v}")), None);
            }

            #[test]
            fn k_is_accepted_exactly_in_range(
                k in prop::num::i128::ANY,
                max_k in 1usize..=10_000,
                junk in "\\PC{0,12}",
            ) {
                let got = parse_k(Some(&k.to_string()), max_k);
                if (1..=max_k as i128).contains(&k) {
                    prop_assert_eq!(got.unwrap(), k as usize);
                } else {
                    let e = got.unwrap_err();
                    prop_assert_eq!((e.status, e.error_type), (http::StatusCode::BAD_REQUEST, "invalid_input"));
                }
                // Anything else is refused with the same typed error, or is a number in range.
                match parse_k(Some(&junk), max_k) {
                    Ok(v) => prop_assert!((1..=max_k).contains(&v)),
                    Err(e) => prop_assert_eq!(e.error_type, "invalid_input"),
                }
            }
        }
    }
}
