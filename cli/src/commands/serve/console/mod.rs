//! The operator console: server-rendered pages under `/console` of `o2c serve`, over the
//! same store, bus and exception workflow as the API and the CLI.
//!
//! Layout:
//! - `source.rs` — where the pages read and act: the embedded runtime, or a deployed stage
//!   with the operator's own AWS credentials (`o2c serve --target aws`);
//! - `session.rs` — sign-in sessions (cookie + CSRF token); embedded, the gate
//!   (`serve/auth.rs`) checks a session's key on every request exactly as it checks an API
//!   key; on AWS, [`link_guard`] admits the browser that opened the sign-in link `serve`
//!   printed, as the caller's AWS identity;
//! - `layout.rs` — the page shell, the stylesheet, formatting helpers;
//! - `charts.rs` — SVG bar charts with a text alternative and their numbers;
//! - one file per section: `overview.rs`, `engagements.rs` (list and one engagement),
//!   `exceptions.rs` (the queue, one case, its actions), `queues.rs` (parked messages,
//!   queues and dead letters, redrive), `reconciliation.rs`, `receivables.rs`, `log.rs`
//!   (what operators did, and refused requests).
//!
//! Reading works without JavaScript (there is none); actions are plain forms answered by
//! a redirect (post/redirect/get) that carries a message to the next page. Every action is
//! recorded with the operator's identity (`o2c_embedded::access::record_action`), and an
//! exception action is the same `ExceptionActionRequested` the API and the CLI publish, so
//! the workflow's rules (segregation of duties, reasons, closed cases) apply unchanged.

pub mod session;
pub mod source;

mod charts;
mod engagements;
mod exceptions;
mod layout;
mod log;
mod overview;
mod queues;
mod receivables;
mod reconciliation;

use std::net::SocketAddr;
use std::sync::Arc;

use axum::extract::{ConnectInfo, FromRequest, Query, Request, State};
use axum::http::{HeaderValue, Method, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use axum::{Extension, Form, Router};
use maud::Markup;
use o2c_app::ports::{OperatorAction, OperatorLog};
use o2c_domain::reference::ReferenceData;
use o2c_embedded::access::{self, Credential, Denied};
use serde::Deserialize;
use subtle::ConstantTimeEq;

use super::auth::{Caller, Gate, Who};
use super::limits;
use session::{Flash, Session, Sessions};
use source::{Source, with_store};

/// The console's state.
pub struct Console {
    /// Where it reads and acts.
    pub source: Source,
    /// Signed-in browsers (shared with the gate, embedded).
    pub sessions: Arc<Sessions>,
    /// Reference data (legal entities for receivables).
    pub reference: ReferenceData,
    /// Who may sign in.
    pub guard: Guard,
}

/// Who may sign in, and how they are known.
// One per process, never moved about: boxing the larger variant would buy nothing.
#[allow(clippy::large_enum_variant)]
pub enum Guard {
    /// Operator API keys, checked by `o2c serve`'s gate on every request.
    Keys(Arc<Gate>),
    /// The sign-in link `o2c serve --target aws` printed (a secret token), for the caller's
    /// own AWS identity — the console binds to loopback and makes no public endpoint.
    Link {
        /// The link's token: used once, and at most [`LINK_TTL`] after it was printed.
        link: SignInLink,
        /// The AWS caller, as an operator credential (its name is the actor of actions).
        operator: Credential,
        /// Request limits (serve's `--body-timeout`, `--max-body`).
        limits: limits::Limits,
    },
}

/// The AWS caller as the console's operator: named by the last part of its ARN (a user's
/// name, an assumed role's session name — with SSO, the person's), its ARN as the key id.
pub fn operator_of(arn: &str) -> Credential {
    let name = arn.rsplit(['/', ':']).next().filter(|n| !n.is_empty()).unwrap_or("aws-operator").to_owned();
    Credential {
        key_id: arn.to_owned(),
        name,
        grants: access::Grants {
            sources: Vec::new(),
            detail_types: Vec::new(),
            operator: true,
            max_body: None,
            rate_per_second: None,
            webhook: None,
        },
        created_at: o2c_app::clock::Clock::now(&o2c_app::clock::SystemClock),
        revoked_at: None,
    }
}

/// How long a printed sign-in link stays valid.
pub const LINK_TTL: std::time::Duration = std::time::Duration::from_secs(15 * 60);

/// The AWS console's sign-in link: a random token, used once (each use prints the next
/// link), expiring after [`LINK_TTL`] (a late use prints a fresh one instead). A link that
/// leaked from a terminal's log is worth nothing once its operator signed in.
pub struct SignInLink {
    /// `http://host:port` the console answers on.
    base: String,
    current: std::sync::Mutex<(String, std::time::Instant)>,
}

impl SignInLink {
    /// A first link for the console at `base`.
    pub fn new(base: String) -> Option<Self> {
        Some(Self { base, current: std::sync::Mutex::new((session::random_token()?, std::time::Instant::now())) })
    }

    /// The current link.
    pub fn url(&self) -> String {
        let token = self.current.lock().map(|c| c.0.clone()).unwrap_or_default();
        format!("{}/console/login?token={token}", self.base)
    }

    fn print(&self, what: &str) {
        outln!("o2c serve: console {what}: {}", self.url());
    }

    /// Whether `presented` is the current, unexpired token; a match or an expired token
    /// replaces it (and prints the next link).
    fn redeem(&self, presented: &str) -> Redeemed {
        let Ok(mut c) = self.current.lock() else { return Redeemed::Wrong };
        if !bool::from(c.0.as_bytes().ct_eq(presented.as_bytes())) {
            return Redeemed::Wrong;
        }
        let expired = c.1.elapsed() > LINK_TTL;
        match session::random_token() {
            Some(next) => *c = (next, std::time::Instant::now()),
            None => return Redeemed::Wrong,
        }
        drop(c);
        if expired {
            self.print("sign-in link expired; the next one");
            Redeemed::Expired
        } else {
            self.print("sign-in link used; the next one");
            Redeemed::Ok
        }
    }
}

/// What a presented link token was.
enum Redeemed {
    Ok,
    Expired,
    Wrong,
}

/// Paths the guard lets through without a session: the sign-in page and the stylesheet.
pub fn public(path: &str) -> bool {
    path == "/console/login" || path == "/console/style.css"
}

/// The largest body a public console path takes (the sign-in form).
pub const PUBLIC_MAX_BODY: usize = 4096;

/// The largest form the console takes from a signed-in browser.
const FORM_MAX_BODY: usize = 64 * 1024;

/// Where a request without a (live) session goes.
pub fn to_login() -> Response {
    Redirect::to("/console/login").into_response()
}

/// The console's routes.
pub fn routes() -> Router<Arc<Console>> {
    Router::new()
        .route("/console", get(overview::page))
        .route("/console/style.css", get(|| async { ([(header::CONTENT_TYPE, "text/css; charset=utf-8")], layout::stylesheet()) }))
        .route("/console/login", get(login_page).post(login))
        .route("/console/logout", post(logout))
        .route("/console/engagements", get(engagements::list))
        .route("/console/engagements/{id}", get(engagements::one))
        .route("/console/exceptions", get(exceptions::queue))
        .route("/console/exceptions/{id}", get(exceptions::case))
        .route("/console/exceptions/{id}/actions", post(exceptions::act))
        .route("/console/queues", get(queues::page))
        .route("/console/queues/{queue}/redrive", post(queues::redrive))
        .route("/console/queues/parked/{rejection_id}/resubmit", post(queues::resubmit))
        .route("/console/reconciliation", get(reconciliation::page))
        .route("/console/receivables", get(receivables::page))
        .route("/console/log", get(log::page))
        .layer(axum::middleware::from_fn(security_headers))
}

/// Who is looking, from the guard.
pub struct Viewer {
    caller: Caller,
    session: Session,
}

impl Viewer {
    fn from(caller: Caller, session: Session) -> Self {
        Self { caller, session }
    }

    /// The operator's name (the key's, or the AWS caller's).
    fn name(&self) -> &str {
        &self.caller.credential.name
    }
}

impl Console {
    /// Answers a refusal: recorded with the API's refusals (embedded), logged (AWS).
    async fn refuse(&self, who: Who<'_>, refused: limits::Refused) -> Response {
        match &self.guard {
            Guard::Keys(gate) => gate.refuse(who, refused, None).await,
            Guard::Link { .. } => {
                tracing::warn!(status = refused.0.as_u16(), code = refused.1, reason = %refused.2, "console request refused");
                (refused.0, axum::Json(serde_json::json!({"ErrorCode": refused.1, "ErrorMessage": refused.2}))).into_response()
            }
        }
    }
}

/// A page in the shell, with the message the last action left.
fn render(s: &Console, v: &Viewer, title: &str, section: &str, content: Markup) -> Response {
    let flash = s.sessions.take_flash(&v.session.token);
    let origin = s.source.label();
    let shell = layout::Shell { title, section, operator: v.name(), session: &v.session, flash, origin: &origin };
    layout::page(shell, content).into_response()
}

/// A page that could not be built: the reason, in the shell.
fn failed(s: &Console, v: &Viewer, title: &str, section: &str, status: StatusCode, why: impl std::fmt::Display) -> Response {
    let content = maud::html! { p.flash.error role="alert" { (why) } };
    let mut r = render(s, v, title, section, content);
    *r.status_mut() = status;
    r
}

/// Records what an operator did in the operator log of the source (the database's, or
/// the stage's table), and as a log line; a failure to record is logged (the action stands).
async fn audit(s: &Console, v: &Viewer, action: &str, object: Option<&str>, outcome: &str) {
    let a = OperatorAction {
        at: s.source.now(),
        actor: v.name().to_owned(),
        key_id: v.caller.credential.key_id.clone(),
        action: access::shown(action, 64),
        object: object.map(|o| access::shown(o, 128)),
        outcome: access::shown(outcome, 1024),
        remote: v.caller.remote.map(|r| r.to_string()),
    };
    tracing::info!(actor = %a.actor, action = %a.action, object = a.object.as_deref().unwrap_or("-"), outcome = %a.outcome, "console action");
    if let Err(e) = with_store!(s.source, st => st.record_action(&a).await) {
        tracing::error!(error = %e, "cannot record a console action");
    }
}

/// Refuses a form whose CSRF token is not the session's (`403`, recorded).
async fn check_csrf(s: &Console, v: &Viewer, presented: &str) -> Result<(), Response> {
    if v.session.csrf_ok(presented) {
        return Ok(());
    }
    let reason = "the form's token is not this session's: reload the page and try again".to_owned();
    Err(s.refuse(Who::caller(&v.caller), (StatusCode::FORBIDDEN, "InvalidCsrfToken", reason)).await)
}

/// Back to `to` with a message for the page.
fn after(s: &Console, v: &Viewer, to: &str, flash: Flash) -> Response {
    s.sessions.flash(&v.session.token, flash);
    Redirect::to(to).into_response()
}

/// A new session's cookie on a redirect to the overview.
fn signed_in(sessions: &Sessions, session: &Session) -> Response {
    let mut r = Redirect::to("/console").into_response();
    if let Ok(c) = HeaderValue::from_str(&sessions.set_cookie(&session.token)) {
        r.headers_mut().insert(header::SET_COOKIE, c);
    }
    r
}

#[derive(Deserialize)]
struct LinkQuery {
    token: Option<String>,
}

/// `GET /console/login`: the key form (embedded); on AWS, the printed link's target.
async fn login_page(State(s): State<Arc<Console>>, Query(q): Query<LinkQuery>, req: Request) -> Response {
    let Guard::Link { link, operator, .. } = &s.guard else { return layout::login(None).into_response() };
    let Some(presented) = q.token.as_deref() else {
        return (StatusCode::UNAUTHORIZED, layout::link_login(None)).into_response();
    };
    let remote = req.extensions().get::<ConnectInfo<SocketAddr>>().map(|c| c.0);
    let method = Method::GET;
    let path = "/console/login";
    match link.redeem(presented) {
        Redeemed::Ok => {}
        Redeemed::Expired => {
            let refused = (StatusCode::UNAUTHORIZED, "ExpiredSignInLink", "a sign-in link older than its 15 minutes".to_owned());
            let _ = s.refuse(Who::stranger(remote, None, &method, path), refused).await;
            let text = "That link expired; o2c serve printed a new one in its terminal.";
            return (StatusCode::UNAUTHORIZED, layout::link_login(Some(text))).into_response();
        }
        Redeemed::Wrong => {
            let refused = (StatusCode::UNAUTHORIZED, "InvalidSignInLink", "not the current sign-in link".to_owned());
            let _ = s.refuse(Who::stranger(remote, None, &method, path), refused).await;
            let text = "That is not the current sign-in link: each link signs in once; use the latest o2c serve printed.";
            return (StatusCode::UNAUTHORIZED, layout::link_login(Some(text))).into_response();
        }
    }
    let Some(session) = s.sessions.create(String::new()) else {
        return (StatusCode::SERVICE_UNAVAILABLE, layout::link_login(Some("Cannot open a session now (no random source).")))
            .into_response();
    };
    let v = Viewer::from(Caller::console(operator.clone(), remote, method, path), session.clone());
    audit(&s, &v, "login", None, "session opened (sign-in link)").await;
    signed_in(&s.sessions, &session)
}

#[derive(Deserialize)]
struct LoginForm {
    key: String,
}

/// Sign-in with a key (embedded): an active operator key opens a session; anything else
/// is refused, recorded like the API's refusals, and shown.
async fn login(State(s): State<Arc<Console>>, req: Request) -> Response {
    let (Guard::Keys(gate), Source::Embedded(rt)) = (&s.guard, &s.source) else {
        return (StatusCode::METHOD_NOT_ALLOWED, layout::link_login(Some("Sign in with the link o2c serve printed."))).into_response();
    };
    let remote = req.extensions().get::<ConnectInfo<SocketAddr>>().map(|c| c.0);
    let method = req.method().clone();
    let Ok(Form(form)) = Form::<LoginForm>::from_request(req, &s).await else {
        return (StatusCode::BAD_REQUEST, layout::login(Some("The form did not carry a key."))).into_response();
    };
    let path = "/console/login";
    let denied = |status: StatusCode, text: &str| (status, layout::login(Some(text))).into_response();
    match access::authenticate(rt.db(), Some(&form.key)).await {
        Err(e) => {
            tracing::error!(error = %e, "console sign-in: cannot check the key");
            denied(StatusCode::SERVICE_UNAVAILABLE, "Cannot check the key now; try again in a moment.")
        }
        Ok(Ok(cred)) if cred.grants.operator => {
            let Some(session) = s.sessions.create(form.key) else {
                return denied(StatusCode::SERVICE_UNAVAILABLE, "Cannot open a session now (no random source).");
            };
            let v = Viewer::from(Caller::console(cred, remote, method, path), session.clone());
            audit(&s, &v, "login", None, "session opened").await;
            signed_in(&s.sessions, &session)
        }
        Ok(Ok(cred)) => {
            if !gate.record_stranger(remote) {
                return denied(StatusCode::TOO_MANY_REQUESTS, "Too many refused sign-ins from this address; wait a moment.");
            }
            let reason = format!("{} is not an operator: the console needs an operator key", cred.name);
            let refused = (StatusCode::FORBIDDEN, "AccessDeniedException", reason.clone());
            let _ = gate.refuse(Who::known(&cred, remote, &method, path), refused, None).await;
            denied(StatusCode::FORBIDDEN, &reason)
        }
        Ok(Err(d)) => {
            if !gate.record_stranger(remote) {
                return denied(StatusCode::TOO_MANY_REQUESTS, "Too many failed sign-ins from this address; wait a moment.");
            }
            let (cred, key_id) = match &d {
                Denied::Revoked { credential, .. } => (Some(credential.as_ref().clone()), None),
                Denied::Invalid { key_id } => (None, key_id.clone()),
                Denied::Missing => (None, None),
            };
            let who = match &cred {
                Some(c) => Who::known(c, remote, &method, path),
                None => Who::stranger(remote, key_id, &method, path),
            };
            let _ = gate.refuse(who, (StatusCode::UNAUTHORIZED, d.code(), format!("console sign-in: {d}")), None).await;
            denied(StatusCode::UNAUTHORIZED, &format!("Not signed in: {d}."))
        }
    }
}

#[derive(Deserialize)]
struct CsrfForm {
    csrf: String,
}

async fn logout(
    State(s): State<Arc<Console>>,
    Extension(caller): Extension<Caller>,
    Extension(session): Extension<Session>,
    Form(f): Form<CsrfForm>,
) -> Response {
    let v = Viewer::from(caller, session);
    if let Err(r) = check_csrf(&s, &v, &f.csrf).await {
        return r;
    }
    s.sessions.remove(&v.session.token);
    audit(&s, &v, "logout", None, "session closed").await;
    let mut r = Redirect::to("/console/login").into_response();
    if let Ok(c) = HeaderValue::from_str(&s.sessions.clear_cookie()) {
        r.headers_mut().insert(header::SET_COOKIE, c);
    }
    r
}

/// Whether a `Host` header names the loopback interface (`localhost`, `127.0.0.1`, `[::1]`,
/// with or without a port).
fn loopback_host(host: &str) -> bool {
    let name = if let Some(rest) = host.strip_prefix('[') {
        rest.split(']').next().unwrap_or_default()
    } else {
        host.rsplit_once(':').map_or(host, |(h, _)| h)
    };
    name.eq_ignore_ascii_case("localhost") || name.parse::<std::net::IpAddr>().is_ok_and(|ip| ip.is_loopback())
}

/// Middleware of the AWS console: requests must name the loopback host (a page on another
/// site cannot reach it through DNS rebinding), forms must come from this origin, public
/// paths pass with a small body, every other path needs a session opened by the sign-in
/// link; bodies are read within serve's limits.
pub async fn link_guard(State(s): State<Arc<Console>>, mut req: Request, next: Next) -> Response {
    let Guard::Link { operator, limits: lim, .. } = &s.guard else { return next.run(req).await };
    let host = req.headers().get(header::HOST).and_then(|h| h.to_str().ok()).unwrap_or_default();
    if !loopback_host(host) {
        return (StatusCode::MISDIRECTED_REQUEST, "the console answers on the loopback interface only").into_response();
    }
    let path = req.uri().path().to_owned();
    let remote = req.extensions().get::<ConnectInfo<SocketAddr>>().map(|c| c.0);
    let method = req.method().clone();
    if method == Method::POST && !session::same_origin(req.headers()) {
        let refused = (StatusCode::FORBIDDEN, "CrossOriginForm", "a form posted from another origin".to_owned());
        return s.refuse(Who::stranger(remote, None, &method, &path), refused).await;
    }
    if public(&path) {
        return match limits::read_body(req, PUBLIC_MAX_BODY, lim.body_timeout).await {
            Ok(req) => next.run(req).await,
            Err(refused) => s.refuse(Who::stranger(remote, None, &method, &path), refused).await,
        };
    }
    let Some(session) = s.sessions.find(req.headers()) else { return to_login() };
    let caller = Caller::console(operator.clone(), remote, method.clone(), &path);
    req.extensions_mut().insert(caller);
    req.extensions_mut().insert(session);
    match limits::read_body(req, lim.max_body.min(FORM_MAX_BODY), lim.body_timeout).await {
        Ok(req) => next.run(req).await,
        Err(refused) => s.refuse(Who::stranger(remote, None, &method, &path), refused).await,
    }
}

/// What every console answer carries: no framing (clickjacking of one-click forms), no
/// caching (financial pages after sign-out), no scripts, styles only from the stylesheet,
/// forms only to this origin, no referrer to other origins.
async fn security_headers(req: Request, next: Next) -> Response {
    let mut resp = next.run(req).await;
    let h = resp.headers_mut();
    for (name, value) in [
        (
            "content-security-policy",
            "default-src 'none'; style-src 'self'; img-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'",
        ),
        ("x-frame-options", "DENY"),
        ("cache-control", "no-store"),
        // Same-origin requests keep their referrer and a real `Origin` (with `no-referrer`
        // browsers send `Origin: null` on form posts, and those without Fetch Metadata could
        // not prove a form same-origin); other origins get none.
        ("referrer-policy", "same-origin"),
        ("x-content-type-options", "nosniff"),
    ] {
        h.insert(name, HeaderValue::from_static(value));
    }
    resp
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn when_the_caller_is_an_assumed_role_should_act_as_its_session_name() {
        assert_eq!(operator_of("arn:aws:sts::123456789012:assumed-role/o2c-operators-finance/U-CTRL-01").name, "U-CTRL-01");
        assert_eq!(operator_of("arn:aws:iam::123456789012:user/ops/alice").name, "alice");
        assert_eq!(operator_of("arn:aws:iam::123456789012:root").name, "root");
        assert_eq!(operator_of("").name, "aws-operator");
    }

    #[test]
    fn when_a_host_header_names_another_site_should_not_pass_for_loopback() {
        for ok in ["127.0.0.1:4010", "localhost:4010", "LOCALHOST", "[::1]:4010", "127.0.0.2"] {
            assert!(loopback_host(ok), "{ok}");
        }
        for bad in ["evil.example:4010", "127.0.0.1.evil.example", "", "10.0.0.1:4010", "[fe80::1]:80"] {
            assert!(!loopback_host(bad), "{bad}");
        }
    }
}
