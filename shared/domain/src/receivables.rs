//! Receivables: a customer's open invoices at one legal entity, the payments received and how
//! each was applied, unapplied cash; cash application (matching a payment to invoices);
//! ageing and DSO.
//!
//! **Open items only.** The aggregate is rewritten by every posting, payment and CRM sync of
//! the customer, so it holds what is still open: invoices with something open, payments
//! still being booked, the unapplied cash of the others (one amount per payment), the
//! operator's issues, and what DSO needs (the totals invoiced per issue date). A paid
//! invoice settles out onto its [`InvoiceRef`](crate::aggregate::InvoiceRef), a booked (or
//! refused) payment onto its [`PaymentRef`](crate::aggregate::PaymentRef), in the write that
//! closes it — so the aggregate's size and the cost of each write follow what is open, not
//! the customer's history. A reversal brings what it re-opens back. [`Receivables::with_settled`]
//! puts the history together again for reports.
//!
//! Matching, in order — the first rule that explains the payment wins:
//! 1. **remittance references**: invoice numbers found in the structured references or the
//!    remittance text, applied in the order given, each up to its open balance;
//! 2. **exact open amount**: exactly one open invoice whose open balance equals the amount;
//! 3. **the customer's rule** (reference data): `oldest_first` applies to the oldest open
//!    invoices by due date; `none` leaves the cash unapplied for an operator.
//!
//! Whatever is left is unapplied cash (the customer's credit). A payment in another currency
//! than the invoices it would pay is never converted: it stays unapplied and raises an
//! exception. Amounts are exact; no invoice is ever applied above its total.
//!
//! DSO (count-back method): starting from the receivables balance at the end of a month, walk
//! back month by month through what was invoiced: while the balance exceeds a month's
//! invoicing, count the month's days and subtract its invoicing; the month that covers the
//! rest counts `rest / invoicing × days`. DSO is the days counted (2 decimals, half away
//! from zero). The current month counts its days up to the as-of date; a balance larger
//! than all invoicing on record counts every month on record. Ageing buckets by days past due: current, 1–30, 31–60, 61–90, over 90.

use std::collections::BTreeMap;

use chrono::{Datelike, NaiveDate};
use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};

use crate::ids::EngagementId;
use crate::money::{Currency, Money, MoneyError};

/// One posted invoice as receivables see it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OpenItem {
    /// o2c invoice id.
    pub invoice_id: String,
    /// Invoice number (what remittances quote).
    pub number: String,
    /// Engagement.
    pub engagement_id: EngagementId,
    /// Issue date.
    pub issue_date: NaiveDate,
    /// Due date.
    pub due_date: NaiveDate,
    /// Total including tax.
    pub total: Money,
    /// Applied so far (never above `total`).
    pub applied: Money,
    /// Raised on every change of `applied` (1 when posted): the CRM keeps the newest.
    #[serde(default = "one")]
    pub version: u64,
}

fn one() -> u64 {
    1
}

impl OpenItem {
    /// What is still open.
    pub fn open(&self) -> Money {
        Money::new(self.total.amount - self.applied.amount, self.total.currency)
    }

    /// `open`, `partially_paid`, `paid`, or `credit` (a credit note not yet used).
    pub fn status(&self) -> &'static str {
        let open = self.open().amount;
        if open.is_zero() {
            "paid"
        } else if open.is_sign_negative() {
            "credit"
        } else if self.applied.is_positive() {
            "partially_paid"
        } else {
            "open"
        }
    }

    fn change(&mut self, applied: Money) {
        self.applied = applied;
        self.version += 1;
    }
}

/// How a payment was applied.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Application {
    /// Invoice.
    pub invoice_id: String,
    /// Its number.
    pub number: String,
    /// Amount applied.
    pub amount: Money,
}

/// Why a payment landed where it did.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum MatchRule {
    /// Invoice numbers in the remittance.
    Remittance,
    /// Exactly one open invoice with that open amount.
    ExactAmount,
    /// The customer's rule: oldest open invoices first.
    OldestFirst,
    /// Nothing matched: unapplied.
    Unmatched,
    /// Another currency than the invoices': unapplied, exception.
    CurrencyMismatch,
}

impl MatchRule {
    /// Stable name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Remittance => "remittance",
            Self::ExactAmount => "exact_amount",
            Self::OldestFirst => "oldest_first",
            Self::Unmatched => "unmatched",
            Self::CurrencyMismatch => "currency_mismatch",
        }
    }
}

/// A payment received and what became of it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PaymentRecord {
    /// Bank / platform reference (the idempotency key of the payment).
    pub payment_id: String,
    /// Amount received.
    pub amount: Money,
    /// Value date.
    pub value_date: NaiveDate,
    /// How it matched.
    pub rule: MatchRule,
    /// Applications.
    pub applications: Vec<Application>,
    /// Left unapplied (customer credit).
    pub unapplied: Money,
    /// Reversed (chargeback / returned payment) by this payment id.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reversed_by: Option<String>,
    /// Where its booking in the ERP stands.
    #[serde(default)]
    pub status: PaymentStatus,
    /// The ERP's cash receipt, once booked.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub erp_receipt_id: Option<String>,
}

/// Where a payment's booking in the ERP stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum PaymentStatus {
    /// Applied in o2c (durable before the ERP call); the ERP receipt is being booked.
    #[default]
    Pending,
    /// Booked in the ERP.
    Booked,
    /// The ERP refused the receipt: the cash is unapplied, an issue says why.
    Refused,
}

impl PaymentStatus {
    /// Stable name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Pending => "pending",
            Self::Booked => "booked",
            Self::Refused => "refused",
        }
    }
}

/// A customer's receivables at one legal entity.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Receivables {
    /// Legal entity.
    pub legal_entity_id: String,
    /// Customer (or `SUSPENSE` for payments no customer could be found for).
    pub customer_id: String,
    /// Posted invoices by id (open or settled).
    #[serde(default)]
    pub invoices: BTreeMap<String, OpenItem>,
    /// Payments by id.
    #[serde(default)]
    pub payments: BTreeMap<String, PaymentRecord>,
    /// What an operator must look at (unidentified payers, currency mismatches, reversals).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub issues: Vec<ReceivableIssue>,
    /// Unapplied cash of payments settled out (booked or refused, not reversed), by payment
    /// id: the customer's credit, counted by [`Receivables::unapplied`].
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub credits: BTreeMap<String, Money>,
    /// Totals invoiced per currency code and issue date, settled invoices included (DSO's
    /// count-back walks them): one entry per day invoiced, whatever the number of invoices.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub invoiced: BTreeMap<String, BTreeMap<NaiveDate, Decimal>>,
}

/// Something about a customer's cash an operator must look at.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReceivableIssue {
    /// The payment concerned.
    pub payment_id: String,
    /// What happened.
    pub message: String,
    /// When.
    pub raised_at: chrono::DateTime<chrono::Utc>,
    /// Still needs attention.
    pub open: bool,
}

impl ReceivableIssue {
    /// An open issue about `payment_id`.
    pub fn new(payment_id: &str, message: String, at: chrono::DateTime<chrono::Utc>) -> Self {
        Self { payment_id: payment_id.to_owned(), message, raised_at: at, open: true }
    }
}

/// Something closed that [`Receivables::settle`] would take out.
#[derive(Debug, Clone, Copy)]
pub enum Settled<'a> {
    /// A paid invoice.
    Invoice(&'a OpenItem),
    /// A closed payment.
    Payment(&'a PaymentRecord),
}

/// The customer id that holds payments no customer could be found for.
pub const SUSPENSE: &str = "SUSPENSE";

/// How unreferenced cash is applied for a customer (reference data).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum CashRule {
    /// Oldest open invoices first (by due date, then number).
    #[default]
    OldestFirst,
    /// Leave it unapplied for an operator.
    None,
}

/// What applying a payment decided.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Applied {
    /// The payment record (with its applications and what is left).
    pub record: PaymentRecord,
    /// Why an operator must look at it, if they must.
    pub exception: Option<String>,
}

impl Receivables {
    /// Empty receivables.
    pub fn new(legal_entity_id: &str, customer_id: &str) -> Self {
        Self {
            legal_entity_id: legal_entity_id.to_owned(),
            customer_id: customer_id.to_owned(),
            invoices: BTreeMap::new(),
            payments: BTreeMap::new(),
            issues: Vec::new(),
            credits: BTreeMap::new(),
            invoiced: BTreeMap::new(),
        }
    }

    /// `invoiced`, or for receivables stored before it existed (they held every invoice)
    /// the same counted from their invoices.
    fn invoiced_by_day(&self) -> std::borrow::Cow<'_, BTreeMap<String, BTreeMap<NaiveDate, Decimal>>> {
        if !self.invoiced.is_empty() {
            return std::borrow::Cow::Borrowed(&self.invoiced);
        }
        let mut out: BTreeMap<String, BTreeMap<NaiveDate, Decimal>> = BTreeMap::new();
        for i in self.invoices.values() {
            *out.entry(i.total.currency.code().to_owned()).or_default().entry(i.issue_date).or_default() += i.total.amount;
        }
        std::borrow::Cow::Owned(out)
    }

    /// Receivables stored before `invoiced` existed held every invoice: count them once.
    fn backfill_invoiced(&mut self) {
        if self.invoiced.is_empty() {
            self.invoiced = self.invoiced_by_day().into_owned();
        }
    }

    /// Raises an issue (once per payment and message).
    pub fn raise(&mut self, issue: ReceivableIssue) {
        if !self.issues.iter().any(|i| i.payment_id == issue.payment_id && i.message == issue.message) {
            self.issues.push(issue);
        }
    }

    /// Records a posted invoice (idempotent by invoice id while it is open; posting settles
    /// nothing, so a posting is never counted twice).
    pub fn post(&mut self, item: OpenItem) {
        self.backfill_invoiced();
        if let std::collections::btree_map::Entry::Vacant(v) = self.invoices.entry(item.invoice_id.clone()) {
            *self.invoiced.entry(item.total.currency.code().to_owned()).or_default().entry(item.issue_date).or_default() +=
                item.total.amount;
            v.insert(item);
        }
    }

    /// True when `item` is closed: nothing open on it.
    pub fn is_settled(item: &OpenItem) -> bool {
        item.open().amount.is_zero()
    }

    /// True when `payment` is closed: booked or refused (what it leaves unapplied stays as a
    /// credit).
    pub fn is_closed(payment: &PaymentRecord) -> bool {
        payment.status != PaymentStatus::Pending
    }

    /// Takes out what is closed and `may` keep elsewhere (its reference was loaded, so the
    /// caller can write it there): paid invoices and closed payments. An invoice that a
    /// payment still being booked applies to stays: if the ERP refuses that payment, its
    /// applications come off the invoice here.
    pub fn settle(&mut self, mut may: impl FnMut(Settled<'_>) -> bool) -> (Vec<OpenItem>, Vec<PaymentRecord>) {
        self.backfill_invoiced();
        let pending: std::collections::BTreeSet<&str> = self
            .payments
            .values()
            .filter(|p| p.status == PaymentStatus::Pending)
            .flat_map(|p| p.applications.iter().map(|a| a.invoice_id.as_str()))
            .collect();
        let invoices: Vec<String> = self
            .invoices
            .values()
            .filter(|i| Self::is_settled(i) && !pending.contains(i.invoice_id.as_str()) && may(Settled::Invoice(i)))
            .map(|i| i.invoice_id.clone())
            .collect();
        let payments: Vec<String> =
            self.payments.values().filter(|p| Self::is_closed(p) && may(Settled::Payment(p))).map(|p| p.payment_id.clone()).collect();
        let payments: Vec<PaymentRecord> = payments.iter().filter_map(|id| self.payments.remove(id)).collect();
        for p in payments.iter().filter(|p| p.reversed_by.is_none() && !p.unapplied.amount.is_zero()) {
            self.credits.insert(p.payment_id.clone(), p.unapplied);
        }
        (invoices.iter().filter_map(|id| self.invoices.remove(id)).collect(), payments)
    }

    /// Brings a settled invoice back (a reversal re-opens it); one still here stays as it is.
    pub fn reopen(&mut self, item: OpenItem) {
        self.invoices.entry(item.invoice_id.clone()).or_insert(item);
    }

    /// Brings a settled payment back (to be reversed), its credit with it; one still here
    /// stays as it is.
    pub fn restore(&mut self, payment: PaymentRecord) {
        self.credits.remove(&payment.payment_id);
        self.payments.entry(payment.payment_id.clone()).or_insert(payment);
    }

    /// The whole history for reports: these open items with the settled ones put back.
    pub fn with_settled(mut self, invoices: impl IntoIterator<Item = OpenItem>, payments: impl IntoIterator<Item = PaymentRecord>) -> Self {
        self.backfill_invoiced();
        for i in invoices {
            self.reopen(i);
        }
        for p in payments {
            self.restore(p);
        }
        self
    }

    /// Open invoices in the order unreferenced cash pays them (due date, then number).
    fn open_by_age(&self) -> Vec<&OpenItem> {
        let mut v: Vec<&OpenItem> = self.invoices.values().filter(|i| i.open().is_positive()).collect();
        v.sort_by(|a, b| (a.due_date, &a.number).cmp(&(b.due_date, &b.number)));
        v
    }

    /// Unapplied cash per currency code (the customer's credit).
    pub fn unapplied(&self) -> BTreeMap<&'static str, Decimal> {
        let mut out: BTreeMap<&'static str, Decimal> = BTreeMap::new();
        for p in self.payments.values().filter(|p| p.reversed_by.is_none()) {
            *out.entry(p.unapplied.currency.code()).or_default() += p.unapplied.amount;
        }
        for c in self.credits.values() {
            *out.entry(c.currency.code()).or_default() += c.amount;
        }
        out
    }

    /// Decides how `payment_id` of `amount` applies (see the module rules) — pure; call
    /// [`Receivables::record`] to keep it. `settled` are quoted invoices already paid and
    /// settled out: a remittance quoting one still matches by remittance (nothing is open
    /// on it, so the cash stays unapplied rather than paying other invoices).
    pub fn apply(
        &self,
        payment_id: &str,
        amount: Money,
        value_date: NaiveDate,
        references: &[String],
        settled: &[&OpenItem],
        rule: CashRule,
    ) -> Result<Applied, MoneyError> {
        let mut left = amount;
        let mut applications = Vec::new();
        let take = |item: &OpenItem, left: &mut Money, applications: &mut Vec<Application>| -> Result<(), MoneyError> {
            let open = item.open();
            let amt = if left.amount < open.amount { *left } else { open };
            if amt.is_positive() {
                applications.push(Application { invoice_id: item.invoice_id.clone(), number: item.number.clone(), amount: amt });
                *left = left.checked_sub(amt)?;
            }
            Ok(())
        };
        let open = self.open_by_age();
        let currencies: Vec<Currency> = open.iter().map(|i| i.total.currency).collect();
        // Each quoted invoice once (a remittance may quote a number twice), in quoted order.
        let mut referenced: Vec<&OpenItem> = Vec::new();
        let find =
            |r: &String| self.invoices.values().find(|i| &i.number == r).or_else(|| settled.iter().copied().find(|i| &i.number == r));
        for item in references.iter().filter_map(find) {
            if !referenced.iter().any(|seen| seen.invoice_id == item.invoice_id) {
                referenced.push(item);
            }
        }
        let mismatch = |items: &[&OpenItem]| items.iter().any(|i| i.total.currency != amount.currency);
        let (rule, exception) = if !referenced.is_empty() {
            if mismatch(&referenced) {
                (MatchRule::CurrencyMismatch, Some(currency_exception(amount, &referenced)))
            } else {
                for item in &referenced {
                    take(item, &mut left, &mut applications)?;
                }
                (MatchRule::Remittance, None)
            }
        } else if let [only] = open.iter().filter(|i| i.open() == amount).collect::<Vec<_>>()[..] {
            take(only, &mut left, &mut applications)?;
            (MatchRule::ExactAmount, None)
        } else if !open.is_empty() && !currencies.contains(&amount.currency) {
            (MatchRule::CurrencyMismatch, Some(currency_exception(amount, &open)))
        } else if rule == CashRule::OldestFirst && !open.is_empty() {
            for item in open.iter().filter(|i| i.total.currency == amount.currency) {
                if left.is_positive() {
                    take(item, &mut left, &mut applications)?;
                }
            }
            (MatchRule::OldestFirst, None)
        } else {
            (MatchRule::Unmatched, None)
        };
        let exception = exception.or_else(|| {
            (self.customer_id == SUSPENSE)
                .then(|| format!("payment {payment_id} of {amount}: no customer found for the payer or its references; held in suspense"))
        });
        Ok(Applied {
            record: PaymentRecord {
                payment_id: payment_id.to_owned(),
                amount,
                value_date,
                rule,
                applications,
                unapplied: left,
                reversed_by: None,
                status: PaymentStatus::Pending,
                erp_receipt_id: None,
            },
            exception,
        })
    }

    /// Keeps an applied payment: its applications raise the invoices' applied amounts.
    pub fn record(&mut self, applied: &Applied) -> Result<(), MoneyError> {
        for a in &applied.record.applications {
            if let Some(item) = self.invoices.get_mut(&a.invoice_id) {
                let applied = item.applied.checked_add(a.amount)?;
                item.change(applied);
            }
        }
        self.payments.insert(applied.record.payment_id.clone(), applied.record.clone());
        Ok(())
    }

    /// Reverses payment `original` (a chargeback or returned payment): its applications
    /// come off the invoices (they re-open), its unapplied cash is gone. `None` when there
    /// is no such payment, or it was reversed already.
    pub fn reverse(&mut self, original: &str, by: &str) -> Result<Option<PaymentRecord>, MoneyError> {
        let Some(p) = self.payments.get(original).filter(|p| p.reversed_by.is_none()).cloned() else { return Ok(None) };
        for a in &p.applications {
            if let Some(item) = self.invoices.get_mut(&a.invoice_id) {
                let applied = item.applied.checked_sub(a.amount)?;
                item.change(applied);
            }
        }
        if let Some(rec) = self.payments.get_mut(original) {
            rec.reversed_by = Some(by.to_owned());
        }
        Ok(Some(p))
    }

    /// Takes a refused payment's applications back (the invoices re-open as the ERP still
    /// sees them): the whole amount stays unapplied.
    pub fn unbook(&mut self, payment_id: &str) -> Result<(), MoneyError> {
        let Some(p) = self.payments.get(payment_id).cloned() else { return Ok(()) };
        for a in &p.applications {
            if let Some(item) = self.invoices.get_mut(&a.invoice_id) {
                let applied = item.applied.checked_sub(a.amount)?;
                item.change(applied);
            }
        }
        if let Some(rec) = self.payments.get_mut(payment_id) {
            rec.applications.clear();
            rec.unapplied = rec.amount;
            rec.status = PaymentStatus::Refused;
        }
        Ok(())
    }

    /// Open issues.
    pub fn open_issues(&self) -> impl Iterator<Item = &ReceivableIssue> {
        self.issues.iter().filter(|i| i.open)
    }

    /// Overdue invoices on `as_of` (open, past their due date), oldest due first.
    pub fn overdue(&self, as_of: NaiveDate) -> Vec<&OpenItem> {
        let mut v: Vec<&OpenItem> = self.invoices.values().filter(|i| i.open().is_positive() && i.due_date < as_of).collect();
        v.sort_by(|a, b| (a.due_date, &a.number).cmp(&(b.due_date, &b.number)));
        v
    }

    /// Open balance per currency code.
    pub fn balance(&self) -> BTreeMap<&'static str, Decimal> {
        let mut out: BTreeMap<&'static str, Decimal> = BTreeMap::new();
        for i in self.invoices.values() {
            *out.entry(i.total.currency.code()).or_default() += i.open().amount;
        }
        out
    }

    /// DSO per currency on `as_of` (count-back, see the module docs) of these receivables
    /// together: their open balance against what they invoiced per month up to `as_of`.
    pub fn dso_of(all: &[&Receivables], as_of: NaiveDate) -> BTreeMap<&'static str, Decimal> {
        let mut balance: BTreeMap<&'static str, Decimal> = BTreeMap::new();
        let mut invoiced: BTreeMap<&'static str, BTreeMap<NaiveDate, Decimal>> = BTreeMap::new();
        for r in all {
            for i in r.invoices.values().filter(|i| i.issue_date <= as_of) {
                *balance.entry(i.total.currency.code()).or_default() += i.open().amount;
            }
            for (code, days) in r.invoiced_by_day().iter() {
                let Ok(cur) = Currency::parse(code).map(Currency::code) else { continue };
                for (day, amount) in days.range(..=as_of) {
                    balance.entry(cur).or_default();
                    let month = day.with_day(1).unwrap_or(*day);
                    *invoiced.entry(cur).or_default().entry(month).or_default() += *amount;
                }
            }
        }
        balance.into_iter().map(|(cur, open)| (cur, dso_count_back(open, as_of, invoiced.get(cur).unwrap_or(&BTreeMap::new())))).collect()
    }

    /// Open amounts (credit notes negative) by ageing bucket on `as_of`, per currency code.
    pub fn ageing(&self, as_of: NaiveDate) -> BTreeMap<&'static str, [Decimal; 5]> {
        let mut out: BTreeMap<&'static str, [Decimal; 5]> = BTreeMap::new();
        // Credit notes (negative open amounts) age too, so the buckets add up to the balance.
        for i in self.invoices.values().filter(|i| !i.open().amount.is_zero()) {
            let late = (as_of - i.due_date).num_days();
            let bucket = match late {
                d if d <= 0 => 0,
                1..=30 => 1,
                31..=60 => 2,
                61..=90 => 3,
                _ => 4,
            };
            out.entry(i.total.currency.code()).or_insert([Decimal::ZERO; 5])[bucket] += i.open().amount;
        }
        out
    }
}

/// A cash receipt as the ERP books it (create-or-get on the payment id).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CashReceipt {
    /// Payment id (the ERP's external id of the receipt).
    pub payment_id: String,
    /// Receiving legal entity.
    pub legal_entity_id: String,
    /// ERP customer number (`None`: an unidentified receipt in suspense).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub erp_customer_id: Option<String>,
    /// Amount.
    pub amount: Money,
    /// Value date.
    pub value_date: NaiveDate,
    /// Applications to invoice numbers.
    pub applications: Vec<Application>,
    /// Left on account (unapplied).
    pub unapplied: Money,
    /// Set on a reversal: the receipt it reverses.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reverses: Option<String>,
}

/// An invoice as the CRM shows it on the account and the opportunity (upserted by its
/// number; a version older than the one the CRM holds is ignored).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CrmInvoice {
    /// Invoice number (the CRM record's external id).
    pub number: String,
    /// o2c invoice id.
    pub invoice_id: String,
    /// The CRM account (the customer).
    pub account_id: String,
    /// The opportunity the engagement came from.
    pub opportunity_id: String,
    /// Issuing legal entity.
    pub legal_entity_id: String,
    /// `open`, `partially_paid`, `paid` or `credit`.
    pub status: String,
    /// Total including tax.
    pub total: Money,
    /// Open balance.
    pub open_balance: Money,
    /// Issue date.
    pub issue_date: NaiveDate,
    /// Due date.
    pub due_date: NaiveDate,
    /// The open item's version (monotonic).
    pub version: u64,
}

impl CrmInvoice {
    /// The CRM record of `item`, a posted invoice of `customer_id`.
    pub fn of(item: &OpenItem, legal_entity_id: &str, customer_id: &str) -> Self {
        let eng = item.engagement_id.to_string();
        Self {
            number: item.number.clone(),
            invoice_id: item.invoice_id.clone(),
            account_id: customer_id.to_owned(),
            opportunity_id: eng.strip_prefix("ENG-").unwrap_or(&eng).to_owned(),
            legal_entity_id: legal_entity_id.to_owned(),
            status: item.status().to_owned(),
            total: item.total,
            open_balance: item.open(),
            issue_date: item.issue_date,
            due_date: item.due_date,
            version: item.version,
        }
    }
}

/// The ageing buckets' names.
pub const AGEING_BUCKETS: [&str; 5] = ["current", "1-30", "31-60", "61-90", "90+"];

fn currency_exception(amount: Money, items: &[&OpenItem]) -> String {
    let numbers: Vec<&str> = items.iter().map(|i| i.number.as_str()).collect();
    let currencies: Vec<String> = items.iter().map(|i| i.total.currency.to_string()).collect();
    format!(
        "payment of {amount} would pay {} in {}: no exchange rate is guessed; the cash stays unapplied for an operator",
        numbers.join(", "),
        currencies.join("/")
    )
}

/// Invoice numbers quoted in remittance text: tokens shaped like `<entity>-<6 digits>`.
pub fn references_in(text: &str) -> Vec<String> {
    text.split(|c: char| c.is_whitespace() || matches!(c, ',' | ';' | '/' | ':' | '(' | ')'))
        .filter(|t| {
            let Some((prefix, digits)) = t.rsplit_once('-') else { return false };
            prefix.starts_with("LE-") && digits.len() == 6 && digits.chars().all(|c| c.is_ascii_digit())
        })
        .map(str::to_owned)
        .collect()
}

/// DSO on `as_of` by the count-back method (module docs): `balance` open on that day,
/// `invoiced` the totals invoiced per calendar month (first day of the month → amount).
pub fn dso_count_back(balance: Decimal, as_of: NaiveDate, invoiced: &BTreeMap<NaiveDate, Decimal>) -> Decimal {
    let mut rest = balance;
    let mut days = Decimal::ZERO;
    let mut month = as_of.with_day(1).unwrap_or(as_of);
    // The current month counts up to `as_of`.
    let mut span = Decimal::from(as_of.day());
    let first = invoiced.keys().next().copied().unwrap_or(month);
    while month >= first {
        if rest <= Decimal::ZERO {
            break;
        }
        // A month of net credits invoiced nothing (it never adds to the balance to cover).
        let billed = invoiced.get(&month).copied().unwrap_or_default().max(Decimal::ZERO);
        if billed > Decimal::ZERO && rest <= billed {
            days += rest / billed * span;
            break;
        }
        days += span;
        rest -= billed;
        let Some(prev) = month.pred_opt().and_then(|d| d.with_day(1)) else { break };
        span = Decimal::from((month - prev).num_days());
        month = prev;
    }
    days.round_dp_with_strategy(2, rust_decimal::RoundingStrategy::MidpointAwayFromZero)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use rust_decimal_macros::dec;

    fn d(s: &str) -> NaiveDate {
        NaiveDate::parse_from_str(s, "%Y-%m-%d").unwrap()
    }

    fn sgd(a: Decimal) -> Money {
        Money::new(a, Currency::parse("SGD").unwrap())
    }

    #[test]
    fn when_dso_is_counted_back_should_match_the_worked_examples() {
        let invoiced: BTreeMap<NaiveDate, Decimal> =
            [(d("2027-01-01"), dec!(60000)), (d("2027-02-01"), dec!(80000)), (d("2027-03-01"), dec!(100000))].into_iter().collect();
        // 31 March, 150,000 open: March's 100,000 is covered whole (31 days, 50,000 left);
        // February covers the rest: 50,000 / 80,000 × 28 days = 17.5. DSO = 31 + 17.5.
        assert_eq!(dso_count_back(dec!(150000), d("2027-03-31"), &invoiced), dec!(48.50));
        // 15 March, 30,000 open: March counts its first 15 days; 30,000 / 100,000 × 15 = 4.5.
        assert_eq!(dso_count_back(dec!(30000), d("2027-03-15"), &invoiced), dec!(4.50));
        // 31 March, 100,000 open: exactly March (31 days).
        assert_eq!(dso_count_back(dec!(100000), d("2027-03-31"), &invoiced), dec!(31.00));
        // 31 March, 300,000 open, more than all 240,000 on record: every month on record,
        // 31 + 28 + 31 = 90 days.
        assert_eq!(dso_count_back(dec!(300000), d("2027-03-31"), &invoiced), dec!(90.00));
        // 31 March, 70,000 open: 70,000 / 100,000 × 31 = 21.7.
        assert_eq!(dso_count_back(dec!(70000), d("2027-03-31"), &invoiced), dec!(21.70));
        // Nothing open: 0.
        assert_eq!(dso_count_back(Decimal::ZERO, d("2027-03-31"), &invoiced), Decimal::ZERO);
    }

    fn item(id: &str, number: &str, due: &str, total: Decimal) -> OpenItem {
        OpenItem {
            invoice_id: id.into(),
            number: number.into(),
            engagement_id: EngagementId::new("ENG-1"),
            issue_date: d(due) - chrono::Duration::days(30),
            due_date: d(due),
            total: sgd(total),
            applied: sgd(Decimal::ZERO),
            version: 1,
        }
    }

    #[test]
    fn when_a_remittance_quotes_an_invoice_twice_should_apply_it_once_up_to_its_open_amount() {
        let mut r = Receivables::new("LE-SG-01", "CUST-1");
        r.post(item("I1", "LE-SG-01-000001", "2027-02-01", dec!(100.00)));
        let refs = vec!["LE-SG-01-000001".to_owned(), "LE-SG-01-000001".to_owned()];
        let a = r.apply("P1", sgd(dec!(250.00)), d("2027-02-02"), &refs, &[], CashRule::OldestFirst).unwrap();
        assert_eq!(a.record.applications.len(), 1);
        assert_eq!(a.record.applications[0].amount, sgd(dec!(100.00)));
        assert_eq!(a.record.unapplied, sgd(dec!(150.00)));
    }

    /// Three invoices, one paid in full and one in part by booked payments.
    fn paid_in_part() -> Receivables {
        let mut r = Receivables::new("LE-SG-01", "CUST-1");
        r.post(item("I1", "LE-SG-01-000001", "2027-02-01", dec!(100.00)));
        r.post(item("I2", "LE-SG-01-000002", "2027-03-01", dec!(200.00)));
        r.post(item("I3", "LE-SG-01-000003", "2027-03-15", dec!(300.00)));
        for (id, amount) in [("P1", dec!(100.00)), ("P2", dec!(50.00))] {
            let a = r.apply(id, sgd(amount), d("2027-03-20"), &[], &[], CashRule::OldestFirst).unwrap();
            r.record(&a).unwrap();
            r.payments.get_mut(id).unwrap().status = PaymentStatus::Booked;
        }
        r
    }

    #[test]
    fn when_what_is_closed_settles_out_should_keep_balance_ageing_dso_and_history_the_same() {
        let whole = paid_in_part();
        let mut open = whole.clone();
        let (invoices, payments) = open.settle(|_| true);
        assert_eq!(invoices.iter().map(|i| i.number.as_str()).collect::<Vec<_>>(), ["LE-SG-01-000001"]);
        assert_eq!(payments.iter().map(|p| p.payment_id.as_str()).collect::<Vec<_>>(), ["P1", "P2"], "both applied in full");
        assert_eq!(open.invoices.len(), 2);
        assert!(open.payments.is_empty());
        let as_of = d("2027-04-30");
        assert_eq!(open.balance(), whole.balance());
        assert_eq!(open.ageing(as_of), whole.ageing(as_of));
        assert_eq!(Receivables::dso_of(&[&open], as_of), Receivables::dso_of(&[&whole], as_of));
        assert_eq!(Receivables::dso_of(&[&open], d("2027-02-10")), Receivables::dso_of(&[&whole], d("2027-02-10")));
        assert_eq!(open.clone().with_settled(invoices, payments), whole);
        // Only what `may` allows moves; the rest waits for a later write.
        let mut partly = whole.clone();
        let (invoices, payments) = partly.settle(|s| matches!(s, Settled::Payment(p) if p.payment_id == "P2"));
        assert!(invoices.is_empty() && payments.len() == 1 && partly.invoices.len() == 3 && partly.payments.contains_key("P1"));
    }

    #[test]
    fn when_a_payment_is_pending_should_stay_and_when_booked_with_cash_left_should_leave_only_its_credit() {
        let mut r = paid_in_part();
        let a = r.apply("P3", sgd(dec!(1000.00)), d("2027-03-21"), &[], &[], CashRule::OldestFirst).unwrap();
        r.record(&a).unwrap();
        let (_, payments) = r.clone().settle(|_| true);
        assert!(!payments.iter().any(|p| p.payment_id == "P3"), "pending: still being booked");
        r.payments.get_mut("P3").unwrap().status = PaymentStatus::Booked;
        let whole = r.clone();
        let (invoices, payments) = r.settle(|_| true);
        assert_eq!(invoices.len(), 3, "every invoice paid now");
        assert!(payments.iter().any(|p| p.payment_id == "P3") && r.payments.is_empty());
        assert_eq!(r.credits.get("P3"), Some(&sgd(dec!(550.00))), "P3's unapplied cash stays as the customer's credit");
        assert_eq!(r.unapplied(), whole.unapplied());
        // Put back (a report, or a reversal), the payment carries its credit again: counted once.
        let back = r.with_settled(invoices, payments);
        assert!(back.credits.is_empty());
        assert_eq!(back.unapplied(), whole.unapplied());
    }

    #[test]
    fn when_a_payment_still_being_booked_applies_to_a_paid_invoice_should_keep_the_invoice_until_it_is_booked() {
        let mut r = Receivables::new("LE-SG-01", "CUST-1");
        r.post(item("I1", "LE-SG-01-000001", "2027-02-01", dec!(100.00)));
        for (id, amount) in [("P1", dec!(60.00)), ("P2", dec!(40.00))] {
            let a = r.apply(id, sgd(amount), d("2027-02-02"), &[], &[], CashRule::OldestFirst).unwrap();
            r.record(&a).unwrap();
        }
        // P1 is booked, P2 still pending: I1 is paid but stays, so a refusal of P2 re-opens it.
        r.payments.get_mut("P1").unwrap().status = PaymentStatus::Booked;
        let (invoices, payments) = r.settle(|_| true);
        assert!(invoices.is_empty() && payments.len() == 1, "{invoices:?}");
        r.unbook("P2").unwrap();
        assert_eq!(r.invoices["I1"].open(), sgd(dec!(40.00)), "P2's 40 came off again");
        assert_eq!(r.balance()["SGD"] + r.unapplied()["SGD"], dec!(80.00), "100 invoiced - 60 applied + 40 unapplied");
    }

    #[test]
    fn when_a_remittance_quotes_a_settled_invoice_should_match_by_remittance_and_leave_the_cash_unapplied() {
        let mut r = paid_in_part();
        let (invoices, _) = r.settle(|_| true);
        let refs = vec!["LE-SG-01-000001".to_owned()];
        let settled: Vec<&OpenItem> = invoices.iter().collect();
        let a = r.apply("P9", sgd(dec!(100.00)), d("2027-04-01"), &refs, &settled, CashRule::OldestFirst).unwrap();
        assert_eq!((a.record.rule, a.record.applications.len(), a.record.unapplied), (MatchRule::Remittance, 0, sgd(dec!(100.00))));
        // Without it the cash would have paid the oldest open invoice instead.
        let b = r.apply("P9", sgd(dec!(100.00)), d("2027-04-01"), &refs, &[], CashRule::OldestFirst).unwrap();
        assert_eq!(b.record.rule, MatchRule::OldestFirst);
    }

    #[test]
    fn when_receivables_were_stored_before_invoiced_existed_should_count_dso_from_their_invoices() {
        let whole = paid_in_part();
        let mut stored = serde_json::to_value(&whole).unwrap();
        stored.as_object_mut().unwrap().remove("invoiced");
        let mut legacy: Receivables = serde_json::from_value(stored).unwrap();
        assert!(legacy.invoiced.is_empty());
        let as_of = d("2027-04-30");
        assert_eq!(Receivables::dso_of(&[&legacy], as_of), Receivables::dso_of(&[&whole], as_of));
        legacy.settle(|_| true);
        assert_eq!(legacy.invoiced, whole.invoiced, "counted once before anything settles out");
        assert_eq!(Receivables::dso_of(&[&legacy], as_of), Receivables::dso_of(&[&whole], as_of));
    }

    #[test]
    fn when_invoices_age_should_bucket_open_amounts_by_days_past_due() {
        let mut r = Receivables::new("LE-SG-01", "CUST-1");
        r.post(item("I1", "N1", "2027-03-31", dec!(10)));
        r.post(item("I2", "N2", "2027-03-01", dec!(20)));
        r.post(item("I3", "N3", "2027-01-30", dec!(30)));
        r.post(item("I4", "N4", "2026-12-31", dec!(40)));
        r.post(item("I5", "N5", "2026-10-01", dec!(50)));
        let a = r.ageing(d("2027-03-31"));
        // 0, 30, 60, 90 and 181 days past due.
        assert_eq!(a["SGD"], [dec!(10), dec!(20), dec!(30), dec!(40), dec!(50)]);
        assert_eq!(r.overdue(d("2027-03-31")).len(), 4);
    }
}
