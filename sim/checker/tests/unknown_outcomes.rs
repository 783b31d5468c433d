//! Goal: observations that only several lost answers together can explain are accepted (the
//! search chains unknown outcomes), and ones that no combination explains are rejected.
//!
//! Method: hand-written histories for the bank and the cas-register where a read needs two or
//! three `info` operations to have taken effect back to back, and variants where it cannot.

use checker::read::Format;
use checker::{Budget, ModelKind, Verdict, check_history};

fn bank(lines: &[&str]) -> Verdict {
    let text: String = lines.iter().enumerate().map(|(i, l)| format!("{{{l},\"time\":{i}}}\n")).collect();
    let history = Format::Jsonl.parse(&text).unwrap();
    check_history(ModelKind::Bank, &history, Budget::default()).unwrap()
}

const OPEN: [&str; 2] = [
    r#""process":0,"type":"invoke","f":"open","key":"a","value":"0""#,
    r#""process":0,"type":"ok","f":"open","key":"a","value":"0""#,
];

fn lost_deposit(process: u64, amount: &str) -> [String; 2] {
    [
        format!(r#""process":{process},"type":"invoke","f":"deposit","key":"a","value":"{amount}""#),
        format!(r#""process":{process},"type":"info","f":"deposit","key":"a""#),
    ]
}

fn read(value: &str) -> [String; 2] {
    [
        r#""process":9,"type":"invoke","f":"read","key":"a""#.to_string(),
        format!(r#""process":9,"type":"ok","f":"read","key":"a","value":"{value}""#),
    ]
}

fn history(deposits: &[&str], reads: &[&str]) -> Verdict {
    let mut lines: Vec<String> = OPEN.iter().map(|l| l.to_string()).collect();
    for (p, amount) in deposits.iter().enumerate() {
        lines.extend(lost_deposit(p as u64 + 1, amount));
    }
    for value in reads {
        lines.extend(read(value));
    }
    let lines: Vec<&str> = lines.iter().map(String::as_str).collect();
    bank(&lines)
}

#[test]
fn bank_reads_explained_by_several_lost_deposits() {
    assert_eq!(history(&["3", "5"], &["8"]), Verdict::Ok);
    assert_eq!(history(&["1", "2", "4"], &["7"]), Verdict::Ok);
    assert_eq!(history(&["1", "2", "4", "8", "16"], &["31"]), Verdict::Ok);
    assert_eq!(history(&["1", "2", "4", "8", "16"], &["3", "7", "31"]), Verdict::Ok);
    assert!(
        matches!(history(&["1", "2", "4", "8", "16"], &["3", "21"]), Verdict::Violation(_)),
        "21 - 3 is no sum of 4, 8, 16"
    );
    assert!(matches!(history(&["1", "2", "4"], &["8"]), Verdict::Violation(_)));
    assert!(matches!(history(&["1", "2", "4", "8", "16"], &["21", "3"]), Verdict::Violation(_)));
}

#[test]
fn bank_transfer_and_deposit_lost_together() {
    let lines = [
        OPEN[0],
        OPEN[1],
        r#""process":0,"type":"invoke","f":"open","key":"b","value":"10""#,
        r#""process":0,"type":"ok","f":"open","key":"b","value":"10""#,
        r#""process":1,"type":"invoke","f":"transfer","key":"b","to":"a","value":"5""#,
        r#""process":1,"type":"info","f":"transfer","key":"b""#,
        r#""process":2,"type":"invoke","f":"deposit","key":"a","value":"3""#,
        r#""process":2,"type":"info","f":"deposit","key":"a""#,
        r#""process":3,"type":"invoke","f":"read","key":"a""#,
        r#""process":3,"type":"ok","f":"read","key":"a","value":"8""#,
        r#""process":3,"type":"invoke","f":"read","key":"b""#,
        r#""process":3,"type":"ok","f":"read","key":"b","value":"5""#,
    ];
    assert_eq!(bank(&lines), Verdict::Ok);
    let mut wrong = lines;
    wrong[11] = r#""process":3,"type":"ok","f":"read","key":"b","value":"10""#;
    assert!(matches!(bank(&wrong), Verdict::Violation(_)));
}

#[test]
fn cas_chain_of_lost_answers() {
    let log = |reads: &str| {
        let text = format!(
            "INFO  jepsen.util - 1\t:invoke\t:cas\t[nil 1]\n\
             INFO  jepsen.util - 2\t:invoke\t:cas\t[1 2]\n\
             INFO  jepsen.util - 3\t:invoke\t:cas\t[2 3]\n\
             INFO  jepsen.util - 1\t:info\t:cas\t:timed-out\n\
             INFO  jepsen.util - 2\t:info\t:cas\t:timed-out\n\
             INFO  jepsen.util - 3\t:info\t:cas\t:timed-out\n{reads}"
        );
        let history = Format::JepsenLog.parse(&text).unwrap();
        check_history(ModelKind::CasRegister, &history, Budget::default()).unwrap()
    };
    let read =
        |v: &str| format!("INFO  jepsen.util - 4\t:invoke\t:read\tnil\nINFO  jepsen.util - 4\t:ok\t:read\t{v}\n");
    assert_eq!(log(&read("3")), Verdict::Ok, "all three, in order");
    assert_eq!(log(&format!("{}{}", read("2"), read("3"))), Verdict::Ok);
    assert!(matches!(log(&format!("{}{}", read("3"), read("2"))), Verdict::Violation(_)));
    assert!(matches!(log(&format!("{}{}", read("2"), read("1"))), Verdict::Violation(_)));
}
