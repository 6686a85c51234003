//! EventBridge wire shapes shared by the embedded bus and the AWS publisher: `PutEvents`
//! request entries, their validation and size accounting, and the event envelope a rule
//! delivers to an SQS target.

use chrono::{DateTime, SecondsFormat, Utc};
use o2c_domain::events::OutgoingEvent;
use serde::{Deserialize, Serialize};

/// EventBridge limit: one `PutEvents` entry may be at most 256 KB (262,144 bytes),
/// counted as [`entry_size`] does.
pub const MAX_ENTRY_BYTES: usize = 256 * 1024;
/// EventBridge limit: at most 10 entries per `PutEvents` request.
pub const MAX_ENTRIES_PER_PUT: usize = 10;

/// One `PutEvents` entry (PascalCase, as the API and `aws events put-events` take it).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct PutEventsEntry {
    /// Producer, e.g. `o2c.crm`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source: Option<String>,
    /// Event type, e.g. `OpportunityClosedWon`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub detail_type: Option<String>,
    /// JSON object **as a string**.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
    /// Target bus name or ARN.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub event_bus_name: Option<String>,
    /// Event time.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub time: Option<DateTime<Utc>>,
    /// Resource ARNs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resources: Option<Vec<String>>,
}

/// A `PutEvents` request body.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct PutEventsRequest {
    /// Entries (at most [`MAX_ENTRIES_PER_PUT`]).
    pub entries: Vec<PutEventsEntry>,
}

/// Result for one entry, like EventBridge's `PutEventsResultEntry`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct PutEventsResultEntry {
    /// Assigned event id on success.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub event_id: Option<String>,
    /// Error code on failure.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error_code: Option<String>,
    /// Error message on failure.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error_message: Option<String>,
}

/// A `PutEvents` response body.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct PutEventsResponse {
    /// Number of failed entries.
    pub failed_entry_count: usize,
    /// One result per request entry, in order.
    pub entries: Vec<PutEventsResultEntry>,
}

/// Why an entry was refused (EventBridge error codes).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{code}: {message}")]
pub struct EntryError {
    /// `InvalidArgument`, `MalformedDetail`, …
    pub code: &'static str,
    /// Message.
    pub message: String,
}

/// Entry size as EventBridge computes it: 14 bytes for `Time` when set, plus the UTF-8
/// bytes of `Source`, `DetailType`, `Detail` and each resource.
pub fn entry_size(e: &PutEventsEntry) -> usize {
    let s = |o: &Option<String>| o.as_ref().map_or(0, String::len);
    (if e.time.is_some() { 14 } else { 0 })
        + s(&e.source)
        + s(&e.detail_type)
        + s(&e.detail)
        + e.resources.as_ref().map_or(0, |r| r.iter().map(String::len).sum())
}

/// Validates an entry the way EventBridge does before accepting it.
pub fn validate_entry(e: &PutEventsEntry) -> Result<serde_json::Value, EntryError> {
    let required = |v: &Option<String>, name: &str| match v.as_deref().map(str::trim) {
        Some(s) if !s.is_empty() => Ok(()),
        _ => Err(EntryError { code: "InvalidArgument", message: format!("Parameter {name} is not valid.") }),
    };
    required(&e.source, "Source")?;
    required(&e.detail_type, "DetailType")?;
    required(&e.detail, "Detail")?;
    let size = entry_size(e);
    if size > MAX_ENTRY_BYTES {
        return Err(EntryError {
            code: "InvalidArgument",
            message: format!("Entry is {size} bytes; the PutEvents limit is {MAX_ENTRY_BYTES} bytes (256 KB)."),
        });
    }
    let detail: serde_json::Value = serde_json::from_str(e.detail.as_deref().unwrap_or_default())
        .map_err(|err| EntryError { code: "MalformedDetail", message: format!("Detail is not valid JSON: {err}") })?;
    if !detail.is_object() {
        return Err(EntryError { code: "MalformedDetail", message: "Detail must be a JSON object.".into() });
    }
    Ok(detail)
}

/// The event a rule delivers to a target (what an SQS message body holds).
pub fn eventbridge_event(
    e: &PutEventsEntry,
    detail: serde_json::Value,
    id: &str,
    account: &str,
    region: &str,
    now: DateTime<Utc>,
) -> serde_json::Value {
    serde_json::json!({
        "version": "0",
        "id": id,
        "detail-type": e.detail_type.clone().unwrap_or_default(),
        "source": e.source.clone().unwrap_or_default(),
        "account": account,
        "time": e.time.unwrap_or(now).to_rfc3339_opts(SecondsFormat::Secs, true),
        "region": region,
        "resources": e.resources.clone().unwrap_or_default(),
        "detail": detail,
    })
}

/// The `PutEvents` entry for an event a step emits.
pub fn entry_for(event: &OutgoingEvent, bus_name: &str) -> PutEventsEntry {
    PutEventsEntry {
        source: Some(event.source().to_owned()),
        detail_type: Some(event.detail_type().to_owned()),
        detail: Some(event.detail.to_string()),
        event_bus_name: Some(bus_name.to_owned()),
        time: event
            .detail
            .get("occurred_at")
            .and_then(|t| t.as_str())
            .and_then(|t| DateTime::parse_from_rfc3339(t).ok())
            .map(|t| t.with_timezone(&Utc)),
        resources: None,
    }
}

/// Input accepted by `o2c run` / `o2c send`: a JSON value that is an EventBridge event
/// (as a rule delivers it), a `PutEvents` entry, a `PutEvents` request (`Entries`), an
/// SQS event (`Records` whose bodies are EventBridge events) or an array of those.
pub fn entries_from_json(v: &serde_json::Value) -> Result<Vec<PutEventsEntry>, String> {
    use serde_json::Value;
    match v {
        Value::Array(items) => {
            let mut out = Vec::new();
            for (i, item) in items.iter().enumerate() {
                out.extend(entries_from_json(item).map_err(|e| format!("[{i}]: {e}"))?);
            }
            Ok(out)
        }
        Value::Object(m) if m.contains_key("Entries") => {
            let req: PutEventsRequest = serde_json::from_value(v.clone()).map_err(|e| format!("not a PutEvents request: {e}"))?;
            Ok(req.entries)
        }
        Value::Object(m) if m.contains_key("Records") => {
            let records = m.get("Records").and_then(Value::as_array).ok_or("Records must be an array")?;
            let mut out = Vec::new();
            for (i, r) in records.iter().enumerate() {
                let body = r.get("body").and_then(Value::as_str).ok_or_else(|| format!("Records[{i}] has no body"))?;
                let inner: Value = serde_json::from_str(body).map_err(|e| format!("Records[{i}].body is not JSON: {e}"))?;
                out.extend(entries_from_json(&inner).map_err(|e| format!("Records[{i}].body: {e}"))?);
            }
            Ok(out)
        }
        Value::Object(m) if m.contains_key("detail-type") => {
            let detail = m.get("detail").ok_or("EventBridge event without detail")?;
            Ok(vec![PutEventsEntry {
                source: m.get("source").and_then(Value::as_str).map(str::to_owned),
                detail_type: m.get("detail-type").and_then(Value::as_str).map(str::to_owned),
                detail: Some(detail.to_string()),
                event_bus_name: None,
                time: m
                    .get("time")
                    .and_then(Value::as_str)
                    .and_then(|t| DateTime::parse_from_rfc3339(t).ok())
                    .map(|t| t.with_timezone(&Utc)),
                resources: m.get("resources").and_then(|r| serde_json::from_value(r.clone()).ok()),
            }])
        }
        Value::Object(m) if m.contains_key("DetailType") => {
            let entry: PutEventsEntry = serde_json::from_value(v.clone()).map_err(|e| format!("not a PutEvents entry: {e}"))?;
            Ok(vec![entry])
        }
        _ => Err("expected an EventBridge event, a PutEvents entry or request, or an SQS event".into()),
    }
}

/// Parses a file's text: one JSON document, or JSON Lines (one document per line).
pub fn entries_from_text(text: &str) -> Result<Vec<PutEventsEntry>, String> {
    match serde_json::from_str::<serde_json::Value>(text) {
        Ok(v) => entries_from_json(&v),
        Err(whole) => {
            let mut out = Vec::new();
            let mut any = false;
            for (n, line) in text.lines().enumerate() {
                let line = line.trim();
                if line.is_empty() {
                    continue;
                }
                any = true;
                let v: serde_json::Value = serde_json::from_str(line).map_err(|e| format!("line {}: not JSON: {e}", n + 1))?;
                out.extend(entries_from_json(&v).map_err(|e| format!("line {}: {e}", n + 1))?);
            }
            if !any {
                return Err(format!("not JSON: {whole}"));
            }
            Ok(out)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(detail: &str) -> PutEventsEntry {
        PutEventsEntry {
            source: Some("o2c.crm".into()),
            detail_type: Some("OpportunityClosedWon".into()),
            detail: Some(detail.into()),
            ..Default::default()
        }
    }

    #[test]
    fn when_entry_exceeds_256kb_should_refuse_with_clear_error() {
        let big = format!("{{\"x\":\"{}\"}}", "a".repeat(MAX_ENTRY_BYTES));
        let err = validate_entry(&entry(&big)).unwrap_err();
        assert_eq!(err.code, "InvalidArgument");
        assert!(err.message.contains("256 KB"));
        let fits = format!("{{\"x\":\"{}\"}}", "a".repeat(MAX_ENTRY_BYTES - 100));
        assert!(validate_entry(&entry(&fits)).is_ok());
    }

    #[test]
    fn when_detail_is_not_an_object_should_refuse() {
        assert_eq!(validate_entry(&entry("[1]")).unwrap_err().code, "MalformedDetail");
        assert_eq!(validate_entry(&entry("{nope")).unwrap_err().code, "MalformedDetail");
        let mut e = entry("{}");
        e.source = None;
        assert_eq!(validate_entry(&e).unwrap_err().code, "InvalidArgument");
    }

    #[test]
    fn when_input_is_jsonl_of_mixed_shapes_should_read_every_entry() {
        let text = r#"{"detail-type":"A","source":"s","detail":{"k":1}}
{"Source":"s","DetailType":"B","Detail":"{}"}
{"Entries":[{"Source":"s","DetailType":"C","Detail":"{}"}]}"#;
        let got: Vec<_> = entries_from_text(text).unwrap().into_iter().map(|e| e.detail_type.unwrap()).collect();
        assert_eq!(got, vec!["A", "B", "C"]);
        assert!(entries_from_text("{\"nope\":1}").is_err());
        assert!(entries_from_text("not json").unwrap_err().contains("line 1"));
    }
}
