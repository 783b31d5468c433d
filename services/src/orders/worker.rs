//! The inventory worker: a consumer-group member that persists each order (insert idempotent
//! on the order id, stock decremented where stock > 0, in one transaction) and commits the
//! offset only after that transaction. A crash at any point loses nothing (uncommitted messages
//! come back) and duplicates nothing (the insert is idempotent).

use std::time::Duration;

use models::orders::Order;

use crate::ports::orders::{OrderConsumer, OrderStore, Persisted, QueueError};

/// Messages polled per round.
pub const WORKER_BATCH_MAX: usize = 500;
/// Longest wait of a poll.
pub const WORKER_POLL_WAIT: Duration = Duration::from_millis(200);
/// Attempts to persist a round's batch before the round gives up (its offsets stay uncommitted).
pub const PERSIST_ATTEMPTS_MAX: u32 = 5;
/// Pause between two attempts, doubling up to [`PERSIST_BACKOFF_MAX`].
pub const PERSIST_BACKOFF_MIN: Duration = Duration::from_millis(50);
pub const PERSIST_BACKOFF_MAX: Duration = Duration::from_secs(1);
const _: () = assert!(PERSIST_BACKOFF_MIN.as_millis() < PERSIST_BACKOFF_MAX.as_millis());

/// What one round did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct WorkStats {
    pub inserted: u64,
    pub duplicates: u64,
    /// Orders PostgreSQL refused for lack of stock ("SOLD OUT in DB": the caches disagreed).
    pub sold_out: u64,
    pub no_sale: u64,
    /// Orders whose reservation the API cancelled after a failed produce: skipped.
    pub cancelled: u64,
}

/// Why a round stopped: the consumer must resume from the last committed offset.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WorkError {
    #[error(transparent)]
    Queue(#[from] QueueError),
    #[error("order store unavailable after {PERSIST_ATTEMPTS_MAX} attempts: {0}")]
    Store(String),
}

/// One round: poll, persist the batch (skipping cancelled reservations, in the same
/// transaction), commit its offsets.
///
/// # Errors
/// [`WorkError`] when the queue or the store failed; what persisted before is committed.
pub async fn work_once<C: OrderConsumer, S: OrderStore>(consumer: &mut C, store: &S) -> Result<WorkStats, WorkError> {
    let batch = consumer.poll(WORKER_BATCH_MAX, WORKER_POLL_WAIT).await?;
    #[cfg(madsim)]
    if crate::bugs::active(crate::bugs::Bug::OffsetBeforePersist) && !batch.is_empty() {
        // Planted bug: "commit early so a slow batch is not delivered twice".
        consumer.commit(&batch).await?;
    }
    let mut stats = WorkStats::default();
    if batch.is_empty() {
        return Ok(stats);
    }
    // The batch in one transaction, then the offsets: a failure anywhere commits nothing, and
    // the redelivered batch persists again harmlessly (the insert is idempotent). Whether an
    // order's reservation was cancelled is decided inside that transaction, serialised with the
    // API's cancellation on the product's row: the stock cache plays no part.
    let orders: Vec<Order> = batch.iter().map(|m| m.order.clone()).collect();
    let persisted = persist_with_retries(store, &orders).await?;
    for (order, persisted) in orders.iter().zip(persisted) {
        match persisted {
            Persisted::Inserted => stats.inserted += 1,
            Persisted::Duplicate => {
                crate::bugs::coverage::mark("duplicate-order-deduped");
                stats.duplicates += 1;
            }
            Persisted::SoldOut => {
                stats.sold_out += 1;
                tracing::error!(order_id = %order.order_id, product = %order.product_id,
                    "SOLD OUT in DB: data inconsistency detected, order not persisted");
            }
            Persisted::Cancelled => {
                crate::bugs::coverage::mark("cancelled-order-skipped");
                stats.cancelled += 1;
            }
            Persisted::NoSale => {
                stats.no_sale += 1;
                tracing::error!(order_id = %order.order_id, "order for a product without a sale");
            }
        }
    }
    consumer.commit(&batch).await?;
    Ok(stats)
}

async fn persist_with_retries<S: OrderStore>(store: &S, orders: &[Order]) -> Result<Vec<Persisted>, WorkError> {
    if orders.is_empty() {
        return Ok(Vec::new());
    }
    let mut pause = PERSIST_BACKOFF_MIN;
    let mut last = String::new();
    for attempt in 1..=PERSIST_ATTEMPTS_MAX {
        match store.persist_batch(orders).await {
            Ok(persisted) => return Ok(persisted),
            Err(e) => {
                tracing::warn!(
                    orders = orders.len(),
                    first_order_id = %orders[0].order_id,
                    first_key = %orders[0].idempotency_key,
                    attempt,
                    error = %e,
                    "persisting a batch failed"
                );
                last = e.to_string();
            }
        }
        if attempt < PERSIST_ATTEMPTS_MAX {
            madsim::time::sleep(pause).await;
            pause = (pause * 2).min(PERSIST_BACKOFF_MAX);
        }
    }
    Err(WorkError::Store(last))
}
