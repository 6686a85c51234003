//! Event contracts: the envelope carried in EventBridge `detail`, the business event types
//! (`source` / `detail-type`) and their payloads.
//!
//! Every event type has a JSON Schema per version in `events/schemas/<DetailType>.v<N>.json`;
//! tests prove there is no drift between these types and the schemas. A type may be read in
//! several versions side by side ([`EventType::versions`]): the payload type is the latest,
//! and an older `detail` is upcast to it before it is decoded ([`upcast`]), so the steps only
//! ever see one shape.
//!
//! Idempotency: `idempotency_key` is the business identity of the event (e.g.
//! `crm:opportunity:0061:closed-won:r3`). When a producer omits it, it is derived as the
//! SHA-256 of the detail-type and the canonical (key-sorted) JSON payload, so two identical
//! posts are one event and a changed payload is a different one.

use crate::ids::{EngagementId, IdempotencyKey};
use chrono::{DateTime, Utc};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

/// Version of the envelope and payload contracts o2c's own events carry (every type o2c
/// emits is at version 1; see [`EventType::versions`] for what this build reads).
pub const EVENT_VERSION: &str = "1";

/// The envelope carried in EventBridge `detail`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Envelope<P> {
    /// Unique id of this event (UUID). Distinct from the EventBridge `id`, which changes on re-publish.
    pub event_id: String,
    /// Contract version of the payload (`"1"`).
    pub event_version: String,
    /// Id shared by every event of one business flow (the closed-won starts it).
    pub correlation_id: String,
    /// `event_id` of the event that caused this one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub causation_id: Option<String>,
    /// When the business fact happened.
    pub occurred_at: DateTime<Utc>,
    /// Business identity for deduplication (derived from the payload when absent).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub idempotency_key: Option<String>,
    /// The typed payload.
    pub payload: P,
}

impl<P: Serialize> Envelope<P> {
    /// Its metadata as an event of type `t`.
    pub fn meta(&self, t: EventType) -> EventMeta {
        EventMeta {
            event_id: self.event_id.clone(),
            correlation_id: self.correlation_id.clone(),
            causation_id: self.causation_id.clone(),
            occurred_at: self.occurred_at,
            idempotency_key: self.effective_idempotency_key(t),
        }
    }

    /// The idempotency key as given, or derived (see module docs).
    pub fn effective_idempotency_key(&self, event_type: EventType) -> IdempotencyKey {
        match &self.idempotency_key {
            Some(k) if !k.trim().is_empty() => IdempotencyKey::new(k.clone()),
            _ => {
                let payload = serde_json::to_value(&self.payload).unwrap_or(serde_json::Value::Null);
                IdempotencyKey::new(format!("derived:{}:{}", event_type.detail_type(), payload_hash(event_type, &payload)))
            }
        }
    }
}

/// SHA-256 (hex) of the detail-type and the canonical JSON of a payload.
pub fn payload_hash(event_type: EventType, payload: &serde_json::Value) -> String {
    let mut h = Sha256::new();
    h.update(event_type.detail_type().as_bytes());
    h.update([0u8]);
    h.update(canonical_json(payload).as_bytes());
    hex::encode(h.finalize())
}

/// JSON text with object keys sorted recursively, independent of serde_json's map features.
pub fn canonical_json(v: &serde_json::Value) -> String {
    use serde_json::Value;
    fn write(v: &Value, out: &mut String) {
        match v {
            Value::Object(m) => {
                let mut keys: Vec<&String> = m.keys().collect();
                keys.sort();
                out.push('{');
                for (i, k) in keys.iter().enumerate() {
                    if i > 0 {
                        out.push(',');
                    }
                    out.push_str(&Value::String((*k).clone()).to_string());
                    out.push(':');
                    if let Some(x) = m.get(*k) {
                        write(x, out);
                    }
                }
                out.push('}');
            }
            Value::Array(a) => {
                out.push('[');
                for (i, x) in a.iter().enumerate() {
                    if i > 0 {
                        out.push(',');
                    }
                    write(x, out);
                }
                out.push(']');
            }
            other => out.push_str(&other.to_string()),
        }
    }
    let mut s = String::new();
    write(v, &mut s);
    s
}

pub mod billing;
pub mod clm;
pub mod crm;
pub mod delivery;
pub mod exceptions;
pub mod finance;
pub mod intake;
pub mod provisioning;
pub mod reconciliation;
pub mod revenue;
pub mod upcast;

pub use billing::ProjectActivated;
pub use clm::ContractApproved;
pub use crm::{OpportunityClosedWon, OpportunityLine, OpportunityRole, OpportunityType, WireMoney};
pub use delivery::{DeliveryRejected, ExpenseApproved, MilestoneCompleted, ResourceAssigned, TimeApproved};
pub use exceptions::{
    COMMENT_MAX_CHARS, Compensation, ExceptionAction, ExceptionActionRequested, ExceptionKind, ExceptionRaised, ExceptionResolved,
    ResolutionOutcome, SOURCE_EVENT_MAX_BYTES, SourceEvent,
};
pub use finance::{
    AppliedLine, ErpInvoicePosted, InvoiceApprovalRefused, InvoiceApprovalRequested, InvoiceDecision, InvoicePosted, InvoiceReleased,
    InvoiceRunRequested, Payer, PaymentApplied, PaymentReceived, PaymentReversed, PaymentUnapplied,
};
pub use intake::{ContractCreated, EngagementRejected};
pub use provisioning::ProjectProvisioned;
pub use reconciliation::ReconciliationRequested;
pub use revenue::{RevenueRecognized, RevenueRunRequested};

/// The one declaration of every event type: its `detail-type` (the variant's name), its
/// EventBridge `source`, its payload type, and the engagement it belongs to. It generates
/// [`EventType`], [`BusinessEvent`] and their decoding, metadata, schema and sample
/// lookups — adding an event is one line here plus its payload, schema and sample.
macro_rules! event_catalog {
    ($( $variant:ident => $source:literal, $payload:ty, |$p:ident| $engagement:expr, $doc:literal; )*) => {
        /// Every business event o2c consumes or emits, named by its EventBridge `detail-type`.
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
        pub enum EventType {
            $( #[doc = $doc] $variant, )*
        }

        impl EventType {
            /// All event types.
            pub const ALL: &'static [EventType] = &[$(EventType::$variant),*];

            /// EventBridge `detail-type`.
            pub fn detail_type(self) -> &'static str {
                match self { $(EventType::$variant => stringify!($variant)),* }
            }

            /// EventBridge `source` of the producer.
            pub fn source(self) -> &'static str {
                match self { $(EventType::$variant => $source),* }
            }

            /// Parses a `detail-type`.
            pub fn from_detail_type(s: &str) -> Option<Self> {
                match s { $(stringify!($variant) => Some(EventType::$variant),)* _ => None }
            }

            /// The version 1 JSON Schema of the `detail` (`events/schemas/<DetailType>.v1.json`),
            /// compiled into the binary.
            fn schema_text_v1(self) -> &'static str {
                match self { $(EventType::$variant => include_str!(concat!("../../../../events/schemas/", stringify!($variant), ".v1.json"))),* }
            }

            /// The full EventBridge sample, relative to the repository root: in
            /// `events/samples/` for what the systems around o2c post (one engagement's
            /// story), in `events/catalog/` for o2c's own events and the paths the story
            /// does not take.
            pub fn sample_path(self) -> String {
                let dir = if self.in_story() { "samples" } else { "catalog" };
                format!("events/{dir}/{}.v1.json", self.detail_type())
            }
        }

        /// A decoded business event with its typed payload.
        #[derive(Debug, Clone, PartialEq)]
        // Short-lived values passed by move once; boxing would only add an allocation.
        #[allow(clippy::large_enum_variant)]
        pub enum BusinessEvent {
            $( #[doc = $doc] $variant(Envelope<$payload>), )*
        }

        impl BusinessEvent {
            /// Decodes an EventBridge `detail` given its `detail-type`.
            pub fn decode(detail_type: &str, detail: &serde_json::Value) -> Result<Self, DecodeError> {
                let t = EventType::from_detail_type(detail_type).ok_or_else(|| DecodeError::UnknownDetailType(detail_type.to_owned()))?;
                let detail = upcast::to_latest(t, detail);
                Ok(match t { $(EventType::$variant => Self::$variant(decode_as(t, &detail)?)),* })
            }

            /// The event's type.
            pub fn event_type(&self) -> EventType {
                match self { $(Self::$variant(_) => EventType::$variant),* }
            }

            /// Envelope metadata (ids, correlation) without the payload.
            pub fn meta(&self) -> EventMeta {
                match self { $(Self::$variant(e) => e.meta(EventType::$variant)),* }
            }

            /// The engagement the event belongs to (FIFO message group, state key).
            pub fn engagement_id(&self) -> EngagementId {
                match self { $(Self::$variant(e) => { let $p = &e.payload; $engagement }),* }
            }

            /// The whole `detail` (envelope and payload) as JSON.
            pub fn to_detail(&self) -> serde_json::Value {
                match self { $(Self::$variant(e) => serde_json::to_value(e).unwrap_or(serde_json::Value::Null)),* }
            }

            /// The payload as JSON (for hashing and storage).
            pub fn payload_json(&self) -> serde_json::Value {
                match self { $(Self::$variant(e) => serde_json::to_value(&e.payload).unwrap_or(serde_json::Value::Null)),* }
            }
        }
    };
}

event_catalog! {
    OpportunityClosedWon => "o2c.crm", OpportunityClosedWon, |p| engagement_id_for(&p.opportunity_id),
        "CRM: an opportunity reached Closed Won.";
    ContractApproved => "o2c.clm", ContractApproved, |p| engagement_id_for(&p.opportunity_id),
        "CLM: the statement of work was approved / signed.";
    ContractCreated => "o2c.intake", ContractCreated, |p| p.engagement_id.clone(),
        "o2c: a validated, enriched contract was created or amended before provisioning.";
    EngagementRejected => "o2c.intake", EngagementRejected, |p| p.engagement_id.clone(),
        "o2c: a closed-won failed validation; every reason is listed.";
    ProjectProvisioned => "o2c.provisioning", ProjectProvisioned, |p| p.engagement_id.clone(),
        "o2c: the project exists in PSA and ERP.";
    ProjectActivated => "o2c.billing", ProjectActivated, |p| p.engagement_id.clone(),
        "o2c: the billing schedule exists in the ERP; delivery may book time.";
    ResourceAssigned => "o2c.psa", ResourceAssigned, |p| p.engagement_id.clone(),
        "PSA: a resource was staffed (or re-staffed, or released) on the project.";
    TimeApproved => "o2c.psa", TimeApproved, |p| p.time_entry.engagement_id.clone(),
        "PSA: a time entry was approved (or corrected, or withdrawn).";
    ExpenseApproved => "o2c.psa", ExpenseApproved, |p| p.expense.engagement_id.clone(),
        "PSA / expense tool: an expense was approved (or corrected, or withdrawn).";
    MilestoneCompleted => "o2c.psa", MilestoneCompleted, |p| p.engagement_id.clone(),
        "PSA: a billing milestone was completed.";
    DeliveryRejected => "o2c.delivery", DeliveryRejected, |p| p.engagement_id.clone(),
        "o2c: a time entry or expense was refused, with every reason.";
    InvoiceRunRequested => "o2c.scheduler", InvoiceRunRequested, |p| p.engagement_id.clone().unwrap_or_else(|| EngagementId::new(FAN_OUT_ENGAGEMENT)),
        "Schedule / operator: bill one engagement, or every one whose cycle is due.";
    InvoiceApprovalRequested => "o2c.invoicing", InvoiceApprovalRequested, |p| p.engagement_id.clone(),
        "o2c: a draft invoice needs an approver.";
    InvoiceApproved => "o2c.approvals", InvoiceDecision, |p| p.engagement_id.clone(),
        "Approvals: an approver approved a draft invoice.";
    InvoiceRejected => "o2c.approvals", InvoiceDecision, |p| p.engagement_id.clone(),
        "Approvals: an approver rejected a draft invoice.";
    InvoiceApprovalRefused => "o2c.invoicing", InvoiceApprovalRefused, |p| p.engagement_id.clone(),
        "o2c: an approval decision was refused (role or segregation of duties).";
    InvoiceReleased => "o2c.invoicing", InvoiceReleased, |p| p.engagement_id.clone(),
        "o2c: an invoice is approved (or needs no approval) and goes to posting.";
    InvoicePosted => "o2c.invoicing", InvoicePosted, |p| p.engagement_id.clone(),
        "o2c: an invoice was numbered and posted in the ERP.";
    ErpInvoicePosted => "o2c.erp", ErpInvoicePosted, |p| p.engagement_id.clone(),
        "ERP: an invoice was posted (or changed) against an engagement — reconciled against what o2c issued.";
    PaymentReceived => "o2c.bank", PaymentReceived, |p| EngagementId::new(receivables_owner(&p.legal_entity_id)),
        "Bank / payment platform: a payment was credited (or returned) on a legal entity's account.";
    PaymentApplied => "o2c.cash", PaymentApplied, |p| EngagementId::new(receivables_owner(&p.legal_entity_id)),
        "o2c: a payment was applied to invoices (what is left is unapplied).";
    PaymentUnapplied => "o2c.cash", PaymentUnapplied, |p| EngagementId::new(receivables_owner(&p.legal_entity_id)),
        "o2c: cash that paid no invoice: customer credit, suspense, or an exception.";
    PaymentReversed => "o2c.cash", PaymentReversed, |p| EngagementId::new(receivables_owner(&p.legal_entity_id)),
        "o2c: a returned payment or chargeback re-opened the invoices it paid.";
    RevenueRunRequested => "o2c.scheduler", RevenueRunRequested, |p| p.engagement_id.clone().unwrap_or_else(|| EngagementId::new(FAN_OUT_ENGAGEMENT)),
        "Schedule / operator: recognise revenue for an accounting period, for one engagement or every active one.";
    RevenueRecognized => "o2c.revenue", RevenueRecognized, |p| p.engagement_id.clone(),
        "o2c: a revenue journal for an accounting period was posted in the ERP.";
    ReconciliationRequested => "o2c.scheduler", ReconciliationRequested, |p| p.engagement_id.clone().unwrap_or_else(|| EngagementId::new(FAN_OUT_ENGAGEMENT)),
        "Schedule / operator: compare what the CRM, PSA and ERP hold with o2c, for one engagement or every active one.";
    ExceptionRaised => "o2c.exceptions", ExceptionRaised, |p| p.engagement_id.clone(),
        "o2c: a step could not complete and needs an operator (failure / exception event).";
    ExceptionActionRequested => "o2c.operator", ExceptionActionRequested, |p| p.engagement_id.clone(),
        "Operator: assign, comment on, retry, resolve or waive an exception.";
    ExceptionResolved => "o2c.exceptions", ExceptionResolved, |p| p.engagement_id.clone(),
        "o2c: an exception closed — its condition cleared, or an operator resolved or waived it.";
}

/// One reason a message was rejected: a JSON path, a stable code and a human message.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Issue {
    /// JSON path of the offending field within the payload (`lines[1].billing_model`).
    pub field: String,
    /// Stable machine code (`missing`, `unknown_customer`, …).
    pub code: String,
    /// Explanation for operators.
    pub message: String,
}

impl Issue {
    /// A new issue.
    pub fn new(field: impl Into<String>, code: impl Into<String>, message: impl Into<String>) -> Self {
        Self { field: field.into(), code: code.into(), message: message.into() }
    }
}

/// Why a `detail` could not be decoded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    /// The `detail-type` is not one of [`EventType`].
    #[error("unknown detail-type `{0}`")]
    UnknownDetailType(String),
    /// The envelope or payload does not match the contract.
    #[error("invalid {detail_type} detail at `{path}`: {message}")]
    Invalid {
        /// Detail type.
        detail_type: String,
        /// JSON path of the first error.
        path: String,
        /// Message.
        message: String,
    },
    /// The envelope's `event_version` is not one this build reads for its type.
    #[error("unsupported event_version `{version}` (this build reads {})", supported.join(", "))]
    UnsupportedVersion {
        /// The version the detail carries.
        version: String,
        /// The versions this build reads for the type, oldest first.
        supported: &'static [&'static str],
    },
}

/// Decodes an (already upcast) detail into the latest payload type of `t`.
///
/// The envelope is read untyped and then its payload typed: the envelope's decoding is
/// compiled once, not once per payload type (about 9 KiB of each function per event type).
fn decode_as<P: DeserializeOwned>(t: EventType, detail: &serde_json::Value) -> Result<Envelope<P>, DecodeError> {
    let invalid = |e: serde_json::Error| DecodeError::Invalid {
        detail_type: t.detail_type().to_owned(),
        path: String::from("detail"),
        message: e.to_string(),
    };
    let env = Envelope::<serde_json::Value>::deserialize(detail).map_err(invalid)?;
    let payload = P::deserialize(&env.payload).map_err(invalid)?;
    if env.event_version != t.latest_version() {
        return Err(DecodeError::UnsupportedVersion { version: env.event_version, supported: t.versions() });
    }
    let Envelope { event_id, event_version, correlation_id, causation_id, occurred_at, idempotency_key, payload: _ } = env;
    Ok(Envelope { event_id, event_version, correlation_id, causation_id, occurred_at, idempotency_key, payload })
}

/// The id cash events of a legal entity are handled and audited under (`RCV-<entity>`): a
/// payment belongs to a customer account, not to one engagement.
pub fn receivables_owner(legal_entity_id: &str) -> String {
    format!("RCV-{legal_entity_id}")
}

/// The engagement id a fan-out event (no engagement) is handled under.
pub const FAN_OUT_ENGAGEMENT: &str = "ENG-*";

/// Envelope metadata of a decoded event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EventMeta {
    /// `event_id`.
    pub event_id: String,
    /// `correlation_id`.
    pub correlation_id: String,
    /// `causation_id`.
    pub causation_id: Option<String>,
    /// `occurred_at`.
    pub occurred_at: DateTime<Utc>,
    /// Effective idempotency key.
    pub idempotency_key: IdempotencyKey,
}

/// The engagement id o2c assigns to an opportunity (`ENG-<opportunity id>`): deterministic,
/// so every duplicate and every related event lands on the same state item.
pub fn engagement_id_for(opportunity_id: &str) -> EngagementId {
    EngagementId::for_opportunity(opportunity_id)
}

/// An event a step decided to emit, ready for a publisher.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct OutgoingEvent {
    /// Type (gives `source` and `detail-type`).
    pub event_type: EventType,
    /// Engagement it concerns (FIFO group).
    pub engagement_id: EngagementId,
    /// The full `detail` (envelope with payload).
    pub detail: serde_json::Value,
}

impl OutgoingEvent {
    /// Builds an outgoing event. `event_id` is a UUIDv5 of the causing event and the
    /// idempotency key, so a step that re-runs emits byte-identical events.
    pub fn new<P: Serialize>(
        event_type: EventType,
        engagement_id: &str,
        cause: &EventMeta,
        idempotency_key: String,
        occurred_at: DateTime<Utc>,
        payload: &P,
    ) -> Self {
        let event_id = uuid::Uuid::new_v5(
            &uuid::Uuid::NAMESPACE_OID,
            format!("{}|{}|{}", cause.event_id, event_type.detail_type(), idempotency_key).as_bytes(),
        )
        .to_string();
        let detail = serde_json::json!({
            "event_id": event_id,
            "event_version": EVENT_VERSION,
            "correlation_id": cause.correlation_id,
            "causation_id": cause.event_id,
            "occurred_at": occurred_at,
            "idempotency_key": idempotency_key,
            "payload": payload,
        });
        Self { event_type, engagement_id: EngagementId::new(engagement_id), detail }
    }

    /// `source` for EventBridge.
    pub fn source(&self) -> &'static str {
        self.event_type.source()
    }

    /// `detail-type` for EventBridge.
    pub fn detail_type(&self) -> &'static str {
        self.event_type.detail_type()
    }

    /// The `event_id` inside the detail.
    pub fn event_id(&self) -> &str {
        self.detail.get("event_id").and_then(|v| v.as_str()).unwrap_or_default()
    }
}

impl EventType {
    /// Every contract version this build reads for the type, oldest first. The last is the
    /// one its payload type has; each older one has an upcaster ([`upcast`]).
    pub fn versions(self) -> &'static [&'static str] {
        match self {
            Self::OpportunityClosedWon => &["1", "2"],
            _ => &["1"],
        }
    }

    /// The version the payload type has (what a decoded event is, whatever it was sent as).
    pub fn latest_version(self) -> &'static str {
        self.versions().last().copied().unwrap_or(EVENT_VERSION)
    }

    /// The JSON Schema of one version of the `detail` (`events/schemas/<DetailType>.v<N>.json`,
    /// compiled into the binary), or `None` for a version this build does not read.
    pub fn schema_text_of(self, version: &str) -> Option<&'static str> {
        match (self, version) {
            (Self::OpportunityClosedWon, "2") => Some(include_str!("../../../../events/schemas/OpportunityClosedWon.v2.json")),
            (t, "1") => Some(t.schema_text_v1()),
            _ => None,
        }
    }

    /// The JSON Schema of the latest version.
    pub fn schema_text(self) -> &'static str {
        self.schema_text_of(self.latest_version()).unwrap_or_else(|| self.schema_text_v1())
    }

    /// Every sample of the type, one per version (see [`Self::sample_path`]).
    pub fn sample_paths(self) -> Vec<String> {
        let dir = if self.in_story() { "samples" } else { "catalog" };
        self.versions().iter().map(|v| format!("events/{dir}/{}.v{v}.json", self.detail_type())).collect()
    }

    /// Whether this type's sample belongs to the story in `events/samples/`: what the
    /// systems around o2c post for one engagement (Globex's programme), from closed-won to
    /// cash and revenue, which `o2c run events/samples/*.json` plays without a parked
    /// message or a dead letter.
    pub fn in_story(self) -> bool {
        matches!(
            self,
            Self::OpportunityClosedWon
                | Self::ContractApproved
                | Self::ResourceAssigned
                | Self::TimeApproved
                | Self::ExpenseApproved
                | Self::MilestoneCompleted
                | Self::InvoiceRunRequested
                | Self::ReconciliationRequested
                | Self::InvoiceApproved
                | Self::RevenueRunRequested
                | Self::PaymentReceived
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn when_keys_are_unordered_should_hash_identically() {
        let a: serde_json::Value = serde_json::from_str(r#"{"b":1,"a":{"y":2,"x":[1,{"d":1,"c":2}]}}"#).unwrap();
        let b: serde_json::Value = serde_json::from_str(r#"{"a":{"x":[1,{"c":2,"d":1}],"y":2},"b":1}"#).unwrap();
        assert_eq!(canonical_json(&a), canonical_json(&b));
        assert_eq!(payload_hash(EventType::TimeApproved, &a), payload_hash(EventType::TimeApproved, &b));
        assert_ne!(payload_hash(EventType::TimeApproved, &a), payload_hash(EventType::ExpenseApproved, &a));
    }

    #[test]
    fn when_detail_type_round_trips_should_match_every_type() {
        for t in EventType::ALL {
            assert_eq!(EventType::from_detail_type(t.detail_type()), Some(*t));
            assert!(t.source().starts_with("o2c."));
        }
        assert_eq!(EventType::from_detail_type("Nope"), None);
    }

    #[test]
    fn when_envelope_version_is_unknown_should_refuse() {
        let detail = serde_json::json!({
            "event_id": "e1", "event_version": "9", "correlation_id": "c", "occurred_at": "2026-01-01T00:00:00Z",
            "payload": {"opportunity_id": "o", "clm_agreement_id": "a", "approved_at": "2026-01-01T00:00:00Z", "approver_id": "u"}
        });
        assert_eq!(
            BusinessEvent::decode("ContractApproved", &detail),
            Err(DecodeError::UnsupportedVersion { version: "9".into(), supported: &["1"] })
        );
    }

    #[test]
    fn when_idempotency_key_is_absent_should_derive_from_payload() {
        let detail = serde_json::json!({
            "event_id": "e1", "event_version": "1", "correlation_id": "c", "occurred_at": "2026-01-01T00:00:00Z",
            "payload": {"opportunity_id": "o", "clm_agreement_id": "a", "approved_at": "2026-01-01T00:00:00Z", "approver_id": "u"}
        });
        let ev = BusinessEvent::decode("ContractApproved", &detail).unwrap();
        let mut other = detail.clone();
        other["event_id"] = "e2".into();
        let ev2 = BusinessEvent::decode("ContractApproved", &other).unwrap();
        assert!(ev.meta().idempotency_key.starts_with("derived:ContractApproved:"));
        assert_eq!(ev.meta().idempotency_key, ev2.meta().idempotency_key);
    }
}
