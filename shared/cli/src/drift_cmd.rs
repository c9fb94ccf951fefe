//! `recs drift` (PSI of the last window), `recs drift baseline` (build a version's
//! baseline from its training ratings) and `recs drift gen-events` (synthetic events
//! for demos). The binary only routes here.

use std::path::PathBuf;

use anyhow::{bail, Context, Result};

use recs_core::{Registry, Store};
use recs_drift::{
    format_window, parse_window, run as run_drift, save_baseline, synth, write_latest, Baseline,
    ModelIndex, Options, LATEST_KEY,
};
use recs_train::ratings::{read_ratings, Format};

/// `recs drift [--events LOC] ...` or `recs drift <baseline|gen-events> ...`.
#[derive(Debug, Clone, clap::Args)]
#[command(args_conflicts_with_subcommands = true)]
pub struct DriftArgs {
    #[command(subcommand)]
    pub command: Option<DriftCommand>,
    #[command(flatten)]
    pub run: RunArgs,
}

#[derive(Debug, Clone, clap::Subcommand)]
pub enum DriftCommand {
    /// Build a version's drift baseline from its training ratings (<version>/drift_baseline.json).
    Baseline(BaselineArgs),
    /// Write synthetic rating and watch events (partitioned JSON lines) or a training CSV.
    GenEvents(GenEventsArgs),
}

/// PSI of the last window of events against the served version's baseline.
#[derive(Debug, Clone, clap::Args)]
pub struct RunArgs {
    /// Events: a folder or s3://bucket/prefix holding <kind>/<YYYY-MM-DD>/*.jsonl|csv
    /// (env EVENTS, or DRIFT_EVENTS_URI as in the SAM template).
    #[arg(long, env = "EVENTS")]
    pub events: Option<String>,
    /// Set from the global `--registry` (before or after the subcommand).
    #[arg(skip)]
    pub registry: String,
    /// Window length: 24h, 6h, 90m, 7d ...
    #[arg(long, env = "DRIFT_WINDOW", default_value = "24h")]
    pub window: String,
    /// Window end: RFC 3339 or epoch seconds/ms (default: now).
    #[arg(long, env = "DRIFT_UNTIL")]
    pub until: Option<String>,
    /// Do not report a feature with fewer observations than this in the window.
    #[arg(long, env = "DRIFT_MIN_COUNT", default_value_t = recs_drift::DEFAULT_MIN_COUNT)]
    pub min_count: u64,
    /// Compare with this version instead of the served one (active.json, else latest.txt).
    #[arg(long = "model-version")]
    pub model_version: Option<String>,
    /// Leave watch events (no rating) out of every feature.
    #[arg(long, env = "DRIFT_RATINGS_ONLY")]
    pub ratings_only: bool,
    /// Print the summary JSON instead of the table.
    #[arg(long)]
    pub json: bool,
    /// Do not store the summary as <registry>/drift/latest.json.
    #[arg(long)]
    pub no_write: bool,
}

/// `recs drift baseline`.
#[derive(Debug, Clone, clap::Args)]
pub struct BaselineArgs {
    /// The training ratings: MovieLens CSV, ml-100k u.data, ml-1m ratings.dat, or user,item,rating,ts.
    #[arg(long)]
    pub ratings: PathBuf,
    /// Rating file format (auto: detected from the first line).
    #[arg(long, value_enum, default_value_t = Format::Auto)]
    pub format: Format,
    /// Set from the global `--registry` (before or after the subcommand).
    #[arg(skip)]
    pub registry: String,
    /// The version (default: the served one: active.json, else latest.txt).
    #[arg(long)]
    pub version: Option<String>,
    /// Also hold the reference spread for this window length (1h, 6h, 12h, 24h, 7d always).
    #[arg(long)]
    pub window: Option<String>,
}

/// `recs drift gen-events`.
#[derive(Debug, Clone, clap::Args)]
pub struct GenEventsArgs {
    /// Users and item popularity come from this registry's served version.
    /// Set from the global `--registry` (before or after the subcommand).
    #[arg(skip)]
    pub registry: String,
    /// Write partitioned JSON lines here (folder or s3://bucket/prefix).
    #[arg(long, required_unless_present = "ratings_csv")]
    pub out: Option<String>,
    /// Instead, write a MovieLens CSV (userId,movieId,rating,timestamp) for a baseline.
    #[arg(long, conflicts_with = "out")]
    pub ratings_csv: Option<PathBuf>,
    /// End of the generated period: RFC 3339 or epoch (default: now).
    #[arg(long)]
    pub until: Option<String>,
    /// Length of the generated period.
    #[arg(long, default_value = "24h")]
    pub period: String,
    /// Mean time between two events of one user.
    #[arg(long, default_value = "12h")]
    pub mean_gap: String,
    /// Plant drift: ratings skewed low and 30 % of events on 50 items the model never saw.
    #[arg(long)]
    pub shift: bool,
    /// Users to simulate (default: the model's users).
    #[arg(long)]
    pub users: Option<usize>,
    #[arg(long, default_value_t = 7)]
    pub seed: u64,
    /// Lines per file.
    #[arg(long, default_value_t = 50_000)]
    pub per_file: usize,
}

/// A window end given as RFC 3339 or epoch seconds/milliseconds; `None` = now.
pub fn parse_until(s: Option<&str>) -> Result<i64> {
    match s {
        None => Ok(recs_core::time::now_ms()),
        Some(t) => recs_core::time::parse_time(t)
            .with_context(|| format!("{t:?} is not RFC 3339 or epoch seconds/milliseconds")),
    }
}

fn window_secs(s: &str) -> Result<u64> {
    parse_window(s).with_context(|| format!("window {s:?}: use e.g. 24h, 6h, 90m, 7d"))
}

/// Runs `recs drift ...`.
pub async fn run(args: DriftArgs, registry: String) -> Result<()> {
    match args.command {
        Some(DriftCommand::Baseline(a)) => baseline(BaselineArgs { registry, ..a }).await,
        Some(DriftCommand::GenEvents(a)) => gen_events(GenEventsArgs { registry, ..a }).await,
        None => {
            drift(RunArgs {
                registry,
                ..args.run
            })
            .await
        }
    }
}

async fn drift(a: RunArgs) -> Result<()> {
    let Some(events) = recs_drift::events_location(a.events) else {
        bail!("give --events LOC (a folder or s3://bucket/prefix), or set EVENTS");
    };
    let registry = Registry::open(&a.registry)?;
    let opts = Options {
        window_secs: window_secs(&a.window)?,
        until_ms: parse_until(a.until.as_deref())?,
        min_count: a.min_count,
        version: a.model_version,
        ratings_only: a.ratings_only,
    };
    let store = Store::open(&events)?;
    let summary = run_drift(&registry, &store, &opts).await?;
    if a.json {
        println!("{}", serde_json::to_string_pretty(&summary)?);
    } else {
        print!("{}", summary.table());
    }
    if summary.events == 0 {
        // An empty window measures nothing: the last result stays as it was (an
        // empty summary would clear the drift gauge as if all were well).
        eprintln!(
            "no events in the window under {events} (until {}): nothing measured, {}/{LATEST_KEY} not written; check that events are being written there",
            summary.window_end,
            registry.location()
        );
        return Ok(());
    }
    if !a.no_write {
        write_latest(registry.store(), &summary)
            .await
            .with_context(|| format!("writing {LATEST_KEY}"))?;
        if !a.json {
            println!("wrote {}/{LATEST_KEY}", registry.location());
        }
    }
    Ok(())
}

async fn baseline(a: BaselineArgs) -> Result<()> {
    let registry = Registry::open(&a.registry)?;
    let version = match a.version {
        Some(v) => v,
        None => recs_core::active::served_version(&registry, None).await?.1,
    };
    let extra: Vec<u64> = a
        .window
        .as_deref()
        .map(window_secs)
        .transpose()?
        .into_iter()
        .collect();
    let ratings = read_ratings(&a.ratings, a.format, true)?;
    if ratings.rows.is_empty() {
        bail!("{}: no rating rows", a.ratings.display());
    }
    let model = registry.load(&version).await?;
    let rows = &ratings.rows;
    let mut b = Baseline::compute_indexed(rows, &ModelIndex::of(&model.model), &extra);
    b.source = format!("{} (sha256 {})", a.ratings.display(), ratings.sha256);
    save_baseline(&registry, &version, &b).await?;
    println!(
        "wrote {}/{version}/{}: {} rows ({} with a timestamp, {} malformed skipped); features: {}; reference windows: {}",
        registry.location(),
        recs_drift::BASELINE_FILE,
        b.rows,
        b.rows_with_time,
        ratings.skipped,
        b.features.keys().cloned().collect::<Vec<_>>().join(", "),
        b.reference.keys().map(|&w| format_window(w)).collect::<Vec<_>>().join(", ")
    );
    for (feature, why) in &b.missing {
        eprintln!("WARNING: the baseline has no {feature}: {why}");
    }
    Ok(())
}

async fn gen_events(a: GenEventsArgs) -> Result<()> {
    let registry = Registry::open(&a.registry)?;
    let version = recs_core::active::served_version(&registry, None).await?.1;
    let model = registry.load(&version).await?;
    let als = model.model.als().with_context(|| {
        format!("{version} is a {} model; gen-events plants events from an ALS version (pass --registry with one served)", model.model.kind())
    })?;
    let mut cfg = synth::SynthConfig::from_model(als, a.seed);
    if a.ratings_csv.is_some() {
        // Training data: ratings only (same event rate, every event rated).
        cfg.watch_share = 0.0;
    }
    cfg.mean_gap_secs = window_secs(&a.mean_gap)? as f64;
    if let Some(n) = a.users {
        cfg.users = (1..=n as i64).collect();
    }
    let end = parse_until(a.until.as_deref())?;
    let start = end - window_secs(&a.period)? as i64 * 1000;
    let mut events = synth::events(&cfg, start, end);
    if a.shift {
        let base = als.items().iter().max().copied().unwrap_or(0) + 1_000;
        synth::shift(&mut events, synth::Shift::planted(base), a.seed + 1);
    }
    match (a.out, a.ratings_csv) {
        (_, Some(path)) => {
            synth::write_ratings_csv(&events, &path)?;
            println!("wrote {} ratings to {}", events.len(), path.display());
        }
        (Some(out), None) => {
            let store = Store::open(&out)?;
            let files = synth::write_events(&store, &events, a.per_file).await?;
            println!(
                "wrote {} events in {files} files under {} ({} .. {}, model {version}{})",
                events.len(),
                store.location(),
                recs_core::time::rfc3339((start / 1000) as u64),
                recs_core::time::rfc3339((end / 1000) as u64),
                if a.shift { ", shifted" } else { "" }
            );
        }
        (None, None) => bail!("give --out or --ratings-csv"),
    }
    Ok(())
}
