//! The order system in the simulator: its roles as nodes running the real build's code
//! (`services::orders`), flash-sale clients, the spec's scenarios and the order invariants.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use madsim::net::Endpoint;
use madsim::runtime::Handle;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde_json::json;
use services::bugs::Bug;
use services::orders::api::OrderApi;
use services::orders::mem::OrderDb;
use services::orders::reconcile::reconcile;
use services::orders::waiting_room::WaitingRoom;
use services::orders::worker;

use super::deps::{self, KafkaState, RedisNode, SimKafka, SimOrderStore, SimStockCache};
pub use super::invariants::{
    acknowledged_persisted, cache_matches_db, definite_failure_no_effect, no_leaked_stock, no_oversell,
    one_order_per_key, stock_of,
};
use super::workload::{
    self, ORDER_ATTEMPTS_MAX, ORDER_RETRY_PAUSE, ORDER_TIMEOUT, OrderAttempts, OrderStep, PRODUCT, ROOM_POLLS_MAX,
};
use crate::faults::{FaultPlan, FaultRecord, Injector, Targets};
use crate::history::{EventKind, History, HistoryEvent};
use crate::http::{HttpReq, HttpResp};
use crate::mid_request::{MID_REQUEST_ARM_MAX, MID_REQUEST_POLL, MidRequestKill, traced};
use crate::trace::{self, BuildTracked};
use crate::verdict::{
    AnswerBounds, CALM_OP_MAX, CALM_SETTLE, OpRecord, Violation, fault_free_answers, fault_free_windows,
};

/// Longest the heal-and-quiesce phase waits for the worker's lag to drain.
pub const DRAIN_MAX: Duration = Duration::from_secs(60);
/// After the last client's answer, how long a request it gave up on may still run in an API
/// handler: a produce (1 s), a cancellation and a release (1 s and 0.5 s), with room to spare.
pub const STRAGGLERS_MAX: Duration = Duration::from_secs(5);
/// Orders per user per second in the simulated API: low, so that users placing two orders at
/// once meet the rate limit.
pub const SIM_RATE_LIMIT: u32 = 1;
/// Orders in flight per simulated API instance before the waiting room: low, so that bursts
/// meet it.
pub const SIM_IN_FLIGHT_MAX: usize = 3;

/// Every HTTP status the clients saw, over all attempts.
pub type Answers = Arc<Mutex<BTreeMap<u16, u64>>>;

pub fn api_addr(index: usize) -> SocketAddr {
    SocketAddr::from(([10, 1, 4, index as u8 + 1], 3000))
}

pub fn room_addr() -> SocketAddr {
    SocketAddr::from(([10, 1, 4, 100], 3001))
}

/// A named scenario of the order system.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum OrdersScenario {
    FlashSale,
    WorkerCrash,
    RedisLatency(u64),
    KafkaDown,
    PostgresDown,
    ApiKilled,
    RedisRestart,
    RedisOom,
    KafkaLag,
    RedisPgMismatch,
}

impl OrdersScenario {
    pub const ALL: [OrdersScenario; 13] = [
        OrdersScenario::FlashSale,
        OrdersScenario::WorkerCrash,
        OrdersScenario::RedisLatency(0),
        OrdersScenario::RedisLatency(50),
        OrdersScenario::RedisLatency(100),
        OrdersScenario::RedisLatency(500),
        OrdersScenario::KafkaDown,
        OrdersScenario::PostgresDown,
        OrdersScenario::ApiKilled,
        OrdersScenario::RedisRestart,
        OrdersScenario::RedisOom,
        OrdersScenario::KafkaLag,
        OrdersScenario::RedisPgMismatch,
    ];

    pub fn name(self) -> &'static str {
        match self {
            OrdersScenario::FlashSale => "flash-sale",
            OrdersScenario::WorkerCrash => "worker-crash",
            OrdersScenario::RedisLatency(0) => "redis-latency-0",
            OrdersScenario::RedisLatency(50) => "redis-latency-50",
            OrdersScenario::RedisLatency(100) => "redis-latency-100",
            OrdersScenario::RedisLatency(_) => "redis-latency-500",
            OrdersScenario::KafkaDown => "kafka-down",
            OrdersScenario::PostgresDown => "postgres-down",
            OrdersScenario::ApiKilled => "api-killed",
            OrdersScenario::RedisRestart => "redis-restart",
            OrdersScenario::RedisOom => "redis-oom",
            OrdersScenario::KafkaLag => "kafka-lag",
            OrdersScenario::RedisPgMismatch => "redis-pg-mismatch",
        }
    }

    pub fn about(self) -> &'static str {
        match self {
            OrdersScenario::FlashSale => "a flash sale under swarm faults",
            OrdersScenario::WorkerCrash => "the worker crashes mid-stream: nothing lost, nothing duplicated",
            OrdersScenario::RedisLatency(_) => "Redis answers slowly (spec 003 test 2)",
            OrdersScenario::KafkaDown => "the broker is down: orders answer 503 and no stock leaks",
            OrdersScenario::PostgresDown => "PostgreSQL is down: orders are accepted and persisted after",
            OrdersScenario::ApiKilled => "an API instance is killed mid-sale: clients fail over",
            OrdersScenario::RedisRestart => "Redis restarts empty: reconcile re-initialises it, no oversell",
            OrdersScenario::RedisOom => "Redis reaches maxmemory: writes fail, nothing oversold",
            OrdersScenario::KafkaLag => "the worker falls far behind, then drains the lag",
            OrdersScenario::RedisPgMismatch => "Redis and PostgreSQL disagree; reconcile realigns them",
        }
    }

    /// The answers allowed in this scenario's fault-free windows (before the first fault the
    /// injector records, after the heal): none for the scenarios whose fault is a knob set
    /// from the start (Redis latency or memory, a drifted stock, a forced sold-out), which have
    /// no fault-free window the injector knows of. Users placing two orders at once meet the
    /// rate limit, and bursts the waiting room: those are the domain's answers, not errors.
    pub fn answer_bounds(self) -> Option<AnswerBounds> {
        match self {
            OrdersScenario::RedisLatency(_)
            | OrdersScenario::RedisOom
            | OrdersScenario::RedisPgMismatch
            | OrdersScenario::ApiKilled => None,
            _ => Some(AnswerBounds { conflict_percent_max: 0, error_percent_max: 2 }),
        }
    }

    pub fn default_seeds(self) -> u64 {
        match self {
            // 80: persisted-before-cancel (a failed produce whose order the worker had already
            // persisted) is reached by 1 seed in 20 or so.
            OrdersScenario::FlashSale => 80,
            _ => 8,
        }
    }

    /// The scenario whose sweep exposes an order bug.
    pub fn exposing(bug: Bug) -> Option<OrdersScenario> {
        Some(match bug {
            Bug::NonAtomicStockCheck => OrdersScenario::FlashSale,
            Bug::OffsetBeforePersist | Bug::NonIdempotentInsert => OrdersScenario::WorkerCrash,
            Bug::NoCompensation => OrdersScenario::KafkaDown,
            Bug::MisclassifiedRefusal => OrdersScenario::FlashSale,
            Bug::NoReinitAfterRedisRestart => OrdersScenario::RedisRestart,
            _ => return None,
        })
    }
}

/// What an order run hands back.
pub struct OrdersRun {
    pub history: Vec<HistoryEvent>,
    pub ops: Vec<OpRecord>,
    pub faults: Vec<FaultRecord>,
    pub violations: Vec<Violation>,
    pub events: usize,
}

struct World {
    redis: RedisNode,
    kafka: Arc<Mutex<KafkaState>>,
    db: Arc<Mutex<OrderDb>>,
    nodes: BTreeMap<String, madsim::task::NodeId>,
    /// `api-killed`: the armed API node holds its next accepted order's answer until the kill.
    mid_request_kill: Arc<Mutex<MidRequestKill>>,
}

fn build(handle: &Handle) -> World {
    let redis = RedisNode::default();
    let kafka: Arc<Mutex<KafkaState>> = Arc::default();
    let db: Arc<Mutex<OrderDb>> = Arc::default();
    let mut nodes = BTreeMap::new();
    let r = redis.clone();
    let id = handle
        .create_node()
        .name("redis")
        .ip(deps::REDIS_ADDR.ip())
        .init(move || deps::serve_redis(r.clone()))
        .build_tracked();
    nodes.insert("redis".to_string(), id.id());
    let k = kafka.clone();
    let id = handle
        .create_node()
        .name("kafka")
        .ip(deps::KAFKA_ADDR.ip())
        .init(move || deps::serve_kafka(k.clone()))
        .build_tracked();
    nodes.insert("kafka".to_string(), id.id());
    let d = db.clone();
    let id = handle
        .create_node()
        .name("orders-db")
        .ip(deps::ORDERS_DB_ADDR.ip())
        .init(move || deps::serve_db(d.clone()))
        .build_tracked();
    nodes.insert("orders-db".to_string(), id.id());
    let mid_request_kill: Arc<Mutex<MidRequestKill>> = Arc::default();
    for index in 0..2 {
        let name = format!("api-{}", index + 1);
        let kill = mid_request_kill.clone();
        let id = handle
            .create_node()
            .name(name.clone())
            .ip(api_addr(index).ip())
            .init(move || serve_api(index, kill.clone()))
            .build_tracked();
        nodes.insert(name, id.id());
    }
    let id = handle.create_node().name("worker").ip([10, 1, 5, 1].into()).init(run_worker).build_tracked();
    nodes.insert("worker".to_string(), id.id());
    let id = handle.create_node().name("waiting-room").ip(room_addr().ip()).init(serve_room).build_tracked();
    nodes.insert("waiting-room".to_string(), id.id());
    World { redis, kafka, db, nodes, mid_request_kill }
}

/// `api-killed`: when api-1's kill is armed (its next accepted order is never answered).
pub const API_KILL_ARMED_AFTER: Duration = Duration::from_millis(500);

async fn serve_api(index: usize, kill: Arc<Mutex<MidRequestKill>>) {
    let mut api = OrderApi::new(
        SimStockCache::connect().await,
        SimKafka::connect().await,
        SimOrderStore::connect().await,
        format!("http://{}", room_addr()),
    );
    api.rate_limit = SIM_RATE_LIMIT;
    api.in_flight_max = SIM_IN_FLIGHT_MAX;
    let api = Arc::new(api);
    let name = format!("api-{}", index + 1);
    let ep = Endpoint::bind(api_addr(index)).await.expect("bind api");
    ep.add_rpc_handler(move |req: HttpReq| {
        let (api, name, kill) = (api.clone(), name.clone(), kill.clone());
        async move {
            let reply = match (req.method.as_str(), req.path.as_str()) {
                ("POST", "/init") => api.init(&req.body).await,
                ("POST", "/order") => {
                    let admission = req.query.as_deref().map(str::as_bytes);
                    api.order(req.idempotency_key.as_deref().map(str::as_bytes), admission, &req.body).await.reply
                }
                _ => services::reply::Reply::error(404, "not_found", None, "no such route"),
            };
            // Reserved and queued, and the process dies before the answer leaves it.
            if req.path == "/order" && reply.status == 200 && MidRequestKill::hold(&kill, &name, &req, "accepted") {
                futures::future::pending::<()>().await;
            }
            traced(&name, &req, reply)
        }
    });
    futures::future::pending::<()>().await;
}

async fn run_worker() {
    let store = SimOrderStore::connect().await;
    loop {
        let mut consumer = SimKafka::connect().await;
        loop {
            match worker::work_once(&mut consumer, &store).await {
                Ok(stats) if stats.inserted + stats.duplicates + stats.sold_out + stats.cancelled > 0 => {
                    trace::record("worker", &format!("{stats:?}"));
                }
                Ok(_) => {}
                Err(e) => {
                    trace::record("worker", &format!("round failed: {e}; rejoining"));
                    break;
                }
            }
        }
        madsim::time::sleep(Duration::from_millis(500)).await;
    }
}

async fn serve_room() {
    let room = Arc::new(WaitingRoom::default());
    let cache = Arc::new(SimStockCache::connect().await);
    let ep = Endpoint::bind(room_addr()).await.expect("bind waiting room");
    ep.add_rpc_handler(move |req: HttpReq| {
        let (room, cache) = (room.clone(), cache.clone());
        async move {
            let reply = match req.path.strip_prefix("/status/") {
                Some(ticket) => room.status(cache.as_ref(), ticket).await,
                None => {
                    let query = req.query.clone().unwrap_or_default();
                    let param = |name: &str| {
                        query.split('&').filter_map(|p| p.split_once('=')).find(|(k, _)| *k == name).map(|(_, v)| v)
                    };
                    room.join(param("userId").unwrap_or(""), param("productId").unwrap_or(""))
                }
            };
            HttpResp::from(reply)
        }
    });
    futures::future::pending::<()>().await;
}

/// One user's order to its final answer; returns (outcome label, error or order id).
async fn place_order(ep: &Endpoint, user: &str, key: &str, first_api: usize, answers: &Answers) -> (EventKind, String) {
    let mut attempts = OrderAttempts::default();
    let mut admission: Option<String> = None;
    let mut refused = false;
    for attempt in 0..ORDER_ATTEMPTS_MAX {
        if attempt > 0 {
            madsim::time::sleep(ORDER_RETRY_PAUSE).await;
        }
        let req = workload::order_request(PRODUCT, user, key, admission.take());
        let addr = api_addr((first_api + attempt as usize) % 2);
        let answer = match ep.call_timeout(addr, req, ORDER_TIMEOUT).await {
            Ok(answer) => answer,
            Err(_) => {
                attempts.timed_out();
                continue;
            }
        };
        *answers.lock().expect("not poisoned").entry(answer.status).or_default() += 1;
        refused |= answer.status == 503 && answer.body["error"] == "queue_unavailable";
        match attempts.answered(answer.status, &answer.body) {
            OrderStep::Done(kind, detail) => {
                if kind == EventKind::Ok && refused {
                    crate::verdict::reached("order-accepted-after-refusal");
                }
                return (kind, detail);
            }
            OrderStep::Retry => {}
            OrderStep::RetryAfter(pause) => madsim::time::sleep(pause).await,
            OrderStep::WaitingRoom => admission = wait_in_room(ep, user).await,
        }
    }
    attempts.finish()
}

async fn wait_in_room(ep: &Endpoint, user: &str) -> Option<String> {
    let joined = ep.call_timeout(room_addr(), workload::room_join_request(PRODUCT, user), ORDER_TIMEOUT).await.ok()?;
    let ticket = joined.body["ticket"].as_u64()?;
    for _ in 0..ROOM_POLLS_MAX {
        let answer = ep.call_timeout(room_addr(), workload::room_status_request(ticket), ORDER_TIMEOUT).await.ok()?;
        if let Some(token) = answer.body["admissionToken"].as_str() {
            return Some(token.to_string());
        }
        madsim::time::sleep(workload::room_poll_pause(&answer.body)).await;
    }
    None
}

struct Ctx {
    seed: u64,
    rng: ChaCha8Rng,
    world: World,
    history: History,
    ops: Arc<Mutex<Vec<OpRecord>>>,
    injector: Injector,
    clients: usize,
    expectations: Vec<Violation>,
    redis_restarted: bool,
    answers: Answers,
}

impl Ctx {
    fn expect(&mut self, holds: bool, message: impl Into<String>) {
        if !holds {
            self.expectations.push(Violation::new("scenario-expectation", message));
        }
    }
}

/// Starts the sale (through the API, retried until it answers).
async fn init_sale(ctx: &mut Ctx, stock: u64) {
    ctx.clients += 1;
    let node = Handle::current().create_node().name("setup").ip([10, 1, 9, 250].into()).build_tracked();
    node.spawn(async move {
        let ep = Endpoint::bind("0.0.0.0:0").await.expect("bind");
        for attempt in 0..20 {
            let req = workload::init_request(PRODUCT, stock);
            if let Ok(answer) = ep.call_timeout(api_addr(attempt % 2), req, ORDER_TIMEOUT).await
                && answer.status == 200
            {
                return;
            }
            madsim::time::sleep(Duration::from_millis(200)).await;
        }
        panic!("the sale could not be started");
    })
    .await
    .expect("setup finished");
}

/// Runs `users` users over `clients` client nodes; returns when all answered.
async fn run_clients(ctx: &mut Ctx, users: usize, clients: usize, spread: Duration) {
    let limits = crate::limits::get();
    let (users, clients) = (limits.ops(users), limits.clients(clients));
    crate::limits::report(clients, users);
    let mut handles = Vec::new();
    for c in 0..clients {
        let node = Handle::current()
            .create_node()
            .name(format!("client-{}", c + 1))
            .ip([10, 1, 9, c as u8 + 1].into())
            .build_tracked();
        let (history, ops, seed, answers) = (ctx.history.clone(), ctx.ops.clone(), ctx.seed, ctx.answers.clone());
        handles.push(node.spawn(async move {
            let ep = Endpoint::bind("0.0.0.0:0").await.expect("bind client");
            let mut rng = workload::client_rng(seed, c);
            let mut process = c as u64;
            for slot in workload::slots(c, clients, users) {
                madsim::time::sleep(workload::arrival_pause(&mut rng, spread, users, clients)).await;
                let (user_id, key) = workload::slot_user_and_key(slot);
                let mut invoke = HistoryEvent::new(process, EventKind::Invoke, "order", trace::now_nanos());
                invoke.key = Some(PRODUCT.into());
                invoke.value = Some(json!(user_id));
                history.record(invoke);
                let (kind, detail) = place_order(&ep, &user_id, &key, rng.gen_range(0..2), &answers).await;
                let mut done = HistoryEvent::new(process, kind, "order", trace::now_nanos());
                done.key = Some(PRODUCT.into());
                match kind {
                    EventKind::Ok => done.value = Some(json!(detail)),
                    _ => done.error = Some(detail.clone()),
                }
                trace::record(&format!("client-{}", c + 1), &format!("{key} -> {kind} {detail}"));
                history.record(done);
                ops.lock().expect("not poisoned").push(OpRecord {
                    key,
                    f: "order".into(),
                    outcome: kind.name().into(),
                });
                if kind == EventKind::Info {
                    process += clients as u64;
                }
            }
        }));
    }
    if madsim::time::timeout(Duration::from_secs(600), futures::future::join_all(handles)).await.is_err() {
        ctx.expectations.push(Violation::new("liveness", "clients did not finish"));
    }
}

/// Waits until the worker consumed everything (bounded).
async fn drain(ctx: &Ctx) -> bool {
    let deadline = madsim::time::Instant::now() + DRAIN_MAX;
    loop {
        if ctx.world.kafka.lock().expect("not poisoned").log.lag() == 0 {
            return true;
        }
        if madsim::time::Instant::now() >= deadline {
            return false;
        }
        madsim::time::sleep(Duration::from_millis(250)).await;
    }
}

/// Runs reconciliation from a node of its own, as the `orders reconcile` job.
async fn run_reconcile(ctx: &Ctx) -> Option<services::orders::reconcile::ReconcileReport> {
    let kafka = ctx.world.kafka.clone();
    let node = Handle::current().create_node().ip([10, 1, 9, 251].into()).build_tracked();
    node.spawn(async move {
        let cache = SimStockCache::connect().await;
        let store = SimOrderStore::connect().await;
        let lag = || {
            let lag = kafka.lock().expect("not poisoned").log.lag();
            async move { Ok(lag) }
        };
        // After heal, drain and with every client done: the sale is quiet.
        reconcile(&cache, &store, lag, true).await.ok()
    })
    .await
    .ok()
    .flatten()
}

/// Runs one order scenario to its end state and checks every invariant.
pub async fn run(scenario: OrdersScenario, seed: u64) -> OrdersRun {
    let world = build(&Handle::current());
    let targets = Targets { nodes: world.nodes.iter().map(|(n, id)| (n.clone(), *id)).collect() };
    let mut ctx = Ctx {
        seed,
        rng: ChaCha8Rng::seed_from_u64(seed),
        world,
        history: History::new(),
        ops: Arc::default(),
        injector: Injector::new(targets),
        clients: 0,
        expectations: Vec::new(),
        redis_restarted: false,
        answers: Answers::default(),
    };
    madsim::time::sleep(Duration::from_millis(200)).await;
    let (stock, users) = workload::draw_sale(&mut ctx.rng);
    init_sale(&mut ctx, stock).await;
    let spread = workload::SALE_SPREAD;
    match scenario {
        OrdersScenario::FlashSale => {
            let crashable: Vec<String> = ctx.world.nodes.keys().cloned().collect();
            let plan = FaultPlan::draw(&mut ctx.rng, crashable);
            trace::record("faults", &format!("plan {}", plan.describe()));
            let injector = ctx.injector.clone();
            let mut fault_rng = ChaCha8Rng::seed_from_u64(seed ^ 0xFA17);
            let faults =
                madsim::task::spawn(
                    async move { injector.run_swarm(&plan, &mut fault_rng, Duration::from_secs(12)).await },
                );
            run_clients(&mut ctx, users, 10, spread).await;
            let _ = faults.await;
            // Redis restarts empty: only a run where it did is spared the leaked-stock check.
            ctx.redis_restarted = ctx
                .injector
                .records()
                .iter()
                .any(|r| r.kind == crate::faults::FaultKind::Crash && r.targets.iter().any(|t| t == "redis"));
        }
        OrdersScenario::WorkerCrash | OrdersScenario::KafkaLag => {
            let injector = ctx.injector.clone();
            let (first, down) = if scenario == OrdersScenario::KafkaLag {
                (Duration::from_secs(1), Duration::from_secs(12))
            } else {
                (
                    Duration::from_millis(ctx.rng.gen_range(500..3000)),
                    Duration::from_millis(ctx.rng.gen_range(500..3000)),
                )
            };
            let repeats = if scenario == OrdersScenario::KafkaLag { 1 } else { 3 };
            let chaos = madsim::task::spawn(async move {
                for _ in 0..repeats {
                    madsim::time::sleep(first).await;
                    injector.crash("worker");
                    madsim::time::sleep(down).await;
                    injector.restart("worker");
                }
            });
            run_clients(&mut ctx, users, 8, spread).await;
            let _ = chaos.await;
            if scenario == OrdersScenario::KafkaLag {
                let lag_seen = ctx.world.kafka.lock().expect("not poisoned").log.lag();
                trace::record("checker", &format!("lag after the sale: {lag_seen}"));
                ctx.expect(lag_seen > 0, "the worker never fell behind");
            }
        }
        OrdersScenario::RedisLatency(ms) => {
            ctx.world.redis.knobs.lock().expect("not poisoned").latency = Duration::from_millis(ms);
            run_clients(&mut ctx, users, 8, spread).await;
            ctx.world.redis.knobs.lock().expect("not poisoned").latency = Duration::ZERO;
            let history = ctx.history.events();
            let done: Vec<&HistoryEvent> = history.iter().filter(|e| e.kind != EventKind::Invoke).collect();
            let errors = done
                .iter()
                .filter(|e| {
                    e.kind == EventKind::Info
                        || e.error.as_deref().is_some_and(|e| e != "sold_out" && e != "rate_limited")
                })
                .count();
            if ms <= 100 {
                ctx.expect(
                    errors == 0,
                    format!("{errors} of {} orders failed with {ms} ms of Redis latency", done.len()),
                );
            } else {
                ctx.expect(
                    errors * 2 > done.len(),
                    format!("only {errors} of {} orders failed with {ms} ms of Redis latency", done.len()),
                );
            }
        }
        OrdersScenario::KafkaDown => {
            let chaos = ctx.injector.outage("kafka", Duration::from_secs(2), Duration::from_secs(5));
            run_clients(&mut ctx, users, 8, spread).await;
            let _ = chaos.await;
            let unavailable = ctx.answers.lock().expect("not poisoned").get(&503).copied().unwrap_or(0);
            ctx.expect(unavailable > 0, "no order was answered 503 while the broker was down");
        }
        OrdersScenario::PostgresDown => {
            let chaos = ctx.injector.outage("orders-db", Duration::from_secs(2), Duration::from_secs(5));
            run_clients(&mut ctx, users, 8, spread).await;
            let _ = chaos.await;
            let history = ctx.history.events();
            let failed = history.iter().filter(|e| e.error.as_deref() == Some("store_unavailable")).count();
            ctx.expect(failed == 0, format!("{failed} orders refused while only PostgreSQL was down"));
        }
        OrdersScenario::ApiKilled => {
            // Early in the sale (stock left for the orders after it), api-1 is killed exactly
            // between accepting an order (reserved in Redis, produced to Kafka) and answering it.
            let (injector, kill) = (ctx.injector.clone(), ctx.world.mid_request_kill.clone());
            let chaos = madsim::task::spawn(async move {
                madsim::time::sleep(API_KILL_ARMED_AFTER).await;
                kill.lock().expect("not poisoned").armed = Some("api-1".into());
                let deadline = madsim::time::Instant::now() + MID_REQUEST_ARM_MAX;
                while kill.lock().expect("not poisoned").held.is_empty() && madsim::time::Instant::now() < deadline {
                    madsim::time::sleep(MID_REQUEST_POLL).await;
                }
                kill.lock().expect("not poisoned").armed = None;
                injector.crash("api-1");
                trace::now_nanos()
            });
            run_clients(&mut ctx, users, 8, spread).await;
            let killed_at = chaos.await.unwrap_or(0);
            let history = ctx.history.events();
            let after = history.iter().filter(|e| e.time > killed_at && e.kind == EventKind::Ok).count();
            ctx.expect(after > 0, "no order was accepted after api-1 was killed: clients did not fail over");
            let held = ctx.world.mid_request_kill.lock().expect("not poisoned").held.clone();
            ctx.expect(
                !held.is_empty(),
                "api-1 accepted no order within the arming bound: the kill was not mid-request",
            );
            let ops = ctx.ops.lock().expect("not poisoned").clone();
            let unresolved = ctx.world.mid_request_kill.lock().expect("not poisoned").unresolved(&ops);
            for message in unresolved {
                ctx.expect(false, message);
            }
        }
        OrdersScenario::RedisRestart => {
            ctx.redis_restarted = true;
            let chaos = ctx.injector.outage("redis", Duration::from_secs(3), Duration::from_secs(1));
            // The operator's job: `orders reconcile` every two seconds during the sale.
            let kafka = ctx.world.kafka.clone();
            let node = Handle::current().create_node().name("operator").ip([10, 1, 9, 253].into()).build_tracked();
            let operator = node.spawn(async move {
                let (cache, store) = (SimStockCache::connect().await, SimOrderStore::connect().await);
                let lag = || {
                    let lag = kafka.lock().expect("not poisoned").log.lag();
                    async move { Ok(lag) }
                };
                for _ in 0..8 {
                    madsim::time::sleep(Duration::from_secs(2)).await;
                    let report = reconcile(&cache, &store, lag, false).await;
                    trace::record("operator", &format!("reconcile: {report:?}"));
                }
            });
            run_clients(&mut ctx, users, 8, spread).await;
            let _ = chaos.await;
            let _ = operator.await;
        }
        OrdersScenario::RedisOom => {
            ctx.world.redis.knobs.lock().expect("not poisoned").maxmemory_keys = Some(stock as usize / 2);
            run_clients(&mut ctx, users, 8, spread).await;
            ctx.world.redis.knobs.lock().expect("not poisoned").maxmemory_keys = None;
            let oom = ctx.history.events().iter().filter(|e| e.error.as_deref() == Some("cache_out_of_memory")).count();
            ctx.expect(oom > 0, "Redis never refused a write at maxmemory");
        }
        OrdersScenario::RedisPgMismatch => {
            let redis = ctx.world.redis.clone();
            let chaos = madsim::task::spawn(async move {
                madsim::time::sleep(Duration::from_secs(2)).await;
                redis.force_stock(PRODUCT, 0);
                trace::record("faults", "redis stock forced to 0");
            });
            run_clients(&mut ctx, users / 2, 8, spread).await;
            let _ = chaos.await;
        }
    }
    ctx.injector.heal();
    let healed = trace::now_nanos();
    // Every client is done, but an API handler may still be working on a request its client
    // gave up on (a produce, a cancellation): the sale is quiet once those have ended.
    madsim::time::sleep(STRAGGLERS_MAX).await;
    let drained = drain(&ctx).await;
    let mut violations = ctx.expectations.clone();
    if !drained {
        violations.push(Violation::new("liveness", "the worker's lag did not drain after heal"));
    }
    let db = ctx.world.db.lock().expect("not poisoned").clone();
    let cache_before = ctx.world.redis.snapshot();
    let ops = ctx.ops.lock().expect("not poisoned").clone();
    violations.extend(no_oversell(&db, stock as i64));
    violations.extend(acknowledged_persisted(&ops, &db));
    violations.extend(definite_failure_no_effect(&ops, &db));
    violations.extend(one_order_per_key(&db));
    if let Some(bounds) = scenario.answer_bounds() {
        let faults = ctx.injector.records();
        let windows = fault_free_windows(faults.iter().map(|f| f.start).min(), healed);
        violations.extend(fault_free_answers(&ctx.history.events(), &windows, bounds));
    }
    reach_outcomes(&ctx.history.events(), &ops, &db);
    if !ctx.redis_restarted && scenario != OrdersScenario::RedisPgMismatch {
        violations.extend(no_leaked_stock(&cache_before, &db, &ops));
    }
    let report = run_reconcile(&ctx).await;
    trace::record("checker", &format!("reconcile: {report:?}"));
    if scenario == OrdersScenario::RedisPgMismatch {
        let drifted = report.as_ref().is_some_and(|r| !r.drifts.is_empty());
        ctx.expect(drifted, "reconcile did not report the drift");
        violations.append(&mut ctx.expectations);
    }
    let cache_after = ctx.world.redis.snapshot();
    violations.extend(cache_matches_db(&cache_after, &db));
    violations.extend(calm_phase(&ctx, &db).await);
    let history = ctx.history.events();
    let events = db.orders.len();
    OrdersRun { history, ops, faults: ctx.injector.records(), violations, events }
}

/// Orders of the calm phase: the first ones while stock remains.
pub const CALM_ORDERS_MAX: i64 = 3;
/// How long the worker may take to persist the calm orders.
pub const CALM_PERSIST_MAX: Duration = Duration::from_secs(10);

/// The calm phase, after the heal and reconciliation: every fault is gone, so the system must
/// make progress. Last, the first order the sale left ambiguous is retried with its key (a
/// user coming back to it): it must be accepted and persisted, or refused and never persisted. While PostgreSQL has stock, up to [`CALM_ORDERS_MAX`] fresh orders (one user
/// each, one after the other) must each be accepted within [`CALM_OP_MAX`] and persisted
/// within [`CALM_PERSIST_MAX`]; a refusal, a timeout or a slow answer is a `progress`
/// violation naming the order and the time. With no stock left, an order must be refused as
/// sold out (accepting it is an oversell). A sold-out answer while stock remains is
/// `no-false-sold-out`.
async fn calm_phase(ctx: &Ctx, db: &OrderDb) -> Vec<Violation> {
    madsim::time::sleep(CALM_SETTLE).await;
    let (db_stock, _) = stock_of(db);
    let node = Handle::current().create_node().ip([10, 1, 9, 252].into()).build_tracked();
    let orders = if db_stock > 0 { db_stock.min(CALM_ORDERS_MAX) } else { 1 };
    // The first order the sale left ambiguous, retried late with its key, as its user would.
    let late: Option<String> = ctx
        .ops
        .lock()
        .expect("not poisoned")
        .iter()
        .find(|op| op.outcome == "info" && op.key.starts_with("order-"))
        .map(|op| op.key.clone());
    let retry = late.clone();
    let (answers, late_answer) = node
        .spawn(async move {
            let ep = Endpoint::bind("0.0.0.0:0").await.expect("bind");
            let mut answers = Vec::new();
            for n in 0..orders {
                let (user, key) = (format!("calm-user-{n}"), format!("calm-order-{n}"));
                let started = madsim::time::Instant::now();
                let at = trace::now_nanos();
                let answer = place_order(&ep, &user, &key, n as usize, &Answers::default()).await;
                answers.push((key, at, started.elapsed(), answer));
            }
            let mut late_answer = None;
            if let Some(key) = retry {
                let slot: usize = key.trim_start_matches("order-").parse().unwrap_or(0);
                let (user, _) = workload::slot_user_and_key(slot);
                let started = madsim::time::Instant::now();
                let at = trace::now_nanos();
                let answer = place_order(&ep, &user, &key, 0, &Answers::default()).await;
                late_answer = Some((key, at, started.elapsed(), answer));
            }
            (answers, late_answer)
        })
        .await
        .expect("calm phase finished");
    let mut out = Vec::new();
    let seconds = |nanos: u64| nanos as f64 / 1e9;
    let mut accepted = Vec::new();
    for (key, at, took, (kind, detail)) in answers {
        match (kind, detail.as_str()) {
            (EventKind::Fail, "sold_out") if db_stock > 0 => out.push(Violation::new(
                "no-false-sold-out",
                format!("calm order {key} at {:.3}s sold out while PostgreSQL holds {db_stock}", seconds(at)),
            )),
            (EventKind::Fail, "sold_out") => {}
            (EventKind::Ok, _) if db_stock == 0 => out.push(Violation::new(
                "no-oversell",
                format!("calm order {key} at {:.3}s accepted with no stock left", seconds(at)),
            )),
            (EventKind::Ok, _) if took > CALM_OP_MAX => out.push(Violation::new(
                "progress",
                format!("calm order {key} at {:.3}s took {took:?} to be accepted (bound {CALM_OP_MAX:?})", seconds(at)),
            )),
            (EventKind::Ok, _) => accepted.push(key),
            (kind, detail) => out.push(Violation::new(
                "progress",
                format!("calm order {key} at {:.3}s ended {kind} {detail} with every fault healed", seconds(at)),
            )),
        }
    }
    // The late retry must settle its order: accepted (then persisted) or definitely refused
    // (then never persisted), within the bound.
    let mut refused_late = None;
    if let Some((key, at, took, (kind, detail))) = late_answer {
        let what = format!("late retry of ambiguous {key} at {:.3}s", seconds(at));
        if took <= CALM_OP_MAX && matches!(kind, EventKind::Ok | EventKind::Fail) {
            crate::verdict::reached("late-retry-settled");
        }
        match kind {
            EventKind::Ok if took <= CALM_OP_MAX => accepted.push(key),
            EventKind::Fail if took <= CALM_OP_MAX => refused_late = Some((key, what)),
            _ => out.push(Violation::new(
                "progress",
                format!("{what} ended {kind} {detail} after {took:?} with every fault healed"),
            )),
        }
    }
    let deadline = madsim::time::Instant::now() + CALM_PERSIST_MAX;
    loop {
        let missing: Vec<String> = {
            let db = ctx.world.db.lock().expect("not poisoned");
            accepted.iter().filter(|k| !db.keys.contains_key(*k)).cloned().collect()
        };
        if missing.is_empty() {
            break;
        }
        if madsim::time::Instant::now() >= deadline {
            out.push(Violation::new(
                "progress",
                format!(
                    "calm orders {} accepted but not persisted within {CALM_PERSIST_MAX:?} (at {:.3}s)",
                    missing.join(", "),
                    seconds(trace::now_nanos())
                ),
            ));
            break;
        }
        madsim::time::sleep(Duration::from_millis(100)).await;
    }
    if let Some((key, what)) = refused_late
        && ctx.world.db.lock().expect("not poisoned").keys.contains_key(&key)
    {
        out.push(Violation::new(
            "definite-failure-no-effect",
            format!("{what} was refused but its order is persisted"),
        ));
    }
    out
}

/// The outcomes an order run reached (see `verdict::OUTCOMES`), from what clients saw and what
/// PostgreSQL holds.
fn reach_outcomes(history: &[HistoryEvent], ops: &[OpRecord], db: &OrderDb) {
    use crate::verdict::reached;
    for e in history.iter().filter(|e| e.f == "order") {
        match (e.kind, e.error.as_deref()) {
            (EventKind::Ok, _) => reached("order-accepted"),
            (EventKind::Fail, Some("sold_out")) => reached("order-sold-out"),
            (EventKind::Fail, Some("queue_unavailable")) => reached("order-refused-nothing-reserved"),
            _ => {}
        }
    }
    for op in ops.iter().filter(|op| op.outcome == "info") {
        reached(if db.keys.contains_key(&op.key) {
            "ambiguous-order-persisted"
        } else {
            "ambiguous-order-not-persisted"
        });
    }
}
