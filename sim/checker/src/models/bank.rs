//! The bank model of the ledger's histories (DESIGN section 8): accounts opened with a balance,
//! deposits, withdrawals, reads and transfers; with the translation of a history into one
//! partition per set of accounts joined by transfers.
//!
//! Semantics:
//! - An account does not exist before an `open`; an ok `open` of an existing account, or any
//!   ok operation on an account that does not exist, is illegal.
//! - `withdraw` and `transfer` (key = source, `to` = target) never make a balance negative.
//! - An ok may carry `balance`, the balance of `key` after the operation; the model must match.
//! - `fail` with error `insufficient_funds` is an observation: the operation took effect when
//!   the balance of `key` (which exists) was below the amount, and changed nothing. Any other
//!   fail constrains nothing; `info` and unanswered invokes are unknown outcomes.
//! - An ok read returns the balance, or null for an account that does not exist.
//! - `read_model` (a read of the ledger's eventually consistent read model, stale by design)
//!   constrains nothing: it is accepted and skipped, so the ledger's histories check as they are.
//! - Amounts are decimal strings (or JSON numbers) compared exactly (10.0 == 10.00): all of a
//!   history's amounts are scaled to one integer unit, never floats.
//!
//! It does not check the ledger's other invariants (conservation, idempotency): other checkers
//! do.

use std::collections::{BTreeMap, BTreeSet};
use std::str::FromStr;

use rust_decimal::Decimal;

use crate::history::{EventKind, History, HistoryError, HistoryEvent};
use crate::model::{Model, Operation, Partition};
use crate::models::{bad_field, op_events};

/// The error of a fail that is an observation of a low balance.
pub const INSUFFICIENT_FUNDS: &str = "insufficient_funds";

/// Accounts in one partition, at most (an account index is a u16).
pub const PARTITION_ACCOUNTS_MAX: usize = u16::MAX as usize;

/// A bank operation; accounts are indexes into the partition's accounts, amounts integers in
/// the history's unit (see [`BankModel::amount_text`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum BankInput {
    Open { account: u16, amount: i128 },
    Deposit { account: u16, amount: i128 },
    Withdraw { account: u16, amount: i128 },
    Read { account: u16 },
    Transfer { from: u16, to: u16, amount: i128 },
}

/// What a bank operation returned.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum BankOutput {
    /// An ok open, deposit, withdraw or transfer, with the balance of `key` the client was told.
    Done { balance: Option<i128> },
    /// An ok read: the balance, or `None` for an account that does not exist.
    Read(Option<i128>),
    /// A fail with `insufficient_funds`.
    InsufficientFunds,
}

/// The balances of one partition's accounts (`None`: not opened yet).
pub type Balances = Box<[Option<i128>]>;

/// The accounts of one partition.
#[derive(Debug, Clone)]
pub struct BankModel {
    accounts: Vec<String>,
    /// Amounts are integers of 10^-scale.
    scale: u32,
}

impl BankModel {
    /// The accounts of the partition, in index order.
    pub fn accounts(&self) -> &[String] {
        &self.accounts
    }

    /// An amount as a decimal string.
    pub fn amount_text(&self, amount: i128) -> String {
        Decimal::from_i128_with_scale(amount, self.scale).to_string()
    }
}

/// The balance of `account` after a successful operation must be what the client was told.
fn told(balance: Option<i128>, after: i128) -> bool {
    balance.is_none_or(|b| b == after)
}

impl Model for BankModel {
    type State = Balances;
    type Input = BankInput;
    type Output = BankOutput;

    fn init(&self) -> Balances {
        vec![None; self.accounts.len()].into_boxed_slice()
    }

    fn step(&self, state: &Balances, input: &BankInput, output: Option<&BankOutput>) -> Option<Balances> {
        let balance_told = match output {
            Some(BankOutput::Done { balance }) => *balance,
            _ => None,
        };
        let low = matches!(output, Some(BankOutput::InsufficientFunds));
        let with = |changes: &[(u16, i128)]| -> Balances {
            let mut next = state.clone();
            for &(account, balance) in changes {
                next[account as usize] = Some(balance);
            }
            next
        };
        match *input {
            BankInput::Open { account, amount } => {
                let opened = state[account as usize].is_none() && told(balance_told, amount) && !low;
                opened.then(|| with(&[(account, amount)]))
            }
            BankInput::Read { account } => match output {
                Some(BankOutput::Read(seen)) => (*seen == state[account as usize]).then(|| state.clone()),
                None => Some(state.clone()),
                Some(_) => None,
            },
            BankInput::Deposit { account, amount } => {
                let balance = state[account as usize]?;
                if low {
                    return (balance < amount).then(|| state.clone());
                }
                let after = balance.checked_add(amount)?;
                told(balance_told, after).then(|| with(&[(account, after)]))
            }
            BankInput::Withdraw { account, amount } => {
                let balance = state[account as usize]?;
                if low {
                    return (balance < amount).then(|| state.clone());
                }
                let after = balance.checked_sub(amount).filter(|&a| a >= 0)?;
                told(balance_told, after).then(|| with(&[(account, after)]))
            }
            BankInput::Transfer { from, to, amount } => {
                let balance = state[from as usize]?;
                if low {
                    return (balance < amount).then(|| state.clone());
                }
                let target = state[to as usize]?;
                let after = balance.checked_sub(amount).filter(|&a| a >= 0)?;
                if from == to {
                    return told(balance_told, balance).then(|| state.clone());
                }
                let target_after = target.checked_add(amount)?;
                told(balance_told, after).then(|| with(&[(from, after), (to, target_after)]))
            }
        }
    }

    fn read_only(&self, input: &BankInput, output: Option<&BankOutput>) -> bool {
        matches!((input, output), (BankInput::Read { .. }, Some(_)) | (_, Some(BankOutput::InsufficientFunds)))
    }

    fn describe_state(&self, state: &Balances) -> String {
        let balances: Vec<String> = self
            .accounts
            .iter()
            .zip(state.iter())
            .map(|(name, balance)| match balance {
                Some(b) => format!("{name} = {}", self.amount_text(*b)),
                None => format!("{name} not opened"),
            })
            .collect();
        balances.join(", ")
    }
}

/// Parses an amount: a decimal string, or a JSON number (whose exact text serde_json keeps).
fn parse_decimal(value: &serde_json::Value) -> Option<Decimal> {
    let text = match value {
        serde_json::Value::String(s) => s.clone(),
        serde_json::Value::Number(n) => n.to_string(),
        _ => return None,
    };
    Decimal::from_str(text.trim()).or_else(|_| Decimal::from_scientific(text.trim())).ok()
}

/// One operation before amounts are scaled and accounts numbered.
struct Pending {
    f: Function,
    key: String,
    to: Option<String>,
    amount: Option<Decimal>,
    output: Option<PendingOutput>,
    invoke: usize,
    completion: Option<usize>,
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Function {
    Open,
    Deposit,
    Withdraw,
    Read,
    Transfer,
}

enum PendingOutput {
    Done(Option<Decimal>),
    Read(Option<Decimal>),
    InsufficientFunds,
}

/// Reads one operation's events; `Ok(None)` for an operation that constrains nothing.
fn pending_op(op: &crate::models::OpEvents<'_>) -> Result<Option<Pending>, HistoryError> {
    let f = match op.invoke.f.as_str() {
        "open" => Function::Open,
        "deposit" => Function::Deposit,
        "withdraw" => Function::Withdraw,
        "read" => Function::Read,
        "transfer" => Function::Transfer,
        "read_model" => return Ok(None),
        other => {
            return Err(HistoryError::UnknownFunction { line: op.line, model: "bank", f: other.to_string() });
        }
    };
    let key = op.invoke.key.clone().ok_or_else(|| bad_field(op.line, "a bank operation needs a key (the account)"))?;
    let to = match f {
        Function::Transfer => Some(op.invoke.to.clone().ok_or_else(|| bad_field(op.line, "a transfer needs `to`"))?),
        _ => None,
    };
    let amount = if f == Function::Read {
        None
    } else {
        let value = op.invoke.value.as_ref().ok_or_else(|| bad_field(op.line, "missing amount in `value`"))?;
        let amount =
            parse_decimal(value).ok_or_else(|| bad_field(op.line, format!("amount {value} is not a decimal")))?;
        if amount.is_sign_negative() && !amount.is_zero() {
            return Err(bad_field(op.line, format!("amount {value} is negative")));
        }
        Some(amount)
    };
    let output = match op.completion {
        None => None,
        Some(HistoryEvent { kind: EventKind::Info, .. }) => None,
        Some(completion @ HistoryEvent { kind: EventKind::Fail, .. }) => {
            if completion.error.as_deref() != Some(INSUFFICIENT_FUNDS) {
                return Ok(None);
            }
            if matches!(f, Function::Open | Function::Read) {
                return Err(bad_field(
                    op.completion_line,
                    format!("{INSUFFICIENT_FUNDS} makes no sense for {}", op.invoke.f),
                ));
            }
            Some(PendingOutput::InsufficientFunds)
        }
        Some(completion) => {
            let decimal_field =
                |value: Option<&serde_json::Value>, what: &str| -> Result<Option<Decimal>, HistoryError> {
                    match value {
                        None | Some(serde_json::Value::Null) => Ok(None),
                        Some(v) => parse_decimal(v)
                            .map(Some)
                            .ok_or_else(|| bad_field(op.completion_line, format!("{what} {v} is not a decimal"))),
                    }
                };
            if f == Function::Read {
                Some(PendingOutput::Read(decimal_field(completion.value.as_ref(), "read value")?))
            } else {
                let echoed = decimal_field(completion.value.as_ref(), "amount")?;
                if echoed.is_some_and(|e| Some(e) != amount) {
                    return Err(bad_field(op.completion_line, "the ok's amount differs from the invoke's"));
                }
                let balance = completion.balance.as_ref().map(|b| serde_json::Value::String(b.clone()));
                Some(PendingOutput::Done(decimal_field(balance.as_ref(), "balance")?))
            }
        }
    };
    if f == Function::Read && output.is_none() {
        return Ok(None);
    }
    Ok(Some(Pending { f, key, to, amount, output, invoke: op.invoke_index, completion: op.completion_index }))
}

/// Union-find root with path halving.
fn root(parent: &mut [usize], mut node: usize) -> usize {
    while parent[node] != node {
        parent[node] = parent[parent[node]];
        node = parent[node];
    }
    node
}

/// Translates a history into one partition per connected component of accounts (joined by
/// transfers), in the order of each component's first account name.
///
/// # Errors
/// [`HistoryError`] when the history is malformed, a field is missing, or an amount is not a
/// non-negative decimal representable at the history's finest scale.
pub fn bank_partitions(history: &History) -> Result<Vec<Partition<BankModel>>, HistoryError> {
    let mut pendings = Vec::new();
    for op in op_events(history)? {
        if let Some(p) = pending_op(&op)? {
            pendings.push((p, op.line));
        }
    }
    // One integer unit for the whole history: the finest scale of any amount.
    let mut scale = 0;
    for (p, _) in &pendings {
        let outputs = match &p.output {
            Some(PendingOutput::Done(d) | PendingOutput::Read(d)) => *d,
            _ => None,
        };
        for d in p.amount.iter().chain(outputs.iter()) {
            scale = scale.max(d.scale());
        }
    }
    let to_units = |d: Decimal, line: usize| -> Result<i128, HistoryError> {
        let factor = 10i128.pow(scale - d.scale());
        d.mantissa()
            .checked_mul(factor)
            .ok_or_else(|| bad_field(line, format!("amount {d} is out of range at scale {scale}")))
    };
    // Accounts by name; ids in name order.
    let names: BTreeSet<String> =
        pendings.iter().flat_map(|(p, _)| std::iter::once(p.key.clone()).chain(p.to.clone())).collect();
    let names: Vec<String> = names.into_iter().collect();
    let ids: BTreeMap<&str, usize> = names.iter().enumerate().map(|(i, n)| (n.as_str(), i)).collect();
    let mut parent: Vec<usize> = (0..names.len()).collect();
    for (p, _) in &pendings {
        if let Some(to) = &p.to {
            let (a, b) = (root(&mut parent, ids[p.key.as_str()]), root(&mut parent, ids[to.as_str()]));
            parent[a.max(b)] = a.min(b);
        }
    }
    // Components keyed by their root, which is their smallest id (first name).
    let mut components: BTreeMap<usize, Vec<usize>> = BTreeMap::new();
    for id in 0..names.len() {
        let r = root(&mut parent, id);
        components.entry(r).or_default().push(id);
    }
    let mut partitions: BTreeMap<usize, Partition<BankModel>> = BTreeMap::new();
    let mut local = vec![0u16; names.len()];
    for (&r, members) in &components {
        if members.len() > PARTITION_ACCOUNTS_MAX {
            return Err(bad_field(0, format!("more than {PARTITION_ACCOUNTS_MAX} accounts joined by transfers")));
        }
        for (index, &id) in members.iter().enumerate() {
            local[id] = index as u16;
        }
        let accounts: Vec<String> = members.iter().map(|&id| names[id].clone()).collect();
        partitions.insert(
            r,
            Partition {
                label: format!("accounts {}", accounts.join(", ")),
                model: BankModel { accounts, scale },
                operations: Vec::new(),
            },
        );
    }
    for (p, line) in pendings {
        let id = ids[p.key.as_str()];
        let account = local[id];
        let amount = p.amount.map(|a| to_units(a, line)).transpose()?.unwrap_or(0);
        let input = match p.f {
            Function::Open => BankInput::Open { account, amount },
            Function::Deposit => BankInput::Deposit { account, amount },
            Function::Withdraw => BankInput::Withdraw { account, amount },
            Function::Read => BankInput::Read { account },
            Function::Transfer => BankInput::Transfer {
                from: account,
                to: local[ids[p.to.as_deref().expect("transfers have a target")]],
                amount,
            },
        };
        let output = match p.output {
            None => None,
            Some(PendingOutput::InsufficientFunds) => Some(BankOutput::InsufficientFunds),
            Some(PendingOutput::Done(balance)) => {
                Some(BankOutput::Done { balance: balance.map(|b| to_units(b, line)).transpose()? })
            }
            Some(PendingOutput::Read(balance)) => {
                Some(BankOutput::Read(balance.map(|b| to_units(b, line)).transpose()?))
            }
        };
        let partition = partitions.get_mut(&root(&mut parent, id)).expect("every account has a component");
        partition.operations.push(Operation { input, output, invoke: p.invoke, completion: p.completion });
    }
    Ok(partitions.into_values().collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn model() -> BankModel {
        BankModel { accounts: vec!["a".into(), "b".into()], scale: 2 }
    }

    /// Goal: each function's rule, one step at a time.
    #[test]
    fn steps() {
        let m = model();
        let s0 = m.init();
        let open = BankInput::Open { account: 0, amount: 1000 };
        let s1 = m.step(&s0, &open, Some(&BankOutput::Done { balance: None })).unwrap();
        assert_eq!(&*s1, &[Some(1000), None]);
        assert!(m.step(&s1, &open, None).is_none(), "opened twice");
        let withdraw = BankInput::Withdraw { account: 0, amount: 1500 };
        assert!(m.step(&s1, &withdraw, Some(&BankOutput::Done { balance: None })).is_none());
        assert_eq!(m.step(&s1, &withdraw, Some(&BankOutput::InsufficientFunds)), Some(s1.clone()));
        let small = BankInput::Withdraw { account: 0, amount: 400 };
        assert!(m.step(&s1, &small, Some(&BankOutput::InsufficientFunds)).is_none());
        assert!(m.step(&s1, &small, Some(&BankOutput::Done { balance: Some(500) })).is_none());
        let s2 = m.step(&s1, &small, Some(&BankOutput::Done { balance: Some(600) })).unwrap();
        let transfer = BankInput::Transfer { from: 0, to: 1, amount: 100 };
        assert!(m.step(&s2, &transfer, None).is_none(), "target not opened");
        let read = BankInput::Read { account: 1 };
        assert_eq!(m.step(&s2, &read, Some(&BankOutput::Read(None))), Some(s2.clone()));
        assert!(m.step(&s2, &read, Some(&BankOutput::Read(Some(0)))).is_none());
        assert_eq!(m.describe_state(&s2), "a = 6.00, b not opened");
    }
}
