//! Exact money: `rust_decimal::Decimal` amounts tagged with an ISO 4217 currency.
//!
//! Rounding rules (explicit, tested below):
//! - Amounts are rounded to the currency's minor unit (ISO 4217 exponent: EUR 2, JPY 0,
//!   BHD 3) with [`RoundingStrategy::MidpointAwayFromZero`] ("commercial" rounding), the
//!   rule ERPs such as NetSuite and SAP apply to invoice lines by default.
//! - Splitting an amount (installments, milestone percentages) never creates or loses a
//!   minor unit (largest-remainder allocation): the total is rounded to the minor unit;
//!   each part's exact share (`total × weight / Σ weights`) is rounded half away from
//!   zero; the difference between the total and the sum of the rounded parts — a whole
//!   number of minor units, positive or negative — is then distributed one minor unit at
//!   a time, a positive remainder to the parts that were rounded down the most (largest
//!   `exact − rounded`), a negative one to the parts that were rounded up the most; ties
//!   go to the earlier part. The parts sum to the total exactly and each is within one
//!   minor unit of its exact share (property-tested below).
//! - Arithmetic across currencies is an error, never an implicit conversion.

use std::fmt;
use std::str::FromStr;

use rust_decimal::prelude::ToPrimitive;
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

    /// Splits by weights (e.g. milestone percentages) with the largest-remainder rule of
    /// the module docs: the parts sum exactly to `self` rounded to the minor unit.
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
        let unit = Decimal::new(1, exp);
        let exact: Vec<Decimal> = weights.iter().map(|w| total.amount * *w / total_weight).collect();
        let mut parts: Vec<Decimal> = exact.iter().map(|x| x.round_dp_with_strategy(exp, RoundingStrategy::MidpointAwayFromZero)).collect();
        let remainder = total.amount - parts.iter().copied().sum::<Decimal>();
        // |remainder| < parts × ½ unit, so the count of unit steps is small and exact.
        let step_count = (remainder / unit).round().abs().to_usize().unwrap_or(0);
        if step_count > 0 {
            // Order by how far rounding moved each part, in the direction that needs fixing.
            let mut order: Vec<usize> = (0..parts.len()).collect();
            let positive = remainder > Decimal::ZERO;
            order.sort_by(|&a, &b| {
                let (da, db) = (exact[a] - parts[a], exact[b] - parts[b]);
                let ord = if positive { db.cmp(&da) } else { da.cmp(&db) };
                ord.then(a.cmp(&b))
            });
            for &i in order.iter().cycle().take(step_count) {
                if positive {
                    parts[i] += unit;
                } else {
                    parts[i] -= unit;
                }
            }
        }
        Ok(parts.into_iter().map(|p| Money::new(p, self.currency)).collect())
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
    fn when_split_does_not_divide_evenly_should_give_the_remainder_to_the_earliest_tied_part() {
        let parts = Money::new(dec!(100.00), eur()).split_even(3).unwrap();
        let amounts: Vec<_> = parts.iter().map(|m| m.amount).collect();
        // 33.333… rounds to 33.33 three times; the one missing cent goes to the first tie.
        assert_eq!(amounts, vec![dec!(33.34), dec!(33.33), dec!(33.33)]);
        assert_eq!(sum(eur(), parts).unwrap().amount, dec!(100.00));
    }

    #[test]
    fn when_a_share_sits_on_a_midpoint_should_round_it_half_away_from_zero() {
        // 25 % of 1,222,222.22 is 305,555.555 exactly: half away from zero gives .56 (the
        // old rule truncated to .55). The other 75 % is 916,666.665 → .67; the sum then
        // overshoots by one cent, taken back from the part rounded up the most (a tie at
        // .005, so the earlier part).
        let parts = Money::new(dec!(1222222.22), eur()).allocate(&[dec!(25), dec!(75)]).unwrap();
        let amounts: Vec<_> = parts.iter().map(|m| m.amount).collect();
        assert_eq!(amounts, vec![dec!(305555.55), dec!(916666.67)]);
        let parts = Money::new(dec!(1222222.22), eur()).allocate(&[dec!(25), dec!(35), dec!(40)]).unwrap();
        let amounts: Vec<_> = parts.iter().map(|m| m.amount).collect();
        // 305,555.555 → .56, 427,777.777 → .78, 488,888.888 → .89: sum 1,222,222.23, one
        // cent too many, taken from the part rounded up the most (305,555.56, up by .005).
        assert_eq!(amounts, vec![dec!(305555.55), dec!(427777.78), dec!(488888.89)]);
    }

    #[test]
    fn when_splitting_into_sevenths_should_spread_the_remainder_instead_of_piling_it_on_the_last_part() {
        // 611,111.11 / 7 = 87,301.587…: every part rounds to 87,301.59 and the sum
        // overshoots by 2 cents, taken from the first two parts (all tie). The old rule
        // gave 87,301.58 × 6 + 87,301.63 (5 cents off on the last part).
        let parts = Money::new(dec!(611111.11), eur()).split_even(7).unwrap();
        let amounts: Vec<_> = parts.iter().map(|m| m.amount).collect();
        assert_eq!(
            amounts,
            vec![dec!(87301.58), dec!(87301.58), dec!(87301.59), dec!(87301.59), dec!(87301.59), dec!(87301.59), dec!(87301.59)]
        );
        assert_eq!(sum(eur(), parts).unwrap().amount, dec!(611111.11));
    }

    #[test]
    fn when_allocating_by_percentages_should_sum_exactly() {
        let jpy = Currency::parse("JPY").unwrap();
        let parts = Money::new(dec!(1000001), jpy).allocate(&[dec!(10), dec!(25), dec!(40), dec!(25)]).unwrap();
        let amounts: Vec<_> = parts.iter().map(|m| m.amount).collect();
        // 100000.1, 250000.25, 400000.4, 250000.25 → 100000, 250000, 400000, 250000 and the
        // missing yen goes to the largest remainder (.4, the third part).
        assert_eq!(amounts, vec![dec!(100000), dec!(250000), dec!(400001), dec!(250000)]);
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

    mod properties {
        use super::*;
        use proptest::prelude::*;

        fn currency() -> impl Strategy<Value = Currency> {
            prop::sample::select(vec!["EUR", "JPY", "BHD", "USD", "SGD"]).prop_map(|c| Currency::parse(c).unwrap())
        }

        proptest! {
            #![proptest_config(ProptestConfig::with_cases(2000))]

            #[test]
            fn allocation_sums_exactly_and_each_part_is_within_one_minor_unit_of_its_share(
                units in -10_000_000_000i64..10_000_000_000i64,
                weights in prop::collection::vec(0u32..10_000, 1..13),
                currency in currency(),
            ) {
                prop_assume!(weights.iter().any(|w| *w > 0));
                let total = Money::new(Decimal::new(units, currency.exponent()), currency);
                let w: Vec<Decimal> = weights.iter().map(|x| Decimal::from(*x)).collect();
                let parts = total.allocate(&w).unwrap();
                prop_assert_eq!(parts.len(), w.len());
                prop_assert_eq!(sum(currency, parts.clone()).unwrap().amount, total.amount);
                let unit = Decimal::new(1, currency.exponent());
                let tw: Decimal = w.iter().copied().sum();
                for (p, wi) in parts.iter().zip(&w) {
                    let exact = total.amount * *wi / tw;
                    prop_assert!((p.amount - exact).abs() < unit, "part {} vs exact share {}", p.amount, exact);
                    prop_assert!(p.ensure_exact().is_ok(), "part {} has sub-minor-unit digits", p.amount);
                    if wi.is_zero() {
                        prop_assert!(p.amount.is_zero());
                    }
                }
            }

            #[test]
            fn even_split_parts_differ_by_at_most_one_minor_unit(
                units in 0i64..10_000_000_000i64,
                n in 1u32..40,
                currency in currency(),
            ) {
                let total = Money::new(Decimal::new(units, currency.exponent()), currency);
                let parts = total.split_even(n).unwrap();
                let max = parts.iter().map(|p| p.amount).max().unwrap();
                let min = parts.iter().map(|p| p.amount).min().unwrap();
                prop_assert!(max - min <= Decimal::new(1, currency.exponent()));
                prop_assert_eq!(sum(currency, parts).unwrap().amount, total.amount);
            }
        }
    }

    #[test]
    fn when_displayed_should_show_minor_units() {
        assert_eq!(Money::new(dec!(5), eur()).to_string(), "EUR 5.00");
        assert_eq!(Money::new(dec!(5), Currency::parse("JPY").unwrap()).to_string(), "JPY 5");
    }
}
