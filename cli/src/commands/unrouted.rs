//! `o2c unrouted`: accepted events that matched no rule (archived, delivered nowhere).

use std::process::ExitCode;

use anyhow::Result;
use clap::Args as ClapArgs;

use crate::{Target, TargetKind};

/// Arguments.
#[derive(ClapArgs)]
pub struct Args {
    #[command(flatten)]
    target: Target,
    /// List at most this many, newest first (the count covers all of them).
    #[arg(long, default_value_t = 50)]
    limit: usize,
    /// Print JSON.
    #[arg(long)]
    json: bool,
}

/// Runs the command.
pub async fn run(args: Args) -> Result<ExitCode> {
    if args.target.target == TargetKind::Aws {
        usage!(
            "EventBridge keeps no list of unmatched events: compare the bus's MatchedEvents and Invocations metrics, or add a catch-all rule to a log group"
        );
    }
    let db = crate::open_existing(args.target.db()?)?;
    let found = o2c_embedded::unrouted::unrouted(&db, args.limit).await?;
    if args.json {
        outln!("{}", serde_json::to_string_pretty(&found)?);
        return Ok(ExitCode::SUCCESS);
    }
    outln!("{} event(s) matched no rule", found.total);
    for e in &found.latest {
        let at = chrono::DateTime::from_timestamp_millis(e.received_at).map(|t| t.to_rfc3339()).unwrap_or_default();
        outln!("{at}  {}  {}  {}", e.event_id, e.source, e.detail_type);
    }
    Ok(ExitCode::SUCCESS)
}
