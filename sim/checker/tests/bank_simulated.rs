//! Goal: simulated bank histories of a realistic size, with lost answers (`info`) on accounts
//! joined by transfers, are accepted, within the default budget: no false violation, and no
//! `unknown` on the kind of history the simulator writes. A stale read planted in one of them
//! is caught.
//!
//! Method: the seeded simulation of `common` (linearizable by construction) for several
//! shapes and seeds; then one history with a read changed to the value before the last update
//! of its account.

mod common;

use checker::{Budget, EventKind, History, ModelKind, Verdict, check_history};
use common::{Shape, simulate_bank};
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;

const SEEDS: std::ops::Range<u64> = 0..16;

fn shapes() -> [Shape; 4] {
    [
        Shape { processes: 10, operations: 1000, accounts: 4, lost: 0.05, amounts: None },
        Shape { processes: 8, operations: 300, accounts: 3, lost: 0.05, amounts: None },
        Shape { processes: 5, operations: 400, accounts: 1, lost: 0.10, amounts: None },
        Shape { processes: 12, operations: 300, accounts: 6, lost: 0.10, amounts: None },
    ]
}

#[test]
fn simulated_histories_are_linearizable() {
    for (s, shape) in shapes().iter().enumerate() {
        for seed in SEEDS {
            let mut rng = ChaCha8Rng::seed_from_u64(seed * 100 + s as u64);
            let events = simulate_bank(&mut rng, shape);
            let lost = events.iter().filter(|e| e.kind == EventKind::Info).count();
            let history = History::from_events(events);
            let verdict = check_history(ModelKind::Bank, &history, Budget::default()).unwrap();
            assert_eq!(verdict, Verdict::Ok, "shape {s} seed {seed} ({lost} lost answers)");
        }
    }
}

#[test]
fn planted_stale_read_is_caught() {
    let shape = Shape { processes: 6, operations: 200, accounts: 2, lost: 0.0, amounts: None };
    let mut rng = ChaCha8Rng::seed_from_u64(7);
    let mut events = simulate_bank(&mut rng, &shape);
    // The last ok read whose account saw an acknowledged update (with a told balance) that
    // completed before the read was invoked: make it return the balance before that update.
    let mut planted = None;
    for (r, read) in events.iter().enumerate().rev() {
        if read.kind != EventKind::Ok || read.f != "read" {
            continue;
        }
        let invoke = (0..r).rev().find(|&i| events[i].process == read.process && events[i].kind == EventKind::Invoke);
        let Some(invoke) = invoke else { continue };
        let update = (0..invoke).rev().find(|&i| {
            let e = &events[i];
            e.kind == EventKind::Ok && e.f == "deposit" && e.key == read.key && e.balance.is_some()
        });
        if let Some(u) = update {
            let after: rust_decimal::Decimal = events[u].balance.as_ref().unwrap().parse().unwrap();
            let amount: rust_decimal::Decimal = events[u].value.as_ref().unwrap().as_str().unwrap().parse().unwrap();
            if events[r].value.as_ref().and_then(|v| v.as_str()) == Some(&after.to_string()) {
                planted = Some((r, after - amount));
                break;
            }
        }
    }
    let (r, stale) = planted.expect("the simulation has a read right after a deposit");
    events[r].value = Some(serde_json::Value::String(stale.to_string()));
    let history = History::from_events(events);
    match check_history(ModelKind::Bank, &history, Budget::default()).unwrap() {
        Verdict::Violation(witness) => assert!(!witness.pending.is_empty()),
        other => panic!("the stale read at event {r} was not caught: {other:?}"),
    }
}
