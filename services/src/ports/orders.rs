//! The order system's ports: stock cache (Redis), order queue with consumer groups (Kafka) and
//! order store (PostgreSQL).

use std::future::Future;
use std::time::Duration;

use models::orders::Order;
use serde::{Deserialize, Serialize};

/// What a reservation in the stock cache answered.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Reservation {
    /// One item taken now for this key: queue the order under `reservation`, a name the cache
    /// gives from its own clock (microseconds), always later than the key's cancelled ones.
    Reserved { reservation: u64 },
    /// The key already holds an item: re-armed under this attempt; queue the order again under
    /// the same `reservation` (the worker persists it once).
    Held { reservation: u64 },
    /// No stock left; remembered under the key, so a retry answers the same.
    SoldOut,
    /// The key was found sold out before.
    RepeatSoldOut,
    /// No stock left, for a key Redis does not know while the sale runs on a stock reconcile
    /// re-initialised after Redis lost it: an earlier reservation of the key may still be in
    /// the queue, so the order store must cancel the key's reservations up to `floor` (now, on
    /// the cache's clock) before the answer is "sold out"
    /// ([`StockCache::remember_sold_out`] then).
    SoldOutAfterLoss { floor: u64 },
    /// The key holds a reservation made before the stock was last set exactly, which counted
    /// its item as free: the order store must cancel it (or find its order persisted) before
    /// the key reserves afresh ([`StockCache::forget_stale`]).
    Stale { reservation: u64 },
    /// The key holds a reservation of another product: the key was reused for another request.
    OtherProduct,
    /// The key's order is persisted (remembered from PostgreSQL after Redis lost the key).
    Ordered,
    /// An earlier attempt began cancelling this key's reservation and did not finish: finish it
    /// (durable cancellation, then [`StockCache::finish_release`]) before reserving again.
    Cancelling { reservation: u64 },
    /// The product has no sale in the cache (never initialised, or Redis lost it).
    NoSale,
}

/// What locking a reservation for its cancellation found.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum ReleaseLock {
    /// This attempt held the reservation; it is now locked (`cancelling`): no attempt can re-arm
    /// it, so no attempt can be answered "accepted" for it until the lock is finished.
    Locked { reservation: u64 },
    /// Another attempt holds the key now (a retry re-armed it), or it was given back or found
    /// sold out: this attempt decides nothing.
    NotHeld,
    /// Redis does not know the key (it restarted): nothing to lock.
    Unknown,
}

/// What finishing a release did.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Release {
    /// The item is back in stock and the key released: a retry reserves afresh.
    Released,
    /// The order was persisted after all: the key holds its item again.
    Kept,
    /// The key was not locked for this reservation (already finished, or Redis lost it).
    Unknown,
}

/// What cancelling a reservation in the order store found.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Cancel {
    /// The reservation is cancelled durably: no message queued under it will be persisted.
    Cancelled,
    /// An order with this key is already persisted: it stands.
    Persisted,
}

/// Stock cache errors.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error, Serialize, Deserialize)]
pub enum CacheError {
    /// Not reachable, or too slow: answer 503; nothing was changed, or the change is unknown
    /// (callers treat both as "maybe" and compensate or reconcile).
    #[error("stock cache unavailable: {0}")]
    Unavailable(String),
    /// Redis refuses writes (maxmemory reached): answer 503.
    #[error("stock cache out of memory: {0}")]
    OutOfMemory(String),
}

/// The fast path: stock, idempotency keys and rate limits, each operation atomic.
pub trait StockCache: Send + Sync + 'static {
    /// Sets the product's stock exactly (a sale starts, or a quiet reconciliation): the sale is
    /// no longer "after a loss", and reservations made before are stale
    /// ([`Reservation::Stale`]).
    fn set_stock(&self, product_id: &str, quantity: i64) -> impl Future<Output = Result<(), CacheError>> + Send;

    /// Re-initialises a sale Redis lost (reconciliation during a sale) and marks it "after a
    /// loss" until the next [`StockCache::set_stock`]: see [`Reservation::SoldOutAfterLoss`].
    fn reinit_stock(&self, product_id: &str, quantity: i64) -> impl Future<Output = Result<(), CacheError>> + Send;

    /// The `cancelling` locks of the product not yet finished, as (key, reservation), in key
    /// order: each holds an item. A quiet reconciliation finishes them (the order store decides
    /// each) before it sets the stock exactly.
    fn locks(&self, product_id: &str) -> impl Future<Output = Result<Vec<(String, u64)>, CacheError>> + Send;

    /// The product's stock, if it has a sale.
    fn stock(&self, product_id: &str) -> impl Future<Output = Result<Option<i64>, CacheError>> + Send;

    /// Atomically: answers a known key with its first answer (re-arming a held reservation
    /// under `attempt`); otherwise takes one item if the stock is positive and remembers the key
    /// either way. `attempt` names this request: only the attempt that holds a reservation can
    /// lock it for cancellation, so a lock sent by an earlier attempt (delayed on the network)
    /// cannot undo a reservation a later attempt is using.
    fn reserve(
        &self,
        product_id: &str,
        key: &str,
        attempt: u64,
    ) -> impl Future<Output = Result<Reservation, CacheError>> + Send;

    /// Remembers keys whose orders are persisted, those Redis does not know (it lost them): a
    /// quiet reconcile restores them from PostgreSQL, so a late retry is answered "accepted".
    fn remember_ordered(
        &self,
        product_id: &str,
        keys: &[String],
    ) -> impl Future<Output = Result<(), CacheError>> + Send;

    /// Remembers the key as sold out (after the order store cancelled its reservations), unless
    /// it holds something by now.
    fn remember_sold_out(&self, product_id: &str, key: &str) -> impl Future<Output = Result<(), CacheError>> + Send;

    /// Releases a stale reservation whose cancellation committed, without giving its item back
    /// (the exact set that made it stale already did). True if the key held it.
    fn forget_stale(
        &self,
        product_id: &str,
        key: &str,
        reservation: u64,
    ) -> impl Future<Output = Result<bool, CacheError>> + Send;

    /// The first step of giving back the item of a reservation whose produce failed: if
    /// `attempt` holds the key, marks it `cancelling` (no re-arm, no reservation) and answers
    /// the reservation. The item stays taken until [`StockCache::finish_release`].
    fn lock_release(
        &self,
        product_id: &str,
        key: &str,
        attempt: u64,
    ) -> impl Future<Output = Result<ReleaseLock, CacheError>> + Send;

    /// The last step, after the order store decided (see [`OrderStore::cancel`]): for a key
    /// still `cancelling` this reservation, `cancelled` gives the item back and releases the key;
    /// otherwise (the order was persisted) the key holds its item again. Idempotent.
    fn finish_release(
        &self,
        product_id: &str,
        key: &str,
        reservation: u64,
        cancelled: bool,
    ) -> impl Future<Output = Result<Release, CacheError>> + Send;

    /// Stores a one-time waiting-room admission token.
    fn grant_admission(&self, token: &str, ttl: Duration) -> impl Future<Output = Result<(), CacheError>> + Send;

    /// Uses up an admission token: true the first time, for a granted and unexpired token.
    fn take_admission(&self, token: &str) -> impl Future<Output = Result<bool, CacheError>> + Send;

    /// Counts a request of `user_id` in the current window; true when within `limit`.
    fn admit(
        &self,
        user_id: &str,
        limit: u32,
        window: Duration,
    ) -> impl Future<Output = Result<bool, CacheError>> + Send;
}

/// Order queue errors.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error, Serialize, Deserialize)]
pub enum QueueError {
    /// Definitely not queued (broker down, refused).
    #[error("queue unavailable: {0}")]
    Unavailable(String),
    /// Timed out: the order may or may not be in the log.
    #[error("queue ambiguous: {0}")]
    Ambiguous(String),
    /// A message that is not an order: a bug or a foreign producer.
    #[error("malformed message: {0}")]
    Malformed(String),
}

/// The longest a producer of either build waits for a produce's answer (the real one's
/// `message.timeout.ms`, the simulated one's call timeout): after it a produce has landed or
/// failed for good, but for a request still on the network.
pub const PRODUCE_DEADLINE_MAX: Duration = Duration::from_secs(5);

/// Produces orders to the log, keyed by product.
pub trait OrderProducer: Send + Sync + 'static {
    /// Returns once the broker acknowledged the order (acks=all).
    fn produce(&self, order: &Order) -> impl Future<Output = Result<(), QueueError>> + Send;
}

/// One message of the log: where it is, and the order.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct QueuedOrder {
    pub partition: i32,
    pub offset: i64,
    pub order: Order,
}

/// A consumer-group member: polls orders and commits offsets by hand.
pub trait OrderConsumer: Send + 'static {
    /// Up to `max` messages, waiting at most `wait` for the first.
    fn poll(&mut self, max: usize, wait: Duration)
    -> impl Future<Output = Result<Vec<QueuedOrder>, QueueError>> + Send;

    /// Commits: every message up to and including these is done. Only after they persisted.
    fn commit(&mut self, done: &[QueuedOrder]) -> impl Future<Output = Result<(), QueueError>> + Send;
}

/// What persisting an order did.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Persisted {
    /// Inserted, and the stock decremented.
    Inserted,
    /// Already there (a redelivery): nothing changed.
    Duplicate,
    /// No stock left in PostgreSQL: not inserted ("SOLD OUT in DB", spec 004).
    SoldOut,
    /// The product has no sale in PostgreSQL: not inserted.
    NoSale,
    /// Its reservation (or a later one of its key) was cancelled (see [`OrderStore::cancel`]):
    /// not inserted.
    Cancelled,
}

/// A product's truth in PostgreSQL.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProductRow {
    pub product_id: String,
    pub stock: i64,
    pub initial_stock: i64,
    pub orders: i64,
}

/// Order store errors.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error, Serialize, Deserialize)]
pub enum OrderStoreError {
    /// Not reachable: retry later (the worker does not commit the offset).
    #[error("order store unavailable: {0}")]
    Unavailable(String),
}

/// The order store: the truth about stock and orders.
pub trait OrderStore: Send + Sync + 'static {
    /// Starts a sale: sets the product's stock and initial stock (orders so far are kept).
    fn init_sale(&self, product_id: &str, quantity: i64) -> impl Future<Output = Result<(), OrderStoreError>> + Send;

    /// In one transaction, serialised with [`OrderStore::cancel`] on the product's row: skips an
    /// order whose reservation was cancelled, else inserts the order (idempotent on its id and
    /// key) and decrements the stock where stock > 0.
    fn persist(&self, order: &Order) -> impl Future<Output = Result<Persisted, OrderStoreError>> + Send;

    /// Persists a batch in order, each order as [`OrderStore::persist`] would. Adapters that can
    /// do it in one transaction do: then a failure persists none of the batch. Either way a
    /// retry is harmless, the insert being idempotent.
    fn persist_batch(&self, orders: &[Order]) -> impl Future<Output = Result<Vec<Persisted>, OrderStoreError>> + Send {
        async move {
            let mut persisted = Vec::with_capacity(orders.len());
            for order in orders {
                persisted.push(self.persist(order).await?);
            }
            Ok(persisted)
        }
    }

    /// In one transaction, serialised with [`OrderStore::persist`] on the product's row: when no
    /// order with this key is persisted, records the cancellation of `order.reservation` and of
    /// every earlier reservation of the key (reservation ids grow with time), so that no message
    /// queued under them is ever persisted. Idempotent. Written before the item is given back in
    /// the cache: an order is either persisted or cancelled, never both.
    fn cancel(&self, order: &Order) -> impl Future<Output = Result<Cancel, OrderStoreError>> + Send;

    fn product(&self, product_id: &str) -> impl Future<Output = Result<Option<ProductRow>, OrderStoreError>> + Send;

    /// Every product, by id (reconciliation).
    fn products(&self) -> impl Future<Output = Result<Vec<ProductRow>, OrderStoreError>> + Send;

    /// Every persisted order, by id (checkers).
    fn orders(&self, product_id: &str) -> impl Future<Output = Result<Vec<Order>, OrderStoreError>> + Send;
}
