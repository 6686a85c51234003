//! `o2c engagements`: the operator list, newest first.

use std::process::ExitCode;

use anyhow::Result;
use clap::Args as ClapArgs;
use o2c_app::ports::{EngagementFilter, EngagementStore};
use o2c_domain::engagement::EngagementStatus;

use crate::backend::Backend;
use crate::{Target, print, with_backend};

/// Arguments.
#[derive(ClapArgs)]
pub struct Args {
    #[command(flatten)]
    target: Target,
    /// Only this status (e.g. `active`, `rejected`, `provisioning_failed`).
    #[arg(long)]
    status: Option<String>,
    /// Only engagements with an open exception.
    #[arg(long)]
    exceptions: bool,
    /// At most this many.
    #[arg(long, default_value_t = 50)]
    limit: usize,
    /// Print JSON.
    #[arg(long)]
    json: bool,
}

/// Runs the command.
pub async fn run(args: Args) -> Result<ExitCode> {
    if let Some(s) = &args.status
        && !EngagementStatus::ALL.iter().any(|k| k.as_str() == s)
    {
        usage!("unknown status `{s}` ({})", EngagementStatus::ALL.map(EngagementStatus::as_str).join(", "));
    }
    let filter = EngagementFilter { status: args.status.clone(), open_exceptions: args.exceptions, limit: args.limit, after: None };
    with_backend!(args.target, b => list(&b, &filter, args.json).await)
}

async fn list<B: Backend>(b: &B, filter: &EngagementFilter, json: bool) -> Result<ExitCode> {
    let rows = b.store().list(filter).await?;
    if json {
        outln!("{}", serde_json::to_string_pretty(&rows)?);
    } else {
        print::engagement_table(&rows);
    }
    Ok(ExitCode::SUCCESS)
}
