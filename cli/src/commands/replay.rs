//! `o2c replay`: archived events of a time window back into the bus.

use std::process::ExitCode;

use anyhow::Result;
use clap::Args as ClapArgs;

use crate::backend::Backend;
use crate::{Target, with_backend};

/// Arguments.
#[derive(ClapArgs)]
pub struct Args {
    #[command(flatten)]
    target: Target,
    /// Start (RFC 3339).
    #[arg(long)]
    from: chrono::DateTime<chrono::Utc>,
    /// End (RFC 3339, exclusive).
    #[arg(long)]
    to: chrono::DateTime<chrono::Utc>,
    /// AWS: archive name (default: the template's archive for the stage).
    #[arg(long)]
    archive: Option<String>,
}

/// Runs the command.
pub async fn run(args: Args) -> Result<ExitCode> {
    let said = crate::progress::during("replaying", async {
        with_backend!(args.target, b => b.replay(args.from, args.to, args.archive.clone()).await)
    })
    .await?;
    outln!("{said}");
    Ok(ExitCode::SUCCESS)
}
