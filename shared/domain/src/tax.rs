//! What o2c asks a tax engine and what it gets back: the contract of the tax-engine port.
//!
//! o2c never decides a rate: the engine does, from the issuing legal entity, the customer's
//! tax profile and nexus (country, VAT registration, US ship-to state, exemption
//! certificate) and each line's kind of supply. What o2c fixes is the **rounding rule**,
//! stated here and checked on every answer:
//!
//! - tax is computed **per line**: `tax = round(net × rate)` to the currency's minor unit,
//!   midpoint **away from zero** (a credit line rounds symmetrically to its debit);
//! - the invoice tax is the exact **sum of the line taxes**; the total is subtotal + tax.
//!
//! An answer whose line tax differs from that rule by even one minor unit is refused as a
//! bug of the engine (the shell checks it with [`TaxQuote::check`]), so an invoice never
//! carries a tax that cannot be recomputed from its lines.

use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};

use crate::money::{Currency, Money};

/// What kind of supply a line is (US states tax services differently from goods).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SupplyKind {
    /// Professional services (time, milestones, fixed fees, adjustments to them).
    Services,
    /// Re-billed expenses (follow the services they support).
    Expenses,
}

/// One line to tax.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TaxRequestLine {
    /// The invoice line number.
    pub line_no: u32,
    /// Net amount (negative for a credit).
    pub net: Money,
    /// Kind of supply.
    pub supply: SupplyKind,
}

/// A tax calculation request for one invoice.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TaxRequest {
    /// The o2c invoice id (the engine's document reference; idempotent).
    pub document_id: String,
    /// Issue date (rates in force on it).
    pub date: chrono::NaiveDate,
    /// Currency of every line.
    pub currency: Currency,
    /// Issuing legal entity.
    pub seller_legal_entity: String,
    /// Its country (ISO 3166-1 alpha-2).
    pub seller_country: String,
    /// Customer id.
    pub customer_id: String,
    /// Customer's country.
    pub buyer_country: String,
    /// Customer's VAT / GST registration, if any (B2B).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub buyer_tax_id: Option<String>,
    /// US ship-to state (sales-tax nexus).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ship_to_state: Option<String>,
    /// Sales-tax exemption certificate on file.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exemption_certificate: Option<String>,
    /// Lines.
    pub lines: Vec<TaxRequestLine>,
}

/// The engine's answer for one line.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TaxedLine {
    /// The invoice line number.
    pub line_no: u32,
    /// Rate applied (fraction, e.g. `0.19`).
    #[serde(with = "rust_decimal::serde::str")]
    pub rate: Decimal,
    /// Tax amount, rounded per line.
    pub tax: Money,
    /// Tax code (`VAT-STD`, `VAT-RC`, `US-NY`, `EXEMPT`, `GST-ZR`…).
    pub code: String,
    /// Wording the invoice must carry (reverse-charge mention, exemption certificate…).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
}

/// The engine's answer for an invoice.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TaxQuote {
    /// The request's document id.
    pub document_id: String,
    /// Jurisdiction determined (`DE`, `GB`, `US-NY`, `SG`, `JP`…).
    pub jurisdiction: String,
    /// One answer per requested line.
    pub lines: Vec<TaxedLine>,
}

/// Tax on `net` at `rate`, under the rounding rule of this module.
pub fn line_tax(net: Money, rate: Decimal) -> Money {
    net.times(rate).rounded()
}

/// Why a quote does not answer its request.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum QuoteError {
    /// A line is missing, extra or out of order.
    #[error("the quote answers lines {got:?}, the request asked {asked:?}")]
    Lines {
        /// Requested.
        asked: Vec<u32>,
        /// Answered.
        got: Vec<u32>,
    },
    /// A line's tax is not `round(net × rate)`.
    #[error("line {line_no}: tax {got} is not round({net} × {rate}) = {expected}")]
    Rounding {
        /// Line.
        line_no: u32,
        /// Net.
        net: Money,
        /// Rate.
        rate: Decimal,
        /// What the rule gives.
        expected: Money,
        /// What the engine said.
        got: Money,
    },
}

impl TaxQuote {
    /// Checks the quote against its request: one answer per line, in order, each line's
    /// tax exactly `round(net × rate)` in the invoice currency.
    pub fn check(&self, request: &TaxRequest) -> Result<(), QuoteError> {
        let asked: Vec<u32> = request.lines.iter().map(|l| l.line_no).collect();
        let got: Vec<u32> = self.lines.iter().map(|l| l.line_no).collect();
        if asked != got {
            return Err(QuoteError::Lines { asked, got });
        }
        for (req, ans) in request.lines.iter().zip(&self.lines) {
            let expected = line_tax(req.net, ans.rate);
            if ans.tax != expected {
                return Err(QuoteError::Rounding { line_no: req.line_no, net: req.net, rate: ans.rate, expected, got: ans.tax });
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rust_decimal_macros::dec;

    fn eur(a: Decimal) -> Money {
        Money::new(a, Currency::parse("EUR").unwrap_or_else(|_| unreachable!()))
    }

    #[test]
    fn when_the_tax_lands_on_a_half_cent_should_round_away_from_zero_both_ways() {
        assert_eq!(line_tax(eur(dec!(0.50)), dec!(0.19)), eur(dec!(0.10)), "0.095 → 0.10");
        assert_eq!(line_tax(eur(dec!(-0.50)), dec!(0.19)), eur(dec!(-0.10)), "a credit mirrors its debit");
        assert_eq!(line_tax(eur(dec!(1234.56)), dec!(0.19)), eur(dec!(234.57)));
    }
}
