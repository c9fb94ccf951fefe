//! A verified, servable implicit-feedback ALS model: factor matrices, id lists, the
//! training interactions to exclude, and a popularity ranking for unknown users.
//! Every check happens in [`AlsModel::new`]; a value of this type is always servable.

use std::collections::HashMap;

use ndarray::Array2;

#[cfg(feature = "ann")]
use crate::ann::{AnnError, AnnIndex};
use crate::csr::CsrPattern;
use crate::filter::Allowed;
use crate::foldin::{self, FoldInError, FoldInParams};
use crate::score;
use crate::topk::{Scored, TopK};

/// Item rows scored per kernel call in [`AlsModel::recommend_vector`] (stack buffer).
const SCORE_BLOCK: usize = 256;

/// Why a set of model artifacts is not servable.
#[derive(Debug, thiserror::Error, PartialEq)]
pub enum ModelError {
    /// User and item factors have each other's row counts (the trainer's `fit(UI.T)` bug).
    #[error(
        "factors look swapped: user_factors.npy is {user_rows}x{f_user} but users.json lists {n_users} users, \
         item_factors.npy is {item_rows}x{f_item} but items.json lists {n_items} items \
         (the Python trainer's fit(UI.T) bug); refusing to serve it"
    )]
    Swapped {
        /// Rows of `user_factors.npy`.
        user_rows: usize,
        /// Columns (factors) of `user_factors.npy`.
        f_user: usize,
        /// Rows of `item_factors.npy`.
        item_rows: usize,
        /// Columns (factors) of `item_factors.npy`.
        f_item: usize,
        /// Ids listed in `users.json`.
        n_users: usize,
        /// Ids listed in `items.json`.
        n_items: usize,
    },
    /// A factor matrix's row count differs from the length of its id list.
    #[error("{file} has {rows} rows but {ids} lists {n} ids")]
    RowMismatch {
        /// The factor file, `user_factors.npy` or `item_factors.npy`.
        file: &'static str,
        /// Rows in that file.
        rows: usize,
        /// The id list it must match, `users.json` or `items.json`.
        ids: &'static str,
        /// Ids in that list.
        n: usize,
    },
    /// User and item factors have different column counts (user, item).
    #[error("factor widths differ: user_factors has {0} columns, item_factors has {1}")]
    WidthMismatch(usize, usize),
    /// A factor file is not 2-D (file name, shape found).
    #[error("{0} must be a 2-D array, found shape {1:?}")]
    NotMatrix(&'static str, Vec<usize>),
    /// The model has no users, no items or zero factors.
    #[error("empty model: {users} users, {items} items, {factors} factors")]
    Empty {
        /// Number of users.
        users: usize,
        /// Number of items.
        items: usize,
        /// Number of factors (columns).
        factors: usize,
    },
    /// A factor matrix holds a NaN or infinity; the first one is reported.
    #[error("{file} has a non-finite value ({value}) at row {row}, column {col}")]
    NonFinite {
        /// The factor file holding it.
        file: &'static str,
        /// Row of the first non-finite value.
        row: usize,
        /// Column of the first non-finite value.
        col: usize,
        /// The value itself (NaN or an infinity).
        value: f32,
    },
    /// An id list names the same id twice.
    #[error("{ids} lists id {id} twice (rows {first} and {second})")]
    DuplicateId {
        /// The id list, `users.json` or `items.json`.
        ids: &'static str,
        /// The repeated raw id.
        id: i64,
        /// Row of its first occurrence.
        first: usize,
        /// Row of the repeat.
        second: usize,
    },
    /// A popularity ranking is inconsistent (counts length, order, finiteness).
    #[error("popularity ranking: {0}")]
    Ranking(String),
    /// The seen-interactions matrix is not users x items.
    #[error("seen_csr.npz is {rows}x{cols} but the model has {users} users and {items} items")]
    SeenShape {
        /// Rows of `seen_csr.npz`.
        rows: usize,
        /// Columns of `seen_csr.npz`.
        cols: usize,
        /// Users in the model.
        users: usize,
        /// Items in the model.
        items: usize,
    },
}

/// A servable ALS model.
#[derive(Debug)]
pub struct AlsModel {
    user_factors: Array2<f32>,
    item_factors: Array2<f32>,
    users: Vec<i64>,
    items: Vec<i64>,
    user_rows: HashMap<i64, u32>,
    item_rows: HashMap<i64, u32>,
    seen: CsrPattern,
    /// Item rows by descending interaction count, ties by lower row.
    popularity: Vec<Scored>,
    /// YᵀY of the item factors (f x f, f64), computed once here for fold-in.
    gram: Vec<f64>,
    /// Each item factor row's Euclidean norm (0 stored as 1e-10, as implicit), for
    /// [`similar`](Self::similar).
    item_norms: Vec<f32>,
    /// int8 copies of the item factors for the bounding first pass, for catalogues
    /// of at least [`QUANTIZED_MIN_ITEMS`] items.
    quantized: Option<score::QuantizedItems>,
    /// The version's HNSW index (`als/hnsw.idx`), when it has one.
    #[cfg(feature = "ann")]
    ann: Option<AnnIndex>,
}

/// A filter passing at most 1/`GATHER_RATIO` of the catalogue is answered by
/// scoring only its rows rather than scanning them all.
pub const GATHER_RATIO: usize = 16;

/// Catalogues from this size on are scanned in int8 first, then the rows that can
/// still reach the top k are scored exactly (the same top k as a full f32 scan).
pub const QUANTIZED_MIN_ITEMS: usize = 32_768;

/// The shape of a factor matrix as read from its `.npy`: (rows, cols, C-order data).
pub struct Factors {
    /// Dimensions from the `.npy` header; [`AlsModel::new`] requires exactly two.
    pub shape: Vec<usize>,
    /// Elements in C (row-major) order, as many as the shape's product.
    pub data: Vec<f32>,
}

fn matrix(name: &'static str, f: Factors) -> Result<Array2<f32>, ModelError> {
    match f.shape[..] {
        [r, c] => Ok(Array2::from_shape_vec((r, c), f.data).expect("npy reader checked the size")),
        _ => Err(ModelError::NotMatrix(name, f.shape)),
    }
}

/// Row of each id; a repeated id is refused, naming both rows (ALS and popularity).
pub(crate) fn index_ids(ids: &[i64], name: &'static str) -> Result<HashMap<i64, u32>, ModelError> {
    let mut map = HashMap::with_capacity(ids.len());
    for (row, &id) in ids.iter().enumerate() {
        if let Some(first) = map.insert(id, row as u32) {
            return Err(ModelError::DuplicateId {
                ids: name,
                id,
                first: first as usize,
                second: row,
            });
        }
    }
    Ok(map)
}

/// The first NaN or infinity of a C-order matrix with `cols` columns, as
/// (row, column, value).
pub fn first_non_finite(data: &[f32], cols: usize) -> Option<(usize, usize, f32)> {
    let cols = cols.max(1);
    let i = data.iter().position(|v| !v.is_finite())?;
    Some((i / cols, i % cols, data[i]))
}

fn check_finite(m: &Array2<f32>, file: &'static str) -> Result<(), ModelError> {
    match first_non_finite(m.as_slice().expect("C order"), m.ncols()) {
        None => Ok(()),
        Some((row, col, value)) => Err(ModelError::NonFinite {
            file,
            row,
            col,
            value,
        }),
    }
}

/// Items by how many users have seen them, most first (ties by row).
fn popularity_order(seen: &CsrPattern) -> Vec<Scored> {
    let mut popularity: Vec<Scored> = seen
        .column_counts()
        .into_iter()
        .enumerate()
        .map(|(row, c)| Scored {
            row: row as u32,
            score: c as f32,
        })
        .collect();
    popularity.sort_by(|a, b| b.score.total_cmp(&a.score).then(a.row.cmp(&b.row)));
    popularity
}

impl AlsModel {
    /// Verifies and assembles a model. Refuses swapped factors, row counts that do
    /// not match the id lists, unequal widths, empty models, non-finite values,
    /// duplicate ids and a seen matrix of the wrong shape.
    pub fn new(
        user_factors: Factors,
        item_factors: Factors,
        users: Vec<i64>,
        items: Vec<i64>,
        seen: CsrPattern,
    ) -> Result<Self, ModelError> {
        let uf = matrix("user_factors.npy", user_factors)?;
        let itf = matrix("item_factors.npy", item_factors)?;
        let (n_users, n_items) = (users.len(), items.len());
        if uf.nrows() != n_users || itf.nrows() != n_items {
            if uf.nrows() == n_items && itf.nrows() == n_users && n_users != n_items {
                return Err(ModelError::Swapped {
                    user_rows: uf.nrows(),
                    f_user: uf.ncols(),
                    item_rows: itf.nrows(),
                    f_item: itf.ncols(),
                    n_users,
                    n_items,
                });
            }
            return Err(if uf.nrows() != n_users {
                ModelError::RowMismatch {
                    file: "user_factors.npy",
                    rows: uf.nrows(),
                    ids: "users.json",
                    n: n_users,
                }
            } else {
                ModelError::RowMismatch {
                    file: "item_factors.npy",
                    rows: itf.nrows(),
                    ids: "items.json",
                    n: n_items,
                }
            });
        }
        if uf.ncols() != itf.ncols() {
            return Err(ModelError::WidthMismatch(uf.ncols(), itf.ncols()));
        }
        if n_users == 0 || n_items == 0 || uf.ncols() == 0 {
            return Err(ModelError::Empty {
                users: n_users,
                items: n_items,
                factors: uf.ncols(),
            });
        }
        check_finite(&uf, "user_factors.npy")?;
        check_finite(&itf, "item_factors.npy")?;
        let user_rows = index_ids(&users, "users.json")?;
        let item_rows = index_ids(&items, "items.json")?;
        if seen.rows != n_users || seen.cols != n_items {
            return Err(ModelError::SeenShape {
                rows: seen.rows,
                cols: seen.cols,
                users: n_users,
                items: n_items,
            });
        }
        // What serving derives from the factors: the Gram matrix (fold-in) on one
        // core, the int8 items (first pass) and the popularity order on the other.
        let items_flat = itf.as_slice().expect("C order");
        let (gram, (quantized, popularity)) = rayon::join(
            || foldin::gram(items_flat, itf.ncols()),
            || {
                let quantized = (n_items >= QUANTIZED_MIN_ITEMS
                    && itf.ncols() <= score::QuantizedUser::MAX_FACTORS)
                    .then(|| score::QuantizedItems::new(items_flat, itf.ncols()));
                (quantized, popularity_order(&seen))
            },
        );
        let item_norms = items_flat
            .chunks_exact(itf.ncols())
            .map(|y| match y.iter().map(|v| v * v).sum::<f32>().sqrt() {
                0.0 => 1e-10,
                n => n,
            })
            .collect();
        Ok(AlsModel {
            user_factors: uf,
            item_factors: itf,
            users,
            items,
            user_rows,
            item_rows,
            seen,
            popularity,
            gram,
            item_norms,
            quantized,
            #[cfg(feature = "ann")]
            ann: None,
        })
    }

    #[cfg(feature = "ann")]
    /// Attaches an HNSW index built over this model's item factors; refused when it
    /// indexes another number of items or factors.
    pub fn with_ann(mut self, index: AnnIndex) -> Result<Self, AnnError> {
        index.check_shape(self.n_items(), self.factors())?;
        self.ann = Some(index);
        Ok(self)
    }

    /// The attached HNSW index, if any.
    #[cfg(feature = "ann")]
    pub fn ann(&self) -> Option<&AnnIndex> {
        self.ann.as_ref()
    }

    /// True when [`recommend_vector`](Self::recommend_vector) answers from the HNSW
    /// index (the version has one and `RECS_SEARCH` is not `exact`).
    pub fn uses_ann(&self) -> bool {
        #[cfg(feature = "ann")]
        return self.ann.is_some() && crate::ann::index_enabled();
        #[cfg(not(feature = "ann"))]
        false
    }

    /// Number of users (rows of the user factors).
    pub fn n_users(&self) -> usize {
        self.users.len()
    }

    /// Number of items (rows of the item factors).
    pub fn n_items(&self) -> usize {
        self.items.len()
    }

    /// Number of latent factors (columns of both factor matrices).
    pub fn factors(&self) -> usize {
        self.user_factors.ncols()
    }

    /// Raw user ids in row order.
    pub fn users(&self) -> &[i64] {
        &self.users
    }

    /// Raw movie ids in row order.
    pub fn items(&self) -> &[i64] {
        &self.items
    }

    /// The training interactions (users x items).
    pub fn seen(&self) -> &CsrPattern {
        &self.seen
    }

    /// The users x factors matrix, rows in [`users`](Self::users) order.
    pub fn user_factors(&self) -> &Array2<f32> {
        &self.user_factors
    }

    /// The items x factors matrix, rows in [`items`](Self::items) order.
    pub fn item_factors(&self) -> &Array2<f32> {
        &self.item_factors
    }

    /// The raw movie id of an item row.
    pub fn item_id(&self, row: u32) -> i64 {
        self.items[row as usize]
    }

    /// The row of a raw user id, if the model knows the user.
    pub fn user_row(&self, user_id: i64) -> Option<usize> {
        self.user_rows.get(&user_id).map(|&r| r as usize)
    }

    /// The row of a raw movie id, if the model knows the item.
    pub fn item_row(&self, movie_id: i64) -> Option<u32> {
        self.item_rows.get(&movie_id).copied()
    }

    /// Top-`k` unseen items for a known user row by dot-product score, best first;
    /// equal scores rank the lower row first.
    pub fn recommend_row(&self, user_row: usize, k: usize) -> Vec<Scored> {
        self.recommend_row_excluding(user_row, &[], k)
    }

    /// [`recommend_row`](Self::recommend_row), also leaving out `extra` item rows
    /// (sorted, no repeats): request exclusions merged with the seen items.
    pub fn recommend_row_excluding(&self, user_row: usize, extra: &[u32], k: usize) -> Vec<Scored> {
        let user = self.user_factors.row(user_row);
        let user = user.as_slice().expect("C order");
        let seen = self.seen.row(user_row);
        if extra.is_empty() {
            return self.recommend_vector(user, seen, k);
        }
        self.recommend_vector(user, &merge_sorted(seen, extra), k)
    }

    /// Top-`k` items for any user vector of [`factors`](Self::factors) values,
    /// leaving out the `excluded` item rows (sorted ascending, no repeats), best
    /// first; equal scores rank the lower row first. With an HNSW index (see
    /// [`uses_ann`](Self::uses_ann)) the top k is approximate, the scores exact.
    pub fn recommend_vector(&self, user: &[f32], excluded: &[u32], k: usize) -> Vec<Scored> {
        self.recommend_vector_in(user, excluded, None, k)
    }

    /// [`recommend_vector`](Self::recommend_vector) among the rows `allowed` lets
    /// through (all rows with `None`). A filter that passes at most 1/[`GATHER_RATIO`]
    /// of the catalogue scores just its rows; a wider one runs the usual scan (or
    /// the HNSW search, which falls back to that scan when fewer than k of the rows
    /// it visits pass). Either way the top k among the allowed rows is exact, but
    /// for the HNSW search's own approximation.
    pub fn recommend_vector_in(
        &self,
        user: &[f32],
        excluded: &[u32],
        allowed: Option<&Allowed>,
        k: usize,
    ) -> Vec<Scored> {
        assert_eq!(user.len(), self.factors(), "user vector width");
        if let Some(a) = allowed {
            assert_eq!(a.rows(), self.n_items(), "filter built for another model");
            if a.count() * GATHER_RATIO <= self.n_items() {
                return self.recommend_gather(user, excluded, a, k);
            }
        }
        #[cfg(feature = "ann")]
        if let Some(ann) = self.ann.as_ref().filter(|_| crate::ann::index_enabled()) {
            let items = self.item_factors.as_slice().expect("C order");
            if let Some(top) = ann.top_k(items, user, excluded, allowed, k) {
                return top;
            }
        }
        self.recommend_scan_in(user, excluded, allowed, k)
    }

    /// The exact top k: [`recommend_vector`](Self::recommend_vector) without the
    /// HNSW index (integer-bounded scan on large catalogues, else a full f32 scan).
    pub fn recommend_scan(&self, user: &[f32], excluded: &[u32], k: usize) -> Vec<Scored> {
        self.recommend_scan_in(user, excluded, None, k)
    }

    /// [`recommend_scan`](Self::recommend_scan) among the rows `allowed` lets through.
    pub fn recommend_scan_in(
        &self,
        user: &[f32],
        excluded: &[u32],
        allowed: Option<&Allowed>,
        k: usize,
    ) -> Vec<Scored> {
        if let (Some(q), true) = (&self.quantized, k > 0) {
            if let Some(uq) = score::QuantizedUser::new(user) {
                return self.recommend_bounded(q, &uq, user, excluded, allowed, k);
            }
        }
        self.recommend_exact_in(user, excluded, allowed, k)
    }

    /// [`recommend_vector`](Self::recommend_vector) by a full f32 scan.
    pub fn recommend_exact(&self, user: &[f32], excluded: &[u32], k: usize) -> Vec<Scored> {
        self.recommend_exact_in(user, excluded, None, k)
    }

    /// [`recommend_exact`](Self::recommend_exact) among the rows `allowed` lets through.
    pub fn recommend_exact_in(
        &self,
        user: &[f32],
        excluded: &[u32],
        allowed: Option<&Allowed>,
        k: usize,
    ) -> Vec<Scored> {
        let items = self.item_factors.as_slice().expect("C order");
        let f = self.factors();
        let simd = score::Simd::detected();
        let mut top = TopK::new(k);
        let mut next_excluded = excluded.iter().copied().peekable();
        let mut buf = [0f32; SCORE_BLOCK];
        for (b, block) in items.chunks(f * SCORE_BLOCK).enumerate() {
            let out = &mut buf[..block.len() / f];
            // Blocked FMA kernel: several item rows per pass (see `score`).
            score::scores_with(simd, user, block, out);
            let first = (b * SCORE_BLOCK) as u32;
            refuse(allowed, first, out);
            for (j, &s) in out.iter().enumerate() {
                let row = first + j as u32;
                // `excluded` is sorted, so one forward pass skips every excluded item.
                if next_excluded.peek() == Some(&row) {
                    next_excluded.next();
                    continue;
                }
                top.push(s, row);
            }
        }
        drop_refused(top.into_sorted(), allowed)
    }

    /// The exact top k among a few allowed rows: each scored alone (the same
    /// arithmetic as the blocked scan), in increasing row order for the tie rule.
    fn recommend_gather(
        &self,
        user: &[f32],
        excluded: &[u32],
        allowed: &Allowed,
        k: usize,
    ) -> Vec<Scored> {
        let items = self.item_factors.as_slice().expect("C order");
        let f = self.factors();
        let simd = score::Simd::detected();
        let mut top = TopK::new(k);
        let mut next_excluded = excluded.iter().copied().peekable();
        let mut one = [0f32];
        for row in allowed.iter() {
            while next_excluded.next_if(|&r| r < row).is_some() {}
            if next_excluded.peek() == Some(&row) {
                continue;
            }
            let r = row as usize;
            score::scores_with(simd, user, &items[r * f..(r + 1) * f], &mut one);
            top.push(one[0], row);
        }
        top.into_sorted()
    }

    /// The `k` items most similar to item `row` by the cosine of their factors, as
    /// implicit's `similar_items` scores them (y_i·y_j / |y_i| / |y_j|, a zero norm
    /// counted as 1e-10), best first, `row` itself, the `excluded` rows (sorted) and
    /// rows `allowed` refuses left out. An exact scan; equal scores rank the lower
    /// row first. `row` must be in range.
    pub fn similar(
        &self,
        row: u32,
        excluded: &[u32],
        allowed: Option<&Allowed>,
        k: usize,
    ) -> Vec<Scored> {
        let items = self.item_factors.as_slice().expect("C order");
        let f = self.factors();
        let r = row as usize;
        let seed = &items[r * f..(r + 1) * f];
        let seed_norm = self.item_norms[r];
        let simd = score::Simd::detected();
        let mut top = TopK::new(k);
        let mut next_excluded = excluded.iter().copied().peekable();
        let mut buf = [0f32; SCORE_BLOCK];
        for (b, block) in items.chunks(f * SCORE_BLOCK).enumerate() {
            let out = &mut buf[..block.len() / f];
            score::scores_with(simd, seed, block, out);
            let first = b * SCORE_BLOCK;
            refuse(allowed, first as u32, out);
            for (j, &s) in out.iter().enumerate() {
                let other = (first + j) as u32;
                if next_excluded.peek() == Some(&other) {
                    next_excluded.next();
                    continue;
                }
                if other == row {
                    continue;
                }
                // -inf (refused) stays -inf.
                let s = s / self.item_norms[first + j] / seed_norm;
                top.push(s, other);
            }
        }
        drop_refused(top.into_sorted(), allowed)
    }

    /// Why the model ranks each of `targets` (item rows) for a user with these
    /// interactions (item row, rating): the `n` interactions that contribute most
    /// to each target's score ([`foldin::explain`], implicit's `explain`).
    pub fn explain(
        &self,
        interactions: &[(u32, f32)],
        params: &FoldInParams,
        targets: &[u32],
        n: usize,
    ) -> Result<Vec<foldin::Contributions>, FoldInError> {
        foldin::explain(
            &self.gram,
            self.item_factors.as_slice().expect("C order"),
            self.factors(),
            interactions,
            params,
            targets,
            n,
        )
    }

    /// The same top k as [`recommend_exact`](Self::recommend_exact), from an integer
    /// pass (int8 items times the 7-bit user) that bounds every score and an exact
    /// f32 pass over the rows whose upper bound reaches the k-th best lower bound.
    ///
    /// With y = s·q + d, |d| <= s/2 per factor, and u = su·p + e, |e| <= su/2, the
    /// integer score s·su·Σq·p is off the true y·u by at most s·(‖u‖₁/2 + ‖q‖₁·su/2);
    /// the f32 scan's own rounding adds at most 2·127·f·ε·s·‖u‖₁, and scaling the
    /// exact integer sum (exact in f32 too) at most 4·127·f·ε·s·max|u|. A row of the
    /// exact top k has an exact score >= the k-th largest exact score >= the k-th
    /// largest lower bound, so its upper bound reaches that threshold and it is
    /// rescored: the result is the exact one. Blocks whose best upper bound is below
    /// the threshold are skipped whole, so most rows cost only the integer pass.
    fn recommend_bounded(
        &self,
        q: &score::QuantizedItems,
        uq: &score::QuantizedUser,
        user: &[f32],
        excluded: &[u32],
        allowed: Option<&Allowed>,
        k: usize,
    ) -> Vec<Scored> {
        let items = self.item_factors.as_slice().expect("C order");
        let f = self.factors();
        let simd = score::Simd::detected();
        let l1: f32 = user.iter().map(|v| v.abs()).sum();
        let max_abs = user.iter().fold(0f32, |m, v| m.max(v.abs()));
        let su = uq.scale();
        let wide = 127.0 * f as f32;
        // Per row: s · (base + ‖q‖₁ · half_su), 1 % over for the f32 arithmetic here.
        let base =
            (l1 * (0.5 + 2.0 * wide * f32::EPSILON) + 4.0 * wide * f32::EPSILON * max_abs) * 1.01;
        let half_su = su * 0.5 * 1.01;
        let scales = q.scales();
        let row_l1 = q.l1();
        let mut lower = TopK::new(k);
        let mut candidates: Vec<(u32, f32)> = Vec::new();
        let mut next_excluded = excluded.iter().copied().peekable();
        let mut raw = [0i32; SCORE_BLOCK];
        let mut approx = [0f32; SCORE_BLOCK];
        let mut err = [0f32; SCORE_BLOCK];
        let n = q.rows();
        let mut first = 0;
        while first < n {
            let len = SCORE_BLOCK.min(n - first);
            q.raw_scores(simd, uq, first, &mut raw[..len]);
            let block_scales = &scales[first..first + len];
            let block_l1 = &row_l1[first..first + len];
            let mut best_upper = f32::NEG_INFINITY;
            for j in 0..len {
                let s = block_scales[j];
                approx[j] = raw[j] as f32 * (s * su);
                err[j] = s * (base + block_l1[j] * half_su);
                best_upper = best_upper.max(approx[j] + err[j]);
            }
            let end = (first + len) as u32;
            if best_upper < lower.threshold() {
                // No row here can enter either list.
                while next_excluded.next_if(|&r| r < end).is_some() {}
                first += len;
                continue;
            }
            for j in 0..len {
                // Most rows fall below the running threshold: their lower bound
                // (below their upper) could not enter the list either.
                let upper = approx[j] + err[j];
                if upper < lower.threshold() {
                    continue;
                }
                let row = (first + j) as u32;
                while next_excluded.next_if(|&r| r < row).is_some() {}
                if next_excluded.next_if_eq(&row).is_some() {
                    continue;
                }
                if allowed.is_some_and(|a| !a.contains(row)) {
                    continue;
                }
                lower.push(approx[j] - err[j], row);
                if upper >= lower.threshold() {
                    candidates.push((row, upper));
                }
            }
            while next_excluded.next_if(|&r| r < end).is_some() {}
            first += len;
        }
        let t = lower.threshold();
        let mut top = TopK::new(k);
        let mut one = [0f32];
        // Candidates are in increasing row order, as the tie rule needs.
        for &(row, upper) in &candidates {
            if upper >= t {
                let r = row as usize;
                score::scores_with(simd, user, &items[r * f..(r + 1) * f], &mut one);
                top.push(one[0], row);
            }
        }
        top.into_sorted()
    }

    /// A user vector from interactions (item row, rating value), by one exact
    /// solve against the cached YᵀY with implicit's `recalculate_user` semantics
    /// ([`foldin`](crate::foldin)). Rows must be in range (from [`item_row`](Self::item_row)).
    pub fn fold_in(
        &self,
        interactions: &[(u32, f32)],
        params: &FoldInParams,
    ) -> Result<Vec<f32>, FoldInError> {
        foldin::solve_user(
            &self.gram,
            self.item_factors.as_slice().expect("C order"),
            self.factors(),
            interactions,
            params,
        )
    }

    /// The `k` most interacted-with items (for users the model does not know).
    pub fn popular(&self, k: usize) -> &[Scored] {
        &self.popularity[..k.min(self.popularity.len())]
    }
}

/// Sets the scores of the rows from `first` on that `allowed` refuses to negative
/// infinity (which only fills slots no passing row wanted; [`drop_refused`] removes
/// it). Refused rows are offered rather than skipped because a branch on a random
/// filter mispredicts half the time; the mask here has no branch per row.
#[inline]
fn refuse(allowed: Option<&Allowed>, first: u32, out: &mut [f32]) {
    if let Some(a) = allowed {
        a.refuse(first as usize, out);
    }
}

/// A top k without the rows [`refuse`] refused (scores are finite: the
/// model's factors are checked finite at load).
fn drop_refused(mut top: Vec<Scored>, allowed: Option<&Allowed>) -> Vec<Scored> {
    if allowed.is_some() {
        top.retain(|s| s.score != f32::NEG_INFINITY);
    }
    top
}

/// The sorted union of two sorted, repeat-free lists.
pub(crate) fn merge_sorted(a: &[u32], b: &[u32]) -> Vec<u32> {
    let mut out = Vec::with_capacity(a.len() + b.len());
    let (mut i, mut j) = (0, 0);
    while i < a.len() && j < b.len() {
        match a[i].cmp(&b[j]) {
            std::cmp::Ordering::Less => {
                out.push(a[i]);
                i += 1;
            }
            std::cmp::Ordering::Greater => {
                out.push(b[j]);
                j += 1;
            }
            std::cmp::Ordering::Equal => {
                out.push(a[i]);
                i += 1;
                j += 1;
            }
        }
    }
    out.extend_from_slice(&a[i..]);
    out.extend_from_slice(&b[j..]);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_int8_bounded_scan_returns_the_exact_top_k() {
        // f = 16 runs the portable integer pass, f = 32 the AVX2 one where present.
        for f in [16, 32] {
            bounded_scan_is_exact(f);
        }
    }

    fn bounded_scan_is_exact(f: usize) {
        let (n_items, n_users) = (QUANTIZED_MIN_ITEMS + 1000, 40);
        let mut state = 0x2545_F491_4F6C_DD1Du64;
        let mut next = move || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            (state >> 40) as f32 / (1u64 << 24) as f32 - 0.5
        };
        let itf: Vec<f32> = (0..n_items * f).map(|_| next()).collect();
        let uf: Vec<f32> = (0..n_users * f).map(|_| next()).collect();
        let seen = (0..n_users)
            .map(|u| {
                (0..30)
                    .map(|j| ((u * 7919 + j * 104_729) % n_items) as u32)
                    .collect()
            })
            .collect();
        let m = AlsModel::new(
            factors(n_users, f, uf),
            factors(n_items, f, itf),
            (0..n_users as i64).collect(),
            (0..n_items as i64).collect(),
            CsrPattern::from_rows(n_items, seen),
        )
        .unwrap();
        assert!(m.quantized.is_some());
        for u in 0..n_users {
            let user = m.user_factors.row(u).to_vec();
            let seen = m.seen.row(u);
            for k in [1, 10, 100] {
                let fast = m.recommend_vector(&user, seen, k);
                let exact = m.recommend_exact(&user, seen, k);
                assert_eq!(fast, exact, "f {f} user {u} k {k}");
            }
        }
    }

    #[test]
    fn exclusions_merge_with_seen() {
        assert_eq!(merge_sorted(&[1, 4, 9], &[0, 4, 10]), vec![0, 1, 4, 9, 10]);
        let m = tiny();
        // User 10 has seen row 0; excluding row 1 as well leaves rows 2 and 3.
        let rows: Vec<u32> = m
            .recommend_row_excluding(0, &[1], 10)
            .iter()
            .map(|s| s.row)
            .collect();
        assert_eq!(rows, vec![2, 3]);
        let rows: Vec<u32> = m
            .recommend_vector(&[0.0, 1.0], &[3], 10)
            .iter()
            .map(|s| s.row)
            .collect();
        assert_eq!(rows, vec![1, 2, 0]);
        assert_eq!(m.item_row(300), Some(2));
        assert_eq!(m.item_row(301), None);
    }

    fn factors(rows: usize, cols: usize, data: Vec<f32>) -> Factors {
        Factors {
            shape: vec![rows, cols],
            data,
        }
    }

    /// 2 users x 4 items, 2 factors; user 10 has seen item 100.
    fn tiny() -> AlsModel {
        AlsModel::new(
            factors(2, 2, vec![1.0, 0.0, 0.0, 1.0]),
            factors(4, 2, vec![0.9, 0.1, 0.5, 0.5, 0.5, 0.5, 0.1, 0.9]),
            vec![10, 20],
            vec![100, 200, 300, 400],
            CsrPattern::from_rows(4, vec![vec![0], vec![3, 2]]),
        )
        .unwrap()
    }

    #[test]
    fn recommends_unseen_by_score_with_row_tiebreak() {
        let m = tiny();
        let r = m.recommend_row(m.user_row(10).unwrap(), 10);
        let rows: Vec<u32> = r.iter().map(|s| s.row).collect();
        // Item row 0 is seen; rows 1 and 2 tie at 0.5, lower row first.
        assert_eq!(rows, vec![1, 2, 3]);
        assert_eq!(m.recommend_row(1, 1)[0].row, 1);
        assert!(m.user_row(30).is_none());
    }

    #[test]
    fn popularity_counts_seen_columns() {
        let m = tiny();
        let rows: Vec<u32> = m.popular(10).iter().map(|s| s.row).collect();
        assert_eq!(rows, vec![0, 2, 3, 1]);
        assert_eq!(m.popular(2).len(), 2);
    }

    #[test]
    fn refuses_swapped_factors_naming_shapes() {
        let err = AlsModel::new(
            factors(3, 2, vec![0.0; 6]),
            factors(2, 2, vec![0.0; 4]),
            vec![1, 2],
            vec![7, 8, 9],
            CsrPattern::from_rows(3, vec![vec![], vec![]]),
        )
        .unwrap_err();
        let msg = err.to_string();
        assert!(
            msg.contains("swapped") && msg.contains("3x2") && msg.contains("lists 2 users"),
            "{msg}"
        );
    }

    #[test]
    fn refuses_bad_models() {
        let nan = AlsModel::new(
            factors(1, 2, vec![0.0, f32::NAN]),
            factors(1, 2, vec![0.0; 2]),
            vec![1],
            vec![2],
            CsrPattern::from_rows(1, vec![vec![]]),
        );
        assert!(matches!(
            nan,
            Err(ModelError::NonFinite { row: 0, col: 1, .. })
        ));
        let empty = AlsModel::new(
            factors(0, 64, vec![]),
            factors(0, 64, vec![]),
            vec![],
            vec![],
            CsrPattern::from_rows(0, vec![]),
        );
        assert!(matches!(empty, Err(ModelError::Empty { .. })));
        let width = AlsModel::new(
            factors(1, 2, vec![0.0; 2]),
            factors(1, 3, vec![0.0; 3]),
            vec![1],
            vec![2],
            CsrPattern::from_rows(1, vec![vec![]]),
        );
        assert_eq!(width.unwrap_err(), ModelError::WidthMismatch(2, 3));
        let dup = AlsModel::new(
            factors(2, 1, vec![0.0; 2]),
            factors(1, 1, vec![0.0]),
            vec![5, 5],
            vec![2],
            CsrPattern::from_rows(1, vec![vec![], vec![]]),
        );
        assert!(matches!(dup, Err(ModelError::DuplicateId { id: 5, .. })));
        let seen = AlsModel::new(
            factors(1, 1, vec![0.0]),
            factors(1, 1, vec![0.0]),
            vec![1],
            vec![2],
            CsrPattern::from_rows(2, vec![vec![]]),
        );
        assert!(matches!(seen, Err(ModelError::SeenShape { .. })));
    }
}
