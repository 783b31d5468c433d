//! The key-value model of porcupine's kv tests (get, put, append on string values), checked one
//! key at a time, with the translation of a history into one partition per key.
//!
//! A key starts as the empty string; a get returns the value (a nil get reads as ""); put sets
//! it; append concatenates. Fails constrain nothing and unknown gets are dropped. Every
//! operation touches one key, which is what makes checking per key sound.

use std::cell::RefCell;
use std::collections::{BTreeMap, HashMap};

use crate::history::{EventKind, History, HistoryError};
use crate::memo::FxBuildHasher;
use crate::model::{Model, Operation, Partition};
use crate::models::strings::Strings;
use crate::models::{bad_field, op_events};

/// A kv operation on the partition's key; strings are interned ids.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum KvInput {
    Get,
    Put(u32),
    Append(u32),
}

/// What a kv operation returned.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum KvOutput {
    /// The value a get returned.
    Value(u32),
    /// A put or an append returned.
    Done,
}

/// One key's value. States are interned strings, so the step of an append memoises the
/// concatenation: the model stays a pure function to its callers, and a state is a `u32`.
#[derive(Debug, Clone)]
pub struct KvModel {
    strings: RefCell<Strings>,
    /// (state, appended) -> state; lookup only.
    appends: RefCell<HashMap<(u32, u32), u32, FxBuildHasher>>,
}

impl KvModel {
    fn new(strings: Strings) -> Self {
        KvModel { strings: RefCell::new(strings), appends: RefCell::new(HashMap::default()) }
    }
}

impl Model for KvModel {
    type State = u32;
    type Input = KvInput;
    type Output = KvOutput;

    fn init(&self) -> u32 {
        0
    }

    #[inline]
    fn step(&self, state: &u32, input: &KvInput, output: Option<&KvOutput>) -> Option<u32> {
        match (input, output) {
            (KvInput::Get, Some(KvOutput::Value(value))) => (value == state).then_some(*state),
            (KvInput::Get, _) => Some(*state),
            (KvInput::Put(value), _) => Some(*value),
            (KvInput::Append(suffix), _) => {
                if let Some(&next) = self.appends.borrow().get(&(*state, *suffix)) {
                    return Some(next);
                }
                let next = self.strings.borrow_mut().concat(*state, *suffix);
                self.appends.borrow_mut().insert((*state, *suffix), next);
                Some(next)
            }
        }
    }

    fn read_only(&self, input: &KvInput, output: Option<&KvOutput>) -> bool {
        matches!((input, output), (KvInput::Get, Some(_)))
    }

    fn describe_state(&self, state: &u32) -> String {
        format!("value = {:?}", self.strings.borrow().text(*state))
    }
}

/// Translates a history into one partition per key, in key order.
///
/// # Errors
/// [`HistoryError`] when the history is malformed, an operation has no key, or a value is not
/// a string.
pub fn kv_partitions(history: &History) -> Result<Vec<Partition<KvModel>>, HistoryError> {
    // Per key: the strings seen and the operations.
    let mut keys: BTreeMap<String, (Strings, Vec<Operation<KvInput, KvOutput>>)> = BTreeMap::new();
    for op in op_events(history)? {
        let Some(key) = op.invoke.key.as_deref() else {
            return Err(bad_field(op.line, "a kv operation needs a key"));
        };
        let (strings, operations) = keys.entry(key.to_string()).or_insert_with(|| (Strings::new(), Vec::new()));
        let string_value = |value: Option<&serde_json::Value>, line: usize| -> Result<String, HistoryError> {
            match value {
                Some(serde_json::Value::String(s)) => Ok(s.clone()),
                Some(serde_json::Value::Null) => Ok(String::new()),
                _ => Err(bad_field(line, "a kv value must be a string")),
            }
        };
        let input = match op.invoke.f.as_str() {
            "get" => KvInput::Get,
            "put" => KvInput::Put(strings.intern(&string_value(op.invoke.value.as_ref(), op.line)?)),
            "append" => KvInput::Append(strings.intern(&string_value(op.invoke.value.as_ref(), op.line)?)),
            other => {
                return Err(HistoryError::UnknownFunction { line: op.line, model: "kv", f: other.to_string() });
            }
        };
        let output = match op.completion.map(|c| (c.kind, c)) {
            None | Some((EventKind::Info, _)) if input == KvInput::Get => continue,
            None | Some((EventKind::Info, _)) => None,
            Some((EventKind::Fail, _)) => continue,
            Some((EventKind::Ok, completion)) => match input {
                KvInput::Get => {
                    let value = string_value(completion.value.as_ref(), op.completion_line)?;
                    Some(KvOutput::Value(strings.intern(&value)))
                }
                KvInput::Put(_) | KvInput::Append(_) => Some(KvOutput::Done),
            },
            Some((EventKind::Invoke, _)) => unreachable!("pairing never completes with an invoke"),
        };
        operations.push(Operation { input, output, invoke: op.invoke_index, completion: op.completion_index });
    }
    Ok(keys
        .into_iter()
        .map(|(key, (strings, operations))| Partition {
            label: format!("key {key:?}"),
            model: KvModel::new(strings),
            operations,
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Goal: appends concatenate and interned states compare by text. Method: reach "ab" by
    /// two paths and compare the states.
    #[test]
    fn appends_reach_equal_states() {
        let mut strings = Strings::new();
        let a = strings.intern("a");
        let b = strings.intern("b");
        let ab = strings.intern("ab");
        let model = KvModel::new(strings);
        let via_appends =
            model.step(&0, &KvInput::Append(a), None).and_then(|s| model.step(&s, &KvInput::Append(b), None));
        assert_eq!(via_appends, Some(ab));
        assert_eq!(model.step(&ab, &KvInput::Get, Some(&KvOutput::Value(ab))), Some(ab));
        assert_eq!(model.step(&ab, &KvInput::Get, Some(&KvOutput::Value(a))), None);
        assert!(model.describe_state(&ab).contains("\"ab\""));
    }
}
