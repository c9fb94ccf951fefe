//! movie-recs serving: what the HTTP Lambda functions and `recs serve` run.
//!
//! - [`Config`]: settings from the environment.
//! - [`Service`]: one execution environment's served snapshot, its reload and
//!   polling, and [`Service::recommend`], the domain's request -> answer
//!   (`recommender`: rollout choice, shadow comparison, the trace/exposure record).
//! - [`control`]: switch and rollout, implemented once (`recs-control`: HTTP routes,
//!   CLI and the retrain function).
//! - [`api`]: the HTTP contract as one axum `Router` ([`api::app`]), one error type
//!   ([`ApiError`]) and one table from [`ErrorKind`] to status and `error_type`.
//! - [`Metrics`]: the Prometheus side; EMF lines come from [`recs_telemetry`].
//! - [`lambda`]: the app on Lambda (`lambda_http::run`) with its EMF layer.
//! - [`fault`]: fault injection for the alert drills, off unless `RECS_FAULT_INJECTION=1`.

#![warn(missing_docs)]

pub mod alloc;
pub mod api;
mod config;
pub use recs_control as control;
mod error;
mod exposure;
pub mod fault;
pub mod lambda;
mod metrics;
mod recommender;
mod state;
mod trace;

pub use config::{Config, ConfigError, RecommendAuth, DEFAULT_MAX_K};
pub use error::{ApiError, ErrorKind};
pub use exposure::{ExposureLog, ExposureSink};
pub use metrics::{Metrics, VersionInfo};
pub use recommender::{Answer, Ask, RecommendError, Record};
pub use state::{ModelState, Served, Service};
