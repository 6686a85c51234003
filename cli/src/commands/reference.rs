//! `o2c reference load|check`: reference (master) data.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Result, bail};
use clap::Subcommand;

use crate::{Target, TargetKind, load_reference};

/// Subcommands.
#[derive(Subcommand)]
pub enum Cmd {
    /// Load a reference-data snapshot (AWS: one item per entity in the state table).
    Load {
        #[command(flatten)]
        target: Target,
        /// Reference data JSON (default: the bundled Northwind sample).
        #[arg(long)]
        file: Option<PathBuf>,
    },
    /// Check a reference-data file (cross references, template weights).
    Check {
        /// Reference data JSON.
        file: PathBuf,
    },
}

/// Runs the command.
pub async fn run(cmd: Cmd) -> Result<ExitCode> {
    match cmd {
        Cmd::Load { target, file } => {
            if target.target == TargetKind::Embedded {
                bail!("the embedded runtime takes reference data per run (`--reference` on run / serve); use --target aws to load a stage");
            }
            crate::backend::aws::load_reference_data(&target, &load_reference(file.as_deref())?).await
        }
        Cmd::Check { file } => {
            let data = load_reference(Some(&file))?;
            println!(
                "{}: {} customers, {} legal entities, {} tax profiles, {} offerings, {} rate cards, {} templates — consistent",
                file.display(),
                data.customers.len(),
                data.legal_entities.len(),
                data.tax_profiles.len(),
                data.service_offerings.len(),
                data.rate_cards.len(),
                data.project_templates.len()
            );
            Ok(ExitCode::SUCCESS)
        }
    }
}
