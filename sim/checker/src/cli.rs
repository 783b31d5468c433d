//! The `check` command as the main binary calls it: read each file, check it with the chosen
//! model, print one verdict per file, and return the exit code.
//!
//! It does not parse command lines; the binary does, and passes the pieces here.

use std::io::Write;
use std::path::{Path, PathBuf};

use crate::check::{Budget, ModelKind, Verdict, check_history};
use crate::read::{Format, read_history};

/// Every file is linearizable.
pub const EXIT_OK: i32 = 0;
/// Some file is not linearizable.
pub const EXIT_VIOLATION: i32 = 1;
/// Bad model or format name, or a file that cannot be read or does not fit the model.
pub const EXIT_USAGE: i32 = 2;
/// No violation, but some file's check ran out of budget.
pub const EXIT_UNKNOWN: i32 = 3;

/// Checks `files` with `model` (bank, register, cas-register, kv) and the default budget.
/// `format` (jsonl, jepsen-log, kv-edn, jepsen-edn) defaults from each file's extension (`.jsonl`, `.log`,
/// `.txt`/`.edn`), else from the model (jsonl; kv-edn for kv).
///
/// Prints `FILE: linearizable`, `FILE: not linearizable` followed by the witness indented, or
/// `FILE: unknown` followed by the partition that spent the budget. Returns [`EXIT_VIOLATION`]
/// if any file is not linearizable, else [`EXIT_UNKNOWN`] if any is unknown, else [`EXIT_OK`];
/// [`EXIT_USAGE`] (after a `usage error:` line) on an unknown model or format, or a file that
/// cannot be read or does not fit the model, and then it checks no further file.
///
/// # Examples
/// ```
/// let mut out = Vec::new();
/// let code = checker::run_check("queue", None, &[], &mut out);
/// assert_eq!(code, checker::cli::EXIT_USAGE);
/// assert!(String::from_utf8(out).unwrap().starts_with("usage error: unknown model"));
/// ```
pub fn run_check(model: &str, format: Option<&str>, files: &[PathBuf], out: &mut impl Write) -> i32 {
    run_check_with_budget(model, format, files, Budget::default(), out)
}

/// [`run_check`] with an explicit budget per file.
pub fn run_check_with_budget(
    model: &str,
    format: Option<&str>,
    files: &[PathBuf],
    budget: Budget,
    out: &mut impl Write,
) -> i32 {
    match check_files(model, format, files, budget, out) {
        Ok(code) => code,
        Err(message) => {
            // Nothing more can be reported if the output itself is broken.
            let _ = writeln!(out, "usage error: {message}");
            EXIT_USAGE
        }
    }
}

fn check_files(
    model: &str,
    format: Option<&str>,
    files: &[PathBuf],
    budget: Budget,
    out: &mut impl Write,
) -> Result<i32, String> {
    let model: ModelKind = model.parse()?;
    let format: Option<Format> = format.map(str::parse).transpose()?;
    if files.is_empty() {
        return Err("no history file given".into());
    }
    let mut code = EXIT_OK;
    for file in files {
        let format = format.unwrap_or_else(|| default_format(model, file));
        let history = read_history(file, format).map_err(|e| format!("{}: {e}", file.display()))?;
        let verdict = check_history(model, &history, budget).map_err(|e| format!("{}: {e}", file.display()))?;
        let written = match &verdict {
            Verdict::Ok => writeln!(out, "{}: linearizable", file.display()),
            Verdict::Unknown { partition, limit } => {
                writeln!(out, "{}: unknown\n    {limit} while checking {partition}", file.display())
            }
            Verdict::Violation(witness) => {
                let indented = witness.to_string().replace('\n', "\n    ");
                writeln!(out, "{}: not linearizable\n    {indented}", file.display())
            }
        };
        written.map_err(|e| format!("cannot write the report: {e}"))?;
        code = match (&verdict, code) {
            (Verdict::Violation(_), _) => EXIT_VIOLATION,
            (Verdict::Unknown { .. }, EXIT_OK) => EXIT_UNKNOWN,
            (_, code) => code,
        };
    }
    Ok(code)
}

fn default_format(model: ModelKind, file: &Path) -> Format {
    Format::from_path(file).unwrap_or(match model {
        ModelKind::Kv => Format::KvEdn,
        _ => Format::Jsonl,
    })
}
