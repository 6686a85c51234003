//! `o2c run` (and `o2c drain`, without files): feed event files into the embedded runtime
//! and process until every queue is empty.
//!
//! Events that all carry a time are played in the order they occurred: the events of one
//! instant go on the bus together, and each instant is processed to the end before the
//! next, so a story (`events/samples/*.json`) replays as it happened whatever the order of
//! the files. Input without times (or `--all-at-once`) goes on the bus at once, as given.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Result;
use clap::Args as ClapArgs;
use o2c_app::bus::{MAX_ENTRIES_PER_PUT, PutEventsEntry};
use o2c_app::ports::{EngagementFilter, EngagementStore};
use o2c_embedded::{Runtime, RuntimeOptions};

use crate::{load_reference, print, read_inputs, template};

/// Arguments.
#[derive(ClapArgs)]
pub struct Args {
    /// Database file (created if missing).
    #[arg(long)]
    db: PathBuf,
    /// Reference data JSON (default: the bundled Northwind sample).
    #[arg(long)]
    reference: Option<PathBuf>,
    /// SAM template to wire the bus, rules, queues and functions from (default: the
    /// repository's `infra/template.yaml` found from the current directory, else the copy
    /// built into this binary).
    #[arg(long)]
    template: Option<PathBuf>,
    /// Give up when queues are not empty after this many seconds.
    #[arg(long, default_value_t = 300)]
    timeout_secs: u64,
    /// Put every event on the bus at once, in the order given, even when they carry times
    /// (a load, not a story: playing instant by instant costs ~50 ms per distinct time).
    #[arg(long)]
    all_at_once: bool,
    /// Event files; none: process what is already queued (after a redrive, a resubmit to a
    /// stopped server, a crash) — what `o2c drain` does.
    files: Vec<PathBuf>,
}

/// Runs the command.
pub async fn run(args: Args) -> Result<ExitCode> {
    let entries = read_inputs(&args.files)?;
    let template = template(args.template.as_deref())?;
    eprintln!("o2c run: template {}", template.origin);
    let rt = Runtime::builder(&args.db, load_reference(args.reference.as_deref())?)
        .template(&template.text)
        .options(RuntimeOptions::default())
        .open()
        .await?;
    let dead_before = rt.dead_letters().await?;
    let instants = instants(entries, args.all_at_once);
    // `--timeout-secs` bounds the whole run, every instant included.
    let deadline = std::time::Instant::now() + Duration::from_secs(args.timeout_secs);
    let (mut failed, mut accepted) = (0, 0);
    let mut report = o2c_embedded::RunReport::default();
    let progress = crate::progress::spinner("processing");
    for (n, batch) in instants.iter().enumerate() {
        for chunk in batch.chunks(MAX_ENTRIES_PER_PUT) {
            let resp = rt.put_events(chunk.to_vec()).await?;
            for (e, r) in chunk.iter().zip(resp.entries) {
                match (r.event_id, r.error_code) {
                    (Some(_), _) => accepted += 1,
                    (None, code) => {
                        failed += 1;
                        progress.suspend(|| {
                            eprintln!(
                                "o2c: entry {} / {} refused: {} {}",
                                e.source.as_deref().unwrap_or("?"),
                                e.detail_type.as_deref().unwrap_or("?"),
                                code.unwrap_or_default(),
                                r.error_message.unwrap_or_default()
                            )
                        });
                    }
                }
            }
        }
        let label = if instants.len() > 1 { format!("instant {}/{}: ", n + 1, instants.len()) } else { String::new() };
        let r = rt
            .run_until_idle_with(deadline.saturating_duration_since(std::time::Instant::now()), |q| {
                progress.set_message(format!("{label}{q} message(s) queued"))
            })
            .await?;
        (report.batches, report.succeeded, report.parked, report.retried, report.dead_letters) = (
            report.batches + r.batches,
            report.succeeded + r.succeeded,
            report.parked + r.parked,
            report.retried + r.retried,
            r.dead_letters,
        );
    }
    if instants.is_empty() {
        report = rt
            .run_until_idle_with(Duration::from_secs(args.timeout_secs), |q| progress.set_message(format!("{q} message(s) queued")))
            .await?;
    }
    progress.finish_and_clear();
    let parked = report.parked;
    let dead = report.dead_letters.saturating_sub(dead_before);
    outln!(
        "accepted {accepted} event(s), refused {failed}; {} batch(es), {} record(s) handled, {} redelivery(ies); {parked} parked rejection(s), {dead} dead letter(s)",
        report.batches,
        report.succeeded,
        report.retried
    );
    print::engagement_table(&rt.store().list(&EngagementFilter { limit: 50, ..Default::default() }).await?);
    Ok(crate::exit::verdict(failed, parked, dead))
}

/// The entries grouped by the instant they occurred (the EventBridge `time`, else
/// `detail.occurred_at`), oldest first; entries without a time go last, together, in the
/// order given. `all_at_once`: one group, as given.
fn instants(entries: Vec<PutEventsEntry>, all_at_once: bool) -> Vec<Vec<PutEventsEntry>> {
    let at = |e: &PutEventsEntry| {
        e.time.or_else(|| {
            let d: serde_json::Value = serde_json::from_str(e.detail.as_deref()?).ok()?;
            chrono::DateTime::parse_from_rfc3339(d["occurred_at"].as_str()?).ok().map(|t| t.with_timezone(&chrono::Utc))
        })
    };
    if entries.is_empty() {
        return Vec::new();
    }
    if all_at_once {
        return vec![entries];
    }
    let (mut timed, mut untimed) = (Vec::new(), Vec::new());
    for e in entries {
        match at(&e) {
            Some(t) => timed.push((t, e)),
            None => untimed.push(e),
        }
    }
    timed.sort_by_key(|(t, _)| *t);
    let mut out: Vec<Vec<PutEventsEntry>> = Vec::new();
    let mut last = None;
    for (t, e) in timed {
        match out.last_mut() {
            Some(group) if last == Some(t) => group.push(e),
            _ => out.push(vec![e]),
        }
        last = Some(t);
    }
    if !untimed.is_empty() {
        if !out.is_empty() {
            eprintln!("o2c run: {} event(s) carry no time; they go last, after the timed ones", untimed.len());
        }
        out.push(untimed);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(time: Option<&str>, occurred: &str, n: u32) -> PutEventsEntry {
        PutEventsEntry {
            time: time.map(|t| t.parse().unwrap()),
            detail: Some(serde_json::json!({"occurred_at": occurred, "n": n}).to_string()),
            ..Default::default()
        }
    }

    fn order(groups: &[Vec<PutEventsEntry>]) -> Vec<Vec<u64>> {
        groups
            .iter()
            .map(|g| {
                g.iter()
                    .map(|e| serde_json::from_str::<serde_json::Value>(e.detail.as_deref().unwrap()).unwrap()["n"].as_u64().unwrap())
                    .collect()
            })
            .collect()
    }

    #[test]
    fn when_every_event_has_a_time_should_play_them_instant_by_instant_in_time_order() {
        let entries = vec![
            entry(Some("2027-03-01T05:00:00Z"), "x", 1),
            entry(None, "2026-11-20T09:30:00Z", 2),
            entry(Some("2026-11-21T14:05:02Z"), "x", 3),
            entry(Some("2027-03-01T05:00:00Z"), "x", 4),
        ];
        assert_eq!(order(&instants(entries.clone(), false)), vec![vec![2], vec![3], vec![1, 4]]);
        assert_eq!(order(&instants(entries, true)), vec![vec![1, 2, 3, 4]]);
    }

    #[test]
    fn when_some_events_have_no_time_should_play_the_timed_ones_in_order_then_the_rest_together() {
        let entries = vec![
            entry(None, "not a time", 1),
            entry(Some("2027-03-01T05:00:00Z"), "x", 2),
            entry(None, "x", 3),
            entry(Some("2027-01-01T05:00:00Z"), "x", 4),
        ];
        assert_eq!(order(&instants(entries, false)), vec![vec![4], vec![2], vec![1, 3]]);
        let untimed = vec![entry(None, "x", 1), entry(None, "x", 2)];
        assert_eq!(order(&instants(untimed, false)), vec![vec![1, 2]]);
        assert!(instants(Vec::new(), false).is_empty());
    }
}
