//! The ledger in the simulator: simulated CockroachDB, JetStream and PostgreSQL, the ledger's
//! roles as nodes, clients, scenarios and invariants.

pub mod invariants;
pub mod workload;

#[cfg(madsim)]
pub mod client;

#[cfg(madsim)]
pub mod crdb;
#[cfg(madsim)]
pub mod jetstream;
#[cfg(madsim)]
pub mod readdb;
#[cfg(madsim)]
pub mod scenario;
#[cfg(madsim)]
pub mod world;
