//! The exception workflow: every `ExceptionRaised` opens (or reopens) a case of its own
//! ([`ExceptionCase`]); operators work it through `ExceptionActionRequested` (assign,
//! comment, retry, resolve, waive); `ExceptionResolved` closes it — published by the step
//! whose condition cleared, or by this step when an operator resolves or waives.
//!
//! - Resolve / waive also closes the exception on its engagement (in the same commit), so
//!   the CRM write-back, which reads the engagement, goes back to `Synced`.
//! - A retry re-publishes the source event kept on the case: same payload, same
//!   correlation id, caused by the operator's action. A dead-letter retry keeps the
//!   original idempotency key (its key never completed: a DLQ redrive, record by record);
//!   any other gets `<key>#retry-<n>`, since its key completed with the failure. The
//!   case stays open until the step clears the condition.
//! - A refused action (segregation of duties, a closed case, a missing reason) is recorded
//!   on the case and audited; nothing else changes.
//! - Events arrive in any order: a closure before its raising creates the case closed
//!   from the engagement's own record, and the late raising does not reopen it.

use crate::aggregate::{AggregateBody, AggregateKey, Load};
use crate::engagement::{Action, Engagement};
use crate::events::{
    BusinessEvent, EVENT_VERSION, EventType, ExceptionActionRequested, ExceptionKind, ExceptionRaised, ExceptionResolved, OutgoingEvent,
};
use crate::exception_case::{Acted, ExceptionCase};
use crate::ids::EngagementId;
use crate::metrics::{Metric, MetricUnit};
use rust_decimal::Decimal;

use super::{Decision, Input, Next, StepContext, StepError, WorkflowStep, resolved_event, step_meta};

/// The exception-workflow step.
pub struct Exceptions;

fn case_id(event: &BusinessEvent) -> Option<&str> {
    match event {
        BusinessEvent::ExceptionRaised(e) => Some(e.payload.exception_id.as_str()),
        BusinessEvent::ExceptionResolved(e) => Some(e.payload.exception_id.as_str()),
        BusinessEvent::ExceptionActionRequested(e) => Some(e.payload.exception_id.as_str()),
        _ => None,
    }
}

impl WorkflowStep for Exceptions {
    step_meta!(Exceptions, [ExceptionRaised, ExceptionResolved, ExceptionActionRequested]);

    fn loads(&self, event: &BusinessEvent) -> Vec<Load> {
        case_id(event).map(|id| vec![Load::Key(AggregateKey::exception_case(id))]).unwrap_or_default()
    }

    fn decide(&self, input: &Input<'_>, ctx: &StepContext<'_>) -> Result<Next, StepError> {
        let Some(id) = case_id(input.event) else {
            return Err(StepError::NotConsumed(self.step(), input.event.event_type().detail_type()));
        };
        let owner = input.event.engagement_id();
        let case = input.others.exception_case(id);
        let eng = input.current.map(|s| s.engagement);
        let d = match input.event {
            BusinessEvent::ExceptionRaised(e) => on_raised(case, &e.payload, &e.correlation_id, &owner, ctx),
            BusinessEvent::ExceptionResolved(e) => on_resolved(case, eng, &e.payload, &e.correlation_id, &owner, ctx),
            BusinessEvent::ExceptionActionRequested(e) => on_action(case, eng, &e.payload, &owner, ctx)?,
            _ => return Err(StepError::NotConsumed(self.step(), input.event.event_type().detail_type())),
        };
        Ok(Next::Done(with_metrics(d, case, ctx)))
    }
}

/// The queue's metrics: cases opened and closed per kind, and how long a case stayed open.
fn with_metrics(mut d: Decision, before: Option<&ExceptionCase>, ctx: &StepContext<'_>) -> Decision {
    let after = d.others.iter().find_map(|b| match b {
        AggregateBody::ExceptionCase(c) => Some(c),
        _ => None,
    });
    let Some(after) = after else { return d };
    let was_open = before.is_some_and(|c| c.status.is_open());
    let kind = after.kind.as_str();
    if after.status.is_open() && !was_open {
        d.metrics.push(Metric::new("ExceptionsOpened", MetricUnit::Count, Decimal::ONE, &[("Kind", kind)]));
    }
    if !after.status.is_open() && (was_open || before.is_none()) {
        let outcome = after.status.as_str();
        let age = Decimal::from((ctx.now - after.first_raised_at).num_seconds().max(0));
        d.metrics.push(Metric::new("ExceptionsClosed", MetricUnit::Count, Decimal::ONE, &[("Kind", kind), ("Outcome", outcome)]));
        d.metrics.push(Metric::new("ExceptionOpenSeconds", MetricUnit::Seconds, age, &[("Kind", kind)]));
    }
    d
}

fn with_case(d: Decision, case: ExceptionCase) -> Decision {
    d.with(AggregateBody::ExceptionCase(case))
}

fn on_raised(
    case: Option<&ExceptionCase>,
    p: &ExceptionRaised,
    correlation_id: &str,
    owner: &EngagementId,
    ctx: &StepContext<'_>,
) -> Decision {
    let summary = |verb: &str| format!("{} {verb}: {} ({})", p.exception_id, p.kind.as_str(), p.message);
    match case {
        None => {
            let case = ExceptionCase::raised(p, correlation_id, ctx.now);
            with_case(Decision::unchanged(ctx, owner, Action::ExceptionOpened, summary("opened")), case)
        }
        Some(c) => {
            let mut c = c.clone();
            if c.raised_again(p, ctx.now) {
                let verb = if c.history.last().is_some_and(|h| h.action == "reopened") { "reopened" } else { "updated" };
                with_case(Decision::unchanged(ctx, owner, Action::ExceptionOpened, summary(verb)), c)
            } else {
                Decision::unchanged(ctx, owner, Action::ExceptionUnchanged, format!("{} already recorded", p.exception_id))
            }
        }
    }
}

fn on_resolved(
    case: Option<&ExceptionCase>,
    eng: Option<&Engagement>,
    p: &ExceptionResolved,
    correlation_id: &str,
    owner: &EngagementId,
    ctx: &StepContext<'_>,
) -> Decision {
    let mut c = match case {
        Some(c) => c.clone(),
        None => {
            // The closure overtook the raising: open the case from the engagement's record
            // (or the closure itself) and close it at once.
            let record = eng.and_then(|e| e.exceptions.iter().find(|x| x.exception_id == p.exception_id));
            let raised = ExceptionRaised {
                exception_id: p.exception_id.clone(),
                engagement_id: p.engagement_id.clone(),
                kind: p.kind,
                step: record.map(|x| x.step.clone()).unwrap_or_default(),
                message: record.map(|x| x.message.clone()).unwrap_or_else(|| p.reason.clone()),
                compensations: record.map(|x| x.compensations.clone()).unwrap_or_default(),
                raised_at: Some(p.raised_at),
                legal_entity_id: eng.and_then(|e| e.contract.as_ref()).map(|c| c.legal_entity.id.clone()),
                amount_at_stake: record.and_then(|x| x.amount_at_stake),
                caused_by: record.map(|x| x.caused_by.clone()).unwrap_or_default(),
                source_event: None,
            };
            ExceptionCase::raised(&raised, correlation_id, ctx.now)
        }
    };
    let created = case.is_none();
    if c.closed_by(p, ctx.now) || created {
        let summary = format!("{} {}: {}", p.exception_id, p.outcome.as_str(), p.reason);
        return with_case(Decision::unchanged(ctx, owner, Action::ExceptionClosed, summary), c);
    }
    Decision::unchanged(ctx, owner, Action::ExceptionUnchanged, format!("{} already {}", p.exception_id, c.status.as_str()))
}

fn on_action(
    case: Option<&ExceptionCase>,
    eng: Option<&Engagement>,
    p: &ExceptionActionRequested,
    owner: &EngagementId,
    ctx: &StepContext<'_>,
) -> Result<Decision, StepError> {
    let Some(case) = case else {
        return Err(StepError::Rejected(vec![crate::events::Issue::new(
            "exception_id",
            "unknown_exception",
            format!("no exception {} (is its ExceptionRaised still on its way?)", p.exception_id),
        )]));
    };
    if case.engagement_id != p.engagement_id {
        return Err(StepError::Rejected(vec![crate::events::Issue::new(
            "engagement_id",
            "wrong_engagement",
            format!("exception {} belongs to {}, not {}", p.exception_id, case.engagement_id, p.engagement_id),
        )]));
    }
    let mut c = case.clone();
    let verb = p.action.name();
    let d = match c.act(&p.action, &p.actor, ctx.now) {
        Acted::Refused(why) => {
            let summary = format!("{} {verb} by {} refused: {why}", p.exception_id, p.actor);
            Decision::unchanged(ctx, owner, Action::ExceptionActionRefused, summary)
        }
        Acted::Recorded => {
            let summary = format!("{} {verb} by {}", p.exception_id, p.actor);
            Decision::unchanged(ctx, owner, Action::ExceptionWorked, summary)
        }
        Acted::Retry { source, payload, attempt } => {
            let Some(t) = EventType::from_detail_type(&source.detail_type) else {
                return Err(StepError::Rejected(vec![crate::events::Issue::new(
                    "source_event.detail_type",
                    "unknown_detail_type",
                    format!("{} is not an event this build reads", source.detail_type),
                )]));
            };
            // Per case: two cases raised by one event retry under different keys.
            let key = if c.kind == ExceptionKind::DeadLettered {
                source.idempotency_key.clone()
            } else {
                format!("{}#retry-{}-{attempt}", source.idempotency_key, c.exception_id)
            };
            let retry = redriven(t, &c, &source, payload, key, attempt, ctx);
            let summary = format!("{} retry {attempt}: {} {} re-driven", p.exception_id, source.detail_type, source.event_id);
            let mut d = Decision::unchanged(ctx, owner, Action::ExceptionRetried, summary);
            d.events.push(retry);
            d
        }
        Acted::Closed(r) => {
            let summary = format!("{} {} by {}: {}", p.exception_id, r.outcome.as_str(), p.actor, r.reason);
            // The engagement's own record closes with it (the CRM reads it).
            let mut closed = eng.cloned();
            let record = closed.as_mut().and_then(|e| e.exceptions.iter_mut().find(|x| x.exception_id == p.exception_id && x.open));
            let event = match record {
                Some(x) => {
                    x.close(ctx.now, format!("{} by {}: {}", r.outcome.as_str(), p.actor, r.reason));
                    // The record may be a later occurrence than the case has seen yet.
                    c.seen_occurrence(x.raised_at);
                    resolved_event(ctx, owner, x, r.outcome, Some(p.actor.clone()), r.reason.clone())
                }
                None => resolved_payload_event(ctx, owner, &c, r.outcome, &p.actor, &r.reason),
            };
            let changed = closed.filter(|e| Some(e) != eng);
            let mut d = super::decision(ctx, owner, changed, vec![event], Action::ExceptionWorked, summary);
            d.audit.action = Action::ExceptionClosed;
            d
        }
    };
    Ok(with_case(d, c))
}

/// `ExceptionResolved` for a case whose engagement keeps no open record of it.
fn resolved_payload_event(
    ctx: &StepContext<'_>,
    owner: &EngagementId,
    c: &ExceptionCase,
    outcome: crate::events::ResolutionOutcome,
    actor: &str,
    reason: &str,
) -> OutgoingEvent {
    ctx.emit(
        EventType::ExceptionResolved,
        owner,
        format!("exception-resolved:{}:{}:{}", c.exception_id, c.raised_at.timestamp_millis(), outcome.as_str()),
        &ExceptionResolved {
            exception_id: c.exception_id.clone(),
            engagement_id: c.engagement_id.clone(),
            kind: c.kind,
            raised_at: c.raised_at,
            outcome,
            actor: Some(actor.to_owned()),
            reason: reason.to_owned(),
        },
    )
}

/// The source event again: same payload and correlation id, a new event id, caused by the
/// operator's action, delivered under `key`.
fn redriven(
    t: EventType,
    c: &ExceptionCase,
    source: &crate::events::SourceEvent,
    payload: serde_json::Value,
    key: String,
    attempt: u32,
    ctx: &StepContext<'_>,
) -> OutgoingEvent {
    let event_id =
        uuid::Uuid::new_v5(&uuid::Uuid::NAMESPACE_OID, format!("retry|{}|{}|{attempt}", c.exception_id, source.event_id).as_bytes())
            .to_string();
    let detail = serde_json::json!({
        "event_id": event_id,
        "event_version": EVENT_VERSION,
        "correlation_id": c.correlation_id,
        "causation_id": ctx.meta.event_id,
        "occurred_at": source.occurred_at,
        "idempotency_key": key,
        "payload": payload,
    });
    OutgoingEvent { event_type: t, engagement_id: c.engagement_id.clone(), detail }
}
