//! Exact money: `rust_decimal::Decimal` amounts tagged with an ISO 4217 currency.
//!
//! Rounding rules (explicit, tested below):
//! - Amounts are rounded to the currency's minor unit (ISO 4217 exponent: EUR 2, JPY 0,
//!   BHD 3) with [`RoundingStrategy::MidpointAwayFromZero`] ("commercial" rounding), the
//!   rule ERPs such as NetSuite and SAP apply to invoice lines by default.
//! - Splitting an amount (installments, milestone percentages) never creates or loses a
//!   minor unit: every part is rounded down to the minor unit and the remainder is added
//!   to the **last** part, so the parts always sum to the total exactly.
//! - Arithmetic across currencies is an error, never an implicit conversion.

use std::fmt;
use std::str::FromStr;

use rust_decimal::{Decimal, RoundingStrategy};
use serde::{Deserialize, Serialize};

/// An ISO 4217 currency that has a minor unit (precious metals, funds and testing codes
/// without an exponent are rejected: they cannot be invoiced).
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct Currency(iso_currency::Currency);

/// Errors raised by money arithmetic and parsing.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MoneyError {
    /// The code is not an ISO 4217 alphabetic code.
    #[error("`{0}` is not an ISO 4217 currency code")]
    UnknownCurrency(String),
    /// The currency exists but has no minor unit (e.g. XAU), so it cannot be billed.
    #[error("currency `{0}` has no minor unit and cannot be used for billing")]
    NotBillable(String),
    /// Two amounts in different currencies were combined.
    #[error("currency mismatch: {left} vs {right}")]
    CurrencyMismatch {
        /// Currency of the left operand.
        left: Currency,
        /// Currency of the right operand.
        right: Currency,
    },
    /// The amount has more decimal places than the currency allows.
    #[error("{amount} has more decimal places than {currency} allows ({exponent})")]
    TooPrecise {
        /// The offending amount.
        amount: Decimal,
        /// The currency.
        currency: Currency,
        /// The currency's minor-unit exponent.
        exponent: u32,
    },
    /// Splitting into zero parts or by weights that do not sum to a positive total.
    #[error("invalid split: {0}")]
    InvalidSplit(String),
    /// A text amount was not a decimal number.
    #[error("`{0}` is not a decimal amount")]
    InvalidAmount(String),
}

impl Currency {
    /// Parses an ISO 4217 alphabetic code (upper case, e.g. `EUR`).
    pub fn parse(code: &str) -> Result<Self, MoneyError> {
        let c = iso_currency::Currency::from_code(code).ok_or_else(|| MoneyError::UnknownCurrency(code.to_owned()))?;
        if c.exponent().is_none() {
            return Err(MoneyError::NotBillable(code.to_owned()));
        }
        Ok(Self(c))
    }

    /// The alphabetic code, e.g. `EUR`.
    pub fn code(self) -> &'static str {
        self.0.code()
    }

    /// Number of decimal places of the minor unit (EUR 2, JPY 0, BHD 3).
    pub fn exponent(self) -> u32 {
        // `parse` rejects currencies without an exponent, so the fallback is unreachable;
        // 2 is the ISO default and keeps this function total.
        u32::from(self.0.exponent().unwrap_or(2))
    }
}

impl fmt::Display for Currency {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.code())
    }
}

impl fmt::Debug for Currency {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.code())
    }
}

impl FromStr for Currency {
    type Err = MoneyError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::parse(s)
    }
}

impl Serialize for Currency {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.code())
    }
}

impl<'de> Deserialize<'de> for Currency {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let code = String::deserialize(d)?;
        Currency::parse(&code).map_err(serde::de::Error::custom)
    }
}

/// An exact amount in one currency. Serialised as `{"amount": "1234.50", "currency": "EUR"}`
/// with the amount as a string so no JSON parser turns it into a float.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Money {
    /// The decimal amount (string on the wire).
    #[serde(with = "rust_decimal::serde::str")]
    pub amount: Decimal,
    /// ISO 4217 currency.
    pub currency: Currency,
}

impl fmt::Debug for Money {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}", self.amount, self.currency)
    }
}

impl fmt::Display for Money {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let scaled = self.amount.round_dp_with_strategy(self.currency.exponent(), RoundingStrategy::MidpointAwayFromZero);
        write!(f, "{} {:.*}", self.currency, self.currency.exponent() as usize, scaled)
    }
}

impl Money {
    /// A money value; the amount is kept exactly as given (see [`Money::rounded`]).
    pub fn new(amount: Decimal, currency: Currency) -> Self {
        Self { amount, currency }
    }

    /// Zero in `currency`.
    pub fn zero(currency: Currency) -> Self {
        Self::new(Decimal::ZERO, currency)
    }

    /// Parses a text amount in `currency`, rejecting more decimals than the minor unit.
    pub fn parse_exact(amount: &str, currency: Currency) -> Result<Self, MoneyError> {
        let d = Decimal::from_str_exact(amount.trim()).map_err(|_| MoneyError::InvalidAmount(amount.to_owned()))?;
        let m = Self::new(d, currency);
        m.ensure_exact()?;
        Ok(m)
    }

    /// Errors when the amount carries more decimals than the currency's minor unit.
    pub fn ensure_exact(&self) -> Result<(), MoneyError> {
        let exp = self.currency.exponent();
        if self.amount.normalize().scale() > exp {
            return Err(MoneyError::TooPrecise { amount: self.amount, currency: self.currency, exponent: exp });
        }
        Ok(())
    }

    /// Rounds to the minor unit, midpoint away from zero (commercial rounding).
    pub fn rounded(self) -> Self {
        Self::new(self.amount.round_dp_with_strategy(self.currency.exponent(), RoundingStrategy::MidpointAwayFromZero), self.currency)
    }

    /// Sum of two amounts in the same currency.
    pub fn checked_add(self, other: Money) -> Result<Money, MoneyError> {
        self.same_currency(other)?;
        Ok(Self::new(self.amount + other.amount, self.currency))
    }

    /// Difference of two amounts in the same currency.
    pub fn checked_sub(self, other: Money) -> Result<Money, MoneyError> {
        self.same_currency(other)?;
        Ok(Self::new(self.amount - other.amount, self.currency))
    }

    /// Multiplies by a quantity (hours, a rate, a percentage as a fraction); not rounded.
    pub fn times(self, factor: Decimal) -> Money {
        Self::new(self.amount * factor, self.currency)
    }

    /// True when the amount is strictly positive.
    pub fn is_positive(&self) -> bool {
        self.amount > Decimal::ZERO
    }

    fn same_currency(self, other: Money) -> Result<(), MoneyError> {
        if self.currency != other.currency {
            return Err(MoneyError::CurrencyMismatch { left: self.currency, right: other.currency });
        }
        Ok(())
    }

    /// Splits into `parts` equal shares (see module docs for the remainder rule).
    pub fn split_even(self, parts: u32) -> Result<Vec<Money>, MoneyError> {
        if parts == 0 {
            return Err(MoneyError::InvalidSplit("cannot split into zero parts".into()));
        }
        let weights = vec![Decimal::ONE; parts as usize];
        self.allocate(&weights)
    }

    /// Splits by weights (e.g. milestone percentages); parts sum exactly to `self`
    /// rounded to the minor unit, the remainder landing on the last part.
    pub fn allocate(self, weights: &[Decimal]) -> Result<Vec<Money>, MoneyError> {
        if weights.is_empty() {
            return Err(MoneyError::InvalidSplit("no weights".into()));
        }
        if weights.iter().any(|w| *w < Decimal::ZERO) {
            return Err(MoneyError::InvalidSplit("negative weight".into()));
        }
        let total_weight: Decimal = weights.iter().copied().sum();
        if total_weight <= Decimal::ZERO {
            return Err(MoneyError::InvalidSplit("weights sum to zero".into()));
        }
        let total = self.rounded();
        let exp = self.currency.exponent();
        let mut parts = Vec::with_capacity(weights.len());
        let mut allocated = Decimal::ZERO;
        for w in &weights[..weights.len() - 1] {
            let share = (total.amount * *w / total_weight).round_dp_with_strategy(exp, RoundingStrategy::ToZero);
            allocated += share;
            parts.push(Money::new(share, self.currency));
        }
        parts.push(Money::new(total.amount - allocated, self.currency));
        Ok(parts)
    }
}

/// Sums amounts that must share `currency`; an empty slice sums to zero.
pub fn sum(currency: Currency, items: impl IntoIterator<Item = Money>) -> Result<Money, MoneyError> {
    items.into_iter().try_fold(Money::zero(currency), Money::checked_add)
}

#[cfg(test)]
mod tests {
    use super::*;
    use rust_decimal_macros::dec;

    fn eur() -> Currency {
        Currency::parse("EUR").unwrap()
    }

    #[test]
    fn when_code_is_not_iso_should_reject() {
        assert_eq!(Currency::parse("EURO"), Err(MoneyError::UnknownCurrency("EURO".into())));
        assert_eq!(Currency::parse("XAU"), Err(MoneyError::NotBillable("XAU".into())));
    }

    #[test]
    fn when_currency_has_no_minor_unit_should_round_to_whole_units() {
        let jpy = Currency::parse("JPY").unwrap();
        assert_eq!(Money::new(dec!(100.5), jpy).rounded().amount, dec!(101));
        assert_eq!(Money::new(dec!(-100.5), jpy).rounded().amount, dec!(-101));
        let bhd = Currency::parse("BHD").unwrap();
        assert_eq!(Money::new(dec!(1.2345), bhd).rounded().amount, dec!(1.235));
    }

    #[test]
    fn when_midpoint_should_round_away_from_zero() {
        assert_eq!(Money::new(dec!(2.345), eur()).rounded().amount, dec!(2.35));
        assert_eq!(Money::new(dec!(2.344), eur()).rounded().amount, dec!(2.34));
        assert_eq!(Money::new(dec!(-2.345), eur()).rounded().amount, dec!(-2.35));
    }

    #[test]
    fn when_split_does_not_divide_evenly_should_put_remainder_on_last_part() {
        let parts = Money::new(dec!(100.00), eur()).split_even(3).unwrap();
        let amounts: Vec<_> = parts.iter().map(|m| m.amount).collect();
        assert_eq!(amounts, vec![dec!(33.33), dec!(33.33), dec!(33.34)]);
        assert_eq!(sum(eur(), parts).unwrap().amount, dec!(100.00));
    }

    #[test]
    fn when_allocating_by_percentages_should_sum_exactly() {
        let jpy = Currency::parse("JPY").unwrap();
        let parts = Money::new(dec!(1000001), jpy).allocate(&[dec!(10), dec!(25), dec!(40), dec!(25)]).unwrap();
        let amounts: Vec<_> = parts.iter().map(|m| m.amount).collect();
        assert_eq!(amounts, vec![dec!(100000), dec!(250000), dec!(400000), dec!(250001)]);
    }

    #[test]
    fn when_adding_different_currencies_should_fail() {
        let usd = Currency::parse("USD").unwrap();
        let err = Money::new(dec!(1), eur()).checked_add(Money::new(dec!(1), usd)).unwrap_err();
        assert!(matches!(err, MoneyError::CurrencyMismatch { .. }));
    }

    #[test]
    fn when_amount_is_more_precise_than_currency_should_reject() {
        assert!(Money::parse_exact("10.001", eur()).is_err());
        assert!(Money::parse_exact("10.10", eur()).is_ok());
        assert!(Money::parse_exact("10.5", Currency::parse("JPY").unwrap()).is_err());
        assert!(Money::parse_exact("1e3", eur()).is_err());
    }

    #[test]
    fn when_serialised_should_use_string_amount_and_code() {
        let m = Money::new(dec!(1234.50), eur());
        let json = serde_json::to_string(&m).unwrap();
        assert_eq!(json, r#"{"amount":"1234.50","currency":"EUR"}"#);
        let back: Money = serde_json::from_str(&json).unwrap();
        assert_eq!(back, m);
        assert!(serde_json::from_str::<Money>(r#"{"amount":"1","currency":"ZZZ"}"#).is_err());
    }

    #[test]
    fn when_displayed_should_show_minor_units() {
        assert_eq!(Money::new(dec!(5), eur()).to_string(), "EUR 5.00");
        assert_eq!(Money::new(dec!(5), Currency::parse("JPY").unwrap()).to_string(), "JPY 5");
    }
}
