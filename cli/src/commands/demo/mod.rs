//! `o2c demo`: the seed scenario (Northwind Partners, a global consulting firm) end to end
//! on the embedded runtime, printing every step as the functions take it: closed-won to
//! active projects (`events/scenarios/northwind-demo.jsonl`), then delivery to posted
//! invoices ([`billing`]), then cash applied to them and the receivables with DSO ([`cash`]),
//! and the month's revenue ([`revenue`]).

mod billing;
mod cash;
mod revenue;

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use o2c_app::bus::PutEventsEntry;
use o2c_app::ports::{EngagementStore, RejectionStore};
use o2c_domain::aggregate::{AggregateKey, AggregateKind};
use o2c_embedded::Runtime;
use o2c_embedded::sim::{Fault, System};

use crate::print;

/// The scenario: one PutEvents entry per line, with a `title`.
const SCENARIO: &str = include_str!("../../../../events/scenarios/northwind-demo.jsonl");

/// Virtual time of a seeded run starts on the scenario's day.
const SEEDED_START: &str = "2026-11-20T09:00:00Z";

/// Arguments.
#[derive(clap::Args)]
pub struct Args {
    /// Use (and keep) this database instead of a temporary one.
    #[arg(long)]
    db: Option<PathBuf>,
    /// Reproducible run: virtual time and ids from this seed, one sequential scheduler
    /// (the same seed gives byte-identical state).
    #[arg(long)]
    seed: Option<u64>,
    /// SAM template (default: the repository's `infra/template.yaml`, else the built-in copy).
    #[arg(long)]
    template: Option<PathBuf>,
}

/// Runs the command.
pub async fn run(args: Args) -> Result<ExitCode> {
    let tmp = tempfile::tempdir().context("cannot create a temporary directory")?;
    let path = args.db.unwrap_or_else(|| tmp.path().join("o2c-demo.db"));
    let template = crate::template(args.template.as_deref())?;
    let mut builder = Runtime::builder(&path, o2c_embedded::reference::northwind()?).template(&template.text);
    if let Some(seed) = args.seed {
        let start = chrono::DateTime::parse_from_rfc3339(SEEDED_START)?.with_timezone(&chrono::Utc);
        builder = builder.deterministic(seed, start);
    }
    let rt = builder.open().await?;
    outln!("o2c demo — Northwind Partners on the embedded runtime");
    outln!(
        "store {}; topology from {}: {} functions, {} rules, {} queues\n",
        path.display(),
        template.origin,
        rt.topology().functions.len(),
        rt.topology().rules.len(),
        rt.topology().queues.len()
    );

    // The ERP is flaky today: the first two project creations fail with 503 and one
    // response is lost after the ERP committed it. The flow must absorb all three.
    rt.sims().inject(System::Erp, "create_project", Fault::ServerError { status: 503 }, Some(2)).await?;
    rt.sims().inject(System::Erp, "create_project", Fault::TimeoutAfterCommit, Some(1)).await?;
    outln!("(simulated ERP: 2 × HTTP 503, then 1 lost response after commit)\n");

    let mut seen = 0;
    let mut n = 0;
    for line in SCENARIO.lines().filter(|l| !l.trim().is_empty()) {
        let v: serde_json::Value = serde_json::from_str(line).context("scenario line")?;
        let title = v.get("title").and_then(|t| t.as_str()).unwrap_or_default().to_owned();
        let entry: PutEventsEntry = serde_json::from_value(v).context("scenario entry")?;
        n += 1;
        play(&rt, n, &title, vec![entry], &mut seen).await?;
    }
    billing::play_all(&rt, &mut n, &mut seen).await?;
    cash::play_all(&rt, &mut n, &mut seen).await?;
    revenue::play_all(&rt, &mut n, &mut seen).await?;

    outln!("Connector calls (create-or-get by external key):");
    for c in rt.sims().calls().await? {
        outln!("    {:<4} {:<24} {:<28} {}", c.system, c.operation, c.key, c.outcome);
    }
    outln!("\nFinal state:");
    let rows = rt.store().list(&Default::default()).await?;
    print::engagement_table(&rows);
    for r in &rows {
        outln!();
        if let Some(state) = rt.store().load(&r.engagement_id).await? {
            let id = &r.engagement_id;
            let others = rt.store().load_aggregates(&[AggregateKey::crm_sync(id), AggregateKey::ledger(id)]).await?;
            print::engagement(&state.value, state.version, others.crm_sync(id));
            let shards = rt.store().load_all(AggregateKind::WipShard, id).await?;
            print::wip(&shards.wip_shards().into_values().collect::<Vec<_>>(), others.ledger(id));
            let invoices = rt.store().load_all(AggregateKind::Invoice, id).await?;
            let mut invoices = invoices.invoices();
            invoices.sort_by_key(|i| i.invoice_id.clone());
            for i in invoices {
                print::invoice(i);
            }
        }
    }
    let parked = rt.store().rejections(100).await?;
    outln!("\nparked messages: {}, dead letters: {}", parked.len(), rt.dead_letters().await?);
    if let Some(p) = rt.sims().opportunity("0068d00000GLBX01").await? {
        outln!(
            "CRM opportunity 0068d00000GLBX01 now shows: {} / {} (PSA {}, ERP {})",
            p.1.sync_status,
            p.1.engagement_status,
            p.1.psa_project_id.unwrap_or_default(),
            p.1.erp_project_id.unwrap_or_default()
        );
    }
    Ok(ExitCode::SUCCESS)
}

/// Publishes one titled step's entries, processes until idle and prints what each step did.
async fn play(rt: &Runtime, n: usize, title: &str, entries: Vec<PutEventsEntry>, seen: &mut i64) -> Result<()> {
    outln!("▶ {n}. {title}");
    let mut kinds: Vec<(String, usize)> = Vec::new();
    for e in &entries {
        let kind = format!("{} / {}", e.source.as_deref().unwrap_or_default(), e.detail_type.as_deref().unwrap_or_default());
        match kinds.iter_mut().find(|(k, _)| *k == kind) {
            Some((_, n)) => *n += 1,
            None => kinds.push((kind, 1)),
        }
    }
    for (kind, count) in kinds {
        outln!("  PutEvents {}{kind}", if count > 1 { format!("{count} × ") } else { String::new() });
    }
    let resp = rt.put_events(entries).await?;
    if resp.failed_entry_count > 0 {
        bail!("the bus refused a scenario event: {:?}", resp.entries);
    }
    let report = rt.run_until_idle(Duration::from_secs(60)).await?;
    let steps = rt.store().audit_since(*seen).await?;
    for (seq, a) in &steps {
        *seen = *seq;
        outln!("    {:<16} {:<24} {:<34} {}", a.step, a.engagement_id, a.action, a.summary);
    }
    if steps.is_empty() {
        outln!("    (absorbed by the idempotency store: no state change, no connector call; {} record(s) handled)", report.succeeded);
    }
    if report.retried > 0 {
        outln!("    ({} delivery(ies) failed transiently and were retried)", report.retried);
    }
    outln!();
    Ok(())
}
