//! Delivery: approved time and expenses turned into unbilled WIP, validated entry by entry.
//!
//! Storage layout (each an aggregate of its own, see [`crate::aggregate`]):
//! - [`WipShard`]: the entries of an engagement, spread over [`WIP_SHARDS`] shards by a hash
//!   of the entry id (an entry never moves, whatever its corrections change), each entry with
//!   its latest accepted version and what has been invoiced for it;
//! - [`ResourceDay`]: the hours one resource booked on one day across every engagement —
//!   the ≤ 24 h a day check is exact under concurrency (both entries write the same item);
//! - [`Assignments`]: who is staffed on the engagement, in which role, for which dates.
//!
//! Money rule: an entry's billable amount is computed once, at acceptance:
//! `hours × hourly rate` (time) or `cost × (1 + markup)` capped per item (expenses),
//! rounded half away from zero to the currency's minor unit. Invoice lines sum these
//! amounts, so every cent on an invoice traces to entries.

use std::collections::BTreeMap;

use chrono::{DateTime, NaiveDate, Utc};
use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};

use crate::events::Issue;
use crate::ids::EngagementId;
use crate::money::Money;

/// Entries of an engagement are spread over this many shards (items).
pub const WIP_SHARDS: u16 = 32;
/// A resource can book at most this many hours on one day, across engagements.
pub const MAX_HOURS_PER_DAY: u32 = 24;
/// Rejections kept per shard (the newest; the event and the audit keep every one).
pub const MAX_REJECTIONS_PER_SHARD: usize = 200;

/// The shard an entry lives in (FNV-1a of its id).
pub fn shard_of(entry_id: &str) -> u16 {
    let mut h: u32 = 0x811c_9dc5;
    for b in entry_id.bytes() {
        h ^= u32::from(b);
        h = h.wrapping_mul(0x0100_0193);
    }
    (h % u32::from(WIP_SHARDS)) as u16
}

/// Time or expense.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EntryKind {
    /// Approved hours.
    Time,
    /// Approved expense.
    Expense,
}

/// An entry's state in the PSA.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum EntryStatus {
    /// Approved (or re-approved after a correction).
    #[default]
    Approved,
    /// Withdrawn by the PSA: nothing of it may stay billed.
    Withdrawn,
}

/// What an invoice billed for an entry (cumulative: the entry's billed amount after it).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Billed {
    /// Invoice (draft) id.
    pub invoice_id: String,
    /// Version of the entry it billed.
    pub version: u32,
    /// Billed amount for the entry after this invoice.
    pub amount: Money,
    /// The contract line it is billed on after this invoice.
    pub line_id: String,
}

/// One accepted entry in WIP.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WipEntry {
    /// Time entry or expense id in the source system.
    pub entry_id: String,
    /// Time or expense.
    pub kind: EntryKind,
    /// Latest accepted version.
    pub version: u32,
    /// Approved or withdrawn.
    pub status: EntryStatus,
    /// Resource.
    pub resource_id: String,
    /// Role (time).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub role: Option<String>,
    /// Expense category (expenses).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub category: Option<String>,
    /// Contract line charged.
    pub line_id: String,
    /// Day worked / incurred.
    pub date: NaiveDate,
    /// Hours (time) or 1 (expense).
    #[serde(with = "rust_decimal::serde::str")]
    pub quantity: Decimal,
    /// Hourly rate (time) or marked-up, capped cost (expense).
    pub unit_price: Money,
    /// Billable amount of this version (0 when not billable or withdrawn).
    pub amount: Money,
    /// Billable under the contract.
    pub billable: bool,
    /// Who approved this version.
    pub approved_by: String,
    /// Everyone who approved a version since the entry was last billed: the authors of the
    /// adjustment a change to billed work causes (none of them may approve that invoice).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub authors: Vec<String>,
    /// Invoices that billed it, oldest first.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub billed: Vec<Billed>,
}

impl WipEntry {
    /// The last billing of it, if any.
    pub fn last_billed(&self) -> Option<&Billed> {
        self.billed.last()
    }

    /// True when the version and line billed last are the current ones (what is left
    /// unbilled is then a remainder a cap held back, not a correction).
    pub fn billed_as_is(&self) -> bool {
        self.last_billed().is_some_and(|b| b.version == self.version && b.line_id == self.line_id)
    }

    /// What has been billed for it so far.
    pub fn billed_amount(&self) -> Money {
        self.billed.last().map_or(Money::zero(self.amount.currency), |b| b.amount)
    }

    /// What is still to bill (negative: a credit is owed).
    pub fn unbilled(&self) -> Money {
        Money::new(self.amount.amount - self.billed_amount().amount, self.amount.currency)
    }

    /// True once an invoice billed it (a later change becomes an adjustment).
    pub fn was_billed(&self) -> bool {
        !self.billed.is_empty()
    }
}

/// An entry refused, with every reason.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RejectedEntry {
    /// Entry id.
    pub entry_id: String,
    /// Version refused.
    pub version: u32,
    /// Every reason.
    pub reasons: Vec<Issue>,
    /// When.
    pub at: DateTime<Utc>,
}

/// One shard of an engagement's WIP.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WipShard {
    /// Engagement.
    pub engagement_id: EngagementId,
    /// Shard number.
    pub shard: u16,
    /// Entries by id.
    #[serde(default)]
    pub entries: BTreeMap<String, WipEntry>,
    /// The latest rejections (bounded; see [`MAX_REJECTIONS_PER_SHARD`]).
    #[serde(default)]
    pub rejected: Vec<RejectedEntry>,
}

impl WipShard {
    /// An empty shard.
    pub fn new(engagement_id: EngagementId, shard: u16) -> Self {
        Self { engagement_id, shard, entries: BTreeMap::new(), rejected: Vec::new() }
    }

    /// Records a rejection, keeping the newest [`MAX_REJECTIONS_PER_SHARD`].
    pub fn reject(&mut self, r: RejectedEntry) {
        self.rejected.retain(|x| !(x.entry_id == r.entry_id && x.version == r.version));
        self.rejected.push(r);
        let excess = self.rejected.len().saturating_sub(MAX_REJECTIONS_PER_SHARD);
        self.rejected.drain(..excess);
    }
}

/// The hours one resource booked on one day, across engagements.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ResourceDay {
    /// Resource.
    pub resource_id: String,
    /// Day.
    pub date: NaiveDate,
    /// Hours by entry id (with the engagement, for operators).
    #[serde(default)]
    pub hours: BTreeMap<String, DayHours>,
}

/// One entry's hours on a day.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DayHours {
    /// Engagement.
    pub engagement_id: EngagementId,
    /// Hours.
    #[serde(with = "rust_decimal::serde::str")]
    pub hours: Decimal,
}

impl ResourceDay {
    /// An empty day.
    pub fn new(resource_id: &str, date: NaiveDate) -> Self {
        Self { resource_id: resource_id.to_owned(), date, hours: BTreeMap::new() }
    }

    /// Hours booked by entries other than `entry_id`.
    pub fn others(&self, entry_id: &str) -> Decimal {
        self.hours.iter().filter(|(id, _)| id.as_str() != entry_id).map(|(_, h)| h.hours).sum()
    }
}

/// A staffing assignment as the PSA reported it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Assignment {
    /// Assignment id in the PSA.
    pub assignment_id: String,
    /// Resource.
    pub resource_id: String,
    /// Role.
    pub role: String,
    /// First day.
    pub start_date: NaiveDate,
    /// Last day.
    pub end_date: NaiveDate,
    /// Cancelled in the PSA.
    #[serde(default)]
    pub cancelled: bool,
    /// Version (the PSA's revision counter).
    pub version: u32,
}

/// Who is staffed on an engagement.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Assignments {
    /// Engagement.
    pub engagement_id: EngagementId,
    /// Assignments by id.
    #[serde(default)]
    pub by_id: BTreeMap<String, Assignment>,
}

impl Assignments {
    /// No assignment yet.
    pub fn new(engagement_id: EngagementId) -> Self {
        Self { engagement_id, by_id: BTreeMap::new() }
    }

    /// A live assignment of `resource` in `role` covering `on`.
    pub fn covering(&self, resource: &str, role: &str, on: NaiveDate) -> Option<&Assignment> {
        self.by_id.values().find(|a| !a.cancelled && a.resource_id == resource && a.role == role && a.start_date <= on && on <= a.end_date)
    }

    /// Any live assignment of `resource` covering `on` (expenses carry no role).
    pub fn any_covering(&self, resource: &str, on: NaiveDate) -> Option<&Assignment> {
        self.by_id.values().find(|a| !a.cancelled && a.resource_id == resource && a.start_date <= on && on <= a.end_date)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn when_ids_are_sharded_should_spread_and_stay_stable() {
        let shards: std::collections::BTreeSet<u16> = (0..500).map(|i| shard_of(&format!("TE-{i}"))).collect();
        assert_eq!(shards.len(), WIP_SHARDS as usize, "500 ids reach every shard");
        assert_eq!(shard_of("TE-2027-000981"), shard_of("TE-2027-000981"));
    }
}
