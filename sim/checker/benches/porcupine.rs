//! Benchmark on porcupine's reference histories: for each of the 102 etcd logs and the 6 kv
//! histories, the number of operations, the verdict, and the minimum time over several runs
//! (single-threaded) to check it and, separately, to parse it; then the etcd and kv totals.
//!
//! Run: `CARGO_TARGET_DIR=/work/checker-target nice cargo bench -p checker --bench porcupine`.
//! The reference folder is found like the verdict test does (`TESTBED_PORCUPINE_DIR`).

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use checker::read::Format;
use checker::{Budget, History, ModelKind, Verdict, check_history};

/// Runs per file, at least.
const RUNS_MIN: usize = 5;
/// Runs per file, at most; small files run until [`FILE_TIME_MIN`] is spent.
const RUNS_MAX: usize = 200;
const FILE_TIME_MIN: Duration = Duration::from_millis(100);

fn reference_dir() -> PathBuf {
    match std::env::var_os("TESTBED_PORCUPINE_DIR") {
        Some(dir) => PathBuf::from(dir),
        None => PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../../shared/histories/porcupine"),
    }
}

/// Minimum duration of `f` over the runs.
fn min_time<T>(mut f: impl FnMut() -> T) -> (Duration, T) {
    let started = Instant::now();
    let mut best = Duration::MAX;
    let mut runs = 0;
    loop {
        let t = Instant::now();
        let out = f();
        best = best.min(t.elapsed());
        runs += 1;
        if runs >= RUNS_MAX || (runs >= RUNS_MIN && started.elapsed() >= FILE_TIME_MIN) {
            return (best, out);
        }
        drop(out);
    }
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

struct Row {
    check: Duration,
    parse: Duration,
}

fn bench_file(path: &Path, name: &str, model: ModelKind) -> Row {
    let format = Format::from_path(path).expect("known extension");
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let (parse, history) = min_time(|| format.parse(&text).expect("parses"));
    let history: History = history;
    let operations = history.events.iter().filter(|e| e.kind == checker::EventKind::Invoke).count();
    let (check, verdict) = min_time(|| check_history(model, &history, Budget::default()).expect("checks"));
    let verdict = match verdict {
        Verdict::Ok => "linearizable",
        Verdict::Violation(_) => "NOT linearizable",
        Verdict::Unknown { .. } => "unknown",
    };
    println!("{name:<22} {operations:>6} {verdict:<17} {:>10.3} {:>10.3}", ms(check), ms(parse));
    Row { check, parse }
}

fn main() {
    let dir = reference_dir();
    println!("{:<22} {:>6} {:<17} {:>10} {:>10}", "file", "ops", "verdict", "check ms", "parse ms");
    let mut etcd = Vec::new();
    for n in 0..=102 {
        let name = format!("jepsen/etcd_{n:03}.log");
        let path = dir.join(&name);
        if n == 95 && !path.exists() {
            continue; // empty upstream, left out of the reference set
        }
        etcd.push(bench_file(&path, &name, ModelKind::CasRegister));
    }
    let mut kv = Vec::new();
    for name in ["c01-ok", "c01-bad", "c10-ok", "c10-bad", "c50-ok", "c50-bad"] {
        let name = format!("kv/{name}.txt");
        kv.push(bench_file(&dir.join(&name), &name, ModelKind::Kv));
    }
    for (label, rows) in [("etcd", &etcd), ("kv", &kv)] {
        let check: Duration = rows.iter().map(|r| r.check).sum();
        let parse: Duration = rows.iter().map(|r| r.parse).sum();
        println!(
            "total {label:<4} ({:>3} files){:>24} {:>10.3} {:>10.3}   (check + parse {:.3} ms)",
            rows.len(),
            "",
            ms(check),
            ms(parse),
            ms(check + parse)
        );
    }
}
