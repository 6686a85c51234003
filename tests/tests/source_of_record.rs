//! Source-of-record rules end to end through the embedded runtime: once the CLM signed and
//! the project exists, a CRM revision that re-prices and renames the engagement changes
//! nothing in the PSA, the ERP or o2c's contract; it is audited, raises a data-stewardship
//! exception the CRM shows, and a later revision that agrees with the owners closes it.
#![allow(missing_docs, clippy::unwrap_used, clippy::expect_used)]

use o2c_app::ports::EngagementStore;
use o2c_domain::events::ExceptionKind;
use o2c_embedded::sim::System;
use o2c_tests::{Harness, active_globex, closed_won, globex_payload};
use rust_decimal_macros::dec;
use serde_json::json;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn when_the_crm_reprices_a_signed_engagement_should_change_no_system_and_raise_a_stewardship_exception_until_it_agrees() {
    let h = Harness::new().await;
    let opp = "0068d00000SOR001";
    let (eng, project) = active_globex(&h, opp).await;
    let schedule_before = h.rt.sims().billing_schedules().await.unwrap();

    // Revision 2, sent as contract version 2: +50,000.00 on the fixed fee, a new name.
    let mut r2 = globex_payload(opp, 2);
    let p = r2.as_object_mut().unwrap();
    p.remove("amount");
    p.remove("currency");
    p.insert("total_value".into(), json!({"amount": "1300000.00", "currency": "EUR"}));
    p.insert("name".into(), json!("Globex S/4HANA transformation (extended)"));
    r2["lines"][2]["amount"] = json!("150000.00");
    let mut event = closed_won(r2);
    event.2["event_version"] = json!("2");
    h.send(vec![event]).await;
    let report = h.settle().await;
    assert_eq!((report.dead_letters, report.parked), (0, 0), "{report:?}");

    // o2c's contract, the PSA and the ERP are as the CLM signed them.
    let e = h.engagement(&eng).await;
    let c = e.contract.as_ref().unwrap();
    assert_eq!((c.total_value.amount, c.revision), (dec!(1250000.00), 2));
    assert_eq!(c.name, "Globex S/4HANA transformation");
    assert!(e.pending_change.is_none());
    let psa = h.rt.sims().projects(System::Psa).await.unwrap();
    assert_eq!(psa.len(), 1);
    assert_eq!((psa[0].project_id.as_str(), psa[0].spec.name.as_str()), (project.as_str(), "Globex S/4HANA transformation"));
    assert_eq!(h.rt.sims().projects(System::Erp).await.unwrap().len(), 1);
    assert_eq!(h.rt.sims().billing_schedules().await.unwrap(), schedule_before, "the ERP's billing schedule is untouched");

    // Audited, raised, announced, and shown in the CRM.
    let ex = e.exceptions.iter().find(|x| x.kind == ExceptionKind::DataStewardship && x.open).expect("stewardship exception");
    assert!(ex.message.contains("total_value EUR 1250000.00 → EUR 1300000.00 (owned by the clm)"), "{}", ex.message);
    let trail = h.rt.store().audit_trail(&eng).await.unwrap();
    let entry = trail.iter().find(|a| a.action.as_str() == "attributes_not_applied").expect("audited");
    assert!(entry.summary.contains("name, total_value, lines"), "{}", entry.summary);
    let raised =
        h.bus_events().await.into_iter().filter(|(t, d)| t == "ExceptionRaised" && d["payload"]["kind"] == "data_stewardship").count();
    assert_eq!(raised, 1);
    let (_, crm) = h.rt.sims().opportunity(opp).await.unwrap().unwrap();
    assert_eq!((crm.sync_status.as_str(), crm.engagement_status.as_str()), ("Error", "active"));
    assert!(crm.last_error.as_deref().unwrap_or_default().contains("not applied"), "{:?}", crm.last_error);

    // The CRM is corrected (revision 3, the signed terms, sent as version 1): closed, cleared.
    h.send(vec![closed_won(globex_payload(opp, 3))]).await;
    h.settle().await;
    let e = h.engagement(&eng).await;
    assert!(e.exceptions.iter().filter(|x| x.kind == ExceptionKind::DataStewardship).all(|x| !x.open));
    let resolved =
        h.bus_events().await.into_iter().filter(|(t, d)| t == "ExceptionResolved" && d["payload"]["kind"] == "data_stewardship").count();
    assert_eq!(resolved, 1);
    let (_, crm) = h.rt.sims().opportunity(opp).await.unwrap().unwrap();
    assert_eq!((crm.sync_status.as_str(), crm.last_error), ("Synced", None));
    assert_eq!(h.rt.sims().projects(System::Psa).await.unwrap().len(), 1);
}
