//! Money: an exact decimal amount in an ISO 4217 currency with its minor units.
//!
//! This module decides what a valid amount is (positive, no more decimals than the currency
//! allows, at most [`MINOR_UNITS_MAX`] minor units). It knows nothing of accounts or balances
//! beyond offering [`within_limit`] for them. Never a float: every amount is a `Decimal`.

use std::fmt;
use std::str::FromStr;

use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};

/// The largest magnitude of any amount or balance, in minor units (10^15).
pub const MINOR_UNITS_MAX: i64 = 1_000_000_000_000_000;

/// The currencies the ledger knows, with their minor units.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum Currency {
    USD,
    EUR,
    JPY,
}

impl Currency {
    /// Every currency, in a fixed order.
    pub const ALL: [Currency; 3] = [Currency::USD, Currency::EUR, Currency::JPY];

    /// Digits after the decimal point in this currency (ISO 4217 minor units).
    pub fn minor_units(self) -> u32 {
        match self {
            Currency::USD | Currency::EUR => 2,
            Currency::JPY => 0,
        }
    }

    pub fn code(self) -> &'static str {
        match self {
            Currency::USD => "USD",
            Currency::EUR => "EUR",
            Currency::JPY => "JPY",
        }
    }

    /// The largest amount this currency can express within [`MINOR_UNITS_MAX`].
    pub fn amount_max(self) -> Decimal {
        Decimal::new(MINOR_UNITS_MAX, self.minor_units())
    }

    /// `amount` shown with exactly this currency's number of decimals. An amount with more
    /// decimals than the currency allows (only a corrupt store holds one) is shown as it is,
    /// never rounded.
    pub fn display(self, amount: Decimal) -> String {
        let mut shown = amount.normalize();
        if shown.scale() <= self.minor_units() {
            shown.rescale(self.minor_units());
        }
        shown.to_string()
    }
}

impl fmt::Display for Currency {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.code())
    }
}

impl FromStr for Currency {
    type Err = MoneyError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "USD" => Ok(Currency::USD),
            "EUR" => Ok(Currency::EUR),
            "JPY" => Ok(Currency::JPY),
            other => Err(MoneyError::UnknownCurrency(other.to_string())),
        }
    }
}

/// Why an amount is not valid money. Callers show it to the client as a 422 naming the field.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MoneyError {
    /// Zero or negative where a positive amount is required.
    #[error("amount must be positive")]
    NotPositive,
    /// Negative where zero or more is required (an opening balance).
    #[error("amount must not be negative")]
    Negative,
    /// More decimals than the currency's minor units.
    #[error("{currency} allows at most {max} decimals")]
    TooManyDecimals { currency: Currency, max: u32 },
    /// Over the limit of [`MINOR_UNITS_MAX`] minor units.
    #[error("amount exceeds the limit of {max}")]
    TooLarge { max: String },
    /// Not a currency the ledger knows.
    #[error("unknown currency {0:?}")]
    UnknownCurrency(String),
    /// Not a decimal number.
    #[error("not a decimal number: {0:?}")]
    NotANumber(String),
}

/// An amount that is valid in its currency: positive, within precision and limit.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Money {
    amount: Decimal,
    currency: Currency,
}

impl Money {
    /// A positive amount of `currency`.
    ///
    /// # Errors
    /// [`MoneyError`] when the amount is not positive, has too many decimals or is too large.
    pub fn positive(amount: Decimal, currency: Currency) -> Result<Money, MoneyError> {
        if amount <= Decimal::ZERO {
            return Err(MoneyError::NotPositive);
        }
        Self::checked(amount, currency)
    }

    /// Zero or a positive amount of `currency` (an opening balance may be zero).
    ///
    /// # Errors
    /// As [`Money::positive`], with zero allowed.
    pub fn non_negative(amount: Decimal, currency: Currency) -> Result<Money, MoneyError> {
        if amount < Decimal::ZERO {
            return Err(MoneyError::Negative);
        }
        Self::checked(amount, currency)
    }

    fn checked(amount: Decimal, currency: Currency) -> Result<Money, MoneyError> {
        let normal = amount.normalize();
        if normal.scale() > currency.minor_units() {
            return Err(MoneyError::TooManyDecimals { currency, max: currency.minor_units() });
        }
        if !within_limit(normal, currency) {
            return Err(MoneyError::TooLarge { max: currency.display(currency.amount_max()) });
        }
        let money = Money { amount: normal, currency };
        debug_assert!(money.amount >= Decimal::ZERO);
        Ok(money)
    }

    pub fn amount(&self) -> Decimal {
        self.amount
    }

    pub fn currency(&self) -> Currency {
        self.currency
    }
}

impl fmt::Display for Money {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}", self.currency.display(self.amount), self.currency)
    }
}

/// True when `amount` stays within [`MINOR_UNITS_MAX`] minor units of `currency` in magnitude.
pub fn within_limit(amount: Decimal, currency: Currency) -> bool {
    amount.abs() <= currency.amount_max()
}

/// Parses a decimal exactly, as written (no float on the way).
///
/// # Errors
/// [`MoneyError::NotANumber`] when `text` is not a plain or scientific decimal number.
pub fn parse_decimal(text: &str) -> Result<Decimal, MoneyError> {
    let trimmed = text.trim();
    let parsed =
        if trimmed.contains(['e', 'E']) { Decimal::from_scientific(trimmed) } else { Decimal::from_str_exact(trimmed) };
    parsed.map_err(|_| MoneyError::NotANumber(text.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn d(s: &str) -> Decimal {
        parse_decimal(s).unwrap()
    }

    #[test]
    fn minor_units_per_currency() {
        assert_eq!(Currency::USD.minor_units(), 2);
        assert_eq!(Currency::EUR.minor_units(), 2);
        assert_eq!(Currency::JPY.minor_units(), 0);
    }

    #[test]
    fn positive_amounts_only() {
        assert_eq!(Money::positive(d("0"), Currency::USD), Err(MoneyError::NotPositive));
        assert_eq!(Money::positive(d("-1.00"), Currency::USD), Err(MoneyError::NotPositive));
        assert!(Money::positive(d("0.01"), Currency::USD).is_ok());
        assert!(Money::non_negative(d("0"), Currency::USD).is_ok());
        assert_eq!(Money::non_negative(d("-0.01"), Currency::USD), Err(MoneyError::Negative));
    }

    #[test]
    fn decimals_bounded_by_currency_trailing_zeros_ignored() {
        assert!(matches!(Money::positive(d("10.001"), Currency::USD), Err(MoneyError::TooManyDecimals { max: 2, .. })));
        assert!(Money::positive(d("10.100"), Currency::USD).is_ok());
        assert!(matches!(Money::positive(d("1.5"), Currency::JPY), Err(MoneyError::TooManyDecimals { max: 0, .. })));
        assert!(Money::positive(d("1500"), Currency::JPY).is_ok());
    }

    #[test]
    fn limit_is_ten_to_the_fifteen_minor_units() {
        assert!(Money::positive(d("10000000000000.00"), Currency::USD).is_ok());
        assert!(matches!(Money::positive(d("10000000000000.01"), Currency::USD), Err(MoneyError::TooLarge { .. })));
        assert!(Money::positive(d("1000000000000000"), Currency::JPY).is_ok());
        assert!(Money::positive(d("1000000000000001"), Currency::JPY).is_err());
    }

    #[test]
    fn display_uses_minor_units() {
        assert_eq!(Currency::USD.display(d("10")), "10.00");
        assert_eq!(Currency::USD.display(d("10.5")), "10.50");
        assert_eq!(Currency::JPY.display(d("1500")), "1500");
    }

    #[test]
    fn parse_is_exact_and_rejects_garbage() {
        assert_eq!(d("0.1").to_string(), "0.1");
        assert_eq!(d("1e2"), Decimal::new(100, 0));
        assert!(parse_decimal("ten").is_err());
        assert!(parse_decimal("").is_err());
        assert_eq!("EUR".parse::<Currency>(), Ok(Currency::EUR));
        assert!("usd".parse::<Currency>().is_err());
    }
}
