//! Approximate top-k by inner product past 10^5 items: an HNSW graph over the item
//! factors, built at publish time into `als/hnsw.idx` (so `artifact_sha` covers it)
//! and used by [`AlsModel::recommend_vector`](crate::AlsModel::recommend_vector)
//! when a version has one.
//!
//! The graph comes from `usearch` (Unum, C++ through `cxx`), chosen over `hnsw_rs`:
//! - inner product is a native metric (`MetricKind::IP`), so item factors go in as
//!   they are; `hnsw_rs`'s `DistDot` assumes unit vectors, which ALS factors are not
//!   (it would need the MIPS-to-L2 augmentation with an extra dimension);
//! - it saves to and loads from a byte buffer, which is what [`Store::get`](crate::Store::get)
//!   returns (S3 on Lambda, where only /tmp is writable); `hnsw_rs` dumps and reloads
//!   a pair of files in a directory;
//! - it has predicate-filtered search, so seen and excluded items are skipped inside
//!   the graph walk and k results still come back;
//! - two dependencies (`cxx`, `cxx-build`; its SIMD library `numkong` is left off)
//!   against sixteen for `hnsw_rs` (rayon, mmap-rs, env_logger, bincode, ...);
//! - sequential insertion with its fixed-seed level generator is deterministic: the
//!   same factors give the same bytes, hence the same `artifact_sha`.
//!
//! The cost is a C++ compiler for the target (the host g++; zig's c++ under
//! cargo-lambda; g++-aarch64-linux-gnu for `scripts/test_arm64.sh`).
//!
//! usearch trusts its own buffer layout, so bytes are never handed to it unchecked:
//! `hnsw.idx` starts with a header written here (magic, format, dimensions, item
//! count, parameters, payload length) and a SHA-256 over header and payload, all
//! verified before `load_from_buffer`; a truncated or altered file is an [`AnnError`].
//!
//! Scores are never the graph's: the candidates are re-scored with the f32 kernel of
//! the exact path, so returned scores are exact dot products and only membership of
//! the top k is approximate. When the walk yields fewer than k unexcluded items the
//! caller falls back to the exact scan.

use sha2::{Digest, Sha256};
use usearch::{Index, IndexOptions, MetricKind, ScalarKind};

use crate::score;
use crate::topk::{Scored, TopK};

/// The index file inside a version's `als/` folder.
pub const INDEX_FILE: &str = "hnsw.idx";

/// [`AnnBuild::Auto`] builds an index from this many items on.
pub const AUTO_MIN_ITEMS: usize = 100_000;

const MAGIC: &[u8; 8] = b"RECSHNSW";
const FORMAT: u32 = 1;
/// magic 8, format 4, dims 4, items 8, M 4, ef_construction 4, ef_search 4,
/// reserved 4, payload length 8, SHA-256 32.
const HEADER_LEN: usize = 80;
const HASHED_HEADER: usize = HEADER_LEN - 32;
/// Sanity bounds on header fields before anything is allocated from them.
const MAX_DIMS: u32 = 4096;
const MAX_CONNECTIVITY: u32 = 256;
const MAX_EF: u32 = 65_536;

/// Whether publishing builds an index.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum AnnBuild {
    /// Build one when the catalogue has at least [`AUTO_MIN_ITEMS`] items.
    #[default]
    Auto,
    /// Always build one (with these parameters, or the defaults).
    On,
    /// Never build one: the version is served by the exact scan only.
    Off,
}

impl AnnBuild {
    /// True when a catalogue of `n_items` gets an index.
    pub fn wanted(self, n_items: usize) -> bool {
        match self {
            AnnBuild::Auto => n_items >= AUTO_MIN_ITEMS,
            AnnBuild::On => true,
            AnnBuild::Off => false,
        }
    }
}

/// HNSW parameters (see the README's "Approximate search" for how they were chosen).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AnnParams {
    /// Graph degree M (neighbours per node per layer; the base layer keeps 2M).
    pub connectivity: u32,
    /// Candidate list size while inserting.
    pub ef_construction: u32,
    /// Candidate list size while searching (raised to k when k is larger).
    pub ef_search: u32,
}

impl Default for AnnParams {
    fn default() -> Self {
        AnnParams {
            connectivity: 16,
            ef_construction: 128,
            ef_search: 128,
        }
    }
}

impl AnnParams {
    fn check(self) -> Result<Self, AnnError> {
        let ok = (2..=MAX_CONNECTIVITY).contains(&self.connectivity)
            && (1..=MAX_EF).contains(&self.ef_construction)
            && (1..=MAX_EF).contains(&self.ef_search);
        if ok {
            Ok(self)
        } else {
            Err(AnnError::BadParams(self))
        }
    }
}

/// Why an index could not be built or read.
#[derive(Debug, thiserror::Error, PartialEq)]
pub enum AnnError {
    /// The file is shorter than its header says (bytes found, bytes needed).
    #[error("hnsw.idx is truncated: {found} bytes, {needed} needed")]
    Truncated {
        /// Bytes present.
        found: usize,
        /// Bytes the header (or its absence) requires.
        needed: usize,
    },
    /// The file does not start with this module's magic.
    #[error("hnsw.idx is not a recs HNSW index (bad magic)")]
    BadMagic,
    /// A format version this build does not read.
    #[error("hnsw.idx has format {0}; this build reads format {FORMAT}")]
    Format(u32),
    /// Header fields out of range (what is wrong).
    #[error("hnsw.idx header: {0}")]
    Header(String),
    /// The file is longer than its header says (bytes found, bytes expected).
    #[error("hnsw.idx has {found} bytes but its header says {expected}")]
    TrailingBytes {
        /// Bytes present.
        found: usize,
        /// Bytes the header accounts for.
        expected: usize,
    },
    /// The SHA-256 in the header does not match header and payload.
    #[error("hnsw.idx checksum mismatch: the file is corrupt")]
    Checksum,
    /// Parameters out of range (M in 2..=256, ef in 1..=65536).
    #[error("HNSW parameters out of range: {0:?}")]
    BadParams(AnnParams),
    /// The index does not match the model it is attached to.
    #[error(
        "hnsw.idx indexes {index_items} items of {index_dims} factors, \
         the model has {model_items} items of {model_dims}"
    )]
    Shape {
        /// Items in the index.
        index_items: usize,
        /// Dimensions of the index.
        index_dims: usize,
        /// Items in the model.
        model_items: usize,
        /// Factors of the model.
        model_dims: usize,
    },
    /// usearch itself refused (its message).
    #[error("usearch: {0}")]
    Library(String),
}

fn lib(e: impl std::fmt::Display) -> AnnError {
    AnnError::Library(e.to_string())
}

/// The environment variable that turns the index off for serving: `RECS_SEARCH=exact`
/// scans every item even when the version has an index (to compare the two).
pub const SEARCH_ENV: &str = "RECS_SEARCH";

/// True unless `RECS_SEARCH=exact` (read once per process).
pub fn index_enabled() -> bool {
    static ENABLED: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *ENABLED.get_or_init(|| {
        let exact = std::env::var(SEARCH_ENV).is_ok_and(|v| v.eq_ignore_ascii_case("exact"));
        if exact {
            tracing::info!("{SEARCH_ENV}=exact: approximate indexes are loaded but not used");
        }
        !exact
    })
}

/// An HNSW index over a model's item rows (key = item row).
pub struct AnnIndex {
    index: Index,
    n_items: usize,
    dims: usize,
    params: AnnParams,
}

impl std::fmt::Debug for AnnIndex {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AnnIndex")
            .field("n_items", &self.n_items)
            .field("dims", &self.dims)
            .field("params", &self.params)
            .finish()
    }
}

fn new_index(dims: usize, p: AnnParams) -> Result<Index, AnnError> {
    Index::new(&IndexOptions {
        dimensions: dims,
        metric: MetricKind::IP,
        quantization: ScalarKind::F32,
        connectivity: p.connectivity as usize,
        expansion_add: p.ef_construction as usize,
        expansion_search: p.ef_search as usize,
        multi: false,
    })
    .map_err(lib)
}

impl AnnIndex {
    /// Builds an index over `items` (C-order rows of `dims` values), inserting rows
    /// in order on one thread so the result is deterministic.
    pub fn build(items: &[f32], dims: usize, params: AnnParams) -> Result<Self, AnnError> {
        let params = params.check()?;
        if dims == 0 || dims > MAX_DIMS as usize || !items.len().is_multiple_of(dims) {
            return Err(AnnError::Header(format!(
                "{} values do not form rows of {dims} factors (1..={MAX_DIMS})",
                items.len()
            )));
        }
        let n_items = items.len() / dims;
        let index = new_index(dims, params)?;
        index.reserve(n_items).map_err(lib)?;
        for (row, v) in items.chunks_exact(dims).enumerate() {
            index.add(row as u64, v).map_err(lib)?;
        }
        Ok(AnnIndex {
            index,
            n_items,
            dims,
            params,
        })
    }

    /// Items indexed.
    pub fn n_items(&self) -> usize {
        self.n_items
    }

    /// Factors per item.
    pub fn dims(&self) -> usize {
        self.dims
    }

    /// The parameters it was built with.
    pub fn params(&self) -> AnnParams {
        self.params
    }

    /// Changes the search candidate list size (for a sweep; what is saved keeps it).
    pub fn set_ef_search(&mut self, ef_search: u32) -> Result<(), AnnError> {
        let params = AnnParams {
            ef_search,
            ..self.params
        }
        .check()?;
        self.index.change_expansion_search(ef_search as usize);
        self.params = params;
        Ok(())
    }

    /// The `hnsw.idx` bytes: header, then usearch's own serialisation.
    pub fn to_bytes(&self) -> Result<Vec<u8>, AnnError> {
        let len = self.index.serialized_length();
        let mut out = vec![0u8; HEADER_LEN + len];
        self.index
            .save_to_buffer(&mut out[HEADER_LEN..])
            .map_err(lib)?;
        out[0..8].copy_from_slice(MAGIC);
        out[8..12].copy_from_slice(&FORMAT.to_le_bytes());
        out[12..16].copy_from_slice(&(self.dims as u32).to_le_bytes());
        out[16..24].copy_from_slice(&(self.n_items as u64).to_le_bytes());
        out[24..28].copy_from_slice(&self.params.connectivity.to_le_bytes());
        out[28..32].copy_from_slice(&self.params.ef_construction.to_le_bytes());
        out[32..36].copy_from_slice(&self.params.ef_search.to_le_bytes());
        // 36..40 reserved, zero.
        out[40..48].copy_from_slice(&(len as u64).to_le_bytes());
        let sum = checksum(&out[..HASHED_HEADER], &out[HEADER_LEN..]);
        out[HASHED_HEADER..HEADER_LEN].copy_from_slice(&sum);
        Ok(out)
    }

    /// Reads `hnsw.idx` bytes, refusing anything [`to_bytes`](Self::to_bytes) did
    /// not write (the checksum is verified before usearch sees a byte).
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, AnnError> {
        if bytes.len() < HEADER_LEN {
            return Err(if bytes.len() >= 8 && &bytes[..8] != MAGIC {
                AnnError::BadMagic
            } else {
                AnnError::Truncated {
                    found: bytes.len(),
                    needed: HEADER_LEN,
                }
            });
        }
        let u32_at = |i: usize| u32::from_le_bytes(bytes[i..i + 4].try_into().expect("4 bytes"));
        let u64_at = |i: usize| u64::from_le_bytes(bytes[i..i + 8].try_into().expect("8 bytes"));
        if &bytes[..8] != MAGIC {
            return Err(AnnError::BadMagic);
        }
        if u32_at(8) != FORMAT {
            return Err(AnnError::Format(u32_at(8)));
        }
        let payload = u64_at(40);
        let expected = (HEADER_LEN as u64).saturating_add(payload);
        if (bytes.len() as u64) < expected {
            return Err(AnnError::Truncated {
                found: bytes.len(),
                needed: usize::try_from(expected).unwrap_or(usize::MAX),
            });
        }
        if bytes.len() as u64 > expected {
            return Err(AnnError::TrailingBytes {
                found: bytes.len(),
                expected: expected as usize,
            });
        }
        if checksum(&bytes[..HASHED_HEADER], &bytes[HEADER_LEN..])[..]
            != bytes[HASHED_HEADER..HEADER_LEN]
        {
            return Err(AnnError::Checksum);
        }
        // From here the bytes are what to_bytes wrote (or a deliberate forgery with a
        // matching SHA-256); the range checks still keep allocations bounded.
        let (dims, n_items) = (u32_at(12), u64_at(16));
        if dims == 0 || dims > MAX_DIMS || u32_at(36) != 0 {
            return Err(AnnError::Header(format!(
                "dimensions {dims} (1..={MAX_DIMS}), reserved {}",
                u32_at(36)
            )));
        }
        let params = AnnParams {
            connectivity: u32_at(24),
            ef_construction: u32_at(28),
            ef_search: u32_at(32),
        }
        .check()?;
        // Every item stores its vector, so the payload bounds the item count.
        if n_items == 0 || n_items > payload / (dims as u64 * 4) {
            return Err(AnnError::Header(format!(
                "{n_items} items of {dims} factors cannot fit in {payload} bytes"
            )));
        }
        let index = new_index(dims as usize, params)?;
        index.load_from_buffer(&bytes[HEADER_LEN..]).map_err(lib)?;
        let ann = AnnIndex {
            n_items: n_items as usize,
            dims: dims as usize,
            params,
            index,
        };
        // The usearch header must agree with ours (same search settings on load).
        ann.index.change_expansion_search(params.ef_search as usize);
        if ann.index.size() != ann.n_items || ann.index.dimensions() != ann.dims {
            return Err(AnnError::Shape {
                index_items: ann.index.size(),
                index_dims: ann.index.dimensions(),
                model_items: ann.n_items,
                model_dims: ann.dims,
            });
        }
        Ok(ann)
    }

    /// Refuses an index built for another catalogue shape.
    pub(crate) fn check_shape(&self, n_items: usize, dims: usize) -> Result<(), AnnError> {
        if self.n_items == n_items && self.dims == dims {
            Ok(())
        } else {
            Err(AnnError::Shape {
                index_items: self.n_items,
                index_dims: self.dims,
                model_items: n_items,
                model_dims: dims,
            })
        }
    }

    /// Top-`k` of `items` (the indexed rows, C order, [`dims`](Self::dims) per row)
    /// for `user`, skipping the sorted `excluded` rows inside the graph walk,
    /// re-scored exactly, best first with lower rows winning ties. `None` when the walk found fewer than the `k`
    /// (or all remaining) items, or usearch failed: the caller scans exactly.
    pub fn top_k(
        &self,
        items: &[f32],
        user: &[f32],
        excluded: &[u32],
        k: usize,
    ) -> Option<Vec<Scored>> {
        if items.len() != self.n_items * self.dims || user.len() != self.dims {
            return None;
        }
        let available = self.n_items.saturating_sub(excluded.len());
        let want = k.min(available);
        if want == 0 {
            return Some(Vec::new());
        }
        let found = self
            .index
            .filtered_search(user, want, |key| {
                u32::try_from(key).is_ok_and(|row| excluded.binary_search(&row).is_err())
            })
            .map_err(|e| tracing::warn!(error = %e, "HNSW search failed; scanning exactly"))
            .ok()?;
        let mut rows: Vec<u32> = found
            .keys
            .iter()
            .filter_map(|&key| u32::try_from(key).ok())
            .filter(|&row| (row as usize) < self.n_items && excluded.binary_search(&row).is_err())
            .collect();
        rows.sort_unstable();
        rows.dedup();
        if rows.len() < want {
            return None;
        }
        let (f, simd) = (self.dims, score::Simd::detected());
        let mut top = TopK::new(k);
        let mut one = [0f32];
        // Rows in increasing order, as TopK's tie rule needs.
        for row in rows {
            let r = row as usize;
            score::scores_with(simd, user, &items[r * f..(r + 1) * f], &mut one);
            top.push(one[0], row);
        }
        Some(top.into_sorted())
    }
}

fn checksum(header: &[u8], payload: &[u8]) -> [u8; 32] {
    let mut h = Sha256::new();
    h.update(header);
    h.update(payload);
    h.finalize().into()
}
