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
//! - **recbole** (RecBole's general-recommendation protocol, our own seeded code):
//!   [`k_core`] drops users and items with fewer than 10 positives until none is
//!   left, then [`recbole`] splits every user's positives 8:1:1 in a random order
//!   (the splitmix64 key above): n_valid = n_test = floor(n / 10) (one each when
//!   0 < n / 10 < 1 and more than one is left for TRAIN), the rest TRAIN.
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
    /// RecBole's protocol: 10-core filter, then per-user random 8:1:1
    /// train/valid/test.
    Recbole,
}

pub use recs_core::hash::splitmix64;

/// A (user, item) pair; its time is needed by leave-last-out only.
pub use recs_core::Interaction as Pair;

/// TRAIN and TEST pairs (and VALID for [`recbole`]), each sorted by (user, item).
#[derive(Debug, Clone, Default)]
pub struct Split {
    train: Vec<Pair>,
    test: Vec<Pair>,
    valid: Option<Vec<Pair>>,
}

impl Split {
    /// The TRAIN pairs.
    pub fn train(&self) -> &[Pair] {
        &self.train
    }
    /// The TEST pairs.
    pub fn test(&self) -> &[Pair] {
        &self.test
    }
    /// The VALID pairs ([`recbole`] only).
    pub fn valid(&self) -> Option<&[Pair]> {
        self.valid.as_deref()
    }
}

/// Drops users and items with fewer than `k` pairs, again and again until every
/// user and item left has at least `k` (RecBole's `user_inter_num_interval` and
/// `item_inter_num_interval` = `[k, inf)`). Keeps the input order.
pub fn k_core(pairs: &[Pair], k: usize) -> Vec<Pair> {
    use std::collections::HashMap;
    let mut kept: Vec<Pair> = pairs.to_vec();
    loop {
        let mut users: HashMap<i64, usize> = HashMap::new();
        let mut items: HashMap<i64, usize> = HashMap::new();
        for p in &kept {
            *users.entry(p.user).or_default() += 1;
            *items.entry(p.item).or_default() += 1;
        }
        let before = kept.len();
        kept.retain(|p| users[&p.user] >= k && items[&p.item] >= k);
        if kept.len() == before {
            return kept;
        }
    }
}

/// RecBole's per-user ratio split (`RS: [0.8, 0.1, 0.1]`, `group_by: user`, random
/// order): per user, positives sorted by (splitmix64 key, item) as in [`holdout`];
/// n_valid = n_test = floor(n / 10), each raised to 1 when 0 < n / 10 < 1 and
/// TRAIN keeps more than one (RecBole's `_calcu_split_ids`); the first n - n_valid -
/// n_test are TRAIN, then VALID, then TEST. Call [`k_core`] first for the protocol.
pub fn recbole(pairs: &[Pair], seed: u64) -> Split {
    let key = |p: &Pair| splitmix64((seed << 40) ^ ((p.user as u64) << 20) ^ (p.item as u64));
    let mut keyed: Vec<(i64, u64, i64, Pair)> =
        pairs.iter().map(|p| (p.user, key(p), p.item, *p)).collect();
    keyed.sort_unstable_by_key(|k| (k.0, k.1, k.2));
    let ordered: Vec<Pair> = keyed.into_iter().map(|k| k.3).collect();
    let (mut train, mut valid, mut test) = (Vec::new(), Vec::new(), Vec::new());
    for (start, end) in user_ranges(&ordered) {
        let n = end - start;
        let mut cnt = [0usize, n / 10, n / 10];
        cnt[0] = n - cnt[1] - cnt[2];
        // RecBole: for i in 1..len: if cnt[0] <= 1 break; if 0 < ratio[-i] * n < 1: move one.
        for part in [2, 1] {
            if cnt[0] <= 1 {
                break;
            }
            if n > 0 && n < 10 {
                cnt[part] += 1;
                cnt[0] -= 1;
            }
        }
        let (a, b) = (start + cnt[0], start + cnt[0] + cnt[1]);
        train.extend_from_slice(&ordered[start..a]);
        valid.extend_from_slice(&ordered[a..b]);
        test.extend_from_slice(&ordered[b..end]);
    }
    Split {
        train: sorted(train),
        test: sorted(test),
        valid: Some(sorted(valid)),
    }
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
        valid: None,
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
        valid: None,
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

/// Writes `dir/train.tsv`, `dir/test.tsv` (and `dir/valid.tsv` when the split has
/// VALID); returns a JSON summary with counts and the files' SHA-256.
pub fn write_split(dir: &Path, split: &Split) -> std::io::Result<serde_json::Value> {
    std::fs::create_dir_all(dir)?;
    let mut summary = serde_json::Map::new();
    let mut parts = vec![("train", &split.train), ("test", &split.test)];
    if let Some(v) = &split.valid {
        parts.insert(1, ("valid", v));
    }
    for (name, pairs) in parts {
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
    fn k_core_repeats_until_every_user_and_item_has_k() {
        // k = 2, by hand: users 1, 2 each rate items 1, 2 (a 2-core); user 3 rates 1
        // and 9; user 4 rates 5 only. Round 1: item 9, item 5 and user 4 (one pair
        // each) go. Round 2: user 3 has one pair left, so it goes. Round 3: stable.
        let pairs = [
            pair(1, 1, 0),
            pair(1, 2, 0),
            pair(2, 1, 0),
            pair(2, 2, 0),
            pair(3, 1, 0),
            pair(3, 9, 0),
            pair(4, 5, 0),
        ];
        let kept = k_core(&pairs, 2);
        assert_eq!(kept, pairs[..4].to_vec());
        // A chain that unravels completely.
        let chain = [pair(1, 1, 0), pair(1, 2, 0), pair(2, 2, 0)];
        assert!(k_core(&chain, 2).is_empty());
        assert_eq!(k_core(&chain, 1), chain.to_vec());
    }

    #[test]
    fn recbole_splits_8_1_1_per_user_by_hand() {
        let mut pairs = Vec::new();
        // n: (train, valid, test) by RecBole's _calcu_split_ids.
        let expect = [
            (10, (8, 1, 1)),
            (19, (17, 1, 1)),
            (20, (16, 2, 2)),
            (35, (29, 3, 3)),
            (5, (3, 1, 1)),
            (2, (1, 0, 1)),
            (1, (1, 0, 0)),
        ];
        for (u, (n, _)) in expect.iter().enumerate() {
            for i in 0..*n {
                pairs.push(pair(u as i64 + 1, 1000 + i as i64, 0));
            }
        }
        let s = recbole(&pairs, 7);
        let count = |v: &[Pair], u: i64| v.iter().filter(|p| p.user == u).count();
        let valid = s.valid().unwrap();
        for (u, (_, (tr, va, te))) in expect.iter().enumerate() {
            let u = u as i64 + 1;
            assert_eq!(
                (count(&s.train, u), count(valid, u), count(&s.test, u)),
                (*tr, *va, *te),
                "user {u}"
            );
        }
        // A partition: every pair exactly once.
        let mut all: Vec<(i64, i64)> = s
            .train
            .iter()
            .chain(valid)
            .chain(&s.test)
            .map(|p| (p.user, p.item))
            .collect();
        all.sort_unstable();
        let mut want: Vec<(i64, i64)> = pairs.iter().map(|p| (p.user, p.item)).collect();
        want.sort_unstable();
        assert_eq!(all, want);
        // Seeded: same seed, same split; another seed, another split.
        assert_eq!(recbole(&pairs, 7).test, s.test);
        assert_ne!(recbole(&pairs, 8).test, s.test);
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
