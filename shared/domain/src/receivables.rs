//! Receivables: a customer's open invoices at one legal entity, the payments received and how
//! each was applied, unapplied cash; cash application (matching a payment to invoices);
//! ageing and DSO.
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
        }
    }

    /// Raises an issue (once per payment and message).
    pub fn raise(&mut self, issue: ReceivableIssue) {
        if !self.issues.iter().any(|i| i.payment_id == issue.payment_id && i.message == issue.message) {
            self.issues.push(issue);
        }
    }

    /// Records a posted invoice (idempotent by invoice id).
    pub fn post(&mut self, item: OpenItem) {
        self.invoices.entry(item.invoice_id.clone()).or_insert(item);
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
        out
    }

    /// Decides how `payment_id` of `amount` applies (see the module rules) — pure; call
    /// [`Receivables::record`] to keep it.
    pub fn apply(
        &self,
        payment_id: &str,
        amount: Money,
        value_date: NaiveDate,
        references: &[String],
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
        for item in references.iter().filter_map(|r| self.invoices.values().find(|i| &i.number == r)) {
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
                let cur = i.total.currency.code();
                *balance.entry(cur).or_default() += i.open().amount;
                let month = i.issue_date.with_day(1).unwrap_or(i.issue_date);
                *invoiced.entry(cur).or_default().entry(month).or_default() += i.total.amount;
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
        let a = r.apply("P1", sgd(dec!(250.00)), d("2027-02-02"), &refs, CashRule::OldestFirst).unwrap();
        assert_eq!(a.record.applications.len(), 1);
        assert_eq!(a.record.applications[0].amount, sgd(dec!(100.00)));
        assert_eq!(a.record.unapplied, sgd(dec!(150.00)));
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
