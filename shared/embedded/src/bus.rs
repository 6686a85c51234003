//! The in-process event bus and queues, with EventBridge and SQS semantics:
//! - `put_events` validates each entry like EventBridge (required fields, JSON object
//!   detail, 256 KB), archives it, matches it against the template's rules and enqueues
//!   the full event envelope on every target queue — all in one SQLite transaction;
//! - queues give at-least-once delivery: a received message is invisible for the
//!   visibility timeout, deleted on success, made visible again on failure, and moved to
//!   the queue's DLQ once it has been received `maxReceiveCount` times;
//! - FIFO queues deliver a message group in order with at most one batch in flight per
//!   group, and drop a duplicate deduplication id within 5 minutes.

use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use o2c_app::O2cError;
use o2c_app::bus::{PutEventsEntry, PutEventsResponse, PutEventsResultEntry, entry_for, eventbridge_event, validate_entry};
use o2c_app::ports::EventPublisher;
use o2c_domain::events::OutgoingEvent;
use o2c_topology::routing::Router;
use o2c_topology::topology::Topology;
use rusqlite::{Connection, OptionalExtension, params};
use serde::Serialize;
use tokio::sync::Notify;

use crate::db::{Cached, Db, db_err};

/// Account id the embedded bus stamps on events.
pub const LOCAL_ACCOUNT: &str = "000000000000";
/// Region the embedded bus stamps on events.
pub const LOCAL_REGION: &str = "local";
/// SQS FIFO deduplication interval.
const FIFO_DEDUP_WINDOW_MS: i64 = 5 * 60 * 1000;

/// A receive's scan: the queue's visible messages in send order, walking the
/// `(queue, seq)` index so the rows read follow the batch size, not the backlog.
pub const RECEIVE_SQL: &str = "SELECT message_id, body, receive_count, group_id, sent_at, first_received_at, last_error \
     FROM messages INDEXED BY messages_by_queue_seq WHERE queue = ?1 AND visible_at <= ?2 ORDER BY seq LIMIT ?3";

/// The groups of a FIFO queue with a message in flight (a receive skips their messages).
pub const BLOCKED_GROUPS_SQL: &str = "SELECT DISTINCT group_id FROM messages WHERE queue = ?1 AND visible_at > ?2 AND group_id IS NOT NULL";

/// Whether a receive on a FIFO queue now would get a message: one visible in a group with
/// nothing in flight. The in-flight groups are collected once (an uncorrelated `NOT IN` is
/// materialised as one temporary index), and both sides read only the
/// `(queue, visible_at, group_id)` index, never the rows and their bodies.
pub const FIFO_VISIBLE_SQL: &str = "SELECT EXISTS (SELECT 1 FROM messages m WHERE m.queue = ?1 AND m.visible_at <= ?2 AND \
     (m.group_id IS NULL OR m.group_id NOT IN (SELECT b.group_id FROM messages b WHERE b.queue = ?1 AND b.visible_at > ?2 \
     AND b.group_id IS NOT NULL)))";

/// One statement asking each queue the same question: the column for queue `i` is the
/// `i`-th template with its `?1` bound to that queue and its `?2` to the time (`?1` of the
/// whole statement). A scheduler asks ~15 queues before every step: outside a batch a
/// statement per queue was a read transaction each (a pair of WAL-index locks), 9 % of a
/// simulation's CPU; inside one, it is still fifteen statements' overhead for one.
fn per_queue<'a>(templates: impl Iterator<Item = &'a str>) -> String {
    let columns: Vec<String> = templates
        .enumerate()
        .map(|(i, t)| format!("({})", t.replace("?1", "\u{0}").replace("?2", "?1").replace('\u{0}', &format!("?{}", i + 2))))
        .collect();
    format!("SELECT {}", columns.join(", "))
}

/// Runs a [`per_queue`] statement: one value per queue, in the order of `queues`.
fn per_queue_row<T: rusqlite::types::FromSql>(c: &Connection, sql: &str, now: i64, queues: &[String]) -> Result<Vec<T>, O2cError> {
    if queues.is_empty() {
        return Ok(Vec::new());
    }
    let n = queues.len();
    let values: Vec<&dyn rusqlite::ToSql> =
        std::iter::once(&now as &dyn rusqlite::ToSql).chain(queues.iter().map(|q| q as &dyn rusqlite::ToSql)).collect();
    c.prepare_cached(sql).and_then(|mut s| s.query_row(&values[..], |r| (0..n).map(|i| r.get(i)).collect())).map_err(db_err)
}

/// Queues a scheduler asks about together, with the statements that ask them
/// ([`LocalBus::probe`]; cheap to clone).
#[derive(Debug, Clone)]
pub struct QueueProbe(Arc<ProbeSql>);

#[derive(Debug)]
struct ProbeSql {
    queues: Vec<String>,
    visible: String,
    next: String,
}

/// A message handed to a consumer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReceivedMessage {
    /// Message id.
    pub message_id: String,
    /// Body (an EventBridge event as JSON).
    pub body: String,
    /// How many times it has been received, this time included.
    pub receive_count: u32,
    /// FIFO group.
    pub group_id: Option<String>,
    /// Enqueue time (ms since epoch).
    pub sent_at: i64,
    /// First receive time (ms since epoch).
    pub first_received_at: i64,
}

/// What one receive did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Received {
    /// Messages handed out.
    pub messages: Vec<ReceivedMessage>,
    /// Messages moved to the DLQ instead (received `maxReceiveCount` times).
    pub dead_lettered: Vec<DeadLettered>,
}

/// A message the queue moved to its DLQ.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeadLettered {
    /// Message id.
    pub message_id: String,
    /// Body.
    pub body: String,
    /// Receives it had.
    pub receive_count: u32,
    /// The last failure recorded.
    pub last_error: Option<String>,
    /// The DLQ.
    pub dead_letter_queue: String,
}

/// A message as an operator sees it (DLQ listings).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct QueueMessage {
    /// Message id.
    pub message_id: String,
    /// Queue logical id.
    pub queue: String,
    /// Receive count.
    pub receive_count: u32,
    /// Enqueued at.
    pub sent_at: DateTime<Utc>,
    /// Source queue, for dead letters.
    pub dead_lettered_from: Option<String>,
    /// Last failure seen by the runtime.
    pub last_error: Option<String>,
    /// `detail-type` of the event.
    pub detail_type: Option<String>,
    /// `detail.event_id`.
    pub event_id: Option<String>,
    /// The body, verbatim.
    #[serde(skip)]
    pub body: String,
}

/// Depth of a queue.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct QueueDepth {
    /// Visible now.
    pub visible: u64,
    /// Received and not yet deleted, or waiting out a retry delay.
    pub in_flight: u64,
}

impl QueueDepth {
    /// Everything still in the queue.
    pub fn total(&self) -> u64 {
        self.visible + self.in_flight
    }
}

/// The bus + queues over one database.
pub struct LocalBus {
    db: Db,
    topology: Arc<Topology>,
    router: Router,
    bus_name: String,
    /// One per queue: an enqueue wakes only the consumers of the queues it filled.
    notify: std::collections::HashMap<String, Arc<Notify>>,
}

impl LocalBus {
    /// A bus wired from `topology`.
    pub fn new(db: Db, topology: Arc<Topology>, bus_name: String) -> Result<Self, O2cError> {
        let router = Router::new(&topology).map_err(|e| O2cError::Bug(e.to_string()))?;
        let notify = topology.queues.keys().map(|q| (q.clone(), Arc::new(Notify::new()))).collect();
        Ok(Self { db, topology, router, bus_name, notify })
    }

    /// Woken whenever messages are enqueued on `queue`.
    pub fn notifier(&self, queue: &str) -> Arc<Notify> {
        self.notify.get(queue).cloned().unwrap_or_default()
    }

    fn wake<'q>(&self, queues: impl IntoIterator<Item = &'q str>) {
        for q in queues {
            if let Some(n) = self.notify.get(q) {
                n.notify_waiters();
            }
        }
    }

    /// The database it runs on.
    pub fn db(&self) -> &Db {
        &self.db
    }

    /// The topology.
    pub fn topology(&self) -> &Topology {
        &self.topology
    }

    /// The bus name events are published to.
    pub fn bus_name(&self) -> &str {
        &self.bus_name
    }

    /// EventBridge `PutEvents`: per-entry results, failures reported per entry.
    pub async fn put_events(&self, entries: Vec<PutEventsEntry>) -> Result<PutEventsResponse, O2cError> {
        let now = self.db.clock().now();
        let mut results = Vec::with_capacity(entries.len());
        let mut accepted = Vec::new();
        for e in &entries {
            match validate_entry(e) {
                Err(err) => results.push(PutEventsResultEntry {
                    event_id: None,
                    error_code: Some(err.code.to_owned()),
                    error_message: Some(err.message),
                }),
                Ok(detail) => {
                    let id = self.db.new_id();
                    let event = eventbridge_event(e, detail, &id, LOCAL_ACCOUNT, LOCAL_REGION, now);
                    // Routed as parsed: re-parsing the text would trip serde_json's nesting limit
                    // on a Detail that is valid on its own. An event that cannot be routed fails
                    // its entry only.
                    let routed = match self.router.targets_for(&event) {
                        Ok(routed) => routed,
                        Err(err) => {
                            results.push(PutEventsResultEntry {
                                event_id: None,
                                error_code: Some("InvalidArgument".to_owned()),
                                error_message: Some(format!("Event cannot be routed: {err}")),
                            });
                            continue;
                        }
                    };
                    let text = event.to_string();
                    let targets: Vec<(String, String, Option<String>, bool)> = routed
                        .into_iter()
                        .map(|(rule, t)| {
                            let fifo = self.topology.queues.get(&t.queue).is_some_and(|q| q.fifo);
                            (rule.logical_id.clone(), t.queue.clone(), t.message_group_id.clone(), fifo)
                        })
                        .collect();
                    let targets: Vec<(String, String, Option<String>, bool, String)> =
                        targets.into_iter().map(|(r, q, g, f)| (r, q, g, f, self.db.new_id())).collect();
                    accepted.push((
                        id.clone(),
                        e.source.clone().unwrap_or_default(),
                        e.detail_type.clone().unwrap_or_default(),
                        text,
                        targets,
                    ));
                    results.push(PutEventsResultEntry { event_id: Some(id), error_code: None, error_message: None });
                }
            }
        }
        if !accepted.is_empty() {
            let touched: std::collections::BTreeSet<String> = accepted.iter().flat_map(|a| a.4.iter().map(|t| t.1.clone())).collect();
            let now = self.db.now_ms();
            self.db
                .call(move |c| {
                    // `checked`: a FIFO duplicate is skipped, never undone; past the first insert only
                    // SQLite or a bug can fail.
                    let tx = crate::db::checked(c)?;
                    prune_fifo_dedup(&tx, now)?;
                    for (id, source, dt, text, targets) in accepted {
                        let rules: Vec<&str> = targets.iter().map(|t| t.0.as_str()).collect();
                        tx.prepare_cached(
                            "INSERT INTO bus_events (event_id, received_at, source, detail_type, event, matched_rules) VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
                        )
                        .and_then(|mut s| s.execute(params![id, now, source, dt, text, serde_json::to_string(&rules).unwrap_or_default()]))
                        .map_err(db_err)?;
                        for (_, queue, group, fifo, message_id) in &targets {
                            // EventBridge uses the event id as the deduplication id.
                            if *fifo && !fifo_accepts(&tx, queue, &id, now)? {
                                continue;
                            }
                            let group = if *fifo { Some(group.clone().unwrap_or_else(|| "default".into())) } else { None };
                            insert_message(&tx, message_id, queue, &text, group.as_deref(), fifo.then_some(id.as_str()), now)?;
                        }
                    }
                    tx.commit()
                })
                .await?;
            self.wake(touched.iter().map(String::as_str));
        }
        let failed = results.iter().filter(|r| r.error_code.is_some()).count();
        Ok(PutEventsResponse { failed_entry_count: failed, entries: results })
    }

    /// Receives up to `max` messages from `queue`, hiding them for `visibility`. Messages
    /// already received `maxReceiveCount` times are moved to the DLQ instead.
    pub async fn receive(&self, queue: &str, max: usize, visibility: Duration) -> Result<Vec<ReceivedMessage>, O2cError> {
        Ok(self.receive_batch(queue, max, visibility).await?.messages)
    }

    /// [`receive`](Self::receive), also returning the messages it moved to the DLQ (so the
    /// runtime can raise their dead-letter exceptions, e.g. after a crash on the last receive).
    pub async fn receive_batch(&self, queue: &str, max: usize, visibility: Duration) -> Result<Received, O2cError> {
        let q = self.topology.queues.get(queue).cloned().ok_or_else(|| O2cError::Bug(format!("unknown queue {queue}")))?;
        let vis = i64::try_from(visibility.as_millis()).unwrap_or(i64::MAX);
        let queue = queue.to_owned();
        let now = self.db.now_ms();
        self.db
            .call(move |c| {
                // `checked`: every read precedes the updates.
                let tx = crate::db::checked(c)?;
                let mut dead_lettered = Vec::new();
                let mut picked: Vec<ReceivedMessage> = Vec::new();
                {
                    // FIFO: a group with a message in flight is blocked, so its visible
                    // messages wait their turn (only in-flight rows are read: the
                    // `(queue, visible_at)` index range above now).
                    let blocked: std::collections::HashSet<String> = if q.fifo {
                        let mut s = tx
                            .prepare_cached(BLOCKED_GROUPS_SQL)
                            .map_err(db_err)?;
                        s.query_map(params![queue, now], |r| r.get(0)).map_err(db_err)?.collect::<Result<_, _>>().map_err(db_err)?
                    } else {
                        Default::default()
                    };
                    // The queue in send order, skipping what is not visible (in flight or
                    // waiting out a retry delay), so a head of messages in backoff never
                    // hides the visible ones behind it. Walking `(queue, seq)` reads about as
                    // many rows as it hands out, whatever the backlog; ordering the visible
                    // messages instead would sort all of them on every receive. A receive
                    // looks at most 1,000 messages past blocked groups and dead letters.
                    let mut s = tx.prepare_cached(RECEIVE_SQL).map_err(db_err)?;
                    // Rows are read lazily: the walk stops once the batch is full.
                    let scan = 1000;
                    let rows = s
                        .query_map(params![queue, now, scan], |r| {
                            Ok((
                                r.get::<_, String>(0)?,
                                r.get::<_, String>(1)?,
                                r.get::<_, i64>(2)?,
                                r.get::<_, Option<String>>(3)?,
                                r.get::<_, i64>(4)?,
                                r.get::<_, Option<i64>>(5)?,
                                r.get::<_, Option<String>>(6)?,
                            ))
                        })
                        .map_err(db_err)?;
                    for row in rows {
                        let (id, body, count, group, sent, first, last_error) = row.map_err(db_err)?;
                        if picked.len() >= max {
                            break;
                        }
                        if q.fifo && blocked.contains(group.as_deref().unwrap_or_default()) {
                            continue;
                        }
                        // Received maxReceiveCount times already: SQS moves it to the DLQ on
                        // this receive instead of handing it out.
                        if let Some(rd) = q.redrive.as_ref().filter(|rd| count >= i64::from(rd.max_receive_count)) {
                            dead_lettered.push(DeadLettered {
                                message_id: id,
                                body,
                                receive_count: count as u32,
                                last_error,
                                dead_letter_queue: rd.dead_letter_queue.clone(),
                            });
                            continue;
                        }
                        picked.push(ReceivedMessage {
                            message_id: id,
                            body,
                            receive_count: (count + 1) as u32,
                            group_id: group,
                            sent_at: sent,
                            first_received_at: first.unwrap_or(now),
                        });
                    }
                }
                for d in &dead_lettered {
                    tx.prepare_cached("UPDATE messages SET queue = ?2, dead_lettered_from = ?3, visible_at = ?4 WHERE message_id = ?1")
                        .and_then(|mut s| s.execute(params![d.message_id, d.dead_letter_queue, queue, now]))
                        .map_err(db_err)?;
                }
                for m in &picked {
                    tx.prepare_cached(
                        "UPDATE messages SET receive_count = receive_count + 1, visible_at = ?2, first_received_at = COALESCE(first_received_at, ?3) WHERE message_id = ?1",
                    )
                    .and_then(|mut s| s.execute(params![m.message_id, now + vis, now]))
                    .map_err(db_err)?;
                }
                tx.commit()?;
                Ok(Received { messages: picked, dead_lettered })
            })
            .await
    }

    /// Moves one message from a pipe's source queue to its target in one transaction
    /// (FIFO deduplication applies on the target).
    pub async fn forward(
        &self,
        message_id: String,
        target: String,
        body: String,
        group: Option<String>,
        dedup: Option<String>,
    ) -> Result<(), O2cError> {
        let (now, new_id) = (self.db.now_ms(), self.db.new_id());
        let woken = target.clone();
        self.db
            .call(move |c| {
                // `checked`: a FIFO duplicate is skipped, never undone; the writes cannot refuse.
                let tx = crate::db::checked(c)?;
                prune_fifo_dedup(&tx, now)?;
                let accepted = match &dedup {
                    Some(d) => fifo_accepts(&tx, &target, d, now)?,
                    None => true,
                };
                if accepted {
                    insert_message(&tx, &new_id, &target, &body, group.as_deref(), dedup.as_deref(), now)?;
                }
                tx.prepare_cached("DELETE FROM messages WHERE message_id = ?1")
                    .and_then(|mut s| s.execute(params![message_id]))
                    .map_err(db_err)?;
                tx.commit()
            })
            .await?;
        self.wake([woken.as_str()]);
        Ok(())
    }

    /// Deletes processed messages.
    pub async fn delete(&self, ids: Vec<String>) -> Result<(), O2cError> {
        if ids.is_empty() {
            return Ok(());
        }
        self.db
            .call(move |c| {
                // `checked`: deletes only.
                let tx = crate::db::checked(c)?;
                for id in ids {
                    tx.prepare_cached("DELETE FROM messages WHERE message_id = ?1")
                        .and_then(|mut s| s.execute(params![id]))
                        .map_err(db_err)?;
                }
                tx.commit()
            })
            .await
    }

    /// Makes a failed message visible again after `delay` (what SQS does when the
    /// visibility timeout of a reported failure runs out).
    pub async fn retry_later(&self, id: String, delay: Duration, error: String) -> Result<(), O2cError> {
        let at = self.db.now_ms() + i64::try_from(delay.as_millis()).unwrap_or(i64::MAX / 2);
        self.db
            .call(move |c| {
                c.exec("UPDATE messages SET visible_at = ?2, last_error = ?3 WHERE message_id = ?1", params![id, at, error])
                    .map_err(db_err)?;
                Ok(())
            })
            .await?;
        Ok(())
    }

    /// Makes every in-flight message visible now. Only safe when no other process
    /// consumes the database (the runtime holds the lock file).
    pub async fn reclaim_in_flight(&self) -> Result<usize, O2cError> {
        let now = self.db.now_ms();
        self.db.call(move |c| c.exec("UPDATE messages SET visible_at = ?1 WHERE visible_at > ?1", params![now]).map_err(db_err)).await
    }

    /// When the next message of `queues` becomes visible (ms since the epoch), if any.
    pub async fn next_due(&self, queues: &[String]) -> Result<Option<i64>, O2cError> {
        let queues = queues.to_vec();
        self.db
            .call(move |c| {
                let mut best: Option<i64> = None;
                for q in &queues {
                    let t: Option<i64> =
                        c.row("SELECT MIN(visible_at) FROM messages WHERE queue = ?1", params![q], |r| r.get(0)).map_err(db_err)?;
                    best = match (best, t) {
                        (Some(a), Some(b)) => Some(a.min(b)),
                        (a, b) => a.or(b),
                    };
                }
                Ok(best)
            })
            .await
    }

    /// The statements that ask `queues` (in this order) what a scheduler asks before each
    /// step, built once: see [`LocalBus::visible_queues`] and
    /// [`LocalBus::next_visible_after_now`].
    pub fn probe(&self, queues: Vec<String>) -> QueueProbe {
        let visible = per_queue(queues.iter().map(|q| {
            if self.topology.queues.get(q).is_some_and(|d| d.fifo) {
                FIFO_VISIBLE_SQL
            } else {
                "SELECT EXISTS (SELECT 1 FROM messages WHERE queue = ?1 AND visible_at <= ?2)"
            }
        }));
        let next = per_queue(queues.iter().map(|_| "SELECT MIN(visible_at) FROM messages WHERE queue = ?1 AND visible_at > ?2"));
        QueueProbe(Arc::new(ProbeSql { queues, visible, next }))
    }

    /// For each of the probe's queues, whether a receive now would get a message: one visible
    /// now and, on a FIFO queue, in a group with nothing in flight (one statement).
    pub async fn visible_queues(&self, probe: &QueueProbe) -> Result<Vec<bool>, O2cError> {
        let now = self.db.now_ms();
        let p = probe.0.clone();
        self.db.call(move |c| per_queue_row(c, &p.visible, now, &p.queues)).await
    }

    /// When the next message of the probe's queues that is not visible now becomes visible
    /// (ms since the epoch): what a scheduler waits for when every visible message is held back.
    pub async fn next_visible_after_now(&self, probe: &QueueProbe) -> Result<Option<i64>, O2cError> {
        let now = self.db.now_ms();
        let p = probe.0.clone();
        let due: Vec<Option<i64>> = self.db.call(move |c| per_queue_row(c, &p.next, now, &p.queues)).await?;
        Ok(due.into_iter().flatten().min())
    }

    /// True when one of `queues` holds a message (an index probe per queue).
    pub async fn any_message(&self, queues: Vec<String>) -> Result<bool, O2cError> {
        self.db
            .call(move |c| {
                for q in &queues {
                    let found: bool = c
                        .prepare_cached("SELECT EXISTS (SELECT 1 FROM messages WHERE queue = ?1)")
                        .and_then(|mut s| s.query_row(params![q], |r| r.get(0)))
                        .map_err(db_err)?;
                    if found {
                        return Ok(true);
                    }
                }
                Ok(false)
            })
            .await
    }

    /// Depth of a queue.
    pub async fn depth(&self, queue: &str) -> Result<QueueDepth, O2cError> {
        let queue = queue.to_owned();
        let now = self.db.now_ms();
        self.db
            .call(move |c| {
                c.row(
                    "SELECT COALESCE(SUM(visible_at <= ?2), 0), COALESCE(SUM(visible_at > ?2), 0) FROM messages WHERE queue = ?1",
                    params![queue, now],
                    |r| Ok(QueueDepth { visible: r.get::<_, i64>(0)? as u64, in_flight: r.get::<_, i64>(1)? as u64 }),
                )
                .map_err(db_err)
            })
            .await
    }

    /// Messages in a queue (oldest first), for operators.
    pub async fn list(&self, queue: &str, limit: usize) -> Result<Vec<QueueMessage>, O2cError> {
        let queue = queue.to_owned();
        self.db
            .call(move |c| {
                let mut s = c
                    .prepare_cached("SELECT message_id, queue, receive_count, sent_at, dead_lettered_from, last_error, body FROM messages WHERE queue = ?1 ORDER BY seq LIMIT ?2")
                    .map_err(db_err)?;
                let rows = s
                    .query_map(params![queue, limit as i64], |r| {
                        Ok((
                            r.get::<_, String>(0)?,
                            r.get::<_, String>(1)?,
                            r.get::<_, i64>(2)?,
                            r.get::<_, i64>(3)?,
                            r.get::<_, Option<String>>(4)?,
                            r.get::<_, Option<String>>(5)?,
                            r.get::<_, String>(6)?,
                        ))
                    })
                    .map_err(db_err)?;
                rows.map(|row| {
                    let (id, q, n, sent, from, err, body) = row.map_err(db_err)?;
                    let v: serde_json::Value = serde_json::from_str(&body).unwrap_or_default();
                    Ok(QueueMessage {
                        message_id: id,
                        queue: q,
                        receive_count: n as u32,
                        sent_at: DateTime::from_timestamp_millis(sent).unwrap_or_default(),
                        dead_lettered_from: from,
                        last_error: err,
                        detail_type: v.get("detail-type").and_then(|x| x.as_str()).map(str::to_owned),
                        event_id: v.pointer("/detail/event_id").and_then(|x| x.as_str()).map(str::to_owned),
                        body,
                    })
                })
                .collect()
            })
            .await
    }

    /// Moves up to `limit` messages from a DLQ back to the queue they came from, with a
    /// fresh receive count (what `StartMessageMoveTask` does).
    pub async fn redrive(&self, dlq: &str, limit: usize) -> Result<usize, O2cError> {
        let Some(source) = self.topology.source_of_dlq(dlq).map(|q| q.logical_id.clone()) else {
            if self.topology.is_dlq(dlq) {
                return self.redrive_to_bus(dlq, limit).await;
            }
            return Err(O2cError::Validation(vec![o2c_domain::events::Issue::new(
                "queue",
                "not_a_dlq",
                format!("{dlq} is not a dead-letter queue of the template"),
            )]));
        };
        let (dlq, woken) = (dlq.to_owned(), source.clone());
        let now = self.db.now_ms();
        let moved = self
            .db
            .call(move |c| {
                c.exec(
                    "UPDATE messages SET queue = ?2, receive_count = 0, visible_at = ?3, first_received_at = NULL, dead_lettered_from = NULL
                     WHERE seq IN (SELECT seq FROM messages WHERE queue = ?1 ORDER BY seq LIMIT ?4)",
                    params![dlq, source, now, limit as i64],
                )
                .map_err(db_err)
            })
            .await?;
        self.wake([woken.as_str()]);
        Ok(moved)
    }

    /// A rule target's delivery DLQ holds events, not queue messages: each is published on
    /// the bus again (the rules route it) and removed; a body that is not an event stays.
    async fn redrive_to_bus(&self, dlq: &str, limit: usize) -> Result<usize, O2cError> {
        let mut moved = 0;
        // Every message is looked at: bodies that are not events do not use up `limit`.
        for m in self.list(dlq, usize::MAX).await? {
            if moved >= limit {
                break;
            }
            let Some(entries) = serde_json::from_str::<serde_json::Value>(&m.body)
                .ok()
                .and_then(|v| o2c_app::bus::entries_from_json(&v).ok())
                .filter(|e| e.len() == 1)
            else {
                continue;
            };
            let resp = self.put_events(entries).await?;
            if resp.failed_entry_count == 0 {
                self.delete(vec![m.message_id.clone()]).await?;
                moved += 1;
            }
        }
        Ok(moved)
    }

    /// Sends `body` to `queue` as a new message (what EventBridge does when it dead-letters
    /// an event it could not deliver; tests and tools).
    pub async fn send_to(&self, queue: &str, body: &str) -> Result<(), O2cError> {
        let (now, id, body) = (self.db.now_ms(), self.db.new_id(), body.to_owned());
        let queue_name = queue.to_owned();
        self.db
            .call(move |c| {
                c.exec(
                    "INSERT INTO messages (message_id, queue, body, sent_at, visible_at) VALUES (?1, ?2, ?3, ?4, ?4)",
                    params![id, queue_name, body, now],
                )
                .map(|_| ())
                .map_err(db_err)
            })
            .await?;
        self.wake([queue]);
        Ok(())
    }

    /// Archived events, oldest first (the embedded counterpart of an EventBridge archive).
    pub async fn archived(&self, from: Option<DateTime<Utc>>, to: Option<DateTime<Utc>>) -> Result<Vec<PutEventsEntry>, O2cError> {
        let (from, to) = (from.map_or(i64::MIN, |t| t.timestamp_millis()), to.map_or(i64::MAX, |t| t.timestamp_millis()));
        self.db
            .call(move |c| {
                let mut s = c
                    .prepare_cached("SELECT event FROM bus_events WHERE received_at >= ?1 AND received_at < ?2 ORDER BY seq")
                    .map_err(db_err)?;
                let rows = s.query_map(params![from, to], |r| r.get::<_, String>(0)).map_err(db_err)?;
                let mut out = Vec::new();
                for r in rows {
                    let v: serde_json::Value = serde_json::from_str(&r.map_err(db_err)?).map_err(crate::db::row_err)?;
                    out.extend(o2c_app::bus::entries_from_json(&v).map_err(O2cError::Bug)?);
                }
                Ok(out)
            })
            .await
    }
}

/// Enqueues one message.
fn insert_message(
    tx: &Connection,
    message_id: &str,
    queue: &str,
    body: &str,
    group: Option<&str>,
    dedup: Option<&str>,
    now: i64,
) -> Result<(), O2cError> {
    tx.prepare_cached(
        "INSERT INTO messages (message_id, queue, body, group_id, dedup_id, sent_at, visible_at) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?6)",
    )
    .and_then(|mut s| s.execute(params![message_id, queue, body, group, dedup, now]))
    .map(|_| ())
    .map_err(db_err)
}

/// SQS FIFO deduplication: true when `dedup_id` was not accepted by `queue` in the last 5
/// minutes, recording this send; false for a duplicate (SQS answers it as sent and does not
/// deliver it). The interval runs from the first accepted send: duplicates do not extend it.
fn fifo_accepts(tx: &Connection, queue: &str, dedup_id: &str, now: i64) -> Result<bool, O2cError> {
    let seen: Option<i64> = tx
        .prepare_cached("SELECT sent_at FROM fifo_dedup WHERE queue = ?1 AND dedup_id = ?2")
        .and_then(|mut s| s.query_row(params![queue, dedup_id], |r| r.get(0)).optional())
        .map_err(db_err)?;
    if seen.is_some_and(|at| at > now - FIFO_DEDUP_WINDOW_MS) {
        return Ok(false);
    }
    tx.prepare_cached(
        "INSERT INTO fifo_dedup (queue, dedup_id, sent_at) VALUES (?1, ?2, ?3) ON CONFLICT (queue, dedup_id) DO UPDATE SET sent_at = excluded.sent_at",
    )
    .and_then(|mut s| s.execute(params![queue, dedup_id, now]))
    .map_err(db_err)?;
    Ok(true)
}

/// Forgets deduplication ids older than the interval (each id is removed once, so the cost
/// follows the send rate, not the table's size).
fn prune_fifo_dedup(tx: &Connection, now: i64) -> Result<(), O2cError> {
    tx.prepare_cached("DELETE FROM fifo_dedup WHERE sent_at <= ?1")
        .and_then(|mut s| s.execute(params![now - FIFO_DEDUP_WINDOW_MS]))
        .map(|_| ())
        .map_err(db_err)
}

impl EventPublisher for LocalBus {
    async fn publish(&self, events: &[OutgoingEvent]) -> Result<(), O2cError> {
        if events.is_empty() {
            return Ok(());
        }
        let entries = events.iter().map(|e| entry_for(e, &self.bus_name)).collect();
        let resp = self.put_events(entries).await?;
        if let Some(bad) = resp.entries.iter().find(|e| e.error_code.is_some()) {
            // Our own events are refused only when they break a hard limit: a defect.
            return Err(O2cError::Bug(format!(
                "bus refused an emitted event: {} {}",
                bad.error_code.clone().unwrap_or_default(),
                bad.error_message.clone().unwrap_or_default()
            )));
        }
        Ok(())
    }
}
