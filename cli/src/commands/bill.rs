//! `o2c bill`: request an invoice run — for one engagement, or (like the daily schedule)
//! for every active engagement whose billing cycle is due on `--as-of`.

use std::process::ExitCode;

use anyhow::Result;
use chrono::NaiveDate;
use clap::Args as ClapArgs;
use o2c_app::clock::{IdGenerator, RandomIds};
use o2c_app::ports::EngagementStore;
use o2c_domain::aggregate::AggregateKind;

use super::publish::{entry, envelope, publish};
use crate::{Target, engagement_id, print};

/// Arguments.
#[derive(ClapArgs)]
pub struct Args {
    #[command(flatten)]
    target: Target,
    /// Billing date: the invoices' issue date and the cut-off of the work billed.
    #[arg(long)]
    as_of: NaiveDate,
    /// One engagement (`ENG-…` or opportunity id); default: every active engagement.
    #[arg(long)]
    engagement: Option<String>,
    /// Bill only engagements whose cycle is due on `--as-of` (what the schedule does; the
    /// cut-off is then the day before). Implied without `--engagement`.
    #[arg(long)]
    scheduled: bool,
    /// Who asks (may not approve the invoices it drafts).
    #[arg(long = "as", default_value = "U-BILL-01")]
    requested_by: String,
    /// Embedded: a running `o2c serve` to send the request to instead of processing it here.
    #[arg(long)]
    url: Option<String>,
}

/// Runs the command.
pub async fn run(args: Args) -> Result<ExitCode> {
    let run_id = format!("run-{}", RandomIds.new_id());
    let eng = args.engagement.as_deref().map(engagement_id);
    if let (Some(e), None) = (&eng, &args.url) {
        // A run for an engagement that does not exist would only be parked.
        crate::with_backend!(args.target, b => crate::require_engagement(crate::backend::Backend::store(&b), e, &crate::backend::Backend::label(&b)).await)?;
    }
    let mut payload = serde_json::json!({
        "run_id": run_id,
        "as_of": args.as_of.to_string(),
        "scheduled": args.scheduled || eng.is_none(),
        "requested_by": args.requested_by,
    });
    if let Some(e) = &eng {
        payload["engagement_id"] = serde_json::json!(e);
    }
    let key = format!("invoice-run:{run_id}:{}", eng.as_deref().unwrap_or("*"));
    let detail = envelope(&RandomIds.new_id(), &run_id, &key, payload);
    let (code, rt) = publish(&args.target, args.url.as_deref(), vec![entry("o2c.scheduler", "InvoiceRunRequested", &detail)]).await?;
    if let Some(rt) = rt {
        let engagements = match eng {
            Some(e) => vec![e],
            None => rt.store().list(&Default::default()).await?.into_iter().map(|s| s.engagement_id).collect(),
        };
        for e in engagements {
            let invoices = rt.store().load_all(AggregateKind::Invoice, &e).await?;
            for i in invoices.invoices().into_iter().filter(|i| i.issue_date == args.as_of) {
                print::invoice(i);
            }
        }
    }
    Ok(code)
}
