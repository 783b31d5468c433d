//! `kafka-self-check`: committed offsets survive broker restarts; the group resumes exactly from them.
//!
//! A producer produces 20-30 orders over a few products (so over the partitions) through
//! `SimKafka` (the API's producer); a produce that fails is sometimes retried. A consumer polls
//! through the same adapter as the worker does (`OrderConsumer`), "processes" each batch for a
//! few milliseconds and commits it, and, like the worker, leaves and rejoins the group as a new
//! member after any error, or now and then without committing a batch it polled (a worker
//! crashing between poll and commit): the new member resumes from the committed offsets. The broker is
//! crashed and restarted once or twice meanwhile; its disk (`KafkaState`, created outside the
//! node's init) survives. After the heal the consumer drains until every acknowledged order was
//! delivered and everything is committed, or a bound passes.
//!
//! Checked: after every restart (once the broker runs again) and at the end, the broker holds
//! each partition's committed offset at least as far as the last commit acknowledged to the
//! group; a poll never returns a message below an offset whose commit was acknowledged before
//! the poll began; a new member's first message on a partition is at most the highest offset a
//! commit asked for (it resumes from the committed offset, not from where the group had read:
//! the outcome `kafka-resumed-from-commit` counts the resumes that redeliver uncommitted
//! messages, and `cargo sim` requires one); a poll never returns a message beyond the next one
//! the group has not yet received on its partition (a skip); every acknowledged produce is
//! delivered to the group.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use madsim::runtime::Handle;
use models::orders::Order;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde_json::{Value, json};
use services::ports::orders::{OrderConsumer, OrderProducer, QueueError, QueuedOrder};

use super::{BOOT_WAIT, Recorder, SelfCheckRun, client_node, outage, secs};
use crate::faults::{Injector, Targets};
use crate::history::{EventKind, HistoryEvent};
use crate::orders::deps::{self, KafkaState, SimKafka};
use crate::trace::{self, BuildTracked};
use crate::verdict::Violation;

/// The topic's name in the history (the key of polls and commits).
pub const TOPIC: &str = "orders";
/// Orders produced per run, drawn.
pub const ORDERS_MIN: usize = 20;
pub const ORDERS_MAX: usize = 30;
/// Products the orders are spread over (the partition is a hash of the product).
pub const PRODUCTS: usize = 6;
/// Probability that a failed produce is retried (a retry may duplicate the order in the log).
pub const RETRY_PROBABILITY: f64 = 0.5;
pub const RETRY_PAUSE: Duration = Duration::from_millis(100);
/// Pause between two orders, drawn (milliseconds).
pub const THINK_MS_MIN: u64 = 20;
pub const THINK_MS_MAX: u64 = 100;
/// Broker outages per run, drawn; each after a drawn pause and lasting a drawn time (ms).
pub const OUTAGES_MIN: usize = 1;
pub const OUTAGES_MAX: usize = 2;
pub const OUTAGE_AFTER_MS_MIN: u64 = 200;
pub const OUTAGE_AFTER_MS_MAX: u64 = 1_200;
pub const OUTAGE_MS_MIN: u64 = 300;
pub const OUTAGE_MS_MAX: u64 = 1_500;
/// Messages per poll, and how long a poll waits for the first.
pub const POLL_BATCH: usize = 4;
pub const POLL_WAIT: Duration = Duration::from_millis(100);
/// Longest "processing" of a batch before its commit (milliseconds).
pub const PROCESS_MS_MAX: u64 = 20;
/// Probability that a member, having polled a batch, leaves without committing it (a worker
/// crashing between poll and commit), while the faults last: the next member must get the batch
/// again, from the committed offset. Not after the heal, so that the drain is not slowed by
/// silent members holding partitions until the session timeout.
pub const ABANDON_PROBABILITY: f64 = 0.15;
/// Pause before rejoining after an error (the worker's is 500 ms).
pub const REJOIN_PAUSE: Duration = Duration::from_millis(200);
/// Bounds on the consumer: polls in all, members (joins) in all.
pub const POLLS_MAX: usize = 1_000;
pub const MEMBERS_MAX: usize = 50;
/// Longest the producer may take (30 orders, each at worst two produces timing out).
pub const PRODUCER_MAX: Duration = Duration::from_secs(120);
/// After the heal, longest the group gets to consume everything: a member that left without a
/// word keeps its partitions until the session timeout.
pub const DRAIN_MAX: Duration = Duration::from_secs(20);
const _: () = assert!(DRAIN_MAX.as_millis() > 3 * deps::SESSION_TIMEOUT.as_millis());
pub const DRAIN_POLL: Duration = Duration::from_millis(100);
/// Longest the consumer may take to stop once told.
pub const CONSUMER_STOP_MAX: Duration = Duration::from_secs(10);
/// Process ids: the producer's are even, the consumer's odd (a new one after each operation
/// of unknown outcome).
const PRODUCER_PROCESS: u64 = 0;
const CONSUMER_PROCESS: u64 = 1;

/// What the group was told, shared by the consumer and the checks.
#[derive(Debug, Default)]
struct Group {
    /// Partition -> the offset committed as acknowledged to the group (the next to read), and
    /// when that commit was acknowledged.
    committed: BTreeMap<i32, (i64, u64)>,
    /// Order ids delivered to the group.
    delivered: BTreeSet<String>,
    /// Partition -> the highest offset any commit asked for, acknowledged or not: the broker's
    /// committed offset is between `committed` and this.
    asked: BTreeMap<i32, i64>,
}

/// Runs the self-check and checks it.
pub async fn run(seed: u64) -> SelfCheckRun {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let orders = rng.gen_range(ORDERS_MIN..=ORDERS_MAX);
    let disk: Arc<Mutex<KafkaState>> = Arc::default();
    let k = disk.clone();
    let broker = Handle::current()
        .create_node()
        .name("kafka")
        .ip(deps::KAFKA_ADDR.ip())
        .init(move || deps::serve_kafka(k.clone()))
        .build_tracked();
    let injector = Injector::new(Targets { nodes: vec![("kafka".to_string(), broker.id())] });
    let recorder = Recorder::new("kafka-check");
    madsim::time::sleep(BOOT_WAIT).await;
    let stop = Arc::new(AtomicBool::new(false));
    let group: Arc<Mutex<Group>> = Arc::default();
    let consumer_rng = ChaCha8Rng::seed_from_u64(rng.r#gen());
    let abandoning = Arc::new(AtomicBool::new(true));
    let consuming = client_node("consumer", [10, 1, 20, 2]).spawn(consume(
        recorder.clone(),
        stop.clone(),
        abandoning.clone(),
        group.clone(),
        consumer_rng,
    ));
    let producer_rng = ChaCha8Rng::seed_from_u64(rng.r#gen());
    let producing = client_node("producer", [10, 1, 20, 1]).spawn(produce_all(producer_rng, orders, recorder.clone()));
    let mut violations = outages(&injector, &mut rng, &disk, &group).await;
    if madsim::time::timeout(PRODUCER_MAX, producing).await.is_err() {
        violations.push(Violation::new(
            "liveness",
            format!("kafka-self-check: the producer did not finish within {PRODUCER_MAX:?}"),
        ));
    }
    injector.heal();
    abandoning.store(false, Ordering::SeqCst);
    let deadline = madsim::time::Instant::now() + DRAIN_MAX;
    loop {
        let acked = acknowledged(&recorder.events());
        let all_delivered = {
            let group = group.lock().expect("not poisoned");
            acked.keys().all(|id| group.delivered.contains(id))
        };
        let lag = disk.lock().expect("not poisoned").log.lag();
        if (all_delivered && lag == 0) || madsim::time::Instant::now() >= deadline {
            trace::record(
                "checker",
                &format!("drained: every acknowledged order delivered {all_delivered}, lag {lag}"),
            );
            break;
        }
        madsim::time::sleep(DRAIN_POLL).await;
    }
    stop.store(true, Ordering::SeqCst);
    if madsim::time::timeout(CONSUMER_STOP_MAX, consuming).await.is_err() {
        violations.push(Violation::new(
            "liveness",
            format!("kafka-self-check: the consumer did not stop within {CONSUMER_STOP_MAX:?}"),
        ));
    }
    violations.extend(committed_kept(&disk, &group, "at the end of the run"));
    let group = group.lock().expect("not poisoned");
    for (id, at) in acknowledged(&recorder.events()) {
        if !group.delivered.contains(&id) {
            violations.push(Violation::new(
                "dependency-contract",
                format!(
                    "order {id}, whose produce was acknowledged at {}, was never delivered to the group (drained until \
                     {}; committed offsets {:?})",
                    secs(at),
                    secs(trace::now_nanos()),
                    group.committed
                ),
            ));
        }
    }
    drop(group);
    recorder.finish(&injector, violations)
}

/// The broker crashed and restarted once or twice; after each restart, its committed offsets
/// are checked against the commits acknowledged to the group.
async fn outages(
    injector: &Injector,
    rng: &mut ChaCha8Rng,
    disk: &Mutex<KafkaState>,
    group: &Mutex<Group>,
) -> Vec<Violation> {
    let count = rng.gen_range(OUTAGES_MIN..=OUTAGES_MAX);
    let mut out = Vec::new();
    for _ in 0..count {
        outage(injector, rng, "kafka", OUTAGE_AFTER_MS_MIN..=OUTAGE_AFTER_MS_MAX, OUTAGE_MS_MIN..=OUTAGE_MS_MAX).await;
        // The restarted node runs its init (and could lose offsets there) only once it is
        // scheduled: compare after it has had time to start.
        madsim::time::sleep(BOOT_WAIT).await;
        out.extend(committed_kept(disk, group, &format!("after its restart at {}", secs(trace::now_nanos()))));
    }
    out
}

/// The broker's committed offsets are at least the ones acknowledged to the group.
fn committed_kept(disk: &Mutex<KafkaState>, group: &Mutex<Group>, when: &str) -> Vec<Violation> {
    let held = disk.lock().expect("not poisoned").log.committed.clone();
    let acked = group.lock().expect("not poisoned").committed.clone();
    let mut out = Vec::new();
    for (partition, (next, at)) in acked {
        let kept = held.get(&partition).copied().unwrap_or(0);
        if kept < next {
            out.push(Violation::new(
                "dependency-contract",
                format!(
                    "partition {partition}: offset {next} was committed (acknowledged at {}) but the broker holds \
                     {kept} {when}",
                    secs(at)
                ),
            ));
        }
    }
    out
}

/// Order ids whose produce was acknowledged -> when first.
fn acknowledged(history: &[HistoryEvent]) -> BTreeMap<String, u64> {
    let mut acked = BTreeMap::new();
    for event in history.iter().filter(|e| e.f == "produce" && e.kind == EventKind::Ok) {
        if let Some(id) = &event.key {
            acked.entry(id.clone()).or_insert(event.time);
        }
    }
    acked
}

/// Produces the orders, retrying some failures.
async fn produce_all(mut rng: ChaCha8Rng, orders: usize, recorder: Recorder) {
    let producer = SimKafka::connect().await;
    let mut process = PRODUCER_PROCESS;
    for n in 0..orders {
        let order = Order {
            order_id: format!("kafka-check-{n}"),
            product_id: format!("product-{}", rng.gen_range(0..PRODUCTS)),
            user_id: format!("user-{n}"),
            idempotency_key: format!("key-{n}"),
            reservation: 0,
        };
        if !produce(&producer, &recorder, &mut process, &order, 1).await && rng.gen_bool(RETRY_PROBABILITY) {
            madsim::time::sleep(RETRY_PAUSE).await;
            produce(&producer, &recorder, &mut process, &order, 2).await;
        }
        madsim::time::sleep(Duration::from_millis(rng.gen_range(THINK_MS_MIN..=THINK_MS_MAX))).await;
    }
}

/// One produce; true when acknowledged.
async fn produce(producer: &SimKafka, recorder: &Recorder, process: &mut u64, order: &Order, attempt: u32) -> bool {
    let id = format!("{}#{attempt}", order.order_id);
    let op = recorder.invoke(id, *process, "produce", &order.order_id, Some(json!(order.product_id)));
    match producer.produce(order).await {
        Ok(()) => {
            recorder.complete(op, EventKind::Ok, None, None);
            true
        }
        Err(QueueError::Unavailable(e)) => {
            recorder.complete(op, EventKind::Fail, None, Some(e));
            false
        }
        Err(e) => {
            recorder.complete(op, EventKind::Info, None, Some(e.to_string()));
            *process += 2;
            false
        }
    }
}

/// The consumer: members one after the other, each polling and committing until an error.
async fn consume(
    recorder: Recorder,
    stop: Arc<AtomicBool>,
    abandoning: Arc<AtomicBool>,
    group: Arc<Mutex<Group>>,
    mut rng: ChaCha8Rng,
) {
    let mut member = Member {
        recorder,
        group,
        process: CONSUMER_PROCESS,
        polls: 0,
        received: BTreeMap::new(),
        resumed: BTreeSet::new(),
    };
    for generation in 1..=MEMBERS_MAX {
        if stop.load(Ordering::SeqCst) || member.polls >= POLLS_MAX {
            break;
        }
        let mut consumer = SimKafka::connect().await;
        member.resumed.clear();
        trace::record("kafka-check", &format!("member #{generation} joins the group"));
        while member.polls < POLLS_MAX && !stop.load(Ordering::SeqCst) {
            let Some(batch) = member.poll(&mut consumer, generation).await else { break };
            if batch.is_empty() {
                continue;
            }
            if abandoning.load(Ordering::SeqCst) && rng.gen_bool(ABANDON_PROBABILITY) {
                trace::record("kafka-check", &format!("member #{generation} leaves without committing its batch"));
                break;
            }
            madsim::time::sleep(Duration::from_millis(rng.gen_range(0..=PROCESS_MS_MAX))).await;
            if !member.commit(&mut consumer, &batch).await {
                break;
            }
        }
        madsim::time::sleep(REJOIN_PAUSE).await;
    }
}

/// The consumer's memory across its members.
struct Member {
    recorder: Recorder,
    group: Arc<Mutex<Group>>,
    process: u64,
    polls: usize,
    /// Partition -> the offset after the last message the group received (over every member).
    received: BTreeMap<i32, i64>,
    /// Partitions this member has received a message of: its first one on a partition is where
    /// the group resumed.
    resumed: BTreeSet<i32>,
}

impl Member {
    /// One poll, its messages judged; `None` after an error (the member then leaves).
    async fn poll(&mut self, consumer: &mut SimKafka, generation: usize) -> Option<Vec<QueuedOrder>> {
        self.polls += 1;
        let op =
            self.recorder.invoke(format!("poll-{}", self.polls), self.process, "poll", TOPIC, Some(json!(generation)));
        let invoked = op.at;
        let batch = match consumer.poll(POLL_BATCH, POLL_WAIT).await {
            Ok(batch) => batch,
            Err(e) => {
                self.recorder.complete(op, EventKind::Fail, None, Some(e.to_string()));
                return None;
            }
        };
        let got: Vec<Value> = batch.iter().map(|m| json!(format!("{}/{}", m.partition, m.offset))).collect();
        self.recorder.complete(op, EventKind::Ok, Some(Value::Array(got)), None);
        let mut breaches = Vec::new();
        {
            let mut group = self.group.lock().expect("not poisoned");
            for m in &batch {
                group.delivered.insert(m.order.order_id.clone());
                let what = format!(
                    "the poll of member #{generation} invoked at {} returned {}/{} (order {})",
                    secs(invoked),
                    m.partition,
                    m.offset,
                    m.order.order_id
                );
                // Commits are acknowledged to this task only, between polls: the map holds
                // exactly those acknowledged before this poll began.
                if let Some(&(next, at)) = group.committed.get(&m.partition)
                    && m.offset < next
                {
                    breaches.push(format!(
                        "{what} again, though offset {next} of partition {} was committed (acknowledged at {})",
                        m.partition,
                        secs(at)
                    ));
                }
                // A new member resumes exactly from the committed offset: its first message on a
                // partition is at most the highest offset a commit asked for (and, above, not
                // below one acknowledged). Resuming from where the group had read instead skips
                // what was received but never committed.
                if self.resumed.insert(m.partition) {
                    let asked = group.asked.get(&m.partition).copied().unwrap_or(0);
                    if m.offset > asked {
                        breaches.push(format!(
                            "{what}: its first message on partition {}, but no commit ever asked past offset {asked}: the \
                             group did not resume from its committed offset",
                            m.partition
                        ));
                    }
                    if m.offset < self.received.get(&m.partition).copied().unwrap_or(0) {
                        crate::verdict::reached("kafka-resumed-from-commit");
                    }
                }
                let expected = self.received.get(&m.partition).copied().unwrap_or(0);
                if m.offset > expected {
                    breaches.push(format!(
                        "{what}, but the group had received partition {} only up to offset {expected} (exclusive): \
                         offsets {expected}..{} were skipped",
                        m.partition, m.offset
                    ));
                }
                let received = self.received.entry(m.partition).or_insert(0);
                *received = (*received).max(m.offset + 1);
            }
        }
        for message in breaches {
            self.recorder.breach(message);
        }
        Some(batch)
    }

    /// Commits a processed batch; false after an error (the member then leaves).
    async fn commit(&mut self, consumer: &mut SimKafka, batch: &[QueuedOrder]) -> bool {
        let mut next: BTreeMap<i32, i64> = BTreeMap::new();
        for m in batch {
            let offset = next.entry(m.partition).or_insert(0);
            *offset = (*offset).max(m.offset + 1);
        }
        let offsets: Vec<Value> = next.iter().map(|(p, o)| json!([p, o])).collect();
        {
            let mut group = self.group.lock().expect("not poisoned");
            for (partition, offset) in &next {
                let asked = group.asked.entry(*partition).or_insert(0);
                *asked = (*asked).max(*offset);
            }
        }
        let op = self.recorder.invoke(
            format!("commit-{}", self.polls),
            self.process,
            "commit",
            TOPIC,
            Some(Value::Array(offsets)),
        );
        match consumer.commit(batch).await {
            Ok(()) => {
                let at = self.recorder.complete(op, EventKind::Ok, None, None);
                let mut group = self.group.lock().expect("not poisoned");
                for (partition, offset) in next {
                    let committed = group.committed.entry(partition).or_insert((0, at));
                    if offset > committed.0 {
                        *committed = (offset, at);
                    }
                }
                true
            }
            Err(e) => {
                // A timeout, or a refusal after some partitions were committed: unknown.
                self.recorder.complete(op, EventKind::Info, None, Some(e.to_string()));
                self.process += 2;
                false
            }
        }
    }
}
