//! Invoicing and finance: invoice runs, approvals, posting, payments.

use chrono::{DateTime, NaiveDate, Utc};
use serde::{Deserialize, Serialize};

use crate::ids::EngagementId;
use crate::invoicing::Line;
use crate::money::{Currency, Money};

/// `InvoiceRunRequested` payload: bill one engagement (on demand), or every engagement
/// whose billing cycle is due (the schedule; fanned out page by page).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct InvoiceRunRequested {
    /// Run id (one per schedule tick or operator request).
    pub run_id: String,
    /// Billing date: the invoices' issue date (and the cut-off, see the invoice run). A
    /// date, or a timestamp whose UTC date is taken (EventBridge Scheduler sends its
    /// scheduled time).
    #[serde(deserialize_with = "date_or_timestamp")]
    pub as_of: NaiveDate,
    /// One engagement, or every due one when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub engagement_id: Option<EngagementId>,
    /// True for the schedule: engagements are billed only when their cycle is due.
    #[serde(default)]
    pub scheduled: bool,
    /// Fan-out paging: engagements after this id.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub after: Option<String>,
    /// Who asked (`scheduler` or an operator's user id).
    pub requested_by: String,
}

pub(crate) fn date_or_timestamp<'de, D: serde::Deserializer<'de>>(d: D) -> Result<NaiveDate, D::Error> {
    let text = String::deserialize(d)?;
    match text.get(..10).map(|day| NaiveDate::parse_from_str(day, "%Y-%m-%d")) {
        Some(Ok(day)) if text.len() == 10 || DateTime::parse_from_rfc3339(&text).is_ok() => {
            Ok(DateTime::parse_from_rfc3339(&text).map(|t| t.with_timezone(&Utc).date_naive()).unwrap_or(day))
        }
        _ => Err(serde::de::Error::custom(format!("`{text}` is neither a date (YYYY-MM-DD) nor an RFC 3339 timestamp"))),
    }
}

/// `InvoiceApprovalRequested` payload.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct InvoiceApprovalRequested {
    /// Engagement.
    pub engagement_id: EngagementId,
    /// Invoice.
    pub invoice_id: String,
    /// Issuing legal entity.
    pub legal_entity_id: String,
    /// Total.
    pub total: Money,
    /// Why approval is needed.
    pub reasons: Vec<String>,
    /// Who asked for the run (may not approve).
    pub requested_by: String,
    /// Authors of adjustments on it (may not approve).
    #[serde(default)]
    pub adjustment_authors: Vec<String>,
}

/// `InvoiceApproved` / `InvoiceRejected` payload: an approver's decision.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct InvoiceDecision {
    /// Engagement.
    pub engagement_id: EngagementId,
    /// Invoice.
    pub invoice_id: String,
    /// The approver's user id.
    pub approver_id: String,
    /// When.
    pub decided_at: DateTime<Utc>,
    /// Comment.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub comment: Option<String>,
}

/// `InvoiceApprovalRefused` payload: a decision refused (role, segregation of duties).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct InvoiceApprovalRefused {
    /// Engagement.
    pub engagement_id: EngagementId,
    /// Invoice.
    pub invoice_id: String,
    /// Who tried.
    pub user_id: String,
    /// `approve` or `reject`.
    pub decision: String,
    /// Why it was refused.
    pub reason: String,
}

/// `InvoiceReleased` payload: approved (or below the threshold), to be posted.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct InvoiceReleased {
    /// Engagement.
    pub engagement_id: EngagementId,
    /// Invoice.
    pub invoice_id: String,
    /// Issuing legal entity (its counter numbers the invoice).
    pub legal_entity_id: String,
    /// Customer (its receivables record the posted invoice).
    pub customer_id: String,
}

/// `InvoicePosted` payload: the invoice as posted in the ERP.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct InvoicePosted {
    /// Engagement id.
    pub engagement_id: EngagementId,
    /// o2c invoice key.
    pub invoice_id: String,
    /// Invoice number (gapless per legal entity).
    pub number: String,
    /// ERP document number.
    pub erp_invoice_id: String,
    /// Issuing legal entity.
    pub legal_entity_id: String,
    /// Customer.
    pub customer_id: String,
    /// Currency.
    pub currency: Currency,
    /// Lines with their tax.
    pub lines: Vec<Line>,
    /// Σ nets.
    pub subtotal: Money,
    /// Tax total.
    pub tax_total: Money,
    /// Invoice total including tax.
    pub total: Money,
    /// Posting (issue) date.
    pub posted_on: NaiveDate,
    /// Due date.
    pub due_date: NaiveDate,
}

/// `ErpInvoicePosted` payload: the ERP reports an invoice posted (or changed) against an
/// engagement — one o2c posted, or one keyed in by hand. A hint, not a fact o2c takes over:
/// the ERP owns invoices, so reconciliation reads the ERP again and compares; an invoice o2c
/// did not issue stays a reconciliation break (double billing) until the ERP voids it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ErpInvoicePosted {
    /// Engagement the ERP files the invoice under (its project or a custom field).
    pub engagement_id: EngagementId,
    /// Which ERP reported it (`netsuite`, `sap_s4hana`, …).
    pub erp: String,
    /// The ERP's document id.
    pub erp_invoice_id: String,
    /// Invoice number (o2c's number for an invoice o2c posted; the ERP's otherwise).
    pub number: String,
    /// o2c's invoice id when the ERP holds one (its external id).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub invoice_id: Option<String>,
    /// Issuing legal entity.
    pub legal_entity_id: String,
    /// ERP customer.
    pub customer_id: String,
    /// Total including tax.
    pub total: Money,
    /// Tax total.
    pub tax_total: Money,
    /// Posting date.
    pub posted_on: NaiveDate,
    /// Due date, when the ERP's document carries it (an S/4HANA billing document has payment
    /// terms; its due date is on the accounting document).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub due_date: Option<NaiveDate>,
}

/// `PaymentReceived` payload: what a bank statement line or a payment platform reports
/// (camt.054 / MT940 / Stripe-like). The invoices it pays are found by matching, not given.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PaymentReceived {
    /// The bank's or platform's reference of the credit (unique per receiving account; the
    /// idempotency key of the payment).
    pub payment_id: String,
    /// The legal entity whose account received it.
    pub legal_entity_id: String,
    /// Amount credited.
    pub amount: Money,
    /// Value date.
    pub value_date: NaiveDate,
    /// Who paid.
    pub payer: Payer,
    /// Unstructured remittance information (may quote invoice numbers).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub remittance: Option<String>,
    /// Structured creditor references (invoice numbers).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub references: Vec<String>,
    /// Set on a returned payment or chargeback: the payment it reverses.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reversal_of: Option<String>,
}

/// The payer of a payment, as the bank reports it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Payer {
    /// Name on the statement.
    pub name: String,
    /// Account (IBAN or account number), when the bank gives it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub account: Option<String>,
}

/// `PaymentApplied` payload: how a payment was applied (and what is left unapplied).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PaymentApplied {
    /// Payment.
    pub payment_id: String,
    /// Receiving legal entity.
    pub legal_entity_id: String,
    /// Customer (or `SUSPENSE`).
    pub customer_id: String,
    /// Amount received.
    pub amount: Money,
    /// How it matched.
    pub rule: crate::receivables::MatchRule,
    /// Applications to invoices.
    pub applications: Vec<AppliedLine>,
    /// Left unapplied (customer credit, or suspense).
    pub unapplied: Money,
    /// The ERP's cash receipt.
    pub erp_receipt_id: String,
}

/// One invoice a payment paid.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AppliedLine {
    /// o2c invoice id.
    pub invoice_id: String,
    /// Invoice number.
    pub number: String,
    /// Its engagement.
    pub engagement_id: EngagementId,
    /// Amount applied.
    pub amount: Money,
    /// Open after this payment.
    pub open_after: Money,
}

/// `PaymentUnapplied` payload: cash that paid no invoice (credit, suspense, or an exception).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PaymentUnapplied {
    /// Payment.
    pub payment_id: String,
    /// Receiving legal entity.
    pub legal_entity_id: String,
    /// Customer (or `SUSPENSE`).
    pub customer_id: String,
    /// Amount left unapplied.
    pub amount: Money,
    /// Why.
    pub reason: String,
}

/// `PaymentReversed` payload: a returned payment or chargeback re-opened what it paid.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PaymentReversed {
    /// The reversal's own id.
    pub payment_id: String,
    /// The payment reversed.
    pub reversed_payment_id: String,
    /// Receiving legal entity.
    pub legal_entity_id: String,
    /// Customer.
    pub customer_id: String,
    /// Invoices re-opened, with the amount taken back.
    pub reopened: Vec<AppliedLine>,
}
