//! Implicit-feedback ALS with the conjugate-gradient solver, numerically as implicit
//! 0.7.3 does it (`implicit/cpu/_als.pyx`, `least_squares_cg`; `als.py`, `fit`):
//!
//! - **Confidence**: the training matrix holds C = alpha * r (implicit's form; with
//!   binary r and alpha = 1 every observed and unobserved cell weighs the same), or
//!   C = 1 + alpha * r with [`Confidence::OnePlusAlpha`] (Hu et al. 2008).
//! - **Objective** per user u: min_x sum_i c_ui (p_ui - x.y_i)^2 + lambda |x|^2 with
//!   c = 1 and p = 0 for unobserved cells: a plain lambda * I, not scaled by counts.
//! - **Solve**: A = Y'Y + lambda I + sum_{i in u} (c_ui - 1) y_i y_i', b = sum c_ui y_i;
//!   `cg_steps` (3) conjugate-gradient steps on A x = b starting from the previous x
//!   (warm start), stopping early when |r|^2 < 1e-20; rows without interactions get x = 0.
//!   A is never formed: A p = (Y'Y + lambda I) p + sum (c - 1)(y_i.p) y_i.
//! - **Order**: each iteration solves every user from the items, then every item
//!   from the users.
//! - **Initialisation**: `default_rng(seed).random((users, f), float32) * 0.01`, then
//!   the same for items from the same stream (see the `rng` module).
//!
//! Work is split by rows over a rayon pool. Each row's solve depends only on the
//! other side's factors, and Y'Y is summed over fixed 256-row blocks in a fixed
//! order, so the result is bit-identical for a seed whatever the thread count (on
//! one machine: the SIMD path, AVX-512, AVX2+FMA or portable, is picked at run time).

use rayon::prelude::*;

use super::kernels::{Kernel, Problem, Simd};
use super::rng::NumpyRng;

/// The rating matrix: one CSR type for the whole system, with f32 values here.
pub type Csr = recs_core::Csr<f32>;

/// How a rating value r becomes a confidence.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[cfg_attr(feature = "cli", derive(clap::ValueEnum))]
#[serde(rename_all = "kebab-case")]
pub enum Confidence {
    /// C = alpha * r (implicit's semantics).
    Alpha,
    /// C = 1 + alpha * r (Hu, Koren and Volinsky 2008).
    OnePlusAlpha,
}

/// Hyper-parameters and run settings.
#[derive(Debug, Clone)]
pub struct AlsConfig {
    /// Latent dimensions per user and item (at least 1).
    pub factors: usize,
    /// L2 weight lambda (finite, >= 0), added as lambda * I, not scaled by counts.
    pub regularization: f32,
    /// Confidence scale (finite, > 0), used as [`AlsConfig::confidence`] says.
    pub alpha: f32,
    /// How a rating value becomes a confidence.
    pub confidence: Confidence,
    /// Alternating passes, each solving every user and then every item.
    pub iterations: usize,
    /// Conjugate-gradient steps per row solve, warm-started from the row's last factors.
    pub cg_steps: usize,
    /// Frequency-scaled regularisation exponent nu (0 = implicit's plain lambda):
    /// row u gets lambda * (W_u / n)^nu, W_u = n + sum_i (c_ui - 1) its total weight
    /// over the n columns (Rendle et al. 2021, "Revisiting iALS").
    pub reg_exponent: f32,
    /// Seed of the initial factors (numpy's `default_rng(seed)`, as implicit).
    pub seed: u64,
    /// Worker threads; 0 = one per core.
    pub threads: usize,
    /// Compute implicit's training loss after every iteration (costs a pass).
    pub calculate_loss: bool,
}

impl Default for AlsConfig {
    /// implicit 0.7.3's defaults.
    fn default() -> Self {
        AlsConfig {
            factors: 100,
            regularization: 0.01,
            alpha: 1.0,
            confidence: Confidence::Alpha,
            iterations: 15,
            cg_steps: 3,
            reg_exponent: 0.0,
            seed: 0,
            threads: 0,
            calculate_loss: false,
        }
    }
}

/// Trained factors, C order.
#[derive(Debug, Clone, PartialEq)]
pub struct AlsFactors {
    /// Latent dimensions: the length of every row below.
    pub(crate) factors: usize,
    /// One row per user (matrix row), `factors` values each.
    pub user_factors: Vec<f32>,
    /// One row per item (matrix column), `factors` values each.
    pub item_factors: Vec<f32>,
    /// implicit's normalised training loss after the last iteration, when computed.
    pub(crate) loss: Option<f64>,
}

/// What the progress callback sees after each iteration.
#[derive(Debug, Clone, Copy)]
pub struct IterationStats {
    /// The iteration just finished, from 1.
    pub(crate) iteration: usize,
    /// Its wall time, seconds.
    pub(crate) seconds: f64,
    /// The training loss after it, when `calculate_loss` is set.
    pub(crate) loss: Option<f64>,
}

/// Fits the model. `cui` holds raw values r (1.0 for a binary positive); rows are
/// users, columns items. `on_iteration` is called after every iteration.
pub fn fit(
    cui: &Csr,
    config: &AlsConfig,
    on_iteration: &mut dyn FnMut(IterationStats),
) -> Result<AlsFactors, String> {
    fit_from(cui, config, None, on_iteration)
}

/// [`fit`], continuing from `start` (factors an earlier fit of the same matrix and
/// `config.factors` returned) instead of the seeded random start: `config.iterations`
/// more iterations. Fitting 4 iterations and continuing 4 gives the factors of
/// fitting 8, bit for bit (the tuner's successive halving relies on it).
pub fn fit_from(
    cui: &Csr,
    config: &AlsConfig,
    start: Option<AlsFactors>,
    on_iteration: &mut dyn FnMut(IterationStats),
) -> Result<AlsFactors, String> {
    let f = config.factors;
    if let Some(s) = &start {
        if s.factors != f
            || s.user_factors.len() != cui.rows * f
            || s.item_factors.len() != cui.cols * f
        {
            return Err(format!(
                "cannot continue from {} factors of {} users and {} items: the matrix is {} x {} and factors {f}",
                s.factors,
                s.user_factors.len() / s.factors.max(1),
                s.item_factors.len() / s.factors.max(1),
                cui.rows,
                cui.cols
            ));
        }
    }
    if f == 0 {
        return Err("factors must be at least 1".into());
    }
    if !(config.regularization.is_finite() && config.regularization >= 0.0) {
        return Err(format!(
            "regularization must be a finite number >= 0, got {}",
            config.regularization
        ));
    }
    if !(config.alpha.is_finite() && config.alpha > 0.0) {
        return Err(format!(
            "alpha must be a finite number > 0, got {}",
            config.alpha
        ));
    }
    let mut cui = cui.clone();
    for v in cui.data.iter_mut() {
        *v = match config.confidence {
            Confidence::Alpha => config.alpha * *v,
            Confidence::OnePlusAlpha => 1.0 + config.alpha * *v,
        };
    }
    let ciu = cui.transpose();
    if !config.reg_exponent.is_finite() {
        return Err(format!(
            "reg exponent must be finite, got {}",
            config.reg_exponent
        ));
    }
    let extra_u = extra_regularization(&cui, config.regularization, config.reg_exponent);
    let extra_i = extra_regularization(&ciu, config.regularization, config.reg_exponent);

    let (mut x, mut y, mut loss) = match start {
        Some(s) => (s.user_factors, s.item_factors, s.loss),
        None => {
            let mut rng = NumpyRng::new(config.seed);
            let mut draw =
                |n: usize| -> Vec<f32> { (0..n).map(|_| rng.next_f32() * 0.01f32).collect() };
            let x = draw(cui.rows * f);
            let y = draw(cui.cols * f);
            (x, y, None)
        }
    };

    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(config.threads)
        .build()
        .map_err(|e| format!("starting {} threads: {e}", config.threads))?;
    let simd = Simd::detected();
    for iteration in 0..config.iterations {
        let started = std::time::Instant::now();
        pool.install(|| {
            let users = HalfStep {
                m: &cui,
                f,
                regularization: config.regularization,
                extra_reg: extra_u.as_deref(),
                cg_steps: config.cg_steps,
            };
            least_squares_cg(simd, &users, &mut x, &y);
            let items = HalfStep {
                m: &ciu,
                extra_reg: extra_i.as_deref(),
                ..users
            };
            least_squares_cg(simd, &items, &mut y, &x);
            if config.calculate_loss {
                loss = Some(calculate_loss(&cui, &x, &y, f, config.regularization));
            }
        });
        on_iteration(IterationStats {
            iteration: iteration + 1,
            seconds: started.elapsed().as_secs_f64(),
            loss,
        });
    }
    Ok(AlsFactors {
        factors: f,
        user_factors: x,
        item_factors: y,
        loss,
    })
}

/// Per-row lambda_u - lambda for frequency-scaled regularisation (`None` when nu = 0).
fn extra_regularization(m: &Csr, lambda: f32, nu: f32) -> Option<Vec<f32>> {
    if nu == 0.0 || m.cols == 0 {
        return None;
    }
    let n = m.cols as f64;
    Some(
        (0..m.rows)
            .map(|r| {
                let excess: f64 = m.data[m.indptr[r]..m.indptr[r + 1]]
                    .iter()
                    .map(|&c| f64::from(c.abs()) - 1.0)
                    .sum();
                let scale = ((n + excess).max(1e-12) / n).powf(f64::from(nu));
                (f64::from(lambda) * (scale - 1.0)) as f32
            })
            .collect(),
    )
}

/// Rows per Y'Y block: partial sums are per block and added in block order, so the
/// Gram matrix does not depend on the thread count.
const GRAM_BLOCK: usize = 256;
/// Rows per rayon task in the solves.
const ROWS_PER_TASK: usize = 16;

/// Y'Y (f x f, both triangles): f32 sums over fixed blocks of rows, added in f64 in
/// block order.
fn gram(simd: Simd, y: &[f32], f: usize) -> Vec<f64> {
    let kernel = Kernel::new(simd, f);
    let partials: Vec<Vec<f32>> = y
        .par_chunks(GRAM_BLOCK * f)
        .map(|block| {
            let mut g = vec![0f32; f * f];
            match kernel {
                Some(k) => k.gram(block, &mut g),
                None => {
                    for row in block.chunks_exact(f) {
                        for (k, &s) in row.iter().enumerate() {
                            axpy(s, row, &mut g[k * f..(k + 1) * f]);
                        }
                    }
                }
            }
            g
        })
        .collect();
    let mut total = vec![0f64; f * f];
    for p in partials {
        for (t, v) in total.iter_mut().zip(p) {
            *t += f64::from(v);
        }
    }
    total
}

/// The settings of one half-iteration.
#[derive(Debug, Clone, Copy)]
struct HalfStep<'a> {
    /// Confidences: rows are the factors being solved, columns the fixed side.
    m: &'a Csr,
    f: usize,
    regularization: f32,
    /// Per-row lambda_u - lambda (frequency-scaled regularisation), if any.
    extra_reg: Option<&'a [f32]>,
    cg_steps: usize,
}

/// One half-iteration: every row of `x` from `y` (implicit's `_least_squares_cg`).
fn least_squares_cg(simd: Simd, step: &HalfStep, x: &mut [f32], y: &[f32]) {
    let f = step.f;
    let mut g64 = gram(simd, y, f);
    for k in 0..f {
        g64[k * f + k] += f64::from(step.regularization);
    }
    let g: Vec<f32> = g64.iter().map(|&v| v as f32).collect();
    let p = Problem {
        g: &g,
        y,
        m: step.m,
        f,
        cg_steps: step.cg_steps,
        extra_reg: step.extra_reg,
    };
    x.par_chunks_mut(ROWS_PER_TASK * f)
        .enumerate()
        .for_each(|(task, xs)| solve_rows(simd, &p, task * ROWS_PER_TASK, xs));
}

fn solve_rows(simd: Simd, p: &Problem, row0: usize, xs: &mut [f32]) {
    match Kernel::new(simd, p.f) {
        Some(kernel) => kernel.solve_rows(p, row0, xs),
        None => {
            let f = p.f;
            let mut bufs = vec![0f32; 4 * f];
            let (x, rest) = bufs.split_at_mut(f);
            let (r, rest) = rest.split_at_mut(f);
            let (d, ad) = rest.split_at_mut(f);
            for (k, xrow) in xs.chunks_exact_mut(f).enumerate() {
                solve_one(p, row0 + k, xrow, x, r, d, ad);
            }
        }
    }
}

#[inline(always)]
fn fmadd(a: f32, b: f32, c: f32) -> f32 {
    a * b + c
}

use recs_core::dot;

/// y += a x
#[inline(always)]
fn axpy(a: f32, x: &[f32], y: &mut [f32]) {
    for (yv, xv) in y.iter_mut().zip(x) {
        *yv = fmadd(a, *xv, *yv);
    }
}

/// out = G v (G symmetric, row-major f x f)
#[inline(always)]
fn symv(g: &[f32], v: &[f32], out: &mut [f32]) {
    let f = v.len();
    out.fill(0.0);
    for (k, &vk) in v.iter().enumerate() {
        axpy(vk, &g[k * f..(k + 1) * f], out);
    }
}

/// One row of `_least_squares_cg`.
#[inline(always)]
fn solve_one(
    p: &Problem,
    row: usize,
    xrow: &mut [f32],
    x: &mut [f32],
    r: &mut [f32],
    d: &mut [f32],
    ad: &mut [f32],
) {
    let f = x.len();
    let (s, e) = (p.m.indptr[row], p.m.indptr[row + 1]);
    if s == e {
        xrow.fill(0.0);
        return;
    }
    let idx = &p.m.indices[s..e];
    let conf = &p.m.data[s..e];
    let yrow = |i: u32| &p.y[i as usize * f..(i as usize + 1) * f];
    x.copy_from_slice(xrow);

    // r = b - A x = sum c y_i - (Y'Y + lambda I) x - sum (c - 1)(y_i.x) y_i
    let extra = p.extra_reg.map_or(0.0, |e| e[row]);
    symv(p.g, x, r);
    for v in r.iter_mut() {
        *v = -*v;
    }
    if extra != 0.0 {
        axpy(-extra, x, r);
    }
    for (&i, &c) in idx.iter().zip(conf) {
        let yi = yrow(i);
        let (c_pos, c_abs) = if c > 0.0 { (c, c) } else { (0.0, -c) };
        let w = c_abs - 1.0;
        let t = if w != 0.0 {
            c_pos - w * dot(yi, x)
        } else {
            c_pos
        };
        axpy(t, yi, r);
    }
    d.copy_from_slice(r);
    let mut rs_old = dot(r, r);
    if rs_old < 1e-20 {
        return;
    }
    for _ in 0..p.cg_steps {
        // ad = A d without forming A
        symv(p.g, d, ad);
        if extra != 0.0 {
            axpy(extra, d, ad);
        }
        for (&i, &c) in idx.iter().zip(conf) {
            let w = c.abs() - 1.0;
            if w != 0.0 {
                let yi = yrow(i);
                axpy(w * dot(yi, d), yi, ad);
            }
        }
        let a = rs_old / dot(d, ad);
        axpy(a, d, x);
        axpy(-a, ad, r);
        let rs_new = dot(r, r);
        if rs_new < 1e-20 {
            break;
        }
        let beta = rs_new / rs_old;
        for (dv, rv) in d.iter_mut().zip(r.iter()) {
            *dv = fmadd(beta, *dv, *rv);
        }
        rs_old = rs_new;
    }
    xrow.copy_from_slice(x);
}

/// implicit's `calculate_loss`: the weighted squared error plus the L2 terms, over
/// every cell, divided by (sum of confidences + number of unobserved cells).
fn calculate_loss(cui: &Csr, x: &[f32], y: &[f32], f: usize, regularization: f32) -> f64 {
    let g: Vec<f32> = gram(Simd::detected(), y, f)
        .iter()
        .map(|&v| v as f32)
        .collect();
    let per_user: Vec<(f64, f64, f64)> = (0..cui.rows)
        .into_par_iter()
        .map(|u| {
            let xu = &x[u * f..(u + 1) * f];
            let mut r = vec![0f32; f];
            symv(&g, xu, &mut r);
            let mut loss = 0f64;
            let mut total_conf = 0f64;
            for k in cui.indptr[u]..cui.indptr[u + 1] {
                let i = cui.indices[k] as usize;
                let c = cui.data[k];
                let yi = &y[i * f..(i + 1) * f];
                let (t0, c_abs) = if c > 0.0 { (-2.0 * c, c) } else { (0.0, -c) };
                let t = t0 + (c_abs - 1.0) * dot(yi, xu);
                axpy(t, yi, &mut r);
                total_conf += f64::from(c_abs);
                loss += f64::from(c_abs);
            }
            loss += f64::from(dot(&r, xu));
            (loss, total_conf, f64::from(dot(xu, xu)))
        })
        .collect();
    let (mut loss, mut total_conf, mut user_norm) = (0f64, 0f64, 0f64);
    for (l, c, n) in per_user {
        loss += l;
        total_conf += c;
        user_norm += n;
    }
    let item_norm: f64 = y.chunks_exact(f).map(|r| f64::from(dot(r, r))).sum();
    loss += f64::from(regularization) * (item_norm + user_norm);
    let cells = cui.rows as f64 * cui.cols as f64 - cui.nnz() as f64;
    loss / (total_conf + cells)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn small() -> Csr {
        // 5 users x 6 items, two blocks of taste.
        let t: Vec<(u32, u32, f32)> = [
            (0, 0),
            (0, 1),
            (0, 2),
            (1, 0),
            (1, 2),
            (2, 1),
            (2, 2),
            (3, 3),
            (3, 4),
            (4, 4),
            (4, 5),
        ]
        .iter()
        .map(|&(u, i)| (u, i, 1.0))
        .collect();
        Csr::from_triplets(5, 6, &t)
    }

    #[test]
    fn continuing_a_fit_equals_fitting_longer() {
        let m = small();
        let cfg = |iterations| AlsConfig {
            factors: 4,
            regularization: 0.5,
            alpha: 3.0,
            iterations,
            seed: 9,
            threads: 1,
            ..AlsConfig::default()
        };
        let eight = fit(&m, &cfg(8), &mut |_| {}).unwrap();
        let four = fit(&m, &cfg(4), &mut |_| {}).unwrap();
        assert_ne!(four, eight);
        let more = fit_from(&m, &cfg(4), Some(four.clone()), &mut |_| {}).unwrap();
        assert_eq!(more, eight);
        // A start of the wrong shape is refused, not misread.
        let err = fit_from(
            &m,
            &AlsConfig {
                factors: 5,
                ..cfg(1)
            },
            Some(four),
            &mut |_| {},
        )
        .unwrap_err();
        assert!(err.contains("cannot continue"), "{err}");
    }

    #[test]
    fn transpose_round_trips() {
        let m = small();
        let t = m.transpose();
        assert_eq!((t.rows, t.cols, t.nnz()), (6, 5, 11));
        assert_eq!(t.transpose(), m);
    }

    /// Dense reference: solve (Y'CuY + lambda I) x = Y'Cu p exactly with f64 Gaussian
    /// elimination; CG with f steps from any start must reach it.
    fn exact_solve(m: &Csr, y: &[f32], f: usize, reg: f32, row: usize) -> Vec<f64> {
        let n_items = m.cols;
        let mut a = vec![0f64; f * f];
        let mut b = vec![0f64; f];
        for i in 0..n_items {
            let (s, e) = (m.indptr[row], m.indptr[row + 1]);
            let c = m.indices[s..e]
                .iter()
                .position(|&j| j as usize == i)
                .map(|k| f64::from(m.data[s + k]));
            let w = c.unwrap_or(1.0);
            for p in 0..f {
                for q in 0..f {
                    a[p * f + q] += w * f64::from(y[i * f + p]) * f64::from(y[i * f + q]);
                }
                if let Some(c) = c {
                    b[p] += c * f64::from(y[i * f + p]);
                }
            }
        }
        for p in 0..f {
            a[p * f + p] += f64::from(reg);
        }
        // Gaussian elimination (A is SPD).
        for col in 0..f {
            for r in col + 1..f {
                let k = a[r * f + col] / a[col * f + col];
                for c in col..f {
                    a[r * f + c] -= k * a[col * f + c];
                }
                b[r] -= k * b[col];
            }
        }
        let mut x = vec![0f64; f];
        for r in (0..f).rev() {
            let s: f64 = (r + 1..f).map(|c| a[r * f + c] * x[c]).sum();
            x[r] = (b[r] - s) / a[r * f + r];
        }
        x
    }

    #[test]
    fn cg_with_enough_steps_solves_the_normal_equations_on_every_simd_path() {
        let mut m = small();
        for v in m.data.iter_mut() {
            *v = 5.0; // alpha 5: the (c - 1) terms matter
        }
        // A flavour the CPU lacks falls back to the next one down (Kernel::new).
        let simds = [Simd::Portable, Simd::Avx2, Simd::Avx512];
        // 4: the slice fallback; 8 and 16: the register kernels.
        for f in [4, 8, 16] {
            let mut rng = NumpyRng::new(1);
            let y: Vec<f32> = (0..m.cols * f).map(|_| rng.next_f32()).collect();
            for &simd in &simds {
                let mut x = vec![0.01f32; m.rows * f];
                let step = HalfStep {
                    m: &m,
                    f,
                    regularization: 0.1,
                    extra_reg: None,
                    cg_steps: 2 * f,
                };
                least_squares_cg(simd, &step, &mut x, &y);
                for row in 0..m.rows {
                    let want = exact_solve(&m, &y, f, 0.1, row);
                    for k in 0..f {
                        let got = f64::from(x[row * f + k]);
                        assert!(
                            (got - want[k]).abs() < 2e-3 * (1.0 + want[k].abs()),
                            "f {f} {simd:?} row {row}: {got} vs {}",
                            want[k]
                        );
                    }
                }
            }
        }
    }

    #[test]
    fn deterministic_across_thread_counts_and_empty_rows_are_zero() {
        let mut t: Vec<(u32, u32, f32)> = Vec::new();
        let mut rng = NumpyRng::new(3);
        for u in 0..300u32 {
            for i in 0..40u32 {
                if rng.next_f32() < 0.2 {
                    t.push((u, i, 1.0));
                }
            }
        }
        t.retain(|&(u, _, _)| u != 7);
        let m = Csr::from_triplets(300, 40, &t);
        let fit_with = |threads| {
            let config = AlsConfig {
                factors: 16,
                regularization: 0.1,
                alpha: 3.0,
                iterations: 3,
                seed: 5,
                threads,
                ..AlsConfig::default()
            };
            fit(&m, &config, &mut |_| {}).unwrap()
        };
        let one = fit_with(1);
        assert_eq!(one, fit_with(2));
        assert!(one.user_factors[7 * 16..8 * 16].iter().all(|&v| v == 0.0));
        assert!(one.user_factors.iter().all(|v| v.is_finite()));
    }

    #[test]
    fn loss_decreases() {
        let m = small();
        let mut losses = Vec::new();
        let config = AlsConfig {
            factors: 3,
            regularization: 0.01,
            alpha: 2.0,
            iterations: 5,
            calculate_loss: true,
            threads: 1,
            ..AlsConfig::default()
        };
        fit(&m, &config, &mut |s| losses.push(s.loss.unwrap())).unwrap();
        assert!(losses.windows(2).all(|w| w[1] <= w[0] + 1e-9), "{losses:?}");
    }
}
