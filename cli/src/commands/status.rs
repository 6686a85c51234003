//! `o2c status`: one engagement — state, external ids, CRM sync, timeline.

use std::process::ExitCode;

use anyhow::{Result, bail};
use clap::Args as ClapArgs;
use o2c_app::ports::EngagementStore;
use o2c_domain::aggregate::AggregateKey;

use crate::backend::Backend;
use crate::{Target, engagement_id, print, with_backend};

/// Arguments.
#[derive(ClapArgs)]
pub struct Args {
    #[command(flatten)]
    target: Target,
    /// Engagement id (`ENG-…`) or CRM opportunity id.
    engagement: String,
    /// Print JSON.
    #[arg(long)]
    json: bool,
}

/// Runs the command.
pub async fn run(args: Args) -> Result<ExitCode> {
    with_backend!(args.target, b => show(&b, &args.engagement, args.json).await)
}

async fn show<B: Backend>(b: &B, engagement: &str, json: bool) -> Result<ExitCode> {
    let id = engagement_id(engagement);
    let store = b.store();
    let Some(state) = store.load(&id).await? else { bail!("no engagement {id} in {}", b.label()) };
    let timeline = store.audit_trail(&id).await?;
    let others = store.load_aggregates(&[AggregateKey::crm_sync(&id)]).await?;
    let crm = others.crm_sync(&id);
    if json {
        let doc = serde_json::json!({"version": state.version, "engagement": state.value, "crm_sync": crm.map(|c| &c.last), "timeline": timeline});
        println!("{}", serde_json::to_string_pretty(&doc)?);
    } else {
        print::engagement(&state.value, state.version, crm);
        print::timeline(&timeline);
    }
    Ok(ExitCode::SUCCESS)
}
