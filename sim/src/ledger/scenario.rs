//! The ledger's scenarios: the mixed chaos workload under swarm faults, and the spec's named
//! scenarios, each with its expected outcome. A scenario runs inside a madsim runtime; it builds
//! the world, opens the accounts, runs clients and faults, heals, waits for quiescence, and
//! returns what the invariants need.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering as AtomicOrdering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use madsim::runtime::Handle;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use rust_decimal::Decimal;
use serde_json::json;
use services::bugs::Bug;
use services::ports::ledger::{EventStore, ReadModel};

use super::client;
use super::crdb::{CrdbFaultRates, SimEventStore};
use super::invariants::{self, OpRecord, Violation};
use super::readdb::SimReadModel;
use super::workload::{self, Op, WorkloadConfig};
use super::world::{LedgerWorld, WorldConfig};
use crate::faults::{FaultPlan, FaultRecord, Injector, Targets};
use crate::history::{EventKind, History, HistoryEvent};
use crate::mid_request::{MID_REQUEST_ARM_MAX, MID_REQUEST_POLL};
use crate::trace::{self, BuildTracked};
use crate::verdict::{AnswerBounds, CALM_OP_MAX, CALM_SETTLE, fault_free_answers, fault_free_windows};

/// Longest the heal-and-quiesce phase waits for the outbox to drain and the read model to
/// converge, in simulated time.
pub const QUIESCE_MAX: Duration = Duration::from_secs(60);
/// `api-killed-mid-request`: the API instances killed in a run, one after the other.
pub const MID_REQUEST_KILLS: usize = 4;
/// `api-killed-mid-request`: the most operations a client sends (it stops once the last
/// instance is back).
pub const MID_REQUEST_OPS_MAX: usize = 400;

/// How often quiescence is polled.
pub const QUIESCE_POLL: Duration = Duration::from_millis(250);
/// Longest the workload phase may last before clients are abandoned (a liveness failure).
pub const WORKLOAD_MAX: Duration = Duration::from_secs(600);
/// How long `ledger-chaos` injects faults from the start of its workload: a run lasts at least
/// this long in simulated time, then heals and settles.
pub const CHAOS_FAULT_WINDOW: Duration = Duration::from_secs(60);
/// `nats-down`: how soon after NATS restarts the read-model lag must be back to the writes in
/// flight.
pub const NATS_LAG_RECOVERY_MAX: Duration = Duration::from_secs(10);

/// The index (and process id) of the client that opens the accounts.
pub const SETUP_CLIENT: usize = 9999;
/// Time the nodes get to bind their ports before the first client request.
pub const BOOT_WAIT: Duration = Duration::from_millis(200);

/// A named scenario of the ledger.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum LedgerScenario {
    Chaos,
    CrdbOneDown,
    CrdbTwoDown,
    NatsDown,
    ProcessorCrash,
    Rebuild,
    PartitionMinorityGateway,
    ConcurrentWithdrawals,
    DoubleSpend,
    SchemaEvolution,
    ApiKilledMidRequest,
}

impl LedgerScenario {
    pub const ALL: [LedgerScenario; 11] = [
        LedgerScenario::Chaos,
        LedgerScenario::CrdbOneDown,
        LedgerScenario::CrdbTwoDown,
        LedgerScenario::NatsDown,
        LedgerScenario::ProcessorCrash,
        LedgerScenario::Rebuild,
        LedgerScenario::PartitionMinorityGateway,
        LedgerScenario::ConcurrentWithdrawals,
        LedgerScenario::DoubleSpend,
        LedgerScenario::SchemaEvolution,
        LedgerScenario::ApiKilledMidRequest,
    ];

    pub fn name(self) -> &'static str {
        match self {
            LedgerScenario::Chaos => "ledger-chaos",
            LedgerScenario::CrdbOneDown => "crdb-one-down",
            LedgerScenario::CrdbTwoDown => "crdb-two-down",
            LedgerScenario::NatsDown => "nats-down",
            LedgerScenario::ProcessorCrash => "processor-crash",
            LedgerScenario::Rebuild => "read-model-rebuild",
            LedgerScenario::PartitionMinorityGateway => "partition-minority-gateway",
            LedgerScenario::ConcurrentWithdrawals => "concurrent-withdrawals",
            LedgerScenario::DoubleSpend => "double-spend",
            LedgerScenario::SchemaEvolution => "schema-evolution",
            LedgerScenario::ApiKilledMidRequest => "api-killed-mid-request",
        }
    }

    pub fn about(self) -> &'static str {
        match self {
            LedgerScenario::Chaos => "mixed deposits, withdrawals, transfers and reads under swarm faults",
            LedgerScenario::CrdbOneDown => "one CockroachDB node crashed: writes continue",
            LedgerScenario::CrdbTwoDown => {
                "two nodes down: writes fail unavailable, nothing partial, recover after restart"
            }
            LedgerScenario::NatsDown => "NATS down: writes continue, the read model lags, then catches up",
            LedgerScenario::ProcessorCrash => "the read processor crashes during writes and catches up exactly",
            LedgerScenario::Rebuild => "the read model is corrupted by hand, then rebuilt from the events",
            LedgerScenario::PartitionMinorityGateway => {
                "the gateway of one api is cut off in the minority: writes there are rejected, the majority continues"
            }
            LedgerScenario::ConcurrentWithdrawals => {
                "100 concurrent withdrawals of 10.00 on 100.00: exactly 10 succeed"
            }
            LedgerScenario::DoubleSpend => "two concurrent withdrawals of 100.00 on 100.00: one succeeds",
            LedgerScenario::SchemaEvolution => "v1 MoneyDeposited events (no currency) in the store are upcast",
            LedgerScenario::ApiKilledMidRequest => {
                "each of two command API instances is killed between a commit and its answer: clients fail over, \
                 their retries with the same key get the first outcome, nothing applies twice"
            }
        }
    }

    /// Seeds `cargo sim` sweeps by default: sized so CI stays well under 30 minutes.
    pub fn default_seeds(self) -> u64 {
        match self {
            LedgerScenario::Chaos => 40,
            LedgerScenario::ConcurrentWithdrawals => 5,
            _ => 10,
        }
    }

    pub fn from_name(name: &str) -> Option<LedgerScenario> {
        Self::ALL.into_iter().find(|s| s.name() == name)
    }

    /// The answers allowed in this scenario's fault-free windows (before the first fault, after
    /// the heal): measured on the correct build over thousands of seeds, with room to spare
    /// (ADR 10). Contention is the scenario's own: 100 withdrawals on one account retry their
    /// optimistic lock many times, but the handler and the client both retry a conflict, so
    /// few end in one.
    pub fn answer_bounds(self) -> AnswerBounds {
        match self {
            LedgerScenario::ConcurrentWithdrawals | LedgerScenario::DoubleSpend => {
                AnswerBounds { conflict_percent_max: 5, error_percent_max: 2 }
            }
            _ => AnswerBounds { conflict_percent_max: 2, error_percent_max: 2 },
        }
    }

    /// The scenario whose sweep exposes a planted bug.
    pub fn exposing(bug: Bug) -> LedgerScenario {
        match bug {
            Bug::NoOptimisticLock | Bug::WithdrawFromReadModel => LedgerScenario::ConcurrentWithdrawals,
            Bug::RetryWithoutKey => LedgerScenario::Chaos,
            Bug::PublishWithoutOutbox => LedgerScenario::NatsDown,
            Bug::NonIdempotentProjection | Bug::AckBeforeApply => LedgerScenario::ProcessorCrash,
            // The order system's bugs are exposed by its own scenarios (`Scenario::exposing`).
            _ => LedgerScenario::Chaos,
        }
    }
}

/// What a ledger run hands to the invariants.
pub struct LedgerRun {
    pub history: Vec<HistoryEvent>,
    pub ops: Vec<OpRecord>,
    pub faults: Vec<FaultRecord>,
    pub violations: Vec<Violation>,
    pub events: usize,
}

struct Ctx {
    seed: u64,
    rng: ChaCha8Rng,
    world: LedgerWorld,
    history: History,
    ops: Arc<Mutex<Vec<OpRecord>>>,
    injector: Injector,
    clients_made: usize,
    expectations: Vec<Violation>,
}

impl Ctx {
    /// A client on a node of its own.
    fn client_node(&mut self) -> madsim::runtime::NodeHandle {
        self.clients_made += 1;
        let n = self.clients_made;
        Handle::current()
            .create_node()
            .name(format!("client-{n}"))
            .ip([10, 0, 9 + (n / 250) as u8, (n % 250) as u8 + 1].into())
            .build_tracked()
    }

    fn expect(&mut self, holds: bool, message: impl Into<String>) {
        if !holds {
            self.expectations.push(Violation::new("scenario-expectation", message));
        }
    }
}

fn dec(s: &str) -> Decimal {
    models::money::parse_decimal(s).expect("valid decimal literal")
}

/// Runs one scenario to its end state and checks every invariant.
pub async fn run(scenario: LedgerScenario, seed: u64, crdb_nodes: usize) -> LedgerRun {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let rates = match scenario {
        LedgerScenario::Chaos => {
            let (retry_on_contention, ambiguous_commit) = workload::draw_chaos_rates(&mut rng);
            CrdbFaultRates { retry_on_contention, ambiguous_commit }
        }
        _ => CrdbFaultRates { retry_on_contention: 0.2, ambiguous_commit: 0.0 },
    };
    let api_nodes = match scenario {
        LedgerScenario::CrdbOneDown | LedgerScenario::CrdbTwoDown => 1,
        _ => 2,
    };
    let world = LedgerWorld::build(&Handle::current(), WorldConfig { crdb_nodes, api_nodes, crdb_rates: rates });
    let targets = Targets { nodes: world.nodes.iter().map(|(n, id)| (n.clone(), *id)).collect() };
    let mut ctx = Ctx {
        seed,
        rng,
        world,
        history: History::new(),
        ops: Arc::default(),
        injector: Injector::new(targets),
        clients_made: 0,
        expectations: Vec::new(),
    };
    madsim::time::sleep(BOOT_WAIT).await;
    match scenario {
        LedgerScenario::Chaos => chaos(&mut ctx).await,
        LedgerScenario::CrdbOneDown => crdb_one_down(&mut ctx).await,
        LedgerScenario::CrdbTwoDown => crdb_two_down(&mut ctx).await,
        LedgerScenario::NatsDown => nats_down(&mut ctx).await,
        LedgerScenario::ProcessorCrash => processor_crash(&mut ctx).await,
        LedgerScenario::Rebuild => rebuild(&mut ctx).await,
        LedgerScenario::PartitionMinorityGateway => partition_minority(&mut ctx).await,
        LedgerScenario::ConcurrentWithdrawals => concurrent_withdrawals(&mut ctx, 100, "100.00", "10.00").await,
        LedgerScenario::DoubleSpend => concurrent_withdrawals(&mut ctx, 2, "100.00", "100.00").await,
        LedgerScenario::SchemaEvolution => schema_evolution(&mut ctx).await,
        LedgerScenario::ApiKilledMidRequest => api_killed_mid_request(&mut ctx).await,
    }
    ctx.injector.heal();
    let healed = trace::now_nanos();
    let mut converged = quiesce(&ctx).await;
    if converged {
        // Progress once every fault is gone; its writes must converge too.
        let calm = calm_phase(&mut ctx).await;
        ctx.expectations.extend(calm);
        converged = quiesce(&ctx).await;
    }
    let history = ctx.history.events();
    let ops = ctx.ops.lock().expect("not poisoned").clone();
    let events = ctx.world.cluster.store.all_events();
    let views: Vec<_> = ctx.world.readdb.lock().expect("not poisoned").values().cloned().collect();
    let mut violations = ctx.expectations.clone();
    violations.extend(invariants::no_negative_balance(&history, &events));
    violations.extend(invariants::conservation(&history, &events));
    violations.extend(invariants::one_effect_per_key(&ops, &events));
    if !converged {
        violations.extend(invariants::convergence(&events, &views));
    }
    violations.extend(invariants::linearizable(&history));
    violations.extend(invariants::read_model_reads(&history, &events));
    let commits: Vec<(String, u64)> = ctx.world.cluster.commits().into_iter().map(|c| (c.stream, c.at)).collect();
    violations.extend(invariants::conflicts_explained(&history, &commits));
    let faults = ctx.injector.records();
    let windows = fault_free_windows(faults.iter().map(|f| f.start).min(), healed);
    violations.extend(fault_free_answers(&history, &windows, scenario.answer_bounds()));
    invariants::reach_outcomes(&history, &ops, &events);
    trace::record("checker", &format!("{} violations", violations.len()));
    LedgerRun { history, ops, faults, violations, events: events.len() }
}

/// Clients of the calm phase, one after the other.
pub const CALM_CLIENTS: usize = 3;
/// Process ids of the calm phase's clients start here.
pub const CALM_CLIENT_BASE: usize = 9000;

/// The calm phase, after the heal, once the read model has converged: every fault is gone, so
/// the ledger must make progress. Up to [`CALM_CLIENTS`] clients, one after the other (nobody
/// contends), each run operations the domain cannot refuse on existing accounts: a deposit, a
/// transfer and a withdrawal within the balance the deposit answered, a read of the command API
/// and one of the query API. Each must succeed within [`CALM_OP_MAX`]: a refusal (a `conflict`
/// with nobody, a 503), a timeout or a slow answer is a `progress` violation naming the
/// operation and the time. The operations are in the history, so every other invariant checks
/// them too.
async fn calm_phase(ctx: &mut Ctx) -> Vec<Violation> {
    madsim::time::sleep(CALM_SETTLE).await;
    let events = ctx.world.cluster.store.all_events();
    let accounts: Vec<String> = match invariants::fold_all(&events) {
        Ok(folded) => folded.into_iter().filter(|(_, a)| a.state.is_some()).map(|(id, _)| id).collect(),
        Err(violation) => return vec![violation],
    };
    if accounts.is_empty() {
        return Vec::new();
    }
    let mut out = Vec::new();
    let api_nodes = ctx.world.config.api_nodes;
    for c in 0..CALM_CLIENTS.min(accounts.len().max(1)) {
        let node = ctx.client_node();
        let (history, ops) = (ctx.history.clone(), ctx.ops.clone());
        let (a, b) = (accounts[c % accounts.len()].clone(), accounts[(c + 1) % accounts.len()].clone());
        let found = node
            .spawn(async move {
                // Stride CALM_CLIENTS: a client that takes a new process after an `info` never
                // takes another calm client's.
                let mut client = client::client(CALM_CLIENT_BASE + c, CALM_CLIENTS, api_nodes, history, ops).await;
                let mut ops = vec![Op::Deposit { account: a.clone(), amount: dec("2.00") }];
                if a != b {
                    ops.push(Op::Transfer { from: a.clone(), to: b.clone(), amount: dec("1.00") });
                }
                ops.push(Op::Withdraw { account: a.clone(), amount: dec("1.00") });
                ops.push(Op::Read { account: a.clone() });
                ops.push(Op::ReadModel { account: b, min_position: None });
                let mut found = Vec::new();
                for (n, op) in ops.iter().enumerate() {
                    let key = format!("calm-{c}-{n}");
                    let started = madsim::time::Instant::now();
                    let at = trace::now_nanos();
                    let outcome = client.run(op, &key, c % api_nodes).await;
                    let took = started.elapsed();
                    let what = format!("calm {} {key} at {:.3}s", op.f(), at as f64 / 1e9);
                    match outcome {
                        workload::Outcome::Ok { .. } if took <= CALM_OP_MAX => {}
                        workload::Outcome::Ok { .. } => found.push(Violation::new(
                            "progress",
                            format!("{what} took {took:?} to succeed (bound {CALM_OP_MAX:?})"),
                        )),
                        other => found.push(Violation::new(
                            "progress",
                            format!("{what} ended {other:?} with every fault healed"),
                        )),
                    }
                }
                found
            })
            .await
            .expect("calm client finished");
        out.extend(found);
    }
    out
}

/// Waits until the outbox is empty and the read model equals the event store's fold.
async fn quiesce(ctx: &Ctx) -> bool {
    let deadline = madsim::time::Instant::now() + QUIESCE_MAX;
    loop {
        let backlog = ctx.world.cluster.store.backlog().await.unwrap_or(u64::MAX);
        // Cheap necessary conditions first: nothing unsent, and the views' versions add up to
        // the number of events (each stream's view at its last version). Only then the full
        // comparison, which folds every stream.
        let applied: u64 = ctx.world.readdb.lock().expect("not poisoned").values().map(|v| v.version).sum();
        let caught_up = backlog == 0 && applied == ctx.world.cluster.store.event_count() as u64;
        if caught_up && {
            let events = ctx.world.cluster.store.all_events();
            let views: Vec<_> = ctx.world.readdb.lock().expect("not poisoned").values().cloned().collect();
            invariants::convergence(&events, &views).is_empty()
        } {
            trace::record("checker", "quiescent");
            return true;
        }
        if madsim::time::Instant::now() >= deadline {
            trace::record("checker", &format!("not quiescent: backlog {backlog}"));
            return false;
        }
        madsim::time::sleep(QUIESCE_POLL).await;
    }
}

/// Opens accounts from a setup client, retrying until each is open (no faults yet).
async fn open_accounts(ctx: &mut Ctx, accounts: &[(String, Decimal)]) {
    let node = ctx.client_node();
    let (history, ops, accounts) = (ctx.history.clone(), ctx.ops.clone(), accounts.to_vec());
    let api_nodes = ctx.world.config.api_nodes;
    node.spawn(async move {
        let mut client = client::client(SETUP_CLIENT, 1, api_nodes, history, ops).await;
        workload::open_accounts(&mut client, &accounts).await;
    })
    .await
    .expect("setup client finished");
}

/// Starts clients running the mixed workload; returns their join handles.
fn start_clients(ctx: &mut Ctx, config: WorkloadConfig, failover: bool) -> Vec<madsim::task::JoinHandle<()>> {
    let config = Arc::new(config);
    let mut handles = Vec::new();
    for index in 0..config.clients {
        let node = ctx.client_node();
        let (history, ops, config, seed) = (ctx.history.clone(), ctx.ops.clone(), config.clone(), ctx.seed);
        handles.push(node.spawn(async move {
            let mut client = client::client(index, config.clients, config.api_nodes, history, ops).await;
            client.failover = failover;
            client.run_mixed(seed, &config, |n| n < config.ops_per_client).await;
        }));
    }
    handles
}

async fn join_clients(ctx: &mut Ctx, handles: Vec<madsim::task::JoinHandle<()>>) {
    let all = futures::future::join_all(handles);
    if madsim::time::timeout(WORKLOAD_MAX, all).await.is_err() {
        ctx.expectations.push(Violation::new("liveness", "clients did not finish their operations in time"));
    }
}

fn mixed(ctx: &mut Ctx, accounts: Vec<(String, Decimal)>, clients: usize, ops: usize) -> WorkloadConfig {
    let limits = crate::limits::get();
    let clients = limits.clients(clients);
    let ops = limits.ops(clients * ops).div_ceil(clients);
    crate::limits::report(clients, clients * ops);
    WorkloadConfig {
        accounts,
        clients,
        ops_per_client: ops,
        mix: workload::MIXED_MIX,
        think_max: workload::MIXED_THINK_MAX,
        api_nodes: ctx.world.config.api_nodes,
    }
}

async fn chaos(ctx: &mut Ctx) {
    let (accounts, clients) = workload::chaos_workload(&mut ctx.rng);
    open_accounts(ctx, &accounts).await;
    let config = mixed(ctx, accounts, clients, workload::CHAOS_OPERATIONS.div_ceil(clients));
    let crashable: Vec<String> = ctx.world.nodes.keys().cloned().collect();
    let plan = FaultPlan::draw(&mut ctx.rng, crashable);
    trace::record("faults", &format!("plan {}", plan.describe()));
    let handles = start_clients(ctx, config, true);
    let injector = ctx.injector.clone();
    let mut fault_rng = ChaCha8Rng::seed_from_u64(ctx.seed ^ 0xFA17);
    let faults =
        madsim::task::spawn(async move { injector.run_swarm(&plan, &mut fault_rng, CHAOS_FAULT_WINDOW).await });
    join_clients(ctx, handles).await;
    let _ = faults.await;
}

/// Outcomes of the writes whose invoke and completion both fall in `[from, to]` (nanoseconds).
fn writes_between(history: &[HistoryEvent], from: u64, to: u64) -> Vec<(u64, HistoryEvent)> {
    let mut invoked: BTreeMap<u64, u64> = BTreeMap::new();
    let mut out = Vec::new();
    for e in history {
        if matches!(e.f.as_str(), "read" | "read_model" | "open") {
            continue;
        }
        if e.kind == EventKind::Invoke {
            invoked.insert(e.process, e.time);
        } else if let Some(start) = invoked.remove(&e.process)
            && start >= from
            && e.time <= to
        {
            out.push((start, e.clone()));
        }
    }
    out
}

fn failed_unavailable(e: &HistoryEvent) -> bool {
    e.kind == EventKind::Info || (e.kind == EventKind::Fail && e.error.as_deref() != Some("insufficient_funds"))
}

async fn crdb_one_down(ctx: &mut Ctx) {
    let accounts = workload::draw_accounts(&mut ctx.rng, 3, 4);
    open_accounts(ctx, &accounts).await;
    let config = mixed(ctx, accounts, 4, 30);
    let handles = start_clients(ctx, config, true);
    madsim::time::sleep(Duration::from_secs(1)).await;
    ctx.injector.crash("crdb-2");
    join_clients(ctx, handles).await;
    let history = ctx.history.events();
    let bad: Vec<_> =
        writes_between(&history, 0, u64::MAX).into_iter().filter(|(_, e)| failed_unavailable(e)).collect();
    ctx.expect(bad.is_empty(), format!("with one node down {} writes failed: first {:?}", bad.len(), bad.first()));
}

async fn crdb_two_down(ctx: &mut Ctx) {
    let accounts = workload::draw_accounts(&mut ctx.rng, 2, 3);
    open_accounts(ctx, &accounts).await;
    let mut config = mixed(ctx, accounts, 3, 40);
    config.think_max = Duration::from_millis(400);
    let handles = start_clients(ctx, config, true);
    madsim::time::sleep(Duration::from_secs(2)).await;
    let down_at = trace::now_nanos();
    let events_before = ctx.world.cluster.store.all_events().len();
    ctx.injector.crash("crdb-2");
    ctx.injector.crash("crdb-3");
    madsim::time::sleep(Duration::from_secs(6)).await;
    let events_during = ctx.world.cluster.store.all_events().len();
    let up_at = trace::now_nanos();
    ctx.injector.restart("crdb-2");
    ctx.injector.restart("crdb-3");
    join_clients(ctx, handles).await;
    let history = ctx.history.events();
    // Writes answered while the outage lasted (after a grace for answers already on their way).
    let during: Vec<_> = writes_between(&history, 0, u64::MAX)
        .into_iter()
        .filter(|(_, e)| e.time > down_at + 500_000_000 && e.time <= up_at)
        .collect();
    let applied: Vec<_> = during.iter().filter(|(_, e)| e.kind == EventKind::Ok).collect();
    ctx.expect(!during.is_empty(), "no write was answered while two nodes were down");
    ctx.expect(applied.is_empty(), format!("{} writes succeeded without quorum", applied.len()));
    ctx.expect(
        events_during <= events_before + 2,
        format!("{} events committed without quorum", events_during.saturating_sub(events_before)),
    );
    let after = writes_between(&history, up_at + 1_000_000_000, u64::MAX);
    ctx.expect(after.iter().any(|(_, e)| e.kind == EventKind::Ok), "writes did not recover after the restart");
}

async fn nats_down(ctx: &mut Ctx) {
    let accounts = workload::draw_accounts(&mut ctx.rng, 2, 4);
    open_accounts(ctx, &accounts).await;
    let mut config = mixed(ctx, accounts, 4, 40);
    config.mix = [40, 30, 20, 5, 5];
    let clients = config.clients as f64;
    let handles = start_clients(ctx, config, true);
    madsim::time::sleep(Duration::from_secs(1)).await;
    ctx.injector.crash("nats");
    madsim::time::sleep(Duration::from_secs(5)).await;
    let store_versions: u64 = invariants::fold_all(&ctx.world.cluster.store.all_events())
        .map(|a| a.values().map(|a| a.version).sum())
        .unwrap_or(0);
    let read_versions: u64 = ctx.world.readdb.lock().expect("not poisoned").values().map(|v| v.version).sum();
    ctx.expect(
        read_versions < store_versions,
        format!("the read model did not lag ({read_versions} of {store_versions})"),
    );
    ctx.injector.restart("nats");
    let restarted = trace::now_nanos();
    let restarted_at = madsim::time::Instant::now();
    join_clients(ctx, handles).await;
    madsim::time::sleep_until(restarted_at + NATS_LAG_RECOVERY_MAX).await;
    // What the dashboard shows: the lag climbed during the outage (when writes were made in
    // it) and, once NATS is back, falls to the writes in flight (one per client at most)
    // within a bound.
    let lag = crate::metrics::ledger_series(&trace::gauges(), &[], trace::now_nanos()).swap_remove(1);
    let peak = lag.max_between(restarted.saturating_sub(5_000_000_000), restarted);
    let wrote_in_outage = read_versions < store_versions;
    ctx.expect(
        !wrote_in_outage || peak > 0.0,
        format!("the read-model lag did not climb during the outage (peak {peak})"),
    );
    match lag.first_at_most_after(restarted, clients) {
        Some(t) if t - restarted <= NATS_LAG_RECOVERY_MAX.as_nanos() as u64 => {}
        other => ctx.expect(
            false,
            format!(
                "the read-model lag did not fall back within {NATS_LAG_RECOVERY_MAX:?} of NATS's restart (at {other:?} ns)"
            ),
        ),
    }
    let history = ctx.history.events();
    let bad: Vec<_> =
        writes_between(&history, 0, u64::MAX).into_iter().filter(|(_, e)| failed_unavailable(e)).collect();
    ctx.expect(bad.is_empty(), format!("{} writes failed while only NATS was down", bad.len()));
}

async fn processor_crash(ctx: &mut Ctx) {
    let accounts = workload::draw_accounts(&mut ctx.rng, 2, 4);
    open_accounts(ctx, &accounts).await;
    let mut config = mixed(ctx, accounts, 4, 40);
    config.mix = [50, 20, 20, 5, 5];
    config.think_max = Duration::from_millis(50);
    let handles = start_clients(ctx, config, true);
    for _ in 0..3 {
        madsim::time::sleep(Duration::from_millis(ctx.rng.gen_range(300..1500))).await;
        ctx.injector.crash("processor");
        madsim::time::sleep(Duration::from_millis(ctx.rng.gen_range(200..4000))).await;
        ctx.injector.restart("processor");
    }
    join_clients(ctx, handles).await;
}

async fn rebuild(ctx: &mut Ctx) {
    let accounts = workload::draw_accounts(&mut ctx.rng, 3, 5);
    open_accounts(ctx, &accounts).await;
    let config = mixed(ctx, accounts.clone(), 3, 20);
    let handles = start_clients(ctx, config, true);
    join_clients(ctx, handles).await;
    if !quiesce(ctx).await {
        ctx.expect(false, "did not quiesce before the corruption");
        return;
    }
    {
        let mut views = ctx.world.readdb.lock().expect("not poisoned");
        if let Some(view) = views.get_mut(&accounts[0].0) {
            view.balance = dec("9999999");
        }
        views.remove(&accounts[1].0);
        trace::record("faults", "read model corrupted by hand");
    }
    let events = ctx.world.cluster.store.all_events();
    let views: Vec<_> = ctx.world.readdb.lock().expect("not poisoned").values().cloned().collect();
    ctx.expect(!invariants::convergence(&events, &views).is_empty(), "the corruption went unnoticed");
    let node = ctx.client_node();
    let gateways: Vec<_> = (0..ctx.world.config.crdb_nodes).map(super::crdb::crdb_addr).collect();
    let replayed = node
        .spawn(async move {
            let store = SimEventStore::connect(gateways).await;
            let read = SimReadModel::connect().await;
            read.rebuild(&store).await
        })
        .await
        .expect("rebuild task");
    trace::record("rebuild", &format!("{replayed:?}"));
    ctx.expect(replayed.is_ok(), format!("rebuild failed: {replayed:?}"));
}

async fn partition_minority(ctx: &mut Ctx) {
    let accounts = workload::draw_accounts(&mut ctx.rng, 2, 3);
    open_accounts(ctx, &accounts).await;
    let mut config = mixed(ctx, accounts, 2, 40);
    config.mix = [40, 30, 20, 10, 0];
    config.think_max = Duration::from_millis(300);
    // Client 1 talks to api-1 (gateway crdb-1) only, client 2 to api-2 (gateway crdb-2) only.
    let config = Arc::new(config);
    let mut handles = Vec::new();
    for index in 0..2 {
        let node = ctx.client_node();
        let (history, ops, config, seed) = (ctx.history.clone(), ctx.ops.clone(), config.clone(), ctx.seed);
        handles.push(node.spawn(async move {
            let mut client = client::client(index, 2, 2, history, ops).await;
            client.failover = false;
            let mut rng = workload::client_rng(seed, index);
            for n in 0..config.ops_per_client {
                let op = workload::next_op(&mut rng, &config);
                client.run(&op, &format!("p{}-{n}", index + 1), index).await;
                madsim::time::sleep(Duration::from_millis(rng.gen_range(0..300))).await;
            }
        }));
    }
    madsim::time::sleep(Duration::from_secs(2)).await;
    let cut_at = trace::now_nanos();
    let minority = vec!["crdb-1".to_string()];
    let majority = vec!["crdb-2".to_string(), "crdb-3".to_string()];
    let index = ctx.injector.split(&minority, &majority);
    madsim::time::sleep(Duration::from_secs(6)).await;
    let healed_at = trace::now_nanos();
    ctx.injector.unsplit(&minority, &majority, index);
    join_clients(ctx, handles).await;
    let history = ctx.history.events();
    let during = writes_between(&history, cut_at + 500_000_000, healed_at);
    let minority_ok = during.iter().filter(|(_, e)| e.process % 2 == 0 && e.kind == EventKind::Ok).count();
    let majority_done: Vec<_> = during.iter().filter(|(_, e)| e.process % 2 == 1).collect();
    let majority_bad = majority_done.iter().filter(|(_, e)| failed_unavailable(e)).count();
    ctx.expect(minority_ok == 0, format!("{minority_ok} writes succeeded through the minority gateway"));
    ctx.expect(!majority_done.is_empty(), "no write reached the majority during the partition");
    ctx.expect(majority_bad == 0, format!("{majority_bad} writes failed on the majority side"));
}

async fn concurrent_withdrawals(ctx: &mut Ctx, clients: usize, balance: &str, amount: &str) {
    let limits = crate::limits::get();
    let clients = limits.clients(limits.ops(clients));
    crate::limits::report(clients, clients);
    let account = "acct-1".to_string();
    open_accounts(ctx, &[(account.clone(), dec(balance))]).await;
    let mut handles = Vec::new();
    for index in 0..clients {
        let node = ctx.client_node();
        let (history, ops, account, amount) = (ctx.history.clone(), ctx.ops.clone(), account.clone(), dec(amount));
        let api_nodes = ctx.world.config.api_nodes;
        handles.push(node.spawn(async move {
            let mut client = client::client(index, clients, api_nodes, history, ops).await;
            client.run(&Op::Withdraw { account, amount }, &format!("w{index}"), index % api_nodes).await;
        }));
    }
    join_clients(ctx, handles).await;
    let expected = (dec(balance) / dec(amount)).trunc().min(Decimal::from(clients));
    let history = ctx.history.events();
    let done: Vec<_> = history.iter().filter(|e| e.f == "withdraw" && e.kind != EventKind::Invoke).collect();
    let ok = done.iter().filter(|e| e.kind == EventKind::Ok).count();
    let refused = done.iter().filter(|e| e.error.as_deref() == Some("insufficient_funds")).count();
    ctx.expect(
        Decimal::from(ok) == expected && ok + refused == clients,
        format!("{ok} of {clients} withdrawals succeeded and {refused} were refused; expected {expected} and the rest"),
    );
}

async fn schema_evolution(ctx: &mut Ctx) {
    let accounts = workload::draw_accounts(&mut ctx.rng, 2, 4);
    open_accounts(ctx, &accounts).await;
    // A legacy writer's v1 deposits, before the currency field existed.
    for (n, (account, _)) in accounts.iter().enumerate() {
        let amount = Decimal::new(ctx.rng.gen_range(1..=100) * 100, 2);
        let encoded = models::ledger::EncodedEvent {
            event_type: "MoneyDeposited".into(),
            event_version: 1,
            data: json!({"amount": amount.to_string()}),
        };
        let id = uuid::Uuid::from_u128(0x1e6a_0000 + n as u128);
        ctx.world.cluster.store.append_legacy(account, encoded, id);
        let process = 1_000_000 + n as u64;
        let time = trace::now_nanos();
        let mut invoke = HistoryEvent::new(process, EventKind::Invoke, "deposit", time);
        invoke.key = Some(account.clone());
        invoke.value = Some(json!(amount.to_string()));
        let mut ok = invoke.clone();
        ok.kind = EventKind::Ok;
        ctx.history.record(invoke);
        ctx.history.record(ok);
    }
    let config = mixed(ctx, accounts, 3, 20);
    let handles = start_clients(ctx, config, true);
    join_clients(ctx, handles).await;
}

/// Spec 001, scenario 5 (API crash mid-request, a load balancer in front): two command API
/// instances; the scenario kills one exactly between a commit and its answer, several times,
/// alternating. The client hears nothing, times out, and retries with its idempotency key on the
/// other instance (the load balancer's failover), which answers with the first outcome.
async fn api_killed_mid_request(ctx: &mut Ctx) {
    let accounts = workload::draw_accounts(&mut ctx.rng, 3, 5);
    open_accounts(ctx, &accounts).await;
    let mut config = mixed(ctx, accounts, 8, MID_REQUEST_OPS_MAX);
    config.mix = [40, 30, 20, 5, 5];
    config.think_max = Duration::from_millis(100);
    // The clients run until the last instance is back (at most their operations' bound).
    let kills_done = Arc::new(AtomicBool::new(false));
    let config = Arc::new(config);
    let mut handles = Vec::new();
    for index in 0..config.clients {
        let node = ctx.client_node();
        let (history, ops, config, seed) = (ctx.history.clone(), ctx.ops.clone(), config.clone(), ctx.seed);
        let done = kills_done.clone();
        handles.push(node.spawn(async move {
            let mut client = client::client(index, config.clients, config.api_nodes, history, ops).await;
            client.run_mixed(seed, &config, |n| n < config.ops_per_client && !done.load(AtomicOrdering::SeqCst)).await;
        }));
    }
    let kill = ctx.world.mid_request_kill.clone();
    let mut outages = Vec::new();
    for n in 0..MID_REQUEST_KILLS {
        // Past the clients' request timeout since the last restart: the requests stranded on
        // the instance killed last have failed over, and the clients are spread again.
        let gap = if n == 0 { 200..1500 } else { 6000..8000 };
        madsim::time::sleep(Duration::from_millis(ctx.rng.gen_range(gap))).await;
        let node = format!("api-{}", n % 2 + 1);
        let held_before = kill.lock().expect("not poisoned").held.len();
        kill.lock().expect("not poisoned").armed = Some(node.clone());
        let deadline = madsim::time::Instant::now() + MID_REQUEST_ARM_MAX;
        while kill.lock().expect("not poisoned").held.len() == held_before && madsim::time::Instant::now() < deadline {
            madsim::time::sleep(MID_REQUEST_POLL).await;
        }
        let fired = {
            let mut kill = kill.lock().expect("not poisoned");
            kill.armed = None;
            kill.held.len() > held_before
        };
        ctx.expect(fired, format!("no command committed on {node} within {MID_REQUEST_ARM_MAX:?} of arming the kill"));
        let down_at = trace::now_nanos();
        ctx.injector.crash(&node);
        madsim::time::sleep(Duration::from_millis(ctx.rng.gen_range(1000..2000))).await;
        outages.push((down_at, trace::now_nanos()));
        ctx.injector.restart(&node);
    }
    kills_done.store(true, AtomicOrdering::SeqCst);
    join_clients(ctx, handles).await;
    let ops = ctx.ops.lock().expect("not poisoned").clone();
    let unresolved = kill.lock().expect("not poisoned").unresolved(&ops);
    for message in unresolved {
        ctx.expect(false, message);
    }
    // Failover is shown by the held commands above: the killed instance never answers them, so
    // their `ok` came from a retry on the next instance. Clients without a load balancer's
    // health checks may all be waiting out the dead instance for a while (a 1-2 s outage is
    // shorter than their request timeout), so nothing is required during an outage; the
    // clients must go on after it: writes acknowledged after each kill.
    let history = ctx.history.events();
    let writes = writes_between(&history, 0, u64::MAX);
    for (i, (down, up)) in outages.iter().enumerate() {
        let next_down = outages.get(i + 1).map_or(u64::MAX, |(next, _)| *next);
        let served = writes.iter().any(|(_, e)| e.kind == EventKind::Ok && e.time > *up && e.time < next_down);
        ctx.expect(served, format!("no write was acknowledged between the outage {down}..{up} ns and the next"));
    }
}
