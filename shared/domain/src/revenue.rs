//! Revenue recognition: what an engagement has earned to the end of an accounting period,
//! per contract line, and the journals that book the difference in the ERP.
//!
//! Earned to date (cumulative, as of the period's last day), by the line's method — data on
//! the service offering (`revenue_method`), else the billing model's default:
//! - `as_delivered` (T&M default): approved billable hours × rate of work done by then, up to
//!   the line's not-to-exceed value (what can never be billed is never revenue);
//! - `on_milestone` (milestone default): the scheduled amount of each milestone completed by then;
//! - `ratable` (fixed-fee default): the line value × days of delivery elapsed / days of
//!   delivery, rounded half away from zero at the minor unit — never above the value, exactly
//!   the value from the last day of delivery;
//! - `as_billed` (fixed fee, by choice): the installments whose bill date has come;
//! - expenses on any line: what invoices posted by then billed for them.
//!
//! A run for a period books `earned to date − recognised so far` per line (cumulative
//! catch-up: a correction of earlier work books its difference in the run's period, never
//! rewrites a closed one). Periods are calendar months; a legal entity's periods up to
//! `closed_through` are closed, and a run for a closed period books into the first open one
//! (the journal keeps both).

use std::collections::BTreeMap;

use chrono::{Datelike, NaiveDate};
use serde::{Deserialize, Serialize};

use crate::delivery::{EntryKind, EntryStatus, WipEntry};
use crate::ids::EngagementId;
use crate::invoicing::Ledger;
use crate::model::{BillingItem, BillingModel, BillingSchedule, Contract};
use crate::money::{Money, MoneyError};

/// How a contract line earns revenue (reference data on the service offering).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RevenueMethod {
    /// Approved billable delivery × rate (T&M).
    AsDelivered,
    /// Milestone amounts on completion.
    OnMilestone,
    /// Straight-line over the delivery period (fixed fee).
    Ratable,
    /// Installments as their bill dates come (fixed fee).
    AsBilled,
}

impl RevenueMethod {
    /// Stable name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::AsDelivered => "as_delivered",
            Self::OnMilestone => "on_milestone",
            Self::Ratable => "ratable",
            Self::AsBilled => "as_billed",
        }
    }

    /// The default for a billing model.
    pub fn default_for(model: BillingModel) -> Self {
        match model {
            BillingModel::TimeAndMaterials => Self::AsDelivered,
            BillingModel::Milestone => Self::OnMilestone,
            BillingModel::FixedFee => Self::Ratable,
        }
    }

    /// True when a line of `model` may use this method (else the default applies).
    pub fn fits(self, model: BillingModel) -> bool {
        matches!(
            (model, self),
            (BillingModel::TimeAndMaterials, Self::AsDelivered)
                | (BillingModel::Milestone, Self::OnMilestone)
                | (BillingModel::FixedFee, Self::Ratable | Self::AsBilled | Self::OnMilestone)
        )
    }
}

/// A calendar month, `YYYY-MM` on the wire.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Period(NaiveDate);

impl Period {
    /// The period containing `day`.
    pub fn of(day: NaiveDate) -> Self {
        Self(day.with_day(1).unwrap_or(day))
    }

    /// Parses `YYYY-MM`.
    pub fn parse(text: &str) -> Option<Self> {
        NaiveDate::parse_from_str(&format!("{text}-01"), "%Y-%m-%d").ok().filter(|_| text.len() == 7).map(Self)
    }

    /// First day.
    pub fn first_day(self) -> NaiveDate {
        self.0
    }

    /// Last day.
    pub fn last_day(self) -> NaiveDate {
        self.next().0.pred_opt().unwrap_or(self.0)
    }

    /// The following period.
    pub fn next(self) -> Self {
        let (y, m) = if self.0.month() == 12 { (self.0.year() + 1, 1) } else { (self.0.year(), self.0.month() + 1) };
        Self(NaiveDate::from_ymd_opt(y, m, 1).unwrap_or(self.0))
    }

    /// The preceding period.
    pub fn previous(self) -> Self {
        Self::of(self.0.pred_opt().unwrap_or(self.0))
    }
}

impl std::fmt::Display for Period {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:04}-{:02}", self.0.year(), self.0.month())
    }
}

impl Serialize for Period {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Period {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = String::deserialize(d)?;
        Self::parse(&text).ok_or_else(|| serde::de::Error::custom(format!("`{text}` is not a period (YYYY-MM)")))
    }
}

/// The period a run for `requested` books into: itself, or the first open one after
/// `closed_through`.
pub fn booking_period(requested: Period, closed_through: Option<Period>) -> Period {
    match closed_through {
        Some(closed) if requested <= closed => closed.next(),
        _ => requested,
    }
}

/// What a revenue key earns from: a contract line's own revenue, or the expenses charged on it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RevenueKind {
    /// Delivered time (T&M).
    Time,
    /// Completed milestones.
    Milestone,
    /// Fixed fee.
    FixedFee,
    /// Billed expenses.
    Expenses,
}

impl RevenueKind {
    /// Stable name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Time => "time",
            Self::Milestone => "milestone",
            Self::FixedFee => "fixed_fee",
            Self::Expenses => "expenses",
        }
    }
}

/// One line of a revenue journal.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct JournalLine {
    /// Contract line.
    pub line_id: String,
    /// What it earned from.
    pub kind: RevenueKind,
    /// How.
    pub method: RevenueMethod,
    /// Booked by this journal (negative: a reversal of earlier revenue).
    pub amount: Money,
    /// Earned to the period's end after this journal.
    pub to_date: Money,
}

/// Where a journal stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum JournalStatus {
    /// Claimed (durable before the ERP call); being posted.
    Pending,
    /// Posted in the ERP.
    Posted,
    /// Refused by the ERP (an exception says why; the next run books the difference again).
    Refused,
}

impl JournalStatus {
    /// Stable name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Pending => "pending",
            Self::Posted => "posted",
            Self::Refused => "refused",
        }
    }
}

/// A revenue journal of one engagement for one period.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RevenueJournal {
    /// `REV-<engagement>-<requested period>-<n>` (the ERP's external id).
    pub journal_id: String,
    /// Engagement.
    pub engagement_id: EngagementId,
    /// Legal entity whose books it goes to.
    pub legal_entity_id: String,
    /// The period the run was for.
    pub requested_period: Period,
    /// The period it is booked in (the first open one).
    pub period: Period,
    /// Lines with a change.
    pub lines: Vec<JournalLine>,
    /// Sum of the lines.
    pub total: Money,
    /// Status.
    pub status: JournalStatus,
    /// The ERP's journal id once posted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub erp_journal_id: Option<String>,
}

/// Revenue recognised for an engagement: cumulative per line, by booked period, journals.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RevenueLedger {
    /// Engagement.
    pub engagement_id: EngagementId,
    /// Recognised so far per (line, kind), as posted.
    #[serde(default)]
    pub recognised: BTreeMap<String, Money>,
    /// Revenue per booked period (`YYYY-MM` → total).
    #[serde(default)]
    pub by_period: BTreeMap<String, Money>,
    /// The last period a run covered.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_period: Option<Period>,
    /// Journals, oldest first.
    #[serde(default)]
    pub journals: Vec<RevenueJournal>,
}

impl RevenueLedger {
    /// An empty ledger.
    pub fn new(engagement_id: EngagementId) -> Self {
        Self { engagement_id, recognised: BTreeMap::new(), by_period: BTreeMap::new(), last_period: None, journals: Vec::new() }
    }

    /// The journal being posted, if any.
    pub fn pending(&self) -> Option<&RevenueJournal> {
        self.journals.iter().find(|j| j.status == JournalStatus::Pending)
    }

    /// Marks journal `id` posted: its lines count as recognised.
    pub fn posted(&mut self, id: &str, erp_id: &str) -> Result<(), MoneyError> {
        let Some(j) = self.journals.iter_mut().find(|j| j.journal_id == id) else { return Ok(()) };
        if j.status == JournalStatus::Posted {
            return Ok(());
        }
        j.status = JournalStatus::Posted;
        j.erp_journal_id = Some(erp_id.to_owned());
        for l in &j.lines {
            let k = key(&l.line_id, l.kind);
            let now = self.recognised.get(&k).copied().unwrap_or(Money::zero(l.amount.currency)).checked_add(l.amount)?;
            self.recognised.insert(k, now);
        }
        let p = j.period.to_string();
        let before = self.by_period.get(&p).copied().unwrap_or(Money::zero(j.total.currency));
        self.by_period.insert(p, before.checked_add(j.total)?);
        Ok(())
    }
}

/// The key of a (line, kind) in [`RevenueLedger::recognised`].
pub fn key(line_id: &str, kind: RevenueKind) -> String {
    match kind {
        RevenueKind::Expenses => format!("{line_id}/expenses"),
        _ => line_id.to_owned(),
    }
}

/// What the engagement has earned to `end`, per (line, kind, method) — see the module docs.
/// `posted_by(invoice_id)` tells whether an invoice was posted on or before `end`.
pub fn earned_to(
    contract: &Contract,
    schedule: &BillingSchedule,
    entries: &[&WipEntry],
    ledger: &Ledger,
    method_of: impl Fn(&crate::model::ContractLine) -> RevenueMethod,
    posted_by: impl Fn(&str) -> bool,
    end: NaiveDate,
) -> Result<Vec<(String, RevenueKind, RevenueMethod, Money)>, MoneyError> {
    let mut out = Vec::new();
    for line in &contract.lines {
        let zero = Money::zero(line.value.currency);
        let method = method_of(line);
        let (kind, earned) = match method {
            RevenueMethod::AsDelivered => {
                let mut sum = zero;
                for e in entries.iter().filter(|e| {
                    e.kind == EntryKind::Time
                        && e.status == EntryStatus::Approved
                        && e.billable
                        && e.line_id == line.line_id
                        && e.date <= end
                }) {
                    sum = sum.checked_add(e.amount)?;
                }
                let capped = if line.value.is_positive() && sum.amount > line.value.amount { line.value } else { sum };
                (RevenueKind::Time, capped)
            }
            RevenueMethod::OnMilestone => {
                let mut sum = zero;
                for item in &schedule.items {
                    if let BillingItem::Milestone { line_id, milestone_id, amount, .. } = item
                        && line_id == &line.line_id
                        && ledger.milestones.get(milestone_id).is_some_and(|m| m.completed_on <= end)
                    {
                        sum = sum.checked_add(*amount)?;
                    }
                }
                (if line.billing_model == BillingModel::Milestone { RevenueKind::Milestone } else { RevenueKind::FixedFee }, sum)
            }
            RevenueMethod::AsBilled => {
                let mut sum = zero;
                for item in &schedule.items {
                    if let BillingItem::Installment { line_id, bill_date, amount, .. } = item
                        && line_id == &line.line_id
                        && *bill_date <= end
                    {
                        sum = sum.checked_add(*amount)?;
                    }
                }
                (RevenueKind::FixedFee, sum)
            }
            RevenueMethod::Ratable => (RevenueKind::FixedFee, ratable(line.value, contract.start_date, contract.end_date, end)),
        };
        out.push((line.line_id.clone(), kind, method, earned));
    }
    // Expenses, on the line the last posted invoice billed each on (an expense moved to
    // another line leaves the first with nothing: the caller books the difference back).
    let mut expenses: BTreeMap<&str, Money> = BTreeMap::new();
    for e in entries.iter().filter(|e| e.kind == EntryKind::Expense) {
        if let Some(b) = e.billed.iter().rev().find(|b| posted_by(&b.invoice_id)) {
            let sum = expenses.get(b.line_id.as_str()).copied().unwrap_or(Money::zero(b.amount.currency));
            expenses.insert(b.line_id.as_str(), sum.checked_add(b.amount)?);
        }
    }
    for (line_id, billed) in expenses {
        out.push((line_id.to_owned(), RevenueKind::Expenses, RevenueMethod::AsBilled, billed));
    }
    Ok(out)
}

/// `value × elapsed / total` days of delivery through `end` (both ends inclusive), rounded
/// half away from zero at the minor unit; the whole value from the last day on.
pub fn ratable(value: Money, start: NaiveDate, finish: NaiveDate, end: NaiveDate) -> Money {
    let total = (finish - start).num_days() + 1;
    let elapsed = ((end - start).num_days() + 1).clamp(0, total.max(0));
    if total <= 0 || elapsed >= total {
        return if end >= start { value } else { Money::zero(value.currency) };
    }
    let exact = value.amount * rust_decimal::Decimal::from(elapsed) / rust_decimal::Decimal::from(total);
    Money::new(exact, value.currency).rounded()
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use rust_decimal_macros::dec;

    fn d(s: &str) -> NaiveDate {
        NaiveDate::parse_from_str(s, "%Y-%m-%d").unwrap()
    }

    #[test]
    fn when_a_period_is_closed_should_book_into_the_first_open_one() {
        let p = |s: &str| Period::parse(s).unwrap();
        assert_eq!(booking_period(p("2027-01"), Some(p("2027-02"))), p("2027-03"));
        assert_eq!(booking_period(p("2027-03"), Some(p("2027-02"))), p("2027-03"));
        assert_eq!(booking_period(p("2027-12"), None), p("2027-12"));
        assert_eq!(p("2027-12").next(), p("2028-01"));
        assert_eq!(p("2027-01").previous(), p("2026-12"));
        assert_eq!(p("2027-02").last_day(), d("2027-02-28"));
        assert!(Period::parse("2027-13").is_none() && Period::parse("2027-1").is_none());
    }

    #[test]
    fn when_a_fixed_fee_is_ratable_should_earn_by_days_and_never_exceed_its_value() {
        let v = Money::new(dec!(100000.00), crate::money::Currency::parse("EUR").unwrap());
        // 1 Jan – 30 Apr 2027 is 120 days; through 31 Jan, 31 of them: 25833.333… → 25833.33.
        assert_eq!(ratable(v, d("2027-01-01"), d("2027-04-30"), d("2027-01-31")).amount, dec!(25833.33));
        assert_eq!(ratable(v, d("2027-01-01"), d("2027-04-30"), d("2027-04-30")), v);
        assert_eq!(ratable(v, d("2027-01-01"), d("2027-04-30"), d("2027-09-30")), v);
        assert!(ratable(v, d("2027-01-01"), d("2027-04-30"), d("2026-12-31")).amount.is_zero());
    }
}
