//! Bank events for cash-application tests.

use serde_json::{Value, json};

use crate::envelope;

/// A bank credit.
pub struct Payment {
    /// Bank reference.
    pub id: String,
    /// Receiving legal entity.
    pub legal_entity: String,
    /// Amount.
    pub amount: String,
    /// Currency.
    pub currency: String,
    /// Payer account.
    pub account: Option<String>,
    /// Structured references.
    pub references: Vec<String>,
    /// Remittance text.
    pub remittance: Option<String>,
    /// Reversed payment.
    pub reversal_of: Option<String>,
    /// Value date.
    pub value_date: String,
}

impl Payment {
    /// A credit of `amount` `currency` on `legal_entity`'s account, from an unknown account.
    pub fn new(id: &str, legal_entity: &str, amount: &str, currency: &str) -> Self {
        Self {
            id: id.into(),
            legal_entity: legal_entity.into(),
            amount: amount.into(),
            currency: currency.into(),
            account: None,
            references: Vec::new(),
            remittance: None,
            reversal_of: None,
            value_date: "2027-02-15".into(),
        }
    }

    /// From `account`.
    pub fn from(mut self, account: &str) -> Self {
        self.account = Some(account.into());
        self
    }

    /// Quoting `numbers` as structured references.
    pub fn quoting(mut self, numbers: &[&str]) -> Self {
        self.references = numbers.iter().map(|n| (*n).to_owned()).collect();
        self
    }

    /// With remittance text.
    pub fn remittance(mut self, text: &str) -> Self {
        self.remittance = Some(text.into());
        self
    }

    /// Returning payment `original`.
    pub fn reversing(mut self, original: &str) -> Self {
        self.reversal_of = Some(original.into());
        self
    }

    /// The `PaymentReceived` event, notified under notification id `notification`
    /// (a bank may notify one credit twice under two notification ids).
    pub fn event_as(&self, notification: &str) -> (&'static str, &'static str, Value) {
        let mut payload = json!({
            "payment_id": self.id,
            "legal_entity_id": self.legal_entity,
            "amount": {"amount": self.amount, "currency": self.currency},
            "value_date": self.value_date,
            "payer": {"name": "PAYER"},
            "references": self.references,
        });
        if let Some(a) = &self.account {
            payload["payer"]["account"] = json!(a);
        }
        if let Some(r) = &self.remittance {
            payload["remittance"] = json!(r);
        }
        if let Some(r) = &self.reversal_of {
            payload["reversal_of"] = json!(r);
        }
        let key = format!("bank:{notification}");
        ("o2c.bank", "PaymentReceived", envelope(&key, &format!("corr-bank-{}", self.id), Some(&key), payload))
    }

    /// The `PaymentReceived` event.
    pub fn event(&self) -> (&'static str, &'static str, Value) {
        self.event_as(&self.id)
    }
}
