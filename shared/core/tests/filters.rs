//! Request-time filters, similar movies and explanations, each against a brute
//! force written here: every scan path (full f32 scan, int8-bounded scan past
//! QUANTIZED_MIN_ITEMS, the gather of a narrow filter, the HNSW search) returns the
//! exact top k among the movies that pass.

use recs_core::filter::{Allowed, ItemFilter};
use recs_core::model::QUANTIZED_MIN_ITEMS;
use recs_core::{AlsModel, CsrPattern, Factors, LoadedModel, Query, ServedModel, Titles};

struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn unit(&mut self) -> f32 {
        (self.next() >> 40) as f32 / (1u64 << 24) as f32 - 0.5
    }
}

fn model(users: usize, items: usize, f: usize, seed: u64) -> AlsModel {
    let mut rng = Rng(seed | 1);
    let uf: Vec<f32> = (0..users * f).map(|_| rng.unit()).collect();
    let itf: Vec<f32> = (0..items * f).map(|_| rng.unit()).collect();
    let seen = (0..users)
        .map(|_| {
            (0..20)
                .map(|_| (rng.next() % items as u64) as u32)
                .collect()
        })
        .collect();
    AlsModel::new(
        Factors {
            shape: vec![users, f],
            data: uf,
        },
        Factors {
            shape: vec![items, f],
            data: itf,
        },
        (1..=users as i64).collect(),
        (1..=items as i64).collect(),
        CsrPattern::from_rows(items, seen),
    )
    .unwrap()
}

/// Sequential f64 dot products, sorted by (score desc, row asc): no code under test.
fn brute(m: &AlsModel, user: &[f32], skip: &dyn Fn(u32) -> bool, k: usize) -> Vec<(u32, f64)> {
    let f = m.factors();
    let items = m.item_factors().as_slice().unwrap();
    let mut all: Vec<(u32, f64)> = (0..m.n_items() as u32)
        .filter(|&r| !skip(r))
        .map(|r| {
            let y = &items[r as usize * f..(r as usize + 1) * f];
            let s = y
                .iter()
                .zip(user)
                .map(|(a, b)| f64::from(*a) * f64::from(*b))
                .sum();
            (r, s)
        })
        .collect();
    all.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
    all.truncate(k);
    all
}

fn same(got: &[recs_core::Scored], want: &[(u32, f64)], what: &str) {
    assert_eq!(got.len(), want.len(), "{what}: lengths");
    for (g, w) in got.iter().zip(want) {
        assert!(
            (f64::from(g.score) - w.1).abs() < 1e-4,
            "{what}: {g:?} vs {w:?}"
        );
        if g.row != w.0 {
            // Only a near-tie may swap places.
            let theirs = want.iter().find(|x| x.0 == g.row).map(|x| x.1);
            assert!(
                theirs.is_some_and(|s| (s - w.1).abs() < 1e-5),
                "{what}: row {} where the brute force has {}",
                g.row,
                w.0
            );
        }
    }
}

/// Filters passing about 50 %, 5 % and 0.5 % of the rows, and every 7th row.
fn filters(items: usize) -> Vec<Allowed> {
    let mut rng = Rng(99);
    let mut out: Vec<Allowed> = [2u64, 20, 200]
        .iter()
        .map(|&one_in| {
            Allowed::from_rows(
                items,
                (0..items as u32).filter(|_| rng.next().is_multiple_of(one_in)),
            )
        })
        .collect();
    out.push(Allowed::from_rows(items, (0..items as u32).step_by(7)));
    out
}

fn check_paths(m: &AlsModel, users: usize) {
    for allowed in filters(m.n_items()) {
        for u in 0..users {
            let user = m.user_factors().row(u).to_vec();
            let seen = m.seen().row(u).to_vec();
            let skip = |r: u32| seen.binary_search(&r).is_ok() || !allowed.contains(r);
            for k in [1, 10, 50] {
                let want = brute(m, &user, &skip, k);
                let what = format!("user {u} k {k} passing {}", allowed.count());
                same(
                    &m.recommend_vector_in(&user, &seen, Some(&allowed), k),
                    &want,
                    &what,
                );
                same(
                    &m.recommend_exact_in(&user, &seen, Some(&allowed), k),
                    &want,
                    &what,
                );
                same(
                    &m.recommend_scan_in(&user, &seen, Some(&allowed), k),
                    &want,
                    &what,
                );
            }
        }
    }
}

#[test]
fn filtered_top_k_equals_a_brute_force_scan_on_a_small_catalogue() {
    check_paths(&model(30, 3_000, 16, 5), 30);
}

#[test]
fn filtered_top_k_equals_a_brute_force_scan_on_the_int8_bounded_path() {
    check_paths(&model(8, QUANTIZED_MIN_ITEMS + 500, 32, 6), 8);
}

#[test]
fn a_filter_that_passes_fewer_than_k_returns_all_that_pass() {
    let m = model(3, 500, 8, 7);
    let allowed = Allowed::from_rows(500, [3, 10, 400]);
    let user = m.user_factors().row(0).to_vec();
    let got = m.recommend_vector_in(&user, &[10], Some(&allowed), 20);
    let mut rows: Vec<u32> = got.iter().map(|s| s.row).collect();
    rows.sort_unstable();
    assert_eq!(rows, [3, 400]);
}

#[cfg(feature = "ann")]
#[test]
fn filtered_top_k_on_the_hnsw_path_returns_only_passing_movies() {
    use recs_core::ann::{AnnIndex, AnnParams};
    let m = model(10, 4_000, 16, 8);
    let index = AnnIndex::build(
        m.item_factors().as_slice().unwrap(),
        16,
        AnnParams::default(),
    )
    .unwrap();
    let m = m.with_ann(index).unwrap();
    for allowed in filters(4_000) {
        for u in 0..10 {
            let user = m.user_factors().row(u).to_vec();
            let seen = m.seen().row(u).to_vec();
            let got = m.recommend_vector_in(&user, &seen, Some(&allowed), 10);
            assert_eq!(got.len(), 10.min(allowed.count()));
            for s in &got {
                assert!(allowed.contains(s.row) && seen.binary_search(&s.row).is_err());
            }
            // Scores are exact, and recall against the brute force is high.
            let skip = |r: u32| seen.binary_search(&r).is_ok() || !allowed.contains(r);
            let want = brute(&m, &user, &skip, 10);
            let hits = got
                .iter()
                .filter(|g| want.iter().any(|w| w.0 == g.row))
                .count();
            assert!(
                hits >= 8,
                "recall {hits}/10 with {} passing",
                allowed.count()
            );
        }
    }
}

/// Cosine similarity in f64, written from the definition.
fn brute_similar(m: &AlsModel, row: u32, k: usize) -> Vec<(u32, f64)> {
    let f = m.factors();
    let items = m.item_factors().as_slice().unwrap();
    let y = |r: u32| &items[r as usize * f..(r as usize + 1) * f];
    let norm = |v: &[f32]| v.iter().map(|x| f64::from(*x).powi(2)).sum::<f64>().sqrt();
    let mut all: Vec<(u32, f64)> = (0..m.n_items() as u32)
        .filter(|&r| r != row)
        .map(|r| {
            let dot: f64 = y(r)
                .iter()
                .zip(y(row))
                .map(|(a, b)| f64::from(*a) * f64::from(*b))
                .sum();
            (r, dot / norm(y(r)) / norm(y(row)))
        })
        .collect();
    all.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
    all.truncate(k);
    all
}

#[test]
fn similar_movies_are_the_highest_cosine_without_the_movie_itself() {
    let m = model(5, 2_000, 16, 9);
    for row in [0u32, 17, 1999] {
        let got = m.similar(row, &[], None, 10);
        same(&got, &brute_similar(&m, row, 10), &format!("row {row}"));
        assert!(got.iter().all(|s| s.row != row));
        let allowed = Allowed::from_rows(2_000, (0..2_000).step_by(3));
        let got = m.similar(row, &[3, 6], Some(&allowed), 10);
        assert!(got
            .iter()
            .all(|s| s.row % 3 == 0 && s.row != 3 && s.row != 6 && s.row != row));
    }
}

fn loaded(m: AlsModel) -> LoadedModel {
    LoadedModel {
        version: "v1.0".into(),
        meta: recs_core::VersionMeta {
            raw: serde_json::json!({"metrics": {"regularization": 0.1, "alpha": 2.0}}),
            ..Default::default()
        },
        model_meta: serde_json::Value::Null,
        model: ServedModel::Als(m),
        artifact_sha: String::new(),
        artifact_size: 0,
        load_seconds: 0.0,
        item_attributes: Default::default(),
    }
}

#[test]
fn answers_apply_blocks_and_genre_filters_from_the_catalog() {
    let lm = loaded(model(4, 300, 8, 10));
    // Movie ids 1..=300: multiples of 3 are Drama, the others Comedy; years 1900 + id.
    let csv: String = std::iter::once("movie_id,title,genres\n".to_string())
        .chain((1..=300).map(|i| {
            let g = if i % 3 == 0 { "Drama" } else { "Comedy" };
            format!("{i},Movie {i} ({}),{g}\n", 1900 + i)
        }))
        .collect();
    let catalog = Titles::parse("movie_titles.csv", csv.into_bytes()).unwrap();
    let filter = ItemFilter::new(&catalog, &["Drama"], &[], Some(1950), None)
        .unwrap()
        .unwrap();
    let unfiltered = lm
        .answer(&Query {
            user_id: Some(1),
            k: 300,
            ..Default::default()
        })
        .unwrap();
    let blocked = [60, 63];
    let q = Query {
        user_id: Some(1),
        k: 300,
        blocked: &blocked,
        filter: Some(&filter),
        catalog: Some(&catalog),
        ..Default::default()
    };
    let r = lm.answer(&q).unwrap();
    let ids =
        |r: &recs_core::Ranked| -> Vec<i64> { r.scored.iter().map(|s| s.row as i64 + 1).collect() };
    // The filtered answer is the unfiltered ranking restricted to what passes.
    let expect: Vec<i64> = ids(&unfiltered)
        .into_iter()
        .filter(|id| id % 3 == 0 && *id >= 50 && !blocked.contains(id))
        .collect();
    assert_eq!(ids(&r), expect);
    assert_eq!(r.passed, Some((50..=300).filter(|i| i % 3 == 0).count()));
    // Unknown users get the popularity ranking, filtered and without blocked movies.
    let pop = lm
        .answer(&Query {
            user_id: Some(999),
            ..q
        })
        .unwrap();
    assert_eq!(pop.fallback, Some("popularity"));
    assert!(ids(&pop)
        .iter()
        .all(|id| id % 3 == 0 && *id >= 50 && !blocked.contains(id)));
    // Similar movies too.
    let sim = lm.similar(3, &q).unwrap();
    assert!(ids(&sim)
        .iter()
        .all(|id| id % 3 == 0 && *id >= 50 && *id != 3 && !blocked.contains(id)));
    assert!(lm.similar(301, &q).is_err());
}

#[test]
fn explanations_add_up_to_the_fold_in_score() {
    let m = model(4, 400, 8, 11);
    let lm = loaded(m);
    let history = [5i64, 17, 90, 200];
    let r = lm
        .answer(&Query {
            user_id: None,
            k: 5,
            history: Some(&history),
            explain: 100,
            ..Default::default()
        })
        .unwrap();
    let Some(recs_core::Because::History(parts)) = &r.because else {
        panic!("no explanation: {:?}", r.because)
    };
    assert_eq!(parts.len(), r.scored.len());
    for (s, p) in r.scored.iter().zip(parts) {
        // All four history items, largest first, adding up to the fold-in's score.
        let mut got: Vec<i64> = p.iter().map(|(id, _)| *id).collect();
        assert!(p.windows(2).all(|w| w[0].1 >= w[1].1));
        got.sort_unstable();
        assert_eq!(got, history);
        let total: f64 = p.iter().map(|(_, c)| c).sum();
        assert!(
            (total - f64::from(s.score)).abs() < 1e-4,
            "{total} vs {}",
            s.score
        );
    }
    let top = lm
        .answer(&Query {
            user_id: None,
            k: 5,
            history: Some(&history),
            explain: 2,
            ..Default::default()
        })
        .unwrap();
    let Some(recs_core::Because::History(top)) = top.because else {
        panic!()
    };
    assert!(top.iter().zip(parts).all(|(t, p)| t[..] == p[..2]));
    // An unknown user with no history is answered by popularity, explained as such.
    let pop = lm
        .answer(&Query {
            user_id: Some(999),
            k: 5,
            explain: 3,
            ..Default::default()
        })
        .unwrap();
    assert_eq!(pop.because, Some(recs_core::Because::Popular));
}
