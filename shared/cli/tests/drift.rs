//! The drift job end to end: a baseline built from synthetic training events, windows
//! of events written as partitioned JSON lines (a folder, and S3 through moto), PSI per
//! feature, the planted shift, an empty window, malformed lines, the CLI and EMF.

mod common;

use recs_core::Interaction;
use std::process::Command;

use recs_core::Store;
use recs_core::{LoadedModel, Registry};
use recs_drift::{
    self as drift, compute, read_window, save_baseline, synth, Baseline, ModelIndex, Options,
    Summary, Window, FEATURES,
};
use recs_train::gen_data::{generate, GenConfig};

/// 2026-11-28T00:00:00Z: the end of the window.
const UNTIL: i64 = 1_795_824_000_000;
const DAY: i64 = 86_400_000;

fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Runtime::new().unwrap()
}

/// A folder registry with v0.1 (gen-data's planted model: 600 users, 400 items).
async fn registry() -> (tempfile::TempDir, Registry, LoadedModel) {
    let dir = tempfile::tempdir().unwrap();
    let registry = Registry::open(dir.path().join("registry").to_str().unwrap()).unwrap();
    let cfg = GenConfig {
        factors: 4,
        ..GenConfig::default()
    };
    let model = registry
        .publish("v0.1", &generate(&cfg).planted_artifacts())
        .await
        .unwrap();
    (dir, registry, model)
}

/// Training-period events (14 days before the window's day) and the window's events,
/// from the same process with different seeds.
fn training_and_window(model: &LoadedModel) -> (Vec<drift::Event>, Vec<drift::Event>) {
    let train = synth::events(
        &synth::SynthConfig::from_model(model.model.als().unwrap(), 1),
        UNTIL - 15 * DAY,
        UNTIL - DAY,
    );
    let window = synth::events(
        &synth::SynthConfig::from_model(model.model.als().unwrap(), 2),
        UNTIL - DAY,
        UNTIL,
    );
    (train, window)
}

async fn with_baseline(registry: &Registry, model: &LoadedModel, train: &[drift::Event]) {
    let rows: Vec<Interaction> = train.to_vec();
    let baseline = Baseline::compute(&rows, model.model.als().unwrap());
    save_baseline(registry, "v0.1", &baseline).await.unwrap();
}

fn opts() -> Options {
    Options {
        window_secs: 86_400,
        until_ms: UNTIL,
        min_count: drift::DEFAULT_MIN_COUNT,
        version: None,
        ratings_only: false,
    }
}

fn psi(s: &Summary, f: &str) -> f64 {
    *s.features
        .get(f)
        .unwrap_or_else(|| panic!("{f} not reported: {:?}", s.skipped))
}

#[test]
fn a_planted_shift_is_flagged_and_the_other_features_stay_quiet() {
    rt().block_on(async {
        let (dir, registry, model) = registry().await;
        let (train, window) = training_and_window(&model);
        with_baseline(&registry, &model, &train).await;

        // The same process: every feature well under 0.1, no action.
        let calm = Store::open(dir.path().join("calm").to_str().unwrap()).unwrap();
        synth::write_events(&calm, &window, 400).await.unwrap();
        let s = drift::run(&registry, &calm, &opts()).await.unwrap();
        assert_eq!(s.version, "v0.1");
        assert_eq!(s.events as usize, window.len());
        assert_eq!(s.features.len(), 8, "{:?}", s.skipped);
        for f in FEATURES {
            assert!(psi(&s, f) < 0.1, "{f}: {}\n{}", psi(&s, f), s.table());
        }
        assert_eq!(s.action, "none");

        // Ratings skewed low and 30 % of events on items the model never saw.
        let mut shifted = window.clone();
        synth::shift(&mut shifted, synth::Shift::planted(10_000), 3);
        let hot = Store::open(dir.path().join("shifted").to_str().unwrap()).unwrap();
        synth::write_events(&hot, &shifted, 400).await.unwrap();
        let s = drift::run(&registry, &hot, &opts()).await.unwrap();
        for f in ["rating", "unknown_item_share", "item"] {
            assert!(psi(&s, f) > 0.2, "{f}: {}\n{}", psi(&s, f), s.table());
        }
        for f in [
            "events_per_user",
            "item_popularity",
            "unknown_user_share",
            "hour_of_day",
            "user",
        ] {
            assert!(psi(&s, f) < 0.1, "{f}: {}\n{}", psi(&s, f), s.table());
        }
        assert!(s.max_psi.unwrap() > 0.5);
        assert_eq!(s.action, "retrain now");

        // Every feature's EMF line satisfies the contract and the EMF limits.
        for (feature, value) in s.psi() {
            let line = recs_telemetry::emf::drift_line(&feature, value, &s.version, s.events);
            let doc = recs_telemetry::emf::check_document(&line)
                .unwrap_or_else(|e| panic!("{e}: {line}"));
            assert_eq!(doc["data_drift_psi"].as_f64(), Some(value));
        }
    });
}

#[test]
fn a_window_against_itself_is_zero() {
    rt().block_on(async {
        let (_dir, _registry, model) = registry().await;
        let (_, window) = training_and_window(&model);
        let rows: Vec<Interaction> = window.to_vec();
        let index = ModelIndex::new(model.model.als().unwrap());
        let baseline = Baseline::compute_indexed(&rows, &index, &[]);
        let s = compute(
            &baseline,
            &index,
            &window,
            Window::ending(UNTIL, 86_400),
            drift::DEFAULT_MIN_COUNT,
        );
        // unknown_user_share: every user is known, one bin holds everything.
        assert_eq!(s.features.len(), 8, "{:?}", s.skipped);
        for (f, p) in &s.features {
            assert!(*p < 1e-9, "{f}: {p}");
        }
        assert_eq!(s.action, "none");
    });
}

#[test]
fn an_empty_window_reports_nothing_and_says_so() {
    let (dir, reg_path, events_path) = rt().block_on(async {
        let (dir, registry, model) = registry().await;
        let (train, window) = training_and_window(&model);
        with_baseline(&registry, &model, &train).await;
        // Events exist, but a week before the window.
        let old: Vec<_> = window
            .iter()
            .map(|e| drift::Event {
                ts_ms: e.ts_ms.map(|t| t - 7 * DAY),
                ..*e
            })
            .collect();
        let store = Store::open(dir.path().join("events").to_str().unwrap()).unwrap();
        synth::write_events(&store, &old, 1000).await.unwrap();
        let s = drift::run(&registry, &store, &opts()).await.unwrap();
        assert_eq!(s.events, 0);
        assert!(s.features.is_empty());
        assert_eq!((s.max_psi, s.action.as_str()), (None, "none"));
        assert!(s.note.as_deref().unwrap().contains("no events"));
        // A folder with nothing at all is the same.
        let nothing = Store::open(dir.path().join("nothing").to_str().unwrap()).unwrap();
        std::fs::create_dir_all(dir.path().join("nothing")).unwrap();
        assert_eq!(
            drift::run(&registry, &nothing, &opts())
                .await
                .unwrap()
                .events,
            0
        );
        let reg = registry.location();
        (dir, reg, store.location())
    });
    // The CLI prints it and logs a clear warning; nothing exits non-zero.
    let out = Command::new(common::RECS)
        .args(["drift", "--events", &events_path, "--registry", &reg_path])
        .args(["--until", "2026-11-28T00:00:00Z"])
        .env("RUST_LOG", "info")
        .output()
        .unwrap();
    let (stdout, stderr) = (
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
    );
    assert!(out.status.success(), "{stderr}");
    assert!(
        stdout.contains("no PSI: no events in the window"),
        "{stdout}"
    );
    assert!(
        stderr.contains("no events in the window, so no PSI is reported"),
        "{stderr}"
    );
    // Nothing measured, nothing written: the last result is not replaced by an empty one.
    assert!(stderr.contains("not written"), "{stderr}");
    assert!(
        !std::path::Path::new(&reg_path)
            .join("drift/latest.json")
            .exists(),
        "an empty window wrote drift/latest.json"
    );
    drop(dir);
}

#[test]
fn malformed_lines_are_counted_and_skipped() {
    rt().block_on(async {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path().to_str().unwrap()).unwrap();
        let good = r#"{"user_id":1,"movie_id":2,"rating":4,"ts":1795820000000}"#;
        let text = [
            good,
            "garbage",
            r#"{"user_id":1,"movie_id":"x","ts":1795820000000}"#,
            r#"{"user_id":1,"movie_id":2,"rating":4}"#,
            r#"{"ts":1795820000000,"user_id":9}"#,
            r#"{"user_id":3,"movie_id":4,"timestamp":"2026-11-27T20:00:00Z"}"#,
            "",
        ]
        .join("\n");
        store
            .put("rate/2026-11-27/part-0001.jsonl", text.into_bytes())
            .await
            .unwrap();
        store
            .put(
                "rate/dt=2026-11-27/a.csv",
                b"user_id,movie_id,rating,ts\n5,6,3.5,1795820000\n5,6,,\n".to_vec(),
            )
            .await
            .unwrap();
        store
            .put("rate/2026-11-27/b.parquet", b"PAR1".to_vec())
            .await
            .unwrap();
        // Outside the listed days: never read.
        store
            .put("rate/2026-10-01/part-0001.jsonl", good.as_bytes().to_vec())
            .await
            .unwrap();
        let (events, stats) = read_window(&store, Window::ending(UNTIL, 86_400))
            .await
            .unwrap();
        assert_eq!(events.len(), 3, "{events:?}");
        assert_eq!(
            (
                stats.files,
                stats.lines,
                stats.malformed,
                stats.ignored,
                stats.unsupported_files
            ),
            (2, 8, 4, 1, 1),
            "{stats:?}"
        );
        assert!(stats
            .examples
            .iter()
            .any(|e| e.contains("part-0001.jsonl:2")));
    });
}

#[test]
fn the_cli_builds_a_baseline_and_stores_the_summary() {
    let (dir, reg, calm, hot, train_csv) = rt().block_on(async {
        let (dir, registry, model) = registry().await;
        let (_, window) = training_and_window(&model);
        // Training files hold ratings only: the same event rate, every event rated.
        let mut rated = synth::SynthConfig::from_model(model.model.als().unwrap(), 1);
        rated.watch_share = 0.0;
        let train = synth::events(&rated, UNTIL - 15 * DAY, UNTIL - DAY);
        let train_csv = dir.path().join("train.csv");
        synth::write_ratings_csv(&train, &train_csv).unwrap();
        let calm = dir.path().join("calm");
        synth::write_events(&Store::open(calm.to_str().unwrap()).unwrap(), &window, 500)
            .await
            .unwrap();
        let mut shifted = window.clone();
        synth::shift(&mut shifted, synth::Shift::planted(10_000), 3);
        let hot = dir.path().join("hot");
        synth::write_events(&Store::open(hot.to_str().unwrap()).unwrap(), &shifted, 500)
            .await
            .unwrap();
        (dir, registry.location(), calm, hot, train_csv)
    });
    let recs = |args: &[&str]| {
        let out = Command::new(common::RECS)
            .args(args)
            .env("RUST_LOG", "warn")
            .output()
            .unwrap();
        let stdout = String::from_utf8_lossy(&out.stdout).to_string();
        assert!(
            out.status.success(),
            "{args:?}: {stdout}{}",
            String::from_utf8_lossy(&out.stderr)
        );
        stdout
    };
    let out = recs(&[
        "drift",
        "baseline",
        "--ratings",
        train_csv.to_str().unwrap(),
        "--registry",
        &reg,
    ]);
    assert!(out.contains("v0.1/drift_baseline.json"), "{out}");
    // The model's checksum is untouched: the version still verifies.
    recs(&["verify", "--registry", &reg, "v0.1"]);

    let run = |events: &std::path::Path| -> Summary {
        let out = recs(&[
            "drift",
            "--events",
            events.to_str().unwrap(),
            "--registry",
            &reg,
            "--window",
            "24h",
            "--until",
            "2026-11-28T00:00:00Z",
            "--json",
        ]);
        serde_json::from_str(&out).unwrap_or_else(|e| panic!("{e}: {out}"))
    };
    let calm = run(&calm);
    assert_eq!(calm.action, "none", "{}", calm.table());
    let hot = run(&hot);
    assert!(hot.max_psi.unwrap() > 0.5, "{}", hot.table());
    assert_eq!(hot.window, "24h");
    let json: serde_json::Value = serde_json::to_value(&hot).unwrap();
    for key in [
        "version", "window", "events", "features", "max_psi", "action",
    ] {
        assert!(json.get(key).is_some(), "{key} missing");
    }
    // The last run is what serve will expose.
    let latest = rt()
        .block_on(drift::read_latest(&Store::open(&reg).unwrap()))
        .unwrap();
    assert_eq!(latest.features, hot.features);
    // ... and does: /metrics carries data_drift_psi per feature after a poll.
    let text = rt().block_on(async {
        let svc = recs_serve::Service::start(recs_serve::Config {
            registry: reg.clone(),
            ..Default::default()
        })
        .await;
        svc.refresh_drift().await;
        svc.metrics.render_prometheus()
    });
    let rating = hot.features["rating"];
    assert!(
        text.contains(&format!(
            "data_drift_psi{{feature=\"rating\",version=\"{}\"}} {rating}",
            hot.version
        )),
        "{text}"
    );
    drop(dir);
}

#[test]
fn events_on_s3_read_the_same_as_from_a_folder() {
    common::shared_moto();
    rt().block_on(async {
        common::bucket("drift-events").await;
        let (dir, registry, model) = registry().await;
        let (train, window) = training_and_window(&model);
        with_baseline(&registry, &model, &train).await;
        let folder = Store::open(dir.path().join("events").to_str().unwrap()).unwrap();
        let s3 = Store::open("s3://drift-events/events").unwrap();
        for store in [&folder, &s3] {
            synth::write_events(store, &window, 300).await.unwrap();
            // A stray line and another day's file must read the same on both.
            store
                .put("watch/2026-11-27/part-9999.jsonl", b"{oops\n".to_vec())
                .await
                .unwrap();
        }
        let w = Window::ending(UNTIL, 86_400);
        let (a, sa) = read_window(&folder, w).await.unwrap();
        let (b, sb) = read_window(&s3, w).await.unwrap();
        assert_eq!(a, b);
        assert_eq!(sa, sb);
        assert_eq!(sa.malformed, 1);
        let ra = drift::run(&registry, &folder, &opts()).await.unwrap();
        let rb = drift::run(&registry, &s3, &opts()).await.unwrap();
        assert_eq!(ra.features, rb.features);
        // The summary round-trips through the registry store.
        drift::write_latest(registry.store(), &rb).await.unwrap();
        assert_eq!(drift::read_latest(registry.store()).await.unwrap(), rb);
    });
}

/// The documented flow trains on split files (user, movie pairs: no ratings, no
/// times). The baseline must say what it lacks, and `recs train` must say it loudly.
#[test]
fn a_baseline_from_split_files_is_never_silently_partial() {
    let dir = tempfile::tempdir().unwrap();
    let data = generate(&GenConfig {
        users: 200,
        items: 150,
        ..GenConfig::default()
    });
    let pairs: String = data
        .ratings
        .iter()
        .map(|r| format!("{}\t{}\n", r.user, r.item))
        .collect();
    let train = dir.path().join("train.tsv");
    std::fs::write(&train, pairs).unwrap();
    let reg = dir.path().join("registry");
    let out = Command::new(env!("CARGO_BIN_EXE_recs"))
        .args(["train", "--ratings", train.to_str().unwrap(), "--registry"])
        .arg(&reg)
        .args(["--version", "v0.1", "--iterations", "2", "--no-popularity"])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{err}");
    for f in ["rating", "hour_of_day", "reference_spread"] {
        assert!(
            err.contains(&format!("WARNING: v0.1's drift baseline has no {f}")),
            "{f}: {err}"
        );
    }
    let b: serde_json::Value =
        serde_json::from_slice(&std::fs::read(reg.join("v0.1/drift_baseline.json")).unwrap())
            .unwrap();
    for f in ["rating", "hour_of_day", "reference_spread"] {
        assert!(
            b["missing"][f].as_str().is_some_and(|s| !s.is_empty()),
            "{f}: {}",
            b["missing"]
        );
    }
    // What it could baseline, it did.
    assert!(b["features"]["events_per_user"].is_object());
    assert!(b["missing"].get("events_per_user").is_none());
}
