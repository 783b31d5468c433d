//! `testbed real`: the simulator's seeded workloads and checkers on real infrastructure.
//!
//! A run deploys the services (local processes the runner starts itself, on databases, a
//! nats-server, a redis-server and a broker of its own; or a running `docker compose`
//! deployment), drives their HTTP APIs with the same seeded operations the simulator sends,
//! injects faults by killing, restarting, pausing and resuming processes, records what clients
//! saw as a history in the simulator's format, heals, waits for the system to settle, and runs
//! the same invariants on the history and on the end state it reads back from the stores.
//!
//! Real runs are not deterministic (the scheduler, the network and the services' timing are
//! real); the seed fixes the workload and the fault schedule, not the interleaving.

pub mod ledger;
pub mod netns;
pub mod orders;
pub mod procs;
pub mod toxics;
pub mod toxiproxy_api;
pub mod transport;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde::Serialize;
use sim::history::HistoryEvent;
use sim::verdict::{OpRecord, Violation};

use procs::{Action, Backend};

/// Every role a fault can reach.
pub const FAULT_ROLES: [&str; 10] =
    ["nats", "relay", "processor", "redis", "broker", "worker", "api-1", "api-2", "orders-api-1", "orders-api-2"];
/// The shortest gap between two faults of a schedule.
pub const FAULT_GAP_MIN: Duration = Duration::from_millis(500);
/// The longest gap between two faults of a schedule.
pub const FAULT_GAP_MAX: Duration = Duration::from_millis(2500);
/// The shortest time a fault holds.
pub const FAULT_HOLD_MIN: Duration = Duration::from_millis(300);
/// The longest time a fault holds.
pub const FAULT_HOLD_MAX: Duration = Duration::from_millis(3000);
/// Longest a real run waits, after heal, for the system to settle (outbox drained, read model
/// converged, worker caught up).
pub const SETTLE_MAX: Duration = Duration::from_secs(90);
/// How often settling is polled.
pub const SETTLE_POLL: Duration = Duration::from_millis(250);
/// Longest the clients may run past the requested duration before they are abandoned.
pub const CLIENTS_GRACE_MAX: Duration = Duration::from_secs(120);

/// A real run that could not be carried out (as opposed to one whose checks failed).
#[derive(Debug, thiserror::Error)]
pub enum RealError {
    #[error("setup: {0}")]
    Setup(String),
    #[error("{0}")]
    Store(String),
    /// The machine cannot run this scenario (network namespaces not allowed): nothing was
    /// checked, and the run says so.
    #[error("skipped: {0}")]
    Skipped(String),
}

/// A scenario of the real runner.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum RealScenario {
    LedgerChaos,
    ApiKilledBehindProxy,
    LedgerPartition,
    LedgerLatency,
    ConcurrentWithdrawals,
    DoubleSpend,
    ReadModelRebuild,
    FlashSale,
    WorkerCrash,
    OrdersApiKilledBehindProxy,
    RedisLatency,
}

impl RealScenario {
    pub const ALL: [RealScenario; 11] = [
        RealScenario::LedgerChaos,
        RealScenario::ApiKilledBehindProxy,
        RealScenario::LedgerPartition,
        RealScenario::LedgerLatency,
        RealScenario::ConcurrentWithdrawals,
        RealScenario::DoubleSpend,
        RealScenario::ReadModelRebuild,
        RealScenario::FlashSale,
        RealScenario::WorkerCrash,
        RealScenario::OrdersApiKilledBehindProxy,
        RealScenario::RedisLatency,
    ];

    /// The simulator's scenario of the same name draws the same workload from a seed.
    pub fn name(self) -> &'static str {
        match self {
            RealScenario::LedgerChaos => "ledger-chaos",
            RealScenario::ApiKilledBehindProxy => "api-killed-behind-proxy",
            RealScenario::LedgerPartition => "ledger-partition",
            RealScenario::LedgerLatency => "ledger-latency",
            RealScenario::ConcurrentWithdrawals => "concurrent-withdrawals",
            RealScenario::DoubleSpend => "double-spend",
            RealScenario::ReadModelRebuild => "read-model-rebuild",
            RealScenario::FlashSale => "flash-sale",
            RealScenario::WorkerCrash => "worker-crash",
            RealScenario::OrdersApiKilledBehindProxy => "orders-api-killed-behind-proxy",
            RealScenario::RedisLatency => "redis-latency",
        }
    }

    pub fn about(self) -> &'static str {
        match self {
            RealScenario::LedgerChaos => {
                "the mixed ledger workload while the processor, the relay and NATS are killed and paused"
            }
            RealScenario::ApiKilledBehindProxy => {
                "the mixed ledger workload through HAProxy in front of two command API instances, each killed and \
                 paused while clients send"
            }
            RealScenario::LedgerPartition => {
                "the mixed ledger workload while a network namespace holding a command API instance, the relay and \
                 the processor is cut off (from PostgreSQL, NATS and the clients) and healed, twice"
            }
            RealScenario::LedgerLatency => {
                "the mixed ledger workload with 0, 50, 100 and 500 ms added to every answer of PostgreSQL and NATS \
                 (proxies between every ledger role and them); the command API's p50, p99 and errors per level"
            }
            RealScenario::ConcurrentWithdrawals => "100 concurrent withdrawals of 10.00 on 100.00: exactly 10 succeed",
            RealScenario::DoubleSpend => "two concurrent withdrawals of 100.00 on 100.00: one succeeds",
            RealScenario::ReadModelRebuild => {
                "the read model is corrupted by hand: the convergence check must see it, and a rebuild repair it"
            }
            RealScenario::FlashSale => "a flash sale while the worker and Redis are killed and paused",
            RealScenario::WorkerCrash => "the worker is killed three times mid-sale: nothing lost, nothing doubled",
            RealScenario::OrdersApiKilledBehindProxy => {
                "a flash sale through HAProxy in front of two order API instances, each killed and paused while clients send"
            }
            RealScenario::RedisLatency => {
                "spec 003 test 2: 0, 50, 100 and 500 ms added to Redis's answers by a Toxiproxy-compatible proxy, a \
                 sale at each; the API's p50, p99 and errors per level"
            }
        }
    }

    pub fn from_name(name: &str) -> Option<RealScenario> {
        Self::ALL.into_iter().find(|s| s.name() == name)
    }

    /// The roles its faults reach.
    pub fn fault_roles(self) -> &'static [FaultTarget] {
        const fn kill_or_pause(role: &'static str) -> FaultTarget {
            FaultTarget { role, kill: true }
        }
        const LEDGER: &[FaultTarget] = &[kill_or_pause("processor"), kill_or_pause("nats"), kill_or_pause("relay")];
        // The local broker keeps its log in memory: killing it would lose acknowledged messages
        // as no replicated Kafka does, so it is only paused.
        const SALE: &[FaultTarget] =
            &[kill_or_pause("worker"), kill_or_pause("redis"), FaultTarget { role: "broker", kill: false }];
        const WORKER: &[FaultTarget] = &[kill_or_pause("worker")];
        const PROXIED: &[FaultTarget] = &[kill_or_pause("api-1"), kill_or_pause("api-2")];
        const ORDERS_PROXIED: &[FaultTarget] = &[kill_or_pause("orders-api-1"), kill_or_pause("orders-api-2")];
        match self {
            RealScenario::LedgerChaos => LEDGER,
            RealScenario::ApiKilledBehindProxy => PROXIED,
            RealScenario::ConcurrentWithdrawals
            | RealScenario::DoubleSpend
            | RealScenario::ReadModelRebuild
            | RealScenario::LedgerPartition
            | RealScenario::LedgerLatency => &[],
            RealScenario::FlashSale => SALE,
            RealScenario::WorkerCrash => WORKER,
            RealScenario::OrdersApiKilledBehindProxy => ORDERS_PROXIED,
            RealScenario::RedisLatency => &[],
        }
    }

    fn is_ledger(self) -> bool {
        !matches!(
            self,
            RealScenario::FlashSale
                | RealScenario::WorkerCrash
                | RealScenario::OrdersApiKilledBehindProxy
                | RealScenario::RedisLatency
        )
    }

    /// What its local deployment needs besides the services.
    pub fn extras(self) -> Extras {
        Extras {
            proxy: matches!(self, RealScenario::ApiKilledBehindProxy | RealScenario::OrdersApiKilledBehindProxy),
            toxics: matches!(self, RealScenario::RedisLatency | RealScenario::LedgerLatency),
            partition: self == RealScenario::LedgerPartition,
        }
    }
}

/// What a local deployment puts in front of the services and between them and their
/// dependencies.
#[derive(Debug, Clone, Copy, Default)]
pub struct Extras {
    /// HAProxy in front of the API instances: clients see one address.
    pub proxy: bool,
    /// Latency proxies between the services and their dependencies.
    pub toxics: bool,
    /// Some roles in a network namespace, reaching their dependencies over a veth pair.
    pub partition: bool,
}

/// A role faults may reach, and whether they may kill it (else only pause it).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FaultTarget {
    pub role: &'static str,
    pub kill: bool,
}

/// Where the services run.
#[derive(Debug, Clone)]
pub enum Mode {
    /// The runner starts every role and dependency (except PostgreSQL) as a local process.
    Local(LocalTools),
    /// A running `docker compose` deployment, on its published ports.
    Compose { file: PathBuf },
}

/// The programs a local run starts.
#[derive(Debug, Clone)]
pub struct LocalTools {
    pub ledger: PathBuf,
    pub orders: PathBuf,
    pub nats_server: PathBuf,
    pub redis_server: PathBuf,
    pub tansu: PathBuf,
    /// HAProxy (Debian's package), in front of the command API instances where a scenario asks.
    pub haproxy: PathBuf,
    /// The local PostgreSQL, where each run creates databases of its own.
    pub postgres: String,
}

impl LocalTools {
    /// The service binaries beside the running executable (`cargo build --bins` puts them
    /// there), the dependencies on `PATH`, tansu from `TANSU_BIN` or the CI cache, and
    /// PostgreSQL from `TESTBED_POSTGRES` (default the local server).
    pub fn discover() -> Result<LocalTools, RealError> {
        let exe = std::env::current_exe().map_err(|e| RealError::Setup(e.to_string()))?;
        let dir = exe.parent().map(Path::to_path_buf).unwrap_or_default();
        // Integration tests run from target/*/deps; the binaries are one level up.
        let beside = |name: &str| -> Result<PathBuf, RealError> {
            [dir.join(name), dir.join("..").join(name)].into_iter().find(|p| p.is_file()).ok_or_else(|| {
                RealError::Setup(format!(
                    "the `{name}` binary is not beside {}: build the services first with \
                     `cargo build --release --bins` (or set TESTBED_{}_BIN)",
                    exe.display(),
                    name.to_uppercase()
                ))
            })
        };
        let bin = |name: &str| -> Result<PathBuf, RealError> {
            match std::env::var(format!("TESTBED_{}_BIN", name.to_uppercase())) {
                Ok(path) if !path.is_empty() => Ok(path.into()),
                _ => beside(name),
            }
        };
        let tansu = std::env::var("TANSU_BIN").ok().filter(|p| !p.is_empty()).map(PathBuf::from).unwrap_or_else(|| {
            let cached =
                PathBuf::from(std::env::var("HOME").unwrap_or_default()).join(".cache/testbed/tansu/bin/tansu");
            if cached.is_file() { cached } else { PathBuf::from("tansu") }
        });
        Ok(LocalTools {
            ledger: bin("ledger")?,
            orders: bin("orders")?,
            nats_server: "nats-server".into(),
            redis_server: "redis-server".into(),
            tansu,
            haproxy: "haproxy".into(),
            postgres: std::env::var("TESTBED_POSTGRES")
                .ok()
                .filter(|u| !u.is_empty())
                .unwrap_or_else(|| "postgres://postgres@127.0.0.1:5432".into()),
        })
    }
}

/// What a real run is asked to do.
#[derive(Debug, Clone)]
pub struct RealOptions {
    pub scenario: RealScenario,
    pub seed: u64,
    /// How long clients issue operations (the mixed workload) or arrive (the flash sale).
    pub duration: Duration,
    pub mode: Mode,
    /// Where the services' logs, the history and the report go.
    pub out: PathBuf,
    /// Keep the run's databases (local mode) for inspection.
    pub keep: bool,
    /// Serve Toxiproxy's HTTP API over the run's latency proxies on this address.
    pub toxiproxy_api: Option<std::net::SocketAddr>,
}

/// One fault as it happened.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct FaultLog {
    /// Milliseconds since the run began.
    pub at_ms: u64,
    pub action: String,
    pub role: String,
}

/// What a real run saw and what the checkers found.
#[derive(Debug, Clone, Serialize)]
pub struct RealReport {
    pub scenario: String,
    pub seed: u64,
    pub mode: String,
    pub operations: usize,
    /// Final outcomes: ok, fail, info.
    pub ok: usize,
    pub fail: usize,
    pub info: usize,
    /// Events in the store (ledger) or orders persisted (orders).
    pub persisted: usize,
    pub faults: Vec<FaultLog>,
    pub violations: Vec<Violation>,
    pub settled: bool,
    pub wall_seconds: f64,
    /// Behind a proxy: requests the proxy answered 502 or 504 itself (an instance took them and
    /// was killed, or held them past the proxy's timeout while paused): kills that landed
    /// mid-request. Each was retried with its key.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub gateway_answers: Option<usize>,
    /// Spec 003's latency table (`redis-latency`): one row per latency level.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub latency: Vec<toxics::LatencyRow>,
    #[serde(skip)]
    pub history: Vec<HistoryEvent>,
}

impl RealReport {
    pub fn passed(&self) -> bool {
        self.violations.is_empty()
    }

    fn new(options: &RealOptions, ops: &[OpRecord], history: Vec<HistoryEvent>, started: Instant) -> RealReport {
        let count = |label: &str| ops.iter().filter(|o| o.outcome == label).count();
        RealReport {
            scenario: options.scenario.name().into(),
            seed: options.seed,
            mode: match options.mode {
                Mode::Local(_) => "local".into(),
                Mode::Compose { .. } => "compose".into(),
            },
            operations: ops.len(),
            ok: count("ok"),
            fail: count("fail"),
            info: count("info"),
            persisted: 0,
            faults: Vec::new(),
            violations: Vec::new(),
            settled: false,
            wall_seconds: started.elapsed().as_secs_f64(),
            gateway_answers: None,
            latency: Vec::new(),
            history,
        }
    }
}

/// The run's clock: history times are nanoseconds since the run began.
#[derive(Debug, Clone, Copy)]
pub struct Clock {
    start: Instant,
}

impl Clock {
    pub fn start() -> Clock {
        Clock { start: Instant::now() }
    }

    pub fn nanos(&self) -> u64 {
        self.start.elapsed().as_nanos() as u64
    }

    pub fn millis(&self) -> u64 {
        self.start.elapsed().as_millis() as u64
    }
}

/// One fault of a schedule: at `at`, `action` on `role`, undone after `hold`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FaultStep {
    pub at: Duration,
    pub role: String,
    pub action: Action,
    pub hold: Duration,
}

/// A seeded schedule of faults over `duration`, one at a time: each a kill (undone by a start)
/// or a pause (undone by a resume) of one of `roles`, all undone by 80% of the duration.
pub fn draw_faults(seed: u64, roles: &[FaultTarget], duration: Duration) -> Vec<FaultStep> {
    let mut steps = Vec::new();
    if roles.is_empty() {
        return steps;
    }
    let mut rng = ChaCha8Rng::seed_from_u64(seed ^ 0x4EA1_FA17);
    let end = duration.mul_f64(0.8);
    let ms = |d: Duration| d.as_millis() as u64;
    let mut t = Duration::ZERO;
    loop {
        t += Duration::from_millis(rng.gen_range(ms(FAULT_GAP_MIN)..=ms(FAULT_GAP_MAX)));
        if t + FAULT_HOLD_MIN > end {
            break;
        }
        let hold_max = ms(FAULT_HOLD_MAX).min(ms(end - t)).max(ms(FAULT_HOLD_MIN));
        let hold = Duration::from_millis(rng.gen_range(ms(FAULT_HOLD_MIN)..=hold_max));
        let target = roles[rng.gen_range(0..roles.len())];
        let action = if rng.gen_bool(0.5) && target.kill { Action::Kill } else { Action::Pause };
        steps.push(FaultStep { at: t, role: target.role.to_string(), action, hold });
        t += hold;
    }
    steps
}

/// Carries out a schedule; returns what happened. Stops at the first fault that cannot be
/// applied (the run then fails with that error).
pub async fn run_faults(backend: &Backend, steps: &[FaultStep], clock: Clock) -> Result<Vec<FaultLog>, RealError> {
    let mut log = Vec::new();
    for step in steps {
        let now = Duration::from_nanos(clock.nanos());
        if step.at > now {
            tokio::time::sleep(step.at - now).await;
        }
        let undo = if step.action == Action::Kill { Action::Start } else { Action::Resume };
        for (action, wait) in [(step.action, step.hold), (undo, Duration::ZERO)] {
            let at_ms = clock.millis();
            backend.act(action, &step.role).await?;
            tracing::info!(role = %step.role, action = action.name(), at_ms, "fault");
            log.push(FaultLog { at_ms, action: action.name().into(), role: step.role.clone() });
            tokio::time::sleep(wait).await;
        }
    }
    Ok(log)
}

/// The faults of a run as timeline bands: each kill until its start, each pause until its
/// resume (open when the run ended first).
pub fn fault_bands(faults: &[FaultLog]) -> Vec<sim::timeline::Band> {
    let mut bands = Vec::new();
    for (i, fault) in faults.iter().enumerate() {
        let undo = match fault.action.as_str() {
            "kill" => "start",
            "pause" => "resume",
            "partition" => "heal",
            _ => continue,
        };
        let end =
            faults[i + 1..].iter().find(|f| f.role == fault.role && f.action == undo).map(|f| f.at_ms * 1_000_000);
        bands.push(sim::timeline::Band {
            label: format!("{} {}", fault.action, fault.role),
            start: fault.at_ms * 1_000_000,
            end,
        });
    }
    bands
}

/// Runs a scenario on real infrastructure; writes `history.jsonl` and `report.json` to the
/// output directory.
pub async fn run(options: &RealOptions) -> Result<RealReport, RealError> {
    std::fs::create_dir_all(&options.out).map_err(|e| RealError::Setup(format!("{}: {e}", options.out.display())))?;
    let report = if options.scenario.is_ledger() { ledger::run(options).await? } else { orders::run(options).await? };
    let write = |name: &str, text: String| {
        std::fs::write(options.out.join(name), text)
            .map_err(|e| RealError::Setup(format!("{}: {e}", options.out.join(name).display())))
    };
    write("history.jsonl", sim::history::to_jsonl(&report.history))?;
    write("report.json", serde_json::to_string_pretty(&report).expect("reports serialize"))?;
    Ok(report)
}

/// The end of a run, whatever its result: local processes killed, a compose deployment healed
/// for the next run, the run's databases dropped unless kept.
async fn teardown(backend: &Backend, options: &RealOptions, databases: &[String]) {
    match backend {
        Backend::Local(local) => local.shutdown(),
        Backend::Compose(_) => {
            if let Err(e) = backend.heal(options.scenario.fault_roles()).await {
                tracing::warn!(error = %e, "could not heal the deployment");
            }
        }
    }
    if !options.keep {
        drop_databases(databases).await;
    }
}

/// Toxiproxy's API over a run's latency proxies, when asked for (`--toxiproxy-api`); a run
/// without proxies refuses it rather than serve an empty API.
async fn toxiproxy_api_for(
    options: &RealOptions,
    proxies: &std::collections::BTreeMap<String, std::sync::Arc<toxics::ToxicProxy>>,
) -> Result<Option<tokio::task::JoinHandle<()>>, RealError> {
    let Some(addr) = options.toxiproxy_api else { return Ok(None) };
    if proxies.is_empty() {
        return Err(RealError::Setup(format!(
            "--toxiproxy-api: {} has no latency proxies (redis-latency and ledger-latency have)",
            options.scenario.name()
        )));
    }
    let api = toxiproxy_api::serve(addr, std::sync::Arc::new(proxies.clone())).await?;
    println!("Toxiproxy API on http://{addr} (proxies: {})", proxies.keys().cloned().collect::<Vec<_>>().join(", "));
    Ok(Some(api))
}

/// Drops databases (errors logged: the run's result matters more).
pub(crate) async fn drop_databases(urls: &[String]) {
    for url in urls {
        if let Err(e) = services::adapters::pg::drop_database(url).await {
            tracing::warn!(error = %e, "could not drop {url}");
        }
    }
}

/// A name for this run's databases and keys that no other run uses.
pub fn run_id(seed: u64) -> String {
    let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default().as_micros();
    format!("r{seed}x{}x{}", std::process::id(), nanos % 1_000_000_000)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fault_schedules_are_seeded_sequential_and_end_early() {
        let roles = [FaultTarget { role: "processor", kill: true }, FaultTarget { role: "broker", kill: false }];
        let a = draw_faults(7, &roles, Duration::from_secs(20));
        assert_eq!(a, draw_faults(7, &roles, Duration::from_secs(20)));
        assert_ne!(a, draw_faults(8, &roles, Duration::from_secs(20)));
        assert!(a.len() >= 3, "{a:?}");
        let mut free_from = Duration::ZERO;
        for step in &a {
            assert!(step.at >= free_from, "overlapping faults: {a:?}");
            free_from = step.at + step.hold;
            assert!(free_from <= Duration::from_secs(16), "a fault outlasts 80% of the run: {step:?}");
            assert!(step.role == "processor" || step.action == Action::Pause, "{step:?}");
        }
        assert!(draw_faults(7, &[], Duration::from_secs(20)).is_empty());
    }
}
