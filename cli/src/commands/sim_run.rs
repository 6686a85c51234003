//! `o2c sim run`: the seeded simulation of the flow, its report and the command that
//! replays it.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Result;
use o2c_embedded::simulation::{SimulationConfig, SimulationReport};

/// Runs the simulation and prints its report; exit 1 when an invariant broke.
pub async fn run(config: SimulationConfig, db: Option<PathBuf>, json: bool) -> Result<ExitCode> {
    let tmp = tempfile::tempdir()?;
    let path = match db {
        Some(p) if p.exists() => usage!("{} exists: a simulation starts from a new database", p.display()),
        Some(p) => p,
        None => tmp.path().join("sim.db"),
    };
    let bar = crate::progress::spinner(&format!("simulating {} engagements (seed {})", config.engagements, config.seed));
    let report = o2c_embedded::simulation::run(path, o2c_embedded::reference::northwind()?, config).await;
    bar.finish_and_clear();
    let report = report?;
    if json {
        outln!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        print(&report);
    }
    if report.passed() {
        return Ok(ExitCode::SUCCESS);
    }
    eprintln!("o2c: an invariant broke; reproduce with: {}", report.config.command());
    Ok(ExitCode::FAILURE)
}

fn print(r: &SimulationReport) {
    let c = &r.config;
    outln!(
        "o2c sim run: seed {}, {} engagements, {} inputs (duplicates ≤ {}{}, fault rate {}, crash rate {}{})",
        c.seed,
        c.engagements,
        r.inputs,
        c.duplicates,
        if c.reorder { ", reordered" } else { "" },
        c.fault_rate,
        c.crash_rate,
        c.planted_bug.map(|b| format!(", planted bug {}", b.as_str())).unwrap_or_default()
    );
    outln!(
        "  {} published · {} scheduler steps · {} batches ({} records done, {} retried) · {} faults · {} crashes · {} s virtual",
        r.published,
        r.steps,
        r.batches,
        r.succeeded,
        r.retried,
        r.faults,
        r.crashes,
        r.virtual_seconds
    );
    let o = &r.outcomes;
    outln!(
        "  engagements: {} active · {} rejected · {} with an open exception · {} unaccounted",
        o.active,
        o.rejected,
        o.exception,
        o.unaccounted
    );
    if let Some(b) = &r.billing {
        outln!(
            "  delivered: {} time entries · {} milestones · {} self-approvals sent (to be refused)",
            b.time_entries,
            b.milestones,
            b.self_approvals
        );
        outln!(
            "  billed: {} invoices ({} posted) · net {} · tax {} · {} payments ({} parked or refused): {} received = {} applied + {} unapplied",
            b.invoices,
            b.posted,
            b.net,
            b.tax,
            b.payments,
            b.payments_parked,
            b.received,
            b.applied,
            b.unapplied
        );
    }
    for i in &r.invariants {
        if i.holds {
            outln!("  ok    {} ({} checked)", i.name, i.checked);
        } else {
            outln!("  FAIL  {} ({} of {} checked)", i.name, i.violation_count, i.checked);
            for v in &i.violations {
                outln!("          {v}");
            }
        }
    }
    outln!("  replay: {}", c.command());
}
