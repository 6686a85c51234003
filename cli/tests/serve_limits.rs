//! `o2c serve` against clients that misbehave on purpose: headers that never end, a body
//! that stalls, a body over the limit (declared or chunked). Each is refused — the
//! connection closed, or a JSON `408` / `413` — and a valid request right after is still
//! accepted.
#![allow(missing_docs, clippy::unwrap_used, clippy::expect_used)]

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use serde_json::{Value, json};

mod common;

use common::{Server, repo};

fn valid_entry() -> Value {
    let ev: Value = serde_json::from_str(&std::fs::read_to_string(repo("events/samples/OpportunityClosedWon.v1.json")).unwrap()).unwrap();
    json!({"Entries": [{"Source": ev["source"], "DetailType": ev["detail-type"], "Detail": ev["detail"].to_string()}]})
}

fn still_accepts(server: &Server) {
    let (code, body) = server.http("POST", "/v1/events", Some(&valid_entry()));
    assert_eq!((code, body["FailedEntryCount"].as_u64()), (200, Some(0)), "{body}");
}

/// Reads what the server sends until it closes the connection (bounded wait).
fn read_until_closed(s: &mut TcpStream) -> String {
    s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    let mut out = Vec::new();
    match s.read_to_end(&mut out) {
        Ok(_) => String::from_utf8_lossy(&out).into_owned(),
        Err(e) => panic!("the server kept the connection open for 30 s: {e} (read so far: {:?})", String::from_utf8_lossy(&out)),
    }
}

fn status_and_json(resp: &str) -> (u16, Value) {
    let (head, body) = resp.split_once("\r\n\r\n").unwrap_or((resp, ""));
    let status = head.split_whitespace().nth(1).and_then(|c| c.parse().ok()).unwrap_or(0);
    (status, serde_json::from_str(body).unwrap_or(Value::Null))
}

#[test]
fn when_a_client_never_finishes_its_headers_should_be_disconnected_and_others_still_served() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start_with(&dir.path().join("o2c.db"), &["--header-timeout", "1"]);
    let started = Instant::now();
    let mut slow = TcpStream::connect(&server.addr).unwrap();
    // A slow-loris client: a request line and one header, then a byte now and then, never
    // the blank line that ends the headers.
    write!(slow, "POST /v1/events HTTP/1.1\r\nHost: x\r\n").unwrap();
    let mut closed = false;
    for _ in 0..40 {
        std::thread::sleep(Duration::from_millis(250));
        if slow.write_all(b"X").is_err() {
            closed = true;
            break;
        }
    }
    if !closed {
        let rest = read_until_closed(&mut slow);
        assert!(!rest.contains("200 OK"), "{rest}");
    }
    assert!(started.elapsed() < Duration::from_secs(40), "disconnected only after {:?}", started.elapsed());
    still_accepts(&server);
}

#[test]
fn when_a_body_stalls_should_answer_408_in_json_and_others_still_served() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start_with(&dir.path().join("o2c.db"), &["--body-timeout", "1"]);
    let mut s = TcpStream::connect(&server.addr).unwrap();
    write!(
        s,
        "POST /v1/events HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {}\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n{{\"Entries\"",
        server.key
    )
    .unwrap();
    let (status, body) = status_and_json(&read_until_closed(&mut s));
    assert_eq!((status, body["ErrorCode"].as_str()), (408, Some("RequestTimeout")), "{body}");
    still_accepts(&server);
}

#[test]
fn when_a_body_is_over_the_limit_should_answer_413_in_json_declared_or_chunked() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start_with(&dir.path().join("o2c.db"), &["--max-body", "65536"]);
    // Declared: refused from the headers, before the body is read.
    let mut s = TcpStream::connect(&server.addr).unwrap();
    write!(
        s,
        "POST /v1/events HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {}\r\nContent-Type: application/json\r\nContent-Length: 10000000\r\nConnection: close\r\n\r\n",
        server.key
    )
    .unwrap();
    let (status, body) = status_and_json(&read_until_closed(&mut s));
    assert_eq!((status, body["ErrorCode"].as_str()), (413, Some("RequestEntityTooLarge")), "{body}");

    // Chunked, no length declared: refused once the limit is passed.
    let mut s = TcpStream::connect(&server.addr).unwrap();
    write!(
        s,
        "POST /v1/events HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {}\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n",
        server.key
    )
    .unwrap();
    let chunk = vec![b' '; 16 * 1024];
    for _ in 0..8 {
        if write!(s, "{:x}\r\n", chunk.len()).and_then(|()| s.write_all(&chunk)).and_then(|()| s.write_all(b"\r\n")).is_err() {
            break;
        }
    }
    let _ = s.write_all(b"0\r\n\r\n");
    let (status, body) = status_and_json(&read_until_closed(&mut s));
    assert_eq!((status, body["ErrorCode"].as_str()), (413, Some("RequestEntityTooLarge")), "{body}");

    // Just under the limit is read (and refused for what it is, not for its size).
    let (code, body) = server.http("POST", "/v1/events", Some(&json!({"Entries": [], "pad": " ".repeat(60_000)})));
    assert_eq!((code, body["ErrorCode"].as_str()), (400, Some("ValidationException")), "{body}");
    still_accepts(&server);
}
