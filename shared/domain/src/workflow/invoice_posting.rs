//! Invoice posting: a released invoice takes the next number of its legal entity and is
//! posted to the ERP by create-or-get on that number.
//!
//! Numbers are gapless per legal entity and never reused: the number is taken from the
//! entity's counter **in the same write that reserves the event** (the plan's claim), so it
//! is durable before the ERP sees it. A crash after the ERP call finds the number on the
//! invoice and posts it again — the ERP answers with the document it already holds. A
//! refusal keeps the number (the invoice is `posting_failed`, an exception says why);
//! releasing the invoice again after the fix reposts it under the same number. A posted
//! invoice opens in its customer's receivables, and its number points at them (cash
//! application finds the customer of a remittance that quotes it).

use crate::aggregate::{AggregateBody, AggregateKey, InvoiceRef, Load};
use crate::engagement::Action;
use crate::events::{BusinessEvent, EventType, ExceptionKind, InvoicePosted, InvoiceReleased, Issue};
use crate::ids::ExceptionId;
use crate::invoicing::{InvoiceCounter, InvoiceStatus, Ledger};
use crate::money::Money;
use crate::receivables::{OpenItem, Receivables};

use super::{
    Command, CommandResult, Decision, Input, Next, Outcome, Plan, Purpose, Sequence, Stake, StepContext, StepError, WorkflowStep,
    close_exception, decision, planned_on, raise_or_refresh, step_meta, with_engagement,
};

/// The invoice-posting step.
pub struct InvoicePosting;

impl WorkflowStep for InvoicePosting {
    step_meta!(InvoicePosting, [InvoiceReleased]);

    fn loads(&self, event: &BusinessEvent) -> Vec<Load> {
        let eng = event.engagement_id();
        let Some(r) = released(event) else { return Vec::new() };
        vec![
            Load::Key(AggregateKey::invoice(&eng, &r.invoice_id)),
            Load::Key(AggregateKey::ledger(&eng)),
            Load::Key(AggregateKey::invoice_counter(&r.legal_entity_id)),
            Load::Key(AggregateKey::receivables(&r.legal_entity_id, &r.customer_id)),
        ]
    }

    fn decide(&self, input: &Input<'_>, ctx: &StepContext<'_>) -> Result<Next, StepError> {
        let Some(r) = released(input.event) else {
            return Err(StepError::NotConsumed(self.step(), input.event.event_type().detail_type()));
        };
        let eng_id = input.event.engagement_id();
        let Some(invoice) = input.others.invoice(&r.invoice_id) else {
            return Err(StepError::Rejected(vec![Issue::new(
                "invoice_id",
                "unknown_invoice",
                format!("engagement {eng_id} has no invoice {}", r.invoice_id),
            )]));
        };
        match invoice.status {
            InvoiceStatus::Approved | InvoiceStatus::PostingFailed => {}
            other => {
                let action = if other == InvoiceStatus::Posted { Action::InvoiceAlreadyPosted } else { Action::InvoiceDecisionIgnored };
                return Ok(Next::Done(Decision::unchanged(
                    ctx,
                    &eng_id,
                    action,
                    format!("{} is {}: nothing to post", invoice.invoice_id, other.as_str()),
                )));
            }
        }
        if invoice.legal_entity_id != r.legal_entity_id {
            return Err(StepError::Rejected(vec![Issue::new(
                "legal_entity_id",
                "legal_entity_mismatch",
                format!("{} is issued by {}, not {}", invoice.invoice_id, invoice.legal_entity_id, r.legal_entity_id),
            )]));
        }
        let mut invoice = invoice.clone();
        let mut plan = Plan::new(Purpose::PostInvoice, Vec::new(), Sequence::StopOnFailure);
        if invoice.number.is_none() {
            let last = input.others.invoice_counter(&invoice.legal_entity_id).map_or(0, |c| c.last);
            let counter = InvoiceCounter { legal_entity_id: invoice.legal_entity_id.clone(), last: last + 1 };
            invoice.number = Some(InvoiceCounter::format(&counter.legal_entity_id, counter.last));
            plan.claim_others = vec![AggregateBody::InvoiceCounter(counter), AggregateBody::Invoice(invoice.clone())];
        }
        plan.commands = vec![Command::PostInvoice(invoice)];
        Ok(Next::Run(plan))
    }

    fn finalize(&self, done: &Outcome<'_>, ctx: &StepContext<'_>) -> Result<Next, StepError> {
        let posted = match done.plan.commands.first() {
            Some(Command::PostInvoice(doc)) => doc,
            _ => return Err(StepError::UnexpectedResults(self.step(), "no invoice in the plan".into())),
        };
        let eng = planned_on(done, self.step()).ok();
        let eng_id = done.event.engagement_id();
        let Some(current) = done.others.invoice(&posted.invoice_id) else {
            return Err(StepError::UnexpectedResults(self.step(), format!("{} vanished", posted.invoice_id)));
        };
        if current.number != posted.number {
            // Cannot happen while numbers are only taken under the event's reservation.
            return Err(StepError::UnexpectedResults(
                self.step(),
                format!("{} carries number {:?}, the ERP was sent {:?}", posted.invoice_id, current.number, posted.number),
            ));
        }
        if current.status == InvoiceStatus::Posted {
            return Ok(Next::Done(Decision::unchanged(
                ctx,
                &eng_id,
                Action::InvoiceAlreadyPosted,
                format!("{} posted meanwhile", posted.invoice_id),
            )));
        }
        let receivables_key = AggregateKey::receivables(&current.legal_entity_id, &current.customer_id);
        if !done.others.asked(&receivables_key) {
            return Ok(Next::Need(vec![Load::Key(receivables_key)]));
        }
        let mut invoice = current.clone();
        let number = invoice.number.clone().unwrap_or_default();
        let mut ledger = done.others.ledger(&eng_id).cloned().unwrap_or_else(|| Ledger::new(eng_id.clone()));
        let exception_id = ExceptionId::invoice_posting(&eng_id, &invoice.invoice_id);
        match done.results {
            [CommandResult::Object(o)] => {
                invoice.status = InvoiceStatus::Posted;
                invoice.erp_invoice_id = Some(o.id.clone());
                ledger.open_invoices.remove(&invoice.invoice_id);
                let event = ctx.emit(
                    EventType::InvoicePosted,
                    &eng_id,
                    format!("invoice-posted:{}", invoice.invoice_id),
                    &InvoicePosted {
                        engagement_id: eng_id.clone(),
                        invoice_id: invoice.invoice_id.clone(),
                        number: number.clone(),
                        erp_invoice_id: o.id.clone(),
                        legal_entity_id: invoice.legal_entity_id.clone(),
                        customer_id: invoice.customer_id.clone(),
                        currency: invoice.currency,
                        lines: posted_lines(&invoice.lines),
                        subtotal: invoice.subtotal,
                        tax_total: invoice.tax_total,
                        total: invoice.total,
                        posted_on: invoice.issue_date,
                        due_date: invoice.due_date,
                    },
                );
                let summary = format!("{} posted as {number} (ERP {}), total {}", invoice.invoice_id, o.id, invoice.total);
                let base = with_engagement(eng, |e| close_exception(e, &exception_id, ctx.now, &format!("posted as {number}")));
                // The customer's receivables hold it from now on (open until cash pays it), and
                // its number points at them (a remittance quoting it finds the customer).
                let mut receivables = done
                    .others
                    .receivables(&invoice.legal_entity_id, &invoice.customer_id)
                    .cloned()
                    .unwrap_or_else(|| Receivables::new(&invoice.legal_entity_id, &invoice.customer_id));
                receivables.post(OpenItem {
                    invoice_id: invoice.invoice_id.clone(),
                    number: number.clone(),
                    engagement_id: eng_id.clone(),
                    issue_date: invoice.issue_date,
                    due_date: invoice.due_date,
                    total: invoice.total,
                    applied: Money::zero(invoice.currency),
                    version: 1,
                });
                let reference = InvoiceRef {
                    legal_entity_id: invoice.legal_entity_id.clone(),
                    number: number.clone(),
                    customer_id: invoice.customer_id.clone(),
                    invoice_id: invoice.invoice_id.clone(),
                    settled: None,
                };
                let mut d = decision(ctx, &eng_id, base, vec![event], Action::InvoicePosted, summary);
                d = d
                    .with(AggregateBody::Invoice(invoice))
                    .with(AggregateBody::Ledger(ledger))
                    .with(AggregateBody::Receivables(receivables))
                    .with(AggregateBody::InvoiceRef(reference));
                Ok(Next::Done(d))
            }
            [CommandResult::Refused(r)] => {
                invoice.status = InvoiceStatus::PostingFailed;
                ledger.open_invoices.remove(&invoice.invoice_id);
                let message = format!(
                    "the ERP refused invoice {number} ({}): {}; it keeps its number — fix and release it again",
                    invoice.invoice_id,
                    r.reason()
                );
                let mut events = Vec::new();
                let base = with_engagement(eng, |e| {
                    // Who asked for the run and who approved the invoice.
                    let caused_by = std::iter::once(invoice.requested_by.clone())
                        .chain(invoice.approvals.iter().filter(|a| a.refused.is_none()).map(|a| a.user_id.clone()))
                        .collect();
                    let stake = Stake { amount: Some(invoice.total), caused_by };
                    events.extend(raise_or_refresh(
                        e,
                        ctx,
                        exception_id.clone(),
                        ExceptionKind::InvoicePostingFailed,
                        message.clone(),
                        stake,
                    ));
                    !events.is_empty()
                });
                let mut d = decision(ctx, &eng_id, base, events, Action::InvoicePostingFailed, message);
                d = d.with(AggregateBody::Invoice(invoice)).with(AggregateBody::Ledger(ledger));
                Ok(Next::Done(d))
            }
            other => Err(StepError::UnexpectedResults(self.step(), format!("{other:?}"))),
        }
    }
}

/// The lines as `InvoicePosted` carries them: without the entry ids behind each line (the
/// invoice item keeps them), so a long engagement's invoice stays far below EventBridge's
/// 256 KB entry limit.
fn posted_lines(lines: &[crate::invoicing::Line]) -> Vec<crate::invoicing::Line> {
    lines
        .iter()
        .map(|l| {
            let mut l = l.clone();
            if let crate::invoicing::LineSource::Entries { entry_ids } = &mut l.source {
                entry_ids.clear();
            }
            l
        })
        .collect()
}

fn released(event: &BusinessEvent) -> Option<&InvoiceReleased> {
    match event {
        BusinessEvent::InvoiceReleased(e) => Some(&e.payload),
        _ => None,
    }
}
