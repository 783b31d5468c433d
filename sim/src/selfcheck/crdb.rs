//! `crdb-self-check`: registers linearizable through every gateway; no commit by a gateway in the minority.
//!
//! The cluster is built as the ledger's world builds it (3 nodes, `crdb::serve_node`), with no
//! 40001 and, in half the seeds, 5% of commits ambiguous (40003). Each key `k` is a register:
//! the stream `reg-k`, whose value is its version (the number of its events; nil before the
//! first). One or two clients stand behind each gateway, each on a node of its own with a
//! `SimEventStore` connected to that gateway only (no failover), and loop: read a random
//! register (`load_stream`, answered under the gateway's read lease when a round reached a
//! majority less than `READ_LEASE` ago, so lease reads are part of the history), then, four
//! times in five, compare-and-set it from the version read to the next one (`append` of one
//! event at version v + 1, which CockroachDB refuses with a conflict unless the stream is at v).
//! Meanwhile one node at a time is isolated from the two others, or crashed, for 0.3-1.5 s,
//! over 5-7 s; then everything heals and the clients go on for a second.
//!
//! Checked: each register's history is linearizable (the checker's `cas-register` model, one
//! history per key), and no gateway commits while it is cut off from the majority or crashed
//! (the cluster's commit log, `CrdbCluster::commits`, against the fault windows). Today every
//! gateway serves the one logical store, so linearizability can break only if the simulator
//! grows replicas, caches or snapshots (a lease read served from a snapshot, say): the check is
//! there for that day; the minority clause is the one the planted bug breaks.
//!
//! Why the clients write so often: the planted bug `commit-without-quorum` makes a gateway serve
//! writes under its read lease, without a quorum round while a round that reached a majority
//! less than `READ_LEASE` (250 ms) ago still covers it. Cut off from the majority, such a gateway
//! commits only until that lease runs out: at most 250 ms after the cut, often much less (the
//! lease dates from its last round, before the cut). A workload that finds the bug must land a
//! write on the isolated gateway inside that window, after the first [`IN_FLIGHT_GRACE`]. So
//! every client writes in four iterations of five and pauses at most [`THINK_MAX`] (40 ms, within
//! the 50 ms the bound allows) between iterations, with one or two clients per gateway: some
//! write reaches the isolated gateway every few tens of milliseconds, and with several
//! isolations per run nearly every seed finds the bug, so a sweep of 100 seeds surely does.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use checker::{Budget, ModelKind, Verdict, check_history};
use madsim::runtime::Handle;
use models::ledger::EncodedEvent;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde_json::{Value, json};
use services::ports::ledger::{AppendBatch, EventStore, NewEvent, StoreError};
use uuid::Uuid;

use super::{BOOT_WAIT, Recorder, SelfCheckRun, client_node, secs};
use crate::faults::{Injector, Targets};
use crate::history::{EventKind, HistoryEvent};
use crate::ledger::crdb::{self, CommitRecord, CrdbCluster, CrdbFaultRates, SimEventStore};
use crate::trace::{self, BuildTracked};
use crate::verdict::Violation;

/// CockroachDB nodes, each a gateway.
pub const NODES: usize = 3;
/// Registers (keys) per run, drawn.
pub const KEYS_MIN: usize = 2;
pub const KEYS_MAX: usize = 3;
/// Clients per gateway, drawn per run (1 to this).
pub const CLIENTS_PER_GATEWAY_MAX: usize = 2;
/// Probability that an iteration writes after its read.
pub const WRITE_PROBABILITY: f64 = 0.8;
/// Longest pause between two iterations of a client (see the module doc: at most 50 ms).
pub const THINK_MAX: Duration = Duration::from_millis(40);
const _: () = assert!(THINK_MAX.as_millis() <= 50);
/// Bound on a client's iterations; the stop flag normally ends them first.
pub const ITERATIONS_MAX: usize = 250;
/// Probability of 40003 after a commit, in the half of the seeds that draw ambiguous commits.
pub const AMBIGUOUS_COMMIT: f64 = 0.05;
/// How long the clients run before the first fault.
pub const WARMUP: Duration = Duration::from_millis(500);
/// How long faults are injected, drawn per run (milliseconds).
pub const FAULT_WINDOW_MS_MIN: u64 = 5_000;
pub const FAULT_WINDOW_MS_MAX: u64 = 7_000;
/// Faults at most per run.
pub const FAULTS_MAX: usize = 12;
/// Probability that a fault is a crash rather than an isolation.
pub const CRASH_PROBABILITY: f64 = 0.3;
/// How long a fault lasts, drawn (milliseconds).
pub const FAULT_MS_MIN: u64 = 300;
pub const FAULT_MS_MAX: u64 = 1_500;
/// Pause before each fault, drawn (milliseconds).
pub const GAP_MS_MIN: u64 = 100;
pub const GAP_MS_MAX: u64 = 500;
/// After the heal, how long the clients go on (every gateway serves again).
pub const TAIL: Duration = Duration::from_secs(1);
/// Longest the clients may take to stop once told (a request to a crashed gateway waits out
/// the client timeout, 2 s).
pub const CLIENTS_STOP_MAX: Duration = Duration::from_secs(30);
/// After a cut, commits are not judged for this long: madsim checks a link when a message is
/// sent, so the only answers still delivered after a cut are those sent before it, each under
/// the base latency (1-10 ms, which the heal restores and the self-check never changes), plus
/// the scheduler's creep. Twice the latency's bound: a soak found commits 10.4 ms after a cut
/// with a 10 ms grace, on the correct build (seeds 8000011, 8000168, 8000281, 8000442).
pub const IN_FLIGHT_GRACE: Duration = Duration::from_millis(20);
const _: () = assert!(IN_FLIGHT_GRACE.as_millis() * 5 < crdb::READ_LEASE.as_millis());
const _: () = assert!(IN_FLIGHT_GRACE.as_millis() >= 2 * crate::faults::BASE_LATENCY.end.as_millis());
/// Search budget of the linearizability check of one register.
pub const CHECK_STEPS_MAX: u64 = 5_000_000;
/// A client's process id is its index plus a multiple of this: a new one after each write of
/// unknown outcome, as Jepsen does.
const PROCESS_STRIDE: u64 = 100;
const _: () = assert!(NODES * CLIENTS_PER_GATEWAY_MAX < PROCESS_STRIDE as usize);
/// The error of a compare-and-set refused because the register was not at its `from`.
const CONFLICT: &str = "conflict";

fn node_name(index: usize) -> String {
    format!("crdb-{}", index + 1)
}

fn register(key: usize) -> String {
    format!("reg-{key}")
}

/// A register's value as the history shows it: its version, nil (null) before the first write.
fn value(version: u64) -> Value {
    if version == 0 { Value::Null } else { json!(version) }
}

fn label(error: &StoreError) -> &'static str {
    match error {
        StoreError::Conflict { .. } => CONFLICT,
        StoreError::Duplicate => "duplicate",
        StoreError::Retryable(_) => "retryable",
        StoreError::Unavailable(_) => "unavailable",
        StoreError::Ambiguous(_) => "ambiguous",
        StoreError::Corrupt(_) => "corrupt",
    }
}

/// Runs the self-check and checks it.
pub async fn run(seed: u64) -> SelfCheckRun {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let ambiguous_commit = if rng.gen_bool(0.5) { AMBIGUOUS_COMMIT } else { 0.0 };
    let keys = rng.gen_range(KEYS_MIN..=KEYS_MAX);
    let clients = NODES * rng.gen_range(1..=CLIENTS_PER_GATEWAY_MAX);
    let cluster = CrdbCluster::new(NODES, CrdbFaultRates { retry_on_contention: 0.0, ambiguous_commit });
    let handle = Handle::current();
    let mut nodes = Vec::new();
    for index in 0..NODES {
        let cluster = cluster.clone();
        let node = handle
            .create_node()
            .name(node_name(index))
            .ip(crdb::crdb_addr(index).ip())
            .init(move || crdb::serve_node(index, cluster.clone()))
            .build_tracked();
        nodes.push((node_name(index), node.id()));
    }
    let injector = Injector::new(Targets { nodes });
    let recorder = Recorder::new("crdb-check");
    trace::record("selfcheck", &format!("{keys} registers, {clients} clients, 40003 probability {ambiguous_commit}"));
    madsim::time::sleep(BOOT_WAIT).await;
    let stop = Arc::new(AtomicBool::new(false));
    let mut handles = Vec::new();
    for index in 0..clients {
        let client = Client {
            index,
            gateway: index % NODES,
            keys,
            rng: ChaCha8Rng::seed_from_u64(rng.r#gen()),
            recorder: recorder.clone(),
            stop: stop.clone(),
        };
        let node = client_node(&format!("client-{}", index + 1), [10, 0, 20, index as u8 + 1]);
        handles.push(node.spawn(run_client(client)));
    }
    madsim::time::sleep(WARMUP).await;
    let cutoffs = inject(&injector, &mut rng).await;
    injector.heal();
    madsim::time::sleep(TAIL).await;
    stop.store(true, Ordering::SeqCst);
    let mut violations = Vec::new();
    if madsim::time::timeout(CLIENTS_STOP_MAX, futures::future::join_all(handles)).await.is_err() {
        violations.push(Violation::new(
            "liveness",
            format!(
                "crdb-self-check: the clients did not stop within {CLIENTS_STOP_MAX:?} (at {})",
                secs(trace::now_nanos())
            ),
        ));
    }
    let commits = cluster.commits();
    trace::record("checker", &format!("{} commits, {} fault windows", commits.len(), cutoffs.len()));
    violations.extend(minority_commits(&commits, &cutoffs));
    violations.extend(linearizable(&recorder.events(), keys));
    recorder.finish(&injector, violations)
}

/// A client: its gateway, its generator, and where it records.
struct Client {
    index: usize,
    gateway: usize,
    keys: usize,
    rng: ChaCha8Rng,
    recorder: Recorder,
    stop: Arc<AtomicBool>,
}

/// Reads a register, then (mostly) compare-and-sets it to the next version; until told to stop.
async fn run_client(mut client: Client) {
    let store = SimEventStore::connect(vec![crdb::crdb_addr(client.gateway)]).await;
    let mut process = client.index as u64;
    for n in 0..ITERATIONS_MAX {
        if client.stop.load(Ordering::SeqCst) {
            break;
        }
        let stream = register(client.rng.gen_range(0..client.keys));
        let name = format!("c{}-{n}", client.index + 1);
        let read = client.recorder.invoke(format!("{name}-read"), process, "read", &stream, None);
        let version = match store.load_stream(&stream, 0).await {
            Ok(events) => {
                let version = events.len() as u64;
                client.recorder.complete(read, EventKind::Ok, Some(value(version)), None);
                Some(version)
            }
            Err(e) => {
                client.recorder.complete(read, EventKind::Fail, None, Some(label(&e).to_string()));
                None
            }
        };
        if let Some(version) = version
            && client.rng.gen_bool(WRITE_PROBABILITY)
            && write(&mut client, &store, process, &stream, version, &name).await
        {
            process += PROCESS_STRIDE;
        }
        let think = client.rng.gen_range(0..=THINK_MAX.as_millis() as u64);
        madsim::time::sleep(Duration::from_millis(think)).await;
    }
}

/// Compare-and-set of `stream` from `version` to `version + 1`: one event appended at exactly
/// the next version. Returns true when the outcome is unknown (the process is then retired).
async fn write(
    client: &mut Client,
    store: &SimEventStore,
    process: u64,
    stream: &str,
    version: u64,
    name: &str,
) -> bool {
    let event = NewEvent {
        event_id: Uuid::from_u128(client.rng.r#gen()),
        stream_id: stream.to_string(),
        version: version + 1,
        encoded: EncodedEvent { event_type: "RegisterWritten".into(), event_version: 1, data: json!({}) },
        command_key: None,
    };
    let cas = json!([value(version), value(version + 1)]);
    let op = client.recorder.invoke(format!("{name}-cas"), process, "cas", stream, Some(cas));
    let at = op.at;
    let answer = store.append(AppendBatch::new(vec![event], None)).await;
    let kind = match &answer {
        Ok(_) => EventKind::Ok,
        // Definite: refused at the version check, no quorum (nothing written), or 40001.
        Err(StoreError::Conflict { .. } | StoreError::Unavailable(_) | StoreError::Retryable(_)) => EventKind::Fail,
        // 40003, or the connection lost at commit: it may have applied.
        Err(StoreError::Ambiguous(_)) => EventKind::Info,
        Err(e @ (StoreError::Duplicate | StoreError::Corrupt(_))) => {
            client.recorder.breach(format!(
                "append {stream}@{} by client-{} through crdb-{} at {} answered {e:?}, which an append without an \
                 idempotency key cannot get",
                version + 1,
                client.index + 1,
                client.gateway + 1,
                secs(at)
            ));
            EventKind::Info
        }
    };
    let error = answer.as_ref().err().map(|e| label(e).to_string());
    client.recorder.complete(op, kind, None, error);
    kind == EventKind::Info
}

/// Why a gateway could not commit for a while.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Cut {
    /// Isolated from both other nodes: a minority of one.
    Isolated,
    Crashed,
}

/// A window in which gateway `gateway` must not commit (nanoseconds of simulated time).
#[derive(Debug, Clone, Copy)]
struct Cutoff {
    gateway: usize,
    cut: Cut,
    start: u64,
    end: u64,
}

/// One node at a time isolated or crashed, then healed, for a drawn window; returns the windows.
async fn inject(injector: &Injector, rng: &mut ChaCha8Rng) -> Vec<Cutoff> {
    let window = Duration::from_millis(rng.gen_range(FAULT_WINDOW_MS_MIN..=FAULT_WINDOW_MS_MAX));
    let deadline = madsim::time::Instant::now() + window;
    let mut cutoffs = Vec::new();
    for _ in 0..FAULTS_MAX {
        madsim::time::sleep(Duration::from_millis(rng.gen_range(GAP_MS_MIN..=GAP_MS_MAX))).await;
        if madsim::time::Instant::now() >= deadline {
            break;
        }
        let gateway = rng.gen_range(0..NODES);
        let lasts = Duration::from_millis(rng.gen_range(FAULT_MS_MIN..=FAULT_MS_MAX));
        let name = node_name(gateway);
        if rng.gen_bool(CRASH_PROBABILITY) {
            injector.crash(&name);
            let start = trace::now_nanos();
            madsim::time::sleep(lasts).await;
            let end = trace::now_nanos();
            injector.restart(&name);
            cutoffs.push(Cutoff { gateway, cut: Cut::Crashed, start, end });
        } else {
            let alone = vec![name];
            let others: Vec<String> = (0..NODES).filter(|j| *j != gateway).map(node_name).collect();
            let index = injector.split(&alone, &others);
            let start = trace::now_nanos();
            madsim::time::sleep(lasts).await;
            let end = trace::now_nanos();
            injector.unsplit(&alone, &others, index);
            cutoffs.push(Cutoff { gateway, cut: Cut::Isolated, start, end });
        }
    }
    cutoffs
}

/// No commit by a gateway strictly inside a window where it was isolated (after the in-flight
/// grace) or crashed. One violation per window, naming the first such commit.
fn minority_commits(commits: &[CommitRecord], cutoffs: &[Cutoff]) -> Vec<Violation> {
    let grace = IN_FLIGHT_GRACE.as_nanos() as u64;
    let mut out = Vec::new();
    for cutoff in cutoffs {
        let from = match cutoff.cut {
            Cut::Isolated => cutoff.start + grace,
            Cut::Crashed => cutoff.start,
        };
        let during: Vec<&CommitRecord> =
            commits.iter().filter(|c| c.gateway == cutoff.gateway && c.at > from && c.at < cutoff.end).collect();
        let Some(first) = during.first() else { continue };
        let how = match cutoff.cut {
            Cut::Isolated => format!(
                "isolated in the minority (cut off from the two other nodes; answers already on the wire \
                 allowed for {IN_FLIGHT_GRACE:?})"
            ),
            Cut::Crashed => "crashed".to_string(),
        };
        out.push(Violation::new(
            "dependency-contract",
            format!(
                "crdb-{} committed {} append(s) while {how} from {} to {}: the first, {}@{}, at {}; a commit needs a \
                 majority reachable from its gateway",
                cutoff.gateway + 1,
                during.len(),
                secs(cutoff.start),
                secs(cutoff.end),
                first.stream,
                first.version,
                secs(first.at),
            ),
        ));
    }
    out
}

/// Each register's history is linearizable as a compare-and-set register.
///
/// A compare-and-set that failed for another reason than a conflict (no quorum, 40001) did not
/// apply and observed nothing; the `cas-register` model reads every failed cas as "the value
/// was not `from`", so those operations are left out of the checked history (they stay in the
/// recorded one). Failed reads constrain nothing and the model skips them itself.
fn linearizable(history: &[HistoryEvent], keys: usize) -> Vec<Violation> {
    let mut skip = vec![false; history.len()];
    let mut open: BTreeMap<u64, usize> = BTreeMap::new();
    for (index, event) in history.iter().enumerate() {
        if event.kind == EventKind::Invoke {
            open.insert(event.process, index);
            continue;
        }
        let Some(invoke) = open.remove(&event.process) else { continue };
        if event.f == "cas" && event.kind == EventKind::Fail && event.error.as_deref() != Some(CONFLICT) {
            skip[invoke] = true;
            skip[index] = true;
        }
    }
    let mut out = Vec::new();
    for key in 0..keys {
        let stream = register(key);
        let events: Vec<HistoryEvent> = history
            .iter()
            .enumerate()
            .filter(|(index, event)| !skip[*index] && event.key.as_deref() == Some(stream.as_str()))
            .map(|(_, event)| event.clone())
            .collect();
        let operations = events.iter().filter(|e| e.kind == EventKind::Invoke).count();
        let checked = checker::History::from_events(events);
        match check_history(ModelKind::CasRegister, &checked, Budget::steps(CHECK_STEPS_MAX)) {
            Ok(Verdict::Ok) => {
                trace::record("checker", &format!("{stream}: linearizable ({operations} operations)"));
            }
            // A history that cannot be checked proves nothing: reported, as the ledger's check does.
            Ok(Verdict::Unknown { partition, .. }) => out.push(Violation::new(
                "linearizability",
                format!(
                    "register {stream}: unknown, the check's budget of {CHECK_STEPS_MAX} steps ran out on {partition} \
                     ({operations} operations)"
                ),
            )),
            Ok(Verdict::Violation(witness)) => out.push(Violation::new(
                "linearizability",
                format!("register {stream} of the simulated CockroachDB is not linearizable: {witness}"),
            )),
            Err(e) => out.push(Violation::new(
                "linearizability",
                format!("register {stream} of the simulated CockroachDB: its history cannot be checked: {e}"),
            )),
        }
    }
    out
}
