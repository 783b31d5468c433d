//! The simulator: simulated dependencies with real failure semantics, faults, workloads,
//! histories, invariants, and the runner behind `cargo sim` and `cargo testbed`.
//!
//! Histories and invariants are pure and compile in both builds, so real runs are checked by the
//! same code; everything that needs madsim's runtime is behind `cfg(madsim)`.

pub mod history;
pub mod http;
pub mod ledger;
pub mod metrics;
pub mod orders;
pub mod summary;
pub mod timeline;
pub mod verdict;

#[cfg(madsim)]
pub mod faults;
#[cfg(madsim)]
pub mod limits;
#[cfg(madsim)]
pub mod mid_request;
#[cfg(madsim)]
pub mod run;
#[cfg(madsim)]
pub mod scenarios;
#[cfg(madsim)]
pub mod selfcheck;
#[cfg(madsim)]
pub mod trace;
