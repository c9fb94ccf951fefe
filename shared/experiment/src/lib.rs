//! Experiments on what was served: the exposure log and A/B analysis.
//!
//! - [`Exposure`]: one recommendation response in the Python team's `reco_response`
//!   schema plus `variant`, as `recs serve` and the recommend function record it;
//!   [`exposure_key`] is where a batch of them is written under the events location,
//!   [`read_exposures`] reads them back.
//! - [`analyze`]: exposures joined with later watch/rate events of the same user
//!   (a conversion), per variant, with the z-test, the sample-ratio check and the
//!   guardrails; [`decide`] is the promotion rule.
//! - [`run`]: one analysis of the experiment in force ([`Experiment::of`]), as
//!   `GET /experiment/analyze`, `POST /experiment/promote` and `recs experiment` do it.

#![warn(missing_docs)]

mod analysis;
mod exposure;
mod run;
pub mod stats;

pub use analysis::{
    analyze, decide, Analysis, AnalyzeParams, Check, Decision, PromoteRule, SampleRatio,
    VariantStats, MAX_EXPOSURES_PER_USER,
};
pub use exposure::{exposure_key, parse_exposures, read_exposures, Exposure, ExposureStats};
pub use run::{run, DataRead, Experiment, ExperimentError, NotAnExperiment, Report, RunParams};
