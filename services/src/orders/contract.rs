//! The order system's port contracts: one body each, run against the in-memory adapters and the
//! real ones (PostgreSQL, Redis), so that a batch persists exactly as its orders would one by
//! one, and a cancelled reservation is never persisted nor a persisted one cancelled. Returns
//! `Err(clause)` on the first broken clause; ids are prefixed so a shared database or Redis can
//! hold several runs.

use models::orders::{Order, order_id_for};

use crate::ports::orders::{Cancel, OrderStore, Persisted, Release, ReleaseLock, Reservation, StockCache};

fn check(holds: bool, clause: &str) -> Result<(), String> {
    if holds { Ok(()) } else { Err(format!("contract broken: {clause}")) }
}

fn order(prefix: &str, product: &str, n: u32) -> Order {
    let key = format!("{prefix}-key-{n}");
    Order {
        order_id: order_id_for(&key),
        product_id: product.to_string(),
        user_id: format!("{prefix}-user-{n}"),
        idempotency_key: key,
        reservation: 0,
    }
}

/// The clauses of [`OrderStore::persist`] and [`OrderStore::persist_batch`].
pub async fn order_store_contract<S: OrderStore>(store: &S, prefix: &str) -> Result<(), String> {
    let e = |what: &'static str| move |err| format!("{what}: {err}");
    let (sale, other, none) = (format!("{prefix}-p"), format!("{prefix}-q"), format!("{prefix}-none"));
    store.init_sale(&sale, 2).await.map_err(e("init"))?;
    store.init_sale(&other, 1).await.map_err(e("init"))?;
    let first = order(prefix, &sale, 1);
    check(store.persist(&first).await.map_err(e("persist"))? == Persisted::Inserted, "a new order is inserted")?;
    check(store.persist(&first).await.map_err(e("persist"))? == Persisted::Duplicate, "a repeat is a duplicate")?;
    let batch = vec![
        order(prefix, &sale, 2),  // the last item of the sale
        first.clone(),            // already persisted
        order(prefix, &sale, 2),  // a repeat within the batch
        order(prefix, &sale, 3),  // no stock left
        order(prefix, &sale, 3),  // a repeat finds no stock either
        order(prefix, &none, 4),  // no sale
        order(prefix, &other, 5), // another product's only item
    ];
    let persisted = store.persist_batch(&batch).await.map_err(e("persist batch"))?;
    let expected = vec![
        Persisted::Inserted,
        Persisted::Duplicate,
        Persisted::Duplicate,
        Persisted::SoldOut,
        Persisted::SoldOut,
        Persisted::NoSale,
        Persisted::Inserted,
    ];
    check(persisted == expected, "a batch persists as its orders would one by one, in order")?;
    let row = store.product(&sale).await.map_err(e("product"))?.ok_or("the sale vanished")?;
    check(row.stock == 0 && row.orders == 2, "stock and orders follow the inserts only")?;
    let row = store.product(&other).await.map_err(e("product"))?.ok_or("the sale vanished")?;
    check(row.stock == 0 && row.orders == 1, "each product of a batch is decremented")?;
    let ids: Vec<String> = store.orders(&sale).await.map_err(e("orders"))?.into_iter().map(|o| o.order_id).collect();
    check(!ids.contains(&batch[3].order_id), "a sold-out order leaves no row")?;
    check(store.persist_batch(&[]).await.map_err(e("empty batch"))?.is_empty(), "an empty batch is nothing")?;
    let again = store.persist_batch(&batch).await.map_err(e("persist batch again"))?;
    check(again.iter().filter(|p| **p == Persisted::Inserted).count() == 0, "a redelivered batch inserts nothing")?;
    cancellation_clauses(store, prefix).await
}

/// The clauses of [`OrderStore::cancel`] against [`OrderStore::persist`].
async fn cancellation_clauses<S: OrderStore>(store: &S, prefix: &str) -> Result<(), String> {
    let e = |what: &'static str| move |err| format!("{what}: {err}");
    let sale = format!("{prefix}-c");
    store.init_sale(&sale, 3).await.map_err(e("init"))?;
    let at = |n: u32, reservation: u64| {
        let mut o = order(prefix, &sale, n);
        o.reservation = reservation;
        o
    };
    let first = at(10, 7 << 20);
    check(store.cancel(&first).await.map_err(e("cancel"))? == Cancel::Cancelled, "an unpersisted order is cancelled")?;
    check(store.cancel(&first).await.map_err(e("cancel"))? == Cancel::Cancelled, "a cancellation is idempotent")?;
    check(
        store.persist(&first).await.map_err(e("persist"))? == Persisted::Cancelled,
        "a cancelled reservation's order is not persisted",
    )?;
    check(
        store.persist(&at(10, 5 << 20)).await.map_err(e("persist"))? == Persisted::Cancelled,
        "an earlier reservation of the key is cancelled with it",
    )?;
    check(
        store.cancel(&at(10, 3 << 20)).await.map_err(e("cancel"))? == Cancel::Cancelled,
        "cancelling an earlier reservation again changes nothing",
    )?;
    let high = at(11, (1 << 62) + 5);
    check(
        store.cancel(&high).await.map_err(e("cancel"))? == Cancel::Cancelled,
        "a reservation near 2^63 is cancelled",
    )?;
    check(
        store.persist_batch(std::slice::from_ref(&high)).await.map_err(e("persist"))? == vec![Persisted::Cancelled],
        "and matched",
    )?;
    let row = store.product(&sale).await.map_err(e("product"))?.ok_or("the sale vanished")?;
    check(row.stock == 3 && row.orders == 0, "a cancelled order takes no stock")?;
    // A later reservation of the same key (a retry that reserved afresh) goes through.
    let retry = at(10, 8 << 20);
    let batch = vec![first.clone(), retry.clone(), first.clone()];
    let persisted = store.persist_batch(&batch).await.map_err(e("persist batch"))?;
    check(
        persisted == vec![Persisted::Cancelled, Persisted::Inserted, Persisted::Cancelled],
        "only the cancelled reservations are skipped in a batch",
    )?;
    check(store.cancel(&retry).await.map_err(e("cancel"))? == Cancel::Persisted, "a persisted order is not cancelled")?;
    check(store.persist(&retry).await.map_err(e("persist"))? == Persisted::Duplicate, "it stays persisted once")?;
    let row = store.product(&sale).await.map_err(e("product"))?.ok_or("the sale vanished")?;
    check(row.stock == 2 && row.orders == 1, "one item for the one persisted order")?;
    let persisted = store.orders(&sale).await.map_err(e("orders"))?;
    check(
        persisted.len() == 1 && persisted[0].reservation == 8 << 20,
        "the order keeps the reservation it came under",
    )?;
    Ok(())
}

/// The clauses of the stock cache's reservation, lock and release ([`StockCache`]).
pub async fn stock_cache_contract<C: StockCache>(cache: &C, prefix: &str) -> Result<(), String> {
    let e = |what: &'static str| move |err| format!("{what}: {err}");
    let (p, q, none) = (format!("{prefix}-p"), format!("{prefix}-q"), format!("{prefix}-none"));
    let key = |n: u32| format!("{prefix}-k{n}");
    let reserved = |r: Reservation| match r {
        Reservation::Reserved { reservation } => Ok(reservation),
        other => Err(format!("contract broken: expected a fresh reservation, got {other:?}")),
    };
    cache.set_stock(&p, 2).await.map_err(e("set"))?;
    check(cache.stock(&p).await.map_err(e("stock"))? == Some(2), "the stock reads as set")?;
    check(cache.stock(&none).await.map_err(e("stock"))?.is_none(), "no sale reads as none")?;
    check(cache.reserve(&none, &key(0), 1).await.map_err(e("reserve"))? == Reservation::NoSale, "no sale, no item")?;
    let r1 = reserved(cache.reserve(&p, &key(1), 11).await.map_err(e("reserve"))?)?;
    check(r1 > 0 && r1 < 1 << 63, "a new key takes an item under a reservation the cache names")?;
    check(cache.stock(&p).await.map_err(e("stock"))? == Some(1), "the item is taken")?;
    let r = cache.reserve(&p, &key(1), 12).await.map_err(e("reserve"))?;
    check(r == Reservation::Held { reservation: r1 }, "a repeat holds the same reservation")?;
    check(cache.stock(&p).await.map_err(e("stock"))? == Some(1), "a repeat takes nothing")?;
    let r = cache.reserve(&q, &key(1), 13).await.map_err(e("reserve"))?;
    check(r == Reservation::OtherProduct, "a key reused for another product is refused")?;
    let lock = cache.lock_release(&p, &key(1), 11).await.map_err(e("lock"))?;
    check(lock == ReleaseLock::NotHeld, "an earlier attempt cannot lock a re-armed key")?;
    let lock = cache.lock_release(&q, &key(1), 12).await.map_err(e("lock"))?;
    check(lock == ReleaseLock::NotHeld, "nor can another product's")?;
    let lock = cache.lock_release(&p, &key(1), 12).await.map_err(e("lock"))?;
    check(lock == ReleaseLock::Locked { reservation: r1 }, "the holder locks its reservation")?;
    check(cache.locks(&p).await.map_err(e("locks"))? == vec![(key(1), r1)], "the lock is listed")?;
    let r = cache.reserve(&p, &key(1), 13).await.map_err(e("reserve"))?;
    check(r == Reservation::Cancelling { reservation: r1 }, "a locked key cannot be re-armed")?;
    let done = cache.finish_release(&p, &key(1), r1 + 7, true).await.map_err(e("finish"))?;
    check(done == Release::Unknown, "another reservation's release does nothing")?;
    check(cache.stock(&p).await.map_err(e("stock"))? == Some(1), "and gives nothing back")?;
    let done = cache.finish_release(&p, &key(1), r1, true).await.map_err(e("finish"))?;
    check(done == Release::Released, "a cancelled reservation is released")?;
    check(cache.stock(&p).await.map_err(e("stock"))? == Some(2), "its item is back")?;
    check(cache.locks(&p).await.map_err(e("locks"))?.is_empty(), "and its lock gone")?;
    let done = cache.finish_release(&p, &key(1), r1, true).await.map_err(e("finish"))?;
    check(done == Release::Unknown, "a release is given back once")?;
    check(cache.stock(&p).await.map_err(e("stock"))? == Some(2), "once only")?;
    let r2 = reserved(cache.reserve(&p, &key(1), 14).await.map_err(e("reserve"))?)?;
    check(r2 > r1, "a released key reserves afresh, after its cancelled reservation")?;
    let lock = cache.lock_release(&p, &key(1), 14).await.map_err(e("lock"))?;
    check(lock == ReleaseLock::Locked { reservation: r2 }, "a fresh reservation locks")?;
    let done = cache.finish_release(&p, &key(1), r2, false).await.map_err(e("finish"))?;
    check(done == Release::Kept, "a persisted order keeps its item")?;
    let r = cache.reserve(&p, &key(1), 15).await.map_err(e("reserve"))?;
    check(r == Reservation::Held { reservation: r2 }, "a kept reservation is held again")?;
    check(cache.stock(&p).await.map_err(e("stock"))? == Some(1), "and still holds one item")?;
    let r3 = reserved(cache.reserve(&p, &key(2), u64::MAX >> 1).await.map_err(e("reserve"))?)?;
    let lock = cache.lock_release(&p, &key(2), u64::MAX >> 1).await.map_err(e("lock"))?;
    check(lock == ReleaseLock::Locked { reservation: r3 }, "any attempt id below 2^63 holds and locks")?;
    let r = cache.reserve(&p, &key(3), 31).await.map_err(e("reserve"))?;
    check(r == Reservation::SoldOut, "no stock left: sold out")?;
    let r = cache.reserve(&p, &key(3), 32).await.map_err(e("reserve"))?;
    check(r == Reservation::RepeatSoldOut, "a repeat of a sold-out key is sold out")?;
    let lock = cache.lock_release(&p, &key(3), 32).await.map_err(e("lock"))?;
    check(lock == ReleaseLock::NotHeld, "sold out holds nothing")?;
    let lock = cache.lock_release(&p, &key(4), 41).await.map_err(e("lock"))?;
    check(lock == ReleaseLock::Unknown, "an unknown key")?;
    check(cache.stock(&p).await.map_err(e("stock"))? == Some(0), "the stock never went below zero")?;
    // An exact set makes older reservations stale: forgotten without their item.
    cache.finish_release(&p, &key(2), r3, true).await.map_err(e("finish"))?;
    cache.set_stock(&p, 5).await.map_err(e("set"))?;
    let r = cache.reserve(&p, &key(1), 16).await.map_err(e("reserve"))?;
    check(r == Reservation::Stale { reservation: r2 }, "a reservation older than an exact set is stale")?;
    check(cache.forget_stale(&p, &key(1), r2).await.map_err(e("forget"))?, "a stale reservation is forgotten")?;
    check(cache.stock(&p).await.map_err(e("stock"))? == Some(5), "without its item")?;
    let r4 = reserved(cache.reserve(&p, &key(1), 17).await.map_err(e("reserve"))?)?;
    check(r4 > r2, "and the key reserves afresh")?;
    // A lock taken before an exact set gives nothing back when it is finished: the set counted
    // its item already.
    cache.lock_release(&p, &key(1), 17).await.map_err(e("lock"))?;
    cache.set_stock(&p, 5).await.map_err(e("set"))?;
    let done = cache.finish_release(&p, &key(1), r4, true).await.map_err(e("finish"))?;
    check(done == Release::Released, "a lock older than an exact set is released")?;
    check(cache.stock(&p).await.map_err(e("stock"))? == Some(5), "without giving its item back twice")?;
    // After a loss: an unknown key that finds no stock is not remembered as sold out.
    cache.reinit_stock(&q, 0).await.map_err(e("reinit"))?;
    let r = cache.reserve(&q, &key(5), 51).await.map_err(e("reserve"))?;
    check(matches!(r, Reservation::SoldOutAfterLoss { floor } if floor > 0), "after a loss, sold out is checked")?;
    let r = cache.reserve(&q, &key(5), 52).await.map_err(e("reserve"))?;
    check(matches!(r, Reservation::SoldOutAfterLoss { .. }), "until the order store said so")?;
    cache.remember_sold_out(&q, &key(5)).await.map_err(e("soldout"))?;
    let r = cache.reserve(&q, &key(5), 53).await.map_err(e("reserve"))?;
    check(r == Reservation::RepeatSoldOut, "then it is remembered")?;
    cache.set_stock(&q, 0).await.map_err(e("set"))?;
    let r = cache.reserve(&q, &key(6), 61).await.map_err(e("reserve"))?;
    check(r == Reservation::SoldOut, "an exact set ends the loss")?;
    // Keys restored from the order store: answered as ordered; a known key is left alone.
    cache.remember_ordered(&q, &[key(7), key(6)]).await.map_err(e("ordered"))?;
    let r = cache.reserve(&q, &key(7), 71).await.map_err(e("reserve"))?;
    check(r == Reservation::Ordered, "a key whose order is persisted is answered so")?;
    let r = cache.reserve(&q, &key(6), 62).await.map_err(e("reserve"))?;
    check(r == Reservation::RepeatSoldOut, "remembering an order does not overwrite what Redis knows")?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn the_in_memory_store_keeps_the_contract() {
        let store = crate::orders::mem::MemOrderStore { db: Default::default() };
        order_store_contract(&store, "mem").await.unwrap();
    }

    #[tokio::test]
    async fn the_in_memory_cache_keeps_the_contract() {
        let cache = crate::orders::mem::MemStockCache::default();
        stock_cache_contract(&cache, "mem").await.unwrap();
    }
}
