//! Bringing failed records back sooner than the queue's visibility timeout: the records a
//! batch reports with a hint (another invocation holds the record; a `Retry-After`) get a
//! `ChangeMessageVisibility` before the response is returned — the pattern Lambda's SQS
//! event source mapping leaves to the function.
//!
//! AWS limits relied on: `ChangeMessageVisibilityBatch` takes at most 10 entries; a
//! visibility timeout is 0 to 43 200 seconds (12 hours).

use std::collections::HashMap;

use aws_sdk_sqs::Client;
use aws_sdk_sqs::types::ChangeMessageVisibilityBatchRequestEntry;
use o2c_app::O2cError;
use o2c_app::sqs::VisibilityChange;
use tokio::sync::RwLock;
use tracing::{debug, warn};

/// `ChangeMessageVisibilityBatch` accepts at most 10 entries.
pub const MAX_VISIBILITY_BATCH: usize = 10;
/// The longest visibility timeout SQS accepts (12 hours).
pub const MAX_VISIBILITY_SECS: u64 = 43_200;

/// Applies `changes` on `queue_url`; failures are logged (the queue's own visibility
/// timeout still brings the records back).
pub async fn apply(sqs: &Client, queue_url: &str, changes: &[VisibilityChange]) {
    for chunk in changes.chunks(MAX_VISIBILITY_BATCH) {
        let entries: Vec<ChangeMessageVisibilityBatchRequestEntry> = chunk
            .iter()
            .enumerate()
            .filter_map(|(i, c)| {
                // Whole seconds, rounded up so a hint is never shortened.
                let secs = c.delay.as_secs() + u64::from(c.delay.subsec_nanos() > 0);
                ChangeMessageVisibilityBatchRequestEntry::builder()
                    .id(i.to_string())
                    .receipt_handle(&c.receipt_handle)
                    .visibility_timeout(i32::try_from(secs.min(MAX_VISIBILITY_SECS)).unwrap_or(0))
                    .build()
                    .ok()
            })
            .collect();
        match sqs.change_message_visibility_batch().queue_url(queue_url).set_entries(Some(entries)).send().await {
            Ok(out) => {
                for f in out.failed() {
                    warn!(id = f.id(), code = f.code(), "ChangeMessageVisibility refused for a record");
                }
                debug!(records = chunk.len(), "visibility hints applied");
            }
            Err(e) => warn!(error = %aws_sdk_sqs::error::DisplayErrorContext(&e), "ChangeMessageVisibilityBatch failed"),
        }
    }
}

/// Queue URLs by queue ARN, resolved once with `GetQueueUrl`.
#[derive(Default)]
pub struct QueueUrls(RwLock<HashMap<String, String>>);

impl QueueUrls {
    /// The URL of the queue with `arn` (`arn:aws:sqs:<region>:<account>:<name>`).
    pub async fn url(&self, sqs: &Client, arn: &str) -> Result<String, O2cError> {
        if let Some(u) = self.0.read().await.get(arn) {
            return Ok(u.clone());
        }
        let parts: Vec<&str> = arn.split(':').collect();
        let (Some(account), Some(name)) = (parts.get(4), parts.get(5)) else {
            return Err(O2cError::Bug(format!("`{arn}` is not an SQS queue ARN")));
        };
        let out = sqs
            .get_queue_url()
            .queue_name(*name)
            .queue_owner_aws_account_id(*account)
            .send()
            .await
            .map_err(|e| crate::sdk_error("sqs", &e))?;
        let url = out.queue_url().unwrap_or_default().to_owned();
        self.0.write().await.insert(arn.to_owned(), url.clone());
        Ok(url)
    }
}
