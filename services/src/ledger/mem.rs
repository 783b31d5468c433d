//! In-memory adapters of the ledger's ports: a plain state machine behind a mutex.
//!
//! `MemEventStore` has the contract of the real event store (atomic append with unique
//! (stream, version), unique idempotency key, an outbox) and never fails; `MemReadModel` has
//! the projection's contract. They serve unit tests and the simulator's building blocks; they
//! model no failures (the simulator wraps them for that). Iteration is over `BTreeMap`s only, so
//! everything they return is deterministic.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use models::ledger::LedgerEvent;
use uuid::Uuid;

use crate::ports::ledger::{
    AppendBatch, Applied, BalanceView, EventStore, ReadError, ReadModel, RecordedEvent, StoreError, StoredOutcome,
};

#[derive(Debug, Default)]
struct StoreState {
    /// (stream, version) -> event.
    events: BTreeMap<(String, u64), RecordedEvent>,
    outcomes: BTreeMap<String, StoredOutcome>,
    /// global position -> event id and the event's key, for rows not yet sent (the key spares
    /// `unsent` a search of every event on each relay round).
    outbox: BTreeMap<i64, (Uuid, (String, u64))>,
    next_position: i64,
}

/// An event store in memory. Clones share the same data.
#[derive(Debug, Clone, Default)]
pub struct MemEventStore {
    state: Arc<Mutex<StoreState>>,
}

impl MemEventStore {
    pub fn new() -> Self {
        Self::default()
    }

    /// How many events the store holds.
    pub fn event_count(&self) -> usize {
        self.state.lock().expect("not poisoned").events.len()
    }

    /// Every event in (stream, version) order.
    pub fn all_events(&self) -> Vec<RecordedEvent> {
        self.state.lock().expect("not poisoned").events.values().cloned().collect()
    }

    /// Appends an event in its stored form at the stream's next version, with its outbox row,
    /// as a legacy writer would have (schema-evolution scenarios). Returns the version.
    pub fn append_legacy(&self, stream_id: &str, encoded: models::ledger::EncodedEvent, event_id: Uuid) -> u64 {
        let mut state = self.state.lock().expect("not poisoned");
        let version = state
            .events
            .range((stream_id.to_string(), 0)..)
            .take_while(|((s, _), _)| s == stream_id)
            .last()
            .map_or(0, |((_, v), _)| *v)
            + 1;
        state.next_position += 1;
        let position = state.next_position;
        state.outbox.insert(position, (event_id, (stream_id.to_string(), version)));
        let event = RecordedEvent {
            event_id,
            stream_id: stream_id.to_string(),
            version,
            global_position: position,
            encoded,
            command_key: None,
        };
        state.events.insert((stream_id.to_string(), version), event);
        version
    }
}

impl EventStore for MemEventStore {
    async fn load_stream(&self, stream_id: &str, after_version: u64) -> Result<Vec<RecordedEvent>, StoreError> {
        let state = self.state.lock().expect("not poisoned");
        let start = (stream_id.to_string(), after_version + 1);
        Ok(state.events.range(start..).take_while(|((s, _), _)| s == stream_id).map(|(_, e)| e.clone()).collect())
    }

    async fn outcome(&self, key: &str) -> Result<Option<StoredOutcome>, StoreError> {
        Ok(self.state.lock().expect("not poisoned").outcomes.get(key).cloned())
    }

    async fn append(&self, mut batch: AppendBatch) -> Result<Vec<i64>, StoreError> {
        let mut state = self.state.lock().expect("not poisoned");
        if !batch.check_versions {
            // "Expected version: any": each event goes to its stream's next version.
            for event in &mut batch.events {
                let last = state
                    .events
                    .range((event.stream_id.clone(), 0)..)
                    .take_while(|((s, _), _)| *s == event.stream_id)
                    .last()
                    .map_or(0, |((_, v), _)| *v);
                event.version = last + 1;
            }
        }
        for event in &batch.events {
            let key = (event.stream_id.clone(), event.version);
            let previous_missing =
                event.version > 1 && !state.events.contains_key(&(event.stream_id.clone(), event.version - 1));
            if state.events.contains_key(&key) || previous_missing {
                return Err(StoreError::Conflict { stream_id: event.stream_id.clone() });
            }
        }
        if let Some((key, _)) = &batch.idempotency
            && state.outcomes.contains_key(key)
        {
            return Err(StoreError::Duplicate);
        }
        let mut positions = Vec::with_capacity(batch.events.len());
        for event in batch.events {
            state.next_position += 1;
            let position = state.next_position;
            positions.push(position);
            if batch.write_outbox {
                state.outbox.insert(position, (event.event_id, (event.stream_id.clone(), event.version)));
            }
            let recorded = RecordedEvent {
                event_id: event.event_id,
                stream_id: event.stream_id.clone(),
                version: event.version,
                global_position: position,
                encoded: event.encoded,
                command_key: event.command_key,
            };
            state.events.insert((event.stream_id, event.version), recorded);
        }
        if let Some((key, outcome)) = batch.idempotency {
            state.outcomes.insert(key, outcome);
        }
        Ok(positions)
    }

    async fn read_all(&self, after: Option<(String, u64)>, limit: usize) -> Result<Vec<RecordedEvent>, StoreError> {
        let state = self.state.lock().expect("not poisoned");
        let iter: Box<dyn Iterator<Item = &RecordedEvent>> = match after {
            Some(after) => Box::new(
                state.events.range((std::ops::Bound::Excluded(after), std::ops::Bound::Unbounded)).map(|(_, e)| e),
            ),
            None => Box::new(state.events.values()),
        };
        Ok(iter.take(limit).cloned().collect())
    }

    async fn unsent(&self, limit: usize) -> Result<Vec<RecordedEvent>, StoreError> {
        let state = self.state.lock().expect("not poisoned");
        Ok(state.outbox.values().take(limit).filter_map(|(_, key)| state.events.get(key).cloned()).collect())
    }

    async fn mark_sent(&self, event_ids: &[Uuid]) -> Result<(), StoreError> {
        let mut state = self.state.lock().expect("not poisoned");
        state.outbox.retain(|_, (id, _)| !event_ids.contains(id));
        Ok(())
    }

    async fn backlog(&self) -> Result<u64, StoreError> {
        Ok(self.state.lock().expect("not poisoned").outbox.len() as u64)
    }
}

/// A read model in memory. Clones share the same data.
#[derive(Debug, Clone, Default)]
pub struct MemReadModel {
    balances: Arc<Mutex<BTreeMap<String, BalanceView>>>,
}

impl MemReadModel {
    pub fn new() -> Self {
        Self::default()
    }

    /// Overwrites a balance by hand, as an operator's bad UPDATE would (spec 000, scenario 3).
    pub fn corrupt(&self, account_id: &str, balance: rust_decimal::Decimal) {
        if let Some(view) = self.balances.lock().expect("not poisoned").get_mut(account_id) {
            view.balance = balance;
        }
    }
}

/// Applies one event to a map of views: the projection both in-memory and SQL read models
/// follow, with idempotency by (stream, version).
///
/// # Errors
/// [`ReadError::Corrupt`] when the event cannot be decoded or does not fit the view.
pub fn project(views: &mut BTreeMap<String, BalanceView>, event: &RecordedEvent) -> Result<Applied, ReadError> {
    let have = views.get(&event.stream_id).map_or(0, |v| v.version);
    #[allow(unused_mut)]
    let mut check_version = true;
    #[cfg(madsim)]
    if crate::bugs::active(crate::bugs::Bug::NonIdempotentProjection) && have > 0 {
        // Planted bug: "events arrive in order, so just add the amount".
        check_version = false;
    }
    if check_version && event.version <= have {
        return Ok(Applied::Duplicate);
    }
    if check_version && event.version != have + 1 {
        return Ok(Applied::Gap { have });
    }
    let decoded = LedgerEvent::decode(&event.encoded).map_err(|e| ReadError::Corrupt(e.to_string()))?;
    match &decoded {
        LedgerEvent::AccountCreated(created) => {
            views.insert(
                event.stream_id.clone(),
                BalanceView {
                    account_id: event.stream_id.clone(),
                    owner_name: created.owner_name.clone(),
                    currency: created.currency,
                    balance: created.initial_balance,
                    version: event.version,
                    global_position: event.global_position,
                },
            );
        }
        other => {
            let view = views
                .get_mut(&event.stream_id)
                .ok_or_else(|| ReadError::Corrupt(format!("{} before AccountCreated", event.stream_id)))?;
            view.balance += other.balance_delta();
            view.version = view.version.max(event.version);
            view.global_position = event.global_position;
        }
    }
    Ok(Applied::Applied)
}

impl ReadModel for MemReadModel {
    async fn apply(&self, event: &RecordedEvent) -> Result<Applied, ReadError> {
        project(&mut self.balances.lock().expect("not poisoned"), event)
    }

    async fn balance(&self, account_id: &str) -> Result<Option<BalanceView>, ReadError> {
        Ok(self.balances.lock().expect("not poisoned").get(account_id).cloned())
    }

    async fn all_balances(&self) -> Result<Vec<BalanceView>, ReadError> {
        Ok(self.balances.lock().expect("not poisoned").values().cloned().collect())
    }

    async fn rebuild<S: EventStore>(&self, source: &S) -> Result<u64, ReadError> {
        let (fresh, count) = replay_views(source).await?;
        *self.balances.lock().expect("not poisoned") = fresh;
        Ok(count)
    }
}

/// Events read per page while rebuilding.
pub const REBUILD_PAGE_MAX: usize = 1000;

/// A cursor over every event of a store in (stream, version) order, a page at a time.
#[derive(Debug, Default)]
pub struct Replay {
    after: Option<(String, u64)>,
}

impl Replay {
    /// The next page, or `None` past the last event.
    ///
    /// # Errors
    /// [`ReadError::Unavailable`] when the store fails.
    pub async fn next_page<S: EventStore>(&mut self, source: &S) -> Result<Option<Vec<RecordedEvent>>, ReadError> {
        let page = source
            .read_all(self.after.clone(), REBUILD_PAGE_MAX)
            .await
            .map_err(|e| ReadError::Unavailable(e.to_string()))?;
        let Some(last) = page.last() else { return Ok(None) };
        self.after = Some((last.stream_id.clone(), last.version));
        Ok(Some(page))
    }
}

/// Folds every event of `source` into fresh views, with the number of events: the rebuild of
/// the in-memory and simulated read models.
///
/// # Errors
/// [`ReadError`] when the store fails or an event cannot be projected in order.
pub async fn replay_views<S: EventStore>(source: &S) -> Result<(BTreeMap<String, BalanceView>, u64), ReadError> {
    let mut fresh = BTreeMap::new();
    let mut replay = Replay::default();
    let mut count = 0u64;
    while let Some(page) = replay.next_page(source).await? {
        for event in &page {
            match project(&mut fresh, event)? {
                Applied::Applied => count += 1,
                other => {
                    return Err(ReadError::Corrupt(format!(
                        "replay of {} v{} gave {other:?}: the event store has a gap",
                        event.stream_id, event.version
                    )));
                }
            }
        }
    }
    Ok((fresh, count))
}

#[cfg(all(test, not(madsim)))]
mod tests {
    use super::*;
    use crate::ledger::contract;

    /// Goal: the in-memory adapters keep the ports' contracts (the same bodies run against the
    /// simulated and the real adapters elsewhere).
    #[tokio::test]
    async fn mem_adapters_keep_the_contracts() {
        let store = MemEventStore::new();
        contract::event_store(&store, "mem", 1 << 64).await.unwrap();
        let read = MemReadModel::new();
        contract::read_model(&read, &store, "mem", 2 << 64).await.unwrap();
    }
}
