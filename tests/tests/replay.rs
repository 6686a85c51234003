//! Replay and redrive through the embedded runtime: events EventBridge could not deliver
//! go back on the bus (not into a queue), and what is not an event stays for an operator.
#![allow(missing_docs, clippy::unwrap_used, clippy::expect_used)]

use o2c_domain::engagement::EngagementStatus;
use o2c_tests::{Harness, closed_won, globex_payload};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn when_the_bus_delivery_dlq_is_redriven_should_publish_its_events_again_and_keep_what_is_not_an_event() {
    let h = Harness::new().await;
    let opp = "0068d00000RDV001";
    // What EventBridge puts in a target's DeadLetterConfig queue: the event itself.
    let (source, detail_type, detail) = closed_won(globex_payload(opp, 1));
    let event = serde_json::json!({
        "version": "0", "id": "eb-1", "detail-type": detail_type, "source": source, "account": "123456789012",
        "time": "2027-01-04T09:00:00Z", "region": "eu-west-1", "resources": [], "detail": detail,
    });
    h.rt.bus().send_to("EventDeliveryDLQ", &event.to_string()).await.unwrap();
    h.rt.bus().send_to("EventDeliveryDLQ", "not an event").await.unwrap();
    assert_eq!(h.rt.bus().depth("EventDeliveryDLQ").await.unwrap().visible, 2);

    assert_eq!(h.rt.bus().redrive("EventDeliveryDLQ", 10).await.unwrap(), 1);
    h.settle().await;
    let e = h.engagement(&format!("ENG-{opp}")).await;
    assert_eq!(e.status, EngagementStatus::AwaitingApproval, "the closed-won was processed: {:?}", e.status);
    let left = h.rt.bus().list("EventDeliveryDLQ", 10).await.unwrap();
    assert_eq!(left.len(), 1);
    assert_eq!(left[0].body, "not an event", "an operator decides what that is");
    // A queue that is no DLQ at all is refused.
    assert!(h.rt.bus().redrive("IntakeQueue", 10).await.is_err());
}
