//! `recs experiment analyze|promote`: the A/B routes' analysis and promotion from
//! the command line, on a folder or S3 registry and events location.

use anyhow::{bail, Context, Result};
use clap::{Args, Subcommand};

use recs_control as control;
use recs_core::{active, Registry, Store};
use recs_experiment::{Experiment, PromoteRule, Report, RunParams};

/// What to do.
#[derive(Subcommand, Debug)]
pub enum ExperimentAction {
    /// Per-variant conversion (exposures joined with later watch/rate events), the
    /// z-test, the sample-ratio check, the guardrails and what promotion would do.
    Analyze(ExperimentArgs),
    /// Promote the candidate (a verified switch, then the rollout ends) when every
    /// check holds. A dry run unless --apply is given.
    Promote {
        #[command(flatten)]
        args: ExperimentArgs,
        /// Switch for real (default: say what would happen).
        #[arg(long)]
        apply: bool,
    },
}

/// The analysis window and the rule.
#[derive(Args, Debug)]
pub struct ExperimentArgs {
    /// Events location: the exposure log (reco_response/...) and watch/rate events.
    #[arg(long, env = "EVENTS")]
    events: String,
    /// Analyze the exposures of the last this many minutes.
    #[arg(long, default_value_t = 60, value_parser = clap::value_parser!(u64).range(1..=129_600))]
    time_window_minutes: u64,
    /// Conversion window after each exposure, minutes.
    #[arg(long, default_value_t = 1440, value_parser = clap::value_parser!(u64).range(1..=43_200))]
    conversion_window_minutes: u64,
    /// Fewest exposures per variant before anything is decided.
    #[arg(long, default_value_t = 1000)]
    min_exposures: u64,
    /// Largest allowed p95 latency increase of B over A, percent.
    #[arg(long, default_value_t = 10.0)]
    max_latency_regression_pct: f64,
    /// Print the report as JSON.
    #[arg(long)]
    json: bool,
}

/// Runs `recs experiment`.
pub async fn run(action: ExperimentAction, registry: &str) -> Result<()> {
    let (args, apply) = match action {
        ExperimentAction::Analyze(args) => (args, None),
        ExperimentAction::Promote { args, apply } => (args, Some(apply)),
    };
    if !(0.0..=1000.0).contains(&args.max_latency_regression_pct) {
        bail!("--max-latency-regression-pct must be in 0..=1000");
    }
    let registry = Registry::open(registry)?;
    let Some((state, _)) = active::read(registry.store()).await? else {
        bail!("no active.json in {}: no rollout, so no experiment (start one with `recs rollout update --strategy ab_test ...`)", registry.location());
    };
    let experiment = Experiment::of(&state.active_version, &state.rollout)?;
    let events =
        Store::open(&args.events).with_context(|| format!("events location {}", args.events))?;
    let params = RunParams {
        window_minutes: args.time_window_minutes,
        conversion_minutes: args.conversion_window_minutes,
        rule: PromoteRule {
            min_exposures: args.min_exposures,
            max_latency_regression_pct: args.max_latency_regression_pct,
            ..PromoteRule::default()
        },
    };
    let report = recs_experiment::run(&events, experiment, recs_core::time::now_ms(), &params)
        .await
        .with_context(|| format!("reading {}", args.events))?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        print_report(&report);
    }
    let Some(apply) = apply else { return Ok(()) };
    let target = &report.experiment.variant_b;
    if !report.decision.promote {
        println!(
            "not promoted: {} ({})",
            report.decision.reason, report.decision.action
        );
        return Ok(());
    }
    if !apply {
        println!("would promote {target} (dry run; --apply switches every instance to it)");
        return Ok(());
    }
    let done = control::promote(&registry, target, Some(&state.active_version), &[]).await?;
    println!(
        "promoted {target}: every instance serves it within ACTIVE_POLL_SECONDS (was {}); rollout fixed",
        done.previous_version.as_deref().unwrap_or("none")
    );
    Ok(())
}

fn print_report(r: &Report) {
    let a = &r.analysis;
    println!(
        "{} {} (A) vs {} (B, {} %), exposures {} .. {}, conversion within {} min",
        r.experiment.strategy,
        r.experiment.variant_a,
        r.experiment.variant_b,
        r.experiment.percentage_b,
        r.start,
        r.end,
        r.conversion_window_minutes
    );
    println!(
        "{:<8} {:>10} {:>8} {:>11} {:>9} {:>19} {:>8} {:>11}",
        "variant", "exposures", "users", "conversions", "rate", "95 % CI", "5xx", "p95 ms"
    );
    for (name, v) in [("A", &a.variant_a), ("B", &a.variant_b)] {
        println!(
            "{:<8} {:>10} {:>8} {:>11} {:>9.4} {:>19} {:>8.4} {:>11}",
            format!("{name} {}", v.model_version),
            v.exposures,
            v.users,
            v.conversions,
            v.conversion_rate,
            format!(
                "[{:.4}, {:.4}]",
                v.conversion_rate_ci95[0], v.conversion_rate_ci95[1]
            ),
            v.error_rate_5xx,
            v.latency_p95_ms.map_or("-".into(), |p| format!("{p:.3}"))
        );
    }
    for c in &r.decision.checks {
        println!(
            "  [{}] {:<18} {}",
            if c.passed { "ok" } else { "no" },
            c.name,
            c.detail
        );
    }
    println!("decision: {} -> {}", r.decision.reason, r.decision.action);
}
