//! The history event type that the simulator, the real-infrastructure runner and the readers
//! produce, and the pairing of each invoke with its completion.
//!
//! It deliberately knows nothing about models: what a `value` or a `fail` means is decided by
//! each model in `models/`. Pairing only checks the shape every history must have (one
//! operation in flight per process, completions that answer an invoke).

use std::collections::BTreeMap;
use std::fmt;

use serde::{Deserialize, Serialize};

/// What an event says about its operation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum EventKind {
    /// The client sent the request.
    Invoke,
    /// The operation took effect and returned.
    Ok,
    /// The operation did not take effect (what it observed may still be a constraint, as for
    /// `insufficient_funds` or a failed compare-and-set).
    Fail,
    /// The outcome is unknown: it may take effect at any moment after the invoke, or never.
    Info,
}

impl EventKind {
    /// The lowercase name used in every format.
    pub fn name(self) -> &'static str {
        match self {
            EventKind::Invoke => "invoke",
            EventKind::Ok => "ok",
            EventKind::Fail => "fail",
            EventKind::Info => "info",
        }
    }
}

impl fmt::Display for EventKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// One line of a JSON Lines history (DESIGN section 8). The line order of a history is its
/// real-time order; `time` is informative and only shown in witnesses.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct HistoryEvent {
    pub process: u64,
    #[serde(rename = "type")]
    pub kind: EventKind,
    pub f: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key: Option<String>,
    /// Absent: `None`; an explicit `null` (a read of nil): `Some(Null)`, so that a history
    /// written and read back checks the same.
    #[serde(default, skip_serializing_if = "Option::is_none", deserialize_with = "present")]
    pub value: Option<serde_json::Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub to: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub balance: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// A read of a versioned state: on the completion, the version the answer reported; on the
    /// invoke, the least version the read asked for (`min_position`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<u64>,
    pub time: u64,
}

/// A field that is present, `null` included, is `Some`.
fn present<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<serde_json::Value>, D::Error> {
    <serde_json::Value as serde::Deserialize>::deserialize(d).map(Some)
}

impl HistoryEvent {
    /// An event with only the mandatory fields set; the others are filled in by the caller.
    pub fn new(process: u64, kind: EventKind, f: &str, time: u64) -> Self {
        HistoryEvent {
            process,
            kind,
            f: f.to_string(),
            key: None,
            value: None,
            to: None,
            balance: None,
            error: None,
            version: None,
            time,
        }
    }
}

impl fmt::Display for HistoryEvent {
    /// A compact one-line form for witnesses: `p3 ok withdraw acct-1 10.00 (t=1450000)`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "p{} {} {}", self.process, self.kind, self.f)?;
        if let Some(key) = &self.key {
            write!(f, " {key}")?;
        }
        if let Some(to) = &self.to {
            write!(f, " -> {to}")?;
        }
        if let Some(value) = &self.value {
            write!(f, " {value}")?;
        }
        if let Some(balance) = &self.balance {
            write!(f, " balance={balance}")?;
        }
        if let Some(error) = &self.error {
            write!(f, " error={error}")?;
        }
        write!(f, " (t={})", self.time)
    }
}

/// A history: events in real-time order, with the line each came from (for error messages).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct History {
    pub events: Vec<HistoryEvent>,
    /// `lines[i]` is the 1-based line of `events[i]` in its file.
    pub lines: Vec<usize>,
}

impl History {
    /// A history built in memory (by the simulator): event `i` is said to be on line `i + 1`.
    pub fn from_events(events: Vec<HistoryEvent>) -> Self {
        let lines = (1..=events.len()).collect();
        History { events, lines }
    }

    /// The line of event `index`, for error messages.
    pub fn line(&self, index: usize) -> usize {
        self.lines.get(index).copied().unwrap_or(index + 1)
    }

    /// Pairs every invoke with the completion of the same process that follows it.
    ///
    /// An invoke that is never completed is returned with `completion: None`; models treat it
    /// like an `info` (unknown outcome).
    ///
    /// # Errors
    /// [`HistoryError`] when a process invokes while its previous operation is in flight, when
    /// a completion answers no invoke, or when a completion names another function or key.
    pub fn pair(&self) -> Result<Vec<RawOp>, HistoryError> {
        assert_eq!(self.events.len(), self.lines.len(), "one line per event");
        let mut ops: Vec<RawOp> = Vec::new();
        // In-flight operation per process, as an index into `ops`.
        let mut in_flight: BTreeMap<u64, usize> = BTreeMap::new();
        for (index, event) in self.events.iter().enumerate() {
            let line = self.line(index);
            match event.kind {
                EventKind::Invoke => {
                    if let Some(&open) = in_flight.get(&event.process) {
                        return Err(HistoryError::ProcessBusy {
                            line,
                            process: event.process,
                            invoke_line: self.line(ops[open].invoke),
                        });
                    }
                    in_flight.insert(event.process, ops.len());
                    ops.push(RawOp { invoke: index, completion: None });
                }
                EventKind::Ok | EventKind::Fail | EventKind::Info => {
                    let Some(open) = in_flight.remove(&event.process) else {
                        return Err(HistoryError::NoInvoke { line, process: event.process });
                    };
                    let invoke = &self.events[ops[open].invoke];
                    if invoke.f != event.f {
                        return Err(HistoryError::FunctionMismatch {
                            line,
                            invoked: invoke.f.clone(),
                            completed: event.f.clone(),
                        });
                    }
                    if event.key.is_some() && invoke.key != event.key {
                        return Err(HistoryError::KeyMismatch {
                            line,
                            invoked: invoke.key.clone().unwrap_or_default(),
                            completed: event.key.clone().unwrap_or_default(),
                        });
                    }
                    ops[open].completion = Some(index);
                }
            }
        }
        assert!(ops.iter().all(|op| op.completion.is_none_or(|c| c > op.invoke)));
        Ok(ops)
    }
}

/// An invoke and its completion, as indexes into [`History::events`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RawOp {
    pub invoke: usize,
    /// None when the history ends before the operation completes.
    pub completion: Option<usize>,
}

/// Why a history cannot be checked. Callers report it as a usage error (the history is
/// malformed or does not fit the model); it is never a verdict.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HistoryError {
    /// A process invoked while its previous operation was still in flight.
    #[error("line {line}: process {process} invokes while its operation from line {invoke_line} is in flight")]
    ProcessBusy { line: usize, process: u64, invoke_line: usize },
    /// A completion with no invoke in flight for its process.
    #[error("line {line}: completion for process {process}, which has no operation in flight")]
    NoInvoke { line: usize, process: u64 },
    /// A completion for another function than the one invoked.
    #[error("line {line}: completion of {completed:?} answers an invoke of {invoked:?}")]
    FunctionMismatch { line: usize, invoked: String, completed: String },
    /// A completion for another key than the one invoked.
    #[error("line {line}: completion for key {completed:?} answers an invoke on key {invoked:?}")]
    KeyMismatch { line: usize, invoked: String, completed: String },
    /// The model has no such function.
    #[error("line {line}: the {model} model has no function {f:?}")]
    UnknownFunction { line: usize, model: &'static str, f: String },
    /// A field the model needs is missing or has the wrong shape.
    #[error("line {line}: {what}")]
    BadField { line: usize, what: String },
}
