//! Request -> answer, knowing nothing of HTTP: one snapshot of what is served, the
//! rollout's choice of version (or the one the caller names, among those served),
//! the version's [`LoadedModel::answer`], the shadow comparison, and the one record
//! (trace and exposure) each recommend request leaves, whatever its status.

use std::collections::HashSet;
use std::sync::Arc;

use recs_core::filter::ItemFilter;
use recs_core::{validate_version, Because, LoadedModel, Query, Scored, SimilarError};
use recs_experiment::Exposure;

use crate::state::Service;
use crate::trace::Trace;

/// What one request asks for.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Ask {
    /// The user (`None`: a user-less fold-in).
    pub user_id: Option<i64>,
    /// How many movies at most.
    pub k: usize,
    /// Fold in these movie ids.
    pub history: Option<Vec<i64>>,
    /// Movie ids never to return.
    pub exclude: Vec<i64>,
    /// Answer with this version, which must be one of those served.
    pub model: Option<String>,
    /// Only movies that pass this catalog filter.
    pub filter: Option<ItemFilter>,
    /// Explain each movie by this many of the user's interactions (0: no).
    pub explain: usize,
}

/// Why a request cannot be answered.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum RecommendError {
    /// No model is being served.
    #[error("no model is being served: {0}")]
    Unavailable(String),
    /// The version named is malformed.
    #[error("{0}")]
    BadVersion(String),
    /// The version named is not among those served.
    #[error("model version {wanted} is not served here (serving {serving})")]
    NotServed {
        /// The version asked for.
        wanted: String,
        /// The primary version.
        serving: String,
    },
    /// Fold-in is unavailable for the version that answers.
    #[error(transparent)]
    FoldIn(#[from] recs_core::AnswerError),
    /// The version cannot say which movies are similar to this one.
    #[error(transparent)]
    Similar(#[from] SimilarError),
}

/// One answer: which version gave it, the ranking and its movie ids, and the
/// rollout's variant.
#[derive(Debug, Clone)]
pub struct Answer {
    /// The version that answered.
    pub model: Arc<LoadedModel>,
    /// The ranking, best first.
    pub scored: Vec<Scored>,
    /// The ranking's movie ids.
    pub items: Vec<i64>,
    /// `popularity` or `folded_in` when the answer is not the user's own ranking.
    pub fallback: Option<&'static str>,
    /// Fold-in only: history ids the version does not know.
    pub unknown: Option<Vec<i64>>,
    /// The rollout's variant for the user.
    pub variant: Option<&'static str>,
    /// With a filter: how many of the version's movies pass it.
    pub passed: Option<usize>,
    /// With `explain`: why each movie is there.
    pub because: Option<Because>,
}

/// What a recommend request leaves behind: the trace `/trace` shows and the exposure
/// the experiment analysis reads. Built for every request, refused ones included.
#[derive(Debug, Clone)]
pub struct Record {
    /// The user, when the request named a valid one.
    pub user_id: Option<i64>,
    /// `k` asked (0 when the request was refused before it was read).
    pub k: usize,
    /// The answer, when there was one.
    pub answer: Option<Answer>,
    /// The variant the user is (or would have been) served.
    pub variant: Option<&'static str>,
    /// The HTTP status the request got.
    pub status: u16,
    /// When it arrived (ms since the epoch).
    pub ts: u64,
    /// How long it took (ms).
    pub latency_ms: f64,
}

/// The served version `wanted` names (an explicit version is honoured only among
/// the versions served right now: a request never changes what everyone else is
/// served).
fn named<'s>(
    served: &'s crate::state::Served,
    wanted: &str,
) -> Result<&'s Arc<LoadedModel>, RecommendError> {
    validate_version(wanted).map_err(|e| RecommendError::BadVersion(e.to_string()))?;
    let primary = served
        .primary
        .as_ref()
        .map_err(|reason| RecommendError::Unavailable(reason.clone()))?;
    std::iter::once(primary)
        .chain(&served.canary)
        .find(|m| m.version == wanted)
        .ok_or_else(|| RecommendError::NotServed {
            wanted: wanted.to_string(),
            serving: primary.version.clone(),
        })
}

/// The Python service's `max(1, round(ms))` (Python rounds halves to even), for
/// clients that read an int.
pub fn whole_ms(precise_ms: f64) -> u64 {
    (precise_ms.round_ties_even() as u64).max(1)
}

impl Service {
    /// Answers `ask` from one snapshot of what is served (a concurrent switch never
    /// mixes versions), comparing with the shadow when the rollout says so.
    pub fn recommend(&self, ask: &Ask) -> Result<Answer, RecommendError> {
        let served = self.served();
        let blocked = self.blocked();
        let primary = served
            .primary
            .as_ref()
            .map_err(|reason| RecommendError::Unavailable(reason.clone()))?;
        // A user-less fold-in has nothing to hash: the primary answers, no shadow.
        let assignment = ask.user_id.map(|u| served.rollout.assign(u));
        let (mut loaded, mut variant): (&Arc<LoadedModel>, Option<&'static str>) = match &assignment
        {
            None => (primary, None),
            Some(a) => match (&served.canary, a.canary) {
                (Some(c), true) => (c, a.variant),
                (None, true) => (primary, None),
                _ => (primary, a.variant),
            },
        };
        if let Some(wanted) = &ask.model {
            loaded = named(&served, wanted)?;
            variant = None;
        }
        let query = self.query(ask, &blocked.ids);
        let ranked = loaded.answer(&query)?;
        if assignment.as_ref().is_some_and(|a| a.shadow) {
            // The shadow's ranking only (no explanations); a shadow that cannot
            // answer (say, no fold-in parameters) is not compared.
            if let Some(shadow) = &served.canary {
                let theirs = shadow.answer(&Query {
                    explain: 0,
                    ..query
                });
                if let Ok(theirs) = theirs {
                    let ours: HashSet<u32> = ranked.scored.iter().map(|s| s.row).collect();
                    let same = theirs
                        .scored
                        .iter()
                        .filter(|s| ours.contains(&s.row))
                        .count();
                    let overlap = if ranked.scored.is_empty() {
                        1.0
                    } else {
                        same as f64 / ranked.scored.len() as f64
                    };
                    self.metrics
                        .observe_shadow(overlap, &loaded.version, &shadow.version);
                    tracing::info!(user_id = ask.user_id, primary = %loaded.version, shadow = %shadow.version, overlap, "shadow comparison");
                }
            }
        }
        let items = ranked
            .scored
            .iter()
            .map(|s| loaded.model.item_id(s.row))
            .collect();
        Ok(Answer {
            model: loaded.clone(),
            scored: ranked.scored,
            items,
            fallback: ranked.fallback,
            unknown: ranked.unknown,
            variant,
            passed: ranked.passed,
            because: ranked.because,
        })
    }

    fn query<'a>(&'a self, ask: &'a Ask, blocked: &'a [i64]) -> Query<'a> {
        Query {
            user_id: ask.user_id,
            k: ask.k,
            history: ask.history.as_deref(),
            exclude: &ask.exclude,
            blocked,
            filter: ask.filter.as_ref(),
            catalog: Some(&self.titles),
            explain: ask.explain,
        }
    }

    /// The movies most similar to `movie_id` by the primary version (or the served
    /// version `ask.model` names), with `ask`'s k, exclusions and filter and the
    /// blocked set applied.
    pub fn similar(&self, movie_id: i64, ask: &Ask) -> Result<Answer, RecommendError> {
        let served = self.served();
        let blocked = self.blocked();
        let mut loaded = served
            .primary
            .as_ref()
            .map_err(|reason| RecommendError::Unavailable(reason.clone()))?;
        if let Some(wanted) = &ask.model {
            loaded = named(&served, wanted)?;
        }
        let ranked = loaded.similar(movie_id, &self.query(ask, &blocked.ids))?;
        let items = ranked
            .scored
            .iter()
            .map(|s| loaded.model.item_id(s.row))
            .collect();
        Ok(Answer {
            model: loaded.clone(),
            scored: ranked.scored,
            items,
            fallback: None,
            unknown: None,
            variant: None,
            passed: ranked.passed,
            because: None,
        })
    }

    /// The catalog filter for these request values, or why it cannot be built.
    pub fn filter<S: AsRef<str>>(
        &self,
        genres: &[S],
        exclude_genres: &[S],
        year_min: Option<i32>,
        year_max: Option<i32>,
    ) -> Result<Option<ItemFilter>, recs_core::filter::FilterError> {
        ItemFilter::new(&self.titles, genres, exclude_genres, year_min, year_max)
    }

    /// The rollout's variant for `user_id` (what a refused request would have got).
    pub fn variant_of(&self, user_id: i64) -> Option<&'static str> {
        self.served().rollout.assign(user_id).variant
    }

    /// The container image digest reported for `model`.
    pub fn image_digest<'m>(&'m self, model: &'m LoadedModel) -> Option<&'m str> {
        model
            .meta
            .image_digest
            .as_deref()
            .or(self.config.image_digest.as_deref())
    }

    /// Writes the request's trace and exposure: once per request, with its final status.
    pub fn record(&self, request_id: &str, r: Record) {
        let latency_ms = whole_ms(r.latency_ms);
        let model = r.answer.as_ref().map(|a| &a.model);
        let tag = model.map(|m| {
            self.traces.tag(
                &m.version,
                &m.meta.model_name,
                &m.meta.git_sha,
                &m.meta.data_snapshot_id,
            )
        });
        let movie_ids: &[i64] = r.answer.as_ref().map_or(&[], |a| &a.items);
        self.traces.insert(
            request_id,
            Trace {
                user_id: r.user_id,
                k: r.k.min(u32::MAX as usize) as u32,
                model: tag,
                latency_ms,
                latency_ms_precise: r.latency_ms,
                status: r.status,
                ts: r.ts,
                movie_ids: movie_ids.into(),
                variant: r.variant,
                fallback: r.answer.as_ref().and_then(|a| a.fallback),
            },
        );
        let text =
            |f: fn(&LoadedModel) -> &str| model.map(|m| f(m).to_string()).unwrap_or_default();
        self.exposures.record(Exposure {
            request_id: request_id.to_string(),
            ts: r.ts as i64,
            user_id: r.user_id,
            status: r.status,
            latency_ms,
            latency_ms_precise: Some(r.latency_ms),
            k: if model.is_some() { r.k as u64 } else { 0 },
            movie_ids: movie_ids.to_vec(),
            model_version: text(|m| &m.version),
            model_name: text(|m| &m.meta.model_name),
            git_sha: text(|m| &m.meta.git_sha),
            data_snapshot_id: text(|m| &m.meta.data_snapshot_id),
            container_image_digest: model.and_then(|m| self.image_digest(m)).map(String::from),
            variant: r.variant.map(String::from),
        });
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
}
