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

/// `runs` cold starts of `recs serve` over `location`: spawn -> first 200 from
/// `/recommend/1`. The first run only warms the page cache for the binary.
fn cold_starts(location: &str, env: &[(&'static str, String)], runs: usize) -> Vec<Duration> {
    let mut colds = Vec::new();
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
        let _ = child.kill();
        let _ = child.wait();
        if run > 0 {
            colds.push(took); // run 0 warms the page cache for the binary
        }
    }

    colds
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
    // ml-25m size: 162,541 x 59,047 x 128 and 25 M seen items (about 230 MB).
    let big = "s3://bench-cold-start/registry25".to_string();
    let big_bytes = rt.block_on(async {
        let registry = Registry::open(&big).expect("registry");
        let a = sized(162_541, 59_047, 128, 153, 3);
        let bytes = (a.user_factors.data.len() + a.item_factors.data.len()) * 4;
        registry.publish("v25.0", &a).await.expect("publish v25.0");
        bytes
    });
    let colds_big = cold_starts(&big, &env, 4);

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
    let colds_ms: Vec<String> = colds.iter().map(|d| format!("{:.0}", ms(*d))).collect();
    println!("| measurement | median | runs |");
    println!("|---|---|---|");
    println!(
        "| cold start: spawn -> first 200, ml-1m-size model (2.9 MB of factors) from S3 (moto) | {:.0} ms | {} ms |",
        ms(median(colds.clone())),
        colds_ms.join(", ")
    );
    println!(
        "| cold start: spawn -> first 200, ml-25m-size model ({:.0} MB of factors, 25 M seen items) from S3 (moto), parallel ranged GETs | {:.0} ms | {} ms |",
        big_bytes as f64 / 1e6,
        ms(median(colds_big.clone())),
        colds_big
            .iter()
            .map(|d| format!("{:.0}", ms(*d)))
            .collect::<Vec<_>>()
            .join(", ")
    );
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
