//! Running seeds: one seed in a fresh madsim runtime (`run_seed`), many seeds over worker
//! threads (`sweep`), and the same seed twice with trace hashes compared (`check_determinism`).
//!
//! A run never takes the process down: a panic inside the simulation is a `no-panic`
//! violation and an exhausted simulated-time limit a `liveness` one. The sweep's threads live
//! outside the simulations; inside one, madsim owns time, randomness and the network.

use std::panic::AssertUnwindSafe;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use serde::Serialize;
use services::bugs::Bug;

use crate::faults::FaultRecord;
use crate::history::HistoryEvent;
use crate::ledger::scenario;
use crate::orders::scenario as orders;
use crate::scenarios::Scenario;
use crate::trace;
use crate::verdict::{OpRecord, Violation};

/// Simulated time after which a run is declared stuck.
pub const SIM_TIME_LIMIT: Duration = Duration::from_secs(1800);

/// What to run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RunRequest {
    pub scenario: Scenario,
    pub seed: u64,
    pub bug: Option<Bug>,
    /// Keep the trace's text (for `repro`), not only its hash.
    pub keep_trace: bool,
    /// CockroachDB nodes: 3, or 5.
    pub crdb_nodes: usize,
    /// Limits on clients, operations and faults (shrinking).
    pub limits: crate::limits::Limits,
}

impl RunRequest {
    /// A run of the default shape (3 CockroachDB nodes, trace hashed only).
    pub fn new(scenario: Scenario, seed: u64, bug: Option<Bug>) -> RunRequest {
        RunRequest { scenario, seed, bug, keep_trace: false, crdb_nodes: 3, limits: crate::limits::Limits::default() }
    }
}

/// What one seed did.
#[derive(Debug, Clone, Serialize)]
pub struct RunOutcome {
    pub scenario: &'static str,
    pub seed: u64,
    pub bug: Option<String>,
    pub violations: Vec<Violation>,
    pub trace_hash: u64,
    pub trace_lines: u64,
    #[serde(skip)]
    pub trace: Vec<String>,
    #[serde(skip)]
    pub history: Vec<HistoryEvent>,
    #[serde(skip)]
    pub ops: Vec<OpRecord>,
    pub faults: Vec<FaultRecord>,
    /// The services' metrics on simulated time (kept with the trace, for `repro`).
    #[serde(skip)]
    pub metrics: Vec<crate::metrics::Series>,
    pub simulated_ms: u64,
    pub events: usize,
    pub crdb_nodes: usize,
    /// The limits it ran under, and the size it had.
    pub limits: crate::limits::Limits,
    pub size: crate::limits::Size,
    /// Coverage marks the run went through, with counts.
    pub marks: std::collections::BTreeMap<String, u64>,
    /// Outcomes the run's clients saw (`verdict::OUTCOMES`), with counts.
    pub outcomes: std::collections::BTreeMap<String, u64>,
}

impl RunOutcome {
    pub fn passed(&self) -> bool {
        self.violations.is_empty()
    }

    /// The command that replays this run exactly.
    pub fn repro_command(&self) -> String {
        let bug = self.bug.as_ref().map(|b| format!(" --bug {b}")).unwrap_or_default();
        let nodes = if self.crdb_nodes == 3 { String::new() } else { format!(" --crdb-nodes {}", self.crdb_nodes) };
        let mut limits = String::new();
        for (flag, value) in
            [("clients", self.limits.clients), ("ops", self.limits.ops), ("faults", self.limits.faults)]
        {
            if let Some(v) = value {
                limits.push_str(&format!(" --{flag} {v}"));
            }
        }
        format!("cargo testbed repro --scenario {} --seed {}{bug}{nodes}{limits}", self.scenario, self.seed)
    }
}

fn panic_message(payload: &(dyn std::any::Any + Send)) -> String {
    payload
        .downcast_ref::<String>()
        .cloned()
        .or_else(|| payload.downcast_ref::<&str>().map(|s| s.to_string()))
        .unwrap_or_else(|| "panic".into())
}

/// Runs one seed of one scenario in a fresh simulation.
pub fn run_seed(request: RunRequest) -> RunOutcome {
    let mut runtime = madsim::runtime::Runtime::with_seed_and_config(request.seed, madsim::Config::default());
    runtime.set_time_limit(SIM_TIME_LIMIT);
    services::bugs::set_active(request.bug);
    services::bugs::coverage::take();
    crate::verdict::take_outcomes();
    crate::limits::set(request.limits);
    let scenario = request.scenario;
    let result = std::panic::catch_unwind(AssertUnwindSafe(|| {
        runtime.block_on(async move {
            trace::reset(request.keep_trace);
            trace::record("sim", &format!("scenario {} seed {} bug {:?}", scenario.name(), request.seed, request.bug));
            let run = match scenario {
                Scenario::Ledger(s) => {
                    let run = scenario::run(s, request.seed, request.crdb_nodes).await;
                    (run.history, run.ops, run.faults, run.violations, run.events)
                }
                Scenario::Orders(s) => {
                    let run = orders::run(s, request.seed).await;
                    (run.history, run.ops, run.faults, run.violations, run.events)
                }
                Scenario::SelfCheck(s) => {
                    let run = crate::selfcheck::run(s, request.seed).await;
                    (run.history, run.ops, run.faults, run.violations, run.events)
                }
            };
            let nanos = trace::now_nanos();
            let gauges = trace::gauges();
            trace::kill_all_nodes().await;
            (run, nanos, gauges)
        })
    }));
    services::bugs::set_active(None);
    services::bugs::set_buggify(false);
    let (trace_hash, trace_lines, trace) = trace::finish();
    let marks = services::bugs::coverage::take();
    let outcomes = crate::verdict::take_outcomes();
    let size = crate::limits::size();
    crate::limits::set(crate::limits::Limits::default());
    let mut outcome = RunOutcome {
        scenario: scenario.name(),
        seed: request.seed,
        bug: request.bug.map(|b| b.name().to_string()),
        violations: Vec::new(),
        trace_hash,
        trace_lines,
        trace,
        history: Vec::new(),
        ops: Vec::new(),
        faults: Vec::new(),
        metrics: Vec::new(),
        simulated_ms: 0,
        events: 0,
        crdb_nodes: request.crdb_nodes,
        limits: request.limits,
        size,
        marks,
        outcomes,
    };
    match result {
        Ok(((history, ops, faults, violations, events), nanos, gauges)) => {
            if request.keep_trace {
                outcome.metrics = match scenario {
                    Scenario::Ledger(_) => crate::metrics::ledger_series(&gauges, &history, nanos),
                    Scenario::Orders(_) => crate::metrics::orders_series(&gauges, &history, nanos),
                    Scenario::SelfCheck(_) => Vec::new(),
                };
            }
            outcome.violations = violations;
            outcome.history = history;
            outcome.ops = ops;
            outcome.faults = faults;
            outcome.simulated_ms = nanos / 1_000_000;
            outcome.events = events;
            outcome.size.faults = outcome.faults.len();
        }
        Err(payload) => {
            let message = panic_message(payload.as_ref());
            let invariant = if message.contains("time limit") { "liveness" } else { "no-panic" };
            outcome.violations.push(Violation::new(invariant, message));
        }
    }
    outcome
}

/// Runs `template` for every seed over `jobs` threads; `report` sees each outcome as it ends.
/// Returns the outcomes in seed order.
pub fn sweep(
    template: RunRequest,
    seeds: impl Iterator<Item = u64> + Send,
    jobs: usize,
    report: &(dyn Fn(&RunOutcome) + Sync),
) -> Vec<RunOutcome> {
    assert!(jobs >= 1);
    let seeds: Vec<u64> = seeds.collect();
    let next = AtomicU64::new(0);
    let results = Mutex::new(Vec::with_capacity(seeds.len()));
    std::thread::scope(|scope| {
        for _ in 0..jobs.min(seeds.len().max(1)) {
            scope.spawn(|| {
                loop {
                    let i = next.fetch_add(1, Ordering::Relaxed) as usize;
                    let Some(&seed) = seeds.get(i) else { break };
                    let mut outcome = run_seed(RunRequest { seed, keep_trace: false, ..template });
                    // Only failing seeds keep their history (for the timeline and the repro).
                    if outcome.passed() {
                        outcome.history = Vec::new();
                        outcome.ops = Vec::new();
                    }
                    report(&outcome);
                    results.lock().expect("not poisoned").push(outcome);
                }
            });
        }
    });
    let mut results = results.into_inner().expect("not poisoned");
    results.sort_by_key(|o| o.seed);
    results
}

/// Coverage marks summed over outcomes.
pub fn sum_marks(outcomes: &[RunOutcome]) -> std::collections::BTreeMap<String, u64> {
    let mut total = std::collections::BTreeMap::new();
    for outcome in outcomes {
        for (mark, n) in &outcome.marks {
            *total.entry(mark.clone()).or_default() += n;
        }
    }
    total
}

/// Outcomes summed over outcomes of runs.
pub fn sum_outcomes(outcomes: &[RunOutcome]) -> std::collections::BTreeMap<String, u64> {
    let mut total = std::collections::BTreeMap::new();
    for outcome in outcomes {
        for (name, n) in &outcome.outcomes {
            *total.entry(name.clone()).or_default() += n;
        }
    }
    total
}

/// Runs a seed twice; returns both trace hashes (equal when the run is deterministic).
pub fn check_determinism(request: RunRequest) -> (u64, u64) {
    (run_seed(request).trace_hash, run_seed(request).trace_hash)
}

/// Runs a shrink may make.
pub const SHRINK_RUNS_MAX: usize = 64;

/// From a failing run, a smaller one (fewer clients, operations and faults, same seed) that
/// still breaks the same invariant: greedy halving of each dimension, then steps of one, while
/// the failure holds, within [`SHRINK_RUNS_MAX`] runs. Returns the original and the smallest, or
/// `None` when the original passes.
pub fn shrink(request: RunRequest) -> Option<(RunOutcome, RunOutcome)> {
    let original = run_seed(request);
    let invariant = original.violations.first()?.invariant.clone();
    let still_fails = |o: &RunOutcome| o.violations.iter().any(|v| v.invariant == invariant);
    let mut best = original.clone();
    let mut runs = 0;
    loop {
        let mut progressed = false;
        for dimension in 0..3 {
            let current = [best.size.clients, best.size.ops, best.size.faults][dimension];
            let floor = if dimension == 2 { 0 } else { 1 };
            for candidate in [current / 2, current.saturating_sub(1)] {
                if candidate < floor || candidate >= current || runs >= SHRINK_RUNS_MAX {
                    continue;
                }
                let mut limits = crate::limits::Limits {
                    clients: Some(best.size.clients),
                    ops: Some(best.size.ops),
                    faults: Some(best.size.faults),
                };
                match dimension {
                    0 => limits.clients = Some(candidate),
                    1 => limits.ops = Some(candidate),
                    _ => limits.faults = Some(candidate),
                }
                runs += 1;
                let trial = run_seed(RunRequest { limits, ..request });
                let smaller = (trial.size.clients, trial.size.ops, trial.size.faults)
                    < (best.size.clients, best.size.ops, best.size.faults);
                if still_fails(&trial) && smaller {
                    best = trial;
                    progressed = true;
                    break;
                }
            }
        }
        if !progressed || runs >= SHRINK_RUNS_MAX {
            return Some((original, best));
        }
    }
}
