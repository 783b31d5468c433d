//! The ledger on real infrastructure: deploy, drive the seeded workload, inject faults, heal,
//! settle, read the event store and the read model back, and check.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use rust_decimal::Decimal;
use services::adapters::pg::{self, PgEventStore, PgReadModel};
use services::ports::ledger::{BalanceView, EventStore, ReadModel, RecordedEvent};
use sim::history::{EventKind, History};
use sim::ledger::invariants::{self, OpRecord, Violation};
use sim::ledger::workload::{self, Client, Op, WorkloadConfig};

use super::netns::Netns;
use super::procs::{Backend, Compose, Local, Spec, free_port};
use super::toxics::{self, LATENCY_LEVELS_MS, LatencyRow, ToxicProxy, violations_of_levels};
use super::transport::{Http, LedgerTransport, Sent};
use super::{
    CLIENTS_GRACE_MAX, Clock, Extras, FaultLog, Mode, RealError, RealOptions, RealReport, RealScenario, SETTLE_MAX,
    SETTLE_POLL,
};

/// Command API instances of a local deployment (clients fail over between them).
pub const LOCAL_API_INSTANCES: usize = 2;
/// Connections per pool of each local role.
pub const LOCAL_POOL_MAX: u32 = 8;
/// Events read per page when reading the store back.
pub const READ_PAGE: usize = 1000;
/// The process id of the client that opens the accounts (as in the simulator).
pub const SETUP_CLIENT: usize = 9999;

/// A deployed ledger.
pub(crate) struct Deployment {
    pub(crate) apis: Vec<String>,
    pub(crate) query: String,
    pub(crate) events_url: String,
    pub(crate) read_url: String,
    pub(crate) backend: Backend,
    /// Databases to drop at the end (local runs).
    pub(crate) databases: Vec<String>,
    /// Put before account ids and keys against a deployment that outlives runs.
    pub(crate) prefix: String,
    /// The network namespace of the partitioned roles, and the proxies its roles reach
    /// PostgreSQL and NATS through (`ledger-partition`). Dropped after the processes.
    pub(crate) partition: Option<(Netns, Vec<ToxicProxy>)>,
    /// Latency proxies between every role and PostgreSQL and NATS (`ledger-latency`).
    pub(crate) toxics: BTreeMap<String, Arc<ToxicProxy>>,
}

/// The roles `ledger-partition` runs in its network namespace.
pub const PARTITIONED_ROLES: [&str; 3] = ["api-1", "relay", "processor"];
/// Partitions of a `ledger-partition` run, one after the other.
pub const PARTITIONS: usize = 2;

pub(crate) async fn deploy_local(
    out: &std::path::Path,
    tools: &super::LocalTools,
    id: &str,
    extras: Extras,
) -> Result<Deployment, RealError> {
    let local = Local::new(&out.join("logs"))?;
    let nats_port = free_port()?;
    let store = out.join("nats-store");
    // A fresh store: streams left by an earlier run would be redelivered into this one.
    let _ = std::fs::remove_dir_all(&store);
    std::fs::create_dir_all(&store).map_err(|e| RealError::Setup(e.to_string()))?;
    local
        .add(Spec {
            name: "nats".into(),
            program: tools.nats_server.clone(),
            args: vec!["-a".into(), "127.0.0.1".into(), "-p".into(), nats_port.to_string(), "-js".into(), "-sd".into()]
                .into_iter()
                .chain([store.display().to_string()])
                .collect(),
            env: vec![],
            port: Some(nats_port),
            host: None,
        })
        .await?;
    let [events_url, read_url] = local_databases(tools, id);
    // With latency proxies, every role reaches PostgreSQL and NATS through them; the runner's
    // own reads go straight to PostgreSQL.
    let mut toxic_proxies = BTreeMap::new();
    let (mut role_events, mut role_read, mut role_nats) =
        (events_url.clone(), read_url.clone(), format!("nats://127.0.0.1:{nats_port}"));
    if extras.toxics {
        let postgres = ToxicProxy::start("postgres", &toxics::host_port(&events_url)?).await?;
        let nats = ToxicProxy::start("nats", &format!("127.0.0.1:{nats_port}")).await?;
        role_events = toxics::through(&events_url, &postgres.addr())?;
        role_read = toxics::through(&read_url, &postgres.addr())?;
        role_nats = format!("nats://{}", nats.addr());
        toxic_proxies =
            BTreeMap::from([("postgres".to_string(), Arc::new(postgres)), ("nats".to_string(), Arc::new(nats))]);
    }
    let env = [
        ("LEDGER_DATABASE_URL".to_string(), role_events),
        ("READ_DATABASE_URL".to_string(), role_read),
        ("NATS_URL".to_string(), role_nats),
        ("LEDGER_POOL_MAX".to_string(), LOCAL_POOL_MAX.to_string()),
        ("RUST_LOG".to_string(), std::env::var("RUST_LOG").unwrap_or_else(|_| "info".into())),
    ];
    let role = |name: &str, role: &str, own: Vec<(String, String)>, port: Option<u16>| {
        Spec::role(&tools.ledger, &env, name, role, own, port)
    };
    local.run_once(role("migrate", "migrate", vec![], None)).await?;
    // The partitioned roles reach PostgreSQL and NATS over the namespace's veth pair, through
    // proxies on the host's end of it.
    let partition = if extras.partition {
        let netns = Netns::create(std::process::id())?;
        let host = netns.host_ip.to_string();
        let postgres = ToxicProxy::start_on(&host, "postgres", &toxics::host_port(&events_url)?).await?;
        let nats = ToxicProxy::start_on(&host, "nats", &format!("127.0.0.1:{nats_port}")).await?;
        let ns_env: Vec<(String, String)> = vec![
            ("LEDGER_DATABASE_URL".into(), toxics::through(&events_url, &postgres.addr())?),
            ("READ_DATABASE_URL".into(), toxics::through(&read_url, &postgres.addr())?),
            ("NATS_URL".into(), format!("nats://{}", nats.addr())),
        ];
        Some((netns, vec![postgres, nats], ns_env))
    } else {
        None
    };
    let in_partition = |name: &str, spec: Spec| -> Spec {
        match &partition {
            Some((netns, _, ns_env)) if PARTITIONED_ROLES.contains(&name) => {
                let mut spec = netns.wrap(spec);
                spec.env.extend(ns_env.iter().cloned());
                spec
            }
            _ => spec,
        }
    };
    let mut apis = Vec::new();
    let mut api_ports = Vec::new();
    for i in 0..LOCAL_API_INSTANCES {
        let port = free_port()?;
        let name = format!("api-{}", i + 1);
        let host = match &partition {
            Some((netns, _, _)) if PARTITIONED_ROLES.contains(&name.as_str()) => netns.ns_ip.to_string(),
            _ => "127.0.0.1".to_string(),
        };
        let addr = ("LEDGER_API_ADDR".to_string(), format!("{host}:{port}"));
        local.add(in_partition(&name, role(&name, "api", vec![addr], Some(port)))).await?;
        apis.push(format!("http://{host}:{port}"));
        api_ports.push(port);
    }
    if extras.proxy {
        // The clients see one address: the proxy's.
        apis = vec![local.add_proxy(&tools.haproxy, "proxy", "ledger_apis", &api_ports).await?];
    }
    let query_port = free_port()?;
    let addr = ("LEDGER_QUERY_ADDR".to_string(), format!("127.0.0.1:{query_port}"));
    local.add(role("query", "query", vec![addr], Some(query_port))).await?;
    local.add(in_partition("relay", role("relay", "relay", vec![], None))).await?;
    local.add(in_partition("processor", role("processor", "processor", vec![], None))).await?;
    Ok(Deployment {
        apis,
        query: format!("http://127.0.0.1:{query_port}"),
        events_url: events_url.clone(),
        read_url: read_url.clone(),
        backend: Backend::Local(local),
        databases: vec![events_url, read_url],
        prefix: String::new(),
        partition: partition.map(|(netns, proxies, _)| (netns, proxies)),
        toxics: toxic_proxies,
    })
}

fn deploy_compose(file: &std::path::Path, id: &str) -> Deployment {
    let var = |name: &str, default: &str| std::env::var(name).ok().filter(|v| !v.is_empty()).unwrap_or(default.into());
    Deployment {
        apis: vec![var("TESTBED_LEDGER_API", "http://127.0.0.1:4000")],
        query: var("TESTBED_LEDGER_QUERY", "http://127.0.0.1:4001"),
        events_url: var("LEDGER_DATABASE_URL", "postgres://root@127.0.0.1:26257/ledger?sslmode=disable"),
        read_url: var("READ_DATABASE_URL", "postgres://postgres:postgres@127.0.0.1:5432/ledger_read"),
        backend: Backend::Compose(Compose::new(file)),
        databases: vec![],
        prefix: format!("{id}-"),
        partition: None,
        toxics: BTreeMap::new(),
    }
}

/// The event store's and the read model's databases of a local run.
fn local_databases(tools: &super::LocalTools, id: &str) -> [String; 2] {
    [format!("{}/{id}_events", tools.postgres), format!("{}/{id}_read", tools.postgres)]
}

/// Runs a ledger scenario.
pub async fn run(options: &RealOptions) -> Result<RealReport, RealError> {
    let started = Instant::now();
    let id = super::run_id(options.seed);
    let deployment = match &options.mode {
        Mode::Local(tools) => {
            match deploy_local(&options.out, tools, &id, options.scenario.extras()).await {
                Ok(deployment) => deployment,
                Err(e) => {
                    // Whatever the failed start created (its processes die with it).
                    super::drop_databases(&local_databases(tools, &id)).await;
                    return Err(e);
                }
            }
        }
        Mode::Compose { .. } if options.scenario == RealScenario::LedgerPartition => {
            return Err(RealError::Setup(
                "ledger-partition runs on local processes only: it makes its own network namespace".into(),
            ));
        }
        Mode::Compose { .. } if options.scenario == RealScenario::LedgerLatency => {
            return Err(RealError::Setup(
                "ledger-latency runs on local processes only: it puts its own latency proxies between the roles and \
                 PostgreSQL and NATS"
                    .into(),
            ));
        }
        Mode::Compose { file } => deploy_compose(file, &id),
    };
    let api = match super::toxiproxy_api_for(options, &deployment.toxics).await {
        Ok(api) => api,
        Err(e) => {
            super::teardown(&deployment.backend, options, &deployment.databases).await;
            return Err(e);
        }
    };
    let result = drive(options, &deployment, started).await;
    if let Some(api) = api {
        api.abort();
    }
    super::teardown(&deployment.backend, options, &deployment.databases).await;
    result
}

async fn drive(options: &RealOptions, d: &Deployment, started: Instant) -> Result<RealReport, RealError> {
    let clock = Clock::start();
    let transport = LedgerTransport {
        http: Http::new(services::ledger::api::IDEMPOTENCY_HEADER, std::env::var("LEDGER_API_TOKEN").ok())?,
        apis: Arc::new(d.apis.clone()),
        query: d.query.clone(),
        clock,
        requests: matches!(
            options.scenario,
            RealScenario::LedgerLatency | RealScenario::LedgerPartition | RealScenario::ApiKilledBehindProxy
        )
        .then(Arc::default),
    };
    let history = History::new();
    let ops: Arc<Mutex<Vec<OpRecord>>> = Arc::default();
    let api_nodes = d.apis.len();
    let client = |index: usize, clients: usize| {
        let mut c = Client::new(index, clients, api_nodes, transport.clone(), history.clone(), ops.clone());
        c.key_prefix = d.prefix.clone();
        c
    };
    let rename = |accounts: Vec<(String, Decimal)>| -> Vec<(String, Decimal)> {
        accounts.into_iter().map(|(a, b)| (format!("{}{a}", d.prefix), b)).collect()
    };
    let mut expectations = Vec::new();
    let mut faults = Vec::new();
    match options.scenario {
        RealScenario::LedgerChaos
        | RealScenario::ApiKilledBehindProxy
        | RealScenario::LedgerPartition
        | RealScenario::LedgerLatency
        | RealScenario::ReadModelRebuild => {
            // The simulator's draws, in its order: for ledger-chaos CockroachDB's rates
            // (simulated only), the accounts, the clients; for the rebuild 3 to 5 accounts.
            let mut rng = ChaCha8Rng::seed_from_u64(options.seed);
            let (accounts, clients) = if options.scenario != RealScenario::ReadModelRebuild {
                let _ = workload::draw_chaos_rates(&mut rng);
                workload::chaos_workload(&mut rng)
            } else {
                (workload::draw_accounts(&mut rng, 3, 5), 3)
            };
            let accounts = rename(accounts);
            workload::open_accounts(&mut client(SETUP_CLIENT, 1), &accounts).await;
            let config = Arc::new(WorkloadConfig {
                accounts,
                clients,
                ops_per_client: usize::MAX,
                mix: workload::MIXED_MIX,
                think_max: workload::MIXED_THINK_MAX,
                api_nodes,
            });
            let deadline = Instant::now() + options.duration;
            let mut tasks = tokio::task::JoinSet::new();
            for index in 0..clients {
                let (mut c, config, seed) = (client(index, clients), config.clone(), options.seed);
                tasks.spawn(async move { c.run_mixed(seed, &config, |_| Instant::now() < deadline).await });
            }
            faults = match &d.partition {
                Some((netns, _)) => partitions(netns, options.seed, options.duration, clock, &transport).await?,
                None if !d.toxics.is_empty() => latency_levels(&d.toxics, options.duration, clock).await?,
                None => {
                    let steps = super::draw_faults(options.seed, options.scenario.fault_roles(), options.duration);
                    super::run_faults(&d.backend, &steps, clock).await?
                }
            };
            join(&mut tasks, options.duration, &mut expectations).await;
            if options.scenario == RealScenario::ReadModelRebuild {
                corrupt_and_rebuild(d, &config.accounts, &mut expectations).await?;
            }
        }
        RealScenario::ConcurrentWithdrawals | RealScenario::DoubleSpend => {
            let (clients, balance, amount) = if options.scenario == RealScenario::DoubleSpend {
                (2, Decimal::new(10000, 2), Decimal::new(10000, 2))
            } else {
                (100, Decimal::new(10000, 2), Decimal::new(1000, 2))
            };
            let account = format!("{}acct-1", d.prefix);
            workload::open_accounts(&mut client(SETUP_CLIENT, 1), &[(account.clone(), balance)]).await;
            let mut tasks = tokio::task::JoinSet::new();
            for index in 0..clients {
                let mut c = client(index, clients);
                let (op, key) = (Op::Withdraw { account: account.clone(), amount }, format!("{}w{index}", d.prefix));
                tasks.spawn(async move {
                    c.run(&op, &key, index % api_nodes).await;
                });
            }
            join(&mut tasks, options.duration, &mut expectations).await;
            let expected = (balance / amount).trunc().min(Decimal::from(clients));
            let events = history.events();
            let done: Vec<_> = events.iter().filter(|e| e.f == "withdraw" && e.kind != EventKind::Invoke).collect();
            let ok = done.iter().filter(|e| e.kind == EventKind::Ok).count();
            let refused = done.iter().filter(|e| e.error.as_deref() == Some("insufficient_funds")).count();
            if Decimal::from(ok) != expected || ok + refused != clients {
                expectations.push(Violation::new(
                    "scenario-expectation",
                    format!("{ok} of {clients} withdrawals succeeded and {refused} were refused; expected {expected} and the rest"),
                ));
            }
        }
        other => return Err(RealError::Setup(format!("{} is not a ledger scenario", other.name()))),
    }
    d.backend.heal(options.scenario.fault_roles()).await?;
    for proxy in d.toxics.values() {
        proxy.set_latency(0).await?;
    }
    if let Some((netns, _)) = &d.partition
        && netns.is_cut()
    {
        netns.heal()?;
    }
    let store = PgEventStore::new(pool(&d.events_url)?);
    let read = PgReadModel::new(pool(&d.read_url)?);
    let settled = settle(&store, &read, &d.prefix).await;
    if !settled {
        expectations.push(Violation::new("liveness", format!("the ledger did not settle within {SETTLE_MAX:?}")));
    }
    let (events, views) = end_state(&store, &read, &d.prefix).await?;
    let history = history.events();
    let ops = ops.lock().expect("not poisoned").clone();
    let mut violations = expectations;
    violations.extend(invariants::no_negative_balance(&history, &events));
    violations.extend(invariants::conservation(&history, &events));
    violations.extend(invariants::one_effect_per_key(&ops, &events));
    violations.extend(invariants::convergence(&events, &views));
    violations.extend(invariants::linearizable(&history));
    violations.extend(invariants::read_model_reads(&history, &events));
    store.pool().close().await;
    read.pool().close().await;
    let mut report = RealReport::new(options, &ops, history, started);
    if let Some(requests) = &transport.requests {
        let requests = requests.lock().expect("not poisoned");
        match options.scenario {
            RealScenario::LedgerLatency => {
                report.latency = latency_rows(&requests, &faults);
                violations_of_levels(&report.latency, &mut violations);
            }
            RealScenario::LedgerPartition => violations.extend(partition_seen(&requests, &faults)),
            _ => report.gateway_answers = Some(requests.iter().filter(|r| matches!(r.status, 502 | 504)).count()),
        }
    }
    report.persisted = events.len();
    report.faults = faults;
    report.violations = violations;
    report.settled = settled;
    Ok(report)
}

/// `ledger-latency`'s levels: each of [`LATENCY_LEVELS_MS`] for a quarter of the run, added to
/// every answer of PostgreSQL and NATS, then none.
async fn latency_levels(
    proxies: &BTreeMap<String, Arc<ToxicProxy>>,
    duration: Duration,
    clock: Clock,
) -> Result<Vec<FaultLog>, RealError> {
    let mut log = Vec::new();
    let level_for = duration / LATENCY_LEVELS_MS.len() as u32;
    for added_ms in LATENCY_LEVELS_MS {
        for proxy in proxies.values() {
            proxy.set_latency(added_ms).await?;
        }
        log.push(FaultLog {
            at_ms: clock.millis(),
            action: format!("latency {added_ms}ms"),
            role: "postgres, nats".into(),
        });
        tokio::time::sleep(level_for).await;
    }
    for proxy in proxies.values() {
        proxy.set_latency(0).await?;
    }
    log.push(FaultLog { at_ms: clock.millis(), action: "latency 0ms".into(), role: "postgres, nats".into() });
    Ok(log)
}

/// The table's rows: each level's command requests, those sent and done within it (the clients
/// run on through the changes of latency).
fn latency_rows(requests: &[Sent], levels: &[FaultLog]) -> Vec<LatencyRow> {
    let starts: Vec<(u64, u64)> = levels
        .iter()
        .filter_map(|f| f.action.strip_prefix("latency ")?.strip_suffix("ms")?.parse().ok().map(|ms| (f.at_ms, ms)))
        .collect();
    let mut rows = Vec::new();
    for (i, (from, added_ms)) in starts.iter().enumerate().take(LATENCY_LEVELS_MS.len()) {
        let to = starts.get(i + 1).map_or(u64::MAX, |(at, _)| *at);
        // Only the requests sent and answered (or timed out) within the level: one that spans
        // a change of latency belongs to neither.
        let within = |r: &&Sent| r.at_ms >= *from && r.at_ms + (r.took.as_millis() as u64) < to;
        let level: Vec<(Duration, u16)> = requests.iter().filter(within).map(|r| (r.took, r.status)).collect();
        rows.push(LatencyRow::of(*added_ms, &level));
    }
    rows
}

/// `ledger-partition` must show its cuts: in each, a request sent to the partitioned instance
/// (`api-1`, index 0) got no answer before the heal (its packets were dropped). Without that the
/// run proved nothing about partitions, whatever the invariants say.
fn partition_seen(requests: &[Sent], faults: &[FaultLog]) -> Vec<Violation> {
    let cuts = faults.iter().filter(|f| f.action == "partition");
    let heals = faults.iter().filter(|f| f.action == "heal");
    let mut violations = Vec::new();
    for (cut, heal) in cuts.zip(heals) {
        let sent: Vec<&Sent> =
            requests.iter().filter(|r| r.api == 0 && r.at_ms >= cut.at_ms && r.at_ms < heal.at_ms).collect();
        // No answer in time, a failure, or an answer only once healed: api-1 was out of reach.
        let stranded =
            sent.iter().any(|r| r.status == 0 || r.status >= 500 || r.at_ms + r.took.as_millis() as u64 >= heal.at_ms);
        if !stranded {
            let seen: Vec<String> =
                sent.iter().take(5).map(|r| format!("{} at {} ms in {:?}", r.status, r.at_ms, r.took)).collect();
            violations.push(Violation::new(
                "scenario-expectation",
                format!(
                    "no request to api-1 was held up by the cut at {} ms (healed at {} ms): the partition did not \
                     isolate it ({} sent to it meanwhile: {})",
                    cut.at_ms,
                    heal.at_ms,
                    sent.len(),
                    seen.join(", ")
                ),
            ));
        }
    }
    violations
}

/// How long a cut's probe of api-1 waits past the heal for its answer.
const PROBE_SLACK: Duration = Duration::from_secs(2);

/// `ledger-partition`'s faults: [`PARTITIONS`] cuts of the namespace at seeded times in the
/// first 80% of the run, each held 1.5 to 3 s, then healed.
async fn partitions(
    netns: &Netns,
    seed: u64,
    duration: Duration,
    clock: Clock,
    transport: &LedgerTransport,
) -> Result<Vec<FaultLog>, RealError> {
    let mut rng = ChaCha8Rng::seed_from_u64(seed ^ 0x9A27);
    let slot = duration.mul_f64(0.8) / PARTITIONS as u32;
    let role = format!("netns {}: {}", netns.name, PARTITIONED_ROLES.join(", "));
    let mut log = Vec::new();
    for n in 0..PARTITIONS {
        let hold = Duration::from_millis(rng.gen_range(1500..=3000)).min(slot / 2);
        let start = slot * n as u32 + Duration::from_millis(rng.gen_range(0..=(slot - hold).as_millis() as u64));
        let now = Duration::from_nanos(clock.nanos());
        if start > now {
            tokio::time::sleep(start - now).await;
        }
        // The cut's time is taken before `nft` runs (it can take a while on a loaded machine):
        // a request sent while it runs may already be cut off, and must count as in the cut.
        let at_ms = clock.millis();
        netns.cut()?;
        log.push(FaultLog { at_ms, action: "partition".into(), role: role.clone() });
        tracing::info!(netns = %netns.name, "partitioned");
        // A probe of api-1 in every cut, recorded with the clients' requests: the cut must hold
        // it up until the heal whatever the clients happen to send meanwhile (on a loaded
        // machine they sent nothing to api-1 during a 2.4 s cut).
        let probe = transport.clone();
        tokio::spawn(async move {
            let req = sim::http::HttpReq::get("/health");
            let target = sim::ledger::workload::Target::Command;
            let _ = sim::ledger::workload::Transport::call(&probe, target, 0, req, hold + PROBE_SLACK).await;
        });
        tokio::time::sleep(hold).await;
        netns.heal()?;
        log.push(FaultLog { at_ms: clock.millis(), action: "heal".into(), role: role.clone() });
        tracing::info!(netns = %netns.name, "healed");
    }
    Ok(log)
}

/// Settles, corrupts two views by hand, requires the convergence check to see it, then
/// rebuilds the read model from the events (the `ledger rebuild` role's code).
async fn corrupt_and_rebuild(
    d: &Deployment,
    accounts: &[(String, Decimal)],
    expectations: &mut Vec<Violation>,
) -> Result<(), RealError> {
    let store = PgEventStore::new(pool(&d.events_url)?);
    let read = PgReadModel::new(pool(&d.read_url)?);
    if !settle(&store, &read, &d.prefix).await {
        expectations.push(Violation::new("scenario-expectation", "did not settle before the corruption"));
        return Ok(());
    }
    let sql = |e: sqlx::Error| RealError::Store(e.to_string());
    sqlx::query("UPDATE account_balances SET balance = 9999999 WHERE account_id = $1")
        .bind(&accounts[0].0)
        .execute(read.pool())
        .await
        .map_err(sql)?;
    sqlx::query("DELETE FROM account_balances WHERE account_id = $1")
        .bind(&accounts[1].0)
        .execute(read.pool())
        .await
        .map_err(sql)?;
    let (events, views) = end_state(&store, &read, &d.prefix).await?;
    let found = invariants::convergence(&events, &views);
    tracing::info!(?found, "after the corruption");
    if found.is_empty() {
        expectations.push(Violation::new("scenario-expectation", "the corruption went unnoticed"));
    }
    let replayed = read.rebuild(&store).await.map_err(|e| RealError::Store(format!("rebuild: {e}")))?;
    tracing::info!(replayed, "read model rebuilt");
    store.pool().close().await;
    read.pool().close().await;
    Ok(())
}

fn pool(url: &str) -> Result<sqlx::PgPool, RealError> {
    pg::lazy_pool(url, 2).map_err(|e| RealError::Store(e.to_string()))
}

/// Waits for the clients, at most the duration and a grace; clients still running then are a
/// liveness failure.
pub(super) async fn join(tasks: &mut tokio::task::JoinSet<()>, duration: Duration, expectations: &mut Vec<Violation>) {
    let all = async {
        while let Some(done) = tasks.join_next().await {
            if let Err(e) = done {
                expectations.push(Violation::new("no-panic", format!("a client task failed: {e}")));
            }
        }
    };
    if tokio::time::timeout(duration + CLIENTS_GRACE_MAX, all).await.is_err() {
        tasks.abort_all();
        expectations.push(Violation::new("liveness", "clients did not finish their operations in time"));
    }
}

/// Waits until the outbox is empty and the read model equals the store's fold.
async fn settle(store: &PgEventStore, read: &PgReadModel, prefix: &str) -> bool {
    let deadline = Instant::now() + SETTLE_MAX;
    loop {
        let backlog = store.backlog().await.unwrap_or(u64::MAX);
        if backlog == 0
            && let Ok((events, views)) = end_state(store, read, prefix).await
            && invariants::convergence(&events, &views).is_empty()
        {
            return true;
        }
        if Instant::now() >= deadline {
            tracing::warn!(backlog, "the ledger did not settle");
            return false;
        }
        tokio::time::sleep(SETTLE_POLL).await;
    }
}

/// Every event and view of this run's accounts.
async fn end_state(
    store: &PgEventStore,
    read: &PgReadModel,
    prefix: &str,
) -> Result<(Vec<RecordedEvent>, Vec<BalanceView>), RealError> {
    let mut events = Vec::new();
    let mut after = None;
    loop {
        let page = store.read_all(after.clone(), READ_PAGE).await.map_err(|e| RealError::Store(e.to_string()))?;
        let Some(last) = page.last() else { break };
        after = Some((last.stream_id.clone(), last.version));
        let full = page.len() == READ_PAGE;
        events.extend(page.into_iter().filter(|e| e.stream_id.starts_with(prefix)));
        if !full {
            break;
        }
    }
    let views = read
        .all_balances()
        .await
        .map_err(|e| RealError::Store(e.to_string()))?
        .into_iter()
        .filter(|v| v.account_id.starts_with(prefix))
        .collect();
    Ok((events, views))
}
