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

use o2c_app::O2cError;
use o2c_app::bus::PutEventsEntry;
use o2c_domain::reference::ReferenceData;
use rust_decimal::Decimal;
use serde_json::{Value, json};

const CLOSED_WON: &str = include_str!("../../../../events/samples/OpportunityClosedWon.v1.json");
const CONTRACT_APPROVED: &str = include_str!("../../../../events/samples/ContractApproved.v1.json");

/// The EUR customers of LE-DE-01 an engagement is sold to (monthly, semi-monthly and
/// on-milestone cycles; NET45 and NET30; German buyers and a French one under reverse
/// charge). More customers are copies of these (see [`customers`]).
pub const TEMPLATES: [&str; 3] = ["CUST-1000", "CUST-1001", "CUST-4001"];

/// Engagements per customer by default: a firm's customers buy a few dozen engagements a
/// year. Fewer customers (`--customers 3`) concentrate the receivables: each payment and
/// posting rewrites its customer's open items, so the cost per event grows with them.
pub const ENGAGEMENTS_PER_CUSTOMER: usize = 25;

/// `count` customers the engagements are sold to: the three templates, then copies of them
/// in turn (`CUST-1000-S0001`, …) with their own ERP customer number, name and bank
/// accounts, added to `reference` — the same terms, cycles, tax and legal entity.
pub fn customers(mut reference: ReferenceData, count: usize) -> Result<(ReferenceData, Vec<String>), O2cError> {
    let mut ids = Vec::with_capacity(count);
    for k in 0..count {
        let template = TEMPLATES[k % TEMPLATES.len()];
        let copy = k / TEMPLATES.len();
        if copy == 0 {
            ids.push(template.to_owned());
            continue;
        }
        let Some(t) = reference.customers.get(template) else {
            return Err(O2cError::Bug(format!("the simulation's reference data has no customer {template}")));
        };
        let mut c = t.clone();
        let suffix = format!("S{copy:04}");
        c.id = format!("{template}-{suffix}");
        c.name = format!("{} {suffix}", t.name);
        c.erp_customer_id = format!("{}-{suffix}", t.erp_customer_id);
        c.bank_accounts = t.bank_accounts.iter().map(|a| format!("{a}{suffix}")).collect();
        ids.push(c.id.clone());
        reference.customers.insert(c.id.clone(), c);
    }
    Ok((reference, ids))
}

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
pub fn generate(rng: &mut fastrand::Rng, seed: u64, n: usize, customers: &[String]) -> Vec<EngagementInput> {
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
                cw["payload"]["account_id"] = json!(customers[rng.usize(..customers.len())]);
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
