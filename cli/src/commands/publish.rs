//! What the commands that originate events (`bill`, `invoice`) share: publish the entries
//! to the target, and on the embedded target process them to the end.
//!
//! - `--target aws`: `PutEvents` on the stage's bus (the stage's functions do the rest);
//! - embedded with `--url`: to a running `o2c serve`, with the key in `O2C_API_KEY` or the
//!   file named by `O2C_API_KEY_FILE`;
//! - embedded: the runtime opens `--db` (created if missing), publishes, processes until
//!   every queue is empty, and reports.

use std::process::ExitCode;
use std::time::Duration;

use anyhow::Result;
use o2c_app::bus::PutEventsEntry;
use o2c_embedded::{Runtime, RuntimeOptions};

use crate::{Target, TargetKind, load_reference, template};

/// Publishes `entries`; returns the open runtime when they were processed locally.
pub async fn publish(target: &Target, url: Option<&str>, entries: Vec<PutEventsEntry>) -> Result<(ExitCode, Option<Runtime>)> {
    match (target.target, url) {
        (TargetKind::Aws, _) => Ok((crate::backend::aws::send(target, &entries).await?, None)),
        (TargetKind::Embedded, Some(url)) => {
            Ok((super::serve::send(url, &entries, super::serve::client_key(None)?.as_deref()).await?, None))
        }
        (TargetKind::Embedded, None) => {
            let template = template(target.template.as_deref())?;
            let rt = Runtime::builder(target.db()?, load_reference(None)?)
                .template(&template.text)
                .options(RuntimeOptions::default())
                .open()
                .await?;
            let resp = rt.put_events(entries).await?;
            if resp.failed_entry_count > 0 {
                for e in resp.entries.iter().filter(|e| e.event_id.is_none()) {
                    eprintln!(
                        "o2c: refused: {} {}",
                        e.error_code.as_deref().unwrap_or_default(),
                        e.error_message.as_deref().unwrap_or_default()
                    );
                }
            }
            let dead_before = rt.dead_letters().await?;
            let progress = crate::progress::spinner("processing");
            let report =
                rt.run_until_idle_with(Duration::from_secs(300), |n| progress.set_message(format!("{n} message(s) queued"))).await?;
            progress.finish_and_clear();
            let dead = report.dead_letters.saturating_sub(dead_before);
            eprintln!(
                "processed: {} batch(es), {} record(s) handled, {} redelivery(ies), {} parked, {dead} dead letter(s)",
                report.batches, report.succeeded, report.retried, report.parked
            );
            Ok((crate::exit::verdict(resp.failed_entry_count as u64, report.parked, dead), Some(rt)))
        }
    }
}

/// A PutEvents entry for `(source, detail-type)` with `detail`.
pub fn entry(source: &str, detail_type: &str, detail: &serde_json::Value) -> PutEventsEntry {
    PutEventsEntry {
        source: Some(source.into()),
        detail_type: Some(detail_type.into()),
        detail: Some(detail.to_string()),
        ..Default::default()
    }
}

/// The o2c envelope around `payload`, keyed `idempotency_key`.
pub fn envelope(event_id: &str, correlation_id: &str, idempotency_key: &str, payload: serde_json::Value) -> serde_json::Value {
    let now = o2c_app::clock::Clock::now(&o2c_app::clock::SystemClock);
    serde_json::json!({
        "event_id": event_id,
        "event_version": "1",
        "correlation_id": correlation_id,
        "occurred_at": now.to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
        "idempotency_key": idempotency_key,
        "payload": payload,
    })
}
