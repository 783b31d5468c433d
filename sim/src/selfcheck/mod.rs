//! The simulator checks itself (issue 19): a self-check scenario per simulated dependency.
//!
//! Every other scenario trusts the simulated dependencies to keep the contracts the services
//! rely on (DESIGN 6, docs/adr/0003-simulated-dependencies.md). A simulated CockroachDB that
//! commits without a quorum, a JetStream that loses an acknowledged publish, a Kafka that forgets
//! a committed offset, a Redis whose script is not atomic or a PostgreSQL that loses a committed
//! row would make every verdict worthless: bugs of the services hidden, or bugs reported that the
//! real systems cannot cause. So each dependency gets a scenario of its own, run by `cargo sim`
//! over its default seeds: the smallest workload that exercises each clause of its contract,
//! through the very port adapter the services use, under the faults the contract speaks of
//! (crashes and restarts of its node, partitions for CockroachDB), and a checker of that contract
//! alone.
//!
//! A broken clause is a `dependency-contract` violation, except the CockroachDB register's
//! linearizability (`linearizability`). Messages name the operation, the key and the simulated
//! time. Client operations are recorded as history events (invoke and completion), so a failing
//! seed's timeline shows them beside the faults.
//!
//! - [`crdb`]: registers linearizable through every gateway, lease reads included; a gateway in
//!   the minority never commits.
//! - [`jetstream`]: an acknowledged publish survives restarts; a duplicate message id within
//!   the window is stored once.
//! - [`kafka`]: committed offsets survive broker restarts; the group resumes from them.
//! - [`redis`]: a restart empties Redis; its reservation script is atomic.
//! - [`postgres`]: acknowledged inserts survive restarts, once.

use std::fmt::Write as _;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use madsim::runtime::{Handle, NodeHandle};
use serde_json::Value;

use crate::faults::{FaultRecord, Injector};
use crate::history::{EventKind, History, HistoryEvent};
use crate::trace::{self, BuildTracked};
use crate::verdict::{OpRecord, Violation};

pub mod crdb;
pub mod jetstream;
pub mod kafka;
pub mod postgres;
pub mod redis;

/// Time the dependency nodes get to bind their ports before the first client request.
pub const BOOT_WAIT: Duration = Duration::from_millis(200);

/// A self-check scenario: one simulated dependency held to its own contract.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum SelfCheck {
    Crdb,
    JetStream,
    Kafka,
    Redis,
    Postgres,
}

impl SelfCheck {
    pub const ALL: [SelfCheck; 5] =
        [SelfCheck::Crdb, SelfCheck::JetStream, SelfCheck::Kafka, SelfCheck::Redis, SelfCheck::Postgres];

    pub fn name(self) -> &'static str {
        match self {
            SelfCheck::Crdb => "crdb-self-check",
            SelfCheck::JetStream => "jetstream-self-check",
            SelfCheck::Kafka => "kafka-self-check",
            SelfCheck::Redis => "redis-self-check",
            SelfCheck::Postgres => "postgres-self-check",
        }
    }

    pub fn about(self) -> &'static str {
        match self {
            SelfCheck::Crdb => {
                "simulated CockroachDB: registers read and compare-and-set through every gateway under partitions \
                 and crashes are linearizable, and a gateway in the minority never commits"
            }
            SelfCheck::JetStream => {
                "simulated JetStream: an acknowledged publish survives restarts, a duplicate message id is stored \
                 once"
            }
            SelfCheck::Kafka => {
                "simulated Kafka: committed offsets survive broker restarts, the group resumes from them \
                 (nothing committed delivered again, nothing skipped)"
            }
            SelfCheck::Redis => {
                "simulated Redis: a restart empties it, concurrent reservations never take more than the stock"
            }
            SelfCheck::Postgres => "simulated PostgreSQL: every acknowledged insert survives restarts, exactly once",
        }
    }

    /// Seeds `cargo sim` sweeps: each run is a few seconds of simulated time and well under
    /// 100 ms of wall time. CockroachDB gets more: it must find `commit-without-quorum` within
    /// 100 seeds, and its register histories are the richest.
    pub fn default_seeds(self) -> u64 {
        match self {
            SelfCheck::Crdb => 40,
            _ => 20,
        }
    }

    pub fn from_name(name: &str) -> Option<SelfCheck> {
        Self::ALL.into_iter().find(|c| c.name() == name)
    }
}

/// What a self-check run hands back, in the shape of the other scenarios' runs.
pub struct SelfCheckRun {
    pub history: Vec<HistoryEvent>,
    pub ops: Vec<OpRecord>,
    pub faults: Vec<FaultRecord>,
    pub violations: Vec<Violation>,
    /// History events recorded.
    pub events: usize,
}

/// Runs one self-check to its end and checks its contract. Called inside a fresh madsim
/// runtime seeded with `seed` (`run::run_seed`).
pub async fn run(check: SelfCheck, seed: u64) -> SelfCheckRun {
    trace::record("selfcheck", &format!("{} seed {seed}", check.name()));
    match check {
        SelfCheck::Crdb => crdb::run(seed).await,
        SelfCheck::JetStream => jetstream::run(seed).await,
        SelfCheck::Kafka => kafka::run(seed).await,
        SelfCheck::Redis => redis::run(seed).await,
        SelfCheck::Postgres => postgres::run(seed).await,
    }
}

/// One scripted outage of `node`: crashed after a pause drawn from `after_ms`, restarted a
/// time drawn from `lasts_ms` later. Returns when it went down and came back (nanoseconds).
pub(crate) async fn outage(
    injector: &Injector,
    rng: &mut rand_chacha::ChaCha8Rng,
    node: &str,
    after_ms: std::ops::RangeInclusive<u64>,
    lasts_ms: std::ops::RangeInclusive<u64>,
) -> (u64, u64) {
    use rand::Rng;
    madsim::time::sleep(Duration::from_millis(rng.gen_range(after_ms))).await;
    injector.crash(node);
    let down = trace::now_nanos();
    madsim::time::sleep(Duration::from_millis(rng.gen_range(lasts_ms))).await;
    injector.restart(node);
    (down, trace::now_nanos())
}

/// Simulated time as the messages print it: `1.234s`.
pub(crate) fn secs(nanos: u64) -> String {
    format!("{:.3}s", nanos as f64 / 1e9)
}

/// A client node of its own (no init: its tasks are spawned on it).
pub(crate) fn client_node(name: &str, ip: [u8; 4]) -> NodeHandle {
    Handle::current().create_node().name(name).ip(ip.into()).build_tracked()
}

/// An operation invoked and not yet completed.
#[derive(Debug)]
#[must_use = "an invoked operation must be completed"]
pub(crate) struct Invoked {
    /// Names the operation in the op records and the trace.
    pub id: String,
    pub process: u64,
    pub f: &'static str,
    pub key: String,
    /// When it was invoked, in nanoseconds of simulated time.
    pub at: u64,
}

/// Records a self-check's client operations (history events and op records) and the contract
/// breaches its clients see directly. Clones share everything.
#[derive(Debug, Clone)]
pub(crate) struct Recorder {
    /// The trace's node name for its lines.
    node: &'static str,
    history: History,
    ops: Arc<Mutex<Vec<OpRecord>>>,
    breaches: Arc<Mutex<Vec<Violation>>>,
}

impl Recorder {
    pub(crate) fn new(node: &'static str) -> Recorder {
        Recorder { node, history: History::new(), ops: Arc::default(), breaches: Arc::default() }
    }

    /// Records the invoke of operation `id`: function `f` on `key`, with `value`.
    pub(crate) fn invoke(&self, id: String, process: u64, f: &'static str, key: &str, value: Option<Value>) -> Invoked {
        let at = trace::now_nanos();
        let mut event = HistoryEvent::new(process, EventKind::Invoke, f, at);
        event.key = Some(key.to_string());
        event.value = value;
        self.history.record(event);
        Invoked { id, process, f, key: key.to_string(), at }
    }

    /// Records the completion of `op`; returns its time (nanoseconds of simulated time).
    pub(crate) fn complete(&self, op: Invoked, kind: EventKind, value: Option<Value>, error: Option<String>) -> u64 {
        let at = trace::now_nanos();
        let mut line = format!("{} {} {} -> {kind}", op.id, op.f, op.key);
        if let Some(value) = &value {
            let _ = write!(line, " {value}");
        }
        if let Some(error) = &error {
            let _ = write!(line, " error={error}");
        }
        trace::record(self.node, &line);
        let mut event = HistoryEvent::new(op.process, kind, op.f, at);
        event.key = Some(op.key);
        event.value = value;
        event.error = error;
        self.history.record(event);
        self.ops.lock().expect("not poisoned").push(OpRecord {
            key: op.id,
            f: op.f.to_string(),
            outcome: kind.name().to_string(),
        });
        at
    }

    /// A `dependency-contract` violation seen by a client as it happened.
    pub(crate) fn breach(&self, message: String) {
        trace::record(self.node, &format!("contract broken: {message}"));
        self.breaches.lock().expect("not poisoned").push(Violation::new("dependency-contract", message));
    }

    pub(crate) fn events(&self) -> Vec<HistoryEvent> {
        self.history.events()
    }

    /// The run's result: the breaches the clients saw, then `violations` (the checkers').
    pub(crate) fn finish(&self, injector: &Injector, violations: Vec<Violation>) -> SelfCheckRun {
        let mut all = self.breaches.lock().expect("not poisoned").clone();
        all.extend(violations);
        trace::record("checker", &format!("{} violations", all.len()));
        let history = self.history.events();
        SelfCheckRun {
            events: history.len(),
            history,
            ops: self.ops.lock().expect("not poisoned").clone(),
            faults: injector.records(),
            violations: all,
        }
    }
}
