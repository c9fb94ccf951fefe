//! The `recs` binary's library half: the local HTTP server (`recs serve`), kept here
//! so the Lambda functions never compile an HTTP server they do not run, and the
//! end-to-end tests can start one in-process.

#![warn(missing_docs)]

pub mod server;
