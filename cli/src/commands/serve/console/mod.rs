//! The operator console: server-rendered pages under `/console` of `o2c serve`, over the
//! same store, bus and exception workflow as the API and the CLI.
//!
//! Layout:
//! - `session.rs` — sign-in sessions (cookie + CSRF token); the gate (`serve/auth.rs`)
//!   checks a session's key on every request exactly as it checks an API key;
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

use axum::extract::{ConnectInfo, FromRequest, Request, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use axum::{Extension, Form, Router};
use maud::Markup;
use o2c_embedded::access::{self, Denied, OperatorAction};
use serde::Deserialize;

use super::AppState;
use super::auth::{Caller, Who};
use session::{Flash, Session};

/// Paths the gate lets through without a session: the sign-in page and the stylesheet.
pub fn public(path: &str) -> bool {
    path == "/console/login" || path == "/console/style.css"
}

/// The largest body a public console path takes (the sign-in form).
pub const PUBLIC_MAX_BODY: usize = 4096;

/// Where a request without a (live) session goes.
pub fn to_login() -> Response {
    Redirect::to("/console/login").into_response()
}

/// The console's routes (the gate in front of them is the API's).
pub fn routes() -> Router<Arc<AppState>> {
    Router::new()
        .route("/console", get(overview::page))
        .route("/console/style.css", get(|| async { ([(header::CONTENT_TYPE, "text/css; charset=utf-8")], layout::STYLE) }))
        .route("/console/login", get(login_page).post(login))
        .route("/console/logout", post(logout))
        .route("/console/engagements", get(engagements::list))
        .route("/console/engagements/{id}", get(engagements::one))
        .route("/console/exceptions", get(exceptions::queue))
        .route("/console/exceptions/{id}", get(exceptions::case))
        .route("/console/exceptions/{id}/actions", post(exceptions::act))
        .route("/console/queues", get(queues::page))
        .route("/console/queues/{queue}/redrive", post(queues::redrive))
        .route("/console/reconciliation", get(reconciliation::page))
        .route("/console/receivables", get(receivables::page))
        .route("/console/log", get(log::page))
}

/// Who is looking, from the gate.
pub struct Viewer {
    caller: Caller,
    session: Session,
}

impl Viewer {
    fn from(caller: Caller, session: Session) -> Self {
        Self { caller, session }
    }

    /// The operator's name (the key's).
    fn name(&self) -> &str {
        &self.caller.credential.name
    }
}

/// A page in the shell, with the message the last action left.
fn render(s: &AppState, v: &Viewer, title: &str, section: &str, content: Markup) -> Response {
    let flash = s.gate.sessions.take_flash(&v.session.token);
    let origin = format!("db {}", s.rt.db_path().display());
    let shell = layout::Shell { title, section, operator: v.name(), session: &v.session, flash, origin: &origin };
    layout::page(shell, content).into_response()
}

/// A page that could not be built: the reason, in the shell.
fn failed(s: &AppState, v: &Viewer, title: &str, section: &str, status: StatusCode, why: impl std::fmt::Display) -> Response {
    let content = maud::html! { p.flash.error role="alert" { (why) } };
    let mut r = render(s, v, title, section, content);
    *r.status_mut() = status;
    r
}

/// Records what an operator did; a failure to record is logged (the action stands).
async fn audit(s: &AppState, v: &Viewer, action: &str, object: Option<&str>, outcome: &str) {
    let a = OperatorAction {
        at: s.rt.db().clock().now(),
        actor: v.name().to_owned(),
        key_id: v.caller.credential.key_id.clone(),
        action: action.to_owned(),
        object: object.map(str::to_owned),
        outcome: outcome.to_owned(),
        remote: v.caller.remote.map(|r| r.to_string()),
    };
    tracing::info!(actor = %a.actor, action = %a.action, object = a.object.as_deref().unwrap_or("-"), "console action");
    if let Err(e) = access::record_action(s.rt.db(), a).await {
        tracing::error!(error = %e, "cannot record a console action");
    }
}

/// Refuses a form whose CSRF token is not the session's (`403`, recorded).
async fn check_csrf(s: &AppState, v: &Viewer, presented: &str) -> Result<(), Response> {
    if v.session.csrf_ok(presented) {
        return Ok(());
    }
    let refused =
        (StatusCode::FORBIDDEN, "InvalidCsrfToken", "the form's token is not this session's: reload the page and try again".to_owned());
    Err(s.gate.refuse(Who::caller(&v.caller), refused, None).await)
}

/// Back to `to` with a message for the page.
fn after(s: &AppState, v: &Viewer, to: &str, flash: Flash) -> Response {
    s.gate.sessions.flash(&v.session.token, flash);
    Redirect::to(to).into_response()
}

async fn login_page() -> Response {
    layout::login(None).into_response()
}

#[derive(Deserialize)]
struct LoginForm {
    key: String,
}

/// Sign-in: an active operator key opens a session; anything else is refused, recorded
/// like the API's refusals, and shown.
async fn login(State(s): State<Arc<AppState>>, req: Request) -> Response {
    let remote = req.extensions().get::<ConnectInfo<SocketAddr>>().map(|c| c.0);
    let method = req.method().clone();
    let Ok(Form(form)) = Form::<LoginForm>::from_request(req, &s).await else {
        return (StatusCode::BAD_REQUEST, layout::login(Some("The form did not carry a key."))).into_response();
    };
    let path = "/console/login";
    let denied = |status: StatusCode, text: &str| (status, layout::login(Some(text))).into_response();
    match access::authenticate(s.rt.db(), Some(&form.key)).await {
        Err(e) => denied(StatusCode::SERVICE_UNAVAILABLE, &format!("Cannot check the key now: {e}")),
        Ok(Ok(cred)) if cred.grants.operator => {
            let Some(session) = s.gate.sessions.create(form.key) else {
                return denied(StatusCode::SERVICE_UNAVAILABLE, "Cannot open a session now (no random source).");
            };
            let v = Viewer::from(Caller::console(cred, remote, method, path), session.clone());
            audit(&s, &v, "login", None, "session opened").await;
            let mut r = Redirect::to("/console").into_response();
            if let Ok(c) = header::HeaderValue::from_str(&session::set_cookie(&session.token)) {
                r.headers_mut().insert(header::SET_COOKIE, c);
            }
            r
        }
        Ok(Ok(cred)) => {
            let reason = format!("{} is not an operator: the console needs an operator key", cred.name);
            let _ = s
                .gate
                .refuse(Who::known(&cred, remote, &method, path), (StatusCode::FORBIDDEN, "AccessDeniedException", reason.clone()), None)
                .await;
            denied(StatusCode::FORBIDDEN, &reason)
        }
        Ok(Err(d)) => {
            if !s.gate.record_stranger(remote) {
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
            let _ = s.gate.refuse(who, (StatusCode::UNAUTHORIZED, d.code(), format!("console sign-in: {d}")), None).await;
            denied(StatusCode::UNAUTHORIZED, &format!("Not signed in: {d}."))
        }
    }
}

#[derive(Deserialize)]
struct CsrfForm {
    csrf: String,
}

async fn logout(
    State(s): State<Arc<AppState>>,
    Extension(caller): Extension<Caller>,
    Extension(session): Extension<Session>,
    Form(f): Form<CsrfForm>,
) -> Response {
    let v = Viewer::from(caller, session);
    if let Err(r) = check_csrf(&s, &v, &f.csrf).await {
        return r;
    }
    s.gate.sessions.remove(&v.session.token);
    audit(&s, &v, "logout", None, "session closed").await;
    let mut r = Redirect::to("/console/login").into_response();
    if let Ok(c) = header::HeaderValue::from_str(&session::clear_cookie()) {
        r.headers_mut().insert(header::SET_COOKIE, c);
    }
    r
}
