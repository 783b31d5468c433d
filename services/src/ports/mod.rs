//! Ports: the small traits the services are written against. Only traits and the plain data
//! and error types that cross them live here; adapters (real and simulated) implement them.
//!
//! Every port error says what a caller can do with it (see each variant's doc). Futures are
//! `Send` so the same service code runs on tokio, on madsim and behind axum.

pub mod ledger;
pub mod orders;
