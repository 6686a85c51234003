//! CRM invoice sync: a posted invoice, and every payment or return that changes what is open
//! on it, is written to the CRM as an invoice record on the customer's account and the
//! opportunity (status, total, open balance, due date) — upserted by the invoice number.
//!
//! Each record carries the open item's version (raised on every change of what is applied),
//! and the CRM keeps the newest: events may arrive in any order and more than once, and the
//! CRM still ends with the latest state. The record is built from the receivables as they
//! are when the event is handled, not from the event, so a late event never writes an older
//! balance. The account's open balance is the CRM's roll-up of its invoice records. An
//! invoice paid in full may have settled out of the receivables onto its invoice reference
//! (loaded with them): it is read there.

use crate::aggregate::{AggregateKey, Load};
use crate::engagement::Action;
use crate::events::{BusinessEvent, Issue};
use crate::receivables::CrmInvoice;

use super::{
    Command, CommandResult, CrmWrite, Decision, Input, Next, Outcome, Plan, Purpose, Sequence, StepContext, StepError, WorkflowStep,
    step_meta,
};

/// The CRM invoice-sync step.
pub struct CrmInvoiceSync;

/// Legal entity, customer, and the invoices (id, number) an event concerns.
type Concerned<'a> = (&'a str, &'a str, Vec<(&'a str, &'a str)>);

/// The receivables an event concerns and the invoices in them.
fn concerned(event: &BusinessEvent) -> Option<Concerned<'_>> {
    match event {
        BusinessEvent::InvoicePosted(e) => {
            let p = &e.payload;
            Some((&p.legal_entity_id, &p.customer_id, vec![(p.invoice_id.as_str(), p.number.as_str())]))
        }
        BusinessEvent::PaymentApplied(e) => {
            let p = &e.payload;
            Some((&p.legal_entity_id, &p.customer_id, p.applications.iter().map(|a| (a.invoice_id.as_str(), a.number.as_str())).collect()))
        }
        BusinessEvent::PaymentReversed(e) => {
            let p = &e.payload;
            Some((&p.legal_entity_id, &p.customer_id, p.reopened.iter().map(|a| (a.invoice_id.as_str(), a.number.as_str())).collect()))
        }
        _ => None,
    }
}

impl WorkflowStep for CrmInvoiceSync {
    step_meta!(CrmInvoiceSync, [InvoicePosted, PaymentApplied, PaymentReversed]);

    fn loads(&self, event: &BusinessEvent) -> Vec<Load> {
        let Some((le, customer, invoices)) = concerned(event) else { return Vec::new() };
        let mut loads = vec![Load::Key(AggregateKey::receivables(le, customer))];
        for (_, number) in invoices {
            let key = Load::Key(AggregateKey::invoice_ref(le, number));
            if !loads.contains(&key) {
                loads.push(key);
            }
        }
        loads
    }

    fn decide(&self, input: &Input<'_>, ctx: &StepContext<'_>) -> Result<Next, StepError> {
        let Some((le, customer, invoices)) = concerned(input.event) else {
            return Err(StepError::NotConsumed(self.step(), input.event.event_type().detail_type()));
        };
        let owner = input.event.engagement_id();
        if invoices.is_empty() {
            return Ok(Next::Done(Decision::unchanged(
                ctx,
                &owner,
                Action::CrmInvoicesUnchanged,
                "no invoice changed: nothing to write to the CRM",
            )));
        }
        let Some(rec) = input.others.receivables(le, customer) else {
            return Err(StepError::NotYet(format!("{customer}'s receivables at {le} are not there yet")));
        };
        let mut commands = Vec::new();
        for (id, number) in invoices {
            let settled = input.others.invoice_ref(le, number).and_then(|r| r.settled.as_ref()).filter(|i| i.invoice_id == id);
            let Some(item) = rec.invoices.get(id).or(settled) else {
                return Err(StepError::NotYet(format!("invoice {id} is not in {customer}'s receivables yet")));
            };
            let record = Command::UpsertCrmInvoice(CrmInvoice::of(item, le, customer));
            if !commands.contains(&record) {
                commands.push(record);
            }
        }
        Ok(Next::Run(Plan::new(Purpose::CrmInvoices, commands, Sequence::All)))
    }

    fn finalize(&self, done: &Outcome<'_>, ctx: &StepContext<'_>) -> Result<Next, StepError> {
        let owner = done.event.engagement_id();
        let mut written = Vec::new();
        let mut refused = Vec::new();
        for (cmd, result) in done.plan.commands.iter().zip(done.results) {
            let Command::UpsertCrmInvoice(inv) = cmd else {
                return Err(StepError::UnexpectedResults(self.step(), format!("{cmd:?}")));
            };
            match result {
                CommandResult::Crm(CrmWrite::Applied) => {
                    written.push(format!("{} {}, open {} (v{})", inv.number, inv.status, inv.open_balance, inv.version))
                }
                CommandResult::Crm(CrmWrite::Stale) => written.push(format!("{} already newer in the CRM", inv.number)),
                CommandResult::Refused(r) => {
                    refused.push(Issue::new("number", "crm_refused", format!("the CRM refused invoice {}: {}", inv.number, r.reason())));
                }
                other => return Err(StepError::UnexpectedResults(self.step(), format!("{other:?}"))),
            }
        }
        if !refused.is_empty() {
            // Parked with every reason; a redrive writes the records again (upserts).
            return Err(StepError::Rejected(refused));
        }
        Ok(Next::Done(Decision::unchanged(ctx, &owner, Action::CrmInvoicesWritten, format!("CRM invoices: {}", written.join("; ")))))
    }
}
