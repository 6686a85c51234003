//! Reconciliation through the embedded runtime: each system's record is changed behind
//! o2c's back (as a user editing the PSA, the ERP or the CRM would), and the run finds every
//! change — read through the connectors, both sides' values reported — raises one
//! exception, and clears it once the systems agree again. An invoice the ERP reports
//! (NetSuite's record, mapped by `mappings/netsuite/invoice.yaml`) that o2c did not issue is
//! a break until the ERP voids it.
#![allow(missing_docs, clippy::unwrap_used, clippy::expect_used)]

use o2c_app::ports::{EngagementStore, RejectionStore};
use o2c_domain::aggregate::{AggregateKey, AggregateKind};
use o2c_domain::events::ExceptionKind;
use o2c_domain::exception_case::CaseStatus;
use o2c_domain::invoicing::InvoiceStatus;
use o2c_domain::reconciliation::{ErpInvoiceRecord, Mismatch, Observed, ReconciliationReport, carry_foreign, compare, foreign_invoices};
use o2c_domain::workflow::System;
use o2c_embedded::sim::{Fault, Record};
use o2c_mapping::Registry;
use o2c_tests::delivery::{invoice_run, week};
use o2c_tests::{Harness, active_asia, envelope};
use serde_json::{Value, json};

fn request(run: &str, eng: Option<&str>) -> (&'static str, &'static str, Value) {
    let mut payload = json!({"run_id": run, "requested_by": "U-OPS-01"});
    if let Some(e) = eng {
        payload["engagement_id"] = json!(e);
    }
    let key = format!("reconcile:{run}");
    ("o2c.scheduler", "ReconciliationRequested", envelope(&key, run, Some(&key), payload))
}

/// How many `ExceptionRaised` of kind `reconciliation_mismatch` the bus carried (distinct
/// events: a redelivered input publishes its recorded outcome again, under the same id).
async fn raised(h: &Harness) -> usize {
    let events = h.bus_events().await;
    let ids: std::collections::BTreeSet<String> = events
        .iter()
        .filter(|(t, d)| t == "ExceptionRaised" && d["payload"]["kind"] == "reconciliation_mismatch")
        .map(|(_, d)| d["event_id"].to_string())
        .collect();
    ids.len()
}

async fn report(h: &Harness, eng: &str) -> ReconciliationReport {
    let loaded = h.rt.store().load_aggregates(&[AggregateKey::reconciliation(eng)]).await.unwrap();
    loaded.reconciliation(eng).cloned().unwrap_or_else(|| panic!("no reconciliation of {eng}"))
}

fn find<'a>(r: &'a ReconciliationReport, system: System, field: &str) -> &'a Mismatch {
    r.mismatches
        .iter()
        .find(|m| m.system == system && m.field == field)
        .unwrap_or_else(|| panic!("no {system:?} {field} in {:#?}", r.mismatches))
}

/// An active Asia engagement with one posted invoice (a director's week).
async fn billed(h: &Harness, opp: &str) -> (String, String) {
    let (eng, project) = active_asia(h, opp).await;
    h.send(week("EMP-1", "DIRECTOR", &format!("TE-{opp}")).iter().map(|t| t.event(&eng, &project)).collect()).await;
    h.settle().await;
    h.send(vec![invoice_run("R-1", "2027-01-31", Some(&eng), false, "U-BILL-01")]).await;
    h.settle().await;
    let loaded = h.rt.store().load_all(AggregateKind::Invoice, &eng).await.unwrap();
    let number = loaded.invoices()[0].number.clone().expect("posted");
    (eng, number)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn when_each_system_is_changed_behind_o2cs_back_should_report_every_mismatch_with_both_values_and_clear_once_repaired() {
    let h = Harness::new().await;
    let opp = "0068d00000REC001";
    let (eng, number) = billed(&h, opp).await;
    let e = h.engagement(&eng).await;
    let key = e.project_external_key().to_string();
    let schedule_id = e.billing_schedule.as_ref().unwrap().schedule_id.clone();

    h.send(vec![request("REC-1", Some(&eng))]).await;
    h.settle().await;
    let r = report(&h, &eng).await;
    assert!(r.is_clean(), "{:#?}", r.mismatches);
    assert_eq!(r.checked.len(), 5, "PSA and ERP projects, schedule, invoice, opportunity: {:?}", r.checked);

    // Changed behind o2c's back, one field in each system.
    let sims = h.rt.sims();
    assert!(sims.tamper(Record::Project(System::Psa, key.clone()), |v| v["budget"]["amount"] = json!("1.00")).await.unwrap());
    assert!(sims.tamper(Record::Project(System::Erp, key.clone()), |v| v["status"] = json!("cancelled")).await.unwrap());
    assert!(sims.tamper(Record::Schedule(schedule_id.clone()), |v| v["fixed_total"]["amount"] = json!("999.00")).await.unwrap());
    assert!(sims.tamper(Record::Invoice(number.clone()), |v| v["total"]["amount"] = json!("10.00")).await.unwrap());
    assert!(sims.tamper(Record::Opportunity(opp.into()), |v| v["engagement_status"] = json!("provisioning")).await.unwrap());

    h.send(vec![request("REC-2", Some(&eng))]).await;
    h.settle().await;
    let r = report(&h, &eng).await;
    let contract = e.contract.as_ref().unwrap();
    let psa = find(&r, System::Psa, "budget");
    assert_eq!((psa.o2c.clone(), psa.system_value.as_str()), (contract.total_value.to_string(), "SGD 1.00"));
    let erp = find(&r, System::Erp, "status");
    assert_eq!((erp.o2c.as_str(), erp.system_value.as_str()), ("active", "cancelled"));
    let sch = find(&r, System::Erp, "fixed_total");
    assert_eq!(sch.object, format!("billing schedule {}", e.erp_billing_schedule_id.clone().unwrap()));
    assert_eq!(sch.system_value, "SGD 999.00");
    let inv = find(&r, System::Erp, "total");
    assert_eq!(inv.object, format!("invoice {number}"));
    assert_eq!(inv.system_value, "SGD 10.00");
    let crm = find(&r, System::Crm, "engagement_status");
    assert_eq!((crm.o2c.as_str(), crm.system_value.as_str()), ("active", "provisioning"));
    assert_eq!(r.mismatches.len(), 5, "nothing else: {:#?}", r.mismatches);

    // One exception lists them; the operators' queue has it.
    let x = h.engagement(&eng).await.exceptions.into_iter().find(|x| x.kind == ExceptionKind::ReconciliationMismatch).unwrap();
    assert!(x.open && x.message.starts_with("5 mismatch(es)") && x.message.contains("SGD 999.00"), "{}", x.message);
    let case = h.rt.store().load_aggregates(&[AggregateKey::exception_case(x.exception_id.as_str())]).await.unwrap();
    assert_eq!(case.exception_case(x.exception_id.as_str()).map(|c| c.status), Some(CaseStatus::Open));
    // Raising the exception re-synced the CRM (the write-back rewrites the opportunity's
    // o2c fields, now with the error): the next run finds the same breaks but the CRM's.
    let (_, crm_now) = h.rt.sims().opportunity(opp).await.unwrap().unwrap();
    assert_eq!((crm_now.engagement_status.as_str(), crm_now.sync_status.as_str()), ("active", "Error"));
    h.send(vec![request("REC-3", Some(&eng))]).await;
    h.settle().await;
    let again = report(&h, &eng).await;
    assert_eq!(again.mismatches, r.mismatches.iter().filter(|m| m.system != System::Crm).cloned().collect::<Vec<_>>());
    // Its message changed (four breaks, not five): refreshed once; an unchanged break
    // raises nothing.
    assert_eq!(raised(&h).await, 2);
    h.send(vec![request("REC-3b", Some(&eng))]).await;
    h.settle().await;
    assert_eq!(raised(&h).await, 2, "an unchanged break raises nothing");
    // Repaired in each system: the next run agrees and the exception clears itself.
    let budget = contract.total_value.amount.to_string();
    sims.tamper(Record::Project(System::Psa, key.clone()), move |v| v["budget"]["amount"] = json!(budget)).await.unwrap();
    sims.tamper(Record::Project(System::Erp, key), |v| v["status"] = json!("active")).await.unwrap();
    let fixed = e.billing_schedule.as_ref().unwrap().fixed_total.amount.to_string();
    sims.tamper(Record::Schedule(schedule_id), move |v| v["fixed_total"]["amount"] = json!(fixed)).await.unwrap();
    let loaded = h.rt.store().load_all(AggregateKind::Invoice, &eng).await.unwrap();
    let total = loaded.invoices()[0].total.amount.to_string();
    sims.tamper(Record::Invoice(number), move |v| v["total"]["amount"] = json!(total)).await.unwrap();
    h.send(vec![request("REC-4", Some(&eng))]).await;
    h.settle().await;
    assert!(report(&h, &eng).await.is_clean(), "{:#?}", report(&h, &eng).await.mismatches);
    let e = h.engagement(&eng).await;
    assert!(!e.has_open_exception(), "{:?}", e.exceptions);
    let case = h.rt.store().load_aggregates(&[AggregateKey::exception_case(x.exception_id.as_str())]).await.unwrap();
    assert_eq!(case.exception_case(x.exception_id.as_str()).map(|c| c.status), Some(CaseStatus::Cleared));

    // A known difference the business accepts: raised once, waived, and the next run with
    // the same difference leaves it closed.
    sims.tamper(Record::Project(System::Psa, e.project_external_key().to_string()), |v| v["name"] = json!("Renamed in the PSA"))
        .await
        .unwrap();
    h.send(vec![request("REC-5", Some(&eng))]).await;
    h.settle().await;
    assert_eq!(raised(&h).await, 3);
    let waive = json!({"exception_id": x.exception_id, "engagement_id": eng, "action": {"type": "waive", "reason": "PSA naming convention"}, "actor": "U-CTRL-01"});
    h.send(vec![("o2c.operator", "ExceptionActionRequested", envelope("waive-1", "corr", Some("waive-1"), waive))]).await;
    h.settle().await;
    h.send(vec![request("REC-6", Some(&eng))]).await;
    h.settle().await;
    let case = h.rt.store().load_aggregates(&[AggregateKey::exception_case(x.exception_id.as_str())]).await.unwrap();
    assert_eq!(
        case.exception_case(x.exception_id.as_str()).map(|c| c.status),
        Some(CaseStatus::Waived),
        "it stays as the operator left it"
    );
    assert_eq!(raised(&h).await, 3, "a waived set of differences is not raised again");
    assert_eq!(report(&h, &eng).await.mismatches.len(), 1, "but every run still reports it");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn when_the_schedule_asks_for_every_engagement_should_reconcile_each_and_report_a_system_that_refuses_to_answer() {
    let h = Harness::new().await;
    let (a, _) = active_asia(&h, "0068d00000REC002").await;
    let (b, _) = active_asia(&h, "0068d00000REC003").await;
    // Transient read failures are retried; a refused read is itself a break.
    h.rt.sims().inject(System::Psa, "get_project", Fault::ServerError { status: 503 }, Some(1)).await.unwrap();
    let refusal = Fault::Rejected { status: 403, code: "INSUFFICIENT_ACCESS".into(), message: "integration user lost read access".into() };
    h.rt.sims().inject(System::Crm, "get_opportunity", refusal, Some(1)).await.unwrap();
    h.send(vec![request("REC-ALL", None)]).await;
    h.settle().await;
    let (ra, rb) = (report(&h, &a).await, report(&h, &b).await);
    assert_eq!((ra.run_id.as_str(), rb.run_id.as_str()), ("REC-ALL", "REC-ALL"));
    assert!(ra.mismatches.is_empty() && rb.mismatches.is_empty(), "{:#?} {:#?}", ra.mismatches, rb.mismatches);
    // The refused read is reported apart: it is the integration's problem, so it raises no
    // engagement exception (one expired token would otherwise flood the queue and the CRM).
    let refused: Vec<&Mismatch> = ra.unreadable.iter().chain(&rb.unreadable).collect();
    assert_eq!(refused.len(), 1, "{refused:#?}");
    assert_eq!((refused[0].system, refused[0].field.as_str()), (System::Crm, "readable"));
    assert!(refused[0].system_value.contains("INSUFFICIENT_ACCESS"), "{}", refused[0].system_value);
    assert!(!ra.is_clean() || !rb.is_clean());
    assert_eq!(raised(&h).await, 0);
}

/// NetSuite's record of invoice `tran_id` (internal id `id`) on `eng` in Singapore, as its
/// user event script sends it, mapped to the canonical event.
fn netsuite_invoice(eng: &str, id: &str, tran_id: &str, status: &str, modified: &str) -> (&'static str, &'static str, Value) {
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/../mappings");
    let mut doc: Value = serde_json::from_str(&std::fs::read_to_string(format!("{dir}/netsuite/invoice.example.json")).unwrap()).unwrap();
    doc["id"] = json!(id);
    doc["tranId"] = json!(tran_id);
    doc["custbody_o2c_engagement_id"] = json!(eng);
    doc["subsidiary"] = json!({"id": "5", "refName": "Northwind Partners : Northwind Partners Pte. Ltd."});
    doc["currency"] = json!({"id": "6", "refName": "SGD"});
    doc["status"] = json!({"id": "X", "refName": status});
    doc["lastModifiedDate"] = json!(modified);
    let registry = Registry::open(std::path::Path::new(dir)).unwrap();
    let mut out = registry.get("netsuite/invoice").unwrap().apply(&doc).unwrap();
    assert_eq!(out.len(), 1);
    let e = out.remove(0);
    assert_eq!((e.source.as_str(), e.detail_type.as_str()), ("o2c.erp", "ErpInvoicePosted"));
    ("o2c.erp", "ErpInvoicePosted", e.detail)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn when_the_erp_reports_an_invoice_o2c_did_not_issue_should_hold_it_as_a_break_until_the_erp_voids_it() {
    let h = Harness::new().await;
    let opp = "0068d00000REC004";
    let (eng, number) = billed(&h, opp).await;
    let sims = h.rt.sims();

    // The ERP reports o2c's own invoice (its number, o2c's id as external id): read back,
    // it agrees — nothing to flag.
    h.send(vec![netsuite_invoice(&eng, "4470", &number, "Open", "2027-02-01T08:00:00Z")]).await;
    h.settle().await;
    let r = report(&h, &eng).await;
    assert!(r.is_clean() && r.foreign_invoices.is_empty(), "{:#?}", r.mismatches);
    assert_eq!(r.run_id, "erp:netsuite:4470");

    // A billing clerk keys a second invoice for the same work in NetSuite.
    let loaded = h.rt.store().load_all(AggregateKind::Invoice, &eng).await.unwrap();
    let mut manual = (*loaded.invoices()[0]).clone();
    manual.number = Some("INV-MAN-0917".into());
    manual.invoice_id = "keyed-by-AR".into();
    assert!(sims.key_in_invoice("4471", &manual).await.unwrap());
    let reported = netsuite_invoice(&eng, "4471", "INV-MAN-0917", "Open", "2027-02-03T09:00:00Z");
    // Delivered twice (at least once): one run's worth of effect.
    h.send(vec![reported.clone(), reported]).await;
    h.settle().await;
    let r = report(&h, &eng).await;
    let m = find(&r, System::Erp, "issued_by_o2c");
    assert_eq!(m.object, "invoice INV-MAN-0917");
    assert_eq!(m.o2c, "yes");
    assert!(m.system_value.starts_with("no (ERP id 4471, total SGD "), "{}", m.system_value);
    assert_eq!(r.mismatches.len(), 1, "{:#?}", r.mismatches);
    assert_eq!(r.foreign_invoices, ["INV-MAN-0917"]);
    assert_eq!(raised(&h).await, 1, "one exception for the double billing");
    let x = h.engagement(&eng).await.exceptions.into_iter().find(|x| x.kind == ExceptionKind::ReconciliationMismatch).unwrap();
    assert!(x.open && x.message.contains("INV-MAN-0917"), "{}", x.message);

    // The daily run, with no word from the ERP, reads it again: still there, still a break.
    h.send(vec![request("REC-D1", Some(&eng))]).await;
    h.settle().await;
    let r = report(&h, &eng).await;
    assert_eq!((r.run_id.as_str(), r.foreign_invoices.clone()), ("REC-D1", vec!["INV-MAN-0917".to_owned()]));
    assert_eq!(find(&r, System::Erp, "issued_by_o2c").object, "invoice INV-MAN-0917");
    // A run whose read of it is refused proves nothing: the number is kept for the next one.
    let refusal = Fault::Rejected { status: 403, code: "INSUFFICIENT_PERMISSION".into(), message: "role lost Invoice view".into() };
    sims.inject(System::Erp, "get_invoice", refusal, Some(2)).await.unwrap();
    h.send(vec![request("REC-D2", Some(&eng))]).await;
    h.settle().await;
    let r = report(&h, &eng).await;
    assert_eq!(r.foreign_invoices, ["INV-MAN-0917"], "{r:#?}");
    assert!(r.unreadable.iter().any(|u| u.object.contains("INV-MAN-0917")), "{:#?}", r.unreadable);
    assert!(h.engagement(&eng).await.has_open_exception(), "a refused read clears nothing");
    sims.clear_faults().await.unwrap();

    // NetSuite voids it and says so: the run finds it gone and the exception clears itself.
    assert!(sims.void_invoice("INV-MAN-0917").await.unwrap());
    h.send(vec![netsuite_invoice(&eng, "4471", "INV-MAN-0917", "Voided", "2027-02-04T10:00:00Z")]).await;
    h.settle().await;
    let r = report(&h, &eng).await;
    assert!(r.is_clean() && r.foreign_invoices.is_empty(), "{r:#?}");
    let e = h.engagement(&eng).await;
    assert!(!e.has_open_exception(), "{:?}", e.exceptions);
    let case = h.rt.store().load_aggregates(&[AggregateKey::exception_case(x.exception_id.as_str())]).await.unwrap();
    assert_eq!(case.exception_case(x.exception_id.as_str()).map(|c| c.status), Some(CaseStatus::Cleared));
    // o2c's own invoice is untouched in the ERP.
    assert!(sims.invoices().await.unwrap().iter().any(|i| i.number == number));

    // An ERP invoice filed under an engagement o2c does not know is refused with its path.
    h.send(vec![netsuite_invoice("ENG-0068d00000NOPE", "4472", "INV-MAN-0918", "Open", "2027-02-05T10:00:00Z")]).await;
    h.settle().await;
    let rejected = h.rt.store().rejections(10).await.unwrap();
    let unknown = rejected.iter().find(|r| r.detail_type.as_deref() == Some("ErpInvoicePosted")).expect("rejected");
    assert!(unknown.reasons.iter().any(|i| i.field == "payload.engagement_id" && i.code == "unknown_engagement"), "{unknown:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn when_the_erp_reports_o2cs_invoice_before_o2c_records_the_posting_or_two_runs_race_should_lose_no_foreign_invoice() {
    let h = Harness::new().await;
    let (eng, number) = billed(&h, "0068d00000REC005").await;
    let e = h.engagement(&eng).await;
    let loaded = h.rt.store().load_all(AggregateKind::Invoice, &eng).await.unwrap();
    // The number is claimed before the ERP call; NetSuite's afterSubmit script reports the
    // invoice while o2c still waits for the answer: o2c's, not a second billing.
    let mut posting = (*loaded.invoices()[0]).clone();
    posting.status = InvoiceStatus::Approved;
    let held = ErpInvoiceRecord {
        number: number.clone(),
        erp_invoice_id: "4470".into(),
        invoice_id: posting.invoice_id.clone(),
        customer_id: posting.erp_customer_id.clone(),
        total: posting.total,
        tax_total: posting.tax_total,
        due_date: posting.due_date,
    };
    let seen = Observed { invoices: vec![(number.clone(), Some(held.clone()))], ..Observed::default() };
    let (_, mismatches) = compare(&e, &[&posting], None, &seen);
    assert!(mismatches.is_empty(), "{mismatches:#?}");
    assert!(foreign_invoices(&[&posting], &seen).is_empty());
    // A number o2c gave up (its posting voided after an ambiguous call that did post) yet the
    // ERP holds open: a break, not o2c's invoice.
    let mut voided = posting.clone();
    voided.status = InvoiceStatus::Voided;
    let (_, mismatches) = compare(&e, &[&voided], None, &seen);
    assert_eq!(mismatches.len(), 1, "{mismatches:#?}");
    assert_eq!((mismatches[0].field.as_str(), mismatches[0].o2c.as_str()), ("status", "voided"));
    assert_eq!(foreign_invoices(&[&voided], &seen), vec![number.clone()]);
    // Someone else's number is foreign.
    let other = Observed { invoices: vec![("INV-MAN-1".into(), Some(ErpInvoiceRecord { number: "INV-MAN-1".into(), ..held }))], ..seen };
    assert_eq!(foreign_invoices(&[&posting], &other), ["INV-MAN-1"]);
    // Two runs race: the later-stored report names an invoice this run never read → carried
    // (and this run may not say every system agrees); o2c's own number and what it read are not.
    let stored = ["INV-MAN-2".to_owned(), number.clone(), "INV-MAN-3".to_owned()];
    assert_eq!(carry_foreign(vec![], &stored, &["INV-MAN-3"], &[&posting]), (vec!["INV-MAN-2".to_owned()], true));
    assert_eq!(carry_foreign(vec!["INV-MAN-2".into()], &stored, &["INV-MAN-3"], &[&posting]), (vec!["INV-MAN-2".to_owned()], false));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn when_an_invoice_keyed_in_by_hand_holds_the_erps_next_number_should_post_the_next_one_under_a_free_number() {
    let h = Harness::new().await;
    let (first, _) = billed(&h, "0068d00000REC006").await;
    let loaded = h.rt.store().load_all(AggregateKind::Invoice, &first).await.unwrap();
    let posted = loaded.invoices()[0].erp_invoice_id.clone().expect("posted in the ERP");
    let n: u32 = posted.trim_start_matches("INV").parse().expect("the simulated ERP numbers invoices INV0000001, …");
    // A clerk keys an invoice by hand under the number the ERP would give o2c's next one.
    let mut manual = (*loaded.invoices()[0]).clone();
    manual.number = Some("INV-MAN-0918".into());
    manual.invoice_id = "keyed-by-AR".into();
    let taken = format!("INV{:07}", n + 1);
    assert!(h.rt.sims().key_in_invoice(&taken, &manual).await.unwrap());
    let (second, _) = billed(&h, "0068d00000REC007").await;
    let loaded = h.rt.store().load_all(AggregateKind::Invoice, &second).await.unwrap();
    let next = loaded.invoices()[0].erp_invoice_id.clone().expect("posted in the ERP");
    assert_eq!(next, format!("INV{:07}", n + 2), "the taken number is skipped");
    assert_eq!(h.rt.db().broken(), None, "the store goes on: no call failed after writing");
}
