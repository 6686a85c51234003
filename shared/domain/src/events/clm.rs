//! CLM: the approved statement of work.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

/// `ContractApproved` payload from CLM.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ContractApproved {
    /// The opportunity the statement of work belongs to.
    pub opportunity_id: String,
    /// CLM document / agreement id.
    pub clm_agreement_id: String,
    /// Approval time.
    pub approved_at: DateTime<Utc>,
    /// Approver's user id.
    pub approver_id: String,
}
