//! Simulated CockroachDB: a cluster of madsim nodes holding the event store, and the client
//! adapter the ledger's roles use (`SimEventStore`, an `EventStore`).
//!
//! Contract (DESIGN 6): serializable transactions (the logical state is `MemEventStore`, whose
//! append is atomic with unique (stream, version) and unique idempotency key); a statement at a
//! gateway needs a majority of the nodes reachable from that gateway, found by heartbeats over
//! the simulated network, so crashes and partitions decide availability; committed data lives
//! outside the nodes' init closures, like a disk, and survives any crash.
//! Failure outcomes: `unavailable` after the quorum timeout; 40001 under contention on a stream;
//! 40003 "result is ambiguous" when the gateway loses a commit's outcome; and a client timeout
//! on a write, which the client must treat as just as ambiguous.
//!
//! A read at a gateway that reached a majority less than [`READ_LEASE`] ago is served without a
//! new round, as a leaseholder serves reads until its lease expires; a write always needs one.
//! Reads come from the one logical state, so a lease changes only availability (a gateway cut
//! off from the majority still answers reads for at most [`READ_LEASE`]), never what a read sees.
//!
//! This is not Raft: replication and leases are not modelled, only their observable contract
//! (see docs/adr/0003-simulated-dependencies.md).

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use madsim::net::Endpoint;
use madsim::net::rpc::Request;
use madsim::rand::Rng;
use serde::{Deserialize, Serialize};
use services::ledger::mem::MemEventStore;
use services::ports::ledger::{AppendBatch, EventStore, RecordedEvent, StoreError, StoredOutcome};
use uuid::Uuid;

use crate::trace;

/// SQL port of every CockroachDB node.
pub const CRDB_PORT: u16 = 26257;
/// How long a gateway waits for heartbeats before declaring no quorum.
pub const QUORUM_TIMEOUT: Duration = Duration::from_millis(300);
/// How long a client waits for a statement's answer: longer than the quorum timeout, so a
/// reachable gateway's "unavailable" arrives as a definite answer.
pub const CLIENT_TIMEOUT: Duration = Duration::from_secs(2);
const _: () = assert!(QUORUM_TIMEOUT.as_millis() * 3 < CLIENT_TIMEOUT.as_millis());
/// How long after a round that reached a majority a gateway serves reads without a new round.
/// CockroachDB's epoch leases last seconds (liveness expires after 9 s); this is shorter, so a
/// partition makes reads unavailable at a cut-off gateway almost as soon as writes.
pub const READ_LEASE: Duration = Duration::from_millis(250);

/// The address of node `index` (0-based).
pub fn crdb_addr(index: usize) -> SocketAddr {
    SocketAddr::from(([10, 0, 1, index as u8 + 1], CRDB_PORT))
}

/// A SQL statement of the event store, as the adapter sends it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub enum CrdbReq {
    /// A stream's events after a version.
    Load(String, u64),
    Outcome(String),
    Append(AppendBatch),
    ReadAll(Option<(String, u64)>, usize),
    Unsent(usize),
    MarkSent(Vec<Uuid>),
    Backlog,
}

impl CrdbReq {
    fn is_write(&self) -> bool {
        matches!(self, CrdbReq::Append(_) | CrdbReq::MarkSent(_))
    }

    fn label(&self) -> String {
        match self {
            CrdbReq::Load(s, _) => format!("load {s}"),
            CrdbReq::Outcome(k) => format!("outcome {k}"),
            CrdbReq::Append(b) => {
                let what: Vec<String> = b.events.iter().map(|e| format!("{}@{}", e.stream_id, e.version)).collect();
                format!("append {}", what.join(","))
            }
            CrdbReq::ReadAll(_, n) => format!("read-all {n}"),
            CrdbReq::Unsent(n) => format!("unsent {n}"),
            CrdbReq::MarkSent(ids) => format!("mark-sent {}", ids.len()),
            CrdbReq::Backlog => "backlog".into(),
        }
    }
}

/// A statement's answer.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub enum CrdbResp {
    Events(Vec<RecordedEvent>),
    Outcome(Option<StoredOutcome>),
    Positions(Vec<i64>),
    Done,
    Count(u64),
}

impl Request for CrdbReq {
    type Response = Result<CrdbResp, StoreError>;
    const ID: u64 = 0xC0C0_0001;
}

/// A gateway's liveness probe of a peer.
#[derive(Debug, Clone, Copy, Serialize, Deserialize)]
pub struct Heartbeat;

impl Request for Heartbeat {
    type Response = ();
    const ID: u64 = 0xC0C0_0002;
}

/// How often the cluster answers 40001 and 40003 (drawn per seed).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct CrdbFaultRates {
    /// Probability of 40001 for an append that contends with another on one of its streams.
    pub retry_on_contention: f64,
    /// Probability that a gateway loses the outcome of a commit (40003, applied).
    pub ambiguous_commit: f64,
}

/// One committed event, as the simulator saw it commit: which gateway ran the append, and
/// when. Lets the invariants ask who committed on a stream during an operation, and the
/// self-check whether a gateway committed while it was in the minority.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CommitRecord {
    pub stream: String,
    pub version: u64,
    /// The 0-based index of the node that ran the append.
    pub gateway: usize,
    /// Nanoseconds since the run began.
    pub at: u64,
}

/// The cluster's shared state: the replicated data (its "disks"), the lock table and the log
/// of commits.
#[derive(Clone)]
pub struct CrdbCluster {
    pub store: MemEventStore,
    pub nodes: usize,
    pub rates: CrdbFaultRates,
    in_flight: Arc<Mutex<BTreeMap<String, u32>>>,
    commits: Arc<Mutex<Vec<CommitRecord>>>,
}

impl CrdbCluster {
    pub fn new(nodes: usize, rates: CrdbFaultRates) -> Self {
        assert!(nodes == 3 || nodes == 5, "3 or 5 nodes");
        CrdbCluster { store: MemEventStore::new(), nodes, rates, in_flight: Arc::default(), commits: Arc::default() }
    }

    /// Every commit so far, in commit order.
    pub fn commits(&self) -> Vec<CommitRecord> {
        self.commits.lock().expect("not poisoned").clone()
    }

    fn majority(&self) -> usize {
        self.nodes / 2 + 1
    }
}

/// Marks streams as written by an in-flight transaction; unmarks on drop (also when the
/// gateway crashes and its task is dropped).
struct InFlight {
    table: Arc<Mutex<BTreeMap<String, u32>>>,
    streams: Vec<String>,
}

impl InFlight {
    fn enter(table: &Arc<Mutex<BTreeMap<String, u32>>>, streams: Vec<String>) -> (InFlight, bool) {
        let mut t = table.lock().expect("not poisoned");
        let contended = streams.iter().any(|s| t.get(s).is_some_and(|n| *n > 0));
        for s in &streams {
            *t.entry(s.clone()).or_insert(0) += 1;
        }
        (InFlight { table: table.clone(), streams }, contended)
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        let mut t = self.table.lock().expect("not poisoned");
        for s in &self.streams {
            if let Some(n) = t.get_mut(s) {
                *n -= 1;
                if *n == 0 {
                    t.remove(s);
                }
            }
        }
    }
}

/// Runs CockroachDB node `index` until the node is killed.
pub async fn serve_node(index: usize, cluster: CrdbCluster) {
    let name = format!("crdb-{}", index + 1);
    let ep = Arc::new(Endpoint::bind(crdb_addr(index)).await.expect("bind crdb"));
    ep.add_rpc_handler(|_: Heartbeat| async {});
    let handler_ep = ep.clone();
    // This incarnation's read lease: a restarted node starts without one.
    let lease = Arc::new(Mutex::new(None));
    ep.add_rpc_handler(move |req: CrdbReq| {
        let (ep, cluster, name, lease) = (handler_ep.clone(), cluster.clone(), name.clone(), lease.clone());
        async move {
            let label = req.label();
            let gateway = Gateway { index, ep: &ep, lease: &lease };
            let answer = execute(&gateway, &cluster, req).await;
            trace::record_fmt(&name, format_args!("{label} -> {}", summary(&answer)));
            answer
        }
    });
    futures::future::pending::<()>().await;
}

fn summary(answer: &Result<CrdbResp, StoreError>) -> String {
    match answer {
        Ok(CrdbResp::Events(e)) => format!("{} events", e.len()),
        Ok(CrdbResp::Outcome(o)) => if o.is_some() { "outcome" } else { "none" }.into(),
        Ok(CrdbResp::Positions(p)) => format!("positions {p:?}"),
        Ok(CrdbResp::Done) => "done".into(),
        Ok(CrdbResp::Count(n)) => format!("{n}"),
        Err(e) => format!("error {e}"),
    }
}

/// True once a majority (this node included) answered a heartbeat; false when the answers that
/// came within [`QUORUM_TIMEOUT`] are too few.
async fn quorum(index: usize, ep: &Endpoint, cluster: &CrdbCluster) -> bool {
    use futures::StreamExt;
    // One timer for the round rather than one per heartbeat: they all share the deadline.
    let mut pending: futures::stream::FuturesUnordered<_> =
        (0..cluster.nodes).filter(|j| *j != index).map(|j| ep.call(crdb_addr(j), Heartbeat)).collect();
    let round = async {
        let mut acks = 1;
        while acks < cluster.majority() {
            match pending.next().await {
                Some(Ok(())) => acks += 1,
                Some(Err(_)) => {}
                None => return false,
            }
        }
        true
    };
    madsim::time::timeout(QUORUM_TIMEOUT, round).await.unwrap_or(false)
}

/// A node serving statements: its index, its endpoint and its read lease's expiry.
struct Gateway<'a> {
    index: usize,
    ep: &'a Endpoint,
    lease: &'a Mutex<Option<madsim::time::Instant>>,
}

impl Gateway<'_> {
    /// A round of heartbeats for a write; for a read, only when the lease has expired. A round
    /// that reaches a majority renews the lease.
    async fn quorum(&self, cluster: &CrdbCluster, write: bool) -> bool {
        let now = madsim::time::Instant::now();
        // Planted bug (the simulator's own): writes served under the read lease too.
        let under_lease = !write || services::bugs::active(services::bugs::Bug::CommitWithoutQuorum);
        if under_lease && self.lease.lock().expect("not poisoned").is_some_and(|until| now < until) {
            return true;
        }
        let reached = quorum(self.index, self.ep, cluster).await;
        if reached {
            *self.lease.lock().expect("not poisoned") = Some(now + READ_LEASE);
        }
        reached
    }
}

async fn execute(gateway: &Gateway<'_>, cluster: &CrdbCluster, req: CrdbReq) -> Result<CrdbResp, StoreError> {
    let store = &cluster.store;
    if let CrdbReq::Append(batch) = req {
        let streams = batch.events.iter().map(|e| e.stream_id.clone()).collect();
        let (_guard, contended) = InFlight::enter(&cluster.in_flight, streams);
        if !gateway.quorum(cluster, true).await {
            return Err(StoreError::Unavailable("no quorum reachable from the gateway".into()));
        }
        if contended && madsim::rand::thread_rng().gen_bool(cluster.rates.retry_on_contention) {
            return Err(StoreError::Retryable(
                "restart transaction: TransactionRetryWithProtoRefreshError (40001)".into(),
            ));
        }
        let committed: Vec<(String, u64)> = batch.events.iter().map(|e| (e.stream_id.clone(), e.version)).collect();
        let positions = store.append(batch).await?;
        let at = trace::now_nanos();
        cluster.commits.lock().expect("not poisoned").extend(
            committed.into_iter().map(|(stream, version)| CommitRecord { stream, version, gateway: gateway.index, at }),
        );
        trace::gauge("events", store.event_count() as i64);
        trace::gauge("outbox_backlog", store.backlog().await.unwrap_or(0) as i64);
        if madsim::rand::thread_rng().gen_bool(cluster.rates.ambiguous_commit) {
            return Err(StoreError::Ambiguous("result is ambiguous (40003)".into()));
        }
        return Ok(CrdbResp::Positions(positions));
    }
    if !gateway.quorum(cluster, req.is_write()).await {
        return Err(StoreError::Unavailable("no quorum reachable from the gateway".into()));
    }
    Ok(match req {
        CrdbReq::Load(stream, after) => CrdbResp::Events(store.load_stream(&stream, after).await?),
        CrdbReq::Outcome(key) => CrdbResp::Outcome(store.outcome(&key).await?),
        CrdbReq::ReadAll(after, limit) => CrdbResp::Events(store.read_all(after, limit).await?),
        CrdbReq::Unsent(limit) => CrdbResp::Events(store.unsent(limit).await?),
        CrdbReq::MarkSent(ids) => {
            store.mark_sent(&ids).await?;
            trace::gauge("outbox_backlog", store.backlog().await.unwrap_or(0) as i64);
            CrdbResp::Done
        }
        CrdbReq::Backlog => CrdbResp::Count(store.backlog().await?),
        CrdbReq::Append(_) => unreachable!("handled above"),
    })
}

/// The event-store adapter of a ledger role: statements to a gateway over the simulated
/// network. With several gateways it moves to the next one after an `unavailable`, as a driver
/// with a multi-host connection string does.
#[derive(Clone)]
pub struct SimEventStore {
    ep: Arc<Endpoint>,
    gateways: Vec<SocketAddr>,
    current: Arc<Mutex<usize>>,
}

impl SimEventStore {
    /// # Panics
    /// When no gateway is given.
    pub async fn connect(gateways: Vec<SocketAddr>) -> SimEventStore {
        assert!(!gateways.is_empty());
        let ep = Arc::new(Endpoint::bind("0.0.0.0:0").await.expect("bind client"));
        SimEventStore { ep, gateways, current: Arc::default() }
    }

    async fn call(&self, req: CrdbReq) -> Result<CrdbResp, StoreError> {
        let index = *self.current.lock().expect("not poisoned");
        let gateway = self.gateways[index % self.gateways.len()];
        let write = req.is_write();
        let answer = match self.ep.call_timeout(gateway, req, CLIENT_TIMEOUT).await {
            Ok(answer) => answer,
            // The connection dropped or timed out: a write may have committed.
            Err(e) if write => Err(StoreError::Ambiguous(format!("connection to {gateway} lost: {e}"))),
            Err(e) => Err(StoreError::Unavailable(format!("no answer from {gateway}: {e}"))),
        };
        if matches!(answer, Err(StoreError::Unavailable(_) | StoreError::Ambiguous(_))) && self.gateways.len() > 1 {
            *self.current.lock().expect("not poisoned") = index + 1;
        }
        answer
    }
}

fn unexpected(resp: CrdbResp) -> StoreError {
    StoreError::Corrupt(format!("unexpected answer {resp:?}"))
}

impl EventStore for SimEventStore {
    async fn load_stream(&self, stream_id: &str, after_version: u64) -> Result<Vec<RecordedEvent>, StoreError> {
        match self.call(CrdbReq::Load(stream_id.to_string(), after_version)).await? {
            CrdbResp::Events(events) => Ok(events),
            other => Err(unexpected(other)),
        }
    }

    async fn outcome(&self, key: &str) -> Result<Option<StoredOutcome>, StoreError> {
        match self.call(CrdbReq::Outcome(key.to_string())).await? {
            CrdbResp::Outcome(outcome) => Ok(outcome),
            other => Err(unexpected(other)),
        }
    }

    async fn append(&self, batch: AppendBatch) -> Result<Vec<i64>, StoreError> {
        match self.call(CrdbReq::Append(batch)).await? {
            CrdbResp::Positions(positions) => Ok(positions),
            other => Err(unexpected(other)),
        }
    }

    async fn read_all(&self, after: Option<(String, u64)>, limit: usize) -> Result<Vec<RecordedEvent>, StoreError> {
        match self.call(CrdbReq::ReadAll(after, limit)).await? {
            CrdbResp::Events(events) => Ok(events),
            other => Err(unexpected(other)),
        }
    }

    async fn unsent(&self, limit: usize) -> Result<Vec<RecordedEvent>, StoreError> {
        match self.call(CrdbReq::Unsent(limit)).await? {
            CrdbResp::Events(events) => Ok(events),
            other => Err(unexpected(other)),
        }
    }

    async fn mark_sent(&self, event_ids: &[Uuid]) -> Result<(), StoreError> {
        match self.call(CrdbReq::MarkSent(event_ids.to_vec())).await {
            Ok(CrdbResp::Done) => Ok(()),
            // Marking twice is harmless: an ambiguous mark is just unavailable.
            Err(StoreError::Ambiguous(e)) => Err(StoreError::Unavailable(e)),
            Ok(other) => Err(unexpected(other)),
            Err(e) => Err(e),
        }
    }

    async fn backlog(&self) -> Result<u64, StoreError> {
        match self.call(CrdbReq::Backlog).await? {
            CrdbResp::Count(n) => Ok(n),
            other => Err(unexpected(other)),
        }
    }
}
