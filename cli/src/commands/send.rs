//! `o2c send`: publish event files to a running `o2c serve` (`--url`) or to the stage's
//! bus (`--target aws`).

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Result;
use clap::Args as ClapArgs;

use crate::{Target, TargetKind, read_inputs};

/// Arguments.
#[derive(ClapArgs)]
pub struct Args {
    #[command(flatten)]
    target: Target,
    /// Embedded: the `o2c serve` base URL.
    #[arg(long, default_value = "http://127.0.0.1:4010")]
    url: String,
    /// Embedded: a file holding the API key (`o2c sources add … --key-file`); else the key
    /// in `O2C_API_KEY`, or the file named by `O2C_API_KEY_FILE`.
    #[arg(long, value_name = "PATH")]
    key_file: Option<PathBuf>,
    /// Event files.
    #[arg(required = true)]
    files: Vec<PathBuf>,
}

/// Runs the command.
pub async fn run(args: Args) -> Result<ExitCode> {
    let entries = read_inputs(&args.files)?;
    match args.target.target {
        TargetKind::Aws => crate::backend::aws::send(&args.target, &entries).await,
        TargetKind::Embedded => {
            super::serve::send(&args.url, &entries, super::serve::client_key(args.key_file.as_deref())?.as_deref()).await
        }
    }
}
