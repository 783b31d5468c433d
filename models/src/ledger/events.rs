//! The ledger's events and their stored form: a type name, an event version and JSON data.
//!
//! Events are facts in the past tense and carry no account id: the stream they are appended to
//! is the account. This module encodes the current version of every event and decodes every
//! version ever written, upcasting old ones (spec 000, scenario 6). It holds no rules.

use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::money::{Currency, parse_decimal};

/// An account was opened with an owner, a currency and an opening balance (zero or more).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AccountCreated {
    pub owner_name: String,
    pub currency: Currency,
    pub initial_balance: Decimal,
}

/// Money was paid into the account.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MoneyDeposited {
    pub amount: Decimal,
    pub currency: Currency,
}

/// Money was paid out of the account.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MoneyWithdrawn {
    pub amount: Decimal,
    pub currency: Currency,
}

/// The debit half of a transfer, on the source account.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TransferSent {
    pub to_account_id: String,
    pub amount: Decimal,
    pub currency: Currency,
}

/// The credit half of a transfer, on the target account.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TransferReceived {
    pub from_account_id: String,
    pub amount: Decimal,
    pub currency: Currency,
}

/// Every event an account stream can hold, at its current version.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LedgerEvent {
    AccountCreated(AccountCreated),
    MoneyDeposited(MoneyDeposited),
    MoneyWithdrawn(MoneyWithdrawn),
    TransferSent(TransferSent),
    TransferReceived(TransferReceived),
}

/// An event as stored: type name, schema version and JSON data.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EncodedEvent {
    pub event_type: String,
    pub event_version: u32,
    pub data: Value,
}

/// Why stored data is not an event this code understands. Only a bug or a foreign writer
/// causes it; callers stop and report rather than guess.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    #[error("unknown event type {0:?}")]
    UnknownType(String),
    #[error("unknown version {version} of {event_type}")]
    UnknownVersion { event_type: String, version: u32 },
    #[error("malformed {event_type} v{version}: {reason}")]
    Malformed { event_type: String, version: u32, reason: String },
}

impl LedgerEvent {
    /// Names of the event types, in a fixed order.
    pub const TYPES: [&'static str; 5] =
        ["AccountCreated", "MoneyDeposited", "MoneyWithdrawn", "TransferSent", "TransferReceived"];

    /// The currency assumed for `MoneyDeposited` v1, which had none (spec 000, scenario 6:
    /// every account of that era was in US dollars).
    pub const V1_DEPOSIT_CURRENCY: Currency = Currency::USD;

    pub fn event_type(&self) -> &'static str {
        match self {
            LedgerEvent::AccountCreated(_) => "AccountCreated",
            LedgerEvent::MoneyDeposited(_) => "MoneyDeposited",
            LedgerEvent::MoneyWithdrawn(_) => "MoneyWithdrawn",
            LedgerEvent::TransferSent(_) => "TransferSent",
            LedgerEvent::TransferReceived(_) => "TransferReceived",
        }
    }

    /// The schema version that [`LedgerEvent::encode`] writes for this type.
    pub fn current_version(event_type: &str) -> Option<u32> {
        match event_type {
            "MoneyDeposited" => Some(2),
            "AccountCreated" | "MoneyWithdrawn" | "TransferSent" | "TransferReceived" => Some(1),
            _ => None,
        }
    }

    /// The signed change this event makes to its account's balance.
    pub fn balance_delta(&self) -> Decimal {
        match self {
            LedgerEvent::AccountCreated(e) => e.initial_balance,
            LedgerEvent::MoneyDeposited(e) => e.amount,
            LedgerEvent::MoneyWithdrawn(e) => -e.amount,
            LedgerEvent::TransferSent(e) => -e.amount,
            LedgerEvent::TransferReceived(e) => e.amount,
        }
    }

    /// The stored form at the current version.
    pub fn encode(&self) -> EncodedEvent {
        let data = match self {
            LedgerEvent::AccountCreated(e) => serde_json::to_value(e),
            LedgerEvent::MoneyDeposited(e) => serde_json::to_value(e),
            LedgerEvent::MoneyWithdrawn(e) => serde_json::to_value(e),
            LedgerEvent::TransferSent(e) => serde_json::to_value(e),
            LedgerEvent::TransferReceived(e) => serde_json::to_value(e),
        }
        .expect("event structs always serialize");
        let event_type = self.event_type();
        let event_version = Self::current_version(event_type).expect("every event type has a version");
        EncodedEvent { event_type: event_type.to_string(), event_version, data }
    }

    /// Decodes any version ever written, upcasting old versions to the current one.
    ///
    /// # Errors
    /// [`DecodeError`] when the type or version is unknown or the data does not fit it.
    pub fn decode(encoded: &EncodedEvent) -> Result<LedgerEvent, DecodeError> {
        let EncodedEvent { event_type, event_version, data } = encoded;
        let version = *event_version;
        let malformed = |reason: String| DecodeError::Malformed { event_type: event_type.clone(), version, reason };
        let current = Self::current_version(event_type).ok_or_else(|| DecodeError::UnknownType(event_type.clone()))?;
        if version == current {
            let parse = |value: &Value| -> Result<LedgerEvent, serde_json::Error> {
                Ok(match event_type.as_str() {
                    "AccountCreated" => LedgerEvent::AccountCreated(serde_json::from_value(value.clone())?),
                    "MoneyDeposited" => LedgerEvent::MoneyDeposited(serde_json::from_value(value.clone())?),
                    "MoneyWithdrawn" => LedgerEvent::MoneyWithdrawn(serde_json::from_value(value.clone())?),
                    "TransferSent" => LedgerEvent::TransferSent(serde_json::from_value(value.clone())?),
                    _ => LedgerEvent::TransferReceived(serde_json::from_value(value.clone())?),
                })
            };
            return parse(data).map_err(|e| malformed(e.to_string()));
        }
        match (event_type.as_str(), version) {
            ("MoneyDeposited", 1) => {
                // v1: {"amount": 500.00}, a JSON number or string, and no currency.
                let amount = data
                    .get("amount")
                    .ok_or_else(|| malformed("missing amount".to_string()))
                    .and_then(|v| decimal_from_json(v).map_err(malformed))?;
                Ok(LedgerEvent::MoneyDeposited(MoneyDeposited { amount, currency: Self::V1_DEPOSIT_CURRENCY }))
            }
            _ => Err(DecodeError::UnknownVersion { event_type: event_type.clone(), version }),
        }
    }
}

/// Reads a decimal from a JSON number (exactly as written) or a JSON string.
///
/// # Errors
/// A description when the value is neither, or not a decimal.
pub fn decimal_from_json(value: &Value) -> Result<Decimal, String> {
    let text = match value {
        Value::Number(n) => n.to_string(),
        Value::String(s) => s.clone(),
        other => return Err(format!("expected a decimal number, found {other}")),
    };
    parse_decimal(&text).map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn samples() -> Vec<LedgerEvent> {
        let usd = Currency::USD;
        vec![
            LedgerEvent::AccountCreated(AccountCreated {
                owner_name: "Test User".into(),
                currency: usd,
                initial_balance: Decimal::new(100000, 2),
            }),
            LedgerEvent::MoneyDeposited(MoneyDeposited { amount: Decimal::new(50000, 2), currency: usd }),
            LedgerEvent::MoneyWithdrawn(MoneyWithdrawn { amount: Decimal::new(1000, 2), currency: usd }),
            LedgerEvent::TransferSent(TransferSent {
                to_account_id: "DEMO-002".into(),
                amount: Decimal::new(2500, 2),
                currency: usd,
            }),
            LedgerEvent::TransferReceived(TransferReceived {
                from_account_id: "DEMO-001".into(),
                amount: Decimal::new(2500, 2),
                currency: usd,
            }),
        ]
    }

    /// The JSON exactly as stored (numbers as written, keys sorted).
    fn pretty(encoded: &EncodedEvent) -> String {
        serde_json::to_string_pretty(encoded).unwrap()
    }

    /// Goal: a change to the stored JSON of any event shows up in review.
    /// Method: one snapshot per event type at its current version, and one per old version.
    #[test]
    fn stored_form_of_every_event_type_and_version() {
        for event in samples() {
            let encoded = event.encode();
            insta::assert_snapshot!(format!("{}_v{}", encoded.event_type, encoded.event_version), pretty(&encoded));
        }
        let v1 = EncodedEvent {
            event_type: "MoneyDeposited".into(),
            event_version: 1,
            data: serde_json::from_str(r#"{"amount": 500.00}"#).unwrap(),
        };
        insta::assert_snapshot!("MoneyDeposited_v1", pretty(&v1));
        let upcast = LedgerEvent::decode(&v1).unwrap().encode();
        insta::assert_snapshot!("MoneyDeposited_v1_upcast_to_v2", pretty(&upcast));
    }

    #[test]
    fn every_current_event_round_trips() {
        for event in samples() {
            assert_eq!(LedgerEvent::decode(&event.encode()), Ok(event));
        }
        assert_eq!(LedgerEvent::TYPES.len(), samples().len());
    }

    #[test]
    fn deposit_v1_upcasts_to_usd_exactly() {
        for data in [json!({"amount": "500.10"}), serde_json::from_str(r#"{"amount": 500.10}"#).unwrap()] {
            let v1 = EncodedEvent { event_type: "MoneyDeposited".into(), event_version: 1, data };
            let event = LedgerEvent::decode(&v1).unwrap();
            assert_eq!(
                event,
                LedgerEvent::MoneyDeposited(MoneyDeposited { amount: Decimal::new(50010, 2), currency: Currency::USD })
            );
        }
    }

    #[test]
    fn unknown_and_malformed_are_errors_not_panics() {
        let unknown = EncodedEvent { event_type: "Nope".into(), event_version: 1, data: json!({}) };
        assert!(matches!(LedgerEvent::decode(&unknown), Err(DecodeError::UnknownType(_))));
        let future = EncodedEvent { event_type: "MoneyWithdrawn".into(), event_version: 9, data: json!({}) };
        assert!(matches!(LedgerEvent::decode(&future), Err(DecodeError::UnknownVersion { .. })));
        let bad = EncodedEvent { event_type: "MoneyWithdrawn".into(), event_version: 1, data: json!({"amount": true}) };
        assert!(matches!(LedgerEvent::decode(&bad), Err(DecodeError::Malformed { .. })));
        let bad_v1 = EncodedEvent { event_type: "MoneyDeposited".into(), event_version: 1, data: json!({}) };
        assert!(matches!(LedgerEvent::decode(&bad_v1), Err(DecodeError::Malformed { .. })));
    }
}
