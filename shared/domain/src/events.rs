//! Event contracts: the envelope carried in EventBridge `detail`, the business event types
//! (`source` / `detail-type`) and their payloads.
//!
//! Every event type has a JSON Schema per version in `events/schemas/<DetailType>.v<N>.json`;
//! tests prove there is no drift between these types and the schemas.
//!
//! Idempotency: `idempotency_key` is the business identity of the event (e.g.
//! `crm:opportunity:0061:closed-won:r3`). When a producer omits it, it is derived as the
//! SHA-256 of the detail-type and the canonical (key-sorted) JSON payload, so two identical
//! posts are one event and a changed payload is a different one.

use chrono::{DateTime, NaiveDate, Utc};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::model::{Expense, Payment, TimeEntry};
use crate::money::Money;

/// Version of the envelope and payload contracts this build emits.
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
    /// The idempotency key as given, or derived (see module docs).
    pub fn effective_idempotency_key(&self, event_type: EventType) -> String {
        match &self.idempotency_key {
            Some(k) if !k.trim().is_empty() => k.clone(),
            _ => {
                let payload = serde_json::to_value(&self.payload).unwrap_or(serde_json::Value::Null);
                format!("derived:{}:{}", event_type.detail_type(), payload_hash(event_type, &payload))
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

macro_rules! event_types {
    ($( $variant:ident => $source:literal, $doc:literal; )*) => {
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
        }
    };
}

event_types! {
    OpportunityClosedWon => "o2c.crm", "CRM: an opportunity reached Closed Won.";
    ContractApproved => "o2c.clm", "CLM: the statement of work was approved / signed.";
    ContractCreated => "o2c.intake", "o2c: a validated, enriched contract was created or amended before provisioning.";
    EngagementRejected => "o2c.intake", "o2c: a closed-won failed validation; every reason is listed.";
    ProjectProvisioned => "o2c.provisioning", "o2c: the project exists in PSA and ERP.";
    ProjectActivated => "o2c.billing", "o2c: the billing schedule exists in the ERP; delivery may book time.";
    TimeApproved => "o2c.psa", "PSA: a time entry was approved.";
    ExpenseApproved => "o2c.psa", "PSA / expense tool: an expense was approved.";
    MilestoneCompleted => "o2c.psa", "PSA: a billing milestone was completed.";
    InvoicePosted => "o2c.erp", "ERP: an invoice was posted to receivables.";
    PaymentReceived => "o2c.erp", "ERP / bank: a payment was received and applied.";
    ExceptionRaised => "o2c.exceptions", "o2c: a step could not complete and needs an operator (failure / exception event).";
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

/// A quoted role estimate on a T&M line, as the CRM sends it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct OpportunityRole {
    /// Role code.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub role: Option<String>,
    /// Estimated hours (decimal string).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hours: Option<String>,
}

/// An opportunity product line as the CRM sends it (attributes optional on the wire so
/// validation can report every missing one at once).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct OpportunityLine {
    /// Line id.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub line_id: Option<String>,
    /// Service catalog offering.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub service_offering_id: Option<String>,
    /// `time_and_materials` | `fixed_fee` | `milestone`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub billing_model: Option<String>,
    /// Line value (decimal string; not-to-exceed for T&M).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub amount: Option<String>,
    /// Description.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    /// Fixed fee: number of installments.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub installments: Option<u32>,
    /// Fixed fee: `monthly` | `quarterly`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub installment_frequency: Option<String>,
    /// T&M: estimated hours per role.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub roles: Vec<OpportunityRole>,
}

/// `OpportunityClosedWon` payload: the opportunity as the CRM sends it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct OpportunityClosedWon {
    /// CRM opportunity id (required).
    pub opportunity_id: String,
    /// Monotonic revision of the opportunity (a re-send with changes carries a higher one).
    pub revision: u64,
    /// Opportunity name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// Stage; must be `Closed Won`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stage: Option<String>,
    /// Customer master id of the account.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub account_id: Option<String>,
    /// Close date.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub close_date: Option<String>,
    /// ISO 4217 contract currency.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub currency: Option<String>,
    /// Total contract value (decimal string).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub amount: Option<String>,
    /// Contracting legal entity (defaults to the customer's).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub contracting_entity_id: Option<String>,
    /// Delivery region.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub delivery_region: Option<String>,
    /// Planned start.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub start_date: Option<String>,
    /// Planned end.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub end_date: Option<String>,
    /// Project template (defaults to the first line's offering template).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub project_template_id: Option<String>,
    /// Rate card for T&M lines.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rate_card_id: Option<String>,
    /// Payment terms (defaults to the customer's).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub payment_terms: Option<String>,
    /// Customer PO number.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub customer_po: Option<String>,
    /// CRM user id of the owner (an id, never a name or e-mail).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub owner_id: Option<String>,
    /// Lines.
    #[serde(default)]
    pub lines: Vec<OpportunityLine>,
}

/// `ContractApproved` payload from CLM.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ContractApproved {
    /// The opportunity the statement of work belongs to.
    pub opportunity_id: String,
    /// CLM document / agreement id.
    pub clm_agreement_id: String,
    /// Approval time.
    pub approved_at: DateTime<Utc>,
    /// Approver's user id.
    pub approver_id: String,
}

/// `ContractCreated` payload (a summary; consumers read the contract from the state store).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ContractCreated {
    /// Engagement id.
    pub engagement_id: String,
    /// Contract id.
    pub contract_id: String,
    /// Opportunity id.
    pub opportunity_id: String,
    /// Opportunity revision.
    pub revision: u64,
    /// Customer id.
    pub customer_id: String,
    /// Legal entity id.
    pub legal_entity_id: String,
    /// Total contract value.
    pub total_value: Money,
    /// CLM approval needed before provisioning.
    pub approval_required: bool,
}

/// `EngagementRejected` payload.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EngagementRejected {
    /// Engagement id.
    pub engagement_id: String,
    /// Opportunity id.
    pub opportunity_id: String,
    /// Opportunity revision rejected.
    pub revision: u64,
    /// Every reason.
    pub reasons: Vec<Issue>,
}

/// `ProjectProvisioned` payload.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ProjectProvisioned {
    /// Engagement id.
    pub engagement_id: String,
    /// PSA project id.
    pub psa_project_id: String,
    /// ERP project id.
    pub erp_project_id: String,
    /// Number of milestones created.
    pub milestone_count: u32,
}

/// `ProjectActivated` payload.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ProjectActivated {
    /// Engagement id.
    pub engagement_id: String,
    /// PSA project id.
    pub psa_project_id: String,
    /// ERP project id.
    pub erp_project_id: String,
    /// ERP billing schedule id.
    pub erp_billing_schedule_id: String,
    /// Fixed-value part of the schedule.
    pub fixed_total: Money,
    /// Sum of T&M caps.
    pub time_and_materials_cap: Money,
}

/// `TimeApproved` payload.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TimeApproved {
    /// The approved entry.
    pub time_entry: TimeEntry,
}

/// `ExpenseApproved` payload.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ExpenseApproved {
    /// The approved expense.
    pub expense: Expense,
}

/// `MilestoneCompleted` payload.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MilestoneCompleted {
    /// Engagement id.
    pub engagement_id: String,
    /// Milestone id (`<line>-<phase>`).
    pub milestone_id: String,
    /// PSA project id.
    pub psa_project_id: String,
    /// Completion date.
    pub completed_on: NaiveDate,
}

/// `InvoicePosted` payload.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct InvoicePosted {
    /// Engagement id.
    pub engagement_id: String,
    /// o2c invoice key.
    pub invoice_id: String,
    /// ERP document number.
    pub erp_invoice_id: String,
    /// Invoice total including tax.
    pub total: Money,
    /// Tax total.
    pub tax_total: Money,
    /// Posting date.
    pub posted_on: NaiveDate,
    /// Due date.
    pub due_date: NaiveDate,
}

/// `PaymentReceived` payload.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PaymentReceived {
    /// Engagement id.
    pub engagement_id: String,
    /// The payment.
    pub payment: Payment,
}

/// What kind of exception an engagement hit.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ExceptionKind {
    /// PSA or ERP refused the project; compensations listed.
    ProvisioningFailed,
    /// ERP refused the billing schedule.
    BillingSetupFailed,
    /// A changed closed-won arrived after provisioning: needs a change order.
    ChangeOrderRequired,
    /// The CRM refused the status write-back.
    CrmWritebackFailed,
    /// A message could not be processed and was parked (poison / bad input).
    MessageRejected,
    /// A message exhausted its receives (retryable failures) and went to its DLQ.
    DeadLettered,
}

/// A compensating action taken after a partial failure.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Compensation {
    /// System compensated (`psa`, `erp`).
    pub system: String,
    /// Action (`cancel_project`).
    pub action: String,
    /// Object affected.
    pub object_id: String,
    /// `pending` (owed, not yet performed), `done` or `failed: <reason>`.
    pub outcome: String,
}

/// `ExceptionRaised` payload.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ExceptionRaised {
    /// Exception id (stable per cause).
    pub exception_id: String,
    /// Engagement id.
    pub engagement_id: String,
    /// Kind.
    pub kind: ExceptionKind,
    /// Step that raised it.
    pub step: String,
    /// Operator-facing message.
    pub message: String,
    /// Compensations performed.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub compensations: Vec<Compensation>,
}

/// A decoded business event with its typed payload.
#[derive(Debug, Clone, PartialEq)]
#[allow(missing_docs)]
// Short-lived values passed by move once; boxing would only add an allocation.
#[allow(clippy::large_enum_variant)]
pub enum BusinessEvent {
    OpportunityClosedWon(Envelope<OpportunityClosedWon>),
    ContractApproved(Envelope<ContractApproved>),
    ContractCreated(Envelope<ContractCreated>),
    EngagementRejected(Envelope<EngagementRejected>),
    ProjectProvisioned(Envelope<ProjectProvisioned>),
    ProjectActivated(Envelope<ProjectActivated>),
    TimeApproved(Envelope<TimeApproved>),
    ExpenseApproved(Envelope<ExpenseApproved>),
    MilestoneCompleted(Envelope<MilestoneCompleted>),
    InvoicePosted(Envelope<InvoicePosted>),
    PaymentReceived(Envelope<PaymentReceived>),
    ExceptionRaised(Envelope<ExceptionRaised>),
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
    /// The envelope's `event_version` is not supported by this build.
    #[error("unsupported event_version `{0}` (this build reads version {EVENT_VERSION})")]
    UnsupportedVersion(String),
}

fn decode_as<P: DeserializeOwned>(detail_type: &str, detail: &serde_json::Value) -> Result<Envelope<P>, DecodeError> {
    let env: Envelope<P> = serde_json::from_value(detail.clone()).map_err(|e| DecodeError::Invalid {
        detail_type: detail_type.to_owned(),
        path: String::from("detail"),
        message: e.to_string(),
    })?;
    if env.event_version != EVENT_VERSION {
        return Err(DecodeError::UnsupportedVersion(env.event_version));
    }
    Ok(env)
}

impl BusinessEvent {
    /// Decodes an EventBridge `detail` given its `detail-type`.
    pub fn decode(detail_type: &str, detail: &serde_json::Value) -> Result<Self, DecodeError> {
        let t = EventType::from_detail_type(detail_type).ok_or_else(|| DecodeError::UnknownDetailType(detail_type.to_owned()))?;
        Ok(match t {
            EventType::OpportunityClosedWon => Self::OpportunityClosedWon(decode_as(detail_type, detail)?),
            EventType::ContractApproved => Self::ContractApproved(decode_as(detail_type, detail)?),
            EventType::ContractCreated => Self::ContractCreated(decode_as(detail_type, detail)?),
            EventType::EngagementRejected => Self::EngagementRejected(decode_as(detail_type, detail)?),
            EventType::ProjectProvisioned => Self::ProjectProvisioned(decode_as(detail_type, detail)?),
            EventType::ProjectActivated => Self::ProjectActivated(decode_as(detail_type, detail)?),
            EventType::TimeApproved => Self::TimeApproved(decode_as(detail_type, detail)?),
            EventType::ExpenseApproved => Self::ExpenseApproved(decode_as(detail_type, detail)?),
            EventType::MilestoneCompleted => Self::MilestoneCompleted(decode_as(detail_type, detail)?),
            EventType::InvoicePosted => Self::InvoicePosted(decode_as(detail_type, detail)?),
            EventType::PaymentReceived => Self::PaymentReceived(decode_as(detail_type, detail)?),
            EventType::ExceptionRaised => Self::ExceptionRaised(decode_as(detail_type, detail)?),
        })
    }

    /// The event's type.
    pub fn event_type(&self) -> EventType {
        match self {
            Self::OpportunityClosedWon(_) => EventType::OpportunityClosedWon,
            Self::ContractApproved(_) => EventType::ContractApproved,
            Self::ContractCreated(_) => EventType::ContractCreated,
            Self::EngagementRejected(_) => EventType::EngagementRejected,
            Self::ProjectProvisioned(_) => EventType::ProjectProvisioned,
            Self::ProjectActivated(_) => EventType::ProjectActivated,
            Self::TimeApproved(_) => EventType::TimeApproved,
            Self::ExpenseApproved(_) => EventType::ExpenseApproved,
            Self::MilestoneCompleted(_) => EventType::MilestoneCompleted,
            Self::InvoicePosted(_) => EventType::InvoicePosted,
            Self::PaymentReceived(_) => EventType::PaymentReceived,
            Self::ExceptionRaised(_) => EventType::ExceptionRaised,
        }
    }

    /// Envelope metadata (ids, correlation) without the payload.
    pub fn meta(&self) -> EventMeta {
        macro_rules! m {
            ($e:expr) => {
                EventMeta {
                    event_id: $e.event_id.clone(),
                    correlation_id: $e.correlation_id.clone(),
                    causation_id: $e.causation_id.clone(),
                    occurred_at: $e.occurred_at,
                    idempotency_key: $e.effective_idempotency_key(self.event_type()),
                }
            };
        }
        match self {
            Self::OpportunityClosedWon(e) => m!(e),
            Self::ContractApproved(e) => m!(e),
            Self::ContractCreated(e) => m!(e),
            Self::EngagementRejected(e) => m!(e),
            Self::ProjectProvisioned(e) => m!(e),
            Self::ProjectActivated(e) => m!(e),
            Self::TimeApproved(e) => m!(e),
            Self::ExpenseApproved(e) => m!(e),
            Self::MilestoneCompleted(e) => m!(e),
            Self::InvoicePosted(e) => m!(e),
            Self::PaymentReceived(e) => m!(e),
            Self::ExceptionRaised(e) => m!(e),
        }
    }

    /// The engagement the event belongs to (FIFO message group, state key).
    pub fn engagement_id(&self) -> String {
        match self {
            Self::OpportunityClosedWon(e) => engagement_id_for(&e.payload.opportunity_id),
            Self::ContractApproved(e) => engagement_id_for(&e.payload.opportunity_id),
            Self::ContractCreated(e) => e.payload.engagement_id.clone(),
            Self::EngagementRejected(e) => e.payload.engagement_id.clone(),
            Self::ProjectProvisioned(e) => e.payload.engagement_id.clone(),
            Self::ProjectActivated(e) => e.payload.engagement_id.clone(),
            Self::TimeApproved(e) => e.payload.time_entry.engagement_id.clone(),
            Self::ExpenseApproved(e) => e.payload.expense.engagement_id.clone(),
            Self::MilestoneCompleted(e) => e.payload.engagement_id.clone(),
            Self::InvoicePosted(e) => e.payload.engagement_id.clone(),
            Self::PaymentReceived(e) => e.payload.engagement_id.clone(),
            Self::ExceptionRaised(e) => e.payload.engagement_id.clone(),
        }
    }

    /// The payload as JSON (for hashing and storage).
    pub fn payload_json(&self) -> serde_json::Value {
        macro_rules! p {
            ($e:expr) => {
                serde_json::to_value(&$e.payload).unwrap_or(serde_json::Value::Null)
            };
        }
        match self {
            Self::OpportunityClosedWon(e) => p!(e),
            Self::ContractApproved(e) => p!(e),
            Self::ContractCreated(e) => p!(e),
            Self::EngagementRejected(e) => p!(e),
            Self::ProjectProvisioned(e) => p!(e),
            Self::ProjectActivated(e) => p!(e),
            Self::TimeApproved(e) => p!(e),
            Self::ExpenseApproved(e) => p!(e),
            Self::MilestoneCompleted(e) => p!(e),
            Self::InvoicePosted(e) => p!(e),
            Self::PaymentReceived(e) => p!(e),
            Self::ExceptionRaised(e) => p!(e),
        }
    }
}

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
    pub idempotency_key: String,
}

/// The engagement id o2c assigns to an opportunity (`ENG-<opportunity id>`): deterministic,
/// so every duplicate and every related event lands on the same state item.
pub fn engagement_id_for(opportunity_id: &str) -> String {
    format!("ENG-{opportunity_id}")
}

/// An event a step decided to emit, ready for a publisher.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct OutgoingEvent {
    /// Type (gives `source` and `detail-type`).
    pub event_type: EventType,
    /// Engagement it concerns (FIFO group).
    pub engagement_id: String,
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
        Self { event_type, engagement_id: engagement_id.to_owned(), detail }
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
        assert_eq!(BusinessEvent::decode("ContractApproved", &detail), Err(DecodeError::UnsupportedVersion("9".into())));
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
