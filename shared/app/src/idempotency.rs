//! The one idempotency core (Powertools' base persistence layer): record statuses and
//! their stored names, and how a stored record answers an event — live or expired, in
//! progress or completed, same payload or a conflict. Adapters only store records; the
//! SQLite adapter classifies with [`IdempotencyRecord::classify`] inside its transaction,
//! the DynamoDB adapter lets a condition expression (`KEY_IS_FREE`) do the same test on
//! the server and classifies the item it gets back on failure.
//!
//! Payload hashing is `o2c_domain::events::payload_hash` (SHA-256 of the detail-type and the
//! canonical payload), re-exported here.

use chrono::{DateTime, Utc};
pub use o2c_domain::events::payload_hash;
use serde::{Deserialize, Serialize};

use crate::ports::StoredResult;

/// Idempotency record status.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum IdempotencyStatus {
    /// A handler reserved the key and is working on it.
    #[serde(rename = "INPROGRESS")]
    InProgress,
    /// Done; `result` is stored.
    #[serde(rename = "COMPLETED")]
    Completed,
}

impl IdempotencyStatus {
    /// The stored name (Powertools': `INPROGRESS`, `COMPLETED`), the same in every store.
    pub fn as_str(self) -> &'static str {
        self.as_str_const()
    }

    /// [`as_str`](Self::as_str) usable in constants.
    pub const fn as_str_const(self) -> &'static str {
        match self {
            Self::InProgress => "INPROGRESS",
            Self::Completed => "COMPLETED",
        }
    }

    /// Parses a stored name.
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "INPROGRESS" => Some(Self::InProgress),
            "COMPLETED" => Some(Self::Completed),
            _ => None,
        }
    }
}

/// An idempotency record (Powertools-compatible semantics).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct IdempotencyRecord {
    /// `<step>#<event idempotency key>`.
    pub key: String,
    /// Status.
    pub status: IdempotencyStatus,
    /// SHA-256 of the payload; a different payload under the same key is a conflict.
    pub payload_hash: String,
    /// The record is ignored (and may be overwritten) after this instant; DynamoDB TTL deletes it.
    pub expires_at: DateTime<Utc>,
    /// An `InProgress` record older than this belongs to a dead invocation and may be taken over.
    pub in_progress_until: Option<DateTime<Utc>>,
    /// Stored result of a completed step.
    pub result: Option<StoredResult>,
}

/// How a key answers an event (payload `hash`) at `now`.
#[derive(Debug, Clone, PartialEq)]
pub enum KeyState {
    /// No live record: the key may be taken.
    Free,
    /// Completed with this payload: a duplicate (answer from the record).
    Completed(IdempotencyRecord),
    /// Another invocation holds it until `until`.
    InProgress {
        /// The holder's deadline.
        until: Option<DateTime<Utc>>,
    },
    /// The key was used for a different payload: a permanent conflict.
    Mismatch {
        /// The stored hash.
        stored: String,
    },
}

impl IdempotencyRecord {
    /// True when the record still counts at `now`: not expired, and (in progress) its
    /// holder's deadline not passed.
    pub fn is_live(&self, now: DateTime<Utc>) -> bool {
        if self.expires_at <= now {
            return false;
        }
        match self.status {
            IdempotencyStatus::Completed => true,
            IdempotencyStatus::InProgress => self.in_progress_until.is_some_and(|t| t > now),
        }
    }

    /// How this record answers an event with `hash` at `now`.
    pub fn classify(&self, hash: &str, now: DateTime<Utc>) -> KeyState {
        if !self.is_live(now) {
            return KeyState::Free;
        }
        if self.payload_hash != hash {
            return KeyState::Mismatch { stored: self.payload_hash.clone() };
        }
        match self.status {
            IdempotencyStatus::Completed => KeyState::Completed(self.clone()),
            IdempotencyStatus::InProgress => KeyState::InProgress { until: self.in_progress_until },
        }
    }
}

/// How an optional record answers (absent = free).
pub fn classify(record: Option<&IdempotencyRecord>, hash: &str, now: DateTime<Utc>) -> KeyState {
    record.map_or(KeyState::Free, |r| r.classify(hash, now))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rec(status: IdempotencyStatus, expires_in: i64, in_progress_for: Option<i64>) -> IdempotencyRecord {
        let now = DateTime::from_timestamp(1_800_000_000, 0).unwrap_or_default();
        IdempotencyRecord {
            key: "k".into(),
            status,
            payload_hash: "h".into(),
            expires_at: now + chrono::Duration::seconds(expires_in),
            in_progress_until: in_progress_for.map(|s| now + chrono::Duration::seconds(s)),
            result: None,
        }
    }

    #[test]
    fn when_classifying_should_cover_every_state() {
        let now = DateTime::from_timestamp(1_800_000_000, 0).unwrap_or_default();
        assert_eq!(classify(None, "h", now), KeyState::Free);
        assert!(matches!(rec(IdempotencyStatus::Completed, 60, None).classify("h", now), KeyState::Completed(_)));
        assert_eq!(rec(IdempotencyStatus::Completed, -1, None).classify("h", now), KeyState::Free, "expired");
        assert!(matches!(rec(IdempotencyStatus::InProgress, 60, Some(10)).classify("h", now), KeyState::InProgress { .. }));
        assert_eq!(rec(IdempotencyStatus::InProgress, 60, Some(-1)).classify("h", now), KeyState::Free, "holder dead");
        assert_eq!(rec(IdempotencyStatus::Completed, 60, None).classify("other", now), KeyState::Mismatch { stored: "h".into() });
        assert_eq!(IdempotencyStatus::parse(IdempotencyStatus::InProgress.as_str()), Some(IdempotencyStatus::InProgress));
        assert_eq!(serde_json::to_string(&IdempotencyStatus::InProgress).unwrap_or_default(), "\"INPROGRESS\"");
    }
}
