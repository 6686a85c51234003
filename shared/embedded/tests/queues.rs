//! Queue semantics of the embedded bus: visibility, redelivery, dead-lettering, FIFO
//! groups, deduplication, redrive.
#![allow(missing_docs, clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;
use std::time::Duration;

use o2c_app::bus::PutEventsEntry;
use o2c_embedded::bus::LocalBus;
use o2c_embedded::db::Db;
use o2c_topology::topology::Topology;

const TEMPLATE: &str = r#"
Resources:
  Bus: {Type: AWS::Events::EventBus, Properties: {Name: test-bus}}
  Dlq: {Type: AWS::SQS::Queue}
  Q:
    Type: AWS::SQS::Queue
    Properties: {VisibilityTimeout: 60, RedrivePolicy: {deadLetterTargetArn: !GetAtt Dlq.Arn, maxReceiveCount: 2}}
  FifoDlq: {Type: AWS::SQS::Queue, Properties: {FifoQueue: true}}
  Fifo:
    Type: AWS::SQS::Queue
    Properties: {FifoQueue: true, RedrivePolicy: {deadLetterTargetArn: !GetAtt FifoDlq.Arn, maxReceiveCount: 5}}
  R:
    Type: AWS::Events::Rule
    Properties:
      EventPattern: {source: [t]}
      Targets: [{Id: q, Arn: !GetAtt Q.Arn}]
"#;

async fn bus() -> (LocalBus, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let db = Db::open(&dir.path().join("q.db")).unwrap();
    let topo = Arc::new(Topology::from_sam_yaml(TEMPLATE).unwrap());
    (LocalBus::new(db, topo, "test-bus".into()).unwrap(), dir)
}

fn entry(n: u32) -> PutEventsEntry {
    PutEventsEntry { source: Some("t".into()), detail_type: Some("T".into()), detail: Some(format!("{{\"n\":{n}}}")), ..Default::default() }
}

#[tokio::test]
async fn when_message_is_received_should_stay_invisible_until_deleted_or_retried() {
    let (bus, _d) = bus().await;
    bus.put_events(vec![entry(1)]).await.unwrap();
    let got = bus.receive("Q", 10, Duration::from_secs(60)).await.unwrap();
    assert_eq!(got.len(), 1);
    assert!(bus.receive("Q", 10, Duration::from_secs(60)).await.unwrap().is_empty(), "invisible while in flight");
    bus.retry_later(got[0].message_id.clone(), Duration::ZERO, "boom".into()).await.unwrap();
    let again = bus.receive("Q", 10, Duration::from_secs(60)).await.unwrap();
    assert_eq!((again.len(), again[0].receive_count), (1, 2));
    bus.delete(vec![again[0].message_id.clone()]).await.unwrap();
    assert_eq!(bus.depth("Q").await.unwrap().total(), 0);
}

#[tokio::test]
async fn when_receive_count_reaches_the_maximum_should_move_to_the_dlq_and_redrive_back() {
    let (bus, _d) = bus().await;
    bus.put_events(vec![entry(1)]).await.unwrap();
    for _ in 0..2 {
        let m = bus.receive("Q", 10, Duration::from_secs(60)).await.unwrap();
        bus.retry_later(m[0].message_id.clone(), Duration::ZERO, "still failing".into()).await.unwrap();
    }
    assert!(bus.receive("Q", 10, Duration::from_secs(60)).await.unwrap().is_empty(), "third receive dead-letters instead");
    let dlq = bus.list("Dlq", 10).await.unwrap();
    assert_eq!(dlq.len(), 1);
    assert_eq!(dlq[0].dead_lettered_from.as_deref(), Some("Q"));
    assert_eq!(dlq[0].last_error.as_deref(), Some("still failing"));
    assert_eq!(bus.redrive("Dlq", 10).await.unwrap(), 1);
    let back = bus.receive("Q", 10, Duration::from_secs(60)).await.unwrap();
    assert_eq!(back[0].receive_count, 1, "redrive resets the receive count");
    assert!(bus.redrive("Q", 10).await.is_err(), "Q is not a DLQ");
}

#[tokio::test]
async fn when_fifo_group_has_a_message_in_flight_should_hold_the_rest_of_the_group_in_order() {
    let (bus, _d) = bus().await;
    for (i, g) in ["a", "a", "b", "a"].iter().enumerate() {
        bus.forward(format!("src-{i}"), "Fifo".into(), format!("m{i}"), Some((*g).into()), Some(format!("d{i}"))).await.unwrap();
    }
    let first = bus.receive("Fifo", 10, Duration::from_secs(60)).await.unwrap();
    let bodies: Vec<&str> = first.iter().map(|m| m.body.as_str()).collect();
    assert_eq!(bodies, vec!["m0", "m1", "m2", "m3"], "one batch may take a whole group, in order");
    // Fail m0: its group waits while b is free.
    bus.retry_later(first[0].message_id.clone(), Duration::ZERO, "x".into()).await.unwrap();
    bus.retry_later(first[1].message_id.clone(), Duration::from_secs(60), "held".into()).await.unwrap();
    bus.delete(vec![first[2].message_id.clone()]).await.unwrap();
    let second = bus.receive("Fifo", 10, Duration::from_secs(60)).await.unwrap();
    assert!(second.is_empty(), "group a is blocked by its invisible message m1: {second:?}");
}

#[tokio::test]
async fn when_every_visible_fifo_message_is_behind_one_in_flight_should_report_the_queue_not_visible() {
    let (bus, _d) = bus().await;
    let probe = bus.probe(vec!["Fifo".to_string(), "Q".to_string()]);
    assert_eq!(bus.visible_queues(&probe).await.unwrap(), vec![false, false], "empty queues");
    for (i, g) in ["a", "a"].iter().enumerate() {
        bus.forward(format!("src-{i}"), "Fifo".into(), format!("m{i}"), Some((*g).into()), Some(format!("d{i}"))).await.unwrap();
    }
    bus.put_events(vec![entry(1)]).await.unwrap();
    assert_eq!(bus.visible_queues(&probe).await.unwrap(), vec![true, true]);
    // m0 in flight, m1 visible behind it in group a: a receive would get nothing.
    let got = bus.receive("Fifo", 1, Duration::from_secs(60)).await.unwrap();
    assert_eq!(got.len(), 1);
    assert_eq!(bus.visible_queues(&probe).await.unwrap(), vec![false, true], "group a is held by m0");
    // A message of another group is free.
    bus.forward("src-2".into(), "Fifo".into(), "m2".into(), Some("b".into()), Some("d2".into())).await.unwrap();
    assert_eq!(bus.visible_queues(&probe).await.unwrap(), vec![true, true], "group b is free");
    assert_eq!(bus.receive("Fifo", 10, Duration::from_secs(60)).await.unwrap()[0].body, "m2");
    assert_eq!(bus.visible_queues(&probe).await.unwrap(), vec![false, true], "both groups in flight");
    // A message without a group (what `send_to` puts on any queue) is held by no group.
    bus.send_to("Fifo", "loose").await.unwrap();
    assert_eq!(bus.visible_queues(&probe).await.unwrap(), vec![true, true], "a message without a group is free");
    assert_eq!(bus.receive("Fifo", 10, Duration::from_secs(60)).await.unwrap()[0].body, "loose");
    assert_eq!(bus.visible_queues(&probe).await.unwrap(), vec![false, true], "every group in flight again");
    // m0 deleted: m1 is free again.
    bus.delete(vec![got[0].message_id.clone()]).await.unwrap();
    assert_eq!(bus.visible_queues(&probe).await.unwrap(), vec![true, true], "group a is free again");
}

#[tokio::test]
async fn when_many_queues_are_asked_in_one_statement_should_answer_each_in_its_place() {
    let (bus, _d) = bus().await;
    // Twelve columns: parameters past ?9 bind to the right queue, in the FIFO statement's
    // in-flight subquery too (column 9 is the second FIFO queue).
    let queue = |i: usize| match i {
        9 => "FifoDlq",
        10 => "Q",
        _ => "Fifo",
    };
    let asked = bus.probe((0..12).map(|i| queue(i).to_string()).collect());
    let answer = |visible: &[&str]| (0..12).map(|i| visible.contains(&queue(i))).collect::<Vec<bool>>();
    assert_eq!(bus.visible_queues(&asked).await.unwrap(), answer(&[]));
    bus.put_events(vec![entry(1)]).await.unwrap();
    assert_eq!(bus.visible_queues(&asked).await.unwrap(), answer(&["Q"]));
    assert_eq!(bus.next_visible_after_now(&asked).await.unwrap(), None, "nothing is waiting to become visible");
    // FifoDlq: a visible message held back by one in flight in its group (30 s).
    for i in 0..2 {
        bus.forward(format!("dlq-{i}"), "FifoDlq".into(), format!("d{i}"), Some("g".into()), Some(format!("dd{i}"))).await.unwrap();
    }
    assert_eq!(bus.visible_queues(&asked).await.unwrap(), answer(&["Q", "FifoDlq"]));
    let before = chrono::Utc::now().timestamp_millis();
    assert_eq!(bus.receive("FifoDlq", 1, Duration::from_secs(30)).await.unwrap().len(), 1);
    assert_eq!(bus.visible_queues(&asked).await.unwrap(), answer(&["Q"]), "FifoDlq's group is held");
    // Fifo: a free group.
    bus.forward("src".into(), "Fifo".into(), "m".into(), Some("h".into()), Some("d".into())).await.unwrap();
    assert_eq!(bus.visible_queues(&asked).await.unwrap(), answer(&["Q", "Fifo"]));
    // Q held for 60 s: the earliest due is FifoDlq's.
    assert_eq!(bus.receive("Q", 1, Duration::from_secs(60)).await.unwrap().len(), 1);
    let due = bus.next_visible_after_now(&asked).await.unwrap().unwrap();
    let after = chrono::Utc::now().timestamp_millis();
    assert!((before + 30_000..=after + 30_000).contains(&due), "{due} not 30 s after {before}..{after}");
    assert_eq!(bus.visible_queues(&asked).await.unwrap(), answer(&["Fifo"]));
    let only_q = bus.probe(vec!["Q".to_string()]);
    let q_due = bus.next_visible_after_now(&only_q).await.unwrap().unwrap();
    assert!((before + 60_000..=after + 60_000).contains(&q_due), "{q_due} not 60 s after {before}..{after}");
    let none = bus.probe(Vec::new());
    assert_eq!(bus.visible_queues(&none).await.unwrap(), Vec::<bool>::new());
    assert_eq!(bus.next_visible_after_now(&none).await.unwrap(), None);
}

#[tokio::test]
async fn when_fifo_deduplication_id_repeats_within_five_minutes_should_keep_one_copy() {
    let (bus, _d) = bus().await;
    bus.forward("s1".into(), "Fifo".into(), "m".into(), Some("g".into()), Some("same".into())).await.unwrap();
    bus.forward("s2".into(), "Fifo".into(), "m".into(), Some("g".into()), Some("same".into())).await.unwrap();
    assert_eq!(bus.depth("Fifo").await.unwrap().total(), 1);
}

#[tokio::test]
async fn when_entry_matches_no_rule_should_be_archived_but_not_queued() {
    let (bus, _d) = bus().await;
    let mut e = entry(1);
    e.source = Some("elsewhere".into());
    let r = bus.put_events(vec![e]).await.unwrap();
    assert_eq!(r.failed_entry_count, 0);
    assert_eq!(bus.depth("Q").await.unwrap().total(), 0);
    assert_eq!(bus.archived(None, None).await.unwrap().len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn when_the_sqlite_store_runs_the_conformance_suite_should_pass_every_case() {
    // Each call its own transaction (`Full`), and calls sharing batches (group commit, the
    // default, where the store's commits take no savepoint): a refused commit must leave
    // nothing written and the handle usable in both.
    for durability in [o2c_embedded::db::Durability::Full, o2c_embedded::db::Durability::Group] {
        let dir = tempfile::tempdir().unwrap();
        let db = o2c_embedded::db::Db::open_with(&dir.path().join("c.db"), durability).unwrap();
        let store = o2c_embedded::store::SqliteStore::new(db);
        o2c_app::conformance::run_all(&store, "sqlite").await;
        o2c_app::conformance::size_budgets(&store, "sqlite-size").await;
        o2c_app::conformance::operator_log(&store, "sqlite-oplog").await;
    }
    // Two processes on one file (each call its own transaction, so each sees the other's).
    let dir = tempfile::tempdir().unwrap();
    let open = || {
        let db = o2c_embedded::db::Db::open_with(&dir.path().join("two.db"), o2c_embedded::db::Durability::Normal).unwrap();
        o2c_embedded::store::SqliteStore::new(db)
    };
    o2c_app::conformance::two_handles(&open(), &open(), "sqlite-two").await;
}

#[tokio::test]
async fn when_a_fifo_duplicate_arrives_after_the_first_copy_was_deleted_should_still_drop_it_within_five_minutes() {
    let dir = tempfile::tempdir().unwrap();
    let clock = Arc::new(o2c_app::ports::SimClock::starting_at("2026-12-01T09:00:00Z".parse().unwrap()));
    let db = Db::open(&dir.path().join("q.db")).unwrap().with_time(clock.clone(), Arc::new(o2c_app::ports::SeededIds::new(1)));
    let bus = LocalBus::new(db, Arc::new(Topology::from_sam_yaml(TEMPLATE).unwrap()), "test-bus".into()).unwrap();
    bus.forward("s1".into(), "Fifo".into(), "m".into(), Some("g".into()), Some("same".into())).await.unwrap();
    let first = bus.receive("Fifo", 10, Duration::from_secs(30)).await.unwrap();
    bus.delete(vec![first[0].message_id.clone()]).await.unwrap();
    // SQS remembers the id for 5 minutes from the first accepted send, deleted or not; a
    // duplicate inside the interval does not extend it.
    clock.advance(Duration::from_secs(4 * 60));
    bus.forward("s2".into(), "Fifo".into(), "m".into(), Some("g".into()), Some("same".into())).await.unwrap();
    assert_eq!(bus.depth("Fifo").await.unwrap().total(), 0, "a duplicate within the interval is dropped");
    clock.advance(Duration::from_secs(61));
    bus.forward("s3".into(), "Fifo".into(), "m".into(), Some("g".into()), Some("same".into())).await.unwrap();
    assert_eq!(bus.depth("Fifo").await.unwrap().total(), 1, "past 5 minutes from the first send the id is new again");
}

#[tokio::test]
async fn when_a_queue_is_deep_should_receive_by_walking_the_send_order_index_without_sorting() {
    let (bus, _d) = bus().await;
    bus.put_events((0..10).map(entry).collect()).await.unwrap();
    let plan: Vec<String> = bus
        .db()
        .call(|c| {
            let mut s = c.prepare(&format!("EXPLAIN QUERY PLAN {}", o2c_embedded::bus::RECEIVE_SQL)).unwrap();
            let rows = s.query_map(rusqlite::params!["Q", 0, 10], |r| r.get::<_, String>(3)).unwrap();
            Ok(rows.map(Result::unwrap).collect())
        })
        .await
        .unwrap();
    // A receive reads about as many rows as it returns, whatever the backlog: no temporary
    // B-tree to order every visible message.
    assert!(plan.iter().any(|p| p.contains("messages_by_queue_seq")), "{plan:?}");
    assert!(!plan.iter().any(|p| p.contains("TEMP B-TREE")), "{plan:?}");
}

#[tokio::test]
async fn when_fifo_groups_are_checked_should_read_only_the_index_never_the_bodies() {
    let (bus, _d) = bus().await;
    let plans: Vec<Vec<String>> = bus
        .db()
        .call(|c| {
            Ok([o2c_embedded::bus::FIFO_VISIBLE_SQL, o2c_embedded::bus::BLOCKED_GROUPS_SQL]
                .iter()
                .map(|sql| {
                    let mut s = c.prepare(&format!("EXPLAIN QUERY PLAN {sql}")).unwrap();
                    let rows = s.query_map(rusqlite::params!["Fifo", 0], |r| r.get::<_, String>(3)).unwrap();
                    rows.map(Result::unwrap).collect()
                })
                .collect())
        })
        .await
        .unwrap();
    // Every access to `messages` is a covering index search: the group id is read from
    // `(queue, visible_at, group_id)`, not from a row whose body may span overflow pages.
    for plan in &plans {
        let reads: Vec<&String> = plan.iter().filter(|p| p.contains("messages")).collect();
        assert!(!reads.is_empty(), "{plan:?}");
        assert!(reads.iter().all(|p| p.contains("USING COVERING INDEX messages_by_queue_visible")), "{plan:?}");
    }
}

#[tokio::test]
async fn when_commits_are_made_durable_should_share_one_fsync_and_skip_it_when_nothing_changed() {
    let dir = tempfile::tempdir().unwrap();
    let db = Db::open_with(&dir.path().join("g.db"), o2c_embedded::db::Durability::Group).unwrap();
    let topo = Arc::new(Topology::from_sam_yaml(TEMPLATE).unwrap());
    let bus = LocalBus::new(db.clone(), topo, "test-bus".into()).unwrap();
    db.durable().await.unwrap();
    let base = db.group_fsyncs();
    db.durable().await.unwrap();
    assert_eq!(db.group_fsyncs(), base, "nothing committed since the last fsync: no fsync");
    for n in 0..5 {
        bus.put_events(vec![entry(n)]).await.unwrap();
    }
    db.durable().await.unwrap();
    assert_eq!(db.group_fsyncs(), base + 1, "one fsync covers the five commits before it");
    db.durable().await.unwrap();
    assert_eq!(db.group_fsyncs(), base + 1);
}
