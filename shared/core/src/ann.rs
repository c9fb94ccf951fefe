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
//! The index itself ([`AnnIndex`]) is behind recs-core's `ann` feature, on only in
//! the builds that search (the recommend function, `recs`, training): the health
//! and switch functions link no usearch and do not parse `hnsw.idx` (its bytes
//! are still covered by `artifact_sha`).
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

#[cfg(feature = "ann")]
mod hnsw;
#[cfg(feature = "ann")]
pub use hnsw::AnnIndex;

/// The index file inside a version's `als/` folder.
pub const INDEX_FILE: &str = "hnsw.idx";

/// [`AnnBuild::Auto`] builds an index from this many items on.
pub const AUTO_MIN_ITEMS: usize = 100_000;

#[cfg_attr(not(feature = "ann"), allow(dead_code))]
const MAGIC: &[u8; 8] = b"RECSHNSW";
const FORMAT: u32 = 1;
/// magic 8, format 4, dims 4, items 8, M 4, ef_construction 4, ef_search 4,
/// reserved 4, payload length 8, SHA-256 32.
#[cfg_attr(not(feature = "ann"), allow(dead_code))]
const HEADER_LEN: usize = 80;
#[cfg_attr(not(feature = "ann"), allow(dead_code))]
const HASHED_HEADER: usize = HEADER_LEN - 32;
/// Sanity bounds on header fields before anything is allocated from them.
#[cfg_attr(not(feature = "ann"), allow(dead_code))]
const MAX_DIMS: u32 = 4096;
#[cfg_attr(not(feature = "ann"), allow(dead_code))]
const MAX_CONNECTIVITY: u32 = 256;
#[cfg_attr(not(feature = "ann"), allow(dead_code))]
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

/// HNSW parameters (docs/BENCHMARKS.md, "Approximate search", has how they were chosen).
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
    #[cfg_attr(not(feature = "ann"), allow(dead_code))]
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
