//! The model registry in the Python team's layout (DESIGN.md, "Model registry"):
//!
//! ```text
//! <root>/latest.txt
//! <root>/<version>/meta.json
//! <root>/<version>/als/{user_factors.npy, item_factors.npy, users.json, items.json,
//!                       seen_csr.npz, meta.json}
//! <root>/<version>/popularity/{items.json, counts.json, users.json, seen_csr.npz, meta.json}
//! <root>/<version>/model.pkl            the Python team's v_popularity (a pickled list)
//! ```
//!
//! A version is ALS when it has `als/`, else popularity when it has `popularity/` or
//! `model.pkl`.
//!
//! Reading verifies everything before a model is handed out; publishing writes a
//! complete version under a temporary name, verifies it by reading it back, and only
//! then renames it into place and moves `latest.txt`.

use std::path::Path;
use std::time::Instant;

use serde_json::Value;
use sha2::{Digest, Sha256};

use crate::ann::{self, AnnBuild, AnnError};
#[cfg(feature = "ann")]
use crate::ann::{AnnIndex, AnnParams};
use crate::csr::CsrPattern;
use crate::hash::hex;
use crate::model::{AlsModel, Factors, ModelError};
use crate::npy::{self, NpyError};
use crate::npz::{self, NpzError};
use crate::pickle::{self, PickleError};
use crate::popularity::{PopularityModel, ServedModel};
use crate::store::{Store, StoreError};

/// Top-level folders that are not versions (the drift job's results, the retrain's
/// snapshots, its Spark job record).
const RESERVED: [&str; 3] = ["drift", SNAPSHOTS_DIR, SPARK_JOBS_DIR];

/// Where the retrain's Spark path records the job it started
/// (`spark-jobs/current.json`, recs-train `emr`).
pub const SPARK_JOBS_DIR: &str = "spark-jobs";

/// Where `recs train` keeps the data each version was trained from
/// (`snapshots/<sha256>.<ext>`, the version's `data_snapshot_uri`), so `recs retrain`
/// finds it wherever the original file was.
pub const SNAPSHOTS_DIR: &str = "snapshots";

/// Where publishers claim version names (`.claims/<version>`, written with
/// If-None-Match: *), so two concurrent publishers never write one version.
pub const CLAIMS_DIR: &str = ".claims";

/// Where the drift job stores its last summary (`{"features": {name: psi}, ...}`),
/// relative to the registry root; `recs serve` shows it in `/metrics`.
pub const DRIFT_LATEST_KEY: &str = "drift/latest.json";

/// The folder inside a version that holds the ALS artifacts.
pub const MODEL_DIR: &str = "als";
/// The folder inside a version that holds a popularity ranking.
pub const POPULARITY_DIR: &str = "popularity";
/// The Python team's popularity model: a pickled list of movie ids in the version.
const PICKLE_FILE: &str = "model.pkl";
const REQUIRED: [&str; 5] = [
    "user_factors.npy",
    "item_factors.npy",
    "users.json",
    "items.json",
    "seen_csr.npz",
];

/// Why a registry operation failed.
#[derive(Debug, thiserror::Error)]
pub enum RegistryError {
    /// A version name fails [`validate_version`] (the name).
    #[error(
        "invalid version name {0:?}: use letters, digits, '.', '_' or '-' (at most 64, no '..')"
    )]
    InvalidVersion(String),
    /// The version has no files under `<version>/als/` or `<version>/popularity/`,
    /// and no `model.pkl` (the name).
    #[error("version {0} does not exist in the registry")]
    UnknownVersion(String),
    /// The registry has no `latest.txt` (the registry's location).
    #[error("registry has no latest.txt at {0}")]
    NoLatest(String),
    /// A required artifact is absent from a version.
    #[error("version {version} is missing {file}")]
    MissingFile {
        /// The version checked.
        version: String,
        /// The missing file, relative to the version (e.g. `als/users.json`).
        file: String,
    },
    /// A factor file is not a valid float32 `.npy`.
    #[error("{file}: {source}")]
    Npy {
        /// The file, relative to the version.
        file: String,
        /// Why it was refused.
        #[source]
        source: NpyError,
    },
    /// `seen_csr.npz` is not a valid scipy CSR matrix.
    #[error("{file}: {source}")]
    Npz {
        /// The file, relative to the version.
        file: String,
        /// Why it was refused.
        #[source]
        source: NpzError,
    },
    /// `model.pkl` holds something other than a plain list of ids.
    #[error("{file}: {source}")]
    Pickle {
        /// The file, relative to the version.
        file: String,
        /// Why it was refused.
        #[source]
        source: PickleError,
    },
    /// An id list or meta.json is not valid JSON or has the wrong structure.
    #[error("{file}: {reason}")]
    BadJson {
        /// The file, relative to the version.
        file: String,
        /// What is wrong with it.
        reason: String,
    },
    /// `als/hnsw.idx` is unreadable, corrupt or does not fit the model, or could not
    /// be built at publish time.
    #[error("{file}: {source}")]
    Ann {
        /// The file, relative to the version.
        file: String,
        /// Why it was refused.
        #[source]
        source: AnnError,
    },
    /// The artifacts parse but do not form a servable model.
    #[error(transparent)]
    Model(#[from] ModelError),
    /// The files' hash differs from the `artifact_sha` in meta.json.
    #[error("checksum mismatch: meta.json says artifact_sha {expected}, files hash to {actual}")]
    Checksum {
        /// The `artifact_sha` recorded in meta.json.
        expected: String,
        /// The hex SHA-256 of the files as read ([`artifact_sha`]).
        actual: String,
    },
    /// The underlying store failed or an object is missing.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// A local filesystem operation failed (publishing's rename into place).
    #[error("registry I/O error at {path}: {source}")]
    Io {
        /// The path operated on.
        path: String,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// Publishing refused because the version already exists (the name).
    #[error("version {0} already exists; refusing to overwrite it")]
    VersionExists(String),
}

impl RegistryError {
    /// True when the version itself is bad (as opposed to the registry being
    /// unreachable): a switch to it is refused with 422, not retried.
    pub fn is_verification_failure(&self) -> bool {
        !matches!(
            self,
            RegistryError::Io { .. }
                | RegistryError::UnknownVersion(_)
                | RegistryError::InvalidVersion(_)
                | RegistryError::NoLatest(_)
                | RegistryError::Store(_)
        )
    }
}

/// Checks a version name: `[A-Za-z0-9][A-Za-z0-9._-]{0,63}` and no `..`, so it can
/// never name a path outside its registry.
pub fn validate_version(name: &str) -> Result<(), RegistryError> {
    let ok = !name.is_empty()
        && name.len() <= 64
        && name.as_bytes()[0].is_ascii_alphanumeric()
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
        && !name.contains("..");
    if ok {
        Ok(())
    } else {
        Err(RegistryError::InvalidVersion(name.to_string()))
    }
}

/// `vX.Y` as numbers, for ordering versions.
pub fn parse_semver(name: &str) -> Option<(u64, u64)> {
    let (major, minor) = name.strip_prefix('v')?.split_once('.')?;
    Some((major.parse().ok()?, minor.parse().ok()?))
}

/// SHA-256 over files sorted by relative path, feeding each path's bytes then the
/// file's bytes: the Python exporter's `artifact_sha`.
pub fn artifact_sha<'a>(files: impl IntoIterator<Item = (&'a str, &'a [u8])>) -> String {
    let mut files: Vec<_> = files.into_iter().collect();
    files.sort_by(|a, b| a.0.cmp(b.0));
    let mut h = Sha256::new();
    for (path, bytes) in files {
        h.update(path.as_bytes());
        h.update(bytes);
    }
    hex(&h.finalize())
}

/// The version-level `meta.json`, with the provenance fields pulled out. The Python
/// team's v0.3 nests some of them under `"version": {...}`; the top level wins.
#[derive(Debug, Clone, Default)]
pub struct VersionMeta {
    /// The whole parsed meta.json; `null` when the version has none.
    pub raw: Value,
    /// The model family; `als` when absent.
    pub model_name: String,
    /// The commit the model was built from; `unknown` when absent.
    pub git_sha: String,
    /// The id of the training data snapshot; `unknown` when absent.
    pub data_snapshot_id: String,
    /// The container image digest recorded with the version, if any.
    pub image_digest: Option<String>,
    /// The expected hex SHA-256 of the `als/` files ([`artifact_sha`]), if recorded.
    pub artifact_sha: Option<String>,
    /// When the version was created (RFC 3339, as written), if recorded.
    pub created_at: Option<String>,
}

impl VersionMeta {
    fn from_json(raw: Value) -> Self {
        let field = |key: &str| {
            raw.get(key)
                .and_then(Value::as_str)
                .or_else(|| raw.get("version")?.get(key)?.as_str())
                .filter(|s| !s.is_empty())
                .map(str::to_string)
        };
        VersionMeta {
            model_name: field("model_name").unwrap_or_else(|| "als".into()),
            git_sha: field("git_sha").unwrap_or_else(|| "unknown".into()),
            data_snapshot_id: field("data_snapshot_id").unwrap_or_else(|| "unknown".into()),
            image_digest: field("image_digest"),
            artifact_sha: field("artifact_sha"),
            created_at: field("created_at"),
            raw,
        }
    }
}

/// A verified version, ready to serve.
#[derive(Debug)]
pub struct LoadedModel {
    /// The version's name.
    pub version: String,
    /// Its version-level meta.json.
    pub meta: VersionMeta,
    /// `als/meta.json` (hyper-parameters, offline metrics), `null` when absent.
    pub model_meta: Value,
    /// The verified model.
    pub model: ServedModel,
    /// Hex SHA-256 of the model folder's files as read ([`artifact_sha`]).
    pub artifact_sha: String,
    /// Total size of the `als/` files, in bytes.
    pub artifact_size: u64,
    /// Wall-clock seconds [`Registry::load`] took to fetch and verify it (0 otherwise).
    pub load_seconds: f64,
    /// Each item row's genres and year, from the process's catalog, built on the
    /// first filtered request (a process serves one catalog), and the rows of the
    /// recent filters.
    pub item_attributes: crate::filter::RowCache,
}

/// Everything needed to publish a version.
pub struct Artifacts {
    /// The users x factors matrix, rows in `users` order.
    pub user_factors: Factors,
    /// The items x factors matrix, rows in `items` order.
    pub item_factors: Factors,
    /// Raw user ids, one per user-factor row.
    pub users: Vec<i64>,
    /// Raw movie ids, one per item-factor row.
    pub items: Vec<i64>,
    /// The training interactions (users x items), excluded when recommending.
    pub seen: CsrPattern,
    /// Written as `als/meta.json` and copied into the version meta's `metrics`.
    pub model_meta: Value,
    /// Extra version-level fields (git_sha, data_snapshot_id, notes...).
    pub version_fields: serde_json::Map<String, Value>,
    /// Whether [`Registry::publish`] builds `als/hnsw.idx` ([`ann`](crate::ann)).
    pub ann: AnnBuild,
}

/// Everything needed to publish a popularity version (`<version>/popularity/`).
pub struct PopularityArtifacts {
    /// Movie ids, most popular first.
    pub items: Vec<i64>,
    /// Interaction counts in `items` order (non-increasing).
    pub counts: Vec<f64>,
    /// Raw user ids and their seen items (users x `items`, in ranking order), so a
    /// known user is not shown what they already interacted with.
    pub seen: Option<(Vec<i64>, CsrPattern)>,
    /// Written as `popularity/meta.json` and copied into the version meta's `metrics`.
    pub model_meta: Value,
    /// Extra version-level fields (git_sha, data_snapshot_id...).
    pub version_fields: serde_json::Map<String, Value>,
}

impl PopularityArtifacts {
    /// The ranking of a set of training interactions (users x items, as in an ALS
    /// version): items by descending count, ties by lower item row, with every
    /// user's seen items carried over.
    pub fn from_interactions(users: &[i64], items: &[i64], seen: &CsrPattern) -> Self {
        let counts = seen.column_counts();
        let mut order: Vec<usize> = (0..items.len()).collect();
        order.sort_by(|&a, &b| counts[b].cmp(&counts[a]).then(a.cmp(&b)));
        let mut rank = vec![0u32; items.len()];
        for (r, &row) in order.iter().enumerate() {
            rank[row] = r as u32;
        }
        let rows = (0..seen.rows)
            .map(|u| seen.row(u).iter().map(|&c| rank[c as usize]).collect())
            .collect();
        PopularityArtifacts {
            items: order.iter().map(|&r| items[r]).collect(),
            counts: order.iter().map(|&r| counts[r] as f64).collect(),
            seen: Some((users.to_vec(), CsrPattern::from_rows(items.len(), rows))),
            model_meta: Value::Null,
            version_fields: Default::default(),
        }
    }
}

/// Encodes popularity artifacts as the files of `<version>/popularity`.
fn encode_popularity(a: &PopularityArtifacts) -> Vec<(String, Vec<u8>)> {
    let mut files = vec![
        (
            "items.json".to_string(),
            serde_json::to_vec(&a.items).expect("ids serialise"),
        ),
        (
            "counts.json".to_string(),
            serde_json::to_vec(&a.counts).expect("counts serialise"),
        ),
        (
            "meta.json".to_string(),
            serde_json::to_vec_pretty(&a.model_meta).expect("JSON"),
        ),
    ];
    if let Some((users, seen)) = &a.seen {
        files.push((
            "users.json".into(),
            serde_json::to_vec(users).expect("ids serialise"),
        ));
        files.push(("seen_csr.npz".into(), npz::write_csr(seen)));
    }
    files
}

/// Which kind of model a version's files are.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Als,
    Popularity,
    Pickle,
}

impl Kind {
    fn dir(self) -> &'static str {
        match self {
            Kind::Als => MODEL_DIR,
            Kind::Popularity => POPULARITY_DIR,
            Kind::Pickle => "",
        }
    }
    fn name(self) -> &'static str {
        match self {
            Kind::Als => "als",
            Kind::Popularity | Kind::Pickle => "popularity",
        }
    }
}

/// A registry: a folder or `s3://bucket/prefix` (see [`Store`]).
#[derive(Debug, Clone)]
pub struct Registry {
    store: Store,
}

impl Registry {
    /// Opens a `MODEL_REGISTRY`-style location: a folder path or `s3://bucket/prefix`.
    /// Nothing is read yet; the first operation reports an unreachable registry.
    pub fn open(location: &str) -> Result<Self, RegistryError> {
        Ok(Registry {
            store: Store::open(location)?,
        })
    }

    /// The underlying object store.
    pub fn store(&self) -> &Store {
        &self.store
    }

    /// The root folder of a folder registry (`None` on S3).
    pub fn local_root(&self) -> Option<&Path> {
        self.store.local_root()
    }

    /// A human-readable location.
    pub fn location(&self) -> String {
        self.store.location()
    }

    /// The version named in `latest.txt`.
    pub async fn latest(&self) -> Result<String, RegistryError> {
        let bytes = match self.store.get("latest.txt").await {
            Ok(b) => b,
            Err(StoreError::NotFound(_)) => return Err(RegistryError::NoLatest(self.location())),
            Err(e) => return Err(e.into()),
        };
        let version = String::from_utf8_lossy(&bytes).trim().to_string();
        validate_version(&version)?;
        Ok(version)
    }

    /// Version folders present in the registry (any name that validates), sorted
    /// with `vX.Y` names in numeric order first.
    pub async fn versions(&self) -> Result<Vec<String>, RegistryError> {
        let mut names: Vec<String> = self
            .store
            .list_dirs()
            .await?
            .into_iter()
            .filter(|n| validate_version(n).is_ok() && !RESERVED.contains(&n.as_str()))
            .collect();
        names.sort_by_key(|n| (parse_semver(n).is_none(), parse_semver(n), n.clone()));
        Ok(names)
    }

    /// `vX.Y` after the highest existing one (minor + 1), or `v0.1` for an empty
    /// registry; other names (`v_ncf`) do not count.
    /// Names claimed by a publish still in flight count too.
    pub async fn next_version(&self) -> Result<String, RegistryError> {
        let mut names = self.versions().await?;
        names.extend(self.store.list(CLAIMS_DIR).await?);
        let highest = names.iter().filter_map(|v| parse_semver(v)).max();
        Ok(match highest {
            Some((major, minor)) => format!("v{major}.{}", minor + 1),
            None => "v0.1".into(),
        })
    }

    /// Files under `<version>/<dir>`, as (relative path, bytes), fetched concurrently.
    async fn read_dir_files(
        &self,
        version: &str,
        dir: &str,
    ) -> Result<Vec<(String, Vec<u8>)>, RegistryError> {
        let dir = format!("{version}/{dir}");
        let keys = self.store.list(&dir).await?;
        if keys.is_empty() {
            return Err(RegistryError::UnknownVersion(version.to_string()));
        }
        let mut tasks = tokio::task::JoinSet::new();
        for rel in keys {
            let store = self.store.clone();
            let key = format!("{dir}/{rel}");
            tasks.spawn(async move { store.get(&key).await.map(|b| (rel, b)) });
        }
        let mut files = Vec::new();
        while let Some(joined) = tasks.join_next().await {
            files.push(joined.expect("fetch task panicked")?);
        }
        Ok(files)
    }

    /// Loads and verifies a version: every file read, checksum compared with
    /// meta.json, shapes, widths, finiteness and ids checked.
    pub async fn load(&self, version: &str) -> Result<LoadedModel, RegistryError> {
        validate_version(version)?;
        let started = Instant::now();
        let meta_key = format!("{version}/meta.json");
        let (files, meta_raw) = tokio::join!(
            self.read_dir_files(version, MODEL_DIR),
            self.store.get(&meta_key)
        );
        let (kind, files) = match files {
            Ok(f) => (Kind::Als, f),
            Err(RegistryError::UnknownVersion(_)) => self.read_other_kinds(version).await?,
            Err(e) => return Err(e),
        };
        let meta_raw = match meta_raw {
            Ok(bytes) => Some(bytes),
            Err(StoreError::NotFound(_)) => None,
            Err(e) => return Err(e.into()),
        };
        // Checking and parsing a large version is a few hundred ms of CPU (and
        // rayon's threads): off the async workers, which keep serving meanwhile.
        let name = version.to_string();
        let parsed = tokio::task::spawn_blocking(move || {
            parse_version(&name, kind, &files, meta_raw.as_deref())
        })
        .await;
        let mut loaded = match parsed {
            Ok(result) => result?,
            Err(e) => std::panic::resume_unwind(e.into_panic()),
        };
        loaded.load_seconds = started.elapsed().as_secs_f64();
        Ok(loaded)
    }

    /// A version without `als/`: `popularity/`, else the Python team's `model.pkl`.
    async fn read_other_kinds(
        &self,
        version: &str,
    ) -> Result<(Kind, Vec<(String, Vec<u8>)>), RegistryError> {
        match self.read_dir_files(version, POPULARITY_DIR).await {
            Ok(f) => return Ok((Kind::Popularity, f)),
            Err(RegistryError::UnknownVersion(_)) => {}
            Err(e) => return Err(e),
        }
        match self.store.get(&format!("{version}/{PICKLE_FILE}")).await {
            Ok(bytes) => Ok((Kind::Pickle, vec![(PICKLE_FILE.to_string(), bytes)])),
            Err(StoreError::NotFound(_)) => Err(RegistryError::UnknownVersion(version.into())),
            Err(e) => Err(e.into()),
        }
    }

    /// Publishes a new version and then points `latest.txt` at it. The files are
    /// verified through the same reader as [`Registry::load`] before `latest.txt`
    /// moves; in a folder they are written under a temporary name and renamed into
    /// place, so a crash never leaves a half version visible. (S3 has no rename: a
    /// crash there can leave an incomplete folder that no pointer names and that
    /// fails verification.)
    pub async fn publish(
        &self,
        version: &str,
        a: &Artifacts,
    ) -> Result<LoadedModel, RegistryError> {
        let (files, model_meta) = encode_with_index(a)?;
        self.publish_files(
            version,
            Kind::Als,
            files,
            &model_meta,
            &a.version_fields,
            true,
        )
        .await
    }

    /// Publishes a popularity version (`<version>/popularity/`, meta.json
    /// `model_name: popularity`) through the same write, read-back and rename as
    /// [`Registry::publish`]. `latest.txt` moves only when `move_latest` is set, so a
    /// popularity version published next to an ALS one does not become the default.
    pub async fn publish_popularity(
        &self,
        version: &str,
        a: &PopularityArtifacts,
        move_latest: bool,
    ) -> Result<LoadedModel, RegistryError> {
        self.publish_files(
            version,
            Kind::Popularity,
            encode_popularity(a),
            &a.model_meta,
            &a.version_fields,
            move_latest,
        )
        .await
    }

    async fn publish_files(
        &self,
        version: &str,
        kind: Kind,
        mut files: Vec<(String, Vec<u8>)>,
        model_meta: &Value,
        version_fields: &serde_json::Map<String, Value>,
        move_latest: bool,
    ) -> Result<LoadedModel, RegistryError> {
        let dir = kind.dir();
        validate_version(version)?;
        if self
            .versions()
            .await
            .unwrap_or_default()
            .iter()
            .any(|v| v == version)
        {
            return Err(RegistryError::VersionExists(version.to_string()));
        }
        let sha = artifact_sha(files.iter().map(|(n, b)| (n.as_str(), b.as_slice())));
        let size: usize = files.iter().map(|(_, b)| b.len()).sum();
        let mut meta = serde_json::Map::new();
        meta.insert("version".into(), version.into());
        meta.insert("created_at".into(), crate::time::now_rfc3339().into());
        meta.insert("model_name".into(), kind.name().into());
        meta.insert("artifact_path".into(), format!("{version}/{dir}").into());
        meta.insert("exported_by".into(), "recs".into());
        for (k, v) in version_fields {
            meta.insert(k.clone(), v.clone());
        }
        meta.insert("artifact_sha".into(), sha.into());
        meta.insert("artifact_size".into(), size.into());
        meta.insert("metrics".into(), model_meta.clone());
        let meta_bytes = serde_json::to_vec_pretty(&Value::Object(meta)).expect("JSON map");
        // Check what would be served before anything is written.
        parse_version(version, kind, &files, Some(&meta_bytes))?;
        self.claim(version).await?;

        let staging = match self.store.local_root() {
            Some(_) => format!(".tmp-{version}-{}", std::process::id()),
            None => version.to_string(),
        };
        let write = async {
            for (name, bytes) in files.drain(..) {
                self.store
                    .put(&format!("{staging}/{dir}/{name}"), bytes)
                    .await?;
            }
            self.store
                .put(&format!("{staging}/meta.json"), meta_bytes)
                .await?;
            // Read back what storage holds, through the serving reader.
            let on_disk = self.read_dir_files(&staging, dir).await?;
            let meta_back = self.store.get(&format!("{staging}/meta.json")).await?;
            parse_version(version, kind, &on_disk, Some(&meta_back))?;
            if let Some(root) = self.store.local_root() {
                let to = root.join(version);
                tokio::fs::rename(root.join(&staging), &to)
                    .await
                    .map_err(|e| RegistryError::Io {
                        path: to.display().to_string(),
                        source: e,
                    })?;
            }
            if move_latest {
                self.set_latest(version).await?;
            }
            Ok(())
        };
        match write.await {
            Ok(()) => self.load(version).await,
            Err(e) => {
                if let Some(root) = self.store.local_root() {
                    let _ = tokio::fs::remove_dir_all(root.join(&staging)).await;
                }
                Err(e)
            }
        }
    }

    /// Claims `version` for this publisher with a conditional write: of publishers
    /// racing for one name exactly one wins; the others get
    /// [`RegistryError::VersionExists`] and write nothing. A claim is never released
    /// (a failed publish burns its name; the next one takes the next name).
    async fn claim(&self, version: &str) -> Result<(), RegistryError> {
        if let Some(root) = self.store.local_root() {
            let dir = root.join(CLAIMS_DIR);
            tokio::fs::create_dir_all(&dir)
                .await
                .map_err(|e| RegistryError::Io {
                    path: dir.display().to_string(),
                    source: e,
                })?;
        }
        let body = serde_json::json!({
            "version": version,
            "claimed_at": crate::time::now_rfc3339(),
            "pid": std::process::id(),
        });
        match self
            .store
            .put_if(
                &format!("{CLAIMS_DIR}/{version}"),
                body.to_string().into_bytes(),
                crate::Precondition::Absent,
            )
            .await
        {
            Ok(_) => Ok(()),
            Err(StoreError::Conflict(_)) => Err(RegistryError::VersionExists(version.to_string())),
            Err(e) => Err(e.into()),
        }
    }

    /// Points `latest.txt` at a version (atomic: temp file + rename in a folder, one
    /// PUT on S3).
    async fn set_latest(&self, version: &str) -> Result<(), RegistryError> {
        validate_version(version)?;
        self.store
            .put("latest.txt", version.as_bytes().to_vec())
            .await?;
        Ok(())
    }
}

impl Registry {
    /// The version the last drift run compared with and its PSI per feature, when a
    /// readable summary exists.
    pub async fn drift_psi(&self) -> Option<(String, std::collections::BTreeMap<String, f64>)> {
        #[derive(serde::Deserialize)]
        struct Latest {
            #[serde(default)]
            version: String,
            features: std::collections::BTreeMap<String, f64>,
        }
        read_drift_latest::<Latest>(&self.store)
            .await
            .map(|l| (l.version, l.features))
    }
}

/// `drift/latest.json` (what `recs drift` and the drift function last wrote) read as
/// `T`: `None` when there is none, or, with a warning, when it cannot be read or is
/// not a drift summary. The one reader (`/metrics` and `recs-drift` use it).
pub async fn read_drift_latest<T: serde::de::DeserializeOwned>(store: &Store) -> Option<T> {
    match store.get(DRIFT_LATEST_KEY).await {
        Ok(bytes) => match serde_json::from_slice::<T>(&bytes) {
            Ok(l) => Some(l),
            Err(e) => {
                tracing::warn!(error = %e, "{DRIFT_LATEST_KEY} is not a drift summary; ignored");
                None
            }
        },
        Err(StoreError::NotFound(_)) => None,
        Err(e) => {
            tracing::warn!(error = %e, "{DRIFT_LATEST_KEY} could not be read");
            None
        }
    }
}

/// Encodes artifacts as the files of `<version>/als`.
pub fn encode_artifacts(a: &Artifacts) -> Vec<(String, Vec<u8>)> {
    let ids = |v: &[i64]| serde_json::to_vec(v).expect("ids serialise");
    vec![
        (
            "user_factors.npy".into(),
            npy::write_f32(&a.user_factors.shape, &a.user_factors.data),
        ),
        (
            "item_factors.npy".into(),
            npy::write_f32(&a.item_factors.shape, &a.item_factors.data),
        ),
        ("users.json".into(), ids(&a.users)),
        ("items.json".into(), ids(&a.items)),
        ("seen_csr.npz".into(), npz::write_csr(&a.seen)),
        (
            "meta.json".into(),
            serde_json::to_vec_pretty(&a.model_meta).expect("JSON"),
        ),
    ]
}

/// A version's files as (path inside the model folder, bytes).
type Files = Vec<(String, Vec<u8>)>;

/// [`encode_artifacts`] plus `hnsw.idx` when `a.ann` wants one; its parameters and
/// build time go into `als/meta.json` under `"ann"` (returned as the new model meta).
fn encode_with_index(a: &Artifacts) -> Result<(Files, Value), RegistryError> {
    let mut files = encode_artifacts(a);
    let n_items = a.items.len();
    if !a.ann.wanted(n_items) {
        return Ok((files, a.model_meta.clone()));
    }
    let (bytes, ann_meta) = build_index(a)?;
    let mut meta = match &a.model_meta {
        Value::Object(m) => m.clone(),
        Value::Null => serde_json::Map::new(),
        other => {
            let mut m = serde_json::Map::new();
            m.insert("model_meta".into(), other.clone());
            m
        }
    };
    meta.insert("ann".into(), ann_meta);
    let meta = Value::Object(meta);
    for (name, b) in files.iter_mut() {
        if name == "meta.json" {
            *b = serde_json::to_vec_pretty(&meta).expect("JSON");
        }
    }
    files.push((ann::INDEX_FILE.to_string(), bytes));
    Ok((files, meta))
}

/// The index file's bytes and its `"ann"` meta.
#[cfg(feature = "ann")]
fn build_index(a: &Artifacts) -> Result<(Vec<u8>, Value), RegistryError> {
    let n_items = a.items.len();
    let dims = a.item_factors.shape.get(1).copied().unwrap_or(0);
    let params = AnnParams::default();
    let started = Instant::now();
    let bytes = AnnIndex::build(&a.item_factors.data, dims, params)
        .and_then(|idx| idx.to_bytes())
        .map_err(|source| RegistryError::Ann {
            file: format!("{MODEL_DIR}/{}", ann::INDEX_FILE),
            source,
        })?;
    let seconds = started.elapsed().as_secs_f64();
    tracing::info!(
        items = n_items,
        seconds,
        bytes = bytes.len(),
        "built HNSW index"
    );
    let meta = serde_json::json!({
        "index": ann::INDEX_FILE,
        "library": "usearch",
        "metric": "inner_product",
        "connectivity": params.connectivity,
        "ef_construction": params.ef_construction,
        "ef_search": params.ef_search,
        "items": n_items,
        "bytes": bytes.len(),
        "build_seconds": seconds,
    });
    Ok((bytes, meta))
}

/// Without recs-core's `ann` feature there is no index to build: a clear refusal.
#[cfg(not(feature = "ann"))]
fn build_index(_: &Artifacts) -> Result<(Vec<u8>, Value), RegistryError> {
    Err(RegistryError::Ann {
        file: format!("{MODEL_DIR}/{}", ann::INDEX_FILE),
        source: AnnError::Library(
            "this build has no HNSW index (recs-core's `ann` feature is off)".into(),
        ),
    })
}

fn parse_ids(file: &str, bytes: &[u8]) -> Result<Vec<i64>, RegistryError> {
    let bad = |reason: String| RegistryError::BadJson {
        file: file.to_string(),
        reason,
    };
    let values: Vec<Value> =
        serde_json::from_slice(bytes).map_err(|e| bad(format!("not a JSON array: {e}")))?;
    values
        .iter()
        .enumerate()
        .map(|(i, v)| {
            v.as_i64()
                .or_else(|| v.as_str()?.parse().ok())
                .ok_or_else(|| bad(format!("entry {i} ({v}) is not an integer id")))
        })
        .collect()
}

/// Verifies and assembles a version from its files (paths relative to the model
/// folder) and the version-level meta.json bytes. Shared by every registry backend.
fn parse_version(
    version: &str,
    kind: Kind,
    files: &[(String, Vec<u8>)],
    meta_json: Option<&[u8]>,
) -> Result<LoadedModel, RegistryError> {
    let dir = kind.dir();
    let path = |name: &str| match dir {
        "" => name.to_string(),
        d => format!("{d}/{name}"),
    };
    let find = |name: &str| {
        files
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, b)| b.as_slice())
    };
    let get = |name: &str| {
        find(name).ok_or_else(|| RegistryError::MissingFile {
            version: version.to_string(),
            file: path(name),
        })
    };
    let required: &[&str] = match kind {
        Kind::Als => &REQUIRED,
        Kind::Popularity => &["items.json"],
        Kind::Pickle => &[PICKLE_FILE],
    };
    for name in required {
        get(name)?;
    }
    let mut meta = match meta_json {
        None => VersionMeta::from_json(Value::Null),
        Some(bytes) => {
            let raw: Value = serde_json::from_slice(bytes).map_err(|e| RegistryError::BadJson {
                file: "meta.json".into(),
                reason: e.to_string(),
            })?;
            if !raw.is_object() {
                return Err(RegistryError::BadJson {
                    file: "meta.json".into(),
                    reason: "not a JSON object".into(),
                });
            }
            VersionMeta::from_json(raw)
        }
    };
    // The checksum and the parse read the same bytes independently: on two cores
    // they overlap. A checksum mismatch is still reported before any parse error.
    let (actual, model) = rayon::join(
        || artifact_sha(files.iter().map(|(n, b)| (n.as_str(), b.as_slice()))),
        || parse_model(kind, &get, &find, &path),
    );
    if let Some(expected) = &meta.artifact_sha {
        if !expected.eq_ignore_ascii_case(&actual) {
            return Err(RegistryError::Checksum {
                expected: expected.clone(),
                actual,
            });
        }
    }
    if kind != Kind::Als && meta.raw.get("model_name").is_none() {
        // The Python team's v_popularity meta says `"model": "popularity"`.
        meta.model_name = "popularity".into();
    }
    let model_meta = match find("meta.json") {
        Some(bytes) => serde_json::from_slice(bytes).map_err(|e| RegistryError::BadJson {
            file: path("meta.json"),
            reason: e.to_string(),
        })?,
        None => Value::Null,
    };
    let model = model?;
    Ok(LoadedModel {
        version: version.to_string(),
        meta,
        model_meta,
        model,
        artifact_sha: actual,
        artifact_size: files.iter().map(|(_, b)| b.len() as u64).sum(),
        load_seconds: 0.0,
        item_attributes: Default::default(),
    })
}

/// A version's model from its files (`get`: a required file, `find`: an optional one,
/// `path`: a file's name in messages).
fn parse_model<'f>(
    kind: Kind,
    get: &(dyn Fn(&str) -> Result<&'f [u8], RegistryError> + Sync),
    find: &(dyn Fn(&str) -> Option<&'f [u8]> + Sync),
    path: &(dyn Fn(&str) -> String + Sync),
) -> Result<ServedModel, RegistryError> {
    Ok(match kind {
        Kind::Als => ServedModel::Als(parse_als(get, find(ann::INDEX_FILE))?),
        Kind::Popularity => {
            let items = parse_ids(&path("items.json"), get("items.json")?)?;
            let counts = match find("counts.json") {
                None => None,
                Some(bytes) => Some(serde_json::from_slice::<Vec<f64>>(bytes).map_err(|e| {
                    RegistryError::BadJson {
                        file: path("counts.json"),
                        reason: format!("not a JSON array of numbers: {e}"),
                    }
                })?),
            };
            let seen = match (find("users.json"), find("seen_csr.npz")) {
                (None, None) => None,
                (Some(users), Some(seen)) => Some((
                    parse_ids(&path("users.json"), users)?,
                    npz::read_csr(seen).map_err(|source| RegistryError::Npz {
                        file: path("seen_csr.npz"),
                        source,
                    })?,
                )),
                (Some(_), None) => get("seen_csr.npz").map(|_| None)?,
                (None, Some(_)) => get("users.json").map(|_| None)?,
            };
            ServedModel::Popularity(PopularityModel::new(items, counts, seen)?)
        }
        Kind::Pickle => {
            let items = pickle::read_id_list(get(PICKLE_FILE)?).map_err(|source| {
                RegistryError::Pickle {
                    file: PICKLE_FILE.into(),
                    source,
                }
            })?;
            ServedModel::Popularity(PopularityModel::new(items, None, None)?)
        }
    })
}

/// The ALS model of a version's `als/` files.
fn parse_als<'f>(
    get: &(dyn Fn(&str) -> Result<&'f [u8], RegistryError> + Sync),
    index: Option<&[u8]>,
) -> Result<AlsModel, RegistryError> {
    let read_factors = |name: &str| {
        npy::read_f32(get(name)?)
            .map(|a| Factors {
                shape: a.shape,
                data: a.data,
            })
            .map_err(|source| RegistryError::Npy {
                file: format!("{MODEL_DIR}/{name}"),
                source,
            })
    };
    // The factors and id lists on one core, the seen matrix (mostly inflating
    // seen_csr.npz) on the other.
    let (factors, seen) = rayon::join(
        || -> Result<_, RegistryError> {
            Ok((
                read_factors("user_factors.npy")?,
                read_factors("item_factors.npy")?,
                parse_ids("users.json", get("users.json")?)?,
                parse_ids("items.json", get("items.json")?)?,
            ))
        },
        || {
            npz::read_csr(get("seen_csr.npz")?).map_err(|source| RegistryError::Npz {
                file: format!("{MODEL_DIR}/seen_csr.npz"),
                source,
            })
        },
    );
    let (user_factors, item_factors, users, items) = factors?;
    let seen = seen?;
    let model = AlsModel::new(user_factors, item_factors, users, items, seen)?;
    let Some(bytes) = index else {
        return Ok(model);
    };
    // A build without the index (health, switch) serves nothing from it: the bytes
    // are covered by artifact_sha, and the recommend function parses them.
    #[cfg(not(feature = "ann"))]
    {
        let _ = bytes;
        Ok(model)
    }
    #[cfg(feature = "ann")]
    let ann_err = |source| RegistryError::Ann {
        file: format!("{MODEL_DIR}/{}", ann::INDEX_FILE),
        source,
    };
    #[cfg(feature = "ann")]
    {
        let index = AnnIndex::from_bytes(bytes).map_err(ann_err)?;
        model.with_ann(index).map_err(ann_err)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn version_names() {
        for ok in ["v0.3", "v1.0", "v_ncf", "2026-11-27", "a"] {
            validate_version(ok).unwrap();
        }
        for bad in [
            "",
            "..",
            "../etc",
            "v1/als",
            "v1\\x",
            ".hidden",
            "v1..2",
            "v\n1",
            "v 1",
            &"v".repeat(65),
        ] {
            assert!(validate_version(bad).is_err(), "{bad:?}");
        }
        assert_eq!(parse_semver("v0.10"), Some((0, 10)));
        assert_eq!(parse_semver("v_ncf"), None);
    }

    #[test]
    fn artifact_sha_is_order_independent_and_path_sensitive() {
        let a = artifact_sha([("b", &b"2"[..]), ("a", &b"1"[..])]);
        let b = artifact_sha([("a", &b"1"[..]), ("b", &b"2"[..])]);
        assert_eq!(a, b);
        assert_ne!(a, artifact_sha([("a", &b"12"[..]), ("b", &b""[..])]));
        // hashlib.sha256(b"a1b2").hexdigest()
        assert_eq!(
            a,
            "85337816d263d362acb23a4255a636191075c2a90c47f2ee6db3362f7df11203"
        );
    }

    #[test]
    fn ids_accept_numbers_and_numeric_strings_only() {
        assert_eq!(parse_ids("u", b"[1, \"2\", 3]").unwrap(), vec![1, 2, 3]);
        assert!(parse_ids("u", b"[1.5]").is_err());
        assert!(parse_ids("u", b"{\"1\": 0}").is_err());
    }
}
