//! Runtime contract checks: every incoming `detail` is validated against the JSON Schema
//! of its event type (`events/schemas/<DetailType>.v1.json`, compiled into the binary)
//! before it is decoded, so a malformed message is rejected with **every** violation and
//! its JSON path, not just the first one a deserializer trips on. Each schema is compiled
//! once per process, when its first event arrives.

use std::collections::HashMap;
use std::sync::{LazyLock, OnceLock};

use o2c_domain::events::{BusinessEvent, DecodeError, EventType, Issue};
use serde_json::Value;

use crate::error::O2cError;

/// The schema text of an event type, embedded at build time (see the event catalog).
pub fn schema_text(t: EventType) -> &'static str {
    t.schema_text()
}

type Compiled = Result<jsonschema::Validator, String>;

/// One slot per event type, each compiled the first time an event of that type arrives: a
/// function compiles only the schemas of what it consumes, once per process.
static CONTRACTS: LazyLock<HashMap<EventType, OnceLock<Compiled>>> =
    LazyLock::new(|| EventType::ALL.iter().map(|t| (*t, OnceLock::new())).collect());

fn compile(t: EventType) -> Compiled {
    serde_json::from_str::<Value>(schema_text(t))
        .map_err(|e| e.to_string())
        .and_then(|s| jsonschema::draft202012::options().should_validate_formats(true).build(&s).map_err(|e| e.to_string()))
}

/// `/payload/lines/0/amount` → `payload.lines[0].amount`.
fn dotted(pointer: &str) -> String {
    let mut out = String::new();
    for seg in pointer.split('/').filter(|s| !s.is_empty()) {
        if seg.chars().all(|c| c.is_ascii_digit()) {
            out.push_str(&format!("[{seg}]"));
        } else {
            if !out.is_empty() {
                out.push('.');
            }
            out.push_str(&seg.replace("~1", "/").replace("~0", "~"));
        }
    }
    if out.is_empty() { "detail".into() } else { out }
}

/// Every schema violation of `detail` for `t`.
pub fn violations(t: EventType, detail: &Value) -> Result<Vec<Issue>, O2cError> {
    match CONTRACTS.get(&t).map(|slot| slot.get_or_init(|| compile(t))) {
        Some(Ok(v)) => {
            Ok(v.iter_errors(detail).map(|e| Issue::new(dotted(e.instance_path().as_str()), "schema_violation", e.to_string())).collect())
        }
        Some(Err(e)) => Err(O2cError::Bug(format!("schema of {} does not compile: {e}", t.detail_type()))),
        None => Err(O2cError::Bug(format!("no schema for {}", t.detail_type()))),
    }
}

/// Validates against the schema, then decodes into the typed event.
pub fn decode(detail_type: &str, detail: &Value) -> Result<BusinessEvent, O2cError> {
    let t =
        EventType::from_detail_type(detail_type).ok_or_else(|| O2cError::from(DecodeError::UnknownDetailType(detail_type.to_owned())))?;
    let issues = violations(t, detail)?;
    if !issues.is_empty() {
        return Err(O2cError::Validation(issues));
    }
    Ok(BusinessEvent::decode(detail_type, detail)?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn when_every_schema_is_compiled_should_succeed() {
        for t in EventType::ALL {
            assert!(violations(*t, &serde_json::json!({})).is_ok_and(|v| !v.is_empty()), "{}", t.detail_type());
        }
    }

    #[test]
    fn when_detail_has_several_violations_should_report_them_all_with_paths() {
        let d = serde_json::json!({
            "event_id": "e", "event_version": "1", "occurred_at": "yesterday",
            "payload": {"opportunity_id": "o", "revision": "three", "lines": [{"amount": 5}]}
        });
        let Err(O2cError::Validation(issues)) = decode("OpportunityClosedWon", &d) else { panic!("expected a validation error") };
        let fields: Vec<&str> = issues.iter().map(|i| i.field.as_str()).collect();
        assert!(fields.contains(&"detail"), "missing correlation_id is reported at the root: {fields:?}");
        assert!(fields.contains(&"occurred_at"), "{fields:?}");
        assert!(fields.contains(&"payload.revision"), "{fields:?}");
        assert!(fields.contains(&"payload.lines[0].amount"), "{fields:?}");
        assert!(issues.iter().any(|i| i.message.contains("correlation_id")));
    }
}
