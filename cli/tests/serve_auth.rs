//! `o2c serve` against callers that are not who they say, or ask for more than they may:
//! no key, a malformed or forged key, a revoked key, a CRM key posting a CLM approval or a
//! payment, a publisher reading the API, an oversize body for the key, a burst over the
//! key's rate. Each is refused with its status and reason, recorded (`o2c sources
//! refusals`), changes nothing in any system — and a valid request right after is accepted.
#![allow(missing_docs, clippy::unwrap_used, clippy::expect_used)]

use std::path::Path;

use serde_json::{Value, json};

mod common;

use common::{Server, add_key, http_as, http_raw, repo, run, text};

fn entry(sample: &str) -> Value {
    let ev: Value = serde_json::from_str(&std::fs::read_to_string(repo(&format!("events/samples/{sample}.v1.json"))).unwrap()).unwrap();
    json!({"Source": ev["source"], "DetailType": ev["detail-type"], "Detail": ev["detail"].to_string()})
}

fn put(entries: &[Value]) -> Value {
    json!({"Entries": entries})
}

fn refusals(db: &Path) -> Value {
    let out = run(&["sources", "refusals", "--db", db.to_str().unwrap(), "--json", "--limit", "100"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    serde_json::from_slice(&out.stdout).unwrap()
}

fn status_of(db: &Path) -> String {
    let out = run(&["status", "--db", db.to_str().unwrap(), "0068d00000GLBX01", "--json"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    v["engagement"]["status"].as_str().unwrap().to_owned()
}

fn wait_for_status(server: &Server, want: &str) {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    loop {
        let (code, body) = server.http("GET", "/v1/engagements/ENG-0068d00000GLBX01", None);
        if code == 200 && body["engagement"]["status"] == want {
            return;
        }
        assert!(std::time::Instant::now() < deadline, "never {want}: {code} {body}");
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
}

#[test]
fn when_callers_lack_a_valid_key_or_the_grant_should_refuse_each_with_its_reason_record_it_and_still_serve_the_valid() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("o2c.db");
    let crm = add_key(&db, "salesforce", &["--source", "o2c.crm", "--detail-type", "OpportunityClosedWon", "--max-body", "20000"]);
    let clm = add_key(&db, "docusign", &["--source", "o2c.clm", "--detail-type", "ContractApproved"]);
    let server = Server::start(&db);
    let addr = server.addr.as_str();
    let accepted = |key: &str, sample: &str| {
        let (code, body) = http_as(addr, Some(key), "POST", "/v1/events", Some(&put(&[entry(sample)])));
        assert_eq!((code, body["FailedEntryCount"].as_u64()), (200, Some(0)), "{sample}: {body}");
    };
    let refused = |key: Option<&str>, body: &Value, status: u16, code: &str, reason: &str| {
        let (got, resp) = http_as(addr, key, "POST", "/v1/events", Some(body));
        assert_eq!((got, resp["ErrorCode"].as_str()), (status, Some(code)), "{resp}");
        let msg = resp["ErrorMessage"].as_str().unwrap();
        assert!(msg.contains(reason), "{msg:?} does not say {reason:?}");
    };

    accepted(&crm, "OpportunityClosedWon");
    wait_for_status(&server, "awaiting_approval");

    // No key; not a key; a forged secret for a real key id.
    let forged = format!("{}{}", &crm[..crm.len() - 4], if crm.ends_with("0000") { "1111" } else { "0000" });
    let approval = put(&[entry("ContractApproved")]);
    refused(None, &approval, 401, "MissingAuthenticationToken", "no credential");
    refused(Some("let-me-in"), &approval, 401, "InvalidApiKey", "not valid");
    refused(Some(&forged), &approval, 401, "InvalidApiKey", "not valid");
    // The CRM's key approving the contract as the CLM (the forged approval that once
    // activated an engagement), posting a payment, or hiding one among its own entries.
    refused(Some(&crm), &approval, 403, "AccessDeniedException", "may not publish as source `o2c.clm`");
    refused(Some(&crm), &put(&[entry("PaymentReceived")]), 403, "AccessDeniedException", "source `o2c.bank`");
    let mut as_crm = entry("ContractApproved");
    as_crm["Source"] = json!("o2c.crm");
    refused(
        Some(&crm),
        &put(&[entry("OpportunityClosedWon"), as_crm]),
        403,
        "AccessDeniedException",
        "[1] salesforce may not publish `ContractApproved`",
    );
    // A publisher reads nothing: the rejections hold other systems' payloads.
    let (code, body) = http_as(addr, Some(&crm), "GET", "/v1/rejections", None);
    assert_eq!((code, body["ErrorCode"].as_str()), (403, Some("AccessDeniedException")), "{body}");
    // Over the key's own body limit (below serve's).
    let mut big = entry("OpportunityClosedWon");
    big["Detail"] = json!(format!("{{\"pad\":\"{}\"}}", "x".repeat(30_000)));
    refused(Some(&crm), &put(&[big]), 413, "RequestEntityTooLarge", "exceeds 20000 bytes");

    // Nothing of that reached the flow: still waiting for the CLM, no project anywhere.
    assert_eq!(status_of(&db), "awaiting_approval");
    let calls = text(&run(&["sim", "calls", "--db", db.to_str().unwrap()]).stdout);
    assert!(!calls.contains("create_project"), "{calls}");

    // Revoked while serving: refused from the next request on.
    let out = run(&["sources", "revoke", "salesforce", "--db", db.to_str().unwrap()]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    refused(Some(&crm), &put(&[entry("OpportunityClosedWon")]), 401, "RevokedApiKey", "revoked");

    // The valid request right after: the CLM approves, the engagement activates.
    accepted(&clm, "ContractApproved");
    wait_for_status(&server, "active");

    let r = refusals(&db);
    let seen: Vec<(u64, String)> = r["latest"]
        .as_array()
        .unwrap()
        .iter()
        .rev()
        .map(|x| (x["status"].as_u64().unwrap(), x["code"].as_str().unwrap().to_owned()))
        .collect();
    let want = [
        (401, "MissingAuthenticationToken"),
        (401, "InvalidApiKey"),
        (401, "InvalidApiKey"),
        (403, "AccessDeniedException"),
        (403, "AccessDeniedException"),
        (403, "AccessDeniedException"),
        (403, "AccessDeniedException"),
        (413, "RequestEntityTooLarge"),
        (401, "RevokedApiKey"),
    ];
    assert_eq!(seen, want.map(|(s, c)| (s, c.to_owned())).to_vec(), "{r}");
    assert_eq!(r["total"], 9);
    let latest = &r["latest"];
    // Who, when known; the forged key by its id only; never a secret.
    assert_eq!(latest[0]["name"], "salesforce");
    assert_eq!(latest[6]["key_id"].as_str(), crm.split('_').nth(1));
    assert!(latest[6]["name"].is_null(), "a forged key is not attributed to its holder: {}", latest[6]);
    assert!(latest.as_array().unwrap().iter().all(|x| x["remote"].as_str().is_some_and(|a| a.starts_with("127.0.0.1:"))));
    let dump = r.to_string();
    for key in [&crm, &clm, &forged] {
        assert!(!dump.contains(key.rsplit('_').next().unwrap()), "a secret is in the refusals");
    }
    let printed = text(&run(&["sources", "refusals", "--db", db.to_str().unwrap()]).stdout);
    assert!(printed.starts_with("9 request(s) refused") && printed.contains("salesforce"), "{printed}");
}

#[test]
fn when_a_key_posts_faster_than_its_rate_should_answer_429_with_retry_after_and_accept_again_later() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("o2c.db");
    let key = add_key(&db, "psa", &["--source", "o2c.psa", "--detail-type", "*", "--rate", "2"]);
    let server = Server::start(&db);
    // `OpportunityClosedWon` from the PSA is granted by `*` but matches no rule: cheap.
    let mut e = entry("OpportunityClosedWon");
    e["Source"] = json!("o2c.psa");
    let body = put(&[e]);
    // The bucket holds one second's worth (2) and refills at 2 per second: of 20 requests
    // posted at once, at most 2 + 2 per second they took are accepted, whatever the load.
    let started = std::time::Instant::now();
    let codes: Vec<u16> = std::thread::scope(|s| {
        let handles: Vec<_> =
            (0..20).map(|_| s.spawn(|| http_raw(&server.addr, Some(&key), "POST", "/v1/events", Some(&body)).0)).collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    let allowed = 2 + 2 * started.elapsed().as_secs() as usize + 2;
    let ok = codes.iter().filter(|c| **c == 200).count();
    assert!(ok >= 1 && ok <= allowed, "{ok} accepted (at most {allowed}): {codes:?}");
    assert_eq!(ok + codes.iter().filter(|c| **c == 429).count(), 20, "{codes:?}");
    // Right after the burst the bucket is empty: the next refusal (bounded tries).
    let (code, headers, resp) = (0..50)
        .map(|_| http_raw(&server.addr, Some(&key), "POST", "/v1/events", Some(&body)))
        .find(|r| r.0 == 429)
        .expect("a 429 within 50 requests");
    assert_eq!((code, resp["ErrorCode"].as_str()), (429, Some("ThrottlingException")), "{resp}");
    assert!(resp["ErrorMessage"].as_str().unwrap().contains("2 request(s) per second"), "{resp}");
    let retry: u64 = headers.iter().find(|(k, _)| k == "retry-after").map(|(_, v)| v.parse().unwrap()).expect("Retry-After");
    assert!((1..=2).contains(&retry), "Retry-After: {retry}");
    // Another key is not slowed by this one's bucket.
    let (code, _) = server.http("GET", "/v1/queues", None);
    assert_eq!(code, 200);
    std::thread::sleep(std::time::Duration::from_secs(retry));
    let (code, resp) = http_as(&server.addr, Some(&key), "POST", "/v1/events", Some(&body));
    assert_eq!((code, resp["FailedEntryCount"].as_u64()), (200, Some(0)), "{resp}");
    // Recorded within the address's budget (20 a second): some, never more than were refused.
    let refused = codes.iter().filter(|c| **c == 429).count() + 1;
    let r = refusals(&db);
    let total = r["total"].as_u64().unwrap();
    assert!(total >= 1 && total <= refused as u64, "{total} of {refused}: {r}");
    assert!(r["latest"].as_array().unwrap().iter().all(|x| x["code"] == "ThrottlingException" && x["name"] == "psa"), "{r}");
}

#[test]
fn when_sources_are_managed_should_store_no_secret_list_them_refuse_bad_grants_and_send_with_a_key_file() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("o2c.db");
    let d = db.to_str().unwrap();
    let key_file = dir.path().join("crm.key");
    let out = run(&[
        "sources",
        "add",
        "crm",
        "--db",
        d,
        "--source",
        "o2c.crm",
        "--detail-type",
        "OpportunityClosedWon",
        "--key-file",
        key_file.to_str().unwrap(),
    ]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let key = std::fs::read_to_string(&key_file).unwrap().trim().to_owned();
    assert!(key.starts_with("o2c_") && !text(&out.stdout).contains(&key), "{}", text(&out.stdout));
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(std::fs::metadata(&key_file).unwrap().permissions().mode() & 0o777, 0o600);
    }
    // The file is never overwritten, and no key is created for nothing.
    let again = run(&["sources", "add", "crm", "--db", d, "--operator", "--key-file", key_file.to_str().unwrap()]);
    assert_eq!(again.status.code(), Some(1), "{}", text(&again.stderr));
    // Every reason a key cannot be created, and no file left behind.
    let bad_file = dir.path().join("bad.key");
    let bad = run(&["sources", "add", "bad name", "--db", d, "--source", "o2c crm", "--key-file", bad_file.to_str().unwrap()]);
    assert_ne!(bad.status.code(), Some(0));
    let said = text(&bad.stderr);
    assert!(said.contains("name") && said.contains("both sources and detail-types") && said.contains("`o2c crm`"), "{said}");
    assert!(!bad_file.exists());
    let raw = std::fs::read(&db).unwrap();
    let secret = key.rsplit('_').next().unwrap();
    assert!(!raw.windows(secret.len()).any(|w| w == secret.as_bytes()), "the secret is in the database file");

    let server = Server::start(&db);
    let url = format!("http://{}", server.addr);
    let sample = repo("events/samples/OpportunityClosedWon.v1.json");
    let out = run(&["send", "--url", &url, "--key-file", key_file.to_str().unwrap(), sample.to_str().unwrap()]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    // Without a key, and for an event outside the grant: refused, exit non-zero, reason shown.
    let out = run(&["send", "--url", &url, sample.to_str().unwrap()]);
    assert!(!out.status.success() && text(&out.stderr).contains("401"), "{}", text(&out.stderr));
    let pay = repo("events/samples/PaymentReceived.v1.json");
    let out = run(&["send", "--url", &url, "--key-file", key_file.to_str().unwrap(), pay.to_str().unwrap()]);
    assert!(!out.status.success() && text(&out.stderr).contains("may not publish"), "{}", text(&out.stderr));

    let listed = text(&run(&["sources", "list", "--db", d]).stdout);
    assert!(listed.starts_with("2 key(s), 2 active") && listed.contains("publishes o2c.crm / OpportunityClosedWon"), "{listed}");
    assert!(!listed.contains(secret));
    assert_eq!(run(&["sources", "revoke", "nobody", "--db", d]).status.code(), Some(1));
    let aws = run(&["sources", "list", "--target", "aws"]);
    assert_eq!(aws.status.code(), Some(2), "{}", text(&aws.stderr));
    assert!(text(&aws.stderr).contains("events:source"), "{}", text(&aws.stderr));
    // The health check needs no key (load balancers).
    assert_eq!(http_as(&server.addr, None, "GET", "/healthz", None).0, 200);
}

#[test]
fn when_a_client_floods_without_a_key_should_record_a_bounded_number_of_short_rows_and_serve_keys_meanwhile() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("o2c.db");
    let server = Server::start(&db);
    // 200 requests without a key, each with a 20 KB path: answered, but recorded only
    // within the address's budget, and each row cut short.
    let long = format!("/v1/engagements/{}", "x".repeat(20_000));
    let started = std::time::Instant::now();
    let codes: Vec<u16> = (0..200).map(|_| http_raw(&server.addr, None, "GET", &long, None).0).collect();
    let secs = started.elapsed().as_secs() + 1;
    assert!(codes.iter().all(|c| *c == 401 || *c == 429), "{codes:?}");
    assert!(codes.contains(&429), "the flood is throttled");
    let r = refusals(&db);
    let total = r["total"].as_u64().unwrap();
    assert!(total >= 20 && total <= 20 + 20 * secs, "{total} recorded in {secs} s");
    assert!(r["latest"].as_array().unwrap().iter().all(|x| x["path"].as_str().unwrap().chars().count() <= 257), "rows are cut short");
    // A keyed caller is served meanwhile.
    assert_eq!(server.http("GET", "/v1/queues", None).0, 200);
}

#[test]
fn when_an_operator_key_posts_operator_events_should_accept_them_only_in_its_own_name() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("o2c.db");
    let alice = add_key(&db, "alice", &["--operator"]);
    let crm = add_key(&db, "crm", &["--source", "o2c.crm", "--detail-type", "*"]);
    let server = Server::start(&db);
    let run_request = |by: &str| {
        let detail = json!({
            "event_id": format!("e-{by}"), "event_version": "1", "correlation_id": "corr-run", "occurred_at": "2027-03-01T05:00:00Z",
            "idempotency_key": format!("run:{by}"), "payload": {"run_id": format!("RUN-{by}"), "as_of": "2027-03-01", "requested_by": by}
        });
        put(&[json!({"Source": "o2c.scheduler", "DetailType": "InvoiceRunRequested", "Detail": detail.to_string()})])
    };
    // `o2c bill --url` with alice's key: accepted as alice, refused as anyone else.
    let (code, resp) = http_as(&server.addr, Some(&alice), "POST", "/v1/events", Some(&run_request("alice")));
    assert_eq!((code, resp["FailedEntryCount"].as_u64()), (200, Some(0)), "{resp}");
    let (code, resp) = http_as(&server.addr, Some(&alice), "POST", "/v1/events", Some(&run_request("bob")));
    assert_eq!(code, 403, "{resp}");
    assert!(resp["ErrorMessage"].as_str().unwrap().contains("requested_by"), "{resp}");
    // An operator key is not a source system; a source system is not an operator.
    assert_eq!(http_as(&server.addr, Some(&alice), "POST", "/v1/events", Some(&put(&[entry("OpportunityClosedWon")]))).0, 403);
    assert_eq!(http_as(&server.addr, Some(&crm), "POST", "/v1/events", Some(&run_request("crm"))).0, 403);
    // The bearer scheme in any case; another scheme does not hide an X-Api-Key.
    let mut s = std::net::TcpStream::connect(&server.addr).unwrap();
    std::io::Write::write_all(
        &mut s,
        format!("GET /v1/queues HTTP/1.1\r\nHost: x\r\nAuthorization: bearer {alice}\r\nConnection: close\r\n\r\n").as_bytes(),
    )
    .unwrap();
    let mut out = String::new();
    std::io::Read::read_to_string(&mut s, &mut out).unwrap();
    assert!(out.starts_with("HTTP/1.1 200"), "{out:.80}");
    let mut s = std::net::TcpStream::connect(&server.addr).unwrap();
    std::io::Write::write_all(
        &mut s,
        format!(
            "GET /v1/queues HTTP/1.1\r\nHost: x\r\nAuthorization: Basic Zm9vOmJhcg==\r\nX-Api-Key: {alice}\r\nConnection: close\r\n\r\n"
        )
        .as_bytes(),
    )
    .unwrap();
    let mut out = String::new();
    std::io::Read::read_to_string(&mut s, &mut out).unwrap();
    assert!(out.starts_with("HTTP/1.1 200"), "{out:.80}");
}
