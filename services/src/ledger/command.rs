//! The command side: load the streams, decide (in `models`), append with the expected
//! versions, retry a bounded number of times on a conflict or a serialization failure.
//!
//! Idempotency: with a key, the first outcome is stored in the same transaction as the events,
//! and a retry answers with it instead of applying again. That is also how an ambiguous commit
//! is resolved: the retry finds the outcome if the commit happened. Rejections (insufficient
//! funds, ...) write nothing and are not stored: a retry after one is decided afresh, which is
//! safe because the rejection had no effect. This module does no HTTP and no SQL.

use std::time::Duration;

use madsim::rand::Rng;
use models::ledger::{Account, LedgerCommand, LedgerError, LedgerEvent, decide};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::ports::ledger::{AppendBatch, EventStore, NewEvent, RecordedEvent, StoreError, StoredOutcome};

/// Attempts of one command before answering `conflict`: enough for 100 clients contending on
/// one account (each failed attempt means another command committed).
pub const COMMAND_ATTEMPTS_MAX: u32 = 64;
/// Folded accounts a command handler keeps; past it, the first by id is dropped.
pub const SNAPSHOTS_MAX: usize = 100_000;
/// First retry delay; doubles per attempt up to [`COMMAND_BACKOFF_MAX`], with full jitter.
pub const COMMAND_BACKOFF_MIN: Duration = Duration::from_millis(1);
pub const COMMAND_BACKOFF_MAX: Duration = Duration::from_millis(64);
const _: () = assert!(COMMAND_BACKOFF_MIN.as_micros() < COMMAND_BACKOFF_MAX.as_micros());

/// What a successful command answers (HTTP 201), and what a retry with its key answers again.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Receipt {
    /// The first event the command appended (the debit, for a transfer).
    pub event_id: Uuid,
    /// The account's version after the command: wait for it with `?min_position=`.
    pub position: u64,
    /// The account's balance after the command, in its currency's minor units.
    pub balance: String,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub to_position: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub to_balance: Option<String>,
}

/// A command's answer: the receipt, and whether it is the replay of an earlier outcome.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Executed {
    pub receipt: Receipt,
    pub replayed: bool,
}

/// Why a command was not applied, or may not have been.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CommandError {
    /// A rule of the domain: nothing applied (404, 409 or 422).
    #[error(transparent)]
    Rejected(LedgerError),
    /// The idempotency key was first used with a different command (422). Nothing applied.
    #[error("idempotency key reused with a different request")]
    KeyReused,
    /// Contention outlasted [`COMMAND_ATTEMPTS_MAX`] attempts (409). Nothing applied.
    #[error("conflict: gave up after {0} attempts")]
    Conflict(u32),
    /// The store is down: nothing applied (503).
    #[error("unavailable: {0}")]
    Unavailable(String),
    /// The command may have been applied (503): retry with the same idempotency key.
    #[error("ambiguous: {0}")]
    Ambiguous(String),
    /// Stored data is unreadable (500): a bug, not the client's problem.
    #[error("corrupt: {0}")]
    Corrupt(String),
}

/// Counts of the rare paths a command took, for coverage marks and metrics.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CommandStats {
    pub attempts: u32,
    pub conflicts: u32,
    pub retryable: u32,
    pub ambiguous: u32,
}

/// Executes ledger commands against an event store.
pub struct CommandHandler<S> {
    store: S,
    attempts_max: u32,
    /// Folded accounts as last read from the store, by stream: a command or a strong read loads
    /// only the events after the cached version. Events are immutable and versions gap-free,
    /// so the cache can be behind the store but never wrong; it holds only what was read back
    /// from the store, never what a command decided.
    snapshots: std::sync::Mutex<std::collections::BTreeMap<String, Account>>,
    /// Where retries are counted (`ledger_command_retries_total`), when set.
    metrics: Option<std::sync::Arc<crate::metrics::Metrics>>,
    #[cfg(madsim)]
    hooks: BugHooks,
}

/// A balance lookup in the read model, for the planted bug `withdraw-from-read-model`.
#[cfg(madsim)]
pub type BalanceLookup =
    std::sync::Arc<dyn Fn(String) -> futures::future::BoxFuture<'static, Option<rust_decimal::Decimal>> + Send + Sync>;
/// A direct publish to the bus, for the planted bug `publish-without-outbox`.
#[cfg(madsim)]
pub type DirectPublish =
    std::sync::Arc<dyn Fn(Vec<RecordedEvent>) -> futures::future::BoxFuture<'static, ()> + Send + Sync>;

/// What the planted bugs of the command side need from outside it (simulation build only).
#[cfg(madsim)]
#[derive(Clone, Default)]
pub struct BugHooks {
    pub read_model_balance: Option<BalanceLookup>,
    pub publish: Option<DirectPublish>,
}

impl<S: EventStore> CommandHandler<S> {
    pub fn new(store: S) -> Self {
        CommandHandler {
            store,
            attempts_max: COMMAND_ATTEMPTS_MAX,
            snapshots: std::sync::Mutex::default(),
            metrics: None,
            #[cfg(madsim)]
            hooks: BugHooks::default(),
        }
    }

    /// Counts retries in these metrics.
    pub fn with_metrics(mut self, metrics: std::sync::Arc<crate::metrics::Metrics>) -> Self {
        self.metrics = Some(metrics);
        self
    }

    fn retried(&self, reason: &str) {
        if let Some(metrics) = &self.metrics {
            metrics.retried(reason);
        }
    }

    /// Gives the planted bugs what they need (simulation build only).
    #[cfg(madsim)]
    pub fn with_bug_hooks(mut self, hooks: BugHooks) -> Self {
        self.hooks = hooks;
        self
    }

    /// Lowers the attempt bound (tests and simulations of contention).
    pub fn with_attempts_max(mut self, attempts_max: u32) -> Self {
        assert!((1..=COMMAND_ATTEMPTS_MAX).contains(&attempts_max));
        self.attempts_max = attempts_max;
        self
    }

    pub fn store(&self) -> &S {
        &self.store
    }

    /// Executes one command, at most once per idempotency key.
    ///
    /// # Errors
    /// [`CommandError`]; only `Ambiguous` leaves the outcome open.
    pub async fn execute(&self, command: &LedgerCommand, key: Option<&str>) -> Result<Executed, CommandError> {
        self.execute_with_stats(command, key).await.0
    }

    /// As [`CommandHandler::execute`], with the rare paths it took.
    pub async fn execute_with_stats(
        &self,
        command: &LedgerCommand,
        key: Option<&str>,
    ) -> (Result<Executed, CommandError>, CommandStats) {
        let mut stats = CommandStats::default();
        let result = self.run(command, key, &mut stats).await;
        debug_assert!(stats.attempts >= 1 || result.is_err());
        (result, stats)
    }

    async fn run(
        &self,
        command: &LedgerCommand,
        key: Option<&str>,
        stats: &mut CommandStats,
    ) -> Result<Executed, CommandError> {
        command.validate().map_err(CommandError::Rejected)?;
        let canonical = command.canonical();
        // Once a commit may have happened, "unavailable" is no longer a definite answer.
        let down = |stats: &CommandStats, reason: String| {
            if stats.ambiguous > 0 { CommandError::Ambiguous(reason) } else { CommandError::Unavailable(reason) }
        };
        #[allow(unused_mut)]
        let mut key = key;
        for attempt in 1..=self.attempts_max {
            stats.attempts = attempt;
            if attempt > 1 {
                madsim::time::sleep(backoff(attempt)).await;
            }
            #[cfg(madsim)]
            if stats.ambiguous > 0 && crate::bugs::active(crate::bugs::Bug::RetryWithoutKey) {
                // Planted bug: "the first attempt failed, so send it again as a new command".
                key = None;
            }
            if let Some(key) = key {
                match self.store.outcome(key).await {
                    Ok(Some(outcome)) => {
                        crate::bugs::coverage::mark(if stats.ambiguous > 0 {
                            "ambiguous-commit-resolved"
                        } else {
                            "idempotent-replay"
                        });
                        return replay(outcome, &canonical);
                    }
                    Ok(None) => {}
                    Err(StoreError::Retryable(_) | StoreError::Conflict { .. } | StoreError::Duplicate) => {
                        stats.retryable += 1;
                        self.retried("serialization_failure");
                        continue;
                    }
                    Err(StoreError::Corrupt(e)) => return Err(CommandError::Corrupt(e)),
                    Err(StoreError::Unavailable(e) | StoreError::Ambiguous(e)) => {
                        return Err(down(stats, e));
                    }
                }
            }
            #[allow(unused_mut)]
            let mut accounts = match self.load(command).await {
                Ok(accounts) => accounts,
                Err(StoreError::Retryable(_)) => {
                    stats.retryable += 1;
                    self.retried("serialization_failure");
                    continue;
                }
                Err(StoreError::Corrupt(e)) => return Err(CommandError::Corrupt(e)),
                Err(e) => return Err(down(stats, e.to_string())),
            };
            #[cfg(madsim)]
            self.buggy_balance(command, &mut accounts).await;
            let refs: Vec<&Account> = accounts.iter().collect();
            let decision = decide(command, &refs).map_err(CommandError::Rejected)?;
            let (events, receipt) = plan(&accounts, decision, key);
            let idempotency = key.map(|key| {
                let response = serde_json::to_value(&receipt).expect("receipts serialize");
                (key.to_string(), StoredOutcome { request: canonical.clone(), response })
            });
            #[allow(unused_mut)]
            let mut batch = AppendBatch::new(events, idempotency);
            #[cfg(madsim)]
            {
                use crate::bugs::{Bug, active};
                batch.check_versions = !active(Bug::NoOptimisticLock);
                batch.write_outbox = !active(Bug::PublishWithoutOutbox);
            }
            #[cfg(madsim)]
            let appended = batch.events.clone();
            if crate::bugs::buggify(0.05) {
                // A slow path between decide and append widens the race window.
                madsim::time::sleep(Duration::from_millis(20)).await;
            }
            match self.store.append(batch).await {
                Ok(positions) => {
                    assert_eq!(positions.len(), accounts.len());
                    #[cfg(madsim)]
                    self.buggy_publish(appended, &positions).await;
                    return Ok(Executed { receipt, replayed: false });
                }
                Err(StoreError::Conflict { .. }) => {
                    crate::bugs::coverage::mark("conflict-retried");
                    stats.conflicts += 1;
                    self.retried("version_conflict");
                }
                Err(StoreError::Retryable(_) | StoreError::Duplicate) => {
                    crate::bugs::coverage::mark("serialization-retried");
                    stats.retryable += 1;
                    self.retried("serialization_failure");
                }
                Err(StoreError::Ambiguous(e)) => {
                    stats.ambiguous += 1;
                    self.retried("ambiguous_commit");
                    if key.is_none() {
                        return Err(CommandError::Ambiguous(e));
                    }
                    tracing::info!(key, error = %e, "commit outcome unknown: resolving by idempotency key");
                }
                Err(StoreError::Unavailable(e)) => return Err(down(stats, e)),
                Err(StoreError::Corrupt(e)) => return Err(CommandError::Corrupt(e)),
            }
        }
        if stats.ambiguous > 0 {
            return Err(CommandError::Ambiguous(format!("unresolved after {} attempts", self.attempts_max)));
        }
        tracing::warn!(
            command = command.name(),
            key = key.unwrap_or("-"),
            attempts = self.attempts_max,
            "gave up on contention"
        );
        Err(CommandError::Conflict(self.attempts_max))
    }

    /// `withdraw-from-read-model`: the balance comes from the read model, the version from
    /// the stream, so the append still passes the optimistic lock.
    #[cfg(madsim)]
    async fn buggy_balance(&self, command: &LedgerCommand, accounts: &mut [Account]) {
        if !crate::bugs::active(crate::bugs::Bug::WithdrawFromReadModel) {
            return;
        }
        let (LedgerCommand::Withdraw { account_id, .. }, Some(balance_of)) = (command, &self.hooks.read_model_balance)
        else {
            return;
        };
        if let (Some(stale), Some(state)) = (balance_of(account_id.clone()).await, accounts[0].state.as_mut()) {
            state.balance = stale;
        }
    }

    /// `publish-without-outbox`: the spec's "publish after commit, log on failure".
    #[cfg(madsim)]
    async fn buggy_publish(&self, appended: Vec<NewEvent>, positions: &[i64]) {
        if !crate::bugs::active(crate::bugs::Bug::PublishWithoutOutbox) {
            return;
        }
        if let Some(publish) = &self.hooks.publish {
            let recorded = appended
                .into_iter()
                .zip(positions)
                .map(|(e, p)| RecordedEvent {
                    event_id: e.event_id,
                    stream_id: e.stream_id,
                    version: e.version,
                    global_position: *p,
                    encoded: e.encoded,
                    command_key: e.command_key,
                })
                .collect();
            publish(recorded).await;
        }
    }

    async fn load(&self, command: &LedgerCommand) -> Result<Vec<Account>, StoreError> {
        let mut accounts = Vec::with_capacity(2);
        for stream in command.streams() {
            accounts.push(self.account(stream).await?);
        }
        Ok(accounts)
    }

    /// An account folded from the store: the cached fold, brought up to date with the events
    /// after its version.
    ///
    /// # Errors
    /// [`StoreError`] from the store, or [`StoreError::Corrupt`] when the stream has a gap.
    pub async fn account(&self, stream: &str) -> Result<Account, StoreError> {
        let cached = self.snapshots.lock().expect("not poisoned").get(stream).cloned();
        let account = cached.unwrap_or_else(|| Account::new(stream));
        let newer = self.store.load_stream(stream, account.version).await?;
        if newer.is_empty() {
            return Ok(account);
        }
        let account = fold_from(account, &newer)?;
        let mut snapshots = self.snapshots.lock().expect("not poisoned");
        if snapshots.len() >= SNAPSHOTS_MAX && !snapshots.contains_key(stream) {
            snapshots.pop_first();
        }
        // A concurrent reader may have cached a later version already: keep the later one.
        if snapshots.get(stream).is_none_or(|s| s.version < account.version) {
            snapshots.insert(stream.to_string(), account.clone());
        }
        Ok(account)
    }
}

/// Folds recorded events into an account, checking the stream has no gaps.
///
/// # Errors
/// [`StoreError::Corrupt`] when an event cannot be decoded or versions are not 1, 2, 3, ...
pub fn fold(stream: &str, recorded: &[RecordedEvent]) -> Result<Account, StoreError> {
    fold_from(Account::new(stream), recorded)
}

/// Applies the events that follow `account`'s version, checking they continue it without a gap.
///
/// # Errors
/// [`StoreError::Corrupt`] when an event cannot be decoded or versions do not follow on.
pub fn fold_from(mut account: Account, recorded: &[RecordedEvent]) -> Result<Account, StoreError> {
    for event in recorded {
        if event.version != account.version + 1 || event.stream_id != account.id {
            return Err(StoreError::Corrupt(format!(
                "stream {} out of order at version {} (expected {})",
                account.id,
                event.version,
                account.version + 1
            )));
        }
        let decoded = LedgerEvent::decode(&event.encoded).map_err(|e| StoreError::Corrupt(e.to_string()))?;
        account.apply(&decoded);
    }
    Ok(account)
}

/// Turns a decision into events at the next versions of their streams, and the receipt.
fn plan(accounts: &[Account], decision: Vec<(String, LedgerEvent)>, key: Option<&str>) -> (Vec<NewEvent>, Receipt) {
    assert_eq!(accounts.len(), decision.len(), "one event per stream touched");
    let mut rng = madsim::rand::thread_rng();
    let mut events = Vec::with_capacity(decision.len());
    let mut after = Vec::with_capacity(decision.len());
    for (account, (stream, event)) in accounts.iter().zip(decision) {
        assert_eq!(account.id, stream);
        let mut next = account.clone();
        next.apply(&event);
        let state = next.state.as_ref().expect("an account exists after its event");
        after.push((next.version, state.currency.display(state.balance)));
        events.push(NewEvent {
            event_id: uuid::Builder::from_random_bytes(rng.r#gen()).into_uuid(),
            stream_id: stream,
            version: next.version,
            encoded: event.encode(),
            command_key: key.map(str::to_string),
        });
    }
    #[cfg(madsim)]
    if crate::bugs::active(crate::bugs::Bug::ConflictStorm) && events.len() == 2 {
        // Planted bug: both streams of a transfer appended at the first one's next version.
        events[1].version = events[0].version;
    }
    let receipt = Receipt {
        event_id: events[0].event_id,
        position: after[0].0,
        balance: after[0].1.clone(),
        to_position: after.get(1).map(|a| a.0),
        to_balance: after.get(1).map(|a| a.1.clone()),
    };
    (events, receipt)
}

fn replay(outcome: StoredOutcome, canonical: &str) -> Result<Executed, CommandError> {
    if outcome.request != canonical {
        return Err(CommandError::KeyReused);
    }
    let receipt = serde_json::from_value(outcome.response).map_err(|e| CommandError::Corrupt(e.to_string()))?;
    Ok(Executed { receipt, replayed: true })
}

/// Full-jitter exponential backoff for attempt `attempt` (2 and up).
fn backoff(attempt: u32) -> Duration {
    let exp = COMMAND_BACKOFF_MIN.as_micros() as u64 * (1u64 << attempt.min(16));
    let cap = exp.min(COMMAND_BACKOFF_MAX.as_micros() as u64);
    Duration::from_micros(madsim::rand::thread_rng().gen_range(0..=cap))
}
