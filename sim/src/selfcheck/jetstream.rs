//! `jetstream-self-check`: acknowledged publishes survive NATS restarts; a duplicate message id is stored once.
//!
//! A publisher publishes 20-30 messages through `SimBus` (the relay's adapter; the message id
//! is the event id, as the relay's). A publish that fails is sometimes retried with the same
//! id (as the relay does after a lost ack), and after three messages in ten an earlier one is
//! published again: a duplicate within the window. A consumer fetches through the same adapter
//! (the read processor's durable consumer) and acks every delivery. The NATS node is crashed and
//! restarted once or twice meanwhile; its file store (`JetStreamState`, created outside the
//! node's init) survives. After the heal the consumer drains until every acknowledged message
//! was delivered, or a bound passes.
//!
//! Checked: every acknowledged publish is delivered; no message id is stored twice; a delivered
//! message is one that was published, unchanged. A stored message's first delivery says
//! `delivered() == 1` and every redelivery more (an ack lost in an outage is redelivered after
//! the ack wait), so two first deliveries of one message id mean it was stored twice.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use madsim::runtime::Handle;
use models::ledger::EncodedEvent;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde_json::{Value, json};
use services::ports::ledger::{Delivery, EventConsumer, EventPublisher, RecordedEvent};
use uuid::Uuid;

use super::{BOOT_WAIT, Recorder, SelfCheckRun, client_node, outage, secs};
use crate::faults::{Injector, Targets};
use crate::history::{EventKind, HistoryEvent};
use crate::ledger::jetstream::{self, JetStreamState, SimBus};
use crate::trace::{self, BuildTracked};
use crate::verdict::Violation;

/// The stream's name in the history (the key of fetches).
pub const STREAM: &str = "selfcheck";
/// Messages published per run, drawn.
pub const MESSAGES_MIN: u64 = 20;
pub const MESSAGES_MAX: u64 = 30;
/// Probability that a failed publish is retried with its message id.
pub const RETRY_PROBABILITY: f64 = 0.5;
/// Pause before that retry.
pub const RETRY_PAUSE: Duration = Duration::from_millis(100);
/// Probability that an earlier message is published again after each message.
pub const DUPLICATE_PROBABILITY: f64 = 0.3;
/// Pause between two messages, drawn (milliseconds).
pub const THINK_MS_MIN: u64 = 20;
pub const THINK_MS_MAX: u64 = 100;
/// NATS outages per run, drawn; each after a drawn pause and lasting a drawn time (ms).
pub const OUTAGES_MIN: usize = 1;
pub const OUTAGES_MAX: usize = 2;
pub const OUTAGE_AFTER_MS_MIN: u64 = 200;
pub const OUTAGE_AFTER_MS_MAX: u64 = 1_200;
pub const OUTAGE_MS_MIN: u64 = 300;
pub const OUTAGE_MS_MAX: u64 = 1_500;
/// Deliveries per fetch, and how long a fetch waits for the first.
pub const FETCH_BATCH: usize = 8;
pub const FETCH_WAIT: Duration = Duration::from_millis(100);
/// Probability that the consumer starts only after the heal.
pub const LATE_CONSUMER_PROBABILITY: f64 = 0.5;
/// Pause after a failed fetch.
pub const FETCH_PAUSE: Duration = Duration::from_millis(50);
/// Bound on the consumer's fetches.
pub const FETCHES_MAX: usize = 2_000;
/// Longest the publisher may take (30 messages, each at worst three publishes timing out).
pub const PUBLISHER_MAX: Duration = Duration::from_secs(120);
/// After the heal, longest the consumer gets to receive every acknowledged message: a delivery
/// lost in an outage comes back after the ack wait.
pub const DRAIN_MAX: Duration = Duration::from_secs(15);
const _: () = assert!(DRAIN_MAX.as_millis() > 3 * jetstream::ACK_WAIT.as_millis());
pub const DRAIN_POLL: Duration = Duration::from_millis(100);
/// Longest the consumer may take to stop once told.
pub const CONSUMER_STOP_MAX: Duration = Duration::from_secs(10);
/// Process ids: the publisher's are even (a new one after each publish of unknown outcome),
/// the consumer's is 1.
const PUBLISHER_PROCESS: u64 = 0;
const CONSUMER_PROCESS: u64 = 1;

/// Message `n` (1-based) under message id `id`.
fn message(n: u64, id: Uuid) -> RecordedEvent {
    RecordedEvent {
        event_id: id,
        stream_id: STREAM.to_string(),
        version: n,
        global_position: n as i64,
        encoded: EncodedEvent { event_type: "SelfCheckPublished".into(), event_version: 1, data: json!({ "n": n }) },
        command_key: None,
    }
}

/// Runs the self-check and checks it.
pub async fn run(seed: u64) -> SelfCheckRun {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let messages = rng.gen_range(MESSAGES_MIN..=MESSAGES_MAX);
    let disk: Arc<Mutex<JetStreamState>> = Arc::default();
    let js = disk.clone();
    let nats = Handle::current()
        .create_node()
        .name("nats")
        .ip(jetstream::NATS_ADDR.ip())
        .init(move || jetstream::serve(js.clone()))
        .build_tracked();
    let injector = Injector::new(Targets { nodes: vec![("nats".to_string(), nats.id())] });
    let recorder = Recorder::new("js-check");
    madsim::time::sleep(BOOT_WAIT).await;
    let stop = Arc::new(AtomicBool::new(false));
    let seen: Arc<Mutex<Vec<Seen>>> = Arc::default();
    // In half the seeds the consumer starts only after the heal: every acknowledged message
    // must then have survived every restart on the broker's disk to be delivered at all (a
    // consumer that fetches as it goes would have taken most of them before any crash).
    let late = rng.gen_bool(LATE_CONSUMER_PROBABILITY);
    let spawn_consumer = {
        let (recorder, stop, seen) = (recorder.clone(), stop.clone(), seen.clone());
        move || client_node("consumer", [10, 0, 21, 2]).spawn(consume(recorder, stop, seen))
    };
    let mut consuming = if late { None } else { Some(spawn_consumer.clone()()) };
    let publisher_rng = ChaCha8Rng::seed_from_u64(rng.r#gen());
    let publishing =
        client_node("publisher", [10, 0, 21, 1]).spawn(publish_all(publisher_rng, messages, recorder.clone()));
    let windows = outages(&injector, &mut rng).await;
    let mut violations = Vec::new();
    let published = match madsim::time::timeout(PUBLISHER_MAX, publishing).await {
        Ok(Ok(published)) => published,
        _ => {
            violations.push(Violation::new(
                "liveness",
                format!("jetstream-self-check: the publisher did not finish within {PUBLISHER_MAX:?}"),
            ));
            Vec::new()
        }
    };
    injector.heal();
    let consuming = consuming.take().unwrap_or_else(spawn_consumer);
    let deadline = madsim::time::Instant::now() + DRAIN_MAX;
    loop {
        let acked = acknowledged(&recorder.events());
        let delivered: BTreeSet<String> =
            seen.lock().expect("not poisoned").iter().map(|s| s.event.event_id.to_string()).collect();
        // Every acknowledged message, and as many messages as the stream stores.
        let stored = disk.lock().expect("not poisoned").stored();
        let drained = acked.keys().all(|id| delivered.contains(id)) && delivered.len() >= stored;
        if drained || madsim::time::Instant::now() >= deadline {
            break;
        }
        madsim::time::sleep(DRAIN_POLL).await;
    }
    stop.store(true, Ordering::SeqCst);
    if madsim::time::timeout(CONSUMER_STOP_MAX, consuming).await.is_err() {
        violations.push(Violation::new(
            "liveness",
            format!("jetstream-self-check: the consumer did not stop within {CONSUMER_STOP_MAX:?}"),
        ));
    }
    let seen = seen.lock().expect("not poisoned").clone();
    let stored = disk.lock().expect("not poisoned").stored();
    trace::record(
        "checker",
        &format!("{} messages published, {stored} stored, {} deliveries", published.len(), seen.len()),
    );
    violations.extend(check(&recorder.events(), &published, &seen, &windows));
    recorder.finish(&injector, violations)
}

/// NATS crashed and restarted once or twice; returns the outages (down, up) in nanoseconds.
async fn outages(injector: &Injector, rng: &mut ChaCha8Rng) -> Vec<(u64, u64)> {
    let count = rng.gen_range(OUTAGES_MIN..=OUTAGES_MAX);
    let mut windows = Vec::new();
    for _ in 0..count {
        let after = OUTAGE_AFTER_MS_MIN..=OUTAGE_AFTER_MS_MAX;
        windows.push(outage(injector, rng, "nats", after, OUTAGE_MS_MIN..=OUTAGE_MS_MAX).await);
    }
    windows
}

/// Publishes the messages, some retried and some published again; returns every message.
async fn publish_all(mut rng: ChaCha8Rng, messages: u64, recorder: Recorder) -> Vec<RecordedEvent> {
    let bus = SimBus::connect().await;
    let mut publisher = Publisher { bus, recorder, process: PUBLISHER_PROCESS, publishes: BTreeMap::new() };
    let mut sent: Vec<(RecordedEvent, madsim::time::Instant)> = Vec::new();
    for n in 1..=messages {
        let event = message(n, Uuid::from_u128(rng.r#gen()));
        sent.push((event.clone(), madsim::time::Instant::now()));
        if !publisher.publish(&event).await && rng.gen_bool(RETRY_PROBABILITY) {
            madsim::time::sleep(RETRY_PAUSE).await;
            publisher.publish(&event).await;
        }
        if rng.gen_bool(DUPLICATE_PROBABILITY) {
            let (again, first) = sent[rng.gen_range(0..sent.len())].clone();
            // Within the duplicate window only (always, in a run this short).
            if first.elapsed() < jetstream::DEDUP_WINDOW {
                publisher.publish(&again).await;
            }
        }
        madsim::time::sleep(Duration::from_millis(rng.gen_range(THINK_MS_MIN..=THINK_MS_MAX))).await;
    }
    sent.into_iter().map(|(event, _)| event).collect()
}

struct Publisher {
    bus: SimBus,
    recorder: Recorder,
    process: u64,
    /// Message number -> publishes so far.
    publishes: BTreeMap<u64, u32>,
}

impl Publisher {
    /// One publish; true when acknowledged. A failure is of unknown outcome (the message may
    /// be stored, its ack lost).
    async fn publish(&mut self, event: &RecordedEvent) -> bool {
        let n = event.version;
        let count = {
            let count = self.publishes.entry(n).or_insert(0);
            *count += 1;
            *count
        };
        let id = format!("m{n}#{count}");
        let op = self.recorder.invoke(id, self.process, "publish", &event.event_id.to_string(), Some(json!(n)));
        match self.bus.publish(event).await {
            Ok(()) => {
                self.recorder.complete(op, EventKind::Ok, None, None);
                true
            }
            Err(e) => {
                self.recorder.complete(op, EventKind::Info, None, Some(e.to_string()));
                self.process += 2;
                false
            }
        }
    }
}

/// One delivery the consumer received: the message, its delivery count, when it arrived.
#[derive(Debug, Clone)]
struct Seen {
    event: RecordedEvent,
    delivered: u64,
    at: u64,
}

/// Fetches and acks until told to stop.
async fn consume(recorder: Recorder, stop: Arc<AtomicBool>, seen: Arc<Mutex<Vec<Seen>>>) {
    let bus = SimBus::connect().await;
    for n in 0..FETCHES_MAX {
        if stop.load(Ordering::SeqCst) {
            break;
        }
        let op = recorder.invoke(format!("fetch-{n}"), CONSUMER_PROCESS, "fetch", STREAM, None);
        match bus.fetch(FETCH_BATCH, FETCH_WAIT).await {
            Ok(batch) => {
                let got: Vec<Value> =
                    batch.iter().map(|d| json!(format!("m{}#{}", d.event().version, d.delivered()))).collect();
                let at = recorder.complete(op, EventKind::Ok, Some(Value::Array(got)), None);
                for delivery in batch {
                    let event = delivery.event().clone();
                    let delivered = delivery.delivered();
                    seen.lock().expect("not poisoned").push(Seen { event, delivered, at });
                    // An ack lost in an outage: the message is redelivered after the ack wait.
                    let _ = delivery.ack().await;
                }
            }
            Err(e) => {
                recorder.complete(op, EventKind::Fail, None, Some(e.to_string()));
                madsim::time::sleep(FETCH_PAUSE).await;
            }
        }
    }
}

/// Message id -> when its first publish was acknowledged.
fn acknowledged(history: &[HistoryEvent]) -> BTreeMap<String, u64> {
    let mut acked = BTreeMap::new();
    for event in history.iter().filter(|e| e.f == "publish" && e.kind == EventKind::Ok) {
        if let Some(id) = &event.key {
            acked.entry(id.clone()).or_insert(event.time);
        }
    }
    acked
}

/// The contract: acknowledged publishes delivered, each message id stored once, deliveries
/// unchanged.
fn check(
    history: &[HistoryEvent],
    published: &[RecordedEvent],
    seen: &[Seen],
    outages: &[(u64, u64)],
) -> Vec<Violation> {
    let restarts: Vec<String> = outages.iter().map(|(_, up)| secs(*up)).collect();
    let restarts = restarts.join(", ");
    let by_id: BTreeMap<String, &RecordedEvent> = published.iter().map(|e| (e.event_id.to_string(), e)).collect();
    let number = |id: &str| by_id.get(id).map_or(0, |e| e.version);
    let mut publishes: BTreeMap<&str, usize> = BTreeMap::new();
    for event in history.iter().filter(|e| e.f == "publish" && e.kind == EventKind::Invoke) {
        if let Some(id) = event.key.as_deref() {
            *publishes.entry(id).or_default() += 1;
        }
    }
    let mut deliveries: BTreeMap<String, Vec<&Seen>> = BTreeMap::new();
    for s in seen {
        deliveries.entry(s.event.event_id.to_string()).or_default().push(s);
    }
    let mut out = Vec::new();
    for (id, at) in acknowledged(history) {
        let first = deliveries.get(&id).and_then(|list| list.iter().map(|s| s.at).min());
        if let Some(first) = first
            && outages.iter().any(|(_, up)| *up > at && first > *up)
        {
            crate::verdict::reached("jetstream-delivered-after-restart");
        }
        if !deliveries.contains_key(&id) {
            out.push(Violation::new(
                "dependency-contract",
                format!(
                    "publish of message m{} (msg id {id}) was acknowledged at {} but the message was never delivered \
                     (nats restarted at {restarts}; drained until {})",
                    number(id.as_str()),
                    secs(at),
                    secs(trace::now_nanos())
                ),
            ));
        }
    }
    for (id, list) in &deliveries {
        let firsts: Vec<String> = list.iter().filter(|s| s.delivered == 1).map(|s| secs(s.at)).collect();
        if firsts.len() > 1 {
            out.push(Violation::new(
                "dependency-contract",
                format!(
                    "message m{} (msg id {id}), published {} times within the duplicate window, was stored {} times: \
                     first deliveries at {}",
                    number(id.as_str()),
                    publishes.get(id.as_str()).copied().unwrap_or(0),
                    firsts.len(),
                    firsts.join(", ")
                ),
            ));
        }
        match by_id.get(id) {
            None => out.push(Violation::new(
                "dependency-contract",
                format!("message {id} delivered at {} was never published", secs(list[0].at)),
            )),
            Some(sent) => {
                if let Some(changed) = list.iter().find(|s| s.event != **sent) {
                    out.push(Violation::new(
                        "dependency-contract",
                        format!(
                            "message m{} (msg id {id}) was delivered at {} altered: {:?}",
                            sent.version,
                            secs(changed.at),
                            changed.event
                        ),
                    ));
                }
            }
        }
    }
    out
}
