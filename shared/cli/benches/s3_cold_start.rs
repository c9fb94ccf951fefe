//! `make bench` (part 2): cold start and switch latency with the registry on a local
//! S3 server (moto).
//!
//! - Cold start: `recs serve` process spawn -> first 200 from `/recommend/1`, with an
//!   ml-1m-size model (6,040 x 3,706, 64 factors) in S3. Target: under 100 ms.
//! - Switch latency: `GET /switch` on server A -> server B serving the new version,
//!   with `ACTIVE_POLL_SECONDS=1` (bounded by the poll interval by design).

#[path = "../tests/common/mod.rs"]
mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::{aws_env, curl, Moto, Server, RECS};
use recs_core::CsrPattern;
use recs_core::Factors;
use recs_core::{Artifacts, Registry};

/// A model of ml-1m size with deterministic pseudo-random factors.
fn ml1m_size(seed: u64) -> Artifacts {
    sized(6_040, 3_706, 64, 95, seed)
}

/// `users` x `items` with `f` factors and `per_user` seen items per user.
fn sized(users: usize, items: usize, f: usize, per_user: usize, seed: u64) -> Artifacts {
    let mut x = seed;
    let mut next = move || {
        x = x
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        ((x >> 40) as f32 / (1u64 << 24) as f32) - 0.5
    };
    let uf = (0..users * f).map(|_| next()).collect();
    let itf = (0..items * f).map(|_| next()).collect();
    let rows = (0..users)
        .map(|u| {
            (0..per_user)
                .map(|j| ((u * 131 + j * 977) % items) as u32)
                .collect()
        })
        .collect();
    Artifacts {
        user_factors: Factors {
            shape: vec![users, f],
            data: uf,
        },
        item_factors: Factors {
            shape: vec![items, f],
            data: itf,
        },
        users: (1..=users as i64).collect(),
        items: (1..=items as i64).collect(),
        seen: CsrPattern::from_rows(items, rows),
        model_meta: serde_json::json!({"type": "ALS", "factors": f, "note": "benchmark model"}),
        version_fields: serde_json::Map::new(),
        ann: recs_core::ann::AnnBuild::Auto,
    }
}

fn get_status(port: u16, path: &str) -> Option<u16> {
    let mut s = TcpStream::connect(("127.0.0.1", port)).ok()?;
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
    )
    .ok()?;
    let mut buf = Vec::new();
    s.read_to_end(&mut buf).ok()?;
    String::from_utf8_lossy(&buf)
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

/// A `/proc/<pid>/status` field in KiB (VmRSS, VmHWM).
fn status_kib(pid: u32, field: &str) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with(field))
                .and_then(|l| l.split_whitespace().nth(1).and_then(|v| v.parse().ok()))
        })
        .unwrap_or(0)
}

/// What the cold starts of one model measured.
struct Cold {
    /// Spawn -> first 200, one per run after the first.
    times: Vec<Duration>,
    /// Largest peak RSS (VmHWM) of the process at its first 200, KiB.
    peak_kib: u64,
    /// Largest RSS (VmRSS) at its first 200, KiB.
    rss_kib: u64,
}

/// `runs` cold starts of `recs serve` over `location`: spawn -> first 200 from
/// `/recommend/1`. The first run only warms the page cache for the binary.
fn cold_starts(location: &str, env: &[(&'static str, String)], runs: usize) -> Cold {
    let mut colds = Vec::new();
    let (mut peak_kib, mut rss_kib) = (0, 0);
    for run in 0..runs {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let start = Instant::now();
        let mut child = Command::new(RECS)
            .args(["serve", "--registry", location, "--port", &port.to_string()])
            .envs(env.iter().map(|(k, v)| (*k, v.as_str())))
            .env("RUST_LOG", "error")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn recs serve");
        loop {
            if get_status(port, "/recommend/1?k=10") == Some(200) {
                break;
            }
            assert!(
                start.elapsed() < Duration::from_secs(30),
                "no 200 within 30 s"
            );
            std::thread::sleep(Duration::from_micros(500));
        }
        let took = start.elapsed();
        peak_kib = peak_kib.max(status_kib(child.id(), "VmHWM:"));
        rss_kib = rss_kib.max(status_kib(child.id(), "VmRSS:"));
        let _ = child.kill();
        let _ = child.wait();
        if run > 0 {
            colds.push(took); // run 0 warms the page cache for the binary
        }
    }
    Cold {
        times: colds,
        peak_kib,
        rss_kib,
    }
}

fn main() {
    let moto = Moto::start();
    let env = aws_env(&moto.endpoint);
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    let location = "s3://bench-cold-start/registry".to_string();
    // Before any SDK client exists (single-threaded here).
    for (k, v) in &env {
        std::env::set_var(k, v);
    }
    rt.block_on(async {
        common::create_bucket("bench-cold-start").await;
        let registry = Registry::open(&location).expect("registry");
        registry
            .publish("v1.0", &ml1m_size(1))
            .await
            .expect("publish v1.0");
        registry
            .publish("v1.1", &ml1m_size(2))
            .await
            .expect("publish v1.1");
    });

    let colds = cold_starts(&location, &env, 7);
    // ml-100k size (943 x 1,682 x 64, 100 k seen) and ml-25m size (162,541 x 59,047
    // x 128, 25 M seen, about 230 MB), each in its own registry.
    let publish_sized = |loc: &str, a: Artifacts| {
        rt.block_on(async {
            let registry = Registry::open(loc).expect("registry");
            registry.publish("v1.0", &a).await.expect("publish");
        });
    };
    let small = "s3://bench-cold-start/registry100k".to_string();
    publish_sized(&small, sized(943, 1_682, 64, 106, 5));
    let colds_small = cold_starts(&small, &env, 5);
    let big = "s3://bench-cold-start/registry25".to_string();
    publish_sized(&big, sized(162_541, 59_047, 128, 153, 3));
    let colds_big = cold_starts(&big, &env, 4);
    // The same model from a local folder: the load without moto, which answers each
    // ranged GET by copying the whole object (an 8 MiB range of a 128 MB object took
    // 358 ms, of a 16 MB one 33 ms), so S3 above is an upper bound for real S3.
    let folder = tempfile::tempdir().expect("tempdir");
    let folder_loc = folder.path().to_str().expect("utf-8").to_string();
    publish_sized(&folder_loc, sized(162_541, 59_047, 128, 153, 3));
    let colds_folder = cold_starts(&folder_loc, &[], 4);

    let env_poll: Vec<(&str, String)> = env
        .iter()
        .cloned()
        .chain([("ACTIVE_POLL_SECONDS", "1".to_string())])
        .collect();
    let (a, b) = (
        Server::start(&location, &env_poll),
        Server::start(&location, &env_poll),
    );
    let mut switches = Vec::new();
    for target in ["v1.0", "v1.1", "v1.0", "v1.1", "v1.0"] {
        let start = Instant::now();
        let (status, body) = curl(
            "GET",
            &format!("{}/switch?model={target}", a.base),
            &[],
            None,
        );
        assert_eq!(status, 200, "{body}");
        let local = start.elapsed();
        while !curl("GET", &format!("{}/healthz", b.base), &[], None)
            .1
            .contains(&format!("\"version\":\"{target}\""))
        {
            std::thread::sleep(Duration::from_millis(20));
        }
        switches.push((local, start.elapsed()));
    }
    let ms = |d: Duration| d.as_secs_f64() * 1e3;
    let runs = |c: &Cold| {
        c.times
            .iter()
            .map(|d| format!("{:.0}", ms(*d)))
            .collect::<Vec<_>>()
            .join(", ")
    };
    let mib = |kib: u64| kib as f64 / 1024.0;
    println!("| model in S3 (moto) | users x items x factors, seen | cold start: spawn -> first 200, median | runs (ms) | RSS at first 200 | peak RSS (VmHWM) |");
    println!("|---|---|---|---|---|---|");
    for (name, shape, c) in [
        ("ml-100k size", "943 x 1,682 x 64, 100 k", &colds_small),
        ("ml-1m size", "6,040 x 3,706 x 64, 574 k", &colds),
        ("ml-25m size", "162,541 x 59,047 x 128, 25 M", &colds_big),
        (
            "ml-25m size, local folder (no S3)",
            "162,541 x 59,047 x 128, 25 M",
            &colds_folder,
        ),
    ] {
        println!(
            "| {name} | {shape} | {:.0} ms | {} | {:.0} MiB | {:.0} MiB |",
            ms(median(c.times.clone())),
            runs(c),
            mib(c.rss_kib),
            mib(c.peak_kib)
        );
    }
    println!("(ml-25m target: first served within 1 s of process start; parallel ranged GETs)");
    println!();
    println!("| measurement | median | runs |");
    println!("|---|---|---|");
    let local: Vec<Duration> = switches.iter().map(|s| s.0).collect();
    let other: Vec<Duration> = switches.iter().map(|s| s.1).collect();
    println!(
        "| switch call (verify + conditional write), server A | {:.0} ms | {} |",
        ms(median(local.clone())),
        local
            .iter()
            .map(|d| format!("{:.0}", ms(*d)))
            .collect::<Vec<_>>()
            .join(", ")
    );
    println!(
        "| switch -> server B serving it (ACTIVE_POLL_SECONDS=1) | {:.0} ms | {} |",
        ms(median(other.clone())),
        other
            .iter()
            .map(|d| format!("{:.0}", ms(*d)))
            .collect::<Vec<_>>()
            .join(", ")
    );
}
