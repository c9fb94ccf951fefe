//! movie-recs: everything the Lambda functions and the `recs` CLI share.
//!
//! - [`npy`], [`npz`]: the Python team's array formats.
//! - [`registry`]: the versioned model registry (layout, checksums, publishing).
//! - [`model`], [`topk`]: a verified ALS model and its scoring hot path.
//! - [`api`]: the HTTP contract; [`service`]: per-environment state.
//! - [`lambda`], [`server`]: the two ways requests arrive.
//! - [`metrics`] (Prometheus), [`emf`] (CloudWatch), [`telemetry`]: what operators see.
//! - [`gen_data`]: synthetic MovieLens-format data.
//! - [`drift`]: drift baselines, events, PSI per feature (`recs drift`, the drift function).
//! - [`train`]: rating files, splits, ALS training, offline metrics, the quality gate.

pub mod active;
pub mod api;
pub mod drift;
pub mod emf;
pub mod gen_data;
pub mod lambda;
pub mod metrics;
pub mod model;
pub mod npy;
pub mod npz;
pub mod registry;
pub mod server;
pub mod service;
pub mod store;
pub mod telemetry;
pub mod timefmt;
pub mod titles;
pub mod topk;
pub mod train;
