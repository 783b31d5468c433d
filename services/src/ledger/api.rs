//! The ledger's HTTP contract without an HTTP framework: request bodies in, status codes and
//! JSON bodies out. axum (real build) and the simulator's network (simulation build) both call
//! these functions, so validation and error bodies are the same in both.
//!
//! Every error body is `{"error": CODE, "message": TEXT}` plus `field` when one field is at
//! fault. Bodies never carry internals (SQL, driver messages).

use std::time::Duration;

use models::Currency;
use models::ledger::events::decimal_from_json;
use models::ledger::{LedgerCommand, LedgerError};
use serde_json::{Map, Value, json};

use super::command::{CommandError, CommandHandler, Executed};
use crate::ports::ledger::{BalanceView, EventStore, ReadError, ReadModel, StoreError};
use crate::reply::Reply;

/// Longest accepted request body, in bytes.
pub const BODY_LEN_MAX: usize = 64 * 1024;
/// Longest accepted idempotency key.
pub const IDEMPOTENCY_KEY_LEN_MAX: usize = 200;
/// How long a read with `min_position` waits for the read model before answering 504: well
/// under a client's request timeout (5 s in the testbed's clients), so the 504 reaches it.
pub const MIN_POSITION_WAIT_MAX: Duration = Duration::from_secs(2);
/// How often such a read looks again.
pub const MIN_POSITION_POLL: Duration = Duration::from_millis(50);
const _: () = assert!(MIN_POSITION_POLL.as_millis() < MIN_POSITION_WAIT_MAX.as_millis());

/// The name of the idempotency header (spec: `Idempotency-Key`).
pub const IDEMPOTENCY_HEADER: &str = "Idempotency-Key";

/// Handles `POST /api/v1/commands/{kind}`.
pub async fn command<S: EventStore>(
    handler: &CommandHandler<S>,
    kind: &str,
    idempotency_key: Option<&[u8]>,
    body: &[u8],
) -> Reply {
    let key = match idempotency_key.map(parse_key).transpose() {
        Ok(key) => key,
        Err(reply) => return reply,
    };
    let command = match parse_command(kind, body) {
        Ok(command) => command,
        Err(reply) => return reply,
    };
    match handler.execute(&command, key.as_deref()).await {
        Ok(executed) => created(executed),
        Err(error) => command_error(&error),
    }
}

fn created(executed: Executed) -> Reply {
    Reply {
        status: 201,
        body: serde_json::to_value(&executed.receipt).expect("receipts serialize"),
        replayed: executed.replayed,
    }
}

fn parse_key(raw: &[u8]) -> Result<String, Reply> {
    let bad = |why: &str| Reply::error(400, "invalid_header", Some(IDEMPOTENCY_HEADER), why);
    let key = std::str::from_utf8(raw).map_err(|_| bad("must be ASCII"))?;
    if key.is_empty() || key.len() > IDEMPOTENCY_KEY_LEN_MAX {
        return Err(bad(&format!("must be 1 to {IDEMPOTENCY_KEY_LEN_MAX} characters")));
    }
    if !key.bytes().all(|b| b.is_ascii_graphic()) {
        return Err(bad("must be visible ASCII without spaces"));
    }
    Ok(key.to_string())
}

/// Parses a command body as in spec 000. Amounts may be JSON numbers or strings; they are
/// read exactly as written.
///
/// # Errors
/// A 4xx [`Reply`] naming the field: 400 for malformed JSON, 404 for an unknown command,
/// 422 for a missing, unknown or invalid field.
pub fn parse_command(kind: &str, body: &[u8]) -> Result<LedgerCommand, Reply> {
    let fields: &[&str] = match kind {
        "create-account" => &["account_id", "owner_name", "initial_balance", "currency"],
        "deposit" | "withdraw" => &["account_id", "amount", "currency"],
        "transfer" => &["from_account_id", "to_account_id", "amount", "currency"],
        other => {
            return Err(Reply::error(404, "unknown_command", None, format!("no command {other:?}")));
        }
    };
    if body.len() > BODY_LEN_MAX {
        return Err(Reply::error(413, "body_too_large", None, format!("at most {BODY_LEN_MAX} bytes")));
    }
    let value: Value = serde_json::from_slice(body)
        .map_err(|e| Reply::error(400, "malformed_json", None, format!("body is not JSON: {e}")))?;
    let Value::Object(object) = value else {
        return Err(Reply::error(400, "malformed_json", None, "body must be a JSON object"));
    };
    if let Some(unknown) = object.keys().find(|k| !fields.contains(&k.as_str())) {
        return Err(Reply::error(422, "unknown_field", Some(unknown), format!("{unknown} is not a field of {kind}")));
    }
    let b = Body(&object);
    let command = match kind {
        "create-account" => LedgerCommand::CreateAccount {
            account_id: b.string("account_id")?,
            owner_name: b.string("owner_name")?,
            initial_balance: b.decimal_or_zero("initial_balance")?,
            currency: b.currency("currency")?.ok_or_else(|| missing("currency"))?,
        },
        "deposit" => LedgerCommand::Deposit {
            account_id: b.string("account_id")?,
            amount: b.decimal("amount")?,
            currency: b.currency("currency")?,
        },
        "withdraw" => LedgerCommand::Withdraw {
            account_id: b.string("account_id")?,
            amount: b.decimal("amount")?,
            currency: b.currency("currency")?,
        },
        _ => LedgerCommand::Transfer {
            from_account_id: b.string("from_account_id")?,
            to_account_id: b.string("to_account_id")?,
            amount: b.decimal("amount")?,
            currency: b.currency("currency")?,
        },
    };
    command.validate().map_err(|e| ledger_error(&e))?;
    Ok(command)
}

struct Body<'a>(&'a Map<String, Value>);

fn missing(field: &str) -> Reply {
    Reply::error(422, "missing_field", Some(field), format!("{field} is required"))
}

fn invalid(field: &str, why: impl Into<String>) -> Reply {
    Reply::error(422, "invalid_field", Some(field), why)
}

impl Body<'_> {
    fn string(&self, field: &str) -> Result<String, Reply> {
        match self.0.get(field) {
            None | Some(Value::Null) => Err(missing(field)),
            Some(Value::String(s)) => Ok(s.clone()),
            Some(_) => Err(invalid(field, "must be a string")),
        }
    }

    fn decimal(&self, field: &str) -> Result<rust_decimal::Decimal, Reply> {
        match self.0.get(field) {
            None | Some(Value::Null) => Err(missing(field)),
            Some(value) => decimal_from_json(value).map_err(|e| invalid(field, e)),
        }
    }

    fn decimal_or_zero(&self, field: &str) -> Result<rust_decimal::Decimal, Reply> {
        match self.0.get(field) {
            None | Some(Value::Null) => Ok(rust_decimal::Decimal::ZERO),
            Some(_) => self.decimal(field),
        }
    }

    fn currency(&self, field: &str) -> Result<Option<Currency>, Reply> {
        match self.0.get(field) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::String(code)) => {
                code.parse().map(Some).map_err(|e: models::MoneyError| invalid(field, e.to_string()))
            }
            Some(_) => Err(invalid(field, "must be a currency code such as \"USD\"")),
        }
    }
}

/// The status and body of a domain rejection.
pub fn ledger_error(error: &LedgerError) -> Reply {
    let message = error.to_string();
    match error {
        LedgerError::AccountExists { account_id } => {
            with(Reply::error(409, "account_exists", None, message), "account_id", json!(account_id))
        }
        LedgerError::AccountNotFound { account_id } => {
            with(Reply::error(404, "account_not_found", None, message), "account_id", json!(account_id))
        }
        LedgerError::InsufficientFunds { account_id, .. } => {
            with(Reply::error(409, "insufficient_funds", None, message), "account_id", json!(account_id))
        }
        LedgerError::CurrencyMismatch { .. } => Reply::error(422, "currency_mismatch", Some("currency"), message),
        LedgerError::SameAccount { .. } => Reply::error(422, "same_account", Some("to_account_id"), message),
        LedgerError::InvalidAmount { field, .. } => Reply::error(422, "invalid_amount", Some(field), message),
        LedgerError::BalanceLimitExceeded { account_id } => {
            with(Reply::error(409, "balance_limit_exceeded", None, message), "account_id", json!(account_id))
        }
        LedgerError::InvalidField { field, .. } => Reply::error(422, "invalid_field", Some(field), message),
    }
}

fn with(mut reply: Reply, key: &str, value: Value) -> Reply {
    reply.body[key] = value;
    reply
}

/// The status and body of a command failure. Internals stay in the logs.
pub fn command_error(error: &CommandError) -> Reply {
    match error {
        CommandError::Rejected(e) => ledger_error(e),
        CommandError::KeyReused => Reply::error(
            422,
            "idempotency_key_reused",
            Some(IDEMPOTENCY_HEADER),
            "this key was first used with a different request",
        ),
        CommandError::Conflict(_) => Reply::error(409, "conflict", None, "too much contention on the account; retry"),
        CommandError::Unavailable(e) => {
            tracing::warn!(error = %e, "command failed: event store unavailable");
            Reply::error(503, "unavailable", None, "the event store is unavailable; nothing was applied")
        }
        CommandError::Ambiguous(e) => {
            tracing::warn!(error = %e, "command outcome unknown");
            Reply::error(
                503,
                "ambiguous",
                None,
                "the command may have been applied; retry with the same Idempotency-Key",
            )
        }
        CommandError::Corrupt(e) => {
            tracing::error!(error = %e, "stored data unreadable");
            Reply::error(500, "internal", None, "internal error")
        }
    }
}

/// Handles `GET /api/v1/accounts/{id}/balance` on the command API: the balance folded from the
/// event store, linearizable (DESIGN 3): the handler's cached fold brought up to date with a
/// read of the stream's newer events.
pub async fn strong_balance<S: EventStore>(handler: &CommandHandler<S>, account_id: &str) -> Reply {
    if let Err(e) = models::ledger::account::check_account_id("account_id", account_id) {
        return ledger_error(&e);
    }
    let account = match handler.account(account_id).await {
        Ok(account) => account,
        Err(StoreError::Corrupt(e)) => return command_error(&CommandError::Corrupt(e)),
        Err(e) => return command_error(&CommandError::Unavailable(e.to_string())),
    };
    match account.state {
        None => Reply::error(404, "account_not_found", Some("account_id"), format!("no account {account_id}")),
        Some(state) => Reply::new(
            200,
            json!({
                "account_id": account_id,
                "owner_name": state.owner_name,
                "balance": state.currency.display(state.balance),
                "currency": state.currency,
                "version": account.version,
                "position": account.version,
            }),
        ),
    }
}

/// Handles `GET /api/v1/accounts/{id}/balance[?min_position=N]`.
pub async fn balance<R: ReadModel>(read: &R, account_id: &str, min_position: Option<&str>) -> Reply {
    if let Err(e) = models::ledger::account::check_account_id("account_id", account_id) {
        return ledger_error(&e);
    }
    let min_position = match min_position.map(str::parse::<u64>).transpose() {
        Ok(min) => min,
        Err(_) => {
            return Reply::error(400, "invalid_query", Some("min_position"), "must be a non-negative integer");
        }
    };
    let started = madsim::time::Instant::now();
    loop {
        let view = match read.balance(account_id).await {
            Ok(view) => view,
            Err(ReadError::Unavailable(e)) => {
                tracing::warn!(error = %e, "read model unavailable");
                return Reply::error(503, "unavailable", None, "the read model is unavailable");
            }
            Err(ReadError::Corrupt(e)) => {
                tracing::error!(error = %e, "read model unreadable");
                return Reply::error(500, "internal", None, "internal error");
            }
        };
        let reached = view.as_ref().map_or(0, |v| v.version);
        match (view, min_position) {
            (Some(view), None) => return balance_body(&view),
            (Some(view), Some(min)) if view.version >= min => return balance_body(&view),
            (None, None) => {
                return Reply::error(404, "account_not_found", Some("account_id"), format!("no account {account_id}"));
            }
            (_, Some(min)) if started.elapsed() >= MIN_POSITION_WAIT_MAX => {
                let mut reply = Reply::error(
                    504,
                    "position_not_reached",
                    Some("min_position"),
                    format!("the read model has not reached position {min} yet"),
                );
                reply.body["position"] = json!(reached);
                return reply;
            }
            _ => madsim::time::sleep(MIN_POSITION_POLL).await,
        }
    }
}

fn balance_body(view: &BalanceView) -> Reply {
    #[allow(unused_mut)]
    let mut version = view.version;
    #[cfg(madsim)]
    if crate::bugs::active(crate::bugs::Bug::ReadModelWrongVersion) && version > 1 {
        // Planted bug: "the version counts the events after the account was opened".
        version -= 1;
    }
    Reply::new(
        200,
        json!({
            "account_id": view.account_id,
            "owner_name": view.owner_name,
            "balance": view.currency.display(view.balance),
            "currency": view.currency,
            "version": version,
            "position": version,
            "global_position": view.global_position,
        }),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn err(kind: &str, body: &str) -> Reply {
        parse_command(kind, body.as_bytes()).unwrap_err()
    }

    #[test]
    fn bad_bodies_name_the_field() {
        let r = err("deposit", "{not json");
        assert_eq!((r.status, r.body["error"].as_str()), (400, Some("malformed_json")));
        let r = err("deposit", r#"{"account_id":"A"}"#);
        assert_eq!((r.status, r.body["field"].as_str()), (422, Some("amount")));
        let r = err("deposit", r#"{"account_id":"A","amount":0}"#);
        assert_eq!((r.status, r.body["field"].as_str()), (422, Some("amount")));
        let r = err("withdraw", r#"{"account_id":"A","amount":-5}"#);
        assert_eq!((r.status, r.body["field"].as_str()), (422, Some("amount")));
        let r = err("deposit", r#"{"account_id":"A","amount":"ten"}"#);
        assert_eq!((r.status, r.body["field"].as_str()), (422, Some("amount")));
        let r = err("create-account", r#"{"account_id":"A","owner_name":"x","currency":"XYZ"}"#);
        assert_eq!((r.status, r.body["field"].as_str()), (422, Some("currency")));
        let r = err("deposit", r#"{"account_id":"A","amount":1,"ammount":2}"#);
        assert_eq!((r.status, r.body["field"].as_str()), (422, Some("ammount")));
        let r = err("transfer", r#"{"from_account_id":"A","to_account_id":"A","amount":1}"#);
        assert_eq!((r.status, r.body["field"].as_str()), (422, Some("to_account_id")));
        let r = err("deposit", r#"[1,2]"#);
        assert_eq!(r.status, 400);
        let r = err("nope", "{}");
        assert_eq!(r.status, 404);
    }

    #[test]
    fn amounts_are_exact() {
        let c = parse_command("deposit", br#"{"account_id":"A","amount":10.005}"#).unwrap();
        let LedgerCommand::Deposit { amount, .. } = c else { panic!() };
        assert_eq!(amount.to_string(), "10.005");
        let c = parse_command("create-account", br#"{"account_id":"A","owner_name":"x","currency":"USD"}"#).unwrap();
        assert!(matches!(c, LedgerCommand::CreateAccount { initial_balance, .. } if initial_balance.is_zero()));
    }

    #[test]
    fn keys_are_checked() {
        assert!(parse_key(b"abc-123").is_ok());
        assert_eq!(parse_key(b"").unwrap_err().status, 400);
        assert_eq!(parse_key(b"has space").unwrap_err().body["field"], IDEMPOTENCY_HEADER);
        assert_eq!(parse_key(&[0xff]).unwrap_err().status, 400);
    }
}
