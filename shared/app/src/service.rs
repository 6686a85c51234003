//! Step services: the imperative shell around the pure workflow decisions.
//!
//! Every step follows the same at-least-once protocol:
//!
//! 1. **Duplicate check** — a live completed idempotency record for
//!    `<step>#<event idempotency key>` answers the event: its stored events are re-published
//!    (the original may have crashed between commit and publish) and nothing else happens.
//!    Same key with a different payload hash is a permanent conflict.
//! 2. **Load + decide** — strongly consistent read of the engagement, pure decision.
//! 3. **Pure decision** → one atomic commit (state + audit + completed idempotency record,
//!    conditional on the key being absent): **one write request**.
//! 4. **Decision with external side effects** → reserve the key (optionally claiming the
//!    engagement in the same write), run the create-or-get commands, then commit state +
//!    audit + completion: **two write requests**. A transient failure releases the
//!    reservation and the message is retried; create-or-get makes the retry safe.
//! 5. **Publish** the decision's events after the commit.
//!
//! A version conflict (another handler changed the engagement) re-runs 2–4 with fresh state.

use chrono::{DateTime, Utc};
use o2c_domain::engagement::Engagement;
use o2c_domain::events::{BusinessEvent, Compensation, EventType, payload_hash};
use o2c_domain::reference::ReferenceData;
use o2c_domain::workflow::{
    self, BillingPlan, BillingSetup, Decision, ProvisionPlan, ProvisionTrigger, Provisioning, StepContext, Writeback, WritebackPlan, step,
};
use tracing::{Instrument, debug, info, info_span, warn};

use crate::error::O2cError;
use crate::ports::{
    Commit, CommitOutcome, Completion, CompletionMode, ConnectorError, Crm, CrmWrite, EngagementStore, Erp, EventPublisher,
    ExpectedVersion, IdempotencyRecord, IdempotencyStatus, IdempotencyStore, Platform, Psa, ReferenceDataSource, Reservation,
    ReserveOutcome, StateWrite, StoredResult, Versioned,
};

/// A workflow step = one Lambda function.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Step {
    /// Closed-won → contract.
    Intake,
    /// Contract → projects in PSA and ERP.
    Provision,
    /// Project → billing schedule → active.
    BillingSetup,
    /// State → CRM opportunity.
    CrmWriteback,
}

impl Step {
    /// All steps.
    pub const ALL: [Step; 4] = [Step::Intake, Step::Provision, Step::BillingSetup, Step::CrmWriteback];

    /// Function / binary name.
    pub fn name(self) -> &'static str {
        match self {
            Self::Intake => step::INTAKE,
            Self::Provision => step::PROVISION,
            Self::BillingSetup => step::BILLING_SETUP,
            Self::CrmWriteback => step::CRM_WRITEBACK,
        }
    }

    /// Parses a function / binary name.
    pub fn from_name(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|s| s.name() == name)
    }

    /// Event types the step consumes (the template's rules must route exactly these).
    pub fn consumes(self) -> &'static [EventType] {
        match self {
            Self::Intake => &[EventType::OpportunityClosedWon],
            Self::Provision => &[EventType::ContractCreated, EventType::ContractApproved],
            Self::BillingSetup => &[EventType::ProjectProvisioned],
            Self::CrmWriteback => &[
                EventType::ContractCreated,
                EventType::EngagementRejected,
                EventType::ProjectProvisioned,
                EventType::ProjectActivated,
                EventType::ExceptionRaised,
            ],
        }
    }
}

/// Tunables of the protocol.
#[derive(Debug, Clone)]
pub struct ServiceConfig {
    /// How long a completed key absorbs duplicates (EventBridge archive replays older
    /// events; those are absorbed by the business state checks instead).
    pub idempotency_ttl: chrono::Duration,
    /// How many times a version conflict re-runs the step before giving up (retryable).
    pub max_conflict_retries: u32,
}

impl Default for ServiceConfig {
    fn default() -> Self {
        Self { idempotency_ttl: chrono::Duration::days(7), max_conflict_retries: 8 }
    }
}

/// What handling an event did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Handled {
    /// Audit action.
    pub action: String,
    /// True when the event was a duplicate answered from the idempotency store.
    pub duplicate: bool,
    /// Events published.
    pub published: usize,
}

/// The step services over one platform.
pub struct StepService<P: Platform> {
    platform: P,
    config: ServiceConfig,
}

/// Pure decision or a plan with external side effects (and an optional state claim).
// Short-lived values passed by move once; boxing would only add an allocation.
#[allow(clippy::large_enum_variant)]
enum Planned<Pl> {
    Decided(Decision),
    Execute { plan: Pl, claim: Option<Engagement> },
}

impl<P: Platform> StepService<P> {
    /// Services over `platform`.
    pub fn new(platform: P, config: ServiceConfig) -> Self {
        Self { platform, config }
    }

    /// The platform (adapters).
    pub fn platform(&self) -> &P {
        &self.platform
    }

    /// Handles one decoded event for `step`. `in_progress_until` bounds a reservation
    /// (the Lambda deadline or the queue's visibility timeout).
    pub async fn handle(&self, step: Step, event: &BusinessEvent, in_progress_until: DateTime<Utc>) -> Result<Handled, O2cError> {
        let event_type = event.event_type();
        let meta = event.meta();
        let engagement_id = event.engagement_id();
        let span = info_span!(
            "handle",
            step = step.name(),
            detail_type = event_type.detail_type(),
            event_id = %meta.event_id,
            correlation_id = %meta.correlation_id,
            engagement_id = %engagement_id,
        );
        async move {
            if !step.consumes().contains(&event_type) {
                return Err(O2cError::Validation(vec![o2c_domain::events::Issue::new(
                    "detail-type",
                    "not_handled_by_step",
                    format!("{} does not consume {}: check the rule that routed it", step.name(), event_type.detail_type()),
                )]));
            }
            let key = format!("{}#{}", step.name(), meta.idempotency_key);
            let hash = payload_hash(event_type, &event.payload_json());
            let now = self.platform.clock().now();
            let ctx = StepContext { step: step.name(), event_type, meta: &meta, now };
            let run = Run { key, hash, in_progress_until, engagement_id: engagement_id.clone() };
            let handled = match (step, event) {
                (Step::Intake, BusinessEvent::OpportunityClosedWon(ev)) => {
                    self.run(
                        &run,
                        &ctx,
                        |cur, r| Ok(Planned::<()>::Decided(workflow::decide_closed_won(cur.map(|v| &v.value), ev, r, &ctx))),
                        |_: ()| async { Err(O2cError::Bug("intake has no side effects".into())) },
                    )
                    .await
                }
                (Step::Provision, BusinessEvent::ContractCreated(ev)) => {
                    self.provision(&run, &ctx, ProvisionTrigger::ContractCreated(&ev.payload)).await
                }
                (Step::Provision, BusinessEvent::ContractApproved(ev)) => {
                    self.provision(&run, &ctx, ProvisionTrigger::ContractApproved(&ev.payload)).await
                }
                (Step::BillingSetup, BusinessEvent::ProjectProvisioned(ev)) => {
                    self.run(
                        &run,
                        &ctx,
                        |cur, _| {
                            Ok(match workflow::decide_billing_setup(cur.map(|v| &v.value), &ev.payload, &ctx)? {
                                BillingSetup::Decided(d) => Planned::Decided(d),
                                BillingSetup::Execute(plan) => Planned::Execute { plan: *plan, claim: None },
                            })
                        },
                        |plan: BillingPlan| self.execute_billing(plan, &ctx),
                    )
                    .await
                }
                (Step::CrmWriteback, _) => {
                    self.run(
                        &run,
                        &ctx,
                        |cur, _| {
                            Ok(match workflow::decide_writeback(cur.map(|v| (&v.value, v.version)), &run.engagement_id, &ctx)? {
                                Writeback::Decided(d) => Planned::Decided(d),
                                Writeback::Execute(plan) => Planned::Execute { plan: *plan, claim: None },
                            })
                        },
                        |plan: WritebackPlan| self.execute_writeback(plan, &ctx),
                    )
                    .await
                }
                _ => Err(O2cError::Bug(format!("no handler for {} in {}", event_type.detail_type(), step.name()))),
            }?;
            info!(action = %handled.action, duplicate = handled.duplicate, published = handled.published, "handled");
            Ok(handled)
        }
        .instrument(span)
        .await
    }

    async fn provision(&self, run: &Run, ctx: &StepContext<'_>, trigger: ProvisionTrigger<'_>) -> Result<Handled, O2cError> {
        self.run(
            run,
            ctx,
            |cur, r| {
                Ok(match workflow::decide_provisioning(cur.map(|v| &v.value), trigger, r, ctx)? {
                    Provisioning::Decided(d) => Planned::Decided(d),
                    Provisioning::Execute(plan) => {
                        // Claim only when the plan changes the stored state (a retry of our own
                        // claim finds it already in place).
                        let claim = (cur.map(|v| &v.value) != Some(&plan.engagement)).then(|| plan.engagement.clone());
                        Planned::Execute { plan: *plan, claim }
                    }
                })
            },
            |plan: ProvisionPlan| self.execute_provisioning(plan, ctx),
        )
        .await
    }

    /// The protocol (see module docs). A retryable failure after the key was reserved
    /// releases the reservation, so the redelivery re-executes at once instead of waiting
    /// out the in-progress expiry.
    async fn run<Pl, D, X, XF>(&self, run: &Run, ctx: &StepContext<'_>, decide: D, execute: X) -> Result<Handled, O2cError>
    where
        D: Fn(Option<&Versioned<Engagement>>, &ReferenceData) -> Result<Planned<Pl>, O2cError>,
        X: Fn(Pl) -> XF,
        XF: std::future::Future<Output = Result<Decision, O2cError>>,
    {
        let mut reserved = false;
        let result = self.protocol(run, ctx, decide, execute, &mut reserved).await;
        if let Err(e) = &result
            && reserved
            && e.is_retryable()
            && let Err(release) = self.platform.store().release(&run.key).await
        {
            warn!(error = %release, "could not release the reservation; the retry waits for its expiry");
        }
        result
    }

    async fn protocol<Pl, D, X, XF>(
        &self,
        run: &Run,
        ctx: &StepContext<'_>,
        decide: D,
        execute: X,
        reserved: &mut bool,
    ) -> Result<Handled, O2cError>
    where
        D: Fn(Option<&Versioned<Engagement>>, &ReferenceData) -> Result<Planned<Pl>, O2cError>,
        X: Fn(Pl) -> XF,
        XF: std::future::Future<Output = Result<Decision, O2cError>>,
    {
        let store = self.platform.store();
        if let Some(rec) = store.get(&run.key).await?
            && rec.is_live(ctx.now)
        {
            return self.duplicate(rec, &run.hash).await;
        }
        let reference = self.platform.reference().snapshot().await?;
        for attempt in 0..=self.config.max_conflict_retries {
            let current = store.load(&run.engagement_id).await?;
            let mut expected = current.as_ref().map_or(ExpectedVersion::New, |v| ExpectedVersion::Is(v.version));
            let (decision, mode) = match decide(current.as_ref(), &reference)? {
                Planned::Decided(d) => (d, if *reserved { CompletionMode::Reserved } else { CompletionMode::Fresh }),
                Planned::Execute { plan, claim } => {
                    if !*reserved || claim.is_some() {
                        let reservation = Reservation {
                            key: run.key.clone(),
                            payload_hash: run.hash.clone(),
                            now: ctx.now,
                            in_progress_until: run.in_progress_until.max(ctx.now + chrono::Duration::seconds(30)),
                            expires_at: ctx.now + self.config.idempotency_ttl,
                            claim: claim.map(|engagement| StateWrite { engagement, expected }),
                        };
                        match store.reserve(reservation).await? {
                            ReserveOutcome::Reserved { claimed_version } => {
                                *reserved = true;
                                if let Some(v) = claimed_version {
                                    expected = ExpectedVersion::Is(v);
                                }
                            }
                            ReserveOutcome::AlreadyCompleted(rec) => {
                                return self.duplicate(rec, &run.hash).await;
                            }
                            ReserveOutcome::InProgress => {
                                return Err(O2cError::dependency(
                                    "idempotency",
                                    format!("{} is being processed by another invocation", run.key),
                                ));
                            }
                            ReserveOutcome::PayloadMismatch { .. } => {
                                return Err(mismatch(&run.key));
                            }
                            ReserveOutcome::StateConflict => {
                                debug!(attempt, "claim lost a version race; re-deciding");
                                continue;
                            }
                        }
                    }
                    (execute(plan).await?, CompletionMode::Reserved)
                }
            };
            let action = decision.action().to_owned();
            let events = decision.events.clone();
            let commit = Commit {
                state: decision.engagement.map(|engagement| StateWrite { engagement, expected }),
                audit: decision.audit,
                completion: Completion {
                    key: run.key.clone(),
                    payload_hash: run.hash.clone(),
                    result: StoredResult { action: action.clone(), events: events.clone() },
                    now: ctx.now,
                    expires_at: ctx.now + self.config.idempotency_ttl,
                    mode,
                },
            };
            match store.commit(commit).await? {
                CommitOutcome::Committed { .. } => {
                    self.platform.publisher().publish(&events).await?;
                    return Ok(Handled { action, duplicate: false, published: events.len() });
                }
                CommitOutcome::VersionConflict => {
                    debug!(attempt, "version conflict; re-deciding with fresh state");
                }
                CommitOutcome::AlreadyCompleted(rec) => {
                    return self.duplicate(rec, &run.hash).await;
                }
            }
        }
        Err(O2cError::dependency(
            "state-store",
            format!("engagement {} kept changing: {} version conflicts", run.engagement_id, self.config.max_conflict_retries + 1),
        ))
    }

    async fn duplicate(&self, rec: IdempotencyRecord, hash: &str) -> Result<Handled, O2cError> {
        if rec.payload_hash != hash {
            return Err(mismatch(&rec.key));
        }
        match (rec.status, rec.result) {
            (IdempotencyStatus::Completed, Some(result)) => {
                // Re-publish: at-least-once across a crash between commit and publish.
                // Event ids are deterministic, so consumers deduplicate them.
                self.platform.publisher().publish(&result.events).await?;
                Ok(Handled { action: result.action, duplicate: true, published: result.events.len() })
            }
            _ => Err(O2cError::dependency("idempotency", format!("{} is being processed by another invocation", rec.key))),
        }
    }

    async fn execute_provisioning(&self, plan: ProvisionPlan, ctx: &StepContext<'_>) -> Result<Decision, O2cError> {
        let psa = match self.platform.psa().create_or_get_project(&plan.psa).await {
            Ok(r) => r,
            Err(e @ ConnectorError::Transient { .. }) => return Err(e.into()),
            Err(e) => {
                return Ok(workflow::provisioning_failed(plan, "PSA", &e.reason(), vec![], ctx));
            }
        };
        match self.platform.erp().create_or_get_project(&plan.erp).await {
            Ok(erp) => Ok(workflow::provisioned(plan, psa.id, erp.id, ctx)),
            Err(e @ ConnectorError::Transient { .. }) => Err(e.into()),
            Err(e) => {
                // ERP refused permanently after the PSA project exists: compensate.
                let outcome = match self.platform.psa().cancel_project(&psa.id, &format!("ERP refused project: {}", e.reason())).await {
                    Ok(()) => "done".to_owned(),
                    Err(c @ ConnectorError::Transient { .. }) => return Err(c.into()),
                    Err(c) => format!("failed: {}", c.reason()),
                };
                let comp = Compensation { system: "psa".into(), action: "cancel_project".into(), object_id: psa.id, outcome };
                Ok(workflow::provisioning_failed(plan, "ERP", &e.reason(), vec![comp], ctx))
            }
        }
    }

    async fn execute_billing(&self, plan: BillingPlan, ctx: &StepContext<'_>) -> Result<Decision, O2cError> {
        match self.platform.erp().create_or_get_billing_schedule(&plan.erp_project_id, &plan.schedule).await {
            Ok(r) => Ok(workflow::billing_activated(plan, r.id, ctx)),
            Err(e @ ConnectorError::Transient { .. }) => Err(e.into()),
            Err(e) => Ok(workflow::billing_setup_failed(plan, &e.reason(), ctx)),
        }
    }

    async fn execute_writeback(&self, plan: WritebackPlan, ctx: &StepContext<'_>) -> Result<Decision, O2cError> {
        match self.platform.crm().update_opportunity(&plan.update).await {
            Ok(CrmWrite::Applied) => Ok(workflow::written_back(plan, false, ctx)),
            Ok(CrmWrite::Stale) => Ok(workflow::written_back(plan, true, ctx)),
            Err(e @ ConnectorError::Transient { .. }) => Err(e.into()),
            Err(e) => Ok(workflow::writeback_failed(plan, &e.reason(), ctx)),
        }
    }
}

struct Run {
    key: String,
    hash: String,
    in_progress_until: DateTime<Utc>,
    engagement_id: String,
}

fn mismatch(key: &str) -> O2cError {
    O2cError::Conflict(format!("idempotency key {key} was already used for a different payload"))
}
