//! `recs import spark`: a Spark MLlib ALS model's factor folders become a registry
//! version, verified and gated like `recs train`'s. The work is
//! `recs_train::spark::import`; this module parses the arguments and prints.

use std::path::PathBuf;

use anyhow::Result;

use recs_train::spark::{self, ImportOptions};

use crate::train_cmd::{GateArgs, InputArgs};

/// `recs import`.
#[derive(Debug, Clone, clap::Subcommand)]
pub enum ImportAction {
    /// Spark MLlib ALSModel folders (userFactors/ and itemFactors/ Parquet: id, features)
    /// plus the ratings they were trained on (their positives are the seen items).
    Spark(SparkArgs),
}

/// `recs import spark`.
#[derive(Debug, Clone, clap::Args)]
pub struct SparkArgs {
    /// Set from the global `--registry` (before or after the subcommand).
    #[arg(skip)]
    pub registry: String,
    /// The model's userFactors/ folder (Spark's `model.write().save(DIR)` writes DIR/userFactors).
    #[arg(long)]
    pub user_factors: PathBuf,
    /// The model's itemFactors/ folder.
    #[arg(long)]
    pub item_factors: PathBuf,
    // --ratings: the ratings the model was trained on (their positives are the seen items).
    #[command(flatten)]
    pub input: InputArgs,
    #[command(flatten)]
    pub gate: GateArgs,
    /// Version name (default: vX.Y after the highest existing one).
    #[arg(long)]
    pub version: Option<String>,
}

/// Runs `recs import <source>`.
pub async fn run(action: ImportAction, registry: String) -> Result<()> {
    match action {
        ImportAction::Spark(args) => run_spark(SparkArgs { registry, ..args }).await,
    }
}

async fn run_spark(args: SparkArgs) -> Result<()> {
    let opts = ImportOptions {
        user_factors: args.user_factors,
        item_factors: args.item_factors,
        ratings: args.input.ratings,
        format: args.input.format,
        skip_bad_rows: args.input.skip_bad_rows,
        min_rating: args.input.min_rating.unwrap_or(4.0),
        registry: args.registry,
        version: args.version,
        test: args.gate.test,
        k: args.gate.k,
        gate: !args.gate.no_gate,
        gate_margin: args.gate.gate_margin,
        incumbent: None,
        snapshot: None,
        trained_by: "recs import spark",
    };
    let (report, ids) = spark::import(&opts).await?;
    crate::train_cmd::print_json(&report.summary);
    eprintln!(
        "spark factors: {} users, {} items; {} seen positives kept",
        ids.users, ids.items, ids.seen
    );
    if ids.positives_dropped > 0 {
        eprintln!(
            "ids: {} positives dropped from the seen items: {} users of the ratings have no factors (served as unknown users), {} items have none (cannot be served)",
            ids.positives_dropped, ids.rating_users_without_factors, ids.rating_items_without_factors
        );
    }
    if ids.factor_users_without_positives > 0 {
        eprintln!(
            "ids: {} users with factors have no positive in the ratings (nothing is excluded for them)",
            ids.factor_users_without_positives
        );
    }
    crate::train_cmd::check_gate(&report)?;
    if let Some(v) = &report.published {
        eprintln!("published {v} to {}; latest.txt -> {v}", opts.registry);
        crate::tell_served(&opts.registry, v).await;
    }
    Ok(())
}
