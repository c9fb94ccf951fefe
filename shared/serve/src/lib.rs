//! movie-recs serving: what the HTTP Lambda functions and `recs serve` run.
//!
//! - [`Config`]: settings from the environment.
//! - [`Service`]: one execution environment's served snapshot, its reload and polling.
//! - [`control`]: switch and rollout, implemented once (HTTP routes and CLI).
//! - [`api`]: the HTTP contract, one route table, one error-to-response mapping.
//! - [`Metrics`]: the Prometheus side; EMF lines come from [`recs_telemetry`].
//! - [`lambda`]: the adapter between lambda_http's events and [`api`].
//! - [`fault`]: fault injection for the alert drills, off unless `RECS_FAULT_INJECTION=1`.

#![warn(missing_docs)]

pub mod alloc;
pub mod api;
mod config;
pub mod control;
mod exposure;
pub mod fault;
pub mod lambda;
mod metrics;
mod state;
mod trace;

pub use config::{Config, ConfigError, DEFAULT_MAX_K};
pub use exposure::{ExposureLog, ExposureSink};
pub use metrics::{Metrics, VersionInfo};
pub use state::{ModelState, Served, Service};
