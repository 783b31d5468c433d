//! Planted bugs: realistic mistakes the simulator must find (DESIGN 10).
//!
//! Each bug is switched on per simulation run; in the real build `active` is a constant false
//! and every buggy branch sits behind `#[cfg(madsim)]`, so none of them is compiled there.
//! This module only names the bugs and holds the switch; the buggy code is at the place where
//! the mistake would be made.

use std::fmt;
use std::str::FromStr;

/// The catalogue of planted bugs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Bug {
    /// The command handler appends with "expected version: any".
    NoOptimisticLock,
    /// After an ambiguous commit, the command is retried without its idempotency key.
    RetryWithoutKey,
    /// The spec's own code: commit, then publish to NATS and only log a failure; no outbox.
    PublishWithoutOutbox,
    /// The projection applies an event again when it is redelivered.
    NonIdempotentProjection,
    /// The processor acks a delivery before applying it.
    AckBeforeApply,
    /// A withdrawal is decided from the read model's (stale) balance.
    WithdrawFromReadModel,
    /// The stock is read, then decremented, in separate Redis round trips.
    NonAtomicStockCheck,
    /// The worker commits the offset before persisting the orders.
    OffsetBeforePersist,
    /// The order insert has no uniqueness: a redelivered order is inserted again.
    NonIdempotentInsert,
    /// The spec's own flaw: a failed produce leaves the item reserved.
    NoCompensation,
    /// After a Redis restart the sale is re-created from its initial quantity, not from
    /// PostgreSQL.
    NoReinitAfterRedisRestart,
    /// "The produce failed, so the order failed": after a failed produce the API answers 503
    /// "nothing was reserved" even when the cancellation found the order already persisted.
    MisclassifiedRefusal,
    /// A two-stream append (a transfer) expects the first stream's next version on both
    /// streams: it conflicts with nobody, every attempt, and the transfer answers 409.
    ConflictStorm,
    /// The query API answers a balance under the version before it ("the version counts the
    /// events after the account was opened"): a read reports a balance that is not the
    /// account's state at the version it names.
    ReadModelWrongVersion,
    /// The simulator's own CockroachDB (not service code): a gateway serves writes under its
    /// read lease, without a quorum round, so a gateway cut off into the minority still commits
    /// for the lease's length. Found by `crdb-self-check`.
    CommitWithoutQuorum,
}

impl Bug {
    pub const ALL: [Bug; 15] = [
        Bug::NoOptimisticLock,
        Bug::RetryWithoutKey,
        Bug::PublishWithoutOutbox,
        Bug::NonIdempotentProjection,
        Bug::AckBeforeApply,
        Bug::WithdrawFromReadModel,
        Bug::NonAtomicStockCheck,
        Bug::OffsetBeforePersist,
        Bug::NonIdempotentInsert,
        Bug::NoCompensation,
        Bug::NoReinitAfterRedisRestart,
        Bug::MisclassifiedRefusal,
        Bug::ConflictStorm,
        Bug::ReadModelWrongVersion,
        Bug::CommitWithoutQuorum,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Bug::NoOptimisticLock => "no-optimistic-lock",
            Bug::RetryWithoutKey => "retry-without-key",
            Bug::PublishWithoutOutbox => "publish-without-outbox",
            Bug::NonIdempotentProjection => "non-idempotent-projection",
            Bug::AckBeforeApply => "ack-before-apply",
            Bug::WithdrawFromReadModel => "withdraw-from-read-model",
            Bug::NonAtomicStockCheck => "non-atomic-stock-check",
            Bug::OffsetBeforePersist => "offset-before-persist",
            Bug::NonIdempotentInsert => "non-idempotent-insert",
            Bug::NoCompensation => "no-compensation",
            Bug::NoReinitAfterRedisRestart => "no-reinit-after-redis-restart",
            Bug::MisclassifiedRefusal => "misclassified-refusal",
            Bug::ConflictStorm => "conflict-storm",
            Bug::ReadModelWrongVersion => "read-model-wrong-version",
            Bug::CommitWithoutQuorum => "commit-without-quorum",
        }
    }
}

impl fmt::Display for Bug {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for Bug {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Bug::ALL.into_iter().find(|b| b.name() == s).ok_or_else(|| {
            let names: Vec<&str> = Bug::ALL.iter().map(|b| b.name()).collect();
            format!("unknown bug {s:?}; one of: {}", names.join(", "))
        })
    }
}

#[cfg(madsim)]
thread_local! {
    /// One simulation runs on one thread, so the switch is per thread (parallel sweeps run
    /// one simulation per thread).
    static ACTIVE: std::cell::Cell<Option<Bug>> = const { std::cell::Cell::new(None) };
}

/// True when `bug` is switched on for the current simulation run. Always false in the real build.
#[inline]
pub fn active(bug: Bug) -> bool {
    #[cfg(madsim)]
    {
        ACTIVE.with(|a| a.get() == Some(bug))
    }
    #[cfg(not(madsim))]
    {
        let _ = bug;
        false
    }
}

/// Switches a bug on (or none) for the runs on this thread.
#[cfg(madsim)]
pub fn set_active(bug: Option<Bug>) {
    ACTIVE.with(|a| a.set(bug));
}

#[cfg(madsim)]
thread_local! {
    static BUGGIFY: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

/// Buggify points in service code: true with probability `p` when the simulator turned them on
/// for this run; always false in the real build. (madsim's own buggify also delays 10% of all
/// network messages by seconds, which is a different fault; this one touches only the points in
/// our code.)
#[inline]
pub fn buggify(p: f64) -> bool {
    #[cfg(madsim)]
    {
        use madsim::rand::Rng;
        BUGGIFY.with(|b| b.get()) && madsim::rand::thread_rng().gen_bool(p)
    }
    #[cfg(not(madsim))]
    {
        let _ = p;
        false
    }
}

/// Turns the buggify points on or off for the runs on this thread.
#[cfg(madsim)]
pub fn set_buggify(on: bool) {
    BUGGIFY.with(|b| b.set(on));
}

/// Coverage marks: named rare paths, counted per simulation run so a sweep can prove it went
/// through them (a sweep that never retries a conflict tests nothing about conflicts). In the
/// real build `mark` does nothing.
pub mod coverage {
    /// Every mark, with the path it names.
    pub const MARKS: [(&str, &str); 17] = [
        ("conflict-retried", "an append lost the optimistic lock and the command was decided again"),
        ("serialization-retried", "a 40001 serialization failure was retried"),
        ("ambiguous-commit-resolved", "after an ambiguous commit the idempotency key found the outcome"),
        ("idempotent-replay", "a retried command was answered with its stored outcome"),
        ("relay-publish-failed", "the relay could not publish and retried later"),
        ("duplicate-delivery-deduped", "the projection ignored an event it had already applied"),
        ("gap-redelivered", "an event arrived before its predecessor and was redelivered"),
        ("redelivery", "JetStream delivered an event a second time"),
        ("compensation-after-failed-produce", "a failed produce's reservation was cancelled and its item given back"),
        ("persisted-before-cancel", "a produce failed but the worker had persisted the order first: accepted"),
        ("cancellation-finished-by-retry", "a retry finished the cancellation an earlier attempt had begun"),
        ("cancelled-order-skipped", "the worker skipped an order whose reservation was cancelled"),
        (
            "sold-out-after-loss-checked",
            "after Redis lost a sale, a sold-out key's earlier reservations were cancelled first",
        ),
        (
            "stale-reservation-cancelled",
            "a reservation older than the last exact stock was cancelled before reserving afresh",
        ),
        ("duplicate-order-deduped", "the worker found a redelivered order already persisted"),
        ("rate-limited", "a user was refused by the rate limit"),
        ("waiting-room-redirect", "an order was sent to the waiting room"),
    ];

    #[cfg(madsim)]
    thread_local! {
        static COUNTS: std::cell::RefCell<std::collections::BTreeMap<&'static str, u64>> =
            const { std::cell::RefCell::new(std::collections::BTreeMap::new()) };
    }

    /// Counts one pass through a named rare path.
    ///
    /// # Panics
    /// In the simulation build, for a name not in [`MARKS`] (a typo would never be reached).
    #[inline]
    pub fn mark(name: &'static str) {
        #[cfg(madsim)]
        {
            assert!(MARKS.iter().any(|(m, _)| *m == name), "unknown coverage mark {name}");
            COUNTS.with(|c| *c.borrow_mut().entry(name).or_default() += 1);
        }
        #[cfg(not(madsim))]
        let _ = name;
    }

    /// The counts of this thread's run so far, and a fresh start.
    #[cfg(madsim)]
    pub fn take() -> std::collections::BTreeMap<String, u64> {
        COUNTS.with(|c| std::mem::take(&mut *c.borrow_mut())).into_iter().map(|(k, v)| (k.to_string(), v)).collect()
    }
}
