//! What a message that exhausted its receives leaves on its engagement: an open
//! `dead_lettered` exception with the last error, so operators see it in the exception
//! queue and the CRM shows it — and, for provisioning, the claim released, so a redrive or
//! any later provisioning event takes over on the same attempt (same external keys).
//!
//! The exception id is derived from the step and the event, so raising it again (another
//! exhaustion after a redrive) reopens the same exception instead of adding one. It closes
//! when that event is finally processed, or when the step later completes for the
//! engagement by another event.

use crate::engagement::{Action, Engagement, EngagementStatus};
use crate::events::ExceptionKind;
use crate::ids::{EngagementId, ExceptionId};

use super::{Decision, Step, StepContext, exception, exception_event};

/// A message that gave up: what the last delivery saw.
#[derive(Debug, Clone, Copy)]
pub struct GaveUp<'a> {
    /// The failure of the last delivery.
    pub last_error: &'a str,
    /// How many deliveries were made.
    pub receives: u32,
    /// The DLQ the message went to.
    pub queue: Option<&'a str>,
    /// Another invocation still holds the event's key (a duplicate gave up while the
    /// original works): its claim is kept, and its completion closes the exception.
    pub holder_live: bool,
    /// Reopen a closed exception of this event (a handler's own last failure); `false`
    /// for the queue's after-the-fact report of the move, which must not undo a closure
    /// made since by the invocation that finished the event.
    pub reopen: bool,
}

/// Raises (or reopens) the dead-letter exception of `ctx`'s event on `current`; `None`
/// when it is already open, or closed and `gave_up.reopen` is false (raising is
/// idempotent: the handler's last failure and the queue's move to the DLQ may both
/// report the same message).
pub fn dead_lettered(current: &Engagement, gave_up: &GaveUp<'_>, ctx: &StepContext<'_>) -> Option<Decision> {
    let mut eng = current.clone();
    let id = dead_letter_exception_id(&eng.engagement_id, ctx);
    if eng.exceptions.iter().any(|x| x.exception_id == id && (x.open || !gave_up.reopen)) {
        return None;
    }
    let GaveUp { last_error, receives, queue, holder_live, .. } = *gave_up;
    let message = format!(
        "{} gave up on {} after {receives} deliveries{}: {last_error}",
        ctx.step.name(),
        ctx.event_type.detail_type(),
        queue.map(|q| format!(" (message in {q})")).unwrap_or_default()
    );
    let mut released = false;
    if !holder_live
        && ctx.step == Step::Provision
        && eng.status == EngagementStatus::Provisioning
        && eng.claimed_by.as_deref() == Some(ctx.key())
    {
        // Abandoned: any provisioning event (this one redriven, or another) takes it over.
        eng.claimed_by = None;
        released = true;
    }
    let ex = match eng.exceptions.iter_mut().find(|x| x.exception_id == id) {
        Some(existing) => {
            existing.open = true;
            existing.message = message;
            existing.raised_at = ctx.now;
            existing.closed_at = None;
            existing.resolution = None;
            existing.clone()
        }
        None => {
            let ex = exception(ctx, id, ExceptionKind::DeadLettered, message, vec![]);
            eng.raise(ex.clone());
            ex
        }
    };
    // The write-back or the exception workflow announcing its own dead letter would route
    // back to itself (a chain of dead letters in an outage): they stay on the engagement
    // (the CRM shows them) and in the DLQ, whose alarm fires.
    let events = if matches!(ctx.step, Step::CrmWriteback | Step::Exceptions) { vec![] } else { vec![exception_event(ctx, &eng, &ex)] };
    let summary = format!("dead-lettered after {receives} deliveries{}", if released { "; provisioning claim released" } else { "" });
    Some(Decision::changed(ctx, eng, events, Action::DeadLettered, summary))
}

/// The id of the dead-letter exception of `ctx`'s event (per step and idempotency key:
/// copies of one event share it, so the copy that finishes closes what another raised).
pub fn dead_letter_exception_id(engagement_id: &EngagementId, ctx: &StepContext<'_>) -> ExceptionId {
    ExceptionId::dead_letter(engagement_id, ctx.step.name(), &ctx.meta.idempotency_key)
}
