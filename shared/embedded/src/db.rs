//! The durable local database: one SQLite file in WAL mode with group commit (see
//! [`Durability`]): an acknowledged event survives a crash or power loss, and every step,
//! message and dead letter that follows from it is either kept or, if a crash takes back the
//! open batch, processed again.
//! SQLite calls that do not wait for the disk run on the caller's thread; under group commit
//! they share batch transactions, so a commit (one write of the WAL) covers many calls.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

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
    // The events that matched no rule, for `o2c unrouted`: a partial index holds only them.
    r#"
CREATE INDEX bus_events_unrouted ON bus_events(seq) WHERE matched_rules = '[]';
"#,
    // The simulators number what they create from sequences (a `COUNT(*)` per creation made
    // the cost of each grow with how many there were), seeded with the counts so far.
    r#"
CREATE TABLE sim_sequences (
    name    TEXT PRIMARY KEY,
    value   INTEGER NOT NULL
) WITHOUT ROWID;
INSERT INTO sim_sequences (name, value) SELECT 'project:' || system, COUNT(*) FROM sim_projects GROUP BY system;
INSERT INTO sim_sequences (name, value) SELECT 'receipt', COUNT(*) FROM sim_receipts;
INSERT INTO sim_sequences (name, value) SELECT 'journal', COUNT(*) FROM sim_journals;
INSERT INTO sim_sequences (name, value) SELECT 'billing_schedule', COUNT(*) FROM sim_billing_schedules;
INSERT INTO sim_sequences (name, value) SELECT 'invoice', COUNT(*) FROM sim_invoices;
"#,
    // `o2c serve`'s credentials (a SHA-256 of each key, never the key) and its refusals.
    r#"
CREATE TABLE access_keys (
    key_id          TEXT PRIMARY KEY,
    name            TEXT NOT NULL,
    key_sha256      TEXT NOT NULL,
    body            TEXT NOT NULL,
    created_at      TEXT NOT NULL,
    revoked_at      TEXT
) WITHOUT ROWID;
CREATE INDEX access_keys_by_name ON access_keys(name);
CREATE TABLE access_refusals (
    seq             INTEGER PRIMARY KEY AUTOINCREMENT,
    at              TEXT NOT NULL,
    body            TEXT NOT NULL
);
"#,
    // Vendors' webhook signing secrets, per key: a signature check needs the secret itself.
    r#"
CREATE TABLE access_webhooks (
    key_id          TEXT PRIMARY KEY REFERENCES access_keys(key_id),
    vendor          TEXT NOT NULL,
    secret          TEXT NOT NULL
) WITHOUT ROWID;
CREATE INDEX access_webhooks_by_vendor ON access_webhooks(vendor);
"#,
    // What operators did through the console (`o2c serve`'s `/console`), by whom.
    r#"
CREATE TABLE access_actions (
    seq             INTEGER PRIMARY KEY AUTOINCREMENT,
    at              TEXT NOT NULL,
    body            TEXT NOT NULL
);
"#,
    // The ERP simulator's receipt applications by invoice number: checking that a receipt
    // does not apply an invoice above its total read every live receipt, so each booking
    // cost more than the last. Filled from the receipts booked so far (reversals apply nothing).
    r#"
CREATE TABLE sim_receipt_applications (
    payment_id      TEXT NOT NULL REFERENCES sim_receipts(payment_id),
    line            INTEGER NOT NULL,
    number          TEXT NOT NULL,
    amount          TEXT NOT NULL,
    PRIMARY KEY (payment_id, line)
) WITHOUT ROWID;
CREATE INDEX sim_receipt_applications_by_number ON sim_receipt_applications(number);
INSERT INTO sim_receipt_applications (payment_id, line, number, amount)
    SELECT r.payment_id, a.key, json_extract(a.value, '$.number'), json_extract(a.value, '$.amount.amount')
    FROM sim_receipts r, json_each(r.body, '$.applications') a
    WHERE json_extract(r.body, '$.reverses') IS NULL;
"#,
    // Reservations still in progress, for the release after a crash (`Runtime::recover`):
    // without it that release read every idempotency record ever written, once per restart.
    r#"
CREATE INDEX idempotency_in_progress ON idempotency(in_progress_until) WHERE status = 'INPROGRESS';
"#,
    // FIFO group checks from the index alone: which groups have a message in flight, and
    // whether a visible message is in a free group. The group id is stored after the body,
    // so reading it from the row walked the body's overflow pages, once per message per
    // check (a tenth of a simulation's CPU). Standard queues' entries hold a NULL there.
    r#"
DROP INDEX messages_by_queue;
CREATE INDEX messages_by_queue_visible ON messages(queue, visible_at, group_id);
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

/// What a call must do atomically, over prepared statements (rusqlite's `Transaction` and
/// `Savepoint` parse their SQL on every use). Inside a batch transaction it is a savepoint
/// ([`atomic`]) or nothing at all ([`checked`]); outside one, an `IMMEDIATE` transaction of
/// its own — the write lock taken up front, so a read-then-write never meets another
/// process's commit in between. Kept by [`Atomic::commit`]; undone when dropped without it.
pub struct Atomic<'c> {
    c: &'c Connection,
    undo: Undo,
    done: bool,
}

thread_local! {
    /// An [`Atomic`] whose undo failed with a transaction still open on its connection (by
    /// address): why. Set by its drop, taken by the same call's `after_call` — the closure
    /// runs on this thread, holding the connection, from `begin` to `after_call`, with no
    /// await in between.
    static UNDO_FAILED: std::cell::Cell<Option<(usize, String)>> = const { std::cell::Cell::new(None) };
}

/// The key [`UNDO_FAILED`] records a connection under.
fn conn_key(c: &Connection) -> usize {
    std::ptr::from_ref(c) as usize
}

/// After an undo statement of `c` failed: if a transaction is still open, it holds part of a
/// failed call, so the call's `after_call` must stop the handle (it is never committed).
fn undo_failed(c: &Connection, e: &rusqlite::Error) {
    if !c.is_autocommit() {
        UNDO_FAILED.set(Some((conn_key(c), e.to_string())));
    }
}

/// `sql`, the statement that undoes a failed unit (tests make it fail: SQLite's own rollback
/// could not be made to fail here).
fn undo_sql(sql: &'static str) -> &'static str {
    #[cfg(test)]
    if tests::FAIL_UNDO.get() {
        return "ROLLBACK TO o2c_no_such_savepoint";
    }
    sql
}

/// How an [`Atomic`] unit is undone when dropped without [`Atomic::commit`].
enum Undo {
    /// Its own transaction: `ROLLBACK`.
    Own,
    /// A savepoint in the open batch: `ROLLBACK TO` it.
    Savepoint,
    /// No savepoint ([`checked`]): nothing to undo while the connection's change count is
    /// still this; past it, the whole batch is rolled back and the handle stops.
    Batch { changes_before: u64 },
}

/// Starts an atomic unit on `c`.
pub fn atomic(c: &Connection) -> Result<Atomic<'_>, O2cError> {
    let own = c.is_autocommit();
    c.exec(if own { "BEGIN IMMEDIATE" } else { "SAVEPOINT o2c_call" }, []).map_err(sqlite_err)?;
    Ok(Atomic { c, undo: if own { Undo::Own } else { Undo::Savepoint }, done: false })
}

/// Starts an atomic unit for a call that makes every check before its first write, so that
/// once it writes, only SQLite itself (I/O, a full disk) or a bug can stop it short of
/// [`Atomic::commit`]. Its writes must be rows counted by `total_changes` (`INSERT`,
/// `UPDATE`, `DELETE`, run to completion or reset): no DDL. Inside a batch it takes no
/// savepoint: SQLite copies every page a savepoint's call changes into a sub-journal first,
/// 16 % of the embedded runtime's CPU (BENCHMARKS.md). Dropped without commit before its
/// first write, it undoes nothing, as there is nothing to undo; after one, it rolls back the
/// whole batch — calls already answered included — and the handle refuses every later call,
/// as after an I/O error: a crash, whose loss is processed again. Outside a batch it is
/// [`atomic`].
pub fn checked(c: &Connection) -> Result<Atomic<'_>, O2cError> {
    if c.is_autocommit() {
        return atomic(c);
    }
    Ok(Atomic { c, undo: Undo::Batch { changes_before: c.total_changes() }, done: false })
}

impl Atomic<'_> {
    /// Keeps what was done (`COMMIT`, `RELEASE` of the savepoint, or nothing: a [`checked`]
    /// unit inside a batch is kept with the batch).
    pub fn commit(mut self) -> Result<(), O2cError> {
        self.done = true;
        match self.undo {
            Undo::Own => self.c.exec("COMMIT", []).map(|_| ()).map_err(sqlite_err),
            Undo::Savepoint => self.c.exec("RELEASE o2c_call", []).map(|_| ()).map_err(sqlite_err),
            Undo::Batch { .. } => Ok(()),
        }
    }
}

impl std::ops::Deref for Atomic<'_> {
    type Target = Connection;
    fn deref(&self) -> &Connection {
        self.c
    }
}

impl Drop for Atomic<'_> {
    fn drop(&mut self) {
        if self.done {
            return;
        }
        match self.undo {
            // Each undo that fails with a transaction still open leaves part of this call in
            // it, and nothing here can take it out: the call's `after_call` stops the handle.
            Undo::Own => {
                if let Err(e) = self.c.exec(undo_sql("ROLLBACK"), []) {
                    undo_failed(self.c, &e);
                }
            }
            Undo::Savepoint => match self.c.exec(undo_sql("ROLLBACK TO o2c_call"), []) {
                // Not released after a failed rollback: that would merge the half call into
                // the batch.
                Err(e) => undo_failed(self.c, &e),
                Ok(_) => {
                    let _ = self.c.exec("RELEASE o2c_call", []);
                }
            },
            // Written, and no way to undo this call alone: the batch goes, and the handle
            // (which finds its batch gone after the call) stops.
            Undo::Batch { changes_before } if self.c.total_changes() != changes_before => {
                if let Err(e) = self.c.exec(undo_sql("ROLLBACK"), []) {
                    undo_failed(self.c, &e);
                }
            }
            Undo::Batch { .. } => {}
        }
    }
}

/// How hard a commit is pushed to disk.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Durability {
    /// Group commit (default). Calls share one transaction for up to [`BATCH_WINDOW`] or
    /// [`BATCH_CALLS`], committed to the WAL without an fsync (`synchronous=NORMAL`); every
    /// acknowledgement to a publisher ([`Db::durable`], called by the runtime's `put_events`)
    /// commits the open batch and waits for one fsync of the WAL that covers every commit
    /// before it — concurrent acknowledgements share it. An acknowledged event survives power
    /// loss. The work that follows from it is recoverable: a crash of the process takes back
    /// at most the open batch, whole (its calls were serialised on one connection, so what
    /// survives is a prefix of them); power loss keeps a prefix of the commits (the WAL's
    /// frames are checksummed in a chain). A step's commit is never kept without the enqueue
    /// that caused it, and the simulated external systems live in the same file; what is
    /// taken back is processed again.
    #[default]
    Group,
    /// `synchronous=FULL`: every commit is fsynced before it returns.
    Full,
    /// `synchronous=NORMAL` (WAL), each call its own commit and no fsync on acknowledgement:
    /// survives a process crash, may lose the last commits on power loss. For throwaway
    /// stores (benchmarks, demos).
    Normal,
    /// `synchronous=NORMAL` (WAL) with calls batched like `Group`, and no fsync: an
    /// acknowledgement promises nothing, and a crash of the process takes back the open
    /// batch. Each batch writes a page it changed once, where `Normal` writes it for every
    /// call. For the simulation, whose crashes end a runtime by dropping it — which commits
    /// the open batch — so a simulated crash is a process dying after its last commit. (A
    /// process killed with its batch open is tested under `Group`:
    /// `when_serve_is_killed_during_a_burst_of_publishers_should_keep_every_acknowledged_event`.)
    Batched,
    /// No file at all: the database lives in this process's memory (calls batched like
    /// `Group`) and is gone when the last handle is. Nothing survives the process; for the
    /// in-memory throughput benchmark, where only the cost of the work itself is measured.
    Memory,
}

impl Durability {
    fn pragma(self) -> &'static str {
        match self {
            Self::Full => "FULL",
            Self::Group | Self::Normal | Self::Batched => "NORMAL",
            Self::Memory => "OFF",
        }
    }
}

/// Group commit: which commits an fsync of the WAL has covered.
struct GroupCommit {
    wal: PathBuf,
    /// Commits that changed something.
    finished: AtomicU64,
    /// How many of them the last fsync covered; held while an fsync runs, so callers that
    /// arrive meanwhile wait for it and usually find their commits covered.
    synced: Mutex<u64>,
    /// fsyncs done (benchmarks).
    fsyncs: AtomicU64,
    /// Set when an fsync failed: Linux may have dropped the dirty pages it could not write,
    /// and a later fsync can succeed without them, so no acknowledgement is given again.
    failed: AtomicBool,
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

/// How long a batch transaction stays open under [`Durability::Group`]: the calls made
/// within it share one commit (one write of their pages to the WAL: a page changed by many
/// calls is written once). A background thread commits a batch left open this long (checked
/// every [`FLUSH_TICK`], so an idle batch is committed within about 60 ms). An
/// acknowledgement commits the open batch at once instead of waiting for the window, as does
/// a checkpoint's second pass (every [`CHECKPOINT_PAGES`] written to the WAL); a batch
/// in which nothing changed is committed by the call that found it so (idle polls do not hold
/// the write lock). The window bounds what a crash takes back (and processes again), how late
/// another process's reader sees a call, and how long another process's writer waits for
/// the lock. With mimalloc, 50 ms and 5,000 calls measured 5–10 % less CPU per engagement
/// than 10 ms and 1,000 (BENCHMARKS.md); longer windows gained little more.
pub const BATCH_WINDOW: Duration = Duration::from_millis(50);
/// The most calls one batch transaction holds.
pub const BATCH_CALLS: u32 = 5_000;
/// How often the background threads look: the flusher for a batch older than its window, the
/// checkpoint thread at the WAL's length.
pub const FLUSH_TICK: Duration = Duration::from_millis(10);

/// The open batch transaction.
struct Batch {
    since: Instant,
    calls: u32,
    changes_before: u64,
}

/// The connection and its transaction state (behind the handle's mutex).
struct Conn {
    c: Connection,
    /// Group commit's fsync bookkeeping (`Durability::Group` only).
    group: Option<Arc<GroupCommit>>,
    /// Calls share one transaction until [`BATCH_WINDOW`] or [`BATCH_CALLS`]
    /// (`Durability::Group`, `Batched` and `Memory`); otherwise each call is its own transaction.
    batching: bool,
    /// How long a batch stays open ([`BATCH_WINDOW`] unless set).
    window: Duration,
    open: Option<Batch>,
    /// Between a call's `begin` and its `after_call`: still set when the call panicked, so
    /// that nothing commits what it left half done (the handle's drop included).
    in_call: bool,
    /// Set once an open transaction was undone whole — by SQLite on its own (an I/O error, a
    /// full disk) or by a [`checked`] call that failed after its first write: calls already
    /// answered were undone with it (or, if that `ROLLBACK` failed, the transaction holds half
    /// of the failed call and must never commit), so the handle refuses every further call
    /// and the process must restart (what it lost is what a crash would lose, and is
    /// processed again).
    broken: Option<String>,
}

impl Conn {
    /// Under batching, a call joins the open batch, an `IMMEDIATE` transaction begun if none
    /// is open. Otherwise a call runs as it is: single statements commit on their own, and
    /// what must be atomic takes [`atomic`] (its own `IMMEDIATE` transaction) — so reads
    /// never take the write lock from the process that writes.
    fn begin(&mut self) -> Result<(), O2cError> {
        self.usable()?;
        if self.batching && self.open.is_none() {
            self.c.prepare_cached("BEGIN IMMEDIATE").and_then(|mut s| s.execute([])).map_err(sqlite_err)?;
            self.open = Some(Batch { since: Instant::now(), calls: 0, changes_before: self.c.total_changes() });
        }
        // Left by an undo on this connection outside a call: not this call's.
        if let Some(stale) = UNDO_FAILED.take()
            && stale.0 != conn_key(&self.c)
        {
            UNDO_FAILED.set(Some(stale));
        }
        self.in_call = true;
        Ok(())
    }

    /// After a call: commit the batch once it is full or old enough. `failed` is the call's
    /// own error, kept in the reason if the batch was lost with it.
    fn after_call(&mut self, failed: Option<&O2cError>) -> Result<(), O2cError> {
        self.in_call = false;
        match UNDO_FAILED.take() {
            Some((key, undo)) if key == conn_key(&self.c) => {
                // The open transaction holds part of a failed call: it must never commit. The
                // handle stops (every later commit is refused); one more plain rollback, should
                // it work, releases the write lock other processes wait for, and closing the
                // connection, or a crash, rolls back what it does not.
                self.open = None;
                let _ = self.c.execute_batch("ROLLBACK");
                let cause = failed.map(|e| format!("; the call's error: {e}")).unwrap_or_default();
                return Err(self.break_handle(format!("a call failed past its first write and undoing it failed ({undo}){cause}")));
            }
            // Another connection's (a call made inside this one's): its own `after_call` takes it.
            other => UNDO_FAILED.set(other),
        }
        if self.open.is_some() && self.c.is_autocommit() {
            self.open = None;
            let cause = failed.map(|e| format!("; the call's error: {e}")).unwrap_or_default();
            return Err(self.break_handle(format!(
                "the open transaction was rolled back (by SQLite after an I/O error or a full disk, or after a checked call failed past its first write){cause}"
            )));
        }
        let changes = self.c.total_changes();
        let due = match &mut self.open {
            Some(b) => {
                b.calls += 1;
                // Nothing written yet (an empty receive, a read): keep no lock for it.
                changes == b.changes_before || b.calls >= BATCH_CALLS || b.since.elapsed() >= self.window
            }
            None => false,
        };
        if due { self.commit() } else { Ok(()) }
    }

    fn usable(&self) -> Result<(), O2cError> {
        match &self.broken {
            Some(why) => Err(O2cError::Bug(format!("the database handle is unusable after an earlier failure: {why}"))),
            None => Ok(()),
        }
    }

    /// Commits the open transaction, if any (refused once the handle is broken: nothing may
    /// be acknowledged after a loss).
    fn commit(&mut self) -> Result<(), O2cError> {
        self.usable()?;
        if self.in_call {
            return Err(self.break_handle("a call panicked before it finished: what it wrote is never committed".into()));
        }
        let Some(batch) = self.open.take() else { return Ok(()) };
        if let Err(e) = self.c.prepare_cached("COMMIT").and_then(|mut s| s.execute([])) {
            if !self.c.is_autocommit() {
                let _ = self.c.execute_batch("ROLLBACK");
            }
            return Err(self.break_handle(format!("commit failed: {e}")));
        }
        if self.c.total_changes() != batch.changes_before
            && let Some(g) = &self.group
        {
            g.finished.fetch_add(1, Ordering::SeqCst);
        }
        Ok(())
    }

    fn break_handle(&mut self, why: String) -> O2cError {
        tracing::error!(reason = %why, "the database handle stops: calls it reported done were undone");
        self.broken = Some(why.clone());
        O2cError::Bug(why)
    }
}

impl Drop for Conn {
    /// A handle going away commits its open batch (then `GroupCommit` fsyncs it).
    fn drop(&mut self) {
        let _ = self.commit();
    }
}

/// A handle on the database (cheap to clone). It also carries the embedded world's clock
/// and id source — the only places its bus, queues, store and simulators read time and
/// draw ids from (wall clock and random ids unless [`Db::with_time`] says otherwise).
#[derive(Clone)]
pub struct Db {
    shared: Arc<Shared>,
    /// Calls run on the caller's thread (their commits never fsync); under
    /// `Durability::Full` they go to the blocking pool.
    inline: bool,
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

/// What the handles share. Dropping the last handle commits the open batch and fsyncs it
/// right there, on the thread that drops it — never later on a background thread, which
/// could be after the process has exited.
struct Shared {
    conn: Arc<Mutex<Conn>>,
    /// The WAL's checkpoints (file-backed databases).
    checkpointer: Option<Arc<Checkpointer>>,
}

impl Drop for Shared {
    fn drop(&mut self) {
        if let Ok(mut c) = self.conn.lock() {
            let _ = c.commit();
            if let Some(g) = &c.group {
                let _ = g.sync(g.finished.load(Ordering::SeqCst));
            }
        }
        // Both connections close here, on this thread, before the drop returns, whatever a
        // background thread still holds for its tick (a process that exits right after it
        // leaves a closed file, no WAL beside it): the checkpointer's first, once a pass in
        // progress ends, then the main one — the file's last in this process, whose close
        // checkpoints and removes the WAL unless another process holds the file.
        if let Some(k) = &self.checkpointer
            && let Ok(mut c) = k.conn.lock()
        {
            c.take();
        }
        if let Ok(mut c) = self.conn.lock()
            && let Ok(closed) = Connection::open_in_memory()
        {
            drop(std::mem::replace(&mut c.c, closed));
        }
    }
}

/// WAL pages between checkpoints (~40 MB): a page the queues rewrite many times between
/// checkpoints is copied into the file once (SQLite's automatic checkpoint runs at 1,000).
pub const CHECKPOINT_PAGES: i64 = 10_000;

/// The WAL's length as the main connection's WAL hook reports it after each of its commits.
#[derive(Default)]
struct WalLength {
    /// Frames in the WAL.
    frames: AtomicI64,
    /// Times the WAL was seen to start over (a commit found it shorter than the last one did).
    restarts: AtomicU64,
}

/// Checkpoints the WAL on a thread of its own, over a connection of its own, instead of
/// inside commits. With SQLite's automatic checkpoint, the commit that took the WAL past its
/// threshold copied every page into the file and fsynced it before returning, holding the
/// connection (and, on one thread, every task) meanwhile — an acknowledgement's commit
/// included. Once [`CHECKPOINT_PAGES`] were written to the WAL since the last checkpoint, a
/// cycle runs:
/// - a `PASSIVE` pass copies the WAL into the file without the write lock while the workers
///   go on writing, and the file and the WAL are fsynced, still without holding anything;
/// - then, holding the main connection between two calls, its open batch is committed and a
///   second pass copies what was written meanwhile (its fsyncs cover only that). SQLite starts
///   the WAL over only in a transaction begun while the whole WAL is in the file, and under
///   load the next batch begins microseconds after a commit: without this pause the WAL never
///   started over while the load lasted (at 100,000 queued it grew for the whole run).
///
/// A pass that another process's reader holds back is retried at every tick until one
/// completes (SQLite's automatic checkpoint retries at every commit). An I/O error stops the
/// checkpoints and the handle: Linux may have dropped the pages it could not write, a retry
/// could then succeed without them, and the WAL start over on a file that lacks them.
struct Checkpointer {
    /// Its connection; taken (closed) by the last handle.
    conn: Mutex<Option<Connection>>,
    /// The database file and its WAL, fsynced between the two passes.
    files: [PathBuf; 2],
    /// The WAL's length (the main connection's hook).
    wal: Arc<WalLength>,
    /// The WAL's restarts seen and the frames copied into the file, at the last pass.
    backfilled: Mutex<(u64, i64)>,
    /// A cycle has begun and not yet copied the whole WAL.
    cycle: AtomicBool,
    /// Pages written since the last checkpoint that start the next ([`CHECKPOINT_PAGES`]).
    every: AtomicI64,
    /// Passes run.
    passes: AtomicU64,
    /// The last pass failed (its warning is logged once, not at every tick).
    failing: AtomicBool,
    /// Set after an I/O error: no more checkpoints.
    stopped: AtomicBool,
}

/// What one checkpoint pass did.
enum Pass {
    /// Frames in the WAL, and frames copied into the file.
    Ran(i64, i64),
    /// Did not run: another process's checkpoint held the lock, or an error that the next
    /// tick retries.
    Skipped,
    /// An I/O error: the checkpoints and the handle stop.
    Failed(String),
}

impl Checkpointer {
    /// One `PASSIVE` pass.
    fn pass(&self, c: &Connection, restarts: u64) -> Pass {
        match c.wal_checkpoint_v2(None::<&std::ffi::CStr>, rusqlite::wal::CheckpointMode::PASSIVE) {
            Ok((log, copied)) => {
                let (log, copied) = (i64::from(log), i64::from(copied.max(0)));
                if let Ok(mut b) = self.backfilled.lock() {
                    *b = (restarts, copied);
                }
                self.passes.fetch_add(1, Ordering::Relaxed);
                self.failing.store(false, Ordering::SeqCst);
                Pass::Ran(log, copied)
            }
            Err(rusqlite::Error::SqliteFailure(e, _)) if e.code == rusqlite::ErrorCode::DatabaseBusy => Pass::Skipped,
            Err(rusqlite::Error::SqliteFailure(e, msg)) if e.code == rusqlite::ErrorCode::SystemIoFailure => {
                Pass::Failed(format!("a WAL checkpoint failed: {e} {}", msg.unwrap_or_default()))
            }
            Err(e) => {
                if !self.failing.swap(true, Ordering::SeqCst) {
                    tracing::warn!(error = %e, "WAL checkpoint failed; retried at every tick");
                }
                Pass::Skipped
            }
        }
    }

    /// After an I/O error: no more checkpoints, and the handle refuses every further call
    /// and acknowledgement (the process restarts; SQLite recovers the WAL, never started over).
    fn stop(&self, m: &mut Conn, why: String) {
        self.stopped.store(true, Ordering::SeqCst);
        if m.broken.is_none() {
            m.break_handle(why);
        }
    }

    /// One look: runs a cycle once [`Checkpointer::every`] pages were written to the WAL since
    /// the last checkpoint, or goes on with one that did not finish.
    fn tick(&self, main: &Mutex<Conn>) {
        if self.stopped.load(Ordering::SeqCst) {
            return;
        }
        let Ok(guard) = self.conn.lock() else { return };
        let Some(c) = guard.as_ref() else { return };
        let (frames, restarts) = (self.wal.frames.load(Ordering::SeqCst), self.wal.restarts.load(Ordering::SeqCst));
        let (seen, copied) = self.backfilled.lock().map(|b| *b).unwrap_or_default();
        // What the last pass copied counts only in the same WAL: once it started over, every
        // frame in it is new.
        let done = if seen == restarts { copied } else { 0 };
        if !self.cycle.load(Ordering::SeqCst) && frames - done < self.every.load(Ordering::SeqCst) {
            return;
        }
        self.cycle.store(true, Ordering::SeqCst);
        // First pass, the workers going on; then the files fsynced, still without the lock.
        let first = match self.pass(c, restarts) {
            Pass::Ran(log, copied) => copied >= log,
            Pass::Skipped => return,
            Pass::Failed(why) => {
                if let Ok(mut m) = main.lock() {
                    self.stop(&mut m, why);
                }
                return;
            }
        };
        if !first {
            // A reader still needs frames the file would overwrite: the next tick retries.
            return;
        }
        let synced = self.files.iter().try_for_each(|f| match std::fs::File::open(f).and_then(|f| f.sync_data()) {
            // A WAL that does not exist holds nothing.
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                Err(format!("fsync {} before a checkpoint's second pass: {e}", f.display()))
            }
            _ => Ok(()),
        });
        // Second pass, the workers paused between two calls: what they wrote meanwhile.
        let Ok(mut m) = main.lock() else { return };
        if let Err(why) = synced {
            return self.stop(&mut m, why);
        }
        if m.broken.is_some() || m.commit().is_err() {
            // The handle has stopped (and said why): the process restarts, nothing to copy.
            self.cycle.store(false, Ordering::SeqCst);
            return;
        }
        match self.pass(c, restarts) {
            Pass::Ran(log, copied) if copied >= log => self.cycle.store(false, Ordering::SeqCst),
            Pass::Failed(why) => self.stop(&mut m, why),
            _ => {}
        }
    }
}

/// The checkpoint thread ([`Checkpointer`]): a look every [`FLUSH_TICK`]; ends once the last
/// handle is gone. Its own thread, so that a pass copying ~40 MB never delays the flusher's
/// commit of an idle batch (whose window bounds how long another process waits for the lock).
fn checkpoints(k: std::sync::Weak<Checkpointer>, conn: std::sync::Weak<Mutex<Conn>>, handles: std::sync::Weak<Shared>) {
    loop {
        std::thread::sleep(FLUSH_TICK);
        if handles.strong_count() == 0 {
            return;
        }
        let (Some(k), Some(conn)) = (k.upgrade(), conn.upgrade()) else { return };
        k.tick(&conn);
    }
}

/// Commits a batch left open by an idle process; ends once the last handle is gone.
fn flusher(conn: std::sync::Weak<Mutex<Conn>>, handles: std::sync::Weak<Shared>) {
    loop {
        std::thread::sleep(FLUSH_TICK);
        if handles.strong_count() == 0 {
            return;
        }
        let Some(conn) = conn.upgrade() else { return };
        let Ok(mut c) = conn.lock() else { return };
        if c.open.as_ref().is_some_and(|b| b.since.elapsed() >= c.window)
            && let Err(e) = c.commit()
        {
            tracing::error!(error = %e, "background commit failed");
        }
    }
}

impl Db {
    /// Opens (creating if needed) and migrates the database at `path`.
    pub fn open(path: &Path) -> Result<Self, O2cError> {
        Self::open_with(path, Durability::Full)
    }

    /// Opens with an explicit durability level.
    pub fn open_with(path: &Path, durability: Durability) -> Result<Self, O2cError> {
        let flags = OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_CREATE | OpenFlags::SQLITE_OPEN_NO_MUTEX;
        let mut conn = if durability == Durability::Memory {
            Connection::open_in_memory_with_flags(flags)
        } else {
            Connection::open_with_flags(path, flags)
        }
        .map_err(sqlite_err)?;
        conn.busy_timeout(Duration::from_secs(10)).map_err(sqlite_err)?;
        // Every statement of the hot path is prepared once per connection (`prepare_cached`).
        conn.set_prepared_statement_cache_capacity(128);
        // A savepoint inside the open transaction keeps the pages it changes in a
        // sub-journal: in memory, not in a temporary file written on every call.
        conn.pragma_update(None, "temp_store", "MEMORY").map_err(sqlite_err)?;
        // One plan per statement: without it, a statement comparing a column with a bound
        // integer is re-planned whenever the value bound changes between 0, 1 and others,
        // which defeats the statement cache (7 % of the runtime's CPU in a profile).
        conn.set_db_config(rusqlite::config::DbConfig::SQLITE_DBCONFIG_ENABLE_QPSG, true).map_err(sqlite_err)?;
        let journal = if durability == Durability::Memory { "MEMORY" } else { "WAL" };
        conn.pragma_update(None, "journal_mode", journal).map_err(sqlite_err)?;
        conn.pragma_update(None, "synchronous", durability.pragma()).map_err(sqlite_err)?;
        // No commit checkpoints: the background thread does, every CHECKPOINT_PAGES
        // (`Checkpointer`), told the WAL's length by this hook. (The pragma replaces any WAL
        // hook, so it comes first.)
        conn.pragma_update(None, "wal_autocheckpoint", 0).map_err(sqlite_err)?;
        let wal = Arc::new(WalLength::default());
        let seen = wal.clone();
        conn.wal_hook(Some(move |_: &mut rusqlite::hooks::Wal, pages: std::ffi::c_int| {
            let pages = i64::from(pages);
            if pages < seen.frames.swap(pages, Ordering::SeqCst) {
                seen.restarts.fetch_add(1, Ordering::SeqCst);
            }
            Ok(())
        }))
        .map_err(sqlite_err)?;
        // A 64 MiB page cache (SQLite's default is 2 MiB): the queues' and stores' hot pages
        // stay in memory as the file grows, so a call's cost does not grow with the backlog.
        conn.pragma_update(None, "cache_size", -65_536).map_err(sqlite_err)?;
        conn.pragma_update(None, "foreign_keys", "ON").map_err(sqlite_err)?;
        let version: i64 = conn.pragma_query_value(None, "user_version", |r| r.get(0)).map_err(sqlite_err)?;
        for (i, sql) in MIGRATIONS.iter().enumerate().skip(usize::try_from(version).unwrap_or(usize::MAX)) {
            conn.execute_batch(&format!("BEGIN IMMEDIATE; {sql}; PRAGMA user_version = {}; COMMIT;", i + 1)).map_err(sqlite_err)?;
        }
        // The file SQLite opened (symlinks resolved), and its WAL beside it.
        let main_file = conn.path().filter(|p| !p.is_empty()).map(PathBuf::from).unwrap_or_else(|| path.to_owned());
        let wal_file = {
            let mut wal = main_file.clone().into_os_string();
            wal.push("-wal");
            PathBuf::from(wal)
        };
        let group = if durability == Durability::Group {
            // The WAL only exists in WAL mode: checked, so group commit never fsyncs the wrong
            // file.
            let mode: String = conn.pragma_query_value(None, "journal_mode", |r| r.get(0)).map_err(sqlite_err)?;
            if !mode.eq_ignore_ascii_case("wal") {
                return Err(O2cError::dependency("sqlite", format!("{} is in journal mode {mode}, not WAL", path.display())));
            }
            Some(Arc::new(GroupCommit {
                wal: wal_file.clone(),
                finished: AtomicU64::new(0),
                synced: Mutex::new(0),
                fsyncs: AtomicU64::new(0),
                failed: AtomicBool::new(false),
            }))
        } else {
            None
        };
        let checkpointer = if durability == Durability::Memory {
            None
        } else {
            let c = Connection::open_with_flags(path, flags).map_err(sqlite_err)?;
            // Its passes fsync the WAL before copying and the file after, as the main
            // connection's automatic checkpoints did (they follow the connection's own
            // `synchronous`).
            c.pragma_update(None, "synchronous", durability.pragma()).map_err(sqlite_err)?;
            c.pragma_update(None, "wal_autocheckpoint", 0).map_err(sqlite_err)?;
            Some(Arc::new(Checkpointer {
                conn: Mutex::new(Some(c)),
                files: [main_file, wal_file],
                wal,
                backfilled: Mutex::new((0, 0)),
                cycle: AtomicBool::new(false),
                every: AtomicI64::new(CHECKPOINT_PAGES),
                passes: AtomicU64::new(0),
                failing: AtomicBool::new(false),
                stopped: AtomicBool::new(false),
            }))
        };
        let batching = group.is_some() || matches!(durability, Durability::Memory | Durability::Batched);
        let conn = Arc::new(Mutex::new(Conn { c: conn, group, batching, window: BATCH_WINDOW, open: None, in_call: false, broken: None }));
        let shared = Arc::new(Shared { conn, checkpointer });
        let thread = |e: std::io::Error| O2cError::dependency("sqlite", format!("cannot start a database thread: {e}"));
        if batching {
            let (handles, conn) = (Arc::downgrade(&shared), Arc::downgrade(&shared.conn));
            std::thread::Builder::new().name("o2c-sqlite-flush".into()).spawn(move || flusher(conn, handles)).map_err(thread)?;
        }
        if let Some(k) = &shared.checkpointer {
            let (k, handles, conn) = (Arc::downgrade(k), Arc::downgrade(&shared), Arc::downgrade(&shared.conn));
            std::thread::Builder::new()
                .name("o2c-sqlite-checkpoint".into())
                .spawn(move || checkpoints(k, conn, handles))
                .map_err(thread)?;
        }
        Ok(Self {
            shared,
            inline: durability != Durability::Full,
            path: path.to_owned(),
            clock: Arc::new(SystemClock),
            ids: Arc::new(RandomIds),
        })
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

    /// Runs `f` with the connection in a transaction. Without an fsync a call takes
    /// microseconds, so it runs on the caller's thread (a hop to the blocking pool cost more
    /// than the call); under `Durability::Full` each commit waits for the disk, on the
    /// blocking pool.
    pub async fn call<T, F>(&self, f: F) -> Result<T, O2cError>
    where
        T: Send + 'static,
        F: FnOnce(&mut Connection) -> Result<T, O2cError> + Send + 'static,
    {
        if self.inline {
            return self.call_blocking(f);
        }
        let db = self.clone();
        tokio::task::spawn_blocking(move || db.call_blocking(f)).await.map_err(|e| O2cError::Bug(format!("blocking task failed: {e}")))?
    }

    fn lock(&self) -> Result<std::sync::MutexGuard<'_, Conn>, O2cError> {
        self.shared.conn.lock().map_err(|_| O2cError::Bug("sqlite connection mutex poisoned".into()))
    }

    /// Runs `f` synchronously (for callers already off the async executor): under group
    /// commit inside the open batch; closures that must be atomic take [`atomic`], or
    /// [`checked`] when every check precedes their first write.
    pub fn call_blocking<T>(&self, f: impl FnOnce(&mut Connection) -> Result<T, O2cError>) -> Result<T, O2cError> {
        let mut guard = self.lock()?;
        let conn = &mut *guard;
        conn.begin()?;
        let out = f(&mut conn.c);
        conn.after_call(out.as_ref().err())?;
        out
    }

    /// Why this handle stopped, once it has (an open batch was lost: every later call is
    /// refused, and the process must restart to go on).
    pub fn broken(&self) -> Option<String> {
        match self.lock() {
            Ok(c) => c.broken.clone(),
            Err(_) => Some("the connection's mutex is poisoned: a call panicked while holding it".into()),
        }
    }

    /// Keeps batches open up to `window` instead of [`BATCH_WINDOW`] (tests that look at a
    /// batch before it commits). An idle batch is committed at the first [`FLUSH_TICK`] past
    /// its window, so a window shorter than the tick still lasts about a tick.
    pub fn set_batch_window(&self, window: Duration) -> Result<(), O2cError> {
        self.lock()?.window = window;
        Ok(())
    }

    /// Commits the open batch: every call so far is visible to other processes and survives
    /// a crash of this one (not yet a power loss: see [`Db::durable`]).
    pub fn commit(&self) -> Result<(), O2cError> {
        self.lock()?.commit()
    }

    /// Makes every call finished so far durable before the caller acknowledges anything:
    /// under [`Durability::Group`] the open batch is committed and one fsync of the WAL,
    /// shared with concurrent callers, covers it; nothing to do under `Full` (each commit was
    /// fsynced) or the others (no promise: a `Batched` or `Memory` batch stays open), beyond
    /// refusing once the handle has stopped.
    pub async fn durable(&self) -> Result<(), O2cError> {
        let (group, target) = {
            let mut conn = self.lock()?;
            conn.usable()?;
            let Some(group) = conn.group.clone() else { return Ok(()) };
            conn.commit()?;
            let target = group.finished.load(Ordering::SeqCst);
            (group, target)
        };
        tokio::task::spawn_blocking(move || group.sync(target)).await.map_err(|e| O2cError::Bug(format!("blocking task failed: {e}")))?
    }

    /// WAL checkpoint passes the checkpoint thread has run so far (benchmarks, tests).
    pub fn checkpoints(&self) -> u64 {
        self.shared.checkpointer.as_ref().map_or(0, |k| k.passes.load(Ordering::Relaxed))
    }

    /// Frames in the WAL after this handle's last commit (tests).
    #[doc(hidden)]
    pub fn wal_frames(&self) -> i64 {
        self.shared.checkpointer.as_ref().map_or(0, |k| k.wal.frames.load(Ordering::SeqCst))
    }

    /// Times this handle's commits found the WAL started over (tests).
    #[doc(hidden)]
    pub fn wal_restarts(&self) -> u64 {
        self.shared.checkpointer.as_ref().map_or(0, |k| k.wal.restarts.load(Ordering::SeqCst))
    }

    /// Frames of the WAL the last checkpoint pass had copied into the file (tests).
    #[doc(hidden)]
    pub fn checkpointed_frames(&self) -> i64 {
        self.shared.checkpointer.as_ref().and_then(|k| k.backfilled.lock().ok().map(|b| b.1)).unwrap_or(0)
    }

    /// Checkpoints after `pages` WAL pages (at least 1) instead of [`CHECKPOINT_PAGES`] (tests;
    /// `i64::MAX`: never).
    #[doc(hidden)]
    pub fn set_checkpoint_pages(&self, pages: i64) {
        if let Some(k) = &self.shared.checkpointer {
            k.every.store(pages.max(1), Ordering::SeqCst);
        }
    }

    /// fsyncs group commit has done so far (benchmarks: commits per fsync).
    pub fn group_fsyncs(&self) -> u64 {
        self.lock().ok().and_then(|c| c.group.as_ref().map(|g| g.fsyncs.load(Ordering::Relaxed))).unwrap_or(0)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use rusqlite::params;

    thread_local! {
        /// Makes [`undo_sql`] fail on this thread, leaving the transaction open.
        pub(super) static FAIL_UNDO: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
    }

    fn open_db(path: &Path, durability: Durability) -> Db {
        let db = Db::open_with(path, durability).unwrap();
        db.set_batch_window(Duration::from_secs(3600)).unwrap();
        db.call_blocking(|c| c.execute("CREATE TABLE t (n INTEGER NOT NULL)", []).map_err(db_err).map(|_| ())).unwrap();
        db.commit().unwrap();
        db
    }

    fn insert(db: &Db, n: i64) -> Result<(), O2cError> {
        db.call_blocking(move |c| c.execute("INSERT INTO t (n) VALUES (?1)", [n]).map_err(db_err).map(|_| ()))
    }

    /// A unit begun by `unit` that inserts `n`, then fails with its undo made to fail.
    fn fail_with_a_failing_undo(db: &Db, n: i64, unit: fn(&Connection) -> Result<Atomic<'_>, O2cError>) -> Result<(), O2cError> {
        FAIL_UNDO.set(true);
        let failed = db.call_blocking(move |c| {
            let tx = unit(c)?;
            tx.execute("INSERT INTO t (n) VALUES (?1)", [n]).map_err(db_err)?;
            Err::<(), _>(O2cError::Bug("failed after a write".into()))
        });
        FAIL_UNDO.set(false);
        failed
    }

    /// The rows another connection sees (after the handle is gone).
    fn rows(path: &Path) -> Vec<i64> {
        let other = Connection::open(path).unwrap();
        other.prepare("SELECT n FROM t ORDER BY n").unwrap().query_map([], |r| r.get(0)).unwrap().map(Result::unwrap).collect()
    }

    #[test]
    fn when_undoing_a_failed_call_fails_should_stop_the_handle_and_never_commit_what_it_wrote() {
        type Unit = fn(&Connection) -> Result<Atomic<'_>, O2cError>;
        // A checked call in a batch (the whole batch is rolled back), an atomic one in a batch
        // (its savepoint), an atomic one in its own transaction (`Full`: no batch).
        let cases: [(&str, Durability, Unit); 3] =
            [("checked", Durability::Group, checked), ("atomic", Durability::Group, atomic), ("own", Durability::Full, atomic)];
        for (name, durability, unit) in cases {
            let dir = tempfile::tempdir().unwrap();
            let path = dir.path().join("r.db");
            let db = open_db(&path, durability);
            insert(&db, 1).unwrap();
            db.commit().unwrap();
            insert(&db, 2).unwrap();
            let failed = fail_with_a_failing_undo(&db, 3, unit);
            assert!(
                matches!(&failed, Err(O2cError::Bug(m)) if m.contains("undoing it failed") && m.contains("failed after a write")),
                "{name}: {failed:?}"
            );
            assert!(db.broken().is_some(), "{name}: the handle stops");
            assert!(insert(&db, 4).is_err(), "{name}: and refuses later calls");
            assert!(db.commit().is_err(), "{name}: and commits nothing");
            // The write lock is released at once, not only when the process ends.
            let other = Connection::open(&path).unwrap();
            other.execute_batch("BEGIN IMMEDIATE; ROLLBACK;").unwrap_or_else(|e| panic!("{name}: the file is still locked: {e}"));
            drop(db);
            let expected: &[i64] = if durability == Durability::Full { &[1, 2] } else { &[1] };
            assert_eq!(rows(&path), expected, "{name}: the half call was never committed, even by the last handle's drop");
        }
    }

    #[test]
    fn when_a_call_panics_after_writing_should_never_commit_its_batch() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("p.db");
        let db = open_db(&path, Durability::Group);
        insert(&db, 1).unwrap();
        db.commit().unwrap();
        let panicked = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            db.call_blocking(|c| -> Result<(), O2cError> {
                c.execute("INSERT INTO t (n) VALUES (2)", []).map_err(db_err)?;
                panic!("a bug after a write");
            })
        }));
        assert!(panicked.is_err());
        assert!(db.broken().is_some(), "a poisoned handle says so");
        drop(db);
        assert_eq!(rows(&path), vec![1], "the batch the call left half done was not committed by the drop");
    }

    #[test]
    fn when_an_undo_fails_on_another_connection_should_leave_this_handle_working() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s.db");
        let db = open_db(&path, Durability::Group);
        // A unit on a connection of its own, outside any handle's call, whose undo fails.
        let raw = Connection::open_in_memory().unwrap();
        raw.execute_batch("CREATE TABLE t (n INTEGER NOT NULL); BEGIN;").unwrap();
        FAIL_UNDO.set(true);
        {
            let tx = checked(&raw).unwrap();
            tx.execute("INSERT INTO t (n) VALUES (1)", []).unwrap();
        }
        FAIL_UNDO.set(false);
        insert(&db, 7).unwrap();
        assert!(db.broken().is_none(), "the other connection's failure is not this handle's");
        db.commit().unwrap();
        drop(db);
        assert_eq!(rows(&path), vec![7]);
    }

    #[test]
    fn when_reservations_are_released_after_a_crash_should_read_only_those_in_progress() {
        let conn = Connection::open_in_memory().unwrap();
        for sql in MIGRATIONS {
            conn.execute_batch(sql).unwrap();
        }
        let plan: Vec<String> = conn
            .prepare(&format!("EXPLAIN QUERY PLAN {}", crate::runtime::release_reservations_sql()))
            .unwrap()
            .query_map(params![0], |r| r.get::<_, String>(3))
            .unwrap()
            .map(Result::unwrap)
            .collect();
        assert!(plan.iter().any(|p| p.contains("idempotency_in_progress")), "{plan:?}");
    }

    #[test]
    fn when_receipts_were_booked_before_their_applications_were_indexed_should_fill_the_index_from_them() {
        let conn = Connection::open_in_memory().unwrap();
        let at = MIGRATIONS.iter().position(|m| m.contains("CREATE TABLE sim_receipt_applications")).unwrap();
        for sql in &MIGRATIONS[..at] {
            conn.execute_batch(sql).unwrap();
        }
        let receipt = |id: &str, reverses: Option<&str>| {
            serde_json::json!({"payment_id": id, "reverses": reverses, "applications": [
                {"invoice_id": "I1", "number": "LE-X-000001", "amount": {"amount": "10.50", "currency": "EUR"}},
                {"invoice_id": "I2", "number": "LE-X-000002", "amount": {"amount": "4.00", "currency": "EUR"}},
            ]})
            .to_string()
        };
        for (id, reverses) in [("P1", None), ("P2", Some("P1"))] {
            conn.execute(
                "INSERT INTO sim_receipts (payment_id, receipt_id, legal_entity_id, body, created_at) VALUES (?1, ?1, 'LE-X', ?2, '')",
                params![id, receipt(id, reverses)],
            )
            .unwrap();
        }
        for sql in &MIGRATIONS[at..] {
            conn.execute_batch(sql).unwrap();
        }
        let mut s =
            conn.prepare("SELECT payment_id, line, number, amount FROM sim_receipt_applications ORDER BY payment_id, line").unwrap();
        let rows: Vec<(String, i64, String, String)> =
            s.query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?))).unwrap().map(Result::unwrap).collect();
        assert_eq!(
            rows,
            [("P1".into(), 0, "LE-X-000001".into(), "10.50".into()), ("P1".into(), 1, "LE-X-000002".into(), "4.00".into())],
            "the receipt's applications, not the reversal's"
        );
    }
}
