//! Reconciliation of the stock cache with PostgreSQL (spec 004: "Redis-PostgreSQL mismatch",
//! "Redis down: restart + reinit from DB").
//!
//! PostgreSQL is the truth. The cache's stock runs ahead of it by the orders still in flight
//! (reserved in Redis, not yet persisted). After a Redis restart the cache is empty; it is
//! re-initialised to PostgreSQL's stock minus an upper bound of the orders in flight (the
//! worker's lag), so the cache can never offer an item PostgreSQL will refuse: it may undersell
//! until the lag drains, and a later run then sets it to PostgreSQL's stock exactly.

use serde::Serialize;

use crate::ports::orders::{CacheError, OrderStore, OrderStoreError, StockCache};

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
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ReconcileError {
    #[error(transparent)]
    Cache(#[from] CacheError),
    #[error(transparent)]
    Store(#[from] OrderStoreError),
}

/// Compares every product; re-initialises the cache where it lost the sale, or where it
/// offers more than PostgreSQL has. `in_flight` is an upper bound of the orders queued and not
/// yet persisted (0 when the worker has caught up).
///
/// Raising a cache that offers less than PostgreSQL holds is safe only when no order is between
/// its reservation and its produce, which no one can see while a sale runs (the simulator found
/// a reconcile that raised the stock under such an order: two accepted orders for one item).
/// So it is done only when `quiet` says the sale is quiet (no request in flight).
///
/// # Errors
/// [`ReconcileError`] when the cache or the store fails.
pub async fn reconcile<C: StockCache, S: OrderStore>(
    cache: &C,
    store: &S,
    in_flight: u64,
    quiet: bool,
) -> Result<ReconcileReport, ReconcileError> {
    let products = store.products().await?;
    let mut report = ReconcileReport { products: products.len(), drifts: Vec::new() };
    for row in products {
        let cached = cache.stock(&row.product_id).await?;
        let safe = (row.stock - in_flight as i64).max(0);
        let set_to = match cached {
            None => Some(safe),
            Some(c) if c > row.stock => Some(safe),
            Some(c) if quiet && in_flight == 0 && c != row.stock => Some(row.stock),
            Some(_) => None,
        };
        if let Some(value) = set_to {
            cache.set_stock(&row.product_id, value).await?;
        }
        if cached != Some(row.stock) {
            tracing::warn!(product = %row.product_id, cache = ?cached, db = row.stock, set_to = ?set_to, "stock drift");
            report.drifts.push(Drift { product_id: row.product_id, cache_stock: cached, db_stock: row.stock, set_to });
        }
    }
    Ok(report)
}
