//! The step protocol around failures of the store itself: the SQLite adapters and the
//! simulators, with a store wrapper that fails chosen calls once.
#![allow(missing_docs, clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use o2c_app::ports::{
    Clock, Commit, CommitOutcome, ConnectorError, DeliveryFailure, EngagementFilter, EngagementStore, EngagementSummary, Erp,
    ExpectedVersion, ExternalObject, IdempotencyRecord, IdempotencyStore, KeyWrite, Platform, Psa, RejectedMessage, RejectionStore,
    Reservation, ReserveOutcome, StateWrite, StaticReferenceData, SystemClock, Versioned,
};
use o2c_app::topology::{TEMPLATE, Topology};
use o2c_app::{O2cError, Step, StepService};
use o2c_domain::engagement::{AuditEntry, Engagement, EngagementStatus};
use o2c_domain::model::{BillingSchedule, ProjectSpec};
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

/// The simulators, plus a concurrent writer: while armed, every PSA cancel and ERP
/// project creation first bumps the engagement's version (what a CRM write-back committing
/// at that moment does), so the step's next commit loses the version race — deterministically.
struct Racing {
    sims: Simulators,
    store: SqliteStore,
    engagement_id: std::sync::Mutex<Option<String>>,
    bumps: std::sync::atomic::AtomicU32,
}

impl Racing {
    async fn bump(&self) {
        let Some(id) = self.engagement_id.lock().unwrap().clone() else { return };
        let cur = self.store.load(&id).await.unwrap().unwrap();
        let mut e = cur.value.clone();
        e.updated_at = chrono::Utc::now();
        let commit = Commit {
            state: Some(StateWrite { engagement: e, expected: ExpectedVersion::Is(cur.version) }),
            audit: None,
            key: KeyWrite::Untracked,
        };
        assert!(matches!(self.store.commit(commit).await.unwrap(), CommitOutcome::Committed { .. }));
        self.bumps.fetch_add(1, Ordering::SeqCst);
    }
}

impl Psa for Racing {
    async fn create_or_get_project(&self, spec: &ProjectSpec) -> Result<ExternalObject, ConnectorError> {
        Psa::create_or_get_project(&self.sims, spec).await
    }
    async fn cancel_project(&self, id: &str, reason: &str) -> Result<(), ConnectorError> {
        self.bump().await;
        self.sims.cancel_project(id, reason).await
    }
}

impl Erp for Racing {
    async fn create_or_get_project(&self, spec: &ProjectSpec) -> Result<ExternalObject, ConnectorError> {
        self.bump().await;
        Erp::create_or_get_project(&self.sims, spec).await
    }
    async fn create_or_get_billing_schedule(&self, p: &str, s: &BillingSchedule) -> Result<ExternalObject, ConnectorError> {
        self.sims.create_or_get_billing_schedule(p, s).await
    }
}

struct TestPlatform {
    store: FlakyStore,
    bus: Arc<LocalBus>,
    reference: StaticReferenceData,
    sims: Simulators,
    racing: Racing,
}

impl Platform for TestPlatform {
    type Store = FlakyStore;
    type Publisher = Arc<LocalBus>;
    type Reference = StaticReferenceData;
    type Crm = Simulators;
    type Psa = Racing;
    type Erp = Racing;
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
    fn psa(&self) -> &Racing {
        &self.racing
    }
    fn erp(&self) -> &Racing {
        &self.racing
    }
    fn clock(&self) -> &dyn Clock {
        &SystemClock
    }
}

fn decode((_, dt, detail): (&str, &str, serde_json::Value)) -> o2c_domain::events::BusinessEvent {
    o2c_app::contracts::decode(dt, &detail).unwrap()
}

fn service(dir: &tempfile::TempDir) -> StepService<TestPlatform> {
    let db = Db::open(&dir.path().join("p.db")).unwrap();
    let reference = o2c_embedded::reference::northwind().unwrap();
    let topo = Arc::new(Topology::from_sam_yaml(TEMPLATE).unwrap());
    let sims = Simulators::new(db.clone(), &reference);
    let platform = TestPlatform {
        store: FlakyStore { inner: SqliteStore::new(db.clone()), fail_next_commit: AtomicBool::new(false) },
        bus: Arc::new(LocalBus::new(db.clone(), topo, "o2c-test".into()).unwrap()),
        reference: StaticReferenceData(Arc::new(reference.clone())),
        sims: sims.clone(),
        racing: Racing { sims, store: SqliteStore::new(db), engagement_id: std::sync::Mutex::new(None), bumps: Default::default() },
    };
    StepService::new(platform, o2c_tests::fast_service())
}

async fn refuse_one_erp_project(sims: &Simulators) {
    let fault = o2c_embedded::sim::Fault::Rejected { status: 400, code: "INVALID_KEY_OR_REF".into(), message: "PM".into() };
    sims.inject(System::Erp, "create_project", fault, Some(1)).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn when_commits_lose_version_races_around_a_refusal_should_finalize_the_same_results_without_repeating_side_effects() {
    let dir = tempfile::tempdir().unwrap();
    let svc = service(&dir);
    let deadline = chrono::Utc::now() + chrono::Duration::minutes(15);
    let opp = "0068d00000RACE01";
    let eng = format!("ENG-{opp}");
    svc.handle(Step::Intake, &decode(closed_won(globex_payload(opp, 1))), &o2c_app::Delivery::once(deadline)).await.unwrap();
    let sims = &svc.platform().sims;
    refuse_one_erp_project(sims).await;
    // A write lands on the engagement during the ERP call (so the failure checkpoint loses
    // its race) and during the compensation (so the final commit loses its race).
    *svc.platform().racing.engagement_id.lock().unwrap() = Some(eng.clone());
    let handled = svc.handle(Step::Provision, &decode(contract_approved(opp)), &o2c_app::Delivery::once(deadline)).await.unwrap();
    assert_eq!(handled.action, "compensated");
    assert_eq!(svc.platform().racing.bumps.load(Ordering::SeqCst), 2, "both commits met a concurrent write");

    let calls = sims.calls().await.unwrap();
    let count = |sys: &str, op: &str| calls.iter().filter(|c| c.system == sys && c.operation == op).count();
    assert_eq!(count("erp", "create_project"), 1, "the ERP was asked once: lost races re-finalize, they do not re-execute");
    assert_eq!(count("psa", "create_project"), 1);
    assert_eq!(count("psa", "cancel_project"), 1);
    let e = svc.platform().store.load(&eng).await.unwrap().unwrap().value;
    assert_eq!(e.status, EngagementStatus::ProvisioningFailed);
    assert!(e.compensation_due.is_empty());
    assert_eq!(e.exceptions[0].compensations[0].outcome, "done");
    let psa = sims.projects(System::Psa).await.unwrap();
    assert_eq!(psa[0].status, "cancelled");
    assert!(sims.projects(System::Erp).await.unwrap().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn when_the_process_dies_between_the_failure_checkpoint_and_the_compensation_should_pay_the_debt_on_redelivery() {
    let dir = tempfile::tempdir().unwrap();
    let svc = service(&dir);
    let deadline = chrono::Utc::now() + chrono::Duration::minutes(15);
    let opp = "0068d00000CRSH01";
    let eng = format!("ENG-{opp}");
    svc.handle(Step::Intake, &decode(closed_won(globex_payload(opp, 1))), &o2c_app::Delivery::once(deadline)).await.unwrap();
    let sims = &svc.platform().sims;
    refuse_one_erp_project(sims).await;
    // The PSA is down for longer than the invocation's retry budget: the compensation
    // cannot run now, and the message goes back to its queue.
    sims.inject(System::Psa, "cancel_project", o2c_embedded::sim::Fault::ServerError { status: 503 }, Some(50)).await.unwrap();
    let approval = decode(contract_approved(opp));
    let err = svc.handle(Step::Provision, &approval, &o2c_app::Delivery::once(deadline)).await.unwrap_err();
    assert!(err.is_retryable(), "{err}");
    // The failure and the debt are durable and visible before the compensation ran.
    let e = svc.platform().store.load(&eng).await.unwrap().unwrap().value;
    assert_eq!(e.status, EngagementStatus::ProvisioningFailed);
    assert_eq!(e.compensation_due.len(), 1);
    assert!(e.has_open_exception());
    assert_eq!(e.exceptions[0].compensations[0].outcome, "pending");

    // The PSA comes back; the redelivery pays the debt and announces the exception.
    sims.clear_faults().await.unwrap();
    let handled = svc
        .handle(Step::Provision, &approval, &o2c_app::Delivery { deadline, receive_count: 2, max_receive_count: Some(5) })
        .await
        .unwrap();
    assert_eq!((handled.action.as_str(), handled.published), ("compensated", 1));
    let e = svc.platform().store.load(&eng).await.unwrap().unwrap().value;
    assert!(e.compensation_due.is_empty());
    assert_eq!(e.exceptions[0].compensations[0].outcome, "done");
    assert_eq!(sims.projects(System::Psa).await.unwrap()[0].status, "cancelled");
    let erp_calls = sims.calls().await.unwrap().into_iter().filter(|c| c.system == "erp").count();
    assert_eq!(erp_calls, 1, "the redelivery did not provision again");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn when_the_commit_fails_after_the_side_effect_should_release_the_key_so_the_retry_runs_at_once() {
    let dir = tempfile::tempdir().unwrap();
    let svc = service(&dir);
    // A long deadline: without the release, the retry would be refused as "in progress".
    let deadline = chrono::Utc::now() + chrono::Duration::minutes(15);
    let opp = "0068d00000FLKY01";
    svc.handle(Step::Intake, &decode(closed_won(globex_payload(opp, 1))), &o2c_app::Delivery::once(deadline)).await.unwrap();

    let approval = decode(contract_approved(opp));
    svc.platform().store.fail_next_commit.store(true, Ordering::SeqCst);
    let err = svc.handle(Step::Provision, &approval, &o2c_app::Delivery::once(deadline)).await.unwrap_err();
    assert!(err.is_retryable(), "{err}");
    let eng = format!("ENG-{opp}");
    assert_eq!(svc.platform().store.load(&eng).await.unwrap().unwrap().value.status, EngagementStatus::Provisioning, "the claim stays");

    let retry = svc.handle(Step::Provision, &approval, &o2c_app::Delivery::once(deadline)).await.unwrap();
    assert_eq!(retry.action, "provisioned");
    let psa = svc.platform().sims.projects(System::Psa).await.unwrap();
    let erp = svc.platform().sims.projects(System::Erp).await.unwrap();
    assert_eq!((psa.len(), erp.len()), (1, 1), "the side effects of the failed attempt are reused, not repeated");
    let again = svc.handle(Step::Provision, &approval, &o2c_app::Delivery::once(deadline)).await.unwrap();
    assert!(again.duplicate);
}
