//! Vendor payloads into `o2c serve` (`POST /v1/ingest/{vendor}/{object}`) and `o2c map`:
//! a Salesforce opportunity becomes an engagement, a Stripe payment a receipt; the same
//! payload twice is one event; an unmappable one is refused with every path and parked
//! with its payload; a key may ingest only what it may publish; and a mapping changed on
//! disk is used from the next request, a broken one leaving the last good one in force.
#![allow(missing_docs, clippy::unwrap_used, clippy::expect_used)]

use std::path::Path;
use std::time::{Duration, Instant};

use serde_json::{Value, json};

mod common;

use common::{Server, add_key, http_as, repo, run, text};

fn example(name: &str) -> Value {
    serde_json::from_str(&std::fs::read_to_string(repo(&format!("mappings/{name}.example.json"))).unwrap()).unwrap()
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            copy_dir(&p, &to.join(p.file_name().unwrap()));
        } else {
            std::fs::copy(&p, to.join(p.file_name().unwrap())).unwrap();
        }
    }
}

fn wait_until(what: &str, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while !f() {
        assert!(Instant::now() < deadline, "never: {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn when_vendor_payloads_are_ingested_should_move_the_flow_refuse_the_unmappable_with_paths_and_swap_mappings_live() {
    let dir = tempfile::tempdir().unwrap();
    let mappings = dir.path().join("mappings");
    copy_dir(&repo("mappings"), &mappings);
    let db = dir.path().join("o2c.db");
    let crm = add_key(&db, "salesforce", &["--source", "o2c.crm", "--detail-type", "OpportunityClosedWon"]);
    let bank = add_key(&db, "stripe", &["--source", "o2c.bank", "--detail-type", "PaymentReceived"]);
    let server = Server::start_with(&db, &["--mappings", mappings.to_str().unwrap()]);
    let post = |key: &str, name: &str, body: &Value| http_as(&server.addr, Some(key), "POST", &format!("/v1/ingest/{name}"), Some(body));

    // A Salesforce opportunity → an engagement waiting for its contract.
    let sf = example("salesforce/opportunity");
    let (code, resp) = post(&crm, "salesforce/opportunity", &sf);
    assert_eq!((code, resp["FailedEntryCount"].as_u64(), resp["Version"].as_u64()), (200, Some(0), Some(1)), "{resp}");
    let engagement = "/v1/engagements/ENG-0068d00000SFDC01AAA";
    wait_until("the engagement awaits approval", || server.http("GET", engagement, None).1["engagement"]["status"] == "awaiting_approval");
    let (_, first) = server.http("GET", engagement, None);
    // The same webhook again: the same event, absorbed (no new version of the engagement).
    let (code, again) = post(&crm, "salesforce/opportunity", &sf);
    assert_eq!(code, 200, "{again}");
    // Once every queue is empty the duplicate was processed: absorbed, no new version.
    wait_until("every queue drained", || {
        let (_, q) = server.http("GET", "/v1/queues", None);
        q.as_object().unwrap().values().filter(|d| d["dead_letter_queue"] == false).all(|d| d["visible"] == 0 && d["in_flight"] == 0)
    });
    assert_eq!(server.http("GET", engagement, None).1["version"], first["version"]);

    // The CRM's key cannot ingest a payment; the bank's can.
    let pay = example("stripe/payment_intent.succeeded");
    let (code, resp) = post(&crm, "stripe/payment_intent.succeeded", &pay);
    assert_eq!((code, resp["ErrorCode"].as_str()), (403, Some("AccessDeniedException")), "{resp}");
    let (code, resp) = post(&bank, "stripe/payment_intent.succeeded", &pay);
    assert_eq!((code, resp["FailedEntryCount"].as_u64()), (200, Some(0)), "{resp}");
    let event_id = resp["Entries"][0]["EventId"].as_str().unwrap().to_owned();
    assert!(!event_id.is_empty());

    // Unmappable: 422 with every failing path, parked with the payload for repair.
    let mut broken = sf.clone();
    broken["Amount"] = json!(1250000.005);
    broken["o2c_Delivery_Country__c"] = json!("FR");
    let (code, resp) = post(&crm, "salesforce/opportunity", &broken);
    assert_eq!((code, resp["ErrorCode"].as_str()), (422, Some("UnmappablePayload")), "{resp}");
    let fields: Vec<&str> = resp["Issues"].as_array().unwrap().iter().map(|i| i["field"].as_str().unwrap()).collect();
    assert_eq!(fields, vec!["detail.payload.amount", "detail.payload.delivery_region"], "{resp}");
    let (_, parked) = server.http("GET", "/v1/rejections", None);
    let parked = parked.as_array().unwrap().iter().find(|r| r["step"] == "ingest:salesforce/opportunity").expect("parked").clone();
    assert_eq!(parked["reasons"].as_array().unwrap().len(), 2);
    assert!(parked["body"].as_str().unwrap().contains("1250000.005"));
    // A Stripe payment that cannot be mapped is parked without its client secret.
    let mut no_entity = pay.clone();
    no_entity["data"]["object"]["metadata"].as_object_mut().unwrap().remove("o2c_legal_entity_id");
    let (code, _) = post(&bank, "stripe/payment_intent.succeeded", &no_entity);
    assert_eq!(code, 422);
    let (_, rejections) = server.http("GET", "/v1/rejections", None);
    let stripe =
        rejections.as_array().unwrap().iter().find(|r| r["step"] == "ingest:stripe/payment_intent.succeeded").expect("parked").clone();
    let body = stripe["body"].as_str().unwrap();
    assert!(body.contains("[redacted]") && !body.contains("_secret_"), "{body}");
    // Unknown mapping; no key.
    assert_eq!(post(&crm, "hubspot/deal", &sf).0, 404);
    assert_eq!(http_as(&server.addr, None, "POST", "/v1/ingest/salesforce/opportunity", Some(&sf)).0, 401);

    // Live swap: France is added to the value map → the same payload maps from now on.
    let file = mappings.join("salesforce/opportunity.yaml");
    let original = std::fs::read_to_string(&file).unwrap();
    let edited = original
        .replace("version: 1", "version: 2")
        .replace("delivery_regions: {DE: EMEA-DE,", "delivery_regions: {FR: EMEA-DE, DE: EMEA-DE,");
    assert_ne!(edited, original);
    std::fs::write(&file, &edited).unwrap();
    let mut french = sf.clone();
    french["Id"] = json!("0068d00000SFDC02AAA");
    french["o2c_Delivery_Country__c"] = json!("FR");
    let (code, resp) = post(&crm, "salesforce/opportunity", &french);
    assert_eq!((code, resp["Version"].as_u64()), (200, Some(2)), "{resp}");
    // A broken edit: refused at reading, the last good version stays in force.
    std::fs::write(&file, edited.replace("mapping: salesforce/opportunity", "mapping: [")).unwrap();
    let mut third = french.clone();
    third["Id"] = json!("0068d00000SFDC03AAA");
    let (code, resp) = post(&crm, "salesforce/opportunity", &third);
    assert_eq!((code, resp["Version"].as_u64()), (200, Some(2)), "{resp}");
    wait_until("both new engagements", || {
        ["02", "03"].iter().all(|n| server.http("GET", &format!("/v1/engagements/ENG-0068d00000SFDC{n}AAA"), None).0 == 200)
    });
}

#[test]
fn when_an_integrator_tries_a_mapping_should_print_the_entries_or_every_failing_path_without_processing() {
    let dir = tempfile::tempdir().unwrap();
    let listed = run(&["map", "--mappings", repo("mappings").to_str().unwrap(), "--list"]);
    let listed = text(&listed.stdout);
    assert!(listed.contains("salesforce/opportunity") && listed.contains("stripe/payment_intent.succeeded"), "{listed}");
    let sf = repo("mappings/salesforce/opportunity.example.json");
    let out = run(&["map", "--mappings", repo("mappings").to_str().unwrap(), "--mapping", "salesforce/opportunity", sf.to_str().unwrap()]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let entries = dir.path().join("entries.jsonl");
    std::fs::write(&entries, &out.stdout).unwrap();
    // What `map` prints is what `run` takes: the engagement is created.
    let db = dir.path().join("o2c.db");
    let ran = run(&["run", "--db", db.to_str().unwrap(), entries.to_str().unwrap()]);
    assert!(ran.status.success(), "{}", text(&ran.stderr));
    let status = run(&["status", "--db", db.to_str().unwrap(), "0068d00000SFDC01AAA"]);
    assert!(text(&status.stdout).contains("awaiting_approval"), "{}", text(&status.stdout));

    let mut bad: Value = serde_json::from_str(&std::fs::read_to_string(&sf).unwrap()).unwrap();
    bad["StageName"] = json!("Prospecting");
    bad["CloseDate"] = json!("someday");
    let bad_file = dir.path().join("bad.json");
    std::fs::write(&bad_file, bad.to_string()).unwrap();
    let out =
        run(&["map", "--mappings", repo("mappings").to_str().unwrap(), "--mapping", "salesforce/opportunity", bad_file.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(3), "{}", text(&out.stderr));
    assert!(text(&out.stderr).contains("require[1] (from $.StageName)") && out.stdout.is_empty(), "{}", text(&out.stderr));
    let out = run(&["map", "--mappings", repo("mappings").to_str().unwrap(), "--mapping", "nope/nope", bad_file.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(2));
}
