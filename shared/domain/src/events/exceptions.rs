//! o2c exceptions: what needs an operator — raised by a step, worked by operators
//! (`ExceptionActionRequested`), closed by the step that clears its condition or by an
//! operator (`ExceptionResolved`).

use crate::ids::{EngagementId, ExceptionId};
use crate::money::Money;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

/// What kind of exception an engagement hit.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ExceptionKind {
    /// PSA or ERP refused the project; compensations listed.
    ProvisioningFailed,
    /// ERP refused the billing schedule.
    BillingSetupFailed,
    /// A changed closed-won arrived after provisioning: needs a change order.
    ChangeOrderRequired,
    /// The CRM refused the status write-back.
    CrmWritebackFailed,
    /// A message could not be processed and was parked (poison / bad input).
    MessageRejected,
    /// A message exhausted its receives (retryable failures) and went to its DLQ.
    DeadLettered,
    /// A not-to-exceed cap held billable work back from an invoice.
    CapExceeded,
    /// The tax engine refused an invoice (no invoice was drafted).
    TaxFailed,
    /// The ERP refused a numbered invoice (it keeps its number; repost after the fix).
    InvoicePostingFailed,
    /// The ERP refused a revenue journal.
    RevenuePostingFailed,
    /// A system holds something other than o2c says it should (reconciliation).
    ReconciliationMismatch,
    /// A system sent an attribute it does not own (source-of-record rules): not applied,
    /// its value conflicts with the owner's.
    DataStewardship,
}

impl ExceptionKind {
    /// Every kind.
    pub const ALL: [ExceptionKind; 12] = [
        Self::ProvisioningFailed,
        Self::BillingSetupFailed,
        Self::ChangeOrderRequired,
        Self::CrmWritebackFailed,
        Self::MessageRejected,
        Self::DeadLettered,
        Self::CapExceeded,
        Self::TaxFailed,
        Self::InvoicePostingFailed,
        Self::RevenuePostingFailed,
        Self::ReconciliationMismatch,
        Self::DataStewardship,
    ];

    /// Wire name (`tax_failed`).
    pub fn as_str(self) -> &'static str {
        match self {
            Self::ProvisioningFailed => "provisioning_failed",
            Self::BillingSetupFailed => "billing_setup_failed",
            Self::ChangeOrderRequired => "change_order_required",
            Self::CrmWritebackFailed => "crm_writeback_failed",
            Self::MessageRejected => "message_rejected",
            Self::DeadLettered => "dead_lettered",
            Self::CapExceeded => "cap_exceeded",
            Self::TaxFailed => "tax_failed",
            Self::InvoicePostingFailed => "invoice_posting_failed",
            Self::RevenuePostingFailed => "revenue_posting_failed",
            Self::ReconciliationMismatch => "reconciliation_mismatch",
            Self::DataStewardship => "data_stewardship",
        }
    }

    /// Parses a wire name.
    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|k| k.as_str() == s)
    }

    /// Money moves on its resolution (billing, caps, tax, invoices, revenue, commercial
    /// changes): segregation of duties applies — whoever raised or caused it may not
    /// resolve or waive it.
    pub fn is_financial(self) -> bool {
        matches!(
            self,
            Self::BillingSetupFailed
                | Self::ChangeOrderRequired
                | Self::CapExceeded
                | Self::TaxFailed
                | Self::InvoicePostingFailed
                | Self::RevenuePostingFailed
        )
    }
}

/// The event a step was processing when it raised an exception, kept so an operator's
/// retry re-drives it (same payload and correlation id). Only events up to
/// [`SOURCE_EVENT_MAX_BYTES`] are kept whole; a larger one keeps its ids and is replayed
/// from the bus archive (`o2c replay`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SourceEvent {
    /// Its `detail-type`.
    pub detail_type: String,
    /// Its `event_id`.
    pub event_id: String,
    /// Its idempotency key (as the step saw it: given or derived).
    pub idempotency_key: String,
    /// When it occurred.
    pub occurred_at: DateTime<Utc>,
    /// Its payload, when it fits.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub payload: Option<serde_json::Value>,
}

/// The largest source payload an exception keeps (canonical JSON bytes): with the rest of
/// `ExceptionRaised` it stays far under EventBridge's 256 KB entry limit, and the case
/// under its item budget.
pub const SOURCE_EVENT_MAX_BYTES: usize = 32 * 1024;

/// What an operator does to an exception.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum ExceptionAction {
    /// Take it, or hand it to someone.
    Assign {
        /// Who works it.
        assignee: String,
    },
    /// Note something on it.
    Comment {
        /// The note (at most [`COMMENT_MAX_CHARS`] characters).
        text: String,
    },
    /// Re-drive the event it came from (same payload, same correlation id).
    Retry,
    /// Fixed: close it.
    Resolve {
        /// What was done.
        reason: String,
    },
    /// Accepted as is: close it without a fix.
    Waive {
        /// Why it may stand.
        reason: String,
    },
}

/// The longest comment or reason an exception keeps.
pub const COMMENT_MAX_CHARS: usize = 1000;

impl ExceptionAction {
    /// Wire name (`assign`, `comment`, `retry`, `resolve`, `waive`).
    pub fn name(&self) -> &'static str {
        match self {
            Self::Assign { .. } => "assign",
            Self::Comment { .. } => "comment",
            Self::Retry => "retry",
            Self::Resolve { .. } => "resolve",
            Self::Waive { .. } => "waive",
        }
    }
}

/// `ExceptionActionRequested` payload: an operator acts on an exception.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExceptionActionRequested {
    /// The exception.
    pub exception_id: ExceptionId,
    /// Its engagement (or receivables owner).
    pub engagement_id: EngagementId,
    /// What to do.
    pub action: ExceptionAction,
    /// Who acts (an operator's user id).
    pub actor: String,
}

/// How an exception closed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ResolutionOutcome {
    /// Its condition cleared: the step that raised it later completed.
    Cleared,
    /// An operator fixed it.
    Resolved,
    /// An operator accepted it as is.
    Waived,
}

impl ResolutionOutcome {
    /// Wire name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Cleared => "cleared",
            Self::Resolved => "resolved",
            Self::Waived => "waived",
        }
    }
}

/// `ExceptionResolved` payload: an exception closed.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExceptionResolved {
    /// The exception.
    pub exception_id: ExceptionId,
    /// Its engagement (or receivables owner).
    pub engagement_id: EngagementId,
    /// Its kind.
    pub kind: ExceptionKind,
    /// When the occurrence that closed was raised (a later reopening is not closed by this).
    pub raised_at: DateTime<Utc>,
    /// How it closed.
    pub outcome: ResolutionOutcome,
    /// The operator (none when its condition cleared).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub actor: Option<String>,
    /// What was done, or what cleared it.
    pub reason: String,
}

/// A compensating action taken after a partial failure.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Compensation {
    /// System compensated (`psa`, `erp`).
    pub system: String,
    /// Action (`cancel_project`).
    pub action: String,
    /// Object affected.
    pub object_id: String,
    /// `pending` (owed, not yet performed), `done` or `failed: <reason>`.
    pub outcome: String,
}

/// `ExceptionRaised` payload.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ExceptionRaised {
    /// Exception id (stable per cause).
    pub exception_id: ExceptionId,
    /// Engagement id.
    pub engagement_id: EngagementId,
    /// Kind.
    pub kind: ExceptionKind,
    /// Step that raised it.
    pub step: String,
    /// Operator-facing message.
    pub message: String,
    /// Compensations performed.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub compensations: Vec<Compensation>,
    /// When this occurrence was raised (a reopening raises again with a later time).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub raised_at: Option<DateTime<Utc>>,
    /// The legal entity whose books are concerned, when known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub legal_entity_id: Option<String>,
    /// The money held up (an invoice, a journal, a contract), when known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub amount_at_stake: Option<Money>,
    /// People whose action caused it (an approver, a requester): they may not resolve
    /// or waive a financial exception.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub caused_by: Vec<String>,
    /// The event being processed, for an operator's retry.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source_event: Option<SourceEvent>,
}
