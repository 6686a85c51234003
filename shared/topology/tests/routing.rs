//! The shipped SAM template wires the expected topology, and EventBridge patterns route
//! every event type to exactly the steps that consume it.
#![allow(missing_docs, clippy::unwrap_used, clippy::expect_used)]

use o2c_app::Step;
use o2c_domain::events::EventType;
use o2c_topology::routing::Router;
use o2c_topology::topology::{TEMPLATE, Topology};

fn event(source: &str, detail_type: &str, detail: serde_json::Value) -> Vec<u8> {
    serde_json::to_vec(&serde_json::json!({
        "version": "0", "id": "1", "detail-type": detail_type, "source": source,
        "account": "000000000000", "time": "2026-11-20T09:30:00Z", "region": "eu-west-1", "resources": [], "detail": detail
    }))
    .unwrap()
}

fn steps_for(router: &Router, topo: &Topology, ev: &[u8]) -> Vec<String> {
    let mut out: Vec<String> =
        router.targets(ev).unwrap().into_iter().filter_map(|(_, t)| topo.consumer_function(&t.queue).map(|f| f.binary.clone())).collect();
    out.sort();
    out
}

#[test]
fn when_template_is_parsed_should_bind_every_step_to_a_queue_with_dlq() {
    let topo = Topology::from_sam_yaml(TEMPLATE).unwrap();
    assert_eq!(topo.bus, "EventBus");
    for step in Step::ALL {
        let f = topo.functions.iter().find(|f| f.binary == step.name()).unwrap_or_else(|| panic!("no function for {}", step.name()));
        let q = &topo.queues[&f.queue];
        let rd = q.redrive.as_ref().expect("dlq");
        assert!(rd.max_receive_count >= 3);
        assert!(topo.queues.contains_key(&rd.dead_letter_queue));
        assert!(f.report_batch_item_failures);
    }
}

#[test]
fn when_each_event_type_is_published_should_reach_exactly_its_consumers() {
    let topo = Topology::from_sam_yaml(TEMPLATE).unwrap();
    let router = Router::new(&topo).unwrap();
    for t in EventType::ALL {
        let mut expected: Vec<String> = Step::ALL.iter().filter(|s| s.consumes().contains(t)).map(|s| s.name().to_owned()).collect();
        expected.sort();
        let detail = serde_json::json!({"payload": {"kind": "provisioning_failed"}});
        assert_eq!(steps_for(&router, &topo, &event(t.source(), t.detail_type(), detail)), expected, "routing of {}", t.detail_type());
    }
}

#[test]
fn when_template_declares_tables_and_pipes_should_expose_names_keys_and_paths() {
    let topo = Topology::from_sam_yaml(TEMPLATE).unwrap();
    assert_eq!(topo.bus_name("prod"), "o2c-prod");
    assert_eq!(topo.table_name("StateTable", "prod"), "o2c-prod-state");
    assert_eq!(topo.queue_name("CrmWritebackQueue", "dev"), "o2c-dev-crm-writeback.fifo");
    let state = &topo.tables["StateTable"];
    assert_eq!((state.hash.name.as_str(), state.range.as_ref().unwrap().name.as_str()), ("PK", "SK"));
    assert_eq!(state.indexes.iter().map(|i| i.name.as_str()).collect::<Vec<_>>(), vec!["GSI1", "GSI2"]);
    assert_eq!(topo.tables["IdempotencyTable"].ttl_attribute.as_deref(), Some("expiration"));
    let pipe = topo.pipe_for_queue("CrmWritebackInboxQueue").expect("write-back pipe");
    assert!(topo.queues[&pipe.target].fifo);
    let body = serde_json::json!({"detail": {"event_id": "e-1", "payload": {"engagement_id": "ENG-1"}}});
    assert_eq!(o2c_topology::topology::PipeDef::eval(pipe.message_group_path.as_deref().unwrap(), &body).as_deref(), Some("ENG-1"));
    assert_eq!(o2c_topology::topology::PipeDef::eval(pipe.deduplication_path.as_deref().unwrap(), &body).as_deref(), Some("e-1"));
    assert_eq!(topo.consumer_function("CrmWritebackInboxQueue").map(|f| f.binary.as_str()), Some("crm-writeback"));
}

#[test]
fn when_source_is_spoofed_should_not_route() {
    let topo = Topology::from_sam_yaml(TEMPLATE).unwrap();
    let router = Router::new(&topo).unwrap();
    // A CRM may not claim to have created a contract.
    assert!(steps_for(&router, &topo, &event("o2c.crm", "ContractCreated", serde_json::json!({}))).is_empty());
    assert!(steps_for(&router, &topo, &event("o2c.crm", "opportunityclosedwon", serde_json::json!({}))).is_empty());
}

#[test]
fn when_writeback_failure_is_raised_should_not_loop_back_into_writeback() {
    let topo = Topology::from_sam_yaml(TEMPLATE).unwrap();
    let router = Router::new(&topo).unwrap();
    let crm_failed = event("o2c.exceptions", "ExceptionRaised", serde_json::json!({"payload": {"kind": "crm_writeback_failed"}}));
    // The operator queue takes it; the write-back does not (it would loop).
    assert_eq!(steps_for(&router, &topo, &crm_failed), vec!["exceptions"]);
    let prov_failed = event("o2c.exceptions", "ExceptionRaised", serde_json::json!({"payload": {"kind": "provisioning_failed"}}));
    assert_eq!(steps_for(&router, &topo, &prov_failed), vec!["crm-writeback", "exceptions"]);
}

#[test]
fn when_template_breaks_the_rules_should_say_every_problem() {
    let bad = r#"
Resources:
  Bus: {Type: AWS::Events::EventBus}
  Q: {Type: AWS::SQS::Queue, Properties: {VisibilityTimeout: 10}}
  R: {Type: AWS::Events::Rule, Properties: {EventPattern: {source: [x]}, Targets: [{Id: t, Arn: !GetAtt Missing.Arn}]}}
  F:
    Type: AWS::Serverless::Function
    Metadata: {BuildProperties: {Binary: intake}}
    Properties:
      Timeout: 30
      Events: {E: {Type: SQS, Properties: {Queue: !GetAtt Q.Arn}}}
"#;
    let err = Topology::from_sam_yaml(bad).unwrap_err().to_string();
    assert!(err.contains("Missing is not declared"), "{err}");
    assert!(err.contains("has no dead-letter queue"), "{err}");
    assert!(err.contains("ReportBatchItemFailures"), "{err}");
    assert!(err.contains("6 × function timeout"), "{err}");
}

#[test]
fn when_pattern_uses_eventbridge_operators_should_match_like_eventbridge() {
    use o2c_topology::topology::{RuleDef, TargetDef};
    let rule = |id: &str, p: serde_json::Value| RuleDef {
        logical_id: id.into(),
        pattern: p,
        targets: vec![TargetDef { id: "t".into(), queue: "Q".into(), message_group_id: None, dead_letter_queue: None }],
    };
    let router = Router::from_rules(vec![
        rule("prefix", serde_json::json!({"source": [{"prefix": "o2c."}]})),
        rule("numeric", serde_json::json!({"detail": {"payload": {"revision": [{"numeric": [">", 2]}]}}})),
        rule("exists", serde_json::json!({"detail": {"payload": {"customer_po": [{"exists": false}]}}})),
    ])
    .unwrap();
    let ids = |ev: Vec<u8>| -> Vec<String> { router.matching_rules(&ev).unwrap().into_iter().map(|r| r.logical_id.clone()).collect() };
    assert_eq!(ids(event("o2c.crm", "X", serde_json::json!({"payload": {"revision": 3}}))), vec!["prefix", "numeric", "exists"]);
    assert_eq!(ids(event("erp", "X", serde_json::json!({"payload": {"revision": 1, "customer_po": "PO"}}))), Vec::<String>::new());
}

#[test]
fn when_template_grants_permissions_should_scope_every_statement() {
    fn walk(v: &serde_yaml_ng::Value, key: Option<&str>, found: &mut Vec<String>) {
        match v {
            serde_yaml_ng::Value::Mapping(m)
                if m.get("Action").and_then(|a| a.as_sequence()).is_some_and(|a| {
                    a.iter().all(|x| matches!(x.as_str(), Some("xray:PutTraceSegments" | "xray:PutTelemetryRecords")))
                }) =>
            {
                // X-Ray's write actions take no resource-level permission: `*` is the only
                // resource they accept, and they can only write traces.
                assert_eq!(m.get("Resource").and_then(|r| r.as_str()), Some("*"));
            }
            serde_yaml_ng::Value::Mapping(m) => {
                for (k, v) in m {
                    walk(v, k.as_str(), found);
                }
            }
            serde_yaml_ng::Value::Sequence(s) => s.iter().for_each(|x| walk(x, key, found)),
            serde_yaml_ng::Value::Tagged(t) => walk(&t.value, key, found),
            serde_yaml_ng::Value::String(s)
                if matches!(key, Some("Action" | "Resource")) && (s == "*" || s.ends_with(":*") && key == Some("Action")) =>
            {
                found.push(format!("{}: {s}", key.unwrap_or_default()))
            }
            _ => {}
        }
    }
    let doc: serde_yaml_ng::Value = serde_yaml_ng::from_str(TEMPLATE).unwrap();
    let mut found = Vec::new();
    walk(&doc, None, &mut found);
    assert!(found.is_empty(), "wildcards in IAM statements: {found:?}");
    // Every function has its own role, so SAM adds no wildcard managed policies.
    for (id, res) in doc["Resources"].as_mapping().unwrap() {
        if res["Type"].as_str() == Some("AWS::Serverless::Function") {
            assert!(
                matches!(res["Properties"]["Role"], serde_yaml_ng::Value::Tagged(_) | serde_yaml_ng::Value::String(_)),
                "{id:?} has no explicit role"
            );
        }
    }
}
