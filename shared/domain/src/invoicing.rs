//! Invoicing: the engagement's billing ledger, invoice documents from draft to posted, the
//! invoice-number counter of a legal entity, and the pure invoice run that turns unbilled
//! WIP, due milestones and installments, and adjustments into one draft.
//!
//! Rules:
//! - **One draft per engagement × legal entity × currency.** A contract has one issuing
//!   legal entity and one currency, so one run makes at most one draft per engagement.
//! - **Nothing is billed twice.** Entries record which invoice billed how much
//!   ([`crate::delivery::Billed`]); milestones and installments are recorded on the ledger
//!   with the invoice that billed them. A draft holds what it billed until it is posted or
//!   rejected (a rejection releases everything back to WIP).
//! - **Corrections are adjustments.** A change to an entry an invoice already billed is
//!   billed as its own line (debit or credit) on the next invoice, by the author of the change.
//! - **Not-to-exceed caps.** A T&M line's billed total never passes its cap: entries are
//!   billed in date order up to the cap (the last one partially); the rest is held back and
//!   raises a `cap_exceeded` exception — it never reaches an invoice.
//! - **Rounding.** Line nets are sums of entry amounts already rounded at acceptance; tax is
//!   computed per line by the tax engine, rounded half away from zero per line; the invoice
//!   tax is the sum of line taxes; totals are exact sums.
//! - **Numbers.** Gapless per legal entity, assigned at posting from the entity's counter
//!   in the same transaction as the invoice, never reused (a failed posting keeps its number).

use std::collections::{BTreeMap, BTreeSet};

use chrono::{DateTime, Datelike, NaiveDate, Utc};
use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};

use crate::delivery::{Billed, EntryKind, WipShard};
use crate::ids::EngagementId;
use crate::model::{BillingItem, BillingSchedule, Contract, Milestone};
use crate::money::{Currency, Money, MoneyError};

/// How often an engagement is billed (data per engagement, from the customer master).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum BillingCycle {
    /// Every Monday, for the week before.
    Weekly,
    /// On the 1st and the 16th.
    SemiMonthly,
    /// On the 1st, for the month before.
    #[default]
    Monthly,
    /// Whenever a milestone has completed (and on demand).
    OnMilestone,
}

impl BillingCycle {
    /// Wire name (`weekly`, `semi_monthly`, `monthly`, `on_milestone`).
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Weekly => "weekly",
            Self::SemiMonthly => "semi_monthly",
            Self::Monthly => "monthly",
            Self::OnMilestone => "on_milestone",
        }
    }

    /// The cycle's latest billing day on or before `as_of` (Monday; the 1st or 16th; the
    /// 1st); `None` for on-milestone billing.
    pub fn boundary(self, as_of: NaiveDate) -> Option<NaiveDate> {
        let first = as_of.with_day(1);
        match self {
            Self::Weekly => Some(as_of - chrono::Duration::days(i64::from(as_of.weekday().num_days_from_monday()))),
            Self::SemiMonthly => {
                if as_of.day() >= 16 {
                    as_of.with_day(16)
                } else {
                    first
                }
            }
            Self::Monthly => first,
            Self::OnMilestone => None,
        }
    }

    /// True when a scheduled run on `as_of` bills this engagement: a billing day of its cycle
    /// has passed since its last scheduled run (or since the engagement started), so a run
    /// that could not bill on its day (an invoice still open, the tax engine down) catches up
    /// on the next daily request instead of waiting a whole cycle. On-milestone billing is
    /// due while a completed milestone is unbilled.
    pub fn due_on(self, as_of: NaiveDate, ledger: &Ledger, started: NaiveDate) -> bool {
        match self.boundary(as_of) {
            None => ledger.milestones.values().any(|m| m.invoice_id.is_none()),
            Some(day) => day > ledger.last_cycle_run.unwrap_or(started),
        }
    }
}

/// A completed milestone and the invoice that billed it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MilestoneState {
    /// Completion date.
    pub completed_on: NaiveDate,
    /// Who reported it.
    pub reported_by: String,
    /// Invoice that billed it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub invoice_id: Option<String>,
}

/// The engagement's billing ledger.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Ledger {
    /// Engagement.
    pub engagement_id: EngagementId,
    /// Invoices drafted so far (draft ids are `INV-<engagement>-<n>`).
    pub invoice_seq: u32,
    /// Completed milestones by id.
    #[serde(default)]
    pub milestones: BTreeMap<String, MilestoneState>,
    /// Installments billed: schedule item id → invoice id.
    #[serde(default)]
    pub installments: BTreeMap<String, String>,
    /// Amount held back per line by its cap at the last run.
    #[serde(default)]
    pub held_back: BTreeMap<String, Money>,
    /// Invoices drafted and not yet posted or rejected (one at a time: a run while one is
    /// open waits, so an engagement never has two drafts for the same work).
    #[serde(default)]
    pub open_invoices: BTreeSet<String>,
    /// Every invoice of the engagement, oldest first.
    #[serde(default)]
    pub invoices: Vec<String>,
    /// The date of the last scheduled run that billed (or found nothing to bill).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_cycle_run: Option<NaiveDate>,
}

impl Ledger {
    /// An empty ledger.
    pub fn new(engagement_id: EngagementId) -> Self {
        Self {
            engagement_id,
            invoice_seq: 0,
            milestones: BTreeMap::new(),
            installments: BTreeMap::new(),
            held_back: BTreeMap::new(),
            open_invoices: BTreeSet::new(),
            invoices: Vec::new(),
            last_cycle_run: None,
        }
    }
}

/// Kind of invoice line.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LineKind {
    /// Approved time at one rate.
    Time,
    /// A re-billed expense.
    Expense,
    /// A completed milestone.
    Milestone,
    /// A fixed-fee installment.
    Installment,
    /// A correction to something billed before (debit or credit).
    Adjustment,
}

/// What an invoice line bills, for release on rejection.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "source", rename_all = "snake_case")]
pub enum LineSource {
    /// Entries (with the amount billed for each on this line).
    Entries {
        /// Entry ids (empty in `InvoicePosted`: the invoice item keeps them).
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        entry_ids: Vec<String>,
    },
    /// A milestone.
    Milestone {
        /// Milestone id.
        milestone_id: String,
    },
    /// An installment.
    Installment {
        /// Schedule item id.
        item_id: String,
    },
}

/// One invoice line.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Line {
    /// 1-based.
    pub line_no: u32,
    /// Kind.
    pub kind: LineKind,
    /// Contract line.
    pub contract_line: String,
    /// Description (no personal data: resource ids, not names).
    pub description: String,
    /// Quantity (hours, or 1).
    #[serde(with = "rust_decimal::serde::str")]
    pub quantity: Decimal,
    /// Unit price.
    pub unit_price: Money,
    /// Net amount (negative for a credit adjustment).
    pub net: Money,
    /// Tax rate (fraction), once taxed.
    #[serde(default, with = "rust_decimal::serde::str_option", skip_serializing_if = "Option::is_none")]
    pub tax_rate: Option<Decimal>,
    /// Tax amount, once taxed (rounded per line).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tax: Option<Money>,
    /// Tax code and note from the engine (e.g. `VAT-RC` + the reverse-charge wording).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tax_note: Option<String>,
    /// What it bills.
    pub source: LineSource,
    /// Who caused it (adjustments: the approver of the correction).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub authors: Vec<String>,
}

/// Where an invoice is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum InvoiceStatus {
    /// Waiting for an approver.
    PendingApproval,
    /// Approved (or below the threshold): to be posted.
    Approved,
    /// Refused by an approver: its lines went back to WIP.
    Rejected,
    /// Posted in the ERP.
    Posted,
    /// The ERP refused it (keeps its number; an operator fixes and reposts, or voids it).
    PostingFailed,
    /// Voided after the ERP refused it: its number stays on record as void, its lines went
    /// back to WIP (the next run bills them under a new number).
    Voided,
}

impl InvoiceStatus {
    /// Wire name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::PendingApproval => "pending_approval",
            Self::Approved => "approved",
            Self::Rejected => "rejected",
            Self::Posted => "posted",
            Self::PostingFailed => "posting_failed",
            Self::Voided => "voided",
        }
    }
}

/// One decision on an invoice, refused or not.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ApprovalRecord {
    /// The decision event (a replay of it is ignored, whenever it comes).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub event_id: String,
    /// Who.
    pub user_id: String,
    /// `approve` or `reject`.
    pub decision: String,
    /// When.
    pub at: DateTime<Utc>,
    /// Why it was refused (segregation of duties, role), if it was.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub refused: Option<String>,
    /// Comment.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub comment: Option<String>,
}

/// An invoice, from draft to posted.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct InvoiceDoc {
    /// o2c invoice id (`INV-<engagement>-<n>`).
    pub invoice_id: String,
    /// Engagement.
    pub engagement_id: EngagementId,
    /// Issuing legal entity.
    pub legal_entity_id: String,
    /// Customer.
    pub customer_id: String,
    /// ERP customer number.
    pub erp_customer_id: String,
    /// Currency.
    pub currency: Currency,
    /// Billing cut-off.
    pub cut_off: NaiveDate,
    /// Issue date (the run's date).
    pub issue_date: NaiveDate,
    /// Due date (payment terms).
    pub due_date: NaiveDate,
    /// Lines.
    pub lines: Vec<Line>,
    /// Σ nets.
    pub subtotal: Money,
    /// Σ line taxes.
    pub tax_total: Money,
    /// Subtotal + tax.
    pub total: Money,
    /// Status.
    pub status: InvoiceStatus,
    /// Who asked for the run.
    pub requested_by: String,
    /// Why it needs approval, if it does.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub approval_reasons: Vec<String>,
    /// Decisions, refused ones included.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub approvals: Vec<ApprovalRecord>,
    /// Invoice number (assigned at posting).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub number: Option<String>,
    /// ERP document id.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub erp_invoice_id: Option<String>,
    /// ERP project.
    pub erp_project_id: String,
    /// Tax jurisdiction the engine determined.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tax_jurisdiction: Option<String>,
}

impl InvoiceDoc {
    /// Applies a checked tax quote: each line's rate, tax and note; the totals as exact sums.
    pub fn apply_tax(&mut self, quote: &crate::tax::TaxQuote) -> Result<(), MoneyError> {
        for (line, taxed) in self.lines.iter_mut().zip(&quote.lines) {
            line.tax_rate = Some(taxed.rate);
            line.tax = Some(taxed.tax);
            line.tax_note = Some(match &taxed.note {
                Some(n) => format!("{}: {n}", taxed.code),
                None => taxed.code.clone(),
            });
        }
        self.tax_total = sum(self.currency, self.lines.iter().filter_map(|l| l.tax))?;
        self.total = self.subtotal.checked_add(self.tax_total)?;
        self.tax_jurisdiction = Some(quote.jurisdiction.clone());
        Ok(())
    }

    /// The tax request for this (untaxed) invoice.
    pub fn tax_request(&self, seller_country: &str, buyer: &crate::reference::Customer) -> crate::tax::TaxRequest {
        crate::tax::TaxRequest {
            document_id: self.invoice_id.clone(),
            date: self.issue_date,
            currency: self.currency,
            seller_legal_entity: self.legal_entity_id.clone(),
            seller_country: seller_country.to_owned(),
            customer_id: self.customer_id.clone(),
            buyer_country: buyer.country.clone(),
            buyer_tax_id: buyer.tax_registration.clone(),
            ship_to_state: buyer.ship_to_state.clone(),
            exemption_certificate: buyer.exemption_certificate.clone(),
            lines: self
                .lines
                .iter()
                .map(|l| crate::tax::TaxRequestLine {
                    line_no: l.line_no,
                    net: l.net,
                    supply: if l.kind == LineKind::Expense { crate::tax::SupplyKind::Expenses } else { crate::tax::SupplyKind::Services },
                })
                .collect(),
        }
    }

    /// People who authored an adjustment on it.
    pub fn adjustment_authors(&self) -> BTreeSet<&str> {
        self.lines.iter().filter(|l| l.kind == LineKind::Adjustment).flat_map(|l| l.authors.iter().map(String::as_str)).collect()
    }
}

/// The invoice-number counter of a legal entity.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct InvoiceCounter {
    /// Legal entity.
    pub legal_entity_id: String,
    /// Numbers assigned so far (the next is `last + 1`).
    pub last: u64,
}

impl InvoiceCounter {
    /// The formatted number `n` of a legal entity: `<entity>-<n, 6 digits>`.
    pub fn format(legal_entity_id: &str, n: u64) -> String {
        format!("{legal_entity_id}-{n:06}")
    }
}

/// What one invoice run took from WIP and the ledger, ready for tax.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Draft {
    /// The invoice (untaxed).
    pub invoice: InvoiceDoc,
    /// Entry id → what is billed for it after this invoice (for the shards).
    pub entries: BTreeMap<String, BilledEntry>,
    /// Milestones billed.
    pub milestones: Vec<String>,
    /// Installment items billed.
    pub installments: Vec<String>,
    /// Held back per line by its cap (reported as an exception).
    pub held_back: BTreeMap<String, Money>,
}

/// What an entry stands billed at after a draft: the amount and the line it is on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BilledEntry {
    /// Cumulative billed amount.
    pub amount: Money,
    /// Contract line.
    pub line_id: String,
}

/// A line of the draft, before numbering.
fn line(
    kind: LineKind,
    contract_line: &str,
    description: String,
    quantity: Decimal,
    unit_price: Money,
    net: Money,
    source: LineSource,
) -> Line {
    Line {
        line_no: 0,
        kind,
        contract_line: contract_line.to_owned(),
        description,
        quantity,
        unit_price,
        net,
        tax_rate: None,
        tax: None,
        tax_note: None,
        source,
        authors: vec![],
    }
}

/// The T&M caps of a run: what each capped line has billed, and what each held back.
struct Caps {
    caps: BTreeMap<String, Money>,
    billed: BTreeMap<String, Money>,
    held_back: BTreeMap<String, Money>,
}

impl Caps {
    /// Takes up to `want` (≥ 0) on `line` within its cap; the rest is held back.
    fn take(&mut self, line: &str, want: Money) -> Result<Money, MoneyError> {
        let Some(cap) = self.caps.get(line) else { return Ok(want) };
        let so_far = self.billed.get(line).copied().unwrap_or(Money::zero(want.currency));
        let room = Money::new((cap.amount - so_far.amount).max(Decimal::ZERO), want.currency);
        let take = if want.amount > room.amount { room } else { want };
        if take.amount < want.amount {
            let h = self.held_back.entry(line.to_owned()).or_insert(Money::zero(want.currency));
            *h = h.checked_add(want.checked_sub(take)?)?;
        }
        self.billed.insert(line.to_owned(), so_far.checked_add(take)?);
        Ok(take)
    }

    /// Gives `amount` back to `line`'s cap (a credit).
    fn give_back(&mut self, line: &str, amount: Money) -> Result<(), MoneyError> {
        if let Some(b) = self.billed.get_mut(line) {
            *b = b.checked_sub(amount)?;
        }
        Ok(())
    }
}

/// Inputs of a run besides WIP.
#[derive(Debug, Clone, Copy)]
pub struct RunInputs<'a> {
    /// Contract.
    pub contract: &'a Contract,
    /// Billing schedule.
    pub schedule: &'a BillingSchedule,
    /// Milestones (with amounts).
    pub milestones: &'a [Milestone],
    /// Ledger.
    pub ledger: &'a Ledger,
    /// Cut-off: entries dated after it wait for the next run.
    pub cut_off: NaiveDate,
    /// The run's date.
    pub issue_date: NaiveDate,
    /// Who asked.
    pub requested_by: &'a str,
    /// ERP project.
    pub erp_project_id: &'a str,
    /// ERP customer number.
    pub erp_customer_id: &'a str,
    /// Days to pay.
    pub payment_days: i64,
}

fn sum(currency: Currency, items: impl IntoIterator<Item = Money>) -> Result<Money, MoneyError> {
    crate::money::sum(currency, items)
}

/// Builds the draft of one invoice run (see the module rules), or `None` when there is
/// nothing to bill.
pub fn build_draft(inputs: RunInputs<'_>, shards: &[&WipShard]) -> Result<Option<Draft>, MoneyError> {
    let c = inputs.contract;
    let cur = c.currency;
    let zero = Money::zero(cur);
    let invoice_id = format!("INV-{}-{}", c.engagement_id, inputs.ledger.invoice_seq + 1);
    let mut lines: Vec<Line> = Vec::new();
    let mut billed_entries: BTreeMap<String, BilledEntry> = BTreeMap::new();

    // Corrections of billed work first (their credits free cap room), then new work in
    // (date, id) order, so caps cut the latest work.
    let mut entries: Vec<&crate::delivery::WipEntry> = shards.iter().flat_map(|s| s.entries.values()).collect();
    entries.sort_by(|a, b| {
        let changed = |e: &crate::delivery::WipEntry| !e.billed.is_empty() && !e.billed_as_is();
        (!changed(a), a.date, &a.entry_id).cmp(&(!changed(b), b.date, &b.entry_id))
    });
    // T&M billed so far per capped line: what the entries record (the single truth).
    let mut caps = Caps {
        caps: inputs
            .schedule
            .items
            .iter()
            .filter_map(|i| match i {
                BillingItem::TimeAndMaterials { line_id, not_to_exceed, .. } => Some((line_id.clone(), *not_to_exceed)),
                _ => None,
            })
            .collect(),
        billed: BTreeMap::new(),
        held_back: BTreeMap::new(),
    };
    for e in entries.iter().filter(|e| e.kind == EntryKind::Time) {
        if let Some(last) = e.last_billed()
            && caps.caps.contains_key(&last.line_id)
        {
            let t = caps.billed.entry(last.line_id.clone()).or_insert(zero);
            *t = t.checked_add(last.amount)?;
        }
    }

    type TimeKey = (String, String, Decimal);
    let mut time_groups: BTreeMap<TimeKey, (Decimal, Money, Vec<String>)> = BTreeMap::new();
    type ExpenseKey = (String, String);
    let mut expense_groups: BTreeMap<ExpenseKey, (u32, Money, Vec<String>, NaiveDate, NaiveDate)> = BTreeMap::new();
    let approved = |e: &crate::delivery::WipEntry| e.status == crate::delivery::EntryStatus::Approved;
    for e in &entries {
        let role = e.role.clone().unwrap_or_default();
        if e.billed.is_empty() {
            // New work up to the cut-off.
            if !approved(e) || e.amount.amount.is_zero() || e.date > inputs.cut_off {
                continue;
            }
            match e.kind {
                EntryKind::Time => {
                    let take = caps.take(&e.line_id, e.amount)?;
                    if take.amount.is_zero() {
                        continue;
                    }
                    if take == e.amount {
                        let g =
                            time_groups.entry((e.line_id.clone(), role, e.unit_price.amount)).or_insert((Decimal::ZERO, zero, Vec::new()));
                        g.0 += e.quantity;
                        g.1 = g.1.checked_add(take)?;
                        g.2.push(e.entry_id.clone());
                    } else {
                        lines.push(line(
                            LineKind::Time,
                            &e.line_id,
                            format!("{role}: {} ({} h on {}), billed up to the line's not-to-exceed cap", e.entry_id, e.quantity, e.date),
                            Decimal::ONE,
                            take,
                            take,
                            LineSource::Entries { entry_ids: vec![e.entry_id.clone()] },
                        ));
                    }
                    billed_entries.insert(e.entry_id.clone(), BilledEntry { amount: take, line_id: e.line_id.clone() });
                }
                EntryKind::Expense => {
                    let key = (e.line_id.clone(), e.category.clone().unwrap_or_default());
                    let g = expense_groups.entry(key).or_insert((0, zero, Vec::new(), e.date, e.date));
                    g.0 += 1;
                    g.1 = g.1.checked_add(e.amount)?;
                    g.2.push(e.entry_id.clone());
                    g.3 = g.3.min(e.date);
                    g.4 = g.4.max(e.date);
                    billed_entries.insert(e.entry_id.clone(), BilledEntry { amount: e.amount, line_id: e.line_id.clone() });
                }
            }
        } else if e.billed_as_is() {
            // The version billed is current: what is left is a remainder a cap held back.
            let due = e.unbilled();
            if !due.is_positive() || !approved(e) || e.date > inputs.cut_off || e.kind != EntryKind::Time {
                continue;
            }
            let take = caps.take(&e.line_id, due)?;
            if take.amount.is_zero() {
                continue;
            }
            lines.push(line(
                LineKind::Time,
                &e.line_id,
                format!("{role}: remainder of {} ({} h on {}) held back by the cap", e.entry_id, e.quantity, e.date),
                Decimal::ONE,
                take,
                take,
                LineSource::Entries { entry_ids: vec![e.entry_id.clone()] },
            ));
            billed_entries
                .insert(e.entry_id.clone(), BilledEntry { amount: e.billed_amount().checked_add(take)?, line_id: e.line_id.clone() });
        } else {
            // Changed since billed (a correction or a withdrawal): adjustments by its authors.
            let Some(last) = e.last_billed() else { continue };
            let what = if approved(e) { format!("corrected to v{}", e.version) } else { "withdrawn".to_owned() };
            let mut adjust = |contract_line: &str, net: Money, description: String| {
                let mut l = line(
                    LineKind::Adjustment,
                    contract_line,
                    description,
                    Decimal::ONE,
                    net,
                    net,
                    LineSource::Entries { entry_ids: vec![e.entry_id.clone()] },
                );
                l.authors = e.authors.clone();
                lines.push(l);
            };
            if last.line_id == e.line_id {
                let mut delta = e.amount.checked_sub(last.amount)?;
                if e.kind == EntryKind::Time {
                    if delta.is_positive() {
                        delta = caps.take(&e.line_id, delta)?;
                    } else {
                        caps.give_back(&e.line_id, Money::new(-delta.amount, cur))?;
                    }
                }
                if !delta.amount.is_zero() {
                    adjust(&e.line_id, delta, format!("Adjustment: {} {what} (billed {}, now {})", e.entry_id, last.amount, e.amount));
                }
                billed_entries
                    .insert(e.entry_id.clone(), BilledEntry { amount: last.amount.checked_add(delta)?, line_id: e.line_id.clone() });
            } else {
                // Moved to another line: credit it in full where it was, bill it where it is.
                if !last.amount.amount.is_zero() {
                    if e.kind == EntryKind::Time {
                        caps.give_back(&last.line_id, last.amount)?;
                    }
                    let credit = Money::new(-last.amount.amount, cur);
                    adjust(
                        &last.line_id,
                        credit,
                        format!("Adjustment: {} moved to line {} (credit of {} billed here)", e.entry_id, e.line_id, last.amount),
                    );
                }
                let debit = if e.kind == EntryKind::Time { caps.take(&e.line_id, e.amount)? } else { e.amount };
                if !debit.amount.is_zero() {
                    adjust(
                        &e.line_id,
                        debit,
                        format!("Adjustment: {} {what}, moved from line {} (now {})", e.entry_id, last.line_id, e.amount),
                    );
                }
                billed_entries.insert(e.entry_id.clone(), BilledEntry { amount: debit, line_id: e.line_id.clone() });
            }
        }
    }
    for ((line_id, role, rate), (hours, net, ids)) in time_groups {
        let unit = Money::new(rate, cur);
        lines.push(line(
            LineKind::Time,
            &line_id,
            format!("{role}: {hours} h at {unit}/h, work through {}", inputs.cut_off),
            hours,
            unit,
            net,
            LineSource::Entries { entry_ids: ids },
        ));
    }
    for ((line_id, category), (count, net, ids, first, last)) in expense_groups {
        lines.push(line(
            LineKind::Expense,
            &line_id,
            format!("Expenses: {category}, {count} item(s) {first}..{last}"),
            Decimal::from(count),
            Money::new((net.amount / Decimal::from(count.max(1))).round_dp(cur.exponent()), cur),
            net,
            LineSource::Entries { entry_ids: ids },
        ));
    }
    let held_back = caps.held_back;

    // Completed milestones not yet billed.
    let mut milestones_billed = Vec::new();
    for m in inputs.milestones {
        if let Some(state) = inputs.ledger.milestones.get(&m.milestone_id)
            && state.invoice_id.is_none()
            && state.completed_on <= inputs.cut_off
        {
            lines.push(Line {
                line_no: 0,
                kind: LineKind::Milestone,
                contract_line: m.line_id.clone(),
                description: format!("Milestone {} — {} (completed {})", m.milestone_id, m.name, state.completed_on),
                quantity: Decimal::ONE,
                unit_price: m.amount,
                net: m.amount,
                tax_rate: None,
                tax: None,
                tax_note: None,
                source: LineSource::Milestone { milestone_id: m.milestone_id.clone() },
                authors: vec![],
            });
            milestones_billed.push(m.milestone_id.clone());
        }
    }
    // Installments due by the cut-off.
    let mut installments_billed = Vec::new();
    for item in &inputs.schedule.items {
        if let BillingItem::Installment { item_id, line_id, sequence, bill_date, amount } = item
            && *bill_date <= inputs.cut_off
            && !inputs.ledger.installments.contains_key(item_id)
        {
            lines.push(Line {
                line_no: 0,
                kind: LineKind::Installment,
                contract_line: line_id.clone(),
                description: format!("Fixed fee installment {sequence} (due {bill_date})"),
                quantity: Decimal::ONE,
                unit_price: *amount,
                net: *amount,
                tax_rate: None,
                tax: None,
                tax_note: None,
                source: LineSource::Installment { item_id: item_id.clone() },
                authors: vec![],
            });
            installments_billed.push(item_id.clone());
        }
    }
    if lines.is_empty() {
        return Ok(None);
    }
    for (i, l) in lines.iter_mut().enumerate() {
        l.line_no = u32::try_from(i + 1).unwrap_or(u32::MAX);
    }
    let subtotal = sum(cur, lines.iter().map(|l| l.net))?;
    let invoice = InvoiceDoc {
        invoice_id,
        engagement_id: c.engagement_id.clone(),
        legal_entity_id: c.legal_entity.id.clone(),
        customer_id: c.customer.id.clone(),
        erp_customer_id: inputs.erp_customer_id.to_owned(),
        currency: cur,
        cut_off: inputs.cut_off,
        issue_date: inputs.issue_date,
        due_date: inputs.issue_date + chrono::Duration::days(inputs.payment_days),
        lines,
        subtotal,
        tax_total: zero,
        total: subtotal,
        status: InvoiceStatus::PendingApproval,
        requested_by: inputs.requested_by.to_owned(),
        approval_reasons: vec![],
        approvals: vec![],
        number: None,
        erp_invoice_id: None,
        erp_project_id: inputs.erp_project_id.to_owned(),
        tax_jurisdiction: None,
    };
    Ok(Some(Draft { invoice, entries: billed_entries, milestones: milestones_billed, installments: installments_billed, held_back }))
}

/// Days to pay from payment terms such as `NET30` (30 when the terms carry no number).
pub fn payment_days(terms: &str) -> i64 {
    terms.trim_start_matches(|c: char| !c.is_ascii_digit()).parse().unwrap_or(30)
}

impl Ledger {
    /// Records a draft: its number in the sequence, what it bills, what its caps held back.
    pub fn record_draft(&mut self, draft: &Draft) {
        let id = &draft.invoice.invoice_id;
        self.invoice_seq += 1;
        self.open_invoices.insert(id.clone());
        self.invoices.push(id.clone());
        for m in &draft.milestones {
            if let Some(state) = self.milestones.get_mut(m) {
                state.invoice_id = Some(id.clone());
            }
        }
        for i in &draft.installments {
            self.installments.insert(i.clone(), id.clone());
        }
        self.held_back = draft.held_back.clone();
    }

    /// Releases a rejected invoice: its milestones and installments are billable again.
    pub fn release(&mut self, invoice_id: &str) {
        self.open_invoices.remove(invoice_id);
        for m in self.milestones.values_mut() {
            if m.invoice_id.as_deref() == Some(invoice_id) {
                m.invoice_id = None;
            }
        }
        self.installments.retain(|_, inv| inv != invoice_id);
    }
}

/// Applies a draft to the WIP shards: each billed entry records the invoice.
pub fn mark_billed(shards: &mut [WipShard], draft: &Draft) {
    for s in shards.iter_mut() {
        for (id, b) in &draft.entries {
            if let Some(e) = s.entries.get_mut(id) {
                e.billed.push(Billed {
                    invoice_id: draft.invoice.invoice_id.clone(),
                    version: e.version,
                    amount: b.amount,
                    line_id: b.line_id.clone(),
                });
            }
        }
    }
}

/// Releases a rejected invoice from the WIP shards: what it billed is unbilled again.
/// Returns the shards that changed.
pub fn release(shards: &[&WipShard], invoice_id: &str) -> Vec<WipShard> {
    shards
        .iter()
        .filter(|s| s.entries.values().any(|e| e.billed.iter().any(|b| b.invoice_id == invoice_id)))
        .map(|s| {
            let mut s = (*s).clone();
            for e in s.entries.values_mut() {
                e.billed.retain(|b| b.invoice_id != invoice_id);
            }
            s
        })
        .collect()
}

/// Why an invoice needs approval: above the entity's threshold in its currency (or no
/// threshold in that currency: approval by default, never by omission), or carrying
/// adjustments.
pub fn approval_reasons(invoice: &InvoiceDoc, thresholds: &[Money]) -> Vec<String> {
    let mut reasons = Vec::new();
    match thresholds.iter().find(|t| t.currency == invoice.currency) {
        Some(t) if invoice.total.amount > t.amount => {
            reasons.push(format!("total {} above the {} approval threshold of {t}", invoice.total, invoice.legal_entity_id));
        }
        Some(_) => {}
        None => reasons
            .push(format!("{} has no approval threshold in {}: every such invoice is approved", invoice.legal_entity_id, invoice.currency)),
    }
    if invoice.lines.iter().any(|l| l.kind == LineKind::Adjustment) {
        reasons.push("carries adjustments to invoiced work".into());
    }
    reasons
}
