//! The SQS batch entrypoint shared by every Lambda function and by the embedded runtime:
//! each record's body is an EventBridge event (the rule → SQS target delivers the full
//! envelope), decoded and handed to the step service.
//!
//! Outcome per record:
//! - success → not reported (Lambda deletes it);
//! - permanent failure (validation / conflict) → parked in the rejection store with every
//!   reason and **not** reported, so it is never retried — unless parking itself fails,
//!   then it is reported and retried;
//! - retryable failure (dependency / bug) → reported in `batchItemFailures`; SQS redelivers
//!   it after the visibility timeout — or sooner when the failure carries a hint (a record
//!   another invocation holds, a `Retry-After`): the shell applies the hint with
//!   `ChangeMessageVisibility` — and moves it to the DLQ after `maxReceiveCount`;
//! - a retryable failure on the message's **last** receive (`ApproximateReceiveCount` ≥
//!   the queue's `maxReceiveCount`) also raises a dead-letter exception on its engagement
//!   with the error, so the message that is about to dead-letter is in the operators'
//!   exception queue and on the CRM; a message without an engagement is parked instead.
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
    /// `Ok(Some)` handled, `Ok(None)` parked as rejected, `Err` to be retried.
    pub result: Result<Option<Handled>, O2cError>,
}

impl RecordOutcome {
    /// When a failed record should come back, if sooner than the visibility timeout.
    pub fn retry_after(&self) -> Option<Duration> {
        match &self.result {
            Err(O2cError::Dependency { retry_after, .. }) => *retry_after,
            _ => None,
        }
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
pub async fn process_batch<P: Platform>(svc: &StepService<P>, step: Step, event: SqsEvent, batch: &BatchContext) -> Vec<RecordOutcome> {
    let mut outcomes = Vec::with_capacity(event.records.len());
    let mut stopped_groups: HashSet<String> = HashSet::new();
    for record in event.records {
        let message_id = record.message_id.clone().unwrap_or_default();
        let receipt_handle = record.receipt_handle.clone();
        let group = record.attributes.get(MESSAGE_GROUP_ID).cloned();
        let span = info_span!("record", message_id = %message_id);
        if let Some(g) = &group
            && stopped_groups.contains(g)
        {
            let err = O2cError::dependency("fifo", format!("an earlier message of group {g} failed; kept in order"));
            let result = Err(exhausted(svc, step, &record, err, batch).instrument(span).await);
            outcomes.push(RecordOutcome { message_id, receipt_handle, result });
            continue;
        }
        let result = handle_record(svc, step, &record, batch).instrument(span).await;
        if result.is_err()
            && let Some(g) = group
        {
            stopped_groups.insert(g);
        }
        outcomes.push(RecordOutcome { message_id, receipt_handle, result });
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
        Ok(event) => svc.dead_lettered(step, &event, &text, receives, batch.dead_letter_queue.as_deref()).await,
        Err(_) => Ok(DeadLetterOutcome::NoEngagement),
    };
    match outcome {
        Ok(DeadLetterOutcome::Raised | DeadLetterOutcome::AlreadyOpen) => {}
        Ok(DeadLetterOutcome::NoEngagement) => {
            let mut parked =
                rejected_message(step, record.message_id.as_deref().unwrap_or_default(), body, &e, svc.platform().clock().now());
            parked.reasons.insert(
                0,
                Issue::new(
                    "",
                    "dead_lettered",
                    format!(
                        "gave up after {receives} deliveries{}; no engagement to raise an exception on",
                        batch.dead_letter_queue.as_deref().map(|q| format!(" (message in {q})")).unwrap_or_default()
                    ),
                ),
            );
            if let Err(park_err) = svc.platform().store().park(&parked).await {
                error!(error = %park_err, "could not record a message that is about to dead-letter");
            }
        }
        Err(raise_err) => error!(error = %raise_err, "could not raise the dead-letter exception; the DLQ alarm still fires"),
    }
    e
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
