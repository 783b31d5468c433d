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
        Ok(checker::Verdict::Unknown { partition }) => vec![Violation::new(
            "linearizability",
            format!("unknown: the check's budget of {LINEARIZABILITY_STEPS_MAX} steps ran out on {partition}"),
        )],
        Err(e) => vec![Violation::new("linearizability", format!("history cannot be checked: {e}"))],
    }
}
