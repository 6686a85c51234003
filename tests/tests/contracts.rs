//! Event contracts: JSON Schemas, sample envelopes and Rust types agree, with no drift
//! in either direction.
#![allow(missing_docs, clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeSet;

use aws_lambda_events::event::eventbridge::EventBridgeEvent;
use aws_lambda_events::event::sqs::SqsEvent;
use o2c_domain::events::{BusinessEvent, EventType, upcast};
use o2c_tests::{Harness, closed_won, contract_approved, globex_payload, read_json, repo_root};
use proptest::prelude::*;
use serde_json::Value;

fn schema_validator_of(t: EventType, version: &str) -> jsonschema::Validator {
    let schema = read_json(&format!("events/schemas/{}.v{version}.json", t.detail_type()));
    jsonschema::draft202012::options()
        .should_validate_formats(true)
        .build(&schema)
        .unwrap_or_else(|e| panic!("schema {} v{version} compiles: {e}", t.detail_type()))
}

fn schema_validator(t: EventType) -> jsonschema::Validator {
    schema_validator_of(t, "1")
}

/// `(type, version)` for every contract version this build reads.
fn all_versions() -> Vec<(EventType, &'static str)> {
    EventType::ALL.iter().flat_map(|t| t.versions().iter().map(move |v| (*t, *v))).collect()
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
    let expected: BTreeSet<String> = all_versions().iter().map(|(t, v)| format!("{}.v{v}.json", t.detail_type())).collect();
    assert_eq!(files("events/schemas"), expected, "schemas and Rust event types (and their versions) drifted");
    let story: BTreeSet<String> =
        all_versions().iter().filter(|(t, _)| t.in_story()).map(|(t, v)| format!("{}.v{v}.json", t.detail_type())).collect();
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
    for (t, v) in all_versions() {
        let schema = read_json(&format!("events/schemas/{}.v{v}.json", t.detail_type()));
        assert_eq!(schema["x-eventbridge"]["source"], t.source(), "{}", t.detail_type());
        assert_eq!(schema["x-eventbridge"]["detail-type"], t.detail_type());
        assert_eq!(schema["properties"]["event_version"]["const"], v, "{} v{v} declares its version", t.detail_type());
        assert_eq!(t.schema_text_of(v).map(|s| serde_json::from_str::<Value>(s).unwrap()), Some(schema), "compiled in as read");
    }
}

#[test]
fn when_sample_is_validated_should_match_its_schema_and_round_trip_through_rust_types() {
    for t in EventType::ALL {
        for (path, version) in t.sample_paths().iter().zip(t.versions()) {
            let sample = read_json(path);
            // A real EventBridge envelope, as a rule delivers it.
            let eb: EventBridgeEvent<Value> =
                serde_json::from_value(sample.clone()).unwrap_or_else(|e| panic!("{path} is an EventBridge event: {e}"));
            assert_eq!(eb.detail_type, t.detail_type());
            assert_eq!(eb.source, t.source());
            assert_eq!(serde_json::to_value(&eb).unwrap(), sample, "EventBridge envelope round-trips");
            // The detail matches the schema of its version …
            let errs = errors(&schema_validator_of(*t, version), &eb.detail);
            assert!(errs.is_empty(), "{path}: {errs:?}");
            // … upcast, it matches the latest …
            let latest = upcast::to_latest(*t, &eb.detail).into_owned();
            let errs = errors(&schema_validator_of(*t, t.latest_version()), &latest);
            assert!(errs.is_empty(), "{path} upcast: {errs:?}");
            // … and it goes through the Rust types losslessly.
            let decoded = BusinessEvent::decode(&eb.detail_type, &eb.detail).unwrap_or_else(|e| panic!("{path}: {e}"));
            assert_eq!(decoded.event_type(), *t);
            assert_eq!(decoded.to_detail(), latest, "{path} round-trips through the Rust type");
        }
    }
}

#[test]
fn when_the_same_closed_won_comes_in_both_versions_should_be_one_fact() {
    let [v1, v2] = [1, 2].map(|v| read_json(&format!("events/samples/OpportunityClosedWon.v{v}.json"))["detail"].clone());
    let [a, b] = [&v1, &v2].map(|d| BusinessEvent::decode("OpportunityClosedWon", d).unwrap());
    assert_eq!(a.payload_json(), b.payload_json());
    assert_eq!(a.meta().idempotency_key, b.meta().idempotency_key, "a duplicate, whatever version it came in");
    assert_ne!(a.meta().event_id, b.meta().event_id);
}

proptest! {
    #![proptest_config(proptest::prelude::ProptestConfig::with_cases(256))]
    /// Any v1 the v1 schema accepts, upcast, is one the v2 schema accepts and decodes to the
    /// same payload as the v2 a sender would have written; any v1 it refuses is refused as
    /// a v1, before the upcaster sees it.
    #[test]
    fn when_any_v1_closed_won_is_upcast_should_be_a_valid_v2_with_the_same_facts(
        keep in proptest::collection::vec(proptest::bool::ANY, 16),
        amount in proptest::option::of(proptest::prop_oneof![
            "[0-9]{1,7}(\\.[0-9]{2})?".prop_map(Value::from), (0i64..10_000).prop_map(Value::from)]),
        currency in proptest::option::of(proptest::prop_oneof!["[A-Z]{3}".prop_map(Value::from), proptest::bool::ANY.prop_map(Value::from)]),
    ) {
        let sample = read_json("events/samples/OpportunityClosedWon.v1.json")["detail"].clone();
        let mut d = sample.clone();
        let payload = d["payload"].as_object_mut().unwrap();
        let optional: Vec<String> = payload.keys().filter(|k| !["opportunity_id", "revision"].contains(&k.as_str())).cloned().collect();
        for (k, keep) in optional.iter().zip(keep.iter().cycle()) {
            if !keep {
                payload.remove(k);
            }
        }
        payload.remove("amount");
        payload.remove("currency");
        if let Some(a) = &amount { payload.insert("amount".into(), a.clone()); }
        if let Some(c) = &currency { payload.insert("currency".into(), c.clone()); }
        let v1_ok = errors(&schema_validator_of(EventType::OpportunityClosedWon, "1"), &d).is_empty();
        let decoded = o2c_app::contracts::decode("OpportunityClosedWon", &d);
        prop_assert_eq!(v1_ok, decoded.is_ok());
        if v1_ok {
            let up = upcast::to_latest(EventType::OpportunityClosedWon, &d).into_owned();
            let errs = errors(&schema_validator_of(EventType::OpportunityClosedWon, "2"), &up);
            prop_assert!(errs.is_empty(), "{:?}", errs);
            // What a v2 sender would have written by hand.
            let mut v2 = d.clone();
            v2["event_version"] = "2".into();
            let p = v2["payload"].as_object_mut().unwrap();
            let mut total = serde_json::Map::new();
            if let Some(a) = p.remove("amount") { total.insert("amount".into(), a); }
            if let Some(c) = p.remove("currency") { total.insert("currency".into(), c); }
            if !total.is_empty() { p.insert("total_value".into(), Value::Object(total)); }
            let by_hand = o2c_app::contracts::decode("OpportunityClosedWon", &v2).unwrap();
            prop_assert_eq!(decoded.unwrap().payload_json(), by_hand.payload_json());
        }
    }
}

/// Every JSON pointer inside `v` (members and elements), the root excluded.
fn pointers(v: &Value, at: &str, out: &mut Vec<String>) {
    match v {
        Value::Object(m) => {
            for (k, c) in m {
                let p = format!("{at}/{}", k.replace('~', "~0").replace('/', "~1"));
                out.push(p.clone());
                pointers(c, &p, out);
            }
        }
        Value::Array(a) => {
            for (i, c) in a.iter().enumerate() {
                let p = format!("{at}/{i}");
                out.push(p.clone());
                pointers(c, &p, out);
            }
        }
        _ => {}
    }
}

/// Values a sender could put anywhere: every JSON type, and strings near the schemas'
/// formats and patterns (dates, date-times, decimals, currencies, engagement ids).
fn any_json() -> impl Strategy<Value = Value> {
    prop_oneof![
        Just(Value::Null),
        proptest::bool::ANY.prop_map(Value::from),
        (-1_000i64..1_000_000).prop_map(Value::from),
        (-1.0e6f64..1.0e6).prop_map(Value::from),
        "[A-Za-z0-9 _.:-]{0,12}".prop_map(Value::from),
        "[A-Z]{2,4}".prop_map(Value::from),
        "-?[0-9]{1,6}(\\.[0-9]{0,3})?".prop_map(Value::from),
        "20[0-9]{2}-[0-1][0-9]-[0-3][0-9]".prop_map(Value::from),
        "20[0-9]{2}-[0-1][0-9]-[0-3][0-9][Tt ][0-2][0-9]:[0-5][0-9]:[0-6][0-9](\\.[0-9]{1,3})?(Z|z|[+-][0-2][0-9]:[0-5][0-9])?"
            .prop_map(Value::from),
        "[0-9+]{4}-[0-1+][0-9]-[0-3+][0-9]".prop_map(Value::from),
        "20[0-9+]{2}-[0-1][0-9+]-[0-3][0-9][Tt][0-2+][0-9]:[0-5+][0-9]:[0-6][0-9](Z|[+-][0-2+][0-9]:[0-5+][0-9])".prop_map(Value::from),
        "(ENG-)?[A-Z0-9]{0,5}".prop_map(Value::from),
        Just(serde_json::json!({})),
        Just(serde_json::json!([])),
        Just(serde_json::json!([1, "a"])),
    ]
}

proptest! {
    #![proptest_config(proptest::prelude::ProptestConfig::with_cases(1024))]
    /// The functions check contracts with `boon` (`o2c_app::contracts`); the catalog is
    /// checked here with the `jsonschema` crate. Two implementations of draft 2020-12 must
    /// agree on every detail: the sample of every type and version, mutated at any path —
    /// a value replaced, a member removed, an unknown member added.
    #[test]
    fn when_any_detail_is_mutated_should_the_functions_validator_agree_with_the_reference_one(
        which in any::<proptest::sample::Index>(),
        at in any::<proptest::sample::Index>(),
        op in 0u8..3,
        value in any_json(),
    ) {
        let versions = all_versions();
        let (t, version) = versions[which.index(versions.len())];
        let mut d = read_json(&t.sample_paths()[t.versions().iter().position(|v| *v == version).unwrap()])["detail"].clone();
        let mut paths = Vec::new();
        pointers(&d, "", &mut paths);
        let path = paths[at.index(paths.len())].clone();
        let (parent, last) = path.rsplit_once('/').unwrap();
        match (op, d.pointer_mut(parent).unwrap()) {
            (1, Value::Object(m)) => { m.remove(&last.replace("~1", "/").replace("~0", "~")); }
            (2, Value::Object(m)) => { m.insert("x_unknown".into(), value.clone()); }
            _ => *d.pointer_mut(&path).unwrap() = value.clone(),
        }
        // The version the functions check against: the declared one when known, else the latest.
        let declared = d.get("event_version").and_then(Value::as_str);
        let checked = t.versions().iter().copied().find(|v| Some(*v) == declared).unwrap_or_else(|| t.latest_version());
        let reference = errors(&schema_validator_of(t, checked), &d);
        let ours = o2c_app::contracts::violations(t, &d).unwrap();
        prop_assert_eq!(reference.is_empty(), ours.is_empty(), "{} v{}: {} {} → reference {:?}, functions {:?}", t.detail_type(), checked, ["replaced", "removed", "extra"][op as usize], path, reference, ours);
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
