//! The outbox relay: publishes unsent outbox rows to the bus, then marks them sent.
//!
//! A crash between publish and mark republishes the same event id, which the bus deduplicates
//! (JetStream `Nats-Msg-Id`) and the projection ignores (idempotent by stream and version), so
//! nothing is lost and nothing applies twice. The relay works from unsent rows, never from "the
//! last global position" (positions are not gap-free in commit order, DESIGN 3).

use std::time::Duration;

use crate::ports::ledger::{BusError, EventPublisher, EventStore, StoreError};

/// Events published per round.
pub const RELAY_BATCH_MAX: usize = 256;
/// Wait after a round that published less than a full batch, and the first wait once idle.
pub const RELAY_IDLE_WAIT: Duration = Duration::from_millis(20);
/// Longest wait between rounds after a failure (exponential from [`RELAY_IDLE_WAIT`]).
pub const RELAY_BACKOFF_MAX: Duration = Duration::from_secs(1);
const _: () = assert!(RELAY_IDLE_WAIT.as_millis() < RELAY_BACKOFF_MAX.as_millis());
/// Longest wait between two rounds that found nothing: the most an event committed into an
/// idle outbox waits before it is published.
pub const RELAY_IDLE_WAIT_MAX: Duration = Duration::from_millis(160);
const _: () = assert!(RELAY_IDLE_WAIT.as_millis() < RELAY_IDLE_WAIT_MAX.as_millis());

/// Why a relay round stopped early. Both are transient; the next round retries.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RelayError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Bus(#[from] BusError),
}

/// One round: publishes up to [`RELAY_BATCH_MAX`] unsent events in order, stopping at the first
/// failure, and marks the published ones sent. Returns how many were published.
///
/// # Errors
/// [`RelayError`] when the store or the bus failed; what was published before is still marked.
pub async fn relay_once<S: EventStore, P: EventPublisher>(store: &S, bus: &P) -> Result<usize, RelayError> {
    let unsent = store.unsent(RELAY_BATCH_MAX).await?;
    let mut sent = Vec::with_capacity(unsent.len());
    let mut failure = None;
    for event in &unsent {
        match bus.publish(event).await {
            Ok(()) => sent.push(event.event_id),
            Err(e) => {
                crate::bugs::coverage::mark("relay-publish-failed");
                tracing::warn!(
                    event_id = %event.event_id,
                    stream = %event.stream_id,
                    version = event.version,
                    error = %e,
                    "publish failed: the event stays in the outbox"
                );
                failure = Some(e);
                break;
            }
        }
    }
    if !sent.is_empty() {
        if crate::bugs::buggify(0.02) {
            // A slow mark: a crash here must only cause a republish, deduplicated downstream.
            madsim::time::sleep(Duration::from_millis(200)).await;
        }
        store.mark_sent(&sent).await?;
    }
    match failure {
        Some(e) => Err(e.into()),
        None => Ok(sent.len()),
    }
}

/// Runs rounds forever: immediately again after a full batch; after [`RELAY_IDLE_WAIT`] when a
/// round sent something but not a full batch; when a round found nothing, after a wait that
/// doubles up to [`RELAY_IDLE_WAIT_MAX`] (an idle outbox is polled a few times a second, not
/// fifty); with exponential backoff up to [`RELAY_BACKOFF_MAX`] while failing. Rounds that fail
/// to publish are counted in `metrics` (`ledger_relay_publish_failures_total`).
pub async fn run_relay<S: EventStore, P: EventPublisher>(store: &S, bus: &P, metrics: &crate::metrics::Metrics) {
    let mut wait = RELAY_IDLE_WAIT;
    let mut idle = RELAY_IDLE_WAIT;
    loop {
        match relay_once(store, bus).await {
            Ok(n) if n == RELAY_BATCH_MAX => continue,
            Ok(0) => {
                wait = idle;
                idle = (idle * 2).min(RELAY_IDLE_WAIT_MAX);
            }
            Ok(_) => {
                wait = RELAY_IDLE_WAIT;
                idle = RELAY_IDLE_WAIT;
            }
            Err(e) => {
                if matches!(e, RelayError::Bus(_)) {
                    metrics.relay_publish_failures.inc();
                }
                tracing::warn!(error = %e, retry_in_ms = wait.as_millis() as u64, "relay round failed");
                madsim::time::sleep(wait).await;
                wait = (wait * 2).min(RELAY_BACKOFF_MAX);
                idle = RELAY_IDLE_WAIT;
                continue;
            }
        }
        madsim::time::sleep(wait).await;
    }
}
