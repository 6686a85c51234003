//! Operator tools against AWS: DLQ inspection and redrive (receive → resend → delete;
//! moto and older SDKs lack `StartMessageMoveTask`), archive replay.

use std::time::Duration;

use aws_sdk_sqs::Client;
use aws_sdk_sqs::types::{MessageSystemAttributeName, QueueAttributeName};
use o2c_app::O2cError;

fn dep(service: &str, e: impl std::error::Error + 'static) -> O2cError {
    crate::sdk_error(service, &e)
}

/// Up to 10 messages (the `ReceiveMessage` limit), hidden for `visibility` seconds.
async fn receive(sqs: &Client, url: &str, visibility: i32) -> Result<Vec<aws_sdk_sqs::types::Message>, O2cError> {
    let out = sqs
        .receive_message()
        .queue_url(url)
        .max_number_of_messages(10)
        .visibility_timeout(visibility)
        .wait_time_seconds(1)
        .message_system_attribute_names(MessageSystemAttributeName::All)
        .send()
        .await
        .map_err(|e| dep("sqs", e))?;
    Ok(out.messages().to_vec())
}

/// A message seen in a DLQ.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct DlqMessage {
    /// Message id (the same as in the source queue).
    pub message_id: String,
    /// `detail-type` of the event.
    pub detail_type: Option<String>,
    /// `detail.event_id`.
    pub event_id: Option<String>,
    /// Receive count.
    pub receive_count: u32,
}

/// Peeks up to `limit` messages: receives them, then makes them visible again at once.
pub async fn peek(sqs: &Client, url: &str, limit: usize) -> Result<Vec<DlqMessage>, O2cError> {
    let mut seen = std::collections::HashMap::new();
    let mut handles = Vec::new();
    for _ in 0..(limit / 10 + 3) {
        let messages = receive(sqs, url, 30).await?;
        if messages.is_empty() {
            break;
        }
        for m in &messages {
            let body: serde_json::Value = serde_json::from_str(m.body().unwrap_or_default()).unwrap_or_default();
            let id = m.message_id().unwrap_or_default().to_owned();
            let count = m
                .attributes()
                .and_then(|a| a.get(&MessageSystemAttributeName::ApproximateReceiveCount))
                .and_then(|n| n.parse().ok())
                .unwrap_or(0);
            seen.entry(id.clone()).or_insert(DlqMessage {
                message_id: id,
                detail_type: body.get("detail-type").and_then(|v| v.as_str()).map(str::to_owned),
                event_id: body.pointer("/detail/event_id").and_then(|v| v.as_str()).map(str::to_owned),
                receive_count: count,
            });
            if let Some(h) = m.receipt_handle() {
                handles.push(h.to_owned());
            }
        }
        if seen.len() >= limit {
            break;
        }
    }
    for h in handles {
        let _ = sqs.change_message_visibility().queue_url(url).receipt_handle(h).visibility_timeout(0).send().await;
    }
    let mut out: Vec<DlqMessage> = seen.into_values().collect();
    out.sort_by(|a, b| a.message_id.cmp(&b.message_id));
    out.truncate(limit);
    Ok(out)
}

/// Moves up to `limit` messages from `dlq_url` back to `source_url`: receive, send, then
/// delete. A crash between send and delete re-sends the message on the next run; the
/// handlers' idempotency absorbs the copy (and on a FIFO source the original message id
/// is the deduplication id, so SQS drops it within 5 minutes). `progress` is called after
/// every moved message.
pub async fn redrive(
    sqs: &Client,
    dlq_url: &str,
    source_url: &str,
    limit: usize,
    mut progress: impl FnMut(usize),
) -> Result<usize, O2cError> {
    let fifo = source_url.ends_with(".fifo");
    let mut moved = 0;
    let mut empty_polls = 0;
    while moved < limit && empty_polls < 2 {
        let messages = receive(sqs, dlq_url, 60).await?;
        if messages.is_empty() {
            empty_polls += 1;
            continue;
        }
        empty_polls = 0;
        for m in &messages {
            if moved >= limit {
                let _ = sqs
                    .change_message_visibility()
                    .queue_url(dlq_url)
                    .receipt_handle(m.receipt_handle().unwrap_or_default())
                    .visibility_timeout(0)
                    .send()
                    .await;
                continue;
            }
            let mut send = sqs.send_message().queue_url(source_url).message_body(m.body().unwrap_or_default());
            if fifo {
                let group = m
                    .attributes()
                    .and_then(|a| a.get(&MessageSystemAttributeName::MessageGroupId))
                    .cloned()
                    .unwrap_or_else(|| "redrive".into());
                send = send.message_group_id(group).message_deduplication_id(m.message_id().unwrap_or_default());
            }
            send.send().await.map_err(|e| dep("sqs", e))?;
            sqs.delete_message()
                .queue_url(dlq_url)
                .receipt_handle(m.receipt_handle().unwrap_or_default())
                .send()
                .await
                .map_err(|e| dep("sqs", e))?;
            moved += 1;
            progress(moved);
        }
    }
    Ok(moved)
}

/// Publishes up to `limit` events EventBridge could not deliver (a rule target's
/// `DeadLetterConfig` queue holds the event itself) back onto the bus with `PutEvents`, then
/// deletes them: an SQS resend would bypass the rules. The rules route each to its targets
/// again; the handlers' idempotency absorbs an event a target had received after all. A
/// body that is not an event stays in the queue (made visible again) and is counted in
/// the second number.
pub async fn redrive_to_bus(
    sqs: &Client,
    dlq_url: &str,
    bus: &crate::eventbridge::EventBridgePublisher,
    limit: usize,
    mut progress: impl FnMut(usize),
) -> Result<(usize, usize), O2cError> {
    let mut moved = 0;
    let mut empty_polls = 0;
    // Bodies that are not events: left in the queue, seen once each (a batch holding only
    // those ends the run instead of receiving them forever).
    let mut kept = std::collections::HashSet::new();
    while moved < limit && empty_polls < 2 {
        let messages = receive(sqs, dlq_url, 60).await?;
        if messages.is_empty() {
            empty_polls += 1;
            continue;
        }
        let mut progressed = false;
        for m in &messages {
            let handle = m.receipt_handle().unwrap_or_default();
            let entries = serde_json::from_str::<serde_json::Value>(m.body().unwrap_or_default())
                .ok()
                .and_then(|v| o2c_app::bus::entries_from_json(&v).ok())
                .filter(|e| e.len() == 1);
            match entries {
                Some(entries) if moved < limit => {
                    bus.put_entries(&entries).await?;
                    sqs.delete_message().queue_url(dlq_url).receipt_handle(handle).send().await.map_err(|e| dep("sqs", e))?;
                    moved += 1;
                    progressed = true;
                    progress(moved);
                }
                other => {
                    if other.is_none() && kept.insert(m.message_id().unwrap_or_default().to_owned()) {
                        progressed = true;
                    }
                    let _ = sqs.change_message_visibility().queue_url(dlq_url).receipt_handle(handle).visibility_timeout(0).send().await;
                }
            }
        }
        empty_polls = if progressed { 0 } else { empty_polls + 1 };
    }
    Ok((moved, kept.len()))
}

/// Approximate number of messages in a queue.
pub async fn depth(sqs: &Client, url: &str) -> Result<(u64, u64), O2cError> {
    let out = sqs
        .get_queue_attributes()
        .queue_url(url)
        .attribute_names(QueueAttributeName::ApproximateNumberOfMessages)
        .attribute_names(QueueAttributeName::ApproximateNumberOfMessagesNotVisible)
        .send()
        .await
        .map_err(|e| dep("sqs", e))?;
    let a = out.attributes().cloned().unwrap_or_default();
    let get = |k: QueueAttributeName| a.get(&k).and_then(|v| v.parse().ok()).unwrap_or(0);
    Ok((get(QueueAttributeName::ApproximateNumberOfMessages), get(QueueAttributeName::ApproximateNumberOfMessagesNotVisible)))
}

/// Starts an EventBridge replay of `archive` into `bus_arn` for `[from, to)` and waits
/// until it completes (or `max` elapses). Returns the final state.
pub async fn replay(
    events: &aws_sdk_eventbridge::Client,
    archive_name: &str,
    bus_arn: &str,
    from: chrono::DateTime<chrono::Utc>,
    to: chrono::DateTime<chrono::Utc>,
    max: Duration,
) -> Result<String, O2cError> {
    let archive = events.describe_archive().archive_name(archive_name).send().await.map_err(|e| dep("eventbridge", e))?;
    let archive_arn = archive.archive_arn().unwrap_or_default().to_owned();
    let name = format!("o2c-replay-{}", o2c_app::ports::IdGenerator::new_id(&o2c_app::ports::RandomIds).replace('-', ""));
    let dest = aws_sdk_eventbridge::types::ReplayDestination::builder().arn(bus_arn).build().map_err(|e| O2cError::Bug(e.to_string()))?;
    events
        .start_replay()
        .replay_name(&name)
        .event_source_arn(archive_arn)
        .event_start_time(aws_smithy_types::DateTime::from_millis(from.timestamp_millis()))
        .event_end_time(aws_smithy_types::DateTime::from_millis(to.timestamp_millis()))
        .destination(dest)
        .send()
        .await
        .map_err(|e| dep("eventbridge", e))?;
    let start = std::time::Instant::now();
    loop {
        let d = events.describe_replay().replay_name(&name).send().await.map_err(|e| dep("eventbridge", e))?;
        let state = d.state().map(|s| s.as_str().to_owned()).unwrap_or_default();
        if ["COMPLETED", "FAILED", "CANCELLED"].contains(&state.as_str()) || start.elapsed() > max {
            return Ok(format!("{name}: {state}"));
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}
