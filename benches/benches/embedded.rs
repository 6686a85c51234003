//! Throughput of the whole embedded runtime (template routing, SQLite store, simulators, the
//! steps from closed-won to active with the CRM written back), per durability mode, in one
//! run. The N closed-won events are published first (a backlog of N engagements), then the
//! runtime drains it; the cost per engagement must not grow with N.
//!
//! Each engagement is 9 queue records (6 step executions — intake, provision, billing setup,
//! 3 write-backs — and 3 pipe moves into the per-engagement FIFO write-back queue) and 4
//! business events on the bus (closed-won, contract created, project provisioned, project
//! activated).
//!
//! `cargo bench -p o2c-benches --bench embedded [-- N ... [--only group|full|normal|batched|memory] [--one-core]]`
//! (default N = 1000), or
//! `scripts/benchmarks.sh` for every benchmark of BENCHMARKS.md. With `--acks [--only
//! group|batched|memory]`, the acknowledgement latency of 8 concurrent publishers while the
//! workers drain instead.
#![allow(missing_docs, clippy::unwrap_used, clippy::expect_used)]

/// The allocator of the `o2c` binary, which hosts the embedded runtime.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

use std::time::{Duration, Instant};

use o2c_app::bus::PutEventsEntry;
use o2c_app::ports::EngagementStore;
use o2c_embedded::db::Durability;
use o2c_embedded::{Runtime, RuntimeOptions};

struct Measured {
    wall: Duration,
    cpu: Duration,
    records: u64,
    events: u64,
    fsyncs: u64,
}

/// User + system CPU of this process so far (`/proc/self/stat`, clock ticks of 10 ms).
fn cpu_time() -> Duration {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    // Fields after the command name (which may contain spaces) start at field 3.
    let rest = stat.rsplit_once(") ").map(|(_, r)| r).unwrap_or_default();
    let fields: Vec<u64> = rest.split_whitespace().map(|f| f.parse().unwrap_or(0)).collect();
    let ticks = fields.get(11).copied().unwrap_or(0) + fields.get(12).copied().unwrap_or(0);
    Duration::from_millis(ticks * 10)
}

/// `--one-core`: every task on one thread (the goal is per core); otherwise Tokio's
/// default, one worker thread per core.
fn tokio_runtime(one_core: bool) -> tokio::runtime::Runtime {
    if one_core { tokio::runtime::Builder::new_current_thread() } else { tokio::runtime::Builder::new_multi_thread() }
        .enable_all()
        .build()
        .unwrap()
}

/// The embedded runtime over a new file in `dir`.
async fn open(dir: &tempfile::TempDir, durability: Durability) -> Runtime {
    let opts = RuntimeOptions { durability, max_workers_per_function: 4, ..RuntimeOptions::default() };
    Runtime::builder(dir.path().join("bench.db"), o2c_embedded::reference::northwind().unwrap()).options(opts).open().await.unwrap()
}

/// The `i`-th engagement's closed-won event, as a CRM publishes it.
fn closed_won(i: usize) -> PutEventsEntry {
    PutEventsEntry {
        source: Some("o2c.crm".into()),
        detail_type: Some("OpportunityClosedWon".into()),
        detail: Some(o2c_benches::closed_won_detail(i).to_string()),
        ..Default::default()
    }
}

fn run(n: usize, durability: Durability, one_core: bool) -> Measured {
    tokio_runtime(one_core).block_on(async {
        let dir = tempfile::tempdir().unwrap();
        let runtime = open(&dir, durability).await;
        let entries: Vec<PutEventsEntry> = (0..n).map(closed_won).collect();
        let (start, cpu) = (Instant::now(), cpu_time());
        // PutEvents takes at most 10 entries per call.
        for chunk in entries.chunks(10) {
            runtime.put_events(chunk.to_vec()).await.unwrap();
        }
        let report = runtime.run_until_idle(Duration::from_secs(3600)).await.unwrap();
        let (wall, cpu) = (start.elapsed(), cpu_time().saturating_sub(cpu));
        let filter = o2c_app::ports::EngagementFilter { status: Some("active".into()), limit: n + 1, ..Default::default() };
        assert_eq!(runtime.store().list(&filter).await.unwrap().len(), n, "every engagement activated");
        assert_eq!(report.dead_letters, 0, "nothing dead-lettered");
        let events: i64 = runtime
            .db()
            .call(|c| c.query_row("SELECT COUNT(*) FROM bus_events", [], |r| r.get(0)).map_err(o2c_embedded::db::db_err))
            .await
            .unwrap();
        Measured { wall, cpu, records: report.succeeded, events: events as u64, fsyncs: runtime.db().group_fsyncs() }
    })
}

/// Publishers acknowledged while the workers drain: what a client of `o2c serve` waits for.
struct Acks {
    wall: Duration,
    cpu: Duration,
    /// Each `PutEvents` call's latency, sorted.
    latencies: Vec<Duration>,
    checkpoints: u64,
}

/// `--acks`: `PUBLISHERS` concurrent publishers send N closed-won events in `PutEvents` calls
/// of 10 while the workers run (as 8 HTTP clients of `o2c serve` do); each call's latency is
/// its acknowledgement's (under group commit: the batch committed and fsynced).
fn acks(n: usize, durability: Durability, one_core: bool) -> Acks {
    const PUBLISHERS: usize = 8;
    tokio_runtime(one_core).block_on(async {
        let dir = tempfile::tempdir().unwrap();
        let runtime = open(&dir, durability).await;
        let (stop, rx) = tokio::sync::watch::channel(false);
        let (start, cpu) = (Instant::now(), cpu_time());
        let mut workers = runtime.start(rx);
        let mut publishers = tokio::task::JoinSet::new();
        for p in 0..PUBLISHERS {
            let runtime = runtime.clone();
            publishers.spawn(async move {
                let mine: Vec<PutEventsEntry> = (p..n).step_by(PUBLISHERS).map(closed_won).collect();
                let mut latencies = Vec::new();
                for chunk in mine.chunks(10) {
                    let at = Instant::now();
                    let resp = runtime.put_events(chunk.to_vec()).await.unwrap();
                    latencies.push(at.elapsed());
                    assert_eq!(resp.failed_entry_count, 0);
                }
                latencies
            });
        }
        let mut latencies = Vec::new();
        while let Some(l) = publishers.join_next().await {
            latencies.extend(l.unwrap());
        }
        while runtime.has_pending().await.unwrap() {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        let (wall, cpu) = (start.elapsed(), cpu_time().saturating_sub(cpu));
        let _ = stop.send(true);
        while workers.join_next().await.is_some() {}
        let filter = o2c_app::ports::EngagementFilter { status: Some("active".into()), limit: n + 1, ..Default::default() };
        assert_eq!(runtime.store().list(&filter).await.unwrap().len(), n, "every engagement activated");
        latencies.sort();
        Acks { wall, cpu, latencies, checkpoints: runtime.db().checkpoints() }
    })
}

/// `--acks [--only group|batched|memory]` (default group).
fn print_acks(sizes: &[usize], one_core: bool) {
    let (label, durability) = match std::env::args().skip_while(|a| a != "--only").nth(1).as_deref() {
        None | Some("group") => ("group commit", Durability::Group),
        Some("batched") => ("group's batches, no fsync", Durability::Batched),
        Some("memory") => ("in memory, no file", Durability::Memory),
        Some(other) => panic!("--acks measures group, batched or memory, not {other}"),
    };
    println!("acknowledgements: 8 publishers, PutEvents of 10 closed-won each, while the workers drain ({label})");
    println!(
        "{:>7} {:>8} {:>10} {:>12} {:>9} {:>9} {:>9} {:>9} {:>12}",
        "N", "wall s", "eng/s", "CPU ms/eng", "ack p50", "ack p95", "ack p99", "ack max", "ckpt passes"
    );
    for &n in sizes {
        let a = acks(n, durability, one_core);
        let pct = |p: f64| {
            let i = ((a.latencies.len() as f64 * p).ceil() as usize).clamp(1, a.latencies.len()) - 1;
            format!("{:.1} ms", a.latencies[i].as_secs_f64() * 1000.0)
        };
        println!(
            "{n:>7} {:>8.2} {:>10.1} {:>12.2} {:>9} {:>9} {:>9} {:>9} {:>12}",
            a.wall.as_secs_f64(),
            n as f64 / a.wall.as_secs_f64(),
            a.cpu.as_secs_f64() * 1000.0 / n as f64,
            pct(0.50),
            pct(0.95),
            pct(0.99),
            pct(1.0),
            a.checkpoints
        );
    }
}

fn main() {
    let sizes: Vec<usize> = std::env::args().skip(1).filter_map(|a| a.parse().ok()).collect();
    let sizes = if sizes.is_empty() { vec![1000] } else { sizes };
    if std::env::args().any(|a| a == "--acks") {
        print_acks(&sizes, std::env::args().any(|a| a == "--one-core"));
        return;
    }
    println!("embedded runtime: N closed-won published first, then drained to active (9 queue records and 4 business events each)");
    println!(
        "{:>7}  {:<34} {:>8} {:>10} {:>11} {:>10} {:>12} {:>12}",
        "N", "durability", "wall s", "eng/s", "events/s", "records/s", "CPU ms/eng", "group fsyncs"
    );
    for &n in &sizes {
        let mut group_rate = None;
        // `--only group|full|normal|batched|memory` runs one mode (profiling).
        let only = std::env::args().skip_while(|a| a != "--only").nth(1);
        for (name, label, d) in [
            ("group", "group commit (default)", Durability::Group),
            ("full", "fsync every commit (Full)", Durability::Full),
            ("normal", "WAL NORMAL, no fsync", Durability::Normal),
            ("batched", "group's batches, no fsync", Durability::Batched),
            ("memory", "in memory, no file", Durability::Memory),
        ] {
            if only.as_deref().is_some_and(|o| o != name) {
                continue;
            }
            let m = run(n, d, std::env::args().any(|a| a == "--one-core"));
            let secs = m.wall.as_secs_f64();
            let rate = n as f64 / secs;
            group_rate.get_or_insert(rate);
            // Group commit's shared fsyncs; `Full` fsyncs inside every commit instead.
            let fsyncs = if d == Durability::Group { m.fsyncs.to_string() } else { "–".to_owned() };
            println!(
                "{n:>7}  {label:<34} {secs:>8.2} {rate:>10.1} {:>11.1} {:>10.1} {:>12.2} {:>12}   ratio to group: {:.2}",
                m.events as f64 / secs,
                m.records as f64 / secs,
                m.cpu.as_secs_f64() * 1000.0 / n as f64,
                fsyncs,
                rate / group_rate.unwrap_or(rate),
            );
        }
    }
}
