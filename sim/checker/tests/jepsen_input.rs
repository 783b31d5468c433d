//! Jepsen's histories as Jepsen writes them (issue 20): `jepsen.independent` histories split
//! per key, nemesis events skipped, the current log layout read.
//! Method: small logs written here, each checked end to end (read, then check).

use checker::read::Format;
use checker::{Budget, ModelKind, Verdict, check_history};

fn check(model: ModelKind, log: &str) -> Verdict {
    let history = Format::JepsenLog.parse(log).expect("a Jepsen log");
    check_history(model, &history, Budget::default()).expect("fits the model")
}

/// Two keys, each a register on its own: key 1 written 5 and read 5, key 2 written 7 and read 7,
/// the reads after both writes. Read as one register it is not linearizable (a read of [1 5]
/// after the write of [2 7]); per key it is.
const INDEPENDENT_OK: &str = "\
INFO  jepsen.util - 0\t:invoke\t:write\t[1 5]
INFO  jepsen.util - 0\t:ok\t:write\t[1 5]
INFO  jepsen.util - 1\t:invoke\t:write\t[2 7]
INFO  jepsen.util - 1\t:ok\t:write\t[2 7]
INFO  jepsen.util - 0\t:invoke\t:read\t[1 nil]
INFO  jepsen.util - 0\t:ok\t:read\t[1 5]
INFO  jepsen.util - 1\t:invoke\t:read\t[2 nil]
INFO  jepsen.util - 1\t:ok\t:read\t[2 7]
INFO  jepsen.util - 2\t:invoke\t:cas\t[2 [7 8]]
INFO  jepsen.util - 2\t:ok\t:cas\t[2 [7 8]]
";

#[test]
fn an_independent_history_is_checked_per_key() {
    assert_eq!(check(ModelKind::CasRegister, INDEPENDENT_OK), Verdict::Ok);
    // The same history with key 2's read answering the value key 1 holds: key 2 breaks, and
    // the witness names it.
    let bad = INDEPENDENT_OK.replace(":ok\t:read\t[2 7]", ":ok\t:read\t[2 5]");
    match check(ModelKind::CasRegister, &bad) {
        Verdict::Violation(witness) => assert_eq!(witness.partition, "cas-register key 2"),
        other => panic!("expected a violation on key 2, got {other:?}"),
    }
}

/// A plain cas-register history (reads invoked with nil, cas `[from to]`) stays one register.
#[test]
fn a_plain_cas_register_is_not_taken_for_independent() {
    let plain = "\
INFO  jepsen.util - 0\t:invoke\t:cas\t[nil 3]
INFO  jepsen.util - 0\t:ok\t:cas\t[nil 3]
INFO  jepsen.util - 1\t:invoke\t:cas\t[3 4]
INFO  jepsen.util - 1\t:ok\t:cas\t[3 4]
INFO  jepsen.util - 0\t:invoke\t:read\tnil
INFO  jepsen.util - 0\t:ok\t:read\t3
";
    match check(ModelKind::CasRegister, plain) {
        Verdict::Violation(witness) => assert_eq!(witness.partition, "cas-register"),
        other => panic!("a read of 3 after the cas to 4 is a violation, got {other:?}"),
    }
}

/// Jepsen's current layout, with other loggers' lines and the nemesis's events in between,
/// gives the verdict of the same events in the older layout.
#[test]
fn the_current_layout_and_nemesis_lines_are_read() {
    let current = "\
2024-05-02 10:21:47,100{GMT}\tINFO\t[main] jepsen.core: Running test etcd
2024-05-02 10:21:47,200{GMT}\tINFO\t[jepsen worker 0] jepsen.util: 0\t:invoke\t:write\t[1 5]
2024-05-02 10:21:47,210{GMT}\tINFO\t[jepsen nemesis] jepsen.util: :nemesis\t:info\t:start\tnil
2024-05-02 10:21:47,220{GMT}\tINFO\t[jepsen nemesis] jepsen.nemesis: partitioning [:n1] from [:n2 :n3]
2024-05-02 10:21:47,230{GMT}\tINFO\t[jepsen nemesis] jepsen.util: :nemesis\t:info\t:start\t{:n1 [:n2 :n3]}
2024-05-02 10:21:47,300{GMT}\tINFO\t[jepsen worker 0] jepsen.util: 0\t:ok\t:write\t[1 5]
2024-05-02 10:21:47,400{GMT}\tINFO\t[jepsen worker 1] jepsen.util: 1\t:invoke\t:read\t[1 nil]
2024-05-02 10:21:47,500{GMT}\tINFO\t[jepsen worker 1] jepsen.util: 1\t:ok\t:read\t[1 5]
";
    assert_eq!(check(ModelKind::CasRegister, current), Verdict::Ok);
    let stale = current.replace(":ok\t:read\t[1 5]", ":ok\t:read\t[1 nil]");
    assert!(matches!(check(ModelKind::CasRegister, &stale), Verdict::Violation(_)));
}

/// A Jepsen store's `history.edn`, one op map per line with a nemesis op, and the same ops as
/// one vector of tagged records (newer Jepsen), read with `--format jepsen-edn`.
#[test]
fn a_history_edn_is_read_per_line_and_as_one_vector() {
    let per_line = r#"{:type :invoke, :f :write, :value 3, :process 0, :time 100, :index 0}
{:type :info, :f :start, :value nil, :process :nemesis, :time 150, :index 1}
{:type :ok, :f :write, :value 3, :process 0, :time 200, :index 2}
{:type :invoke, :f :read, :value nil, :process 1, :time 300, :index 3}
{:type :ok, :f :read, :value 3, :process 1, :time 400, :index 4}
{:type :invoke, :f :cas, :value [3 4], :process 2, :time 500, :index 5}
{:type :fail, :f :cas, :value [3 4], :process 2, :time 600, :error [:unavailable "no leader"], :index 6}
"#;
    let history = Format::JepsenEdn.parse(per_line).expect("a history.edn");
    assert_eq!(history.events.len(), 6, "the nemesis op is skipped");
    assert_eq!(history.events[5].error.as_deref(), Some(r#"["unavailable","no leader"]"#));
    // A failed cas from 3 while the register holds 3 is a violation in the etcd model.
    assert!(matches!(
        check_history(ModelKind::CasRegister, &history, Budget::default()).unwrap(),
        Verdict::Violation(_)
    ));
    let ok = per_line.replace(":type :fail, :f :cas", ":type :ok, :f :cas");
    let history = Format::JepsenEdn.parse(&ok).unwrap();
    assert_eq!(check_history(ModelKind::CasRegister, &history, Budget::default()).unwrap(), Verdict::Ok);
    let vector = format!("[{}]", ok.lines().map(|l| format!("#jepsen.history.Op{l}")).collect::<Vec<_>>().join("\n "));
    let from_vector = Format::JepsenEdn.parse(&vector).expect("one vector of records");
    assert_eq!(from_vector.events, history.events);
    assert!(Format::JepsenEdn.parse("").is_err(), "no op");
    assert!(Format::JepsenEdn.parse("[1 2]").is_err(), "not op maps");
}
