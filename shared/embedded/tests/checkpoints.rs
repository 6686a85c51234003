//! WAL checkpoints run on a background thread, never inside a commit: the commit that took
//! the WAL past its threshold (an acknowledgement's among them) used to copy every page into
//! the file and fsync it before returning. The thread checkpoints on a connection of its own;
//! the WAL is started over after a complete checkpoint, and the last handle leaves no WAL.
#![allow(missing_docs, clippy::unwrap_used, clippy::expect_used)]

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use o2c_embedded::db::{CHECKPOINT_PAGES, Db, Durability, FLUSH_TICK, db_err};

/// 64 KiB rows: 16 overflow pages each, so a few hundred rows fill thousands of WAL pages.
const ROW_BYTES: i64 = 65_536;

/// Adds `rows` rows in one call.
async fn insert(db: &Db, rows: u32) {
    db.call(move |c| {
        c.execute("CREATE TABLE IF NOT EXISTS blobs (b BLOB NOT NULL)", []).map_err(db_err)?;
        for _ in 0..rows {
            c.execute("INSERT INTO blobs (b) VALUES (zeroblob(?1))", [ROW_BYTES]).map_err(db_err)?;
        }
        Ok(())
    })
    .await
    .unwrap();
}

/// Adds `rows` rows, committed (and, under group commit, fsynced) before the caller looks.
async fn write_rows(db: &Db, rows: u32) {
    insert(db, rows).await;
    db.durable().await.unwrap();
    db.commit().unwrap();
}

/// The rows another process sees.
fn committed_rows(path: &Path) -> i64 {
    rusqlite::Connection::open(path).unwrap().query_row("SELECT count(*) FROM blobs", [], |r| r.get(0)).unwrap()
}

fn size(path: &Path) -> u64 {
    std::fs::metadata(path).map(|m| m.len()).unwrap_or(0)
}

fn wal(path: &Path) -> PathBuf {
    let mut p = path.as_os_str().to_owned();
    p.push("-wal");
    PathBuf::from(p)
}

async fn eventually(what: &str, mut done: impl FnMut() -> bool) {
    let until = Instant::now() + Duration::from_secs(10);
    while !done() {
        assert!(Instant::now() < until, "timed out waiting for: {what}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[tokio::test]
async fn when_commits_take_the_wal_past_the_threshold_should_not_checkpoint_inside_them() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("c.db");
    let db = Db::open_with(&path, Durability::Group).unwrap();
    // The background thread never checkpoints here: only a commit could.
    db.set_checkpoint_pages(i64::MAX);
    let file_before = size(&path);
    // 800 rows of 64 KiB in 16 commits: ~12,800 WAL pages, past the threshold at which the
    // automatic checkpoint (at CHECKPOINT_PAGES before this change) ran inside a commit.
    for _ in 0..16 {
        write_rows(&db, 50).await;
    }
    assert!(db.wal_frames() > CHECKPOINT_PAGES, "the WAL holds {} frames", db.wal_frames());
    assert_eq!(db.checkpoints(), 0);
    assert!(size(&path) < file_before + 1_000_000, "no commit copied the WAL into the file: {} bytes", size(&path));
    assert_eq!(committed_rows(&path), 800, "every row is committed, read from the WAL");
}

#[tokio::test]
async fn when_the_wal_passes_the_threshold_should_be_checkpointed_by_the_background_thread_and_started_over() {
    for durability in [Durability::Group, Durability::Full] {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c.db");
        let db = Db::open_with(&path, durability).unwrap();
        db.set_checkpoint_pages(500);
        // ~1,600 pages: past the threshold.
        write_rows(&db, 100).await;
        let peak = db.wal_frames();
        assert!(peak > 500, "{durability:?}: {peak} frames");
        // Under `Full` each insert commits on its own, so a pass may have run halfway through
        // the rows: wait for the one that copied them all.
        eventually("a background checkpoint of every row", || db.checkpointed_frames() >= peak).await;
        assert!(size(&path) > 100 * ROW_BYTES as u64, "{durability:?}: the rows were copied into the file: {} bytes", size(&path));
        // The checkpoint was complete, so the next write transaction starts the WAL over:
        // it does not grow without bound while the writer goes on.
        write_rows(&db, 1).await;
        assert!(db.wal_frames() < peak, "{durability:?}: the WAL restarted ({} frames after {peak})", db.wal_frames());
        assert_eq!(committed_rows(&path), 101, "{durability:?}");
    }
}

#[tokio::test]
async fn when_writes_never_pause_should_still_start_the_wal_over_after_each_checkpoint() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("c.db");
    // Batches committed by the flusher every few milliseconds and no acknowledgement: a
    // transaction is open nearly all the time, and the next begins microseconds after a
    // commit, so SQLite never finds the WAL wholly copied when one begins unless the
    // checkpointer pauses the writer for its second pass.
    let db = Db::open_with(&path, Durability::Batched).unwrap();
    db.set_batch_window(Duration::from_millis(5)).unwrap();
    db.set_checkpoint_pages(500);
    let until = Instant::now() + Duration::from_secs(3);
    let mut rows = 0;
    while db.wal_restarts() < 3 && Instant::now() < until {
        insert(&db, 1).await;
        rows += 1;
    }
    assert!(
        db.wal_restarts() >= 3,
        "the WAL started over {} times while {rows} rows (~{} pages) were written",
        db.wal_restarts(),
        rows * 17
    );
    db.commit().unwrap();
    assert_eq!(committed_rows(&path), rows);
}

#[tokio::test]
async fn when_a_reader_holds_back_a_checkpoint_should_finish_it_once_the_reader_ends_without_waiting_for_more_pages() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("c.db");
    let db = Db::open_with(&path, Durability::Group).unwrap();
    db.set_checkpoint_pages(i64::MAX);
    write_rows(&db, 100).await;
    // Another process reads from a snapshot taken now: the frames written after it cannot be
    // copied into the file while it lasts.
    let reader = rusqlite::Connection::open(&path).unwrap();
    reader.execute_batch("BEGIN").unwrap();
    let _: i64 = reader.query_row("SELECT count(*) FROM blobs", [], |r| r.get(0)).unwrap();
    // ~160 pages after the snapshot: fewer than the threshold.
    write_rows(&db, 10).await;
    let frames = db.wal_frames();
    db.set_checkpoint_pages(500);
    eventually("a checkpoint up to the reader's snapshot", || db.checkpoints() >= 1).await;
    assert!(db.checkpointed_frames() < frames, "{} of {frames} frames copied while the reader lasts", db.checkpointed_frames());
    reader.execute_batch("COMMIT").unwrap();
    // No page is written from here on, and what is left is below the threshold: only the
    // retry of an incomplete checkpoint copies it.
    eventually("the rest copied once the reader ended", || db.checkpointed_frames() == frames).await;
    // The cycle ends with a second pass after the one that copied the rest: wait until the
    // passes stop.
    let mut runs = db.checkpoints();
    loop {
        tokio::time::sleep(FLUSH_TICK * 5).await;
        let now = db.checkpoints();
        if now == runs {
            break;
        }
        runs = now;
    }
    write_rows(&db, 1).await;
    assert!(db.wal_frames() < frames, "the WAL started over ({} frames after {frames})", db.wal_frames());
    tokio::time::sleep(FLUSH_TICK * 10).await;
    assert_eq!(db.checkpoints(), runs, "a complete checkpoint is not repeated at every tick");
}

#[tokio::test]
async fn when_the_last_handle_is_dropped_should_leave_the_file_whole_and_no_wal_beside_it() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("c.db");
    let db = Db::open_with(&path, Durability::Group).unwrap();
    db.set_checkpoint_pages(200);
    write_rows(&db, 40).await;
    eventually("a background checkpoint", || db.checkpoints() >= 1).await;
    // More than the checkpoint copied: the close must checkpoint the rest.
    write_rows(&db, 5).await;
    let second = db.clone();
    drop(db);
    drop(second);
    // Both connections closed on this thread before the drop returned, whatever the
    // background threads held for their ticks: the last close checkpointed the rest and
    // removed the WAL (checked at once, with no wait for those threads).
    assert!(!wal(&path).exists(), "no WAL is left beside the file");
    assert_eq!(committed_rows(&path), 45);
}
