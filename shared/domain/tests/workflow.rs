//! Pure step decisions: no store, no bus, no connectors.
#![allow(missing_docs, clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::*;
use o2c_domain::aggregate::{AggregateBody, Loaded, LoadedAggregate};
use o2c_domain::engagement::{Action, Engagement, EngagementStatus};
use o2c_domain::events::{ContractApproved, EventType, ExceptionKind};
use o2c_domain::source_of_record::SourceOfRecord;
use o2c_domain::workflow::crm_writeback::decide_writeback;
use o2c_domain::workflow::provision::{COMPENSATION_DONE, COMPENSATION_PENDING, ProvisionTrigger, decide_provisioning};
use o2c_domain::workflow::{
    Command, CommandResult, Decision, ExternalObject, GaveUp, Next, ObjectStatus, Outcome, Plan, Purpose, Refusal, Snapshot, Step,
    StepContext, System, WorkflowStep, crm_update_for, dead_lettered, decide_closed_won,
};

fn ctx<'a>(m: &'a o2c_domain::events::EventMeta, t: EventType, s: Step) -> StepContext<'a> {
    StepContext { step: s, event_type: t, meta: m, now: now(), event: None }
}

fn snap(e: &Engagement) -> Option<Snapshot<'_>> {
    Some(Snapshot { engagement: e, version: 1 })
}

fn live(id: &str) -> CommandResult {
    CommandResult::Object(ExternalObject { id: id.into(), created: true, status: ObjectStatus::Active })
}

/// A valid Globex contract with its CLM approval recorded, and that approval as an event.
fn approved_contract(c: &StepContext<'_>) -> (Engagement, ContractApproved) {
    let mut e = decide_closed_won(None, &envelope(globex_closed_won(), "e1"), &reference(), c).engagement.unwrap();
    e.approval = Some(o2c_domain::engagement::Approval { clm_agreement_id: "A".into(), approver_id: "u".into(), approved_at: now() });
    let approval = ContractApproved {
        opportunity_id: e.opportunity_id.clone(),
        clm_agreement_id: "A".into(),
        approved_at: now(),
        approver_id: "u".into(),
    };
    (e, approval)
}

fn run(next: Next) -> Plan {
    match next {
        Next::Run(plan) => plan,
        other => panic!("expected a plan, got {other:?}"),
    }
}

fn done(next: Next) -> o2c_domain::workflow::Decision {
    match next {
        Next::Done(d) => d,
        other => panic!("expected a final decision, got {other:?}"),
    }
}

#[test]
fn when_first_closed_won_is_valid_should_create_contract_and_emit_contract_created() {
    let m = meta("e1");
    let d = decide_closed_won(
        None,
        &envelope(globex_closed_won(), "e1"),
        &reference(),
        &ctx(&m, EventType::OpportunityClosedWon, Step::Intake),
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
        &ctx(&m, EventType::OpportunityClosedWon, Step::Intake),
    );
    assert_eq!(again.events[0].event_id(), ev.event_id());
}

#[test]
fn when_revision_is_not_newer_should_change_nothing() {
    let m = meta("e1");
    let c = ctx(&m, EventType::OpportunityClosedWon, Step::Intake);
    let mut opp = globex_closed_won();
    opp.revision = 3;
    let e = decide_closed_won(None, &envelope(opp.clone(), "e1"), &reference(), &c).engagement.unwrap();
    opp.revision = 2;
    let d = decide_closed_won(Some(&e), &envelope(opp.clone(), "e2"), &reference(), &c);
    assert_eq!((d.engagement.is_none(), d.events.len(), d.action()), (true, 0, o2c_domain::engagement::Action::StaleRevisionIgnored));
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
        &ctx(&m, EventType::OpportunityClosedWon, Step::Intake),
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
    let on_created = |state: &Engagement, event_id: &str| {
        let m = meta(event_id);
        done(
            decide_provisioning(
                Some(state),
                ProvisionTrigger::ContractCreated(&created),
                &reference(),
                &ctx(&m, EventType::ContractCreated, Step::Provision),
            )
            .unwrap(),
        )
    };
    let d = on_created(&e, "e2");
    let waiting = d.engagement.unwrap();
    assert_eq!(waiting.status, EngagementStatus::AwaitingApproval);

    let approval = ContractApproved {
        opportunity_id: e.opportunity_id.clone(),
        clm_agreement_id: "AGR-1".into(),
        approved_at: now(),
        approver_id: "u".into(),
    };
    let m3 = meta("e3");
    let c3 = ctx(&m3, EventType::ContractApproved, Step::Provision);
    let plan = run(decide_provisioning(Some(&waiting), ProvisionTrigger::ContractApproved(&approval), &reference(), &c3).unwrap());
    let claimed = plan.claim.clone().expect("the claim is written with the reservation");
    assert_eq!(claimed.status, EngagementStatus::Provisioning);
    assert_eq!(claimed.claimed_by.as_deref(), Some("k-e3"));
    let [Command::CreateProject { system: System::Psa, spec: psa }, Command::CreateProject { system: System::Erp, spec: erp }] =
        plan.commands.as_slice()
    else {
        panic!("PSA then ERP: {:?}", plan.commands)
    };
    assert_eq!(psa.external_key.as_str(), e.engagement_id.as_str());
    assert_eq!(erp.customer_id, "C-10001");
    assert_eq!(psa.milestones.len(), 4);

    // Another event finds the claim and leaves it alone; the claimer's retry re-plans the
    // same attempt without writing the claim again.
    let d = on_created(&claimed, "e4");
    assert_eq!(d.action(), "provisioning_in_progress");
    let retry = run(decide_provisioning(Some(&claimed), ProvisionTrigger::ContractApproved(&approval), &reference(), &c3).unwrap());
    assert!(retry.claim.is_none(), "our own claim is in place");

    let p = o2c_domain::workflow::Provision;
    let ok = done(
        p.finalize(
            &Outcome {
                event: &any_event(),
                reference: &reference(),
                current: snap(&claimed),
                others: &Loaded::default(),
                plan: &plan,
                results: &[live("PSA-1"), live("ERP-1")],
            },
            &c3,
        )
        .unwrap(),
    );
    assert_eq!(ok.engagement.as_ref().unwrap().status, EngagementStatus::Provisioned);
    assert_eq!(ok.events[0].event_type, EventType::ProjectProvisioned);

    // The PSA refuses: final, no compensation owed.
    let refusal = |system| CommandResult::Refused(Refusal { system, status: 400, code: "INVALID".into(), message: "x".into() });
    let failed = done(
        p.finalize(
            &Outcome {
                event: &any_event(),
                reference: &reference(),
                current: snap(&claimed),
                others: &Loaded::default(),
                plan: &plan,
                results: &[refusal(System::Psa)],
            },
            &c3,
        )
        .unwrap(),
    );
    let fe = failed.engagement.unwrap();
    assert_eq!(fe.status, EngagementStatus::ProvisioningFailed);
    assert!(fe.claimed_by.is_none());
    assert!(fe.compensation_due.is_empty());
    assert_eq!(fe.exceptions[0].kind, ExceptionKind::ProvisioningFailed);
    assert_eq!(failed.events[0].event_type, EventType::ExceptionRaised);

    // Re-finalized on fresh state whose claim moved on: the other outcome stands.
    let mut moved = claimed.clone();
    moved.status = EngagementStatus::Provisioned;
    moved.claimed_by = None;
    let d = done(
        p.finalize(
            &Outcome {
                event: &any_event(),
                reference: &reference(),
                current: snap(&moved),
                others: &Loaded::default(),
                plan: &plan,
                results: &[live("PSA-1"), live("ERP-1")],
            },
            &c3,
        )
        .unwrap(),
    );
    assert_eq!((d.action(), d.engagement.is_none()), (o2c_domain::engagement::Action::ProvisioningSuperseded, true));
}

#[test]
fn when_the_erp_refuses_after_the_psa_created_should_record_the_failure_and_the_owed_compensation_before_compensating() {
    let m = meta("e1");
    let c = ctx(&m, EventType::ContractApproved, Step::Provision);
    let (e, approval) = approved_contract(&c);
    let plan = run(decide_provisioning(Some(&e), ProvisionTrigger::ContractApproved(&approval), &reference(), &c).unwrap());
    let claimed = plan.claim.clone().unwrap();
    let p = o2c_domain::workflow::Provision;
    let erp_refused =
        CommandResult::Refused(Refusal { system: System::Erp, status: 400, code: "INVALID_KEY_OR_REF".into(), message: "PM".into() });
    let Next::Checkpoint(cp) = p
        .finalize(
            &Outcome {
                event: &any_event(),
                reference: &reference(),
                current: snap(&claimed),
                others: &Loaded::default(),
                plan: &plan,
                results: &[live("PSA-1"), erp_refused],
            },
            &c,
        )
        .unwrap()
    else {
        panic!("the failure is a checkpoint that owes a compensation")
    };
    assert!(cp.events.is_empty(), "nothing is announced before the compensation ran");
    let failed = cp.engagement.unwrap();
    assert_eq!(failed.status, EngagementStatus::ProvisioningFailed);
    assert_eq!(failed.compensation_due.len(), 1);
    assert_eq!(failed.exceptions[0].compensations[0].outcome, COMPENSATION_PENDING);

    // Deciding again (the same event, or any provisioning event after a crash) pays the debt first.
    let comp = run(decide_provisioning(Some(&failed), ProvisionTrigger::ContractApproved(&approval), &reference(), &c).unwrap());
    assert_eq!(comp.purpose, Purpose::Compensate);
    assert!(matches!(&comp.commands[..], [Command::CancelProject { system: System::Psa, project_id, .. }] if project_id == "PSA-1"));
    let d = done(
        p.finalize(
            &Outcome {
                event: &any_event(),
                reference: &reference(),
                current: snap(&failed),
                others: &Loaded::default(),
                plan: &comp,
                results: &[CommandResult::Done],
            },
            &c,
        )
        .unwrap(),
    );
    let settled = d.engagement.unwrap();
    assert!(settled.compensation_due.is_empty());
    assert_eq!(settled.exceptions[0].compensations[0].outcome, COMPENSATION_DONE);
    assert_eq!(d.events.len(), 1, "the exception is announced with its compensation");
    assert_eq!(d.events[0].detail["payload"]["compensations"][0]["outcome"], "done");
    assert!(!settled.exceptions[0].announce_pending);

    // A corrected revision arrived before the compensation ran: the compensation is a
    // checkpoint (no events); the next final decision announces the exception.
    let mut revised = failed.clone();
    revised.status = EngagementStatus::ContractCreated;
    let Next::Checkpoint(cp) = p
        .finalize(
            &Outcome {
                event: &any_event(),
                reference: &reference(),
                current: snap(&revised),
                others: &Loaded::default(),
                plan: &comp,
                results: &[CommandResult::Done],
            },
            &c,
        )
        .unwrap()
    else {
        panic!("checkpoint, then decide for the revision")
    };
    let paid = cp.engagement.unwrap();
    assert!(paid.exceptions[0].announce_pending, "not yet announced");
    let later = Decision::unchanged(&c, &paid.engagement_id, Action::AwaitingApproval, "x").settle(Some(&paid), &c);
    assert_eq!(later.events.len(), 1, "announced by the next final decision");
    assert_eq!(later.events[0].event_type, EventType::ExceptionRaised);
    assert!(!later.engagement.unwrap().exceptions[0].announce_pending);
}

#[test]
fn when_create_or_get_returns_a_cancelled_psa_project_should_fail_without_asking_the_erp() {
    let m = meta("e1");
    let c = ctx(&m, EventType::ContractApproved, Step::Provision);
    let (e, approval) = approved_contract(&c);
    let plan = run(decide_provisioning(Some(&e), ProvisionTrigger::ContractApproved(&approval), &reference(), &c).unwrap());
    let cancelled = CommandResult::Object(ExternalObject { id: "PSA-9".into(), created: false, status: ObjectStatus::Cancelled });
    assert!(cancelled.stops_sequence(), "the ERP command is not run after a cancelled PSA project");
    let d = done(
        o2c_domain::workflow::Provision
            .finalize(
                &Outcome {
                    event: &any_event(),
                    reference: &reference(),
                    current: snap(plan.claim.as_ref().unwrap()),
                    others: &Loaded::default(),
                    plan: &plan,
                    results: &[cancelled],
                },
                &c,
            )
            .unwrap(),
    );
    let f = d.engagement.unwrap();
    assert_eq!(f.status, EngagementStatus::ProvisioningFailed);
    assert_eq!(f.psa_project_id, None, "a cancelled project is never recorded as live");
    assert!(f.exceptions[0].message.contains("PSA-9") && f.exceptions[0].message.contains("cancelled"), "{}", f.exceptions[0].message);
}

#[test]
fn when_the_claiming_message_dead_letters_should_release_the_claim_for_a_take_over_on_the_same_attempt() {
    let m = meta("e1");
    let c = ctx(&m, EventType::ContractApproved, Step::Provision);
    let (e, approval) = approved_contract(&c);
    let claimed =
        run(decide_provisioning(Some(&e), ProvisionTrigger::ContractApproved(&approval), &reference(), &c).unwrap()).claim.unwrap();
    let gave_up = GaveUp {
        last_error: "O2c.Dependency: erp unavailable: 503",
        receives: 5,
        queue: Some("ProvisionDLQ"),
        holder_live: false,
        reopen: true,
    };
    let d = dead_lettered(&claimed, &gave_up, &c).expect("raised");
    let abandoned = d.engagement.unwrap();
    assert_eq!(abandoned.status, EngagementStatus::Provisioning);
    assert_eq!(abandoned.claimed_by, None);
    let ex = abandoned.exceptions.iter().find(|x| x.kind == ExceptionKind::DeadLettered).unwrap();
    assert!(ex.open && ex.message.contains("503") && ex.message.contains("ProvisionDLQ"), "{}", ex.message);
    assert_eq!(d.events[0].event_type, EventType::ExceptionRaised);
    assert!(dead_lettered(&abandoned, &GaveUp { last_error: "again", ..gave_up }, &c).is_none(), "raising again is idempotent");
    let update = crm_update_for(&abandoned, 3, &SourceOfRecord::default());
    assert_eq!(update.sync_status, "Error");

    let other = meta("e9");
    let c9 = ctx(&other, EventType::ContractApproved, Step::Provision);
    let plan = run(decide_provisioning(Some(&abandoned), ProvisionTrigger::ContractApproved(&approval), &reference(), &c9).unwrap());
    let taken = plan.claim.unwrap();
    assert_eq!(taken.claimed_by.as_deref(), Some("k-e9"));
    assert_eq!(taken.provisioning_attempt, claimed.provisioning_attempt, "same attempt, same external keys");
}

#[test]
fn when_a_duplicate_gives_up_while_the_original_holds_the_key_should_keep_its_claim() {
    let m = meta("e1");
    let c = ctx(&m, EventType::ContractApproved, Step::Provision);
    let (e, approval) = approved_contract(&c);
    let claimed =
        run(decide_provisioning(Some(&e), ProvisionTrigger::ContractApproved(&approval), &reference(), &c).unwrap()).claim.unwrap();
    let gave_up = GaveUp { last_error: "O2c.InProgress", receives: 5, queue: None, holder_live: true, reopen: true };
    let d = dead_lettered(&claimed, &gave_up, &c).expect("raised: the copy that gave up is visible");
    assert_eq!(d.engagement.as_ref().unwrap().claimed_by.as_deref(), Some("k-e1"), "the live holder keeps its claim");
}

#[test]
fn when_the_claim_was_released_under_a_running_attempt_should_still_apply_its_results() {
    let m = meta("e1");
    let c = ctx(&m, EventType::ContractApproved, Step::Provision);
    let (e, approval) = approved_contract(&c);
    let plan = run(decide_provisioning(Some(&e), ProvisionTrigger::ContractApproved(&approval), &reference(), &c).unwrap());
    let mut released = plan.claim.clone().unwrap();
    released.claimed_by = None; // a duplicate's dead letter released it while we worked
    let results = vec![live("PSA-1"), live("ERP-1")];
    let done = Outcome {
        event: &any_event(),
        reference: &reference(),
        current: Some(Snapshot { engagement: &released, version: 2 }),
        others: &Loaded::default(),
        plan: &plan,
        results: &results,
    };
    let Next::Done(d) = Step::Provision.logic().finalize(&done, &c).unwrap() else { panic!("final") };
    assert_eq!(d.action(), Action::Provisioned, "same attempt, nobody else claimed it: our results stand");
    assert_eq!(d.events.len(), 1);

    // Another event took the released claim over: its run finishes the attempt.
    let mut taken = released.clone();
    taken.claimed_by = Some("k-e9".into());
    let done = Outcome {
        event: &any_event(),
        reference: &reference(),
        current: Some(Snapshot { engagement: &taken, version: 3 }),
        others: &Loaded::default(),
        plan: &plan,
        results: &results,
    };
    let Next::Done(d) = Step::Provision.logic().finalize(&done, &c).unwrap() else { panic!("final") };
    assert_eq!(d.action(), Action::ProvisioningSuperseded);
}

#[test]
fn when_another_step_completes_the_same_event_should_not_close_this_steps_dead_letter() {
    let m = meta("e1");
    let c = ctx(&m, EventType::ContractApproved, Step::Provision);
    let (e, _) = approved_contract(&c);
    let gave_up = GaveUp { last_error: "503", receives: 5, queue: None, holder_live: false, reopen: true };
    let with_dl = dead_lettered(&e, &gave_up, &c).unwrap().engagement.unwrap();
    let cw = ctx(&m, EventType::ContractApproved, Step::CrmWriteback);
    let settled = Decision::unchanged(&cw, &with_dl.engagement_id, Action::CrmAlreadyCurrent, "x").settle(Some(&with_dl), &cw);
    assert!(settled.engagement.is_none(), "the write-back finishing the same event leaves provisioning's exception open");
    let settled = Decision::unchanged(&c, &with_dl.engagement_id, Action::AlreadyProvisioned, "x").settle(Some(&with_dl), &c);
    assert!(settled.engagement.unwrap().exceptions.iter().all(|x| !x.open), "its own step closes it");
}

#[test]
fn when_the_queue_reports_a_move_after_the_event_finished_should_not_reopen_the_exception() {
    let m = meta("e1");
    let c = ctx(&m, EventType::ContractApproved, Step::Provision);
    let (e, _) = approved_contract(&c);
    let gave_up = GaveUp { last_error: "503", receives: 5, queue: None, holder_live: false, reopen: true };
    let raised = dead_lettered(&e, &gave_up, &c).unwrap().engagement.unwrap();
    let closed =
        Decision::unchanged(&c, &raised.engagement_id, Action::AlreadyProvisioned, "x").settle(Some(&raised), &c).engagement.unwrap();
    assert!(dead_lettered(&closed, &GaveUp { reopen: false, ..gave_up }, &c).is_none(), "the after-the-fact report");
    assert!(dead_lettered(&closed, &gave_up, &c).is_some(), "a handler's own last failure reopens it");
}

#[test]
fn when_crm_already_shows_the_state_should_not_write_again() {
    let m = meta("e1");
    let c = ctx(&m, EventType::ContractCreated, Step::CrmWriteback);
    let mut e = decide_closed_won(None, &envelope(globex_closed_won(), "e1"), &reference(), &c).engagement.unwrap();
    let plan = run(decide_writeback(
        Some(Snapshot { engagement: &e, version: 1 }),
        None,
        &e.engagement_id.clone(),
        &SourceOfRecord::default(),
        &c,
    )
    .unwrap());
    let [Command::UpdateOpportunity(update)] = plan.commands.as_slice() else { panic!("one CRM update") };
    assert_eq!(update.sync_status, "In Progress");
    // The CRM accepted it: only the CRM sync state is written, not the engagement.
    let w = o2c_domain::workflow::CrmWriteback;
    let d = done(
        w.finalize(
            &Outcome {
                event: &any_event(),
                reference: &reference(),
                current: Some(Snapshot { engagement: &e, version: 1 }),
                others: &Loaded::default(),
                plan: &plan,
                results: &[CommandResult::Crm(o2c_domain::workflow::CrmWrite::Applied)],
            },
            &c,
        )
        .unwrap(),
    );
    assert!(d.engagement.is_none(), "the write-back does not contend on the engagement item");
    let [AggregateBody::CrmSync(sync)] = d.others.as_slice() else { panic!("the sync state is written") };
    let loaded = Loaded { items: vec![LoadedAggregate { body: AggregateBody::CrmSync(sync.clone()), version: 1 }], asked: vec![] };
    // A later version with the same content is not written again.
    let again = decide_writeback(
        Some(Snapshot { engagement: &e, version: 2 }),
        loaded.crm_sync(&e.engagement_id),
        &e.engagement_id.clone(),
        &SourceOfRecord::default(),
        &c,
    )
    .unwrap();
    assert!(matches!(again, Next::Done(_)));
    e.status = EngagementStatus::Active;
    let changed = decide_writeback(
        Some(Snapshot { engagement: &e, version: 3 }),
        loaded.crm_sync(&e.engagement_id),
        &e.engagement_id.clone(),
        &SourceOfRecord::default(),
        &c,
    )
    .unwrap();
    assert!(matches!(changed, Next::Run(_)), "a changed state is written");
}

#[test]
fn when_errors_exceed_the_crm_field_should_truncate_on_a_char_boundary() {
    let m = meta("e1");
    let c = ctx(&m, EventType::OpportunityClosedWon, Step::Intake);
    let mut opp = globex_closed_won();
    opp.name = Some("Ünïcödé ".repeat(30));
    opp.lines.clear();
    opp.delivery_region = None;
    opp.account_id = Some("CUST-ÜNKNOWN-ÄÖÜ".into());
    opp.start_date = None;
    opp.end_date = None;
    opp.total_value = None;
    let e = decide_closed_won(None, &envelope(opp, "e1"), &reference(), &c).engagement.unwrap();
    let u = crm_update_for(&e, 1, &SourceOfRecord::default());
    assert_eq!(u.sync_status, "Error");
    let err = u.last_error.unwrap();
    assert_eq!(err.chars().count(), 255);
    assert!(err.ends_with('…'));
}
