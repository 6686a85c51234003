//! The durable local database: one SQLite file in WAL mode with group commit (see
//! [`Durability`]), so an acknowledged event, and every step, message and dead letter that
//! follows from it, survives a crash or power loss.
//! Blocking SQLite calls run on Tokio's blocking pool.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
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
    // Queue work independent of the backlog: receives walk a queue in send order
    // (`messages_by_queue_seq`) instead of sorting every visible message, and FIFO
    // deduplication ids live in their own table for SQS's 5-minute interval — also after
    // the message is deleted, as SQS does — instead of being scanned for in the queue.
    r#"
CREATE INDEX messages_by_queue_seq ON messages(queue, seq);
CREATE TABLE fifo_dedup (
    queue       TEXT NOT NULL,
    dedup_id    TEXT NOT NULL,
    sent_at     INTEGER NOT NULL,
    PRIMARY KEY (queue, dedup_id)
) WITHOUT ROWID;
CREATE INDEX fifo_dedup_by_time ON fifo_dedup(sent_at);
INSERT OR IGNORE INTO fifo_dedup (queue, dedup_id, sent_at) SELECT queue, dedup_id, MAX(sent_at) FROM messages WHERE dedup_id IS NOT NULL GROUP BY queue, dedup_id;
"#,
];

/// Statements through the connection's statement cache, so the hot path parses each SQL
/// text once per connection (`execute` / `query_row` would prepare it on every call).
pub trait Cached {
    /// `execute`, prepared once.
    fn exec<P: rusqlite::Params>(&self, sql: &str, params: P) -> rusqlite::Result<usize>;
    /// `query_row`, prepared once.
    fn row<T, P: rusqlite::Params, F: FnOnce(&rusqlite::Row<'_>) -> rusqlite::Result<T>>(
        &self,
        sql: &str,
        params: P,
        f: F,
    ) -> rusqlite::Result<T>;
}

impl Cached for Connection {
    fn exec<P: rusqlite::Params>(&self, sql: &str, params: P) -> rusqlite::Result<usize> {
        self.prepare_cached(sql)?.execute(params)
    }

    fn row<T, P: rusqlite::Params, F: FnOnce(&rusqlite::Row<'_>) -> rusqlite::Result<T>>(
        &self,
        sql: &str,
        params: P,
        f: F,
    ) -> rusqlite::Result<T> {
        self.prepare_cached(sql)?.query_row(params, f)
    }
}

/// How hard a commit is pushed to disk.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Durability {
    /// Group commit (default): commits go to the WAL without an fsync each
    /// (`synchronous=NORMAL`), and every acknowledgement to a publisher
    /// ([`Db::durable`], called by the runtime's `put_events`) waits for one fsync of the WAL
    /// that covers every commit finished before it — concurrent acknowledgements share it.
    /// An acknowledged event survives power loss. The work that follows from it is
    /// recoverable: the WAL's frames are checksummed in a chain, so recovery keeps a prefix
    /// of the commits (a step's commit is never kept without the enqueue that caused it, and
    /// the simulated external systems live in the same file); what a power loss takes back
    /// is processed again.
    #[default]
    Group,
    /// `synchronous=FULL`: every commit is fsynced before it returns.
    Full,
    /// `synchronous=NORMAL` (WAL) and no fsync on acknowledgement: survives a process crash,
    /// may lose the last commits on power loss. For throwaway stores (benchmarks, demos).
    Normal,
}

impl Durability {
    fn pragma(self) -> &'static str {
        match self {
            Self::Full => "FULL",
            Self::Group | Self::Normal => "NORMAL",
        }
    }
}

/// Group commit: which database calls an fsync of the WAL has covered.
struct GroupCommit {
    wal: PathBuf,
    /// Database calls finished (each may have committed).
    finished: AtomicU64,
    /// How many of them the last fsync covered; held while an fsync runs, so callers that
    /// arrive meanwhile wait for it and usually find their commits covered.
    synced: Mutex<u64>,
    /// fsyncs done (benchmarks).
    fsyncs: AtomicU64,
    /// Set when an fsync failed: Linux may have dropped the dirty pages it could not write,
    /// and a later fsync can succeed without them, so no acknowledgement is given again.
    failed: std::sync::atomic::AtomicBool,
}

impl GroupCommit {
    fn sync(&self, target: u64) -> Result<(), O2cError> {
        let mut synced = self.synced.lock().map_err(|_| O2cError::Bug("group commit mutex poisoned".into()))?;
        if self.failed.load(Ordering::SeqCst) {
            return Err(O2cError::Bug(format!("an earlier fsync of {} failed: commits since may be lost", self.wal.display())));
        }
        if *synced >= target {
            return Ok(());
        }
        let covers = self.finished.load(Ordering::SeqCst);
        // fsync flushes the file's dirty pages whichever descriptor asks; a WAL that does not
        // exist holds nothing (its commits were checkpointed into the synced database file).
        match std::fs::File::open(&self.wal) {
            Ok(f) => f.sync_data().map_err(|e| {
                self.failed.store(true, Ordering::SeqCst);
                O2cError::Bug(format!("fsync {}: {e}", self.wal.display()))
            })?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(O2cError::dependency("sqlite", format!("open {}: {e}", self.wal.display()))),
        }
        self.fsyncs.fetch_add(1, Ordering::Relaxed);
        *synced = covers;
        Ok(())
    }
}

impl Drop for GroupCommit {
    /// The last handle going away makes everything durable (CLI commands that wrote
    /// without publishing, and a runtime shutting down).
    fn drop(&mut self) {
        let target = self.finished.load(Ordering::SeqCst);
        let _ = self.sync(target);
    }
}

/// A handle on the database (cheap to clone). It also carries the embedded world's clock
/// and id source — the only places its bus, queues, store and simulators read time and
/// draw ids from (wall clock and random ids unless [`Db::with_time`] says otherwise).
#[derive(Clone)]
pub struct Db {
    conn: Arc<Mutex<Connection>>,
    /// Set under [`Durability::Group`].
    group: Option<Arc<GroupCommit>>,
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
        // Every statement of the hot path is prepared once per connection (`prepare_cached`).
        conn.set_prepared_statement_cache_capacity(128);
        conn.pragma_update(None, "journal_mode", "WAL").map_err(sqlite_err)?;
        conn.pragma_update(None, "synchronous", durability.pragma()).map_err(sqlite_err)?;
        conn.pragma_update(None, "foreign_keys", "ON").map_err(sqlite_err)?;
        let version: i64 = conn.pragma_query_value(None, "user_version", |r| r.get(0)).map_err(sqlite_err)?;
        for (i, sql) in MIGRATIONS.iter().enumerate().skip(usize::try_from(version).unwrap_or(usize::MAX)) {
            conn.execute_batch(&format!("BEGIN IMMEDIATE; {sql}; PRAGMA user_version = {}; COMMIT;", i + 1)).map_err(sqlite_err)?;
        }
        let group = if durability == Durability::Group {
            // The WAL sits beside the file SQLite opened (symlinks resolved), and only exists
            // in WAL mode: both are checked, so group commit never fsyncs the wrong file.
            let mode: String = conn.pragma_query_value(None, "journal_mode", |r| r.get(0)).map_err(sqlite_err)?;
            if !mode.eq_ignore_ascii_case("wal") {
                return Err(O2cError::dependency("sqlite", format!("{} is in journal mode {mode}, not WAL", path.display())));
            }
            let main = conn.path().filter(|p| !p.is_empty()).map(PathBuf::from).unwrap_or_else(|| path.to_owned());
            let mut wal = main.into_os_string();
            wal.push("-wal");
            Some(Arc::new(GroupCommit {
                wal: PathBuf::from(wal),
                finished: AtomicU64::new(0),
                synced: Mutex::new(0),
                fsyncs: AtomicU64::new(0),
                failed: std::sync::atomic::AtomicBool::new(false),
            }))
        } else {
            None
        };
        Ok(Self { conn: Arc::new(Mutex::new(conn)), group, path: path.to_owned(), clock: Arc::new(SystemClock), ids: Arc::new(RandomIds) })
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
        let db = self.clone();
        tokio::task::spawn_blocking(move || db.call_blocking(f)).await.map_err(|e| O2cError::Bug(format!("blocking task failed: {e}")))?
    }

    /// Runs `f` synchronously (for callers already off the async executor).
    pub fn call_blocking<T>(&self, f: impl FnOnce(&mut Connection) -> Result<T, O2cError>) -> Result<T, O2cError> {
        let mut guard = self.conn.lock().map_err(|_| O2cError::Bug("sqlite connection mutex poisoned".into()))?;
        let out = f(&mut guard);
        if let Some(g) = &self.group {
            g.finished.fetch_add(1, Ordering::SeqCst);
        }
        out
    }

    /// Makes every commit finished so far durable before the caller acknowledges anything:
    /// under [`Durability::Group`] one fsync of the WAL, shared with concurrent callers;
    /// nothing to do under `Full` (each commit was fsynced) or `Normal` (no promise).
    pub async fn durable(&self) -> Result<(), O2cError> {
        let Some(group) = self.group.clone() else { return Ok(()) };
        let target = group.finished.load(Ordering::SeqCst);
        tokio::task::spawn_blocking(move || group.sync(target)).await.map_err(|e| O2cError::Bug(format!("blocking task failed: {e}")))?
    }

    /// fsyncs group commit has done so far (benchmarks: commits per fsync).
    pub fn group_fsyncs(&self) -> u64 {
        self.group.as_ref().map_or(0, |g| g.fsyncs.load(Ordering::Relaxed))
    }
}
