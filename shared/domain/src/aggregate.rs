//! Aggregates besides the engagement: each is its own stored item with its own key,
//! version and size budget, so steps that touch different aggregates of one engagement do
//! not contend on one item, and state that grows (ledgers, invoices) does not swell the
//! engagement. A step commits every aggregate it changed in one atomic write with its
//! audit entry and idempotency record.
//!
//! | kind | key | written by | budget |
//! |---|---|---|---|
//! | engagement | `ENG#<engagement id>` / `STATE` | intake, provisioning, billing setup, dead letters | 350 KB |
//! | CRM sync state | `ENG#<engagement id>` / `CRM` | CRM write-back | 16 KB |

use crate::ids::EngagementId;
use serde::{Deserialize, Serialize};

use crate::engagement::CrmSync;

/// What kind of aggregate an item is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AggregateKind {
    /// What the CRM opportunity was last sent.
    CrmSync,
}

impl AggregateKind {
    /// Wire / storage name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::CrmSync => "crm_sync",
        }
    }

    /// The sort key of the item under its engagement's partition (DynamoDB).
    pub fn sort_key(self) -> &'static str {
        match self {
            Self::CrmSync => "CRM",
        }
    }

    /// Largest serialised size the store accepts (bytes), under DynamoDB's 400 KB item limit.
    pub fn budget_bytes(self) -> usize {
        match self {
            Self::CrmSync => 16 * 1024,
        }
    }
}

/// The identity of a stored aggregate.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct AggregateKey {
    /// Kind.
    pub kind: AggregateKind,
    /// Id (the engagement id for per-engagement aggregates).
    pub id: String,
}

impl AggregateKey {
    /// The CRM sync state of an engagement.
    pub fn crm_sync(engagement_id: &str) -> Self {
        Self { kind: AggregateKind::CrmSync, id: engagement_id.to_owned() }
    }
}

/// What the CRM opportunity of an engagement was last sent, and how it answered.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CrmSyncState {
    /// Engagement.
    pub engagement_id: EngagementId,
    /// The last write (or attempt).
    pub last: CrmSync,
}

/// An aggregate's state, typed.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", content = "state", rename_all = "snake_case")]
pub enum AggregateBody {
    /// CRM sync state.
    CrmSync(CrmSyncState),
}

impl AggregateBody {
    /// Its key.
    pub fn key(&self) -> AggregateKey {
        match self {
            Self::CrmSync(s) => AggregateKey::crm_sync(&s.engagement_id),
        }
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
}

impl Loaded {
    /// The version loaded for `key`, if it exists.
    pub fn version(&self, key: &AggregateKey) -> Option<u64> {
        self.items.iter().find(|a| &a.body.key() == key).map(|a| a.version)
    }

    /// The CRM sync state of an engagement.
    pub fn crm_sync(&self, engagement_id: &str) -> Option<&CrmSyncState> {
        self.items.iter().find_map(|a| match &a.body {
            AggregateBody::CrmSync(s) if s.engagement_id == engagement_id => Some(s),
            _ => None,
        })
    }
}
