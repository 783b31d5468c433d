//! The ledger's seeded workload, independent of transport: what clients do (accounts, the mix
//! of operations, each operation's request), how a client reads an answer (retry, ambiguity,
//! final outcome) and what it records in the history. Both builds: the simulator's clients
//! (`client`) carry it over madsim's network, the real runner over HTTP, so a seed gives both
//! the same operations.
//!
//! A client retries an ambiguous answer or a timeout with the same idempotency key, on another
//! api node, a bounded number of times. Once an attempt was ambiguous, no later refusal is a
//! definite "not applied" (the first attempt may still commit), so the operation ends as `info`
//! unless an attempt succeeds.

use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use rust_decimal::Decimal;
use serde_json::{Value, json};

use super::invariants::OpRecord;
use crate::history::{EventKind, History, HistoryEvent};
use crate::http::{HttpReq, HttpResp};

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

/// Which API an operation goes to: the command API (any of its instances; strong reads too) or
/// the query API over the read model.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Target {
    Command,
    Query,
}

/// One client's operation, as sent.
#[derive(Debug, Clone)]
pub enum Op {
    Open {
        account: String,
        balance: Decimal,
    },
    Deposit {
        account: String,
        amount: Decimal,
    },
    Withdraw {
        account: String,
        amount: Decimal,
    },
    Transfer {
        from: String,
        to: String,
        amount: Decimal,
    },
    Read {
        account: String,
    },
    /// A read of the query API; with `min_position`, it asks for at least that version (the
    /// client's own last acknowledged write on the account: read-your-writes).
    ReadModel {
        account: String,
        min_position: Option<u64>,
    },
}

impl Op {
    pub fn f(&self) -> &'static str {
        match self {
            Op::Open { .. } => "open",
            Op::Deposit { .. } => "deposit",
            Op::Withdraw { .. } => "withdraw",
            Op::Transfer { .. } => "transfer",
            Op::Read { .. } => "read",
            Op::ReadModel { .. } => "read_model",
        }
    }

    pub fn account(&self) -> &str {
        match self {
            Op::Open { account, .. }
            | Op::Deposit { account, .. }
            | Op::Withdraw { account, .. }
            | Op::Read { account }
            | Op::ReadModel { account, .. } => account,
            Op::Transfer { from, .. } => from,
        }
    }

    /// The request of this operation under an idempotency key, and which API serves it.
    pub fn request(&self, key: &str) -> (Target, HttpReq) {
        let command = |kind: &str, body: Value| HttpReq::post(format!("/api/v1/commands/{kind}"), Some(key), &body);
        let read = |account: &str| HttpReq::get(format!("/api/v1/accounts/{account}/balance"));
        match self {
            Op::Open { account, balance } => (
                Target::Command,
                command(
                    "create-account",
                    json!({"account_id": account, "owner_name": format!("Owner {account}"),
                           "initial_balance": balance.to_string(), "currency": "USD"}),
                ),
            ),
            Op::Deposit { account, amount } => {
                (Target::Command, command("deposit", json!({"account_id": account, "amount": amount.to_string()})))
            }
            Op::Withdraw { account, amount } => {
                (Target::Command, command("withdraw", json!({"account_id": account, "amount": amount.to_string()})))
            }
            Op::Transfer { from, to, amount } => (
                Target::Command,
                command(
                    "transfer",
                    json!({"from_account_id": from, "to_account_id": to, "amount": amount.to_string()}),
                ),
            ),
            Op::Read { account } => (Target::Command, read(account)),
            Op::ReadModel { account, min_position } => {
                let mut req = read(account);
                req.query = min_position.map(|n| format!("min_position={n}"));
                (Target::Query, req)
            }
        }
    }

    pub fn is_read(&self) -> bool {
        matches!(self, Op::Read { .. } | Op::ReadModel { .. })
    }

    pub fn invoke_event(&self, process: u64, time: u64) -> HistoryEvent {
        let mut e = HistoryEvent::new(process, EventKind::Invoke, self.f(), time);
        e.key = Some(self.account().to_string());
        match self {
            Op::Open { balance, .. } => e.value = Some(json!(balance.to_string())),
            Op::Deposit { amount, .. } | Op::Withdraw { amount, .. } => e.value = Some(json!(amount.to_string())),
            Op::Transfer { to, amount, .. } => {
                e.to = Some(to.clone());
                e.value = Some(json!(amount.to_string()));
            }
            Op::Read { .. } => {}
            Op::ReadModel { min_position, .. } => e.version = *min_position,
        }
        e
    }
}

/// The final answer a client saw for one operation.
#[derive(Debug, Clone, PartialEq)]
pub enum Outcome {
    /// `version`: the account's version the answer reported (a read's `version`, a write's
    /// `position`); `to_version`: a transfer's destination's (`to_position`).
    Ok {
        balance: Option<String>,
        value: Option<String>,
        version: Option<u64>,
        to_version: Option<u64>,
    },
    Fail(String),
    Info,
}

impl Outcome {
    pub fn label(&self) -> &'static str {
        match self {
            Outcome::Ok { .. } => "ok",
            Outcome::Fail(_) => "fail",
            Outcome::Info => "info",
        }
    }
}

/// How a client reads the answers of one operation's attempts, whatever carried them.
#[derive(Debug, Clone)]
pub struct Attempts {
    read: bool,
    ambiguous: bool,
    last_error: String,
}

impl Attempts {
    pub fn new(op: &Op) -> Attempts {
        Attempts { read: op.is_read(), ambiguous: false, last_error: String::from("unavailable") }
    }

    /// No answer within the timeout: a write may have been applied.
    pub fn timed_out(&mut self) {
        self.ambiguous |= !self.read;
    }

    /// An answer: the final outcome, or `None` to try again.
    pub fn answered(&mut self, status: u16, body: &Value) -> Option<Outcome> {
        let error = body["error"].as_str().unwrap_or("").to_string();
        match status {
            200 | 201 => {
                let balance = body["balance"].as_str().map(str::to_string);
                Some(if self.read {
                    Outcome::Ok { balance: None, value: balance, version: body["version"].as_u64(), to_version: None }
                } else {
                    let (version, to_version) = (body["position"].as_u64(), body["to_position"].as_u64());
                    Outcome::Ok { balance, value: None, version, to_version }
                })
            }
            503 if error == "ambiguous" => {
                self.ambiguous = true;
                None
            }
            // A proxy's answers when the instance took the request and then died (502) or did
            // not answer in time (504): a write may have been applied. Try again with the key.
            502 | 504 if !self.read => {
                self.ambiguous = true;
                self.last_error = if status == 502 { "bad_gateway".into() } else { "gateway_timeout".into() };
                None
            }
            502 => {
                self.last_error = "bad_gateway".into();
                None
            }
            // Definitely not applied, this time: try again (another api node). For a read with
            // `min_position`, 504 `position_not_reached`: the read model has not caught up within
            // the query API's wait (shorter than the client's timeout, so the answer arrives);
            // a redelivery may bring it there, so the read is tried again.
            503 | 504 => {
                self.last_error = error;
                None
            }
            409 if error == "conflict" => {
                self.last_error = error;
                None
            }
            _ => Some(if self.ambiguous && !self.read { Outcome::Info } else { Outcome::Fail(error) }),
        }
    }

    /// Out of attempts.
    pub fn finish(self) -> Outcome {
        if self.ambiguous { Outcome::Info } else { Outcome::Fail(self.last_error) }
    }
}

/// The completion event of an operation.
pub fn done_event(op: &Op, process: u64, outcome: &Outcome, time: u64) -> HistoryEvent {
    let mut done = HistoryEvent::new(process, EventKind::Info, op.f(), time);
    done.key = Some(op.account().to_string());
    match outcome {
        Outcome::Ok { balance, value, version, .. } => {
            done.kind = EventKind::Ok;
            done.version = *version;
            done.balance = balance.clone();
            done.value = if op.is_read() { value.clone().map(Value::String) } else { op.invoke_event(0, 0).value };
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
    done
}

/// The record of an operation's end, by its key.
pub fn op_record(op: &Op, key: &str, outcome: &Outcome) -> OpRecord {
    OpRecord { key: key.to_string(), f: op.f().into(), outcome: outcome.label().into() }
}

/// The mix of the standard mixed workload: deposit, withdraw, transfer, read, read-model read.
pub const MIXED_MIX: [u32; 5] = [30, 30, 20, 15, 5];
/// Longest think time of a client in the mixed workload.
pub const MIXED_THINK_MAX: Duration = Duration::from_millis(100);

/// Accounts with seeded opening balances.
pub fn draw_accounts(rng: &mut ChaCha8Rng, min: usize, max: usize) -> Vec<(String, Decimal)> {
    let n = rng.gen_range(min..=max);
    (0..n).map(|i| (format!("acct-{}", i + 1), Decimal::new(rng.gen_range(50..=500) * 100, 2))).collect()
}

/// The draws `ledger-chaos` makes from its seed before the accounts: the CockroachDB
/// contention-retry and ambiguous-commit rates.
pub fn draw_chaos_rates(rng: &mut ChaCha8Rng) -> (f64, f64) {
    let retry = rng.gen_range(0.0..0.5);
    let ambiguous = [0.0, 0.01, 0.05][rng.gen_range(0..3)];
    (retry, ambiguous)
}

/// Operations of one `ledger-chaos` run in the simulator, at least: its clients share them.
pub const CHAOS_OPERATIONS: usize = 500;

/// `ledger-chaos`'s workload for a seed: the accounts and the number of clients, as the
/// simulator draws them (the rest of the seed's generator then draws the fault plan).
pub fn chaos_workload(rng: &mut ChaCha8Rng) -> (Vec<(String, Decimal)>, usize) {
    let accounts = draw_accounts(rng, 3, 6);
    let clients = rng.gen_range(8..=10);
    (accounts, clients)
}

/// The idempotency key of a client's `n`th operation in the mixed workload.
pub fn mixed_key(client: usize, n: usize) -> String {
    format!("c{}-{n}", client + 1)
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
        _ => Op::ReadModel { account: pick(rng), min_position: None },
    }
}

/// What carries a client's requests and keeps its time: madsim's network and clock in the
/// simulator, HTTP and the wall clock in real runs.
pub trait Transport {
    /// Sends a request to the command API instance `api` (or the query API) and waits at most
    /// `timeout`; `None` when no answer came (the request may or may not have been applied).
    fn call(
        &self,
        target: Target,
        api: usize,
        req: HttpReq,
        timeout: Duration,
    ) -> impl Future<Output = Option<HttpResp>> + Send;
    fn pause(&self, pause: Duration) -> impl Future<Output = ()> + Send;
    /// Nanoseconds since the run began.
    fn now_nanos(&self) -> u64;
    /// A line for the run's trace.
    fn note(&self, client: &str, line: &str);
}

/// One client: a transport, a process id, the history.
pub struct Client<T> {
    pub index: usize,
    transport: T,
    history: History,
    ops: Arc<Mutex<Vec<OpRecord>>>,
    /// Retries go to the next api instance (a load balancer's failover) or stay on the first.
    pub failover: bool,
    api_nodes: usize,
    /// Jepsen's rule: after an `info` a process never issues again, so it takes a new id.
    process: u64,
    processes_stride: u64,
    name: String,
    /// Put before every idempotency key of the mixed workload: empty in the simulator, a run id
    /// against a deployment that outlives runs.
    pub key_prefix: String,
    /// The version of each account after this client's last acknowledged write on it: its
    /// query-API reads ask for at least that (`min_position`).
    written: std::collections::BTreeMap<String, u64>,
}

impl<T: Transport> Client<T> {
    pub fn new(
        index: usize,
        clients: usize,
        api_nodes: usize,
        transport: T,
        history: History,
        ops: Arc<Mutex<Vec<OpRecord>>>,
    ) -> Client<T> {
        Client {
            index,
            transport,
            history,
            ops,
            failover: true,
            api_nodes,
            process: index as u64,
            processes_stride: clients as u64,
            name: format!("client-{}", index + 1),
            key_prefix: String::new(),
            written: std::collections::BTreeMap::new(),
        }
    }

    /// Runs one operation to its final answer, recording invoke and completion.
    pub async fn run(&mut self, op: &Op, key: &str, first_api: usize) -> Outcome {
        let with_position;
        let op = match op {
            Op::ReadModel { account, min_position: None } if self.written.contains_key(account) => {
                with_position =
                    Op::ReadModel { account: account.clone(), min_position: self.written.get(account).copied() };
                &with_position
            }
            other => other,
        };
        self.history.record(op.invoke_event(self.process, self.transport.now_nanos()));
        let outcome = self.attempts(op, key, first_api).await;
        let done = done_event(op, self.process, &outcome, self.transport.now_nanos());
        self.transport.note(&self.name, &format!("{} {key} -> {outcome:?}", op.f()));
        self.history.record(done);
        self.ops.lock().expect("not poisoned").push(op_record(op, key, &outcome));
        if let (false, Outcome::Ok { version, to_version, .. }) = (op.is_read(), &outcome) {
            let to = match op {
                Op::Transfer { to, .. } => Some(to.as_str()),
                _ => None,
            };
            for (account, v) in [(Some(op.account()), version), (to, to_version)] {
                if let (Some(account), Some(v)) = (account, v) {
                    let known = self.written.entry(account.to_string()).or_default();
                    *known = (*known).max(*v);
                }
            }
        }
        if outcome == Outcome::Info {
            self.process += self.processes_stride;
        }
        outcome
    }

    async fn attempts(&self, op: &Op, key: &str, first_api: usize) -> Outcome {
        let mut attempts = Attempts::new(op);
        for attempt in 0..CLIENT_ATTEMPTS_MAX {
            if attempt > 0 {
                self.transport.pause(CLIENT_RETRY_PAUSE).await;
            }
            let (target, req) = op.request(key);
            let step = if self.failover { attempt as usize } else { 0 };
            let api = (first_api + step) % self.api_nodes;
            let Some(answer) = self.transport.call(target, api, req, CLIENT_REQUEST_TIMEOUT).await else {
                attempts.timed_out();
                continue;
            };
            if let Some(outcome) = attempts.answered(answer.status, &answer.body) {
                return outcome;
            }
        }
        attempts.finish()
    }

    /// Runs the client's share of the mixed workload while `more(n)` holds for its next
    /// operation `n`: the same seeded operations in the simulator and in real runs.
    pub async fn run_mixed(&mut self, seed: u64, config: &WorkloadConfig, mut more: impl FnMut(usize) -> bool) {
        let mut rng = client_rng(seed, self.index);
        let mut n = 0;
        while more(n) {
            let op = next_op(&mut rng, config);
            let key = format!("{}{}", self.key_prefix, mixed_key(self.index, n));
            let first_api = rng.gen_range(0..config.api_nodes);
            self.run(&op, &key, first_api).await;
            let think = rng.gen_range(0..=config.think_max.as_millis() as u64);
            self.transport.pause(Duration::from_millis(think)).await;
            n += 1;
        }
    }
}

/// Opens accounts, retrying each under fresh keys until it is open (or exists).
pub async fn open_accounts<T: Transport>(client: &mut Client<T>, accounts: &[(String, Decimal)]) {
    for (account, balance) in accounts {
        for attempt in 0..CLIENT_ATTEMPTS_MAX {
            let key = format!("open-{account}-{attempt}");
            let op = Op::Open { account: account.clone(), balance: *balance };
            match client.run(&op, &key, 0).await {
                Outcome::Ok { .. } => break,
                Outcome::Fail(e) if e == "account_exists" => break,
                _ => {}
            }
        }
    }
}
