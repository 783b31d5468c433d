//! The ledger's invariants: pure functions of what clients saw (the history and the keys of
//! their operations) and of the end state (the event store and the read model). They compile
//! in both builds, so real runs are checked by the same code.

use std::collections::BTreeMap;

use models::ledger::{Account, LedgerEvent};
use rust_decimal::Decimal;
use services::ports::ledger::{BalanceView, RecordedEvent};

use crate::history::{EventKind, HistoryEvent};
pub use crate::verdict::{INVARIANTS, OpRecord, Violation};

fn decimal(value: Option<&serde_json::Value>) -> Option<Decimal> {
    value.and_then(|v| models::ledger::events::decimal_from_json(v).ok())
}

/// Every stream of the store, grouped and in version order.
pub fn streams(events: &[RecordedEvent]) -> BTreeMap<&str, Vec<&RecordedEvent>> {
    let mut by_stream: BTreeMap<&str, Vec<&RecordedEvent>> = BTreeMap::new();
    for event in events {
        by_stream.entry(event.stream_id.as_str()).or_default().push(event);
    }
    for list in by_stream.values_mut() {
        list.sort_by_key(|e| e.version);
    }
    by_stream
}

/// Folds every stream; an event that cannot be decoded is a violation of its own.
pub fn fold_all(events: &[RecordedEvent]) -> Result<BTreeMap<String, Account>, Violation> {
    let mut accounts = BTreeMap::new();
    for (stream, list) in streams(events) {
        let mut account = Account::new(stream);
        for event in list {
            let decoded = LedgerEvent::decode(&event.encoded)
                .map_err(|e| Violation::new("convergence", format!("undecodable event in {stream}: {e}")))?;
            account.apply(&decoded);
        }
        accounts.insert(stream.to_string(), account);
    }
    Ok(accounts)
}

/// No read shows a negative balance, and no stream's balance is negative after any event.
pub fn no_negative_balance(history: &[HistoryEvent], events: &[RecordedEvent]) -> Vec<Violation> {
    let mut out = Vec::new();
    for e in history {
        if e.kind == EventKind::Ok
            && (e.f == "read" || e.f == "read_model")
            && let Some(balance) = decimal(e.value.as_ref())
            && balance < Decimal::ZERO
        {
            out.push(Violation::new(
                "no-negative-balance",
                format!(
                    "process {} read {balance} on {} ({}) at {}",
                    e.process,
                    e.key.as_deref().unwrap_or("?"),
                    e.f,
                    e.time
                ),
            ));
        }
    }
    for (stream, list) in streams(events) {
        let mut balance = Decimal::ZERO;
        for event in list {
            let Ok(decoded) = LedgerEvent::decode(&event.encoded) else { continue };
            balance += decoded.balance_delta();
            if balance < Decimal::ZERO {
                out.push(Violation::new(
                    "no-negative-balance",
                    format!("{stream} is {balance} after version {} ({})", event.version, event.encoded.event_type),
                ));
                break;
            }
        }
    }
    out
}

/// Double entry (every transfer's debit has its credit) and the total of all balances within
/// what the clients' acknowledged and unknown operations allow.
pub fn conservation(history: &[HistoryEvent], events: &[RecordedEvent]) -> Vec<Violation> {
    let mut out = Vec::new();
    let mut sent: BTreeMap<(String, String, Decimal), i64> = BTreeMap::new();
    let mut total = Decimal::ZERO;
    for event in events {
        let Ok(decoded) = LedgerEvent::decode(&event.encoded) else { continue };
        total += decoded.balance_delta();
        match decoded {
            LedgerEvent::TransferSent(t) => {
                *sent.entry((event.stream_id.clone(), t.to_account_id, t.amount.normalize())).or_default() += 1;
            }
            LedgerEvent::TransferReceived(t) => {
                *sent.entry((t.from_account_id, event.stream_id.clone(), t.amount.normalize())).or_default() -= 1;
            }
            _ => {}
        }
    }
    for ((from, to, amount), n) in sent {
        if n != 0 {
            out.push(Violation::new(
                "conservation",
                format!("transfer {from} -> {to} of {amount}: {n:+} unmatched halves"),
            ));
        }
    }
    // Completed operations by (process, f): invoke then completion, in order per process.
    let mut open: BTreeMap<u64, &HistoryEvent> = BTreeMap::new();
    let (mut low, mut high) = (Decimal::ZERO, Decimal::ZERO);
    let mut effect = |invoke: &HistoryEvent, kind: EventKind| {
        let amount = decimal(invoke.value.as_ref()).unwrap_or(Decimal::ZERO);
        let signed = match invoke.f.as_str() {
            "open" | "deposit" => amount,
            "withdraw" => -amount,
            _ => return,
        };
        match kind {
            EventKind::Ok => {
                low += signed;
                high += signed;
            }
            EventKind::Info | EventKind::Invoke => {
                if signed < Decimal::ZERO {
                    low += signed;
                } else {
                    high += signed;
                }
            }
            EventKind::Fail => {}
        }
    };
    for e in history {
        match e.kind {
            EventKind::Invoke => {
                open.insert(e.process, e);
            }
            kind => {
                if let Some(invoke) = open.remove(&e.process) {
                    effect(invoke, kind);
                }
            }
        }
    }
    for invoke in open.values() {
        effect(invoke, EventKind::Invoke);
    }
    if total < low || total > high {
        out.push(Violation::new(
            "conservation",
            format!("total of all balances is {total}, but the clients' operations allow only [{low}, {high}]"),
        ));
    }
    out
}

/// Each idempotency key's events come from one command; every acknowledged operation is in
/// the store, and no operation that definitely failed is.
pub fn one_effect_per_key(ops: &[OpRecord], events: &[RecordedEvent]) -> Vec<Violation> {
    let mut out = Vec::new();
    let mut by_key: BTreeMap<&str, Vec<&RecordedEvent>> = BTreeMap::new();
    for event in events {
        if let Some(key) = event.command_key.as_deref() {
            by_key.entry(key).or_default().push(event);
        }
    }
    for (key, list) in &by_key {
        let transfer_pair = list.len() == 2
            && list.iter().any(|e| e.encoded.event_type == "TransferSent")
            && list.iter().any(|e| e.encoded.event_type == "TransferReceived");
        if list.len() > 1 && !transfer_pair {
            let what: Vec<String> = list.iter().map(|e| format!("{}@{}", e.stream_id, e.version)).collect();
            out.push(Violation::new(
                "one-effect-per-key",
                format!("key {key} applied {} times: {}", list.len(), what.join(", ")),
            ));
        }
    }
    for op in ops {
        if op.f == "read" || op.f == "read_model" {
            continue;
        }
        let present = by_key.contains_key(op.key.as_str());
        match op.outcome.as_str() {
            "ok" if !present => {
                out.push(Violation::new(
                    "one-effect-per-key",
                    format!("{} {} was acknowledged but is not in the store", op.f, op.key),
                ));
            }
            "fail" if present => {
                out.push(Violation::new("one-effect-per-key", format!("{} {} failed but was applied", op.f, op.key)));
            }
            _ => {}
        }
    }
    out
}

/// The read model equals the fold of the event store: same accounts, balances and versions.
pub fn convergence(events: &[RecordedEvent], views: &[BalanceView]) -> Vec<Violation> {
    let accounts = match fold_all(events) {
        Ok(accounts) => accounts,
        Err(v) => return vec![v],
    };
    let mut out = Vec::new();
    let views: BTreeMap<&str, &BalanceView> = views.iter().map(|v| (v.account_id.as_str(), v)).collect();
    for (id, account) in &accounts {
        match (views.get(id.as_str()), account.balance()) {
            (Some(view), Some(balance)) if view.balance == balance && view.version == account.version => {}
            (Some(view), _) => out.push(Violation::new(
                "convergence",
                format!(
                    "{id}: read model has {} at v{}, event store {} at v{}",
                    view.balance,
                    view.version,
                    account.balance().unwrap_or_default(),
                    account.version
                ),
            )),
            (None, _) => out.push(Violation::new("convergence", format!("{id}: missing from the read model"))),
        }
    }
    for id in views.keys() {
        if !accounts.contains_key(*id) {
            out.push(Violation::new("convergence", format!("{id}: in the read model but not in the event store")));
        }
    }
    out
}

/// Search steps the linearizability check of one run may take before it gives up (Unknown).
pub const LINEARIZABILITY_STEPS_MAX: u64 = 20_000_000;

/// The clients' operations (all but the read model's stale reads, which are not meant to be
/// linearizable) have a linearization under the bank model. An exhausted budget is reported
/// too, as a violation of its own kind: a run whose history cannot be checked proves nothing.
pub fn linearizable(history: &[HistoryEvent]) -> Vec<Violation> {
    let events: Vec<HistoryEvent> = history.iter().filter(|e| e.f != "read_model").cloned().collect();
    let history = checker::History::from_events(events);
    match checker::check_history(checker::ModelKind::Bank, &history, checker::Budget::steps(LINEARIZABILITY_STEPS_MAX))
    {
        Ok(checker::Verdict::Ok) => Vec::new(),
        Ok(checker::Verdict::Violation(witness)) => vec![Violation::new("linearizability", witness.to_string())],
        Ok(checker::Verdict::Unknown { partition, .. }) => vec![Violation::new(
            "linearizability",
            format!("unknown: the check's budget of {LINEARIZABILITY_STEPS_MAX} steps ran out on {partition}"),
        )],
        Err(e) => vec![Violation::new("linearizability", format!("history cannot be checked: {e}"))],
    }
}

/// Read-model reads are real past states: every balance the query API returns is the fold of
/// the account's events up to the version it reports (not a mix of two versions, not a version
/// the account never had); one process's reads of one account never go back in version (a
/// Jepsen process is one client session: a client takes a new process after an `info`); and a
/// read that asked for `min_position = N` never reports a version below N. Catches a projection
/// or a query that pairs a balance with the wrong version, a reader switching to a replica that
/// is further behind, and a `min_position` that is not waited for. What slips past: a stale
/// read that is a real past state (allowed: the read model is eventually consistent).
/// Linear in the history and the events.
pub fn read_model_reads(history: &[HistoryEvent], events: &[RecordedEvent]) -> Vec<Violation> {
    let mut balances: BTreeMap<&str, Vec<Option<Decimal>>> = BTreeMap::new();
    for (stream, list) in streams(events) {
        let mut account = Account::new(stream);
        let mut after = Vec::with_capacity(list.len());
        for event in list {
            match LedgerEvent::decode(&event.encoded) {
                Ok(decoded) => {
                    account.apply(&decoded);
                    after.push(account.balance());
                }
                Err(_) => after.push(None),
            }
        }
        balances.insert(stream, after);
    }
    let mut out = Vec::new();
    let mut open: BTreeMap<u64, &HistoryEvent> = BTreeMap::new();
    let mut last_seen: BTreeMap<(u64, &str), u64> = BTreeMap::new();
    for e in history {
        if e.f != "read_model" {
            continue;
        }
        if e.kind == EventKind::Invoke {
            open.insert(e.process, e);
            continue;
        }
        let invoke = open.remove(&e.process);
        if e.kind != EventKind::Ok {
            continue;
        }
        let account = e.key.as_deref().unwrap_or("?");
        let at = format!("p{} read_model {account} at {:.3}s", e.process, e.time as f64 / 1e9);
        let Some(version) = e.version else {
            out.push(Violation::new("read-model-past-state", format!("{at} reported no version")));
            continue;
        };
        let read = decimal(e.value.as_ref());
        let real = version
            .checked_sub(1)
            .and_then(|i| balances.get(account).and_then(|list| list.get(i as usize)))
            .copied()
            .flatten();
        match (read, real) {
            (Some(read), Some(real)) if read == real => {}
            (read, real) => out.push(Violation::new(
                "read-model-past-state",
                format!(
                    "{at} reported {} at version {version}; the account's state at that version is {}",
                    read.map_or_else(|| "no balance".to_string(), |b| b.to_string()),
                    real.map_or_else(|| "none (no such version)".to_string(), |b| b.to_string())
                ),
            )),
        }
        if let Some(min) = invoke.and_then(|i| i.version)
            && version < min
        {
            out.push(Violation::new(
                "read-model-past-state",
                format!("{at} asked for min_position {min} and was answered version {version}"),
            ));
        }
        let seen = last_seen.entry((e.process, account)).or_default();
        if version < *seen {
            out.push(Violation::new(
                "read-model-past-state",
                format!("{at} reported version {version} after the same process had read version {}", *seen),
            ));
        }
        *seen = (*seen).max(version);
    }
    out
}

/// A command that gives up with `conflict` lost its optimistic lock to someone: a competing
/// write committed on one of its accounts between its invoke and its answer. `commits` holds
/// every commit as (stream, nanoseconds). Catches a command that conflicts with nobody: a
/// wrong expected version, a retry that re-reads stale state, a lock held by itself. What slips
/// past: a command that conflicts while a competing write did commit (a livelock under real
/// contention: the fault-free answer shares bound that). Linear in the history plus the commits.
pub fn conflicts_explained(history: &[HistoryEvent], commits: &[(String, u64)]) -> Vec<Violation> {
    let mut by_stream: BTreeMap<&str, Vec<u64>> = BTreeMap::new();
    for (stream, at) in commits {
        by_stream.entry(stream.as_str()).or_default().push(*at);
    }
    for times in by_stream.values_mut() {
        times.sort_unstable();
    }
    let committed_between = |stream: &str, from: u64, to: u64| {
        by_stream.get(stream).is_some_and(|times| {
            let first = times.partition_point(|t| *t < from);
            times.get(first).is_some_and(|t| *t <= to)
        })
    };
    let mut out = Vec::new();
    let mut open: BTreeMap<u64, &HistoryEvent> = BTreeMap::new();
    for e in history {
        if e.kind == EventKind::Invoke {
            open.insert(e.process, e);
            continue;
        }
        let Some(invoke) = open.remove(&e.process) else { continue };
        if e.kind != EventKind::Fail || e.error.as_deref() != Some("conflict") {
            continue;
        }
        let accounts: Vec<&str> = invoke.key.iter().chain(invoke.to.iter()).map(String::as_str).collect();
        if !accounts.iter().any(|a| committed_between(a, invoke.time, e.time)) {
            out.push(Violation::new(
                "conflict-explained",
                format!(
                    "p{} {} on {} ended conflict ({:.3}s..{:.3}s) but nobody committed on those accounts meanwhile",
                    e.process,
                    e.f,
                    accounts.join(", "),
                    invoke.time as f64 / 1e9,
                    e.time as f64 / 1e9
                ),
            ));
        }
    }
    out
}

/// The outcomes a ledger run reached (see `verdict::OUTCOMES`), from what clients saw and the
/// store. "read-model-behind": a query-API read reported a version older than one a write on
/// that account had already been acknowledged with before the read began (a stale read: the
/// read checks saw one).
pub fn reach_outcomes(history: &[HistoryEvent], ops: &[OpRecord], events: &[RecordedEvent]) {
    use crate::verdict::reached;
    let mut open: BTreeMap<u64, (&HistoryEvent, u64)> = BTreeMap::new();
    let mut acked: BTreeMap<&str, u64> = BTreeMap::new();
    for e in history {
        let account = e.key.as_deref().unwrap_or("");
        if e.kind == EventKind::Invoke {
            open.insert(e.process, (e, acked.get(account).copied().unwrap_or(0)));
            continue;
        }
        let invoke = open.remove(&e.process);
        match (e.f.as_str(), e.kind, e.error.as_deref()) {
            ("read_model", EventKind::Ok, _) => {
                if invoke.is_some_and(|(i, _)| i.version.is_some()) {
                    reached("read-your-write");
                }
                if let (Some(v), Some((_, before))) = (e.version, invoke)
                    && v < before
                {
                    reached("read-model-behind");
                }
            }
            ("read", _, _) => {}
            (_, EventKind::Ok, _) => {
                if e.f == "transfer" {
                    reached("transfer-ok");
                }
                if let Some(v) = e.version {
                    let known = acked.entry(account).or_default();
                    *known = (*known).max(v);
                }
            }
            ("withdraw", EventKind::Fail, Some("insufficient_funds")) => reached("withdraw-refused-for-funds"),
            _ => {}
        }
    }
    let applied: std::collections::BTreeSet<&str> = events.iter().filter_map(|e| e.command_key.as_deref()).collect();
    for op in ops.iter().filter(|op| op.outcome == "info") {
        reached(if applied.contains(op.key.as_str()) {
            "ambiguous-write-applied"
        } else {
            "ambiguous-write-not-applied"
        });
    }
}

#[cfg(test)]
mod tests {
    use models::ledger::events::{AccountCreated, MoneyDeposited};
    use models::money::Currency;
    use serde_json::json;

    use super::*;

    fn event(stream: &str, version: u64, e: LedgerEvent) -> RecordedEvent {
        RecordedEvent {
            event_id: uuid::Uuid::from_u128(u128::from(version)),
            stream_id: stream.into(),
            version,
            global_position: version as i64,
            encoded: e.encode(),
            command_key: None,
        }
    }

    /// acct-1: opened with 10.00 (v1), then +5.00 (v2), then +1.00 (v3).
    fn store() -> Vec<RecordedEvent> {
        let deposit = |amount: &str| {
            LedgerEvent::MoneyDeposited(MoneyDeposited { amount: amount.parse().unwrap(), currency: Currency::USD })
        };
        vec![
            event(
                "acct-1",
                1,
                LedgerEvent::AccountCreated(AccountCreated {
                    owner_name: "O".into(),
                    currency: Currency::USD,
                    initial_balance: "10.00".parse().unwrap(),
                }),
            ),
            event("acct-1", 2, deposit("5.00")),
            event("acct-1", 3, deposit("1.00")),
        ]
    }

    fn read(process: u64, time: u64, min: Option<u64>, balance: &str, version: u64) -> [HistoryEvent; 2] {
        let mut invoke = HistoryEvent::new(process, EventKind::Invoke, "read_model", time);
        invoke.key = Some("acct-1".into());
        invoke.version = min;
        let mut done = HistoryEvent::new(process, EventKind::Ok, "read_model", time + 1);
        done.key = Some("acct-1".into());
        done.value = Some(json!(balance));
        done.version = Some(version);
        [invoke, done]
    }

    /// Goal: a read-model read is a real past state. Method: reads paired with the right and a
    /// wrong version, one going back in version, one below its min_position.
    #[test]
    fn read_model_reads_are_real_past_states() {
        let events = store();
        let good: Vec<HistoryEvent> =
            [read(1, 10, None, "10.00", 1), read(1, 20, Some(2), "15.00", 2), read(2, 30, None, "16.00", 3)].concat();
        assert!(read_model_reads(&good, &events).is_empty());
        // The planted bug's answer: the balance after v3 under v2.
        let wrong = read(1, 10, None, "16.00", 2).to_vec();
        let found = read_model_reads(&wrong, &events);
        assert_eq!(found.len(), 1, "{found:?}");
        assert!(found[0].message.contains("at version 2"), "{}", found[0].message);
        let back: Vec<HistoryEvent> = [read(1, 10, None, "16.00", 3), read(1, 20, None, "15.00", 2)].concat();
        assert_eq!(read_model_reads(&back, &events).len(), 1);
        let below = read(1, 10, Some(3), "15.00", 2).to_vec();
        assert!(read_model_reads(&below, &events)[0].message.contains("min_position 3"));
        let never = read(1, 10, None, "20.00", 9).to_vec();
        assert!(read_model_reads(&never, &events)[0].message.contains("no such version"));
    }

    fn op(process: u64, f: &str, from: u64, to: u64, error: Option<&str>) -> [HistoryEvent; 2] {
        let mut invoke = HistoryEvent::new(process, EventKind::Invoke, f, from);
        invoke.key = Some("acct-1".into());
        invoke.to = Some("acct-2".into());
        let mut done = HistoryEvent::new(process, EventKind::Fail, f, to);
        done.error = error.map(str::to_string);
        [invoke, done]
    }

    /// Goal: a conflict needs a competitor. Method: a transfer that ended `conflict` with a
    /// commit on its destination during it, and one with commits only before and after it.
    #[test]
    fn a_conflict_with_nobody_is_a_violation() {
        let commits = vec![("acct-2".to_string(), 150), ("acct-1".to_string(), 90), ("acct-1".to_string(), 400)];
        assert!(conflicts_explained(&op(1, "transfer", 100, 200, Some("conflict")), &commits).is_empty());
        let found = conflicts_explained(&op(1, "transfer", 200, 300, Some("conflict")), &commits);
        assert_eq!(found.len(), 1);
        assert_eq!(found[0].invariant, "conflict-explained");
        // Other refusals are not held to it.
        assert!(conflicts_explained(&op(1, "withdraw", 200, 300, Some("insufficient_funds")), &commits).is_empty());
    }
}
