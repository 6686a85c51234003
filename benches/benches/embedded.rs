//! Engagements per second through the whole embedded runtime (template routing, SQLite
//! store, simulators, all four steps), with fsync on every commit (`Durability::Full`,
//! the default) and with WAL `NORMAL`, in one run. Each engagement is 1 closed-won →
//! contract → PSA + ERP projects → billing schedule → CRM write-backs: 9 queue records
//! (6 step executions — intake, provision, billing setup, 3 write-backs — and 3 pipe moves).
//!
//! `cargo bench -p o2c-benches --bench embedded [-- N]` (default N = 200 engagements).
#![allow(missing_docs, clippy::unwrap_used, clippy::expect_used)]

use std::time::{Duration, Instant};

use o2c_app::bus::PutEventsEntry;
use o2c_app::ports::EngagementStore;
use o2c_embedded::db::Durability;
use o2c_embedded::{Runtime, RuntimeOptions};

fn run(n: usize, durability: Durability) -> (Duration, u64) {
    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build().unwrap();
    rt.block_on(async {
        let dir = tempfile::tempdir().unwrap();
        let opts = RuntimeOptions {
            durability,
            max_workers_per_function: 4,
            poll_interval: Duration::from_millis(5),
            ..RuntimeOptions::default()
        };
        let runtime = Runtime::builder(dir.path().join("bench.db"), o2c_embedded::reference::northwind().unwrap())
            .options(opts)
            .open()
            .await
            .unwrap();
        let entries: Vec<PutEventsEntry> = (0..n)
            .map(|i| PutEventsEntry {
                source: Some("o2c.crm".into()),
                detail_type: Some("OpportunityClosedWon".into()),
                detail: Some(o2c_benches::closed_won_detail(i).to_string()),
                ..Default::default()
            })
            .collect();
        let start = Instant::now();
        for chunk in entries.chunks(10) {
            runtime.put_events(chunk.to_vec()).await.unwrap();
        }
        let report = runtime.run_until_idle(Duration::from_secs(600)).await.unwrap();
        let elapsed = start.elapsed();
        let filter = o2c_app::ports::EngagementFilter { status: Some("active".into()), limit: n + 1, ..Default::default() };
        assert_eq!(runtime.store().list(&filter).await.unwrap().len(), n, "every engagement activated");
        (elapsed, report.succeeded)
    })
}

fn main() {
    let n: usize = std::env::args().skip(1).find_map(|a| a.parse().ok()).unwrap_or(200);
    println!("embedded runtime, {n} engagements, closed-won → active (9 queue records each: 6 step executions + 3 pipe moves)");
    let mut results = Vec::new();
    for (label, d) in [("fsync every commit (Full)", Durability::Full), ("WAL NORMAL", Durability::Normal)] {
        let (t, records) = run(n, d);
        let per_s = n as f64 / t.as_secs_f64();
        println!(
            "  {label:<28} {:>8.2} s  {:>8.1} engagements/s  {:>8.1} records/s  ({records} records)",
            t.as_secs_f64(),
            per_s,
            records as f64 / t.as_secs_f64()
        );
        results.push(per_s);
    }
    println!("  ratio NORMAL / Full: {:.2}×", results[1] / results[0]);
}
