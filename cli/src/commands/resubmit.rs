//! `o2c resubmit`: put recorded events back on the bus, record by record — by event id or
//! by correlation id (a whole flow) — keeping their correlation id.
//!
//! Where recorded events come from: the bus archive (embedded; an EventBridge archive can
//! only be replayed by time window, `o2c replay`), the rejection store (parked messages
//! keep their body verbatim) and the exception cases (the event each was raised on). By
//! default each goes out under a fresh idempotency key (`<key>#resubmit-<id>`) and event
//! id, caused by the original, so the steps process it again — what an operator wants
//! after fixing reference data or the order of arrival. `--same-key` sends it as it was:
//! a step that completed it answers from its record (a redelivery).

use std::collections::BTreeMap;
use std::process::ExitCode;

use anyhow::{Result, bail};
use clap::Args as ClapArgs;
use o2c_app::bus::{PutEventsEntry, entries_from_json};
use o2c_app::clock::{IdGenerator, RandomIds};
use o2c_app::ports::{CaseFilter, EngagementStore, RejectionStore};
use o2c_domain::events::EventType;

use super::publish::publish;
use crate::backend::Backend;
use crate::{Target, with_backend};

/// Sources of the systems around o2c: what enters a flow from outside. (`o2c.scheduler`
/// counts: an operator's or the schedule's run request starts a flow.)
const OUTSIDE: [&str; 6] = ["o2c.crm", "o2c.clm", "o2c.psa", "o2c.bank", "o2c.approvals", "o2c.scheduler"];

/// Arguments.
#[derive(ClapArgs)]
pub struct Args {
    #[command(flatten)]
    target: Target,
    /// The event (`detail.event_id`).
    #[arg(long, conflicts_with = "correlation_id", required_unless_present = "correlation_id")]
    event_id: Option<String>,
    /// Every recorded event of this flow (`detail.correlation_id`), in the order recorded.
    #[arg(long)]
    correlation_id: Option<String>,
    /// Send under the original idempotency key (a step that completed it does nothing).
    #[arg(long)]
    same_key: bool,
    /// List what would be sent; send nothing.
    #[arg(long)]
    dry_run: bool,
    /// Print what is (or would be) sent as JSON: the PutEvents entries.
    #[arg(long)]
    json: bool,
    /// Embedded: a running `o2c serve` to send to.
    #[arg(long)]
    url: Option<String>,
}

/// Runs the command.
pub async fn run(args: Args) -> Result<ExitCode> {
    let recorded = with_backend!(args.target, b => recorded(&b).await)?;
    let wanted = |d: &serde_json::Value| match (&args.event_id, &args.correlation_id) {
        (Some(id), _) => d["event_id"].as_str() == Some(id.as_str()),
        (None, Some(c)) => d["correlation_id"].as_str() == Some(c.as_str()),
        (None, None) => false,
    };
    // A flow (by correlation id) is resubmitted from what entered it from outside: o2c's own
    // events follow again from those, operators' past actions are not repeated, and earlier
    // resubmitted copies are not sent twice. One event by id is sent whatever it is.
    let from_outside = |e: &PutEventsEntry| {
        let outside = e.source.as_deref().is_some_and(|s| OUTSIDE.contains(&s));
        let resubmitted = detail(e).is_some_and(|d| d["idempotency_key"].as_str().is_some_and(|k| k.contains("#resubmit-")));
        outside && !resubmitted
    };
    let picked: Vec<PutEventsEntry> = recorded
        .into_values()
        .filter(|e| detail(e).is_some_and(|d| wanted(&d)))
        .filter(|e| args.event_id.is_some() || from_outside(e))
        .collect();
    if picked.is_empty() {
        bail!("no recorded event matches (the archive, parked rejections and exception cases were searched)");
    }
    let entries: Vec<PutEventsEntry> = picked.into_iter().map(|e| if args.same_key { e } else { fresh(e) }).collect();
    if args.json {
        outln!("{}", serde_json::to_string_pretty(&entries)?);
    }
    for e in entries.iter().filter(|_| !args.json) {
        let d = detail(e).unwrap_or_default();
        outln!(
            "{}  {} / {}  correlation {}  key {}",
            d["event_id"].as_str().unwrap_or_default(),
            e.source.as_deref().unwrap_or_default(),
            e.detail_type.as_deref().unwrap_or_default(),
            d["correlation_id"].as_str().unwrap_or_default(),
            d["idempotency_key"].as_str().unwrap_or_default()
        );
    }
    if args.dry_run {
        return Ok(ExitCode::SUCCESS);
    }
    let (code, _) = publish(&args.target, args.url.as_deref(), entries).await?;
    Ok(code)
}

fn detail(e: &PutEventsEntry) -> Option<serde_json::Value> {
    serde_json::from_str(e.detail.as_deref()?).ok()
}

/// Every recorded event by event id, oldest first where the source tells (the archive).
async fn recorded<B: Backend>(b: &B) -> Result<BTreeMap<String, PutEventsEntry>> {
    let mut out: Vec<PutEventsEntry> = Vec::new();
    // The archive: every event the embedded bus accepted (on AWS it cannot be read).
    match b.archived(None, None).await {
        Ok(archived) => out.extend(archived),
        Err(_) => eprintln!(
            "o2c: the bus archive cannot be read here (on AWS it can only be replayed: o2c replay); searching the rejections and exception cases"
        ),
    }
    for r in b.store().rejections(10_000).await? {
        if let Ok(v) = serde_json::from_str::<serde_json::Value>(&r.body)
            && let Ok(entries) = entries_from_json(&v)
        {
            out.extend(entries);
        }
    }
    for c in b.store().exception_cases(&CaseFilter { open_only: false, status: None, limit: 10_000 }).await? {
        let Some(s) = &c.source_event else { continue };
        let (Some(payload), Some(t)) = (&s.payload, EventType::from_detail_type(&s.detail_type)) else { continue };
        let detail = serde_json::json!({
            "event_id": s.event_id, "event_version": "1", "correlation_id": c.correlation_id,
            "occurred_at": s.occurred_at, "idempotency_key": s.idempotency_key, "payload": payload,
        });
        out.push(PutEventsEntry {
            source: Some(t.source().into()),
            detail_type: Some(t.detail_type().into()),
            detail: Some(detail.to_string()),
            ..Default::default()
        });
    }
    // One per event id (the archive's copy first); a BTreeMap would sort by id, so keep
    // the recorded order in the key.
    let mut seen = std::collections::HashSet::new();
    let mut ordered = BTreeMap::new();
    for (n, e) in out.into_iter().enumerate() {
        let Some(id) = detail(&e).and_then(|d| d["event_id"].as_str().map(str::to_owned)) else { continue };
        if seen.insert(id) {
            ordered.insert(format!("{n:08}"), e);
        }
    }
    Ok(ordered)
}

/// The event under a fresh key and id, caused by the original; same payload, same
/// correlation id.
pub fn fresh(e: PutEventsEntry) -> PutEventsEntry {
    fresh_as(e, &RandomIds.new_id())
}

/// [`fresh`] with the new event id given: the same id gives the same key, so sending the
/// result twice is absorbed downstream like any duplicate.
pub fn fresh_as(mut e: PutEventsEntry, id: &str) -> PutEventsEntry {
    let Some(mut d) = detail(&e) else { return e };
    let key = d["idempotency_key"]
        .as_str()
        .map(str::to_owned)
        .unwrap_or_else(|| format!("derived:{}", d["event_id"].as_str().unwrap_or_default()));
    d["causation_id"] = d["event_id"].clone();
    d["event_id"] = serde_json::json!(id);
    d["idempotency_key"] = serde_json::json!(format!("{key}#resubmit-{id}"));
    e.detail = Some(d.to_string());
    e.time = None;
    e
}
