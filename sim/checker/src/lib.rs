//! Linearizability checking for the testbed's histories: a WGL search (Wing & Gong, with
//! Lowe's memoisation, as porcupine does) with P-compositionality, the models it checks
//! (register, cas-register, kv, bank) and readers for the history formats (our JSON Lines,
//! Jepsen etcd logs, porcupine's kv EDN).
//!
//! - [`history`]: the event type the simulator writes ([`HistoryEvent`]) and invoke/completion
//!   pairing; [`read`]: the three file formats.
//! - [`models`]: each model's step function and its translation of a history into
//!   independent [`Partition`]s (kv: per key; bank: per set of accounts joined by transfers).
//! - [`check`]: [`check_history`], the [`Budget`] and the [`Verdict`] with its [`Witness`];
//!   [`cli`]: [`run_check`], the `check` command's body.
//!
//! Pure code: no clock, no randomness, no threads, no madsim, so it compiles and gives the same
//! answer in the simulation build and the real build. It does not check the ledger's other
//! invariants (conservation, idempotency), which other checkers do.
//!
//! ```
//! use checker::{Budget, ModelKind, Verdict, check_history, read::Format};
//! let log = "INFO  jepsen.util - 0\t:invoke\t:write\t1\n\
//!            INFO  jepsen.util - 0\t:ok\t:write\t1\n\
//!            INFO  jepsen.util - 1\t:invoke\t:read\tnil\n\
//!            INFO  jepsen.util - 1\t:ok\t:read\tnil\n";
//! let history = Format::JepsenLog.parse(log).unwrap();
//! let verdict = check_history(ModelKind::CasRegister, &history, Budget::default()).unwrap();
//! assert!(matches!(verdict, Verdict::Violation(_))); // a stale read after the write
//! ```

pub mod check;
pub mod cli;
pub mod history;
mod memo;
pub mod model;
pub mod models;
pub mod read;
mod search;

pub use check::{
    Budget, Limit, MEMORY_MAX_DEFAULT, ModelKind, STEPS_MAX_DEFAULT, TIMEOUT_DEFAULT, Verdict, Witness, WitnessOp,
    check_history, check_partitions,
};
pub use cli::run_check;
pub use history::{EventKind, History, HistoryError, HistoryEvent};
pub use model::{Model, Operation, Partition};
pub use search::PARTITION_OPERATIONS_MAX;
