//! Reconciliation: reads what the PSA, the ERP and the CRM hold for an engagement through
//! their connectors (never o2c's own copy), compares it field by field with what o2c says
//! they should hold ([`crate::reconciliation::compare`]), keeps the report
//! (`ENG#<id>` / `RECON`) and raises — or refreshes, or clears — one
//! `reconciliation_mismatch` exception listing every difference with both sides' values.
//! A request without an engagement fans out to every active one (daily schedule).
//!
//! The ERP's own report of an invoice (`ErpInvoicePosted`) runs the same reconciliation for
//! its engagement, and also reads that invoice when o2c did not issue it: an invoice keyed in
//! the ERP by hand is a break (the customer may be billed twice), read again by every later
//! run (the report keeps its number) until the ERP voids it. The ERP's word is a hint — what
//! is compared is what the ERP answers when read.
//!
//! Read-only towards the systems: a redelivery reads again and compares again; the report
//! and the exception converge on what the systems hold now.

use crate::aggregate::{AggregateBody, AggregateKey, AggregateKind, Load};
use crate::engagement::Action;
use crate::events::{BusinessEvent, EventType, ExceptionKind, ReconciliationRequested};
use crate::ids::{EngagementId, ExceptionId};
use crate::metrics::{Metric, MetricUnit};
use crate::reconciliation::{
    Mismatch, Observation, Observed, Read, ReconciliationReport, carry_foreign, compare, foreign_invoices, issued_by_o2c, reads,
};

use super::{
    Command, CommandResult, Input, Next, Outcome, Plan, Purpose, Sequence, Stake, StepContext, StepError, WorkflowStep, close_exception,
    decision, planned_on, raise_or_refresh, step_meta, with_engagement,
};

/// The reconciliation step.
pub struct Reconciliation;

/// The most mismatches an exception message lists (the report keeps them all).
const LISTED: usize = 8;

impl WorkflowStep for Reconciliation {
    step_meta!(Reconciliation, [ReconciliationRequested, ErpInvoicePosted]);

    fn loads(&self, event: &BusinessEvent) -> Vec<Load> {
        let id = event.engagement_id();
        vec![
            Load::All { kind: AggregateKind::Invoice, owner: id.to_string() },
            Load::Key(AggregateKey::reconciliation(&id)),
            Load::Key(AggregateKey::crm_sync(&id)),
        ]
    }

    fn decide(&self, input: &Input<'_>, _: &StepContext<'_>) -> Result<Next, StepError> {
        let reported = match input.event {
            BusinessEvent::ReconciliationRequested(_) => None,
            BusinessEvent::ErpInvoicePosted(e) => Some(e.payload.number.as_str()),
            other => return Err(StepError::NotConsumed(self.step(), other.event_type().detail_type())),
        };
        let id = input.event.engagement_id();
        let Some(s) = input.current else {
            let path = if reported.is_some() { "payload.engagement_id" } else { "engagement_id" };
            return Err(StepError::Rejected(vec![crate::events::Issue::new(
                path,
                "unknown_engagement",
                format!("no engagement {id} to reconcile"),
            )]));
        };
        let invoices = input.others.invoices();
        let mut reads = reads(s.engagement, &invoices);
        // Invoices the ERP holds that o2c did not issue: the ones the last run found still
        // there, and the one the ERP reports now.
        let previous = input.others.reconciliation(&id).map(|r| r.foreign_invoices.clone()).unwrap_or_default();
        for number in previous.into_iter().chain(reported.map(str::to_owned)) {
            if !issued_by_o2c(&invoices, &number) && !reads.contains(&Read::Invoice(number.clone())) {
                reads.push(Read::Invoice(number));
            }
        }
        let commands: Vec<Command> = reads.into_iter().map(command).collect();
        Ok(Next::Run(Plan::new(Purpose::Reconcile, commands, Sequence::All)))
    }

    fn finalize(&self, done: &Outcome<'_>, ctx: &StepContext<'_>) -> Result<Next, StepError> {
        let run_id = match done.event {
            BusinessEvent::ReconciliationRequested(req) => req.payload.run_id.clone(),
            BusinessEvent::ErpInvoicePosted(e) => format!("erp:{}:{}", e.payload.erp, e.payload.erp_invoice_id),
            other => return Err(StepError::NotConsumed(self.step(), other.event_type().detail_type())),
        };
        let eng = planned_on(done, self.step())?;
        let mut seen = Observed::default();
        let mut unreadable = Vec::new();
        for (cmd, result) in done.plan.commands.iter().zip(done.results) {
            let o = match result {
                CommandResult::Read(o) => o,
                CommandResult::Refused(r) => {
                    // The system would not answer (an expired token, a lost permission):
                    // reported and counted, never an engagement's exception — one rotated
                    // token must not put every engagement in the queue and on the CRM.
                    unreadable.push(Mismatch {
                        system: cmd.system(),
                        object: format!("{cmd:?}").chars().take(120).collect(),
                        field: "readable".into(),
                        o2c: "yes".into(),
                        system_value: format!("refused: {}", r.reason()),
                    });
                    continue;
                }
                other => return Err(StepError::UnexpectedResults(self.step(), format!("{cmd:?} answered {other:?}"))),
            };
            match (cmd, o.clone()) {
                (Command::Read(Read::Project(crate::workflow::System::Psa, _)), Observation::Project(p)) => seen.psa = Some(p),
                (Command::Read(Read::Project(_, _)), Observation::Project(p)) => seen.erp = Some(p),
                (Command::Read(Read::Schedule { .. }), Observation::Schedule(s)) => seen.schedule = Some(s),
                (Command::Read(Read::Invoice(n)), Observation::Invoice(i)) => seen.invoices.push((n.clone(), i)),
                (Command::Read(Read::Opportunity(_)), Observation::Opportunity(o)) => seen.crm = Some(o),
                (c, o) => return Err(StepError::UnexpectedResults(self.step(), format!("{c:?} answered {o:?}"))),
            }
        }
        let invoices = done.others.invoices();
        // The CRM is compared with what the write-back last sent it, not with o2c's state
        // now: a write-back still in flight is not a break; a CRM edited behind o2c's back is.
        let last_sent = done.others.crm_sync(&eng.engagement_id).map(|s| &s.last.update);
        let (checked, mismatches) = compare(eng, &invoices, last_sent, &seen);
        // Foreign invoices kept: found still there, or unread — a refused read proves nothing.
        let mut kept = foreign_invoices(&invoices, &seen);
        let read: Vec<&str> = done
            .plan
            .commands
            .iter()
            .filter_map(|c| match c {
                Command::Read(Read::Invoice(n)) => Some(n.as_str()),
                _ => None,
            })
            .collect();
        for n in &read {
            if !issued_by_o2c(&invoices, n) && !seen.invoices.iter().any(|(m, _)| m == n) {
                kept.push((*n).to_owned());
            }
        }
        // A report stored since this run decided (an ERP's report of an invoice, a run that
        // started later) may name invoices this run never read: they are carried, and this
        // run cannot say every system agrees.
        let stored = done.others.reconciliation(&eng.engagement_id);
        let (foreign, carried) = carry_foreign(kept, stored.map_or(&[][..], |r| &r.foreign_invoices), &read, &invoices);
        let newer = stored.is_some_and(|r| r.at > ctx.now);
        // A run that started later already wrote its report: it stands, with any foreign
        // invoice this run found that it does not name.
        let merged = stored.filter(|_| newer).and_then(|r| {
            let (numbers, added) = carry_foreign(r.foreign_invoices.clone(), &foreign, &[], &invoices);
            added.then(|| ReconciliationReport { foreign_invoices: numbers, ..r.clone() })
        });
        let report = ReconciliationReport {
            engagement_id: eng.engagement_id.clone(),
            run_id,
            at: ctx.now,
            checked,
            mismatches,
            unreadable,
            foreign_invoices: foreign,
        };
        let exception_id = ExceptionId::reconciliation(&eng.engagement_id);
        let mut events = Vec::new();
        let (action, summary, changed) = if report.mismatches.is_empty() {
            let summary = if report.unreadable.is_empty() {
                format!("{} object(s) agree in every system", report.checked.len())
            } else {
                format!("{} object(s) agree; {} read(s) refused", report.checked.len(), report.unreadable.len())
            };
            // Closed only when every system answered about everything known (a refused read,
            // an invoice reported meanwhile and not read, prove nothing) and no later run
            // has spoken since.
            let changed = with_engagement(Some(eng), |e| {
                report.unreadable.is_empty()
                    && !carried
                    && !newer
                    && close_exception(e, &exception_id, ctx.now, "every system agrees again")
            });
            (Action::Reconciled, summary, changed)
        } else {
            let mut listed: Vec<String> = report.mismatches.iter().take(LISTED).map(ToString::to_string).collect();
            if report.mismatches.len() > LISTED {
                listed.push(format!("… {} more (o2c reconcile --engagement {})", report.mismatches.len() - LISTED, eng.engagement_id));
            }
            let message = format!("{} mismatch(es): {}", report.mismatches.len(), listed.join("; "));
            let stake = Stake { amount: eng.contract.as_ref().map(|c| c.total_value), caused_by: Vec::new() };
            // An operator who waived (or resolved) these very differences keeps them closed;
            // a different set of differences raises it again.
            let settled = eng.exceptions.iter().any(|x| x.exception_id == exception_id && !x.open && x.message == message);
            // A stale run speaks only for a foreign invoice the newer report did not name.
            let stale = newer && merged.is_none();
            let changed = with_engagement(Some(eng), |e| {
                if !settled && !stale {
                    events.extend(raise_or_refresh(
                        e,
                        ctx,
                        exception_id.clone(),
                        ExceptionKind::ReconciliationMismatch,
                        message.clone(),
                        stake,
                    ));
                }
                !events.is_empty()
            });
            (Action::ReconciliationMismatch, message, changed)
        };
        let mut metrics: Vec<Metric> = Vec::new();
        for system in ["crm", "psa", "erp"] {
            let n = report.mismatches.iter().filter(|m| m.system.as_str() == system).count();
            metrics.push(Metric::new("ReconciliationMismatches", MetricUnit::Count, n.into(), &[("System", system)]));
            let n = report.unreadable.iter().filter(|m| m.system.as_str() == system).count();
            if n > 0 {
                metrics.push(Metric::new("ReconciliationReadErrors", MetricUnit::Count, n.into(), &[("System", system)]));
            }
        }
        let mut d = decision(ctx, &eng.engagement_id, changed, events, action, summary);
        if let Some(m) = merged {
            d = d.with(AggregateBody::Reconciliation(m));
        } else if !newer {
            d = d.with(AggregateBody::Reconciliation(report));
        }
        d.metrics = metrics;
        Ok(Next::Done(d))
    }
}

fn command(r: Read) -> Command {
    Command::Read(r)
}

/// The fanned-out requests of a run without an engagement: one per engagement of `page`,
/// and a continuation after the page's last when there are more.
pub fn fan_out(
    req: &ReconciliationRequested,
    page: &[EngagementId],
    more: bool,
    ctx: &StepContext<'_>,
) -> Vec<crate::events::OutgoingEvent> {
    super::fan_out_requests(EventType::ReconciliationRequested, "reconciliation", &req.run_id, page, more, ctx, |engagement_id, after| {
        ReconciliationRequested { engagement_id, after, ..req.clone() }
    })
}
