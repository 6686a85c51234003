//! Reconciliation through the embedded runtime: each system's record is changed behind
//! o2c's back (as a user editing the PSA, the ERP or the CRM would), and the run finds every
//! change — read through the connectors, both sides' values reported — raises one
//! exception, and clears it once the systems agree again.
#![allow(missing_docs, clippy::unwrap_used, clippy::expect_used)]

use o2c_app::ports::EngagementStore;
use o2c_domain::aggregate::{AggregateKey, AggregateKind};
use o2c_domain::events::ExceptionKind;
use o2c_domain::exception_case::CaseStatus;
use o2c_domain::reconciliation::{Mismatch, ReconciliationReport};
use o2c_domain::workflow::System;
use o2c_embedded::sim::{Fault, Record};
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

/// How many `ExceptionRaised` of kind `reconciliation_mismatch` the bus carried.
async fn raised(h: &Harness) -> usize {
    h.bus_events().await.iter().filter(|(t, d)| t == "ExceptionRaised" && d["payload"]["kind"] == "reconciliation_mismatch").count()
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
