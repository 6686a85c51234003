//! The tax engine simulator's rules: what Avalara / Vertex / ONESOURCE decide for a
//! professional-services firm, reduced to the cases o2c's legal entities meet. The
//! jurisdictions (rates, EU membership, US services taxability) are its configuration,
//! taken from the reference data's `tax_jurisdictions`.
//!
//! | seller | buyer | rate | code | invoice wording |
//! |---|---|---|---|---|
//! | EU country X | X | X's standard rate | `VAT-STD` | |
//! | EU country X | other EU country, VAT id on file (B2B) | 0 | `VAT-RC` | reverse charge (Art. 196 Directive 2006/112/EC) |
//! | EU country X | other EU country, no VAT id (B2C) | X's standard rate | `VAT-STD` | |
//! | EU country | outside the EU | 0 | `VAT-OOS` | outside the scope of EU VAT |
//! | GB | GB | 20 % | `VAT-STD` | |
//! | GB | elsewhere | 0 | `VAT-OOS` | outside the scope of UK VAT |
//! | US | US, ship-to state S, exemption certificate | 0 | `EXEMPT` | the certificate |
//! | US | US, S taxes professional services | S's combined rate | `US-S` | |
//! | US | US, S does not tax them | 0 | `NONTAXABLE` | |
//! | US | US without a ship-to state | refused `MISSING_SHIP_TO_STATE` (422) | | |
//! | US | elsewhere | 0 | `EXPORT` | |
//! | SG | SG | 9 % | `GST-SR` | |
//! | SG | elsewhere | 0 | `GST-ZR` | zero-rated international service |
//! | JP | JP | 10 % | `JCT-STD` | |
//! | JP | elsewhere | 0 | `JCT-EXP` | export of services |
//!
//! Re-billed expenses follow the services they support. An unknown jurisdiction is
//! refused (`UNKNOWN_JURISDICTION`, 422). Tax is `round(net × rate)` per line, half away
//! from zero (`o2c_domain::tax::line_tax`), as the o2c contract requires.

use std::collections::BTreeMap;

use o2c_domain::reference::{TaxJurisdiction, TaxRegime};
use o2c_domain::tax::{TaxQuote, TaxRequest, TaxedLine, line_tax};
use rust_decimal::Decimal;

/// Why the engine refuses a request: `(HTTP status, code, message)`.
pub type TaxRefusal = (u16, &'static str, String);

/// The engine's answer for `request` under `jurisdictions`.
pub fn quote(jurisdictions: &BTreeMap<String, TaxJurisdiction>, request: &TaxRequest) -> Result<TaxQuote, TaxRefusal> {
    let unknown = |code: &str| (422, "UNKNOWN_JURISDICTION", format!("no tax configuration for jurisdiction {code}"));
    let seller = jurisdictions.get(&request.seller_country).ok_or_else(|| unknown(&request.seller_country))?;
    let buyer_eu = jurisdictions.get(&request.buyer_country).is_some_and(|j| j.eu);
    let same = request.buyer_country == request.seller_country;
    let zero = |code: &str, note: &str| (Decimal::ZERO, code.to_owned(), Some(note.to_owned()));
    let (jurisdiction, (rate, code, note)) = match seller.regime {
        TaxRegime::SalesTax => {
            if !same {
                (request.seller_country.clone(), zero("EXPORT", "Export of services: no US sales tax"))
            } else {
                let state = request.ship_to_state.as_deref().ok_or((
                    422,
                    "MISSING_SHIP_TO_STATE",
                    format!("customer {} has no US ship-to state: sales tax cannot be sourced", request.customer_id),
                ))?;
                let code = format!("US-{state}");
                let j = jurisdictions.get(&code).ok_or_else(|| unknown(&code))?;
                let answer = match &request.exemption_certificate {
                    Some(cert) => zero("EXEMPT", &format!("Exempt from {state} sales tax: certificate {cert} on file")),
                    None if !j.services_taxable => zero("NONTAXABLE", &format!("Professional services are not taxable in {state}")),
                    None => (j.rate, code.clone(), None),
                };
                (code, answer)
            }
        }
        _ if seller.eu => {
            if same || (buyer_eu && request.buyer_tax_id.is_none()) {
                (request.seller_country.clone(), (seller.rate, "VAT-STD".to_owned(), None))
            } else if buyer_eu {
                let id = request.buyer_tax_id.clone().unwrap_or_default();
                (
                    request.buyer_country.clone(),
                    zero(
                        "VAT-RC",
                        &format!("Reverse charge: VAT to be accounted for by the recipient {id} (Art. 196 Directive 2006/112/EC)"),
                    ),
                )
            } else {
                (request.seller_country.clone(), zero("VAT-OOS", "Outside the scope of EU VAT: place of supply outside the EU"))
            }
        }
        TaxRegime::Gst => {
            if same {
                (request.seller_country.clone(), (seller.rate, "GST-SR".to_owned(), None))
            } else {
                (request.seller_country.clone(), zero("GST-ZR", "Zero-rated: international service (s21(3) GST Act)"))
            }
        }
        TaxRegime::ConsumptionTax => {
            if same {
                (request.seller_country.clone(), (seller.rate, "JCT-STD".to_owned(), None))
            } else {
                (request.seller_country.clone(), zero("JCT-EXP", "Export of services: exempt from consumption tax"))
            }
        }
        _ => {
            if same {
                (request.seller_country.clone(), (seller.rate, "VAT-STD".to_owned(), None))
            } else {
                (request.seller_country.clone(), zero("VAT-OOS", &format!("Outside the scope of {} VAT", request.seller_country)))
            }
        }
    };
    Ok(TaxQuote {
        document_id: request.document_id.clone(),
        jurisdiction,
        lines: request
            .lines
            .iter()
            .map(|l| TaxedLine { line_no: l.line_no, rate, tax: line_tax(l.net, rate), code: code.clone(), note: note.clone() })
            .collect(),
    })
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use o2c_domain::money::{Currency, Money};
    use o2c_domain::tax::{SupplyKind, TaxRequestLine};
    use rust_decimal_macros::dec;

    fn request(seller: &str, buyer: &str, cur: &str) -> TaxRequest {
        let c = Currency::parse(cur).unwrap();
        TaxRequest {
            document_id: "INV-1".into(),
            date: chrono::NaiveDate::from_ymd_opt(2027, 1, 31).unwrap(),
            currency: c,
            seller_legal_entity: "LE".into(),
            seller_country: seller.into(),
            customer_id: "C".into(),
            buyer_country: buyer.into(),
            buyer_tax_id: None,
            ship_to_state: None,
            exemption_certificate: None,
            lines: vec![
                TaxRequestLine { line_no: 1, net: Money::new(dec!(1000.05), c), supply: SupplyKind::Services },
                TaxRequestLine { line_no: 2, net: Money::new(dec!(-200.50), c), supply: SupplyKind::Expenses },
            ],
        }
    }

    fn jurisdictions() -> BTreeMap<String, TaxJurisdiction> {
        crate::reference::northwind().unwrap().tax_jurisdictions
    }

    fn answer(r: &TaxRequest) -> (String, Vec<(Decimal, Decimal, String)>) {
        let q = quote(&jurisdictions(), r).unwrap();
        q.check(r).unwrap();
        (q.jurisdiction, q.lines.into_iter().map(|l| (l.rate, l.tax.amount, l.code)).collect())
    }

    #[test]
    fn when_seller_and_buyer_share_an_eu_country_should_charge_its_vat_per_line() {
        let (j, lines) = answer(&request("DE", "DE", "EUR"));
        assert_eq!(j, "DE");
        // 1000.05 × 0.19 = 190.0095 → 190.01; -200.50 × 0.19 = -38.095 → -38.10 (away from zero).
        assert_eq!(lines, vec![(dec!(0.19), dec!(190.01), "VAT-STD".into()), (dec!(0.19), dec!(-38.10), "VAT-STD".into())]);
    }

    #[test]
    fn when_an_eu_business_buys_across_a_border_should_reverse_charge() {
        let mut r = request("DE", "FR", "EUR");
        r.buyer_tax_id = Some("FR40123456789".into());
        let q = quote(&jurisdictions(), &r).unwrap();
        assert_eq!(q.jurisdiction, "FR");
        assert!(q.lines.iter().all(|l| l.rate.is_zero() && l.tax.amount.is_zero() && l.code == "VAT-RC"));
        assert!(q.lines[0].note.as_deref().unwrap().contains("Art. 196"));
        // Without a VAT id it is a B2C supply: the seller's VAT.
        r.buyer_tax_id = None;
        assert_eq!(answer(&r).1[0].0, dec!(0.19));
    }

    #[test]
    fn when_the_buyer_is_outside_the_sellers_tax_area_should_zero_rate_with_the_wording() {
        assert_eq!(answer(&request("DE", "US", "EUR")).1[0].2, "VAT-OOS");
        assert_eq!(answer(&request("GB", "DE", "GBP")).1[0].2, "VAT-OOS");
        assert_eq!(answer(&request("SG", "JP", "SGD")).1[0].2, "GST-ZR");
        assert_eq!(answer(&request("JP", "SG", "JPY")).1[0].2, "JCT-EXP");
        assert_eq!(answer(&request("US", "DE", "USD")).1[0].2, "EXPORT");
    }

    #[test]
    fn when_domestic_should_apply_uk_vat_sg_gst_and_jp_consumption_tax() {
        assert_eq!(answer(&request("GB", "GB", "GBP")).1[0], (dec!(0.20), dec!(200.01), "VAT-STD".into()));
        assert_eq!(answer(&request("SG", "SG", "SGD")).1[0], (dec!(0.09), dec!(90.00), "GST-SR".into()));
        let mut jp = request("JP", "JP", "JPY");
        jp.lines[0].net = Money::new(dec!(123455), jp.currency);
        jp.lines[1].net = Money::new(dec!(-5), jp.currency);
        // JPY has no minor unit: 12345.5 → 12346, -0.5 → -1.
        assert_eq!(answer(&jp).1.iter().map(|l| l.1).collect::<Vec<_>>(), vec![dec!(12346), dec!(-1)]);
    }

    #[test]
    fn when_us_sales_tax_should_follow_the_ship_to_state_its_taxability_and_exemptions() {
        let mut r = request("US", "US", "USD");
        let err = quote(&jurisdictions(), &r).unwrap_err();
        assert_eq!((err.0, err.1), (422, "MISSING_SHIP_TO_STATE"));
        r.ship_to_state = Some("TX".into());
        let (j, lines) = answer(&r);
        assert_eq!(j, "US-TX");
        assert_eq!(lines[0], (dec!(0.0825), dec!(82.50), "US-TX".into()), "1000.05 × 8.25 % = 82.504125 → 82.50");
        r.ship_to_state = Some("NY".into());
        assert_eq!(answer(&r).1[0].2, "NONTAXABLE", "NY does not tax consulting services");
        r.ship_to_state = Some("TX".into());
        r.exemption_certificate = Some("TX-EX-0042".into());
        let q = quote(&jurisdictions(), &r).unwrap();
        assert_eq!(q.lines[0].code, "EXEMPT");
        assert!(q.lines[0].note.as_deref().unwrap().contains("TX-EX-0042"));
        r.ship_to_state = Some("ZZ".into());
        assert_eq!(quote(&jurisdictions(), &r).unwrap_err().1, "UNKNOWN_JURISDICTION");
    }
}
