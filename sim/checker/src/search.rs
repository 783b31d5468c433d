//! The WGL search (Wing & Gong, with Lowe's memoisation, as porcupine's `checker.go`) over one
//! partition: is there a total order of its operations, consistent with real time, that the
//! model accepts?
//!
//! Calls and returns form a doubly linked list in real-time order (arrays of indexes, not
//! pointers). The search linearizes a call at the front of the list by lifting it and its
//! return out; it backtracks when it reaches a return whose call could not be linearized.
//! Explored (linearized set, state) pairs are memoised. Operations with an unknown outcome have
//! no return: they may be linearized anywhere after their invoke, or never. Their calls sit in
//! a second list, so that scans for the others never pass over them.
//!
//! It deliberately knows nothing of partitions, formats or witnesses' wording.

use std::collections::HashMap;
use std::hash::Hash;
use std::time::{Duration, Instant};

use crate::check::{Budget, Limit};
use crate::memo::{Memo, NO_MEMO, fx_hash, zobrist_keys};
use crate::model::{Model, Operation};

/// The search looks at the clock and at its memory every this many steps (a power of two):
/// often enough to stop within milliseconds, rarely enough to cost nothing measurable.
pub(crate) const LIMITS_EVERY: u64 = 4096;
const _: () = assert!(LIMITS_EVERY.is_power_of_two());

/// What a check may still spend: the steps left, and its budget's deadline and memory bound.
/// Shared by the partitions of one history.
pub(crate) struct Limits {
    steps_left: u64,
    steps_max: u64,
    deadline: Option<(Instant, Duration)>,
    memory_max: Option<usize>,
}

impl Limits {
    pub(crate) fn new(budget: Budget) -> Limits {
        Limits {
            steps_left: budget.steps_max,
            steps_max: budget.steps_max,
            // The clock is read only when a timeout is set: the simulator's checks never read it.
            deadline: budget.timeout.map(|t| (Instant::now() + t, t)),
            memory_max: budget.memory_max,
        }
    }

    /// The limit reached, if any, by a search whose tables hold `bytes`.
    fn reached(&self, bytes: usize) -> Option<Limit> {
        if let Some(max) = self.memory_max
            && bytes > max
        {
            return Some(Limit::Memory(max));
        }
        match self.deadline {
            Some((at, timeout)) if Instant::now() >= at => Some(Limit::Timeout(timeout)),
            _ => None,
        }
    }
}

/// Marks "no node".
const NONE: u32 = u32::MAX;

/// Operations in one partition, at most: node ids (two per operation, plus four sentinels)
/// must fit in a u32, below the marker for "no node".
pub const PARTITION_OPERATIONS_MAX: usize = (u32::MAX as usize - 8) / 2;
const _: () = assert!(PARTITION_OPERATIONS_MAX * 2 + 4 < NONE as usize);

/// The longest runs of unknown-outcome operations in a row that the search allows, in turn,
/// until one finds a linearization; the last is unbounded, so the answer stays exact. Clients
/// rarely see the effect of many lost answers at once, while a search that may chain any number
/// of them tries every combination wherever it is stuck; short runs are cheap to refute.
const RUN_LENGTHS_MAX: &[usize] = &[0, 1, 2, 3, 4, 6, 8, usize::MAX];
const _: () = assert!(RUN_LENGTHS_MAX[RUN_LENGTHS_MAX.len() - 1] == usize::MAX);

/// What the search concluded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum SearchResult<S> {
    Linearizable,
    Illegal(Deepest<S>),
    /// A limit of the budget was reached first.
    Unknown(Limit),
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

/// Head of the list of calls and returns of operations that return.
const HEAD: u32 = 0;
/// Head of the list of calls of operations with an unknown outcome.
const UNKNOWN_HEAD: u32 = 1;

/// The two real-time lists. Nodes 0 and 1 are the heads, the last two the tails;
/// `code[node]` is `operation << 1 | is_return`.
struct Entries {
    next: Vec<u32>,
    prev: Vec<u32>,
    code: Vec<u32>,
    /// For a call node: its return node, or [`NONE`] when the outcome is unknown.
    matching: Vec<u32>,
    /// The event index of each node (its real-time position).
    position: Vec<usize>,
    /// The call node of each operation.
    call_node: Vec<u32>,
    unknown_tail: u32,
}

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
        let count = events.len() + 4;
        let (tail, unknown_tail) = (count as u32 - 2, count as u32 - 1);
        let mut entries = Entries {
            next: vec![NONE; count],
            prev: vec![NONE; count],
            code: vec![NONE; count],
            matching: vec![NONE; count],
            position: vec![usize::MAX; count],
            call_node: vec![NONE; operations.len()],
            unknown_tail,
        };
        let mut return_node = vec![NONE; operations.len()];
        let (mut last, mut last_unknown) = (HEAD, UNKNOWN_HEAD);
        for (index, &(position, code)) in events.iter().enumerate() {
            let node = index as u32 + 2;
            let op = (code >> 1) as usize;
            entries.code[node as usize] = code;
            entries.position[node as usize] = position;
            let list_last = if operations[op].output.is_some() { &mut last } else { &mut last_unknown };
            entries.next[*list_last as usize] = node;
            entries.prev[node as usize] = *list_last;
            *list_last = node;
            if code & 1 == 1 {
                return_node[op] = node;
            } else {
                entries.call_node[op] = node;
            }
        }
        for (list_last, list_tail) in [(last, tail), (last_unknown, unknown_tail)] {
            entries.next[list_last as usize] = list_tail;
            entries.prev[list_tail as usize] = list_last;
        }
        for (&call, &ret) in entries.call_node.iter().zip(&return_node) {
            entries.matching[call as usize] = ret;
        }
        entries
    }

    #[inline]
    fn op(&self, node: u32) -> usize {
        (self.code[node as usize] >> 1) as usize
    }

    #[inline]
    fn is_return(&self, node: u32) -> bool {
        self.code[node as usize] & 1 == 1
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

    /// The first return node (one exists while some operation that returns is pending).
    fn first_return(&self) -> u32 {
        let mut node = self.next[HEAD as usize];
        while !self.is_return(node) {
            node = self.next[node as usize];
        }
        node
    }

    /// Whether `node` (in the unknown list) was invoked before the return `window_end`.
    #[inline]
    fn in_window(&self, node: u32, window_end: u32) -> bool {
        node != self.unknown_tail && self.position[node as usize] < self.position[window_end as usize]
    }

    /// The pending operations invoked before the return `window_end`: the window's calls, those
    /// with an unknown outcome last.
    fn window(&self, window_end: u32) -> Vec<usize> {
        let mut pending = Vec::new();
        let mut node = self.next[HEAD as usize];
        while node != window_end {
            pending.push(self.op(node));
            node = self.next[node as usize];
        }
        let mut node = self.next[UNKNOWN_HEAD as usize];
        while self.in_window(node, window_end) {
            pending.push(self.op(node));
            node = self.next[node as usize];
        }
        pending
    }
}

/// Each operation's input as a number: equal inputs, equal numbers, in order of first invoke.
fn input_ranks<I: Eq + Hash, O>(operations: &[Operation<I, O>]) -> Vec<u32> {
    let mut order: Vec<usize> = (0..operations.len()).collect();
    order.sort_by_key(|&op| operations[op].invoke);
    let mut ranks: HashMap<&I, u32> = HashMap::new();
    let mut rank = vec![0; operations.len()];
    for op in order {
        let next = ranks.len() as u32;
        rank[op] = *ranks.entry(&operations[op].input).or_insert(next);
    }
    rank
}

/// For each operation with an unknown outcome, the closest earlier one (by invoke) with the
/// same input, or [`NONE`]. Two such operations are interchangeable, so the search only ever
/// linearizes the earliest one still pending.
fn twins<I: Eq + Hash, O>(operations: &[Operation<I, O>]) -> Vec<u32> {
    let mut order: Vec<usize> = (0..operations.len()).collect();
    order.sort_by_key(|&op| operations[op].invoke);
    let mut last: HashMap<&I, u32> = HashMap::new();
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

/// Which operations a scan of the pending calls tries. Each new configuration is scanned in
/// this order, so that unknown outcomes are taken as late as possible: when nothing else can
/// explain what the clients saw.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    /// Read-only operations with a return (see [`Model::read_only`]).
    Reads,
    /// The other operations with a return.
    Updates,
    /// Operations with an unknown outcome.
    Unknown,
}

/// A linearized operation on the search's path.
struct Frame<S> {
    /// Its call node.
    call: u32,
    /// The state before it.
    state: S,
    /// Its configuration in the memo, to mark explored when it is popped.
    memo_set: u32,
    /// Linearized as a read-only operation that could go next: no sibling needs trying.
    forced: bool,
    /// How many unknown-outcome operations in a row end the path before it.
    run: usize,
    /// The return that ended the window of the configuration before it.
    window_end: u32,
}

/// Searches for a linearization of `operations`, spending at most the steps left in `limits`
/// (one per node visited or backtrack, deducted) and stopping at its deadline or memory bound.
///
/// A quick path handles partitions whose operations never overlap. Otherwise the search runs
/// with longer and longer runs of unknown outcomes allowed ([`RUN_LENGTHS_MAX`]); a search
/// that finds no linearization is a proof only if its limit never kept it from trying one.
pub(crate) fn search<M: Model>(
    model: &M,
    operations: &[Operation<M::Input, M::Output>],
    limits: &mut Limits,
) -> SearchResult<M::State> {
    if let Some(op) = model.impossible(operations) {
        return SearchResult::Illegal(Deepest {
            linearized: Vec::new(),
            state: model.init(),
            pending: vec![op],
            blocking: op,
        });
    }
    if let Some(result) = sequential(model, operations, limits) {
        return result;
    }
    for &run_max in RUN_LENGTHS_MAX {
        match search_runs(model, operations, limits, run_max) {
            (SearchResult::Illegal(_), true) => {}
            (result, _) => return result,
        }
    }
    unreachable!("the last run length is unbounded")
}

/// The search proper, with at most `run_max` unknown-outcome operations linearized in a row;
/// also says whether that limit cut anything (if not, an illegal answer is exact).
///
/// Besides the memo, these rules prune it; each keeps some successful continuation when there
/// is one:
/// - a read-only operation (see [`Model::read_only`]) that can go next goes next, and no
///   alternative is tried in its place: moving it earlier in any linearization keeps it valid;
/// - an unknown-outcome operation that would not change the state is not linearized;
/// - an unknown-outcome operation is only linearized right before an operation that needs it
///   (see [`needs`]): otherwise it could as well come later, or not at all;
/// - of two pending unknown-outcome operations with equal inputs only the earlier is tried.
fn search_runs<M: Model>(
    model: &M,
    operations: &[Operation<M::Input, M::Output>],
    limits: &mut Limits,
    run_max: usize,
) -> (SearchResult<M::State>, bool) {
    let mut entries = Entries::new(operations);
    let twin = twins(operations);
    let input_rank = input_ranks(operations);
    let phase_of: Vec<Phase> = operations
        .iter()
        .map(|o| match &o.output {
            None => Phase::Unknown,
            Some(output) if model.read_only(&o.input, Some(output)) => Phase::Reads,
            Some(_) => Phase::Updates,
        })
        .collect();
    // Operations that return and operations with an unknown outcome are numbered apart: the
    // memo treats their sets differently.
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

    let returns_total = returning;
    let mut returns_left = returns_total;
    let mut state = model.init();
    let mut stack: Vec<Frame<M::State>> = Vec::new();
    let mut deepest: Option<Deepest<M::State>> = None;
    let mut deepest_returns = 0usize;
    let mut steps = limits.steps_left;

    // Each new configuration is scanned once per phase: the first two over the list of
    // operations that return, up to its first return (`window_end`), the last over the
    // unknown outcomes invoked before that return. `backtracking`: the configuration failed.
    let mut phase = Phase::Reads;
    let mut backtracking = false;
    let mut window_end = NONE;
    // Whether the operation just linearized has an unknown outcome: the next one must need it.
    let mut after_unknown = false;
    // How many unknown-outcome operations in a row end the path.
    let mut run = 0;
    // Whether `run_max` kept some unknown outcome from being tried.
    let mut limited = false;
    let mut entry = entries.next[HEAD as usize];
    let result = loop {
        if returns_left == 0 {
            break SearchResult::Linearizable;
        }
        if steps == 0 {
            break SearchResult::Unknown(Limit::Steps(limits.steps_max));
        }
        steps -= 1;
        if steps & (LIMITS_EVERY - 1) == 0 {
            let bytes = memo.bytes() + stack.capacity() * std::mem::size_of::<Frame<M::State>>();
            if let Some(limit) = limits.reached(bytes) {
                break SearchResult::Unknown(limit);
            }
        }
        if backtracking {
            let Some(frame) = stack.pop() else {
                let witness = deepest.take().unwrap_or_else(|| {
                    let end = entries.first_return();
                    Deepest {
                        linearized: Vec::new(),
                        state: state.clone(),
                        pending: entries.window(end),
                        blocking: entries.op(end),
                    }
                });
                break SearchResult::Illegal(witness);
            };
            state = frame.state;
            memo.finish(frame.memo_set);
            let lifted = entries.op(frame.call);
            entries.unlift(frame.call);
            if entries.matching[frame.call as usize] != NONE {
                flip(&mut bits, rank[lifted]);
                bits_hash ^= keys[rank[lifted]];
                returns_left += 1;
            } else {
                flip(&mut unknown_bits, rank[lifted]);
            }
            after_unknown = stack.last().is_some_and(|top| entries.matching[top.call as usize] == NONE);
            run = frame.run;
            // After a forced read the configuration below has failed too.
            if !frame.forced {
                backtracking = false;
                phase = phase_of[lifted];
                window_end = frame.window_end;
                entry = entries.next[frame.call as usize];
            }
            continue;
        }
        let at_end = match phase {
            Phase::Reads | Phase::Updates => entries.is_return(entry),
            Phase::Unknown => !entries.in_window(entry, window_end),
        };
        if at_end {
            match phase {
                Phase::Reads => {
                    phase = Phase::Updates;
                    entry = entries.next[HEAD as usize];
                    continue;
                }
                Phase::Updates => {
                    window_end = entry;
                    entry = entries.next[UNKNOWN_HEAD as usize];
                    if entries.in_window(entry, window_end) {
                        if run < run_max {
                            phase = Phase::Unknown;
                            continue;
                        }
                        limited = true;
                    }
                }
                Phase::Unknown => {}
            }
            // Nothing after the window's return can come before it: this configuration fails.
            let reached = returns_total - returns_left;
            if deepest.is_none() || reached > deepest_returns {
                deepest_returns = reached;
                deepest = Some(Deepest {
                    linearized: stack.iter().map(|f| entries.op(f.call)).collect(),
                    state: state.clone(),
                    pending: entries.window(window_end),
                    blocking: entries.op(window_end),
                });
            }
            backtracking = true;
            continue;
        }
        let op = entries.op(entry);
        if phase_of[op] != phase {
            entry = entries.next[entry as usize];
            continue;
        }
        let operation = &operations[op];
        let unknown = phase == Phase::Unknown;
        if unknown && twin[op] != NONE && !is_set(&unknown_bits, rank[twin[op] as usize]) {
            entry = entries.next[entry as usize];
            continue;
        }
        let Some(next_state) = model.step(&state, &operation.input, operation.output.as_ref()) else {
            entry = entries.next[entry as usize];
            continue;
        };
        debug_assert!(phase != Phase::Reads || next_state == state, "read-only operations keep the state");
        // An unknown-outcome operation that changes nothing may as well never happen.
        if unknown && next_state == state {
            entry = entries.next[entry as usize];
            continue;
        }
        if after_unknown {
            let top = stack.last().expect("an operation was linearized");
            let previous = entries.op(top.call);
            // Two unknown outcomes that commute go in one order, by input.
            let in_order = unknown && input_rank[previous] <= input_rank[op];
            let needed = needs(model, &top.state, &operations[previous].input, operation, &next_state, in_order)
                && (unknown
                    || run < 2
                    || run_needed(model, operations, &entries, &stack[stack.len() - run..], operation, &next_state));
            if !needed {
                entry = entries.next[entry as usize];
                continue;
            }
        }
        let r = rank[op];
        if unknown {
            flip(&mut unknown_bits, r);
        } else {
            flip(&mut bits, r);
            bits_hash ^= keys[r];
        }
        // A configuration reached by an unknown outcome is explored under a restriction that
        // depends on how it was reached: it is not memoised.
        let recorded = if unknown {
            Some(NO_MEMO)
        } else {
            memo.insert(bits_hash ^ fx_hash(&next_state), &bits, &next_state, &unknown_bits)
        };
        let Some(memo_set) = recorded else {
            flip(&mut bits, r);
            bits_hash ^= keys[r];
            if phase == Phase::Reads {
                // The read could go next and what follows it is known to fail.
                backtracking = true;
            } else {
                entry = entries.next[entry as usize];
            }
            continue;
        };
        let previous = std::mem::replace(&mut state, next_state);
        stack.push(Frame { call: entry, state: previous, memo_set, forced: phase == Phase::Reads, run, window_end });
        entries.lift(entry);
        if unknown {
            run += 1;
        } else {
            run = 0;
            returns_left -= 1;
        }
        after_unknown = unknown;
        phase = Phase::Reads;
        entry = entries.next[HEAD as usize];
    };
    limits.steps_left = steps;
    (result, limited)
}

/// Whether `next`, taking effect right after the unknown-outcome operation `unknown` took
/// `before` to a new state and reaching `after`, needs it there. It does not when the same
/// `after` is reached without `unknown` (then `unknown` may as well not happen), or by `next`
/// then `unknown` (then `unknown` may as well come later; but when `next` has an unknown
/// outcome too, `in_order` says whether this is their one order kept). Any linearization can
/// be rewritten, dropping unknown outcomes or moving them later, so that each one is needed
/// by the operation after it: so the search only explores those.
fn needs<M: Model>(
    model: &M,
    before: &M::State,
    unknown: &M::Input,
    next: &Operation<M::Input, M::Output>,
    after: &M::State,
    in_order: bool,
) -> bool {
    let Some(without) = model.step(before, &next.input, next.output.as_ref()) else {
        return true;
    };
    if without == *after {
        return false;
    }
    match model.step(&without, unknown, None) {
        Some(swapped) if swapped == *after => in_order,
        _ => true,
    }
}

/// Whether every unknown outcome of `run` (the frames of the unknown-outcome operations
/// linearized last, in order) is needed by `next`, which ends the run and reaches `after`: an
/// operation of the run is not when, taken out, the rest of the run and `next` still take
/// effect and reach `after` without it (drop it) or before it (move it after `next`). [`needs`]
/// checks the last one; this checks the others.
fn run_needed<M: Model>(
    model: &M,
    operations: &[Operation<M::Input, M::Output>],
    entries: &Entries,
    run: &[Frame<M::State>],
    next: &Operation<M::Input, M::Output>,
    after: &M::State,
) -> bool {
    debug_assert!(run.len() >= 2);
    let input = |frame: &Frame<M::State>| &operations[entries.op(frame.call)].input;
    (0..run.len() - 1).all(|i| {
        let mut state = run[i].state.clone();
        for frame in &run[i + 1..] {
            match model.step(&state, input(frame), None) {
                Some(s) => state = s,
                None => return true,
            }
        }
        let Some(without) = model.step(&state, &next.input, next.output.as_ref()) else {
            return true;
        };
        without != *after && model.step(&without, input(&run[i]), None).is_none_or(|moved| moved != *after)
    })
}

/// The quick path: when every operation has a return and each returns before the next is
/// invoked, real-time order is the only order, so the model is simply run along it. `None`
/// when the partition is not like that.
fn sequential<M: Model>(
    model: &M,
    operations: &[Operation<M::Input, M::Output>],
    limits: &mut Limits,
) -> Option<SearchResult<M::State>> {
    if operations.iter().any(|o| o.output.is_none()) {
        return None;
    }
    let mut order: Vec<usize> = (0..operations.len()).collect();
    order.sort_by_key(|&op| operations[op].invoke);
    let overlapping = order.windows(2).any(|pair| {
        let returned = operations[pair[0]].return_position().expect("every operation returns here");
        returned > operations[pair[1]].invoke
    });
    if overlapping {
        return None;
    }
    let mut state = model.init();
    for (done, &op) in order.iter().enumerate() {
        if limits.steps_left == 0 {
            return Some(SearchResult::Unknown(Limit::Steps(limits.steps_max)));
        }
        limits.steps_left -= 1;
        let operation = &operations[op];
        match model.step(&state, &operation.input, operation.output.as_ref()) {
            Some(next) => state = next,
            None => {
                let linearized = order[..done].to_vec();
                return Some(SearchResult::Illegal(Deepest { linearized, state, pending: vec![op], blocking: op }));
            }
        }
    }
    Some(SearchResult::Linearizable)
}
