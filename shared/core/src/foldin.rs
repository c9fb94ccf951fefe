//! Fold-in: a user vector from a list of interactions, by one exact least-squares
//! solve against the model's item factors, with implicit's semantics
//! (`AlternatingLeastSquares.recalculate_user`, which calls the Cholesky solver
//! `_als._least_squares` even when training used conjugate gradient):
//!
//! ```text
//! A = YᵀY + λ_u·I + Σ_i (c_i − 1)·y_i y_iᵀ      b = Σ_{c_i > 0} c_i·y_i      x = A⁻¹ b
//! ```
//!
//! where c_i is the confidence of interaction i (`alpha · r`, implicit's form, or
//! `1 + alpha · r`), a negative confidence counts with its magnitude in `A` and not at
//! all in `b` (implicit's "disliked" convention), and λ_u is the plain regularisation
//! (scaled by the row's weight when the model was trained with `reg_exponent`).
//! YᵀY is computed once, when the model is assembled ([`gram`]); a request then costs
//! `n·f²` for its own items and `f³/3` for the Cholesky factorisation, in f64.

use serde_json::Value;

/// How a rating value becomes a confidence (the trainer's `confidence` setting).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConfidenceForm {
    /// c = alpha · r (implicit's semantics).
    Alpha,
    /// c = 1 + alpha · r (Hu, Koren and Volinsky 2008).
    OnePlusAlpha,
}

/// The hyper-parameters a fold-in needs: those the version was trained with.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct FoldInParams {
    /// λ, added as λ·I.
    pub regularization: f64,
    /// The confidence scale.
    pub alpha: f64,
    /// How a rating becomes a confidence.
    pub confidence: ConfidenceForm,
    /// Frequency-scaled regularisation exponent ν (0 = plain λ).
    pub reg_exponent: f64,
}

/// Why a fold-in cannot be computed.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum FoldInError {
    /// The version's meta.json does not say how the model was trained.
    #[error("the version's meta.json has no usable {0} (metrics.{0}); fold-in needs the training hyper-parameters")]
    MissingParam(&'static str),
    /// A hyper-parameter is present but unusable.
    #[error("the version's meta.json has an unusable {name}: {value}")]
    BadParam {
        /// The field.
        name: &'static str,
        /// Its value, as JSON.
        value: String,
    },
    /// `A` is not positive definite (only possible with λ = 0 and few items).
    #[error("the fold-in system is not positive definite (pivot {0}); the model's regularization is too small for these items")]
    NotPositiveDefinite(usize),
}

impl FoldInParams {
    /// The parameters recorded in a version: `metrics` of the version-level
    /// meta.json (where the trainer and the Python exporter put them), else the
    /// `als/meta.json` object. `regularization` and `alpha` are required; `confidence`
    /// defaults to implicit's `alpha` form and `reg_exponent` to 0.
    pub fn from_meta(version_meta: &Value, model_meta: &Value) -> Result<Self, FoldInError> {
        let metrics = version_meta
            .get("metrics")
            .filter(|m| m.get("regularization").is_some())
            .unwrap_or(model_meta);
        let number = |name: &'static str| -> Result<Option<f64>, FoldInError> {
            match metrics.get(name) {
                None | Some(Value::Null) => Ok(None),
                Some(v) => match v.as_f64() {
                    Some(x) if x.is_finite() && x >= 0.0 => Ok(Some(x)),
                    _ => Err(FoldInError::BadParam {
                        name,
                        value: v.to_string(),
                    }),
                },
            }
        };
        let regularization =
            number("regularization")?.ok_or(FoldInError::MissingParam("regularization"))?;
        let alpha = number("alpha")?.ok_or(FoldInError::MissingParam("alpha"))?;
        let reg_exponent = number("reg_exponent")?.unwrap_or(0.0);
        let confidence = match metrics.get("confidence") {
            None | Some(Value::Null) => ConfidenceForm::Alpha,
            Some(Value::String(s)) if s == "alpha" => ConfidenceForm::Alpha,
            Some(Value::String(s)) if s == "one-plus-alpha" => ConfidenceForm::OnePlusAlpha,
            Some(v) => {
                return Err(FoldInError::BadParam {
                    name: "confidence",
                    value: v.to_string(),
                })
            }
        };
        Ok(FoldInParams {
            regularization,
            alpha,
            confidence,
            reg_exponent,
        })
    }

    fn confidence_of(&self, rating: f64) -> f64 {
        match self.confidence {
            ConfidenceForm::Alpha => self.alpha * rating,
            ConfidenceForm::OnePlusAlpha => 1.0 + self.alpha * rating,
        }
    }
}

/// Rows per partial sum of [`gram`]: f32 sums over short blocks, added in f64.
const GRAM_BLOCK: usize = 256;

/// YᵀY (f x f, both triangles, row-major f64) of a C-order items x f matrix.
pub fn gram(items: &[f32], f: usize) -> Vec<f64> {
    let mut g = vec![0f64; f * f];
    if f == 0 {
        return g;
    }
    let mut block = vec![0f32; f * f];
    for chunk in items.chunks(f * GRAM_BLOCK) {
        block.fill(0.0);
        gram_block(&mut block, chunk, f);
        for j in 0..f {
            for k in j..f {
                g[j * f + k] += f64::from(block[j * f + k]);
            }
        }
    }
    for j in 0..f {
        for k in 0..j {
            g[j * f + k] = g[k * f + j];
        }
    }
    g
}

/// Solves for one user vector. `gram` is YᵀY of `item_factors` (items x f, C
/// order); `interactions` are (item row, rating), rows in range. No interactions
/// give the zero vector (as implicit).
pub fn solve_user(
    gram: &[f64],
    item_factors: &[f32],
    f: usize,
    interactions: &[(u32, f32)],
    params: &FoldInParams,
) -> Result<Vec<f32>, FoldInError> {
    if interactions.is_empty() {
        return Ok(vec![0.0; f]);
    }
    let (mut a, mut b) = user_system(gram, item_factors, f, interactions, params);
    cholesky_upper(&mut a, f)?;
    cholesky_upper_substitute(&a, &mut b, f);
    Ok(b.into_iter().map(|x| x as f32).collect())
}

/// One explained item: the history rows that add most to its score, with what each adds.
pub type Contributions = Vec<(u32, f64)>;

/// implicit's `AlternatingLeastSquares.explain`, for several items at once: with
/// W = A⁻¹ (A the fold-in system of `interactions`, factored once), the score of
/// item t decomposes as Σ_j c_j · (W y_t)·y_j over the history items j with c_j >= 0.
/// Per target, the `n` history rows with the largest contributions, largest first
/// (equal ones: the higher row first, as implicit's heap of (score, item) pairs).
pub fn explain(
    gram: &[f64],
    item_factors: &[f32],
    f: usize,
    interactions: &[(u32, f32)],
    params: &FoldInParams,
    targets: &[u32],
    n: usize,
) -> Result<Vec<Contributions>, FoldInError> {
    let (mut a, _) = user_system(gram, item_factors, f, interactions, params);
    cholesky_upper(&mut a, f)?;
    let row = |r: u32| &item_factors[r as usize * f..(r as usize + 1) * f];
    let mut w = vec![0f64; f];
    Ok(targets
        .iter()
        .map(|&t| {
            for (wi, &y) in w.iter_mut().zip(row(t)) {
                *wi = f64::from(y);
            }
            cholesky_upper_substitute(&a, &mut w, f);
            let mut parts: Contributions = interactions
                .iter()
                .filter_map(|&(j, rating)| {
                    let c = params.confidence_of(f64::from(rating));
                    (c >= 0.0).then(|| {
                        let dot: f64 = w.iter().zip(row(j)).map(|(a, &b)| a * f64::from(b)).sum();
                        (j, c * dot)
                    })
                })
                .collect();
            parts.sort_by(|x, y| y.1.total_cmp(&x.1).then(y.0.cmp(&x.0)));
            parts.truncate(n);
            parts
        })
        .collect())
}

/// The fold-in system's A (upper triangle) and b for `interactions`.
fn user_system(
    gram: &[f64],
    item_factors: &[f32],
    f: usize,
    interactions: &[(u32, f32)],
    params: &FoldInParams,
) -> (Vec<f64>, Vec<f64>) {
    let n_items = item_factors.len() / f.max(1);
    let mut a = gram.to_vec();
    let mut b = vec![0f64; f];
    let mut yi = vec![0f64; f];
    let mut excess = 0f64;
    for &(row, rating) in interactions {
        let y = &item_factors[row as usize * f..(row as usize + 1) * f];
        for (d, &s) in yi.iter_mut().zip(y) {
            *d = f64::from(s);
        }
        let mut c = params.confidence_of(f64::from(rating));
        if c > 0.0 {
            for (bj, &y) in b.iter_mut().zip(&yi) {
                *bj += c * y;
            }
        } else {
            c = -c;
        }
        excess += c - 1.0;
        let w = c - 1.0;
        if w != 0.0 {
            // Upper triangle only; the factorisation reads no other.
            upper_rank1(&mut a, f, 0, &yi, w);
        }
    }
    let mut lambda = params.regularization;
    if params.reg_exponent != 0.0 && n_items > 0 {
        let n = n_items as f64;
        lambda *= ((n + excess).max(1e-12) / n).powf(params.reg_exponent);
    }
    for j in 0..f {
        a[j * f + j] += lambda;
    }
    (a, b)
}

/// The token for the AVX2+FMA copies below, if they may run: the CPU has both and
/// `RECS_SIMD` does not cap the kernels at portable ([`Simd::detected`](crate::Simd::detected)).
#[cfg(target_arch = "x86_64")]
fn fma_kernels() -> Option<crate::Avx2Fma> {
    crate::Simd::detected().avx2_fma()
}

/// The upper triangle of `Σ y yᵀ` over the rows of `chunk`, added into `block`
/// (f32; the caller sums blocks in f64). Run once per model load, where an
/// ml-25m-size catalogue makes it the largest step after the download.
fn gram_block(block: &mut [f32], chunk: &[f32], f: usize) {
    #[cfg(target_arch = "x86_64")]
    {
        if let Some(t) = fma_kernels() {
            fma::gram_block(t, block, chunk, f);
            return;
        }
    }
    gram_block_body(block, chunk, f);
}

/// The bodies below compiled for AVX2+FMA, reachable only with the token. They are
/// safe Rust (bounds-checked slices): the features are the only requirement.
#[cfg(target_arch = "x86_64")]
mod fma {
    use crate::Avx2Fma;

    /// [`gram_block_body`](super::gram_block_body) compiled for AVX2+FMA.
    pub(super) fn gram_block(_: Avx2Fma, block: &mut [f32], chunk: &[f32], f: usize) {
        // SAFETY: the token proves AVX2 and FMA, the only requirement.
        unsafe { gram_block_avx2(block, chunk, f) }
    }

    /// # Safety
    ///
    /// The CPU supports AVX2 and FMA. Nothing else: the body is safe Rust.
    #[target_feature(enable = "avx2,fma")]
    unsafe fn gram_block_avx2(block: &mut [f32], chunk: &[f32], f: usize) {
        super::gram_block_body(block, chunk, f);
    }

    /// [`upper_rank1_body`](super::upper_rank1_body) with fused multiply-adds.
    pub(super) fn upper_rank1(_: Avx2Fma, a: &mut [f64], f: usize, from: usize, y: &[f64], w: f64) {
        // SAFETY: the token proves AVX2 and FMA, the only requirement.
        unsafe { upper_rank1_fma(a, f, from, y, w) }
    }

    /// # Safety
    ///
    /// The CPU supports AVX2 and FMA. Nothing else: the body is safe Rust.
    #[target_feature(enable = "avx2,fma")]
    unsafe fn upper_rank1_fma(a: &mut [f64], f: usize, from: usize, y: &[f64], w: f64) {
        super::upper_rank1_body(a, f, from, y, w, |acc, x, y| x.mul_add(y, acc));
    }
}

#[inline(always)]
fn gram_block_body(block: &mut [f32], chunk: &[f32], f: usize) {
    for y in chunk.chunks_exact(f) {
        for j in 0..f {
            let yj = y[j];
            let row = &mut block[j * f + j..(j + 1) * f];
            for (acc, &yk) in row.iter_mut().zip(&y[j..]) {
                *acc += yj * yk;
            }
        }
    }
}

/// `a[k][i] += w · y[k] · y[i]` for `from <= k <= i < f` (the upper triangle of the
/// trailing block, row-major, stride `f`): the fold-in's per-item update and the
/// factorisation's trailing update. Rows are contiguous, so this is where the
/// vector units pay; with AVX2+FMA it runs a compiled-for-FMA copy (4 f64 lanes).
fn upper_rank1(a: &mut [f64], f: usize, from: usize, y: &[f64], w: f64) {
    #[cfg(target_arch = "x86_64")]
    {
        if let Some(t) = fma_kernels() {
            fma::upper_rank1(t, a, f, from, y, w);
            return;
        }
    }
    upper_rank1_body(a, f, from, y, w, |acc, x, y| acc + x * y);
}

#[inline(always)]
fn upper_rank1_body(
    a: &mut [f64],
    f: usize,
    from: usize,
    y: &[f64],
    w: f64,
    madd: impl Fn(f64, f64, f64) -> f64,
) {
    for k in from..f {
        let wy = w * y[k];
        for (aki, &yi) in a[k * f + k..(k + 1) * f].iter_mut().zip(&y[k..f]) {
            *aki = madd(*aki, wy, yi);
        }
    }
}

/// Factors the upper triangle of `a` (f x f, row-major) in place as R with
/// A = RᵀR (Cholesky).
fn cholesky_upper(a: &mut [f64], f: usize) -> Result<(), FoldInError> {
    // R overwrites the upper triangle, row by row; right-looking, so every update
    // runs along contiguous rows (upper_rank1) instead of down columns.
    let mut row = vec![0f64; f];
    for j in 0..f {
        let d = a[j * f + j];
        if d <= 0.0 || !d.is_finite() {
            return Err(FoldInError::NotPositiveDefinite(j));
        }
        let d = d.sqrt();
        a[j * f + j] = d;
        for i in j + 1..f {
            a[j * f + i] /= d;
            row[i] = a[j * f + i];
        }
        upper_rank1(a, f, j + 1, &row, -1.0);
    }
    Ok(())
}

/// Solves RᵀR x = b in place, R from [`cholesky_upper`].
fn cholesky_upper_substitute(a: &[f64], b: &mut [f64], f: usize) {
    // Rᵀ z = b
    for i in 0..f {
        let mut s = b[i];
        for k in 0..i {
            s -= a[k * f + i] * b[k];
        }
        b[i] = s / a[i * f + i];
    }
    // R x = z
    for i in (0..f).rev() {
        let mut s = b[i];
        for k in i + 1..f {
            s -= a[i * f + k] * b[k];
        }
        b[i] = s / a[i * f + i];
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn params(reg: f64, alpha: f64) -> FoldInParams {
        FoldInParams {
            regularization: reg,
            alpha,
            confidence: ConfidenceForm::Alpha,
            reg_exponent: 0.0,
        }
    }

    /// A 3 x 2 item matrix and a hand-solved system: with alpha = 2 and items 0, 2,
    /// A = YᵀY + λI + (y0 y0ᵀ + y2 y2ᵀ), b = 2(y0 + y2).
    #[test]
    fn solves_a_hand_computed_system() {
        let y = [1.0f32, 0.0, 0.0, 1.0, 1.0, 1.0];
        let g = gram(&y, 2);
        assert_eq!(g, vec![2.0, 1.0, 1.0, 2.0]);
        let x = solve_user(&g, &y, 2, &[(0, 1.0), (2, 1.0)], &params(0.5, 2.0)).unwrap();
        // A = [[2,1],[1,2]] + 0.5 I + [[1,0],[0,0]] + [[1,1],[1,1]] = [[4.5,2],[2,3.5]]
        // b = [4, 2]; x = A⁻¹ b = [ (3.5*4 - 2*2), (4.5*2 - 2*4) ] / (4.5*3.5 - 4)
        let det = 4.5 * 3.5 - 4.0;
        let want = [(3.5 * 4.0 - 4.0) / det, (9.0 - 8.0) / det];
        for (got, want) in x.iter().zip(want) {
            assert!((f64::from(*got) - want).abs() < 1e-6, "{x:?}");
        }
        // One-plus-alpha changes c from 2 to 3: a different answer.
        let p = FoldInParams {
            confidence: ConfidenceForm::OnePlusAlpha,
            ..params(0.5, 2.0)
        };
        let x3 = solve_user(&g, &y, 2, &[(0, 1.0), (2, 1.0)], &p).unwrap();
        assert!((x3[0] - x[0]).abs() > 1e-3);
    }

    /// The same system: W y1 = A⁻¹ [0, 1] = [-2, 4.5] / 11.75, so item 1's score
    /// 1/11.75 splits into 2·(W y1)·y0 = -4/11.75 and 2·(W y1)·y2 = 5/11.75.
    #[test]
    fn explains_a_hand_computed_score() {
        let y = [1.0f32, 0.0, 0.0, 1.0, 1.0, 1.0];
        let g = gram(&y, 2);
        let history = [(0, 1.0), (2, 1.0)];
        let parts = explain(&g, &y, 2, &history, &params(0.5, 2.0), &[1], 5).unwrap();
        assert_eq!(parts.len(), 1);
        let (rows, values): (Vec<u32>, Vec<f64>) = parts[0].iter().copied().unzip();
        assert_eq!(rows, [2, 0]);
        assert!((values[0] - 5.0 / 11.75).abs() < 1e-12, "{values:?}");
        assert!((values[1] + 4.0 / 11.75).abs() < 1e-12, "{values:?}");
        // The parts add up to the fold-in's score.
        let x = solve_user(&g, &y, 2, &history, &params(0.5, 2.0)).unwrap();
        assert!((f64::from(x[1]) - values.iter().sum::<f64>()).abs() < 1e-6);
        let top1 = explain(&g, &y, 2, &history, &params(0.5, 2.0), &[1, 0], 1).unwrap();
        assert_eq!(top1[0], vec![(2, values[0])]);
        assert_eq!(top1[1].len(), 1);
    }

    #[test]
    fn gram_matches_naive_across_blocks() {
        let f = 5;
        let n = 700; // more than two blocks
        let y: Vec<f32> = (0..n * f)
            .map(|i| ((i * 37 % 101) as f32) / 101.0 - 0.5)
            .collect();
        let g = gram(&y, f);
        for j in 0..f {
            for k in 0..f {
                let naive: f64 = (0..n)
                    .map(|r| f64::from(y[r * f + j]) * f64::from(y[r * f + k]))
                    .sum();
                assert!((g[j * f + k] - naive).abs() < 1e-3, "{j},{k}");
            }
        }
    }

    #[test]
    fn empty_history_is_zero_and_singular_is_an_error() {
        let y = [1.0f32, 0.0, 0.0, 0.0];
        let g = gram(&y, 2);
        assert_eq!(
            solve_user(&g, &y, 2, &[], &params(0.1, 1.0)).unwrap(),
            vec![0.0, 0.0]
        );
        // λ = 0 and the second factor never occurs: singular.
        assert_eq!(
            solve_user(&g, &y, 2, &[(0, 1.0)], &params(0.0, 1.0)),
            Err(FoldInError::NotPositiveDefinite(1))
        );
    }

    #[test]
    fn params_from_meta() {
        let v = json!({"metrics": {"regularization": 0.05, "alpha": 1.0}});
        assert_eq!(
            FoldInParams::from_meta(&v, &Value::Null).unwrap(),
            params(0.05, 1.0)
        );
        let m = json!({"regularization": 2, "alpha": 5, "confidence": "one-plus-alpha", "reg_exponent": 1.0});
        let p = FoldInParams::from_meta(&Value::Null, &m).unwrap();
        assert_eq!(p.confidence, ConfidenceForm::OnePlusAlpha);
        assert_eq!((p.regularization, p.alpha, p.reg_exponent), (2.0, 5.0, 1.0));
        assert_eq!(
            FoldInParams::from_meta(&json!({"metrics": {"alpha": 1}}), &Value::Null),
            Err(FoldInError::MissingParam("regularization"))
        );
        assert!(matches!(
            FoldInParams::from_meta(
                &json!({"metrics": {"regularization": -1, "alpha": 1}}),
                &Value::Null
            ),
            Err(FoldInError::BadParam {
                name: "regularization",
                ..
            })
        ));
        assert!(matches!(
            FoldInParams::from_meta(
                &json!({"metrics": {"regularization": 1, "alpha": 1, "confidence": "x"}}),
                &Value::Null
            ),
            Err(FoldInError::BadParam {
                name: "confidence",
                ..
            })
        ));
    }
}
