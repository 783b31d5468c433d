//! Goal: the bank checker (model, partitioning and search together) agrees with a brute-force
//! reference on thousands of small random histories, linearizable or not.
//!
//! Method: a seeded ChaCha generator simulates concurrent clients against a true bank (each
//! operation takes effect at a random moment between its invoke and its completion, some
//! answers are lost as `info`, some fail harmlessly), so the raw history is linearizable; then
//! some histories are corrupted (a read value changed, an ok turned into a fail
//! `insufficient_funds`, a balance changed, two events swapped) so that both verdicts occur
//! often. The reference tries every order of every subset of operations consistent with real
//! time (unknown outcomes may be left out), with its own bank semantics on `Decimal`s, written
//! independently of the checker's model.

use std::collections::BTreeMap;

mod common;

use checker::{Budget, EventKind, History, HistoryEvent, ModelKind, Verdict, check_history};
use common::{Bank, Shape, dec, simulate_bank, value_text};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use rust_decimal::Decimal;

/// Histories per seed.
const HISTORIES_PER_SEED: usize = 2500;
const SEEDS: [u64; 4] = [1, 2, 3, 0x5EED];
/// Operations per history, at most: the reference is exponential.
const OPERATIONS_MAX: usize = 7;

/// Few amounts, so that equal inputs and equal sums are common.
const AMOUNTS: [&str; 7] = ["1", "2.5", "3.00", "5", "7.5", "10", "0.50"];

/// One operation as the reference sees it.
#[derive(Debug, Clone)]
struct RefOp {
    f: String,
    key: String,
    to: Option<String>,
    amount: Option<Decimal>,
    /// `None`: unknown outcome (optional). Else the completion.
    completion: Option<HistoryEvent>,
    invoke_index: usize,
    return_index: Option<usize>,
}

/// Applies an operation with its observed outcome; `None` when impossible.
fn apply(bank: &Bank, op: &RefOp) -> Option<Bank> {
    let mut next = bank.clone();
    let insufficient = op
        .completion
        .as_ref()
        .is_some_and(|c| c.kind == EventKind::Fail && c.error.as_deref() == Some("insufficient_funds"));
    if insufficient {
        let balance = bank.get(&op.key)?;
        return (*balance < op.amount.unwrap()).then_some(next);
    }
    let amount = op.amount.unwrap_or_default();
    match op.f.as_str() {
        "open" => {
            if bank.contains_key(&op.key) {
                return None;
            }
            next.insert(op.key.clone(), amount);
        }
        "deposit" => {
            let balance = *bank.get(&op.key)?;
            next.insert(op.key.clone(), balance + amount);
        }
        "withdraw" => {
            let balance = *bank.get(&op.key)?;
            if balance < amount {
                return None;
            }
            next.insert(op.key.clone(), balance - amount);
        }
        "transfer" => {
            let to = op.to.clone().unwrap();
            let balance = *bank.get(&op.key)?;
            let target = *bank.get(&to)?;
            if balance < amount {
                return None;
            }
            if to != op.key {
                next.insert(op.key.clone(), balance - amount);
                next.insert(to, target + amount);
            }
        }
        "read" => {
            let seen = op.completion.as_ref().and_then(|c| value_text(&c.value)).map(|t| dec(&t));
            if seen != bank.get(&op.key).copied() {
                return None;
            }
        }
        other => panic!("unexpected f {other}"),
    }
    if let Some(balance) = op.completion.as_ref().and_then(|c| c.balance.as_ref())
        && next.get(&op.key) != Some(&dec(balance))
    {
        return None;
    }
    Some(next)
}

/// The operations of a history that constrain anything.
fn reference_ops(events: &[HistoryEvent]) -> Vec<RefOp> {
    let mut open: BTreeMap<u64, usize> = BTreeMap::new();
    let mut ops: Vec<RefOp> = Vec::new();
    for (index, event) in events.iter().enumerate() {
        if event.kind == EventKind::Invoke {
            open.insert(event.process, ops.len());
            ops.push(RefOp {
                f: event.f.clone(),
                key: event.key.clone().unwrap(),
                to: event.to.clone(),
                amount: value_text(&event.value).map(|t| dec(&t)),
                completion: None,
                invoke_index: index,
                return_index: None,
            });
        } else {
            let op = open.remove(&event.process).expect("generated histories are well formed");
            if event.kind != EventKind::Info {
                ops[op].completion = Some(event.clone());
                ops[op].return_index = Some(index);
            }
        }
    }
    ops.retain(|op| match &op.completion {
        None => op.f != "read",
        Some(c) => c.kind == EventKind::Ok || c.error.as_deref() == Some("insufficient_funds"),
    });
    ops
}

/// Whether some order of a subset of `ops` (all those with a return) is consistent with real
/// time and legal.
fn brute_force(ops: &[RefOp]) -> bool {
    fn search(ops: &[RefOp], done: &mut Vec<bool>, bank: &Bank) -> bool {
        if ops.iter().zip(done.iter()).all(|(op, &d)| d || op.return_index.is_none()) {
            return true;
        }
        for i in 0..ops.len() {
            if done[i] {
                continue;
            }
            // Every operation that returned before this one was invoked must come first.
            let ready = ops
                .iter()
                .zip(done.iter())
                .all(|(other, &d)| d || other.return_index.is_none_or(|r| r > ops[i].invoke_index));
            if !ready {
                continue;
            }
            if let Some(next) = apply(bank, &ops[i]) {
                done[i] = true;
                let found = search(ops, done, &next);
                done[i] = false;
                if found {
                    return true;
                }
            }
        }
        false
    }
    search(ops, &mut vec![false; ops.len()], &Bank::new())
}

/// Changes one thing in the history; returns whether it found something to change.
fn corrupt(rng: &mut ChaCha8Rng, events: &mut [HistoryEvent]) -> bool {
    match rng.gen_range(0..4) {
        0 => {
            // A read returns another value.
            let reads: Vec<usize> =
                (0..events.len()).filter(|&i| events[i].kind == EventKind::Ok && events[i].f == "read").collect();
            let Some(&i) = reads.get(rng.gen_range(0..reads.len().max(1))) else { return false };
            let other = AMOUNTS[rng.gen_range(0..AMOUNTS.len())];
            events[i].value = Some(if rng.gen_bool(0.2) {
                serde_json::Value::Null
            } else {
                serde_json::Value::String(other.to_string())
            });
        }
        1 => {
            // An ok withdraw or transfer becomes a fail insufficient_funds.
            let oks: Vec<usize> = (0..events.len())
                .filter(|&i| events[i].kind == EventKind::Ok && matches!(events[i].f.as_str(), "withdraw" | "transfer"))
                .collect();
            let Some(&i) = oks.get(rng.gen_range(0..oks.len().max(1))) else { return false };
            events[i].kind = EventKind::Fail;
            events[i].error = Some("insufficient_funds".into());
            events[i].balance = None;
            events[i].value = None;
        }
        2 => {
            // A reported balance changes.
            let told: Vec<usize> = (0..events.len()).filter(|&i| events[i].balance.is_some()).collect();
            let Some(&i) = told.get(rng.gen_range(0..told.len().max(1))) else { return false };
            events[i].balance = Some(AMOUNTS[rng.gen_range(0..AMOUNTS.len())].to_string());
        }
        _ => {
            // Two adjacent events of different processes swap (real-time order changes).
            let swappable: Vec<usize> =
                (0..events.len().saturating_sub(1)).filter(|&i| events[i].process != events[i + 1].process).collect();
            let Some(&i) = swappable.get(rng.gen_range(0..swappable.len().max(1))) else { return false };
            events.swap(i, i + 1);
        }
    }
    true
}

#[test]
fn checker_agrees_with_brute_force() {
    let mut verdicts = BTreeMap::new();
    for seed in SEEDS {
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        for case in 0..HISTORIES_PER_SEED {
            let shape = Shape {
                processes: rng.gen_range(2..=4),
                operations: rng.gen_range(2..=OPERATIONS_MAX),
                accounts: rng.gen_range(1..=3),
                lost: if rng.gen_bool(0.5) { 0.15 } else { 0.45 },
                amounts: Some(&AMOUNTS),
            };
            let mut events = simulate_bank(&mut rng, &shape);
            let corrupted = rng.gen_bool(0.7) && (0..5).any(|_| corrupt(&mut rng, &mut events));
            let expected = brute_force(&reference_ops(&events));
            let history = History::from_events(events.clone());
            let verdict = check_history(ModelKind::Bank, &history, Budget::default())
                .unwrap_or_else(|e| panic!("seed {seed} case {case}: {e}\n{events:#?}"));
            let got = match &verdict {
                Verdict::Ok => true,
                Verdict::Violation(witness) => {
                    assert!(!witness.pending.is_empty(), "a witness names operations");
                    false
                }
                Verdict::Unknown { .. } => panic!("seed {seed} case {case}: unknown on a tiny history"),
            };
            let lines: Vec<String> = events.iter().map(|e| serde_json::to_string(e).unwrap()).collect();
            assert_eq!(
                got,
                expected,
                "seed {seed} case {case} (corrupted: {corrupted}): checker {got}, brute force {expected}\n{}",
                lines.join("\n")
            );
            if !corrupted {
                assert!(
                    expected,
                    "seed {seed} case {case}: simulated histories are linearizable\n{}",
                    lines.join("\n")
                );
            }
            *verdicts.entry((corrupted, got)).or_insert(0usize) += 1;
        }
    }
    // Both verdicts occur often, on corrupted histories too.
    let total = SEEDS.len() * HISTORIES_PER_SEED;
    let violations = verdicts.get(&(true, false)).copied().unwrap_or(0);
    let corrupted_ok = verdicts.get(&(true, true)).copied().unwrap_or(0);
    assert!(violations * 10 >= total, "too few violations: {verdicts:?}");
    assert!(corrupted_ok * 20 >= total, "too few corrupted histories still linearizable: {verdicts:?}");
    println!("verdicts (corrupted, linearizable) -> count: {verdicts:?}");
}
