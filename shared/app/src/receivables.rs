//! Receivables with their history, for reports (CLI, console, status, the simulation's
//! checks): a customer's receivables aggregate holds only what is open, and what settled
//! rests on its invoice and payment references (see `o2c_domain::receivables`). This reads
//! all three of a legal entity and puts each customer's history back together. It reads
//! every reference of the legal entity: a report's cost, never a step's.

use std::collections::BTreeMap;

use o2c_domain::aggregate::{AggregateBody, AggregateKind};
use o2c_domain::receivables::{OpenItem, PaymentRecord, Receivables};

use crate::error::O2cError;
use crate::ports::EngagementStore;

/// Every customer's receivables at `legal_entity_id` (or only `customer`'s), with what
/// settled put back, ordered by customer.
pub async fn history<S: EngagementStore>(store: &S, legal_entity_id: &str, customer: Option<&str>) -> Result<Vec<Receivables>, O2cError> {
    let wanted = |c: &str| customer.is_none_or(|w| w == c);
    let mut open: BTreeMap<String, Receivables> = BTreeMap::new();
    for r in store.load_all(AggregateKind::Receivables, legal_entity_id).await?.all_receivables() {
        if wanted(&r.customer_id) {
            open.insert(r.customer_id.clone(), r.clone());
        }
    }
    let mut invoices: BTreeMap<String, Vec<OpenItem>> = BTreeMap::new();
    for a in store.load_all(AggregateKind::InvoiceRef, legal_entity_id).await?.items {
        if let AggregateBody::InvoiceRef(r) = a.body
            && let Some(item) = r.settled
            && wanted(&r.customer_id)
        {
            invoices.entry(r.customer_id).or_default().push(item);
        }
    }
    let mut payments: BTreeMap<String, Vec<PaymentRecord>> = BTreeMap::new();
    for a in store.load_all(AggregateKind::PaymentRef, legal_entity_id).await?.items {
        if let AggregateBody::PaymentRef(r) = a.body
            && let Some(record) = r.settled
            && wanted(&r.customer_id)
        {
            payments.entry(r.customer_id).or_default().push(record);
        }
    }
    // A customer always has its aggregate once anything settled out of it; a bare one is
    // made anyway, so nothing settled is ever left out of a report.
    for customer in invoices.keys().chain(payments.keys()) {
        open.entry(customer.clone()).or_insert_with(|| Receivables::new(legal_entity_id, customer));
    }
    Ok(open
        .into_iter()
        .map(|(c, r)| r.with_settled(invoices.remove(&c).unwrap_or_default(), payments.remove(&c).unwrap_or_default()))
        .collect())
}
