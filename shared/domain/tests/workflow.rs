//! Pure step decisions: no store, no bus, no connectors.
#![allow(missing_docs, clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::*;
use o2c_domain::engagement::EngagementStatus;
use o2c_domain::events::{ContractApproved, EventType, ExceptionKind};
use o2c_domain::workflow::{
    ProvisionTrigger, Provisioning, StepContext, Writeback, crm_update_for, decide_closed_won, decide_provisioning, decide_writeback,
    provisioned, provisioning_failed, step,
};

fn ctx<'a>(m: &'a o2c_domain::events::EventMeta, t: EventType, s: &'static str) -> StepContext<'a> {
    StepContext { step: s, event_type: t, meta: m, now: now() }
}

#[test]
fn when_first_closed_won_is_valid_should_create_contract_and_emit_contract_created() {
    let m = meta("e1");
    let d = decide_closed_won(
        None,
        &envelope(globex_closed_won(), "e1"),
        &reference(),
        &ctx(&m, EventType::OpportunityClosedWon, step::INTAKE),
    );
    let e = d.engagement.expect("state");
    assert_eq!(e.status, EngagementStatus::ContractCreated);
    assert_eq!(d.events.len(), 1);
    let ev = &d.events[0];
    assert_eq!(ev.event_type, EventType::ContractCreated);
    assert_eq!(ev.detail["causation_id"], "e1");
    assert_eq!(ev.detail["correlation_id"], "corr-1");
    assert_eq!(ev.detail["idempotency_key"], "contract-created:ENG-0068d00000GLBX01:r1");
    // Deterministic: the same decision emits the same event id.
    let again = decide_closed_won(
        None,
        &envelope(globex_closed_won(), "e1"),
        &reference(),
        &ctx(&m, EventType::OpportunityClosedWon, step::INTAKE),
    );
    assert_eq!(again.events[0].event_id(), ev.event_id());
}

#[test]
fn when_revision_is_not_newer_should_change_nothing() {
    let m = meta("e1");
    let c = ctx(&m, EventType::OpportunityClosedWon, step::INTAKE);
    let mut opp = globex_closed_won();
    opp.revision = 3;
    let e = decide_closed_won(None, &envelope(opp.clone(), "e1"), &reference(), &c).engagement.unwrap();
    opp.revision = 2;
    let d = decide_closed_won(Some(&e), &envelope(opp.clone(), "e2"), &reference(), &c);
    assert_eq!((d.engagement.is_none(), d.events.len(), d.action()), (true, 0, "stale_revision_ignored"));
    opp.revision = 3;
    assert_eq!(decide_closed_won(Some(&e), &envelope(opp, "e3"), &reference(), &c).action(), "duplicate_revision_ignored");
}

#[test]
fn when_approval_is_required_should_wait_then_plan_with_a_claim() {
    let m = meta("e1");
    let e = decide_closed_won(
        None,
        &envelope(globex_closed_won(), "e1"),
        &reference(),
        &ctx(&m, EventType::OpportunityClosedWon, step::INTAKE),
    )
    .engagement
    .unwrap();
    let created = o2c_domain::events::ContractCreated {
        engagement_id: e.engagement_id.clone(),
        contract_id: "CTR".into(),
        opportunity_id: e.opportunity_id.clone(),
        revision: 1,
        customer_id: "CUST-1001".into(),
        legal_entity_id: "LE-DE-01".into(),
        total_value: e.contract.as_ref().unwrap().total_value,
        approval_required: true,
    };
    let m2 = meta("e2");
    let Provisioning::Decided(d) = decide_provisioning(
        Some(&e),
        ProvisionTrigger::ContractCreated(&created),
        &reference(),
        &ctx(&m2, EventType::ContractCreated, step::PROVISION),
    )
    .unwrap() else {
        panic!("must wait for approval")
    };
    let waiting = d.engagement.unwrap();
    assert_eq!(waiting.status, EngagementStatus::AwaitingApproval);

    let approval = ContractApproved {
        opportunity_id: e.opportunity_id.clone(),
        clm_agreement_id: "AGR-1".into(),
        approved_at: now(),
        approver_id: "u".into(),
    };
    let m3 = meta("e3");
    let c3 = ctx(&m3, EventType::ContractApproved, step::PROVISION);
    let Provisioning::Execute(plan) =
        decide_provisioning(Some(&waiting), ProvisionTrigger::ContractApproved(&approval), &reference(), &c3).unwrap()
    else {
        panic!("approval must start provisioning")
    };
    assert_eq!(plan.engagement.status, EngagementStatus::Provisioning);
    assert_eq!(plan.engagement.claimed_by.as_deref(), Some("k-e3"));
    assert_eq!(plan.psa.external_key, e.engagement_id);
    assert_eq!(plan.erp.customer_id, "C-10001");
    assert_eq!(plan.psa.milestones.len(), 4);

    // Another event finds the claim and leaves it alone; the claimer's retry re-plans the same attempt.
    let other = meta("e4");
    let Provisioning::Decided(d) = decide_provisioning(
        Some(&plan.engagement),
        ProvisionTrigger::ContractCreated(&created),
        &reference(),
        &ctx(&other, EventType::ContractCreated, step::PROVISION),
    )
    .unwrap() else {
        panic!("claimed by another event")
    };
    assert_eq!(d.action(), "provisioning_in_progress");
    let Provisioning::Execute(retry) =
        decide_provisioning(Some(&plan.engagement), ProvisionTrigger::ContractApproved(&approval), &reference(), &c3).unwrap()
    else {
        panic!("retry")
    };
    assert_eq!(retry.engagement.provisioning_attempt, plan.engagement.provisioning_attempt);

    let done = provisioned(*plan.clone(), "PSA-1".into(), "ERP-1".into(), &c3);
    assert_eq!(done.engagement.as_ref().unwrap().status, EngagementStatus::Provisioned);
    assert_eq!(done.events[0].event_type, EventType::ProjectProvisioned);
    let failed = provisioning_failed(*plan, "ERP", "INVALID: x", vec![], &c3);
    let fe = failed.engagement.unwrap();
    assert_eq!(fe.status, EngagementStatus::ProvisioningFailed);
    assert!(fe.claimed_by.is_none());
    assert_eq!(fe.exceptions[0].kind, ExceptionKind::ProvisioningFailed);
    assert_eq!(failed.events[0].event_type, EventType::ExceptionRaised);
}

#[test]
fn when_crm_already_shows_the_state_should_not_write_again() {
    let m = meta("e1");
    let c = ctx(&m, EventType::ContractCreated, step::CRM_WRITEBACK);
    let mut e = decide_closed_won(None, &envelope(globex_closed_won(), "e1"), &reference(), &c).engagement.unwrap();
    let Writeback::Execute(plan) = decide_writeback(Some((&e, 1)), &e.engagement_id.clone(), &c).unwrap() else { panic!("first write") };
    assert_eq!(plan.update.sync_status, "In Progress");
    e.crm_sync = Some(o2c_domain::engagement::CrmSync { update: plan.update.clone(), result: "ok".into(), at: now() });
    // A later version with the same content is not written again.
    assert!(matches!(decide_writeback(Some((&e, 2)), &e.engagement_id.clone(), &c).unwrap(), Writeback::Decided(_)));
}

#[test]
fn when_errors_exceed_the_crm_field_should_truncate_on_a_char_boundary() {
    let m = meta("e1");
    let c = ctx(&m, EventType::OpportunityClosedWon, step::INTAKE);
    let mut opp = globex_closed_won();
    opp.name = Some("Ünïcödé ".repeat(30));
    opp.lines.clear();
    opp.delivery_region = None;
    opp.account_id = Some("CUST-ÜNKNOWN-ÄÖÜ".into());
    opp.start_date = None;
    opp.end_date = None;
    opp.currency = None;
    let e = decide_closed_won(None, &envelope(opp, "e1"), &reference(), &c).engagement.unwrap();
    let u = crm_update_for(&e, 1);
    assert_eq!(u.sync_status, "Error");
    let err = u.last_error.unwrap();
    assert_eq!(err.chars().count(), 255);
    assert!(err.ends_with('…'));
}
