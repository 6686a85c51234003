//! A vendor payload through its mapping, as both ingestion doors use it — `o2c serve`'s
//! `POST /v1/ingest/{vendor}/{object}` and the AWS ingestion function behind the stack's
//! HTTP API: the `PutEvents` entries it becomes, or the rejection it is parked as (every
//! failing path, what the mapping marks secret redacted), and the answers of both.

use chrono::{DateTime, Utc};
use o2c_app::bus::PutEventsEntry;
use o2c_app::ports::{RejectedMessage, rejection_id_for};
use o2c_domain::events::Issue;
use serde_json::{Value, json};

use crate::spec::{Format, Mapping};
use crate::{MapIssue, Mapped};

/// Reads `body` as the mapping's format and maps it: its events, or every failing path —
/// including an event `PutEvents` would refuse (over its 256 KB entry limit), which would
/// otherwise fail every retry of the vendor's and end nowhere.
pub fn map(mapping: &Mapping, body: &[u8]) -> Result<Vec<Mapped>, Vec<MapIssue>> {
    let mapped = mapping.read(body).map_err(|i| vec![i]).and_then(|doc| mapping.apply(&doc))?;
    let at = |i: usize| if mapped.len() > 1 { format!("[{i}].detail") } else { "detail".to_owned() };
    let issues: Vec<MapIssue> = entries(&mapped)
        .iter()
        .enumerate()
        .filter_map(|(i, e)| {
            o2c_app::bus::validate_entry(e).err().map(|err| MapIssue { field: at(i), path: String::new(), message: err.message })
        })
        .collect();
    if issues.is_empty() { Ok(mapped) } else { Err(issues) }
}

/// The `PutEvents` entries of mapped events (on the stage's bus).
pub fn entries(mapped: &[Mapped]) -> Vec<PutEventsEntry> {
    mapped
        .iter()
        .map(|m| PutEventsEntry {
            source: Some(m.source.clone()),
            detail_type: Some(m.detail_type.clone()),
            detail: Some(m.detail.to_string()),
            ..Default::default()
        })
        .collect()
}

/// The step name an unmappable payload is parked under (`ingest:<mapping>`).
pub fn step(mapping: &Mapping) -> String {
    format!("ingest:{}", mapping.name)
}

/// The rejection an unmappable payload is parked as, for an operator to repair: the body
/// with the mapping's `redact` paths replaced (a JSON body that parses; any other is kept
/// as received), every issue with the path it read.
pub fn rejection(mapping: &Mapping, body: &[u8], issues: &[MapIssue], now: DateTime<Utc>, message_id: String) -> RejectedMessage {
    let step = step(mapping);
    let text = match mapping.read(body) {
        Ok(doc) if mapping.format == Format::Json => mapping.redacted(doc).to_string(),
        _ => String::from_utf8_lossy(body).into_owned(),
    };
    let reasons: Vec<Issue> =
        issues.iter().map(|i| Issue::new(i.field.clone(), "unmappable", format!("{} (from {})", i.message, i.path))).collect();
    RejectedMessage {
        rejection_id: rejection_id_for(&step, &text),
        step,
        rejected_at: now,
        last_rejected_at: None,
        deliveries: 1,
        message_ids: vec![message_id],
        source: Some(mapping.emit.source.clone()),
        detail_type: Some(mapping.emit.event_type.detail_type().to_owned()),
        event_id: None,
        correlation_id: None,
        engagement_id: None,
        error_type: "O2c.Validation".into(),
        reasons,
        body: text,
    }
}

/// The `422` answer to an unmappable payload (`UnmappablePayload`, every issue).
pub fn refused(mapping: &Mapping, issues: &[MapIssue], rejection_id: &str) -> Value {
    json!({
        "ErrorCode": "UnmappablePayload",
        "ErrorMessage": format!("{} issue(s) mapping by {} v{}; parked as {rejection_id}", issues.len(), mapping.name, mapping.version),
        "Issues": issues,
    })
}

/// The `200` answer: as `PutEvents` answers, with the mapping and its version.
pub fn accepted<E: serde::Serialize>(mapping: &Mapping, failed: usize, entries: &[E]) -> Value {
    json!({"Mapping": mapping.name, "Version": mapping.version, "FailedEntryCount": failed, "Entries": entries})
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    const STRIPE: &str = include_str!("../../../mappings/stripe/payment_intent.succeeded.yaml");
    const EXAMPLE: &str = include_str!("../../../mappings/stripe/payment_intent.succeeded.example.json");

    #[test]
    fn when_a_mapped_event_exceeds_the_putevents_entry_limit_should_refuse_it_with_its_path() {
        let mapping = Mapping::from_yaml("stripe/payment_intent.succeeded.yaml", STRIPE).unwrap();
        let mut doc: Value = serde_json::from_str(EXAMPLE).unwrap();
        assert_eq!(map(&mapping, doc.to_string().as_bytes()).map(|m| m.len()), Ok(1), "the example maps");
        // The remittance text is copied into the event: 300,000 characters of it cannot be published.
        doc["data"]["object"]["description"] = Value::String("x".repeat(300_000));
        let issues = map(&mapping, doc.to_string().as_bytes()).unwrap_err();
        assert_eq!(issues.len(), 1, "{issues:?}");
        assert_eq!(issues[0].field, "detail");
        assert!(issues[0].message.contains("256 KB"), "{}", issues[0].message);
    }
}
