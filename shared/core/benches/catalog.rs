//! `make bench` (catalog): what filters, explanations and batches cost, each next to
//! a baseline measured in the same run.
//!
//! - Filters: p50/p99 of `LoadedModel::answer` for a known user's top-10 with a
//!   genre filter passing 50 %, 5 % and 0.5 % of the catalogue, against the same
//!   requests unfiltered (ratio = filtered / unfiltered).
//! - Explanations: p50/p99 of the top-10 with `explain = 3`, against without.
//! - Batch: users per second of `recs_core::batch::run` (all cores), k = 10.
//!
//! Sizes: synthetic models of ml-1m size (6,040 x 3,706, 64 factors, 95 seen per
//! user) and ml-25m size (162,541 x 59,047, 128 factors, 150 seen per user), as the
//! recommend bench. The machine is shared: read the ratios, not the absolute numbers.

use std::hint::black_box;
use std::time::Instant;

use recs_core::batch::{self, BatchOptions};
use recs_core::filter::ItemFilter;
use recs_core::{AlsModel, CsrPattern, Factors, LoadedModel, Query, Titles, VersionMeta};

struct SplitMix(u64);
impl SplitMix {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    fn unit(&mut self) -> f32 {
        (self.next() >> 40) as f32 / (1u64 << 24) as f32 - 0.5
    }
}

fn synthetic(users: usize, items: usize, f: usize, seen: usize) -> LoadedModel {
    let mut rng = SplitMix(7);
    let uf = (0..users * f).map(|_| rng.unit()).collect();
    let itf = (0..items * f).map(|_| rng.unit()).collect();
    let rows = (0..users)
        .map(|_| {
            (0..seen)
                .map(|_| (rng.next() % items as u64) as u32)
                .collect()
        })
        .collect();
    let model = AlsModel::new(
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
        CsrPattern::from_rows(items, rows),
    )
    .expect("valid");
    LoadedModel {
        version: "bench".into(),
        meta: VersionMeta {
            raw: serde_json::json!({"metrics": {"regularization": 0.1, "alpha": 5.0}}),
            ..VersionMeta::default()
        },
        model_meta: serde_json::Value::Null,
        model: recs_core::ServedModel::Als(model),
        artifact_sha: String::new(),
        artifact_size: 0,
        load_seconds: 0.0,
        item_attributes: Default::default(),
    }
}

/// A catalogue whose genres pass 50 %, 5 % and 0.5 % of the movies.
fn catalog(items: usize) -> Titles {
    let mut csv = String::from("movie_id,title,genres\n");
    let mut rng = SplitMix(9);
    for id in 1..=items {
        let r = rng.next() % 1000;
        let mut g = vec!["All"];
        if r < 500 {
            g.push("Half");
        }
        if r < 50 {
            g.push("Twentieth");
        }
        if r < 5 {
            g.push("TwoHundredth");
        }
        csv.push_str(&format!("{id},Movie {id} (2000),{}\n", g.join("|")));
    }
    Titles::parse("movie_titles.csv", csv.into_bytes()).expect("catalog")
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    sorted[((sorted.len() - 1) as f64 * p).round() as usize]
}

/// (p50, p99) in microseconds of `q` for `calls` random users.
fn time(m: &LoadedModel, calls: usize, q: &dyn Fn(i64) -> Query<'static>) -> (f64, f64) {
    let users = m.model.n_users() as u64;
    let mut rng = SplitMix(11);
    let mut t: Vec<f64> = (0..calls)
        .map(|_| {
            let u = (rng.next() % users) as i64 + 1;
            let s = Instant::now();
            black_box(m.answer(&q(u)).expect("answers"));
            s.elapsed().as_secs_f64() * 1e6
        })
        .collect();
    t.sort_by(f64::total_cmp);
    (percentile(&t, 0.5), percentile(&t, 0.99))
}

fn main() {
    let sizes = [
        ("ml-1m size", 6_040, 3_706, 64, 95, 5_000, 6_040),
        ("ml-25m size", 162_541, 59_047, 128, 150, 500, 20_000),
    ];
    let mut filter_rows = Vec::new();
    let mut explain_rows = Vec::new();
    let mut batch_rows = Vec::new();
    for (name, users, items, f, seen, calls, batch_users) in sizes {
        let m = synthetic(users, items, f, seen);
        let cat: &'static Titles = Box::leak(Box::new(catalog(items)));
        let plain = |k| {
            move |u| Query {
                user_id: Some(u),
                k,
                ..Default::default()
            }
        };
        // Warm up (and build the per-row genre table once, as the first request does).
        let any = Box::leak(Box::new(
            ItemFilter::new(cat, &["All"], &[], None, None)
                .unwrap()
                .unwrap(),
        ));
        time(&m, 200, &|u| Query {
            filter: Some(any),
            catalog: Some(cat),
            ..plain(10)(u)
        });
        let base = time(&m, calls, &plain(10));
        for (genre, share) in [
            ("Half", "50 %"),
            ("Twentieth", "5 %"),
            ("TwoHundredth", "0.5 %"),
        ] {
            let filter: &'static ItemFilter = Box::leak(Box::new(
                ItemFilter::new(cat, &[genre], &[], None, None)
                    .unwrap()
                    .unwrap(),
            ));
            let got = time(&m, calls, &|u| Query {
                filter: Some(filter),
                catalog: Some(cat),
                ..plain(10)(u)
            });
            filter_rows.push((name, share, base, got));
        }
        let explained = time(&m, calls, &|u| Query {
            explain: 3,
            ..plain(10)(u)
        });
        explain_rows.push((name, base, explained));
        let input: String = (1..=batch_users)
            .map(|u| format!("{{\"userId\": \"{u}\"}}\n"))
            .collect();
        let opts = BatchOptions {
            k: 10,
            ..Default::default()
        };
        let t = Instant::now();
        let (out, summary) = batch::run(&m, input.as_bytes(), &opts, &|_| {}).expect("batch");
        let secs = t.elapsed().as_secs_f64();
        black_box(out);
        batch_rows.push((name, summary.lines, secs, base));
    }
    println!("| filter (top-10, known user) | passes | unfiltered p50 / p99 (us) | filtered p50 / p99 (us) | p50 ratio | p99 ratio |");
    println!("|---|---|---|---|---|---|");
    for (name, share, b, g) in &filter_rows {
        println!(
            "| {name} | {share} | {:.0} / {:.0} | {:.0} / {:.0} | {:.2} | {:.2} |",
            b.0,
            b.1,
            g.0,
            g.1,
            g.0 / b.0,
            g.1 / b.1
        );
    }
    println!();
    println!("| explain=3 (top-10, known user) | without p50 / p99 (us) | with p50 / p99 (us) | p99 ratio |");
    println!("|---|---|---|---|");
    for (name, b, e) in &explain_rows {
        println!(
            "| {name} | {:.0} / {:.0} | {:.0} / {:.0} | {:.2} |",
            b.0,
            b.1,
            e.0,
            e.1,
            e.1 / b.1
        );
    }
    println!();
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    println!("| batch (k = 10, {cores} cores) | users | seconds | users/s | users/s / (cores / one request's p50) |");
    println!("|---|---|---|---|---|");
    for (name, n, secs, b) in &batch_rows {
        let rate = *n as f64 / secs;
        // The ceiling: every core answering back to back at the single-request p50.
        let ceiling = cores as f64 / (b.0 / 1e6);
        println!(
            "| {name} | {n} | {secs:.2} | {rate:.0} | {:.2} |",
            rate / ceiling
        );
    }
}
