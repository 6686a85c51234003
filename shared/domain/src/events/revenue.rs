//! Revenue recognition events.

use chrono::NaiveDate;
use serde::{Deserialize, Serialize};

use crate::ids::EngagementId;
use crate::money::{Currency, Money};
use crate::revenue::{JournalLine, Period};

/// `RevenueRunRequested` payload: recognise revenue for one accounting period, for one
/// engagement or (fanned out) every active one.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RevenueRunRequested {
    /// Run id (one per schedule tick or operator request).
    pub run_id: String,
    /// The period (`YYYY-MM`); when absent, the month before `as_of`'s (a run on the 1st
    /// closes the month that just ended).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub period: Option<Period>,
    /// When the run was asked for (a date, or the scheduler's RFC 3339 time).
    #[serde(deserialize_with = "super::finance::date_or_timestamp")]
    pub as_of: NaiveDate,
    /// One engagement, or every active one when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub engagement_id: Option<EngagementId>,
    /// Fan-out paging: engagements after this id.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub after: Option<String>,
    /// Who asked (`scheduler` or an operator's user id).
    pub requested_by: String,
}

impl RevenueRunRequested {
    /// The period the run is for.
    pub fn period(&self) -> Period {
        self.period.unwrap_or_else(|| Period::of(self.as_of).previous())
    }
}

/// `RevenueRecognized` payload: a revenue journal posted in the ERP.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RevenueRecognized {
    /// Engagement.
    pub engagement_id: EngagementId,
    /// Journal (the ERP's external id).
    pub journal_id: String,
    /// The ERP's journal.
    pub erp_journal_id: String,
    /// Legal entity.
    pub legal_entity_id: String,
    /// The period the run was for.
    pub requested_period: Period,
    /// The period it was booked in (later when the requested one was closed).
    pub period: Period,
    /// Currency.
    pub currency: Currency,
    /// Revenue per contract line (negative: earlier revenue reversed).
    pub lines: Vec<JournalLine>,
    /// Total booked.
    pub total: Money,
}
