//! Synthetic interaction events for tests, the benchmark and demos: every user acts as
//! a Poisson process (exponential gaps, mean `mean_gap_secs`), so any window of the
//! same length looks alike and a baseline built from a long stretch matches a later
//! window; items are drawn by weight (the model's training interaction counts), ratings
//! from a fixed distribution, and a share of events are watches (no rating). A
//! [`Shift`] plants drift: ratings skewed low, a burst of items the model never saw.

use std::io::Write;
use std::path::Path;

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use rand_distr::{Distribution, Exp};

use crate::events::Event;
use recs_core::time::date_of_day;
use recs_core::{AlsModel, Store, StoreError};

/// MovieLens-like star shares (1..5).
const RATING_WEIGHTS: [f64; 5] = [0.06, 0.11, 0.27, 0.34, 0.22];
/// Ratings skewed low, for a planted shift.
const LOW_RATING_WEIGHTS: [f64; 5] = [0.35, 0.30, 0.20, 0.10, 0.05];

/// What to generate.
#[derive(Debug, Clone)]
pub struct SynthConfig {
    /// User ids; each one generates its own event stream.
    pub users: Vec<i64>,
    /// Item ids and their (unnormalised) weights.
    items: Vec<(i64, f64)>,
    /// Weights of ratings 1..5.
    rating_weights: [f64; 5],
    /// Mean seconds between two events of one user.
    pub mean_gap_secs: f64,
    /// Share of events that are watches (no rating).
    pub watch_share: f64,
    /// RNG seed: the same config and seed give the same events.
    seed: u64,
}

impl SynthConfig {
    /// The model's users, its items weighted by training interactions (+1), a 12 h
    /// mean gap, 20 % watches.
    pub fn from_model(model: &AlsModel, seed: u64) -> SynthConfig {
        let counts = model.seen().column_counts();
        SynthConfig {
            users: model.users().to_vec(),
            items: model
                .items()
                .iter()
                .zip(counts)
                .map(|(&id, c)| (id, c as f64 + 1.0))
                .collect(),
            rating_weights: RATING_WEIGHTS,
            mean_gap_secs: 43_200.0,
            watch_share: 0.2,
            seed,
        }
    }
}

/// Planted drift.
#[derive(Debug, Clone, Copy, Default)]
pub struct Shift {
    /// Redraw ratings from [`LOW_RATING_WEIGHTS`].
    low_ratings: bool,
    /// Share of events moved to items the model never saw (ids from `new_item_base`).
    new_item_share: f64,
    new_item_base: i64,
    /// How many distinct new items.
    new_items: i64,
}

impl Shift {
    /// Ratings skewed low and 30 % of events on 50 unseen items.
    pub fn planted(new_item_base: i64) -> Shift {
        Shift {
            low_ratings: true,
            new_item_share: 0.3,
            new_item_base,
            new_items: 50,
        }
    }
}

fn cumulative(weights: impl IntoIterator<Item = f64>) -> Vec<f64> {
    let mut acc = 0.0;
    weights
        .into_iter()
        .map(|w| {
            acc += w.max(0.0);
            acc
        })
        .collect()
}

fn draw(cum: &[f64], rng: &mut StdRng) -> usize {
    let x = rng.random_range(0.0..*cum.last().expect("non-empty weights"));
    cum.partition_point(|&c| c <= x).min(cum.len() - 1)
}

/// Events in `[start_ms, end_ms)`, sorted by time.
pub fn events(cfg: &SynthConfig, start_ms: i64, end_ms: i64) -> Vec<Event> {
    assert!(
        !cfg.users.is_empty() && !cfg.items.is_empty(),
        "empty config"
    );
    let mut rng = StdRng::seed_from_u64(cfg.seed);
    let items = cumulative(cfg.items.iter().map(|&(_, w)| w));
    let ratings = cumulative(cfg.rating_weights);
    let gap = Exp::new(1.0 / (cfg.mean_gap_secs * 1000.0)).expect("positive mean gap");
    let span = (end_ms - start_ms) as f64;
    let mut out = Vec::with_capacity(
        ((span / (cfg.mean_gap_secs * 1000.0)) * cfg.users.len() as f64) as usize + 16,
    );
    for &user in &cfg.users {
        // A Poisson process is memoryless: start at the window start.
        let mut t = start_ms as f64 + gap.sample(&mut rng);
        while t < end_ms as f64 {
            let item = cfg.items[draw(&items, &mut rng)].0;
            let rating = if rng.random_bool(cfg.watch_share.clamp(0.0, 1.0)) {
                None
            } else {
                Some((draw(&ratings, &mut rng) + 1) as f32)
            };
            out.push(Event {
                user,
                item,
                rating,
                ts_ms: Some(t as i64),
            });
            t += gap.sample(&mut rng);
        }
    }
    out.sort_by_key(|e| (e.ts_ms.unwrap_or_default(), e.user));
    out
}

/// Applies a planted shift (deterministic for a seed).
pub fn shift(events: &mut [Event], s: Shift, seed: u64) {
    let mut rng = StdRng::seed_from_u64(seed);
    let low = cumulative(LOW_RATING_WEIGHTS);
    for e in events.iter_mut() {
        if s.low_ratings && e.rating.is_some() {
            e.rating = Some((draw(&low, &mut rng) + 1) as f32);
        }
        if s.new_item_share > 0.0 && rng.random_bool(s.new_item_share.clamp(0.0, 1.0)) {
            e.item = s.new_item_base + rng.random_range(0..s.new_items.max(1));
        }
    }
}

/// Rate events as `{"user_id","movie_id","rating","ts"}` (ts in ms) and watch events
/// as `{"user_id","movie_id","timestamp","minute"}` (ISO time), as the Python
/// system's producers wrote them.
fn json_line(e: &Event) -> String {
    match e.rating {
        Some(r) => format!(
            r#"{{"user_id":{},"movie_id":{},"rating":{},"ts":{}}}"#,
            e.user,
            e.item,
            r,
            e.ts_ms.unwrap_or_default()
        ),
        None => format!(
            r#"{{"user_id":{},"movie_id":{},"timestamp":"{}.{:03}Z","minute":{}}}"#,
            e.user,
            e.item,
            &recs_core::time::rfc3339((e.ts_ms.unwrap_or_default() / 1000) as u64)[..19],
            e.ts_ms.unwrap_or_default() % 1000,
            e.item % 120
        ),
    }
}

/// The events as partitioned JSON-lines files: `(key, bytes)` with keys
/// `rate/<date>/part-NNNN.jsonl` and `watch/<date>/part-NNNN.jsonl`, at most
/// `per_file` lines each.
fn partitioned(events: &[Event], per_file: usize) -> Vec<(String, Vec<u8>)> {
    use std::collections::BTreeMap;
    let mut groups: BTreeMap<(String, &str), Vec<&Event>> = BTreeMap::new();
    for e in events {
        let kind = if e.rating.is_some() { "rate" } else { "watch" };
        groups
            .entry((
                date_of_day(e.ts_ms.unwrap_or_default().div_euclid(86_400_000)),
                kind,
            ))
            .or_default()
            .push(e);
    }
    let mut files = Vec::new();
    for ((date, kind), evs) in groups {
        for (n, chunk) in evs.chunks(per_file.max(1)).enumerate() {
            let mut bytes = Vec::with_capacity(chunk.len() * 72);
            for e in chunk {
                bytes.extend_from_slice(json_line(e).as_bytes());
                bytes.push(b'\n');
            }
            files.push((format!("{kind}/{date}/part-{:04}.jsonl", n + 1), bytes));
        }
    }
    files
}

/// Writes the events as partitioned JSON-lines files (`rate/<date>/part-NNNN.jsonl`,
/// `watch/...`, at most `per_file` lines each) under a store; returns the file count.
pub async fn write_events(
    store: &Store,
    events: &[Event],
    per_file: usize,
) -> Result<usize, StoreError> {
    let files = partitioned(events, per_file);
    let n = files.len();
    for (key, bytes) in files {
        store.put(&key, bytes).await?;
    }
    Ok(n)
}

/// Writes the rated events as a MovieLens CSV (`userId,movieId,rating,timestamp`,
/// seconds), e.g. as the training file of a demo baseline; watches are left out.
pub fn write_ratings_csv(events: &[Event], path: &Path) -> std::io::Result<()> {
    let mut w = std::io::BufWriter::new(std::fs::File::create(path)?);
    writeln!(w, "userId,movieId,rating,timestamp")?;
    for e in events {
        if let Some(r) = e.rating {
            writeln!(
                w,
                "{},{},{},{}",
                e.user,
                e.item,
                r,
                e.ts_ms.unwrap_or_default() / 1000
            )?;
        }
    }
    w.flush()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::events::{parse_json_line, Line};

    #[test]
    fn lines_round_trip_through_the_parser() {
        let cfg = SynthConfig {
            users: vec![1, 2, 3],
            items: vec![(10, 1.0), (11, 3.0)],
            rating_weights: RATING_WEIGHTS,
            mean_gap_secs: 3_600.0,
            watch_share: 0.5,
            seed: 1,
        };
        let day = 1_795_824_000_000;
        let evs = events(&cfg, day, day + 86_400_000);
        assert!((40..120).contains(&evs.len()), "{}", evs.len());
        assert!(evs.iter().all(|e| e.ts_ms.unwrap_or_default() >= day
            && e.ts_ms.unwrap_or_default() < day + 86_400_000));
        for e in &evs {
            assert_eq!(parse_json_line(&json_line(e)), Line::Event(*e));
        }
        let files = partitioned(&evs, 10);
        assert!(files
            .iter()
            .any(|(k, _)| k.starts_with("rate/2026-11-28/part-")));
        assert!(files
            .iter()
            .any(|(k, _)| k.starts_with("watch/2026-11-28/")));
    }
}
