//! What a run is judged by, in both services' simulations and in real runs: the invariants'
//! names, a broken invariant (`Violation`), how one client operation ended (`OpRecord`), the
//! answers allowed in fault-free windows, and the outcomes a sweep must see at least once
//! ("sometimes assertions").

use std::collections::BTreeMap;
use std::time::Duration;

use crate::history::{EventKind, HistoryEvent};

use serde::{Deserialize, Serialize};

/// The calm phase (ADR 10): how long each of its operations may take to succeed, in simulated
/// time, before the run breaks `progress`.
pub const CALM_OP_MAX: Duration = Duration::from_secs(5);
/// Pause between the heal and the calm phase: a node restarted by the heal listens by then (a
/// request sent to it before it does waits out the client's timeout).
pub const CALM_SETTLE: Duration = Duration::from_secs(1);

/// Names of the invariants, for `list` and for pinned seeds.
pub const INVARIANTS: [&str; 20] = [
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
    "fault-free-answers",
    "conflict-explained",
    "read-model-past-state",
    "dependency-contract",
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

/// How many of a fault-free window's answers may be refusals nobody caused, per scenario
/// (ADR 10): the share of operations that ended `conflict`, and the share that ended in a
/// server error (a 5xx, or no answer: `info`). In percent of the operations that both started
/// and ended in a fault-free window.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AnswerBounds {
    pub conflict_percent_max: u32,
    pub error_percent_max: u32,
}

/// Operations a fault-free window needs before its shares are judged: below this a single
/// unlucky answer is not a share.
pub const ANSWER_SAMPLE_MIN: usize = 20;

/// Final answers that are the domain's word, not a failure of the system: a refusal the
/// business rules explain (no funds, sold out, an account that exists or does not, a rate
/// limit, a full waiting room, a key reused for another product). Every other error is a server
/// error for [`fault_free_answers`].
pub const DOMAIN_REFUSALS: [&str; 11] = [
    "insufficient_funds",
    "account_exists",
    "account_not_found",
    "balance_limit_exceeded",
    "same_account",
    "currency_mismatch",
    "sold_out",
    "rate_limited",
    "key_reused",
    "idempotency_key_reused",
    "waiting_room_full",
];

/// In fault-free windows (`windows`, nanoseconds, half-open), the shares of operations that
/// ended `conflict` and that ended in a server error stay within `bounds`. Catches a service
/// that refuses while nothing is wrong: a conflict storm, a retry loop that gives up, an error
/// path taken on the happy path. Linear in the history.
pub fn fault_free_answers(history: &[HistoryEvent], windows: &[(u64, u64)], bounds: AnswerBounds) -> Vec<Violation> {
    // Both ends in the same window: an operation that spans a fault is not judged.
    let inside = |start: u64, end: u64| windows.iter().any(|(from, to)| start >= *from && end < *to);
    let mut open: BTreeMap<u64, u64> = BTreeMap::new();
    let (mut total, mut conflicts, mut errors) = (0usize, Vec::new(), Vec::new());
    for e in history {
        if e.kind == EventKind::Invoke {
            open.insert(e.process, e.time);
            continue;
        }
        let Some(start) = open.remove(&e.process) else { continue };
        if !inside(start, e.time) {
            continue;
        }
        total += 1;
        let what =
            || format!("p{} {} {} at {:.3}s", e.process, e.f, e.key.as_deref().unwrap_or("?"), start as f64 / 1e9);
        match (e.kind, e.error.as_deref()) {
            (EventKind::Fail, Some("conflict")) => conflicts.push(what()),
            (EventKind::Info, _) => errors.push(what()),
            (EventKind::Fail, Some(error)) if !DOMAIN_REFUSALS.contains(&error) => {
                errors.push(format!("{} ({error})", what()))
            }
            _ => {}
        }
    }
    let mut out = Vec::new();
    if total < ANSWER_SAMPLE_MIN {
        return out;
    }
    for (name, list, max) in
        [("conflict", &conflicts, bounds.conflict_percent_max), ("server-error", &errors, bounds.error_percent_max)]
    {
        if list.len() * 100 > total * max as usize {
            out.push(Violation::new(
                "fault-free-answers",
                format!(
                    "{} of {total} operations in fault-free windows ended {name} (bound {max}%): first {}",
                    list.len(),
                    list[0]
                ),
            ));
        }
    }
    out
}

/// The fault-free windows of a run: before the first fault, and from the heal to the end.
pub fn fault_free_windows(first_fault: Option<u64>, healed: u64) -> Vec<(u64, u64)> {
    vec![(0, first_fault.unwrap_or(healed).min(healed)), (healed, u64::MAX)]
}

/// Outcomes a sweep must see at least once ("sometimes assertions", ADR 10): a scenario names
/// the ones its default sweep must reach, `cargo sim` fails when one never occurs, and the
/// sweep summary prints them beside the coverage marks. Unlike a coverage mark (a path in the
/// service's code), an outcome is what a client saw.
pub const OUTCOMES: [(&str, &str); 15] = [
    ("transfer-ok", "a transfer succeeded"),
    ("withdraw-refused-for-funds", "a withdrawal was refused for insufficient funds"),
    ("ambiguous-write-applied", "a write whose outcome the client never learned turned out applied"),
    ("ambiguous-write-not-applied", "a write whose outcome the client never learned turned out not applied"),
    ("read-your-write", "a query-API read asked for the client's own last write (min_position) and got it"),
    (
        "read-model-behind",
        "a query-API read reported a version older than a write on it acknowledged before the read began",
    ),
    ("order-accepted", "an order was accepted"),
    ("order-sold-out", "an order was refused as sold out"),
    ("order-refused-nothing-reserved", "an order ended refused with 503 nothing reserved (its produce failed)"),
    (
        "order-accepted-after-refusal",
        "an order was accepted on a retry after its produce had failed and been compensated",
    ),
    ("ambiguous-order-persisted", "an order whose outcome the client never learned turned out persisted"),
    ("ambiguous-order-not-persisted", "an order whose outcome the client never learned turned out not persisted"),
    ("late-retry-settled", "the calm phase's late retry of an ambiguous order got a definite answer"),
    (
        "kafka-resumed-from-commit",
        "a new group member resumed below what the group had read: uncommitted messages delivered again",
    ),
    ("jetstream-delivered-after-restart", "a message acknowledged before a NATS restart was first delivered after it"),
];

#[cfg(madsim)]
thread_local! {
    /// One simulation runs on one thread: the outcomes of this thread's run so far.
    static REACHED: std::cell::RefCell<BTreeMap<&'static str, u64>> = const { std::cell::RefCell::new(BTreeMap::new()) };
}

/// Counts an outcome of the current run.
///
/// # Panics
/// On a name not in [`OUTCOMES`] (a typo would otherwise never be reached).
pub fn reached(name: &'static str) {
    assert!(OUTCOMES.iter().any(|(o, _)| *o == name), "unknown outcome {name}");
    #[cfg(madsim)]
    REACHED.with(|r| *r.borrow_mut().entry(name).or_default() += 1);
}

/// The outcomes of this thread's run so far, and a fresh start.
pub fn take_outcomes() -> BTreeMap<String, u64> {
    #[cfg(madsim)]
    {
        REACHED.with(|r| std::mem::take(&mut *r.borrow_mut()).into_iter().map(|(k, v)| (k.to_string(), v)).collect())
    }
    #[cfg(not(madsim))]
    {
        BTreeMap::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ops(n: usize, start: u64, error: Option<&str>) -> Vec<HistoryEvent> {
        let mut out = Vec::new();
        for i in 0..n as u64 {
            out.push(HistoryEvent::new(i, EventKind::Invoke, "deposit", start + i * 10));
            let mut done = HistoryEvent::new(
                i,
                if error.is_some() { EventKind::Fail } else { EventKind::Ok },
                "deposit",
                start + i * 10 + 5,
            );
            done.error = error.map(str::to_string);
            out.push(done);
        }
        out
    }

    /// Goal: refusals nobody caused in fault-free windows are bounded. Method: 30 operations in
    /// a window, 3 of them `conflict` against a bound of 5%; the same inside a fault window;
    /// domain refusals and a too-small sample.
    #[test]
    fn fault_free_shares_are_bounded() {
        let bounds = AnswerBounds { conflict_percent_max: 5, error_percent_max: 2 };
        let mut history = ops(27, 0, None);
        history.extend(ops(3, 1000, Some("conflict")).into_iter().map(|mut e| {
            e.process += 100;
            e
        }));
        let windows = fault_free_windows(Some(10_000), 20_000);
        let found = fault_free_answers(&history, &windows, bounds);
        assert_eq!(found.len(), 1, "{found:?}");
        assert!(found[0].message.starts_with("3 of 30 operations"), "{}", found[0].message);
        // The same answers while a fault is on are not judged.
        assert!(fault_free_answers(&history, &fault_free_windows(Some(0), 20_000), bounds).is_empty());
        // Refusals the domain explains are not errors.
        let mut funds = ops(27, 0, None);
        funds.extend(ops(3, 1000, Some("insufficient_funds")).into_iter().map(|mut e| {
            e.process += 100;
            e
        }));
        assert!(fault_free_answers(&funds, &windows, bounds).is_empty());
        // Fewer than ANSWER_SAMPLE_MIN operations: no share.
        assert!(fault_free_answers(&ops(5, 0, Some("unavailable")), &windows, bounds).is_empty());
        let errors = ops(ANSWER_SAMPLE_MIN, 0, Some("unavailable"));
        assert_eq!(fault_free_answers(&errors, &windows, bounds)[0].invariant, "fault-free-answers");
    }
}
