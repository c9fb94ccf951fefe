//! Faults under load: a fault proxy between the service and a local S3 server (moto)
//! delays, drops, truncates and resets connections while concurrent recommend
//! requests run and switches go through it. Debian has no toxiproxy, so the proxy
//! is a small tokio TCP relay in this file.
//!
//! Required: no 5xx on recommend; no response mixes versions (every list is the one
//! its version gives, computed before any fault); a half-downloaded version is never
//! served; every failure a client saw is counted in `/metrics`.

mod common;

use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::{aws_env, create_bucket, curl, Moto};
use recs_core::Registry;
use recs_train::gen_data::{generate, GenConfig};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// What the proxy does to one connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Fault {
    /// Relays both ways, for at most `PASS_LIFETIME` (then closes: pooled
    /// connections do not escape the faults for long).
    Pass,
    /// Holds every chunk from S3 back for `DELAY` before relaying it.
    Delay,
    /// Accepts and closes at once, nothing read or written.
    Drop,
    /// Relays the request, then only the first bytes of the answer, then closes.
    Truncate,
    /// Reads the request, then resets the connection (SO_LINGER 0: an RST).
    Reset,
}

const FAULTS: [Fault; 5] = [
    Fault::Pass,
    Fault::Delay,
    Fault::Drop,
    Fault::Truncate,
    Fault::Reset,
];
const PASS_LIFETIME: Duration = Duration::from_millis(400);
const DELAY: Duration = Duration::from_millis(60);

struct Proxy {
    addr: SocketAddr,
    /// Faults on (round robin over FAULTS per new connection) or a clean relay.
    faulty: Arc<AtomicBool>,
    /// Every new connection dropped (S3 unreachable), over `faulty`.
    down: Arc<AtomicBool>,
    /// Connections that got each fault, in FAULTS order.
    injected: Arc<[AtomicU64; 5]>,
}

impl Proxy {
    async fn start(upstream: SocketAddr) -> Proxy {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let faulty = Arc::new(AtomicBool::new(false));
        let down = Arc::new(AtomicBool::new(false));
        let injected: Arc<[AtomicU64; 5]> = Arc::new(Default::default());
        let (f, d, inj) = (faulty.clone(), down.clone(), injected.clone());
        tokio::spawn(async move {
            let mut n = 0usize;
            loop {
                let Ok((client, _)) = listener.accept().await else {
                    return;
                };
                let fault = if d.load(Ordering::SeqCst) {
                    Fault::Drop
                } else if f.load(Ordering::SeqCst) {
                    n += 1;
                    inj[n % FAULTS.len()].fetch_add(1, Ordering::Relaxed);
                    FAULTS[n % FAULTS.len()]
                } else {
                    Fault::Pass
                };
                tokio::spawn(relay(client, upstream, fault, n));
            }
        });
        Proxy {
            addr,
            faulty,
            down,
            injected,
        }
    }

    fn set_faulty(&self, on: bool) {
        self.faulty.store(on, Ordering::SeqCst);
    }

    fn set_down(&self, on: bool) {
        self.down.store(on, Ordering::SeqCst);
    }
}

async fn relay(mut client: TcpStream, upstream: SocketAddr, fault: Fault, n: usize) {
    match fault {
        Fault::Drop => drop(client),
        Fault::Reset => {
            let mut buf = [0u8; 512];
            let _ = client.read(&mut buf).await;
            // Linger 0: close sends an RST at once (the deprecation is about a
            // non-zero linger blocking the thread on drop; zero never blocks).
            #[allow(deprecated)]
            let _ = client.set_linger(Some(Duration::ZERO));
            drop(client);
        }
        Fault::Pass | Fault::Delay | Fault::Truncate => {
            let Ok(server) = TcpStream::connect(upstream).await else {
                return;
            };
            let (mut cr, mut cw) = client.into_split();
            let (mut sr, mut sw) = server.into_split();
            let up = async move {
                let _ = tokio::io::copy(&mut cr, &mut sw).await;
                let _ = sw.shutdown().await;
            };
            // Somewhere in the headers or the body, varying per connection.
            let mut budget = match fault {
                Fault::Truncate => 40 + (n * 7919) % 3000,
                _ => usize::MAX,
            };
            let down = async move {
                let mut buf = vec![0u8; 16 * 1024];
                loop {
                    let Ok(got) = sr.read(&mut buf).await else {
                        return;
                    };
                    if got == 0 {
                        return;
                    }
                    if fault == Fault::Delay {
                        tokio::time::sleep(DELAY).await;
                    }
                    let take = got.min(budget);
                    if cw.write_all(&buf[..take]).await.is_err() {
                        return;
                    }
                    budget -= take;
                    if budget == 0 {
                        // Truncated: close mid-answer.
                        return;
                    }
                }
            };
            let both = async {
                tokio::select! {
                    () = up => {}
                    () = down => {}
                }
            };
            if fault == Fault::Pass {
                let _ = tokio::time::timeout(PASS_LIFETIME, both).await;
            } else {
                both.await;
            }
        }
    }
}

fn small(seed: u64) -> GenConfig {
    GenConfig {
        users: 60,
        items: 400,
        factors: 8,
        ratings_per_user: 20,
        seed,
        ..GenConfig::default()
    }
}

/// The sum of the samples of `name` whose labels contain every one of `labels`.
fn metric(text: &str, name: &str, labels: &[&str]) -> u64 {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| {
            let (head, value) = l.rsplit_once(' ')?;
            let (n, rest) = head.split_once('{').unwrap_or((head, ""));
            (n == name && labels.iter().all(|want| rest.contains(want)))
                .then(|| value.parse::<f64>().ok())
                .flatten()
        })
        .sum::<f64>() as u64
}

fn json(body: &str) -> serde_json::Value {
    serde_json::from_str(body).unwrap_or_else(|e| panic!("not JSON ({e}): {body}"))
}

#[test]
fn faults_between_the_service_and_s3_under_load() {
    let moto = Moto::start();
    let rt = tokio::runtime::Runtime::new().unwrap();
    let upstream: SocketAddr = moto.endpoint.trim_start_matches("http://").parse().unwrap();
    let proxy = rt.block_on(Proxy::start(upstream));
    // Everything in this process (publishing, the service) reaches S3 through the proxy.
    for (k, v) in aws_env(&format!("http://{}", proxy.addr)) {
        std::env::set_var(k, v);
    }
    let location = "s3://faults/registry".to_string();
    let users = 1..=30i64;
    let (expected, server, svc) = rt.block_on(async {
        create_bucket("faults").await;
        let registry = Registry::open(&location).unwrap();
        for (v, seed) in [("v0.1", 1), ("v0.2", 2)] {
            registry
                .publish(v, &generate(&small(seed)).planted_artifacts())
                .await
                .unwrap();
        }
        // The lists each version must give, from the models loaded before any fault.
        let mut expected: HashMap<(String, i64), Vec<i64>> = HashMap::new();
        for v in ["v0.1", "v0.2"] {
            let m = registry.load(v).await.unwrap();
            let als = m.model.als().unwrap();
            for user in users.clone() {
                let row = als.user_row(user).unwrap();
                let items = als
                    .recommend_row(row, 5)
                    .iter()
                    .map(|s| als.item_id(s.row))
                    .collect();
                expected.insert((v.to_string(), user), items);
            }
        }
        assert_ne!(
            expected[&("v0.1".to_string(), 1)],
            expected[&("v0.2".to_string(), 1)],
            "the two versions must be told apart by their lists"
        );
        let config = recs_serve::Config {
            registry: location.clone(),
            poll: Duration::from_millis(200),
            ..recs_serve::Config::default()
        };
        let svc = Arc::new(recs_serve::Service::start(config).await);
        assert_eq!(svc.model().unwrap().version, "v0.2");
        let (listener, addr) = recs::server::bind(([127, 0, 0, 1], 0).into())
            .await
            .unwrap();
        tokio::spawn(recs::server::serve(
            listener,
            svc.clone(),
            std::future::pending(),
        ));
        (expected, format!("http://{addr}"), svc)
    });

    proxy.set_faulty(true);
    let stop = Arc::new(AtomicBool::new(false));
    let workers: Vec<_> = (0..4i64)
        .map(|w| {
            let (stop, server, expected) = (stop.clone(), server.clone(), expected.clone());
            std::thread::spawn(move || {
                let mut seen = HashSet::new();
                let mut n = 0i64;
                while !stop.load(Ordering::Relaxed) {
                    let user = (n * 4 + w) % 30 + 1;
                    let (status, body) =
                        curl("GET", &format!("{server}/recommend/{user}?k=5"), &[], None);
                    assert_eq!(status, 200, "recommend under S3 faults: {body}");
                    let v = json(&body);
                    let version = v["model"].as_str().unwrap().to_string();
                    assert_eq!(v["provenance"]["model_version"], version.as_str());
                    let items: Vec<i64> = v["items"]
                        .as_array()
                        .unwrap()
                        .iter()
                        .map(|i| i.as_i64().unwrap())
                        .collect();
                    assert_eq!(
                        Some(&items),
                        expected.get(&(version.clone(), user)),
                        "user {user} got a list that {version} does not give (mixed or half-loaded)"
                    );
                    seen.insert(version);
                    n += 1;
                }
                (n, seen)
            })
        })
        .collect();

    // Switches through the faults; every third one with the proxy clean, so some
    // land and the served version really moves while the others fail.
    let mut outcomes: HashMap<u16, u64> = HashMap::new();
    let mut served_after_ok = Vec::new();
    let started = Instant::now();
    for i in 0..36 {
        let target = if i % 2 == 0 { "v0.1" } else { "v0.2" };
        proxy.set_faulty(i % 3 != 2);
        let (status, body) = curl("GET", &format!("{server}/switch?model={target}"), &[], None);
        *outcomes.entry(status).or_default() += 1;
        match status {
            200 => served_after_ok.push((target, svc.model().unwrap().version.clone())),
            503 => assert_eq!(json(&body)["error_type"], "registry_unavailable", "{body}"),
            409 => assert_eq!(json(&body)["error_type"], "conflict", "{body}"),
            _ => panic!("switch under S3 faults answered {status}: {body}"),
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    // Polls through the faults for a while with no switch; then S3 unreachable for
    // longer than a pooled connection lives plus a poll's retries, so that polls fail
    // (a poll retried onto a passing connection succeeds: the faults alone may not).
    proxy.set_faulty(true);
    std::thread::sleep(Duration::from_secs(2));
    proxy.set_down(true);
    std::thread::sleep(Duration::from_secs(4));
    proxy.set_down(false);
    proxy.set_faulty(false);
    stop.store(true, Ordering::Relaxed);
    let mut requests = 0;
    let mut versions = HashSet::new();
    for w in workers {
        let (n, seen) = w.join().expect("a recommend got a 5xx or a wrong list");
        requests += n;
        versions.extend(seen);
    }
    let took = started.elapsed();
    let injected: Vec<u64> = proxy
        .injected
        .iter()
        .map(|c| c.load(Ordering::Relaxed))
        .collect();
    eprintln!(
        "{requests} recommends and 36 switches in {took:?}: switch statuses {outcomes:?}; \
         connections per fault (pass, delay, drop, truncate, reset) {injected:?}"
    );

    // A switch answered 200 serves its target here at once.
    for (target, served) in &served_after_ok {
        assert_eq!(target, served);
    }
    let ok = outcomes.get(&200).copied().unwrap_or(0);
    let failed: u64 = outcomes
        .iter()
        .filter(|(s, _)| **s != 200)
        .map(|(_, n)| n)
        .sum();
    assert!(
        ok >= 2,
        "too few switches landed to prove anything: {outcomes:?}"
    );
    assert!(failed >= 2, "the faults made no switch fail: {outcomes:?}");
    assert!(injected.iter().all(|&n| n > 0), "every fault was injected");
    assert_eq!(
        versions.len(),
        2,
        "both versions were served during the run"
    );

    // Every failure a client saw is in the metrics, and no recommend was a 5xx.
    let (status, text) = curl("GET", &format!("{server}/metrics"), &[], None);
    assert_eq!(status, 200);
    let requests_total = "recommend_requests_total";
    assert_eq!(
        metric(
            &text,
            requests_total,
            &["endpoint=\"recommend\"", "status=\"200\""]
        ),
        requests as u64,
        "every recommend counted as a 200"
    );
    assert_eq!(
        metric(&text, requests_total, &["endpoint=\"recommend\""]),
        requests as u64,
        "no recommend counted with another status"
    );
    for (status, n) in &outcomes {
        assert_eq!(
            metric(
                &text,
                requests_total,
                &["endpoint=\"switch\"", &format!("status=\"{status}\"")]
            ),
            *n,
            "switches answered {status}"
        );
    }
    assert_eq!(
        metric(&text, "recommend_errors_total", &["endpoint=\"switch\""]),
        failed,
        "every failed switch counted as an error"
    );
    assert!(
        metric(
            &text,
            "recommend_errors_total",
            &[
                "endpoint=\"refresh\"",
                "error_type=\"registry_unavailable\""
            ]
        ) > 0,
        "polls failed through the faults and none was counted:\n{text}"
    );
    assert_eq!(
        metric(&text, "model_switches_total", &[]),
        ok,
        "model_switches_total counts exactly the switches that landed"
    );
}
