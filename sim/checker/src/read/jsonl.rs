//! The JSON Lines reader: one [`HistoryEvent`] per line, blank lines skipped.

use crate::history::{History, HistoryEvent};
use crate::read::ReadError;

/// Parses a JSON Lines history.
///
/// # Errors
/// [`ReadError::Json`] naming the first line that is not a valid event.
pub fn parse_jsonl(text: &str) -> Result<History, ReadError> {
    let mut history = History::default();
    for (index, line) in text.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        let event: HistoryEvent =
            serde_json::from_str(line).map_err(|source| ReadError::Json { line: index + 1, source })?;
        history.events.push(event);
        history.lines.push(index + 1);
    }
    Ok(history)
}
