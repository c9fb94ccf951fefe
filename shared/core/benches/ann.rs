//! HNSW (usearch) against the exact path on synthetic ALS-like item factors.
//!
//! For each catalogue size: build time and index size, recall@10 of the index's
//! top 10 against `AlsModel::recommend_scan` (the exact path, which is what
//! `recommend_vector` runs without an index) over 1,000 random users with no
//! exclusions, query p50/p99 of both paths and the speed-up of the medians, and a
//! small ef_search sweep. All in one run, on one thread.
//!
//! Factors: 64 dimensions, each row a mix of 16 shared directions (weights N(0,1))
//! plus N(0, 0.3²) noise per dimension, rescaled to a log-normal norm
//! (exp(N(0, 0.5²)), the long tail of popular items' larger ALS factors); users the
//! same way. 10^5 items always; 10^6 with `ANN_BENCH_1M=1` (a build of minutes).
//!
//! `cargo bench -p recs-core --bench ann` (run it pinned: `taskset -c 1 chrt -f 50`).

use std::hint::black_box;
use std::time::Instant;

use recs_core::ann::{AnnIndex, AnnParams};
use recs_core::{AlsModel, CsrPattern, Factors};

const F: usize = 64;
const TOPICS: usize = 16;
const QUERIES: usize = 1_000;
const K: usize = 10;

struct Rng(u64);
impl Rng {
    fn uniform(&mut self) -> f64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        ((self.0 >> 11) as f64 + 0.5) / (1u64 << 53) as f64
    }
    fn normal(&mut self) -> f32 {
        let (a, b) = (self.uniform(), self.uniform());
        ((-2.0 * a.ln()).sqrt() * (std::f64::consts::TAU * b).cos()) as f32
    }
}

fn rows(rng: &mut Rng, n: usize, basis: &[Vec<f32>]) -> Vec<f32> {
    let mut out = Vec::with_capacity(n * F);
    let mut w = [0f32; TOPICS];
    for _ in 0..n {
        w.iter_mut().for_each(|x| *x = rng.normal());
        let start = out.len();
        for j in 0..F {
            let mix: f32 = basis.iter().zip(&w).map(|(b, w)| b[j] * w).sum();
            out.push(mix + 0.3 * rng.normal());
        }
        let v = &mut out[start..];
        let norm = v.iter().map(|x| x * x).sum::<f32>().sqrt().max(1e-6);
        let scale = (0.5 * rng.normal()).exp() / norm;
        v.iter_mut().for_each(|x| *x *= scale);
    }
    out
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    sorted[((sorted.len() - 1) as f64 * p).round() as usize]
}

/// Per-query times in microseconds, sorted, and the results of each query.
fn timed<T>(queries: &[Vec<f32>], mut f: impl FnMut(&[f32]) -> T) -> (Vec<f64>, Vec<T>) {
    let mut times = Vec::with_capacity(queries.len());
    let mut out = Vec::with_capacity(queries.len());
    for q in queries {
        let t = Instant::now();
        let r = black_box(f(q));
        times.push(t.elapsed().as_secs_f64() * 1e6);
        out.push(r);
    }
    times.sort_by(f64::total_cmp);
    (times, out)
}

fn recall(exact: &[Vec<u32>], approx: &[Vec<u32>]) -> f64 {
    let hits: usize = exact
        .iter()
        .zip(approx)
        .map(|(e, a)| a.iter().filter(|r| e.contains(r)).count())
        .sum();
    hits as f64 / (exact.len() * K) as f64
}

fn run(n: usize, params: AnnParams, sweep: &[u32]) {
    let mut rng = Rng(0x5EED_0000 + n as u64);
    let basis: Vec<Vec<f32>> = (0..TOPICS)
        .map(|_| {
            (0..F)
                .map(|_| rng.normal() / (TOPICS as f32).sqrt())
                .collect()
        })
        .collect();
    let items = rows(&mut rng, n, &basis);
    let users = rows(&mut rng, QUERIES, &basis);
    let model = AlsModel::new(
        Factors {
            shape: vec![QUERIES, F],
            data: users.clone(),
        },
        Factors {
            shape: vec![n, F],
            data: items.clone(),
        },
        (0..QUERIES as i64).collect(),
        (0..n as i64).collect(),
        CsrPattern::from_rows(n, vec![Vec::new(); QUERIES]),
    )
    .expect("model");
    let started = Instant::now();
    let mut index = AnnIndex::build(&items, F, params).expect("build");
    let build_s = started.elapsed().as_secs_f64();
    let bytes = index.to_bytes().expect("serialise");
    let started = Instant::now();
    let reloaded = AnnIndex::from_bytes(&bytes).expect("reload");
    let load_s = started.elapsed().as_secs_f64();
    drop(reloaded);
    let queries: Vec<Vec<f32>> = users.chunks(F).map(<[f32]>::to_vec).collect();

    println!(
        "\n## {n} items x {F} factors; M={} ef_construction={} ef_search={}",
        params.connectivity, params.ef_construction, params.ef_search
    );
    println!(
        "build {build_s:.1} s on 1 thread ({:.0} items/s); hnsw.idx {:.1} MB \
         (item_factors.npy {:.1} MB); from_bytes (SHA-256 + load) {:.2} s",
        n as f64 / build_s,
        bytes.len() as f64 / 1e6,
        (n * F * 4) as f64 / 1e6,
        load_s
    );
    let (exact_t, exact) = timed(&queries, |q| {
        model
            .recommend_scan(q, &[], K)
            .iter()
            .map(|s| s.row)
            .collect::<Vec<u32>>()
    });
    println!(
        "exact (recommend_scan): p50 {:.0} us, p99 {:.0} us",
        percentile(&exact_t, 0.5),
        percentile(&exact_t, 0.99)
    );
    println!("ef_search | recall@10 | p50 us | p99 us | speed-up (exact p50 / hnsw p50)");
    for &ef in sweep {
        index.set_ef_search(ef).expect("ef");
        let (t, approx) = timed(&queries, |q| {
            index
                .top_k(&items, q, &[], None, K)
                .expect("k results")
                .iter()
                .map(|s| s.row)
                .collect::<Vec<u32>>()
        });
        let mark = if ef == params.ef_search {
            " (default)"
        } else {
            ""
        };
        println!(
            "{ef:>9}{mark} | {:.4} | {:.0} | {:.0} | {:.1}x",
            recall(&exact, &approx),
            percentile(&t, 0.5),
            percentile(&t, 0.99),
            percentile(&exact_t, 0.5) / percentile(&t, 0.5)
        );
    }
}

fn main() {
    // `cargo bench` passes --bench; `cargo test --benches` passes nothing and
    // should not spend minutes here.
    if !std::env::args().any(|a| a == "--bench") {
        println!("ann bench: run with `cargo bench -p recs-core --bench ann`");
        return;
    }
    let params = AnnParams::default();
    println!(
        "HNSW (usearch 2.26, f32 vectors, inner product) vs the exact scan; {QUERIES} queries, k={K}, no exclusions"
    );
    run(100_000, params, &[32, 64, 128, 256]);
    if std::env::var("ANN_BENCH_1M").is_ok_and(|v| v == "1") {
        run(1_000_000, params, &[64, 128, 256, 512]);
    } else {
        println!("\n(10^6 items: set ANN_BENCH_1M=1; the build takes minutes)");
    }
}
