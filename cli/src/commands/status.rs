//! `o2c status`: one engagement — state, external ids, CRM sync, WIP, invoices with their
//! open balances and the payments applied to them, timeline.

use std::process::ExitCode;

use anyhow::{Result, bail};
use clap::Args as ClapArgs;
use o2c_app::ports::EngagementStore;
use o2c_domain::aggregate::{AggregateKey, AggregateKind};
use o2c_domain::engagement::EngagementStatus;

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
    /// First wait until the engagement reaches this status (e.g. `active`), polling; exit 5
    /// when it has not after `--timeout-secs` (the functions on AWS work asynchronously).
    #[arg(long)]
    wait_for: Option<String>,
    /// How long `--wait-for` waits.
    #[arg(long, default_value_t = 120, requires = "wait_for")]
    timeout_secs: u64,
}

/// Runs the command.
pub async fn run(args: Args) -> Result<ExitCode> {
    if let Some(wanted) = &args.wait_for
        && !EngagementStatus::ALL.iter().any(|s| s.as_str() == wanted)
    {
        usage!("unknown status `{wanted}` ({})", EngagementStatus::ALL.map(EngagementStatus::as_str).join(", "));
    }
    // One backend (one set of clients) for the wait and the view.
    with_backend!(args.target, b => waited_then_shown(&b, &args).await)
}

async fn waited_then_shown<B: Backend>(b: &B, args: &Args) -> Result<ExitCode> {
    if let Some(wanted) = &args.wait_for {
        match wait_for(b, &args.engagement, wanted, args.timeout_secs).await?.as_deref() {
            Some(s) if s == wanted => {}
            Some(s) => {
                eprintln!("o2c: {} is `{s}`, not `{wanted}` (waited up to {} s)", args.engagement, args.timeout_secs);
                show(b, &args.engagement, args.json).await?;
                return Ok(ExitCode::from(crate::exit::INCOMPLETE));
            }
            None => {
                eprintln!("o2c: no engagement {} after {} s (see o2c rejections, o2c dlq list)", args.engagement, args.timeout_secs);
                return Ok(ExitCode::from(crate::exit::INCOMPLETE));
            }
        }
    }
    show(b, &args.engagement, args.json).await
}

/// Polls until the engagement has `wanted` status, is rejected (it will not move on its
/// own), or the time is up; returns the status it has then (`None`: not there).
async fn wait_for<B: Backend>(b: &B, engagement: &str, wanted: &str, timeout_secs: u64) -> Result<Option<String>> {
    let id = engagement_id(engagement);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(timeout_secs);
    let progress = crate::progress::spinner(&format!("waiting for {id} to be {wanted}"));
    loop {
        let now = b.store().load(&id).await?.map(|s| s.value.status.as_str().to_owned());
        progress.set_message(now.clone().unwrap_or_else(|| "not there yet".into()));
        let settled = now.as_deref().is_some_and(|s| s == wanted || s == EngagementStatus::Rejected.as_str());
        if settled || std::time::Instant::now() >= deadline {
            progress.finish_and_clear();
            return Ok(now);
        }
        tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    }
}

async fn show<B: Backend>(b: &B, engagement: &str, json: bool) -> Result<ExitCode> {
    let id = engagement_id(engagement);
    let store = b.store();
    let Some(state) = store.load(&id).await? else { bail!("no engagement {id} in {}", b.label()) };
    let timeline = store.audit_trail(&id).await?;
    let others =
        store.load_aggregates(&[AggregateKey::crm_sync(&id), AggregateKey::ledger(&id), AggregateKey::revenue_ledger(&id)]).await?;
    let revenue = others.revenue_ledger(&id);
    let crm = others.crm_sync(&id);
    let ledger = others.ledger(&id);
    let shards = store.load_all(AggregateKind::WipShard, &id).await?;
    let shards: Vec<_> = shards.wip_shards().into_values().collect();
    let invoices = store.load_all(AggregateKind::Invoice, &id).await?;
    let mut invoices = invoices.invoices();
    invoices.sort_by_key(|i| (i.issue_date, i.invoice_id.clone()));
    // Posted invoices live on in their customer's receivables: open balance and payments.
    // With what settled out of them (paid invoices, closed payments).
    let mut receivables: Vec<o2c_domain::receivables::Receivables> = Vec::new();
    for i in &invoices {
        if !receivables.iter().any(|x| x.legal_entity_id == i.legal_entity_id && x.customer_id == i.customer_id) {
            receivables.extend(o2c_app::receivables::history(store, &i.legal_entity_id, Some(&i.customer_id)).await?);
        }
    }
    let cash: Vec<serde_json::Value> = invoices
        .iter()
        .filter_map(|i| {
            let r = receivables.iter().find(|r| r.legal_entity_id == i.legal_entity_id && r.customer_id == i.customer_id)?;
            let item = r.invoices.get(&i.invoice_id)?;
            let payments: Vec<_> = r
                .payments
                .values()
                .flat_map(|p| p.applications.iter().filter(|a| a.invoice_id == i.invoice_id).map(move |a| (p, a)))
                .map(|(p, a)| serde_json::json!({"payment_id": p.payment_id, "value_date": p.value_date, "applied": a.amount, "rule": p.rule, "status": p.status, "reversed_by": p.reversed_by}))
                .collect();
            Some(serde_json::json!({"invoice_id": i.invoice_id, "number": item.number, "total": item.total, "applied": item.applied, "open": item.open(), "due_date": item.due_date, "payments": payments}))
        })
        .collect();
    if json {
        let entries: Vec<_> = shards.iter().flat_map(|s| s.entries.values()).collect();
        let rejected: Vec<_> = shards.iter().flat_map(|s| s.rejected.iter()).collect();
        let doc = serde_json::json!({
            "version": state.version, "engagement": state.value, "crm_sync": crm.map(|c| &c.last),
            "wip": {"entries": entries, "rejected": rejected}, "ledger": ledger, "invoices": invoices, "receivables": cash, "revenue": revenue, "timeline": timeline,
        });
        outln!("{}", serde_json::to_string_pretty(&doc)?);
    } else {
        print::engagement(&state.value, state.version, crm);
        print::wip(&shards, ledger);
        for i in invoices {
            print::invoice(i);
        }
        for c in &cash {
            outln!(
                "Receivable {}  total {} {}  applied {}  open {}  due {}",
                c["number"].as_str().unwrap_or_default(),
                c["total"]["amount"].as_str().unwrap_or_default(),
                c["total"]["currency"].as_str().unwrap_or_default(),
                c["applied"]["amount"].as_str().unwrap_or_default(),
                c["open"]["amount"].as_str().unwrap_or_default(),
                c["due_date"].as_str().unwrap_or_default()
            );
            for p in c["payments"].as_array().into_iter().flatten() {
                outln!(
                    "  paid by {} on {}: {} ({}, {}){}",
                    p["payment_id"].as_str().unwrap_or_default(),
                    p["value_date"].as_str().unwrap_or_default(),
                    p["applied"]["amount"].as_str().unwrap_or_default(),
                    p["rule"].as_str().unwrap_or_default(),
                    p["status"].as_str().unwrap_or_default(),
                    p["reversed_by"].as_str().map(|b| format!(", reversed by {b}")).unwrap_or_default()
                );
            }
        }
        if let Some(rl) = revenue {
            super::revenue::print_ledger(rl);
        }
        print::timeline(&timeline);
    }
    Ok(ExitCode::SUCCESS)
}
