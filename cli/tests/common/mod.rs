//! What the `o2c` binary's tests share: run the binary as a user would, find repository files.
// Each test binary uses a subset of these.
#![allow(dead_code, clippy::expect_used, clippy::unwrap_used)]

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::Duration;

use serde_json::Value;

/// The `o2c` binary cargo built for the tests, quiet but for warnings.
pub fn o2c() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_o2c"));
    c.env("RUST_LOG", "warn");
    c
}

/// A path under the repository root.
pub fn repo(rel: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..").join(rel)
}

/// Runs `o2c` with `args` to the end.
pub fn run(args: &[&str]) -> Output {
    o2c().args(args).output().expect("o2c runs")
}

/// Output bytes as text.
pub fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// A tiny HTTP/1.1 client (no extra dependency for a few calls), presenting `key` when given.
pub fn http_as(addr: &str, key: Option<&str>, method: &str, path: &str, body: Option<&Value>) -> (u16, Value) {
    let (status, _, body) = http_raw(addr, key, method, path, body);
    (status, body)
}

/// [`http_as`], with the response's headers (lower-case names).
pub fn http_raw(addr: &str, key: Option<&str>, method: &str, path: &str, body: Option<&Value>) -> (u16, Vec<(String, String)>, Value) {
    let mut s = TcpStream::connect(addr).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let payload = body.map(|b| b.to_string()).unwrap_or_default();
    let auth = key.map(|k| format!("Authorization: Bearer {k}\r\n")).unwrap_or_default();
    write!(s, "{method} {path} HTTP/1.1\r\nHost: {addr}\r\n{auth}Content-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{payload}", payload.len()).unwrap();
    let mut resp = String::new();
    s.read_to_string(&mut resp).unwrap();
    let (head, body) = resp.split_once("\r\n\r\n").unwrap_or((&resp, ""));
    let status = head.split_whitespace().nth(1).and_then(|c| c.parse().ok()).unwrap_or(0);
    let headers =
        head.lines().skip(1).filter_map(|l| l.split_once(':').map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_owned()))).collect();
    (status, headers, serde_json::from_str(body).unwrap_or(Value::Null))
}

/// Creates an API key on `db` with `o2c sources add NAME ARGS…`; returns the key.
pub fn add_key(db: &Path, name: &str, args: &[&str]) -> String {
    let out = o2c().args(["sources", "add", name, "--db", db.to_str().unwrap()]).args(args).output().expect("o2c runs");
    assert!(out.status.success(), "sources add {name}: {}", text(&out.stderr));
    text(&out.stdout).trim().to_owned()
}

/// `o2c serve` on a free loopback port, killed when dropped.
pub struct Server {
    child: Child,
    /// `host:port`.
    pub addr: String,
    /// A key that may do everything (`test-admin`: any source and detail-type, operator).
    pub key: String,
}

impl Server {
    /// Starts serving `db`.
    pub fn start(db: &Path) -> Self {
        Self::start_with(db, &[])
    }

    /// Starts serving `db` with extra `serve` arguments.
    pub fn start_with(db: &Path, extra: &[&str]) -> Self {
        let key = add_key(db, "test-admin", &["--source", "*", "--detail-type", "*", "--operator", "--rate", "100000"]);
        let mut child = o2c()
            .args(["serve", "--db", db.to_str().unwrap(), "--addr", "127.0.0.1:0"])
            .args(extra)
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("serve starts");
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap()).read_line(&mut line).unwrap();
        let addr = line
            .split("http://")
            .nth(1)
            .and_then(|r| r.split_whitespace().next())
            .unwrap_or_else(|| panic!("no address in {line:?}"))
            .to_owned();
        Self { child, addr, key }
    }

    /// A request with the admin key.
    pub fn http(&self, method: &str, path: &str, body: Option<&Value>) -> (u16, Value) {
        http_as(&self.addr, Some(&self.key), method, path, body)
    }

    /// SIGKILL, then reaps it.
    pub fn kill(mut self) {
        self.child.kill().expect("SIGKILL");
        self.child.wait().unwrap();
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
