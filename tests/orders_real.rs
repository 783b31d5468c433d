//! The order system on real infrastructure: Redis, a Kafka-protocol broker (tansu) and
//! PostgreSQL on 127.0.0.1, never mocks. Each test runs a broker of its own (so one can be
//! stopped) and a database of its own; tests that restart Redis run a redis-server of their own.

#![cfg(not(any(madsim, feature = "sim")))]

mod support;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use futures::future::join_all;
use serde_json::{Value, json};
use services::config::OrdersConfig;
use services::orders_app::{self, Orders};
use services::ports::orders::{OrderStore, StockCache};
use support::{drop_database, free_port, metric, scrape, unique};
use tokio::task::JoinHandle;

/// Longest wait for the worker to persist what was accepted.
const PERSIST_WAIT_MAX: Duration = Duration::from_secs(60);

fn tansu_binary() -> PathBuf {
    if let Ok(path) = std::env::var("TANSU_BIN") {
        return path.into();
    }
    let cached = PathBuf::from(std::env::var("HOME").unwrap_or_default()).join(".cache/testbed/tansu/bin/tansu");
    if cached.exists() { cached } else { "tansu".into() }
}

fn wait_for_port(port: u16, what: &str) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(Instant::now() < deadline, "{what} did not start on {port}");
        std::thread::sleep(Duration::from_millis(25));
    }
}

/// A process of the test's own (broker or Redis), killed on drop.
struct Private {
    port: u16,
    child: Option<Child>,
    command: Vec<String>,
    what: &'static str,
}

impl Private {
    fn start(what: &'static str, command: Vec<String>, port: u16) -> Private {
        let mut p = Private { port, child: None, command, what };
        p.restart();
        p
    }

    fn broker() -> Private {
        let port = free_port();
        let url = format!("tcp://127.0.0.1:{port}");
        let command = vec![
            tansu_binary().to_string_lossy().to_string(),
            "broker".into(),
            "--listener-url".into(),
            url.clone(),
            "--advertised-listener-url".into(),
            url,
            "--storage-engine".into(),
            format!("memory://tansu{port}/"),
        ];
        Private::start("tansu", command, port)
    }

    fn redis() -> Private {
        let port = free_port();
        let command =
            ["redis-server", "--bind", "127.0.0.1", "--port", &port.to_string(), "--save", "", "--appendonly", "no"]
                .iter()
                .map(|s| s.to_string())
                .collect();
        Private::start("redis-server", command, port)
    }

    fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    fn restart(&mut self) {
        assert!(self.child.is_none());
        let child = Command::new(&self.command[0])
            .args(&self.command[1..])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("{} cannot start ({e}): run .ci/run to install it", self.what));
        self.child = Some(child);
        wait_for_port(self.port, self.what);
    }
}

impl Drop for Private {
    fn drop(&mut self) {
        self.stop();
    }
}

struct TestOrders {
    orders: Orders,
    api: SocketAddr,
    room: SocketAddr,
    http: reqwest::Client,
    broker: Private,
    redis: Option<Private>,
    tasks: Vec<JoinHandle<()>>,
    worker: Option<JoinHandle<()>>,
}

impl TestOrders {
    async fn start(private_redis: bool, in_flight_max: usize) -> TestOrders {
        let broker = Private::broker();
        let redis = private_redis.then(Private::redis);
        let redis_url = match &redis {
            Some(r) => format!("redis://127.0.0.1:{}", r.port),
            None => "redis://127.0.0.1:6379".into(),
        };
        let api_listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let room_listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let (api, room) = (api_listener.local_addr().unwrap(), room_listener.local_addr().unwrap());
        let config = OrdersConfig {
            database_url: format!("postgres://postgres@127.0.0.1:5432/{}", unique("orders_t")),
            redis_url,
            kafka_brokers: format!("127.0.0.1:{}", broker.port),
            api_addr: api,
            waiting_room_addr: room,
            waiting_room_url: format!("http://{room}"),
            pool_max: 8,
            in_flight_max,
            rate_limit: 5,
            api_token: None,
            metrics_addr: None,
        };
        orders_app::prepare(&config).await.expect("database and topic ready");
        let orders = Orders::connect(config).unwrap();
        let tasks = vec![
            tokio::spawn({
                let o = orders.clone();
                async move { o.serve_api(api_listener).await.unwrap() }
            }),
            tokio::spawn({
                let o = orders.clone();
                async move { o.serve_waiting_room(room_listener).await.unwrap() }
            }),
        ];
        let mut t = TestOrders {
            orders,
            api,
            room,
            http: reqwest::Client::builder()
                .timeout(Duration::from_secs(30))
                .redirect(reqwest::redirect::Policy::none())
                .build()
                .unwrap(),
            broker,
            redis,
            tasks,
            worker: None,
        };
        t.start_worker();
        t
    }

    fn start_worker(&mut self) {
        assert!(self.worker.is_none());
        self.worker = Some(tokio::spawn(self.orders.clone().run_worker()));
    }

    async fn stop_worker(&mut self) {
        if let Some(w) = self.worker.take() {
            w.abort();
            let _ = w.await;
        }
    }

    async fn post(&self, path: &str, body: &str, key: Option<&str>) -> (u16, Value, Option<String>) {
        let mut request = self.http.post(format!("http://{}{path}", self.api)).body(body.to_string());
        if let Some(key) = key {
            request = request.header("x-idempotency-key", key);
        }
        let response = request.send().await.expect("api answers");
        let status = response.status().as_u16();
        let location = response.headers().get("location").map(|l| l.to_str().unwrap().to_string());
        (status, response.json().await.expect("JSON body"), location)
    }

    async fn init(&self, product: &str, quantity: u64) {
        let (status, body, _) =
            self.post("/init", &json!({"productId": product, "quantity": quantity}).to_string(), None).await;
        assert_eq!(status, 200, "{body}");
    }

    async fn order(&self, product: &str, user: impl Into<String>, key: impl Into<String>) -> (u16, Value) {
        let (user, key) = (user.into(), key.into());
        let (status, body, _) =
            self.post("/order", &json!({"productId": product, "userId": user}).to_string(), Some(&key)).await;
        (status, body)
    }

    async fn product(&self, product: &str) -> Value {
        self.http.get(format!("http://{}/products/{product}", self.api)).send().await.unwrap().json().await.unwrap()
    }

    /// Waits until PostgreSQL holds `orders` orders of the product.
    async fn persisted(&self, product: &str, orders: i64) -> Value {
        let deadline = Instant::now() + PERSIST_WAIT_MAX;
        loop {
            let view = self.product(product).await;
            if view["persistedOrders"] == orders {
                return view;
            }
            assert!(Instant::now() < deadline, "never persisted {orders} orders: {view}");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    async fn cleanup(mut self) {
        self.stop_worker().await;
        for task in self.tasks.drain(..) {
            task.abort();
            let _ = task.await;
        }
        self.orders.store.pool().close().await;
        drop_database(&self.orders.config.database_url).await;
    }
}

/// Goal: no overselling under a flash sale. Method: 1,000 concurrent orders with distinct
/// keys and users for a stock of 100; count answers; check rows and both stocks.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn thousand_concurrent_orders_for_hundred_items() {
    let t = TestOrders::start(false, 2000).await;
    let product = unique("iphone");
    t.init(&product, 100).await;
    let answers =
        join_all((0..1000).map(|i| t.order(&product, format!("user-{i}"), format!("{product}-key-{i}")))).await;
    let accepted = answers.iter().filter(|(s, _)| *s == 200).count();
    let sold_out = answers.iter().filter(|(s, b)| *s == 409 && b["error"] == "sold_out").count();
    assert_eq!((accepted, sold_out), (100, 900));
    let view = t.persisted(&product, 100).await;
    assert_eq!((view["dbStock"].as_i64(), view["redisStock"].as_i64()), (Some(0), Some(0)), "{view}");
    let rows = t.orders.store.orders(&product).await.unwrap();
    assert_eq!(rows.len(), 100);
    t.cleanup().await;
}

/// Goal: PostgreSQL keeps the order store's contract with the very body the in-memory store
/// runs: a batch persists in one transaction exactly as its orders would one by one.
#[tokio::test]
async fn postgres_keeps_the_order_store_contract() {
    let url = format!("postgres://postgres@127.0.0.1:5432/{}", unique("orders_t"));
    services::adapters::pg::ensure_database(&url).await.unwrap();
    let pool = services::adapters::pg::lazy_pool(&url, 2).unwrap();
    services::adapters::pg_orders::migrate(&pool).await.unwrap();
    let store = services::adapters::pg_orders::PgOrderStore::new(pool);
    let result = services::orders::contract::order_store_contract(&store, "pg").await;
    store.pool().close().await;
    drop_database(&url).await;
    result.unwrap();
}

/// Goal: a repeated key gets the same answer and leaves one row.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn repeated_key_same_answer_one_row() {
    let t = TestOrders::start(false, 2000).await;
    let product = unique("tv");
    t.init(&product, 10).await;
    let key = format!("{product}-k");
    let first = t.order(&product, "alice", key.clone()).await;
    let answers = join_all((0..3).map(|_| t.order(&product, "alice", key.clone()))).await;
    assert_eq!(first.0, 200);
    for answer in &answers {
        assert_eq!(answer, &first);
    }
    let view = t.persisted(&product, 1).await;
    assert_eq!((view["dbStock"].as_i64(), view["redisStock"].as_i64()), (Some(9), Some(9)), "{view}");
    t.cleanup().await;
}

/// Goal: spec 003 test 1: a worker killed mid-stream loses and duplicates nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn worker_stopped_mid_stream_persists_each_order_once() {
    let mut t = TestOrders::start(false, 2000).await;
    let product = unique("console");
    t.init(&product, 300).await;
    let mut accepted = 0;
    for i in 0..200 {
        if i == 50 {
            t.stop_worker().await;
        }
        if i == 150 {
            t.start_worker();
        }
        let (status, body) = t.order(&product, format!("u{i}"), format!("{product}-{i}")).await;
        assert_eq!(status, 200, "{body}");
        accepted += 1;
    }
    let view = t.persisted(&product, accepted).await;
    assert_eq!(view["dbStock"], 100, "{view}");
    let rows = t.orders.store.orders(&product).await.unwrap();
    let keys: std::collections::BTreeSet<_> = rows.iter().map(|o| o.idempotency_key.clone()).collect();
    assert_eq!(keys.len(), 200, "every accepted order exactly once");
    t.cleanup().await;
}

/// Goal: spec 004 "Kafka broker down": /order answers 503 and no stock leaks (the spec's flaw,
/// fixed by compensating the reservation).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn broker_down_answers_503_and_leaks_no_stock() {
    let mut t = TestOrders::start(false, 2000).await;
    let product = unique("camera");
    t.init(&product, 20).await;
    assert_eq!(t.order(&product, "before", format!("{product}-0")).await.0, 200);
    t.persisted(&product, 1).await;
    t.broker.stop();
    for i in 1..=5 {
        let (status, body) = t.order(&product, format!("down{i}"), format!("{product}-{i}")).await;
        assert_eq!(status, 503, "{body}");
        assert_eq!(body["error"], "queue_unavailable");
    }
    let view = t.product(&product).await;
    assert_eq!(view["redisStock"], 19, "the failed orders gave their items back: {view}");
    t.cleanup().await;
}

/// Goal: an operator sees a stopped worker on `/metrics` (issue 11): the consumer lag climbs
/// while orders arrive and falls to 0 once the worker is back; the API counts requests and
/// Redis calls; the worker counts what it persisted.
/// Method: stop the worker, place 20 then 20 more orders, scrape the API after each wave;
/// start the worker and scrape until the lag is 0.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn metrics_show_a_stopped_worker_and_its_return() {
    let mut t = TestOrders::start(false, 2000).await;
    let product = unique("lag");
    t.init(&product, 100).await;
    t.stop_worker().await;
    let lag_at_least = |at_least: f64| {
        let t = &t;
        async move {
            let deadline = Instant::now() + Duration::from_secs(30);
            loop {
                let text = scrape(&t.http, t.api).await;
                let lag = metric(&text, "kafka_consumer_lag").expect("the API shows the consumer lag");
                if lag >= at_least {
                    return (lag, text);
                }
                assert!(Instant::now() < deadline, "consumer lag {lag}, expected at least {at_least}");
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        }
    };
    for i in 0..20 {
        assert_eq!(t.order(&product, format!("a{i}"), format!("{product}-a{i}")).await.0, 200);
    }
    // The broker's latest offset can trail by one batch: at least 19 of the 20.
    let (first, _) = lag_at_least(19.0).await;
    for i in 0..20 {
        assert_eq!(t.order(&product, format!("b{i}"), format!("{product}-b{i}")).await.0, 200);
    }
    let (second, text) = lag_at_least(39.0).await;
    assert!(second > first, "the lag climbs while the worker is stopped");
    let health: Value = t.http.get(format!("http://{}/health", t.api)).send().await.unwrap().json().await.unwrap();
    let backlog = &health["dependencies"]["worker_backlog"];
    assert!(backlog["consumer_lag"].as_i64().unwrap_or(0) >= 39, "/health shows the same lag: {health}");
    assert_eq!(backlog["state"], "up", "40 orders waiting is below the degraded level: {health}");
    assert!(text.contains(r#"route="/order",status="200""#), "{text}");
    assert!(metric(&text, "redis_command_duration_seconds_count").unwrap_or(0.0) >= 40.0, "{text}");
    assert_eq!(metric(&text, "redis_up"), Some(1.0), "{text}");
    t.start_worker();
    t.persisted(&product, 40).await;
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let text = scrape(&t.http, t.api).await;
        if metric(&text, "kafka_consumer_lag") == Some(0.0) {
            break;
        }
        assert!(Instant::now() < deadline, "the lag never returned to 0: {text}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let persisted = metric(&t.orders.metrics.encode(), "worker_orders_persisted_total").unwrap_or(0.0);
    assert_eq!(persisted, 40.0, "the worker counted what it persisted");
    t.cleanup().await;
}

/// Goal: Redis keeps nothing on disk; after a restart, reconcile re-initialises it from
/// PostgreSQL and nothing is oversold afterwards.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn redis_restart_then_reconcile_no_oversell() {
    let mut t = TestOrders::start(true, 2000).await;
    let product = unique("watch");
    t.init(&product, 50).await;
    for i in 0..20 {
        assert_eq!(t.order(&product, format!("a{i}"), format!("{product}-a{i}")).await.0, 200);
    }
    t.persisted(&product, 20).await;
    let redis = t.redis.as_mut().unwrap();
    redis.stop();
    redis.restart();
    let (status, body) = t.order(&product, "lost", format!("{product}-lost")).await;
    assert_eq!(status, 503, "the cache lost the sale: {body}");
    let report = t.orders.reconcile(true).await.unwrap();
    assert_eq!(report.drifts.len(), 1, "{report:?}");
    assert_eq!(t.orders.cache.stock(&product).await.unwrap(), Some(30));
    let answers = join_all((0..40).map(|i| t.order(&product, format!("b{i}"), format!("{product}-b{i}")))).await;
    assert_eq!(answers.iter().filter(|(s, _)| *s == 200).count(), 30);
    let view = t.persisted(&product, 50).await;
    assert_eq!(view["dbStock"], 0, "{view}");
    t.cleanup().await;
}

/// A producer whose broker takes the order but whose answer is lost (a produce that timed out
/// and landed): the message really is in the real broker's log, the API sees a failure.
struct AnswerLost(services::adapters::kafka::KafkaOrderProducer);

impl services::ports::orders::OrderProducer for AnswerLost {
    async fn produce(&self, order: &models::orders::Order) -> Result<(), services::ports::orders::QueueError> {
        services::ports::orders::OrderProducer::produce(&self.0, order).await?;
        Err(services::ports::orders::QueueError::Ambiguous("the broker's answer was lost".into()))
    }
}

/// Goal: ADR 5's race is closed on real Redis, broker and PostgreSQL. Compensated orders (their
/// produce landed, their answer was lost, their items given back and sold to others) still wait
/// in the topic when Redis restarts and forgets them; the worker must still skip them, so that
/// every accepted order is persisted and none is refused "SOLD OUT in DB".
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn redis_restart_with_compensated_orders_in_the_topic_loses_no_accepted_order() {
    let mut t = TestOrders::start(true, 2000).await;
    t.stop_worker().await;
    let product = unique("console");
    let stock = 10;
    t.init(&product, stock).await;
    let lossy = services::orders::api::OrderApi::new(
        t.orders.cache.clone(),
        AnswerLost(t.orders.producer.clone()),
        t.orders.store.clone(),
        "http://room".into(),
    );
    let body = |user: &str| json!({"productId": product, "userId": user}).to_string().into_bytes();
    for i in 0..4 {
        let key = format!("{product}-c{i}");
        let answer = lossy.order(Some(key.as_bytes()), None, &body(&format!("c{i}"))).await.reply;
        assert_eq!((answer.status, answer.body["error"].as_str()), (503, Some("queue_unavailable")), "{answer:?}");
    }
    assert_eq!(t.orders.cache.stock(&product).await.unwrap(), Some(stock as i64), "every item given back");
    // The items the compensations gave back are sold to others: the sale sells out.
    let mut accepted = Vec::new();
    for i in 0..stock + 2 {
        let key = format!("{product}-a{i}");
        let (status, body) = t.order(&product, format!("a{i}"), key.clone()).await;
        match status {
            200 => accepted.push(key),
            409 => assert_eq!(body["error"], "sold_out", "{body}"),
            other => panic!("unexpected {other}: {body}"),
        }
    }
    assert_eq!(accepted.len(), stock as usize);
    // Redis restarts and forgets the released keys while all of it waits in the topic.
    let redis = t.redis.as_mut().unwrap();
    redis.stop();
    redis.restart();
    let (status, body) = t.order(&product, "late", format!("{product}-late")).await;
    assert_eq!(status, 503, "the cache lost the sale: {body}");
    let report = t.orders.reconcile(false).await.unwrap();
    assert_eq!(report.drifts.len(), 1, "{report:?}");
    t.start_worker();
    let view = t.persisted(&product, stock as i64).await;
    assert_eq!(view["dbStock"], 0, "{view}");
    let persisted: std::collections::BTreeSet<String> =
        t.orders.store.orders(&product).await.unwrap().into_iter().map(|o| o.idempotency_key).collect();
    let expected: std::collections::BTreeSet<String> = accepted.into_iter().collect();
    assert_eq!(persisted, expected, "exactly the accepted orders are persisted, no compensated one");
    t.cleanup().await;
}

/// Goal: the stock cache keeps its contract on real Redis, with the very body the in-memory
/// cache runs: reservations, the lock of a failed produce and its release.
#[tokio::test]
async fn redis_keeps_the_stock_cache_contract() {
    let redis = Private::redis();
    let cache = services::adapters::redis::RedisStockCache::new(&format!("redis://127.0.0.1:{}", redis.port)).unwrap();
    services::orders::contract::stock_cache_contract(&cache, &unique("redis")).await.unwrap();
}

/// Goal: bad input gets a 4xx with a JSON body naming the problem, and changes nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn bad_input_is_refused_and_changes_nothing() {
    let t = TestOrders::start(false, 2000).await;
    let product = unique("phone");
    t.init(&product, 5).await;
    let order = json!({"productId": product, "userId": "u"}).to_string();
    let (status, body, _) = t.post("/order", &order, None).await;
    assert_eq!((status, body["field"].as_str()), (400, Some("x-idempotency-key")));
    let cases: &[(&str, &str, u16, Option<&str>)] = &[
        ("/order", "{nope", 400, None),
        ("/order", r#"{"userId":"u"}"#, 422, Some("productId")),
        ("/order", r#"{"productId":"p","userId":""}"#, 422, Some("userId")),
        ("/order", r#"{"productId":"p","userId":"u","extra":1}"#, 422, Some("extra")),
        ("/order", r#"{"productId":"no-such-product","userId":"u"}"#, 404, Some("productId")),
        ("/init", r#"{"productId":"p","quantity":-1}"#, 422, Some("quantity")),
        ("/init", r#"{"productId":"p","quantity":"ten"}"#, 422, Some("quantity")),
        ("/init", r#"{"quantity":5}"#, 422, Some("productId")),
    ];
    for (path, body, status, field) in cases {
        let (got, answer, _) = t.post(path, body, Some("bad-input-key")).await;
        assert_eq!(got, *status, "{path} {body}: {answer}");
        assert!(answer["error"].is_string() && answer["message"].is_string(), "{answer}");
        if let Some(field) = field {
            assert_eq!(answer["field"], *field, "{path} {body}: {answer}");
        }
    }
    let (status, _, _) = t.post("/order", &order, Some("has space")).await;
    assert_eq!(status, 400);
    let view = t.product(&product).await;
    assert_eq!(
        (view["redisStock"].as_i64(), view["dbStock"].as_i64(), view["persistedOrders"].as_i64()),
        (Some(5), Some(5), Some(0))
    );
    let response = t.http.get(format!("http://{}/products/a%20b", t.api)).send().await.unwrap();
    assert_eq!(response.status().as_u16(), 422);
    t.cleanup().await;
}

/// Goal: a per-user rate limit (429), and the waiting room: past the in-flight bound `/order`
/// answers 302 to it; a ticket is admitted in turn and its token lets the order through.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn rate_limit_and_waiting_room() {
    let t = TestOrders::start(false, 0).await;
    let product = unique("ticket");
    t.init(&product, 100).await;
    // With an in-flight bound of 0 every order goes to the waiting room first.
    let body = json!({"productId": product, "userId": "carol"}).to_string();
    let (status, answer, location) = t.post("/order", &body, Some(&format!("{product}-c1"))).await;
    assert_eq!(status, 302, "{answer}");
    let location = location.expect("a Location header");
    assert!(location.starts_with(&format!("http://{}/waiting-room?", t.room)), "{location}");
    let joined: Value = t.http.get(&location).send().await.unwrap().json().await.unwrap();
    let ticket = joined["ticket"].as_u64().expect("a ticket");
    assert!(joined["position"].is_u64() && joined["retryAfterMs"].is_u64(), "{joined}");
    let deadline = Instant::now() + Duration::from_secs(10);
    let token = loop {
        let status: Value =
            t.http.get(format!("http://{}/status/{ticket}", t.room)).send().await.unwrap().json().await.unwrap();
        if status["admitted"] == true {
            break status["admissionToken"].as_str().unwrap().to_string();
        }
        assert!(Instant::now() < deadline, "never admitted: {status}");
        tokio::time::sleep(Duration::from_millis(status["retryAfterMs"].as_u64().unwrap_or(50).max(10))).await;
    };
    let response = t
        .http
        .post(format!("http://{}/order", t.api))
        .header("x-idempotency-key", format!("{product}-c1"))
        .header("x-admission-token", &token)
        .body(body.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(response.status().as_u16(), 200);
    // A token is good once.
    let again = t
        .http
        .post(format!("http://{}/order", t.api))
        .header("x-idempotency-key", format!("{product}-c2"))
        .header("x-admission-token", &token)
        .body(body)
        .send()
        .await
        .unwrap();
    assert_eq!(again.status().as_u16(), 302);
    t.cleanup().await;

    // The rate limit: 5 orders per user per second.
    let t = TestOrders::start(false, 2000).await;
    let product = unique("ratelimited");
    t.init(&product, 100).await;
    let answers = join_all((0..8).map(|i| t.order(&product, "dave", format!("{product}-{i}")))).await;
    let limited = answers.iter().filter(|(s, b)| *s == 429 && b["error"] == "rate_limited").count();
    assert_eq!((answers.len() - limited, limited), (5, 3));
    t.cleanup().await;
}
