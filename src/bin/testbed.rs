//! `testbed`: the command line of the simulation testbed.
//!
//! In both builds: `check` (linearizability of history files) and `list`. In the simulation
//! build (`cargo testbed ...`) also `sweep` and `repro`. Exit codes are typed: 0 clean, 1 a
//! violation, 2 usage, 3 unknown (a check's budget spent), 4 nondeterminism.

use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// Exit code: every run clean.
pub const EXIT_OK: u8 = 0;
/// Exit code: an invariant was violated.
pub const EXIT_VIOLATION: u8 = 1;
/// Exit code: bad usage.
pub const EXIT_USAGE: u8 = 2;
/// Exit code: the same seed gave two different traces.
pub const EXIT_NONDETERMINISM: u8 = 4;

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
        /// Worker threads (default: the number of cores).
        #[arg(long)]
        jobs: Option<usize>,
        /// CockroachDB nodes in the simulated cluster.
        #[arg(long, default_value_t = 3, value_parser = crdb_nodes)]
        crdb_nodes: usize,
        /// Where the histories of failing seeds are written (only failing seeds keep theirs).
        #[arg(long, default_value = "target/testbed/failures")]
        out: std::path::PathBuf,
    },
    /// Replay one seed: print its trace and write its history; the last line is the trace hash.
    #[cfg(madsim)]
    Repro {
        #[arg(long)]
        scenario: String,
        #[arg(long)]
        seed: u64,
        #[arg(long)]
        bug: Option<String>,
        /// Where to write the history (JSON Lines).
        #[arg(long, default_value = "history.jsonl")]
        history: std::path::PathBuf,
        /// CockroachDB nodes in the simulated cluster.
        #[arg(long, default_value_t = 3, value_parser = crdb_nodes)]
        crdb_nodes: usize,
    },
    /// List scenarios, invariants and planted bugs, one per line.
    List,
    /// Check history files for linearizability: one line per file; exit 0 when all are
    /// linearizable, 1 when any is not, 3 when any is unknown (budget spent), 2 on bad usage.
    Check {
        /// The model: bank, register, cas-register or kv.
        #[arg(long)]
        model: String,
        /// The format: jsonl, jepsen-log or kv-edn (default: from the file's extension).
        #[arg(long)]
        format: Option<String>,
        /// Search steps per file before the answer is unknown.
        #[arg(long)]
        budget: Option<u64>,
        /// History files.
        #[arg(required = true)]
        files: Vec<std::path::PathBuf>,
    },
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
        Command::Check { model, format, budget, files } => {
            let budget = budget.map_or_else(checker::Budget::default, checker::Budget::steps);
            let mut out = std::io::stdout().lock();
            let code = checker::cli::run_check_with_budget(&model, format.as_deref(), &files, budget, &mut out);
            u8::try_from(code).unwrap_or(EXIT_USAGE)
        }
        #[cfg(madsim)]
        Command::Sweep { scenario, seeds, from, bug, jobs, crdb_nodes, out } => {
            sim::sweep_cmd(&scenario, seeds, from, bug.as_deref(), jobs, crdb_nodes, &out)
        }
        #[cfg(madsim)]
        Command::Repro { scenario, seed, bug, history, crdb_nodes } => {
            sim::repro_cmd(&scenario, seed, bug.as_deref(), &history, crdb_nodes)
        }
    })
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
    lines.extend(testbed::sim::ledger::invariants::INVARIANTS.iter().map(|i| format!("invariant {i}")));
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
    eprintln!("scenarios and bugs belong to the simulation build: run `cargo testbed list`");
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

    pub fn sweep_cmd(
        scenario: &str,
        seeds: u64,
        from: u64,
        bug: Option<&str>,
        jobs: Option<usize>,
        crdb: usize,
        out: &Path,
    ) -> u8 {
        let (scenario, bug) = match parse(scenario, bug) {
            Ok(parsed) => parsed,
            Err(code) => return code,
        };
        if jobs == Some(0) {
            eprintln!("error: --jobs must be at least 1");
            return EXIT_USAGE;
        }
        let jobs = jobs.unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()));
        let started = std::time::Instant::now();
        let template = RunRequest { crdb_nodes: crdb, ..RunRequest::new(scenario, from, bug) };
        let outcomes = run::sweep(template, from..from + seeds, jobs, &|outcome| {
            if !outcome.passed() {
                print_failure(outcome);
                let bug = outcome.bug.as_ref().map(|b| format!("-{b}")).unwrap_or_default();
                let path = out.join(format!("{}-seed{}{bug}.history.jsonl", outcome.scenario, outcome.seed));
                let written =
                    std::fs::create_dir_all(out).and_then(|()| std::fs::write(&path, to_jsonl(&outcome.history)));
                match written {
                    Ok(()) => println!("  history: {}", path.display()),
                    Err(e) => eprintln!("  cannot write {}: {e}", path.display()),
                }
                let _ = std::io::stdout().flush();
            }
        });
        let failures = outcomes.iter().filter(|o| !o.passed()).count();
        let secs = started.elapsed().as_secs_f64();
        println!("{seeds} seeds in {secs:.1}s ({:.1} seeds/s)", seeds as f64 / secs.max(1e-9));
        println!("{seeds} seeds, {failures} failures");
        if failures == 0 { EXIT_OK } else { EXIT_VIOLATION }
    }

    pub fn repro_cmd(scenario: &str, seed: u64, bug: Option<&str>, history: &Path, crdb: usize) -> u8 {
        let (scenario, bug) = match parse(scenario, bug) {
            Ok(parsed) => parsed,
            Err(code) => return code,
        };
        let outcome =
            run::run_seed(RunRequest { keep_trace: true, crdb_nodes: crdb, ..RunRequest::new(scenario, seed, bug) });
        for line in &outcome.trace {
            println!("{line}");
        }
        if let Err(e) = std::fs::write(history, to_jsonl(&outcome.history)) {
            eprintln!("error: cannot write {}: {e}", history.display());
            return EXIT_USAGE;
        }
        println!("history: {} ({} events)", history.display(), outcome.history.len());
        if outcome.passed() {
            println!("result: pass");
        } else {
            print_failure(&outcome);
        }
        println!("trace hash: {:016x}", outcome.trace_hash);
        if outcome.passed() { EXIT_OK } else { EXIT_VIOLATION }
    }
}
