//! `o2c reconcile`: compare what the CRM, the PSA and the ERP hold with what o2c says they
//! should — one engagement, or every active one as the daily schedule does — and report
//! every difference with both sides' values: a table, `--json`, and with `--out DIR` a
//! `reconciliation.json` and a static `reconciliation.html`.
//!
//! The comparison runs in the `reconciliation` step (read through each system's connector,
//! never from o2c's copy); mismatches also become a `reconciliation_mismatch` exception in
//! `o2c exceptions`. Embedded, the request is processed before the report is drawn; on AWS
//! the report shows the stage's latest results (`--report-only` skips the request).
//! Exit code: 0 when every system agrees, 4 when a mismatch was found or a read refused,
//! 5 when an engagement has no result of the run just requested.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context, Result};
use clap::Args as ClapArgs;
use o2c_app::clock::{IdGenerator, RandomIds};
use o2c_app::ports::{EngagementFilter, EngagementStore};
use o2c_domain::aggregate::AggregateKey;
use o2c_domain::reconciliation::ReconciliationReport;

use super::publish::{entry, envelope, publish};
use crate::backend::Backend;
use crate::{Target, engagement_id, with_backend};

/// Exit code when a system disagrees (or refused a read).
pub const MISMATCH: u8 = crate::exit::ATTENTION;

/// Exit code when an engagement has no result of the run just requested.
pub const INCOMPLETE: u8 = crate::exit::INCOMPLETE;

/// Arguments.
#[derive(ClapArgs)]
pub struct Args {
    #[command(flatten)]
    target: Target,
    /// One engagement (`ENG-…` or opportunity id); default: every active engagement.
    #[arg(long)]
    engagement: Option<String>,
    /// Who asks.
    #[arg(long = "as", default_value = "U-OPS-01")]
    requested_by: String,
    /// Only report the latest results; request no new run.
    #[arg(long)]
    report_only: bool,
    /// Write `reconciliation.json` and `reconciliation.html` into this directory.
    #[arg(long)]
    out: Option<PathBuf>,
    /// Print JSON.
    #[arg(long)]
    json: bool,
    /// Embedded: a running `o2c serve` to send the request to.
    #[arg(long)]
    url: Option<String>,
}

/// Runs the command.
pub async fn run(args: Args) -> Result<ExitCode> {
    let eng = args.engagement.as_deref().map(engagement_id);
    if let Some(e) = &eng {
        with_backend!(args.target, b => crate::require_engagement(b.store(), e, &b.label()).await)?;
    }
    let mut this_run = None;
    if !args.report_only {
        let run_id = format!("reconciliation-{}", RandomIds.new_id());
        this_run = Some(run_id.clone());
        let mut payload = serde_json::json!({"run_id": run_id, "requested_by": args.requested_by});
        if let Some(e) = &eng {
            payload["engagement_id"] = serde_json::json!(e);
        }
        let detail = envelope(&run_id, &run_id, &format!("operator:reconciliation:{run_id}"), payload);
        let (code, rt) =
            publish(&args.target, args.url.as_deref(), vec![entry("o2c.scheduler", "ReconciliationRequested", &detail)]).await?;
        if rt.is_none() {
            // Sent to a stage or a server: its reports land when the steps have run.
            outln!("requested {run_id}; `o2c reconcile --report-only` shows the results");
            return Ok(code);
        }
    }
    let (reports, missing) = with_backend!(args.target, b => reports(b.store(), eng.as_deref(), this_run.as_deref()).await)?;
    for id in &missing {
        eprintln!("o2c: no result of this run for {id} (parked, dead-lettered or still queued: see o2c rejections / o2c dlq list)");
    }
    if let Some(dir) = &args.out {
        std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
        std::fs::write(dir.join("reconciliation.json"), serde_json::to_vec_pretty(&reports)?)?;
        std::fs::write(dir.join("reconciliation.html"), html(&reports))?;
        eprintln!("report: {}", dir.join("reconciliation.html").display());
    }
    if args.json {
        outln!("{}", serde_json::to_string_pretty(&reports)?);
    } else {
        table(&reports);
    }
    Ok(if !missing.is_empty() {
        ExitCode::from(INCOMPLETE)
    } else if reports.iter().all(ReconciliationReport::is_clean) {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(MISMATCH)
    })
}

/// The latest report of `one` engagement, or of every one; with `run`, only that run's
/// reports count — the engagements without one are returned apart.
pub async fn reports<S: EngagementStore>(
    store: &S,
    one: Option<&str>,
    run: Option<&str>,
) -> Result<(Vec<ReconciliationReport>, Vec<String>)> {
    let ids: Vec<String> = match one {
        Some(e) => vec![e.to_owned()],
        None => {
            let filter = EngagementFilter { status: None, limit: 10_000, after: Some(String::new()), ..Default::default() };
            store.list(&filter).await?.into_iter().map(|s| s.engagement_id).collect()
        }
    };
    let keys: Vec<AggregateKey> = ids.iter().map(|id| AggregateKey::reconciliation(id)).collect();
    let loaded = store.load_aggregates(&keys).await?;
    let (mut found, mut missing) = (Vec::new(), Vec::new());
    for id in ids {
        match loaded.reconciliation(&id) {
            Some(r) if run.is_none_or(|run| r.run_id == run) => found.push(r.clone()),
            _ if run.is_some() => missing.push(id),
            _ => {}
        }
    }
    Ok((found, missing))
}

fn table(reports: &[ReconciliationReport]) {
    if reports.is_empty() {
        outln!("no reconciliation results");
        return;
    }
    outln!("{:<28} {:<8} {:>7} {:>10}  run", "engagement", "result", "checked", "mismatches");
    for r in reports {
        outln!(
            "{:<28} {:<8} {:>7} {:>10}  {} at {}",
            r.engagement_id,
            if r.is_clean() { "agrees" } else { "BREAK" },
            r.checked.len(),
            r.mismatches.len(),
            r.run_id,
            r.at.to_rfc3339()
        );
        for m in &r.mismatches {
            outln!(
                "    {:<4} {:<34} {:<24} o2c {:<24} {} {}",
                m.system.as_str(),
                m.object,
                m.field,
                m.o2c,
                m.system.as_str(),
                m.system_value
            );
        }
    }
}

fn esc(s: &str) -> String {
    s.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;").replace('"', "&quot;")
}

/// A static page: one row per engagement, its mismatches under it.
pub fn html(reports: &[ReconciliationReport]) -> String {
    let breaks = reports.iter().filter(|r| !r.is_clean()).count();
    let mut rows = String::new();
    for r in reports {
        let class = if r.is_clean() { "ok" } else { "break" };
        rows.push_str(&format!(
            "<tr class=\"{class}\"><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>\n",
            esc(r.engagement_id.as_str()),
            if r.is_clean() { "agrees" } else { "break" },
            r.checked.len(),
            r.mismatches.len(),
            esc(&r.at.to_rfc3339())
        ));
        for m in &r.mismatches {
            rows.push_str(&format!(
                "<tr class=\"detail\"><td></td><td>{}</td><td>{} · {}</td><td>o2c: {}</td><td>{}: {}</td></tr>\n",
                m.system.label(),
                esc(&m.object),
                esc(&m.field),
                esc(&m.o2c),
                m.system.as_str(),
                esc(&m.system_value)
            ));
        }
    }
    format!(
        "<!doctype html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><title>o2c reconciliation</title>\n<style>\
body{{font:14px system-ui,sans-serif;margin:2em}}table{{border-collapse:collapse}}td,th{{padding:4px 10px;border-bottom:1px solid #ddd;text-align:left}}\
tr.break td{{background:#fde8e8;font-weight:600}}tr.ok td{{background:#eef8ee}}tr.detail td{{font-size:12px;color:#333}}</style></head>\n\
<body><h1>Reconciliation</h1><p>{} engagement(s), {breaks} with a break.</p>\n<table><tr><th>engagement</th><th>result</th><th>checked</th><th>mismatches</th><th>at</th></tr>\n{rows}</table></body></html>\n",
        reports.len()
    )
}
