//! Invoice approval: an approver's decision on a draft, under segregation of duties.
//!
//! A decision counts only from a user who holds the `billing_approver` role for the
//! invoice's legal entity (users and roles are reference data) and who is neither the
//! person who requested the run nor the author of an adjustment on the invoice. Any other
//! decision is refused with its reason, kept on the invoice's approvals trail, audited and
//! announced (`InvoiceApprovalRefused`); the invoice keeps waiting.
//!
//! Approved → `InvoiceReleased` (posting numbers and posts it). Rejected → the draft's
//! lines go back to WIP: its entries, milestones and installments are billable again.
//!
//! - An approval of a draft whose entries changed since it was drafted (a correction or a
//!   withdrawal landed while it waited) does not post stale amounts: the draft is withdrawn,
//!   its lines released, and the next run redrafts them.
//! - A rejection of an invoice the ERP refused **voids** it: its number stays on record
//!   (void), its lines go back to WIP and the next run bills them under a new number.
//! - Each decision event counts once: a replay of one already on the trail is ignored,
//!   however late it comes.

use crate::aggregate::{AggregateBody, AggregateKey, AggregateKind, Load};
use crate::engagement::Action;
use crate::events::{BusinessEvent, EventType, InvoiceApprovalRefused, InvoiceDecision, InvoiceReleased, Issue};
use crate::invoicing::{ApprovalRecord, InvoiceDoc, InvoiceStatus, Ledger, release};
use crate::reference::{ROLE_BILLING_APPROVER, ReferenceData};

use super::{Decision, Input, Next, StepContext, StepError, WorkflowStep, step_meta};

/// The invoice-approval step.
pub struct InvoiceApproval;

impl WorkflowStep for InvoiceApproval {
    step_meta!(InvoiceApproval, [InvoiceApproved, InvoiceRejected]);

    fn loads(&self, event: &BusinessEvent) -> Vec<Load> {
        let eng = event.engagement_id();
        let invoice_id = decision_of(event).map(|(d, _)| d.invoice_id.clone()).unwrap_or_default();
        vec![
            Load::Key(AggregateKey::invoice(&eng, &invoice_id)),
            Load::Key(AggregateKey::ledger(&eng)),
            Load::All { kind: AggregateKind::WipShard, owner: eng.to_string() },
        ]
    }

    fn decide(&self, input: &Input<'_>, ctx: &StepContext<'_>) -> Result<Next, StepError> {
        let Some((decision, approve)) = decision_of(input.event) else {
            return Err(StepError::NotConsumed(self.step(), input.event.event_type().detail_type()));
        };
        let eng_id = input.event.engagement_id();
        let Some(invoice) = input.others.invoice(&decision.invoice_id) else {
            return Err(StepError::Rejected(vec![Issue::new(
                "invoice_id",
                "unknown_invoice",
                format!("engagement {eng_id} has no invoice {}", decision.invoice_id),
            )]));
        };
        let verb = if approve { "approve" } else { "reject" };
        if invoice.approvals.iter().any(|a| a.event_id == ctx.meta.event_id) {
            return Ok(Next::Done(Decision::unchanged(
                ctx,
                &eng_id,
                Action::InvoiceDecisionIgnored,
                format!("decision {} on {} was already taken into account", ctx.meta.event_id, invoice.invoice_id),
            )));
        }
        let voiding = !approve && invoice.status == InvoiceStatus::PostingFailed;
        if invoice.status != InvoiceStatus::PendingApproval && !voiding {
            return Ok(Next::Done(Decision::unchanged(
                ctx,
                &eng_id,
                Action::InvoiceDecisionIgnored,
                format!(
                    "{} is {}, not waiting for a decision ({} by {} ignored)",
                    invoice.invoice_id,
                    invoice.status.as_str(),
                    verb,
                    decision.approver_id
                ),
            )));
        }
        let mut invoice = invoice.clone();
        let record = |refused: Option<String>| ApprovalRecord {
            event_id: ctx.meta.event_id.clone(),
            user_id: decision.approver_id.clone(),
            decision: verb.to_owned(),
            at: decision.decided_at,
            refused,
            comment: decision.comment.clone(),
        };
        if let Some(reason) = refusal(&invoice, &decision.approver_id, input.reference) {
            invoice.approvals.push(record(Some(reason.clone())));
            let event = ctx.emit(
                EventType::InvoiceApprovalRefused,
                &eng_id,
                format!("invoice-approval-refused:{}:{}:{}", invoice.invoice_id, decision.approver_id, invoice.approvals.len()),
                &InvoiceApprovalRefused {
                    engagement_id: eng_id.clone(),
                    invoice_id: invoice.invoice_id.clone(),
                    user_id: decision.approver_id.clone(),
                    decision: verb.to_owned(),
                    reason: reason.clone(),
                },
            );
            let summary = format!("{} by {} refused: {reason}", verb, decision.approver_id);
            let mut d = Decision::unchanged(ctx, &eng_id, Action::ApprovalRefused, summary).with(AggregateBody::Invoice(invoice));
            d.events.push(event);
            return Ok(Next::Done(d));
        }
        let shards: Vec<_> = input.others.wip_shards().into_values().collect();
        let stale = stale_entries(&shards, &invoice.invoice_id);
        if approve && !stale.is_empty() {
            // Posting it would bill amounts the PSA has since changed: withdraw and redraft.
            let reason =
                format!("entries changed since the draft ({}): the draft is withdrawn and its lines go back to WIP", stale.join(", "));
            invoice.approvals.push(record(Some(reason.clone())));
            invoice.status = InvoiceStatus::Rejected;
            let event = ctx.emit(
                EventType::InvoiceApprovalRefused,
                &eng_id,
                format!("invoice-approval-refused:{}:stale", invoice.invoice_id),
                &InvoiceApprovalRefused {
                    engagement_id: eng_id.clone(),
                    invoice_id: invoice.invoice_id.clone(),
                    user_id: decision.approver_id.clone(),
                    decision: verb.to_owned(),
                    reason: reason.clone(),
                },
            );
            let mut d = released(
                ctx,
                &eng_id,
                invoice,
                &shards,
                input,
                Action::InvoiceRejected,
                format!("approval of a stale draft refused: {reason}"),
            );
            d.events.push(event);
            return Ok(Next::Done(d));
        }
        invoice.approvals.push(record(None));
        if approve {
            invoice.status = InvoiceStatus::Approved;
            let event = ctx.emit(
                EventType::InvoiceReleased,
                &eng_id,
                format!("invoice-released:{}", invoice.invoice_id),
                &InvoiceReleased {
                    engagement_id: eng_id.clone(),
                    invoice_id: invoice.invoice_id.clone(),
                    legal_entity_id: invoice.legal_entity_id.clone(),
                    customer_id: invoice.customer_id.clone(),
                },
            );
            let summary = format!("{} approved by {} (total {})", invoice.invoice_id, decision.approver_id, invoice.total);
            let mut d = Decision::unchanged(ctx, &eng_id, Action::InvoiceApproved, summary).with(AggregateBody::Invoice(invoice));
            d.events.push(event);
            return Ok(Next::Done(d));
        }
        // Rejected (or voided after an ERP refusal): everything it billed is billable again.
        invoice.status = if voiding { InvoiceStatus::Voided } else { InvoiceStatus::Rejected };
        let summary = format!(
            "{} {} by {}{}; its lines are back in WIP",
            invoice.invoice_id,
            if voiding { format!("(number {}) voided", invoice.number.as_deref().unwrap_or("-")) } else { "rejected".to_owned() },
            decision.approver_id,
            decision.comment.as_deref().map(|c| format!(" ({c})")).unwrap_or_default()
        );
        Ok(Next::Done(released(ctx, &eng_id, invoice, &shards, input, Action::InvoiceRejected, summary)))
    }
}

/// Entries billed by `invoice_id` whose version changed since (in id order).
fn stale_entries(shards: &[&crate::delivery::WipShard], invoice_id: &str) -> Vec<String> {
    shards
        .iter()
        .flat_map(|s| s.entries.values())
        .filter(|e| e.billed.iter().any(|b| b.invoice_id == invoice_id && b.version != e.version))
        .map(|e| e.entry_id.clone())
        .collect()
}

/// The decision writing `invoice` (rejected or voided) with everything it billed released.
fn released(
    ctx: &StepContext<'_>,
    eng_id: &crate::ids::EngagementId,
    invoice: InvoiceDoc,
    shards: &[&crate::delivery::WipShard],
    input: &Input<'_>,
    action: Action,
    summary: String,
) -> Decision {
    let released = release(shards, &invoice.invoice_id);
    let mut ledger = input.others.ledger(eng_id).cloned().unwrap_or_else(|| Ledger::new(eng_id.clone()));
    ledger.release(&invoice.invoice_id);
    let mut d = Decision::unchanged(ctx, eng_id, action, summary).with(AggregateBody::Invoice(invoice)).with(AggregateBody::Ledger(ledger));
    for s in released {
        d = d.with(AggregateBody::WipShard(s));
    }
    d
}

fn decision_of(event: &BusinessEvent) -> Option<(&InvoiceDecision, bool)> {
    match event {
        BusinessEvent::InvoiceApproved(e) => Some((&e.payload, true)),
        BusinessEvent::InvoiceRejected(e) => Some((&e.payload, false)),
        _ => None,
    }
}

/// Why `user` may not decide on `invoice`, if they may not.
pub fn refusal(invoice: &InvoiceDoc, user: &str, reference: &ReferenceData) -> Option<String> {
    if reference.user_with_role(user, ROLE_BILLING_APPROVER, &invoice.legal_entity_id).is_none() {
        return Some(format!("{user} does not hold the {ROLE_BILLING_APPROVER} role for {}", invoice.legal_entity_id));
    }
    if invoice.requested_by == user {
        return Some(format!("segregation of duties: {user} requested the invoice run"));
    }
    if invoice.adjustment_authors().contains(user) {
        return Some(format!("segregation of duties: {user} authored an adjustment on this invoice"));
    }
    None
}
