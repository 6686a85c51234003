//! Posted invoices to applied cash through the embedded runtime: remittance, exact amount
//! and oldest-first matching, partial and over-payment, a payment in another currency, an
//! unknown payer, duplicate notifications, returned payments (also when the return
//! overtakes the payment), racing payments of one customer, an ERP that refuses a receipt
//! or loses its answer — checked in o2c's receivables, the ERP's receipts and the CRM's
//! invoice records (late and repeated events never roll a balance back).
#![allow(missing_docs, clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeMap;

use o2c_app::ports::{EngagementStore, RejectionStore};
use o2c_domain::aggregate::{AggregateKey, AggregateKind, InvoiceRef, PaymentRef};
use o2c_domain::invoicing::{InvoiceDoc, InvoiceStatus};
use o2c_domain::receivables::{MatchRule, PaymentStatus, Receivables, SUSPENSE};
use o2c_embedded::sim::{Fault, System};
use o2c_tests::Harness;
use o2c_tests::cash::Payment;
use o2c_tests::delivery::{Time, invoice_run};
use rust_decimal::Decimal;
use rust_decimal_macros::dec;

const LE: &str = "LE-SG-01";
const CUSTOMER: &str = "CUST-1003";
const ACCOUNT: &str = "SG-DBS-0012345678";

/// An active Asia engagement (SGD) with two posted invoices: a week of time for two people,
/// then a week for one. Returns the invoices, oldest first.
async fn two_posted_invoices(h: &Harness, opp: &str) -> Vec<InvoiceDoc> {
    let (eng, project) = o2c_tests::active_asia(h, opp).await;
    let day =
        |id: &str, who: &str, role: &str, d: u32| Time::new(id, who, role, "1", &format!("2027-01-{d:02}"), "8").event(&eng, &project);
    let mut week1: Vec<_> = (11..=15).map(|d| day(&format!("TE-D-{d}"), "EMP-1", "DIRECTOR", d)).collect();
    week1.extend((11..=15).map(|d| day(&format!("TE-C-{d}"), "EMP-2", "CONSULTANT", d)));
    h.send(week1).await;
    h.settle().await;
    h.send(vec![invoice_run("R-1", "2027-01-17", Some(&eng), false, "U-BILL-01")]).await;
    h.settle().await;
    h.send((18..=22).map(|d| day(&format!("TE-D-{d}"), "EMP-1", "DIRECTOR", d)).collect()).await;
    h.settle().await;
    h.send(vec![invoice_run("R-2", "2027-01-24", Some(&eng), false, "U-BILL-01")]).await;
    h.settle().await;
    let loaded = h.rt.store().load_all(AggregateKind::Invoice, &eng).await.unwrap();
    let mut v: Vec<InvoiceDoc> = loaded.invoices().into_iter().cloned().collect();
    v.sort_by_key(|i| i.number.clone());
    assert_eq!(v.len(), 2, "{v:?}");
    assert!(v.iter().all(|i| i.status == InvoiceStatus::Posted));
    assert_eq!(v[0].number.as_deref(), Some("LE-SG-01-000001"));
    assert_eq!(v[1].number.as_deref(), Some("LE-SG-01-000002"));
    assert!(v[0].due_date <= v[1].due_date);
    v
}

/// `customer`'s receivables as stored: open items only.
async fn open_items(h: &Harness, customer: &str) -> Receivables {
    let key = AggregateKey::receivables(LE, customer);
    h.rt.store().load_aggregates(&[key]).await.unwrap().receivables(LE, customer).cloned().unwrap()
}

/// The references of invoice `number` and payment `payment_id`, as stored.
async fn refs(h: &Harness, number: &str, payment_id: &str) -> (InvoiceRef, PaymentRef) {
    let keys = [AggregateKey::invoice_ref(LE, number), AggregateKey::payment_ref(LE, payment_id)];
    let loaded = h.rt.store().load_aggregates(&keys).await.unwrap();
    (loaded.invoice_ref(LE, number).cloned().unwrap(), loaded.payment_ref(LE, payment_id).cloned().unwrap())
}

/// `customer`'s receivables with what settled out of them (paid invoices, closed payments).
async fn receivables(h: &Harness, customer: &str) -> Receivables {
    o2c_app::receivables::history(h.rt.store(), LE, Some(customer))
        .await
        .unwrap()
        .pop()
        .unwrap_or_else(|| panic!("no receivables for {customer}"))
}

fn total(i: &InvoiceDoc) -> Decimal {
    i.total.amount
}

fn number(i: &InvoiceDoc) -> &str {
    i.number.as_deref().unwrap()
}

/// Events of `detail_type` on the bus.
async fn published(h: &Harness, detail_type: &str) -> Vec<serde_json::Value> {
    h.bus_events().await.into_iter().filter(|(t, _)| t == detail_type).map(|(_, d)| d["payload"].clone()).collect()
}

/// o2c's receivables agree with the ERP's receipts: the same amount applied per invoice
/// number, never above its total; the cash received is applied + unapplied to the cent.
async fn assert_books_agree(h: &Harness, rec: &Receivables) {
    let erp = h.rt.sims().applied_by_number().await.unwrap();
    for i in rec.invoices.values() {
        assert!(i.applied.amount <= i.total.amount, "{} applied {} above its total {}", i.number, i.applied, i.total);
        assert!(!i.applied.amount.is_sign_negative(), "{} applied {}", i.number, i.applied);
        assert_eq!(erp.get(&i.number).copied().unwrap_or_default(), i.applied.amount, "ERP and o2c disagree on {}", i.number);
    }
    let live = rec.payments.values().filter(|p| p.reversed_by.is_none());
    for p in live {
        let applied: Decimal = p.applications.iter().map(|a| a.amount.amount).sum();
        assert_eq!(applied + p.unapplied.amount, p.amount.amount, "{}: applied + unapplied = received", p.payment_id);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn when_remittances_quote_invoices_or_the_amount_matches_should_apply_partially_then_fully_and_ignore_a_duplicate_notification() {
    let h = Harness::new().await;
    let inv = two_posted_invoices(&h, "0068d00000CASH01").await;
    let (first, second) = (&inv[0], &inv[1]);

    // A partial payment quoting the second invoice in its structured references.
    let p1 = Payment::new("BANK-1", LE, "10000.00", "SGD").from(ACCOUNT).quoting(&[number(second)]);
    h.send(vec![p1.event()]).await;
    h.settle().await;
    let rec = receivables(&h, CUSTOMER).await;
    assert_eq!(rec.invoices[&second.invoice_id].open().amount, total(second) - dec!(10000.00));
    assert_eq!(rec.invoices[&first.invoice_id].open().amount, total(first), "the unquoted invoice stays open");
    assert_eq!(rec.payments["BANK-1"].rule, MatchRule::Remittance);

    // The rest of it, without a reference: exactly one invoice has that open amount.
    let rest = (total(second) - dec!(10000.00)).to_string();
    let p2 = Payment::new("BANK-2", LE, &rest, "SGD").from(ACCOUNT);
    // The bank notifies the same credit twice (two notification ids, one payment id).
    h.send(vec![p2.event_as("notif-2a"), p2.event_as("notif-2b")]).await;
    h.settle().await;
    let rec = receivables(&h, CUSTOMER).await;
    assert_eq!(rec.payments["BANK-2"].rule, MatchRule::ExactAmount);
    assert!(rec.invoices[&second.invoice_id].open().amount.is_zero(), "{:?}", rec.invoices[&second.invoice_id]);

    // Remittance text only, no payer account: the quoted number finds the customer.
    let p3 = Payment::new("BANK-3", LE, &total(first).to_string(), "SGD").remittance("Payment for INV LE-SG-01-000001, thank you");
    h.send(vec![p3.event()]).await;
    h.settle().await;
    let rec = receivables(&h, CUSTOMER).await;
    assert_eq!(rec.payments["BANK-3"].rule, MatchRule::Remittance);
    assert!(rec.balance().values().all(Decimal::is_zero), "{:?}", rec.balance());
    assert!(rec.payments.values().all(|p| p.status == PaymentStatus::Booked && p.unapplied.amount.is_zero()));
    assert!(rec.open_issues().next().is_none(), "{:?}", rec.issues);
    assert_books_agree(&h, &rec).await;

    // The bank reuses a reference for another amount: parked for an operator, never
    // dropped as a duplicate nor applied over the first.
    h.send(vec![Payment::new("BANK-1", LE, "5.00", "SGD").from(ACCOUNT).event_as("reused-ref")]).await;
    h.settle().await;
    let parked = h.rt.store().rejections(20).await.unwrap();
    assert!(parked.iter().any(|r| r.reasons.iter().any(|i| i.code == "payment_id_reused")), "{parked:?}");
    assert_eq!(receivables(&h, CUSTOMER).await.payments["BANK-1"].amount.amount, dec!(10000.00));

    // One receipt per payment in the ERP (the duplicate notification booked nothing), one
    // PaymentApplied per payment, nothing unapplied.
    let receipts = h.rt.sims().receipts().await.unwrap();
    let ids: Vec<&str> = receipts.iter().map(|r| r.receipt.payment_id.as_str()).collect();
    assert_eq!(ids, ["BANK-1", "BANK-2", "BANK-3"]);
    assert!(receipts.iter().all(|r| r.receipt.erp_customer_id.as_deref() == Some("C-10003")));
    let applied = published(&h, "PaymentApplied").await;
    assert_eq!(applied.len(), 3, "{applied:?}");
    assert!(published(&h, "PaymentUnapplied").await.is_empty());
    let p1_event = applied.iter().find(|p| p["payment_id"] == "BANK-1").unwrap();
    assert_eq!(p1_event["applications"][0]["number"], number(second));
    assert_eq!(p1_event["applications"][0]["open_after"]["amount"], (total(second) - dec!(10000.00)).to_string());

    // The CRM shows both invoices on the account and the opportunity, paid.
    let crm = h.rt.sims().crm_invoices().await.unwrap();
    assert_eq!(crm.iter().map(|c| c.number.as_str()).collect::<Vec<_>>(), [number(first), number(second)]);
    for c in &crm {
        assert_eq!((c.status.as_str(), c.open_balance.amount), ("paid", Decimal::ZERO), "{c:?}");
        assert_eq!((c.account_id.as_str(), c.opportunity_id.as_str()), (CUSTOMER, "0068d00000CASH01"));
    }
    assert_eq!(crm[1].version, 3, "posted, then two payments");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn when_invoice_and_payment_events_reach_the_crm_late_or_twice_should_leave_it_with_the_newest_open_balance() {
    let h = Harness::new().await;
    let inv = two_posted_invoices(&h, "0068d00000CASH07").await;
    h.send(vec![Payment::new("BANK-70", LE, "1000.00", "SGD").from(ACCOUNT).quoting(&[number(&inv[0])]).event()]).await;
    h.settle().await;
    let open = total(&inv[0]) - dec!(1000.00);
    let shown = |crm: &[o2c_domain::receivables::CrmInvoice]| crm.iter().find(|c| c.number == number(&inv[0])).cloned().unwrap();
    let before = shown(&h.rt.sims().crm_invoices().await.unwrap());
    assert_eq!((before.status.as_str(), before.open_balance.amount, before.version), ("partially_paid", open, 2));

    // The invoice's posting and the payment arrive again, as new deliveries (a replay, a
    // late retry): the CRM keeps the newest state.
    let mut late: Vec<_> = h
        .bus_events()
        .await
        .into_iter()
        .filter(|(t, d)| (t == "InvoicePosted" && d["payload"]["number"] == number(&inv[0])) || t == "PaymentApplied")
        .map(|(t, mut d)| {
            d["event_id"] = serde_json::json!(format!("late-{}", d["event_id"].as_str().unwrap()));
            d["idempotency_key"] = serde_json::json!(format!("late-{}", d["idempotency_key"].as_str().unwrap()));
            let source = if t == "InvoicePosted" { "o2c.invoicing" } else { "o2c.cash" };
            (source, if t == "InvoicePosted" { "InvoicePosted" } else { "PaymentApplied" }, d)
        })
        .collect();
    assert_eq!(late.len(), 2);
    late.reverse();
    h.send(late).await;
    h.settle().await;
    let after = shown(&h.rt.sims().crm_invoices().await.unwrap());
    assert_eq!(after, before, "nothing older overwrote the CRM");
    let writes: Vec<String> =
        h.rt.sims()
            .calls()
            .await
            .unwrap()
            .into_iter()
            .filter(|c| c.operation == "upsert_invoice" && c.key == number(&inv[0]))
            .map(|c| c.outcome)
            .collect();
    assert_eq!(writes.iter().filter(|o| *o == "stale").count(), 2, "{writes:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn when_cash_quotes_nothing_and_matches_no_amount_should_pay_the_oldest_invoices_first_and_keep_the_over_payment_as_credit() {
    let h = Harness::new().await;
    let inv = two_posted_invoices(&h, "0068d00000CASH02").await;
    let sum = total(&inv[0]) + total(&inv[1]);
    let p = Payment::new("BANK-10", LE, &(sum + dec!(42.50)).to_string(), "SGD").from("sg-dbs-0012345678 ");
    h.send(vec![p.event()]).await;
    h.settle().await;
    let rec = receivables(&h, CUSTOMER).await;
    let record = &rec.payments["BANK-10"];
    assert_eq!(record.rule, MatchRule::OldestFirst);
    let order: Vec<&str> = record.applications.iter().map(|a| a.number.as_str()).collect();
    assert_eq!(order, [number(&inv[0]), number(&inv[1])], "oldest due first");
    assert_eq!(record.unapplied.amount, dec!(42.50));
    assert_eq!(rec.unapplied().get("SGD").copied(), Some(dec!(42.50)), "the customer's credit");
    assert!(rec.balance().values().all(Decimal::is_zero));
    assert_books_agree(&h, &rec).await;
    let unapplied = published(&h, "PaymentUnapplied").await;
    assert_eq!(unapplied.len(), 1);
    assert_eq!(unapplied[0]["amount"]["amount"], "42.50");
    assert_eq!(h.rt.sims().receipts().await.unwrap()[0].receipt.unapplied.amount, dec!(42.50), "on account in the ERP too");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn when_cash_comes_in_another_currency_or_from_an_unknown_payer_should_leave_it_unapplied_with_an_issue_and_guess_nothing() {
    let h = Harness::new().await;
    let inv = two_posted_invoices(&h, "0068d00000CASH03").await;
    // EUR against SGD invoices, quoting one of them: no exchange rate is guessed.
    let eur = Payment::new("BANK-20", LE, "5000.00", "EUR").from(ACCOUNT).quoting(&[number(&inv[0])]);
    // An account nobody has on file, quoting nothing: suspense.
    let stranger = Payment::new("BANK-21", LE, "777.00", "SGD").from("XX00-UNKNOWN").remittance("consulting fees");
    h.send(vec![eur.event(), stranger.event()]).await;
    h.settle().await;

    let rec = receivables(&h, CUSTOMER).await;
    let record = &rec.payments["BANK-20"];
    assert_eq!(record.rule, MatchRule::CurrencyMismatch);
    assert!(record.applications.is_empty());
    assert_eq!(record.unapplied.amount, dec!(5000.00));
    assert!(rec.balance().get("SGD").copied().unwrap() == total(&inv[0]) + total(&inv[1]), "both invoices still open");
    let issue = rec.open_issues().find(|i| i.payment_id == "BANK-20").expect("an issue for the operator");
    assert!(issue.message.contains("no exchange rate is guessed"), "{}", issue.message);

    let suspense = receivables(&h, SUSPENSE).await;
    let record = &suspense.payments["BANK-21"];
    assert_eq!(record.rule, MatchRule::Unmatched);
    assert_eq!(record.unapplied.amount, dec!(777.00));
    assert!(suspense.open_issues().any(|i| i.payment_id == "BANK-21" && i.message.contains("suspense")), "{:?}", suspense.issues);

    let receipts = h.rt.sims().receipts().await.unwrap();
    let by_id: BTreeMap<&str, _> = receipts.iter().map(|r| (r.receipt.payment_id.as_str(), &r.receipt)).collect();
    assert!(by_id["BANK-20"].applications.is_empty());
    assert_eq!(by_id["BANK-21"].erp_customer_id, None, "an unidentified receipt in the ERP");
    let unapplied = published(&h, "PaymentUnapplied").await;
    assert_eq!(unapplied.len(), 2);
    assert!(unapplied.iter().any(|u| u["customer_id"] == SUSPENSE));
    assert_books_agree(&h, &rec).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn when_a_payment_is_returned_should_reopen_what_it_paid_once_even_when_the_return_overtakes_the_payment() {
    let h = Harness::new().await;
    let inv = two_posted_invoices(&h, "0068d00000CASH04").await;
    let pay = Payment::new("BANK-30", LE, &total(&inv[0]).to_string(), "SGD").from(ACCOUNT).quoting(&[number(&inv[0])]);
    h.send(vec![pay.event()]).await;
    h.settle().await;
    assert!(receivables(&h, CUSTOMER).await.invoices[&inv[0].invoice_id].open().amount.is_zero());
    // Paid and booked: the invoice and the payment settled out of the open items.
    let open = open_items(&h, CUSTOMER).await;
    assert!(!open.invoices.contains_key(&inv[0].invoice_id) && !open.payments.contains_key("BANK-30"), "{open:?}");
    let (invoice_ref, payment_ref) = refs(&h, number(&inv[0]), "BANK-30").await;
    assert_eq!(invoice_ref.settled.map(|i| i.status()), Some("paid"));
    assert_eq!(payment_ref.settled.map(|p| p.applications.len()), Some(1));

    // Returned, notified twice; and a partial return that is not automatic.
    let back = Payment::new("BANK-31", LE, &total(&inv[0]).to_string(), "SGD").reversing("BANK-30");
    let partial = Payment::new("BANK-32", LE, "1.00", "SGD").reversing("BANK-30");
    h.send(vec![back.event_as("n-31a"), back.event_as("n-31b"), partial.event()]).await;
    h.settle().await;
    let rec = receivables(&h, CUSTOMER).await;
    assert_eq!(rec.invoices[&inv[0].invoice_id].open().amount, total(&inv[0]), "open again");
    assert_eq!(rec.payments["BANK-30"].reversed_by.as_deref(), Some("BANK-31"));
    assert!(rec.open_issues().any(|i| i.payment_id == "BANK-31"), "a chargeback needs an operator");
    // The invoice came back into the open items; the reversed payment rests on its reference.
    assert!(open_items(&h, CUSTOMER).await.invoices.contains_key(&inv[0].invoice_id));
    let (invoice_ref, payment_ref) = refs(&h, number(&inv[0]), "BANK-30").await;
    assert_eq!(invoice_ref.settled, None, "open again, no longer settled");
    assert_eq!(payment_ref.settled.and_then(|p| p.reversed_by).as_deref(), Some("BANK-31"));
    let reversed = published(&h, "PaymentReversed").await;
    assert_eq!(reversed.len(), 1, "once, though notified twice");
    assert_eq!(reversed[0]["reopened"][0]["open_after"]["amount"], total(&inv[0]).to_string());
    let erp = h.rt.sims().receipts().await.unwrap();
    assert_eq!(erp.iter().find(|r| r.receipt.payment_id == "BANK-30").unwrap().reversed_by.as_deref(), Some("BANK-31"));
    assert_books_agree(&h, &rec).await;
    let crm = h.rt.sims().crm_invoices().await.unwrap();
    let reopened = crm.iter().find(|c| c.number == number(&inv[0])).unwrap();
    assert_eq!((reopened.status.as_str(), reopened.open_balance.amount), ("open", total(&inv[0])), "the CRM sees it open again");
    // The partial return (BANK-32) comes after the full one: nothing left to reverse, a
    // duplicate. (A partial return of a live payment is parked with its reason — below.)

    // The return of a second payment arrives before the payment itself.
    let pay2 = Payment::new("BANK-40", LE, &total(&inv[1]).to_string(), "SGD").from(ACCOUNT).quoting(&[number(&inv[1])]);
    let back2 = Payment::new("BANK-41", LE, &total(&inv[1]).to_string(), "SGD").reversing("BANK-40");
    h.send(vec![back2.event()]).await;
    h.send(vec![pay2.event()]).await;
    h.settle().await;
    let rec = receivables(&h, CUSTOMER).await;
    assert_eq!(rec.payments["BANK-40"].reversed_by.as_deref(), Some("BANK-41"), "{:?}", rec.payments.get("BANK-40"));
    assert_eq!(rec.invoices[&inv[1].invoice_id].open().amount, total(&inv[1]));
    assert_books_agree(&h, &rec).await;

    // A partial return of a live payment: parked with its reason, nothing changes.
    let pay3 = Payment::new("BANK-50", LE, "100.00", "SGD").from(ACCOUNT).quoting(&[number(&inv[1])]);
    h.send(vec![pay3.event()]).await;
    h.settle().await;
    h.send(vec![Payment::new("BANK-51", LE, "60.00", "SGD").reversing("BANK-50").event()]).await;
    h.settle().await;
    let parked = h.rt.store().rejections(20).await.unwrap();
    assert!(parked.iter().any(|r| r.body.contains("BANK-51") && r.reasons.iter().any(|i| i.code == "partial_reversal")), "{parked:?}");
    assert_eq!(receivables(&h, CUSTOMER).await.payments["BANK-50"].reversed_by, None);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn when_payments_of_one_customer_race_should_never_apply_an_invoice_twice_in_o2c_or_the_erp() {
    let h = Harness::new().await;
    let inv = two_posted_invoices(&h, "0068d00000CASH05").await;
    // Eight credits at once, none quoting anything: each invoice's exact amount twice
    // (only one of each pair can take it), and small amounts that go oldest first.
    let amounts = [total(&inv[0]), total(&inv[1]), total(&inv[0]), total(&inv[1]), dec!(100.00), dec!(250.00), dec!(0.01), dec!(99.99)];
    let events: Vec<_> = amounts
        .iter()
        .enumerate()
        .map(|(n, a)| Payment::new(&format!("BANK-R{n}"), LE, &a.to_string(), "SGD").from(ACCOUNT).event())
        .collect();
    h.send(events).await;
    h.settle().await;
    let rec = receivables(&h, CUSTOMER).await;
    assert_eq!(rec.payments.len(), 8);
    assert!(rec.payments.values().all(|p| p.status == PaymentStatus::Booked), "{:?}", rec.payments);
    assert_books_agree(&h, &rec).await;
    let received: Decimal = amounts.iter().sum();
    let applied: Decimal = rec.invoices.values().map(|i| i.applied.amount).sum();
    let unapplied = rec.unapplied().get("SGD").copied().unwrap_or_default();
    assert_eq!(applied + unapplied, received, "cash = applied + unapplied");
    assert_eq!(applied, total(&inv[0]) + total(&inv[1]), "both invoices end fully paid");
    // The ERP never had to refuse an over-application.
    let calls = h.rt.sims().calls().await.unwrap();
    assert!(calls.iter().filter(|c| c.operation == "book_receipt").all(|c| c.outcome == "created"), "{calls:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn when_the_erp_refuses_a_receipt_or_loses_its_answer_should_keep_the_cash_unapplied_with_an_issue_or_book_it_once() {
    let h = Harness::new().await;
    let inv = two_posted_invoices(&h, "0068d00000CASH06").await;
    let refusal = Fault::Rejected { status: 400, code: "PERIOD_CLOSED".into(), message: "Posting period Jan 2027 is closed".into() };
    h.rt.sims().inject(System::Erp, "book_receipt", refusal, Some(1)).await.unwrap();
    h.send(vec![Payment::new("BANK-60", LE, "1000.00", "SGD").from(ACCOUNT).quoting(&[number(&inv[0])]).event()]).await;
    h.settle().await;
    let rec = receivables(&h, CUSTOMER).await;
    let record = &rec.payments["BANK-60"];
    assert_eq!(record.status, PaymentStatus::Refused);
    assert!(record.applications.is_empty());
    assert_eq!(record.unapplied.amount, dec!(1000.00));
    assert_eq!(rec.invoices[&inv[0].invoice_id].open().amount, total(&inv[0]), "the ERP's view: still open");
    assert!(rec.open_issues().any(|i| i.payment_id == "BANK-60" && i.message.contains("PERIOD_CLOSED")), "{:?}", rec.issues);
    assert!(h.rt.sims().receipts().await.unwrap().is_empty());
    assert_books_agree(&h, &rec).await;

    // The ERP books the next one and the answer is lost twice: booked once all the same.
    h.rt.sims().inject(System::Erp, "book_receipt", Fault::TimeoutAfterCommit, Some(2)).await.unwrap();
    h.send(vec![Payment::new("BANK-61", LE, "1000.00", "SGD").from(ACCOUNT).quoting(&[number(&inv[0])]).event()]).await;
    h.settle().await;
    let rec = receivables(&h, CUSTOMER).await;
    assert_eq!(rec.payments["BANK-61"].status, PaymentStatus::Booked);
    let receipts = h.rt.sims().receipts().await.unwrap();
    assert_eq!(receipts.len(), 1, "{receipts:?}");
    assert_eq!(rec.invoices[&inv[0].invoice_id].open().amount, total(&inv[0]) - dec!(1000.00));
    assert_books_agree(&h, &rec).await;
    assert_eq!(h.rt.dead_letters().await.unwrap(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn when_the_crm_refuses_an_invoice_record_should_park_the_sync_and_let_go_of_its_key() {
    use o2c_app::ports::IdempotencyStore;
    let h = Harness::new().await;
    let inv = two_posted_invoices(&h, "0068d00000CASH07").await;
    let refusal = Fault::Rejected { status: 400, code: "ENTITY_IS_LOCKED".into(), message: "Invoice record is locked".into() };
    h.rt.sims().inject(System::Crm, "upsert_invoice", refusal, Some(1)).await.unwrap();
    h.send(vec![Payment::new("BANK-70", LE, "1000.00", "SGD").from(ACCOUNT).quoting(&[number(&inv[0])]).event()]).await;
    h.settle().await;
    let parked = h.rt.store().rejections(20).await.unwrap();
    assert!(
        parked.iter().any(|r| r.step == "crm-invoice-sync" && r.reasons.iter().any(|i| i.code == "crm_refused")),
        "the refusal is parked for an operator: {parked:?}"
    );
    // The refused step let go of the event's key: a copy of the event (or a redelivery) runs
    // at once rather than waiting for a reservation nobody holds any more.
    let key = "crm-invoice-sync#payment-applied:BANK-70";
    assert!(h.rt.store().get(key).await.unwrap().is_none(), "{:?}", h.rt.store().get(key).await.unwrap());
    // The same key of a payment the CRM takes is completed (the key is the one the step uses).
    h.send(vec![Payment::new("BANK-71", LE, "1000.00", "SGD").from(ACCOUNT).quoting(&[number(&inv[0])]).event()]).await;
    h.settle().await;
    let done = h.rt.store().get("crm-invoice-sync#payment-applied:BANK-71").await.unwrap().expect("completed");
    assert_eq!(done.status, o2c_app::ports::IdempotencyStatus::Completed);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn when_the_consumer_stops_during_the_last_delivery_of_a_payment_should_park_it_as_it_dead_letters_unless_it_was_processed() {
    let h = Harness::new().await;
    h.send(vec![Payment::new("BANK-80", LE, "250.00", "SGD").from(ACCOUNT).event()]).await;
    // Five deliveries (the template's maxReceiveCount), each to a consumer that stopped before
    // it answered: the next receive moves the message to the DLQ, and no handler ran.
    for n in 1..=5 {
        let got = h.rt.bus().receive("CashApplicationQueue", 10, std::time::Duration::ZERO).await.unwrap();
        assert_eq!(got.iter().map(|m| m.receive_count).collect::<Vec<_>>(), [n]);
    }
    h.settle().await;
    let dlq = h.rt.bus().list("CashApplicationDLQ", 10).await.unwrap();
    assert_eq!(dlq.len(), 1);
    // A payment has no engagement to raise the dead-letter exception on: it is parked,
    // naming the message, why and where it went.
    let parked = h.rt.store().rejections(20).await.unwrap();
    let p = parked.iter().find(|p| p.message_ids.contains(&dlq[0].message_id)).unwrap_or_else(|| panic!("not parked: {parked:?}"));
    assert_eq!(p.step, "cash-application");
    assert_eq!(p.reasons[0].code, "dead_lettered");
    assert!(p.reasons[0].message.contains("CashApplicationDLQ"), "{:?}", p.reasons);
    assert!(p.reasons.iter().any(|r| r.message.contains("the consumer stopped during the delivery")), "{:?}", p.reasons);
    let loaded = h.rt.store().load_aggregates(&[AggregateKey::receivables(LE, CUSTOMER)]).await.unwrap();
    assert!(loaded.receivables(LE, CUSTOMER).is_none_or(|r| r.payments.is_empty()), "nothing was applied");

    // A copy of a payment the step had completed (its batch crashed after the record was
    // processed) dead-letters the same way: nothing to park, nothing to resubmit.
    let done = Payment::new("BANK-81", LE, "100.00", "SGD").from(ACCOUNT);
    h.send(vec![done.event()]).await;
    h.settle().await;
    h.send(vec![done.event()]).await;
    for _ in 1..=5 {
        assert_eq!(h.rt.bus().receive("CashApplicationQueue", 10, std::time::Duration::ZERO).await.unwrap().len(), 1);
    }
    h.settle().await;
    let dlq = h.rt.bus().list("CashApplicationDLQ", 10).await.unwrap();
    assert_eq!(dlq.len(), 2);
    let parked = h.rt.store().rejections(20).await.unwrap();
    assert!(!parked.iter().any(|p| p.message_ids.contains(&dlq[1].message_id)), "{parked:?}");
    assert_eq!(parked.iter().filter(|p| p.step == "cash-application").count(), 1, "only BANK-80: {parked:?}");
}
