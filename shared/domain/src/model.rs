//! Canonical business objects shared by every step: contract, project, billing schedule,
//! resource assignment, time entry, expense, invoice and payment. Systems' own shapes
//! (Salesforce opportunity, NetSuite project, …) are mapped to these at the edges.

use crate::ids::{ContractId, EngagementId, ProjectKey};
use chrono::{DateTime, NaiveDate, Utc};
use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};

use crate::delivery::EntryStatus;
use crate::money::{Currency, Money};
use crate::reference::TaxRegime;

/// How a contract line is billed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum BillingModel {
    /// Time and materials: approved hours × rate card, optionally capped.
    TimeAndMaterials,
    /// Fixed fee billed in installments.
    FixedFee,
    /// Fixed value billed on milestone completion.
    Milestone,
}

impl BillingModel {
    /// Wire name (`time_and_materials`, `fixed_fee`, `milestone`).
    pub fn as_str(self) -> &'static str {
        match self {
            Self::TimeAndMaterials => "time_and_materials",
            Self::FixedFee => "fixed_fee",
            Self::Milestone => "milestone",
        }
    }

    /// Parses the wire name.
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "time_and_materials" => Some(Self::TimeAndMaterials),
            "fixed_fee" => Some(Self::FixedFee),
            "milestone" => Some(Self::Milestone),
            _ => None,
        }
    }
}

/// Installment cadence of a fixed-fee line.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Frequency {
    /// Every month from the start date.
    Monthly,
    /// Every three months from the start date.
    Quarterly,
}

impl Frequency {
    /// Months between two bills.
    pub fn months(self) -> u32 {
        match self {
            Self::Monthly => 1,
            Self::Quarterly => 3,
        }
    }

    /// Parses the wire name.
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "monthly" => Some(Self::Monthly),
            "quarterly" => Some(Self::Quarterly),
            _ => None,
        }
    }
}

/// Customer as enriched from the customer master.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CustomerRef {
    /// Master-data id.
    pub id: String,
    /// Account name.
    pub name: String,
    /// Account hierarchy from this account up to the ultimate parent.
    pub hierarchy: Vec<String>,
    /// Billing country.
    pub country: String,
    /// Customer number in the ERP.
    pub erp_customer_id: String,
}

/// Contracting legal entity as enriched from master data.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LegalEntityRef {
    /// Master-data id.
    pub id: String,
    /// Registered name.
    pub name: String,
    /// Country.
    pub country: String,
    /// ERP subsidiary / company code.
    pub erp_subsidiary: String,
}

/// Tax treatment resolved for the engagement.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TaxTreatment {
    /// Tax profile id.
    pub profile_id: String,
    /// Jurisdiction country.
    pub jurisdiction: String,
    /// Regime.
    pub regime: TaxRegime,
    /// Rate as a fraction.
    #[serde(with = "rust_decimal::serde::str")]
    pub rate: Decimal,
}

/// Estimated effort of one role on a T&M line, priced from the rate card.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RoleEstimate {
    /// Role code.
    pub role: String,
    /// Estimated hours.
    #[serde(with = "rust_decimal::serde::str")]
    pub hours: Decimal,
    /// Hourly rate resolved from the rate card on the start date.
    pub hourly_rate: Money,
}

/// One line of the contract.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ContractLine {
    /// Line id from the opportunity.
    pub line_id: String,
    /// Service catalog offering.
    pub service_offering_id: String,
    /// Service line owning delivery.
    pub service_line: String,
    /// Description.
    pub description: String,
    /// Billing model.
    pub billing_model: BillingModel,
    /// Line value (for T&M the not-to-exceed amount).
    pub value: Money,
    /// Fixed fee: number of installments.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub installments: Option<u32>,
    /// Fixed fee: cadence.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub frequency: Option<Frequency>,
    /// T&M: role estimates priced from the rate card.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub roles: Vec<RoleEstimate>,
}

/// The validated, enriched engagement contract.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Contract {
    /// Contract id (`CTR-<opportunity id>`).
    pub contract_id: ContractId,
    /// Engagement id.
    pub engagement_id: EngagementId,
    /// CRM opportunity id.
    pub opportunity_id: String,
    /// Opportunity revision this contract was built from.
    pub revision: u64,
    /// Engagement name.
    pub name: String,
    /// Customer.
    pub customer: CustomerRef,
    /// Contracting legal entity.
    pub legal_entity: LegalEntityRef,
    /// Tax treatment.
    pub tax: TaxTreatment,
    /// Contract currency.
    pub currency: Currency,
    /// Total contract value (sum of lines).
    pub total_value: Money,
    /// Delivery start.
    pub start_date: NaiveDate,
    /// Delivery end.
    pub end_date: NaiveDate,
    /// Delivery region.
    pub delivery_region: String,
    /// Project template.
    pub project_template_id: String,
    /// Rate card (present when any line is T&M).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rate_card_id: Option<String>,
    /// Payment terms.
    pub payment_terms: String,
    /// Customer purchase order.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub customer_po: Option<String>,
    /// Service lines present on the contract.
    pub service_lines: Vec<String>,
    /// True when a workflow rule requires CLM approval before provisioning.
    pub approval_required: bool,
    /// New business, expansion or renewal, when the CRM said (closed-won v2).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub opportunity_type: Option<crate::events::OpportunityType>,
    /// Lines.
    pub lines: Vec<ContractLine>,
}

impl Contract {
    /// The commercial fingerprint used to tell a changed re-send from a duplicate:
    /// everything except the revision number.
    pub fn commercial_terms_equal(&self, other: &Contract) -> bool {
        let mut a = self.clone();
        a.revision = other.revision;
        &a == other
    }
}

/// A project milestone (billing milestone when it carries an amount).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Milestone {
    /// Stable id: `<line id>-<phase code>`.
    pub milestone_id: String,
    /// Contract line it bills.
    pub line_id: String,
    /// Template phase code.
    pub phase_code: String,
    /// Name.
    pub name: String,
    /// Planned completion date.
    pub due_date: NaiveDate,
    /// Billing amount.
    pub amount: Money,
}

/// What o2c asks the PSA and the ERP to create. `external_key` makes creation
/// create-or-get: a second call with the same key returns the existing project.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ProjectSpec {
    /// Idempotency / integration key (the engagement id).
    pub external_key: ProjectKey,
    /// Project name.
    pub name: String,
    /// Customer number in the target system.
    pub customer_id: String,
    /// ERP subsidiary / company code.
    pub subsidiary: String,
    /// Template code in the target system.
    pub template: String,
    /// Start date.
    pub start_date: NaiveDate,
    /// End date.
    pub end_date: NaiveDate,
    /// Delivery region.
    pub delivery_region: String,
    /// Currency.
    pub currency: Currency,
    /// Budget (total contract value).
    pub budget: Money,
    /// Milestones.
    pub milestones: Vec<Milestone>,
}

/// A rate applied to approved time on a T&M line.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RoleRate {
    /// Role code.
    pub role: String,
    /// Hourly rate.
    pub hourly_rate: Money,
}

/// One element of the billing schedule.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum BillingItem {
    /// Bill `amount` when the milestone is completed.
    Milestone {
        /// Item id.
        item_id: String,
        /// Contract line.
        line_id: String,
        /// Milestone id.
        milestone_id: String,
        /// Planned date.
        planned_date: NaiveDate,
        /// Amount.
        amount: Money,
    },
    /// Bill `amount` on `bill_date`.
    Installment {
        /// Item id.
        item_id: String,
        /// Contract line.
        line_id: String,
        /// 1-based sequence.
        sequence: u32,
        /// Bill date.
        bill_date: NaiveDate,
        /// Amount.
        amount: Money,
    },
    /// Bill approved time monthly at these rates, capped at `not_to_exceed`.
    TimeAndMaterials {
        /// Item id.
        item_id: String,
        /// Contract line.
        line_id: String,
        /// Rates by role.
        rates: Vec<RoleRate>,
        /// Cap on the line.
        not_to_exceed: Money,
        /// Billing cadence.
        frequency: Frequency,
        /// First billing run.
        first_bill_date: NaiveDate,
    },
}

/// The billing schedule created in the ERP when the project is activated.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BillingSchedule {
    /// External key (`BS-<engagement id>`), create-or-get in the ERP.
    pub schedule_id: String,
    /// Engagement.
    pub engagement_id: EngagementId,
    /// Currency.
    pub currency: Currency,
    /// Items in date order.
    pub items: Vec<BillingItem>,
    /// Sum of fixed-value items (milestones + installments) — equals the fixed part of the contract.
    pub fixed_total: Money,
    /// Sum of T&M caps.
    pub time_and_materials_cap: Money,
}

/// A consultant staffed on an engagement.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ResourceAssignment {
    /// Assignment id in the PSA.
    pub assignment_id: String,
    /// Engagement.
    pub engagement_id: EngagementId,
    /// Resource (employee) id — never a name: logs and events carry no PII.
    pub resource_id: String,
    /// Role code (prices time from the rate card).
    pub role: String,
    /// Planned hours.
    #[serde(with = "rust_decimal::serde::str")]
    pub planned_hours: Decimal,
    /// Start.
    pub start_date: NaiveDate,
    /// End.
    pub end_date: NaiveDate,
}

/// An approved time entry from the PSA.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TimeEntry {
    /// Time entry id in the PSA (idempotency key).
    pub time_entry_id: String,
    /// Engagement.
    pub engagement_id: EngagementId,
    /// PSA project id.
    pub project_id: String,
    /// Contract line the hours are charged to.
    pub line_id: String,
    /// Resource id.
    pub resource_id: String,
    /// Role.
    pub role: String,
    /// Day worked.
    pub work_date: NaiveDate,
    /// Hours (quarter-hour precision in most PSAs).
    #[serde(with = "rust_decimal::serde::str")]
    pub hours: Decimal,
    /// Billable flag.
    pub billable: bool,
    /// Approval time.
    pub approved_at: DateTime<Utc>,
    /// Revision of the entry in the PSA (1 for the first approval; a correction is higher).
    #[serde(default = "first_version")]
    pub version: u32,
    /// Approved, or withdrawn by the PSA.
    #[serde(default)]
    pub status: EntryStatus,
    /// Who approved this version (required for a correction: it authors the adjustment).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub approved_by: Option<String>,
}

fn first_version() -> u32 {
    1
}

/// An approved expense from the PSA / expense tool.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Expense {
    /// Expense id (idempotency key).
    pub expense_id: String,
    /// Engagement.
    pub engagement_id: EngagementId,
    /// Resource id.
    pub resource_id: String,
    /// Date incurred.
    pub incurred_on: NaiveDate,
    /// Category, e.g. `travel`.
    pub category: String,
    /// Amount in the currency incurred.
    pub amount: Money,
    /// Re-billable to the customer.
    pub billable: bool,
    /// Approval time.
    pub approved_at: DateTime<Utc>,
    /// Contract line charged (absent: the contract's only T&M line).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub line_id: Option<String>,
    /// Revision in the source system (1 for the first approval).
    #[serde(default = "first_version")]
    pub version: u32,
    /// Approved, or withdrawn.
    #[serde(default)]
    pub status: EntryStatus,
    /// Who approved this version (required for a correction: it authors the adjustment).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub approved_by: Option<String>,
}
