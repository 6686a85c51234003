//! The in-memory store: the state, idempotency and rejection ports over maps under one
//! lock, with the same atomicity and conditions as the SQLite and DynamoDB adapters (the
//! conformance suite runs on all three). For tests that need a store without a file, and
//! for simulation; it can be told to fail the next commits, like a store under load.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use o2c_domain::aggregate::{AggregateBody, AggregateKey, AggregateKind, Loaded, LoadedAggregate};
use o2c_domain::engagement::{AuditEntry, Engagement};
use o2c_domain::ids::EngagementId;

use crate::error::O2cError;
use crate::idempotency::{IdempotencyRecord, IdempotencyStatus, KeyState, classify};
use o2c_domain::exception_case::ExceptionCase;

use crate::ports::{
    CaseFilter, Commit, CommitOutcome, CompletionMode, DeliveryFailure, EngagementFilter, EngagementStore, EngagementSummary,
    IdempotencyStore, KeyWrite, MAX_TRACKED_MESSAGE_IDS, RejectedMessage, RejectionStore, Reservation, ReserveOutcome, Versioned,
    queue_order,
};

#[derive(Default)]
struct Maps {
    engagements: HashMap<EngagementId, (u64, Engagement)>,
    aggregates: HashMap<AggregateKey, (u64, AggregateBody)>,
    audit: Vec<AuditEntry>,
    idempotency: HashMap<String, IdempotencyRecord>,
    rejections: Vec<RejectedMessage>,
    failures: HashMap<String, DeliveryFailure>,
}

/// The in-memory store (cheap to clone; clones share the maps).
#[derive(Clone, Default)]
pub struct MemoryStore {
    maps: Arc<Mutex<Maps>>,
    fail_commits: Arc<AtomicU32>,
}

impl MemoryStore {
    /// An empty store.
    pub fn new() -> Self {
        Self::default()
    }

    /// The next `n` commits fail with a transient error (nothing written).
    pub fn fail_next_commits(&self, n: u32) {
        self.fail_commits.store(n, Ordering::SeqCst);
    }

    fn maps(&self) -> Result<MutexGuard<'_, Maps>, O2cError> {
        self.maps.lock().map_err(|_| O2cError::Bug("memory store lock poisoned".into()))
    }
}

impl EngagementStore for MemoryStore {
    async fn load(&self, engagement_id: &str) -> Result<Option<Versioned<Engagement>>, O2cError> {
        Ok(self.maps()?.engagements.get(engagement_id).map(|(v, e)| Versioned { value: e.clone(), version: *v }))
    }

    async fn load_aggregates(&self, keys: &[AggregateKey]) -> Result<Loaded, O2cError> {
        let maps = self.maps()?;
        let items =
            keys.iter().filter_map(|k| maps.aggregates.get(k).map(|(v, b)| LoadedAggregate { body: b.clone(), version: *v })).collect();
        Ok(Loaded { items, asked: Vec::new() })
    }

    async fn load_all(&self, kind: AggregateKind, owner: &str) -> Result<Loaded, O2cError> {
        let maps = self.maps()?;
        let mut items: Vec<LoadedAggregate> = maps
            .aggregates
            .iter()
            .filter(|(k, _)| k.kind == kind && k.owner == owner)
            .map(|(_, (v, b))| LoadedAggregate { body: b.clone(), version: *v })
            .collect();
        items.sort_by_key(|a| a.body.key());
        Ok(Loaded { items, asked: Vec::new() })
    }

    async fn exception_cases(&self, f: &CaseFilter) -> Result<Vec<ExceptionCase>, O2cError> {
        let maps = self.maps()?;
        let mut cases: Vec<ExceptionCase> = maps
            .aggregates
            .values()
            .filter_map(|(_, b)| match b {
                AggregateBody::ExceptionCase(c) if f.wants(c) => Some(c.clone()),
                _ => None,
            })
            .collect();
        queue_order(&mut cases);
        cases.truncate(f.limit());
        Ok(cases)
    }

    async fn commit(&self, c: Commit) -> Result<CommitOutcome, O2cError> {
        crate::ports::each_written_once(&c.others)?;
        if self.fail_commits.fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1)).is_ok() {
            return Err(O2cError::dependency("memory-store", "commit refused (injected fault)"));
        }
        let mut maps = self.maps()?;
        match &c.key {
            KeyWrite::Complete(comp) => {
                let rec = maps.idempotency.get(&comp.key);
                match (comp.mode, rec) {
                    (CompletionMode::Fresh, Some(r)) if r.is_live(comp.now) => return Ok(CommitOutcome::AlreadyCompleted(r.clone())),
                    (CompletionMode::Reserved, Some(r)) if r.status == IdempotencyStatus::Completed && r.is_live(comp.now) => {
                        return Ok(CommitOutcome::AlreadyCompleted(r.clone()));
                    }
                    (CompletionMode::Reserved, Some(r)) if r.payload_hash != comp.payload_hash => {
                        return Ok(CommitOutcome::ReservationLost);
                    }
                    (CompletionMode::Reserved, None) => return Ok(CommitOutcome::ReservationLost),
                    _ => {}
                }
            }
            KeyWrite::Hold { key, payload_hash } => match maps.idempotency.get(key) {
                Some(r) if r.status == IdempotencyStatus::InProgress && &r.payload_hash == payload_hash => {}
                _ => return Ok(CommitOutcome::ReservationLost),
            },
            KeyWrite::Untracked => {}
        }
        if let Some(w) = &c.state
            && !w.expected.admits(maps.engagements.get(w.engagement.engagement_id.as_str()).map(|(v, _)| *v))
        {
            return Ok(CommitOutcome::VersionConflict);
        }
        for w in &c.others {
            if !w.expected.admits(maps.aggregates.get(&w.body.key()).map(|(v, _)| *v)) {
                return Ok(CommitOutcome::VersionConflict);
            }
        }
        let version = c.state.as_ref().map(|w| w.expected.next());
        if let Some(w) = c.state {
            maps.engagements.insert(w.engagement.engagement_id.clone(), (w.expected.next(), w.engagement));
        }
        for w in c.others {
            maps.aggregates.insert(w.body.key(), (w.expected.next(), w.body));
        }
        if let Some(a) = c.audit {
            maps.audit.push(a);
        }
        if let KeyWrite::Complete(comp) = c.key {
            maps.idempotency.insert(
                comp.key.clone(),
                IdempotencyRecord {
                    key: comp.key,
                    status: IdempotencyStatus::Completed,
                    payload_hash: comp.payload_hash,
                    expires_at: comp.expires_at,
                    in_progress_until: None,
                    result: Some(comp.result),
                },
            );
        }
        Ok(CommitOutcome::Committed { version })
    }

    async fn audit_trail(&self, engagement_id: &str) -> Result<Vec<AuditEntry>, O2cError> {
        Ok(self.maps()?.audit.iter().filter(|a| a.engagement_id == engagement_id).cloned().collect())
    }

    async fn list(&self, f: &EngagementFilter) -> Result<Vec<EngagementSummary>, O2cError> {
        let maps = self.maps()?;
        let mut rows: Vec<EngagementSummary> = maps
            .engagements
            .values()
            .filter(|(_, e)| f.status.as_deref().is_none_or(|s| s == e.status.as_str()))
            .filter(|(_, e)| !f.open_exceptions || e.has_open_exception())
            .filter(|(_, e)| f.after.as_deref().is_none_or(|a| e.engagement_id.as_str() > a))
            .map(|(v, e)| EngagementSummary {
                engagement_id: e.engagement_id.to_string(),
                status: e.status.as_str().to_owned(),
                open_exception: e.has_open_exception(),
                updated_at: e.updated_at,
                version: *v,
            })
            .collect();
        if f.after.is_some() {
            rows.sort_by(|a, b| a.engagement_id.cmp(&b.engagement_id));
        } else {
            rows.sort_by(|a, b| b.updated_at.cmp(&a.updated_at).then_with(|| a.engagement_id.cmp(&b.engagement_id)));
        }
        rows.truncate(if f.limit == 0 { 100 } else { f.limit });
        Ok(rows)
    }
}

impl IdempotencyStore for MemoryStore {
    async fn get(&self, key: &str) -> Result<Option<IdempotencyRecord>, O2cError> {
        Ok(self.maps()?.idempotency.get(key).cloned())
    }

    async fn reserve(&self, r: Reservation) -> Result<ReserveOutcome, O2cError> {
        crate::ports::each_written_once(&r.others)?;
        let mut maps = self.maps()?;
        match classify(maps.idempotency.get(&r.key), &r.payload_hash, r.now) {
            KeyState::Free => {}
            KeyState::Completed(rec) => return Ok(ReserveOutcome::AlreadyCompleted(rec)),
            KeyState::InProgress { until } => return Ok(ReserveOutcome::InProgress { until }),
            KeyState::Mismatch { stored } => return Ok(ReserveOutcome::PayloadMismatch { stored }),
        }
        if r.others.iter().any(|w| !w.expected.admits(maps.aggregates.get(&w.body.key()).map(|(v, _)| *v))) {
            return Ok(ReserveOutcome::StateConflict);
        }
        if let Some(w) = &r.claim
            && !w.expected.admits(maps.engagements.get(w.engagement.engagement_id.as_str()).map(|(v, _)| *v))
        {
            return Ok(ReserveOutcome::StateConflict);
        }
        for w in r.others {
            maps.aggregates.insert(w.body.key(), (w.expected.next(), w.body));
        }
        let claimed_version = match r.claim {
            None => None,
            Some(w) => {
                let v = w.expected.next();
                maps.engagements.insert(w.engagement.engagement_id.clone(), (v, w.engagement));
                Some(v)
            }
        };
        maps.idempotency.insert(
            r.key.clone(),
            IdempotencyRecord {
                key: r.key,
                status: IdempotencyStatus::InProgress,
                payload_hash: r.payload_hash,
                expires_at: r.expires_at,
                in_progress_until: Some(r.in_progress_until),
                result: None,
            },
        );
        Ok(ReserveOutcome::Reserved { claimed_version })
    }

    async fn release(&self, key: &str) -> Result<(), O2cError> {
        let mut maps = self.maps()?;
        if maps.idempotency.get(key).is_some_and(|r| r.status == IdempotencyStatus::InProgress) {
            maps.idempotency.remove(key);
        }
        Ok(())
    }
}

impl RejectionStore for MemoryStore {
    async fn park(&self, m: &RejectedMessage) -> Result<(), O2cError> {
        let mut maps = self.maps()?;
        match maps.rejections.iter_mut().find(|r| r.rejection_id == m.rejection_id) {
            None => maps.rejections.push(m.clone()),
            Some(old) => {
                let new_ids: Vec<String> = m.message_ids.iter().filter(|id| !old.message_ids.contains(id)).cloned().collect();
                if new_ids.is_empty() {
                    return Ok(());
                }
                old.deliveries += new_ids.len() as u32;
                old.message_ids.extend(new_ids);
                old.message_ids.truncate(MAX_TRACKED_MESSAGE_IDS);
                old.last_rejected_at = Some(m.rejected_at);
                old.reasons = m.reasons.clone();
                old.error_type = m.error_type.clone();
            }
        }
        Ok(())
    }

    async fn rejections(&self, limit: usize) -> Result<Vec<RejectedMessage>, O2cError> {
        let mut rows = self.maps()?.rejections.clone();
        rows.reverse();
        rows.sort_by_key(|r| std::cmp::Reverse(r.last_rejected_at.unwrap_or(r.rejected_at)));
        rows.truncate(limit);
        Ok(rows)
    }

    async fn record_failure(&self, f: &DeliveryFailure) -> Result<(), O2cError> {
        self.maps()?.failures.insert(f.message_id.clone(), f.clone());
        Ok(())
    }

    async fn failure(&self, message_id: &str) -> Result<Option<DeliveryFailure>, O2cError> {
        Ok(self.maps()?.failures.get(message_id).cloned())
    }
}

/// A publisher that keeps what it was given (in order), for tests and simulation.
#[derive(Clone, Default)]
pub struct RecordingPublisher {
    events: Arc<Mutex<Vec<o2c_domain::events::OutgoingEvent>>>,
    fail: Arc<AtomicU32>,
}

impl RecordingPublisher {
    /// Everything published so far.
    pub fn published(&self) -> Vec<o2c_domain::events::OutgoingEvent> {
        self.events.lock().map(|e| e.clone()).unwrap_or_default()
    }

    /// The next `n` publishes fail with a transient error (nothing published).
    pub fn fail_next_publishes(&self, n: u32) {
        self.fail.store(n, Ordering::SeqCst);
    }
}

impl crate::ports::EventPublisher for RecordingPublisher {
    async fn publish(&self, events: &[o2c_domain::events::OutgoingEvent]) -> Result<(), O2cError> {
        if self.fail.fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1)).is_ok() {
            return Err(O2cError::dependency("eventbridge", "injected publish failure"));
        }
        self.events.lock().map_err(|_| O2cError::Bug("publisher lock poisoned".into()))?.extend_from_slice(events);
        Ok(())
    }
}

/// The in-memory platform: [`MemoryStore`], a [`RecordingPublisher`], fixed reference data,
/// the wall clock, and whichever connectors the caller brings.
pub type MemoryPlatform<C, P, E, T> =
    crate::ports::Adapters<MemoryStore, RecordingPublisher, crate::ports::StaticReferenceData, C, P, E, T>;

/// A [`MemoryPlatform`] over `reference`.
pub fn platform<C, P, E, T>(reference: o2c_domain::reference::ReferenceData, crm: C, psa: P, erp: E, tax: T) -> MemoryPlatform<C, P, E, T> {
    crate::ports::Adapters {
        store: MemoryStore::new(),
        publisher: RecordingPublisher::default(),
        reference: crate::ports::StaticReferenceData(Arc::new(reference)),
        crm,
        psa,
        erp,
        tax,
        clock: Arc::new(crate::ports::SystemClock),
        metrics: Arc::new(crate::metrics::RecordingMetrics::default()),
    }
}
