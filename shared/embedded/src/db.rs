//! The durable local database: one SQLite file in WAL mode with `synchronous=FULL`, so a
//! committed step, an enqueued message or a dead letter survives a crash or power loss.
//! Blocking SQLite calls run on Tokio's blocking pool.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use o2c_app::O2cError;
use o2c_app::clock::{Clock, IdGenerator, RandomIds, SystemClock};
use rusqlite::{Connection, OpenFlags};

/// Schema, applied once per version (`PRAGMA user_version`).
const MIGRATIONS: &[&str] = &[
    r#"
CREATE TABLE engagements (
    engagement_id   TEXT PRIMARY KEY,
    version         INTEGER NOT NULL,
    status          TEXT NOT NULL,
    open_exception  INTEGER NOT NULL,
    updated_at      TEXT NOT NULL,
    body            TEXT NOT NULL
);
CREATE INDEX engagements_by_status ON engagements(status, updated_at);
CREATE INDEX engagements_by_exception ON engagements(open_exception, updated_at);

CREATE TABLE audit (
    seq             INTEGER PRIMARY KEY AUTOINCREMENT,
    engagement_id   TEXT NOT NULL,
    body            TEXT NOT NULL
);
CREATE INDEX audit_by_engagement ON audit(engagement_id, seq);

CREATE TABLE idempotency (
    key                 TEXT PRIMARY KEY,
    status              TEXT NOT NULL,
    payload_hash        TEXT NOT NULL,
    expires_at          INTEGER NOT NULL,
    in_progress_until   INTEGER,
    result              TEXT
);

CREATE TABLE rejections (
    rejection_id    TEXT PRIMARY KEY,
    rejected_at     TEXT NOT NULL,
    body            TEXT NOT NULL
);

CREATE TABLE bus_events (
    seq             INTEGER PRIMARY KEY AUTOINCREMENT,
    event_id        TEXT NOT NULL UNIQUE,
    received_at     INTEGER NOT NULL,
    source          TEXT NOT NULL,
    detail_type     TEXT NOT NULL,
    event           TEXT NOT NULL,
    matched_rules   TEXT NOT NULL
);

CREATE TABLE messages (
    seq                 INTEGER PRIMARY KEY AUTOINCREMENT,
    message_id          TEXT NOT NULL UNIQUE,
    queue               TEXT NOT NULL,
    body                TEXT NOT NULL,
    group_id            TEXT,
    dedup_id            TEXT,
    sent_at             INTEGER NOT NULL,
    visible_at          INTEGER NOT NULL,
    receive_count       INTEGER NOT NULL DEFAULT 0,
    first_received_at   INTEGER,
    dead_lettered_from  TEXT,
    last_error          TEXT
);
CREATE INDEX messages_by_queue ON messages(queue, visible_at, seq);

CREATE TABLE sim_projects (
    system          TEXT NOT NULL,
    external_key    TEXT NOT NULL,
    project_id      TEXT NOT NULL UNIQUE,
    status          TEXT NOT NULL,
    spec            TEXT NOT NULL,
    created_at      TEXT NOT NULL,
    PRIMARY KEY (system, external_key)
);
CREATE TABLE sim_billing_schedules (
    external_key    TEXT PRIMARY KEY,
    schedule_id     TEXT NOT NULL UNIQUE,
    erp_project_id  TEXT NOT NULL,
    schedule        TEXT NOT NULL,
    created_at      TEXT NOT NULL
);
CREATE TABLE sim_crm_opportunities (
    opportunity_id  TEXT PRIMARY KEY,
    sync_version    INTEGER NOT NULL,
    fields          TEXT NOT NULL,
    updated_at      TEXT NOT NULL
);
CREATE TABLE sim_faults (
    seq         INTEGER PRIMARY KEY AUTOINCREMENT,
    system      TEXT NOT NULL,
    operation   TEXT NOT NULL,
    fault       TEXT NOT NULL,
    remaining   INTEGER
);
CREATE TABLE sim_calls (
    seq         INTEGER PRIMARY KEY AUTOINCREMENT,
    system      TEXT NOT NULL,
    operation   TEXT NOT NULL,
    key         TEXT NOT NULL,
    outcome     TEXT NOT NULL,
    at          TEXT NOT NULL
);
"#,
    r#"
ALTER TABLE rejections ADD COLUMN last_rejected_at TEXT;
UPDATE rejections SET last_rejected_at = rejected_at;
CREATE INDEX rejections_by_last ON rejections(last_rejected_at);
"#,
    r#"
UPDATE idempotency SET status = 'INPROGRESS' WHERE status = 'IN_PROGRESS';
CREATE TABLE aggregates (
    kind        TEXT NOT NULL,
    id          TEXT NOT NULL,
    version     INTEGER NOT NULL,
    updated_at  TEXT NOT NULL,
    body        TEXT NOT NULL,
    PRIMARY KEY (kind, id)
);
CREATE TABLE delivery_failures (
    message_id  TEXT PRIMARY KEY,
    body        TEXT NOT NULL
);
"#,
    // Aggregates gain an owner (engagement, resource or legal entity); the CRM sync states
    // stored so far were keyed by their engagement alone.
    r#"
CREATE TABLE aggregates_v4 (
    kind        TEXT NOT NULL,
    owner       TEXT NOT NULL,
    id          TEXT NOT NULL,
    version     INTEGER NOT NULL,
    updated_at  TEXT NOT NULL,
    body        TEXT NOT NULL,
    PRIMARY KEY (kind, owner, id)
);
INSERT INTO aggregates_v4 (kind, owner, id, version, updated_at, body) SELECT kind, id, '', version, updated_at, body FROM aggregates;
DROP TABLE aggregates;
ALTER TABLE aggregates_v4 RENAME TO aggregates;
CREATE TABLE sim_invoices (
    number          TEXT PRIMARY KEY,
    invoice_id      TEXT NOT NULL,
    erp_invoice_id  TEXT NOT NULL UNIQUE,
    legal_entity_id TEXT NOT NULL,
    total           TEXT NOT NULL,
    currency        TEXT NOT NULL,
    body            TEXT NOT NULL,
    created_at      TEXT NOT NULL
);
"#,
    // The ERP simulator books cash receipts.
    r#"
CREATE TABLE sim_receipts (
    payment_id      TEXT PRIMARY KEY,
    receipt_id      TEXT NOT NULL UNIQUE,
    legal_entity_id TEXT NOT NULL,
    body            TEXT NOT NULL,
    reversed_by     TEXT,
    created_at      TEXT NOT NULL
);
"#,
    // The ERP simulator posts revenue journals.
    r#"
CREATE TABLE sim_journals (
    journal_id      TEXT PRIMARY KEY,
    erp_journal_id  TEXT NOT NULL UNIQUE,
    legal_entity_id TEXT NOT NULL,
    period          TEXT NOT NULL,
    body            TEXT NOT NULL,
    created_at      TEXT NOT NULL
);
"#,
    // The CRM simulator holds invoice records (account and opportunity related lists).
    r#"
CREATE TABLE sim_crm_invoices (
    number          TEXT PRIMARY KEY,
    version         INTEGER NOT NULL,
    account_id      TEXT NOT NULL,
    opportunity_id  TEXT NOT NULL,
    fields          TEXT NOT NULL,
    updated_at      TEXT NOT NULL
);
"#,
];

/// How hard a commit is pushed to disk.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Durability {
    /// `synchronous=FULL`: every commit is fsynced; an acknowledged step survives power loss.
    #[default]
    Full,
    /// `synchronous=NORMAL` (WAL): survives a process crash, may lose the last commits on
    /// power loss. Faster; for throwaway stores (benchmarks, demos).
    Normal,
}

impl Durability {
    fn pragma(self) -> &'static str {
        match self {
            Self::Full => "FULL",
            Self::Normal => "NORMAL",
        }
    }
}

/// A handle on the database (cheap to clone). It also carries the embedded world's clock
/// and id source — the only places its bus, queues, store and simulators read time and
/// draw ids from (wall clock and random ids unless [`Db::with_time`] says otherwise).
#[derive(Clone)]
pub struct Db {
    conn: Arc<Mutex<Connection>>,
    path: PathBuf,
    clock: Arc<dyn Clock>,
    ids: Arc<dyn IdGenerator>,
}

fn sqlite_err(e: rusqlite::Error) -> O2cError {
    O2cError::dependency("sqlite", e.to_string())
}

/// Maps a rusqlite error to the taxonomy (busy / I/O → retryable dependency).
pub fn db_err(e: rusqlite::Error) -> O2cError {
    sqlite_err(e)
}

/// Maps a (de)serialisation error of a stored row: data written by this code that no
/// longer parses is a bug, not a transient failure.
pub fn row_err(e: serde_json::Error) -> O2cError {
    O2cError::Bug(format!("stored row does not parse: {e}"))
}

impl Db {
    /// Opens (creating if needed) and migrates the database at `path`.
    pub fn open(path: &Path) -> Result<Self, O2cError> {
        Self::open_with(path, Durability::Full)
    }

    /// Opens with an explicit durability level.
    pub fn open_with(path: &Path, durability: Durability) -> Result<Self, O2cError> {
        let conn = Connection::open_with_flags(
            path,
            OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_CREATE | OpenFlags::SQLITE_OPEN_NO_MUTEX,
        )
        .map_err(sqlite_err)?;
        conn.busy_timeout(Duration::from_secs(10)).map_err(sqlite_err)?;
        conn.pragma_update(None, "journal_mode", "WAL").map_err(sqlite_err)?;
        conn.pragma_update(None, "synchronous", durability.pragma()).map_err(sqlite_err)?;
        conn.pragma_update(None, "foreign_keys", "ON").map_err(sqlite_err)?;
        let version: i64 = conn.pragma_query_value(None, "user_version", |r| r.get(0)).map_err(sqlite_err)?;
        for (i, sql) in MIGRATIONS.iter().enumerate().skip(usize::try_from(version).unwrap_or(usize::MAX)) {
            conn.execute_batch(&format!("BEGIN IMMEDIATE; {sql}; PRAGMA user_version = {}; COMMIT;", i + 1)).map_err(sqlite_err)?;
        }
        Ok(Self { conn: Arc::new(Mutex::new(conn)), path: path.to_owned(), clock: Arc::new(SystemClock), ids: Arc::new(RandomIds) })
    }

    /// The same database with another clock and id source (deterministic runs).
    pub fn with_time(mut self, clock: Arc<dyn Clock>, ids: Arc<dyn IdGenerator>) -> Self {
        self.clock = clock;
        self.ids = ids;
        self
    }

    /// The clock.
    pub fn clock(&self) -> &Arc<dyn Clock> {
        &self.clock
    }

    /// Now, in milliseconds since the epoch (queue timestamps).
    pub fn now_ms(&self) -> i64 {
        self.clock.now().timestamp_millis()
    }

    /// A new id.
    pub fn new_id(&self) -> String {
        self.ids.new_id()
    }

    /// The file path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Runs `f` with the connection on the blocking pool.
    pub async fn call<T, F>(&self, f: F) -> Result<T, O2cError>
    where
        T: Send + 'static,
        F: FnOnce(&mut Connection) -> Result<T, O2cError> + Send + 'static,
    {
        let conn = self.conn.clone();
        tokio::task::spawn_blocking(move || {
            let mut guard = conn.lock().map_err(|_| O2cError::Bug("sqlite connection mutex poisoned".into()))?;
            f(&mut guard)
        })
        .await
        .map_err(|e| O2cError::Bug(format!("blocking task failed: {e}")))?
    }

    /// Runs `f` synchronously (for callers already off the async executor).
    pub fn call_blocking<T>(&self, f: impl FnOnce(&mut Connection) -> Result<T, O2cError>) -> Result<T, O2cError> {
        let mut guard = self.conn.lock().map_err(|_| O2cError::Bug("sqlite connection mutex poisoned".into()))?;
        f(&mut guard)
    }
}
