//! `recs import spark`: a Spark MLlib `ALSModel` saved with `model.write().save(DIR)`
//! becomes a registry version, verified and gated like one `recs train` fitted.
//!
//! Spark writes `DIR/userFactors/` and `DIR/itemFactors/` as folders of
//! `part-*.parquet` files with the columns `id` (int) and `features` (array<float>),
//! and `DIR/metadata/part-00000` (one JSON line with the model's params).
//!
//! Ids: the factor tables decide the model's users and items (Spark's ids, sorted).
//! The ratings file only gives the seen items (its positives, as `recs train` reads
//! them). A positive whose user or item has no factors is dropped from the seen set
//! and counted: such an item cannot be served, such a user is cold (served the fallback).
//! A factor user without positives is kept, with nothing seen.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::fs::File;
use std::path::{Path, PathBuf};

use parquet::file::reader::{FileReader, SerializedFileReader};
use parquet::record::Field;
use serde_json::{json, Value};

use crate::eval::TestSet;
use crate::ratings::{self, Format};
use crate::{gate, git_sha, model_of, TrainError, TrainReport};
use recs_core::{validate_version, Artifacts, CsrPattern, Factors, Registry};

/// Why a Spark factor folder cannot be read.
#[derive(Debug, thiserror::Error)]
pub enum SparkError {
    /// The folder does not exist (or is not a folder).
    #[error("{0}: no such folder (expected Spark's userFactors/ or itemFactors/ folder)")]
    MissingFolder(PathBuf),
    /// The folder could not be listed or a file in it could not be opened.
    #[error("{path}: {source}")]
    Io {
        /// The folder or file.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// The folder holds no `part-*` Parquet file.
    #[error("{0}: no part-*.parquet files in the folder")]
    NoPartFiles(PathBuf),
    /// A part file is not readable Parquet (truncated, corrupt, unsupported codec).
    #[error("{path}: not a readable Parquet file: {source}")]
    Parquet {
        /// The part file.
        path: PathBuf,
        /// The reader's error.
        #[source]
        source: parquet::errors::ParquetError,
    },
    /// The columns are not `id` (int) and `features` (array<float>).
    #[error("{path}: expected columns id (int) and features (array<float>), found {found}")]
    WrongSchema {
        /// The part file.
        path: PathBuf,
        /// The columns found, with their types as read.
        found: String,
    },
    /// A row's feature width differs from the first row's.
    #[error("{path}: id {id} has {got} features, earlier rows have {want}")]
    Ragged {
        /// The part file.
        path: PathBuf,
        /// The row's id.
        id: i64,
        /// Its width.
        got: usize,
        /// The first row's width.
        want: usize,
    },
    /// A feature is NaN, infinite or null.
    #[error("{path}: id {id} has a non-finite or null feature at position {position}")]
    NonFinite {
        /// The part file.
        path: PathBuf,
        /// The row's id.
        id: i64,
        /// Index within the feature vector.
        position: usize,
    },
    /// An id occurs twice (in one part file or across them).
    #[error("{path}: id {id} occurs more than once")]
    DuplicateId {
        /// The part file of the second occurrence.
        path: PathBuf,
        /// The id.
        id: i64,
    },
    /// The folder has part files but no rows, or rows with no features.
    #[error("{0}: no factor rows (or zero-width features)")]
    Empty(PathBuf),
    /// The user and item factors have different widths (not one model).
    #[error("user factors have {users} features, item factors {items}: not the same model")]
    WidthMismatch {
        /// User factor width.
        users: usize,
        /// Item factor width.
        items: usize,
    },
}

/// One factor table: `ids[r]`'s vector is `data[r * width..(r + 1) * width]`, rows
/// sorted by id.
#[derive(Debug, Clone, PartialEq)]
pub struct FactorTable {
    /// Spark's ids, ascending.
    pub ids: Vec<i64>,
    /// Features per row (Spark's rank).
    pub width: usize,
    /// Row-major features.
    pub data: Vec<f32>,
}

/// The `part-*` files of a Spark output folder, sorted; `_SUCCESS`, `_metadata`,
/// `_common_metadata` and `.crc` checksums are not data.
fn part_files(dir: &Path) -> Result<Vec<PathBuf>, SparkError> {
    if !dir.is_dir() {
        return Err(SparkError::MissingFolder(dir.to_path_buf()));
    }
    let io = |source| SparkError::Io {
        path: dir.to_path_buf(),
        source,
    };
    let mut parts = Vec::new();
    for entry in std::fs::read_dir(dir).map_err(io)? {
        let entry = entry.map_err(io)?;
        let name = entry.file_name().to_string_lossy().into_owned();
        if name.starts_with("part-") && !name.ends_with(".crc") && entry.path().is_file() {
            parts.push(entry.path());
        }
    }
    if parts.is_empty() {
        return Err(SparkError::NoPartFiles(dir.to_path_buf()));
    }
    parts.sort();
    Ok(parts)
}

/// The top-level columns of a part file, as `name: type` for error messages.
fn describe_columns(reader: &SerializedFileReader<File>) -> String {
    let schema = reader.metadata().file_metadata().schema_descr();
    let cols: Vec<String> = schema
        .root_schema()
        .get_fields()
        .iter()
        .map(|f| {
            if f.is_group() {
                format!("{}: group", f.name())
            } else {
                format!("{}: {}", f.name(), f.get_physical_type())
            }
        })
        .collect();
    if cols.is_empty() {
        "no columns".into()
    } else {
        cols.join(", ")
    }
}

/// Reads a Spark factor folder (`userFactors/` or `itemFactors/`).
pub fn read_factor_folder(dir: &Path) -> Result<FactorTable, SparkError> {
    let mut rows: BTreeMap<i64, Vec<f32>> = BTreeMap::new();
    let mut width: Option<usize> = None;
    for path in part_files(dir)? {
        let file = File::open(&path).map_err(|source| SparkError::Io {
            path: path.clone(),
            source,
        })?;
        let parquet_err = |source| SparkError::Parquet {
            path: path.clone(),
            source,
        };
        let reader = SerializedFileReader::new(file).map_err(parquet_err)?;
        let wrong = || SparkError::WrongSchema {
            path: path.clone(),
            found: describe_columns(&reader),
        };
        let names: HashSet<&str> = reader
            .metadata()
            .file_metadata()
            .schema_descr()
            .root_schema()
            .get_fields()
            .iter()
            .map(|f| f.name())
            .collect();
        if !(names.contains("id") && names.contains("features")) {
            return Err(wrong());
        }
        for row in reader.get_row_iter(None).map_err(parquet_err)? {
            let row = row.map_err(parquet_err)?;
            let (mut id, mut features) = (None, None);
            for (name, field) in row.get_column_iter() {
                match (name.as_str(), field) {
                    ("id", Field::Int(v)) => id = Some(i64::from(*v)),
                    ("id", Field::Long(v)) => id = Some(*v),
                    ("features", Field::ListInternal(list)) => features = Some(list.elements()),
                    ("id" | "features", _) => return Err(wrong()),
                    _ => {}
                }
            }
            let (Some(id), Some(elements)) = (id, features) else {
                return Err(wrong());
            };
            let mut v = Vec::with_capacity(elements.len());
            for (position, e) in elements.iter().enumerate() {
                let x = match e {
                    Field::Float(x) => *x,
                    // Narrowed as Spark's float features are; a double outside f32 is caught below.
                    Field::Double(x) => *x as f32,
                    Field::Null => {
                        return Err(SparkError::NonFinite {
                            path: path.clone(),
                            id,
                            position,
                        })
                    }
                    _ => return Err(wrong()),
                };
                if !x.is_finite() {
                    return Err(SparkError::NonFinite {
                        path: path.clone(),
                        id,
                        position,
                    });
                }
                v.push(x);
            }
            match width {
                None => width = Some(v.len()),
                Some(w) if w != v.len() => {
                    return Err(SparkError::Ragged {
                        path: path.clone(),
                        id,
                        got: v.len(),
                        want: w,
                    })
                }
                Some(_) => {}
            }
            if rows.insert(id, v).is_some() {
                return Err(SparkError::DuplicateId {
                    path: path.clone(),
                    id,
                });
            }
        }
    }
    let width = width.unwrap_or(0);
    if rows.is_empty() || width == 0 {
        return Err(SparkError::Empty(dir.to_path_buf()));
    }
    let ids = rows.keys().copied().collect();
    let data = rows.into_values().flatten().collect();
    Ok(FactorTable { ids, width, data })
}

/// The ALS hyper-parameters in Spark's `metadata/` folder beside the factor folders
/// (`paramMap` over `defaultParamMap`, and the saved `rank`), when it is there.
/// `ALSModel` saves its own params only: the estimator's `regParam`, `alpha`,
/// `maxIter` and `implicitPrefs` appear when they were saved with it.
pub fn read_metadata(model_dir: &Path) -> Option<Value> {
    let dir = model_dir.join("metadata");
    let part = part_files(&dir).ok()?.into_iter().next()?;
    let text = std::fs::read_to_string(part).ok()?;
    let meta: Value = serde_json::from_str(text.lines().next()?).ok()?;
    let mut out = serde_json::Map::new();
    for key in [
        "rank",
        "regParam",
        "alpha",
        "maxIter",
        "implicitPrefs",
        "seed",
        "nonnegative",
    ] {
        let v = meta["paramMap"]
            .get(key)
            .or_else(|| meta.get(key))
            .or_else(|| meta["defaultParamMap"].get(key));
        if let Some(v) = v {
            out.insert(key.into(), v.clone());
        }
    }
    for key in ["class", "sparkVersion", "uid"] {
        if let Some(v) = meta.get(key) {
            out.insert(key.into(), v.clone());
        }
    }
    Some(Value::Object(out))
}

/// Everything `recs import spark` needs.
#[derive(Debug, Clone)]
pub struct ImportOptions {
    /// Spark's `userFactors/` folder.
    pub user_factors: PathBuf,
    /// Spark's `itemFactors/` folder.
    pub item_factors: PathBuf,
    /// The ratings the model was trained on: their positives are the seen items.
    pub ratings: PathBuf,
    /// Its format.
    pub format: Format,
    /// Drop (and count) malformed rows instead of failing.
    pub skip_bad_rows: bool,
    /// Ratings at or above this are positives (seen, and in the test set).
    pub min_rating: f32,
    /// Where to publish.
    pub registry: String,
    /// The version name (default: the next `vX.Y`).
    pub version: Option<String>,
    /// Held-out positives for the quality gate.
    pub test: Option<PathBuf>,
    /// Cut-off of the offline metrics.
    pub k: usize,
    /// Refuse to publish when the gate fails.
    pub gate: bool,
    /// How far below the latest version's NDCG@k the new one may be.
    pub gate_margin: f64,
    /// The version to compare with (default: latest.txt's); the retrain's Spark path
    /// names the version it retrained from, as `recs retrain` does.
    pub incumbent: Option<String>,
    /// The snapshot the ratings are part of (`data_snapshot_id`, `data_snapshot_uri`);
    /// default: the ratings file itself.
    pub snapshot: Option<crate::SnapshotRef>,
    /// meta.json's `trained_by`.
    pub trained_by: &'static str,
}

/// What `recs import spark` could not map between the factors and the ratings.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct IdCoverage {
    /// Factor users / items.
    pub users: usize,
    /// Factor items.
    pub items: usize,
    /// Positives kept as seen items.
    pub seen: usize,
    /// Users with positives but no factors (served as unknown users).
    pub rating_users_without_factors: usize,
    /// Items with positives but no factors (cannot be served).
    pub rating_items_without_factors: usize,
    /// Positives dropped because their user or item has no factors.
    pub positives_dropped: usize,
    /// Factor users with no positive in the ratings (nothing seen to exclude).
    pub factor_users_without_positives: usize,
}

/// Builds the artifacts: the factor tables' ids are the rows, the positives whose
/// user and item both have factors are the seen items.
pub fn to_artifacts(
    users: &FactorTable,
    items: &FactorTable,
    positives: &[recs_core::Interaction],
) -> Result<(Artifacts, IdCoverage), SparkError> {
    if users.width != items.width {
        return Err(SparkError::WidthMismatch {
            users: users.width,
            items: items.width,
        });
    }
    let urow: HashMap<i64, usize> = users
        .ids
        .iter()
        .enumerate()
        .map(|(r, &id)| (id, r))
        .collect();
    let icol: HashMap<i64, u32> = items
        .ids
        .iter()
        .enumerate()
        .map(|(c, &id)| (id, c as u32))
        .collect();
    let mut seen_rows = vec![Vec::new(); users.ids.len()];
    let (mut missing_users, mut missing_items) = (HashSet::new(), HashSet::new());
    let mut dropped = 0;
    for p in positives {
        let (u, i) = (urow.get(&p.user), icol.get(&p.item));
        if u.is_none() {
            missing_users.insert(p.user);
        }
        if i.is_none() {
            missing_items.insert(p.item);
        }
        match (u, i) {
            (Some(&u), Some(&i)) => seen_rows[u].push(i),
            _ => dropped += 1,
        }
    }
    let coverage = IdCoverage {
        users: users.ids.len(),
        items: items.ids.len(),
        seen: positives.len() - dropped,
        rating_users_without_factors: missing_users.len(),
        rating_items_without_factors: missing_items.len(),
        positives_dropped: dropped,
        factor_users_without_positives: seen_rows.iter().filter(|r| r.is_empty()).count(),
    };
    let artifacts = Artifacts {
        user_factors: Factors {
            shape: vec![users.ids.len(), users.width],
            data: users.data.clone(),
        },
        item_factors: Factors {
            shape: vec![items.ids.len(), items.width],
            data: items.data.clone(),
        },
        users: users.ids.clone(),
        items: items.ids.clone(),
        seen: CsrPattern::from_rows(items.ids.len(), seen_rows),
        model_meta: Value::Null,
        version_fields: serde_json::Map::new(),
        // Spark catalogues past 100,000 items get an HNSW index like any other.
        ann: recs_core::ann::AnnBuild::Auto,
    };
    Ok((artifacts, coverage))
}

/// Why `recs import spark` stopped.
#[derive(Debug, thiserror::Error)]
pub enum ImportError {
    /// A factor folder could not be read.
    #[error(transparent)]
    Factors(#[from] SparkError),
    /// Ratings, registry, evaluation or publishing, as for `recs train`.
    #[error(transparent)]
    Train(#[from] TrainError),
}

impl From<ratings::RatingsError> for ImportError {
    fn from(e: ratings::RatingsError) -> Self {
        ImportError::Train(e.into())
    }
}

impl From<recs_core::RegistryError> for ImportError {
    fn from(e: recs_core::RegistryError) -> Self {
        ImportError::Train(e.into())
    }
}

/// Reads the factors and the ratings, evaluates and gates (the same checks as
/// `recs train`), and unless refused publishes. Nothing is written to the registry
/// before every input has been read and checked.
pub async fn import(opts: &ImportOptions) -> Result<(TrainReport, IdCoverage), ImportError> {
    if let Some(v) = &opts.version {
        validate_version(v)?;
    }
    let registry = Registry::open(&opts.registry)?;
    if let Some(v) = &opts.version {
        if registry.versions().await.unwrap_or_default().contains(v) {
            return Err(TrainError::Invalid(format!(
                "version {v} already exists in {}; pick another --version",
                opts.registry
            ))
            .into());
        }
    }
    let users = read_factor_folder(&opts.user_factors)?;
    let items = read_factor_folder(&opts.item_factors)?;
    let data = ratings::read_ratings(&opts.ratings, opts.format, opts.skip_bad_rows)?;
    let positives = data.positives(opts.min_rating);
    let (mut artifacts, coverage) = to_artifacts(&users, &items, &positives)?;
    let test = match &opts.test {
        Some(path) => {
            let t = ratings::read_ratings(path, Format::Auto, opts.skip_bad_rows)?;
            let set = TestSet::from_ratings(&t, opts.min_rating);
            Some((t, set))
        }
        None => None,
    };

    let mut gate = gate::check_structure(
        users.ids.len(),
        items.ids.len(),
        users.width,
        &artifacts.user_factors.data,
        &artifacts.item_factors.data,
    );
    // The model must be servable before anything else is said about it.
    let model = model_of(&artifacts).map_err(ImportError::Train)?;
    let (mut evaluation, mut incumbent_json) = (None, Value::Null);
    if let (true, Some((_, set))) = (gate.passed(), &test) {
        let (e, inc) = crate::evaluate_and_gate(
            &registry,
            &model,
            set,
            opts.k,
            opts.gate_margin,
            opts.incumbent.as_deref(),
            &mut gate,
        )
        .await;
        incumbent_json = inc;
        evaluation = Some(e);
    } else if test.is_none() {
        gate.notes.push(
            "no --test file: only the structural checks ran (pass --test to compare with popularity and the latest version)"
                .into(),
        );
    }

    let model_dir = opts.user_factors.parent().unwrap_or(Path::new("."));
    let spark_params = read_metadata(model_dir);
    let mut model_meta = json!({
        "type": "ALS",
        "trainer": "Spark MLlib ALS (imported by recs import spark)",
        "factors": users.width,
        "users": users.ids.len(),
        "items": items.ids.len(),
        "interactions": artifacts.seen.nnz(),
        "min_rating": opts.min_rating,
        "spark": spark_params,
        "source": {
            "user_factors": std::path::absolute(&opts.user_factors).unwrap_or_else(|_| opts.user_factors.clone()),
            "item_factors": std::path::absolute(&opts.item_factors).unwrap_or_else(|_| opts.item_factors.clone()),
        },
        "id_coverage": coverage,
        "data": data.summary(opts.min_rating),
        "gate": gate.to_json(),
    });
    // Spark's names, in the keys `recs train` writes, where Spark saved them.
    if let Some(p) = model_meta["spark"].as_object().cloned() {
        for (spark, ours) in [
            ("regParam", "regularization"),
            ("alpha", "alpha"),
            ("maxIter", "iterations"),
            ("implicitPrefs", "implicit_prefs"),
            ("seed", "random_state"),
        ] {
            if let Some(v) = p.get(spark) {
                model_meta[ours] = v.clone();
            }
        }
    }
    if let (Some(e), Some((t, _))) = (&evaluation, &test) {
        model_meta["offline_metrics"] = e.to_json();
        model_meta["offline_metrics"]["test_file"] = json!(t.path);
        model_meta["offline_metrics"]["test_sha256"] = json!(t.sha256);
    }
    artifacts.model_meta = model_meta.clone();
    let fields = &mut artifacts.version_fields;
    fields.insert("git_sha".into(), git_sha().into());
    let snapshot = opts.snapshot.clone().unwrap_or_else(|| crate::SnapshotRef {
        id: data.sha256.clone(),
        uri: std::path::absolute(&opts.ratings)
            .unwrap_or_else(|_| opts.ratings.clone())
            .display()
            .to_string(),
    });
    fields.insert("data_snapshot_id".into(), snapshot.id.into());
    fields.insert("data_snapshot_uri".into(), snapshot.uri.into());
    fields.insert("trained_by".into(), opts.trained_by.into());
    fields.insert("model_name".into(), "spark-als".into());

    let refused = opts.gate && !gate.passed();
    let mut published = None;
    if !refused {
        let version = crate::publish_als(
            &registry,
            &opts.registry,
            opts.version.as_deref(),
            &artifacts,
            &data.rows,
            &opts.ratings,
        )
        .await?;
        published = Some(version);
    }
    let summary = json!({
        "published": published,
        "registry": opts.registry,
        "refused": refused,
        "model": model_meta,
        "incumbent": incumbent_json,
    });
    Ok((
        TrainReport {
            published,
            popularity: None,
            notes: vec![],
            gate,
            gated: opts.gate,
            evaluation,
            summary,
        },
        coverage,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use parquet::basic::Compression;
    use parquet::data_type::{FloatType, Int32Type};
    use parquet::file::properties::WriterProperties;
    use parquet::file::writer::SerializedFileWriter;
    use parquet::schema::parser::parse_message_type;
    use proptest::prelude::*;
    use std::sync::Arc;

    /// One factor row: id and features (`None`: a null element).
    type Row = (i32, Vec<Option<f32>>);

    /// Spark's factor schema (`id int, features array<float>`), as Spark writes it.
    const SPARK: &str = "message spark_schema {
        required int32 id;
        optional group features (LIST) {
            repeated group list { optional float element; }
        }
    }";

    /// Writes one Snappy part file of `rows` (a `None` feature is a null element).
    fn write_part(path: &Path, rows: &[Row]) {
        let schema = Arc::new(parse_message_type(SPARK).unwrap());
        let props = Arc::new(
            WriterProperties::builder()
                .set_compression(Compression::SNAPPY)
                .build(),
        );
        let mut w = SerializedFileWriter::new(File::create(path).unwrap(), schema, props).unwrap();
        let mut rg = w.next_row_group().unwrap();
        let ids: Vec<i32> = rows.iter().map(|r| r.0).collect();
        let mut col = rg.next_column().unwrap().unwrap();
        col.typed::<Int32Type>()
            .write_batch(&ids, None, None)
            .unwrap();
        col.close().unwrap();
        let (mut vals, mut def, mut rep) = (vec![], vec![], vec![]);
        for (_, f) in rows {
            if f.is_empty() {
                def.push(1);
                rep.push(0);
            }
            for (i, x) in f.iter().enumerate() {
                rep.push(if i == 0 { 0 } else { 1 });
                match x {
                    Some(x) => {
                        vals.push(*x);
                        def.push(3);
                    }
                    None => def.push(2),
                }
            }
        }
        let mut col = rg.next_column().unwrap().unwrap();
        col.typed::<FloatType>()
            .write_batch(&vals, Some(&def), Some(&rep))
            .unwrap();
        col.close().unwrap();
        rg.close().unwrap();
        w.close().unwrap();
    }

    fn folder(parts: &[&[Row]]) -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap();
        for (n, rows) in parts.iter().enumerate() {
            write_part(
                &dir.path().join(format!("part-{n:05}.snappy.parquet")),
                rows,
            );
        }
        std::fs::write(dir.path().join("_SUCCESS"), b"").unwrap();
        std::fs::write(dir.path().join(".part-00000.snappy.parquet.crc"), b"junk").unwrap();
        dir
    }

    fn row(id: i32, f: &[f32]) -> Row {
        (id, f.iter().map(|&x| Some(x)).collect())
    }

    #[test]
    fn reads_parts_sorted_by_id_and_skips_markers() {
        let dir = folder(&[
            &[row(7, &[1.0, 2.0]), row(3, &[3.0, 4.0])],
            &[row(5, &[5.0, 6.0])],
        ]);
        let t = read_factor_folder(dir.path()).unwrap();
        assert_eq!(t.ids, vec![3, 5, 7]);
        assert_eq!(t.width, 2);
        assert_eq!(t.data, vec![3.0, 4.0, 5.0, 6.0, 1.0, 2.0]);
    }

    #[test]
    fn each_bad_folder_has_its_own_error() {
        let err = |d: &Path| read_factor_folder(d).unwrap_err();
        let nowhere = tempfile::tempdir().unwrap();
        assert!(matches!(
            err(&nowhere.path().join("x")),
            SparkError::MissingFolder(_)
        ));
        assert!(matches!(err(nowhere.path()), SparkError::NoPartFiles(_)));
        let ragged = folder(&[&[row(1, &[1.0, 2.0]), row(2, &[1.0])]]);
        assert!(matches!(
            err(ragged.path()),
            SparkError::Ragged {
                id: 2,
                got: 1,
                want: 2,
                ..
            }
        ));
        let nan = folder(&[&[row(1, &[1.0, f32::NAN])]]);
        assert!(matches!(
            err(nan.path()),
            SparkError::NonFinite {
                id: 1,
                position: 1,
                ..
            }
        ));
        let null = folder(&[&[(4, vec![Some(1.0), None])]]);
        assert!(matches!(
            err(null.path()),
            SparkError::NonFinite {
                id: 4,
                position: 1,
                ..
            }
        ));
        let dup = folder(&[&[row(1, &[1.0])], &[row(1, &[2.0])]]);
        assert!(matches!(
            err(dup.path()),
            SparkError::DuplicateId { id: 1, .. }
        ));
        let empty = folder(&[&[(1, vec![])]]);
        assert!(matches!(err(empty.path()), SparkError::Empty(_)));
    }

    #[test]
    fn wrong_schema_names_the_columns_found() {
        let dir = tempfile::tempdir().unwrap();
        let schema = Arc::new(
            parse_message_type("message m { required int32 user; required float rating; }")
                .unwrap(),
        );
        let path = dir.path().join("part-00000.parquet");
        let mut w = SerializedFileWriter::new(
            File::create(&path).unwrap(),
            schema,
            Arc::new(WriterProperties::builder().build()),
        )
        .unwrap();
        let mut rg = w.next_row_group().unwrap();
        let mut col = rg.next_column().unwrap().unwrap();
        col.typed::<Int32Type>()
            .write_batch(&[1], None, None)
            .unwrap();
        col.close().unwrap();
        let mut col = rg.next_column().unwrap().unwrap();
        col.typed::<FloatType>()
            .write_batch(&[1.0], None, None)
            .unwrap();
        col.close().unwrap();
        rg.close().unwrap();
        w.close().unwrap();
        let e = read_factor_folder(dir.path()).unwrap_err();
        assert!(matches!(e, SparkError::WrongSchema { .. }));
        assert!(
            e.to_string().contains("found user: INT32, rating: FLOAT"),
            "{e}"
        );
    }

    #[test]
    fn ids_missing_on_either_side_are_counted_and_widths_must_agree() {
        let t = |ids: Vec<i64>, width: usize| FactorTable {
            data: vec![0.5; ids.len() * width],
            ids,
            width,
        };
        let p = |user, item| recs_core::Interaction {
            user,
            item,
            rating: None,
            ts_ms: None,
        };
        let positives = [p(1, 10), p(1, 11), p(2, 99), p(9, 10), p(3, 10)];
        let (a, c) =
            to_artifacts(&t(vec![1, 2, 3, 4], 2), &t(vec![10, 11], 2), &positives).unwrap();
        assert_eq!(a.seen.nnz(), 3);
        assert_eq!(
            c,
            IdCoverage {
                users: 4,
                items: 2,
                seen: 3,
                rating_users_without_factors: 1,
                rating_items_without_factors: 1,
                positives_dropped: 2,
                factor_users_without_positives: 2,
            }
        );
        assert!(matches!(
            to_artifacts(&t(vec![1], 2), &t(vec![10], 3), &[]),
            Err(SparkError::WidthMismatch { users: 2, items: 3 })
        ));
    }

    fn write_table(dir: &Path, ids: &[i64], f: &Factors, sign: f32) {
        std::fs::create_dir_all(dir).unwrap();
        let w = f.shape[1];
        let rows: Vec<Row> = ids
            .iter()
            .enumerate()
            .map(|(r, &id)| {
                let v = f.data[r * w..(r + 1) * w]
                    .iter()
                    .map(|x| Some(sign * x))
                    .collect();
                (id as i32, v)
            })
            .collect();
        write_part(&dir.join("part-00000.snappy.parquet"), &rows);
    }

    /// The import goes through recs train's gate: planted factors beat popularity on a
    /// holdout and are published; the same factors with the item side negated (the
    /// ranking reversed) are refused and latest.txt stays.
    #[test]
    fn import_is_gated_like_recs_train() {
        use crate::gen_data::{generate, GenConfig};
        let data = generate(&GenConfig {
            users: 150,
            items: 90,
            ..GenConfig::default()
        });
        let a = data.planted_artifacts();
        let dir = tempfile::tempdir().unwrap();
        let positives: Vec<_> = data
            .ratings
            .iter()
            .filter(|r| r.is_positive(4.0))
            .copied()
            .collect();
        let split = crate::split::holdout(&positives, 42, 0.2);
        crate::split::write_split(&dir.path().join("split"), &split).unwrap();
        let m = dir.path().join("model");
        write_table(&m.join("userFactors"), &a.users, &a.user_factors, 1.0);
        write_table(&m.join("itemFactors"), &a.items, &a.item_factors, 1.0);
        write_table(&m.join("negated"), &a.items, &a.item_factors, -1.0);
        let reg = dir.path().join("reg");
        let mut opts = ImportOptions {
            user_factors: m.join("userFactors"),
            item_factors: m.join("itemFactors"),
            ratings: dir.path().join("split/train.tsv"),
            format: Format::Auto,
            skip_bad_rows: false,
            min_rating: 4.0,
            registry: reg.display().to_string(),
            version: Some("v1".into()),
            test: Some(dir.path().join("split/test.tsv")),
            k: 10,
            gate: true,
            gate_margin: 0.01,
            incumbent: None,
            snapshot: None,
            trained_by: "recs import spark",
        };
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let (r, _) = rt.block_on(import(&opts)).unwrap();
        assert!(r.gate.passed(), "{}", r.gate.reasons());
        assert_eq!(r.published.as_deref(), Some("v1"));
        let e = r.evaluation.as_ref().unwrap();
        assert!(
            e.model.ndcg > e.popularity.ndcg,
            "{} vs {}",
            e.model.ndcg,
            e.popularity.ndcg
        );

        opts.item_factors = m.join("negated");
        opts.version = Some("v2".into());
        let (r, _) = rt.block_on(import(&opts)).unwrap();
        assert!(r.refused() && r.published.is_none());
        assert!(
            r.gate.reasons().contains("popularity"),
            "{}",
            r.gate.reasons()
        );
        assert_eq!(
            std::fs::read_to_string(reg.join("latest.txt")).unwrap(),
            "v1"
        );
        assert!(!reg.join("v2").exists());
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]
        /// A truncated or bit-flipped part file is an error (or, where the damage
        /// misses everything checked, a table), never a panic.
        #[test]
        fn damaged_part_files_never_panic(keep in 0.3f64..=1.0, flip in any::<prop::sample::Index>(), bit in 0u8..8) {
            let dir = folder(&[&[row(1, &[1.0, 2.0]), row(2, &[3.0, 4.0]), row(3, &[5.0, 6.0])]]);
            let part = dir.path().join("part-00000.snappy.parquet");
            let mut bytes = std::fs::read(&part).unwrap();
            let i = flip.index(bytes.len());
            bytes[i] ^= 1 << bit;
            bytes.truncate((bytes.len() as f64 * keep) as usize);
            std::fs::write(&part, &bytes).unwrap();
            if let Ok(t) = read_factor_folder(dir.path()) {
                prop_assert!(t.data.iter().all(|x| x.is_finite()));
                prop_assert_eq!(t.data.len(), t.ids.len() * t.width);
            }
        }
    }
}
