//! Wiring of the ledger's roles on real infrastructure (real build only): the `ledger` binary
//! and the tests start the very same roles through this module.

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
use crate::ports::ledger::{BusError, EventStore, ReadError};

/// Outbox rows waiting before `/health` calls the outbox degraded.
pub const OUTBOX_BACKLOG_DEGRADED: u64 = 1000;
/// Seconds without a projected event, while events wait, before the read model is degraded.
pub const READ_LAG_DEGRADED: Duration = Duration::from_secs(30);

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

/// The adapters of one ledger process. Connections are lazy: it starts with dependencies down.
#[derive(Clone)]
pub struct Ledger {
    pub config: LedgerConfig,
    pub store: PgEventStore,
    pub read: PgReadModel,
    pub bus: NatsBus,
}

impl Ledger {
    /// # Errors
    /// [`AppError`] when a url does not parse.
    pub async fn connect(config: LedgerConfig) -> Result<Ledger, AppError> {
        let store = PgEventStore::new(pg::lazy_pool(&config.ledger_database_url, config.pool_max)?);
        let read = PgReadModel::new(pg::lazy_pool(&config.read_database_url, config.pool_max)?);
        let bus = NatsBus::connect(&config.nats_url, config.topology.clone()).await?;
        Ok(Ledger { config, store, read, bus })
    }

    fn event_store_probe(&self) -> impl Fn() -> futures::future::BoxFuture<'static, DepHealth> + Send + Sync + 'static {
        let store = self.store.clone();
        move || {
            let store = store.clone();
            async move {
                match store.backlog().await {
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
        let read = self.read.clone();
        move || {
            let read = read.clone();
            async move {
                match read.checkpoint().await {
                    Ok(None) => DepHealth::up().detail("events_applied", 0),
                    Ok(Some(c)) => DepHealth::up()
                        .detail("events_applied", c.events_applied)
                        .detail("last_global_position", c.last_global_position)
                        .detail("seconds_since_update", c.seconds_since_update),
                    Err(e) => DepHealth::down(&e.to_string()),
                }
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
            CommandHandler::new(self.store.clone()),
            self.api_health(with_relay),
            self.config.api_token.clone(),
        );
        crate::http::serve(listener, router).await?;
        Ok(())
    }

    /// Serves the query API until the task is dropped.
    ///
    /// # Errors
    /// I/O errors of the listener.
    pub async fn serve_query(self, listener: TcpListener, with_processor: bool) -> Result<(), AppError> {
        let router = query_router(self.read.clone(), self.query_health(with_processor));
        crate::http::serve(listener, router).await?;
        Ok(())
    }

    /// Runs the outbox relay forever.
    pub async fn run_relay(self) {
        relay::run_relay(&self.store, &self.bus).await
    }

    /// Runs the read processor forever.
    pub async fn run_processor(self) {
        processor::run_processor(&self.bus, &self.read).await
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
