//! Checking a whole history: the budget, the verdict and its witness, and the loop over a
//! model's partitions (P-compositionality: the history is linearizable iff every partition is).
//!
//! It does not parse files (see `read`) nor print (see `cli`).

use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use crate::history::{EventKind, History, HistoryError, HistoryEvent};
use crate::model::{Model, Partition};
use crate::models::bank::bank_partitions;
use crate::models::kv::kv_partitions;
use crate::models::register::register_partitions;
use crate::search::{Limits, SearchResult, search};

/// Search steps (nodes visited) per history when no budget is given. The hardest reference
/// file (kv/c50-ok) needs about 2% of it; at 10 to 40 ns a step, spending it all takes
/// seconds, not minutes.
pub const STEPS_MAX_DEFAULT: u64 = 100_000_000;

/// Wall time a check may take when no budget is given: a history that needs more answers
/// unknown rather than keep a machine busy.
pub const TIMEOUT_DEFAULT: Duration = Duration::from_secs(60);
/// Memory the search's tables may hold when no budget is given: a sixth of a 24 GiB machine.
pub const MEMORY_MAX_DEFAULT: usize = 4 << 30;

/// How much work a check may do before it answers [`Verdict::Unknown`]. Each limit is enforced
/// inside the search (time and memory every few thousand steps), so reaching one ends the check
/// promptly with the limit named.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Budget {
    /// Search steps over all partitions of a history.
    pub steps_max: u64,
    /// Wall time over all partitions (none: unbounded). Never set inside the simulator, whose
    /// verdicts must not depend on how fast the machine is.
    pub timeout: Option<Duration>,
    /// Bytes the search's tables (its memo, above all) may hold at once (none: unbounded).
    pub memory_max: Option<usize>,
}

impl Default for Budget {
    fn default() -> Self {
        Budget { steps_max: STEPS_MAX_DEFAULT, timeout: Some(TIMEOUT_DEFAULT), memory_max: Some(MEMORY_MAX_DEFAULT) }
    }
}

impl Budget {
    /// A budget of `steps_max` search steps only: deterministic (what the simulator uses).
    pub fn steps(steps_max: u64) -> Self {
        Budget { steps_max, timeout: None, memory_max: None }
    }
}

/// Which limit of a [`Budget`] ended a check.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Limit {
    Steps(u64),
    Timeout(Duration),
    Memory(usize),
}

impl fmt::Display for Limit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Limit::Steps(n) => write!(f, "the budget of {n} search steps ran out"),
            Limit::Timeout(d) => write!(f, "the timeout of {d:?} was reached"),
            Limit::Memory(bytes) if *bytes >= 1 << 20 => {
                write!(f, "the memory limit of {} MiB was reached", bytes >> 20)
            }
            Limit::Memory(bytes) => write!(f, "the memory limit of {} KiB was reached", bytes >> 10),
        }
    }
}

/// The answer of a check.
#[derive(Debug, Clone, PartialEq)]
pub enum Verdict {
    /// Linearizable: every partition has a linearization.
    Ok,
    /// Not linearizable; the witness shows where.
    Violation(Box<Witness>),
    /// A limit of the budget was reached before an answer (and no violation was found before).
    Unknown {
        /// The partition being searched when the limit was reached.
        partition: String,
        /// Which limit.
        limit: Limit,
    },
}

impl Verdict {
    /// The one-word name the CLI prints.
    pub fn name(&self) -> &'static str {
        match self {
            Verdict::Ok => "linearizable",
            Verdict::Violation(_) => "not linearizable",
            Verdict::Unknown { .. } => "unknown",
        }
    }
}

/// One operation as a witness shows it: its invoke and its completion events.
#[derive(Debug, Clone, PartialEq)]
pub struct WitnessOp {
    pub invoke: HistoryEvent,
    /// None when the operation never completed.
    pub completion: Option<HistoryEvent>,
}

impl fmt::Display for WitnessOp {
    /// `p3 withdraw acct-1 "10.00" -> fail error=insufficient_funds [invoke t=1200000, return t=1450000]`
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let invoke = &self.invoke;
        write!(f, "p{} {}", invoke.process, invoke.f)?;
        if let Some(key) = &invoke.key {
            write!(f, " {key}")?;
        }
        if let Some(to) = &invoke.to {
            write!(f, " to {to}")?;
        }
        if let Some(value) = invoke.value.as_ref().filter(|v| !v.is_null()) {
            write!(f, " {value}")?;
        }
        match &self.completion {
            None => write!(f, " -> no answer [invoke t={}, never returned]", invoke.time),
            Some(done) => {
                write!(f, " -> {}", done.kind)?;
                if let Some(value) = &done.value {
                    write!(f, " {value}")?;
                }
                if let Some(balance) = &done.balance {
                    write!(f, " balance={balance}")?;
                }
                if let Some(error) = &done.error {
                    write!(f, " error={error}")?;
                }
                let answered = if done.kind == EventKind::Info { "info" } else { "return" };
                write!(f, " [invoke t={}, {answered} t={}]", invoke.time, done.time)
            }
        }
    }
}

/// Why a history is not linearizable: the furthest point in real time any order reached, and
/// the operations pending there, none of which can take effect next.
#[derive(Debug, Clone, PartialEq)]
pub struct Witness {
    /// The partition that has no linearization (`cas-register`, `key "3"`, `accounts a, b`).
    pub partition: String,
    /// How many operations the longest linearizable prefix holds.
    pub linearized: usize,
    /// The last operation of that prefix, if any.
    pub last: Option<WitnessOp>,
    /// The model's state after the prefix.
    pub state: String,
    /// Operations invoked and not linearized at that point, in invoke order; the first one to
    /// return is `blocking`. Each of them is illegal next, or leads nowhere.
    pub pending: Vec<WitnessOp>,
    /// Index into `pending` of the operation whose return bounds the point.
    pub blocking: usize,
}

impl fmt::Display for Witness {
    /// Several lines: the prefix, then the pending operations (`*` marks the blocking one).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "{}: the longest linearizable prefix has {} operations and leaves {}",
            self.partition, self.linearized, self.state
        )?;
        if let Some(last) = &self.last {
            writeln!(f, "  last in the prefix: {last}")?;
        }
        write!(f, "  pending there, none can take effect next (* returned first):")?;
        for (index, op) in self.pending.iter().enumerate() {
            let mark = if index == self.blocking { "*" } else { "-" };
            write!(f, "\n  {mark} {op}")?;
        }
        Ok(())
    }
}

/// The models the checker knows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ModelKind {
    /// A read/write register.
    Register,
    /// Jepsen's etcd compare-and-set register.
    CasRegister,
    /// Per-key get/put/append strings.
    Kv,
    /// Accounts: open, deposit, withdraw, read, transfer.
    Bank,
}

impl ModelKind {
    pub const ALL: [ModelKind; 4] = [ModelKind::Bank, ModelKind::Register, ModelKind::CasRegister, ModelKind::Kv];

    /// The name the CLI uses.
    pub fn name(self) -> &'static str {
        match self {
            ModelKind::Register => "register",
            ModelKind::CasRegister => "cas-register",
            ModelKind::Kv => "kv",
            ModelKind::Bank => "bank",
        }
    }
}

impl fmt::Display for ModelKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for ModelKind {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        ModelKind::ALL
            .into_iter()
            .find(|m| m.name() == s)
            .ok_or_else(|| format!("unknown model {s:?} (expected bank, register, cas-register or kv)"))
    }
}

/// Checks a history with one of the known models.
///
/// # Errors
/// [`HistoryError`] when the history is malformed or does not fit the model; never for a
/// history that is merely not linearizable.
///
/// # Examples
/// ```
/// use checker::{Budget, History, ModelKind, Verdict, check_history, read::Format};
/// let text = "\
/// {\"process\":0,\"type\":\"invoke\",\"f\":\"open\",\"key\":\"a\",\"value\":\"10.00\",\"time\":1}
/// {\"process\":0,\"type\":\"ok\",\"f\":\"open\",\"key\":\"a\",\"value\":\"10.00\",\"time\":2}
/// {\"process\":1,\"type\":\"invoke\",\"f\":\"read\",\"key\":\"a\",\"time\":3}
/// {\"process\":1,\"type\":\"ok\",\"f\":\"read\",\"key\":\"a\",\"value\":\"10.0\",\"time\":4}
/// ";
/// let history: History = Format::Jsonl.parse(text).unwrap();
/// let verdict = check_history(ModelKind::Bank, &history, Budget::default()).unwrap();
/// assert_eq!(verdict, Verdict::Ok);
/// ```
pub fn check_history(model: ModelKind, history: &History, budget: Budget) -> Result<Verdict, HistoryError> {
    Ok(match model {
        ModelKind::Register => check_partitions(history, register_partitions(history, false)?, budget),
        ModelKind::CasRegister => check_partitions(history, register_partitions(history, true)?, budget),
        ModelKind::Kv => check_partitions(history, kv_partitions(history)?, budget),
        ModelKind::Bank => check_partitions(history, bank_partitions(history)?, budget),
    })
}

/// Checks partitions one by one, smallest first, sharing the budget; stops at the first
/// violation. Unknown only when no partition is a violation and one ran out of budget.
///
/// `history` must be the history the partitions' operations index into.
pub fn check_partitions<M: Model>(history: &History, partitions: Vec<Partition<M>>, budget: Budget) -> Verdict {
    let mut order: Vec<usize> = (0..partitions.len()).collect();
    order.sort_by_key(|&p| partitions[p].operations.len());
    let mut limits = Limits::new(budget);
    let mut unknown: Option<(String, Limit)> = None;
    for p in order {
        let partition = &partitions[p];
        match search(&partition.model, &partition.operations, &mut limits) {
            SearchResult::Linearizable => {}
            SearchResult::Unknown(limit) => {
                unknown.get_or_insert_with(|| (partition.label.clone(), limit));
                // Time is spent for good: no other partition can be searched (memory is per
                // partition; spent steps make the others unknown at once).
                if matches!(limit, Limit::Timeout(_)) {
                    break;
                }
            }
            SearchResult::Illegal(deepest) => {
                let op = |index: usize| {
                    let operation = &partition.operations[index];
                    WitnessOp {
                        invoke: history.events[operation.invoke].clone(),
                        completion: operation.completion.map(|c| history.events[c].clone()),
                    }
                };
                let mut pending = deepest.pending.clone();
                pending.sort_by_key(|&o| partition.operations[o].invoke);
                let blocking =
                    pending.iter().position(|&o| o == deepest.blocking).expect("the blocking operation is pending");
                return Verdict::Violation(Box::new(Witness {
                    partition: partition.label.clone(),
                    linearized: deepest.linearized.len(),
                    last: deepest.linearized.last().map(|&o| op(o)),
                    state: partition.model.describe_state(&deepest.state),
                    pending: pending.into_iter().map(op).collect(),
                    blocking,
                }));
            }
        }
    }
    match unknown {
        Some((partition, limit)) => Verdict::Unknown { partition, limit },
        None => Verdict::Ok,
    }
}
