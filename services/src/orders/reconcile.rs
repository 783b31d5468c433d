//! Reconciliation of the stock cache with PostgreSQL (spec 004: "Redis-PostgreSQL mismatch",
//! "Redis down: restart + reinit from DB").
//!
//! PostgreSQL is the truth. The cache's stock runs ahead of it by the orders still in flight
//! (reserved in Redis, not yet persisted). After a Redis restart the cache is empty; it is
//! re-initialised to PostgreSQL's stock minus an upper bound of the orders in flight (the
//! worker's lag), so the cache can never offer an item PostgreSQL will refuse: it may undersell
//! until the lag drains, and a later run then sets it to PostgreSQL's stock exactly.

use std::future::Future;
use std::time::Duration;

use serde::Serialize;

use models::orders::{Order, order_id_for};

use crate::ports::orders::{CacheError, Cancel, OrderStore, OrderStoreError, PRODUCE_DEADLINE_MAX, StockCache};

/// One product's comparison.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Drift {
    pub product_id: String,
    pub cache_stock: Option<i64>,
    pub db_stock: i64,
    /// What the cache was set to, when it was.
    pub set_to: Option<i64>,
}

/// What a reconciliation found and did.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct ReconcileReport {
    pub products: usize,
    pub drifts: Vec<Drift>,
    /// Abandoned `cancelling` locks finished (only when nothing is in flight).
    pub locks_finished: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ReconcileError {
    #[error(transparent)]
    Cache(#[from] CacheError),
    #[error(transparent)]
    Store(#[from] OrderStoreError),
    /// The worker's lag could not be measured.
    #[error("the worker's lag: {0}")]
    Lag(String),
}

/// How long re-initialising a lost sale waits, during a sale, before it measures: longer than a
/// produce sent before Redis lost the sale may take to land (no producer waits longer than
/// [`PRODUCE_DEADLINE_MAX`]; 2 s more for a request still on the network). While the sale is
/// lost no order is reserved (`/order` answers 503 `cache_not_ready`), so after the wait every
/// order reserved before the loss is persisted, in the worker's lag, or never will be:
/// PostgreSQL's stock minus the lag then never offers an item such an order holds.
pub const REINIT_GRACE: Duration = Duration::from_secs(PRODUCE_DEADLINE_MAX.as_secs() + 2);

/// Compares every product; re-initialises the cache where it lost the sale, or where it
/// offers more than PostgreSQL has. `lag` measures an upper bound of the orders queued and not
/// yet persisted (0 when the worker has caught up).
///
/// Raising a cache that offers less than PostgreSQL holds is safe only when no order is between
/// its reservation and its produce, which no one can see while a sale runs (the simulator found
/// a reconcile that raised the stock under such an order: two accepted orders for one item).
/// So it is done only when `quiet` says the sale is quiet (no request in flight). For the same
/// reason a lost sale is re-initialised during a sale only after [`REINIT_GRACE`], with the
/// stock and the lag measured again.
///
/// # Errors
/// [`ReconcileError`] when the cache or the store fails.
pub async fn reconcile<C, S, L, F>(cache: &C, store: &S, lag: L, quiet: bool) -> Result<ReconcileReport, ReconcileError>
where
    C: StockCache,
    S: OrderStore,
    L: Fn() -> F,
    F: Future<Output = Result<u64, ReconcileError>>,
{
    // The lag first: the worker commits an offset only after its order's transaction, so a lag
    // of 0 means every stock read after it already counts every queued order.
    let in_flight = lag().await?;
    let products = store.products().await?;
    // Nothing in flight anywhere: the stock can be set exactly.
    let exact = quiet && in_flight == 0;
    let mut report = ReconcileReport { products: products.len(), drifts: Vec::new(), locks_finished: 0 };
    let mut lost = Vec::new();
    for row in products {
        if exact {
            report.locks_finished += finish_locks(cache, store, &row.product_id).await?;
            // Keys Redis lost (a restart) whose orders are persisted: a late retry of one must
            // be answered "accepted", not "sold out" or with a second reservation.
            let keys: Vec<String> =
                store.orders(&row.product_id).await?.into_iter().map(|o| o.idempotency_key).collect();
            cache.remember_ordered(&row.product_id, &keys).await?;
        }
        let cached = cache.stock(&row.product_id).await?;
        if cached.is_none() && !quiet {
            // Re-initialised after the grace, below.
            lost.push(row.product_id.clone());
            continue;
        }
        let safe = (row.stock - in_flight as i64).max(0);
        let set_to = match cached {
            _ if exact => {
                // Also ends the "after a loss" mark: no message from before the loss is left.
                cache.set_stock(&row.product_id, row.stock).await?;
                (cached != Some(row.stock)).then_some(row.stock)
            }
            None => Some(safe),
            Some(c) if c > row.stock => Some(safe),
            Some(_) => None,
        };
        if let (Some(value), false) = (set_to, exact) {
            // Below the truth by the lag; messages may still be on their way: keep the mark.
            cache.reinit_stock(&row.product_id, value).await?;
        }
        if cached != Some(row.stock) {
            tracing::warn!(product = %row.product_id, cache = ?cached, db = row.stock, set_to = ?set_to, "stock drift");
            report.drifts.push(Drift { product_id: row.product_id, cache_stock: cached, db_stock: row.stock, set_to });
        }
    }
    if lost.is_empty() {
        return Ok(report);
    }
    tracing::warn!(products = ?lost, grace = ?REINIT_GRACE, "the cache lost a sale: waiting out produces in flight");
    madsim::time::sleep(REINIT_GRACE).await;
    let in_flight = lag().await?;
    for row in store.products().await?.into_iter().filter(|r| lost.contains(&r.product_id)) {
        let cached = cache.stock(&row.product_id).await?;
        let set_to = match cached {
            None => Some((row.stock - in_flight as i64).max(0)),
            Some(_) => None,
        };
        if let Some(value) = set_to {
            cache.reinit_stock(&row.product_id, value).await?;
        }
        tracing::warn!(product = %row.product_id, cache = ?cached, db = row.stock, set_to = ?set_to, "stock drift");
        report.drifts.push(Drift { product_id: row.product_id, cache_stock: cached, db_stock: row.stock, set_to });
    }
    Ok(report)
}

/// Finishes the product's abandoned `cancelling` locks (their attempts died, or their clients
/// gave up): the order store decides each, as a retry of the key would, and the item is given
/// back or kept. Returns how many it finished.
async fn finish_locks<C: StockCache, S: OrderStore>(
    cache: &C,
    store: &S,
    product_id: &str,
) -> Result<u64, ReconcileError> {
    let mut finished = 0;
    for (key, reservation) in cache.locks(product_id).await? {
        let order = Order {
            order_id: order_id_for(&key),
            product_id: product_id.to_string(),
            user_id: String::new(),
            idempotency_key: key.clone(),
            reservation,
        };
        let cancelled = store.cancel(&order).await? == Cancel::Cancelled;
        cache.finish_release(product_id, &key, reservation, cancelled).await?;
        tracing::warn!(key = %key, reservation, cancelled, "finished an abandoned cancellation");
        finished += 1;
    }
    Ok(finished)
}
