//! Configuration from the environment, defaulting to the local services on 127.0.0.1.

use std::net::SocketAddr;

use crate::adapters::nats::NatsTopology;

/// The ledger's settings. Every field has an environment variable and a local default.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LedgerConfig {
    /// `LEDGER_DATABASE_URL`: the event store (CockroachDB, or PostgreSQL standing in).
    pub ledger_database_url: String,
    /// `READ_DATABASE_URL`: the read model (PostgreSQL).
    pub read_database_url: String,
    /// `NATS_URL`.
    pub nats_url: String,
    /// `LEDGER_API_ADDR`: commands.
    pub api_addr: SocketAddr,
    /// `LEDGER_QUERY_ADDR`: queries.
    pub query_addr: SocketAddr,
    /// `LEDGER_POOL_MAX`: connections per pool.
    pub pool_max: u32,
    /// `LEDGER_NATS_STREAM`, `LEDGER_NATS_SUBJECT`, `LEDGER_NATS_DURABLE`.
    pub topology: NatsTopology,
    /// `LEDGER_API_TOKEN`: when set, commands need `Authorization: Bearer <token>`.
    pub api_token: Option<String>,
    /// `METRICS_ADDR`: where the relay and the processor, which serve no API, serve `/metrics`
    /// (the APIs serve it on their own address). Unset: nowhere.
    pub metrics_addr: Option<SocketAddr>,
}

/// A setting that does not parse.
#[derive(Debug, thiserror::Error)]
#[error("{name}: {reason}")]
pub struct ConfigError {
    pub name: &'static str,
    pub reason: String,
}

/// Logs to stderr, filtered by `RUST_LOG` (default `info`), as JSON lines when asked.
pub fn init_tracing(json: bool) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    if json {
        tracing_subscriber::fmt().json().with_env_filter(filter).init();
    } else {
        tracing_subscriber::fmt().with_env_filter(filter).init();
    }
}

/// The shared `main` of the service binaries: logs, configuration (exit 2 when it does not
/// parse), a tokio runtime, the role, and exit 1 with the error logged when the role fails.
pub fn run_binary<C, E, Fut>(
    name: &str,
    json: bool,
    config: Result<C, ConfigError>,
    role: impl FnOnce(C) -> Fut,
) -> std::process::ExitCode
where
    Fut: std::future::Future<Output = Result<(), E>>,
    E: std::fmt::Display,
{
    init_tracing(json);
    let config = match config {
        Ok(config) => config,
        Err(e) => {
            eprintln!("{name}: bad configuration: {e}");
            return std::process::ExitCode::from(2);
        }
    };
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build().expect("tokio runtime");
    match runtime.block_on(role(config)) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!(error = %e, "{name} stopped");
            std::process::ExitCode::FAILURE
        }
    }
}

fn var(name: &'static str, default: &str) -> String {
    std::env::var(name).ok().filter(|v| !v.is_empty()).unwrap_or_else(|| default.to_string())
}

fn parsed<T: std::str::FromStr>(name: &'static str, default: &str) -> Result<T, ConfigError>
where
    T::Err: std::fmt::Display,
{
    var(name, default).parse().map_err(|e: T::Err| ConfigError { name, reason: e.to_string() })
}

fn optional<T: std::str::FromStr>(name: &'static str) -> Result<Option<T>, ConfigError>
where
    T::Err: std::fmt::Display,
{
    match std::env::var(name).ok().filter(|v| !v.is_empty()) {
        Some(v) => v.parse().map(Some).map_err(|e: T::Err| ConfigError { name, reason: e.to_string() }),
        None => Ok(None),
    }
}

impl LedgerConfig {
    /// Reads the environment.
    ///
    /// # Errors
    /// [`ConfigError`] naming the variable that does not parse.
    pub fn from_env() -> Result<LedgerConfig, ConfigError> {
        let defaults = NatsTopology::default();
        Ok(LedgerConfig {
            ledger_database_url: var("LEDGER_DATABASE_URL", "postgres://postgres@127.0.0.1:5432/ledger_events"),
            read_database_url: var("READ_DATABASE_URL", "postgres://postgres@127.0.0.1:5432/ledger_read"),
            nats_url: var("NATS_URL", "nats://127.0.0.1:4222"),
            api_addr: parsed("LEDGER_API_ADDR", "127.0.0.1:4000")?,
            query_addr: parsed("LEDGER_QUERY_ADDR", "127.0.0.1:4001")?,
            pool_max: parsed("LEDGER_POOL_MAX", "16")?,
            topology: NatsTopology {
                stream: var("LEDGER_NATS_STREAM", &defaults.stream),
                subject_prefix: var("LEDGER_NATS_SUBJECT", &defaults.subject_prefix),
                durable: var("LEDGER_NATS_DURABLE", &defaults.durable),
            },
            api_token: std::env::var("LEDGER_API_TOKEN").ok().filter(|t| !t.is_empty()),
            metrics_addr: optional("METRICS_ADDR")?,
        })
    }
}

/// The order system's settings. Every field has an environment variable and a local default.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OrdersConfig {
    /// `ORDERS_DATABASE_URL`.
    pub database_url: String,
    /// `REDIS_URL`.
    pub redis_url: String,
    /// `KAFKA_BROKERS`.
    pub kafka_brokers: String,
    /// `ORDERS_API_ADDR`.
    pub api_addr: SocketAddr,
    /// `WAITING_ROOM_ADDR`.
    pub waiting_room_addr: SocketAddr,
    /// `WAITING_ROOM_URL`: where `/order` redirects (default `http://WAITING_ROOM_ADDR`).
    pub waiting_room_url: String,
    /// `ORDERS_POOL_MAX`.
    pub pool_max: u32,
    /// `ORDERS_IN_FLIGHT_MAX`: orders in flight before the waiting room.
    pub in_flight_max: usize,
    /// `ORDERS_RATE_LIMIT`: orders per user per second.
    pub rate_limit: u32,
    /// `ORDERS_API_TOKEN`: when set, `/init` and `/order` need `Authorization: Bearer <token>`.
    pub api_token: Option<String>,
    /// `METRICS_ADDR`: where the worker, which serves no API, serves `/metrics`. Unset: nowhere.
    pub metrics_addr: Option<SocketAddr>,
}

impl OrdersConfig {
    /// Reads the environment.
    ///
    /// # Errors
    /// [`ConfigError`] naming the variable that does not parse.
    pub fn from_env() -> Result<OrdersConfig, ConfigError> {
        let waiting_room_addr: SocketAddr = parsed("WAITING_ROOM_ADDR", "127.0.0.1:3001")?;
        Ok(OrdersConfig {
            database_url: var("ORDERS_DATABASE_URL", "postgres://postgres@127.0.0.1:5432/orders"),
            redis_url: var("REDIS_URL", "redis://127.0.0.1:6379"),
            kafka_brokers: var("KAFKA_BROKERS", "127.0.0.1:9092"),
            api_addr: parsed("ORDERS_API_ADDR", "127.0.0.1:3000")?,
            waiting_room_addr,
            waiting_room_url: var("WAITING_ROOM_URL", &format!("http://{waiting_room_addr}")),
            pool_max: parsed("ORDERS_POOL_MAX", "16")?,
            in_flight_max: parsed("ORDERS_IN_FLIGHT_MAX", &crate::orders::api::ORDERS_IN_FLIGHT_MAX.to_string())?,
            rate_limit: parsed("ORDERS_RATE_LIMIT", &crate::orders::api::USER_ORDERS_PER_WINDOW_MAX.to_string())?,
            api_token: std::env::var("ORDERS_API_TOKEN").ok().filter(|t| !t.is_empty()),
            metrics_addr: optional("METRICS_ADDR")?,
        })
    }
}
