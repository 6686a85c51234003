//! ERP finance: posted invoices, received payments.

use crate::ids::EngagementId;
use crate::model::Payment;
use crate::money::Money;
use chrono::NaiveDate;
use serde::{Deserialize, Serialize};

/// `InvoicePosted` payload.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct InvoicePosted {
    /// Engagement id.
    pub engagement_id: EngagementId,
    /// o2c invoice key.
    pub invoice_id: String,
    /// ERP document number.
    pub erp_invoice_id: String,
    /// Invoice total including tax.
    pub total: Money,
    /// Tax total.
    pub tax_total: Money,
    /// Posting date.
    pub posted_on: NaiveDate,
    /// Due date.
    pub due_date: NaiveDate,
}

/// `PaymentReceived` payload.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PaymentReceived {
    /// Engagement id.
    pub engagement_id: EngagementId,
    /// The payment.
    pub payment: Payment,
}
