//! The ledger's commands (imperative) and the rules they can break.
//!
//! A command names the accounts it touches ([`LedgerCommand::streams`]) and validates what can
//! be checked without state ([`LedgerCommand::validate`]); everything that needs state is in
//! `account::decide`. The canonical JSON form of a command ([`LedgerCommand::canonical`]) is
//! what an idempotency key is bound to.

use rust_decimal::Decimal;
use serde::Serialize;

use crate::money::{Currency, MoneyError};

/// Longest account id, in bytes.
pub const ACCOUNT_ID_LEN_MAX: usize = 64;
/// Longest owner name, in characters.
pub const OWNER_NAME_LEN_MAX: usize = 200;

/// What a client asks the ledger to do. Amounts are as given; `decide` validates them against
/// the account's currency.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "command", rename_all = "kebab-case")]
pub enum LedgerCommand {
    CreateAccount { account_id: String, owner_name: String, initial_balance: Decimal, currency: Currency },
    Deposit { account_id: String, amount: Decimal, currency: Option<Currency> },
    Withdraw { account_id: String, amount: Decimal, currency: Option<Currency> },
    Transfer { from_account_id: String, to_account_id: String, amount: Decimal, currency: Option<Currency> },
}

/// A rule a command breaks. Each variant is a definite answer: nothing was applied.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LedgerError {
    /// The account already exists (409): creating is not idempotent without a key.
    #[error("account {account_id} already exists")]
    AccountExists { account_id: String },
    /// No such account (404).
    #[error("account {account_id} not found")]
    AccountNotFound { account_id: String },
    /// The balance does not cover the amount (409): an observation of the balance.
    #[error("insufficient funds in {account_id}: balance {balance}, requested {requested}")]
    InsufficientFunds { account_id: String, balance: Decimal, requested: Decimal },
    /// The amount's currency is not the account's, or a transfer crosses currencies (422).
    #[error("currency mismatch: expected {expected}, found {found}")]
    CurrencyMismatch { expected: Currency, found: Currency },
    /// A transfer from an account to itself (422).
    #[error("transfer from {account_id} to itself")]
    SameAccount { account_id: String },
    /// The amount is not valid money in the account's currency (422).
    #[error("invalid {field}: {error}")]
    InvalidAmount { field: &'static str, error: MoneyError },
    /// The resulting balance would pass the limit of 10^15 minor units (409).
    #[error("balance of {account_id} would exceed the limit")]
    BalanceLimitExceeded { account_id: String },
    /// A field that is not an amount is invalid (422).
    #[error("invalid {field}: {reason}")]
    InvalidField { field: &'static str, reason: String },
}

impl LedgerCommand {
    /// The command's name as in its URL path.
    pub fn name(&self) -> &'static str {
        match self {
            LedgerCommand::CreateAccount { .. } => "create-account",
            LedgerCommand::Deposit { .. } => "deposit",
            LedgerCommand::Withdraw { .. } => "withdraw",
            LedgerCommand::Transfer { .. } => "transfer",
        }
    }

    /// The account streams the command reads and appends to, in decide order.
    pub fn streams(&self) -> Vec<&str> {
        match self {
            LedgerCommand::CreateAccount { account_id, .. }
            | LedgerCommand::Deposit { account_id, .. }
            | LedgerCommand::Withdraw { account_id, .. } => vec![account_id.as_str()],
            LedgerCommand::Transfer { from_account_id, to_account_id, .. } => {
                vec![from_account_id.as_str(), to_account_id.as_str()]
            }
        }
    }

    /// The checks that need no state: ids, names, the sign of amounts, transfer to itself.
    ///
    /// # Errors
    /// The first [`LedgerError`] found.
    pub fn validate(&self) -> Result<(), LedgerError> {
        let positive = |field: &'static str, amount: &Decimal| {
            if *amount <= Decimal::ZERO {
                Err(LedgerError::InvalidAmount { field, error: MoneyError::NotPositive })
            } else {
                Ok(())
            }
        };
        match self {
            LedgerCommand::CreateAccount { account_id, owner_name, initial_balance, .. } => {
                validate_account_id("account_id", account_id)?;
                validate_owner_name(owner_name)?;
                if *initial_balance < Decimal::ZERO {
                    return Err(LedgerError::InvalidAmount { field: "initial_balance", error: MoneyError::Negative });
                }
                Ok(())
            }
            LedgerCommand::Deposit { account_id, amount, .. } | LedgerCommand::Withdraw { account_id, amount, .. } => {
                validate_account_id("account_id", account_id)?;
                positive("amount", amount)
            }
            LedgerCommand::Transfer { from_account_id, to_account_id, amount, .. } => {
                validate_account_id("from_account_id", from_account_id)?;
                validate_account_id("to_account_id", to_account_id)?;
                if from_account_id == to_account_id {
                    return Err(LedgerError::SameAccount { account_id: from_account_id.clone() });
                }
                positive("amount", amount)
            }
        }
    }

    /// The canonical JSON of the command, amounts normalised: two requests that mean the same
    /// command have the same canonical form, so a retry with `10.0` matches one with `10.00`.
    pub fn canonical(&self) -> String {
        let mut normal = self.clone();
        match &mut normal {
            LedgerCommand::CreateAccount { initial_balance, .. } => *initial_balance = initial_balance.normalize(),
            LedgerCommand::Deposit { amount, .. }
            | LedgerCommand::Withdraw { amount, .. }
            | LedgerCommand::Transfer { amount, .. } => *amount = amount.normalize(),
        }
        serde_json::to_string(&normal).expect("commands always serialize")
    }
}

/// Account ids: 1 to [`ACCOUNT_ID_LEN_MAX`] bytes of ASCII letters, digits, `-`, `_`, `.`, `:`.
///
/// # Errors
/// [`LedgerError::InvalidField`] naming `field`.
pub fn validate_account_id(field: &'static str, id: &str) -> Result<(), LedgerError> {
    let reason = if id.is_empty() {
        Some("must not be empty".to_string())
    } else if id.len() > ACCOUNT_ID_LEN_MAX {
        Some(format!("must be at most {ACCOUNT_ID_LEN_MAX} characters"))
    } else if !id.bytes().all(|b| b.is_ascii_alphanumeric() || b"-_.:".contains(&b)) {
        Some("may hold only letters, digits, '-', '_', '.' and ':'".to_string())
    } else {
        None
    };
    match reason {
        Some(reason) => Err(LedgerError::InvalidField { field, reason }),
        None => Ok(()),
    }
}

fn validate_owner_name(name: &str) -> Result<(), LedgerError> {
    let field = "owner_name";
    if name.trim().is_empty() {
        return Err(LedgerError::InvalidField { field, reason: "must not be empty".into() });
    }
    if name.chars().count() > OWNER_NAME_LEN_MAX {
        return Err(LedgerError::InvalidField {
            field,
            reason: format!("must be at most {OWNER_NAME_LEN_MAX} characters"),
        });
    }
    if name.chars().any(char::is_control) {
        return Err(LedgerError::InvalidField { field, reason: "must not hold control characters".into() });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::money::parse_decimal;

    #[test]
    fn account_ids() {
        assert!(validate_account_id("account_id", "DEMO-001").is_ok());
        assert!(validate_account_id("account_id", "acct:eu.1_x").is_ok());
        for bad in ["", "has space", "ümlaut", &"x".repeat(65)] {
            assert!(matches!(
                validate_account_id("account_id", bad),
                Err(LedgerError::InvalidField { field: "account_id", .. })
            ));
        }
    }

    #[test]
    fn canonical_form_ignores_trailing_zeros() {
        let a =
            LedgerCommand::Deposit { account_id: "A".into(), amount: parse_decimal("10.0").unwrap(), currency: None };
        let b =
            LedgerCommand::Deposit { account_id: "A".into(), amount: parse_decimal("10.00").unwrap(), currency: None };
        let c =
            LedgerCommand::Withdraw { account_id: "A".into(), amount: parse_decimal("10.00").unwrap(), currency: None };
        assert_eq!(a.canonical(), b.canonical());
        assert_ne!(a.canonical(), c.canonical());
    }

    #[test]
    fn streams_in_decide_order() {
        let t = LedgerCommand::Transfer {
            from_account_id: "A".into(),
            to_account_id: "B".into(),
            amount: Decimal::ONE,
            currency: None,
        };
        assert_eq!(t.streams(), vec!["A", "B"]);
        assert_eq!(t.name(), "transfer");
    }
}
