//! Test harness for the S3 registry: a moto server on a free loopback port
//! (installed from PyPI when absent), buckets, and `recs serve` child processes.

#![allow(dead_code)]

use std::io::{BufRead, BufReader};
use std::net::{TcpListener, TcpStream};
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

pub const RECS: &str = env!("CARGO_BIN_EXE_recs");

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn ensure_moto() {
    let ok = Command::new("python3")
        .args(["-c", "import moto.server, flask"])
        .status()
        .map(|s| s.success())
        .unwrap_or(false);
    if !ok {
        eprintln!("installing moto[server] from PyPI for the S3 tests");
        let status = Command::new("python3")
            .args(["-m", "pip", "install", "--quiet", "moto[server]"])
            .status()
            .expect("python3 is needed for the S3 tests (moto server)");
        assert!(
            status.success(),
            "pip install 'moto[server]' failed; the S3 tests need it"
        );
    }
}

fn wait_for_port(port: u16) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(
            Instant::now() < deadline,
            "moto did not start on port {port}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// A moto server this test owns; killed on drop.
pub struct Moto {
    pub endpoint: String,
    child: Child,
}

impl Moto {
    pub fn start() -> Moto {
        ensure_moto();
        let port = free_port();
        let child = Command::new("python3")
            .args([
                "-m",
                "moto.server",
                "-H",
                "127.0.0.1",
                "-p",
                &port.to_string(),
            ])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start moto");
        wait_for_port(port);
        Moto {
            endpoint: format!("http://127.0.0.1:{port}"),
            child,
        }
    }

    pub fn stop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Moto {
    fn drop(&mut self) {
        self.stop();
    }
}

/// The moto server shared by this test binary. A shell watchdog stops it when the
/// test process exits. The AWS environment of this process points at it.
pub fn shared_moto() -> &'static str {
    static ENDPOINT: OnceLock<String> = OnceLock::new();
    ENDPOINT.get_or_init(|| {
        ensure_moto();
        let port = free_port();
        let script = format!(
            "python3 -m moto.server -H 127.0.0.1 -p {port} >/dev/null 2>&1 & m=$!; \
             while kill -0 {parent} 2>/dev/null; do sleep 0.5; done; kill $m",
            parent = std::process::id()
        );
        // Kept, never waited for: it outlives every test and stops itself.
        static WATCHDOG: OnceLock<std::sync::Mutex<Child>> = OnceLock::new();
        let child = Command::new("sh")
            .args(["-c", &script])
            .spawn()
            .expect("start moto");
        let _ = WATCHDOG.set(std::sync::Mutex::new(child));
        wait_for_port(port);
        let endpoint = format!("http://127.0.0.1:{port}");
        // Set once, before any SDK client exists; every test calls this first.
        for (k, v) in aws_env(&endpoint) {
            std::env::set_var(k, v);
        }
        endpoint
    })
}

/// The environment that points the AWS SDK at a local S3 server.
pub fn aws_env(endpoint: &str) -> Vec<(&'static str, String)> {
    vec![
        ("AWS_ENDPOINT_URL", endpoint.to_string()),
        ("AWS_ACCESS_KEY_ID", "test".into()),
        ("AWS_SECRET_ACCESS_KEY", "test".into()),
        ("AWS_REGION", "us-east-1".into()),
        ("AWS_EC2_METADATA_DISABLED", "true".into()),
    ]
}

/// Creates a bucket on the shared moto server.
pub async fn bucket(name: &str) {
    shared_moto();
    create_bucket(name).await;
}

/// Creates a bucket on the S3 server the AWS environment of this process points at.
pub async fn create_bucket(name: &str) {
    let config = aws_config::load_from_env().await;
    let s3 = aws_sdk_s3::Client::from_conf(
        aws_sdk_s3::config::Builder::from(&config)
            .force_path_style(true)
            .build(),
    );
    s3.create_bucket()
        .bucket(name)
        .send()
        .await
        .expect("create bucket");
}

/// A `recs serve` child process on a free port; killed on drop.
pub struct Server {
    pub base: String,
    child: Child,
}

impl Server {
    pub fn start(registry: &str, env: &[(&str, String)]) -> Server {
        let mut cmd = Command::new(RECS);
        cmd.args(["serve", "--registry", registry, "--port", "0"])
            .env("RUST_LOG", "warn")
            .stderr(Stdio::piped());
        for (k, v) in env {
            cmd.env(k, v);
        }
        let mut child = cmd.spawn().expect("start recs serve");
        let mut stderr = BufReader::new(child.stderr.take().unwrap());
        let mut base = None;
        let mut line = String::new();
        while base.is_none() {
            line.clear();
            if stderr.read_line(&mut line).unwrap() == 0 {
                panic!("recs serve exited before listening");
            }
            base = line
                .split_whitespace()
                .find_map(|w| w.strip_suffix("/healthz"))
                .map(str::to_string);
        }
        // Keep draining stderr so the child never blocks on a full pipe.
        std::thread::spawn(move || for _ in stderr.lines() {});
        Server {
            base: base.unwrap(),
            child,
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `curl` with a method and optional headers/body: (status, body).
pub fn curl(method: &str, url: &str, headers: &[&str], body: Option<&str>) -> (u16, String) {
    let mut cmd = Command::new("curl");
    cmd.args(["-sS", "-X", method, "-w", "\n%{http_code}", url]);
    for h in headers {
        cmd.args(["-H", h]);
    }
    if let Some(b) = body {
        cmd.args(["-H", "content-type: application/json", "--data", b]);
    }
    let out = cmd.output().expect("curl is installed");
    assert!(
        out.status.success(),
        "curl {url}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8(out.stdout).unwrap();
    let (body, code) = text.rsplit_once('\n').unwrap();
    (code.parse().unwrap(), body.to_string())
}

/// Polls `f` until it returns true or `timeout` passes; returns the time it took.
pub fn wait_until(timeout: Duration, mut f: impl FnMut() -> bool) -> Option<Duration> {
    let start = Instant::now();
    while start.elapsed() < timeout {
        if f() {
            return Some(start.elapsed());
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    None
}
