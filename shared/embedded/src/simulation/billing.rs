//! What the simulated firm sends after the sale, phase by phase. Each phase reads what the
//! systems hold now (PSA project ids, drafted invoices, posted numbers) the way the real
//! senders would, and its inputs go through the same scheduler as the sale's: duplicated,
//! shuffled, with connector faults and crashes.
//!
//! | phase | inputs per active engagement |
//! |---|---|
//! | staff | T&M contracts: one consultant assigned for the whole project |
//! | work 1 | 1–4 approved time entries (Jan–Jun 2027, hours to the thousandth); 1 in 2 a milestone completes |
//! | bill 1 | an on-demand invoice run as of 30 June 2027 (installments, milestones, time to date) |
//! | approve 1 | each invoice waiting for approval: approved by a second approver; 1 in 5 first self-approved by its requester (refused: segregation of duties) |
//! | work 2 | 0–3 more entries (Jul–Nov); 1 in 4 earlier entries corrected (version 2, other hours — billed or not); 1 in 3 another milestone |
//! | bill 2 / approve 2 | the same as of 31 January 2028: everything left |
//! | pay | each posted invoice paid quoting its number: in full (70 %), in two parts (15 %), or a little too much (15 %, the rest stays on account) |
//!
//! [`Delivered`] keeps what was sent (final versions), which the billing invariants compare
//! with what o2c invoiced and what the ERP and CRM hold.

use std::collections::{BTreeMap, BTreeSet};

use chrono::{Datelike, NaiveDate, Weekday};
use o2c_app::O2cError;
use o2c_app::bus::PutEventsEntry;
use o2c_app::ports::EngagementStore;
use o2c_domain::aggregate::AggregateKind;
use o2c_domain::engagement::{Engagement, EngagementStatus};
use o2c_domain::ids::EngagementId;
use o2c_domain::invoicing::InvoiceStatus;
use o2c_domain::model::BillingItem;
use rust_decimal::Decimal;
use serde_json::{Value, json};

use super::inputs::EngagementInput;
use crate::runtime::Runtime;

/// Who requests the on-demand runs.
pub const REQUESTER: &str = "U-FIN-DE-01";
/// Who approves them (a second billing approver of LE-DE-01).
pub const APPROVER: &str = "U-FIN-EU-02";

/// A phase after the sale.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    /// Consultants assigned.
    Staff,
    /// First half of the work.
    Work1,
    /// First invoice run.
    Bill1,
    /// Approvals of the first run's invoices.
    Approve1,
    /// Second half of the work, with corrections.
    Work2,
    /// Final invoice run.
    Bill2,
    /// Approvals of the final run's invoices.
    Approve2,
    /// Payments of every posted invoice.
    Pay,
}

/// The phases in business order.
pub const PHASES: [Phase; 8] =
    [Phase::Staff, Phase::Work1, Phase::Bill1, Phase::Approve1, Phase::Work2, Phase::Bill2, Phase::Approve2, Phase::Pay];

/// The last run's as-of date: every installment of a 2027 project is due by then.
pub fn final_as_of() -> NaiveDate {
    date(2028, 1, 31)
}

fn date(y: i32, m: u32, d: u32) -> NaiveDate {
    NaiveDate::from_ymd_opt(y, m, d).unwrap_or_default()
}

impl Phase {
    /// Name in reports.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Staff => "staff",
            Self::Work1 => "work-1",
            Self::Bill1 => "bill-1",
            Self::Approve1 => "approve-1",
            Self::Work2 => "work-2",
            Self::Bill2 => "bill-2",
            Self::Approve2 => "approve-2",
            Self::Pay => "pay",
        }
    }

    /// The business day the phase happens on (the virtual clock moves there).
    pub fn day(self) -> NaiveDate {
        match self {
            Self::Staff => date(2027, 1, 4),
            Self::Work1 => date(2027, 6, 25),
            Self::Bill1 => date(2027, 6, 30),
            Self::Approve1 => date(2027, 7, 1),
            Self::Work2 => date(2027, 12, 10),
            Self::Bill2 => final_as_of(),
            Self::Approve2 => date(2028, 2, 1),
            Self::Pay => date(2028, 3, 15),
        }
    }
}

/// One approved time entry as last sent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TimeSent {
    /// Role.
    pub role: String,
    /// Work date.
    pub date: NaiveDate,
    /// Hours of the latest version.
    pub hours: Decimal,
    /// Latest version.
    pub version: u32,
}

/// What the firm sent after the sale (latest versions), per engagement id.
#[derive(Debug, Clone, Default)]
pub struct Delivered {
    /// Time entries by id.
    pub time: BTreeMap<String, BTreeMap<String, TimeSent>>,
    /// Milestones reported complete, with their completion dates.
    pub milestones: BTreeMap<String, BTreeMap<String, NaiveDate>>,
    /// Payments sent, by payment id.
    pub payments: BTreeMap<String, PaymentSent>,
    /// Invoices a requester tried to approve herself.
    pub self_approved: BTreeSet<String>,
}

/// One payment the bank reported.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PaymentSent {
    /// Legal entity credited.
    pub legal_entity_id: String,
    /// Amount.
    pub amount: o2c_domain::money::Money,
    /// The invoice number it quotes.
    pub number: String,
}

/// An event of the phase's day, before the virtual clock's 08:00 (never from the future).
fn entry(source: &str, detail_type: &str, key: &str, correlation: &str, at: NaiveDate, payload: Value) -> PutEventsEntry {
    let occurred = format!("{at}T07:00:00Z");
    let detail = json!({
        "event_id": format!("sim-{key}"), "event_version": "1", "correlation_id": correlation,
        "occurred_at": occurred, "idempotency_key": key, "payload": payload,
    });
    PutEventsEntry {
        source: Some(source.to_owned()),
        detail_type: Some(detail_type.to_owned()),
        detail: Some(detail.to_string()),
        ..Default::default()
    }
}

fn weekday_between(rng: &mut fastrand::Rng, from: NaiveDate, to: NaiveDate) -> NaiveDate {
    let span = (to - from).num_days().max(0);
    loop {
        let d = from + chrono::Duration::days(rng.i64(0..=span));
        if !matches!(d.weekday(), Weekday::Sat | Weekday::Sun) {
            return d;
        }
    }
}

/// From 0.001 to 10 hours, to the thousandth (a PSA converting minutes sends such hours):
/// hours × a whole-euro rate then has a third decimal, so entries are rounded to the cent
/// (the T&M roles' rates, 218 and 172, are even: never exactly on a half cent).
fn hours(rng: &mut fastrand::Rng) -> Decimal {
    Decimal::new(rng.i64(1..=10_000), 3)
}

/// The T&M line and its roles, when the contract has one.
fn time_and_materials(e: &Engagement) -> Option<(String, Vec<String>)> {
    e.billing_schedule.as_ref()?.items.iter().find_map(|i| match i {
        BillingItem::TimeAndMaterials { line_id, rates, .. } => Some((line_id.clone(), rates.iter().map(|r| r.role.clone()).collect())),
        _ => None,
    })
}

/// The consultant staffed on an engagement (one per engagement, so no two engagements
/// compete for a resource's 24 hours a day).
fn resource(e: &Engagement) -> String {
    format!("EMP-SIM-{}", e.opportunity_id)
}

fn time_entries(
    rng: &mut fastrand::Rng,
    e: &Engagement,
    delivered: &mut Delivered,
    count: usize,
    from: NaiveDate,
    to: NaiveDate,
    out: &mut Vec<PutEventsEntry>,
) {
    let Some((line, roles)) = time_and_materials(e) else { return };
    let (Some(project), false) = (e.psa_project_id.clone(), roles.is_empty()) else { return };
    let sent = delivered.time.entry(e.engagement_id.to_string()).or_default();
    for _ in 0..count {
        let id = format!("TE-{}-{}", e.opportunity_id, sent.len() + 1);
        let t =
            TimeSent { role: roles[rng.usize(..roles.len())].clone(), date: weekday_between(rng, from, to), hours: hours(rng), version: 1 };
        out.push(time_event(e, &project, &line, &id, &t));
        sent.insert(id, t);
    }
}

fn time_event(e: &Engagement, project: &str, line: &str, id: &str, t: &TimeSent) -> PutEventsEntry {
    let body = json!({
        "time_entry_id": id, "engagement_id": e.engagement_id, "project_id": project, "line_id": line,
        "resource_id": resource(e), "role": t.role, "work_date": t.date.to_string(), "hours": t.hours.to_string(),
        "billable": true, "approved_at": format!("{}T07:00:00Z", t.date), "version": t.version, "approved_by": "U-PM-01",
    });
    entry("o2c.psa", "TimeApproved", &format!("psa:time-entry:{id}:v{}", t.version), &e.correlation_id, t.date, json!({"time_entry": body}))
}

fn milestone(rng: &mut fastrand::Rng, e: &Engagement, delivered: &mut Delivered, on: NaiveDate, out: &mut Vec<PutEventsEntry>) {
    let done = delivered.milestones.entry(e.engagement_id.to_string()).or_default();
    let Some(project) = &e.psa_project_id else { return };
    let billing: Vec<&str> = e
        .billing_schedule
        .iter()
        .flat_map(|s| &s.items)
        .filter_map(|i| match i {
            BillingItem::Milestone { milestone_id, .. } => Some(milestone_id.as_str()),
            _ => None,
        })
        .filter(|m| !done.contains_key(*m))
        .collect();
    // In plan order: the next one completes.
    let Some(next) = billing.first() else { return };
    let completed_on = on - chrono::Duration::days(rng.i64(0..=20));
    let p = json!({"engagement_id": e.engagement_id, "milestone_id": next, "psa_project_id": project,
        "completed_on": completed_on.to_string(), "reported_by": "U-PM-01"});
    out.push(entry(
        "o2c.psa",
        "MilestoneCompleted",
        &format!("psa:milestone:{next}:{}:completed", e.opportunity_id),
        &e.correlation_id,
        on,
        p,
    ));
    done.insert((*next).to_owned(), completed_on);
}

/// The active engagements of the run, in input order.
async fn active(rt: &Runtime, generated: &[EngagementInput]) -> Result<Vec<Engagement>, O2cError> {
    let mut out = Vec::new();
    for g in generated {
        if let Some(v) = rt.store().load(&EngagementId::for_opportunity(&g.opportunity_id)).await?
            && v.value.status == EngagementStatus::Active
        {
            out.push(v.value);
        }
    }
    Ok(out)
}

/// The inputs of `phase`, from what the systems hold now.
pub async fn inputs(
    phase: Phase,
    rt: &Runtime,
    generated: &[EngagementInput],
    rng: &mut fastrand::Rng,
    seed: u64,
    delivered: &mut Delivered,
) -> Result<Vec<PutEventsEntry>, O2cError> {
    let mut out = Vec::new();
    let day = phase.day();
    for e in active(rt, generated).await? {
        match phase {
            Phase::Staff => {
                let (Some(_), Some(project), Some(contract)) = (time_and_materials(&e), &e.psa_project_id, &e.contract) else { continue };
                let id = format!("AS-{}", e.opportunity_id);
                let role = time_and_materials(&e).map(|(_, r)| r).unwrap_or_default();
                for (n, role) in role.iter().enumerate() {
                    let p = json!({"engagement_id": e.engagement_id, "assignment_id": format!("{id}-{n}"), "project_id": project,
                        "resource_id": resource(&e), "role": role, "start_date": contract.start_date.to_string(),
                        "end_date": contract.end_date.to_string(), "planned_hours": "800", "version": 1});
                    out.push(entry("o2c.psa", "ResourceAssigned", &format!("psa:assignment:{id}-{n}:v1"), &e.correlation_id, day, p));
                }
            }
            Phase::Work1 => {
                let n = rng.usize(1..=4);
                time_entries(rng, &e, delivered, n, date(2027, 1, 4), date(2027, 6, 25), &mut out);
                if rng.bool() {
                    milestone(rng, &e, delivered, day, &mut out);
                }
            }
            Phase::Work2 => {
                let n = rng.usize(0..=3);
                // Corrections of earlier entries (whether billed or not) before the new ones.
                if let (Some(project), Some((line, _))) = (e.psa_project_id.clone(), time_and_materials(&e)) {
                    let sent = delivered.time.entry(e.engagement_id.to_string()).or_default();
                    for (id, t) in sent.iter_mut() {
                        if rng.u8(0..4) == 0 {
                            t.version += 1;
                            t.hours = hours(rng);
                            out.push(time_event(&e, &project, &line, id, t));
                        }
                    }
                }
                time_entries(rng, &e, delivered, n, date(2027, 7, 1), date(2027, 11, 30), &mut out);
                if rng.u8(0..3) == 0 {
                    milestone(rng, &e, delivered, day, &mut out);
                }
            }
            Phase::Bill1 | Phase::Bill2 => {
                let run_id = format!("sim-{seed}-{}-{}", phase.as_str(), e.opportunity_id);
                let p = json!({"run_id": run_id, "as_of": day.to_string(), "engagement_id": e.engagement_id,
                    "scheduled": false, "requested_by": REQUESTER});
                out.push(entry("o2c.scheduler", "InvoiceRunRequested", &format!("invoice-run:{run_id}"), &run_id, day, p));
            }
            Phase::Approve1 | Phase::Approve2 => {
                let invoices = rt.store().load_all(AggregateKind::Invoice, e.engagement_id.as_str()).await?;
                for inv in invoices.invoices().into_iter().filter(|i| i.status == InvoiceStatus::PendingApproval) {
                    let decide = |who: &str| {
                        let d = json!({"engagement_id": e.engagement_id, "invoice_id": inv.invoice_id, "approver_id": who,
                            "decided_at": format!("{day}T11:00:00Z")});
                        entry(
                            "o2c.approvals",
                            "InvoiceApproved",
                            &format!("approvals:{}:{who}:{}", inv.invoice_id, phase.as_str()),
                            &e.correlation_id,
                            day,
                            d,
                        )
                    };
                    if rng.u8(0..5) == 0 {
                        delivered.self_approved.insert(inv.invoice_id.clone());
                        out.push(decide(&inv.requested_by));
                    }
                    out.push(decide(APPROVER));
                }
            }
            Phase::Pay => {
                let invoices = rt.store().load_all(AggregateKind::Invoice, e.engagement_id.as_str()).await?;
                let customer = e.contract.as_ref().map(|c| c.customer.name.clone()).unwrap_or_default();
                for inv in invoices.invoices().into_iter().filter(|i| i.status == InvoiceStatus::Posted) {
                    let Some(number) = &inv.number else { continue };
                    let total = inv.total;
                    let parts: Vec<Decimal> = match rng.u8(0..20) {
                        0..=13 => vec![total.amount],
                        14..=16 => {
                            let first = (total.amount * Decimal::new(rng.i64(10..=90), 2)).round_dp(2);
                            vec![first, total.amount - first]
                        }
                        _ => vec![total.amount + Decimal::new(rng.i64(1..=5_000), 2)],
                    };
                    for (k, amount) in parts.into_iter().enumerate() {
                        let id = format!("SIM{seed}-{number}-{k}");
                        let value_date = day + chrono::Duration::days(k as i64 * 7);
                        let p = json!({"payment_id": id, "legal_entity_id": inv.legal_entity_id,
                            "amount": {"amount": amount.to_string(), "currency": total.currency.code()},
                            "value_date": value_date.to_string(), "payer": {"name": customer},
                            "remittance": format!("Invoice {number}"), "references": [number]});
                        let sent = PaymentSent {
                            legal_entity_id: inv.legal_entity_id.clone(),
                            amount: o2c_domain::money::Money { amount, ..total },
                            number: number.clone(),
                        };
                        delivered.payments.insert(id.clone(), sent);
                        // Reported on the phase's day (a value date may lie ahead: the second part).
                        out.push(entry("o2c.bank", "PaymentReceived", &format!("bank:{id}"), &format!("corr-bank-{id}"), day, p));
                    }
                }
            }
        }
    }
    Ok(out)
}
