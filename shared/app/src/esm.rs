//! One event-source-mapping driver for every consumer: the embedded runtime's workers and
//! the AWS poller hand a received batch to [`invoke`], which does what Lambda's SQS event
//! source mapping does with a function's answer — the records through the SQS batch
//! handler, successes deleted, failures brought back after their hint (or the queue's own
//! retry policy). Each consumer brings its queue behind [`QueueOps`] and keeps only its
//! receive loop (long polling, or a wake-up on enqueue).

use std::collections::HashSet;
use std::time::Duration;

use aws_lambda_events::event::sqs::{SqsEvent, SqsMessage};
use chrono::{DateTime, Utc};
use o2c_domain::workflow::Step;
use tracing::{debug, warn};

use crate::error::O2cError;
use crate::ports::Platform;
use crate::service::StepService;
use crate::sqs::{BatchContext, process_batch, receive_count};

/// The queue operations the driver needs.
pub trait QueueOps: Send + Sync {
    /// Deletes processed records.
    fn delete(&self, records: &[&SqsMessage]) -> impl Future<Output = Result<(), O2cError>> + Send;
    /// A record failed: make it visible again after `hint`, or by the consumer's own
    /// policy when there is none (SQS: the visibility timeout; embedded: a backoff).
    fn retry(&self, record: &SqsMessage, hint: Option<Duration>, error: &O2cError) -> impl Future<Output = ()> + Send;
}

/// A function and its queue, as the template declares them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FunctionQueue {
    /// The step (binary).
    pub step: Step,
    /// Function timeout.
    pub timeout: Duration,
    /// The queue's `maxReceiveCount`.
    pub max_receive_count: Option<u32>,
    /// The queue's DLQ.
    pub dead_letter_queue: Option<String>,
}

/// What one invocation did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Invoked {
    /// Records handled (parked rejections included).
    pub succeeded: u64,
    /// Of those, records parked as rejected (with every reason, for an operator).
    pub parked: u64,
    /// Records reported for retry.
    pub failed: u64,
    /// Failed records that carried a hint.
    pub hinted: u64,
}

/// One invocation of `f` on `records` starting at `now`.
pub async fn invoke<P: Platform, Q: QueueOps>(
    svc: &StepService<P>,
    f: &FunctionQueue,
    records: Vec<SqsMessage>,
    queue: &Q,
    now: DateTime<Utc>,
) -> Invoked {
    let batch = BatchContext {
        // The function's timeout bounds the invocation, as Lambda's does.
        deadline: now + chrono::Duration::from_std(f.timeout).unwrap_or(chrono::Duration::seconds(30)),
        max_receive_count: f.max_receive_count,
        dead_letter_queue: f.dead_letter_queue.clone(),
    };
    let mut event = SqsEvent::default();
    event.records = records.clone();
    let outcomes = process_batch(svc, f.step, event, &batch).await;
    let failed_ids: HashSet<String> = outcomes.iter().filter(|o| o.result.is_err()).map(|o| o.message_id.clone()).collect();
    let mut report = Invoked::default();
    for o in &outcomes {
        let Err(e) = &o.result else {
            report.succeeded += 1;
            report.parked += u64::from(matches!(o.result, Ok(None)));
            continue;
        };
        report.failed += 1;
        let hint = o.retry_after();
        report.hinted += u64::from(hint.is_some());
        if let Some(record) = records.iter().find(|r| r.message_id.as_deref() == Some(o.message_id.as_str())) {
            debug!(message_id = %o.message_id, receive_count = receive_count(record), hint_ms = hint.map(|h| h.as_millis() as u64), "record will be redelivered");
            queue.retry(record, hint, e).await;
        }
    }
    let done: Vec<&SqsMessage> = records.iter().filter(|r| !failed_ids.contains(r.message_id.as_deref().unwrap_or_default())).collect();
    if !done.is_empty()
        && let Err(e) = queue.delete(&done).await
    {
        warn!(error = %e, "delete failed; the records will be redelivered and absorbed as duplicates");
    }
    report
}
