//! Wiring of the ledger's roles on real infrastructure (real build only): the `ledger` binary
//! and the tests start the very same roles through this module.

use std::sync::Arc;
use std::time::Duration;

use futures::FutureExt;
use tokio::net::TcpListener;

use crate::adapters::nats::NatsBus;
use crate::adapters::pg::{self, PgEventStore, PgReadModel, SetupError};
use crate::config::LedgerConfig;
use crate::http::health::{DepHealth, Health, State};
use crate::http::ledger::{command_router, query_router};
use crate::ledger::command::CommandHandler;
use crate::ledger::{processor, relay};
use crate::metrics::{Kind, Metrics};
use crate::ports::ledger::{BusError, EventStore, ReadError};

/// Outbox rows waiting before `/health` calls the outbox degraded.
pub const OUTBOX_BACKLOG_DEGRADED: u64 = 1000;
/// Age of the oldest event not yet projected before the read model is degraded.
pub const READ_LAG_DEGRADED: Duration = Duration::from_secs(30);
/// How often a process samples the gauges of `/metrics` (backlog, lag, pools).
pub const METRICS_SAMPLE_INTERVAL: Duration = Duration::from_secs(2);
/// How long the query API's `/health` waits for the read-model lag (it needs the event store,
/// which reads do not).
pub const HEALTH_LAG_WAIT: Duration = Duration::from_millis(500);

/// Why the ledger could not start.
#[derive(Debug, thiserror::Error)]
pub enum AppError {
    #[error(transparent)]
    Setup(#[from] SetupError),
    #[error(transparent)]
    Bus(#[from] BusError),
    #[error(transparent)]
    Read(#[from] ReadError),
    #[error("io: {0}")]
    Io(#[from] std::io::Error),
}

/// Creates the databases where missing and runs both migrations.
///
/// # Errors
/// [`AppError`] when a database is unreachable or a migration fails.
pub async fn prepare(config: &LedgerConfig) -> Result<(), AppError> {
    pg::ensure_database(&config.ledger_database_url).await?;
    pg::ensure_database(&config.read_database_url).await?;
    pg::migrate_event_store(&pg::lazy_pool(&config.ledger_database_url, 1)?).await?;
    pg::migrate_read_model(&pg::lazy_pool(&config.read_database_url, 1)?).await?;
    Ok(())
}

/// The adapters of one ledger process, and its metrics. Connections are lazy: it starts with
/// dependencies down.
#[derive(Clone)]
pub struct Ledger {
    pub config: LedgerConfig,
    pub store: PgEventStore,
    pub read: PgReadModel,
    pub bus: NatsBus,
    pub metrics: Arc<Metrics>,
}

/// The read model's distance from the event store.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReadLag {
    /// Events in the store not yet applied.
    pub positions: u64,
    /// Age of the oldest event not yet applied (0 when caught up).
    pub seconds: i64,
    pub events_applied: i64,
    pub last_global_position: i64,
}

impl Ledger {
    /// # Errors
    /// [`AppError`] when a url does not parse.
    pub async fn connect(config: LedgerConfig) -> Result<Ledger, AppError> {
        Self::connect_as(config, "ledger").await
    }

    /// Connects, naming the process's metrics `service="{service}"` (ledger-api, ledger-query,
    /// ledger-relay, ledger-processor).
    ///
    /// # Errors
    /// [`AppError`] when a url does not parse.
    pub async fn connect_as(config: LedgerConfig, service: &str) -> Result<Ledger, AppError> {
        let store = PgEventStore::new(pg::lazy_pool(&config.ledger_database_url, config.pool_max)?);
        let read = PgReadModel::new(pg::lazy_pool(&config.read_database_url, config.pool_max)?);
        let bus = NatsBus::connect(&config.nats_url, config.topology.clone()).await?;
        Ok(Ledger { config, store, read, bus, metrics: Metrics::new(Kind::Ledger, service) })
    }

    /// The outbox backlog, also set on its gauge: `/health` and `/metrics` show the same number.
    ///
    /// # Errors
    /// The event store's error.
    pub async fn sample_outbox(&self) -> Result<u64, crate::ports::ledger::StoreError> {
        let backlog = self.store.backlog().await?;
        self.metrics.outbox_backlog.set(backlog as i64);
        Ok(backlog)
    }

    /// The read model's lag, also set on its gauges: the events past its checkpoint's
    /// position, and the age of the oldest of them.
    ///
    /// # Errors
    /// A message when either database fails.
    pub async fn sample_read_lag(&self) -> Result<ReadLag, String> {
        let checkpoint = self.read.checkpoint().await.map_err(|e| e.to_string())?;
        let (applied, position) = checkpoint.map_or((0, 0), |c| (c.events_applied, c.last_global_position));
        let (positions, seconds) = self.store.lag_after(position).await.map_err(|e| e.to_string())?;
        let lag = ReadLag { positions, seconds, events_applied: applied, last_global_position: position };
        self.metrics.read_model_lag_positions.set(lag.positions as i64);
        self.metrics.read_model_lag_seconds.set(lag.seconds as f64);
        Ok(lag)
    }

    /// Sets both pools' gauges.
    fn sample_pools(&self) {
        for (name, pool) in [("event_store", self.store.pool()), ("read_model", self.read.pool())] {
            let (in_use, max) = pg::pool_usage(pool);
            self.metrics.pool(name, in_use, max);
        }
    }

    /// Samples the gauges every [`METRICS_SAMPLE_INTERVAL`], forever: the pools, and the outbox
    /// backlog and/or the read-model lag (a sample that fails keeps the last value).
    pub async fn run_sampler(self, outbox: bool, read_lag: bool) {
        loop {
            self.sample_pools();
            if outbox && let Err(e) = self.sample_outbox().await {
                tracing::debug!(error = %e, "outbox backlog not sampled");
            }
            if read_lag && let Err(e) = self.sample_read_lag().await {
                tracing::debug!(error = %e, "read-model lag not sampled");
            }
            tokio::time::sleep(METRICS_SAMPLE_INTERVAL).await;
        }
    }

    fn event_store_probe(&self) -> impl Fn() -> futures::future::BoxFuture<'static, DepHealth> + Send + Sync + 'static {
        let ledger = self.clone();
        move || {
            let ledger = ledger.clone();
            async move {
                match ledger.sample_outbox().await {
                    Ok(backlog) if backlog > OUTBOX_BACKLOG_DEGRADED => {
                        DepHealth::up().with_state(State::Degraded).detail("outbox_backlog", backlog)
                    }
                    Ok(backlog) => DepHealth::up().detail("outbox_backlog", backlog),
                    Err(e) => DepHealth::down(&e.to_string()),
                }
            }
            .boxed()
        }
    }

    fn nats_probe(&self) -> impl Fn() -> futures::future::BoxFuture<'static, DepHealth> + Send + Sync + 'static {
        let bus = self.bus.clone();
        move || {
            let connected = bus.is_connected();
            async move { if connected { DepHealth::up() } else { DepHealth::down("not connected") } }.boxed()
        }
    }

    fn read_model_probe(&self) -> impl Fn() -> futures::future::BoxFuture<'static, DepHealth> + Send + Sync + 'static {
        let ledger = self.clone();
        move || {
            let ledger = ledger.clone();
            async move {
                let checkpoint = match ledger.read.checkpoint().await {
                    Ok(checkpoint) => checkpoint,
                    Err(e) => return DepHealth::down(&e.to_string()),
                };
                let mut health = match checkpoint {
                    None => DepHealth::up().detail("events_applied", 0),
                    Some(c) => DepHealth::up()
                        .detail("events_applied", c.events_applied)
                        .detail("last_global_position", c.last_global_position)
                        .detail("seconds_since_update", c.seconds_since_update),
                };
                // The lag needs the event store too; without it reads still work, so it is
                // asked briefly and its absence only noted.
                match tokio::time::timeout(HEALTH_LAG_WAIT, ledger.sample_read_lag())
                    .await
                    .unwrap_or_else(|_| Err(format!("the event store did not answer within {HEALTH_LAG_WAIT:?}")))
                {
                    Ok(lag) => {
                        health = health.detail("lag_positions", lag.positions).detail("lag_seconds", lag.seconds);
                        if lag.seconds.max(0) as u64 > READ_LAG_DEGRADED.as_secs() {
                            health = health.with_state(State::Degraded);
                        }
                    }
                    Err(e) => health = health.detail("lag", format!("unknown: {e}")),
                }
                health
            }
            .boxed()
        }
    }

    /// Health of the command API; with the relay in the same process, NATS too (not critical:
    /// writes go on while it is down, the read model lags).
    pub fn api_health(&self, with_relay: bool) -> Health {
        let health = Health::new().probe("event_store", true, self.event_store_probe());
        if with_relay { health.probe("nats", false, self.nats_probe()) } else { health }
    }

    /// Health of the query API; with the processor in the same process, NATS and the event
    /// store's outbox too (not critical: reads go on, stale).
    pub fn query_health(&self, with_processor: bool) -> Health {
        let health = Health::new().probe("read_model", true, self.read_model_probe());
        if with_processor {
            health.probe("nats", false, self.nats_probe()).probe("event_store", false, self.event_store_probe())
        } else {
            health
        }
    }

    /// Serves the command API until the task is dropped.
    ///
    /// # Errors
    /// I/O errors of the listener.
    pub async fn serve_api(self, listener: TcpListener, with_relay: bool) -> Result<(), AppError> {
        let router = command_router(
            CommandHandler::new(self.store.clone()).with_metrics(self.metrics.clone()),
            self.api_health(with_relay),
            self.config.api_token.clone(),
        );
        let router = crate::http::with_metrics(router, self.metrics.clone());
        tokio::select! {
            served = crate::http::serve(listener, router) => served?,
            () = self.clone().run_sampler(true, false) => {}
        }
        Ok(())
    }

    /// Serves the query API until the task is dropped.
    ///
    /// # Errors
    /// I/O errors of the listener.
    pub async fn serve_query(self, listener: TcpListener, with_processor: bool) -> Result<(), AppError> {
        let router = query_router(self.read.clone(), self.query_health(with_processor));
        let router = crate::http::with_metrics(router, self.metrics.clone());
        tokio::select! {
            served = crate::http::serve(listener, router) => served?,
            () = self.clone().run_sampler(false, true) => {}
        }
        Ok(())
    }

    /// Runs the outbox relay forever, sampling the outbox backlog.
    pub async fn run_relay(self) {
        tokio::join!(relay::run_relay(&self.store, &self.bus, &self.metrics), self.clone().run_sampler(true, false));
    }

    /// Runs the read processor forever, sampling the read model's lag.
    pub async fn run_processor(self) {
        tokio::join!(
            processor::run_processor(&self.bus, &self.read, &self.metrics),
            self.clone().run_sampler(false, true)
        );
    }

    /// Serves `/metrics` alone on `listener` (for the relay and the processor, which serve no API).
    ///
    /// # Errors
    /// I/O errors of the listener.
    pub async fn serve_metrics(self, listener: TcpListener) -> Result<(), AppError> {
        crate::http::serve(listener, crate::http::metrics_router(self.metrics.clone())).await?;
        Ok(())
    }

    /// Empties the read model and replays the event store into it.
    ///
    /// # Errors
    /// [`ReadError`] when either database fails.
    pub async fn rebuild(&self) -> Result<u64, ReadError> {
        use crate::ports::ledger::ReadModel;
        self.read.rebuild(&self.store).await
    }
}
