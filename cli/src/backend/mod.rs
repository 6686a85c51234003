//! The two engines every operator command runs on, behind one trait: the embedded SQLite
//! file ([`embedded::Embedded`]) and a stage's AWS resources ([`aws::Aws`]). A command is
//! written once, generic over [`Backend`]; `with_backend!` picks the engine from `--target`.

pub mod aws;
pub mod embedded;

use anyhow::Result;
use chrono::{DateTime, Utc};
use o2c_app::ports::{EngagementStore, RejectionStore};
use serde::Serialize;

/// One queue's depth.
#[derive(Debug, Clone, Serialize)]
pub struct QueueRow {
    /// Logical id.
    pub queue: String,
    /// Visible messages.
    pub visible: u64,
    /// In flight (received, or waiting out a retry delay).
    pub in_flight: u64,
    /// A dead-letter queue.
    pub dead_letter: bool,
}

/// One message of a queue, with why it failed.
#[derive(Debug, Clone, Serialize)]
pub struct MessageRow {
    /// Message id.
    pub message_id: String,
    /// Enqueued at, when known.
    pub sent_at: Option<DateTime<Utc>>,
    /// Receives so far.
    pub receive_count: Option<u32>,
    /// `detail-type`.
    pub detail_type: Option<String>,
    /// `detail.event_id`.
    pub event_id: Option<String>,
    /// The recorded failure.
    pub reason: Option<String>,
}

/// An engine for operator commands.
pub trait Backend {
    /// Its state store.
    type Store: EngagementStore + RejectionStore;

    /// The store.
    fn store(&self) -> &Self::Store;

    /// Where the commands run (`db o2c.db`, `stage dev`).
    fn label(&self) -> String;

    /// Depth of every queue of the template.
    fn queues(&self) -> impl Future<Output = Result<Vec<QueueRow>>>;

    /// Messages of one queue, with their recorded failure reasons.
    fn messages(&self, queue: &str) -> impl Future<Output = Result<Vec<MessageRow>>>;

    /// Moves up to `limit` messages of a DLQ back to its source queue; `progress(n)` after
    /// each. Returns how many moved and the source queue.
    fn redrive(&self, dlq: &str, limit: usize, progress: &(dyn Fn(usize) + Sync)) -> impl Future<Output = Result<(usize, String)>>;

    /// Replays the archived events of `[from, to)`; a sentence saying what happened.
    fn replay(&self, from: DateTime<Utc>, to: DateTime<Utc>, archive: Option<String>) -> impl Future<Output = Result<String>>;

    /// The events the bus accepted in `[from, to)`, oldest first (for exports).
    fn archived(
        &self,
        from: Option<DateTime<Utc>>,
        to: Option<DateTime<Utc>>,
    ) -> impl Future<Output = Result<Vec<o2c_app::bus::PutEventsEntry>>>;
}

/// Runs `$body` with `$b` bound to the backend `--target` selects.
#[macro_export]
macro_rules! with_backend {
    ($target:expr, $b:ident => $body:expr) => {
        match $target.target {
            $crate::TargetKind::Embedded => {
                let $b = $crate::backend::embedded::Embedded::open(&$target)?;
                $body
            }
            $crate::TargetKind::Aws => {
                let $b = $crate::backend::aws::Aws::connect(&$target).await?;
                $body
            }
        }
    };
}
