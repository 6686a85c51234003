//! Reconciliation events.

use serde::{Deserialize, Serialize};

use crate::ids::EngagementId;

/// `ReconciliationRequested` payload: compare what every system holds for one engagement,
/// or (fanned out) for every active one.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReconciliationRequested {
    /// Run id (one per schedule tick or operator request).
    pub run_id: String,
    /// One engagement, or every active one when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub engagement_id: Option<EngagementId>,
    /// Fan-out paging: engagements after this id.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub after: Option<String>,
    /// Who asked (`scheduler` or an operator's user id).
    pub requested_by: String,
}
