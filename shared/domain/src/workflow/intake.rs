//! Step 1, intake: validates and enriches a closed-won into a contract (pure: no commands).

use crate::engagement::{Action, Engagement, EngagementStatus, Rejection};
use crate::events::{
    BusinessEvent, ContractCreated, EngagementRejected, Envelope, EventType, ExceptionKind, OpportunityClosedWon, OutgoingEvent,
    engagement_id_for,
};
use crate::ids::ExceptionId;
use crate::intake::validate_and_enrich;
use crate::model::Contract;
use crate::reference::ReferenceData;
use crate::source_of_record::{self, NotApplied, Reached, System};

use super::{
    Decision, Input, Next, Stake, Step, StepContext, StepError, WorkflowStep, close_exception, exception, exception_event,
    raise_or_refresh, step_meta,
};

/// The intake step.
#[derive(Debug, Clone, Copy, Default)]
pub struct Intake;

impl WorkflowStep for Intake {
    step_meta!(Intake, [OpportunityClosedWon]);

    fn decide(&self, input: &Input<'_>, ctx: &StepContext<'_>) -> Result<Next, StepError> {
        let (current, event) = (input.current, input.event);
        match event {
            BusinessEvent::OpportunityClosedWon(ev) => {
                Ok(Next::Done(decide_closed_won(current.map(|s| s.engagement), ev, input.reference, ctx)))
            }
            other => Err(StepError::NotConsumed(Step::Intake, other.event_type().detail_type())),
        }
    }
}

fn contract_created_event(ctx: &StepContext<'_>, c: &Contract) -> OutgoingEvent {
    ctx.emit(
        EventType::ContractCreated,
        &c.engagement_id,
        format!("contract-created:{}:r{}", c.engagement_id, c.revision),
        &ContractCreated {
            engagement_id: c.engagement_id.clone(),
            contract_id: c.contract_id.clone(),
            opportunity_id: c.opportunity_id.clone(),
            revision: c.revision,
            customer_id: c.customer.id.clone(),
            legal_entity_id: c.legal_entity.id.clone(),
            total_value: c.total_value,
            approval_required: c.approval_required,
        },
    )
}

/// Validates and enriches a closed-won and decides what happens to the engagement.
///
/// - older or equal revision than already processed → ignored (reordering / duplicates);
/// - invalid → `Rejected` with every reason, `EngagementRejected` emitted;
/// - valid, not provisioned → contract created or amended, `ContractCreated` emitted
///   (a re-send without commercial change emits nothing);
/// - valid, already provisioned, terms changed → `ChangeOrderRequired` exception;
/// - whatever the CRM no longer owns (source-of-record rules: the commercial terms once the
///   contract is signed, the delivery attributes once the project exists) keeps the owner's
///   value; each such change is audited and raises (or refreshes) the engagement's
///   `DataStewardship` exception, which a later revision that agrees with the owners closes.
pub fn decide_closed_won(
    current: Option<&Engagement>,
    ev: &Envelope<OpportunityClosedWon>,
    reference: &ReferenceData,
    ctx: &StepContext<'_>,
) -> Decision {
    let opp = &ev.payload;
    let eng_id = engagement_id_for(&opp.opportunity_id);
    let mut eng = current
        .cloned()
        .unwrap_or_else(|| Engagement::new(eng_id.clone(), opp.opportunity_id.clone(), ctx.meta.correlation_id.clone(), ctx.now));

    if let Some(latest) = eng.latest_revision
        && opp.revision <= latest
    {
        let action = if opp.revision == latest { Action::DuplicateRevisionIgnored } else { Action::StaleRevisionIgnored };
        return Decision::unchanged(ctx, &eng_id, action, format!("revision {} ≤ processed revision {latest}", opp.revision));
    }
    eng.latest_revision = Some(opp.revision);

    match validate_and_enrich(opp, reference) {
        Err(reasons) => {
            let codes: Vec<&str> = reasons.iter().map(|r| r.code.as_str()).collect();
            let summary = format!("revision {} rejected: {}", opp.revision, codes.join(", "));
            eng.rejection =
                Some(Rejection { revision: opp.revision, event_id: ctx.meta.event_id.clone(), reasons: reasons.clone(), at: ctx.now });
            if !eng.status.is_provisioned() {
                eng.status = EngagementStatus::Rejected;
            }
            let event = ctx.emit(
                EventType::EngagementRejected,
                &eng_id,
                format!("engagement-rejected:{eng_id}:r{}", opp.revision),
                &EngagementRejected {
                    engagement_id: eng_id.clone(),
                    opportunity_id: opp.opportunity_id.clone(),
                    revision: opp.revision,
                    reasons,
                },
            );
            Decision::changed(ctx, eng, vec![event], Action::Rejected, summary)
        }
        Ok(proposed) => {
            eng.rejection = None;
            // Source of record: what the CRM no longer owns keeps the owner's value.
            let rules = &reference.workflow.source_of_record;
            let reached = Reached { contract_signed: eng.approval.is_some(), project_provisioned: eng.status.is_provisioned() };
            let (contract, not_applied) = match eng.contract.as_ref() {
                Some(old) => source_of_record::apply(rules, reached, System::Crm, old, proposed),
                None => (proposed, Vec::new()),
            };
            let stewardship = stewardship(&mut eng, &not_applied, opp.revision, ctx);
            let decision = decide_contract(eng, contract, opp.revision, ctx);
            match stewardship {
                None => decision,
                Some(event) => with_not_applied(decision, event, &not_applied),
            }
        }
    }
}

/// Raises (or refreshes) the engagement's CRM stewardship exception for what was not
/// applied, or closes it when this revision changed nothing the CRM does not own.
fn stewardship(eng: &mut Engagement, not_applied: &[NotApplied], revision: u64, ctx: &StepContext<'_>) -> Option<OutgoingEvent> {
    let id = ExceptionId::stewardship(&eng.engagement_id, System::Crm.as_str());
    if not_applied.is_empty() {
        close_exception(eng, &id, ctx.now, &format!("revision {revision} agrees with the owners"));
        return None;
    }
    let list: Vec<String> = not_applied.iter().map(ToString::to_string).collect();
    let message = format!(
        "CRM revision {revision} changes what the CRM no longer owns, not applied: {}. Correct the opportunity, or change it in its owner (a CLM amendment, the PSA project)",
        list.join("; ")
    );
    raise_or_refresh(eng, ctx, id, ExceptionKind::DataStewardship, message, Stake::default())
}

/// The decision, with the stewardship exception announced and what was not applied audited.
fn with_not_applied(mut decision: Decision, event: OutgoingEvent, not_applied: &[NotApplied]) -> Decision {
    let names: Vec<&str> = not_applied.iter().map(|n| n.attribute.as_str()).collect();
    if decision.audit.action == Action::RevisionWithoutCommercialChange {
        decision.audit.action = Action::AttributesNotApplied;
    }
    decision.audit.summary = format!("{}; not applied (not the CRM's): {}", decision.audit.summary, names.join(", "));
    decision.events.push(event);
    decision
}

/// What the (valid, ownership-checked) contract does to the engagement.
fn decide_contract(mut eng: Engagement, contract: Contract, revision: u64, ctx: &StepContext<'_>) -> Decision {
    let eng_id = eng.engagement_id.clone();
    let changed = eng.contract.as_ref().is_none_or(|old| !old.commercial_terms_equal(&contract));
    match eng.status {
        s if s.is_provisioned() => {
            if !changed {
                if let Some(c) = eng.contract.as_mut() {
                    c.revision = contract.revision;
                }
                return Decision::changed(
                    ctx,
                    eng,
                    vec![],
                    Action::RevisionWithoutCommercialChange,
                    format!("revision {} matches the provisioned contract", revision),
                );
            }
            let ex = exception(
                ctx,
                ExceptionId::change_order(&eng_id, revision),
                ExceptionKind::ChangeOrderRequired,
                format!(
                    "revision {} changes a provisioned engagement (value {} → {}): raise a change order",
                    revision,
                    eng.contract.as_ref().map(|c| c.total_value.to_string()).unwrap_or_default(),
                    contract.total_value
                ),
                vec![],
            );
            let event = exception_event(ctx, &eng, &ex);
            eng.pending_change = Some(contract);
            eng.raise(ex);
            Decision::changed(
                ctx,
                eng,
                vec![event],
                Action::ChangeOrderRequired,
                format!("revision {} changed after provisioning", revision),
            )
        }
        EngagementStatus::ContractCreated | EngagementStatus::AwaitingApproval if !changed => {
            if let Some(c) = eng.contract.as_mut() {
                c.revision = contract.revision;
            }
            Decision::changed(
                ctx,
                eng,
                vec![],
                Action::RevisionWithoutCommercialChange,
                format!("revision {} has no commercial change", revision),
            )
        }
        previous => {
            let action = if eng.contract.is_some() && previous != EngagementStatus::ProvisioningFailed {
                Action::ContractAmended
            } else {
                Action::ContractCreated
            };
            let summary = format!(
                "{} {} for {} ({}), revision {}",
                contract.contract_id, contract.total_value, contract.customer.id, contract.legal_entity.id, contract.revision
            );
            let event = contract_created_event(ctx, &contract);
            eng.contract = Some(contract);
            eng.status = EngagementStatus::ContractCreated;
            Decision::changed(ctx, eng, vec![event], action, summary)
        }
    }
}
