//! The false-alarm rule and the planted shifts, on a synthetic training history whose
//! users, items, ratings and hours are independent (so any honest window of it is the
//! same distribution): a uniform sample of it placed in a window of any length from
//! 1 h to 30 d, of any size at or above the minimum count, reads PSI < 0.1 on every
//! feature; each planted shift reads PSI > 0.2 on the feature it moved.

use std::sync::OnceLock;

use proptest::prelude::*;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use crate::baseline::{IdMap, ModelIndex};
use crate::{compute, Baseline, Event, Summary, Window, DEFAULT_MIN_COUNT, FEATURES};
use recs_core::Interaction;

const H: i64 = 3_600_000;
const DAY: i64 = 24 * H;
/// Training history: 180 days from 2026-03-01T00:00:00Z.
const T0: i64 = 1_772_323_200_000;
const HISTORY_DAYS: i64 = 180;
const USERS: i64 = 3_000;
const ITEMS: i64 = 2_000;
const ROWS: usize = 150_000;
/// A MovieLens-like evening-heavy hour profile (relative weights, UTC).
const HOUR_WEIGHTS: [f64; 24] = [
    3.0, 2.5, 2.0, 1.5, 1.0, 0.8, 0.8, 1.0, 1.5, 2.0, 2.5, 3.0, 3.5, 3.5, 3.5, 4.0, 4.5, 5.0, 6.0,
    7.0, 7.5, 7.0, 5.5, 4.0,
];
const RATING_WEIGHTS: [f64; 5] = [0.06, 0.11, 0.27, 0.34, 0.22];

struct Fixture {
    rows: Vec<Interaction>,
    index: ModelIndex,
    baseline: Baseline,
}

fn pick(rng: &mut StdRng, weights: &[f64]) -> usize {
    let total: f64 = weights.iter().sum();
    let mut x = rng.random::<f64>() * total;
    for (i, w) in weights.iter().enumerate() {
        x -= w;
        if x < 0.0 {
            return i;
        }
    }
    weights.len() - 1
}

/// Zipf-like weights 1/(i+1)^s.
fn zipf(n: i64, s: f64) -> Vec<f64> {
    (0..n).map(|i| 1.0 / ((i + 1) as f64).powf(s)).collect()
}

fn fixture() -> &'static Fixture {
    static F: OnceLock<Fixture> = OnceLock::new();
    F.get_or_init(|| {
        let mut rng = StdRng::seed_from_u64(11);
        let (uw, iw) = (zipf(USERS, 0.8), zipf(ITEMS, 1.0));
        // Cumulative weights for fast draws.
        let cum = |w: &[f64]| {
            let mut acc = 0.0;
            w.iter()
                .map(|x| {
                    acc += x;
                    acc
                })
                .collect::<Vec<f64>>()
        };
        let (uc, ic) = (cum(&uw), cum(&iw));
        let draw = |rng: &mut StdRng, c: &[f64]| {
            let x = rng.random::<f64>() * c[c.len() - 1];
            c.partition_point(|&v| v < x).min(c.len() - 1) as i64
        };
        let mut seen = std::collections::HashSet::new();
        let mut rows = Vec::with_capacity(ROWS);
        while rows.len() < ROWS {
            let (user, item) = (draw(&mut rng, &uc) + 1, draw(&mut rng, &ic) + 1);
            if !seen.insert((user, item)) {
                continue;
            }
            let day = rng.random_range(0..HISTORY_DAYS);
            let hour = pick(&mut rng, &HOUR_WEIGHTS) as i64;
            let ts = T0 + day * DAY + hour * H + rng.random_range(0..H);
            let rating = (pick(&mut rng, &RATING_WEIGHTS) + 1) as f32;
            rows.push(Interaction {
                user,
                item,
                rating: Some(rating),
                ts_ms: Some(ts),
            });
        }
        // What training would hold: positives (>= 4) per user, items ranked by them.
        let mut activity: IdMap<u32> = IdMap::default();
        let mut item_count: IdMap<u32> = IdMap::default();
        for r in rows.iter().filter(|r| r.rating >= Some(4.0)) {
            *activity.entry(r.user).or_default() += 1;
            *item_count.entry(r.item).or_default() += 1;
        }
        let mut ranked: Vec<(i64, u32)> = item_count.into_iter().collect();
        ranked.sort_by_key(|&(id, c)| (std::cmp::Reverse(c), id));
        let index = ModelIndex::from_parts(
            activity.keys().copied().collect(),
            activity,
            ranked
                .iter()
                .enumerate()
                .map(|(r, &(id, _))| (id, r as u32))
                .collect(),
        );
        let baseline = Baseline::compute_indexed(&rows, &index, &[]);
        Fixture {
            rows,
            index,
            baseline,
        }
    })
}

/// [`same_distribution_up_to`], which must find all `n` rows.
fn same_distribution(n: usize, len_ms: i64, end: i64, seed: u64) -> Vec<Event> {
    let out = same_distribution_up_to(n, len_ms, end, seed);
    assert_eq!(out.len(), n, "the history is large enough");
    out
}

/// Up to `n` distinct training rows moved into `[end - len, end)` as the training process
/// would have put them there (fewer when the window is short and its hours are quiet:
/// an hour at 04:00 holds about 3,000 of the history's rows): each keeps its time of day and moves by whole days; a
/// row is kept with probability proportional to how many days of the window hold its
/// time of day (so a window shorter than a day keeps only the hours it covers).
fn same_distribution_up_to(n: usize, len_ms: i64, end: i64, seed: u64) -> Vec<Event> {
    let f = fixture();
    let mut rng = StdRng::seed_from_u64(seed);
    let start = end - len_ms;
    let max_days = (len_ms as u64).div_ceil(DAY as u64) as i64;
    let order = rand::seq::index::sample(&mut rng, f.rows.len(), f.rows.len());
    let mut out = Vec::with_capacity(n);
    for i in order {
        if out.len() == n {
            break;
        }
        let r = f.rows[i];
        let tod = r.ts_ms.unwrap().rem_euclid(DAY);
        // Days d with start <= d*DAY + tod < end.
        let first = (start - tod).div_euclid(DAY) + i64::from((start - tod).rem_euclid(DAY) != 0);
        let last = (end - 1 - tod).div_euclid(DAY);
        let k = last - first + 1;
        if k <= 0 || rng.random_range(0..max_days) >= k {
            continue;
        }
        let d = rng.random_range(first..=last);
        out.push(Interaction {
            ts_ms: Some(d * DAY + tod),
            ..r
        });
    }
    out
}

fn run(events: &[Event], len_ms: i64, end: i64) -> Summary {
    let f = fixture();
    let window = Window {
        start_ms: end - len_ms,
        end_ms: end,
    };
    compute(&f.baseline, &f.index, events, window, DEFAULT_MIN_COUNT)
}

fn psi(s: &Summary, f: &str) -> f64 {
    *s.features
        .get(f)
        .unwrap_or_else(|| panic!("{f} not reported: {:?}", s.skipped))
}

/// After the history, so nothing in the window is training data by time.
const END: i64 = T0 + (HISTORY_DAYS + 30) * DAY;

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, ..ProptestConfig::default() })]

    #[test]
    fn same_distribution_windows_stay_under_0_1(
        len_secs in 3_600i64..=30 * 86_400,
        n in DEFAULT_MIN_COUNT as usize..=20_000,
        end_offset in 0i64..86_400,
        seed in any::<u64>(),
    ) {
        let len = len_secs * 1000;
        let end = END + end_offset * 1000;
        // A short window at a quiet hour cannot hold every n drawn (seen under qemu:
        // one hour at 04:34 holds 2,988 rows, n was 14,849): the property is about
        // any same-distribution sample the window can hold, of at least the minimum.
        let events = same_distribution_up_to(n, len, end, seed);
        prop_assume!(events.len() >= DEFAULT_MIN_COUNT as usize);
        let s = run(&events, len, end);
        prop_assert_eq!(s.features.len(), FEATURES.len(), "{:?}", s.skipped);
        for f in FEATURES {
            prop_assert!(psi(&s, f) < 0.1, "{} {}: {}\n{}", f, len_secs, psi(&s, f), s.table());
        }
        prop_assert_eq!(s.action.as_str(), "none");
    }
}

/// The issue's experiment: 20,000 training rows moved into the last 24 h with their
/// time of day kept. `events_per_user` read 2.84 when it was a per-window count.
#[test]
fn the_issues_twenty_thousand_in_a_day_are_quiet() {
    let events = same_distribution(20_000, DAY, END, 1);
    let s = run(&events, DAY, END);
    for f in FEATURES {
        assert!(psi(&s, f) < 0.1, "{f}: {}\n{}", psi(&s, f), s.table());
    }
    // And the reference spread was found and calls nothing unusual.
    let r = &s.reference["rating"];
    assert!(r.ref_windows >= 100, "{r:?}");
    assert!(s.reference.values().all(|r| !r.unusual), "{}", s.table());
}

fn shifted(change: impl Fn(&mut StdRng, &mut Interaction)) -> Summary {
    let mut events = same_distribution(5_000, DAY, END, 7);
    let mut rng = StdRng::seed_from_u64(8);
    events.iter_mut().for_each(|e| change(&mut rng, e));
    run(&events, DAY, END)
}

#[test]
fn lower_ratings_move_rating() {
    let s = shifted(|_, e| e.rating = e.rating.map(|r| (r - 1.0).max(1.0)));
    assert!(psi(&s, "rating") > 0.2, "{}", s.table());
    assert!(s.reference["rating"].unusual);
    assert!(psi(&s, "item") < 0.1, "{}", s.table());
}

#[test]
fn unseen_items_move_unknown_item_share() {
    // The users whose id ends in 0 watch only movies the model never saw.
    let mut events = same_distribution(5_000, DAY, END, 7);
    let mut unknown = 0usize;
    for e in events.iter_mut().filter(|e| e.user % 10 == 0) {
        e.item += 1_000_000;
        unknown += 1;
    }
    let s = run(&events, DAY, END);
    assert!(psi(&s, "unknown_item_share") > 0.2, "{}", s.table());
    // By hand (docs/DRIFT.md): a training share of 0 unknown against q in the window
    // reads (1 - q - 1) ln(1 - q) + (q - 1e-4) ln(q / 1e-4), the shares floored at 1e-4.
    let q = unknown as f64 / events.len() as f64;
    assert!(q > 0.03, "{q}");
    let by_hand = -q * (1.0 - q).ln() + (q - 1e-4) * (q / 1e-4).ln();
    assert!(
        (psi(&s, "unknown_item_share") - by_hand).abs() < 1e-5,
        "{} vs {by_hand}",
        psi(&s, "unknown_item_share")
    );
}

#[test]
fn unseen_users_move_unknown_user_share() {
    let s = shifted(|rng, e| {
        if rng.random::<f64>() < 0.1 {
            e.user += 1_000_000;
        }
    });
    assert!(psi(&s, "unknown_user_share") > 0.2, "{}", s.table());
}

#[test]
fn popularity_moving_to_the_tail_moves_item_popularity() {
    // Half the events move to a movie drawn from the less popular half of the catalogue.
    let s = shifted(|rng, e| {
        if rng.random::<f64>() < 0.5 {
            e.item = rng.random_range(ITEMS / 2..=ITEMS);
        }
    });
    assert!(psi(&s, "item_popularity") > 0.2, "{}", s.table());
}

#[test]
fn a_different_hour_mix_moves_hour_of_day() {
    // Every event moved to the small hours (02:00-06:00) of its own day.
    let s = shifted(|rng, e| {
        let t = e.ts_ms.unwrap();
        e.ts_ms = Some(t.div_euclid(DAY) * DAY + rng.random_range(2 * H..6 * H));
    });
    assert!(psi(&s, "hour_of_day") > 0.2, "{}", s.table());
    assert!(psi(&s, "rating") < 0.1, "{}", s.table());
}

#[test]
fn heavy_users_flooding_in_move_events_per_user() {
    // Most of the traffic from the twenty heaviest users (a crawler, a bot).
    let s = shifted(|rng, e| {
        if rng.random::<f64>() < 0.6 {
            e.user = rng.random_range(1..=20);
        }
    });
    assert!(psi(&s, "events_per_user") > 0.2, "{}", s.table());
}
