//! async-nats adapter: JetStream publisher (deduplicated by `Nats-Msg-Id` = event id) and a
//! durable pull consumer for the read processor.
//!
//! The client connects in the background and reconnects forever, so a service starts while
//! NATS is down; the stream and the consumer are created on first use and again after a
//! failure. Every request has a timeout.

use std::sync::Arc;
use std::time::Duration;

use async_nats::jetstream::{self, AckKind, consumer::PullConsumer};
use futures::StreamExt;
use tokio::sync::Mutex;

use crate::ports::ledger::{BusError, Delivery, EventConsumer, EventPublisher, RecordedEvent};

/// Timeout of one JetStream request (publish ack, stream and consumer lookups).
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(2);
/// JetStream's duplicate window: a republish of the same event id within it is dropped.
pub const DEDUP_WINDOW: Duration = Duration::from_secs(120);
/// How long a delivery may stay unacked before JetStream redelivers it.
pub const ACK_WAIT: Duration = Duration::from_secs(30);
/// Unacked deliveries the consumer may have out at once.
pub const MAX_ACK_PENDING: i64 = 10_000;
/// Deliveries of one message before JetStream gives up on it: unbounded on purpose. Dropping a
/// ledger event would freeze an account's read model silently; redeliveries are paced by the
/// processor's nak delays and by [`ACK_WAIT`].
pub const MAX_DELIVER: i64 = -1;

/// Where the ledger's events live on NATS.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NatsTopology {
    pub stream: String,
    /// Events are published on `{subject_prefix}.{event_type}`.
    pub subject_prefix: String,
    pub durable: String,
}

impl Default for NatsTopology {
    fn default() -> Self {
        NatsTopology {
            stream: "LEDGER_EVENTS".into(),
            subject_prefix: "ledger.events".into(),
            durable: "read-processor".into(),
        }
    }
}

/// A JetStream connection with the ledger's stream and consumer.
#[derive(Clone)]
pub struct NatsBus {
    client: async_nats::Client,
    js: jetstream::Context,
    topology: NatsTopology,
    stream_ready: Arc<Mutex<bool>>,
    consumer: Arc<Mutex<Option<PullConsumer>>>,
}

fn unavailable(e: impl std::fmt::Display) -> BusError {
    BusError::Unavailable(e.to_string())
}

impl NatsBus {
    /// Connects in the background: returns at once even when NATS is down.
    ///
    /// # Errors
    /// [`BusError::Unavailable`] when the url is not valid.
    pub async fn connect(url: &str, topology: NatsTopology) -> Result<NatsBus, BusError> {
        let client = async_nats::ConnectOptions::new()
            .retry_on_initial_connect()
            .connection_timeout(REQUEST_TIMEOUT)
            .request_timeout(Some(REQUEST_TIMEOUT))
            .connect(url)
            .await
            .map_err(unavailable)?;
        let mut js = jetstream::new(client.clone());
        js.set_timeout(REQUEST_TIMEOUT);
        Ok(NatsBus {
            client,
            js,
            topology,
            stream_ready: Arc::new(Mutex::new(false)),
            consumer: Arc::new(Mutex::new(None)),
        })
    }

    pub fn is_connected(&self) -> bool {
        self.client.connection_state() == async_nats::connection::State::Connected
    }

    pub fn topology(&self) -> &NatsTopology {
        &self.topology
    }

    async fn ensure_stream(&self) -> Result<jetstream::stream::Stream, BusError> {
        let stream = self
            .js
            .get_or_create_stream(jetstream::stream::Config {
                name: self.topology.stream.clone(),
                subjects: vec![format!("{}.>", self.topology.subject_prefix)],
                storage: jetstream::stream::StorageType::File,
                duplicate_window: DEDUP_WINDOW,
                ..Default::default()
            })
            .await
            .map_err(unavailable)?;
        *self.stream_ready.lock().await = true;
        Ok(stream)
    }

    async fn consumer(&self) -> Result<PullConsumer, BusError> {
        let mut cached = self.consumer.lock().await;
        if let Some(consumer) = cached.as_ref() {
            return Ok(consumer.clone());
        }
        let stream = self.ensure_stream().await?;
        let consumer: PullConsumer = stream
            .get_or_create_consumer(
                &self.topology.durable,
                jetstream::consumer::pull::Config {
                    durable_name: Some(self.topology.durable.clone()),
                    ack_policy: jetstream::consumer::AckPolicy::Explicit,
                    ack_wait: ACK_WAIT,
                    max_deliver: MAX_DELIVER,
                    max_ack_pending: MAX_ACK_PENDING,
                    ..Default::default()
                },
            )
            .await
            .map_err(unavailable)?;
        *cached = Some(consumer.clone());
        Ok(consumer)
    }

    /// Deletes the stream and everything in it (test clean-up).
    ///
    /// # Errors
    /// [`BusError::Unavailable`] when NATS does not answer.
    pub async fn delete_stream(&self) -> Result<(), BusError> {
        self.js.delete_stream(&self.topology.stream).await.map(|_| ()).map_err(unavailable)
    }

    /// Messages in the stream and the consumer's pending count, for health and tests.
    ///
    /// # Errors
    /// [`BusError::Unavailable`] when NATS does not answer.
    pub async fn pending(&self) -> Result<u64, BusError> {
        let mut consumer = self.consumer().await?;
        let info = consumer.info().await.map_err(unavailable)?;
        Ok(info.num_pending + info.num_ack_pending as u64)
    }
}

impl EventPublisher for NatsBus {
    async fn publish(&self, event: &RecordedEvent) -> Result<(), BusError> {
        if !*self.stream_ready.lock().await {
            self.ensure_stream().await?;
        }
        let payload = serde_json::to_vec(event).expect("recorded events serialize");
        let subject = format!("{}.{}", self.topology.subject_prefix, event.encoded.event_type);
        let publish =
            jetstream::context::Publish::build().payload(payload.into()).message_id(event.event_id.to_string());
        let ack = self.js.send_publish(subject, publish).await.map_err(unavailable)?;
        let ack = ack.await.map_err(|e| {
            // The stream may have been deleted or NATS restarted without its store.
            if let Ok(mut ready) = self.stream_ready.try_lock() {
                *ready = false;
            }
            unavailable(e)
        })?;
        if ack.duplicate {
            tracing::debug!(event_id = %event.event_id, "publish deduplicated by JetStream");
        }
        Ok(())
    }
}

/// One JetStream message carrying a recorded event.
pub struct NatsDelivery {
    message: jetstream::Message,
    event: RecordedEvent,
    delivered: u64,
}

impl Delivery for NatsDelivery {
    fn event(&self) -> &RecordedEvent {
        &self.event
    }

    fn delivered(&self) -> u64 {
        self.delivered
    }

    async fn ack(self) -> Result<(), BusError> {
        self.message.ack().await.map_err(unavailable)
    }

    async fn nak(self, delay: Duration) -> Result<(), BusError> {
        self.message.ack_with(AckKind::Nak(Some(delay))).await.map_err(unavailable)
    }
}

impl EventConsumer for NatsBus {
    type Delivery = NatsDelivery;

    async fn fetch(&self, max: usize, wait: Duration) -> Result<Vec<NatsDelivery>, BusError> {
        let consumer = self.consumer().await?;
        let fetched = tokio::time::timeout(wait + REQUEST_TIMEOUT, async {
            let mut batch = consumer.fetch().max_messages(max).expires(wait).messages().await.map_err(unavailable)?;
            let mut out = Vec::new();
            while let Some(message) = batch.next().await {
                let message = match message {
                    Ok(message) => message,
                    Err(e) if out.is_empty() => return Err(unavailable(e)),
                    Err(_) => break,
                };
                let delivered = message.info().map(|i| i.delivered.max(1) as u64).unwrap_or(1);
                match serde_json::from_slice::<RecordedEvent>(&message.payload) {
                    Ok(event) => out.push(NatsDelivery { message, event, delivered }),
                    Err(e) => {
                        tracing::error!(error = %e, subject = %message.subject, "not a recorded event: terminated");
                        let _ = message.ack_with(AckKind::Term).await;
                    }
                }
            }
            Ok(out)
        })
        .await;
        match fetched {
            Ok(result) => {
                if result.is_err() {
                    // Re-resolve the consumer next time: NATS may have restarted.
                    *self.consumer.lock().await = None;
                }
                result
            }
            Err(_) => Err(BusError::Unavailable("fetch timed out".into())),
        }
    }
}
