//! Prometheus metrics of a service process (prometheus-client), shared by both builds: the real
//! build serves them on `/metrics`; the simulator can read the same values on simulated time.
//!
//! Each process registers only its own service's metrics (a ledger process has no `redis_up`,
//! which `deploy/prometheus/alerts.yml` would read as Redis down), all with a constant label
//! `service` naming the role. The names are the contract with the alerts: changing one means
//! changing `alerts.yml` and its tests.

use std::sync::Arc;
use std::sync::atomic::AtomicU64;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

/// The content type of [`Metrics::encode`]'s text.
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// Latency buckets, seconds: 0.25 ms to about 4 s, doubling.
fn latency_buckets() -> Histogram {
    Histogram::new(exponential_buckets(0.000_25, 2.0, 15))
}

/// A request's route (the matched pattern, never the raw path) and status.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RequestLabels {
    pub route: String,
    pub status: String,
}

/// A request's route.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RouteLabels {
    pub route: String,
}

/// Why a command was retried.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RetryLabels {
    pub reason: String,
}

/// A database pool.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct PoolLabels {
    pub pool: String,
}

/// A product.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ProductLabels {
    pub product: String,
}

/// Which metrics a process registers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Ledger,
    Orders,
}

/// The metrics of one process. Fields of the other kind exist but are not registered.
pub struct Metrics {
    registry: Registry,
    /// `http_requests_total{route,status}`.
    pub http_requests: Family<RequestLabels, Counter>,
    /// `http_request_duration_seconds{route}`.
    pub http_duration: Family<RouteLabels, Histogram>,
    /// `db_pool_connections_in_use{pool}` and `db_pool_connections_max{pool}`.
    pub db_pool_in_use: Family<PoolLabels, Gauge>,
    pub db_pool_max: Family<PoolLabels, Gauge>,
    /// Ledger: `ledger_command_retries_total{reason}`: version_conflict, serialization_failure,
    /// ambiguous_commit.
    pub command_retries: Family<RetryLabels, Counter>,
    /// Ledger: committed events not yet published (`ledger_outbox_backlog`).
    pub outbox_backlog: Gauge,
    /// Ledger: `ledger_relay_publish_failures_total`.
    pub relay_publish_failures: Counter,
    /// Ledger: how far the read model is behind the event store, in positions and seconds.
    pub read_model_lag_positions: Gauge,
    pub read_model_lag_seconds: Gauge<f64, AtomicU64>,
    /// Ledger: `ledger_jetstream_redeliveries_total`.
    pub jetstream_redeliveries: Counter,
    /// Orders: 1 when the last Redis call answered, 0 when it failed (`redis_up`).
    pub redis_up: Gauge,
    /// Orders: `redis_command_duration_seconds` and `redis_errors_total`.
    pub redis_duration: Histogram,
    pub redis_errors: Counter,
    /// Orders: messages of the orders topic not yet committed by the worker's group.
    pub kafka_consumer_lag: Gauge,
    /// Orders: `worker_orders_persisted_total`.
    pub worker_orders_persisted: Counter,
    /// Orders: Redis's stock minus what PostgreSQL says is left (`orders_stock_drift{product}`).
    pub stock_drift: Family<ProductLabels, Gauge>,
}

impl Metrics {
    /// The metrics of a `kind` process, labelled `service="{service}"`.
    pub fn new(kind: Kind, service: &str) -> Arc<Metrics> {
        let mut registry = Registry::with_labels(
            [(std::borrow::Cow::Borrowed("service"), std::borrow::Cow::Owned(service.to_string()))].into_iter(),
        );
        let m = Metrics {
            registry: Registry::default(),
            http_requests: Family::default(),
            http_duration: Family::new_with_constructor(latency_buckets),
            db_pool_in_use: Family::default(),
            db_pool_max: Family::default(),
            command_retries: Family::default(),
            outbox_backlog: Gauge::default(),
            relay_publish_failures: Counter::default(),
            read_model_lag_positions: Gauge::default(),
            read_model_lag_seconds: Gauge::default(),
            jetstream_redeliveries: Counter::default(),
            redis_up: Gauge::default(),
            redis_duration: latency_buckets(),
            redis_errors: Counter::default(),
            kafka_consumer_lag: Gauge::default(),
            worker_orders_persisted: Counter::default(),
            stock_drift: Family::default(),
        };
        registry.register("http_requests", "HTTP requests answered, by route and status", m.http_requests.clone());
        registry.register(
            "http_request_duration_seconds",
            "Time to answer an HTTP request, by route",
            m.http_duration.clone(),
        );
        registry.register("db_pool_connections_in_use", "Database connections in use", m.db_pool_in_use.clone());
        registry.register("db_pool_connections_max", "Database connections at most", m.db_pool_max.clone());
        match kind {
            Kind::Ledger => {
                registry.register(
                    "ledger_command_retries",
                    "Commands retried: version_conflict, serialization_failure (40001), ambiguous_commit",
                    m.command_retries.clone(),
                );
                registry.register(
                    "ledger_outbox_backlog",
                    "Committed events not yet published to NATS",
                    m.outbox_backlog.clone(),
                );
                registry.register(
                    "ledger_relay_publish_failures",
                    "Relay rounds that failed to publish to NATS",
                    m.relay_publish_failures.clone(),
                );
                registry.register(
                    "ledger_read_model_lag_positions",
                    "Events in the event store not yet applied to the read model",
                    m.read_model_lag_positions.clone(),
                );
                registry.register(
                    "ledger_read_model_lag_seconds",
                    "Seconds since the read model applied an event, while events wait",
                    m.read_model_lag_seconds.clone(),
                );
                registry.register(
                    "ledger_jetstream_redeliveries",
                    "JetStream messages delivered more than once to the processor",
                    m.jetstream_redeliveries.clone(),
                );
            }
            Kind::Orders => {
                registry.register("redis_up", "1 when Redis answered the last call, else 0", m.redis_up.clone());
                registry.register(
                    "redis_command_duration_seconds",
                    "Time of a Redis call (a script, or a pipeline)",
                    m.redis_duration.clone(),
                );
                registry.register("redis_errors", "Redis calls that failed", m.redis_errors.clone());
                registry.register(
                    "kafka_consumer_lag",
                    "Orders in the topic not yet committed by the worker's group",
                    m.kafka_consumer_lag.clone(),
                );
                registry.register(
                    "worker_orders_persisted",
                    "Orders the worker persisted to PostgreSQL",
                    m.worker_orders_persisted.clone(),
                );
                registry.register(
                    "orders_stock_drift",
                    "Stock in Redis minus the stock PostgreSQL's orders leave",
                    m.stock_drift.clone(),
                );
            }
        }
        Arc::new(Metrics { registry, ..m })
    }

    /// Counts one answered request.
    pub fn observe_request(&self, route: &str, status: u16, seconds: f64) {
        self.http_requests.get_or_create(&RequestLabels { route: route.to_string(), status: status.to_string() }).inc();
        self.http_duration.get_or_create(&RouteLabels { route: route.to_string() }).observe(seconds);
    }

    /// Counts a command retry (`version_conflict`, `serialization_failure`, `ambiguous_commit`).
    pub fn retried(&self, reason: &str) {
        self.command_retries.get_or_create(&RetryLabels { reason: reason.to_string() }).inc();
    }

    /// Sets a pool's connections in use and maximum.
    pub fn pool(&self, pool: &str, in_use: u32, max: u32) {
        let labels = PoolLabels { pool: pool.to_string() };
        self.db_pool_in_use.get_or_create(&labels).set(i64::from(in_use));
        self.db_pool_max.get_or_create(&labels).set(i64::from(max));
    }

    /// The Prometheus text of every registered metric.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        // Writing to a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Metrics").finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_process_exposes_only_its_own_kind() {
        let ledger = Metrics::new(Kind::Ledger, "ledger-api");
        ledger.observe_request("/api/v1/commands/{kind}", 201, 0.003);
        ledger.retried("version_conflict");
        ledger.outbox_backlog.set(7);
        let text = ledger.encode();
        assert!(
            text.contains(
                r#"http_requests_total{service="ledger-api",route="/api/v1/commands/{kind}",status="201"} 1"#
            ),
            "{text}"
        );
        assert!(
            text.contains(r#"ledger_command_retries_total{service="ledger-api",reason="version_conflict"} 1"#),
            "{text}"
        );
        assert!(text.contains(r#"ledger_outbox_backlog{service="ledger-api"} 7"#), "{text}");
        assert!(text.contains("http_request_duration_seconds_bucket"), "{text}");
        assert!(!text.contains("redis_up"), "a ledger process has no Redis: {text}");

        let orders = Metrics::new(Kind::Orders, "orders-worker");
        orders.redis_up.set(1);
        orders.worker_orders_persisted.inc_by(3);
        orders.pool("orders", 2, 10);
        let text = orders.encode();
        assert!(text.contains(r#"redis_up{service="orders-worker"} 1"#), "{text}");
        assert!(text.contains(r#"worker_orders_persisted_total{service="orders-worker"} 3"#), "{text}");
        assert!(text.contains(r#"db_pool_connections_max{service="orders-worker",pool="orders"} 10"#), "{text}");
        assert!(!text.contains("ledger_outbox_backlog"), "{text}");
    }
}
