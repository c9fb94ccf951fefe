//! Soak (`make soak`): one million requests against the local server (the same
//! `recs::server::serve` as `recs serve`, in this process, on a loopback port)
//! mixing known and unknown users, errors and switches, over keep-alive
//! connections. Prints the process RSS at start, after warm-up and every 10 % of
//! the run (every 1/SOAK_REPORTS with that variable set), with glibc's heap
//! counters beside it (bytes in use, free bytes held, mmapped), and fails when RSS
//! at the end exceeds RSS after warm-up by 5 % or more, or on any 5xx.
//!
//! Usage: soak [REGISTRY] [REQUESTS] (defaults: model_registry, 1000000). The
//! registry is copied to a temporary folder first: switches write active.json.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Instant;

use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;

const CLIENTS: u64 = 4;
/// Requests per connection before the client reconnects.
const PER_CONNECTION: u64 = 5000;
/// One switch every this many requests (cycling through the versions).
const SWITCH_EVERY: u64 = 5000;
/// Warm-up, in percent of the requests: RSS is measured from here. Every bounded
/// store is full long before 100,000 requests: the trace store's 10,000 answers
/// after ~12,000 requests (~85 % of requests are traced recommends), every version
/// served and every metric label set seen within one cycle of switches (15,000
/// requests), the exposure queue flushed every 5 s. What follows is steady state.
const WARMUP_SHARE: u64 = 10;

fn rss_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("VmRSS:"))
                .and_then(|v| v.split_whitespace().next()?.parse().ok())
        })
        .unwrap_or(0)
}

/// glibc's own view of its heap, for telling a store that grows (bytes in use grow)
/// from fragmentation (free bytes held grow): (in use, free but held, mmapped), KiB.
#[cfg(target_env = "gnu")]
fn heap_kib() -> (u64, u64, u64) {
    // SAFETY: mallinfo2 only reads the allocator's counters.
    let m = unsafe { libc::mallinfo2() };
    (
        m.uordblks as u64 / 1024,
        m.fordblks as u64 / 1024,
        m.hblkhd as u64 / 1024,
    )
}

#[cfg(not(target_env = "gnu"))]
fn heap_kib() -> (u64, u64, u64) {
    (0, 0, 0)
}

fn copy_dir(from: &std::path::Path, to: &std::path::Path) -> std::io::Result<()> {
    std::fs::create_dir_all(to)?;
    for entry in std::fs::read_dir(from)? {
        let entry = entry?;
        let dest = to.join(entry.file_name());
        if entry.file_type()?.is_dir() {
            copy_dir(&entry.path(), &dest)?;
        } else if entry.file_name() != "active.json" {
            std::fs::copy(entry.path(), dest)?;
        }
    }
    Ok(())
}

/// A keep-alive HTTP/1.1 connection: one request at a time; (status, body length).
struct Conn {
    stream: BufReader<TcpStream>,
}

impl Conn {
    async fn open(addr: std::net::SocketAddr) -> std::io::Result<Conn> {
        Ok(Conn {
            stream: BufReader::new(TcpStream::connect(addr).await?),
        })
    }

    async fn get(&mut self, path: &str) -> std::io::Result<u16> {
        let req = format!("GET {path} HTTP/1.1\r\nhost: soak\r\n\r\n");
        self.stream.get_mut().write_all(req.as_bytes()).await?;
        let mut line = String::new();
        self.stream.read_line(&mut line).await?;
        let status: u16 = line
            .split_whitespace()
            .nth(1)
            .and_then(|s| s.parse().ok())
            .ok_or_else(|| std::io::Error::other(format!("bad status line {line:?}")))?;
        let mut length = 0usize;
        loop {
            line.clear();
            self.stream.read_line(&mut line).await?;
            let l = line.trim_end();
            if l.is_empty() {
                break;
            }
            if let Some((k, v)) = l.split_once(':') {
                if k.eq_ignore_ascii_case("content-length") {
                    length = v.trim().parse().map_err(std::io::Error::other)?;
                }
            }
        }
        let mut body = vec![0u8; length];
        self.stream.read_exact(&mut body).await?;
        Ok(status)
    }
}

#[derive(Default)]
struct Tally {
    ok: AtomicU64,
    client_errors: AtomicU64,
    server_errors: AtomicU64,
    switches: AtomicU64,
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let source = args.next().unwrap_or_else(|| "model_registry".into());
    let total: u64 = args.next().map_or(Ok(1_000_000), |s| s.parse())?;
    // How many RSS rows after the start (every 10 % by default).
    let reports: u64 = std::env::var("SOAK_REPORTS").map_or(Ok(10), |s| s.parse())?;
    // As `recs serve` does at start-up (SOAK_UNTUNED=1 leaves glibc's defaults, to
    // measure what the settings change).
    if std::env::var_os("SOAK_UNTUNED").is_none() {
        recs_serve::alloc::tune();
    }
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    let start_rss = rss_kib();
    let scratch = tempfile::tempdir()?;
    let registry = scratch.path().join("registry");
    copy_dir(std::path::Path::new(&source), &registry)?;
    let versions: Vec<String> = {
        let mut v: Vec<String> = std::fs::read_dir(&registry)?
            .filter_map(|e| e.ok())
            .filter(|e| e.path().join("meta.json").exists())
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .collect();
        v.sort();
        v
    };
    let (addr, users) = rt.block_on(async {
        let svc = Arc::new(
            recs_serve::Service::start(recs_serve::Config {
                registry: registry.display().to_string(),
                ..recs_serve::Config::default()
            })
            .await,
        );
        let users: Vec<i64> = match svc.model() {
            Ok(m) => match m.model.als() {
                Some(als) => als.users().to_vec(),
                None => (1..=100).collect(),
            },
            Err(reason) => return Err(format!("nothing to serve from {source}: {reason}")),
        };
        let (listener, addr) = recs::server::bind(([127, 0, 0, 1], 0).into())
            .await
            .map_err(|e| e.to_string())?;
        tokio::spawn(recs::server::serve(listener, svc, std::future::pending()));
        Ok((addr, Arc::new(users)))
    })?;
    println!(
        "soak: {total} requests, {CLIENTS} keep-alive clients, versions {versions:?}, {} users",
        users.len()
    );
    println!(
        " requests    rss_kib  heap_used  heap_free heap_mmapd   seconds    req/s  (KiB; heap: glibc mallinfo2)"
    );
    let (used, free, mmapped) = heap_kib();
    println!("        0 {start_rss:>10} {used:>10} {free:>10} {mmapped:>10}         0        -");

    let tally = Arc::new(Tally::default());
    let done = Arc::new(AtomicU64::new(0));
    let versions = Arc::new(versions);
    let started = Instant::now();
    let warm_at = total * WARMUP_SHARE / 100;
    let mut curve: Vec<(u64, u64)> = Vec::new();
    rt.block_on(async {
        let clients: Vec<_> = (0..CLIENTS)
            .map(|c| {
                let (tally, done, users, versions) =
                    (tally.clone(), done.clone(), users.clone(), versions.clone());
                tokio::spawn(async move {
                    let mut conn = Conn::open(addr).await?;
                    let mut mine = 0u64;
                    // A cheap deterministic mix (xorshift), different per client.
                    let mut x = 0x9e37_79b9_7f4a_7c15u64 ^ (c + 1);
                    loop {
                        let i = done.fetch_add(1, Ordering::Relaxed);
                        if i >= total {
                            return Ok::<_, std::io::Error>(());
                        }
                        x ^= x << 13;
                        x ^= x >> 7;
                        x ^= x << 17;
                        let roll = x % 100;
                        let user = users[(x >> 8) as usize % users.len()];
                        let path = if i % SWITCH_EVERY == SWITCH_EVERY - 1 {
                            let n = i / SWITCH_EVERY;
                            tally.switches.fetch_add(1, Ordering::Relaxed);
                            format!("/switch?model={}", versions[n as usize % versions.len()])
                        } else {
                            match roll {
                                0..=74 => format!("/recommend/{user}?k={}", 1 + (x >> 20) % 20),
                                75..=79 => {
                                    format!("/recommend/{}?k=10", 1_000_000 + (x >> 24) % 100_000)
                                }
                                80..=83 => format!("/recommend/{user}?k=0"),
                                84..=86 => format!("/recommend/not-a-user-{}", x >> 40),
                                87..=89 => format!(
                                    "/recommend/{user}?k=10&exclude=1,2,{}",
                                    (x >> 30) % 2000
                                ),
                                90..=92 => format!("/no/such/route/{}", x >> 44),
                                93..=95 => "/healthz".to_string(),
                                96..=97 => format!("/trace/{x:016x}"),
                                98 => "/rollout/status".to_string(),
                                _ => "/metrics".to_string(),
                            }
                        };
                        let status = conn.get(&path).await?;
                        let counter = match status {
                            200..=299 => &tally.ok,
                            400..=499 => &tally.client_errors,
                            _ => &tally.server_errors,
                        };
                        counter.fetch_add(1, Ordering::Relaxed);
                        mine += 1;
                        if mine.is_multiple_of(PER_CONNECTION) {
                            conn = Conn::open(addr).await?;
                        }
                    }
                })
            })
            .collect();
        let mut next = 1u64;
        let mut warm_recorded = false;
        let row = |n: u64, note: &str| {
            let secs = started.elapsed().as_secs_f64();
            let rss = rss_kib();
            let (used, free, mmapped) = heap_kib();
            println!(
                "{n:>9} {rss:>10} {used:>10} {free:>10} {mmapped:>10} {secs:>9.1} {:>8.0}{note}",
                n as f64 / secs
            );
            rss
        };
        loop {
            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
            let n = done.load(Ordering::Relaxed).min(total);
            if !warm_recorded && n >= warm_at {
                warm_recorded = true;
                curve.push((n, row(n, "  <- after warm-up")));
            }
            if n >= next * total / reports {
                next += 1;
                curve.push((n, row(n, "")));
            }
            if n >= total {
                break;
            }
        }
        for c in clients {
            c.await.map_err(std::io::Error::other)??;
        }
        Ok::<_, std::io::Error>(())
    })?;
    let secs = started.elapsed().as_secs_f64();
    let end_rss = rss_kib();
    let warm_rss = curve.first().map_or(end_rss, |c| c.1);
    let growth = (end_rss as f64 - warm_rss as f64) / warm_rss as f64 * 100.0;
    println!(
        "soak: {total} requests in {secs:.1} s ({:.0} req/s): {} 2xx, {} 4xx, {} 5xx, {} switches",
        total as f64 / secs,
        tally.ok.load(Ordering::Relaxed),
        tally.client_errors.load(Ordering::Relaxed),
        tally.server_errors.load(Ordering::Relaxed),
        tally.switches.load(Ordering::Relaxed),
    );
    println!(
        "soak: RSS start {start_rss} KiB, after warm-up {warm_rss} KiB, end {end_rss} KiB: {growth:+.2} % after warm-up (limit +5 %)"
    );
    if tally.server_errors.load(Ordering::Relaxed) > 0 {
        return Err("5xx answers during the soak".into());
    }
    if growth >= 5.0 {
        return Err(format!("RSS grew {growth:.2} % after warm-up (limit 5 %)").into());
    }
    Ok(())
}
