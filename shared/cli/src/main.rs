//! `recs`: the operator CLI (DESIGN.md, "CLI").

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::sync::Arc;

use anyhow::{bail, Context, Result};
use clap::{Parser, Subcommand};

mod catalog_cmd;
mod drift_cmd;
mod drill;
mod experiment_cmd;
mod import_cmd;
mod retrain_cmd;
mod train_cmd;
mod tune_cmd;

use recs_control::{self as control, RolloutPatch};
use recs_core::active;
use recs_core::Registry;
use recs_serve::{Config, Service};
use recs_train::gen_data::{self, GenConfig};
use serde_json::Value;

#[derive(Parser)]
#[command(name = "recs", version, about = "movie-recs operator CLI")]
struct Cli {
    /// Registry: a folder or s3://bucket/prefix (before or after the subcommand).
    #[arg(
        long,
        global = true,
        env = "MODEL_REGISTRY",
        default_value = "model_registry"
    )]
    registry: String,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Serve every route (/recommend, /healthz, /metrics, /switch, /rollout/*) on one local port.
    Serve {
        /// Port to listen on.
        #[arg(long, env = "PORT", default_value_t = 8080)]
        port: u16,
        /// Address to bind (loopback by default: the local server has no auth).
        #[arg(long, env = "HOST", default_value = "127.0.0.1")]
        host: IpAddr,
    },
    /// Verify a version and make it the one every instance serves (recorded in
    /// the registry's active.json; instances pick it up within ACTIVE_POLL_SECONDS).
    Switch {
        /// The version to serve, e.g. v0.2.
        version: String,
    },
    /// Roll back: switch every instance to active.json's previous_version (verified
    /// first). Refused, with the reason, when there is none, it is the version served,
    /// or active.json cannot be read.
    Rollback,
    /// Show or change the rollout (strategy, canary version and percentage, salt).
    Rollout {
        #[command(subcommand)]
        action: RolloutAction,
    },
    /// Load and verify a version (checksum, shapes, finiteness) without serving it.
    Verify {
        /// Version to verify (default: the one served, active.json's, else latest.txt's).
        version: Option<String>,
        /// Print the result as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Split positive ratings into train.tsv and test.tsv (holdout or leave-last-out).
    Split(train_cmd::SplitArgs),
    /// Train implicit-feedback ALS, evaluate, gate and publish a new version.
    Train(train_cmd::TrainArgs),
    /// Offline metrics (P, R, NDCG, MAP, HR at k, R@20, coverage, popularity bias) of a
    /// version and of popularity, as JSON; `--protocol recbole` splits a ratings file itself.
    Eval(train_cmd::EvalArgs),
    /// Search ALS hyper-parameters on a validation set, then train the best on TRAIN,
    /// gate and publish it (the search recorded in meta.json).
    Tune(tune_cmd::TuneArgs),
    /// Import a model trained elsewhere (Spark MLlib ALS) as a verified, gated version.
    Import {
        #[command(subcommand)]
        action: import_cmd::ImportAction,
    },
    /// Data drift: PSI per feature of the last window of events against the served
    /// version's training baseline (`recs drift baseline` builds that baseline).
    Drift(drift_cmd::DriftArgs),
    /// A/B analysis of the exposure log and promotion of the candidate.
    Experiment {
        #[command(subcommand)]
        action: experiment_cmd::ExperimentAction,
    },
    /// Drill an alert on both builds: induce its cause (fault injection, needs
    /// RECS_FAULT_INJECTION=1), see it fire and resolve; healthy and boundary traffic quiet.
    Drill(drill::DrillArgs),
    /// Retrain: the served version's snapshot plus the rate events since, deduplicated,
    /// trained with its hyper-parameters, gated on a time-based holdout, published and
    /// started as a canary. Refuses (non-zero exit) an empty or worse model.
    Retrain(retrain_cmd::RetrainArgs),
    /// Takedowns: block, unblock or list the movies no instance may return
    /// (the registry's blocked.json, polled with active.json).
    Catalog {
        #[command(subcommand)]
        action: catalog_cmd::CatalogAction,
    },
    /// Recommendations for a file of users (AWS Personalize's batch format: JSON
    /// lines {"userId": "1"} in, {"input", "output": {"recommendedItems", "scores"},
    /// "error"} out), from and to a file or S3.
    Batch(catalog_cmd::BatchArgs),
    /// Generate synthetic MovieLens-format ratings and titles with planted structure.
    GenData {
        /// Output folder for ratings.csv and movie_titles.csv.
        #[arg(long)]
        out: PathBuf,
        #[arg(long, default_value_t = 600)]
        users: usize,
        #[arg(long, default_value_t = 400)]
        items: usize,
        /// Dimensions of the planted latent structure.
        #[arg(long, default_value_t = 8)]
        factors: usize,
        /// Median ratings per user.
        #[arg(long, default_value_t = 40)]
        ratings_per_user: usize,
        #[arg(long, default_value_t = 42)]
        seed: u64,
        /// Also publish the planted factors as a version in this registry (a
        /// stand-in model for demos and tests), with the titles beside it.
        #[arg(long)]
        publish: Option<String>,
        /// Version name for --publish (default: the next vX.Y).
        #[arg(long, requires = "publish")]
        version: Option<String>,
    },
}

#[derive(Subcommand)]
enum RolloutAction {
    /// Print active.json (active, previous, rollout, history).
    Status,
    /// Change only the fields given; a canary version is verified first.
    Update {
        /// fixed | canary | ab_test | shadow
        #[arg(long)]
        strategy: Option<String>,
        /// The canary (or variant_B) version; "none" clears it.
        #[arg(long)]
        canary_version: Option<String>,
        /// Share of users on the canary, 0-100.
        #[arg(long)]
        canary_percentage: Option<String>,
        /// A new salt reassigns users to variants.
        #[arg(long)]
        salt: Option<String>,
    },
}

#[tokio::main]
async fn main() -> std::process::ExitCode {
    // A closed pipe (`recs rollout status | head`) ends the process quietly, as it
    // does for other Unix tools, instead of a panic in println!.
    // SAFETY: called before any other thread exists; SIG_DFL is always valid.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
    }
    recs_telemetry::init_logging();
    match run(Cli::parse()).await {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {}", cause_chain(&e));
            std::process::ExitCode::FAILURE
        }
    }
}

/// The whole cause chain on one line, each cause once: a library error whose
/// message already quotes its source is not followed by that source again.
fn cause_chain(e: &anyhow::Error) -> String {
    let mut out = String::new();
    for cause in e.chain() {
        let text = cause.to_string();
        let text = text.trim();
        if text.is_empty() || out.contains(text) {
            continue;
        }
        if !out.is_empty() {
            out.push_str(": ");
        }
        out.push_str(text);
    }
    out
}

async fn run(cli: Cli) -> Result<()> {
    let registry = cli.registry;
    match cli.command {
        Command::Serve { port, host } => serve(registry, SocketAddr::new(host, port)).await,
        Command::Verify { version, json } => verify(&registry, version, json).await,
        Command::Switch { version } => switch(&registry, &version).await,
        Command::Rollback => rollback(&registry).await,
        Command::Rollout { action } => rollout(&registry, action).await,
        Command::Split(args) => train_cmd::run_split(args),
        Command::Train(args) => {
            train_cmd::run_train(train_cmd::TrainArgs { registry, ..args }).await
        }
        Command::Eval(args) => train_cmd::run_eval(train_cmd::EvalArgs { registry, ..args }).await,
        Command::Tune(args) => tune_cmd::run(tune_cmd::TuneArgs { registry, ..args }).await,
        Command::Import { action } => import_cmd::run(action, registry).await,
        Command::Drift(args) => drift_cmd::run(args, registry).await,
        Command::Experiment { action } => experiment_cmd::run(action, &registry).await,
        Command::Catalog { action } => catalog_cmd::run(action, &registry).await,
        Command::Batch(args) => catalog_cmd::run_batch(args, &registry).await,
        Command::Drill(args) => drill::run(args, registry).await,
        Command::Retrain(args) => {
            retrain_cmd::run(retrain_cmd::RetrainArgs { registry, ..args }).await
        }
        Command::GenData {
            out,
            users,
            items,
            factors,
            ratings_per_user,
            seed,
            publish,
            version,
        } => {
            if users == 0 || items < 2 || factors == 0 || ratings_per_user == 0 {
                bail!("--users, --factors and --ratings-per-user must be positive and --items at least 2");
            }
            let config = GenConfig {
                users,
                items,
                factors,
                ratings_per_user,
                seed,
                ..GenConfig::default()
            };
            gen_data(&out, &config, publish, version).await
        }
    }
}

async fn serve(registry: String, addr: SocketAddr) -> Result<()> {
    recs_serve::alloc::tune();
    // A folder that does not exist is a typo, not an outage: stop here. An
    // unreachable S3 registry is retried (it may come back).
    if let Some(root) = Registry::open(&registry)?.local_root() {
        if !root.is_dir() {
            bail!("registry folder {} does not exist", root.display());
        }
    }
    let config = Config {
        registry,
        ..Config::from_env().context("reading configuration")?
    };
    if config.admin_token.is_none() {
        tracing::warn!(
            "RECS_ADMIN_TOKEN is not set: /switch and /rollout/update accept any local caller"
        );
    }
    let svc = Arc::new(Service::start(config).await);
    let (listener, local) = recs::server::bind(addr)
        .await
        .with_context(|| format!("binding {addr}"))?;
    tracing::info!(address = %local, "recs serve listening");
    eprintln!("recs serve: http://{local}/recommend/1?k=10  http://{local}/healthz  http://{local}/metrics");
    let shutdown = async {
        // Ctrl-C in a terminal, SIGTERM from a supervisor (systemd, docker stop, kill).
        let mut term =
            tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).ok();
        let sigterm = async {
            match term.as_mut() {
                Some(t) => t.recv().await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            _ = sigterm => {}
        }
        tracing::info!("shutting down");
    };
    recs::server::serve(listener, svc, shutdown).await?;
    Ok(())
}

/// What is served now ([`active::served_version`]): active.json's, else latest.txt's.
async fn serving(registry: &Registry) -> Result<Option<String>> {
    match active::served_version(registry, None).await {
        Ok((_, v)) => Ok(Some(v)),
        Err(active::ServedError::Latest(_)) => Ok(None),
        Err(e) => Err(e.into()),
    }
}

/// The registry at `location`; a folder that does not exist is a typo, not an empty
/// registry, and is refused.
fn open_existing(location: &str) -> Result<Registry> {
    let registry = Registry::open(location)?;
    if let Some(root) = registry.local_root() {
        if !root.is_dir() {
            bail!("registry folder {} does not exist", root.display());
        }
    }
    Ok(registry)
}

async fn rollback(location: &str) -> Result<()> {
    let registry = open_existing(location)?;
    let (state, _) = active::read(registry.store())
        .await
        .with_context(|| format!("cannot roll back: {location}/active.json cannot be read"))?
        .with_context(|| {
            format!("cannot roll back: {location} has no active.json, so no previous version is recorded")
        })?;
    let Some(previous) = state.previous_version.clone() else {
        bail!(
            "cannot roll back: active.json records no previous version (serving {})",
            state.active_version
        );
    };
    if previous == state.active_version {
        bail!("cannot roll back: the previous version {previous} is the one served");
    }
    let done = control::switch(&registry, &previous, Some(&state.active_version), &[])
        .await
        .with_context(|| format!("cannot roll back to {previous}"))?;
    eprintln!(
        "rolled back: {} -> {previous} (revision {}); every instance follows within ACTIVE_POLL_SECONDS",
        state.active_version, done.state.revision
    );
    print_switched(&done);
    Ok(())
}

/// What a switch or rollback did, as `/switch` answers it.
fn print_switched(done: &control::Switched) {
    println!(
        "{}",
        serde_json::json!({
            "status": "ok",
            "model_version": done.state.active_version,
            "previous_version": done.previous_version,
            "revision": done.state.revision,
        })
    );
}

async fn switch(location: &str, version: &str) -> Result<()> {
    let registry = open_existing(location)?;
    let current = serving(&registry).await?;
    let done = control::switch(&registry, version, current.as_deref(), &[]).await?;
    print_switched(&done);
    Ok(())
}

async fn rollout(location: &str, action: RolloutAction) -> Result<()> {
    let registry = open_existing(location)?;
    match action {
        RolloutAction::Status => match active::read(registry.store()).await? {
            Some((state, _)) => println!("{}", serde_json::to_string_pretty(&state)?),
            None => println!(
                "{}",
                serde_json::json!({"active_version": registry.latest().await.ok(), "rollout": active::Rollout::default(), "note": "no active.json yet: serving latest.txt"})
            ),
        },
        RolloutAction::Update {
            strategy,
            canary_version,
            canary_percentage,
            salt,
        } => {
            // The flags given, parsed as POST /rollout/update parses its fields.
            let fields = [
                ("strategy", strategy.map(Value::from)),
                ("canary_version", canary_version.map(Value::from)),
                ("canary_percentage", canary_percentage.map(Value::from)),
                ("salt", salt.map(Value::from)),
            ];
            if fields.iter().all(|(_, v)| v.is_none()) {
                bail!("nothing to change: give --strategy, --canary-version, --canary-percentage or --salt");
            }
            let patch =
                RolloutPatch::from_fields(fields.into_iter().filter_map(|(k, v)| Some((k, v?))))?;
            let current = serving(&registry).await?;
            let (state, _) =
                control::update_rollout(&registry, &patch, current.as_deref(), &[]).await?;
            println!("{}", serde_json::to_string_pretty(&state)?);
        }
    }
    Ok(())
}

async fn verify(location: &str, version: Option<String>, json: bool) -> Result<()> {
    let checked = verify_one(location, version.clone()).await;
    if let (Err(e), true) = (&checked, json) {
        // The runbook pipes --json to jq: a failure is JSON too (and exit 1).
        println!(
            "{}",
            serde_json::json!({"version": version, "ok": false, "registry": location, "error": cause_chain(e)})
        );
    }
    let loaded = checked?;
    let version = loaded.version.clone();
    let m = &loaded.model;
    let summary = serde_json::json!({
        "version": loaded.version,
        "ok": true,
        "users": m.n_users(),
        "items": m.n_items(),
        "factors": m.factors(),
        "model_name": m.kind(),
        "seen_interactions": m.als().map(|a| a.seen().nnz()),
        "artifact_sha": loaded.artifact_sha,
        "artifact_size": loaded.artifact_size,
        "checksum_checked": loaded.meta.artifact_sha.is_some(),
        "load_seconds": loaded.load_seconds,
    });
    if json {
        println!("{summary}");
    } else {
        println!(
            "{version}: OK ({} users, {} items, {} factors, artifact_sha {}{})",
            m.n_users(),
            m.n_items(),
            m.factors(),
            &loaded.artifact_sha[..12],
            if loaded.meta.artifact_sha.is_some() {
                ", checksum matches meta.json"
            } else {
                ", no checksum in meta.json"
            }
        );
    }
    Ok(())
}

async fn verify_one(location: &str, version: Option<String>) -> Result<recs_core::LoadedModel> {
    let registry = open_existing(location)?;
    let version = match version {
        Some(v) => v,
        None => active::served_version(&registry, None).await?.1,
    };
    match registry.load(&version).await {
        Ok(loaded) => Ok(loaded),
        Err(recs_core::RegistryError::UnknownVersion(_)) => {
            let versions = registry.versions().await.unwrap_or_default();
            bail!(
                "version {version} does not exist in registry {location} (it has: {})",
                if versions.is_empty() {
                    "no versions".to_string()
                } else {
                    versions.join(", ")
                }
            )
        }
        Err(e) => {
            Err(e).with_context(|| format!("version {version} in {location} failed verification"))
        }
    }
}

async fn gen_data(
    out: &std::path::Path,
    config: &GenConfig,
    publish: Option<String>,
    version: Option<String>,
) -> Result<()> {
    std::fs::create_dir_all(out).with_context(|| format!("creating {}", out.display()))?;
    let data = gen_data::generate(config);
    let ratings = out.join("ratings.csv");
    let titles = out.join("movie_titles.csv");
    data.write_ratings_csv(&ratings)
        .with_context(|| format!("writing {}", ratings.display()))?;
    data.write_titles_csv(&titles)
        .with_context(|| format!("writing {}", titles.display()))?;
    println!(
        "wrote {} ratings by {} users of {} movies to {} (seed {})",
        data.ratings.len(),
        config.users,
        config.items,
        ratings.display(),
        config.seed
    );
    if let Some(location) = publish {
        let registry = Registry::open(&location)?;
        if let Some(root) = registry.local_root() {
            std::fs::create_dir_all(root).with_context(|| format!("creating {location}"))?;
        }
        let version = match version {
            Some(v) => v,
            None => registry.next_version().await?,
        };
        active::pin_served(&registry)
            .await
            .context("recording the served version before publishing")?;
        let loaded = registry
            .publish(&version, &data.planted_artifacts())
            .await
            .with_context(|| format!("publishing {version} to {location}"))?;
        let titles_bytes =
            std::fs::read(&titles).with_context(|| format!("reading {}", titles.display()))?;
        registry
            .store()
            .put("movie_titles.csv", titles_bytes)
            .await
            .with_context(|| format!("copying titles to {location}"))?;
        println!(
            "published planted model {} to {location} ({} users, {} items, {} factors); latest.txt -> {}",
            loaded.version,
            loaded.model.n_users(),
            loaded.model.n_items(),
            loaded.model.factors(),
            loaded.version
        );
        tell_served(&location, &loaded.version).await;
    }
    Ok(())
}

/// After a publish: what is served, and the command that would serve `published`
/// (publishing moves latest.txt, never what instances serve once active.json exists).
async fn tell_served(location: &str, published: &str) {
    let Ok(registry) = Registry::open(location) else {
        return;
    };
    match active::served_version(&registry, None).await {
        Ok((Some(_), served)) if served != published => eprintln!(
            "serving {served} (active.json); to serve {published}: recs switch --registry {location} {published}"
        ),
        Ok(_) => eprintln!("serving {published}"),
        Err(e) => eprintln!("cannot tell what is served: {e}"),
    }
}
