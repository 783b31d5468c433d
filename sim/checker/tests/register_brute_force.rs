//! Goal: the cas-register checker agrees with a brute-force reference on thousands of small
//! random histories heavy in unknown outcomes, where the search's pruning rules (read-only
//! operations first, interchangeable unknown operations, unknown operations that change
//! nothing, the memo's cover by smaller unknown sets) all fire.
//!
//! Method: a seeded ChaCha generator simulates clients against a true register over a few
//! values (so equal writes and equal compare-and-sets are common), loses many answers as
//! `info`, then corrupts some histories (a read value, a cas outcome flipped, two events
//! swapped). The reference tries every order of every subset of operations consistent with
//! real time, unknown outcomes optional, on its own register semantics.

use std::collections::BTreeMap;

use checker::{Budget, EventKind, History, HistoryEvent, ModelKind, Verdict, check_history};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde_json::{Value, json};

const HISTORIES_PER_SEED: usize = 3000;
const SEEDS: [u64; 3] = [11, 12, 13];
/// Operations per history, at most: the reference is exponential.
const OPERATIONS_MAX: usize = 9;
/// Values are 0..VALUES_MAX, so that equal inputs are frequent.
const VALUES_MAX: u64 = 3;

#[derive(Debug, Clone)]
struct RefOp {
    f: String,
    input: Option<Value>,
    /// The completion when it constrains anything; `None`: unknown outcome.
    completion: Option<HistoryEvent>,
    invoke_index: usize,
    return_index: Option<usize>,
}

/// The register: `None` is nil.
fn apply(state: Option<u64>, op: &RefOp) -> Option<Option<u64>> {
    let ok = op.completion.as_ref().map(|c| c.kind == EventKind::Ok);
    match op.f.as_str() {
        "read" => {
            let seen = op.completion.as_ref().and_then(|c| c.value.as_ref()).and_then(Value::as_u64);
            (seen == state).then_some(state)
        }
        "write" => Some(op.input.as_ref().and_then(Value::as_u64)),
        "cas" => {
            let pair = op.input.as_ref().and_then(Value::as_array).unwrap();
            let (from, to) = (pair[0].as_u64(), pair[1].as_u64());
            match ok {
                Some(true) => (state == from).then_some(to),
                Some(false) => (state != from).then_some(state),
                None => Some(if state == from { to } else { state }),
            }
        }
        other => panic!("unexpected f {other}"),
    }
}

fn reference_ops(events: &[HistoryEvent]) -> Vec<RefOp> {
    let mut open: BTreeMap<u64, usize> = BTreeMap::new();
    let mut ops: Vec<RefOp> = Vec::new();
    for (index, event) in events.iter().enumerate() {
        if event.kind == EventKind::Invoke {
            open.insert(event.process, ops.len());
            ops.push(RefOp {
                f: event.f.clone(),
                input: event.value.clone(),
                completion: None,
                invoke_index: index,
                return_index: None,
            });
        } else {
            let op = open.remove(&event.process).expect("well formed");
            if event.kind != EventKind::Info {
                ops[op].completion = Some(event.clone());
                ops[op].return_index = Some(index);
            }
        }
    }
    ops.retain(|op| match &op.completion {
        None => op.f != "read",
        Some(c) => c.kind == EventKind::Ok || op.f == "cas",
    });
    ops
}

fn brute_force(ops: &[RefOp]) -> bool {
    fn search(ops: &[RefOp], done: &mut Vec<bool>, state: Option<u64>) -> bool {
        if ops.iter().zip(done.iter()).all(|(op, &d)| d || op.return_index.is_none()) {
            return true;
        }
        for i in 0..ops.len() {
            let ready = !done[i]
                && ops
                    .iter()
                    .zip(done.iter())
                    .all(|(other, &d)| d || other.return_index.is_none_or(|r| r > ops[i].invoke_index));
            if !ready {
                continue;
            }
            if let Some(next) = apply(state, &ops[i]) {
                done[i] = true;
                let found = search(ops, done, next);
                done[i] = false;
                if found {
                    return true;
                }
            }
        }
        false
    }
    search(ops, &mut vec![false; ops.len()], None)
}

fn generate(rng: &mut ChaCha8Rng) -> Vec<HistoryEvent> {
    let processes = rng.gen_range(2..=5);
    let lost_probability = if rng.gen_bool(0.5) { 0.3 } else { 0.6 };
    let operations = rng.gen_range(2..=OPERATIONS_MAX);
    let mut register: Option<u64> = None;
    // Per process: the invoke in flight, and its completion once it took effect.
    let mut in_flight: Vec<Option<(HistoryEvent, Option<HistoryEvent>)>> = vec![None; processes];
    let mut invoked = 0;
    let mut events = Vec::new();
    for time in 1.. {
        if invoked == operations && in_flight.iter().all(Option::is_none) {
            break;
        }
        if invoked == operations && rng.gen_bool(0.05) {
            break; // the history ends with operations in flight
        }
        let p = rng.gen_range(0..processes);
        match in_flight[p].take() {
            None if invoked < operations => {
                invoked += 1;
                let f = ["read", "write", "cas", "cas"][rng.gen_range(0..4)];
                let mut event = HistoryEvent::new(p as u64, EventKind::Invoke, f, time);
                event.value = match f {
                    "read" => None,
                    "write" => Some(json!(rng.gen_range(0..VALUES_MAX))),
                    _ => Some(json!([rng.gen_range(0..VALUES_MAX), rng.gen_range(0..VALUES_MAX)])),
                };
                events.push(event.clone());
                in_flight[p] = Some((event, None));
            }
            None => {}
            Some((event, None)) => {
                // The operation takes effect now, or is lost (info) and maybe takes effect.
                let lost = rng.gen_bool(lost_probability);
                let mut completion = HistoryEvent::new(p as u64, EventKind::Ok, &event.f, 0);
                if !lost || rng.gen_bool(0.5) {
                    match event.f.as_str() {
                        "read" => completion.value = Some(register.map_or(Value::Null, |v| json!(v))),
                        "write" => register = event.value.as_ref().and_then(Value::as_u64),
                        _ => {
                            let pair = event.value.as_ref().and_then(Value::as_array).unwrap();
                            if register == pair[0].as_u64() {
                                register = pair[1].as_u64();
                            } else {
                                completion.kind = EventKind::Fail;
                            }
                            completion.value = event.value.clone();
                        }
                    }
                }
                if lost {
                    completion = HistoryEvent::new(p as u64, EventKind::Info, &event.f, 0);
                    completion.error = Some("timed-out".into());
                }
                in_flight[p] = Some((event, Some(completion)));
            }
            Some((_, Some(mut completion))) => {
                completion.time = time;
                events.push(completion);
            }
        }
    }
    events
}

fn corrupt(rng: &mut ChaCha8Rng, events: &mut [HistoryEvent]) -> bool {
    let candidates: Vec<usize> = match rng.gen_range(0..3) {
        0 => (0..events.len()).filter(|&i| events[i].kind == EventKind::Ok && events[i].f == "read").collect(),
        1 => (0..events.len())
            .filter(|&i| matches!(events[i].kind, EventKind::Ok | EventKind::Fail) && events[i].f == "cas")
            .collect(),
        _ => (0..events.len().saturating_sub(1)).filter(|&i| events[i].process != events[i + 1].process).collect(),
    };
    if candidates.is_empty() {
        return false;
    }
    let i = candidates[rng.gen_range(0..candidates.len())];
    if events[i].f == "read" && events[i].kind == EventKind::Ok {
        events[i].value = Some(json!(rng.gen_range(0..VALUES_MAX)));
    } else if events[i].f == "cas" && events[i].kind != EventKind::Invoke && rng.gen_bool(0.5) {
        events[i].kind = if events[i].kind == EventKind::Ok { EventKind::Fail } else { EventKind::Ok };
    } else if i + 1 < events.len() && events[i].process != events[i + 1].process {
        events.swap(i, i + 1);
    } else {
        return false;
    }
    true
}

#[test]
fn checker_agrees_with_brute_force() {
    let mut verdicts = BTreeMap::new();
    for seed in SEEDS {
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        for case in 0..HISTORIES_PER_SEED {
            let mut events = generate(&mut rng);
            let corrupted = rng.gen_bool(0.6) && (0..5).any(|_| corrupt(&mut rng, &mut events));
            let expected = brute_force(&reference_ops(&events));
            let history = History::from_events(events.clone());
            let verdict = check_history(ModelKind::CasRegister, &history, Budget::default())
                .unwrap_or_else(|e| panic!("seed {seed} case {case}: {e}"));
            let lines: Vec<String> = events.iter().map(|e| serde_json::to_string(e).unwrap()).collect();
            let got = match verdict {
                Verdict::Ok => true,
                Verdict::Violation(_) => false,
                Verdict::Unknown { .. } => panic!("seed {seed} case {case}: unknown on a tiny history"),
            };
            assert_eq!(
                got,
                expected,
                "seed {seed} case {case}: checker {got}, brute force {expected}\n{}",
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
    let total = SEEDS.len() * HISTORIES_PER_SEED;
    let violations = verdicts.get(&(true, false)).copied().unwrap_or(0);
    let corrupted_ok = verdicts.get(&(true, true)).copied().unwrap_or(0);
    assert!(violations * 10 >= total, "too few violations: {verdicts:?}");
    assert!(corrupted_ok * 20 >= total, "too few corrupted histories still linearizable: {verdicts:?}");
    println!("verdicts (corrupted, linearizable) -> count: {verdicts:?}");
}
