//! `o2c rejections`: parked messages with every reason.

use std::process::ExitCode;

use anyhow::Result;
use clap::Args as ClapArgs;
use o2c_app::ports::RejectionStore;

use crate::backend::Backend;
use crate::{Target, print, with_backend};

/// Arguments.
#[derive(ClapArgs)]
pub struct Args {
    #[command(flatten)]
    target: Target,
    /// At most this many.
    #[arg(long, default_value_t = 50)]
    limit: usize,
    /// Print JSON.
    #[arg(long)]
    json: bool,
}

/// Runs the command.
pub async fn run(args: Args) -> Result<ExitCode> {
    with_backend!(args.target, b => list(&b, args.limit, args.json).await)
}

async fn list<B: Backend>(b: &B, limit: usize, json: bool) -> Result<ExitCode> {
    let rows = b.store().rejections(limit).await?;
    if json {
        outln!("{}", serde_json::to_string_pretty(&rows)?);
    } else {
        print::rejections(&rows);
    }
    Ok(ExitCode::SUCCESS)
}
