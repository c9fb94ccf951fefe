//! movie-recs core: what every function and tool shares, with no HTTP, training or
//! CLI dependencies.
//!
//! - [`Store`]: one folder or `s3://bucket/prefix`, with conditional writes.
//! - [`Registry`]: the Python team's versioned layout, verification, publishing.
//! - [`active`]: the shared `active.json` (served version, rollout, history) and
//!   [`active::resolve_served`], the one answer to "what is served".
//! - [`AlsModel`] and [`topk`]: a verified model and its scoring hot path;
//!   [`PopularityModel`]; [`ServedModel`], either of them, what is served.
//! - [`ann`]: the HNSW index (usearch) for approximate top-k past 10^5 items.
//! - [`foldin`]: a user vector from interactions (implicit's `recalculate_user`).
//! - [`score`]: blocked FMA scoring kernels (AVX-512, AVX2, portable), chosen at run time.
//! - [`pickle`]: the Python team's pickled lists, read without executing anything.
//! - [`npy`], [`npz`]: the array formats; [`Csr`]: the one sparse matrix.
//! - [`Titles`], [`Interaction`], [`time`], [`hash`]: shared vocabulary.

#![warn(missing_docs)]

pub mod active;
pub mod ann;
mod csr;
pub mod foldin;
pub mod hash;
mod interaction;
pub mod model;
pub mod npy;
pub mod npz;
pub mod pickle;
mod popularity;
mod registry;
pub mod score;
mod store;
pub mod time;
mod titles;
pub mod topk;

pub use csr::{Csr, CsrPattern};
pub use interaction::{file_ts_ms, Interaction};
pub use model::{first_non_finite, AlsModel, Factors, ModelError};
pub use popularity::{PopularityModel, ServedModel};
pub use registry::{
    artifact_sha, encode_artifacts, parse_semver, validate_version, Artifacts, LoadedModel,
    PopularityArtifacts, Registry, RegistryError, VersionMeta, DRIFT_LATEST_KEY, MODEL_DIR,
    POPULARITY_DIR,
};
pub use store::{Object, Precondition, Store, StoreError};
pub use titles::{Titles, TitlesError};
pub use topk::{dot, Scored};
