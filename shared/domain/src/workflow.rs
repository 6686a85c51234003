//! Workflow steps as pure functions: `(current state, event, reference data, now) →
//! decision`. A decision is the new engagement state (if it changed), the events to emit
//! and the audit entry. Steps with an external side effect first return a *plan* (the
//! commands for PSA / ERP / CRM); the shell executes it and feeds the outcome back into
//! the matching pure function.

use chrono::{DateTime, Utc};

use crate::billing::{BillingError, derive_milestones, derive_schedule, fixed_contract_value};
use crate::engagement::{
    Approval, AuditEntry, CrmOpportunityUpdate, CrmSync, Engagement, EngagementException, EngagementStatus, Rejection,
};
use crate::events::{
    Compensation, ContractApproved, ContractCreated, EngagementRejected, Envelope, EventMeta, EventType, ExceptionKind, ExceptionRaised,
    OpportunityClosedWon, OutgoingEvent, ProjectActivated, ProjectProvisioned, engagement_id_for,
};
use crate::intake::validate_and_enrich;
use crate::model::{BillingSchedule, Contract, ProjectSpec};
use crate::reference::ReferenceData;

/// Step names (also the Lambda function / binary names).
pub mod step {
    /// Closed-won validation and contract creation.
    pub const INTAKE: &str = "intake";
    /// PSA + ERP project provisioning.
    pub const PROVISION: &str = "provision";
    /// Billing schedule creation and activation.
    pub const BILLING_SETUP: &str = "billing-setup";
    /// CRM status write-back.
    pub const CRM_WRITEBACK: &str = "crm-writeback";
}

/// CRM text fields are 255 characters (Salesforce `Text(255)`).
pub const CRM_ERROR_FIELD_LEN: usize = 255;

/// Who is deciding and on behalf of which event.
#[derive(Debug, Clone)]
pub struct StepContext<'a> {
    /// Step name.
    pub step: &'static str,
    /// Type of the event being processed.
    pub event_type: EventType,
    /// Its envelope metadata.
    pub meta: &'a EventMeta,
    /// Time of processing (from the clock port).
    pub now: DateTime<Utc>,
}

impl StepContext<'_> {
    fn audit(&self, engagement_id: &str, action: &str, summary: impl Into<String>) -> AuditEntry {
        AuditEntry {
            engagement_id: engagement_id.to_owned(),
            at: self.now,
            step: self.step.to_owned(),
            event_id: self.meta.event_id.clone(),
            event_type: self.event_type.detail_type().to_owned(),
            correlation_id: self.meta.correlation_id.clone(),
            action: action.to_owned(),
            summary: summary.into(),
        }
    }

    fn emit<P: serde::Serialize>(&self, t: EventType, engagement_id: &str, key: String, payload: &P) -> OutgoingEvent {
        OutgoingEvent::new(t, engagement_id, self.meta, key, self.now, payload)
    }
}

/// The outcome of a step: state to persist, events to emit, one audit entry.
#[derive(Debug, Clone, PartialEq)]
pub struct Decision {
    /// Engagement id.
    pub engagement_id: String,
    /// New state, or `None` when the state is unchanged (only audit is written).
    pub engagement: Option<Engagement>,
    /// Events to publish after the state is committed.
    pub events: Vec<OutgoingEvent>,
    /// Timeline entry.
    pub audit: AuditEntry,
}

impl Decision {
    fn unchanged(ctx: &StepContext<'_>, engagement_id: &str, action: &str, summary: impl Into<String>) -> Self {
        Self {
            engagement_id: engagement_id.to_owned(),
            engagement: None,
            events: Vec::new(),
            audit: ctx.audit(engagement_id, action, summary),
        }
    }

    fn changed(ctx: &StepContext<'_>, mut eng: Engagement, events: Vec<OutgoingEvent>, action: &str, summary: impl Into<String>) -> Self {
        eng.updated_at = ctx.now;
        let audit = ctx.audit(&eng.engagement_id, action, summary);
        Self { engagement_id: eng.engagement_id.clone(), engagement: Some(eng), events, audit }
    }

    /// The audit action (`contract_created`, …).
    pub fn action(&self) -> &str {
        &self.audit.action
    }
}

/// A step precondition the data cannot satisfy (a bug or corrupted state, not bad input).
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum StepError {
    /// The engagement a derived event refers to is not in the store.
    #[error("engagement {0} not found for {1}")]
    MissingEngagement(String, &'static str),
    /// State says a contract exists but it does not.
    #[error("engagement {0} has no contract in status {1}")]
    MissingContract(String, &'static str),
    /// Reference data no longer has what a stored contract refers to.
    #[error("reference data has no {0} `{1}`")]
    MissingReference(&'static str, String),
    /// Schedule derivation failed.
    #[error(transparent)]
    Billing(#[from] BillingError),
}

fn exception(
    ctx: &StepContext<'_>,
    id: String,
    kind: ExceptionKind,
    message: String,
    compensations: Vec<Compensation>,
) -> EngagementException {
    EngagementException { exception_id: id, kind, step: ctx.step.to_owned(), message, compensations, raised_at: ctx.now, open: true }
}

fn exception_event(ctx: &StepContext<'_>, eng_id: &str, ex: &EngagementException) -> OutgoingEvent {
    ctx.emit(
        EventType::ExceptionRaised,
        eng_id,
        format!("exception:{}", ex.exception_id),
        &ExceptionRaised {
            exception_id: ex.exception_id.clone(),
            engagement_id: eng_id.to_owned(),
            kind: ex.kind,
            step: ex.step.clone(),
            message: ex.message.clone(),
            compensations: ex.compensations.clone(),
        },
    )
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

// ---------------------------------------------------------------------------------------
// Step 1: closed-won intake
// ---------------------------------------------------------------------------------------

/// Validates and enriches a closed-won and decides what happens to the engagement.
///
/// - older or equal revision than already processed → ignored (reordering / duplicates);
/// - invalid → `Rejected` with every reason, `EngagementRejected` emitted;
/// - valid, not provisioned → contract created or amended, `ContractCreated` emitted
///   (a re-send without commercial change emits nothing);
/// - valid, already provisioned, terms changed → `ChangeOrderRequired` exception.
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
        let action = if opp.revision == latest { "duplicate_revision_ignored" } else { "stale_revision_ignored" };
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
            Decision::changed(ctx, eng, vec![event], "rejected", summary)
        }
        Ok(contract) => {
            eng.rejection = None;
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
                            "revision_without_commercial_change",
                            format!("revision {} matches the provisioned contract", opp.revision),
                        );
                    }
                    let ex = exception(
                        ctx,
                        format!("EXC-{eng_id}-CO-r{}", opp.revision),
                        ExceptionKind::ChangeOrderRequired,
                        format!(
                            "revision {} changes a provisioned engagement (value {} → {}): raise a change order",
                            opp.revision,
                            eng.contract.as_ref().map(|c| c.total_value.to_string()).unwrap_or_default(),
                            contract.total_value
                        ),
                        vec![],
                    );
                    let event = exception_event(ctx, &eng_id, &ex);
                    eng.pending_change = Some(contract);
                    eng.raise(ex);
                    Decision::changed(
                        ctx,
                        eng,
                        vec![event],
                        "change_order_required",
                        format!("revision {} changed after provisioning", opp.revision),
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
                        "revision_without_commercial_change",
                        format!("revision {} has no commercial change", opp.revision),
                    )
                }
                previous => {
                    let action = if eng.contract.is_some() && previous != EngagementStatus::ProvisioningFailed {
                        "contract_amended"
                    } else {
                        "contract_created"
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
    }
}

// ---------------------------------------------------------------------------------------
// Step 2: provisioning
// ---------------------------------------------------------------------------------------

/// What triggered the provisioning step.
#[derive(Debug, Clone, Copy)]
pub enum ProvisionTrigger<'a> {
    /// Intake created / amended the contract.
    ContractCreated(&'a ContractCreated),
    /// CLM approved the statement of work.
    ContractApproved(&'a ContractApproved),
}

/// Commands for the delivery systems: create-or-get the project in PSA, then in ERP.
#[derive(Debug, Clone, PartialEq)]
pub struct ProvisionPlan {
    /// State to commit with the outcome (approval recorded, attempt incremented).
    pub engagement: Engagement,
    /// PSA project.
    pub psa: ProjectSpec,
    /// ERP project.
    pub erp: ProjectSpec,
}

/// Either a pure decision or a plan to execute.
#[derive(Debug, Clone, PartialEq)]
// Short-lived values passed by move once; boxing would only add an allocation.
#[allow(clippy::large_enum_variant)]
pub enum Provisioning {
    /// Nothing to do in external systems.
    Decided(Decision),
    /// Execute the plan, then call [`provisioned`] or [`provisioning_failed`].
    Execute(Box<ProvisionPlan>),
}

/// Decides whether to provision now (approval rule as data), wait, or ignore.
pub fn decide_provisioning(
    current: Option<&Engagement>,
    trigger: ProvisionTrigger<'_>,
    reference: &ReferenceData,
    ctx: &StepContext<'_>,
) -> Result<Provisioning, StepError> {
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
    let keep = |eng: Engagement, action: &str, summary: String| {
        if approval_recorded {
            Decision::changed(ctx, eng, vec![], action, summary)
        } else {
            Decision::unchanged(ctx, &eng_id, action, summary)
        }
    };
    match eng.status {
        EngagementStatus::AwaitingContract => {
            Ok(Provisioning::Decided(keep(eng, "approval_recorded", "CLM approval recorded; waiting for the closed-won".into())))
        }
        EngagementStatus::Rejected => {
            Ok(Provisioning::Decided(keep(eng, "not_provisioned_rejected", "latest revision is rejected; nothing to provision".into())))
        }
        EngagementStatus::ProvisioningFailed => {
            Ok(Provisioning::Decided(keep(eng, "not_provisioned_failed", "provisioning failed; a corrected revision restarts it".into())))
        }
        EngagementStatus::Provisioning if eng.claimed_by.as_deref() != Some(ctx.meta.idempotency_key.as_str()) => {
            let owner = eng.claimed_by.clone().unwrap_or_default();
            Ok(Provisioning::Decided(keep(eng, "provisioning_in_progress", format!("provisioning is claimed by {owner}"))))
        }
        s if s.is_provisioned() && s != EngagementStatus::Provisioning => {
            Ok(Provisioning::Decided(keep(eng, "already_provisioned", format!("already {}", s.as_str()))))
        }
        _ => {
            let contract = eng.contract.clone().ok_or_else(|| StepError::MissingContract(eng_id.clone(), eng.status.as_str()))?;
            if contract.approval_required && eng.approval.is_none() {
                let was_waiting = eng.status == EngagementStatus::AwaitingApproval;
                eng.status = EngagementStatus::AwaitingApproval;
                let summary = format!("service lines {} need CLM approval before provisioning", contract.service_lines.join(", "));
                return Ok(Provisioning::Decided(if was_waiting && !approval_recorded {
                    Decision::unchanged(ctx, &eng_id, "awaiting_approval", summary)
                } else {
                    Decision::changed(ctx, eng, vec![], "awaiting_approval", summary)
                }));
            }
            let template = reference
                .project_templates
                .get(&contract.project_template_id)
                .ok_or_else(|| StepError::MissingReference("project template", contract.project_template_id.clone()))?;
            let milestones = derive_milestones(&contract, template)?;
            if eng.status != EngagementStatus::Provisioning {
                // A new claim; a retry of our own claim keeps its attempt (same external keys).
                eng.provisioning_attempt += 1;
                eng.status = EngagementStatus::Provisioning;
                eng.claimed_by = Some(ctx.meta.idempotency_key.clone());
            }
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
            Ok(Provisioning::Execute(Box::new(ProvisionPlan { engagement: eng, psa, erp })))
        }
    }
}

/// Both projects exist: `Provisioned`, emit `ProjectProvisioned`.
pub fn provisioned(plan: ProvisionPlan, psa_project_id: String, erp_project_id: String, ctx: &StepContext<'_>) -> Decision {
    let mut eng = plan.engagement;
    eng.status = EngagementStatus::Provisioned;
    eng.claimed_by = None;
    eng.psa_project_id = Some(psa_project_id.clone());
    eng.erp_project_id = Some(erp_project_id.clone());
    let event = ctx.emit(
        EventType::ProjectProvisioned,
        &eng.engagement_id,
        format!("project-provisioned:{}", plan.psa.external_key),
        &ProjectProvisioned {
            engagement_id: eng.engagement_id.clone(),
            psa_project_id: psa_project_id.clone(),
            erp_project_id: erp_project_id.clone(),
            milestone_count: eng.milestones.len() as u32,
        },
    );
    let summary = format!("PSA {psa_project_id}, ERP {erp_project_id}, {} milestones", eng.milestones.len());
    Decision::changed(ctx, eng, vec![event], "provisioned", summary)
}

/// A system refused the project permanently: `ProvisioningFailed`, exception raised with
/// the compensations already performed.
pub fn provisioning_failed(
    plan: ProvisionPlan,
    system: &str,
    reason: &str,
    compensations: Vec<Compensation>,
    ctx: &StepContext<'_>,
) -> Decision {
    let mut eng = plan.engagement;
    eng.status = EngagementStatus::ProvisioningFailed;
    eng.claimed_by = None;
    eng.milestones.clear();
    let ex = exception(
        ctx,
        format!("EXC-{}-PROV-{}", eng.engagement_id, eng.provisioning_attempt),
        ExceptionKind::ProvisioningFailed,
        format!("{system} refused the project: {reason}"),
        compensations,
    );
    let event = exception_event(ctx, &eng.engagement_id, &ex);
    let summary = format!("{system} refused the project; {} compensation(s)", ex.compensations.len());
    eng.raise(ex);
    Decision::changed(ctx, eng, vec![event], "provisioning_failed", summary)
}

// ---------------------------------------------------------------------------------------
// Step 3: billing setup
// ---------------------------------------------------------------------------------------

/// Command: create `schedule` in the ERP (create-or-get by `schedule_id`).
#[derive(Debug, Clone, PartialEq)]
pub struct BillingPlan {
    /// State to commit with the outcome.
    pub engagement: Engagement,
    /// ERP project the schedule hangs off.
    pub erp_project_id: String,
    /// Derived schedule.
    pub schedule: BillingSchedule,
}

/// Either a pure decision or a plan to execute.
#[derive(Debug, Clone, PartialEq)]
// Short-lived values passed by move once; boxing would only add an allocation.
#[allow(clippy::large_enum_variant)]
pub enum BillingSetup {
    /// Nothing to do in the ERP.
    Decided(Decision),
    /// Execute, then call [`billing_activated`] or [`billing_setup_failed`].
    Execute(Box<BillingPlan>),
}

/// Derives the billing schedule for a provisioned engagement.
pub fn decide_billing_setup(
    current: Option<&Engagement>,
    ev: &ProjectProvisioned,
    ctx: &StepContext<'_>,
) -> Result<BillingSetup, StepError> {
    let eng = current.ok_or_else(|| StepError::MissingEngagement(ev.engagement_id.clone(), "ProjectProvisioned"))?;
    match eng.status {
        EngagementStatus::Provisioned => {}
        s => {
            return Ok(BillingSetup::Decided(Decision::unchanged(
                ctx,
                &eng.engagement_id,
                "billing_setup_skipped",
                format!("status is {}", s.as_str()),
            )));
        }
    }
    if eng.psa_project_id.as_deref() != Some(ev.psa_project_id.as_str()) {
        return Ok(BillingSetup::Decided(Decision::unchanged(
            ctx,
            &eng.engagement_id,
            "billing_setup_skipped",
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
    Ok(BillingSetup::Execute(Box::new(BillingPlan { engagement: eng.clone(), erp_project_id, schedule })))
}

/// The schedule exists in the ERP: `Active`, emit `ProjectActivated`.
pub fn billing_activated(plan: BillingPlan, erp_schedule_id: String, ctx: &StepContext<'_>) -> Decision {
    let mut eng = plan.engagement;
    eng.status = EngagementStatus::Active;
    eng.erp_billing_schedule_id = Some(erp_schedule_id.clone());
    let payload = ProjectActivated {
        engagement_id: eng.engagement_id.clone(),
        psa_project_id: eng.psa_project_id.clone().unwrap_or_default(),
        erp_project_id: plan.erp_project_id.clone(),
        erp_billing_schedule_id: erp_schedule_id.clone(),
        fixed_total: plan.schedule.fixed_total,
        time_and_materials_cap: plan.schedule.time_and_materials_cap,
    };
    let event =
        ctx.emit(EventType::ProjectActivated, &eng.engagement_id, format!("project-activated:{}", plan.schedule.schedule_id), &payload);
    let summary = format!(
        "schedule {erp_schedule_id}: {} items, fixed {}, T&M cap {}",
        plan.schedule.items.len(),
        plan.schedule.fixed_total,
        plan.schedule.time_and_materials_cap
    );
    eng.billing_schedule = Some(plan.schedule);
    Decision::changed(ctx, eng, vec![event], "activated", summary)
}

/// The ERP refused the schedule permanently.
pub fn billing_setup_failed(plan: BillingPlan, reason: &str, ctx: &StepContext<'_>) -> Decision {
    let mut eng = plan.engagement;
    eng.status = EngagementStatus::BillingSetupFailed;
    let ex = exception(
        ctx,
        format!("EXC-{}-BILL-{}", eng.engagement_id, eng.provisioning_attempt),
        ExceptionKind::BillingSetupFailed,
        format!("ERP refused the billing schedule: {reason}"),
        vec![],
    );
    let event = exception_event(ctx, &eng.engagement_id, &ex);
    eng.raise(ex);
    Decision::changed(ctx, eng, vec![event], "billing_setup_failed", "ERP refused the billing schedule")
}

// ---------------------------------------------------------------------------------------
// Step 4: CRM write-back
// ---------------------------------------------------------------------------------------

/// The CRM fields for the engagement's current state.
pub fn crm_update_for(eng: &Engagement, version: u64) -> CrmOpportunityUpdate {
    let mut errors: Vec<String> = Vec::new();
    if let Some(r) = &eng.rejection {
        errors.extend(r.reasons.iter().map(|i| format!("{}: {}", i.field, i.message)));
    }
    errors.extend(eng.exceptions.iter().filter(|e| e.open && e.kind != ExceptionKind::CrmWritebackFailed).map(|e| e.message.clone()));
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
        contract_id: eng.contract.as_ref().map(|c| c.contract_id.clone()),
        psa_project_id: eng.psa_project_id.clone(),
        erp_project_id: eng.erp_project_id.clone(),
        erp_billing_schedule_id: eng.erp_billing_schedule_id.clone(),
        last_error: (!errors.is_empty()).then(|| truncate_chars(&errors.join("; "), CRM_ERROR_FIELD_LEN)),
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

/// Command: write `update` to the CRM opportunity.
#[derive(Debug, Clone, PartialEq)]
pub struct WritebackPlan {
    /// State to commit with the outcome.
    pub engagement: Engagement,
    /// Fields to write.
    pub update: CrmOpportunityUpdate,
}

/// Either nothing to write or a write to perform.
#[derive(Debug, Clone, PartialEq)]
// Short-lived values passed by move once; boxing would only add an allocation.
#[allow(clippy::large_enum_variant)]
pub enum Writeback {
    /// The CRM already shows this state.
    Decided(Decision),
    /// Execute, then call [`written_back`] or [`writeback_failed`].
    Execute(Box<WritebackPlan>),
}

/// Compares the engagement's state with what the CRM last received.
pub fn decide_writeback(current: Option<(&Engagement, u64)>, engagement_id: &str, ctx: &StepContext<'_>) -> Result<Writeback, StepError> {
    let (eng, version) = current.ok_or_else(|| StepError::MissingEngagement(engagement_id.to_owned(), "write-back"))?;
    let update = crm_update_for(eng, version);
    if eng.crm_sync.as_ref().is_some_and(|s| s.result == "ok" && s.update.same_content(&update)) {
        return Ok(Writeback::Decided(Decision::unchanged(
            ctx,
            engagement_id,
            "crm_already_current",
            format!("CRM already shows {}", update.engagement_status),
        )));
    }
    Ok(Writeback::Execute(Box::new(WritebackPlan { engagement: eng.clone(), update })))
}

/// The CRM accepted the update (or already had a newer one).
pub fn written_back(plan: WritebackPlan, stale: bool, ctx: &StepContext<'_>) -> Decision {
    let mut eng = plan.engagement;
    let summary = format!("CRM {} → {} / {}", eng.opportunity_id, plan.update.sync_status, plan.update.engagement_status);
    // Resolve a previous write-back failure once a write succeeds.
    for e in eng.exceptions.iter_mut().filter(|e| e.kind == ExceptionKind::CrmWritebackFailed) {
        e.open = false;
    }
    eng.crm_sync = Some(CrmSync { update: plan.update, result: "ok".into(), at: ctx.now });
    Decision::changed(ctx, eng, vec![], if stale { "crm_update_superseded" } else { "crm_updated" }, summary)
}

/// The CRM refused the update permanently: recorded on the engagement and raised as an
/// exception (write-back does not consume its own `crm_writeback_failed` exceptions).
pub fn writeback_failed(plan: WritebackPlan, reason: &str, ctx: &StepContext<'_>) -> Decision {
    let mut eng = plan.engagement;
    let ex = exception(
        ctx,
        format!("EXC-{}-CRM-v{}", eng.engagement_id, plan.update.sync_version),
        ExceptionKind::CrmWritebackFailed,
        format!("CRM refused the status update: {reason}"),
        vec![],
    );
    let event = exception_event(ctx, &eng.engagement_id, &ex);
    eng.raise(ex);
    eng.crm_sync = Some(CrmSync { update: plan.update, result: format!("error: {reason}"), at: ctx.now });
    Decision::changed(ctx, eng, vec![event], "crm_writeback_failed", "CRM refused the status update")
}
