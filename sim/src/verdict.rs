//! What a run is judged by, in both services' simulations and in real runs: the invariants'
//! names, a broken invariant (`Violation`) and how one client operation ended (`OpRecord`).

use std::time::Duration;

use serde::{Deserialize, Serialize};

/// The calm phase (ADR 10): how long each of its operations may take to succeed, in simulated
/// time, before the run breaks `progress`.
pub const CALM_OP_MAX: Duration = Duration::from_secs(5);
/// Pause between the heal and the calm phase: a node restarted by the heal listens by then (a
/// request sent to it before it does waits out the client's timeout).
pub const CALM_SETTLE: Duration = Duration::from_secs(1);

/// Names of the invariants, for `list` and for pinned seeds.
pub const INVARIANTS: [&str; 16] = [
    "no-negative-balance",
    "conservation",
    "one-effect-per-key",
    "convergence",
    "linearizability",
    "no-oversell",
    "acknowledged-persisted",
    "one-order-per-key",
    "no-leaked-stock",
    "cache-matches-db",
    "no-false-sold-out",
    "definite-failure-no-effect",
    "progress",
    "scenario-expectation",
    "no-panic",
    "liveness",
];

/// A broken invariant, with what shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Violation {
    pub invariant: String,
    pub message: String,
}

impl Violation {
    pub fn new(invariant: &str, message: impl Into<String>) -> Self {
        assert!(INVARIANTS.contains(&invariant), "unknown invariant {invariant}");
        Violation { invariant: invariant.to_string(), message: message.into() }
    }
}

/// How one operation ended, by its idempotency key.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OpRecord {
    pub key: String,
    pub f: String,
    /// "ok", "fail" or "info".
    pub outcome: String,
}
