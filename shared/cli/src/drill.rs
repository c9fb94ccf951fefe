//! `recs drill <alert>`: induce an alert's cause and check that the alert fires, and
//! stays quiet when it should, on both builds.
//!
//! * local (`--side local`): `infra/tests/drill_prometheus.py` runs `recs serve` (this
//!   binary) with fault injection on, under a real Prometheus running the generated
//!   rules with short windows, and watches `/api/v1/alerts`.
//! * Lambda (`--side lambda`): the functions' handlers run in this process
//!   ([`recs_serve::lambda::respond_with_metrics`], the code `bootstrap` runs) with fault
//!   injection on; the EMF lines they print are given synthetic timestamps (so two
//!   "minutes" take milliseconds) and `infra/tests/cw_eval.py` turns them into the
//!   CloudWatch metrics each alarm of `infra/template.yaml` reads, and evaluates the alarm.
//!
//! Each alert is tried four ways: the drill (its cause, then the runbook's action),
//! healthy traffic, just on the quiet side of the threshold, and just past it.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use serde_json::{json, Value};

use recs_serve::api::Endpoint;
use recs_serve::fault::{self, Faults};
use recs_serve::lambda::respond_with_metrics;
use recs_serve::{Config, Metrics, Service};
use recs_telemetry::emf;

/// The alerts with a drill: the runbook's eight and the two burn-rate alerts.
pub const ALERTS: [&str; 10] = [
    "HighLatencyP95",
    "HighLatencyP99",
    "HighErrorRate",
    "CriticalErrorRate",
    "ServiceDown",
    "LowAvailability",
    "ModelLoadFailure",
    "HighDataDrift",
    "AvailabilityBurnRatePage",
    "AvailabilityBurnRateTicket",
];

/// Which build a drill runs on.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Side {
    /// Both, local first.
    Both,
    /// `recs serve` + Prometheus.
    Local,
    /// The Lambda handlers in-process + the CloudWatch evaluator.
    Lambda,
}

/// `recs drill` arguments.
#[derive(clap::Args)]
pub struct DrillArgs {
    /// An alert (HighErrorRate, ServiceDown, ...) or `all`.
    pub alert: String,
    /// Which build to drill.
    #[arg(long, value_enum, default_value_t = Side::Both)]
    pub side: Side,
    /// The repository root (infra/, events/); default: the current folder.
    #[arg(long, default_value = ".")]
    pub repo: PathBuf,
    /// Local drills run at once (each with its own ports).
    #[arg(long, default_value_t = 2)]
    pub jobs: usize,
}

/// Runs the drills; fails when one does.
pub async fn run(args: DrillArgs, registry: String) -> Result<()> {
    if !args.repo.join("infra/slo.yaml").is_file() {
        anyhow::bail!(
            "{} is not the repository root (no infra/slo.yaml): run recs drill from it, or pass --repo",
            args.repo.display()
        );
    }
    let alerts: Vec<&str> = if args.alert == "all" {
        ALERTS.to_vec()
    } else if let Some(a) = ALERTS.iter().find(|a| **a == args.alert) {
        vec![*a]
    } else {
        bail!(
            "no drill for {:?}; one of: all, {}",
            args.alert,
            ALERTS.join(", ")
        );
    };
    let registry = std::fs::canonicalize(&registry)
        .with_context(|| format!("registry {registry} (a local folder is needed)"))?;
    let mut failed = Vec::new();
    // The local drills run in a child process (mostly waiting on Prometheus windows)
    // while the Lambda side runs here.
    let mut local = None;
    if args.side != Side::Lambda {
        let child = Command::new("python3")
            .arg(args.repo.join("infra/tests/drill_prometheus.py"))
            .arg("--recs")
            .arg(std::env::current_exe()?)
            .arg("--registry")
            .arg(&registry)
            .arg("--jobs")
            .arg(args.jobs.to_string())
            .args(&alerts)
            .spawn()
            .context("python3 runs infra/tests/drill_prometheus.py")?;
        local = Some(child);
    }
    if args.side != Side::Local {
        match lambda_side(&args.repo, &registry, &alerts).await {
            Ok(true) => {}
            Ok(false) => failed.push("lambda"),
            Err(e) => {
                eprintln!("drill: the Lambda side could not run: {e:#}");
                failed.push("lambda");
            }
        }
    }
    if let Some(mut child) = local {
        if !child.wait()?.success() {
            failed.push("local");
        }
    }
    if !failed.is_empty() {
        bail!("drill failed on: {}", failed.join(", "));
    }
    Ok(())
}

// ------------------------------------------------------------------ the Lambda side

/// A scenario's EMF lines (re-timed), canary points, and the states expected at times.
#[derive(Default)]
struct Scenario {
    lines: Vec<String>,
    canary: Vec<(u64, f64)>,
    /// (offset from the scenario start, ms; expected state)
    expect: Vec<(u64, &'static str)>,
}

const MIN: u64 = 60_000;
const START: u64 = 1_767_225_600_000; // 2026-01-01T00:00:00Z: the drills' synthetic clock

impl Scenario {
    /// Adds `lines` spread evenly over [from, to) ms from the start.
    fn add(&mut self, lines: Vec<String>, from: u64, to: u64) -> Result<()> {
        let n = lines.len().max(1) as u64;
        for (i, l) in lines.into_iter().enumerate() {
            let mut v: Value = serde_json::from_str(&l)?;
            v["_aws"]["Timestamp"] = json!(START + from + (to - from) * i as u64 / n);
            self.lines.push(v.to_string());
        }
        Ok(())
    }
}

struct Drill {
    repo: PathBuf,
    source: PathBuf,
    scratch: PathBuf,
}

fn copy_dir(from: &Path, to: &Path) -> Result<()> {
    std::fs::create_dir_all(to)?;
    for e in std::fs::read_dir(from)? {
        let e = e?;
        let name = e.file_name();
        if name == "active.json" || name == "drift" {
            continue;
        }
        if e.file_type()?.is_dir() {
            copy_dir(&e.path(), &to.join(&name))?;
        } else {
            std::fs::copy(e.path(), to.join(&name))?;
        }
    }
    Ok(())
}

fn get(uri: &str) -> lambda_http::Request {
    http::Request::builder()
        .uri(uri)
        .body(lambda_http::Body::Empty)
        .expect("a static URI is valid")
}

impl Drill {
    /// A fresh scratch registry serving v0.1 (active.json written by a switch).
    async fn service(&self, name: &str) -> Result<(Arc<Service>, PathBuf)> {
        let dir = self.scratch.join(name);
        let _ = std::fs::remove_dir_all(&dir);
        copy_dir(&self.source, &dir)?;
        let config = Config {
            registry: dir.display().to_string(),
            // Polls only when the drill calls refresh (a Lambda polls on requests).
            poll: Duration::from_secs(3600),
            ..Config::default()
        };
        let svc = Arc::new(Service::start_with(config, Metrics::with_emf_outbox()).await);
        svc.switch("v0.1")
            .await
            .map_err(|e| anyhow::anyhow!("switch v0.1: {e}"))?;
        Ok((svc, dir))
    }

    /// `n` GET /recommend invocations (`concurrent` at a time), their EMF lines.
    async fn traffic(svc: &Arc<Service>, n: usize, concurrent: usize) -> Vec<String> {
        let mut lines = Vec::new();
        let mut sent = 0;
        while sent < n {
            let mut set = tokio::task::JoinSet::new();
            for i in sent..(sent + concurrent).min(n) {
                let svc = svc.clone();
                set.spawn(async move {
                    // One in ten a known user (the model's full path), the others
                    // unknown (the popularity fallback, a 200 like any other answer):
                    // thousands of requests stay quick in a debug build.
                    let user = if i % 10 == 0 {
                        1 + i % 500
                    } else {
                        1_000_000 + i
                    };
                    let uri = format!("/recommend/{user}?k=10");
                    respond_with_metrics(&svc, &[Endpoint::Recommend], get(&uri), false)
                        .await
                        .1
                });
            }
            sent = (sent + concurrent).min(n);
            while let Some(out) = set.join_next().await {
                lines.extend(out.unwrap_or_default());
            }
        }
        lines
    }

    async fn admin(svc: &Arc<Service>, uri: &str) -> Result<Vec<String>> {
        let (resp, lines) = respond_with_metrics(svc, &Endpoint::ADMIN, get(uri), false).await;
        if resp.status() != 200 {
            bail!("{uri} answered {}", resp.status());
        }
        Ok(lines)
    }

    async fn health(svc: &Arc<Service>) -> (u16, Vec<String>) {
        let (resp, lines) =
            respond_with_metrics(svc, &[Endpoint::Health], get("/healthz"), false).await;
        (resp.status().as_u16(), lines)
    }

    /// The alarm's scenarios: name -> scenario.
    async fn scenarios(&self, alert: &str, slo: &Value) -> Result<Vec<(&'static str, Scenario)>> {
        let a = &slo["alerts"][alert];
        let thr = a["threshold"].as_f64();
        let kind = a["kind"].as_str().unwrap_or_default();
        let budget = 1.0 - slo["slo"]["availability"].as_f64().unwrap_or(0.999);
        let mut out = Vec::new();
        match kind {
            "latency" => {
                // 25 requests a minute (>= AlarmMinRequests), 5 at a time: 25 handlers at
                // once would queue on the CPU and add latency of their own.
                let thr = thr.context("threshold")?;
                let ms = |f: f64| (thr * f * 1000.0) as u64;
                for (name, delay, expect) in [
                    ("healthy", 0, "OK"),
                    ("below", ms(0.8), "OK"),
                    ("above", ms(1.2), "ALARM"),
                ] {
                    let (svc, _) = self.service(alert).await?;
                    fault::install(Faults {
                        delay_ms: delay,
                        ..Faults::default()
                    });
                    let mut sc = Scenario::default();
                    for m in 0..3 {
                        sc.add(Self::traffic(&svc, 25, 5).await, m * MIN, (m + 1) * MIN)?;
                    }
                    sc.expect = vec![(3 * MIN, expect)];
                    out.push((name, sc));
                }
                // The drill: v0.2 switched in answers 2x the threshold late; rollback.
                let (svc, _) = self.service(alert).await?;
                fault::install(Faults {
                    version: Some("v0.2".into()),
                    delay_ms: ms(2.0),
                    ..Faults::default()
                });
                let mut sc = Scenario::default();
                sc.add(Self::traffic(&svc, 25, 5).await, 0, MIN)?;
                sc.add(Self::admin(&svc, "/switch?model=v0.2").await?, MIN, MIN + 1)?;
                for m in 1..3 {
                    sc.add(Self::traffic(&svc, 25, 5).await, m * MIN, (m + 1) * MIN)?;
                }
                sc.add(
                    Self::admin(&svc, "/switch?model=v0.1").await?,
                    3 * MIN,
                    3 * MIN + 1,
                )?;
                for m in 3..6 {
                    sc.add(Self::traffic(&svc, 25, 5).await, m * MIN, (m + 1) * MIN)?;
                }
                sc.expect = vec![(MIN, "OK"), (3 * MIN, "ALARM"), (6 * MIN, "OK")];
                out.push(("drill", sc));
            }
            "error_ratio" | "availability" | "burn_rate" => {
                // The error ratio the alarm turns on: 1 - availability target for
                // availability, the smallest factor x budget for a burn rate.
                let ratio = match kind {
                    "availability" => 1.0 - thr.context("threshold")?,
                    "burn_rate" => {
                        let f = a["windows"]
                            .as_array()
                            .context("windows")?
                            .iter()
                            .filter_map(|w| w["factor"].as_f64())
                            .fold(f64::INFINITY, f64::min);
                        f * budget
                    }
                    _ => thr.context("threshold")?,
                };
                // Enough requests that 20% of the threshold is >= 1 error, so 0.8x and
                // 1.2x the ratio are different error counts.
                let n = ((5.0 / ratio).ceil() as usize).max(500);
                for (name, r, expect) in [
                    ("healthy", 0.0, "OK"),
                    ("below", ratio * 0.8, "OK"),
                    ("above", ratio * 1.2, "ALARM"),
                ] {
                    let (svc, _) = self.service(alert).await?;
                    fault::install(Faults {
                        error_ratio: r,
                        ..Faults::default()
                    });
                    let mut sc = Scenario::default();
                    sc.add(Self::traffic(&svc, n, 50).await, 0, 5 * MIN)?;
                    sc.expect = vec![(5 * MIN, expect)];
                    out.push((name, sc));
                }
                // The drill: v0.2 switched in answers 5x the ratio as 5xx for 5 minutes;
                // rollback; healthy traffic 7 h later (past every short window).
                let (svc, _) = self.service(alert).await?;
                fault::install(Faults {
                    version: Some("v0.2".into()),
                    error_ratio: (ratio * 5.0).min(1.0),
                    ..Faults::default()
                });
                let mut sc = Scenario::default();
                sc.add(Self::admin(&svc, "/switch?model=v0.2").await?, 0, 1)?;
                sc.add(Self::traffic(&svc, n, 50).await, 1, 5 * MIN)?;
                sc.add(
                    Self::admin(&svc, "/switch?model=v0.1").await?,
                    5 * MIN,
                    5 * MIN + 1,
                )?;
                let later = 7 * 60 * MIN;
                sc.add(Self::traffic(&svc, n, 50).await, later, later + 5 * MIN)?;
                sc.expect = vec![(5 * MIN, "ALARM"), (later + 5 * MIN, "OK")];
                out.push(("drill", sc));
            }
            "error_count" => {
                let thr = thr.context("threshold")? as usize;
                for (name, failures, expect) in [
                    ("healthy", 0, "OK"),
                    ("below", thr, "OK"),
                    ("above", thr + 1, "ALARM"),
                    ("drill", 3 * thr, "ALARM"),
                ] {
                    let (svc, dir) = self.service(alert).await?;
                    let mut sc = Scenario::default();
                    if failures > 0 {
                        corrupt_and_activate(&dir, "v0.2")?;
                    }
                    // Every instance polls active.json: each poll of a corrupt active
                    // version is one failed load (count healthy polls too).
                    for _ in 0..failures.max(thr) {
                        if failures > 0 || name == "healthy" {
                            svc.refresh().await;
                        }
                    }
                    let mut lines = Self::health(&svc).await.1;
                    if failures < thr {
                        lines.extend(Self::traffic(&svc, 20, 20).await);
                    }
                    sc.add(lines, 0, 4 * MIN)?;
                    sc.expect = vec![(5 * MIN, expect)];
                    if name == "drill" {
                        // The runbook's action: switch back from a shell (`recs switch v0.1`).
                        svc.switch("v0.1")
                            .await
                            .map_err(|e| anyhow::anyhow!("rollback: {e}"))?;
                        for _ in 0..thr {
                            svc.refresh().await;
                        }
                        sc.add(Self::health(&svc).await.1, 6 * MIN, 10 * MIN)?;
                        sc.expect.push((11 * MIN, "OK"));
                    }
                    out.push((name, sc));
                }
            }
            "drift_psi" => {
                let thr = thr.context("threshold")?;
                let features = recs_drift::FEATURES;
                for (name, psi, expect) in
                    [("below", thr * 0.95, "OK"), ("above", thr * 1.05, "ALARM")]
                {
                    let mut sc = Scenario::default();
                    let lines = features
                        .iter()
                        .enumerate()
                        .map(|(i, f)| {
                            emf::drift_line(f, if i == 0 { psi } else { 0.01 }, "v0.1", 1000)
                        })
                        .collect();
                    sc.add(lines, 0, 1)?;
                    sc.expect = vec![(MIN, expect)];
                    out.push((name, sc));
                }
                // healthy and the drill: the drift job over generated events (PSI as
                // `recs drift` computes it), shifted for the drill, then recovered.
                let (_, dir) = self.service(alert).await?;
                self.drift_baseline(&dir)?;
                let mut healthy = Scenario::default();
                healthy.add(self.drift_lines(&dir, false)?, 0, 1)?;
                healthy.expect = vec![(MIN, "OK")];
                out.push(("healthy", healthy));
                let mut sc = Scenario::default();
                sc.add(self.drift_lines(&dir, false)?, 0, 1)?;
                sc.add(self.drift_lines(&dir, true)?, 60 * MIN, 60 * MIN + 1)?;
                sc.add(self.drift_lines(&dir, false)?, 180 * MIN, 180 * MIN + 1)?;
                sc.expect = vec![(MIN, "OK"), (61 * MIN, "ALARM"), (181 * MIN, "OK")];
                out.push(("drill", sc));
            }
            "service_down" => {
                // The canary: GET /healthz once a minute; 200 -> SuccessPercent 100, any
                // other status 0, no answer (stopped) -> no datapoint.
                let (svc, dir) = self.service(alert).await?;
                let canary = |sc: &mut Scenario, minute: u64, status: Option<u16>| {
                    if let Some(s) = status {
                        sc.canary.push((
                            START + minute * MIN + 1000,
                            if s == 200 { 100.0 } else { 0.0 },
                        ));
                    }
                };
                let (ok, _) = Self::health(&svc).await;
                let mut healthy = Scenario::default();
                for m in 0..3 {
                    canary(&mut healthy, m, Some(ok));
                }
                healthy.expect = vec![(3 * MIN, "OK")];
                let mut below = Scenario::default();
                for (m, s) in [(0, Some(ok)), (1, None), (2, Some(ok))] {
                    canary(&mut below, m, s);
                }
                below.expect = vec![(3 * MIN, "OK")];
                let mut above = Scenario::default();
                for (m, s) in [(0, Some(ok)), (1, None), (2, None)] {
                    canary(&mut above, m, s);
                }
                above.expect = vec![(3 * MIN, "ALARM")];
                // The drill: the function loses its model (an instance started over a
                // registry whose latest.txt names no version: /healthz 503), then is
                // "restarted" (a new execution environment over the fixed registry).
                std::fs::remove_file(dir.join("active.json"))?;
                std::fs::write(dir.join("latest.txt"), "v9.9")?;
                let broken = Arc::new(
                    Service::start_with(svc.config.clone(), Metrics::with_emf_outbox()).await,
                );
                let (bad, _) = Self::health(&broken).await;
                std::fs::write(dir.join("latest.txt"), "v0.1")?;
                let restarted = Arc::new(
                    Service::start_with(svc.config.clone(), Metrics::with_emf_outbox()).await,
                );
                let (good, _) = Self::health(&restarted).await;
                let mut drill = Scenario::default();
                for (m, s) in [(0, ok), (1, bad), (2, bad), (3, good), (4, good)] {
                    canary(&mut drill, m, Some(s));
                }
                drill.expect = vec![(MIN, "OK"), (3 * MIN, "ALARM"), (5 * MIN, "OK")];
                out.extend([
                    ("healthy", healthy),
                    ("below", below),
                    ("above", above),
                    ("drill", drill),
                ]);
            }
            other => bail!("alert {alert}: no Lambda drill for kind {other}"),
        }
        fault::install(Faults::default());
        Ok(out)
    }

    /// v0.1's drift baseline from generated training ratings (the demo registry's
    /// baselines come from `recs gen-data` ratings, whose rating distribution the
    /// generated events do not follow), so unshifted events are the healthy case.
    fn drift_baseline(&self, registry: &Path) -> Result<()> {
        let exe = std::env::current_exe()?;
        let csv = registry.join("baseline-ratings.csv");
        for args in [
            vec![
                "drift",
                "gen-events",
                "--seed",
                "11",
                "--ratings-csv",
                &*csv.to_string_lossy(),
            ],
            vec![
                "drift",
                "baseline",
                "--version",
                "v0.1",
                "--ratings",
                &*csv.to_string_lossy(),
            ],
        ] {
            let out = Command::new(&exe)
                .arg("--registry")
                .arg(registry)
                .args(&args)
                .output()?;
            if !out.status.success() {
                bail!(
                    "recs {}: {}",
                    args.join(" "),
                    String::from_utf8_lossy(&out.stderr)
                );
            }
        }
        Ok(())
    }

    /// `recs drift` (this binary) over generated events, as the drift function's EMF lines.
    fn drift_lines(&self, registry: &Path, shift: bool) -> Result<Vec<String>> {
        let exe = std::env::current_exe()?;
        let events = registry.join(if shift { "events-shifted" } else { "events" });
        let _ = std::fs::remove_dir_all(&events);
        let mut gen = Command::new(&exe);
        gen.arg("--registry")
            .arg(registry)
            .args(["drift", "gen-events", "--out"])
            .arg(&events);
        if shift {
            gen.arg("--shift");
        }
        let out = gen.output()?;
        if !out.status.success() {
            bail!(
                "recs drift gen-events: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        let out = Command::new(&exe)
            .arg("--registry")
            .arg(registry)
            .args(["drift", "--json", "--no-write", "--events"])
            .arg(&events)
            .output()?;
        if !out.status.success() {
            bail!("recs drift: {}", String::from_utf8_lossy(&out.stderr));
        }
        let summary: Value = serde_json::from_slice(&out.stdout)?;
        let version = summary["version"].as_str().unwrap_or_default();
        let events_n = summary["events"].as_u64().unwrap_or_default();
        Ok(summary["features"]
            .as_object()
            .context("drift summary has features")?
            .iter()
            .filter_map(|(f, psi)| Some(emf::drift_line(f, psi.as_f64()?, version, events_n)))
            .collect())
    }
}

/// The active version corrupted: its item factors truncated, then active.json pointed
/// at it by hand (`recs switch` verifies and would refuse).
fn corrupt_and_activate(registry: &Path, version: &str) -> Result<()> {
    let f = registry.join(version).join("als/item_factors.npy");
    let len = std::fs::metadata(&f)?.len();
    std::fs::OpenOptions::new()
        .write(true)
        .open(&f)?
        .set_len(len.saturating_sub(4))?;
    let path = registry.join("active.json");
    let mut active: Value = serde_json::from_slice(&std::fs::read(&path)?)?;
    active["previous_version"] = active["active_version"].clone();
    active["active_version"] = version.into();
    std::fs::write(&path, active.to_string())?;
    Ok(())
}

/// Runs the Lambda side of each drill; prints one row per alert; true when all pass.
async fn lambda_side(repo: &Path, registry: &Path, alerts: &[&str]) -> Result<bool> {
    if !fault::enabled() {
        bail!(
            "the Lambda drills inject faults in this process: run `{}=1 recs drill ...` (make drill does)",
            fault::ENABLE_VAR
        );
    }
    let slo: Value = {
        let out = Command::new("python3")
            .args([
                "-c",
                "import json, sys, yaml; print(json.dumps(yaml.safe_load(open(sys.argv[1]))))",
            ])
            .arg(repo.join("infra/slo.yaml"))
            .output()
            .context("python3 with PyYAML reads infra/slo.yaml")?;
        if !out.status.success() {
            bail!(
                "reading infra/slo.yaml: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        serde_json::from_slice(&out.stdout)?
    };
    let scratch = std::env::temp_dir().join(format!("recs-drill-lambda-{}", std::process::id()));
    let drill = Drill {
        repo: repo.to_path_buf(),
        source: registry.to_path_buf(),
        scratch: scratch.clone(),
    };
    let mut all_ok = true;
    println!(
        "{:28} {:6} {:8} {:6} {:6}  (CloudWatch evaluation of the Lambda handlers' EMF)",
        "alert", "drill", "healthy", "below", "above"
    );
    for alert in alerts {
        let started = std::time::Instant::now();
        let scenarios = drill.scenarios(alert, &slo).await?;
        let spec = json!({
            "alarm": alert,
            "scenarios": scenarios.iter().map(|(name, sc)| (name.to_string(), json!({
                "start_ms": START,
                "lines": sc.lines,
                "canary": sc.canary,
                "at_ms": sc.expect.iter().map(|(t, _)| t).collect::<Vec<_>>(),
            }))).collect::<serde_json::Map<_, _>>(),
        });
        let file = scratch.join(format!("{alert}.json"));
        std::fs::write(&file, spec.to_string())?;
        let out = Command::new("python3")
            .arg(drill.repo.join("infra/tests/cw_eval.py"))
            .arg(&file)
            .arg("--template")
            .arg(drill.repo.join("infra/template.yaml"))
            .output()
            .context("python3 runs infra/tests/cw_eval.py")?;
        if !out.status.success() {
            bail!(
                "cw_eval.py {alert}: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        let got: Value = serde_json::from_slice(&out.stdout)?;
        let mut marks = std::collections::BTreeMap::new();
        for (name, sc) in &scenarios {
            let states: Vec<&str> = got["states"][*name]
                .as_array()
                .map(|v| v.iter().filter_map(Value::as_str).collect())
                .unwrap_or_default();
            let want: Vec<&str> = sc.expect.iter().map(|(_, s)| *s).collect();
            let ok = states == want;
            all_ok &= ok;
            if !ok {
                tracing::error!(alert, scenario = name, ?want, got = ?states, "CloudWatch evaluation differs");
                eprintln!(
                    "drill: {alert} {name}: expected {want:?} at {:?} ms, evaluated {states:?}",
                    sc.expect.iter().map(|(t, _)| t).collect::<Vec<_>>()
                );
            }
            marks.insert(*name, if ok { "yes" } else { "NO" });
        }
        println!(
            "{:28} {:6} {:8} {:6} {:6}  {:.1}s {}",
            alert,
            marks.get("drill").unwrap_or(&"-"),
            marks.get("healthy").unwrap_or(&"-"),
            marks.get("below").unwrap_or(&"-"),
            marks.get("above").unwrap_or(&"-"),
            started.elapsed().as_secs_f64(),
            got["logical_id"].as_str().unwrap_or_default(),
        );
    }
    let _ = std::fs::remove_dir_all(&scratch);
    Ok(all_ok)
}
