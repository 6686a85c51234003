//! The exception workflow through the embedded runtime: every exception a step raises
//! becomes a case of its own; operators assign, comment, retry, resolve and waive it
//! (segregation of duties on financial ones); a case closes itself when its condition
//! clears — checked on the case, the engagement, the bus, the ERP, the PSA and the CRM.
#![allow(missing_docs, clippy::unwrap_used, clippy::expect_used)]

use o2c_app::ports::{CaseFilter, EngagementStore, RejectionStore};
use o2c_domain::aggregate::{AggregateKey, AggregateKind};
use o2c_domain::engagement::EngagementStatus;
use o2c_domain::events::{ExceptionAction, ExceptionKind};
use o2c_domain::exception_case::{CaseStatus, ExceptionCase};
use o2c_domain::invoicing::InvoiceStatus;
use o2c_embedded::sim::{Fault, System};
use o2c_tests::delivery::{decision, invoice_run, milestone};
use o2c_tests::{
    Harness, active_asia, active_globex, asia_payload, closed_won, contract_approved, envelope, erp_refused_first_invoice, globex_payload,
};
use serde_json::{Value, json};

async fn case(h: &Harness, id: &str) -> ExceptionCase {
    let loaded = h.rt.store().load_aggregates(&[AggregateKey::exception_case(id)]).await.unwrap();
    loaded.exception_case(id).cloned().unwrap_or_else(|| panic!("no case {id}"))
}

async fn cases(h: &Harness, open_only: bool) -> Vec<ExceptionCase> {
    h.rt.store().exception_cases(&CaseFilter { open_only, status: None, limit: 0 }).await.unwrap()
}

async fn one_case(h: &Harness, kind: ExceptionKind) -> ExceptionCase {
    let all: Vec<_> = cases(h, false).await.into_iter().filter(|c| c.kind == kind).collect();
    assert_eq!(all.len(), 1, "one {kind:?} case: {all:?}");
    all.into_iter().next().unwrap()
}

/// An operator's action, as `o2c exceptions` publishes it.
fn act(c: &ExceptionCase, n: u32, actor: &str, action: ExceptionAction) -> (&'static str, &'static str, Value) {
    let key = format!("operator:{}:{}:{n}", c.exception_id, action.name());
    let payload = json!({"exception_id": c.exception_id, "engagement_id": c.engagement_id, "action": action, "actor": actor});
    ("o2c.operator", "ExceptionActionRequested", envelope(&key, &c.correlation_id, Some(&key), payload))
}

async fn crm_status(h: &Harness, opp: &str) -> (String, Option<String>) {
    let (_, crm) = h.rt.sims().opportunity(opp).await.unwrap().unwrap();
    (crm.sync_status, crm.last_error)
}

async fn invoice_status(h: &Harness, eng: &str) -> Vec<(InvoiceStatus, Option<String>)> {
    let loaded = h.rt.store().load_all(AggregateKind::Invoice, eng).await.unwrap();
    loaded.invoices().into_iter().map(|i| (i.status, i.number.clone())).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn when_a_step_raises_an_exception_should_open_a_case_with_what_where_money_correlation_and_source() {
    let (h, eng) = erp_refused_first_invoice("0068d00000EXC001").await;
    let c = one_case(&h, ExceptionKind::InvoicePostingFailed).await;
    assert_eq!(c.status, CaseStatus::Open);
    assert_eq!(c.step, "invoice-posting");
    assert_eq!(c.engagement_id, eng);
    assert!(c.message.contains("Accounting period Jan 2027 is closed"), "{}", c.message);
    assert_eq!(c.legal_entity_id.as_deref(), Some("LE-SG-01"));
    let loaded = h.rt.store().load_all(AggregateKind::Invoice, &eng).await.unwrap();
    let invoice = loaded.invoices()[0].clone();
    assert_eq!(c.amount_at_stake, Some(invoice.total), "the invoice's total is held up");
    assert_eq!(c.caused_by, vec!["U-BILL-01".to_owned()], "who asked for the run (no approval was needed)");
    // The correlation id and the source event are those of the event the step was processing.
    let released: Vec<Value> = h
        .bus_events()
        .await
        .into_iter()
        .filter(|(t, d)| t == "InvoiceReleased" && d["payload"]["invoice_id"] == invoice.invoice_id)
        .map(|(_, d)| d)
        .collect();
    assert_eq!(released.len(), 1);
    let source = c.source_event.as_ref().expect("the source event is kept");
    assert_eq!(source.detail_type, "InvoiceReleased");
    assert_eq!(source.event_id, released[0]["event_id"].as_str().unwrap());
    assert_eq!(source.payload.as_ref(), Some(&released[0]["payload"]));
    assert_eq!(c.correlation_id, released[0]["correlation_id"].as_str().unwrap());
    assert_eq!(c.history.len(), 1);
    assert_eq!(c.history[0].action, "raised");
    // The queue lists it; the CRM shows it.
    let open = cases(&h, true).await;
    assert_eq!(open.iter().map(|c| c.exception_id.as_str()).collect::<Vec<_>>(), vec![c.exception_id.as_str()]);
    assert_eq!(crm_status(&h, "0068d00000EXC001").await.0, "Error");
    // Raising it again (a redelivery of the same ExceptionRaised) changes nothing.
    let raised: Vec<Value> = h.bus_events().await.into_iter().filter(|(t, _)| t == "ExceptionRaised").map(|(_, d)| d).collect();
    h.send(vec![("o2c.exceptions", "ExceptionRaised", raised[0].clone())]).await;
    h.settle().await;
    assert_eq!(case(&h, c.exception_id.as_str()).await, c);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn when_an_operator_assigns_and_comments_should_record_both_with_actor_and_keep_the_case_open() {
    let (h, _) = erp_refused_first_invoice("0068d00000EXC002").await;
    let c = one_case(&h, ExceptionKind::InvoicePostingFailed).await;
    h.send(vec![act(&c, 1, "U-OPS-01", ExceptionAction::Assign { assignee: "U-AR-02".into() })]).await;
    h.settle().await;
    h.send(vec![act(&c, 2, "U-AR-02", ExceptionAction::Comment { text: "Asked the controller to reopen January".into() })]).await;
    h.settle().await;
    h.send(vec![act(&c, 3, "U-AR-02", ExceptionAction::Assign { assignee: "U-CTRL-01".into() })]).await;
    h.settle().await;
    let c = case(&h, c.exception_id.as_str()).await;
    assert_eq!(c.status, CaseStatus::Assigned);
    assert_eq!(c.assignee.as_deref(), Some("U-CTRL-01"));
    let h2: Vec<(&str, &str, &str)> = c.history.iter().map(|e| (e.actor.as_str(), e.action.as_str(), e.note.as_str())).collect();
    assert_eq!(
        h2[1..],
        [
            ("U-OPS-01", "assigned", "assigned to U-AR-02"),
            ("U-AR-02", "commented", "Asked the controller to reopen January"),
            ("U-AR-02", "assigned", "reassigned from U-AR-02 to U-CTRL-01"),
        ]
    );
    assert!(c.status.is_open());
    // An empty comment is refused and recorded, nothing else changes.
    h.send(vec![act(&c, 4, "U-AR-02", ExceptionAction::Comment { text: "  ".into() })]).await;
    h.settle().await;
    let after = case(&h, c.exception_id.as_str()).await;
    assert_eq!(after.history.last().map(|e| e.action.as_str()), Some("refused"));
    assert_eq!(after.assignee, c.assignee);
    let trail: Vec<String> =
        h.rt.store().audit_trail(c.engagement_id.as_str()).await.unwrap().iter().map(|a| a.action.to_string()).collect();
    assert_eq!(trail.iter().filter(|a| *a == "exception_worked").count(), 3, "{trail:?}");
    assert_eq!(trail.iter().filter(|a| *a == "exception_action_refused").count(), 1, "{trail:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn when_whoever_caused_a_financial_exception_resolves_it_should_refuse_and_another_approver_may_then_the_crm_is_synced() {
    let h = Harness::new().await;
    let opp = "0068d00000EXC003";
    let (eng, project) = active_globex(&h, opp).await;
    h.send(vec![milestone(&eng, &project, "L1-MOBILIZE", "2027-02-10")]).await;
    h.settle().await;
    h.send(vec![invoice_run("R-1", "2027-02-28", Some(&eng), false, "U-BILL-01")]).await;
    h.settle().await;
    let refusal = Fault::Rejected { status: 400, code: "INVALID_FLD_VALUE".into(), message: "Customer on credit hold".into() };
    h.rt.sims().inject(System::Erp, "post_invoice", refusal, Some(1)).await.unwrap();
    let loaded = h.rt.store().load_all(AggregateKind::Invoice, &eng).await.unwrap();
    let invoice_id = loaded.invoices()[0].invoice_id.clone();
    h.send(vec![decision(&eng, &invoice_id, "U-FIN-EU-02", true, 1)]).await;
    h.settle().await;
    assert_eq!(invoice_status(&h, &eng).await[0].0, InvoiceStatus::PostingFailed);
    let c = one_case(&h, ExceptionKind::InvoicePostingFailed).await;
    assert_eq!(c.caused_by, vec!["U-BILL-01".to_owned(), "U-FIN-EU-02".to_owned()], "the requester and the approver");
    assert_eq!(crm_status(&h, opp).await.0, "Error");

    // The approver, then the requester: refused, recorded, nothing closes.
    h.send(vec![act(&c, 1, "U-FIN-EU-02", ExceptionAction::Resolve { reason: "released the hold myself".into() })]).await;
    h.settle().await;
    h.send(vec![act(&c, 2, "U-BILL-01", ExceptionAction::Waive { reason: "not material".into() })]).await;
    h.settle().await;
    let after = case(&h, c.exception_id.as_str()).await;
    assert_eq!(after.status, CaseStatus::Open);
    let refusals: Vec<&str> = after.history.iter().filter(|e| e.action == "refused").map(|e| e.note.as_str()).collect();
    assert_eq!(refusals.len(), 2, "{:?}", after.history);
    assert!(refusals.iter().all(|r| r.contains("segregation of duties")), "{refusals:?}");
    assert!(h.engagement(&eng).await.exceptions.iter().any(|x| x.open && x.exception_id == c.exception_id));
    assert!(!h.bus_events().await.iter().any(|(t, _)| t == "ExceptionResolved"), "nothing was resolved");
    assert_eq!(crm_status(&h, opp).await.0, "Error");

    // Another approver resolves it: the case, the engagement and the CRM all follow.
    h.send(vec![act(&c, 3, "U-FIN-DE-01", ExceptionAction::Resolve { reason: "Credit hold lifted by the controller".into() })]).await;
    h.settle().await;
    let after = case(&h, c.exception_id.as_str()).await;
    assert_eq!(after.status, CaseStatus::Resolved);
    let r = after.resolution.as_ref().unwrap();
    assert_eq!((r.actor.as_deref(), r.reason.as_str()), (Some("U-FIN-DE-01"), "Credit hold lifted by the controller"));
    let x = h.engagement(&eng).await.exceptions.into_iter().find(|x| x.exception_id == c.exception_id).unwrap();
    assert!(!x.open);
    let resolved: Vec<Value> = h.bus_events().await.into_iter().filter(|(t, _)| t == "ExceptionResolved").map(|(_, d)| d).collect();
    assert_eq!(resolved.len(), 1, "{resolved:?}");
    assert_eq!(resolved[0]["payload"]["outcome"], "resolved");
    assert_eq!(resolved[0]["payload"]["actor"], "U-FIN-DE-01");
    assert_eq!(resolved[0]["correlation_id"].as_str(), Some(c.correlation_id.as_str()));
    let (status, error) = crm_status(&h, opp).await;
    assert_eq!((status.as_str(), error), ("Synced", None));
    // A closed case takes comments only.
    h.send(vec![act(&c, 4, "U-FIN-DE-01", ExceptionAction::Waive { reason: "again".into() })]).await;
    h.send(vec![act(&c, 5, "U-OPS-01", ExceptionAction::Comment { text: "Invoice reposted on 3 March".into() })]).await;
    h.settle().await;
    let last = case(&h, c.exception_id.as_str()).await;
    assert_eq!(last.status, CaseStatus::Resolved);
    let tail: Vec<&str> = last.history.iter().rev().take(2).map(|e| e.action.as_str()).collect();
    assert!(tail.contains(&"refused") && tail.contains(&"commented"), "{:?}", last.history);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn when_an_operator_waives_an_operational_exception_should_close_it_on_the_case_the_engagement_and_the_crm() {
    let h = Harness::new().await;
    h.rt.sims()
        .inject(
            System::Erp,
            "create_project",
            Fault::Rejected { status: 400, code: "INVALID_KEY_OR_REF".into(), message: "Bad PM".into() },
            None,
        )
        .await
        .unwrap();
    let opp = "0068d00000EXC004";
    let eng = format!("ENG-{opp}");
    h.send(vec![closed_won(globex_payload(opp, 1)), contract_approved(opp)]).await;
    h.settle().await;
    let c = one_case(&h, ExceptionKind::ProvisioningFailed).await;
    let value = h.engagement(&eng).await.contract.unwrap().total_value;
    assert_eq!(c.amount_at_stake, Some(value), "the contract's value");
    assert_eq!(c.compensations.len(), 1, "the PSA cancellation is on the case");
    h.send(vec![act(&c, 1, "U-OPS-01", ExceptionAction::Waive { reason: "Opportunity lost; no project needed".into() })]).await;
    h.settle().await;
    assert_eq!(case(&h, c.exception_id.as_str()).await.status, CaseStatus::Waived);
    let e = h.engagement(&eng).await;
    assert!(!e.has_open_exception(), "{:?}", e.exceptions);
    assert!(cases(&h, true).await.is_empty(), "the queue is empty");
    assert_ne!(crm_status(&h, opp).await.0, "Error");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn when_an_operator_retries_after_the_fix_should_redrive_the_source_event_under_its_correlation_and_close_on_success() {
    let opp = "0068d00000EXC005";
    let (h, eng) = erp_refused_first_invoice(opp).await;
    let c = one_case(&h, ExceptionKind::InvoicePostingFailed).await;
    assert_eq!(invoice_status(&h, &eng).await[0].0, InvoiceStatus::PostingFailed);
    // The ERP period reopened (the injected refusal was for one call): retry.
    h.send(vec![act(&c, 1, "U-OPS-01", ExceptionAction::Retry)]).await;
    h.settle().await;
    assert_eq!(invoice_status(&h, &eng).await, vec![(InvoiceStatus::Posted, Some("LE-SG-01-000001".to_owned()))]);
    assert_eq!(h.rt.sims().invoices().await.unwrap().len(), 1, "one ERP document");
    let after = case(&h, c.exception_id.as_str()).await;
    assert_eq!(after.status, CaseStatus::Cleared, "{:?}", after.history);
    assert_eq!(after.retries, 1);
    assert_eq!(after.resolution.as_ref().unwrap().actor, None, "its condition cleared: no operator closed it");
    // The re-driven event: the source payload, the case's correlation id, a new key.
    let source = c.source_event.clone().unwrap();
    let redriven: Vec<Value> = h
        .bus_events()
        .await
        .into_iter()
        .filter(|(t, d)| t == "InvoiceReleased" && d["idempotency_key"] == format!("{}#retry-{}-1", source.idempotency_key, c.exception_id))
        .map(|(_, d)| d)
        .collect();
    assert_eq!(redriven.len(), 1);
    assert_eq!(redriven[0]["correlation_id"].as_str(), Some(c.correlation_id.as_str()));
    assert_eq!(Some(&redriven[0]["payload"]), source.payload.as_ref());
    assert_ne!(redriven[0]["event_id"].as_str(), Some(source.event_id.as_str()));
    let cleared: Vec<Value> = h.bus_events().await.into_iter().filter(|(t, _)| t == "ExceptionResolved").map(|(_, d)| d).collect();
    assert_eq!(cleared.len(), 1);
    assert_eq!(cleared[0]["payload"]["outcome"], "cleared");
    assert_eq!(crm_status(&h, opp).await.0, "Synced");
    // Retrying a closed case is refused.
    h.send(vec![act(&c, 2, "U-OPS-01", ExceptionAction::Retry)]).await;
    h.settle().await;
    let last = case(&h, c.exception_id.as_str()).await;
    assert_eq!((last.retries, last.history.last().map(|e| e.action.clone())), (1, Some("refused".to_owned())));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn when_a_corrected_revision_activates_should_close_the_provisioning_case_and_bring_the_crm_back_to_synced() {
    let h = Harness::new().await;
    let fault = Fault::Rejected { status: 400, code: "INVALID_KEY_OR_REF".into(), message: "Invalid customer reference".into() };
    h.rt.sims().inject(System::Erp, "create_project", fault, None).await.unwrap();
    let opp = "0068d00000EXC006";
    let eng = format!("ENG-{opp}");
    h.send(vec![closed_won(asia_payload(opp, 1, "60000.00"))]).await;
    h.settle().await;
    let c = one_case(&h, ExceptionKind::ProvisioningFailed).await;
    assert_eq!(crm_status(&h, opp).await.0, "Error");
    h.rt.sims().clear_faults().await.unwrap();
    h.send(vec![closed_won(asia_payload(opp, 2, "60000.00"))]).await;
    h.settle().await;
    let e = h.engagement(&eng).await;
    assert_eq!(e.status, EngagementStatus::Active);
    assert!(!e.has_open_exception(), "{:?}", e.exceptions);
    let after = case(&h, c.exception_id.as_str()).await;
    assert_eq!(after.status, CaseStatus::Cleared);
    assert!(after.resolution.unwrap().reason.contains("attempt 2 succeeded"));
    let (status, error) = crm_status(&h, opp).await;
    assert_eq!((status.as_str(), error), ("Synced", None));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn when_a_dead_lettered_message_is_retried_should_process_it_under_its_own_key_and_close_the_case() {
    let h = Harness::new().await;
    h.rt.sims().inject(System::Erp, "create_project", Fault::ServerError { status: 503 }, None).await.unwrap();
    let opp = "0068d00000EXC007";
    let eng = format!("ENG-{opp}");
    h.send(vec![closed_won(asia_payload(opp, 1, "60000.00"))]).await;
    assert_eq!(h.settle().await.dead_letters, 1);
    let c = one_case(&h, ExceptionKind::DeadLettered).await;
    assert_eq!(c.step, "provision");
    h.rt.sims().clear_faults().await.unwrap();
    h.send(vec![act(&c, 1, "U-OPS-01", ExceptionAction::Retry)]).await;
    h.settle().await;
    assert_eq!(h.engagement(&eng).await.status, EngagementStatus::Active);
    assert_eq!(case(&h, c.exception_id.as_str()).await.status, CaseStatus::Cleared);
    assert_eq!(h.rt.sims().projects(System::Psa).await.unwrap().len(), 1, "the same external keys: one PSA project");
    // The message still in the DLQ is now a duplicate: a redrive changes nothing.
    assert_eq!(h.rt.bus().redrive("ProvisionDLQ", 10).await.unwrap(), 1);
    h.settle().await;
    assert_eq!(h.rt.sims().projects(System::Psa).await.unwrap().len(), 1);
    assert_eq!(crm_status(&h, opp).await.0, "Synced");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn when_a_closure_overtakes_its_raising_or_an_action_names_no_case_should_end_closed_or_parked_with_its_reason() {
    let h = Harness::new().await;
    let (eng, _) = active_asia(&h, "0068d00000EXC008").await;
    let id = format!("EXC-{eng}-TAX-INV-1");
    let raised = json!({
        "exception_id": id, "engagement_id": eng, "kind": "tax_failed", "step": "invoice-run",
        "message": "the tax engine refused", "raised_at": "2027-01-31T05:00:00Z",
    });
    let resolved = json!({
        "exception_id": id, "engagement_id": eng, "kind": "tax_failed", "raised_at": "2027-01-31T05:00:00Z",
        "outcome": "cleared", "reason": "INV-1 taxed",
    });
    h.send(vec![("o2c.exceptions", "ExceptionResolved", envelope("e-res", "corr-x", Some("res-1"), resolved))]).await;
    h.settle().await;
    h.send(vec![("o2c.exceptions", "ExceptionRaised", envelope("e-raise", "corr-x", Some("raise-1"), raised))]).await;
    h.settle().await;
    let c = case(&h, &id).await;
    assert_eq!(c.status, CaseStatus::Cleared, "the late raising does not reopen it: {:?}", c.history);
    assert_eq!((c.step.as_str(), c.message.as_str()), ("invoice-run", "the tax engine refused"), "but fills in what it says");
    assert!(cases(&h, true).await.is_empty());

    let ghost = json!({"exception_id": "EXC-NOPE", "engagement_id": eng, "action": {"type": "retry"}, "actor": "U-OPS-01"});
    h.send(vec![("o2c.operator", "ExceptionActionRequested", envelope("e-ghost", "corr-x", Some("ghost-1"), ghost))]).await;
    h.settle().await;
    let parked = h.rt.store().rejections(10).await.unwrap();
    assert_eq!(parked.len(), 1, "{parked:?}");
    assert_eq!(parked[0].step, "exceptions");
    assert_eq!(parked[0].reasons[0].code, "unknown_exception");
}
