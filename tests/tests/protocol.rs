//! The step protocol around failures of the store itself and races with concurrent
//! writers: the in-memory platform (its store can refuse commits) with the simulators as
//! connectors, one of them racing the step.
#![allow(missing_docs, clippy::unwrap_used, clippy::expect_used)]

use std::sync::atomic::Ordering;

use o2c_app::memory::{MemoryPlatform, MemoryStore};
use o2c_app::ports::{
    Commit, CommitOutcome, ConnectorError, EngagementStore, Erp, ExpectedVersion, ExternalObject, KeyWrite, Psa, StateWrite,
};
use o2c_app::{Step, StepService};
use o2c_domain::engagement::EngagementStatus;
use o2c_domain::model::{BillingSchedule, ProjectSpec};
use o2c_embedded::db::Db;
use o2c_embedded::sim::{Simulators, System};
use o2c_tests::{closed_won, contract_approved, globex_payload};

/// The simulators, plus a concurrent writer: while armed, every PSA cancel and ERP
/// project creation first bumps the engagement's version (what a CRM write-back committing
/// at that moment does), so the step's next commit loses the version race — deterministically.
struct Racing {
    sims: Simulators,
    store: MemoryStore,
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
            others: vec![],
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

type TestPlatform = MemoryPlatform<Simulators, Racing, Racing>;

fn decode((_, dt, detail): (&str, &str, serde_json::Value)) -> o2c_domain::events::BusinessEvent {
    o2c_app::contracts::decode(dt, &detail).unwrap()
}

fn service(dir: &tempfile::TempDir) -> StepService<TestPlatform> {
    let sims = Simulators::new(Db::open(&dir.path().join("sims.db")).unwrap(), &o2c_embedded::reference::northwind().unwrap());
    let store = MemoryStore::new();
    let racing =
        || Racing { sims: sims.clone(), store: store.clone(), engagement_id: std::sync::Mutex::new(None), bumps: Default::default() };
    let (psa, erp) = (racing(), racing());
    let mut platform = o2c_app::memory::platform(o2c_embedded::reference::northwind().unwrap(), sims.clone(), psa, erp);
    platform.store = store;
    StepService::new(platform, o2c_tests::fast_service())
}

/// A contract for `opp` waiting for approval, and an ERP that refuses the next project.
async fn contract_the_erp_will_refuse_once(opp: &str) -> (tempfile::TempDir, StepService<TestPlatform>, chrono::DateTime<chrono::Utc>) {
    let dir = tempfile::tempdir().unwrap();
    let svc = service(&dir);
    let deadline = chrono::Utc::now() + chrono::Duration::minutes(15);
    svc.handle(Step::Intake, &decode(closed_won(globex_payload(opp, 1))), &o2c_app::Delivery::once(deadline)).await.unwrap();
    let fault = o2c_embedded::sim::Fault::Rejected { status: 400, code: "INVALID_KEY_OR_REF".into(), message: "PM".into() };
    svc.platform().crm.inject(System::Erp, "create_project", fault, Some(1)).await.unwrap();
    (dir, svc, deadline)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn when_commits_lose_version_races_around_a_refusal_should_finalize_the_same_results_without_repeating_side_effects() {
    let (dir, svc, deadline) = contract_the_erp_will_refuse_once("0068d00000RACE01").await;
    let (_dir, opp, eng) = (dir, "0068d00000RACE01", "ENG-0068d00000RACE01".to_owned());
    let sims = &svc.platform().crm;
    // A write lands on the engagement during the ERP call (so the failure checkpoint loses
    // its race) and during the compensation (so the final commit loses its race).
    *svc.platform().psa.engagement_id.lock().unwrap() = Some(eng.clone());
    *svc.platform().erp.engagement_id.lock().unwrap() = Some(eng.clone());
    let handled = svc.handle(Step::Provision, &decode(contract_approved(opp)), &o2c_app::Delivery::once(deadline)).await.unwrap();
    assert_eq!(handled.action, "compensated");
    let bumps = svc.platform().psa.bumps.load(Ordering::SeqCst) + svc.platform().erp.bumps.load(Ordering::SeqCst);
    assert_eq!(bumps, 2, "both commits met a concurrent write");

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
    let (dir, svc, deadline) = contract_the_erp_will_refuse_once("0068d00000CRSH01").await;
    let (_dir, opp, eng) = (dir, "0068d00000CRSH01", "ENG-0068d00000CRSH01".to_owned());
    let sims = &svc.platform().crm;
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
    svc.platform().store.fail_next_commits(1);
    let err = svc.handle(Step::Provision, &approval, &o2c_app::Delivery::once(deadline)).await.unwrap_err();
    assert!(err.is_retryable(), "{err}");
    let eng = format!("ENG-{opp}");
    assert_eq!(svc.platform().store.load(&eng).await.unwrap().unwrap().value.status, EngagementStatus::Provisioning, "the claim stays");

    let retry = svc.handle(Step::Provision, &approval, &o2c_app::Delivery::once(deadline)).await.unwrap();
    assert_eq!(retry.action, "provisioned");
    let psa = svc.platform().crm.projects(System::Psa).await.unwrap();
    let erp = svc.platform().crm.projects(System::Erp).await.unwrap();
    assert_eq!((psa.len(), erp.len()), (1, 1), "the side effects of the failed attempt are reused, not repeated");
    let again = svc.handle(Step::Provision, &approval, &o2c_app::Delivery::once(deadline)).await.unwrap();
    assert!(again.duplicate);
}
