//! SQLite adapters for the state, idempotency and rejection ports. A [`Commit`] is one
//! SQLite transaction (the same atomicity the DynamoDB adapter gets from
//! `TransactWriteItems`).

use chrono::{DateTime, TimeZone, Utc};
use o2c_app::O2cError;
use o2c_app::idempotency::{KeyState, classify};
use o2c_app::ports::{
    AggregateWrite, CaseFilter, Commit, CommitOutcome, CompletionMode, DeliveryFailure, EngagementFilter, EngagementStore,
    EngagementSummary, IdempotencyRecord, IdempotencyStatus, IdempotencyStore, KeyWrite, MAX_TRACKED_MESSAGE_IDS, RejectedMessage,
    RejectionStore, Reservation, ReserveOutcome, StateWrite, StoredResult, Versioned, queue_order,
};
use o2c_domain::aggregate::AggregateBody;
use o2c_domain::aggregate::{AggregateKey, AggregateKind, Loaded, LoadedAggregate};
use o2c_domain::engagement::{AuditEntry, Engagement};
use o2c_domain::exception_case::ExceptionCase;
use rusqlite::{Connection, OptionalExtension, params};

use crate::db::{Cached, Db, db_err, row_err};

/// SQLite-backed store (cheap to clone).
#[derive(Clone)]
pub struct SqliteStore {
    db: Db,
}

fn millis(t: DateTime<Utc>) -> i64 {
    t.timestamp_millis()
}

fn from_millis(ms: i64) -> DateTime<Utc> {
    Utc.timestamp_millis_opt(ms).single().unwrap_or_default()
}

fn read_record(tx: &Connection, key: &str) -> Result<Option<IdempotencyRecord>, O2cError> {
    let row = tx
        .row("SELECT status, payload_hash, expires_at, in_progress_until, result FROM idempotency WHERE key = ?1", params![key], |r| {
            Ok((
                r.get::<_, String>(0)?,
                r.get::<_, String>(1)?,
                r.get::<_, i64>(2)?,
                r.get::<_, Option<i64>>(3)?,
                r.get::<_, Option<String>>(4)?,
            ))
        })
        .optional()
        .map_err(db_err)?;
    let Some((status, hash, expires, in_progress, result)) = row else {
        return Ok(None);
    };
    let result: Option<StoredResult> = result.map(|r| serde_json::from_str(&r)).transpose().map_err(row_err)?;
    Ok(Some(IdempotencyRecord {
        key: key.to_owned(),
        status: IdempotencyStatus::parse(&status)
            .ok_or_else(|| O2cError::Bug(format!("idempotency record {key} has status `{status}`")))?,
        payload_hash: hash,
        expires_at: from_millis(expires),
        in_progress_until: in_progress.map(from_millis),
        result,
    }))
}

fn current_version(tx: &Connection, engagement_id: &str) -> Result<Option<u64>, O2cError> {
    let stored = tx
        .row("SELECT version FROM engagements WHERE engagement_id = ?1", params![engagement_id], |r| r.get::<_, i64>(0))
        .optional()
        .map_err(db_err)?;
    stored.map(version).transpose()
}

/// A stored version as the ports count it: one below zero is a bug, not a conflict.
fn version(stored: i64) -> Result<u64, O2cError> {
    u64::try_from(stored).map_err(|_| O2cError::Bug(format!("an item stored at version {stored}")))
}

/// An engagement write whose version check passed, ready to write (serialised).
struct CheckedState<'w> {
    w: &'w StateWrite,
    body: String,
}

/// Checks the engagement's version; `None` on a conflict. Writes nothing.
fn check_state<'w>(tx: &Connection, w: &'w StateWrite) -> Result<Option<CheckedState<'w>>, O2cError> {
    let e = &w.engagement;
    let actual = current_version(tx, &e.engagement_id)?;
    if !w.expected.admits(actual) {
        return Ok(None);
    }
    Ok(Some(CheckedState { w, body: serde_json::to_string(e).map_err(row_err)? }))
}

/// Writes a checked engagement; returns its new version.
fn put_state(tx: &Connection, s: CheckedState<'_>) -> Result<u64, O2cError> {
    let (e, next) = (&s.w.engagement, s.w.expected.next());
    tx.exec(
        "INSERT INTO engagements (engagement_id, version, status, open_exception, updated_at, body) VALUES (?1, ?2, ?3, ?4, ?5, ?6)
         ON CONFLICT(engagement_id) DO UPDATE SET version = excluded.version, status = excluded.status,
           open_exception = excluded.open_exception, updated_at = excluded.updated_at, body = excluded.body",
        params![e.engagement_id.as_str(), next as i64, e.status.as_str(), e.has_open_exception() as i64, e.updated_at.to_rfc3339(), s.body],
    )
    .map_err(db_err)?;
    Ok(next)
}

impl SqliteStore {
    /// A store over `db`.
    pub fn new(db: Db) -> Self {
        Self { db }
    }

    /// The database.
    pub fn db(&self) -> &Db {
        &self.db
    }

    /// Audit entries of every engagement written after sequence `after`, with their
    /// sequence numbers (for following a run live).
    pub async fn audit_since(&self, after: i64) -> Result<Vec<(i64, AuditEntry)>, O2cError> {
        self.db
            .call(move |c| {
                let mut stmt = c.prepare_cached("SELECT seq, body FROM audit WHERE seq > ?1 ORDER BY seq").map_err(db_err)?;
                let rows = stmt.query_map(params![after], |r| Ok((r.get::<_, i64>(0)?, r.get::<_, String>(1)?))).map_err(db_err)?;
                rows.map(|r| {
                    let (seq, body) = r.map_err(db_err)?;
                    Ok((seq, serde_json::from_str(&body).map_err(row_err)?))
                })
                .collect()
            })
            .await
    }
}

/// The gzip size of `json` at the AWS adapter's level (fast).
fn gzip_len(json: &[u8]) -> Result<usize, O2cError> {
    use std::io::Write;
    let mut gz = flate2::write::GzEncoder::new(Vec::with_capacity(json.len() / 4), flate2::Compression::fast());
    gz.write_all(json).map_err(|e| O2cError::Bug(format!("gzip: {e}")))?;
    Ok(gz.finish().map_err(|e| O2cError::Bug(format!("gzip: {e}")))?.len())
}

/// Another aggregate whose version check passed, ready to write (serialised).
struct CheckedAggregate {
    key: AggregateKey,
    next: u64,
    body: String,
}

/// Checks other aggregates' budgets and versions; `None` on a version conflict. Writes
/// nothing (two writes of one aggregate were refused before: `each_written_once`).
fn check_aggregates(tx: &Connection, writes: &[AggregateWrite]) -> Result<Option<Vec<CheckedAggregate>>, O2cError> {
    let mut checked: Vec<CheckedAggregate> = Vec::with_capacity(writes.len());
    for w in writes {
        let key = w.body.key();
        let body = serde_json::to_string(&w.body).map_err(row_err)?;
        // The budget DynamoDB's adapter enforces, on the same form: compressed kinds by their
        // gzip size (computed only when the JSON alone is over), the others by their JSON.
        let size = if body.len() > key.kind.budget_bytes() && key.kind.compressed() { gzip_len(body.as_bytes())? } else { body.len() };
        if size > key.kind.budget_bytes() {
            return Err(O2cError::Bug(format!(
                "{} {} is {size} bytes{}, over its {}-byte budget",
                key.kind.as_str(),
                key.id,
                if key.kind.compressed() { " compressed" } else { "" },
                key.kind.budget_bytes()
            )));
        }
        let actual: Option<i64> = tx
            .row(
                "SELECT version FROM aggregates WHERE kind = ?1 AND owner = ?2 AND id = ?3",
                params![key.kind.as_str(), key.owner, key.id],
                |r| r.get(0),
            )
            .optional()
            .map_err(db_err)?;
        if !w.expected.admits(actual.map(version).transpose()?) {
            return Ok(None);
        }
        checked.push(CheckedAggregate { key, next: w.expected.next(), body });
    }
    Ok(Some(checked))
}

/// Writes checked aggregates.
fn put_aggregates(tx: &Connection, checked: Vec<CheckedAggregate>, at: &str) -> Result<(), O2cError> {
    for c in checked {
        tx.exec(
            "INSERT INTO aggregates (kind, owner, id, version, updated_at, body) VALUES (?1, ?2, ?3, ?4, ?5, ?6)
             ON CONFLICT(kind, owner, id) DO UPDATE SET version = excluded.version, updated_at = excluded.updated_at, body = excluded.body",
            params![c.key.kind.as_str(), c.key.owner, c.key.id, c.next as i64, at, c.body],
        )
        .map_err(db_err)?;
    }
    Ok(())
}

impl EngagementStore for SqliteStore {
    async fn load_all(&self, kind: AggregateKind, owner: &str) -> Result<Loaded, O2cError> {
        let owner = owner.to_owned();
        self.db
            .call(move |c| {
                let mut stmt =
                    c.prepare_cached("SELECT version, body FROM aggregates WHERE kind = ?1 AND owner = ?2 ORDER BY id").map_err(db_err)?;
                let rows =
                    stmt.query_map(params![kind.as_str(), owner], |r| Ok((r.get::<_, i64>(0)?, r.get::<_, String>(1)?))).map_err(db_err)?;
                let mut loaded = Loaded::default();
                for row in rows {
                    let (v, body) = row.map_err(db_err)?;
                    loaded.items.push(LoadedAggregate { body: serde_json::from_str(&body).map_err(row_err)?, version: v as u64 });
                }
                Ok(loaded)
            })
            .await
    }

    async fn load_aggregates(&self, keys: &[AggregateKey]) -> Result<Loaded, O2cError> {
        let keys = keys.to_vec();
        self.db
            .call(move |c| {
                let mut loaded = Loaded::default();
                for k in keys {
                    let row: Option<(i64, String)> = c
                        .row(
                            "SELECT version, body FROM aggregates WHERE kind = ?1 AND owner = ?2 AND id = ?3",
                            params![k.kind.as_str(), k.owner, k.id],
                            |r| Ok((r.get(0)?, r.get(1)?)),
                        )
                        .optional()
                        .map_err(db_err)?;
                    if let Some((v, body)) = row {
                        loaded.items.push(LoadedAggregate { body: serde_json::from_str(&body).map_err(row_err)?, version: v as u64 });
                    }
                }
                Ok(loaded)
            })
            .await
    }

    async fn load(&self, engagement_id: &str) -> Result<Option<Versioned<Engagement>>, O2cError> {
        let id = engagement_id.to_owned();
        self.db
            .call(move |c| {
                let row = c
                    .row("SELECT version, body FROM engagements WHERE engagement_id = ?1", params![id], |r| {
                        Ok((r.get::<_, i64>(0)?, r.get::<_, String>(1)?))
                    })
                    .optional()
                    .map_err(db_err)?;
                row.map(|(v, body)| Ok(Versioned { value: serde_json::from_str(&body).map_err(row_err)?, version: v as u64 })).transpose()
            })
            .await
    }

    async fn commit(&self, commit: Commit) -> Result<CommitOutcome, O2cError> {
        o2c_app::ports::each_written_once(&commit.others)?;
        self.db
            .call(move |c| {
                let tx = crate::db::checked(c)?;
                match &commit.key {
                    KeyWrite::Complete(comp) => match (comp.mode, read_record(&tx, &comp.key)?) {
                        (CompletionMode::Fresh, Some(rec)) if rec.is_live(comp.now) => return Ok(CommitOutcome::AlreadyCompleted(rec)),
                        (CompletionMode::Reserved, Some(rec)) if rec.status == IdempotencyStatus::Completed && rec.is_live(comp.now) => {
                            return Ok(CommitOutcome::AlreadyCompleted(rec));
                        }
                        (CompletionMode::Reserved, Some(rec)) if rec.payload_hash != comp.payload_hash => return Ok(CommitOutcome::ReservationLost),
                        (CompletionMode::Reserved, None) => return Ok(CommitOutcome::ReservationLost),
                        _ => {}
                    },
                    KeyWrite::Hold { key, payload_hash } => match read_record(&tx, key)? {
                        Some(rec) if rec.status == IdempotencyStatus::InProgress && &rec.payload_hash == payload_hash => {}
                        _ => return Ok(CommitOutcome::ReservationLost),
                    },
                    KeyWrite::Untracked => {}
                }
                // Every check before the first write (`checked`: no savepoint).
                let state = match &commit.state {
                    None => None,
                    Some(w) => match check_state(&tx, w)? {
                        None => return Ok(CommitOutcome::VersionConflict),
                        Some(s) => Some(s),
                    },
                };
                let Some(others) = check_aggregates(&tx, &commit.others)? else {
                    return Ok(CommitOutcome::VersionConflict);
                };
                let at = commit.audit.as_ref().map(|a| a.at.to_rfc3339()).unwrap_or_default();
                let audit = commit
                    .audit
                    .as_ref()
                    .map(|a| serde_json::to_string(a).map(|body| (a.engagement_id.as_str(), body)))
                    .transpose()
                    .map_err(row_err)?;
                let completed = match &commit.key {
                    KeyWrite::Complete(comp) => Some((comp, serde_json::to_string(&comp.result).map_err(row_err)?)),
                    _ => None,
                };
                let version = state.map(|s| put_state(&tx, s)).transpose()?;
                put_aggregates(&tx, others, &at)?;
                if let Some((engagement_id, body)) = audit {
                    tx.exec("INSERT INTO audit (engagement_id, body) VALUES (?1, ?2)", params![engagement_id, body]).map_err(db_err)?;
                }
                if let Some((comp, result)) = completed {
                    tx.exec(
                        "INSERT OR REPLACE INTO idempotency (key, status, payload_hash, expires_at, in_progress_until, result) VALUES (?1, ?2, ?3, ?4, NULL, ?5)",
                        params![comp.key, IdempotencyStatus::Completed.as_str(), comp.payload_hash, millis(comp.expires_at), result],
                    )
                    .map_err(db_err)?;
                }
                tx.commit()?;
                Ok(CommitOutcome::Committed { version })
            })
            .await
    }

    async fn audit_trail(&self, engagement_id: &str) -> Result<Vec<AuditEntry>, O2cError> {
        let id = engagement_id.to_owned();
        self.db
            .call(move |c| {
                let mut stmt = c.prepare_cached("SELECT body FROM audit WHERE engagement_id = ?1 ORDER BY seq").map_err(db_err)?;
                let rows = stmt.query_map(params![id], |r| r.get::<_, String>(0)).map_err(db_err)?;
                rows.map(|r| serde_json::from_str(&r.map_err(db_err)?).map_err(row_err)).collect()
            })
            .await
    }

    async fn exception_cases(&self, filter: &CaseFilter) -> Result<Vec<ExceptionCase>, O2cError> {
        let f = *filter;
        self.db
            .call(move |c| {
                let mut stmt = c.prepare_cached("SELECT body FROM aggregates WHERE kind = ?1").map_err(db_err)?;
                let rows = stmt.query_map(params![AggregateKind::ExceptionCase.as_str()], |r| r.get::<_, String>(0)).map_err(db_err)?;
                let mut cases = Vec::new();
                for row in rows {
                    if let AggregateBody::ExceptionCase(case) = serde_json::from_str(&row.map_err(db_err)?).map_err(row_err)?
                        && f.wants(&case)
                    {
                        cases.push(case);
                    }
                }
                queue_order(&mut cases);
                cases.truncate(f.limit());
                Ok(cases)
            })
            .await
    }

    async fn list(&self, filter: &EngagementFilter) -> Result<Vec<EngagementSummary>, O2cError> {
        let f = filter.clone();
        self.db
            .call(move |c| {
                let limit = if f.limit == 0 { 100 } else { f.limit } as i64;
                let order = if f.after.is_some() { "engagement_id" } else { "updated_at DESC" };
                let mut stmt = c
                    .prepare(&format!(
                        "SELECT engagement_id, status, open_exception, updated_at, version FROM engagements
                         WHERE (?1 IS NULL OR status = ?1) AND (?2 = 0 OR open_exception = 1) AND (?4 IS NULL OR engagement_id > ?4)
                         ORDER BY {order} LIMIT ?3"
                    ))
                    .map_err(db_err)?;
                let rows = stmt
                    .query_map(params![f.status, f.open_exceptions as i64, limit, f.after], |r| {
                        Ok((
                            r.get::<_, String>(0)?,
                            r.get::<_, String>(1)?,
                            r.get::<_, i64>(2)?,
                            r.get::<_, String>(3)?,
                            r.get::<_, i64>(4)?,
                        ))
                    })
                    .map_err(db_err)?;
                rows.map(|r| {
                    let (id, status, ex, at, v) = r.map_err(db_err)?;
                    Ok(EngagementSummary {
                        engagement_id: id,
                        status,
                        open_exception: ex != 0,
                        updated_at: DateTime::parse_from_rfc3339(&at).map(|t| t.with_timezone(&Utc)).unwrap_or_default(),
                        version: v as u64,
                    })
                })
                .collect()
            })
            .await
    }
}

impl IdempotencyStore for SqliteStore {
    async fn get(&self, key: &str) -> Result<Option<IdempotencyRecord>, O2cError> {
        let key = key.to_owned();
        self.db.call(move |c| read_record(c, &key)).await
    }

    async fn reserve(&self, r: Reservation) -> Result<ReserveOutcome, O2cError> {
        o2c_app::ports::each_written_once(&r.others)?;
        self.db
            .call(move |c| {
                let tx = crate::db::checked(c)?;
                match classify(read_record(&tx, &r.key)?.as_ref(), &r.payload_hash, r.now) {
                    KeyState::Free => {}
                    KeyState::Completed(rec) => return Ok(ReserveOutcome::AlreadyCompleted(rec)),
                    KeyState::InProgress { until } => return Ok(ReserveOutcome::InProgress { until }),
                    KeyState::Mismatch { stored } => return Ok(ReserveOutcome::PayloadMismatch { stored }),
                }
                // Every check before the first write (`checked`: no savepoint).
                let claim = match &r.claim {
                    None => None,
                    Some(w) => match check_state(&tx, w)? {
                        None => return Ok(ReserveOutcome::StateConflict),
                        Some(s) => Some(s),
                    },
                };
                let Some(others) = check_aggregates(&tx, &r.others)? else {
                    return Ok(ReserveOutcome::StateConflict);
                };
                let claimed_version = claim.map(|s| put_state(&tx, s)).transpose()?;
                put_aggregates(&tx, others, &r.now.to_rfc3339())?;
                tx.exec(
                    "INSERT OR REPLACE INTO idempotency (key, status, payload_hash, expires_at, in_progress_until, result) VALUES (?1, ?2, ?3, ?4, ?5, NULL)",
                    params![r.key, IdempotencyStatus::InProgress.as_str(), r.payload_hash, millis(r.expires_at), millis(r.in_progress_until)],
                )
                .map_err(db_err)?;
                tx.commit()?;
                Ok(ReserveOutcome::Reserved { claimed_version })
            })
            .await
    }

    async fn release(&self, key: &str) -> Result<(), O2cError> {
        let key = key.to_owned();
        self.db
            .call(move |c| {
                c.exec("DELETE FROM idempotency WHERE key = ?1 AND status = ?2", params![key, IdempotencyStatus::InProgress.as_str()])
                    .map_err(db_err)?;
                Ok(())
            })
            .await
    }
}

impl RejectionStore for SqliteStore {
    async fn park(&self, m: &RejectedMessage) -> Result<(), O2cError> {
        let m = m.clone();
        self.db
            .call(move |c| {
                let tx = crate::db::atomic(c)?;
                let existing: Option<String> = tx
                    .row("SELECT body FROM rejections WHERE rejection_id = ?1", params![m.rejection_id], |r| r.get(0))
                    .optional()
                    .map_err(db_err)?;
                let stored = match existing {
                    None => m,
                    Some(body) => {
                        let mut old: RejectedMessage = serde_json::from_str(&body).map_err(row_err)?;
                        let new_ids: Vec<&String> = m.message_ids.iter().filter(|id| !old.message_ids.contains(id)).collect();
                        if new_ids.is_empty() {
                            // A redelivery of a message already parked: nothing new.
                            return Ok(());
                        }
                        old.deliveries += new_ids.len() as u32;
                        old.message_ids.extend(new_ids.into_iter().cloned());
                        old.message_ids.truncate(MAX_TRACKED_MESSAGE_IDS);
                        old.last_rejected_at = Some(m.rejected_at);
                        old.reasons = m.reasons;
                        old.error_type = m.error_type;
                        old
                    }
                };
                let last = stored.last_rejected_at.unwrap_or(stored.rejected_at).to_rfc3339();
                tx.exec(
                    "INSERT INTO rejections (rejection_id, rejected_at, last_rejected_at, body) VALUES (?1, ?2, ?3, ?4)
                     ON CONFLICT(rejection_id) DO UPDATE SET last_rejected_at = excluded.last_rejected_at, body = excluded.body",
                    params![stored.rejection_id, stored.rejected_at.to_rfc3339(), last, serde_json::to_string(&stored).map_err(row_err)?],
                )
                .map_err(db_err)?;
                tx.commit()
            })
            .await
    }

    async fn record_failure(&self, f: &DeliveryFailure) -> Result<(), O2cError> {
        let (id, text) = (f.message_id.clone(), format!("{}: {}", f.error_type, f.error));
        let body = serde_json::to_string(f).map_err(row_err)?;
        self.db
            .call(move |c| {
                let tx = crate::db::atomic(c)?;
                // The queue listing shows the last error; the failure record (the step, the
                // receive count, when) is kept under the message id, as on AWS.
                tx.exec("UPDATE messages SET last_error = ?2 WHERE message_id = ?1", params![id, text]).map_err(db_err)?;
                tx.exec(
                    "INSERT INTO delivery_failures (message_id, body) VALUES (?1, ?2) ON CONFLICT(message_id) DO UPDATE SET body = excluded.body",
                    params![id, body],
                )
                .map_err(db_err)?;
                tx.commit()
            })
            .await
    }

    async fn failure(&self, message_id: &str) -> Result<Option<DeliveryFailure>, O2cError> {
        let id = message_id.to_owned();
        self.db
            .call(move |c| {
                let body: Option<String> = c
                    .row("SELECT body FROM delivery_failures WHERE message_id = ?1", params![id], |r| r.get(0))
                    .optional()
                    .map_err(db_err)?;
                body.map(|b| serde_json::from_str(&b).map_err(row_err)).transpose()
            })
            .await
    }

    async fn rejections(&self, limit: usize) -> Result<Vec<RejectedMessage>, O2cError> {
        self.db
            .call(move |c| {
                let mut stmt =
                    c.prepare_cached("SELECT body FROM rejections ORDER BY last_rejected_at DESC, rowid DESC LIMIT ?1").map_err(db_err)?;
                let rows = stmt.query_map(params![limit as i64], |r| r.get::<_, String>(0)).map_err(db_err)?;
                rows.map(|r| serde_json::from_str(&r.map_err(db_err)?).map_err(row_err)).collect()
            })
            .await
    }
}
