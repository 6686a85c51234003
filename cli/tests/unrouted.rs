//! Events that match no rule are accepted (as EventBridge does) and then counted and
//! listed — over HTTP and by `o2c unrouted` — never kept out of sight.
#![allow(missing_docs, clippy::unwrap_used, clippy::expect_used)]

use serde_json::{Value, json};

mod common;

use common::{Server, repo, run, text};

#[test]
fn when_an_event_matches_no_rule_should_be_counted_and_listed_over_http_and_by_the_cli() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("o2c.db");
    let server = Server::start(&db);
    let ev: Value = serde_json::from_str(&std::fs::read_to_string(repo("events/samples/OpportunityClosedWon.v1.json")).unwrap()).unwrap();
    let routed = json!({"Source": ev["source"], "DetailType": ev["detail-type"], "Detail": ev["detail"].to_string()});
    // A source's typo in the detail-type, and a source no rule listens to.
    let typo = json!({"Source": "o2c.crm", "DetailType": "OpportunityClosedWonn", "Detail": ev["detail"].to_string()});
    let stranger = json!({"Source": "acme.crm", "DetailType": "OpportunityClosedWon", "Detail": "{}"});
    let (code, resp) = server.http("POST", "/v1/events", Some(&json!({"Entries": [routed, typo, stranger]})));
    assert_eq!((code, resp["FailedEntryCount"].as_u64()), (200, Some(0)), "{resp}");
    let ids: Vec<&str> = resp["Entries"].as_array().unwrap().iter().map(|e| e["EventId"].as_str().unwrap()).collect();

    let (code, found) = server.http("GET", "/v1/unrouted", None);
    assert_eq!(code, 200, "{found}");
    assert_eq!(found["total"], 2, "{found}");
    let listed: Vec<&str> = found["latest"].as_array().unwrap().iter().map(|e| e["event_id"].as_str().unwrap()).collect();
    assert_eq!(listed, vec![ids[2], ids[1]], "newest first, the routed event not among them: {found}");
    assert_eq!(found["latest"][0]["source"], "acme.crm");
    assert_eq!(found["latest"][1]["detail_type"], "OpportunityClosedWonn");

    // Another process reads the same (what the API showed was committed).
    let out = run(&["unrouted", "--db", db.to_str().unwrap(), "--json"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let cli: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(cli["total"], 2, "{cli}");
    let out = run(&["unrouted", "--db", db.to_str().unwrap(), "--limit", "1"]);
    let printed = text(&out.stdout);
    assert!(printed.starts_with("2 event(s) matched no rule") && printed.contains(ids[2]) && !printed.contains(ids[1]), "{printed}");

    let aws = run(&["unrouted", "--target", "aws"]);
    assert_eq!(aws.status.code(), Some(2), "a usage error naming what AWS offers instead: {}", text(&aws.stderr));
    assert!(text(&aws.stderr).contains("MatchedEvents"));
}
