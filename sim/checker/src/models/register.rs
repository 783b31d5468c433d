//! The register models: a read/write register, and the compare-and-set register of Jepsen's
//! etcd test (porcupine's `etcdModel`), with the translation of a history into their
//! partitions: one, or one per key of a `jepsen.independent` history.
//!
//! Semantics (histories/porcupine/README.md): the register starts as nil; `read` returns the
//! value; `write` sets it; `cas [from to]` sets `to` when the value is `from`, and a `fail`
//! of a cas means it did not apply (so the value was not `from`). Any other `fail` constrains
//! nothing (`:fail :read :timed-out`), and `info` is an unknown outcome. Values are any JSON
//! values, compared by their text.

use crate::history::{EventKind, History, HistoryError};
use crate::model::{Model, Operation, Partition};
use crate::models::{Interner, bad_field, op_events};

/// The id of nil (JSON null), the initial value.
const NIL: u32 = 0;

/// A register operation; values are interned ids (see [`RegisterModel::value_text`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum RegisterInput {
    Read,
    Write(u32),
    Cas { from: u32, to: u32 },
}

/// What a register operation returned.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum RegisterOutput {
    /// The value read.
    Read(u32),
    Write,
    /// Whether the compare-and-set applied.
    Cas(bool),
}

/// A single register; `cas` says whether compare-and-set is allowed.
#[derive(Debug, Clone)]
pub struct RegisterModel {
    cas: bool,
    values: Interner,
}

impl RegisterModel {
    /// The text of an interned value (`nil` for id 0).
    pub fn value_text(&self, id: u32) -> &str {
        self.values.text(id)
    }

    /// The model's name as the CLI spells it.
    pub fn name(&self) -> &'static str {
        if self.cas { "cas-register" } else { "register" }
    }
}

impl Model for RegisterModel {
    type State = u32;
    type Input = RegisterInput;
    type Output = RegisterOutput;

    fn init(&self) -> u32 {
        NIL
    }

    #[inline]
    fn step(&self, state: &u32, input: &RegisterInput, output: Option<&RegisterOutput>) -> Option<u32> {
        let state = *state;
        match (input, output) {
            (RegisterInput::Read, Some(RegisterOutput::Read(value))) => (*value == state).then_some(state),
            (RegisterInput::Read, _) => Some(state),
            (RegisterInput::Write(value), _) => Some(*value),
            (RegisterInput::Cas { from, to }, Some(RegisterOutput::Cas(true)) | None) => {
                if *from == state {
                    Some(*to)
                } else if output.is_none() {
                    // An unknown cas that did not apply changes nothing.
                    Some(state)
                } else {
                    None
                }
            }
            (RegisterInput::Cas { from, .. }, Some(RegisterOutput::Cas(false))) => (*from != state).then_some(state),
            (RegisterInput::Cas { .. }, Some(_)) => None,
        }
    }

    fn read_only(&self, input: &RegisterInput, output: Option<&RegisterOutput>) -> bool {
        matches!(
            (input, output),
            (RegisterInput::Read, Some(_)) | (RegisterInput::Cas { .. }, Some(RegisterOutput::Cas(false)))
        )
    }

    fn describe_state(&self, state: &u32) -> String {
        format!("register = {}", self.values.text(*state))
    }

    /// A read that returned a value, or a compare-and-set that succeeded from a value, that no
    /// write or compare-and-set of the partition ever wrote (`ok` or `info`: an `info` may have
    /// taken effect) and that is not the initial nil. The register only ever holds nil or a
    /// written value, so no order explains it. Linear in the operations; it answers at once
    /// where the search would try every placement of every `info` write first.
    fn impossible(&self, operations: &[Operation<RegisterInput, RegisterOutput>]) -> Option<usize> {
        let mut written = vec![false; self.values.len()];
        written[NIL as usize] = true;
        for operation in operations {
            match operation.input {
                RegisterInput::Write(v) | RegisterInput::Cas { to: v, .. } => written[v as usize] = true,
                RegisterInput::Read => {}
            }
        }
        operations.iter().position(|operation| match (operation.input, &operation.output) {
            (RegisterInput::Read, Some(RegisterOutput::Read(v))) => !written[*v as usize],
            (RegisterInput::Cas { from, .. }, Some(RegisterOutput::Cas(true))) => !written[from as usize],
            _ => false,
        })
    }
}

/// Translates a history into the partitions of a register (`cas`: a cas-register): one, or one
/// per key for a `jepsen.independent` history, whose every value is a `[key value]` tuple (a
/// read invoked as `[k nil]` and answered `[k v]`, a write `[k v]`, a cas `[k [from to]]`).
/// Independent keys are independent registers, so each is checked alone and a witness names
/// its key (partition `cas-register key K`); read as one register they would be a false alarm.
///
/// # Errors
/// [`HistoryError`] when the history is malformed, uses a function the model lacks, or a
/// value has the wrong shape (a cas value must be `[from, to]`).
pub fn register_partitions(history: &History, cas: bool) -> Result<Vec<Partition<RegisterModel>>, HistoryError> {
    let model_name = if cas { "cas-register" } else { "register" };
    let ops = op_events(history)?;
    let independent = is_independent(&ops);
    // Key -> the key's values and operations (one entry, key "", when not independent).
    let mut parts: std::collections::BTreeMap<String, (Interner, Vec<Operation<RegisterInput, RegisterOutput>>)> =
        std::collections::BTreeMap::new();
    for op in ops {
        let (key, invoke_value) = if independent {
            let tuple = op.invoke.value.as_ref().and_then(|v| v.as_array()).expect("checked by is_independent");
            (tuple[0].to_string(), Some(&tuple[1]))
        } else {
            (String::new(), op.invoke.value.as_ref())
        };
        let (values, operations) = parts.entry(key).or_insert_with(|| (Interner::new("nil"), Vec::new()));
        let mut intern = |value: &serde_json::Value| -> u32 {
            if value.is_null() { NIL } else { values.intern(&value.to_string()) }
        };
        let input = match op.invoke.f.as_str() {
            "read" => RegisterInput::Read,
            "write" => {
                let value = invoke_value.ok_or_else(|| bad_field(op.line, "a write needs a value"))?;
                RegisterInput::Write(intern(value))
            }
            "cas" if cas => {
                let pair = invoke_value.and_then(|v| v.as_array()).filter(|a| a.len() == 2);
                let Some(pair) = pair else {
                    return Err(bad_field(op.line, "a cas value must be [from, to]"));
                };
                RegisterInput::Cas { from: intern(&pair[0]), to: intern(&pair[1]) }
            }
            other => {
                return Err(HistoryError::UnknownFunction { line: op.line, model: model_name, f: other.to_string() });
            }
        };
        let kind = op.completion.map(|c| c.kind);
        let output = match (kind, input) {
            (None | Some(EventKind::Info), RegisterInput::Read) => continue,
            (None | Some(EventKind::Info), _) => None,
            (Some(EventKind::Ok), RegisterInput::Read) => {
                let completion = op.completion.expect("kind is Some");
                let value = completion
                    .value
                    .as_ref()
                    .ok_or_else(|| bad_field(op.completion_line, "an ok read needs a value (null for nil)"))?;
                let value = if independent {
                    let tuple = value.as_array().filter(|a| a.len() == 2);
                    let Some(tuple) = tuple else {
                        return Err(bad_field(op.completion_line, "an independent read answers [key value]"));
                    };
                    &tuple[1]
                } else {
                    value
                };
                Some(RegisterOutput::Read(intern(value)))
            }
            (Some(EventKind::Ok), RegisterInput::Write(_)) => Some(RegisterOutput::Write),
            (Some(EventKind::Ok), RegisterInput::Cas { .. }) => Some(RegisterOutput::Cas(true)),
            (Some(EventKind::Fail), RegisterInput::Cas { .. }) => Some(RegisterOutput::Cas(false)),
            (Some(EventKind::Fail), _) => continue,
            (Some(EventKind::Invoke), _) => unreachable!("pairing never completes with an invoke"),
        };
        operations.push(Operation { input, output, invoke: op.invoke_index, completion: op.completion_index });
    }
    if parts.is_empty() {
        parts.insert(String::new(), (Interner::new("nil"), Vec::new()));
    }
    Ok(parts
        .into_iter()
        .map(|(key, (values, operations))| Partition {
            label: if independent { format!("{model_name} key {key}") } else { model_name.to_string() },
            model: RegisterModel { cas, values },
            operations,
        })
        .collect())
}

/// Whether a history is `jepsen.independent`'s: every invoke's value is a `[key value]` tuple,
/// a cas's value being `[key [from to]]`. A plain cas-register's cas is `[from to]` with a
/// scalar `to`, and its reads are invoked with nil, so it is never taken for one.
fn is_independent(ops: &[crate::models::OpEvents<'_>]) -> bool {
    !ops.is_empty()
        && ops.iter().all(|op| {
            let tuple = op.invoke.value.as_ref().and_then(|v| v.as_array()).filter(|a| a.len() == 2);
            match (op.invoke.f.as_str(), tuple) {
                ("cas", Some(tuple)) => tuple[1].as_array().is_some_and(|pair| pair.len() == 2),
                (_, Some(tuple)) => !tuple[0].is_array() && !tuple[0].is_object(),
                (_, None) => false,
            }
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn model() -> RegisterModel {
        RegisterModel { cas: true, values: Interner::new("nil") }
    }

    /// Goal: the etcd semantics of porcupine's model. Method: one step per case.
    #[test]
    fn cas_register_steps() {
        let m = model();
        let cas = RegisterInput::Cas { from: 1, to: 2 };
        assert_eq!(m.step(&1, &cas, Some(&RegisterOutput::Cas(true))), Some(2));
        assert_eq!(m.step(&3, &cas, Some(&RegisterOutput::Cas(true))), None);
        assert_eq!(m.step(&3, &cas, Some(&RegisterOutput::Cas(false))), Some(3));
        assert_eq!(m.step(&1, &cas, Some(&RegisterOutput::Cas(false))), None);
        assert_eq!(m.step(&1, &cas, None), Some(2));
        assert_eq!(m.step(&3, &cas, None), Some(3));
        assert_eq!(m.step(&NIL, &RegisterInput::Read, Some(&RegisterOutput::Read(NIL))), Some(NIL));
        assert_eq!(m.step(&NIL, &RegisterInput::Read, Some(&RegisterOutput::Read(1))), None);
        assert_eq!(m.step(&NIL, &RegisterInput::Write(4), None), Some(4));
    }
}
