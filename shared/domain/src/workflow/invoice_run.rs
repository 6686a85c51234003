//! Invoice run: one engagement's unbilled WIP, due milestones and installments, and the
//! adjustments its corrections owe, drafted into one invoice, taxed by the tax engine, and
//! sent for approval or straight to posting.
//!
//! ```text
//! decide: active? no invoice open? cycle due (scheduled runs)? → build the draft
//!         nothing to bill → Done
//!         else → Run [CalculateTax]
//! finalize: re-derive the draft on the state as it is now; if it changed (an entry
//!           landed meanwhile) decide again — else apply the checked quote, record the
//!           draft (ledger, entries' billed amounts, held-back caps) and emit
//!           InvoiceApprovalRequested (needs approval) or InvoiceReleased
//! ```
//!
//! Cut-off: a scheduled run on `as_of` bills work dated up to the day before (the run on
//! the 1st bills the month before); an on-demand run bills up to `as_of` itself. The
//! invoice is issued on `as_of`, due after the contract's payment terms.
//!
//! Writes (one commit): the invoice, the ledger, every WIP shard whose entries it bills,
//! and the engagement only when a cap or tax exception changes — at most 32 shards +
//! 4 items, under DynamoDB's 100 items per transaction.

use chrono::NaiveDate;

use crate::aggregate::{AggregateBody, AggregateKey, AggregateKind, Load};
use crate::delivery::WipShard;
use crate::engagement::{Action, Engagement, EngagementStatus};
use crate::events::{BusinessEvent, EventType, ExceptionKind, InvoiceApprovalRequested, InvoiceReleased, InvoiceRunRequested};
use crate::ids::ExceptionId;
use crate::invoicing::{Draft, InvoiceStatus, Ledger, RunInputs, approval_reasons, build_draft, mark_billed, payment_days};
use crate::reference::ReferenceData;
use crate::tax::TaxRequest;

use super::{
    Command, CommandResult, Decision, Input, Next, Outcome, Plan, Purpose, Sequence, Stake, StepContext, StepError, WorkflowStep,
    close_exception, raise_or_refresh, step_meta,
};

/// The invoice-run step.
pub struct InvoiceRun;

impl WorkflowStep for InvoiceRun {
    step_meta!(InvoiceRun, [InvoiceRunRequested]);

    fn loads(&self, event: &BusinessEvent) -> Vec<Load> {
        let eng = event.engagement_id();
        vec![Load::Key(AggregateKey::ledger(&eng)), Load::All { kind: AggregateKind::WipShard, owner: eng.to_string() }]
    }

    fn decide(&self, input: &Input<'_>, ctx: &StepContext<'_>) -> Result<Next, StepError> {
        let BusinessEvent::InvoiceRunRequested(env) = input.event else {
            return Err(StepError::NotConsumed(self.step(), input.event.event_type().detail_type()));
        };
        let req = &env.payload;
        let eng_id = input.event.engagement_id();
        let Some(eng) = input.current.map(|s| s.engagement) else {
            return Err(StepError::Rejected(vec![crate::events::Issue::new(
                "engagement_id",
                "unknown_engagement",
                format!("no engagement {eng_id} to bill"),
            )]));
        };
        Ok(match prepare(eng, req, input)? {
            Prepared::Skip(action, why) => Next::Done(Decision::unchanged(ctx, &eng.engagement_id, action, why)),
            Prepared::Nothing(mut ledger) => {
                let why = format!("nothing billable up to {}", cut_off(req));
                let d = Decision::unchanged(ctx, &eng.engagement_id, Action::NothingToBill, why);
                if req.scheduled {
                    // The cycle ran: the next one is due at its next billing day.
                    ledger.last_cycle_run = Some(req.as_of);
                    Next::Done(d.with(AggregateBody::Ledger(ledger)))
                } else {
                    Next::Done(d)
                }
            }
            Prepared::Draft { request, .. } => {
                Next::Run(Plan::new(Purpose::Tax, vec![Command::CalculateTax(request)], Sequence::StopOnFailure))
            }
        })
    }

    fn finalize(&self, done: &Outcome<'_>, ctx: &StepContext<'_>) -> Result<Next, StepError> {
        let planned = match done.plan.commands.first() {
            Some(Command::CalculateTax(r)) => r,
            _ => return Err(StepError::UnexpectedResults(self.step(), "no tax request in the plan".into())),
        };
        let eng = super::planned_on(done, self.step())?;
        let BusinessEvent::InvoiceRunRequested(env) = done.event else {
            return Err(StepError::NotConsumed(self.step(), done.event.event_type().detail_type()));
        };
        let req = &env.payload;
        // The draft as the state is now; if it is not the one that was taxed, decide again.
        let input = Input { current: done.current, others: done.others, event: done.event, reference: done.reference };
        let (mut draft, shards, ledger) = match prepare(eng, req, &input)? {
            Prepared::Draft { draft, request, shards, ledger } if &request == planned => (draft, shards, ledger),
            _ => return Ok(Next::Need(Vec::new())),
        };
        let mut eng = eng.clone();
        let invoice_id = draft.invoice.invoice_id.clone();
        let tax_exception = ExceptionId::tax_failed(&eng.engagement_id, &invoice_id);
        let quote = match done.results {
            [CommandResult::Tax(q)] => q,
            [CommandResult::Refused(r)] => {
                let message = format!("the tax engine refused draft {invoice_id} (nothing was invoiced): {}", r.reason());
                let events: Vec<_> = raise_or_refresh(
                    &mut eng,
                    ctx,
                    tax_exception,
                    ExceptionKind::TaxFailed,
                    message.clone(),
                    Stake { amount: Some(draft.invoice.subtotal), caused_by: vec![draft.invoice.requested_by.clone()] },
                )
                .into_iter()
                .collect();
                let d = if events.is_empty() {
                    Decision::unchanged(ctx, &eng.engagement_id, Action::TaxFailed, message)
                } else {
                    Decision::changed(ctx, eng, events, Action::TaxFailed, message)
                };
                return Ok(Next::Done(d));
            }
            other => return Err(StepError::UnexpectedResults(self.step(), format!("{other:?}"))),
        };
        quote.check(planned).map_err(|e| StepError::UnexpectedResults(self.step(), format!("tax engine answer refused: {e}")))?;
        draft.invoice.apply_tax(quote)?;

        let thresholds = input.reference.invoice_approval_thresholds.get(&draft.invoice.legal_entity_id).map_or(&[][..], Vec::as_slice);
        let reasons = approval_reasons(&draft.invoice, thresholds);
        let mut events = Vec::new();
        let action = if reasons.is_empty() {
            draft.invoice.status = InvoiceStatus::Approved;
            events.push(ctx.emit(
                EventType::InvoiceReleased,
                &eng.engagement_id,
                format!("invoice-released:{invoice_id}"),
                &InvoiceReleased {
                    engagement_id: eng.engagement_id.clone(),
                    invoice_id: invoice_id.clone(),
                    legal_entity_id: draft.invoice.legal_entity_id.clone(),
                    customer_id: draft.invoice.customer_id.clone(),
                },
            ));
            Action::InvoiceReleased
        } else {
            draft.invoice.status = InvoiceStatus::PendingApproval;
            draft.invoice.approval_reasons = reasons.clone();
            events.push(ctx.emit(
                EventType::InvoiceApprovalRequested,
                &eng.engagement_id,
                format!("invoice-approval-requested:{invoice_id}"),
                &InvoiceApprovalRequested {
                    engagement_id: eng.engagement_id.clone(),
                    invoice_id: invoice_id.clone(),
                    legal_entity_id: draft.invoice.legal_entity_id.clone(),
                    total: draft.invoice.total,
                    reasons,
                    requested_by: draft.invoice.requested_by.clone(),
                    adjustment_authors: draft.invoice.adjustment_authors().into_iter().map(str::to_owned).collect(),
                },
            ));
            Action::InvoiceDrafted
        };

        // Caps: an exception per line whose cap held work back; closed once nothing is.
        let mut changed = close_exception(&mut eng, &tax_exception, ctx.now, &format!("{invoice_id} taxed"));
        for (line, held) in &draft.held_back {
            let message = format!(
                "line {line}: {held} of approved work is held back by its not-to-exceed cap (draft {invoice_id}); a change order raises the cap"
            );
            let id = ExceptionId::cap_exceeded(&eng.engagement_id, line);
            let stake = Stake { amount: Some(*held), caused_by: vec![draft.invoice.requested_by.clone()] };
            if let Some(ev) = raise_or_refresh(&mut eng, ctx, id, ExceptionKind::CapExceeded, message, stake) {
                events.push(ev);
                changed = true;
            }
        }
        let still_capped: Vec<ExceptionId> = draft.held_back.keys().map(|l| ExceptionId::cap_exceeded(&eng.engagement_id, l)).collect();
        let cap_ids: Vec<ExceptionId> = eng
            .exceptions
            .iter()
            .filter(|x| x.open && x.kind == ExceptionKind::CapExceeded && !still_capped.contains(&x.exception_id))
            .map(|x| x.exception_id.clone())
            .collect();
        for id in cap_ids {
            changed |= close_exception(&mut eng, &id, ctx.now, &format!("nothing held back at {invoice_id}"));
        }

        let summary = format!(
            "{invoice_id}: {} lines, net {}, tax {}, total {}{}",
            draft.invoice.lines.len(),
            draft.invoice.subtotal,
            draft.invoice.tax_total,
            draft.invoice.total,
            if draft.held_back.is_empty() { String::new() } else { format!("; {} line(s) capped", draft.held_back.len()) }
        );
        let mut ledger = ledger;
        ledger.record_draft(&draft);
        if req.scheduled {
            ledger.last_cycle_run = Some(req.as_of);
        }
        let mut touched: Vec<WipShard> = shards.into_iter().filter(|s| s.entries.keys().any(|id| draft.entries.contains_key(id))).collect();
        mark_billed(&mut touched, &draft);
        let mut d = if changed {
            Decision::changed(ctx, eng.clone(), events, action, summary)
        } else {
            let mut d = Decision::unchanged(ctx, &eng.engagement_id, action, summary);
            d.events = events;
            d
        };
        d = d.with(AggregateBody::Invoice(draft.invoice)).with(AggregateBody::Ledger(ledger));
        for s in touched {
            d = d.with(AggregateBody::WipShard(s));
        }
        Ok(Next::Done(d))
    }
}

/// What a run on the current state would do.
// Built once per decision and taken apart at once: boxing would only add an allocation.
#[allow(clippy::large_enum_variant)]
enum Prepared {
    /// Nothing to do, and why.
    Skip(Action, String),
    /// Nothing billable up to the cut-off (the ledger as loaded).
    Nothing(Ledger),
    /// A draft to tax.
    Draft {
        /// The draft.
        draft: Draft,
        /// Its tax request.
        request: TaxRequest,
        /// Every WIP shard as loaded.
        shards: Vec<WipShard>,
        /// The ledger as loaded (or new).
        ledger: Ledger,
    },
}

/// The cut-off of a run (see the module docs).
pub fn cut_off(req: &InvoiceRunRequested) -> NaiveDate {
    if req.scheduled { req.as_of.pred_opt().unwrap_or(req.as_of) } else { req.as_of }
}

fn prepare(eng: &Engagement, req: &InvoiceRunRequested, input: &Input<'_>) -> Result<Prepared, StepError> {
    let skip = |why: String| Ok(Prepared::Skip(Action::InvoiceRunSkipped, why));
    if eng.status != EngagementStatus::Active {
        return skip(format!("engagement is {}, not active", eng.status.as_str()));
    }
    let contract = eng.contract.as_ref().ok_or_else(|| StepError::MissingContract(eng.engagement_id.clone(), eng.status.as_str()))?;
    let schedule =
        eng.billing_schedule.as_ref().ok_or_else(|| StepError::MissingContract(eng.engagement_id.clone(), "active without a schedule"))?;
    let ledger = input.others.ledger(&eng.engagement_id).cloned().unwrap_or_else(|| Ledger::new(eng.engagement_id.clone()));
    if let Some(open) = ledger.open_invoices.iter().next() {
        return skip(format!("invoice {open} is still open (approval or posting); the run waits for it"));
    }
    let customer = customer(input.reference, &contract.customer.id)?;
    if req.scheduled && !customer.billing_cycle.due_on(req.as_of, &ledger, contract.start_date) {
        return skip(format!("{} cycle not due on {}", customer.billing_cycle.as_str(), req.as_of));
    }
    let seller = input
        .reference
        .legal_entities
        .get(&contract.legal_entity.id)
        .ok_or_else(|| StepError::MissingReference("legal entity", contract.legal_entity.id.clone()))?;
    let shards: Vec<WipShard> = input.others.wip_shards().into_values().cloned().collect();
    let refs: Vec<&WipShard> = shards.iter().collect();
    let inputs = RunInputs {
        contract,
        schedule,
        milestones: &eng.milestones,
        ledger: &ledger,
        cut_off: cut_off(req),
        issue_date: req.as_of,
        requested_by: &req.requested_by,
        erp_project_id: eng.erp_project_id.as_deref().unwrap_or_default(),
        erp_customer_id: &contract.customer.erp_customer_id,
        payment_days: payment_days(&contract.payment_terms),
    };
    let Some(draft) = build_draft(inputs, &refs)? else {
        return Ok(Prepared::Nothing(ledger));
    };
    let request = draft.invoice.tax_request(&seller.country, customer);
    Ok(Prepared::Draft { draft, request, shards, ledger })
}

/// How many engagements one fan-out invocation requests runs for (then it hands the rest
/// to a continuation request: bounded work per invocation, ≤ 50 `PutEvents` of 10).
pub const FAN_OUT_PAGE: usize = 500;

/// The fan-out of a run request without an engagement: one request per engagement of
/// `page` (in id order), and — when `more` — a continuation for the engagements after the
/// page's last. Pure: the shell lists the page and publishes what this returns.
pub fn fan_out(
    req: &InvoiceRunRequested,
    page: &[crate::ids::EngagementId],
    more: bool,
    ctx: &StepContext<'_>,
) -> Vec<crate::events::OutgoingEvent> {
    super::fan_out_requests(EventType::InvoiceRunRequested, "invoice-run", &req.run_id, page, more, ctx, |engagement_id, after| {
        InvoiceRunRequested { engagement_id, after, ..req.clone() }
    })
}

fn customer<'r>(reference: &'r ReferenceData, id: &str) -> Result<&'r crate::reference::Customer, StepError> {
    reference.customers.get(id).ok_or_else(|| StepError::MissingReference("customer", id.to_owned()))
}
