//! The AWS adapters against a real AWS-API server on loopback (moto_server, started by
//! `scripts/test.sh`, endpoint in `AWS_ENDPOINT_URL`). Every test deploys the template's
//! resources under its own stage name, so tests run in parallel without sharing state.
#![allow(missing_docs, clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;
use std::time::{Duration, Instant};

use o2c_app::bus::PutEventsEntry;
use o2c_app::ports::{EngagementStore, IdempotencyStore, RejectionStore, StateWrite};
use o2c_app::{ServiceConfig, Step, StepService};
use o2c_aws::AwsPlatform;
use o2c_aws::dynamo::Tables;
use o2c_aws::poller::{Poller, PollerOptions};
use o2c_aws::resources::{Deployed, create};
use o2c_domain::engagement::EngagementStatus;
use o2c_embedded::sim::{Simulators, System};
use o2c_topology::topology::{TEMPLATE, Topology};
use serde_json::{Value, json};
use tokio::sync::watch;

type SimPlatform = AwsPlatform<Simulators, Simulators, Simulators, Simulators>;

/// Fails loudly when the emulator is missing: `scripts/test.sh` always starts it.
fn endpoint() -> String {
    std::env::var("AWS_ENDPOINT_URL")
        .expect("AWS_ENDPOINT_URL must point at moto_server (run the tests through scripts/test.sh / make test)")
}

struct Stage {
    sdk: aws_config::SdkConfig,
    topo: Arc<Topology>,
    deployed: Arc<Deployed>,
    svc: Arc<StepService<SimPlatform>>,
    sims: Simulators,
    _dir: tempfile::TempDir,
}

fn read_sample(name: &str) -> Value {
    let t = o2c_domain::events::EventType::from_detail_type(name).unwrap();
    let p = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../..").join(t.sample_path());
    serde_json::from_str(&std::fs::read_to_string(p).unwrap()).unwrap()
}

fn entry(bus: &str, sample: &Value) -> PutEventsEntry {
    PutEventsEntry {
        source: sample["source"].as_str().map(str::to_owned),
        detail_type: sample["detail-type"].as_str().map(str::to_owned),
        detail: Some(sample["detail"].to_string()),
        event_bus_name: Some(bus.to_owned()),
        ..Default::default()
    }
}

impl Stage {
    async fn new() -> Self {
        Self::with(ServiceConfig::default()).await
    }

    async fn with(config: ServiceConfig) -> Self {
        let _ = endpoint();
        let sdk = o2c_aws::sdk_config().await;
        let topo = Arc::new(Topology::from_sam_yaml(TEMPLATE).unwrap());
        let stage = format!("t{}", &uuid::Uuid::new_v4().simple().to_string()[..10]);
        let deployed = Arc::new(create(&sdk, &topo, &stage, Some(2)).await.expect("resources created from the template"));
        let dir = tempfile::tempdir().unwrap();
        let reference = o2c_embedded::reference::northwind().unwrap();
        let sims = Simulators::new(o2c_embedded::db::Db::open(&dir.path().join("sims.db")).unwrap(), &reference);
        let platform = o2c_aws::platform::with_connectors(
            &sdk,
            deployed.tables.clone(),
            deployed.bus_name.clone(),
            Duration::from_secs(60),
            o2c_aws::platform::Connectors { crm: sims.clone(), psa: sims.clone(), erp: sims.clone(), tax: sims.clone() },
        );
        platform.store.put_reference(&reference).await.expect("reference data loaded");
        let svc = Arc::new(StepService::new(platform, config));
        Self { sdk, topo, deployed, svc, sims, _dir: dir }
    }

    fn platform(&self) -> &SimPlatform {
        self.svc.platform()
    }

    fn poller(&self) -> Arc<Poller<SimPlatform>> {
        self.poller_with(PollerOptions { wait_time_secs: 1, max_concurrency: 2, failure_visibility: Some(Duration::ZERO) })
    }

    fn poller_with(&self, opts: PollerOptions) -> Arc<Poller<SimPlatform>> {
        Arc::new(Poller::new(
            o2c_aws::platform::sqs_long_poll_client(&self.sdk),
            self.svc.clone(),
            self.topo.clone(),
            self.deployed.clone(),
            opts,
        ))
    }

    async fn publish(&self, samples: &[Value]) {
        let entries: Vec<PutEventsEntry> = samples.iter().map(|s| entry(&self.deployed.bus_name, s)).collect();
        self.platform().publisher.put_entries(&entries).await.expect("PutEvents");
    }

    /// Runs the poller until `done` holds or `max` elapses.
    async fn run_until<F, Fut>(&self, max: Duration, done: F)
    where
        F: Fn() -> Fut,
        Fut: std::future::Future<Output = bool>,
    {
        self.run_poller_until(self.poller(), max, done).await
    }

    async fn run_poller_until<F, Fut>(&self, poller: Arc<Poller<SimPlatform>>, max: Duration, done: F)
    where
        F: Fn() -> Fut,
        Fut: std::future::Future<Output = bool>,
    {
        let (tx, rx) = watch::channel(false);
        let mut set = poller.start(rx);
        let start = Instant::now();
        while !done().await {
            assert!(start.elapsed() < max, "condition not reached within {max:?}");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let _ = tx.send(true);
        while set.join_next().await.is_some() {}
    }

    async fn status(&self, id: &str) -> Option<EngagementStatus> {
        self.platform().store.load(id).await.unwrap().map(|v| v.value.status)
    }
}

const GLOBEX: &str = "ENG-0068d00000GLBX01";

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn when_closed_won_flows_through_eventbridge_sqs_and_dynamodb_should_activate_and_sync_crm() {
    let st = Stage::new().await;
    st.publish(&[read_sample("OpportunityClosedWon"), read_sample("ContractApproved")]).await;
    let crm_synced = || async { st.sims.opportunity("0068d00000GLBX01").await.unwrap().is_some_and(|(_, u)| u.sync_status == "Synced") };
    st.run_until(Duration::from_secs(60), crm_synced).await;

    let state = st.platform().store.load(GLOBEX).await.unwrap().unwrap();
    assert_eq!(state.value.status, EngagementStatus::Active);
    assert_eq!(st.sims.projects(System::Psa).await.unwrap().len(), 1);
    assert_eq!(st.sims.projects(System::Erp).await.unwrap().len(), 1);
    let trail = st.platform().store.audit_trail(GLOBEX).await.unwrap();
    let actions: Vec<&str> = trail.iter().map(|a| a.action.as_str()).collect();
    // The approval may be processed before or after the closed-won (both orders are valid).
    for a in ["contract_created", "provisioned", "activated", "crm_updated"] {
        assert!(actions.contains(&a), "{a} missing from {actions:?}");
    }
    // Operator queries through the GSIs.
    let active = st
        .platform()
        .store
        .list(&o2c_app::ports::EngagementFilter { status: Some("active".into()), limit: 10, ..Default::default() })
        .await
        .unwrap();
    assert_eq!(active.iter().map(|s| s.engagement_id.as_str()).collect::<Vec<_>>(), vec![GLOBEX]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn when_events_are_delivered_again_should_be_absorbed_by_the_idempotency_table_without_writes() {
    let st = Stage::new().await;
    let cw = read_sample("OpportunityClosedWon");
    st.publish(std::slice::from_ref(&cw)).await;
    let waiting = || async { st.status(GLOBEX).await == Some(EngagementStatus::AwaitingApproval) };
    st.run_until(Duration::from_secs(30), waiting).await;
    // Everything the first delivery caused (the CRM write-back of its status) finishes before
    // the count starts: only the duplicates are measured, whatever the interleaving.
    let drained = || async { o2c_aws::poller::pending(&aws_sdk_sqs::Client::new(&st.sdk), &st.topo, &st.deployed).await.unwrap() == 0 };
    st.run_until(Duration::from_secs(30), drained).await;
    let (_, writes_before) = st.platform().store.counts().snapshot();

    // The CRM re-sends the same closed-won three times.
    st.publish(&[cw.clone(), cw.clone(), cw]).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    st.run_until(Duration::from_secs(30), drained).await;

    let (_, writes_after) = st.platform().store.counts().snapshot();
    assert_eq!(writes_after, writes_before, "duplicates cost no DynamoDB write");
    let trail = st.platform().store.audit_trail(GLOBEX).await.unwrap();
    assert_eq!(trail.iter().filter(|a| a.action == "contract_created").count(), 1);
    let rec = st.platform().store.get("intake#crm:opportunity:0068d00000GLBX01:closed-won:r1").await.unwrap().expect("idempotency record");
    assert_eq!(rec.status, o2c_app::ports::IdempotencyStatus::Completed);
    assert!(rec.result.unwrap().events.len() == 1, "the stored result keeps the emitted event for re-publishing");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn when_a_message_keeps_failing_should_end_in_the_dlq_with_its_reason() {
    let st = Stage::new().await;
    // A ContractCreated for an engagement that does not exist: a defect, retried, then dead-lettered.
    let mut ghost = read_sample("ContractCreated");
    ghost["detail"]["payload"]["engagement_id"] = json!("ENG-GHOST-0001");
    ghost["detail"]["idempotency_key"] = json!("contract-created:ENG-GHOST-0001:r1");
    st.publish(&[ghost]).await;
    let sqs = aws_sdk_sqs::Client::new(&st.sdk);
    let dlq = st.deployed.queue_urls["ProvisionDLQ"].clone();
    let dead = || async { o2c_aws::ops::depth(&sqs, &dlq).await.unwrap().0 >= 1 };
    st.run_until(Duration::from_secs(60), dead).await;

    let msgs = o2c_aws::ops::peek(&sqs, &dlq, 10).await.unwrap();
    assert_eq!(msgs.len(), 1);
    assert_eq!(msgs[0].detail_type.as_deref(), Some("ContractCreated"));
    let failure = st.platform().store.failure(&msgs[0].message_id).await.unwrap().expect("the reason is recorded under the message id");
    assert_eq!(failure.step, "provision");
    assert_eq!(failure.error_type, "O2c.Bug");
    assert!(failure.error.contains("ENG-GHOST-0001 not found"), "{}", failure.error);
    assert_eq!(failure.receive_count, 5, "maxReceiveCount from the template");
    // No engagement to raise an exception on: the coming dead letter is parked, visible.
    let parked = st.platform().store.rejections(10).await.unwrap();
    assert!(
        parked.iter().any(|p| p.engagement_id.as_deref() == Some("ENG-GHOST-0001") && p.reasons[0].code == "dead_lettered"),
        "{parked:#?}"
    );

    // Redrive (receive → resend → delete) moves it back to the source queue.
    let src = st.deployed.queue_urls["ProvisionQueue"].clone();
    let mut seen = 0;
    let moved = o2c_aws::ops::redrive(&sqs, &dlq, &src, 100, |n| seen = n).await.unwrap();
    assert_eq!((moved, seen), (1, 1));
    assert_eq!(o2c_aws::ops::depth(&sqs, &dlq).await.unwrap(), (0, 0));
    assert_eq!(o2c_aws::ops::depth(&sqs, &src).await.unwrap().0, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn when_handlers_race_on_one_engagement_should_never_lose_an_update() {
    let st = Stage::new().await;
    st.publish(&[read_sample("OpportunityClosedWon")]).await;
    let waiting = || async { st.status(GLOBEX).await == Some(EngagementStatus::AwaitingApproval) };
    st.run_until(Duration::from_secs(30), waiting).await;
    let store = st.platform().store.clone();
    let start = store.load(GLOBEX).await.unwrap().unwrap().version;
    let mut tasks = Vec::new();
    for i in 0..8 {
        let store = store.clone();
        tasks.push(tokio::spawn(async move {
            let mut conflicts = 0;
            loop {
                let cur = store.load(GLOBEX).await.unwrap().unwrap();
                let mut e = cur.value.clone();
                e.raise(o2c_domain::engagement::EngagementException {
                    exception_id: format!("race-{i}").into(),
                    kind: o2c_domain::events::ExceptionKind::MessageRejected,
                    step: "test".into(),
                    message: format!("writer {i}"),
                    compensations: vec![],
                    raised_at: chrono::Utc::now(),
                    open: true,
                    event_id: None,
                    closed_at: None,
                    resolution: None,
                    announce_pending: false,
                    amount_at_stake: None,
                    caused_by: Vec::new(),
                });
                let commit = o2c_app::ports::Commit {
                    state: Some(StateWrite { engagement: e, expected: o2c_app::ports::ExpectedVersion::Is(cur.version) }),
                    others: vec![],
                    audit: Some(o2c_domain::engagement::AuditEntry {
                        engagement_id: GLOBEX.into(),
                        at: chrono::Utc::now(),
                        step: "test".into(),
                        event_id: format!("race-{i}-{conflicts}"),
                        event_type: "Test".into(),
                        correlation_id: "c".into(),
                        action: o2c_domain::engagement::Action::ApprovalRecorded,
                        summary: String::new(),
                    }),
                    key: o2c_app::ports::KeyWrite::Complete(o2c_app::ports::Completion {
                        key: format!("race#{i}"),
                        payload_hash: "h".into(),
                        result: o2c_app::ports::StoredResult { action: "race".into(), events: vec![] },
                        now: chrono::Utc::now(),
                        expires_at: chrono::Utc::now() + chrono::Duration::hours(1),
                        mode: o2c_app::ports::CompletionMode::Fresh,
                    }),
                };
                match store.commit(commit).await.unwrap() {
                    o2c_app::ports::CommitOutcome::Committed { .. } => return conflicts,
                    o2c_app::ports::CommitOutcome::VersionConflict => conflicts += 1,
                    other => panic!("unexpected {other:?}"),
                }
            }
        }));
    }
    let mut conflicts = 0;
    for t in tasks {
        conflicts += t.await.unwrap();
    }
    let end = store.load(GLOBEX).await.unwrap().unwrap();
    assert_eq!(end.version, start + 8, "every writer committed exactly once");
    for i in 0..8 {
        assert!(end.value.exceptions.iter().any(|x| x.exception_id == format!("race-{i}")), "writer {i}'s update was lost");
    }
    println!("8 racing writers: {conflicts} optimistic-lock conflicts retried");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn when_each_step_processes_an_event_should_stay_within_the_dynamodb_write_budget() {
    let st = Stage::new().await;
    let svc = st.svc.clone();
    let counts = st.platform().store.counts();
    let decode = |v: &Value| o2c_app::contracts::decode(v["detail-type"].as_str().unwrap(), &v["detail"]).unwrap();
    let deadline = chrono::Utc::now() + chrono::Duration::seconds(60);
    let mut report = Vec::new();
    let mut measure = async |label: &str, step: Step, ev: &o2c_domain::events::BusinessEvent| {
        let (_, before) = counts.snapshot();
        // Boxed: a dozen step futures inlined into one test future overflow a debug stack.
        let h = Box::pin(svc.handle(step, ev, &o2c_app::Delivery::once(deadline))).await.unwrap();
        let (_, after) = counts.snapshot();
        report.push(format!("{label:<44} {:<28} writes={}", h.action, after - before));
        after - before
    };
    let cw = decode(&read_sample("OpportunityClosedWon"));
    assert_eq!(measure("intake: closed-won (pure)", Step::Intake, &cw).await, 1);
    // The events intake emitted, as the bus would deliver them.
    let st_eng = st.platform().store.load(GLOBEX).await.unwrap().unwrap();
    let contract = st_eng.value.contract.clone().unwrap();
    let created = {
        let mut s = read_sample("ContractCreated");
        s["detail"]["payload"]["total_value"] = serde_json::to_value(contract.total_value).unwrap();
        decode(&s)
    };
    assert_eq!(measure("provision: contract created, awaiting approval", Step::Provision, &created).await, 1);
    assert_eq!(measure("crm-writeback: status write (side effect)", Step::CrmWriteback, &created).await, 2);
    let approved = decode(&read_sample("ContractApproved"));
    assert_eq!(measure("provision: approved → PSA + ERP (side effect)", Step::Provision, &approved).await, 2);
    let eng = st.platform().store.load(GLOBEX).await.unwrap().unwrap().value;
    let provisioned = {
        let mut s = read_sample("ProjectProvisioned");
        s["detail"]["payload"]["psa_project_id"] = json!(eng.psa_project_id.clone().unwrap());
        s["detail"]["payload"]["erp_project_id"] = json!(eng.erp_project_id.clone().unwrap());
        decode(&s)
    };
    assert_eq!(measure("billing-setup: ERP schedule (side effect)", Step::BillingSetup, &provisioned).await, 2);
    assert_eq!(measure("duplicate closed-won", Step::Intake, &cw).await, 0);
    assert_eq!(measure("duplicate approval", Step::Provision, &approved).await, 0);

    // Delivery to a posted invoice, each event as the bus would deliver it.
    let project = eng.psa_project_id.clone().unwrap();
    let assigned = {
        let mut s = read_sample("ResourceAssigned");
        let p = &mut s["detail"]["payload"];
        (p["engagement_id"], p["project_id"], p["role"]) = (json!(GLOBEX), json!(project), json!("MANAGER"));
        decode(&s)
    };
    assert_eq!(measure("delivery: staffing (pure)", Step::DeliveryIntake, &assigned).await, 1);
    let time = {
        let mut s = read_sample("TimeApproved");
        let t = &mut s["detail"]["payload"]["time_entry"];
        (t["engagement_id"], t["project_id"], t["line_id"], t["role"], t["version"]) =
            (json!(GLOBEX), json!(project), json!("L2"), json!("MANAGER"), json!(1));
        decode(&s)
    };
    assert_eq!(measure("delivery: time entry (shard + resource day)", Step::DeliveryIntake, &time).await, 1);
    assert_eq!(measure("duplicate time entry", Step::DeliveryIntake, &time).await, 0);
    let completed = {
        let mut s = read_sample("MilestoneCompleted");
        s["detail"]["payload"]["psa_project_id"] = json!(project);
        decode(&s)
    };
    assert_eq!(measure("delivery: milestone completed (pure)", Step::DeliveryIntake, &completed).await, 1);
    let run = {
        let mut s = read_sample("InvoiceRunRequested");
        let p = &mut s["detail"]["payload"];
        (p["engagement_id"], p["scheduled"], p["as_of"], p["requested_by"]) =
            (json!(GLOBEX), json!(false), json!("2027-03-01"), json!("U-BILL-01"));
        decode(&s)
    };
    assert_eq!(measure("invoice run: draft + tax (side effect)", Step::InvoiceRun, &run).await, 2);
    let loaded = st.platform().store.load_all(o2c_domain::aggregate::AggregateKind::Invoice, GLOBEX).await.unwrap();
    let invoice = loaded.invoices()[0].clone();
    assert_eq!(
        invoice.status,
        o2c_domain::invoicing::InvoiceStatus::PendingApproval,
        "milestone + installment pass the EUR 50,000 threshold"
    );
    let approve = {
        let mut s = read_sample("InvoiceApproved");
        s["detail"]["payload"]["invoice_id"] = json!(invoice.invoice_id);
        decode(&s)
    };
    assert_eq!(measure("invoice approval (pure)", Step::InvoiceApproval, &approve).await, 1);
    let released = {
        let mut s = read_sample("InvoiceReleased");
        s["detail"]["payload"]["invoice_id"] = json!(invoice.invoice_id);
        decode(&s)
    };
    assert_eq!(measure("invoice posting: number + ERP (side effect)", Step::InvoicePosting, &released).await, 2);
    assert_eq!(measure("duplicate release", Step::InvoicePosting, &released).await, 0);
    let loaded = st.platform().store.load_all(o2c_domain::aggregate::AggregateKind::Invoice, GLOBEX).await.unwrap();
    let posted = loaded.invoice(&invoice.invoice_id).unwrap();
    assert_eq!(posted.status, o2c_domain::invoicing::InvoiceStatus::Posted);
    assert_eq!(posted.number.as_deref(), Some("LE-DE-01-000001"));
    assert_eq!(st.sims.invoices().await.unwrap().len(), 1, "the ERP holds it");

    // The posted invoice onto the CRM account and opportunity.
    let posted_event = {
        let mut s = read_sample("InvoicePosted");
        s["detail"]["payload"]["invoice_id"] = json!(invoice.invoice_id);
        decode(&s)
    };
    assert_eq!(measure("crm invoice sync: invoice record (side effect)", Step::CrmInvoiceSync, &posted_event).await, 2);
    let crm = st.sims.crm_invoices().await.unwrap();
    assert_eq!((crm.len(), crm[0].number.as_str(), crm[0].status.as_str()), (1, "LE-DE-01-000001", "open"));

    // Cash: a partial payment quoting the number, booked in the ERP.
    let paid = {
        let mut s = read_sample("PaymentReceived");
        s["detail"]["payload"]["references"] = json!(["LE-DE-01-000001"]);
        s["detail"]["payload"]["amount"]["amount"] = json!("1000.00");
        decode(&s)
    };
    assert_eq!(measure("cash application: match + ERP receipt (side effect)", Step::CashApplication, &paid).await, 2);
    assert_eq!(measure("duplicate payment event", Step::CashApplication, &paid).await, 0);
    let renotified = {
        let mut s = read_sample("PaymentReceived");
        s["detail"]["payload"]["references"] = json!(["LE-DE-01-000001"]);
        s["detail"]["payload"]["amount"]["amount"] = json!("1000.00");
        (s["detail"]["event_id"], s["detail"]["idempotency_key"]) = (json!("bank-renotified"), json!("bank:renotified"));
        decode(&s)
    };
    assert_eq!(measure("same payment notified again (pure)", Step::CashApplication, &renotified).await, 1);
    // The payment, applied in full and booked, settled out onto its reference.
    let rec = o2c_app::receivables::history(&st.platform().store, "LE-DE-01", Some("CUST-1001")).await.unwrap().pop().unwrap();
    let open = rec.invoices[&invoice.invoice_id].open();
    let applied = rec.payments["DE-CAMT-2027041100017"].applications[0].amount;
    assert_eq!(applied.amount.to_string(), "1000.00");
    assert_eq!(open.amount + applied.amount, posted.total.amount);
    assert_eq!(st.sims.receipts().await.unwrap().len(), 1, "booked once");

    // Revenue for March: the milestone, the ratable fixed fee, a journal in the ERP.
    let revenue = {
        let mut s = read_sample("RevenueRunRequested");
        s["detail"]["payload"]["engagement_id"] = json!(GLOBEX);
        decode(&s)
    };
    assert_eq!(measure("revenue run: journal + ERP (side effect)", Step::RevenueRecognition, &revenue).await, 2);
    assert_eq!(measure("duplicate revenue run", Step::RevenueRecognition, &revenue).await, 0);
    let rl = st.platform().store.load_aggregates(&[o2c_domain::aggregate::AggregateKey::revenue_ledger(GLOBEX)]).await.unwrap();
    let rl = rl.revenue_ledger(GLOBEX).cloned().unwrap();
    assert_eq!(rl.journals.len(), 1);
    assert_eq!(st.sims.journals().await.unwrap()[0].journal.total, rl.journals[0].total);
    let (reads, writes) = counts.snapshot();
    println!(
        "DynamoDB requests per processed event:\n  {}\n  totals incl. reference-data load: reads={reads} writes={writes}",
        report.join("\n  ")
    );
    assert_eq!(st.status(GLOBEX).await, Some(EngagementStatus::Active));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn when_eventbridge_fails_some_entries_should_retry_only_those() {
    let st = Stage::new().await;
    let mut entries: Vec<PutEventsEntry> = (0..11)
        .map(|i| PutEventsEntry {
            source: Some("o2c.test".into()),
            detail_type: Some("Probe".into()),
            detail: Some(format!("{{\"n\":{i}}}")),
            event_bus_name: Some(st.deployed.bus_name.clone()),
            ..Default::default()
        })
        .collect();
    // EventBridge refuses a malformed detail per entry (FailedEntryCount = 1), not per call.
    entries.push(PutEventsEntry { detail: Some("{not json".into()), ..entries[0].clone() });
    let publisher = &st.platform().publisher;
    let err = publisher.send_with_retry(&entries).await.unwrap_err();
    assert!(err.to_string().contains("1 entries still failing"), "{err}");
    // 2 requests for 12 entries (10 + 2), then 3 retries of the single failed entry.
    assert_eq!(publisher.requests(), 5);
    // Per entry: the 11 published ones keep their ids, the refused one its error.
    let each = publisher.send_each(&entries).await.unwrap();
    assert_eq!(each.iter().filter(|r| r.as_ref().is_ok_and(|id| !id.is_empty())).count(), 11);
    assert!(each[11].as_ref().is_err_and(|e| !e.is_empty()), "{:?}", each[11]);
    assert_eq!(publisher.requests(), 10);
    // The 256 KB limit is enforced before anything is sent.
    let big = PutEventsEntry { detail: Some(format!("{{\"x\":\"{}\"}}", "a".repeat(300 * 1024))), ..entries[0].clone() };
    let err = publisher.put_entries(&[big]).await.unwrap_err();
    assert!(err.to_string().contains("256 KB"), "{err}");
    assert_eq!(publisher.requests(), 10);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn when_connectors_speak_http_should_provision_through_the_system_api_contract() {
    let st = Stage::new().await;
    // The simulators behind the connector contract, on a loopback port.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let app = o2c_embedded::sim_http::router(st.sims.clone());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    let t = o2c_connectors::Timeouts::default();
    let conn = |sys: System| {
        o2c_connectors::HttpConnector::new(sys, &format!("http://{addr}/{}", sys.as_str()), Some("test-token".into()), t).unwrap()
    };
    let platform = o2c_aws::platform::with_connectors(
        &st.sdk,
        Tables { state: st.deployed.tables.state.clone(), idempotency: st.deployed.tables.idempotency.clone() },
        st.deployed.bus_name.clone(),
        Duration::from_secs(60),
        o2c_aws::platform::Connectors {
            crm: o2c_connectors::HttpCrm(conn(System::Crm)),
            psa: o2c_connectors::HttpPsa(conn(System::Psa)),
            erp: o2c_connectors::HttpErp(conn(System::Erp)),
            tax: o2c_connectors::HttpTax(conn(System::Tax)),
        },
    );
    let svc = StepService::new(platform, ServiceConfig::default());
    st.sims.inject(System::Erp, "create_project", o2c_embedded::sim::Fault::TimeoutAfterCommit, Some(1)).await.unwrap();
    let decode = |v: &Value| o2c_app::contracts::decode(v["detail-type"].as_str().unwrap(), &v["detail"]).unwrap();
    let deadline = chrono::Utc::now() + chrono::Duration::seconds(60);
    svc.handle(Step::Intake, &decode(&read_sample("OpportunityClosedWon")), &o2c_app::Delivery::once(deadline)).await.unwrap();
    let approved = decode(&read_sample("ContractApproved"));
    // The lost response (HTTP 504) is transient: retried inside the invocation.
    let first = svc.handle(Step::Provision, &approved, &o2c_app::Delivery::once(deadline)).await.unwrap();
    assert_eq!(first.action, "provisioned");
    assert_eq!(st.sims.projects(System::Erp).await.unwrap().len(), 1, "the retry got the project the ERP had committed");
    let erp_creates = st.sims.calls().await.unwrap().into_iter().filter(|c| c.system == "erp" && c.operation == "create_project").count();
    assert_eq!(erp_creates, 2, "the lost answer, then the create-or-get that found it");

    // A permanent 4xx is classified as such and compensated.
    let mut other = read_sample("OpportunityClosedWon");
    other["detail"]["payload"]["opportunity_id"] = json!("0068d00000HTTP02");
    other["detail"]["idempotency_key"] = json!("crm:opportunity:0068d00000HTTP02:closed-won:r1");
    svc.handle(Step::Intake, &decode(&other), &o2c_app::Delivery::once(deadline)).await.unwrap();
    st.sims
        .inject(
            System::Erp,
            "create_project",
            o2c_embedded::sim::Fault::Rejected { status: 422, code: "INVALID_FLD_VALUE".into(), message: "bad".into() },
            Some(1),
        )
        .await
        .unwrap();
    let mut approved2 = read_sample("ContractApproved");
    approved2["detail"]["payload"]["opportunity_id"] = json!("0068d00000HTTP02");
    approved2["detail"]["idempotency_key"] = json!("clm:agreement:AGR-HTTP02:approved");
    let h = svc.handle(Step::Provision, &decode(&approved2), &o2c_app::Delivery::once(deadline)).await.unwrap();
    assert_eq!(h.action, "compensated", "failure recorded, then the PSA project cancelled");
    let psa = st.sims.projects(System::Psa).await.unwrap();
    assert!(psa.iter().any(|p| p.external_key == "ENG-0068d00000HTTP02" && p.status == "cancelled"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn when_a_message_breaks_the_contract_should_be_parked_and_listed_for_operators() {
    let st = Stage::new().await;
    let mut bad = read_sample("OpportunityClosedWon");
    bad["detail"].as_object_mut().unwrap().remove("correlation_id");
    bad["detail"]["payload"]["revision"] = json!("three");
    st.publish(&[bad]).await;
    let parked = || async { !st.platform().store.rejections(10).await.unwrap().is_empty() };
    st.run_until(Duration::from_secs(30), parked).await;
    let rows = st.platform().store.rejections(10).await.unwrap();
    assert_eq!(rows.len(), 1);
    let r = &rows[0];
    assert_eq!((r.step.as_str(), r.error_type.as_str()), ("intake", "O2c.Validation"));
    assert_eq!(r.engagement_id.as_deref(), Some(GLOBEX));
    assert!(r.reasons.iter().any(|i| i.field == "payload.revision"), "{:?}", r.reasons);
    assert!(r.reasons.iter().any(|i| i.message.contains("correlation_id")), "{:?}", r.reasons);
    assert!(st.status(GLOBEX).await.is_none(), "nothing was processed");
}

fn fast() -> ServiceConfig {
    let mut c = ServiceConfig::default();
    c.connector_retry.base = Duration::from_millis(2);
    c.connector_retry.cap = Duration::from_millis(20);
    c
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn when_a_message_exhausts_its_receives_on_aws_should_raise_the_exception_show_it_on_the_crm_and_recover_on_redrive() {
    let st = Stage::with(fast()).await;
    st.sims.inject(System::Erp, "create_project", o2c_embedded::sim::Fault::ServerError { status: 503 }, None).await.unwrap();
    st.publish(&[read_sample("OpportunityClosedWon"), read_sample("ContractApproved")]).await;
    let sqs = aws_sdk_sqs::Client::new(&st.sdk);
    let dlq = st.deployed.queue_urls["ProvisionDLQ"].clone();
    let visible = || async {
        let crm_error = st.sims.opportunity("0068d00000GLBX01").await.unwrap().is_some_and(|(_, u)| u.sync_status == "Error");
        crm_error && o2c_aws::ops::depth(&sqs, &dlq).await.unwrap().0 == 1
    };
    st.run_until(Duration::from_secs(90), visible).await;

    let e = st.platform().store.load(GLOBEX).await.unwrap().unwrap().value;
    assert_eq!(e.status, EngagementStatus::Provisioning);
    assert_eq!(e.claimed_by, None, "the claim is released for a redrive or another event");
    let ex = e.exceptions.iter().find(|x| x.kind == o2c_domain::events::ExceptionKind::DeadLettered).expect("dead-letter exception");
    assert!(ex.open && ex.message.contains("503") && ex.message.contains("ProvisionDLQ"), "{}", ex.message);
    let open = st
        .platform()
        .store
        .list(&o2c_app::ports::EngagementFilter { open_exceptions: true, limit: 10, ..Default::default() })
        .await
        .unwrap();
    assert_eq!(open.iter().map(|s| s.engagement_id.as_str()).collect::<Vec<_>>(), vec![GLOBEX], "in the operators' exception queue");
    let (_, crm) = st.sims.opportunity("0068d00000GLBX01").await.unwrap().unwrap();
    assert!(crm.last_error.unwrap_or_default().contains("503"));

    // The ERP recovers; the redrive provisions on the same keys and closes the exception.
    st.sims.clear_faults().await.unwrap();
    let src = st.deployed.queue_urls["ProvisionQueue"].clone();
    assert_eq!(o2c_aws::ops::redrive(&sqs, &dlq, &src, 10, |_| ()).await.unwrap(), 1);
    let synced = || async { st.sims.opportunity("0068d00000GLBX01").await.unwrap().is_some_and(|(_, u)| u.sync_status == "Synced") };
    st.run_until(Duration::from_secs(60), synced).await;
    let e = st.platform().store.load(GLOBEX).await.unwrap().unwrap().value;
    assert_eq!(e.status, EngagementStatus::Active);
    assert!(!e.has_open_exception(), "{:?}", e.exceptions);
    assert_eq!(st.sims.projects(System::Psa).await.unwrap().len(), 1, "the same PSA project, not a second one");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn when_a_duplicate_meets_an_in_progress_record_on_aws_should_come_back_in_seconds_not_after_the_visibility_timeout() {
    let st = Stage::with(fast()).await;
    // The ERP is slow on the billing schedule: the first billing-setup invocation holds its
    // record for 4 s, while a duplicate approval re-publishes ProjectProvisioned.
    st.sims.inject(System::Erp, "create_billing_schedule", o2c_embedded::sim::Fault::Latency { ms: 4000 }, Some(1)).await.unwrap();
    let approved = read_sample("ContractApproved");
    st.publish(&[read_sample("OpportunityClosedWon"), approved.clone()]).await;
    // No failure_visibility override: a failed record waits out the queue's 180 s
    // visibility timeout unless the handler's hint brings it back sooner.
    let poller = st.poller_with(PollerOptions { wait_time_secs: 1, max_concurrency: 2, failure_visibility: None });
    let (tx, rx) = watch::channel(false);
    let mut set = poller.start(rx);
    let key = "billing-setup#project-provisioned:ENG-0068d00000GLBX01";
    let started = Instant::now();
    loop {
        let rec = st.platform().store.get(key).await.unwrap();
        if rec.is_some_and(|r| r.status == o2c_app::ports::IdempotencyStatus::InProgress) {
            break;
        }
        assert!(started.elapsed() < Duration::from_secs(30), "billing setup never started");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // While billing setup holds its record, the CLM re-sends the approval.
    st.publish(&[approved]).await;
    let sqs = aws_sdk_sqs::Client::new(&st.sdk);
    let resent = Instant::now();
    loop {
        let done = st.status(GLOBEX).await == Some(EngagementStatus::Active)
            && o2c_aws::poller::pending(&sqs, &st.topo, &st.deployed).await.unwrap() == 0;
        if done {
            break;
        }
        assert!(resent.elapsed() < Duration::from_secs(60), "the duplicate waited for the visibility timeout");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let took = resent.elapsed();
    let _ = tx.send(true);
    while set.join_next().await.is_some() {}
    let hinted = poller.stats().hinted.load(std::sync::atomic::Ordering::Relaxed);
    assert!(hinted >= 1, "the duplicate met the in-progress record and was brought back by a hint");
    assert_eq!(st.sims.billing_schedules().await.unwrap().len(), 1);
    let creates = st.sims.calls().await.unwrap().into_iter().filter(|c| c.operation == "create_billing_schedule").count();
    assert_eq!(creates, 1, "the duplicate was answered from the idempotency record, not by calling the ERP");
    println!("duplicate behind an in-progress record: {hinted} hint(s), drained {took:?} after the re-send (visibility timeout 180 s)");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn when_the_dynamodb_store_runs_the_conformance_suite_should_pass_every_case() {
    let st = Stage::new().await;
    o2c_app::conformance::run_all(&st.platform().store, &format!("ddb-{}", st.deployed.bus_name)).await;
    o2c_app::conformance::size_budgets(&st.platform().store, &format!("ddb-size-{}", st.deployed.bus_name)).await;
    o2c_app::conformance::operator_log(&st.platform().store, &format!("ddb-oplog-{}", st.deployed.bus_name)).await;
    // Two containers on one table: each its own client.
    let other = |sdk| o2c_aws::dynamo::DynamoStore::new(aws_sdk_dynamodb::Client::new(sdk), st.deployed.tables.clone());
    o2c_app::conformance::two_handles(&other(&st.sdk), &other(&st.sdk), &format!("ddb-two-{}", st.deployed.bus_name)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn when_connectors_speak_http_should_tax_and_post_invoices_through_the_system_api_contract() {
    let st = Stage::new().await;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let app = o2c_embedded::sim_http::router(st.sims.clone());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    let t = o2c_connectors::Timeouts::default();
    let conn = |sys: System| {
        o2c_connectors::HttpConnector::new(sys, &format!("http://{addr}/{}", sys.as_str()), Some("test-token".into()), t).unwrap()
    };
    let platform = o2c_aws::platform::with_connectors(
        &st.sdk,
        Tables { state: st.deployed.tables.state.clone(), idempotency: st.deployed.tables.idempotency.clone() },
        st.deployed.bus_name.clone(),
        Duration::from_secs(60),
        o2c_aws::platform::Connectors {
            crm: o2c_connectors::HttpCrm(conn(System::Crm)),
            psa: o2c_connectors::HttpPsa(conn(System::Psa)),
            erp: o2c_connectors::HttpErp(conn(System::Erp)),
            tax: o2c_connectors::HttpTax(conn(System::Tax)),
        },
    );
    let svc = StepService::new(platform, ServiceConfig::default());
    let decode = |v: &Value| o2c_app::contracts::decode(v["detail-type"].as_str().unwrap(), &v["detail"]).unwrap();
    let deadline = chrono::Utc::now() + chrono::Duration::seconds(60);
    let handle =
        async |step: Step, ev: &o2c_domain::events::BusinessEvent| Box::pin(svc.handle(step, ev, &o2c_app::Delivery::once(deadline))).await;
    handle(Step::Intake, &decode(&read_sample("OpportunityClosedWon"))).await.unwrap();
    handle(Step::Provision, &decode(&read_sample("ContractApproved"))).await.unwrap();
    let eng = st.platform().store.load(GLOBEX).await.unwrap().unwrap().value;
    let mut provisioned = read_sample("ProjectProvisioned");
    provisioned["detail"]["payload"]["psa_project_id"] = json!(eng.psa_project_id.clone().unwrap());
    provisioned["detail"]["payload"]["erp_project_id"] = json!(eng.erp_project_id.clone().unwrap());
    handle(Step::BillingSetup, &decode(&provisioned)).await.unwrap();
    let mut completed = read_sample("MilestoneCompleted");
    completed["detail"]["payload"]["psa_project_id"] = json!(eng.psa_project_id.clone().unwrap());
    handle(Step::DeliveryIntake, &decode(&completed)).await.unwrap();

    // The tax engine answers 429 with Retry-After 1 s, then refuses with a 422: a refusal is
    // a result (an exception on the engagement), not a retry.
    st.sims.inject(System::Tax, "calculate_tax", o2c_embedded::sim::Fault::RateLimited { retry_after_ms: 1000 }, Some(1)).await.unwrap();
    st.sims
        .inject(
            System::Tax,
            "calculate_tax",
            o2c_embedded::sim::Fault::Rejected { status: 422, code: "INVALID_ADDRESS".into(), message: "no geocode".into() },
            Some(1),
        )
        .await
        .unwrap();
    let mut run = read_sample("InvoiceRunRequested");
    let p = &mut run["detail"]["payload"];
    (p["engagement_id"], p["scheduled"], p["as_of"], p["requested_by"]) =
        (json!(GLOBEX), json!(false), json!("2027-03-01"), json!("U-BILL-01"));
    assert_eq!(handle(Step::InvoiceRun, &decode(&run)).await.unwrap().action, "tax_failed");
    let e = st.platform().store.load(GLOBEX).await.unwrap().unwrap().value;
    assert!(e.exceptions.iter().any(|x| x.open && x.message.contains("INVALID_ADDRESS")), "{:?}", e.exceptions);
    let tax_calls: Vec<String> = st.sims.calls().await.unwrap().into_iter().filter(|c| c.system == "tax").map(|c| c.outcome).collect();
    assert_eq!(tax_calls.len(), 2, "the 429 was retried inside the invocation: {tax_calls:?}");

    // The next run is taxed over HTTP (DE VAT 19 %), approved, numbered and posted; the
    // ERP's answer to the post is lost once — create-or-get on the number finds it.
    run["detail"]["idempotency_key"] = json!("invoice-run:http-2");
    run["detail"]["event_id"] = json!("http-run-2");
    assert_eq!(handle(Step::InvoiceRun, &decode(&run)).await.unwrap().action, "invoice_drafted");
    let invoice = st.platform().store.load_all(o2c_domain::aggregate::AggregateKind::Invoice, GLOBEX).await.unwrap().invoices()[0].clone();
    assert!(invoice.lines.iter().all(|l| l.tax_rate.map(|r| r.to_string()).as_deref() == Some("0.19")), "{:?}", invoice.lines);
    assert_eq!(invoice.tax_total.amount, invoice.lines.iter().map(|l| l.tax.unwrap().amount).sum());
    let mut approve = read_sample("InvoiceApproved");
    approve["detail"]["payload"]["invoice_id"] = json!(invoice.invoice_id);
    handle(Step::InvoiceApproval, &decode(&approve)).await.unwrap();
    st.sims.inject(System::Erp, "post_invoice", o2c_embedded::sim::Fault::TimeoutAfterCommit, Some(1)).await.unwrap();
    let mut released = read_sample("InvoiceReleased");
    released["detail"]["payload"]["invoice_id"] = json!(invoice.invoice_id);
    assert_eq!(handle(Step::InvoicePosting, &decode(&released)).await.unwrap().action, "invoice_posted");
    let posts: Vec<String> =
        st.sims.calls().await.unwrap().into_iter().filter(|c| c.operation == "post_invoice").map(|c| c.outcome).collect();
    assert_eq!(posts, vec!["created".to_owned(), "existing".to_owned()], "the lost answer, then the create-or-get by number");
    let erp = st.sims.invoices().await.unwrap();
    assert_eq!((erp.len(), erp[0].number.as_str()), (1, "LE-DE-01-000001"));
    assert_eq!(erp[0].invoice.total, invoice.total);

    // The bank pays it in full quoting the number; the ERP books the receipt over HTTP and
    // its answer is lost once — create-or-get on the payment id finds it.
    st.sims.inject(System::Erp, "book_receipt", o2c_embedded::sim::Fault::TimeoutAfterCommit, Some(1)).await.unwrap();
    let mut paid = read_sample("PaymentReceived");
    paid["detail"]["payload"]["references"] = json!(["LE-DE-01-000001"]);
    paid["detail"]["payload"]["amount"] = serde_json::to_value(erp[0].invoice.total).unwrap();
    assert_eq!(handle(Step::CashApplication, &decode(&paid)).await.unwrap().action, "payment_applied");
    let books: Vec<String> =
        st.sims.calls().await.unwrap().into_iter().filter(|c| c.operation == "book_receipt").map(|c| c.outcome).collect();
    assert_eq!(books, vec!["created".to_owned(), "existing".to_owned()]);
    let receipts = st.sims.receipts().await.unwrap();
    assert_eq!(receipts.len(), 1);
    assert_eq!(receipts[0].receipt.applications[0].number, "LE-DE-01-000001");
    // Paid in full: the open items hold nothing; the invoice settled onto its reference in
    // DynamoDB, paid.
    let key = o2c_domain::aggregate::AggregateKey::receivables("LE-DE-01", &invoice.customer_id);
    let rec = st.platform().store.load_aggregates(&[key]).await.unwrap().receivables("LE-DE-01", &invoice.customer_id).cloned().unwrap();
    assert!(rec.invoices.is_empty() && rec.balance().values().all(|v| v.is_zero()), "paid in full: {rec:?}");
    let number = o2c_domain::aggregate::AggregateKey::invoice_ref("LE-DE-01", "LE-DE-01-000001");
    let settled =
        st.platform().store.load_aggregates(&[number]).await.unwrap().invoice_ref("LE-DE-01", "LE-DE-01-000001").cloned().unwrap();
    assert_eq!(settled.settled.map(|i| i.status()), Some("paid"), "the paid invoice rests on its reference");

    // The paid invoice onto the CRM over HTTP (upsert by number, version guard), and
    // March's revenue journal into the ERP over HTTP.
    let mut applied_event = read_sample("PaymentApplied");
    let p = &mut applied_event["detail"]["payload"];
    (p["customer_id"], p["applications"][0]["invoice_id"], p["applications"][0]["number"]) =
        (json!(invoice.customer_id), json!(invoice.invoice_id), json!("LE-DE-01-000001"));
    assert_eq!(handle(Step::CrmInvoiceSync, &decode(&applied_event)).await.unwrap().action, "crm_invoices_written");
    let crm = st.sims.crm_invoices().await.unwrap();
    assert_eq!((crm.len(), crm[0].status.as_str(), crm[0].version), (1, "paid", 2), "{crm:?}");
    let mut again = applied_event.clone();
    again["detail"]["event_id"] = json!("late-applied");
    again["detail"]["idempotency_key"] = json!("late-applied");
    handle(Step::CrmInvoiceSync, &decode(&again)).await.unwrap();
    let writes: Vec<String> =
        st.sims.calls().await.unwrap().into_iter().filter(|c| c.operation == "upsert_invoice").map(|c| c.outcome).collect();
    assert_eq!(writes, vec!["upserted".to_owned(), "stale".to_owned()]);
    let mut revenue = read_sample("RevenueRunRequested");
    revenue["detail"]["payload"]["engagement_id"] = json!(GLOBEX);
    assert_eq!(handle(Step::RevenueRecognition, &decode(&revenue)).await.unwrap().action, "revenue_recognized");
    let journals = st.sims.journals().await.unwrap();
    assert_eq!((journals.len(), journals[0].journal.period.to_string()), (1, "2027-03".to_owned()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn when_the_bus_delivery_dlq_is_redriven_on_aws_should_put_its_events_on_the_bus_again_and_keep_the_rest() {
    let st = Stage::with(fast()).await;
    let sqs = aws_sdk_sqs::Client::new(&st.sdk);
    let dlq = st.deployed.queue_urls["EventDeliveryDLQ"].clone();
    // What EventBridge sends to a target's DeadLetterConfig: the event itself.
    sqs.send_message().queue_url(&dlq).message_body(read_sample("OpportunityClosedWon").to_string()).send().await.unwrap();
    sqs.send_message().queue_url(&dlq).message_body("not an event").send().await.unwrap();
    let bus = o2c_aws::eventbridge::EventBridgePublisher::new(aws_sdk_eventbridge::Client::new(&st.sdk), st.deployed.bus_name.clone());
    let (moved, kept) = o2c_aws::ops::redrive_to_bus(&sqs, &dlq, &bus, 10, |_| ()).await.unwrap();
    assert_eq!((moved, kept), (1, 1));
    let created = || async { st.platform().store.load(GLOBEX).await.unwrap().is_some() };
    st.run_until(Duration::from_secs(60), created).await;
    assert!(st.platform().store.load(GLOBEX).await.unwrap().is_some(), "the rules routed the event to intake");
    let (visible, in_flight) = o2c_aws::ops::depth(&sqs, &dlq).await.unwrap();
    assert_eq!(visible + in_flight, 1, "what is not an event stays for an operator");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn when_a_stage_is_bootstrapped_again_should_keep_its_data_take_the_queue_attributes_and_refuse_a_different_table() {
    let st = Stage::new().await;
    let stage = st.deployed.stage.clone();
    // Data in the stage: the reference items.
    let ddb = aws_sdk_dynamodb::Client::new(&st.sdk);
    let count = |t: String| {
        let ddb = ddb.clone();
        async move { ddb.scan().table_name(t).select(aws_sdk_dynamodb::types::Select::Count).send().await.unwrap().count() }
    };
    let before = count(st.deployed.tables.state.clone()).await;
    // Again, with another visibility timeout (a changed template): kept, attributes taken.
    let again = create(&st.sdk, &st.topo, &stage, Some(7)).await.expect("a second bootstrap of the same stage");
    assert_eq!(count(again.tables.state.clone()).await, before, "the table and its items are kept");
    assert_eq!(again.bus_arn, st.deployed.bus_arn);
    let sqs = aws_sdk_sqs::Client::new(&st.sdk);
    let url = &again.queue_urls["IntakeQueue"];
    let attrs = sqs
        .get_queue_attributes()
        .queue_url(url)
        .attribute_names(aws_sdk_sqs::types::QueueAttributeName::VisibilityTimeout)
        .send()
        .await
        .unwrap();
    assert_eq!(attrs.attributes().unwrap()[&aws_sdk_sqs::types::QueueAttributeName::VisibilityTimeout], "7");

    // A table of another shape under a stage's name is refused, naming the difference.
    let other = format!("{stage}x");
    ddb.create_table()
        .table_name(st.topo.table_name("StateTable", &other))
        .billing_mode(aws_sdk_dynamodb::types::BillingMode::PayPerRequest)
        .attribute_definitions(
            aws_sdk_dynamodb::types::AttributeDefinition::builder()
                .attribute_name("id")
                .attribute_type(aws_sdk_dynamodb::types::ScalarAttributeType::S)
                .build()
                .unwrap(),
        )
        .key_schema(
            aws_sdk_dynamodb::types::KeySchemaElement::builder()
                .attribute_name("id")
                .key_type(aws_sdk_dynamodb::types::KeyType::Hash)
                .build()
                .unwrap(),
        )
        .send()
        .await
        .unwrap();
    let err = create(&st.sdk, &st.topo, &other, Some(2)).await.map(|_| ()).unwrap_err();
    assert!(err.to_string().contains("exists with keys"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn when_eleven_engagements_flow_at_once_should_keep_the_crm_writeback_free_of_version_conflicts() {
    // Each step commits the aggregate it owns: the CRM write-back its CRM sync state, not
    // the engagement item provisioning and billing setup are moving at the same time. With
    // 11 engagements in flight (two consumers per queue) the write-back must never lose a
    // commit to the version check; the other steps' conflicts are reported per step.
    let st = Stage::new().await;
    let (cw, approved) = (read_sample("OpportunityClosedWon"), read_sample("ContractApproved"));
    let opps: Vec<String> = (0..11).map(|i| format!("0068d000CONC{i:04}")).collect();
    let mut samples = Vec::new();
    for (i, opp) in opps.iter().enumerate() {
        let mut c = cw.clone();
        c["detail"]["event_id"] = json!(format!("conc-cw-{i}"));
        c["detail"]["idempotency_key"] = json!(format!("crm:opportunity:{opp}:closed-won:r1"));
        c["detail"]["payload"]["opportunity_id"] = json!(opp);
        let mut a = approved.clone();
        a["detail"]["event_id"] = json!(format!("conc-ap-{i}"));
        a["detail"]["idempotency_key"] = json!(format!("clm:agreement:AGR-CONC-{i}:approved"));
        a["detail"]["payload"]["opportunity_id"] = json!(opp);
        a["detail"]["payload"]["clm_agreement_id"] = json!(format!("AGR-CONC-{i}"));
        samples.push(c);
        samples.push(a);
    }
    for chunk in samples.chunks(10) {
        st.publish(chunk).await;
    }
    let all_synced = || async {
        for o in &opps {
            if !st.sims.opportunity(o).await.unwrap().is_some_and(|(_, u)| u.sync_status == "Synced" && u.engagement_status == "active") {
                return false;
            }
        }
        true
    };
    st.run_until(Duration::from_secs(240), all_synced).await;
    let counts = st.platform().store.counts().commits_by_step();
    let (_, writes) = st.platform().store.counts().snapshot();
    let table: Vec<String> = counts.iter().map(|(s, c)| format!("{s:<14} commits={:<3} conflicts={}", c.commits, c.conflicts)).collect();
    println!("{} engagements, {writes} write requests\n{}", opps.len(), table.join("\n"));
    for o in &opps {
        assert_eq!(st.status(&format!("ENG-{o}")).await, Some(EngagementStatus::Active), "{o}");
    }
    let writeback = counts.get("crm-writeback").copied().unwrap_or_default();
    // How many writes a status change takes varies with the interleaving (the write-back
    // sends the engagement's current state, so statuses that pass quickly coalesce): at
    // least one per engagement, and the end state is what the wait above checked.
    assert!(writeback.commits >= opps.len() as u64, "every engagement written back: {table:?}");
    assert_eq!(writeback.conflicts, 0, "the write-back contends with nobody: {table:?}");
    assert_eq!(st.sims.projects(System::Psa).await.unwrap().len(), 11);
}
