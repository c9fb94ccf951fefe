//! Registries written by other tools (../shared/fixtures): implicit's model must
//! serve implicit's own top-10 lists; the Python team's swapped v0.3 must be refused.

use e2e_tests::{block_on, get, json, service, shared_or_skip};
use recs_core::Registry;
use recs_core::Titles;

#[test]
fn needs_shared_implicit_ml100k_serves_implicits_top10_for_every_user() {
    let Some(shared) =
        shared_or_skip("needs_shared_implicit_ml100k_serves_implicits_top10_for_every_user")
    else {
        return;
    };
    let root = shared.join("fixtures/implicit-ml100k");
    let registry = Registry::open(root.to_str().unwrap()).unwrap();
    let version = block_on(registry.latest()).unwrap();
    let loaded = block_on(registry.load(&version)).unwrap();
    let titles = Titles::load(&shared.join("data/ml-100k/u.item")).unwrap();
    let svc = service(loaded, titles);

    let expected = std::fs::read_to_string(root.join("expected_top10.jsonl")).unwrap();
    let mut users = 0;
    let mut reordered = 0;
    for line in expected.lines() {
        let want: serde_json::Value = serde_json::from_str(line).unwrap();
        let user = want["user_id"].as_i64().unwrap();
        let resp = e2e_tests::route(&svc, &get(&format!("/recommend/{user}?k=10"), &[]));
        assert_eq!(resp.status(), 200, "user {user}");
        let body = json(&resp);
        assert!(body["fallback"].is_null(), "user {user} is in the model");
        let got_items = e2e_tests::items(&body);
        let got_scores: Vec<f64> = body["recommendations"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| r["score"].as_f64().unwrap())
            .collect();
        let want_items: Vec<i64> = want["items"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_i64().unwrap())
            .collect();
        let want_scores: Vec<f64> = want["scores"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_f64().unwrap())
            .collect();
        assert_eq!(got_items.len(), want_items.len(), "user {user}");
        for i in 0..want_items.len() {
            assert!(
                (got_scores[i] - want_scores[i]).abs() <= 1e-4,
                "user {user} rank {i}: score {} vs implicit's {}",
                got_scores[i],
                want_scores[i]
            );
            if got_items[i] != want_items[i] {
                // Only near-equal scores may trade places (or trade the 10th slot).
                let theirs = want_items.iter().position(|&m| m == got_items[i]);
                let their_score = theirs
                    .map(|j| want_scores[j])
                    .unwrap_or(want_scores[want_scores.len() - 1]);
                assert!(
                    (their_score - want_scores[i]).abs() < 1e-5 + 1e-6,
                    "user {user} rank {i}: {} instead of {} with distinct scores",
                    got_items[i],
                    want_items[i]
                );
                reordered += 1;
            }
        }
        // Titles come from u.item (Latin-1), not the "Movie <id>" fallback.
        let title = body["recommendations"][0]["title"].as_str().unwrap();
        assert!(!title.starts_with("Movie "), "user {user}: {title}");
        users += 1;
    }
    assert_eq!(users, 942);
    eprintln!("{users} users matched implicit's top-10; {reordered} near-tie swaps");

    // A user implicit never saw gets the popularity ranking, with a 200.
    let resp = e2e_tests::route(&svc, &get("/recommend/5000?k=10", &[]));
    assert_eq!(resp.status(), 200);
    let body = json(&resp);
    assert_eq!(body["fallback"], "popularity");
    assert_eq!(body["items"].as_array().unwrap().len(), 10);
}

/// implicit's own `similar_items` and `explain` on the same factors
/// (scripts/implicit_expect.sh: implicit from PyPI, a seeded sample of 200 movies and
/// 100 users' top-10): similar movies within 1e-4, explanations within 1e-3 in the
/// same order, each for at least 95 % of the sample.
#[test]
fn needs_shared_similar_movies_and_explanations_equal_implicits() {
    let Some(shared) =
        shared_or_skip("needs_shared_similar_movies_and_explanations_equal_implicits")
    else {
        return;
    };
    let root = shared.join("fixtures/implicit-ml100k");
    let registry = Registry::open(root.to_str().unwrap()).unwrap();
    let version = block_on(registry.latest()).unwrap();
    let out = tempfile::tempdir().unwrap();
    let expect_path = out.path().join("expect.json");
    let script =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../scripts/implicit_expect.sh");
    let status = std::process::Command::new("bash")
        .arg(script)
        .arg(root.join(&version))
        .arg(&expect_path)
        .status()
        .expect("bash");
    assert!(
        status.success(),
        "scripts/implicit_expect.sh failed (implicit from PyPI is needed)"
    );
    let expect: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&expect_path).unwrap()).unwrap();
    let loaded = block_on(registry.load(&version)).unwrap();
    let recs_core::ServedModel::Als(model) = &loaded.model else {
        panic!("not ALS")
    };
    let ids = |v: &serde_json::Value| -> Vec<i64> {
        v.as_array()
            .unwrap()
            .iter()
            .map(|x| x.as_i64().unwrap())
            .collect()
    };

    let similar = expect["similar"].as_object().unwrap();
    let mut equal = 0;
    for (movie, want) in similar {
        let movie: i64 = movie.parse().unwrap();
        let got = loaded
            .similar(
                movie,
                &recs_core::Query {
                    k: 10,
                    ..Default::default()
                },
            )
            .unwrap();
        let got_ids: Vec<i64> = got.scored.iter().map(|s| model.item_id(s.row)).collect();
        let scores: Vec<f64> = want["scores"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_f64().unwrap())
            .collect();
        let want_ids = ids(&want["items"]);
        // Scores within 1e-4 rank by rank; a movie may differ only where implicit's
        // score at that rank ties ours (equal item factors rank in any order).
        let same = got_ids.len() == want_ids.len()
            && got
                .scored
                .iter()
                .zip(&scores)
                .all(|(g, w)| (f64::from(g.score) - w).abs() <= 1e-4)
            && (0..got_ids.len()).all(|i| {
                got_ids[i] == want_ids[i]
                    || (f64::from(got.scored[i].score) - scores[i]).abs() <= 1e-6
            });
        equal += usize::from(same);
    }
    eprintln!(
        "similar: {equal} of {} movies equal implicit's similar_items",
        similar.len()
    );
    assert!(
        equal * 100 >= similar.len() * 95,
        "{equal} of {}",
        similar.len()
    );

    let params =
        recs_core::foldin::FoldInParams::from_meta(&loaded.meta.raw, &loaded.model_meta).unwrap();
    let (mut checked, mut equal) = (0, 0);
    for user in expect["explain"].as_array().unwrap() {
        let row = model.user_row(user["user_id"].as_i64().unwrap()).unwrap();
        let history: Vec<(u32, f32)> = model.seen().row(row).iter().map(|&r| (r, 1.0)).collect();
        for rec in user["recommendations"].as_array().unwrap() {
            let target = model.item_row(rec["movie_id"].as_i64().unwrap()).unwrap();
            let got = &model.explain(&history, &params, &[target], 3).unwrap()[0];
            let want = rec["because"].as_array().unwrap();
            checked += 1;
            // Contributions within 1e-3 in the same order (a movie may differ only
            // where two contributions tie).
            let same = got.len() == want.len()
                && got.iter().zip(want).all(|(&(r, c), w)| {
                    let wc = w[1].as_f64().unwrap();
                    (c - wc).abs() <= 1e-3
                        && (model.item_id(r) == w[0].as_i64().unwrap() || (c - wc).abs() <= 1e-9)
                });
            equal += usize::from(same);
        }
    }
    eprintln!("explain: {equal} of {checked} recommendations equal implicit's explain");
    assert!(
        checked >= 900 && equal * 100 >= checked * 95,
        "{equal} of {checked}"
    );

    // Through the app: explain=3 on /recommend gives the same contributions.
    let svc = service(loaded, Titles::default());
    let user = &expect["explain"][0];
    let uid = user["user_id"].as_i64().unwrap();
    let body = json(&e2e_tests::route(
        &svc,
        &get(&format!("/recommend/{uid}?k=10&explain=3"), &[]),
    ));
    for rec in body["recommendations"].as_array().unwrap() {
        let Some(want) = user["recommendations"]
            .as_array()
            .unwrap()
            .iter()
            .find(|r| r["movie_id"] == rec["movie_id"])
        else {
            continue;
        };
        let got: Vec<i64> = rec["because"]
            .as_array()
            .unwrap()
            .iter()
            .map(|b| b["movie_id"].as_i64().unwrap())
            .collect();
        let want: Vec<i64> = want["because"]
            .as_array()
            .unwrap()
            .iter()
            .map(|b| b[0].as_i64().unwrap())
            .collect();
        assert_eq!(got, want, "user {uid} movie {}", rec["movie_id"]);
    }
}

#[test]
fn needs_shared_seed_v03_is_refused_as_swapped() {
    let Some(shared) = shared_or_skip("needs_shared_seed_v03_is_refused_as_swapped") else {
        return;
    };
    let registry = Registry::open(shared.join("fixtures/seed-registry").to_str().unwrap()).unwrap();
    let err = block_on(registry.load("v0.3")).unwrap_err().to_string();
    for needle in ["swapped", "1443x64", "942x64", "942 users", "1443 items"] {
        assert!(err.contains(needle), "{needle:?} missing from: {err}");
    }
}

#[test]
fn the_committed_demo_registry_verifies_and_serves() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../model_registry");
    let registry = Registry::open(root.to_str().unwrap()).unwrap();
    let version = block_on(registry.latest()).unwrap();
    let loaded = block_on(registry.load(&version)).unwrap();
    assert!(
        loaded.meta.artifact_sha.is_some(),
        "demo version carries its checksum"
    );
    let titles = Titles::load(&root.join("movie_titles.csv")).unwrap();
    let svc = service(loaded, titles);
    let body = json(&e2e_tests::route(&svc, &get("/recommend/1?k=10", &[])));
    let recs = body["recommendations"].as_array().unwrap();
    assert_eq!(recs.len(), 10);
    assert!(recs
        .iter()
        .all(|r| r["title"].as_str().unwrap().starts_with("Synthetic Movie")));
}

#[test]
fn the_committed_demo_registry_holds_the_runbooks_versions() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../model_registry");
    let registry = Registry::open(root.to_str().unwrap()).unwrap();
    let versions = block_on(registry.versions()).unwrap();
    assert_eq!(versions, ["v0.1", "v0.2", "v_popularity"]);
    for (v, kind, factors) in [
        ("v0.1", "als", 128),
        ("v0.2", "als", 32),
        ("v_popularity", "popularity", 0),
    ] {
        let loaded = block_on(registry.load(v)).unwrap();
        assert!(
            loaded.meta.artifact_sha.is_some(),
            "{v} carries its checksum"
        );
        assert_eq!(
            (loaded.model.kind(), loaded.model.factors()),
            (kind, factors),
            "{v}"
        );
    }
}
