//! Event contracts: JSON Schemas, sample envelopes and Rust types agree, with no drift
//! in either direction.
#![allow(missing_docs, clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeSet;

use aws_lambda_events::event::eventbridge::EventBridgeEvent;
use aws_lambda_events::event::sqs::SqsEvent;
use o2c_domain::events::{BusinessEvent, EventType};
use o2c_tests::{Harness, closed_won, contract_approved, globex_payload, read_json, repo_root};
use serde_json::Value;

fn schema_validator(t: EventType) -> jsonschema::Validator {
    let schema = read_json(&format!("events/schemas/{}.v1.json", t.detail_type()));
    jsonschema::draft202012::options()
        .should_validate_formats(true)
        .build(&schema)
        .unwrap_or_else(|e| panic!("schema {} compiles: {e}", t.detail_type()))
}

fn errors(v: &jsonschema::Validator, instance: &Value) -> Vec<String> {
    v.iter_errors(instance).map(|e| format!("{} at {}", e, e.instance_path())).collect()
}

fn files(dir: &str) -> BTreeSet<String> {
    std::fs::read_dir(repo_root().join(dir))
        .unwrap_or_else(|e| panic!("{dir}: {e}"))
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect()
}

/// Drops `null` members (the SQS types serialise absent optional attributes as null).
fn strip_nulls(v: Value) -> Value {
    match v {
        Value::Object(m) => Value::Object(m.into_iter().filter(|(_, v)| !v.is_null()).map(|(k, v)| (k, strip_nulls(v))).collect()),
        Value::Array(a) => Value::Array(a.into_iter().map(strip_nulls).collect()),
        other => other,
    }
}

#[test]
fn when_listing_contracts_should_have_one_schema_and_one_sample_per_event_type() {
    let expected: BTreeSet<String> = EventType::ALL.iter().map(|t| format!("{}.v1.json", t.detail_type())).collect();
    assert_eq!(files("events/schemas"), expected, "schemas and Rust event types drifted");
    let story: BTreeSet<String> = EventType::ALL.iter().filter(|t| t.in_story()).map(|t| format!("{}.v1.json", t.detail_type())).collect();
    let catalog: BTreeSet<String> = expected.difference(&story).cloned().collect();
    assert_eq!(files("events/samples"), story, "the story's samples and Rust event types drifted");
    assert_eq!(files("events/catalog"), catalog, "the catalog's samples and Rust event types drifted");
}

#[test]
fn when_a_sample_is_in_the_story_should_come_from_a_system_around_o2c() {
    // The story is what the CRM, CLM, PSA, bank, approvers and schedules post; o2c's own
    // events follow from it and are in the catalog.
    for t in EventType::ALL.iter().filter(|t| t.in_story()) {
        assert!(
            ["o2c.crm", "o2c.clm", "o2c.psa", "o2c.bank", "o2c.approvals", "o2c.scheduler"].contains(&t.source()),
            "{} ({}) is not posted from outside o2c",
            t.detail_type(),
            t.source()
        );
    }
}

#[test]
fn when_schema_names_its_source_should_match_the_rust_type() {
    for t in EventType::ALL {
        let schema = read_json(&format!("events/schemas/{}.v1.json", t.detail_type()));
        assert_eq!(schema["x-eventbridge"]["source"], t.source(), "{}", t.detail_type());
        assert_eq!(schema["x-eventbridge"]["detail-type"], t.detail_type());
    }
}

#[test]
fn when_sample_is_validated_should_match_its_schema_and_round_trip_through_rust_types() {
    for t in EventType::ALL {
        let sample = read_json(&t.sample_path());
        // A real EventBridge envelope, as a rule delivers it.
        let eb: EventBridgeEvent<Value> =
            serde_json::from_value(sample.clone()).unwrap_or_else(|e| panic!("{} is an EventBridge event: {e}", t.detail_type()));
        assert_eq!(eb.detail_type, t.detail_type());
        assert_eq!(eb.source, t.source());
        assert_eq!(serde_json::to_value(&eb).unwrap(), sample, "EventBridge envelope round-trips");
        // The detail matches the schema …
        let errs = errors(&schema_validator(*t), &eb.detail);
        assert!(errs.is_empty(), "{} sample: {errs:?}", t.detail_type());
        // … and the Rust types, losslessly.
        let decoded = BusinessEvent::decode(&eb.detail_type, &eb.detail).unwrap_or_else(|e| panic!("{}: {e}", t.detail_type()));
        assert_eq!(decoded.event_type(), *t);
        assert_eq!(decoded.to_detail(), eb.detail, "{} round-trips through the Rust type", t.detail_type());
    }
}

#[test]
fn when_detail_breaks_the_contract_should_fail_schema_and_decode_alike() {
    let sample = read_json("events/catalog/ContractCreated.v1.json");
    let v = schema_validator(EventType::ContractCreated);
    for (what, mutate) in [
        (
            "float amount",
            Box::new(|d: &mut Value| d["payload"]["total_value"]["amount"] = serde_json::json!(1250000.0)) as Box<dyn Fn(&mut Value)>,
        ),
        (
            "missing correlation",
            Box::new(|d: &mut Value| {
                d.as_object_mut().unwrap().remove("correlation_id");
            }),
        ),
        ("unknown envelope field", Box::new(|d: &mut Value| d["surprise"] = serde_json::json!(1))),
        ("bad currency", Box::new(|d: &mut Value| d["payload"]["total_value"]["currency"] = serde_json::json!("EURO"))),
    ] {
        let mut d = sample["detail"].clone();
        mutate(&mut d);
        assert!(!errors(&v, &d).is_empty(), "schema accepts {what}");
        assert!(BusinessEvent::decode("ContractCreated", &d).is_err(), "Rust type accepts {what}");
    }
}

#[test]
fn when_lambda_test_events_are_read_should_wrap_the_samples_exactly() {
    let sqs_files = files("events/sqs");
    assert!(!sqs_files.is_empty());
    for f in sqs_files {
        let (function, rest) = f.split_once('.').unwrap();
        let detail_type = rest.trim_end_matches(".json");
        let t = EventType::from_detail_type(detail_type).unwrap_or_else(|| panic!("{f}: unknown detail-type"));
        let step = o2c_app::Step::from_name(function).unwrap_or_else(|| panic!("{f}: unknown function"));
        assert!(step.consumes().contains(&t), "{f}: {function} does not consume {detail_type}");
        let raw = read_json(&format!("events/sqs/{f}"));
        let ev: SqsEvent = serde_json::from_value(raw.clone()).unwrap_or_else(|e| panic!("{f} is an SQS event: {e}"));
        assert_eq!(strip_nulls(serde_json::to_value(&ev).unwrap()), raw, "{f} round-trips as an SQS event");
        let body: Value = serde_json::from_str(ev.records[0].body.as_deref().unwrap()).unwrap();
        assert_eq!(body, read_json(&t.sample_path()), "{f} wraps the sample");
    }
    // Every step has at least one ready-made test event.
    for step in o2c_app::Step::ALL {
        assert!(files("events/sqs").iter().any(|f| f.starts_with(&format!("{}.", step.name()))), "no test event for {}", step.name());
    }
}

#[test]
fn when_demo_scenario_is_read_should_hold_valid_put_events_entries() {
    let text = std::fs::read_to_string(repo_root().join("events/scenarios/northwind-demo.jsonl")).unwrap();
    let entries = o2c_app::bus::entries_from_text(&text).unwrap();
    assert!(entries.len() >= 5);
    for e in entries {
        let detail = o2c_app::bus::validate_entry(&e).unwrap();
        let t = EventType::from_detail_type(e.detail_type.as_deref().unwrap()).unwrap();
        assert_eq!(e.source.as_deref(), Some(t.source()));
        assert!(errors(&schema_validator(t), &detail).is_empty());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn when_a_flow_runs_should_emit_only_events_that_match_their_schemas() {
    let h = Harness::new().await;
    h.send(vec![closed_won(globex_payload("0068d00000SCHM01", 1)), contract_approved("0068d00000SCHM01")]).await;
    let mut bad = globex_payload("0068d00000SCHM02", 1);
    bad["account_id"] = serde_json::json!("CUST-9001");
    h.send(vec![closed_won(bad)]).await;
    h.settle().await;
    let events = h.bus_events().await;
    let types: BTreeSet<&str> = events.iter().map(|(t, _)| t.as_str()).collect();
    for t in ["ContractCreated", "ProjectProvisioned", "ProjectActivated", "EngagementRejected"] {
        assert!(types.contains(t), "flow emitted no {t}");
    }
    for (dt, detail) in &events {
        let t = EventType::from_detail_type(dt).unwrap();
        let errs = errors(&schema_validator(t), detail);
        assert!(errs.is_empty(), "emitted {dt} breaks its schema: {errs:?}");
        assert_eq!(detail["event_version"], "1");
    }
}

#[test]
fn when_the_billing_schedule_fires_should_send_a_run_request_the_invoice_run_accepts() {
    let topo = o2c_topology::Topology::from_sam_yaml(o2c_topology::TEMPLATE).unwrap();
    let schedule = topo.schedules.iter().find(|s| s.logical_id == "BillingSchedule").expect("the template schedules billing");
    assert_eq!(topo.consumer_function(&schedule.queue).map(|f| f.binary.as_str()), Some("invoice-run"));
    assert!(schedule.expression.starts_with("cron("), "{}", schedule.expression);
    // What EventBridge Scheduler sends at 05:00 UTC on 1 March: an EventBridge-shaped body.
    let body = schedule.message("2027-03-01T05:00:00Z", "3c0b9c6e-1d2a-4c1e-9a55-0d2c6a1f7b10", "eu-west-1", "123456789012");
    let event = o2c_app::sqs::decode_body(&body).unwrap_or_else(|e| panic!("{e}: {body}"));
    let BusinessEvent::InvoiceRunRequested(env) = &event else { panic!("{event:?}") };
    assert_eq!(env.payload.as_of, chrono::NaiveDate::from_ymd_opt(2027, 3, 1).unwrap(), "the scheduled time's UTC date");
    assert!(env.payload.scheduled && env.payload.engagement_id.is_none(), "a fan-out over every engagement whose cycle is due");
    assert_eq!(env.idempotency_key.as_deref(), Some("schedule:billing:2027-03-01T05:00:00Z"), "a retried delivery is the same run");
    let detail: Value = serde_json::from_str::<Value>(&body).unwrap()["detail"].clone();
    assert!(errors(&schema_validator(EventType::InvoiceRunRequested), &detail).is_empty());
}

#[test]
fn when_the_revenue_schedule_fires_should_send_a_run_request_for_the_month_that_ended() {
    let topo = o2c_topology::Topology::from_sam_yaml(o2c_topology::TEMPLATE).unwrap();
    let schedule = topo.schedules.iter().find(|s| s.logical_id == "RevenueSchedule").expect("the template schedules revenue");
    assert_eq!(topo.consumer_function(&schedule.queue).map(|f| f.binary.as_str()), Some("revenue-recognition"));
    assert!(schedule.expression.starts_with("cron("), "{}", schedule.expression);
    // What EventBridge Scheduler sends at 04:00 UTC on 1 April: March's run for every engagement.
    let body = schedule.message("2027-04-01T04:00:00Z", "8f1c2b3a-4d5e-4f60-8a7b-9c0d1e2f3a4b", "eu-west-1", "123456789012");
    let event = o2c_app::sqs::decode_body(&body).unwrap_or_else(|e| panic!("{e}: {body}"));
    let BusinessEvent::RevenueRunRequested(env) = &event else { panic!("{event:?}") };
    assert_eq!(env.payload.period().to_string(), "2027-03", "the month that ended");
    assert!(env.payload.engagement_id.is_none(), "a fan-out over every active engagement");
    assert_eq!(env.idempotency_key.as_deref(), Some("schedule:revenue:2027-04-01T04:00:00Z"));
    let detail: Value = serde_json::from_str::<Value>(&body).unwrap()["detail"].clone();
    assert!(errors(&schema_validator(EventType::RevenueRunRequested), &detail).is_empty());
}
