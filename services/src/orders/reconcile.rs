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
    /// The worker's lag could not be measured.
    #[error("the worker's lag: {0}")]
    Lag(String),
}

/// How long re-initialising a lost sale waits, during a sale, before it measures: longer than a
/// produce sent before Redis lost the sale may take to land (the producers' timeout, 1 s in both
/// builds, plus the network's delay). While the sale is lost no order is reserved (`/order`
/// answers 503 `cache_not_ready`), so after the wait every order reserved before the loss is
/// persisted, in the worker's lag, or never will be: PostgreSQL's stock minus the lag then never
/// offers an item such an order holds.
pub const REINIT_GRACE: Duration = Duration::from_secs(3);

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
    let products = store.products().await?;
    let in_flight = lag().await?;
    let mut report = ReconcileReport { products: products.len(), drifts: Vec::new() };
    let mut lost = Vec::new();
    for row in products {
        let cached = cache.stock(&row.product_id).await?;
        let safe = (row.stock - in_flight as i64).max(0);
        if cached.is_none() && !quiet {
            // Re-initialised after the grace, below.
            lost.push(row.product_id.clone());
            continue;
        }
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
            cache.set_stock(&row.product_id, value).await?;
        }
        tracing::warn!(product = %row.product_id, cache = ?cached, db = row.stock, set_to = ?set_to, "stock drift");
        report.drifts.push(Drift { product_id: row.product_id, cache_stock: cached, db_stock: row.stock, set_to });
    }
    Ok(report)
}
