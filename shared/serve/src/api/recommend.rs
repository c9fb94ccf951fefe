//! `GET /recommend/{user_id}` and fold-in (`GET /recommend[/{user_id}]?history=`,
//! `POST /recommend`): parsing, the rollout's choice of model, shadow scoring, and
//! the response with its provenance.

use std::collections::HashSet;
use std::time::Instant;

use bytes::Bytes;
use http::{Method, Request, StatusCode};
use serde::{Deserialize, Serialize};

use super::error::ApiError;
use super::{param, query, Reply};
use crate::state::Service;
use recs_core::foldin::FoldInParams;
use recs_core::{validate_version, LoadedModel, PopularityModel, Scored, ServedModel};
use recs_experiment::Exposure;

/// The most movie ids a fold-in history (or an exclusion list) may name.
pub const MAX_HISTORY: usize = 500;

/// A non-negative decimal integer that fits in i64; anything else is None.
fn parse_id(s: &str) -> Option<i64> {
    if s.is_empty() || s.len() > 19 || !s.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    s.parse().ok()
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
}

/// What one request asks for, once parsed.
struct Ask {
    user_id: Option<i64>,
    k: usize,
    /// Fold in these movie ids (with a known user: on top of the training ones).
    history: Option<Vec<i64>>,
    /// Movie ids never to return, on top of the seen (and history) items.
    exclude: Vec<i64>,
}

fn parse_ask(
    svc: &Service,
    req: &Request<Bytes>,
    raw_user: &str,
    params: &[(String, String)],
) -> Result<Ask, ApiError> {
    let max_k = svc.config.max_k;
    if req.method() == Method::POST {
        let body: FoldInBody = serde_json::from_slice(req.body()).map_err(|e| {
            ApiError::invalid(format!(
                "the body must be a JSON object {{\"items\": [movie ids], \"user_id\": optional, \"k\": optional, \"exclude\": optional}}: {e}"
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
        return Ok(Ask {
            user_id: body.user_id,
            k,
            history: Some(body.items),
            exclude,
        });
    }
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
    let k = parse_k(param(params, "k")?, max_k)?;
    Ok(Ask {
        user_id,
        k,
        history,
        exclude,
    })
}

#[derive(Serialize)]
struct Recommendation<'a> {
    movie_id: i64,
    title: std::borrow::Cow<'a, str>,
    score: f32,
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

/// The Python service's `max(1, round(ms))` (Python rounds halves to even), for
/// clients that read an int.
fn whole_ms(precise_ms: f64) -> u64 {
    (precise_ms.round_ties_even() as u64).max(1)
}

#[derive(Serialize)]
struct RecommendBody<'a> {
    user_id: Option<i64>,
    model: &'a str,
    items: Vec<i64>,
    recommendations: Vec<Recommendation<'a>>,
    variant: Option<&'a str>,
    fallback: Option<&'a str>,
    /// Fold-in only: the history's movie ids the model does not know (ignored).
    #[serde(skip_serializing_if = "Option::is_none")]
    unknown_items: Option<Vec<i64>>,
    provenance: Provenance<'a>,
}

pub(super) fn recommend(
    svc: &Service,
    req: &Request<Bytes>,
    raw_user: &str,
    request_id: &str,
    timestamp_ms: u64,
    started: Instant,
) -> Result<(Reply, String), ApiError> {
    if req.method() == Method::POST && !raw_user.is_empty() {
        return Err(ApiError::invalid(
            "POST /recommend takes the user_id in the body, not in the path",
        ));
    }
    let params = query(req);
    let ask = parse_ask(svc, req, raw_user, &params)?;
    let user_id = ask.user_id;
    // One snapshot for the whole request: a concurrent switch never mixes versions.
    let served = svc.served();
    let primary = served.primary.as_ref().map_err(|reason| {
        ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "model_unavailable",
            format!("no model is being served: {reason}"),
        )
    })?;
    // A user-less fold-in has nothing to hash: the primary answers, no shadow.
    let assignment = user_id.map(|u| served.rollout.assign(u));
    let (mut loaded, mut variant): (&LoadedModel, Option<&str>) = match &assignment {
        None => (primary, None),
        Some(a) => match (&served.canary, a.canary) {
            (Some(c), true) => (c, a.variant),
            (None, true) => (primary, None),
            _ => (primary, a.variant),
        },
    };
    if let Some(wanted) = param(&params, "model")? {
        let invalid_model =
            |detail: String| ApiError::new(StatusCode::BAD_REQUEST, "invalid_model", detail);
        validate_version(wanted).map_err(|e| invalid_model(e.to_string()))?;
        // An explicit version is honoured only among the versions served right now:
        // a request never changes what everyone else is served.
        loaded = [Some(primary.as_ref()), served.canary.as_deref()]
            .into_iter()
            .flatten()
            .find(|m| m.version == wanted)
            .ok_or_else(|| {
                invalid_model(format!(
                    "model version {wanted} is not served here (serving {})",
                    primary.version
                ))
            })?;
        variant = None;
    }
    let Answer {
        scored,
        fallback,
        unknown,
    } = top_k(loaded, &ask)?;
    if assignment.as_ref().is_some_and(|a| a.shadow) {
        // A shadow that cannot answer (say, no fold-in parameters) is not compared.
        if let (Some(shadow), Some(user_id)) = (&served.canary, user_id) {
            let theirs = top_k(shadow, &ask).map(|a| a.scored).unwrap_or_default();
            let ours: HashSet<u32> = scored.iter().map(|s| s.row).collect();
            let same = theirs.iter().filter(|s| ours.contains(&s.row)).count();
            let overlap = if scored.is_empty() {
                1.0
            } else {
                same as f64 / scored.len() as f64
            };
            svc.metrics
                .observe_shadow(overlap, &loaded.version, &shadow.version);
            tracing::info!(user_id, primary = %loaded.version, shadow = %shadow.version, overlap, "shadow comparison");
        }
    }
    let model = &loaded.model;
    let items: Vec<i64> = scored.iter().map(|s| model.item_id(s.row)).collect();
    let recommendations = scored
        .iter()
        .zip(&items)
        .map(|(s, &movie_id)| Recommendation {
            movie_id,
            title: svc.titles.get(movie_id),
            score: s.score,
        })
        .collect();
    let image_digest = loaded
        .meta
        .image_digest
        .as_deref()
        .or(svc.config.image_digest.as_deref());
    let latency_ms = (started.elapsed().as_secs_f64() * 1e6).round() / 1e3;
    let body = RecommendBody {
        user_id,
        model: &loaded.version,
        items,
        recommendations,
        variant,
        fallback,
        unknown_items: unknown,
        provenance: Provenance {
            request_id,
            timestamp: timestamp_ms,
            model_name: &loaded.meta.model_name,
            model_version: &loaded.version,
            git_sha: &loaded.meta.git_sha,
            data_snapshot_id: &loaded.meta.data_snapshot_id,
            container_image_digest: image_digest,
            latency_ms: whole_ms(latency_ms),
            latency_ms_precise: latency_ms,
        },
    };
    // Serialised straight from the struct: field order as documented, f32 scores
    // printed as f32 (no widening noise).
    let text = serde_json::to_string(&body).expect("response serialises");
    svc.traces.insert(
        request_id,
        serde_json::json!({
            "user_id": user_id,
            "k": ask.k,
            "model_version": loaded.version,
            "model_name": loaded.meta.model_name,
            "git_sha": loaded.meta.git_sha,
            "data_snapshot_id": loaded.meta.data_snapshot_id,
            "latency_ms": body.provenance.latency_ms,
            "latency_ms_precise": latency_ms,
            "status": 200,
            "ts": timestamp_ms,
            "movie_ids": body.items,
            "variant": variant,
            "fallback": fallback,
        }),
    );
    svc.exposures.record(Exposure {
        request_id: request_id.to_string(),
        ts: timestamp_ms as i64,
        user_id,
        status: 200,
        latency_ms: body.provenance.latency_ms,
        latency_ms_precise: Some(latency_ms),
        k: ask.k as u64,
        movie_ids: body.items.clone(),
        model_version: loaded.version.clone(),
        model_name: loaded.meta.model_name.clone(),
        git_sha: loaded.meta.git_sha.clone(),
        data_snapshot_id: loaded.meta.data_snapshot_id.clone(),
        container_image_digest: image_digest.map(String::from),
        variant: variant.map(String::from),
    });
    Ok((
        Reply::Json(StatusCode::OK, text, None),
        loaded.version.clone(),
    ))
}

/// Records a refused or failed recommendation in the exposure log: its status and
/// latency count in the experiment's guardrails, under the variant the user would
/// have been served (none when the path holds no valid user id).
pub(super) fn record_failure(
    svc: &Service,
    raw_user: &str,
    request_id: &str,
    timestamp_ms: u64,
    status: StatusCode,
    latency_ms: f64,
) {
    let user_id = parse_id(raw_user);
    let variant = user_id.and_then(|u| svc.served().rollout.assign(u).variant);
    svc.exposures.record(Exposure {
        request_id: request_id.to_string(),
        ts: timestamp_ms as i64,
        user_id,
        status: status.as_u16(),
        latency_ms: whole_ms(latency_ms),
        latency_ms_precise: Some(latency_ms),
        k: 0,
        movie_ids: Vec::new(),
        model_version: String::new(),
        model_name: String::new(),
        git_sha: String::new(),
        data_snapshot_id: String::new(),
        container_image_digest: None,
        variant: variant.map(String::from),
    });
}

/// What [`top_k`] found: the ranking, the fallback it took, and (fold-in only) the
/// history ids the model does not know.
struct Answer {
    scored: Vec<Scored>,
    fallback: Option<&'static str>,
    unknown: Option<Vec<i64>>,
}

/// Sorted, repeat-free item rows of the known ids among `ids`, and the unknown ids
/// (in the order given, repeats dropped).
fn rows_of(model: &recs_core::AlsModel, ids: &[i64]) -> (Vec<u32>, Vec<i64>) {
    let mut rows = Vec::with_capacity(ids.len());
    let mut unknown: Vec<i64> = Vec::new();
    for &id in ids {
        match model.item_row(id) {
            Some(r) => rows.push(r),
            None if !unknown.contains(&id) => unknown.push(id),
            None => {}
        }
    }
    rows.sort_unstable();
    rows.dedup();
    (rows, unknown)
}

fn sorted_union(a: &[u32], b: &[u32]) -> Vec<u32> {
    let mut v: Vec<u32> = a.iter().chain(b).copied().collect();
    v.sort_unstable();
    v.dedup();
    v
}

/// The popularity ranking without the `excluded` rows (sorted).
fn popular_excluding(model: &recs_core::AlsModel, excluded: &[u32], k: usize) -> Vec<Scored> {
    model
        .popular(model.n_items())
        .iter()
        .filter(|s| excluded.binary_search(&s.row).is_err())
        .take(k)
        .copied()
        .collect()
}

/// The answer to `ask` from one model: the known user's top-k, a fold-in of the
/// history, or the popularity ranking for a user the model does not know (or a
/// history it knows none of).
fn top_k(loaded: &LoadedModel, ask: &Ask) -> Result<Answer, ApiError> {
    let model = match &loaded.model {
        ServedModel::Als(model) => model,
        ServedModel::Popularity(p) => return Ok(top_k_popularity(p, ask)),
    };
    let (excluded, _) = rows_of(model, &ask.exclude);
    let known_row = ask.user_id.and_then(|u| model.user_row(u));
    let Some(history) = &ask.history else {
        return Ok(match known_row {
            Some(row) => Answer {
                scored: model.recommend_row_excluding(row, &excluded, ask.k),
                fallback: None,
                unknown: None,
            },
            None => Answer {
                scored: popular_excluding(model, &excluded, ask.k),
                fallback: Some("popularity"),
                unknown: None,
            },
        });
    };
    let (mut rows, unknown) = rows_of(model, history);
    // A known user: the given interactions are newer ones, on top of the training row.
    if let Some(row) = known_row {
        rows = sorted_union(&rows, model.seen().row(row));
    }
    let excluded = sorted_union(&excluded, &rows);
    if rows.is_empty() {
        return Ok(Answer {
            scored: popular_excluding(model, &excluded, ask.k),
            fallback: Some("popularity"),
            unknown: Some(unknown),
        });
    }
    let unavailable = |detail: String| {
        ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "fold_in_unavailable",
            detail,
        )
    };
    let params = FoldInParams::from_meta(&loaded.meta.raw, &loaded.model_meta)
        .map_err(|e| unavailable(format!("model version {}: {e}", loaded.version)))?;
    // Interactions carry no strength here: r = 1 each, as a binary training matrix.
    let interactions: Vec<(u32, f32)> = rows.iter().map(|&r| (r, 1.0)).collect();
    let user = model
        .fold_in(&interactions, &params)
        .map_err(|e| unavailable(format!("model version {}: {e}", loaded.version)))?;
    Ok(Answer {
        scored: model.recommend_vector(&user, &excluded, ask.k),
        fallback: Some("folded_in"),
        unknown: Some(unknown),
    })
}

/// A popularity version's answer: its ranking without the user's seen items (when
/// the version carries them), the history and the exclusions. A history cannot be
/// folded into a ranking, so it only adds exclusions; its unknown ids are listed.
fn top_k_popularity(p: &PopularityModel, ask: &Ask) -> Answer {
    let catalogue: HashSet<i64> = p.items().iter().copied().collect();
    let mut dropped: HashSet<i64> = ask.exclude.iter().copied().collect();
    let mut unknown = None;
    if let Some(history) = &ask.history {
        dropped.extend(history);
        let mut missing: Vec<i64> = Vec::new();
        for id in history {
            if !catalogue.contains(id) && !missing.contains(id) {
                missing.push(*id);
            }
        }
        unknown = Some(missing);
    }
    let ranked = match ask.user_id {
        Some(user) => p.recommend(user, p.items().len()),
        None => p.popular(p.items().len()).to_vec(),
    };
    let scored = ranked
        .into_iter()
        .filter(|s| !dropped.contains(&p.items()[s.row as usize]))
        .take(ask.k)
        .collect();
    Answer {
        scored,
        fallback: None,
        unknown,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn latency_is_whole_ms_at_least_one() {
        assert_eq!(whole_ms(0.0), 1);
        assert_eq!(whole_ms(0.197), 1);
        assert_eq!(whole_ms(1.49), 1);
        assert_eq!(whole_ms(1.5), 2);
        assert_eq!(whole_ms(2.5), 2); // Python: round(2.5) == 2
        assert_eq!(whole_ms(250.2), 250);
    }

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
                    prop_assert_eq!((e.status, e.error_type), (StatusCode::BAD_REQUEST, "invalid_input"));
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
