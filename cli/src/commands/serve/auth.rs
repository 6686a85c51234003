//! The gate in front of every `o2c serve` route but `/healthz` and the OpenAPI document: who is calling, may they,
//! how fast, how much — each refusal answered as a JSON error and recorded
//! (`o2c sources refusals`, `GET /v1/access/refusals`).
//!
//! In order, for each request:
//! 1. the key (`Authorization: Bearer <key>` or `X-Api-Key: <key>`): missing, malformed,
//!    unknown, wrong or revoked → `401`;
//! 2. the key's request rate (a token bucket per key, burst one second's worth) → `429`
//!    with `Retry-After`;
//! 3. the route: `POST /v1/events` and `/v1/ingest/…` need a publishing or an operator key
//!    (entries are checked against its grants by the handler, [`Caller::check_entries`]);
//!    every other route reads the API or acts as an operator and needs an operator key →
//!    `403`;
//! 4. the body: within `--body-timeout` (`408`) and the smaller of `--max-body` and the
//!    key's own limit (`413`).
//!
//! Requests refused before a key is known are recorded at most [`UNAUTHENTICATED_PER_SEC`]
//! per second per client address; beyond, they are answered `429` and not recorded, so a
//! flood of bad requests neither fills the file nor holds the write lock.
//!
//! A vendor's webhook (`POST /v1/ingest/<vendor>/…` with no key and the vendor's signature
//! header) is authenticated by its signature instead — against the secrets of the active
//! keys added with `--webhook <vendor>` — before the payload is read as anything.
//!
//! The buckets live in this process (one `serve` per database).

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::extract::{ConnectInfo, Request, State};
use axum::http::{HeaderValue, Method, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use o2c_app::bus::PutEventsEntry;
use o2c_embedded::access::{self, Credential, Denied, Refusal};
use o2c_embedded::db::Db;
use o2c_embedded::webhooks;
use tracing::{error, warn};

use super::console::session::Sessions;
use super::limits::{self, Limits};

/// What the gate knows and keeps.
pub struct Gate {
    db: Db,
    limits: Limits,
    /// Requests per second for keys without their own rate.
    default_rate: u32,
    buckets: Mutex<HashMap<String, Bucket>>,
    /// Refusals of requests without a valid key, per client address.
    strangers: Mutex<HashMap<std::net::IpAddr, Bucket>>,
    /// The console's signed-in browsers.
    pub sessions: Arc<Sessions>,
}

/// Refusals recorded per second per address before a key is known.
pub const UNAUTHENTICATED_PER_SEC: f64 = 20.0;

/// Tokens refilled at the key's rate, at most one second's worth.
struct Bucket {
    tokens: f64,
    at: Instant,
}

/// The authenticated caller, for the handlers.
#[derive(Clone)]
pub struct Caller {
    /// The key's record.
    pub credential: Credential,
    /// The client's address.
    pub remote: Option<SocketAddr>,
    method: Method,
    path: String,
}

/// One entry the caller may not publish: its index and why.
#[derive(Debug, serde::Serialize)]
pub struct DeniedEntry {
    /// Its position in `Entries`.
    pub index: usize,
    /// Why.
    pub reason: String,
}

impl Caller {
    /// The caller of a console sign-in, before its session exists.
    pub fn console(credential: Credential, remote: Option<SocketAddr>, method: Method, path: &str) -> Self {
        Self { credential, remote, method, path: path.to_owned() }
    }

    /// Every entry outside the caller's grants (EventBridge's `events:source` condition
    /// refuses the whole request likewise).
    pub fn check_entries(&self, entries: &[PutEventsEntry]) -> Vec<DeniedEntry> {
        entries
            .iter()
            .enumerate()
            .filter_map(|(index, e)| {
                let detail = e.detail.as_deref().and_then(|d| serde_json::from_str(d).ok()).unwrap_or_default();
                let source = e.source.as_deref().unwrap_or_default();
                let detail_type = e.detail_type.as_deref().unwrap_or_default();
                self.credential.may_publish(source, detail_type, &detail).err().map(|reason| DeniedEntry { index, reason })
            })
            .collect()
    }
}

impl Gate {
    /// A gate over `db`'s keys.
    pub fn new(db: Db, limits: Limits, default_rate: u32) -> Self {
        Self {
            db,
            limits,
            default_rate: default_rate.max(1),
            buckets: Mutex::new(HashMap::new()),
            strangers: Mutex::new(HashMap::new()),
            sessions: Arc::new(Sessions::default()),
        }
    }

    /// Takes `n` tokens from the key's bucket, or says how long until there are.
    pub fn take(&self, c: &Credential, n: u32) -> Result<(), Duration> {
        let rate = f64::from(c.grants.rate_per_second.unwrap_or(self.default_rate).max(1));
        let Ok(mut buckets) = self.buckets.lock() else { return Ok(()) };
        take_from(&mut buckets, c.key_id.clone(), rate, f64::from(n.max(1)))
    }

    /// Whether a refusal of a request without a valid key from `remote` is recorded.
    pub fn record_stranger(&self, remote: Option<SocketAddr>) -> bool {
        // (Also the budget for recording rate refusals of known keys.)
        let Some(ip) = remote.map(|r| r.ip()) else { return true };
        let Ok(mut strangers) = self.strangers.lock() else { return true };
        if strangers.len() > 10_000 {
            // Forget addresses idle for a minute: the map stays bounded under a spread flood.
            let now = Instant::now();
            strangers.retain(|_, b| now.duration_since(b.at) < Duration::from_secs(60));
        }
        take_from(&mut strangers, ip, UNAUTHENTICATED_PER_SEC, 1.0).is_ok()
    }
}

/// Takes `n` tokens from `key`'s bucket refilled at `rate` per second (at most one second's
/// worth, and at least `n`, so a request costing more than a second's worth can pass).
fn take_from<K: std::hash::Hash + Eq>(buckets: &mut HashMap<K, Bucket>, key: K, rate: f64, n: f64) -> Result<(), Duration> {
    let now = Instant::now();
    let cap = rate.max(n);
    let b = buckets.entry(key).or_insert(Bucket { tokens: rate, at: now });
    b.tokens = (b.tokens + now.duration_since(b.at).as_secs_f64() * rate).min(cap);
    b.at = now;
    if b.tokens >= n {
        b.tokens -= n;
        Ok(())
    } else {
        Err(Duration::from_secs_f64((n - b.tokens) / rate))
    }
}

impl Gate {
    /// Answers a refusal and records it (a failure to record is logged, the answer stands).
    pub async fn refuse(&self, who: Who<'_>, (status, code, reason): limits::Refused, extra: Option<serde_json::Value>) -> Response {
        let (key_id, name) = match who.credential {
            Some(c) => (Some(c.key_id.clone()), Some(c.name.clone())),
            None => (who.key_id.clone(), None),
        };
        warn!(
            status = status.as_u16(),
            code,
            key_id = key_id.as_deref().unwrap_or("-"),
            source_name = name.as_deref().unwrap_or("-"),
            remote = ?who.remote,
            path = who.path,
            "request refused"
        );
        let r = Refusal {
            at: self.db.clock().now(),
            status: status.as_u16(),
            code: code.to_owned(),
            reason: reason.clone(),
            key_id,
            name,
            remote: who.remote.map(|a| a.to_string()),
            method: who.method.to_string(),
            path: who.path.to_owned(),
        };
        if let Err(e) = access::record_refusal(&self.db, r).await {
            error!(error = %e, "cannot record a refusal");
        }
        let mut body = serde_json::json!({"ErrorCode": code, "ErrorMessage": reason});
        if let Some(extra) = extra {
            body["Denied"] = extra;
        }
        (status, axum::Json(body)).into_response()
    }
}

/// Who a refusal is about.
pub struct Who<'a> {
    credential: Option<&'a Credential>,
    key_id: Option<String>,
    remote: Option<SocketAddr>,
    method: &'a Method,
    path: &'a str,
}

impl<'a> Who<'a> {
    /// A request with a valid key that is refused anyway (a console sign-in with a
    /// publishing key).
    pub fn known(c: &'a Credential, remote: Option<SocketAddr>, method: &'a Method, path: &'a str) -> Self {
        Self { credential: Some(c), key_id: None, remote, method, path }
    }

    /// A request whose caller is not known (yet): a console sign-in.
    pub fn stranger(remote: Option<SocketAddr>, key_id: Option<String>, method: &'a Method, path: &'a str) -> Self {
        Self { credential: None, key_id, remote, method, path }
    }

    /// The authenticated caller.
    pub fn caller(c: &'a Caller) -> Self {
        Self { credential: Some(&c.credential), key_id: None, remote: c.remote, method: &c.method, path: &c.path }
    }
}

/// The key the request presents: a bearer token (the scheme's name in any case), else
/// `X-Api-Key`; another scheme (`Basic …`) is no key.
fn presented(req: &Request) -> Option<&str> {
    let h = req.headers();
    let bearer = h.get(header::AUTHORIZATION).and_then(|v| v.to_str().ok()).and_then(|v| {
        let (scheme, token) = v.trim().split_once(' ')?;
        scheme.eq_ignore_ascii_case("bearer").then_some(token.trim())
    });
    bearer.or_else(|| h.get("x-api-key").and_then(|v| v.to_str().ok()))
}

/// Middleware: the gate (see the module's documentation).
pub async fn gate(State(g): State<Arc<Gate>>, mut req: Request, next: Next) -> Response {
    let path = req.uri().path().to_owned();
    // Liveness and the API's description are public; everything else needs a key.
    if path == "/healthz" || path == "/openapi.json" || path == "/openapi.yaml" {
        return next.run(req).await;
    }
    let method = req.method().clone();
    let remote = req.extensions().get::<ConnectInfo<SocketAddr>>().map(|c| c.0);
    let who = |credential, key_id| Who { credential, key_id, remote, method: &method, path: &path };
    // A vendor's signed webhook: no key, the vendor's signature header on its ingest path.
    let vendor = path.strip_prefix("/v1/ingest/").and_then(|r| r.split('/').next()).map(str::to_owned);
    let signed = vendor
        .as_deref()
        .and_then(webhooks::header)
        .filter(|h| presented(&req).is_none() && req.headers().contains_key(*h))
        .zip(vendor.clone());
    if let Some((_, vendor)) = signed {
        let signatures = webhooks::signatures(&vendor, |name| req.headers().get(name).and_then(|v| v.to_str().ok()).map(str::to_owned));
        let req = match limits::read_body(req, g.limits.max_body, g.limits.body_timeout).await {
            Ok(r) => r,
            Err(refused) => return g.refuse(who(None, None), refused, None).await,
        };
        let (parts, body) = req.into_parts();
        let bytes = axum::body::to_bytes(body, usize::MAX).await.unwrap_or_default();
        let now = g.db.clock().now().timestamp();
        let keys = match access::webhook_keys(&g.db, &vendor).await {
            Ok(k) => k,
            Err(e) => return super::internal(e),
        };
        let sigs: Vec<&str> = signatures.iter().map(String::as_str).collect();
        let mut why = format!("no active {vendor} webhook source (o2c sources add … --webhook {vendor})");
        let mut found = None;
        for (cred, secret) in keys {
            match webhooks::verify(&vendor, &sigs, &bytes, &secret, now) {
                Ok(()) => {
                    found = Some(cred);
                    break;
                }
                Err(e) => why = e,
            }
        }
        let Some(credential) = found else {
            if !g.record_stranger(remote) {
                return super::error(StatusCode::TOO_MANY_REQUESTS, "ThrottlingException", "too many unsigned requests from this address");
            }
            let refused = (StatusCode::UNAUTHORIZED, "InvalidSignature", format!("the {vendor} webhook signature does not verify: {why}"));
            return g.refuse(who(None, None), refused, None).await;
        };
        if let Err(wait) = g.take(&credential, 1) {
            let mut resp =
                super::error(StatusCode::TOO_MANY_REQUESTS, "ThrottlingException", format!("retry after {} ms", wait.as_millis()));
            resp.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from(wait.as_secs().max(1)));
            return resp;
        }
        let mut req = Request::from_parts(parts, axum::body::Body::from(bytes));
        req.extensions_mut().insert(Caller { credential, remote, method: method.clone(), path: path.clone() });
        return next.run(req).await;
    }
    // The console: its sign-in page and stylesheet are public; every other page presents
    // the key its session signed in with, to the same checks as the API's.
    let console = path == "/console" || path.starts_with("/console/");
    // A console form must come from the console's own pages (login CSRF, and other
    // origins of this host, which `SameSite` counts as the same site).
    if console && method == Method::POST && !super::console::session::same_origin(req.headers()) {
        if !g.record_stranger(remote) {
            return super::error(StatusCode::TOO_MANY_REQUESTS, "ThrottlingException", "too many refused requests from this address");
        }
        let refused = (StatusCode::FORBIDDEN, "CrossOriginForm", "a console form posted from another origin".to_owned());
        return g.refuse(who(None, None), refused, None).await;
    }
    if console && super::console::public(&path) {
        // The sign-in form is small, and a slow one is cut off like any body; refusals of
        // callers not known yet are recorded within the address's budget.
        return match limits::read_body(req, super::console::PUBLIC_MAX_BODY, g.limits.body_timeout).await {
            Ok(req) => next.run(req).await,
            Err(_) if !g.record_stranger(remote) => {
                super::error(StatusCode::TOO_MANY_REQUESTS, "ThrottlingException", "too many refused requests from this address")
            }
            Err(refused) => g.refuse(who(None, None), refused, None).await,
        };
    }
    let session = if console {
        match g.sessions.find(req.headers()) {
            Some(s) => Some(s),
            None => return super::console::to_login(),
        }
    } else {
        None
    };
    let key = match &session {
        Some(s) => Some(s.key.clone()),
        None => presented(&req).map(str::to_owned),
    };
    let credential = match access::authenticate(&g.db, key.as_deref()).await {
        Err(e) => return super::internal(e),
        Ok(Ok(c)) => c,
        Ok(Err(denied)) if console => {
            // The key was revoked since sign-in: the session ends, the refusal is recorded.
            if let Some(s) = &session {
                g.sessions.remove(&s.token);
            }
            let credential = match &denied {
                Denied::Revoked { credential, .. } => Some(credential.as_ref().clone()),
                _ => None,
            };
            let refused = (StatusCode::UNAUTHORIZED, denied.code(), format!("console session ended: {denied}"));
            let _ = g.refuse(who(credential.as_ref(), None), refused, None).await;
            return super::console::to_login();
        }
        Ok(Err(denied)) => {
            let (credential, key_id) = match &denied {
                Denied::Revoked { credential, .. } => (Some(credential.as_ref().clone()), None),
                Denied::Invalid { key_id } => (None, key_id.clone()),
                Denied::Missing => (None, None),
            };
            if credential.is_none() && !g.record_stranger(remote) {
                return super::error(
                    StatusCode::TOO_MANY_REQUESTS,
                    "ThrottlingException",
                    "too many requests without a valid key from this address",
                );
            }
            let refused = (StatusCode::UNAUTHORIZED, denied.code(), denied.to_string());
            let mut resp = g.refuse(who(credential.as_ref(), key_id), refused, None).await;
            resp.headers_mut().insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer realm=\"o2c\""));
            return resp;
        }
    };
    if let Err(wait) = g.take(&credential, 1) {
        // Recorded within the address's budget too: a key hammering past its rate must not
        // turn each refusal into a write.
        if !g.record_stranger(remote) {
            let mut resp = super::error(StatusCode::TOO_MANY_REQUESTS, "ThrottlingException", "over the key's request rate");
            resp.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from(1u64));
            return resp;
        }
        let rate = credential.grants.rate_per_second.unwrap_or(g.default_rate);
        let reason = format!("{} is limited to {rate} request(s) per second; retry after {} ms", credential.name, wait.as_millis());
        let mut resp = g.refuse(who(Some(&credential), None), (StatusCode::TOO_MANY_REQUESTS, "ThrottlingException", reason), None).await;
        let secs = wait.as_secs() + u64::from(wait.subsec_nanos() > 0);
        resp.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from(secs.max(1)));
        return resp;
    }
    let publishing = method == Method::POST && (path == "/v1/events" || path.starts_with("/v1/ingest/"));
    let forbidden = if publishing && credential.grants.sources.is_empty() && !credential.grants.operator {
        Some(format!("{} may not publish events", credential.name))
    } else if !publishing && !credential.grants.operator {
        Some(format!("{} is not an operator: reading the API and acting on exceptions need an operator key", credential.name))
    } else {
        None
    };
    if let Some(reason) = forbidden {
        return g.refuse(who(Some(&credential), None), (StatusCode::FORBIDDEN, "AccessDeniedException", reason), None).await;
    }
    let max = credential.grants.max_body.map_or(g.limits.max_body, |m| usize::try_from(m).unwrap_or(usize::MAX).min(g.limits.max_body));
    req.extensions_mut().insert(Caller { credential: credential.clone(), remote, method: method.clone(), path: path.clone() });
    if let Some(s) = session {
        req.extensions_mut().insert(s);
    }
    match limits::read_body(req, max, g.limits.body_timeout).await {
        Ok(req) => next.run(req).await,
        // An unreadable body is the client's error, not a refusal of the caller.
        Err((StatusCode::BAD_REQUEST, code, reason)) => super::error(StatusCode::BAD_REQUEST, code, reason),
        Err(refused) => g.refuse(who(Some(&credential), None), refused, None).await,
    }
}
