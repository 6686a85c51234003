//! What a simulated firm sends. Per engagement one closed-won opportunity, drawn from the
//! seed:
//! - straight-through (70 %): one fixed-fee line of a random amount with cents (10,000.00 to
//!   2,000,000.00 EUR) in 1 to 12 installments, so the schedule's rounding is exercised;
//! - CLM-gated (20 %): the Globex shape (milestone, T&M and fixed-fee lines), then its
//!   `ContractApproved` from the CLM;
//! - invalid (10 %): an unknown account and lines that do not add up to the amount.
//!
//! Valid ones are sold to one of three EUR customers of LE-DE-01.
//!
//! Event ids and idempotency keys are stable per input, so a duplicate is a true replay.

use o2c_app::bus::PutEventsEntry;
use rust_decimal::Decimal;
use serde_json::{Value, json};

const CLOSED_WON: &str = include_str!("../../../../events/samples/OpportunityClosedWon.v1.json");
const CONTRACT_APPROVED: &str = include_str!("../../../../events/samples/ContractApproved.v1.json");

/// The EUR customers of LE-DE-01 an engagement is sold to (monthly, semi-monthly and
/// on-milestone cycles; NET45 and NET30; German buyers and a French one under reverse
/// charge): each customer's receivables are one aggregate holding its whole history, so
/// the run spreads engagements over them.
const CUSTOMERS: [&str; 3] = ["CUST-1000", "CUST-1001", "CUST-4001"];

/// The shape of one engagement's inputs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// Fixed fee, no contract gate.
    StraightThrough,
    /// Needs the CLM's approval before provisioning.
    ClmGated,
    /// Must be rejected with its reasons.
    Invalid,
}

/// One engagement's inputs.
#[derive(Debug, Clone)]
pub struct EngagementInput {
    /// CRM opportunity.
    pub opportunity_id: String,
    /// Shape.
    pub kind: Kind,
    /// Contract amount the CRM sent.
    pub amount: Decimal,
    /// Events, in business order (closed-won first).
    pub entries: Vec<PutEventsEntry>,
}

fn sample(text: &str) -> Value {
    serde_json::from_str(text).unwrap_or_default()
}

fn entry(source: &str, detail_type: &str, detail: &Value) -> PutEventsEntry {
    PutEventsEntry {
        source: Some(source.to_owned()),
        detail_type: Some(detail_type.to_owned()),
        detail: Some(detail.to_string()),
        ..Default::default()
    }
}

/// `n` engagements' inputs for `seed`'s run.
pub fn generate(rng: &mut fastrand::Rng, seed: u64, n: usize) -> Vec<EngagementInput> {
    let (closed_won, approved) = (sample(CLOSED_WON)["detail"].clone(), sample(CONTRACT_APPROVED)["detail"].clone());
    (0..n)
        .map(|i| {
            let opportunity_id = format!("006SIM{seed:04}{i:07}");
            let mut cw = closed_won.clone();
            cw["event_id"] = json!(format!("sim-{seed}-{i}-closed-won"));
            cw["correlation_id"] = json!(format!("corr-{opportunity_id}"));
            cw["idempotency_key"] = json!(format!("crm:opportunity:{opportunity_id}:closed-won:r1"));
            cw["payload"]["opportunity_id"] = json!(opportunity_id);
            let kind = match rng.u8(0..10) {
                0..=6 => Kind::StraightThrough,
                7 | 8 => Kind::ClmGated,
                _ => Kind::Invalid,
            };
            let mut amount: Decimal = cw["payload"]["amount"].as_str().and_then(|a| a.parse().ok()).unwrap_or_default();
            match kind {
                Kind::StraightThrough => {
                    amount = Decimal::new(rng.i64(1_000_000..=200_000_000), 2);
                    let installments = rng.u32(1..=12);
                    let frequency = if installments > 4 { "monthly" } else { "quarterly" };
                    cw["payload"]["amount"] = json!(amount.to_string());
                    cw["payload"]["lines"] = json!([{
                        "line_id": "1", "service_offering_id": "SVC-STRAT", "billing_model": "fixed_fee",
                        "amount": amount.to_string(), "installments": installments, "installment_frequency": frequency
                    }]);
                }
                Kind::ClmGated => {}
                Kind::Invalid => {
                    cw["payload"]["account_id"] = json!("CUST-SIM-UNKNOWN");
                    amount += Decimal::ONE;
                    cw["payload"]["amount"] = json!(amount.to_string());
                }
            }
            if kind != Kind::Invalid {
                cw["payload"]["account_id"] = json!(CUSTOMERS[rng.usize(..CUSTOMERS.len())]);
            }
            let mut entries = vec![entry("o2c.crm", "OpportunityClosedWon", &cw)];
            if kind == Kind::ClmGated {
                let mut a = approved.clone();
                a["event_id"] = json!(format!("sim-{seed}-{i}-contract-approved"));
                a["correlation_id"] = json!(format!("corr-{opportunity_id}"));
                a["idempotency_key"] = json!(format!("clm:agreement:AGR-SIM-{seed}-{i}:approved"));
                a["payload"]["opportunity_id"] = json!(opportunity_id);
                a["payload"]["clm_agreement_id"] = json!(format!("AGR-SIM-{seed}-{i}"));
                entries.push(entry("o2c.clm", "ContractApproved", &a));
            }
            EngagementInput { opportunity_id, kind, amount, entries }
        })
        .collect()
}
