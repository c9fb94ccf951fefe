//! movie-recs telemetry: what operators see, shared by every function and tool.
//!
//! - [`names`]: every metric name, once, for both sinks (Prometheus and EMF).
//! - [`emf`]: CloudWatch Embedded Metric Format lines and their contract check.
//! - [`init_logging`]: structured logs (JSON in Lambda, text on a terminal).

#![warn(missing_docs)]

pub mod emf;
mod logging;
pub mod names;

pub use logging::init as init_logging;
