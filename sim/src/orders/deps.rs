//! Simulated Redis, Kafka and PostgreSQL for the order system, each a madsim node, and the
//! client adapters the order roles use.
//!
//! Contracts (DESIGN 6): Redis runs the reservation as one atomic step and keeps everything in
//! memory, so a restart empties it; an optional maxmemory makes writes fail with OOM; its
//! latency can be raised. Kafka keeps a durable partitioned log and one consumer group whose
//! committed offsets survive; members that stop polling lose their partitions after the session
//! timeout and the new owner resumes from the committed offset; a produce whose answer does not
//! come back in time is ambiguous. PostgreSQL persists each order in one atomic step and
//! survives restarts.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use madsim::net::Endpoint;
use madsim::net::rpc::Request;
use madsim::time::Instant;
use models::orders::Order;
use serde::{Deserialize, Serialize};
use services::orders::mem::{CacheState, KeyState, LogState, OrderDb, wall_micros};
use services::ports::orders::{
    CacheError, Cancel, OrderConsumer, OrderProducer, OrderStore, OrderStoreError, Persisted, ProductRow, QueueError,
    QueuedOrder, Release, ReleaseLock, Reservation, StockCache,
};

use crate::trace;

pub const REDIS_ADDR: SocketAddr = SocketAddr::new(std::net::IpAddr::V4(std::net::Ipv4Addr::new(10, 1, 1, 1)), 6379);
pub const KAFKA_ADDR: SocketAddr = SocketAddr::new(std::net::IpAddr::V4(std::net::Ipv4Addr::new(10, 1, 2, 1)), 9092);
pub const ORDERS_DB_ADDR: SocketAddr =
    SocketAddr::new(std::net::IpAddr::V4(std::net::Ipv4Addr::new(10, 1, 3, 1)), 5432);
/// Client timeout of a Redis call (as the real adapter's).
pub const REDIS_TIMEOUT: Duration = Duration::from_millis(500);
/// Client timeout of a produce: past it the produce is ambiguous.
pub const PRODUCE_TIMEOUT: Duration = Duration::from_secs(1);
const _: () = assert!(PRODUCE_TIMEOUT.as_millis() <= services::ports::orders::PRODUCE_DEADLINE_MAX.as_millis());
/// Client timeout of other Kafka and PostgreSQL calls.
pub const CALL_TIMEOUT: Duration = Duration::from_secs(1);
/// A group member that has not polled for this long loses its partitions.
pub const SESSION_TIMEOUT: Duration = Duration::from_secs(3);
/// Partitions of the orders topic.
pub const PARTITIONS: usize = 3;
/// How often a waiting poll looks again.
pub const POLL_STEP: Duration = Duration::from_millis(10);

// ---------------------------------------------------------------- Redis

/// Settings of the Redis node that outlive its restarts (they are its configuration).
#[derive(Debug, Clone, Default)]
pub struct RedisKnobs {
    pub latency: Duration,
    /// Keys at most before writes fail with OOM.
    pub maxmemory_keys: Option<usize>,
}

/// The Redis node: knobs, and the memory of its current incarnation (replaced on restart, so
/// observers see what a fresh Redis holds).
#[derive(Clone, Default)]
pub struct RedisNode {
    pub knobs: Arc<Mutex<RedisKnobs>>,
    pub memory: Arc<Mutex<Arc<Mutex<CacheState>>>>,
}

impl RedisNode {
    /// A copy of what the running Redis holds.
    pub fn snapshot(&self) -> CacheState {
        self.memory.lock().expect("not poisoned").lock().expect("not poisoned").clone()
    }

    /// Overwrites a product's stock by hand (the mismatch scenario).
    pub fn force_stock(&self, product_id: &str, stock: i64) {
        self.memory
            .lock()
            .expect("not poisoned")
            .lock()
            .expect("not poisoned")
            .stock
            .insert(product_id.to_string(), stock);
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub enum RedisReq {
    SetStock(String, i64),
    ReinitStock(String, i64),
    Locks(String),
    Get(String),
    Reserve(String, String, u64),
    LockRelease(String, String, u64),
    RememberSoldOut(String),
    RememberOrdered(Vec<String>),
    ForgetStale(String, String, u64),
    FinishRelease {
        product: String,
        key: String,
        reservation: u64,
        cancelled: bool,
    },
    /// The separate steps of a non-atomic check (planted bug): decrement, remember the key.
    Decr(String),
    RememberKey(String, String, bool, u64),
    Grant(String),
    Take(String),
    Admit {
        user: String,
        limit: u32,
        window: Duration,
    },
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub enum RedisResp {
    Done,
    Stock(Option<i64>),
    Reservation(Reservation),
    Lock(ReleaseLock),
    Release(Release),
    Locks(Vec<(String, u64)>),
    Flag(bool),
}

impl Request for RedisReq {
    type Response = Result<RedisResp, CacheError>;
    const ID: u64 = 0x5ED1_5001;
}

/// Runs Redis until it is killed; a restart starts with empty memory.
pub async fn serve_redis(node: RedisNode) {
    let memory = Arc::new(Mutex::new(CacheState::default()));
    *node.memory.lock().expect("not poisoned") = memory.clone();
    let windows: Arc<Mutex<BTreeMap<String, (u32, Instant)>>> = Arc::default();
    let ep = Endpoint::bind(REDIS_ADDR).await.expect("bind redis");
    ep.add_rpc_handler(move |req: RedisReq| {
        let (memory, knobs, windows) = (memory.clone(), node.knobs.clone(), windows.clone());
        async move {
            let knobs = knobs.lock().expect("not poisoned").clone();
            if !knobs.latency.is_zero() {
                madsim::time::sleep(knobs.latency).await;
            }
            let mut m = memory.lock().expect("not poisoned");
            let writes = !matches!(req, RedisReq::Get(_) | RedisReq::Locks(_));
            if writes && knobs.maxmemory_keys.is_some_and(|max| m.size() >= max) {
                return Err(CacheError::OutOfMemory("OOM command not allowed when used memory > 'maxmemory'".into()));
            }
            let answer = match req {
                RedisReq::SetStock(p, q) => {
                    m.set_stock(&p, q, wall_micros());
                    RedisResp::Done
                }
                RedisReq::RememberSoldOut(k) => {
                    m.remember_sold_out(&k);
                    RedisResp::Done
                }
                RedisReq::RememberOrdered(keys) => {
                    for k in keys {
                        m.remember_ordered(&k);
                    }
                    RedisResp::Done
                }
                RedisReq::ForgetStale(p, k, r) => RedisResp::Flag(m.forget_stale(&p, &k, r)),
                RedisReq::ReinitStock(p, q) => {
                    m.reinit_stock(&p, q);
                    RedisResp::Done
                }
                RedisReq::Locks(p) => {
                    RedisResp::Locks(m.locks.get(&p).map(|l| l.iter().cloned().collect()).unwrap_or_default())
                }
                RedisReq::Get(p) => RedisResp::Stock(m.stock.get(&p).copied()),
                RedisReq::Reserve(p, k, a) => RedisResp::Reservation(m.reserve(&p, &k, a, wall_micros())),
                RedisReq::LockRelease(p, k, a) => RedisResp::Lock(m.lock_release(&p, &k, a)),
                RedisReq::FinishRelease { product, key, reservation, cancelled } => {
                    RedisResp::Release(m.finish_release(&product, &key, reservation, cancelled))
                }
                RedisReq::Decr(p) => {
                    let s = m.stock.entry(p).or_insert(0);
                    *s -= 1;
                    RedisResp::Stock(Some(*s))
                }
                RedisReq::RememberKey(p, k, reserved, a) => {
                    m.keys.insert(
                        k,
                        if reserved {
                            KeyState::Reserved { holder: a, reservation: a, product: p }
                        } else {
                            KeyState::SoldOut
                        },
                    );
                    RedisResp::Done
                }
                RedisReq::Grant(t) => {
                    m.admissions.insert(t, ());
                    RedisResp::Done
                }
                RedisReq::Take(t) => RedisResp::Flag(m.admissions.remove(&t).is_some()),
                RedisReq::Admit { user, limit, window } => {
                    let now = Instant::now();
                    let mut w = windows.lock().expect("not poisoned");
                    let entry = w.entry(user.clone()).or_insert((0, now));
                    if now.duration_since(entry.1) >= window {
                        *entry = (0, now);
                    }
                    entry.0 += 1;
                    m.rate.insert(user, entry.0);
                    RedisResp::Flag(entry.0 <= limit)
                }
            };
            Ok(answer)
        }
    });
    futures::future::pending::<()>().await;
}

/// The stock-cache adapter of an order role.
#[derive(Clone)]
pub struct SimStockCache {
    ep: Arc<Endpoint>,
}

impl SimStockCache {
    pub async fn connect() -> SimStockCache {
        SimStockCache { ep: Arc::new(Endpoint::bind("0.0.0.0:0").await.expect("bind client")) }
    }

    async fn call(&self, req: RedisReq) -> Result<RedisResp, CacheError> {
        match self.ep.call_timeout(REDIS_ADDR, req, REDIS_TIMEOUT).await {
            Ok(answer) => answer,
            Err(e) => Err(CacheError::Unavailable(format!("redis: {e}"))),
        }
    }
}

fn odd<T>(resp: RedisResp) -> Result<T, CacheError> {
    Err(CacheError::Unavailable(format!("unexpected answer {resp:?}")))
}

impl StockCache for SimStockCache {
    async fn set_stock(&self, product_id: &str, quantity: i64) -> Result<(), CacheError> {
        self.call(RedisReq::SetStock(product_id.into(), quantity)).await.map(|_| ())
    }

    async fn reinit_stock(&self, product_id: &str, quantity: i64) -> Result<(), CacheError> {
        self.call(RedisReq::ReinitStock(product_id.into(), quantity)).await.map(|_| ())
    }

    async fn locks(&self, product_id: &str) -> Result<Vec<(String, u64)>, CacheError> {
        match self.call(RedisReq::Locks(product_id.into())).await? {
            RedisResp::Locks(l) => Ok(l),
            other => odd(other),
        }
    }

    async fn stock(&self, product_id: &str) -> Result<Option<i64>, CacheError> {
        match self.call(RedisReq::Get(product_id.into())).await? {
            RedisResp::Stock(s) => Ok(s),
            other => odd(other),
        }
    }

    async fn reserve(&self, product_id: &str, key: &str, attempt: u64) -> Result<Reservation, CacheError> {
        if services::bugs::active(services::bugs::Bug::NonAtomicStockCheck) {
            // Planted bug: check, then act, in separate round trips.
            let stock = self.stock(product_id).await?;
            return match stock {
                None => Ok(Reservation::NoSale),
                Some(s) if s > 0 => {
                    self.call(RedisReq::Decr(product_id.into())).await?;
                    self.call(RedisReq::RememberKey(product_id.into(), key.into(), true, attempt)).await?;
                    Ok(Reservation::Reserved { reservation: attempt })
                }
                Some(_) => Ok(Reservation::SoldOut),
            };
        }
        match self.call(RedisReq::Reserve(product_id.into(), key.into(), attempt)).await? {
            RedisResp::Reservation(r) => Ok(r),
            other => odd(other),
        }
    }

    async fn remember_sold_out(&self, _product_id: &str, key: &str) -> Result<(), CacheError> {
        self.call(RedisReq::RememberSoldOut(key.into())).await.map(|_| ())
    }

    async fn remember_ordered(&self, _product_id: &str, keys: &[String]) -> Result<(), CacheError> {
        self.call(RedisReq::RememberOrdered(keys.to_vec())).await.map(|_| ())
    }

    async fn forget_stale(&self, product_id: &str, key: &str, reservation: u64) -> Result<bool, CacheError> {
        match self.call(RedisReq::ForgetStale(product_id.into(), key.into(), reservation)).await? {
            RedisResp::Flag(f) => Ok(f),
            other => odd(other),
        }
    }

    async fn lock_release(&self, product_id: &str, key: &str, attempt: u64) -> Result<ReleaseLock, CacheError> {
        match self.call(RedisReq::LockRelease(product_id.into(), key.into(), attempt)).await? {
            RedisResp::Lock(l) => Ok(l),
            other => odd(other),
        }
    }

    async fn finish_release(
        &self,
        product_id: &str,
        key: &str,
        reservation: u64,
        cancelled: bool,
    ) -> Result<Release, CacheError> {
        let req = RedisReq::FinishRelease { product: product_id.into(), key: key.into(), reservation, cancelled };
        match self.call(req).await? {
            RedisResp::Release(r) => Ok(r),
            other => odd(other),
        }
    }

    async fn grant_admission(&self, token: &str, _ttl: Duration) -> Result<(), CacheError> {
        self.call(RedisReq::Grant(token.into())).await.map(|_| ())
    }

    async fn take_admission(&self, token: &str) -> Result<bool, CacheError> {
        match self.call(RedisReq::Take(token.into())).await? {
            RedisResp::Flag(f) => Ok(f),
            other => odd(other),
        }
    }

    async fn admit(&self, user_id: &str, limit: u32, window: Duration) -> Result<bool, CacheError> {
        match self.call(RedisReq::Admit { user: user_id.into(), limit, window }).await? {
            RedisResp::Flag(f) => Ok(f),
            other => odd(other),
        }
    }
}

// ---------------------------------------------------------------- Kafka

/// The broker's disk: the log with the group's committed offsets, and the group's members.
#[derive(Debug)]
pub struct KafkaState {
    pub log: LogState,
    /// member -> last poll.
    members: BTreeMap<u64, Instant>,
    /// (member, partition) -> next offset to hand out.
    positions: BTreeMap<(u64, i32), i64>,
    /// partition -> owner.
    owners: BTreeMap<i32, u64>,
    pub rebalances: u64,
}

impl Default for KafkaState {
    fn default() -> Self {
        KafkaState {
            log: LogState::new(PARTITIONS),
            members: BTreeMap::new(),
            positions: BTreeMap::new(),
            owners: BTreeMap::new(),
            rebalances: 0,
        }
    }
}

impl KafkaState {
    /// Drops silent members and spreads the partitions over the live ones, round robin by id.
    fn rebalance(&mut self, now: Instant) {
        let before: Vec<u64> = self.members.keys().copied().collect();
        self.members.retain(|_, seen| now.duration_since(*seen) < SESSION_TIMEOUT);
        let live: Vec<u64> = self.members.keys().copied().collect();
        let owners_ok = (0..PARTITIONS as i32).all(|p| self.owners.get(&p).is_some_and(|o| live.contains(o)));
        if live == before && owners_ok {
            return;
        }
        self.rebalances += 1;
        self.owners.clear();
        self.positions.clear();
        for p in 0..PARTITIONS as i32 {
            if !live.is_empty() {
                self.owners.insert(p, live[p as usize % live.len()]);
            }
        }
        trace::record("kafka", &format!("rebalance: members {live:?}"));
    }

    fn poll(&mut self, member: u64, max: usize, now: Instant) -> Vec<QueuedOrder> {
        let new = !self.members.contains_key(&member);
        self.members.insert(member, now);
        if new {
            self.owners.clear();
        }
        self.rebalance(now);
        let mut out = Vec::new();
        for p in 0..PARTITIONS as i32 {
            if self.owners.get(&p) != Some(&member) {
                continue;
            }
            let committed = self.log.committed.get(&p).copied().unwrap_or(0);
            let start = *self.positions.entry((member, p)).or_insert(committed);
            let messages = &self.log.partitions[p as usize];
            let mut next = start;
            for (offset, order) in messages.iter().enumerate().skip(start as usize) {
                if out.len() >= max {
                    break;
                }
                out.push(QueuedOrder { partition: p, offset: offset as i64, order: order.clone() });
                next = offset as i64 + 1;
            }
            self.positions.insert((member, p), next);
        }
        out
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub enum KafkaReq {
    Produce(Box<Order>),
    Poll { member: u64, max: usize, wait: Duration },
    Commit { member: u64, offsets: Vec<(i32, i64)> },
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub enum KafkaResp {
    Produced(i32, i64),
    Messages(Vec<QueuedOrder>),
    Done,
}

impl Request for KafkaReq {
    type Response = Result<KafkaResp, QueueError>;
    const ID: u64 = 0x4B41_0001;
}

/// Runs the broker until it is killed; `state` is its disk.
pub async fn serve_kafka(state: Arc<Mutex<KafkaState>>) {
    let ep = Endpoint::bind(KAFKA_ADDR).await.expect("bind kafka");
    ep.add_rpc_handler(move |req: KafkaReq| {
        let state = state.clone();
        async move {
            match req {
                KafkaReq::Produce(order) => {
                    let (p, o, produced) = {
                        let mut s = state.lock().expect("not poisoned");
                        let (p, o) = s.log.append(*order.clone());
                        (p, o, s.log.partitions.iter().map(|m| m.len() as i64).sum::<i64>())
                    };
                    trace::record("kafka", &format!("produce {} -> {p}/{o}", order.order_id));
                    trace::gauge("produced", produced);
                    Ok(KafkaResp::Produced(p, o))
                }
                KafkaReq::Poll { member, max, wait } => {
                    let deadline = Instant::now() + wait;
                    loop {
                        let batch = state.lock().expect("not poisoned").poll(member, max, Instant::now());
                        if !batch.is_empty() || Instant::now() >= deadline {
                            return Ok(KafkaResp::Messages(batch));
                        }
                        madsim::time::sleep(POLL_STEP).await;
                    }
                }
                KafkaReq::Commit { member, offsets } => {
                    let mut s = state.lock().expect("not poisoned");
                    for (p, next) in offsets {
                        // A member that lost the partition may not commit it (Kafka's generation check).
                        if s.owners.get(&p) == Some(&member) {
                            let c = s.log.committed.entry(p).or_insert(0);
                            *c = (*c).max(next);
                        } else {
                            trace::gauge("committed", s.log.committed.values().sum());
                            return Err(QueueError::Unavailable("commit refused: partition reassigned".into()));
                        }
                    }
                    trace::gauge("committed", s.log.committed.values().sum());
                    Ok(KafkaResp::Done)
                }
            }
        }
    });
    futures::future::pending::<()>().await;
}

/// The producer and consumer adapters of an order role.
#[derive(Clone)]
pub struct SimKafka {
    ep: Arc<Endpoint>,
    member: u64,
}

impl SimKafka {
    pub async fn connect() -> SimKafka {
        use madsim::rand::Rng;
        let member = madsim::rand::thread_rng().r#gen::<u64>();
        SimKafka { ep: Arc::new(Endpoint::bind("0.0.0.0:0").await.expect("bind client")), member }
    }

    async fn call(&self, req: KafkaReq, timeout: Duration, write: bool) -> Result<KafkaResp, QueueError> {
        match self.ep.call_timeout(KAFKA_ADDR, req, timeout).await {
            Ok(answer) => answer,
            Err(e) if write => Err(QueueError::Ambiguous(format!("kafka: {e}"))),
            Err(e) => Err(QueueError::Unavailable(format!("kafka: {e}"))),
        }
    }
}

impl OrderProducer for SimKafka {
    async fn produce(&self, order: &Order) -> Result<(), QueueError> {
        self.call(KafkaReq::Produce(Box::new(order.clone())), PRODUCE_TIMEOUT, true).await.map(|_| ())
    }
}

impl OrderConsumer for SimKafka {
    async fn poll(&mut self, max: usize, wait: Duration) -> Result<Vec<QueuedOrder>, QueueError> {
        match self.call(KafkaReq::Poll { member: self.member, max, wait }, wait + CALL_TIMEOUT, false).await? {
            KafkaResp::Messages(m) => Ok(m),
            other => Err(QueueError::Malformed(format!("unexpected answer {other:?}"))),
        }
    }

    async fn commit(&mut self, done: &[QueuedOrder]) -> Result<(), QueueError> {
        let mut next: BTreeMap<i32, i64> = BTreeMap::new();
        for m in done {
            let e = next.entry(m.partition).or_insert(0);
            *e = (*e).max(m.offset + 1);
        }
        let offsets = next.into_iter().collect();
        self.call(KafkaReq::Commit { member: self.member, offsets }, CALL_TIMEOUT, false).await.map(|_| ())
    }
}

// ---------------------------------------------------------------- PostgreSQL

#[derive(Debug, Clone, Serialize, Deserialize)]
pub enum DbReq {
    Init(String, i64),
    Persist(Box<Order>),
    Cancel(Box<Order>),
    Product(String),
    Products,
    Orders(String),
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub enum DbResp {
    Done,
    Persisted(Persisted),
    Cancel(Cancel),
    Rows(Vec<ProductRow>),
    Orders(Vec<Order>),
}

impl Request for DbReq {
    type Response = Result<DbResp, OrderStoreError>;
    const ID: u64 = 0x0DB0_0001;
}

/// Runs the orders' PostgreSQL until it is killed; `db` is its disk.
pub async fn serve_db(db: Arc<Mutex<OrderDb>>) {
    let ep = Endpoint::bind(ORDERS_DB_ADDR).await.expect("bind orders db");
    ep.add_rpc_handler(move |req: DbReq| {
        let db = db.clone();
        async move {
            let mut d = db.lock().expect("not poisoned");
            Ok(match req {
                DbReq::Init(p, q) => {
                    d.products.insert(p, (q, q));
                    DbResp::Done
                }
                DbReq::Persist(order) => {
                    let persisted = if services::bugs::active(services::bugs::Bug::NonIdempotentInsert) {
                        d.persist_without_unique_keys(&order)
                    } else {
                        d.persist(&order)
                    };
                    trace::record("orders-db", &format!("persist {} -> {persisted:?}", order.order_id));
                    DbResp::Persisted(persisted)
                }
                DbReq::Cancel(order) => {
                    let cancel = d.cancel(&order);
                    trace::record(
                        "orders-db",
                        &format!("cancel {} #{:x} -> {cancel:?}", order.order_id, order.reservation),
                    );
                    DbResp::Cancel(cancel)
                }
                DbReq::Product(p) => DbResp::Rows(d.row(&p).into_iter().collect()),
                DbReq::Products => DbResp::Rows(d.products.keys().filter_map(|p| d.row(p)).collect()),
                DbReq::Orders(p) => DbResp::Orders(d.orders.values().filter(|o| o.product_id == p).cloned().collect()),
            })
        }
    });
    futures::future::pending::<()>().await;
}

/// The order-store adapter of an order role.
#[derive(Clone)]
pub struct SimOrderStore {
    ep: Arc<Endpoint>,
}

impl SimOrderStore {
    pub async fn connect() -> SimOrderStore {
        SimOrderStore { ep: Arc::new(Endpoint::bind("0.0.0.0:0").await.expect("bind client")) }
    }

    async fn call(&self, req: DbReq) -> Result<DbResp, OrderStoreError> {
        match self.ep.call_timeout(ORDERS_DB_ADDR, req, CALL_TIMEOUT).await {
            Ok(answer) => answer,
            Err(e) => Err(OrderStoreError::Unavailable(format!("postgres: {e}"))),
        }
    }
}

fn odd_db<T>(resp: DbResp) -> Result<T, OrderStoreError> {
    Err(OrderStoreError::Unavailable(format!("unexpected answer {resp:?}")))
}

impl OrderStore for SimOrderStore {
    async fn init_sale(&self, product_id: &str, quantity: i64) -> Result<(), OrderStoreError> {
        self.call(DbReq::Init(product_id.into(), quantity)).await.map(|_| ())
    }

    async fn persist(&self, order: &Order) -> Result<Persisted, OrderStoreError> {
        match self.call(DbReq::Persist(Box::new(order.clone()))).await? {
            DbResp::Persisted(p) => Ok(p),
            other => odd_db(other),
        }
    }

    async fn cancel(&self, order: &Order) -> Result<Cancel, OrderStoreError> {
        match self.call(DbReq::Cancel(Box::new(order.clone()))).await? {
            DbResp::Cancel(c) => Ok(c),
            other => odd_db(other),
        }
    }

    async fn product(&self, product_id: &str) -> Result<Option<ProductRow>, OrderStoreError> {
        match self.call(DbReq::Product(product_id.into())).await? {
            DbResp::Rows(mut rows) => Ok(rows.pop()),
            other => odd_db(other),
        }
    }

    async fn products(&self) -> Result<Vec<ProductRow>, OrderStoreError> {
        match self.call(DbReq::Products).await? {
            DbResp::Rows(rows) => Ok(rows),
            other => odd_db(other),
        }
    }

    async fn orders(&self, product_id: &str) -> Result<Vec<Order>, OrderStoreError> {
        match self.call(DbReq::Orders(product_id.into())).await? {
            DbResp::Orders(orders) => Ok(orders),
            other => odd_db(other),
        }
    }
}
