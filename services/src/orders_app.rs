//! Wiring of the order system's roles on real infrastructure (real build only): the `orders`
//! binary and the tests start the very same roles through this module.

use std::sync::Arc;
use std::time::Duration;

use futures::FutureExt;
use tokio::net::TcpListener;

use crate::adapters::kafka::{self, KafkaOrderConsumer, KafkaOrderProducer};
use crate::adapters::pg::{self, SetupError};
use crate::adapters::pg_orders::{self, PgOrderStore};
use crate::adapters::redis::RedisStockCache;
use crate::config::OrdersConfig;
use crate::http::health::{DepHealth, Health, State};
use crate::http::orders::{api_router, waiting_room_router};
use crate::metrics::{Kind, Metrics};
use crate::orders::api::OrderApi;
use crate::orders::reconcile::{ReconcileReport, reconcile};
use crate::orders::waiting_room::WaitingRoom;
use crate::orders::worker::{self, WorkStats};
use crate::ports::orders::{CacheError, QueueError};

/// Pause of the worker after a failed round, before it rejoins the group from the last
/// committed offset.
pub const WORKER_RESTART_PAUSE: Duration = Duration::from_millis(500);

/// Why the order system could not start or run.
#[derive(Debug, thiserror::Error)]
pub enum OrdersError {
    #[error(transparent)]
    Setup(#[from] SetupError),
    #[error(transparent)]
    Queue(#[from] QueueError),
    #[error(transparent)]
    Cache(#[from] CacheError),
    #[error(transparent)]
    Reconcile(#[from] crate::orders::reconcile::ReconcileError),
    #[error("io: {0}")]
    Io(#[from] std::io::Error),
}

/// Creates the database where missing, runs the migrations and creates the topic.
///
/// # Errors
/// [`OrdersError`] when PostgreSQL or the broker is unreachable.
pub async fn prepare(config: &OrdersConfig) -> Result<(), OrdersError> {
    pg::ensure_database(&config.database_url).await?;
    pg_orders::migrate(&pg::lazy_pool(&config.database_url, 1)?).await?;
    kafka::ensure_topic(&config.kafka_brokers).await?;
    Ok(())
}

/// How often a process samples the gauges of `/metrics` (consumer lag, stock drift, pool).
pub const METRICS_SAMPLE_INTERVAL: Duration = Duration::from_secs(2);
/// Orders waiting for the worker before `/health` calls the worker's backlog degraded (the
/// spec's warning level, as in `deploy/prometheus/alerts.yml`).
pub const CONSUMER_LAG_DEGRADED: i64 = 1000;

/// The adapters of one order-system process, and its metrics.
#[derive(Clone)]
pub struct Orders {
    pub config: OrdersConfig,
    pub cache: RedisStockCache,
    pub producer: KafkaOrderProducer,
    pub store: PgOrderStore,
    pub metrics: Arc<Metrics>,
}

impl Orders {
    /// # Errors
    /// [`OrdersError`] when a url or the broker configuration is refused.
    pub fn connect(config: OrdersConfig) -> Result<Orders, OrdersError> {
        Self::connect_as(config, "orders")
    }

    /// Connects, naming the process's metrics `service="{service}"` (orders-api, waiting-room,
    /// orders-worker).
    ///
    /// # Errors
    /// [`OrdersError`] when a url or the broker configuration is refused.
    pub fn connect_as(config: OrdersConfig, service: &str) -> Result<Orders, OrdersError> {
        let metrics = Metrics::new(Kind::Orders, service);
        let cache = RedisStockCache::new(&config.redis_url)?.with_metrics(metrics.clone());
        let producer = KafkaOrderProducer::new(&config.kafka_brokers)?;
        let store = PgOrderStore::new(pg::lazy_pool(&config.database_url, config.pool_max)?);
        Ok(Orders { config, cache, producer, store, metrics })
    }

    fn sample_pool(&self) {
        let (in_use, max) = pg::pool_usage(self.store.pool());
        self.metrics.pool("orders", in_use, max);
    }

    /// Redis's stock minus PostgreSQL's, per product, set on `orders_stock_drift` (negative by
    /// the orders accepted and not yet persisted).
    ///
    /// # Errors
    /// [`OrdersError`] when Redis or PostgreSQL fails.
    pub async fn sample_stock_drift(&self) -> Result<(), OrdersError> {
        use crate::ports::orders::{OrderStore, StockCache};
        let products =
            self.store.products().await.map_err(|e| OrdersError::Cache(CacheError::Unavailable(e.to_string())))?;
        for product in products {
            if let Some(stock) = self.cache.stock(&product.product_id).await? {
                let labels = crate::metrics::ProductLabels { product: product.product_id.clone() };
                self.metrics.stock_drift.get_or_create(&labels).set(stock - product.stock);
            }
        }
        Ok(())
    }

    /// Samples the gauges every [`METRICS_SAMPLE_INTERVAL`], forever: the pool and `redis_up`,
    /// and with `queue` the consumer lag and the stock drift (a failed sample keeps the last
    /// value). The API samples the queue too: a stopped worker serves no `/metrics`, and its
    /// lag is what must show.
    pub async fn run_sampler(self, queue: bool) {
        let mut observer = None;
        loop {
            self.sample_pool();
            // `redis_up` from a PING each round, not only from the orders that happen to come.
            if let Err(e) = self.cache.ping().await {
                tracing::debug!(error = %e, "Redis did not answer the sampler's PING");
            }
            if queue {
                self.sample_queue(&mut observer).await;
            }
            tokio::time::sleep(METRICS_SAMPLE_INTERVAL).await;
        }
    }

    /// The consumer lag (through `observer`, made on first use) and the stock drift.
    async fn sample_queue(&self, observer: &mut Option<KafkaOrderConsumer>) {
        if observer.is_none() {
            *observer = KafkaOrderConsumer::observer(&self.config.kafka_brokers, kafka::CONSUMER_GROUP).ok();
        }
        if let Some(consumer) = observer.as_ref() {
            match consumer.lag().await {
                Ok(lag) => {
                    self.metrics.kafka_consumer_lag.set(lag as i64);
                }
                Err(e) => tracing::debug!(error = %e, "consumer lag not sampled"),
            }
        }
        if let Err(e) = self.sample_stock_drift().await {
            tracing::debug!(error = %e, "stock drift not sampled");
        }
    }

    /// Redis, the broker and PostgreSQL: each critical for `/order`; and the worker's backlog
    /// (the sampled `kafka_consumer_lag`, the number `/metrics` shows): degraded above
    /// [`CONSUMER_LAG_DEGRADED`], never critical (orders are accepted and wait in the topic).
    pub fn health(&self) -> Health {
        let (cache, producer, store) = (self.cache.clone(), self.producer.clone(), self.store.clone());
        let metrics = self.metrics.clone();
        Health::new()
            .probe("worker_backlog", false, move || {
                let lag = metrics.kafka_consumer_lag.get();
                let state = if lag > CONSUMER_LAG_DEGRADED { State::Degraded } else { State::Up };
                async move { DepHealth::up().with_state(state).detail("consumer_lag", lag) }.boxed()
            })
            .probe("redis", true, move || {
                let cache = cache.clone();
                async move { cache.ping().await.map_or_else(|e| DepHealth::down(&e.to_string()), |()| DepHealth::up()) }
                    .boxed()
            })
            .probe("kafka", true, move || {
                let producer = producer.clone();
                async move { if producer.reachable().await { DepHealth::up() } else { DepHealth::down("no metadata") } }
                    .boxed()
            })
            .probe("postgres", false, move || {
                let store = store.clone();
                async move { store.ping().await.map_or_else(|e| DepHealth::down(&e.to_string()), |()| DepHealth::up()) }
                    .boxed()
            })
    }

    pub fn api(&self) -> Arc<OrderApi<RedisStockCache, KafkaOrderProducer, PgOrderStore>> {
        let mut api = OrderApi::new(
            self.cache.clone(),
            self.producer.clone(),
            self.store.clone(),
            self.config.waiting_room_url.clone(),
        );
        api.in_flight_max = self.config.in_flight_max;
        api.rate_limit = self.config.rate_limit;
        Arc::new(api)
    }

    /// Serves the order API until the task is dropped.
    ///
    /// # Errors
    /// I/O errors of the listener.
    pub async fn serve_api(self, listener: TcpListener) -> Result<(), OrdersError> {
        let router = api_router(self.api(), self.health(), self.config.api_token.clone());
        let router = crate::http::with_metrics(router, self.metrics.clone());
        tokio::select! {
            served = crate::http::serve(listener, router) => served?,
            () = self.clone().run_sampler(true) => {}
        }
        Ok(())
    }

    /// Serves `/metrics` alone on `listener` (for the worker, which serves no API).
    ///
    /// # Errors
    /// I/O errors of the listener.
    pub async fn serve_metrics(self, listener: TcpListener) -> Result<(), OrdersError> {
        crate::http::serve(listener, crate::http::metrics_router(self.metrics.clone())).await?;
        Ok(())
    }

    /// Serves the waiting room until the task is dropped.
    ///
    /// # Errors
    /// I/O errors of the listener.
    pub async fn serve_waiting_room(self, listener: TcpListener) -> Result<(), OrdersError> {
        let cache = self.cache.clone();
        let health = Health::new().probe("redis", true, move || {
            let cache = cache.clone();
            async move { cache.ping().await.map_or_else(|e| DepHealth::down(&e.to_string()), |()| DepHealth::up()) }
                .boxed()
        });
        let router = waiting_room_router(WaitingRoom::default(), self.cache.clone(), health);
        let router = crate::http::with_metrics(router, self.metrics.clone());
        tokio::select! {
            served = crate::http::serve(listener, router) => served?,
            () = self.clone().run_sampler(false) => {}
        }
        Ok(())
    }

    /// Runs the inventory worker forever: rounds of poll, persist, commit; after a failed round
    /// it leaves the group and rejoins from the last committed offset.
    pub async fn run_worker(self) {
        tokio::join!(self.clone().work_forever(), self.clone().run_sampler(true));
    }

    async fn work_forever(self) {
        loop {
            let mut consumer = match KafkaOrderConsumer::new(&self.config.kafka_brokers, kafka::CONSUMER_GROUP) {
                Ok(consumer) => consumer,
                Err(e) => {
                    tracing::warn!(error = %e, "worker cannot join the group");
                    tokio::time::sleep(WORKER_RESTART_PAUSE).await;
                    continue;
                }
            };
            let mut total = WorkStats::default();
            loop {
                match worker::work_once(&mut consumer, &self.store).await {
                    Ok(stats) => {
                        self.metrics.worker_orders_persisted.inc_by(stats.inserted);
                        total.inserted += stats.inserted;
                        total.duplicates += stats.duplicates;
                        if stats.inserted + stats.duplicates > 0 {
                            tracing::debug!(
                                inserted = total.inserted,
                                duplicates = total.duplicates,
                                "worker progress"
                            );
                        }
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, "worker round failed: rejoining from the committed offset");
                        break;
                    }
                }
            }
            drop(consumer);
            tokio::time::sleep(WORKER_RESTART_PAUSE).await;
        }
    }

    /// Compares Redis with PostgreSQL and re-initialises Redis where it lost the sale or offers
    /// more than PostgreSQL has. The worker's lag bounds the orders in flight.
    ///
    /// # Errors
    /// [`OrdersError`] when a dependency is down.
    pub async fn reconcile(&self, quiet: bool) -> Result<ReconcileReport, OrdersError> {
        let consumer = KafkaOrderConsumer::observer(&self.config.kafka_brokers, kafka::CONSUMER_GROUP)?;
        let lag =
            || async { consumer.lag().await.map_err(|e| crate::orders::reconcile::ReconcileError::Lag(e.to_string())) };
        Ok(reconcile(&self.cache, &self.store, lag, quiet).await?)
    }
}
