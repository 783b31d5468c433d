//! Reading histories from files: the formats the checker accepts, how a format is chosen, and
//! the errors a reader reports (always with the line, never a panic).
//!
//! Each format's parser lives in its own file and produces [`crate::HistoryEvent`]s, so the models see
//! one event type whatever the source.

use std::fmt;
use std::path::{Path, PathBuf};
use std::str::FromStr;

use crate::history::History;

mod edn;
mod jepsen;
mod jsonl;

pub use edn::{parse_jepsen_edn, parse_kv_edn};
pub use jepsen::parse_jepsen_log;
pub use jsonl::parse_jsonl;

/// A history file format.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// Our JSON Lines (DESIGN section 8).
    Jsonl,
    /// Jepsen's etcd log lines, as in porcupine's `test_data/jepsen`.
    JepsenLog,
    /// EDN maps, one per line, as in porcupine's `test_data/kv`.
    KvEdn,
    /// A Jepsen store's `history.edn`: op maps one per line, or one vector of them, records
    /// tagged `#jepsen.history.Op` or not; non-client processes (`:nemesis`) skipped.
    JepsenEdn,
}

impl Format {
    /// Every format, for usage messages.
    pub const ALL: [Format; 4] = [Format::Jsonl, Format::JepsenLog, Format::KvEdn, Format::JepsenEdn];

    /// The name the CLI uses.
    pub fn name(self) -> &'static str {
        match self {
            Format::Jsonl => "jsonl",
            Format::JepsenLog => "jepsen-log",
            Format::KvEdn => "kv-edn",
            Format::JepsenEdn => "jepsen-edn",
        }
    }

    /// The format a file's extension implies: `.jsonl`, `.log`, `.txt` or `.edn`.
    pub fn from_path(path: &Path) -> Option<Format> {
        match path.extension()?.to_str()? {
            "jsonl" => Some(Format::Jsonl),
            "log" => Some(Format::JepsenLog),
            "txt" | "edn" => Some(Format::KvEdn),
            _ => None,
        }
    }

    /// Parses a whole history held in memory.
    ///
    /// # Errors
    /// [`ReadError::Syntax`] or [`ReadError::Json`] naming the first bad line.
    pub fn parse(self, text: &str) -> Result<History, ReadError> {
        match self {
            Format::Jsonl => parse_jsonl(text),
            Format::JepsenLog => parse_jepsen_log(text),
            Format::KvEdn => parse_kv_edn(text),
            Format::JepsenEdn => parse_jepsen_edn(text),
        }
    }
}

impl fmt::Display for Format {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for Format {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Format::ALL
            .into_iter()
            .find(|f| f.name() == s)
            .ok_or_else(|| format!("unknown format {s:?} (expected jsonl, jepsen-log or kv-edn)"))
    }
}

/// Reads and parses a history file.
///
/// # Errors
/// [`ReadError::Io`] when the file cannot be read (or is not UTF-8), else the parser's error.
pub fn read_history(path: &Path, format: Format) -> Result<History, ReadError> {
    let text = std::fs::read_to_string(path).map_err(|source| ReadError::Io { path: path.to_path_buf(), source })?;
    format.parse(&text)
}

/// Why a history could not be read. Callers report it as a usage error, naming the file.
#[derive(Debug, thiserror::Error)]
pub enum ReadError {
    /// The file could not be read.
    #[error("cannot read {path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// A line is not in the expected format.
    #[error("line {line}: {message}")]
    Syntax { line: usize, message: String },
    /// A JSON Lines line is not a valid event.
    #[error("line {line}: {source}")]
    Json {
        line: usize,
        #[source]
        source: serde_json::Error,
    },
}

impl ReadError {
    /// The 1-based line at fault, when the error is about one line.
    pub fn line(&self) -> Option<usize> {
        match self {
            ReadError::Io { .. } => None,
            ReadError::Syntax { line, .. } | ReadError::Json { line, .. } => Some(*line),
        }
    }
}

/// Shorthand for a syntax error.
pub(crate) fn syntax(line: usize, message: impl Into<String>) -> ReadError {
    ReadError::Syntax { line, message: message.into() }
}
