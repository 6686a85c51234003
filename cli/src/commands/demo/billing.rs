//! The demo's second half: delivery to posted invoices. The PSA staffs Globex Asia and
//! approves a week of time (one entry would book a consultant 26 hours in a day, and is
//! refused) and a hotel night above the policy's cap; a Globex milestone completes; the
//! Monday schedule bills the weekly engagement (GST, straight to posting); a finance approver
//! bills Globex on demand and is refused when approving her own run (segregation of duties);
//! a second approver grants it; the invoice is numbered and posted.
//!
//! Events are built here rather than read from a file: they name the PSA project ids the
//! simulators assigned during the first half. Ids and keys are fixed, so a seeded run stays
//! byte-identical.

use anyhow::{Context, Result};
use o2c_app::bus::PutEventsEntry;
use o2c_app::ports::EngagementStore;
use o2c_domain::aggregate::AggregateKind;
use o2c_embedded::Runtime;
use serde_json::{Value, json};

use super::play;

const ASIA: &str = "ENG-0068d00000GLBA02";
const GLOBEX: &str = "ENG-0068d00000GLBX01";

pub(super) fn entry(source: &str, detail_type: &str, key: &str, correlation: &str, occurred_at: &str, payload: Value) -> PutEventsEntry {
    let detail = json!({
        "event_id": format!("demo-{key}"), "event_version": "1", "correlation_id": correlation,
        "occurred_at": occurred_at, "idempotency_key": key, "payload": payload,
    });
    PutEventsEntry {
        source: Some(source.into()),
        detail_type: Some(detail_type.into()),
        detail: Some(detail.to_string()),
        ..Default::default()
    }
}

fn psa(detail_type: &str, key: &str, payload: Value) -> PutEventsEntry {
    entry("o2c.psa", detail_type, key, "corr-0068d00000GLBA02", "2027-01-15T17:00:00Z", payload)
}

fn time(project: &str, id: &str, resource: &str, role: &str, day: u32, hours: &str) -> PutEventsEntry {
    let t = json!({
        "time_entry_id": id, "engagement_id": ASIA, "project_id": project, "line_id": "1", "resource_id": resource,
        "role": role, "work_date": format!("2027-01-{day}"), "hours": hours, "billable": true,
        "approved_at": "2027-01-15T17:00:00Z", "version": 1, "approved_by": "U-PM-01",
    });
    psa("TimeApproved", &format!("psa:time-entry:{id}:v1"), json!({"time_entry": t}))
}

async fn project(rt: &Runtime, eng: &str) -> Result<String> {
    let e = rt.store().load(eng).await?.with_context(|| format!("{eng} was not created by the first half"))?;
    e.value.psa_project_id.with_context(|| format!("{eng} has no PSA project"))
}

/// The invoice the run drafted for `eng` (the newest).
async fn newest_invoice(rt: &Runtime, eng: &str) -> Result<String> {
    let all = rt.store().load_all(AggregateKind::Invoice, eng).await?;
    all.invoices().into_iter().map(|i| i.invoice_id.clone()).max().with_context(|| format!("no invoice for {eng}"))
}

/// Plays the billing half; `n` numbers the steps, `seen` is the audit cursor.
pub async fn play_all(rt: &Runtime, n: &mut usize, seen: &mut i64) -> Result<()> {
    let asia = project(rt, ASIA).await?;
    let globex = project(rt, GLOBEX).await?;
    let mut step = |title: &str| {
        *n += 1;
        (*n, title.to_owned())
    };

    let (k, t) = step("PSA staffs Globex Asia: a director and a consultant for the whole project");
    let assign = |id: &str, resource: &str, role: &str| {
        let p = json!({"engagement_id": ASIA, "assignment_id": id, "project_id": asia, "resource_id": resource, "role": role,
            "start_date": "2027-01-11", "end_date": "2027-04-30", "planned_hours": "320", "version": 1});
        psa("ResourceAssigned", &format!("psa:assignment:{id}:v1"), p)
    };
    play(rt, k, &t, vec![assign("AS-7001", "EMP-20417", "DIRECTOR"), assign("AS-7002", "EMP-20533", "CONSULTANT")], seen).await?;

    let (k, t) = step("PSA approves a week of time (11–15 Jan) — one extra entry would book the consultant 26 h on the 12th");
    let mut week = Vec::new();
    for day in 11..=15 {
        week.push(time(&asia, &format!("TE-7{day}1"), "EMP-20417", "DIRECTOR", day, "8"));
        week.push(time(&asia, &format!("TE-7{day}2"), "EMP-20533", "CONSULTANT", day, "8"));
    }
    week.push(time(&asia, "TE-7129", "EMP-20533", "CONSULTANT", 12, "18"));
    play(rt, k, &t, week, seen).await?;

    let (k, t) = step("The expense tool approves a SGD 980 hotel night (the customer's policy caps lodging at SGD 400)");
    let x = json!({"expense_id": "EXP-7001", "engagement_id": ASIA, "resource_id": "EMP-20533", "incurred_on": "2027-01-12",
        "category": "lodging", "amount": {"amount": "980.00", "currency": "SGD"}, "billable": true,
        "approved_at": "2027-01-15T17:00:00Z", "version": 1, "approved_by": "U-PM-01"});
    play(rt, k, &t, vec![psa("ExpenseApproved", "psa:expense:EXP-7001:v1", json!({"expense": x}))], seen).await?;

    let (k, t) = step("PSA reports the Globex Mobilize milestone complete");
    let m = json!({"engagement_id": GLOBEX, "milestone_id": "L1-MOBILIZE", "psa_project_id": globex, "completed_on": "2027-02-10", "reported_by": "U-PM-01"});
    play(
        rt,
        k,
        &t,
        vec![entry(
            "o2c.psa",
            "MilestoneCompleted",
            "psa:milestone:L1-MOBILIZE:completed",
            "corr-0068d00000GLBX01",
            "2027-02-10T16:00:00Z",
            m,
        )],
        seen,
    )
    .await?;

    let (k, t) = step("Monday 18 January: the daily schedule requests invoice runs (weekly cycles are due)");
    let run = json!({"run_id": "billing-2027-01-18", "as_of": "2027-01-18", "scheduled": true, "requested_by": "scheduler"});
    play(
        rt,
        k,
        &t,
        vec![entry(
            "o2c.scheduler",
            "InvoiceRunRequested",
            "schedule:billing:2027-01-18",
            "billing-2027-01-18",
            "2027-01-18T05:00:00Z",
            run,
        )],
        seen,
    )
    .await?;

    let (k, t) = step("Finance (U-FIN-DE-01) bills Globex on demand as of 15 February");
    let run = json!({"run_id": "ops-globex-0215", "as_of": "2027-02-15", "engagement_id": GLOBEX, "scheduled": false, "requested_by": "U-FIN-DE-01"});
    play(
        rt,
        k,
        &t,
        vec![entry("o2c.scheduler", "InvoiceRunRequested", "invoice-run:ops-globex-0215", "ops-globex-0215", "2027-02-15T09:00:00Z", run)],
        seen,
    )
    .await?;
    let invoice = newest_invoice(rt, GLOBEX).await?;

    let decide = |who: &str, nth: u32| {
        let d = json!({"engagement_id": GLOBEX, "invoice_id": invoice, "approver_id": who, "decided_at": "2027-02-15T11:00:00Z"});
        entry(
            "o2c.approvals",
            "InvoiceApproved",
            &format!("approvals:{invoice}:{who}:{nth}"),
            "corr-0068d00000GLBX01",
            "2027-02-15T11:00:00Z",
            d,
        )
    };
    let (k, t) = step("U-FIN-DE-01 approves the invoice she asked for (segregation of duties says no)");
    play(rt, k, &t, vec![decide("U-FIN-DE-01", 1)], seen).await?;
    let (k, t) = step("U-FIN-EU-02 approves it: numbered and posted to the ERP");
    play(rt, k, &t, vec![decide("U-FIN-EU-02", 2)], seen).await?;
    Ok(())
}
