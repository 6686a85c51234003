//! Properties of cash application over random payment streams against random posted
//! invoices: whatever the order and the duplicate notifications, with returns (also
//! arriving before what they return) and payments in a foreign currency or from strangers,
//! the cash received equals the cash applied plus the cash left unapplied, to the cent; no
//! invoice is ever applied above its total (nor below zero); the ERP books each payment
//! once and holds, per invoice, exactly what o2c applied — also when it refuses some
//! receipts (their cash stays unapplied, their returns need no ERP receipt).
//!
//! The stream runs through the real cash-application step (in-memory store); the ERP is an
//! independent ledger that refuses any over-application, so a double application would
//! surface as a refusal or as disagreeing books.
#![allow(missing_docs, clippy::unwrap_used, clippy::expect_used)]

use std::collections::{BTreeMap, VecDeque};
use std::sync::{Arc, Mutex};

use o2c_app::memory::MemoryPlatform;
use o2c_app::ports::{
    AggregateWrite, Commit, ConnectorError, EngagementStore, Erp, ExpectedVersion, ExternalObject, KeyWrite, ObjectStatus, System,
};
use o2c_app::{Delivery, Step, StepService};
use o2c_domain::aggregate::{AggregateBody, InvoiceRef};
use o2c_domain::events::BusinessEvent;
use o2c_domain::ids::EngagementId;
use o2c_domain::invoicing::InvoiceDoc;
use o2c_domain::model::{BillingSchedule, ProjectSpec};
use o2c_domain::money::{Currency, Money};
use o2c_domain::receivables::{CashReceipt, OpenItem, PaymentStatus, Receivables};
use o2c_embedded::db::Db;
use o2c_embedded::sim::Simulators;
use o2c_tests::cash::Payment;
use proptest::prelude::*;
use rust_decimal::Decimal;

const LE: &str = "LE-SG-01";
const CUSTOMER: &str = "CUST-1003";
const ACCOUNT: &str = "SG-DBS-0012345678";

/// Receipts by payment id, with the receipt that reversed each.
type Receipts = BTreeMap<String, (CashReceipt, Option<String>)>;

/// An ERP receivables ledger: create-or-get by payment id, refuses over-application.
#[derive(Clone, Default)]
struct Books {
    totals: Arc<BTreeMap<String, Decimal>>,
    receipts: Arc<Mutex<Receipts>>,
    booked: Arc<Mutex<u32>>,
}

fn refuse(code: &str, message: String) -> ConnectorError {
    ConnectorError::Permanent { system: System::Erp, status: 400, code: code.into(), message }
}

impl Books {
    fn applied(&self) -> BTreeMap<String, Decimal> {
        let mut out = BTreeMap::new();
        for (r, reversed) in self.receipts.lock().unwrap().values() {
            if reversed.is_none() && r.reverses.is_none() {
                for a in &r.applications {
                    *out.entry(a.number.clone()).or_default() += a.amount.amount;
                }
            }
        }
        out
    }
}

impl Erp for Books {
    async fn create_or_get_project(&self, _: &ProjectSpec) -> Result<ExternalObject, ConnectorError> {
        Err(refuse("UNSUPPORTED", "not in this test".into()))
    }
    async fn get_project(&self, _: &str) -> Result<Option<o2c_domain::reconciliation::ProjectRecord>, ConnectorError> {
        Err(refuse("UNSUPPORTED", "not in this test".into()))
    }
    async fn get_billing_schedule(&self, _: &str, _: &str) -> Result<Option<BillingSchedule>, ConnectorError> {
        Err(refuse("UNSUPPORTED", "not in this test".into()))
    }
    async fn get_invoice(&self, _: &str) -> Result<Option<o2c_domain::reconciliation::ErpInvoiceRecord>, ConnectorError> {
        Err(refuse("UNSUPPORTED", "not in this test".into()))
    }
    async fn create_or_get_billing_schedule(&self, _: &str, _: &BillingSchedule) -> Result<ExternalObject, ConnectorError> {
        Err(refuse("UNSUPPORTED", "not in this test".into()))
    }
    async fn create_or_get_invoice(&self, _: &InvoiceDoc) -> Result<ExternalObject, ConnectorError> {
        Err(refuse("UNSUPPORTED", "not in this test".into()))
    }
    async fn post_journal(&self, _: &o2c_domain::revenue::RevenueJournal) -> Result<ExternalObject, ConnectorError> {
        Err(refuse("UNSUPPORTED", "not in this test".into()))
    }
    async fn book_receipt(&self, receipt: &CashReceipt) -> Result<ExternalObject, ConnectorError> {
        let applied = self.applied();
        let mut receipts = self.receipts.lock().unwrap();
        if let Some((existing, _)) = receipts.get(&receipt.payment_id) {
            assert_eq!(existing, receipt, "a payment id booked with two contents");
            return Ok(ExternalObject { id: format!("R-{}", receipt.payment_id), created: false, status: ObjectStatus::Active });
        }
        // The ERP refuses every credit of a whole number of 13 cents (a customer on hold):
        // the cash must stay unapplied in o2c, and its return needs no ERP receipt.
        if receipt.reverses.is_none() && (receipt.amount.amount * Decimal::from(100)) % Decimal::from(13) == Decimal::ZERO {
            return Err(refuse("CUSTOMER_ON_HOLD", format!("{} refused", receipt.payment_id)));
        }
        // A reversal takes applications back; everything else must fit what is open.
        for a in receipt.applications.iter().filter(|_| receipt.reverses.is_none()) {
            let total = self.totals.get(&a.number).copied().unwrap_or_default();
            if applied.get(&a.number).copied().unwrap_or_default() + a.amount.amount > total {
                return Err(refuse("AMOUNT_EXCEEDS_OPEN", format!("{} over-applied", a.number)));
            }
        }
        if let Some(original) = &receipt.reverses {
            let Some(entry) = receipts.get_mut(original) else { return Err(refuse("RCRD_DSNT_EXIST", original.clone())) };
            entry.1 = Some(receipt.payment_id.clone());
        }
        receipts.insert(receipt.payment_id.clone(), (receipt.clone(), None));
        *self.booked.lock().unwrap() += 1;
        Ok(ExternalObject { id: format!("R-{}", receipt.payment_id), created: true, status: ObjectStatus::Active })
    }
}

type Platform = MemoryPlatform<Simulators, Simulators, Books, Simulators>;

fn sgd(cents: i64) -> Money {
    Money::new(Decimal::new(cents, 2), Currency::parse("SGD").unwrap())
}

#[derive(Debug, Clone)]
enum Ref {
    None,
    Number(usize),
    Text(usize),
    Two(usize, usize),
}

#[derive(Debug, Clone)]
struct Pay {
    cents: i64,
    reference: Ref,
    known_payer: bool,
    euro: bool,
    /// Returned later (by a reversal in the stream).
    returned: bool,
}

fn pay() -> impl Strategy<Value = Pay> {
    let reference = prop_oneof![
        Just(Ref::None),
        (0..4usize).prop_map(Ref::Number),
        (0..4usize).prop_map(Ref::Text),
        (0..4usize, 0..4usize).prop_map(|(a, b)| Ref::Two(a, b))
    ];
    (1..3_000_000i64, reference, prop::bool::weighted(0.8), prop::bool::weighted(0.1), prop::bool::weighted(0.2))
        .prop_map(|(cents, reference, known_payer, euro, returned)| Pay { cents, reference, known_payer, euro, returned })
}

#[derive(Debug, Clone)]
struct Case {
    /// Invoice totals in cents (the amounts some payments match exactly).
    invoices: Vec<i64>,
    payments: Vec<Pay>,
    /// Order of delivery: a permutation seed and which notifications come twice.
    shuffle: Vec<usize>,
    duplicates: Vec<usize>,
}

fn case() -> impl Strategy<Value = Case> {
    (prop::collection::vec(1..2_000_000i64, 1..5), prop::collection::vec(pay(), 1..9)).prop_flat_map(|(invoices, mut payments)| {
        // Some payments pay an invoice's exact total.
        for (n, p) in payments.iter_mut().enumerate() {
            if n % 3 == 1 {
                p.cents = invoices[n % invoices.len()];
            }
        }
        let len = payments.len() * 2;
        (Just(invoices), Just(payments), prop::collection::vec(0..1000usize, len), prop::collection::vec(0..len, 0..4))
            .prop_map(|(invoices, payments, shuffle, duplicates)| Case { invoices, payments, shuffle, duplicates })
    })
}

fn number(i: usize) -> String {
    format!("{LE}-{:06}", i + 1)
}

async fn seed(svc: &StepService<Platform>, invoices: &[i64]) {
    let mut rec = Receivables::new(LE, CUSTOMER);
    let mut others = Vec::new();
    for (i, cents) in invoices.iter().enumerate() {
        let day = chrono::NaiveDate::from_ymd_opt(2027, 1, 1).unwrap() + chrono::Duration::days(i as i64 * 7);
        rec.post(OpenItem {
            invoice_id: format!("INV-{i}"),
            number: number(i),
            engagement_id: EngagementId::new("ENG-P"),
            issue_date: day,
            due_date: day + chrono::Duration::days(30),
            total: sgd(*cents),
            applied: sgd(0),
            version: 1,
        });
        let r = InvoiceRef {
            legal_entity_id: LE.into(),
            number: number(i),
            customer_id: CUSTOMER.into(),
            invoice_id: format!("INV-{i}"),
            settled: None,
        };
        others.push(AggregateWrite { body: AggregateBody::InvoiceRef(r), expected: ExpectedVersion::New });
    }
    others.push(AggregateWrite { body: AggregateBody::Receivables(rec), expected: ExpectedVersion::New });
    svc.platform().store.commit(Commit { state: None, others, audit: None, key: KeyWrite::Untracked }).await.unwrap();
}

fn events(c: &Case) -> Vec<BusinessEvent> {
    let mut out = Vec::new();
    for (n, p) in c.payments.iter().enumerate() {
        let id = format!("P{n}");
        let amount = Decimal::new(p.cents, 2).to_string();
        let mut payment = Payment::new(&id, LE, &amount, if p.euro { "EUR" } else { "SGD" });
        if p.known_payer {
            payment = payment.from(ACCOUNT);
        }
        let k = c.invoices.len();
        payment = match p.reference {
            Ref::None => payment,
            Ref::Number(i) => payment.quoting(&[&number(i % k)]),
            Ref::Text(i) => payment.remittance(&format!("INV {} thanks", number(i % k))),
            Ref::Two(a, b) => payment.quoting(&[&number(a % k), &number(b % k)]),
        };
        out.push(payment.event());
        if p.returned {
            out.push(Payment::new(&format!("RET-{n}"), LE, &amount, if p.euro { "EUR" } else { "SGD" }).reversing(&id).event());
        }
    }
    // Reorder deterministically from the case, then repeat some notifications.
    let mut keyed: Vec<(usize, _)> = out.into_iter().enumerate().map(|(i, e)| (c.shuffle.get(i).copied().unwrap_or(i), e)).collect();
    keyed.sort_by_key(|(k, _)| *k);
    let mut ordered: Vec<_> = keyed.into_iter().map(|(_, e)| e).collect();
    for d in &c.duplicates {
        if let Some(e) = ordered.get(*d % ordered.len().max(1)).cloned() {
            ordered.push(e);
        }
    }
    ordered.iter().map(|(_, dt, detail)| o2c_app::contracts::decode(dt, detail).unwrap()).collect()
}

async fn run(c: Case) {
    let dir = tempfile::tempdir().unwrap();
    let reference = o2c_embedded::reference::northwind().unwrap();
    let sims = Simulators::new(Db::open(&dir.path().join("sims.db")).unwrap(), &reference);
    let totals: BTreeMap<String, Decimal> = c.invoices.iter().enumerate().map(|(i, cents)| (number(i), Decimal::new(*cents, 2))).collect();
    let books = Books { totals: Arc::new(totals), ..Books::default() };
    let mut platform = o2c_app::memory::platform(reference, sims.clone(), sims.clone(), books.clone(), sims);
    let metrics = o2c_app::metrics::RecordingMetrics::default();
    platform.metrics = Arc::new(metrics.clone());
    let svc = StepService::new(platform, o2c_tests::fast_service());
    seed(&svc, &c.invoices).await;

    // Deliver; a return that overtook its payment fails retryably and goes to the back of
    // the queue, as a redelivery would.
    let deadline = chrono::Utc::now() + chrono::Duration::minutes(15);
    let mut queue: VecDeque<(BusinessEvent, u32)> = events(&c).into_iter().map(|e| (e, 0)).collect();
    while let Some((ev, tries)) = queue.pop_front() {
        match svc.handle(Step::CashApplication, &ev, &Delivery::once(deadline)).await {
            Ok(_) => {}
            Err(e) if e.is_retryable() && tries < 20 => queue.push_back((ev, tries + 1)),
            Err(e) => panic!("{e} on {ev:?}"),
        }
    }

    let store = &svc.platform().store;
    // Both customers' receivables with what settled out of them.
    let loaded = o2c_app::receivables::history(store, LE, None).await.unwrap();
    let mut received: BTreeMap<&str, Decimal> = BTreeMap::new();
    let mut applied_plus_unapplied: BTreeMap<&str, Decimal> = BTreeMap::new();
    for rec in &loaded {
        for i in rec.invoices.values() {
            assert!(i.applied.amount <= i.total.amount, "{} applied {} of {}", i.number, i.applied, i.total);
            assert!(!i.applied.amount.is_sign_negative(), "{} applied {}", i.number, i.applied);
            assert_eq!(
                books.applied().get(&i.number).copied().unwrap_or_default(),
                i.applied.amount,
                "ERP and o2c disagree on {}: o2c {:#?} ERP {:#?}",
                i.number,
                rec.payments,
                books.receipts.lock().unwrap()
            );
            *applied_plus_unapplied.entry(i.total.currency.code()).or_default() += i.applied.amount;
        }
        for p in rec.payments.values().filter(|p| p.reversed_by.is_none()) {
            *received.entry(p.amount.currency.code()).or_default() += p.amount.amount;
        }
        for (cur, amount) in rec.unapplied() {
            *applied_plus_unapplied.entry(cur).or_default() += amount;
        }
    }
    applied_plus_unapplied.retain(|_, v| !v.is_zero());
    received.retain(|_, v| !v.is_zero());
    assert_eq!(received, applied_plus_unapplied, "cash received = applied + unapplied");
    // Every payment that was not returned is there, exactly once.
    let kept: Decimal = c.payments.iter().filter(|p| !p.returned).map(|p| Decimal::new(p.cents, 2)).sum();
    assert_eq!(received.values().copied().sum::<Decimal>(), kept, "every live payment counted once");
    // One booking per payment the ERP accepts, and per return of one; a refused payment is
    // unapplied in o2c (its applications taken back), and nothing else was refused.
    let refused = |amount: Decimal| (amount * Decimal::from(100)) % Decimal::from(13) == Decimal::ZERO;
    let accepted = c.payments.iter().filter(|p| !refused(Decimal::new(p.cents, 2))).count();
    let returns = c.payments.iter().filter(|p| p.returned && !refused(Decimal::new(p.cents, 2))).count();
    assert_eq!(*books.booked.lock().unwrap() as usize, accepted + returns);
    // Metrics: one `PaymentsReceived` per payment and per booked return (duplicates emit
    // nothing), and the customer's DSO after each of its payments.
    let emitted = metrics.recorded();
    let received_metrics = emitted.iter().filter(|m| m.name == "PaymentsReceived").count();
    assert_eq!(received_metrics, c.payments.len() + returns, "{emitted:#?}");
    let paid_by_customer = c.payments.iter().any(|p| p.known_payer || !matches!(p.reference, Ref::None));
    if paid_by_customer {
        assert!(
            emitted
                .iter()
                .any(|m| m.name == "DaysSalesOutstanding" && m.dimensions.contains(&("Customer".to_owned(), CUSTOMER.to_owned()))),
            "{emitted:#?}"
        );
    }
    for rec in &loaded {
        for p in rec.payments.values() {
            if refused(p.amount.amount) {
                assert_eq!((p.status, p.applications.len()), (PaymentStatus::Refused, 0), "{p:#?}");
            } else {
                assert_eq!(p.status, PaymentStatus::Booked, "{p:#?}");
            }
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 128, ..ProptestConfig::default() })]

    #[test]
    fn when_any_payment_stream_meets_any_posted_invoices_should_apply_every_cent_once_and_never_above_a_total(c in case()) {
        tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(run(c));
    }
}
