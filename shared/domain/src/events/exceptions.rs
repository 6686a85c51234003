//! o2c exceptions: what needs an operator.

use crate::ids::{EngagementId, ExceptionId};
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
}
