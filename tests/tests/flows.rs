//! End-to-end flows through the embedded runtime: the template's rules, queues and
//! functions, the SQLite store and the CRM / PSA / ERP simulators.
#![allow(missing_docs, clippy::unwrap_used, clippy::expect_used)]

use o2c_app::ports::{EngagementFilter, EngagementStore, RejectionStore};
use o2c_domain::engagement::EngagementStatus;
use o2c_domain::events::ExceptionKind;
use o2c_embedded::sim::{Fault, System};
use o2c_tests::{Harness, asia_payload, closed_won, contract_approved, envelope, globex_payload};
use rust_decimal_macros::dec;
use serde_json::json;

async fn count_projects(h: &Harness, system: System, key: &str) -> usize {
    h.rt.sims().projects(system).await.unwrap().iter().filter(|p| p.external_key == key).count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn when_closed_won_is_approved_should_activate_project_in_psa_and_erp_and_sync_crm() {
    let h = Harness::new().await;
    let opp = "0068d00000HAPPY1";
    let eng = format!("ENG-{opp}");
    h.send(vec![closed_won(globex_payload(opp, 1))]).await;
    h.settle().await;
    assert_eq!(h.engagement(&eng).await.status, EngagementStatus::AwaitingApproval, "TECHNOLOGY needs CLM approval first");
    assert_eq!(count_projects(&h, System::Psa, &eng).await, 0, "nothing provisioned before approval");

    h.send(vec![contract_approved(opp)]).await;
    let report = h.settle().await;
    assert_eq!(report.dead_letters, 0);

    let e = h.engagement(&eng).await;
    assert_eq!(e.status, EngagementStatus::Active);
    let psa = h.rt.sims().projects(System::Psa).await.unwrap();
    let erp = h.rt.sims().projects(System::Erp).await.unwrap();
    assert_eq!((psa.len(), erp.len()), (1, 1));
    assert_eq!(e.psa_project_id.as_deref(), Some(psa[0].project_id.as_str()));
    assert_eq!(e.erp_project_id.as_deref(), Some(erp[0].project_id.as_str()));
    assert_eq!(erp[0].spec.subsidiary, "SUB-300");
    assert_eq!(erp[0].spec.customer_id, "C-10001", "ERP gets the ERP customer number");
    assert_eq!(psa[0].spec.template, "PSA-TPL-XFORM");
    assert_eq!(psa[0].spec.milestones.len(), 4, "milestones are created with the project");
    let schedules = h.rt.sims().billing_schedules().await.unwrap();
    assert_eq!(schedules.len(), 1);
    assert_eq!(schedules[0].1, erp[0].project_id);
    assert_eq!(schedules[0].2.fixed_total.amount, dec!(1000000.00));
    assert_eq!(e.erp_billing_schedule_id.as_deref(), Some(schedules[0].0.as_str()));

    // CRM shows the result.
    let (_, crm) = h.rt.sims().opportunity(opp).await.unwrap().expect("CRM updated");
    assert_eq!((crm.sync_status.as_str(), crm.engagement_status.as_str()), ("Synced", "active"));
    assert_eq!(crm.erp_project_id, e.erp_project_id);

    // Audit trail: every step, in causal order, all under the flow's correlation id.
    let trail = h.rt.store().audit_trail(&eng).await.unwrap();
    let actions: Vec<&str> = trail.iter().map(|a| a.action.as_str()).collect();
    let pos = |a: &str| actions.iter().position(|x| *x == a).unwrap_or_else(|| panic!("no {a} in {actions:?}"));
    assert!(pos("contract_created") < pos("awaiting_approval"));
    assert!(pos("awaiting_approval") < pos("provisioned"));
    assert!(pos("provisioned") < pos("activated"));
    assert!(actions.contains(&"crm_updated"));
    assert!(trail.iter().all(|a| a.correlation_id == format!("corr-{opp}")));

    // Every emitted event carries the correlation id and its cause.
    for (dt, detail) in h.bus_events().await {
        assert_eq!(detail["correlation_id"], format!("corr-{opp}"), "{dt}");
        if !["OpportunityClosedWon", "ContractApproved"].contains(&dt.as_str()) {
            assert!(detail["causation_id"].is_string(), "{dt} has no causation id");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn when_no_approval_rule_applies_should_go_straight_to_active() {
    let h = Harness::new().await;
    h.send(vec![closed_won(asia_payload("0068d00000ASIA01", 1, "60000.00"))]).await;
    h.settle().await;
    let e = h.engagement("ENG-0068d00000ASIA01").await;
    assert_eq!(e.status, EngagementStatus::Active);
    assert!(e.approval.is_none());
    let s = e.billing_schedule.expect("schedule");
    assert_eq!(s.fixed_total.amount, dec!(60000.00));
    assert_eq!(s.time_and_materials_cap.amount, dec!(120000.00));
    assert_eq!(s.items.len(), 4, "3 monthly installments + 1 T&M item");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn when_attributes_are_missing_should_reject_with_every_reason_and_create_nothing() {
    let h = Harness::new().await;
    let opp = "0068d00000BAD001";
    let mut p = globex_payload(opp, 1);
    for k in ["name", "close_date", "delivery_region"] {
        p.as_object_mut().unwrap().remove(k);
    }
    p["account_id"] = json!("CUST-9001");
    p["currency"] = json!("EURO");
    p["lines"][0]["billing_model"] = json!("retainer");
    p["lines"][2].as_object_mut().unwrap().remove("installments");
    h.send(vec![closed_won(p)]).await;
    h.settle().await;

    let e = h.engagement(&format!("ENG-{opp}")).await;
    assert_eq!(e.status, EngagementStatus::Rejected);
    let reasons = e.rejection.expect("rejection stored").reasons;
    let codes: Vec<(String, String)> = reasons.iter().map(|r| (r.field.clone(), r.code.clone())).collect();
    for expected in [
        ("name", "missing"),
        ("close_date", "missing"),
        ("delivery_region", "missing"),
        ("account_id", "customer_on_credit_hold"),
        // Intake's own checks name the latest contract's paths, whatever version came in.
        ("total_value.currency", "invalid_currency"),
        ("lines[0].billing_model", "invalid_billing_model"),
        ("lines[2].installments", "missing"),
    ] {
        assert!(codes.contains(&(expected.0.into(), expected.1.into())), "missing {expected:?} in {codes:?}");
    }
    // The rejection is an event with every reason, queryable by operators, and on the CRM.
    let rejected: Vec<_> = h.bus_events().await.into_iter().filter(|(t, _)| t == "EngagementRejected").collect();
    assert_eq!(rejected.len(), 1);
    assert_eq!(rejected[0].1["payload"]["reasons"].as_array().unwrap().len(), reasons.len());
    let listed = h.rt.store().list(&EngagementFilter { status: Some("rejected".into()), ..Default::default() }).await.unwrap();
    assert_eq!(listed.len(), 1);
    let (_, crm) = h.rt.sims().opportunity(opp).await.unwrap().unwrap();
    assert_eq!(crm.sync_status, "Error");
    assert!(crm.last_error.unwrap().contains("credit hold"));
    assert!(h.rt.sims().projects(System::Psa).await.unwrap().is_empty());
    assert!(h.rt.sims().projects(System::Erp).await.unwrap().is_empty());

    // A corrected revision goes through.
    let mut fixed = globex_payload(opp, 2);
    fixed["account_id"] = json!("CUST-1001");
    h.send(vec![closed_won(fixed), contract_approved(opp)]).await;
    h.settle().await;
    let e = h.engagement(&format!("ENG-{opp}")).await;
    assert_eq!(e.status, EngagementStatus::Active);
    assert!(e.rejection.is_none());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn when_closed_won_is_delivered_three_times_out_of_order_should_create_one_contract_and_one_project_per_system() {
    let h = Harness::new().await;
    let opp = "0068d00000DUP001";
    let eng = format!("ENG-{opp}");
    let cw = closed_won(globex_payload(opp, 1));
    // Approval before the closed-won, then the closed-won three times in one burst, processed concurrently.
    h.send(vec![contract_approved(opp)]).await;
    h.send(vec![cw.clone(), cw.clone(), cw.clone()]).await;
    h.settle().await;
    // A late copy after activation, and a redelivered ProjectProvisioned (same event, same key).
    h.send(vec![cw.clone()]).await;
    let provisioned = h.bus_events().await.into_iter().find(|(t, _)| t == "ProjectProvisioned").expect("provisioned").1;
    h.send(vec![("o2c.provisioning", "ProjectProvisioned", provisioned)]).await;
    h.settle().await;

    let e = h.engagement(&eng).await;
    assert_eq!(e.status, EngagementStatus::Active);
    assert_eq!(count_projects(&h, System::Psa, &eng).await, 1);
    assert_eq!(count_projects(&h, System::Erp, &eng).await, 1);
    assert_eq!(h.rt.sims().billing_schedules().await.unwrap().len(), 1);
    let creates =
        h.rt.sims().calls().await.unwrap().into_iter().filter(|c| c.operation == "create_project" && c.outcome == "created").count();
    assert_eq!(creates, 2, "one creation per system");
    let trail = h.rt.store().audit_trail(&eng).await.unwrap();
    assert_eq!(trail.iter().filter(|a| a.action == "contract_created").count(), 1, "exactly one contract");
    assert_eq!(trail.iter().filter(|a| a.action == "provisioned").count(), 1);
    assert_eq!(trail.iter().filter(|a| a.action == "activated").count(), 1);
    assert!(h.rt.store().rejections(10).await.unwrap().is_empty());
    assert_eq!(h.rt.dead_letters().await.unwrap(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn when_connectors_fail_transiently_should_retry_to_success_without_duplicates() {
    let h = Harness::new().await;
    let sims = h.rt.sims();
    sims.inject(System::Psa, "create_project", Fault::ServerError { status: 503 }, Some(2)).await.unwrap();
    sims.inject(System::Erp, "create_project", Fault::Timeout, Some(1)).await.unwrap();
    sims.inject(System::Erp, "create_project", Fault::TimeoutAfterCommit, Some(1)).await.unwrap();
    sims.inject(System::Erp, "create_billing_schedule", Fault::RateLimited { retry_after_ms: 20 }, Some(1)).await.unwrap();
    sims.inject(System::Erp, "create_billing_schedule", Fault::TimeoutAfterCommit, Some(1)).await.unwrap();
    sims.inject(System::Crm, "update_opportunity", Fault::ServerError { status: 502 }, Some(3)).await.unwrap();
    let opp = "0068d00000FLAKY1";
    h.send(vec![closed_won(globex_payload(opp, 1)), contract_approved(opp)]).await;
    let report = h.settle().await;

    assert_eq!(report.retried, 0, "every fault was absorbed inside its invocation, no receive used: {report:?}");
    assert_eq!(report.dead_letters, 0);
    let eng = format!("ENG-{opp}");
    assert_eq!(h.engagement(&eng).await.status, EngagementStatus::Active);
    assert_eq!(count_projects(&h, System::Psa, &eng).await, 1);
    assert_eq!(count_projects(&h, System::Erp, &eng).await, 1, "the lost response was recovered by create-or-get");
    assert_eq!(h.rt.sims().billing_schedules().await.unwrap().len(), 1);
    let (_, crm) = h.rt.sims().opportunity(opp).await.unwrap().unwrap();
    assert_eq!(crm.sync_status, "Synced");
    let faults = h.rt.sims().calls().await.unwrap().into_iter().filter(|c| c.outcome.starts_with("fault")).count();
    assert_eq!(faults, 7, "every injected pre-commit fault was hit");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn when_erp_rejects_the_project_should_cancel_the_psa_project_and_raise_an_exception() {
    let h = Harness::new().await;
    h.rt.sims()
        .inject(
            System::Erp,
            "create_project",
            Fault::Rejected { status: 400, code: "INVALID_KEY_OR_REF".into(), message: "Invalid project manager reference".into() },
            None,
        )
        .await
        .unwrap();
    let opp = "0068d00000ERPNO1";
    let eng = format!("ENG-{opp}");
    h.send(vec![closed_won(globex_payload(opp, 1)), contract_approved(opp)]).await;
    let report = h.settle().await;
    assert_eq!(report.dead_letters, 0, "a permanent failure is handled, not retried into the DLQ");

    let e = h.engagement(&eng).await;
    assert_eq!(e.status, EngagementStatus::ProvisioningFailed);
    let psa = h.rt.sims().projects(System::Psa).await.unwrap();
    assert_eq!(psa.len(), 1);
    assert_eq!(psa[0].status, "cancelled", "PSA project compensated");
    let ex = e.exceptions.iter().find(|x| x.kind == ExceptionKind::ProvisioningFailed).expect("exception recorded");
    assert!(ex.open);
    assert!(ex.message.contains("INVALID_KEY_OR_REF"));
    assert_eq!(ex.compensations.len(), 1);
    assert_eq!((ex.compensations[0].object_id.as_str(), ex.compensations[0].outcome.as_str()), (psa[0].project_id.as_str(), "done"));
    // Not lost: the exception is an event, listed for operators and shown on the CRM.
    assert!(h.bus_events().await.iter().any(|(t, d)| t == "ExceptionRaised" && d["payload"]["kind"] == "provisioning_failed"));
    let open = h.rt.store().list(&EngagementFilter { open_exceptions: true, ..Default::default() }).await.unwrap();
    assert_eq!(open.iter().map(|s| s.engagement_id.as_str()).collect::<Vec<_>>(), vec![eng.as_str()]);
    let (_, crm) = h.rt.sims().opportunity(opp).await.unwrap().unwrap();
    assert_eq!(crm.sync_status, "Error");
    assert!(crm.last_error.unwrap().contains("ERP refused the project"));

    // The fix: ERP data corrected, sales re-sends the opportunity; provisioning runs again
    // under a new external key (the cancelled PSA project is not reused).
    h.rt.sims().clear_faults().await.unwrap();
    h.send(vec![closed_won(globex_payload(opp, 2))]).await;
    h.settle().await;
    let e = h.engagement(&eng).await;
    assert_eq!(e.status, EngagementStatus::Active);
    assert_eq!(e.provisioning_attempt, 2);
    let psa = h.rt.sims().projects(System::Psa).await.unwrap();
    assert_eq!(
        psa.iter().map(|p| (p.external_key.as_str(), p.status.as_str())).collect::<Vec<_>>(),
        vec![(eng.as_str(), "cancelled"), (format!("{eng}~2").as_str(), "active")]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn when_changed_closed_won_arrives_after_provisioning_should_raise_a_change_order() {
    let h = Harness::new().await;
    let opp = "0068d00000CHG001";
    let eng = format!("ENG-{opp}");
    h.send(vec![closed_won(asia_payload(opp, 1, "60000.00"))]).await;
    h.settle().await;
    h.send(vec![closed_won(asia_payload(opp, 2, "75000.00"))]).await;
    h.settle().await;
    let e = h.engagement(&eng).await;
    assert_eq!(e.status, EngagementStatus::Active, "the live project is untouched");
    assert_eq!(e.contract.as_ref().unwrap().total_value.amount, dec!(180000.00));
    assert_eq!(e.pending_change.as_ref().unwrap().total_value.amount, dec!(195000.00));
    let ex = e.exceptions.iter().find(|x| x.kind == ExceptionKind::ChangeOrderRequired).expect("change order exception");
    assert!(ex.message.contains("SGD 180000.00 → SGD 195000.00"), "{}", ex.message);
    assert_eq!(count_projects(&h, System::Psa, &eng).await, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn when_changed_closed_won_arrives_before_provisioning_should_amend_the_contract() {
    let h = Harness::new().await;
    let opp = "0068d00000AMD001";
    let eng = format!("ENG-{opp}");
    h.send(vec![closed_won(globex_payload(opp, 1))]).await;
    h.settle().await;
    let mut r2 = globex_payload(opp, 2);
    r2["amount"] = json!("1300000.00");
    r2["lines"][2]["amount"] = json!("150000.00");
    h.send(vec![closed_won(r2)]).await;
    h.settle().await;
    let e = h.engagement(&eng).await;
    assert_eq!(e.contract.as_ref().unwrap().revision, 2);
    assert_eq!(e.contract.as_ref().unwrap().total_value.amount, dec!(1300000.00));
    // Revision 4 overtakes revision 3: 3 arrives late and is ignored.
    let mut r4 = globex_payload(opp, 4);
    r4["amount"] = json!("1300000.00");
    r4["lines"][2]["amount"] = json!("150000.00");
    h.send(vec![closed_won(r4)]).await;
    h.settle().await;
    h.send(vec![closed_won(globex_payload(opp, 3))]).await;
    h.send(vec![contract_approved(opp)]).await;
    h.settle().await;
    let e = h.engagement(&eng).await;
    assert_eq!(e.status, EngagementStatus::Active);
    let psa = h.rt.sims().projects(System::Psa).await.unwrap();
    assert_eq!(psa[0].spec.budget.amount, dec!(1300000.00), "provisioned from the amended contract");
    assert_eq!(e.billing_schedule.unwrap().fixed_total.amount, dec!(1050000.00));
    let trail = h.rt.store().audit_trail(&eng).await.unwrap();
    assert!(trail.iter().any(|a| a.action == "contract_amended"));
    assert!(trail.iter().any(|a| a.action == "stale_revision_ignored"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn when_message_breaks_the_envelope_contract_should_park_it_with_reasons_and_not_retry() {
    let h = Harness::new().await;
    let mut bad = envelope("bad-1", "corr-bad", None, json!({"opportunity_id": "0068d00000MAL001", "revision": "three"}));
    bad.as_object_mut().unwrap().remove("correlation_id");
    h.send(vec![("o2c.crm", "OpportunityClosedWon", bad)]).await;
    let report = h.settle().await;
    assert_eq!(report.retried, 0, "a permanent failure is not retried");
    assert_eq!(report.dead_letters, 0);
    let parked = h.rt.store().rejections(10).await.unwrap();
    assert_eq!(parked.len(), 1);
    let p = &parked[0];
    assert_eq!(p.step, "intake");
    assert_eq!(p.error_type, "O2c.Validation");
    assert_eq!(p.event_id.as_deref(), Some("bad-1"));
    assert_eq!(p.engagement_id.as_deref(), Some("ENG-0068d00000MAL001"));
    // Every violation, not just the first: the missing field and the wrongly typed one.
    assert!(p.reasons.iter().any(|r| r.message.contains("correlation_id")), "{:?}", p.reasons);
    assert!(p.reasons.iter().any(|r| r.field == "payload.revision"), "{:?}", p.reasons);
    assert!(p.body.contains("\"revision\":\"three\""), "the raw message is kept verbatim");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn when_idempotency_key_is_reused_with_another_payload_should_park_a_conflict() {
    let h = Harness::new().await;
    let opp = "0068d00000KEY001";
    h.send(vec![closed_won(asia_payload(opp, 1, "60000.00"))]).await;
    h.settle().await;
    let (s, t, mut d) = closed_won(asia_payload(opp, 1, "99000.00"));
    d["event_id"] = json!("another-event");
    h.send(vec![(s, t, d)]).await;
    h.settle().await;
    let parked = h.rt.store().rejections(10).await.unwrap();
    assert_eq!(parked.len(), 1);
    assert_eq!(parked[0].error_type, "O2c.Conflict");
    assert!(parked[0].reasons[0].message.contains("different payload"));
    assert_eq!(h.engagement(&format!("ENG-{opp}")).await.contract.unwrap().total_value.amount, dec!(180000.00));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn when_a_dependency_stays_down_should_dead_letter_after_max_receive_count_and_redrive_later() {
    let h = Harness::new().await;
    h.rt.sims().inject(System::Erp, "create_billing_schedule", Fault::ServerError { status: 503 }, None).await.unwrap();
    let opp = "0068d00000DLQ001";
    let eng = format!("ENG-{opp}");
    h.send(vec![closed_won(asia_payload(opp, 1, "60000.00"))]).await;
    let report = h.settle().await;
    assert_eq!(report.dead_letters, 1);
    let dlq = h.rt.bus().list("BillingSetupDLQ", 10).await.unwrap();
    assert_eq!(dlq.len(), 1);
    assert_eq!(dlq[0].receive_count, 5, "maxReceiveCount from the template");
    assert_eq!(dlq[0].dead_lettered_from.as_deref(), Some("BillingSetupQueue"));
    assert!(dlq[0].last_error.as_deref().unwrap().contains("503"));
    assert_eq!(h.engagement(&eng).await.status, EngagementStatus::Provisioned);

    h.rt.sims().clear_faults().await.unwrap();
    assert_eq!(h.rt.bus().redrive("BillingSetupDLQ", 10).await.unwrap(), 1);
    h.settle().await;
    assert_eq!(h.engagement(&eng).await.status, EngagementStatus::Active);
    assert_eq!(h.rt.dead_letters().await.unwrap(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn when_many_engagements_flow_concurrently_should_activate_every_one_exactly_once() {
    let h = Harness::new().await;
    let mut events = Vec::new();
    for i in 0..40 {
        let opp = format!("0068d0000CONC{i:03}");
        events.push(closed_won(asia_payload(&opp, 1, "60000.00")));
        // Every engagement is also delivered twice.
        events.push(closed_won(asia_payload(&opp, 1, "60000.00")));
    }
    for chunk in events.chunks(10) {
        h.send(chunk.to_vec()).await;
    }
    let report = h.settle().await;
    assert_eq!(report.dead_letters, 0);
    let active = h.rt.store().list(&EngagementFilter { status: Some("active".into()), limit: 1000, ..Default::default() }).await.unwrap();
    assert_eq!(active.len(), 40);
    assert_eq!(h.rt.sims().projects(System::Psa).await.unwrap().len(), 40);
    assert_eq!(h.rt.sims().projects(System::Erp).await.unwrap().len(), 40);
    assert_eq!(h.rt.sims().billing_schedules().await.unwrap().len(), 40);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn when_a_fifo_record_fails_should_stop_its_message_group_but_not_the_others() {
    use aws_lambda_events::event::sqs::{SqsEvent, SqsMessage};
    let h = Harness::new().await;
    h.send(vec![closed_won(asia_payload("0068d00000FIFO01", 1, "60000.00"))]).await;
    h.settle().await;
    let activated = h.bus_events().await.into_iter().find(|(t, _)| t == "ProjectActivated").unwrap().1;
    let record = |id: &str, group: &str, engagement: &str| {
        let mut detail = activated.clone();
        detail["payload"]["engagement_id"] = json!(engagement);
        detail["event_id"] = json!(format!("evt-{id}"));
        detail["idempotency_key"] = json!(format!("key-{id}"));
        let body = json!({"version": "0", "id": id, "detail-type": "ProjectActivated", "source": "o2c.billing", "account": "0", "time": "2026-11-20T09:30:00Z", "region": "local", "resources": [], "detail": detail});
        let mut m = SqsMessage::default();
        m.message_id = Some(id.into());
        m.body = Some(body.to_string());
        m.attributes.insert("MessageGroupId".into(), group.into());
        m
    };
    let mut event = SqsEvent::default();
    event.records = vec![
        record("1", "ENG-GHOST", "ENG-GHOST"), // no such engagement: a retryable failure (bug class)
        record("2", "ENG-GHOST", "ENG-GHOST"), // same group: must not run before 1 succeeds
        record("3", "ENG-0068d00000FIFO01", "ENG-0068d00000FIFO01"),
    ];
    let deadline = chrono::Utc::now() + chrono::Duration::seconds(30);
    let outcomes = o2c_app::sqs::process_batch(
        h.rt.services(),
        o2c_app::Step::CrmWriteback,
        event.clone(),
        &o2c_app::sqs::BatchContext::until(deadline),
    )
    .await;
    let failed: Vec<&str> = outcomes.iter().filter(|o| o.result.is_err()).map(|o| o.message_id.as_str()).collect();
    assert_eq!(failed, vec!["1", "2"]);
    assert!(matches!(&outcomes[1].result, Err(e) if e.to_string().contains("earlier message of group ENG-GHOST")));
    assert!(outcomes[2].result.is_ok());
    let resp =
        o2c_app::sqs::handle_batch(h.rt.services(), o2c_app::Step::CrmWriteback, event, &o2c_app::sqs::BatchContext::until(deadline)).await;
    assert_eq!(resp.response.batch_item_failures.iter().map(|f| f.item_identifier.as_str()).collect::<Vec<_>>(), vec!["1", "2"]);
}
