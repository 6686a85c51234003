//! `o2c` — run and operate the opportunity-to-cash middleware.
//!
//! Two targets, one command set: `--target embedded` (default; a SQLite file given by
//! `--db`, no AWS, no Docker) and `--target aws` (the stage's DynamoDB tables, event bus
//! and queues, found by the names in `infra/template.yaml`; any `AWS_ENDPOINT_URL` works,
//! e.g. moto_server). Every command that reads an embedded database works while
//! `o2c serve` runs on it (SQLite WAL readers).

mod aws;
mod demo;
mod print;
mod serve;

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use clap::{Args, Parser, Subcommand, ValueEnum};
use o2c_app::bus::{MAX_ENTRIES_PER_PUT, PutEventsEntry, entries_from_text};
use o2c_app::ports::{EngagementFilter, EngagementStore, RejectionStore};
use o2c_domain::reference::ReferenceData;
use o2c_embedded::db::Db;
use o2c_embedded::sim::{Fault, Simulators, System};
use o2c_embedded::store::SqliteStore;
use o2c_embedded::{Runtime, RuntimeOptions};

#[derive(Parser)]
#[command(name = "o2c", version, about = "Opportunity-to-cash middleware for professional-services firms")]
struct Cli {
    /// Log format on stderr.
    #[arg(long, global = true, value_enum, default_value_t = LogFormat::Text)]
    log_format: LogFormat,
    /// Log filter (tracing EnvFilter syntax), e.g. `info` or `o2c_app=debug`.
    #[arg(long, global = true, env = "RUST_LOG", default_value = "warn")]
    log: String,
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Clone, Copy, ValueEnum)]
enum LogFormat {
    Text,
    Json,
}

/// Where a command runs.
#[derive(Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum TargetKind {
    /// The embedded runtime: a SQLite file (`--db`).
    Embedded,
    /// AWS APIs (or an emulator via `AWS_ENDPOINT_URL`) for a deployed stage (`--stage`).
    Aws,
}

/// Target selection shared by commands that work on both engines.
#[derive(Args, Clone)]
pub struct Target {
    /// Engine.
    #[arg(long, value_enum, default_value_t = TargetKind::Embedded)]
    pub target: TargetKind,
    /// Embedded: the database file.
    #[arg(long)]
    pub db: Option<PathBuf>,
    /// AWS: the stage (resource names come from the template).
    #[arg(long, env = "O2C_STAGE", default_value = "dev")]
    pub stage: String,
}

impl Target {
    fn db(&self) -> Result<&Path> {
        self.db.as_deref().context("--db PATH is required with --target embedded")
    }
}

/// Connector endpoints for `serve --target aws` (the Lambda functions read the same variables).
#[derive(Args, Clone)]
pub struct Connectors {
    /// PSA system API base URL.
    #[arg(long, env = "PSA_BASE_URL")]
    pub psa_url: Option<String>,
    /// ERP system API base URL.
    #[arg(long, env = "ERP_BASE_URL")]
    pub erp_url: Option<String>,
    /// CRM system API base URL.
    #[arg(long, env = "CRM_BASE_URL")]
    pub crm_url: Option<String>,
}

#[derive(Subcommand)]
enum Cmd {
    /// Run the seed scenario end to end on a fresh temporary store and print every step.
    Demo {
        /// Use (and keep) this database instead of a temporary one.
        #[arg(long)]
        db: Option<PathBuf>,
        /// Reproducible run: virtual time and ids from this seed, one sequential scheduler
        /// (the same seed gives byte-identical state).
        #[arg(long)]
        seed: Option<u64>,
    },
    /// Feed event files (EventBridge events, PutEvents entries/requests or SQS events;
    /// JSON or JSON Lines) into the embedded runtime and process until every queue is empty.
    Run {
        /// Database file (created if missing).
        #[arg(long)]
        db: PathBuf,
        /// Reference data JSON (default: the bundled Northwind sample).
        #[arg(long)]
        reference: Option<PathBuf>,
        /// Give up when queues are not empty after this many seconds.
        #[arg(long, default_value_t = 300)]
        timeout_secs: u64,
        /// Event files.
        #[arg(required = true)]
        files: Vec<PathBuf>,
    },
    /// Embedded: serve `POST /v1/events` (PutEvents-shaped) and process in the background.
    /// AWS: run every function of the template locally against the stage's queues, with
    /// the event source mapping's semantics (the Docker-free way to run the chain on AWS).
    Serve {
        #[command(flatten)]
        target: Target,
        /// Embedded: listen address.
        #[arg(long, default_value = "127.0.0.1:4010")]
        addr: String,
        /// Embedded: reference data JSON (default: the bundled Northwind sample).
        #[arg(long)]
        reference: Option<PathBuf>,
        #[command(flatten)]
        connectors: Connectors,
    },
    /// Publish event files: to a running `o2c serve` (`--url`) or to the stage's bus (`--target aws`).
    Send {
        #[command(flatten)]
        target: Target,
        /// Embedded: the `o2c serve` base URL.
        #[arg(long, default_value = "http://127.0.0.1:4010")]
        url: String,
        /// Event files.
        #[arg(required = true)]
        files: Vec<PathBuf>,
    },
    /// Show one engagement: state, external ids and its timeline.
    Status {
        #[command(flatten)]
        target: Target,
        /// Engagement id (`ENG-…`) or CRM opportunity id.
        engagement: String,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// List engagements (newest first).
    Engagements {
        #[command(flatten)]
        target: Target,
        /// Only this status (e.g. `active`, `rejected`, `provisioning_failed`).
        #[arg(long)]
        status: Option<String>,
        /// Only engagements with an open exception.
        #[arg(long)]
        exceptions: bool,
        /// At most this many.
        #[arg(long, default_value_t = 50)]
        limit: usize,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Rejected messages, parked with every reason.
    Rejections {
        #[command(flatten)]
        target: Target,
        /// At most this many.
        #[arg(long, default_value_t = 50)]
        limit: usize,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Dead-letter queues: inspect and redrive.
    Dlq {
        #[command(subcommand)]
        cmd: DlqCmd,
    },
    /// Replay archived events of a time window into the bus (EventBridge archive replay).
    Replay {
        #[command(flatten)]
        target: Target,
        /// Start (RFC 3339).
        #[arg(long)]
        from: chrono::DateTime<chrono::Utc>,
        /// End (RFC 3339, exclusive).
        #[arg(long)]
        to: chrono::DateTime<chrono::Utc>,
        /// AWS: archive name (default: the template's archive for the stage).
        #[arg(long)]
        archive: Option<String>,
    },
    /// Reference (master) data.
    Reference {
        #[command(subcommand)]
        cmd: ReferenceCmd,
    },
    /// AWS without CloudFormation: create the template's tables, bus, archive, queues and
    /// rules for a stage (an emulator or a sandbox account) and load reference data.
    Bootstrap {
        /// Stage.
        #[arg(long, env = "O2C_STAGE", default_value = "dev")]
        stage: String,
        /// Reference data JSON (default: the bundled Northwind sample).
        #[arg(long)]
        reference: Option<PathBuf>,
    },
    /// Control the CRM / PSA / ERP simulators.
    Sim {
        #[command(subcommand)]
        cmd: SimCmd,
    },
}

#[derive(Subcommand)]
enum DlqCmd {
    /// Depth of every queue, or the messages of one queue with their failure reasons.
    List {
        #[command(flatten)]
        target: Target,
        /// Queue logical id (e.g. `ProvisionDLQ`).
        queue: Option<String>,
    },
    /// Move messages from a DLQ back to its source queue.
    Redrive {
        #[command(flatten)]
        target: Target,
        /// DLQ logical id.
        queue: String,
        /// At most this many.
        #[arg(long, default_value_t = 1000)]
        limit: usize,
    },
}

#[derive(Subcommand)]
enum ReferenceCmd {
    /// Load a reference-data snapshot (AWS: one item per entity in the state table).
    Load {
        /// Stage.
        #[arg(long, env = "O2C_STAGE", default_value = "dev")]
        stage: String,
        /// Reference data JSON (default: the bundled Northwind sample).
        #[arg(long)]
        file: Option<PathBuf>,
    },
    /// Check a reference-data file (cross references, template weights).
    Check {
        /// Reference data JSON.
        file: PathBuf,
    },
}

#[derive(Clone, Copy, ValueEnum)]
enum FaultKind {
    ServerError,
    Timeout,
    TimeoutAfterCommit,
    RateLimited,
    Rejected,
    /// A slow answer (`--delay-ms`); the call then proceeds.
    Latency,
}

#[derive(Subcommand)]
enum SimCmd {
    /// Serve the simulators over the connector contract (`/psa`, `/erp`, `/crm`) for the
    /// Lambda binaries and `o2c serve --target aws`.
    Serve {
        /// Database file (created if missing).
        #[arg(long)]
        db: PathBuf,
        /// Listen address.
        #[arg(long, default_value = "127.0.0.1:4020")]
        addr: String,
        /// Reference data JSON (the ERP's master data; default: the bundled sample).
        #[arg(long)]
        reference: Option<PathBuf>,
    },
    /// Switch a fault on.
    Fault {
        /// Database file.
        #[arg(long)]
        db: PathBuf,
        /// `crm`, `psa` or `erp`.
        #[arg(long)]
        system: String,
        /// Operation (`create_project`, `cancel_project`, `create_billing_schedule`, `update_opportunity`) or `*`.
        #[arg(long, default_value = "*")]
        operation: String,
        /// Kind of fault.
        #[arg(long, value_enum)]
        kind: FaultKind,
        /// For how many calls (default: until cleared).
        #[arg(long)]
        times: Option<u32>,
        /// HTTP status for server errors / rejections.
        #[arg(long)]
        status: Option<u16>,
        /// Error code for rejections.
        #[arg(long, default_value = "INVALID_REQUEST")]
        code: String,
        /// Error message for rejections.
        #[arg(long, default_value = "rejected by simulator fault")]
        message: String,
        /// Retry-After for rate limiting, ms.
        #[arg(long, default_value_t = 1000)]
        retry_after_ms: u64,
        /// Delay of a latency fault, ms.
        #[arg(long, default_value_t = 2000)]
        delay_ms: u64,
    },
    /// Clear every fault.
    Clear {
        /// Database file.
        #[arg(long)]
        db: PathBuf,
    },
    /// Connector calls the simulators received, oldest first.
    Calls {
        /// Database file.
        #[arg(long)]
        db: PathBuf,
    },
}

fn init_tracing(format: LogFormat, filter: &str) {
    use std::io::IsTerminal;
    let filter = tracing_subscriber::EnvFilter::try_new(filter).unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn"));
    let builder = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr).with_ansi(std::io::stderr().is_terminal());
    match format {
        LogFormat::Json => builder.json().flatten_event(true).init(),
        LogFormat::Text => builder.compact().init(),
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    init_tracing(cli.log_format, &cli.log);
    let rt = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("o2c: cannot start the async runtime: {e}");
            return ExitCode::from(70);
        }
    };
    match rt.block_on(dispatch(cli.cmd)) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("o2c: {e:#}");
            ExitCode::from(1)
        }
    }
}

/// Reference data from a file, or the bundled sample.
pub fn load_reference(path: Option<&Path>) -> Result<ReferenceData> {
    match path {
        None => Ok(o2c_embedded::reference::northwind()?),
        Some(p) => {
            let text = std::fs::read_to_string(p).with_context(|| format!("cannot read reference data {}", p.display()))?;
            Ok(ReferenceData::from_json(&text).with_context(|| format!("reference data {}", p.display()))?)
        }
    }
}

/// Opens an existing database for reading alongside a running `o2c serve`.
fn open_existing(db: &Path) -> Result<Db> {
    if !db.exists() {
        bail!("no database at {} (run `o2c run` or `o2c serve` first)", db.display());
    }
    Ok(Db::open(db)?)
}

/// `ENG-…` as given, otherwise an opportunity id.
pub fn engagement_id(arg: &str) -> String {
    if arg.starts_with("ENG-") { arg.to_owned() } else { o2c_domain::events::engagement_id_for(arg) }
}

/// Reads every file before anything is processed, so unreadable input changes nothing.
pub fn read_inputs(files: &[PathBuf]) -> Result<Vec<PutEventsEntry>> {
    let mut all = Vec::new();
    for f in files {
        let text = std::fs::read_to_string(f).with_context(|| format!("cannot read {}", f.display()))?;
        let entries =
            entries_from_text(&text).map_err(anyhow::Error::msg).with_context(|| format!("{} is not an event file", f.display()))?;
        if entries.is_empty() {
            bail!("{} contains no events", f.display());
        }
        all.extend(entries);
    }
    Ok(all)
}

/// Shows state + timeline of one engagement from any store.
async fn show_status<S: EngagementStore>(store: &S, engagement: &str, json: bool, where_: &str) -> Result<ExitCode> {
    let id = engagement_id(engagement);
    let Some(state) = store.load(&id).await? else { bail!("no engagement {id} in {where_}") };
    let timeline = store.audit_trail(&id).await?;
    let others = store.load_aggregates(&[o2c_domain::aggregate::AggregateKey::crm_sync(&id)]).await?;
    let crm = others.crm_sync(&id);
    if json {
        println!(
            "{}",
            serde_json::to_string_pretty(
                &serde_json::json!({"version": state.version, "engagement": state.value, "crm_sync": crm.map(|c| &c.last), "timeline": timeline})
            )?
        );
    } else {
        print::engagement(&state.value, state.version, crm);
        print::timeline(&timeline);
    }
    Ok(ExitCode::SUCCESS)
}

async fn dispatch(cmd: Cmd) -> Result<ExitCode> {
    match cmd {
        Cmd::Demo { db, seed } => demo::run(db, seed).await,
        Cmd::Run { db, reference, timeout_secs, files } => {
            let entries = read_inputs(&files)?;
            let rt = Runtime::builder(&db, load_reference(reference.as_deref())?).options(RuntimeOptions::default()).open().await?;
            let mut failed = 0;
            let mut accepted = 0;
            for chunk in entries.chunks(MAX_ENTRIES_PER_PUT) {
                let resp = rt.put_events(chunk.to_vec()).await?;
                for (e, r) in chunk.iter().zip(resp.entries) {
                    match (r.event_id, r.error_code) {
                        (Some(_), _) => accepted += 1,
                        (None, code) => {
                            failed += 1;
                            eprintln!(
                                "o2c: entry {} / {} refused: {} {}",
                                e.source.as_deref().unwrap_or("?"),
                                e.detail_type.as_deref().unwrap_or("?"),
                                code.unwrap_or_default(),
                                r.error_message.unwrap_or_default()
                            );
                        }
                    }
                }
            }
            let report = rt.run_until_idle(Duration::from_secs(timeout_secs)).await?;
            let rejections = rt.store().rejections(usize::MAX).await?.len();
            println!(
                "accepted {accepted} event(s), refused {failed}; {} batch(es), {} record(s) handled, {} redelivery(ies); {} parked rejection(s), {} dead letter(s)",
                report.batches, report.succeeded, report.retried, rejections, report.dead_letters
            );
            print::engagement_table(&rt.store().list(&EngagementFilter { limit: 50, ..Default::default() }).await?);
            Ok(if failed > 0 { ExitCode::from(2) } else { ExitCode::SUCCESS })
        }
        Cmd::Serve { target, addr, reference, connectors } => match target.target {
            TargetKind::Embedded => serve::run(target.db()?.to_owned(), addr, load_reference(reference.as_deref())?).await,
            TargetKind::Aws => aws::serve(&target.stage, &connectors).await,
        },
        Cmd::Send { target, url, files } => {
            let entries = read_inputs(&files)?;
            match target.target {
                TargetKind::Aws => aws::send(&target.stage, &entries).await,
                TargetKind::Embedded => serve::send(&url, &entries).await,
            }
        }
        Cmd::Status { target, engagement, json } => match target.target {
            TargetKind::Embedded => {
                let db = target.db()?;
                show_status(&SqliteStore::new(open_existing(db)?), &engagement, json, &db.display().to_string()).await
            }
            TargetKind::Aws => show_status(&aws::store(&target.stage).await?, &engagement, json, &format!("stage {}", target.stage)).await,
        },
        Cmd::Engagements { target, status, exceptions, limit, json } => {
            let filter = EngagementFilter { status, open_exceptions: exceptions, limit };
            let rows = match target.target {
                TargetKind::Embedded => SqliteStore::new(open_existing(target.db()?)?).list(&filter).await?,
                TargetKind::Aws => aws::store(&target.stage).await?.list(&filter).await?,
            };
            if json {
                println!("{}", serde_json::to_string_pretty(&rows)?);
            } else {
                print::engagement_table(&rows);
            }
            Ok(ExitCode::SUCCESS)
        }
        Cmd::Rejections { target, limit, json } => {
            let rows = match target.target {
                TargetKind::Embedded => SqliteStore::new(open_existing(target.db()?)?).rejections(limit).await?,
                TargetKind::Aws => aws::store(&target.stage).await?.rejections(limit).await?,
            };
            if json {
                println!("{}", serde_json::to_string_pretty(&rows)?);
            } else {
                print::rejections(&rows);
            }
            Ok(ExitCode::SUCCESS)
        }
        Cmd::Dlq { cmd } => dlq(cmd).await,
        Cmd::Replay { target, from, to, archive } => match target.target {
            TargetKind::Aws => aws::replay(&target.stage, archive, from, to).await,
            TargetKind::Embedded => {
                if archive.is_some() {
                    bail!("--archive applies to --target aws; the embedded bus archives every event in the database");
                }
                let rt = Runtime::builder(target.db()?, o2c_embedded::reference::northwind()?).open().await?;
                let entries = rt.bus().archived(Some(from), Some(to)).await?;
                let n = entries.len();
                for chunk in entries.chunks(MAX_ENTRIES_PER_PUT) {
                    rt.put_events(chunk.to_vec()).await?;
                }
                let report = rt.run_until_idle(Duration::from_secs(300)).await?;
                println!(
                    "replayed {n} archived event(s); {} record(s) handled (duplicates are absorbed by idempotency and state)",
                    report.succeeded
                );
                Ok(ExitCode::SUCCESS)
            }
        },
        Cmd::Reference { cmd } => match cmd {
            ReferenceCmd::Load { stage, file } => aws::load_reference_data(&stage, &load_reference(file.as_deref())?).await,
            ReferenceCmd::Check { file } => {
                let data = load_reference(Some(&file))?;
                println!(
                    "{}: {} customers, {} legal entities, {} tax profiles, {} offerings, {} rate cards, {} templates — consistent",
                    file.display(),
                    data.customers.len(),
                    data.legal_entities.len(),
                    data.tax_profiles.len(),
                    data.service_offerings.len(),
                    data.rate_cards.len(),
                    data.project_templates.len()
                );
                Ok(ExitCode::SUCCESS)
            }
        },
        Cmd::Bootstrap { stage, reference } => aws::bootstrap(&stage, &load_reference(reference.as_deref())?).await,
        Cmd::Sim { cmd } => sim(cmd).await,
    }
}

fn bus_for(db: Db) -> Result<o2c_embedded::bus::LocalBus> {
    let topo = std::sync::Arc::new(o2c_app::topology::Topology::from_sam_yaml(o2c_app::topology::TEMPLATE)?);
    let name = format!("o2c-{}", topo.bus);
    Ok(o2c_embedded::bus::LocalBus::new(db, topo, name)?)
}

async fn dlq(cmd: DlqCmd) -> Result<ExitCode> {
    match cmd {
        DlqCmd::List { target, queue } if target.target == TargetKind::Aws => aws::dlq_list(&target.stage, queue.as_deref()).await,
        DlqCmd::Redrive { target, queue, limit } if target.target == TargetKind::Aws => {
            aws::dlq_redrive(&target.stage, &queue, limit).await
        }
        DlqCmd::List { target, queue: None } => {
            let bus = bus_for(open_existing(target.db()?)?)?;
            println!("{:<24} {:>8} {:>10}  role", "queue", "visible", "in flight");
            for q in bus.topology().queues.keys() {
                let d = bus.depth(q).await?;
                let role = if bus.topology().is_dlq(q) { "dead-letter queue" } else { "queue" };
                println!("{q:<24} {:>8} {:>10}  {role}", d.visible, d.in_flight);
            }
            Ok(ExitCode::SUCCESS)
        }
        DlqCmd::List { target, queue: Some(q) } => {
            let bus = bus_for(open_existing(target.db()?)?)?;
            if !bus.topology().queues.contains_key(&q) {
                bail!("no queue {q}; queues: {}", bus.topology().queues.keys().cloned().collect::<Vec<_>>().join(", "));
            }
            for m in bus.list(&q, 1000).await? {
                println!(
                    "{}  {}  received {}×  {}  event {}  {}",
                    m.message_id,
                    m.sent_at.to_rfc3339(),
                    m.receive_count,
                    m.detail_type.unwrap_or_default(),
                    m.event_id.unwrap_or_default(),
                    m.last_error.unwrap_or_default()
                );
            }
            Ok(ExitCode::SUCCESS)
        }
        DlqCmd::Redrive { target, queue, limit } => {
            let bus = bus_for(open_existing(target.db()?)?)?;
            let moved = bus.redrive(&queue, limit).await?;
            println!(
                "moved {moved} message(s) from {queue} back to {}",
                bus.topology().source_of_dlq(&queue).map(|q| q.logical_id.as_str()).unwrap_or("?")
            );
            Ok(ExitCode::SUCCESS)
        }
    }
}

async fn sim(cmd: SimCmd) -> Result<ExitCode> {
    let sims = |db: &Path| -> Result<Simulators> { Ok(Simulators::new(open_existing(db)?, &o2c_embedded::reference::northwind()?)) };
    match cmd {
        SimCmd::Serve { db, addr, reference } => {
            let sims = Simulators::new(Db::open(&db)?, &load_reference(reference.as_deref())?);
            let listener = tokio::net::TcpListener::bind(&addr).await.with_context(|| format!("cannot listen on {addr}"))?;
            let local = listener.local_addr()?;
            println!("o2c sim serve: PSA http://{local}/psa  ERP http://{local}/erp  CRM http://{local}/crm (db {})", db.display());
            axum::serve(listener, o2c_embedded::sim_http::router(sims)).with_graceful_shutdown(serve::shutdown_signal()).await?;
            Ok(ExitCode::SUCCESS)
        }
        SimCmd::Fault { db, system, operation, kind, times, status, code, message, retry_after_ms, delay_ms } => {
            let system = System::parse(&system).with_context(|| format!("unknown system {system} (crm, psa, erp)"))?;
            let fault = match kind {
                FaultKind::ServerError => Fault::ServerError { status: status.unwrap_or(503) },
                FaultKind::Timeout => Fault::Timeout,
                FaultKind::TimeoutAfterCommit => Fault::TimeoutAfterCommit,
                FaultKind::RateLimited => Fault::RateLimited { retry_after_ms },
                FaultKind::Rejected => Fault::Rejected { status: status.unwrap_or(400), code, message },
                FaultKind::Latency => Fault::Latency { ms: delay_ms },
            };
            sims(&db)?.inject(system, &operation, fault, times).await?;
            println!("fault set on {} {operation}", system.as_str());
            Ok(ExitCode::SUCCESS)
        }
        SimCmd::Clear { db } => {
            sims(&db)?.clear_faults().await?;
            println!("faults cleared");
            Ok(ExitCode::SUCCESS)
        }
        SimCmd::Calls { db } => {
            for c in sims(&db)?.calls().await? {
                println!("{:<4} {:<24} {:<34} {}", c.system, c.operation, c.key, c.outcome);
            }
            Ok(ExitCode::SUCCESS)
        }
    }
}
