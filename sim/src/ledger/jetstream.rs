//! Simulated NATS JetStream: one node with a file-backed stream and one durable pull consumer,
//! and the client adapter `SimBus` (an `EventPublisher` and an `EventConsumer`).
//!
//! Contract (DESIGN 6): a publish is acked once stored; a `Nats-Msg-Id` seen within the
//! duplicate window is acked as a duplicate and not stored again; a delivery not acked within
//! the ack wait, or nak'ed, is delivered again; the stream and the consumer's state are on
//! "disk" and survive a restart. Failure outcomes: publishes and fetches fail while the node is
//! down or cut off; a lost publish ack makes the relay publish again (deduplicated); a crashed
//! consumer's deliveries come back after the ack wait.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use madsim::net::Endpoint;
use madsim::net::rpc::Request;
use madsim::time::Instant;
use serde::{Deserialize, Serialize};
use services::ports::ledger::{BusError, Delivery, EventConsumer, EventPublisher, RecordedEvent};

use crate::trace;

pub const NATS_ADDR: SocketAddr = SocketAddr::new(std::net::IpAddr::V4(std::net::Ipv4Addr::new(10, 0, 2, 1)), 4222);
/// Duplicate window of the stream.
pub const DEDUP_WINDOW: Duration = Duration::from_secs(120);
/// Ack wait of the durable consumer.
pub const ACK_WAIT: Duration = Duration::from_secs(3);
/// Unacked deliveries the consumer may have out at once.
pub const MAX_ACK_PENDING: usize = 512;
/// How often a waiting fetch looks for new messages.
pub const FETCH_POLL: Duration = Duration::from_millis(10);
/// Client timeout of a publish or an ack, beyond a fetch's own wait.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(1);

#[derive(Debug, Clone, Serialize, Deserialize)]
pub enum NatsReq {
    Publish { msg_id: String, event: Box<RecordedEvent> },
    Fetch { max: usize, wait: Duration },
    Ack(u64),
    Nak(u64, Duration),
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub enum NatsResp {
    Published { seq: u64, duplicate: bool },
    Messages(Vec<(u64, u64, RecordedEvent)>),
    Done,
}

impl Request for NatsReq {
    type Response = Result<NatsResp, BusError>;
    const ID: u64 = 0x4A54_0001;
}

#[derive(Debug, Clone, Copy)]
struct Pending {
    delivered: u64,
    due: Instant,
}

/// The stream and the consumer, as the file store keeps them.
#[derive(Debug, Default)]
pub struct JetStreamState {
    log: BTreeMap<u64, RecordedEvent>,
    dedup: BTreeMap<String, (u64, Instant)>,
    next_new: u64,
    pending: BTreeMap<u64, Pending>,
    /// Deliveries per sequence, kept after the ack (for stats).
    pub redeliveries: u64,
    pub duplicates: u64,
}

impl JetStreamState {
    pub fn stored(&self) -> usize {
        self.log.len()
    }

    fn publish(&mut self, msg_id: String, event: RecordedEvent, now: Instant) -> (u64, bool) {
        self.dedup.retain(|_, (_, at)| now.duration_since(*at) < DEDUP_WINDOW);
        if let Some((seq, _)) = self.dedup.get(&msg_id) {
            self.duplicates += 1;
            return (*seq, true);
        }
        let seq = self.log.keys().next_back().map_or(1, |s| s + 1);
        self.log.insert(seq, event);
        self.dedup.insert(msg_id, (seq, now));
        (seq, false)
    }

    fn take(&mut self, max: usize, now: Instant) -> Vec<(u64, u64, RecordedEvent)> {
        let mut out = Vec::new();
        let due: Vec<u64> = self.pending.iter().filter(|(_, p)| p.due <= now).map(|(s, _)| *s).take(max).collect();
        for seq in due {
            let p = self.pending.get_mut(&seq).expect("listed");
            p.delivered += 1;
            p.due = now + ACK_WAIT;
            self.redeliveries += 1;
            out.push((seq, p.delivered, self.log[&seq].clone()));
        }
        while out.len() < max && self.pending.len() < MAX_ACK_PENDING {
            let Some((&seq, event)) = self.log.range(self.next_new + 1..).next() else { break };
            self.next_new = seq;
            self.pending.insert(seq, Pending { delivered: 1, due: now + ACK_WAIT });
            out.push((seq, 1, event.clone()));
        }
        out
    }
}

/// Runs the NATS node until it is killed; `state` is its file store.
pub async fn serve(state: Arc<Mutex<JetStreamState>>) {
    let ep = Endpoint::bind(NATS_ADDR).await.expect("bind nats");
    ep.add_rpc_handler(move |req: NatsReq| {
        let state = state.clone();
        async move { handle(&state, req).await }
    });
    futures::future::pending::<()>().await;
}

async fn handle(state: &Mutex<JetStreamState>, req: NatsReq) -> Result<NatsResp, BusError> {
    match req {
        NatsReq::Publish { msg_id, event } => {
            let (seq, duplicate) = state.lock().expect("not poisoned").publish(msg_id.clone(), *event, Instant::now());
            trace::record_fmt(
                "nats",
                format_args!("publish {msg_id} -> seq {seq}{}", if duplicate { " dup" } else { "" }),
            );
            Ok(NatsResp::Published { seq, duplicate })
        }
        NatsReq::Fetch { max, wait } => {
            let deadline = Instant::now() + wait;
            loop {
                let batch = state.lock().expect("not poisoned").take(max, Instant::now());
                if !batch.is_empty() || Instant::now() >= deadline {
                    if !batch.is_empty() {
                        let seqs: Vec<String> = batch.iter().map(|(s, d, _)| format!("{s}/{d}")).collect();
                        trace::record("nats", &format!("deliver {}", seqs.join(",")));
                    }
                    return Ok(NatsResp::Messages(batch));
                }
                madsim::time::sleep(FETCH_POLL).await;
            }
        }
        NatsReq::Ack(seq) => {
            state.lock().expect("not poisoned").pending.remove(&seq);
            Ok(NatsResp::Done)
        }
        NatsReq::Nak(seq, delay) => {
            if let Some(p) = state.lock().expect("not poisoned").pending.get_mut(&seq) {
                p.due = Instant::now() + delay;
            }
            Ok(NatsResp::Done)
        }
    }
}

/// The NATS adapter of a ledger role.
#[derive(Clone)]
pub struct SimBus {
    ep: Arc<Endpoint>,
}

impl SimBus {
    pub async fn connect() -> SimBus {
        SimBus { ep: Arc::new(Endpoint::bind("0.0.0.0:0").await.expect("bind client")) }
    }

    async fn call(&self, req: NatsReq, timeout: Duration) -> Result<NatsResp, BusError> {
        match self.ep.call_timeout(NATS_ADDR, req, timeout).await {
            Ok(answer) => answer,
            Err(e) => Err(BusError::Unavailable(format!("nats: {e}"))),
        }
    }
}

impl EventPublisher for SimBus {
    async fn publish(&self, event: &RecordedEvent) -> Result<(), BusError> {
        let req = NatsReq::Publish { msg_id: event.event_id.to_string(), event: Box::new(event.clone()) };
        self.call(req, REQUEST_TIMEOUT).await.map(|_| ())
    }
}

/// One delivery of the simulated consumer.
pub struct SimDelivery {
    bus: SimBus,
    seq: u64,
    delivered: u64,
    event: RecordedEvent,
}

impl Delivery for SimDelivery {
    fn event(&self) -> &RecordedEvent {
        &self.event
    }

    fn delivered(&self) -> u64 {
        self.delivered
    }

    async fn ack(self) -> Result<(), BusError> {
        self.bus.call(NatsReq::Ack(self.seq), REQUEST_TIMEOUT).await.map(|_| ())
    }

    async fn nak(self, delay: Duration) -> Result<(), BusError> {
        self.bus.call(NatsReq::Nak(self.seq, delay), REQUEST_TIMEOUT).await.map(|_| ())
    }
}

impl EventConsumer for SimBus {
    type Delivery = SimDelivery;

    async fn fetch(&self, max: usize, wait: Duration) -> Result<Vec<SimDelivery>, BusError> {
        match self.call(NatsReq::Fetch { max, wait }, wait + REQUEST_TIMEOUT).await? {
            NatsResp::Messages(batch) => Ok(batch
                .into_iter()
                .map(|(seq, delivered, event)| SimDelivery { bus: self.clone(), seq, delivered, event })
                .collect()),
            other => Err(BusError::Malformed(format!("unexpected answer {other:?}"))),
        }
    }
}
