//! Every way a version can be broken is refused with a clear error before it is
//! served, and a broken publish leaves the registry as it was.

use std::path::Path;

use e2e_tests::{block_on, get, json, small_config, synthetic_registry};
use recs_core::CsrPattern;
use recs_core::Factors;
use recs_core::{artifact_sha, Registry};
use recs_serve::{Config, Service};
use recs_train::gen_data::generate;

fn als(root: &Path) -> std::path::PathBuf {
    root.join("v0.1/als")
}

/// Rewrites meta.json's artifact_sha to match the files, so the check under test is
/// the one that fires (as with a registry whose exporter hashed the broken files).
fn rehash(root: &Path) {
    let dir = als(root);
    let mut files = Vec::new();
    for e in std::fs::read_dir(&dir).unwrap() {
        let e = e.unwrap();
        files.push((
            e.file_name().to_string_lossy().to_string(),
            std::fs::read(e.path()).unwrap(),
        ));
    }
    let sha = artifact_sha(files.iter().map(|(n, b)| (n.as_str(), b.as_slice())));
    let meta_path = root.join("v0.1/meta.json");
    let mut meta: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&meta_path).unwrap()).unwrap();
    meta["artifact_sha"] = sha.into();
    std::fs::write(meta_path, serde_json::to_vec(&meta).unwrap()).unwrap();
}

fn load_err(registry: &Registry) -> String {
    block_on(registry.load("v0.1")).unwrap_err().to_string()
}

fn npy_f(shape: &[usize], data: &[f32]) -> Vec<u8> {
    recs_core::npy::write_f32(shape, data)
}

#[test]
fn a_published_version_loads_and_verifies() {
    let (_dir, registry) = synthetic_registry();
    let loaded = block_on(registry.load("v0.1")).unwrap();
    let c = small_config();
    assert_eq!(
        (loaded.model.n_users(), loaded.model.n_items()),
        (c.users, c.items)
    );
    assert_eq!(
        loaded.meta.artifact_sha.as_deref(),
        Some(loaded.artifact_sha.as_str())
    );
    assert_eq!(block_on(registry.latest()).unwrap(), "v0.1");
}

#[test]
fn checksum_mismatch_is_refused() {
    let (dir, registry) = synthetic_registry();
    let p = als(dir.path()).join("items.json");
    let mut items: Vec<i64> = serde_json::from_slice(&std::fs::read(&p).unwrap()).unwrap();
    items.swap(0, 1); // Valid JSON, same shape: only the checksum can tell.
    std::fs::write(&p, serde_json::to_vec(&items).unwrap()).unwrap();
    let err = load_err(&registry);
    assert!(err.contains("checksum mismatch"), "{err}");
}

#[test]
fn truncated_npy_is_refused() {
    let (dir, registry) = synthetic_registry();
    let p = als(dir.path()).join("item_factors.npy");
    let bytes = std::fs::read(&p).unwrap();
    std::fs::write(&p, &bytes[..bytes.len() - 7]).unwrap();
    rehash(dir.path());
    let err = load_err(&registry);
    assert!(
        err.contains("item_factors.npy") && err.contains("truncated data"),
        "{err}"
    );
}

#[test]
fn wrong_dtype_is_refused() {
    let (dir, registry) = synthetic_registry();
    let c = small_config();
    let (rows, cols) = (c.users, c.factors + 1);
    // A well-formed float64 file of the right shape: numpy's default dtype, a
    // plausible exporter slip. The header is the float32 one relabelled '<f8'.
    let f32_file = npy_f(&[rows, cols], &vec![0.0; rows * cols]);
    let offset = recs_core::npy::parse_header(&f32_file).unwrap().data_offset;
    let mut f64_file = f32_file[..offset].to_vec();
    let at = f64_file.windows(5).position(|w| w == b"'<f4'").unwrap();
    f64_file[at + 3] = b'8';
    (0..rows * cols).for_each(|_| f64_file.extend_from_slice(&0.25f64.to_le_bytes()));
    std::fs::write(als(dir.path()).join("user_factors.npy"), f64_file).unwrap();
    rehash(dir.path());
    let err = load_err(&registry);
    assert!(
        err.contains("user_factors.npy") && err.contains("<f8"),
        "{err}"
    );
}

#[test]
fn nan_factor_is_refused_with_its_position() {
    let (dir, registry) = synthetic_registry();
    let c = small_config();
    let f = c.factors + 1;
    let mut data = vec![0.1f32; c.items * f];
    data[3 * f + 2] = f32::NAN;
    std::fs::write(
        als(dir.path()).join("item_factors.npy"),
        npy_f(&[c.items, f], &data),
    )
    .unwrap();
    rehash(dir.path());
    let err = load_err(&registry);
    assert!(
        err.contains("non-finite") && err.contains("row 3, column 2"),
        "{err}"
    );
}

#[test]
fn empty_model_is_refused_like_the_python_v04_to_v014() {
    let (dir, registry) = synthetic_registry();
    let d = als(dir.path());
    std::fs::write(d.join("user_factors.npy"), npy_f(&[0, 64], &[])).unwrap();
    std::fs::write(d.join("item_factors.npy"), npy_f(&[0, 64], &[])).unwrap();
    std::fs::write(d.join("users.json"), "[]").unwrap();
    std::fs::write(d.join("items.json"), "[]").unwrap();
    std::fs::write(
        d.join("seen_csr.npz"),
        recs_core::npz::write_csr(&CsrPattern::from_rows(0, vec![])),
    )
    .unwrap();
    rehash(dir.path());
    let err = load_err(&registry);
    assert!(err.contains("empty model"), "{err}");
}

#[test]
fn corrupt_npz_bad_json_and_missing_files_are_refused() {
    let (dir, registry) = synthetic_registry();
    let d = als(dir.path());
    let npz = d.join("seen_csr.npz");
    let good = std::fs::read(&npz).unwrap();
    std::fs::write(&npz, &good[..good.len() / 3]).unwrap();
    rehash(dir.path());
    let err = load_err(&registry);
    assert!(err.contains("seen_csr.npz"), "{err}");
    std::fs::write(&npz, good).unwrap();

    std::fs::write(d.join("users.json"), "[1, 2, oops").unwrap();
    rehash(dir.path());
    let err = load_err(&registry);
    assert!(
        err.contains("users.json") && err.contains("not a JSON array"),
        "{err}"
    );

    std::fs::remove_file(d.join("users.json")).unwrap();
    rehash(dir.path());
    let err = load_err(&registry);
    assert!(err.contains("missing als/users.json"), "{err}");
}

#[test]
fn unknown_and_malicious_versions_are_refused() {
    let (_dir, registry) = synthetic_registry();
    let err = block_on(registry.load("v9.9")).unwrap_err().to_string();
    assert!(err.contains("does not exist"), "{err}");
    for bad in [
        "../v0.1",
        "v0.1/../../etc",
        "/etc/passwd",
        "v0.1\u{0}",
        "..",
    ] {
        let err = block_on(registry.load(bad)).unwrap_err().to_string();
        assert!(err.contains("invalid version name"), "{bad:?}: {err}");
    }
}

#[test]
fn publishing_an_empty_model_fails_and_leaves_latest_alone() {
    let (dir, registry) = synthetic_registry();
    let mut empty = generate(&small_config()).planted_artifacts();
    empty.user_factors = Factors {
        shape: vec![0, 7],
        data: vec![],
    };
    empty.item_factors = Factors {
        shape: vec![0, 7],
        data: vec![],
    };
    empty.users.clear();
    empty.items.clear();
    empty.seen = CsrPattern::from_rows(0, vec![]);
    let err = block_on(registry.publish("v0.2", &empty))
        .unwrap_err()
        .to_string();
    assert!(err.contains("empty model"), "{err}");
    assert_eq!(block_on(registry.latest()).unwrap(), "v0.1");
    assert!(!dir.path().join("v0.2").exists());
    let leftovers: Vec<_> = std::fs::read_dir(dir.path())
        .unwrap()
        .filter_map(|e| e.ok())
        .filter(|e| e.file_name().to_string_lossy().starts_with(".tmp"))
        .collect();
    assert!(leftovers.is_empty(), "temporary folder left behind");
    // And the existing version is never overwritten.
    let again = generate(&small_config()).planted_artifacts();
    assert!(block_on(registry.publish("v0.1", &again)).is_err());
}

#[test]
fn a_broken_latest_version_makes_health_503_with_the_reason() {
    let (dir, _registry) = synthetic_registry();
    std::fs::write(als(dir.path()).join("user_factors.npy"), b"garbage").unwrap();
    let config = Config {
        registry: dir.path().display().to_string(),
        ..Config::default()
    };
    let svc = std::sync::Arc::new(block_on(Service::start(config)));
    let resp = e2e_tests::route(&svc, &get("/healthz", &[]));
    assert_eq!(resp.status(), 503);
    let body = json(&resp);
    assert_eq!(body["status"], "unavailable");
    // The reason is for admins: /rollout/status.
    let resp = e2e_tests::route(&svc, &get("/rollout/status", &[]));
    let body = json(&resp)["served"].clone();
    assert_eq!(body["status"], "unavailable");
    assert!(
        body["detail"]
            .as_str()
            .unwrap()
            .contains("checksum mismatch"),
        "{body}"
    );
    let resp = e2e_tests::route(&svc, &get("/recommend/1", &[]));
    assert_eq!(resp.status(), 503);
    assert_eq!(json(&resp)["error_type"], "model_unavailable");
    let metrics = String::from_utf8(
        e2e_tests::route(&svc, &get("/metrics", &[]))
            .body()
            .to_vec(),
    )
    .unwrap();
    assert!(metrics
        .contains("recommend_errors_total{error_type=\"model_load\",endpoint=\"startup\"} 1"));
    assert!(metrics.contains("service_health_status 0"));
}

/// A crafted file in a version named by /switch: refused with a 4xx, nothing
/// switched, and the server keeps serving the version it had.
#[test]
fn crafted_files_are_refused_by_switch_and_serving_goes_on() {
    let dir = tempfile::tempdir().unwrap();
    let registry = Registry::open(dir.path().to_str().unwrap()).unwrap();
    block_on(e2e_tests::publish_two_versions(&registry));
    // v0.2's seen matrix claims 64 GiB members (zip64 sizes patched).
    std::fs::write(
        dir.path().join("v0.2/als/seen_csr.npz"),
        recs_core::npz::hooks::lying_npz(64 << 30),
    )
    .unwrap();
    // v_deep: a popularity version whose model.pkl nests 200,000 lists.
    let deep = dir.path().join("v_deep");
    std::fs::create_dir_all(&deep).unwrap();
    let mut pkl = b"\x80\x04".to_vec();
    pkl.extend(std::iter::repeat_n(b']', 200_000));
    pkl.extend(std::iter::repeat_n(b'a', 199_999));
    pkl.push(b'.');
    std::fs::write(deep.join("model.pkl"), pkl).unwrap();
    std::fs::write(deep.join("meta.json"), br#"{"model":"popularity"}"#).unwrap();

    let svc = std::sync::Arc::new(block_on(Service::start(Config {
        registry: dir.path().display().to_string(),
        version: Some("v0.1".into()),
        ..Config::default()
    })));
    for version in ["v0.2", "v_deep"] {
        let resp = e2e_tests::route(&svc, &get(&format!("/switch?model={version}"), &[]));
        let status = resp.status().as_u16();
        assert!((400..500).contains(&status), "{version}: {status}");
        let body = json(&resp);
        assert_eq!(body["error_type"], "switch_refused", "{version}: {body}");
        let ok = e2e_tests::route(&svc, &get("/recommend/1?k=3", &[]));
        assert_eq!(ok.status(), 200);
        assert_eq!(json(&ok)["model"], "v0.1");
    }
}
