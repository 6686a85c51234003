//! A local stand-in for Lambda's SQS event source mapping and for EventBridge Pipes, over
//! real SQS APIs: `o2c serve --target aws` runs every function of the template on this
//! machine against a dev account or an emulator, and the emulator tests drive the
//! handlers with it.
//!
//! Semantics kept from the event source mapping: long-polled batches of up to `BatchSize`
//! (≤ 10, the `ReceiveMessage` limit), at most `MaximumConcurrency` concurrent batches
//! per function, the records handed over as an `SqsEvent`, successes deleted with
//! `DeleteMessageBatch`, reported failures left to reappear after their visibility timeout
//! — or after their hint, applied with `ChangeMessageVisibility` like the Lambda shell
//! does — and moved to the DLQ after `maxReceiveCount` by SQS itself. Pipes forward a source
//! message to their FIFO target with the group and deduplication ids read from the body,
//! then delete it.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use aws_lambda_events::event::sqs::SqsMessage;
use aws_sdk_sqs::Client;
use aws_sdk_sqs::types::{DeleteMessageBatchRequestEntry, MessageSystemAttributeName};
use o2c_app::esm::{self, FunctionQueue, QueueOps};
use o2c_app::ports::Platform;
use o2c_app::{Step, StepService};
use o2c_topology::topology::{FunctionDef, PipeDef, Topology};
use tokio::sync::watch;
use tokio::task::JoinSet;
use tracing::{debug, warn};

use crate::resources::Deployed;

/// `ReceiveMessage` returns at most 10 messages.
pub const MAX_RECEIVE: i32 = 10;

/// Poller tunables.
#[derive(Debug, Clone)]
pub struct PollerOptions {
    /// Long-poll wait (0–20 s).
    pub wait_time_secs: i32,
    /// Cap on concurrent batches per function (the template's `MaximumConcurrency` applies too).
    pub max_concurrency: u32,
    /// When set, a failed record is made visible again after this delay
    /// (`ChangeMessageVisibility`) instead of waiting out the queue's visibility timeout.
    pub failure_visibility: Option<Duration>,
}

impl Default for PollerOptions {
    fn default() -> Self {
        Self { wait_time_secs: 5, max_concurrency: 2, failure_visibility: None }
    }
}

/// Counters of a running poller.
#[derive(Debug, Default)]
pub struct PollerStats {
    /// Batches handed to functions.
    pub batches: std::sync::atomic::AtomicU64,
    /// Records reported for retry.
    pub failures: std::sync::atomic::AtomicU64,
    /// Messages moved by pipes.
    pub piped: std::sync::atomic::AtomicU64,
    /// Failed records brought back early by a visibility hint.
    pub hinted: std::sync::atomic::AtomicU64,
}

/// The poller for one stage.
pub struct Poller<P: Platform> {
    sqs: Client,
    svc: Arc<StepService<P>>,
    topology: Arc<Topology>,
    deployed: Arc<Deployed>,
    options: PollerOptions,
    stats: Arc<PollerStats>,
}

fn to_record(m: &aws_sdk_sqs::types::Message, arn: &str) -> SqsMessage {
    let mut r = SqsMessage::default();
    r.message_id = m.message_id().map(str::to_owned);
    r.receipt_handle = m.receipt_handle().map(str::to_owned);
    r.body = m.body().map(str::to_owned);
    r.md5_of_body = m.md5_of_body().map(str::to_owned);
    r.event_source = Some("aws:sqs".into());
    r.event_source_arn = Some(arn.to_owned());
    r.aws_region = arn.split(':').nth(3).map(str::to_owned);
    r.attributes =
        m.attributes().map(|a| a.iter().map(|(k, v)| (k.as_str().to_owned(), v.clone())).collect::<HashMap<_, _>>()).unwrap_or_default();
    r
}

impl<P: Platform> Poller<P> {
    /// A poller over a deployed (or emulated) stage.
    pub fn new(sqs: Client, svc: Arc<StepService<P>>, topology: Arc<Topology>, deployed: Arc<Deployed>, options: PollerOptions) -> Self {
        Self { sqs, svc, topology, deployed, options, stats: Arc::new(PollerStats::default()) }
    }

    /// Counters.
    pub fn stats(&self) -> Arc<PollerStats> {
        self.stats.clone()
    }

    /// Starts one task per allowed concurrent batch of every function, and one per pipe.
    pub fn start(self: &Arc<Self>, shutdown: watch::Receiver<bool>) -> JoinSet<()> {
        let mut set = JoinSet::new();
        for f in self.topology.functions.clone() {
            let n = f.max_concurrency.unwrap_or(u32::MAX).min(self.options.max_concurrency).max(1);
            for _ in 0..n {
                let me = self.clone();
                let f = f.clone();
                let stop = shutdown.clone();
                set.spawn(async move { me.function_loop(f, stop).await });
            }
        }
        for p in self.topology.pipes.clone() {
            let me = self.clone();
            let stop = shutdown.clone();
            set.spawn(async move { me.pipe_loop(p, stop).await });
        }
        set
    }

    async fn receive(&self, url: &str, max: i32) -> Vec<aws_sdk_sqs::types::Message> {
        match self
            .sqs
            .receive_message()
            .queue_url(url)
            .max_number_of_messages(max.clamp(1, MAX_RECEIVE))
            .wait_time_seconds(self.options.wait_time_secs)
            .message_system_attribute_names(MessageSystemAttributeName::All)
            .send()
            .await
        {
            Ok(out) => out.messages().to_vec(),
            Err(e) => {
                warn!(queue = url, error = ?e, "ReceiveMessage failed");
                tokio::time::sleep(Duration::from_secs(1)).await;
                Vec::new()
            }
        }
    }

    async fn function_loop(&self, f: FunctionDef, mut stop: watch::Receiver<bool>) {
        let Some(step) = Step::from_name(&f.binary) else { return };
        let (Some(url), Some(arn)) = (self.deployed.queue_urls.get(&f.queue).cloned(), self.deployed.queue_arns.get(&f.queue).cloned())
        else {
            warn!(queue = %f.queue, "queue not deployed; function not polled");
            return;
        };
        let redrive = self.topology.queues.get(&f.queue).and_then(|q| q.redrive.clone());
        loop {
            if *stop.borrow() {
                return;
            }
            let msgs = tokio::select! {
                m = self.receive(&url, i32::try_from(f.batch_size).unwrap_or(MAX_RECEIVE)) => m,
                _ = stop.changed() => return,
            };
            if msgs.is_empty() {
                continue;
            }
            self.stats.batches.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            let fq = FunctionQueue {
                step,
                timeout: Duration::from_secs(u64::from(f.timeout_secs)),
                max_receive_count: redrive.as_ref().map(|r| r.max_receive_count),
                dead_letter_queue: redrive.as_ref().map(|r| r.dead_letter_queue.clone()),
            };
            let records = msgs.iter().map(|m| to_record(m, &arn)).collect();
            let queue = SqsQueue { sqs: &self.sqs, url: &url, failure_visibility: self.options.failure_visibility };
            let invoked = esm::invoke(&self.svc, &fq, records, &queue, self.svc.platform().clock().now()).await;
            self.stats.failures.fetch_add(invoked.failed, std::sync::atomic::Ordering::Relaxed);
            self.stats.hinted.fetch_add(invoked.hinted, std::sync::atomic::Ordering::Relaxed);
            debug!(queue = %f.queue, records = msgs.len(), failed = invoked.failed, "batch done");
        }
    }

    async fn pipe_loop(&self, p: PipeDef, mut stop: watch::Receiver<bool>) {
        let (Some(src), Some(dst)) = (self.deployed.queue_urls.get(&p.source).cloned(), self.deployed.queue_urls.get(&p.target).cloned())
        else {
            warn!(pipe = %p.logical_id, "pipe queues not deployed; pipe not run");
            return;
        };
        let fifo = self.topology.queues.get(&p.target).is_some_and(|q| q.fifo);
        loop {
            if *stop.borrow() {
                return;
            }
            let msgs = tokio::select! {
                m = self.receive(&src, i32::try_from(p.batch_size).unwrap_or(MAX_RECEIVE)) => m,
                _ = stop.changed() => return,
            };
            for m in msgs {
                let body_text = m.body().unwrap_or_default();
                let body: serde_json::Value = serde_json::from_str(body_text).unwrap_or_default();
                let group = p.message_group_path.as_deref().and_then(|path| PipeDef::eval(path, &body));
                let dedup = p.deduplication_path.as_deref().and_then(|path| PipeDef::eval(path, &body));
                if fifo && group.is_none() {
                    warn!(pipe = %p.logical_id, "message has no value at the MessageGroupId path; left for redrive");
                    continue;
                }
                let sent = self
                    .sqs
                    .send_message()
                    .queue_url(&dst)
                    .message_body(body_text)
                    .set_message_group_id(group)
                    .set_message_deduplication_id(dedup)
                    .send()
                    .await;
                match sent {
                    Ok(_) => {
                        self.stats.piped.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                        if let Some(h) = m.receipt_handle() {
                            let _ = self.sqs.delete_message().queue_url(&src).receipt_handle(h).send().await;
                        }
                    }
                    Err(e) => warn!(pipe = %p.logical_id, error = ?e, "pipe target SendMessage failed; the source message will be retried"),
                }
            }
        }
    }
}

/// An SQS queue behind the shared driver: hints (and the poller's `failure_visibility`)
/// become `ChangeMessageVisibility`; otherwise the queue's visibility timeout applies.
struct SqsQueue<'a> {
    sqs: &'a Client,
    url: &'a str,
    failure_visibility: Option<Duration>,
}

impl QueueOps for SqsQueue<'_> {
    async fn delete(&self, records: &[&SqsMessage]) -> Result<(), o2c_app::O2cError> {
        // `DeleteMessageBatch` takes at most 10 entries; a batch holds at most 10 records.
        for chunk in records.chunks(MAX_RECEIVE as usize) {
            let entries: Vec<DeleteMessageBatchRequestEntry> = chunk
                .iter()
                .enumerate()
                .filter_map(|(i, r)| {
                    DeleteMessageBatchRequestEntry::builder()
                        .id(i.to_string())
                        .receipt_handle(r.receipt_handle.clone().unwrap_or_default())
                        .build()
                        .ok()
                })
                .collect();
            self.sqs
                .delete_message_batch()
                .queue_url(self.url)
                .set_entries(Some(entries))
                .send()
                .await
                .map_err(|e| crate::sdk_error("sqs", &e))?;
        }
        Ok(())
    }

    async fn retry(&self, record: &SqsMessage, hint: Option<Duration>, _error: &o2c_app::O2cError) {
        let (Some(delay), Some(handle)) = (hint.or(self.failure_visibility), record.receipt_handle.clone()) else { return };
        let change =
            o2c_app::sqs::VisibilityChange { message_id: record.message_id.clone().unwrap_or_default(), receipt_handle: handle, delay };
        crate::visibility::apply(self.sqs, self.url, std::slice::from_ref(&change)).await;
    }
}

/// Messages waiting or in flight in every function and pipe source queue.
pub async fn pending(sqs: &Client, topology: &Topology, deployed: &Deployed) -> Result<u64, o2c_app::O2cError> {
    let mut total = 0;
    for q in &topology.consumed_queues() {
        let Some(url) = deployed.queue_urls.get(q) else { continue };
        let (visible, in_flight) = crate::ops::depth(sqs, url).await?;
        total += visible + in_flight;
    }
    Ok(total)
}
