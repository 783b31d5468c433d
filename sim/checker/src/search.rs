//! The WGL search (Wing & Gong, with Lowe's memoisation, as porcupine's `checker.go`) over one
//! partition: is there a total order of its operations, consistent with real time, that the
//! model accepts?
//!
//! Calls and returns form a doubly linked list in real-time order (arrays of indexes, not
//! pointers). The search linearizes a call at the front of the list by lifting it and its
//! return out; it backtracks when it reaches a return whose call could not be linearized.
//! Explored (linearized set, state) pairs are memoised. Operations with an unknown outcome have
//! no return node: they may be linearized anywhere after their invoke, or never.
//!
//! It deliberately knows nothing of partitions, formats or witnesses' wording.

use crate::memo::{Memo, fx_hash, zobrist_keys};
use crate::model::{Model, Operation};

/// Marks "no node".
const NONE: u32 = u32::MAX;

/// Operations in one partition, at most: node ids (two per operation, plus two sentinels)
/// must fit in a u32 below [`NONE`].
pub const PARTITION_OPERATIONS_MAX: usize = (u32::MAX as usize - 4) / 2;

/// What the search concluded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum SearchResult<S> {
    Linearizable,
    Illegal(Deepest<S>),
    /// The step budget ran out first.
    Unknown,
}

/// The furthest point the search reached in real time before it had to give up: the operations
/// linearized there (in order), the state they lead to, and the operations that were pending
/// there, none of which could take effect next (`blocking` is the one whose return came first).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Deepest<S> {
    pub linearized: Vec<usize>,
    pub state: S,
    pub pending: Vec<usize>,
    pub blocking: usize,
}

/// The real-time list of call and return nodes. Node 0 is the head, node `len - 1` the tail;
/// `code[node]` is `operation << 1 | is_return`.
struct Entries {
    next: Vec<u32>,
    prev: Vec<u32>,
    code: Vec<u32>,
    /// For a call node: its return node, or [`NONE`] when the outcome is unknown.
    matching: Vec<u32>,
}

const HEAD: u32 = 0;

impl Entries {
    fn new<I, O>(operations: &[Operation<I, O>]) -> Self {
        assert!(operations.len() <= PARTITION_OPERATIONS_MAX);
        let mut events: Vec<(usize, u32)> = Vec::with_capacity(operations.len() * 2);
        for (op, operation) in operations.iter().enumerate() {
            events.push((operation.invoke, (op as u32) << 1));
            if let Some(position) = operation.return_position() {
                assert!(position > operation.invoke, "an operation returns after its invoke");
                events.push((position, (op as u32) << 1 | 1));
            }
        }
        events.sort_unstable();
        let count = events.len() + 2;
        let mut code = vec![NONE; count];
        let mut matching = vec![NONE; count];
        let mut return_node = vec![NONE; operations.len()];
        for (index, &(_, c)) in events.iter().enumerate() {
            let node = index as u32 + 1;
            code[node as usize] = c;
            if c & 1 == 1 {
                return_node[(c >> 1) as usize] = node;
            }
        }
        for node in 1..count - 1 {
            let c = code[node];
            if c & 1 == 0 {
                matching[node] = return_node[(c >> 1) as usize];
            }
        }
        let next = (0..count as u32).map(|n| n + 1).collect();
        let prev = (0..count as u32).map(|n| n.wrapping_sub(1)).collect();
        Entries { next, prev, code, matching }
    }

    #[inline]
    fn unlink(&mut self, node: u32) {
        let (p, n) = (self.prev[node as usize], self.next[node as usize]);
        self.next[p as usize] = n;
        self.prev[n as usize] = p;
    }

    #[inline]
    fn relink(&mut self, node: u32) {
        let (p, n) = (self.prev[node as usize], self.next[node as usize]);
        self.next[p as usize] = node;
        self.prev[n as usize] = node;
    }

    /// Removes a call node and its return node.
    #[inline]
    fn lift(&mut self, call: u32) {
        self.unlink(call);
        let ret = self.matching[call as usize];
        if ret != NONE {
            self.unlink(ret);
        }
    }

    /// Undoes [`Entries::lift`]; lifts and unlifts nest like a stack.
    #[inline]
    fn unlift(&mut self, call: u32) {
        let ret = self.matching[call as usize];
        if ret != NONE {
            self.relink(ret);
        }
        self.relink(call);
    }
}

/// For each operation with an unknown outcome, the closest earlier one (by invoke) with the
/// same input, or [`NONE`]. Two such operations are interchangeable, so the search only ever
/// linearizes the earliest one still pending.
fn twins<I: Eq + std::hash::Hash, O>(operations: &[Operation<I, O>]) -> Vec<u32> {
    let mut order: Vec<usize> = (0..operations.len()).collect();
    order.sort_by_key(|&op| operations[op].invoke);
    let mut last: std::collections::HashMap<&I, u32> = std::collections::HashMap::new();
    let mut twin = vec![NONE; operations.len()];
    for op in order {
        if operations[op].output.is_none() {
            if let Some(&earlier) = last.get(&operations[op].input) {
                twin[op] = earlier;
            }
            last.insert(&operations[op].input, op as u32);
        }
    }
    twin
}

/// Searches for a linearization of `operations`, spending at most `*steps_left` steps (one per
/// node visited) and deducting what it spent.
pub(crate) fn search<M: Model>(
    model: &M,
    operations: &[Operation<M::Input, M::Output>],
    steps_left: &mut u64,
) -> SearchResult<M::State> {
    let mut entries = Entries::new(operations);
    let twin = twins(operations);
    // Operations with a return and operations with an unknown outcome are numbered apart:
    // the memo treats their sets differently.
    let mut rank = vec![0usize; operations.len()];
    let (mut returning, mut unknown_count) = (0, 0);
    for (op, operation) in operations.iter().enumerate() {
        let counter = if operation.output.is_some() { &mut returning } else { &mut unknown_count };
        rank[op] = *counter;
        *counter += 1;
    }
    let keys = zobrist_keys(returning);
    let mut bits = vec![0u64; returning.div_ceil(64).max(1)];
    let mut unknown_bits = vec![0u64; unknown_count.div_ceil(64)];
    let mut bits_hash: u64 = 0;
    let mut memo: Memo<M::State> = Memo::new(bits.len(), unknown_bits.len());
    let is_set = |set: &[u64], r: usize| set[r >> 6] >> (r & 63) & 1 == 1;
    let flip = |set: &mut [u64], r: usize| set[r >> 6] ^= 1 << (r & 63);

    let returns_total = operations.iter().filter(|o| o.output.is_some()).count();
    let mut returns_left = returns_total;
    let mut state = model.init();
    let mut stack: Vec<(u32, M::State, u32)> = Vec::new();
    let mut deepest: Option<Deepest<M::State>> = None;
    let mut deepest_returns = 0usize;
    let mut steps = *steps_left;

    let mut entry = entries.next[HEAD as usize];
    let result = loop {
        if returns_left == 0 {
            break SearchResult::Linearizable;
        }
        if steps == 0 {
            break SearchResult::Unknown;
        }
        steps -= 1;
        // Some return is still in the list, and the scan stops at the first one.
        debug_assert!((entry as usize) < entries.code.len() - 1);
        let code = entries.code[entry as usize];
        let op = (code >> 1) as usize;
        if code & 1 == 0 {
            let operation = &operations[op];
            let unknown = operation.output.is_none();
            let twin_pending = twin[op] != NONE && !is_set(&unknown_bits, rank[twin[op] as usize]);
            if twin_pending {
                entry = entries.next[entry as usize];
                continue;
            }
            let Some(next_state) = model.step(&state, &operation.input, operation.output.as_ref()) else {
                entry = entries.next[entry as usize];
                continue;
            };
            // An unknown-outcome operation that changes nothing may as well never happen.
            if unknown && next_state == state {
                entry = entries.next[entry as usize];
                continue;
            }
            let r = rank[op];
            if unknown {
                flip(&mut unknown_bits, r);
            } else {
                flip(&mut bits, r);
                bits_hash ^= keys[r];
            }
            if let Some(set) = memo.insert(bits_hash ^ fx_hash(&next_state), &bits, &next_state, &unknown_bits) {
                let previous = std::mem::replace(&mut state, next_state);
                stack.push((entry, previous, set));
                entries.lift(entry);
                if !unknown {
                    returns_left -= 1;
                }
                entry = entries.next[HEAD as usize];
            } else {
                if unknown {
                    flip(&mut unknown_bits, r);
                } else {
                    flip(&mut bits, r);
                    bits_hash ^= keys[r];
                }
                entry = entries.next[entry as usize];
            }
        } else {
            // A return whose call is not linearized: nothing after it can be linearized first.
            let reached = returns_total - returns_left;
            if deepest.is_none() || reached > deepest_returns {
                deepest_returns = reached;
                deepest = Some(Deepest {
                    linearized: stack.iter().map(|&(n, _, _)| (entries.code[n as usize] >> 1) as usize).collect(),
                    state: state.clone(),
                    pending: pending_before(&entries, entry),
                    blocking: op,
                });
            }
            let Some((call, previous, set)) = stack.pop() else {
                break SearchResult::Illegal(deepest.take().expect("recorded just above"));
            };
            state = previous;
            memo.finish(set);
            let lifted = (entries.code[call as usize] >> 1) as usize;
            entries.unlift(call);
            if entries.matching[call as usize] != NONE {
                flip(&mut bits, rank[lifted]);
                bits_hash ^= keys[rank[lifted]];
                returns_left += 1;
            } else {
                flip(&mut unknown_bits, rank[lifted]);
            }
            entry = entries.next[call as usize];
        }
    };
    *steps_left = steps;
    result
}

/// The operations whose calls precede `stop` in the list (all pending), plus `stop`'s own.
fn pending_before(entries: &Entries, stop: u32) -> Vec<usize> {
    let mut pending = Vec::new();
    let mut node = entries.next[HEAD as usize];
    while node != stop {
        pending.push((entries.code[node as usize] >> 1) as usize);
        node = entries.next[node as usize];
    }
    let blocking = (entries.code[stop as usize] >> 1) as usize;
    if !pending.contains(&blocking) {
        pending.push(blocking);
    }
    pending
}
