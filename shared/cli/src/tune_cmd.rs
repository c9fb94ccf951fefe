//! `recs tune`: arguments, the live progress lines and the trial table on stderr,
//! then the chosen parameters trained on TRAIN through `recs train`'s gate and
//! publish path. The search itself is `recs_train::tune`.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use serde_json::json;

use recs_core::Registry;
use recs_train::eval::TestSet;
use recs_train::ratings::{self, Format};
use recs_train::tune::{self, Progress, TuneMetric, TuneOptions, TuneReport};
use recs_train::{IdRows, TrainOptions, DEFAULT_CG_STEPS};

use crate::train_cmd::{check_gate, print_json, GateArgs, InputArgs};

/// `recs tune`.
#[derive(Debug, Clone, clap::Args)]
pub struct TuneArgs {
    #[command(flatten)]
    pub input: InputArgs,
    /// Set from the global `--registry` (before or after the subcommand).
    #[arg(skip)]
    pub registry: String,
    /// Validation positives (e.g. `recs split --method recbole`'s valid.tsv): every
    /// trial is scored on them with TRAIN's items masked. Default: a per-user random
    /// 10% of TRAIN's positives (seeded by --seed) is held out, and the chosen
    /// parameters are then trained on all of TRAIN.
    #[arg(long)]
    pub validation: Option<PathBuf>,
    /// Version name (default: vX.Y after the highest existing one).
    #[arg(long)]
    pub version: Option<String>,
    /// Wall-time budget of the search and the final fit, seconds (at least 1).
    #[arg(long, default_value_t = tune::DEFAULT_BUDGET_SECONDS)]
    pub budget_seconds: u64,
    /// At most this many trials.
    #[arg(long, default_value_t = tune::DEFAULT_TRIALS)]
    pub trials: usize,
    /// What trials are scored by: ndcg@10 or recall@20.
    #[arg(long, default_value = "ndcg@10", value_parser = parse_metric)]
    pub metric: TuneMetric,
    /// Seeds the search, the held-out validation and ALS's initial factors.
    #[arg(long, default_value_t = 42)]
    pub seed: u64,
    /// Conjugate-gradient steps per solve (not searched).
    #[arg(long, default_value_t = DEFAULT_CG_STEPS)]
    pub cg_steps: usize,
    /// Worker threads (0: one per core). Results do not depend on it.
    #[arg(long, default_value_t = 0)]
    pub threads: usize,
    #[command(flatten)]
    pub gate: GateArgs,
    /// Search, train, evaluate and gate, but publish nothing.
    #[arg(long)]
    pub dry_run: bool,
    /// Print the search and the training summary as JSON on stdout.
    #[arg(long)]
    pub json: bool,
}

fn parse_metric(s: &str) -> std::result::Result<TuneMetric, String> {
    s.parse::<TuneMetric>().map_err(|e| e.to_string())
}

/// One progress line per trial on stderr.
fn progress_line(p: Progress) {
    eprintln!(
        "tune [{:>3}/{} {:>5.0}s/{:.0}s] {:<9} {:<44} {:.4}  best {:.4} (#{})  {:.1}s",
        p.trial.number,
        p.trials,
        p.elapsed,
        p.budget,
        p.trial.stage.to_string(),
        p.trial.params.short(),
        p.trial.metric,
        p.best.metric,
        p.best.number,
        p.trial.seconds
    );
}

/// The trial table (stderr).
pub fn trial_table(report: &TuneReport) -> String {
    let mut out = format!(
        "{:>3}  {:<9} {:>7} {:>8} {:>7} {:<8} {:>5} {:>4}  {:>8} {:>9} {:>8}\n",
        "#",
        "stage",
        "factors",
        "reg",
        "alpha",
        "conf",
        "nu",
        "it",
        "ndcg@10",
        "recall@20",
        "seconds"
    );
    for t in &report.trials {
        let p = &t.params;
        out.push_str(&format!(
            "{:>3}{} {:<9} {:>7} {:>8} {:>7} {:<8} {:>5} {:>4}  {:>8.4} {:>9.4} {:>8.2}\n",
            t.number,
            if t.number == report.best().number {
                '*'
            } else {
                ' '
            },
            t.stage.to_string(),
            p.factors,
            p.regularization,
            p.alpha,
            match p.confidence {
                recs_train::als::Confidence::Alpha => "a*r",
                recs_train::als::Confidence::OnePlusAlpha => "1+a*r",
            },
            p.reg_exponent,
            p.iterations,
            t.ndcg_10,
            t.recall_20,
            t.seconds
        ));
    }
    out
}

/// `recs tune`: search, then train the best on TRAIN, gate and publish.
pub async fn run(a: TuneArgs) -> Result<()> {
    if a.budget_seconds == 0 {
        bail!("--budget-seconds must be at least 1");
    }
    if a.trials == 0 {
        bail!("--trials must be at least 1");
    }
    let started = std::time::Instant::now();
    let i = &a.input;
    if let Some(v) = &a.version {
        recs_core::validate_version(v)?;
        let registry = Registry::open(&a.registry)?;
        if !a.dry_run && registry.versions().await.unwrap_or_default().contains(v) {
            bail!(
                "version {v} already exists in {}; pick another --version",
                a.registry
            );
        }
    }
    let data = ratings::read_ratings(&i.ratings, i.format, i.skip_bad_rows)?;
    let positives = data.positives(i.min_rating());
    let (fit_pairs, valid, validation_json) = match &a.validation {
        Some(path) => {
            let v = ratings::read_ratings(path, Format::Auto, i.skip_bad_rows)
                .with_context(|| format!("reading --validation {}", path.display()))?;
            let set = TestSet::from_ratings(&v, i.min_rating());
            let j = json!({"file": v.path, "sha256": v.sha256, "pairs": set.len(), "users": set.n_users()});
            (positives.clone(), set, j)
        }
        None => {
            let (rest, held) = tune::holdout_validation(&positives, a.seed);
            let set = TestSet::from_pairs(held.iter().map(|p| (p.user, p.item)));
            let j = json!({"held_out_of": data.path, "fraction": tune::HOLDOUT_FRACTION, "seed": a.seed,
                           "pairs": set.len(), "users": set.n_users()});
            (rest, set, j)
        }
    };
    let ds = recs_train::build_dataset(&fit_pairs, IdRows::Sorted)?;
    let mut opts = TuneOptions::new(a.seed);
    opts.metric = a.metric;
    opts.budget = Duration::from_secs(a.budget_seconds);
    opts.trials = a.trials;
    opts.base.cg_steps = a.cg_steps;
    opts.base.threads = a.threads;
    eprintln!(
        "tune: {} positives of {} users x {} items, validation {} pairs of {} users; metric {}, {} trials, budget {} s, seed {}",
        ds.matrix.nnz(),
        ds.users().len(),
        ds.items().len(),
        valid.len(),
        valid.n_users(),
        a.metric,
        a.trials,
        a.budget_seconds,
        a.seed
    );
    let mut on_trial = |p: Progress| progress_line(p);
    let report = tune::tune(&ds, &valid, &opts, &mut on_trial).context("tuning")?;
    eprint!("{}", trial_table(&report));
    let best = report.best();
    eprintln!(
        "tune: chose trial {} ({}): validation {} {:.4}, {} trials in {:.1} s{}",
        best.number,
        best.params.short(),
        report.metric,
        best.metric,
        report.trials.len(),
        report.seconds,
        if report.budget_exhausted {
            " (the budget ended the search early)"
        } else {
            ""
        }
    );
    let mut tuning = report.to_json();
    tuning["validation"] = validation_json;

    // The final model: the chosen parameters on all of TRAIN, `recs train`'s path.
    let mut train = TrainOptions::new(&i.ratings, &a.registry);
    train.format = i.format;
    train.skip_bad_rows = i.skip_bad_rows;
    train.min_rating = i.min_rating();
    train.version = a.version.clone();
    train.als = best.params.apply(&opts.base);
    train.k = a.gate.k;
    train.gate = !a.gate.no_gate;
    train.gate_margin = a.gate.gate_margin;
    train.dry_run = a.dry_run;
    train.progress = !a.json;
    train.popularity_version = None;
    train.trained_by = "recs tune";
    // Gate on --test; without it on the validation file (TRAIN items masked, as when
    // tuning); a validation held out of TRAIN is inside the final model's data, so
    // then only the structural checks run.
    train.test = a.gate.test.clone().or_else(|| a.validation.clone());
    if a.gate.test.is_none() && a.validation.is_some() {
        eprintln!("tune: no --test: the gate compares on the --validation file");
    }
    tuning["wall_seconds_before_final_fit"] = json!(started.elapsed().as_secs_f64());
    train.tuning = Some(tuning.clone());
    let result = recs_train::train(&train).await?;
    let total = started.elapsed().as_secs_f64();
    if a.json {
        print_json(&json!({"tuning": tuning, "train": result.summary, "wall_seconds": total}));
    }
    check_gate(&result)?;
    match &result.published {
        Some(v) => {
            eprintln!(
                "published {v} to {} ({}); tune took {total:.1} s",
                a.registry,
                best.params.short()
            );
            if !a.json {
                println!("{v}");
            }
            crate::tell_served(&a.registry, v).await;
        }
        None => eprintln!("dry run: nothing published; tune took {total:.1} s"),
    }
    Ok(())
}
