//! The account aggregate: `decide` holds every rule, `apply` holds none.
//!
//! `decide` takes a command and the current state of the accounts it touches and returns the
//! events to append, or the rule the command breaks. `apply` folds one event into the state and
//! only asserts what nothing but a bug could break. No I/O, no clock, no randomness.

use rust_decimal::Decimal;

use super::commands::{LedgerCommand, LedgerError, validate_account_id};
use super::events::{AccountCreated, LedgerEvent, MoneyDeposited, MoneyWithdrawn, TransferReceived, TransferSent};
use crate::money::{Currency, Money, MoneyError, within_limit};

/// An open account's state.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AccountState {
    pub owner_name: String,
    pub currency: Currency,
    pub balance: Decimal,
}

/// One account stream folded: its state (none before `AccountCreated`) and its version, the
/// number of events in the stream.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Account {
    pub id: String,
    pub state: Option<AccountState>,
    pub version: u64,
}

/// Events to append, each with the stream (account id) it belongs to.
pub type Decision = Vec<(String, LedgerEvent)>;

impl Account {
    /// An account that has no events yet.
    pub fn new(id: impl Into<String>) -> Account {
        Account { id: id.into(), state: None, version: 0 }
    }

    /// Folds events, in stream order, into a fresh account.
    pub fn replay<'a>(id: impl Into<String>, events: impl IntoIterator<Item = &'a LedgerEvent>) -> Account {
        let mut account = Account::new(id);
        for event in events {
            account.apply(event);
        }
        account
    }

    /// Folds one event into the state. No rules: an event is a fact.
    ///
    /// # Panics
    /// When the event cannot follow the state (a deposit before the account exists, a second
    /// `AccountCreated`, a currency change): only corrupt streams or bugs produce that.
    pub fn apply(&mut self, event: &LedgerEvent) {
        match event {
            LedgerEvent::AccountCreated(e) => {
                assert!(self.state.is_none(), "account {} created twice", self.id);
                assert_eq!(self.version, 0, "account {} created after events", self.id);
                self.state = Some(AccountState {
                    owner_name: e.owner_name.clone(),
                    currency: e.currency,
                    balance: e.initial_balance,
                });
            }
            other => {
                let state =
                    self.state.as_mut().unwrap_or_else(|| panic!("event on account {} before it was created", self.id));
                let currency = match other {
                    LedgerEvent::MoneyDeposited(e) => e.currency,
                    LedgerEvent::MoneyWithdrawn(e) => e.currency,
                    LedgerEvent::TransferSent(e) => e.currency,
                    LedgerEvent::TransferReceived(e) => e.currency,
                    LedgerEvent::AccountCreated(_) => unreachable!(),
                };
                assert_eq!(currency, state.currency, "currency changed on account {}", self.id);
                state.balance += other.balance_delta();
            }
        }
        self.version += 1;
    }

    pub fn balance(&self) -> Option<Decimal> {
        self.state.as_ref().map(|s| s.balance)
    }

    fn open(&self) -> Result<&AccountState, LedgerError> {
        self.state.as_ref().ok_or_else(|| LedgerError::AccountNotFound { account_id: self.id.clone() })
    }
}

/// Decides a command against the accounts it touches, given in the order of
/// [`LedgerCommand::streams`]. Returns the events to append; nothing is changed.
///
/// # Errors
/// The [`LedgerError`] rule the command breaks.
///
/// # Panics
/// When `accounts` does not match the command's streams: a caller bug.
pub fn decide(command: &LedgerCommand, accounts: &[&Account]) -> Result<Decision, LedgerError> {
    let streams = command.streams();
    assert_eq!(streams.len(), accounts.len(), "decide needs every stream of the command");
    for (stream, account) in streams.iter().zip(accounts) {
        assert_eq!(*stream, account.id, "accounts out of order");
    }
    command.validate()?;
    match command {
        LedgerCommand::CreateAccount { account_id, owner_name, initial_balance, currency } => {
            if accounts[0].state.is_some() {
                return Err(LedgerError::AccountExists { account_id: account_id.clone() });
            }
            let opening = Money::non_negative(*initial_balance, *currency)
                .map_err(|error| LedgerError::InvalidAmount { field: "initial_balance", error })?;
            Ok(vec![(
                account_id.clone(),
                LedgerEvent::AccountCreated(AccountCreated {
                    owner_name: owner_name.clone(),
                    currency: *currency,
                    initial_balance: opening.amount(),
                }),
            )])
        }
        LedgerCommand::Deposit { account_id, amount, currency } => {
            let state = accounts[0].open()?;
            let money = money_for(state, *amount, *currency)?;
            let after = state.balance + money.amount();
            if !within_limit(after, state.currency) {
                return Err(LedgerError::BalanceLimitExceeded { account_id: account_id.clone() });
            }
            Ok(vec![(
                account_id.clone(),
                LedgerEvent::MoneyDeposited(MoneyDeposited { amount: money.amount(), currency: state.currency }),
            )])
        }
        LedgerCommand::Withdraw { account_id, amount, currency } => {
            let state = accounts[0].open()?;
            let money = money_for(state, *amount, *currency)?;
            if state.balance < money.amount() {
                return Err(insufficient(account_id, state, money));
            }
            Ok(vec![(
                account_id.clone(),
                LedgerEvent::MoneyWithdrawn(MoneyWithdrawn { amount: money.amount(), currency: state.currency }),
            )])
        }
        LedgerCommand::Transfer { from_account_id, to_account_id, amount, currency } => {
            let from = accounts[0].open()?;
            let to = accounts[1].open()?;
            if from.currency != to.currency {
                return Err(LedgerError::CurrencyMismatch { expected: from.currency, found: to.currency });
            }
            let money = money_for(from, *amount, *currency)?;
            if from.balance < money.amount() {
                return Err(insufficient(from_account_id, from, money));
            }
            if !within_limit(to.balance + money.amount(), to.currency) {
                return Err(LedgerError::BalanceLimitExceeded { account_id: to_account_id.clone() });
            }
            Ok(vec![
                (
                    from_account_id.clone(),
                    LedgerEvent::TransferSent(TransferSent {
                        to_account_id: to_account_id.clone(),
                        amount: money.amount(),
                        currency: from.currency,
                    }),
                ),
                (
                    to_account_id.clone(),
                    LedgerEvent::TransferReceived(TransferReceived {
                        from_account_id: from_account_id.clone(),
                        amount: money.amount(),
                        currency: to.currency,
                    }),
                ),
            ])
        }
    }
}

fn money_for(state: &AccountState, amount: Decimal, currency: Option<Currency>) -> Result<Money, LedgerError> {
    if let Some(given) = currency
        && given != state.currency
    {
        return Err(LedgerError::CurrencyMismatch { expected: state.currency, found: given });
    }
    Money::positive(amount, state.currency)
        .map_err(|error: MoneyError| LedgerError::InvalidAmount { field: "amount", error })
}

fn insufficient(account_id: &str, state: &AccountState, money: Money) -> LedgerError {
    LedgerError::InsufficientFunds {
        account_id: account_id.to_string(),
        balance: state.balance,
        requested: money.amount(),
    }
}

/// Checks that an id is usable as an account id; re-exported for callers that take ids apart
/// from commands (queries).
///
/// # Errors
/// [`LedgerError::InvalidField`] naming `field`.
pub fn check_account_id(field: &'static str, id: &str) -> Result<(), LedgerError> {
    validate_account_id(field, id)
}

#[cfg(test)]
mod tests {
    //! Given/when/then: given the events already in the streams, when a command is decided,
    //! then these events, or this error.
    use super::*;
    use crate::money::parse_decimal;

    fn d(s: &str) -> Decimal {
        parse_decimal(s).unwrap()
    }

    fn created(balance: &str, currency: Currency) -> LedgerEvent {
        LedgerEvent::AccountCreated(AccountCreated {
            owner_name: "Owner".into(),
            currency,
            initial_balance: d(balance),
        })
    }

    fn given(id: &str, events: &[LedgerEvent]) -> Account {
        Account::replay(id, events)
    }

    fn withdraw(id: &str, amount: &str) -> LedgerCommand {
        LedgerCommand::Withdraw { account_id: id.into(), amount: d(amount), currency: None }
    }

    fn deposit(id: &str, amount: &str) -> LedgerCommand {
        LedgerCommand::Deposit { account_id: id.into(), amount: d(amount), currency: None }
    }

    fn transfer(from: &str, to: &str, amount: &str) -> LedgerCommand {
        LedgerCommand::Transfer {
            from_account_id: from.into(),
            to_account_id: to.into(),
            amount: d(amount),
            currency: None,
        }
    }

    #[test]
    fn create_account_on_empty_stream() {
        let when = LedgerCommand::CreateAccount {
            account_id: "A".into(),
            owner_name: "Owner".into(),
            initial_balance: d("100.00"),
            currency: Currency::USD,
        };
        let then = decide(&when, &[&Account::new("A")]).unwrap();
        assert_eq!(then, vec![("A".to_string(), created("100.00", Currency::USD))]);
    }

    #[test]
    fn create_account_twice_is_account_exists() {
        let a = given("A", &[created("1.00", Currency::USD)]);
        let when = LedgerCommand::CreateAccount {
            account_id: "A".into(),
            owner_name: "Owner".into(),
            initial_balance: d("0"),
            currency: Currency::USD,
        };
        assert_eq!(decide(&when, &[&a]), Err(LedgerError::AccountExists { account_id: "A".into() }));
    }

    #[test]
    fn opening_balance_may_be_zero_never_negative() {
        let mut when = LedgerCommand::CreateAccount {
            account_id: "A".into(),
            owner_name: "Owner".into(),
            initial_balance: d("0"),
            currency: Currency::JPY,
        };
        assert!(decide(&when, &[&Account::new("A")]).is_ok());
        if let LedgerCommand::CreateAccount { initial_balance, .. } = &mut when {
            *initial_balance = d("-1");
        }
        assert!(matches!(
            decide(&when, &[&Account::new("A")]),
            Err(LedgerError::InvalidAmount { field: "initial_balance", error: MoneyError::Negative })
        ));
    }

    #[test]
    fn deposit_and_withdraw_on_missing_account() {
        let a = Account::new("A");
        assert_eq!(decide(&deposit("A", "1"), &[&a]), Err(LedgerError::AccountNotFound { account_id: "A".into() }));
        assert_eq!(decide(&withdraw("A", "1"), &[&a]), Err(LedgerError::AccountNotFound { account_id: "A".into() }));
    }

    #[test]
    fn withdraw_within_balance_and_beyond() {
        let a = given("A", &[created("100.00", Currency::USD)]);
        let then = decide(&withdraw("A", "100.00"), &[&a]).unwrap();
        assert_eq!(then[0].1.balance_delta(), d("-100.00"));
        assert_eq!(
            decide(&withdraw("A", "100.01"), &[&a]),
            Err(LedgerError::InsufficientFunds {
                account_id: "A".into(),
                balance: d("100.00"),
                requested: d("100.01")
            })
        );
    }

    #[test]
    fn amounts_checked_against_the_account_currency() {
        let yen = given("Y", &[created("1000", Currency::JPY)]);
        assert!(matches!(
            decide(&withdraw("Y", "1.5"), &[&yen]),
            Err(LedgerError::InvalidAmount { field: "amount", error: MoneyError::TooManyDecimals { .. } })
        ));
        let usd = given("A", &[created("1.00", Currency::USD)]);
        assert!(matches!(
            decide(&deposit("A", "0"), &[&usd]),
            Err(LedgerError::InvalidAmount { error: MoneyError::NotPositive, .. })
        ));
        let euros = LedgerCommand::Deposit { account_id: "A".into(), amount: d("1"), currency: Some(Currency::EUR) };
        assert_eq!(
            decide(&euros, &[&usd]),
            Err(LedgerError::CurrencyMismatch { expected: Currency::USD, found: Currency::EUR })
        );
    }

    #[test]
    fn balance_stays_within_the_limit() {
        let a = given("A", &[created("10000000000000.00", Currency::USD)]);
        assert_eq!(
            decide(&deposit("A", "0.01"), &[&a]),
            Err(LedgerError::BalanceLimitExceeded { account_id: "A".into() })
        );
    }

    #[test]
    fn transfer_is_double_entry_and_conserves_money() {
        let a = given("A", &[created("50.00", Currency::EUR)]);
        let b = given("B", &[created("5.00", Currency::EUR)]);
        let then = decide(&transfer("A", "B", "20.00"), &[&a, &b]).unwrap();
        assert_eq!(then.len(), 2);
        assert_eq!(then[0].0, "A");
        assert_eq!(then[1].0, "B");
        let sum: Decimal = then.iter().map(|(_, e)| e.balance_delta()).sum();
        assert_eq!(sum, Decimal::ZERO);
        let (mut a2, mut b2) = (a.clone(), b.clone());
        a2.apply(&then[0].1);
        b2.apply(&then[1].1);
        assert_eq!(a2.balance().unwrap() + b2.balance().unwrap(), a.balance().unwrap() + b.balance().unwrap());
        assert_eq!(a2.version, 2);
    }

    #[test]
    fn transfer_rules() {
        let a = given("A", &[created("50.00", Currency::EUR)]);
        let b = given("B", &[created("5.00", Currency::USD)]);
        let c = given("C", &[created("5.00", Currency::EUR)]);
        assert_eq!(
            decide(&transfer("A", "B", "1.00"), &[&a, &b]),
            Err(LedgerError::CurrencyMismatch { expected: Currency::EUR, found: Currency::USD })
        );
        assert!(matches!(decide(&transfer("A", "C", "50.01"), &[&a, &c]), Err(LedgerError::InsufficientFunds { .. })));
        assert_eq!(
            decide(&transfer("A", "X", "1.00"), &[&a, &Account::new("X")]),
            Err(LedgerError::AccountNotFound { account_id: "X".into() })
        );
        assert_eq!(transfer("A", "A", "1.00").validate(), Err(LedgerError::SameAccount { account_id: "A".into() }));
    }

    #[test]
    fn apply_folds_without_rules() {
        // apply never refuses: an overdrawing withdrawal in the store (written by a buggy
        // writer) still folds, so the checkers can see the negative balance.
        let mut a = given("A", &[created("10.00", Currency::USD)]);
        a.apply(&LedgerEvent::MoneyWithdrawn(MoneyWithdrawn { amount: d("15.00"), currency: Currency::USD }));
        assert_eq!(a.balance(), Some(d("-5.00")));
        assert_eq!(a.version, 2);
    }

    #[test]
    #[should_panic(expected = "before it was created")]
    fn apply_asserts_stream_order() {
        let mut a = Account::new("A");
        a.apply(&LedgerEvent::MoneyDeposited(MoneyDeposited { amount: d("1"), currency: Currency::USD }));
    }
}
