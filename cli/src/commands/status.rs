//! `o2c status`: one engagement — state, external ids, CRM sync, timeline.

use std::process::ExitCode;

use anyhow::{Result, bail};
use clap::Args as ClapArgs;
use o2c_app::ports::EngagementStore;
use o2c_domain::aggregate::{AggregateKey, AggregateKind};

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
    let others = store.load_aggregates(&[AggregateKey::crm_sync(&id), AggregateKey::ledger(&id)]).await?;
    let crm = others.crm_sync(&id);
    let ledger = others.ledger(&id);
    let shards = store.load_all(AggregateKind::WipShard, &id).await?;
    let shards: Vec<_> = shards.wip_shards().into_values().collect();
    let invoices = store.load_all(AggregateKind::Invoice, &id).await?;
    let mut invoices = invoices.invoices();
    invoices.sort_by_key(|i| (i.issue_date, i.invoice_id.clone()));
    if json {
        let entries: Vec<_> = shards.iter().flat_map(|s| s.entries.values()).collect();
        let rejected: Vec<_> = shards.iter().flat_map(|s| s.rejected.iter()).collect();
        let doc = serde_json::json!({
            "version": state.version, "engagement": state.value, "crm_sync": crm.map(|c| &c.last),
            "wip": {"entries": entries, "rejected": rejected}, "ledger": ledger, "invoices": invoices, "timeline": timeline,
        });
        println!("{}", serde_json::to_string_pretty(&doc)?);
    } else {
        print::engagement(&state.value, state.version, crm);
        print::wip(&shards, ledger);
        for i in invoices {
            print::invoice(i);
        }
        print::timeline(&timeline);
    }
    Ok(ExitCode::SUCCESS)
}
