//! The ledger domain: commands, events and the account aggregate (spec 000-002).

pub mod account;
pub mod commands;
pub mod events;

pub use account::{Account, AccountState, Decision, decide};
pub use commands::{LedgerCommand, LedgerError};
pub use events::{EncodedEvent, LedgerEvent};
