//! Popularity versions end to end: published next to ALS, switched to over HTTP,
//! seen items excluded; and the Python team's `model.pkl` read without executing
//! anything (lists pickled by python3 itself, class references and REDUCE refused).

use std::path::Path;
use std::process::Command;

use e2e_tests::{block_on, get, items, json, shared_or_skip};
use recs_core::pickle::PickleError;
use recs_core::{PopularityArtifacts, Registry, RegistryError, ServedModel};
use recs_serve::{Config, Service};
use recs_train::gen_data::{generate, GenConfig};

/// Runs python3 with `code`; None (with a note) when python3 is absent and not in CI.
fn python(code: &str) -> Option<Vec<u8>> {
    match Command::new("python3").args(["-c", code]).output() {
        Ok(out) if out.status.success() => Some(out.stdout),
        Ok(out) => panic!("python3 failed: {}", String::from_utf8_lossy(&out.stderr)),
        Err(e) if std::env::var("CI").as_deref() != Ok("true") => {
            eprintln!("SKIP: python3 is not available ({e})");
            None
        }
        Err(e) => panic!("python3 is required in CI: {e}"),
    }
}

fn write_pickle_version(root: &Path, version: &str, bytes: &[u8]) {
    let dir = root.join(version);
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("model.pkl"), bytes).unwrap();
    // The Python team's meta.json names the model under "model".
    std::fs::write(dir.join("meta.json"), br#"{"model":"popularity","k":10}"#).unwrap();
}

#[test]
fn lists_pickled_by_python_protocols_2_to_5_read_back_equal() {
    let expected: Vec<i64> = vec![
        2858,
        1196,
        260,
        0,
        255,
        256,
        65535,
        65536,
        -1,
        -129,
        2147483647,
        -2147483648,
        2147483648,
        9223372036854775807,
        -9223372036854775808,
    ];
    let list = format!("{expected:?}");
    let dir = tempfile::tempdir().unwrap();
    let registry = Registry::open(dir.path().to_str().unwrap()).unwrap();
    for protocol in 2..=5 {
        // A long list too, so protocol 4+ frames and APPENDS batches of 1000 occur.
        let code = format!(
            "import pickle,sys; sys.stdout.buffer.write(pickle.dumps({list} + list(range(3000, 6000)), protocol={protocol}))"
        );
        let Some(bytes) = python(&code) else { return };
        assert_eq!(bytes[..2], [0x80, protocol as u8]);
        let version = format!("v_py{protocol}");
        write_pickle_version(dir.path(), &version, &bytes);
        let loaded = block_on(registry.load(&version)).unwrap();
        let ServedModel::Popularity(p) = &loaded.model else {
            panic!("{version} is not popularity")
        };
        let mut want = expected.clone();
        want.extend(3000..6000);
        assert_eq!(p.items(), &want[..], "protocol {protocol}");
        assert_eq!(loaded.meta.model_name, "popularity");
    }
    // Strings holding ids are ids too (the reader accepts ints and strings).
    let Some(bytes) =
        python("import pickle,sys; sys.stdout.buffer.write(pickle.dumps(['5', '7'], protocol=4))")
    else {
        return;
    };
    assert_eq!(recs_core::pickle::read_id_list(&bytes).unwrap(), vec![5, 7]);
}

#[test]
fn class_references_and_reduce_are_refused_by_the_registry() {
    let dir = tempfile::tempdir().unwrap();
    let registry = Registry::open(dir.path().to_str().unwrap()).unwrap();
    let cases: Vec<(&str, &str)> = vec![
        ("v_global", "import pickle,sys,collections; sys.stdout.buffer.write(pickle.dumps([collections.OrderedDict()], protocol=2))"),
        ("v_stack_global", "import pickle,sys,collections; sys.stdout.buffer.write(pickle.dumps([collections.OrderedDict()], protocol=4))"),
    ];
    for (version, code) in cases {
        let Some(bytes) = python(code) else { return };
        write_pickle_version(dir.path(), version, &bytes);
        let err = block_on(registry.load(version)).unwrap_err();
        assert!(
            matches!(
                &err,
                RegistryError::Pickle {
                    source: PickleError::ClassReference { .. },
                    ..
                }
            ),
            "{version}: {err}"
        );
        assert!(err.is_verification_failure());
        assert!(err.to_string().contains("nothing is executed"), "{err}");
    }
    // REDUCE with no class reference before it: `[]` called with `[]`.
    write_pickle_version(dir.path(), "v_reduce", b"\x80\x02]q\x00]q\x01R.");
    let err = block_on(registry.load("v_reduce")).unwrap_err();
    assert!(
        matches!(
            &err,
            RegistryError::Pickle {
                source: PickleError::Call {
                    opcode: "REDUCE",
                    ..
                },
                ..
            }
        ),
        "{err}"
    );
}

#[test]
fn python_teams_v_popularity_top_10() {
    let Some(shared) = shared_or_skip("python_teams_v_popularity_top_10") else {
        return;
    };
    let dir = shared.join("fixtures/seed-registry");
    if !dir.join("v_popularity/model.pkl").is_file() {
        // The fixtures hold only v0.3 so far; the test runs once the file is added.
        eprintln!(
            "SKIP python_teams_v_popularity_top_10: {} has no v_popularity/model.pkl",
            dir.display()
        );
        return;
    }
    let registry = Registry::open(dir.to_str().unwrap()).unwrap();
    let loaded = block_on(registry.load("v_popularity")).unwrap();
    let ServedModel::Popularity(p) = &loaded.model else {
        panic!("not popularity")
    };
    // seed-system.md §2.5.
    assert_eq!(
        &p.items()[..10],
        &[2858, 1196, 260, 1210, 480, 2028, 589, 2571, 1270, 593]
    );
    assert_eq!(p.items().len(), 3703);
}

#[test]
fn switch_to_a_popularity_version_serves_it_without_seen_items() {
    block_on(async {
        let dir = tempfile::tempdir().unwrap();
        let registry = Registry::open(dir.path().to_str().unwrap()).unwrap();
        let a = generate(&GenConfig {
            users: 50,
            items: 40,
            seed: 3,
            ..GenConfig::default()
        })
        .planted_artifacts();
        registry.publish("v0.1", &a).await.unwrap();
        let pop = PopularityArtifacts::from_interactions(&a.users, &a.items, &a.seen);
        registry
            .publish_popularity("v_popularity", &pop, false)
            .await
            .unwrap();
        assert_eq!(
            registry.latest().await.unwrap(),
            "v0.1",
            "latest.txt must not move"
        );

        // Expected ranking computed here from the raw interactions, not by the model.
        let mut counts = vec![0usize; a.items.len()];
        for u in 0..a.seen.rows {
            for &c in a.seen.row(u) {
                counts[c as usize] += 1;
            }
        }
        let mut order: Vec<usize> = (0..a.items.len()).collect();
        order.sort_by_key(|&i| (std::cmp::Reverse(counts[i]), a.items[i]));
        let user_row = 0;
        let user = a.users[user_row];
        let seen: Vec<i64> = a
            .seen
            .row(user_row)
            .iter()
            .map(|&c| a.items[c as usize])
            .collect();
        let want: Vec<i64> = order
            .iter()
            .map(|&i| a.items[i])
            .filter(|m| !seen.contains(m))
            .take(5)
            .collect();

        let config = Config {
            registry: dir.path().display().to_string(),
            ..Config::default()
        };
        let svc = std::sync::Arc::new(Service::start(config).await);
        let sw = e2e_tests::call_all(&svc, &get("/switch?model=v_popularity", &[])).await;
        assert_eq!(sw.status(), 200, "{:?}", sw.body());
        assert_eq!(json(&sw)["model_name"], "popularity");
        let resp = e2e_tests::call_all(&svc, &get(&format!("/recommend/{user}?k=5"), &[])).await;
        assert_eq!(resp.status(), 200);
        let body = json(&resp);
        assert_eq!(body["model"], "v_popularity");
        assert_eq!(body["provenance"]["model_name"], "popularity");
        assert_eq!(body["fallback"], serde_json::Value::Null);
        assert_eq!(items(&body), want);
        // Rollback to the ALS version.
        let back = e2e_tests::call_all(&svc, &get("/switch?model=v0.1", &[])).await;
        assert_eq!(json(&back)["previous_version"], "v_popularity");
    });
}
