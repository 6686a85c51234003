//! `o2c run` (and `o2c drain`, without files): feed event files into the embedded runtime
//! and process until every queue is empty.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Result;
use clap::Args as ClapArgs;
use o2c_app::bus::MAX_ENTRIES_PER_PUT;
use o2c_app::ports::{EngagementFilter, EngagementStore, RejectionStore};
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
    let (parked_before, dead_before) = (rt.store().rejections(usize::MAX).await?.len(), rt.dead_letters().await?);
    let mut failed = 0;
    let mut accepted = 0;
    for chunk in entries.chunks(MAX_ENTRIES_PER_PUT) {
        let resp = rt.put_events(chunk.to_vec()).await?;
        for (e, r) in chunk.iter().zip(resp.entries) {
            match (r.event_id, r.error_code) {
                (Some(_), _) => accepted += 1,
                (None, code) => {
                    failed += 1;
                    eprintln!(
                        "o2c: entry {} / {} refused: {} {}",
                        e.source.as_deref().unwrap_or("?"),
                        e.detail_type.as_deref().unwrap_or("?"),
                        code.unwrap_or_default(),
                        r.error_message.unwrap_or_default()
                    );
                }
            }
        }
    }
    let progress = crate::progress::spinner("processing");
    let report =
        rt.run_until_idle_with(Duration::from_secs(args.timeout_secs), |n| progress.set_message(format!("{n} message(s) queued"))).await?;
    progress.finish_and_clear();
    let parked = rt.store().rejections(usize::MAX).await?.len().saturating_sub(parked_before);
    let dead = report.dead_letters.saturating_sub(dead_before);
    outln!(
        "accepted {accepted} event(s), refused {failed}; {} batch(es), {} record(s) handled, {} redelivery(ies); {parked} parked rejection(s), {dead} dead letter(s)",
        report.batches,
        report.succeeded,
        report.retried
    );
    print::engagement_table(&rt.store().list(&EngagementFilter { limit: 50, ..Default::default() }).await?);
    if parked > 0 || dead > 0 {
        eprintln!("o2c: {parked} message(s) parked, {dead} dead-lettered: see `o2c rejections`, `o2c dlq list` and `o2c exceptions list`");
    }
    Ok(if failed > 0 {
        ExitCode::from(crate::exit::REFUSED)
    } else if parked > 0 || dead > 0 {
        ExitCode::from(crate::exit::ATTENTION)
    } else {
        ExitCode::SUCCESS
    })
}
