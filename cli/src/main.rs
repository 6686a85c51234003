//! `o2c` — run and operate the opportunity-to-cash middleware.
//!
//! Embedded (default, no AWS, no Docker): `demo`, `run`, `serve`, `status`, `engagements`,
//! `rejections`, `dlq`, `sim`. Every command that reads a database works while
//! `o2c serve` runs on it (SQLite WAL readers).

mod demo;
mod print;
mod serve;

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use clap::{Parser, Subcommand, ValueEnum};
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

#[derive(Subcommand)]
enum Cmd {
    /// Run the seed scenario end to end on a fresh temporary store and print every step.
    Demo {
        /// Use (and keep) this database instead of a temporary one.
        #[arg(long)]
        db: Option<PathBuf>,
    },
    /// Feed event files (EventBridge events, PutEvents entries/requests or SQS events;
    /// JSON or JSON Lines) into the runtime and process until every queue is empty.
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
    /// Serve `POST /v1/events` (PutEvents-shaped) and process events in the background.
    Serve {
        /// Database file (created if missing).
        #[arg(long)]
        db: PathBuf,
        /// Listen address.
        #[arg(long, default_value = "127.0.0.1:4010")]
        addr: String,
        /// Reference data JSON (default: the bundled Northwind sample).
        #[arg(long)]
        reference: Option<PathBuf>,
    },
    /// Show one engagement: state, external ids and its timeline.
    Status {
        /// Database file.
        #[arg(long)]
        db: PathBuf,
        /// Engagement id (`ENG-…`) or CRM opportunity id.
        engagement: String,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// List engagements (newest first).
    Engagements {
        /// Database file.
        #[arg(long)]
        db: PathBuf,
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
        /// Database file.
        #[arg(long)]
        db: PathBuf,
        /// At most this many.
        #[arg(long, default_value_t = 50)]
        limit: usize,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Dead-letter queues.
    Dlq {
        #[command(subcommand)]
        cmd: DlqCmd,
    },
    /// Control the CRM / PSA / ERP simulators of the embedded runtime.
    Sim {
        #[command(subcommand)]
        cmd: SimCmd,
    },
}

#[derive(Subcommand)]
enum DlqCmd {
    /// Depth of every queue, or the messages of one queue.
    List {
        /// Database file.
        #[arg(long)]
        db: PathBuf,
        /// Queue logical id (e.g. `ProvisionDLQ`).
        queue: Option<String>,
    },
    /// Move messages from a DLQ back to its source queue.
    Redrive {
        /// Database file.
        #[arg(long)]
        db: PathBuf,
        /// DLQ logical id.
        queue: String,
        /// At most this many.
        #[arg(long, default_value_t = 1000)]
        limit: usize,
    },
}

#[derive(Clone, Copy, ValueEnum)]
enum FaultKind {
    ServerError,
    Timeout,
    TimeoutAfterCommit,
    RateLimited,
    Rejected,
}

#[derive(Subcommand)]
enum SimCmd {
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
    let filter = tracing_subscriber::EnvFilter::try_new(filter).unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn"));
    use std::io::IsTerminal;
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
fn engagement_id(arg: &str) -> String {
    if arg.starts_with("ENG-") { arg.to_owned() } else { o2c_domain::events::engagement_id_for(arg) }
}

/// Reads every file before anything is processed, so unreadable input changes nothing.
fn read_inputs(files: &[PathBuf]) -> Result<Vec<PutEventsEntry>> {
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

async fn dispatch(cmd: Cmd) -> Result<ExitCode> {
    match cmd {
        Cmd::Demo { db } => demo::run(db).await,
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
        Cmd::Serve { db, addr, reference } => serve::run(db, addr, load_reference(reference.as_deref())?).await,
        Cmd::Status { db, engagement, json } => {
            let store = SqliteStore::new(open_existing(&db)?);
            let id = engagement_id(&engagement);
            let Some(state) = store.load(&id).await? else { bail!("no engagement {id} in {}", db.display()) };
            let timeline = store.audit_trail(&id).await?;
            if json {
                println!(
                    "{}",
                    serde_json::to_string_pretty(
                        &serde_json::json!({"version": state.version, "engagement": state.value, "timeline": timeline})
                    )?
                );
            } else {
                print::engagement(&state.value, state.version);
                print::timeline(&timeline);
            }
            Ok(ExitCode::SUCCESS)
        }
        Cmd::Engagements { db, status, exceptions, limit, json } => {
            let store = SqliteStore::new(open_existing(&db)?);
            let rows = store.list(&EngagementFilter { status, open_exceptions: exceptions, limit }).await?;
            if json {
                println!("{}", serde_json::to_string_pretty(&rows)?);
            } else {
                print::engagement_table(&rows);
            }
            Ok(ExitCode::SUCCESS)
        }
        Cmd::Rejections { db, limit, json } => {
            let store = SqliteStore::new(open_existing(&db)?);
            let rows = store.rejections(limit).await?;
            if json {
                println!("{}", serde_json::to_string_pretty(&rows)?);
            } else {
                print::rejections(&rows);
            }
            Ok(ExitCode::SUCCESS)
        }
        Cmd::Dlq { cmd } => dlq(cmd).await,
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
        DlqCmd::List { db, queue: None } => {
            let bus = bus_for(open_existing(&db)?)?;
            println!("{:<22} {:>8} {:>10}  role", "queue", "visible", "in flight");
            for q in bus.topology().queues.keys() {
                let d = bus.depth(q).await?;
                let role = if bus.topology().is_dlq(q) { "dead-letter queue" } else { "function queue" };
                println!("{q:<22} {:>8} {:>10}  {role}", d.visible, d.in_flight);
            }
            Ok(ExitCode::SUCCESS)
        }
        DlqCmd::List { db, queue: Some(q) } => {
            let bus = bus_for(open_existing(&db)?)?;
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
        DlqCmd::Redrive { db, queue, limit } => {
            let bus = bus_for(open_existing(&db)?)?;
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
        SimCmd::Fault { db, system, operation, kind, times, status, code, message, retry_after_ms } => {
            let system = System::parse(&system).with_context(|| format!("unknown system {system} (crm, psa, erp)"))?;
            let fault = match kind {
                FaultKind::ServerError => Fault::ServerError { status: status.unwrap_or(503) },
                FaultKind::Timeout => Fault::Timeout,
                FaultKind::TimeoutAfterCommit => Fault::TimeoutAfterCommit,
                FaultKind::RateLimited => Fault::RateLimited { retry_after_ms },
                FaultKind::Rejected => Fault::Rejected { status: status.unwrap_or(400), code, message },
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
