//! Step 4, CRM write-back: the engagement's status, external ids and errors onto the CRM
//! opportunity, ordered per engagement and reordering-safe (a monotonic sync version).
//!
//! It reads the engagement and writes only its own aggregate, the CRM sync state (what the
//! opportunity was last sent) — the engagement item only when a write-back exception opens
//! or closes — so it never contends with the steps that move the engagement.

use crate::aggregate::{AggregateBody, AggregateKey, CrmSyncState, Load};
use crate::engagement::{Action, CrmOpportunityUpdate, CrmSync, CrmWriteResult, Engagement, EngagementStatus};
use crate::events::{BusinessEvent, ExceptionKind};
use crate::ids::{EngagementId, ExceptionId};
use crate::source_of_record::SourceOfRecord;

use super::{
    Command, CommandResult, CrmWrite, Decision, Input, Next, Outcome, Plan, Purpose, Sequence, Snapshot, Step, StepContext, StepError,
    WorkflowStep, close_dead_letters_of, planned_on, raise, step_meta, unexpected,
};

/// CRM text fields are 255 characters (Salesforce `Text(255)`).
pub const CRM_ERROR_FIELD_LEN: usize = 255;

/// The CRM write-back step.
#[derive(Debug, Clone, Copy, Default)]
pub struct CrmWriteback;

impl WorkflowStep for CrmWriteback {
    step_meta!(
        CrmWriteback,
        [ContractCreated, EngagementRejected, ProjectProvisioned, ProjectActivated, ExceptionRaised, ExceptionResolved]
    );

    fn loads(&self, event: &BusinessEvent) -> Vec<Load> {
        vec![Load::Key(AggregateKey::crm_sync(&event.engagement_id()))]
    }

    fn decide(&self, input: &Input<'_>, ctx: &StepContext<'_>) -> Result<Next, StepError> {
        let (current, event) = (input.current, input.event);
        if !self.consumes().contains(&event.event_type()) {
            return Err(StepError::NotConsumed(Step::CrmWriteback, event.event_type().detail_type()));
        }
        let rules = &input.reference.workflow.source_of_record;
        decide_writeback(current, input.others.crm_sync(&event.engagement_id()), &event.engagement_id(), rules, ctx)
    }

    fn finalize(&self, done: &Outcome<'_>, ctx: &StepContext<'_>) -> Result<Next, StepError> {
        let (plan, results) = (done.plan, done.results);
        let eng = planned_on(done, Step::CrmWriteback)?;
        let (Some(Command::UpdateOpportunity(update)), [result]) = (plan.commands.first(), results) else {
            return Err(unexpected(Step::CrmWriteback, plan, results));
        };
        Ok(Next::Done(match result {
            CommandResult::Crm(CrmWrite::Applied) => written_back(eng, update.clone(), false, ctx),
            CommandResult::Crm(CrmWrite::Stale) => written_back(eng, update.clone(), true, ctx),
            CommandResult::Refused(r) => writeback_failed(eng.clone(), update.clone(), &r.reason(), ctx),
            _ => return Err(unexpected(Step::CrmWriteback, plan, results)),
        }))
    }
}

/// True for exceptions the write-back reports to the CRM: not its own failures (it could
/// not write them, and writing would clear them).
fn reported(e: &crate::engagement::EngagementException) -> bool {
    e.open && e.kind != ExceptionKind::CrmWritebackFailed && !(e.kind == ExceptionKind::DeadLettered && e.step == Step::CrmWriteback.name())
}

/// The CRM fields for the engagement's current state: only those the source-of-record
/// rules let the write-back send (`workflow.source_of_record.crm_writeback`; the rules
/// always allow the status and the engagement id).
pub fn crm_update_for(eng: &Engagement, version: u64, rules: &SourceOfRecord) -> CrmOpportunityUpdate {
    let allowed = |field: &str, v: Option<String>| v.filter(|_| rules.crm_may_receive(field));
    let mut errors: Vec<String> = Vec::new();
    if let Some(r) = &eng.rejection {
        errors.extend(r.reasons.iter().map(|i| format!("{}: {}", i.field, i.message)));
    }
    errors.extend(eng.exceptions.iter().filter(|e| reported(e)).map(|e| e.message.clone()));
    let sync_status = if !errors.is_empty() {
        "Error"
    } else if eng.status == EngagementStatus::Active {
        "Synced"
    } else {
        "In Progress"
    };
    CrmOpportunityUpdate {
        opportunity_id: eng.opportunity_id.clone(),
        sync_version: version,
        sync_status: sync_status.to_owned(),
        engagement_status: eng.status.as_str().to_owned(),
        engagement_id: eng.engagement_id.clone(),
        contract_id: eng.contract.as_ref().map(|c| c.contract_id.clone()).filter(|_| rules.crm_may_receive("contract_id")),
        psa_project_id: allowed("psa_project_id", eng.psa_project_id.clone()),
        erp_project_id: allowed("erp_project_id", eng.erp_project_id.clone()),
        erp_billing_schedule_id: allowed("erp_billing_schedule_id", eng.erp_billing_schedule_id.clone()),
        last_error: allowed("last_error", (!errors.is_empty()).then(|| truncate_chars(&errors.join("; "), CRM_ERROR_FIELD_LEN))),
    }
}

fn truncate_chars(s: &str, max: usize) -> String {
    if s.chars().count() <= max {
        return s.to_owned();
    }
    let mut out: String = s.chars().take(max - 1).collect();
    out.push('…');
    out
}

/// Compares the engagement's state with what the CRM last received.
pub fn decide_writeback(
    current: Option<Snapshot<'_>>,
    last: Option<&CrmSyncState>,
    engagement_id: &EngagementId,
    rules: &SourceOfRecord,
    ctx: &StepContext<'_>,
) -> Result<Next, StepError> {
    let s = current.ok_or_else(|| StepError::MissingEngagement(engagement_id.clone(), "write-back"))?;
    let update = crm_update_for(s.engagement, s.version, rules);
    if last.is_some_and(|c| c.last.result == CrmWriteResult::Ok && c.last.update.same_content(&update)) {
        return Ok(Next::Done(Decision::unchanged(
            ctx,
            engagement_id,
            Action::CrmAlreadyCurrent,
            format!("CRM already shows {}", update.engagement_status),
        )));
    }
    Ok(Next::Run(Plan {
        purpose: Purpose::CrmUpdate,
        commands: vec![Command::UpdateOpportunity(update)],
        sequence: Sequence::StopOnFailure,
        claim: None,
        claim_others: Vec::new(),
    }))
}

/// The CRM accepted the update (or already had a newer one): the sync state records it;
/// the engagement is written only to close earlier write-back exceptions.
pub fn written_back(eng: &Engagement, update: CrmOpportunityUpdate, stale: bool, ctx: &StepContext<'_>) -> Decision {
    let summary = format!("CRM {} → {} / {}", eng.opportunity_id, update.sync_status, update.engagement_status);
    let action = if stale { Action::CrmUpdateSuperseded } else { Action::CrmUpdated };
    let sync = AggregateBody::CrmSync(CrmSyncState {
        engagement_id: eng.engagement_id.clone(),
        last: CrmSync { update, result: CrmWriteResult::Ok, at: ctx.now },
    });
    let stale_exception = |e: &crate::engagement::EngagementException| {
        e.open
            && (e.kind == ExceptionKind::CrmWritebackFailed
                || (e.kind == ExceptionKind::DeadLettered && e.step == Step::CrmWriteback.name()))
    };
    if !eng.exceptions.iter().any(stale_exception) {
        return Decision::unchanged(ctx, &eng.engagement_id, action, summary).with(sync);
    }
    // A write that succeeds resolves earlier write-back failures.
    let mut eng = eng.clone();
    for e in eng.exceptions.iter_mut().filter(|e| e.open && e.kind == ExceptionKind::CrmWritebackFailed) {
        e.close(ctx.now, "a later write-back succeeded".into());
    }
    close_dead_letters_of(&mut eng, Step::CrmWriteback, ctx.now, "a later write-back succeeded");
    Decision::changed(ctx, eng, vec![], action, summary).with(sync)
}

/// The CRM refused the update permanently: recorded on the engagement and raised as an
/// exception (write-back does not consume its own `crm_writeback_failed` exceptions).
pub fn writeback_failed(mut eng: Engagement, update: CrmOpportunityUpdate, reason: &str, ctx: &StepContext<'_>) -> Decision {
    let id = ExceptionId::crm_writeback(&eng.engagement_id, update.sync_version);
    let event = raise(&mut eng, ctx, id, ExceptionKind::CrmWritebackFailed, format!("CRM refused the status update: {reason}"));
    let sync = AggregateBody::CrmSync(CrmSyncState {
        engagement_id: eng.engagement_id.clone(),
        last: CrmSync { update, result: CrmWriteResult::Error { reason: reason.to_owned() }, at: ctx.now },
    });
    Decision::changed(ctx, eng, vec![event], Action::CrmWritebackFailed, "CRM refused the status update").with(sync)
}
