//! Hyper-parameter search for ALS (`recs tune`, docs/TRAINING.md "Tuning").
//!
//! Every trial fits ALS on the training matrix and scores it on a validation set
//! (NDCG@10 or Recall@20, the model's TRAIN items masked, as [`eval::evaluate`]
//! ranks). The search has two stages:
//!
//! 1. **Successive halving over iterations.** `n0` configurations: the first is
//!    `recs train`'s defaults (lambda by [`crate::auto_regularization`]), the others drawn from [`SearchSpace`] with a seeded
//!    generator (factors, regularization and alpha log-uniform, `reg_exponent`,
//!    confidence form). All are fitted for [`HALVING_ITERATIONS`]`[0]` iterations and
//!    scored; the best third (at least one) is *continued* to the next rung's
//!    iteration count ([`als::fit_from`]: the same factors as fitting that long from
//!    the start), and so on. Every (configuration, iterations) scored is a trial.
//! 2. **Local refinement** around the best trial: coordinate moves on
//!    regularization and alpha (x/÷ a step, 1.6 then 1.26 then 1.12), factors (x/÷ 2),
//!    `reg_exponent` (± 0.25, then 0.125, 0.0625), iterations (x/÷ 2) and the
//!    confidence form, each fitted from the start; a move that scores better is taken
//!    and followed in the same direction; a pass without gain shrinks the steps, and
//!    the third such pass ends the search.
//!
//! The best trial (highest metric; ties: the earlier trial) is the choice. With
//! a budget that is not reached the search is deterministic for a seed: the same
//! trials in the same order and the same choice. The budget is wall time: before a
//! trial starts, its time (and that of the final fit the caller will do) is
//! estimated from the trials so far; when it would not fit, the search stops there
//! and says so (`budget_exhausted`). At least one trial always runs.

use std::collections::HashSet;
use std::fmt;
use std::str::FromStr;
use std::time::{Duration, Instant};

use serde::Serialize;
use serde_json::{json, Value};

use crate::als::{self, AlsConfig, AlsFactors, Confidence};
use crate::eval::{self, TestSet};
use crate::split::{self, Pair};
use crate::Dataset;

/// The iteration counts of the successive-halving rungs.
pub const HALVING_ITERATIONS: [usize; 4] = [4, 8, 16, 32];

/// `recs tune`'s default number of trials.
pub const DEFAULT_TRIALS: usize = 60;

/// `recs tune`'s default wall-time budget, seconds.
pub const DEFAULT_BUDGET_SECONDS: u64 = 600;

/// The share of each user's TRAIN positives held out for validation when no
/// validation file is given.
pub const HOLDOUT_FRACTION: f64 = 0.1;

/// What a trial is scored by, on the validation set.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum TuneMetric {
    /// NDCG@10.
    #[serde(rename = "ndcg@10")]
    Ndcg10,
    /// Recall@20.
    #[serde(rename = "recall@20")]
    Recall20,
}

impl fmt::Display for TuneMetric {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            TuneMetric::Ndcg10 => "ndcg@10",
            TuneMetric::Recall20 => "recall@20",
        })
    }
}

impl FromStr for TuneMetric {
    type Err = TuneError;
    fn from_str(s: &str) -> Result<Self, TuneError> {
        match s.to_ascii_lowercase().as_str() {
            "ndcg@10" | "ndcg" => Ok(TuneMetric::Ndcg10),
            "recall@20" => Ok(TuneMetric::Recall20),
            _ => Err(TuneError::UnknownMetric(s.to_string())),
        }
    }
}

/// Why a search could not run.
#[derive(Debug, thiserror::Error)]
pub enum TuneError {
    /// A metric other than ndcg@10 and recall@20.
    #[error("unknown metric {0:?}: use ndcg@10 or recall@20")]
    UnknownMetric(String),
    /// A budget of zero seconds.
    #[error("the budget must be more than 0 seconds")]
    ZeroBudget,
    /// Zero trials.
    #[error("the number of trials must be at least 1")]
    ZeroTrials,
    /// The training matrix has no positives.
    #[error("the training data has no positives to fit")]
    NoTrainingData,
    /// The validation set has no pairs.
    #[error("the validation data has no positives")]
    NoValidation,
    /// Validation users that the training data does not have (they could only be
    /// ranked by popularity, whatever the parameters).
    #[error("{unknown} of {total} validation users are not in the training data (e.g. user {example}); validate on held-out positives of TRAIN's users")]
    UnknownValidationUsers {
        /// How many are unknown.
        unknown: usize,
        /// Validation users in all.
        total: usize,
        /// The first unknown user id.
        example: i64,
    },
    /// ALS refused the settings or failed.
    #[error("trial {trial}: {reason}")]
    Fit {
        /// The trial number.
        trial: usize,
        /// ALS's message.
        reason: String,
    },
    /// The fitted factors did not make a model to score.
    #[error(transparent)]
    Model(#[from] recs_core::ModelError),
}

/// The hyper-parameters a trial sets.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Params {
    /// Latent factors.
    pub factors: usize,
    /// lambda.
    pub regularization: f32,
    /// Confidence weight.
    pub alpha: f32,
    /// Confidence form.
    pub confidence: Confidence,
    /// Frequency-scaled regularisation exponent.
    pub reg_exponent: f32,
    /// ALS iterations.
    pub iterations: usize,
}

impl Params {
    /// `recs train`'s defaults.
    pub fn defaults() -> Params {
        let d = crate::default_als();
        Params {
            factors: d.factors,
            regularization: d.regularization,
            alpha: d.alpha,
            confidence: d.confidence,
            reg_exponent: d.reg_exponent,
            iterations: d.iterations,
        }
    }

    /// `base` with these hyper-parameters.
    pub fn apply(&self, base: &AlsConfig) -> AlsConfig {
        AlsConfig {
            factors: self.factors,
            regularization: self.regularization,
            alpha: self.alpha,
            confidence: self.confidence,
            reg_exponent: self.reg_exponent,
            iterations: self.iterations,
            ..base.clone()
        }
    }

    fn key(&self) -> (usize, u32, u32, bool, u32, usize) {
        (
            self.factors,
            self.regularization.to_bits(),
            self.alpha.to_bits(),
            self.confidence == Confidence::Alpha,
            self.reg_exponent.to_bits(),
            self.iterations,
        )
    }

    /// Short form for tables: `f128 reg 60 a 12 alpha nu 0 it 25`.
    pub fn short(&self) -> String {
        format!(
            "f{} reg {} a {} {} nu {} it {}",
            self.factors,
            self.regularization,
            self.alpha,
            match self.confidence {
                Confidence::Alpha => "C=a*r",
                Confidence::OnePlusAlpha => "C=1+a*r",
            },
            self.reg_exponent,
            self.iterations
        )
    }
}

/// Where the first stage draws configurations from.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct SearchSpace {
    /// Factor counts drawn uniformly.
    pub factors: Vec<usize>,
    /// Regularization, log-uniform in [min, max].
    pub regularization: (f32, f32),
    /// alpha, log-uniform in [min, max].
    pub alpha: (f32, f32),
    /// reg_exponent values drawn uniformly.
    pub reg_exponent: Vec<f32>,
    /// Largest factor count refinement may reach.
    pub max_factors: usize,
    /// Largest iteration count refinement may reach.
    pub max_iterations: usize,
}

impl Default for SearchSpace {
    fn default() -> Self {
        SearchSpace {
            factors: vec![64, 128, 256],
            regularization: (2.0, 500.0),
            alpha: (1.0, 60.0),
            reg_exponent: vec![0.0, 0.5, 1.0],
            max_factors: 256,
            max_iterations: 64,
        }
    }
}

/// How to search.
#[derive(Debug, Clone)]
pub struct TuneOptions {
    /// What trials are scored by.
    pub metric: TuneMetric,
    /// Wall-time budget of the search and the caller's final fit.
    pub budget: Duration,
    /// At most this many trials.
    pub trials: usize,
    /// Seeds the configurations drawn (and ALS's initial factors: `base.seed`).
    pub seed: u64,
    /// Everything a trial does not set: cg steps, threads, ALS seed.
    pub base: AlsConfig,
    /// Where configurations come from.
    pub space: SearchSpace,
}

impl TuneOptions {
    /// The defaults of `recs tune` with this seed.
    pub fn new(seed: u64) -> Self {
        TuneOptions {
            metric: TuneMetric::Ndcg10,
            budget: Duration::from_secs(DEFAULT_BUDGET_SECONDS),
            trials: DEFAULT_TRIALS,
            seed,
            base: AlsConfig {
                seed,
                ..crate::default_als()
            },
            space: SearchSpace::default(),
        }
    }
}

/// Which stage a trial belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Stage {
    /// Successive halving, rung n (from 0).
    Halving(usize),
    /// Local refinement.
    Refine,
}

impl fmt::Display for Stage {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Stage::Halving(r) => write!(f, "halving {r}"),
            Stage::Refine => f.write_str("refine"),
        }
    }
}

/// One scored (configuration, iterations).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Trial {
    /// 1, 2, ... in the order run.
    pub number: usize,
    /// Its stage.
    pub stage: Stage,
    /// Its hyper-parameters (iterations: the total fitted).
    pub params: Params,
    /// The chosen metric on the validation set.
    pub metric: f64,
    /// NDCG@10 on the validation set.
    pub ndcg_10: f64,
    /// Recall@20 on the validation set.
    pub recall_20: f64,
    /// Wall seconds of the fit (this rung's iterations only when continued) and scoring.
    pub seconds: f64,
}

/// What the progress callback sees after every trial.
#[derive(Debug, Clone, Copy)]
pub struct Progress<'a> {
    /// The trial just scored.
    pub trial: &'a Trial,
    /// The best trial so far.
    pub best: &'a Trial,
    /// Trials allowed.
    pub trials: usize,
    /// Seconds since the search started.
    pub elapsed: f64,
    /// The budget, seconds.
    pub budget: f64,
}

/// The outcome of a search.
#[derive(Debug, Clone)]
pub struct TuneReport {
    /// Every trial, in order.
    pub trials: Vec<Trial>,
    /// Index into `trials` of the choice.
    pub best: usize,
    /// The metric.
    pub metric: TuneMetric,
    /// The seed.
    pub seed: u64,
    /// Wall seconds of the whole search.
    pub seconds: f64,
    /// The budget, seconds.
    pub budget_seconds: f64,
    /// Trials allowed.
    pub max_trials: usize,
    /// True when the budget stopped the search before its plan was done.
    pub budget_exhausted: bool,
    /// Configurations of the first stage.
    pub initial_configs: usize,
}

impl TuneReport {
    /// The chosen trial.
    pub fn best(&self) -> &Trial {
        &self.trials[self.best]
    }

    /// The search summary recorded in meta.json's `tuning` and printed by `recs tune --json`.
    pub fn to_json(&self) -> Value {
        json!({
            "metric": self.metric,
            "seed": self.seed,
            "budget_seconds": self.budget_seconds,
            "max_trials": self.max_trials,
            "trials_run": self.trials.len(),
            "initial_configs": self.initial_configs,
            "halving_iterations": HALVING_ITERATIONS,
            "budget_exhausted": self.budget_exhausted,
            "search_seconds": self.seconds,
            "best_trial": self.best().number,
            "best_params": self.best().params,
            "best_metric": self.best().metric,
            "trials": self.trials,
        })
    }
}

/// Holds out a per-user random [`HOLDOUT_FRACTION`] of `pairs` (the splitmix64
/// holdout rule of [`split::holdout`] with `seed`): (the rest, the held-out pairs).
pub fn holdout_validation(pairs: &[Pair], seed: u64) -> (Vec<Pair>, Vec<Pair>) {
    let s = split::holdout(pairs, seed, HOLDOUT_FRACTION);
    (s.train().to_vec(), s.test().to_vec())
}

/// A small seeded generator (splitmix64 over a counter).
struct Draw(u64);

impl Draw {
    fn next_f64(&mut self) -> f64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        (split::splitmix64(self.0) >> 11) as f64 / (1u64 << 53) as f64
    }
    fn log_uniform(&mut self, (lo, hi): (f32, f32)) -> f32 {
        let (lo, hi) = (f64::from(lo).ln(), f64::from(hi).ln());
        round3((lo + (hi - lo) * self.next_f64()).exp() as f32)
    }
    fn pick<T: Copy>(&mut self, v: &[T]) -> T {
        v[((self.next_f64() * v.len() as f64) as usize).min(v.len() - 1)]
    }
}

/// Three significant digits, so the numbers in tables and meta.json read well.
pub(crate) fn round3(x: f32) -> f32 {
    if x == 0.0 || !x.is_finite() {
        return x;
    }
    let mag = 10f64.powi(2 - f64::from(x.abs()).log10().floor() as i32);
    ((f64::from(x) * mag).round() / mag) as f32
}

/// Scores factors on the validation set: (NDCG@10, Recall@20).
fn score(ds: &Dataset, fit: &AlsFactors, valid: &TestSet) -> Result<(f64, f64), TuneError> {
    let model = crate::model_of(&crate::to_artifacts(ds, fit)).map_err(|e| match e {
        crate::TrainError::Model(m) => TuneError::Model(m),
        other => TuneError::Fit {
            trial: 0,
            reason: other.to_string(),
        },
    })?;
    let e = eval::evaluate(&model, valid, 10);
    Ok((e.model.ndcg, e.model.recall_20))
}

/// Runs trials, keeps the book and the clock.
struct Search<'a> {
    ds: &'a Dataset,
    valid: &'a TestSet,
    opts: &'a TuneOptions,
    started: Instant,
    trials: Vec<Trial>,
    seen: HashSet<(usize, u32, u32, bool, u32, usize)>,
    /// (factors, seconds per iteration, scoring seconds) of every fit so far.
    costs: Vec<(usize, f64, f64)>,
    exhausted: bool,
    on_trial: &'a mut dyn FnMut(Progress),
}

impl Search<'_> {
    fn best(&self) -> usize {
        let mut best = 0;
        for (i, t) in self.trials.iter().enumerate() {
            if t.metric > self.trials[best].metric {
                best = i;
            }
        }
        best
    }

    /// Estimated seconds of fitting `iterations` of `factors` and scoring it.
    fn estimate(&self, factors: usize, iterations: usize) -> Option<f64> {
        let &(f0, per_iter, scoring) = self
            .costs
            .iter()
            .min_by_key(|(f, _, _)| f.abs_diff(factors))?;
        let ratio = factors as f64 / f0 as f64;
        Some(per_iter * ratio.powf(1.5) * iterations as f64 + scoring * ratio)
    }

    /// Whether a trial of `factors` x `iterations` (plus the final fit of the best
    /// so far) still fits in the budget and the trial count. Sets `exhausted`.
    fn can_run(&mut self, factors: usize, iterations: usize) -> bool {
        if self.trials.len() >= self.opts.trials || self.exhausted {
            return false;
        }
        if self.trials.is_empty() {
            return true;
        }
        let best = self.trials[self.best()].params;
        // The final fit also reads the data and publishes: a fifth more.
        let need = self.estimate(factors, iterations).unwrap_or(0.0)
            + 1.2 * self.estimate(best.factors, best.iterations).unwrap_or(0.0);
        if self.started.elapsed().as_secs_f64() + need > self.opts.budget.as_secs_f64() {
            self.exhausted = true;
            return false;
        }
        true
    }

    /// Fits `more` iterations of `params` (from `start`, or from the seeded start),
    /// scores it as a trial with `params.iterations` the total; returns the factors.
    fn run(
        &mut self,
        stage: Stage,
        params: Params,
        start: Option<AlsFactors>,
        more: usize,
    ) -> Result<AlsFactors, TuneError> {
        let number = self.trials.len() + 1;
        let t0 = Instant::now();
        let config = Params {
            iterations: more,
            ..params
        }
        .apply(&self.opts.base);
        let fit =
            als::fit_from(&self.ds.matrix, &config, start, &mut |_| {}).map_err(|reason| {
                TuneError::Fit {
                    trial: number,
                    reason,
                }
            })?;
        let fit_seconds = t0.elapsed().as_secs_f64();
        let (ndcg_10, recall_20) = score(self.ds, &fit, self.valid)?;
        let seconds = t0.elapsed().as_secs_f64();
        self.costs.push((
            params.factors,
            fit_seconds / more.max(1) as f64,
            seconds - fit_seconds,
        ));
        let metric = match self.opts.metric {
            TuneMetric::Ndcg10 => ndcg_10,
            TuneMetric::Recall20 => recall_20,
        };
        self.seen.insert(params.key());
        self.trials.push(Trial {
            number,
            stage,
            params,
            metric,
            ndcg_10,
            recall_20,
            seconds,
        });
        let best = self.best();
        (self.on_trial)(Progress {
            trial: &self.trials[number - 1],
            best: &self.trials[best],
            trials: self.opts.trials,
            elapsed: self.started.elapsed().as_secs_f64(),
            budget: self.opts.budget.as_secs_f64(),
        });
        Ok(fit)
    }

    /// A fresh trial of `params` (skipped when already scored or out of budget):
    /// Some(metric) when it ran.
    fn try_params(&mut self, params: Params) -> Result<Option<f64>, TuneError> {
        if self.seen.contains(&params.key()) || !self.can_run(params.factors, params.iterations) {
            return Ok(None);
        }
        self.run(Stage::Refine, params, None, params.iterations)?;
        Ok(Some(self.trials[self.trials.len() - 1].metric))
    }
}

/// A refinement move.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Move {
    Reg(bool),
    Alpha(bool),
    Factors(bool),
    Nu(bool),
    Iterations(bool),
    Confidence,
}

fn neighbour(p: Params, m: Move, step: f32, nu_step: f32, space: &SearchSpace) -> Option<Params> {
    let mul = |x: f32, up: bool| round3(if up { x * step } else { x / step });
    let mut q = p;
    match m {
        Move::Reg(up) => q.regularization = mul(p.regularization, up),
        Move::Alpha(up) => q.alpha = mul(p.alpha, up),
        Move::Factors(up) => {
            q.factors = if up { p.factors * 2 } else { p.factors / 2 };
            if q.factors < 8 || q.factors > space.max_factors {
                return None;
            }
        }
        Move::Nu(up) => {
            q.reg_exponent = round3(if up {
                p.reg_exponent + nu_step
            } else {
                p.reg_exponent - nu_step
            });
            if !(0.0..=2.0).contains(&q.reg_exponent) {
                return None;
            }
        }
        Move::Iterations(up) => {
            q.iterations = if up {
                p.iterations * 2
            } else {
                p.iterations / 2
            };
            if q.iterations < 2 || q.iterations > space.max_iterations {
                return None;
            }
        }
        Move::Confidence => {
            q.confidence = match p.confidence {
                Confidence::Alpha => Confidence::OnePlusAlpha,
                Confidence::OnePlusAlpha => Confidence::Alpha,
            }
        }
    }
    (q.regularization >= 0.0 && q.alpha > 0.0).then_some(q)
}

/// What a climb along one move did.
struct Climb {
    /// At least one step scored better than the best before it.
    improved: bool,
    /// The trials or the budget ran out.
    stop: bool,
}

/// Takes `m` from the best trial again and again while that scores better.
fn climb(search: &mut Search, m: Move, step: f32, nu_step: f32) -> Result<Climb, TuneError> {
    let mut improved = false;
    loop {
        let best = search.trials[search.best()].clone();
        let Some(q) = neighbour(best.params, m, step, nu_step, &search.opts.space) else {
            return Ok(Climb {
                improved,
                stop: false,
            });
        };
        if search.seen.contains(&q.key()) {
            return Ok(Climb {
                improved,
                stop: false,
            });
        }
        match search.try_params(q)? {
            None => {
                let stop = search.exhausted || search.trials.len() >= search.opts.trials;
                return Ok(Climb { improved, stop });
            }
            Some(metric) if metric > best.metric => {
                improved = true;
                if matches!(m, Move::Confidence) {
                    return Ok(Climb {
                        improved,
                        stop: false,
                    });
                }
            }
            Some(_) => {
                return Ok(Climb {
                    improved,
                    stop: false,
                })
            }
        }
    }
}

/// Searches ALS hyper-parameters on `train` scored on `valid` (see the module
/// docs); `on_trial` is called after every trial.
pub fn tune(
    train: &Dataset,
    valid: &TestSet,
    opts: &TuneOptions,
    on_trial: &mut dyn FnMut(Progress),
) -> Result<TuneReport, TuneError> {
    if opts.budget.is_zero() {
        return Err(TuneError::ZeroBudget);
    }
    if opts.trials == 0 {
        return Err(TuneError::ZeroTrials);
    }
    if train.matrix.nnz() == 0 {
        return Err(TuneError::NoTrainingData);
    }
    if valid.is_empty() {
        return Err(TuneError::NoValidation);
    }
    let known: HashSet<i64> = train.users.iter().copied().collect();
    let unknown: Vec<i64> = valid.user_ids().filter(|u| !known.contains(u)).collect();
    if let Some(&example) = unknown.first() {
        return Err(TuneError::UnknownValidationUsers {
            unknown: unknown.len(),
            total: valid.n_users(),
            example,
        });
    }

    // Stage 1 takes about two thirds of the trials: n0 + n0/3 + n0/9 + ... ~ 1.5 n0.
    let n0 = ((opts.trials * 4) / 9).max(1);
    let mut draw = Draw(opts.seed ^ 0x7475_6e65);
    let mut configs = vec![Params {
        regularization: crate::auto_regularization(train.matrix.nnz()),
        ..Params::defaults()
    }];
    while configs.len() < n0 {
        let p = Params {
            factors: draw.pick(&opts.space.factors),
            regularization: draw.log_uniform(opts.space.regularization),
            alpha: draw.log_uniform(opts.space.alpha),
            confidence: if draw.next_f64() < 0.5 {
                Confidence::Alpha
            } else {
                Confidence::OnePlusAlpha
            },
            reg_exponent: draw.pick(&opts.space.reg_exponent),
            iterations: 0,
        };
        configs.push(p);
    }

    let mut search = Search {
        ds: train,
        valid,
        opts,
        started: Instant::now(),
        trials: Vec::new(),
        seen: HashSet::new(),
        costs: Vec::new(),
        exhausted: false,
        on_trial,
    };

    // Stage 1: successive halving, continuing the survivors' factors.
    let mut alive: Vec<(Params, Option<AlsFactors>)> =
        configs.into_iter().map(|p| (p, None)).collect();
    let mut done_iterations = 0;
    for (rung, &iterations) in HALVING_ITERATIONS.iter().enumerate() {
        let mut scored: Vec<(f64, usize, Params, AlsFactors)> = Vec::new();
        for (params, start) in alive.drain(..) {
            let params = Params {
                iterations,
                ..params
            };
            if !search.can_run(params.factors, iterations - done_iterations) {
                break;
            }
            let fit = search.run(
                Stage::Halving(rung),
                params,
                start,
                iterations - done_iterations,
            )?;
            let t = &search.trials[search.trials.len() - 1];
            scored.push((t.metric, t.number, params, fit));
        }
        done_iterations = iterations;
        // Best first; ties: the earlier trial.
        scored.sort_by(|a, b| b.0.total_cmp(&a.0).then(a.1.cmp(&b.1)));
        let keep = scored.len().div_ceil(3);
        if search.exhausted {
            break;
        }
        alive = scored
            .into_iter()
            .take(keep)
            .map(|(_, _, p, f)| (p, Some(f)))
            .collect();
    }

    // Stage 2: coordinate refinement around the best trial.
    let dims = [
        (Move::Reg(true), Some(Move::Reg(false))),
        (Move::Alpha(true), Some(Move::Alpha(false))),
        (Move::Factors(true), Some(Move::Factors(false))),
        (Move::Nu(true), Some(Move::Nu(false))),
        (Move::Iterations(true), Some(Move::Iterations(false))),
        (Move::Confidence, None),
    ];
    let (mut step, mut nu_step) = (1.6f32, 0.25f32);
    let mut shrinks = 0;
    'refine: while !search.exhausted && search.trials.len() < opts.trials {
        let mut improved = false;
        for (up, down) in dims {
            let mut c = climb(&mut search, up, step, nu_step)?;
            if !c.improved && !c.stop {
                if let Some(down) = down {
                    c = climb(&mut search, down, step, nu_step)?;
                }
            }
            improved |= c.improved;
            if c.stop {
                break 'refine;
            }
        }
        if !improved {
            shrinks += 1;
            if shrinks > 2 {
                break;
            }
            step = step.sqrt();
            nu_step /= 2.0;
        }
    }

    let best = search.best();
    Ok(TuneReport {
        seconds: search.started.elapsed().as_secs_f64(),
        trials: search.trials,
        best,
        metric: opts.metric,
        seed: opts.seed,
        budget_seconds: opts.budget.as_secs_f64(),
        max_trials: opts.trials,
        budget_exhausted: search.exhausted,
        initial_configs: n0,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::gen_data::{generate, GenConfig};

    /// Planted synthetic data: (TRAIN dataset, validation set) by the held-out rule.
    fn data(seed: u64) -> (Dataset, TestSet) {
        let g = generate(&GenConfig {
            users: 150,
            items: 120,
            factors: 4,
            ratings_per_user: 25,
            seed,
            ..GenConfig::default()
        });
        let pos: Vec<Pair> = g
            .ratings
            .iter()
            .filter(|r| r.is_positive(4.0))
            .copied()
            .collect();
        let (rest, held) = holdout_validation(&pos, 1);
        let ds = crate::build_dataset(&rest, crate::IdRows::Sorted).unwrap();
        let valid = TestSet::from_pairs(held.iter().map(|p| (p.user, p.item)));
        (ds, valid)
    }

    fn small_opts(seed: u64, trials: usize) -> TuneOptions {
        let mut o = TuneOptions::new(seed);
        o.trials = trials;
        o.base.threads = 1;
        o.space.factors = vec![8, 16];
        o.space.max_factors = 32;
        o
    }

    #[test]
    fn same_seed_same_trials_and_choice_and_the_choice_is_the_best_trial() {
        let (ds, valid) = data(5);
        let mut calls = 0;
        // 12 trials: the halving rungs and one refinement (a refinement around the
        // 128-factor defaults refits 32 iterations: the costly part under qemu).
        let a = tune(&ds, &valid, &small_opts(3, 12), &mut |_| calls += 1).unwrap();
        let b = tune(&ds, &valid, &small_opts(3, 12), &mut |_| {}).unwrap();
        let strip = |r: &TuneReport| -> Vec<(Stage, Params, f64)> {
            r.trials
                .iter()
                .map(|t| (t.stage, t.params, t.metric))
                .collect()
        };
        assert_eq!(strip(&a), strip(&b));
        assert_eq!(a.best, b.best);
        assert_eq!(calls, a.trials.len());
        assert!(!a.budget_exhausted);
        assert!(
            a.trials.len() <= 12 && a.trials.len() >= 8,
            "{}",
            a.trials.len()
        );
        // The choice is the highest metric, the earliest of equals.
        let max = a.trials.iter().map(|t| t.metric).fold(f64::MIN, f64::max);
        let first_max = a.trials.iter().position(|t| t.metric == max).unwrap();
        assert_eq!(a.best, first_max);
        // The first trial is recs train's defaults at the first rung's iterations,
        // lambda 1.6 * positives^(1/4).
        let lambda = 1.6 * (ds.matrix.nnz() as f64).powf(0.25);
        assert!((f64::from(a.trials[0].params.regularization) - lambda).abs() < 0.01 * lambda);
        assert_eq!(
            a.trials[0].params,
            Params {
                iterations: HALVING_ITERATIONS[0],
                regularization: a.trials[0].params.regularization,
                ..Params::defaults()
            }
        );
        // Another seed draws other configurations.
        let c = tune(&ds, &valid, &small_opts(4, 8), &mut |_| {}).unwrap();
        let n = a.trials.len().min(c.trials.len());
        assert_ne!(strip(&a)[1..n], strip(&c)[1..n]);
        // A halving trial's metric equals a fresh fit of its parameters: continuing
        // a fit is the same as fitting that long.
        let t = a
            .trials
            .iter()
            .find(|t| t.stage == Stage::Halving(1))
            .unwrap();
        let fit = als::fit(
            &ds.matrix,
            &t.params.apply(&small_opts(3, 1).base),
            &mut |_| {},
        )
        .unwrap();
        assert_eq!(score(&ds, &fit, &valid).unwrap().0, t.ndcg_10);
    }

    #[test]
    fn the_budget_stops_the_search_and_bad_settings_are_refused() {
        let (ds, valid) = data(6);
        let mut o = small_opts(1, 10_000);
        o.budget = Duration::from_millis(300);
        let t0 = Instant::now();
        let r = tune(&ds, &valid, &o, &mut |_| {}).unwrap();
        assert!(r.budget_exhausted);
        assert!(r.trials.len() < 10_000 && !r.trials.is_empty());
        assert!(t0.elapsed() < Duration::from_secs(3), "{:?}", t0.elapsed());

        o.budget = Duration::ZERO;
        assert!(matches!(
            tune(&ds, &valid, &o, &mut |_| {}),
            Err(TuneError::ZeroBudget)
        ));
        let stranger = TestSet::from_pairs([(999_999, 1), (1, 1)]);
        let err = tune(&ds, &stranger, &small_opts(1, 4), &mut |_| {}).unwrap_err();
        assert!(
            matches!(
                err,
                TuneError::UnknownValidationUsers {
                    unknown: 1,
                    example: 999_999,
                    ..
                }
            ),
            "{err}"
        );
        let empty = TestSet::from_pairs([]);
        assert!(matches!(
            tune(&ds, &empty, &small_opts(1, 4), &mut |_| {}),
            Err(TuneError::NoValidation)
        ));
    }

    #[test]
    fn metric_names_parse_and_unknown_ones_are_refused() {
        assert_eq!("ndcg@10".parse::<TuneMetric>().unwrap(), TuneMetric::Ndcg10);
        assert_eq!(
            "Recall@20".parse::<TuneMetric>().unwrap(),
            TuneMetric::Recall20
        );
        let err = "map@5".parse::<TuneMetric>().unwrap_err();
        assert!(err.to_string().contains("ndcg@10 or recall@20"), "{err}");
    }

    #[test]
    fn round3_keeps_three_significant_digits() {
        assert_eq!(round3(123.456), 123.0);
        assert_eq!(round3(0.012345), 0.0123);
        assert_eq!(round3(9.999), 10.0);
        assert_eq!(round3(0.0), 0.0);
    }

    #[test]
    fn draws_are_seeded_and_in_range() {
        let (mut a, mut b, mut c) = (Draw(1), Draw(1), Draw(2));
        let xs: Vec<f64> = (0..100).map(|_| a.next_f64()).collect();
        let ys: Vec<f64> = (0..100).map(|_| b.next_f64()).collect();
        let zs: Vec<f64> = (0..100).map(|_| c.next_f64()).collect();
        assert_eq!(xs, ys);
        assert_ne!(xs, zs);
        assert!(xs.iter().all(|x| (0.0..1.0).contains(x)));
        for _ in 0..200 {
            let v = a.log_uniform((2.0, 500.0));
            assert!((2.0..=500.0).contains(&v), "{v}");
        }
    }
}
