//! `o2c invoice`: an approver's decision on a draft, a repost after the ERP refused an
//! invoice, and the invoices of an engagement.

use std::process::ExitCode;

use anyhow::{Result, bail};
use clap::{Args as ClapArgs, Subcommand};
use o2c_app::clock::{IdGenerator, RandomIds};
use o2c_app::ports::EngagementStore;
use o2c_domain::aggregate::AggregateKind;

use super::publish::{entry, envelope, publish};
use crate::backend::Backend;
use crate::{Target, engagement_id, print, with_backend};

/// A decision on one invoice.
#[derive(ClapArgs)]
pub struct Decision {
    #[command(flatten)]
    target: Target,
    /// Invoice id (`INV-<engagement>-<n>`).
    invoice: String,
    /// The approver's user id (checked: role for the legal entity, segregation of duties).
    #[arg(long = "as")]
    approver: String,
    /// Comment kept on the approvals trail (for a rejection: its reason).
    #[arg(long, visible_alias = "reason")]
    comment: Option<String>,
    /// Embedded: a running `o2c serve` to send the decision to.
    #[arg(long)]
    url: Option<String>,
}

/// Subcommands.
#[derive(Subcommand)]
pub enum Cmd {
    /// Approve a draft (`InvoiceApproved`).
    Approve(Decision),
    /// Reject a draft; its lines go back to WIP (`InvoiceRejected`).
    Reject(Decision),
    /// Release an invoice again after the ERP refused it (same number).
    Repost {
        #[command(flatten)]
        target: Target,
        /// Invoice id.
        invoice: String,
        /// Embedded: a running `o2c serve`.
        #[arg(long)]
        url: Option<String>,
    },
    /// The invoices of an engagement: lines, tax, status, approvals.
    List {
        #[command(flatten)]
        target: Target,
        /// Engagement id or opportunity id.
        engagement: String,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
}

/// The engagement an invoice id belongs to (`INV-<engagement>-<n>`).
fn engagement_of(invoice: &str) -> Result<String> {
    match invoice.strip_prefix("INV-").and_then(|rest| rest.rsplit_once('-')) {
        Some((eng, n)) if eng.starts_with("ENG-") && n.chars().all(|c| c.is_ascii_digit()) => Ok(eng.to_owned()),
        _ => usage!("`{invoice}` is not an invoice id (INV-<engagement>-<n>)"),
    }
}

/// Runs the command.
pub async fn run(cmd: Cmd) -> Result<ExitCode> {
    match cmd {
        Cmd::Approve(d) => decide(d, true).await,
        Cmd::Reject(d) => decide(d, false).await,
        Cmd::Repost { target, invoice, url } => {
            let eng = engagement_of(&invoice)?;
            let (legal_entity, customer) = with_backend!(target, b => issuer(&b, &eng, &invoice).await)?;
            let payload =
                serde_json::json!({"engagement_id": eng, "invoice_id": invoice, "legal_entity_id": legal_entity, "customer_id": customer});
            let id = RandomIds.new_id();
            let detail = envelope(&id, &format!("ops-{id}"), &format!("ops:repost:{invoice}:{id}"), payload);
            let (code, rt) = publish(&target, url.as_deref(), vec![entry("o2c.invoicing", "InvoiceReleased", &detail)]).await?;
            if let Some(rt) = rt {
                show(rt.store(), &eng, Some(&invoice)).await?;
            }
            Ok(code)
        }
        Cmd::List { target, engagement, json } => {
            let eng = engagement_id(&engagement);
            with_backend!(target, b => list(&b, &eng, json).await)
        }
    }
}

async fn decide(d: Decision, approve: bool) -> Result<ExitCode> {
    let eng = engagement_of(&d.invoice)?;
    if d.url.is_none() {
        // A decision on an invoice that does not exist would only be parked.
        with_backend!(d.target, b => issuer(&b, &eng, &d.invoice).await)?;
    }
    let id = RandomIds.new_id();
    let now = o2c_app::clock::Clock::now(&o2c_app::clock::SystemClock);
    let mut payload = serde_json::json!({
        "engagement_id": eng, "invoice_id": d.invoice, "approver_id": d.approver,
        "decided_at": now.to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
    });
    if let Some(c) = &d.comment {
        payload["comment"] = serde_json::json!(c);
    }
    let detail = envelope(&id, &format!("approval-{id}"), &format!("approvals:{}:{}:{id}", d.invoice, d.approver), payload);
    let detail_type = if approve { "InvoiceApproved" } else { "InvoiceRejected" };
    let (code, rt) = publish(&d.target, d.url.as_deref(), vec![entry("o2c.approvals", detail_type, &detail)]).await?;
    let Some(rt) = rt else { return Ok(code) };
    show(rt.store(), &eng, Some(&d.invoice)).await?;
    // The decision is on the approvals trail, refused (role, segregation of duties) or not.
    let all = rt.store().load_all(AggregateKind::Invoice, &eng).await?;
    let refused = all.invoice(&d.invoice).and_then(|i| i.approvals.iter().find(|a| a.event_id == id)).and_then(|a| a.refused.clone());
    if let Some(why) = refused {
        eprintln!("o2c: the decision was refused: {why}");
        return Ok(ExitCode::from(crate::exit::REFUSED));
    }
    Ok(code)
}

async fn issuer<B: Backend>(b: &B, eng: &str, invoice: &str) -> Result<(String, String)> {
    let all = b.store().load_all(AggregateKind::Invoice, eng).await?;
    match all.invoice(invoice) {
        Some(i) => Ok((i.legal_entity_id.clone(), i.customer_id.clone())),
        None => bail!("no invoice {invoice} on {eng} in {}", b.label()),
    }
}

async fn show<S: EngagementStore>(store: &S, eng: &str, only: Option<&str>) -> Result<()> {
    let all = store.load_all(AggregateKind::Invoice, eng).await?;
    for i in all.invoices().into_iter().filter(|i| only.is_none_or(|o| o == i.invoice_id)) {
        print::invoice(i);
    }
    Ok(())
}

async fn list<B: Backend>(b: &B, eng: &str, json: bool) -> Result<ExitCode> {
    crate::require_engagement(b.store(), eng, &b.label()).await?;
    let all = b.store().load_all(AggregateKind::Invoice, eng).await?;
    let invoices = all.invoices();
    if json {
        outln!("{}", serde_json::to_string_pretty(&invoices)?);
    } else if invoices.is_empty() {
        outln!("no invoices for {eng} in {}", b.label());
    } else {
        for i in invoices {
            print::invoice(i);
        }
    }
    Ok(ExitCode::SUCCESS)
}
