//! The simulation tests, all in one binary (`cargo sim`): every scenario swept over its default
//! seeds, every scenario's determinism, the pinned seeds of `seeds/`, and every planted bug
//! found within 100 seeds.
//!
//! `MADSIM_TEST_SEED` (first seed) and `MADSIM_TEST_NUM` (number of seeds) keep their madsim
//! meaning for the sweeps.

#![cfg(madsim)]

use std::path::Path;

use services::bugs::Bug;
use sim::ledger::scenario::LedgerScenario;
use sim::orders::scenario::OrdersScenario;
use sim::run::{self, RunOutcome, RunRequest};
use sim::scenarios::Scenario;
use sim::selfcheck::SelfCheck;

/// Seeds a bug sweep may take before the bug counts as not found.
const BUG_SEEDS_MAX: u64 = 100;

fn jobs() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}

fn env_u64(name: &str) -> Option<u64> {
    std::env::var(name).ok().map(|v| v.parse().unwrap_or_else(|_| panic!("{name} must be a number, got {v:?}")))
}

fn describe(failures: &[&RunOutcome]) -> String {
    failures
        .iter()
        .map(|o| {
            let first = &o.violations[0];
            format!("seed {}: {}: {}\n  reproduce: {}", o.seed, first.invariant, first.message, o.repro_command())
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// Goal: the correct build passes every seed of a scenario.
/// Method: sweep the default seeds (or MADSIM_TEST_SEED / MADSIM_TEST_NUM) over all cores.
fn sweep_clean(scenario: Scenario) {
    let from = env_u64("MADSIM_TEST_SEED").unwrap_or(0);
    let count = env_u64("MADSIM_TEST_NUM").unwrap_or(scenario.default_seeds());
    let outcomes = run::sweep(RunRequest::new(scenario, 0, None), from..from + count, jobs(), &|_| {});
    assert_eq!(outcomes.len() as u64, count);
    let failures: Vec<&RunOutcome> = outcomes.iter().filter(|o| !o.passed()).collect();
    assert!(
        failures.is_empty(),
        "{} of {count} seeds failed in {}:\n{}",
        failures.len(),
        scenario.name(),
        describe(&failures)
    );
    // A default-size sweep that never goes through one of its rare paths tests nothing there.
    if env_u64("MADSIM_TEST_NUM").is_none() && env_u64("MADSIM_TEST_SEED").is_none() {
        let marks = run::sum_marks(&outcomes);
        for mark in scenario.required_marks() {
            assert!(marks.contains_key(*mark), "{}: no seed went through {mark}; reached {marks:?}", scenario.name());
        }
        // Sometimes-assertions (ADR 10): outcomes the clients must have seen at least once.
        let seen = run::sum_outcomes(&outcomes);
        for outcome in scenario.required_outcomes() {
            assert!(
                seen.contains_key(*outcome),
                "{}: no seed reached the outcome {outcome}; reached {seen:?}",
                scenario.name()
            );
        }
    }
}

/// Goal: same seed, same run. Method: one seed twice, trace hashes compared.
fn deterministic(scenario: Scenario) {
    let seed = env_u64("MADSIM_TEST_SEED").unwrap_or(7);
    let (a, b) = run::check_determinism(RunRequest::new(scenario, seed, None));
    assert_eq!(a, b, "{} seed {seed} gave two different traces", scenario.name());
    // The hash is a fingerprint of the run: another seed gives another one.
    let other = run::run_seed(RunRequest::new(scenario, seed + 1, None)).trace_hash;
    assert_ne!(a, other, "{}: seeds {seed} and {} hashed alike", scenario.name(), seed + 1);
}

macro_rules! scenario_tests {
    ($($sweep:ident, $determinism:ident => $scenario:expr;)*) => {
        $(
            #[test]
            fn $sweep() {
                sweep_clean($scenario);
            }

            #[test]
            fn $determinism() {
                deterministic($scenario);
            }
        )*

        /// Every scenario has its pair of tests.
        #[test]
        fn every_scenario_is_tested() {
            let tested = [$($scenario),*];
            for scenario in Scenario::all() {
                assert!(tested.contains(&scenario), "{} has no tests", scenario.name());
            }
        }
    };
}

scenario_tests! {
    sweep_ledger_chaos, determinism_ledger_chaos => Scenario::Ledger(LedgerScenario::Chaos);
    sweep_crdb_one_down, determinism_crdb_one_down => Scenario::Ledger(LedgerScenario::CrdbOneDown);
    sweep_crdb_two_down, determinism_crdb_two_down => Scenario::Ledger(LedgerScenario::CrdbTwoDown);
    sweep_nats_down, determinism_nats_down => Scenario::Ledger(LedgerScenario::NatsDown);
    sweep_processor_crash, determinism_processor_crash => Scenario::Ledger(LedgerScenario::ProcessorCrash);
    sweep_read_model_rebuild, determinism_read_model_rebuild => Scenario::Ledger(LedgerScenario::Rebuild);
    sweep_partition_minority_gateway, determinism_partition_minority_gateway => Scenario::Ledger(LedgerScenario::PartitionMinorityGateway);
    sweep_concurrent_withdrawals, determinism_concurrent_withdrawals => Scenario::Ledger(LedgerScenario::ConcurrentWithdrawals);
    sweep_double_spend, determinism_double_spend => Scenario::Ledger(LedgerScenario::DoubleSpend);
    sweep_schema_evolution, determinism_schema_evolution => Scenario::Ledger(LedgerScenario::SchemaEvolution);
    sweep_api_killed_mid_request, determinism_api_killed_mid_request => Scenario::Ledger(LedgerScenario::ApiKilledMidRequest);
    sweep_flash_sale, determinism_flash_sale => Scenario::Orders(OrdersScenario::FlashSale);
    sweep_worker_crash, determinism_worker_crash => Scenario::Orders(OrdersScenario::WorkerCrash);
    sweep_redis_latency_0, determinism_redis_latency_0 => Scenario::Orders(OrdersScenario::RedisLatency(0));
    sweep_redis_latency_50, determinism_redis_latency_50 => Scenario::Orders(OrdersScenario::RedisLatency(50));
    sweep_redis_latency_100, determinism_redis_latency_100 => Scenario::Orders(OrdersScenario::RedisLatency(100));
    sweep_redis_latency_500, determinism_redis_latency_500 => Scenario::Orders(OrdersScenario::RedisLatency(500));
    sweep_kafka_down, determinism_kafka_down => Scenario::Orders(OrdersScenario::KafkaDown);
    sweep_postgres_down, determinism_postgres_down => Scenario::Orders(OrdersScenario::PostgresDown);
    sweep_api_killed, determinism_api_killed => Scenario::Orders(OrdersScenario::ApiKilled);
    sweep_redis_restart, determinism_redis_restart => Scenario::Orders(OrdersScenario::RedisRestart);
    sweep_redis_oom, determinism_redis_oom => Scenario::Orders(OrdersScenario::RedisOom);
    sweep_kafka_lag, determinism_kafka_lag => Scenario::Orders(OrdersScenario::KafkaLag);
    sweep_redis_pg_mismatch, determinism_redis_pg_mismatch => Scenario::Orders(OrdersScenario::RedisPgMismatch);
    sweep_crdb_self_check, determinism_crdb_self_check => Scenario::SelfCheck(SelfCheck::Crdb);
    sweep_jetstream_self_check, determinism_jetstream_self_check => Scenario::SelfCheck(SelfCheck::JetStream);
    sweep_kafka_self_check, determinism_kafka_self_check => Scenario::SelfCheck(SelfCheck::Kafka);
    sweep_redis_self_check, determinism_redis_self_check => Scenario::SelfCheck(SelfCheck::Redis);
    sweep_postgres_self_check, determinism_postgres_self_check => Scenario::SelfCheck(SelfCheck::Postgres);
}

/// One line of a `seeds/*.tsv` file.
struct Pinned {
    file: String,
    scenario: Scenario,
    seed: u64,
    bug: Option<Bug>,
    expect: String,
}

fn pinned() -> Vec<Pinned> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("seeds");
    let mut files: Vec<_> = std::fs::read_dir(&dir).expect("seeds/ exists").map(|e| e.unwrap().path()).collect();
    files.sort();
    let mut out = Vec::new();
    for path in files.into_iter().filter(|p| p.extension().is_some_and(|e| e == "tsv")) {
        let name = path.file_stem().unwrap().to_string_lossy().to_string();
        let scenario = Scenario::from_name(&name).unwrap_or_else(|| panic!("{name}.tsv names no scenario"));
        let text = std::fs::read_to_string(&path).unwrap();
        for line in text.lines().skip(1).filter(|l| !l.trim().is_empty() && !l.starts_with('#')) {
            let cols: Vec<&str> = line.split('\t').collect();
            assert!(cols.len() >= 3, "{name}.tsv: bad line {line:?}");
            let bug = match cols[1] {
                "none" => None,
                b => Some(b.parse::<Bug>().unwrap_or_else(|e| panic!("{name}.tsv: {e}"))),
            };
            let expect = cols[2].to_string();
            assert!(
                expect == "pass" || sim::verdict::INVARIANTS.contains(&expect.as_str()),
                "{name}.tsv: unknown expectation {expect}"
            );
            out.push(Pinned { file: name.clone(), scenario, seed: cols[0].parse().expect("seed"), bug, expect });
        }
    }
    out
}

/// Goal: every seed that ever exposed a bug still does, with the same invariant, and the
/// correct build passes it.
#[test]
fn pinned_seeds() {
    let pins = pinned();
    assert!(!pins.is_empty());
    for pin in &pins {
        let outcome = run::run_seed(RunRequest::new(pin.scenario, pin.seed, pin.bug));
        if pin.expect == "pass" {
            assert!(outcome.passed(), "{}: seed {} should pass: {:?}", pin.file, pin.seed, outcome.violations);
        } else {
            assert!(
                outcome.violations.iter().any(|v| v.invariant == pin.expect),
                "{}: seed {} with {:?} should break {}, got {:?}",
                pin.file,
                pin.seed,
                pin.bug,
                pin.expect,
                outcome.violations
            );
        }
        if pin.bug.is_some() {
            let correct = run::run_seed(RunRequest::new(pin.scenario, pin.seed, None));
            assert!(correct.passed(), "{}: seed {} fails without a bug: {:?}", pin.file, pin.seed, correct.violations);
        }
    }
}

/// Goal: the five-node cluster option works: the chaos scenario passes on it too.
#[test]
fn five_node_cluster_chaos() {
    let template = RunRequest { crdb_nodes: 5, ..RunRequest::new(Scenario::Ledger(LedgerScenario::Chaos), 0, None) };
    let outcomes = run::sweep(template, 0..4, jobs(), &|_| {});
    let failures: Vec<&RunOutcome> = outcomes.iter().filter(|o| !o.passed()).collect();
    assert!(failures.is_empty(), "{}", describe(&failures));
}

/// Goal: every coverage mark is required by some scenario's default sweep.
#[test]
fn every_coverage_mark_is_required_somewhere() {
    for (mark, _) in services::bugs::coverage::MARKS {
        assert!(
            Scenario::all().iter().any(|s| s.required_marks().contains(&mark)),
            "no scenario requires the coverage mark {mark}"
        );
    }
}

/// Goal: every outcome of `verdict::OUTCOMES` is required by some scenario's default sweep.
#[test]
fn every_outcome_is_required_somewhere() {
    for (outcome, _) in sim::verdict::OUTCOMES {
        assert!(
            Scenario::all().iter().any(|s| s.required_outcomes().contains(&outcome)),
            "no scenario requires the outcome {outcome}"
        );
    }
}

/// Goal: each planted bug is found by a sweep of at most 100 seeds of its scenario, and a seed
/// that finds it is pinned in `seeds/`.
#[test]
fn every_planted_bug_is_found_and_pinned() {
    let pins = pinned();
    for bug in Bug::ALL {
        let scenario = Scenario::exposing(bug);
        let found =
            (0..BUG_SEEDS_MAX).find(|seed| !run::run_seed(RunRequest::new(scenario, *seed, Some(bug))).passed());
        assert!(found.is_some(), "{bug} not found in {BUG_SEEDS_MAX} seeds of {}", scenario.name());
        assert!(
            pins.iter().any(|p| p.bug == Some(bug) && p.scenario == scenario && p.expect != "pass"),
            "{bug}: no seed pinned in seeds/{}.tsv",
            scenario.name()
        );
    }
}

/// Goal: the simulated CockroachDB and PostgreSQL keep the ports' contracts, with the very
/// bodies the in-memory and real adapters are held to.
#[test]
fn simulated_adapters_keep_the_contracts() {
    use sim::ledger::crdb::{self, CrdbCluster, CrdbFaultRates, SimEventStore};
    use sim::ledger::readdb::{self, SimReadModel};
    let runtime = madsim::runtime::Runtime::with_seed_and_config(1, madsim::Config::default());
    let result = runtime.block_on(async {
        let handle = madsim::runtime::Handle::current();
        let cluster = CrdbCluster::new(3, CrdbFaultRates { retry_on_contention: 0.0, ambiguous_commit: 0.0 });
        for index in 0..3 {
            let cluster = cluster.clone();
            handle
                .create_node()
                .ip(crdb::crdb_addr(index).ip())
                .init(move || crdb::serve_node(index, cluster.clone()))
                .build();
        }
        let state = readdb::ReadDbState::default();
        handle.create_node().ip(readdb::READ_DB_ADDR.ip()).init(move || readdb::serve(state.clone())).build();
        let client = handle.create_node().ip([10, 0, 9, 1].into()).build();
        client
            .spawn(async {
                madsim::time::sleep(std::time::Duration::from_millis(100)).await;
                let gateways = (0..3).map(crdb::crdb_addr).collect();
                let store = SimEventStore::connect(gateways).await;
                services::ledger::contract::event_store(&store, "sim", 1 << 64).await?;
                let read = SimReadModel::connect().await;
                services::ledger::contract::read_model(&read, &store, "sim", 2 << 64).await
            })
            .await
            .unwrap()
    });
    result.unwrap();
}

/// Goal: every scenario has its file in the regression corpus.
#[test]
fn every_scenario_has_a_seeds_file() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("seeds");
    for scenario in Scenario::all() {
        assert!(dir.join(format!("{}.tsv", scenario.name())).exists(), "seeds/{}.tsv is missing", scenario.name());
    }
}

/// Goal: a change to the command line shows up in review.
/// Method: snapshots of the help of every subcommand.
#[test]
fn cli_help_snapshots() {
    for args in [
        &["--help"][..],
        &["sweep", "--help"],
        &["repro", "--help"],
        &["check", "--help"],
        &["list", "--help"],
        &["merge", "--help"],
        &["soak", "--help"],
    ] {
        let output =
            std::process::Command::new(env!("CARGO_BIN_EXE_testbed")).args(args).output().expect("testbed runs");
        assert!(output.status.success(), "{args:?}");
        let name = format!("help_{}", args.join("_").replace("--", ""));
        insta::assert_snapshot!(name, String::from_utf8_lossy(&output.stdout));
    }
}

/// Goal: shrinking finds a smaller run that breaks the same invariant.
/// Method: shrink a pinned failure; the result must be smaller in clients, operations or faults,
/// fail the same way, and replay to the same failure from its limits.
#[test]
fn shrink_finds_a_smaller_failing_run() {
    let request = RunRequest::new(Scenario::Ledger(LedgerScenario::Chaos), 0, Some(Bug::RetryWithoutKey));
    let (original, smallest) = run::shrink(request).expect("the pinned seed fails");
    let invariant = &original.violations[0].invariant;
    let size = |o: &RunOutcome| (o.size.clients, o.size.ops, o.size.faults);
    assert!(size(&smallest) < size(&original), "{:?} is not smaller than {:?}", smallest.size, original.size);
    assert!(smallest.violations.iter().any(|v| &v.invariant == invariant));
    let replay = run::run_seed(RunRequest { limits: smallest.limits, ..request });
    assert_eq!(replay.trace_hash, smallest.trace_hash, "the shrunk run replays exactly from its limits");
}

/// Goal: a behaviour change in any scenario shows up in review.
/// Method: one snapshot of, for a fixed seed of every scenario, its verdict, size, event count
/// and trace digest.
#[test]
fn scenario_digests_snapshot() {
    let mut table = String::new();
    for scenario in Scenario::all() {
        let o = run::run_seed(RunRequest::new(scenario, 1, None));
        let verdict = if o.passed() { "pass".to_string() } else { o.violations[0].invariant.clone() };
        table.push_str(&format!(
            "{:<28} seed 1  {:<6} {:>3} clients {:>4} ops {:>3} faults {:>5} events  trace {:016x} ({} lines)\n",
            scenario.name(),
            verdict,
            o.size.clients,
            o.size.ops,
            o.size.faults,
            o.events,
            o.trace_hash,
            o.trace_lines
        ));
    }
    insta::assert_snapshot!("scenario_digests", table);
}

/// Runs the testbed CLI; returns its exit code and stdout.
fn testbed(args: &[&str]) -> (i32, String) {
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_testbed")).args(args).output().expect("testbed runs");
    (output.status.code().unwrap_or(-1), String::from_utf8_lossy(&output.stdout).into_owned())
}

fn read_summary(path: &Path) -> sim::summary::SweepSummary {
    serde_json::from_str(&std::fs::read_to_string(path).expect("summary written")).expect("a summary")
}

/// Goal: a sweep cut into shards on separate machines runs exactly the seeds of the unsharded
/// sweep, none twice, and their merged report is the unsharded one.
/// Method: one sweep of a planted bug that fails on some seeds, then the same sweep as 3 shards,
/// each a separate `testbed sweep --shard I/3` process started side by side; `testbed merge`
/// joins their summaries. The merged seeds, failures (with tokens), coverage marks and trace
/// digest (the sum of every run's trace hash: a seed run twice or left out changes it) must
/// equal the unsharded sweep's. A merge missing a shard exits 3 and names it; a shard given
/// twice is refused.
#[test]
fn shards_merge_to_the_unsharded_sweep() {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("shards");
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let path = |name: &str| dir.join(name).display().to_string();
    let sweep =
        ["sweep", "--scenario", "flash-sale", "--bug", "non-atomic-stock-check", "--seeds", "46", "--from", "7"];
    let whole_file = path("whole.json");
    let (code, out) = testbed(&[&sweep[..], &["--jobs", "1", "--out", &path("f"), "--summary", &whole_file]].concat());
    let whole = read_summary(Path::new(&whole_file));
    assert_eq!(code, 1, "the bug fails some of the seeds: {out}");
    assert!(!whole.failures.is_empty() && whole.failures.len() < 46, "{} failures", whole.failures.len());
    let shards: Vec<String> = (0..3).map(|i| path(&format!("shard-{i}.json"))).collect();
    let children: Vec<_> = (0..3)
        .map(|i| {
            let shard = format!("{i}/3");
            std::process::Command::new(env!("CARGO_BIN_EXE_testbed"))
                .args(sweep)
                .args(["--jobs", "1", "--out", &path("f"), "--shard", &shard, "--summary", &shards[i]])
                .stdout(std::process::Stdio::null())
                .spawn()
                .expect("testbed starts")
        })
        .collect();
    for mut child in children {
        let code = child.wait().expect("shard ends").code();
        assert!(matches!(code, Some(0 | 1)), "a shard ends clean or with violations, not {code:?}");
    }
    for (i, shard) in shards.iter().enumerate() {
        let s = read_summary(Path::new(shard));
        assert_eq!(s.shard(), Some(sim::summary::Shard { index: i as u64, of: 3 }));
        assert_eq!(s.seeds, if i == 0 { 16 } else { 15 }, "46 seeds in 3 shards: 16, 15, 15");
    }
    let merged = path("merged.json");
    let (code, out) = testbed(&["merge", &shards[2], &shards[0], &shards[1], "--out", &merged]);
    assert_eq!(code, 1, "a seed failed, so the merge fails: {out}");
    for failure in &whole.failures {
        assert!(out.contains(&failure.reproduce), "the merge prints every repro command: {out}");
    }
    let merged = read_summary(Path::new(&merged));
    assert!(merged.complete());
    assert_eq!(merged.verdict(), whole.verdict(), "the merged report equals the unsharded one");
    assert_eq!(merged.seeds, 46);

    let (code, out) = testbed(&["merge", &shards[0], &shards[2]]);
    assert_eq!(code, 3, "a missing shard: {out}");
    assert!(out.contains("shards 1 of 3 are missing"), "{out}");
    let (code, _) = testbed(&["merge", &shards[0], &shards[0], &shards[1], &shards[2]]);
    assert_eq!(code, 2, "a shard given twice is refused");
    let (code, _) = testbed(&["merge", &whole_file, &shards[0]]);
    assert_eq!(code, 2, "a summary of another sweep (unsharded) is refused");
}

/// Goal: the long sweeps run as issue 18 asks: a row per scenario (scenario, seeds, failures,
/// seeds/s), every failure's repro command and token, exit 1 on a failure; sharded, their
/// summaries merge scenario by scenario into the unsharded soak's verdicts.
/// Method: a clean soak of two scenarios, whole and as 2 shards; then `merge`; then a soak with
/// a planted bug; then bad usage.
#[test]
fn soak_rows_shards_and_merge() {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("soak");
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let path = |name: &str| dir.join(name).display().to_string();
    let soak = ["soak", "--scenario", "double-spend", "--scenario", "redis-pg-mismatch", "--seeds", "9", "--from", "5"];
    let whole = path("whole.json");
    let (code, out) = testbed(&[&soak[..], &["--jobs", "1", "--summary", &whole]].concat());
    assert_eq!(code, 0, "{out}");
    for scenario in ["double-spend", "redis-pg-mismatch"] {
        let row =
            out.lines().find(|l| l.starts_with(scenario)).unwrap_or_else(|| panic!("no row for {scenario}: {out}"));
        let cells: Vec<&str> = row.split_whitespace().collect();
        assert_eq!(&cells[1..3], ["9", "0"], "{row}");
    }
    assert!(out.contains("18 seeds, 0 failures"), "{out}");
    let whole: sim::summary::SoakSummary = serde_json::from_str(&std::fs::read_to_string(&whole).unwrap()).unwrap();
    let shards: Vec<String> = (0..2).map(|i| path(&format!("s{i}.json"))).collect();
    for (i, file) in shards.iter().enumerate() {
        let (code, out) =
            testbed(&[&soak[..], &["--jobs", "1", "--shard", &format!("{i}/2"), "--summary", file]].concat());
        assert_eq!(code, 0, "{out}");
    }
    let merged = path("merged.json");
    let (code, out) = testbed(&["merge", &shards[1], &shards[0], "--out", &merged]);
    assert_eq!(code, 0, "{out}");
    let merged: sim::summary::SoakSummary = serde_json::from_str(&std::fs::read_to_string(&merged).unwrap()).unwrap();
    let verdicts = |s: &sim::summary::SoakSummary| s.soak.iter().map(|x| x.verdict()).collect::<Vec<_>>();
    assert_eq!(verdicts(&merged), verdicts(&whole), "the merged soak equals the unsharded one");
    let (code, out) = testbed(&["merge", &shards[0]]);
    assert_eq!(code, 3, "a missing shard: {out}");
    // A failure: a planted bug that seed 3 exposes (seeds 0-2 do not).
    let (code, out) = testbed(&[
        "soak",
        "--scenario",
        "flash-sale",
        "--bug",
        "non-atomic-stock-check",
        "--seeds",
        "4",
        "--from",
        "0",
        "--out",
        &path("f"),
    ]);
    assert_eq!(code, 1, "{out}");
    assert!(
        out.contains("reproduce: cargo testbed repro --scenario flash-sale --seed 3 --bug non-atomic-stock-check"),
        "{out}"
    );
    assert!(out.contains("token: tb1:flash-sale:3:non-atomic-stock-check:"), "{out}");
    assert_eq!(testbed(&["soak", "--seeds", "0"]).0, 2, "zero seeds is bad usage");
    assert_eq!(testbed(&["soak", "--for", "1m", "--shard", "0/2"]).0, 2, "a time budget cannot be sharded");
    assert_eq!(testbed(&["soak", "--scenario", "nope"]).0, 2, "an unknown scenario");
}

/// Goal: a person replaying a seed sees the metrics an operator would (issue 11): `repro`
/// writes them beside the history and the timeline charts them under the lanes.
/// Method: replay nats-down seed 1; the read-model lag and the outbox backlog climb during the
/// outage and end at 0; the page holds a chart per series.
#[test]
fn repro_writes_metrics_and_the_timeline_draws_them() {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("repro-metrics");
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let history = dir.join("h.jsonl");
    let (code, out) =
        testbed(&["repro", "--scenario", "nats-down", "--seed", "1", "--history", history.to_str().unwrap()]);
    assert_eq!(code, 0, "{out}");
    let series: Vec<sim::metrics::Series> =
        serde_json::from_str(&std::fs::read_to_string(dir.join("h.metrics.json")).expect("metrics written")).unwrap();
    let names: Vec<&str> = series.iter().map(|s| s.name.as_str()).collect();
    assert_eq!(names, ["outbox_backlog", "read_model_lag", "error_rate"]);
    for s in &series[..2] {
        assert!(s.max() > 10.0, "{} climbs during the outage: max {}", s.name, s.max());
        assert_eq!(s.points.last().map(|p| p.1), Some(0.0), "{} ends at 0", s.name);
    }
    let page = std::fs::read_to_string(dir.join("timeline.html")).expect("timeline written");
    assert_eq!(page.matches("<polyline").count(), 3, "one chart per series");
    assert!(page.contains("read_model_lag") && page.contains("outbox_backlog"));
}
