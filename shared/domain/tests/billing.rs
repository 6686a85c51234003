//! Billing-schedule derivation.
#![allow(missing_docs, clippy::unwrap_used, clippy::expect_used)]

mod common;

use chrono::NaiveDate;
use common::*;
use o2c_domain::billing::{derive_milestones, derive_schedule, fixed_contract_value};
use o2c_domain::intake::validate_and_enrich;
use o2c_domain::model::BillingItem;
use o2c_domain::money::sum;
use rust_decimal_macros::dec;

fn d(s: &str) -> NaiveDate {
    NaiveDate::parse_from_str(s, "%Y-%m-%d").unwrap()
}

#[test]
fn when_line_is_milestone_billed_should_allocate_by_template_weights() {
    let refdata = reference();
    let c = validate_and_enrich(&globex_closed_won(), &refdata).unwrap();
    let ms = derive_milestones(&c, &refdata.project_templates["TPL-TRANSFORMATION"]).unwrap();
    let got: Vec<_> = ms.iter().map(|m| (m.milestone_id.as_str(), m.amount.amount, m.due_date)).collect();
    // 347 days: 10 % → day 35, 35 % → day 121 (121.45), 75 % → day 260 (260.25), 100 % → end.
    assert_eq!(
        got,
        vec![
            ("L1-MOBILIZE", dec!(90000.00), d("2027-02-08")),
            ("L1-DESIGN", dec!(225000.00), d("2027-05-05")),
            ("L1-BUILD", dec!(360000.00), d("2027-09-21")),
            ("L1-DEPLOY", dec!(225000.00), d("2027-12-17")),
        ]
    );
}

#[test]
fn when_contract_mixes_models_should_derive_schedule_that_sums_exactly() {
    let refdata = reference();
    let c = validate_and_enrich(&globex_closed_won(), &refdata).unwrap();
    let ms = derive_milestones(&c, &refdata.project_templates["TPL-TRANSFORMATION"]).unwrap();
    let s = derive_schedule(&c, &ms).unwrap();
    assert_eq!(s.schedule_id, "BS-ENG-0068d00000GLBX01");
    assert_eq!(s.fixed_total, fixed_contract_value(&c).unwrap());
    assert_eq!(s.fixed_total.amount, dec!(1000000.00));
    assert_eq!(s.time_and_materials_cap.amount, dec!(250000.00));
    let installments: Vec<_> = s
        .items
        .iter()
        .filter_map(|i| match i {
            BillingItem::Installment { sequence, bill_date, amount, .. } => Some((*sequence, *bill_date, amount.amount)),
            _ => None,
        })
        .collect();
    assert_eq!(
        installments,
        vec![
            (1, d("2027-01-04"), dec!(25000.00)),
            (2, d("2027-04-04"), dec!(25000.00)),
            (3, d("2027-07-04"), dec!(25000.00)),
            (4, d("2027-10-04"), dec!(25000.00)),
        ]
    );
    let tm = s.items.iter().find_map(|i| match i {
        BillingItem::TimeAndMaterials { rates, first_bill_date, not_to_exceed, .. } => {
            Some((rates.clone(), *first_bill_date, *not_to_exceed))
        }
        _ => None,
    });
    let (rates, first, cap) = tm.unwrap();
    assert_eq!(first, d("2027-01-31"), "monthly in arrears from the start month");
    assert_eq!(cap.amount, dec!(250000.00));
    assert_eq!(rates.len(), 2);
    // Items are in date order.
    let dates: Vec<NaiveDate> = s
        .items
        .iter()
        .map(|i| match i {
            BillingItem::Milestone { planned_date, .. } => *planned_date,
            BillingItem::Installment { bill_date, .. } => *bill_date,
            BillingItem::TimeAndMaterials { first_bill_date, .. } => *first_bill_date,
        })
        .collect();
    let mut sorted = dates.clone();
    sorted.sort();
    assert_eq!(dates, sorted);
}

#[test]
fn when_fixed_fee_does_not_divide_evenly_should_round_each_installment_and_spread_the_remainder() {
    let refdata = reference();
    let mut opp = globex_closed_won();
    opp.lines[2].amount = Some("100000.01".into());
    opp.total_value.as_mut().unwrap().amount = Some("1250000.01".into());
    opp.lines[2].installments = Some(3);
    let c = validate_and_enrich(&opp, &refdata).unwrap();
    let s = derive_schedule(&c, &derive_milestones(&c, &refdata.project_templates["TPL-TRANSFORMATION"]).unwrap()).unwrap();
    let amounts: Vec<_> = s
        .items
        .iter()
        .filter_map(|i| match i {
            BillingItem::Installment { amount, .. } => Some(*amount),
            _ => None,
        })
        .collect();
    assert_eq!(amounts.iter().map(|m| m.amount).collect::<Vec<_>>(), vec![dec!(33333.33), dec!(33333.34), dec!(33333.34)]);
    assert_eq!(sum(c.currency, amounts).unwrap().amount, dec!(100000.01));
}

#[test]
fn when_currency_has_no_minor_unit_should_allocate_whole_yen() {
    let refdata = reference();
    let opp: o2c_domain::events::OpportunityClosedWon = serde_json::from_value(serde_json::json!({
        "opportunity_id": "0068d00000UMBR01", "revision": 1, "name": "Umbrella GxP audit readiness", "stage": "Closed Won",
        "account_id": "CUST-3001", "close_date": "2026-11-02", "total_value": {"amount": "10000001", "currency": "JPY"},
        "delivery_region": "APAC-JP", "start_date": "2027-01-11", "end_date": "2027-06-30",
        "lines": [{"line_id": "1", "service_offering_id": "SVC-AUDIT", "billing_model": "milestone", "amount": "10000001"}]
    }))
    .unwrap();
    let c = validate_and_enrich(&opp, &refdata).unwrap();
    let ms = derive_milestones(&c, &refdata.project_templates["TPL-ADVISORY"]).unwrap();
    assert_eq!(ms.iter().map(|m| m.amount.amount).collect::<Vec<_>>(), vec![dec!(4000000), dec!(6000001)]);
}
