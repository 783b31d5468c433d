//! The order system in the simulator: simulated Redis, Kafka and PostgreSQL, the order roles as
//! nodes, flash-sale clients, scenarios and invariants.

pub mod invariants;
pub mod workload;

#[cfg(madsim)]
pub mod deps;
#[cfg(madsim)]
pub mod scenario;
