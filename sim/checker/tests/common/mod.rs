//! Shared by the bank tests: a simulation of clients against a true bank, whose histories are
//! linearizable by construction, and the decimal helpers it needs.

#![allow(dead_code)] // each test binary uses part of it

use std::collections::BTreeMap;
use std::str::FromStr;

use checker::{EventKind, HistoryEvent};
use rand::Rng;
use rand_chacha::ChaCha8Rng;
use rust_decimal::Decimal;

/// The true bank: account -> balance.
pub type Bank = BTreeMap<String, Decimal>;

pub fn dec(text: &str) -> Decimal {
    Decimal::from_str(text).unwrap()
}

pub fn value_text(value: &Option<serde_json::Value>) -> Option<String> {
    match value {
        Some(serde_json::Value::String(s)) => Some(s.clone()),
        _ => None,
    }
}

/// What to simulate.
pub struct Shape {
    pub processes: usize,
    pub operations: usize,
    /// Accounts `acct-0` .. `acct-{accounts - 1}`.
    pub accounts: usize,
    /// Probability that an answer is lost (`info`); a third of it again for harmless failures.
    pub lost: f64,
    /// Amounts to draw from; `None`: random decimals below 300.
    pub amounts: Option<&'static [&'static str]>,
}

/// Simulates clients against a true bank: each operation takes effect at a random moment
/// between its invoke and its completion; a lost answer becomes `info` and took effect or not;
/// the history may end with operations in flight. It is linearizable by construction.
pub fn simulate_bank(rng: &mut ChaCha8Rng, shape: &Shape) -> Vec<HistoryEvent> {
    #[derive(Clone)]
    enum Phase {
        Idle,
        /// Invoked; the effect is still to come. `lose`: the answer will be lost (info).
        Invoked {
            event: HistoryEvent,
            lose: bool,
            apply: bool,
        },
        /// Took effect; the completion is still to come.
        Done {
            completion: HistoryEvent,
        },
    }
    let (processes, operations, accounts) = (shape.processes, shape.operations, shape.accounts);
    let account = |i: usize| format!("acct-{i}");
    let amount = |rng: &mut ChaCha8Rng| match shape.amounts {
        Some(amounts) => amounts[rng.gen_range(0..amounts.len())].to_string(),
        None => format!("{}.{:02}", rng.gen_range(0..300), rng.gen_range(0..100)),
    };
    let mut bank = Bank::new();
    let mut phases = vec![Phase::Idle; processes];
    let mut invoked = 0;
    let mut events = Vec::new();
    let mut time = 0u64;
    loop {
        let busy = phases.iter().any(|p| !matches!(p, Phase::Idle));
        if invoked == operations && !busy {
            break;
        }
        // Sometimes the history just ends with operations in flight.
        if invoked == operations && rng.gen_bool(0.05) {
            break;
        }
        let p = rng.gen_range(0..processes);
        time += rng.gen_range(1..100);
        match phases[p].clone() {
            Phase::Idle => {
                if invoked == operations {
                    continue;
                }
                invoked += 1;
                let key = account(rng.gen_range(0..accounts));
                let f = if !bank.contains_key(&key) && rng.gen_bool(0.6) {
                    "open"
                } else {
                    ["open", "deposit", "withdraw", "withdraw", "read", "read", "transfer", "transfer"]
                        [rng.gen_range(0..8)]
                };
                let mut event = HistoryEvent::new(p as u64, EventKind::Invoke, f, time);
                event.key = Some(key);
                if f != "read" {
                    event.value = Some(serde_json::Value::String(amount(rng)));
                }
                if f == "transfer" {
                    event.to = Some(account(rng.gen_range(0..accounts)));
                }
                events.push(event.clone());
                let lose = rng.gen_bool(shape.lost);
                phases[p] = Phase::Invoked { event, lose, apply: !lose || rng.gen_bool(0.5) };
            }
            Phase::Invoked { event, lose, apply } => {
                let mut completion = HistoryEvent::new(p as u64, EventKind::Ok, &event.f, 0);
                completion.key = event.key.clone();
                let key = event.key.clone().unwrap();
                let amount = value_text(&event.value).map(|t| dec(&t));
                let harmless = !apply || rng.gen_bool(shape.lost / 3.0);
                let error = |c: &mut HistoryEvent, e: &str| {
                    c.kind = EventKind::Fail;
                    c.error = Some(e.to_string());
                };
                if harmless {
                    error(&mut completion, "unavailable");
                } else {
                    match event.f.as_str() {
                        "open" => {
                            if bank.contains_key(&key) {
                                error(&mut completion, "already_exists");
                            } else {
                                bank.insert(key.clone(), amount.unwrap());
                            }
                        }
                        "read" => match bank.get(&key) {
                            Some(b) => completion.value = Some(serde_json::Value::String(b.to_string())),
                            None => completion.value = Some(serde_json::Value::Null),
                        },
                        f => {
                            let amount = amount.unwrap();
                            let to = event.to.clone();
                            match (bank.get(&key).copied(), to.as_ref().map(|t| bank.get(t).copied())) {
                                (None, _) | (_, Some(None)) => error(&mut completion, "not_found"),
                                (Some(b), _) if f != "deposit" && b < amount => {
                                    error(&mut completion, "insufficient_funds")
                                }
                                (Some(b), target) => {
                                    match (f, to, target) {
                                        ("deposit", ..) => bank.insert(key.clone(), b + amount),
                                        ("withdraw", ..) => bank.insert(key.clone(), b - amount),
                                        (_, Some(to), Some(Some(t))) if to != key => {
                                            bank.insert(to, t + amount);
                                            bank.insert(key.clone(), b - amount)
                                        }
                                        _ => None, // a transfer to the same account
                                    };
                                    completion.value = event.value.clone();
                                    if rng.gen_bool(0.5) {
                                        completion.balance = Some(bank[&key].to_string());
                                    }
                                }
                            }
                        }
                    }
                }
                if lose {
                    completion = HistoryEvent::new(p as u64, EventKind::Info, &event.f, 0);
                    completion.error = Some("timeout".into());
                }
                phases[p] = Phase::Done { completion };
            }
            Phase::Done { mut completion } => {
                completion.time = time;
                events.push(completion);
                phases[p] = Phase::Idle;
            }
        }
    }
    events
}
