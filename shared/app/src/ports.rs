//! Narrow ports between the step services and the outside world. Each is a small trait
//! with native async methods (`impl Future + Send`, so services can run on any executor);
//! adapters (SQLite + simulators in `o2c-embedded`, AWS SDK in `o2c-aws`) own the mapping
//! to their storage and wire formats.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use o2c_domain::aggregate::{AggregateBody, AggregateKey, AggregateKind, Load, Loaded};
use o2c_domain::engagement::{AuditEntry, CrmOpportunityUpdate, Engagement};
use o2c_domain::events::{Issue, OutgoingEvent};
use o2c_domain::exception_case::ExceptionCase;
use o2c_domain::invoicing::InvoiceDoc;
use o2c_domain::model::{BillingSchedule, ProjectSpec};
use o2c_domain::receivables::{CashReceipt, CrmInvoice};
use o2c_domain::reconciliation::{ErpInvoiceRecord, ProjectRecord};
use o2c_domain::reference::ReferenceData;
use o2c_domain::revenue::RevenueJournal;
use o2c_domain::tax::{TaxQuote, TaxRequest};
pub use o2c_domain::workflow::{CrmWrite, ExternalObject, ObjectStatus, Refusal, System};
use serde::{Deserialize, Serialize};

use crate::error::O2cError;

pub use crate::clock::{Clock, IdGenerator, RandomIds, SeededIds, SimClock, Sleep, SystemClock};

/// A value with the store version it was read at (optimistic concurrency).
#[derive(Debug, Clone, PartialEq)]
pub struct Versioned<T> {
    /// The value.
    pub value: T,
    /// Version (1 for the first write).
    pub version: u64,
}

/// The version a write expects to replace.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExpectedVersion {
    /// The item must not exist yet.
    New,
    /// The item must be at exactly this version.
    Is(u64),
}

impl ExpectedVersion {
    /// The version the write produces.
    pub fn next(self) -> u64 {
        match self {
            Self::New => 1,
            Self::Is(v) => v + 1,
        }
    }

    /// Whether an item at `stored` (`None`: absent) meets this expectation — the one version
    /// check every store makes (DynamoDB's in its condition expression).
    pub fn admits(self, stored: Option<u64>) -> bool {
        match (self, stored) {
            (Self::New, None) => true,
            (Self::Is(v), Some(s)) => v == s,
            _ => false,
        }
    }
}

/// A conditional write of the engagement item.
#[derive(Debug, Clone, PartialEq)]
pub struct StateWrite {
    /// New state.
    pub engagement: Engagement,
    /// Version it replaces.
    pub expected: ExpectedVersion,
}

/// What a completed step stored, returned to duplicates (its events are re-published:
/// a crash between commit and publish must not lose them).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StoredResult {
    /// Audit action of the original processing.
    pub action: String,
    /// Events the original processing emitted.
    pub events: Vec<OutgoingEvent>,
}

pub use crate::idempotency::{IdempotencyRecord, IdempotencyStatus, KeyState};

/// Reserve a key before an external side effect, optionally claiming the engagement in the
/// same atomic write (e.g. status `provisioning`, so intake turns later changes into change
/// orders instead of racing the provisioning).
#[derive(Debug, Clone, PartialEq)]
pub struct Reservation {
    /// Key.
    pub key: String,
    /// Payload hash.
    pub payload_hash: String,
    /// Now (from the clock).
    pub now: DateTime<Utc>,
    /// Until when the reservation blocks other handlers (the invocation deadline).
    pub in_progress_until: DateTime<Utc>,
    /// Record expiry.
    pub expires_at: DateTime<Utc>,
    /// State claimed atomically with the reservation.
    pub claim: Option<StateWrite>,
    /// Other aggregates written atomically with the reservation (conditional on their
    /// versions like the claim: a stale one and nothing is written — `StateConflict`).
    pub others: Vec<AggregateWrite>,
}

/// Result of a reservation.
#[derive(Debug, Clone, PartialEq)]
pub enum ReserveOutcome {
    /// Ours; the claim (if any) is written at this version.
    Reserved {
        /// Version of the claimed engagement.
        claimed_version: Option<u64>,
    },
    /// Someone completed it already.
    AlreadyCompleted(IdempotencyRecord),
    /// Someone is working on it right now (until then, when known).
    InProgress {
        /// The holder's `in_progress_until`: after it, the key may be taken over.
        until: Option<DateTime<Utc>>,
    },
    /// Same key, different payload.
    PayloadMismatch {
        /// Hash stored.
        stored: String,
    },
    /// The claim's expected version no longer holds (nothing was written).
    StateConflict,
}

/// How the completion record is written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CompletionMode {
    /// No reservation exists: write only if the key is absent or expired.
    Fresh,
    /// We hold the reservation: overwrite our `InProgress` record.
    Reserved,
}

/// What a commit does with the event's idempotency key.
#[derive(Debug, Clone, PartialEq)]
pub enum KeyWrite {
    /// Complete it (the event is done).
    Complete(Completion),
    /// We hold its reservation and keep it: the commit is a checkpoint of a step that
    /// continues. The write fails (nothing is written) unless the reservation is still ours.
    Hold {
        /// Key.
        key: String,
        /// Payload hash of our reservation.
        payload_hash: String,
    },
    /// Not tied to an event key (e.g. the dead-letter exception of a message).
    Untracked,
}

/// The idempotency record written with the commit.
#[derive(Debug, Clone, PartialEq)]
pub struct Completion {
    /// Key.
    pub key: String,
    /// Payload hash.
    pub payload_hash: String,
    /// Result for duplicates.
    pub result: StoredResult,
    /// Now.
    pub now: DateTime<Utc>,
    /// Expiry.
    pub expires_at: DateTime<Utc>,
    /// Mode.
    pub mode: CompletionMode,
}

/// A conditional write of another aggregate (see `o2c_domain::aggregate`).
#[derive(Debug, Clone, PartialEq)]
pub struct AggregateWrite {
    /// New state.
    pub body: AggregateBody,
    /// Version it replaces.
    pub expected: ExpectedVersion,
}

/// Refuses writes that name one aggregate twice: a commit or reservation writes each
/// aggregate once (DynamoDB's `TransactWriteItems` refuses two operations on one item), so
/// every store refuses such a write as a bug, before writing anything.
pub fn each_written_once(others: &[AggregateWrite]) -> Result<(), O2cError> {
    // Each key built once (a commit may carry ~100 aggregates: an invoice run's WIP shards).
    let keys: Vec<AggregateKey> = others.iter().map(|w| w.body.key()).collect();
    for (i, key) in keys.iter().enumerate() {
        if keys[..i].contains(key) {
            return Err(O2cError::Bug(format!("{} {}/{} is written twice in one commit", key.kind.as_str(), key.owner, key.id)));
        }
    }
    Ok(())
}

/// One atomic write: engagement state (if changed) + other aggregates + audit entry + what
/// happens to the idempotency key. In DynamoDB this is a single `TransactWriteItems`
/// (≤ 100 items, 4 MB); in SQLite a single transaction. Every state write is conditional
/// on its version: one stale version and nothing is written.
#[derive(Debug, Clone, PartialEq)]
pub struct Commit {
    /// Engagement state write.
    pub state: Option<StateWrite>,
    /// Other aggregates.
    pub others: Vec<AggregateWrite>,
    /// Timeline entry.
    pub audit: Option<AuditEntry>,
    /// Idempotency completion, checkpoint guard, or nothing.
    pub key: KeyWrite,
}

/// Result of a commit.
#[derive(Debug, Clone, PartialEq)]
pub enum CommitOutcome {
    /// Written; the engagement is at this version (if state was written).
    Committed {
        /// New version.
        version: Option<u64>,
    },
    /// The engagement changed since it was read; nothing was written.
    VersionConflict,
    /// `Fresh` mode only: the key was completed by someone else meanwhile.
    AlreadyCompleted(IdempotencyRecord),
    /// `Hold` or `Reserved`: our reservation is gone (expired and taken over); nothing was
    /// written.
    ReservationLost,
}

/// Resolves a step's loads (keys and whole kinds) into one [`Loaded`].
pub async fn load_all_of<S: EngagementStore>(store: &S, loads: &[Load]) -> Result<Loaded, O2cError> {
    let keys: Vec<AggregateKey> = loads
        .iter()
        .filter_map(|l| match l {
            Load::Key(k) => Some(k.clone()),
            Load::All { .. } => None,
        })
        .collect();
    let mut loaded = if keys.is_empty() { Loaded::default() } else { store.load_aggregates(&keys).await? };
    for l in loads {
        if let Load::All { kind, owner } = l {
            for item in store.load_all(*kind, owner).await?.items {
                if loaded.version(&item.body.key()).is_none() {
                    loaded.items.push(item);
                }
            }
        }
    }
    loaded.asked = loads.to_vec();
    Ok(loaded)
}

/// Operator filter for listing engagements.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct EngagementFilter {
    /// Only this status (wire name).
    pub status: Option<String>,
    /// Only engagements with an open exception.
    pub open_exceptions: bool,
    /// At most this many.
    pub limit: usize,
    /// Page by id instead of recency: engagements whose id sorts after this one (`""` for
    /// the first page), in id order — how a fan-out walks every engagement once.
    pub after: Option<String>,
}

/// A short line per engagement for operator lists.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EngagementSummary {
    /// Id.
    pub engagement_id: String,
    /// Status.
    pub status: String,
    /// Has open exceptions.
    pub open_exception: bool,
    /// Last change.
    pub updated_at: DateTime<Utc>,
    /// Version.
    pub version: u64,
}

/// The engagement state store (optimistic concurrency on a version).
pub trait EngagementStore: Send + Sync {
    /// Strongly consistent read of one engagement.
    fn load(&self, engagement_id: &str) -> impl Future<Output = Result<Option<Versioned<Engagement>>, O2cError>> + Send;
    /// Strongly consistent reads of other aggregates (those that exist).
    fn load_aggregates(&self, keys: &[AggregateKey]) -> impl Future<Output = Result<Loaded, O2cError>> + Send;
    /// Strongly consistent read of every aggregate of `kind` under `owner`.
    fn load_all(&self, kind: AggregateKind, owner: &str) -> impl Future<Output = Result<Loaded, O2cError>> + Send;
    /// Atomic commit (see [`Commit`]).
    fn commit(&self, commit: Commit) -> impl Future<Output = Result<CommitOutcome, O2cError>> + Send;
    /// The engagement's timeline, oldest first.
    fn audit_trail(&self, engagement_id: &str) -> impl Future<Output = Result<Vec<AuditEntry>, O2cError>> + Send;
    /// Operator listing.
    fn list(&self, filter: &EngagementFilter) -> impl Future<Output = Result<Vec<EngagementSummary>, O2cError>> + Send;
    /// Exception cases, newest raised first (the operator queue).
    fn exception_cases(&self, filter: &CaseFilter) -> impl Future<Output = Result<Vec<ExceptionCase>, O2cError>> + Send;
}

/// Which exception cases to list (finer filters — kind, legal entity, engagement, age —
/// are the caller's, over this result).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CaseFilter {
    /// Only open and assigned cases.
    pub open_only: bool,
    /// Only this status (read from its own index partitions on DynamoDB).
    pub status: Option<o2c_domain::exception_case::CaseStatus>,
    /// At most this many (0: 500).
    pub limit: usize,
}

impl CaseFilter {
    /// True when `c`'s status is asked for.
    pub fn wants(&self, c: &ExceptionCase) -> bool {
        self.status.map_or(!self.open_only || c.status.is_open(), |s| c.status == s)
    }

    /// The limit in force.
    pub fn limit(&self) -> usize {
        if self.limit == 0 { 500 } else { self.limit }
    }
}

/// Cases in queue order: newest raised first, then by id.
pub fn queue_order(cases: &mut [ExceptionCase]) {
    cases.sort_by(|a, b| b.raised_at.cmp(&a.raised_at).then_with(|| a.exception_id.cmp(&b.exception_id)));
}

/// The idempotency store (reserve / get / release; completion is part of [`Commit`]).
pub trait IdempotencyStore: Send + Sync {
    /// Reads a record (expired records are returned; callers check [`IdempotencyRecord::is_live`]).
    fn get(&self, key: &str) -> impl Future<Output = Result<Option<IdempotencyRecord>, O2cError>> + Send;
    /// Reserves a key (and optionally claims state) atomically.
    fn reserve(&self, reservation: Reservation) -> impl Future<Output = Result<ReserveOutcome, O2cError>> + Send;
    /// Deletes the `InProgress` record after a failure so a retry (or the resubmission of a
    /// parked message) re-executes at once (Powertools deletes the record when the handler
    /// raises). It does not check who holds the record: see `StepService::handle`.
    fn release(&self, key: &str) -> impl Future<Output = Result<(), O2cError>> + Send;
}

/// A message that can never be processed, kept with every reason for operators.
///
/// Keyed by step and a hash of the body ([`rejection_id_for`]), so two different messages
/// never collide whatever ids they carry, and the same body delivered again is one
/// rejection with its deliveries counted (distinct transport message ids).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RejectedMessage {
    /// `<step>#<SHA-256 of the body, 32 hex digits>`.
    pub rejection_id: String,
    /// Step that rejected it.
    pub step: String,
    /// First rejected.
    pub rejected_at: DateTime<Utc>,
    /// Last rejected (a repeat of the same body).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_rejected_at: Option<DateTime<Utc>>,
    /// Distinct deliveries of this body (transport message ids).
    #[serde(default = "one")]
    pub deliveries: u32,
    /// Transport message ids seen (at most [`MAX_TRACKED_MESSAGE_IDS`] kept).
    #[serde(default)]
    pub message_ids: Vec<String>,
    /// EventBridge `source`, when readable.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source: Option<String>,
    /// EventBridge `detail-type`, when readable.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub detail_type: Option<String>,
    /// `detail.event_id`, when readable.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub event_id: Option<String>,
    /// `detail.correlation_id`, when readable.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub correlation_id: Option<String>,
    /// Engagement, when derivable.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub engagement_id: Option<String>,
    /// `error_type` of the failure.
    pub error_type: String,
    /// Every reason.
    pub reasons: Vec<Issue>,
    /// The raw message body, verbatim (for repair and replay).
    pub body: String,
}

fn one() -> u32 {
    1
}

/// How many transport message ids a rejection keeps (the count goes on).
pub const MAX_TRACKED_MESSAGE_IDS: usize = 20;

/// The rejection id of a body rejected by `step`: a hash of what the sender sent — the
/// EventBridge `source`, `detail-type` and canonical `detail` when the body is an event
/// (the envelope's `id` and `time` change each time the bus delivers the same post), the
/// raw body otherwise.
pub fn rejection_id_for(step: &str, body: &str) -> String {
    use sha2::{Digest, Sha256};
    let mut h = Sha256::new();
    match serde_json::from_str::<serde_json::Value>(body) {
        Ok(v) if v.get("detail").is_some() => {
            for k in ["source", "detail-type"] {
                h.update(v.get(k).map(|x| x.to_string()).unwrap_or_default().as_bytes());
                h.update([0u8]);
            }
            h.update(o2c_domain::events::canonical_json(&v["detail"]).as_bytes());
        }
        _ => h.update(body.as_bytes()),
    }
    format!("{step}#{}", &hex::encode(h.finalize())[..32])
}

/// The last retryable failure of a queue message, so a message that ends in a DLQ can be
/// shown with its reason (SQS keeps the message id when it dead-letters a message).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DeliveryFailure {
    /// SQS message id.
    pub message_id: String,
    /// Step that failed.
    pub step: String,
    /// `error_type`.
    pub error_type: String,
    /// The error.
    pub error: String,
    /// Receive count at the failure.
    pub receive_count: u32,
    /// When.
    pub at: DateTime<Utc>,
}

/// One thing an operator did through the console, by whom.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OperatorAction {
    /// When.
    pub at: DateTime<Utc>,
    /// The operator: an API key's name, or the AWS caller's.
    pub actor: String,
    /// The key's id, or the AWS caller's ARN.
    pub key_id: String,
    /// `login`, `logout`, `exception.resolve`, `dlq.redrive`, …
    pub action: String,
    /// What it acted on (an exception id, a queue), when anything.
    pub object: Option<String>,
    /// What came of it (the event id published, messages moved, a refusal).
    pub outcome: String,
    /// The client's address.
    pub remote: Option<String>,
}

/// The operators' own audit log: what each did through the console (exception actions
/// are on their case and engagement as well; this adds sign-ins, redrives, resubmits).
pub trait OperatorLog: Send + Sync {
    /// Records an action.
    fn record_action(&self, action: &OperatorAction) -> impl Future<Output = Result<(), O2cError>> + Send;
    /// The latest `limit` actions, newest first.
    fn operator_actions(&self, limit: usize) -> impl Future<Output = Result<Vec<OperatorAction>, O2cError>> + Send;
}

/// Storage for rejected (parked) messages and delivery failures.
pub trait RejectionStore: Send + Sync {
    /// Stores a rejected message; the same `rejection_id` again adds the message id (and
    /// counts a delivery) unless that message id was already recorded.
    fn park(&self, message: &RejectedMessage) -> impl Future<Output = Result<(), O2cError>> + Send;
    /// Most recent rejections first.
    fn rejections(&self, limit: usize) -> impl Future<Output = Result<Vec<RejectedMessage>, O2cError>> + Send;
    /// Records (overwrites) the latest retryable failure of a message.
    fn record_failure(&self, failure: &DeliveryFailure) -> impl Future<Output = Result<(), O2cError>> + Send;
    /// The latest recorded failure of a message.
    fn failure(&self, message_id: &str) -> impl Future<Output = Result<Option<DeliveryFailure>, O2cError>> + Send;
}

/// Publishes business events (EventBridge `PutEvents` or the embedded bus).
pub trait EventPublisher: Send + Sync {
    /// Publishes all events or fails (partial failures are retried inside the adapter).
    fn publish(&self, events: &[OutgoingEvent]) -> impl Future<Output = Result<(), O2cError>> + Send;
}

impl<T: EventPublisher> EventPublisher for Arc<T> {
    async fn publish(&self, events: &[OutgoingEvent]) -> Result<(), O2cError> {
        (**self).publish(events).await
    }
}

/// Source of reference data snapshots.
pub trait ReferenceDataSource: Send + Sync {
    /// The current snapshot.
    fn snapshot(&self) -> impl Future<Output = Result<Arc<ReferenceData>, O2cError>> + Send;
}

/// A fixed snapshot (loaded at cold start).
#[derive(Debug, Clone)]
pub struct StaticReferenceData(pub Arc<ReferenceData>);

impl ReferenceDataSource for StaticReferenceData {
    async fn snapshot(&self) -> Result<Arc<ReferenceData>, O2cError> {
        Ok(self.0.clone())
    }
}

/// A connector call failure, classified.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConnectorError {
    /// 5xx, timeout, 429: retry.
    #[error("{} transient failure ({status}): {message}", system.as_str())]
    Transient {
        /// Which system.
        system: System,
        /// HTTP-like status (0 for a timeout).
        status: u16,
        /// Message.
        message: String,
        /// Retry-After hint.
        retry_after: Option<Duration>,
    },
    /// 4xx: the request will never succeed as is.
    #[error("{} rejected the request ({status} {code}): {message}", system.as_str())]
    Permanent {
        /// Which system.
        system: System,
        /// HTTP-like status.
        status: u16,
        /// System error code.
        code: String,
        /// Message.
        message: String,
    },
}

impl ConnectorError {
    /// The short reason for exceptions (`code: message`).
    pub fn reason(&self) -> String {
        match self {
            Self::Transient { status, message, .. } => format!("{status}: {message}"),
            Self::Permanent { code, message, .. } => format!("{code}: {message}"),
        }
    }

    /// The refusal a permanent failure is (a transient one becomes a 503 refusal: callers
    /// only ask permanent errors).
    pub fn refusal(&self) -> Refusal {
        match self {
            Self::Permanent { system, status, code, message } => {
                Refusal { system: *system, status: *status, code: code.clone(), message: message.clone() }
            }
            Self::Transient { system, status, message, .. } => {
                Refusal { system: *system, status: *status, code: "TRANSIENT".into(), message: message.clone() }
            }
        }
    }
}

impl From<ConnectorError> for O2cError {
    fn from(e: ConnectorError) -> Self {
        match e {
            ConnectorError::Transient { system, status, message, retry_after } => {
                O2cError::Dependency { system: system.as_str().to_owned(), message: format!("{status}: {message}"), retry_after }
            }
            ConnectorError::Permanent { .. } => O2cError::Conflict(e.to_string()),
        }
    }
}

/// PSA connector (Salesforce PSA / Kantata / …).
pub trait Psa: Send + Sync {
    /// Creates the project, or returns the one that already has `spec.external_key`, with
    /// its status (an existing project may be cancelled).
    fn create_or_get_project(&self, spec: &ProjectSpec) -> impl Future<Output = Result<ExternalObject, ConnectorError>> + Send;
    /// Cancels a project (compensation). Cancelling a cancelled project succeeds.
    fn cancel_project(&self, project_id: &str, reason: &str) -> impl Future<Output = Result<(), ConnectorError>> + Send;
    /// The project created under `external_key`, as the PSA holds it (reconciliation).
    fn get_project(&self, external_key: &str) -> impl Future<Output = Result<Option<ProjectRecord>, ConnectorError>> + Send;
}

/// ERP connector (NetSuite / D365 / S/4HANA).
pub trait Erp: Send + Sync {
    /// Creates the project, or returns the one that already has `spec.external_key`.
    fn create_or_get_project(&self, spec: &ProjectSpec) -> impl Future<Output = Result<ExternalObject, ConnectorError>> + Send;
    /// The project created under `external_key`, as the ERP holds it (reconciliation).
    fn get_project(&self, external_key: &str) -> impl Future<Output = Result<Option<ProjectRecord>, ConnectorError>> + Send;
    /// The billing schedule `schedule_id` of ERP project `erp_project_id` (reconciliation).
    fn get_billing_schedule(
        &self,
        erp_project_id: &str,
        schedule_id: &str,
    ) -> impl Future<Output = Result<Option<BillingSchedule>, ConnectorError>> + Send;
    /// The invoice posted under `number` (reconciliation): `None` when the ERP holds none, or
    /// holds it voided or cancelled (an adapter maps NetSuite's `Voided`, S/4HANA's
    /// `BillingDocumentIsCancelled` to `None`: no longer a claim on the customer).
    fn get_invoice(&self, number: &str) -> impl Future<Output = Result<Option<ErpInvoiceRecord>, ConnectorError>> + Send;
    /// Creates the billing schedule on a project, or returns the one with `schedule.schedule_id`.
    fn create_or_get_billing_schedule(
        &self,
        erp_project_id: &str,
        schedule: &BillingSchedule,
    ) -> impl Future<Output = Result<ExternalObject, ConnectorError>> + Send;
    /// Posts a numbered invoice to receivables, or returns the one already posted under
    /// `invoice.number` (create-or-get on the number).
    fn create_or_get_invoice(&self, invoice: &InvoiceDoc) -> impl Future<Output = Result<ExternalObject, ConnectorError>> + Send;
    /// Books a cash receipt (its applications to invoice numbers, the rest on account), or
    /// returns the one already booked under `receipt.payment_id`; a receipt with `reverses`
    /// reverses that receipt.
    fn book_receipt(&self, receipt: &CashReceipt) -> impl Future<Output = Result<ExternalObject, ConnectorError>> + Send;
    /// Posts a revenue journal into its period, or returns the one already posted under
    /// `journal.journal_id`.
    fn post_journal(&self, journal: &RevenueJournal) -> impl Future<Output = Result<ExternalObject, ConnectorError>> + Send;
}

/// Tax engine connector (Avalara / Vertex / ONESOURCE): a quote per invoice.
pub trait TaxEngine: Send + Sync {
    /// Each line's rate and tax (see `o2c_domain::tax` for the rounding rule it must follow).
    fn calculate(&self, request: &TaxRequest) -> impl Future<Output = Result<TaxQuote, ConnectorError>> + Send;
}

/// CRM connector (Salesforce / Dynamics).
pub trait Crm: Send + Sync {
    /// Writes sync-status fields onto the opportunity unless a newer version is there.
    fn update_opportunity(&self, update: &CrmOpportunityUpdate) -> impl Future<Output = Result<CrmWrite, ConnectorError>> + Send;
    /// Upserts an invoice record (by number) on the account and opportunity unless a newer
    /// version is there.
    fn upsert_invoice(&self, invoice: &CrmInvoice) -> impl Future<Output = Result<CrmWrite, ConnectorError>> + Send;
    /// The o2c fields of opportunity `opportunity_id`, as the CRM holds them (reconciliation).
    fn get_opportunity(&self, opportunity_id: &str) -> impl Future<Output = Result<Option<CrmOpportunityUpdate>, ConnectorError>> + Send;
}

/// Where business metrics go once a decision is committed (CloudWatch embedded metric
/// format on Lambda, the log embedded, a list in tests).
pub trait MetricsSink: Send + Sync {
    /// Emits `metrics` (best effort: metrics never fail a step).
    fn emit(&self, metrics: &[o2c_domain::metrics::Metric]);
}

/// Everything a step service needs, bundled so services stay generic over one parameter.
pub trait Platform: Send + Sync + 'static {
    /// State, idempotency and rejection storage (one database: commits span them).
    type Store: EngagementStore + IdempotencyStore + RejectionStore;
    /// Event publisher.
    type Publisher: EventPublisher;
    /// Reference data.
    type Reference: ReferenceDataSource;
    /// CRM.
    type Crm: Crm;
    /// PSA.
    type Psa: Psa;
    /// ERP.
    type Erp: Erp;
    /// Tax engine.
    type Tax: TaxEngine;

    /// The store.
    fn store(&self) -> &Self::Store;
    /// The publisher.
    fn publisher(&self) -> &Self::Publisher;
    /// Reference data.
    fn reference(&self) -> &Self::Reference;
    /// CRM.
    fn crm(&self) -> &Self::Crm;
    /// PSA.
    fn psa(&self) -> &Self::Psa;
    /// ERP.
    fn erp(&self) -> &Self::Erp;
    /// Tax engine.
    fn tax(&self) -> &Self::Tax;
    /// Clock.
    fn clock(&self) -> &dyn Clock;
    /// Business metrics.
    fn metrics(&self) -> &dyn MetricsSink;
}

/// The adapters of one deployment, bundled: every target (Lambda, embedded, in memory,
/// tests) is this struct with its own adapter types.
pub struct Adapters<S, Pb, R, C, P, E, T> {
    /// State, idempotency and rejections.
    pub store: S,
    /// Event publisher.
    pub publisher: Pb,
    /// Reference data.
    pub reference: R,
    /// CRM.
    pub crm: C,
    /// PSA.
    pub psa: P,
    /// ERP.
    pub erp: E,
    /// Tax engine.
    pub tax: T,
    /// Clock.
    pub clock: Arc<dyn Clock>,
    /// Business metrics.
    pub metrics: Arc<dyn MetricsSink>,
}

impl<S, Pb, R, C, P, E, T> Platform for Adapters<S, Pb, R, C, P, E, T>
where
    S: EngagementStore + IdempotencyStore + RejectionStore + 'static,
    Pb: EventPublisher + 'static,
    R: ReferenceDataSource + 'static,
    C: Crm + 'static,
    P: Psa + 'static,
    E: Erp + 'static,
    T: TaxEngine + 'static,
{
    type Store = S;
    type Publisher = Pb;
    type Reference = R;
    type Crm = C;
    type Psa = P;
    type Erp = E;
    type Tax = T;

    fn store(&self) -> &S {
        &self.store
    }
    fn publisher(&self) -> &Pb {
        &self.publisher
    }
    fn reference(&self) -> &R {
        &self.reference
    }
    fn crm(&self) -> &C {
        &self.crm
    }
    fn psa(&self) -> &P {
        &self.psa
    }
    fn erp(&self) -> &E {
        &self.erp
    }
    fn tax(&self) -> &T {
        &self.tax
    }
    fn clock(&self) -> &dyn Clock {
        self.clock.as_ref()
    }

    fn metrics(&self) -> &dyn MetricsSink {
        self.metrics.as_ref()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn when_a_stored_version_meets_an_expectation_should_admit_only_an_exact_match() {
        assert!(ExpectedVersion::New.admits(None));
        assert!(!ExpectedVersion::New.admits(Some(1)));
        assert!(ExpectedVersion::Is(3).admits(Some(3)));
        for stored in [None, Some(2), Some(4)] {
            assert!(!ExpectedVersion::Is(3).admits(stored), "{stored:?}");
        }
    }
}
