//! `o2c reference load|check`: reference (master) data.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Result;
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
        #[arg(long, visible_alias = "file")]
        reference: Option<PathBuf>,
    },
    /// Check a reference-data file (cross references, template weights).
    Check {
        /// Reference data JSON.
        #[arg(long, visible_alias = "file")]
        reference: PathBuf,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
}

/// Runs the command.
pub async fn run(cmd: Cmd) -> Result<ExitCode> {
    match cmd {
        Cmd::Load { target, reference: file } => {
            if target.target == TargetKind::Embedded {
                usage!(
                    "the embedded runtime takes reference data per run (`--reference` on run / serve); use --target aws to load a stage"
                );
            }
            crate::backend::aws::load_reference_data(&target, &load_reference(file.as_deref())?).await
        }
        Cmd::Check { reference: file, json } => {
            let data = load_reference(Some(&file))?;
            if json {
                outln!(
                    "{}",
                    serde_json::json!({
                        "file": file.display().to_string(), "consistent": true,
                        "customers": data.customers.len(), "legal_entities": data.legal_entities.len(),
                        "tax_profiles": data.tax_profiles.len(), "service_offerings": data.service_offerings.len(),
                        "rate_cards": data.rate_cards.len(), "project_templates": data.project_templates.len(),
                    })
                );
                return Ok(ExitCode::SUCCESS);
            }
            outln!(
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
