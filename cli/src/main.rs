//! `o2c` — run and operate the opportunity-to-cash middleware.
//!
//! Two targets, one command set: `--target embedded` (default; a SQLite file given by
//! `--db`, no AWS, no Docker) and `--target aws` (the stage's DynamoDB tables, event bus
//! and queues, found by the names in `infra/template.yaml`; any `AWS_ENDPOINT_URL` works,
//! e.g. moto_server). Every command that reads an embedded database works while
//! `o2c serve` runs on it (SQLite WAL readers).

#[macro_use]
mod exit;
mod backend;
mod commands;
#[cfg(test)]
mod contract;
mod print;
mod progress;

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{Context, Result, bail};
use clap::{Args, CommandFactory, FromArgMatches, Parser, Subcommand, ValueEnum};
use o2c_app::bus::{PutEventsEntry, entries_from_text};
use o2c_domain::reference::ReferenceData;
use o2c_embedded::db::Db;
use o2c_topology::Template;

/// The embedded runtime allocates per message (JSON bodies, rows, envelopes): mimalloc took
/// 5–10 % off its CPU per engagement against glibc's malloc (BENCHMARKS.md). The deployed
/// Lambdas keep the system allocator (their size budget, one event at a time); so
/// `o2c serve --target aws`, which runs the same handlers in this process, allocates
/// differently from them.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Parser)]
#[command(
    name = "o2c",
    version,
    about = "Opportunity-to-cash middleware for professional-services firms",
    after_help = exit::HELP
)]
struct Cli {
    /// Log format on stderr.
    #[arg(long, global = true, value_enum, default_value_t = LogFormat::Text)]
    log_format: LogFormat,
    /// Log filter (tracing EnvFilter syntax), e.g. `info` or `o2c_app=debug`.
    #[arg(long, global = true, env = "RUST_LOG", default_value = "warn")]
    log: String,
    /// Worker threads of the async runtime (1: async tasks on the main thread).
    ///
    /// 1 is a current-thread runtime (fsyncs and the SQLite flusher keep their own threads).
    /// The embedded runtime's calls serialise on one SQLite connection: with one thread,
    /// `o2c serve` under 8 clients activated 35–55 % more engagements a second for about
    /// 40 % less CPU, with shorter median acknowledgements, than with two (BENCHMARKS.md).
    #[arg(long, global = true, env = "O2C_THREADS", default_value_t = 1, value_parser = clap::value_parser!(u16).range(1..=256))]
    threads: u16,
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
    pub(crate) fn db(&self) -> Result<&Path> {
        match self.db.as_deref() {
            Some(db) => Ok(db),
            None => usage!("--db PATH is required with --target embedded"),
        }
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
    #[command(after_help = "Examples:\n  o2c demo\n  o2c demo --seed 7 --db demo.db")]
    Demo(commands::demo::Args),
    /// Feed event files (EventBridge events, PutEvents entries/requests or SQS events;
    /// JSON or JSON Lines) into the embedded runtime and process until every queue is empty —
    /// events that carry a time in the order they occurred, an instant at a time; without
    /// files (`o2c drain`), process what is already queued.
    #[command(alias = "drain")]
    #[command(after_help = "Examples:\n  o2c run --db o2c.db events/samples/*.json\n  o2c drain --db o2c.db")]
    Run(commands::run::Args),
    /// Resubmit recorded events by event id or correlation id (the archive, parked
    /// rejections, exception cases), keeping their correlation id, under a fresh key.
    #[command(
        after_help = "Examples:\n  o2c resubmit --db o2c.db --event-id EVENT_ID --dry-run\n  o2c resubmit --db o2c.db --correlation-id CORRELATION_ID"
    )]
    Resubmit(commands::resubmit::Args),
    /// Embedded: serve `POST /v1/events` (PutEvents-shaped) and process in the background.
    /// AWS: run every function of the template locally against the stage's queues, with
    /// the event source mapping's semantics (the Docker-free way to run the chain on AWS).
    #[command(after_help = "Examples:\n  o2c serve --db o2c.db --addr 127.0.0.1:8080\n  o2c serve --target aws --stage dev")]
    Serve(commands::serve::Args),
    /// Publish event files: to a running `o2c serve` (`--url`) or to the stage's bus (`--target aws`).
    #[command(
        after_help = "Examples:\n  o2c send --url http://127.0.0.1:8080 events/samples/OpportunityClosedWon.v1.json\n  o2c send --target aws --stage dev events/samples/OpportunityClosedWon.v1.json"
    )]
    Send(commands::send::Args),
    /// Show one engagement: state, external ids, WIP, invoices and its timeline.
    #[command(after_help = "Examples:\n  o2c status --db o2c.db 0068d00000GLBX01\n  o2c status --db o2c.db ENG-0068d00000GLBX01 --json")]
    Status(commands::status::Args),
    /// Request an invoice run: one engagement, or every active one whose cycle is due.
    #[command(
        after_help = "Examples:\n  o2c bill --db o2c.db --as-of 2026-12-31 --engagement 0068d00000GLBX01 --as U-BILL-01\n  o2c bill --db o2c.db --as-of 2026-12-31 --scheduled"
    )]
    Bill(commands::bill::Args),
    /// Invoices: approve, reject, repost after an ERP refusal, list.
    #[command(
        after_help = "Examples:\n  o2c invoice list --db o2c.db 0068d00000GLBX01\n  o2c invoice approve --db o2c.db INV-ENG-0068d00000GLBX01-1 --as U-FIN-DE-01\n  o2c invoice reject --db o2c.db INV-ENG-0068d00000GLBX01-1 --as U-FIN-DE-01 --reason \"wrong rate\"\n  o2c invoice repost --db o2c.db INV-ENG-0068d00000GLBX01-1"
    )]
    Invoice {
        #[command(subcommand)]
        cmd: commands::invoice::Cmd,
    },
    /// Receivables: open invoices, payments and their applications, unapplied cash, ageing,
    /// overdue invoices and DSO per customer, legal entity and firm.
    #[command(
        after_help = "Examples:\n  o2c receivables --db o2c.db --as-of 2026-12-31\n  o2c receivables --db o2c.db --customer CUST-1001 --json"
    )]
    Receivables(commands::receivables::Args),
    /// Revenue recognition: request a run for an accounting period, show an engagement's revenue.
    #[command(
        after_help = "Examples:\n  o2c revenue run --db o2c.db --period 2026-11 --as-of 2026-12-01\n  o2c revenue show --db o2c.db 0068d00000GLBX01 --json"
    )]
    Revenue {
        #[command(subcommand)]
        cmd: commands::revenue::Cmd,
    },
    /// Compare what the CRM, PSA and ERP hold with o2c (one engagement or every active one);
    /// report every difference with both sides' values (exit 4 on a mismatch).
    #[command(
        after_help = "Examples:\n  o2c reconcile --db o2c.db\n  o2c reconcile --db o2c.db --engagement 0068d00000GLBX01 --json\n  o2c reconcile --db o2c.db --out report/"
    )]
    Reconcile(commands::reconcile::Args),
    /// Analytics facts (posted invoices, payments, revenue) as JSON Lines for a warehouse load.
    #[command(after_help = "Examples:\n  o2c export --db o2c.db --since 2026-11-01T00:00:00Z --out facts.jsonl")]
    Export(commands::export::Args),
    /// List engagements (newest first).
    #[command(
        after_help = "Examples:\n  o2c engagements --db o2c.db\n  o2c engagements --db o2c.db --status active --json\n  o2c engagements --target aws --stage dev --exceptions"
    )]
    Engagements(commands::engagements::Args),
    /// The exception queue: list, show, assign, comment, retry, resolve, waive.
    #[command(
        after_help = "Examples:\n  o2c exceptions list --db o2c.db --kind provisioning_failed\n  o2c exceptions show --db o2c.db EXC-… --json\n  o2c exceptions assign --db o2c.db EXC-… --to U-OPS-01 --as U-OPS-02\n  o2c exceptions resolve --db o2c.db EXC-… --as U-FIN-DE-02 --reason \"fixed in the ERP\"\n  o2c exceptions comment --db o2c.db EXC-… --as U-OPS-01 --text \"ERP period reopened\"\n  o2c exceptions retry --db o2c.db EXC-… --as U-OPS-01\n  o2c exceptions waive --db o2c.db EXC-… --as U-FIN-DE-02 --reason \"written off\""
    )]
    Exceptions {
        #[command(subcommand)]
        cmd: commands::exceptions::Cmd,
    },
    /// Rejected messages, parked with every reason.
    #[command(after_help = "Examples:\n  o2c rejections --db o2c.db\n  o2c rejections --db o2c.db --json")]
    Rejections(commands::rejections::Args),
    /// Accepted events that matched no rule: counted and listed (archived, delivered nowhere).
    #[command(after_help = "Examples:\n  o2c unrouted --db o2c.db\n  o2c unrouted --db o2c.db --limit 10 --json")]
    Unrouted(commands::unrouted::Args),
    /// What a vendor payload becomes under a mapping (`mappings/<vendor>/<object>.yaml`):
    /// PutEvents entries as JSON Lines, or every failing path (exit 3); nothing is processed.
    #[command(
        after_help = "Examples:\n  o2c map --list\n  o2c map --mapping salesforce/opportunity mappings/salesforce/opportunity.example.json\n  o2c map --mapping stripe/payment_intent.succeeded event.json"
    )]
    Map(commands::map::Args),
    /// API keys of `o2c serve` — one per source system (what it may publish) or operator —
    /// and the requests it refused.
    #[command(
        after_help = "Examples:\n  o2c sources add crm --db o2c.db --source o2c.crm --detail-type OpportunityClosedWon --key-file crm.key\n  o2c sources add alice --db o2c.db --operator\n  o2c sources list --db o2c.db\n  o2c sources revoke crm --db o2c.db\n  o2c sources refusals --db o2c.db"
    )]
    Sources {
        #[command(subcommand)]
        cmd: commands::sources::Cmd,
    },
    /// Dead-letter queues: inspect and redrive.
    #[command(
        after_help = "Examples:\n  o2c dlq list --db o2c.db\n  o2c dlq list --db o2c.db ProvisionDLQ --json\n  o2c dlq redrive --db o2c.db ProvisionDLQ"
    )]
    Dlq {
        #[command(subcommand)]
        cmd: commands::dlq::Cmd,
    },
    /// Replay archived events of a time window into the bus (EventBridge archive replay).
    #[command(after_help = "Examples:\n  o2c replay --target aws --stage dev --from 2026-12-01T00:00:00Z --to 2026-12-02T00:00:00Z")]
    Replay(commands::replay::Args),
    /// Reference (master) data.
    #[command(
        after_help = "Examples:\n  o2c reference check --reference shared/reference/northwind.json\n  o2c reference load --target aws --stage dev --reference shared/reference/northwind.json"
    )]
    Reference {
        #[command(subcommand)]
        cmd: commands::reference::Cmd,
    },
    /// AWS without CloudFormation: create the template's tables, bus, archive, queues and
    /// rules for a stage (an emulator or a sandbox account) and load reference data.
    #[command(
        after_help = "Examples:\n  AWS_ENDPOINT_URL=http://127.0.0.1:5000 o2c bootstrap --stage dev\n  o2c bootstrap --stage sandbox --reference shared/reference/northwind.json"
    )]
    Bootstrap(commands::bootstrap::Args),
    /// EventBridge rules: test a pattern against an event like `aws events test-event-pattern`
    /// (the local matcher gives EventBridge's answer), list the template's rules.
    #[command(
        after_help = "Examples:\n  o2c rules test --pattern '{\"source\":[{\"prefix\":\"o2c.\"}]}' --event events/samples/OpportunityClosedWon.v1.json\n  o2c rules test --batch cases.jsonl\n  o2c rules list --json"
    )]
    Rules {
        #[command(subcommand)]
        cmd: commands::rules::Cmd,
    },
    /// Simulate the whole flow from a seed; control the CRM / PSA / ERP simulators.
    #[command(
        after_help = "Examples:\n  o2c sim run --seed 7 --engagements 1000 --duplicates 2 --reorder --fault-rate 0.2 --crash-rate 0.05\n  o2c sim fault --db o2c.db --system erp --operation create_project --kind server-error --times 3\n  o2c sim serve --db sims.db --addr 127.0.0.1:4020\n  o2c sim clear --db o2c.db\n  o2c sim calls --db o2c.db --json\n  o2c sim show --db o2c.db --json"
    )]
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

/// The command line: every command's `--help`, at every level, ends with its examples and
/// the exit codes (a subcommand shows its group's examples that run it).
fn command() -> clap::Command {
    fn decorate(c: clap::Command, inherited: &str, path: &str) -> clap::Command {
        let examples = c.get_after_help().map(|h| h.to_string()).unwrap_or_else(|| {
            let prefix = format!("o2c {path} ");
            let lines: Vec<&str> = inherited.lines().filter(|l| l.trim_start().starts_with(&prefix)).collect();
            if lines.is_empty() { String::new() } else { format!("Examples:\n{}", lines.join("\n")) }
        });
        let (mine, path) = (examples.clone(), path.to_owned());
        let c = c.mut_subcommands(move |s| {
            let p = format!("{path} {}", s.get_name());
            decorate(s, &mine, &p)
        });
        c.after_help(if examples.is_empty() { exit::HELP.to_owned() } else { format!("{examples}\n\n{}", exit::HELP) })
    }
    Cli::command().mut_subcommands(|c| {
        let name = c.get_name().to_owned();
        decorate(c, "", &name)
    })
}

fn main() -> ExitCode {
    let cli = match Cli::from_arg_matches(&command().get_matches()) {
        Ok(cli) => cli,
        Err(e) => e.exit(),
    };
    init_tracing(cli.log_format, &cli.log);
    let mut builder = if cli.threads == 1 {
        tokio::runtime::Builder::new_current_thread()
    } else {
        let mut b = tokio::runtime::Builder::new_multi_thread();
        b.worker_threads(usize::from(cli.threads));
        b
    };
    let rt = match builder.enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("o2c: cannot start the async runtime: {e}");
            return ExitCode::from(70);
        }
    };
    match rt.block_on(dispatch(cli.cmd)) {
        Ok(code) => code,
        Err(e) => {
            let (code, message) = exit::report(&e);
            eprintln!("{message}");
            code
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
pub(crate) fn open_existing(db: &Path) -> Result<Db> {
    if !db.exists() {
        bail!("no database at {} (run `o2c run` or `o2c serve` first)", db.display());
    }
    Ok(Db::open(db)?)
}

/// Fails (exit 1) when the engagement a command was asked about does not exist, rather
/// than answering "nothing" for a mistyped id.
pub async fn require_engagement<S: o2c_app::ports::EngagementStore>(store: &S, id: &str, label: &str) -> Result<()> {
    if store.load(id).await?.is_none() {
        bail!("no engagement {id} in {label}");
    }
    Ok(())
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
        Cmd::Unrouted(a) => commands::unrouted::run(a).await,
        Cmd::Dlq { cmd } => commands::dlq::run(cmd).await,
        Cmd::Sources { cmd } => commands::sources::run(cmd).await,
        Cmd::Map(a) => commands::map::run(a).await,
        Cmd::Replay(a) => commands::replay::run(a).await,
        Cmd::Reference { cmd } => commands::reference::run(cmd).await,
        Cmd::Bootstrap(a) => commands::bootstrap::run(a).await,
        Cmd::Sim { cmd } => commands::sim::run(cmd).await,
        Cmd::Rules { cmd } => commands::rules::run(cmd).await,
    }
}
