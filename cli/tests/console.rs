//! The operator console in a real headless browser (Debian's `chromium` through
//! `chromedriver`, driven by `fantoccini`): sign-in refusals, the exception queue after a
//! planted failure, a segregation-of-duties refusal shown on the page, a resolution that
//! takes the case out of the queue and brings the CRM back to `Synced` (checked in the CRM
//! simulator too), a forged form refused, a revoked key signed out, every action in the
//! operator log — and screenshots of the main pages under `target/console-screenshots/`.
//!
//! Without `chromedriver` and `chromium` the test says so and passes, unless
//! `O2C_REQUIRE_BROWSER=1` (what `scripts/test.sh` sets after installing them).
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

mod common;

use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::{add_key, o2c, repo, run, text};
use fantoccini::{Client, ClientBuilder, Locator};

const OPP: &str = "0068d00000GLBX01";

fn which(name: &str) -> Option<PathBuf> {
    std::env::var_os("PATH")?.to_str()?.split(':').map(|d| Path::new(d).join(name)).find(|p| p.is_file())
}

/// `chromedriver` on a free loopback port, killed when dropped.
struct Driver {
    child: Child,
    url: String,
}

impl Driver {
    fn start(bin: &Path) -> Self {
        let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let child = Command::new(bin)
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("chromedriver starts");
        let deadline = Instant::now() + Duration::from_secs(20);
        while TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(Instant::now() < deadline, "chromedriver did not listen on {port}");
            std::thread::sleep(Duration::from_millis(100));
        }
        Self { child, url: format!("http://127.0.0.1:{port}") }
    }
}

impl Drop for Driver {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `chromedriver` and `chromium`, or `None` (the test skips, saying so) unless
/// `O2C_REQUIRE_BROWSER=1`.
fn tools() -> Option<(PathBuf, PathBuf)> {
    let found = which("chromedriver").zip(which("chromium").or_else(|| which("chromium-browser")));
    if found.is_none() {
        assert!(
            std::env::var("O2C_REQUIRE_BROWSER").as_deref() != Ok("1"),
            "O2C_REQUIRE_BROWSER=1 but chromedriver or chromium is missing"
        );
        eprintln!("SKIPPED: chromedriver and chromium are not installed (scripts/test.sh installs them)");
    }
    found
}

/// A headless Chromium session.
async fn browser(driver: &Path, chromium: &Path) -> (Driver, Client) {
    let driver = Driver::start(driver);
    let caps = serde_json::json!({"goog:chromeOptions": {
        "binary": chromium,
        "args": ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--window-size=1280,1100"],
    }});
    let caps = caps.as_object().unwrap().clone();
    let c = ClientBuilder::new(hyper_util::client::legacy::connect::HttpConnector::new())
        .capabilities(caps)
        .connect(&driver.url)
        .await
        .expect("a browser session");
    (driver, c)
}

/// `o2c serve` on a free port; its address.
struct Serve {
    child: Child,
    base: String,
}

impl Serve {
    fn start(db: &Path) -> Self {
        use std::io::BufRead;
        let mut child = o2c()
            .args(["serve", "--db", db.to_str().unwrap(), "--addr", "127.0.0.1:0"])
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("serve starts");
        let mut line = String::new();
        std::io::BufReader::new(child.stdout.take().unwrap()).read_line(&mut line).unwrap();
        let addr =
            line.split("http://").nth(1).and_then(|r| r.split_whitespace().next()).expect("address").trim_end_matches(';').to_owned();
        Self { child, base: format!("http://{addr}") }
    }
}

impl Drop for Serve {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn shots() -> PathBuf {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/console-screenshots");
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

async fn shot(c: &Client, name: &str) {
    let png = c.screenshot().await.unwrap();
    assert!(png.starts_with(b"\x89PNG"), "a PNG screenshot");
    std::fs::write(shots().join(format!("{name}.png")), png).unwrap();
}

async fn text_of(c: &Client, css: &str) -> String {
    c.find(Locator::Css(css)).await.unwrap_or_else(|e| panic!("no {css}: {e}")).text().await.unwrap()
}

/// Clicks what `css` finds and waits for the page it leads to: a new document, loaded (a
/// click may return before the navigation it starts, and the old page must not be read as
/// the new one).
async fn follow(c: &Client, css: &str) {
    let root = c.find(Locator::Css("html")).await.unwrap().element_id();
    c.find(Locator::Css(css)).await.unwrap_or_else(|e| panic!("no {css}: {e}")).click().await.unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        if let Ok(r) = c.find(Locator::Css("html")).await
            && r.element_id() != root
            && c.execute("return document.readyState", vec![]).await.ok().as_ref().and_then(|v| v.as_str()) == Some("complete")
        {
            return;
        }
        assert!(Instant::now() < deadline, "clicking {css} led nowhere");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Reloads `url` until the text of `css` holds `wanted` (the workers process in the
/// background), within 30 seconds.
async fn until_page_shows(c: &Client, url: &str, css: &str, wanted: &str) {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        c.goto(url).await.unwrap();
        let text = text_of(c, css).await;
        if text.contains(wanted) {
            return;
        }
        assert!(Instant::now() < deadline, "{url} never showed {wanted:?} in {css}: {text}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

async fn sign_in(c: &Client, base: &str, key: &str) {
    c.goto(&format!("{base}/console/login")).await.unwrap();
    c.find(Locator::Css("#key")).await.unwrap().send_keys(key).await.unwrap();
    follow(c, "form[action='/console/login'] button").await;
}

/// Every visible form control has a label, and the page has no script: readable without
/// JavaScript, usable with a screen reader.
async fn accessible(c: &Client) {
    let unlabelled = c
        .execute(
            "return [...document.querySelectorAll('input:not([type=hidden]),select,textarea')]\
             .filter(e => !(e.labels && e.labels.length) && !e.getAttribute('aria-label')).map(e => e.name);",
            vec![],
        )
        .await
        .unwrap();
    assert_eq!(unlabelled, serde_json::json!([]), "controls without a label on {}", c.current_url().await.unwrap());
    assert!(!c.source().await.unwrap().contains("<script"), "pages carry no script");
}

/// A raw HTTP/1.1 exchange outside the browser; the status and the head (lower-case).
fn raw(base: &str, request: &str) -> (u16, String) {
    use std::io::{Read, Write};
    let mut s = TcpStream::connect(base.trim_start_matches("http://")).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(15))).unwrap();
    s.write_all(request.as_bytes()).unwrap();
    let mut resp = String::new();
    s.read_to_string(&mut resp).unwrap();
    let head = resp.split("\r\n\r\n").next().unwrap_or_default().to_ascii_lowercase();
    (resp.split_whitespace().nth(1).and_then(|c| c.parse().ok()).unwrap_or(0), head)
}

/// A `GET` outside the browser naming `host`; the status.
fn get_as_host(base: &str, path: &str, host: &str) -> u16 {
    raw(base, &format!("GET {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n")).0
}

/// A form posted outside the browser with `cookie` (`name=value`) and `extra` header lines.
fn post_form(base: &str, path: &str, cookie: &str, extra: &str, body: &str) -> u16 {
    let addr = base.trim_start_matches("http://");
    let request = format!(
        "POST {path} HTTP/1.1\r\nHost: {addr}\r\nCookie: {cookie}\r\n{extra}Content-Type: application/x-www-form-urlencoded\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    raw(base, &request).0
}

/// The console's session cookie in the browser, as `name=value`.
async fn session_cookie(c: &Client) -> String {
    let all = c.get_all_cookies().await.unwrap();
    let cookie = all.iter().find(|k| k.name().starts_with("o2c_console_")).expect("a console session cookie");
    assert!(cookie.http_only() == Some(true), "HttpOnly");
    assert_eq!(cookie.path(), Some("/console"));
    format!("{}={}", cookie.name(), cookie.value())
}

/// An engagement whose invoice the ERP refused to post: an open `invoice_posting_failed`
/// case caused by U-BILL-01 (who ran the bill) and U-FIN-DE-01 (who approved it); the CRM
/// shows `Error`.
fn planted_failure(db: &str) {
    let samples = ["OpportunityClosedWon", "ContractApproved", "MilestoneCompleted"].map(|s| repo(&format!("events/samples/{s}.v1.json")));
    assert!(run(&["run", "--db", db, samples[0].to_str().unwrap(), samples[1].to_str().unwrap()]).status.success());
    assert!(run(&["run", "--db", db, samples[2].to_str().unwrap()]).status.success());
    let out = run(&["bill", "--db", db, "--as-of", "2027-03-01", "--engagement", OPP, "--as", "U-BILL-01"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let invoices: serde_json::Value = serde_json::from_slice(&run(&["invoice", "list", "--db", db, OPP, "--json"]).stdout).unwrap();
    let invoice = invoices[0]["invoice_id"].as_str().unwrap().to_owned();
    let fault = ["sim", "fault", "--db", db, "--system", "erp", "--operation", "post_invoice", "--kind", "rejected", "--times", "1"];
    assert!(run(&[&fault[..], &["--code", "PERIOD_CLOSED", "--message", "March 2027 is closed"]].concat()).status.success());
    assert!(run(&["invoice", "approve", &invoice, "--db", db, "--as", "U-FIN-DE-01"]).status.success());
}

fn crm_line(db: &str) -> String {
    let out = run(&["sim", "show", "--db", db]);
    text(&out.stdout).lines().find(|l| l.starts_with("crm") && l.contains(OPP)).unwrap_or_default().to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn when_an_operator_works_a_planted_failure_in_the_console_should_refuse_the_causer_then_resolve_and_sync_the_crm() {
    let Some((driver, chromium)) = tools() else { return };
    let dir = tempfile::tempdir().unwrap();
    let db_path = dir.path().join("o2c.db");
    let db = db_path.to_str().unwrap();
    planted_failure(db);
    assert!(crm_line(db).contains("Error"), "{}", crm_line(db));
    let approver = add_key(&db_path, "U-FIN-DE-01", &["--operator"]);
    let controller = add_key(&db_path, "U-CTRL-01", &["--operator"]);
    let publisher = add_key(&db_path, "crm-prod", &["--source", "o2c.crm", "--detail-type", "OpportunityClosedWon"]);
    let server = Serve::start(&db_path);
    let base = server.base.clone();
    let (_driver, c) = browser(&driver, &chromium).await;

    // No session: every page leads to the sign-in form; bad and non-operator keys are refused on it.
    c.goto(&format!("{base}/console/exceptions")).await.unwrap();
    assert!(c.current_url().await.unwrap().path().ends_with("/console/login"));
    accessible(&c).await;
    sign_in(&c, &base, "o2c_000000000000_forged").await;
    assert!(text_of(&c, "#flash").await.contains("Not signed in"), "a forged key is refused");
    sign_in(&c, &base, &publisher).await;
    assert!(text_of(&c, "#flash").await.contains("crm-prod is not an operator"));
    shot(&c, "login-refused").await;
    let huge = format!("key={}", "A".repeat(10_000));
    assert_eq!(post_form(&base, "/console/login", "", "", &huge), 413, "an oversize sign-in form is refused before it is read");
    let (_, head) = raw(&base, "GET /console/login HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n");
    for h in ["content-security-policy: default-src 'none';", "frame-ancestors 'none'", "x-frame-options: deny", "cache-control: no-store"]
    {
        assert!(head.contains(h), "{h} missing: {head}");
    }
    // A sign-in form posted from another site (login CSRF) is refused before the key is read.
    let forged = post_form(&base, "/console/login", "", "Origin: http://evil.example\r\n", &format!("key={approver}"));
    assert_eq!(forged, 403);

    // The approver who caused the failure: the queue shows it; resolving it is refused on the page.
    sign_in(&c, &base, &approver).await;
    assert_eq!(text_of(&c, "#operator").await, "U-FIN-DE-01");
    assert_eq!(text_of(&c, "#open-exceptions .n").await, "1");
    shot(&c, "overview").await;
    accessible(&c).await;
    c.goto(&format!("{base}/console/exceptions?kind=invoice_posting_failed")).await.unwrap();
    let row = text_of(&c, "#cases tbody tr").await;
    assert!(row.contains("invoice_posting_failed") && row.contains("LE-DE-01") && row.contains("EUR 136850.00"), "{row}");
    shot(&c, "exception-queue").await;
    accessible(&c).await;
    follow(&c, "#cases tbody tr td a").await;
    let case_url = c.current_url().await.unwrap().to_string();
    accessible(&c).await;
    c.find(Locator::Css("#resolve-reason")).await.unwrap().send_keys("released the hold myself").await.unwrap();
    follow(&c, "#resolve").await;
    let flash = text_of(&c, "#flash").await;
    assert!(flash.contains("Refused") && flash.contains("segregation of duties"), "{flash}");
    assert!(text_of(&c, "#status").await.contains("open"));
    assert!(text_of(&c, "#history").await.contains("refused"));
    shot(&c, "sod-refusal").await;

    // A form posted with the session's cookie but without its token is refused (403).
    let cookie = session_cookie(&c).await;
    let path = case_url.trim_start_matches(&base).to_owned() + "/actions";
    assert_eq!(post_form(&base, &path, &cookie, "", "csrf=forged&action=waive&reason=not+material"), 403);
    // The right token from another origin of this host (another port is the same site).
    let csrf = c.find(Locator::Css("input[name=csrf]")).await.unwrap().attr("value").await.unwrap().unwrap();
    let other_port = "Sec-Fetch-Site: same-site\r\nOrigin: http://127.0.0.1:9\r\n";
    assert_eq!(post_form(&base, &path, &cookie, other_port, &format!("csrf={csrf}&action=waive&reason=not+material")), 403);
    follow(&c, "form.signout button").await;
    assert!(c.current_url().await.unwrap().path().ends_with("/console/login"));
    assert_eq!(post_form(&base, &path, &cookie, "", "csrf=x&action=waive&reason=x"), 303, "a signed-out cookie goes to sign-in");

    // Another operator resolves it: it leaves the queue, the engagement and the CRM are Synced.
    sign_in(&c, &base, &controller).await;
    c.goto(&case_url).await.unwrap();
    c.find(Locator::Css("#resolve-reason")).await.unwrap().send_keys("Period reopened by the controller; invoice released").await.unwrap();
    follow(&c, "#resolve").await;
    let flash = text_of(&c, "#flash").await;
    assert!(flash.contains("the case is resolved"), "{flash}");
    c.goto(&format!("{base}/console/exceptions")).await.unwrap();
    assert_eq!(text_of(&c, "#empty").await, "No exception matches.");
    c.goto(&format!("{base}/console/exceptions?status=resolved")).await.unwrap();
    assert!(text_of(&c, "#cases").await.contains("resolved"));
    c.goto(&format!("{base}/console/engagements?q={OPP}")).await.unwrap();
    follow(&c, "#engagements tbody a").await;
    let deadline = Instant::now() + Duration::from_secs(20);
    while !text_of(&c, "#crm").await.contains("Synced") {
        assert!(Instant::now() < deadline, "the CRM never showed Synced: {}", text_of(&c, "#crm").await);
        tokio::time::sleep(Duration::from_millis(200)).await;
        c.refresh().await.unwrap();
    }
    let timeline = text_of(&c, "#timeline").await;
    assert!(timeline.contains("exception_action_refused") && timeline.contains("exception_closed"), "{timeline}");
    shot(&c, "engagement").await;
    accessible(&c).await;
    assert!(crm_line(db).contains("Synced"), "the CRM simulator's own record: {}", crm_line(db));

    // The other pages, and the log naming each operator's actions.
    for (page, name) in
        [("queues", "queues"), ("reconciliation", "reconciliation"), ("receivables", "receivables"), ("engagements", "engagements")]
    {
        c.goto(&format!("{base}/console/{page}")).await.unwrap();
        assert!(c.find(Locator::Css("main h1")).await.is_ok(), "{page} renders");
        accessible(&c).await;
        shot(&c, name).await;
    }
    c.goto(&format!("{base}/console/log")).await.unwrap();
    let log = text_of(&c, "#actions").await;
    let did = |who: &str, what: &str, outcome: &str| log.lines().any(|l| l.contains(who) && l.contains(what) && l.contains(outcome));
    assert!(did("U-FIN-DE-01", "exception.resolve", "segregation of duties"), "{log}");
    assert!(did("U-CTRL-01", "exception.resolve", "the case is resolved") && did("U-FIN-DE-01", "logout", "session closed"), "{log}");
    let refusals = text_of(&c, "#refusals").await;
    assert!(refusals.contains("InvalidCsrfToken") && refusals.contains("crm-prod"), "{refusals}");
    shot(&c, "log").await;

    // Revoking the key ends its session on the next request.
    let out = o2c().args(["sources", "revoke", "U-CTRL-01", "--db", db]).output().unwrap();
    assert!(out.status.success(), "{}", text(&out.stderr));
    c.goto(&format!("{base}/console/exceptions")).await.unwrap();
    assert!(c.current_url().await.unwrap().path().ends_with("/console/login"), "a revoked key's session ends");
    c.close().await.unwrap();
    drop(server);
}

/// A background `o2c` process, killed when dropped.
struct Background(Child);

impl Drop for Background {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Starts `o2c ARGS` in the background; the first line of its output holding `marker`.
fn background(args: &[&str], marker: &str) -> (Background, String) {
    use std::io::BufRead;
    let mut child = o2c().args(args).stdout(Stdio::piped()).stderr(Stdio::null()).spawn().expect("o2c starts");
    let mut out = std::io::BufReader::new(child.stdout.take().unwrap());
    let mut line = String::new();
    loop {
        line.clear();
        assert!(out.read_line(&mut line).unwrap() > 0, "o2c {args:?} ended before printing {marker}");
        if line.contains(marker) {
            break;
        }
    }
    // Keep draining what it prints, so a full pipe never blocks it.
    std::thread::spawn(move || std::io::copy(&mut out, &mut std::io::sink()));
    (Background(child), line.trim().to_owned())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn when_the_console_serves_a_stage_should_show_its_tables_and_act_as_the_callers_aws_identity_on_loopback_only() {
    let Some((driver, chromium)) = tools() else { return };
    std::env::var("AWS_ENDPOINT_URL").expect("AWS_ENDPOINT_URL must point at moto_server (scripts/test.sh)");
    let stage = format!("console{}", std::process::id());
    let dir = tempfile::tempdir().unwrap();
    let sims = dir.path().join("sims.db");
    let sims = sims.to_str().unwrap();
    let out = run(&["bootstrap", "--stage", &stage]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let (_sim, line) = background(&["sim", "serve", "--db", sims, "--addr", "127.0.0.1:0"], "PSA http://");
    let sim = line.split("PSA ").nth(1).and_then(|r| r.split_whitespace().next()).unwrap().trim_end_matches("/psa").to_owned();
    // The ERP refuses the project: provisioning fails and raises an exception on the stage.
    let fault = ["sim", "fault", "--db", sims, "--system", "erp", "--operation", "create_project", "--kind", "rejected"];
    assert!(run(&[&fault[..], &["--code", "INVALID_KEY_OR_REF", "--message", "Invalid customer reference"]].concat()).status.success());
    let urls = [format!("{sim}/psa"), format!("{sim}/erp"), format!("{sim}/crm"), format!("{sim}/tax")];
    let serve = [
        "serve",
        "--target",
        "aws",
        "--stage",
        &stage,
        "--addr",
        "127.0.0.1:0",
        "--psa-url",
        &urls[0],
        "--erp-url",
        &urls[1],
        "--crm-url",
        &urls[2],
        "--tax-url",
        &urls[3],
    ];
    let (_serve, line) = background(&serve, "/console/login?token=");
    assert!(line.contains(" as moto (arn:aws:sts::"), "the console acts as the caller's AWS identity: {line}");
    let link = line.split_whitespace().last().unwrap().to_owned();
    let base = link.split("/console").next().unwrap().to_owned();
    let samples = ["OpportunityClosedWon", "ContractApproved"].map(|s| repo(&format!("events/samples/{s}.v1.json")));
    let out = run(&["send", "--target", "aws", "--stage", &stage, samples[0].to_str().unwrap(), samples[1].to_str().unwrap()]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let deadline = Instant::now() + Duration::from_secs(120);
    let case = loop {
        let out = run(&["exceptions", "list", "--target", "aws", "--stage", &stage, "--json"]);
        let cases: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap_or_default();
        if let Some(id) = cases[0]["exception_id"].as_str() {
            break id.to_owned();
        }
        assert!(Instant::now() < deadline, "no exception on the stage: {}", text(&out.stderr));
        std::thread::sleep(Duration::from_millis(500));
    };

    // Only the printed link signs in, and only under a loopback host name.
    assert_eq!(get_as_host(&base, "/console/login?token=0000", "127.0.0.1"), 401);
    let path = link.trim_start_matches(&base);
    assert_eq!(get_as_host(&base, path, "evil.example:80"), 421, "a rebinding page's Host is refused");
    let (_driver, c) = browser(&driver, &chromium).await;
    c.goto(&format!("{base}/console/exceptions")).await.unwrap();
    assert!(c.current_url().await.unwrap().path().ends_with("/console/login"));
    c.goto(&link).await.unwrap();
    assert_eq!(text_of(&c, "#operator").await, "moto");
    assert_eq!(get_as_host(&base, path, "127.0.0.1"), 401, "a sign-in link works once");
    assert!(text_of(&c, "footer").await.contains(&format!("stage {stage} on AWS")));
    c.goto(&format!("{base}/console/exceptions")).await.unwrap();
    let row = text_of(&c, "#cases tbody tr").await;
    assert!(row.contains("provisioning_failed") && row.contains(&case), "{row}");
    accessible(&c).await;
    shot(&c, "aws-exception-queue").await;
    follow(&c, "#cases tbody tr td a").await;
    c.find(Locator::Css("form[aria-label=Comment] textarea"))
        .await
        .unwrap()
        .send_keys("Customer reference corrected in the ERP")
        .await
        .unwrap();
    follow(&c, "form[aria-label=Comment] button").await;
    let flash = text_of(&c, "#flash").await;
    assert!(flash.contains("comment: done"), "{flash}");
    c.find(Locator::Css("#resolve-reason")).await.unwrap().send_keys("Project created by hand in the ERP").await.unwrap();
    follow(&c, "#resolve").await;
    let flash = text_of(&c, "#flash").await;
    assert!(flash.contains("the case is resolved"), "{flash}");
    c.goto(&format!("{base}/console/exceptions")).await.unwrap();
    assert_eq!(text_of(&c, "#empty").await, "No exception matches.");
    for page in ["", "/engagements", "/queues", "/reconciliation", "/receivables"] {
        c.goto(&format!("{base}/console{page}")).await.unwrap();
        assert!(c.find(Locator::Css("main h1")).await.is_ok(), "{page} renders over the stage");
        accessible(&c).await;
    }
    // The operator log is the stage's (its table), by the AWS identity.
    c.goto(&format!("{base}/console/log")).await.unwrap();
    let log = text_of(&c, "#actions").await;
    for what in ["login", "exception.comment", "exception.resolve"] {
        assert!(log.lines().any(|l| l.contains("moto") && l.contains(what)), "{what} by moto: {log}");
    }
    shot(&c, "aws-log").await;
    c.close().await.unwrap();

    // What the stage's table holds: the actions, by the AWS identity.
    let out = run(&["exceptions", "show", &case, "--target", "aws", "--stage", &stage, "--json"]);
    let shown: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(shown["status"], "resolved", "{shown}");
    let by_moto: Vec<&str> =
        shown["history"].as_array().unwrap().iter().filter(|h| h["actor"] == "moto").filter_map(|h| h["action"].as_str()).collect();
    assert!(by_moto.contains(&"commented") && by_moto.contains(&"resolved"), "{shown}");

    // The console alone, for a stage whose functions run in Lambda: no pollers, same link.
    let (_alone, line) = background(&["serve", "--target", "aws", "--stage", &stage, "--addr", "127.0.0.1:0", "--console-only"], "token=");
    let link = line.split_whitespace().last().unwrap().to_owned();
    let base = link.split("/console").next().unwrap().to_owned();
    assert_eq!(get_as_host(&base, link.trim_start_matches(&base), "localhost"), 303, "the link opens a session");
}

/// Signs in to a fresh `serve` of `db` with a new operator key named `name`.
async fn serve_signed_in(c: &Client, db: &Path, name: &str) -> Serve {
    let key = add_key(db, name, &["--operator"]);
    let server = Serve::start(db);
    // Cookies ignore ports: an earlier console's cookie would still be sent (and found).
    c.delete_all_cookies().await.unwrap();
    sign_in(c, &server.base, &key).await;
    assert_eq!(text_of(c, "#operator").await, name);
    server
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn when_the_books_hold_a_break_receivables_and_a_dead_letter_should_show_them_side_by_side_and_redrive_it() {
    let Some((driver, chromium)) = tools() else { return };
    let dir = tempfile::tempdir().unwrap();
    // The whole story to cash, then an ERP user moves the project's end date behind o2c's back.
    let story = dir.path().join("story.db");
    let s = story.to_str().unwrap();
    let mut samples: Vec<PathBuf> = std::fs::read_dir(repo("events/samples")).unwrap().map(|e| e.unwrap().path()).collect();
    samples.sort();
    let out = o2c().args(["run", "--db", s]).args(&samples).output().unwrap();
    assert!(out.status.success(), "{}", text(&out.stderr));
    let conn = rusqlite::Connection::open(&story).unwrap();
    let n = conn.execute("UPDATE sim_projects SET spec = json_set(spec, '$.end_date', '2099-12-31') WHERE system = 'erp'", []).unwrap();
    assert_eq!(n, 1);
    drop(conn);
    assert_eq!(run(&["reconcile", "--db", s]).status.code(), Some(4), "a break");
    let (_driver, c) = browser(&driver, &chromium).await;
    let server = serve_signed_in(&c, &story, "U-AR-01").await;
    let base = server.base.clone();
    assert_eq!(text_of(&c, "#breaks .n").await, "1");
    c.goto(&format!("{base}/console/reconciliation")).await.unwrap();
    assert!(text_of(&c, "#summary").await.contains("1 with a break"));
    let side = text_of(&c, "table.mismatches").await;
    let row = side.lines().find(|l| l.contains("2099-12-31")).unwrap_or_else(|| panic!("no end-date row: {side}"));
    assert!(row.contains("2027-12-17"), "o2c's value beside the ERP's: {row}");
    shot(&c, "reconciliation-break").await;
    // The story's invoices fall in 2027: the page as of mid-2027, through its form.
    c.goto(&format!("{base}/console/receivables")).await.unwrap();
    c.execute("document.querySelector('input[name=as_of]').value = '2027-06-30'", vec![]).await.unwrap();
    follow(&c, "form[aria-label='Receivables as of'] button").await;
    assert_eq!(text_of(&c, "#as-of").await, "As of 2027-06-30.");
    let table = text_of(&c, "#receivables").await;
    assert!(table.contains("LE-DE-01") && table.contains("CUST-1001") && table.contains("EUR"), "{table}");
    assert!(text_of(&c, "#dso").await.contains("days (EUR)"));
    assert!(c.find(Locator::Css("#ageing-chart-EUR svg rect")).await.is_ok(), "the EUR ageing chart draws a bar");
    accessible(&c).await;
    shot(&c, "receivables").await;
    c.goto(&format!("{base}/console/engagements/0068d00000GLBX01")).await.unwrap();
    let invoices = text_of(&c, "#invoices").await;
    // The bank's credit applied: total − applied = open, to the cent.
    assert!(
        invoices.contains("posted")
            && invoices.contains("EUR 139286.88")
            && invoices.contains("DE-CAMT-2027041100017 2027-04-11: EUR 50000.00")
            && invoices.contains("EUR 89286.88"),
        "invoices with their payments: {invoices}"
    );
    drop(server);

    // A provisioning the ERP keeps failing: dead-lettered with its reason, redriven from the page.
    let dl = dir.path().join("dl.db");
    let d = dl.to_str().unwrap();
    // The PSA reports a milestone before the deal exists: retried, then parked with its reasons.
    let milestone = repo("events/samples/MilestoneCompleted.v1.json");
    assert_eq!(run(&["run", "--db", d, milestone.to_str().unwrap()]).status.code(), Some(4), "parked");
    let approval = repo("events/samples/ContractApproved.v1.json");
    assert!(run(&["run", "--db", d, approval.to_str().unwrap()]).status.success());
    assert!(
        run(&["sim", "fault", "--db", d, "--system", "erp", "--operation", "create_project", "--kind", "server-error"]).status.success()
    );
    let won = repo("events/samples/OpportunityClosedWon.v1.json");
    assert_eq!(run(&["run", "--db", d, won.to_str().unwrap()]).status.code(), Some(4), "dead-lettered");
    let server = serve_signed_in(&c, &dl, "U-OPS-01").await;
    let base = server.base.clone();
    c.goto(&format!("{base}/console/queues")).await.unwrap();
    let dead = text_of(&c, "#dl-ProvisionDLQ").await;
    assert!(dead.contains("ContractCreated") && dead.contains("503"), "the message with its last failure: {dead}");
    shot(&c, "dead-letters").await;
    assert!(run(&["sim", "clear", "--db", d]).status.success());
    follow(&c, "form[aria-label='Redrive ProvisionDLQ'] button").await;
    let flash = text_of(&c, "#flash").await;
    assert!(flash.contains("Redrove 1 message(s) from ProvisionDLQ to ProvisionQueue"), "{flash}");
    until_page_shows(&c, &format!("{base}/console/engagements/0068d00000GLBX01"), "#status", "active").await;
    // Now active, the parked milestone is resubmitted from the page and recorded.
    c.goto(&format!("{base}/console/queues")).await.unwrap();
    let parked = text_of(&c, "#parked").await;
    assert!(parked.contains("MilestoneCompleted"), "{parked}");
    let form = c.find(Locator::Css("#parked form")).await.unwrap();
    let resubmit = form.attr("action").await.unwrap().unwrap();
    let csrf = c.find(Locator::Css("#parked form input[name=csrf]")).await.unwrap().attr("value").await.unwrap().unwrap();
    let cookie = session_cookie(&c).await;
    follow(&c, "#parked form button").await;
    let flash = text_of(&c, "#flash").await;
    assert!(flash.contains("Resubmitted 1 event(s)"), "{flash}");
    // A second click (another tab, another operator) sends the same event: absorbed.
    assert_eq!(post_form(&base, &resubmit, &cookie, "", &format!("csrf={csrf}")), 303);
    c.goto(&format!("{base}/console/queues")).await.unwrap();
    let again = text_of(&c, "#flash").await;
    assert!(again.contains("Resubmitted 1 event(s)"), "{again}");
    until_page_shows(&c, &format!("{base}/console/engagements/0068d00000GLBX01"), "#timeline", "milestone_recorded").await;
    // The copy has gone through the delivery queue before the count.
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let queues = text(&run(&["dlq", "list", "--db", d]).stdout);
        let row = queues.lines().find(|l| l.starts_with("DeliveryIntakeQueue ")).unwrap_or_default().to_owned();
        if row.split_whitespace().nth(1) == Some("0") && row.split_whitespace().nth(2) == Some("0") {
            break;
        }
        assert!(Instant::now() < deadline, "the second resubmit never left the queue: {queues}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let status: serde_json::Value = serde_json::from_slice(&run(&["status", "--db", d, OPP, "--json"]).stdout).unwrap();
    let recorded = status["timeline"].as_array().unwrap().iter().filter(|a| a["action"] == "milestone_recorded").count();
    assert_eq!(recorded, 1, "the milestone once, whatever the clicks: {}", status["timeline"]);
    // Absorbed as a duplicate delivery (same event id and key), not decided again.
    assert!(!status["timeline"].to_string().contains("milestone_already_recorded"), "{}", status["timeline"]);
    c.goto(&format!("{base}/console/log")).await.unwrap();
    let log = text_of(&c, "#actions").await;
    assert!(log.lines().any(|l| l.contains("U-OPS-01") && l.contains("dlq.redrive") && l.contains("Redrove 1")), "{log}");
    assert!(log.lines().any(|l| l.contains("U-OPS-01") && l.contains("parked.resubmit") && l.contains("Resubmitted 1")), "{log}");
    c.close().await.unwrap();
}
