//! Delivery intake: staffing, approved time, approved expenses and completed milestones from
//! the PSA become billable WIP — each entry validated on its own, every reason reported.
//!
//! | event | reads | writes |
//! |---|---|---|
//! | `ResourceAssigned` | assignments | assignments |
//! | `TimeApproved` | assignments, the entry's WIP shard, the resource's day (and the day it leaves) | shard, day(s) |
//! | `ExpenseApproved` | assignments, the entry's WIP shard | shard |
//! | `MilestoneCompleted` | ledger | ledger |
//!
//! Rules:
//! - only an **active** engagement takes delivery (one still in billing setup is retried;
//!   any other status refuses the entry);
//! - an entry is checked against the PSA project, the contract line, the staffing (resource
//!   × role × date for time, resource × date for expenses), the project dates, the hours a
//!   resource can book in a day (> 0, ≤ 24 across every engagement), the rate card (role ×
//!   region × work date) and the currency — every failing rule is reported;
//! - a refused entry is stored on its shard with its reasons and announced
//!   (`DeliveryRejected`); the PSA fixes it and sends a newer version;
//! - versions order everything: the same or an older version is a no-op, a newer one
//!   replaces the entry (its billable amount changes WIP; once invoiced, the difference is
//!   an adjustment line on the next invoice), a withdrawal zeroes it;
//! - a correction must name its approver (the author of the adjustment it causes).
//!
//! Amounts are computed here, once: time `round(hours × rate)`, expenses
//! `min(round(cost × (1 + markup)), cap)` — rounded half away from zero to the minor unit.

use chrono::NaiveDate;
use rust_decimal::Decimal;

use crate::aggregate::{AggregateBody, AggregateKey, Load};
use crate::delivery::{
    Assignment, Assignments, DayHours, EntryKind, EntryStatus, MAX_HOURS_PER_DAY, RejectedEntry, ResourceDay, WipEntry, WipShard, shard_of,
};
use crate::engagement::{Action, Engagement, EngagementStatus};
use crate::events::{
    BusinessEvent, DeliveryRejected, Envelope, EventType, ExpenseApproved, Issue, MilestoneCompleted, ResourceAssigned, TimeApproved,
};
use crate::invoicing::{Ledger, MilestoneState};
use crate::model::{BillingModel, Contract, ContractLine};
use crate::money::Money;
use crate::reference::ReferenceData;

use super::{Decision, Input, Next, StepContext, StepError, WorkflowStep, step_meta};

/// The delivery-intake step.
pub struct DeliveryIntake;

impl WorkflowStep for DeliveryIntake {
    step_meta!(DeliveryIntake, [ResourceAssigned, TimeApproved, ExpenseApproved, MilestoneCompleted]);

    fn loads(&self, event: &BusinessEvent) -> Vec<Load> {
        let eng = event.engagement_id();
        match event {
            BusinessEvent::ResourceAssigned(_) => vec![Load::Key(AggregateKey::assignments(&eng))],
            BusinessEvent::TimeApproved(e) => {
                let t = &e.payload.time_entry;
                vec![
                    Load::Key(AggregateKey::assignments(&eng)),
                    Load::Key(AggregateKey::wip_shard(&eng, shard_of(&t.time_entry_id))),
                    Load::Key(AggregateKey::resource_day(&t.resource_id, t.work_date)),
                ]
            }
            BusinessEvent::ExpenseApproved(e) => vec![
                Load::Key(AggregateKey::assignments(&eng)),
                Load::Key(AggregateKey::wip_shard(&eng, shard_of(&e.payload.expense.expense_id))),
            ],
            BusinessEvent::MilestoneCompleted(_) => vec![Load::Key(AggregateKey::ledger(&eng))],
            _ => Vec::new(),
        }
    }

    fn decide(&self, input: &Input<'_>, ctx: &StepContext<'_>) -> Result<Next, StepError> {
        let eng_id = input.event.engagement_id();
        let Some(snap) = input.current else {
            return Err(StepError::NotYet(format!("engagement {eng_id} does not exist (yet)")));
        };
        let eng = snap.engagement;
        match input.event {
            BusinessEvent::ResourceAssigned(e) => assignment(eng, &e.payload, input, ctx),
            BusinessEvent::TimeApproved(e) => time(eng, e, input, ctx),
            BusinessEvent::ExpenseApproved(e) => expense(eng, e, input, ctx),
            BusinessEvent::MilestoneCompleted(e) => milestone(eng, &e.payload, input, ctx),
            other => Err(StepError::NotConsumed(self.step(), other.event_type().detail_type())),
        }
    }
}

/// The active engagement's contract, or why delivery cannot land on it.
fn active_contract(eng: &Engagement) -> Result<&Contract, Result<Issue, StepError>> {
    match eng.status {
        EngagementStatus::Active => {
            eng.contract.as_ref().ok_or(Err(StepError::MissingContract(eng.engagement_id.clone(), eng.status.as_str())))
        }
        // Billing setup runs right after provisioning: PSA time can beat it by seconds.
        EngagementStatus::Provisioned | EngagementStatus::Provisioning => {
            Err(Err(StepError::NotYet(format!("engagement {} is {}; delivery waits for active", eng.engagement_id, eng.status.as_str()))))
        }
        other => Err(Ok(Issue::new(
            "engagement_id",
            "engagement_not_active",
            format!("engagement {} is {}, not active: it takes no delivery", eng.engagement_id, other.as_str()),
        ))),
    }
}

/// The contract an entry lands on: an approval needs an active engagement; a withdrawal is
/// taken whatever the engagement's status (nothing of withdrawn work may stay billable).
fn contract_for(eng: &Engagement, status: EntryStatus) -> Result<&Contract, Result<Issue, StepError>> {
    match status {
        EntryStatus::Approved => active_contract(eng),
        EntryStatus::Withdrawn => {
            eng.contract.as_ref().ok_or_else(|| Err(StepError::NotYet(format!("engagement {} has no contract yet", eng.engagement_id))))
        }
    }
}

/// A withdrawal of an approved entry names who withdrew it (it authors the credit).
fn withdrawal_issue(status: EntryStatus, e: &Incoming<'_>) -> Option<Issue> {
    (status == EntryStatus::Withdrawn && e.version > 1 && e.approved_by.is_none_or(str::is_empty)).then(|| {
        Issue::new(
            "approved_by",
            "correction_without_approver",
            format!("v{} withdraws an approved entry: it must name who approved the withdrawal", e.version),
        )
    })
}

fn assignment(eng: &Engagement, a: &ResourceAssigned, input: &Input<'_>, ctx: &StepContext<'_>) -> Result<Next, StepError> {
    let contract = match active_contract(eng) {
        Ok(c) => c,
        Err(Ok(issue)) => return Err(StepError::Rejected(vec![issue])),
        Err(Err(e)) => return Err(e),
    };
    let mut current = input.others.assignments(&eng.engagement_id).cloned().unwrap_or_else(|| Assignments::new(eng.engagement_id.clone()));
    if current.by_id.get(&a.assignment_id).is_some_and(|x| x.version >= a.version) {
        return Ok(Next::Done(Decision::unchanged(
            ctx,
            &eng.engagement_id,
            Action::AssignmentUnchanged,
            format!("assignment {} v{} already recorded", a.assignment_id, a.version),
        )));
    }
    let mut issues = Vec::new();
    if Some(&a.project_id) != eng.psa_project_id.as_ref() {
        issues.push(project_mismatch(&a.project_id, eng));
    }
    if a.start_date > a.end_date {
        issues.push(Issue::new(
            "end_date",
            "dates_reversed",
            format!("the assignment ends ({}) before it starts ({})", a.end_date, a.start_date),
        ));
    } else if !a.cancelled && (a.start_date > contract.end_date || a.end_date < contract.start_date) {
        issues.push(Issue::new(
            "start_date",
            "outside_project",
            format!("{}..{} does not overlap the project {}..{}", a.start_date, a.end_date, contract.start_date, contract.end_date),
        ));
    }
    if !a.cancelled
        && let Some(card) = contract.rate_card_id.as_ref().and_then(|id| input.reference.rate_cards.get(id))
        && !card.entries.iter().any(|r| r.role == a.role && r.region == contract.delivery_region)
    {
        issues.push(Issue::new(
            "role",
            "role_not_on_rate_card",
            format!("role {} has no rate in {} for region {}", a.role, card.id, contract.delivery_region),
        ));
    }
    if !issues.is_empty() {
        return Err(StepError::Rejected(issues));
    }
    current.by_id.insert(
        a.assignment_id.clone(),
        Assignment {
            assignment_id: a.assignment_id.clone(),
            resource_id: a.resource_id.clone(),
            role: a.role.clone(),
            start_date: a.start_date,
            end_date: a.end_date,
            cancelled: a.cancelled,
            version: a.version,
        },
    );
    let summary = format!(
        "{} {} as {} {}..{}{}",
        a.assignment_id,
        a.resource_id,
        a.role,
        a.start_date,
        a.end_date,
        if a.cancelled { " (released)" } else { "" }
    );
    Ok(Next::Done(
        Decision::unchanged(ctx, &eng.engagement_id, Action::AssignmentRecorded, summary).with(AggregateBody::Assignments(current)),
    ))
}

fn project_mismatch(project_id: &str, eng: &Engagement) -> Issue {
    Issue::new(
        "project_id",
        "project_mismatch",
        format!("project {project_id} is not the engagement's PSA project ({})", eng.psa_project_id.as_deref().unwrap_or("none")),
    )
}

/// What an incoming entry is, whichever its kind.
struct Incoming<'a> {
    entry_id: &'a str,
    version: u32,
    approved_by: Option<&'a str>,
}

/// The entry's shard as loaded (or a new one).
fn shard_for(eng: &Engagement, entry_id: &str, input: &Input<'_>) -> WipShard {
    let shard = shard_of(entry_id);
    input.others.wip_shards().get(&shard).map_or_else(|| WipShard::new(eng.engagement_id.clone(), shard), |s| (*s).clone())
}

/// Version checks shared by time and expenses: `Some(done)` when nothing is to be done.
///
/// A refused version sent again is decided again: what refused it (a missing assignment,
/// another entry's hours that day) may have changed since.
fn unchanged_version(shard: &WipShard, e: &Incoming<'_>, eng: &Engagement, ctx: &StepContext<'_>) -> Option<Next> {
    let stored = shard.entries.get(e.entry_id).map(|x| x.version);
    stored.is_some_and(|v| v >= e.version).then(|| {
        Next::Done(Decision::unchanged(
            ctx,
            &eng.engagement_id,
            Action::EntryUnchanged,
            format!("{} v{} is not newer than what was processed (v{})", e.entry_id, e.version, stored.unwrap_or(e.version)),
        ))
    })
}

/// Checks shared by time and expenses on the contract line and the approver.
fn line_checks<'c>(contract: &'c Contract, line_id: &str, e: &Incoming<'_>, issues: &mut Vec<Issue>) -> Option<&'c ContractLine> {
    let line = contract.lines.iter().find(|l| l.line_id == line_id);
    if line.is_none() {
        issues.push(Issue::new("line_id", "unknown_line", format!("contract {} has no line {line_id}", contract.contract_id)));
    }
    if e.version > 1 && e.approved_by.is_none_or(str::is_empty) {
        issues.push(Issue::new(
            "approved_by",
            "correction_without_approver",
            format!("v{} corrects an approved entry: it must name its approver (the author of the adjustment)", e.version),
        ));
    }
    line
}

fn date_checks(contract: &Contract, field: &str, on: NaiveDate, issues: &mut Vec<Issue>) {
    if on < contract.start_date || on > contract.end_date {
        issues.push(Issue::new(
            field,
            "outside_project",
            format!("{on} is outside the project {}..{}", contract.start_date, contract.end_date),
        ));
    }
}

/// Refuses `e`: stored on its shard with every reason, announced with `DeliveryRejected`.
fn refuse(mut shard: WipShard, eng: &Engagement, e: &Incoming<'_>, kind: EntryKind, issues: Vec<Issue>, ctx: &StepContext<'_>) -> Next {
    let codes: Vec<&str> = issues.iter().map(|i| i.code.as_str()).collect();
    let summary = format!("{} v{} refused: {}", e.entry_id, e.version, codes.join(", "));
    shard.reject(RejectedEntry { entry_id: e.entry_id.to_owned(), version: e.version, reasons: issues.clone(), at: ctx.now });
    let event = ctx.emit(
        EventType::DeliveryRejected,
        &eng.engagement_id,
        format!("delivery-rejected:{}:v{}", e.entry_id, e.version),
        &DeliveryRejected {
            engagement_id: eng.engagement_id.clone(),
            entry_id: e.entry_id.to_owned(),
            kind,
            version: e.version,
            reasons: issues,
        },
    );
    let mut d = Decision::unchanged(ctx, &eng.engagement_id, Action::EntryRejected, summary).with(AggregateBody::WipShard(shard));
    d.events.push(event);
    Next::Done(d)
}

/// Stores `entry` on its shard (replacing an older version, keeping what was billed).
fn store_entry(shard: &mut WipShard, mut entry: WipEntry) -> Action {
    let action = match (shard.entries.get(&entry.entry_id), entry.status) {
        (_, EntryStatus::Withdrawn) => Action::EntryWithdrawn,
        (Some(_), _) => Action::EntryCorrected,
        (None, _) => Action::EntryAccepted,
    };
    // Authors: everyone who approved a version since the version billed last.
    let mut authors = match shard.entries.get(&entry.entry_id) {
        Some(old) if old.last_billed().is_none_or(|b| b.version != old.version) => old.authors.clone(),
        _ => Vec::new(),
    };
    if !entry.approved_by.is_empty() && !authors.contains(&entry.approved_by) {
        authors.push(entry.approved_by.clone());
    }
    entry.authors = authors;
    if let Some(old) = shard.entries.get(&entry.entry_id) {
        entry.billed = old.billed.clone();
    }
    // A refusal of an older version is superseded by this one.
    shard.rejected.retain(|r| r.entry_id != entry.entry_id || r.version > entry.version);
    shard.entries.insert(entry.entry_id.clone(), entry);
    action
}

fn time(eng: &Engagement, env: &Envelope<TimeApproved>, input: &Input<'_>, ctx: &StepContext<'_>) -> Result<Next, StepError> {
    let t = &env.payload.time_entry;
    let inc = Incoming { entry_id: &t.time_entry_id, version: t.version, approved_by: t.approved_by.as_deref() };
    let mut shard = shard_for(eng, inc.entry_id, input);
    if let Some(done) = unchanged_version(&shard, &inc, eng, ctx) {
        return Ok(done);
    }
    // The day(s) this entry books: its new day, and the day it leaves when it moved.
    let previous = shard.entries.get(inc.entry_id).cloned();
    let old_day_key = previous
        .as_ref()
        .filter(|p| p.resource_id != t.resource_id || p.date != t.work_date)
        .map(|p| AggregateKey::resource_day(&p.resource_id, p.date));
    if let Some(k) = &old_day_key
        && !input.others.asked(k)
    {
        return Ok(Next::Need(vec![Load::Key(k.clone())]));
    }
    let day_of = |resource: &str, date: NaiveDate| {
        input.others.resource_day(resource, date).cloned().unwrap_or_else(|| ResourceDay::new(resource, date))
    };
    let mut day = day_of(&t.resource_id, t.work_date);
    let mut old_day = previous.as_ref().filter(|_| old_day_key.is_some()).map(|p| day_of(&p.resource_id, p.date));

    let contract = match contract_for(eng, t.status) {
        Ok(c) => c,
        Err(Ok(issue)) => return Ok(refuse(shard, eng, &inc, EntryKind::Time, vec![issue], ctx)),
        Err(Err(e)) => return Err(e),
    };
    if let Some(issue) = withdrawal_issue(t.status, &inc) {
        return Ok(refuse(shard, eng, &inc, EntryKind::Time, vec![issue], ctx));
    }
    let rate_card = contract.rate_card_id.as_ref().and_then(|id| input.reference.rate_cards.get(id));
    let mut issues = Vec::new();
    let mut rate: Option<Money> = None;
    let mut line: Option<&ContractLine> = None;
    if t.status == EntryStatus::Approved {
        if Some(&t.project_id) != eng.psa_project_id.as_ref() {
            issues.push(project_mismatch(&t.project_id, eng));
        }
        line = line_checks(contract, &t.line_id, &inc, &mut issues);
        date_checks(contract, "work_date", t.work_date, &mut issues);
        let staffed = input.others.assignments(&eng.engagement_id).and_then(|a| a.covering(&t.resource_id, &t.role, t.work_date));
        if staffed.is_none() {
            issues.push(Issue::new(
                "resource_id",
                "not_assigned",
                format!("{} is not assigned as {} on {} to this project", t.resource_id, t.role, t.work_date),
            ));
        }
        if t.hours <= Decimal::ZERO {
            issues.push(Issue::new("hours", "hours_not_positive", format!("{} hours: an entry books more than zero", t.hours)));
        } else {
            let booked = day.others(inc.entry_id) + t.hours;
            if booked > Decimal::from(MAX_HOURS_PER_DAY) {
                issues.push(Issue::new(
                    "hours",
                    "over_24_hours_a_day",
                    format!("{} would book {booked} h on {} across its entries (at most {MAX_HOURS_PER_DAY})", t.resource_id, t.work_date),
                ));
            }
        }
        match rate_card {
            None => {
                issues.push(Issue::new("line_id", "no_rate_card", format!("contract {} has no rate card for time", contract.contract_id)))
            }
            Some(card) => match card.rate_for(&t.role, &contract.delivery_region, t.work_date) {
                None => issues.push(Issue::new(
                    "role",
                    "no_rate",
                    format!("{} has no rate for {} in {} on {}", card.id, t.role, contract.delivery_region, t.work_date),
                )),
                Some(_) if card.currency != contract.currency => issues.push(Issue::new(
                    "line_id",
                    "currency_mismatch",
                    format!("rate card {} is in {}, the contract line in {}", card.id, card.currency, contract.currency),
                )),
                Some(r) => rate = Some(Money::new(r.hourly_rate, card.currency)),
            },
        }
        if !issues.is_empty() {
            return Ok(refuse(shard, eng, &inc, EntryKind::Time, issues, ctx));
        }
    }
    let unit = rate.unwrap_or_else(|| previous.as_ref().map_or(Money::zero(contract.currency), |p| p.unit_price));
    let billable =
        t.status == EntryStatus::Approved && t.billable && line.is_some_and(|l| l.billing_model == BillingModel::TimeAndMaterials);
    let amount = if billable { unit.times(t.hours).rounded() } else { Money::zero(contract.currency) };
    let entry = WipEntry {
        entry_id: t.time_entry_id.clone(),
        kind: EntryKind::Time,
        version: t.version,
        status: t.status,
        resource_id: t.resource_id.clone(),
        role: Some(t.role.clone()),
        category: None,
        line_id: t.line_id.clone(),
        date: t.work_date,
        quantity: if t.status == EntryStatus::Withdrawn { Decimal::ZERO } else { t.hours },
        unit_price: unit,
        amount,
        billable,
        approved_by: t.approved_by.clone().unwrap_or_default(),
        authors: Vec::new(),
        billed: Vec::new(),
    };
    // The resource's days: this entry's hours move to the new day (none once withdrawn).
    if let Some(od) = old_day.as_mut() {
        od.hours.remove(inc.entry_id);
    }
    if t.status == EntryStatus::Withdrawn {
        day.hours.remove(inc.entry_id);
    } else {
        day.hours.insert(inc.entry_id.to_owned(), DayHours { engagement_id: eng.engagement_id.clone(), hours: t.hours });
    }
    let summary = format!("{} v{}: {} h {} on {} = {}", inc.entry_id, inc.version, entry.quantity, t.role, t.work_date, entry.amount);
    let action = store_entry(&mut shard, entry);
    let mut d = Decision::unchanged(ctx, &eng.engagement_id, action, summary)
        .with(AggregateBody::WipShard(shard))
        .with(AggregateBody::ResourceDay(day));
    if let Some(od) = old_day {
        d = d.with(AggregateBody::ResourceDay(od));
    }
    Ok(Next::Done(d))
}

fn expense(eng: &Engagement, env: &Envelope<ExpenseApproved>, input: &Input<'_>, ctx: &StepContext<'_>) -> Result<Next, StepError> {
    let x = &env.payload.expense;
    let inc = Incoming { entry_id: &x.expense_id, version: x.version, approved_by: x.approved_by.as_deref() };
    let mut shard = shard_for(eng, inc.entry_id, input);
    if let Some(done) = unchanged_version(&shard, &inc, eng, ctx) {
        return Ok(done);
    }
    let contract = match contract_for(eng, x.status) {
        Ok(c) => c,
        Err(Ok(issue)) => return Ok(refuse(shard, eng, &inc, EntryKind::Expense, vec![issue], ctx)),
        Err(Err(e)) => return Err(e),
    };
    if let Some(issue) = withdrawal_issue(x.status, &inc) {
        return Ok(refuse(shard, eng, &inc, EntryKind::Expense, vec![issue], ctx));
    }
    let previous = shard.entries.get(inc.entry_id).cloned();
    // Without a line, the contract's only T&M line carries the expense.
    let tm_lines: Vec<&ContractLine> = contract.lines.iter().filter(|l| l.billing_model == BillingModel::TimeAndMaterials).collect();
    let line_id = x.line_id.clone().or_else(|| (tm_lines.len() == 1).then(|| tm_lines[0].line_id.clone()));
    let mut issues = Vec::new();
    let mut amount = Money::zero(contract.currency);
    let mut billable = false;
    if x.status == EntryStatus::Approved {
        match &line_id {
            None => issues.push(Issue::new(
                "line_id",
                "line_required",
                format!("contract {} has {} T&M lines: the expense must name its line", contract.contract_id, tm_lines.len()),
            )),
            Some(l) => {
                line_checks(contract, l, &inc, &mut issues);
            }
        }
        date_checks(contract, "incurred_on", x.incurred_on, &mut issues);
        if input.others.assignments(&eng.engagement_id).and_then(|a| a.any_covering(&x.resource_id, x.incurred_on)).is_none() {
            issues.push(Issue::new(
                "resource_id",
                "not_assigned",
                format!("{} is not assigned to this project on {}", x.resource_id, x.incurred_on),
            ));
        }
        if x.amount.currency != contract.currency {
            issues.push(Issue::new(
                "amount.currency",
                "currency_mismatch",
                format!("the expense is in {}, the contract line in {}", x.amount.currency, contract.currency),
            ));
        }
        if !x.amount.is_positive() {
            issues.push(Issue::new("amount", "amount_not_positive", format!("{}: an expense is more than zero", x.amount)));
        }
        if x.billable {
            match expense_rule(input.reference, contract, &x.category) {
                Err(issue) => issues.push(issue),
                Ok((markup_pct, cap)) if x.amount.currency == contract.currency => {
                    let marked = x.amount.times(Decimal::ONE + markup_pct / Decimal::ONE_HUNDRED).rounded();
                    amount = match cap {
                        Some(c) if c.currency == marked.currency && c.amount < marked.amount => c,
                        _ => marked,
                    };
                    billable = true;
                }
                Ok(_) => {}
            }
        }
        if !issues.is_empty() {
            return Ok(refuse(shard, eng, &inc, EntryKind::Expense, issues, ctx));
        }
    }
    let entry = WipEntry {
        entry_id: x.expense_id.clone(),
        kind: EntryKind::Expense,
        version: x.version,
        status: x.status,
        resource_id: x.resource_id.clone(),
        role: None,
        category: Some(x.category.clone()),
        line_id: line_id.or_else(|| previous.as_ref().map(|p| p.line_id.clone())).unwrap_or_default(),
        date: x.incurred_on,
        quantity: Decimal::ONE,
        unit_price: amount,
        amount,
        billable,
        approved_by: x.approved_by.clone().unwrap_or_default(),
        authors: Vec::new(),
        billed: Vec::new(),
    };
    let summary = format!("{} v{}: {} {} on {} bills {}", inc.entry_id, inc.version, x.category, x.amount, x.incurred_on, entry.amount);
    let action = store_entry(&mut shard, entry);
    Ok(Next::Done(Decision::unchanged(ctx, &eng.engagement_id, action, summary).with(AggregateBody::WipShard(shard))))
}

/// The customer's expense policy rule for `category`: markup (percent) and per-item cap.
fn expense_rule(reference: &ReferenceData, contract: &Contract, category: &str) -> Result<(Decimal, Option<Money>), Issue> {
    let policy = reference
        .customers
        .get(&contract.customer.id)
        .and_then(|c| c.expense_policy_id.as_ref())
        .and_then(|id| reference.expense_policies.get(id))
        .ok_or_else(|| {
            Issue::new(
                "billable",
                "no_expense_policy",
                format!("customer {} has no expense policy: no expense is re-billable", contract.customer.id),
            )
        })?;
    match policy.categories.get(category) {
        Some(rule) if rule.billable => Ok((rule.markup_pct, rule.cap_per_item)),
        _ => Err(Issue::new(
            "category",
            "category_not_billable",
            format!("{category} is not re-billable under expense policy {}", policy.id),
        )),
    }
}

fn milestone(eng: &Engagement, m: &MilestoneCompleted, input: &Input<'_>, ctx: &StepContext<'_>) -> Result<Next, StepError> {
    let mut issues = Vec::new();
    match active_contract(eng) {
        Ok(_) => {}
        Err(Ok(issue)) => issues.push(issue),
        Err(Err(e)) => return Err(e),
    }
    if Some(&m.psa_project_id) != eng.psa_project_id.as_ref() {
        issues.push(project_mismatch(&m.psa_project_id, eng));
    }
    let planned = eng.milestones.iter().find(|x| x.milestone_id == m.milestone_id);
    match planned {
        None => issues.push(Issue::new(
            "milestone_id",
            "unknown_milestone",
            format!("engagement {} has no milestone {}", eng.engagement_id, m.milestone_id),
        )),
        Some(p) if !p.amount.is_positive() => issues.push(Issue::new(
            "milestone_id",
            "not_a_billing_milestone",
            format!("milestone {} carries no billing amount", m.milestone_id),
        )),
        Some(_) => {}
    }
    if !issues.is_empty() {
        return Err(StepError::Rejected(issues));
    }
    let mut ledger = input.others.ledger(&eng.engagement_id).cloned().unwrap_or_else(|| Ledger::new(eng.engagement_id.clone()));
    if let Some(done) = ledger.milestones.get(&m.milestone_id) {
        return Ok(Next::Done(Decision::unchanged(
            ctx,
            &eng.engagement_id,
            Action::MilestoneAlreadyRecorded,
            format!("{} already completed on {}", m.milestone_id, done.completed_on),
        )));
    }
    ledger.milestones.insert(
        m.milestone_id.clone(),
        MilestoneState { completed_on: m.completed_on, reported_by: m.reported_by.clone().unwrap_or_default(), invoice_id: None },
    );
    let amount = planned.map(|p| p.amount.to_string()).unwrap_or_default();
    Ok(Next::Done(
        Decision::unchanged(
            ctx,
            &eng.engagement_id,
            Action::MilestoneRecorded,
            format!("{} completed on {}: {amount} billable", m.milestone_id, m.completed_on),
        )
        .with(AggregateBody::Ledger(ledger)),
    ))
}
