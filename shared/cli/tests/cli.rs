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

    // Publishing is not switching: what was served (v0.1) is pinned in active.json,
    // and `verify` with no version checks what is served.
    let active: serde_json::Value =
        serde_json::from_slice(&std::fs::read(reg.join("active.json")).unwrap()).unwrap();
    assert_eq!(active["active_version"], "v0.1");
    std::fs::write(reg.join("v0.2/als/items.json"), "[1,2").unwrap();
    let out = recs(&["verify", "--registry", reg.to_str().unwrap()]);
    assert!(out.status.success());
    assert!(String::from_utf8_lossy(&out.stdout).starts_with("v0.1: OK"));

    // Broken v0.2: verify fails with the reason, naming the version.
    let out = recs(&["verify", "--registry", reg.to_str().unwrap(), "v0.2"]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("v0.2") && err.contains("checksum mismatch"),
        "{err}"
    );
    let out = recs(&["verify", "--registry", reg.to_str().unwrap(), "../../etc"]);
    assert!(String::from_utf8_lossy(&out.stderr).contains("invalid version name"));
}

/// A registry folder with two published versions, the first one served.
fn two_versions() -> (tempfile::TempDir, String) {
    let dir = tempfile::tempdir().unwrap();
    let reg = dir.path().join("reg");
    for _ in 0..2 {
        let out = recs(&[
            "gen-data",
            "--out",
            dir.path().join("data").to_str().unwrap(),
            "--users",
            "20",
            "--items",
            "10",
            "--publish",
            reg.to_str().unwrap(),
        ]);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let reg = reg.to_str().unwrap().to_string();
    (dir, reg)
}

#[test]
fn options_go_before_or_after_the_subcommand() {
    let (_dir, reg) = two_versions();
    let after = recs(&["rollout", "status", "--registry", &reg]);
    let before = recs(&["--registry", &reg, "rollout", "status"]);
    assert!(
        after.status.success(),
        "{}",
        String::from_utf8_lossy(&after.stderr)
    );
    assert_eq!(after.stdout, before.stdout);
    let v: serde_json::Value = serde_json::from_slice(&after.stdout).unwrap();
    assert_eq!(v["active_version"], "v0.1");
}

#[test]
fn the_first_switch_records_what_it_replaced() {
    // The same answer the HTTP /switch gives: previous = the version served before.
    let (_dir, reg) = two_versions();
    let out = recs(&["switch", "--registry", &reg, "v0.2"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(
        (v["model_version"].as_str(), v["previous_version"].as_str()),
        (Some("v0.2"), Some("v0.1"))
    );
}

#[test]
fn errors_are_printed_once_with_their_path_in_the_cli_words() {
    // The demo registry's v0.1 has a drift baseline; work on a copy of it.
    let dir = tempfile::tempdir().unwrap();
    let demo = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../model_registry");
    let status = Command::new("cp")
        .args([
            "-r",
            demo.to_str().unwrap(),
            dir.path().join("reg").to_str().unwrap(),
        ])
        .status()
        .unwrap();
    assert!(status.success());
    let reg = dir.path().join("reg").to_str().unwrap().to_string();
    let out = recs(&[
        "drift",
        "--registry",
        &reg,
        "--events",
        "/nonexistent-events",
    ]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    let line = err
        .lines()
        .find(|l| l.starts_with("error: "))
        .expect("an error line");
    assert!(line.contains("/nonexistent-events"), "{line}");
    assert_eq!(line.matches("does not exist").count(), 1, "{line}");

    let out = recs(&[
        "rollout",
        "--registry",
        &reg,
        "update",
        "--strategy",
        "canary",
    ]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("strategy canary needs a canary_version"),
        "{err}"
    );

    let out = recs(&[
        "serve",
        "--registry",
        "/nonexistent-registry",
        "--port",
        "0",
    ]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr)
        .contains("registry folder /nonexistent-registry does not exist"));
}

#[test]
fn a_closed_pipe_ends_quietly_and_logs_to_a_file_carry_no_colour() {
    let (_dir, reg) = two_versions();
    // `recs rollout status | head -c 1`: the reader goes away first.
    let mut child = Command::new(RECS)
        .args(["rollout", "status", "--registry", &reg])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    drop(child.stdout.take());
    let out = child.wait_with_output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!err.contains("panicked"), "{err}");

    // Warnings go to stderr; redirected, they carry no ANSI escape codes.
    let out = Command::new(RECS)
        .args(["serve", "--registry", "/nonexistent-registry"])
        .env("RUST_LOG", "info")
        .output()
        .unwrap();
    assert!(
        !out.stderr.contains(&0x1b),
        "{:?}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Publishing is not switching: a second `recs train` names what is still served and
/// the command that would switch; `v_popularity` is published next to the first ALS
/// version and `--model popularity` publishes a ranking alone.
#[test]
fn train_says_what_is_served_and_publishes_popularity() {
    let dir = tempfile::tempdir().unwrap();
    let reg = dir.path().join("registry");
    let reg_s = reg.to_str().unwrap();
    let data = dir.path().join("data");
    let ratings = data.join("ratings.csv");
    let out = recs(&[
        "gen-data",
        "--out",
        data.to_str().unwrap(),
        "--users",
        "60",
        "--items",
        "40",
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let train = |extra: &[&str]| {
        let mut args = vec![
            "train",
            "--ratings",
            ratings.to_str().unwrap(),
            "--registry",
            reg_s,
            "--factors",
            "8",
            "--iterations",
            "3",
            "--no-gate",
        ];
        args.extend_from_slice(extra);
        let out = recs(&args);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stderr).unwrap()
    };
    let first = train(&["--version", "v0.1"]);
    assert!(first.contains("published v_popularity"), "{first}");
    let second = train(&["--version", "v0.2"]);
    assert!(second.contains("latest.txt -> v0.2"), "{second}");
    assert!(
        second.contains("serving v0.1 (active.json); to serve v0.2: recs switch --registry"),
        "{second}"
    );
    assert!(second.contains("v_popularity already exists"), "{second}");
    // verify with no version checks what is served (v0.1), not latest.txt.
    let v = recs(&["verify", "--registry", reg_s]);
    assert!(
        String::from_utf8_lossy(&v.stdout).starts_with("v0.1: OK"),
        "{v:?}"
    );
    let v = recs(&["verify", "--registry", reg_s, "v_popularity", "--json"]);
    let j: serde_json::Value = serde_json::from_slice(&v.stdout).unwrap();
    assert_eq!(j["model_name"], "popularity");
    let als = recs(&["verify", "--registry", reg_s, "v0.1", "--json"]);
    let als: serde_json::Value = serde_json::from_slice(&als.stdout).unwrap();
    assert_eq!(j["items"], als["items"], "same training data, same items");
    let alone = train(&["--model", "popularity", "--version", "v_pop2"]);
    assert!(alone.contains("to serve v_pop2: recs switch"), "{alone}");
    // An existing name is refused, not overwritten.
    let again = recs(&[
        "train",
        "--ratings",
        ratings.to_str().unwrap(),
        "--registry",
        reg_s,
        "--model",
        "popularity",
        "--version",
        "v_pop2",
    ]);
    assert!(!again.status.success());
    assert!(String::from_utf8_lossy(&again.stderr).contains("already exists"));
}

fn stderr(out: &std::process::Output) -> String {
    String::from_utf8_lossy(&out.stderr).to_string()
}

/// The CLI refuses what it cannot do, with the reason, and writes nothing.
#[test]
fn mistakes_are_refused_with_the_reason() {
    let (dir, reg) = two_versions();
    // A registry folder that does not exist is an error everywhere.
    let missing = dir.path().join("no-such").display().to_string();
    for args in [
        vec!["rollout", "status"],
        vec!["switch", "v0.1"],
        vec!["verify"],
        vec!["rollback"],
    ] {
        let mut a = args.clone();
        a.extend(["--registry", &missing]);
        let out = recs(&a);
        assert!(!out.status.success(), "{args:?} exited 0");
        assert!(
            stderr(&out).contains("does not exist"),
            "{args:?}: {}",
            stderr(&out)
        );
    }
    // An unknown version names the registry and lists what it has.
    let out = recs(&["switch", "--registry", &reg, "v9.9"]);
    let msg = stderr(&out);
    assert!(!out.status.success());
    assert!(msg.contains(&reg) && msg.contains("v0.1, v0.2"), "{msg}");
    // verify --json prints JSON on failure too, and exits 1.
    let out = recs(&["verify", "--registry", &reg, "--json", "v9.9"]);
    assert_eq!(out.status.code(), Some(1));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["ok"], false);
    assert!(v["error"].as_str().unwrap().contains("v0.1, v0.2"), "{v}");

    // rollout update with nothing to change writes nothing.
    let active = std::path::Path::new(&reg).join("active.json");
    let before = std::fs::read(&active).ok();
    let out = recs(&["rollout", "update", "--registry", &reg]);
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("nothing to change"),
        "{}",
        stderr(&out)
    );
    assert_eq!(std::fs::read(&active).ok(), before);
    // A canary equal to the primary is refused.
    let out = recs(&[
        "rollout",
        "update",
        "--registry",
        &reg,
        "--strategy",
        "canary",
        "--canary-version",
        "v0.1",
        "--canary-percentage",
        "10",
    ]);
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("is the primary version"),
        "{}",
        stderr(&out)
    );
    assert_eq!(std::fs::read(&active).ok(), before);
}

/// `recs rollback`: active.json's previous version, or a clear refusal.
#[test]
fn rollback_goes_to_the_recorded_previous_version_or_says_why_not() {
    let (_dir, reg) = two_versions();
    let active = std::path::Path::new(&reg).join("active.json");
    // gen-data pinned v0.1 before publishing v0.2: no previous version yet.
    let out = recs(&["rollback", "--registry", &reg]);
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("no previous version"),
        "{}",
        stderr(&out)
    );

    let out = recs(&["switch", "--registry", &reg, "v0.2"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let out = recs(&["rollback", "--registry", &reg]);
    assert!(out.status.success(), "{}", stderr(&out));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(
        (v["model_version"].as_str(), v["previous_version"].as_str()),
        (Some("v0.1"), Some("v0.2"))
    );
    assert!(
        stderr(&out).contains("rolled back: v0.2 -> v0.1"),
        "{}",
        stderr(&out)
    );

    // A hand-corrupted active.json: a clear refusal, the file left as it was.
    std::fs::write(&active, b"{\"active_version\": ").unwrap();
    let out = recs(&["rollback", "--registry", &reg]);
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("cannot roll back"),
        "{}",
        stderr(&out)
    );
    assert_eq!(std::fs::read(&active).unwrap(), b"{\"active_version\": ");
}

/// An S3 registry without a region is one clear line, not the SDK's request error.
#[test]
fn a_missing_aws_region_is_one_clear_line() {
    let dir = tempfile::tempdir().unwrap();
    let out = Command::new(RECS)
        .args(["verify", "--registry", "s3://some-bucket/registry", "v0.1"])
        .env("RUST_LOG", "off")
        .env_remove("AWS_REGION")
        .env_remove("AWS_DEFAULT_REGION")
        .env_remove("AWS_PROFILE")
        .env("AWS_CONFIG_FILE", dir.path().join("no-config"))
        .env(
            "AWS_SHARED_CREDENTIALS_FILE",
            dir.path().join("no-credentials"),
        )
        .env("AWS_EC2_METADATA_DISABLED", "true")
        .env("HOME", dir.path())
        .output()
        .unwrap();
    assert!(!out.status.success());
    let msg = stderr(&out);
    assert!(
        msg.contains("no AWS region is set: set AWS_REGION"),
        "{msg}"
    );
    assert_eq!(msg.trim().lines().count(), 1, "{msg}");
}

/// `curl` with a header: (status, body).
fn curl_status(url: &str, header: &str) -> (u16, String) {
    let out = Command::new("curl")
        .args(["-sS", "-H", header, "-w", "\n%{http_code}", url])
        .output()
        .expect("curl is installed");
    let text = String::from_utf8(out.stdout).unwrap();
    let (body, code) = text.rsplit_once('\n').unwrap();
    (code.trim().parse().unwrap(), body.to_string())
}

/// A drill's injected 500 is traced as a 500 (one record: it was traced as a 200
/// and logged twice), a 400 as a 400.
#[test]
fn an_injected_500_is_traced_as_500() {
    let (dir, reg) = two_versions();
    let faults = dir.path().join("faults.json");
    std::fs::write(&faults, br#"{"error_ratio": 1.0}"#).unwrap();
    let mut child = Command::new(RECS)
        .args(["serve", "--registry", &reg, "--port", "0"])
        .env("RUST_LOG", "warn")
        .env("RECS_FAULT_INJECTION", "1")
        .env("RECS_FAULT_FILE", &faults)
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stderr.take().unwrap());
    let mut line = String::new();
    let base = loop {
        line.clear();
        assert!(lines.read_line(&mut line).unwrap() > 0, "recs serve exited");
        if let Some(b) = line
            .split_whitespace()
            .find_map(|w| w.strip_suffix("/healthz"))
        {
            break b.to_string();
        }
    };
    let (status, _) = curl_status(&format!("{base}/recommend/1?k=3"), "X-Request-ID: injected");
    assert_eq!(status, 500);
    let (status, _) = curl_status(&format!("{base}/recommend/1?k=0"), "X-Request-ID: refused");
    assert_eq!(status, 500, "the fault applies to every recommend request");
    std::fs::write(&faults, br#"{"error_ratio": 0.0}"#).unwrap();
    std::thread::sleep(std::time::Duration::from_millis(50));
    let (status, _) = curl_status(&format!("{base}/recommend/1?k=0"), "X-Request-ID: bad-k");
    assert_eq!(status, 400);
    for (id, want) in [("injected", 500), ("bad-k", 400)] {
        let (status, body) = curl_status(&format!("{base}/trace/{id}"), "Accept: application/json");
        assert_eq!(status, 200, "{body}");
        let v: serde_json::Value = serde_json::from_str(&body).unwrap();
        assert_eq!(v["trace"]["status"], want, "{id}: {body}");
        assert_eq!(
            v["trace"]["movie_ids"],
            serde_json::json!([]),
            "{id}: {body}"
        );
    }
    child.kill().unwrap();
    child.wait().unwrap();
}
