//! # o2c-tests
//!
//! Cross-crate tests. `tests/contracts.rs` proves the event schemas, samples and Rust
//! types agree; `tests/flows.rs` drives the embedded runtime end to end. This library
//! holds the harness they share.

#![allow(clippy::expect_used, clippy::unwrap_used)] // a test harness: failing fast is the point

pub mod cash;
pub mod delivery;

use std::path::{Path, PathBuf};
use std::time::Duration;

use o2c_app::bus::PutEventsEntry;
use o2c_app::ports::EngagementStore;
use o2c_domain::engagement::Engagement;
use o2c_embedded::runtime::RunReport;
use o2c_embedded::{Runtime, RuntimeOptions};
use serde_json::{Value, json};

/// The repository root.
pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// Reads a JSON file under the repository root.
pub fn read_json(rel: &str) -> Value {
    let p = repo_root().join(rel);
    let text = std::fs::read_to_string(&p).unwrap_or_else(|e| panic!("read {}: {e}", p.display()));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("parse {}: {e}", p.display()))
}

/// A runtime over a fresh temporary database, tuned for fast retries.
pub struct Harness {
    /// The runtime.
    pub rt: Runtime,
    dir: tempfile::TempDir,
}

/// Options with short redelivery delays so failure paths run in milliseconds.
pub fn fast_options() -> RuntimeOptions {
    RuntimeOptions {
        retry_base: Duration::from_millis(5),
        retry_cap: Duration::from_millis(50),
        poll_interval: Duration::from_millis(10),
        max_workers_per_function: 4,
        service: fast_service(),
        ..RuntimeOptions::default()
    }
}

/// Protocol tunables with millisecond waits (in-invocation retries, in-progress delays).
pub fn fast_service() -> o2c_app::ServiceConfig {
    let mut s = o2c_app::ServiceConfig::default();
    s.connector_retry.base = Duration::from_millis(1);
    s.connector_retry.cap = Duration::from_millis(10);
    s.in_progress_delay = Duration::from_millis(20);
    s
}

impl Harness {
    /// A fresh harness with the Northwind reference data.
    pub async fn new() -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        let rt = Runtime::builder(dir.path().join("o2c.db"), o2c_embedded::reference::northwind().expect("reference"))
            .options(fast_options())
            .open()
            .await
            .expect("runtime opens");
        Self { rt, dir }
    }

    /// A fresh harness whose runtime is deterministic: seeded ids, a virtual clock moved
    /// by one sequential scheduler, production delays (virtual, so they cost no wall time).
    pub async fn deterministic(seed: u64) -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        let start = chrono::DateTime::parse_from_rfc3339("2026-11-20T09:30:00Z").expect("start").with_timezone(&chrono::Utc);
        let rt = Runtime::builder(dir.path().join("o2c.db"), o2c_embedded::reference::northwind().expect("reference"))
            .options(RuntimeOptions::default())
            .deterministic(seed, start)
            .open()
            .await
            .expect("runtime opens");
        Self { rt, dir }
    }

    /// The database path.
    pub fn db_path(&self) -> PathBuf {
        self.dir.path().join("o2c.db")
    }

    /// Publishes events on the bus and asserts the bus accepted every one.
    pub async fn send(&self, events: Vec<(&str, &str, Value)>) {
        let entries = events
            .into_iter()
            .map(|(source, dt, detail)| PutEventsEntry {
                source: Some(source.into()),
                detail_type: Some(dt.into()),
                detail: Some(detail.to_string()),
                ..Default::default()
            })
            .collect();
        let resp = self.rt.put_events(entries).await.expect("put_events");
        assert_eq!(resp.failed_entry_count, 0, "bus refused entries: {:?}", resp.entries);
    }

    /// Processes until every queue is empty.
    pub async fn settle(&self) -> RunReport {
        self.rt.run_until_idle(Duration::from_secs(60)).await.expect("the flow settles")
    }

    /// The engagement's current state.
    pub async fn engagement(&self, id: &str) -> Engagement {
        self.rt.store().load(id).await.expect("load").unwrap_or_else(|| panic!("no engagement {id}")).value
    }

    /// Every event the bus accepted: `(detail-type, detail)`.
    pub async fn bus_events(&self) -> Vec<(String, Value)> {
        self.rt
            .bus()
            .archived(None, None)
            .await
            .expect("archive")
            .into_iter()
            .map(|e| (e.detail_type.unwrap_or_default(), serde_json::from_str(&e.detail.unwrap_or_default()).unwrap_or_default()))
            .collect()
    }
}

/// An envelope around `payload`.
pub fn envelope(event_id: &str, correlation_id: &str, idempotency_key: Option<&str>, payload: Value) -> Value {
    let mut d = json!({
        "event_id": event_id,
        "event_version": "1",
        "correlation_id": correlation_id,
        "occurred_at": "2026-11-20T09:30:00Z",
        "payload": payload,
    });
    if let Some(k) = idempotency_key {
        d["idempotency_key"] = json!(k);
    }
    d
}

/// The Globex closed-won payload (EUR, milestone + T&M + fixed fee, needs CLM approval).
pub fn globex_payload(opportunity_id: &str, revision: u64) -> Value {
    let mut p = read_json("events/samples/OpportunityClosedWon.v1.json")["detail"]["payload"].clone();
    p["opportunity_id"] = json!(opportunity_id);
    p["revision"] = json!(revision);
    p
}

/// A closed-won event detail for `payload` (idempotency key per opportunity revision).
pub fn closed_won(payload: Value) -> (&'static str, &'static str, Value) {
    let opp = payload["opportunity_id"].as_str().unwrap_or_default().to_owned();
    let rev = payload["revision"].as_u64().unwrap_or_default();
    let detail =
        envelope(&format!("cw-{opp}-r{rev}"), &format!("corr-{opp}"), Some(&format!("crm:opportunity:{opp}:closed-won:r{rev}")), payload);
    ("o2c.crm", "OpportunityClosedWon", detail)
}

/// An SQS record delivering `(source, detail-type, detail)` as its rule target does, on
/// its `receive_count`-th receive.
pub fn sqs_record(
    message_id: &str,
    (source, detail_type, detail): (&str, &str, Value),
    receive_count: u32,
) -> aws_lambda_events::event::sqs::SqsMessage {
    let body = json!({"version": "0", "id": message_id, "detail-type": detail_type, "source": source, "account": "0",
        "time": "2026-11-20T09:30:00Z", "region": "local", "resources": [], "detail": detail});
    let mut m = aws_lambda_events::event::sqs::SqsMessage::default();
    m.message_id = Some(message_id.into());
    m.body = Some(body.to_string());
    m.attributes.insert("ApproximateReceiveCount".into(), receive_count.to_string());
    m
}

/// A CLM approval event detail.
pub fn contract_approved(opportunity_id: &str) -> (&'static str, &'static str, Value) {
    let payload = json!({
        "opportunity_id": opportunity_id,
        "clm_agreement_id": format!("AGR-{opportunity_id}"),
        "approved_at": "2026-11-21T14:05:00Z",
        "approver_id": "0058d000009LegAl",
    });
    let detail = envelope(
        &format!("clm-{opportunity_id}"),
        &format!("corr-{opportunity_id}"),
        Some(&format!("clm:agreement:AGR-{opportunity_id}:approved")),
        payload,
    );
    ("o2c.clm", "ContractApproved", detail)
}

/// A straight-through payload (strategy advisory in SGD, no approval rule).
pub fn asia_payload(opportunity_id: &str, revision: u64, fixed_fee: &str) -> Value {
    let tm = "120000.00";
    let total = rust_decimal::Decimal::from_str_exact(tm).unwrap_or_default()
        + rust_decimal::Decimal::from_str_exact(fixed_fee).unwrap_or_default();
    json!({
        "opportunity_id": opportunity_id,
        "revision": revision,
        "name": "Globex Asia operating model review",
        "stage": "Closed Won",
        "account_id": "CUST-1003",
        "close_date": "2026-11-18",
        "currency": "SGD",
        "amount": total.to_string(),
        "delivery_region": "APAC-SG",
        "start_date": "2027-01-11",
        "end_date": "2027-04-30",
        "rate_card_id": "RC-SGD-2027",
        "lines": [
            {"line_id": "1", "service_offering_id": "SVC-STRAT", "billing_model": "time_and_materials", "amount": tm,
             "roles": [{"role": "DIRECTOR", "hours": "60"}, {"role": "CONSULTANT", "hours": "400"}]},
            {"line_id": "2", "service_offering_id": "SVC-STRAT", "billing_model": "fixed_fee", "amount": fixed_fee, "installments": 3, "installment_frequency": "monthly"}
        ]
    })
}

/// An active Asia engagement (SGD, weekly cycle, one T&M line "1", fixed fee "2" in three
/// monthly installments) with a director and a consultant staffed; returns (eng, project).
pub async fn active_asia(h: &Harness, opp: &str) -> (String, String) {
    h.send(vec![closed_won(asia_payload(opp, 1, "60000.00"))]).await;
    h.settle().await;
    let eng = format!("ENG-{opp}");
    let e = h.engagement(&eng).await;
    assert_eq!(e.status, o2c_domain::engagement::EngagementStatus::Active);
    let project = e.psa_project_id.clone().expect("a PSA project");
    h.send(vec![
        delivery::assigned(&eng, &project, &format!("AS-1-{opp}"), "EMP-1", "DIRECTOR", ("2027-01-11", "2027-04-30"), 1),
        delivery::assigned(&eng, &project, &format!("AS-2-{opp}"), "EMP-2", "CONSULTANT", ("2027-01-11", "2027-04-30"), 1),
    ])
    .await;
    h.settle().await;
    (eng, project)
}

/// An active Globex engagement (EUR, DE customer, semi-monthly; milestone line L1, T&M
/// line L2 capped at 250,000, fixed fee L3 of EUR 100,000 in four quarterly installments,
/// delivered 4 Jan – 17 Dec 2027); returns (eng, project).
pub async fn active_globex(h: &Harness, opp: &str) -> (String, String) {
    h.send(vec![closed_won(globex_payload(opp, 1)), contract_approved(opp)]).await;
    h.settle().await;
    let eng = format!("ENG-{opp}");
    let e = h.engagement(&eng).await;
    assert_eq!(e.status, o2c_domain::engagement::EngagementStatus::Active);
    (eng.clone(), e.psa_project_id.clone().expect("a PSA project"))
}

/// An Asia engagement whose first invoice (a director's week) the ERP refused once — its
/// period was closed. Returns the harness and the engagement.
pub async fn erp_refused_first_invoice(opp: &str) -> (Harness, String) {
    use o2c_embedded::sim::{Fault, System};
    let h = Harness::new().await;
    let (eng, project) = active_asia(&h, opp).await;
    h.send(delivery::week("EMP-1", "DIRECTOR", "TE-D").iter().map(|t| t.event(&eng, &project)).collect()).await;
    h.settle().await;
    let refusal = Fault::Rejected { status: 400, code: "INVALID_FLD_VALUE".into(), message: "Accounting period Jan 2027 is closed".into() };
    h.rt.sims().inject(System::Erp, "post_invoice", refusal, Some(1)).await.expect("fault");
    h.send(vec![delivery::invoice_run("R-1", "2027-01-31", Some(&eng), false, "U-BILL-01")]).await;
    h.settle().await;
    (h, eng)
}
