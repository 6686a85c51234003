//! Revenue recognition through the embedded runtime: each contract line by its method
//! (milestones on completion, T&M as delivered, the fixed fee ratably), only the difference
//! booked per period (a correction of earlier work reverses revenue in a later period),
//! closed periods booking into the first open one, the scheduled fan-out, an ERP that refuses
//! a journal or loses its answer — checked in o2c's revenue ledger and the ERP's journals.
#![allow(missing_docs, clippy::unwrap_used, clippy::expect_used)]

use o2c_app::ports::{EngagementStore, RejectionStore};
use o2c_domain::aggregate::{AggregateKey, AggregateKind};
use o2c_domain::engagement::EngagementStatus;
use o2c_domain::events::ExceptionKind;
use o2c_domain::model::BillingItem;
use o2c_domain::revenue::{JournalStatus, RevenueKind, RevenueLedger};
use o2c_embedded::sim::{Fault, System};
use o2c_tests::delivery::{Time, assigned, milestone, revenue_run};
use o2c_tests::{Harness, asia_payload, closed_won};
use rust_decimal::Decimal;
use rust_decimal_macros::dec;

/// An active Globex engagement with a manager staffed on it (see [`o2c_tests::active_globex`]).
async fn active_globex(h: &Harness, opp: &str) -> (String, String) {
    let (eng, project) = o2c_tests::active_globex(h, opp).await;
    h.send(vec![assigned(&eng, &project, &format!("AS-{opp}"), "EMP-1", "MANAGER", ("2027-01-04", "2027-12-17"), 1)]).await;
    h.settle().await;
    (eng, project)
}

async fn revenue(h: &Harness, eng: &str) -> RevenueLedger {
    h.rt.store()
        .load_aggregates(&[AggregateKey::revenue_ledger(eng)])
        .await
        .unwrap()
        .revenue_ledger(eng)
        .cloned()
        .expect("a revenue ledger")
}

/// What the WIP holds for approved billable time on `line` (hours × rate, as delivery intake priced it).
async fn time_value(h: &Harness, eng: &str, line: &str) -> Decimal {
    let shards = h.rt.store().load_all(AggregateKind::WipShard, eng).await.unwrap();
    shards.wip_shards().values().flat_map(|s| s.entries.values()).filter(|e| e.line_id == line).map(|e| e.amount.amount).sum()
}

/// `value × days / 348` rounded half away from zero at the cent: the ratable fixed fee of
/// Globex's L3 (4 Jan – 17 Dec 2027 is 348 days).
fn ratable(days: i64) -> Decimal {
    (dec!(100000.00) * Decimal::from(days) / Decimal::from(348))
        .round_dp_with_strategy(2, rust_decimal::RoundingStrategy::MidpointAwayFromZero)
}

fn line<'a>(rl: &'a RevenueLedger, journal: usize, line_id: &str) -> Option<&'a o2c_domain::revenue::JournalLine> {
    rl.journals[journal].lines.iter().find(|l| l.line_id == line_id)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn when_periods_end_should_recognise_each_line_by_its_method_and_book_only_the_difference() {
    let h = Harness::new().await;
    let (eng, project) = active_globex(&h, "0068d00000REV001").await;
    let week: Vec<_> = (11..=15)
        .map(|d| Time::new(&format!("TE-R-{d}"), "EMP-1", "MANAGER", "L2", &format!("2027-01-{d}"), "8").event(&eng, &project))
        .collect();
    h.send(week).await;
    h.settle().await;
    let january_time = time_value(&h, &eng, "L2").await;
    assert!(january_time > Decimal::ZERO);

    h.send(vec![revenue_run("JAN", "2027-01", Some(&eng))]).await;
    h.settle().await;
    let rl = revenue(&h, &eng).await;
    assert_eq!(rl.journals.len(), 1);
    let j = &rl.journals[0];
    assert_eq!((j.status, j.period.to_string()), (JournalStatus::Posted, "2027-01".to_owned()));
    assert_eq!(line(&rl, 0, "L2").unwrap().amount.amount, january_time, "T&M: approved hours × rate");
    // 4–31 January: 28 of 348 days.
    assert_eq!(line(&rl, 0, "L3").unwrap().amount.amount, ratable(28));
    assert_eq!(line(&rl, 0, "L3").unwrap().kind, RevenueKind::FixedFee);
    assert!(line(&rl, 0, "L1").is_none(), "no milestone completed yet");
    assert_eq!(j.total.amount, january_time + ratable(28));

    // A period that has not ended yet is refused with its reason (nothing booked ahead).
    let mut early = revenue_run("EARLY", "2027-06", Some(&eng));
    early.2["payload"]["as_of"] = serde_json::json!("2027-06-15");
    h.send(vec![early]).await;
    h.settle().await;
    let parked = h.rt.store().rejections(10).await.unwrap();
    assert!(parked.iter().any(|r| r.reasons.iter().any(|i| i.code == "period_not_ended")), "{parked:?}");
    assert_eq!(revenue(&h, &eng).await.journals.len(), 1);

    // The same period again: nothing to add.
    h.send(vec![revenue_run("JAN-AGAIN", "2027-01", Some(&eng))]).await;
    h.settle().await;
    assert_eq!(revenue(&h, &eng).await.journals.len(), 1);

    // February: a January entry corrected down to 4 h, the Mobilize milestone completed.
    let mut corrected = Time::new("TE-R-11", "EMP-1", "MANAGER", "L2", "2027-01-11", "4");
    corrected.version = 2;
    h.send(vec![corrected.event(&eng, &project), milestone(&eng, &project, "L1-MOBILIZE", "2027-02-10")]).await;
    h.settle().await;
    let february_time = time_value(&h, &eng, "L2").await;
    assert!(february_time < january_time);
    h.send(vec![revenue_run("FEB", "2027-02", Some(&eng))]).await;
    h.settle().await;
    let rl = revenue(&h, &eng).await;
    assert_eq!(rl.journals.len(), 2);
    let schedule = h.engagement(&eng).await.billing_schedule.unwrap();
    let mobilize = schedule
        .items
        .iter()
        .find_map(|i| match i {
            BillingItem::Milestone { milestone_id, amount, .. } if milestone_id == "L1-MOBILIZE" => Some(amount.amount),
            _ => None,
        })
        .unwrap();
    assert_eq!(line(&rl, 1, "L1").unwrap().amount.amount, mobilize, "the milestone's scheduled amount on completion");
    assert_eq!(line(&rl, 1, "L2").unwrap().amount.amount, february_time - january_time, "the correction reverses revenue in February");
    assert_eq!(line(&rl, 1, "L3").unwrap().amount.amount, ratable(56) - ratable(28));
    assert_eq!(line(&rl, 1, "L3").unwrap().to_date.amount, ratable(56));
    assert_eq!(rl.recognised["L2"].amount, february_time);
    assert_eq!(rl.by_period["2027-01"].amount + rl.by_period["2027-02"].amount, mobilize + february_time + ratable(56));

    // The ERP holds both journals, once each, with the same totals; both were announced.
    let erp = h.rt.sims().journals().await.unwrap();
    assert_eq!(erp.len(), 2);
    assert_eq!(erp.iter().map(|j| j.journal.total.amount).sum::<Decimal>(), rl.recognised.values().map(|m| m.amount).sum::<Decimal>());
    let events: Vec<_> = h.bus_events().await.into_iter().filter(|(t, _)| t == "RevenueRecognized").collect();
    assert_eq!(events.len(), 2);
    assert_eq!(events[1].1["payload"]["period"], "2027-02");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn when_the_schedule_runs_should_recognise_every_active_engagement_and_book_a_closed_period_into_the_next_open_one() {
    let h = Harness::new().await;
    let (globex, _) = active_globex(&h, "0068d00000REV002").await;
    h.send(vec![closed_won(asia_payload("0068d00000REV003", 1, "60000.00"))]).await;
    h.settle().await;
    let asia = "ENG-0068d00000REV003".to_owned();
    assert_eq!(h.engagement(&asia).await.status, EngagementStatus::Active);

    // Every active engagement, for February (Singapore has closed January to March).
    h.send(vec![revenue_run("SCHED-FEB", "2027-02", None)]).await;
    h.settle().await;
    let g = revenue(&h, &globex).await;
    assert_eq!((g.journals[0].requested_period.to_string(), g.journals[0].period.to_string()), ("2027-02".into(), "2027-02".into()));
    let a = revenue(&h, &asia).await;
    assert_eq!(a.journals.len(), 1);
    assert_eq!((a.journals[0].requested_period.to_string(), a.journals[0].period.to_string()), ("2027-02".into(), "2027-04".into()));
    assert_eq!(a.by_period.keys().map(String::as_str).collect::<Vec<_>>(), ["2027-04"]);
    let erp = h.rt.sims().journals().await.unwrap();
    assert!(
        erp.iter().all(|j| j.journal.legal_entity_id != "LE-SG-01" || j.journal.period.to_string() == "2027-04"),
        "nothing into a closed period"
    );
    // Asia's fixed fee (SGD 60,000, 11 Jan – 30 Apr 2027: 110 days) ratably through February: 49 days.
    let expected = (dec!(60000.00) * dec!(49) / dec!(110)).round_dp_with_strategy(2, rust_decimal::RoundingStrategy::MidpointAwayFromZero);
    assert_eq!(a.recognised["2"].amount, expected);
    // A repeated schedule tick is absorbed.
    h.send(vec![revenue_run("SCHED-FEB", "2027-02", None)]).await;
    h.settle().await;
    assert_eq!(h.rt.sims().journals().await.unwrap().len(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn when_the_erp_refuses_a_journal_or_loses_its_answer_should_raise_an_exception_then_post_once_and_close_it() {
    let h = Harness::new().await;
    let (eng, _) = active_globex(&h, "0068d00000REV004").await;
    let refusal = Fault::Rejected { status: 400, code: "INVALID_ACCOUNT".into(), message: "Revenue account 4000 is inactive".into() };
    h.rt.sims().inject(System::Erp, "post_journal", refusal, Some(1)).await.unwrap();
    h.send(vec![revenue_run("MAR-1", "2027-03", Some(&eng))]).await;
    h.settle().await;
    let rl = revenue(&h, &eng).await;
    assert_eq!(rl.journals[0].status, JournalStatus::Refused);
    assert!(rl.recognised.is_empty(), "nothing counts as recognised until the ERP holds it");
    let e = h.engagement(&eng).await;
    let x = e.exceptions.iter().find(|x| x.kind == ExceptionKind::RevenuePostingFailed).expect("an exception");
    assert!(x.open && x.message.contains("INVALID_ACCOUNT"), "{x:?}");
    assert!(h.rt.sims().journals().await.unwrap().is_empty());

    // Fixed in the ERP; the run again — and its answer is lost twice.
    h.rt.sims().inject(System::Erp, "post_journal", Fault::TimeoutAfterCommit, Some(2)).await.unwrap();
    h.send(vec![revenue_run("MAR-2", "2027-03", Some(&eng))]).await;
    h.settle().await;
    let rl = revenue(&h, &eng).await;
    assert_eq!(rl.journals.len(), 2);
    assert_eq!(rl.journals[1].status, JournalStatus::Posted);
    let erp = h.rt.sims().journals().await.unwrap();
    assert_eq!(erp.len(), 1, "posted once");
    assert_eq!(erp[0].journal.journal_id, rl.journals[1].journal_id);
    let e = h.engagement(&eng).await;
    assert!(e.exceptions.iter().filter(|x| x.kind == ExceptionKind::RevenuePostingFailed).all(|x| !x.open), "closed by the posted journal");
    assert_eq!(h.rt.dead_letters().await.unwrap(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn when_a_journal_is_left_pending_should_post_it_with_the_next_run_which_then_runs_its_own_period() {
    let h = Harness::new().await;
    let (eng, _) = active_globex(&h, "0068d00000REV005").await;
    // January's journal is claimed, then the ERP is down until its message dead-letters.
    h.rt.sims().inject(System::Erp, "post_journal", Fault::ServerError { status: 503 }, None).await.unwrap();
    h.send(vec![revenue_run("JAN", "2027-01", Some(&eng))]).await;
    h.settle().await;
    let rl = revenue(&h, &eng).await;
    assert_eq!(rl.pending().map(|j| j.requested_period.to_string()), Some("2027-01".to_owned()), "claimed, never posted");
    assert!(rl.recognised.is_empty());
    assert!(h.rt.dead_letters().await.unwrap() >= 1);
    assert!(h.rt.sims().journals().await.unwrap().is_empty());

    // The ERP is back; February's run posts January's journal first, then asks for itself again.
    h.rt.sims().clear_faults().await.unwrap();
    h.send(vec![revenue_run("FEB", "2027-02", Some(&eng))]).await;
    h.settle().await;
    let rl = revenue(&h, &eng).await;
    let journals: Vec<(String, JournalStatus)> = rl.journals.iter().map(|j| (j.requested_period.to_string(), j.status)).collect();
    assert_eq!(journals, [("2027-01".to_owned(), JournalStatus::Posted), ("2027-02".to_owned(), JournalStatus::Posted)]);
    assert_eq!(rl.last_period.map(|p| p.to_string()), Some("2027-02".to_owned()));
    assert_eq!(h.rt.sims().journals().await.unwrap().len(), 2, "each journal once");
    // January's fixed fee (28 of 348 days) then February's difference: exactly 56 days' worth.
    assert_eq!(rl.recognised["L3"].amount, ratable(56));
}
