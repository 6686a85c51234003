//! `o2c dlq list|redrive`: queue depths, dead letters with their reasons, redrive.

use std::process::ExitCode;

use anyhow::Result;
use clap::Subcommand;

use crate::backend::Backend;
use crate::{Target, with_backend};

/// Subcommands.
#[derive(Subcommand)]
pub enum Cmd {
    /// Depth of every queue, or the messages of one queue with their failure reasons.
    List {
        #[command(flatten)]
        target: Target,
        /// Queue logical id (e.g. `ProvisionDLQ`).
        queue: Option<String>,
    },
    /// Move messages from a DLQ back to its source queue.
    Redrive {
        #[command(flatten)]
        target: Target,
        /// DLQ logical id.
        queue: String,
        /// At most this many.
        #[arg(long, default_value_t = 1000)]
        limit: usize,
    },
}

/// Runs the command.
pub async fn run(cmd: Cmd) -> Result<ExitCode> {
    match cmd {
        Cmd::List { target, queue } => with_backend!(target, b => list(&b, queue.as_deref()).await),
        Cmd::Redrive { target, queue, limit } => with_backend!(target, b => redrive(&b, &queue, limit).await),
    }
}

async fn list<B: Backend>(b: &B, queue: Option<&str>) -> Result<ExitCode> {
    match queue {
        None => {
            println!("{:<24} {:>8} {:>10}  role", "queue", "visible", "in flight");
            for r in b.queues().await? {
                println!(
                    "{:<24} {:>8} {:>10}  {}",
                    r.queue,
                    r.visible,
                    r.in_flight,
                    if r.dead_letter { "dead-letter queue" } else { "queue" }
                );
            }
        }
        Some(q) => {
            for m in b.messages(q).await? {
                println!(
                    "{}  {}  {}  {}  event {}  {}",
                    m.message_id,
                    m.sent_at.map(|t| t.to_rfc3339()).unwrap_or_default(),
                    m.receive_count.map(|n| format!("received {n}×")).unwrap_or_default(),
                    m.detail_type.unwrap_or_default(),
                    m.event_id.unwrap_or_default(),
                    m.reason.unwrap_or_default()
                );
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

async fn redrive<B: Backend>(b: &B, dlq: &str, limit: usize) -> Result<ExitCode> {
    let bar = indicatif::ProgressBar::new(limit as u64);
    bar.set_style(
        indicatif::ProgressStyle::with_template("{spinner} {pos} message(s) redriven")
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_spinner()),
    );
    let (moved, source) = b.redrive(dlq, limit, &|n| bar.set_position(n as u64)).await?;
    bar.finish_and_clear();
    println!("moved {moved} message(s) from {dlq} back to {source}");
    Ok(ExitCode::SUCCESS)
}
