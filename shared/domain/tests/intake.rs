//! Validation and enrichment of closed-won opportunities.
#![allow(missing_docs, clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::*;
use o2c_domain::intake::validate_and_enrich;
use o2c_domain::model::BillingModel;
use o2c_domain::reference::TaxRegime;
use rust_decimal_macros::dec;

fn codes(issues: &[o2c_domain::events::Issue]) -> Vec<(String, String)> {
    issues.iter().map(|i| (i.field.clone(), i.code.clone())).collect()
}

#[test]
fn when_opportunity_is_complete_should_enrich_from_master_data() {
    let c = validate_and_enrich(&globex_closed_won(), &reference()).unwrap();
    assert_eq!(c.engagement_id, "ENG-0068d00000GLBX01");
    assert_eq!(c.customer.hierarchy, vec!["CUST-1001", "CUST-1000"]);
    assert_eq!(c.customer.erp_customer_id, "C-10001");
    assert_eq!(c.legal_entity.erp_subsidiary, "SUB-300");
    assert_eq!(c.tax.regime, TaxRegime::Vat);
    assert_eq!(c.tax.rate, dec!(0.19));
    assert_eq!(c.payment_terms, "NET30", "defaults to the customer's terms");
    assert_eq!(c.project_template_id, "TPL-TRANSFORMATION", "defaults to the first offering's template");
    assert_eq!(c.total_value.amount, dec!(1250000.00));
    assert_eq!(c.service_lines, vec!["MANAGED_SERVICES", "PEOPLE", "TECHNOLOGY"]);
    assert!(c.approval_required, "TECHNOLOGY needs CLM approval by workflow rule");
    let tm = &c.lines[1];
    assert_eq!(tm.billing_model, BillingModel::TimeAndMaterials);
    assert_eq!(tm.roles[0].hourly_rate.amount, dec!(218.00), "2027 rate applies on the start date");
}

#[test]
fn when_the_crm_says_what_kind_of_sale_it_is_should_carry_it_onto_the_contract() {
    let mut opp = globex_closed_won();
    assert_eq!(validate_and_enrich(&opp, &reference()).unwrap().opportunity_type, None, "v1 senders say nothing");
    opp.opportunity_type = Some(o2c_domain::events::OpportunityType::Renewal);
    let c = validate_and_enrich(&opp, &reference()).unwrap();
    assert_eq!(c.opportunity_type, Some(o2c_domain::events::OpportunityType::Renewal));
    assert!(!c.commercial_terms_equal(&validate_and_enrich(&globex_closed_won(), &reference()).unwrap()), "a changed type is a change");
}

#[test]
fn when_many_attributes_are_missing_or_wrong_should_report_every_reason() {
    let mut opp = globex_closed_won();
    opp.name = None;
    opp.stage = Some("Negotiation".into());
    opp.close_date = Some("20-11-2026".into());
    opp.total_value.as_mut().unwrap().currency = Some("EURO".into());
    opp.delivery_region = None;
    opp.lines[0].billing_model = Some("retainer".into());
    opp.lines[2].installments = None;
    opp.lines[1].roles[0].role = Some("JUGGLER".into());
    let issues = validate_and_enrich(&opp, &reference()).unwrap_err();
    let got = codes(&issues);
    for expected in [
        ("name", "missing"),
        ("stage", "not_closed_won"),
        ("close_date", "invalid_date"),
        ("total_value.currency", "invalid_currency"),
        ("delivery_region", "missing"),
        ("lines[0].billing_model", "invalid_billing_model"),
        ("lines[2].installments", "missing"),
    ] {
        assert!(got.contains(&(expected.0.into(), expected.1.into())), "missing {expected:?} in {got:?}");
    }
    assert!(issues.len() >= 7);
}

#[test]
fn when_customer_is_on_credit_hold_should_reject_with_master_data_reason() {
    let mut opp = globex_closed_won();
    opp.account_id = Some("CUST-9001".into());
    let issues = validate_and_enrich(&opp, &reference()).unwrap_err();
    let got = codes(&issues);
    assert!(got.contains(&("account_id".into(), "customer_on_credit_hold".into())));
    // CUST-9001 contracts through the US entity, which cannot bill EUR.
    assert!(got.contains(&("total_value.currency".into(), "currency_not_billable_by_entity".into())));
}

#[test]
fn when_tax_registration_is_missing_should_reject() {
    let mut opp = globex_closed_won();
    opp.account_id = Some("CUST-9003".into());
    let got = codes(&validate_and_enrich(&opp, &reference()).unwrap_err());
    assert_eq!(got, vec![("account_id".to_string(), "missing_tax_registration".to_string())]);
}

#[test]
fn when_lines_do_not_sum_to_amount_should_reject() {
    let mut opp = globex_closed_won();
    opp.total_value.as_mut().unwrap().amount = Some("1250000.01".into());
    let got = codes(&validate_and_enrich(&opp, &reference()).unwrap_err());
    assert_eq!(got, vec![("total_value.amount".to_string(), "lines_do_not_sum_to_amount".to_string())]);
}

#[test]
fn when_amount_is_more_precise_than_currency_should_reject() {
    let mut opp = globex_closed_won();
    opp.lines[2].amount = Some("100000.005".into());
    let got = codes(&validate_and_enrich(&opp, &reference()).unwrap_err());
    assert!(got.contains(&("lines[2].amount".into(), "too_precise".into())), "{got:?}");
}

#[test]
fn when_rate_card_currency_differs_should_reject() {
    let mut opp = globex_closed_won();
    opp.rate_card_id = Some("RC-USD-2027".into());
    let got = codes(&validate_and_enrich(&opp, &reference()).unwrap_err());
    assert!(got.contains(&("rate_card_id".into(), "rate_card_currency_mismatch".into())), "{got:?}");
}

#[test]
fn when_estimate_exceeds_not_to_exceed_should_reject() {
    let mut opp = globex_closed_won();
    opp.lines[1].roles[1].hours = Some("2000".into());
    let got = codes(&validate_and_enrich(&opp, &reference()).unwrap_err());
    assert!(got.contains(&("lines[1].amount".into(), "estimate_exceeds_cap".into())), "{got:?}");
}

#[test]
fn when_installments_run_past_end_should_reject() {
    let mut opp = globex_closed_won();
    opp.lines[2].installments = Some(5);
    let got = codes(&validate_and_enrich(&opp, &reference()).unwrap_err());
    assert_eq!(got, vec![("lines[2].installments".to_string(), "installments_beyond_end".to_string())]);
}

#[test]
fn when_billing_model_not_sold_for_offering_should_reject() {
    let mut opp = globex_closed_won();
    opp.lines[1].billing_model = Some("fixed_fee".into());
    opp.lines[1].installments = Some(2);
    opp.lines[1].installment_frequency = Some("monthly".into());
    let got = codes(&validate_and_enrich(&opp, &reference()).unwrap_err());
    assert!(got.contains(&("lines[1].billing_model".into(), "billing_model_not_allowed".into())), "{got:?}");
}

#[test]
fn when_no_lines_should_reject() {
    let mut opp = globex_closed_won();
    opp.lines.clear();
    let got = codes(&validate_and_enrich(&opp, &reference()).unwrap_err());
    assert!(got.contains(&("lines".into(), "missing".into())));
}
