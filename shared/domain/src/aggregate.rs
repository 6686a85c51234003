//! Aggregates besides the engagement: each is its own stored item with its own key,
//! version and size budget, so steps that touch different aggregates of one engagement do
//! not contend on one item, and state that grows (WIP, invoices) does not swell the
//! engagement. A step commits every aggregate it changed in one atomic write with its
//! audit entry and idempotency record.
//!
//! | kind | owner / id | DynamoDB PK / SK | written by | budget |
//! |---|---|---|---|---|
//! | engagement | engagement | `ENG#<eng>` / `STATE` | intake, provisioning, billing setup, dead letters | 350 KB |
//! | CRM sync state | engagement | `ENG#<eng>` / `CRM` | CRM write-back | 16 KB |
//! | assignments | engagement | `ENG#<eng>` / `ASSIGNMENTS` | delivery intake | 128 KB |
//! | WIP shard | engagement / shard | `ENG#<eng>` / `WIP#<nn>` | delivery intake, invoice run, approval | 350 KB |
//! | ledger | engagement | `ENG#<eng>` / `LEDGER` | delivery intake (milestones), invoice run, approval | 128 KB |
//! | invoice | engagement / invoice id | `ENG#<eng>` / `INV#<id>` | invoice run, approval, posting | 256 KB |
//! | resource day | resource / date | `RES#<resource>` / `DAY#<date>` | delivery intake | 16 KB |
//! | invoice counter | legal entity | `LE#<entity>` / `INVOICE_COUNTER` | posting | 1 KB |
//! | receivables (open items) | legal entity / customer | `LE#<entity>` / `RCV#<customer>` | posting, cash application | 350 KB |
//! | invoice reference (+ settled item) | legal entity / number | `LE#<entity>` / `NUM#<number>` | posting, cash application | 4 KB |
//! | revenue ledger | engagement | `ENG#<eng>` / `REVENUE` | revenue recognition | 256 KB |
//! | payment reference (+ settled record) | legal entity / payment | `LE#<entity>` / `PMT#<payment id>` | cash application | 64 KB |
//! | exception case | exception | `EXC#<exception id>` / `CASE` | exceptions | 350 KB |
//! | reconciliation report | engagement | `ENG#<eng>` / `RECON` | reconciliation | 128 KB |

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::delivery::{Assignments, ResourceDay, WipShard};
use crate::engagement::CrmSync;
use crate::ids::EngagementId;
use crate::invoicing::{InvoiceCounter, InvoiceDoc, Ledger};
use crate::receivables::Receivables;

/// What kind of aggregate an item is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AggregateKind {
    /// What the CRM opportunity was last sent.
    CrmSync,
    /// Who is staffed on the engagement.
    Assignments,
    /// One shard of the engagement's WIP.
    WipShard,
    /// The engagement's billing ledger.
    Ledger,
    /// An invoice.
    Invoice,
    /// A resource's hours on one day, across engagements.
    ResourceDay,
    /// A legal entity's invoice numbers.
    InvoiceCounter,
    /// A customer's receivables at a legal entity.
    Receivables,
    /// Which customer and invoice an invoice number belongs to.
    InvoiceRef,
    /// Which customer's receivables hold a payment.
    PaymentRef,
    /// Revenue recognised for an engagement, and its journals.
    RevenueLedger,
    /// An exception as operators work it.
    ExceptionCase,
    /// The latest reconciliation of an engagement.
    Reconciliation,
}

/// What owns an aggregate (its DynamoDB partition).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Owner {
    /// An engagement (`ENG#`).
    Engagement,
    /// A resource (`RES#`).
    Resource,
    /// A legal entity (`LE#`).
    LegalEntity,
    /// An exception (`EXC#`): found by its id alone.
    Exception,
}

impl AggregateKind {
    /// Every kind, in declaration order.
    pub const ALL: [AggregateKind; 13] = [
        Self::CrmSync,
        Self::Assignments,
        Self::WipShard,
        Self::Ledger,
        Self::Invoice,
        Self::ResourceDay,
        Self::InvoiceCounter,
        Self::Receivables,
        Self::InvoiceRef,
        Self::PaymentRef,
        Self::RevenueLedger,
        Self::ExceptionCase,
        Self::Reconciliation,
    ];

    /// Every kind's wire name, in the order of [`Self::ALL`].
    pub const NAMES: &'static [&'static str] = &{
        let mut names = [""; Self::ALL.len()];
        let mut i = 0;
        while i < names.len() {
            names[i] = Self::ALL[i].as_str();
            i += 1;
        }
        names
    };

    /// The kind with wire name `name`.
    pub fn from_name(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|k| k.as_str() == name)
    }

    /// Wire / storage name.
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::CrmSync => "crm_sync",
            Self::Assignments => "assignments",
            Self::WipShard => "wip_shard",
            Self::Ledger => "ledger",
            Self::Invoice => "invoice",
            Self::ResourceDay => "resource_day",
            Self::InvoiceCounter => "invoice_counter",
            Self::Receivables => "receivables",
            Self::InvoiceRef => "invoice_ref",
            Self::PaymentRef => "payment_ref",
            Self::RevenueLedger => "revenue_ledger",
            Self::ExceptionCase => "exception_case",
            Self::Reconciliation => "reconciliation",
        }
    }

    /// The prefix of its sort key under the owner's partition (DynamoDB).
    pub fn sort_key(self) -> &'static str {
        match self {
            Self::CrmSync => "CRM",
            Self::Assignments => "ASSIGNMENTS",
            Self::WipShard => "WIP",
            Self::Ledger => "LEDGER",
            Self::Invoice => "INV",
            Self::ResourceDay => "DAY",
            Self::InvoiceCounter => "INVOICE_COUNTER",
            Self::Receivables => "RCV",
            Self::InvoiceRef => "NUM",
            Self::PaymentRef => "PMT",
            Self::RevenueLedger => "REVENUE",
            Self::ExceptionCase => "CASE",
            Self::Reconciliation => "RECON",
        }
    }

    /// Who owns it.
    pub fn owner(self) -> Owner {
        match self {
            Self::ResourceDay => Owner::Resource,
            Self::InvoiceCounter | Self::Receivables | Self::InvoiceRef | Self::PaymentRef => Owner::LegalEntity,
            Self::ExceptionCase => Owner::Exception,
            _ => Owner::Engagement,
        }
    }

    /// Stored gzip-compressed: the state grows with history (entries and their billing,
    /// invoice lines, a customer's invoices and payments), and JSON of repetitive records
    /// shrinks 5–10× under gzip. The budget applies to the compressed form, in every store.
    pub fn compressed(self) -> bool {
        matches!(self, Self::WipShard | Self::Invoice | Self::Receivables)
    }

    /// Largest stored size the store accepts (bytes; compressed for [`Self::compressed`]
    /// kinds), under DynamoDB's 400 KB item limit.
    pub fn budget_bytes(self) -> usize {
        match self {
            Self::CrmSync | Self::ResourceDay => 16 * 1024,
            Self::Assignments | Self::Ledger | Self::Reconciliation => 128 * 1024,
            Self::Invoice | Self::RevenueLedger => 256 * 1024,
            Self::WipShard | Self::Receivables | Self::ExceptionCase => 350 * 1024,
            Self::InvoiceCounter => 1024,
            // The reference and, once paid, its settled open item.
            Self::InvoiceRef => 4 * 1024,
            Self::PaymentRef => 64 * 1024,
        }
    }
}

impl Owner {
    /// Partition key prefix (DynamoDB).
    pub fn prefix(self) -> &'static str {
        match self {
            Self::Engagement => "ENG#",
            Self::Resource => "RES#",
            Self::LegalEntity => "LE#",
            Self::Exception => "EXC#",
        }
    }
}

/// The identity of a stored aggregate: its kind, its owner (engagement, resource or legal
/// entity) and an id within the owner (empty for the one-per-owner kinds).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct AggregateKey {
    /// Kind.
    pub kind: AggregateKind,
    /// Owner id.
    pub owner: String,
    /// Id within the owner.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub id: String,
}

impl AggregateKey {
    fn of(kind: AggregateKind, owner: &str, id: impl Into<String>) -> Self {
        Self { kind, owner: owner.to_owned(), id: id.into() }
    }

    /// The CRM sync state of an engagement.
    pub fn crm_sync(engagement_id: &str) -> Self {
        Self::of(AggregateKind::CrmSync, engagement_id, "")
    }

    /// The assignments of an engagement.
    pub fn assignments(engagement_id: &str) -> Self {
        Self::of(AggregateKind::Assignments, engagement_id, "")
    }

    /// WIP shard `shard` of an engagement.
    pub fn wip_shard(engagement_id: &str, shard: u16) -> Self {
        Self::of(AggregateKind::WipShard, engagement_id, format!("{shard:02}"))
    }

    /// The ledger of an engagement.
    pub fn ledger(engagement_id: &str) -> Self {
        Self::of(AggregateKind::Ledger, engagement_id, "")
    }

    /// An invoice of an engagement.
    pub fn invoice(engagement_id: &str, invoice_id: &str) -> Self {
        Self::of(AggregateKind::Invoice, engagement_id, invoice_id)
    }

    /// A resource's day.
    pub fn resource_day(resource_id: &str, date: chrono::NaiveDate) -> Self {
        Self::of(AggregateKind::ResourceDay, resource_id, date.to_string())
    }

    /// The invoice counter of a legal entity.
    pub fn invoice_counter(legal_entity_id: &str) -> Self {
        Self::of(AggregateKind::InvoiceCounter, legal_entity_id, "")
    }

    /// An engagement's revenue ledger.
    pub fn revenue_ledger(engagement_id: &str) -> Self {
        Self::of(AggregateKind::RevenueLedger, engagement_id, "")
    }

    /// A customer's receivables at a legal entity.
    pub fn receivables(legal_entity_id: &str, customer_id: &str) -> Self {
        Self::of(AggregateKind::Receivables, legal_entity_id, customer_id)
    }

    /// The reference of invoice `number` of a legal entity.
    pub fn invoice_ref(legal_entity_id: &str, number: &str) -> Self {
        Self::of(AggregateKind::InvoiceRef, legal_entity_id, number)
    }

    /// The reference of payment `payment_id` received by a legal entity.
    pub fn payment_ref(legal_entity_id: &str, payment_id: &str) -> Self {
        Self::of(AggregateKind::PaymentRef, legal_entity_id, payment_id)
    }

    /// The latest reconciliation of an engagement.
    pub fn reconciliation(engagement_id: &str) -> Self {
        Self::of(AggregateKind::Reconciliation, engagement_id, "")
    }

    /// The case of exception `exception_id`.
    pub fn exception_case(exception_id: &str) -> Self {
        Self::of(AggregateKind::ExceptionCase, exception_id, "")
    }

    /// The DynamoDB partition key.
    pub fn partition_key(&self) -> String {
        format!("{}{}", self.kind.owner().prefix(), self.owner)
    }

    /// The DynamoDB sort key.
    pub fn sort_key(&self) -> String {
        if self.id.is_empty() { self.kind.sort_key().to_owned() } else { format!("{}#{}", self.kind.sort_key(), self.id) }
    }
}

/// What a step asks the shell to load besides the engagement.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Load {
    /// One aggregate.
    Key(AggregateKey),
    /// Every aggregate of `kind` under `owner` (e.g. all WIP shards, all invoices).
    All {
        /// Kind.
        kind: AggregateKind,
        /// Owner id.
        owner: String,
    },
}

/// What the CRM opportunity of an engagement was last sent, and how it answered.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CrmSyncState {
    /// Engagement.
    pub engagement_id: EngagementId,
    /// The last write (or attempt).
    pub last: CrmSync,
}

/// Where an invoice number belongs (so a remittance quoting it finds its customer).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct InvoiceRef {
    /// Legal entity.
    pub legal_entity_id: String,
    /// Invoice number.
    pub number: String,
    /// Customer.
    pub customer_id: String,
    /// o2c invoice id.
    pub invoice_id: String,
    /// The invoice's open item once paid in full and settled out of the receivables
    /// (`None` while it is open there).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub settled: Option<crate::receivables::OpenItem>,
}

/// Where a payment was recorded (so its reversal finds the customer).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PaymentRef {
    /// Legal entity.
    pub legal_entity_id: String,
    /// Payment.
    pub payment_id: String,
    /// Customer (or `SUSPENSE`).
    pub customer_id: String,
    /// Where its ERP booking stands.
    pub status: crate::receivables::PaymentStatus,
    /// The receipt booked (or being booked) in the ERP — a redelivery books exactly this.
    pub receipt: crate::receivables::CashReceipt,
    /// The payment's record once closed and settled out of the receivables (`None` while
    /// it is there).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub settled: Option<crate::receivables::PaymentRecord>,
}

/// An aggregate's state, typed: `{"kind": "<snake_case variant>", "state": {…}}` (its
/// `Deserialize` is written out below).
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "kind", content = "state", rename_all = "snake_case")]
// Short-lived values passed by move; boxing the larger variants would only add allocations.
#[allow(clippy::large_enum_variant)]
pub enum AggregateBody {
    /// CRM sync state.
    CrmSync(CrmSyncState),
    /// Assignments.
    Assignments(Assignments),
    /// A WIP shard.
    WipShard(WipShard),
    /// The ledger.
    Ledger(Ledger),
    /// An invoice.
    Invoice(InvoiceDoc),
    /// A resource day.
    ResourceDay(ResourceDay),
    /// An invoice counter.
    InvoiceCounter(InvoiceCounter),
    /// Receivables.
    Receivables(Receivables),
    /// An invoice reference.
    InvoiceRef(InvoiceRef),
    /// A payment reference.
    PaymentRef(PaymentRef),
    /// A revenue ledger.
    RevenueLedger(crate::revenue::RevenueLedger),
    /// An exception case.
    ExceptionCase(crate::exception_case::ExceptionCase),
    /// A reconciliation report.
    Reconciliation(crate::reconciliation::ReconciliationReport),
}

impl AggregateBody {
    /// Its key.
    pub fn key(&self) -> AggregateKey {
        match self {
            Self::CrmSync(s) => AggregateKey::crm_sync(&s.engagement_id),
            Self::Assignments(a) => AggregateKey::assignments(&a.engagement_id),
            Self::WipShard(w) => AggregateKey::wip_shard(&w.engagement_id, w.shard),
            Self::Ledger(l) => AggregateKey::ledger(&l.engagement_id),
            Self::Invoice(i) => AggregateKey::invoice(&i.engagement_id, &i.invoice_id),
            Self::ResourceDay(d) => AggregateKey::resource_day(&d.resource_id, d.date),
            Self::InvoiceCounter(c) => AggregateKey::invoice_counter(&c.legal_entity_id),
            Self::Receivables(r) => AggregateKey::receivables(&r.legal_entity_id, &r.customer_id),
            Self::InvoiceRef(r) => AggregateKey::invoice_ref(&r.legal_entity_id, &r.number),
            Self::PaymentRef(r) => AggregateKey::payment_ref(&r.legal_entity_id, &r.payment_id),
            Self::RevenueLedger(r) => AggregateKey::revenue_ledger(&r.engagement_id),
            Self::ExceptionCase(c) => AggregateKey::exception_case(c.exception_id.as_str()),
            Self::Reconciliation(r) => AggregateKey::reconciliation(&r.engagement_id),
        }
    }
}

/// Reads `{"kind", "state"}` in either order, like serde's adjacently tagged derive, without
/// its buffered path: when `kind` comes first (as every writer here puts it, and as
/// `serde_json::Value` orders it) the state is decoded straight into its type; when `state`
/// comes first it is read as a `serde_json::Value` and typed from there. The derive buffered
/// into serde's private `Content` instead, one more instance of every aggregate type's
/// decoding in each binary (~0.1 MiB of a Lambda bootstrap).
impl<'de> Deserialize<'de> for AggregateBody {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        use serde::de::{self, IgnoredAny, MapAccess, Visitor};

        /// Calls `$read::<T>()` for the variant named `$kind` and wraps it. The match over
        /// [`AggregateKind`] is exhaustive: a new kind does not compile until it is read here.
        macro_rules! typed {
            ($kind:expr, $read:expr, $err:ty) => {
                match AggregateKind::from_name($kind) {
                    Some(AggregateKind::CrmSync) => $read.map(AggregateBody::CrmSync),
                    Some(AggregateKind::Assignments) => $read.map(AggregateBody::Assignments),
                    Some(AggregateKind::WipShard) => $read.map(AggregateBody::WipShard),
                    Some(AggregateKind::Ledger) => $read.map(AggregateBody::Ledger),
                    Some(AggregateKind::Invoice) => $read.map(AggregateBody::Invoice),
                    Some(AggregateKind::ResourceDay) => $read.map(AggregateBody::ResourceDay),
                    Some(AggregateKind::InvoiceCounter) => $read.map(AggregateBody::InvoiceCounter),
                    Some(AggregateKind::Receivables) => $read.map(AggregateBody::Receivables),
                    Some(AggregateKind::InvoiceRef) => $read.map(AggregateBody::InvoiceRef),
                    Some(AggregateKind::PaymentRef) => $read.map(AggregateBody::PaymentRef),
                    Some(AggregateKind::RevenueLedger) => $read.map(AggregateBody::RevenueLedger),
                    Some(AggregateKind::ExceptionCase) => $read.map(AggregateBody::ExceptionCase),
                    Some(AggregateKind::Reconciliation) => $read.map(AggregateBody::Reconciliation),
                    None => Err(<$err as de::Error>::unknown_variant($kind, AggregateKind::NAMES)),
                }
            };
        }

        struct Body;
        impl<'de> Visitor<'de> for Body {
            type Value = AggregateBody;

            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("an aggregate: {\"kind\", \"state\"}")
            }

            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<AggregateBody, A::Error> {
                let mut kind: Option<String> = None;
                let mut buffered: Option<serde_json::Value> = None;
                while let Some(key) = map.next_key::<String>()? {
                    match key.as_str() {
                        "kind" if kind.is_some() => return Err(de::Error::duplicate_field("kind")),
                        "kind" => kind = Some(map.next_value()?),
                        "state" if buffered.is_some() => return Err(de::Error::duplicate_field("state")),
                        "state" => match kind.as_deref() {
                            // The kind is known: decode the state straight into its type.
                            Some(k) => {
                                let body = typed!(k, map.next_value(), A::Error)?;
                                while map.next_entry::<IgnoredAny, IgnoredAny>()?.is_some() {}
                                return Ok(body);
                            }
                            None => buffered = Some(map.next_value()?),
                        },
                        _ => {
                            map.next_value::<IgnoredAny>()?;
                        }
                    }
                }
                let kind = kind.ok_or_else(|| de::Error::missing_field("kind"))?;
                let state = buffered.ok_or_else(|| de::Error::missing_field("state"))?;
                typed!(kind.as_str(), Deserialize::deserialize(&state).map_err(de::Error::custom), A::Error)
            }
        }

        d.deserialize_map(Body)
    }
}

/// An aggregate as loaded, with the version the store holds.
#[derive(Debug, Clone, PartialEq)]
pub struct LoadedAggregate {
    /// State.
    pub body: AggregateBody,
    /// Store version (1 for the first write).
    pub version: u64,
}

/// The aggregates (other than the engagement) a step read.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Loaded {
    /// What was found (absent keys are simply missing).
    pub items: Vec<LoadedAggregate>,
    /// What was asked for (so a step can tell "absent" from "not loaded").
    pub asked: Vec<Load>,
}

impl Loaded {
    /// True when `key` was asked for (alone or with every aggregate of its kind and owner).
    pub fn asked(&self, key: &AggregateKey) -> bool {
        self.asked.iter().any(|l| match l {
            Load::Key(k) => k == key,
            Load::All { kind, owner } => *kind == key.kind && *owner == key.owner,
        })
    }

    /// The version loaded for `key`, if it exists.
    pub fn version(&self, key: &AggregateKey) -> Option<u64> {
        self.items.iter().find(|a| &a.body.key() == key).map(|a| a.version)
    }

    /// True when `key` was loaded (found or not is [`Loaded::version`]'s business).
    pub fn get(&self, key: &AggregateKey) -> Option<&AggregateBody> {
        self.items.iter().find(|a| &a.body.key() == key).map(|a| &a.body)
    }

    /// The CRM sync state of an engagement.
    pub fn crm_sync(&self, engagement_id: &str) -> Option<&CrmSyncState> {
        self.items.iter().find_map(|a| match &a.body {
            AggregateBody::CrmSync(s) if s.engagement_id == engagement_id => Some(s),
            _ => None,
        })
    }

    /// The assignments of an engagement.
    pub fn assignments(&self, engagement_id: &str) -> Option<&Assignments> {
        self.items.iter().find_map(|a| match &a.body {
            AggregateBody::Assignments(s) if s.engagement_id == engagement_id => Some(s),
            _ => None,
        })
    }

    /// The ledger of an engagement.
    pub fn ledger(&self, engagement_id: &str) -> Option<&Ledger> {
        self.items.iter().find_map(|a| match &a.body {
            AggregateBody::Ledger(s) if s.engagement_id == engagement_id => Some(s),
            _ => None,
        })
    }

    /// WIP shards, by shard number.
    pub fn wip_shards(&self) -> BTreeMap<u16, &WipShard> {
        self.items
            .iter()
            .filter_map(|a| match &a.body {
                AggregateBody::WipShard(s) => Some((s.shard, s)),
                _ => None,
            })
            .collect()
    }

    /// An invoice.
    pub fn invoice(&self, invoice_id: &str) -> Option<&InvoiceDoc> {
        self.items.iter().find_map(|a| match &a.body {
            AggregateBody::Invoice(i) if i.invoice_id == invoice_id => Some(i),
            _ => None,
        })
    }

    /// Every invoice loaded.
    pub fn invoices(&self) -> Vec<&InvoiceDoc> {
        self.items
            .iter()
            .filter_map(|a| match &a.body {
                AggregateBody::Invoice(i) => Some(i),
                _ => None,
            })
            .collect()
    }

    /// A resource day.
    pub fn resource_day(&self, resource_id: &str, date: chrono::NaiveDate) -> Option<&ResourceDay> {
        self.items.iter().find_map(|a| match &a.body {
            AggregateBody::ResourceDay(d) if d.resource_id == resource_id && d.date == date => Some(d),
            _ => None,
        })
    }

    /// A customer's receivables at a legal entity.
    pub fn receivables(&self, legal_entity_id: &str, customer_id: &str) -> Option<&Receivables> {
        self.items.iter().find_map(|a| match &a.body {
            AggregateBody::Receivables(r) if r.legal_entity_id == legal_entity_id && r.customer_id == customer_id => Some(r),
            _ => None,
        })
    }

    /// Every receivables loaded.
    pub fn all_receivables(&self) -> Vec<&Receivables> {
        self.items
            .iter()
            .filter_map(|a| match &a.body {
                AggregateBody::Receivables(r) => Some(r),
                _ => None,
            })
            .collect()
    }

    /// An invoice reference.
    pub fn invoice_ref(&self, legal_entity_id: &str, number: &str) -> Option<&InvoiceRef> {
        self.items.iter().find_map(|a| match &a.body {
            AggregateBody::InvoiceRef(r) if r.legal_entity_id == legal_entity_id && r.number == number => Some(r),
            _ => None,
        })
    }

    /// An engagement's revenue ledger.
    pub fn revenue_ledger(&self, engagement_id: &str) -> Option<&crate::revenue::RevenueLedger> {
        self.items.iter().find_map(|a| match &a.body {
            AggregateBody::RevenueLedger(r) if r.engagement_id == engagement_id => Some(r),
            _ => None,
        })
    }

    /// A payment reference.
    pub fn payment_ref(&self, legal_entity_id: &str, payment_id: &str) -> Option<&PaymentRef> {
        self.items.iter().find_map(|a| match &a.body {
            AggregateBody::PaymentRef(r) if r.legal_entity_id == legal_entity_id && r.payment_id == payment_id => Some(r),
            _ => None,
        })
    }

    /// An engagement's latest reconciliation.
    pub fn reconciliation(&self, engagement_id: &str) -> Option<&crate::reconciliation::ReconciliationReport> {
        self.items.iter().find_map(|a| match &a.body {
            AggregateBody::Reconciliation(r) if r.engagement_id == engagement_id => Some(r),
            _ => None,
        })
    }

    /// An exception case.
    pub fn exception_case(&self, exception_id: &str) -> Option<&crate::exception_case::ExceptionCase> {
        self.items.iter().find_map(|a| match &a.body {
            AggregateBody::ExceptionCase(c) if c.exception_id == exception_id => Some(c),
            _ => None,
        })
    }

    /// A legal entity's invoice counter.
    pub fn invoice_counter(&self, legal_entity_id: &str) -> Option<&InvoiceCounter> {
        self.items.iter().find_map(|a| match &a.body {
            AggregateBody::InvoiceCounter(c) if c.legal_entity_id == legal_entity_id => Some(c),
            _ => None,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn when_keys_are_mapped_should_follow_the_documented_layout() {
        let k = AggregateKey::wip_shard("ENG-1", 7);
        assert_eq!((k.partition_key(), k.sort_key()), ("ENG#ENG-1".to_owned(), "WIP#07".to_owned()));
        let d = AggregateKey::resource_day("EMP-1", chrono::NaiveDate::from_ymd_opt(2027, 1, 5).unwrap_or_default());
        assert_eq!((d.partition_key(), d.sort_key()), ("RES#EMP-1".to_owned(), "DAY#2027-01-05".to_owned()));
        let c = AggregateKey::invoice_counter("LE-DE-01");
        assert_eq!((c.partition_key(), c.sort_key()), ("LE#LE-DE-01".to_owned(), "INVOICE_COUNTER".to_owned()));
        assert_eq!(AggregateKey::crm_sync("ENG-1").sort_key(), "CRM");
    }

    #[test]
    fn when_an_aggregate_is_read_in_either_member_order_should_be_the_same_body() {
        let body = AggregateBody::InvoiceCounter(crate::invoicing::InvoiceCounter { legal_entity_id: "LE-DE-01".into(), last: 41 });
        let written = serde_json::to_string(&body).unwrap();
        assert_eq!(written, r#"{"kind":"invoice_counter","state":{"legal_entity_id":"LE-DE-01","last":41}}"#);
        for text in [
            written.as_str(),
            r#"{"state":{"legal_entity_id":"LE-DE-01","last":41},"kind":"invoice_counter"}"#,
            r#"{"note":[1,2],"kind":"invoice_counter","state":{"legal_entity_id":"LE-DE-01","last":41},"after":null}"#,
        ] {
            assert_eq!(serde_json::from_str::<AggregateBody>(text).unwrap(), body, "{text}");
            let value: serde_json::Value = serde_json::from_str(text).unwrap();
            assert_eq!(AggregateBody::deserialize(&value).unwrap(), body, "{text} from a Value");
        }
        for (text, error) in [
            (r#"{"kind":"invoice_tally","state":{}}"#, "unknown variant `invoice_tally`"),
            (r#"{"kind":"invoice_counter"}"#, "missing field `state`"),
            (r#"{"state":{"legal_entity_id":"LE-DE-01","last":41}}"#, "missing field `kind`"),
            (r#"{"kind":"invoice_counter","kind":"ledger","state":{}}"#, "duplicate field `kind`"),
            (r#"{"kind":"invoice_counter","state":{"legal_entity_id":"LE-DE-01"}}"#, "missing field `last`"),
            (r#"{"state":{"legal_entity_id":"LE-DE-01"},"kind":"invoice_counter"}"#, "missing field `last`"),
        ] {
            let e = serde_json::from_str::<AggregateBody>(text).unwrap_err().to_string();
            assert!(e.contains(error), "{text}: {e}");
        }
    }

    #[test]
    fn when_kinds_are_named_should_every_name_be_the_serde_name_and_read_back_to_its_kind() {
        let unique: std::collections::BTreeSet<AggregateKind> = AggregateKind::ALL.into_iter().collect();
        assert_eq!(unique.len(), AggregateKind::ALL.len(), "a kind listed twice");
        for (kind, name) in AggregateKind::ALL.into_iter().zip(AggregateKind::NAMES) {
            assert_eq!(serde_json::to_value(kind).unwrap(), serde_json::Value::from(*name));
            assert_eq!(AggregateKind::from_name(name), Some(kind));
        }
        assert_eq!(AggregateKind::from_name("invoice_tally"), None);
        let e = serde_json::from_str::<AggregateBody>(r#"{"kind":"invoice_tally","state":{}}"#).unwrap_err().to_string();
        assert!(e.contains("expected one of `crm_sync`") && e.contains("`reconciliation`"), "{e}");
    }
}
