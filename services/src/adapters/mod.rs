//! Real adapters (real build only): sqlx for the event store and read model, async-nats for
//! JetStream. The simulator never compiles them.

pub mod nats;
pub mod pg;
