//! Billing-schedule derivation from contract lines:
//! - **milestone** lines: the line value is allocated over the template phases by their
//!   weights (exact: remainder on the last milestone); each milestone is due when its phase
//!   ends (`start + round_half_up(duration × ends_at_fraction)` days);
//! - **fixed fee** lines: `installments` equal parts (remainder on the last), billed in
//!   advance on the start date and every `frequency` after it;
//! - **T&M** lines: approved time billed monthly in arrears (first run on the last day of
//!   the start month) at the rate card rates resolved at contract time, capped at the line
//!   value (not-to-exceed).

use chrono::{Datelike, Days, Months, NaiveDate};
use rust_decimal::prelude::ToPrimitive;
use rust_decimal::{Decimal, RoundingStrategy};

use crate::model::{BillingItem, BillingModel, BillingSchedule, Contract, Frequency, Milestone, RoleRate};
use crate::money::{Money, MoneyError, sum};
use crate::reference::ProjectTemplate;

/// Why a schedule could not be derived (reference data changed under a stored contract).
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum BillingError {
    /// Money arithmetic failed.
    #[error(transparent)]
    Money(#[from] MoneyError),
    /// Date arithmetic overflowed.
    #[error("date out of range deriving {0}")]
    Date(String),
    /// A fixed-fee line lacks installments or frequency.
    #[error("line {0} is fixed fee but has no installment plan")]
    NoInstallmentPlan(String),
    /// A schedule invariant does not hold (fixed items must sum to the fixed contract value).
    #[error("billing invariant violated: {0}")]
    Invariant(String),
}

/// The due date of a phase ending at `fraction` of the project.
fn phase_end(start: NaiveDate, end: NaiveDate, fraction: Decimal) -> Result<NaiveDate, BillingError> {
    let days = (end - start).num_days();
    let offset = (Decimal::from(days) * fraction)
        .round_dp_with_strategy(0, RoundingStrategy::MidpointAwayFromZero)
        .to_u64()
        .ok_or_else(|| BillingError::Date("milestone date".into()))?;
    start.checked_add_days(Days::new(offset)).ok_or_else(|| BillingError::Date("milestone date".into()))
}

/// Milestones for every milestone-billed line of `contract`, from `template`'s phases.
pub fn derive_milestones(contract: &Contract, template: &ProjectTemplate) -> Result<Vec<Milestone>, BillingError> {
    let weights: Vec<Decimal> = template.phases.iter().map(|p| p.milestone_weight_pct).collect();
    let mut out = Vec::new();
    for line in contract.lines.iter().filter(|l| l.billing_model == BillingModel::Milestone) {
        let parts = line.value.allocate(&weights)?;
        for (phase, amount) in template.phases.iter().zip(parts) {
            out.push(Milestone {
                milestone_id: format!("{}-{}", line.line_id, phase.code),
                line_id: line.line_id.clone(),
                phase_code: phase.code.clone(),
                name: format!("{} — {}", phase.name, line.description),
                due_date: phase_end(contract.start_date, contract.end_date, phase.ends_at_fraction)?,
                amount,
            });
        }
    }
    Ok(out)
}

fn last_day_of_month(d: NaiveDate) -> Option<NaiveDate> {
    let first = NaiveDate::from_ymd_opt(d.year(), d.month(), 1)?;
    first.checked_add_months(Months::new(1))?.pred_opt()
}

/// Derives the billing schedule for `contract` (see module docs for the rules).
pub fn derive_schedule(contract: &Contract, milestones: &[Milestone]) -> Result<BillingSchedule, BillingError> {
    let cur = contract.currency;
    let mut items = Vec::new();
    for line in &contract.lines {
        match line.billing_model {
            BillingModel::Milestone => {
                for m in milestones.iter().filter(|m| m.line_id == line.line_id) {
                    items.push(BillingItem::Milestone {
                        item_id: format!("{}-MS-{}", line.line_id, m.phase_code),
                        line_id: line.line_id.clone(),
                        milestone_id: m.milestone_id.clone(),
                        planned_date: m.due_date,
                        amount: m.amount,
                    });
                }
            }
            BillingModel::FixedFee => {
                let (Some(n), Some(freq)) = (line.installments, line.frequency) else {
                    return Err(BillingError::NoInstallmentPlan(line.line_id.clone()));
                };
                for (k, amount) in line.value.split_even(n)?.into_iter().enumerate() {
                    let k = k as u32;
                    let bill_date = contract
                        .start_date
                        .checked_add_months(Months::new(freq.months() * k))
                        .ok_or_else(|| BillingError::Date("installment date".into()))?;
                    items.push(BillingItem::Installment {
                        item_id: format!("{}-INST-{}", line.line_id, k + 1),
                        line_id: line.line_id.clone(),
                        sequence: k + 1,
                        bill_date,
                        amount,
                    });
                }
            }
            BillingModel::TimeAndMaterials => {
                items.push(BillingItem::TimeAndMaterials {
                    item_id: format!("{}-TM", line.line_id),
                    line_id: line.line_id.clone(),
                    rates: line.roles.iter().map(|r| RoleRate { role: r.role.clone(), hourly_rate: r.hourly_rate }).collect(),
                    not_to_exceed: line.value,
                    frequency: Frequency::Monthly,
                    first_bill_date: last_day_of_month(contract.start_date).ok_or_else(|| BillingError::Date("first T&M run".into()))?,
                });
            }
        }
    }
    items.sort_by_key(|i| match i {
        BillingItem::Milestone { planned_date, .. } => *planned_date,
        BillingItem::Installment { bill_date, .. } => *bill_date,
        BillingItem::TimeAndMaterials { first_bill_date, .. } => *first_bill_date,
    });
    let fixed_total = sum(
        cur,
        items.iter().filter_map(|i| match i {
            BillingItem::Milestone { amount, .. } | BillingItem::Installment { amount, .. } => Some(*amount),
            BillingItem::TimeAndMaterials { .. } => None,
        }),
    )?;
    let tm_cap = sum(
        cur,
        items.iter().filter_map(|i| match i {
            BillingItem::TimeAndMaterials { not_to_exceed, .. } => Some(*not_to_exceed),
            _ => None,
        }),
    )?;
    Ok(BillingSchedule {
        schedule_id: format!("BS-{}", contract.engagement_id),
        engagement_id: contract.engagement_id.clone(),
        currency: cur,
        items,
        fixed_total,
        time_and_materials_cap: tm_cap,
    })
}

/// The contract's fixed-value total (milestone + fixed-fee lines) — what the schedule's
/// fixed items must add up to.
pub fn fixed_contract_value(contract: &Contract) -> Result<Money, MoneyError> {
    sum(contract.currency, contract.lines.iter().filter(|l| l.billing_model != BillingModel::TimeAndMaterials).map(|l| l.value))
}
