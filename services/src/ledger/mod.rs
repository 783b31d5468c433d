//! The ledger service (spec 000-002): command handling, HTTP contract, outbox relay, read
//! processor and rebuild, all generic over the ports.

pub mod api;
pub mod command;
pub mod contract;
pub mod mem;
pub mod processor;
pub mod relay;
