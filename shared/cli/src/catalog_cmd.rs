//! `recs catalog block|unblock|list` (takedowns in the registry's blocked.json, the
//! same writes as the admin routes) and `recs batch` (a file of users in AWS
//! Personalize's batch format, from and to a folder or S3).

use anyhow::{bail, Context, Result};
use clap::{Args, Subcommand};
use indicatif::{ProgressBar, ProgressStyle};
use serde_json::json;

use recs_core::batch::{self, Prepared};
use recs_core::blocked;
use recs_core::filter::ItemFilter;
use recs_core::Registry;

/// What to do with the blocked set.
#[derive(Subcommand, Debug)]
pub enum CatalogAction {
    /// Take movies down everywhere: every instance stops returning them within
    /// ACTIVE_POLL_SECONDS, without a retrain or a version change.
    Block {
        /// Movie ids (1 to 1000).
        #[arg(required = true, num_args = 1..)]
        movie_ids: Vec<i64>,
        /// Why (kept in blocked.json, shown by `recs catalog list`).
        #[arg(long, default_value = "")]
        reason: String,
    },
    /// Let blocked movies be returned again.
    Unblock {
        /// Movie ids (1 to 1000).
        #[arg(required = true, num_args = 1..)]
        movie_ids: Vec<i64>,
    },
    /// Print the blocked set (JSON).
    List,
}

/// Runs `recs catalog`.
pub async fn run(action: CatalogAction, registry: &str) -> Result<()> {
    let registry = Registry::open(registry)?;
    let store = registry.store();
    let out = match action {
        CatalogAction::Block { movie_ids, reason } => {
            let change = blocked::block(store, &movie_ids, &reason).await?;
            let known = known_ids(&registry).await;
            let unknown: Vec<i64> = movie_ids
                .iter()
                .copied()
                .filter(|id| known.as_ref().is_some_and(|k| !k.contains(id)))
                .collect();
            if !unknown.is_empty() {
                eprintln!("note: no served version or catalog knows {unknown:?}; blocked anyway (a takedown may precede a release)");
            }
            json!({"blocked": change.changed, "already_blocked": change.unchanged,
                   "unknown": unknown, "revision": change.set.revision, "count": change.set.movies.len()})
        }
        CatalogAction::Unblock { movie_ids } => {
            let change = blocked::unblock(store, &movie_ids).await?;
            json!({"unblocked": change.changed, "not_blocked": change.unchanged,
                   "revision": change.set.revision, "count": change.set.movies.len()})
        }
        CatalogAction::List => {
            let set = blocked::read(store)
                .await?
                .map(|(s, _)| s)
                .unwrap_or_default();
            serde_json::to_value(&set)?
        }
    };
    println!("{}", serde_json::to_string_pretty(&out)?);
    Ok(())
}

/// Movie ids the served version or the catalog knows (`None` when neither can be read).
async fn known_ids(registry: &Registry) -> Option<std::collections::HashSet<i64>> {
    let p = batch::prepare(registry, None).await.ok()?;
    let mut known: std::collections::HashSet<i64> = match &p.model.model {
        recs_core::ServedModel::Als(m) => m.items().iter().copied().collect(),
        recs_core::ServedModel::Popularity(m) => m.items().iter().copied().collect(),
    };
    known.extend(p.catalog.ids());
    Some(known)
}

/// `recs batch`: arguments.
#[derive(Args, Debug)]
pub struct BatchArgs {
    /// Input: JSON lines {"userId": "1"}, a file or s3://bucket/key.
    #[arg(long)]
    input: String,
    /// Output: a file or s3://bucket/key, written whole at the end.
    #[arg(long)]
    output: String,
    /// Movies per user.
    #[arg(long, default_value_t = 20, value_parser = clap::value_parser!(u64).range(1..=1000))]
    k: u64,
    /// Answer with this version (default: the served primary, as /recommend does
    /// for users outside a canary).
    #[arg(long)]
    version: Option<String>,
    /// Only movies of any of these genres (comma-separated, as the catalog names them).
    #[arg(long, value_delimiter = ',')]
    genres: Vec<String>,
    /// No movies of these genres.
    #[arg(long, value_delimiter = ',')]
    exclude_genres: Vec<String>,
    /// Only movies from this year on.
    #[arg(long)]
    year_min: Option<i32>,
    /// Only movies up to this year.
    #[arg(long)]
    year_max: Option<i32>,
    /// Movie ids never to return (comma-separated).
    #[arg(long, value_delimiter = ',')]
    exclude: Vec<i64>,
}

/// Runs `recs batch`.
pub async fn run_batch(args: BatchArgs, registry: &str) -> Result<()> {
    if args.exclude.iter().any(|&id| id < 0) {
        bail!("--exclude must list non-negative movie ids");
    }
    let registry = Registry::open(registry)?;
    let started = std::time::Instant::now();
    let prepared: Prepared = batch::prepare(&registry, args.version.as_deref())
        .await
        .with_context(|| {
            format!(
                "loading what answers the batch from {}",
                registry.location()
            )
        })?;
    let filter = ItemFilter::new(
        &prepared.catalog,
        &args.genres,
        &args.exclude_genres,
        args.year_min,
        args.year_max,
    )?;
    let bar = ProgressBar::new(0).with_style(
        ProgressStyle::with_template("{spinner} {pos} users [{elapsed_precise}, {per_sec}]")
            .unwrap_or_else(|_| ProgressStyle::default_spinner()),
    );
    let summary = batch::run_job(
        &prepared,
        &args.input,
        &args.output,
        args.k as usize,
        &args.exclude,
        filter.as_ref(),
        &|done| bar.set_position(done as u64),
    )
    .await
    .with_context(|| format!("batch {} -> {}", args.input, args.output))?;
    bar.finish_and_clear();
    let seconds = started.elapsed().as_secs_f64();
    eprintln!(
        "{} users: {} answered, {} unknown (popularity fallback), {} errors; {:.1} s",
        summary.lines, summary.answered, summary.fallback, summary.errors, seconds
    );
    println!(
        "{}",
        serde_json::to_string_pretty(&json!({
            "input": args.input,
            "output": args.output,
            "version": prepared.model.version,
            "blocked": prepared.blocked.len(),
            "summary": summary,
            "seconds": seconds,
        }))?
    );
    Ok(())
}
