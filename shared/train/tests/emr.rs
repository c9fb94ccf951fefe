//! The retrain's Spark path end to end against an emulated EMR Serverless API (a moto
//! server, which serves `emr-serverless` and S3): the retrain uploads the job and its
//! inputs to S3 and starts it; this test then does what EMR would, running the job it
//! was given (the script and arguments read back through GetJobRun) with pyspark in
//! local mode and putting the output where the job was told to; the next step imports,
//! gates, publishes and starts the canary. On the way: a truncated output, a crafted
//! summary, an S3 outage (a proxy in front of moto that refuses connections) and an
//! operator's cancellation, each refused clearly with the registry untouched.
//!
//! Needs Java, pyspark and moto (installed with pip when missing). Without Java or
//! pyspark the test prints SKIP, except under CI=true, where it fails.

use std::io::{Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use recs_core::{Interaction, Store};
use recs_drift::synth;
use recs_train::emr::{self, EmrConfig, EmrError, Step};
use recs_train::gen_data::{generate, GenConfig};
use recs_train::retrain::{Canary, RetrainOptions};
use serde_json::Value;
use sha2::{Digest, Sha256};

const TEST: &str = "spark_path_end_to_end_on_emulated_emr_serverless";

fn in_ci() -> bool {
    std::env::var("CI").is_ok_and(|v| v.eq_ignore_ascii_case("true") || v == "1")
}

fn ready(cmd: &str, args: &[&str]) -> bool {
    Command::new(cmd)
        .args(args)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// Java and pyspark (pip-installed when absent), moto[server] (likewise).
fn prerequisites() -> bool {
    let pip = |pkgs: &[&str]| {
        let mut args = vec!["-m", "pip", "install", "--quiet"];
        args.extend(pkgs);
        ready("python3", &args)
    };
    if !ready("python3", &["-c", "import moto.server, flask"]) {
        assert!(pip(&["moto[server]"]), "pip install 'moto[server]' failed");
    }
    let mut missing = None;
    if !ready("java", &["-version"]) {
        missing = Some("java is not installed (apt-get install openjdk-17-jre-headless)");
    } else {
        let importable = || ready("python3", &["-c", "import pyspark, numpy"]);
        if !importable() && !pip(&["pyspark", "numpy"]) || !importable() {
            missing = Some("pyspark cannot be installed with pip");
        }
    }
    if let Some(what) = missing {
        assert!(!in_ci(), "{TEST}: {what} and CI=true");
        eprintln!("SKIP {TEST}: {what}");
        return false;
    }
    true
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn wait_for_port(port: u16) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(Instant::now() < deadline, "moto did not start on {port}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

struct Moto(Child);

impl Drop for Moto {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A TCP proxy to `upstream`; `down` refuses new connections and cuts open ones.
struct Proxy {
    port: u16,
    down: Arc<AtomicBool>,
    open: Arc<Mutex<Vec<TcpStream>>>,
}

impl Proxy {
    fn start(upstream: u16) -> Proxy {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let down = Arc::new(AtomicBool::new(false));
        let open: Arc<Mutex<Vec<TcpStream>>> = Arc::default();
        let (d, o) = (down.clone(), open.clone());
        std::thread::spawn(move || {
            for client in listener.incoming().flatten() {
                if d.load(Ordering::SeqCst) {
                    let _ = client.shutdown(Shutdown::Both);
                    continue;
                }
                let Ok(server) = TcpStream::connect(("127.0.0.1", upstream)) else {
                    continue;
                };
                let mut list = o.lock().unwrap();
                list.push(client.try_clone().unwrap());
                list.push(server.try_clone().unwrap());
                drop(list);
                for (mut from, mut to) in [
                    (client.try_clone().unwrap(), server.try_clone().unwrap()),
                    (server, client),
                ] {
                    std::thread::spawn(move || {
                        let mut buf = [0u8; 16 * 1024];
                        while let Ok(n) = from.read(&mut buf) {
                            if n == 0 || to.write_all(&buf[..n]).is_err() {
                                break;
                            }
                        }
                        let _ = to.shutdown(Shutdown::Write);
                    });
                }
            }
        });
        Proxy { port, down, open }
    }

    fn set_down(&self, down: bool) {
        self.down.store(down, Ordering::SeqCst);
        if down {
            for s in self.open.lock().unwrap().drain(..) {
                let _ = s.shutdown(Shutdown::Both);
            }
        }
    }
}

async fn s3() -> aws_sdk_s3::Client {
    let config = aws_config::load_from_env().await;
    aws_sdk_s3::Client::from_conf(
        aws_sdk_s3::config::Builder::from(&config)
            .force_path_style(true)
            .build(),
    )
}

async fn get(key: &str) -> Option<Vec<u8>> {
    let out = s3().await.get_object().bucket("recs").key(key).send().await;
    match out {
        Ok(o) => Some(o.body.collect().await.unwrap().into_bytes().to_vec()),
        Err(_) => None,
    }
}

async fn get_json(key: &str) -> Value {
    serde_json::from_slice(&get(key).await.unwrap_or_else(|| panic!("{key} missing"))).unwrap()
}

async fn put(key: &str, bytes: Vec<u8>) {
    s3().await
        .put_object()
        .bucket("recs")
        .key(key)
        .body(bytes.into())
        .send()
        .await
        .unwrap();
}

/// Every key under `prefix`.
async fn keys(prefix: &str) -> Vec<String> {
    let out = s3()
        .await
        .list_objects_v2()
        .bucket("recs")
        .prefix(prefix)
        .send()
        .await
        .unwrap();
    let mut k: Vec<String> = out
        .contents()
        .iter()
        .filter_map(|o| o.key().map(str::to_string))
        .collect();
    k.sort();
    k
}

/// What must never change when a step is refused: the versions and the pointers.
async fn registry_state() -> (Vec<String>, Option<Vec<u8>>, Option<Vec<u8>>) {
    let versions = keys("reg/v")
        .await
        .into_iter()
        .filter(|k| k.ends_with("/meta.json") && k.matches('/').count() == 2)
        .collect();
    (
        versions,
        get("reg/latest.txt").await,
        get("reg/active.json").await,
    )
}

fn files_under(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).unwrap().flatten() {
        if e.path().is_dir() {
            out.extend(files_under(&e.path()));
        } else {
            out.push(e.path());
        }
    }
    out
}

/// What EMR would do with the job run `id`: the script and arguments it was given,
/// with the S3 input fetched, run by pyspark in local mode; returns the local output
/// folder and the output's S3 key prefix.
async fn run_like_emr(
    emr_client: &aws_sdk_emrserverless::Client,
    app: &str,
    id: &str,
    dir: &Path,
) -> (PathBuf, String) {
    let run = emr_client
        .get_job_run()
        .application_id(app)
        .job_run_id(id)
        .send()
        .await
        .unwrap();
    let run = run.job_run().unwrap();
    let aws_sdk_emrserverless::types::JobDriver::SparkSubmit(submit) = run.job_driver().unwrap()
    else {
        panic!("not a sparkSubmit job driver")
    };
    let key_of = |uri: &str| uri.strip_prefix("s3://recs/").unwrap().to_string();
    let script = get(&key_of(submit.entry_point())).await.unwrap();
    // The script the retrain uploaded is the product file, byte for byte.
    let product = std::fs::read(concat!(env!("CARGO_MANIFEST_DIR"), "/spark/als_job.py")).unwrap();
    assert_eq!(script, product);
    let script_path = dir.join("als_job.py");
    std::fs::write(&script_path, script).unwrap();
    let mut args: Vec<String> = submit.entry_point_arguments().to_vec();
    let at = |args: &[String], flag: &str| args.iter().position(|a| a == flag).unwrap() + 1;
    let (ti, oi) = (at(&args, "--train"), at(&args, "--out"));
    let train = dir.join("train.csv");
    std::fs::write(&train, get(&key_of(&args[ti])).await.unwrap()).unwrap();
    let out_prefix = key_of(&args[oi]);
    let out = dir.join("out");
    args[ti] = train.display().to_string();
    args[oi] = out.display().to_string();
    // One core, two blocks: local mode on a small machine.
    let bi = at(&args, "--blocks");
    args[bi] = "2".into();
    let t = Instant::now();
    let py = Command::new("python3")
        .arg(&script_path)
        .args(&args)
        .args(["--master", "local[1]"])
        .output()
        .unwrap();
    assert!(
        py.status.success(),
        "the Spark job failed: {}{}",
        String::from_utf8_lossy(&py.stdout),
        String::from_utf8_lossy(&py.stderr)
    );
    eprintln!(
        "{TEST}: pyspark local mode ran the job in {:.1} s",
        t.elapsed().as_secs_f64()
    );
    (out, out_prefix)
}

/// Uploads the local output folder under `prefix`; `edit` may change a file's bytes
/// (by its path relative to the folder) or drop it (`None`).
async fn upload(out: &Path, prefix: &str, edit: impl Fn(&str, Vec<u8>) -> Option<Vec<u8>>) {
    for f in files_under(out) {
        let rel = f.strip_prefix(out).unwrap().to_string_lossy().into_owned();
        if let Some(bytes) = edit(&rel, std::fs::read(&f).unwrap()) {
            put(&format!("{prefix}/{rel}"), bytes).await;
        }
    }
}

/// How many job runs the application has.
async fn job_runs(emr: &aws_sdk_emrserverless::Client, app: &str) -> usize {
    emr.list_job_runs()
        .application_id(app)
        .send()
        .await
        .unwrap()
        .job_runs()
        .len()
}

fn started(step: Result<Step, EmrError>) -> emr::JobRecord {
    match step {
        Ok(Step::Started(r)) => r,
        other => panic!("expected a started job, got {other:?}"),
    }
}

#[test]
fn spark_path_end_to_end_on_emulated_emr_serverless() {
    if !prerequisites() {
        return;
    }
    let t_test = Instant::now();
    let moto_port = free_port();
    let _moto = Moto(
        Command::new("python3")
            .args(["-m", "moto.server", "-H", "127.0.0.1", "-p"])
            .arg(moto_port.to_string())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    wait_for_port(moto_port);
    let proxy = Proxy::start(moto_port);
    // S3 through the proxy (so it can go down), EMR Serverless straight to moto.
    for (k, v) in [
        (
            "AWS_ENDPOINT_URL_S3",
            format!("http://127.0.0.1:{}", proxy.port),
        ),
        (
            "AWS_ENDPOINT_URL_EMR_SERVERLESS",
            format!("http://127.0.0.1:{moto_port}"),
        ),
        ("AWS_ACCESS_KEY_ID", "test".into()),
        ("AWS_SECRET_ACCESS_KEY", "test".into()),
        ("AWS_REGION", "us-east-1".into()),
        ("AWS_EC2_METADATA_DISABLED", "true".into()),
        ("AWS_MAX_ATTEMPTS", "2".into()),
    ] {
        std::env::set_var(k, v);
    }
    let rt = tokio::runtime::Builder::new_multi_thread()
        .thread_stack_size(16 << 20)
        .enable_all()
        .build()
        .unwrap();
    // The steps' futures are large in a debug build: on the heap, run on a worker.
    rt.block_on(rt.spawn(Box::pin(async move {
        s3().await
            .create_bucket()
            .bucket("recs")
            .send()
            .await
            .unwrap();
        let emr_client = emr::client_from_env().await;
        let app = emr_client
            .create_application()
            .name("movie-recs-training")
            .release_label("emr-7.5.0")
            .r#type("SPARK")
            .send()
            .await
            .unwrap()
            .application_id()
            .to_string();

        // v0.1 from a snapshot, trained here; the rate events since, on S3.
        let dir = tempfile::tempdir().unwrap();
        let d = generate(&GenConfig {
            users: 300,
            items: 150,
            factors: 6,
            ratings_per_user: 30,
            seed: 5,
            ..GenConfig::default()
        });
        let mut ts: Vec<i64> = d.ratings.iter().filter_map(|r| r.ts_ms).collect();
        ts.sort_unstable();
        let cut = ts[ts.len() * 3 / 4];
        let (before, after): (Vec<Interaction>, Vec<Interaction>) =
            d.ratings.iter().partition(|r| r.ts_ms.unwrap() < cut);
        let end = ts[ts.len() - 1] + 1;
        let snapshot = dir.path().join("initial.csv");
        synth::write_ratings_csv(&before, &snapshot).unwrap();
        let registry = "s3://recs/reg";
        let mut t = recs_train::TrainOptions::new(&snapshot, registry);
        t.version = Some("v0.1".into());
        t.als.factors = 8;
        t.als.iterations = 5;
        t.popularity_version = None;
        recs_train::train(&t).await.unwrap();
        let events = Store::open("s3://recs/events").unwrap();
        synth::write_events(&events, &after, 500).await.unwrap();

        let mut opts = RetrainOptions::new(registry, "s3://recs/events");
        opts.until_ms = end + 60_000;
        opts.snapshots = Some("s3://recs/reg-snapshots".into());
        opts.work_dir = Some(dir.path().join("scratch"));
        let mut cfg = EmrConfig::new(
            &app,
            "arn:aws:iam::123456789012:role/movie-recs-emr-job",
            "s3://recs/reg-spark",
        );
        // Every snapshot of this test (about 9,000 rows) goes to Spark.
        cfg.above_rows = 1_000;
        let pristine = registry_state().await;
        assert_eq!(pristine.0, vec!["reg/v0.1/meta.json".to_string()]);

        // 1. A truncated part file: refused, recorded as failed, nothing published.
        let r1 = started(emr::step(&opts, 10.0, &cfg, &emr_client).await);
        let rec = get_json("reg/spark-jobs/current.json").await;
        assert_eq!(rec["state"], "running");
        let id1 = r1.job_run_id.clone().unwrap();
        assert_eq!(rec["job_run_id"].as_str(), Some(id1.as_str()));
        assert_eq!(rec["base_version"], "v0.1");
        let local = dir.path().join("emr");
        std::fs::create_dir_all(&local).unwrap();
        let (out, prefix) = run_like_emr(&emr_client, &app, &id1, &local).await;
        // The job read the retrain's training file: its counts are the file's, by count here.
        let train_csv = std::fs::read_to_string(local.join("train.csv")).unwrap();
        let rows = train_csv.lines().count() - 1;
        let summary_file = files_under(&out.join("summary"))
            .into_iter()
            .find(|p| p.to_string_lossy().ends_with(".txt"))
            .unwrap();
        let summary: Value =
            serde_json::from_str(std::fs::read_to_string(&summary_file).unwrap().trim()).unwrap();
        assert_eq!(summary["rows"].as_u64(), Some(rows as u64));
        assert_eq!(summary["rank"], 8);
        upload(&out, &prefix, |rel, b| {
            if rel.starts_with("model/itemFactors/part-") && rel.ends_with(".parquet") {
                Some(b[..b.len() / 2].to_vec())
            } else {
                Some(b)
            }
        })
        .await;
        let e = emr::step(&opts, 10.0, &cfg, &emr_client).await.unwrap_err();
        assert!(matches!(e, EmrError::Output { .. }), "{e:?}");
        assert!(e.to_string().contains("not a readable Parquet file"), "{e}");
        let rec = get_json("reg/spark-jobs/current.json").await;
        assert_eq!(rec["state"], "failed");
        assert!(rec["detail"]
            .as_str()
            .unwrap()
            .contains("not a readable Parquet file"));
        assert_eq!(registry_state().await, pristine);

        // 2. A crafted summary (one user more than the input has): refused the same way.
        let r2 = started(emr::step(&opts, 10.0, &cfg, &emr_client).await);
        assert_ne!(r2.job_run_id, r1.job_run_id);
        let prefix2 = format!("reg-spark/{}/out", r2.run_dir);
        upload(&out, &prefix2, |rel, b| {
            if rel.starts_with("summary/part-") {
                let mut v: Value = serde_json::from_slice(&b).unwrap();
                v["users"] = (v["users"].as_u64().unwrap() + 1).into();
                Some(serde_json::to_vec(&v).unwrap())
            } else {
                Some(b)
            }
        })
        .await;
        let e = emr::step(&opts, 10.0, &cfg, &emr_client).await.unwrap_err();
        assert!(e.to_string().contains("summary says users"), "{e}");
        assert_eq!(
            get_json("reg/spark-jobs/current.json").await["state"],
            "failed"
        );
        assert_eq!(registry_state().await, pristine);

        // 3. The whole output, then S3 goes down: a clear error, the record as it was.
        let r3 = started(emr::step(&opts, 10.0, &cfg, &emr_client).await);
        let prefix3 = format!("reg-spark/{}/out", r3.run_dir);
        upload(&out, &prefix3, |_, b| Some(b)).await;
        let before = get("reg/spark-jobs/current.json").await.unwrap();
        proxy.set_down(true);
        let e = emr::step(&opts, 10.0, &cfg, &emr_client).await.unwrap_err();
        proxy.set_down(false);
        assert!(matches!(e, EmrError::Store { .. }), "{e:?}");
        assert!(e.to_string().contains("storage unavailable"), "{e}");
        assert_eq!(get("reg/spark-jobs/current.json").await.unwrap(), before);
        assert_eq!(registry_state().await, pristine);

        // ... and back: imported, gated against v0.1, published, canary started.
        let (record, report, canary) = match emr::step(&opts, 10.0, &cfg, &emr_client).await {
            Ok(Step::Finished {
                record,
                report,
                canary,
            }) => (record, report.unwrap(), canary),
            other => panic!("expected the import, got {other:?}"),
        };
        assert!(
            matches!(&canary, Canary::Started { version, .. } if version == "v0.2"),
            "{canary:?}; gate: {}",
            report.train.gate.reasons()
        );
        eprintln!(
            "{TEST}: NDCG@10 Spark {:?}, v0.1 {:?}, popularity {:?}",
            report.ndcg_new, report.ndcg_current, report.ndcg_popularity
        );
        // Gated against the version it retrained from, on the holdout, with no margin.
        assert!(report.ndcg_current.is_some() && report.ndcg_new >= report.ndcg_current);
        assert!(report.ndcg_new > report.ndcg_popularity);
        assert_eq!(record.job_run_id, r3.job_run_id);
        let rec = get_json("reg/spark-jobs/current.json").await;
        assert_eq!(rec["state"], "published");
        assert_eq!(rec["version"], "v0.2");
        let meta = get_json("reg/v0.2/meta.json").await;
        assert_eq!(meta["model_name"], "spark-als");
        assert_eq!(
            meta["trained_by"],
            "recs retrain (Spark ALS on EMR Serverless)"
        );
        // The version's data is the new snapshot, content-addressed: its SHA-256 here.
        let uri = meta["data_snapshot_uri"].as_str().unwrap();
        let snap = get(uri.strip_prefix("s3://recs/").unwrap()).await.unwrap();
        assert_eq!(
            meta["data_snapshot_id"].as_str().unwrap(),
            recs_core::hash::hex(&Sha256::digest(&snap))
        );
        assert_eq!(
            snap.iter().filter(|&&b| b == b'\n').count() - 1,
            d.ratings.len()
        );
        let als = get_json("reg/v0.2/als/meta.json").await;
        assert_eq!(als["factors"], 8);
        assert_eq!(als["spark"]["rank"], 8);
        // The canary: v0.1 still active, v0.2 at 10 %.
        let active = get_json("reg/active.json").await;
        assert_eq!(active["active_version"], "v0.1");
        assert_eq!(active["rollout"]["strategy"], "canary");
        assert_eq!(active["rollout"]["canary_version"], "v0.2");
        assert_eq!(active["rollout"]["canary_percentage"].as_f64(), Some(10.0));
        let published = registry_state().await;
        assert_eq!(published.0.len(), 2);

        // 4. An operator cancels the next job: recorded, nothing published.
        let r4 = started(emr::step(&opts, 10.0, &cfg, &emr_client).await);
        emr_client
            .cancel_job_run()
            .application_id(&app)
            .job_run_id(r4.job_run_id.as_deref().unwrap())
            .send()
            .await
            .unwrap();
        let e = emr::step(&opts, 10.0, &cfg, &emr_client).await.unwrap_err();
        assert!(e.to_string().contains("ended CANCELLED"), "{e}");
        assert_eq!(
            get_json("reg/spark-jobs/current.json").await["state"],
            "cancelled"
        );
        assert_eq!(registry_state().await, published);

        // 5. At or below the threshold the retrain trains here, as without Spark.
        cfg.above_rows = 1_000_000;
        match emr::step(&opts, 10.0, &cfg, &emr_client).await {
            Ok(Step::Trained(done)) => {
                assert_eq!(done.report.train.published.as_deref(), Some("v0.3"));
            }
            other => panic!("expected a local retrain, got {other:?}"),
        }
        assert_eq!(
            get_json("reg/v0.3/meta.json").await["trained_by"],
            "recs retrain"
        );
        // Every job's logs were sent to its run folder.
        let run = emr_client
            .get_job_run()
            .application_id(&app)
            .job_run_id(r3.job_run_id.as_deref().unwrap())
            .send()
            .await
            .unwrap();
        let logs = run
            .job_run()
            .and_then(|j| j.configuration_overrides())
            .and_then(|c| c.monitoring_configuration())
            .and_then(|m| m.s3_monitoring_configuration())
            .and_then(|s| s.log_uri())
            .map(str::to_string);
        assert_eq!(
            logs,
            Some(format!("s3://recs/reg-spark/{}/logs/", r3.run_dir))
        );

        // 6. StartJobRun reached EMR but its answer was lost: the record stayed
        // `starting`. The next step finds the run by its name and starts no other.
        let mut lost = get_json("reg/spark-jobs/current.json").await;
        lost["state"] = "starting".into();
        lost["job_run_id"] = Value::Null;
        lost["finished_ms"] = Value::Null;
        lost["client_token"] = "lost-answer-token".into();
        lost["started_ms"] = recs_core::time::now_ms().into();
        put(
            "reg/spark-jobs/current.json",
            serde_json::to_vec(&lost).unwrap(),
        )
        .await;
        let orphan = emr_client
            .start_job_run()
            .application_id(&app)
            .client_token("lost-answer-token")
            .name("movie-recs-als-lost-answer-token")
            .execution_role_arn("arn:aws:iam::123456789012:role/movie-recs-emr-job")
            .send()
            .await
            .unwrap()
            .job_run_id()
            .to_string();
        let runs_before = job_runs(&emr_client, &app).await;
        let found = started(emr::step(&opts, 10.0, &cfg, &emr_client).await);
        assert_eq!(found.job_run_id.as_deref(), Some(orphan.as_str()));
        let rec = get_json("reg/spark-jobs/current.json").await;
        assert_eq!(rec["state"], "running");
        assert_eq!(rec["job_run_id"].as_str(), Some(orphan.as_str()));
        let runs_after = job_runs(&emr_client, &app).await;
        assert_eq!(runs_after, runs_before);
    })))
    .unwrap();
    eprintln!("{TEST}: {:.1} s", t_test.elapsed().as_secs_f64());
}
