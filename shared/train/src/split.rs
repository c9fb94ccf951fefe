//! Train/test splits of positive interactions, by the rules written in the peer
//! baseline (../shared/peer/implicit_baseline.py), so that our files equal
//! ../shared/data/ml-100k-splits/ byte for byte:
//!
//! - **holdout** (per-user random 80/20): key(u, i) = splitmix64((seed << 40) ^
//!   (u << 20) ^ i) with raw ids. For each user, sort the positives by (key, item);
//!   n_test = floor(0.2 n + 0.5); the first n_test go to TEST, the rest to TRAIN
//!   (users with 1 or 2 positives keep everything in TRAIN). A validation split is
//!   the same rule applied to TRAIN with seed 43.
//! - **llo** (leave-last-out): for each user with >= 2 positives, the positive with
//!   the largest (timestamp, item) is TEST; the rest are TRAIN.
//!
//! Files are `user \t item` lines, raw ids, sorted numerically by (user, item).

use std::io::Write;
use std::path::Path;

use sha2::{Digest, Sha256};

/// How to split.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[cfg_attr(feature = "cli", derive(clap::ValueEnum))]
#[serde(rename_all = "lowercase")]
pub enum Method {
    /// Per-user random holdout by the splitmix64 rule.
    Holdout,
    /// Leave-last-out by timestamp.
    Llo,
}

pub use recs_core::hash::splitmix64;

/// A (user, item) pair; its time is needed by leave-last-out only.
pub use recs_core::Interaction as Pair;

/// TRAIN and TEST pairs, each sorted by (user, item).
#[derive(Debug, Clone, Default)]
pub struct Split {
    train: Vec<Pair>,
    test: Vec<Pair>,
}

/// Groups pairs by user: (start, end) ranges over `pairs` sorted by user.
fn user_ranges(pairs: &[Pair]) -> Vec<(usize, usize)> {
    let mut out = Vec::new();
    let mut start = 0;
    while start < pairs.len() {
        let u = pairs[start].user;
        let mut end = start;
        while end < pairs.len() && pairs[end].user == u {
            end += 1;
        }
        out.push((start, end));
        start = end;
    }
    out
}

fn sorted(mut pairs: Vec<Pair>) -> Vec<Pair> {
    pairs.sort_unstable_by_key(|p| (p.user, p.item));
    pairs
}

/// The per-user random holdout (`test_fraction` 0.2 in the peer's rule).
pub fn holdout(pairs: &[Pair], seed: u64, test_fraction: f64) -> Split {
    let key = |p: &Pair| splitmix64((seed << 40) ^ ((p.user as u64) << 20) ^ (p.item as u64));
    let mut keyed: Vec<(i64, u64, i64, Pair)> =
        pairs.iter().map(|p| (p.user, key(p), p.item, *p)).collect();
    keyed.sort_unstable_by_key(|k| (k.0, k.1, k.2));
    let ordered: Vec<Pair> = keyed.into_iter().map(|k| k.3).collect();
    let mut split = Split::default();
    for (start, end) in user_ranges(&ordered) {
        let n = end - start;
        let n_test = (test_fraction * n as f64 + 0.5).floor() as usize;
        split
            .test
            .extend_from_slice(&ordered[start..start + n_test]);
        split.train.extend_from_slice(&ordered[start + n_test..end]);
    }
    Split {
        train: sorted(split.train),
        test: sorted(split.test),
    }
}

/// Leave-last-out by (timestamp, item). Pairs without a timestamp are an error.
pub fn leave_last_out(pairs: &[Pair]) -> Result<Split, String> {
    if let Some(p) = pairs.iter().find(|p| p.ts_ms.is_none()) {
        return Err(format!(
            "leave-last-out needs timestamps, but user {} item {} has none",
            p.user, p.item
        ));
    }
    let mut ordered = pairs.to_vec();
    ordered.sort_unstable_by_key(|p| (p.user, p.ts_ms, p.item));
    let mut split = Split::default();
    for (start, end) in user_ranges(&ordered) {
        if end - start >= 2 {
            split.train.extend_from_slice(&ordered[start..end - 1]);
            split.test.push(ordered[end - 1]);
        } else {
            split.train.extend_from_slice(&ordered[start..end]);
        }
    }
    Ok(Split {
        train: sorted(split.train),
        test: sorted(split.test),
    })
}

/// The file form: `user \t item \n` per pair.
fn to_tsv(pairs: &[Pair]) -> Vec<u8> {
    let mut out = Vec::with_capacity(pairs.len() * 10);
    for p in pairs {
        writeln!(out, "{}\t{}", p.user, p.item).expect("write to Vec");
    }
    out
}

/// Writes `dir/train.tsv` and `dir/test.tsv`; returns a JSON summary with counts and
/// the files' SHA-256.
pub fn write_split(dir: &Path, split: &Split) -> std::io::Result<serde_json::Value> {
    std::fs::create_dir_all(dir)?;
    let mut summary = serde_json::Map::new();
    for (name, pairs) in [("train", &split.train), ("test", &split.test)] {
        let bytes = to_tsv(pairs);
        let path = dir.join(format!("{name}.tsv"));
        std::fs::write(&path, &bytes)?;
        let users = pairs
            .iter()
            .map(|p| p.user)
            .collect::<std::collections::BTreeSet<_>>()
            .len();
        summary.insert(
            name.into(),
            serde_json::json!({
                "file": path.display().to_string(),
                "pairs": pairs.len(),
                "users": users,
                "sha256": recs_core::hash::hex(&Sha256::digest(&bytes)),
            }),
        );
    }
    Ok(serde_json::Value::Object(summary))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pair(user: i64, item: i64, ts: i64) -> Pair {
        Pair {
            user,
            item,
            rating: None,
            ts_ms: Some(ts),
        }
    }

    #[test]
    fn holdout_takes_a_fifth_per_user_rounded_half_up() {
        let mut pairs = Vec::new();
        for (u, n) in [(1, 1), (2, 2), (3, 3), (4, 10), (5, 12)] {
            for i in 0..n {
                pairs.push(pair(u, 100 + i, 0));
            }
        }
        let s = holdout(&pairs, 42, 0.2);
        let n_test = |u| s.test.iter().filter(|p| p.user == u).count();
        assert_eq!(
            [n_test(1), n_test(2), n_test(3), n_test(4), n_test(5)],
            [0, 0, 1, 2, 2]
        );
        assert_eq!(s.train.len() + s.test.len(), pairs.len());
        assert!(s
            .train
            .windows(2)
            .all(|w| (w[0].user, w[0].item) < (w[1].user, w[1].item)));
        assert_ne!(holdout(&pairs, 43, 0.2).test, s.test);
    }

    #[test]
    fn llo_takes_the_latest_per_user() {
        let pairs = [
            pair(1, 5, 10),
            pair(1, 3, 30),
            pair(1, 9, 30),
            pair(2, 1, 1),
        ];
        let s = leave_last_out(&pairs).unwrap();
        assert_eq!(s.test, vec![pair(1, 9, 30)]);
        assert_eq!(s.train.len(), 3);
        assert_eq!(to_tsv(&s.test), b"1\t9\n");
        let no_ts = [Pair {
            user: 1,
            item: 1,
            rating: None,
            ts_ms: None,
        }];
        assert!(leave_last_out(&no_ts).is_err());
    }
}
