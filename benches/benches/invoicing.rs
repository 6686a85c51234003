//! An invoice run for one engagement with 10,000 approved time entries (spread over the 32
//! WIP shards, two roles, one T&M line), in one run so the parts compare as ratios:
//!
//! - `build_draft`: grouping the entries into lines (pure);
//! - `decide`: the step's decision (draft + tax request) on loaded state (pure);
//! - `finalize`: re-deriving the draft on fresh state, applying the tax quote, marking every
//!   entry billed (pure);
//! - `step_in_memory`: the whole step through the step service — load the engagement, the
//!   ledger and 32 shards, decide, reserve, ask the tax-engine simulator, finalize, commit the
//!   invoice, the ledger and the 32 shards — on the in-memory store.
#![allow(missing_docs, clippy::unwrap_used, clippy::expect_used)]

use std::collections::VecDeque;
use std::hint::black_box;

use criterion::{BatchSize, Criterion, criterion_group, criterion_main};
use o2c_app::memory::{MemoryPlatform, MemoryStore};
use o2c_app::ports::TaxEngine;
use o2c_app::ports::{AggregateWrite, Commit, CommitOutcome, EngagementStore, ExpectedVersion, KeyWrite};
use o2c_app::{Delivery, Step, StepService};
use o2c_domain::aggregate::{AggregateBody, AggregateKey, AggregateKind, Load, Loaded};
use o2c_domain::delivery::{EntryKind, EntryStatus, WipEntry, WipShard, shard_of};
use o2c_domain::engagement::Engagement;
use o2c_domain::events::BusinessEvent;
use o2c_domain::invoicing::{Ledger, RunInputs, build_draft};
use o2c_domain::money::{Currency, Money};
use o2c_domain::workflow::{CommandResult, Input, InvoiceRun, Next, Outcome, Snapshot, StepContext, WorkflowStep};
use o2c_embedded::db::Db;
use o2c_embedded::sim::Simulators;
use rust_decimal::Decimal;
use serde_json::json;

type Platform = MemoryPlatform<Simulators, Simulators, Simulators, Simulators>;

const ENTRIES: usize = 10_000;
const OPP: &str = "0068d0000INV10K";

fn envelope(key: &str, payload: serde_json::Value) -> serde_json::Value {
    json!({"event_id": key, "event_version": "1", "correlation_id": "bench", "occurred_at": "2027-01-01T00:00:00Z", "idempotency_key": key, "payload": payload})
}

/// An active SGD engagement with a large T&M line (the cap never binds).
async fn active_engagement(svc: &StepService<Platform>) -> Engagement {
    let payload = json!({
        "opportunity_id": OPP, "revision": 1, "name": "Bench programme", "stage": "Closed Won", "account_id": "CUST-1003",
        "close_date": "2026-11-18", "currency": "SGD", "amount": "50060000.00", "delivery_region": "APAC-SG",
        "start_date": "2027-01-04", "end_date": "2027-12-31", "rate_card_id": "RC-SGD-2027",
        "lines": [
            {"line_id": "1", "service_offering_id": "SVC-STRAT", "billing_model": "time_and_materials", "amount": "50000000.00",
             "roles": [{"role": "DIRECTOR", "hours": "20000"}, {"role": "CONSULTANT", "hours": "40000"}]},
            {"line_id": "2", "service_offering_id": "SVC-STRAT", "billing_model": "fixed_fee", "amount": "60000.00", "installments": 3, "installment_frequency": "monthly"}
        ]
    });
    let first = o2c_app::contracts::decode("OpportunityClosedWon", &envelope("bench-cw", payload)).unwrap();
    let deadline = chrono::Utc::now() + chrono::Duration::minutes(15);
    let mut queue = VecDeque::from([first]);
    let mut published = 0;
    while let Some(ev) = queue.pop_front() {
        for step in Step::ALL.into_iter().filter(|s| s.consumes().contains(&ev.event_type())) {
            svc.handle(step, &ev, &Delivery::once(deadline)).await.unwrap();
        }
        let all = svc.platform().publisher.published();
        for out in &all[published..] {
            queue.push_back(o2c_app::contracts::decode(out.detail_type(), &out.detail).unwrap());
        }
        published = all.len();
    }
    svc.platform().store.load(&format!("ENG-{OPP}")).await.unwrap().unwrap().value
}

/// 10,000 accepted time entries, 8 h each on working days of 2027, in their shards.
fn shards(eng: &Engagement) -> Vec<WipShard> {
    let sgd = Currency::parse("SGD").unwrap();
    let mut shards: Vec<WipShard> = (0..o2c_domain::delivery::WIP_SHARDS).map(|n| WipShard::new(eng.engagement_id.clone(), n)).collect();
    for i in 0..ENTRIES {
        let (resource, role, rate) =
            if i % 3 == 0 { (format!("EMP-D{}", i % 40), "DIRECTOR", 449) } else { (format!("EMP-C{}", i % 40), "CONSULTANT", 162) };
        let date = chrono::NaiveDate::from_ymd_opt(2027, 1, 4).unwrap() + chrono::Duration::days((i / 40) as i64);
        let id = format!("TE-{i:06}");
        let unit = Money::new(Decimal::from(rate), sgd);
        let e = WipEntry {
            entry_id: id.clone(),
            kind: EntryKind::Time,
            version: 1,
            status: EntryStatus::Approved,
            resource_id: resource,
            role: Some(role.into()),
            category: None,
            line_id: "1".into(),
            date,
            quantity: Decimal::from(8),
            unit_price: unit,
            amount: unit.times(Decimal::from(8)),
            billable: true,
            approved_by: "U-PM-01".into(),
            authors: vec!["U-PM-01".into()],
            billed: Vec::new(),
        };
        shards[shard_of(&id) as usize].entries.insert(id, e);
    }
    shards
}

fn run_request() -> BusinessEvent {
    let payload = json!({"run_id": "bench", "as_of": "2027-12-31", "engagement_id": format!("ENG-{OPP}"), "scheduled": false, "requested_by": "U-BILL-01"});
    o2c_app::contracts::decode("InvoiceRunRequested", &envelope("bench-run", payload)).unwrap()
}

fn invoicing(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let reference = o2c_embedded::reference::northwind().unwrap();
    let sims = Simulators::new(Db::open(&dir.path().join("sims.db")).unwrap(), &reference);
    let platform = o2c_app::memory::platform(reference.clone(), sims.clone(), sims.clone(), sims.clone(), sims.clone());
    let svc = StepService::new(platform, o2c_app::ServiceConfig::default());
    let eng = rt.block_on(active_engagement(&svc));
    let shards = shards(&eng);
    let size: usize = shards.iter().map(|s| serde_json::to_vec(s).unwrap().len()).sum();
    let largest = shards.iter().map(|s| serde_json::to_vec(s).unwrap().len()).max().unwrap();
    let gz: usize = shards
        .iter()
        .map(|s| {
            use std::io::Write;
            let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
            e.write_all(&serde_json::to_vec(s).unwrap()).unwrap();
            e.finish().unwrap().len()
        })
        .sum();
    eprintln!(
        "{ENTRIES} entries in {} shards: {size} bytes of JSON ({gz} gzip-compressed, as DynamoDB stores them), largest shard {largest} bytes",
        shards.len()
    );

    let contract = eng.contract.clone().unwrap();
    let schedule = eng.billing_schedule.clone().unwrap();
    let ledger = Ledger::new(eng.engagement_id.clone());
    let refs: Vec<&WipShard> = shards.iter().collect();
    let inputs = RunInputs {
        contract: &contract,
        schedule: &schedule,
        milestones: &eng.milestones,
        ledger: &ledger,
        cut_off: chrono::NaiveDate::from_ymd_opt(2027, 12, 31).unwrap(),
        issue_date: chrono::NaiveDate::from_ymd_opt(2027, 12, 31).unwrap(),
        requested_by: "U-BILL-01",
        erp_project_id: "PRJ000001",
        erp_customer_id: &contract.customer.erp_customer_id,
        payment_days: 30,
    };
    let draft = build_draft(inputs, &refs).unwrap().unwrap();
    let invoice_bytes = serde_json::to_vec(&draft.invoice).unwrap().len();
    eprintln!("draft: {} lines, subtotal {}, invoice item {invoice_bytes} bytes", draft.invoice.lines.len(), draft.invoice.subtotal);

    let event = run_request();
    let meta = event.meta();
    let ctx = StepContext { step: Step::InvoiceRun, event_type: event.event_type(), meta: &meta, now: chrono::Utc::now(), event: None };
    let loaded = Loaded {
        items: shards
            .iter()
            .map(|s| o2c_domain::aggregate::LoadedAggregate { body: AggregateBody::WipShard(s.clone()), version: 1 })
            .collect(),
        asked: vec![
            Load::Key(AggregateKey::ledger(&eng.engagement_id)),
            Load::All { kind: AggregateKind::WipShard, owner: eng.engagement_id.to_string() },
        ],
    };
    let input = Input { current: Some(Snapshot { engagement: &eng, version: 3 }), others: &loaded, event: &event, reference: &reference };
    let Next::Run(plan) = InvoiceRun.decide(&input, &ctx).unwrap() else { panic!("a plan") };
    let o2c_domain::workflow::Command::CalculateTax(request) = &plan.commands[0] else { panic!("tax") };
    let quote = rt.block_on(sims.calculate(request)).unwrap();
    let results = [CommandResult::Tax(quote)];
    let outcome = Outcome { current: input.current, others: &loaded, event: &event, reference: &reference, plan: &plan, results: &results };

    let mut g = c.benchmark_group("invoice_run_10k_entries");
    g.sample_size(20);
    g.bench_function("build_draft", |b| b.iter(|| build_draft(black_box(inputs), &refs).unwrap()));
    g.bench_function("decide", |b| b.iter(|| InvoiceRun.decide(black_box(&input), &ctx).unwrap()));
    g.bench_function("finalize", |b| b.iter(|| InvoiceRun.finalize(black_box(&outcome), &ctx).unwrap()));
    g.bench_function("step_in_memory", |b| {
        b.iter_batched(
            || {
                // A fresh store holding the active engagement and the 10,000 unbilled entries.
                let store = MemoryStore::new();
                let commit = Commit {
                    state: Some(o2c_app::ports::StateWrite { engagement: eng.clone(), expected: ExpectedVersion::New }),
                    others: shards
                        .iter()
                        .map(|s| AggregateWrite { body: AggregateBody::WipShard(s.clone()), expected: ExpectedVersion::New })
                        .collect(),
                    audit: None,
                    key: KeyWrite::Untracked,
                };
                assert!(matches!(rt.block_on(store.commit(commit)).unwrap(), CommitOutcome::Committed { .. }));
                let mut p = o2c_app::memory::platform(reference.clone(), sims.clone(), sims.clone(), sims.clone(), sims.clone());
                p.store = store;
                StepService::new(p, o2c_app::ServiceConfig::default())
            },
            |svc| {
                let deadline = chrono::Utc::now() + chrono::Duration::minutes(15);
                let h = rt.block_on(svc.handle(Step::InvoiceRun, &event, &Delivery::once(deadline))).unwrap();
                assert!(h.action == "invoice_drafted" || h.action == "invoice_released", "{}", h.action);
                svc
            },
            BatchSize::PerIteration,
        )
    });
    g.finish();
}

criterion_group!(benches, invoicing);
criterion_main!(benches);
