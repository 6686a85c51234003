//! o2c billing setup: the engagement is active.

use crate::ids::EngagementId;
use crate::money::Money;
use serde::{Deserialize, Serialize};

/// `ProjectActivated` payload.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ProjectActivated {
    /// Engagement id.
    pub engagement_id: EngagementId,
    /// PSA project id.
    pub psa_project_id: String,
    /// ERP project id.
    pub erp_project_id: String,
    /// ERP billing schedule id.
    pub erp_billing_schedule_id: String,
    /// Fixed-value part of the schedule.
    pub fixed_total: Money,
    /// Sum of T&M caps.
    pub time_and_materials_cap: Money,
}
