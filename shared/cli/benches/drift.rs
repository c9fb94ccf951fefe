//! Drift job throughput on 1M synthetic events (24 h of 500k users, partitioned JSON
//! lines in a temporary folder: 80 % rate events with `ts` in ms, 20 % watch events
//! with an ISO `timestamp`), next to the time to merely read the same files.
//!
//! `cargo bench -p recs --bench drift` (EVENTS_N overrides the event count). Prints a
//! markdown table: median of RUNS runs per row.

use recs_core::Interaction;
use std::time::{Duration, Instant};

use recs_core::Registry;
use recs_core::Store;
use recs_drift::{self as drift, synth, Baseline, ModelIndex, Window};
use recs_train::gen_data::{generate, GenConfig};

const RUNS: usize = 5;
/// 2026-11-28T00:00:00Z.
const UNTIL: i64 = 1_795_824_000_000;
const DAY: i64 = 86_400_000;

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

fn time<T>(mut f: impl FnMut() -> T) -> (Duration, T) {
    let mut times = Vec::with_capacity(RUNS);
    let mut last = None;
    for _ in 0..RUNS {
        let t = Instant::now();
        let out = f();
        times.push(t.elapsed());
        last = Some(out);
    }
    (median(times), last.expect("RUNS > 0"))
}

fn main() {
    let n_target: usize = std::env::var("EVENTS_N")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1_000_000);
    let rt = tokio::runtime::Runtime::new().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let reg_path = dir.path().join("registry");
    let registry = Registry::open(reg_path.to_str().unwrap()).unwrap();
    let model = rt
        .block_on(registry.publish("v0.1", &generate(&GenConfig::default()).planted_artifacts()))
        .unwrap();

    // Baseline: 14 days of the model's users.
    let train = synth::events(
        &synth::SynthConfig::from_model(model.model.als().unwrap(), 1),
        UNTIL - 15 * DAY,
        UNTIL - DAY,
    );
    let rows: Vec<Interaction> = train.to_vec();
    let baseline = Baseline::compute(&rows, model.model.als().unwrap());
    rt.block_on(drift::save_baseline(&registry, "v0.1", &baseline))
        .unwrap();

    // The window: enough users at 2 events/day for n_target events.
    let mut cfg = synth::SynthConfig::from_model(model.model.als().unwrap(), 2);
    cfg.users = (1..=(n_target / 2) as i64).collect();
    let t = Instant::now();
    let window_events = synth::events(&cfg, UNTIL - DAY, UNTIL);
    let gen = t.elapsed();
    let events_dir = dir.path().join("events");
    let store = Store::open(events_dir.to_str().unwrap()).unwrap();
    let files = rt
        .block_on(synth::write_events(&store, &window_events, 50_000))
        .unwrap();
    let n = window_events.len();
    drop(window_events);
    let bytes: u64 = walk_bytes(&events_dir);
    eprintln!(
        "{n} events in {files} files ({:.1} MB) generated in {:.1} s",
        bytes as f64 / 1e6,
        gen.as_secs_f64()
    );
    let window = Window::ending(UNTIL, 86_400);

    // 1. List and fetch the bytes only.
    let (t_fetch, fetched) = time(|| {
        rt.block_on(async {
            let keys = drift::list_window_files(&store, window).await.unwrap();
            let mut total = 0usize;
            for k in keys {
                total += store.get(&k).await.unwrap().len();
            }
            total
        })
    });
    assert_eq!(fetched as u64, bytes);
    // 2. Read: list, fetch and parse (what the job does before any feature).
    let (t_read, (evs, stats)) = time(|| rt.block_on(drift::read_window(&store, window)).unwrap());
    assert_eq!(evs.len(), n);
    assert_eq!(stats.malformed, 0);
    // 3. Features + PSI on the parsed events.
    let index = ModelIndex::new(model.model.als().unwrap());
    let (t_compute, summary) = time(|| drift::compute(&baseline, &index, &evs, window, 200));
    assert_eq!(summary.events as usize, n);
    drop(evs);
    // 4. The whole job: served version, baseline, model load, read, compute.
    let opts = drift::Options {
        window_secs: 86_400,
        until_ms: UNTIL,
        min_count: 200,
        version: None,
        ratings_only: false,
    };
    let (t_run, s) = time(|| rt.block_on(drift::run(&registry, &store, &opts)).unwrap());
    assert_eq!(s.events as usize, n);

    let rate = |d: Duration| n as f64 / d.as_secs_f64();
    let mbs = |d: Duration| bytes as f64 / 1e6 / d.as_secs_f64();
    println!(
        "\n{n} events, {files} JSON-lines files, {:.1} MB, folder store; median of {RUNS} runs; {} rayon threads\n",
        bytes as f64 / 1e6,
        rayon::current_num_threads()
    );
    println!("| step | time | events/s | MB/s |");
    println!("|---|---|---|---|");
    for (name, d) in [
        ("list + fetch bytes (no parsing)", t_fetch),
        ("read: list + fetch + parse (`read_window`)", t_read),
        ("features + PSI on parsed events (`compute`)", t_compute),
        (
            "whole job (`drift::run`: baseline, model, read, compute)",
            t_run,
        ),
    ] {
        println!(
            "| {name} | {:.0} ms | {:.2} M | {:.0} |",
            d.as_secs_f64() * 1e3,
            rate(d) / 1e6,
            mbs(d)
        );
    }
    println!(
        "\ncompute is {:.0} % of the whole job; max PSI {:.3} ({}), unknown users dominate this synthetic window",
        100.0 * t_compute.as_secs_f64() / t_run.as_secs_f64(),
        s.max_psi.unwrap_or(0.0),
        s.action
    );
}

fn walk_bytes(dir: &std::path::Path) -> u64 {
    let mut total = 0;
    for e in std::fs::read_dir(dir).unwrap() {
        let e = e.unwrap();
        if e.file_type().unwrap().is_dir() {
            total += walk_bytes(&e.path());
        } else {
            total += e.metadata().unwrap().len();
        }
    }
    total
}
