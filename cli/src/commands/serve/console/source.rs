//! Where the console reads and acts: the embedded runtime `o2c serve` runs, or a deployed
//! stage's tables, queues and bus reached with the operator's own AWS credentials
//! (`o2c serve --target aws`). The pages are written once over the store port
//! ([`with_store!`]) and these few operations.

use std::time::Duration;

use anyhow::Result;
use chrono::{DateTime, Utc};
use o2c_app::bus::PutEventsEntry;
use o2c_app::clock::{Clock, SystemClock};
use o2c_aws::eventbridge::EventBridgePublisher;
use o2c_embedded::Runtime;

use crate::backend::aws::Aws;
use crate::backend::{Backend, MessageRow};

/// A deployed stage, for the console.
pub struct Stage {
    /// The operator commands' AWS engine (store, queues, redrive).
    pub aws: Aws,
    /// The stage's bus.
    pub bus: EventBridgePublisher,
    /// Its name.
    pub bus_name: String,
}

/// The console's data.
pub enum Source {
    /// The runtime of `o2c serve` (its file, its bus, its workers).
    Embedded(Runtime),
    /// A deployed stage (`o2c serve --target aws`).
    Aws(Box<Stage>),
}

/// Runs `$body` with `$st` bound to the source's state store (both implement the same ports).
macro_rules! with_store {
    ($source:expr, $st:ident => $body:expr) => {
        match &$source {
            $crate::commands::serve::console::source::Source::Embedded(rt) => {
                let $st = rt.store();
                $body
            }
            $crate::commands::serve::console::source::Source::Aws(stage) => {
                let $st = $crate::backend::Backend::store(&stage.aws);
                $body
            }
        }
    };
}
pub(crate) use with_store;

/// One queue and, for a dead-letter queue, its messages.
pub struct QueueView {
    /// Logical id.
    pub name: String,
    /// Visible messages.
    pub visible: u64,
    /// In flight.
    pub in_flight: u64,
    /// A dead-letter queue.
    pub dead_letter: bool,
    /// Where a redrive sends its messages.
    pub source: Option<String>,
    /// Its messages, with their recorded failures (dead-letter queues only).
    pub messages: Vec<MessageRow>,
}

impl Source {
    /// Where the data comes from.
    pub fn label(&self) -> String {
        match self {
            Self::Embedded(rt) => format!("db {}", rt.db_path().display()),
            Self::Aws(s) => format!("{} on AWS (bus {})", s.aws.label(), s.bus_name),
        }
    }

    /// Now, by the source's clock.
    pub fn now(&self) -> DateTime<Utc> {
        match self {
            Self::Embedded(rt) => rt.db().clock().now(),
            Self::Aws(_) => SystemClock.now(),
        }
    }

    /// Publishes one entry; its event id, or why not.
    pub async fn publish(&self, entry: PutEventsEntry) -> Result<String, String> {
        match self {
            Self::Embedded(rt) => match rt.put_events(vec![entry]).await {
                Ok(resp) if resp.failed_entry_count == 0 => Ok(resp.entries.first().and_then(|e| e.event_id.clone()).unwrap_or_default()),
                Ok(resp) => Err(resp.entries.first().and_then(|e| e.error_message.clone()).unwrap_or_else(|| "refused".into())),
                Err(e) => Err(e.to_string()),
            },
            Self::Aws(s) => {
                let entry = PutEventsEntry { event_bus_name: Some(s.bus_name.clone()), ..entry };
                s.bus.put_entries(&[entry]).await.map(|ids| ids.into_iter().next().unwrap_or_default()).map_err(|e| e.to_string())
            }
        }
    }

    /// Every queue's depth; the dead-letter queues' messages (at most `peek` each).
    pub async fn queues(&self, peek: usize) -> Result<Vec<QueueView>> {
        match self {
            Self::Embedded(rt) => {
                let topo = rt.topology();
                let mut out = Vec::new();
                for name in topo.queues.keys() {
                    let d = rt.bus().depth(name).await?;
                    let dead_letter = topo.is_dlq(name);
                    let messages = if dead_letter && d.visible + d.in_flight > 0 {
                        rt.bus().list(name, peek).await?.into_iter().map(crate::backend::embedded::message_row).collect()
                    } else {
                        Vec::new()
                    };
                    let source = topo.source_of_dlq(name).map(|q| q.logical_id.clone());
                    out.push(QueueView { name: name.clone(), visible: d.visible, in_flight: d.in_flight, dead_letter, source, messages });
                }
                Ok(out)
            }
            Self::Aws(s) => {
                let topo = s.aws.topology();
                let mut out = Vec::new();
                for q in s.aws.queues().await? {
                    let messages = if q.dead_letter && q.visible > 0 { s.aws.messages(&q.queue).await? } else { Vec::new() };
                    let source = topo.source_of_dlq(&q.queue).map(|x| x.logical_id.clone());
                    out.push(QueueView {
                        name: q.queue,
                        visible: q.visible,
                        in_flight: q.in_flight,
                        dead_letter: q.dead_letter,
                        source,
                        messages: messages.into_iter().take(peek).collect(),
                    });
                }
                Ok(out)
            }
        }
    }

    /// Messages in the dead-letter queues.
    pub async fn dead_letters(&self) -> Result<u64> {
        match self {
            Self::Embedded(rt) => Ok(rt.dead_letters().await?),
            Self::Aws(s) => Ok(s.aws.queues().await?.iter().filter(|q| q.dead_letter).map(|q| q.visible + q.in_flight).sum()),
        }
    }

    /// Whether `queue` is a dead-letter queue of the template.
    pub fn is_dlq(&self, queue: &str) -> bool {
        match self {
            Self::Embedded(rt) => rt.topology().is_dlq(queue),
            Self::Aws(s) => s.aws.topology().is_dlq(queue),
        }
    }

    /// Moves up to `limit` messages of a dead-letter queue back; how many, and where to.
    pub async fn redrive(&self, dlq: &str, limit: usize) -> Result<(usize, String)> {
        match self {
            Self::Embedded(rt) => {
                let moved = rt.bus().redrive(dlq, limit).await?;
                let to = rt.topology().source_of_dlq(dlq).map_or_else(|| "the bus".to_owned(), |q| q.logical_id.clone());
                Ok((moved, to))
            }
            Self::Aws(s) => s.aws.redrive(dlq, limit, &|_| {}).await,
        }
    }

    /// How long an action may take to be processed before its page is shown anyway: the
    /// embedded workers take milliseconds; on AWS a Lambda function or `serve`'s pollers
    /// take a receive and an invocation.
    pub fn processed_within(&self) -> Duration {
        match self {
            Self::Embedded(_) => Duration::from_secs(10),
            Self::Aws(_) => Duration::from_secs(30),
        }
    }
}
