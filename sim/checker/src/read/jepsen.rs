//! The reader for Jepsen's logs: the `jepsen.util` event lines, in the form porcupine's
//! `test_data/jepsen` holds them (`INFO  jepsen.util - <process>\t:<type>\t:<f>\t<value>`) and in
//! the form Jepsen writes `jepsen.log` today (`<date>{GMT}\tINFO\t[jepsen worker 3] jepsen.util:
//! <process>\t:<type>\t:<f>\t<value>`); fields separated by tabs or spaces.
//!
//! Lines of other loggers (setup, teardown, the nemesis's own messages) are skipped, as are
//! events of non-client processes (`:nemesis`, any keyword process): a Jepsen log is read as
//! Jepsen writes it. A `jepsen.util` line that does not parse is an error naming it, and so is
//! a log with no event line at all. Values are EDN (`nil`, `3`, `[1 2]`); a keyword value on a
//! fail or info (`:timed-out`) becomes the event's error. `time` is the line number: the older
//! logs carry no times, and the newer ones' are milliseconds apart at best.

use crate::history::{History, HistoryEvent};
use crate::read::edn::{Parser, event_kind};
use crate::read::{ReadError, syntax};

/// The logger whose lines are the history's events.
const EVENT_LOGGER: &str = "jepsen.util";

/// Parses a Jepsen log; blank lines and other loggers' lines are skipped.
///
/// # Errors
/// [`ReadError::Syntax`] naming the first `jepsen.util` line that is not an event line, or line
/// 1 when the log has no event line.
pub fn parse_jepsen_log(text: &str) -> Result<History, ReadError> {
    let mut history = History::default();
    let mut event_lines = 0;
    for (index, line) in text.lines().enumerate() {
        let number = index + 1;
        let Some(message) = event_message(line) else { continue };
        event_lines += 1;
        if let Some(event) = parse_event(message, number)? {
            history.events.push(event);
            history.lines.push(number);
        }
    }
    if event_lines == 0 {
        return Err(syntax(1, format!("no `{EVENT_LOGGER}` event line: not a Jepsen log")));
    }
    Ok(history)
}

/// The message of a `jepsen.util` line (what follows `jepsen.util -` or `jepsen.util:`), or
/// `None` for another logger's line.
fn event_message(line: &str) -> Option<&str> {
    let mut parser = Parser::new(line);
    loop {
        let word = parser.word();
        if word.is_empty() {
            return None;
        }
        if word == EVENT_LOGGER {
            // The older layout: `jepsen.util - <message>`.
            let rest = parser.rest();
            return Some(rest.strip_prefix('-').map_or(rest, str::trim_start));
        }
        if let Some(after) = word.strip_prefix(EVENT_LOGGER).and_then(|w| w.strip_prefix(':'))
            && after.is_empty()
        {
            return Some(parser.rest());
        }
    }
}

/// One event line's message: `None` for a non-client process's event (the nemesis).
fn parse_event(message: &str, number: usize) -> Result<Option<HistoryEvent>, ReadError> {
    let mut parser = Parser::new(message);
    let process_word = parser.word();
    if process_word.starts_with(':') {
        return Ok(None);
    }
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
        return Ok(Some(event));
    }
    let value = parser.value().map_err(|m| syntax(number, m))?;
    if !parser.at_end() {
        return Err(syntax(number, "text after the value"));
    }
    match value {
        crate::read::edn::Edn::Keyword(k) => event.error = Some(k),
        other => event.value = Some(other.to_json().map_err(|m| syntax(number, m))?),
    }
    Ok(Some(event))
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

    /// Goal: a log as Jepsen writes it today reads like the older form. Method: the same two
    /// events in both layouts, with a setup line, a nemesis event and the nemesis's logger.
    #[test]
    fn the_current_layout_with_other_loggers_and_the_nemesis() {
        let old = "INFO  jepsen.util - 0\t:invoke\t:read\tnil\nINFO  jepsen.util - 0\t:ok\t:read\t3\n";
        let current = "2024-05-02 10:21:47,476{GMT}\tINFO\t[main] jepsen.core: Running test\n\
             2024-05-02 10:21:47,500{GMT}\tINFO\t[jepsen worker 0] jepsen.util: 0\t:invoke\t:read\tnil\n\
             2024-05-02 10:21:47,510{GMT}\tINFO\t[jepsen nemesis] jepsen.util: :nemesis\t:info\t:start\tnil\n\
             2024-05-02 10:21:47,511{GMT}\tINFO\t[jepsen nemesis] jepsen.nemesis: Partitioning\n\
             2024-05-02 10:21:47,520{GMT}\tINFO\t[jepsen worker 0] jepsen.util: 0\t:ok\t:read\t3\n";
        let (old, current) = (parse_jepsen_log(old).unwrap(), parse_jepsen_log(current).unwrap());
        let strip = |h: &History| {
            h.events.iter().map(|e| (e.process, e.kind, e.f.clone(), e.value.clone())).collect::<Vec<_>>()
        };
        assert_eq!(strip(&old), strip(&current));
        assert_eq!(current.lines, vec![2, 5]);
        assert!(parse_jepsen_log("WARN nothing here\n").is_err(), "a log without events");
    }
}
