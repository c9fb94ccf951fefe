//! `recs split --method recbole`, `recs tune` and `recs eval --protocol recbole` on
//! synthetic data (`recs gen-data`), end to end through the binary.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::process::Command;

const RECS: &str = env!("CARGO_BIN_EXE_recs");

fn recs(args: &[&str]) -> std::process::Output {
    Command::new(RECS)
        .args(args)
        .env("RUST_LOG", "warn")
        .env_remove("MODEL_REGISTRY")
        .env_remove("RETUNE_EVERY")
        .output()
        .unwrap()
}

fn text(out: &std::process::Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

/// `recs gen-data` ratings (1-5 stars) in a temp folder.
fn ratings(users: usize, items: usize) -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let out = recs(&[
        "gen-data",
        "--out",
        s(dir.path()),
        "--users",
        &users.to_string(),
        "--items",
        &items.to_string(),
        "--ratings-per-user",
        "40",
        "--seed",
        "11",
    ]);
    assert!(out.status.success(), "{}", text(&out));
    let file = dir.path().join("ratings.csv");
    (dir, file)
}

/// (user, item) pairs of a split file.
fn pairs(file: &Path) -> Vec<(i64, i64)> {
    std::fs::read_to_string(file)
        .unwrap()
        .lines()
        .map(|l| {
            let mut f = l.split('\t').map(|x| x.parse::<i64>().unwrap());
            (f.next().unwrap(), f.next().unwrap())
        })
        .collect()
}

/// A recbole split of synthetic data: (dir, train, valid, test).
fn recbole_split() -> (tempfile::TempDir, PathBuf, PathBuf, PathBuf) {
    let (dir, file) = ratings(300, 200);
    let out_dir = dir.path().join("split");
    let out = recs(&[
        "split",
        "--ratings",
        s(&file),
        "--method",
        "recbole",
        "--seed",
        "5",
        "--out",
        s(&out_dir),
    ]);
    assert!(out.status.success(), "{}", text(&out));
    let (tr, va, te) = (
        out_dir.join("train.tsv"),
        out_dir.join("valid.tsv"),
        out_dir.join("test.tsv"),
    );
    (dir, tr, va, te)
}

#[test]
fn recbole_split_is_a_10_core_8_1_1_partition_of_the_positives_at_3() {
    let (dir, train, valid, test) = recbole_split();
    let (tr, va, te) = (pairs(&train), pairs(&valid), pairs(&test));
    // Disjoint, and every user and item of the union has at least 10 positives.
    let all: Vec<(i64, i64)> = tr.iter().chain(&va).chain(&te).copied().collect();
    let set: HashSet<(i64, i64)> = all.iter().copied().collect();
    assert_eq!(set.len(), all.len(), "the three parts overlap");
    let mut per_user: BTreeMap<i64, usize> = BTreeMap::new();
    let mut per_item: HashMap<i64, usize> = HashMap::new();
    for (u, i) in &all {
        *per_user.entry(*u).or_default() += 1;
        *per_item.entry(*i).or_default() += 1;
    }
    assert!(per_user.values().all(|&n| n >= 10));
    assert!(per_item.values().all(|&n| n >= 10));
    // Per user: valid = test = floor(n / 10), train the rest.
    let count = |v: &[(i64, i64)], u: i64| v.iter().filter(|p| p.0 == u).count();
    for (&u, &n) in &per_user {
        assert_eq!(
            (count(&tr, u), count(&va, u), count(&te, u)),
            (n - 2 * (n / 10), n / 10, n / 10),
            "user {u} with {n}"
        );
    }
    // Positives are ratings >= 3: every pair is one in the source, and the filter
    // kept exactly the 10-core of them (recomputed here by brute force).
    let csv = std::fs::read_to_string(dir.path().join("ratings.csv")).unwrap();
    let mut pos: Vec<(i64, i64)> = csv
        .lines()
        .skip(1)
        .filter_map(|l| {
            let f: Vec<&str> = l.split(',').collect();
            (f[2].parse::<f64>().unwrap() >= 3.0)
                .then(|| (f[0].parse().unwrap(), f[1].parse().unwrap()))
        })
        .collect();
    loop {
        let mut u: HashMap<i64, usize> = HashMap::new();
        let mut i: HashMap<i64, usize> = HashMap::new();
        for p in &pos {
            *u.entry(p.0).or_default() += 1;
            *i.entry(p.1).or_default() += 1;
        }
        let before = pos.len();
        pos.retain(|p| u[&p.0] >= 10 && i[&p.1] >= 10);
        if pos.len() == before {
            break;
        }
    }
    let core: HashSet<(i64, i64)> = pos.into_iter().collect();
    assert_eq!(core, set);
}

#[test]
fn tune_is_deterministic_publishes_its_best_trial_and_eval_reproduces_the_protocol() {
    let (dir, train, valid, test) = recbole_split();
    let reg = dir.path().join("registry");
    let tune = |version: &str| {
        let out = recs(&[
            "tune",
            "--registry",
            s(&reg),
            "--ratings",
            s(&train),
            "--validation",
            s(&valid),
            "--trials",
            "6",
            "--budget-seconds",
            "300",
            "--seed",
            "3",
            "--threads",
            "2",
            "--version",
            version,
            "--json",
        ]);
        assert!(out.status.success(), "{}", text(&out));
        let err = String::from_utf8_lossy(&out.stderr).to_string();
        assert!(
            err.contains("ndcg@10") && err.contains("recall@20"),
            "{err}"
        );
        let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        v
    };
    let a = tune("v1.0");
    let b = tune("v2.0");
    let trials = |v: &serde_json::Value| -> Vec<(serde_json::Value, f64)> {
        v["tuning"]["trials"]
            .as_array()
            .unwrap()
            .iter()
            .map(|t| (t["params"].clone(), t["metric"].as_f64().unwrap()))
            .collect()
    };
    let (ta, tb) = (trials(&a), trials(&b));
    assert_eq!(ta, tb, "same seed, same trials");
    assert!(!ta.is_empty() && ta.len() <= 6);
    assert_eq!(a["tuning"]["best_params"], b["tuning"]["best_params"]);
    // The choice is the best trial (the first of equals).
    let max = ta.iter().map(|t| t.1).fold(f64::MIN, f64::max);
    let best = ta.iter().find(|t| t.1 == max).unwrap();
    assert_eq!(a["tuning"]["best_params"], best.0);
    // Published with those parameters, the search in meta.json.
    let meta: serde_json::Value =
        serde_json::from_slice(&std::fs::read(reg.join("v1.0/meta.json")).unwrap()).unwrap();
    let m = &meta["metrics"];
    for k in [
        "factors",
        "regularization",
        "alpha",
        "reg_exponent",
        "iterations",
    ] {
        assert_eq!(m[k], best.0[k], "{k}");
    }
    assert_eq!(m["tuning"]["best_params"], best.0);
    assert_eq!(meta["trained_by"], "recs tune");
    // Gated on the validation file: R@20, coverage and bias are in the card.
    let card = &m["offline_metrics"]["als"];
    for k in [
        "NDCG@10",
        "R@10",
        "R@20",
        "MAP@10",
        "coverage@10",
        "popularity_bias@10",
    ] {
        assert!(card[k].as_f64().is_some(), "{k} missing: {card}");
    }

    // recs eval --protocol recbole on the source = --test test --mask valid.
    let source = dir.path().join("ratings.csv");
    let e1 = recs(&[
        "eval",
        "--registry",
        s(&reg),
        "--version",
        "v1.0",
        "--protocol",
        "recbole",
        "--ratings",
        s(&source),
        "--seed",
        "5",
    ]);
    assert!(e1.status.success(), "{}", text(&e1));
    let e2 = recs(&[
        "eval",
        "--registry",
        s(&reg),
        "--version",
        "v1.0",
        "--test",
        s(&test),
        "--mask",
        s(&valid),
    ]);
    assert!(e2.status.success(), "{}", text(&e2));
    let e3 = recs(&[
        "eval",
        "--registry",
        s(&reg),
        "--version",
        "v1.0",
        "--test",
        s(&test),
    ]);
    let (j1, j2, j3): (serde_json::Value, serde_json::Value, serde_json::Value) = (
        serde_json::from_slice(&e1.stdout).unwrap(),
        serde_json::from_slice(&e2.stdout).unwrap(),
        serde_json::from_slice(&e3.stdout).unwrap(),
    );
    assert_eq!(j1["als"], j2["als"]);
    assert!(j1["protocol"].as_str().unwrap().starts_with("recbole"));
    // Masking valid items can only help: they are never test items.
    assert!(
        j2["als"]["NDCG@10"].as_f64().unwrap() >= j3["als"]["NDCG@10"].as_f64().unwrap(),
        "{j2} {j3}"
    );
    assert_ne!(j2["als"], j3["als"]);
}

#[test]
fn tune_refuses_bad_flags_with_clear_errors() {
    let (dir, train, valid, _test) = recbole_split();
    let reg = dir.path().join("registry");
    let base = ["tune", "--registry", s(&reg), "--ratings", s(&train)];
    let run = |extra: &[&str]| {
        let mut args: Vec<&str> = base.to_vec();
        args.extend_from_slice(extra);
        let out = recs(&args);
        assert!(!out.status.success(), "{args:?} should fail");
        text(&out)
    };
    assert!(run(&["--budget-seconds", "0"]).contains("--budget-seconds must be at least 1"));
    assert!(run(&["--trials", "0"]).contains("--trials must be at least 1"));
    let t = run(&["--metric", "map@5"]);
    assert!(
        t.contains("unknown metric") && t.contains("ndcg@10 or recall@20"),
        "{t}"
    );
    let t = run(&["--validation", "/nonexistent/valid.tsv"]);
    assert!(t.contains("/nonexistent/valid.tsv"), "{t}");
    // Validation users TRAIN does not have.
    let strangers = dir.path().join("strangers.tsv");
    std::fs::write(&strangers, "999001\t1\n999002\t2\n").unwrap();
    let t = run(&["--validation", s(&strangers), "--trials", "2"]);
    assert!(
        t.contains("2 of 2 validation users are not in the training data"),
        "{t}"
    );
    // Nothing was published by any of them.
    assert!(!reg.join("latest.txt").exists());
    // A missing TRAIN file is named.
    let out = recs(&[
        "tune",
        "--registry",
        s(&reg),
        "--ratings",
        "/nonexistent/train.tsv",
        "--validation",
        s(&valid),
    ]);
    assert!(!out.status.success());
    assert!(
        text(&out).contains("/nonexistent/train.tsv"),
        "{}",
        text(&out)
    );
}

#[test]
fn tune_without_validation_holds_out_ten_percent_and_respects_the_budget() {
    let (dir, file) = ratings(400, 250);
    let reg = dir.path().join("registry");
    let t0 = std::time::Instant::now();
    let out = recs(&[
        "tune",
        "--registry",
        s(&reg),
        "--ratings",
        s(&file),
        "--budget-seconds",
        "2",
        "--trials",
        "5000",
        "--json",
        "--dry-run",
    ]);
    let wall = t0.elapsed().as_secs_f64();
    assert!(out.status.success(), "{}", text(&out));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let t = &v["tuning"];
    assert_eq!(t["budget_exhausted"], true);
    assert!(t["trials_run"].as_u64().unwrap() < 5000);
    assert!(t["search_seconds"].as_f64().unwrap() <= 2.5, "{t}");
    assert!(wall < 15.0, "whole run {wall} s");
    assert_eq!(t["validation"]["fraction"], 0.1);
    assert!(t["validation"]["pairs"].as_u64().unwrap() > 0);
    assert!(
        !reg.join("latest.txt").exists(),
        "a dry run publishes nothing"
    );
}
