//! The OpenAPI document of `o2c serve` (`cli/openapi.yaml`) says what the server does:
//! it is served as checked in, every `$ref` resolves, every example matches its schema,
//! and every operation's examples, sent to a running server, are answered with a status
//! the document lists and a body of that status's schema — with an admin key, with no key
//! (`401`) and with a key that lacks the grant (`403`).
#![allow(missing_docs, clippy::unwrap_used, clippy::expect_used)]

use std::path::Path;
use std::time::{Duration, Instant};

use serde_json::Value;

mod common;

use common::{Server, add_key, http_as, http_raw, repo, run, text};

fn doc() -> Value {
    serde_yaml_ng::from_str(&std::fs::read_to_string(repo("cli/openapi.yaml")).unwrap()).unwrap()
}

/// Follows a local `$ref` (`#/a/b`) to what it names.
fn resolve<'a>(doc: &'a Value, v: &'a Value) -> &'a Value {
    match v.get("$ref").and_then(Value::as_str) {
        Some(r) => {
            let target = doc.pointer(r.strip_prefix('#').unwrap()).unwrap_or_else(|| panic!("{r} resolves to nothing"));
            resolve(doc, target)
        }
        None => v,
    }
}

/// Checks `value` against `schema`, its `$ref`s resolved against the document.
fn check(doc: &Value, schema: &Value, value: &Value, what: &str) {
    let mut root = schema.clone();
    if let Some(obj) = root.as_object_mut() {
        obj.insert("components".into(), doc["components"].clone());
    }
    let validator = jsonschema::draft202012::options().build(&root).unwrap_or_else(|e| panic!("{what}: schema does not compile: {e}"));
    let errors: Vec<String> = validator.iter_errors(value).map(|e| format!("{} at {}", e, e.instance_path())).collect();
    assert!(errors.is_empty(), "{what}: {value} does not match its schema: {errors:?}");
}

/// Every operation: (method, path template, operation).
fn operations(doc: &Value) -> Vec<(String, String, Value)> {
    let mut out = Vec::new();
    for (path, item) in doc["paths"].as_object().unwrap() {
        for (method, op) in item.as_object().unwrap() {
            out.push((method.to_uppercase(), path.clone(), op.clone()));
        }
    }
    out
}

/// Every `$ref` in the document resolves.
fn refs(doc: &Value, v: &Value) {
    match v {
        Value::Object(m) => {
            if let Some(r) = m.get("$ref").and_then(Value::as_str) {
                resolve(doc, v);
                assert!(r.starts_with("#/"), "only local refs: {r}");
            }
            m.values().for_each(|x| refs(doc, x));
        }
        Value::Array(a) => a.iter().for_each(|x| refs(doc, x)),
        _ => {}
    }
}

fn examples(content: &Value) -> Vec<(String, Value)> {
    let mut out = Vec::new();
    if let Some(e) = content.get("example") {
        out.push(("example".into(), e.clone()));
    }
    for (name, e) in content.get("examples").and_then(Value::as_object).into_iter().flatten() {
        out.push((name.clone(), e["value"].clone()));
    }
    out
}

#[test]
fn when_the_document_is_read_should_resolve_every_ref_and_every_example_should_match_its_schema() {
    let doc = doc();
    assert_eq!(doc["openapi"], "3.1.0");
    refs(&doc, &doc);
    let ops = operations(&doc);
    let mut ids: Vec<&str> = ops.iter().map(|(_, _, op)| op["operationId"].as_str().expect("every operation has an operationId")).collect();
    ids.sort_unstable();
    let n = ids.len();
    ids.dedup();
    assert_eq!(ids.len(), n, "operationIds are unique");
    let mut checked = 0;
    for (method, path, op) in &ops {
        let public = op.get("security").is_some_and(|s| s.as_array().is_some_and(Vec::is_empty));
        let responses = op["responses"].as_object().unwrap();
        if !public {
            assert!(responses.contains_key("401"), "{method} {path} needs a key: document 401");
        }
        for (status, resp) in responses {
            let resp = resolve(&doc, resp);
            for (mt, content) in resp.get("content").and_then(Value::as_object).into_iter().flatten() {
                for (name, ex) in examples(content) {
                    check(&doc, &content["schema"], &ex, &format!("{method} {path} {status} {mt} example {name}"));
                    checked += 1;
                }
            }
        }
        if let Some(body) = op.get("requestBody") {
            let content = &body["content"]["application/json"];
            for (name, ex) in examples(content) {
                check(&doc, &content["schema"], &ex, &format!("{method} {path} request example {name}"));
                checked += 1;
            }
        }
    }
    assert!(checked >= 15, "only {checked} examples");
}

/// Fills the path's parameters and the query with the parameters' examples.
fn url(path: &str, op: &Value) -> String {
    let mut url = path.to_owned();
    let mut query = Vec::new();
    for p in op.get("parameters").and_then(Value::as_array).into_iter().flatten() {
        let (name, ex) = (p["name"].as_str().unwrap(), &p["example"]);
        let ex = match ex {
            Value::String(s) => s.clone(),
            Value::Null => continue,
            other => other.to_string(),
        };
        match p["in"].as_str() {
            Some("path") => url = url.replace(&format!("{{{name}}}"), &ex),
            Some("query") => query.push(format!("{name}={ex}")),
            _ => {}
        }
    }
    assert!(!url.contains('{'), "{path}: a path parameter without an example");
    if query.is_empty() { url } else { format!("{url}?{}", query.join("&")) }
}

/// Sends `body` to `method url` and checks the answer against the operation's document.
fn exchange(doc: &Value, addr: &str, key: Option<&str>, method: &str, url: &str, op: &Value, body: Option<&Value>) -> u16 {
    let (status, headers, got) = http_raw(addr, key, method, url, body);
    let what = format!("{method} {url} ({})", if key.is_some() { "with a key" } else { "no key" });
    let resp = op["responses"].get(status.to_string()).unwrap_or_else(|| panic!("{what}: {status} is not documented: {got}"));
    let resp = resolve(doc, resp);
    let content_type = headers.iter().find(|(k, _)| k == "content-type").map(|(_, v)| v.clone()).unwrap_or_default();
    if content_type.starts_with("application/json") {
        let schema = &resp["content"]["application/json"]["schema"];
        assert!(!schema.is_null(), "{what}: {status} answers JSON the document does not describe");
        check(doc, schema, &got, &format!("{what} → {status}"));
    }
    for (name, _) in resp.get("headers").and_then(Value::as_object).into_iter().flatten() {
        let name = name.to_ascii_lowercase();
        assert!(headers.iter().any(|(k, _)| *k == name), "{what}: {status} without its documented header {name}");
    }
    status
}

fn seed(db: &Path) {
    let samples = ["OpportunityClosedWon", "ContractApproved"].map(|s| repo(&format!("events/samples/{s}.v1.json")));
    let out = run(&["run", "--db", db.to_str().unwrap(), samples[0].to_str().unwrap(), samples[1].to_str().unwrap()]);
    assert!(out.status.success(), "{}", text(&out.stderr));
}

#[test]
fn when_every_example_is_sent_to_a_server_should_answer_a_documented_status_with_a_body_of_its_schema() {
    let doc = doc();
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("o2c.db");
    seed(&db);
    let crm = add_key(&db, "salesforce", &["--source", "o2c.crm", "--detail-type", "OpportunityClosedWon"]);
    let server = Server::start_with(&db, &["--mappings", repo("mappings").to_str().unwrap()]);

    // Served as checked in.
    let (code, served) = http_as(&server.addr, None, "GET", "/openapi.json", None);
    assert_eq!((code, &served), (200, &doc));
    let mut raw = std::net::TcpStream::connect(&server.addr).unwrap();
    std::io::Write::write_all(&mut raw, b"GET /openapi.yaml HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").unwrap();
    let mut yaml = String::new();
    std::io::Read::read_to_string(&mut raw, &mut yaml).unwrap();
    assert!(yaml.ends_with(&std::fs::read_to_string(repo("cli/openapi.yaml")).unwrap()), "{yaml:.200}");

    // A closed-won without its mandatory fields: accepted by the bus, then parked by
    // intake — so the rejections below are a real one, checked against the schema.
    let ops = operations(&doc);
    let put = &ops.iter().find(|(_, p, _)| p == "/v1/events").unwrap().2;
    let closed_won = &put["requestBody"]["content"]["application/json"]["examples"]["closedWon"]["value"];
    assert_eq!(exchange(&doc, &server.addr, Some(&crm), "POST", "/v1/events", put, Some(closed_won)), 200);
    let deadline = Instant::now() + Duration::from_secs(30);
    while server.http("GET", "/v1/rejections", None).1.as_array().is_none_or(Vec::is_empty) {
        assert!(Instant::now() < deadline, "the incomplete closed-won was never parked");
        std::thread::sleep(Duration::from_millis(50));
    }

    let mut seen = std::collections::BTreeSet::new();
    for (method, path, op) in &ops {
        let url = url(path, op);
        let bodies: Vec<(String, Value)> = op.get("requestBody").map(|b| examples(&b["content"]["application/json"])).unwrap_or_default();
        let bodies: Vec<Option<&Value>> = if bodies.is_empty() { vec![None] } else { bodies.iter().map(|(_, v)| Some(v)).collect() };
        let public = op.get("security").is_some_and(|s| s.as_array().is_some_and(Vec::is_empty));
        for body in bodies {
            let status = exchange(&doc, &server.addr, Some(&server.key), method, &url, op, body);
            seen.insert(format!("{method} {path} {status}"));
            if !public {
                assert_eq!(exchange(&doc, &server.addr, None, method, &url, op, body), 401, "{method} {url} without a key");
                let limited = exchange(&doc, &server.addr, Some(&crm), method, &url, op, body);
                seen.insert(format!("{method} {path} {limited} (publisher)"));
            }
        }
    }
    // What the walk must have met: the answers worth documenting.
    for expected in [
        "POST /v1/events 200",
        "POST /v1/events 400",
        "POST /v1/events 403 (publisher)",
        "GET /v1/engagements/{id} 200",
        "GET /v1/rejections 200",
        "GET /v1/rejections 403 (publisher)",
        "GET /v1/exceptions/{id} 404",
        "POST /v1/exceptions/{id}/actions 404",
        "GET /healthz 200",
        "POST /v1/ingest/{vendor}/{object} 422",
    ] {
        assert!(seen.contains(expected), "never saw {expected}: {seen:?}");
    }
}
