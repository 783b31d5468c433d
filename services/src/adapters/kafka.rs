//! rdkafka adapter of the order queue: an idempotent producer with acks=all, and a consumer-group
//! member (`BaseConsumer`) that commits offsets by hand, after the order persisted.
//!
//! librdkafka is bundled (built from source). A `BaseConsumer` is used rather than a
//! `StreamConsumer`: dropping the latter hangs against tansu. Its blocking calls run on
//! tokio's blocking pool. Topics are created explicitly: tansu does not create them on use.

use std::sync::Arc;
use std::time::Duration;

use models::orders::Order;
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::Message;
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::{Offset, TopicPartitionList};

use crate::ports::orders::{OrderConsumer, OrderProducer, QueueError, QueuedOrder};

/// The orders topic (spec 003).
pub const ORDERS_TOPIC: &str = "orders";
/// Partitions of the topic; orders are keyed by product.
pub const ORDERS_PARTITIONS: i32 = 3;
/// The worker's consumer group (spec 004).
pub const CONSUMER_GROUP: &str = "inventory-group";
/// How long a produce may take, queueing and retries included, before it is ambiguous.
pub const PRODUCE_TIMEOUT: Duration = Duration::from_secs(5);
const _: () = assert!(PRODUCE_TIMEOUT.as_millis() <= crate::ports::orders::PRODUCE_DEADLINE_MAX.as_millis());
/// Timeout of metadata, commit and admin requests.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);

fn base_config(brokers: &str) -> ClientConfig {
    let mut config = ClientConfig::new();
    config
        .set("bootstrap.servers", brokers)
        .set("socket.timeout.ms", REQUEST_TIMEOUT.as_millis().to_string())
        .set("log_level", "3");
    config
}

/// Creates the orders topic when it does not exist.
///
/// # Errors
/// [`QueueError::Unavailable`] when the broker does not answer or refuses.
pub async fn ensure_topic(brokers: &str) -> Result<(), QueueError> {
    let admin: AdminClient<DefaultClientContext> =
        base_config(brokers).create().map_err(|e| QueueError::Unavailable(e.to_string()))?;
    let topic = NewTopic::new(ORDERS_TOPIC, ORDERS_PARTITIONS, TopicReplication::Fixed(1));
    let options = AdminOptions::new().operation_timeout(Some(REQUEST_TIMEOUT)).request_timeout(Some(REQUEST_TIMEOUT));
    // A broker that has just started may accept connections before it answers admin requests.
    let mut last = String::new();
    for attempt in 1..=TOPIC_CREATE_ATTEMPTS {
        let outcome = match admin.create_topics([&topic], &options).await {
            Ok(results) => results
                .into_iter()
                .find_map(|result| match result {
                    Ok(_) | Err((_, RDKafkaErrorCode::TopicAlreadyExists)) => None,
                    Err((topic, code)) => Some(format!("create topic {topic}: {code}")),
                })
                .map_or(Ok(()), Err),
            Err(e) => Err(e.to_string()),
        };
        match outcome {
            Ok(()) => return Ok(()),
            Err(e) => {
                tracing::warn!(attempt, error = %e, "creating the orders topic failed");
                last = e;
            }
        }
        if attempt < TOPIC_CREATE_ATTEMPTS {
            tokio::time::sleep(TOPIC_CREATE_PAUSE).await;
        }
    }
    Err(QueueError::Unavailable(last))
}

/// Attempts at creating the orders topic, and the pause between two.
pub const TOPIC_CREATE_ATTEMPTS: u32 = 5;
pub const TOPIC_CREATE_PAUSE: Duration = Duration::from_millis(500);

/// The idempotent producer.
#[derive(Clone)]
pub struct KafkaOrderProducer {
    producer: FutureProducer,
}

impl KafkaOrderProducer {
    /// # Errors
    /// [`QueueError::Unavailable`] when the configuration is refused.
    pub fn new(brokers: &str) -> Result<KafkaOrderProducer, QueueError> {
        let producer = base_config(brokers)
            .set("acks", "all")
            .set("enable.idempotence", "true")
            .set("linger.ms", "0")
            .set("message.timeout.ms", PRODUCE_TIMEOUT.as_millis().to_string())
            .create()
            .map_err(|e| QueueError::Unavailable(e.to_string()))?;
        Ok(KafkaOrderProducer { producer })
    }

    /// Whether the broker answers a metadata request (for `/health`).
    pub async fn reachable(&self) -> bool {
        let producer = self.producer.clone();
        tokio::task::spawn_blocking(move || {
            use rdkafka::producer::Producer;
            producer.client().fetch_metadata(Some(ORDERS_TOPIC), Duration::from_secs(1)).is_ok()
        })
        .await
        .unwrap_or(false)
    }
}

impl OrderProducer for KafkaOrderProducer {
    async fn produce(&self, order: &Order) -> Result<(), QueueError> {
        let payload = serde_json::to_vec(order).expect("orders serialize");
        let record = FutureRecord::to(ORDERS_TOPIC).key(order.product_id.as_str()).payload(&payload);
        match self.producer.send(record, PRODUCE_TIMEOUT).await {
            Ok(_) => Ok(()),
            // Timed out in the queue or in flight: it may have reached the broker.
            Err((KafkaError::MessageProduction(RDKafkaErrorCode::MessageTimedOut), _)) => {
                Err(QueueError::Ambiguous("produce timed out".into()))
            }
            Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), _)) => {
                Err(QueueError::Unavailable("producer queue full".into()))
            }
            Err((e, _)) => Err(QueueError::Ambiguous(e.to_string())),
        }
    }
}

/// A member of the worker's consumer group.
pub struct KafkaOrderConsumer {
    consumer: Arc<BaseConsumer>,
}

fn queue_error(e: KafkaError) -> QueueError {
    QueueError::Unavailable(e.to_string())
}

impl KafkaOrderConsumer {
    /// Joins the group and subscribes to the orders topic; with no committed offset it starts at
    /// the beginning.
    ///
    /// # Errors
    /// [`QueueError::Unavailable`] when the configuration is refused.
    pub fn new(brokers: &str, group: &str) -> Result<KafkaOrderConsumer, QueueError> {
        let member = Self::observer(brokers, group)?;
        member.consumer.subscribe(&[ORDERS_TOPIC]).map_err(queue_error)?;
        Ok(member)
    }

    /// A client of the group that does not join it (no rebalance): for reading its committed
    /// offsets and lag.
    ///
    /// # Errors
    /// [`QueueError::Unavailable`] when the configuration is refused.
    pub fn observer(brokers: &str, group: &str) -> Result<KafkaOrderConsumer, QueueError> {
        let consumer: BaseConsumer = base_config(brokers)
            .set("group.id", group)
            .set("enable.auto.commit", "false")
            .set("enable.auto.offset.store", "false")
            .set("auto.offset.reset", "earliest")
            .set("session.timeout.ms", "6000")
            .create()
            .map_err(queue_error)?;
        Ok(KafkaOrderConsumer { consumer: Arc::new(consumer) })
    }

    /// Messages not yet committed by the group, summed over the partitions: an upper bound of
    /// the orders in flight (reconciliation).
    ///
    /// # Errors
    /// [`QueueError::Unavailable`] when the broker does not answer.
    pub async fn lag(&self) -> Result<u64, QueueError> {
        let consumer = self.consumer.clone();
        tokio::task::spawn_blocking(move || {
            let mut partitions = TopicPartitionList::new();
            for p in 0..ORDERS_PARTITIONS {
                partitions.add_partition(ORDERS_TOPIC, p);
            }
            let committed = consumer.committed_offsets(partitions, REQUEST_TIMEOUT).map_err(queue_error)?;
            let mut lag = 0u64;
            for p in 0..ORDERS_PARTITIONS {
                let (_, high) = consumer.fetch_watermarks(ORDERS_TOPIC, p, REQUEST_TIMEOUT).map_err(queue_error)?;
                let done = match committed.find_partition(ORDERS_TOPIC, p).map(|e| e.offset()) {
                    Some(Offset::Offset(o)) => o,
                    _ => 0,
                };
                lag += (high - done).max(0) as u64;
            }
            Ok(lag)
        })
        .await
        .map_err(|e| QueueError::Unavailable(e.to_string()))?
    }
}

impl OrderConsumer for KafkaOrderConsumer {
    async fn poll(&mut self, max: usize, wait: Duration) -> Result<Vec<QueuedOrder>, QueueError> {
        let consumer = self.consumer.clone();
        tokio::task::spawn_blocking(move || {
            let mut out = Vec::new();
            let mut timeout = wait;
            while out.len() < max {
                match consumer.poll(timeout) {
                    None => break,
                    Some(Err(e)) if out.is_empty() => return Err(queue_error(e)),
                    Some(Err(_)) => break,
                    Some(Ok(message)) => {
                        let payload = message.payload().unwrap_or_default();
                        match serde_json::from_slice::<Order>(payload) {
                            Ok(order) => out.push(QueuedOrder {
                                partition: message.partition(),
                                offset: message.offset(),
                                order,
                            }),
                            Err(e) => tracing::error!(offset = message.offset(), error = %e, "not an order: skipped"),
                        }
                    }
                }
                // After the first message, take only what is already there.
                timeout = Duration::ZERO;
            }
            Ok(out)
        })
        .await
        .map_err(|e| QueueError::Unavailable(e.to_string()))?
    }

    async fn commit(&mut self, done: &[QueuedOrder]) -> Result<(), QueueError> {
        let mut next: std::collections::BTreeMap<i32, i64> = std::collections::BTreeMap::new();
        for message in done {
            let entry = next.entry(message.partition).or_insert(0);
            *entry = (*entry).max(message.offset + 1);
        }
        let mut offsets = TopicPartitionList::new();
        for (partition, offset) in next {
            offsets.add_partition_offset(ORDERS_TOPIC, partition, Offset::Offset(offset)).map_err(queue_error)?;
        }
        let consumer = self.consumer.clone();
        tokio::task::spawn_blocking(move || consumer.commit(&offsets, CommitMode::Sync).map_err(queue_error))
            .await
            .map_err(|e| QueueError::Unavailable(e.to_string()))?
    }
}
