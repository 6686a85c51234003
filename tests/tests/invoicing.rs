//! Delivery to a posted invoice through the embedded runtime: staffing, approved time and
//! expenses (with a refused entry), the invoice run, tax, approval under segregation of
//! duties, gapless numbering and posting — checked in o2c's state and in the ERP.
#![allow(missing_docs, clippy::unwrap_used, clippy::expect_used)]

use o2c_app::ports::EngagementStore;
use o2c_domain::aggregate::AggregateKind;
use o2c_domain::delivery::WipShard;
use o2c_domain::invoicing::{InvoiceDoc, InvoiceStatus, Ledger, LineKind};
use o2c_embedded::sim::{Fault, System};
use o2c_tests::delivery::{Time, assigned, decision, expense, invoice_run, milestone, week};
use o2c_tests::{Harness, active_asia, active_globex, erp_refused_first_invoice};
use rust_decimal::Decimal;
use rust_decimal_macros::dec;

async fn invoices(h: &Harness, eng: &str) -> Vec<InvoiceDoc> {
    let loaded = h.rt.store().load_all(AggregateKind::Invoice, eng).await.unwrap();
    let mut v: Vec<InvoiceDoc> = loaded.invoices().into_iter().cloned().collect();
    v.sort_by_key(|i| i.invoice_id.clone());
    v
}

async fn shards(h: &Harness, eng: &str) -> Vec<WipShard> {
    h.rt.store().load_all(AggregateKind::WipShard, eng).await.unwrap().wip_shards().into_values().cloned().collect()
}

async fn ledger(h: &Harness, eng: &str) -> Ledger {
    let key = o2c_domain::aggregate::AggregateKey::ledger(eng);
    h.rt.store().load_aggregates(&[key]).await.unwrap().ledger(eng).cloned().unwrap()
}

/// Hours `resource` has booked on `day`, across engagements.
async fn booked(h: &Harness, resource: &str, day: &str) -> Decimal {
    let date = chrono::NaiveDate::parse_from_str(day, "%Y-%m-%d").unwrap();
    let key = o2c_domain::aggregate::AggregateKey::resource_day(resource, date);
    h.rt.store().load_aggregates(&[key]).await.unwrap().resource_day(resource, date).map_or(Decimal::ZERO, |d| d.others(""))
}

fn sgd(a: Decimal) -> o2c_domain::money::Money {
    o2c_domain::money::Money::new(a, o2c_domain::money::Currency::parse("SGD").unwrap())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn when_a_week_of_time_an_expense_and_an_installment_are_billed_should_post_a_gst_invoice_with_every_cent_traced() {
    let h = Harness::new().await;
    let (eng, project) = active_asia(&h, "0068d00000BILL01").await;
    let mut events: Vec<_> =
        week("EMP-1", "DIRECTOR", "TE-D").iter().chain(&week("EMP-2", "CONSULTANT", "TE-C")).map(|t| t.event(&eng, &project)).collect();
    // Not staffed: refused with its reason, never billed.
    events.push(Time::new("TE-X-1", "EMP-3", "CONSULTANT", "1", "2027-01-12", "8").event(&eng, &project));
    events.push(expense(&eng, "EXP-1", "EMP-2", "travel", "2027-01-12", ("412.80", "SGD"), None));
    h.send(events).await;
    h.settle().await;

    let all: Vec<_> = shards(&h, &eng).await;
    let accepted: usize = all.iter().map(|s| s.entries.len()).sum();
    assert_eq!(accepted, 11, "ten time entries and the expense");
    let refused: Vec<_> = all.iter().flat_map(|s| s.rejected.iter()).collect();
    assert_eq!(refused.len(), 1);
    assert_eq!(refused[0].entry_id, "TE-X-1");
    assert!(refused[0].reasons.iter().any(|r| r.code == "not_assigned"), "{:?}", refused[0].reasons);
    let announced = h.bus_events().await.into_iter().filter(|(t, _)| t == "DeliveryRejected").count();
    assert_eq!(announced, 1, "the PSA hears about the refusal");

    h.send(vec![invoice_run("R-1", "2027-01-31", Some(&eng), false, "U-BILL-01")]).await;
    h.settle().await;

    let inv = invoices(&h, &eng).await;
    assert_eq!(inv.len(), 1);
    let i = &inv[0];
    assert_eq!(i.status, InvoiceStatus::Posted, "below the SGD 60,000 threshold: straight to posting");
    assert_eq!(i.number.as_deref(), Some("LE-SG-01-000001"));
    let net = |k: LineKind| i.lines.iter().filter(|l| l.kind == k).map(|l| l.net.amount).sum::<Decimal>();
    assert_eq!(net(LineKind::Time), dec!(17960.00) + dec!(6480.00), "40 h × 449 + 40 h × 162");
    assert_eq!(net(LineKind::Expense), dec!(412.80));
    assert_eq!(net(LineKind::Installment), dec!(20000.00));
    assert_eq!(i.subtotal, sgd(dec!(44852.80)));
    // GST 9 % per line, rounded half away from zero: 1616.40 + 583.20 + 37.15 + 1800.00.
    assert_eq!(i.tax_total, sgd(dec!(4036.75)));
    assert_eq!(i.total, sgd(dec!(48889.55)));
    assert!(i.lines.iter().all(|l| l.tax_note.as_deref() == Some("GST-SR")), "{:?}", i.lines);

    // The ERP holds exactly that document under that number.
    let erp = h.rt.sims().invoices().await.unwrap();
    assert_eq!(erp.len(), 1);
    assert_eq!(erp[0].number, "LE-SG-01-000001");
    assert_eq!(erp[0].invoice.total, i.total);
    // Every billed entry records the invoice; nothing is open; the posting was announced.
    let billed: usize = shards(&h, &eng).await.iter().flat_map(|s| s.entries.values()).filter(|e| e.was_billed()).count();
    assert_eq!(billed, 11);
    let l = ledger(&h, &eng).await;
    assert!(l.open_invoices.is_empty());
    assert_eq!(l.installments.get("2-INST-1").map(String::as_str), Some(i.invoice_id.as_str()));
    let posted: Vec<_> = h.bus_events().await.into_iter().filter(|(t, _)| t == "InvoicePosted").collect();
    assert_eq!(posted.len(), 1);
    assert_eq!(posted[0].1["payload"]["number"], "LE-SG-01-000001");

    // A second run bills nothing twice.
    h.send(vec![invoice_run("R-2", "2027-01-31", Some(&eng), false, "U-BILL-01")]).await;
    h.settle().await;
    assert_eq!(invoices(&h, &eng).await.len(), 1, "nothing new to bill");
}

fn eur(a: Decimal) -> o2c_domain::money::Money {
    o2c_domain::money::Money::new(a, o2c_domain::money::Currency::parse("EUR").unwrap())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn when_an_invoice_needs_approval_should_refuse_the_requester_and_non_approvers_then_post_on_a_valid_approval() {
    let h = Harness::new().await;
    let (eng, project) = active_globex(&h, "0068d00000SOD001").await;
    h.send(vec![milestone(&eng, &project, "L1-MOBILIZE", "2027-02-10")]).await;
    h.settle().await;
    // An approver asks for the run: they may not approve its invoice.
    h.send(vec![invoice_run("R-1", "2027-02-28", Some(&eng), false, "U-FIN-DE-01")]).await;
    h.settle().await;
    let inv = invoices(&h, &eng).await;
    assert_eq!(inv.len(), 1);
    let id = inv[0].invoice_id.clone();
    assert_eq!(inv[0].status, InvoiceStatus::PendingApproval);
    assert_eq!(inv[0].subtotal, eur(dec!(115000.00)), "milestone 90,000 + first installment 25,000");
    assert_eq!(inv[0].total, eur(dec!(136850.00)), "DE VAT 19 %");
    assert!(inv[0].approval_reasons[0].contains("threshold"), "{:?}", inv[0].approval_reasons);
    assert!(h.bus_events().await.iter().any(|(t, d)| t == "InvoiceApprovalRequested" && d["payload"]["invoice_id"] == id));

    h.send(vec![decision(&eng, &id, "U-FIN-DE-01", true, 1)]).await; // requested the run
    h.settle().await;
    h.send(vec![decision(&eng, &id, "U-BILL-01", true, 2)]).await; // no approver role
    h.settle().await;
    h.send(vec![decision(&eng, &id, "U-FIN-SG-01", true, 3)]).await; // approver, other legal entity
    h.settle().await;
    let i = invoices(&h, &eng).await.remove(0);
    assert_eq!(i.status, InvoiceStatus::PendingApproval, "refused decisions change nothing");
    let refused: Vec<_> = i.approvals.iter().map(|a| a.refused.clone().unwrap_or_default()).collect();
    assert!(refused[0].contains("requested the invoice run"), "{refused:?}");
    assert!(refused[1].contains("does not hold the billing_approver role"), "{refused:?}");
    assert!(refused[2].contains("for LE-DE-01"), "{refused:?}");
    assert_eq!(h.bus_events().await.iter().filter(|(t, _)| t == "InvoiceApprovalRefused").count(), 3);
    assert!(h.rt.sims().invoices().await.unwrap().is_empty(), "nothing reaches the ERP unapproved");

    h.send(vec![decision(&eng, &id, "U-FIN-EU-02", true, 4)]).await;
    h.settle().await;
    let i = invoices(&h, &eng).await.remove(0);
    assert_eq!(i.status, InvoiceStatus::Posted);
    assert_eq!(i.number.as_deref(), Some("LE-DE-01-000001"));
    assert_eq!(i.approvals.len(), 4, "the trail keeps every decision, refused ones included");
    assert_eq!(i.approvals[3].refused, None);
    let trail: Vec<String> = h.rt.store().audit_trail(&eng).await.unwrap().iter().map(|a| a.action.to_string()).collect();
    assert_eq!(trail.iter().filter(|a| *a == "approval_refused").count(), 3, "{trail:?}");
    // A late decision on a posted invoice is ignored.
    h.send(vec![decision(&eng, &id, "U-FIN-DE-01", false, 5)]).await;
    h.settle().await;
    assert_eq!(invoices(&h, &eng).await[0].status, InvoiceStatus::Posted);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn when_an_approver_rejects_a_draft_should_release_its_lines_and_bill_them_on_the_next_invoice_without_a_gap_in_numbers() {
    let h = Harness::new().await;
    let (eng, project) = active_globex(&h, "0068d00000REJ001").await;
    h.send(vec![milestone(&eng, &project, "L1-MOBILIZE", "2027-02-10")]).await;
    h.settle().await;
    h.send(vec![invoice_run("R-1", "2027-02-28", Some(&eng), false, "U-BILL-01")]).await;
    h.settle().await;
    let first = invoices(&h, &eng).await.remove(0);
    h.send(vec![decision(&eng, &first.invoice_id, "U-FIN-DE-01", false, 1)]).await;
    h.settle().await;
    let rejected = invoices(&h, &eng).await.remove(0);
    assert_eq!(rejected.status, InvoiceStatus::Rejected);
    assert_eq!(rejected.number, None, "a rejected draft never takes a number");
    let l = ledger(&h, &eng).await;
    assert!(l.open_invoices.is_empty());
    assert_eq!(l.milestones["L1-MOBILIZE"].invoice_id, None, "the milestone is billable again");
    assert!(l.installments.is_empty());

    h.send(vec![invoice_run("R-2", "2027-02-28", Some(&eng), false, "U-BILL-01")]).await;
    h.settle().await;
    let all = invoices(&h, &eng).await;
    assert_eq!(all.len(), 2);
    let second = all.iter().find(|i| i.invoice_id != first.invoice_id).unwrap();
    assert_eq!(second.subtotal, first.subtotal, "the same lines, billed once");
    h.send(vec![decision(&eng, &second.invoice_id, "U-FIN-DE-01", true, 2)]).await;
    h.settle().await;
    let posted = invoices(&h, &eng).await.into_iter().find(|i| i.invoice_id == second.invoice_id).unwrap();
    assert_eq!(posted.number.as_deref(), Some("LE-DE-01-000001"), "numbers stay gapless");
    assert_eq!(h.rt.sims().invoices().await.unwrap().len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn when_billed_time_is_corrected_or_withdrawn_should_bill_the_difference_as_adjustments_that_their_author_may_not_approve() {
    let h = Harness::new().await;
    let (eng, project) = active_asia(&h, "0068d00000ADJ001").await;
    let week_d = week("EMP-1", "DIRECTOR", "TE-D");
    let week_c = week("EMP-2", "CONSULTANT", "TE-C");
    h.send(week_d.iter().chain(&week_c).map(|t| t.event(&eng, &project)).collect()).await;
    h.settle().await;
    h.send(vec![invoice_run("R-1", "2027-01-31", Some(&eng), false, "U-BILL-01")]).await;
    h.settle().await;
    assert_eq!(invoices(&h, &eng).await[0].status, InvoiceStatus::Posted);

    // 8 h → 6 h on the 12th (approved by an SG approver), and the 13th withdrawn.
    let mut corrected = week_d[1].clone();
    corrected.version = 2;
    corrected.hours = "6".into();
    corrected.approved_by = Some("U-FIN-SG-01".into());
    let mut withdrawn = week_c[2].clone();
    withdrawn.version = 2;
    withdrawn.status = "withdrawn";
    h.send(vec![corrected.event(&eng, &project), withdrawn.event(&eng, &project)]).await;
    h.settle().await;
    h.send(vec![invoice_run("R-2", "2027-02-14", Some(&eng), false, "U-BILL-01")]).await;
    h.settle().await;
    let second = invoices(&h, &eng).await.into_iter().find(|i| i.status != InvoiceStatus::Posted).expect("a second draft");
    let adjustments: Vec<_> = second.lines.iter().filter(|l| l.kind == LineKind::Adjustment).collect();
    assert_eq!(adjustments.len(), 2);
    let credit: Decimal = adjustments.iter().map(|l| l.net.amount).sum();
    assert_eq!(credit, dec!(-898.00) + dec!(-1296.00), "2 h × 449 credited, 8 h × 162 credited");
    assert!(second.approval_reasons.iter().any(|r| r.contains("adjustments")), "{:?}", second.approval_reasons);
    assert!(second.lines.iter().any(|l| l.kind == LineKind::Installment), "installment 2 is due on 11 Feb");

    h.send(vec![decision(&eng, &second.invoice_id, "U-FIN-SG-01", true, 1)]).await;
    h.settle().await;
    let refused = invoices(&h, &eng).await.into_iter().find(|i| i.invoice_id == second.invoice_id).unwrap();
    assert_eq!(refused.status, InvoiceStatus::PendingApproval);
    assert!(refused.approvals[0].refused.as_deref().unwrap_or_default().contains("authored an adjustment"));
    h.send(vec![decision(&eng, &second.invoice_id, "U-FIN-SG-02", true, 2)]).await;
    h.settle().await;
    let posted = invoices(&h, &eng).await.into_iter().find(|i| i.invoice_id == second.invoice_id).unwrap();
    assert_eq!(posted.status, InvoiceStatus::Posted);
    assert_eq!(posted.number.as_deref(), Some("LE-SG-01-000002"));
    // Net billed per entry now equals its approved amount: 6 h and nothing.
    let entries: Vec<_> = shards(&h, &eng).await.into_iter().flat_map(|s| s.entries.into_values()).collect();
    let d12 = entries.iter().find(|e| e.entry_id == "TE-D-12").unwrap();
    assert_eq!(d12.billed_amount(), sgd(dec!(2694.00)));
    let c13 = entries.iter().find(|e| e.entry_id == "TE-C-13").unwrap();
    assert_eq!(c13.billed_amount().amount, Decimal::ZERO);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn when_time_passes_its_not_to_exceed_cap_should_hold_the_overage_back_and_raise_an_exception() {
    let h = Harness::new().await;
    let (eng, project) = active_asia(&h, "0068d00000CAP001").await;
    // 40 days × 8 h × 449 = 143,680 against the line's 120,000 cap.
    let days: Vec<Time> = (0..40)
        .map(|d| {
            let date = chrono::NaiveDate::from_ymd_opt(2027, 1, 11).unwrap() + chrono::Duration::days(d);
            Time::new(&format!("TE-CAP-{d:02}"), "EMP-1", "DIRECTOR", "1", &date.to_string(), "8")
        })
        .collect();
    h.send(days.iter().map(|t| t.event(&eng, &project)).collect()).await;
    h.settle().await;
    h.send(vec![invoice_run("R-1", "2027-02-28", Some(&eng), false, "U-BILL-01")]).await;
    h.settle().await;
    let i = invoices(&h, &eng).await.remove(0);
    let time: Decimal = i.lines.iter().filter(|l| l.kind == LineKind::Time).map(|l| l.net.amount).sum();
    assert_eq!(time, dec!(120000.00), "billed up to the cap, never past it");
    let e = h.engagement(&eng).await;
    let ex = e.exceptions.iter().find(|x| x.kind == o2c_domain::events::ExceptionKind::CapExceeded).expect("cap exception");
    assert!(ex.open && ex.message.contains("23680.00"), "{}", ex.message);
    assert_eq!(ledger(&h, &eng).await.held_back["1"], sgd(dec!(23680.00)));
    // Approve and post, then run again: the overage stays held back, the exception is not re-announced.
    if i.status == InvoiceStatus::PendingApproval {
        h.send(vec![decision(&eng, &i.invoice_id, "U-FIN-SG-01", true, 1)]).await;
        h.settle().await;
    }
    let announced =
        || async { h.bus_events().await.iter().filter(|(t, d)| t == "ExceptionRaised" && d["payload"]["kind"] == "cap_exceeded").count() };
    let before = announced().await;
    h.send(vec![invoice_run("R-2", "2027-03-07", Some(&eng), false, "U-BILL-01")]).await;
    h.settle().await;
    let billed: Decimal = invoices(&h, &eng)
        .await
        .iter()
        .filter(|i| i.status != InvoiceStatus::Rejected)
        .flat_map(|i| i.lines.iter())
        .filter(|l| l.kind == LineKind::Time || (l.kind == LineKind::Adjustment && l.contract_line == "1"))
        .map(|l| l.net.amount)
        .sum();
    assert_eq!(billed, dec!(120000.00), "nothing past the cap on any invoice");
    assert_eq!(announced().await, before, "same exception, same message: not announced again");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn when_the_tax_engine_refuses_should_draft_nothing_raise_an_exception_and_recover_on_the_next_run() {
    let h = Harness::new().await;
    let (eng, project) = active_asia(&h, "0068d00000TAX001").await;
    h.send(week("EMP-1", "DIRECTOR", "TE-D").iter().map(|t| t.event(&eng, &project)).collect()).await;
    h.settle().await;
    let refusal = Fault::Rejected { status: 422, code: "INVALID_ADDRESS".into(), message: "customer address cannot be geocoded".into() };
    h.rt.sims().inject(System::Tax, "calculate_tax", refusal, Some(1)).await.unwrap();
    h.send(vec![invoice_run("R-1", "2027-01-31", Some(&eng), false, "U-BILL-01")]).await;
    h.settle().await;
    assert!(invoices(&h, &eng).await.is_empty(), "no invoice without tax");
    let e = h.engagement(&eng).await;
    let ex = e.exceptions.iter().find(|x| x.kind == o2c_domain::events::ExceptionKind::TaxFailed).expect("tax exception");
    assert!(ex.open && ex.message.contains("INVALID_ADDRESS"), "{}", ex.message);
    assert!(shards(&h, &eng).await.iter().flat_map(|s| s.entries.values()).all(|e| !e.was_billed()), "WIP untouched");

    h.send(vec![invoice_run("R-2", "2027-01-31", Some(&eng), false, "U-BILL-01")]).await;
    h.settle().await;
    assert_eq!(invoices(&h, &eng).await[0].status, InvoiceStatus::Posted);
    assert!(!h.engagement(&eng).await.exceptions.iter().any(|x| x.open), "closed once the draft is taxed");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn when_the_erp_refuses_a_numbered_invoice_should_keep_its_number_and_repost_it_under_the_same_number() {
    let (h, eng) = erp_refused_first_invoice("0068d00000PST001").await;
    let i = invoices(&h, &eng).await.remove(0);
    assert_eq!(i.status, InvoiceStatus::PostingFailed);
    assert_eq!(i.number.as_deref(), Some("LE-SG-01-000001"), "the number stays taken");
    let e = h.engagement(&eng).await;
    assert!(e.exceptions.iter().any(|x| x.open && x.kind == o2c_domain::events::ExceptionKind::InvoicePostingFailed));

    // The operator fixes the period and releases the invoice again.
    let release =
        serde_json::json!({"engagement_id": eng, "invoice_id": i.invoice_id, "legal_entity_id": "LE-SG-01", "customer_id": "CUST-1003"});
    let key = format!("ops:repost:{}", i.invoice_id);
    h.send(vec![("o2c.invoicing", "InvoiceReleased", o2c_tests::envelope(&key, "corr-ops", Some(&key), release))]).await;
    h.settle().await;
    let i = invoices(&h, &eng).await.remove(0);
    assert_eq!(i.status, InvoiceStatus::Posted);
    assert_eq!(i.number.as_deref(), Some("LE-SG-01-000001"));
    assert!(!h.engagement(&eng).await.exceptions.iter().any(|x| x.open));
    assert_eq!(h.rt.sims().invoices().await.unwrap().len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn when_many_engagements_of_one_legal_entity_post_at_once_should_number_them_gaplessly_even_when_answers_are_lost() {
    let h = Harness::new().await;
    let mut engs = Vec::new();
    for n in 0..6 {
        let (eng, project) = active_asia(&h, &format!("0068d00000GAP{n:03}")).await;
        h.send(week("EMP-1", "DIRECTOR", &format!("TE-{n}")).iter().map(|t| t.event(&eng, &project)).collect()).await;
        engs.push(eng);
    }
    h.settle().await;
    // Two postings lose their answer after the ERP committed: create-or-get by number.
    h.rt.sims().inject(System::Erp, "post_invoice", Fault::TimeoutAfterCommit, Some(2)).await.unwrap();
    h.send(vec![invoice_run("R-ALL", "2027-01-18", None, true, "scheduler")]).await;
    h.settle().await;
    let mut numbers = Vec::new();
    for eng in &engs {
        let i = invoices(&h, eng).await.remove(0);
        assert_eq!(i.status, InvoiceStatus::Posted, "{eng}");
        numbers.push(i.number.unwrap());
    }
    numbers.sort();
    let expected: Vec<String> = (1..=6).map(|n| format!("LE-SG-01-{n:06}")).collect();
    assert_eq!(numbers, expected, "one number each, no gap, no reuse");
    let erp = h.rt.sims().invoices().await.unwrap();
    assert_eq!(erp.iter().map(|i| i.number.clone()).collect::<Vec<_>>(), expected, "one ERP document per number");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn when_entries_break_the_rules_should_refuse_each_with_every_reason_and_accept_the_rest() {
    let h = Harness::new().await;
    let (eng, project) = active_asia(&h, "0068d00000VAL001").await;
    let (other, other_project) = active_asia(&h, "0068d00000VAL002").await;
    let mut no_approver = Time::new("TE-V-6", "EMP-1", "DIRECTOR", "1", "2027-01-20", "4");
    no_approver.version = 2;
    no_approver.approved_by = None;
    let mut zero = Time::new("TE-V-3", "EMP-1", "DIRECTOR", "1", "2027-01-19", "0");
    zero.billable = true;
    let mut wrong_project = Time::new("TE-V-7", "EMP-1", "DIRECTOR", "1", "2027-01-21", "2").event(&eng, &project);
    wrong_project.2["payload"]["time_entry"]["project_id"] = serde_json::json!("a0P999999999999");
    h.send(vec![
        // 16 h on this engagement and 10 h on another, same resource, same day: the second is refused.
        Time::new("TE-V-1", "EMP-1", "DIRECTOR", "1", "2027-01-18", "16").event(&eng, &project),
        Time::new("TE-V-2", "EMP-2", "DIRECTOR", "1", "2027-05-03", "8").event(&eng, &project), // wrong role, after the project
        zero.event(&eng, &project),
        Time::new("TE-V-4", "EMP-1", "DIRECTOR", "9", "2027-01-19", "2").event(&eng, &project), // unknown line
        no_approver.event(&eng, &project),
        wrong_project,
        expense(&eng, "EX-V-1", "EMP-1", "entertainment", "2027-01-18", ("120.00", "SGD"), None),
        expense(&eng, "EX-V-2", "EMP-1", "travel", "2027-01-18", ("120.00", "EUR"), None),
        expense(&eng, "EX-V-3", "EMP-1", "lodging", "2027-01-18", ("980.00", "SGD"), Some("1")), // capped at 400
    ])
    .await;
    h.settle().await;
    h.send(vec![Time::new("TE-V-9", "EMP-1", "DIRECTOR", "1", "2027-01-18", "10").event(&other, &other_project)]).await;
    h.settle().await;

    let reasons = |shards: &[WipShard], id: &str| -> Vec<String> {
        let mut codes: Vec<String> = shards
            .iter()
            .flat_map(|s| s.rejected.iter())
            .filter(|r| r.entry_id == id)
            .flat_map(|r| r.reasons.iter().map(|i| i.code.clone()))
            .collect();
        codes.sort();
        codes
    };
    let mine = shards(&h, &eng).await;
    assert_eq!(reasons(&mine, "TE-V-2"), vec!["not_assigned", "outside_project"]);
    assert_eq!(reasons(&mine, "TE-V-3"), vec!["hours_not_positive"]);
    assert_eq!(reasons(&mine, "TE-V-4"), vec!["unknown_line"]);
    assert_eq!(reasons(&mine, "TE-V-6"), vec!["correction_without_approver"]);
    assert_eq!(reasons(&mine, "TE-V-7"), vec!["project_mismatch"]);
    assert_eq!(reasons(&mine, "EX-V-1"), vec!["category_not_billable"]);
    assert_eq!(reasons(&mine, "EX-V-2"), vec!["currency_mismatch"]);
    assert_eq!(reasons(&shards(&h, &other).await, "TE-V-9"), vec!["over_24_hours_a_day"], "24 h a day across engagements");
    let accepted: Vec<_> = mine.iter().flat_map(|s| s.entries.values()).collect();
    assert_eq!(accepted.iter().map(|e| e.entry_id.as_str()).collect::<std::collections::BTreeSet<_>>(), ["EX-V-3", "TE-V-1"].into());
    let lodging = accepted.iter().find(|e| e.entry_id == "EX-V-3").unwrap();
    assert_eq!(lodging.amount, sgd(dec!(400.00)), "the policy caps lodging at SGD 400 per night");
    assert_eq!(h.bus_events().await.iter().filter(|(t, _)| t == "DeliveryRejected").count(), 8);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn when_entries_come_twice_late_or_out_of_order_should_keep_the_newest_version_once() {
    let h = Harness::new().await;
    let (eng, project) = active_asia(&h, "0068d00000ORD001").await;
    let v1 = Time::new("TE-O-1", "EMP-1", "DIRECTOR", "1", "2027-01-12", "8");
    let mut v2 = v1.clone();
    v2.version = 2;
    v2.hours = "5".into();
    v2.date = "2027-01-13".into(); // moved to another day
    h.send(vec![v2.event(&eng, &project)]).await;
    h.settle().await;
    h.send(vec![v1.event(&eng, &project), v1.event(&eng, &project), v2.event(&eng, &project)]).await;
    h.settle().await;
    let entries: Vec<_> = shards(&h, &eng).await.into_iter().flat_map(|s| s.entries.into_values()).collect();
    assert_eq!(entries.len(), 1);
    assert_eq!((entries[0].version, entries[0].quantity), (2, dec!(5)));
    // The resource's days follow the entry: nothing left on the 12th, 5 h on the 13th.
    assert_eq!(booked(&h, "EMP-1", "2027-01-13").await, dec!(5));
    assert_eq!(booked(&h, "EMP-1", "2027-01-12").await, Decimal::ZERO);
    // A withdrawal that overtakes the approval it withdraws: the approval stays out.
    let mut gone = Time::new("TE-O-2", "EMP-1", "DIRECTOR", "1", "2027-01-14", "8");
    gone.version = 2;
    gone.status = "withdrawn";
    h.send(vec![gone.event(&eng, &project)]).await;
    h.settle().await;
    h.send(vec![Time::new("TE-O-2", "EMP-1", "DIRECTOR", "1", "2027-01-14", "8").event(&eng, &project)]).await;
    h.settle().await;
    h.send(vec![invoice_run("R-1", "2027-01-31", Some(&eng), false, "U-BILL-01")]).await;
    h.settle().await;
    let i = invoices(&h, &eng).await.remove(0);
    let hours: Decimal = i.lines.iter().filter(|l| l.kind == LineKind::Time).map(|l| l.quantity).sum();
    assert_eq!(hours, dec!(5), "only the newest version of TE-O-1, nothing of TE-O-2");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn when_a_milestone_completes_should_bill_its_amount_once_and_refuse_unknown_milestones() {
    let h = Harness::new().await;
    let (eng, project) = active_globex(&h, "0068d00000MIL001").await;
    h.send(vec![
        milestone(&eng, &project, "L1-MOBILIZE", "2027-02-10"),
        milestone(&eng, &project, "L1-MOBILIZE", "2027-02-11"),
        milestone(&eng, &project, "L9-NOPE", "2027-02-10"),
    ])
    .await;
    h.settle().await;
    let l = ledger(&h, &eng).await;
    assert_eq!(l.milestones.len(), 1);
    assert_eq!(l.milestones["L1-MOBILIZE"].completed_on.to_string(), "2027-02-10", "the first completion stands");
    let parked = o2c_app::ports::RejectionStore::rejections(h.rt.store(), 10).await.unwrap();
    assert!(parked.iter().any(|p| p.reasons.iter().any(|r| r.code == "unknown_milestone")), "{parked:?}");
    for run in ["R-1", "R-2"] {
        h.send(vec![invoice_run(run, "2027-02-28", Some(&eng), false, "U-BILL-01")]).await;
        h.settle().await;
        if let Some(i) = invoices(&h, &eng).await.into_iter().find(|i| i.status == InvoiceStatus::PendingApproval) {
            h.send(vec![decision(&eng, &i.invoice_id, "U-FIN-DE-01", true, 1)]).await;
            h.settle().await;
        }
    }
    let milestone_lines: usize =
        invoices(&h, &eng).await.iter().flat_map(|i| i.lines.iter()).filter(|l| l.kind == LineKind::Milestone).count();
    assert_eq!(milestone_lines, 1, "billed once across runs");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn when_the_schedule_runs_should_bill_each_engagement_on_its_own_cycle_and_catch_up_a_missed_one() {
    let h = Harness::new().await;
    let (asia, asia_project) = active_asia(&h, "0068d00000CYC001").await; // weekly, started Mon 11 Jan
    let (globex, _) = active_globex(&h, "0068d00000CYC002").await; // semi-monthly, started 4 Jan
    h.send(week("EMP-1", "DIRECTOR", "TE-W").iter().map(|t| t.event(&asia, &asia_project)).collect()).await;
    h.settle().await;
    // Friday 15 January: no billing day of either cycle since they started.
    h.send(vec![invoice_run("S-0115", "2027-01-15", None, true, "scheduler")]).await;
    h.settle().await;
    assert!(invoices(&h, &asia).await.is_empty());
    assert!(invoices(&h, &globex).await.is_empty());
    let trail: Vec<String> = h.rt.store().audit_trail(&globex).await.unwrap().iter().map(|a| a.summary.clone()).collect();
    assert!(trail.iter().any(|s| s.contains("semi_monthly cycle not due on 2027-01-15")), "{trail:?}");
    // Monday 18 January: the weekly cycle is due; the 16th's semi-monthly run was missed
    // (no request that day) and is caught up now.
    h.send(vec![invoice_run("S-0118", "2027-01-18", None, true, "scheduler")]).await;
    h.settle().await;
    assert_eq!(invoices(&h, &asia).await.len(), 1);
    assert_eq!(invoices(&h, &globex).await.len(), 1, "the installment of 4 January");
    // Tuesday 19 January: both cycles ran since their last billing day.
    h.send(vec![invoice_run("S-0119", "2027-01-19", None, true, "scheduler")]).await;
    h.settle().await;
    assert_eq!(invoices(&h, &asia).await.len(), 1);
    assert_eq!(invoices(&h, &globex).await.len(), 1);
    // The same schedule tick delivered twice bills nothing twice.
    h.send(vec![invoice_run("S-0118", "2027-01-18", None, true, "scheduler")]).await;
    h.settle().await;
    assert_eq!(invoices(&h, &asia).await.len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn when_an_invoice_the_erp_refused_is_voided_should_keep_its_number_as_void_and_bill_its_lines_under_the_next_number() {
    let (h, eng) = erp_refused_first_invoice("0068d00000VOID01").await;
    let failed = invoices(&h, &eng).await.remove(0);
    assert_eq!(failed.status, InvoiceStatus::PostingFailed);
    // The period cannot be reopened: an approver voids the invoice.
    h.send(vec![decision(&eng, &failed.invoice_id, "U-FIN-SG-01", false, 1)]).await;
    h.settle().await;
    let voided = invoices(&h, &eng).await.remove(0);
    assert_eq!(voided.status, InvoiceStatus::Voided);
    assert_eq!(voided.number.as_deref(), Some("LE-SG-01-000001"), "the number stays on record, void");
    assert!(shards(&h, &eng).await.iter().flat_map(|s| s.entries.values()).all(|e| !e.was_billed()), "lines back in WIP");
    h.send(vec![invoice_run("R-2", "2027-02-01", Some(&eng), false, "U-BILL-01")]).await;
    h.settle().await;
    let all = invoices(&h, &eng).await;
    let rebilled = all.iter().find(|i| i.invoice_id != failed.invoice_id).unwrap();
    assert_eq!(rebilled.status, InvoiceStatus::Posted);
    assert_eq!(rebilled.number.as_deref(), Some("LE-SG-01-000002"));
    assert_eq!(rebilled.subtotal, failed.subtotal, "the same work and installment, billed once");
    assert_eq!(h.rt.sims().invoices().await.unwrap().len(), 1, "the ERP never held the void one");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn when_billed_work_changes_while_its_draft_waits_for_approval_should_refuse_to_post_the_stale_draft_and_redraft() {
    let h = Harness::new().await;
    let (eng, project) = active_globex(&h, "0068d00000STL001").await;
    h.send(vec![assigned(&eng, &project, "AS-STL", "EMP-1", "MANAGER", ("2027-01-04", "2027-12-17"), 1)]).await;
    let t = Time::new("TE-S-1", "EMP-1", "MANAGER", "L2", "2027-01-05", "8");
    h.send(vec![t.event(&eng, &project), milestone(&eng, &project, "L1-MOBILIZE", "2027-01-20")]).await;
    h.settle().await;
    h.send(vec![invoice_run("R-1", "2027-01-31", Some(&eng), false, "U-BILL-01")]).await;
    h.settle().await;
    let draft = invoices(&h, &eng).await.remove(0);
    assert_eq!(draft.status, InvoiceStatus::PendingApproval);
    // The PSA corrects the entry while the draft waits.
    let mut v2 = t.clone();
    v2.version = 2;
    v2.hours = "6".into();
    h.send(vec![v2.event(&eng, &project)]).await;
    h.settle().await;
    h.send(vec![decision(&eng, &draft.invoice_id, "U-FIN-DE-01", true, 1)]).await;
    h.settle().await;
    let stale = invoices(&h, &eng).await.into_iter().find(|i| i.invoice_id == draft.invoice_id).unwrap();
    assert_eq!(stale.status, InvoiceStatus::Rejected, "never posted with the old 8 h");
    assert!(stale.approvals[0].refused.as_deref().unwrap_or_default().contains("TE-S-1"));
    assert!(h.rt.sims().invoices().await.unwrap().is_empty());
    h.send(vec![invoice_run("R-2", "2027-01-31", Some(&eng), false, "U-BILL-01")]).await;
    h.settle().await;
    let redraft = invoices(&h, &eng).await.into_iter().find(|i| i.status == InvoiceStatus::PendingApproval).unwrap();
    let hours: Decimal = redraft.lines.iter().filter(|l| l.kind == LineKind::Time).map(|l| l.quantity).sum();
    assert_eq!(hours, dec!(6), "the redraft bills the corrected entry as new work");
    assert!(redraft.lines.iter().all(|l| l.kind != LineKind::Adjustment), "nothing was ever billed for it");
    h.send(vec![decision(&eng, &redraft.invoice_id, "U-FIN-DE-01", true, 2)]).await;
    h.settle().await;
    let posted = invoices(&h, &eng).await.into_iter().find(|i| i.invoice_id == redraft.invoice_id).unwrap();
    assert_eq!((posted.status, posted.number.as_deref()), (InvoiceStatus::Posted, Some("LE-DE-01-000001")));
}
