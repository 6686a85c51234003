//! Properties of billing and revenue over random delivery streams: every approved, billable
//! cent is invoiced exactly once, whatever the order, the duplicates, the corrections, the
//! withdrawals, the runs in between and the drafts rejected on the way; tax is the per-line
//! rule; invoice numbers of a legal entity form a gapless sequence. Revenue runs for
//! January–March between the deliveries (Singapore has closed them: they book into April)
//! and a last one for May: the fixed fee never passes its value in any journal, and in the
//! end T&M revenue is exactly the approved billable hours × rate, expenses what posted
//! invoices billed, and the ERP's journals add up to what o2c recognised.
//!
//! The stream runs through the real step services (in-memory store, simulators for the PSA,
//! ERP and tax engine); a small driver plays the bus: each published event goes to every step
//! that consumes it, in publication order, and an approver answers approval requests as the
//! case says (approve, or reject once).
#![allow(missing_docs, clippy::unwrap_used, clippy::expect_used)]

use std::collections::{BTreeMap, BTreeSet, VecDeque};

use o2c_app::memory::MemoryPlatform;
use o2c_app::ports::EngagementStore;
use o2c_app::{Delivery, Step, StepService};
use o2c_domain::aggregate::{AggregateKey, AggregateKind};
use o2c_domain::events::{BusinessEvent, EventType};
use o2c_domain::invoicing::{InvoiceStatus, LineKind, LineSource};
use o2c_domain::revenue::JournalStatus;
use o2c_domain::tax::line_tax;
use o2c_embedded::db::Db;
use o2c_embedded::sim::Simulators;
use o2c_tests::delivery::{Event, Time, assigned, decision, expense, invoice_run, revenue_run};
use o2c_tests::{asia_payload, closed_won};
use proptest::prelude::*;
use rust_decimal::Decimal;

type Platform = MemoryPlatform<Simulators, Simulators, Simulators, Simulators>;

struct World {
    _dir: tempfile::TempDir,
    svc: StepService<Platform>,
    published: usize,
    /// The approver rejects the first approval request of the case, approves the others.
    reject_first: bool,
    decisions: u32,
}

fn decode((_, dt, detail): &Event) -> BusinessEvent {
    o2c_app::contracts::decode(dt, detail).unwrap()
}

impl World {
    fn new(reject_first: bool) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let reference = o2c_embedded::reference::northwind().unwrap();
        let sims = Simulators::new(Db::open(&dir.path().join("sims.db")).unwrap(), &reference);
        let platform = o2c_app::memory::platform(reference, sims.clone(), sims.clone(), sims.clone(), sims);
        Self { _dir: dir, svc: StepService::new(platform, o2c_tests::fast_service()), published: 0, reject_first, decisions: 0 }
    }

    /// Delivers `first` and everything it causes, the way the bus would (FIFO).
    async fn deliver(&mut self, first: BusinessEvent) {
        let deadline = chrono::Utc::now() + chrono::Duration::minutes(15);
        let mut queue = VecDeque::from([first]);
        while let Some(ev) = queue.pop_front() {
            for step in Step::ALL.into_iter().filter(|s| s.consumes().contains(&ev.event_type())) {
                if let Err(e) = self.svc.handle(step, &ev, &Delivery::once(deadline)).await {
                    assert!(e.is_permanent(), "{step} failed on {:?}: {e}", ev.event_type());
                }
            }
            let all = self.svc.platform().publisher.published();
            for out in &all[self.published..] {
                let decoded = o2c_app::contracts::decode(out.detail_type(), &out.detail).unwrap();
                if let BusinessEvent::InvoiceApprovalRequested(req) = &decoded {
                    let p = &req.payload;
                    let approve = !(self.reject_first && self.decisions == 0);
                    self.decisions += 1;
                    queue.push_back(decode(&decision(&p.engagement_id, &p.invoice_id, "U-FIN-SG-02", approve, self.decisions)));
                }
                queue.push_back(decoded);
            }
            self.published = all.len();
        }
    }
}

/// One delivery entry of the stream: its versions (the last one is the truth).
#[derive(Debug, Clone)]
enum Entry {
    Time { versions: Vec<(u32, bool)> }, // (quarter hours 1..=32, withdrawn)
    Expense { category: &'static str, cents: u32 },
}

fn entry() -> impl Strategy<Value = Entry> {
    prop_oneof![
        4 => prop::collection::vec((1u32..=32, prop::bool::weighted(0.15)), 1..=3).prop_map(|versions| Entry::Time { versions }),
        1 => (prop::sample::select(vec!["travel", "lodging", "materials"]), 1u32..=80_000).prop_map(|(category, cents)| Entry::Expense { category, cents }),
    ]
}

fn hours(quarters: u32) -> Decimal {
    Decimal::from(quarters) / Decimal::from(4)
}

/// What the contract says entry `e` bills in the end (SGD, exact).
fn expected(i: usize, e: &Entry) -> Decimal {
    match e {
        Entry::Time { versions } => {
            let (q, withdrawn) = *versions.last().unwrap();
            let rate = if i.is_multiple_of(2) { Decimal::from(449) } else { Decimal::from(162) };
            if withdrawn {
                Decimal::ZERO
            } else {
                (hours(q) * rate).round_dp_with_strategy(2, rust_decimal::RoundingStrategy::MidpointAwayFromZero)
            }
        }
        Entry::Expense { category, cents } => {
            let cost = Decimal::new(i64::from(*cents), 2);
            match *category {
                "lodging" => cost.min(Decimal::new(40000, 2)),
                "materials" => {
                    (cost * Decimal::new(110, 2)).round_dp_with_strategy(2, rust_decimal::RoundingStrategy::MidpointAwayFromZero)
                }
                _ => cost,
            }
        }
    }
}

async fn run_case(
    entries: Vec<Entry>,
    order: Vec<usize>,
    dups: Vec<usize>,
    runs_after: Vec<usize>,
    reject_first: bool,
) -> Result<(), TestCaseError> {
    let mut w = World::new(reject_first);
    let opp = "0068d00000PROP01";
    let eng = format!("ENG-{opp}");
    w.deliver(decode(&closed_won(asia_payload(opp, 1, "60000.00")))).await;
    let project = w.svc.platform().store.load(&eng).await.unwrap().unwrap().value.psa_project_id.unwrap();
    for ev in [
        assigned(&eng, &project, "AS-P1", "EMP-1", "DIRECTOR", ("2027-01-11", "2027-04-30"), 1),
        assigned(&eng, &project, "AS-P2", "EMP-2", "CONSULTANT", ("2027-01-11", "2027-04-30"), 1),
    ] {
        w.deliver(decode(&ev)).await;
    }
    // Every version of every entry (each on its own day, so no day passes 24 h).
    let mut stream: Vec<Event> = Vec::new();
    for (i, e) in entries.iter().enumerate() {
        let day = chrono::NaiveDate::from_ymd_opt(2027, 1, 11).unwrap() + chrono::Duration::days(i as i64);
        match e {
            Entry::Time { versions } => {
                let (resource, role) = if i.is_multiple_of(2) { ("EMP-1", "DIRECTOR") } else { ("EMP-2", "CONSULTANT") };
                for (v, (q, withdrawn)) in versions.iter().enumerate() {
                    let mut t = Time::new(&format!("TE-P-{i}"), resource, role, "1", &day.to_string(), &hours(*q).to_string());
                    t.version = v as u32 + 1;
                    if *withdrawn {
                        t.status = "withdrawn";
                    }
                    stream.push(t.event(&eng, &project));
                }
            }
            Entry::Expense { category, cents } => {
                let amount = Decimal::new(i64::from(*cents), 2).to_string();
                stream.push(expense(&eng, &format!("EX-P-{i}"), "EMP-2", category, &day.to_string(), (&amount, "SGD"), Some("1")));
            }
        }
    }
    for d in dups {
        if !stream.is_empty() {
            let copy = stream[d % stream.len()].clone();
            stream.push(copy);
        }
    }
    // Reorder: a random permutation (versions of one entry may arrive newest first).
    let mut ordered: Vec<Event> = Vec::with_capacity(stream.len());
    let mut pool = stream;
    for k in order {
        if pool.is_empty() {
            break;
        }
        ordered.push(pool.remove(k % pool.len()));
    }
    ordered.extend(pool);
    // Invoice runs between deliveries, then a final one after everything.
    let mut run_points: BTreeSet<usize> = runs_after.into_iter().map(|r| r % (ordered.len() + 1)).collect();
    run_points.insert(ordered.len());
    let mut runs = 0;
    for (k, ev) in ordered.iter().enumerate() {
        if run_points.contains(&k) {
            runs += 1;
            w.deliver(decode(&invoice_run(&format!("R{runs}"), "2027-03-20", Some(&eng), false, "U-BILL-01"))).await;
            let period = format!("2027-{:02}", runs.min(3));
            w.deliver(decode(&revenue_run(&format!("V{runs}"), &period, Some(&eng)))).await;
        }
        w.deliver(decode(ev)).await;
    }
    // Rejected drafts leave their lines in WIP: run until nothing is left to bill.
    for extra in 0..4 {
        w.deliver(decode(&invoice_run(&format!("F{extra}"), "2027-04-30", Some(&eng), false, "U-BILL-01"))).await;
    }
    w.deliver(decode(&revenue_run("V-MAY", "2027-05", Some(&eng)))).await;

    let store = &w.svc.platform().store;
    let invoices = store.load_all(AggregateKind::Invoice, &eng).await.unwrap();
    let posted: Vec<_> = invoices.invoices().into_iter().filter(|i| i.status == InvoiceStatus::Posted).collect();
    prop_assert!(
        invoices.invoices().iter().all(|i| matches!(i.status, InvoiceStatus::Posted | InvoiceStatus::Rejected)),
        "nothing left pending"
    );

    // 1. Every billable cent exactly once: Σ posted nets = Σ final entry amounts + the three installments.
    let want: Decimal = entries.iter().enumerate().map(|(i, e)| expected(i, e)).sum::<Decimal>() + Decimal::from(60_000);
    let got: Decimal = posted.iter().map(|i| i.subtotal.amount).sum();
    prop_assert_eq!(got, want, "invoiced net vs approved billable amounts");
    // 2. Per entry: what the posted invoices billed equals its final amount.
    let shards = store.load_all(AggregateKind::WipShard, &eng).await.unwrap();
    for (i, e) in entries.iter().enumerate() {
        let id = match e {
            Entry::Time { .. } => format!("TE-P-{i}"),
            Entry::Expense { .. } => format!("EX-P-{i}"),
        };
        let entry = shards.wip_shards().values().find_map(|s| s.entries.get(&id).cloned()).expect("accepted");
        prop_assert_eq!(entry.billed_amount().amount, expected(i, e), "{} billed", id);
    }
    // 3. Installments once each.
    let mut seen: BTreeMap<String, usize> = BTreeMap::new();
    for l in posted.iter().flat_map(|i| i.lines.iter()).filter(|l| l.kind == LineKind::Installment) {
        if let LineSource::Installment { item_id } = &l.source {
            *seen.entry(item_id.clone()).or_default() += 1;
        }
    }
    prop_assert_eq!(seen.values().copied().collect::<Vec<_>>(), vec![1, 1, 1]);
    // 4. Tax: per line round(net × 9 %), half away from zero; totals are exact sums.
    for i in &posted {
        for l in &i.lines {
            prop_assert_eq!(l.tax.unwrap(), line_tax(l.net, Decimal::new(9, 2)));
        }
        let tax: Decimal = i.lines.iter().map(|l| l.tax.unwrap().amount).sum();
        prop_assert_eq!(i.tax_total.amount, tax);
        prop_assert_eq!(i.total.amount, i.subtotal.amount + tax);
    }
    // 5. Numbers: gapless from 1, in the ERP once each.
    let mut numbers: Vec<String> = posted.iter().map(|i| i.number.clone().unwrap()).collect();
    numbers.sort();
    let gapless: Vec<String> = (1..=numbers.len()).map(|n| format!("LE-SG-01-{n:06}")).collect();
    prop_assert_eq!(&numbers, &gapless);
    let erp: Vec<String> = w.svc.platform().crm.invoices().await.unwrap().into_iter().map(|i| i.number).collect();
    prop_assert_eq!(erp, gapless);
    // Rejected drafts never took a number.
    prop_assert!(invoices.invoices().iter().filter(|i| i.status == InvoiceStatus::Rejected).all(|i| i.number.is_none()));
    // 6. Revenue: no journal takes the fixed fee past its value; in the end T&M is the
    // approved billable hours × rate, expenses what posted invoices billed, the fixed fee
    // its whole value (May is after delivery ends), and the ERP holds the same journals.
    let rl = store
        .load_aggregates(&[AggregateKey::revenue_ledger(&eng)])
        .await
        .unwrap()
        .revenue_ledger(&eng)
        .cloned()
        .expect("revenue recognised");
    prop_assert!(rl.journals.iter().all(|j| j.status == JournalStatus::Posted), "{:?}", rl.journals);
    for j in &rl.journals {
        for l in j.lines.iter().filter(|l| l.line_id == "2") {
            prop_assert!(l.to_date.amount <= Decimal::from(60_000), "fixed fee to date {} in {}", l.to_date, j.journal_id);
        }
        prop_assert_eq!(
            j.period.to_string(),
            if j.requested_period.to_string().as_str() <= "2027-03" { "2027-04".to_string() } else { j.requested_period.to_string() }
        );
    }
    let time: Decimal = entries.iter().enumerate().filter(|(_, e)| matches!(e, Entry::Time { .. })).map(|(i, e)| expected(i, e)).sum();
    let expenses: Decimal =
        entries.iter().enumerate().filter(|(_, e)| matches!(e, Entry::Expense { .. })).map(|(i, e)| expected(i, e)).sum();
    let recognised = |k: &str| rl.recognised.get(k).map_or(Decimal::ZERO, |m| m.amount);
    prop_assert_eq!(recognised("1"), time, "T&M revenue = approved billable hours × rate");
    prop_assert_eq!(recognised("1/expenses"), expenses, "expenses as billed");
    prop_assert_eq!(recognised("2"), Decimal::from(60_000), "the fixed fee, whole once delivery ended");
    let erp: Decimal = w.svc.platform().crm.journals().await.unwrap().iter().map(|j| j.journal.total.amount).sum();
    prop_assert_eq!(erp, rl.recognised.values().map(|m| m.amount).sum::<Decimal>(), "the ERP's journals add up to o2c's revenue");
    let _ = EventType::InvoicePosted;
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, max_shrink_iters: 64, ..ProptestConfig::default() })]

    #[test]
    fn when_delivery_arrives_in_any_order_with_duplicates_and_corrections_should_invoice_every_cent_once_and_recognise_it_as_revenue(
        entries in prop::collection::vec(entry(), 1..24),
        order in prop::collection::vec(any::<usize>(), 0..80),
        dups in prop::collection::vec(any::<usize>(), 0..8),
        runs_after in prop::collection::vec(any::<usize>(), 0..4),
        reject_first in any::<bool>(),
    ) {
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        rt.block_on(run_case(entries, order, dups, runs_after, reject_first))?;
    }
}
