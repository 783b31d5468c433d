//! Goal: the bank model's verdict on hand-written histories whose answer is known, each
//! showing one rule (concurrent withdrawals, unknown outcomes, transfers joining accounts, a
//! stale read, told balances), and the witness of a violation.
//!
//! Method: each history is written as JSON Lines in a compact notation (one event per line:
//! `process type f key value [extra fields]`), parsed with the JSONL reader and checked.

use checker::read::Format;
use checker::{Budget, ModelKind, Verdict, check_history};

/// Turns `3 invoke withdraw a 10.00` lines (optionally followed by `to=b`, `balance=5`,
/// `error=insufficient_funds`, or a value `nil`) into JSON Lines, with time = line * 10.
fn jsonl(compact: &str) -> String {
    let mut out = String::new();
    for (index, line) in compact.lines().map(str::trim).filter(|l| !l.is_empty()).enumerate() {
        let words: Vec<&str> = line.split_whitespace().collect();
        let mut fields = vec![
            format!("\"process\":{}", words[0]),
            format!("\"type\":\"{}\"", words[1]),
            format!("\"f\":\"{}\"", words[2]),
            format!("\"key\":\"{}\"", words[3]),
        ];
        for word in &words[4..] {
            match word.split_once('=') {
                Some((name, value)) => fields.push(format!("\"{name}\":\"{value}\"")),
                None if *word == "nil" => fields.push("\"value\":null".to_string()),
                None => fields.push(format!("\"value\":\"{word}\"")),
            }
        }
        fields.push(format!("\"time\":{}", (index + 1) * 10));
        out.push_str(&format!("{{{}}}\n", fields.join(",")));
    }
    out
}

fn check(compact: &str) -> Verdict {
    let history = Format::Jsonl.parse(&jsonl(compact)).expect("valid JSONL");
    check_history(ModelKind::Bank, &history, Budget::default()).expect("fits the bank model")
}

fn assert_ok(compact: &str) {
    let verdict = check(compact);
    assert_eq!(verdict, Verdict::Ok, "expected linearizable:\n{compact}\n{verdict:?}");
}

fn assert_violation(compact: &str) -> checker::Witness {
    match check(compact) {
        Verdict::Violation(witness) => *witness,
        other => panic!("expected a violation:\n{compact}\n{other:?}"),
    }
}

const OPEN_A_100: &str = "
    0 invoke open a 100
    0 ok open a 100
";

#[test]
fn concurrent_withdrawals_one_wins() {
    assert_ok(&format!(
        "{OPEN_A_100}
        1 invoke withdraw a 60
        2 invoke withdraw a 60
        1 ok withdraw a 60 balance=40
        2 fail withdraw a error=insufficient_funds
        3 invoke read a
        3 ok read a 40.00"
    ));
}

#[test]
fn concurrent_withdrawals_cannot_both_win() {
    let witness = assert_violation(&format!(
        "{OPEN_A_100}
        1 invoke withdraw a 60
        2 invoke withdraw a 60
        1 ok withdraw a 60
        2 ok withdraw a 60"
    ));
    assert_eq!(witness.partition, "accounts a");
    assert!(witness.pending.iter().any(|op| op.invoke.f == "withdraw"));
}

#[test]
fn insufficient_funds_needs_a_low_balance() {
    // The withdrawal of 50 failed for lack of funds, yet the balance was 100 throughout.
    assert_violation(&format!(
        "{OPEN_A_100}
        1 invoke withdraw a 50
        1 fail withdraw a error=insufficient_funds"
    ));
    // Other failures constrain nothing.
    assert_ok(&format!(
        "{OPEN_A_100}
        1 invoke withdraw a 50
        1 fail withdraw a error=unavailable
        2 invoke read a
        2 ok read a 100"
    ));
}

#[test]
fn unknown_outcomes_may_apply_or_not() {
    for seen in ["100", "70", "70.0"] {
        assert_ok(&format!(
            "{OPEN_A_100}
            1 invoke withdraw a 30
            1 info withdraw a error=timeout
            2 invoke read a
            2 ok read a {seen}
            2 invoke read a
            2 ok read a {seen}"
        ));
    }
    // It applies at most once: it cannot be seen applied, then undone.
    assert_violation(&format!(
        "{OPEN_A_100}
        1 invoke withdraw a 30
        1 info withdraw a
        2 invoke read a
        2 ok read a 70
        2 invoke read a
        2 ok read a 100"
    ));
    // An invoke that never completes is unknown too; it cannot explain an amount it did not move.
    assert_violation(&format!(
        "{OPEN_A_100}
        1 invoke deposit a 5
        2 invoke read a
        2 ok read a 104"
    ));
}

#[test]
fn transfers_join_accounts_into_one_partition() {
    let history = format!(
        "{OPEN_A_100}
        0 invoke open b 0
        0 ok open b 0
        0 invoke open c 1
        0 ok open c 1
        1 invoke transfer a 40 to=b
        2 invoke read b
        2 ok read b 40
        3 invoke read a
        3 ok read a 100
        1 ok transfer a 40 to=b balance=60"
    );
    // b's read of 40 puts the transfer before it; a's read was invoked after that read
    // returned, so it comes after the transfer too and cannot see a = 100.
    let witness = assert_violation(&history);
    assert_eq!(witness.partition, "accounts a, b");
    // When a's read is invoked before b's read returns, it may precede the transfer.
    assert_ok(&format!(
        "{OPEN_A_100}
        0 invoke open b 0
        0 ok open b 0
        1 invoke transfer a 40 to=b
        3 invoke read a
        2 invoke read b
        2 ok read b 40
        3 ok read a 100
        1 ok transfer a 40 to=b balance=60"
    ));
}

#[test]
fn stale_read_is_rejected() {
    let witness = assert_violation(&format!(
        "{OPEN_A_100}
        1 invoke deposit a 25
        1 ok deposit a 25 balance=125
        2 invoke read a
        2 ok read a 100"
    ));
    assert_eq!(witness.linearized, 2, "open and deposit are the longest prefix");
    assert_eq!(witness.state, "a = 125");
    let blocking = &witness.pending[witness.blocking];
    assert_eq!(blocking.invoke.f, "read");
    assert_eq!(blocking.invoke.process, 2);
    assert_eq!(blocking.invoke.time, 50);
    assert_eq!(blocking.completion.as_ref().map(|c| c.time), Some(60));
    let shown = witness.to_string();
    println!("{shown}");
    assert!(shown.contains("p2 read a -> ok \"100\" [invoke t=50, return t=60]"), "{shown}");
}

#[test]
fn told_balance_must_match() {
    assert_violation(&format!(
        "{OPEN_A_100}
        1 invoke withdraw a 10
        1 ok withdraw a 10 balance=80"
    ));
    assert_ok(&format!(
        "{OPEN_A_100}
        1 invoke withdraw a 10
        1 ok withdraw a 10 balance=90.000"
    ));
}

#[test]
fn accounts_exist_only_once_opened() {
    assert_violation(
        "
        1 invoke deposit a 10
        1 ok deposit a 10",
    );
    assert_violation(&format!(
        "{OPEN_A_100}
        1 invoke open a 5
        1 ok open a 5"
    ));
    assert_ok(
        "
        1 invoke read a
        1 ok read a nil
        0 invoke open a 100
        0 ok open a 100",
    );
    // Overdraw by transfer is illegal even when the target exists.
    assert_violation(&format!(
        "{OPEN_A_100}
        0 invoke open b 0
        0 ok open b 0
        1 invoke transfer a 100.01 to=b
        1 ok transfer a 100.01 to=b"
    ));
}

#[test]
fn independent_accounts_are_separate_partitions() {
    // Many concurrent operations on separate accounts: per-account partitions keep it small.
    let mut compact = String::new();
    for account in 0..40 {
        compact.push_str(&format!("{account} invoke open acct-{account} 10\n"));
    }
    for account in 0..40 {
        compact.push_str(&format!("{account} ok open acct-{account} 10\n"));
    }
    for account in 0..40 {
        compact.push_str(&format!("{account} invoke withdraw acct-{account} 4\n"));
    }
    for account in (0..40).rev() {
        compact.push_str(&format!("{account} ok withdraw acct-{account} 4 balance=6\n"));
    }
    assert_ok(&compact);
}

#[test]
fn read_model_reads_are_stale_by_design_and_constrain_nothing() {
    // The read model answered 100.00 long after the withdrawal: stale, and allowed. The same
    // answer from a strong read is a violation.
    let stale = |f: &str| {
        format!(
            "{OPEN_A_100}
            1 invoke withdraw a 60
            1 ok withdraw a 60 balance=40
            2 invoke {f} a
            2 ok {f} a 100.00"
        )
    };
    assert_ok(&stale("read_model"));
    assert_violation(&stale("read"));
}
