//! Goal: the checker returns porcupine's verdict on every reference history.
//! Method: read VERDICTS.tsv from the reference folder (`../../../shared/histories/porcupine`
//! from this crate, or `TESTBED_PORCUPINE_DIR`), check each of the 108 files with its model
//! and the default budget, and compare. A missing file or a different count fails the test.

use std::path::PathBuf;

use checker::read::{Format, read_history};
use checker::{Budget, ModelKind, Verdict, check_history};

/// Files VERDICTS.tsv lists: 102 etcd logs and 6 kv histories.
const REFERENCE_FILES_COUNT: usize = 108;

fn reference_dir() -> PathBuf {
    match std::env::var_os("TESTBED_PORCUPINE_DIR") {
        Some(dir) => PathBuf::from(dir),
        None => PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../../shared/histories/porcupine"),
    }
}

#[test]
fn every_reference_file_gets_porcupines_verdict() {
    let dir = reference_dir();
    let table = std::fs::read_to_string(dir.join("VERDICTS.tsv"))
        .unwrap_or_else(|e| panic!("cannot read {}: {e}", dir.join("VERDICTS.tsv").display()));
    let mut checked = 0;
    let mut wrong = Vec::new();
    for row in table.lines().filter(|l| !l.starts_with('#') && !l.trim().is_empty()) {
        let fields: Vec<&str> = row.split('\t').collect();
        assert_eq!(fields.len(), 3, "bad row {row:?}");
        let (file, expected, model) = (fields[0], fields[1] == "true", fields[2]);
        let model = if model.starts_with("kv") { ModelKind::Kv } else { model.parse().unwrap() };
        let path = dir.join(file);
        assert!(path.is_file(), "missing reference file {}", path.display());
        let format = Format::from_path(&path).expect("known extension");
        let history = read_history(&path, format).unwrap_or_else(|e| panic!("{file}: {e}"));
        let verdict = check_history(model, &history, Budget::default()).unwrap_or_else(|e| panic!("{file}: {e}"));
        let linearizable = match verdict {
            Verdict::Ok => true,
            Verdict::Violation(_) => false,
            Verdict::Unknown { .. } => {
                wrong.push(format!("{file}: unknown"));
                continue;
            }
        };
        if linearizable != expected {
            wrong.push(format!("{file}: expected {expected}, got {linearizable}"));
        }
        checked += 1;
    }
    assert!(wrong.is_empty(), "wrong verdicts:\n{}", wrong.join("\n"));
    assert_eq!(checked, REFERENCE_FILES_COUNT, "VERDICTS.tsv must list {REFERENCE_FILES_COUNT} files");
}
