//! Revenue recognition: at each period end (a monthly schedule, or an operator's run), what
//! an active engagement earned to the period's last day (see [`crate::revenue`]) minus what
//! was recognised so far is booked as a revenue journal in the ERP, by create-or-get on the
//! journal id.
//!
//! ```text
//! decide: a period that has not ended → rejected
//!         a journal pending from an earlier delivery → post exactly it again (a run for
//!         another period then asks for its own period again)
//!         period covered already → nothing to do
//!         earned to the period end − recognised, per line → nothing, or
//!         Run [PostJournal], the pending journal claimed in the write that reserves the event
//! finalize: posted → the lines count as recognised (by booked period); RevenueRecognized
//!           refused → the journal is refused, an exception says why (the next run books
//!           the difference again)
//! ```
//!
//! A run for a closed period books into the first open one (the journal and the event keep
//! both periods). Runs are monotonic: a run for a period before the last one covered is a
//! no-op — later runs already caught up with everything earned.

use crate::aggregate::{AggregateBody, AggregateKey, AggregateKind, Load};
use crate::delivery::WipEntry;
use crate::engagement::{Action, EngagementStatus};
use crate::events::{BusinessEvent, EventType, ExceptionKind, Issue, RevenueRecognized, RevenueRunRequested};
use crate::ids::{EngagementId, ExceptionId};
use crate::invoicing::{InvoiceStatus, Ledger};
use crate::money::Money;
use crate::revenue::{
    JournalLine, JournalStatus, RevenueJournal, RevenueKind, RevenueLedger, RevenueMethod, booking_period, earned_to, key,
};

use super::{
    Command, CommandResult, Decision, Input, Next, Outcome, Plan, Purpose, Sequence, Stake, StepContext, StepError, WorkflowStep,
    close_exception, decision, raise_or_refresh, step_meta, with_engagement,
};

/// The revenue-recognition step.
pub struct RevenueRecognition;

/// Engagements per fan-out page (as for invoice runs).
pub const FAN_OUT_PAGE: usize = 500;

impl WorkflowStep for RevenueRecognition {
    step_meta!(RevenueRecognition, [RevenueRunRequested]);

    fn loads(&self, event: &BusinessEvent) -> Vec<Load> {
        let eng = event.engagement_id().to_string();
        vec![
            Load::Key(AggregateKey::revenue_ledger(&eng)),
            Load::Key(AggregateKey::ledger(&eng)),
            Load::All { kind: AggregateKind::WipShard, owner: eng.clone() },
            Load::All { kind: AggregateKind::Invoice, owner: eng },
        ]
    }

    fn decide(&self, input: &Input<'_>, ctx: &StepContext<'_>) -> Result<Next, StepError> {
        let Some(req) = request(input.event) else {
            return Err(StepError::NotConsumed(self.step(), input.event.event_type().detail_type()));
        };
        let eng_id = input.event.engagement_id();
        let Some(eng) = input.current.map(|s| s.engagement) else {
            return Err(StepError::Rejected(vec![Issue::new("engagement_id", "unknown_engagement", format!("no engagement {eng_id}"))]));
        };
        let requested = req.period();
        if req.as_of <= requested.last_day() {
            // Revenue is recognised for periods that have ended: an early run would book a
            // fixed fee ahead and leave the period's later delivery to the next one.
            return Err(StepError::Rejected(vec![Issue::new(
                "period",
                "period_not_ended",
                format!("{requested} ends on {}; a run on {} is too early", requested.last_day(), req.as_of),
            )]));
        }
        let unchanged = |why: String| Ok(Next::Done(Decision::unchanged(ctx, &eng_id, Action::RevenueUnchanged, why)));
        let mut rl = input.others.revenue_ledger(&eng_id).cloned().unwrap_or_else(|| RevenueLedger::new(eng_id.clone()));
        if let Some(pending) = rl.pending() {
            // Claimed by an earlier delivery that did not finish: post exactly it first (a
            // run for another period then asks for its own period again).
            return Ok(Next::Run(Plan::new(Purpose::PostJournal, vec![Command::PostJournal(pending.clone())], Sequence::StopOnFailure)));
        }
        if eng.status != EngagementStatus::Active {
            return unchanged(format!("engagement is {}, not active: nothing to recognise", eng.status.as_str()));
        }
        if let Some(last) = rl.last_period
            && last >= requested
        {
            return unchanged(format!("revenue is recognised through {last}; the run for {requested} has nothing to add"));
        }
        let contract = eng.contract.as_ref().ok_or_else(|| StepError::MissingContract(eng_id.clone(), eng.status.as_str()))?;
        let schedule =
            eng.billing_schedule.as_ref().ok_or_else(|| StepError::MissingContract(eng_id.clone(), "active without a schedule"))?;
        let entity = input
            .reference
            .legal_entities
            .get(&contract.legal_entity.id)
            .ok_or_else(|| StepError::MissingReference("legal entity", contract.legal_entity.id.clone()))?;
        let period = booking_period(requested, entity.closed_through);
        let end = requested.last_day();
        let ledger = input.others.ledger(&eng_id).cloned().unwrap_or_else(|| Ledger::new(eng_id.clone()));
        let shards = input.others.wip_shards();
        let entries: Vec<&WipEntry> = shards.values().flat_map(|s| s.entries.values()).collect();
        let method_of = |line: &crate::model::ContractLine| {
            input
                .reference
                .service_offerings
                .get(&line.service_offering_id)
                .and_then(|o| o.revenue_method)
                .filter(|m| m.fits(line.billing_model))
                .unwrap_or_else(|| RevenueMethod::default_for(line.billing_model))
        };
        let posted_by =
            |invoice_id: &str| input.others.invoice(invoice_id).is_some_and(|i| i.status == InvoiceStatus::Posted && i.issue_date <= end);
        let mut earned = earned_to(contract, schedule, &entries, &ledger, method_of, posted_by, end)?;
        // Expenses recognised on a line that no longer carries any: booked back to zero.
        for k in rl.recognised.keys() {
            if let Some(line_id) = k.strip_suffix("/expenses")
                && !earned.iter().any(|(l, kind, _, _)| l == line_id && *kind == RevenueKind::Expenses)
            {
                earned.push((line_id.to_owned(), RevenueKind::Expenses, RevenueMethod::AsBilled, Money::zero(contract.currency)));
            }
        }
        let mut lines = Vec::new();
        for (line_id, kind, method, to_date) in earned {
            let so_far = rl.recognised.get(&key(&line_id, kind)).copied().unwrap_or(Money::zero(to_date.currency));
            let amount = to_date.checked_sub(so_far)?;
            if !amount.amount.is_zero() {
                lines.push(JournalLine { line_id, kind, method, amount, to_date });
            }
        }
        if lines.is_empty() {
            rl.last_period = Some(requested);
            let d = Decision::unchanged(ctx, &eng_id, Action::RevenueUnchanged, format!("nothing new earned through {end}"))
                .with(AggregateBody::RevenueLedger(rl));
            return Ok(Next::Done(d));
        }
        let total = crate::money::sum(contract.currency, lines.iter().map(|l| l.amount))?;
        let journal = RevenueJournal {
            journal_id: format!("REV-{eng_id}-{requested}-{}", rl.journals.len() + 1),
            engagement_id: eng_id.clone(),
            legal_entity_id: contract.legal_entity.id.clone(),
            requested_period: requested,
            period,
            lines,
            total,
            status: JournalStatus::Pending,
            erp_journal_id: None,
        };
        rl.journals.push(journal.clone());
        let mut plan = Plan::new(Purpose::PostJournal, vec![Command::PostJournal(journal)], Sequence::StopOnFailure);
        plan.claim_others = vec![AggregateBody::RevenueLedger(rl)];
        Ok(Next::Run(plan))
    }

    fn finalize(&self, done: &Outcome<'_>, ctx: &StepContext<'_>) -> Result<Next, StepError> {
        let Some(Command::PostJournal(journal)) = done.plan.commands.first() else {
            return Err(StepError::UnexpectedResults(self.step(), "no journal in the plan".into()));
        };
        let eng_id = done.event.engagement_id();
        let Some(mut rl) = done.others.revenue_ledger(&eng_id).cloned() else {
            return Err(StepError::UnexpectedResults(self.step(), format!("{eng_id} has no revenue ledger after its claim")));
        };
        match rl.journals.iter().find(|j| j.journal_id == journal.journal_id).map(|j| j.status) {
            Some(JournalStatus::Pending) => {}
            Some(other) => {
                return Ok(Next::Done(Decision::unchanged(
                    ctx,
                    &eng_id,
                    Action::RevenueUnchanged,
                    format!("journal {} was {} meanwhile", journal.journal_id, other.as_str()),
                )));
            }
            None => return Err(StepError::UnexpectedResults(self.step(), format!("journal {} vanished", journal.journal_id))),
        }
        let eng = done.current.map(|s| s.engagement);
        let exception_id = ExceptionId::revenue_posting(&eng_id);
        match done.results {
            [CommandResult::Object(o)] => {
                rl.posted(&journal.journal_id, &o.id)?;
                rl.last_period = Some(rl.last_period.map_or(journal.requested_period, |p| p.max(journal.requested_period)));
                let event = ctx.emit(
                    EventType::RevenueRecognized,
                    &eng_id,
                    format!("revenue-recognized:{}", journal.journal_id),
                    &RevenueRecognized {
                        engagement_id: eng_id.clone(),
                        journal_id: journal.journal_id.clone(),
                        erp_journal_id: o.id.clone(),
                        legal_entity_id: journal.legal_entity_id.clone(),
                        requested_period: journal.requested_period,
                        period: journal.period,
                        currency: journal.total.currency,
                        lines: journal.lines.clone(),
                        total: journal.total,
                    },
                );
                let moved = if journal.period == journal.requested_period {
                    String::new()
                } else {
                    format!(" ({} is closed)", journal.requested_period)
                };
                let summary =
                    format!("{} posted (ERP {}): {} recognised in {}{moved}", journal.journal_id, o.id, journal.total, journal.period);
                let mut events = vec![event];
                if let Some(req) = request(done.event)
                    && req.period() != journal.requested_period
                {
                    // This run posted a journal an earlier run left pending: ask for its own period again.
                    events.push(ctx.emit(
                        EventType::RevenueRunRequested,
                        &eng_id,
                        format!("revenue-run:{}:{eng_id}:after:{}", req.run_id, journal.journal_id),
                        &RevenueRunRequested {
                            period: Some(req.period()),
                            engagement_id: Some(eng_id.clone()),
                            after: None,
                            ..req.clone()
                        },
                    ));
                }
                let changed =
                    with_engagement(eng, |e| close_exception(e, &exception_id, ctx.now, &format!("{} posted", journal.journal_id)));
                Ok(Next::Done(
                    decision(ctx, &eng_id, changed, events, Action::RevenueRecognized, summary).with(AggregateBody::RevenueLedger(rl)),
                ))
            }
            [CommandResult::Refused(r)] => {
                if let Some(j) = rl.journals.iter_mut().find(|j| j.journal_id == journal.journal_id) {
                    j.status = JournalStatus::Refused;
                }
                let message = format!("the ERP refused revenue journal {} for {}: {}", journal.journal_id, journal.period, r.reason());
                let mut events = Vec::new();
                let changed = with_engagement(eng, |e| {
                    let requested_by = match done.event {
                        BusinessEvent::RevenueRunRequested(r) => vec![r.payload.requested_by.clone()],
                        _ => Vec::new(),
                    };
                    let stake = Stake { amount: Some(journal.total), caused_by: requested_by };
                    events.extend(raise_or_refresh(
                        e,
                        ctx,
                        exception_id.clone(),
                        ExceptionKind::RevenuePostingFailed,
                        message.clone(),
                        stake,
                    ));
                    !events.is_empty()
                });
                Ok(Next::Done(
                    decision(ctx, &eng_id, changed, events, Action::RevenuePostingFailed, message).with(AggregateBody::RevenueLedger(rl)),
                ))
            }
            other => Err(StepError::UnexpectedResults(self.step(), format!("{other:?}"))),
        }
    }
}

fn request(event: &BusinessEvent) -> Option<&RevenueRunRequested> {
    match event {
        BusinessEvent::RevenueRunRequested(e) => Some(&e.payload),
        _ => None,
    }
}

/// The fan-out of a run request without an engagement: one request per engagement of
/// `page`, and — when `more` — a continuation after the page's last. Pure.
pub fn fan_out(req: &RevenueRunRequested, page: &[EngagementId], more: bool, ctx: &StepContext<'_>) -> Vec<crate::events::OutgoingEvent> {
    let period = req.period();
    super::fan_out_requests(EventType::RevenueRunRequested, "revenue-run", &req.run_id, page, more, ctx, |engagement_id, after| {
        RevenueRunRequested { engagement_id, after, period: Some(period), ..req.clone() }
    })
}
