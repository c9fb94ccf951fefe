//! Catalog-aware serving through the app, on a folder registry of synthetic data
//! with its titles file: genre and year filters, explanations, similar movies, and
//! takedowns that reach a second instance on its next poll without a version change.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use bytes::Bytes;
use e2e_tests::{block_on, call_all, get, items, json};
use recs_core::{PopularityArtifacts, Registry};
use recs_serve::{Config, Service};
use recs_train::gen_data::{generate, GenConfig, Synthetic};

fn config() -> GenConfig {
    GenConfig {
        users: 80,
        items: 90,
        seed: 11,
        ..GenConfig::default()
    }
}

/// The titles file read back here, by hand: id -> (genres, year).
fn catalog(path: &std::path::Path) -> HashMap<i64, (Vec<String>, Option<i32>)> {
    let text = std::fs::read_to_string(path).unwrap();
    text.lines()
        .skip(1)
        .map(|line| {
            let (id, rest) = line.split_once(',').unwrap();
            let (title, genres) = rest.rsplit_once(',').unwrap();
            let year = title
                .trim_end_matches('"')
                .strip_suffix(')')
                .and_then(|t| t.rsplit_once('('))
                .and_then(|(_, y)| y.parse().ok());
            let genres = genres.split('|').map(String::from).collect();
            (id.parse().unwrap(), (genres, year))
        })
        .collect()
}

struct Setup {
    dir: tempfile::TempDir,
    data: Synthetic,
}

/// A registry with v0.1 (planted factors, fold-in parameters) and the titles file.
async fn setup() -> Setup {
    let dir = tempfile::tempdir().unwrap();
    let registry = Registry::open(dir.path().to_str().unwrap()).unwrap();
    let data = generate(&config());
    let mut artifacts = data.planted_artifacts();
    artifacts.model_meta["regularization"] = serde_json::json!(0.1);
    artifacts.model_meta["alpha"] = serde_json::json!(2.0);
    registry.publish("v0.1", &artifacts).await.unwrap();
    data.write_titles_csv(&dir.path().join("movie_titles.csv"))
        .unwrap();
    Setup { dir, data }
}

async fn start(location: &str) -> Arc<Service> {
    Arc::new(
        Service::start(Config {
            registry: location.to_string(),
            ..Config::default()
        })
        .await,
    )
}

fn post(uri: &str, body: serde_json::Value) -> http::Request<Bytes> {
    http::Request::builder()
        .method("POST")
        .uri(uri)
        .header("content-type", "application/json")
        .body(Bytes::from(body.to_string()))
        .unwrap()
}

#[test]
fn genre_and_year_filters_return_the_unfiltered_ranking_restricted_to_what_passes() {
    block_on(async {
        let s = setup().await;
        let cat = catalog(&s.dir.path().join("movie_titles.csv"));
        let svc = start(s.dir.path().to_str().unwrap()).await;
        let all = json(&call_all(&svc, &get("/recommend/3?k=90", &[])).await);
        let ranking = items(&all);
        let genre = cat[&ranking[0]].0[0].clone();
        let years: Vec<i32> = cat.values().filter_map(|c| c.1).collect();
        let mid = (years.iter().min().unwrap() + years.iter().max().unwrap()) / 2;
        type Passes<'a> = Box<dyn Fn(i64) -> bool + 'a>;
        let cases: Vec<(String, Passes)> = vec![
            (
                format!("genres={genre}"),
                Box::new(|id| cat[&id].0.contains(&genre)),
            ),
            (
                format!("exclude_genres={genre}"),
                Box::new(|id| !cat[&id].0.contains(&genre)),
            ),
            (
                format!("year_min={mid}"),
                Box::new(|id| cat[&id].1.is_some_and(|y| y >= mid)),
            ),
            (
                format!("year_max={mid}&genres={genre}"),
                Box::new(|id| cat[&id].1.is_some_and(|y| y <= mid) && cat[&id].0.contains(&genre)),
            ),
        ];
        for (q, passes) in cases {
            let resp = call_all(&svc, &get(&format!("/recommend/3?k=7&{q}"), &[])).await;
            assert_eq!(resp.status(), 200, "{q}: {}", json(&resp));
            let body = json(&resp);
            let want: Vec<i64> = ranking
                .iter()
                .copied()
                .filter(|&id| passes(id))
                .take(7)
                .collect();
            assert_eq!(items(&body), want, "{q}");
            let passing = cat.keys().filter(|&&id| passes(id)).count();
            assert_eq!(body["filter_passed"], passing, "{q}");
        }
        // The same filter on a fold-in (POST) and on a GET fold-in.
        let body = json(
            &call_all(
                &svc,
                &post(
                    "/recommend",
                    serde_json::json!({"items": [1, 2, 3], "k": 5, "genres": [genre]}),
                ),
            )
            .await,
        );
        assert!(
            items(&body).iter().all(|id| cat[id].0.contains(&genre)),
            "{body}"
        );
        let resp = call_all(
            &svc,
            &get(
                &format!("/recommend?history=1,2,3&exclude_genres={genre}"),
                &[],
            ),
        )
        .await;
        assert!(items(&json(&resp))
            .iter()
            .all(|id| !cat[id].0.contains(&genre)));
    });
}

#[test]
fn contradictory_or_unknown_filters_are_400s_that_name_the_problem() {
    block_on(async {
        let s = setup().await;
        let svc = start(s.dir.path().to_str().unwrap()).await;
        for (q, needle) in [
            ("genres=NoSuchGenre", "unknown genre \"NoSuchGenre\""),
            ("exclude_genres=drama", "the catalog's genres are:"),
            (
                "year_min=2001&year_max=2000",
                "year_min 2001 is greater than year_max 2000",
            ),
            ("year_min=abc", "year_min must be a year"),
            ("year_max=-5", "year_max must be a year"),
            ("explain=51", "explain must be an integer from 0 to 50"),
            ("genres=Drama&genres=Comedy", "more than once"),
        ] {
            let resp = call_all(&svc, &get(&format!("/recommend/1?{q}"), &[])).await;
            assert_eq!(resp.status(), 400, "{q}");
            let body = json(&resp);
            assert_eq!(body["error_type"], "invalid_input");
            assert!(
                body["detail"].as_str().unwrap().contains(needle),
                "{q}: {body}"
            );
        }
        let resp = call_all(
            &svc,
            &post(
                "/recommend",
                serde_json::json!({"items": [1], "year_min": 2000, "year_max": 1990}),
            ),
        )
        .await;
        assert_eq!(resp.status(), 400);
    });
}

#[test]
fn explanations_name_the_users_own_history_and_popularity_says_popular() {
    block_on(async {
        let s = setup().await;
        let svc = start(s.dir.path().to_str().unwrap()).await;
        let a = s.data.planted_artifacts();
        let row = a.users.iter().position(|&u| u == 4).unwrap();
        let history: HashSet<i64> = a
            .seen
            .row(row)
            .iter()
            .map(|&c| a.items[c as usize])
            .collect();
        let body = json(&call_all(&svc, &get("/recommend/4?k=5&explain=3", &[])).await);
        for rec in body["recommendations"].as_array().unwrap() {
            let because = rec["because"].as_array().unwrap();
            assert_eq!(because.len(), 3.min(history.len()));
            for b in because {
                assert!(history.contains(&b["movie_id"].as_i64().unwrap()), "{b}");
                assert!(b["title"].is_string() && b["contribution"].is_number());
            }
        }
        // Fold-in: the posted history is what explains.
        let body = json(
            &call_all(
                &svc,
                &post(
                    "/recommend",
                    serde_json::json!({"items": [7, 9], "explain": 5}),
                ),
            )
            .await,
        );
        for rec in body["recommendations"].as_array().unwrap() {
            let ids: HashSet<i64> = rec["because"]
                .as_array()
                .unwrap()
                .iter()
                .map(|b| b["movie_id"].as_i64().unwrap())
                .collect();
            assert_eq!(ids, HashSet::from([7, 9]));
        }
        let body = json(&call_all(&svc, &get("/recommend/99999?k=3&explain=2", &[])).await);
        assert_eq!(body["fallback"], "popularity");
        for rec in body["recommendations"].as_array().unwrap() {
            assert_eq!(rec["because"], "popular");
        }
        // No explain: no `because` at all.
        let body = json(&call_all(&svc, &get("/recommend/4?k=2", &[])).await);
        assert!(body["recommendations"][0].get("because").is_none());
    });
}

#[test]
fn similar_movies_leave_the_movie_out_and_refuse_unknown_movies_and_popularity_versions() {
    block_on(async {
        let s = setup().await;
        let location = s.dir.path().to_str().unwrap();
        let svc = start(location).await;
        let resp = call_all(&svc, &get("/similar/5?k=4", &[])).await;
        assert_eq!(resp.status(), 200);
        let body = json(&resp);
        assert_eq!(body["movie_id"], 5);
        let got = items(&body);
        assert_eq!(got.len(), 4);
        assert!(!got.contains(&5));
        let scores: Vec<f64> = body["similar"]
            .as_array()
            .unwrap()
            .iter()
            .map(|s| s["score"].as_f64().unwrap())
            .collect();
        assert!(
            scores.windows(2).all(|w| w[0] >= w[1]) && scores.iter().all(|s| s.abs() <= 1.0 + 1e-6)
        );
        let resp = call_all(&svc, &get("/similar/100000", &[])).await;
        assert_eq!(resp.status(), 404);
        assert_eq!(json(&resp)["error_type"], "unknown_item");
        let resp = call_all(&svc, &get("/similar/abc", &[])).await;
        assert_eq!(resp.status(), 400);
        // A popularity version: 409 naming it.
        let registry = Registry::open(location).unwrap();
        let a = s.data.planted_artifacts();
        let pop = PopularityArtifacts::from_interactions(&a.users, &a.items, &a.seen);
        registry
            .publish_popularity("v_popularity", &pop, false)
            .await
            .unwrap();
        svc.switch("v_popularity").await.unwrap();
        let resp = call_all(&svc, &get("/similar/5", &[])).await;
        assert_eq!(resp.status(), 409);
        let body = json(&resp);
        assert_eq!(body["error_type"], "not_supported");
        assert!(body["detail"].as_str().unwrap().contains("v_popularity"));
    });
}

#[test]
fn a_block_reaches_a_second_instance_on_its_next_poll_without_a_version_change() {
    block_on(async {
        let s = setup().await;
        let location = s.dir.path().to_str().unwrap();
        let (one, two) = (start(location).await, start(location).await);
        let top = |svc: Arc<Service>, q: &'static str| async move {
            let body = json(&call_all(&svc, &get(q, &[])).await);
            (items(&body), body["model"].clone())
        };
        let (before, model) = top(two.clone(), "/recommend/2?k=5").await;
        let (similar_before, _) = top(two.clone(), "/similar/5?k=5").await;
        let taken = [before[0], similar_before[0], 777_777];
        let resp = call_all(
            &one,
            &post(
                "/catalog/block",
                serde_json::json!({"movie_ids": taken, "reason": "legal hold"}),
            ),
        )
        .await;
        assert_eq!(resp.status(), 200, "{}", json(&resp));
        let body = json(&resp);
        assert_eq!(body["unknown"], serde_json::json!([777_777]));
        assert_eq!(body["revision"], 1);
        // The writer applies it at once; the other instance on its next poll.
        let (now, _) = top(one.clone(), "/recommend/2?k=5").await;
        assert!(!now.contains(&before[0]));
        let (still, _) = top(two.clone(), "/recommend/2?k=5").await;
        assert_eq!(still, before, "no poll yet");
        two.refresh().await;
        let (after, model_after) = top(two.clone(), "/recommend/2?k=5").await;
        assert_eq!(model_after, model, "the version served does not change");
        assert!(!after.contains(&before[0]) && !after.contains(&similar_before[0]));
        // Every route that returns movies: similar, popularity fallback, fold-in.
        let (similar_after, _) = top(two.clone(), "/similar/5?k=5").await;
        assert!(!similar_after.contains(&similar_before[0]));
        for q in ["/recommend/99999?k=90", "/recommend?history=1,2&k=90"] {
            let (got, _) = top(two.clone(), q).await;
            assert!(got.iter().all(|id| !taken.contains(id)), "{q}");
        }
        let listed = json(&call_all(&two, &get("/catalog/blocked", &[])).await);
        assert_eq!(listed["count"], 3);
        assert_eq!(listed["applied_revision"], 1);
        assert_eq!(listed["movies"][0]["reason"], "legal hold");
        let metrics =
            String::from_utf8_lossy(call_all(&two, &get("/metrics", &[])).await.body()).to_string();
        assert!(metrics.contains("catalog_blocked_items 3"), "{metrics}");
        assert!(
            metrics.contains("catalog_block_updates_total 1"),
            "{metrics}"
        );
        // Unblock: back on the next poll.
        let resp = call_all(
            &one,
            &post(
                "/catalog/unblock",
                serde_json::json!({"movie_ids": [before[0]]}),
            ),
        )
        .await;
        assert_eq!(json(&resp)["unblocked"], serde_json::json!([before[0]]));
        two.refresh().await;
        let (back, _) = top(two.clone(), "/recommend/2?k=5").await;
        assert_eq!(back[0], before[0]);
    });
}

#[test]
fn bad_block_requests_are_400s_and_write_nothing() {
    block_on(async {
        let s = setup().await;
        let svc = start(s.dir.path().to_str().unwrap()).await;
        let many: Vec<i64> = (0..1001).collect();
        for body in [
            serde_json::json!({"movie_ids": many}),
            serde_json::json!({"movie_ids": []}),
            serde_json::json!({"movie_ids": [-1]}),
            serde_json::json!({"movie_ids": ["1"]}),
            serde_json::json!({"ids": [1]}),
            serde_json::json!({"movie_ids": [1], "reason": "x".repeat(501)}),
        ] {
            let resp = call_all(&svc, &post("/catalog/block", body.clone())).await;
            assert_eq!(resp.status(), 400, "{body}");
            assert_eq!(json(&resp)["error_type"], "invalid_input");
        }
        let resp = call_all(
            &svc,
            &post(
                "/catalog/unblock",
                serde_json::json!({"movie_ids": [1], "reason": "r"}),
            ),
        )
        .await;
        assert_eq!(resp.status(), 400);
        assert!(!s.dir.path().join("blocked.json").exists());
        let resp = call_all(&svc, &get("/catalog/block", &[])).await;
        assert_eq!(resp.status(), 405);
    });
}

#[test]
fn a_batch_equals_recommend_for_every_user_in_the_file() {
    block_on(async {
        let s = setup().await;
        let location = s.dir.path().to_str().unwrap();
        let svc = start(location).await;
        let cat = catalog(&s.dir.path().join("movie_titles.csv"));
        let genre = cat[&1].0[0].clone();
        // A takedown in force, and a filter, on both sides.
        let resp = call_all(
            &svc,
            &post(
                "/catalog/block",
                serde_json::json!({"movie_ids": [1, 2, 3, 4, 5]}),
            ),
        )
        .await;
        assert_eq!(resp.status(), 200);
        let users: Vec<i64> = (1..=80).chain([5000, 5001]).collect();
        let input: String = users
            .iter()
            .map(|u| format!("{{\"userId\": \"{u}\"}}\n"))
            .collect();
        let in_path = s.dir.path().join("users.jsonl");
        let out_path = s.dir.path().join("out/users.jsonl.out");
        std::fs::write(&in_path, input).unwrap();
        let registry = Registry::open(location).unwrap();
        let prepared = recs_core::batch::prepare(&registry, None).await.unwrap();
        let filter = recs_core::filter::ItemFilter::new(
            &prepared.catalog,
            &[genre.as_str()],
            &[],
            None,
            None,
        )
        .unwrap();
        let summary = recs_core::batch::run_job(
            &prepared,
            in_path.to_str().unwrap(),
            out_path.to_str().unwrap(),
            10,
            &[],
            filter.as_ref(),
            &|_| {},
        )
        .await
        .unwrap();
        assert_eq!(
            (
                summary.lines,
                summary.answered,
                summary.fallback,
                summary.errors
            ),
            (82, 80, 2, 0)
        );
        let out = std::fs::read_to_string(&out_path).unwrap();
        let lines: Vec<serde_json::Value> = out
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        assert_eq!(lines.len(), users.len());
        for (user, line) in users.iter().zip(&lines) {
            assert_eq!(line["input"]["userId"], user.to_string());
            let body = json(
                &call_all(
                    &svc,
                    &get(&format!("/recommend/{user}?k=10&genres={genre}"), &[]),
                )
                .await,
            );
            let want: Vec<String> = items(&body).iter().map(|i| i.to_string()).collect();
            let got: Vec<String> = line["output"]["recommendedItems"]
                .as_array()
                .unwrap()
                .iter()
                .map(|v| v.as_str().unwrap().to_string())
                .collect();
            assert_eq!(got, want, "user {user}");
            let scores: Vec<&serde_json::Value> = body["recommendations"]
                .as_array()
                .unwrap()
                .iter()
                .map(|r| &r["score"])
                .collect();
            let got_scores: Vec<&serde_json::Value> = line["output"]["scores"]
                .as_array()
                .unwrap()
                .iter()
                .collect();
            assert_eq!(got_scores, scores, "user {user}: the same f32 scores");
            assert!(got
                .iter()
                .all(|id| !["1", "2", "3", "4", "5"].contains(&id.as_str())));
            assert_eq!(line["note"].is_string(), *user >= 5000);
        }
    });
}
