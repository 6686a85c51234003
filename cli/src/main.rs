//! `o2c` — run and operate the opportunity-to-cash middleware.
//!
//! Two targets, one command set: `--target embedded` (default; a SQLite file given by
//! `--db`, no AWS, no Docker) and `--target aws` (the stage's DynamoDB tables, event bus
//! and queues, found by the names in `infra/template.yaml`; any `AWS_ENDPOINT_URL` works,
//! e.g. moto_server). Every command that reads an embedded database works while
//! `o2c serve` runs on it (SQLite WAL readers).

mod backend;
mod commands;
mod print;

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{Context, Result, bail};
use clap::{Args, Parser, Subcommand, ValueEnum};
use o2c_app::bus::{PutEventsEntry, entries_from_text};
use o2c_domain::reference::ReferenceData;
use o2c_embedded::db::Db;
use o2c_topology::Template;

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
    /// SAM template (default: the repository's `infra/template.yaml` found from the current
    /// directory, else the copy built into this binary).
    #[arg(long)]
    pub template: Option<PathBuf>,
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
    /// Tax engine system API base URL.
    #[arg(long, env = "TAX_BASE_URL")]
    pub tax_url: Option<String>,
}

#[derive(Subcommand)]
enum Cmd {
    /// Run the seed scenario end to end on a fresh temporary store and print every step.
    Demo(commands::demo::Args),
    /// Feed event files (EventBridge events, PutEvents entries/requests or SQS events;
    /// JSON or JSON Lines) into the embedded runtime and process until every queue is empty;
    /// without files (`o2c drain`), process what is already queued.
    #[command(alias = "drain")]
    Run(commands::run::Args),
    /// Resubmit recorded events by event id or correlation id (the archive, parked
    /// rejections, exception cases), keeping their correlation id, under a fresh key.
    Resubmit(commands::resubmit::Args),
    /// Embedded: serve `POST /v1/events` (PutEvents-shaped) and process in the background.
    /// AWS: run every function of the template locally against the stage's queues, with
    /// the event source mapping's semantics (the Docker-free way to run the chain on AWS).
    Serve(commands::serve::Args),
    /// Publish event files: to a running `o2c serve` (`--url`) or to the stage's bus (`--target aws`).
    Send(commands::send::Args),
    /// Show one engagement: state, external ids, WIP, invoices and its timeline.
    Status(commands::status::Args),
    /// Request an invoice run: one engagement, or every active one whose cycle is due.
    Bill(commands::bill::Args),
    /// Invoices: approve, reject, repost after an ERP refusal, list.
    Invoice {
        #[command(subcommand)]
        cmd: commands::invoice::Cmd,
    },
    /// Receivables: open invoices, payments and their applications, unapplied cash, ageing,
    /// overdue invoices and DSO per customer, legal entity and firm.
    Receivables(commands::receivables::Args),
    /// Revenue recognition: request a run for an accounting period, show an engagement's revenue.
    Revenue {
        #[command(subcommand)]
        cmd: commands::revenue::Cmd,
    },
    /// Compare what the CRM, PSA and ERP hold with o2c (one engagement or every active one);
    /// report every difference with both sides' values (exit 4 on a mismatch).
    Reconcile(commands::reconcile::Args),
    /// Analytics facts (posted invoices, payments, revenue) as JSON Lines for a warehouse load.
    Export(commands::export::Args),
    /// List engagements (newest first).
    Engagements(commands::engagements::Args),
    /// The exception queue: list, show, assign, comment, retry, resolve, waive.
    Exceptions {
        #[command(subcommand)]
        cmd: commands::exceptions::Cmd,
    },
    /// Rejected messages, parked with every reason.
    Rejections(commands::rejections::Args),
    /// Dead-letter queues: inspect and redrive.
    Dlq {
        #[command(subcommand)]
        cmd: commands::dlq::Cmd,
    },
    /// Replay archived events of a time window into the bus (EventBridge archive replay).
    Replay(commands::replay::Args),
    /// Reference (master) data.
    Reference {
        #[command(subcommand)]
        cmd: commands::reference::Cmd,
    },
    /// AWS without CloudFormation: create the template's tables, bus, archive, queues and
    /// rules for a stage (an emulator or a sandbox account) and load reference data.
    Bootstrap(commands::bootstrap::Args),
    /// Control the CRM / PSA / ERP simulators.
    Sim {
        #[command(subcommand)]
        cmd: commands::sim::Cmd,
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
    o2c_domain::ids::EngagementId::parse_operator_input(arg).into()
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

/// The template `--template` names, else the repository's, else the built-in copy.
pub fn template(explicit: Option<&Path>) -> Result<Template> {
    let cwd = std::env::current_dir().unwrap_or_default();
    Template::locate(explicit, &cwd).map_err(anyhow::Error::msg)
}

async fn dispatch(cmd: Cmd) -> Result<ExitCode> {
    match cmd {
        Cmd::Demo(a) => commands::demo::run(a).await,
        Cmd::Run(a) => commands::run::run(a).await,
        Cmd::Resubmit(a) => commands::resubmit::run(a).await,
        Cmd::Serve(a) => commands::serve::run(a).await,
        Cmd::Send(a) => commands::send::run(a).await,
        Cmd::Status(a) => commands::status::run(a).await,
        Cmd::Bill(a) => commands::bill::run(a).await,
        Cmd::Invoice { cmd } => commands::invoice::run(cmd).await,
        Cmd::Receivables(a) => commands::receivables::run(a).await,
        Cmd::Revenue { cmd } => commands::revenue::run(cmd).await,
        Cmd::Export(a) => commands::export::run(a).await,
        Cmd::Reconcile(a) => commands::reconcile::run(a).await,
        Cmd::Engagements(a) => commands::engagements::run(a).await,
        Cmd::Exceptions { cmd } => commands::exceptions::run(cmd).await,
        Cmd::Rejections(a) => commands::rejections::run(a).await,
        Cmd::Dlq { cmd } => commands::dlq::run(cmd).await,
        Cmd::Replay(a) => commands::replay::run(a).await,
        Cmd::Reference { cmd } => commands::reference::run(cmd).await,
        Cmd::Bootstrap(a) => commands::bootstrap::run(a).await,
        Cmd::Sim { cmd } => commands::sim::run(cmd).await,
    }
}
