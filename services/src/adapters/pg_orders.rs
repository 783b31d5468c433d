//! sqlx adapter of the order store (PostgreSQL): products and orders.
//!
//! `persist` is one transaction: insert the order (nothing on a repeated order id or key), then
//! decrement the stock where stock > 0; without stock the transaction rolls back and the order
//! is not persisted. All SQL is static with bound parameters.

use models::orders::Order;
use sqlx::{PgPool, Row};

use crate::ports::orders::{OrderStore, OrderStoreError, Persisted, ProductRow};

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
        // One transaction, one commit: the products' rows locked first, in id order (no
        // deadlock between workers), then per order the idempotent insert and the decrement
        // where stock > 0; an order that finds no stock is deleted again ("SOLD OUT in DB").
        let mut tx = self.pool.begin().await.map_err(store_error)?;
        let mut products: Vec<&str> = orders.iter().map(|o| o.product_id.as_str()).collect();
        products.sort_unstable();
        products.dedup();
        let mut on_sale = std::collections::BTreeSet::new();
        for product in products {
            let exists: Option<i64> = sqlx::query_scalar("SELECT stock FROM products WHERE product_id = $1 FOR UPDATE")
                .bind(product)
                .fetch_optional(&mut *tx)
                .await
                .map_err(store_error)?;
            if exists.is_some() {
                on_sale.insert(product);
            }
        }
        let mut persisted = Vec::with_capacity(orders.len());
        for order in orders {
            if !on_sale.contains(order.product_id.as_str()) {
                persisted.push(Persisted::NoSale);
                continue;
            }
            let inserted = sqlx::query(
                "INSERT INTO orders (order_id, idempotency_key, product_id, user_id) VALUES ($1, $2, $3, $4) \
                 ON CONFLICT DO NOTHING",
            )
            .bind(&order.order_id)
            .bind(&order.idempotency_key)
            .bind(&order.product_id)
            .bind(&order.user_id)
            .execute(&mut *tx)
            .await
            .map_err(store_error)?
            .rows_affected();
            if inserted == 0 {
                persisted.push(Persisted::Duplicate);
                continue;
            }
            let decremented = sqlx::query(
                "UPDATE products SET stock = stock - 1, updated_at = now() WHERE product_id = $1 AND stock > 0",
            )
            .bind(&order.product_id)
            .execute(&mut *tx)
            .await
            .map_err(store_error)?
            .rows_affected();
            if decremented == 0 {
                sqlx::query("DELETE FROM orders WHERE order_id = $1")
                    .bind(&order.order_id)
                    .execute(&mut *tx)
                    .await
                    .map_err(store_error)?;
                persisted.push(Persisted::SoldOut);
                continue;
            }
            persisted.push(Persisted::Inserted);
        }
        tx.commit().await.map_err(store_error)?;
        Ok(persisted)
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
            "SELECT order_id, idempotency_key, product_id, user_id FROM orders WHERE product_id = $1 ORDER BY order_id",
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
                })
            })
            .collect()
    }
}
