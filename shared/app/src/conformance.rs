//! One conformance suite for the store ports, run against every adapter: SQLite
//! (`o2c-embedded`), DynamoDB on moto (`o2c-aws`), and [`crate::memory::MemoryStore`]. Each
//! case uses ids under a prefix of its own, so it can run on a shared table.
//!
//! Compiled with the `conformance` feature (adapter crates enable it for their tests).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, missing_docs)]

use chrono::{DateTime, Duration, Utc};
use o2c_domain::aggregate::{AggregateBody, AggregateKey, CrmSyncState};
use o2c_domain::engagement::{Action, AuditEntry, CrmOpportunityUpdate, CrmSync, CrmWriteResult, Engagement, EngagementStatus};
use o2c_domain::events::Issue;

use crate::error::O2cError;
use crate::idempotency::IdempotencyStatus;
use crate::ports::{
    AggregateWrite, CaseFilter, Commit, CommitOutcome, Completion, CompletionMode, DeliveryFailure, EngagementFilter, EngagementStore,
    ExpectedVersion, IdempotencyStore, KeyWrite, RejectedMessage, RejectionStore, Reservation, ReserveOutcome, StateWrite, StoredResult,
};

/// Everything a store adapter implements.
pub trait Store: EngagementStore + IdempotencyStore + RejectionStore {}
impl<T: EngagementStore + IdempotencyStore + RejectionStore> Store for T {}

fn now() -> DateTime<Utc> {
    // The suite runs against real clocks too (DynamoDB TTL conditions compare with the
    // server's view of time only through our own attributes), so "now" is the wall clock.
    crate::ports::Clock::now(&crate::ports::SystemClock)
}

fn engagement(id: &str, status: EngagementStatus) -> Engagement {
    let mut e = Engagement::new(id.into(), format!("OPP-{id}"), format!("corr-{id}"), now());
    e.status = status;
    e
}

fn audit(id: &str, action: Action) -> AuditEntry {
    AuditEntry {
        engagement_id: id.into(),
        at: now(),
        step: "conformance".into(),
        event_id: format!("evt-{action}"),
        event_type: "Conformance".into(),
        correlation_id: format!("corr-{id}"),
        action,
        summary: String::new(),
    }
}

fn completion(key: &str, hash: &str, mode: CompletionMode) -> KeyWrite {
    KeyWrite::Complete(Completion {
        key: key.into(),
        payload_hash: hash.into(),
        result: StoredResult { action: "done".into(), events: vec![] },
        now: now(),
        expires_at: now() + Duration::hours(1),
        mode,
    })
}

fn reservation(key: &str, hash: &str, until: DateTime<Utc>) -> Reservation {
    Reservation {
        key: key.into(),
        payload_hash: hash.into(),
        now: now(),
        in_progress_until: until,
        expires_at: now() + Duration::hours(1),
        claim: None,
        others: vec![],
    }
}

fn crm(id: &str, version: u64) -> AggregateBody {
    let update = CrmOpportunityUpdate {
        opportunity_id: format!("OPP-{id}"),
        sync_version: version,
        sync_status: "In Progress".into(),
        engagement_status: "contract_created".into(),
        engagement_id: id.into(),
        contract_id: None,
        psa_project_id: None,
        erp_project_id: None,
        erp_billing_schedule_id: None,
        last_error: None,
    };
    AggregateBody::CrmSync(CrmSyncState { engagement_id: id.into(), last: CrmSync { update, result: CrmWriteResult::Ok, at: now() } })
}

/// Runs every case; `prefix` keeps its ids apart from other runs on the same table.
pub async fn run_all<S: Store>(store: &S, prefix: &str) {
    versioned_state(store, &format!("{prefix}-state")).await;
    atomic_multi_aggregate_commit(store, &format!("{prefix}-multi")).await;
    idempotency_lifecycle(store, &format!("{prefix}-idem")).await;
    claims_and_holds(store, &format!("{prefix}-claim")).await;
    listing(store, &format!("{prefix}-list")).await;
    paging_by_id(store, &format!("{prefix}-page")).await;
    reserve_with_aggregates(store, &format!("{prefix}-resagg")).await;
    load_every_aggregate_of_an_owner(store, &format!("{prefix}-all")).await;
    parking(store, &format!("{prefix}-park")).await;
    failures(store, &format!("{prefix}-fail")).await;
    exception_queue(store, &format!("{prefix}-exc")).await;
    written_twice(store, &format!("{prefix}-twice")).await;
}

/// Two handles on one store (two processes on one file, two Lambda containers on one
/// table): what one writes is what the other loads next, whatever either read or wrote before.
pub async fn two_handles<S: Store>(a: &S, b: &S, id: &str) {
    let write = |status, expected| Commit {
        state: Some(StateWrite { engagement: engagement(id, status), expected }),
        others: vec![],
        audit: None,
        key: KeyWrite::Untracked,
    };
    let first = write(EngagementStatus::Active, ExpectedVersion::New);
    assert_eq!(a.commit(first).await.unwrap(), CommitOutcome::Committed { version: Some(1) });
    assert_eq!(a.load(id).await.unwrap().unwrap().version, 1);
    let seen = b.load(id).await.unwrap().unwrap();
    assert_eq!((seen.version, seen.value.status), (1, EngagementStatus::Active), "{id}");
    let second = write(EngagementStatus::BillingSetupFailed, ExpectedVersion::Is(1));
    assert_eq!(b.commit(second).await.unwrap(), CommitOutcome::Committed { version: Some(2) });
    let seen = a.load(id).await.unwrap().unwrap();
    assert_eq!((seen.version, seen.value.status), (2, EngagementStatus::BillingSetupFailed), "{id}: the other handle's write");
    let stale = write(EngagementStatus::Active, ExpectedVersion::Is(1));
    assert_eq!(a.commit(stale).await.unwrap(), CommitOutcome::VersionConflict, "{id}");
    assert_eq!(b.load(id).await.unwrap().unwrap().value.status, EngagementStatus::BillingSetupFailed, "{id}");
}

/// A commit or reservation naming one aggregate twice is a bug, refused before anything is
/// written (the engagement included) — never a silent last-write-wins.
pub async fn written_twice<S: Store>(store: &S, id: &str) {
    let twice = vec![
        AggregateWrite { body: crm(id, 1), expected: ExpectedVersion::New },
        AggregateWrite { body: crm(id, 2), expected: ExpectedVersion::New },
    ];
    let c = Commit {
        state: Some(StateWrite { engagement: engagement(id, EngagementStatus::Active), expected: ExpectedVersion::New }),
        others: twice.clone(),
        audit: Some(audit(id, Action::Activated)),
        key: KeyWrite::Untracked,
    };
    let refused = store.commit(c).await;
    assert!(matches!(&refused, Err(O2cError::Bug(m)) if m.contains("twice")), "{id}: {refused:?}");
    let mut r = reservation(&format!("twice#{id}"), "h", now() + Duration::minutes(5));
    r.others = twice;
    let refused = store.reserve(r).await;
    assert!(matches!(&refused, Err(O2cError::Bug(m)) if m.contains("twice")), "{id}: {refused:?}");
    assert!(store.load(id).await.unwrap().is_none(), "{id}: no engagement written");
    assert!(store.load_aggregates(&[AggregateKey::crm_sync(id)]).await.unwrap().items.is_empty(), "{id}: no aggregate written");
    assert!(store.get(&format!("twice#{id}")).await.unwrap().is_none(), "{id}: the key is not reserved");
}

/// New → version 1; a stale version writes nothing (audit included); the timeline is in order.
pub async fn versioned_state<S: Store>(store: &S, id: &str) {
    assert!(store.load(id).await.unwrap().is_none(), "{id}: absent at first");
    let first = Commit {
        state: Some(StateWrite { engagement: engagement(id, EngagementStatus::ContractCreated), expected: ExpectedVersion::New }),
        others: vec![],
        audit: Some(audit(id, Action::ContractCreated)),
        key: KeyWrite::Untracked,
    };
    assert_eq!(store.commit(first.clone()).await.unwrap(), CommitOutcome::Committed { version: Some(1) });
    assert_eq!(store.commit(first).await.unwrap(), CommitOutcome::VersionConflict, "{id}: New on an existing item");
    let loaded = store.load(id).await.unwrap().unwrap();
    assert_eq!((loaded.version, loaded.value.status), (1, EngagementStatus::ContractCreated));
    let stale = Commit {
        state: Some(StateWrite { engagement: engagement(id, EngagementStatus::Active), expected: ExpectedVersion::Is(7) }),
        others: vec![],
        audit: Some(audit(id, Action::Rejected)),
        key: KeyWrite::Untracked,
    };
    assert_eq!(store.commit(stale).await.unwrap(), CommitOutcome::VersionConflict);
    let second = Commit {
        state: Some(StateWrite { engagement: engagement(id, EngagementStatus::Provisioning), expected: ExpectedVersion::Is(1) }),
        others: vec![],
        audit: Some(audit(id, Action::Provisioned)),
        key: KeyWrite::Untracked,
    };
    assert_eq!(store.commit(second).await.unwrap(), CommitOutcome::Committed { version: Some(2) });
    let trail: Vec<Action> = store.audit_trail(id).await.unwrap().into_iter().map(|a| a.action).collect();
    assert_eq!(trail, vec![Action::ContractCreated, Action::Provisioned], "{id}: a refused commit writes no audit entry");
}

/// The engagement and another aggregate commit together or not at all.
pub async fn atomic_multi_aggregate_commit<S: Store>(store: &S, id: &str) {
    let key = AggregateKey::crm_sync(id);
    let both = Commit {
        state: Some(StateWrite { engagement: engagement(id, EngagementStatus::Active), expected: ExpectedVersion::New }),
        others: vec![AggregateWrite { body: crm(id, 1), expected: ExpectedVersion::New }],
        audit: Some(audit(id, Action::Activated)),
        key: KeyWrite::Untracked,
    };
    assert!(matches!(store.commit(both).await.unwrap(), CommitOutcome::Committed { .. }));
    let loaded = store.load_aggregates(std::slice::from_ref(&key)).await.unwrap();
    assert_eq!(loaded.version(&key), Some(1));
    assert_eq!(loaded.crm_sync(id).unwrap().last.update.sync_version, 1);
    // The engagement's version is right, the other aggregate's is stale: nothing is written.
    let torn = Commit {
        state: Some(StateWrite { engagement: engagement(id, EngagementStatus::BillingSetupFailed), expected: ExpectedVersion::Is(1) }),
        others: vec![AggregateWrite { body: crm(id, 9), expected: ExpectedVersion::Is(5) }],
        audit: Some(audit(id, Action::BillingSetupFailed)),
        key: KeyWrite::Untracked,
    };
    assert_eq!(store.commit(torn).await.unwrap(), CommitOutcome::VersionConflict);
    assert_eq!(store.load(id).await.unwrap().unwrap().value.status, EngagementStatus::Active, "{id}: no torn write");
    assert_eq!(store.load_aggregates(std::slice::from_ref(&key)).await.unwrap().crm_sync(id).unwrap().last.update.sync_version, 1);
    // The other aggregate alone, at its version.
    let only = Commit {
        state: None,
        others: vec![AggregateWrite { body: crm(id, 2), expected: ExpectedVersion::Is(1) }],
        audit: None,
        key: KeyWrite::Untracked,
    };
    assert_eq!(store.commit(only).await.unwrap(), CommitOutcome::Committed { version: None });
    assert_eq!(store.load_aggregates(std::slice::from_ref(&key)).await.unwrap().version(&key), Some(2));
    assert!(store.load_aggregates(&[AggregateKey::crm_sync(&format!("{id}-none"))]).await.unwrap().items.is_empty());
}

/// Size budgets hold on the stored form (persisting stores; the memory store keeps no bytes):
/// a compressed kind whose JSON is over its budget but whose gzip is under is stored and
/// read back whole; one over even compressed is refused, as is a plain kind over its budget
/// — a `bug`, never a silent truncation.
pub async fn size_budgets<S: Store>(store: &S, id: &str) {
    use o2c_domain::aggregate::AggregateKind;
    use o2c_domain::delivery::{Assignment, Assignments};
    use o2c_domain::money::{Currency, Money};
    use o2c_domain::receivables::{OpenItem, Receivables};
    let day = chrono::NaiveDate::from_ymd_opt(2027, 1, 1).unwrap();
    let eur = Currency::parse("EUR").unwrap();
    let receivables = |n: usize, salt: &dyn Fn(usize) -> String| {
        let invoices = (0..n)
            .map(|i| {
                let item = OpenItem {
                    invoice_id: format!("INV-{id}-{i}-{}", salt(i)),
                    number: format!("LE-X-{i:06}"),
                    engagement_id: o2c_domain::ids::EngagementId::for_opportunity(id),
                    issue_date: day,
                    due_date: day,
                    total: Money::new(rust_decimal::Decimal::new(100_000, 2), eur),
                    applied: Money::zero(eur),
                    version: 1,
                };
                (item.invoice_id.clone(), item)
            })
            .collect();
        AggregateBody::Receivables(Receivables {
            legal_entity_id: format!("LE-{id}"),
            customer_id: "CUST-1".into(),
            invoices,
            payments: Default::default(),
            issues: vec![],
            credits: Default::default(),
            invoiced: Default::default(),
        })
    };
    let budget = AggregateKind::Receivables.budget_bytes();
    let write = |body: AggregateBody| Commit {
        state: None,
        others: vec![AggregateWrite { body, expected: ExpectedVersion::New }],
        audit: None,
        key: KeyWrite::Untracked,
    };
    // Repetitive: well over the budget as JSON, a fraction of it compressed.
    let big = receivables(3_000, &|_| String::new());
    assert!(serde_json::to_vec(&big).unwrap().len() > budget, "{id}: the case must exceed the budget as JSON");
    let key = big.key();
    assert_eq!(store.commit(write(big.clone())).await.unwrap(), CommitOutcome::Committed { version: None });
    assert_eq!(store.load_aggregates(std::slice::from_ref(&key)).await.unwrap().get(&key), Some(&big), "{id}: read back whole");
    // Incompressible (five hashes per item): over the budget even compressed.
    let noise = |i: usize| {
        use sha2::Digest;
        (0..5).map(|k| hex::encode(sha2::Sha256::digest(format!("{id}-{i}-{k}")))).collect::<String>()
    };
    let mut worse = receivables(3_000, &noise);
    if let AggregateBody::Receivables(r) = &mut worse {
        r.legal_entity_id = format!("LE-{id}-noise");
    }
    let refused = store.commit(write(worse)).await.expect_err("over the budget compressed");
    assert_eq!(refused.error_type(), "O2c.Bug", "{id}: {refused}");
    // A plain kind is measured as it is.
    let by_id = (0..2_000)
        .map(|i| {
            let a = Assignment {
                assignment_id: format!("AS-{i}"),
                resource_id: format!("EMP-{i}"),
                role: "CONSULTANT".into(),
                start_date: day,
                end_date: day,
                cancelled: false,
                version: 1,
            };
            (a.assignment_id.clone(), a)
        })
        .collect();
    let plain = AggregateBody::Assignments(Assignments { engagement_id: o2c_domain::ids::EngagementId::for_opportunity(id), by_id });
    assert!(serde_json::to_vec(&plain).unwrap().len() > AggregateKind::Assignments.budget_bytes());
    assert_eq!(store.commit(write(plain)).await.expect_err("over its budget").error_type(), "O2c.Bug");
}

/// Reserve → in progress → complete; duplicates, conflicts, release and take-over.
pub async fn idempotency_lifecycle<S: Store>(store: &S, id: &str) {
    let key = format!("step#{id}");
    let until = now() + Duration::minutes(5);
    assert!(store.get(&key).await.unwrap().is_none());
    assert_eq!(store.reserve(reservation(&key, "h1", until)).await.unwrap(), ReserveOutcome::Reserved { claimed_version: None });
    let rec = store.get(&key).await.unwrap().unwrap();
    assert_eq!(rec.status, IdempotencyStatus::InProgress);
    assert!(rec.is_live(now()));
    match store.reserve(reservation(&key, "h1", until)).await.unwrap() {
        // The holder's deadline comes back (to the second: DynamoDB stores epoch seconds).
        ReserveOutcome::InProgress { until: Some(t) } => assert!((t - until).num_seconds().abs() <= 1, "{t} vs {until}"),
        other => panic!("held: {other:?}"),
    }
    assert!(matches!(store.reserve(reservation(&key, "h2", until)).await.unwrap(), ReserveOutcome::PayloadMismatch { .. }));
    // Release deletes our in-progress record only.
    store.release(&key).await.unwrap();
    assert!(store.get(&key).await.unwrap().is_none(), "{key}: released");
    // A holder past its deadline is taken over.
    let dead = now() - Duration::seconds(5);
    assert!(matches!(store.reserve(reservation(&key, "h1", dead)).await.unwrap(), ReserveOutcome::Reserved { .. }));
    assert!(matches!(store.reserve(reservation(&key, "h1", until)).await.unwrap(), ReserveOutcome::Reserved { .. }), "take-over");
    let done = Commit {
        state: None,
        others: vec![],
        audit: Some(audit(id, Action::CrmUpdated)),
        key: completion(&key, "h1", CompletionMode::Reserved),
    };
    assert!(matches!(store.commit(done).await.unwrap(), CommitOutcome::Committed { .. }));
    let rec = store.get(&key).await.unwrap().unwrap();
    assert_eq!(rec.status, IdempotencyStatus::Completed);
    assert_eq!(rec.result.unwrap().action, "done");
    assert!(matches!(store.reserve(reservation(&key, "h1", until)).await.unwrap(), ReserveOutcome::AlreadyCompleted(_)));
    store.release(&key).await.unwrap();
    assert!(store.get(&key).await.unwrap().is_some(), "{key}: release never deletes a completed record");
    // A fresh completion on a live key answers with the record instead of overwriting it.
    let again = Commit {
        state: None,
        others: vec![],
        audit: Some(audit(id, Action::CrmAlreadyCurrent)),
        key: completion(&key, "h1", CompletionMode::Fresh),
    };
    assert!(matches!(store.commit(again).await.unwrap(), CommitOutcome::AlreadyCompleted(_)));
    // Completing a reservation we do not hold is refused.
    let other = format!("step#{id}-never-reserved");
    let lost = Commit { state: None, others: vec![], audit: None, key: completion(&other, "h1", CompletionMode::Reserved) };
    assert_eq!(store.commit(lost).await.unwrap(), CommitOutcome::ReservationLost);
}

/// A claim is written with the reservation or not at all; a checkpoint needs the reservation.
pub async fn claims_and_holds<S: Store>(store: &S, id: &str) {
    let key = format!("provision#{id}");
    let mut r = reservation(&key, "h", now() + Duration::minutes(5));
    r.claim = Some(StateWrite { engagement: engagement(id, EngagementStatus::Provisioning), expected: ExpectedVersion::Is(3) });
    assert_eq!(store.reserve(r.clone()).await.unwrap(), ReserveOutcome::StateConflict);
    assert!(store.get(&key).await.unwrap().is_none(), "{key}: a refused claim reserves nothing");
    assert!(store.load(id).await.unwrap().is_none());
    r.claim = Some(StateWrite { engagement: engagement(id, EngagementStatus::Provisioning), expected: ExpectedVersion::New });
    assert_eq!(store.reserve(r).await.unwrap(), ReserveOutcome::Reserved { claimed_version: Some(1) });
    assert_eq!(store.load(id).await.unwrap().unwrap().value.status, EngagementStatus::Provisioning);
    let hold = |status, v| Commit {
        state: Some(StateWrite { engagement: engagement(id, status), expected: ExpectedVersion::Is(v) }),
        others: vec![],
        audit: Some(audit(id, Action::ProvisioningFailed)),
        key: KeyWrite::Hold { key: key.clone(), payload_hash: "h".into() },
    };
    assert_eq!(store.commit(hold(EngagementStatus::ProvisioningFailed, 1)).await.unwrap(), CommitOutcome::Committed { version: Some(2) });
    assert_eq!(store.get(&key).await.unwrap().unwrap().status, IdempotencyStatus::InProgress, "a checkpoint keeps the key reserved");
    store.release(&key).await.unwrap();
    assert_eq!(store.commit(hold(EngagementStatus::Active, 2)).await.unwrap(), CommitOutcome::ReservationLost);
    assert_eq!(store.load(id).await.unwrap().unwrap().value.status, EngagementStatus::ProvisioningFailed, "nothing written");
}

/// Operators list by status and by open exception.
pub async fn listing<S: Store>(store: &S, id: &str) {
    let mut open = engagement(&format!("{id}-open"), EngagementStatus::ProvisioningFailed);
    open.raise(o2c_domain::engagement::EngagementException {
        exception_id: format!("EXC-{id}").into(),
        kind: o2c_domain::events::ExceptionKind::ProvisioningFailed,
        step: "provision".into(),
        message: "refused".into(),
        compensations: vec![],
        raised_at: now(),
        open: true,
        event_id: None,
        closed_at: None,
        resolution: None,
        announce_pending: false,
        amount_at_stake: None,
        caused_by: Vec::new(),
    });
    for e in [open, engagement(&format!("{id}-quiet"), EngagementStatus::AwaitingContract)] {
        let c = Commit {
            state: Some(StateWrite { engagement: e, expected: ExpectedVersion::New }),
            others: vec![],
            audit: None,
            key: KeyWrite::Untracked,
        };
        assert!(matches!(store.commit(c).await.unwrap(), CommitOutcome::Committed { .. }));
    }
    let open = store.list(&EngagementFilter { open_exceptions: true, limit: 1000, ..Default::default() }).await.unwrap();
    assert!(open.iter().any(|r| r.engagement_id == format!("{id}-open") && r.open_exception));
    assert!(!open.iter().any(|r| r.engagement_id == format!("{id}-quiet")));
    let waiting =
        store.list(&EngagementFilter { status: Some("awaiting_contract".into()), limit: 1000, ..Default::default() }).await.unwrap();
    assert!(waiting.iter().any(|r| r.engagement_id == format!("{id}-quiet")));
    assert!(waiting.iter().all(|r| r.status == "awaiting_contract"));
}

/// Paging by id walks every match once, in id order.
pub async fn paging_by_id<S: Store>(store: &S, id: &str) {
    let ids: Vec<String> = (0..5).map(|i| format!("{id}-{i}")).collect();
    for i in &ids {
        let c = Commit {
            state: Some(StateWrite { engagement: engagement(i, EngagementStatus::BillingSetupFailed), expected: ExpectedVersion::New }),
            others: vec![],
            audit: None,
            key: KeyWrite::Untracked,
        };
        assert!(matches!(store.commit(c).await.unwrap(), CommitOutcome::Committed { .. }));
    }
    let mut seen = Vec::new();
    let mut after = format!("{id}-");
    loop {
        let page = store
            .list(&EngagementFilter {
                status: Some("billing_setup_failed".into()),
                limit: 2,
                after: Some(after.clone()),
                ..Default::default()
            })
            .await
            .unwrap();
        let mine: Vec<String> = page.iter().map(|r| r.engagement_id.clone()).filter(|e| e.starts_with(id)).collect();
        if mine.is_empty() {
            break;
        }
        assert!(page.len() <= 2);
        after = mine.last().cloned().unwrap();
        seen.extend(mine);
    }
    assert_eq!(seen, ids, "every engagement once, in id order");
}

/// Aggregates claimed with a reservation are written with it, conditionally: a stale one
/// and neither the key nor anything else is written.
pub async fn reserve_with_aggregates<S: Store>(store: &S, id: &str) {
    use o2c_domain::invoicing::InvoiceCounter;
    let le = format!("LE-{id}");
    let counter = |last| AggregateBody::InvoiceCounter(InvoiceCounter { legal_entity_id: le.clone(), last });
    let mut r = reservation(&format!("post#{id}-a"), "h", now() + Duration::minutes(5));
    r.others = vec![
        AggregateWrite { body: counter(1), expected: ExpectedVersion::New },
        AggregateWrite { body: crm(id, 1), expected: ExpectedVersion::New },
    ];
    assert_eq!(store.reserve(r).await.unwrap(), ReserveOutcome::Reserved { claimed_version: None });
    let key = AggregateKey::invoice_counter(&le);
    let loaded = store.load_aggregates(&[key.clone(), AggregateKey::crm_sync(id)]).await.unwrap();
    assert_eq!(loaded.invoice_counter(&le).map(|c| c.last), Some(1));
    assert_eq!(loaded.version(&key), Some(1));
    assert!(loaded.crm_sync(id).is_some(), "both claimed aggregates written");
    // A second reservation that read the counter before the first: refused, nothing written.
    let mut stale = reservation(&format!("post#{id}-b"), "h", now() + Duration::minutes(5));
    stale.others = vec![AggregateWrite { body: counter(1), expected: ExpectedVersion::New }];
    assert_eq!(store.reserve(stale).await.unwrap(), ReserveOutcome::StateConflict);
    assert!(store.get(&format!("post#{id}-b")).await.unwrap().is_none(), "the key is not reserved either");
    let mut next = reservation(&format!("post#{id}-b"), "h", now() + Duration::minutes(5));
    next.others = vec![AggregateWrite { body: counter(2), expected: ExpectedVersion::Is(1) }];
    assert_eq!(store.reserve(next).await.unwrap(), ReserveOutcome::Reserved { claimed_version: None });
    assert_eq!(store.load_aggregates(std::slice::from_ref(&key)).await.unwrap().invoice_counter(&le).map(|c| c.last), Some(2));
}

/// `load_all` returns every aggregate of one kind under one owner, and nothing else.
pub async fn load_every_aggregate_of_an_owner<S: Store>(store: &S, id: &str) {
    use o2c_domain::aggregate::AggregateKind;
    use o2c_domain::delivery::WipShard;
    let shard = |owner: &str, n: u16| AggregateWrite {
        body: AggregateBody::WipShard(WipShard::new(owner.into(), n)),
        expected: ExpectedVersion::New,
    };
    let other = format!("{id}-other");
    let c = Commit {
        state: None,
        others: vec![
            shard(id, 0),
            shard(id, 7),
            shard(id, 31),
            shard(&other, 7),
            AggregateWrite { body: crm(id, 1), expected: ExpectedVersion::New },
        ],
        audit: None,
        key: KeyWrite::Untracked,
    };
    assert!(matches!(store.commit(c).await.unwrap(), CommitOutcome::Committed { .. }));
    let all = store.load_all(AggregateKind::WipShard, id).await.unwrap();
    assert_eq!(all.wip_shards().keys().copied().collect::<Vec<_>>(), vec![0, 7, 31]);
    assert!(all.items.iter().all(|a| a.version == 1));
    assert_eq!(store.load_all(AggregateKind::WipShard, &other).await.unwrap().items.len(), 1);
}

/// Exception cases: listed newest first, open-only leaves closed ones out, and a case that
/// closes leaves the open list (its index entry moves with it).
pub async fn exception_queue<S: Store>(store: &S, id: &str) {
    use o2c_domain::events::{ExceptionAction, ExceptionKind, ExceptionRaised};
    use o2c_domain::exception_case::{CaseStatus, ExceptionCase};
    let case = |n: u32, minutes: i64| {
        let raised = ExceptionRaised {
            exception_id: o2c_domain::ids::ExceptionId::new(format!("EXC-{id}-{n}")),
            engagement_id: id.into(),
            kind: ExceptionKind::TaxFailed,
            step: "invoice-run".into(),
            message: format!("case {n}"),
            compensations: vec![],
            raised_at: Some(now() + Duration::minutes(minutes)),
            legal_entity_id: Some("LE-DE-01".into()),
            amount_at_stake: None,
            caused_by: vec![],
            source_event: None,
        };
        ExceptionCase::raised(&raised, "corr", now())
    };
    let mine = |cases: Vec<ExceptionCase>| -> Vec<String> {
        cases.into_iter().map(|c| c.exception_id.to_string()).filter(|x| x.starts_with(&format!("EXC-{id}-"))).collect()
    };
    let (first, second, mut third) = (case(1, 1), case(2, 2), case(3, 3));
    third.act(&ExceptionAction::Waive { reason: "immaterial".into() }, "ops", now());
    assert_eq!(third.status, CaseStatus::Waived);
    let write = |c: &ExceptionCase, expected| AggregateWrite { body: AggregateBody::ExceptionCase(c.clone()), expected };
    let c = Commit {
        state: None,
        others: vec![write(&first, ExpectedVersion::New), write(&second, ExpectedVersion::New), write(&third, ExpectedVersion::New)],
        audit: None,
        key: KeyWrite::Untracked,
    };
    assert!(matches!(store.commit(c).await.unwrap(), CommitOutcome::Committed { .. }));
    let all = mine(store.exception_cases(&CaseFilter { open_only: false, status: None, limit: 0 }).await.unwrap());
    assert_eq!(all, vec![format!("EXC-{id}-3"), format!("EXC-{id}-2"), format!("EXC-{id}-1")], "{id}: newest raised first");
    let open = mine(store.exception_cases(&CaseFilter { open_only: true, status: None, limit: 0 }).await.unwrap());
    assert_eq!(open, vec![format!("EXC-{id}-2"), format!("EXC-{id}-1")], "{id}: the waived case is not in the queue");
    let waived = mine(store.exception_cases(&CaseFilter { open_only: false, status: Some(CaseStatus::Waived), limit: 0 }).await.unwrap());
    assert_eq!(waived, vec![format!("EXC-{id}-3")], "{id}: one status");
    let mut resolved = second.clone();
    resolved.act(&ExceptionAction::Resolve { reason: "fixed".into() }, "ops", now());
    let c = Commit { state: None, others: vec![write(&resolved, ExpectedVersion::Is(1))], audit: None, key: KeyWrite::Untracked };
    assert!(matches!(store.commit(c).await.unwrap(), CommitOutcome::Committed { .. }));
    let open = mine(store.exception_cases(&CaseFilter { open_only: true, status: None, limit: 0 }).await.unwrap());
    assert_eq!(open, vec![format!("EXC-{id}-1")], "{id}: a closed case leaves the queue");
    let resolved =
        mine(store.exception_cases(&CaseFilter { open_only: false, status: Some(CaseStatus::Resolved), limit: 0 }).await.unwrap());
    assert_eq!(resolved, vec![format!("EXC-{id}-2")], "{id}: its index entry moved with it");
    let key = AggregateKey::exception_case(&format!("EXC-{id}-2"));
    let loaded = store.load_aggregates(std::slice::from_ref(&key)).await.unwrap();
    assert_eq!(loaded.version(&key), Some(2));
    assert_eq!(loaded.exception_case(&format!("EXC-{id}-2")).map(|c| c.status), Some(CaseStatus::Resolved));
}

fn parked(id: &str, rejection_id: &str, message_id: &str) -> RejectedMessage {
    RejectedMessage {
        rejection_id: rejection_id.into(),
        step: "intake".into(),
        rejected_at: now(),
        last_rejected_at: None,
        deliveries: 1,
        message_ids: vec![message_id.into()],
        source: Some("o2c.crm".into()),
        detail_type: Some("OpportunityClosedWon".into()),
        event_id: Some(format!("evt-{id}")),
        correlation_id: None,
        engagement_id: Some(id.into()),
        error_type: "O2c.Validation".into(),
        reasons: vec![Issue::new("payload.revision", "invalid_detail", "not a number")],
        body: format!("{{\"id\":\"{id}\"}}"),
    }
}

/// Distinct bodies never collide; a repeat counts its new message id once.
pub async fn parking<S: Store>(store: &S, id: &str) {
    let a = format!("intake#{id}-a");
    let b = format!("intake#{id}-b");
    store.park(&parked(id, &a, "m1")).await.unwrap();
    store.park(&parked(id, &b, "m2")).await.unwrap();
    store.park(&parked(id, &a, "m3")).await.unwrap();
    store.park(&parked(id, &a, "m3")).await.unwrap();
    let rows = store.rejections(500).await.unwrap();
    let ra = rows.iter().find(|r| r.rejection_id == a).expect("first parked");
    let rb = rows.iter().find(|r| r.rejection_id == b).expect("second parked");
    assert_eq!(ra.deliveries, 2, "{a}: a repeat counts, a redelivery of the same message does not");
    assert!(ra.message_ids.contains(&"m1".to_owned()) && ra.message_ids.contains(&"m3".to_owned()));
    assert!(ra.last_rejected_at.is_some());
    assert_eq!(rb.deliveries, 1);
}

/// The last failure of a message is kept under its message id.
pub async fn failures<S: Store>(store: &S, id: &str) {
    let f = DeliveryFailure {
        message_id: format!("msg-{id}"),
        step: "provision".into(),
        error_type: "O2c.Dependency".into(),
        error: "erp unavailable: 503".into(),
        receive_count: 3,
        at: now(),
    };
    store.record_failure(&f).await.unwrap();
    let got = store.failure(&f.message_id).await.unwrap().expect("recorded");
    assert_eq!((got.error_type.as_str(), got.receive_count), ("O2c.Dependency", 3));
    assert!(got.error.contains("503"));
    assert!(store.failure(&format!("msg-{id}-none")).await.unwrap().is_none());
}

/// The operator log: actions come back newest first, whole, at most `limit`; `prefix` names
/// this run's operator so other runs on a shared table are left out.
pub async fn operator_log<L: crate::ports::OperatorLog>(log: &L, prefix: &str) {
    use crate::ports::OperatorAction;
    let actor = format!("{prefix}-op");
    let t0 = now();
    let at = |s: i64| t0 + Duration::seconds(s);
    let action = |n: i64, what: &str| OperatorAction {
        at: at(n),
        actor: actor.clone(),
        key_id: "k1".into(),
        action: what.into(),
        object: (n > 0).then(|| format!("EXC-{n}")),
        outcome: format!("done {n}"),
        remote: Some("127.0.0.1:5000".into()),
    };
    for (n, what) in [(0, "login"), (1, "exception.resolve"), (2, "dlq.redrive")] {
        log.record_action(&action(n, what)).await.expect("record");
    }
    let mine = |all: Vec<OperatorAction>| all.into_iter().filter(|a| a.actor == actor).collect::<Vec<_>>();
    let latest = mine(log.operator_actions(1000).await.expect("read"));
    assert_eq!(latest, vec![action(2, "dlq.redrive"), action(1, "exception.resolve"), action(0, "login")], "newest first, whole");
    let two = log.operator_actions(2).await.expect("read");
    assert!(two.len() <= 2, "at most the limit");
}

#[cfg(test)]
mod tests {
    #[tokio::test]
    async fn when_the_memory_store_runs_the_conformance_suite_should_pass_every_case() {
        let store = crate::memory::MemoryStore::new();
        super::run_all(&store, "mem").await;
        super::two_handles(&store, &store, "mem-two").await;
    }
}
