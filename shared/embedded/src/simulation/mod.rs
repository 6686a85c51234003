//! Deterministic simulation of the flow (`o2c sim run`): one process, a virtual clock and
//! seeded ids, the embedded runtime and the simulators driven by one seeded scheduler.
//!
//! The run goes through the firm's year: the sale (every closed-won, and the CLM approvals),
//! then — unless `billing` is off — the [`billing`] phases: staffing, two rounds of approved
//! time, milestones and corrections, two invoice runs with their approvals (some of them
//! self-approvals that segregation of duties must refuse), and the payments of every posted
//! invoice. Each phase's inputs are built from what the systems hold when it starts, as the
//! real senders would, and the virtual clock moves to the phase's business day.
//!
//! Within a phase, each scheduler step picks at random among what could happen next —
//! publish the next input, run one batch of a function whose queue has visible messages (a
//! random batch size up to the function's `BatchSize`), move one batch through a pipe — so
//! steps of different engagements and of one engagement interleave differently for every
//! seed. On top:
//! - `duplicates`: each input is published 1 to 1 + `duplicates` times (a replay has the same
//!   event id and idempotency key);
//! - `reorder`: a phase's inputs are shuffled across engagements and within one (a CLM
//!   approval may come before its closed-won, a correction before the entry it corrects);
//! - `fault_rate`: before a batch, a one-shot connector fault on the PSA, ERP or CRM — 5xx,
//!   429 with `Retry-After`, a timeout before or after the system commits, or (one in ten) a
//!   permanent refusal — or, one time in twenty, an outage of 5 to 40 calls;
//! - `crash_rate`: before a batch, the next call to one of them commits and the process dies
//!   before seeing the answer; the simulation drops the runtime (in-flight messages and
//!   reservations as they were) and opens it again on the same file, which recovers.
//!
//! When nothing is visible the clock jumps to the next redelivery; when nothing is left the
//! next phase starts, and after the last the [`invariants`] and [`ledger_checks`] are
//! checked. The same seed and options replay the same run: a failing seed prints the command
//! that reproduces it.

pub mod billing;
pub mod inputs;
pub mod invariants;
pub mod ledger_checks;

use std::collections::VecDeque;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use o2c_app::bus::PutEventsEntry;
use o2c_app::ports::{Clock, IdGenerator, SeededIds, SimClock};
use o2c_app::{O2cError, Step};
use o2c_domain::reference::ReferenceData;
use serde::Serialize;

use crate::runtime::{RunReport, Runtime, RuntimeOptions};
use crate::sim::{Fault, System};

pub use invariants::Invariant;

/// Virtual time a simulation starts at.
pub const START: &str = "2026-11-20T09:00:00Z";

/// A defect planted on purpose so a test can show that the invariants catch it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum PlantedBug {
    /// The runtime deletes a batch's messages before the step runs (at-most-once delivery):
    /// a crash in between loses the input.
    AckBeforeProcessing,
}

impl PlantedBug {
    /// Its name on the command line.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::AckBeforeProcessing => "ack-before-processing",
        }
    }
}

/// What to simulate.
#[derive(Debug, Clone, Serialize)]
pub struct SimulationConfig {
    /// Seed of every random choice.
    pub seed: u64,
    /// Engagements (one closed-won each).
    pub engagements: usize,
    /// Extra copies of each input, at most.
    pub duplicates: u32,
    /// Shuffle the inputs.
    pub reorder: bool,
    /// Probability that a batch meets an injected connector fault.
    pub fault_rate: f64,
    /// Probability that a batch arms a crash after the next external commit.
    pub crash_rate: f64,
    /// A defect to plant (the simulation's self-test).
    pub planted_bug: Option<PlantedBug>,
    /// After the sale, run delivery, two invoice runs, approvals and payments.
    pub billing: bool,
    /// Customers the engagements are sold to (`None`: one per
    /// [`ENGAGEMENTS_PER_CUSTOMER`](inputs::ENGAGEMENTS_PER_CUSTOMER), at least three).
    pub customers: Option<usize>,
}

impl SimulationConfig {
    /// How many customers the engagements are sold to.
    pub fn customer_count(&self) -> usize {
        self.customers.unwrap_or(self.engagements / inputs::ENGAGEMENTS_PER_CUSTOMER).max(inputs::TEMPLATES.len())
    }

    /// The `o2c` command line that replays this run.
    pub fn command(&self) -> String {
        let mut c = format!("o2c sim run --seed {} --engagements {}", self.seed, self.engagements);
        if self.duplicates > 0 {
            c.push_str(&format!(" --duplicates {}", self.duplicates));
        }
        if self.reorder {
            c.push_str(" --reorder");
        }
        if self.fault_rate > 0.0 {
            c.push_str(&format!(" --fault-rate {}", self.fault_rate));
        }
        if self.crash_rate > 0.0 {
            c.push_str(&format!(" --crash-rate {}", self.crash_rate));
        }
        if let Some(n) = self.customers {
            c.push_str(&format!(" --customers {n}"));
        }
        if !self.billing {
            c.push_str(" --no-billing");
        }
        if let Some(b) = self.planted_bug {
            c.push_str(&format!(" --plant-bug {}", b.as_str()));
        }
        c
    }
}

/// What a simulation did and found.
#[derive(Debug, Clone, Serialize)]
pub struct SimulationReport {
    /// The run.
    pub config: SimulationConfig,
    /// Inputs generated (before duplication).
    pub inputs: usize,
    /// PutEvents calls made (duplicates included).
    pub published: u64,
    /// Scheduler steps.
    pub steps: u64,
    /// Function batches run.
    pub batches: u64,
    /// Records the handlers completed (parked rejections included).
    pub succeeded: u64,
    /// Records reported for retry.
    pub retried: u64,
    /// Connector faults injected.
    pub faults: u64,
    /// Process crashes (and restarts).
    pub crashes: u64,
    /// Virtual time the run covered.
    pub virtual_seconds: i64,
    /// How the engagements ended.
    pub outcomes: invariants::Outcomes,
    /// What was billed and paid (with `billing`).
    pub billing: Option<ledger_checks::Billed>,
    /// Every invariant, held or not.
    pub invariants: Vec<Invariant>,
}

impl SimulationReport {
    /// True when every invariant held.
    pub fn passed(&self) -> bool {
        self.invariants.iter().all(|i| i.holds)
    }
}

enum Choice {
    Publish,
    Function(usize),
    Pipe(usize),
}

/// The scheduler's guard against a livelock: far more steps than any run needs.
const STEPS_PER_INPUT: u64 = 400;

async fn open(
    db: &Path,
    reference: &ReferenceData,
    clock: &Arc<SimClock>,
    ids: &Arc<dyn IdGenerator>,
    cfg: &SimulationConfig,
    topology: Option<&Arc<o2c_topology::topology::Topology>>,
) -> Result<Runtime, O2cError> {
    // The crashes simulated are process crashes after the last commit: what was written
    // survives them without an fsync (the page cache outlives the process), so the run
    // spends none, and dropping the crashed runtime commits its open batch.
    let options = RuntimeOptions { planted_bug: cfg.planted_bug, durability: crate::db::Durability::Batched, ..RuntimeOptions::default() };
    let mut builder = Runtime::builder(db, reference.clone()).options(options).resume(clock.clone(), ids.clone());
    // A restart reuses the first process's parse of the template (the same text): parsing
    // it again for each of a run's hundreds of crashes was a fifth of a debug run's CPU.
    if let Some(t) = topology {
        builder = builder.topology(t.clone());
    }
    builder.open().await
}

/// A second connection to the run's file, open from the first process to the end: the
/// file is held open as by another process that outlives the crashes. A crashed runtime's
/// connection is then never the file's last, so its close neither checkpoints the WAL into
/// the file nor deletes it — as a killed process would not — and the next runtime reads
/// the WAL's index as it was. Without it, each of a run's hundreds of crashes closed the
/// last connection, which checkpointed up to 10,000 WAL pages: 13 % of a release run's CPU
/// (BENCHMARKS.md). The runs therefore do not exercise SQLite's WAL recovery on open, which
/// a killed single process needs (the runtime's kill tests do).
struct Keeper {
    connection: rusqlite::Connection,
}

impl Keeper {
    fn open(db: &Path) -> Result<Self, O2cError> {
        let c = rusqlite::Connection::open(db).map_err(crate::db::db_err)?;
        c.busy_timeout(Duration::from_secs(10)).map_err(crate::db::db_err)?;
        // One read makes the connection a reader of the WAL file: from then on it holds the
        // shared lock on the file that keeps another connection's close from checkpointing.
        c.query_row("SELECT COUNT(*) FROM sqlite_master", [], |r| r.get::<_, i64>(0)).map_err(crate::db::db_err)?;
        Ok(Self { connection: c })
    }

    /// After the last runtime is gone: everything into the file and the WAL emptied, so the
    /// file a run leaves (`--db`) is whole on its own.
    fn close(self) -> Result<(), O2cError> {
        self.connection.query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |_| Ok(())).map_err(crate::db::db_err)?;
        self.connection.close().map_err(|(_, e)| crate::db::db_err(e))
    }
}

/// The scheduler over one runtime: what it needs across phases and crashes.
struct Driver {
    db: PathBuf,
    reference: ReferenceData,
    clock: Arc<SimClock>,
    ids: Arc<dyn IdGenerator>,
    cfg: SimulationConfig,
    rng: fastrand::Rng,
    /// None only while a crashed process is replaced.
    rt: Option<Runtime>,
    /// The file held open for the whole run, as by another process.
    keeper: Keeper,
    topology: Arc<o2c_topology::topology::Topology>,
    /// The queues of every function and pipe, asked before each step.
    queues: crate::bus::QueueProbe,
    published: u64,
    steps: u64,
    faults: u64,
    crashes: u64,
    inputs: usize,
    totals: RunReport,
}

impl Driver {
    fn rt(&self) -> Result<&Runtime, O2cError> {
        self.rt.as_ref().ok_or_else(|| O2cError::Bug("the simulated process is down".into()))
    }

    /// Publishes `entries` (with their duplicates, shuffled with `reorder`) while running
    /// whatever is visible, until nothing is left to receive.
    async fn settle(&mut self, entries: &[PutEventsEntry]) -> Result<(), O2cError> {
        let mut pending = schedule(&mut self.rng, entries, &self.cfg);
        self.inputs += pending.len();
        let limit = self.steps + STEPS_PER_INPUT * (pending.len() as u64 + 10);
        let nf = self.topology.functions.len();
        loop {
            let visible = self.rt()?.bus().visible_queues(&self.queues).await?;
            let mut choices: Vec<Choice> = Vec::new();
            if !pending.is_empty() {
                choices.push(Choice::Publish);
            }
            choices.extend(
                visible
                    .iter()
                    .enumerate()
                    .filter(|(_, v)| **v)
                    .map(|(i, _)| if i < nf { Choice::Function(i) } else { Choice::Pipe(i - nf) }),
            );
            if choices.is_empty() {
                // Nothing can be received now: wait for the next redelivery (a message in
                // backoff, or the head of a FIFO group holding visible messages back), or stop.
                match self.rt()?.bus().next_visible_after_now(&self.queues).await? {
                    Some(due) => {
                        self.clock.advance_to(chrono::DateTime::from_timestamp_millis(due).unwrap_or_default());
                        continue;
                    }
                    None if self.rt()?.has_pending().await? => {
                        return Err(O2cError::Bug(format!(
                            "simulation stalled: messages are queued but none can be received: {}",
                            self.cfg.command()
                        )));
                    }
                    None => return Ok(()),
                }
            }
            self.steps += 1;
            if self.steps > limit {
                return Err(O2cError::Bug(format!("simulation did not settle within {limit} steps (a livelock): {}", self.cfg.command())));
            }
            match choices[self.rng.usize(..choices.len())] {
                Choice::Publish => {
                    let Some(entry) = pending.pop_front() else { continue };
                    self.rt()?.put_events(vec![entry]).await?;
                    self.published += 1;
                }
                Choice::Pipe(i) => self.pipe(i).await?,
                Choice::Function(i) => self.function(i).await?,
            }
        }
    }

    async fn pipe(&mut self, i: usize) -> Result<(), O2cError> {
        let p = &self.topology.pipes[i];
        let rt = self.rt.as_ref().ok_or_else(|| O2cError::Bug("the simulated process is down".into()))?;
        let msgs = rt.bus().receive(&p.source, self.rng.usize(1..=p.batch_size.max(1) as usize), rt.visibility(&p.source)).await?;
        if !msgs.is_empty() {
            rt.pipe_batch(p, msgs, &mut self.totals).await;
        }
        Ok(())
    }

    async fn function(&mut self, i: usize) -> Result<(), O2cError> {
        let topology = self.topology.clone();
        let f = &topology.functions[i];
        let Some(step) = Step::from_name(&f.binary) else { return Ok(()) };
        let size = self.rng.usize(1..=f.batch_size.max(1) as usize);
        let rt = self.rt.as_ref().ok_or_else(|| O2cError::Bug("the simulated process is down".into()))?;
        let received = rt.bus().receive_batch(&f.queue, size, rt.visibility(&f.queue)).await?;
        for d in received.dead_lettered {
            rt.dead_lettered(step, d).await;
        }
        if received.messages.is_empty() {
            return Ok(());
        }
        let rng = &mut self.rng;
        if rng.f64() < self.cfg.fault_rate {
            self.faults += 1;
            // One fault in twenty is an outage: 5xx for the next 5 to 40 calls, long enough
            // for some messages to spend their retry budget and dead-letter.
            let (fault, times) =
                if rng.u8(0..20) == 0 { (Fault::ServerError { status: 503 }, rng.u32(5..=40)) } else { (pick_fault(rng), 1) };
            rt.sims().inject(pick_system(rng), "*", fault, Some(times)).await?;
        }
        if rng.f64() < self.cfg.crash_rate {
            rt.sims().inject(pick_system(rng), "*", Fault::CrashAfterCommit, Some(1)).await?;
        }
        let crash = rt.sims().crash_signal();
        let crashed = tokio::select! {
            biased;
            _ = crash.notified() => true,
            _ = rt.function_batch(f, step, received.messages, &mut self.totals) => false,
        };
        if crashed {
            // The process dies with the batch in flight; a new one opens the file.
            self.crashes += 1;
            self.rt = None;
            self.rt = Some(open(&self.db, &self.reference, &self.clock, &self.ids, &self.cfg, Some(&self.topology)).await?);
        }
        Ok(())
    }

    /// Moves the virtual clock forward to `day` (never back).
    fn move_to(&self, day: chrono::NaiveDate) {
        let at = day.and_hms_opt(8, 0, 0).unwrap_or_default().and_utc();
        if at > self.clock.now() {
            self.clock.advance_to(at);
        }
    }
}

/// Runs the simulation on a new database at `db` and checks the invariants.
pub async fn run(db: PathBuf, reference: ReferenceData, cfg: SimulationConfig) -> Result<SimulationReport, O2cError> {
    let start = START.parse().map_err(|e| O2cError::Bug(format!("{START}: {e}")))?;
    let clock = Arc::new(SimClock::starting_at(start));
    let ids: Arc<dyn IdGenerator> = Arc::new(SeededIds::new(cfg.seed));
    let mut rng = fastrand::Rng::with_seed(cfg.seed);
    let (reference, customers) = inputs::customers(reference, cfg.customer_count())?;
    let generated = inputs::generate(&mut rng, cfg.seed, cfg.engagements, &customers);
    let rt = open(&db, &reference, &clock, &ids, &cfg, None).await?;
    let keeper = Keeper::open(&db)?;
    let topology = rt.shared_topology();
    let queues = rt.bus().probe(topology.consumed_queues());
    let mut d = Driver {
        db,
        reference,
        clock,
        ids,
        cfg,
        rng,
        rt: Some(rt),
        keeper,
        topology,
        queues,
        published: 0,
        steps: 0,
        faults: 0,
        crashes: 0,
        inputs: 0,
        totals: RunReport::default(),
    };
    // The sale: every closed-won (and CLM approval).
    let sale: Vec<PutEventsEntry> = generated.iter().flat_map(|g| g.entries.iter().cloned()).collect();
    d.settle(&sale).await?;
    // After it, phase by phase: each phase's inputs come from what the systems hold now.
    let mut delivered = billing::Delivered::default();
    if d.cfg.billing {
        for phase in billing::PHASES {
            d.move_to(phase.day());
            let rt = d.rt.as_ref().ok_or_else(|| O2cError::Bug("the simulated process is down".into()))?;
            let entries = billing::inputs(phase, rt, &generated, &mut d.rng, d.cfg.seed, &mut delivered).await?;
            d.settle(&entries).await?;
        }
    }
    // A crash armed but never reached must not outlive the run in the file (`--db`).
    d.rt()?.sims().clear_faults().await?;
    let (outcomes, mut invariants) = invariants::check(d.rt()?, &generated).await?;
    let money = if d.cfg.billing {
        Some(ledger_checks::check(d.rt()?, &d.reference, &generated, &delivered, &mut invariants).await?)
    } else {
        None
    };
    // The last runtime's connection closes as its handle goes (committing its batch), then
    // the keeper checkpoints what it left and closes the file.
    drop(d.rt.take());
    d.keeper.close()?;
    Ok(SimulationReport {
        inputs: d.inputs,
        published: d.published,
        steps: d.steps,
        batches: d.totals.batches,
        succeeded: d.totals.succeeded,
        retried: d.totals.retried,
        faults: d.faults,
        crashes: d.crashes,
        virtual_seconds: (d.clock.now() - start).num_seconds(),
        outcomes,
        billing: money,
        invariants,
        config: d.cfg,
    })
}

/// The publishing order: every input once plus its duplicates; shuffled with `reorder`,
/// otherwise in business order with each copy placed at a random point after its original.
fn schedule(rng: &mut fastrand::Rng, originals: &[PutEventsEntry], cfg: &SimulationConfig) -> VecDeque<PutEventsEntry> {
    let n = originals.len() as f64;
    // Original i sorts at i; each copy at a random key in (i, n], so it follows its original.
    let mut keyed: Vec<(f64, usize)> = Vec::with_capacity(originals.len() * 2);
    for i in 0..originals.len() {
        keyed.push((i as f64, i));
        for _ in 0..rng.u32(0..=cfg.duplicates) {
            keyed.push((i as f64 + 1e-9 + rng.f64() * (n - i as f64), i));
        }
    }
    keyed.sort_by(|a, b| a.0.total_cmp(&b.0));
    let mut out: Vec<PutEventsEntry> = keyed.into_iter().map(|(_, i)| originals[i].clone()).collect();
    if cfg.reorder {
        rng.shuffle(&mut out);
    }
    out.into()
}

fn pick_system(rng: &mut fastrand::Rng) -> System {
    [System::Psa, System::Erp, System::Crm][rng.usize(..3)]
}

fn pick_fault(rng: &mut fastrand::Rng) -> Fault {
    match rng.u8(0..10) {
        0 | 1 => Fault::ServerError { status: 503 },
        2 | 3 => Fault::Timeout,
        4..=6 => Fault::TimeoutAfterCommit,
        7 | 8 => Fault::RateLimited { retry_after_ms: rng.u64(100..=5_000) },
        _ => Fault::Rejected { status: 422, code: "SIM_REFUSED".into(), message: "refused by the simulation".into() },
    }
}

/// Lets a caller wait on a simulation with a wall-clock bound (tests).
pub async fn run_within(
    limit: Duration,
    db: PathBuf,
    reference: ReferenceData,
    cfg: SimulationConfig,
) -> Result<SimulationReport, O2cError> {
    let command = cfg.command();
    tokio::time::timeout(limit, run(db, reference, cfg))
        .await
        .map_err(|_| O2cError::Bug(format!("simulation ran past {limit:?}: {command}")))?
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use crate::db::{Db, Durability, db_err};

    /// The WAL's size once a runtime's handle is dropped (as the simulation's crashes drop
    /// it), with or without the keeper; `None` once the WAL is deleted.
    fn wal_after_drop(keeper: bool) -> Option<u64> {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("k.db");
        let db = Db::open_with(&path, Durability::Batched).unwrap();
        db.call_blocking(|c| c.execute_batch("CREATE TABLE t (n INTEGER); INSERT INTO t VALUES (1);").map_err(db_err)).unwrap();
        let keeper = keeper.then(|| Keeper::open(&path).unwrap());
        drop(db);
        // The drop closed the connection before it returned, unless the flusher thread was
        // mid-tick (it then closes it a moment later): wait out such a tick.
        std::thread::sleep(crate::db::FLUSH_TICK * 5);
        let wal = std::fs::metadata(dir.path().join("k.db-wal")).ok().map(|m| m.len());
        if let Some(k) = keeper {
            k.close().unwrap();
            let n: i64 = rusqlite::Connection::open(&path).unwrap().query_row("SELECT COUNT(*) FROM t", [], |r| r.get(0)).unwrap();
            assert_eq!(n, 1, "the dropped handle's batch was committed, and the keeper's close checkpointed it");
        }
        wal
    }

    #[test]
    fn when_a_crashed_runtime_closes_beside_the_keeper_should_leave_the_wal_as_a_crash_would() {
        assert_eq!(wal_after_drop(false), None, "alone, the closing connection checkpoints the WAL and deletes it");
        assert!(wal_after_drop(true).is_some_and(|n| n > 0), "beside the keeper it leaves the WAL for the next process");
    }
}
