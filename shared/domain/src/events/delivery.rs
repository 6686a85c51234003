//! PSA delivery: staffing, approved time and expenses, completed milestones; and what
//! o2c refused of them.

use chrono::NaiveDate;
use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};

use super::Issue;
use crate::delivery::EntryKind;
use crate::ids::EngagementId;
use crate::model::{Expense, TimeEntry};

/// `ResourceAssigned` payload: the PSA staffed (or re-staffed, or released) a resource.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ResourceAssigned {
    /// Engagement.
    pub engagement_id: EngagementId,
    /// Assignment id in the PSA.
    pub assignment_id: String,
    /// PSA project.
    pub project_id: String,
    /// Resource (employee id; never a name).
    pub resource_id: String,
    /// Role (prices time from the rate card).
    pub role: String,
    /// First day.
    pub start_date: NaiveDate,
    /// Last day.
    pub end_date: NaiveDate,
    /// Planned hours.
    #[serde(with = "rust_decimal::serde::str")]
    pub planned_hours: Decimal,
    /// The PSA's revision counter of the assignment.
    pub version: u32,
    /// Released / cancelled.
    #[serde(default)]
    pub cancelled: bool,
}

/// `TimeApproved` payload.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TimeApproved {
    /// The approved entry.
    pub time_entry: TimeEntry,
}

/// `ExpenseApproved` payload.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ExpenseApproved {
    /// The approved expense.
    pub expense: Expense,
}

/// `MilestoneCompleted` payload.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MilestoneCompleted {
    /// Engagement id.
    pub engagement_id: EngagementId,
    /// Milestone id (`<line>-<phase>`).
    pub milestone_id: String,
    /// PSA project id.
    pub psa_project_id: String,
    /// Completion date.
    pub completed_on: NaiveDate,
    /// Who reported it complete.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reported_by: Option<String>,
}

/// `DeliveryRejected` payload: an entry o2c refused, with every reason (the PSA fixes it).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DeliveryRejected {
    /// Engagement.
    pub engagement_id: EngagementId,
    /// Time entry or expense id.
    pub entry_id: String,
    /// Time or expense.
    pub kind: EntryKind,
    /// Version refused.
    pub version: u32,
    /// Every reason.
    pub reasons: Vec<Issue>,
}
