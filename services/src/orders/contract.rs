//! The order store's port contract: one body, run against the in-memory store and PostgreSQL,
//! so that a batch persists exactly as its orders would one by one. Returns `Err(clause)` on the
//! first broken clause; ids are prefixed so a shared database can hold several runs.

use models::orders::{Order, order_id_for};

use crate::ports::orders::{OrderStore, Persisted};

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
}
