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
//!   it after the visibility timeout and moves it to the DLQ after `maxReceiveCount`.
//!
//! On FIFO queues a failure stops its message group: every later record of the group in
//! the batch is reported too, unprocessed, so order within the group is kept.

use std::collections::HashSet;

use aws_lambda_events::event::eventbridge::EventBridgeEvent;
use aws_lambda_events::event::sqs::{BatchItemFailure, SqsBatchResponse, SqsEvent, SqsMessage};
use chrono::{DateTime, Utc};
use o2c_domain::events::{BusinessEvent, Issue};
use serde_json::Value;
use tracing::{Instrument, error, info_span, warn};

use crate::error::O2cError;
use crate::ports::{DeliveryFailure, Platform, RejectedMessage, RejectionStore};
use crate::service::{Handled, Step, StepService};

/// SQS attribute carrying the FIFO message group.
pub const MESSAGE_GROUP_ID: &str = "MessageGroupId";

/// What happened to one record of a batch.
#[derive(Debug)]
pub struct RecordOutcome {
    /// SQS message id.
    pub message_id: String,
    /// `Ok(Some)` handled, `Ok(None)` parked as rejected, `Err` to be retried.
    pub result: Result<Option<Handled>, O2cError>,
}

/// Handles one SQS batch for `step` and returns the records to retry.
pub async fn handle_batch<P: Platform>(
    svc: &StepService<P>,
    step: Step,
    event: SqsEvent,
    in_progress_until: DateTime<Utc>,
) -> SqsBatchResponse {
    let mut response = SqsBatchResponse::default();
    for outcome in process_batch(svc, step, event, in_progress_until).await {
        if outcome.result.is_err() {
            response.batch_item_failures.push(failure(&outcome.message_id));
        }
    }
    response
}

/// Handles one SQS batch and returns the outcome of every record, in order.
pub async fn process_batch<P: Platform>(
    svc: &StepService<P>,
    step: Step,
    event: SqsEvent,
    in_progress_until: DateTime<Utc>,
) -> Vec<RecordOutcome> {
    let mut outcomes = Vec::with_capacity(event.records.len());
    let mut stopped_groups: HashSet<String> = HashSet::new();
    for record in event.records {
        let message_id = record.message_id.clone().unwrap_or_default();
        let group = record.attributes.get(MESSAGE_GROUP_ID).cloned();
        if let Some(g) = &group
            && stopped_groups.contains(g)
        {
            let err = O2cError::dependency("fifo", format!("an earlier message of group {g} failed; kept in order"));
            outcomes.push(RecordOutcome { message_id, result: Err(err) });
            continue;
        }
        let span = info_span!("record", message_id = %message_id);
        let result = handle_record(svc, step, &record, in_progress_until).instrument(span).await;
        if result.is_err()
            && let Some(g) = group
        {
            stopped_groups.insert(g);
        }
        outcomes.push(RecordOutcome { message_id, result });
    }
    outcomes
}

fn failure(message_id: &str) -> BatchItemFailure {
    let mut f = BatchItemFailure::default();
    f.item_identifier = message_id.to_owned();
    f
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
    in_progress_until: DateTime<Utc>,
) -> Result<Option<Handled>, O2cError> {
    let body = record.body.as_deref().unwrap_or_default();
    let result = match decode_body(body) {
        Ok(event) => svc.handle(step, &event, in_progress_until).await,
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
                receive_count: record.attributes.get("ApproximateReceiveCount").and_then(|n| n.parse().ok()).unwrap_or(0),
                at: svc.platform().clock().now(),
            };
            if let Err(store_err) = svc.platform().store().record_failure(&failure).await {
                warn!(error = %store_err, "could not record the failure reason");
            }
            Err(e)
        }
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
        .or_else(|| s(&["detail", "payload", "opportunity_id"]).map(|o| o2c_domain::events::engagement_id_for(&o)));
    let rejection_id = format!("{}#{}", step.name(), event_id.clone().unwrap_or_else(|| message_id.to_owned()));
    RejectedMessage {
        rejection_id,
        step: step.name().to_owned(),
        rejected_at: now,
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
