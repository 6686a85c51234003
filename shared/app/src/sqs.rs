//! The SQS batch entrypoint shared by every Lambda function and by the embedded runtime:
//! each record's body is an EventBridge event (the rule → SQS target delivers the full
//! envelope), decoded and handed to the step service.
//!
//! Outcome per record:
//! - success → not reported (Lambda deletes it);
//! - permanent failure (validation / conflict) → parked in the rejection store with every
//!   reason and **not** reported, so it is never retried — unless parking itself fails,
//!   then it is reported and retried;
//! - retryable failure (dependency / in progress / bug) → reported in `batchItemFailures`;
//!   SQS redelivers it after the visibility timeout — or after a hint (see
//!   [`RecordOutcome::retry_after`]: a record another invocation holds comes back in
//!   seconds; a `Retry-After` is honoured but never below a per-receive floor) that the
//!   shell applies with `ChangeMessageVisibility` — and moves it to the DLQ after
//!   `maxReceiveCount`;
//! - a retryable failure on the message's **last** receive (`ApproximateReceiveCount` ≥
//!   the queue's `maxReceiveCount`) also raises a dead-letter exception on its engagement
//!   with the error, so the message that is about to dead-letter is in the operators'
//!   exception queue and on the CRM; a message without an engagement is parked instead.
//!   A provisioning claim is released with it only when no live invocation holds the
//!   event's key (a duplicate giving up must not orphan the original's work);
//! - a record is not started when the invocation has less time left than a command and
//!   the commit after it need: it is reported unprocessed instead of being cut by the
//!   Lambda timeout (which would lose the whole batch's response).
//!
//! On FIFO queues a failure stops its message group: every later record of the group in
//! the batch is reported too, unprocessed, so order within the group is kept.
//!
//! An event with no records is answered with no failures (Lambda never sends one; a
//! test invoke might).

use std::collections::HashSet;
use std::time::Duration;

use aws_lambda_events::event::eventbridge::EventBridgeEvent;
use aws_lambda_events::event::sqs::{BatchItemFailure, SqsBatchResponse, SqsEvent, SqsMessage};
use chrono::{DateTime, Utc};
use o2c_domain::events::{BusinessEvent, Issue};
use serde_json::Value;
use tracing::{Instrument, error, info_span, warn};

use crate::error::O2cError;
use crate::ports::{DeliveryFailure, MAX_TRACKED_MESSAGE_IDS, Platform, RejectedMessage, RejectionStore, rejection_id_for};
use crate::service::{DeadLetterOutcome, Delivery, Handled, StepService};
use o2c_domain::workflow::Step;

/// SQS attribute carrying the FIFO message group.
pub const MESSAGE_GROUP_ID: &str = "MessageGroupId";
/// SQS attribute carrying the receive count.
pub const RECEIVE_COUNT: &str = "ApproximateReceiveCount";

/// What the batch's queue is: the invocation deadline and the redrive policy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BatchContext {
    /// The invocation's deadline.
    pub deadline: DateTime<Utc>,
    /// The queue's `maxReceiveCount` (from the template; `MAX_RECEIVE_COUNT` in Lambda).
    pub max_receive_count: Option<u32>,
    /// The DLQ's name, for operator messages.
    pub dead_letter_queue: Option<String>,
}

impl BatchContext {
    /// A context with a deadline and no redrive policy.
    pub fn until(deadline: DateTime<Utc>) -> Self {
        Self { deadline, max_receive_count: None, dead_letter_queue: None }
    }
}

/// What happened to one record of a batch.
#[derive(Debug)]
pub struct RecordOutcome {
    /// SQS message id.
    pub message_id: String,
    /// Receipt handle (for `ChangeMessageVisibility`).
    pub receipt_handle: Option<String>,
    /// `ApproximateReceiveCount` of the delivery.
    pub receive_count: u32,
    /// `Ok(Some)` handled, `Ok(None)` parked as rejected, `Err` to be retried.
    pub result: Result<Option<Handled>, O2cError>,
}

/// The longest visibility SQS allows (12 h).
pub const MAX_VISIBILITY: Duration = Duration::from_secs(12 * 3600);

/// The least a dependency's `Retry-After` may hide a message on its first receive; doubles
/// per receive. A rate-limited system answering `Retry-After: 1` must not burn every
/// receive in a minute (5 receives then take ≥ 7.5 min, like the visibility timeout).
pub const HINT_FLOOR: Duration = Duration::from_secs(30);

impl RecordOutcome {
    /// When a failed record should come back, when not after the queue's visibility timeout:
    /// - held by another invocation → the service's short hint (1 s, 2 s, 4 s…; on the
    ///   last receive after the holder's deadline);
    /// - a dependency's `Retry-After` → that, but never sooner than `HINT_FLOOR × 2ⁿ⁻¹`
    ///   on receive `n`;
    ///
    /// both capped at [`MAX_VISIBILITY`].
    pub fn retry_after(&self) -> Option<Duration> {
        let delay = match &self.result {
            Err(O2cError::InProgress { retry_after, .. }) => *retry_after,
            Err(O2cError::Dependency { retry_after: Some(hint), .. }) => {
                let floor = HINT_FLOOR.saturating_mul(1u32 << self.receive_count.saturating_sub(1).min(10));
                (*hint).max(floor)
            }
            _ => return None,
        };
        Some(delay.min(MAX_VISIBILITY))
    }
}

/// A visibility change the shell applies to a failed record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VisibilityChange {
    /// Message id.
    pub message_id: String,
    /// Receipt handle.
    pub receipt_handle: String,
    /// Visible again after.
    pub delay: Duration,
}

/// The Lambda response and the visibility changes to apply before returning it.
#[derive(Debug, Default)]
pub struct BatchResult {
    /// `batchItemFailures`.
    pub response: SqsBatchResponse,
    /// Failed records to bring back sooner than the visibility timeout.
    pub visibility: Vec<VisibilityChange>,
}

/// Handles one SQS batch for `step` and returns the records to retry.
pub async fn handle_batch<P: Platform>(svc: &StepService<P>, step: Step, event: SqsEvent, batch: &BatchContext) -> BatchResult {
    let mut result = BatchResult::default();
    for outcome in process_batch(svc, step, event, batch).await {
        if outcome.result.is_err() {
            if let (Some(delay), Some(handle)) = (outcome.retry_after(), outcome.receipt_handle.clone()) {
                result.visibility.push(VisibilityChange { message_id: outcome.message_id.clone(), receipt_handle: handle, delay });
            }
            result.response.batch_item_failures.push(failure(&outcome.message_id));
        }
    }
    result
}

/// Handles one SQS batch and returns the outcome of every record, in order.
///
/// A record is started only while the invocation has time for it (the retry policy's
/// margin: its commit and publish); the rest are reported unprocessed, so a slow first
/// record cannot time the whole batch out and lose every result with it.
pub async fn process_batch<P: Platform>(svc: &StepService<P>, step: Step, event: SqsEvent, batch: &BatchContext) -> Vec<RecordOutcome> {
    let mut outcomes = Vec::with_capacity(event.records.len());
    let mut stopped_groups: HashSet<String> = HashSet::new();
    let margin = svc.config().connector_retry.margin;
    for record in event.records {
        let message_id = record.message_id.clone().unwrap_or_default();
        let receipt_handle = record.receipt_handle.clone();
        let receive_count = receive_count(&record);
        let group = record.attributes.get(MESSAGE_GROUP_ID).cloned();
        let span = info_span!("record", message_id = %message_id);
        let skip = match &group {
            Some(g) if stopped_groups.contains(g) => {
                Some(O2cError::dependency("fifo", format!("an earlier message of group {g} failed; kept in order")))
            }
            _ if !svc.config().connector_retry.fits(svc.platform().clock().now(), Duration::ZERO, batch.deadline) => {
                Some(O2cError::dependency("lambda", format!("not started: less than {margin:?} of the invocation was left")))
            }
            _ => None,
        };
        if let Some(err) = skip {
            let result = Err(exhausted(svc, step, &record, err, batch).instrument(span).await);
            outcomes.push(RecordOutcome { message_id, receipt_handle, receive_count, result });
            continue;
        }
        let result = handle_record(svc, step, &record, batch).instrument(span).await;
        if result.is_err()
            && let Some(g) = group
        {
            stopped_groups.insert(g);
        }
        outcomes.push(RecordOutcome { message_id, receipt_handle, receive_count, result });
    }
    outcomes
}

fn failure(message_id: &str) -> BatchItemFailure {
    let mut f = BatchItemFailure::default();
    f.item_identifier = message_id.to_owned();
    f
}

/// The receive count of a record (1 when the attribute is missing).
pub fn receive_count(record: &SqsMessage) -> u32 {
    record.attributes.get(RECEIVE_COUNT).and_then(|n| n.parse().ok()).unwrap_or(1)
}

/// Decodes an SQS body into a business event.
pub fn decode_body(body: &str) -> Result<BusinessEvent, O2cError> {
    let envelope: EventBridgeEvent<Value> = serde_json::from_str(body).map_err(|e| {
        O2cError::Validation(vec![Issue::new(
            "body",
            "not_an_eventbridge_event",
            format!("the message body is not an EventBridge event: {e}"),
        )])
    })?;
    crate::contracts::decode(&envelope.detail_type, &envelope.detail)
}

/// Processes one record; `Err` means "report for retry".
pub async fn handle_record<P: Platform>(
    svc: &StepService<P>,
    step: Step,
    record: &SqsMessage,
    batch: &BatchContext,
) -> Result<Option<Handled>, O2cError> {
    let body = record.body.as_deref().unwrap_or_default();
    let delivery = Delivery { deadline: batch.deadline, receive_count: receive_count(record), max_receive_count: batch.max_receive_count };
    let result = match decode_body(body) {
        Ok(event) => svc.handle(step, &event, &delivery).await,
        Err(e) => Err(e),
    };
    match result {
        Ok(h) => Ok(Some(h)),
        Err(e) if e.is_permanent() => {
            let message_id = record.message_id.clone().unwrap_or_default();
            let parked = rejected_message(step, &message_id, body, &e, svc.platform().clock().now());
            let codes: Vec<&str> = parked.reasons.iter().map(|r| r.code.as_str()).collect();
            warn!(error_type = e.error_type(), reasons = ?codes, "message rejected; parking it");
            match svc.platform().store().park(&parked).await {
                Ok(()) => Ok(None),
                Err(park_err) => {
                    error!(error = %park_err, "could not park a rejected message; it will be retried");
                    Err(park_err)
                }
            }
        }
        Err(e) => {
            warn!(error_type = e.error_type(), error = %e, "retryable failure");
            let failure = DeliveryFailure {
                message_id: record.message_id.clone().unwrap_or_default(),
                step: step.name().to_owned(),
                error_type: e.error_type().to_owned(),
                error: e.to_string(),
                receive_count: delivery.receive_count,
                at: svc.platform().clock().now(),
            };
            if let Err(store_err) = svc.platform().store().record_failure(&failure).await {
                warn!(error = %store_err, "could not record the failure reason");
            }
            Err(exhausted(svc, step, record, e, batch).await)
        }
    }
}

/// On the message's last receive, makes the coming dead letter visible: a dead-letter
/// exception on its engagement, or — without one — a parked record with the error.
/// Returns the error unchanged (the record is still reported).
async fn exhausted<P: Platform>(svc: &StepService<P>, step: Step, record: &SqsMessage, e: O2cError, batch: &BatchContext) -> O2cError {
    let receives = receive_count(record);
    if batch.max_receive_count.is_none_or(|m| receives < m) {
        return e;
    }
    let body = record.body.as_deref().unwrap_or_default();
    let text = format!("{}: {e}", e.error_type());
    let outcome = match decode_body(body) {
        Ok(event) => svc.dead_lettered(step, &event, &text, receives, batch.dead_letter_queue.as_deref(), true).await,
        Err(_) => Ok(DeadLetterOutcome::NoEngagement),
    };
    match outcome {
        Ok(DeadLetterOutcome::Raised | DeadLetterOutcome::AlreadyOpen) => {}
        Ok(DeadLetterOutcome::NoEngagement) => {
            park_dead_letter(
                svc,
                step,
                record.message_id.as_deref().unwrap_or_default(),
                body,
                &e,
                receives,
                batch.dead_letter_queue.as_deref(),
            )
            .await;
        }
        Err(raise_err) => error!(error = %raise_err, "could not raise the dead-letter exception; the DLQ alarm still fires"),
    }
    e
}

/// Parks a message that dead-letters with no engagement to raise its exception on (a
/// payment before its customer is known, a body that does not decode): the operators'
/// parked list names it, its last failure and its DLQ. Used on the last receive, and by a
/// runtime that moved a message whose consumer stopped during its last delivery.
pub async fn park_dead_letter<P: Platform>(
    svc: &StepService<P>,
    step: Step,
    message_id: &str,
    body: &str,
    error: &O2cError,
    receives: u32,
    dead_letter_queue: Option<&str>,
) {
    let mut parked = rejected_message(step, message_id, body, error, svc.platform().clock().now());
    parked.reasons.insert(
        0,
        Issue::new(
            "",
            "dead_lettered",
            format!(
                "gave up after {receives} deliveries{}; no engagement to raise an exception on",
                dead_letter_queue.map(|q| format!(" (message in {q})")).unwrap_or_default()
            ),
        ),
    );
    if let Err(park_err) = svc.platform().store().park(&parked).await {
        error!(error = %park_err, "could not record a message that is about to dead-letter");
    }
}

/// Builds the parked record, reading what it can from a possibly malformed body.
pub fn rejected_message(step: Step, message_id: &str, body: &str, error: &O2cError, now: DateTime<Utc>) -> RejectedMessage {
    let v: Option<Value> = serde_json::from_str(body).ok();
    let s = |path: &[&str]| -> Option<String> {
        let mut cur = v.as_ref()?;
        for p in path {
            cur = cur.get(p)?;
        }
        cur.as_str().map(str::to_owned)
    };
    let event_id = s(&["detail", "event_id"]);
    let engagement_id = s(&["detail", "payload", "engagement_id"])
        .or_else(|| s(&["detail", "payload", "opportunity_id"]).map(|o| o2c_domain::events::engagement_id_for(&o).into()));
    let mut message_ids = vec![message_id.to_owned()];
    message_ids.truncate(MAX_TRACKED_MESSAGE_IDS);
    RejectedMessage {
        rejection_id: rejection_id_for(step.name(), body),
        step: step.name().to_owned(),
        rejected_at: now,
        last_rejected_at: None,
        deliveries: 1,
        message_ids,
        source: s(&["source"]),
        detail_type: s(&["detail-type"]),
        event_id,
        correlation_id: s(&["detail", "correlation_id"]),
        engagement_id,
        error_type: error.error_type().to_owned(),
        reasons: error.reasons(),
        body: body.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn outcome(receive_count: u32, result: Result<Option<Handled>, O2cError>) -> RecordOutcome {
        RecordOutcome { message_id: "m".into(), receipt_handle: Some("r".into()), receive_count, result }
    }

    fn limited(secs: u64) -> O2cError {
        O2cError::Dependency { system: "psa".into(), message: "429".into(), retry_after: Some(Duration::from_secs(secs)) }
    }

    #[test]
    fn when_a_dependency_says_retry_after_one_second_should_still_back_off_per_receive() {
        let floors: Vec<u64> = (1..=5).map(|n| outcome(n, Err(limited(1))).retry_after().unwrap().as_secs()).collect();
        assert_eq!(floors, vec![30, 60, 120, 240, 480], "five receives take ≥ 7.5 min, not 5 s");
        assert_eq!(outcome(1, Err(limited(900))).retry_after(), Some(Duration::from_secs(900)), "a longer hint is kept");
        assert_eq!(outcome(1, Err(limited(u64::MAX / 2))).retry_after(), Some(MAX_VISIBILITY), "capped at 12 h");
    }

    #[test]
    fn when_another_invocation_holds_the_key_should_come_back_after_the_short_hint() {
        let busy = O2cError::InProgress { key: "k".into(), retry_after: Duration::from_secs(2) };
        assert_eq!(outcome(2, Err(busy)).retry_after(), Some(Duration::from_secs(2)));
    }

    #[test]
    fn when_a_failure_carries_no_hint_should_leave_the_visibility_timeout() {
        assert_eq!(outcome(1, Err(O2cError::dependency("erp", "503"))).retry_after(), None);
        assert_eq!(outcome(1, Err(O2cError::Bug("x".into()))).retry_after(), None);
        assert_eq!(outcome(1, Ok(None)).retry_after(), None);
    }
}
