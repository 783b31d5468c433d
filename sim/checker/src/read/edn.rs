//! The EDN reader for porcupine's kv histories (one map per line, e.g.
//! `{:process 0, :type :invoke, :f :append, :key "0", :value "x 0 0 y"}`), and the small EDN
//! value parser the Jepsen log reader shares.
//!
//! It reads the EDN subset these histories use (maps, vectors, strings, keywords, integers,
//! nil, booleans); it is not a general EDN reader (no sets, lists, tags or symbols).

use crate::history::{EventKind, History, HistoryEvent};
use crate::read::{ReadError, syntax};

/// Vectors and maps nest at most this deep, so bad input cannot exhaust the stack.
const NESTING_MAX: usize = 32;

/// An EDN value of the subset above; numbers keep their text.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Edn {
    Nil,
    Bool(bool),
    Number(String),
    Str(String),
    Keyword(String),
    Vector(Vec<Edn>),
    Map(Vec<(Edn, Edn)>),
}

impl Edn {
    /// The JSON form of a value: keywords become strings, maps objects keyed by their text.
    pub(crate) fn to_json(&self) -> Result<serde_json::Value, String> {
        Ok(match self {
            Edn::Nil => serde_json::Value::Null,
            Edn::Bool(b) => serde_json::Value::Bool(*b),
            Edn::Number(text) => serde_json::Value::Number(
                text.parse::<serde_json::Number>().map_err(|_| format!("number {text} is not valid JSON"))?,
            ),
            Edn::Str(s) | Edn::Keyword(s) => serde_json::Value::String(s.clone()),
            Edn::Vector(items) => serde_json::Value::Array(items.iter().map(Edn::to_json).collect::<Result<_, _>>()?),
            Edn::Map(entries) => {
                let mut object = serde_json::Map::new();
                for (k, v) in entries {
                    object.insert(k.text().unwrap_or_default().to_string(), v.to_json()?);
                }
                serde_json::Value::Object(object)
            }
        })
    }

    /// The text of a string or keyword.
    fn text(&self) -> Option<&str> {
        match self {
            Edn::Str(s) | Edn::Keyword(s) => Some(s),
            _ => None,
        }
    }
}

/// A cursor over one line.
pub(crate) struct Parser<'a> {
    text: &'a str,
    pos: usize,
}

impl<'a> Parser<'a> {
    pub(crate) fn new(text: &'a str) -> Self {
        Parser { text, pos: 0 }
    }

    fn peek(&self) -> Option<u8> {
        self.text.as_bytes().get(self.pos).copied()
    }

    /// Skips whitespace and commas (EDN treats commas as whitespace).
    fn skip_space(&mut self) {
        while let Some(b) = self.peek() {
            if b.is_ascii_whitespace() || b == b',' {
                self.pos += 1;
            } else {
                break;
            }
        }
    }

    /// Whether only whitespace is left.
    pub(crate) fn at_end(&mut self) -> bool {
        self.skip_space();
        self.pos == self.text.len()
    }

    /// A run of characters up to whitespace or a delimiter.
    fn token(&mut self) -> &'a str {
        let start = self.pos;
        while let Some(b) = self.peek() {
            if b.is_ascii_whitespace() || matches!(b, b',' | b'{' | b'}' | b'[' | b']' | b'"') {
                break;
            }
            self.pos += 1;
        }
        &self.text[start..self.pos]
    }

    pub(crate) fn value(&mut self) -> Result<Edn, String> {
        self.value_nested(0)
    }

    fn value_nested(&mut self, depth: usize) -> Result<Edn, String> {
        self.skip_space();
        let Some(first) = self.peek() else {
            return Err("expected a value, found the end of the line".into());
        };
        match first {
            b'{' | b'[' => {
                if depth >= NESTING_MAX {
                    return Err(format!("nested deeper than {NESTING_MAX}"));
                }
                self.pos += 1;
                let close = if first == b'{' { b'}' } else { b']' };
                let mut items = Vec::new();
                loop {
                    self.skip_space();
                    match self.peek() {
                        None => return Err(format!("missing closing {:?}", close as char)),
                        Some(b) if b == close => {
                            self.pos += 1;
                            break;
                        }
                        Some(_) => items.push(self.value_nested(depth + 1)?),
                    }
                }
                if first == b'[' {
                    return Ok(Edn::Vector(items));
                }
                if items.len() % 2 != 0 {
                    return Err("a map needs an even number of forms".into());
                }
                let mut entries = Vec::with_capacity(items.len() / 2);
                let mut items = items.into_iter();
                while let (Some(k), Some(v)) = (items.next(), items.next()) {
                    entries.push((k, v));
                }
                Ok(Edn::Map(entries))
            }
            b'"' => self.string().map(Edn::Str),
            b':' => {
                self.pos += 1;
                let name = self.token();
                if name.is_empty() {
                    return Err("empty keyword".into());
                }
                Ok(Edn::Keyword(name.to_string()))
            }
            b'}' | b']' => Err(format!("unexpected {:?}", first as char)),
            _ => {
                let token = self.token();
                match token {
                    "nil" => Ok(Edn::Nil),
                    "true" => Ok(Edn::Bool(true)),
                    "false" => Ok(Edn::Bool(false)),
                    t if looks_numeric(t) => Ok(Edn::Number(t.to_string())),
                    t => Err(format!("unsupported token {t:?}")),
                }
            }
        }
    }

    fn string(&mut self) -> Result<String, String> {
        debug_assert_eq!(self.peek(), Some(b'"'));
        self.pos += 1;
        let mut out = String::new();
        let mut start = self.pos;
        loop {
            match self.peek() {
                None => return Err("unterminated string".into()),
                Some(b'"') => {
                    out.push_str(&self.text[start..self.pos]);
                    self.pos += 1;
                    return Ok(out);
                }
                Some(b'\\') => {
                    out.push_str(&self.text[start..self.pos]);
                    let escaped = self.text.as_bytes().get(self.pos + 1).copied();
                    out.push(match escaped {
                        Some(b'"') => '"',
                        Some(b'\\') => '\\',
                        Some(b'n') => '\n',
                        Some(b't') => '\t',
                        Some(b'r') => '\r',
                        _ => return Err("unsupported escape in string".into()),
                    });
                    self.pos += 2;
                    start = self.pos;
                }
                Some(_) => self.pos += 1,
            }
        }
    }

    /// The rest of the line, trimmed.
    pub(crate) fn rest(&self) -> &'a str {
        self.text[self.pos..].trim()
    }

    /// The next whitespace-separated word.
    pub(crate) fn word(&mut self) -> &'a str {
        self.skip_space();
        let start = self.pos;
        while let Some(b) = self.peek() {
            if b.is_ascii_whitespace() {
                break;
            }
            self.pos += 1;
        }
        &self.text[start..self.pos]
    }
}

fn looks_numeric(token: &str) -> bool {
    let digits = token.strip_prefix(['-', '+']).unwrap_or(token);
    digits.starts_with(|c: char| c.is_ascii_digit())
}

/// The event kind a keyword names.
pub(crate) fn event_kind(name: &str) -> Option<EventKind> {
    match name {
        "invoke" => Some(EventKind::Invoke),
        "ok" => Some(EventKind::Ok),
        "fail" => Some(EventKind::Fail),
        "info" => Some(EventKind::Info),
        _ => None,
    }
}

/// Parses a history of EDN maps, one per line; blank lines are skipped. `:time` defaults to the
/// line number. A keyword `:value` on a fail or info (`:timed-out`) becomes the event's error.
///
/// # Errors
/// [`ReadError::Syntax`] naming the first line that is not such a map, or lacks `:process`,
/// `:type` or `:f`.
pub fn parse_kv_edn(text: &str) -> Result<History, ReadError> {
    let mut history = History::default();
    for map in maps_per_line(text) {
        let (number, entries) = map?;
        history.events.push(event_from_map(&entries, number, false)?.expect("kv events are all kept"));
        history.lines.push(number);
    }
    Ok(history)
}

/// The maps of a text holding one EDN map per line (blank lines skipped), with their line
/// numbers; an error names the first line that is not a map.
fn maps_per_line(text: &str) -> impl Iterator<Item = Result<(usize, Vec<(Edn, Edn)>), ReadError>> + '_ {
    text.lines().enumerate().filter(|(_, line)| !line.trim().is_empty()).map(|(index, line)| {
        let number = index + 1;
        let mut parser = Parser::new(line);
        let value = parser.value().map_err(|m| syntax(number, m))?;
        if !parser.at_end() {
            return Err(syntax(number, "text after the map"));
        }
        match value {
            Edn::Map(entries) => Ok((number, entries)),
            _ => Err(syntax(number, "expected a map {...}")),
        }
    })
}

/// The tag of the records newer Jepsen versions write into `history.edn`.
const OP_TAG: &str = "#jepsen.history.Op";

/// Parses a Jepsen `history.edn`: op maps one per line, or one vector of op maps (over any
/// number of lines); a map may be tagged `#jepsen.history.Op`. Events of non-client processes
/// (a keyword `:process`, such as `:nemesis`) are skipped; an `:error` of any shape is kept as
/// its text. Lines are line numbers for one map per line, positions in the vector otherwise.
///
/// # Errors
/// [`ReadError::Syntax`] naming the first map that is not an op (or line 1 for a vector that
/// does not parse), or when the file holds no op at all.
pub fn parse_jepsen_edn(text: &str) -> Result<History, ReadError> {
    let untagged = text.replace(OP_TAG, "");
    let mut history = History::default();
    let push = |entries: &[(Edn, Edn)], line: usize, history: &mut History| -> Result<(), ReadError> {
        if let Some(event) = event_from_map(entries, line, true)? {
            history.events.push(event);
            history.lines.push(line);
        }
        Ok(())
    };
    let mut ops = 0;
    if untagged.trim_start().starts_with('[') {
        let mut parser = Parser::new(&untagged);
        let value = parser.value().map_err(|m| syntax(1, m))?;
        if !parser.at_end() {
            return Err(syntax(1, "text after the vector of ops"));
        }
        let Edn::Vector(items) = value else { unreachable!("it starts with [") };
        for (index, item) in items.iter().enumerate() {
            let Edn::Map(entries) = item else {
                return Err(syntax(index + 1, "expected an op map {...} in the vector"));
            };
            ops += 1;
            push(entries, index + 1, &mut history)?;
        }
    } else {
        for map in maps_per_line(&untagged) {
            let (number, entries) = map?;
            ops += 1;
            push(&entries, number, &mut history)?;
        }
    }
    if ops == 0 {
        return Err(syntax(1, "no op: not a Jepsen history"));
    }
    Ok(history)
}

/// The event of one op map; `None` for a non-client process's op when `jepsen` (a Jepsen
/// history, whose `:error` may be any value).
fn event_from_map(entries: &[(Edn, Edn)], line: usize, jepsen: bool) -> Result<Option<HistoryEvent>, ReadError> {
    let get = |name: &str| entries.iter().find(|(k, _)| matches!(k, Edn::Keyword(n) if n == name)).map(|(_, v)| v);
    let integer = |name: &str| -> Result<Option<u64>, ReadError> {
        match get(name) {
            None => Ok(None),
            Some(Edn::Number(t)) => t
                .parse::<u64>()
                .map(Some)
                .map_err(|_| syntax(line, format!(":{name} {t} is not a non-negative integer"))),
            Some(other) => Err(syntax(line, format!(":{name} must be an integer, found {other:?}"))),
        }
    };
    let text = |name: &str| -> Result<Option<String>, ReadError> {
        match get(name) {
            None | Some(Edn::Nil) => Ok(None),
            Some(Edn::Str(s) | Edn::Keyword(s) | Edn::Number(s)) => Ok(Some(s.clone())),
            Some(other) => Err(syntax(line, format!(":{name} must be a string, found {other:?}"))),
        }
    };
    if jepsen && matches!(get("process"), Some(Edn::Keyword(_))) {
        return Ok(None);
    }
    let process = integer("process")?.ok_or_else(|| syntax(line, "missing :process"))?;
    let kind = match get("type") {
        Some(Edn::Keyword(k)) => event_kind(k).ok_or_else(|| syntax(line, format!("unknown :type :{k}")))?,
        _ => return Err(syntax(line, "missing :type keyword")),
    };
    let f = text("f")?.ok_or_else(|| syntax(line, "missing :f"))?;
    let time = integer("time")?.unwrap_or(line as u64);
    let mut event = HistoryEvent::new(process, kind, &f, time);
    event.key = text("key")?;
    event.to = text("to")?;
    event.balance = text("balance")?;
    event.error = match get("error") {
        Some(Edn::Vector(_) | Edn::Map(_) | Edn::Bool(_)) if jepsen => {
            Some(get("error").expect("matched").to_json().map_err(|m| syntax(line, m))?.to_string())
        }
        _ => text("error")?,
    };
    match get("value") {
        None => {}
        Some(Edn::Keyword(k)) if matches!(kind, EventKind::Fail | EventKind::Info) && event.error.is_none() => {
            event.error = Some(k.clone());
        }
        Some(v) => event.value = Some(v.to_json().map_err(|m| syntax(line, m))?),
    }
    Ok(Some(event))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_values() {
        let mut p = Parser::new(r#"{:a [1 -2 "x\"y"], :b nil, :c :k}"#);
        let v = p.value().unwrap();
        assert!(p.at_end());
        let Edn::Map(entries) = v else { panic!("a map") };
        assert_eq!(entries.len(), 3);
        assert_eq!(
            entries[0].1,
            Edn::Vector(vec![Edn::Number("1".into()), Edn::Number("-2".into()), Edn::Str("x\"y".into())])
        );
        assert_eq!(entries[2].1, Edn::Keyword("k".into()));
    }

    #[test]
    fn rejects_deep_nesting() {
        let deep = "[".repeat(100);
        assert!(Parser::new(&deep).value().is_err());
    }
}
