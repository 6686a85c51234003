//! The `o2c` binary as users run it: `run`, `status`, `serve` (including a hard kill and
//! restart in the middle of a flow), `sim`, billing, receivables, revenue and the export.
#![allow(missing_docs, clippy::unwrap_used, clippy::expect_used)]

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::process::Stdio;
use std::time::{Duration, Instant};

use serde_json::{Value, json};

mod common;

use common::{Server, add_key, http_as, o2c, repo, run, text};

fn entry(sample: &str) -> Value {
    let ev: Value = serde_json::from_str(&std::fs::read_to_string(repo(&format!("events/samples/{sample}.v1.json"))).unwrap()).unwrap();
    json!({"Source": ev["source"], "DetailType": ev["detail-type"], "Detail": ev["detail"].to_string()})
}

fn wait_for(server: &Server, engagement: &str, status: &str, within: Duration) -> Value {
    let start = Instant::now();
    loop {
        let (code, body) = server.http("GET", &format!("/v1/engagements/{engagement}"), None);
        if code == 200 && body["engagement"]["status"] == status {
            return body;
        }
        assert!(start.elapsed() < within, "{engagement} did not reach {status}; last: {code} {body}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn when_input_is_unreadable_should_exit_non_zero_with_a_clear_message() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("o2c.db");
    let out = run(&["run", "--db", db.to_str().unwrap(), "does-not-exist.json"]);
    assert!(!out.status.success());
    assert!(text(&out.stderr).contains("cannot read does-not-exist.json"), "{}", text(&out.stderr));

    let garbage = dir.path().join("garbage.json");
    std::fs::write(&garbage, "{\"not\": \"an event\"}").unwrap();
    let out = run(&[
        "run",
        "--db",
        db.to_str().unwrap(),
        repo("events/samples/ContractApproved.v1.json").to_str().unwrap(),
        garbage.to_str().unwrap(),
    ]);
    assert!(!out.status.success());
    let err = text(&out.stderr);
    assert!(err.contains("garbage.json is not an event file"), "{err}");
    assert!(!db.exists(), "nothing is processed when any input is unreadable");
}

#[test]
fn when_run_on_one_thread_or_several_should_reach_the_same_state_and_refuse_zero() {
    let dir = tempfile::tempdir().unwrap();
    let cw = repo("events/samples/OpportunityClosedWon.v1.json");
    let clm = repo("events/samples/ContractApproved.v1.json");
    let mut states = Vec::new();
    // The default (a current-thread runtime), one explicitly, and a multi-thread runtime.
    for threads in [None, Some("1"), Some("3")] {
        let db = dir.path().join(format!("o2c-{}.db", threads.unwrap_or("default")));
        let mut args = Vec::new();
        if let Some(t) = threads {
            args.extend(["--threads", t]);
        }
        args.extend(["run", "--db", db.to_str().unwrap(), cw.to_str().unwrap(), clm.to_str().unwrap()]);
        let out = run(&args);
        assert!(out.status.success(), "{threads:?}: {}", text(&out.stderr));
        let out = run(&["status", "--db", db.to_str().unwrap(), "0068d00000GLBX01", "--json"]);
        let v: Value = serde_json::from_slice(&out.stdout).unwrap();
        states.push((v["engagement"]["status"].clone(), v["engagement"]["erp_billing_schedule_id"].is_string()));
    }
    assert!(states.iter().all(|s| *s == (json!("active"), true)), "{states:?}");
    let out = run(&["--threads", "0", "run", "--db", dir.path().join("zero.db").to_str().unwrap(), cw.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out.stderr));
}

#[test]
fn when_sample_files_are_run_should_process_to_quiescence_and_show_status() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("o2c.db");
    let cw = repo("events/samples/OpportunityClosedWon.v1.json");
    let clm = repo("events/samples/ContractApproved.v1.json");
    let out = run(&["run", "--db", db.to_str().unwrap(), cw.to_str().unwrap(), clm.to_str().unwrap()]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(text(&out.stdout).contains("accepted 2 event(s)"), "{}", text(&out.stdout));

    let out = run(&["status", "--db", db.to_str().unwrap(), "0068d00000GLBX01", "--json"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["engagement"]["status"], "active");
    assert!(v["engagement"]["psa_project_id"].is_string());
    assert!(v["timeline"].as_array().unwrap().len() >= 5);

    let out = run(&["status", "--db", db.to_str().unwrap(), "0068d00000GLBX01"]);
    let s = text(&out.stdout);
    assert!(s.contains("status             active") && s.contains("Timeline:"), "{s}");

    let out = run(&["status", "--db", db.to_str().unwrap(), "ENG-nope"]);
    assert!(!out.status.success());
    assert!(text(&out.stderr).contains("no engagement ENG-nope"));
}

#[test]
fn when_serve_receives_put_events_should_answer_per_entry_like_eventbridge() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(&dir.path().join("o2c.db"));
    let bad = json!({"Source": "o2c.crm", "DetailType": "OpportunityClosedWon", "Detail": "{not json"});
    let (code, body) = server.http("POST", "/v1/events", Some(&json!({"Entries": [entry("OpportunityClosedWon"), bad]})));
    assert_eq!(code, 200);
    assert_eq!(body["FailedEntryCount"], 1);
    assert!(body["Entries"][0]["EventId"].is_string());
    assert_eq!(body["Entries"][1]["ErrorCode"], "MalformedDetail");

    let eleven: Vec<Value> = (0..11).map(|_| entry("ContractApproved")).collect();
    let (code, body) = server.http("POST", "/v1/events", Some(&json!({"Entries": eleven})));
    assert_eq!(code, 400);
    assert_eq!(body["ErrorCode"], "ValidationException");

    wait_for(&server, "ENG-0068d00000GLBX01", "awaiting_approval", Duration::from_secs(20));
}

#[test]
fn when_serve_is_killed_mid_flow_should_resume_and_finish_after_restart() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("o2c.db");
    let server = Server::start(&db);
    // The ERP fails the first four project creations, so provisioning is in flight
    // (claimed, reserved, message invisible) when the process is killed.
    let out = run(&[
        "sim",
        "fault",
        "--db",
        db.to_str().unwrap(),
        "--system",
        "erp",
        "--operation",
        "create_project",
        "--kind",
        "server-error",
        "--times",
        "4",
    ]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let (code, body) =
        server.http("POST", "/v1/events", Some(&json!({"Entries": [entry("OpportunityClosedWon"), entry("ContractApproved")]})));
    assert_eq!((code, body["FailedEntryCount"].as_u64()), (200, Some(0)));
    wait_for(&server, "ENG-0068d00000GLBX01", "provisioning", Duration::from_secs(20));
    server.kill();
    let after_kill: Value =
        serde_json::from_slice(&run(&["status", "--db", db.to_str().unwrap(), "0068d00000GLBX01", "--json"]).stdout).unwrap();
    assert_eq!(after_kill["engagement"]["status"], "provisioning", "killed mid-flow");

    let server = Server::start(&db);
    let done = wait_for(&server, "ENG-0068d00000GLBX01", "active", Duration::from_secs(60));
    assert!(done["engagement"]["erp_billing_schedule_id"].is_string());
    drop(server);

    let calls = text(&run(&["sim", "calls", "--db", db.to_str().unwrap()]).stdout);
    let created =
        |system: &str| calls.lines().filter(|l| l.starts_with(system) && l.contains("create_project") && l.ends_with("created")).count();
    assert_eq!((created("psa"), created("erp")), (1, 1), "exactly one project per system across the restart:\n{calls}");
    let dlq = text(&run(&["dlq", "list", "--db", db.to_str().unwrap()]).stdout);
    assert!(dlq.lines().filter(|l| l.contains("dead-letter")).all(|l| l.split_whitespace().nth(1) == Some("0")), "{dlq}");
}

#[test]
fn when_the_archive_is_replayed_should_absorb_every_event_without_changing_state() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("o2c.db");
    let (cw, clm) = (repo("events/samples/OpportunityClosedWon.v1.json"), repo("events/samples/ContractApproved.v1.json"));
    assert!(run(&["run", "--db", db.to_str().unwrap(), cw.to_str().unwrap(), clm.to_str().unwrap()]).status.success());
    let before: Value =
        serde_json::from_slice(&run(&["status", "--db", db.to_str().unwrap(), "0068d00000GLBX01", "--json"]).stdout).unwrap();

    let out = run(&["replay", "--db", db.to_str().unwrap(), "--from", "2000-01-01T00:00:00Z", "--to", "2100-01-01T00:00:00Z"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let said = text(&out.stdout);
    assert!(said.contains("replayed 5 archived event(s)"), "{said}");

    let after: Value =
        serde_json::from_slice(&run(&["status", "--db", db.to_str().unwrap(), "0068d00000GLBX01", "--json"]).stdout).unwrap();
    assert_eq!(after["version"], before["version"], "a replay changes no state");
    assert_eq!(after["timeline"], before["timeline"], "and writes no timeline entry");
    let calls = text(&run(&["sim", "calls", "--db", db.to_str().unwrap()]).stdout);
    assert_eq!(calls.lines().filter(|l| l.ends_with("created")).count(), 3, "2 projects + 1 schedule, created once:\n{calls}");
}

#[test]
fn when_the_demo_runs_twice_with_one_seed_should_leave_byte_identical_state_in_every_engagement() {
    let dir = tempfile::tempdir().unwrap();
    let mut states: Vec<Vec<(String, Vec<u8>)>> = Vec::new();
    for n in 0..2 {
        let db = dir.path().join(format!("seeded-{n}.db"));
        let out = run(&["demo", "--seed", "42", "--db", db.to_str().unwrap()]);
        assert!(out.status.success(), "{}", text(&out.stderr));
        let list = run(&["engagements", "--db", db.to_str().unwrap(), "--json"]);
        let rows: Value = serde_json::from_slice(&list.stdout).unwrap();
        let mut state = Vec::new();
        for r in rows.as_array().unwrap() {
            let id = r["engagement_id"].as_str().unwrap().to_owned();
            let status = run(&["status", "--db", db.to_str().unwrap(), "--json", &id]);
            assert!(status.status.success(), "{}", text(&status.stderr));
            state.push((id, status.stdout));
        }
        state.sort();
        states.push(state);
    }
    assert_eq!(states[0].len(), 4, "the demo's four engagements");
    for ((id_a, a), (id_b, b)) in states[0].iter().zip(&states[1]) {
        assert_eq!(id_a, id_b);
        assert!(a == b, "{id_a}: the two seeded runs differ:\n{}\n---\n{}", text(a), text(b));
    }
}

#[test]
fn when_run_is_given_an_edited_template_should_route_by_its_rules_without_a_rebuild() {
    let dir = tempfile::tempdir().unwrap();
    // A platform team adds a rule: closed-won opportunities from a second CRM (source
    // `o2c.crm-eu`) go to intake too.
    let shipped = std::fs::read_to_string(repo("infra/template.yaml")).unwrap();
    let rule = r#"  ClosedWonEuRule:
    Type: AWS::Events::Rule
    Properties:
      EventBusName: !Ref EventBus
      Description: Closed-won opportunities from the EU CRM to intake.
      EventPattern:
        source: [o2c.crm-eu]
        detail-type: [OpportunityClosedWon]
      Targets:
        - Id: intake
          Arn: !GetAtt IntakeQueue.Arn
"#;
    let edited = shipped.replacen("Resources:\n", &format!("Resources:\n{rule}"), 1);
    assert_ne!(edited, shipped);
    let template = dir.path().join("my-template.yaml");
    std::fs::write(&template, edited).unwrap();
    let mut sample: Value =
        serde_json::from_str(&std::fs::read_to_string(repo("events/samples/OpportunityClosedWon.v1.json")).unwrap()).unwrap();
    sample["source"] = json!("o2c.crm-eu");
    let event = dir.path().join("eu.json");
    std::fs::write(&event, sample.to_string()).unwrap();

    // The shipped template has no rule for that source: the event is accepted but unrouted.
    let plain = dir.path().join("plain.db");
    let out = run(&[
        "run",
        "--db",
        plain.to_str().unwrap(),
        "--template",
        repo("infra/template.yaml").to_str().unwrap(),
        event.to_str().unwrap(),
    ]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(text(&out.stdout).contains("no engagements"), "{}", text(&out.stdout));

    let db = dir.path().join("edited.db");
    let out = run(&["run", "--db", db.to_str().unwrap(), "--template", template.to_str().unwrap(), event.to_str().unwrap()]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(text(&out.stderr).contains(&format!("template {}", template.display())), "the template used is named: {}", text(&out.stderr));
    let status = run(&["status", "--db", db.to_str().unwrap(), "--json", "0068d00000GLBX01"]);
    assert!(status.status.success(), "routed by the added rule: {}", text(&status.stderr));
    let v: Value = serde_json::from_slice(&status.stdout).unwrap();
    assert_eq!(v["engagement"]["status"], "awaiting_approval");
}

#[test]
fn when_an_operator_bills_approvers_decide_and_cash_arrives_should_post_apply_recognise_and_export_the_facts() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("o2c.db");
    let db = db.to_str().unwrap();
    let samples = ["OpportunityClosedWon", "ContractApproved", "MilestoneCompleted"].map(|s| repo(&format!("events/samples/{s}.v1.json")));
    let out = run(&["run", "--db", db, samples[0].to_str().unwrap(), samples[1].to_str().unwrap()]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let out = run(&["run", "--db", db, samples[2].to_str().unwrap()]);
    assert!(out.status.success(), "{}", text(&out.stderr));

    let out = run(&["bill", "--db", db, "--as-of", "2027-03-01", "--engagement", "0068d00000GLBX01", "--as", "U-BILL-01"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let s = text(&out.stdout);
    assert!(s.contains("pending_approval") && s.contains("needs approval: total EUR"), "{s}");

    let out = run(&["invoice", "list", "--db", db, "0068d00000GLBX01", "--json"]);
    let invoices: Value = serde_json::from_slice(&out.stdout).unwrap();
    let id = invoices[0]["invoice_id"].as_str().unwrap().to_owned();

    let out = run(&["invoice", "approve", &id, "--db", db, "--as", "U-BILL-01"]);
    assert_eq!(out.status.code(), Some(3), "a refused decision: {}", text(&out.stderr));
    assert!(text(&out.stdout).contains("REFUSED — U-BILL-01 does not hold the billing_approver role"), "{}", text(&out.stdout));

    let out = run(&["invoice", "approve", &id, "--db", db, "--as", "U-FIN-DE-01", "--comment", "checked against the SOW"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let s = text(&out.stdout);
    assert!(s.contains("LE-DE-01-000001") && s.contains("posted"), "{s}");

    let out = run(&["status", "--db", db, "0068d00000GLBX01"]);
    let s = text(&out.stdout);
    assert!(
        s.contains("WIP:")
            && s.contains("L1-MOBILIZE completed 2027-02-26")
            && s.contains("Invoice INV-ENG-0068d00000GLBX01-1  LE-DE-01-000001  posted"),
        "{s}"
    );
    assert!(run(&["invoice", "approve", "INV-nonsense", "--db", db, "--as", "U-FIN-DE-01"]).status.code() == Some(2));

    // The bank's sample credit (EUR 50,000 from Globex Manufacturing's account, quoting the
    // invoice's number) pays it in part.
    let out = run(&["run", "--db", db, repo("events/samples/PaymentReceived.v1.json").to_str().unwrap()]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let out = run(&["receivables", "--db", db, "--legal-entity", "LE-DE-01", "--as-of", "2027-04-30", "--json"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let r: Value = serde_json::from_slice(&out.stdout).unwrap();
    let c = &r["customers"][0];
    assert_eq!((c["legal_entity_id"].as_str(), c["customer_id"].as_str()), (Some("LE-DE-01"), Some("CUST-1001")), "{r}");
    let total: f64 = c["receivables"]["invoices"]["INV-ENG-0068d00000GLBX01-1"]["total"]["amount"].as_str().unwrap().parse().unwrap();
    let open: f64 = c["open"]["EUR"].as_str().unwrap().parse().unwrap();
    assert!((total - open - 50000.0).abs() < 0.001, "open {open} of {total}");
    assert_eq!(c["receivables"]["payments"]["DE-CAMT-2027041100017"]["rule"], "remittance", "the credit quotes LE-DE-01-000001");
    assert_eq!(c["overdue"][0], "LE-DE-01-000001", "due in March, open on 30 April");
    assert!(c["dso"]["EUR"].as_str().is_some(), "{c}");
    let s = text(&run(&["status", "--db", db, "0068d00000GLBX01"]).stdout);
    assert!(s.contains("Receivable LE-DE-01-000001") && s.contains("paid by DE-CAMT-2027041100017"), "{s}");

    // March closes: a revenue run that has not ended is refused, the ended one posts.
    let out = run(&["revenue", "run", "--db", db, "--period", "2027-03", "--as-of", "2027-03-15", "--engagement", "0068d00000GLBX01"]);
    assert!(!out.status.success() && text(&out.stderr).contains("2027-03 ends on 2027-03-31"), "{}", text(&out.stderr));
    let out = run(&["revenue", "run", "--db", db, "--period", "2027-03", "--as-of", "2027-04-01", "--engagement", "0068d00000GLBX01"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let s = text(&out.stdout);
    assert!(s.contains("period 2027-03: EUR") && s.contains("on_milestone") && s.contains("ratable"), "{s}");
    let rl: Value = serde_json::from_slice(&run(&["revenue", "show", "--db", db, "0068d00000GLBX01", "--json"]).stdout).unwrap();
    assert_eq!(rl["journals"].as_array().map(Vec::len), Some(1), "{rl}");
    assert_eq!(rl["journals"][0]["status"], "posted");

    // The warehouse's facts, as JSON Lines; a closed pipe ends the export quietly.
    let facts = dir.path().join("facts.jsonl");
    let out = run(&["export", "--db", db, "--since", "2000-01-01", "--out", facts.to_str().unwrap()]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let lines: Vec<Value> = std::fs::read_to_string(&facts).unwrap().lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    let kinds: std::collections::BTreeSet<&str> = lines.iter().filter_map(|l| l["fact"].as_str()).collect();
    assert_eq!(kinds.into_iter().collect::<Vec<_>>(), ["InvoicePosted", "PaymentApplied", "RevenueRecognized"]);
    let posted = lines.iter().find(|l| l["fact"] == "InvoicePosted").unwrap();
    assert!(
        posted["lines"].as_array().is_some_and(|l| !l.is_empty())
            && posted["due_date"].is_string()
            && posted["legal_entity_id"] == "LE-DE-01"
    );
    let out = run(&["export", "--db", db, "--since", "2999-01-01"]);
    assert!(out.status.success() && out.stdout.is_empty(), "nothing accepted after 2999");
    let mut child = o2c().args(["export", "--db", db]).stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().unwrap();
    drop(child.stdout.take());
    let status = child.wait().unwrap();
    assert!(status.success(), "a closed pipe is not an error");
}

#[test]
fn when_an_operator_works_the_exception_queue_should_filter_refuse_the_causer_retry_and_serve_it_over_http() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("o2c.db");
    let db = db.to_str().unwrap();
    let samples = ["OpportunityClosedWon", "ContractApproved", "MilestoneCompleted"].map(|s| repo(&format!("events/samples/{s}.v1.json")));
    let out = run(&["run", "--db", db, samples[0].to_str().unwrap(), samples[1].to_str().unwrap()]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    // The milestone once the engagement is active (before, the PSA's event is refused).
    let out = run(&["run", "--db", db, samples[2].to_str().unwrap()]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let out = run(&["bill", "--db", db, "--as-of", "2027-03-01", "--engagement", "0068d00000GLBX01", "--as", "U-BILL-01"]);
    assert!(out.status.success() && text(&out.stdout).contains("pending_approval"), "{}", text(&out.stdout));
    let invoices: Value = serde_json::from_slice(&run(&["invoice", "list", "--db", db, "0068d00000GLBX01", "--json"]).stdout).unwrap();
    let invoice = invoices[0]["invoice_id"].as_str().unwrap().to_owned();
    // The ERP refuses the posting once (a closed period).
    let fault = ["sim", "fault", "--db", db, "--system", "erp", "--operation", "post_invoice", "--kind", "rejected", "--times", "1"];
    let out = run(&[&fault[..], &["--code", "PERIOD_CLOSED", "--message", "March 2027 is closed"]].concat());
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(run(&["invoice", "approve", &invoice, "--db", db, "--as", "U-FIN-DE-01"]).status.success());

    // The queue, filtered.
    let s = text(&run(&["exceptions", "list", "--db", db]).stdout);
    assert!(s.contains("invoice_posting_failed") && s.contains("LE-DE-01") && s.contains("EUR"), "{s}");
    let listed = |extra: &[&str]| -> Vec<Value> {
        let out = run(&[&["exceptions", "list", "--db", db, "--json"][..], extra].concat());
        assert!(out.status.success(), "{}", text(&out.stderr));
        serde_json::from_slice::<Vec<Value>>(&out.stdout).unwrap()
    };
    let id = listed(&["--kind", "invoice_posting_failed", "--legal-entity", "LE-DE-01"])[0]["exception_id"].as_str().unwrap().to_owned();
    assert!(listed(&["--kind", "tax_failed"]).is_empty());
    assert!(listed(&["--legal-entity", "LE-SG-01"]).is_empty());
    assert!(listed(&["--older-than-hours", "1"]).is_empty(), "raised just now");
    assert_eq!(run(&["exceptions", "list", "--db", db, "--status", "bogus"]).status.code(), Some(2));
    let s = text(&run(&["exceptions", "show", &id, "--db", db]).stdout);
    assert!(s.contains("caused by      U-BILL-01, U-FIN-DE-01") && s.contains("PERIOD_CLOSED"), "{s}");

    // Assign; the approver may not resolve (exit 3, recorded); a retry posts and clears it.
    let out = run(&["exceptions", "assign", &id, "--db", db, "--to", "U-AR-01", "--as", "U-OPS-01"]);
    assert!(out.status.success() && text(&out.stdout).contains("assigned to U-AR-01"), "{}", text(&out.stdout));
    let out = run(&["exceptions", "resolve", &id, "--db", db, "--reason", "reposted", "--as", "U-FIN-DE-01"]);
    assert_eq!(out.status.code(), Some(3), "{}", text(&out.stdout));
    assert!(text(&out.stderr).contains("segregation of duties"), "{}", text(&out.stderr));
    let out = run(&["exceptions", "retry", &id, "--db", db, "--as", "U-AR-01"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let s = text(&out.stdout);
    assert!(s.contains("status         cleared") && s.contains("retried"), "{s}");
    assert!(listed(&[]).is_empty(), "the queue is empty");
    assert_eq!(listed(&["--all"]).len(), 1);
    let s = text(&run(&["invoice", "list", "--db", db, "0068d00000GLBX01"]).stdout);
    assert!(s.contains("LE-DE-01-000001") && s.contains("posted"), "{s}");
    assert_eq!(run(&["exceptions", "show", "EXC-nope", "--db", db]).status.code(), Some(1));

    // The same queue over HTTP.
    let server = Server::start(Path::new(db));
    let (code, body) = server.http("GET", "/v1/exceptions?all=true&kind=invoice_posting_failed", None);
    assert_eq!((code, body.as_array().map(Vec::len)), (200, Some(1)), "{body}");
    let (code, _) = server.http("GET", "/v1/exceptions?colour=red", None);
    assert_eq!(code, 400);
    let note = json!({"actor": "U-AR-01", "action": {"type": "comment", "text": "ERP period reopened by finance"}});
    // The actor is the key's holder: another operator's key cannot speak for U-AR-01.
    let (code, body) = server.http("POST", &format!("/v1/exceptions/{id}/actions"), Some(&note));
    assert_eq!((code, body["ErrorCode"].as_str()), (403, Some("AccessDeniedException")), "{body}");
    let ar = add_key(Path::new(db), "U-AR-01", &["--operator"]);
    let (code, body) = http_as(&server.addr, Some(&ar), "POST", &format!("/v1/exceptions/{id}/actions"), Some(&note));
    assert_eq!((code, body["FailedEntryCount"].as_u64()), (202, Some(0)), "{body}");
    let (code, _) = http_as(&server.addr, Some(&ar), "POST", "/v1/exceptions/EXC-nope/actions", Some(&note));
    assert_eq!(code, 404);
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    loop {
        let (_, c) = server.http("GET", &format!("/v1/exceptions/{id}"), None);
        if c["history"].as_array().is_some_and(|h| h.iter().any(|e| e["note"] == "ERP period reopened by finance")) {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "the comment never landed: {c}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn when_a_system_is_edited_behind_o2cs_back_should_reconcile_to_a_report_with_both_values_and_exit_4() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("o2c.db");
    let db = db.to_str().unwrap();
    let samples = ["OpportunityClosedWon", "ContractApproved"].map(|s| repo(&format!("events/samples/{s}.v1.json")));
    let out = run(&["run", "--db", db, samples[0].to_str().unwrap(), samples[1].to_str().unwrap()]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let out = run(&["reconcile", "--db", db]);
    assert!(out.status.success(), "{}{}", text(&out.stdout), text(&out.stderr));
    assert!(text(&out.stdout).contains("ENG-0068d00000GLBX01") && text(&out.stdout).contains("agrees"), "{}", text(&out.stdout));

    // What the simulators hold, then an ERP user edits the project's end date.
    let shown: Value = serde_json::from_slice(&run(&["sim", "show", "--db", db, "--json"]).stdout).unwrap();
    assert_eq!(shown["psa_projects"].as_array().map(Vec::len), Some(1), "{shown}");
    assert_eq!(shown["crm_opportunities"][0]["engagement_status"], "active");
    let s = text(&run(&["sim", "show", "--db", db]).stdout);
    assert!(s.contains("erp  project") && s.contains("erp  schedule") && s.contains("crm  opp"), "{s}");
    {
        let conn = rusqlite::Connection::open(db).unwrap();
        let n = conn.execute("UPDATE sim_projects SET spec = json_set(spec, '$.end_date', '2099-12-31') WHERE system = 'erp'", []).unwrap();
        assert_eq!(n, 1);
    }
    let report_dir = dir.path().join("report");
    let out = run(&["reconcile", "--db", db, "--engagement", "0068d00000GLBX01", "--out", report_dir.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(4), "{}{}", text(&out.stdout), text(&out.stderr));
    let s = text(&out.stdout);
    assert!(s.contains("BREAK") && s.contains("end_date") && s.contains("2099-12-31"), "{s}");
    let json: Value = serde_json::from_slice(&std::fs::read(report_dir.join("reconciliation.json")).unwrap()).unwrap();
    let m = &json[0]["mismatches"][0];
    assert_eq!(
        (m["system"].as_str(), m["field"].as_str(), m["system_value"].as_str()),
        (Some("erp"), Some("end_date"), Some("2099-12-31"))
    );
    let html = std::fs::read_to_string(report_dir.join("reconciliation.html")).unwrap();
    assert!(html.starts_with("<!doctype html>") && html.contains("end_date") && html.contains("1 with a break"), "{html}");
    let s = text(&run(&["exceptions", "list", "--db", db, "--kind", "reconciliation_mismatch"]).stdout);
    assert!(s.contains("reconciliation_mismatch"), "{s}");
}

#[test]
fn when_an_event_arrived_too_early_should_resubmit_it_by_event_id_keeping_its_correlation_and_drain_the_queues() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("o2c.db");
    let db = db.to_str().unwrap();
    let sample = |s: &str| repo(&format!("events/samples/{s}.v1.json"));
    // The PSA reports the milestone before the engagement is active: refused, parked.
    assert!(run(&["run", "--db", db, sample("ContractApproved").to_str().unwrap()]).status.success());
    assert_eq!(run(&["run", "--db", db, sample("MilestoneCompleted").to_str().unwrap()]).status.code(), Some(4), "parked: exit 4");
    assert!(run(&["run", "--db", db, sample("OpportunityClosedWon").to_str().unwrap()]).status.success());
    let milestone: Value = serde_json::from_str(&std::fs::read_to_string(sample("MilestoneCompleted")).unwrap()).unwrap();
    let (id, correlation) = (milestone["detail"]["event_id"].as_str().unwrap(), milestone["detail"]["correlation_id"].as_str().unwrap());
    let s = text(&run(&["status", "--db", db, "0068d00000GLBX01"]).stdout);
    assert!(!s.contains("L1-MOBILIZE completed"), "{s}");

    let out = run(&["resubmit", "--db", db, "--event-id", id, "--dry-run"]);
    let listed = text(&out.stdout);
    assert!(out.status.success() && listed.lines().count() == 1, "{listed}{}", text(&out.stderr));
    assert!(listed.contains("#resubmit-") && listed.contains(&format!("correlation {correlation}")), "{listed}");
    let out = run(&["resubmit", "--db", db, "--event-id", id]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let s = text(&run(&["status", "--db", db, "0068d00000GLBX01"]).stdout);
    assert!(s.contains("L1-MOBILIZE completed 2027-02-26"), "{s}");
    // Under its original key it is a redelivery: the refusal stands, nothing changes.
    assert!(run(&["resubmit", "--db", db, "--event-id", id, "--same-key"]).status.success());
    assert_eq!(run(&["resubmit", "--db", db, "--event-id", "no-such-event"]).status.code(), Some(1));
    assert_eq!(run(&["resubmit", "--db", db]).status.code(), Some(2), "an event id or a correlation id is required");
    // Nothing left queued: drain processes nothing and says so.
    let out = run(&["drain", "--db", db]);
    assert!(out.status.success() && text(&out.stdout).contains("accepted 0 event(s)"), "{}{}", text(&out.stdout), text(&out.stderr));
}

#[test]
fn when_a_simulation_seed_breaks_an_invariant_should_exit_1_and_print_the_command_that_replays_it() {
    let hazards = [
        "--log",
        "error",
        "sim",
        "run",
        "--seed",
        "3",
        "--engagements",
        "60",
        "--duplicates",
        "1",
        "--reorder",
        "--fault-rate",
        "0.2",
        "--crash-rate",
        "0.1",
    ];
    let ok = run(&hazards);
    assert!(ok.status.success(), "{}{}", text(&ok.stdout), text(&ok.stderr));
    let said = text(&ok.stdout);
    assert!(said.contains("ok    money_conserved") && said.contains("0 unaccounted"), "{said}");
    assert!(
        said.contains("ok    invoiced_equals_billable") && said.contains("ok    cash_conserved") && said.contains("billed: "),
        "{said}"
    );

    let args: Vec<&str> = hazards.iter().copied().chain(["--plant-bug", "ack-before-processing"]).collect();
    let bad = run(&args);
    assert_eq!(bad.status.code(), Some(1), "{}", text(&bad.stdout));
    assert!(text(&bad.stdout).contains("FAIL  every_input_accounted"), "{}", text(&bad.stdout));
    let replay = text(&bad.stderr);
    let command =
        replay.lines().find_map(|l| l.split("reproduce with: ").nth(1)).unwrap_or_else(|| panic!("no replay command in {replay}"));
    assert_eq!(command, args[2..].iter().fold("o2c".to_owned(), |c, a| format!("{c} {a}")));

    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("exists.db");
    std::fs::write(&db, b"").unwrap();
    let usage = run(&["sim", "run", "--db", db.to_str().unwrap()]);
    assert_eq!(usage.status.code(), Some(2), "a simulation needs a new database: {}", text(&usage.stderr));
}

/// A straight-through closed-won for opportunity `opp` (no CLM gate).
fn straight_through(opp: &str) -> Value {
    let mut e = entry("OpportunityClosedWon");
    let mut d: Value = serde_json::from_str(e["Detail"].as_str().unwrap()).unwrap();
    d["event_id"] = json!(format!("burst-{opp}"));
    d["idempotency_key"] = json!(format!("crm:opportunity:{opp}:closed-won:r1"));
    d["payload"]["opportunity_id"] = json!(opp);
    d["payload"]["lines"] = json!([{"line_id": "1", "service_offering_id": "SVC-STRAT", "billing_model": "fixed_fee",
        "amount": "1250000.00", "installments": 4, "installment_frequency": "quarterly"}]);
    e["Detail"] = json!(d.to_string());
    e
}

#[test]
fn when_serve_is_killed_during_a_burst_of_publishers_should_keep_every_acknowledged_event() {
    // Group commit answers PutEvents once an fsync covers the entries. Four publishers post
    // as fast as they can while the process is SIGKILLed: every event answered with an
    // EventId must be processed after the restart; unanswered ones may or may not be.
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("o2c.db");
    let server = Server::start(&db);
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let publishers: Vec<_> = (0..4)
        .map(|t| {
            let (addr, key, stop) = (server.addr.clone(), server.key.clone(), stop.clone());
            std::thread::spawn(move || {
                let mut acked = Vec::new();
                // Bounded, so the drain after the restart stays short on a loaded machine.
                for i in 0..200 {
                    if stop.load(std::sync::atomic::Ordering::SeqCst) {
                        break;
                    }
                    let opp = format!("0068dBURST{t}{i:05}");
                    let body = json!({"Entries": [straight_through(&opp)]});
                    // A connection cut by the kill is no acknowledgement.
                    let Ok(mut s) = TcpStream::connect(&addr) else { break };
                    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
                    let payload = body.to_string();
                    if write!(s, "POST /v1/events HTTP/1.1\r\nHost: {addr}\r\nAuthorization: Bearer {key}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{payload}", payload.len()).is_err() {
                        break;
                    }
                    let mut resp = String::new();
                    if s.read_to_string(&mut resp).is_err() || !resp.starts_with("HTTP/1.1 200") {
                        break;
                    }
                    let (_, b) = resp.split_once("\r\n\r\n").unwrap_or_default();
                    let b: Value = serde_json::from_str(b).unwrap_or(Value::Null);
                    if b["FailedEntryCount"] == 0 && b["Entries"][0]["EventId"].is_string() {
                        acked.push(opp);
                    }
                }
                acked
            })
        })
        .collect();
    std::thread::sleep(Duration::from_millis(1500));
    server.kill();
    stop.store(true, std::sync::atomic::Ordering::SeqCst);
    let acked: Vec<String> = publishers.into_iter().flat_map(|p| p.join().unwrap()).collect();
    assert!(acked.len() >= 8, "the publishers got answers before the kill: {}", acked.len());

    let out = run(&["drain", "--db", db.to_str().unwrap()]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let listed = run(&["engagements", "--db", db.to_str().unwrap(), "--status", "active", "--limit", "100000", "--json"]);
    let active: Vec<Value> = serde_json::from_slice(&listed.stdout).unwrap();
    let active: std::collections::HashSet<String> = active.iter().filter_map(|e| e["engagement_id"].as_str().map(str::to_owned)).collect();
    let lost: Vec<&String> = acked.iter().filter(|o| !active.contains(&format!("ENG-{o}"))).collect();
    assert!(lost.is_empty(), "{} of {} acknowledged events lost: {:?}", lost.len(), acked.len(), &lost[..lost.len().min(10)]);
}

#[test]
fn when_the_serve_load_script_posts_a_small_load_should_see_every_engagement_active_and_the_queues_drained() {
    // `scripts/benchmarks.sh`'s serve section, small: the script exits 1 on a refused or failed
    // request, a server that exits or does not start, or a run that does not drain within its
    // limit, and prints its row only once every engagement is active and every queue empty.
    let out = std::process::Command::new("python3")
        .arg(repo("scripts/serve_load.py"))
        .args([env!("CARGO_BIN_EXE_o2c"), "40", "--clients", "3", "--header", "--limit", "120"])
        .output()
        .expect("python3 runs");
    let (said, errors) = (text(&out.stdout), text(&out.stderr));
    assert!(out.status.success() && !errors.contains("Traceback"), "{said}{errors}");
    let row: Vec<&str> = said.lines().last().unwrap_or_default().split_whitespace().collect();
    assert_eq!(row.first().copied(), Some("40"), "{said}");
    assert_eq!(row.get(1).copied(), Some("3"), "{said}");
}
