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
//! transaction holds at most 100 items and 4 MB (we use 3 plus one per other aggregate, and
//! check the total before sending); aggregates that grow with an engagement's history (WIP
//! shards, invoices) are stored gzip-compressed in one binary attribute `z`;
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
    AggregateWrite, CaseFilter, Commit, CommitOutcome, Completion, CompletionMode, DeliveryFailure, EngagementFilter, EngagementStore,
    EngagementSummary, ExpectedVersion, IdempotencyRecord, IdempotencyStatus, IdempotencyStore, KeyState, KeyWrite, ReferenceDataSource,
    RejectedMessage, RejectionStore, Reservation, ReserveOutcome, StateWrite, StoredResult, Versioned, queue_order,
};
use o2c_domain::aggregate::{AggregateKey, AggregateKind, Loaded, LoadedAggregate};
use o2c_domain::engagement::{AuditEntry, Engagement, EngagementStatus};
use o2c_domain::reference::ReferenceData;
use serde::Serialize;
use serde::de::DeserializeOwned;
use tokio::sync::RwLock;
use tracing::debug;

type Item = HashMap<String, AttributeValue>;

/// DynamoDB's item size limit is 400 KB; stay clear of it (attribute names count too).
pub const MAX_ITEM_BYTES: usize = 350 * 1024;
/// `TransactWriteItems` carries at most 4 MB of items.
pub const MAX_TRANSACTION_BYTES: usize = 4 * 1024 * 1024;
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
    /// Per step: commits sent, and how many the version check refused.
    commits: std::sync::Mutex<std::collections::BTreeMap<String, CommitCount>>,
}

/// One step's commits and version conflicts.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct CommitCount {
    /// Commit transactions sent.
    pub commits: u64,
    /// Of those, refused because another writer changed an item first.
    pub conflicts: u64,
}

impl RequestCounts {
    /// `(read requests, write requests)` so far.
    pub fn snapshot(&self) -> (u64, u64) {
        (self.reads.load(Ordering::Relaxed), self.writes.load(Ordering::Relaxed))
    }

    /// Commits and version conflicts per step so far.
    pub fn commits_by_step(&self) -> std::collections::BTreeMap<String, CommitCount> {
        self.commits.lock().map(|m| m.clone()).unwrap_or_default()
    }

    fn commit(&self, step: &str, conflict: bool) {
        if let Ok(mut m) = self.commits.lock() {
            let c = m.entry(step.to_owned()).or_default();
            c.commits += 1;
            c.conflicts += u64::from(conflict);
        }
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

fn dep<E: std::error::Error + 'static>(e: SdkError<E>) -> O2cError {
    // The SDK already retried throttling and 5xx (standard retry mode); what reaches here
    // is transient from the step's point of view.
    crate::sdk_error("dynamodb", &e)
}

/// `Ok(true)` when a conditional write was written, `Ok(false)` when its condition refused
/// it, the error otherwise.
fn written<T, E: aws_sdk_dynamodb::error::ProvideErrorMetadata + std::error::Error + 'static>(
    res: Result<T, SdkError<E>>,
) -> Result<bool, O2cError> {
    match res {
        Ok(_) => Ok(true),
        Err(e) if e.as_service_error().and_then(|s| s.code()) == Some("ConditionalCheckFailedException") => Ok(false),
        Err(e) => Err(dep(e)),
    }
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

// Every mapping between a domain value and an item goes through `serde_json::Value`, the
// one data model the domain's types are (de)serialized with elsewhere in a function (events are
// decoded from `&Value`). Mapping them with serde_dynamo's own (de)serializer compiled every
// domain type's serde code once more per function (about 0.5 MiB of each bootstrap, see
// BENCHMARKS.md); through `Value`, serde_dynamo only maps `Value`. Numbers stay exact: the
// domain keeps money as decimal strings and counts as integers, never floats.

fn to_item<T: Serialize>(v: &T) -> Result<Item, O2cError> {
    let value = serde_json::to_value(v).map_err(|e| O2cError::Bug(format!("cannot map to a DynamoDB item: {e}")))?;
    serde_dynamo::to_item(value).map_err(|e| O2cError::Bug(format!("cannot map to a DynamoDB item: {e}")))
}

/// Maps an item back to a value after dropping the key / index attributes the adapter added.
fn from_stored_item<T: DeserializeOwned>(mut item: Item, added: &[&str]) -> Result<T, O2cError> {
    for k in added {
        item.remove(*k);
    }
    from_item(item)
}

fn from_item<T: DeserializeOwned>(item: Item) -> Result<T, O2cError> {
    let value: serde_json::Value = serde_dynamo::from_item(item).map_err(|e| O2cError::Bug(format!("stored item does not parse: {e}")))?;
    T::deserialize(&value).map_err(|e| O2cError::Bug(format!("stored item does not parse: {e}")))
}

/// A value as JSON text for an attribute, through `Value` like every item (above).
fn to_json<T: Serialize>(v: &T) -> serde_json::Result<String> {
    serde_json::to_value(v).and_then(|v| serde_json::to_string(&v))
}

/// A value from JSON text stored in an attribute, through `Value` like every item (above).
fn from_json<T: DeserializeOwned>(text: &str) -> serde_json::Result<T> {
    serde_json::from_str::<serde_json::Value>(text).and_then(|v| T::deserialize(&v))
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

    /// Every item of one index partition (paginated; eventually consistent like any GSI).
    async fn query_index_all(&self, index: &str, pk_attr: &str, pk: String) -> Result<Vec<Item>, O2cError> {
        let mut out = Vec::new();
        let mut start = None;
        loop {
            self.counts.read();
            let page = self
                .client
                .query()
                .table_name(&self.tables.state)
                .index_name(index)
                .key_condition_expression("#pk = :pk")
                .expression_attribute_names("#pk", pk_attr)
                .expression_attribute_values(":pk", s(pk.clone()))
                .set_exclusive_start_key(start.take())
                .send()
                .await
                .map_err(dep)?;
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

mod idempotency;
mod mappings;
mod operator_log;
mod reference;
mod rejections;
mod state;

pub use reference::DynamoReferenceData;
