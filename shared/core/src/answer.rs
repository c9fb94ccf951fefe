//! One served version's answer to one question: a known user's top-k, a fold-in of
//! a history, or the popularity ranking, with the exclusions, the takedowns and the
//! catalog filter applied, and, when asked, why each movie is there; and a movie's
//! most similar movies. What the HTTP routes, the batch job, the CLI and the tests
//! all ask a [`LoadedModel`]; nothing here knows HTTP.

use std::collections::HashSet;
use std::sync::Arc;

use crate::filter::{Allowed, ItemAttributes, ItemFilter};
use crate::foldin::FoldInParams;
use crate::model::merge_sorted;
use crate::{AlsModel, LoadedModel, PopularityModel, Scored, ServedModel, Titles};

/// What is asked of a model.
#[derive(Debug, Clone, Copy, Default)]
pub struct Query<'a> {
    /// The user (`None`: a user the service has never seen, with a history).
    pub user_id: Option<i64>,
    /// How many movies at most.
    pub k: usize,
    /// Fold in these movie ids (with a known user: on top of the training ones).
    pub history: Option<&'a [i64]>,
    /// Movie ids never to return, on top of the seen (and history) items.
    pub exclude: &'a [i64],
    /// Blocked movie ids (takedowns), ascending: never returned by any answer.
    pub blocked: &'a [i64],
    /// Only movies that pass this filter, judged on `catalog`.
    pub filter: Option<&'a ItemFilter>,
    /// The catalog the filter reads (genres, years); without one no movie has any.
    pub catalog: Option<&'a Titles>,
    /// Explain each movie by the user's `explain` most contributing interactions (0: no).
    pub explain: usize,
}

/// Why each answered movie is there ([`Query::explain`]).
#[derive(Debug, Clone, PartialEq)]
pub enum Because {
    /// A popularity ranking: the movies are popular, nobody's history chose them.
    Popular,
    /// Per movie (in answer order), the (movie id, contribution) of the user's
    /// history items that add most to its score, largest first.
    History(Vec<Vec<(i64, f64)>>),
}

/// A model's ranking for a [`Query`].
#[derive(Debug, Clone, PartialEq)]
pub struct Ranked {
    /// The ranking, best first, at most `k`.
    pub scored: Vec<Scored>,
    /// `popularity` (an unknown user or history) or `folded_in`; `None` for a
    /// known user's own ranking.
    pub fallback: Option<&'static str>,
    /// Fold-in only: the history's movie ids the model does not know (ignored).
    pub unknown: Option<Vec<i64>>,
    /// With a filter: how many of the version's movies pass it (before the seen,
    /// excluded and blocked ones are taken out), so a short answer says why.
    pub passed: Option<usize>,
    /// With [`Query::explain`] > 0: why.
    pub because: Option<Because>,
}

/// Why a model cannot answer.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum AnswerError {
    /// A fold-in (or an explanation) of a version that records no fold-in
    /// parameters, or that failed.
    #[error("model version {version}: {reason}")]
    FoldIn {
        /// The version asked.
        version: String,
        /// Why.
        reason: String,
    },
}

/// Why a version cannot say which movies are similar to one.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum SimilarError {
    /// The version does not know the movie.
    #[error("movie {movie_id} is not in model version {version}")]
    UnknownItem {
        /// The movie asked about.
        movie_id: i64,
        /// The version asked.
        version: String,
    },
    /// A popularity version has no item factors to compare.
    #[error("model version {version} is a popularity ranking; it has no item factors to compare movies by")]
    NotSupported {
        /// The version asked.
        version: String,
    },
}

impl LoadedModel {
    /// This version's answer to `q`.
    pub fn answer(&self, q: &Query<'_>) -> Result<Ranked, AnswerError> {
        let model = match &self.model {
            ServedModel::Als(model) => model,
            ServedModel::Popularity(p) => return Ok(popularity_answer(p, q)),
        };
        let (excluded, _) = rows_of(model, q.exclude);
        let (blocked, _) = rows_of(model, q.blocked);
        let excluded = merge_sorted(&excluded, &blocked);
        let allowed = q.filter.map(|f| self.allowed(f, q.catalog));
        let passed = allowed.as_ref().map(|a| a.count());
        let known_row = q.user_id.and_then(|u| model.user_row(u));
        let popular = |excluded: &[u32], unknown: Option<Vec<i64>>| Ranked {
            scored: popular_excluding(model, excluded, allowed.as_deref(), q.k),
            fallback: Some("popularity"),
            unknown,
            passed,
            because: (q.explain > 0).then_some(Because::Popular),
        };
        let Some(history) = q.history else {
            let Some(row) = known_row else {
                return Ok(popular(&excluded, None));
            };
            let user = model.user_factors().row(row);
            let user = user.as_slice().expect("C order");
            let seen = model.seen().row(row);
            let scored = model.recommend_vector_in(
                user,
                &merge_sorted(seen, &excluded),
                allowed.as_deref(),
                q.k,
            );
            let because = self.because(model, q.explain, seen, &scored)?;
            return Ok(Ranked {
                scored,
                fallback: None,
                unknown: None,
                passed,
                because,
            });
        };
        let (mut rows, unknown) = rows_of(model, history);
        // A known user: the given interactions are newer ones, on top of the training row.
        if let Some(row) = known_row {
            rows = merge_sorted(&rows, model.seen().row(row));
        }
        let excluded = merge_sorted(&excluded, &rows);
        if rows.is_empty() {
            return Ok(popular(&excluded, Some(unknown)));
        }
        let params = self.fold_in_params()?;
        // Interactions carry no strength here: r = 1 each, as a binary training matrix.
        let interactions: Vec<(u32, f32)> = rows.iter().map(|&r| (r, 1.0)).collect();
        let user = model
            .fold_in(&interactions, &params)
            .map_err(|e| self.fold_in_error(e.to_string()))?;
        let scored = model.recommend_vector_in(&user, &excluded, allowed.as_deref(), q.k);
        let because = self.because(model, q.explain, &rows, &scored)?;
        Ok(Ranked {
            scored,
            fallback: Some("folded_in"),
            unknown: Some(unknown),
            passed,
            because,
        })
    }

    /// The movies most similar to `movie_id` ([`AlsModel::similar`]), with the
    /// exclusions, takedowns and filter of `q` (its user, history and explain unused).
    pub fn similar(&self, movie_id: i64, q: &Query<'_>) -> Result<Ranked, SimilarError> {
        let model = match &self.model {
            ServedModel::Als(model) => model,
            ServedModel::Popularity(_) => {
                return Err(SimilarError::NotSupported {
                    version: self.version.clone(),
                })
            }
        };
        let row = model
            .item_row(movie_id)
            .ok_or_else(|| SimilarError::UnknownItem {
                movie_id,
                version: self.version.clone(),
            })?;
        let (excluded, _) = rows_of(model, q.exclude);
        let (blocked, _) = rows_of(model, q.blocked);
        let allowed = q.filter.map(|f| self.allowed(f, q.catalog));
        Ok(Ranked {
            scored: model.similar(
                row,
                &merge_sorted(&excluded, &blocked),
                allowed.as_deref(),
                q.k,
            ),
            fallback: None,
            unknown: None,
            passed: allowed.as_ref().map(|a| a.count()),
            because: None,
        })
    }

    /// Whether this version can return the movie.
    pub fn knows_item(&self, movie_id: i64) -> bool {
        match &self.model {
            ServedModel::Als(m) => m.item_row(movie_id).is_some(),
            ServedModel::Popularity(p) => p.items().contains(&movie_id),
        }
    }

    /// The rows of this version that pass `filter`, judged on `catalog`.
    fn allowed(&self, filter: &ItemFilter, catalog: Option<&Titles>) -> Arc<Allowed> {
        self.item_attributes.allowed(filter, || {
            let empty = Titles::default();
            let catalog = catalog.unwrap_or(&empty);
            match &self.model {
                ServedModel::Als(m) => ItemAttributes::new(catalog, m.items()),
                ServedModel::Popularity(p) => ItemAttributes::new(catalog, p.items()),
            }
        })
    }

    fn fold_in_error(&self, reason: String) -> AnswerError {
        AnswerError::FoldIn {
            version: self.version.clone(),
            reason,
        }
    }

    fn fold_in_params(&self) -> Result<FoldInParams, AnswerError> {
        FoldInParams::from_meta(&self.meta.raw, &self.model_meta)
            .map_err(|e| self.fold_in_error(e.to_string()))
    }

    /// The explanation of `scored` by `history` (item rows, r = 1 each), when asked.
    fn because(
        &self,
        model: &AlsModel,
        n: usize,
        history: &[u32],
        scored: &[Scored],
    ) -> Result<Option<Because>, AnswerError> {
        if n == 0 {
            return Ok(None);
        }
        let params = self.fold_in_params()?;
        let interactions: Vec<(u32, f32)> = history.iter().map(|&r| (r, 1.0)).collect();
        let targets: Vec<u32> = scored.iter().map(|s| s.row).collect();
        let parts = model
            .explain(&interactions, &params, &targets, n)
            .map_err(|e| self.fold_in_error(e.to_string()))?;
        Ok(Some(Because::History(
            parts
                .into_iter()
                .map(|p| p.into_iter().map(|(r, c)| (model.item_id(r), c)).collect())
                .collect(),
        )))
    }
}

/// Sorted, repeat-free item rows of the known ids among `ids`, and the unknown ids
/// (in the order given, repeats dropped).
fn rows_of(model: &AlsModel, ids: &[i64]) -> (Vec<u32>, Vec<i64>) {
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

/// The popularity ranking without the `excluded` rows (sorted), among the `allowed` ones.
fn popular_excluding(
    model: &AlsModel,
    excluded: &[u32],
    allowed: Option<&Allowed>,
    k: usize,
) -> Vec<Scored> {
    model
        .popular(model.n_items())
        .iter()
        .filter(|s| excluded.binary_search(&s.row).is_err())
        .filter(|s| allowed.is_none_or(|a| a.contains(s.row)))
        .take(k)
        .copied()
        .collect()
}

/// A popularity version's answer: its ranking without the user's seen items (when
/// the version carries them), the history and the exclusions. A history cannot be
/// folded into a ranking, so it only adds exclusions; its unknown ids are listed.
fn popularity_answer(p: &PopularityModel, q: &Query<'_>) -> Ranked {
    let catalogue: HashSet<i64> = p.items().iter().copied().collect();
    let mut dropped: HashSet<i64> = q.exclude.iter().chain(q.blocked).copied().collect();
    let mut unknown = None;
    if let Some(history) = q.history {
        dropped.extend(history);
        let mut missing: Vec<i64> = Vec::new();
        for id in history {
            if !catalogue.contains(id) && !missing.contains(id) {
                missing.push(*id);
            }
        }
        unknown = Some(missing);
    }
    let ranked = match q.user_id {
        Some(user) => p.recommend(user, p.items().len()),
        None => p.popular(p.items().len()).to_vec(),
    };
    let passes = |id: i64| {
        q.filter.is_none_or(|f| {
            let (genres, year) = q.catalog.map_or((0, None), |c| c.attributes(id));
            f.passes(genres, year)
        })
    };
    let scored = ranked
        .into_iter()
        .filter(|s| {
            let id = p.items()[s.row as usize];
            !dropped.contains(&id) && passes(id)
        })
        .take(q.k)
        .collect();
    Ranked {
        scored,
        fallback: None,
        unknown,
        passed: q
            .filter
            .map(|_| p.items().iter().filter(|&&id| passes(id)).count()),
        because: (q.explain > 0).then_some(Because::Popular),
    }
}
