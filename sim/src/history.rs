//! Histories in the DESIGN section 8 format: JSON Lines, one client event per line, in
//! real-time order. The simulator and the real-infrastructure runner write the same format; the
//! checkers read it. Recording only appends; it never reorders.

use std::sync::{Arc, Mutex};

pub use checker::history::{EventKind, HistoryEvent};

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
