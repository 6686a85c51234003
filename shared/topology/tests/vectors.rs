//! EventBridge pattern vectors (`tests/vectors/eventbridge.jsonl`): each line is a pattern with
//! an event and whether EventBridge matches it, or a pattern EventBridge refuses with (part of)
//! its reason, each transcribed from its source. Every line goes through the public router.
#![allow(missing_docs, clippy::unwrap_used, clippy::expect_used)]

use o2c_topology::pattern::{Pattern, PatternError, test_event_pattern};
use o2c_topology::routing::Router;
use o2c_topology::topology::RuleDef;
use serde_json::{Value, json};

const VECTORS: &str = include_str!("vectors/eventbridge.jsonl");

fn rule(id: &str, pattern: Value) -> RuleDef {
    RuleDef { logical_id: id.into(), pattern, targets: Vec::new() }
}

/// (line number, vector) for every non-empty line.
fn vectors() -> Vec<(usize, Value)> {
    VECTORS
        .lines()
        .enumerate()
        .filter(|(_, l)| !l.trim().is_empty())
        .map(|(i, l)| (i + 1, serde_json::from_str(l).unwrap_or_else(|e| panic!("line {}: not JSON: {e}", i + 1))))
        .collect()
}

/// The failure of one vector, if it fails.
fn check(line: usize, v: &Value) -> Option<String> {
    let id = format!("Line{line}");
    let compiled = Router::from_rules(vec![rule(&id, v["pattern"].clone())]);
    match (v.get("error").and_then(Value::as_str), compiled) {
        (Some(expected), Ok(_)) => Some(format!("expected the pattern to be refused with {expected:?}, it was accepted")),
        (Some(expected), Err(e)) if e.rule != id || !e.message.contains(expected) => {
            Some(format!("expected a refusal of rule {id} containing {expected:?}, got: {e}"))
        }
        (Some(_), Err(_)) => None,
        (None, Err(e)) => Some(format!("pattern refused: {e}")),
        (None, Ok(router)) => {
            let expected = v["match"].as_bool().expect("\"match\" is a boolean");
            let event = serde_json::to_vec(&v["event"]).unwrap();
            match router.matching_rules(&event) {
                Ok(rules) if rules.is_empty() == expected => Some(format!("expected match = {expected}, got {}", !expected)),
                Ok(_) => None,
                Err(e) => Some(format!("event refused: {e}")),
            }
        }
    }
}

#[test]
fn when_vectors_are_loaded_should_have_at_least_150_sourced_cases() {
    let vectors = vectors();
    assert!(vectors.len() >= 150, "only {} vectors", vectors.len());
    for (line, v) in &vectors {
        assert!(v["source"].as_str().is_some_and(|s| !s.trim().is_empty()), "line {line}: no source");
        assert!(v["pattern"] != Value::Null, "line {line}: no pattern");
        assert!(
            v.get("error").is_some() || (v.get("event").is_some() && v["match"].is_boolean()),
            "line {line}: needs error, or event and match"
        );
    }
}

#[test]
fn when_each_vector_is_routed_should_match_or_refuse_like_eventbridge() {
    let vectors = vectors();
    let failures: Vec<String> = vectors
        .iter()
        .filter_map(|(line, v)| check(*line, v).map(|why| format!("line {line} [{}]: {why}", v["source"].as_str().unwrap_or("?"))))
        .collect();
    assert!(failures.is_empty(), "{} of {} vectors fail:\n{}", failures.len(), vectors.len(), failures.join("\n"));
}

#[test]
fn when_a_rule_uses_an_unsupported_or_invalid_construct_should_refuse_it_naming_the_rule() {
    let refused = |pattern: Value| {
        let rules = vec![rule("GoodRule", json!({"source": ["o2c.crm"]})), rule("BadRule", pattern)];
        Router::from_rules(rules).err().expect("refused")
    };
    // Unknown operator.
    let e = refused(json!({"detail": {"amount": [{"between": [1, 2]}]}}));
    assert_eq!(e.rule, "BadRule");
    assert_eq!(e.to_string(), "rule BadRule: detail.amount: Unrecognized match type between");
    // Operand of the wrong type, with the path of the field.
    let e = refused(json!({"detail": {"amount": [{"numeric": ["<", "5"]}]}}));
    assert_eq!(e.message, "detail.amount: Value of < must be numeric");
    // Inside an `$or` branch, the branch is part of the path.
    let e = refused(json!({"detail": {"$or": [{"a": ["x"]}, {"b": [{"wildcard": "a**b"}]}]}}));
    assert_eq!(e.message, "detail.$or[1].b: Consecutive wildcard characters at pos 2");
    // A path given twice (order-dependent in EventBridge, so not supported here).
    let e = refused(json!({"name": ["a"], "$or": [{"name": [{"anything-but": "a"}]}, {"c": ["x"]}]}));
    assert!(e.message.starts_with("name: path `name` is given more than once"), "{e}");
    let e = refused(json!({"detail": {"a.b": ["x"], "a": {"b": ["y"]}}}));
    assert!(e.message.contains("path `detail.a.b` is given more than once"), "{e}");
    // More than 1000 `$or` combinations.
    let branches: Vec<Value> = (0..40).map(|i| json!({ format!("k{i}"): ["v"] })).collect();
    let e = refused(json!({"a": {"$or": branches.clone()}, "b": {"$or": branches}}));
    assert!(e.message.contains("more than 1000 rule combinations"), "{e}");
    // A pattern that is not an object.
    assert_eq!(refused(json!(["source"])).message, "pattern: Filter is not an object");
    // EventBridge's size quota: 2048 characters by default, at most 4096.
    let long = |n: usize| json!({"detail": {"note": ["x".repeat(n)]}});
    let overhead = long(0).to_string().len();
    assert!(Router::from_rules(vec![rule("Long", long(4096 - overhead))]).is_ok());
    let e = refused(long(4097 - overhead));
    assert!(e.message.starts_with("pattern: Event pattern is 4097 characters long"), "{e}");
}

#[test]
fn when_an_event_is_nested_deeper_than_serde_json_parses_should_route_the_parsed_value() {
    let router = Router::from_rules(vec![rule("R", json!({"source": ["o2c.crm"], "detail": {"kind": ["x"]}}))]).unwrap();
    // A Detail nested 127 levels deep is valid on its own; inside the envelope it is 128 deep.
    let mut detail = json!({"kind": "x"});
    for _ in 0..126 {
        detail = json!({"inner": detail, "kind": "x"});
    }
    let event = json!({"source": "o2c.crm", "detail-type": "T", "detail": detail});
    assert_eq!(router.matching_rules_for(&event).unwrap().len(), 1);
    assert_eq!(router.targets_for(&event).unwrap().len(), 0, "rule R has no targets");
    // The byte API parses first, and serde_json stops at 128 levels.
    let bytes = serde_json::to_vec(&event).unwrap();
    let e = router.matching_rules(&bytes).unwrap_err();
    assert_eq!(e.rule, "<event>");
    assert!(e.message.contains("recursion limit"), "{e}");
}

#[test]
fn when_an_event_would_cost_too_much_to_match_should_refuse_it_naming_the_rule() {
    // 21 fields each listing a value and `exists: false`, all inside one array.
    let fields: serde_json::Map<String, Value> = (0..21).map(|i| (format!("f{i:02}"), json!(["x", {"exists": false}]))).collect();
    let router =
        Router::from_rules(vec![rule("Plain", json!({"items": {"f00": ["x"]}})), rule("Choices", json!({"items": fields}))]).unwrap();
    let element: serde_json::Map<String, Value> = (0..21).map(|i| (format!("f{i:02}"), json!("x"))).collect();
    let event = json!({"items": [element.clone(), element]});
    let e = router.matching_rules_for(&event).unwrap_err();
    assert_eq!(e.rule, "Choices");
    assert!(e.message.contains("too complex"), "{e}");
    let pattern = Pattern::parse(&json!({"items": {"f00": ["x"]}})).unwrap();
    assert_eq!(pattern.matches(&event), Ok(true));
}

#[test]
fn when_the_event_is_not_a_json_object_should_report_the_event() {
    let router = Router::from_rules(vec![rule("R", json!({"source": ["x"]}))]).unwrap();
    assert_eq!(router.matching_rules(b"[1]").unwrap_err().rule, "<event>");
    assert_eq!(router.matching_rules(b"{not json").unwrap_err().rule, "<event>");
}

#[test]
fn when_testing_a_pattern_should_require_the_envelope_fields_like_test_event_pattern() {
    let envelope = json!({
        "id": "1", "account": "123456789012", "source": "o2c.crm", "time": "2026-01-01T00:00:00Z",
        "region": "eu-west-1", "detail-type": "X", "detail": {"amount": 5}
    });
    let pattern = json!({"detail": {"amount": [{"numeric": [">", 0, "<=", 5]}]}});
    assert_eq!(test_event_pattern(&pattern, &envelope), Ok(true));
    assert_eq!(test_event_pattern(&json!({"source": ["other"]}), &envelope), Ok(false));
    // `resources` is listed by the API reference but not required by EventBridge.
    for field in ["id", "account", "source", "time", "region", "detail-type"] {
        let mut event = envelope.clone();
        event.as_object_mut().unwrap().remove(field);
        let err = test_event_pattern(&pattern, &event).unwrap_err();
        assert_eq!(err, PatternError::InvalidEvent(format!("missing field `{field}`")));
        assert!(err.to_string().contains(field));
    }
    assert!(matches!(test_event_pattern(&pattern, &json!(["x"])), Err(PatternError::InvalidEvent(_))));
    let bad = test_event_pattern(&json!({"detail": {"amount": [{"numeric": ["<"]}]}}), &envelope).unwrap_err();
    assert_eq!(bad.to_string(), "detail.amount: Value of < must be numeric");
}

#[test]
fn when_a_pattern_is_compiled_once_should_match_many_events() {
    let pattern = Pattern::parse(&json!({"detail": {"items": {"sku": ["A"], "qty": [{"numeric": [">", 1]}]}}})).unwrap();
    assert_eq!(pattern.matches(&json!({"detail": {"items": [{"sku": "A", "qty": 2}]}})), Ok(true));
    // Array consistency: sku and qty must come from the same element.
    assert_eq!(pattern.matches(&json!({"detail": {"items": [{"sku": "A", "qty": 1}, {"sku": "B", "qty": 5}]}})), Ok(false));
    assert_eq!(pattern.matches(&json!("not an object")), Ok(false));
}
