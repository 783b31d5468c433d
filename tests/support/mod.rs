//! Test support for the real-infrastructure tests: a ledger started in-process on the local
//! PostgreSQL and NATS, with databases and a JetStream stream of its own so tests run side by
//! side, and a private nats-server for tests that stop NATS.
//!
//! Roles run as tokio tasks; stopping one aborts it, which is as abrupt as a crash for
//! everything the role had not committed or acked.

#![allow(dead_code)]

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use rust_decimal::Decimal;
use serde_json::Value;
use services::adapters::nats::NatsTopology;
use services::app::{self, Ledger};
use services::config::LedgerConfig;
use services::ledger::command::fold;
use services::ports::ledger::EventStore;
use tokio::task::JoinHandle;

/// Longest wait of a test for the read model to catch up.
pub const CATCH_UP_MAX: Duration = Duration::from_secs(60);
/// Connections per pool in tests: two tests at once stay under PostgreSQL's 100.
pub const TEST_POOL_MAX: u32 = 8;

static COUNTER: AtomicU32 = AtomicU32::new(0);

/// A name no other test run uses: process id, a counter and the clock.
pub fn unique(prefix: &str) -> String {
    let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().subsec_nanos();
    format!("{prefix}_{}_{}_{}", std::process::id(), COUNTER.fetch_add(1, Ordering::Relaxed), nanos % 100_000)
}

/// A nats-server of the test's own, with JetStream on a file store that survives its restarts.
pub struct PrivateNats {
    pub port: u16,
    store: PathBuf,
    child: Option<Child>,
}

impl PrivateNats {
    pub fn start() -> PrivateNats {
        let port = free_port();
        let store = std::env::temp_dir().join(unique("nats_store"));
        std::fs::create_dir_all(&store).unwrap();
        let mut nats = PrivateNats { port, store, child: None };
        nats.restart();
        nats
    }

    pub fn url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.port)
    }

    /// Stops the server abruptly (SIGKILL).
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            child.kill().unwrap();
            child.wait().unwrap();
        }
    }

    /// Starts the server on the same port and store, and waits until it accepts connections.
    pub fn restart(&mut self) {
        assert!(self.child.is_none(), "already running");
        let child = Command::new("nats-server")
            .args(["-a", "127.0.0.1", "-p", &self.port.to_string(), "-js", "-sd"])
            .arg(&self.store)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("nats-server is installed");
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(10);
        while std::net::TcpStream::connect(("127.0.0.1", self.port)).is_err() {
            assert!(Instant::now() < deadline, "nats-server did not start");
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for PrivateNats {
    fn drop(&mut self) {
        self.stop();
        let _ = std::fs::remove_dir_all(&self.store);
    }
}

pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// A ledger with every role running in-process, on databases and a stream of its own.
pub struct TestLedger {
    pub ledger: Ledger,
    pub api: SocketAddr,
    pub query: SocketAddr,
    pub http: reqwest::Client,
    api_task: JoinHandle<()>,
    query_task: JoinHandle<()>,
    relay_task: Option<JoinHandle<()>>,
    processor_task: Option<JoinHandle<()>>,
}

pub fn test_config(nats_url: &str) -> LedgerConfig {
    let name = unique("ledger_t");
    LedgerConfig {
        ledger_database_url: format!("postgres://postgres@127.0.0.1:5432/{name}_events"),
        read_database_url: format!("postgres://postgres@127.0.0.1:5432/{name}_read"),
        nats_url: nats_url.to_string(),
        api_addr: "127.0.0.1:0".parse().unwrap(),
        query_addr: "127.0.0.1:0".parse().unwrap(),
        pool_max: TEST_POOL_MAX,
        topology: NatsTopology {
            stream: name.to_uppercase(),
            subject_prefix: format!("t.{name}"),
            durable: format!("processor_{name}"),
        },
        api_token: None,
        metrics_addr: None,
    }
}

impl TestLedger {
    /// On the machine's NATS (127.0.0.1:4222).
    pub async fn start() -> TestLedger {
        Self::start_with(test_config("nats://127.0.0.1:4222")).await
    }

    pub async fn start_with(config: LedgerConfig) -> TestLedger {
        app::prepare(&config).await.expect("databases ready");
        let ledger = Ledger::connect(config).await.expect("connects");
        let api_listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let query_listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let api = api_listener.local_addr().unwrap();
        let query = query_listener.local_addr().unwrap();
        let api_task = tokio::spawn({
            let l = ledger.clone();
            async move { l.serve_api(api_listener, true).await.unwrap() }
        });
        let query_task = tokio::spawn({
            let l = ledger.clone();
            async move { l.serve_query(query_listener, true).await.unwrap() }
        });
        let mut test = TestLedger {
            ledger,
            api,
            query,
            http: reqwest::Client::builder().timeout(Duration::from_secs(30)).build().unwrap(),
            api_task,
            query_task,
            relay_task: None,
            processor_task: None,
        };
        test.start_relay();
        test.start_processor();
        test
    }

    pub fn start_relay(&mut self) {
        assert!(self.relay_task.is_none());
        self.relay_task = Some(tokio::spawn(self.ledger.clone().run_relay()));
    }

    pub fn start_processor(&mut self) {
        assert!(self.processor_task.is_none());
        self.processor_task = Some(tokio::spawn(self.ledger.clone().run_processor()));
    }

    /// Aborts the processor mid-flight, as a crash would.
    pub async fn stop_processor(&mut self) {
        if let Some(task) = self.processor_task.take() {
            task.abort();
            let _ = task.await;
        }
    }

    /// POSTs a command; returns status, body and whether the answer was a replay.
    pub async fn command(&self, kind: &str, body: &str, key: Option<&str>) -> (u16, Value, bool) {
        let mut request = self
            .http
            .post(format!("http://{}/api/v1/commands/{kind}", self.api))
            .header("content-type", "application/json")
            .body(body.to_string());
        if let Some(key) = key {
            request = request.header("Idempotency-Key", key);
        }
        let response = request.send().await.expect("api answers");
        let status = response.status().as_u16();
        let replayed = response.headers().get("idempotent-replayed").is_some();
        let body = response.json::<Value>().await.expect("JSON body");
        (status, body, replayed)
    }

    pub async fn create_account(&self, id: &str, balance: &str, currency: &str) -> Value {
        let body = format!(
            r#"{{"account_id":"{id}","owner_name":"Owner {id}","initial_balance":{balance},"currency":"{currency}"}}"#
        );
        let (status, body, _) = self.command("create-account", &body, None).await;
        assert_eq!(status, 201, "{body}");
        body
    }

    pub async fn balance(&self, id: &str, min_position: Option<u64>) -> (u16, Value) {
        let query = min_position.map(|p| format!("?min_position={p}")).unwrap_or_default();
        let response = self
            .http
            .get(format!("http://{}/api/v1/accounts/{id}/balance{query}", self.query))
            .send()
            .await
            .expect("query answers");
        (response.status().as_u16(), response.json().await.expect("JSON body"))
    }

    /// Waits until the read model has the account at `version`; returns the view.
    pub async fn caught_up(&self, id: &str, version: u64) -> Value {
        let deadline = Instant::now() + CATCH_UP_MAX;
        loop {
            let (status, body) = self.balance(id, Some(version)).await;
            if status == 200 {
                return body;
            }
            assert!(Instant::now() < deadline, "read model never reached {id} v{version}: {status} {body}");
        }
    }

    pub async fn health(&self, query_side: bool) -> (u16, Value) {
        let addr = if query_side { self.query } else { self.api };
        let response = self.http.get(format!("http://{addr}/health")).send().await.unwrap();
        (response.status().as_u16(), response.json().await.unwrap())
    }

    /// The account's balance and version by folding the event store (the truth).
    pub async fn store_balance(&self, id: &str) -> (Decimal, u64) {
        let events = self.ledger.store.load_stream(id, 0).await.unwrap();
        let account = fold(id, &events).unwrap();
        (account.balance().expect("account exists"), account.version)
    }

    pub async fn event_count(&self) -> i64 {
        sqlx::query_scalar("SELECT count(*) FROM events").fetch_one(self.ledger.store.pool()).await.unwrap()
    }

    /// Stops every role, deletes the stream and drops both databases.
    pub async fn cleanup(mut self) {
        self.stop_processor().await;
        if let Some(task) = self.relay_task.take() {
            task.abort();
            let _ = task.await;
        }
        self.api_task.abort();
        self.query_task.abort();
        let _ = (&mut self.api_task).await;
        let _ = (&mut self.query_task).await;
        self.ledger.store.pool().close().await;
        self.ledger.read.pool().close().await;
        let _ = tokio::time::timeout(Duration::from_secs(5), self.ledger.bus.delete_stream()).await;
        for url in [&self.ledger.config.ledger_database_url, &self.ledger.config.read_database_url] {
            drop_database(url).await;
        }
    }
}

pub async fn drop_database(url: &str) {
    let name = url.rsplit('/').next().unwrap().to_string();
    let admin: sqlx::PgPool = sqlx::PgPool::connect("postgres://postgres@127.0.0.1:5432/postgres").await.unwrap();
    sqlx::query(&format!("DROP DATABASE IF EXISTS \"{name}\" WITH (FORCE)")).execute(&admin).await.unwrap();
    admin.close().await;
}

pub fn dec(s: &str) -> Decimal {
    models::money::parse_decimal(s).unwrap()
}

/// The value of metric `name` in Prometheus text, summed over its series (`None` when absent).
pub fn metric(text: &str, name: &str) -> Option<f64> {
    let values: Vec<f64> = text
        .lines()
        .filter(|line| !line.starts_with('#'))
        .filter_map(|line| {
            let (series, value) = line.rsplit_once(' ')?;
            let metric_name = series.split('{').next()?;
            (metric_name == name).then(|| value.parse::<f64>().ok()).flatten()
        })
        .collect();
    (!values.is_empty()).then(|| values.iter().sum())
}

/// GETs `/metrics` at `addr`.
pub async fn scrape(http: &reqwest::Client, addr: SocketAddr) -> String {
    let response = http.get(format!("http://{addr}/metrics")).send().await.expect("metrics answer");
    assert_eq!(response.status().as_u16(), 200);
    response.text().await.expect("text")
}
