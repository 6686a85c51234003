//! Step 2, provisioning: the project in the PSA, then in the ERP, from the project
//! template, gated by CLM approval where a workflow rule (data) requires it.
//!
//! Rules that keep the engagement honest across retries, races and refusals:
//! - **One claim.** The event that starts provisioning claims the engagement
//!   (`provisioning`, `claimed_by` = its idempotency key) in the same write that reserves
//!   its key; other events leave a held claim alone. A claim abandoned by a message that
//!   dead-lettered (`claimed_by` cleared) is taken over by the next provisioning event on
//!   the **same attempt**, so the same external keys find the same projects.
//! - **A cancelled object is never reused.** Create-or-get reports the object's status; a
//!   cancelled PSA project (or a cancelled / closed ERP project) found under the attempt's
//!   key fails the attempt with an exception. A corrected closed-won revision starts a new
//!   attempt, which provisions under a new external key (`<engagement>~<attempt>`).
//! - **Failure before compensation.** When the ERP refuses after the PSA project exists,
//!   the failure, the exception and the compensation still owed are committed first
//!   (a checkpoint); the compensation then runs and its outcome is committed with the
//!   `ExceptionRaised` event. Owed compensations run before anything else the next time
//!   any provisioning event arrives, so a crash or a dead letter between the two commits
//!   leaves the debt visible and it is still paid.

use crate::billing::derive_milestones;
use crate::engagement::{Action, Approval, Engagement, EngagementStatus};
use crate::events::{
    BusinessEvent, Compensation, ContractApproved, ContractCreated, EventType, ExceptionKind, ProjectProvisioned, engagement_id_for,
};
use crate::ids::ExceptionId;
use crate::model::ProjectSpec;
use crate::reference::ReferenceData;

use super::{
    Command, CommandResult, Decision, ExternalObject, Input, Next, ObjectStatus, Outcome, Plan, Purpose, Sequence, Step, StepContext,
    StepError, System, WorkflowStep, close_dead_letters_of, exception, exception_event, planned_on, step_meta, unexpected,
};

/// Outcome of a compensation that is owed but not yet performed.
pub const COMPENSATION_PENDING: &str = "pending";
/// Outcome of a compensation performed.
pub const COMPENSATION_DONE: &str = "done";

/// The provisioning step.
#[derive(Debug, Clone, Copy, Default)]
pub struct Provision;

/// What triggered the provisioning step.
#[derive(Debug, Clone, Copy)]
pub enum ProvisionTrigger<'a> {
    /// Intake created / amended the contract.
    ContractCreated(&'a ContractCreated),
    /// CLM approved the statement of work.
    ContractApproved(&'a ContractApproved),
}

impl WorkflowStep for Provision {
    step_meta!(Provision, [ContractCreated, ContractApproved]);

    fn decide(&self, input: &Input<'_>, ctx: &StepContext<'_>) -> Result<Next, StepError> {
        let (current, event) = (input.current, input.event);
        let trigger = match event {
            BusinessEvent::ContractCreated(e) => ProvisionTrigger::ContractCreated(&e.payload),
            BusinessEvent::ContractApproved(e) => ProvisionTrigger::ContractApproved(&e.payload),
            other => return Err(StepError::NotConsumed(Step::Provision, other.event_type().detail_type())),
        };
        decide_provisioning(current.map(|s| s.engagement), trigger, input.reference, ctx)
    }

    fn finalize(&self, done: &Outcome<'_>, ctx: &StepContext<'_>) -> Result<Next, StepError> {
        let (plan, results) = (done.plan, done.results);
        let eng = planned_on(done, Step::Provision)?;
        match plan.purpose {
            Purpose::Compensate => Ok(compensated(eng, plan, results, ctx)),
            Purpose::Provision => provisioning_outcome(eng, plan, results, ctx),
            _ => Err(unexpected(Step::Provision, plan, results)),
        }
    }
}

/// Decides whether to compensate, provision now (approval rule as data), wait, or ignore.
pub fn decide_provisioning(
    current: Option<&Engagement>,
    trigger: ProvisionTrigger<'_>,
    reference: &ReferenceData,
    ctx: &StepContext<'_>,
) -> Result<Next, StepError> {
    let mut eng = match (current, trigger) {
        (Some(e), _) => e.clone(),
        (None, ProvisionTrigger::ContractApproved(a)) => {
            Engagement::new(engagement_id_for(&a.opportunity_id), a.opportunity_id.clone(), ctx.meta.correlation_id.clone(), ctx.now)
        }
        (None, ProvisionTrigger::ContractCreated(c)) => {
            return Err(StepError::MissingEngagement(c.engagement_id.clone(), "ContractCreated"));
        }
    };
    let eng_id = eng.engagement_id.clone();
    let mut approval_recorded = false;
    if let ProvisionTrigger::ContractApproved(a) = trigger
        && eng.approval.is_none()
    {
        eng.approval =
            Some(Approval { clm_agreement_id: a.clm_agreement_id.clone(), approver_id: a.approver_id.clone(), approved_at: a.approved_at });
        approval_recorded = true;
    }

    // A compensation owed by a failed attempt is paid before anything else.
    if !eng.compensation_due.is_empty() {
        let commands = eng
            .compensation_due
            .iter()
            .map(|c| Command::CancelProject {
                system: System::parse(&c.system).unwrap_or(System::Psa),
                project_id: c.object_id.clone(),
                reason: format!("o2c compensation for {eng_id}: the other system refused the project"),
            })
            .collect();
        if approval_recorded {
            eng.updated_at = ctx.now;
        }
        return Ok(Next::Run(Plan {
            purpose: Purpose::Compensate,
            commands,
            sequence: Sequence::All,
            claim: approval_recorded.then_some(eng),
            claim_others: Vec::new(),
        }));
    }

    let keep = |eng: Engagement, action: Action, summary: String| {
        Next::Done(if approval_recorded {
            Decision::changed(ctx, eng, vec![], action, summary)
        } else {
            Decision::unchanged(ctx, &eng_id, action, summary)
        })
    };
    match eng.status {
        EngagementStatus::AwaitingContract => {
            return Ok(keep(eng, Action::ApprovalRecorded, "CLM approval recorded; waiting for the closed-won".into()));
        }
        EngagementStatus::Rejected => {
            return Ok(keep(eng, Action::NotProvisionedRejected, "latest revision is rejected; nothing to provision".into()));
        }
        EngagementStatus::ProvisioningFailed => {
            return Ok(keep(eng, Action::NotProvisionedFailed, "provisioning failed; a corrected revision restarts it".into()));
        }
        EngagementStatus::Provisioning if eng.claimed_by.as_deref().is_some_and(|owner| owner != ctx.key()) => {
            let owner = eng.claimed_by.clone().unwrap_or_default();
            return Ok(keep(eng, Action::ProvisioningInProgress, format!("provisioning is claimed by {owner}")));
        }
        s if s.is_provisioned() && s != EngagementStatus::Provisioning => {
            return Ok(keep(eng, Action::AlreadyProvisioned, format!("already {}", s.as_str())));
        }
        _ => {}
    }

    let contract = eng.contract.clone().ok_or_else(|| StepError::MissingContract(eng_id.clone(), eng.status.as_str()))?;
    if contract.approval_required && eng.approval.is_none() {
        let was_waiting = eng.status == EngagementStatus::AwaitingApproval;
        eng.status = EngagementStatus::AwaitingApproval;
        let summary = format!("service lines {} need CLM approval before provisioning", contract.service_lines.join(", "));
        return Ok(Next::Done(if was_waiting && !approval_recorded {
            Decision::unchanged(ctx, &eng_id, Action::AwaitingApproval, summary)
        } else {
            Decision::changed(ctx, eng, vec![], Action::AwaitingApproval, summary)
        }));
    }
    let template = reference
        .project_templates
        .get(&contract.project_template_id)
        .ok_or_else(|| StepError::MissingReference("project template", contract.project_template_id.clone()))?;
    let milestones = derive_milestones(&contract, template)?;
    if eng.status != EngagementStatus::Provisioning {
        // A new attempt: new external keys. A retry of our own claim, or the take-over of an
        // abandoned one, keeps the attempt (same keys: create-or-get finds what it created).
        eng.provisioning_attempt += 1;
        eng.status = EngagementStatus::Provisioning;
    }
    eng.claimed_by = Some(ctx.key().to_owned());
    let key = eng.project_external_key();
    let spec = |template_code: &str, customer_id: &str| ProjectSpec {
        external_key: key.clone(),
        name: contract.name.clone(),
        customer_id: customer_id.to_owned(),
        subsidiary: contract.legal_entity.erp_subsidiary.clone(),
        template: template_code.to_owned(),
        start_date: contract.start_date,
        end_date: contract.end_date,
        delivery_region: contract.delivery_region.clone(),
        currency: contract.currency,
        budget: contract.total_value,
        milestones: milestones.clone(),
    };
    let psa = spec(&template.psa_template, &contract.customer.id);
    let erp = spec(&template.erp_project_type, &contract.customer.erp_customer_id);
    eng.milestones = milestones;
    // Claim only when the state changes (a retry of our own claim finds it in place).
    let claim = (current != Some(&eng)).then(|| {
        eng.updated_at = ctx.now;
        eng
    });
    Ok(Next::Run(Plan {
        purpose: Purpose::Provision,
        commands: vec![
            Command::CreateProject { system: System::Psa, spec: psa },
            Command::CreateProject { system: System::Erp, spec: erp },
        ],
        sequence: Sequence::StopOnFailure,
        claim,
        claim_others: Vec::new(),
    }))
}

fn provisioning_outcome(eng: &Engagement, plan: &Plan, results: &[CommandResult], ctx: &StepContext<'_>) -> Result<Next, StepError> {
    let planned_key = match plan.commands.first() {
        Some(Command::CreateProject { spec, .. }) => Some(&spec.external_key),
        _ => None,
    };
    // Ours: we hold the claim, or nobody does and the attempt is still the one we ran (the
    // claim was released as abandoned while we worked — our results are that attempt's).
    let ours = eng.status == EngagementStatus::Provisioning
        && match eng.claimed_by.as_deref() {
            Some(owner) => owner == ctx.key(),
            None => planned_key == Some(&eng.project_external_key()),
        };
    if !ours {
        // Re-finalized on fresh state after a lost version race, and the claim moved on
        // (another event took an abandoned claim over and finished): its outcome stands.
        return Ok(Next::Done(Decision::unchanged(
            ctx,
            &eng.engagement_id,
            Action::ProvisioningSuperseded,
            format!("the claim is no longer ours (status {}, claimed by {:?})", eng.status.as_str(), eng.claimed_by),
        )));
    }
    let key = match plan.commands.first() {
        Some(Command::CreateProject { spec, .. }) => spec.external_key.clone(),
        _ => return Err(unexpected(Step::Provision, plan, results)),
    };
    let cancelled = |system: System, o: &ExternalObject| {
        format!(
            "{} project {} under key {key} is cancelled; a cancelled project is never reused as live (a corrected revision provisions under a new key)",
            system.label(),
            o.id
        )
    };
    match results {
        [CommandResult::Object(p), CommandResult::Object(r)] if p.status == ObjectStatus::Active && r.status == ObjectStatus::Active => {
            Ok(Next::Done(provisioned(eng.clone(), p.id.clone(), r.id.clone(), &key, ctx)))
        }
        [CommandResult::Object(p), ..] if p.status == ObjectStatus::Cancelled => {
            Ok(Next::Done(provisioning_failed(eng.clone(), System::Psa, &cancelled(System::Psa, p), None, ctx)))
        }
        [CommandResult::Refused(r)] => Ok(Next::Done(provisioning_failed(eng.clone(), System::Psa, &r.reason(), None, ctx))),
        [CommandResult::Object(p), second] => {
            let reason = match second {
                CommandResult::Refused(r) => r.reason(),
                CommandResult::Object(o) if o.status == ObjectStatus::Cancelled => cancelled(System::Erp, o),
                _ => return Err(unexpected(Step::Provision, plan, results)),
            };
            // Record the failure and the compensation it owes before performing it.
            Ok(Next::Checkpoint(provisioning_failed(eng.clone(), System::Erp, &reason, Some(p), ctx)))
        }
        _ => Err(unexpected(Step::Provision, plan, results)),
    }
}

/// Both projects exist and are live: `Provisioned`, emit `ProjectProvisioned`.
pub fn provisioned(mut eng: Engagement, psa_project_id: String, erp_project_id: String, key: &str, ctx: &StepContext<'_>) -> Decision {
    eng.status = EngagementStatus::Provisioned;
    eng.claimed_by = None;
    eng.psa_project_id = Some(psa_project_id.clone());
    eng.erp_project_id = Some(erp_project_id.clone());
    close_dead_letters_of(&mut eng, Step::Provision, ctx.now, "provisioned");
    // An earlier attempt's failure is cleared by this attempt's success — once nothing is
    // still owed for it (a pending compensation keeps it open).
    let attempt = eng.provisioning_attempt;
    let this_attempt = ExceptionId::provisioning(&eng.engagement_id, attempt);
    for x in eng.exceptions.iter_mut().filter(|x| {
        x.open
            && x.kind == ExceptionKind::ProvisioningFailed
            && x.exception_id != this_attempt
            && x.compensations.iter().all(|c| c.outcome != COMPENSATION_PENDING)
    }) {
        x.close(ctx.now, format!("provisioning attempt {attempt} succeeded"));
    }
    let event = ctx.emit(
        EventType::ProjectProvisioned,
        &eng.engagement_id,
        format!("project-provisioned:{key}"),
        &ProjectProvisioned {
            engagement_id: eng.engagement_id.clone(),
            psa_project_id: psa_project_id.clone(),
            erp_project_id: erp_project_id.clone(),
            milestone_count: eng.milestones.len() as u32,
        },
    );
    let summary = format!("PSA {psa_project_id}, ERP {erp_project_id}, {} milestones", eng.milestones.len());
    Decision::changed(ctx, eng, vec![event], Action::Provisioned, summary)
}

/// A system refused the project (or the object under our key is cancelled):
/// `ProvisioningFailed` with an exception. With `compensate` (the PSA project that exists),
/// the decision is a checkpoint that owes its cancellation; otherwise it is final and
/// emits `ExceptionRaised`.
pub fn provisioning_failed(
    mut eng: Engagement,
    system: System,
    reason: &str,
    compensate: Option<&ExternalObject>,
    ctx: &StepContext<'_>,
) -> Decision {
    eng.status = EngagementStatus::ProvisioningFailed;
    eng.claimed_by = None;
    eng.milestones.clear();
    let owed: Vec<Compensation> = compensate
        .filter(|p| p.status == ObjectStatus::Active)
        .map(|p| Compensation {
            system: System::Psa.as_str().into(),
            action: "cancel_project".into(),
            object_id: p.id.clone(),
            outcome: COMPENSATION_PENDING.into(),
        })
        .into_iter()
        .collect();
    let mut ex = exception(
        ctx,
        ExceptionId::provisioning(&eng.engagement_id, eng.provisioning_attempt),
        ExceptionKind::ProvisioningFailed,
        format!("{} refused the project: {reason}", system.label()),
        owed.clone(),
    );
    // Announced with the compensation's outcome (or by the next final decision).
    ex.announce_pending = !owed.is_empty();
    let summary = format!("{} refused the project; {} compensation(s) owed", system.label(), owed.len());
    let events = if owed.is_empty() { vec![exception_event(ctx, &eng, &ex)] } else { vec![] };
    eng.compensation_due.extend(owed);
    eng.raise(ex);
    Decision::changed(ctx, eng, events, Action::ProvisioningFailed, summary)
}

/// The owed compensations ran: their outcomes are recorded on the exceptions that owed
/// them, and those exceptions are announced. Final when the engagement has nothing else
/// to do for this event; otherwise a checkpoint, and the event is decided again.
fn compensated(eng: &Engagement, plan: &Plan, results: &[CommandResult], ctx: &StepContext<'_>) -> Next {
    let mut eng = eng.clone();
    let mut touched: Vec<ExceptionId> = Vec::new();
    for (cmd, result) in plan.commands.iter().zip(results) {
        let Command::CancelProject { project_id, .. } = cmd else { continue };
        let outcome = match result {
            CommandResult::Done => COMPENSATION_DONE.to_owned(),
            CommandResult::Refused(r) => format!("failed: {}", r.reason()),
            other => format!("failed: unexpected answer {other:?}"),
        };
        eng.compensation_due.retain(|c| &c.object_id != project_id);
        for ex in eng.exceptions.iter_mut() {
            for c in ex.compensations.iter_mut().filter(|c| &c.object_id == project_id && c.outcome == COMPENSATION_PENDING) {
                c.outcome = outcome.clone();
                if !touched.contains(&ex.exception_id) {
                    touched.push(ex.exception_id.clone());
                }
            }
        }
    }
    let summary = format!("{} compensation(s) performed", results.len());
    if eng.status == EngagementStatus::ProvisioningFailed {
        for x in eng.exceptions.iter_mut().filter(|x| touched.contains(&x.exception_id)) {
            x.announce_pending = false;
        }
        let events = eng.exceptions.iter().filter(|x| touched.contains(&x.exception_id)).map(|x| exception_event(ctx, &eng, x)).collect();
        Next::Done(Decision::changed(ctx, eng, events, Action::Compensated, summary))
    } else {
        // A corrected revision arrived meanwhile: the debt is paid, now decide for it (the
        // exceptions stay `announce_pending`: that decision's commit announces them).
        Next::Checkpoint(Decision::changed(ctx, eng, vec![], Action::Compensated, summary))
    }
}
