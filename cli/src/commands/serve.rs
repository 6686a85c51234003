//! `o2c serve`: the embedded runtime behind an HTTP API shaped like EventBridge's.
//!
//! - `POST /v1/events` — body `{"Entries": [...]}` as for `PutEvents` (at most 10
//!   entries); answers per entry with `EventId` or `ErrorCode` / `ErrorMessage`, plus
//!   `FailedEntryCount`. Accepted events are durable before the answer is sent and are
//!   processed in the background.
//! - `GET /v1/engagements[?status=&exceptions=true]`, `GET /v1/engagements/{id}`,
//!   `GET /v1/rejections`, `GET /v1/queues`, `GET /v1/unrouted[?limit=]` (events that
//!   matched no rule: their count and the latest), `GET /healthz`; the OpenAPI document at
//!   `GET /openapi.json` and `/openapi.yaml` (`cli/openapi.yaml`).
//! - Every route but `/healthz` needs an API key (`o2c sources add`): publishing keys post
//!   the sources and detail-types they were granted, operator keys read and act; refusals
//!   (`401`, `403`, `408`, `413`, `429`) are JSON errors, recorded and listed by
//!   `GET /v1/access/refusals[?limit=]` and `o2c sources refusals` (see `serve/auth.rs`).
//! - Limits: headers within `--header-timeout` (else the connection is closed), the body
//!   within `--body-timeout` (`408`) and at most `--max-body` bytes or the key's own limit
//!   (`413`), at most the key's rate or `--rate-limit` requests per second (`429`).
//! - `POST /v1/ingest/{vendor}/{object}`: a vendor payload (a Salesforce opportunity, a
//!   Stripe event) mapped by `--mappings DIR` to canonical events and published; an
//!   unmappable one refused (`422`) with every failing path and parked with its payload.
//! - The exception queue: `GET /v1/exceptions[?all=&status=&kind=&legal_entity=&engagement=
//!   &older_than_hours=&assignee=&limit=]`, `GET /v1/exceptions/{id}`, and
//!   `POST /v1/exceptions/{id}/actions` with `{"action": {"type": "assign" | "comment" |
//!   "retry" | "resolve" | "waive", ...}}` by the operator key's holder (an `actor`, if
//!   given, must be the key's name) — published as `ExceptionActionRequested` and processed
//!   in the background (`202` with its `EventId`).

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::{Context, Result};
use axum::Extension;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use o2c_app::O2cError;
use o2c_app::bus::{MAX_ENTRIES_PER_PUT, PutEventsRequest};
use o2c_app::ports::{EngagementFilter, EngagementStore, RejectionStore};
use o2c_domain::reference::ReferenceData;
use o2c_embedded::Runtime;
use serde::Deserialize;
use tokio::sync::watch;
use tracing::info;

mod auth;
mod console;
mod limits;

struct AppState {
    rt: Runtime,
    gate: Arc<auth::Gate>,
    /// Vendor payload mappings (`--mappings`), when the directory exists.
    mappings: Option<o2c_mapping::Registry>,
}

fn error(status: StatusCode, code: &str, message: impl Into<String>) -> Response {
    (status, Json(serde_json::json!({"ErrorCode": code, "ErrorMessage": message.into()}))).into_response()
}

fn internal(e: O2cError) -> Response {
    let status = if e.is_retryable() { StatusCode::SERVICE_UNAVAILABLE } else { StatusCode::INTERNAL_SERVER_ERROR };
    error(status, e.error_type(), e.to_string())
}

/// What the API has shown survives a crash of the process: the runtime's open batch
/// transaction is committed before any answer leaves (publishing waits for more: the
/// fsync that makes the accepted events durable). `/healthz` shows nothing stored, and
/// answers as it is — a probe neither commits a batch nor has its own answer replaced.
async fn committed(State(s): State<Arc<AppState>>, req: axum::extract::Request, next: axum::middleware::Next) -> Response {
    if req.uri().path() == "/healthz" {
        return next.run(req).await;
    }
    let resp = next.run(req).await;
    match s.rt.db().commit() {
        Ok(()) => resp,
        Err(e) => internal(e),
    }
}

async fn put_events(State(s): State<Arc<AppState>>, Extension(caller): Extension<auth::Caller>, body: axum::body::Bytes) -> Response {
    let req: PutEventsRequest = match serde_json::from_slice(&body) {
        Ok(r) => r,
        Err(e) => {
            return error(StatusCode::BAD_REQUEST, "ValidationException", format!("body is not a PutEvents request: {e}"));
        }
    };
    if req.entries.is_empty() || req.entries.len() > MAX_ENTRIES_PER_PUT {
        return error(
            StatusCode::BAD_REQUEST,
            "ValidationException",
            format!("Entries must hold 1 to {MAX_ENTRIES_PER_PUT} items, got {}", req.entries.len()),
        );
    }
    let denied = caller.check_entries(&req.entries);
    if !denied.is_empty() {
        let reason = format!(
            "{} of {} entries are outside {}'s grants: {}",
            denied.len(),
            req.entries.len(),
            caller.credential.name,
            denied.iter().map(|d| format!("[{}] {}", d.index, d.reason)).collect::<Vec<_>>().join("; ")
        );
        let extra = serde_json::to_value(&denied).ok();
        return s.gate.refuse(auth::Who::caller(&caller), (StatusCode::FORBIDDEN, "AccessDeniedException", reason), extra).await;
    }
    match s.rt.put_events(req.entries).await {
        Ok(resp) => Json(resp).into_response(),
        Err(e) => internal(e),
    }
}

#[derive(Deserialize)]
struct ListQuery {
    status: Option<String>,
    #[serde(default)]
    exceptions: bool,
    limit: Option<usize>,
}

async fn engagements(State(s): State<Arc<AppState>>, Query(q): Query<ListQuery>) -> Response {
    match s
        .rt
        .store()
        .list(&EngagementFilter { status: q.status, open_exceptions: q.exceptions, limit: q.limit.unwrap_or(100), after: None })
        .await
    {
        Ok(rows) => Json(rows).into_response(),
        Err(e) => internal(e),
    }
}

async fn engagement(State(s): State<Arc<AppState>>, Path(id): Path<String>) -> Response {
    let id = crate::engagement_id(&id);
    match (s.rt.store().load(&id).await, s.rt.store().audit_trail(&id).await) {
        (Ok(Some(v)), Ok(timeline)) => {
            Json(serde_json::json!({"version": v.version, "engagement": v.value, "timeline": timeline})).into_response()
        }
        (Ok(None), _) => error(StatusCode::NOT_FOUND, "ResourceNotFoundException", format!("no engagement {id}")),
        (Err(e), _) | (_, Err(e)) => internal(e),
    }
}

async fn exception_list(State(s): State<Arc<AppState>>, Query(f): Query<super::exceptions::Filter>) -> Response {
    use o2c_app::clock::Clock;
    match f.apply(s.rt.store(), o2c_app::clock::SystemClock.now()).await {
        Ok(cases) => Json(cases).into_response(),
        Err(e) => error(StatusCode::BAD_REQUEST, "ValidationException", format!("{e:#}")),
    }
}

async fn exception_case(State(s): State<Arc<AppState>>, Path(id): Path<String>) -> Response {
    match super::exceptions::case(s.rt.store(), &id).await {
        Ok(Some(c)) => Json(c).into_response(),
        Ok(None) => error(StatusCode::NOT_FOUND, "ResourceNotFoundException", format!("no exception {id}")),
        Err(e) => error(StatusCode::INTERNAL_SERVER_ERROR, "InternalException", format!("{e:#}")),
    }
}

/// `POST /v1/exceptions/{id}/actions` body.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ActionRequest {
    /// The key's name when absent; refused when it is another.
    actor: Option<String>,
    action: o2c_domain::events::ExceptionAction,
}

async fn exception_action(
    State(s): State<Arc<AppState>>,
    Extension(caller): Extension<auth::Caller>,
    Path(id): Path<String>,
    body: axum::body::Bytes,
) -> Response {
    let req: ActionRequest = match serde_json::from_slice(&body) {
        Ok(r) => r,
        Err(e) => return error(StatusCode::BAD_REQUEST, "ValidationException", format!("body is not an action: {e}")),
    };
    let actor = caller.credential.name.clone();
    if let Some(claimed) = req.actor.as_deref().filter(|a| *a != actor) {
        let reason = format!("{actor}'s key cannot act as `{claimed}`: the actor of an action is the key's name");
        return s.gate.refuse(auth::Who::caller(&caller), (StatusCode::FORBIDDEN, "AccessDeniedException", reason), None).await;
    }
    let c = match super::exceptions::case(s.rt.store(), &id).await {
        Ok(Some(c)) => c,
        Ok(None) => return error(StatusCode::NOT_FOUND, "ResourceNotFoundException", format!("no exception {id}")),
        Err(e) => return error(StatusCode::INTERNAL_SERVER_ERROR, "InternalException", format!("{e:#}")),
    };
    let entry = match super::exceptions::action_entry(&c, &req.action, &actor) {
        Ok(e) => e,
        Err(e) => return error(StatusCode::BAD_REQUEST, "ValidationException", format!("{e:#}")),
    };
    match s.rt.put_events(vec![entry]).await {
        Ok(resp) if resp.failed_entry_count == 0 => (StatusCode::ACCEPTED, Json(resp)).into_response(),
        Ok(resp) => (StatusCode::BAD_REQUEST, Json(resp)).into_response(),
        Err(e) => internal(e),
    }
}

/// `POST /v1/ingest/{vendor}/{object}`: a vendor payload, mapped by data to canonical
/// events, then published as by `PutEvents` — or refused (`422`) with every failing path,
/// and parked in the rejection store with the payload, like a schema violation.
async fn ingest(
    State(s): State<Arc<AppState>>,
    Extension(caller): Extension<auth::Caller>,
    Path(name): Path<String>,
    body: axum::body::Bytes,
) -> Response {
    let Some(registry) = &s.mappings else {
        return error(StatusCode::NOT_FOUND, "ResourceNotFoundException", "no mappings directory (serve --mappings DIR)");
    };
    // A changed file is read again; one that no longer loads leaves its last version in force.
    registry.refresh();
    let Some(mapping) = registry.get(&name) else {
        return error(StatusCode::NOT_FOUND, "ResourceNotFoundException", format!("no mapping {name} (o2c map --list)"));
    };
    // Who may not publish what the mapping makes is refused before the payload is read
    // (nothing parked on their behalf).
    if let Err(reason) =
        caller.credential.may_publish(&mapping.emit.source, mapping.emit.event_type.detail_type(), &serde_json::Value::Null)
    {
        let reason = format!("{reason}: {} makes {} events", mapping.name, mapping.emit.event_type.detail_type());
        return s.gate.refuse(auth::Who::caller(&caller), (StatusCode::FORBIDDEN, "AccessDeniedException", reason), None).await;
    }
    let mapped = match o2c_mapping::ingest::map(&mapping, &body) {
        Ok(m) => m,
        Err(issues) => {
            use o2c_app::clock::Clock;
            use o2c_app::ports::RejectionStore;
            // Parked for repair without what the mapping marks secret (`redact`).
            let parked = o2c_mapping::ingest::rejection(&mapping, &body, &issues, o2c_app::clock::SystemClock.now(), s.rt.db().new_id());
            if let Err(e) = s.rt.store().park(&parked).await {
                return internal(e);
            }
            let body = o2c_mapping::ingest::refused(&mapping, &issues, &parked.rejection_id);
            return (StatusCode::UNPROCESSABLE_ENTITY, Json(body)).into_response();
        }
    };
    let entries = o2c_mapping::ingest::entries(&mapped);
    let denied = caller.check_entries(&entries);
    if !denied.is_empty() {
        let reason = format!(
            "{} may not publish what {} makes: {}",
            caller.credential.name,
            mapping.name,
            denied.iter().map(|d| d.reason.clone()).collect::<Vec<_>>().join("; ")
        );
        return s.gate.refuse(auth::Who::caller(&caller), (StatusCode::FORBIDDEN, "AccessDeniedException", reason), None).await;
    }
    // One request token per PutEvents' worth of events: a document that becomes hundreds of
    // events costs what as many PutEvents requests would.
    let chunks = u32::try_from(entries.len().div_ceil(MAX_ENTRIES_PER_PUT)).unwrap_or(u32::MAX);
    if chunks > 1
        && let Err(wait) = s.gate.take(&caller.credential, chunks - 1)
    {
        let reason = format!(
            "{} makes {} events: more than the key's rate allows now; retry after {} ms",
            mapping.name,
            entries.len(),
            wait.as_millis()
        );
        return s.gate.refuse(auth::Who::caller(&caller), (StatusCode::TOO_MANY_REQUESTS, "ThrottlingException", reason), None).await;
    }
    // Mapped events carry ids derived from the vendor's record, so a retry after a failure
    // part-way is absorbed downstream by their idempotency keys.
    let mut accepted = Vec::new();
    for chunk in entries.chunks(MAX_ENTRIES_PER_PUT) {
        match s.rt.put_events(chunk.to_vec()).await {
            Ok(resp) => accepted.push(resp),
            Err(e) => return internal(e),
        }
    }
    let failed: usize = accepted.iter().map(|r| r.failed_entry_count).sum();
    let results: Vec<_> = accepted.into_iter().flat_map(|r| r.entries).collect();
    Json(o2c_mapping::ingest::accepted(&mapping, failed, &results)).into_response()
}

async fn rejections(State(s): State<Arc<AppState>>) -> Response {
    match s.rt.store().rejections(200).await {
        Ok(rows) => Json(rows).into_response(),
        Err(e) => internal(e),
    }
}

#[derive(Deserialize)]
struct LimitQuery {
    limit: Option<usize>,
}

async fn unrouted(State(s): State<Arc<AppState>>, Query(q): Query<LimitQuery>) -> Response {
    match o2c_embedded::unrouted::unrouted(s.rt.db(), q.limit.unwrap_or(50).min(1000)).await {
        Ok(found) => Json(found).into_response(),
        Err(e) => internal(e),
    }
}

async fn refusals(State(s): State<Arc<AppState>>, Query(q): Query<LimitQuery>) -> Response {
    match o2c_embedded::access::refusals(s.rt.db(), q.limit.unwrap_or(50).min(1000)).await {
        Ok(found) => Json(found).into_response(),
        Err(e) => internal(e),
    }
}

async fn queues(State(s): State<Arc<AppState>>) -> Response {
    let mut out = serde_json::Map::new();
    for q in s.rt.topology().queues.keys() {
        match s.rt.bus().depth(q).await {
            Ok(d) => {
                out.insert(
                    q.clone(),
                    serde_json::json!({"visible": d.visible, "in_flight": d.in_flight, "dead_letter_queue": s.rt.topology().is_dlq(q)}),
                );
            }
            Err(e) => return internal(e),
        }
    }
    Json(out).into_response()
}

/// The API's OpenAPI document (checked in; its examples are tested against a server).
pub const OPENAPI_YAML: &str = include_str!("../../openapi.yaml");

/// The document as JSON, converted once.
fn openapi() -> &'static Result<serde_json::Value, String> {
    static DOC: std::sync::OnceLock<Result<serde_json::Value, String>> = std::sync::OnceLock::new();
    DOC.get_or_init(|| serde_yaml_ng::from_str(OPENAPI_YAML).map_err(|e| e.to_string()))
}

async fn openapi_json() -> Response {
    match openapi() {
        Ok(doc) => Json(doc).into_response(),
        Err(e) => error(StatusCode::INTERNAL_SERVER_ERROR, "InternalException", format!("openapi.yaml does not parse: {e}")),
    }
}

/// Resolves on Ctrl-C or SIGTERM.
pub async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! { _ = ctrl_c => {}, _ = term => {} }
}

/// Arguments.
#[derive(clap::Args)]
pub struct Args {
    #[command(flatten)]
    target: crate::Target,
    /// Listen address (on AWS, of the operator console; keep it on loopback).
    #[arg(long, default_value = "127.0.0.1:4010")]
    addr: String,
    /// AWS: poll the functions only, without the operator console.
    #[arg(long, conflicts_with = "console_only")]
    no_console: bool,
    /// AWS: the operator console only, for a stage whose functions run in Lambda.
    #[arg(long)]
    console_only: bool,
    /// Reference data JSON (default: the bundled Northwind sample).
    #[arg(long)]
    reference: Option<PathBuf>,
    /// Embedded: seconds a client has to send a request's headers before it is disconnected.
    #[arg(long, value_name = "SECS", default_value_t = 10)]
    header_timeout: u64,
    /// Embedded: seconds a client has to send a request's body once its headers arrived
    /// (then `408`).
    #[arg(long, value_name = "SECS", default_value_t = 30)]
    body_timeout: u64,
    /// Embedded: largest request body accepted, in bytes (then `413`).
    #[arg(long, value_name = "BYTES", default_value_t = limits::Limits::default().max_body)]
    max_body: usize,
    /// Embedded: vendor payload mappings for `POST /v1/ingest/{vendor}/{object}` (read
    /// again when a file changes).
    #[arg(long, value_name = "DIR", default_value = "mappings")]
    mappings: PathBuf,
    /// Embedded: requests per second per key for keys created without `--rate`
    /// (burst: one second's worth; then `429`).
    #[arg(long, value_name = "PER_SEC", default_value_t = 100)]
    rate_limit: u32,
    #[command(flatten)]
    connectors: crate::Connectors,
}

/// Runs the command: embedded HTTP API, or every function polled against a stage.
pub async fn run(args: Args) -> Result<ExitCode> {
    match args.target.target {
        crate::TargetKind::Aws => {
            let limits = limits::Limits {
                header_timeout: std::time::Duration::from_secs(args.header_timeout.max(1)),
                body_timeout: std::time::Duration::from_secs(args.body_timeout.max(1)),
                max_body: args.max_body,
            };
            let console = (!args.no_console).then(|| AwsConsole { addr: args.addr.clone(), limits, reference: args.reference.clone() });
            crate::backend::aws::serve(&args.target, &args.connectors, console, args.console_only).await
        }
        crate::TargetKind::Embedded => {
            let template = crate::template(args.target.template.as_deref())?;
            eprintln!("o2c serve: template {}", template.origin);
            let limits = limits::Limits {
                header_timeout: std::time::Duration::from_secs(args.header_timeout.max(1)),
                body_timeout: std::time::Duration::from_secs(args.body_timeout.max(1)),
                max_body: args.max_body,
            };
            let reference = crate::load_reference(args.reference.as_deref())?;
            let mappings = if args.mappings.is_dir() {
                let r = o2c_mapping::Registry::open(&args.mappings).map_err(anyhow::Error::msg)?;
                eprintln!("o2c serve: {} mapping(s) from {}", r.loaded().mappings.len(), args.mappings.display());
                Some(r)
            } else {
                None
            };
            serve_embedded(args.target.db()?.to_owned(), args.addr, reference, &template.text, limits, args.rate_limit, mappings).await
        }
    }
}

async fn serve_embedded(
    db: PathBuf,
    addr: String,
    reference: ReferenceData,
    template: &str,
    limits: limits::Limits,
    rate_limit: u32,
    mappings: Option<o2c_mapping::Registry>,
) -> Result<ExitCode> {
    let rt = Runtime::builder(&db, reference.clone()).template(template).open().await?;
    if o2c_embedded::access::active_keys(rt.db()).await? == 0 {
        eprintln!(
            "o2c serve: no API key is active, so every request but /healthz is refused (401): create one with \
             `o2c sources add NAME --db {} --source SOURCE --detail-type TYPE` or `--operator`",
            db.display()
        );
    }
    let (stop_tx, stop_rx) = watch::channel(false);
    let mut workers = rt.start(stop_rx);
    let gate = Arc::new(auth::Gate::new(rt.db().clone(), limits, rate_limit));
    let console = Arc::new(console::Console {
        source: console::source::Source::Embedded(rt.clone()),
        sessions: gate.sessions.clone(),
        reference,
        guard: console::Guard::Keys(gate.clone()),
    });
    let state = Arc::new(AppState { rt: rt.clone(), gate: gate.clone(), mappings });
    let app = Router::new()
        .route("/v1/events", post(put_events))
        .route("/v1/ingest/{*mapping}", post(ingest))
        .route("/v1/engagements", get(engagements))
        .route("/v1/engagements/{id}", get(engagement))
        .route("/v1/rejections", get(rejections))
        .route("/v1/exceptions", get(exception_list))
        .route("/v1/exceptions/{id}", get(exception_case))
        .route("/v1/exceptions/{id}/actions", post(exception_action))
        .route("/v1/queues", get(queues))
        .route("/v1/unrouted", get(unrouted))
        .route("/v1/access/refusals", get(refusals))
        .route("/healthz", get(healthz).with_state(rt.db().clone()))
        .route("/openapi.json", get(openapi_json))
        .route("/openapi.yaml", get(|| async { ([(axum::http::header::CONTENT_TYPE, "application/yaml")], OPENAPI_YAML) }))
        .with_state(state.clone())
        .merge(console::routes().with_state(console))
        .layer(axum::middleware::from_fn_with_state(gate, auth::gate))
        // Outermost: what the gate recorded is committed with the answer too.
        .layer(axum::middleware::from_fn_with_state(state, committed));
    let listener = tokio::net::TcpListener::bind(&addr).await.with_context(|| format!("cannot listen on {addr}"))?;
    let local = listener.local_addr()?;
    outln!("o2c serve: listening on http://{local} (db {}); POST /v1/events; console http://{local}/console", db.display());
    info!(addr = %local, db = %db.display(), "serving");
    // A signal stops the server; so does a database handle that lost its open batch (every
    // later call would be refused): the process must restart to go on.
    let watched = rt.db().clone();
    let lost = Arc::new(std::sync::OnceLock::new());
    let stop = {
        let lost = lost.clone();
        async move {
            tokio::select! {
                () = shutdown_signal() => {}
                why = stopped(watched) => {
                    let _ = lost.set(why);
                }
            }
        }
    };
    limits::serve(listener, app, limits, stop).await?;
    // Let in-flight batches finish; anything unfinished is redelivered on the next start.
    let _ = stop_tx.send(true);
    while workers.join_next().await.is_some() {}
    if let Some(why) = lost.get() {
        anyhow::bail!(
            "o2c serve stopped: the database handle lost its open batch ({why}); nothing acknowledged is lost, and what was not \
             is processed again when o2c serve starts again"
        );
    }
    outln!("o2c serve: stopped");
    Ok(ExitCode::SUCCESS)
}

/// Resolves once the database handle has stopped (checked every second), with why.
async fn stopped(db: o2c_embedded::db::Db) -> String {
    loop {
        tokio::time::sleep(std::time::Duration::from_secs(1)).await;
        if let Some(why) = db.broken() {
            return why;
        }
    }
}

/// `GET /healthz`: `ok`, or `503` once the database handle has stopped.
async fn healthz(State(db): State<o2c_embedded::db::Db>) -> Response {
    match db.broken() {
        None => "ok".into_response(),
        Some(why) => error(StatusCode::SERVICE_UNAVAILABLE, "DatabaseStopped", format!("the database handle stopped: {why}")),
    }
}

/// The operator console of `o2c serve --target aws`: where it listens, its limits, its
/// reference data.
pub struct AwsConsole {
    /// Listen address.
    pub addr: String,
    /// Request limits (as the embedded API's).
    pub limits: limits::Limits,
    /// Reference data JSON (default: the bundled sample).
    pub reference: Option<PathBuf>,
}

/// Starts the operator console over a stage, as the caller's AWS identity: on `addr`, its
/// pages behind a sign-in link printed on standard output (a random token: whoever opens
/// it acts as that identity, so it goes to the operator's terminal only). Stops when `stop`
/// turns true.
pub async fn aws_console(target: &crate::Target, opts: AwsConsole, mut stop: watch::Receiver<bool>) -> Result<tokio::task::JoinHandle<()>> {
    let reference = crate::load_reference(opts.reference.as_deref())?;
    let aws = crate::backend::aws::Aws::connect(target).await?;
    let identity = aws_sdk_sts::Client::new(aws.sdk())
        .get_caller_identity()
        .send()
        .await
        .context("cannot tell who you are on AWS (sts:GetCallerIdentity): the console acts as that identity")?;
    let arn = identity.arn().unwrap_or_default().to_owned();
    let operator = console::operator_of(&arn);
    let deployed = aws.deployed().await?;
    let bus = o2c_aws::eventbridge::EventBridgePublisher::new(aws_sdk_eventbridge::Client::new(aws.sdk()), deployed.bus_name.clone());
    let listener = tokio::net::TcpListener::bind(&opts.addr).await.with_context(|| format!("cannot listen on {}", opts.addr))?;
    let local = listener.local_addr()?;
    if !local.ip().is_loopback() {
        eprintln!(
            "o2c serve: the console listens on {local}, beyond loopback, and answers only requests naming a loopback host: \
             reach it through an SSH tunnel"
        );
    }
    let link = console::SignInLink::new(format!("http://{local}")).context("no random source for the sign-in link")?;
    outln!("o2c serve: console for stage {} as {} ({arn}), sign in once with: {}", target.stage, operator.name, link.url());
    let state = Arc::new(console::Console {
        source: console::source::Source::Aws(Box::new(console::source::Stage { aws, bus, bus_name: deployed.bus_name.clone() })),
        sessions: Arc::new(console::session::Sessions::default()),
        reference,
        guard: console::Guard::Link { link, operator: operator.clone(), limits: opts.limits },
    });
    let app = console::routes().with_state(state.clone()).layer(axum::middleware::from_fn_with_state(state, console::link_guard));
    info!(addr = %local, operator = %operator.name, "console serving");
    Ok(tokio::spawn(async move {
        let stopped = async move {
            while !*stop.borrow() {
                if stop.changed().await.is_err() {
                    break;
                }
            }
        };
        if let Err(e) = limits::serve(listener, app, opts.limits, stopped).await {
            tracing::error!(error = %e, "the console stopped");
        }
    }))
}

/// The API key a client command presents to `o2c serve`: the file given, else
/// `O2C_API_KEY`, else the file named by `O2C_API_KEY_FILE`.
pub fn client_key(file: Option<&std::path::Path>) -> Result<Option<String>> {
    let file = match file {
        Some(f) => Some(f.to_owned()),
        None => {
            if let Ok(k) = std::env::var("O2C_API_KEY") {
                return Ok(Some(k.trim().to_owned()));
            }
            std::env::var_os("O2C_API_KEY_FILE").map(PathBuf::from)
        }
    };
    file.map(|f| {
        std::fs::read_to_string(&f).map(|k| k.trim().to_owned()).with_context(|| format!("cannot read the key file {}", f.display()))
    })
    .transpose()
}

/// Posts entries to a running `o2c serve` (10 per request, like `PutEvents`) with `key`.
pub async fn send(url: &str, entries: &[o2c_app::bus::PutEventsEntry], key: Option<&str>) -> Result<ExitCode> {
    let client = reqwest::Client::builder().timeout(std::time::Duration::from_secs(30)).build()?;
    let endpoint = format!("{}/v1/events", url.trim_end_matches('/'));
    let mut failed = 0;
    for chunk in entries.chunks(MAX_ENTRIES_PER_PUT) {
        let mut req = client.post(&endpoint).json(&PutEventsRequest { entries: chunk.to_vec() });
        if let Some(key) = key {
            req = req.bearer_auth(key);
        }
        let resp = req.send().await.with_context(|| format!("cannot reach {endpoint}"))?;
        let status = resp.status();
        let body: serde_json::Value = resp.json().await.unwrap_or_default();
        if !status.is_success() {
            anyhow::bail!("{endpoint} answered {status}: {body}");
        }
        for (e, r) in chunk.iter().zip(body["Entries"].as_array().into_iter().flatten()) {
            match r.get("EventId").and_then(|v| v.as_str()) {
                Some(id) => {
                    outln!("{id}  {} / {}", e.source.as_deref().unwrap_or_default(), e.detail_type.as_deref().unwrap_or_default())
                }
                None => {
                    failed += 1;
                    eprintln!(
                        "o2c: refused: {} {}",
                        r["ErrorCode"].as_str().unwrap_or_default(),
                        r["ErrorMessage"].as_str().unwrap_or_default()
                    );
                }
            }
        }
    }
    Ok(if failed > 0 { ExitCode::from(crate::exit::REFUSED) } else { ExitCode::SUCCESS })
}

#[cfg(test)]
mod tests {
    use super::*;
    use o2c_embedded::db::{Db, Durability, db_err};

    #[tokio::test]
    async fn when_the_database_handle_stops_should_answer_healthz_with_503_and_end_the_stop_watch() {
        let dir = tempfile::tempdir().unwrap();
        let db = Db::open_with(&dir.path().join("s.db"), Durability::Group).unwrap();
        assert_eq!(healthz(State(db.clone())).await.status(), StatusCode::OK);
        db.call(|c| c.execute("CREATE TABLE t (n INTEGER)", []).map_err(db_err)).await.unwrap();
        db.call(|c| c.execute("INSERT INTO t (n) VALUES (1)", []).map_err(db_err)).await.unwrap();
        // What an I/O error or a full disk does to the open batch: SQLite undoes it.
        assert!(db.call(|c| c.execute_batch("ROLLBACK").map_err(db_err)).await.is_err());
        assert_eq!(healthz(State(db.clone())).await.status(), StatusCode::SERVICE_UNAVAILABLE);
        let why = tokio::time::timeout(std::time::Duration::from_secs(10), stopped(db)).await.expect("the watch ends");
        assert!(why.contains("rolled back"), "{why}");
    }
}
