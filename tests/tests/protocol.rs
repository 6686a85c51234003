//! The step protocol around failures of the store itself: the SQLite adapters and the
//! simulators, with a store wrapper that fails chosen calls once.
#![allow(missing_docs, clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use o2c_app::ports::{
    Clock, Commit, CommitOutcome, DeliveryFailure, EngagementFilter, EngagementStore, EngagementSummary, IdempotencyRecord,
    IdempotencyStore, Platform, RejectedMessage, RejectionStore, Reservation, ReserveOutcome, StaticReferenceData, SystemClock, Versioned,
};
use o2c_app::topology::{TEMPLATE, Topology};
use o2c_app::{O2cError, ServiceConfig, Step, StepService};
use o2c_domain::engagement::{AuditEntry, Engagement, EngagementStatus};
use o2c_embedded::bus::LocalBus;
use o2c_embedded::db::Db;
use o2c_embedded::sim::{Simulators, System};
use o2c_embedded::store::SqliteStore;
use o2c_tests::{closed_won, contract_approved, globex_payload};

/// SQLite store whose next commit fails with a transient error when armed.
struct FlakyStore {
    inner: SqliteStore,
    fail_next_commit: AtomicBool,
}

impl EngagementStore for FlakyStore {
    async fn load(&self, id: &str) -> Result<Option<Versioned<Engagement>>, O2cError> {
        self.inner.load(id).await
    }
    async fn commit(&self, c: Commit) -> Result<CommitOutcome, O2cError> {
        if self.fail_next_commit.swap(false, Ordering::SeqCst) {
            return Err(O2cError::dependency("sqlite", "database is locked"));
        }
        self.inner.commit(c).await
    }
    async fn audit_trail(&self, id: &str) -> Result<Vec<AuditEntry>, O2cError> {
        self.inner.audit_trail(id).await
    }
    async fn list(&self, f: &EngagementFilter) -> Result<Vec<EngagementSummary>, O2cError> {
        self.inner.list(f).await
    }
}

impl IdempotencyStore for FlakyStore {
    async fn get(&self, key: &str) -> Result<Option<IdempotencyRecord>, O2cError> {
        self.inner.get(key).await
    }
    async fn reserve(&self, r: Reservation) -> Result<ReserveOutcome, O2cError> {
        self.inner.reserve(r).await
    }
    async fn release(&self, key: &str) -> Result<(), O2cError> {
        self.inner.release(key).await
    }
}

impl RejectionStore for FlakyStore {
    async fn park(&self, m: &RejectedMessage) -> Result<(), O2cError> {
        self.inner.park(m).await
    }
    async fn rejections(&self, limit: usize) -> Result<Vec<RejectedMessage>, O2cError> {
        self.inner.rejections(limit).await
    }
    async fn record_failure(&self, f: &DeliveryFailure) -> Result<(), O2cError> {
        self.inner.record_failure(f).await
    }
    async fn failure(&self, id: &str) -> Result<Option<DeliveryFailure>, O2cError> {
        self.inner.failure(id).await
    }
}

struct TestPlatform {
    store: FlakyStore,
    bus: Arc<LocalBus>,
    reference: StaticReferenceData,
    sims: Simulators,
}

impl Platform for TestPlatform {
    type Store = FlakyStore;
    type Publisher = Arc<LocalBus>;
    type Reference = StaticReferenceData;
    type Crm = Simulators;
    type Psa = Simulators;
    type Erp = Simulators;
    fn store(&self) -> &FlakyStore {
        &self.store
    }
    fn publisher(&self) -> &Arc<LocalBus> {
        &self.bus
    }
    fn reference(&self) -> &StaticReferenceData {
        &self.reference
    }
    fn crm(&self) -> &Simulators {
        &self.sims
    }
    fn psa(&self) -> &Simulators {
        &self.sims
    }
    fn erp(&self) -> &Simulators {
        &self.sims
    }
    fn clock(&self) -> &dyn Clock {
        &SystemClock
    }
}

fn decode((_, dt, detail): (&str, &str, serde_json::Value)) -> o2c_domain::events::BusinessEvent {
    o2c_app::contracts::decode(dt, &detail).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn when_the_commit_fails_after_the_side_effect_should_release_the_key_so_the_retry_runs_at_once() {
    let dir = tempfile::tempdir().unwrap();
    let db = Db::open(&dir.path().join("p.db")).unwrap();
    let reference = o2c_embedded::reference::northwind().unwrap();
    let topo = Arc::new(Topology::from_sam_yaml(TEMPLATE).unwrap());
    let platform = TestPlatform {
        store: FlakyStore { inner: SqliteStore::new(db.clone()), fail_next_commit: AtomicBool::new(false) },
        bus: Arc::new(LocalBus::new(db.clone(), topo, "o2c-test".into()).unwrap()),
        reference: StaticReferenceData(Arc::new(reference.clone())),
        sims: Simulators::new(db, &reference),
    };
    let svc = StepService::new(platform, ServiceConfig::default());
    // A long deadline: without the release, the retry would be refused as "in progress".
    let deadline = chrono::Utc::now() + chrono::Duration::minutes(15);
    let opp = "0068d00000FLKY01";
    svc.handle(Step::Intake, &decode(closed_won(globex_payload(opp, 1))), deadline).await.unwrap();

    let approval = decode(contract_approved(opp));
    svc.platform().store.fail_next_commit.store(true, Ordering::SeqCst);
    let err = svc.handle(Step::Provision, &approval, deadline).await.unwrap_err();
    assert!(err.is_retryable(), "{err}");
    let eng = format!("ENG-{opp}");
    assert_eq!(svc.platform().store.load(&eng).await.unwrap().unwrap().value.status, EngagementStatus::Provisioning, "the claim stays");

    let retry = svc.handle(Step::Provision, &approval, deadline).await.unwrap();
    assert_eq!(retry.action, "provisioned");
    let psa = svc.platform().sims.projects(System::Psa).await.unwrap();
    let erp = svc.platform().sims.projects(System::Erp).await.unwrap();
    assert_eq!((psa.len(), erp.len()), (1, 1), "the side effects of the failed attempt are reused, not repeated");
    let again = svc.handle(Step::Provision, &approval, deadline).await.unwrap();
    assert!(again.duplicate);
}
