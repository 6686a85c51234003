//! Runtime contract checks: every incoming `detail` is validated against the JSON Schema
//! of its event type **in the version it declares** (`events/schemas/<DetailType>.v<N>.json`,
//! compiled into the binary) before it is decoded, so a malformed message is rejected with
//! **every** violation and its JSON path, in the sender's own version, not just the first
//! one a deserializer trips on. An older version is then upcast to the latest
//! (`o2c_domain::events::upcast`). Each schema is compiled once per process, when its first
//! event arrives.

use std::collections::HashMap;
use std::sync::{LazyLock, OnceLock};

use o2c_domain::events::{BusinessEvent, DecodeError, EventType, Issue};
use serde_json::Value;

use crate::error::O2cError;

/// The latest schema text of an event type, embedded at build time (see the event catalog).
pub fn schema_text(t: EventType) -> &'static str {
    t.schema_text()
}

/// A compiled schema: the validator set and the index of the event's schema in it.
type Compiled = Result<(boon::Schemas, boon::SchemaIndex), String>;

/// One slot per event type and version, each compiled the first time an event of that
/// type and version arrives: a function compiles only the schemas of what it consumes,
/// once per process.
static CONTRACTS: LazyLock<HashMap<(EventType, &'static str), OnceLock<Compiled>>> =
    LazyLock::new(|| EventType::ALL.iter().flat_map(|t| t.versions().iter().map(move |v| ((*t, *v), OnceLock::new()))).collect());

/// The version whose schema checks `detail`: the one it declares when this build reads
/// it, else the latest (whose `event_version` constant then reports the mismatch).
fn version_of(t: EventType, detail: &Value) -> &'static str {
    let declared = detail.get("event_version").and_then(Value::as_str);
    t.versions().iter().copied().find(|v| Some(*v) == declared).unwrap_or_else(|| t.latest_version())
}

/// Compiles a schema with [`boon`] (draft 2020-12, formats asserted, no remote references:
/// the schemas are self-contained). `boon` rather than the `jsonschema` crate the tests check
/// the catalog with: the same draft and keywords, with a fifth of the code in each function
/// (`jsonschema` and its two regex engines were ~1.9 MiB of a 12 MiB bootstrap, BENCHMARKS.md).
fn compile(t: EventType, version: &str) -> Compiled {
    let text = t.schema_text_of(version).ok_or_else(|| format!("no schema for version {version}"))?;
    let schema = serde_json::from_str::<Value>(text).map_err(|e| e.to_string())?;
    let url = format!("urn:o2c:schema:{}:v{version}", t.detail_type());
    let mut compiler = boon::Compiler::new();
    compiler.set_default_draft(boon::Draft::V2020_12);
    compiler.enable_format_assertions();
    compiler.register_format(boon::Format { name: "date", func: strict_date });
    compiler.register_format(boon::Format { name: "date-time", func: strict_date_time });
    compiler.add_resource(&url, schema).map_err(|e| e.to_string())?;
    let mut schemas = boon::Schemas::new();
    let index = compiler.compile(&url, &mut schemas).map_err(|e| e.to_string())?;
    Ok((schemas, index))
}

/// boon's own `date` and `date-time` checks, compiled once without the overrides below.
static BUILTIN_FORMATS: LazyLock<Result<(boon::Schemas, boon::SchemaIndex, boon::SchemaIndex), String>> = LazyLock::new(|| {
    let mut compiler = boon::Compiler::new();
    compiler.enable_format_assertions();
    let mut schemas = boon::Schemas::new();
    let mut compile = |format: &str| {
        let url = format!("urn:o2c:format:{format}");
        compiler.add_resource(&url, serde_json::json!({ "format": format })).map_err(|e| e.to_string())?;
        compiler.compile(&url, &mut schemas).map_err(|e| e.to_string())
    };
    let (date, date_time) = (compile("date")?, compile("date-time")?);
    Ok((schemas, date, date_time))
});

/// boon's check of `v` against one of [`BUILTIN_FORMATS`].
fn builtin_format(v: &Value, date_time: bool) -> Result<(), Box<dyn std::error::Error>> {
    let (schemas, date, dt) = BUILTIN_FORMATS.as_ref().map_err(|e| e.clone())?;
    let Err(e) = schemas.validate(v, if date_time { *dt } else { *date }) else { return Ok(()) };
    let mut issues = Vec::new();
    leaves(&e, &mut issues);
    Err(issues.into_iter().map(|i| i.message).collect::<Vec<_>>().join("; ").into())
}

/// RFC 3339's `full-date`: boon reads its numbers with `usize::parse`, which also takes a
/// leading `+` (`"+026-11-20"` passed), so a `+` is refused before boon's own check.
fn strict_date(v: &Value) -> Result<(), Box<dyn std::error::Error>> {
    match v {
        Value::String(s) if s.contains('+') => Err("a date has only digits and hyphens".into()),
        _ => builtin_format(v, false),
    }
}

/// RFC 3339's `date-time`: a `+` only as the offset's sign (`…+05:30`), then boon's check.
fn strict_date_time(v: &Value) -> Result<(), Box<dyn std::error::Error>> {
    match v {
        Value::String(s) if s.match_indices('+').any(|(i, _)| i + 6 != s.len()) => {
            Err("a date-time has a `+` only as its offset's sign".into())
        }
        _ => builtin_format(v, true),
    }
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

/// The leaves of a validation error tree (the violations themselves; a branch only groups
/// them, e.g. "properties … failed"), each once per path and message.
fn leaves(e: &boon::ValidationError<'_, '_>, out: &mut Vec<Issue>) {
    if e.causes.is_empty() {
        let issue = Issue::new(dotted(&e.instance_location.to_string()), "schema_violation", e.kind.to_string());
        if !out.contains(&issue) {
            out.push(issue);
        }
    }
    for c in &e.causes {
        leaves(c, out);
    }
}

/// Every schema violation of `detail` for `t`, against the schema of the version it declares.
pub fn violations(t: EventType, detail: &Value) -> Result<Vec<Issue>, O2cError> {
    let version = version_of(t, detail);
    match CONTRACTS.get(&(t, version)).map(|slot| slot.get_or_init(|| compile(t, version))) {
        Some(Ok((schemas, index))) => {
            let mut issues = Vec::new();
            if let Err(e) = schemas.validate(detail, *index) {
                leaves(&e, &mut issues);
            }
            Ok(issues)
        }
        Some(Err(e)) => Err(O2cError::Bug(format!("schema of {} v{version} does not compile: {e}", t.detail_type()))),
        None => Err(O2cError::Bug(format!("no schema for {}", t.detail_type()))),
    }
}

/// Validates against the schema of the declared version, then upcasts and decodes into the
/// typed event.
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
            for v in t.versions() {
                let d = serde_json::json!({"event_version": v});
                assert!(violations(*t, &d).is_ok_and(|i| !i.is_empty()), "{} v{v}", t.detail_type());
            }
        }
    }

    #[test]
    fn when_a_v1_closed_won_breaks_its_contract_should_name_the_v1_paths_and_a_v2_the_v2_paths() {
        let base = serde_json::json!({"event_id": "e", "correlation_id": "c", "occurred_at": "2026-11-20T09:30:00Z"});
        let mut v1 = base.clone();
        v1["event_version"] = "1".into();
        v1["payload"] = serde_json::json!({"opportunity_id": "o", "revision": 1, "amount": 5, "total_value": {"amount": "5"}});
        let Err(O2cError::Validation(issues)) = decode("OpportunityClosedWon", &v1) else { panic!("expected a validation error") };
        let fields: Vec<&str> = issues.iter().map(|i| i.field.as_str()).collect();
        assert!(fields.contains(&"payload.amount") && fields.contains(&"payload"), "v1 has no total_value: {fields:?}");
        let mut v2 = base;
        v2["event_version"] = "2".into();
        v2["payload"] = serde_json::json!({"opportunity_id": "o", "revision": 1, "amount": "5", "total_value": {"amount": 5}, "opportunity_type": "upsell"});
        let Err(O2cError::Validation(issues)) = decode("OpportunityClosedWon", &v2) else { panic!("expected a validation error") };
        let fields: Vec<&str> = issues.iter().map(|i| i.field.as_str()).collect();
        for f in ["payload", "payload.total_value.amount", "payload.opportunity_type"] {
            assert!(fields.contains(&f), "{f}: {fields:?}");
        }
        let mut v3 = v2.clone();
        v3["event_version"] = "3".into();
        let Err(O2cError::Validation(issues)) = decode("OpportunityClosedWon", &v3) else { panic!("expected a validation error") };
        assert!(issues.iter().any(|i| i.field == "event_version"), "{issues:?}");
    }

    #[test]
    fn when_a_date_or_date_time_has_a_plus_sign_for_a_digit_should_be_a_violation() {
        let base = serde_json::json!({"event_id": "e", "event_version": "1", "correlation_id": "c", "occurred_at": "2026-11-20T09:30:00Z",
            "payload": {"opportunity_id": "o", "revision": 1}});
        let fields = |at: &str| {
            let mut d = base.clone();
            d["occurred_at"] = at.into();
            violations(EventType::OpportunityClosedWon, &d).unwrap().into_iter().map(|i| i.field).collect::<Vec<_>>()
        };
        for bad in [
            "+026-11-20T09:30:00Z",
            "2026-+1-20T09:30:00Z",
            "2026-11-20T+9:30:00Z",
            "2026-11-20T09:30:00-+5:30",
            "2026-11-20T09:30:00+5:300",
        ] {
            assert!(fields(bad).contains(&"occurred_at".to_owned()), "{bad} accepted");
        }
        for good in ["2026-11-20T09:30:00Z", "2026-11-20T09:30:00+05:30", "2026-11-20T09:30:00.5-01:00", "2024-02-29t23:59:60z"] {
            assert!(!fields(good).contains(&"occurred_at".to_owned()), "{good} refused");
        }
        for (bad, good) in [("+026-11-20", "2026-11-20"), ("2026-+1-20", "2026-01-20")] {
            assert!(strict_date(&Value::from(bad)).is_err() && strict_date(&Value::from(good)).is_ok(), "{bad} / {good}");
        }
        assert!(strict_date(&Value::from("2026-02-30")).is_err(), "boon's own check still runs");
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
