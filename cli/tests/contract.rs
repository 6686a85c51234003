//! The CLI contract from outside (README, "CLI contract"): exit codes, a closed pipe, unknown
//! filter values, AWS errors with a hint, `o2c run`'s verdict on what it processed.
#![allow(missing_docs, clippy::unwrap_used, clippy::expect_used)]

use std::path::Path;
use std::process::Stdio;

use serde_json::{Value, json};

mod common;

use common::{o2c, repo, run, text};

/// A database with one engagement (the closed-won sample).
fn db_with_one_engagement(dir: &Path) -> String {
    let db = dir.join("o2c.db").to_str().unwrap().to_owned();
    let out = run(&["run", "--db", &db, repo("events/samples/OpportunityClosedWon.v1.json").to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    db
}

#[test]
fn when_stdout_is_closed_before_the_first_write_should_exit_0_without_a_panic() {
    let dir = tempfile::tempdir().unwrap();
    let db = db_with_one_engagement(dir.path());
    let commands: [&[&str]; 4] = [
        &["status", "--db", &db, "0068d00000GLBX01", "--json"],
        &["engagements", "--db", &db],
        &["dlq", "list", "--db", &db, "--json"],
        &["exceptions", "list", "--db", &db, "--all", "--json"],
    ];
    for args in commands {
        // A pipe whose reading end is already closed: the first write fails with EPIPE,
        // deterministically (what `o2c … | head -1` does once head has its line).
        let (reader, writer) = std::io::pipe().unwrap();
        drop(reader);
        let out = o2c().args(args).stdout(writer).stderr(Stdio::piped()).output().unwrap();
        let err = text(&out.stderr);
        assert_eq!(out.status.code(), Some(0), "o2c {args:?}: {err}");
        assert!(!err.contains("panicked") && !err.contains("Broken pipe"), "o2c {args:?}: {err}");
    }
}

#[test]
fn when_a_filter_value_or_a_flag_is_wrong_should_exit_2_naming_the_choices() {
    let dir = tempfile::tempdir().unwrap();
    let db = db_with_one_engagement(dir.path());
    let out = run(&["engagements", "--db", &db, "--status", "bogus"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(text(&out.stderr).contains("unknown status `bogus`") && text(&out.stderr).contains("active"), "{}", text(&out.stderr));
    let out = run(&["exceptions", "list", "--db", &db, "--kind", "nope"]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out.stderr));
    let out = run(&["engagements"]);
    assert_eq!(out.status.code(), Some(2), "--db is required: {}", text(&out.stderr));
    let out = run(&["sim", "fault", "--db", &db, "--system", "bank", "--kind", "timeout"]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out.stderr));
    let out = run(&["engagements", "--db", &db, "--no-such-flag"]);
    assert_eq!(out.status.code(), Some(2));
    assert_eq!(run(&["dlq", "redrive", "--db", &db, "NotAQueue"]).status.code(), Some(2));
    assert_eq!(run(&["rules", "test", "--pattern", "no-such-file.json", "--event", "{}"]).status.code(), Some(2));
    // Waiting for an engagement that never comes: incomplete (5), not a failure.
    assert_eq!(run(&["status", "--db", &db, "NOPE", "--wait-for", "active", "--timeout-secs", "1"]).status.code(), Some(5));
    let out = run(&["receivables", "--db", &db, "--legal-entity", "LE-XX-99"]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out.stderr));
    assert!(text(&out.stderr).contains("LE-DE-01"), "the known ones are listed: {}", text(&out.stderr));
    assert_eq!(run(&["receivables", "--db", &db, "--customer", "CUST-0000"]).status.code(), Some(2));
    // An engagement asked about by id that does not exist is a failure, not "nothing".
    for args in [
        &["invoice", "list", "--db", &db, "NOPE"][..],
        &["revenue", "show", "--db", &db, "NOPE"],
        &["reconcile", "--db", &db, "--engagement", "NOPE"],
    ] {
        let out = run(args);
        assert_eq!(out.status.code(), Some(1), "{args:?}: {}", text(&out.stderr));
        assert!(text(&out.stderr).contains("no engagement ENG-NOPE"), "{args:?}: {}", text(&out.stderr));
    }
    // A valid value still works, and an empty answer is not an error.
    let out = run(&["engagements", "--db", &db, "--status", "rejected", "--json"]);
    assert_eq!(out.status.code(), Some(0));
    assert_eq!(serde_json::from_slice::<Value>(&out.stdout).unwrap(), json!([]));
}

#[test]
fn when_run_parks_a_message_or_the_bus_refuses_an_entry_should_say_so_in_the_exit_code() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("o2c.db");
    let db = db.to_str().unwrap();
    // Schema-invalid: the closed-won sample with a revision that is not a number. The bus
    // accepts it (it is an event), the intake step parks it with its reasons: exit 4, and
    // it is listed.
    let mut ev: Value =
        serde_json::from_str(&std::fs::read_to_string(repo("events/samples/OpportunityClosedWon.v1.json")).unwrap()).unwrap();
    ev["detail"]["payload"]["revision"] = json!("one");
    ev["detail"]["idempotency_key"] = json!("contract-test-invalid-1");
    let bad = dir.path().join("invalid.json");
    std::fs::write(&bad, ev.to_string()).unwrap();
    let out = run(&["run", "--db", db, bad.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(4), "{}{}", text(&out.stdout), text(&out.stderr));
    assert!(text(&out.stdout).contains("1 parked rejection(s)"), "{}", text(&out.stdout));
    // The same message parked again (the store keeps one row per message) still counts,
    // and a closed standard output changes neither the work nor the exit code.
    let (reader, writer) = std::io::pipe().unwrap();
    drop(reader);
    let out = o2c().args(["run", "--db", db, bad.to_str().unwrap()]).stdout(writer).output().unwrap();
    assert_eq!(out.status.code(), Some(4), "{}", text(&out.stderr));
    assert!(text(&out.stderr).contains("o2c rejections"), "{}", text(&out.stderr));
    let listed: Value = serde_json::from_slice(&run(&["rejections", "--db", db, "--json"]).stdout).unwrap();
    assert_eq!(listed.as_array().unwrap().len(), 1, "{listed}");
    // Running something valid afterwards is judged on its own: the earlier parked message
    // does not make this run fail.
    let out = run(&["run", "--db", db, repo("events/samples/OpportunityClosedWon.v1.json").to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(0), "{}{}", text(&out.stdout), text(&out.stderr));
    // An entry the bus refuses (Detail is not a JSON object): exit 3.
    let refused = dir.path().join("refused.json");
    std::fs::write(&refused, json!([{"Source": "o2c.crm", "DetailType": "OpportunityClosedWon", "Detail": "[1,2]"}]).to_string()).unwrap();
    let out = run(&["run", "--db", db, refused.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(3), "{}{}", text(&out.stdout), text(&out.stderr));
}

#[test]
fn when_aws_is_unreachable_or_the_stage_missing_should_explain_in_one_line_with_a_hint() {
    let out = o2c()
        .args(["engagements", "--target", "aws", "--stage", "dev"])
        .env("AWS_ENDPOINT_URL", "http://127.0.0.1:9")
        .env("AWS_REGION", "eu-west-1")
        .env("AWS_ACCESS_KEY_ID", "test")
        .env("AWS_SECRET_ACCESS_KEY", "test")
        .env("AWS_MAX_ATTEMPTS", "1")
        .output()
        .unwrap();
    let err = text(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains("hint: AWS endpoint unreachable") && err.contains("AWS_ENDPOINT_URL"), "{err}");
    assert!(!err.contains("DispatchFailure(") && !err.contains("ConnectorError {"), "an SDK debug dump: {err}");

    // No region, no credentials: the SDK's real errors, one line each, with their hint.
    let bare = |extra: &[(&str, &str)]| {
        let mut c = o2c();
        c.args(["engagements", "--target", "aws", "--stage", "dev"]).env_clear().env("PATH", std::env::var("PATH").unwrap());
        c.env("HOME", "/nonexistent").env("AWS_EC2_METADATA_DISABLED", "true").env("RUST_LOG", "off");
        for (k, v) in extra {
            c.env(k, v);
        }
        let out = c.output().unwrap();
        (out.status.code(), text(&out.stderr))
    };
    let (code, err) = bare(&[("AWS_ACCESS_KEY_ID", "test"), ("AWS_SECRET_ACCESS_KEY", "test")]);
    assert_eq!(code, Some(1), "{err}");
    assert!(err.contains("Missing Region") && err.contains("hint: no AWS region: set AWS_REGION"), "{err}");
    let (code, err) = bare(&[("AWS_REGION", "eu-west-1")]);
    assert_eq!(code, Some(1), "{err}");
    assert!(err.contains("hint: no AWS credentials"), "{err}");
    assert_eq!(err.trim_end().lines().count(), 2, "the error on one line, then the hint: {err}");

    let endpoint = std::env::var("AWS_ENDPOINT_URL").expect("AWS_ENDPOINT_URL must point at moto_server (scripts/test.sh)");
    let stage = format!("missing{}", std::process::id());
    let out = o2c().args(["engagements", "--target", "aws", "--stage", &stage]).env("AWS_ENDPOINT_URL", endpoint).output().unwrap();
    let err = text(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains("o2c bootstrap"), "{err}");
}

#[test]
fn when_rules_are_tested_from_the_command_line_should_answer_like_test_event_pattern_in_order() {
    let sample = repo("events/samples/OpportunityClosedWon.v1.json");
    let sample = sample.to_str().unwrap();
    let answer = |pattern: &str| {
        let out = run(&["rules", "test", "--pattern", pattern, "--event", sample]);
        (out.status.code(), text(&out.stdout).trim().to_owned(), text(&out.stderr))
    };
    assert_eq!(answer(r#"{"source":["o2c.crm"],"detail-type":["OpportunityClosedWon"]}"#).1, "true");
    assert_eq!(answer(r#"{"source":[{"anything-but":{"prefix":"o2c."}}]}"#).1, "false");
    let (code, _, err) = answer(r#"{"source":[{"bogus":1}]}"#);
    assert_eq!(code, Some(2), "an invalid pattern is refused: {err}");
    assert!(err.contains("bogus"), "{err}");

    let envelope =
        |source: &str| json!({"id": "1", "account": "1", "source": source, "time": "t", "region": "r", "detail-type": "x", "detail": {}});
    let lines = [
        json!({"pattern": {"source": ["o2c.crm"]}, "event": envelope("o2c.crm")}).to_string(),
        "not json".to_owned(),
        json!({"pattern": {"source": ["o2c.crm"]}, "event": envelope("o2c.psa")}).to_string(),
        json!({"pattern": {"source": [{"numeric": ["<", "x"]}]}, "event": envelope("o2c.psa")}).to_string(),
        json!({"pattern": {"source": ["o2c.crm"]}, "event": {"source": "o2c.crm"}}).to_string(),
        String::new(),
        json!({"pattern": {"source": ["o2c.crm"]}, "event": envelope("o2c.crm")}).to_string(),
    ];
    let mut child = o2c().args(["rules", "test", "--batch", "-"]).stdin(Stdio::piped()).stdout(Stdio::piped()).spawn().unwrap();
    {
        use std::io::Write;
        let mut stdin = child.stdin.take().unwrap();
        writeln!(stdin, "{}", lines.join("\n")).unwrap();
    }
    let out = child.wait_with_output().unwrap();
    assert_eq!(out.status.code(), Some(3), "some lines got an error");
    let answers: Vec<Value> = text(&out.stdout).lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert_eq!(answers.len(), 7, "one answer per line, the blank one too: {answers:?}");
    assert_eq!(answers[5]["error"], "line 6: empty line");
    assert_eq!(answers[6], json!({"match": true}));
    assert_eq!(answers[0], json!({"match": true}));
    assert!(answers[1]["error"].as_str().unwrap().contains("line 2"));
    assert_eq!(answers[2], json!({"match": false}));
    assert!(answers[3]["error"].as_str().unwrap().starts_with("line 4: "), "{}", answers[3]);
    assert!(answers[4]["error"].as_str().unwrap().contains("missing field"), "{}", answers[4]);
}

#[test]
fn when_the_samples_are_run_together_in_any_file_order_should_tell_the_whole_story_without_a_parked_message() {
    let mut files: Vec<String> = std::fs::read_dir(repo("events/samples"))
        .unwrap()
        .map(|e| e.unwrap().path().to_str().unwrap().to_owned())
        .filter(|p| p.ends_with(".json"))
        .collect();
    files.sort();
    assert!(files.len() >= 10, "{files:?}");
    for order in ["alphabetical", "reversed"] {
        if order == "reversed" {
            files.reverse();
        }
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("story.db");
        let db = db.to_str().unwrap();
        let mut args = vec!["run", "--db", db];
        args.extend(files.iter().map(String::as_str));
        let out = run(&args);
        assert_eq!(out.status.code(), Some(0), "{order}: {}{}", text(&out.stdout), text(&out.stderr));
        assert!(text(&out.stdout).contains("0 parked rejection(s), 0 dead letter(s)"), "{order}: {}", text(&out.stdout));
        let s: Value = serde_json::from_slice(&run(&["status", "--db", db, "0068d00000GLBX01", "--json"]).stdout).unwrap();
        // Every system's side of the story: active, staffed and delivered, billed once,
        // approved, posted, partly paid by remittance, March recognised.
        assert_eq!(s["engagement"]["status"], "active", "{order}");
        assert_eq!(s["invoices"].as_array().unwrap().len(), 1, "{order}: one invoice");
        assert_eq!(s["invoices"][0]["status"], "posted", "{order}");
        let r = &s["receivables"][0];
        assert_eq!((r["number"].as_str(), r["open"]["amount"].as_str()), (Some("LE-DE-01-000001"), Some("89286.88")), "{order}: {r}");
        assert_eq!(
            (r["payments"][0]["rule"].as_str(), r["payments"][0]["status"].as_str()),
            (Some("remittance"), Some("booked")),
            "{order}"
        );
        assert_eq!(s["revenue"]["by_period"]["2027-03"]["amount"], "117047.80", "{order}");
        let exceptions: Value = serde_json::from_slice(&run(&["exceptions", "list", "--db", db, "--all", "--json"]).stdout).unwrap();
        assert_eq!(exceptions, json!([]), "{order}: no exception in the story");
        let calls = text(&run(&["sim", "calls", "--db", db]).stdout);
        for call in ["create_project", "create_billing_schedule", "post_invoice", "update_opportunity"] {
            assert!(calls.contains(call), "{order}: no {call} call: {calls}");
        }
    }
}
