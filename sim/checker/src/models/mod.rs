//! The models the checker knows, and the helpers they share to turn history events into
//! operations: interning values and reading fields.
//!
//! Each model lives in its own file with its step function and the translation of a history
//! into its partitions; this file only holds what two or more of them need.

use std::collections::HashMap;

use crate::history::{History, HistoryError, HistoryEvent};

pub mod bank;
pub mod kv;
pub mod register;
mod strings;

/// Gives each distinct text a small id, so model states stay small and cheap to compare.
/// Id 0 is always the text passed to [`Interner::new`].
#[derive(Debug, Clone, Default)]
pub(crate) struct Interner {
    texts: Vec<String>,
    /// Lookup only; never iterated.
    ids: HashMap<String, u32>,
}

impl Interner {
    pub(crate) fn new(first: &str) -> Self {
        let mut interner = Interner::default();
        interner.intern(first);
        interner
    }

    pub(crate) fn intern(&mut self, text: &str) -> u32 {
        if let Some(&id) = self.ids.get(text) {
            return id;
        }
        let id = u32::try_from(self.texts.len()).expect("fewer than 2^32 distinct values");
        self.texts.push(text.to_string());
        self.ids.insert(text.to_string(), id);
        id
    }

    pub(crate) fn text(&self, id: u32) -> &str {
        &self.texts[id as usize]
    }

    /// Distinct values interned (ids are `0..len`).
    pub(crate) fn len(&self) -> usize {
        self.texts.len()
    }
}

/// The events of one operation, with the line of its invoke for error messages.
pub(crate) struct OpEvents<'h> {
    pub invoke: &'h HistoryEvent,
    pub completion: Option<&'h HistoryEvent>,
    pub invoke_index: usize,
    pub completion_index: Option<usize>,
    /// Line of the invoke.
    pub line: usize,
    /// Line of the completion, or of the invoke when there is none.
    pub completion_line: usize,
}

/// Pairs the history and yields each operation's events.
pub(crate) fn op_events(history: &History) -> Result<Vec<OpEvents<'_>>, HistoryError> {
    let raw = history.pair()?;
    Ok(raw
        .into_iter()
        .map(|op| OpEvents {
            invoke: &history.events[op.invoke],
            completion: op.completion.map(|c| &history.events[c]),
            invoke_index: op.invoke,
            completion_index: op.completion,
            line: history.line(op.invoke),
            completion_line: history.line(op.completion.unwrap_or(op.invoke)),
        })
        .collect())
}

/// A [`HistoryError::BadField`] for the operation invoked on `line`.
pub(crate) fn bad_field(line: usize, what: impl Into<String>) -> HistoryError {
    HistoryError::BadField { line, what: what.into() }
}
