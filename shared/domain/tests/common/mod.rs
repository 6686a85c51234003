//! Fixtures shared by the domain tests.
#![allow(dead_code, missing_docs, clippy::unwrap_used, clippy::expect_used)]

use chrono::{DateTime, TimeZone, Utc};
use o2c_domain::events::{Envelope, EventMeta, OpportunityClosedWon};
use o2c_domain::reference::ReferenceData;

pub fn reference() -> ReferenceData {
    ReferenceData::from_json(include_str!("../../../reference/northwind.json")).expect("sample reference data is valid")
}

pub fn now() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 11, 20, 9, 30, 0).unwrap()
}

/// The seed scenario: Globex's multi-line transformation engagement (EUR, DE entity).
pub fn globex_closed_won() -> OpportunityClosedWon {
    serde_json::from_value(serde_json::json!({
        "opportunity_id": "0068d00000GLBX01",
        "revision": 1,
        "name": "Globex S/4HANA transformation",
        "stage": "Closed Won",
        "account_id": "CUST-1001",
        "close_date": "2026-11-20",
        "total_value": {"amount": "1250000.00", "currency": "EUR"},
        "delivery_region": "EMEA-DE",
        "start_date": "2027-01-04",
        "end_date": "2027-12-17",
        "rate_card_id": "RC-EUR-2027",
        "customer_po": "PO-4500012345",
        "owner_id": "0058d000001AbCd",
        "lines": [
            {"line_id": "L1", "service_offering_id": "SVC-ERP-IMPL", "billing_model": "milestone", "amount": "900000.00", "description": "S/4HANA implementation"},
            {"line_id": "L2", "service_offering_id": "SVC-CHANGE", "billing_model": "time_and_materials", "amount": "250000.00",
             "roles": [{"role": "MANAGER", "hours": "400"}, {"role": "SENIOR_CONSULTANT", "hours": "600"}]},
            {"line_id": "L3", "service_offering_id": "SVC-AMS", "billing_model": "fixed_fee", "amount": "100000.00", "installments": 4, "installment_frequency": "quarterly"}
        ]
    }))
    .unwrap()
}

pub fn envelope<P>(payload: P, event_id: &str) -> Envelope<P> {
    Envelope {
        event_id: event_id.into(),
        event_version: "1".into(),
        correlation_id: "corr-1".into(),
        causation_id: None,
        occurred_at: now(),
        idempotency_key: None,
        payload,
    }
}

pub fn meta(event_id: &str) -> EventMeta {
    EventMeta {
        event_id: event_id.into(),
        correlation_id: "corr-1".into(),
        causation_id: None,
        occurred_at: now(),
        idempotency_key: format!("k-{event_id}").into(),
    }
}

/// Some event, for decisions that do not read theirs.
pub fn any_event() -> o2c_domain::events::BusinessEvent {
    o2c_domain::events::BusinessEvent::OpportunityClosedWon(envelope(globex_closed_won(), "any"))
}
