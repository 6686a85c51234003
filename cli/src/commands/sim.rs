//! `o2c sim run|serve|fault|clear|calls|show`: the seeded simulation of the whole flow, and
//! the CRM / PSA / ERP simulators.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{Context, Result};
use clap::{Subcommand, ValueEnum};
use o2c_embedded::db::Db;
use o2c_embedded::sim::{Fault, Simulators, System};

use crate::{load_reference, open_existing};

/// Kinds of fault.
#[derive(Clone, Copy, ValueEnum)]
pub enum FaultKind {
    /// HTTP 5xx (`--status`).
    ServerError,
    /// The request times out before it lands.
    Timeout,
    /// The system commits, then the answer is lost.
    TimeoutAfterCommit,
    /// HTTP 429 with `Retry-After` (`--retry-after-ms`).
    RateLimited,
    /// A permanent 4xx (`--status`, `--code`, `--message`).
    Rejected,
    /// A slow answer (`--delay-ms`); the call then proceeds.
    Latency,
}

/// Defects `sim run --plant-bug` can plant (the simulation's self-test).
#[derive(Clone, Copy, ValueEnum)]
pub enum PlantBug {
    /// The runtime deletes a batch before the step runs (at-most-once delivery).
    AckBeforeProcessing,
}

/// Subcommands.
#[derive(Subcommand)]
pub enum Cmd {
    /// Deterministic simulation of the flow: seeded interleavings, duplicates, reordering,
    /// connector faults and crashes after side effects, then the invariants checked in every
    /// system. The same options replay the same run; exit 1 when an invariant breaks.
    Run {
        /// Seed of every random choice.
        #[arg(long, default_value_t = 1)]
        seed: u64,
        /// Engagements (one closed-won each; some CLM-gated, some invalid).
        #[arg(long, default_value_t = 100)]
        engagements: usize,
        /// Publish each input up to this many extra times.
        #[arg(long, default_value_t = 0)]
        duplicates: u32,
        /// Shuffle the inputs (across and within engagements).
        #[arg(long)]
        reorder: bool,
        /// Probability that a batch meets a connector fault (5xx, 429, timeouts, refusals).
        #[arg(long, default_value_t = 0.0)]
        fault_rate: f64,
        /// Probability that a batch arms a crash right after the next external commit.
        #[arg(long, default_value_t = 0.0)]
        crash_rate: f64,
        /// Plant a defect, to see the invariants catch it.
        #[arg(long, value_enum)]
        plant_bug: Option<PlantBug>,
        /// Customers the engagements are sold to, copies of the three reference customers
        /// (default: one per 25 engagements, at least 3; `3` concentrates the receivables).
        #[arg(long)]
        customers: Option<usize>,
        /// Stop after the sale (closed-won to active): no delivery, invoices or payments.
        #[arg(long)]
        no_billing: bool,
        /// Keep the run's database here (a new file; default: a temporary one).
        #[arg(long)]
        db: Option<PathBuf>,
        /// Print the report as JSON.
        #[arg(long)]
        json: bool,
    },
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
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// What each simulated system holds: projects, billing schedules, invoices, opportunities.
    Show {
        /// Database file.
        #[arg(long)]
        db: PathBuf,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
}

fn sims(db: &Path) -> Result<Simulators> {
    Ok(Simulators::new(open_existing(db)?, &o2c_embedded::reference::northwind()?))
}

/// Runs the command.
pub async fn run(cmd: Cmd) -> Result<ExitCode> {
    match cmd {
        Cmd::Run { seed, engagements, duplicates, reorder, fault_rate, crash_rate, plant_bug, customers, no_billing, db, json } => {
            for (name, rate) in [("--fault-rate", fault_rate), ("--crash-rate", crash_rate)] {
                if !(0.0..=1.0).contains(&rate) {
                    usage!("{name} {rate} is not a probability (0 to 1)");
                }
            }
            let config = o2c_embedded::simulation::SimulationConfig {
                seed,
                engagements,
                duplicates,
                reorder,
                fault_rate,
                crash_rate,
                planted_bug: plant_bug.map(|PlantBug::AckBeforeProcessing| o2c_embedded::simulation::PlantedBug::AckBeforeProcessing),
                billing: !no_billing,
                customers,
            };
            super::sim_run::run(config, db, json).await
        }
        Cmd::Serve { db, addr, reference } => {
            let sims = Simulators::new(Db::open(&db)?, &load_reference(reference.as_deref())?);
            let listener = tokio::net::TcpListener::bind(&addr).await.with_context(|| format!("cannot listen on {addr}"))?;
            let local = listener.local_addr()?;
            outln!("o2c sim serve: PSA http://{local}/psa  ERP http://{local}/erp  CRM http://{local}/crm (db {})", db.display());
            axum::serve(listener, o2c_embedded::sim_http::router(sims)).with_graceful_shutdown(super::serve::shutdown_signal()).await?;
            Ok(ExitCode::SUCCESS)
        }
        Cmd::Fault { db, system, operation, kind, times, status, code, message, retry_after_ms, delay_ms } => {
            let Some(system) = System::parse(&system) else { usage!("unknown system `{system}` (crm, psa, erp, tax)") };
            let fault = match kind {
                FaultKind::ServerError => Fault::ServerError { status: status.unwrap_or(503) },
                FaultKind::Timeout => Fault::Timeout,
                FaultKind::TimeoutAfterCommit => Fault::TimeoutAfterCommit,
                FaultKind::RateLimited => Fault::RateLimited { retry_after_ms },
                FaultKind::Rejected => Fault::Rejected { status: status.unwrap_or(400), code, message },
                FaultKind::Latency => Fault::Latency { ms: delay_ms },
            };
            sims(&db)?.inject(system, &operation, fault, times).await?;
            outln!("fault set on {} {operation}", system.as_str());
            Ok(ExitCode::SUCCESS)
        }
        Cmd::Clear { db } => {
            sims(&db)?.clear_faults().await?;
            outln!("faults cleared");
            Ok(ExitCode::SUCCESS)
        }
        Cmd::Calls { db, json } => {
            let calls = sims(&db)?.calls().await?;
            if json {
                let rows: Vec<serde_json::Value> = calls
                    .iter()
                    .map(|c| serde_json::json!({"system": c.system, "operation": c.operation, "key": c.key, "outcome": c.outcome}))
                    .collect();
                outln!("{}", serde_json::to_string_pretty(&rows)?);
                return Ok(ExitCode::SUCCESS);
            }
            for c in calls {
                outln!("{:<4} {:<24} {:<34} {}", c.system, c.operation, c.key, c.outcome);
            }
            Ok(ExitCode::SUCCESS)
        }
        Cmd::Show { db, json } => show(&sims(&db)?, json).await,
    }
}

async fn show(s: &Simulators, json: bool) -> Result<ExitCode> {
    let (psa, erp) = (s.projects(System::Psa).await?, s.projects(System::Erp).await?);
    let (schedules, invoices, opportunities) = (s.billing_schedules().await?, s.invoices().await?, s.opportunities().await?);
    if json {
        let schedules: Vec<_> =
            schedules.iter().map(|(id, p, sch)| serde_json::json!({"schedule_id": id, "erp_project_id": p, "schedule": sch})).collect();
        let v = serde_json::json!({"psa_projects": psa, "erp_projects": erp, "erp_billing_schedules": schedules,
            "erp_invoices": invoices, "crm_opportunities": opportunities});
        outln!("{}", serde_json::to_string_pretty(&v)?);
        return Ok(ExitCode::SUCCESS);
    }
    for p in psa.iter().chain(&erp) {
        outln!(
            "{:<4} project  {:<18} {:<30} {:<9} {} {} → {}, {} milestone(s)",
            p.system,
            p.project_id,
            p.external_key,
            p.status,
            p.spec.budget,
            p.spec.start_date,
            p.spec.end_date,
            p.spec.milestones.len()
        );
    }
    for (id, project, sch) in &schedules {
        outln!(
            "erp  schedule {id:<18} on {project:<25} fixed {} cap {}, {} item(s)",
            sch.fixed_total,
            sch.time_and_materials_cap,
            sch.items.len()
        );
    }
    for i in &invoices {
        outln!("erp  invoice  {:<18} {:<30} {} due {}", i.number, i.invoice_id, i.invoice.total, i.invoice.due_date);
    }
    for o in &opportunities {
        outln!(
            "crm  opp      {:<18} {:<9} {:<12} v{} {}",
            o.opportunity_id,
            o.sync_status,
            o.engagement_status,
            o.sync_version,
            o.last_error.as_deref().unwrap_or("")
        );
    }
    Ok(ExitCode::SUCCESS)
}
