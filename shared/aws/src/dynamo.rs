//! DynamoDB adapters for the state, idempotency, rejection and reference-data ports.
//! Key design and access patterns: `infra/DESIGN.md`. Item mapping lives here only
//! (`serde_dynamo`), the domain never sees an `AttributeValue`.
//!
//! Write budget per processed event (counted in [`RequestCounts`]):
//! - pure step: one `TransactWriteItems` (idempotency record + engagement + audit item);
//! - step with a side effect: a conditional `PutItem` (or a two-item transaction when it
//!   claims the engagement) before the side effect, one `TransactWriteItems` after it;
//! - duplicate: no write, one consistent `GetItem`.
//!
//! AWS limits relied on: an item is at most 400 KB (engagements are checked against
//! [`MAX_ITEM_BYTES`], other aggregates against their kind's budget, before writing); a
//! transaction holds at most 100 items and 4 MB (we use 3 plus one per other aggregate);
//! `BatchWriteItem` takes at most 25 put requests; a `Query` page is at most 1 MB.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use aws_sdk_dynamodb::Client;
use aws_sdk_dynamodb::error::SdkError;
use aws_sdk_dynamodb::operation::put_item::PutItemError;
use aws_sdk_dynamodb::operation::transact_write_items::TransactWriteItemsError;
use aws_sdk_dynamodb::types::{
    AttributeValue, ConditionCheck, Put, PutRequest, ReturnValuesOnConditionCheckFailure, TransactWriteItem, WriteRequest,
};
use chrono::{DateTime, TimeZone, Utc};
use o2c_app::O2cError;
use o2c_app::ports::{
    AggregateWrite, Commit, CommitOutcome, Completion, CompletionMode, DeliveryFailure, EngagementFilter, EngagementStore,
    EngagementSummary, ExpectedVersion, IdempotencyRecord, IdempotencyStatus, IdempotencyStore, KeyState, KeyWrite, ReferenceDataSource,
    RejectedMessage, RejectionStore, Reservation, ReserveOutcome, StateWrite, StoredResult, Versioned,
};
use o2c_domain::aggregate::{AggregateKey, Loaded, LoadedAggregate};
use o2c_domain::engagement::{AuditEntry, Engagement, EngagementStatus};
use o2c_domain::reference::ReferenceData;
use serde::Serialize;
use serde::de::DeserializeOwned;
use tokio::sync::RwLock;
use tracing::debug;

type Item = HashMap<String, AttributeValue>;

/// DynamoDB's item size limit is 400 KB; stay clear of it (attribute names count too).
pub const MAX_ITEM_BYTES: usize = 350 * 1024;
/// `BatchWriteItem` accepts at most 25 put/delete requests.
pub const MAX_BATCH_WRITE: usize = 25;
/// Status GSI partitions are sharded so one busy status is not a hot partition.
pub const STATUS_SHARDS: u32 = 4;
/// Delivery-failure items expire with the DLQ retention (14 days).
const FAILURE_TTL_SECS: i64 = 14 * 24 * 3600;

/// Request counters (the cost goal is measured with these).
#[derive(Debug, Default)]
pub struct RequestCounts {
    reads: AtomicU64,
    writes: AtomicU64,
}

impl RequestCounts {
    /// `(read requests, write requests)` so far.
    pub fn snapshot(&self) -> (u64, u64) {
        (self.reads.load(Ordering::Relaxed), self.writes.load(Ordering::Relaxed))
    }
    fn read(&self) {
        self.reads.fetch_add(1, Ordering::Relaxed);
    }
    fn write(&self) {
        self.writes.fetch_add(1, Ordering::Relaxed);
    }
}

/// Table names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Tables {
    /// Single-table state: engagements, audit, rejections, failures, reference data.
    pub state: String,
    /// Idempotency records.
    pub idempotency: String,
}

/// The DynamoDB store (cheap to clone; one SDK client per process).
#[derive(Clone)]
pub struct DynamoStore {
    client: Client,
    tables: Tables,
    counts: Arc<RequestCounts>,
}

fn dep<E: std::fmt::Debug>(e: SdkError<E>) -> O2cError {
    // The SDK already retried throttling and 5xx (standard retry mode); what reaches here
    // is transient from the step's point of view.
    O2cError::dependency("dynamodb", format!("{e:?}").chars().take(500).collect::<String>())
}

fn s(v: impl Into<String>) -> AttributeValue {
    AttributeValue::S(v.into())
}

fn n(v: impl ToString) -> AttributeValue {
    AttributeValue::N(v.to_string())
}

fn get_s<'a>(item: &'a Item, k: &str) -> Option<&'a str> {
    item.get(k).and_then(|v| v.as_s().ok()).map(String::as_str)
}

fn get_n(item: &Item, k: &str) -> Option<i64> {
    item.get(k).and_then(|v| v.as_n().ok()).and_then(|x| x.parse().ok())
}

fn to_item<T: Serialize>(v: &T) -> Result<Item, O2cError> {
    serde_dynamo::to_item(v).map_err(|e| O2cError::Bug(format!("cannot map to a DynamoDB item: {e}")))
}

/// Maps an item back to a value after dropping the key / index attributes the adapter added.
fn from_stored_item<T: DeserializeOwned>(mut item: Item, added: &[&str]) -> Result<T, O2cError> {
    for k in added {
        item.remove(*k);
    }
    from_item(item)
}

fn from_item<T: DeserializeOwned>(item: Item) -> Result<T, O2cError> {
    serde_dynamo::from_item(item).map_err(|e| O2cError::Bug(format!("stored item does not parse: {e}")))
}

fn item_size(item: &Item) -> usize {
    fn av(v: &AttributeValue) -> usize {
        match v {
            AttributeValue::S(x) | AttributeValue::N(x) => x.len(),
            AttributeValue::B(b) => b.as_ref().len(),
            AttributeValue::L(l) => l.iter().map(av).sum::<usize>() + 3,
            AttributeValue::M(m) => m.iter().map(|(k, v)| k.len() + av(v)).sum::<usize>() + 3,
            AttributeValue::Ss(x) | AttributeValue::Ns(x) => x.iter().map(String::len).sum(),
            _ => 1,
        }
    }
    item.iter().map(|(k, v)| k.len() + av(v)).sum()
}

/// Stable shard of an id (FNV-1a), for GSI write sharding.
fn shard(id: &str) -> u32 {
    let mut h: u32 = 0x811c_9dc5;
    for b in id.bytes() {
        h ^= u32::from(b);
        h = h.wrapping_mul(0x0100_0193);
    }
    h % STATUS_SHARDS
}

fn eng_pk(id: &str) -> String {
    format!("ENG#{id}")
}

fn ms(t: DateTime<Utc>) -> i64 {
    t.timestamp_millis()
}

fn from_ms(x: i64) -> DateTime<Utc> {
    Utc.timestamp_millis_opt(x).single().unwrap_or_default()
}

const IN_PROGRESS: &str = IdempotencyStatus::InProgress.as_str_const();
const COMPLETED: &str = IdempotencyStatus::Completed.as_str_const();

/// Condition for taking an idempotency key: absent, expired, or held by an in-progress
/// record whose holder is past its deadline.
const KEY_IS_FREE: &str = "attribute_not_exists(#id) OR #exp < :now OR (#st = :ip AND #ipexp < :now_ms)";

fn key_is_free_names() -> HashMap<String, String> {
    [("#id", "id"), ("#exp", "expiration"), ("#st", "status"), ("#ipexp", "in_progress_expiration")]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect()
}

fn key_is_free_values(now: DateTime<Utc>) -> HashMap<String, AttributeValue> {
    HashMap::from([(":now".to_owned(), n(now.timestamp())), (":now_ms".to_owned(), n(ms(now))), (":ip".to_owned(), s(IN_PROGRESS))])
}

/// Powertools-compatible attribute names: `id`, `status`, `expiration` (TTL, epoch seconds),
/// `in_progress_expiration` (epoch millis), `validation` (payload hash), `data` (result).
fn record_from_item(item: &Item) -> Result<IdempotencyRecord, O2cError> {
    let result = get_s(item, "data")
        .map(serde_json::from_str::<StoredResult>)
        .transpose()
        .map_err(|e| O2cError::Bug(format!("idempotency data: {e}")))?;
    Ok(IdempotencyRecord {
        key: get_s(item, "id").unwrap_or_default().to_owned(),
        status: get_s(item, "status")
            .and_then(IdempotencyStatus::parse)
            .ok_or_else(|| O2cError::Bug(format!("idempotency item has status {:?}", get_s(item, "status"))))?,
        payload_hash: get_s(item, "validation").unwrap_or_default().to_owned(),
        expires_at: Utc.timestamp_opt(get_n(item, "expiration").unwrap_or(0), 0).single().unwrap_or_default(),
        in_progress_until: get_n(item, "in_progress_expiration").map(from_ms),
        result,
    })
}

impl DynamoStore {
    /// A store over `tables` with a shared SDK client.
    pub fn new(client: Client, tables: Tables) -> Self {
        Self { client, tables, counts: Arc::new(RequestCounts::default()) }
    }

    /// Request counters.
    pub fn counts(&self) -> Arc<RequestCounts> {
        self.counts.clone()
    }

    /// The SDK client.
    pub fn client(&self) -> &Client {
        &self.client
    }

    /// Table names.
    pub fn tables(&self) -> &Tables {
        &self.tables
    }

    fn engagement_item(&self, w: &StateWrite) -> Result<Item, O2cError> {
        let e = &w.engagement;
        let mut item = to_item(e)?;
        let version = w.expected.next();
        let open = e.has_open_exception();
        let sk_time = format!("{}#{}", e.updated_at.to_rfc3339(), e.engagement_id);
        item.insert("PK".into(), s(eng_pk(&e.engagement_id)));
        item.insert("SK".into(), s("STATE"));
        item.insert("version".into(), n(version));
        item.insert("open_exception".into(), AttributeValue::Bool(open));
        item.insert("GSI1PK".into(), s(format!("STATUS#{}#{}", e.status.as_str(), shard(&e.engagement_id))));
        item.insert("GSI1SK".into(), s(sk_time.clone()));
        if open {
            // Sparse index: only engagements with an open exception have GSI2 keys.
            item.insert("GSI2PK".into(), s(format!("EXCEPTIONS#OPEN#{}", shard(&e.engagement_id))));
            item.insert("GSI2SK".into(), s(sk_time));
        }
        let size = item_size(&item);
        if size > MAX_ITEM_BYTES {
            return Err(O2cError::Bug(format!(
                "engagement {} is {size} bytes, over the {MAX_ITEM_BYTES}-byte budget under DynamoDB's 400 KB item limit",
                e.engagement_id
            )));
        }
        Ok(item)
    }

    fn state_put(&self, w: &StateWrite) -> Result<Put, O2cError> {
        let b = Put::builder().table_name(&self.tables.state).set_item(Some(self.engagement_item(w)?));
        let b = match w.expected {
            ExpectedVersion::New => b.condition_expression("attribute_not_exists(PK)"),
            ExpectedVersion::Is(v) => {
                b.condition_expression("#v = :v").expression_attribute_names("#v", "version").expression_attribute_values(":v", n(v))
            }
        };
        b.build().map_err(|e| O2cError::Bug(e.to_string()))
    }

    fn completion_put(&self, comp: &Completion) -> Result<Put, O2cError> {
        let data = serde_json::to_string(&comp.result).map_err(|e| O2cError::Bug(e.to_string()))?;
        let record = HashMap::from([
            ("id".to_owned(), s(comp.key.clone())),
            ("status".to_owned(), s(COMPLETED)),
            ("validation".to_owned(), s(comp.payload_hash.clone())),
            ("expiration".to_owned(), n(comp.expires_at.timestamp())),
            ("data".to_owned(), s(data)),
        ]);
        let idem = Put::builder()
            .table_name(&self.tables.idempotency)
            .set_item(Some(record))
            .return_values_on_condition_check_failure(ReturnValuesOnConditionCheckFailure::AllOld);
        match comp.mode {
            CompletionMode::Fresh => idem
                .condition_expression(KEY_IS_FREE)
                .set_expression_attribute_names(Some(key_is_free_names()))
                .set_expression_attribute_values(Some(key_is_free_values(comp.now))),
            CompletionMode::Reserved => idem
                .condition_expression("#st = :ip AND #val = :h")
                .expression_attribute_names("#st", "status")
                .expression_attribute_names("#val", "validation")
                .expression_attribute_values(":ip", s(IN_PROGRESS))
                .expression_attribute_values(":h", s(comp.payload_hash.clone())),
        }
        .build()
        .map_err(|e| O2cError::Bug(e.to_string()))
    }

    fn audit_put(&self, a: &AuditEntry) -> Result<Put, O2cError> {
        let mut item = to_item(a)?;
        item.insert("PK".into(), s(eng_pk(&a.engagement_id)));
        item.insert("SK".into(), s(format!("AUDIT#{}#{}#{}", a.at.format("%Y-%m-%dT%H:%M:%S%.6fZ"), a.step, a.event_id)));
        Put::builder().table_name(&self.tables.state).set_item(Some(item)).build().map_err(|e| O2cError::Bug(e.to_string()))
    }

    /// Consistent read of an idempotency record.
    async fn get_record(&self, key: &str) -> Result<Option<IdempotencyRecord>, O2cError> {
        self.counts.read();
        let out = self
            .client
            .get_item()
            .table_name(&self.tables.idempotency)
            .key("id", s(key))
            .consistent_read(true)
            .send()
            .await
            .map_err(dep)?;
        out.item().map(record_from_item).transpose()
    }

    fn classify(rec: IdempotencyRecord, hash: &str, now: DateTime<Utc>) -> ReserveOutcome {
        match rec.classify(hash, now) {
            // Expired between our condition and this read: someone else may be taking it.
            KeyState::Free | KeyState::InProgress { .. } => ReserveOutcome::InProgress,
            KeyState::Mismatch { stored } => ReserveOutcome::PayloadMismatch { stored },
            KeyState::Completed(rec) => ReserveOutcome::AlreadyCompleted(rec),
        }
    }

    /// Loads a whole reference-data snapshot (`PK = REF#<kind>` partitions).
    pub async fn load_reference(&self) -> Result<ReferenceData, O2cError> {
        let mut data = serde_json::Map::new();
        for kind in ["legal_entities", "tax_profiles", "customers", "service_offerings", "rate_cards", "project_templates"] {
            let mut map = serde_json::Map::new();
            for item in self.query_all(&format!("REF#{kind}"), None).await? {
                let id = get_s(&item, "SK").unwrap_or_default().to_owned();
                let body = get_s(&item, "body").unwrap_or("null");
                map.insert(id, serde_json::from_str(body).map_err(|e| O2cError::Bug(format!("reference {kind}: {e}")))?);
            }
            data.insert(kind.into(), serde_json::Value::Object(map));
        }
        let workflow = self.query_all("REF#workflow", None).await?;
        let wf = workflow.first().and_then(|i| get_s(i, "body")).unwrap_or("{}");
        data.insert("workflow".into(), serde_json::from_str(wf).map_err(|e| O2cError::Bug(format!("reference workflow: {e}")))?);
        let text = serde_json::Value::Object(data).to_string();
        ReferenceData::from_json(&text).map_err(|e| O2cError::dependency("reference-data", e.to_string()))
    }

    /// Writes a reference-data snapshot (one item per entity, `BatchWriteItem` in 25s).
    pub async fn put_reference(&self, data: &ReferenceData) -> Result<usize, O2cError> {
        let v = serde_json::to_value(data).map_err(|e| O2cError::Bug(e.to_string()))?;
        let mut requests = Vec::new();
        for (kind, entities) in v.as_object().into_iter().flatten() {
            if kind == "workflow" {
                requests.push((format!("REF#{kind}"), "rules".to_owned(), entities.to_string()));
                continue;
            }
            for (id, body) in entities.as_object().into_iter().flatten() {
                requests.push((format!("REF#{kind}"), id.clone(), body.to_string()));
            }
        }
        let total = requests.len();
        for chunk in requests.chunks(MAX_BATCH_WRITE) {
            let mut pending: Vec<WriteRequest> = chunk
                .iter()
                .map(|(pk, sk, body)| {
                    let item = HashMap::from([
                        ("PK".to_owned(), s(pk.clone())),
                        ("SK".to_owned(), s(sk.clone())),
                        ("body".to_owned(), s(body.clone())),
                    ]);
                    PutRequest::builder().set_item(Some(item)).build().map(|p| WriteRequest::builder().put_request(p).build())
                })
                .collect::<Result<_, _>>()
                .map_err(|e| O2cError::Bug(e.to_string()))?;
            for attempt in 0..8u32 {
                self.counts.write();
                let out = self.client.batch_write_item().request_items(&self.tables.state, pending.clone()).send().await.map_err(dep)?;
                pending = out.unprocessed_items().and_then(|m| m.get(&self.tables.state)).cloned().unwrap_or_default();
                if pending.is_empty() {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(50 << attempt)).await;
            }
            if !pending.is_empty() {
                return Err(O2cError::dependency("dynamodb", "BatchWriteItem left unprocessed items after retries"));
            }
        }
        Ok(total)
    }

    async fn query_all(&self, pk: &str, sk_prefix: Option<&str>) -> Result<Vec<Item>, O2cError> {
        let mut out = Vec::new();
        let mut start: Option<Item> = None;
        loop {
            self.counts.read();
            let mut q = self.client.query().table_name(&self.tables.state).consistent_read(true).expression_attribute_values(":pk", s(pk));
            q = match sk_prefix {
                Some(p) => q.key_condition_expression("PK = :pk AND begins_with(SK, :p)").expression_attribute_values(":p", s(p)),
                None => q.key_condition_expression("PK = :pk"),
            };
            let page = q.set_exclusive_start_key(start.take()).send().await.map_err(dep)?;
            out.extend(page.items().iter().cloned());
            match page.last_evaluated_key() {
                Some(k) if !k.is_empty() => start = Some(k.clone()),
                _ => break,
            }
        }
        Ok(out)
    }

    async fn query_index(&self, index: &str, pk_attr: &str, pk: String, limit: usize) -> Result<Vec<Item>, O2cError> {
        self.counts.read();
        let out = self
            .client
            .query()
            .table_name(&self.tables.state)
            .index_name(index)
            .key_condition_expression("#pk = :pk")
            .expression_attribute_names("#pk", pk_attr)
            .expression_attribute_values(":pk", s(pk))
            .scan_index_forward(false)
            .limit(i32::try_from(limit).unwrap_or(i32::MAX))
            .send()
            .await
            .map_err(dep)?;
        Ok(out.items().to_vec())
    }
}

impl DynamoStore {
    fn aggregate_put(&self, w: &AggregateWrite) -> Result<Put, O2cError> {
        let key = w.body.key();
        let mut item = to_item(&w.body)?;
        item.insert("PK".into(), s(eng_pk(&key.id)));
        item.insert("SK".into(), s(key.kind.sort_key()));
        item.insert("version".into(), n(w.expected.next()));
        let size = item_size(&item);
        if size > key.kind.budget_bytes() {
            return Err(O2cError::Bug(format!(
                "{} {} is {size} bytes, over its {}-byte budget",
                key.kind.as_str(),
                key.id,
                key.kind.budget_bytes()
            )));
        }
        let b = Put::builder().table_name(&self.tables.state).set_item(Some(item));
        let b = match w.expected {
            ExpectedVersion::New => b.condition_expression("attribute_not_exists(PK)"),
            ExpectedVersion::Is(v) => {
                b.condition_expression("#v = :v").expression_attribute_names("#v", "version").expression_attribute_values(":v", n(v))
            }
        };
        b.build().map_err(|e| O2cError::Bug(e.to_string()))
    }
}

impl EngagementStore for DynamoStore {
    async fn load_aggregates(&self, keys: &[AggregateKey]) -> Result<Loaded, O2cError> {
        let mut loaded = Loaded::default();
        for k in keys {
            self.counts.read();
            let out = self
                .client
                .get_item()
                .table_name(&self.tables.state)
                .key("PK", s(eng_pk(&k.id)))
                .key("SK", s(k.kind.sort_key()))
                .consistent_read(true)
                .send()
                .await
                .map_err(dep)?;
            if let Some(item) = out.item() {
                let version = get_n(item, "version").unwrap_or(0) as u64;
                loaded.items.push(LoadedAggregate { body: from_stored_item(item.clone(), &["PK", "SK", "version"])?, version });
            }
        }
        Ok(loaded)
    }

    async fn load(&self, engagement_id: &str) -> Result<Option<Versioned<Engagement>>, O2cError> {
        self.counts.read();
        let out = self
            .client
            .get_item()
            .table_name(&self.tables.state)
            .key("PK", s(eng_pk(engagement_id)))
            .key("SK", s("STATE"))
            .consistent_read(true)
            .send()
            .await
            .map_err(dep)?;
        let Some(item) = out.item() else { return Ok(None) };
        let version = get_n(item, "version").unwrap_or(0) as u64;
        let value = from_stored_item(item.clone(), &["PK", "SK", "version", "open_exception", "GSI1PK", "GSI1SK", "GSI2PK", "GSI2SK"])?;
        Ok(Some(Versioned { value, version }))
    }

    async fn commit(&self, c: Commit) -> Result<CommitOutcome, O2cError> {
        // One transaction (≤ 100 items; we write at most 3): the idempotency record (or a
        // condition check that our reservation still holds), the state, the audit entry.
        let mut items: Vec<TransactWriteItem> = Vec::with_capacity(3);
        match &c.key {
            KeyWrite::Complete(comp) => items.push(TransactWriteItem::builder().put(self.completion_put(comp)?).build()),
            KeyWrite::Hold { key, payload_hash } => {
                let check = ConditionCheck::builder()
                    .table_name(&self.tables.idempotency)
                    .key("id", s(key.clone()))
                    .condition_expression("#st = :ip AND #val = :h")
                    .expression_attribute_names("#st", "status")
                    .expression_attribute_names("#val", "validation")
                    .expression_attribute_values(":ip", s(IN_PROGRESS))
                    .expression_attribute_values(":h", s(payload_hash.clone()))
                    .build()
                    .map_err(|e| O2cError::Bug(e.to_string()))?;
                items.push(TransactWriteItem::builder().condition_check(check).build());
            }
            KeyWrite::Untracked => {}
        }
        let key_item = !matches!(c.key, KeyWrite::Untracked);
        let state_index = c.state.as_ref().map(|_| items.len());
        if let Some(w) = &c.state {
            items.push(TransactWriteItem::builder().put(self.state_put(w)?).build());
        }
        let others = items.len()..items.len() + c.others.len();
        for w in &c.others {
            items.push(TransactWriteItem::builder().put(self.aggregate_put(w)?).build());
        }
        if let Some(a) = &c.audit {
            items.push(TransactWriteItem::builder().put(self.audit_put(a)?).build());
        }
        if items.is_empty() {
            return Ok(CommitOutcome::Committed { version: None });
        }
        self.counts.write();
        let started = Instant::now();
        match self.client.transact_write_items().set_transact_items(Some(items)).send().await {
            Ok(_) => {
                debug!(elapsed_ms = started.elapsed().as_millis() as u64, "committed");
                Ok(CommitOutcome::Committed { version: c.state.as_ref().map(|w| w.expected.next()) })
            }
            Err(err) => match err.into_service_error() {
                TransactWriteItemsError::TransactionCanceledException(e) => {
                    let reasons = e.cancellation_reasons();
                    let failed = |i: usize| reasons.get(i).and_then(|r| r.code()) == Some("ConditionalCheckFailed");
                    if key_item && failed(0) {
                        let KeyWrite::Complete(comp) = &c.key else {
                            return Ok(CommitOutcome::ReservationLost);
                        };
                        let rec = match reasons[0].item() {
                            Some(item) if !item.is_empty() => Some(record_from_item(item)?),
                            _ => self.get_record(&comp.key).await?,
                        };
                        return Ok(match rec {
                            Some(r) if r.status == IdempotencyStatus::Completed || comp.mode == CompletionMode::Fresh => {
                                CommitOutcome::AlreadyCompleted(r)
                            }
                            _ => CommitOutcome::ReservationLost,
                        });
                    }
                    if state_index.is_some_and(failed) || others.clone().any(failed) {
                        return Ok(CommitOutcome::VersionConflict);
                    }
                    // TransactionConflict: another transaction touched the same items; re-run.
                    if reasons.iter().any(|r| r.code() == Some("TransactionConflict")) {
                        return Ok(CommitOutcome::VersionConflict);
                    }
                    Err(O2cError::dependency(
                        "dynamodb",
                        format!("transaction cancelled: {:?}", reasons.iter().map(|r| r.code()).collect::<Vec<_>>()),
                    ))
                }
                other => Err(O2cError::dependency("dynamodb", format!("{other:?}"))),
            },
        }
    }

    async fn audit_trail(&self, engagement_id: &str) -> Result<Vec<AuditEntry>, O2cError> {
        let items = self.query_all(&eng_pk(engagement_id), Some("AUDIT#")).await?;
        items.into_iter().map(|i| from_stored_item(i, &["PK", "SK"])).collect()
    }

    async fn list(&self, f: &EngagementFilter) -> Result<Vec<EngagementSummary>, O2cError> {
        let limit = if f.limit == 0 { 100 } else { f.limit };
        let mut partitions: Vec<(&str, &str, String)> = Vec::new();
        if f.open_exceptions {
            partitions.extend((0..STATUS_SHARDS).map(|sh| ("GSI2", "GSI2PK", format!("EXCEPTIONS#OPEN#{sh}"))));
        } else {
            let statuses: Vec<String> = match &f.status {
                Some(st) => vec![st.clone()],
                None => EngagementStatus::ALL.iter().map(|s| s.as_str().to_owned()).collect(),
            };
            for st in statuses {
                partitions.extend((0..STATUS_SHARDS).map(|sh| ("GSI1", "GSI1PK", format!("STATUS#{st}#{sh}"))));
            }
        }
        let mut rows = Vec::new();
        for (index, attr, pk) in partitions {
            for item in self.query_index(index, attr, pk, limit).await? {
                if f.status.as_deref().is_some_and(|st| get_s(&item, "status") != Some(st)) {
                    continue;
                }
                rows.push(EngagementSummary {
                    engagement_id: get_s(&item, "engagement_id").unwrap_or_default().to_owned(),
                    status: get_s(&item, "status").unwrap_or_default().to_owned(),
                    open_exception: item.get("open_exception").and_then(|v| v.as_bool().ok()).copied().unwrap_or(false),
                    updated_at: get_s(&item, "updated_at")
                        .and_then(|t| DateTime::parse_from_rfc3339(t).ok())
                        .map(|t| t.with_timezone(&Utc))
                        .unwrap_or_default(),
                    version: get_n(&item, "version").unwrap_or(0) as u64,
                });
            }
        }
        rows.sort_by_key(|r| std::cmp::Reverse(r.updated_at));
        rows.truncate(limit);
        Ok(rows)
    }
}

impl IdempotencyStore for DynamoStore {
    async fn get(&self, key: &str) -> Result<Option<IdempotencyRecord>, O2cError> {
        self.get_record(key).await
    }

    async fn reserve(&self, r: Reservation) -> Result<ReserveOutcome, O2cError> {
        let record = HashMap::from([
            ("id".to_owned(), s(r.key.clone())),
            ("status".to_owned(), s(IN_PROGRESS)),
            ("validation".to_owned(), s(r.payload_hash.clone())),
            ("expiration".to_owned(), n(r.expires_at.timestamp())),
            ("in_progress_expiration".to_owned(), n(ms(r.in_progress_until))),
        ]);
        match &r.claim {
            None => {
                let req = self
                    .client
                    .put_item()
                    .table_name(&self.tables.idempotency)
                    .set_item(Some(record))
                    .condition_expression(KEY_IS_FREE)
                    .set_expression_attribute_names(Some(key_is_free_names()))
                    .set_expression_attribute_values(Some(key_is_free_values(r.now)))
                    .return_values_on_condition_check_failure(ReturnValuesOnConditionCheckFailure::AllOld);
                self.counts.write();
                match req.send().await {
                    Ok(_) => Ok(ReserveOutcome::Reserved { claimed_version: None }),
                    Err(err) => match err.into_service_error() {
                        PutItemError::ConditionalCheckFailedException(e) => {
                            let rec = match e.item() {
                                Some(item) if !item.is_empty() => Some(record_from_item(item)?),
                                _ => self.get_record(&r.key).await?,
                            };
                            Ok(rec.map_or(ReserveOutcome::InProgress, |rec| Self::classify(rec, &r.payload_hash, r.now)))
                        }
                        other => Err(O2cError::dependency("dynamodb", format!("{other:?}"))),
                    },
                }
            }
            Some(claim) => {
                // Reserve + claim in one transaction: the engagement is frozen by the same
                // write that owns the key (one write request).
                let put = Put::builder()
                    .table_name(&self.tables.idempotency)
                    .set_item(Some(record))
                    .condition_expression(KEY_IS_FREE)
                    .set_expression_attribute_names(Some(key_is_free_names()))
                    .set_expression_attribute_values(Some(key_is_free_values(r.now)))
                    .return_values_on_condition_check_failure(ReturnValuesOnConditionCheckFailure::AllOld)
                    .build()
                    .map_err(|e| O2cError::Bug(e.to_string()))?;
                self.counts.write();
                let res = self
                    .client
                    .transact_write_items()
                    .transact_items(TransactWriteItem::builder().put(put).build())
                    .transact_items(TransactWriteItem::builder().put(self.state_put(claim)?).build())
                    .send()
                    .await;
                match res {
                    Ok(_) => Ok(ReserveOutcome::Reserved { claimed_version: Some(claim.expected.next()) }),
                    Err(err) => match err.into_service_error() {
                        TransactWriteItemsError::TransactionCanceledException(e) => {
                            let reasons = e.cancellation_reasons();
                            if reasons.first().and_then(|x| x.code()) == Some("ConditionalCheckFailed") {
                                let rec = match reasons[0].item() {
                                    Some(item) if !item.is_empty() => Some(record_from_item(item)?),
                                    _ => self.get_record(&r.key).await?,
                                };
                                return Ok(rec.map_or(ReserveOutcome::InProgress, |rec| Self::classify(rec, &r.payload_hash, r.now)));
                            }
                            Ok(ReserveOutcome::StateConflict)
                        }
                        other => Err(O2cError::dependency("dynamodb", format!("{other:?}"))),
                    },
                }
            }
        }
    }

    async fn release(&self, key: &str) -> Result<(), O2cError> {
        self.counts.write();
        let res = self
            .client
            .delete_item()
            .table_name(&self.tables.idempotency)
            .key("id", s(key))
            .condition_expression("#st = :ip")
            .expression_attribute_names("#st", "status")
            .expression_attribute_values(":ip", s(IN_PROGRESS))
            .send()
            .await;
        match res {
            Ok(_) => Ok(()),
            Err(e) if e.as_service_error().is_some_and(|s| s.is_conditional_check_failed_exception()) => Ok(()),
            Err(e) => Err(dep(e)),
        }
    }
}

impl RejectionStore for DynamoStore {
    async fn park(&self, m: &RejectedMessage) -> Result<(), O2cError> {
        let pk = format!("REJ#{}", m.rejection_id);
        let mut item = to_item(m)?;
        item.insert("PK".into(), s(pk.clone()));
        item.insert("SK".into(), s("REJECTION"));
        item.insert("GSI1PK".into(), s(format!("REJECTIONS#{}", m.rejected_at.format("%Y-%m-%d"))));
        item.insert("GSI1SK".into(), s(format!("{}#{}", m.rejected_at.to_rfc3339(), m.rejection_id)));
        self.counts.write();
        let res = self
            .client
            .put_item()
            .table_name(&self.tables.state)
            .set_item(Some(item))
            .condition_expression("attribute_not_exists(PK)")
            .send()
            .await;
        match res {
            Ok(_) => return Ok(()),
            Err(e) if e.as_service_error().is_some_and(|s| s.is_conditional_check_failed_exception()) => {}
            Err(e) => return Err(dep(e)),
        }
        // The same body again: count the delivery unless this message id is recorded.
        let Some(message_id) = m.message_ids.first() else { return Ok(()) };
        let reasons = serde_dynamo::to_attribute_value(&m.reasons).map_err(|e| O2cError::Bug(e.to_string()))?;
        self.counts.write();
        let res = self
            .client
            .update_item()
            .table_name(&self.tables.state)
            .key("PK", s(pk))
            .key("SK", s("REJECTION"))
            .update_expression(
                "SET deliveries = deliveries + :one, message_ids = list_append(message_ids, :ids), last_rejected_at = :at, reasons = :r, error_type = :t",
            )
            .condition_expression("NOT contains(message_ids, :mid)")
            .expression_attribute_values(":one", n(1))
            .expression_attribute_values(":ids", AttributeValue::L(vec![s(message_id.clone())]))
            .expression_attribute_values(":mid", s(message_id.clone()))
            .expression_attribute_values(":at", s(m.rejected_at.to_rfc3339_opts(chrono::SecondsFormat::AutoSi, true)))
            .expression_attribute_values(":r", reasons)
            .expression_attribute_values(":t", s(m.error_type.clone()))
            .send()
            .await;
        match res {
            Ok(_) => Ok(()),
            // This very message was parked already (a redelivery): nothing new.
            Err(e) if e.as_service_error().is_some_and(|s| s.is_conditional_check_failed_exception()) => Ok(()),
            Err(e) => Err(dep(e)),
        }
    }

    async fn rejections(&self, limit: usize) -> Result<Vec<RejectedMessage>, O2cError> {
        let mut out = Vec::new();
        let today = o2c_app::ports::Clock::now(&o2c_app::ports::SystemClock).date_naive();
        // Day partitions, newest first, back 30 days.
        for back in 0..30 {
            if out.len() >= limit {
                break;
            }
            let day = today - chrono::Days::new(back);
            self.counts.read();
            let page = self
                .client
                .query()
                .table_name(&self.tables.state)
                .index_name("GSI1")
                .key_condition_expression("GSI1PK = :pk")
                .expression_attribute_values(":pk", s(format!("REJECTIONS#{}", day.format("%Y-%m-%d"))))
                .scan_index_forward(false)
                .send()
                .await
                .map_err(dep)?;
            for item in page.items() {
                // GSI1 projects keys only for rejections; read the item itself.
                let Some(pk) = get_s(item, "PK") else { continue };
                self.counts.read();
                let full = self
                    .client
                    .get_item()
                    .table_name(&self.tables.state)
                    .key("PK", s(pk))
                    .key("SK", s("REJECTION"))
                    .send()
                    .await
                    .map_err(dep)?;
                if let Some(it) = full.item().cloned() {
                    out.push(from_stored_item(it, &["PK", "SK", "GSI1PK", "GSI1SK"])?);
                }
                if out.len() >= limit {
                    break;
                }
            }
        }
        Ok(out)
    }

    async fn record_failure(&self, f: &DeliveryFailure) -> Result<(), O2cError> {
        let mut item = to_item(f)?;
        item.insert("PK".into(), s(format!("MSG#{}", f.message_id)));
        item.insert("SK".into(), s("FAILURE"));
        item.insert("expires".into(), n(f.at.timestamp() + FAILURE_TTL_SECS));
        self.counts.write();
        self.client.put_item().table_name(&self.tables.state).set_item(Some(item)).send().await.map_err(dep)?;
        Ok(())
    }

    async fn failure(&self, message_id: &str) -> Result<Option<DeliveryFailure>, O2cError> {
        self.counts.read();
        let out = self
            .client
            .get_item()
            .table_name(&self.tables.state)
            .key("PK", s(format!("MSG#{message_id}")))
            .key("SK", s("FAILURE"))
            .send()
            .await
            .map_err(dep)?;
        match out.item() {
            None => Ok(None),
            Some(item) => Ok(Some(from_stored_item(item.clone(), &["PK", "SK", "expires"])?)),
        }
    }
}

/// A snapshot and when it was loaded.
type Cached = (Instant, Arc<ReferenceData>);

/// Reference data read from the state table, cached per process for `ttl`.
#[derive(Clone)]
pub struct DynamoReferenceData {
    store: DynamoStore,
    ttl: Duration,
    cache: Arc<RwLock<Option<Cached>>>,
}

impl DynamoReferenceData {
    /// A cached source over `store`.
    pub fn new(store: DynamoStore, ttl: Duration) -> Self {
        Self { store, ttl, cache: Arc::new(RwLock::new(None)) }
    }
}

impl ReferenceDataSource for DynamoReferenceData {
    async fn snapshot(&self) -> Result<Arc<ReferenceData>, O2cError> {
        if let Some((at, data)) = self.cache.read().await.as_ref()
            && at.elapsed() < self.ttl
        {
            return Ok(data.clone());
        }
        let mut guard = self.cache.write().await;
        if let Some((at, data)) = guard.as_ref()
            && at.elapsed() < self.ttl
        {
            return Ok(data.clone());
        }
        let fresh = Arc::new(self.store.load_reference().await?);
        *guard = Some((Instant::now(), fresh.clone()));
        Ok(fresh)
    }
}
