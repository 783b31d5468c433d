//! The order system's invariants: pure functions of what clients saw (the keys of their orders
//! and how each ended) and of the end state (PostgreSQL's tables and Redis's keyspace). Both
//! builds, so real runs are checked by the same code.

use std::collections::BTreeMap;

use services::orders::mem::{CacheState, OrderDb};

use super::workload::PRODUCT;
use crate::verdict::{OpRecord, Violation};

pub fn stock_of(db: &OrderDb) -> (i64, i64) {
    db.products.get(PRODUCT).copied().unwrap_or((0, 0))
}

/// No oversell: orders never exceed the stock, the stock is never negative, and stock plus
/// orders is the initial stock.
pub fn no_oversell(db: &OrderDb, initial: i64) -> Vec<Violation> {
    let (stock, _) = stock_of(db);
    let orders = db.orders.values().filter(|o| o.product_id == PRODUCT).count() as i64;
    let mut out = Vec::new();
    if orders > initial || stock < 0 || stock + orders != initial {
        out.push(Violation::new(
            "no-oversell",
            format!("{orders} orders and stock {stock} for an initial stock of {initial}"),
        ));
    }
    out
}

/// Every acknowledged order is persisted.
pub fn acknowledged_persisted(ops: &[OpRecord], db: &OrderDb) -> Vec<Violation> {
    ops.iter()
        .filter(|op| op.outcome == "ok" && !db.keys.contains_key(&op.key))
        .map(|op| {
            Violation::new("acknowledged-persisted", format!("order {} was accepted but never persisted", op.key))
        })
        .collect()
}

/// A definite failure has no effect: an order whose client saw only definite answers, none of
/// them 200 (a 4xx, or a 503 saying nothing was reserved or queued), leaves no order behind.
/// A client that saw an ambiguous answer (a timeout, 502/504, or a 503 saying the order may
/// have been queued) ends `info`, not `fail`, and is not held to this. Catches an answer that
/// misstates what happened: "failed" for an order that was in fact taken.
pub fn definite_failure_no_effect(ops: &[OpRecord], db: &OrderDb) -> Vec<Violation> {
    ops.iter()
        .filter(|op| op.outcome == "fail" && db.keys.contains_key(&op.key))
        .map(|op| {
            Violation::new(
                "definite-failure-no-effect",
                format!("order {} was refused with a definite failure but persisted", op.key),
            )
        })
        .collect()
}

/// One order per idempotency key.
pub fn one_order_per_key(db: &OrderDb) -> Vec<Violation> {
    let mut per_key: BTreeMap<&str, usize> = BTreeMap::new();
    for order in db.orders.values() {
        *per_key.entry(order.idempotency_key.as_str()).or_default() += 1;
    }
    per_key
        .into_iter()
        .filter(|(_, n)| *n > 1)
        .map(|(k, n)| Violation::new("one-order-per-key", format!("key {k} has {n} orders")))
        .collect()
}

/// Without a Redis restart, once the worker drained, Redis offers what PostgreSQL holds, less
/// at most one item per order whose outcome stayed unknown and that was never persisted (a
/// reservation the client abandoned; reconcile returns it). Any other gap is leaked stock.
pub fn no_leaked_stock(cache: &CacheState, db: &OrderDb, ops: &[OpRecord]) -> Vec<Violation> {
    let (db_stock, _) = stock_of(db);
    let abandoned = ops.iter().filter(|op| op.outcome == "info" && !db.keys.contains_key(&op.key)).count() as i64;
    match cache.stock.get(PRODUCT) {
        Some(cached) if *cached < db_stock - abandoned => vec![Violation::new(
            "no-leaked-stock",
            format!("Redis offers {cached} while PostgreSQL holds {db_stock} ({abandoned} abandoned): items leaked"),
        )],
        _ => Vec::new(),
    }
}

/// After reconciliation with nothing in flight, Redis equals PostgreSQL.
pub fn cache_matches_db(cache: &CacheState, db: &OrderDb) -> Vec<Violation> {
    let (db_stock, _) = stock_of(db);
    match cache.stock.get(PRODUCT) {
        Some(cached) if *cached == db_stock => Vec::new(),
        other => vec![Violation::new(
            "cache-matches-db",
            format!("after reconcile Redis has {other:?}, PostgreSQL {db_stock}"),
        )],
    }
}
