//! movie-recs core: what every function and tool shares, with no HTTP, training or
//! CLI dependencies.
//!
//! - [`Store`]: one folder or `s3://bucket/prefix`, with conditional writes.
//! - [`Registry`]: the Python team's versioned layout, verification, publishing.
//! - [`active`]: the shared `active.json` (served version, rollout, history) and
//!   [`active::resolve_served`], the one answer to "what is served".
//! - [`LoadedModel::answer`]: a served version's answer to a [`Query`] (top-k,
//!   fold-in, popularity fallback, exclusions).
//! - [`AlsModel`] and [`topk`]: a verified model and its scoring hot path;
//!   [`PopularityModel`]; [`ServedModel`], either of them, what is served.
//! - [`ann`]: the HNSW index (usearch) for approximate top-k past 10^5 items.
//! - [`foldin`]: a user vector from interactions (implicit's `recalculate_user`)
//!   and the decomposition of a score by them (implicit's `explain`).
//! - [`filter`]: request-time catalog filters (genres, years) as sets of item rows.
//! - [`blocked`]: the registry's blocked set (takedowns), applied to every answer.
//! - [`batch`]: recommendations for a file of users in AWS Personalize's batch format.
//! - [`score`]: blocked FMA scoring kernels (AVX-512, AVX2, portable), chosen at run time.
//! - [`Simd`] and, on x86_64, `Avx2Fma` and `Avx512`: the one CPU-feature
//!   detection (and the one `RECS_SIMD` rule) for every SIMD kernel, here and in
//!   recs-train; a token proves its features were detected.
//! - [`pickle`]: the Python team's pickled lists, read without executing anything.
//! - [`npy`], [`npz`]: the array formats; [`Csr`]: the one sparse matrix.
//! - [`Titles`], [`Interaction`], [`time`], [`hash`]: shared vocabulary.

#![warn(missing_docs)]
#![deny(unsafe_op_in_unsafe_fn)]

pub mod active;
pub mod ann;
mod answer;
pub mod batch;
pub mod blocked;
mod cpu;
mod csr;
pub mod filter;
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

pub use answer::{AnswerError, Because, Query, Ranked, SimilarError};
pub use cpu::Simd;
#[cfg(target_arch = "x86_64")]
pub use cpu::{Avx2Fma, Avx512};
pub use csr::{Csr, CsrPattern};
pub use interaction::{file_ts_ms, Interaction};
pub use model::{first_non_finite, AlsModel, Factors, ModelError};
pub use popularity::{PopularityModel, ServedModel};
pub use registry::{
    artifact_sha, encode_artifacts, parse_semver, read_drift_latest, validate_version, Artifacts,
    LoadedModel, PopularityArtifacts, Registry, RegistryError, VersionMeta, DRIFT_LATEST_KEY,
    MODEL_DIR, POPULARITY_DIR, SNAPSHOTS_DIR, SPARK_JOBS_DIR,
};
pub use store::{Object, Precondition, Store, StoreError};
pub use titles::{year_of_title, Titles, TitlesError, MAX_GENRES};
pub use topk::{dot, Scored};

/// The events location (a folder or `s3://bucket/prefix`, holding the exposure log
/// and the watch/rate events) from `get` (the environment, or a map in tests):
/// `EVENTS`, else `DRIFT_EVENTS_URI` (the SAM template's name for the same thing).
/// Empty values count as unset. The one rule for every binary.
pub fn events_location(get: impl Fn(&str) -> Option<String>) -> Option<String> {
    ["EVENTS", "DRIFT_EVENTS_URI"]
        .into_iter()
        .find_map(|name| get(name).filter(|v| !v.trim().is_empty()))
}

/// [`events_location`] from the process environment.
pub fn events_location_from_env() -> Option<String> {
    events_location(|k| std::env::var(k).ok())
}

#[cfg(test)]
mod events_location_tests {
    #[test]
    fn events_then_the_template_name() {
        let env = |pairs: &'static [(&'static str, &'static str)]| {
            move |k: &str| {
                pairs
                    .iter()
                    .find(|(n, _)| *n == k)
                    .map(|(_, v)| v.to_string())
            }
        };
        assert_eq!(super::events_location(env(&[])), None);
        assert_eq!(
            super::events_location(env(&[("DRIFT_EVENTS_URI", "s3://b/e")])).as_deref(),
            Some("s3://b/e")
        );
        assert_eq!(
            super::events_location(env(&[("EVENTS", "ev"), ("DRIFT_EVENTS_URI", "s3://b/e")]))
                .as_deref(),
            Some("ev")
        );
        assert_eq!(
            super::events_location(env(&[("EVENTS", " "), ("DRIFT_EVENTS_URI", "x")])).as_deref(),
            Some("x")
        );
    }
}
