//! Port contract tests: one body per port, run against every adapter (in-memory, simulated and
//! real), so that the simulator's dependencies and the real ones keep the same contract.
//!
//! Each function returns `Err(description)` on the first broken clause instead of panicking, so
//! the caller's test reports which adapter broke which clause. Stream names are prefixed so a
//! shared store can hold several runs.

use models::Currency;
use models::ledger::events::{AccountCreated, MoneyDeposited};
use models::ledger::{EncodedEvent, LedgerEvent};
use rust_decimal::Decimal;
use uuid::Uuid;

use crate::ports::ledger::{
    AppendBatch, Applied, EventStore, NewEvent, ReadModel, RecordedEvent, StoreError, StoredOutcome,
};

fn check(holds: bool, clause: &str) -> Result<(), String> {
    if holds { Ok(()) } else { Err(format!("contract broken: {clause}")) }
}

fn created(balance: i64) -> EncodedEvent {
    LedgerEvent::AccountCreated(AccountCreated {
        owner_name: "Contract".into(),
        currency: Currency::USD,
        initial_balance: Decimal::new(balance, 2),
    })
    .encode()
}

fn deposited(amount: i64) -> EncodedEvent {
    LedgerEvent::MoneyDeposited(MoneyDeposited { amount: Decimal::new(amount, 2), currency: Currency::USD }).encode()
}

fn new_event(id: u128, stream: &str, version: u64, encoded: EncodedEvent, key: Option<&str>) -> NewEvent {
    NewEvent {
        event_id: Uuid::from_u128(id),
        stream_id: stream.to_string(),
        version,
        encoded,
        command_key: key.map(str::to_string),
    }
}

fn outcome(request: &str) -> StoredOutcome {
    StoredOutcome { request: request.to_string(), response: serde_json::json!({"answer": request}) }
}

/// The event store's contract. `ids` must be unique to this run (event ids are primary keys).
///
/// # Errors
/// The first clause the store breaks.
pub async fn event_store<S: EventStore>(store: &S, prefix: &str, ids: u128) -> Result<(), String> {
    let a = format!("{prefix}-a");
    let b = format!("{prefix}-b");
    let key = format!("{prefix}-key");
    fn e(msg: &'static str) -> impl Fn(StoreError) -> String {
        move |err| format!("{msg}: {err}")
    }
    check(store.load_stream(&a, 0).await.map_err(e("load empty"))?.is_empty(), "a new stream is empty")?;
    let backlog_before = store.backlog().await.map_err(e("backlog"))?;

    let first = AppendBatch::new(vec![new_event(ids + 1, &a, 1, created(10_000), None)], None);
    let positions = store.append(first).await.map_err(e("first append"))?;
    check(positions.len() == 1, "one position per event")?;
    let again = AppendBatch::new(vec![new_event(ids + 2, &a, 1, created(1), None)], None);
    check(matches!(store.append(again).await, Err(StoreError::Conflict { .. })), "a taken version is a conflict")?;

    // A transfer-like batch over two streams commits together, with its idempotency outcome.
    let pair = AppendBatch::new(
        vec![new_event(ids + 3, &a, 2, deposited(500), Some(&key)), new_event(ids + 4, &b, 1, created(0), Some(&key))],
        Some((key.clone(), outcome("first"))),
    );
    let positions = store.append(pair).await.map_err(e("batch append"))?;
    check(positions.len() == 2 && positions[0] != positions[1], "positions are unique")?;
    let stored = store.outcome(&key).await.map_err(e("outcome"))?;
    check(stored == Some(outcome("first")), "the outcome is stored with the events")?;
    let duplicate = AppendBatch::new(
        vec![new_event(ids + 5, &a, 3, deposited(1), Some(&key))],
        Some((key.clone(), outcome("second"))),
    );
    check(matches!(store.append(duplicate).await, Err(StoreError::Duplicate)), "a used key is a duplicate")?;
    let stream = store.load_stream(&a, 0).await.map_err(e("load"))?;
    check(stream.len() == 2, "a refused batch writes nothing")?;
    let newer = store.load_stream(&a, 1).await.map_err(e("load after"))?;
    check(
        newer.iter().map(|e| e.version).collect::<Vec<_>>() == vec![2],
        "a load after a version reads what is newer",
    )?;
    check(store.load_stream(&a, 2).await.map_err(e("load after"))?.is_empty(), "nothing after the last version")?;
    check(stream.iter().map(|e| e.version).collect::<Vec<_>>() == vec![1, 2], "streams load in version order")?;
    check(stream[1].command_key.as_deref() == Some(key.as_str()), "events keep their command key")?;
    check(stream[1].encoded == deposited(500), "events keep their type, version and data")?;

    // A conflict on the second stream of a batch leaves the first untouched.
    let half = AppendBatch::new(
        vec![new_event(ids + 6, &a, 3, deposited(1), None), new_event(ids + 7, &b, 1, deposited(1), None)],
        None,
    );
    check(matches!(store.append(half).await, Err(StoreError::Conflict { .. })), "a batch conflicts as a whole")?;
    check(store.load_stream(&a, 0).await.map_err(e("load"))?.len() == 2, "a failed batch is atomic")?;

    // "Expected version: any" appends at the next version (planted bug only).
    let mut any = AppendBatch::new(vec![new_event(ids + 8, &a, 1, deposited(1), None)], None);
    any.check_versions = false;
    store.append(any).await.map_err(e("append any"))?;
    let versions: Vec<u64> = store.load_stream(&a, 0).await.map_err(e("load"))?.iter().map(|e| e.version).collect();
    check(versions == vec![1, 2, 3], "an unchecked append takes the next version")?;

    // The outbox: one row per event unless asked otherwise; marking is idempotent.
    let mut silent = AppendBatch::new(vec![new_event(ids + 9, &b, 2, deposited(1), None)], None);
    silent.write_outbox = false;
    store.append(silent).await.map_err(e("append without outbox"))?;
    let backlog = store.backlog().await.map_err(e("backlog"))?;
    check(backlog == backlog_before + 4, "every event but the silent one has an outbox row")?;
    let unsent: Vec<RecordedEvent> = store.unsent(10_000).await.map_err(e("unsent"))?;
    let mine: Vec<Uuid> = unsent.iter().filter(|e| e.stream_id.starts_with(prefix)).map(|e| e.event_id).collect();
    check(mine.len() == 4, "unsent lists the outbox rows")?;
    check(!mine.contains(&Uuid::from_u128(ids + 9)), "a silent append has no outbox row")?;
    store.mark_sent(&mine).await.map_err(e("mark sent"))?;
    store.mark_sent(&mine).await.map_err(e("mark sent twice"))?;
    check(store.backlog().await.map_err(e("backlog"))? == backlog_before, "marked rows leave the outbox")?;

    // A full scan in (stream, version) order, resumable after any key.
    let mut after = Some((prefix.to_string(), 0));
    let mut seen = Vec::new();
    loop {
        let page = store.read_all(after.clone(), 2).await.map_err(e("read all"))?;
        let Some(last) = page.last() else { break };
        after = Some((last.stream_id.clone(), last.version));
        seen.extend(page.into_iter().filter(|e| e.stream_id.starts_with(prefix)).map(|e| (e.stream_id, e.version)));
    }
    let expected = vec![(a.clone(), 1), (a.clone(), 2), (a, 3), (b.clone(), 1), (b, 2)];
    check(seen == expected, "read_all pages in (stream, version) order")?;
    Ok(())
}

/// The read model's contract, fed with events of a stream named `{prefix}-r`.
///
/// # Errors
/// The first clause the read model breaks.
pub async fn read_model<R: ReadModel, S: EventStore>(
    read: &R,
    source: &S,
    prefix: &str,
    ids: u128,
) -> Result<(), String> {
    let stream = format!("{prefix}-r");
    fn e(msg: &'static str) -> impl Fn(crate::ports::ledger::ReadError) -> String {
        move |err| format!("{msg}: {err}")
    }
    let recorded = |version: u64, encoded: EncodedEvent| RecordedEvent {
        event_id: Uuid::from_u128(ids + u128::from(version)),
        stream_id: stream.clone(),
        version,
        global_position: ids as i64 % 1_000_000 + version as i64,
        encoded,
        command_key: None,
    };
    check(read.balance(&stream).await.map_err(e("balance"))?.is_none(), "an unknown account has no view")?;
    check(
        read.apply(&recorded(2, deposited(1))).await.map_err(e("gap"))? == Applied::Gap { have: 0 },
        "a gap is reported",
    )?;
    check(read.apply(&recorded(1, created(1000))).await.map_err(e("apply"))? == Applied::Applied, "v1 applies")?;
    check(read.apply(&recorded(2, deposited(250))).await.map_err(e("apply"))? == Applied::Applied, "v2 applies")?;
    check(
        read.apply(&recorded(1, created(1000))).await.map_err(e("dup"))? == Applied::Duplicate,
        "a redelivery is a duplicate",
    )?;
    check(
        read.apply(&recorded(2, deposited(250))).await.map_err(e("dup"))? == Applied::Duplicate,
        "idempotent by version",
    )?;
    let view = read.balance(&stream).await.map_err(e("balance"))?.ok_or("the account has a view")?;
    check(view.balance == Decimal::new(1250, 2) && view.version == 2, "the view is the fold of the events")?;
    check(
        read.all_balances().await.map_err(e("all"))?.iter().any(|v| v.account_id == stream),
        "all_balances lists the account",
    )?;
    // Rebuild from a store: the model then equals the store's fold, whatever it held before.
    let replayed = read.rebuild(source).await.map_err(e("rebuild"))?;
    let store_events = source.read_all(None, usize::MAX / 2).await.map_err(|err| format!("read all: {err}"))?;
    check(replayed == store_events.len() as u64, "rebuild replays every event")?;
    check(read.balance(&stream).await.map_err(e("balance"))?.is_none(), "rebuild drops what the store does not hold")?;
    Ok(())
}
