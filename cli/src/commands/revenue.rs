//! `o2c revenue`: request a revenue run for an accounting period (one engagement, or every
//! active one as the monthly schedule does), and show what each engagement recognised per
//! period and journal.

use std::process::ExitCode;

use anyhow::Result;
use clap::{Args as ClapArgs, Subcommand};
use o2c_app::clock::{Clock, IdGenerator, RandomIds, SystemClock};
use o2c_app::ports::EngagementStore;
use o2c_domain::aggregate::AggregateKey;
use o2c_domain::revenue::{Period, RevenueLedger};

use super::publish::{entry, envelope, publish};
use crate::backend::Backend;
use crate::{Target, engagement_id, with_backend};

/// Subcommands.
#[derive(Subcommand)]
pub enum Cmd {
    /// Recognise revenue for a period (`RevenueRunRequested`).
    Run(RunArgs),
    /// Revenue an engagement recognised, by period, with its journals.
    Show {
        #[command(flatten)]
        target: Target,
        /// Engagement id or opportunity id.
        engagement: String,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
}

/// Arguments of `o2c revenue run`.
#[derive(ClapArgs)]
pub struct RunArgs {
    #[command(flatten)]
    target: Target,
    /// Accounting period (`YYYY-MM`); a closed one books into the first open period.
    #[arg(long)]
    period: String,
    /// One engagement (`ENG-…` or opportunity id); default: every active engagement.
    #[arg(long)]
    engagement: Option<String>,
    /// The day the run is asked on (default: today, UTC); the period must have ended.
    #[arg(long)]
    as_of: Option<chrono::NaiveDate>,
    /// Who asks.
    #[arg(long = "as", default_value = "U-FIN-CTRL-01")]
    requested_by: String,
    /// Embedded: a running `o2c serve` to send the request to instead of processing it here.
    #[arg(long)]
    url: Option<String>,
}

/// Runs the command.
pub async fn run(cmd: Cmd) -> Result<ExitCode> {
    match cmd {
        Cmd::Run(args) => request(args).await,
        Cmd::Show { target, engagement, json } => with_backend!(target, b => show(&b, &engagement_id(&engagement), json).await),
    }
}

async fn request(args: RunArgs) -> Result<ExitCode> {
    let Some(period) = Period::parse(&args.period) else { usage!("--period {}: expected YYYY-MM", args.period) };
    let as_of = args.as_of.unwrap_or_else(|| SystemClock.now().date_naive());
    if as_of <= period.last_day() {
        usage!("{period} ends on {}: revenue is recognised once a period has ended (--as-of {as_of})", period.last_day());
    }
    let run_id = format!("revenue-{}", RandomIds.new_id());
    let eng = args.engagement.as_deref().map(engagement_id);
    if let (Some(e), None) = (&eng, &args.url) {
        // A run for an engagement that does not exist would only be parked.
        crate::with_backend!(args.target, b => crate::require_engagement(crate::backend::Backend::store(&b), e, &crate::backend::Backend::label(&b)).await)?;
    }
    let mut payload = serde_json::json!({
        "run_id": run_id,
        "period": period.to_string(),
        "as_of": as_of.to_string(),
        "requested_by": args.requested_by,
    });
    if let Some(e) = &eng {
        payload["engagement_id"] = serde_json::json!(e);
    }
    let key = format!("revenue-run:{run_id}:{}", eng.as_deref().unwrap_or("*"));
    let detail = envelope(&RandomIds.new_id(), &run_id, &key, payload);
    let (code, rt) = publish(&args.target, args.url.as_deref(), vec![entry("o2c.scheduler", "RevenueRunRequested", &detail)]).await?;
    if let Some(rt) = rt {
        let engagements = match eng {
            Some(e) => vec![e],
            None => rt.store().list(&Default::default()).await?.into_iter().map(|s| s.engagement_id).collect(),
        };
        for e in engagements {
            if let Some(rl) = rt.store().load_aggregates(&[AggregateKey::revenue_ledger(&e)]).await?.revenue_ledger(&e) {
                print_ledger(rl);
            }
        }
    }
    Ok(code)
}

async fn show<B: Backend>(b: &B, eng: &str, json: bool) -> Result<ExitCode> {
    crate::require_engagement(b.store(), eng, &b.label()).await?;
    let loaded = b.store().load_aggregates(&[AggregateKey::revenue_ledger(eng)]).await?;
    let Some(rl) = loaded.revenue_ledger(eng) else {
        outln!("{eng} has recognised no revenue in {}.", b.label());
        return Ok(ExitCode::SUCCESS);
    };
    if json {
        outln!("{}", serde_json::to_string_pretty(rl)?);
    } else {
        print_ledger(rl);
    }
    Ok(ExitCode::SUCCESS)
}

/// Prints an engagement's revenue by period and its journals.
pub fn print_ledger(rl: &RevenueLedger) {
    outln!("Revenue {}  (covered through {})", rl.engagement_id, rl.last_period.map(|p| p.to_string()).unwrap_or_else(|| "—".into()));
    for (period, total) in &rl.by_period {
        outln!("  period {period}: {total}");
    }
    for (key, amount) in &rl.recognised {
        outln!("  line {key:<14} recognised to date {amount}");
    }
    for j in &rl.journals {
        let moved = if j.period == j.requested_period { String::new() } else { format!(" (run for {}, closed)", j.requested_period) };
        outln!(
            "  journal {} {} in {}{moved}: {}  ERP {}",
            j.journal_id,
            j.status.as_str(),
            j.period,
            j.total,
            j.erp_journal_id.as_deref().unwrap_or("—")
        );
        for l in &j.lines {
            outln!(
                "    {:<6} {:<10} {:<13} {:>16}  to date {:>16}",
                l.line_id,
                l.kind.as_str(),
                l.method.as_str(),
                l.amount.to_string(),
                l.to_date.to_string()
            );
        }
    }
}
