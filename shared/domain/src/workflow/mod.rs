//! Workflow steps as pure functions. Each step is one type implementing [`WorkflowStep`]
//! in its own file; the shell (`o2c-app`) drives every step with the same protocol:
//!
//! ```text
//! decide(state, event, reference) ─┬─ Done(decision)         → commit, publish
//!                                  ├─ Checkpoint(decision)   → commit (key stays reserved), decide again
//!                                  └─ Run(plan)              → reserve (+ claim), run the commands,
//!                                        finalize(state, plan, results) → Done | Checkpoint
//! ```
//!
//! A [`Decision`] is the new engagement state (if it changed), the events to emit and
//! one audit entry. `finalize` reads the *current* state, so a commit that lost a version
//! race is finalized again on fresh state without repeating the side effects.
//!
//! Layout: [`command`] (commands and results), [`intake`], [`provision`],
//! [`billing_setup`], [`crm_writeback`], [`delivery_intake`], [`invoice_run`],
//! [`invoice_approval`], [`invoice_posting`], [`cash_application`], [`crm_invoice_sync`], [`revenue_recognition`], [`exceptions`], [`reconciliation`] (one file per step),
//! [`dead_letter`] (what a message that exhausted its receives leaves on its engagement).

pub mod billing_setup;
pub mod cash_application;
pub mod command;
pub mod crm_invoice_sync;
pub mod crm_writeback;
pub mod dead_letter;
pub mod delivery_intake;
pub mod exceptions;
pub mod intake;
pub mod invoice_approval;
pub mod invoice_posting;
pub mod invoice_run;
pub mod provision;
pub mod reconciliation;
pub mod revenue_recognition;

use crate::ids::{EngagementId, ExceptionId};
use chrono::{DateTime, Utc};
use serde::Serialize;

use crate::aggregate::{AggregateBody, Load, Loaded};
use crate::billing::BillingError;
use crate::engagement::{Action, AuditEntry, Engagement, EngagementException};
use crate::events::{
    BusinessEvent, Compensation, EventMeta, EventType, ExceptionKind, ExceptionRaised, ExceptionResolved, OutgoingEvent, ResolutionOutcome,
    SOURCE_EVENT_MAX_BYTES, SourceEvent,
};
use crate::money::Money;
use crate::reference::ReferenceData;

pub use billing_setup::BillingSetup;
pub use cash_application::CashApplication;
pub use command::{Command, CommandResult, CrmWrite, ExternalObject, ObjectStatus, Plan, Purpose, Refusal, Sequence, System};
pub use crm_invoice_sync::CrmInvoiceSync;
pub use crm_writeback::{CRM_ERROR_FIELD_LEN, CrmWriteback, crm_update_for};
pub use dead_letter::{GaveUp, dead_lettered};
pub use delivery_intake::DeliveryIntake;
pub use exceptions::Exceptions;
pub use intake::{Intake, decide_closed_won};
pub use invoice_approval::InvoiceApproval;
pub use invoice_posting::InvoicePosting;
pub use invoice_run::InvoiceRun;
pub use provision::Provision;
pub use reconciliation::Reconciliation;
pub use revenue_recognition::RevenueRecognition;

/// A workflow step = one Lambda function (binary) = one queue.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Step {
    /// Closed-won → contract.
    Intake,
    /// Contract → projects in PSA and ERP.
    Provision,
    /// Project → billing schedule → active.
    BillingSetup,
    /// State → CRM opportunity.
    CrmWriteback,
    /// Staffing, approved time and expenses, completed milestones → WIP.
    DeliveryIntake,
    /// WIP, milestones and installments → a taxed draft invoice.
    InvoiceRun,
    /// An approver's decision on a draft (segregation of duties).
    InvoiceApproval,
    /// A released invoice → numbered and posted in the ERP.
    InvoicePosting,
    /// A payment → matched to invoices, booked in the ERP.
    CashApplication,
    /// A period end → revenue earned, journal posted in the ERP.
    RevenueRecognition,
    /// A posted invoice or a payment → invoice records on the CRM account and opportunity.
    CrmInvoiceSync,
    /// Exceptions raised, worked by operators, closed → exception cases.
    Exceptions,
    /// What each system holds against o2c → reconciliation report and exception.
    Reconciliation,
}

impl Step {
    /// Every step.
    pub const ALL: [Step; 13] = [
        Step::Intake,
        Step::Provision,
        Step::BillingSetup,
        Step::CrmWriteback,
        Step::DeliveryIntake,
        Step::InvoiceRun,
        Step::InvoiceApproval,
        Step::InvoicePosting,
        Step::CashApplication,
        Step::RevenueRecognition,
        Step::CrmInvoiceSync,
        Step::Exceptions,
        Step::Reconciliation,
    ];

    /// Function / binary name.
    pub fn name(self) -> &'static str {
        match self {
            Self::Intake => "intake",
            Self::Provision => "provision",
            Self::BillingSetup => "billing-setup",
            Self::CrmWriteback => "crm-writeback",
            Self::DeliveryIntake => "delivery-intake",
            Self::InvoiceRun => "invoice-run",
            Self::InvoiceApproval => "invoice-approval",
            Self::InvoicePosting => "invoice-posting",
            Self::CashApplication => "cash-application",
            Self::RevenueRecognition => "revenue-recognition",
            Self::CrmInvoiceSync => "crm-invoice-sync",
            Self::Exceptions => "exceptions",
            Self::Reconciliation => "reconciliation",
        }
    }

    /// Parses a function / binary name.
    pub fn from_name(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|s| s.name() == name)
    }

    /// The step's logic.
    pub fn logic(self) -> &'static dyn WorkflowStep {
        match self {
            Self::Intake => &Intake,
            Self::Provision => &Provision,
            Self::BillingSetup => &BillingSetup,
            Self::CrmWriteback => &CrmWriteback,
            Self::DeliveryIntake => &DeliveryIntake,
            Self::InvoiceRun => &InvoiceRun,
            Self::InvoiceApproval => &InvoiceApproval,
            Self::InvoicePosting => &InvoicePosting,
            Self::CashApplication => &CashApplication,
            Self::RevenueRecognition => &RevenueRecognition,
            Self::CrmInvoiceSync => &CrmInvoiceSync,
            Self::Exceptions => &Exceptions,
            Self::Reconciliation => &Reconciliation,
        }
    }

    /// Event types the step consumes (the template's rules must route exactly these).
    pub fn consumes(self) -> &'static [EventType] {
        self.logic().consumes()
    }
}

impl std::fmt::Display for Step {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// The stored engagement and the version it was read at.
#[derive(Debug, Clone, Copy)]
pub struct Snapshot<'a> {
    /// State.
    pub engagement: &'a Engagement,
    /// Store version (the CRM sync version is derived from it).
    pub version: u64,
}

/// What a step decides on.
#[derive(Debug, Clone, Copy)]
pub struct Input<'a> {
    /// The engagement as loaded (with its version), if it exists.
    pub current: Option<Snapshot<'a>>,
    /// The other aggregates the step loads.
    pub others: &'a Loaded,
    /// The event.
    pub event: &'a BusinessEvent,
    /// Reference data.
    pub reference: &'a ReferenceData,
}

/// A plan and the results of its commands, on the state as it is now.
#[derive(Debug, Clone, Copy)]
pub struct Outcome<'a> {
    /// The engagement as loaded now.
    pub current: Option<Snapshot<'a>>,
    /// The other aggregates as loaded now.
    pub others: &'a Loaded,
    /// The event being processed.
    pub event: &'a BusinessEvent,
    /// Reference data.
    pub reference: &'a ReferenceData,
    /// The plan that ran.
    pub plan: &'a Plan,
    /// Its commands' results, in order (fewer when a sequence stopped).
    pub results: &'a [CommandResult],
}

/// `step()` and `consumes()` of a [`WorkflowStep`] impl.
macro_rules! step_meta {
    ($step:ident, [$($t:ident),* $(,)?]) => {
        fn step(&self) -> $crate::workflow::Step {
            $crate::workflow::Step::$step
        }
        fn consumes(&self) -> &'static [$crate::events::EventType] {
            &[$($crate::events::EventType::$t),*]
        }
    };
}
pub(crate) use step_meta;

/// One step's logic. Pure: no I/O, no clock, no ids but those derived from its inputs.
pub trait WorkflowStep: Sync {
    /// Which step this is.
    fn step(&self) -> Step;

    /// Event types it consumes.
    fn consumes(&self) -> &'static [EventType];

    /// The aggregates besides the engagement it reads (loaded before `decide`, and
    /// again before each `finalize`).
    fn loads(&self, event: &BusinessEvent) -> Vec<Load> {
        let _ = event;
        Vec::new()
    }

    /// Decides what the event does to the engagement (and the other aggregates it loads).
    fn decide(&self, input: &Input<'_>, ctx: &StepContext<'_>) -> Result<Next, StepError>;

    /// Turns the results of a plan's commands into state and events, on the state as it
    /// is now (not as it was when the plan was made). Steps without commands keep the
    /// default.
    fn finalize(&self, done: &Outcome<'_>, ctx: &StepContext<'_>) -> Result<Next, StepError> {
        let _ = (done, ctx);
        Err(StepError::NoCommands(self.step()))
    }
}

/// What to do next.
#[derive(Debug, Clone, PartialEq)]
// Short-lived values passed by move once; boxing would only add an allocation.
#[allow(clippy::large_enum_variant)]
pub enum Next {
    /// Commit the decision and complete the event.
    Done(Decision),
    /// Commit the decision, keep the event's key reserved, and decide again on the new
    /// state (e.g. record a failure durably before compensating it). Carries no events:
    /// a crash after the checkpoint must not lose one.
    Checkpoint(Decision),
    /// Run the plan's commands, then call `finalize`.
    Run(Plan),
    /// Load these too (what the state just read points at, e.g. the day an entry moves
    /// away from), then decide again; empty: decide again on fresh state.
    Need(Vec<Load>),
}

/// Who is deciding and on behalf of which event.
#[derive(Debug, Clone)]
pub struct StepContext<'a> {
    /// Step.
    pub step: Step,
    /// Type of the event being processed.
    pub event_type: EventType,
    /// Its envelope metadata.
    pub meta: &'a EventMeta,
    /// Time of processing (from the clock port).
    pub now: DateTime<Utc>,
    /// The event itself, when the shell has it: an exception raised while processing it
    /// keeps it for an operator's retry.
    pub event: Option<&'a BusinessEvent>,
}

impl StepContext<'_> {
    pub(crate) fn audit(&self, engagement_id: &EngagementId, action: Action, summary: impl Into<String>) -> AuditEntry {
        AuditEntry {
            engagement_id: engagement_id.clone(),
            at: self.now,
            step: self.step.name().to_owned(),
            event_id: self.meta.event_id.clone(),
            event_type: self.event_type.detail_type().to_owned(),
            correlation_id: self.meta.correlation_id.clone(),
            action,
            summary: summary.into(),
        }
    }

    pub(crate) fn emit<P: serde::Serialize>(&self, t: EventType, engagement_id: &str, key: String, payload: &P) -> OutgoingEvent {
        OutgoingEvent::new(t, engagement_id, self.meta, key, self.now, payload)
    }

    /// The event's idempotency key (claims are held by it).
    pub fn key(&self) -> &str {
        &self.meta.idempotency_key
    }
}

/// The outcome of a step: state to persist, events to emit, one audit entry.
#[derive(Debug, Clone, PartialEq)]
pub struct Decision {
    /// Engagement id.
    pub engagement_id: EngagementId,
    /// New state, or `None` when the state is unchanged (only audit is written).
    pub engagement: Option<Engagement>,
    /// New states of other aggregates, committed atomically with the engagement.
    pub others: Vec<AggregateBody>,
    /// Events to publish after the state is committed.
    pub events: Vec<OutgoingEvent>,
    /// Timeline entry.
    pub audit: AuditEntry,
    /// Business metrics to emit once committed.
    pub metrics: Vec<crate::metrics::Metric>,
}

impl Decision {
    /// Audit only; the state is unchanged.
    pub fn unchanged(ctx: &StepContext<'_>, engagement_id: &EngagementId, action: Action, summary: impl Into<String>) -> Self {
        Self {
            engagement_id: engagement_id.clone(),
            engagement: None,
            others: Vec::new(),
            events: Vec::new(),
            audit: ctx.audit(engagement_id, action, summary),
            metrics: Vec::new(),
        }
    }

    /// A new state (its `updated_at` set to now), events and the audit entry.
    pub fn changed(
        ctx: &StepContext<'_>,
        mut eng: Engagement,
        events: Vec<OutgoingEvent>,
        action: Action,
        summary: impl Into<String>,
    ) -> Self {
        eng.updated_at = ctx.now;
        let audit = ctx.audit(&eng.engagement_id, action, summary);
        Self { engagement_id: eng.engagement_id.clone(), engagement: Some(eng), others: Vec::new(), events, audit, metrics: Vec::new() }
    }

    /// Also writes `body` (another aggregate) in the same commit.
    pub fn with(mut self, body: AggregateBody) -> Self {
        self.others.push(body);
        self
    }

    /// The audit action (`contract_created`, …).
    pub fn action(&self) -> Action {
        self.audit.action
    }

    /// What every final decision also does: [`clear_dead_letter`](Self::clear_dead_letter),
    /// [`announce_pending`](Self::announce_pending) and
    /// [`announce_cleared`](Self::announce_cleared).
    pub fn settle(self, current: Option<&Engagement>, ctx: &StepContext<'_>) -> Self {
        let d = self.clear_dead_letter(current, ctx);
        let d = d.announce_pending(current, ctx);
        d.announce_cleared(current, ctx)
    }

    /// Publishes `ExceptionResolved` (cleared) for every exception that was open on
    /// `current` and this decision closes: the exception workflow closes its case and the
    /// CRM stops showing it. One the decision already announces (an operator's resolution)
    /// is not announced twice.
    pub fn announce_cleared(mut self, current: Option<&Engagement>, ctx: &StepContext<'_>) -> Self {
        let (Some(before), Some(after)) = (current, self.engagement.as_ref()) else { return self };
        let announced: Vec<String> = self
            .events
            .iter()
            .filter(|e| e.event_type == EventType::ExceptionResolved)
            .filter_map(|e| e.detail.pointer("/payload/exception_id").and_then(|v| v.as_str()).map(str::to_owned))
            .collect();
        let mut cleared = Vec::new();
        for x in after.exceptions.iter().filter(|x| !x.open) {
            let was_open = before.exceptions.iter().any(|b| b.exception_id == x.exception_id && b.open && b.raised_at == x.raised_at);
            if was_open && !announced.iter().any(|a| a == x.exception_id.as_str()) {
                cleared.push(resolved_event(
                    ctx,
                    &after.engagement_id,
                    x,
                    ResolutionOutcome::Cleared,
                    None,
                    x.resolution.clone().unwrap_or_else(|| "its condition cleared".to_owned()),
                ));
            }
        }
        self.events.extend(cleared);
        self
    }

    /// Publishes the `ExceptionRaised` of exceptions raised without one (their failure
    /// was a checkpoint owing a compensation, and the flow moved on before announcing).
    pub fn announce_pending(mut self, current: Option<&Engagement>, ctx: &StepContext<'_>) -> Self {
        let Some(base) = self.engagement.as_ref().or(current) else { return self };
        if !base.exceptions.iter().any(|x| x.announce_pending) {
            return self;
        }
        let mut eng = base.clone();
        let pending: Vec<EngagementException> = eng.exceptions.iter().filter(|x| x.announce_pending).cloned().collect();
        for x in eng.exceptions.iter_mut() {
            x.announce_pending = false;
        }
        for x in &pending {
            self.events.push(exception_event(ctx, &eng, x));
        }
        eng.updated_at = ctx.now;
        self.engagement = Some(eng);
        self
    }

    /// Closes the dead-letter exception raised for this very event once the event
    /// completes: the condition that raised it has cleared.
    pub fn clear_dead_letter(mut self, current: Option<&Engagement>, ctx: &StepContext<'_>) -> Self {
        let base = match (&self.engagement, current) {
            (Some(e), _) => e,
            (None, Some(e)) => e,
            (None, None) => return self,
        };
        // This step's exception for this event only: another step consuming the same event
        // (the write-back reads ContractCreated too) must not close provisioning's.
        let id = dead_letter::dead_letter_exception_id(&base.engagement_id, ctx);
        let open = |x: &EngagementException| x.open && x.kind == ExceptionKind::DeadLettered && x.exception_id == id;
        if !base.exceptions.iter().any(open) {
            return self;
        }
        let mut eng = base.clone();
        for x in eng.exceptions.iter_mut().filter(|x| open(x)) {
            x.close(ctx.now, format!("event {} processed ({})", ctx.meta.event_id, self.audit.action));
        }
        eng.updated_at = ctx.now;
        self.engagement = Some(eng);
        self
    }
}

/// A step precondition the data cannot satisfy (a bug or corrupted state, not bad input).
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum StepError {
    /// The engagement a derived event refers to is not in the store.
    #[error("engagement {0} not found for {1}")]
    MissingEngagement(EngagementId, &'static str),
    /// State says a contract exists but it does not.
    #[error("engagement {0} has no contract in status {1}")]
    MissingContract(EngagementId, &'static str),
    /// Reference data no longer has what a stored contract refers to.
    #[error("reference data has no {0} `{1}`")]
    MissingReference(&'static str, String),
    /// Schedule derivation failed.
    #[error(transparent)]
    Billing(#[from] BillingError),
    /// The step was handed an event it does not consume.
    #[error("{0} does not consume {1}")]
    NotConsumed(Step, &'static str),
    /// A step without commands was asked to finalize results.
    #[error("{0} plans no commands")]
    NoCommands(Step),
    /// The event itself is wrong (every reason): parked, never retried.
    #[error("rejected: {}", .0.iter().map(|i| format!("{} ({})", i.message, i.code)).collect::<Vec<_>>().join("; "))]
    Rejected(Vec<crate::events::Issue>),
    /// The event is early (e.g. time for an engagement whose billing setup is still
    /// running): retried later.
    #[error("not yet: {0}")]
    NotYet(String),
    /// Money arithmetic failed (mixed currencies: a data defect).
    #[error(transparent)]
    Money(#[from] crate::money::MoneyError),
    /// The results do not match the plan (shell defect).
    #[error("{0}: results do not match the plan: {1}")]
    UnexpectedResults(Step, String),
}

pub(crate) fn exception(
    ctx: &StepContext<'_>,
    id: ExceptionId,
    kind: ExceptionKind,
    message: String,
    compensations: Vec<Compensation>,
) -> EngagementException {
    EngagementException {
        exception_id: id,
        kind,
        step: ctx.step.name().to_owned(),
        message,
        compensations,
        raised_at: ctx.now,
        open: true,
        event_id: Some(ctx.meta.event_id.clone()),
        closed_at: None,
        resolution: None,
        announce_pending: false,
        amount_at_stake: None,
        caused_by: Vec::new(),
    }
}

/// What a step knows about the money an exception holds up and who caused it.
#[derive(Debug, Clone, Default, PartialEq)]
pub(crate) struct Stake {
    /// The money held up.
    pub amount: Option<Money>,
    /// Who caused it.
    pub caused_by: Vec<String>,
}

/// Raises the exception `id` on `eng`, or reopens / refreshes it when its message changed;
/// `Some(ExceptionRaised)` when something changed, `None` when it is already open as is.
pub(crate) fn raise_or_refresh(
    eng: &mut Engagement,
    ctx: &StepContext<'_>,
    id: ExceptionId,
    kind: ExceptionKind,
    message: String,
    stake: Stake,
) -> Option<OutgoingEvent> {
    let x = match eng.exceptions.iter_mut().find(|x| x.exception_id == id) {
        Some(x) if x.open && x.message == message => return None,
        Some(x) => {
            x.open = true;
            x.message = message;
            x.raised_at = ctx.now;
            x.closed_at = None;
            x.resolution = None;
            x.event_id = Some(ctx.meta.event_id.clone());
            x.amount_at_stake = stake.amount;
            x.caused_by = stake.caused_by;
            x.clone()
        }
        None => {
            let mut x = exception(ctx, id, kind, message, vec![]);
            x.amount_at_stake = stake.amount;
            x.caused_by = stake.caused_by;
            eng.raise(x.clone());
            x
        }
    };
    Some(exception_event(ctx, eng, &x))
}

/// Closes the open exception `id` on `eng`; true when it was open.
pub(crate) fn close_exception(eng: &mut Engagement, id: &ExceptionId, now: DateTime<Utc>, why: &str) -> bool {
    match eng.exceptions.iter_mut().find(|x| &x.exception_id == id && x.open) {
        Some(x) => {
            x.close(now, why.to_owned());
            true
        }
        None => false,
    }
}

/// Raises an exception without compensations on `eng` and returns its `ExceptionRaised`.
pub(crate) fn raise(eng: &mut Engagement, ctx: &StepContext<'_>, id: ExceptionId, kind: ExceptionKind, message: String) -> OutgoingEvent {
    let ex = exception(ctx, id, kind, message, vec![]);
    let event = exception_event(ctx, eng, &ex);
    eng.raise(ex);
    event
}

/// The `ExceptionRaised` of `ex` on `eng`: with the engagement's legal entity, the money at
/// stake (what the step said, else the contract's value for the kinds that hold up the
/// whole engagement), who caused it, and the event being processed (for a retry).
pub(crate) fn exception_event(ctx: &StepContext<'_>, eng: &Engagement, ex: &EngagementException) -> OutgoingEvent {
    let contract = eng.contract.as_ref();
    let whole_engagement =
        matches!(ex.kind, ExceptionKind::ProvisioningFailed | ExceptionKind::BillingSetupFailed | ExceptionKind::ChangeOrderRequired);
    let amount_at_stake = ex.amount_at_stake.or_else(|| whole_engagement.then(|| contract.map(|c| c.total_value)).flatten());
    ctx.emit(
        EventType::ExceptionRaised,
        &eng.engagement_id,
        format!("exception:{}:{}", ex.exception_id, ex.raised_at.timestamp_millis()),
        &ExceptionRaised {
            exception_id: ex.exception_id.clone(),
            engagement_id: eng.engagement_id.clone(),
            kind: ex.kind,
            step: ex.step.clone(),
            message: ex.message.clone(),
            compensations: ex.compensations.clone(),
            raised_at: Some(ex.raised_at),
            legal_entity_id: contract.map(|c| c.legal_entity.id.clone()),
            amount_at_stake,
            caused_by: ex.caused_by.clone(),
            source_event: source_event(ctx),
        },
    )
}

/// The event `ctx` is processing, as an exception keeps it (its payload only when it fits).
pub(crate) fn source_event(ctx: &StepContext<'_>) -> Option<SourceEvent> {
    let event = ctx.event?;
    let payload = event.payload_json();
    let fits = crate::events::canonical_json(&payload).len() <= SOURCE_EVENT_MAX_BYTES;
    Some(SourceEvent {
        detail_type: ctx.event_type.detail_type().to_owned(),
        event_id: ctx.meta.event_id.clone(),
        idempotency_key: ctx.meta.idempotency_key.to_string(),
        occurred_at: ctx.meta.occurred_at,
        payload: fits.then_some(payload),
    })
}

/// The `ExceptionResolved` of `ex` closing with `outcome`.
pub(crate) fn resolved_event(
    ctx: &StepContext<'_>,
    eng_id: &EngagementId,
    ex: &EngagementException,
    outcome: ResolutionOutcome,
    actor: Option<String>,
    reason: String,
) -> OutgoingEvent {
    ctx.emit(
        EventType::ExceptionResolved,
        eng_id,
        // The outcome is part of the identity: a clearing and an operator's resolution of one
        // occurrence are two different events, never a payload conflict on one key.
        format!("exception-resolved:{}:{}:{}", ex.exception_id, ex.raised_at.timestamp_millis(), outcome.as_str()),
        &ExceptionResolved {
            exception_id: ex.exception_id.clone(),
            engagement_id: eng_id.clone(),
            kind: ex.kind,
            raised_at: ex.raised_at,
            outcome,
            actor,
            reason,
        },
    )
}

/// Closes the open dead-letter exceptions of `step`: the step has since completed.
pub(crate) fn close_dead_letters_of(eng: &mut Engagement, step: Step, now: DateTime<Utc>, why: &str) {
    for x in eng.exceptions.iter_mut().filter(|x| x.open && x.kind == ExceptionKind::DeadLettered && x.step == step.name()) {
        x.close(now, why.to_owned());
    }
}

/// The fan-out of a scheduled run request without an engagement: one request per
/// engagement of `page` (in id order), keyed `<what>:<run>:<engagement>`, and — when `more`
/// — a continuation for the engagements after the page's last. `request(engagement, after)`
/// builds each payload. Pure: the shell lists the page and publishes what this returns.
pub(crate) fn fan_out_requests<P: Serialize>(
    t: EventType,
    what: &str,
    run_id: &str,
    page: &[EngagementId],
    more: bool,
    ctx: &StepContext<'_>,
    request: impl Fn(Option<EngagementId>, Option<String>) -> P,
) -> Vec<OutgoingEvent> {
    let mut events: Vec<_> =
        page.iter().map(|id| ctx.emit(t, id, format!("{what}:{run_id}:{id}"), &request(Some(id.clone()), None))).collect();
    if more && let Some(last) = page.last() {
        let key = format!("{what}:{run_id}:after:{last}");
        events.push(ctx.emit(t, crate::events::FAN_OUT_ENGAGEMENT, key, &request(None, Some(last.to_string()))));
    }
    events
}

/// The engagement a plan's results land on (it exists: the plan was made from it).
pub(crate) fn planned_on<'a>(done: &Outcome<'a>, step: Step) -> Result<&'a Engagement, StepError> {
    done.current.map(|s| s.engagement).ok_or_else(|| StepError::MissingEngagement(EngagementId::default(), step.name()))
}

pub(crate) fn unexpected(step: Step, plan: &Plan, results: &[CommandResult]) -> StepError {
    StepError::UnexpectedResults(step, format!("{:?} plan with {} command(s), results {results:?}", plan.purpose, plan.commands.len()))
}

/// The engagement after `change`, when it changed it (`None`: leave the engagement item alone).
pub(crate) fn with_engagement(eng: Option<&Engagement>, change: impl FnOnce(&mut Engagement) -> bool) -> Option<Engagement> {
    let mut e = eng?.clone();
    change(&mut e).then_some(e)
}

/// A final decision on `eng_id`: the changed engagement when there is one, else audit only;
/// with `events`.
pub(crate) fn decision(
    ctx: &StepContext<'_>,
    eng_id: &EngagementId,
    changed: Option<Engagement>,
    events: Vec<OutgoingEvent>,
    action: Action,
    summary: String,
) -> Decision {
    match changed {
        Some(e) => Decision::changed(ctx, e, events, action, summary),
        None => {
            let mut d = Decision::unchanged(ctx, eng_id, action, summary);
            d.events = events;
            d
        }
    }
}
