//! EventBridge publisher: `PutEvents` in batches of at most 10 entries (the API limit),
//! each entry checked against the 256 KB entry limit first (a clear error instead of a
//! rejected batch), and only the entries EventBridge reports as failed (`FailedEntryCount`
//! > 0) are retried, with backoff.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use aws_sdk_eventbridge::Client;
use aws_sdk_eventbridge::types::PutEventsRequestEntry;
use o2c_app::O2cError;
use o2c_app::bus::{MAX_ENTRIES_PER_PUT, PutEventsEntry, entry_for, validate_entry};
use o2c_app::ports::EventPublisher;
use o2c_domain::events::OutgoingEvent;
use tracing::warn;

/// Attempts per entry before the publish fails (and the message is retried by SQS).
const MAX_ATTEMPTS: u32 = 4;

/// Publishes to one event bus.
#[derive(Clone)]
pub struct EventBridgePublisher {
    client: Client,
    bus_name: String,
    requests: Arc<AtomicU64>,
}

/// The SDK entry; an entry that names no bus goes to `bus` (the stage's), never to the
/// account's default bus.
fn to_sdk(e: &PutEventsEntry, bus: &str) -> PutEventsRequestEntry {
    PutEventsRequestEntry::builder()
        .set_source(e.source.clone())
        .set_detail_type(e.detail_type.clone())
        .set_detail(e.detail.clone())
        .event_bus_name(e.event_bus_name.clone().unwrap_or_else(|| bus.to_owned()))
        .set_resources(e.resources.clone())
        .set_time(e.time.map(|t| aws_smithy_types::DateTime::from_millis(t.timestamp_millis())))
        .build()
}

impl EventBridgePublisher {
    /// A publisher to `bus_name` with a shared client.
    pub fn new(client: Client, bus_name: String) -> Self {
        Self { client, bus_name, requests: Arc::new(AtomicU64::new(0)) }
    }

    /// `PutEvents` requests made so far.
    pub fn requests(&self) -> u64 {
        self.requests.load(Ordering::Relaxed)
    }

    /// Validates every entry (256 KB, JSON object detail) before anything is sent, then
    /// sends them (any number), retrying only failed entries. Returns the event ids.
    pub async fn put_entries(&self, entries: &[PutEventsEntry]) -> Result<Vec<String>, O2cError> {
        for e in entries {
            validate_entry(e).map_err(|err| {
                O2cError::Bug(format!(
                    "{} {} cannot be published: {err}",
                    e.source.as_deref().unwrap_or("?"),
                    e.detail_type.as_deref().unwrap_or("?")
                ))
            })?;
        }
        self.send_with_retry(entries).await
    }

    /// Sends entries in `PutEvents` calls of at most 10 and re-sends only the entries
    /// EventBridge reports as failed, up to 4 attempts; all or an error.
    pub async fn send_with_retry(&self, entries: &[PutEventsEntry]) -> Result<Vec<String>, O2cError> {
        let results = self.send_each(entries).await?;
        let failing = results.iter().filter(|r| r.is_err()).count();
        if failing > 0 {
            return Err(O2cError::dependency("eventbridge", format!("{failing} entries still failing after {MAX_ATTEMPTS} attempts")));
        }
        Ok(results.into_iter().flatten().collect())
    }

    /// Like [`Self::send_with_retry`], but answers per entry, in order: its event id, or the
    /// last error EventBridge gave it after every attempt — so a caller can say which
    /// entries were published when some were not. `Err` only when a request failed as a
    /// whole (what went out before it stays published).
    pub async fn send_each(&self, entries: &[PutEventsEntry]) -> Result<Vec<Result<String, String>>, O2cError> {
        let mut results: Vec<Result<String, String>> = vec![Err(String::new()); entries.len()];
        let mut pending: Vec<usize> = (0..entries.len()).collect();
        for attempt in 0..MAX_ATTEMPTS {
            let mut failed = Vec::new();
            for chunk in pending.chunks(MAX_ENTRIES_PER_PUT) {
                self.requests.fetch_add(1, Ordering::Relaxed);
                let out = self
                    .client
                    .put_events()
                    .set_entries(Some(chunk.iter().map(|i| to_sdk(&entries[*i], &self.bus_name)).collect()))
                    .send()
                    .await
                    .map_err(|e| crate::sdk_error("eventbridge", &e))?;
                // Results come back in request order; a failed entry has an error code.
                for (i, r) in chunk.iter().zip(out.entries()) {
                    match (r.event_id(), r.error_code()) {
                        (Some(id), None) => results[*i] = Ok(id.to_owned()),
                        (_, code) => {
                            results[*i] = Err(format!("{}: {}", code.unwrap_or("unknown"), r.error_message().unwrap_or_default()));
                            failed.push(*i);
                        }
                    }
                }
            }
            if failed.is_empty() {
                break;
            }
            if attempt + 1 < MAX_ATTEMPTS {
                warn!(failed = failed.len(), attempt, "PutEvents partially failed; retrying the failed entries only");
                tokio::time::sleep(Duration::from_millis(100 << attempt)).await;
            }
            pending = failed;
        }
        Ok(results)
    }
}

impl EventPublisher for EventBridgePublisher {
    async fn publish(&self, events: &[OutgoingEvent]) -> Result<(), O2cError> {
        if events.is_empty() {
            return Ok(());
        }
        let entries: Vec<PutEventsEntry> = events.iter().map(|e| entry_for(e, &self.bus_name)).collect();
        self.put_entries(&entries).await.map(|_| ())
    }
}
