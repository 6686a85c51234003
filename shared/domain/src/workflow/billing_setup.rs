//! Step 3, billing setup: the billing schedule derived from the contract, created in the
//! ERP on the provisioned project; the engagement becomes active.

use crate::billing::{BillingError, derive_schedule, fixed_contract_value};
use crate::engagement::{Action, Engagement, EngagementStatus};
use crate::events::{BusinessEvent, EventType, ExceptionKind, ProjectActivated, ProjectProvisioned};
use crate::ids::ExceptionId;
use crate::metrics::{Metric, MetricUnit};
use crate::model::BillingSchedule;
use rust_decimal::Decimal;

use super::{
    Command, CommandResult, Decision, Input, Next, ObjectStatus, Outcome, Plan, Purpose, Sequence, Step, StepContext, StepError,
    WorkflowStep, close_dead_letters_of, planned_on, raise, step_meta, unexpected,
};

/// The billing-setup step.
#[derive(Debug, Clone, Copy, Default)]
pub struct BillingSetup;

impl WorkflowStep for BillingSetup {
    step_meta!(BillingSetup, [ProjectProvisioned]);

    fn decide(&self, input: &Input<'_>, ctx: &StepContext<'_>) -> Result<Next, StepError> {
        let (current, event) = (input.current, input.event);
        match event {
            BusinessEvent::ProjectProvisioned(ev) => decide_billing_setup(current.map(|s| s.engagement), &ev.payload, ctx),
            other => Err(StepError::NotConsumed(Step::BillingSetup, other.event_type().detail_type())),
        }
    }

    fn finalize(&self, done: &Outcome<'_>, ctx: &StepContext<'_>) -> Result<Next, StepError> {
        let (plan, results) = (done.plan, done.results);
        let eng = planned_on(done, Step::BillingSetup)?;
        let (Some(Command::CreateBillingSchedule { erp_project_id, schedule }), [result]) = (plan.commands.first(), results) else {
            return Err(unexpected(Step::BillingSetup, plan, results));
        };
        if eng.status != EngagementStatus::Provisioned || eng.erp_project_id.as_deref() != Some(erp_project_id.as_str()) {
            return Ok(Next::Done(Decision::unchanged(
                ctx,
                &eng.engagement_id,
                Action::BillingSetupSuperseded,
                format!("status is now {}", eng.status.as_str()),
            )));
        }
        Ok(Next::Done(match result {
            CommandResult::Object(o) if o.status == ObjectStatus::Active => {
                billing_activated(eng.clone(), erp_project_id, schedule, &o.id, ctx)
            }
            CommandResult::Object(o) => billing_setup_failed(eng.clone(), &format!("schedule {} is cancelled in the ERP", o.id), ctx),
            CommandResult::Refused(r) => billing_setup_failed(eng.clone(), &r.reason(), ctx),
            _ => return Err(unexpected(Step::BillingSetup, plan, results)),
        }))
    }
}

/// Derives the billing schedule for a provisioned engagement.
pub fn decide_billing_setup(current: Option<&Engagement>, ev: &ProjectProvisioned, ctx: &StepContext<'_>) -> Result<Next, StepError> {
    let eng = current.ok_or_else(|| StepError::MissingEngagement(ev.engagement_id.clone(), "ProjectProvisioned"))?;
    if eng.status != EngagementStatus::Provisioned {
        return Ok(Next::Done(Decision::unchanged(
            ctx,
            &eng.engagement_id,
            Action::BillingSetupSkipped,
            format!("status is {}", eng.status.as_str()),
        )));
    }
    if eng.psa_project_id.as_deref() != Some(ev.psa_project_id.as_str()) {
        return Ok(Next::Done(Decision::unchanged(
            ctx,
            &eng.engagement_id,
            Action::BillingSetupSkipped,
            "event is for a superseded provisioning attempt",
        )));
    }
    let contract = eng.contract.as_ref().ok_or_else(|| StepError::MissingContract(eng.engagement_id.clone(), eng.status.as_str()))?;
    let erp_project_id =
        eng.erp_project_id.clone().ok_or_else(|| StepError::MissingContract(eng.engagement_id.clone(), "provisioned without ERP id"))?;
    let schedule = derive_schedule(contract, &eng.milestones)?;
    // Invariant: fixed items add up to the fixed part of the contract exactly.
    let expected = fixed_contract_value(contract).map_err(BillingError::from)?;
    if expected != schedule.fixed_total {
        return Err(StepError::Billing(BillingError::Invariant(format!(
            "schedule fixed total {} ≠ contract {expected}",
            schedule.fixed_total
        ))));
    }
    Ok(Next::Run(Plan::new(
        Purpose::BillingSchedule,
        vec![Command::CreateBillingSchedule { erp_project_id, schedule }],
        Sequence::StopOnFailure,
    )))
}

/// The schedule exists in the ERP: `Active`, emit `ProjectActivated`.
pub fn billing_activated(
    mut eng: Engagement,
    erp_project_id: &str,
    schedule: &BillingSchedule,
    erp_schedule_id: &str,
    ctx: &StepContext<'_>,
) -> Decision {
    eng.status = EngagementStatus::Active;
    eng.erp_billing_schedule_id = Some(erp_schedule_id.to_owned());
    close_dead_letters_of(&mut eng, Step::BillingSetup, ctx.now, "billing schedule created");
    for x in eng.exceptions.iter_mut().filter(|x| x.open && x.kind == ExceptionKind::BillingSetupFailed) {
        x.close(ctx.now, format!("billing schedule {erp_schedule_id} created"));
    }
    let payload = ProjectActivated {
        engagement_id: eng.engagement_id.clone(),
        psa_project_id: eng.psa_project_id.clone().unwrap_or_default(),
        erp_project_id: erp_project_id.to_owned(),
        erp_billing_schedule_id: erp_schedule_id.to_owned(),
        fixed_total: schedule.fixed_total,
        time_and_materials_cap: schedule.time_and_materials_cap,
    };
    let event = ctx.emit(EventType::ProjectActivated, &eng.engagement_id, format!("project-activated:{}", schedule.schedule_id), &payload);
    let summary = format!(
        "schedule {erp_schedule_id}: {} items, fixed {}, T&M cap {}",
        schedule.items.len(),
        schedule.fixed_total,
        schedule.time_and_materials_cap
    );
    eng.billing_schedule = Some(schedule.clone());
    // Closed-won to active: the flow's lead time (the dashboard's p95, an alarm on it).
    let lead = Decimal::from((ctx.now - eng.created_at).num_milliseconds().max(0)) / Decimal::from(1000);
    let mut d = Decision::changed(ctx, eng, vec![event], Action::Activated, summary);
    d.metrics.push(Metric::new("ClosedWonToActiveSeconds", MetricUnit::Seconds, lead, &[]));
    d
}

/// The ERP refused the schedule permanently.
pub fn billing_setup_failed(mut eng: Engagement, reason: &str, ctx: &StepContext<'_>) -> Decision {
    eng.status = EngagementStatus::BillingSetupFailed;
    let id = ExceptionId::billing_setup(&eng.engagement_id, eng.provisioning_attempt);
    let event = raise(&mut eng, ctx, id, ExceptionKind::BillingSetupFailed, format!("ERP refused the billing schedule: {reason}"));
    Decision::changed(ctx, eng, vec![event], Action::BillingSetupFailed, "ERP refused the billing schedule")
}
