//! sqlx adapter of the order store (PostgreSQL): products and orders.
//!
//! `persist` is one transaction: lock the product's row, skip an order whose reservation was
//! cancelled, insert the order (nothing on a repeated order id or key), then decrement the stock
//! where stock > 0; without stock the order is not persisted. `cancel` is one transaction on the
//! same row lock: record the cancellation unless the key's order is persisted. All SQL is static
//! with bound parameters.

use models::orders::Order;
use std::collections::{BTreeMap, BTreeSet};

use sqlx::{PgPool, Row};

use crate::ports::orders::{Cancel, OrderStore, OrderStoreError, Persisted, ProductRow};

fn store_error(e: sqlx::Error) -> OrderStoreError {
    OrderStoreError::Unavailable(e.to_string())
}

/// Runs the order store's migrations.
///
/// # Errors
/// [`crate::adapters::pg::SetupError`] when the database is unreachable or a migration fails.
pub async fn migrate(pool: &PgPool) -> Result<(), crate::adapters::pg::SetupError> {
    sqlx::migrate!("./migrations/orders").run(pool).await?;
    Ok(())
}

/// Both transactions that must serialise on a product's row (persist, cancel) read what the
/// other committed once they hold the lock: that needs a fresh snapshot per statement, READ
/// COMMITTED, whatever the server's default isolation.
async fn read_committed(tx: &mut sqlx::Transaction<'_, sqlx::Postgres>) -> Result<(), OrderStoreError> {
    sqlx::query("SET TRANSACTION ISOLATION LEVEL READ COMMITTED").execute(&mut **tx).await.map_err(store_error)?;
    Ok(())
}

/// The order store on PostgreSQL.
#[derive(Debug, Clone)]
pub struct PgOrderStore {
    pool: PgPool,
}

impl PgOrderStore {
    pub fn new(pool: PgPool) -> Self {
        PgOrderStore { pool }
    }

    pub fn pool(&self) -> &PgPool {
        &self.pool
    }

    /// `SELECT 1`, for `/health`.
    ///
    /// # Errors
    /// [`OrderStoreError`] when the database does not answer.
    pub async fn ping(&self) -> Result<(), OrderStoreError> {
        sqlx::query("SELECT 1").execute(&self.pool).await.map(|_| ()).map_err(store_error)
    }
}

/// The products' columns, as a literal: with `concat!` every query is a static string.
macro_rules! product_columns {
    () => {
        "p.product_id, p.stock, p.initial_stock, \
         (SELECT count(*) FROM orders o WHERE o.product_id = p.product_id) AS orders"
    };
}

fn product_row(row: &sqlx::postgres::PgRow) -> Result<ProductRow, OrderStoreError> {
    Ok(ProductRow {
        product_id: row.try_get("product_id").map_err(store_error)?,
        stock: row.try_get("stock").map_err(store_error)?,
        initial_stock: row.try_get("initial_stock").map_err(store_error)?,
        orders: row.try_get("orders").map_err(store_error)?,
    })
}

impl OrderStore for PgOrderStore {
    async fn init_sale(&self, product_id: &str, quantity: i64) -> Result<(), OrderStoreError> {
        sqlx::query(
            "INSERT INTO products (product_id, stock, initial_stock) VALUES ($1, $2, $2) \
             ON CONFLICT (product_id) DO UPDATE SET stock = EXCLUDED.stock, initial_stock = EXCLUDED.initial_stock, \
             updated_at = now()",
        )
        .bind(product_id)
        .bind(quantity)
        .execute(&self.pool)
        .await
        .map_err(store_error)?;
        Ok(())
    }

    async fn persist(&self, order: &Order) -> Result<Persisted, OrderStoreError> {
        let mut persisted = self.persist_batch(std::slice::from_ref(order)).await?;
        Ok(persisted.pop().unwrap_or(Persisted::NoSale))
    }

    async fn persist_batch(&self, orders: &[Order]) -> Result<Vec<Persisted>, OrderStoreError> {
        // One transaction of four statements whatever the batch's size, with the outcome of
        // persisting the orders one by one in batch order: the products' rows locked (in id
        // order: no deadlock between workers); every order inserted at once, idempotently;
        // of the new ones, per product, as many as the stock holds keep their rows in batch
        // order and the rest are deleted again ("SOLD OUT in DB"); the stock decremented.
        if orders.is_empty() {
            return Ok(Vec::new());
        }
        let mut tx = self.pool.begin().await.map_err(store_error)?;
        read_committed(&mut tx).await?;
        let mut products: Vec<String> = orders.iter().map(|o| o.product_id.clone()).collect();
        products.sort_unstable();
        products.dedup();
        let rows: Vec<(String, i64)> = sqlx::query_as(
            "SELECT product_id, stock FROM products WHERE product_id = ANY($1) ORDER BY product_id FOR UPDATE",
        )
        .bind(&products)
        .fetch_all(&mut *tx)
        .await
        .map_err(store_error)?;
        let mut stock: BTreeMap<String, i64> = rows.into_iter().collect();
        // Cancelled reservations, read under the products' row locks: a cancellation committed
        // before them is seen, and one not yet committed waits for this transaction.
        let keys: Vec<String> = orders.iter().map(|o| o.idempotency_key.clone()).collect();
        let cancelled: BTreeMap<String, i64> = sqlx::query_as(
            "SELECT c.idempotency_key, c.reservation FROM order_cancellations c \
             WHERE c.idempotency_key = ANY($1)",
        )
        .bind(&keys)
        .fetch_all(&mut *tx)
        .await
        .map_err(store_error)?
        .into_iter()
        .collect();
        let is_cancelled =
            |o: &Order| cancelled.get(&o.idempotency_key).is_some_and(|latest| o.reservation as i64 <= *latest);
        let for_sale: Vec<&Order> =
            orders.iter().filter(|o| stock.contains_key(&o.product_id) && !is_cancelled(o)).collect();
        let column = |f: fn(&Order) -> &String| for_sale.iter().map(|o| f(o).clone()).collect::<Vec<String>>();
        let inserted: Vec<String> = sqlx::query_scalar(
            "INSERT INTO orders (order_id, idempotency_key, product_id, user_id, reservation) \
             SELECT * FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::bigint[]) \
             ON CONFLICT DO NOTHING RETURNING order_id",
        )
        .bind(column(|o| &o.order_id))
        .bind(column(|o| &o.idempotency_key))
        .bind(column(|o| &o.product_id))
        .bind(column(|o| &o.user_id))
        .bind(for_sale.iter().map(|o| o.reservation as i64).collect::<Vec<i64>>())
        .fetch_all(&mut *tx)
        .await
        .map_err(store_error)?;
        let mut new: BTreeSet<String> = inserted.into_iter().collect();
        let mut persisted = Vec::with_capacity(orders.len());
        let mut sold_out: Vec<String> = Vec::new();
        let mut taken: BTreeMap<String, i64> = BTreeMap::new();
        for order in orders {
            let Some(left) = stock.get_mut(&order.product_id) else {
                persisted.push(Persisted::NoSale);
                continue;
            };
            if is_cancelled(order) {
                persisted.push(Persisted::Cancelled);
                continue;
            }
            // The first occurrence of a new order is its insert; a repeat in the batch, or an
            // order already there, is a duplicate.
            if !new.remove(&order.order_id) {
                // A repeat of an order found sold out in this batch finds no stock either.
                let repeat_of_sold_out = sold_out.contains(&order.order_id);
                persisted.push(if repeat_of_sold_out { Persisted::SoldOut } else { Persisted::Duplicate });
                continue;
            }
            if *left > 0 {
                *left -= 1;
                *taken.entry(order.product_id.clone()).or_default() += 1;
                persisted.push(Persisted::Inserted);
            } else {
                sold_out.push(order.order_id.clone());
                persisted.push(Persisted::SoldOut);
            }
        }
        if !sold_out.is_empty() {
            sqlx::query("DELETE FROM orders WHERE order_id = ANY($1)")
                .bind(&sold_out)
                .execute(&mut *tx)
                .await
                .map_err(store_error)?;
        }
        if !taken.is_empty() {
            let (ids, counts): (Vec<String>, Vec<i64>) = taken.into_iter().unzip();
            sqlx::query(
                "UPDATE products p SET stock = p.stock - t.n, updated_at = now() \
                 FROM unnest($1::text[], $2::bigint[]) AS t(product_id, n) WHERE p.product_id = t.product_id",
            )
            .bind(&ids)
            .bind(&counts)
            .execute(&mut *tx)
            .await
            .map_err(store_error)?;
        }
        tx.commit().await.map_err(store_error)?;
        Ok(persisted)
    }

    async fn cancel(&self, order: &Order) -> Result<Cancel, OrderStoreError> {
        // The product's row lock first, as the worker's persist takes it: the two transactions
        // run one after the other, and each then sees what the other committed.
        let mut tx = self.pool.begin().await.map_err(store_error)?;
        read_committed(&mut tx).await?;
        // FOR SHARE: cancellations of one product do not wait for each other, only for (and
        // are waited for by) the worker's FOR UPDATE.
        sqlx::query("SELECT 1 FROM products WHERE product_id = $1 FOR SHARE")
            .bind(&order.product_id)
            .fetch_optional(&mut *tx)
            .await
            .map_err(store_error)?;
        let persisted: Option<i32> = sqlx::query_scalar("SELECT 1 FROM orders WHERE idempotency_key = $1")
            .bind(&order.idempotency_key)
            .fetch_optional(&mut *tx)
            .await
            .map_err(store_error)?;
        if persisted.is_some() {
            tx.rollback().await.map_err(store_error)?;
            return Ok(Cancel::Persisted);
        }
        sqlx::query(
            "INSERT INTO order_cancellations (idempotency_key, reservation, product_id) VALUES ($1, $2, $3) \
             ON CONFLICT (idempotency_key) DO UPDATE \
             SET reservation = GREATEST(order_cancellations.reservation, EXCLUDED.reservation), cancelled_at = now()",
        )
        .bind(&order.idempotency_key)
        .bind(order.reservation as i64)
        .bind(&order.product_id)
        .execute(&mut *tx)
        .await
        .map_err(store_error)?;
        tx.commit().await.map_err(store_error)?;
        Ok(Cancel::Cancelled)
    }

    async fn product(&self, product_id: &str) -> Result<Option<ProductRow>, OrderStoreError> {
        let row = sqlx::query(concat!("SELECT ", product_columns!(), " FROM products p WHERE p.product_id = $1"))
            .bind(product_id)
            .fetch_optional(&self.pool)
            .await
            .map_err(store_error)?;
        row.as_ref().map(product_row).transpose()
    }

    async fn products(&self) -> Result<Vec<ProductRow>, OrderStoreError> {
        let rows = sqlx::query(concat!("SELECT ", product_columns!(), " FROM products p ORDER BY p.product_id"))
            .fetch_all(&self.pool)
            .await
            .map_err(store_error)?;
        rows.iter().map(product_row).collect()
    }

    async fn orders(&self, product_id: &str) -> Result<Vec<Order>, OrderStoreError> {
        let rows = sqlx::query(
            "SELECT order_id, idempotency_key, product_id, user_id, reservation FROM orders WHERE product_id = $1 \
             ORDER BY order_id",
        )
        .bind(product_id)
        .fetch_all(&self.pool)
        .await
        .map_err(store_error)?;
        rows.iter()
            .map(|r| {
                Ok(Order {
                    order_id: r.try_get("order_id").map_err(store_error)?,
                    idempotency_key: r.try_get("idempotency_key").map_err(store_error)?,
                    product_id: r.try_get("product_id").map_err(store_error)?,
                    user_id: r.try_get("user_id").map_err(store_error)?,
                    reservation: r.try_get::<i64, _>("reservation").map_err(store_error)? as u64,
                })
            })
            .collect()
    }
}
