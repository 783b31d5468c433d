//! The interface between a sequential specification (a model) and the search: the [`Model`]
//! trait, the operations the search orders, and the partitions it checks independently.
//!
//! It does not turn history events into operations; each model in `models/` does that, since
//! only the model knows what a value or a failure means.

use std::fmt::Debug;
use std::hash::Hash;

/// A sequential specification, as in porcupine's `model.go`: a pure step function from a
/// state and an operation to the next state.
pub trait Model {
    /// Small and cheap to hash: the search memoises (linearized set, state) pairs.
    type State: Clone + Eq + Hash + Debug;
    /// What the client asked for. `Eq + Hash` lets the search treat two unknown-outcome
    /// operations with equal inputs as interchangeable.
    type Input: Clone + Eq + Hash + Debug;
    /// What the client was told.
    type Output: Clone + Debug;

    /// The state before any operation.
    fn init(&self) -> Self::State;

    /// The state after `input` takes effect in `state`, or `None` when it cannot take effect
    /// there with the `output` the client saw. `output` is `None` when the outcome is unknown
    /// (`info`): the step is then the operation taking effect, without any observation.
    fn step(&self, state: &Self::State, input: &Self::Input, output: Option<&Self::Output>) -> Option<Self::State>;

    /// Whether the operation, with this output, leaves every state it can take effect in
    /// unchanged (a read, a failed compare-and-set). The search then linearizes it as soon as
    /// it can take effect and tries nothing else in its place, which is sound only for such
    /// operations: the default, `false`, is always safe. Never asked about unknown outcomes.
    fn read_only(&self, input: &Self::Input, output: Option<&Self::Output>) -> bool {
        let _ = (input, output);
        false
    }

    /// A human description of a state, for witnesses (`register = 3`).
    fn describe_state(&self, state: &Self::State) -> String;

    /// A cheap necessary condition, tried before the search: an operation that can take effect
    /// in no linearization whatever the order (a read of a value no operation ever wrote), if
    /// any. The partition is then not linearizable, and the witness blocks on it. The default,
    /// `None`, is always sound; a model overrides it only with a rule it can prove.
    fn impossible(&self, operations: &[Operation<Self::Input, Self::Output>]) -> Option<usize> {
        let _ = operations;
        None
    }
}

/// One operation of a partition, as the search sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Operation<I, O> {
    pub input: I,
    /// What the client was told; `None` when the outcome is unknown: the operation may take
    /// effect at any moment after its invoke, or never.
    pub output: Option<O>,
    /// Index of the invoke in [`crate::History::events`]: its real-time position.
    pub invoke: usize,
    /// Index of the completion event, if any. It bounds the operation in real time only when
    /// `output` is `Some`; an `info` completion is kept for witnesses only.
    pub completion: Option<usize>,
}

impl<I, O> Operation<I, O> {
    /// The real-time position by which the operation must have taken effect, if any.
    pub fn return_position(&self) -> Option<usize> {
        match self.output {
            Some(_) => self.completion,
            None => None,
        }
    }
}

/// A set of operations that can be checked on its own (P-compositionality), with the model
/// instance that interprets them.
#[derive(Debug, Clone)]
pub struct Partition<M: Model> {
    /// What the partition covers, for witnesses: `register`, `key "3"`, `accounts a, b`.
    pub label: String,
    pub model: M,
    pub operations: Vec<Operation<M::Input, M::Output>>,
}
