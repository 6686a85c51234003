//! o2c provisioning: projects exist in PSA and ERP.

use crate::ids::EngagementId;
use serde::{Deserialize, Serialize};

/// `ProjectProvisioned` payload.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ProjectProvisioned {
    /// Engagement id.
    pub engagement_id: EngagementId,
    /// PSA project id.
    pub psa_project_id: String,
    /// ERP project id.
    pub erp_project_id: String,
    /// Number of milestones created.
    pub milestone_count: u32,
}
