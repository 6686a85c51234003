//! Vendor payloads into `o2c serve` (`POST /v1/ingest/{vendor}/{object}`) and `o2c map`:
//! a Salesforce opportunity (REST or a CDC change event) or a Dynamics 365 one becomes an
//! engagement, a Stripe payment or paid invoice a receipt applied to its invoice; the same
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
    assert_eq!((code, resp["FailedEntryCount"].as_u64(), resp["Version"].as_u64()), (200, Some(0), Some(2)), "{resp}");
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
    assert_eq!(fields, vec!["detail.payload.delivery_region", "detail.payload.total_value.amount"], "{resp}");
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
        .replace("version: 2", "version: 3")
        .replace("delivery_regions: {DE: EMEA-DE,", "delivery_regions: {FR: EMEA-DE, DE: EMEA-DE,");
    assert_ne!(edited, original);
    std::fs::write(&file, &edited).unwrap();
    let mut french = sf.clone();
    french["Id"] = json!("0068d00000SFDC02AAA");
    french["o2c_Delivery_Country__c"] = json!("FR");
    let (code, resp) = post(&crm, "salesforce/opportunity", &french);
    assert_eq!((code, resp["Version"].as_u64()), (200, Some(3)), "{resp}");
    // A broken edit: refused at reading, the last good version stays in force.
    std::fs::write(&file, edited.replace("mapping: salesforce/opportunity", "mapping: [")).unwrap();
    let mut third = french.clone();
    third["Id"] = json!("0068d00000SFDC03AAA");
    let (code, resp) = post(&crm, "salesforce/opportunity", &third);
    assert_eq!((code, resp["Version"].as_u64()), (200, Some(3)), "{resp}");
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

    // Publishing goes to an AWS stage only, and only a directory whose every file loads:
    // refused before any AWS call (no credentials or endpoint needed to see it).
    let out = run(&["map", "--mappings", repo("mappings").to_str().unwrap(), "--publish"]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out.stderr));
    assert!(text(&out.stderr).contains("--target aws"), "{}", text(&out.stderr));
    let broken = dir.path().join("mappings");
    std::fs::create_dir_all(broken.join("netsuite")).unwrap();
    std::fs::write(broken.join("netsuite/invoice.yaml"), "mapping: [").unwrap();
    let out = run(&["map", "--mappings", broken.to_str().unwrap(), "--publish", "--target", "aws", "--stage", "nowhere"]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out.stderr));
    assert!(text(&out.stderr).contains("netsuite/invoice.yaml") && !text(&out.stdout).contains("published"), "{}", text(&out.stderr));
}

/// Posts `body` to `path` with only the vendor's signature header (no key).
fn post_signed(addr: &str, path: &str, header: &str, signature: &str, body: &[u8]) -> (u16, Value) {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    write!(s, "POST {path} HTTP/1.1\r\nHost: x\r\n{header}: {signature}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n", body.len()).unwrap();
    s.write_all(body).unwrap();
    let mut resp = String::new();
    s.read_to_string(&mut resp).unwrap();
    let (head, body) = resp.split_once("\r\n\r\n").unwrap_or((&resp, ""));
    (head.split_whitespace().nth(1).and_then(|c| c.parse().ok()).unwrap_or(0), serde_json::from_str(body).unwrap_or(Value::Null))
}

#[test]
fn when_vendors_call_with_signed_webhooks_should_verify_each_signature_and_carry_the_engagement_to_active() {
    use o2c_embedded::webhooks::sign;
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("o2c.db");
    let (stripe_secret, docusign_secret) = ("whsec_5f2b1c9e8d7a6b5c4d3e2f1a", "8f3e2d1c-docusign-connect-hmac-key");
    for (vendor, secret, args) in [
        ("docusign", docusign_secret, ["--source", "o2c.clm", "--detail-type", "ContractApproved"]),
        ("stripe", stripe_secret, ["--source", "o2c.bank", "--detail-type", "PaymentReceived"]),
    ] {
        let f = dir.path().join(format!("{vendor}.secret"));
        std::fs::write(&f, secret).unwrap();
        add_key(&db, vendor, &[&args[..], &["--webhook", vendor, "--webhook-secret-file", f.to_str().unwrap()]].concat());
    }
    let crm = add_key(&db, "salesforce", &["--source", "o2c.crm", "--detail-type", "OpportunityClosedWon"]);
    let server = Server::start_with(&db, &["--mappings", repo("mappings").to_str().unwrap()]);
    let listed = text(&run(&["sources", "list", "--db", db.to_str().unwrap()]).stdout);
    assert!(listed.contains("signed stripe webhooks") && !listed.contains(stripe_secret), "{listed}");

    // Salesforce closes the deal (API key), DocuSign reports the signed SOW (signature).
    let sf = example("salesforce/opportunity");
    let (code, resp) = http_as(&server.addr, Some(&crm), "POST", "/v1/ingest/salesforce/opportunity", Some(&sf));
    assert_eq!(code, 200, "{resp}");
    let mut envelope = example("docusign/envelope-completed");
    envelope["data"]["envelopeSummary"]["customFields"]["textCustomFields"][0]["value"] = json!("0068d00000SFDC01AAA");
    let body = envelope.to_string().into_bytes();
    let now = chrono::Utc::now().timestamp();
    let good = sign("docusign", &body, docusign_secret, now).unwrap();
    let path = "/v1/ingest/docusign/envelope-completed";
    // Forged: signed with another secret; the body changed after signing.
    let forged = sign("docusign", &body, "not-the-connect-key-at-all", now).unwrap();
    let (code, resp) = post_signed(&server.addr, path, "X-DocuSign-Signature-1", &forged, &body);
    assert_eq!((code, resp["ErrorCode"].as_str()), (401, Some("InvalidSignature")), "{resp}");
    let mut tampered = body.clone();
    let at = tampered.len() - 3;
    tampered[at] = b' ';
    assert_eq!(post_signed(&server.addr, path, "X-DocuSign-Signature-1", &good, &tampered).0, 401);
    let (code, resp) = post_signed(&server.addr, path, "X-DocuSign-Signature-1", &good, &body);
    assert_eq!((code, resp["FailedEntryCount"].as_u64()), (200, Some(0)), "{resp}");
    wait_until("the engagement activates", || {
        server.http("GET", "/v1/engagements/ENG-0068d00000SFDC01AAA", None).1["engagement"]["status"] == "active"
    });

    // Stripe: the signed timestamp bounds a replay.
    let pay = example("stripe/payment_intent.succeeded").to_string().into_bytes();
    let path = "/v1/ingest/stripe/payment_intent.succeeded";
    let stale = sign("stripe", &pay, stripe_secret, now - 3600).unwrap();
    let (code, resp) = post_signed(&server.addr, path, "Stripe-Signature", &stale, &pay);
    assert_eq!(code, 401, "{resp}");
    assert!(resp["ErrorMessage"].as_str().unwrap().contains("tolerance"), "{resp}");
    // A Stripe signature is no DocuSign signature: each vendor's secrets only.
    let wrong_vendor = sign("docusign", &pay, stripe_secret, now).unwrap();
    assert_eq!(post_signed(&server.addr, path, "X-DocuSign-Signature-1", &wrong_vendor, &pay).0, 401);
    let fresh = sign("stripe", &pay, stripe_secret, now).unwrap();
    let (code, resp) = post_signed(&server.addr, path, "Stripe-Signature", &fresh, &pay);
    assert_eq!((code, resp["FailedEntryCount"].as_u64()), (200, Some(0)), "{resp}");
    // The signed webhook's key is the vendor's: it cannot ingest another vendor's object.
    let sig = sign("stripe", &body, stripe_secret, now).unwrap();
    let (code, _) = post_signed(&server.addr, "/v1/ingest/docusign/envelope-completed", "Stripe-Signature", &sig, &body);
    assert_eq!(code, 401, "a Stripe signature on the DocuSign path is no DocuSign signature");
    let refused = run(&["sources", "refusals", "--db", db.to_str().unwrap(), "--json"]);
    let refused: Value = serde_json::from_slice(&refused.stdout).unwrap();
    // Forged, tampered and stale: bad signatures; the others carried no signature of their
    // path's vendor, so they were requests without a key.
    let codes: Vec<&str> = refused["latest"].as_array().unwrap().iter().map(|r| r["code"].as_str().unwrap()).collect();
    assert_eq!(codes.iter().filter(|c| **c == "InvalidSignature").count(), 3, "{codes:?}");
    assert_eq!(codes.iter().filter(|c| **c == "MissingAuthenticationToken").count(), 2, "{codes:?}");
}

#[test]
fn when_a_certinia_timecard_is_mapped_should_record_the_approved_time_on_the_active_engagement() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("o2c.db");
    let d = db.to_str().unwrap();
    let samples = ["OpportunityClosedWon", "ContractApproved"].map(|s| repo(&format!("events/samples/{s}.v1.json")));
    assert!(run(&["run", "--db", d, samples[0].to_str().unwrap(), samples[1].to_str().unwrap()]).status.success());
    let tc = repo("mappings/certinia/timecard.example.json");
    let out = run(&["map", "--mappings", repo("mappings").to_str().unwrap(), "--mapping", "certinia/timecard", tc.to_str().unwrap()]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let entries = dir.path().join("time.jsonl");
    std::fs::write(&entries, &out.stdout).unwrap();
    let ran = run(&["run", "--db", d, entries.to_str().unwrap()]);
    assert_eq!(ran.status.code(), Some(0), "processed, nothing parked: {}", text(&ran.stderr));
    let rejections = run(&["rejections", "--db", d, "--json"]);
    assert_eq!(serde_json::from_slice::<Value>(&rejections.stdout).unwrap(), json!([]));
    let status: Value = serde_json::from_slice(&run(&["status", "--db", d, "0068d00000GLBX01", "--json"]).stdout).unwrap();
    assert!(status.to_string().contains("TC-2027-000981"), "the time entry is on the engagement: {status}");
}

/// Every queue of the served runtime empty (its DLQs aside): what was posted is processed.
/// Globex's story from the sample events up to the posting of its first invoice,
/// LE-DE-01-000001 (EUR 139,286.88, due 2027-03-31), in a new database (with its directory).
fn story_to_first_posting() -> (tempfile::TempDir, std::path::PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("o2c.db");
    let d = db.to_str().unwrap();
    let samples: Vec<String> = [
        "OpportunityClosedWon",
        "ContractApproved",
        "ResourceAssigned",
        "TimeApproved",
        "ExpenseApproved",
        "MilestoneCompleted",
        "InvoiceRunRequested",
        "InvoiceApproved",
    ]
    .iter()
    .map(|s| repo(&format!("events/samples/{s}.v1.json")).to_str().unwrap().to_owned())
    .collect();
    let ran = run(&[&["run", "--db", d][..], &samples.iter().map(String::as_str).collect::<Vec<_>>()].concat());
    assert!(ran.status.success(), "{}", text(&ran.stderr));
    (dir, db)
}

fn drained(server: &Server) -> bool {
    let (_, q) = server.http("GET", "/v1/queues", None);
    q.as_object().unwrap().values().filter(|d| d["dead_letter_queue"] == false).all(|d| d["visible"] == 0 && d["in_flight"] == 0)
}

fn json_out(args: &[&str]) -> Value {
    let out = run(args);
    assert!(out.status.success(), "{args:?}: {}", text(&out.stderr));
    serde_json::from_slice(&out.stdout).unwrap()
}

#[test]
fn when_dynamics_and_salesforce_change_data_capture_close_deals_should_activate_each_engagement_in_the_psa_erp_and_crm() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("o2c.db");
    let crm = add_key(&db, "crm", &["--source", "o2c.crm", "--detail-type", "OpportunityClosedWon"]);
    let server = Server::start_with(&db, &["--mappings", repo("mappings").to_str().unwrap()]);
    let post = |name: &str, body: &Value| http_as(&server.addr, Some(&crm), "POST", &format!("/v1/ingest/{name}"), Some(body));

    // Dynamics 365: a won opportunity read with its currency, account and products (a
    // time-and-materials line with role estimates and a fixed fee in three installments).
    let (code, resp) = post("dynamics365/opportunity", &example("dynamics365/opportunity"));
    assert_eq!((code, resp["FailedEntryCount"].as_u64()), (200, Some(0)), "{resp}");
    // Salesforce CDC: the close of a one-line milestone deal on the firm's enriched channel.
    let cdc = example("salesforce/opportunity-change-event");
    let (code, resp) = post("salesforce/opportunity-change-event", &cdc);
    assert_eq!((code, resp["FailedEntryCount"].as_u64()), (200, Some(0)), "{resp}");
    let (dynamics, salesforce) = ("ENG-5d2e7f10-3a4b-ef11-a81c-000d3a2b1c9f", "ENG-0068d00000HQPj2AAF");
    for eng in [dynamics, salesforce] {
        // Neither offering needs CLM approval: straight to active.
        let path = format!("/v1/engagements/{eng}");
        wait_until(&format!("{eng} active"), || server.http("GET", &path, None).1["engagement"]["status"] == "active");
    }
    wait_until("every queue drained", || drained(&server));
    let sf_path = format!("/v1/engagements/{salesforce}");
    let (_, before) = server.http("GET", &sf_path, None);

    // A later edit of the won opportunity (its next step): the channel delivers the enriched
    // fields again, under the same revision — the same closed-won, absorbed.
    let mut edit = cdc.clone();
    edit["payload"]
        .as_object_mut()
        .unwrap()
        .retain(|k, _| !["Probability", "ForecastCategoryName", "IsClosed", "IsWon"].contains(&k.as_str()));
    edit["payload"]["NextStep"] = json!("Kick-off with Soylent finance on 11 January");
    edit["payload"]["LastModifiedDate"] = json!("2026-12-09T08:05:44.000Z");
    edit["payload"]["ChangeEventHeader"]["transactionKey"] = json!("0004c9e1-0a2b-3c4d-5e6f-708192a3b4c5");
    edit["payload"]["ChangeEventHeader"]["commitTimestamp"] = json!(1796803544000_i64);
    edit["payload"]["ChangeEventHeader"]["changedFields"] = json!(["NextStep", "LastModifiedDate"]);
    let (code, resp) = post("salesforce/opportunity-change-event", &edit);
    assert_eq!((code, resp["FailedEntryCount"].as_u64()), (200, Some(0)), "{resp}");
    wait_until("the edit processed", || drained(&server));
    assert_eq!(server.http("GET", &sf_path, None).1["version"], before["version"], "no new version of the engagement");

    // A change event from a channel without the enrichment: refused with every missing path.
    let mut bare = cdc.clone();
    let keep = ["ChangeEventHeader", "StageName", "IsClosed", "IsWon", "LastModifiedDate", "o2c_Billing_Model__c"];
    bare["payload"].as_object_mut().unwrap().retain(|k, _| keep.contains(&k.as_str()));
    let (code, resp) = post("salesforce/opportunity-change-event", &bare);
    assert_eq!((code, resp["ErrorCode"].as_str()), (422, Some("UnmappablePayload")), "{resp}");
    let fields: Vec<&str> = resp["Issues"].as_array().unwrap().iter().map(|i| i["field"].as_str().unwrap()).collect();
    for want in
        ["detail.payload.revision", "detail.payload.amount", "detail.payload.account_id", "detail.payload.lines[0].service_offering_id"]
    {
        assert!(fields.contains(&want), "{want} not in {resp}");
    }
    let (_, parked) = server.http("GET", "/v1/rejections", None);
    assert!(parked.as_array().unwrap().iter().any(|r| r["step"] == "ingest:salesforce/opportunity-change-event"), "{parked}");

    // The systems: both projects in the PSA and the ERP, their billing schedules, the CRM synced.
    let sim = json_out(&["sim", "show", "--db", db.to_str().unwrap(), "--json"]);
    for system in ["psa_projects", "erp_projects"] {
        let keys: Vec<&str> = sim[system].as_array().unwrap().iter().map(|p| p["external_key"].as_str().unwrap()).collect();
        assert!(keys.contains(&dynamics) && keys.contains(&salesforce), "{system}: {keys:?}");
    }
    let erp_project = |eng: &str| sim["erp_projects"].as_array().unwrap().iter().find(|p| p["external_key"] == eng).unwrap().clone();
    // The CDC deal's one line, split by the advisory template's milestone weights (40 / 60).
    let milestones: Vec<(String, String)> = erp_project(salesforce)["spec"]["milestones"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| (m["phase_code"].as_str().unwrap().to_owned(), m["amount"]["amount"].as_str().unwrap().to_owned()))
        .collect();
    assert_eq!(milestones, [("DIAGNOSE".to_owned(), "96000.00".to_owned()), ("RECOMMEND".to_owned(), "144000.00".to_owned())]);
    assert_eq!(erp_project(dynamics)["spec"]["budget"], json!({"amount": "180000.00", "currency": "GBP"}));
    let schedule = |eng: &str| {
        sim["erp_billing_schedules"].as_array().unwrap().iter().find(|s| s["schedule"]["engagement_id"] == eng).unwrap()["schedule"].clone()
    };
    let d = schedule(dynamics);
    let items = d["items"].as_array().unwrap();
    let installments: Vec<&str> =
        items.iter().filter(|i| i["kind"] == "installment").map(|i| i["amount"]["amount"].as_str().unwrap()).collect();
    assert_eq!(installments, ["20000.00", "20000.00", "20000.00"], "{d}");
    let tm = items.iter().find(|i| i["kind"] == "time_and_materials").unwrap();
    assert_eq!(tm["not_to_exceed"], json!({"amount": "120000.00", "currency": "GBP"}), "{d}");
    let rates: Vec<(&str, &str)> = tm["rates"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| (r["role"].as_str().unwrap(), r["hourly_rate"]["amount"].as_str().unwrap()))
        .collect();
    assert_eq!(rates, [("MANAGER", "197.00"), ("SENIOR_CONSULTANT", "154.00")], "the 2027 rate card, UK: {d}");
    for opportunity in ["5d2e7f10-3a4b-ef11-a81c-000d3a2b1c9f", "0068d00000HQPj2AAF"] {
        let o = sim["crm_opportunities"].as_array().unwrap().iter().find(|o| o["opportunity_id"] == opportunity).unwrap();
        assert_eq!((o["engagement_status"].as_str(), o["sync_status"].as_str()), (Some("active"), Some("Synced")), "{o}");
    }
}

#[test]
fn when_stripe_reports_an_invoice_paid_should_apply_the_payment_to_the_posted_invoice_and_book_it_once() {
    // The story up to the posting of LE-DE-01-000001 (EUR 139,286.88, due 2027-03-31).
    let (_dir, db) = story_to_first_posting();
    let d = db.to_str().unwrap();
    let receivables = || json_out(&["receivables", "--db", d, "--as-of", "2027-04-30", "--legal-entity", "LE-DE-01", "--json"]);
    let invoice = |r: &Value| r["customers"][0]["receivables"]["invoices"]["INV-ENG-0068d00000GLBX01-1"].clone();
    assert_eq!(invoice(&receivables())["total"], json!({"amount": "139286.88", "currency": "EUR"}));
    assert_eq!(invoice(&receivables())["applied"]["amount"], "0");

    let bank = add_key(&db, "stripe", &["--source", "o2c.bank", "--detail-type", "PaymentReceived"]);
    let server = Server::start_with(&db, &["--mappings", repo("mappings").to_str().unwrap()]);
    let post = |name: &str, body: &Value| http_as(&server.addr, Some(&bank), "POST", &format!("/v1/ingest/{name}"), Some(body));
    // The customer pays the Stripe invoice that collects LE-DE-01-000001.
    let (code, resp) = post("stripe/invoice.paid", &example("stripe/invoice.paid"));
    assert_eq!((code, resp["FailedEntryCount"].as_u64()), (200, Some(0)), "{resp}");
    wait_until("the invoice is paid", || invoice(&receivables())["applied"]["amount"] == "139286.88");
    wait_until("every queue drained", || drained(&server));
    let r = receivables();
    let payment = &r["customers"][0]["receivables"]["payments"]["pi_3R2sVaEYbKjD8h0q1Qw2Er3T"];
    assert_eq!(
        (payment["status"].as_str(), payment["rule"].as_str(), payment["value_date"].as_str(), payment["unapplied"]["amount"].as_str()),
        (Some("booked"), Some("remittance"), Some("2027-03-29"), Some("0.00")),
        "{payment}"
    );
    assert_eq!(r["customers"][0]["open"], json!({"EUR": "0.00"}));

    // Stripe also reports the PaymentIntent itself (payment_intent.succeeded), and the webhook
    // again: the same payment, never booked twice.
    let mut pi = example("stripe/payment_intent.succeeded");
    pi["created"] = json!(1806313273);
    pi["data"]["object"]["id"] = json!("pi_3R2sVaEYbKjD8h0q1Qw2Er3T");
    pi["data"]["object"]["amount"] = json!(13928688);
    pi["data"]["object"]["amount_received"] = json!(13928688);
    for (name, body) in [("stripe/payment_intent.succeeded", pi), ("stripe/invoice.paid", example("stripe/invoice.paid"))] {
        let (code, resp) = post(name, &body);
        assert_eq!((code, resp["FailedEntryCount"].as_u64()), (200, Some(0)), "{name}: {resp}");
    }
    wait_until("the repeats processed", || drained(&server));
    let calls = json_out(&["sim", "calls", "--db", d, "--json"]);
    let calls: Vec<(&str, &str, &str)> = calls
        .as_array()
        .unwrap()
        .iter()
        .map(|c| (c["system"].as_str().unwrap(), c["operation"].as_str().unwrap(), c["outcome"].as_str().unwrap()))
        .collect();
    let receipts: Vec<_> = calls.iter().filter(|c| c.1 == "book_receipt").collect();
    assert_eq!(receipts, [&("erp", "book_receipt", "created")], "one receipt in the ERP: {calls:?}");
    // The CRM's invoice record: opened at posting, then paid.
    let crm: Vec<_> = calls.iter().filter(|c| c.1 == "upsert_invoice" && c.2 == "upserted").collect();
    assert_eq!(crm.len(), 2, "{calls:?}");
    assert_eq!(json_out(&["rejections", "--db", d, "--json"]), json!([]), "nothing parked");
    assert_eq!(json_out(&["exceptions", "list", "--db", d, "--json"]), json!([]), "no exception raised");
}

#[test]
fn when_the_erp_reports_invoices_should_reconcile_the_engagement_against_what_the_erp_holds() {
    // The story up to the posting of LE-DE-01-000001 (EUR 139,286.88, due 2027-03-31).
    let (_dir, db) = story_to_first_posting();
    let d = db.to_str().unwrap();
    let erp = add_key(&db, "s4hana", &["--source", "o2c.erp", "--detail-type", "ErpInvoicePosted"]);
    let crm = add_key(&db, "salesforce", &["--source", "o2c.crm", "--detail-type", "OpportunityClosedWon"]);
    let server = Server::start_with(&db, &["--mappings", repo("mappings").to_str().unwrap()]);
    let post = |key: &str, name: &str, body: &Value| http_as(&server.addr, Some(key), "POST", &format!("/v1/ingest/{name}"), Some(body));
    let report = || {
        let out = run(&["reconcile", "--db", d, "--engagement", "ENG-0068d00000GLBX01", "--report-only", "--json"]);
        let reports: Value = serde_json::from_slice(&out.stdout).unwrap_or(Value::Null);
        (out.status.code(), reports[0].clone())
    };

    // The CRM may not speak for the ERP.
    let billing = example("s4hana/billing-document");
    assert_eq!(post(&crm, "s4hana/billing-document", &billing).0, 403);
    // S/4HANA reports o2c's invoice (its number in the FI reference): read back, it agrees.
    let (code, resp) = post(&erp, "s4hana/billing-document", &billing);
    assert_eq!((code, resp["FailedEntryCount"].as_u64()), (200, Some(0)), "{resp}");
    wait_until("the ERP's report reconciled", || report().1["run_id"] == "erp:sap_s4hana:90000123");
    wait_until("every queue drained", || drained(&server));
    let (code, r) = report();
    assert_eq!(code, Some(0), "every system agrees: {r}");
    assert!(r["checked"].as_array().unwrap().iter().any(|c| c == "erp invoice LE-DE-01-000001"), "{r}");
    // NetSuite names an invoice the ERP does not hold (a stale or misdirected notice): read,
    // not found, nothing kept — the ERP's word is a hint, its records the fact.
    let (code, resp) = post(&erp, "netsuite/invoice", &example("netsuite/invoice"));
    assert_eq!((code, resp["FailedEntryCount"].as_u64()), (200, Some(0)), "{resp}");
    wait_until("the notice reconciled", || report().1["run_id"] == "erp:netsuite:4471");
    let (code, r) = report();
    assert_eq!((code, r.get("foreign_invoices")), (Some(0), None), "{r}");
    // A billing document that is not an invoice is refused with its path, and parked.
    let mut memo = billing.clone();
    memo["d"]["SDDocumentCategory"] = json!("O");
    let (code, resp) = post(&erp, "s4hana/billing-document", &memo);
    assert_eq!((code, resp["ErrorCode"].as_str()), (422, Some("UnmappablePayload")), "{resp}");
    assert!(resp["Issues"][0]["path"] == "$.d.SDDocumentCategory", "{resp}");
    wait_until("every queue drained", || drained(&server));
    assert_eq!(json_out(&["exceptions", "list", "--db", d, "--json"]), json!([]), "no exception raised");
}
