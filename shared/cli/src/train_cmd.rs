//! `recs split`, `recs train` and `recs eval`: arguments and what they print. The
//! binary only routes to these; the work is in the sibling modules.

use std::path::PathBuf;

use anyhow::{bail, Context, Result};
use serde_json::json;

use recs_core::Registry;
use recs_train::als::{AlsConfig, Confidence};
use recs_train::eval::{self, TestSet};
use recs_train::ratings::{self, Format};
use recs_train::split::{self, Method, Pair};
use recs_train::{
    IdRows, TrainOptions, DEFAULT_ALPHA, DEFAULT_CG_STEPS, DEFAULT_CONFIDENCE, DEFAULT_FACTORS,
    DEFAULT_ITERATIONS, DEFAULT_REGULARIZATION, DEFAULT_REG_EXPONENT,
};

/// Where and how to read a rating file.
#[derive(Debug, Clone, clap::Args)]
pub struct InputArgs {
    /// Rating file: ml-100k u.data, ml-1m ratings.dat, MovieLens CSV, or user,item[,rating[,ts]] CSV/TSV.
    #[arg(long)]
    pub ratings: PathBuf,
    /// File format (auto: detected from the first line).
    #[arg(long, value_enum, default_value_t = Format::Auto)]
    pub format: Format,
    /// Drop malformed rows (and count them) instead of failing on the first one.
    #[arg(long)]
    pub skip_bad_rows: bool,
    /// Ratings at or above this are positives (rows without a rating always are);
    /// default 4, and 3 for `recs split --method recbole` (RecBole's positives).
    #[arg(long)]
    pub min_rating: Option<f32>,
}

impl InputArgs {
    /// `--min-rating`, default 4.
    pub fn min_rating(&self) -> f32 {
        self.min_rating.unwrap_or(4.0)
    }
}

/// How a new version is evaluated and gated before it is published (`recs train`,
/// `recs import`).
#[derive(Debug, Clone, clap::Args)]
pub struct GateArgs {
    /// Held-out positives to evaluate on (and to gate with).
    #[arg(long)]
    pub test: Option<PathBuf>,
    /// Cut-off of the offline metrics.
    #[arg(long, default_value_t = 10)]
    pub k: usize,
    /// Publish even if the quality gate would refuse.
    #[arg(long)]
    pub no_gate: bool,
    /// How far below the latest version's NDCG@k the new one may be.
    #[arg(long, default_value_t = 0.01)]
    pub gate_margin: f64,
}

/// `recs split`.
#[derive(Debug, Clone, clap::Args)]
pub struct SplitArgs {
    #[command(flatten)]
    pub input: InputArgs,
    /// holdout: per-user random 80/20 (splitmix64); llo: each user's latest positive is
    /// TEST; recbole: 10-core filter, then per-user random 8:1:1 train/valid/test.
    #[arg(long, value_enum, default_value_t = Method::Holdout)]
    pub method: Method,
    /// recbole: users and items with fewer positives than this are dropped, repeatedly.
    #[arg(long, default_value_t = 10)]
    pub k_core: usize,
    /// Holdout and recbole seed (42 for the peer's split, 43 for its validation split of TRAIN).
    #[arg(long, default_value_t = 42)]
    pub seed: u64,
    /// Holdout share of each user's positives.
    #[arg(long, default_value_t = 0.2)]
    pub test_fraction: f64,
    /// Output folder for train.tsv and test.tsv (user \t item, sorted).
    #[arg(long)]
    pub out: PathBuf,
}

/// `recs train`.
#[derive(Debug, Clone, clap::Args)]
pub struct TrainArgs {
    #[command(flatten)]
    pub input: InputArgs,
    /// Registry to publish to.
    /// Set from the global `--registry` (before or after the subcommand).
    #[arg(skip)]
    pub registry: String,
    /// Version name (default: vX.Y after the highest existing one).
    #[arg(long)]
    pub version: Option<String>,
    /// Latent factors.
    #[arg(long, default_value_t = DEFAULT_FACTORS)]
    pub factors: usize,
    /// L2 regularisation lambda (times (W_u / n)^NU per row with --reg-exponent NU).
    /// Default: 1.6 * (TRAIN positives)^(1/4), to 3 significant digits.
    #[arg(long)]
    pub regularization: Option<f32>,
    /// Confidence weight of a positive.
    #[arg(long, default_value_t = DEFAULT_ALPHA)]
    pub alpha: f32,
    /// alpha: C = alpha * r (implicit); one-plus-alpha: C = 1 + alpha * r (Hu et al.).
    #[arg(long, value_enum, default_value_t = DEFAULT_CONFIDENCE)]
    pub confidence: Confidence,
    /// ALS iterations (each solves all users, then all items).
    #[arg(long, default_value_t = DEFAULT_ITERATIONS)]
    pub iterations: usize,
    /// Conjugate-gradient steps per solve (implicit: 3).
    #[arg(long, default_value_t = DEFAULT_CG_STEPS)]
    pub cg_steps: usize,
    /// Frequency-scaled regularisation: row u gets lambda * (W_u / n)^NU, W_u its total
    /// confidence over n cells (0: implicit's plain lambda).
    #[arg(long, default_value_t = DEFAULT_REG_EXPONENT)]
    pub reg_exponent: f32,
    /// Worker threads (0: one per core). Results do not depend on it.
    #[arg(long, default_value_t = 0)]
    pub threads: usize,
    /// Seed of the initial factors (numpy default_rng(seed), as implicit's random_state).
    #[arg(long, default_value_t = 42)]
    pub seed: u64,
    /// How ids become matrix rows (dense: row = id - 1, the peer's matrix).
    #[arg(long, value_enum, default_value_t = IdRows::Sorted)]
    pub id_rows: IdRows,
    #[command(flatten)]
    pub gate: GateArgs,
    /// Compute the training loss after every iteration (costs a pass per iteration).
    #[arg(long)]
    pub loss: bool,
    /// Train, evaluate and gate, but publish nothing.
    #[arg(long)]
    pub dry_run: bool,
    /// als: fit ALS (and publish the popularity ranking next to it);
    /// popularity: publish only the ranking (version default: v_popularity).
    #[arg(long, value_enum, default_value_t = ModelKind::Als)]
    pub model: ModelKind,
    /// Name of the popularity version published next to an ALS one (kept when it exists).
    #[arg(long, default_value = recs_train::DEFAULT_POPULARITY_VERSION)]
    pub popularity_version: String,
    /// Publish no popularity version next to the ALS one.
    #[arg(long)]
    pub no_popularity: bool,
}

/// What `recs train` publishes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum ModelKind {
    /// Implicit-feedback ALS, gated, plus a popularity version next to it.
    Als,
    /// The positives' popularity ranking alone.
    Popularity,
}

/// `recs eval`.
#[derive(Debug, Clone, clap::Args)]
pub struct EvalArgs {
    /// Registry to read.
    /// Set from the global `--registry` (before or after the subcommand).
    #[arg(skip)]
    pub registry: String,
    /// Version to evaluate (default: latest.txt's).
    #[arg(long)]
    pub version: Option<String>,
    /// Held-out positives (required unless --protocol recbole).
    #[arg(long, required_unless_present = "protocol")]
    pub test: Option<PathBuf>,
    /// Also leave these positives out of every ranking (e.g. the valid.tsv of a
    /// recbole split, as RecBole masks train and valid items when testing).
    #[arg(long)]
    pub mask: Vec<PathBuf>,
    /// recbole: split --ratings as `recs split --method recbole --seed S` does and
    /// evaluate on its test part, train and valid items masked.
    #[arg(long, value_enum, requires = "ratings", conflicts_with = "test")]
    pub protocol: Option<Protocol>,
    /// The full ratings file the protocol splits.
    #[arg(long)]
    pub ratings: Option<PathBuf>,
    /// The protocol's split seed.
    #[arg(long, default_value_t = 42)]
    pub seed: u64,
    /// Format of the test (or ratings) file.
    #[arg(long, value_enum, default_value_t = Format::Auto)]
    pub format: Format,
    /// Ratings at or above this are positives (rows without a rating always are);
    /// default 4, and 3 with --protocol recbole.
    #[arg(long)]
    pub min_rating: Option<f32>,
    /// Cut-off.
    #[arg(long, default_value_t = 10)]
    pub k: usize,
}

/// A published evaluation protocol `recs eval` can reproduce.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Protocol {
    /// RecBole's general-recommendation protocol: ratings >= 3 positive, 10-core,
    /// per-user random 8:1:1, full ranking with train and valid items masked.
    Recbole,
}

/// The name recorded with metrics measured under RecBole's protocol.
pub const RECBOLE_PROTOCOL: &str = "recbole: ratings >= 3, 10-core, per-user random 8:1:1 (splitmix64 seed), full ranking, train and valid items masked";

/// Tells stderr about rows `--skip-bad-rows` dropped (from a `Ratings::summary`).
fn note_skipped(data: &serde_json::Value) {
    let n = data["skipped_bad_rows"].as_u64().unwrap_or(0);
    if n > 0 {
        eprintln!(
            "skipped {n} malformed rows of {} ({})",
            data["file"].as_str().unwrap_or("?"),
            data["skipped_examples"]
                .as_array()
                .map(|v| v
                    .iter()
                    .filter_map(|e| e.as_str())
                    .collect::<Vec<_>>()
                    .join("; "))
                .unwrap_or_default()
        );
    }
}

/// Prints the quality gate's notes; an error when it refused (nothing was
/// published), a warning when `--no-gate` published past it. Shared by `recs train`
/// and `recs import`.
pub(crate) fn check_gate(report: &recs_train::TrainReport) -> Result<()> {
    for note in &report.gate.notes {
        eprintln!("gate: {note}");
    }
    if report.refused() {
        bail!(
            "quality gate refused to publish (latest.txt unchanged): {}",
            report.gate.reasons()
        );
    }
    if !report.gate.passed() {
        eprintln!(
            "gate: --no-gate: published despite: {}",
            report.gate.reasons()
        );
    }
    Ok(())
}

pub(crate) fn print_json(v: &serde_json::Value) {
    println!(
        "{}",
        serde_json::to_string_pretty(v).expect("JSON serialises")
    );
}

/// `recs split`: writes OUT/train.tsv and OUT/test.tsv, prints a JSON summary.
pub fn run_split(args: SplitArgs) -> Result<()> {
    if !(0.0..=1.0).contains(&args.test_fraction) {
        bail!("--test-fraction must be within 0..=1");
    }
    let i = &args.input;
    let min_rating = match args.method {
        Method::Recbole => i.min_rating.unwrap_or(3.0),
        _ => i.min_rating(),
    };
    let data = ratings::read_ratings(&i.ratings, i.format, i.skip_bad_rows)?;
    let pairs: Vec<Pair> = data.positives(min_rating);
    let mut kept = None;
    let s = match args.method {
        Method::Holdout => split::holdout(&pairs, args.seed, args.test_fraction),
        Method::Llo => split::leave_last_out(&pairs)
            .map_err(|e| anyhow::anyhow!("{}: {e}", i.ratings.display()))?,
        Method::Recbole => {
            let core = split::k_core(&pairs, args.k_core);
            kept =
                Some(json!({"k_core": args.k_core, "positives": pairs.len(), "kept": core.len()}));
            split::recbole(&core, args.seed)
        }
    };
    let files = split::write_split(&args.out, &s)
        .with_context(|| format!("writing the split to {}", args.out.display()))?;
    note_skipped(&data.summary(min_rating));
    print_json(&json!({
        "method": args.method,
        "seed": args.seed,
        "input": data.summary(min_rating),
        "filter": kept,
        "files": files,
    }));
    Ok(())
}

/// `recs train`: prints a JSON summary; fails (non-zero exit) when the gate refuses.
pub async fn run_train(args: TrainArgs) -> Result<()> {
    let i = args.input;
    let opts = TrainOptions {
        ratings: i.ratings,
        format: i.format,
        skip_bad_rows: i.skip_bad_rows,
        min_rating: i.min_rating.unwrap_or(4.0),
        registry: args.registry,
        version: args.version,
        als: AlsConfig {
            factors: args.factors,
            regularization: args.regularization.unwrap_or(DEFAULT_REGULARIZATION),
            alpha: args.alpha,
            confidence: args.confidence,
            iterations: args.iterations,
            cg_steps: args.cg_steps,
            reg_exponent: args.reg_exponent,
            seed: args.seed,
            threads: args.threads,
            calculate_loss: args.loss,
        },
        id_rows: args.id_rows,
        test: args.gate.test,
        k: args.gate.k,
        gate: !args.gate.no_gate,
        gate_margin: args.gate.gate_margin,
        dry_run: args.dry_run,
        progress: true,
        popularity_version: (!args.no_popularity).then(|| args.popularity_version.clone()),
        snapshot: None,
        incumbent: None,
        trained_by: "recs train",
        auto_regularization: args.regularization.is_none(),
        tuning: None,
        protocol: None,
    };
    let report = match args.model {
        ModelKind::Als => recs_train::train(&opts).await?,
        ModelKind::Popularity => recs_train::train_popularity(&opts).await?,
    };
    print_json(&report.summary);
    note_skipped(&report.summary["model"]["data"]);
    check_gate(&report)?;
    for note in &report.notes {
        eprintln!("popularity: {note}");
    }
    match &report.published {
        Some(v) => {
            eprintln!("published {v} to {}; latest.txt -> {v}", opts.registry);
            if let Some(p) = &report.popularity {
                eprintln!("published {p} (popularity ranking of the same data) next to it");
            }
            crate::tell_served(&opts.registry, v).await;
        }
        None => eprintln!("dry run: nothing published"),
    }
    Ok(())
}

/// `recs eval`: offline metrics of a version and of popularity, as JSON.
pub async fn run_eval(args: EvalArgs) -> Result<()> {
    let registry = Registry::open(&args.registry)?;
    let version = match args.version {
        Some(v) => v,
        None => registry.latest().await?,
    };
    let loaded = registry
        .load(&version)
        .await
        .with_context(|| format!("loading {version} from {}", args.registry))?;
    let als = loaded.model.als().with_context(|| {
        format!(
            "{version} is a {} model; recs eval evaluates ALS versions (and popularity alongside)",
            loaded.model.kind()
        )
    })?;
    let mut masks = Vec::new();
    for m in &args.mask {
        let r = ratings::read_ratings(m, Format::Auto, false)
            .with_context(|| format!("reading --mask {}", m.display()))?;
        masks.extend(
            r.positives(args.min_rating.unwrap_or(4.0))
                .iter()
                .map(|p| (p.user, p.item)),
        );
    }
    let (set, source, protocol) = match (args.protocol, &args.test, &args.ratings) {
        (Some(Protocol::Recbole), _, Some(file)) => {
            let r = ratings::read_ratings(file, args.format, false)?;
            let pairs = r.positives(args.min_rating.unwrap_or(3.0));
            let s = split::recbole(&split::k_core(&pairs, 10), args.seed);
            masks.extend(s.valid().unwrap_or(&[]).iter().map(|p| (p.user, p.item)));
            // Train items the model does not hold as seen are masked too.
            masks.extend(s.train().iter().map(|p| (p.user, p.item)));
            let set = TestSet::from_pairs(s.test().iter().map(|p| (p.user, p.item)));
            let source =
                json!({"ratings_file": r.path, "ratings_sha256": r.sha256, "seed": args.seed});
            (set, source, RECBOLE_PROTOCOL.to_string())
        }
        (_, Some(test), _) => {
            let t = ratings::read_ratings(test, args.format, false)?;
            let set = TestSet::from_ratings(&t, args.min_rating.unwrap_or(4.0));
            let source = json!({"test_file": t.path, "test_sha256": t.sha256});
            let masked = if args.mask.is_empty() {
                String::new()
            } else {
                " and the --mask files' items".to_string()
            };
            (
                set,
                source,
                format!("held-out positives of {}, the version's TRAIN items{masked} masked, full ranking", t.path),
            )
        }
        _ => bail!("give --test FILE, or --protocol recbole --ratings FILE"),
    };
    let set = set.with_mask(masks);
    let e = eval::evaluate(als, &set, args.k);
    let mut out = e.to_json();
    out["version"] = json!(version);
    out["registry"] = json!(args.registry);
    out["protocol"] = json!(protocol);
    for (k, v) in source.as_object().into_iter().flatten() {
        out[k] = v.clone();
    }
    print_json(&out);
    Ok(())
}
