//! CRM: the closed-won opportunity (contract version 2; version 1 is upcast to it on
//! decode, see [`super::upcast`]).

use serde::{Deserialize, Serialize};

/// An amount with its currency as the CRM sends it: both optional on the wire so intake
/// reports every missing one at once; intake parses the decimal and the ISO 4217 code.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct WireMoney {
    /// Decimal string (`"1250000.00"`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub amount: Option<String>,
    /// ISO 4217 code.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub currency: Option<String>,
}

/// What kind of sale the opportunity is (v2). CRMs have more values; the integration
/// reduces them to these.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OpportunityType {
    /// A new customer or a new engagement.
    NewBusiness,
    /// More scope for an existing engagement's customer.
    Expansion,
    /// The renewal of a running service.
    Renewal,
}

/// A quoted role estimate on a T&M line, as the CRM sends it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct OpportunityRole {
    /// Role code.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub role: Option<String>,
    /// Estimated hours (decimal string).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hours: Option<String>,
}

/// An opportunity product line as the CRM sends it (attributes optional on the wire so
/// validation can report every missing one at once).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct OpportunityLine {
    /// Line id.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub line_id: Option<String>,
    /// Service catalog offering.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub service_offering_id: Option<String>,
    /// `time_and_materials` | `fixed_fee` | `milestone`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub billing_model: Option<String>,
    /// Line value (decimal string; not-to-exceed for T&M).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub amount: Option<String>,
    /// Description.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    /// Fixed fee: number of installments.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub installments: Option<u32>,
    /// Fixed fee: `monthly` | `quarterly`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub installment_frequency: Option<String>,
    /// T&M: estimated hours per role.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub roles: Vec<OpportunityRole>,
}

/// `OpportunityClosedWon` payload (v2): the opportunity as the CRM sends it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct OpportunityClosedWon {
    /// CRM opportunity id (required).
    pub opportunity_id: String,
    /// Monotonic revision of the opportunity (a re-send with changes carries a higher one).
    pub revision: u64,
    /// Opportunity name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// Stage; must be `Closed Won`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stage: Option<String>,
    /// Customer master id of the account.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub account_id: Option<String>,
    /// Close date.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub close_date: Option<String>,
    /// Total contract value and its ISO 4217 currency (v1: top-level `amount`, `currency`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub total_value: Option<WireMoney>,
    /// New business, expansion or renewal (v2; absent in upcast v1 events).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub opportunity_type: Option<OpportunityType>,
    /// Contracting legal entity (defaults to the customer's).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub contracting_entity_id: Option<String>,
    /// Delivery region.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub delivery_region: Option<String>,
    /// Planned start.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub start_date: Option<String>,
    /// Planned end.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub end_date: Option<String>,
    /// Project template (defaults to the first line's offering template).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub project_template_id: Option<String>,
    /// Rate card for T&M lines.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rate_card_id: Option<String>,
    /// Payment terms (defaults to the customer's).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub payment_terms: Option<String>,
    /// Customer PO number.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub customer_po: Option<String>,
    /// CRM user id of the owner (an id, never a name or e-mail).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub owner_id: Option<String>,
    /// Lines.
    #[serde(default)]
    pub lines: Vec<OpportunityLine>,
}
