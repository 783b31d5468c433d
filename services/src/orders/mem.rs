//! In-memory adapters of the order system's ports: plain state machines behind mutexes, with
//! the contracts of the real ones (the reservation is one atomic step like the Lua script; the
//! log keeps committed offsets per group; persisting is one transaction). They serve unit tests
//! and the simulator's dependency nodes. Iteration is over `BTreeMap`s only.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use models::orders::Order;

use crate::ports::orders::{
    CacheError, Cancel, OrderConsumer, OrderProducer, OrderStore, OrderStoreError, Persisted, ProductRow, QueueError,
    QueuedOrder, Release, ReleaseLock, Reservation, StockCache,
};

/// The state of an idempotency key in the stock cache.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum KeyState {
    /// Holds an item of `product`: reservation `reservation`, held now by the request attempt
    /// `holder`.
    Reserved {
        holder: u64,
        reservation: u64,
        product: String,
    },
    SoldOut,
    /// Locked by a failed produce while the order store cancels this reservation; the item is
    /// still held.
    Cancelling {
        reservation: u64,
        product: String,
    },
    /// Given back (or forgotten) after the cancellation of reservations up to this one: a retry
    /// reserves afresh, under a later reservation.
    Released(u64),
    /// Its order is persisted (restored from PostgreSQL by a quiet reconcile after Redis lost
    /// the key): a retry is answered "accepted".
    Ordered,
}

/// Redis's keyspace for the order system.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct CacheState {
    pub stock: BTreeMap<String, i64>,
    /// Idempotency key -> what became of it.
    pub keys: BTreeMap<String, KeyState>,
    /// Product -> its `cancelling` locks not yet finished, as (key, reservation).
    pub locks: BTreeMap<String, BTreeSet<(String, u64)>>,
    /// Products whose sale was re-initialised after Redis lost it, until the next exact set.
    pub after_loss: BTreeSet<String>,
    /// Product -> when its stock was last set exactly (Redis's clock): a reservation made
    /// before holds an item the exact set already counted as free.
    pub floor: BTreeMap<String, u64>,
    pub rate: BTreeMap<String, u32>,
    pub admissions: BTreeMap<String, ()>,
}

/// Microseconds since the epoch on this process's wall clock: Redis's `TIME` for the in-memory
/// and simulated Redis (in the simulation build madsim's clock).
pub fn wall_micros() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_micros() as u64)
}

impl CacheState {
    /// The `set` op: the stock set exactly (a sale starts, or a quiet reconcile): ends the
    /// after-loss mark and moves the floor to `now`.
    pub fn set_stock(&mut self, product_id: &str, quantity: i64, now: u64) {
        self.stock.insert(product_id.to_string(), quantity);
        self.after_loss.remove(product_id);
        // Every reservation made up to now, this microsecond's included, is older than the floor.
        self.floor.insert(product_id.to_string(), now + 1);
    }

    /// The `reinit` op: reconcile's re-initialisation of a sale Redis lost (or lowering a
    /// cache that offers too much, during a sale): sets the stock and the after-loss mark.
    pub fn reinit_stock(&mut self, product_id: &str, quantity: i64) {
        self.stock.insert(product_id.to_string(), quantity);
        self.after_loss.insert(product_id.to_string());
    }

    /// The reservation script, as one atomic step. A fresh reservation is named by Redis's
    /// clock (`now`), and always after the key's last cancelled reservation.
    pub fn reserve(&mut self, product_id: &str, key: &str, attempt: u64, now: u64) -> Reservation {
        let released = match self.keys.get(key).cloned() {
            Some(KeyState::Reserved { product, .. } | KeyState::Cancelling { product, .. })
                if product != product_id =>
            {
                return Reservation::OtherProduct;
            }
            Some(KeyState::Reserved { reservation, .. })
                if self.floor.get(product_id).is_some_and(|floor| reservation < *floor) =>
            {
                return Reservation::Stale { reservation };
            }
            Some(KeyState::Reserved { reservation, product, .. }) => {
                self.keys.insert(key.to_string(), KeyState::Reserved { holder: attempt, reservation, product });
                return Reservation::Held { reservation };
            }
            Some(KeyState::Cancelling { reservation, .. }) => return Reservation::Cancelling { reservation },
            Some(KeyState::SoldOut) => return Reservation::RepeatSoldOut,
            Some(KeyState::Ordered) => return Reservation::Ordered,
            Some(KeyState::Released(last)) => Some(last),
            None => None,
        };
        let Some(stock) = self.stock.get_mut(product_id) else { return Reservation::NoSale };
        if *stock > 0 {
            *stock -= 1;
            // After the key's cancelled reservation, and never older than the last exact set.
            let floor = self.floor.get(product_id).copied().unwrap_or(0);
            let reservation = released.map_or(now, |last| now.max(last + 1)).max(floor);
            let state = KeyState::Reserved { holder: attempt, reservation, product: product_id.to_string() };
            self.keys.insert(key.to_string(), state);
            Reservation::Reserved { reservation }
        } else if released.is_none() && !self.keys.contains_key(key) && self.after_loss.contains(product_id) {
            // Redis lost its keys: this one may have an earlier reservation still in the queue.
            // Not remembered: the API remembers it once the order store cancelled up to `now`.
            Reservation::SoldOutAfterLoss { floor: now }
        } else {
            self.keys.insert(key.to_string(), KeyState::SoldOut);
            Reservation::SoldOut
        }
    }

    /// The `ordered` op: remembers a key whose order is persisted, unless Redis knows it.
    pub fn remember_ordered(&mut self, key: &str) {
        self.keys.entry(key.to_string()).or_insert(KeyState::Ordered);
    }

    /// The `soldout` op: remembers a key as sold out, unless it holds something now.
    pub fn remember_sold_out(&mut self, key: &str) {
        self.keys.entry(key.to_string()).or_insert(KeyState::SoldOut);
    }

    /// The `forget` op: a stale reservation (made before the last exact set, which counted its
    /// item as free) whose cancellation committed is released without giving its item back.
    pub fn forget_stale(&mut self, product_id: &str, key: &str, reservation: u64) -> bool {
        match self.keys.get(key) {
            Some(KeyState::Reserved { reservation: r, product, .. }) if *r == reservation && product == product_id => {
                self.keys.insert(key.to_string(), KeyState::Released(reservation));
                true
            }
            _ => false,
        }
    }

    /// The lock script, as one atomic step.
    pub fn lock_release(&mut self, product_id: &str, key: &str, attempt: u64) -> ReleaseLock {
        match self.keys.get(key).cloned() {
            Some(KeyState::Reserved { holder, reservation, product }) if holder == attempt && product == product_id => {
                self.locks.entry(product.clone()).or_default().insert((key.to_string(), reservation));
                self.keys.insert(key.to_string(), KeyState::Cancelling { reservation, product });
                ReleaseLock::Locked { reservation }
            }
            Some(_) => ReleaseLock::NotHeld,
            None => ReleaseLock::Unknown,
        }
    }

    /// The finishing script, as one atomic step. The lock leaves the product's set whatever
    /// the key holds (its key may have expired).
    pub fn finish_release(&mut self, product_id: &str, key: &str, reservation: u64, cancelled: bool) -> Release {
        if let Some(locks) = self.locks.get_mut(product_id) {
            locks.remove(&(key.to_string(), reservation));
        }
        let locked = KeyState::Cancelling { reservation, product: product_id.to_string() };
        if self.keys.get(key) != Some(&locked) {
            return Release::Unknown;
        }
        if !cancelled {
            let state = KeyState::Reserved { holder: 0, reservation, product: product_id.to_string() };
            self.keys.insert(key.to_string(), state);
            return Release::Kept;
        }
        self.keys.insert(key.to_string(), KeyState::Released(reservation));
        // A reservation older than the last exact set: that set already counted its item.
        let counted = self.floor.get(product_id).is_some_and(|floor| reservation < *floor);
        if let (Some(stock), false) = (self.stock.get_mut(product_id), counted) {
            *stock += 1;
        }
        Release::Released
    }

    /// Keys held, for maxmemory.
    pub fn size(&self) -> usize {
        self.stock.len()
            + self.keys.len()
            + self.locks.len()
            + self.after_loss.len()
            + self.rate.len()
            + self.admissions.len()
    }
}

/// A stock cache in memory (rate windows never expire: tests set the limit). Clones share it.
#[derive(Debug, Clone, Default)]
pub struct MemStockCache {
    pub state: Arc<Mutex<CacheState>>,
}

impl StockCache for MemStockCache {
    async fn set_stock(&self, product_id: &str, quantity: i64) -> Result<(), CacheError> {
        self.state.lock().expect("not poisoned").set_stock(product_id, quantity, wall_micros());
        Ok(())
    }

    async fn reinit_stock(&self, product_id: &str, quantity: i64) -> Result<(), CacheError> {
        self.state.lock().expect("not poisoned").reinit_stock(product_id, quantity);
        Ok(())
    }

    async fn locks(&self, product_id: &str) -> Result<Vec<(String, u64)>, CacheError> {
        let state = self.state.lock().expect("not poisoned");
        Ok(state.locks.get(product_id).map(|l| l.iter().cloned().collect()).unwrap_or_default())
    }

    async fn stock(&self, product_id: &str) -> Result<Option<i64>, CacheError> {
        Ok(self.state.lock().expect("not poisoned").stock.get(product_id).copied())
    }

    async fn reserve(&self, product_id: &str, key: &str, attempt: u64) -> Result<Reservation, CacheError> {
        Ok(self.state.lock().expect("not poisoned").reserve(product_id, key, attempt, wall_micros()))
    }

    async fn remember_sold_out(&self, _product_id: &str, key: &str) -> Result<(), CacheError> {
        self.state.lock().expect("not poisoned").remember_sold_out(key);
        Ok(())
    }

    async fn remember_ordered(&self, _product_id: &str, keys: &[String]) -> Result<(), CacheError> {
        let mut state = self.state.lock().expect("not poisoned");
        for key in keys {
            state.remember_ordered(key);
        }
        Ok(())
    }

    async fn forget_stale(&self, product_id: &str, key: &str, reservation: u64) -> Result<bool, CacheError> {
        Ok(self.state.lock().expect("not poisoned").forget_stale(product_id, key, reservation))
    }

    async fn lock_release(&self, product_id: &str, key: &str, attempt: u64) -> Result<ReleaseLock, CacheError> {
        Ok(self.state.lock().expect("not poisoned").lock_release(product_id, key, attempt))
    }

    async fn finish_release(
        &self,
        product_id: &str,
        key: &str,
        reservation: u64,
        cancelled: bool,
    ) -> Result<Release, CacheError> {
        Ok(self.state.lock().expect("not poisoned").finish_release(product_id, key, reservation, cancelled))
    }

    async fn grant_admission(&self, token: &str, _ttl: Duration) -> Result<(), CacheError> {
        self.state.lock().expect("not poisoned").admissions.insert(token.to_string(), ());
        Ok(())
    }

    async fn take_admission(&self, token: &str) -> Result<bool, CacheError> {
        Ok(self.state.lock().expect("not poisoned").admissions.remove(token).is_some())
    }

    async fn admit(&self, user_id: &str, limit: u32, _window: Duration) -> Result<bool, CacheError> {
        let mut state = self.state.lock().expect("not poisoned");
        let count = state.rate.entry(user_id.to_string()).or_insert(0);
        *count += 1;
        Ok(*count <= limit)
    }
}

/// PostgreSQL's tables for the order system.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct OrderDb {
    /// product -> (stock, initial stock)
    pub products: BTreeMap<String, (i64, i64)>,
    pub orders: BTreeMap<String, Order>,
    /// idempotency key -> order id
    pub keys: BTreeMap<String, String>,
    /// Idempotency key -> the latest cancelled reservation: it and every earlier one (reservation
    /// ids grow with time) are cancelled.
    pub cancellations: BTreeMap<String, u64>,
}

impl OrderDb {
    /// The persist transaction, as one atomic step.
    pub fn persist(&mut self, order: &Order) -> Persisted {
        if !self.products.contains_key(&order.product_id) {
            return Persisted::NoSale;
        }
        if self.is_cancelled(order) {
            return Persisted::Cancelled;
        }
        if self.orders.contains_key(&order.order_id) || self.keys.contains_key(&order.idempotency_key) {
            return Persisted::Duplicate;
        }
        let (stock, _) = self.products.get_mut(&order.product_id).expect("checked above");
        if *stock <= 0 {
            return Persisted::SoldOut;
        }
        *stock -= 1;
        self.orders.insert(order.order_id.clone(), order.clone());
        self.keys.insert(order.idempotency_key.clone(), order.order_id.clone());
        Persisted::Inserted
    }

    /// Whether the order's reservation is cancelled.
    pub fn is_cancelled(&self, order: &Order) -> bool {
        self.cancellations.get(&order.idempotency_key).is_some_and(|latest| order.reservation <= *latest)
    }

    /// The cancel transaction, as one atomic step.
    pub fn cancel(&mut self, order: &Order) -> Cancel {
        if self.keys.contains_key(&order.idempotency_key) {
            return Cancel::Persisted;
        }
        let latest = self.cancellations.entry(order.idempotency_key.clone()).or_insert(order.reservation);
        *latest = (*latest).max(order.reservation);
        Cancel::Cancelled
    }

    /// The persist transaction of a table without unique constraints (planted bug
    /// `non-idempotent-insert`): a redelivered order becomes a second row.
    #[cfg(madsim)]
    pub fn persist_without_unique_keys(&mut self, order: &Order) -> Persisted {
        if !self.products.contains_key(&order.product_id) {
            return Persisted::NoSale;
        }
        if self.is_cancelled(order) {
            return Persisted::Cancelled;
        }
        let (stock, _) = self.products.get_mut(&order.product_id).expect("checked above");
        if *stock <= 0 {
            return Persisted::SoldOut;
        }
        *stock -= 1;
        let mut id = order.order_id.clone();
        let mut copy = 1;
        while self.orders.contains_key(&id) {
            copy += 1;
            id = format!("{}#{copy}", order.order_id);
        }
        self.orders.insert(id, order.clone());
        self.keys.insert(order.idempotency_key.clone(), order.order_id.clone());
        Persisted::Inserted
    }

    pub fn row(&self, product_id: &str) -> Option<ProductRow> {
        self.products.get(product_id).map(|(stock, initial)| ProductRow {
            product_id: product_id.to_string(),
            stock: *stock,
            initial_stock: *initial,
            orders: self.orders.values().filter(|o| o.product_id == product_id).count() as i64,
        })
    }
}

/// An order store in memory. Clones share it.
#[derive(Debug, Clone, Default)]
pub struct MemOrderStore {
    pub db: Arc<Mutex<OrderDb>>,
}

impl OrderStore for MemOrderStore {
    async fn init_sale(&self, product_id: &str, quantity: i64) -> Result<(), OrderStoreError> {
        self.db.lock().expect("not poisoned").products.insert(product_id.to_string(), (quantity, quantity));
        Ok(())
    }

    async fn persist(&self, order: &Order) -> Result<Persisted, OrderStoreError> {
        Ok(self.db.lock().expect("not poisoned").persist(order))
    }

    async fn cancel(&self, order: &Order) -> Result<Cancel, OrderStoreError> {
        Ok(self.db.lock().expect("not poisoned").cancel(order))
    }

    async fn product(&self, product_id: &str) -> Result<Option<ProductRow>, OrderStoreError> {
        Ok(self.db.lock().expect("not poisoned").row(product_id))
    }

    async fn products(&self) -> Result<Vec<ProductRow>, OrderStoreError> {
        let db = self.db.lock().expect("not poisoned");
        Ok(db.products.keys().filter_map(|p| db.row(p)).collect())
    }

    async fn orders(&self, product_id: &str) -> Result<Vec<Order>, OrderStoreError> {
        Ok(self
            .db
            .lock()
            .expect("not poisoned")
            .orders
            .values()
            .filter(|o| o.product_id == product_id)
            .cloned()
            .collect())
    }
}

/// A partitioned log with one consumer group's committed offsets.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct LogState {
    pub partitions: Vec<Vec<Order>>,
    /// partition -> next offset to read, as committed.
    pub committed: BTreeMap<i32, i64>,
}

impl LogState {
    pub fn new(partitions: usize) -> Self {
        LogState { partitions: vec![Vec::new(); partitions], committed: BTreeMap::new() }
    }

    /// Partition of a product: a stable hash of the key, as Kafka's default partitioner.
    pub fn partition_of(&self, product_id: &str) -> i32 {
        let hash =
            product_id.bytes().fold(0xcbf2_9ce4_8422_2325u64, |h, b| (h ^ u64::from(b)).wrapping_mul(0x100_0000_01b3));
        (hash % self.partitions.len() as u64) as i32
    }

    pub fn append(&mut self, order: Order) -> (i32, i64) {
        let partition = self.partition_of(&order.product_id);
        let log = &mut self.partitions[partition as usize];
        log.push(order);
        (partition, log.len() as i64 - 1)
    }

    /// Messages not yet committed, over all partitions.
    pub fn lag(&self) -> u64 {
        (0..self.partitions.len())
            .map(|p| {
                (self.partitions[p].len() as i64 - self.committed.get(&(p as i32)).copied().unwrap_or(0)).max(0) as u64
            })
            .sum()
    }
}

/// A queue in memory: producer and a single consumer that resumes from the committed offsets
/// when recreated. Clones share the log.
#[derive(Debug, Clone)]
pub struct MemQueue {
    pub log: Arc<Mutex<LogState>>,
    /// The consumer's read positions (lost when it is recreated).
    position: BTreeMap<i32, i64>,
}

impl MemQueue {
    pub fn new(partitions: usize) -> Self {
        MemQueue { log: Arc::new(Mutex::new(LogState::new(partitions))), position: BTreeMap::new() }
    }

    /// A new consumer on the same log, starting from the committed offsets.
    pub fn consumer(&self) -> MemQueue {
        MemQueue { log: self.log.clone(), position: BTreeMap::new() }
    }
}

impl OrderProducer for MemQueue {
    async fn produce(&self, order: &Order) -> Result<(), QueueError> {
        self.log.lock().expect("not poisoned").append(order.clone());
        Ok(())
    }
}

impl OrderConsumer for MemQueue {
    async fn poll(&mut self, max: usize, _wait: Duration) -> Result<Vec<QueuedOrder>, QueueError> {
        let log = self.log.lock().expect("not poisoned");
        let mut out = Vec::new();
        for (p, messages) in log.partitions.iter().enumerate() {
            let p = p as i32;
            let start = *self.position.entry(p).or_insert_with(|| log.committed.get(&p).copied().unwrap_or(0));
            for (offset, order) in messages.iter().enumerate().skip(start as usize) {
                if out.len() >= max {
                    break;
                }
                out.push(QueuedOrder { partition: p, offset: offset as i64, order: order.clone() });
                self.position.insert(p, offset as i64 + 1);
            }
        }
        Ok(out)
    }

    async fn commit(&mut self, done: &[QueuedOrder]) -> Result<(), QueueError> {
        let mut log = self.log.lock().expect("not poisoned");
        for message in done {
            let next = log.committed.entry(message.partition).or_insert(0);
            *next = (*next).max(message.offset + 1);
        }
        Ok(())
    }
}

#[cfg(all(test, not(madsim)))]
mod tests {
    //! The order logic on in-memory adapters: the API's answers, compensation, the worker's
    //! commit-after-persist, reconciliation.
    use super::*;
    use crate::orders::api::OrderApi;
    use crate::orders::reconcile::reconcile;
    use crate::orders::worker::work_once;

    /// A producer that always fails, as a broker that is down.
    struct DownProducer;

    impl OrderProducer for DownProducer {
        async fn produce(&self, _order: &Order) -> Result<(), QueueError> {
            Err(QueueError::Ambiguous("timed out".into()))
        }
    }

    fn body(product: &str, user: &str) -> Vec<u8> {
        serde_json::json!({"productId": product, "userId": user}).to_string().into_bytes()
    }

    #[tokio::test]
    async fn sold_out_repeat_and_exactly_stock_accepted() {
        let queue = MemQueue::new(3);
        let api =
            OrderApi::new(MemStockCache::default(), queue.clone(), MemOrderStore::default(), "http://room".into());
        assert_eq!(api.init(br#"{"productId":"p","quantity":3}"#).await.status, 200);
        let mut accepted = 0;
        for i in 0..10 {
            let reply = api.order(Some(format!("k{i}").as_bytes()), None, &body("p", &format!("u{i}"))).await.reply;
            match reply.status {
                200 => accepted += 1,
                409 => assert_eq!(reply.body["error"], "sold_out"),
                other => panic!("unexpected {other}"),
            }
        }
        assert_eq!(accepted, 3);
        let again = api.order(Some(b"k0"), None, &body("p", "u0")).await.reply;
        assert_eq!(again.status, 200, "a repeated key answers as the first time");
        assert_eq!(api.order(Some(b"k9"), None, &body("p", "u9")).await.reply.status, 409);
        assert_eq!(api.order(None, None, &body("p", "u")).await.reply.status, 400);
        assert_eq!(api.order(Some(b"k"), None, &body("nope", "u")).await.reply.status, 404);
        // The worker persists each accepted order once, even when redelivered.
        let mut consumer = queue.consumer();
        let stats = work_once(&mut consumer, &api.store).await.unwrap();
        assert_eq!((stats.inserted, stats.duplicates), (3, 1));
        assert_eq!(api.store.product("p").await.unwrap().unwrap().stock, 0);
        assert_eq!(queue.log.lock().unwrap().lag(), 0);
    }

    #[tokio::test]
    async fn failed_produce_gives_the_item_back() {
        let (cache, store) = (MemStockCache::default(), MemOrderStore::default());
        let api = OrderApi::new(cache.clone(), DownProducer, store.clone(), "http://room".into());
        api.init(br#"{"productId":"p","quantity":2}"#).await;
        let reply = api.order(Some(b"k1"), None, &body("p", "u")).await.reply;
        assert_eq!((reply.status, reply.body["error"].as_str()), (503, Some("queue_unavailable")));
        assert_eq!(cache.stock("p").await.unwrap(), Some(2), "compensated");
        assert!(matches!(cache.state.lock().unwrap().keys.get("k1"), Some(KeyState::Released(_))));
        // The cancellation is durable: the order, had its produce landed, is skipped.
        let db = store.db.lock().unwrap().clone();
        let (key, reservation) =
            db.cancellations.first_key_value().map(|(k, r)| (k.clone(), *r)).expect("one cancellation");
        assert_eq!(key, "k1");
        let mut landed = models::orders::PlaceOrder { product_id: "p".into(), user_id: "u".into() }.order("k1");
        landed.reservation = reservation;
        assert_eq!(store.persist(&landed).await.unwrap(), Persisted::Cancelled);
        assert_eq!(store.product("p").await.unwrap().unwrap().stock, 2, "a cancelled order takes nothing");
    }

    #[tokio::test]
    async fn an_order_persisted_before_its_cancellation_stands() {
        let (cache, store) = (MemStockCache::default(), MemOrderStore::default());
        let api = OrderApi::new(cache.clone(), DownProducer, store.clone(), "http://room".into());
        api.init(br#"{"productId":"p","quantity":2}"#).await;
        // The produce "timed out" but landed, and the worker persisted it before the API's
        // cancellation: the cancellation finds it, the answer is 200, the item stays taken.
        let Reservation::Reserved { reservation } = cache.reserve("p", "k1", 5).await.unwrap() else {
            panic!("reserved")
        };
        let mut order = models::orders::PlaceOrder { product_id: "p".into(), user_id: "u".into() }.order("k1");
        order.reservation = reservation;
        assert_eq!(store.persist(&order).await.unwrap(), Persisted::Inserted);
        // A retry of k1 re-arms the reservation and fails to produce too.
        let reply = api.order(Some(b"k1"), None, &body("p", "u")).await.reply;
        assert_eq!(reply.status, 200, "{reply:?}");
        assert_eq!(cache.stock("p").await.unwrap(), Some(1), "the persisted order keeps its item");
        // An attempt that no longer holds the key cannot lock it.
        assert_eq!(cache.lock_release("p", "k1", 5).await.unwrap(), ReleaseLock::NotHeld);
        assert_eq!(cache.lock_release("p", "nope", 5).await.unwrap(), ReleaseLock::Unknown);
    }

    #[tokio::test]
    async fn a_retry_finishes_a_cancellation_left_locked() {
        let (cache, store) = (MemStockCache::default(), MemOrderStore::default());
        store.init_sale("p", 1).await.unwrap();
        cache.set_stock("p", 1).await.unwrap();
        // An attempt reserved, failed to produce, locked the key, and died before cancelling.
        let Reservation::Reserved { reservation } = cache.reserve("p", "k1", 3).await.unwrap() else {
            panic!("reserved")
        };
        assert_eq!(cache.lock_release("p", "k1", 3).await.unwrap(), ReleaseLock::Locked { reservation });
        assert_eq!(cache.reserve("p", "k1", 4).await.unwrap(), Reservation::Cancelling { reservation });
        // The retry cancels the reservation, gives its item back, and reserves afresh.
        let api = OrderApi::new(cache.clone(), MemQueue::new(1), store.clone(), "http://room".into());
        let reply = api.order(Some(b"k1"), None, &body("p", "u")).await.reply;
        assert_eq!(reply.status, 200, "{reply:?}");
        assert_eq!(cache.stock("p").await.unwrap(), Some(0));
        assert_eq!(store.db.lock().unwrap().cancellations.get("k1"), Some(&reservation));
    }

    #[tokio::test]
    async fn waiting_room_and_rate_limit() {
        let mut api =
            OrderApi::new(MemStockCache::default(), MemQueue::new(1), MemOrderStore::default(), "http://room".into());
        api.in_flight_max = 0;
        api.init(br#"{"productId":"p","quantity":9}"#).await;
        let answer = api.order(Some(b"k1"), None, &body("p", "u")).await;
        assert_eq!(answer.reply.status, 302);
        assert_eq!(answer.location.as_deref(), Some("http://room/waiting-room?productId=p&userId=u"));
        api.cache.grant_admission("token", Duration::from_secs(1)).await.unwrap();
        assert_eq!(api.order(Some(b"k1"), Some(b"token"), &body("p", "u")).await.reply.status, 200);
        assert_eq!(api.order(Some(b"k2"), Some(b"token"), &body("p", "u")).await.reply.status, 302, "one use");
        api.in_flight_max = 100;
        let keys: Vec<String> = (0..6).map(|i| format!("r{i}")).collect();
        let request = body("p", "v");
        let answers =
            futures::future::join_all(keys.iter().map(|k| api.order(Some(k.as_bytes()), None, &request))).await;
        let statuses: Vec<u16> = answers.into_iter().map(|a| a.reply.status).collect();
        assert_eq!(statuses.iter().filter(|s| **s == 429).count(), 1, "{statuses:?}");
    }

    #[tokio::test]
    async fn reconcile_after_the_cache_lost_everything() {
        let cache = MemStockCache::default();
        let store = MemOrderStore::default();
        store.init_sale("p", 10).await.unwrap();
        cache.set_stock("p", 10).await.unwrap();
        for i in 0..4 {
            store
                .persist(
                    &models::orders::PlaceOrder { product_id: "p".into(), user_id: "u".into() }.order(&format!("k{i}")),
                )
                .await
                .unwrap();
        }
        *cache.state.lock().unwrap() = CacheState::default();
        let report = reconcile(&cache, &store, || async { Ok(2) }, false).await.unwrap();
        assert_eq!(report.drifts.len(), 1);
        assert_eq!(cache.stock("p").await.unwrap(), Some(4), "PostgreSQL's 6, minus 2 possibly in flight");
        reconcile(&cache, &store, || async { Ok(0) }, false).await.unwrap();
        assert_eq!(cache.stock("p").await.unwrap(), Some(4), "never raised while the sale may run");
        reconcile(&cache, &store, || async { Ok(0) }, true).await.unwrap();
        assert_eq!(cache.stock("p").await.unwrap(), Some(6), "exact once nothing is in flight");
    }
}
