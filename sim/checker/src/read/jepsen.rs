//! The reader for Jepsen's etcd logs as porcupine's `test_data/jepsen` holds them:
//! `INFO  jepsen.util - <process>\t:<type>\t:<f>\t<value>`, fields separated by tabs or spaces.
//!
//! Values are EDN (`nil`, `3`, `[1 2]`); a keyword value on a fail or info (`:timed-out`)
//! becomes the event's error. `time` is the line number: these logs carry no times.

use crate::history::{History, HistoryEvent};
use crate::read::edn::{Parser, event_kind};
use crate::read::{ReadError, syntax};

/// Parses a Jepsen log; blank lines are skipped.
///
/// # Errors
/// [`ReadError::Syntax`] naming the first line that is not a `jepsen.util` event line.
pub fn parse_jepsen_log(text: &str) -> Result<History, ReadError> {
    let mut history = History::default();
    for (index, line) in text.lines().enumerate() {
        let number = index + 1;
        if line.trim().is_empty() {
            continue;
        }
        history.events.push(parse_line(line, number)?);
        history.lines.push(number);
    }
    Ok(history)
}

fn parse_line(line: &str, number: usize) -> Result<HistoryEvent, ReadError> {
    let mut parser = Parser::new(line);
    let prefix = [parser.word(), parser.word(), parser.word()];
    if prefix != ["INFO", "jepsen.util", "-"] {
        return Err(syntax(number, "expected `INFO  jepsen.util - <process> :<type> :<f> <value>`"));
    }
    let process_word = parser.word();
    let process = process_word
        .parse::<u64>()
        .map_err(|_| syntax(number, format!("process {process_word:?} is not a non-negative integer")))?;
    let kind_word = parser.word();
    let kind = kind_word
        .strip_prefix(':')
        .and_then(event_kind)
        .ok_or_else(|| syntax(number, format!("unknown type {kind_word:?}")))?;
    let f_word = parser.word();
    let f = f_word
        .strip_prefix(':')
        .filter(|f| !f.is_empty())
        .ok_or_else(|| syntax(number, format!("function {f_word:?} is not a keyword")))?;
    let mut event = HistoryEvent::new(process, kind, f, number as u64);
    if parser.rest().is_empty() {
        return Ok(event);
    }
    let value = parser.value().map_err(|m| syntax(number, m))?;
    if !parser.at_end() {
        return Err(syntax(number, "text after the value"));
    }
    match value {
        crate::read::edn::Edn::Keyword(k) => event.error = Some(k),
        other => event.value = Some(other.to_json().map_err(|m| syntax(number, m))?),
    }
    Ok(event)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::history::EventKind;

    #[test]
    fn tabs_and_spaces() {
        let tabs = parse_jepsen_log("INFO  jepsen.util - 2\t:invoke\t:cas\t[3 0]\n").unwrap();
        let spaces = parse_jepsen_log("INFO  jepsen.util - 2   :invoke :cas    [3 0]\n").unwrap();
        assert_eq!(tabs, spaces);
        let event = &tabs.events[0];
        assert_eq!(event.kind, EventKind::Invoke);
        assert_eq!(event.value.as_ref().unwrap().to_string(), "[3,0]");
        let timeout = parse_jepsen_log("INFO  jepsen.util - 1\t:fail\t:read\t:timed-out").unwrap();
        assert_eq!(timeout.events[0].error.as_deref(), Some("timed-out"));
        assert_eq!(timeout.events[0].value, None);
    }
}
