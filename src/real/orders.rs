//! The order system on real infrastructure: deploy, run the seeded flash sale, inject faults,
//! heal, let the worker drain, read PostgreSQL and Redis back, reconcile, and check.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde_json::json;
use services::adapters::pg::{self};
use services::adapters::pg_orders::PgOrderStore;
use services::adapters::redis::RedisStockCache;
use services::orders::mem::{CacheState, OrderDb};
use services::ports::orders::{OrderStore, StockCache};
use sim::history::{EventKind, History, HistoryEvent};
use sim::orders::invariants as inv;
use sim::orders::workload::{self, ORDER_ATTEMPTS_MAX, ORDER_RETRY_PAUSE, ORDER_TIMEOUT, OrderAttempts, OrderStep};
use sim::verdict::{OpRecord, Violation};

use super::procs::{Action, Backend, Compose, Local, Spec, free_port};
use super::toxics::{self, LATENCY_LEVELS_MS, LatencyRow, ToxicProxy};
use super::transport::Http;
use super::{Clock, Extras, Mode, RealError, RealOptions, RealReport, RealScenario, SETTLE_MAX, SETTLE_POLL};

/// API instances of a local deployment (clients fail over between them).
pub const LOCAL_API_INSTANCES: usize = 2;
/// Orders per user per second in a local deployment: as in the simulator, low, so that a user
/// placing two orders at once meets the rate limit.
pub const LOCAL_RATE_LIMIT: u32 = 1;
/// Orders in flight per API instance before the waiting room: as in the simulator.
pub const LOCAL_IN_FLIGHT_MAX: usize = 3;
/// Attempts to start the sale.
pub const INIT_ATTEMPTS_MAX: u32 = 20;
/// How long the worker's persisted count must hold still, every acknowledged order persisted,
/// to count as drained.
pub const DRAIN_STILL: Duration = Duration::from_secs(3);

pub(crate) struct Deployment {
    pub(crate) apis: Vec<String>,
    pub(crate) room: String,
    pub(crate) database_url: String,
    pub(crate) redis_url: String,
    pub(crate) backend: Backend,
    pub(crate) databases: Vec<String>,
    /// The product, users and keys of this run (prefixed against a deployment that outlives runs).
    pub(crate) product: String,
    pub(crate) prefix: String,
    /// Latency proxies between the services and their dependencies, by dependency (`redis`,
    /// `postgres`), where the scenario asks for them.
    pub(crate) toxics: BTreeMap<String, Arc<ToxicProxy>>,
}

/// How a local deployment is set up: the API's admission limits (orders per user per second,
/// orders in flight per instance before the waiting room) and Redis's append-only fsync policy.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Limits {
    pub(crate) rate_limit: u32,
    pub(crate) in_flight_max: usize,
    /// `always`: an fsync before every reply, so a killed Redis keeps every write it
    /// acknowledged (what the runner's kill faults need); `everysec`: at most a second of
    /// writes lost to a crash, which the reconcile of PostgreSQL's orders repairs.
    pub(crate) redis_appendfsync: &'static str,
}

/// The simulator's limits (see [`LOCAL_RATE_LIMIT`]), with every acknowledged Redis write on disk.
pub(crate) const SIM_LIMITS: Limits =
    Limits { rate_limit: LOCAL_RATE_LIMIT, in_flight_max: LOCAL_IN_FLIGHT_MAX, redis_appendfsync: "always" };

pub(crate) async fn deploy_local(
    out: &std::path::Path,
    tools: &super::LocalTools,
    id: &str,
    limits: Limits,
    extras: Extras,
) -> Result<Deployment, RealError> {
    let local = Local::new(&out.join("logs"))?;
    let redis_port = free_port()?;
    let redis_dir = out.join("redis");
    // A fresh data directory: an append-only file left by an earlier run would be replayed.
    let _ = std::fs::remove_dir_all(&redis_dir);
    std::fs::create_dir_all(&redis_dir).map_err(|e| RealError::Setup(e.to_string()))?;
    // Append-only; with `always` a killed Redis restarts with every write it acknowledged (the
    // simulator's memory-only restart is its own scenario, with reconcile).
    let args = ["--bind", "127.0.0.1", "--port", &redis_port.to_string(), "--save", "", "--appendonly", "yes"]
        .into_iter()
        .map(str::to_string)
        .chain([
            "--appendfsync".into(),
            limits.redis_appendfsync.into(),
            "--dir".into(),
            redis_dir.display().to_string(),
        ])
        .collect();
    local
        .add(Spec {
            name: "redis".into(),
            program: tools.redis_server.clone(),
            args,
            env: vec![],
            port: Some(redis_port),
            host: None,
        })
        .await?;
    let broker_port = free_port()?;
    let listener = format!("tcp://127.0.0.1:{broker_port}");
    local
        .add(Spec {
            name: "broker".into(),
            program: tools.tansu.clone(),
            args: vec![
                "broker".into(),
                "--listener-url".into(),
                listener.clone(),
                "--advertised-listener-url".into(),
                listener,
                "--storage-engine".into(),
                format!("memory://tansu{broker_port}/"),
            ],
            env: vec![],
            port: Some(broker_port),
            host: None,
        })
        .await?;
    let database_url = local_database(tools, id);
    let room_port = free_port()?;
    let redis_url = format!("redis://127.0.0.1:{redis_port}");
    let brokers = format!("127.0.0.1:{broker_port}");
    // The services reach Redis and PostgreSQL through the latency proxies where there are
    // some; the runner's own reads go straight to them.
    let mut toxics = BTreeMap::new();
    let (mut service_db, mut service_redis) = (database_url.clone(), redis_url.clone());
    if extras.toxics {
        let redis = ToxicProxy::start("redis", &toxics::host_port(&redis_url)?).await?;
        let postgres = ToxicProxy::start("postgres", &toxics::host_port(&database_url)?).await?;
        service_redis = toxics::through(&redis_url, &redis.addr())?;
        service_db = toxics::through(&database_url, &postgres.addr())?;
        toxics.insert("redis".to_string(), Arc::new(redis));
        toxics.insert("postgres".to_string(), Arc::new(postgres));
    }
    let env = [
        ("ORDERS_DATABASE_URL".to_string(), service_db),
        ("REDIS_URL".to_string(), service_redis),
        ("KAFKA_BROKERS".to_string(), brokers),
        ("WAITING_ROOM_ADDR".to_string(), format!("127.0.0.1:{room_port}")),
        ("ORDERS_POOL_MAX".to_string(), "8".to_string()),
        ("ORDERS_RATE_LIMIT".to_string(), limits.rate_limit.to_string()),
        ("ORDERS_IN_FLIGHT_MAX".to_string(), limits.in_flight_max.to_string()),
        ("RUST_LOG".to_string(), std::env::var("RUST_LOG").unwrap_or_else(|_| "info".into())),
    ];
    let role = |name: &str, role: &str, own: Vec<(String, String)>, port: Option<u16>| {
        Spec::role(&tools.orders, &env, name, role, own, port)
    };
    local.run_once(role("migrate", "migrate", vec![], None)).await?;
    let mut apis = Vec::new();
    let mut api_ports = Vec::new();
    for i in 0..LOCAL_API_INSTANCES {
        let port = free_port()?;
        let addr = ("ORDERS_API_ADDR".to_string(), format!("127.0.0.1:{port}"));
        local.add(role(&format!("orders-api-{}", i + 1), "api", vec![addr], Some(port))).await?;
        apis.push(format!("http://127.0.0.1:{port}"));
        api_ports.push(port);
    }
    if extras.proxy {
        // The clients see one address: the proxy's.
        apis = vec![local.add_proxy(&tools.haproxy, "proxy", "order_apis", &api_ports).await?];
    }
    local.add(role("waiting-room", "waiting-room", vec![], Some(room_port))).await?;
    local.add(role("worker", "worker", vec![], None)).await?;
    Ok(Deployment {
        apis,
        room: format!("http://127.0.0.1:{room_port}"),
        database_url: database_url.clone(),
        redis_url,
        backend: Backend::Local(local),
        databases: vec![database_url],
        product: workload::PRODUCT.into(),
        prefix: String::new(),
        toxics,
    })
}

fn deploy_compose(file: &std::path::Path, id: &str) -> Deployment {
    let var = |name: &str, default: &str| std::env::var(name).ok().filter(|v| !v.is_empty()).unwrap_or(default.into());
    Deployment {
        apis: vec![var("TESTBED_ORDERS_API", "http://127.0.0.1:3000")],
        room: var("TESTBED_WAITING_ROOM", "http://127.0.0.1:3001"),
        database_url: var("ORDERS_DATABASE_URL", "postgres://postgres:postgres@127.0.0.1:5432/orders"),
        redis_url: var("REDIS_URL", "redis://127.0.0.1:6379"),
        backend: Backend::Compose(Compose::new(file)),
        databases: vec![],
        product: format!("{id}-{}", workload::PRODUCT),
        prefix: format!("{id}-"),
        toxics: BTreeMap::new(),
    }
}

/// The order database of a local run.
pub(crate) fn local_database(tools: &super::LocalTools, id: &str) -> String {
    format!("{}/{id}_orders", tools.postgres)
}

/// The limits of a scenario's local deployment: the simulator's, or for the latency table a
/// production-like API (its default in-flight bound and rate limit) and Redis fsyncing every
/// second (no kill faults, and `always` adds the disk's fsync stalls to every row).
fn limits_of(scenario: RealScenario) -> Limits {
    if scenario == RealScenario::RedisLatency {
        Limits {
            rate_limit: services::orders::api::USER_ORDERS_PER_WINDOW_MAX,
            in_flight_max: services::orders::api::ORDERS_IN_FLIGHT_MAX,
            redis_appendfsync: "everysec",
        }
    } else {
        SIM_LIMITS
    }
}

/// Runs an order scenario.
pub async fn run(options: &RealOptions) -> Result<RealReport, RealError> {
    let started = Instant::now();
    let id = super::run_id(options.seed);
    let extras = options.scenario.extras();
    let deployment = match &options.mode {
        Mode::Local(tools) => match deploy_local(&options.out, tools, &id, limits_of(options.scenario), extras).await {
            Ok(deployment) => deployment,
            Err(e) => {
                super::drop_databases(&[local_database(tools, &id)]).await;
                return Err(e);
            }
        },
        Mode::Compose { .. } if options.scenario == RealScenario::RedisLatency => {
            return Err(RealError::Setup(
                "redis-latency runs on local processes only: it puts its own latency proxies between the services \
                 and Redis and PostgreSQL"
                    .into(),
            ));
        }
        Mode::Compose { file } => deploy_compose(file, &id),
    };
    let api = match super::toxiproxy_api_for(options, &deployment.toxics).await {
        Ok(api) => api,
        Err(e) => {
            super::teardown(&deployment.backend, options, &deployment.databases).await;
            return Err(e);
        }
    };
    let result = if options.scenario == RealScenario::RedisLatency {
        latency_table(options, &deployment, started).await
    } else {
        drive(options, &deployment, started).await
    };
    if let Some(api) = api {
        api.abort();
    }
    super::teardown(&deployment.backend, options, &deployment.databases).await;
    result
}

/// A flash-sale client's view of the deployment.
#[derive(Clone)]
struct Shop {
    http: Http,
    apis: Arc<Vec<String>>,
    room: String,
    product: String,
    answers: Arc<Mutex<BTreeMap<u16, u64>>>,
    /// Every `/order` request: how long it took, and its status (0: no answer in time).
    requests: Arc<Mutex<Vec<(Duration, u16)>>>,
}

impl Shop {
    /// One user's order to its final answer, as the simulator's clients place it.
    async fn place_order(&self, user: &str, key: &str, first_api: usize) -> (EventKind, String) {
        let mut attempts = OrderAttempts::default();
        let mut admission: Option<String> = None;
        for attempt in 0..ORDER_ATTEMPTS_MAX {
            if attempt > 0 {
                tokio::time::sleep(ORDER_RETRY_PAUSE).await;
            }
            let req = workload::order_request(&self.product, user, key, admission.take());
            let api = &self.apis[(first_api + attempt as usize) % self.apis.len()];
            let sent = Instant::now();
            let answer = self.http.send(api, req, ORDER_TIMEOUT).await;
            let status = answer.as_ref().map_or(0, |a| a.status);
            self.requests.lock().expect("not poisoned").push((sent.elapsed(), status));
            let Some(answer) = answer else {
                attempts.timed_out();
                continue;
            };
            *self.answers.lock().expect("not poisoned").entry(answer.status).or_default() += 1;
            match attempts.answered(answer.status, &answer.body) {
                OrderStep::Done(kind, detail) => return (kind, detail),
                OrderStep::Retry => {}
                OrderStep::RetryAfter(pause) => tokio::time::sleep(pause).await,
                OrderStep::WaitingRoom => admission = self.wait_in_room(user).await,
            }
        }
        attempts.finish()
    }

    /// One order placed as process `process` of the history: its invoke and completion
    /// recorded, its outcome returned for the invariants.
    async fn recorded_order(
        &self,
        history: &History,
        clock: Clock,
        process: u64,
        user: &str,
        key: String,
        first_api: usize,
    ) -> OpRecord {
        let mut invoke = HistoryEvent::new(process, EventKind::Invoke, "order", clock.nanos());
        invoke.key = Some(self.product.clone());
        invoke.value = Some(json!(user));
        history.record(invoke);
        let (kind, detail) = self.place_order(user, &key, first_api).await;
        let mut done = HistoryEvent::new(process, kind, "order", clock.nanos());
        done.key = Some(self.product.clone());
        match kind {
            EventKind::Ok => done.value = Some(json!(detail)),
            _ => done.error = Some(detail),
        }
        history.record(done);
        OpRecord { key, f: "order".into(), outcome: kind.name().into() }
    }

    async fn wait_in_room(&self, user: &str) -> Option<String> {
        let joined =
            self.http.send(&self.room, workload::room_join_request(&self.product, user), ORDER_TIMEOUT).await?;
        let ticket = joined.body["ticket"].as_u64()?;
        for _ in 0..workload::ROOM_POLLS_MAX {
            let answer = self.http.send(&self.room, workload::room_status_request(ticket), ORDER_TIMEOUT).await?;
            if let Some(token) = answer.body["admissionToken"].as_str() {
                return Some(token.to_string());
            }
            tokio::time::sleep(workload::room_poll_pause(&answer.body)).await;
        }
        None
    }
}

/// One sale of a run: its product, stock and users, and its clients.
struct Sale {
    stock: u64,
    users: usize,
    clients: usize,
    /// How long the users' arrivals are spread over.
    spread: Duration,
    /// Added to every client's process id (phases of one history never share a process).
    process_base: u64,
    /// No client starts an order after this (the orders already started run to their end).
    deadline: Option<Instant>,
}

fn shop_of(d: &Deployment, product: &str) -> Result<Shop, RealError> {
    Ok(Shop {
        http: Http::new(services::orders::api::KEY_HEADER, std::env::var("ORDERS_API_TOKEN").ok())?,
        apis: Arc::new(d.apis.clone()),
        room: d.room.clone(),
        product: product.to_string(),
        answers: Arc::default(),
        requests: Arc::default(),
    })
}

/// Starts a sale's clients: each user's orders, recorded in `history` and `ops`.
fn start_sale(
    shop: &Shop,
    sale: &Sale,
    seed: u64,
    prefix: &str,
    clock: Clock,
    history: &History,
    ops: &Arc<Mutex<Vec<OpRecord>>>,
) -> tokio::task::JoinSet<()> {
    let mut tasks = tokio::task::JoinSet::new();
    let (clients, users, spread) = (sale.clients, sale.users, sale.spread);
    for c in 0..clients {
        let (shop, history, ops, prefix) = (shop.clone(), history.clone(), ops.clone(), prefix.to_string());
        let (base, deadline) = (sale.process_base, sale.deadline);
        tasks.spawn(async move {
            let mut rng = workload::client_rng(seed, c);
            let mut process = base + c as u64;
            for slot in workload::slots(c, clients, users) {
                tokio::time::sleep(workload::arrival_pause(&mut rng, spread, users, clients)).await;
                if deadline.is_some_and(|d| Instant::now() >= d) {
                    break;
                }
                let (user, key) = workload::slot_user_and_key(slot);
                let (user, key) = (format!("{prefix}{user}"), format!("{prefix}{key}"));
                let first_api = rng.gen_range(0..shop.apis.len());
                let op = shop.recorded_order(&history, clock, process, &user, key, first_api).await;
                let kind = op.outcome.clone();
                ops.lock().expect("not poisoned").push(op);
                if kind == EventKind::Info.name() {
                    process += clients as u64;
                }
            }
        });
    }
    tasks
}

/// After heal: waits for the worker to drain, reads PostgreSQL and Redis back, checks the
/// order invariants, reconciles and probes. Returns the violations, the orders persisted and
/// whether the worker drained.
async fn check_sale(
    d: &Deployment,
    shop: &Shop,
    stock: u64,
    ops: &[OpRecord],
) -> Result<(Vec<Violation>, usize, bool), RealError> {
    let mut violations = Vec::new();
    let store = PgOrderStore::new(pg::lazy_pool(&d.database_url, 2).map_err(|e| RealError::Store(e.to_string()))?);
    let cache = RedisStockCache::new(&d.redis_url).map_err(|e| RealError::Store(e.to_string()))?;
    let drained = drain(&store, &shop.product, ops).await;
    if !drained {
        violations.push(Violation::new("liveness", "the worker did not persist every acknowledged order in time"));
    }
    let db = order_db(&store, &shop.product).await?;
    let cache_before = cache_state(&cache, &shop.product).await?;
    violations.extend(inv::no_oversell(&db, stock as i64));
    violations.extend(inv::acknowledged_persisted(ops, &db));
    violations.extend(inv::definite_failure_no_effect(ops, &db));
    violations.extend(inv::one_order_per_key(&db));
    violations.extend(inv::no_leaked_stock(&cache_before, &db, ops));
    // The operator's job once the sale is quiet: `orders reconcile --quiet`.
    let report = services::orders::reconcile::reconcile(&cache, &store, || async { Ok(0) }, true)
        .await
        .map_err(|e| RealError::Store(format!("reconcile: {e}")))?;
    tracing::info!(?report, "reconciled");
    violations.extend(inv::cache_matches_db(&cache_state(&cache, &shop.product).await?, &db));
    violations.extend(probe(shop, &db, &d.prefix).await);
    store.pool().close().await;
    Ok((violations, db.orders.len(), drained))
}

async fn drive(options: &RealOptions, d: &Deployment, started: Instant) -> Result<RealReport, RealError> {
    let clock = Clock::start();
    let shop = shop_of(d, &d.product)?;
    let mut rng = ChaCha8Rng::seed_from_u64(options.seed);
    let (stock, users) = workload::draw_sale(&mut rng);
    init_sale(&shop, stock).await?;
    let history = History::new();
    let ops: Arc<Mutex<Vec<OpRecord>>> = Arc::default();
    let clients = if options.scenario == RealScenario::FlashSale { 10 } else { 8 };
    let sale = Sale { stock, users, clients, spread: options.duration, process_base: 0, deadline: None };
    let mut tasks = start_sale(&shop, &sale, options.seed, &d.prefix, clock, &history, &ops);
    let faults = match options.scenario {
        RealScenario::WorkerCrash => {
            // The simulator's draws for worker-crash: the first gap and the time down.
            let first = Duration::from_millis(rng.gen_range(500..3000));
            let down = Duration::from_millis(rng.gen_range(500..3000));
            let steps: Vec<_> = (0..3u32)
                .map(|i| super::FaultStep {
                    at: (first + down) * i + first,
                    role: "worker".into(),
                    action: Action::Kill,
                    hold: down,
                })
                .collect();
            super::run_faults(&d.backend, &steps, clock).await?
        }
        scenario => {
            let steps = super::draw_faults(options.seed, scenario.fault_roles(), options.duration);
            super::run_faults(&d.backend, &steps, clock).await?
        }
    };
    let mut violations = Vec::new();
    super::ledger::join(&mut tasks, options.duration, &mut violations).await;
    d.backend.heal(options.scenario.fault_roles()).await?;
    let ops = ops.lock().expect("not poisoned").clone();
    let (found, persisted, drained) = check_sale(d, &shop, stock, &ops).await?;
    violations.extend(found);
    let mut report = RealReport::new(options, &ops, history.events(), started);
    report.persisted = persisted;
    report.faults = faults;
    report.violations = violations;
    report.settled = drained;
    if options.scenario.extras().proxy {
        let requests = shop.requests.lock().expect("not poisoned");
        report.gateway_answers = Some(requests.iter().filter(|(_, status)| matches!(status, 502 | 504)).count());
    }
    Ok(report)
}

/// Items of each level's sale (twice as many orders are placed).
pub const LATENCY_SALE_STOCK: u64 = 300;
/// Concurrent clients of each level's sale.
pub const LATENCY_SALE_CLIENTS: usize = 24;

/// Spec 003, test 2: a sale per latency level, with that much latency added to Redis's answers
/// by the proxy between the services and Redis; the API's p50, p99 and errors per level. Every
/// level's sale is then checked like any other (after the latency is removed).
async fn latency_table(options: &RealOptions, d: &Deployment, started: Instant) -> Result<RealReport, RealError> {
    let redis = d.toxics.get("redis").ok_or_else(|| RealError::Setup("no latency proxy in front of Redis".into()))?;
    let clock = Clock::start();
    let history = History::new();
    let spread = options.duration / LATENCY_LEVELS_MS.len() as u32;
    let mut rows = Vec::new();
    let mut faults = Vec::new();
    let mut sales = Vec::new();
    let mut violations = Vec::new();
    // Warm-up, not in the table: one order through each API instance (its producer's first
    // send waits for the topic's metadata and a producer id), on a sale of its own, checked
    // like the others.
    let warm = shop_of(d, &format!("{}-warmup", d.product))?;
    init_sale(&warm, d.apis.len() as u64).await?;
    let mut warmed = Vec::new();
    for api in 0..d.apis.len() {
        let (user, key) = (format!("{}warmup-user-{api}", d.prefix), format!("{}warmup-{api}", d.prefix));
        warmed.push(warm.recorded_order(&history, clock, 9_000_000 + api as u64, &user, key, api).await);
    }
    sales.push((warm, d.apis.len() as u64, warmed));
    for (level, added_ms) in LATENCY_LEVELS_MS.into_iter().enumerate() {
        let product = format!("{}-{added_ms}ms", d.product);
        let shop = shop_of(d, &product)?;
        init_sale(&shop, LATENCY_SALE_STOCK).await?;
        redis.set_latency(added_ms).await?;
        faults.push(super::FaultLog {
            at_ms: clock.millis(),
            action: format!("latency {added_ms}ms"),
            role: "redis".into(),
        });
        let sale = Sale {
            stock: LATENCY_SALE_STOCK,
            users: LATENCY_SALE_STOCK as usize * 2,
            clients: LATENCY_SALE_CLIENTS,
            spread,
            process_base: level as u64 * 1_000_000,
            deadline: Some(Instant::now() + spread),
        };
        let prefix = format!("{}l{added_ms}-", d.prefix);
        let ops: Arc<Mutex<Vec<OpRecord>>> = Arc::default();
        let mut tasks = start_sale(&shop, &sale, options.seed, &prefix, clock, &history, &ops);
        super::ledger::join(&mut tasks, spread, &mut violations).await;
        let row = LatencyRow::of(added_ms, &shop.requests.lock().expect("not poisoned"));
        tracing::info!(?row, "latency level done");
        rows.push(row);
        let ops = ops.lock().expect("not poisoned").clone();
        sales.push((shop, sale.stock, ops));
    }
    redis.set_latency(0).await?;
    faults.push(super::FaultLog { at_ms: clock.millis(), action: "latency 0ms".into(), role: "redis".into() });
    let mut persisted = 0;
    let mut settled = true;
    for (shop, stock, ops) in &sales {
        let (found, count, drained) = check_sale(d, shop, *stock, ops).await?;
        violations.extend(found);
        persisted += count;
        settled &= drained;
    }
    let ops: Vec<OpRecord> = sales.into_iter().flat_map(|(_, _, ops)| ops).collect();
    // What spec 003 expects of the levels it passes: no errors without added latency, and the
    // latency seen by the API's clients (two Redis round trips per order at least).
    super::toxics::violations_of_levels(&rows, &mut violations);
    let mut report = RealReport::new(options, &ops, history.events(), started);
    report.persisted = persisted;
    report.faults = faults;
    report.violations = violations;
    report.settled = settled;
    report.latency = rows;
    Ok(report)
}

async fn init_sale(shop: &Shop, stock: u64) -> Result<(), RealError> {
    for attempt in 0..INIT_ATTEMPTS_MAX {
        let api = &shop.apis[attempt as usize % shop.apis.len()];
        if let Some(answer) = shop.http.send(api, workload::init_request(&shop.product, stock), ORDER_TIMEOUT).await
            && answer.status == 200
        {
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    Err(RealError::Setup("the sale could not be started".into()))
}

/// Waits until the worker has persisted every acknowledged order and its count of persisted
/// orders held still for [`DRAIN_STILL`] (orders whose outcome the client could not know may
/// still land). The broker's lag is not used: tansu's latest offsets can be a batch behind, and
/// a restarted worker waits out its predecessor's session before it consumes again.
async fn drain(store: &PgOrderStore, product: &str, ops: &[OpRecord]) -> bool {
    let deadline = Instant::now() + SETTLE_MAX;
    let mut last: Option<(usize, Instant)> = None;
    loop {
        if let Ok(db) = order_db(store, product).await {
            let missing = ops.iter().filter(|op| op.outcome == "ok" && !db.keys.contains_key(&op.key)).count();
            match last {
                Some((orders, since)) if orders == db.orders.len() => {
                    if missing == 0 && since.elapsed() >= DRAIN_STILL {
                        return true;
                    }
                }
                _ => last = Some((db.orders.len(), Instant::now())),
            }
        }
        if Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(SETTLE_POLL).await;
    }
}

/// PostgreSQL's rows of the run's product, as the invariants read them (under the simulator's
/// product name).
async fn order_db(store: &PgOrderStore, product: &str) -> Result<OrderDb, RealError> {
    let err = |e: services::ports::orders::OrderStoreError| RealError::Store(e.to_string());
    let mut db = OrderDb::default();
    if let Some(row) = store.product(product).await.map_err(err)? {
        db.products.insert(workload::PRODUCT.into(), (row.stock, row.initial_stock));
    }
    for mut order in store.orders(product).await.map_err(err)? {
        order.product_id = workload::PRODUCT.into();
        db.keys.insert(order.idempotency_key.clone(), order.order_id.clone());
        db.orders.insert(order.order_id.clone(), order);
    }
    Ok(db)
}

async fn cache_state(cache: &RedisStockCache, product: &str) -> Result<CacheState, RealError> {
    let mut state = CacheState::default();
    if let Some(stock) = cache.stock(product).await.map_err(|e| RealError::Store(e.to_string()))? {
        state.stock.insert(workload::PRODUCT.into(), stock);
    }
    Ok(state)
}

/// Once reconciled, a fresh order is refused as sold out only when PostgreSQL has no stock.
async fn probe(shop: &Shop, db: &OrderDb, prefix: &str) -> Vec<Violation> {
    let (db_stock, _) = inv::stock_of(db);
    // A key of the product's own: a run with several sales probes each.
    let (user, key) = (format!("{prefix}probe-user"), format!("{prefix}probe-order-{}", shop.product));
    let answer = shop.place_order(&user, &key, 0).await;
    match (answer.0, answer.1.as_str()) {
        (EventKind::Fail, "sold_out") if db_stock > 0 => vec![Violation::new(
            "no-false-sold-out",
            format!("sold out after reconcile while PostgreSQL holds {db_stock}"),
        )],
        (EventKind::Ok, _) if db_stock == 0 => {
            vec![Violation::new("no-oversell", "an order was accepted after reconcile with no stock left")]
        }
        _ => Vec::new(),
    }
}
