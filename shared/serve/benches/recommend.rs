//! `make bench`: in-process recommend latency (p50, p99) at three model sizes, each
//! next to the memory-bandwidth floor measured in the same run: a request must read
//! every item factor once, so bytes(item_factors) / bandwidth is the least it can take.
//!
//! Sizes: implicit's ml-100k model (from ../shared when present), a synthetic model
//! of ml-1m size (6,040 x 3,706, 64 factors) and one of ml-25m size (162,541 x 59,047,
//! 128 factors). The machine is shared: read the ratios, not the absolute numbers.

use std::hint::black_box;
use std::path::Path;
use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use recs_core::CsrPattern;
use recs_core::Titles;
use recs_core::{AlsModel, Factors};
use recs_core::{LoadedModel, Registry, VersionMeta};
use recs_serve::api;
use recs_serve::{Config, Service};
use tower::ServiceExt;

/// One request through the app, as the Lambda runtime and `axum::serve` call it
/// (`oneshot` on a clone of the router), the body collected.
async fn call(app: &axum::Router, req: &http::Request<Bytes>) -> http::Response<Bytes> {
    let req = http::Request::builder()
        .method(req.method().clone())
        .uri(req.uri().clone())
        .header(http::header::CONTENT_TYPE, "application/json")
        .body(axum::body::Body::from(req.body().clone()))
        .expect("request");
    let resp = match app.clone().oneshot(req).await {
        Ok(resp) => resp,
        Err(never) => match never {},
    };
    let (parts, body) = resp.into_parts();
    let body = axum::body::to_bytes(body, usize::MAX).await.expect("body");
    http::Response::from_parts(parts, body)
}

/// A small, fast, deterministic generator (splitmix64) for synthetic factors.
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

fn synthetic(users: usize, items: usize, factors: usize, seen_per_user: usize) -> LoadedModel {
    let mut rng = SplitMix(7);
    let uf = (0..users * factors).map(|_| rng.unit()).collect();
    let itf = (0..items * factors).map(|_| rng.unit()).collect();
    let rows = (0..users)
        .map(|_| {
            (0..seen_per_user)
                .map(|_| (rng.next() % items as u64) as u32)
                .collect()
        })
        .collect();
    let model = AlsModel::new(
        Factors {
            shape: vec![users, factors],
            data: uf,
        },
        Factors {
            shape: vec![items, factors],
            data: itf,
        },
        (1..=users as i64).collect(),
        (1..=items as i64).collect(),
        CsrPattern::from_rows(items, rows),
    )
    .expect("synthetic model is valid");
    // Hyper-parameters for fold-in; alpha != 1 so the (C_u - I) term is not zero.
    let meta = VersionMeta {
        raw: serde_json::json!({"metrics": {"regularization": 0.1, "alpha": 5.0}}),
        ..VersionMeta::default()
    };
    LoadedModel {
        version: "bench".into(),
        meta,
        model_meta: serde_json::Value::Null,
        model: recs_core::ServedModel::Als(model),
        artifact_sha: String::new(),
        artifact_size: 0,
        load_seconds: 0.0,
        item_attributes: Default::default(),
    }
}

/// Sequential read bandwidth in bytes/s: the best of several passes summing a
/// buffer far larger than the caches.
fn memory_bandwidth() -> f64 {
    let buf: Vec<f32> = (0..64 << 20).map(|i| (i % 7) as f32).collect(); // 256 MiB
    let mut best = f64::MAX;
    for _ in 0..5 {
        let t = Instant::now();
        let mut acc = [0f32; 16];
        for chunk in buf.chunks_exact(16) {
            for l in 0..16 {
                acc[l] += chunk[l];
            }
        }
        black_box(acc);
        best = best.min(t.elapsed().as_secs_f64());
    }
    (buf.len() * 4) as f64 / best
}

/// Peak FLOP/s of the scoring kernel in use: 64 item rows (L1-resident) scored
/// over and over, best of 5; one multiply-add is 2 FLOP.
fn peak_flops(f: usize) -> f64 {
    let rows = 64;
    let mut rng = SplitMix(3);
    let items: Vec<f32> = (0..rows * f).map(|_| rng.unit()).collect();
    let user: Vec<f32> = (0..f).map(|_| rng.unit()).collect();
    let mut out = vec![0f32; rows];
    let reps = 20_000;
    let mut best = f64::MAX;
    for _ in 0..5 {
        let t = Instant::now();
        for _ in 0..reps {
            recs_core::score::scores(black_box(&user), black_box(&items), &mut out);
            black_box(&out);
        }
        best = best.min(t.elapsed().as_secs_f64());
    }
    (2 * rows * f * reps) as f64 / best
}

/// Peak multiply-adds per second of the integer first pass (int8 items x int16
/// user), over 2,048 L2-resident rows, best of 5.
fn int_pass_peak(f: usize) -> f64 {
    let rows = 2_048;
    let mut rng = SplitMix(5);
    let items: Vec<f32> = (0..rows * f).map(|_| rng.unit()).collect();
    let user: Vec<f32> = (0..f).map(|_| rng.unit()).collect();
    let q = recs_core::score::QuantizedItems::new(&items, f);
    let u = recs_core::score::QuantizedUser::new(&user).expect("quantizes");
    let simd = recs_core::score::Simd::detected();
    let mut out = vec![0i32; 256];
    let reps = 500;
    let mut best = f64::MAX;
    for _ in 0..5 {
        let t = Instant::now();
        for _ in 0..reps {
            for first in (0..rows).step_by(256) {
                q.raw_scores(simd, black_box(&u), first, &mut out);
                black_box(&out);
            }
        }
        best = best.min(t.elapsed().as_secs_f64());
    }
    (rows * f * reps) as f64 / best
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    sorted[((sorted.len() - 1) as f64 * p).round() as usize]
}

struct Row {
    name: String,
    shape: String,
    core_p50: f64,
    core_p99: f64,
    api_p50: f64,
    api_p99: f64,
    floor: f64,
    /// FLOP of one request's scan divided by the kernel's peak FLOP/s.
    compute_floor: f64,
    /// FLOP of one request's scan (2 x items x factors).
    flop_count: f64,
}

fn measure(name: &str, loaded: LoadedModel, calls: usize, bandwidth: f64) -> Row {
    let m = loaded.model.als().unwrap();
    let shape = format!("{} x {} x {}", m.n_users(), m.n_items(), m.factors());
    let floor = (m.n_items() * m.factors() * 4) as f64 / bandwidth;
    let peak = peak_flops(m.factors());
    let compute_floor = (2 * m.n_items() * m.factors()) as f64 / peak;
    let (n_items, n_factors) = (m.n_items(), m.factors());
    println!(
        "{name}: kernel peak {:.1} GFLOP/s ({}, f = {}, L1-resident)",
        peak / 1e9,
        recs_core::score::Simd::detected().name(),
        m.factors()
    );
    let users: Vec<i64> = m.users().to_vec();
    let mut rng = SplitMix(11);
    let picks: Vec<usize> = (0..calls)
        .map(|_| (rng.next() % users.len() as u64) as usize)
        .collect();

    // The core: score every item, skip the seen ones, keep the top 10.
    for &u in picks.iter().take(calls / 10) {
        black_box(m.recommend_row(u, 10));
    }
    let mut core: Vec<f64> = picks
        .iter()
        .map(|&u| {
            let t = Instant::now();
            black_box(m.recommend_row(u, 10));
            t.elapsed().as_secs_f64()
        })
        .collect();

    // The int8-bounded scan must give the full f32 scan's top 10: count the users.
    if m.n_items() >= recs_core::model::QUANTIZED_MIN_ITEMS {
        let macs = int_pass_peak(m.factors());
        let int8_bytes = (m.n_items() * m.factors()) as f64;
        println!(
            "{name}: integer first pass peak {:.1} G multiply-adds/s (L2-resident); its compute floor {:.1} us, its bandwidth floor {:.1} us ({:.1} MB of int8)",
            macs / 1e9,
            int8_bytes / macs * 1e6,
            int8_bytes / bandwidth * 1e6,
            int8_bytes / 1e6
        );
        let checked = picks.len().min(1_000);
        let same = picks[..checked]
            .iter()
            .filter(|&&u| {
                let user = m.user_factors().row(u).to_vec();
                m.recommend_row(u, 10) == m.recommend_exact(&user, m.seen().row(u), 10)
            })
            .count();
        println!(
            "{name}: int8-bounded scan top-10 == full f32 scan top-10 for {same} of {checked} users ({:.2} %)",
            100.0 * same as f64 / checked as f64
        );
        let mut exact: Vec<f64> = picks[..checked]
            .iter()
            .map(|&u| {
                let user = m.user_factors().row(u).to_vec();
                let t = Instant::now();
                black_box(m.recommend_exact(&user, m.seen().row(u), 10));
                t.elapsed().as_secs_f64()
            })
            .collect();
        exact.sort_by(f64::total_cmp);
        // Before issue 14: one 16-lane `dot` per item row, in the same run.
        let items = m.item_factors().as_slice().expect("C order");
        let f = m.factors();
        let mut before: Vec<f64> = picks[..checked]
            .iter()
            .map(|&u| {
                let user = m.user_factors().row(u).to_vec();
                let seen = m.seen().row(u);
                let t = Instant::now();
                let mut top = recs_core::topk::TopK::new(10);
                let mut next = seen.iter().copied().peekable();
                for (row, item) in items.chunks_exact(f).enumerate() {
                    let row = row as u32;
                    if next.peek() == Some(&row) {
                        next.next();
                        continue;
                    }
                    top.push(recs_core::dot(&user, item), row);
                }
                black_box(top.into_sorted());
                t.elapsed().as_secs_f64()
            })
            .collect();
        before.sort_by(f64::total_cmp);
        println!(
            "{name}: before (16-lane dot per row) p50 {:.1} us, p99 {:.1} us",
            percentile(&before, 0.5) * 1e6,
            percentile(&before, 0.99) * 1e6
        );
        println!(
            "{name}: full f32 scan (blocked FMA kernel) p50 {:.1} us, p99 {:.1} us",
            percentile(&exact, 0.5) * 1e6,
            percentile(&exact, 0.99) * 1e6
        );
    }

    // The whole request path: parsing, validation, titles, JSON, metrics.
    let app = api::app(
        Arc::new(Service::with_model(
            Config::default(),
            loaded,
            Titles::default(),
        )),
        &api::Endpoint::ALL,
    );
    let requests: Vec<http::Request<Bytes>> = picks
        .iter()
        .map(|&u| {
            http::Request::builder()
                .uri(format!("/recommend/{}?k=10", users[u]))
                .body(Bytes::new())
                .expect("request")
        })
        .collect();
    // The API is async (admin routes do I/O); recommend never awaits, so a
    // current-thread runtime adds only its poll overhead.
    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .expect("runtime");
    let mut full: Vec<f64> = requests
        .iter()
        .map(|req| {
            let t = Instant::now();
            let resp = rt.block_on(call(&app, req));
            assert_eq!(resp.status(), 200);
            black_box(resp);
            t.elapsed().as_secs_f64()
        })
        .collect();
    core.sort_by(f64::total_cmp);
    full.sort_by(f64::total_cmp);
    Row {
        name: name.into(),
        shape,
        core_p50: percentile(&core, 0.5),
        core_p99: percentile(&core, 0.99),
        api_p50: percentile(&full, 0.5),
        api_p99: percentile(&full, 0.99),
        floor,
        compute_floor,
        flop_count: (2 * n_items * n_factors) as f64,
    }
}

/// Fold-in latency: `POST /recommend` for a user the model has never seen, whose
/// history is one training user's seen row; the core is the solve plus the scan.
fn measure_fold_in(loaded: LoadedModel, calls: usize) -> (f64, f64, f64, f64, f64) {
    let m = loaded.model.als().expect("the bench model is ALS");
    let params = recs_core::foldin::FoldInParams::from_meta(&loaded.meta.raw, &loaded.model_meta)
        .expect("bench meta has the parameters");
    let mut rng = SplitMix(13);
    let picks: Vec<usize> = (0..calls)
        .map(|_| (rng.next() % m.n_users() as u64) as usize)
        .collect();
    let history = |u: usize| -> Vec<u32> { m.seen().row(u).to_vec() };
    let mean_len = picks.iter().map(|&u| m.seen().row_len(u)).sum::<usize>() as f64 / calls as f64;
    let mut core: Vec<f64> = picks
        .iter()
        .map(|&u| {
            let rows = history(u);
            let t = Instant::now();
            let inter: Vec<(u32, f32)> = rows.iter().map(|&r| (r, 1.0)).collect();
            let x = m.fold_in(&inter, &params).expect("solves");
            black_box(m.recommend_vector(&x, &rows, 10));
            t.elapsed().as_secs_f64()
        })
        .collect();
    let requests: Vec<http::Request<Bytes>> = picks
        .iter()
        .map(|&u| {
            let ids: Vec<i64> = history(u).iter().map(|&r| m.item_id(r)).collect();
            http::Request::builder()
                .method("POST")
                .uri("/recommend")
                .body(Bytes::from(
                    serde_json::json!({"items": ids, "k": 10}).to_string(),
                ))
                .expect("request")
        })
        .collect();
    let app = api::app(
        Arc::new(Service::with_model(
            Config::default(),
            loaded,
            Titles::default(),
        )),
        &api::Endpoint::ALL,
    );
    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .expect("runtime");
    let mut full: Vec<f64> = requests
        .iter()
        .map(|req| {
            let t = Instant::now();
            let resp = rt.block_on(call(&app, req));
            assert_eq!(resp.status(), 200);
            black_box(resp);
            t.elapsed().as_secs_f64()
        })
        .collect();
    core.sort_by(f64::total_cmp);
    full.sort_by(f64::total_cmp);
    (
        mean_len,
        percentile(&core, 0.5),
        percentile(&core, 0.99),
        percentile(&full, 0.5),
        percentile(&full, 0.99),
    )
}

fn main() {
    // `cargo bench` passes --bench; a filter argument is not supported here.
    let bandwidth = memory_bandwidth();
    println!(
        "memory bandwidth (sequential read, best of 5): {:.1} GB/s",
        bandwidth / 1e9
    );
    let mut rows = Vec::new();

    let shared =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../../../shared/fixtures/implicit-ml100k");
    if shared.is_dir() {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        let registry = Registry::open(shared.to_str().expect("utf-8")).expect("registry");
        let loaded = rt
            .block_on(registry.load("v1.0"))
            .expect("implicit fixture loads");
        rows.push(measure("implicit ml-100k", loaded, 20_000, bandwidth));
    } else {
        println!("(skipping implicit ml-100k: ../shared/fixtures is not present)");
    }
    rows.push(measure(
        "synthetic ml-1m size",
        synthetic(6_040, 3_706, 64, 95),
        20_000,
        bandwidth,
    ));
    rows.push(measure(
        "synthetic ml-25m size",
        synthetic(162_541, 59_047, 128, 150),
        1_000,
        bandwidth,
    ));

    let us = |s: f64| format!("{:.1}", s * 1e6);
    println!();
    println!("| model | users x items x factors | core p50 (us) | core p99 (us) | API p50 (us) | API p99 (us) | bandwidth floor (us) | p50 / floor | compute floor at peak (us) | core p50 GFLOP/s |");
    println!("|---|---|---|---|---|---|---|---|---|---|");
    for r in &rows {
        let flop = r.compute_floor; // seconds at peak
        println!(
            "| {} | {} | {} | {} | {} | {} | {} | {:.2} | {} | {:.1} |",
            r.name,
            r.shape,
            us(r.core_p50),
            us(r.core_p99),
            us(r.api_p50),
            us(r.api_p99),
            us(r.floor),
            r.core_p50 / r.floor,
            us(flop),
            r.flop_count / r.core_p50 / 1e9
        );
    }
    println!();
    println!("core = AlsModel::recommend_row (score all items, skip seen, top-10);");
    println!(
        "API = recs_serve::api::app (oneshot) for GET /recommend/{{user}}?k=10 (validation, JSON, metrics)."
    );
    println!("floor = bytes of item factors / measured bandwidth; compute floor = 2 x items x factors / the kernel's peak FLOP/s;");
    println!("targets: API p99 < 200 us at ml-1m size, < 400 us at ml-25m size.");

    let (len, c50, c99, a50, a99) = measure_fold_in(synthetic(6_040, 3_706, 64, 95), 5_000);
    println!();
    println!("| fold-in (POST /recommend, new user) | history (mean items) | core p50 (us) | core p99 (us) | API p50 (us) | API p99 (us) |");
    println!("|---|---|---|---|---|---|");
    println!(
        "| synthetic ml-1m size, 6040 x 3706 x 64, alpha 5 | {len:.1} | {} | {} | {} | {} |",
        us(c50),
        us(c99),
        us(a50),
        us(a99)
    );
    println!("core = AlsModel::fold_in (Y'Y cached, one Cholesky solve) + recommend_vector; the target is API p99 < 300 us.");
}
