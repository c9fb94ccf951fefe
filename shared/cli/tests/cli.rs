//! The `recs` binary as an operator runs it: gen-data publishes a servable version,
//! serve answers over HTTP, verify refuses a broken version with a clear message.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};

const RECS: &str = env!("CARGO_BIN_EXE_recs");

fn recs(args: &[&str]) -> std::process::Output {
    Command::new(RECS)
        .args(args)
        .env("RUST_LOG", "warn")
        .output()
        .unwrap()
}

fn curl(url: &str) -> String {
    let out = Command::new("curl")
        .args(["-sS", url])
        .output()
        .expect("curl is installed");
    assert!(
        out.status.success(),
        "curl {url}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

#[test]
fn gen_data_then_serve_then_verify() {
    let dir = tempfile::tempdir().unwrap();
    let reg = dir.path().join("registry");
    let data = dir.path().join("data");
    let out = recs(&[
        "gen-data",
        "--out",
        data.to_str().unwrap(),
        "--users",
        "80",
        "--items",
        "60",
        "--publish",
        reg.to_str().unwrap(),
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(data.join("ratings.csv").exists() && reg.join("movie_titles.csv").exists());
    assert_eq!(
        std::fs::read_to_string(reg.join("latest.txt")).unwrap(),
        "v0.1"
    );

    let out = recs(&["verify", "--registry", reg.to_str().unwrap(), "--json"]);
    assert!(out.status.success());
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(
        (v["ok"].as_bool(), v["users"].as_u64()),
        (Some(true), Some(80))
    );

    // Port 0: the server picks a free port and prints its address.
    let mut child = Command::new(RECS)
        .args(["serve", "--registry", reg.to_str().unwrap(), "--port", "0"])
        .env("RUST_LOG", "warn")
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stderr = BufReader::new(child.stderr.take().unwrap());
    let mut line = String::new();
    // Log lines (e.g. the RECS_ADMIN_TOKEN warning) may come before the address.
    let base = loop {
        line.clear();
        assert!(
            stderr.read_line(&mut line).unwrap() > 0,
            "recs serve exited"
        );
        if let Some(b) = line
            .split_whitespace()
            .find_map(|w| w.strip_suffix("/healthz"))
        {
            break b.to_string();
        }
    };
    let body = curl(&format!("{base}/recommend/1?k=10"));
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    let recs_list = v["recommendations"].as_array().unwrap();
    assert_eq!(recs_list.len(), 10);
    assert!(
        recs_list[0]["title"]
            .as_str()
            .unwrap()
            .starts_with("Synthetic Movie"),
        "{body}"
    );
    assert!(curl(&format!("{base}/healthz")).contains("\"version\":\"v0.1\""));
    child.kill().unwrap();
    child.wait().unwrap();

    // A second gen-data publish takes the next version and moves latest.txt.
    let out = recs(&[
        "gen-data",
        "--out",
        data.to_str().unwrap(),
        "--users",
        "20",
        "--items",
        "10",
        "--publish",
        reg.to_str().unwrap(),
    ]);
    assert!(out.status.success());
    assert_eq!(
        std::fs::read_to_string(reg.join("latest.txt")).unwrap(),
        "v0.2"
    );

    // Break v0.2: verify fails with the reason, naming the version.
    std::fs::write(reg.join("v0.2/als/items.json"), "[1,2").unwrap();
    let out = recs(&["verify", "--registry", reg.to_str().unwrap()]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("v0.2") && err.contains("checksum mismatch"),
        "{err}"
    );
    let out = recs(&["verify", "--registry", reg.to_str().unwrap(), "../../etc"]);
    assert!(String::from_utf8_lossy(&out.stderr).contains("invalid version name"));
}
