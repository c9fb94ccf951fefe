//! One served version's answer to one question: a known user's top-k, a fold-in of
//! a history, or the popularity ranking, with the exclusions applied. What the HTTP
//! routes, the CLI and the tests all ask a [`LoadedModel`]; nothing here knows HTTP.

use std::collections::HashSet;

use crate::foldin::FoldInParams;
use crate::model::merge_sorted;
use crate::{AlsModel, LoadedModel, PopularityModel, Scored, ServedModel};

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
}

/// Why a model cannot answer.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum AnswerError {
    /// A fold-in of a version that records no fold-in parameters, or that failed.
    #[error("model version {version}: {reason}")]
    FoldIn {
        /// The version asked.
        version: String,
        /// Why.
        reason: String,
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
        let known_row = q.user_id.and_then(|u| model.user_row(u));
        let Some(history) = q.history else {
            return Ok(match known_row {
                Some(row) => Ranked {
                    scored: model.recommend_row_excluding(row, &excluded, q.k),
                    fallback: None,
                    unknown: None,
                },
                None => Ranked {
                    scored: popular_excluding(model, &excluded, q.k),
                    fallback: Some("popularity"),
                    unknown: None,
                },
            });
        };
        let (mut rows, unknown) = rows_of(model, history);
        // A known user: the given interactions are newer ones, on top of the training row.
        if let Some(row) = known_row {
            rows = merge_sorted(&rows, model.seen().row(row));
        }
        let excluded = merge_sorted(&excluded, &rows);
        if rows.is_empty() {
            return Ok(Ranked {
                scored: popular_excluding(model, &excluded, q.k),
                fallback: Some("popularity"),
                unknown: Some(unknown),
            });
        }
        let fold_in_error = |reason: String| AnswerError::FoldIn {
            version: self.version.clone(),
            reason,
        };
        let params = FoldInParams::from_meta(&self.meta.raw, &self.model_meta)
            .map_err(|e| fold_in_error(e.to_string()))?;
        // Interactions carry no strength here: r = 1 each, as a binary training matrix.
        let interactions: Vec<(u32, f32)> = rows.iter().map(|&r| (r, 1.0)).collect();
        let user = model
            .fold_in(&interactions, &params)
            .map_err(|e| fold_in_error(e.to_string()))?;
        Ok(Ranked {
            scored: model.recommend_vector(&user, &excluded, q.k),
            fallback: Some("folded_in"),
            unknown: Some(unknown),
        })
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

/// The popularity ranking without the `excluded` rows (sorted).
fn popular_excluding(model: &AlsModel, excluded: &[u32], k: usize) -> Vec<Scored> {
    model
        .popular(model.n_items())
        .iter()
        .filter(|s| excluded.binary_search(&s.row).is_err())
        .take(k)
        .copied()
        .collect()
}

/// A popularity version's answer: its ranking without the user's seen items (when
/// the version carries them), the history and the exclusions. A history cannot be
/// folded into a ranking, so it only adds exclusions; its unknown ids are listed.
fn popularity_answer(p: &PopularityModel, q: &Query<'_>) -> Ranked {
    let catalogue: HashSet<i64> = p.items().iter().copied().collect();
    let mut dropped: HashSet<i64> = q.exclude.iter().copied().collect();
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
    let scored = ranked
        .into_iter()
        .filter(|s| !dropped.contains(&p.items()[s.row as usize]))
        .take(q.k)
        .collect();
    Ranked {
        scored,
        fallback: None,
        unknown,
    }
}
