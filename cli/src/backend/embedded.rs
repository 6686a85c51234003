//! `--target embedded`: a SQLite file (`--db`), read alongside a running `o2c serve`.

use std::sync::Arc;
use std::time::Duration;

use anyhow::Result;
use chrono::{DateTime, Utc};
use o2c_app::bus::MAX_ENTRIES_PER_PUT;
use o2c_embedded::bus::LocalBus;
use o2c_embedded::store::SqliteStore;
use o2c_embedded::{Runtime, RuntimeOptions};

use super::{Backend, MessageRow, QueueRow};
use crate::{Target, open_existing, template};

/// The embedded engine over one database file.
pub struct Embedded {
    target: Target,
    store: SqliteStore,
    bus: LocalBus,
}

impl Embedded {
    /// Opens the database `--db` names (it must exist).
    pub fn open(target: &Target) -> Result<Self> {
        let db = open_existing(target.db()?)?;
        let topo = Arc::new(o2c_topology::Topology::from_sam_yaml(&template(target.template.as_deref())?.text)?);
        let name = format!("o2c-{}", topo.bus);
        Ok(Self { target: target.clone(), store: SqliteStore::new(db.clone()), bus: LocalBus::new(db, topo, name)? })
    }
}

/// A queued message as operators see it: its last failure is its reason.
pub fn message_row(m: o2c_embedded::bus::QueueMessage) -> MessageRow {
    MessageRow {
        message_id: m.message_id,
        sent_at: Some(m.sent_at),
        receive_count: Some(m.receive_count),
        detail_type: m.detail_type,
        event_id: m.event_id,
        reason: m.last_error,
    }
}

impl Backend for Embedded {
    type Store = SqliteStore;

    fn store(&self) -> &SqliteStore {
        &self.store
    }

    fn label(&self) -> String {
        format!("db {}", self.target.db.as_deref().map(|p| p.display().to_string()).unwrap_or_default())
    }

    async fn queues(&self) -> Result<Vec<QueueRow>> {
        let mut rows = Vec::new();
        for q in self.bus.topology().queues.keys() {
            let d = self.bus.depth(q).await?;
            rows.push(QueueRow {
                queue: q.clone(),
                visible: d.visible,
                in_flight: d.in_flight,
                dead_letter: self.bus.topology().is_dlq(q),
            });
        }
        Ok(rows)
    }

    async fn messages(&self, queue: &str) -> Result<Vec<MessageRow>> {
        if !self.bus.topology().queues.contains_key(queue) {
            usage!("no queue {queue}; queues: {}", self.bus.topology().queues.keys().cloned().collect::<Vec<_>>().join(", "));
        }
        Ok(self.bus.list(queue, 1000).await?.into_iter().map(message_row).collect())
    }

    async fn redrive(&self, dlq: &str, limit: usize, progress: &(dyn Fn(usize) + Sync)) -> Result<(usize, String)> {
        if !self.bus.topology().is_dlq(dlq) {
            usage!("{dlq} is not a dead-letter queue of the template");
        }
        let moved = self.bus.redrive(dlq, limit).await?;
        progress(moved);
        let source =
            self.bus.topology().source_of_dlq(dlq).map(|q| q.logical_id.clone()).unwrap_or_else(|| "the bus (PutEvents)".to_owned());
        Ok((moved, source))
    }

    async fn archived(&self, from: Option<DateTime<Utc>>, to: Option<DateTime<Utc>>) -> Result<Vec<o2c_app::bus::PutEventsEntry>> {
        Ok(self.bus.archived(from, to).await?)
    }

    async fn replay(&self, from: DateTime<Utc>, to: DateTime<Utc>, archive: Option<String>) -> Result<String> {
        if archive.is_some() {
            usage!("--archive applies to --target aws; the embedded bus archives every event in the database");
        }
        let template = template(self.target.template.as_deref())?;
        let rt = Runtime::builder(self.target.db()?, o2c_embedded::reference::northwind()?)
            .template(&template.text)
            .options(RuntimeOptions::default())
            .open()
            .await?;
        let entries = rt.bus().archived(Some(from), Some(to)).await?;
        let n = entries.len();
        for chunk in entries.chunks(MAX_ENTRIES_PER_PUT) {
            rt.put_events(chunk.to_vec()).await?;
        }
        let report = rt.run_until_idle(Duration::from_secs(300)).await?;
        Ok(format!(
            "replayed {n} archived event(s); {} record(s) handled (duplicates are absorbed by idempotency and state)",
            report.succeeded
        ))
    }
}
