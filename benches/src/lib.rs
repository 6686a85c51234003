//! # o2c-benches
//!
//! Inputs shared by the benchmarks in `benches/benches/`: `pipeline` (criterion: decoding
//! with and without schema validation, the intake decision, schedule derivation, routing)
//! and `embedded` (a bench binary: engagements per second through the embedded runtime with
//! fsync on every commit vs WAL `NORMAL`). Results: `BENCHMARKS.md`.

/// The Globex closed-won sample as an EventBridge event.
pub const CLOSED_WON: &str = include_str!("../../events/samples/OpportunityClosedWon.v1.json");

/// A closed-won detail for opportunity `n` (distinct ids and idempotency keys).
pub fn closed_won_detail(n: usize) -> serde_json::Value {
    let mut ev: serde_json::Value = serde_json::from_str(CLOSED_WON).unwrap_or_default();
    let opp = format!("0068d0000BENCH{n:04}");
    ev["detail"]["payload"]["opportunity_id"] = serde_json::json!(opp);
    ev["detail"]["event_id"] = serde_json::json!(format!("bench-{n}"));
    ev["detail"]["idempotency_key"] = serde_json::json!(format!("crm:opportunity:{opp}:closed-won:r1"));
    // Straight-through: no CLM gate (strategy advisory only).
    ev["detail"]["payload"]["lines"] = serde_json::json!([
        {"line_id": "1", "service_offering_id": "SVC-STRAT", "billing_model": "fixed_fee", "amount": "1250000.00", "installments": 4, "installment_frequency": "quarterly"}
    ]);
    ev["detail"].clone()
}
