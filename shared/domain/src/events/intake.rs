//! o2c intake: contract created, engagement rejected.

use super::Issue;
use crate::ids::{ContractId, EngagementId};
use crate::money::Money;
use serde::{Deserialize, Serialize};

/// `ContractCreated` payload (a summary; consumers read the contract from the state store).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ContractCreated {
    /// Engagement id.
    pub engagement_id: EngagementId,
    /// Contract id.
    pub contract_id: ContractId,
    /// Opportunity id.
    pub opportunity_id: String,
    /// Opportunity revision.
    pub revision: u64,
    /// Customer id.
    pub customer_id: String,
    /// Legal entity id.
    pub legal_entity_id: String,
    /// Total contract value.
    pub total_value: Money,
    /// CLM approval needed before provisioning.
    pub approval_required: bool,
}

/// `EngagementRejected` payload.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EngagementRejected {
    /// Engagement id.
    pub engagement_id: EngagementId,
    /// Opportunity id.
    pub opportunity_id: String,
    /// Opportunity revision rejected.
    pub revision: u64,
    /// Every reason.
    pub reasons: Vec<Issue>,
}
