//! Real adapters (real build only): sqlx for the event store, read model and order store;
//! async-nats for JetStream; redis for the stock cache; rdkafka for the order queue. The
//! simulator never compiles them.

pub mod kafka;
pub mod nats;
pub mod pg;
pub mod pg_orders;
pub mod redis;
