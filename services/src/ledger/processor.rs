//! The read processor: a durable consumer applying events to the read model.
//!
//! Each event is applied with its checkpoint in one read-model transaction, then acked: a crash
//! before the ack redelivers it, and the projection's idempotency (by stream and version) makes
//! the redelivery harmless. An event that arrives before its predecessor is nak'ed and comes
//! back later.

use std::time::Duration;

use crate::ports::ledger::{Applied, Delivery, EventConsumer, ReadError, ReadModel};

/// Deliveries fetched per round.
pub const PROCESSOR_BATCH_MAX: usize = 256;
/// Longest wait for the first delivery of a round.
pub const PROCESSOR_FETCH_WAIT: Duration = Duration::from_millis(500);
/// Redelivery delay of an event whose predecessor has not been applied yet.
pub const GAP_REDELIVERY_DELAY: Duration = Duration::from_millis(50);
/// Redelivery delay after the read model failed.
pub const FAILURE_REDELIVERY_DELAY: Duration = Duration::from_millis(500);
/// Longest wait between rounds while the bus or the read model fails.
pub const PROCESSOR_BACKOFF_MAX: Duration = Duration::from_secs(1);

/// What one round did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RoundStats {
    pub applied: u64,
    pub duplicates: u64,
    pub gaps: u64,
    /// Deliveries seen for the second time or more.
    pub redelivered: u64,
}

/// Why a round stopped early.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProcessError {
    #[error(transparent)]
    Bus(#[from] crate::ports::ledger::BusError),
    #[error(transparent)]
    Read(#[from] ReadError),
}

/// One round: fetches up to [`PROCESSOR_BATCH_MAX`] deliveries and applies them in order.
///
/// # Errors
/// [`ProcessError`] when the bus or the read model failed; unapplied deliveries are nak'ed.
pub async fn process_once<C: EventConsumer, R: ReadModel>(consumer: &C, read: &R) -> Result<RoundStats, ProcessError> {
    let deliveries = consumer.fetch(PROCESSOR_BATCH_MAX, PROCESSOR_FETCH_WAIT).await?;
    let mut stats = RoundStats::default();
    let mut failure = None;
    for delivery in deliveries {
        if delivery.delivered() > 1 {
            crate::bugs::coverage::mark("redelivery");
            stats.redelivered += 1;
        }
        if failure.is_some() {
            // Acks and naks are best effort: an unacked delivery comes back after ack wait.
            let _ = delivery.nak(FAILURE_REDELIVERY_DELAY).await;
            continue;
        }
        #[cfg(madsim)]
        if crate::bugs::active(crate::bugs::Bug::AckBeforeApply) {
            // Planted bug: "ack first so the broker does not redeliver while we work".
            let event = delivery.event().clone();
            let _ = delivery.ack().await;
            match read.apply(&event).await {
                Ok(Applied::Applied) => stats.applied += 1,
                Ok(Applied::Duplicate) => stats.duplicates += 1,
                Ok(Applied::Gap { .. }) => stats.gaps += 1,
                Err(e) => failure = Some(e),
            }
            continue;
        }
        match read.apply(delivery.event()).await {
            Ok(Applied::Applied) => {
                stats.applied += 1;
                if crate::bugs::buggify(0.02) {
                    // A slow ack: a crash here must only cause a redelivery.
                    madsim::time::sleep(Duration::from_millis(200)).await;
                }
                let _ = delivery.ack().await;
            }
            Ok(Applied::Duplicate) => {
                crate::bugs::coverage::mark("duplicate-delivery-deduped");
                stats.duplicates += 1;
                let _ = delivery.ack().await;
            }
            Ok(Applied::Gap { have }) => {
                crate::bugs::coverage::mark("gap-redelivered");
                stats.gaps += 1;
                tracing::debug!(stream = %delivery.event().stream_id, have, got = delivery.event().version, "gap: redeliver later");
                let _ = delivery.nak(GAP_REDELIVERY_DELAY).await;
            }
            Err(e) => {
                if let ReadError::Corrupt(reason) = &e {
                    tracing::error!(event_id = %delivery.event().event_id, %reason, "event cannot be projected");
                } else {
                    tracing::warn!(event_id = %delivery.event().event_id, error = %e, "read model failed: redelivery later");
                }
                let _ = delivery.nak(FAILURE_REDELIVERY_DELAY).await;
                failure = Some(e);
            }
        }
    }
    match failure {
        Some(e) => Err(e.into()),
        None => Ok(stats),
    }
}

/// Runs rounds forever, backing off while the bus or the read model fails. Redeliveries of the
/// rounds that completed are counted in `metrics` (`ledger_jetstream_redeliveries_total`).
pub async fn run_processor<C: EventConsumer, R: ReadModel>(consumer: &C, read: &R, metrics: &crate::metrics::Metrics) {
    let mut wait = Duration::from_millis(10);
    loop {
        match process_once(consumer, read).await {
            Ok(stats) => {
                metrics.jetstream_redeliveries.inc_by(stats.redelivered);
                wait = Duration::from_millis(10);
            }
            Err(e) => {
                tracing::warn!(error = %e, retry_in_ms = wait.as_millis() as u64, "processor round failed");
                madsim::time::sleep(wait).await;
                wait = (wait * 2).min(PROCESSOR_BACKOFF_MAX);
            }
        }
    }
}
