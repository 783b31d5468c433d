//! Goal: readers and model translation report bad input as errors naming the line, and never
//! panic, whatever the bytes.
//!
//! Method: one malformed line per case for each format, then histories that parse but do not
//! fit (a completion without invoke, a busy process, a bad amount), then seeded random garbage
//! and random mutations of valid lines fed to every reader and model.

use std::path::Path;

use checker::read::{Format, ReadError, read_history};
use checker::{Budget, HistoryError, ModelKind, check_history};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

fn syntax_line(format: Format, text: &str) -> usize {
    match format.parse(text) {
        Err(e @ (ReadError::Syntax { .. } | ReadError::Json { .. })) => e.line().expect("line errors name the line"),
        other => panic!("expected a syntax error for {text:?}, got {other:?}"),
    }
}

#[test]
fn jsonl_errors_name_the_line() {
    let good = r#"{"process":0,"type":"invoke","f":"read","key":"a","time":1}"#;
    assert_eq!(syntax_line(Format::Jsonl, &format!("{good}\n\n{{not json")), 3);
    assert_eq!(syntax_line(Format::Jsonl, &format!("{good}\n{}", good.replace("invoke", "done"))), 2);
    assert_eq!(syntax_line(Format::Jsonl, r#"{"process":-1,"type":"ok","f":"read","time":1}"#), 1);
    assert_eq!(syntax_line(Format::Jsonl, r#"{"process":1,"type":"ok","f":"read"}"#), 1, "time is required");
    let message = Format::Jsonl.parse("{").unwrap_err().to_string();
    assert!(message.starts_with("line 1: "), "{message}");
}

#[test]
fn jepsen_log_errors_name_the_line() {
    let good = "INFO  jepsen.util - 0\t:invoke\t:read\tnil";
    // Other loggers' lines are skipped (a Jepsen log is read as Jepsen writes it); a
    // `jepsen.util` line that does not parse is an error.
    assert_eq!(syntax_line(Format::JepsenLog, &format!("{good}\nWARN jepsen.util - something else")), 2);
    assert_eq!(syntax_line(Format::JepsenLog, "WARN something else"), 1);
    assert_eq!(syntax_line(Format::JepsenLog, "INFO  jepsen.util - x\t:invoke\t:read\tnil"), 1);
    assert_eq!(syntax_line(Format::JepsenLog, "INFO  jepsen.util - 1\t:started\t:read\tnil"), 1);
    assert_eq!(syntax_line(Format::JepsenLog, "INFO  jepsen.util - 1\t:invoke\tread\tnil"), 1);
    assert_eq!(syntax_line(Format::JepsenLog, "INFO  jepsen.util - 1\t:invoke\t:cas\t[1 2"), 1);
    assert_eq!(syntax_line(Format::JepsenLog, "INFO  jepsen.util - 1\t:invoke\t:cas\t[1 2] 3"), 1);
    assert_eq!(syntax_line(Format::JepsenLog, &format!("{good}\n{good}\nINFO  jepsen.util - 1\t:ok\t:read\tfoo")), 3);
}

#[test]
fn kv_edn_errors_name_the_line() {
    let good = r#"{:process 0, :type :invoke, :f :get, :key "0", :value nil}"#;
    assert_eq!(syntax_line(Format::KvEdn, &format!("{good}\n{{:process 0, :type :invoke, :f :get, :key \"0")), 2);
    assert_eq!(syntax_line(Format::KvEdn, "{:type :invoke, :f :get}"), 1, "missing :process");
    assert_eq!(syntax_line(Format::KvEdn, "{:process 0, :type :maybe, :f :get}"), 1);
    assert_eq!(syntax_line(Format::KvEdn, "{:process 0, :type :ok}"), 1, "missing :f");
    assert_eq!(syntax_line(Format::KvEdn, "{:process 0 :type}"), 1, "odd map");
    assert_eq!(syntax_line(Format::KvEdn, "[1 2]"), 1, "not a map");
    assert_eq!(syntax_line(Format::KvEdn, r#"{:process 0, :type :ok, :f :get, :value "a\q"}"#), 1);
    assert_eq!(syntax_line(Format::KvEdn, &format!("{good} extra")), 1);
}

#[test]
fn missing_file_is_an_io_error() {
    let err = read_history(Path::new("/nonexistent/history.jsonl"), Format::Jsonl).unwrap_err();
    assert!(matches!(err, ReadError::Io { .. }), "{err:?}");
    assert_eq!(err.line(), None);
}

fn history_error(model: ModelKind, jsonl: &str) -> HistoryError {
    let history = Format::Jsonl.parse(jsonl).expect("valid JSONL");
    check_history(model, &history, Budget::default()).expect_err("does not fit")
}

#[test]
fn malformed_histories_are_errors_with_the_line() {
    let invoke = r#"{"process":1,"type":"invoke","f":"withdraw","key":"a","value":"5","time":1}"#;
    let e = history_error(ModelKind::Bank, r#"{"process":1,"type":"ok","f":"read","key":"a","time":1}"#);
    assert_eq!(e, HistoryError::NoInvoke { line: 1, process: 1 });
    let e = history_error(ModelKind::Bank, &format!("{invoke}\n{invoke}"));
    assert!(matches!(e, HistoryError::ProcessBusy { line: 2, invoke_line: 1, .. }), "{e:?}");
    let e = history_error(
        ModelKind::Bank,
        &format!("{invoke}\n{}", r#"{"process":1,"type":"ok","f":"deposit","key":"a","time":2}"#),
    );
    assert!(matches!(e, HistoryError::FunctionMismatch { line: 2, .. }), "{e:?}");
    let e = history_error(ModelKind::Bank, &invoke.replace("\"5\"", "\"five\""));
    assert!(matches!(e, HistoryError::BadField { line: 1, .. }), "{e:?}");
    let e = history_error(ModelKind::Bank, &invoke.replace("\"5\"", "\"-5\""));
    assert!(e.to_string().contains("negative"), "{e}");
    let e = history_error(ModelKind::Bank, &invoke.replace("withdraw", "steal"));
    assert!(matches!(e, HistoryError::UnknownFunction { line: 1, .. }), "{e:?}");
    let e = history_error(ModelKind::Register, r#"{"process":1,"type":"invoke","f":"cas","value":[1,2],"time":1}"#);
    assert!(matches!(e, HistoryError::UnknownFunction { .. }), "register has no cas: {e:?}");
    let e = history_error(ModelKind::CasRegister, r#"{"process":1,"type":"invoke","f":"cas","value":[1],"time":1}"#);
    assert!(matches!(e, HistoryError::BadField { line: 1, .. }), "{e:?}");
    let e = history_error(ModelKind::Kv, r#"{"process":1,"type":"invoke","f":"put","value":"x","time":1}"#);
    assert!(e.to_string().contains("key"), "{e}");
    let e = history_error(ModelKind::Kv, r#"{"process":1,"type":"invoke","f":"put","key":"k","value":3,"time":1}"#);
    assert!(matches!(e, HistoryError::BadField { .. }), "{e:?}");
}

/// Samples of valid lines in every format, to mutate.
const SAMPLES: [(Format, &str); 4] = [
    (
        Format::Jsonl,
        r#"{"process":3,"type":"ok","f":"transfer","key":"a","to":"b","value":"10.00","balance":"5","time":12}"#,
    ),
    (Format::JepsenLog, "INFO  jepsen.util - 2\t:invoke\t:cas\t[3 0]"),
    (Format::JepsenLog, "INFO  jepsen.util - 4   :fail   :read    :timed-out"),
    (Format::KvEdn, r#"{:process 0, :type :invoke, :f :append, :key "0", :value "x 0 0 y"}"#),
];

#[test]
fn random_input_never_panics() {
    let mut rng = ChaCha8Rng::seed_from_u64(0xBAD);
    let alphabet: Vec<char> = "{}[]():,\" \\\t\nabcxyz019-.:niltruefalse\u{e9}\u{1F600}".chars().collect();
    for case in 0..3000 {
        let text: String = if case % 2 == 0 {
            (0..rng.gen_range(0..120)).map(|_| alphabet[rng.gen_range(0..alphabet.len())]).collect()
        } else {
            // A few sample lines with characters deleted, doubled or replaced.
            let mut lines = Vec::new();
            for _ in 0..rng.gen_range(1..5) {
                let (_, sample) = SAMPLES[rng.gen_range(0..SAMPLES.len())];
                let mut chars: Vec<char> = sample.chars().collect();
                for _ in 0..rng.gen_range(0..4) {
                    let at = rng.gen_range(0..chars.len());
                    match rng.gen_range(0..3) {
                        0 => {
                            chars.remove(at);
                        }
                        1 => chars.insert(at, chars[at]),
                        _ => chars[at] = alphabet[rng.gen_range(0..alphabet.len())],
                    }
                }
                lines.push(chars.into_iter().collect::<String>());
            }
            lines.join("\n")
        };
        for format in Format::ALL {
            if let Ok(history) = format.parse(&text) {
                for model in ModelKind::ALL {
                    // Any answer is fine; a panic is not.
                    let _ = check_history(model, &history, Budget::steps(10_000));
                }
            }
        }
    }
}
