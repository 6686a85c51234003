//! `o2c export`: the analytics facts the bus carried — posted invoices (lines, legal entity,
//! currency, due date), payments applied, left unapplied or returned, revenue recognised —
//! as JSON Lines for a warehouse load, one object per fact:
//! `{"fact", "event_id", "correlation_id", "occurred_at", …the event's payload}`.
//!
//! `--since` / `--until` select by the time the bus accepted the event, so consecutive
//! exports with `--since` = the previous `--until` load every fact exactly once.

use std::process::ExitCode;

use anyhow::{Context, Result};
use chrono::{DateTime, NaiveDate, Utc};
use clap::Args as ClapArgs;
use serde_json::Value;

use crate::backend::Backend;
use crate::{Target, with_backend};

/// The facts exported.
pub const FACTS: [&str; 5] = ["InvoicePosted", "PaymentApplied", "PaymentUnapplied", "PaymentReversed", "RevenueRecognized"];

/// Arguments.
#[derive(ClapArgs)]
pub struct Args {
    #[command(flatten)]
    target: Target,
    /// From (RFC 3339, or a date meaning its midnight UTC), inclusive.
    #[arg(long, value_parser = instant)]
    since: Option<DateTime<Utc>>,
    /// Until (RFC 3339 or date), exclusive.
    #[arg(long, value_parser = instant)]
    until: Option<DateTime<Utc>>,
    /// Write to this file instead of standard output.
    #[arg(long)]
    out: Option<std::path::PathBuf>,
}

fn instant(text: &str) -> Result<DateTime<Utc>, String> {
    DateTime::parse_from_rfc3339(text)
        .map(|t| t.with_timezone(&Utc))
        .or_else(|_| NaiveDate::parse_from_str(text, "%Y-%m-%d").map(|d| d.and_time(chrono::NaiveTime::MIN).and_utc()))
        .map_err(|_| format!("`{text}` is neither RFC 3339 nor YYYY-MM-DD"))
}

/// Runs the command.
pub async fn run(args: Args) -> Result<ExitCode> {
    let entries = with_backend!(args.target, b => b.archived(args.since, args.until).await?);
    let mut lines = Vec::new();
    for e in entries {
        let Some(dt) = e.detail_type.as_deref().filter(|dt| FACTS.contains(dt)) else { continue };
        let detail: Value = serde_json::from_str(e.detail.as_deref().unwrap_or("{}")).context("an archived event's detail")?;
        lines.push(fact(dt, &detail));
    }
    let text: String = lines.iter().map(|l| format!("{l}\n")).collect();
    match &args.out {
        Some(path) => {
            std::fs::write(path, text).with_context(|| format!("cannot write {}", path.display()))?;
            eprintln!("{} fact(s) written to {}", lines.len(), path.display());
        }
        // A closed pipe (`| head`) ends the output quietly; a full disk is an error.
        None => crate::exit::out(format_args!("{text}")),
    }
    Ok(ExitCode::SUCCESS)
}

/// One fact: the envelope's identity and the payload, flattened.
fn fact(detail_type: &str, detail: &Value) -> Value {
    let mut out = serde_json::json!({
        "fact": detail_type,
        "event_id": detail["event_id"],
        "correlation_id": detail["correlation_id"],
        "occurred_at": detail["occurred_at"],
    });
    if let (Some(o), Some(p)) = (out.as_object_mut(), detail["payload"].as_object()) {
        for (k, v) in p {
            o.insert(k.clone(), v.clone());
        }
    }
    out
}
