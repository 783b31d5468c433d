//! `testbed`: the command line of the simulation testbed.
//!
//! In both builds: `check` (linearizability of history files), `timeline`, `merge` (summaries
//! of a sharded sweep) and `list`. In the simulation build (`cargo testbed ...`) also `sweep`,
//! `repro` and `shrink`; in the real build `real`. Exit codes are typed: 0 clean, 1 a
//! violation, 2 usage, 3 inconclusive (a check's budget spent, a merge missing shards), 4
//! nondeterminism, 5 a real run that could not be set up.

use std::process::ExitCode;

use clap::{Parser, Subcommand};

#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Exit code: every run clean.
pub const EXIT_OK: u8 = 0;
/// Exit code: an invariant was violated.
pub const EXIT_VIOLATION: u8 = 1;
/// Exit code: bad usage.
pub const EXIT_USAGE: u8 = 2;
/// Exit code: inconclusive; for `merge`, not every shard of the sweep was given (`check` uses
/// the same code when its budget is spent).
pub const EXIT_INCOMPLETE: u8 = 3;
/// Exit code: the same seed gave two different traces.
pub const EXIT_NONDETERMINISM: u8 = 4;
/// Exit code: a real run could not be set up (a dependency missing, a service that would not
/// start).
pub const EXIT_SETUP: u8 = 5;
/// Exit code: a real run this machine cannot carry out (network namespaces not allowed): it was
/// skipped, and nothing was checked.
pub const EXIT_SKIPPED: u8 = 6;

#[derive(Parser)]
#[command(
    name = "testbed",
    version,
    about = "Deterministic simulation testbed for a ledger and a flash-sale order system"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

/// How `sweep` and `soak` run their seeds and report them.
#[cfg(madsim)]
#[derive(clap::Args)]
struct RunArgs {
    /// Worker threads (default: the number of cores).
    #[arg(long)]
    jobs: Option<usize>,
    /// CockroachDB nodes in the simulated cluster.
    #[arg(long, default_value_t = 3, value_parser = crdb_nodes)]
    crdb_nodes: usize,
    /// Where the histories of failing seeds are written (only failing seeds keep theirs).
    #[arg(long, default_value = "target/testbed/failures")]
    out: std::path::PathBuf,
    /// Print a JSON summary (seeds, failures with repro tokens, coverage marks, rate; for
    /// `soak` one per scenario, and no table) last.
    #[arg(long)]
    json: bool,
    /// Run only shard I of N: the seeds whose offset from --from is I modulo N (0-based), of
    /// every scenario for `soak` (not with --for). The shards of one sweep partition its seeds;
    /// `merge` joins their summaries.
    #[arg(long, value_parser = testbed::sim::summary::Shard::parse)]
    shard: Option<testbed::sim::summary::Shard>,
    /// Also write the JSON summary to this file (for `merge`).
    #[arg(long)]
    summary: Option<std::path::PathBuf>,
}

#[cfg(madsim)]
impl RunArgs {
    fn options(self) -> sim::SweepOptions {
        let RunArgs { jobs, crdb_nodes, out, json, shard, summary } = self;
        sim::SweepOptions { jobs, crdb: crdb_nodes, out, json, shard, summary }
    }
}

#[derive(Subcommand)]
enum Command {
    /// Run a scenario over many seeds; exit 1 if any seed breaks an invariant.
    #[cfg(madsim)]
    Sweep {
        /// Scenario name (see `list`).
        #[arg(long)]
        scenario: String,
        /// Number of seeds.
        #[arg(long, default_value_t = 100)]
        seeds: u64,
        /// First seed.
        #[arg(long, default_value_t = 0)]
        from: u64,
        /// Planted bug to switch on (see `list`).
        #[arg(long)]
        bug: Option<String>,
        #[command(flatten)]
        run: RunArgs,
    },
    /// Long sweeps: every scenario (or those named) for a number of seeds each or a time
    /// budget, on all cores; a row per scenario as it ends (seeds, failures, seeds/s), then the
    /// repro command and token of every failure; exit 1 on any failure.
    #[cfg(madsim)]
    Soak {
        /// A scenario to run (repeat the flag for several; default: every scenario).
        #[arg(long = "scenario")]
        scenarios: Vec<String>,
        /// Seeds per scenario (default: 20,000 for ledger-chaos and every order scenario, 5,000
        /// for the other ledger scenarios).
        #[arg(long)]
        seeds: Option<u64>,
        /// A time budget for the whole soak (e.g. `45m`), shared out over the scenarios; each
        /// runs chunks of 50 to 500 seeds until its share is spent (and at most --seeds, if given).
        #[arg(long = "for", value_name = "DURATION", value_parser = budget)]
        budget: Option<std::time::Duration>,
        /// First seed (choose a range `cargo sim` does not run: its sweeps start at 0).
        #[arg(long, default_value_t = 1_000_000)]
        from: u64,
        /// Planted bug to switch on in every scenario (see `list`).
        #[arg(long)]
        bug: Option<String>,
        #[command(flatten)]
        run: RunArgs,
    },
    /// Replay one seed: print its trace and write its history; the last line is the trace hash.
    #[cfg(madsim)]
    Repro {
        /// A repro token printed by a failing sweep (instead of --scenario/--seed/--bug).
        #[arg(long, conflicts_with_all = ["scenario", "seed", "bug"])]
        token: Option<String>,
        #[arg(long, required_unless_present = "token")]
        scenario: Option<String>,
        #[arg(long, required_unless_present = "token")]
        seed: Option<u64>,
        #[arg(long)]
        bug: Option<String>,
        /// Where to write the history (JSON Lines).
        #[arg(long, default_value = "history.jsonl")]
        history: std::path::PathBuf,
        /// CockroachDB nodes in the simulated cluster.
        #[arg(long, default_value_t = 3, value_parser = crdb_nodes)]
        crdb_nodes: usize,
        /// At most this many clients (as `shrink` prints).
        #[arg(long)]
        clients: Option<usize>,
        /// At most this many operations in all.
        #[arg(long)]
        ops: Option<usize>,
        /// At most this many injected faults.
        #[arg(long)]
        faults: Option<usize>,
    },
    /// From a failing seed, find a smaller run (fewer clients, operations and faults) that still
    /// breaks the same invariant; print the size before and after, and its repro command.
    #[cfg(madsim)]
    Shrink {
        #[arg(long)]
        scenario: String,
        #[arg(long)]
        seed: u64,
        #[arg(long)]
        bug: Option<String>,
    },
    /// Run a scenario on real infrastructure: the simulator's seeded workload over HTTP, faults
    /// by killing, restarting, pausing (SIGSTOP) and resuming processes, the same checkers on
    /// the recorded history and the stores' end state. Writes the services' logs, history.jsonl,
    /// report.json and timeline.html. Exit 0 clean, 1 a violation, 5 setup failed.
    #[cfg(not(madsim))]
    Real {
        /// ledger-chaos, api-killed-behind-proxy, concurrent-withdrawals, double-spend,
        /// read-model-rebuild, flash-sale, worker-crash, orders-api-killed-behind-proxy or
        /// redis-latency.
        #[arg(long, value_parser = real_scenario)]
        scenario: testbed::real::RealScenario,
        /// Seeds the workload and the fault schedule (the same workload as the simulator's).
        #[arg(long, default_value_t = 1)]
        seed: u64,
        /// How long clients run (mixed workload) or arrive (flash sale): 20s, 1500ms, 2m.
        #[arg(long, default_value = "20s", value_parser = duration)]
        duration: std::time::Duration,
        /// Fault the containers of a running `docker compose up` deployment instead of local
        /// processes the runner starts.
        #[arg(long)]
        compose: bool,
        /// The compose file (with --compose).
        #[arg(long, default_value = "docker-compose.yml", requires = "compose")]
        compose_file: std::path::PathBuf,
        /// Directory for this run's logs, history, report and timeline.
        #[arg(long, default_value = "target/testbed/real")]
        out: std::path::PathBuf,
        /// Keep the run's databases.
        #[arg(long)]
        keep: bool,
        /// Print the report as JSON last.
        #[arg(long)]
        json: bool,
        /// Serve Toxiproxy's HTTP API over the run's latency proxies on this address (redis-latency
        /// and ledger-latency), for `toxiproxy-cli -h ADDR` during the run.
        #[arg(long, value_name = "ADDR")]
        toxiproxy_api: Option<std::net::SocketAddr>,
    },
    /// Measure and print tables: `sim` (simulation build: seeds per second per scenario with one
    /// job and all cores, simulated seconds per wall second, peak memory), `ledger` and
    /// `orders` (real build: the services' throughput and latency beside pgbench and
    /// redis-benchmark). `--write FILE` puts each table into its section of FILE.
    Bench {
        /// sim (simulation build); ledger, orders or services (real build).
        what: String,
        /// Seconds per load level (real build).
        #[arg(long, default_value_t = 10)]
        seconds: u64,
        /// Seeds per sweep (simulation build).
        #[arg(long, default_value_t = 200)]
        seeds: u64,
        /// Write the tables into this markdown file (between `<!-- bench:NAME -->` markers).
        #[arg(long)]
        write: Option<std::path::PathBuf>,
        /// Where the services' logs go (real build).
        #[arg(long, default_value = "target/testbed/bench")]
        out: std::path::PathBuf,
    },
    /// Join the summaries of a sharded sweep (`sweep --shard I/N --summary FILE`) into one
    /// report: seeds run, failures with their repro commands, coverage marks summed, seeds per
    /// second. Exit 0 when every shard is there and no seed failed, 1 when a seed failed, 3 when
    /// shards are missing, 2 when the files are unreadable or not shards of one sweep.
    Merge {
        /// Summary files, one per shard, in any order.
        #[arg(required = true)]
        summaries: Vec<std::path::PathBuf>,
        /// Print the merged summary as JSON last.
        #[arg(long)]
        json: bool,
        /// Also write the merged summary to this file.
        #[arg(long)]
        out: Option<std::path::PathBuf>,
    },
    /// List scenarios, invariants and planted bugs, one per line.
    List,
    /// Draw a history as a self-contained HTML timeline (lanes per client, faults as bands,
    /// the operations of a bank linearizability violation outlined, metrics charted under the
    /// lanes).
    Timeline {
        /// History file (JSON Lines).
        history: std::path::PathBuf,
        /// Faults as JSON (`repro` writes them beside the history).
        #[arg(long)]
        faults: Option<std::path::PathBuf>,
        /// Metrics series as JSON, drawn under the lanes (`repro` writes them beside the history).
        #[arg(long)]
        metrics: Option<std::path::PathBuf>,
        /// Violations as JSON: a `report.json` of `testbed real`, or a list of `{invariant,
        /// message}`. The operations their messages name (an order's key, a calm operation's
        /// time) are outlined too.
        #[arg(long)]
        violations: Option<std::path::PathBuf>,
        /// Where to write the page.
        #[arg(long, short, default_value = "timeline.html")]
        out: std::path::PathBuf,
    },
    /// Check history files for linearizability: one line per file; exit 0 when all are
    /// linearizable, 1 when any is not, 3 when any is unknown (budget spent), 2 on bad usage.
    Check {
        /// The model: bank, register, cas-register or kv.
        #[arg(long)]
        model: String,
        /// The format: jsonl, jepsen-log, kv-edn or jepsen-edn (a Jepsen store's history.edn; default: from
        /// the file's extension).
        #[arg(long)]
        format: Option<String>,
        /// Search steps per file before the answer is unknown.
        #[arg(long)]
        budget: Option<u64>,
        /// Wall time per file before the answer is unknown (e.g. 30s, 2m; default 60s).
        #[arg(long, value_parser = check_timeout)]
        timeout: Option<std::time::Duration>,
        /// Memory the search may hold per file before the answer is unknown (e.g. 512MiB,
        /// 2GiB; default 4GiB).
        #[arg(long, value_parser = bytes)]
        memory_max: Option<usize>,
        /// History files.
        #[arg(required = true)]
        files: Vec<std::path::PathBuf>,
    },
}

#[cfg(not(madsim))]
fn real_scenario(value: &str) -> Result<testbed::real::RealScenario, String> {
    testbed::real::RealScenario::from_name(value).ok_or_else(|| {
        let names: Vec<&str> = testbed::real::RealScenario::ALL.iter().map(|s| s.name()).collect();
        format!("unknown real scenario; one of: {}", names.join(", "))
    })
}

/// `20s`, `1500ms`, `2m`, `1h`, or plain seconds; more than 0 and at most `max`.
fn parse_duration(value: &str, max: std::time::Duration) -> Result<std::time::Duration, String> {
    let (number, unit) = match value.find(|c: char| !c.is_ascii_digit()) {
        Some(i) => value.split_at(i),
        None => (value, "s"),
    };
    let n: u64 = number.parse().map_err(|_| format!("expected a duration such as 20s or 1500ms, got {value:?}"))?;
    let d = match unit {
        "ms" => std::time::Duration::from_millis(n),
        "s" => std::time::Duration::from_secs(n),
        "m" => std::time::Duration::from_secs(n.saturating_mul(60)),
        "h" => std::time::Duration::from_secs(n.saturating_mul(3600)),
        _ => return Err(format!("unknown unit {unit:?}: use ms, s, m or h")),
    };
    if d.is_zero() || d > max {
        return Err(format!("the duration must be more than 0 and at most {} s", max.as_secs()));
    }
    Ok(d)
}

/// A real run's length: at most 1 hour.
#[cfg(not(madsim))]
fn duration(value: &str) -> Result<std::time::Duration, String> {
    parse_duration(value, std::time::Duration::from_secs(3600))
}

/// A check's timeout: at most 24 hours.
fn check_timeout(value: &str) -> Result<std::time::Duration, String> {
    parse_duration(value, std::time::Duration::from_secs(24 * 3600))
}

/// `512MiB`, `2GiB`, `64KiB` or plain bytes: more than 0.
fn bytes(value: &str) -> Result<usize, String> {
    let (number, unit) = match value.find(|c: char| !c.is_ascii_digit()) {
        Some(i) => value.split_at(i),
        None => (value, ""),
    };
    let n: usize = number.parse().map_err(|_| format!("expected a size such as 512MiB or 2GiB, got {value:?}"))?;
    let shift = match unit {
        "" | "B" => 0,
        "KiB" => 10,
        "MiB" => 20,
        "GiB" => 30,
        _ => return Err(format!("unknown unit {unit:?}: use KiB, MiB or GiB")),
    };
    match n.checked_mul(1 << shift) {
        Some(0) => Err("the size must be more than 0".into()),
        Some(size) => Ok(size),
        None => Err(format!("{value} is too large")),
    }
}

/// A soak's time budget: at most 24 hours.
#[cfg(madsim)]
fn budget(value: &str) -> Result<std::time::Duration, String> {
    parse_duration(value, std::time::Duration::from_secs(24 * 3600))
}

#[cfg(madsim)]
fn crdb_nodes(value: &str) -> Result<usize, String> {
    match value.parse::<usize>() {
        Ok(n @ (3 | 5)) => Ok(n),
        _ => Err("the cluster has 3 or 5 nodes".into()),
    }
}

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => {
            let code = if e.use_stderr() { EXIT_USAGE } else { EXIT_OK };
            let _ = e.print();
            return ExitCode::from(code);
        }
    };
    ExitCode::from(match cli.command {
        Command::List => list(),
        Command::Merge { summaries, json, out } => merge_cmd(&summaries, json, out.as_deref()),
        Command::Bench { what, seconds, seeds, write, out } => bench_cmd(&what, seconds, seeds, write.as_deref(), &out),
        Command::Timeline { history, faults, metrics, violations, out } => {
            match read_json_file::<serde_json::Value>(violations.as_deref(), "violations") {
                Ok(report) => {
                    timeline(&history, faults.as_deref(), metrics.as_deref(), &violation_messages(&report), &out)
                }
                Err(code) => code,
            }
        }
        Command::Check { model, format, budget, timeout, memory_max, files } => {
            let default = checker::Budget::default();
            let budget = checker::Budget {
                steps_max: budget.unwrap_or(default.steps_max),
                timeout: timeout.or(default.timeout),
                memory_max: memory_max.or(default.memory_max),
            };
            let mut out = std::io::stdout().lock();
            let code = checker::cli::run_check_with_budget(&model, format.as_deref(), &files, budget, &mut out);
            u8::try_from(code).unwrap_or(EXIT_USAGE)
        }
        #[cfg(madsim)]
        Command::Sweep { scenario, seeds, from, bug, run } => {
            sim::sweep_cmd(&scenario, seeds, from, bug.as_deref(), &run.options())
        }
        #[cfg(madsim)]
        Command::Soak { scenarios, seeds, budget, from, bug, run } => {
            sim::soak_cmd(&sim::SoakOptions { scenarios, seeds, budget, from, bug, sweep: run.options() })
        }
        #[cfg(madsim)]
        Command::Repro { token, scenario, seed, bug, history, crdb_nodes, clients, ops, faults } => match token {
            Some(token) => sim::repro_token(&token, &history),
            None => sim::repro_cmd(
                scenario.as_deref().unwrap_or_default(),
                seed.unwrap_or_default(),
                bug.as_deref(),
                &history,
                crdb_nodes,
                testbed::sim::limits::Limits { clients, ops, faults },
            ),
        },
        #[cfg(madsim)]
        Command::Shrink { scenario, seed, bug } => sim::shrink_cmd(&scenario, seed, bug.as_deref()),
        #[cfg(not(madsim))]
        Command::Real { scenario, seed, duration, compose, compose_file, out, keep, json, toxiproxy_api } => {
            if toxiproxy_api.is_some() && !scenario.extras().toxics {
                eprintln!(
                    "error: --toxiproxy-api needs a scenario with latency proxies (redis-latency, ledger-latency), not {}",
                    scenario.name()
                );
                return ExitCode::from(EXIT_USAGE);
            }
            let out = out.join(format!("{}-{seed}", scenario.name()));
            let compose = compose.then_some(compose_file);
            real_cmd(scenario, seed, duration, compose, out, RealFlags { keep, json, toxiproxy_api })
        }
    })
}

/// `testbed real`'s switches.
#[cfg(not(madsim))]
struct RealFlags {
    keep: bool,
    json: bool,
    toxiproxy_api: Option<std::net::SocketAddr>,
}

#[cfg(not(madsim))]
fn real_cmd(
    scenario: testbed::real::RealScenario,
    seed: u64,
    duration: std::time::Duration,
    compose: Option<std::path::PathBuf>,
    out: std::path::PathBuf,
    flags: RealFlags,
) -> u8 {
    use testbed::real::{LocalTools, Mode, RealOptions};
    let RealFlags { keep, json, toxiproxy_api } = flags;
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn,sqlx=error"));
    let _ = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr).try_init();
    let mode = match compose {
        Some(file) => Mode::Compose { file },
        None => match LocalTools::discover() {
            Ok(tools) => Mode::Local(tools),
            Err(e) => {
                eprintln!("error: {e}");
                return EXIT_SETUP;
            }
        },
    };
    let options = RealOptions { scenario, seed, duration, mode, out: out.clone(), keep, toxiproxy_api };
    println!("real {} seed {seed} for {duration:?}: {}", scenario.name(), scenario.about());
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build().expect("tokio runtime");
    let report = match runtime.block_on(testbed::real::run(&options)) {
        Ok(report) => report,
        Err(testbed::real::RealError::Skipped(why)) => {
            eprintln!("SKIPPED {}: {why}", scenario.name());
            return EXIT_SKIPPED;
        }
        Err(e) => {
            eprintln!("error: {e}");
            eprintln!("logs: {}", out.join("logs").display());
            return EXIT_SETUP;
        }
    };
    let bands = testbed::real::fault_bands(&report.faults);
    let messages: Vec<String> = report.violations.iter().map(|v| v.message.clone()).collect();
    let page = testbed::sim::timeline::render(
        &format!("real {} seed {seed}", scenario.name()),
        &report.history,
        &bands,
        &testbed::sim::timeline::outlined_ops(&report.history, &messages),
    );
    let _ = std::fs::write(out.join("timeline.html"), page);
    println!(
        "{} operations: {} ok, {} fail, {} info; {} persisted; {} faults; settled: {}; {:.1} s",
        report.operations,
        report.ok,
        report.fail,
        report.info,
        report.persisted,
        report.faults.len(),
        report.settled,
        report.wall_seconds
    );
    for fault in &report.faults {
        println!("  fault at {:>6} ms: {} {}", fault.at_ms, fault.action, fault.role);
    }
    if let Some(n) = report.gateway_answers {
        println!(
            "{n} requests answered 502/504 by the proxy (taken by an instance it then lost), each retried with its key"
        );
    }
    if !report.latency.is_empty() {
        println!("\n{}", testbed::real::toxics::latency_markdown(&report.latency));
    }
    for v in &report.violations {
        println!("VIOLATION {}: {}", v.invariant, v.message);
    }
    println!("history: {}", out.join("history.jsonl").display());
    println!("timeline: {}", out.join("timeline.html").display());
    println!("logs: {}", out.join("logs").display());
    if json {
        println!("{}", serde_json::to_string(&report).expect("reports serialize"));
    }
    if report.passed() {
        println!("clean");
        EXIT_OK
    } else {
        EXIT_VIOLATION
    }
}

/// The process's peak resident memory (VmHWM), in MB.
#[cfg(madsim)]
fn peak_rss_mb() -> f64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines().find(|l| l.starts_with("VmHWM:")).and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
        })
        .map_or(0.0, |kb: f64| kb / 1024.0)
}

/// The sweeps of `bench sim`: every scenario, one job and all cores, each in a child process so
/// that its peak memory is its own.
#[cfg(madsim)]
const BENCH_SIM_SCENARIOS: [&str; 4] = ["ledger-chaos", "processor-crash", "flash-sale", "worker-crash"];

fn bench_cmd(what: &str, seconds: u64, seeds: u64, write: Option<&std::path::Path>, out: &std::path::Path) -> u8 {
    let command = std::env::args().collect::<Vec<_>>().join(" ");
    let sections: Vec<(&str, Result<String, String>)> = match what {
        #[cfg(madsim)]
        "sim" => vec![("sim", bench_sim(seeds))],
        #[cfg(not(madsim))]
        "ledger" | "orders" | "services" => {
            let _ = (seeds,);
            let tools = match testbed::real::LocalTools::discover() {
                Ok(tools) => tools,
                Err(e) => {
                    eprintln!("error: {e}");
                    return EXIT_SETUP;
                }
            };
            let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build().expect("tokio runtime");
            let mut sections = Vec::new();
            if what != "orders" {
                let r = runtime.block_on(testbed::bench::ledger(&tools, seconds, &out.join("ledger")));
                sections.push(("ledger", r.map_err(|e| e.to_string())));
            }
            if what != "ledger" {
                let r = runtime.block_on(testbed::bench::orders(&tools, seconds, &out.join("orders")));
                sections.push(("orders", r.map_err(|e| e.to_string())));
            }
            sections
        }
        other => {
            let _ = (seconds, seeds, out);
            #[cfg(madsim)]
            eprintln!("error: unknown benchmark {other:?}: the simulation build measures `sim`");
            #[cfg(not(madsim))]
            eprintln!("error: unknown benchmark {other:?}: the real build measures ledger, orders or services");
            return EXIT_USAGE;
        }
    };
    let mut code = EXIT_OK;
    for (name, result) in sections {
        match result {
            Ok(table) => {
                let body = format!("{}{table}", testbed_provenance(&command));
                println!("## {name}\n\n{body}");
                if let Some(file) = write
                    && let Err(e) = write_section(file, name, &body)
                {
                    eprintln!("error: cannot write {}: {e}", file.display());
                    code = EXIT_USAGE;
                }
            }
            Err(e) => {
                eprintln!("error: benchmark {name}: {e}");
                code = 5;
            }
        }
    }
    code
}

#[cfg(madsim)]
fn bench_sim(seeds: u64) -> Result<String, String> {
    let exe = std::env::current_exe().map_err(|e| e.to_string())?;
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let mut table = String::from(
        "| scenario | seeds | jobs 1: seeds/s | jobs 1: peak MB | jobs 1: simulated s per wall s | \
         jobs {cores}: seeds/s | jobs {cores}: peak MB | seeds/hour with {cores} |\n|---|---|---|---|---|---|---|---|\n",
    )
    .replace("{cores}", &cores.to_string());
    for scenario in BENCH_SIM_SCENARIOS {
        let mut cells = Vec::new();
        for jobs in [1, cores] {
            let output = std::process::Command::new(&exe)
                .args(["sweep", "--scenario", scenario, "--seeds", &seeds.to_string(), "--jobs", &jobs.to_string()])
                .arg("--json")
                .output()
                .map_err(|e| e.to_string())?;
            let text = String::from_utf8_lossy(&output.stdout);
            let summary: serde_json::Value = text
                .lines()
                .find(|l| l.starts_with('{'))
                .and_then(|l| serde_json::from_str(l).ok())
                .ok_or_else(|| format!("{scenario}: no summary from the sweep: {text}"))?;
            if summary["failures"].as_array().is_some_and(|f| !f.is_empty()) {
                return Err(format!("{scenario}: the sweep found failures; fix them before measuring"));
            }
            cells.push(summary);
        }
        let rate = |i: usize| cells[i]["seeds_per_second"].as_f64().unwrap_or(0.0);
        let mb = |i: usize| cells[i]["peak_rss_mb"].as_f64().unwrap_or(0.0);
        let sim_per_wall =
            cells[0]["simulated_seconds"].as_f64().unwrap_or(0.0) / cells[0]["seconds"].as_f64().unwrap_or(1.0);
        table.push_str(&format!(
            "| {scenario} | {seeds} | {:.1} | {:.0} | {sim_per_wall:.0} | {:.1} | {:.0} | {:.0} |\n",
            rate(0),
            mb(0),
            rate(1),
            mb(1),
            rate(1) * 3600.0
        ));
    }
    table.push_str(&bench_checker_on_sim_histories());
    Ok(table)
}

/// Operation caps of the checker-on-simulated-histories table.
#[cfg(madsim)]
const BENCH_CHECKER_OPS: [Option<usize>; 5] = [Some(60), Some(120), Some(240), Some(480), None];
/// Seeds per cap.
#[cfg(madsim)]
const BENCH_CHECKER_SEEDS: u64 = 5;

/// The linearizability check of ledger-chaos histories at growing sizes: time per history.
#[cfg(madsim)]
fn bench_checker_on_sim_histories() -> String {
    use testbed::sim::ledger::scenario::LedgerScenario;
    use testbed::sim::run::{RunRequest, run_seed};
    use testbed::sim::scenarios::Scenario;
    let mut table = String::from(
        "\nThe bank linearizability check on ledger-chaos histories (swarm faults, 10 clients at most), \
         by the operations the run was capped at; mean and largest time over seeds 1-5:\n\n\
         | operations (cap) | history events (mean) | check ms (mean) | check ms (max) |\n|---|---|---|---|\n",
    );
    for cap in BENCH_CHECKER_OPS {
        let (mut events, mut total, mut max) = (0usize, 0f64, 0f64);
        for seed in 1..=BENCH_CHECKER_SEEDS {
            let mut request = RunRequest::new(Scenario::Ledger(LedgerScenario::Chaos), seed, None);
            request.limits.ops = cap;
            let outcome = run_seed(request);
            events += outcome.history.len();
            let started = std::time::Instant::now();
            let verdict = testbed::sim::ledger::invariants::linearizable(&outcome.history);
            let ms = started.elapsed().as_secs_f64() * 1000.0;
            assert!(verdict.is_empty(), "seed {seed} is not linearizable: {verdict:?}");
            total += ms;
            max = max.max(ms);
        }
        let n = BENCH_CHECKER_SEEDS as f64;
        let cap = cap.map_or_else(|| "none (8-10 clients, 500 in all)".to_string(), |c| c.to_string());
        table.push_str(&format!("| {cap} | {:.0} | {:.2} | {max:.2} |\n", events as f64 / n, total / n));
    }
    table
}

/// Replaces a `<!-- bench:NAME -->` section of a markdown file.
fn write_section(file: &std::path::Path, name: &str, body: &str) -> std::io::Result<()> {
    let text = std::fs::read_to_string(file).unwrap_or_default();
    let (open, close) = (format!("<!-- bench:{name} -->"), format!("<!-- /bench:{name} -->"));
    let section = format!("{open}\n{body}{close}");
    let text = match (text.find(&open), text.find(&close)) {
        (Some(a), Some(b)) if a < b => format!("{}{section}{}", &text[..a], &text[b + close.len()..]),
        _ => format!("{}\n\n{section}\n", text.trim_end()),
    };
    std::fs::write(file, text)
}

/// The machine, the commit and the command.
fn testbed_provenance(command: &str) -> String {
    let run = |program: &str, args: &[&str]| {
        std::process::Command::new(program)
            .args(args)
            .output()
            .ok()
            .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
            .unwrap_or_default()
    };
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|c| {
            c.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split(':').nth(1))
                .map(|m| m.trim().to_string())
        })
        .unwrap_or_default();
    let memory = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|m| m.lines().next().and_then(|l| l.split_whitespace().nth(1)?.parse::<f64>().ok()))
        .map_or(String::new(), |kb| format!(", {:.0} GiB", kb / 1024.0 / 1024.0));
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    format!(
        "Machine: {cores} cores ({cpu}{memory}). Commit {}. Command: `{command}`. {}.\n\n",
        run("git", &["rev-parse", "--short", "HEAD"]),
        run("date", &["-u", "+%Y-%m-%d %H:%M UTC"])
    )
}

/// Draws the timeline of a history file. `violations` are the messages of the run's violations:
/// the operations they name are outlined with those of a linearizability witness.
fn timeline(
    history: &std::path::Path,
    faults: Option<&std::path::Path>,
    metrics: Option<&std::path::Path>,
    violations: &[String],
    out: &std::path::Path,
) -> u8 {
    let events = match checker::read::read_history(history, checker::read::Format::Jsonl) {
        Ok(h) => h.events,
        Err(e) => {
            eprintln!("error: {}: {e}", history.display());
            return EXIT_USAGE;
        }
    };
    let faults: Vec<serde_json::Value> = match read_json_file(faults, "faults") {
        Ok(faults) => faults,
        Err(code) => return code,
    };
    let bands: Vec<testbed::sim::timeline::Band> = faults.iter().map(band_of).collect();
    let series: Vec<testbed::sim::metrics::Series> = match read_json_file(metrics, "metrics") {
        Ok(series) => series,
        Err(code) => return code,
    };
    let highlight = testbed::sim::timeline::outlined_ops(&events, violations);
    let page = testbed::sim::timeline::render_with_metrics(
        &history.display().to_string(),
        &events,
        &bands,
        &highlight,
        &series,
    );
    match std::fs::write(out, page) {
        Ok(()) => {
            println!(
                "timeline: {} ({} events, {} faults, {} outlined)",
                out.display(),
                events.len(),
                bands.len(),
                highlight.len()
            );
            EXIT_OK
        }
        Err(e) => {
            eprintln!("error: cannot write {}: {e}", out.display());
            EXIT_USAGE
        }
    }
}

/// The messages of the violations in JSON: a report's `violations` (`testbed real`'s
/// `report.json`) or a list of violations, each a `{invariant, message}` or a bare message.
fn violation_messages(report: &serde_json::Value) -> Vec<String> {
    let list = report.get("violations").unwrap_or(report);
    let Some(list) = list.as_array() else { return Vec::new() };
    list.iter().filter_map(|v| v.get("message").unwrap_or(v).as_str().map(str::to_string)).collect()
}

/// The JSON of an optional file (default when absent); a usage error names the file when it
/// cannot be read or parsed.
fn read_json_file<T: serde::de::DeserializeOwned + Default>(
    path: Option<&std::path::Path>,
    what: &str,
) -> Result<T, u8> {
    let Some(path) = path else { return Ok(T::default()) };
    std::fs::read_to_string(path)
        .map_err(|e| e.to_string())
        .and_then(|t| serde_json::from_str(&t).map_err(|e| e.to_string()))
        .map_err(|e| {
            eprintln!("error: {what} file {}: {e}", path.display());
            EXIT_USAGE
        })
}

/// `coverage: mark=n ...`, or `coverage: none`.
fn coverage_line(marks: &std::collections::BTreeMap<String, u64>) -> String {
    let reached: Vec<String> = marks.iter().map(|(m, n)| format!("{m}={n}")).collect();
    format!("coverage: {}", if reached.is_empty() { "none".to_string() } else { reached.join(" ") })
}

/// `outcomes: name=n ...`, then the scenario's required outcomes no seed reached.
fn outcomes_line(outcomes: &std::collections::BTreeMap<String, u64>, required: &[&str]) -> String {
    let reached: Vec<String> = outcomes.iter().map(|(m, n)| format!("{m}={n}")).collect();
    let missing: Vec<&str> = required.iter().copied().filter(|r| !outcomes.contains_key(*r)).collect();
    let mut line = format!("outcomes: {}", if reached.is_empty() { "none".to_string() } else { reached.join(" ") });
    if !missing.is_empty() {
        line.push_str(&format!(" (required, never reached: {})", missing.join(" ")));
    }
    line
}

/// A fault record (as `repro` writes them) as a band.
fn band_of(fault: &serde_json::Value) -> testbed::sim::timeline::Band {
    let targets: Vec<&str> =
        fault["targets"].as_array().map(|t| t.iter().filter_map(|v| v.as_str()).collect()).unwrap_or_default();
    testbed::sim::timeline::Band {
        label: format!("{} {}", fault["kind"].as_str().unwrap_or("fault"), targets.join(" ")),
        start: fault["start"].as_u64().unwrap_or(0),
        end: fault["end"].as_u64(),
    }
}

/// `testbed merge`: reads shard summaries, merges them, prints the report.
fn merge_cmd(paths: &[std::path::PathBuf], json: bool, out: Option<&std::path::Path>) -> u8 {
    use testbed::sim::summary::{SoakSummary, SweepSummary, merge};
    // Sweep summaries, or soak summaries (a sweep summary per scenario): a soak's are merged
    // scenario by scenario, in the order the first file ran them.
    let mut groups: Vec<(String, Vec<(String, SweepSummary)>)> = Vec::new();
    let mut soak = false;
    for path in paths {
        let text = match std::fs::read_to_string(path) {
            Ok(text) => text,
            Err(e) => {
                eprintln!("error: {}: not a sweep summary: {e}", path.display());
                return EXIT_USAGE;
            }
        };
        let summaries = match serde_json::from_str::<SweepSummary>(&text) {
            Ok(summary) => vec![summary],
            Err(sweep_error) => match serde_json::from_str::<SoakSummary>(&text) {
                Ok(parsed) => {
                    soak = true;
                    parsed.soak
                }
                Err(_) => {
                    eprintln!("error: {}: not a sweep or soak summary: {sweep_error}", path.display());
                    return EXIT_USAGE;
                }
            },
        };
        for summary in summaries {
            let name = summary.scenario.clone();
            let entry = (path.display().to_string(), summary);
            match groups.iter_mut().find(|(n, _)| *n == name) {
                Some((_, group)) => group.push(entry),
                None => groups.push((name, vec![entry])),
            }
        }
    }
    if !soak {
        // Plain sweeps: one merge, which names any summary of another sweep.
        let all: Vec<(String, SweepSummary)> = groups.drain(..).flat_map(|(_, group)| group).collect();
        groups.push((String::new(), all));
    }
    let mut merged_all = Vec::new();
    for (_, group) in &groups {
        match merge(group) {
            Ok(merged) => merged_all.push(merged),
            Err(e) => {
                eprintln!("error: {e}");
                return EXIT_USAGE;
            }
        }
    }
    if merged_all.is_empty() {
        eprintln!("error: no summaries to merge");
        return EXIT_USAGE;
    }
    let mut code = EXIT_OK;
    for merged in &merged_all {
        let this = print_merged(merged);
        // A failure outranks a missing shard, which outranks a clean merge.
        code = match (code, this) {
            (EXIT_VIOLATION, _) | (_, EXIT_VIOLATION) => EXIT_VIOLATION,
            (EXIT_INCOMPLETE, _) | (_, EXIT_INCOMPLETE) => EXIT_INCOMPLETE,
            _ => EXIT_OK,
        };
    }
    let text = if soak {
        serde_json::to_string(&SoakSummary { soak: merged_all }).expect("a summary serializes")
    } else {
        serde_json::to_string(&merged_all[0]).expect("a summary serializes")
    };
    if let Some(out) = out
        && let Err(e) = std::fs::write(out, format!("{text}\n"))
    {
        eprintln!("error: cannot write {}: {e}", out.display());
        return EXIT_USAGE;
    }
    if json {
        println!("{text}");
    }
    code
}

/// Prints a merged sweep's report; its exit code (0 clean, 1 a seed failed, 3 shards missing).
fn print_merged(merged: &testbed::sim::summary::SweepSummary) -> u8 {
    let bug = merged.bug.as_deref().map(|b| format!(" with bug {b}")).unwrap_or_default();
    println!(
        "{}{bug}, seeds {}..{}: {} of {} shards, {} seeds run, {} failed",
        merged.scenario,
        merged.from,
        merged.from.saturating_add(merged.count),
        merged.shards.len(),
        merged.shard_count,
        merged.seeds,
        merged.failures.len()
    );
    for failure in &merged.failures {
        println!("FAIL seed {}: {}", failure.seed, failure.invariants.join(", "));
        println!("  reproduce: {}", failure.reproduce);
        println!("  token: {}", failure.token);
    }
    println!("{}", coverage_line(&merged.coverage));
    // The required outcomes are known to the simulation build; the real build prints what was seen.
    #[cfg(madsim)]
    let required =
        testbed::sim::scenarios::Scenario::from_name(&merged.scenario).map_or(&[][..], |s| s.required_outcomes());
    #[cfg(not(madsim))]
    let required: &[&str] = &[];
    println!("{}", outcomes_line(&merged.outcomes, required));
    println!(
        "{:.1} seeds/s over the shards side by side ({:.1} s for the longest shard, {:.1} s in all); trace digest {}",
        merged.seeds_per_second, merged.seconds, merged.shard_seconds, merged.trace_digest
    );
    if !merged.complete() {
        let missing: Vec<String> = merged.missing().iter().map(u64::to_string).collect();
        println!("incomplete: shards {} of {} are missing", missing.join(", "), merged.shard_count);
        EXIT_INCOMPLETE
    } else if merged.failures.is_empty() {
        EXIT_OK
    } else {
        EXIT_VIOLATION
    }
}

fn list() -> u8 {
    use std::io::Write;
    // A closed pipe (`testbed list | head`) ends the listing quietly.
    let mut out = std::io::stdout().lock();
    let mut lines: Vec<String> = Vec::new();
    #[cfg(madsim)]
    {
        use testbed::sim::scenarios::Scenario;
        lines.extend(Scenario::all().into_iter().map(|s| format!("scenario {}", s.name())));
    }
    lines.extend(testbed::sim::verdict::INVARIANTS.iter().map(|i| format!("invariant {i}")));
    #[cfg(madsim)]
    {
        use testbed::sim::scenarios::Scenario;
        lines.extend(
            testbed::services::bugs::Bug::ALL
                .iter()
                .map(|b| format!("bug {} {}", b.name(), Scenario::exposing(*b).name())),
        );
    }
    #[cfg(not(madsim))]
    {
        lines.extend(testbed::real::RealScenario::ALL.iter().map(|s| format!("real-scenario {}", s.name())));
        eprintln!("simulated scenarios and bugs belong to the simulation build: run `cargo testbed list`");
    }
    for line in lines {
        if writeln!(out, "{line}").is_err() {
            break;
        }
    }
    EXIT_OK
}

#[cfg(madsim)]
mod sim {
    use std::io::Write;
    use std::path::Path;

    use testbed::services::bugs::Bug;
    use testbed::sim::history::to_jsonl;
    use testbed::sim::run::{self, RunOutcome, RunRequest};
    use testbed::sim::scenarios::Scenario;
    use testbed::sim::summary::{self, Failure, Shard, SweepSummary};

    use super::{EXIT_OK, EXIT_USAGE, EXIT_VIOLATION};

    fn parse(scenario: &str, bug: Option<&str>) -> Result<(Scenario, Option<Bug>), u8> {
        let Some(found) = Scenario::from_name(scenario) else {
            let names: Vec<&str> = Scenario::all().iter().map(|s| s.name()).collect();
            eprintln!("error: unknown scenario {scenario:?}; one of: {}", names.join(", "));
            eprintln!("usage: testbed sweep --scenario NAME --seeds N [--from S] [--bug NAME] [--jobs J]");
            return Err(EXIT_USAGE);
        };
        let bug = match bug.map(str::parse::<Bug>).transpose() {
            Ok(bug) => bug,
            Err(e) => {
                eprintln!("error: {e}");
                return Err(EXIT_USAGE);
            }
        };
        Ok((found, bug))
    }

    /// The seed's fault plan (the swarm's draw, from the trace) and every fault as it happened.
    fn print_fault_plan(outcome: &RunOutcome) {
        let plan = outcome
            .trace
            .iter()
            .filter(|l| l.split_whitespace().nth(1) == Some("faults"))
            .find_map(|l| l.split_once(" plan ").map(|(_, p)| p.to_string()));
        println!("fault plan: {}", plan.as_deref().unwrap_or("scripted (no swarm)"));
        for fault in &outcome.faults {
            let end = fault.end.map_or_else(|| "heal".to_string(), |e| format!("{:.3}s", e as f64 / 1e9));
            println!("  fault {:?} {} {:.3}s..{end}", fault.kind, fault.targets.join(" "), fault.start as f64 / 1e9);
        }
    }

    fn print_failure(outcome: &RunOutcome) {
        println!("FAIL scenario {} seed {}", outcome.scenario, outcome.seed);
        for v in outcome.violations.iter().take(5) {
            println!("  invariant {}: {}", v.invariant, v.message);
        }
        if outcome.violations.len() > 5 {
            println!("  ... and {} more", outcome.violations.len() - 5);
        }
        println!("  reproduce: {}", outcome.repro_command());
    }

    /// How a sweep runs and reports.
    pub struct SweepOptions {
        pub jobs: Option<usize>,
        pub crdb: usize,
        pub out: std::path::PathBuf,
        pub json: bool,
        pub shard: Option<Shard>,
        /// Where to write the JSON summary.
        pub summary: Option<std::path::PathBuf>,
    }

    /// A one-line handle on a failure: everything needed to replay it, and the build that saw it.
    pub fn token(outcome: &RunOutcome) -> String {
        format!(
            "tb1:{}:{}:{}:{}:{}:{}",
            outcome.scenario,
            outcome.seed,
            outcome.bug.as_deref().unwrap_or("none"),
            outcome.crdb_nodes,
            env!("TESTBED_GIT_COMMIT"),
            env!("TESTBED_RUSTC_VERSION"),
        )
    }

    /// A progress bar of `len` seeds (hidden under `--json`).
    fn seed_bar(len: u64, hidden: bool) -> indicatif::ProgressBar {
        let bar = indicatif::ProgressBar::new(len);
        bar.set_style(
            indicatif::ProgressStyle::with_template("{prefix}{bar:40} {pos}/{len} seeds {per_sec} {msg} eta {eta}")
                .expect("a valid template"),
        );
        if hidden {
            bar.set_draw_target(indicatif::ProgressDrawTarget::hidden());
        }
        bar
    }

    /// Runs the chosen seeds of `scenario` (the shard `shard` of `from..from + seeds`) on `jobs`
    /// threads, printing each failure as it comes (its invariant, repro command and token) and
    /// writing its history under `out`; returns the summary.
    #[allow(clippy::too_many_arguments)]
    fn run_sweep(
        scenario: Scenario,
        bug: Option<Bug>,
        from: u64,
        seeds: u64,
        shard: Shard,
        jobs: usize,
        crdb: usize,
        out: &Path,
        bar: &indicatif::ProgressBar,
    ) -> SweepSummary {
        let chosen: Vec<u64> = shard.seeds(from, seeds).collect();
        let total = chosen.len() as u64;
        let failures_so_far = std::sync::atomic::AtomicU64::new(0);
        let started = std::time::Instant::now();
        let template = RunRequest { crdb_nodes: crdb, ..RunRequest::new(scenario, from, bug) };
        let outcomes = run::sweep(template, chosen.into_iter(), jobs, &|outcome| {
            if !outcome.passed() {
                let failed = failures_so_far.fetch_add(1, std::sync::atomic::Ordering::Relaxed) + 1;
                bar.set_message(format!("{failed} failures"));
                let bug = outcome.bug.as_ref().map(|b| format!("-{b}")).unwrap_or_default();
                let path = out.join(format!("{}-seed{}{bug}.history.jsonl", outcome.scenario, outcome.seed));
                let written =
                    std::fs::create_dir_all(out).and_then(|()| std::fs::write(&path, to_jsonl(&outcome.history)));
                bar.suspend(|| {
                    print_failure(outcome);
                    println!("  token: {}", token(outcome));
                    match &written {
                        Ok(()) => println!("  history: {}", path.display()),
                        Err(e) => eprintln!("  cannot write {}: {e}", path.display()),
                    }
                    let _ = std::io::stdout().flush();
                });
            }
            bar.inc(1);
        });
        let failures: Vec<&RunOutcome> = outcomes.iter().filter(|o| !o.passed()).collect();
        let secs = started.elapsed().as_secs_f64();
        SweepSummary {
            scenario: scenario.name().to_string(),
            bug: bug.map(|b| b.name().to_string()),
            crdb_nodes: crdb,
            from,
            count: seeds,
            shard_count: shard.of,
            shards: vec![shard.index],
            seeds: total,
            failures: failures
                .iter()
                .map(|o| Failure {
                    seed: o.seed,
                    invariants: o.violations.iter().map(|v| v.invariant.clone()).collect(),
                    token: token(o),
                    reproduce: o.repro_command(),
                })
                .collect(),
            coverage: run::sum_marks(&outcomes),
            outcomes: run::sum_outcomes(&outcomes),
            trace_digest: summary::digest(outcomes.iter().map(|o| o.trace_hash)),
            simulated_ms: outcomes.iter().map(|o| o.simulated_ms).sum::<u64>(),
            simulated_seconds: outcomes.iter().map(|o| o.simulated_ms).sum::<u64>() as f64 / 1000.0,
            seconds: secs,
            shard_seconds: secs,
            seeds_per_second: total as f64 / secs.max(1e-9),
            peak_rss_mb: super::peak_rss_mb(),
            commit: format!("{}:{}", env!("TESTBED_GIT_COMMIT"), env!("TESTBED_RUSTC_VERSION")),
        }
    }

    fn jobs_of(jobs: Option<usize>) -> Result<usize, u8> {
        if jobs == Some(0) {
            eprintln!("error: --jobs must be at least 1");
            return Err(EXIT_USAGE);
        }
        Ok(jobs.unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get())))
    }

    /// The summary's file is made before any seed runs: a path that cannot be written is bad
    /// usage, found before the sweep rather than after it.
    fn summary_writable(path: Option<&Path>) -> Result<(), u8> {
        if let Some(path) = path
            && let Err(e) = std::fs::write(path, "")
        {
            eprintln!("error: cannot write the summary to {}: {e}", path.display());
            return Err(EXIT_USAGE);
        }
        Ok(())
    }

    fn write_summary(path: Option<&Path>, text: &str) -> Result<(), u8> {
        if let Some(path) = path
            && let Err(e) = std::fs::write(path, format!("{text}\n"))
        {
            eprintln!("error: cannot write the summary to {}: {e}", path.display());
            return Err(EXIT_USAGE);
        }
        Ok(())
    }

    pub fn sweep_cmd(scenario: &str, seeds: u64, from: u64, bug: Option<&str>, options: &SweepOptions) -> u8 {
        let (scenario, bug) = match parse(scenario, bug) {
            Ok(parsed) => parsed,
            Err(code) => return code,
        };
        let jobs = match jobs_of(options.jobs) {
            Ok(jobs) => jobs,
            Err(code) => return code,
        };
        if from.checked_add(seeds).is_none() {
            eprintln!("error: --from {from} plus --seeds {seeds} is past the last seed ({})", u64::MAX);
            return EXIT_USAGE;
        }
        if let Err(code) = summary_writable(options.summary.as_deref()) {
            return code;
        }
        let shard = options.shard.unwrap_or(Shard::WHOLE);
        let bar = seed_bar(shard.seeds(from, seeds).count() as u64, options.json);
        let summary = run_sweep(scenario, bug, from, seeds, shard, jobs, options.crdb, &options.out, &bar);
        bar.finish_and_clear();
        let text = serde_json::to_string(&summary).expect("a summary serializes");
        if let Err(code) = write_summary(options.summary.as_deref(), &text) {
            return code;
        }
        if !options.json {
            println!("{}", super::coverage_line(&summary.coverage));
            println!("{}", super::outcomes_line(&summary.outcomes, scenario.required_outcomes()));
            println!("{} seeds in {:.1}s ({:.1} seeds/s)", summary.seeds, summary.seconds, summary.seeds_per_second);
        }
        println!("{} seeds, {} failures", summary.seeds, summary.failures.len());
        if options.json {
            println!("{text}");
        }
        if summary.failures.is_empty() { EXIT_OK } else { EXIT_VIOLATION }
    }

    /// Seeds a time-budgeted soak runs between two looks at the clock: the first chunk of a
    /// scenario is the smallest (a spent budget is overrun by at most that many seeds per
    /// scenario), each next one twice the last, up to the largest.
    pub const SOAK_CHUNK_SEEDS_MIN: u64 = 50;
    pub const SOAK_CHUNK_SEEDS_MAX: u64 = 500;

    /// How a long sweep runs and reports.
    pub struct SoakOptions {
        /// Scenario names; empty: every scenario.
        pub scenarios: Vec<String>,
        /// Seeds per scenario (default: each scenario's soak size).
        pub seeds: Option<u64>,
        /// A time budget for the whole soak, shared out over the scenarios not yet run.
        pub budget: Option<std::time::Duration>,
        pub from: u64,
        /// A planted bug switched on in every scenario.
        pub bug: Option<String>,
        pub sweep: SweepOptions,
    }

    /// `soak`: long sweeps of every scenario (or the ones named), a row per scenario as it ends.
    pub fn soak_cmd(options: &SoakOptions) -> u8 {
        let bug = match options.bug.as_deref().map(str::parse::<Bug>).transpose() {
            Ok(bug) => bug,
            Err(e) => {
                eprintln!("error: {e}");
                return EXIT_USAGE;
            }
        };
        let mut scenarios = Vec::new();
        for name in &options.scenarios {
            match parse(name, None) {
                Ok((scenario, _)) if !scenarios.contains(&scenario) => scenarios.push(scenario),
                Ok(_) => {}
                Err(code) => return code,
            }
        }
        if scenarios.is_empty() {
            scenarios = Scenario::all();
        }
        let jobs = match jobs_of(options.sweep.jobs) {
            Ok(jobs) => jobs,
            Err(code) => return code,
        };
        if options.budget.is_some() && options.sweep.shard.is_some() {
            eprintln!("error: --for cannot be sharded: shards of one soak must run the same seeds (use --seeds)");
            return EXIT_USAGE;
        }
        if options.seeds == Some(0) || options.budget.is_some_and(|b| b.is_zero()) {
            eprintln!("error: --seeds and --for must be more than zero");
            return EXIT_USAGE;
        }
        let most = scenarios.iter().map(|s| options.seeds.unwrap_or(s.soak_seeds())).max().unwrap_or(0);
        if options.from.checked_add(most).is_none() {
            eprintln!("error: --from {} plus {most} seeds is past the last seed ({})", options.from, u64::MAX);
            return EXIT_USAGE;
        }
        if let Err(code) = summary_writable(options.sweep.summary.as_deref()) {
            return code;
        }
        let shard = options.sweep.shard.unwrap_or(Shard::WHOLE);
        let started = std::time::Instant::now();
        let quiet = options.sweep.json;
        if !quiet {
            println!("{:<28} {:>8} {:>9} {:>10}", "scenario", "seeds", "failures", "seeds/s");
        }
        let mut done: Vec<SweepSummary> = Vec::new();
        for (i, &scenario) in scenarios.iter().enumerate() {
            let seeds = options.seeds.unwrap_or(scenario.soak_seeds());
            let summary = match options.budget {
                None => {
                    let bar = seed_bar(shard.seeds(options.from, seeds).count() as u64, quiet);
                    bar.set_prefix(format!("{} ", scenario.name()));
                    let run = run_sweep(
                        scenario,
                        bug,
                        options.from,
                        seeds,
                        shard,
                        jobs,
                        options.sweep.crdb,
                        &options.sweep.out,
                        &bar,
                    );
                    bar.finish_and_clear();
                    run
                }
                Some(budget) => {
                    // This scenario's share: what is left of the budget over the scenarios left.
                    let left = budget.saturating_sub(started.elapsed());
                    let share = left / (scenarios.len() - i) as u32;
                    let until = std::time::Instant::now() + share;
                    let capped = options.seeds.unwrap_or(u64::MAX - options.from);
                    let bar = seed_bar(0, quiet);
                    bar.set_prefix(format!("{} ", scenario.name()));
                    let mut run: Option<SweepSummary> = None;
                    let mut size = SOAK_CHUNK_SEEDS_MIN;
                    loop {
                        let from = run.as_ref().map_or(options.from, |r| r.from + r.count);
                        let ran = from - options.from;
                        let chunk = size.min(capped - ran);
                        size = (size * 2).min(SOAK_CHUNK_SEEDS_MAX);
                        if chunk == 0 || (run.is_some() && std::time::Instant::now() >= until) {
                            break;
                        }
                        bar.inc_length(chunk);
                        let next = run_sweep(
                            scenario,
                            bug,
                            from,
                            chunk,
                            Shard::WHOLE,
                            jobs,
                            options.sweep.crdb,
                            &options.sweep.out,
                            &bar,
                        );
                        match &mut run {
                            Some(r) => r.absorb(next),
                            None => run = Some(next),
                        }
                    }
                    bar.finish_and_clear();
                    run.expect("at least one chunk ran")
                }
            };
            if !quiet {
                println!(
                    "{:<28} {:>8} {:>9} {:>10.1}",
                    summary.scenario,
                    summary.seeds,
                    summary.failures.len(),
                    summary.seeds_per_second
                );
                let _ = std::io::stdout().flush();
            }
            done.push(summary);
        }
        let soak = summary::SoakSummary { soak: done };
        let text = serde_json::to_string(&soak).expect("a summary serializes");
        if let Err(code) = write_summary(options.sweep.summary.as_deref(), &text) {
            return code;
        }
        let seeds: u64 = soak.soak.iter().map(|s| s.seeds).sum();
        let failures: Vec<&Failure> = soak.soak.iter().flat_map(|s| &s.failures).collect();
        if !quiet {
            for failure in &failures {
                println!("FAIL seed {}: {}", failure.seed, failure.invariants.join(", "));
                println!("  reproduce: {}", failure.reproduce);
                println!("  token: {}", failure.token);
            }
            let secs = started.elapsed().as_secs_f64();
            println!(
                "{} scenarios, {seeds} seeds in {secs:.1}s ({:.1} seeds/s)",
                soak.soak.len(),
                seeds as f64 / secs.max(1e-9)
            );
        }
        println!("{seeds} seeds, {} failures", failures.len());
        if quiet {
            println!("{text}");
        }
        if failures.is_empty() { EXIT_OK } else { EXIT_VIOLATION }
    }

    /// `name max V` for each series.
    fn summarize(series: &[testbed::sim::metrics::Series]) -> String {
        let parts: Vec<String> = series.iter().map(|s| format!("{} max {}", s.name, s.max())).collect();
        parts.join(", ")
    }

    pub fn repro_token(token: &str, history: &Path) -> u8 {
        let parts: Vec<&str> = token.split(':').collect();
        let (Some(&"tb1"), Some(scenario), Some(Ok(seed)), Some(bug), Some(Ok(crdb))) = (
            parts.first(),
            parts.get(1),
            parts.get(2).map(|s| s.parse::<u64>()),
            parts.get(3),
            parts.get(4).map(|s| s.parse::<usize>()),
        ) else {
            eprintln!("error: not a repro token: {token:?} (expected tb1:SCENARIO:SEED:BUG:NODES:COMMIT:RUSTC)");
            return EXIT_USAGE;
        };
        let (commit, rustc) = (parts.get(5).copied().unwrap_or("?"), parts.get(6).copied().unwrap_or("?"));
        if commit != env!("TESTBED_GIT_COMMIT") || rustc != env!("TESTBED_RUSTC_VERSION") {
            eprintln!(
                "warning: the token comes from commit {commit} with rustc {rustc}; this is {} with rustc {}: \
                 the run may differ",
                env!("TESTBED_GIT_COMMIT"),
                env!("TESTBED_RUSTC_VERSION")
            );
        }
        let bug = (*bug != "none").then_some(*bug);
        repro_cmd(scenario, seed, bug, history, crdb, testbed::sim::limits::Limits::default())
    }

    /// Log lines stamped with simulated time (madsim adds the node's span: `node{id name}`).
    struct SimTime;

    impl tracing_subscriber::fmt::time::FormatTime for SimTime {
        fn format_time(&self, w: &mut tracing_subscriber::fmt::format::Writer<'_>) -> std::fmt::Result {
            let nanos = testbed::sim::trace::now_nanos();
            write!(w, "{:>4}.{:06}s", nanos / 1_000_000_000, (nanos % 1_000_000_000) / 1000)
        }
    }

    pub fn shrink_cmd(scenario: &str, seed: u64, bug: Option<&str>) -> u8 {
        let (scenario, bug) = match parse(scenario, bug) {
            Ok(parsed) => parsed,
            Err(code) => return code,
        };
        let Some((original, smallest)) = run::shrink(RunRequest::new(scenario, seed, bug)) else {
            println!("seed {seed} of {} passes: nothing to shrink", scenario.name());
            return EXIT_OK;
        };
        let invariant = &original.violations[0].invariant;
        println!("invariant: {invariant}");
        println!("before: {}", original.size);
        println!("after:  {}", smallest.size);
        if let Some(v) = smallest.violations.iter().find(|v| &v.invariant == invariant) {
            println!("  {}", v.message);
        }
        println!("reproduce: {}", smallest.repro_command());
        EXIT_VIOLATION
    }

    pub fn repro_cmd(
        scenario: &str,
        seed: u64,
        bug: Option<&str>,
        history: &Path,
        crdb: usize,
        limits: testbed::sim::limits::Limits,
    ) -> u8 {
        let (scenario, bug) = match parse(scenario, bug) {
            Ok(parsed) => parsed,
            Err(code) => return code,
        };
        // The services' own logs, on stderr, with simulated time and node on every line.
        let filter = tracing_subscriber::EnvFilter::try_from_default_env()
            .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
        let _ = tracing_subscriber::fmt()
            .with_timer(SimTime)
            .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
            .with_env_filter(filter)
            .with_writer(std::io::stderr)
            .try_init();
        let outcome = run::run_seed(RunRequest {
            keep_trace: true,
            crdb_nodes: crdb,
            limits,
            ..RunRequest::new(scenario, seed, bug)
        });
        for line in &outcome.trace {
            println!("{line}");
        }
        if let Err(e) = std::fs::write(history, to_jsonl(&outcome.history)) {
            eprintln!("error: cannot write {}: {e}", history.display());
            return EXIT_USAGE;
        }
        println!("history: {} ({} events)", history.display(), outcome.history.len());
        print_fault_plan(&outcome);
        let faults = history.with_extension("faults.json");
        let page = history.with_file_name("timeline.html");
        let metrics = history.with_extension("metrics.json");
        let written = std::fs::write(&faults, serde_json::to_string_pretty(&outcome.faults).expect("faults serialize"))
            .and_then(|()| {
                std::fs::write(&metrics, serde_json::to_string(&outcome.metrics).expect("metrics serialize"))
            });
        if written.is_ok() {
            println!("metrics: {} ({})", metrics.display(), summarize(&outcome.metrics));
        }
        let messages: Vec<String> = outcome.violations.iter().map(|v| v.message.clone()).collect();
        if written.is_ok() && super::timeline(history, Some(&faults), Some(&metrics), &messages, &page) != EXIT_OK {
            eprintln!("warning: no timeline written");
        }
        if outcome.passed() {
            println!("result: pass");
        } else {
            print_failure(&outcome);
        }
        println!("trace hash: {:016x}", outcome.trace_hash);
        if outcome.passed() { EXIT_OK } else { EXIT_VIOLATION }
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn bench_sections_are_replaced_in_place() {
        let file = std::env::temp_dir().join(format!("bench-section-{}.md", std::process::id()));
        std::fs::write(&file, "# B\n\n<!-- bench:x -->\nold\n<!-- /bench:x -->\ntail\n").unwrap();
        super::write_section(&file, "x", "new\n").unwrap();
        super::write_section(&file, "y", "other\n").unwrap();
        let text = std::fs::read_to_string(&file).unwrap();
        assert_eq!(
            text,
            "# B\n\n<!-- bench:x -->\nnew\n<!-- /bench:x -->\ntail\n\n<!-- bench:y -->\nother\n<!-- /bench:y -->\n"
        );
        let _ = std::fs::remove_file(file);
    }
}
