//! `o2c bootstrap`: AWS without CloudFormation — the template's tables, bus, archive,
//! queues and rules for a stage (an emulator or a sandbox account), and reference data.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Result;
use clap::Args as ClapArgs;

use crate::{Target, load_reference};

/// Arguments.
#[derive(ClapArgs)]
pub struct Args {
    #[command(flatten)]
    target: Target,
    /// Reference data JSON (default: the bundled Northwind sample).
    #[arg(long)]
    reference: Option<PathBuf>,
}

/// Runs the command.
pub async fn run(args: Args) -> Result<ExitCode> {
    crate::backend::aws::bootstrap(&args.target, &load_reference(args.reference.as_deref())?).await
}
