//! A popularity version: one ranking of movie ids for everyone, optionally with the
//! users' seen items so a known user is not shown what they already watched, and
//! [`ServedModel`], what the serving code holds (ALS or popularity).
//!
//! Layout (`<version>/popularity/`, DESIGN.md "Model registry"):
//!
//! ```text
//! items.json      movie ids, most popular first (required)
//! counts.json     interaction counts in the same order (optional; the score)
//! users.json      raw user ids, one per seen_csr row   } optional, together
//! seen_csr.npz    users x items (columns in items.json order)
//! meta.json       how the ranking was made (optional)
//! ```
//!
//! The Python team's `v_popularity/model.pkl` (a pickled list) is read as the same
//! model without counts or seen items.

use std::collections::HashMap;

use crate::csr::CsrPattern;
use crate::model::{index_ids, AlsModel, ModelError};
use crate::topk::Scored;

/// Users' seen items, for excluding them from a popularity ranking.
#[derive(Debug)]
struct Seen {
    users: Vec<i64>,
    user_rows: HashMap<i64, u32>,
    seen: CsrPattern,
}

/// A verified popularity ranking.
#[derive(Debug)]
pub struct PopularityModel {
    /// Movie ids, most popular first.
    items: Vec<i64>,
    /// The ranking with its scores (counts, or a descending rank when none were stored).
    ranked: Vec<Scored>,
    seen: Option<Seen>,
}

impl PopularityModel {
    /// Verifies and assembles a ranking: non-empty, unique ids, counts (when given)
    /// as many as the ids, finite and non-increasing; seen users (when given) unique,
    /// with a users x items matrix.
    pub fn new(
        items: Vec<i64>,
        counts: Option<Vec<f64>>,
        seen: Option<(Vec<i64>, CsrPattern)>,
    ) -> Result<Self, ModelError> {
        if items.is_empty() {
            return Err(ModelError::Empty {
                users: seen.as_ref().map_or(0, |s| s.0.len()),
                items: 0,
                factors: 0,
            });
        }
        index_ids(&items, "popularity/items.json")?;
        let n = items.len();
        let scores: Vec<f32> = match counts {
            Some(c) => {
                if c.len() != n {
                    return Err(ModelError::Ranking(format!(
                        "counts.json has {} entries but items.json lists {n} items",
                        c.len()
                    )));
                }
                if let Some(i) = c.iter().position(|v| !v.is_finite()) {
                    return Err(ModelError::Ranking(format!(
                        "counts.json entry {i} is not finite"
                    )));
                }
                if let Some(i) = c.windows(2).position(|w| w[1] > w[0]) {
                    return Err(ModelError::Ranking(format!(
                        "counts.json is not in descending order at entry {} ({} after {})",
                        i + 1,
                        c[i + 1],
                        c[i]
                    )));
                }
                c.into_iter().map(|v| v as f32).collect()
            }
            // Only an order is known: the score is how many items rank below.
            None => (0..n).map(|i| (n - i) as f32).collect(),
        };
        let ranked = scores
            .into_iter()
            .enumerate()
            .map(|(row, score)| Scored {
                row: row as u32,
                score,
            })
            .collect();
        let seen = match seen {
            None => None,
            Some((users, seen)) => {
                let user_rows = index_ids(&users, "popularity/users.json")?;
                if seen.rows != users.len() || seen.cols != n {
                    return Err(ModelError::SeenShape {
                        rows: seen.rows,
                        cols: seen.cols,
                        users: users.len(),
                        items: n,
                    });
                }
                Some(Seen {
                    users,
                    user_rows,
                    seen,
                })
            }
        };
        Ok(PopularityModel {
            items,
            ranked,
            seen,
        })
    }

    /// Movie ids, most popular first.
    pub fn items(&self) -> &[i64] {
        &self.items
    }

    /// Raw ids of the users whose seen items the version carries, in row order.
    pub fn users(&self) -> &[i64] {
        self.seen.as_ref().map_or(&[], |s| &s.users)
    }

    /// Users whose seen items the version carries (0 when it carries none).
    pub fn n_users(&self) -> usize {
        self.seen.as_ref().map_or(0, |s| s.user_rows.len())
    }

    /// The `k` most popular items not seen by `user_id` (all of them when the version
    /// carries no seen items or does not know the user).
    pub fn recommend(&self, user_id: i64, k: usize) -> Vec<Scored> {
        let seen_row = self.seen.as_ref().and_then(|s| {
            let row = *s.user_rows.get(&user_id)? as usize;
            Some(s.seen.row(row))
        });
        match seen_row {
            None => self.popular(k).to_vec(),
            // Rows are ranks and `seen` is sorted: one forward pass skips them.
            Some(seen) => {
                let mut next_seen = seen.iter().copied().peekable();
                let mut out = Vec::with_capacity(k.min(self.ranked.len()));
                for s in &self.ranked {
                    if out.len() == k {
                        break;
                    }
                    if next_seen.peek() == Some(&s.row) {
                        next_seen.next();
                        continue;
                    }
                    out.push(*s);
                }
                out
            }
        }
    }

    /// The `k` most popular items.
    pub fn popular(&self, k: usize) -> &[Scored] {
        &self.ranked[..k.min(self.ranked.len())]
    }
}

/// What a verified version serves: an ALS model or a popularity ranking.
#[derive(Debug)]
// One per loaded version, behind an Arc: the enum's size never multiplies, and
// boxing would add a pointer chase to every request.
#[allow(clippy::large_enum_variant)]
pub enum ServedModel {
    /// Matrix factorisation; unknown users get its popularity fallback.
    Als(AlsModel),
    /// One ranking for everyone, minus each user's seen items when carried.
    Popularity(PopularityModel),
}

impl ServedModel {
    /// The ALS model, when this is one (training, evaluation and drift need it).
    pub fn als(&self) -> Option<&AlsModel> {
        match self {
            ServedModel::Als(m) => Some(m),
            ServedModel::Popularity(_) => None,
        }
    }

    /// `als` or `popularity`.
    pub fn kind(&self) -> &'static str {
        match self {
            ServedModel::Als(_) => "als",
            ServedModel::Popularity(_) => "popularity",
        }
    }

    /// Users the model knows (for popularity: users whose seen items it carries).
    pub fn n_users(&self) -> usize {
        match self {
            ServedModel::Als(m) => m.n_users(),
            ServedModel::Popularity(m) => m.n_users(),
        }
    }

    /// Items the model can recommend.
    pub fn n_items(&self) -> usize {
        match self {
            ServedModel::Als(m) => m.n_items(),
            ServedModel::Popularity(m) => m.items().len(),
        }
    }

    /// Latent factors (0 for popularity).
    pub fn factors(&self) -> usize {
        match self {
            ServedModel::Als(m) => m.factors(),
            ServedModel::Popularity(_) => 0,
        }
    }

    /// The raw movie id of an item row of this model.
    pub fn item_id(&self, row: u32) -> i64 {
        match self {
            ServedModel::Als(m) => m.item_id(row),
            ServedModel::Popularity(m) => m.items[row as usize],
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn excludes_seen_items_of_known_users() {
        // User 7 has seen ranks 0 and 2 (movies 30 and 10).
        let m = PopularityModel::new(
            vec![30, 20, 10, 40],
            Some(vec![9.0, 5.0, 5.0, 1.0]),
            Some((
                vec![7, 8],
                CsrPattern::from_rows(4, vec![vec![0, 2], vec![]]),
            )),
        )
        .unwrap();
        let ids = |v: Vec<Scored>| {
            v.iter()
                .map(|s| m.items()[s.row as usize])
                .collect::<Vec<_>>()
        };
        assert_eq!(ids(m.recommend(7, 2)), vec![20, 40]);
        assert_eq!(ids(m.recommend(8, 2)), vec![30, 20]);
        assert_eq!(ids(m.recommend(99, 10)), vec![30, 20, 10, 40]);
        assert_eq!(m.recommend(7, 10).len(), 2);
        assert_eq!(m.recommend(7, 1)[0].score, 5.0);
    }

    #[test]
    fn without_counts_the_order_is_the_score() {
        let m = PopularityModel::new(vec![5, 6, 7], None, None).unwrap();
        let s: Vec<f32> = m.popular(3).iter().map(|s| s.score).collect();
        assert_eq!(s, vec![3.0, 2.0, 1.0]);
        let top = m.recommend(1, 2);
        let served = ServedModel::Popularity(m);
        assert_eq!(served.item_id(top[1].row), 6);
        assert_eq!(
            (served.n_items(), served.factors(), served.kind()),
            (3, 0, "popularity")
        );
    }

    #[test]
    fn refuses_bad_rankings() {
        assert!(matches!(
            PopularityModel::new(vec![], None, None),
            Err(ModelError::Empty { .. })
        ));
        assert!(matches!(
            PopularityModel::new(vec![1, 2, 1], None, None),
            Err(ModelError::DuplicateId {
                id: 1,
                first: 0,
                second: 2,
                ..
            })
        ));
        let e = PopularityModel::new(vec![1, 2], Some(vec![1.0, 2.0]), None).unwrap_err();
        assert!(e.to_string().contains("descending"), "{e}");
        let e = PopularityModel::new(vec![1, 2], Some(vec![1.0]), None).unwrap_err();
        assert!(e.to_string().contains("1 entries"), "{e}");
        let e = PopularityModel::new(vec![1, 2], Some(vec![f64::NAN, 1.0]), None).unwrap_err();
        assert!(e.to_string().contains("not finite"), "{e}");
        assert!(matches!(
            PopularityModel::new(
                vec![1, 2],
                None,
                Some((vec![3], CsrPattern::from_rows(3, vec![vec![]])))
            ),
            Err(ModelError::SeenShape { .. })
        ));
    }
}
