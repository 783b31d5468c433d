//! The services of the testbed, written against small ports so the same logic runs on real
//! infrastructure and in the simulator.
//!
//! - `ports`: the traits (event store, bus, read model, ...), their data and errors;
//! - `ledger`, `orders`: each service's logic, generic over the ports, and in-memory adapters;
//! - `reply`: the HTTP answer both services' APIs build;
//! - `adapters`, `http`, `config`, `app` (real build only): sqlx, async-nats, axum, wiring.

pub mod bugs;
pub mod ledger;
pub mod metrics;
pub mod orders;
pub mod ports;
pub mod reply;

#[cfg(not(madsim))]
pub mod adapters;
#[cfg(not(madsim))]
pub mod app;
#[cfg(not(madsim))]
pub mod config;
#[cfg(not(madsim))]
pub mod http;
#[cfg(not(madsim))]
pub mod orders_app;
