//! Group commit's batch transactions: calls share one transaction until a window, a call
//! limit, an acknowledgement or the handle's end commits it — whole — and a handle whose
//! open batch SQLite undid refuses every later call instead of losing them silently.
#![allow(missing_docs, clippy::unwrap_used, clippy::expect_used)]

use std::path::Path;
use std::time::{Duration, Instant};

use o2c_embedded::db::{BATCH_CALLS, Db, Durability, db_err};

fn open(path: &Path, window: Duration) -> Db {
    let db = Db::open_with(path, Durability::Group).unwrap();
    db.set_batch_window(window).unwrap();
    db
}

async fn insert(db: &Db, n: u32) {
    db.call(move |c| {
        c.execute("CREATE TABLE IF NOT EXISTS t (n INTEGER NOT NULL)", []).map_err(db_err)?;
        c.execute("INSERT INTO t (n) VALUES (?1)", [n]).map_err(db_err)?;
        Ok(())
    })
    .await
    .unwrap();
}

/// What another process sees: a second connection on the file.
fn committed_rows(path: &Path) -> i64 {
    let other = rusqlite::Connection::open(path).unwrap();
    other.busy_timeout(Duration::from_secs(10)).unwrap();
    match other.query_row("SELECT count(*) FROM t", [], |r| r.get::<_, i64>(0)) {
        Ok(n) => n,
        // No table yet: nothing committed (the table is created by the first insert's batch).
        Err(e) if e.to_string().contains("no such table") => 0,
        Err(e) => panic!("{e}"),
    }
}

#[tokio::test]
async fn when_calls_share_a_batch_should_stay_unseen_by_other_connections_until_durable_then_appear_whole() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("b.db");
    let db = open(&path, Duration::from_secs(3600));
    for n in 0..5 {
        insert(&db, n).await;
    }
    // This connection reads its own batch; another process does not see it yet.
    let mine: i64 = db.call(|c| c.query_row("SELECT count(*) FROM t", [], |r| r.get(0)).map_err(db_err)).await.unwrap();
    assert_eq!((mine, committed_rows(&path)), (5, 0));
    let before = db.group_fsyncs();
    db.durable().await.unwrap();
    assert_eq!(committed_rows(&path), 5, "the acknowledgement committed the batch, whole");
    assert_eq!(db.group_fsyncs(), before + 1, "and one fsync covered it");
}

#[tokio::test]
async fn when_calls_are_batched_without_fsync_should_keep_the_batch_past_acknowledgements_and_commit_it_when_the_handle_ends() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("b.db");
    let db = Db::open_with(&path, Durability::Batched).unwrap();
    db.set_batch_window(Duration::from_secs(3600)).unwrap();
    for n in 0..5 {
        insert(&db, n).await;
    }
    db.durable().await.unwrap();
    assert_eq!(committed_rows(&path), 0, "an acknowledgement promises nothing: the batch stays open");
    // How the simulation's crashes end a runtime: the handle goes, its batch is committed.
    drop(db);
    assert_eq!(committed_rows(&path), 5, "committed whole when the handle ended");
}

#[tokio::test]
async fn when_a_batch_reaches_the_call_limit_should_commit_without_waiting_for_the_window() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("b.db");
    let db = open(&path, Duration::from_secs(3600));
    for n in 0..BATCH_CALLS + 3 {
        insert(&db, n).await;
    }
    assert_eq!(committed_rows(&path), i64::from(BATCH_CALLS), "the first batch committed at its limit; the next is open");
    drop(db);
    assert_eq!(committed_rows(&path), i64::from(BATCH_CALLS + 3), "the last handle going away commits the open batch");
}

#[tokio::test]
async fn when_a_process_goes_idle_with_a_batch_open_should_commit_it_in_the_background() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("b.db");
    let db = open(&path, Duration::from_millis(10));
    insert(&db, 1).await;
    // No further call, no acknowledgement: the background thread commits the batch (and
    // releases the write lock other processes wait for). Bounded wait, not a timing claim.
    let deadline = Instant::now() + Duration::from_secs(20);
    while committed_rows(&path) != 1 {
        assert!(Instant::now() < deadline, "an idle batch was never committed");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    // Another process can write meanwhile.
    let other = rusqlite::Connection::open(&path).unwrap();
    other.busy_timeout(Duration::from_secs(10)).unwrap();
    other.execute("INSERT INTO t (n) VALUES (2)", []).unwrap();
    assert_eq!(committed_rows(&path), 2);
    drop(db);
}

/// Whether another process can take the write lock now (no waiting).
fn lock_free(path: &Path) -> bool {
    let other = rusqlite::Connection::open(path).unwrap();
    other.busy_timeout(Duration::ZERO).unwrap();
    match other.execute_batch("BEGIN IMMEDIATE; ROLLBACK;") {
        Ok(()) => true,
        Err(e) if e.to_string().contains("locked") => false,
        Err(e) => panic!("{e}"),
    }
}

#[tokio::test]
async fn when_a_call_changes_nothing_should_not_keep_the_write_lock_for_the_window() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("b.db");
    let db = open(&path, Duration::from_secs(3600));
    insert(&db, 1).await;
    db.commit().unwrap();
    assert!(lock_free(&path));
    // An idle worker's poll: a read in a batch of its own, committed by the call itself.
    for _ in 0..3 {
        let n: i64 = db.call(|c| c.query_row("SELECT count(*) FROM t", [], |r| r.get(0)).map_err(db_err)).await.unwrap();
        assert_eq!(n, 1);
        assert!(lock_free(&path), "a read held the write lock");
    }
    // A write keeps its batch (and the lock) open for the window; so does a read after it.
    insert(&db, 2).await;
    assert!(!lock_free(&path), "the write's batch is open");
    let n: i64 = db.call(|c| c.query_row("SELECT count(*) FROM t", [], |r| r.get(0)).map_err(db_err)).await.unwrap();
    assert_eq!((n, committed_rows(&path)), (2, 1), "the read joined the open batch");
    drop(db);
    assert_eq!(committed_rows(&path), 2);
}

#[tokio::test]
async fn when_sqlite_undoes_the_open_batch_should_refuse_this_and_every_later_call() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("b.db");
    let db = open(&path, Duration::from_secs(3600));
    insert(&db, 1).await;
    // What an I/O error or a full disk does: SQLite rolls the transaction back on its own, and
    // the call already answered (the insert above) is undone.
    let undone = db.call(|c| c.execute_batch("ROLLBACK").map_err(db_err)).await;
    assert!(matches!(undone, Err(o2c_app::O2cError::Bug(_))), "{undone:?}");
    let later = db.call(|c| c.query_row("SELECT 1", [], |r| r.get::<_, i64>(0)).map_err(db_err)).await;
    assert!(matches!(&later, Err(o2c_app::O2cError::Bug(m)) if m.contains("unusable")), "{later:?}");
    assert!(db.durable().await.is_err(), "nothing is acknowledged after the loss");
    assert_eq!(committed_rows(&path), 0);
}

#[tokio::test]
async fn when_each_call_commits_under_full_or_normal_should_show_every_call_at_once() {
    for durability in [Durability::Full, Durability::Normal] {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("b.db");
        let db = Db::open_with(&path, durability).unwrap();
        for n in 0..3 {
            insert(&db, n).await;
            assert_eq!(committed_rows(&path), i64::from(n) + 1, "{durability:?}");
        }
    }
}

#[tokio::test]
async fn when_another_process_holds_the_write_lock_should_still_read_without_waiting_outside_group_commit() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("b.db");
    let db = Db::open_with(&path, Durability::Full).unwrap();
    insert(&db, 1).await;
    // `o2c serve` mid-batch: the write lock is held by another connection.
    let writer = rusqlite::Connection::open(&path).unwrap();
    writer.execute_batch("BEGIN IMMEDIATE; INSERT INTO t (n) VALUES (2);").unwrap();
    let started = Instant::now();
    let n: i64 = db.call(|c| c.query_row("SELECT count(*) FROM t", [], |r| r.get(0)).map_err(db_err)).await.unwrap();
    assert_eq!(n, 1, "the committed state");
    // The busy timeout is 10 s: a read that took the write lock would still be waiting.
    assert!(started.elapsed() < Duration::from_secs(5), "a read waited for the write lock: {:?}", started.elapsed());
    writer.execute_batch("COMMIT").unwrap();
}

#[tokio::test]
async fn when_an_atomic_unit_fails_should_undo_it_whole_inside_a_batch_and_outside_one() {
    for durability in [Durability::Group, Durability::Full] {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("b.db");
        let db = Db::open_with(&path, durability).unwrap();
        insert(&db, 1).await;
        let failed = db
            .call(|c| {
                let tx = o2c_embedded::db::atomic(c)?;
                tx.execute("INSERT INTO t (n) VALUES (2)", []).map_err(db_err)?;
                tx.execute("INSERT INTO t (n) VALUES (3)", []).map_err(db_err)?;
                Err::<(), _>(o2c_app::O2cError::Conflict("refused after two inserts".into()))
            })
            .await;
        assert!(failed.is_err());
        db.call(|c| {
            let tx = o2c_embedded::db::atomic(c)?;
            tx.execute("INSERT INTO t (n) VALUES (4)", []).map_err(db_err)?;
            tx.commit()
        })
        .await
        .unwrap();
        db.durable().await.unwrap();
        db.commit().unwrap();
        let rows: Vec<i64> = {
            let other = rusqlite::Connection::open(&path).unwrap();
            let mut s = other.prepare("SELECT n FROM t ORDER BY n").unwrap();
            s.query_map([], |r| r.get(0)).unwrap().map(Result::unwrap).collect()
        };
        assert_eq!(rows, vec![1, 4], "{durability:?}: the failed unit left nothing, the next one everything");
    }
}

/// The rows of `t` another process sees once the handle's batches are committed.
fn rows(path: &Path) -> Vec<i64> {
    let other = rusqlite::Connection::open(path).unwrap();
    let mut s = other.prepare("SELECT n FROM t ORDER BY n").unwrap();
    s.query_map([], |r| r.get(0)).unwrap().map(Result::unwrap).collect()
}

#[tokio::test]
async fn when_a_checked_unit_refuses_before_writing_should_keep_the_batch_and_the_handle() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("b.db");
    let db = open(&path, Duration::from_secs(3600));
    insert(&db, 1).await;
    let refused = db
        .call(|c| {
            let tx = o2c_embedded::db::checked(c)?;
            let n: i64 = tx.query_row("SELECT count(*) FROM t", [], |r| r.get(0)).map_err(db_err)?;
            Err::<(), _>(o2c_app::O2cError::Conflict(format!("refused after reading {n} rows")))
        })
        .await;
    assert!(matches!(refused, Err(o2c_app::O2cError::Conflict(_))), "{refused:?}");
    db.call(|c| {
        let tx = o2c_embedded::db::checked(c)?;
        tx.execute("INSERT INTO t (n) VALUES (2)", []).map_err(db_err)?;
        tx.commit()
    })
    .await
    .unwrap();
    db.durable().await.unwrap();
    assert_eq!(rows(&path), vec![1, 2], "the batch kept the call before the refusal and the one after it");
}

/// A checked unit that inserts `n`, then fails (a bug past its first write).
async fn fail_after_a_write(db: &Db, n: u32) -> Result<(), o2c_app::O2cError> {
    db.call(move |c| {
        let tx = o2c_embedded::db::checked(c)?;
        tx.execute("INSERT INTO t (n) VALUES (?1)", [n]).map_err(db_err)?;
        Err(o2c_app::O2cError::Bug("failed after a write".into()))
    })
    .await
}

#[tokio::test]
async fn when_a_checked_unit_fails_after_writing_should_undo_the_whole_batch_and_stop_the_handle() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("b.db");
    let db = open(&path, Duration::from_secs(3600));
    insert(&db, 1).await;
    db.durable().await.unwrap();
    insert(&db, 2).await;
    // No savepoint: a unit that fails after its first write cannot be undone alone. The
    // batch goes with it (the insert of 2, already answered, too) — what a crash does.
    let failed = fail_after_a_write(&db, 3).await;
    assert!(
        matches!(&failed, Err(o2c_app::O2cError::Bug(m)) if m.contains("rolled back") && m.contains("failed after a write")),
        "the loss, and the call's own error: {failed:?}"
    );
    assert!(db.broken().is_some_and(|why| why.contains("failed after a write")), "the handle says why it stopped");
    let later = db.call(|c| c.query_row("SELECT 1", [], |r| r.get::<_, i64>(0)).map_err(db_err)).await;
    assert!(matches!(&later, Err(o2c_app::O2cError::Bug(m)) if m.contains("unusable")), "{later:?}");
    assert!(db.durable().await.is_err(), "nothing is acknowledged after the loss");
    drop(db);
    assert_eq!(rows(&path), vec![1], "only what was durable before the batch");
}

#[tokio::test]
async fn when_a_checked_unit_fails_outside_a_batch_should_undo_it_alone() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("b.db");
    let db = Db::open_with(&path, Durability::Full).unwrap();
    insert(&db, 1).await;
    let failed = fail_after_a_write(&db, 2).await;
    assert!(matches!(&failed, Err(o2c_app::O2cError::Bug(m)) if m == "failed after a write"), "{failed:?}");
    insert(&db, 3).await;
    assert_eq!(rows(&path), vec![1, 3], "its own transaction, rolled back; the handle goes on");
}
