//! The ledger's ports: event store (with its outbox), message bus and read model.

use std::future::Future;
use std::time::Duration;

use models::Currency;
use models::ledger::EncodedEvent;
use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

/// An event as the store holds it: where it sits in its stream and in the global order.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RecordedEvent {
    pub event_id: Uuid,
    pub stream_id: String,
    /// 1 for the first event of a stream; versions are gap-free within a stream.
    pub version: u64,
    /// Unique, but neither gap-free nor in commit order across transactions (DESIGN 3).
    pub global_position: i64,
    #[serde(flatten)]
    pub encoded: EncodedEvent,
    /// The idempotency key of the command that appended it, if it had one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub command_key: Option<String>,
}

/// An event to append at exactly `version` of its stream (optimistic concurrency: the append
/// fails with [`StoreError::Conflict`] if that version is taken).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NewEvent {
    pub event_id: Uuid,
    pub stream_id: String,
    pub version: u64,
    pub encoded: EncodedEvent,
    pub command_key: Option<String>,
}

/// The first outcome of a command under an idempotency key, stored with its events.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StoredOutcome {
    /// The canonical form of the command the key was first used with.
    pub request: String,
    /// The JSON body that was answered.
    pub response: serde_json::Value,
}

/// One atomic append: every event, its outbox row and the idempotency outcome commit
/// together or not at all.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AppendBatch {
    pub events: Vec<NewEvent>,
    pub idempotency: Option<(String, StoredOutcome)>,
    /// Write one outbox row per event. Always true in correct code; the planted bug
    /// `publish-without-outbox` turns it off.
    pub write_outbox: bool,
    /// Append at exactly each event's `version` (optimistic concurrency). When false the store
    /// appends at the stream's next version whatever it is ("expected version: any"); only the
    /// planted bug `no-optimistic-lock` does that.
    pub check_versions: bool,
}

impl AppendBatch {
    /// A correct append: versions checked, outbox rows written.
    pub fn new(events: Vec<NewEvent>, idempotency: Option<(String, StoredOutcome)>) -> Self {
        AppendBatch { events, idempotency, write_outbox: true, check_versions: true }
    }
}

/// Event store errors.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error, Serialize, Deserialize)]
pub enum StoreError {
    /// A version of a stream was taken by another writer: reload, decide again, retry.
    #[error("version conflict on stream {stream_id}")]
    Conflict { stream_id: String },
    /// The idempotency key already has an outcome: read it and answer with it.
    #[error("idempotency key already recorded")]
    Duplicate,
    /// Serialization failure (SQLSTATE 40001): nothing applied, retry the whole command.
    #[error("retryable: {0}")]
    Retryable(String),
    /// Definitely not applied: no connection, no quorum. Answer 503.
    #[error("unavailable: {0}")]
    Unavailable(String),
    /// May have been applied (lost COMMIT, SQLSTATE 40003). Only the idempotency key can
    /// tell; without one, answer 503 and let the client decide.
    #[error("ambiguous: {0}")]
    Ambiguous(String),
    /// Stored data this code cannot read. A bug or a foreign writer: stop and report.
    #[error("corrupt: {0}")]
    Corrupt(String),
}

/// The event store of the write side, with its transactional outbox.
pub trait EventStore: Send + Sync + 'static {
    /// The events of a stream after `after_version`, in version order (0: the whole stream;
    /// empty when the stream does not exist or has nothing newer). Callers that keep a folded
    /// state read only what is new.
    fn load_stream(
        &self,
        stream_id: &str,
        after_version: u64,
    ) -> impl Future<Output = Result<Vec<RecordedEvent>, StoreError>> + Send;

    /// The outcome recorded under an idempotency key, if any.
    fn outcome(&self, key: &str) -> impl Future<Output = Result<Option<StoredOutcome>, StoreError>> + Send;

    /// Appends atomically, with one outbox row per event. Returns the global positions.
    fn append(&self, batch: AppendBatch) -> impl Future<Output = Result<Vec<i64>, StoreError>> + Send;

    /// Events in (stream, version) order after the given key, at most `limit`: a full scan
    /// for `rebuild` and for checkers, stable under concurrent appends.
    fn read_all(
        &self,
        after: Option<(String, u64)>,
        limit: usize,
    ) -> impl Future<Output = Result<Vec<RecordedEvent>, StoreError>> + Send;

    /// Events whose outbox row is not yet marked sent, oldest first, at most `limit`.
    fn unsent(&self, limit: usize) -> impl Future<Output = Result<Vec<RecordedEvent>, StoreError>> + Send;

    /// Marks outbox rows sent (deletes them). Idempotent.
    fn mark_sent(&self, event_ids: &[Uuid]) -> impl Future<Output = Result<(), StoreError>> + Send;

    /// Number of outbox rows not yet sent.
    fn backlog(&self) -> impl Future<Output = Result<u64, StoreError>> + Send;
}

/// Message bus errors.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error, Serialize, Deserialize)]
pub enum BusError {
    /// Not connected or no answer: retry later. A publish may or may not have been stored;
    /// the Msg-Id dedup makes a retry harmless.
    #[error("bus unavailable: {0}")]
    Unavailable(String),
    /// A message on the bus that is not a recorded event: a bug or a foreign publisher.
    #[error("malformed message: {0}")]
    Malformed(String),
}

/// Publishes recorded events, deduplicated by event id (JetStream `Nats-Msg-Id`).
pub trait EventPublisher: Send + Sync + 'static {
    /// Returns once the bus has stored the event (publish ack).
    fn publish(&self, event: &RecordedEvent) -> impl Future<Output = Result<(), BusError>> + Send;
}

/// One delivered message of a durable consumer; it is redelivered unless acked in time.
pub trait Delivery: Send {
    fn event(&self) -> &RecordedEvent;
    /// How many times this message has been delivered, this time included.
    fn delivered(&self) -> u64;
    fn ack(self) -> impl Future<Output = Result<(), BusError>> + Send;
    /// Asks for redelivery after `delay`.
    fn nak(self, delay: Duration) -> impl Future<Output = Result<(), BusError>> + Send;
}

/// A durable consumer of recorded events.
pub trait EventConsumer: Send + Sync + 'static {
    type Delivery: Delivery;
    /// Up to `max` deliveries, waiting at most `wait` for the first.
    fn fetch(&self, max: usize, wait: Duration) -> impl Future<Output = Result<Vec<Self::Delivery>, BusError>> + Send;
}

/// What applying one event to the read model did.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Applied {
    /// Applied, checkpoint advanced.
    Applied,
    /// Already applied (same stream and version): ack it.
    Duplicate,
    /// An earlier version of the stream is missing: redeliver later.
    Gap { have: u64 },
}

/// An account's balance as the read model has it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BalanceView {
    pub account_id: String,
    pub owner_name: String,
    pub currency: Currency,
    pub balance: Decimal,
    /// The account's stream version reflected: the unit of read-your-writes.
    pub version: u64,
    /// Global position of the last event applied to this account.
    pub global_position: i64,
}

/// Read-model errors.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error, Serialize, Deserialize)]
pub enum ReadError {
    /// Not reachable: answer 503 (query) or retry later (processor).
    #[error("read model unavailable: {0}")]
    Unavailable(String),
    /// An event that cannot be decoded: a bug or a foreign writer.
    #[error("corrupt: {0}")]
    Corrupt(String),
}

/// The query side's store: projection and checkpoint commit together.
pub trait ReadModel: Send + Sync + 'static {
    /// Applies one event idempotently, by (stream, version).
    fn apply(&self, event: &RecordedEvent) -> impl Future<Output = Result<Applied, ReadError>> + Send;

    fn balance(&self, account_id: &str) -> impl Future<Output = Result<Option<BalanceView>, ReadError>> + Send;

    /// Every account's view, by account id (for checkers and `rebuild` reports).
    fn all_balances(&self) -> impl Future<Output = Result<Vec<BalanceView>, ReadError>> + Send;

    /// Empties the read model and replays the whole event store, atomically: readers see the
    /// old state until the new one is complete. Returns the number of events replayed.
    fn rebuild<S: EventStore>(&self, source: &S) -> impl Future<Output = Result<u64, ReadError>> + Send;
}
