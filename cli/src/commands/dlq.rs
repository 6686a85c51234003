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
        /// Print JSON.
        #[arg(long)]
        json: bool,
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
        Cmd::List { target, queue, json } => with_backend!(target, b => list(&b, queue.as_deref(), json).await),
        Cmd::Redrive { target, queue, limit } => with_backend!(target, b => redrive(&b, &queue, limit).await),
    }
}

async fn list<B: Backend>(b: &B, queue: Option<&str>, json: bool) -> Result<ExitCode> {
    match queue {
        None if json => outln!("{}", serde_json::to_string_pretty(&b.queues().await?)?),
        Some(q) if json => outln!("{}", serde_json::to_string_pretty(&b.messages(q).await?)?),
        None => {
            outln!("{:<24} {:>8} {:>10}  role", "queue", "visible", "in flight");
            for r in b.queues().await? {
                outln!(
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
                outln!(
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
    let bar = crate::progress::bar(&format!("redriving {dlq}"), limit as u64);
    let (moved, source) = b.redrive(dlq, limit, &|n| bar.set_position(n as u64)).await?;
    bar.finish_and_clear();
    outln!("moved {moved} message(s) from {dlq} back to {source}");
    Ok(ExitCode::SUCCESS)
}
