//! The invoice run's draft, pure: what is new work, what is a remainder a cap held back,
//! what is an adjustment and who authored it, and what a correction that moves an entry to
//! another contract line bills.
#![allow(missing_docs, clippy::unwrap_used, clippy::expect_used)]

mod common;

use chrono::NaiveDate;
use common::*;
use o2c_domain::billing::{derive_milestones, derive_schedule};
use o2c_domain::delivery::{Billed, EntryKind, EntryStatus, WipEntry, WipShard};
use o2c_domain::ids::EngagementId;
use o2c_domain::intake::validate_and_enrich;
use o2c_domain::invoicing::{Draft, Ledger, LineKind, RunInputs, build_draft, mark_billed};
use o2c_domain::model::{BillingItem, BillingSchedule, Contract};
use o2c_domain::money::{Currency, Money};
use rust_decimal::Decimal;
use rust_decimal_macros::dec;

fn eur(a: Decimal) -> Money {
    Money::new(a, Currency::parse("EUR").unwrap())
}

/// Globex with a second T&M line `L4` (same roles), and its schedule with caps `cap2` / `cap4`.
fn contract_with_caps(cap2: Decimal, cap4: Decimal) -> (Contract, BillingSchedule) {
    let mut cw = globex_closed_won();
    let mut l4 = cw.lines[1].clone();
    l4.line_id = Some("L4".into());
    cw.lines.push(l4);
    cw.total_value.as_mut().unwrap().amount = Some("1500000.00".into());
    let contract = validate_and_enrich(&cw, &reference()).unwrap();
    let template = &reference().project_templates[&contract.project_template_id];
    let mut schedule = derive_schedule(&contract, &derive_milestones(&contract, template).unwrap()).unwrap();
    for item in &mut schedule.items {
        if let BillingItem::TimeAndMaterials { line_id, not_to_exceed, .. } = item {
            *not_to_exceed = eur(if line_id == "L2" { cap2 } else { cap4 });
        }
    }
    (contract, schedule)
}

fn entry(id: &str, line: &str, hours: Decimal, day: u32) -> WipEntry {
    let rate = eur(dec!(210.00));
    WipEntry {
        entry_id: id.into(),
        kind: EntryKind::Time,
        version: 1,
        status: EntryStatus::Approved,
        resource_id: "EMP-1".into(),
        role: Some("MANAGER".into()),
        category: None,
        line_id: line.into(),
        date: NaiveDate::from_ymd_opt(2027, 1, day).unwrap(),
        quantity: hours,
        unit_price: rate,
        amount: rate.times(hours).rounded(),
        billable: true,
        approved_by: "U-PM-01".into(),
        authors: vec!["U-PM-01".into()],
        billed: Vec::new(),
    }
}

fn shard(entries: Vec<WipEntry>) -> WipShard {
    let mut s = WipShard::new(EngagementId::new("ENG-0068d00000GLBX01"), 0);
    for e in entries {
        s.entries.insert(e.entry_id.clone(), e);
    }
    s
}

fn draft(contract: &Contract, schedule: &BillingSchedule, ledger: &Ledger, s: &WipShard) -> Option<Draft> {
    let inputs = RunInputs {
        contract,
        schedule,
        milestones: &[],
        ledger,
        cut_off: NaiveDate::from_ymd_opt(2027, 1, 31).unwrap(),
        issue_date: NaiveDate::from_ymd_opt(2027, 1, 31).unwrap(),
        requested_by: "U-BILL-01",
        erp_project_id: "PRJ000001",
        erp_customer_id: "C-10001",
        payment_days: 30,
    };
    build_draft(inputs, &[s]).unwrap()
}

fn time_and_adjustments(d: &Draft) -> Vec<(LineKind, String, Decimal)> {
    d.invoice
        .lines
        .iter()
        .filter(|l| matches!(l.kind, LineKind::Time | LineKind::Adjustment))
        .map(|l| (l.kind, l.contract_line.clone(), l.net.amount))
        .collect()
}

#[test]
fn when_a_cap_held_part_of_an_entry_back_and_is_raised_should_bill_the_remainder_as_time_not_as_an_adjustment() {
    // 10 h × 210 = 2,100 against a 1,000 cap: 1,000 billed, 1,100 held back.
    let (contract, schedule) = contract_with_caps(dec!(1000), dec!(100000));
    let mut s = shard(vec![entry("TE-1", "L2", dec!(10), 5)]);
    let mut ledger = Ledger::new(contract.engagement_id.clone());
    let first = draft(&contract, &schedule, &ledger, &s).unwrap();
    assert_eq!(time_and_adjustments(&first), vec![(LineKind::Time, "L2".into(), dec!(1000.00))]);
    assert_eq!(first.held_back["L2"], eur(dec!(1100.00)));
    let partial = first.invoice.lines.iter().find(|l| l.kind == LineKind::Time).unwrap();
    assert_eq!(
        partial.quantity * partial.unit_price.amount,
        partial.net.amount,
        "a partial line is priced as one unit: quantity × price = net"
    );
    mark_billed(std::slice::from_mut(&mut s), &first);
    ledger.record_draft(&first);
    ledger.open_invoices.clear();

    // Nothing more while the cap holds.
    assert!(draft(&contract, &schedule, &ledger, &s).is_none_or(|d| time_and_adjustments(&d).is_empty()));
    // The cap is raised (a change order): the remainder is new time, not an adjustment.
    let (contract, schedule) = contract_with_caps(dec!(250000), dec!(100000));
    let second = draft(&contract, &schedule, &ledger, &s).unwrap();
    assert_eq!(time_and_adjustments(&second), vec![(LineKind::Time, "L2".into(), dec!(1100.00))]);
    assert!(second.invoice.lines.iter().all(|l| l.authors.is_empty()), "a remainder has no adjustment author");
    assert!(second.invoice.lines.iter().all(|l| l.kind != LineKind::Adjustment));
}

#[test]
fn when_a_billed_entry_moves_to_another_line_should_credit_it_there_and_bill_it_on_its_new_line() {
    let (contract, schedule) = contract_with_caps(dec!(250000), dec!(100000));
    let mut billed = entry("TE-2", "L2", dec!(8), 6);
    billed.billed = vec![Billed { invoice_id: "INV-0".into(), version: 1, amount: eur(dec!(1680.00)), line_id: "L2".into() }];
    // v2: same hours and rate, charged to L4 instead (same amount, different line).
    let mut moved = billed.clone();
    moved.version = 2;
    moved.line_id = "L4".into();
    moved.approved_by = "U-FIN-DE-01".into();
    moved.authors = vec!["U-FIN-DE-01".into()];
    let ledger = Ledger::new(contract.engagement_id.clone());
    let d = draft(&contract, &schedule, &ledger, &shard(vec![moved])).unwrap();
    assert_eq!(
        time_and_adjustments(&d),
        vec![(LineKind::Adjustment, "L2".into(), dec!(-1680.00)), (LineKind::Adjustment, "L4".into(), dec!(1680.00))],
        "a zero net difference still moves the revenue between lines"
    );
    assert!(d.invoice.lines.iter().filter(|l| l.kind == LineKind::Adjustment).all(|l| l.authors == vec!["U-FIN-DE-01".to_owned()]));
    assert_eq!(d.entries["TE-2"].line_id, "L4");
    assert_eq!(d.invoice.adjustment_authors().into_iter().collect::<Vec<_>>(), vec!["U-FIN-DE-01"]);
}

#[test]
fn when_a_billed_entry_is_withdrawn_should_credit_what_was_billed_and_free_the_cap() {
    let (contract, schedule) = contract_with_caps(dec!(2000), dec!(100000));
    let mut gone = entry("TE-3", "L2", dec!(8), 7);
    gone.billed = vec![Billed { invoice_id: "INV-0".into(), version: 1, amount: eur(dec!(1680.00)), line_id: "L2".into() }];
    gone.version = 2;
    gone.status = EntryStatus::Withdrawn;
    gone.amount = eur(Decimal::ZERO);
    gone.quantity = Decimal::ZERO;
    // New work on the same day range: 8 h = 1,680 fits the 2,000 cap only once the credit frees it.
    let fresh = entry("TE-4", "L2", dec!(8), 8);
    let ledger = Ledger::new(contract.engagement_id.clone());
    let d = draft(&contract, &schedule, &ledger, &shard(vec![gone, fresh])).unwrap();
    let lines = time_and_adjustments(&d);
    assert!(lines.contains(&(LineKind::Adjustment, "L2".into(), dec!(-1680.00))), "{lines:?}");
    assert!(lines.contains(&(LineKind::Time, "L2".into(), dec!(1680.00))), "the freed cap room bills the new entry in full: {lines:?}");
    assert!(d.held_back.is_empty());
}

#[test]
fn when_no_threshold_exists_in_the_invoice_currency_should_require_approval() {
    let (contract, schedule) = contract_with_caps(dec!(250000), dec!(100000));
    let ledger = Ledger::new(contract.engagement_id.clone());
    let d = draft(&contract, &schedule, &ledger, &shard(vec![entry("TE-9", "L2", dec!(1), 5)])).unwrap();
    let small = &d.invoice;
    assert!(o2c_domain::invoicing::approval_reasons(small, &[eur(dec!(50000))]).is_empty(), "under the EUR threshold");
    let usd = Money::new(dec!(1000000), Currency::parse("USD").unwrap());
    let reasons = o2c_domain::invoicing::approval_reasons(small, &[usd]);
    assert!(reasons[0].contains("no approval threshold in EUR"), "{reasons:?}");
    assert!(!o2c_domain::invoicing::approval_reasons(small, &[]).is_empty(), "no threshold at all: approval");
}

#[test]
fn when_a_user_approves_for_one_legal_entity_should_not_approve_for_another_where_they_hold_another_role() {
    let r = reference();
    let (contract, schedule) = contract_with_caps(dec!(250000), dec!(100000));
    let ledger = Ledger::new(contract.engagement_id.clone());
    let mut invoice = draft(&contract, &schedule, &ledger, &shard(vec![entry("TE-9", "L2", dec!(1), 5)])).unwrap().invoice;
    assert_eq!(o2c_domain::workflow::invoice_approval::refusal(&invoice, "U-FIN-EU-02", &r), None, "approver for LE-DE-01");
    invoice.legal_entity_id = "LE-UK-01".into();
    let why = o2c_domain::workflow::invoice_approval::refusal(&invoice, "U-FIN-EU-02", &r).unwrap();
    assert!(why.contains("billing_approver role for LE-UK-01"), "a viewer grant for LE-UK-01 is not an approver grant: {why}");
}
