//! Goal: `run_check` prints one verdict per file and returns the documented exit codes, and a
//! tiny budget yields `unknown` on a hard file instead of an answer or a hang.
//!
//! Method: run it on reference files (a linearizable and a non-linearizable etcd log, a kv
//! file), on JSON Lines files written to a temporary folder, on bad model and format names and
//! a missing file; and check hard files (etcd_057, kv/c50-ok) with budgets far below their needs.

use std::path::PathBuf;

use checker::cli::{EXIT_OK, EXIT_UNKNOWN, EXIT_USAGE, EXIT_VIOLATION, run_check_with_budget};
use checker::read::{Format, read_history};
use checker::{Budget, Limit, ModelKind, Verdict, check_history, run_check};

fn reference(file: &str) -> PathBuf {
    let dir = match std::env::var_os("TESTBED_PORCUPINE_DIR") {
        Some(dir) => PathBuf::from(dir),
        None => PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../../shared/histories/porcupine"),
    };
    dir.join(file)
}

fn run(model: &str, format: Option<&str>, files: &[PathBuf]) -> (i32, String) {
    let mut out = Vec::new();
    let code = run_check(model, format, files, &mut out);
    (code, String::from_utf8(out).unwrap())
}

/// A file in a fresh temporary folder for this test.
fn temp_file(test: &str, name: &str, text: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("checker-cli-{}-{test}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join(name);
    std::fs::write(&path, text).unwrap();
    path
}

#[test]
fn verdicts_and_exit_codes() {
    let ok = reference("jepsen/etcd_002.log");
    let bad = reference("jepsen/etcd_000.log");
    let (code, out) = run("cas-register", None, std::slice::from_ref(&ok));
    assert_eq!(code, EXIT_OK, "{out}");
    assert_eq!(out, format!("{}: linearizable\n", ok.display()));

    let (code, out) = run("cas-register", Some("jepsen-log"), &[ok.clone(), bad.clone()]);
    assert_eq!(code, EXIT_VIOLATION, "{out}");
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines[0], format!("{}: linearizable", ok.display()));
    assert_eq!(lines[1], format!("{}: not linearizable", bad.display()));
    assert!(lines[2..].iter().all(|l| l.starts_with("    ")), "witness lines are indented:\n{out}");
    assert!(out.contains("p11 read -> ok 2 [invoke t=85, return t=86]"), "{out}");

    let (code, out) = run("kv", None, &[reference("kv/c01-ok.txt")]);
    assert_eq!(code, EXIT_OK, "{out}");
}

#[test]
fn jsonl_files_default_by_extension() {
    let history = concat!(
        r#"{"process":0,"type":"invoke","f":"open","key":"a","value":"5","time":1}"#,
        "\n",
        r#"{"process":0,"type":"ok","f":"open","key":"a","value":"5","time":2}"#,
        "\n",
        r#"{"process":1,"type":"invoke","f":"withdraw","key":"a","value":"6","time":3}"#,
        "\n",
        r#"{"process":1,"type":"ok","f":"withdraw","key":"a","value":"6","time":4}"#,
        "\n"
    );
    let overdrawn = temp_file("jsonl", "overdrawn.jsonl", history);
    let (code, out) = run("bank", None, std::slice::from_ref(&overdrawn));
    assert_eq!(code, EXIT_VIOLATION, "{out}");
    assert!(out.contains("accounts a"), "{out}");
    let fine = temp_file("jsonl", "fine.jsonl", &history.replace("\"6\"", "\"5.0\""));
    let (code, out) = run("bank", None, &[fine]);
    assert_eq!(code, EXIT_OK, "{out}");
}

#[test]
fn usage_errors() {
    let ok = reference("jepsen/etcd_002.log");
    let (code, out) = run("queue", None, std::slice::from_ref(&ok));
    assert_eq!(code, EXIT_USAGE);
    assert!(out.contains("unknown model \"queue\""), "{out}");
    let (code, out) = run("cas-register", Some("csv"), std::slice::from_ref(&ok));
    assert_eq!(code, EXIT_USAGE);
    assert!(out.contains("unknown format"), "{out}");
    let (code, out) = run("cas-register", None, &[PathBuf::from("/nonexistent/etcd.log")]);
    assert_eq!(code, EXIT_USAGE);
    assert!(out.contains("/nonexistent/etcd.log"), "{out}");
    let (code, _) = run("cas-register", None, &[]);
    assert_eq!(code, EXIT_USAGE);
    // A file in the wrong format for its model is a usage error too, naming the line.
    let (code, out) = run("bank", None, &[reference("kv/c01-ok.txt")]);
    assert_eq!(code, EXIT_USAGE);
    assert!(out.contains("line 1"), "{out}");
}

/// Goal: time and memory bound the search itself (issue 20): reaching either answers unknown,
/// naming the limit, however many steps are left. Method: kv/c50-ok (about two million steps
/// to accept) with an unbounded step budget and a timeout of one nanosecond (reached at the
/// first look at the clock), then with a memory bound of 64 KiB (its memo grows far past it).
#[test]
fn timeout_and_memory_limits_end_the_search_with_unknown() {
    let kv = read_history(&reference("kv/c50-ok.txt"), Format::KvEdn).unwrap();
    let unbounded = Budget { steps_max: u64::MAX, timeout: None, memory_max: None };
    let timeout = std::time::Duration::from_nanos(1);
    let verdict = check_history(ModelKind::Kv, &kv, Budget { timeout: Some(timeout), ..unbounded }).unwrap();
    assert!(matches!(verdict, Verdict::Unknown { limit: Limit::Timeout(t), .. } if t == timeout), "{verdict:?}");
    let verdict = check_history(ModelKind::Kv, &kv, Budget { memory_max: Some(64 << 10), ..unbounded }).unwrap();
    assert!(matches!(verdict, Verdict::Unknown { limit: Limit::Memory(m), .. } if m == 64 << 10), "{verdict:?}");
    // The default budget bounds all three, and this file is well within it.
    assert_eq!(check_history(ModelKind::Kv, &kv, Budget::default()).unwrap(), Verdict::Ok);
    let mut out = Vec::new();
    let file = reference("kv/c50-ok.txt");
    let budget = Budget { memory_max: Some(64 << 10), ..unbounded };
    let code = run_check_with_budget("kv", None, std::slice::from_ref(&file), budget, &mut out);
    let out = String::from_utf8(out).unwrap();
    assert_eq!(code, EXIT_UNKNOWN, "{out}");
    assert!(out.contains("the memory limit of 64 KiB was reached while checking"), "{out}");
}

#[test]
fn tiny_budget_yields_unknown_on_a_hard_file() {
    // etcd_057 needs several thousand steps to refute; kv/c50-ok about two million to accept.
    let tiny = Budget::steps(2000);
    let hard = reference("jepsen/etcd_057.log");
    let history = read_history(&hard, Format::JepsenLog).unwrap();
    let verdict = check_history(ModelKind::CasRegister, &history, tiny).unwrap();
    assert_eq!(verdict, Verdict::Unknown { partition: "cas-register".into(), limit: Limit::Steps(2000) });
    let verdict = check_history(ModelKind::CasRegister, &history, Budget::default()).unwrap();
    assert!(matches!(verdict, Verdict::Violation(_)), "{verdict:?}");
    let kv = read_history(&reference("kv/c50-ok.txt"), Format::KvEdn).unwrap();
    assert!(matches!(check_history(ModelKind::Kv, &kv, Budget::steps(10_000)).unwrap(), Verdict::Unknown { .. }));

    let mut out = Vec::new();
    let code = run_check_with_budget("cas-register", None, std::slice::from_ref(&hard), tiny, &mut out);
    let out = String::from_utf8(out).unwrap();
    assert_eq!(code, EXIT_UNKNOWN, "{out}");
    assert!(out.starts_with(&format!("{}: unknown\n", hard.display())), "{out}");
    // A violation elsewhere outranks unknown.
    let mut out = Vec::new();
    let code = run_check_with_budget("cas-register", None, &[hard, reference("jepsen/etcd_001.log")], tiny, &mut out);
    assert_eq!(code, EXIT_VIOLATION);
}

/// Goal: a read of a value nobody wrote is refuted before the search (issue 20), however many
/// `info` writes the history holds. Method: 1,000 cas-register operations over 5 processes, a
/// tenth of the writes `info`, then one read of a value never written; the verdict blocks on
/// that read.
#[test]
fn a_read_of_a_never_written_value_is_refuted_before_the_search() {
    let mut log = String::new();
    for i in 0..1000u64 {
        let p = i % 5;
        if i % 2 == 0 {
            let outcome = if i % 20 == 0 { "info" } else { "ok" };
            log.push_str(&format!("INFO  jepsen.util - {p}\t:invoke\t:write\t{i}\n"));
            log.push_str(&format!("INFO  jepsen.util - {p}\t:{outcome}\t:write\t{i}\n"));
        } else {
            log.push_str(&format!("INFO  jepsen.util - {p}\t:invoke\t:read\tnil\n"));
            log.push_str(&format!("INFO  jepsen.util - {p}\t:ok\t:read\t{}\n", i - 1));
        }
    }
    log.push_str("INFO  jepsen.util - 7\t:invoke\t:read\tnil\nINFO  jepsen.util - 7\t:ok\t:read\t99999\n");
    let history = Format::JepsenLog.parse(&log).unwrap();
    match check_history(ModelKind::CasRegister, &history, Budget::default()).unwrap() {
        Verdict::Violation(witness) => {
            let blocking = &witness.pending[witness.blocking];
            assert_eq!(blocking.completion.as_ref().and_then(|c| c.value.clone()), Some(serde_json::json!(99999)));
            assert_eq!(witness.linearized, 0, "refuted before the search: {witness}");
        }
        other => panic!("expected a violation, got {other:?}"),
    }
}
