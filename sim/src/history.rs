//! Histories in the DESIGN section 8 format: JSON Lines, one client event per line, in
//! real-time order. The simulator and the real-infrastructure runner write the same format; the
//! checkers read it. Recording only appends; it never reorders.

use std::sync::{Arc, Mutex};

use serde::{Deserialize, Serialize};

/// invoke, ok (applied), fail (definitely not applied), info (unknown outcome).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum EventKind {
    Invoke,
    Ok,
    Fail,
    Info,
}

/// One line of a history.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct HistoryEvent {
    pub process: u64,
    #[serde(rename = "type")]
    pub kind: EventKind,
    pub f: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub value: Option<serde_json::Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub to: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub balance: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    pub time: u64,
}

impl HistoryEvent {
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
            time,
        }
    }
}

/// A history being recorded; clones share it.
#[derive(Debug, Clone, Default)]
pub struct History {
    events: Arc<Mutex<Vec<HistoryEvent>>>,
}

impl History {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn record(&self, event: HistoryEvent) {
        self.events.lock().expect("not poisoned").push(event);
    }

    pub fn events(&self) -> Vec<HistoryEvent> {
        self.events.lock().expect("not poisoned").clone()
    }

    pub fn len(&self) -> usize {
        self.events.lock().expect("not poisoned").len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// The JSON Lines text of a history.
pub fn to_jsonl(events: &[HistoryEvent]) -> String {
    let mut out = String::new();
    for event in events {
        out.push_str(&serde_json::to_string(event).expect("history events serialize"));
        out.push('\n');
    }
    out
}
