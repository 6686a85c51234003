//! The engagement aggregate: one item per opportunity that carries the contract, the
//! external ids, approvals and exceptions. Steps read it, decide, and write it back under
//! optimistic concurrency (a `version` held by the store). What the CRM was last sent is
//! its own aggregate ([`crate::aggregate::CrmSyncState`]), so the write-back never contends
//! with the steps that change the engagement.

use crate::ids::{ContractId, EngagementId, ExceptionId, ProjectKey};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::events::{Compensation, ExceptionKind, Issue};
use crate::model::{BillingSchedule, Contract, Milestone};

/// Where an engagement is in the flow.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EngagementStatus {
    /// CLM approval arrived before the closed-won; waiting for the contract.
    AwaitingContract,
    /// The latest closed-won failed validation.
    Rejected,
    /// Contract validated and enriched; provisioning may start.
    ContractCreated,
    /// Waiting for CLM `ContractApproved` (workflow rule).
    AwaitingApproval,
    /// Provisioning claimed by one event; the contract is frozen (changes become change orders).
    Provisioning,
    /// Project exists in PSA and ERP.
    Provisioned,
    /// Billing schedule exists; project is live.
    Active,
    /// Provisioning failed permanently (PSA compensated); needs an operator.
    ProvisioningFailed,
    /// The ERP refused the billing schedule; needs an operator.
    BillingSetupFailed,
}

impl EngagementStatus {
    /// Wire name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::AwaitingContract => "awaiting_contract",
            Self::Rejected => "rejected",
            Self::ContractCreated => "contract_created",
            Self::AwaitingApproval => "awaiting_approval",
            Self::Provisioning => "provisioning",
            Self::Provisioned => "provisioned",
            Self::Active => "active",
            Self::ProvisioningFailed => "provisioning_failed",
            Self::BillingSetupFailed => "billing_setup_failed",
        }
    }

    /// True once provisioning has started: the contract is frozen and changes need a
    /// change order.
    pub fn is_provisioned(self) -> bool {
        matches!(self, Self::Provisioning | Self::Provisioned | Self::Active | Self::BillingSetupFailed)
    }

    /// Every status, for operator filters.
    pub const ALL: [EngagementStatus; 9] = [
        Self::AwaitingContract,
        Self::Rejected,
        Self::ContractCreated,
        Self::AwaitingApproval,
        Self::Provisioning,
        Self::Provisioned,
        Self::Active,
        Self::ProvisioningFailed,
        Self::BillingSetupFailed,
    ];
}

/// Why the latest closed-won was rejected.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Rejection {
    /// Opportunity revision rejected.
    pub revision: u64,
    /// Event rejected.
    pub event_id: String,
    /// Every reason.
    pub reasons: Vec<Issue>,
    /// When.
    pub at: DateTime<Utc>,
}

/// CLM approval of the statement of work.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Approval {
    /// CLM agreement id.
    pub clm_agreement_id: String,
    /// Approver user id.
    pub approver_id: String,
    /// Approval time.
    pub approved_at: DateTime<Utc>,
}

/// An exception on the engagement, for the operator workflow.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EngagementException {
    /// Stable id (same cause → same id, so re-processing does not duplicate it).
    pub exception_id: ExceptionId,
    /// Kind.
    pub kind: ExceptionKind,
    /// Step that raised it.
    pub step: String,
    /// Operator-facing message.
    pub message: String,
    /// Compensations performed.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub compensations: Vec<Compensation>,
    /// Raised at.
    pub raised_at: DateTime<Utc>,
    /// Still needs attention.
    pub open: bool,
    /// The event being processed when it was raised.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub event_id: Option<String>,
    /// When it closed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub closed_at: Option<DateTime<Utc>>,
    /// Why it closed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resolution: Option<String>,
    /// Raised but its `ExceptionRaised` not yet published (a failure whose compensation
    /// was still owed): the next final decision on the engagement announces it.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub announce_pending: bool,
    /// The money held up (an invoice, a journal), when the step knows it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub amount_at_stake: Option<crate::money::Money>,
    /// Who caused it (an approver, a requester): barred from resolving a financial one.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub caused_by: Vec<String>,
}

impl EngagementException {
    /// Closes it: its condition cleared.
    pub fn close(&mut self, at: DateTime<Utc>, resolution: String) {
        self.open = false;
        self.closed_at = Some(at);
        self.resolution = Some(resolution);
    }
}

/// What a step did with an event: the timeline's vocabulary (stored and shown by its
/// snake_case name).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Action {
    /// Intake: the same opportunity revision again.
    DuplicateRevisionIgnored,
    /// Intake: an older revision arrived late.
    StaleRevisionIgnored,
    /// Intake: the revision failed validation.
    Rejected,
    /// Intake: a newer revision with the same commercial terms.
    RevisionWithoutCommercialChange,
    /// Intake: a change after provisioning started.
    ChangeOrderRequired,
    /// Intake: the CRM changed attributes it does not own (source-of-record rules); not applied.
    AttributesNotApplied,
    /// Intake: the contract was amended before provisioning.
    ContractAmended,
    /// Intake: the contract was created.
    ContractCreated,
    /// Provision: the CLM approval was recorded.
    ApprovalRecorded,
    /// Provision: the latest revision is rejected.
    NotProvisionedRejected,
    /// Provision: provisioning failed earlier; waiting for a corrected revision.
    NotProvisionedFailed,
    /// Provision: another event holds the claim.
    ProvisioningInProgress,
    /// Provision: nothing to do.
    AlreadyProvisioned,
    /// Provision: waiting for CLM approval.
    AwaitingApproval,
    /// Provision: the claim moved on while this event worked.
    ProvisioningSuperseded,
    /// Provision: projects exist in PSA and ERP.
    Provisioned,
    /// Provision: a system refused the project.
    ProvisioningFailed,
    /// Provision: owed compensations were performed.
    Compensated,
    /// Billing setup: not applicable to the current state.
    BillingSetupSkipped,
    /// Billing setup: the state moved on while this event worked.
    BillingSetupSuperseded,
    /// Billing setup: the schedule exists; the engagement is active.
    Activated,
    /// Billing setup: the ERP refused the schedule.
    BillingSetupFailed,
    /// CRM write-back: the CRM already shows the state.
    CrmAlreadyCurrent,
    /// CRM write-back: the CRM was updated.
    CrmUpdated,
    /// CRM write-back: the CRM already had a newer update.
    CrmUpdateSuperseded,
    /// CRM write-back: the CRM refused the update.
    CrmWritebackFailed,
    /// A message exhausted its receives; its exception was raised.
    DeadLettered,
    /// A completed event came again; its stored events were re-published, settling what
    /// its earlier failed delivery left open (its dead-letter exception).
    Redelivered,
    /// Delivery: a staffing assignment was recorded (or updated, or released).
    AssignmentRecorded,
    /// Delivery: an assignment version already recorded (or older).
    AssignmentUnchanged,
    /// Delivery: an approved entry entered WIP.
    EntryAccepted,
    /// Delivery: a newer version of an entry replaced the one in WIP.
    EntryCorrected,
    /// Delivery: the source withdrew an entry; nothing of it stays billable.
    EntryWithdrawn,
    /// Delivery: this entry version (or a newer one) is already in WIP.
    EntryUnchanged,
    /// Delivery: an entry was refused, with every reason.
    EntryRejected,
    /// Delivery: a completed milestone became billable.
    MilestoneRecorded,
    /// Delivery: the milestone's completion was already recorded.
    MilestoneAlreadyRecorded,
    /// Invoice run: not due, not active, or an invoice is still open.
    InvoiceRunSkipped,
    /// Invoice run: nothing billable up to the cut-off.
    NothingToBill,
    /// Invoice run: a taxed draft awaits approval.
    InvoiceDrafted,
    /// Invoice run / approval: the invoice goes to posting.
    InvoiceReleased,
    /// Invoice run: the tax engine refused the draft.
    TaxFailed,
    /// Approval: an approver approved the invoice.
    InvoiceApproved,
    /// Approval: an approver rejected the invoice; its lines went back to WIP.
    InvoiceRejected,
    /// Approval: a decision was refused (role or segregation of duties).
    ApprovalRefused,
    /// Approval: the invoice is no longer waiting for a decision.
    InvoiceDecisionIgnored,
    /// Posting: the invoice took the next number of its legal entity.
    InvoiceNumbered,
    /// Posting: the ERP holds the invoice under its number.
    InvoicePosted,
    /// Posting: the ERP refused the invoice.
    InvoicePostingFailed,
    /// Posting: nothing to do.
    InvoiceAlreadyPosted,
    /// Cash application: a payment was matched and booked.
    PaymentApplied,
    /// Cash application: the payment (or its reversal) was already applied.
    PaymentDuplicate,
    /// Revenue: a journal for the period was posted.
    RevenueRecognized,
    /// Revenue: nothing new earned for the period (or it was covered already).
    RevenueUnchanged,
    /// Revenue: the ERP refused the journal.
    RevenuePostingFailed,
    /// CRM invoice sync: invoice records written.
    CrmInvoicesWritten,
    /// CRM invoice sync: nothing to write.
    CrmInvoicesUnchanged,
    /// Exceptions: a case opened, reopened or its reason changed.
    ExceptionOpened,
    /// Exceptions: the case already records this.
    ExceptionUnchanged,
    /// Exceptions: a case closed (cleared, resolved or waived).
    ExceptionClosed,
    /// Exceptions: an operator assigned or commented on a case.
    ExceptionWorked,
    /// Exceptions: an operator re-drove a case's source event.
    ExceptionRetried,
    /// Exceptions: an operator's action was refused (recorded on the case).
    ExceptionActionRefused,
    /// Reconciliation: every system agrees.
    Reconciled,
    /// Reconciliation: a system holds something else.
    ReconciliationMismatch,
}

impl Action {
    /// The stored name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::DuplicateRevisionIgnored => "duplicate_revision_ignored",
            Self::StaleRevisionIgnored => "stale_revision_ignored",
            Self::Rejected => "rejected",
            Self::RevisionWithoutCommercialChange => "revision_without_commercial_change",
            Self::ChangeOrderRequired => "change_order_required",
            Self::AttributesNotApplied => "attributes_not_applied",
            Self::ContractAmended => "contract_amended",
            Self::ContractCreated => "contract_created",
            Self::ApprovalRecorded => "approval_recorded",
            Self::NotProvisionedRejected => "not_provisioned_rejected",
            Self::NotProvisionedFailed => "not_provisioned_failed",
            Self::ProvisioningInProgress => "provisioning_in_progress",
            Self::AlreadyProvisioned => "already_provisioned",
            Self::AwaitingApproval => "awaiting_approval",
            Self::ProvisioningSuperseded => "provisioning_superseded",
            Self::Provisioned => "provisioned",
            Self::ProvisioningFailed => "provisioning_failed",
            Self::Compensated => "compensated",
            Self::BillingSetupSkipped => "billing_setup_skipped",
            Self::BillingSetupSuperseded => "billing_setup_superseded",
            Self::Activated => "activated",
            Self::BillingSetupFailed => "billing_setup_failed",
            Self::CrmAlreadyCurrent => "crm_already_current",
            Self::CrmUpdated => "crm_updated",
            Self::CrmUpdateSuperseded => "crm_update_superseded",
            Self::CrmWritebackFailed => "crm_writeback_failed",
            Self::DeadLettered => "dead_lettered",
            Self::Redelivered => "redelivered",
            Self::AssignmentRecorded => "assignment_recorded",
            Self::AssignmentUnchanged => "assignment_unchanged",
            Self::EntryAccepted => "entry_accepted",
            Self::EntryCorrected => "entry_corrected",
            Self::EntryWithdrawn => "entry_withdrawn",
            Self::EntryUnchanged => "entry_unchanged",
            Self::EntryRejected => "entry_rejected",
            Self::MilestoneRecorded => "milestone_recorded",
            Self::MilestoneAlreadyRecorded => "milestone_already_recorded",
            Self::InvoiceRunSkipped => "invoice_run_skipped",
            Self::NothingToBill => "nothing_to_bill",
            Self::InvoiceDrafted => "invoice_drafted",
            Self::InvoiceReleased => "invoice_released",
            Self::TaxFailed => "tax_failed",
            Self::InvoiceApproved => "invoice_approved",
            Self::InvoiceRejected => "invoice_rejected",
            Self::ApprovalRefused => "approval_refused",
            Self::InvoiceDecisionIgnored => "invoice_decision_ignored",
            Self::InvoiceNumbered => "invoice_numbered",
            Self::InvoicePosted => "invoice_posted",
            Self::InvoicePostingFailed => "invoice_posting_failed",
            Self::InvoiceAlreadyPosted => "invoice_already_posted",
            Self::PaymentApplied => "payment_applied",
            Self::PaymentDuplicate => "payment_duplicate",
            Self::RevenueRecognized => "revenue_recognized",
            Self::RevenueUnchanged => "revenue_unchanged",
            Self::RevenuePostingFailed => "revenue_posting_failed",
            Self::CrmInvoicesWritten => "crm_invoices_written",
            Self::CrmInvoicesUnchanged => "crm_invoices_unchanged",
            Self::ExceptionOpened => "exception_opened",
            Self::ExceptionUnchanged => "exception_unchanged",
            Self::ExceptionClosed => "exception_closed",
            Self::ExceptionWorked => "exception_worked",
            Self::ExceptionRetried => "exception_retried",
            Self::ExceptionActionRefused => "exception_action_refused",
            Self::Reconciled => "reconciled",
            Self::ReconciliationMismatch => "reconciliation_mismatch",
        }
    }
}

impl std::fmt::Display for Action {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.pad(self.as_str())
    }
}

impl PartialEq<&str> for Action {
    fn eq(&self, other: &&str) -> bool {
        self.as_str() == *other
    }
}

impl PartialEq<str> for Action {
    fn eq(&self, other: &str) -> bool {
        self.as_str() == other
    }
}

/// How the CRM answered the last write-back.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "outcome", rename_all = "snake_case")]
pub enum CrmWriteResult {
    /// Written (or the CRM already had a newer update).
    Ok,
    /// Refused permanently.
    Error {
        /// The CRM's reason.
        reason: String,
    },
}

impl std::fmt::Display for CrmWriteResult {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Ok => f.write_str("ok"),
            Self::Error { reason } => write!(f, "error: {reason}"),
        }
    }
}

/// What was last written to the CRM opportunity.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CrmSync {
    /// The update last written (or attempted).
    pub update: CrmOpportunityUpdate,
    /// How the CRM answered.
    pub result: CrmWriteResult,
    /// When.
    pub at: DateTime<Utc>,
}

/// The sync-status fields o2c writes back onto the CRM opportunity (the custom fields
/// CRM↔ERP integrations conventionally add: sync status, external ids, last error).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CrmOpportunityUpdate {
    /// Opportunity id.
    pub opportunity_id: String,
    /// Monotonic version of the engagement state this update reflects; the CRM connector
    /// ignores an update older than the one already written (reordering-safe).
    pub sync_version: u64,
    /// `Synced` | `Pending` | `Error`.
    pub sync_status: String,
    /// Engagement status (wire name).
    pub engagement_status: String,
    /// Engagement id.
    pub engagement_id: EngagementId,
    /// Contract id.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub contract_id: Option<ContractId>,
    /// PSA project id.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub psa_project_id: Option<String>,
    /// ERP project id.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub erp_project_id: Option<String>,
    /// ERP billing schedule id.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub erp_billing_schedule_id: Option<String>,
    /// Errors for the sales user, most important first (bounded to the CRM field size).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_error: Option<String>,
}

impl CrmOpportunityUpdate {
    /// Same content ignoring `sync_version`.
    pub fn same_content(&self, other: &Self) -> bool {
        let mut a = self.clone();
        a.sync_version = other.sync_version;
        &a == other
    }
}

/// The engagement aggregate.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Engagement {
    /// `ENG-<opportunity id>`.
    pub engagement_id: EngagementId,
    /// CRM opportunity id.
    pub opportunity_id: String,
    /// Status.
    pub status: EngagementStatus,
    /// Correlation id of the flow.
    pub correlation_id: String,
    /// Highest opportunity revision processed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub latest_revision: Option<u64>,
    /// The contract (absent until a valid closed-won).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub contract: Option<Contract>,
    /// A changed contract received after provisioning, waiting for a change order.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pending_change: Option<Contract>,
    /// The latest rejection.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rejection: Option<Rejection>,
    /// CLM approval.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub approval: Option<Approval>,
    /// Provisioning attempt (1-based); the external key of attempt n > 1 is `<id>~n`.
    #[serde(default)]
    pub provisioning_attempt: u32,
    /// Idempotency key of the event whose provisioning holds the `provisioning` claim
    /// (`None` while `provisioning`: abandoned by a dead-lettered message, free to take over).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub claimed_by: Option<String>,
    /// Compensations a failed attempt owes (recorded before they are performed).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub compensation_due: Vec<Compensation>,
    /// PSA project id.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub psa_project_id: Option<String>,
    /// ERP project id.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub erp_project_id: Option<String>,
    /// Milestones created with the project.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub milestones: Vec<Milestone>,
    /// Billing schedule.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub billing_schedule: Option<BillingSchedule>,
    /// ERP billing schedule id.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub erp_billing_schedule_id: Option<String>,
    /// Exceptions.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub exceptions: Vec<EngagementException>,
    /// Created.
    pub created_at: DateTime<Utc>,
    /// Last change.
    pub updated_at: DateTime<Utc>,
}

impl Engagement {
    /// A fresh engagement for an opportunity.
    pub fn new(engagement_id: EngagementId, opportunity_id: String, correlation_id: String, now: DateTime<Utc>) -> Self {
        Self {
            engagement_id,
            opportunity_id,
            status: EngagementStatus::AwaitingContract,
            correlation_id,
            latest_revision: None,
            contract: None,
            pending_change: None,
            rejection: None,
            approval: None,
            provisioning_attempt: 0,
            claimed_by: None,
            compensation_due: Vec::new(),
            psa_project_id: None,
            erp_project_id: None,
            milestones: Vec::new(),
            billing_schedule: None,
            erp_billing_schedule_id: None,
            exceptions: Vec::new(),
            created_at: now,
            updated_at: now,
        }
    }

    /// True when any exception is still open (operator queue).
    pub fn has_open_exception(&self) -> bool {
        self.exceptions.iter().any(|e| e.open)
    }

    /// Adds an exception unless one with the same id exists (re-processing is idempotent).
    pub fn raise(&mut self, exception: EngagementException) -> bool {
        if self.exceptions.iter().any(|e| e.exception_id == exception.exception_id) {
            return false;
        }
        self.exceptions.push(exception);
        true
    }

    /// The external key used for PSA/ERP project creation in the current attempt.
    pub fn project_external_key(&self) -> ProjectKey {
        ProjectKey::for_attempt(&self.engagement_id, self.provisioning_attempt)
    }
}

/// One line of an engagement's timeline.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AuditEntry {
    /// Engagement.
    pub engagement_id: EngagementId,
    /// When the step processed the event.
    pub at: DateTime<Utc>,
    /// Step (function) name.
    pub step: String,
    /// Event processed.
    pub event_id: String,
    /// Its detail-type.
    pub event_type: String,
    /// Correlation id.
    pub correlation_id: String,
    /// What the step did.
    pub action: Action,
    /// Short operator-facing summary (no PII).
    pub summary: String,
}
