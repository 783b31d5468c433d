//! Ledger clients: they open accounts, then run seeded mixes of deposits, withdrawals,
//! transfers and reads against the api nodes, recording what they saw in the history.
//!
//! A client retries an ambiguous answer or a timeout with the same idempotency key, on another
//! api node, a bounded number of times. Once an attempt was ambiguous, no later refusal is a
//! definite "not applied" (the first attempt may still commit), so the operation ends as `info`
//! unless an attempt succeeds.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use madsim::net::Endpoint;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use rust_decimal::Decimal;
use serde_json::{Value, json};

use super::invariants::OpRecord;
use super::world::{HttpReq, HttpResp, api_addr, query_addr};
use crate::history::{EventKind, History, HistoryEvent};
use crate::trace;

/// Attempts of one operation before the client gives up.
pub const CLIENT_ATTEMPTS_MAX: u32 = 5;
/// How long a client waits for one answer.
pub const CLIENT_REQUEST_TIMEOUT: Duration = Duration::from_secs(5);
/// Pause between attempts.
pub const CLIENT_RETRY_PAUSE: Duration = Duration::from_millis(200);

/// What clients do, drawn per seed.
#[derive(Debug, Clone)]
pub struct WorkloadConfig {
    pub accounts: Vec<(String, Decimal)>,
    pub clients: usize,
    pub ops_per_client: usize,
    /// Relative weights of deposit, withdraw, transfer, read, read-model read.
    pub mix: [u32; 5],
    /// Longest pause between two operations of a client.
    pub think_max: Duration,
    pub api_nodes: usize,
}

/// One client's operation, as sent.
#[derive(Debug, Clone)]
pub enum Op {
    Open { account: String, balance: Decimal },
    Deposit { account: String, amount: Decimal },
    Withdraw { account: String, amount: Decimal },
    Transfer { from: String, to: String, amount: Decimal },
    Read { account: String },
    ReadModel { account: String },
}

impl Op {
    fn f(&self) -> &'static str {
        match self {
            Op::Open { .. } => "open",
            Op::Deposit { .. } => "deposit",
            Op::Withdraw { .. } => "withdraw",
            Op::Transfer { .. } => "transfer",
            Op::Read { .. } => "read",
            Op::ReadModel { .. } => "read_model",
        }
    }

    fn account(&self) -> &str {
        match self {
            Op::Open { account, .. }
            | Op::Deposit { account, .. }
            | Op::Withdraw { account, .. }
            | Op::Read { account }
            | Op::ReadModel { account } => account,
            Op::Transfer { from, .. } => from,
        }
    }

    fn request(&self, key: &str) -> (SocketAddr, HttpReq) {
        let command = |kind: &str, body: Value| HttpReq {
            method: "POST".into(),
            path: format!("/api/v1/commands/{kind}"),
            query: None,
            idempotency_key: Some(key.to_string()),
            body: body.to_string().into_bytes(),
        };
        let read = |account: &str| HttpReq {
            method: "GET".into(),
            path: format!("/api/v1/accounts/{account}/balance"),
            query: None,
            idempotency_key: None,
            body: Vec::new(),
        };
        let api = api_addr(0);
        match self {
            Op::Open { account, balance } => (
                api,
                command(
                    "create-account",
                    json!({"account_id": account, "owner_name": format!("Owner {account}"),
                           "initial_balance": balance.to_string(), "currency": "USD"}),
                ),
            ),
            Op::Deposit { account, amount } => {
                (api, command("deposit", json!({"account_id": account, "amount": amount.to_string()})))
            }
            Op::Withdraw { account, amount } => {
                (api, command("withdraw", json!({"account_id": account, "amount": amount.to_string()})))
            }
            Op::Transfer { from, to, amount } => (
                api,
                command(
                    "transfer",
                    json!({"from_account_id": from, "to_account_id": to, "amount": amount.to_string()}),
                ),
            ),
            Op::Read { account } => (api, read(account)),
            Op::ReadModel { account } => (query_addr(), read(account)),
        }
    }

    fn invoke_event(&self, process: u64, time: u64) -> HistoryEvent {
        let mut e = HistoryEvent::new(process, EventKind::Invoke, self.f(), time);
        e.key = Some(self.account().to_string());
        match self {
            Op::Open { balance, .. } => e.value = Some(json!(balance.to_string())),
            Op::Deposit { amount, .. } | Op::Withdraw { amount, .. } => e.value = Some(json!(amount.to_string())),
            Op::Transfer { to, amount, .. } => {
                e.to = Some(to.clone());
                e.value = Some(json!(amount.to_string()));
            }
            Op::Read { .. } | Op::ReadModel { .. } => {}
        }
        e
    }
}

/// The final answer a client saw for one operation.
#[derive(Debug, Clone, PartialEq)]
pub enum Outcome {
    Ok { balance: Option<String>, value: Option<String> },
    Fail(String),
    Info,
}

/// One client: an endpoint of its own, a process id, the history.
pub struct Client {
    pub index: usize,
    ep: Endpoint,
    history: History,
    ops: Arc<Mutex<Vec<OpRecord>>>,
    /// Retries go to the next api node (a load balancer's failover) or stay on the first.
    pub failover: bool,
    api_nodes: usize,
    /// Jepsen's rule: after an `info` a process never issues again, so it takes a new id.
    process: u64,
    processes_stride: u64,
    name: String,
}

impl Client {
    pub async fn new(
        index: usize,
        clients: usize,
        api_nodes: usize,
        history: History,
        ops: Arc<Mutex<Vec<OpRecord>>>,
    ) -> Client {
        Client {
            index,
            ep: Endpoint::bind("0.0.0.0:0").await.expect("bind client"),
            history,
            ops,
            failover: true,
            api_nodes,
            process: index as u64,
            processes_stride: clients as u64,
            name: format!("client-{}", index + 1),
        }
    }

    /// Runs one operation to its final answer, recording invoke and completion.
    pub async fn run(&mut self, op: &Op, key: &str, first_api: usize) -> Outcome {
        self.history.record(op.invoke_event(self.process, trace::now_nanos()));
        let outcome = self.attempts(op, key, first_api).await;
        let mut done = HistoryEvent::new(self.process, EventKind::Info, op.f(), trace::now_nanos());
        done.key = Some(op.account().to_string());
        match &outcome {
            Outcome::Ok { balance, value } => {
                done.kind = EventKind::Ok;
                done.balance = balance.clone();
                done.value = match op {
                    Op::Read { .. } | Op::ReadModel { .. } => value.clone().map(Value::String),
                    _ => op.invoke_event(0, 0).value,
                };
                if let Op::Transfer { to, .. } = op {
                    done.to = Some(to.clone());
                }
            }
            Outcome::Fail(error) => {
                done.kind = EventKind::Fail;
                done.error = Some(error.clone());
            }
            Outcome::Info => {}
        }
        trace::record(&self.name, &format!("{} {key} -> {outcome:?}", op.f()));
        self.history.record(done);
        let label = match outcome {
            Outcome::Ok { .. } => "ok",
            Outcome::Fail(_) => "fail",
            Outcome::Info => "info",
        };
        self.ops.lock().expect("not poisoned").push(OpRecord {
            key: key.to_string(),
            f: op.f().into(),
            outcome: label.into(),
        });
        if outcome == Outcome::Info {
            self.process += self.processes_stride;
        }
        outcome
    }

    async fn attempts(&self, op: &Op, key: &str, first_api: usize) -> Outcome {
        let read = matches!(op, Op::Read { .. } | Op::ReadModel { .. });
        let mut ambiguous = false;
        let mut last_error = String::from("unavailable");
        for attempt in 0..CLIENT_ATTEMPTS_MAX {
            if attempt > 0 {
                madsim::time::sleep(CLIENT_RETRY_PAUSE).await;
            }
            let (mut addr, req) = op.request(key);
            if addr.port() == api_addr(0).port() {
                let step = if self.failover { attempt as usize } else { 0 };
                addr = api_addr((first_api + step) % self.api_nodes);
            }
            let answer: HttpResp = match self.ep.call_timeout(addr, req, CLIENT_REQUEST_TIMEOUT).await {
                Ok(answer) => answer,
                Err(_) => {
                    ambiguous |= !read;
                    continue;
                }
            };
            let error = answer.body["error"].as_str().unwrap_or("").to_string();
            match answer.status {
                200 | 201 => {
                    let balance = answer.body["balance"].as_str().map(str::to_string);
                    return if read {
                        Outcome::Ok { balance: None, value: balance }
                    } else {
                        Outcome::Ok { balance, value: None }
                    };
                }
                503 if error == "ambiguous" => ambiguous = true,
                // Definitely not applied, this time: try again (another api node).
                503 | 504 => last_error = error,
                409 if error == "conflict" => last_error = error,
                _ => {
                    return if ambiguous && !read { Outcome::Info } else { Outcome::Fail(error) };
                }
            }
        }
        if ambiguous { Outcome::Info } else { Outcome::Fail(last_error) }
    }
}

/// A seeded generator per client, derived from the run's seed.
pub fn client_rng(seed: u64, client: usize) -> ChaCha8Rng {
    ChaCha8Rng::seed_from_u64(seed ^ (0x9E37_79B9_7F4A_7C15u64.wrapping_mul(client as u64 + 1)))
}

/// Draws the next operation of a client.
pub fn next_op(rng: &mut ChaCha8Rng, config: &WorkloadConfig) -> Op {
    let accounts = &config.accounts;
    let pick = |rng: &mut ChaCha8Rng| accounts[rng.gen_range(0..accounts.len())].0.clone();
    let cents = |rng: &mut ChaCha8Rng, max: i64| Decimal::new(rng.gen_range(1..=max) * 100, 2);
    let total: u32 = config.mix.iter().sum();
    let mut roll = rng.gen_range(0..total);
    let mut kind = 0;
    for (i, weight) in config.mix.iter().enumerate() {
        if roll < *weight {
            kind = i;
            break;
        }
        roll -= weight;
    }
    match kind {
        0 => Op::Deposit { account: pick(rng), amount: cents(rng, 50) },
        1 => Op::Withdraw { account: pick(rng), amount: cents(rng, 80) },
        2 if accounts.len() > 1 => {
            let from = pick(rng);
            let mut to = pick(rng);
            while to == from {
                to = pick(rng);
            }
            Op::Transfer { from, to, amount: cents(rng, 60) }
        }
        3 | 2 => Op::Read { account: pick(rng) },
        _ => Op::ReadModel { account: pick(rng) },
    }
}

/// Runs one client's share of the mixed workload.
pub async fn run_mixed(seed: u64, mut client: Client, config: Arc<WorkloadConfig>) {
    let mut rng = client_rng(seed, client.index);
    for n in 0..config.ops_per_client {
        let op = next_op(&mut rng, &config);
        let key = format!("c{}-{n}", client.index + 1);
        let first_api = rng.gen_range(0..config.api_nodes);
        client.run(&op, &key, first_api).await;
        let think = rng.gen_range(0..=config.think_max.as_millis() as u64);
        madsim::time::sleep(Duration::from_millis(think)).await;
    }
}
