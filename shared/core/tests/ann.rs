//! The HNSW index (recs_core::ann): recall against the exact scan, exclusions,
//! publish -> load round trip, and refusal of corrupt or truncated index files.

use proptest::prelude::*;
use recs_core::ann::{AnnBuild, AnnError, AnnIndex, AnnParams, INDEX_FILE};
use recs_core::{AlsModel, Artifacts, CsrPattern, Factors, Registry, RegistryError, ServedModel};

const ITEMS: usize = 2_000;
const USERS: usize = 200;
const F: usize = 32;

/// xorshift64*, so the data does not depend on a crate's RNG across versions.
struct Rng(u64);
impl Rng {
    fn uniform(&mut self) -> f32 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        (self.0 >> 40) as f32 / (1u64 << 24) as f32
    }
    /// Roughly normal (sum of 4 uniforms, centred, unit variance).
    fn normal(&mut self) -> f32 {
        ((0..4).map(|_| self.uniform()).sum::<f32>() - 2.0) * 3f32.sqrt()
    }
}

/// ALS-like factors: a mix of 8 shared directions plus noise, each row scaled by a
/// long-tailed (log-normal) norm, as popular items have larger item factors.
fn factors(rng: &mut Rng, rows: usize, basis: &[Vec<f32>]) -> Vec<f32> {
    let mut out = Vec::with_capacity(rows * F);
    for _ in 0..rows {
        let w: Vec<f32> = basis.iter().map(|_| rng.normal()).collect();
        let mut v: Vec<f32> = (0..F)
            .map(|j| basis.iter().zip(&w).map(|(b, w)| b[j] * w).sum::<f32>() + 0.3 * rng.normal())
            .collect();
        let norm = v.iter().map(|x| x * x).sum::<f32>().sqrt().max(1e-6);
        let scale = (0.5 * rng.normal()).exp() / norm;
        v.iter_mut().for_each(|x| *x *= scale);
        out.extend(v);
    }
    out
}

fn artifacts(seed: u64, ann: AnnBuild) -> Artifacts {
    let mut rng = Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1);
    let basis: Vec<Vec<f32>> = (0..8)
        .map(|_| (0..F).map(|_| rng.normal()).collect())
        .collect();
    let itf = factors(&mut rng, ITEMS, &basis);
    let uf = factors(&mut rng, USERS, &basis);
    let seen = (0..USERS)
        .map(|u| {
            let mut r: Vec<u32> = (0..(u % 40) as u32)
                .map(|j| (u as u32 * 7919 + j * 104_729) % ITEMS as u32)
                .collect();
            r.sort_unstable();
            r.dedup();
            r
        })
        .collect();
    Artifacts {
        user_factors: Factors {
            shape: vec![USERS, F],
            data: uf,
        },
        item_factors: Factors {
            shape: vec![ITEMS, F],
            data: itf,
        },
        users: (1..=USERS as i64).collect(),
        items: (1..=ITEMS as i64).collect(),
        seen: CsrPattern::from_rows(ITEMS, seen),
        model_meta: serde_json::json!({"note": "ann test"}),
        version_fields: serde_json::Map::new(),
        ann,
    }
}

fn model_of(a: &Artifacts) -> AlsModel {
    let copy = |f: &Factors| Factors {
        shape: f.shape.clone(),
        data: f.data.clone(),
    };
    AlsModel::new(
        copy(&a.user_factors),
        copy(&a.item_factors),
        a.users.clone(),
        a.items.clone(),
        a.seen.clone(),
    )
    .unwrap()
}

fn indexed_model(seed: u64) -> AlsModel {
    let a = artifacts(seed, AnnBuild::On);
    let index = AnnIndex::build(&a.item_factors.data, F, AnnParams::default()).unwrap();
    let m = model_of(&a).with_ann(index).unwrap();
    assert!(
        m.uses_ann(),
        "RECS_SEARCH=exact is set; these tests need the index on"
    );
    m
}

fn rows(s: &[recs_core::Scored]) -> Vec<u32> {
    s.iter().map(|s| s.row).collect()
}

#[test]
fn recall_at_10_against_the_exact_scan_is_at_least_0_9() {
    let m = indexed_model(1);
    let mut hits = 0;
    for u in 0..USERS {
        let user = m.user_factors().row(u).to_vec();
        let seen = m.seen().row(u);
        let exact = rows(&m.recommend_scan(&user, seen, 10));
        let approx = m.recommend_vector(&user, seen, 10);
        assert_eq!(approx.len(), 10);
        hits += approx.iter().filter(|s| exact.contains(&s.row)).count();
        // Scores are exact dot products, best first.
        for s in &approx {
            let item = m.item_factors().row(s.row as usize);
            let dot: f32 = item.iter().zip(&user).map(|(a, b)| a * b).sum();
            assert!(
                (s.score - dot).abs() <= 1e-4 * dot.abs().max(1.0),
                "{s:?} vs {dot}"
            );
        }
        assert!(approx.windows(2).all(|w| w[0].score >= w[1].score));
    }
    let recall = hits as f64 / (USERS * 10) as f64;
    eprintln!("recall@10 over {USERS} users: {recall:.4}");
    assert!(recall >= 0.9, "recall@10 {recall}");
}

#[test]
fn builds_are_deterministic() {
    let a = artifacts(2, AnnBuild::On);
    let one = AnnIndex::build(&a.item_factors.data, F, AnnParams::default()).unwrap();
    let two = AnnIndex::build(&a.item_factors.data, F, AnnParams::default()).unwrap();
    assert_eq!(one.to_bytes().unwrap(), two.to_bytes().unwrap());
}

#[test]
fn bad_parameters_and_shapes_are_refused() {
    let a = artifacts(3, AnnBuild::On);
    let bad = AnnParams {
        connectivity: 0,
        ..AnnParams::default()
    };
    assert!(matches!(
        AnnIndex::build(&a.item_factors.data, F, bad),
        Err(AnnError::BadParams(_))
    ));
    // An index over the first 1,000 items does not fit a 2,000-item model.
    let half = AnnIndex::build(&a.item_factors.data[..1000 * F], F, AnnParams::default()).unwrap();
    assert!(matches!(
        model_of(&a).with_ann(half),
        Err(AnnError::Shape {
            index_items: 1000,
            model_items: ITEMS,
            ..
        })
    ));
}

fn temp_registry() -> (tempfile::TempDir, Registry) {
    let dir = tempfile::tempdir().unwrap();
    let reg = Registry::open(dir.path().to_str().unwrap()).unwrap();
    (dir, reg)
}

fn block_on<T>(f: impl std::future::Future<Output = T>) -> T {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
        .block_on(f)
}

fn als(loaded: &recs_core::LoadedModel) -> &AlsModel {
    match &loaded.model {
        ServedModel::Als(m) => m,
        other => panic!("not ALS: {other:?}"),
    }
}

#[test]
fn publish_builds_the_index_inside_als_and_load_uses_it() {
    let (dir, reg) = temp_registry();
    let a = artifacts(4, AnnBuild::On);
    block_on(reg.publish("v0.1", &a)).unwrap();
    let idx = dir.path().join("v0.1/als").join(INDEX_FILE);
    assert!(idx.is_file());
    let loaded = block_on(reg.load("v0.1")).unwrap();
    // artifact_sha covers the index: recompute it from the files on disk.
    let mut files = Vec::new();
    for e in std::fs::read_dir(dir.path().join("v0.1/als")).unwrap() {
        let e = e.unwrap();
        files.push((
            e.file_name().into_string().unwrap(),
            std::fs::read(e.path()).unwrap(),
        ));
    }
    assert!(files.iter().any(|(n, _)| n == INDEX_FILE));
    let sha = recs_core::artifact_sha(files.iter().map(|(n, b)| (n.as_str(), b.as_slice())));
    assert_eq!(loaded.meta.artifact_sha.as_deref(), Some(sha.as_str()));
    let ann_meta = &loaded.model_meta["ann"];
    assert_eq!(ann_meta["connectivity"], AnnParams::default().connectivity);
    assert_eq!(ann_meta["items"], ITEMS);
    assert_eq!(loaded.model_meta["note"], "ann test");
    let m = als(&loaded);
    assert!(m.uses_ann());
    // The loaded index answers as the one built in memory from the same factors.
    let local = indexed_model(4);
    for u in 0..USERS {
        assert_eq!(
            m.recommend_row(u, 10),
            local.recommend_row(u, 10),
            "user {u}"
        );
    }

    // Auto leaves a 2,000-item catalogue without an index, served exactly as before.
    block_on(reg.publish("v0.2", &artifacts(4, AnnBuild::Auto))).unwrap();
    assert!(!dir.path().join("v0.2/als").join(INDEX_FILE).exists());
    let plain = block_on(reg.load("v0.2")).unwrap();
    assert!(als(&plain).ann().is_none());
    assert!(plain.model_meta.get("ann").is_none());
    let p = als(&plain);
    for u in 0..USERS {
        let user = p.user_factors().row(u).to_vec();
        assert_eq!(
            p.recommend_row(u, 10),
            p.recommend_scan(&user, p.seen().row(u), 10)
        );
    }
}

#[test]
fn a_flipped_byte_in_the_index_fails_the_artifact_checksum() {
    let (dir, reg) = temp_registry();
    block_on(reg.publish("v0.1", &artifacts(5, AnnBuild::On))).unwrap();
    let path = dir.path().join("v0.1/als").join(INDEX_FILE);
    let mut bytes = std::fs::read(&path).unwrap();
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0x40;
    std::fs::write(&path, &bytes).unwrap();
    let err = block_on(reg.load("v0.1")).unwrap_err();
    assert!(matches!(err, RegistryError::Checksum { .. }), "{err}");
    assert!(err.is_verification_failure());
}

#[test]
fn a_truncated_index_is_a_typed_error_even_with_a_matching_artifact_sha() {
    let (dir, reg) = temp_registry();
    block_on(reg.publish("v0.1", &artifacts(6, AnnBuild::On))).unwrap();
    let als_dir = dir.path().join("v0.1/als");
    let path = als_dir.join(INDEX_FILE);
    let bytes = std::fs::read(&path).unwrap();
    std::fs::write(&path, &bytes[..bytes.len() - 100]).unwrap();
    // Re-seal meta.json over the truncated file, as a buggy exporter would.
    let mut files = Vec::new();
    for e in std::fs::read_dir(&als_dir).unwrap() {
        let e = e.unwrap();
        files.push((
            e.file_name().into_string().unwrap(),
            std::fs::read(e.path()).unwrap(),
        ));
    }
    let sha = recs_core::artifact_sha(files.iter().map(|(n, b)| (n.as_str(), b.as_slice())));
    let meta_path = dir.path().join("v0.1/meta.json");
    let mut meta: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&meta_path).unwrap()).unwrap();
    meta["artifact_sha"] = sha.into();
    std::fs::write(&meta_path, serde_json::to_vec(&meta).unwrap()).unwrap();
    let err = block_on(reg.load("v0.1")).unwrap_err();
    match &err {
        RegistryError::Ann {
            file,
            source: AnnError::Truncated { found, needed },
        } => {
            assert_eq!(file, "als/hnsw.idx");
            assert_eq!((*found, *needed), (bytes.len() - 100, bytes.len()));
        }
        other => panic!("expected a truncated index error, got {other}"),
    }
    assert!(err.is_verification_failure());
    assert!(matches!(
        AnnIndex::from_bytes(&bytes[..40]),
        Err(AnnError::Truncated { needed: 80, .. })
    ));
    assert_eq!(
        AnnIndex::from_bytes(b"not an index at all, no").unwrap_err(),
        AnnError::BadMagic
    );
}

fn small_index_bytes() -> Vec<u8> {
    let a = artifacts(7, AnnBuild::On);
    AnnIndex::build(&a.item_factors.data[..300 * F], F, AnnParams::default())
        .unwrap()
        .to_bytes()
        .unwrap()
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    #[test]
    fn random_bytes_are_refused_without_panicking(bytes in proptest::collection::vec(any::<u8>(), 0..4096)) {
        prop_assert!(AnnIndex::from_bytes(&bytes).is_err());
    }

    #[test]
    fn mutated_index_files_are_refused_without_panicking(
        pos in any::<prop::sample::Index>(),
        xor in 1u8..=255,
        cut in any::<prop::sample::Index>(),
        extra in proptest::collection::vec(any::<u8>(), 1..16),
    ) {
        static GOOD: std::sync::OnceLock<Vec<u8>> = std::sync::OnceLock::new();
        let good = GOOD.get_or_init(small_index_bytes);
        prop_assert!(AnnIndex::from_bytes(good).is_ok());
        let mut flipped = good.clone();
        flipped[pos.index(good.len())] ^= xor;
        prop_assert!(AnnIndex::from_bytes(&flipped).is_err());
        let truncated = &good[..cut.index(good.len())];
        prop_assert!(AnnIndex::from_bytes(truncated).is_err());
        let mut longer = good.clone();
        longer.extend(&extra);
        prop_assert!(AnnIndex::from_bytes(&longer).is_err());
    }

    #[test]
    fn excluded_items_are_never_returned(
        user in 0..USERS,
        k in 1usize..300,
        excluded in proptest::collection::btree_set(0u32..ITEMS as u32, 0..400),
    ) {
        static MODEL: std::sync::OnceLock<AlsModel> = std::sync::OnceLock::new();
        let m = MODEL.get_or_init(|| indexed_model(8));
        let excluded: Vec<u32> = excluded.into_iter().collect();
        let v = m.user_factors().row(user).to_vec();
        // The index itself, not the exact fallback of recommend_vector.
        let items = m.item_factors().as_slice().unwrap();
        let got = m.ann().unwrap().top_k(items, &v, &excluded, None, k);
        prop_assert!(got.is_some(), "the graph walk found fewer than k items");
        let got = got.unwrap();
        prop_assert_eq!(&got, &m.recommend_vector(&v, &excluded, k));
        prop_assert_eq!(got.len(), k.min(ITEMS - excluded.len()));
        for s in &got {
            prop_assert!(excluded.binary_search(&s.row).is_err(), "row {} is excluded", s.row);
        }
        let mut distinct = rows(&got);
        distinct.sort_unstable();
        distinct.dedup();
        prop_assert_eq!(distinct.len(), got.len());
    }
}
