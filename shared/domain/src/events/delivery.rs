//! PSA delivery: approved time, expenses, completed milestones.

use crate::ids::EngagementId;
use crate::model::{Expense, TimeEntry};
use chrono::NaiveDate;
use serde::{Deserialize, Serialize};

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
}
