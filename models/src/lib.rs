//! The pure domain of the testbed: money and the ledger's commands, events and aggregate.
//!
//! No I/O, no async, no clock and no randomness live here, so the same rules run unchanged in
//! the real build, in the simulator and in the checkers.

pub mod ledger;
pub mod money;
pub mod orders;

pub use money::{Currency, Money, MoneyError};
