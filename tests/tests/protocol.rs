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
use o2c_domain::engagement::{Action, EngagementStatus};
use o2c_domain::events::{EventType, ExceptionKind};
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
    /// While set, the next ERP project creation signals `entered` and waits for `proceed`:
    /// the test runs something else exactly while the step is inside the call.
    gated: std::sync::atomic::AtomicBool,
    entered: tokio::sync::Notify,
    proceed: tokio::sync::Notify,
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
    async fn get_project(&self, key: &str) -> Result<Option<o2c_domain::reconciliation::ProjectRecord>, ConnectorError> {
        Psa::get_project(&self.sims, key).await
    }
}

impl Erp for Racing {
    async fn create_or_get_project(&self, spec: &ProjectSpec) -> Result<ExternalObject, ConnectorError> {
        if self.gated.swap(false, Ordering::SeqCst) {
            self.entered.notify_one();
            self.proceed.notified().await;
        }
        self.bump().await;
        Erp::create_or_get_project(&self.sims, spec).await
    }
    async fn create_or_get_billing_schedule(&self, p: &str, s: &BillingSchedule) -> Result<ExternalObject, ConnectorError> {
        self.sims.create_or_get_billing_schedule(p, s).await
    }
    async fn get_project(&self, key: &str) -> Result<Option<o2c_domain::reconciliation::ProjectRecord>, ConnectorError> {
        Erp::get_project(&self.sims, key).await
    }
    async fn get_billing_schedule(&self, p: &str, s: &str) -> Result<Option<BillingSchedule>, ConnectorError> {
        self.sims.get_billing_schedule(p, s).await
    }
    async fn get_invoice(&self, n: &str) -> Result<Option<o2c_domain::reconciliation::ErpInvoiceRecord>, ConnectorError> {
        self.sims.get_invoice(n).await
    }
    async fn create_or_get_invoice(&self, invoice: &o2c_domain::invoicing::InvoiceDoc) -> Result<ExternalObject, ConnectorError> {
        self.sims.create_or_get_invoice(invoice).await
    }
    async fn book_receipt(&self, receipt: &o2c_domain::receivables::CashReceipt) -> Result<ExternalObject, ConnectorError> {
        self.sims.book_receipt(receipt).await
    }
    async fn post_journal(&self, journal: &o2c_domain::revenue::RevenueJournal) -> Result<ExternalObject, ConnectorError> {
        self.sims.post_journal(journal).await
    }
}

type TestPlatform = MemoryPlatform<Simulators, Racing, Racing, Simulators>;

fn decode((_, dt, detail): (&str, &str, serde_json::Value)) -> o2c_domain::events::BusinessEvent {
    o2c_app::contracts::decode(dt, &detail).unwrap()
}

fn service(dir: &tempfile::TempDir) -> StepService<TestPlatform> {
    service_recording(dir).0
}

/// The service, and the metrics it emits.
fn service_recording(dir: &tempfile::TempDir) -> (StepService<TestPlatform>, o2c_app::metrics::RecordingMetrics) {
    let sims = Simulators::new(Db::open(&dir.path().join("sims.db")).unwrap(), &o2c_embedded::reference::northwind().unwrap());
    let store = MemoryStore::new();
    let racing = || Racing {
        sims: sims.clone(),
        store: store.clone(),
        engagement_id: std::sync::Mutex::new(None),
        bumps: Default::default(),
        gated: Default::default(),
        entered: Default::default(),
        proceed: Default::default(),
    };
    let (psa, erp) = (racing(), racing());
    let mut platform = o2c_app::memory::platform(o2c_embedded::reference::northwind().unwrap(), sims.clone(), psa, erp, sims.clone());
    platform.store = store;
    let metrics = o2c_app::metrics::RecordingMetrics::default();
    platform.metrics = std::sync::Arc::new(metrics.clone());
    (StepService::new(platform, o2c_tests::fast_service()), metrics)
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn when_a_duplicate_gives_up_while_the_original_provisions_should_keep_the_original_result_and_close_the_exception() {
    // Two copies of one approval (the duplicate path re-publishes downstream events, so
    // copies are common). Copy A claims and is inside the ERP call when copy B, on its
    // last receive, meets A's reservation and gives up. Before the fix B's dead letter
    // released A's claim, A's finalize called itself superseded, the engagement stayed in
    // `provisioning` with projects in both systems and nothing published — and A's
    // completion closed the exception, so nothing showed it.
    let dir = tempfile::tempdir().unwrap();
    let svc = std::sync::Arc::new(service(&dir));
    let opp = "0068d00000DUPL01";
    let eng = format!("ENG-{opp}");
    let deadline = chrono::Utc::now() + chrono::Duration::minutes(15);
    svc.handle(Step::Intake, &decode(closed_won(o2c_tests::asia_payload(opp, 1, "60000.00"))), &o2c_app::Delivery::once(deadline))
        .await
        .unwrap();
    // Asia contracts provision on ContractCreated; deliver that one twice.
    let created = svc.platform().publisher.published().into_iter().find(|e| e.event_type == EventType::ContractCreated).unwrap();
    let detail = created.detail.clone();
    svc.platform().erp.gated.store(true, Ordering::SeqCst);
    let a = {
        let svc = svc.clone();
        let event = o2c_app::contracts::decode("ContractCreated", &detail).unwrap();
        tokio::spawn(async move { svc.handle(Step::Provision, &event, &o2c_app::Delivery::once(deadline)).await })
    };
    svc.platform().erp.entered.notified().await;

    let mut batch = aws_lambda_events::event::sqs::SqsEvent::default();
    batch.records = vec![o2c_tests::sqs_record("copy-b", ("o2c.intake", "ContractCreated", detail.clone()), 5)];
    let ctx = o2c_app::sqs::BatchContext { deadline, max_receive_count: Some(5), dead_letter_queue: Some("ProvisionDLQ".into()) };
    let outcomes = o2c_app::sqs::process_batch(svc.as_ref(), Step::Provision, batch, &ctx).await;
    assert!(matches!(&outcomes[0].result, Err(o2c_app::O2cError::InProgress { .. })), "{:?}", outcomes[0].result);
    let held = svc.platform().store.load(&eng).await.unwrap().unwrap().value;
    assert!(held.claimed_by.is_some(), "the live holder keeps its claim");
    assert!(held.exceptions.iter().any(|x| x.open), "the copy that gave up is visible meanwhile");

    svc.platform().erp.proceed.notify_one();
    let handled = a.await.unwrap().unwrap();
    assert_eq!(handled.action, "provisioned");
    let e = svc.platform().store.load(&eng).await.unwrap().unwrap().value;
    assert_eq!(e.status, EngagementStatus::Provisioned);
    assert!(e.psa_project_id.is_some() && e.erp_project_id.is_some());
    assert!(!e.has_open_exception(), "the original's completion closes the duplicate's exception: {:?}", e.exceptions);
    let published = svc.platform().publisher.published();
    assert_eq!(published.iter().filter(|e| e.event_type == EventType::ProjectProvisioned).count(), 1);
    let sims = &svc.platform().crm;
    assert_eq!(sims.projects(System::Psa).await.unwrap().len(), 1);
    assert_eq!(sims.projects(System::Erp).await.unwrap().len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn when_the_publish_fails_on_the_last_receive_should_close_the_exception_once_a_redrive_publishes() {
    // The step commits, then EventBridge refuses the publish on the message's last receive:
    // a dead-letter exception is raised (the downstream events are missing). The redrive
    // finds the key completed and re-publishes the stored events — and must close that
    // exception, or the engagement shows an error forever.
    let dir = tempfile::tempdir().unwrap();
    let svc = service(&dir);
    let opp = "0068d00000PUBF01";
    let eng = format!("ENG-{opp}");
    let deadline = chrono::Utc::now() + chrono::Duration::minutes(15);
    svc.handle(Step::Intake, &decode(closed_won(o2c_tests::asia_payload(opp, 1, "60000.00"))), &o2c_app::Delivery::once(deadline))
        .await
        .unwrap();
    let created = svc.platform().publisher.published().into_iter().find(|e| e.event_type == EventType::ContractCreated).unwrap().detail;
    let ctx = o2c_app::sqs::BatchContext { deadline, max_receive_count: Some(5), dead_letter_queue: Some("ProvisionDLQ".into()) };
    let mut batch = aws_lambda_events::event::sqs::SqsEvent::default();
    batch.records = vec![o2c_tests::sqs_record("m-last", ("o2c.intake", "ContractCreated", created.clone()), 5)];
    svc.platform().publisher.fail_next_publishes(1);
    let out = o2c_app::sqs::process_batch(&svc, Step::Provision, batch.clone(), &ctx).await;
    assert!(out[0].result.is_err(), "the publish failed");
    let e = svc.platform().store.load(&eng).await.unwrap().unwrap().value;
    assert_eq!(e.status, EngagementStatus::Provisioned, "the decision is committed");
    assert!(e.exceptions.iter().any(|x| x.open && x.kind == ExceptionKind::DeadLettered), "raised: {:?}", e.exceptions);
    let provisioned = |svc: &StepService<TestPlatform>| {
        svc.platform().publisher.published().iter().filter(|e| e.event_type == EventType::ProjectProvisioned).count()
    };
    assert_eq!(provisioned(&svc), 0, "not published yet");

    // The redrive (its receive count starts again) re-publishes and settles.
    batch.records = vec![o2c_tests::sqs_record("m-redriven", ("o2c.intake", "ContractCreated", created), 1)];
    let out = o2c_app::sqs::process_batch(&svc, Step::Provision, batch, &ctx).await;
    assert!(matches!(&out[0].result, Ok(Some(handled)) if handled.duplicate), "{:?}", out[0].result);
    assert_eq!(provisioned(&svc), 1);
    let e = svc.platform().store.load(&eng).await.unwrap().unwrap().value;
    assert!(!e.has_open_exception(), "closed by the redrive: {:?}", e.exceptions);
    let audit = svc.platform().store.audit_trail(&eng).await.unwrap();
    assert!(audit.iter().any(|a| a.action == Action::Redelivered), "the settlement is on the timeline");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn when_the_invocation_runs_short_of_time_should_not_start_commands_or_records_it_cannot_finish() {
    // A batch of three provisioning messages with 20.9 s left (a command needs its 10 s
    // attempt timeout plus 10 s for the commit and publish after it). The first record
    // starts; its PSA call takes 1.5 s, so the ERP call can no longer be started safely,
    // and neither can the other records: all are handed back, none half-done by a timeout.
    let dir = tempfile::tempdir().unwrap();
    let svc = service(&dir);
    let far = chrono::Utc::now() + chrono::Duration::minutes(15);
    let mut records = Vec::new();
    for i in 0..3 {
        let opp = format!("0068d00000TIME0{i}");
        svc.handle(Step::Intake, &decode(closed_won(o2c_tests::asia_payload(&opp, 1, "60000.00"))), &o2c_app::Delivery::once(far))
            .await
            .unwrap();
    }
    for (i, e) in svc.platform().publisher.published().into_iter().filter(|e| e.event_type == EventType::ContractCreated).enumerate() {
        records.push(o2c_tests::sqs_record(&format!("m{i}"), ("o2c.intake", "ContractCreated", e.detail), 1));
    }
    svc.platform().crm.inject(System::Psa, "create_project", o2c_embedded::sim::Fault::Latency { ms: 1500 }, Some(1)).await.unwrap();
    let mut batch = aws_lambda_events::event::sqs::SqsEvent::default();
    batch.records = records;
    let deadline = chrono::Utc::now() + chrono::Duration::milliseconds(20_900);
    let out = o2c_app::sqs::process_batch(&svc, Step::Provision, batch, &o2c_app::sqs::BatchContext::until(deadline)).await;
    let errors: Vec<String> = out.iter().map(|o| o.result.as_ref().err().map(ToString::to_string).unwrap_or_default()).collect();
    assert!(errors[0].contains("too little of the invocation is left"), "{errors:?}");
    assert!(errors[1].contains("not started") && errors[2].contains("not started"), "{errors:?}");
    let calls = svc.platform().crm.calls().await.unwrap();
    assert_eq!(calls.iter().filter(|c| c.system == "psa").count(), 1, "only the first record's first command ran");
    assert_eq!(calls.iter().filter(|c| c.system == "erp").count(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn when_events_are_handled_should_report_each_outcome_its_age_and_every_connector_call() {
    let dir = tempfile::tempdir().unwrap();
    let (svc, metrics) = service_recording(&dir);
    let deadline = chrono::Utc::now() + chrono::Duration::minutes(15);
    let once = o2c_app::Delivery::once(deadline);
    let closed = decode(closed_won(o2c_tests::asia_payload("0068d00000METR01", 1, "60000.00")));
    svc.handle(Step::Intake, &closed, &once).await.unwrap();
    svc.handle(Step::Intake, &closed, &once).await.unwrap();
    let created = svc.platform().publisher.published().into_iter().find(|e| e.event_type == EventType::ContractCreated).unwrap();
    svc.handle(Step::Provision, &o2c_app::contracts::decode("ContractCreated", &created.detail).unwrap(), &once).await.unwrap();
    // An operator's action on a case that does not exist: refused for good (parked).
    let ghost = serde_json::json!({"exception_id": "EXC-X", "engagement_id": "ENG-X", "action": {"type": "retry"}, "actor": "U-OPS-01"});
    let ghost = o2c_tests::envelope("ghost", "corr", Some("ghost"), ghost);
    assert!(svc.handle(Step::Exceptions, &decode(("o2c.operator", "ExceptionActionRequested", ghost)), &once).await.is_err());
    // The ERP refuses the next project.
    let fault = o2c_embedded::sim::Fault::Rejected { status: 400, code: "INVALID_KEY_OR_REF".into(), message: "PM".into() };
    svc.platform().crm.inject(System::Erp, "create_project", fault, Some(1)).await.unwrap();
    svc.handle(Step::Intake, &decode(closed_won(o2c_tests::asia_payload("0068d00000METR02", 1, "60000.00"))), &once).await.unwrap();
    let created = svc
        .platform()
        .publisher
        .published()
        .into_iter()
        .find(|e| e.event_type == EventType::ContractCreated && e.engagement_id.as_str() == "ENG-0068d00000METR02")
        .unwrap();
    svc.handle(Step::Provision, &o2c_app::contracts::decode("ContractCreated", &created.detail).unwrap(), &once).await.unwrap();

    let m = metrics.recorded();
    let count = |name: &str, dims: &[(&str, &str)]| {
        m.iter().filter(|x| x.name == name && dims.iter().all(|(k, v)| x.dimensions.contains(&((*k).to_owned(), (*v).to_owned())))).count()
    };
    assert_eq!(count("EventsHandled", &[("Step", "intake"), ("Outcome", "processed")]), 2, "{m:#?}");
    assert_eq!(count("EventsHandled", &[("Step", "intake"), ("Outcome", "duplicate")]), 1);
    assert_eq!(count("EventsHandled", &[("Step", "exceptions"), ("Outcome", "rejected")]), 1);
    assert_eq!(count("EventsHandled", &[("Step", "provision"), ("Outcome", "processed")]), 2);
    assert_eq!(count("EventAgeSeconds", &[("Step", "intake")]), 2, "only what was processed has an age");
    assert!(m.iter().filter(|x| x.name == "EventAgeSeconds").all(|x| !x.value.is_sign_negative()));
    assert_eq!(count("ConnectorLatencyMs", &[("System", "psa"), ("Operation", "create_project")]), 2);
    assert_eq!(count("ConnectorLatencyMs", &[("System", "erp"), ("Operation", "create_project")]), 2);
    assert_eq!(count("ConnectorErrors", &[("System", "erp"), ("Kind", "refused")]), 1);
    assert_eq!(count("ConnectorErrors", &[]), 1, "the refusal only");
}

#[tokio::test(flavor = "current_thread")]
async fn when_a_one_step_service_gets_another_steps_event_should_refuse_it_as_not_consumed() {
    // What a Lambda function runs: the service of the one step its `main.rs` names.
    let dir = tempfile::tempdir().unwrap();
    let sims = Simulators::new(Db::open(&dir.path().join("sims.db")).unwrap(), &o2c_embedded::reference::northwind().unwrap());
    let platform = o2c_app::memory::platform(o2c_embedded::reference::northwind().unwrap(), sims.clone(), sims.clone(), sims.clone(), sims);
    let svc = StepService::single(platform, o2c_tests::fast_service(), &o2c_app::steps::Intake);
    let deadline = chrono::Utc::now() + chrono::Duration::minutes(15);
    let handled =
        svc.handle(Step::Intake, &decode(closed_won(globex_payload("OPP-ONE-STEP", 1))), &o2c_app::Delivery::once(deadline)).await.unwrap();
    assert_eq!(handled.action, "contract_created");

    let approval = decode(contract_approved("OPP-ONE-STEP"));
    // Provision consumes the approval, but this service runs intake only.
    let err = svc.handle(Step::Provision, &approval, &o2c_app::Delivery::once(deadline)).await.unwrap_err();
    assert!(err.is_permanent(), "{err}");
    assert_eq!(err.reasons().iter().map(|i| i.code.as_str()).collect::<Vec<_>>(), ["not_handled_by_step"], "{err}");
    // Nothing moved: the contract is as intake left it, and no step ran on the approval.
    let engagement = svc.platform().store.load(&approval.engagement_id()).await.unwrap().unwrap().value;
    assert_eq!(engagement.status, EngagementStatus::ContractCreated);
}
