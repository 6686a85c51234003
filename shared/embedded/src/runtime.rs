//! The embedded runtime: the deployed topology (from `infra/template.yaml`) running in one
//! process over one SQLite file. Each function of the template gets workers that poll its
//! queue with the event source mapping's semantics — batches of `BatchSize`, up to
//! `MaximumConcurrency` concurrent batches, partial batch responses, redelivery with
//! backoff, dead-lettering after `maxReceiveCount` — and call the very same SQS batch
//! handler the Lambda binaries run.
//!
//! One process at a time consumes a database: [`Runtime::open`] takes an exclusive lock
//! on `<db>.lock`. Holding it proves every earlier consumer is dead, so in-flight messages
//! and in-progress idempotency reservations of a crashed run are released at once and a
//! restarted runtime resumes where the last one stopped.

use std::collections::HashMap;
use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use aws_lambda_events::event::sqs::SqsMessage;
use o2c_app::O2cError;
use o2c_app::Step;
use o2c_app::bus::{PutEventsEntry, PutEventsResponse};
use o2c_app::esm::{self, FunctionQueue, QueueOps};
use o2c_app::ports::{Adapters, Clock, IdGenerator, Platform, RandomIds, SeededIds, SimClock, StaticReferenceData, SystemClock};
use o2c_app::service::{DeadLetterOutcome, ServiceConfig, StepService};
use o2c_domain::reference::ReferenceData;
use o2c_topology::topology::{FunctionDef, PipeDef, Topology};
use rusqlite::params;
use tokio::sync::watch;
use tokio::task::JoinSet;
use tracing::{debug, info, warn};

use crate::bus::{DeadLettered, LOCAL_ACCOUNT, LOCAL_REGION, LocalBus, ReceivedMessage};
use crate::db::{Cached, Db, db_err};
use crate::sim::Simulators;
use crate::store::SqliteStore;

/// The adapters of the embedded platform: SQLite store, the local bus, the simulators.
pub type EmbeddedPlatform = Adapters<SqliteStore, Arc<LocalBus>, StaticReferenceData, Simulators, Simulators, Simulators, Simulators>;

/// Tunables of the embedded runtime.
#[derive(Debug, Clone)]
pub struct RuntimeOptions {
    /// First redelivery delay of a failed message (doubles per receive). SQS waits out the
    /// visibility timeout instead; locally a short exponential backoff keeps flows quick.
    pub retry_base: Duration,
    /// Longest redelivery delay.
    pub retry_cap: Duration,
    /// Idle poll interval (workers are also woken when messages are enqueued).
    pub poll_interval: Duration,
    /// Cap on concurrent batches per function (the template's `MaximumConcurrency` applies too).
    pub max_workers_per_function: u32,
    /// Protocol tunables.
    pub service: ServiceConfig,
    /// SQLite durability (default: group commit, every acknowledgement fsynced).
    pub durability: crate::db::Durability,
    /// A defect planted on purpose, to prove the simulation's invariants catch it (its
    /// self-test); never set otherwise.
    pub planted_bug: Option<crate::simulation::PlantedBug>,
}

impl Default for RuntimeOptions {
    fn default() -> Self {
        Self {
            retry_base: Duration::from_millis(200),
            retry_cap: Duration::from_secs(30),
            poll_interval: Duration::from_millis(200),
            max_workers_per_function: 2,
            service: ServiceConfig::default(),
            durability: crate::db::Durability::Group,
            planted_bug: None,
        }
    }
}

struct Inner {
    db: Db,
    bus: Arc<LocalBus>,
    services: StepService<EmbeddedPlatform>,
    topology: Arc<Topology>,
    sims: Simulators,
    store: SqliteStore,
    options: RuntimeOptions,
    /// Set in deterministic mode: the scheduler moves it to the next due message.
    sim_clock: Option<Arc<SimClock>>,
    _lock: File,
    lock_path: PathBuf,
}

/// The embedded runtime (cheap to clone).
#[derive(Clone)]
pub struct Runtime {
    inner: Arc<Inner>,
}

/// What [`Runtime::run_until_idle`] did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RunReport {
    /// Batches processed.
    pub batches: u64,
    /// Records handled successfully (including parked rejections).
    pub succeeded: u64,
    /// Of those, records parked as rejected during this run (a message parked again counts
    /// again: the rejection store keeps one row per message).
    pub parked: u64,
    /// Records reported for retry.
    pub retried: u64,
    /// Messages now in DLQs.
    pub dead_letters: u64,
}

/// Builder for [`Runtime`].
pub struct RuntimeBuilder {
    db_path: PathBuf,
    reference: ReferenceData,
    template: String,
    /// The template already parsed (a simulated restart reuses its process's parse).
    parsed: Option<Arc<Topology>>,
    options: RuntimeOptions,
    clock: Arc<dyn Clock>,
    ids: Arc<dyn IdGenerator>,
    sim_clock: Option<Arc<SimClock>>,
}

impl RuntimeBuilder {
    /// Uses a template other than the shipped one.
    pub fn template(mut self, template: &str) -> Self {
        self.template = template.to_owned();
        self.parsed = None;
        self
    }

    /// Uses a topology already parsed from the template (the simulation's restarts: the
    /// same template, not parsed again for each simulated process).
    pub fn topology(mut self, topology: Arc<Topology>) -> Self {
        self.parsed = Some(topology);
        self
    }
    /// Sets options.
    pub fn options(mut self, options: RuntimeOptions) -> Self {
        self.options = options;
        self
    }
    /// Uses a clock (tests).
    pub fn clock(mut self, clock: Arc<dyn Clock>) -> Self {
        self.clock = clock;
        self
    }

    /// A reproducible run: virtual time starting at `start`, ids from `seed`, and one
    /// sequential scheduler instead of concurrent workers — the same seed and inputs give
    /// the same state, byte for byte.
    pub fn deterministic(mut self, seed: u64, start: chrono::DateTime<chrono::Utc>) -> Self {
        let clock = Arc::new(SimClock::starting_at(start));
        self.clock = clock.clone();
        self.sim_clock = Some(clock);
        self.ids = Arc::new(SeededIds::new(seed));
        self
    }

    /// Continues a reproducible run after a simulated crash: the same virtual clock and id
    /// sequence, a fresh process state.
    pub fn resume(mut self, clock: Arc<SimClock>, ids: Arc<dyn IdGenerator>) -> Self {
        self.clock = clock.clone();
        self.sim_clock = Some(clock);
        self.ids = ids;
        self
    }

    /// Opens the database, takes the consumer lock and recovers a crashed run.
    pub async fn open(self) -> Result<Runtime, O2cError> {
        let topology = match self.parsed {
            Some(t) => t,
            None => Arc::new(Topology::from_sam_yaml(&self.template).map_err(|e| O2cError::Bug(e.to_string()))?),
        };
        for f in &topology.functions {
            if Step::from_name(&f.binary).is_none() {
                return Err(O2cError::Bug(format!("template function {} names unknown binary {}", f.logical_id, f.binary)));
            }
        }
        let lock_path = lock_path(&self.db_path);
        let lock = File::options()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&lock_path)
            .map_err(|e| O2cError::dependency("lockfile", e.to_string()))?;
        lock.try_lock().map_err(|_| {
            O2cError::Conflict(format!(
                "{} is in use by another o2c process (lock {} is held)",
                self.db_path.display(),
                lock_path.display()
            ))
        })?;
        let db = Db::open_with(&self.db_path, self.options.durability)?.with_time(self.clock.clone(), self.ids.clone());
        let bus = Arc::new(LocalBus::new(db.clone(), topology.clone(), format!("o2c-{}", topology.bus))?);
        let store = SqliteStore::new(db.clone());
        let sims = Simulators::new(db.clone(), &self.reference);
        let platform = Adapters {
            store: store.clone(),
            publisher: bus.clone(),
            reference: StaticReferenceData(Arc::new(self.reference)),
            crm: sims.clone(),
            psa: sims.clone(),
            erp: sims.clone(),
            tax: sims.clone(),
            clock: self.clock,
            metrics: Arc::new(o2c_app::metrics::LogMetrics),
        };
        let rt = Runtime {
            inner: Arc::new(Inner {
                db,
                bus,
                services: StepService::new(platform, self.options.service.clone()),
                topology,
                sims,
                store,
                options: self.options,
                sim_clock: self.sim_clock,
                _lock: lock,
                lock_path,
            }),
        };
        rt.recover().await?;
        Ok(rt)
    }
}

/// The embedded queue behind the shared driver: a failure without a hint comes back after
/// the runtime's backoff (SQS would wait out the visibility timeout; locally a short,
/// growing delay keeps flows quick).
struct EmbeddedQueue<'a> {
    rt: &'a Runtime,
}

impl QueueOps for EmbeddedQueue<'_> {
    async fn delete(&self, records: &[&SqsMessage]) -> Result<(), O2cError> {
        self.rt.inner.bus.delete(records.iter().filter_map(|r| r.message_id.clone()).collect()).await
    }

    async fn retry(&self, record: &SqsMessage, hint: Option<Duration>, error: &O2cError) {
        let delay = hint.unwrap_or_else(|| self.rt.backoff(o2c_app::sqs::receive_count(record)));
        let id = record.message_id.clone().unwrap_or_default();
        if let Err(err) = self.rt.inner.bus.retry_later(id, delay, format!("{}: {error}", error.error_type())).await {
            warn!(error = %err, "could not schedule redelivery; the visibility timeout will");
        }
    }
}

fn lock_path(db: &Path) -> PathBuf {
    let mut p = db.as_os_str().to_owned();
    p.push(".lock");
    PathBuf::from(p)
}

fn to_sqs(queue: &str, m: &ReceivedMessage) -> SqsMessage {
    let mut msg = SqsMessage::default();
    msg.message_id = Some(m.message_id.clone());
    msg.receipt_handle = Some(format!("{}#{}", m.message_id, m.receive_count));
    msg.body = Some(m.body.clone());
    msg.event_source = Some("aws:sqs".into());
    msg.event_source_arn = Some(format!("arn:aws:sqs:{LOCAL_REGION}:{LOCAL_ACCOUNT}:{queue}"));
    msg.aws_region = Some(LOCAL_REGION.into());
    let mut attrs = HashMap::new();
    attrs.insert("ApproximateReceiveCount".to_owned(), m.receive_count.to_string());
    attrs.insert("SentTimestamp".to_owned(), m.sent_at.to_string());
    attrs.insert("ApproximateFirstReceiveTimestamp".to_owned(), m.first_received_at.to_string());
    if let Some(g) = &m.group_id {
        attrs.insert("MessageGroupId".to_owned(), g.clone());
    }
    msg.attributes = attrs;
    msg
}

impl Runtime {
    /// A builder for a runtime over `db_path` with `reference` data and the shipped template.
    pub fn builder(db_path: impl Into<PathBuf>, reference: ReferenceData) -> RuntimeBuilder {
        RuntimeBuilder {
            db_path: db_path.into(),
            reference,
            template: o2c_topology::topology::TEMPLATE.to_owned(),
            parsed: None,
            options: RuntimeOptions::default(),
            clock: Arc::new(SystemClock),
            ids: Arc::new(RandomIds),
            sim_clock: None,
        }
    }

    async fn recover(&self) -> Result<(), O2cError> {
        let reclaimed = self.inner.bus.reclaim_in_flight().await?;
        let now = self.inner.db.now_ms();
        let sql = release_reservations_sql();
        let released = self.inner.db.call(move |c| c.exec(&sql, params![now]).map_err(db_err)).await?;
        if reclaimed + released > 0 {
            info!(reclaimed, released, "recovered from an earlier run: in-flight messages and reservations released");
        }
        Ok(())
    }

    /// The bus and queues.
    pub fn bus(&self) -> &LocalBus {
        &self.inner.bus
    }
    /// The state store.
    pub fn store(&self) -> &SqliteStore {
        &self.inner.store
    }
    /// The simulators.
    pub fn sims(&self) -> &Simulators {
        &self.inner.sims
    }
    /// The topology.
    pub fn topology(&self) -> &Topology {
        &self.inner.topology
    }

    /// The topology, shared (for a builder of the next process over the same template).
    pub fn shared_topology(&self) -> Arc<Topology> {
        self.inner.topology.clone()
    }
    /// The step services.
    pub fn services(&self) -> &StepService<EmbeddedPlatform> {
        &self.inner.services
    }
    /// The database file.
    pub fn db_path(&self) -> &Path {
        self.inner.db.path()
    }
    /// The lock file.
    pub fn lock_path(&self) -> &Path {
        &self.inner.lock_path
    }

    /// EventBridge `PutEvents` on the o2c bus. It answers once the accepted entries are
    /// durable: under group commit, after an fsync shared with concurrent publishers (it also
    /// covers the commits the workers made meanwhile; theirs are otherwise recoverable, not
    /// acknowledged to anyone).
    pub async fn put_events(&self, entries: Vec<PutEventsEntry>) -> Result<PutEventsResponse, O2cError> {
        let resp = self.inner.bus.put_events(entries).await?;
        self.inner.db.durable().await?;
        Ok(resp)
    }

    /// The database (benchmarks and tools).
    pub fn db(&self) -> &Db {
        &self.inner.db
    }

    /// Total messages waiting or in flight in function and pipe source queues (DLQs excluded).
    pub async fn pending(&self) -> Result<u64, O2cError> {
        let mut total = 0;
        for q in &self.inner.topology.consumed_queues() {
            total += self.inner.bus.depth(q).await?.total();
        }
        Ok(total)
    }

    /// True while a function or pipe source queue holds a message (waiting or in flight).
    pub async fn has_pending(&self) -> Result<bool, O2cError> {
        self.inner.bus.any_message(self.inner.topology.consumed_queues()).await
    }

    /// Messages in DLQs.
    pub async fn dead_letters(&self) -> Result<u64, O2cError> {
        let mut total = 0;
        for q in self.inner.topology.queues.values().filter(|q| self.inner.topology.is_dlq(&q.logical_id)) {
            total += self.inner.bus.depth(&q.logical_id).await?.total();
        }
        Ok(total)
    }

    /// Starts the workers; they run until `shutdown` turns true.
    pub fn start(&self, shutdown: watch::Receiver<bool>) -> JoinSet<RunReport> {
        let mut set = JoinSet::new();
        for f in self.inner.topology.functions.clone() {
            let workers = f.max_concurrency.unwrap_or(u32::MAX).min(self.inner.options.max_workers_per_function).max(1);
            for _ in 0..workers {
                let rt = self.clone();
                let f = f.clone();
                let mut stop = shutdown.clone();
                set.spawn(async move { rt.worker(f, &mut stop).await });
            }
        }
        for p in self.inner.topology.pipes.clone() {
            let rt = self.clone();
            let mut stop = shutdown.clone();
            set.spawn(async move { rt.pipe_worker(p, &mut stop).await });
        }
        set
    }

    pub(crate) fn visibility(&self, queue: &str) -> Duration {
        Duration::from_secs(u64::from(self.inner.topology.queues.get(queue).map_or(30, |q| q.visibility_timeout_secs)))
    }

    /// Redelivery delay after the `receive_count`-th failed receive (exponential, capped).
    fn backoff(&self, receive_count: u32) -> Duration {
        self.inner.options.retry_base.saturating_mul(1u32 << receive_count.saturating_sub(1).min(16)).min(self.inner.options.retry_cap)
    }

    /// Waits for the next non-empty batch of `queue` (woken by enqueues, or polling);
    /// `None` once `stop` turns true. Messages the queue dead-letters meanwhile are handed
    /// to `on_dead_letter`.
    async fn next_batch(
        &self,
        queue: &str,
        max: usize,
        stop: &mut watch::Receiver<bool>,
        on_dead_letter: Option<Step>,
    ) -> Option<Vec<ReceivedMessage>> {
        let visibility = self.visibility(queue);
        let notify = self.inner.bus.notifier(queue);
        loop {
            if *stop.borrow() {
                return None;
            }
            // Register for wake-ups before receiving, so an enqueue in between is not missed.
            let notified = notify.notified();
            match self.inner.bus.receive_batch(queue, max, visibility).await {
                Ok(r) => {
                    if let Some(step) = on_dead_letter {
                        for d in r.dead_lettered {
                            self.dead_lettered(step, d).await;
                        }
                    }
                    if !r.messages.is_empty() {
                        return Some(r.messages);
                    }
                }
                Err(e) => warn!(queue = %queue, error = %e, "receive failed"),
            }
            tokio::select! {
                _ = notified => {}
                _ = tokio::time::sleep(self.inner.options.poll_interval) => {}
                _ = stop.changed() => {}
            }
        }
    }

    /// A message the queue moved to its DLQ: its dead-letter exception (idempotent: the
    /// handler's failure on the last receive usually raised it already; this covers a
    /// crash during that receive), or — with no engagement to raise it on — the message
    /// parked with its reasons, unless the step had completed it (a batch that crashed after
    /// this record was processed).
    pub(crate) async fn dead_lettered(&self, step: Step, d: DeadLettered) {
        let error = d.last_error.unwrap_or_else(|| "no failure was recorded (the consumer stopped during the delivery)".into());
        let svc = &self.inner.services;
        let event = o2c_app::sqs::decode_body(&d.body).ok();
        let outcome = match &event {
            Some(event) => svc.dead_lettered(step, event, &error, d.receive_count, Some(&d.dead_letter_queue), false).await,
            None => Ok(DeadLetterOutcome::NoEngagement),
        };
        match outcome {
            Ok(DeadLetterOutcome::Raised | DeadLetterOutcome::AlreadyOpen) => {}
            // No engagement to raise it on: parked, as the consumer's last receive would have.
            Ok(DeadLetterOutcome::NoEngagement) => {
                if let Some(event) = &event
                    && svc.processed(step, event).await.unwrap_or(false)
                {
                    debug!(message_id = %d.message_id, "dead-lettered after it was processed: nothing to park");
                    return;
                }
                let last = O2cError::dependency("runtime", error);
                o2c_app::sqs::park_dead_letter(svc, step, &d.message_id, &d.body, &last, d.receive_count, Some(&d.dead_letter_queue)).await;
            }
            Err(e) => warn!(message_id = %d.message_id, error = %e, "could not raise the dead-letter exception"),
        }
    }

    /// Whether `step` completed `event` (see [`StepService::processed`]).
    pub async fn processed(&self, step: Step, event: &o2c_domain::events::BusinessEvent) -> Result<bool, O2cError> {
        self.inner.services.processed(step, event).await
    }

    /// Runs a pipe: source queue → (group / dedup ids from the body) → target queue.
    async fn pipe_worker(&self, p: PipeDef, stop: &mut watch::Receiver<bool>) -> RunReport {
        let mut report = RunReport::default();
        while let Some(msgs) = self.next_batch(&p.source, p.batch_size as usize, stop, None).await {
            self.pipe_batch(&p, msgs, &mut report).await;
            // Database calls complete without suspending: a busy worker lets the other tasks
            // (HTTP handlers, publishers) run between batches.
            tokio::task::yield_now().await;
        }
        report
    }

    pub(crate) async fn pipe_batch(&self, p: &PipeDef, msgs: Vec<ReceivedMessage>, report: &mut RunReport) {
        report.batches += 1;
        for m in msgs {
            let body: serde_json::Value = serde_json::from_str(&m.body).unwrap_or_default();
            let group = p.message_group_path.as_deref().and_then(|path| PipeDef::eval(path, &body));
            let dedup = p.deduplication_path.as_deref().and_then(|path| PipeDef::eval(path, &body));
            let result = match (&p.message_group_path, &group) {
                (Some(path), None) => Err(O2cError::Validation(vec![o2c_domain::events::Issue::new(
                    path.clone(),
                    "missing",
                    "the message has no value at the pipe's MessageGroupId path",
                )])),
                _ => self.inner.bus.forward(m.message_id.clone(), p.target.clone(), m.body.clone(), group, dedup).await,
            };
            match result {
                Ok(()) => report.succeeded += 1,
                Err(e) => {
                    // Like EventBridge Pipes: the source message is retried and, after
                    // maxReceiveCount, dead-lettered by the source queue's redrive policy.
                    report.retried += 1;
                    let delay = self.backoff(m.receive_count);
                    let _ = self.inner.bus.retry_later(m.message_id, delay, format!("pipe {}: {e}", p.logical_id)).await;
                }
            }
        }
    }

    /// Processes until every function queue is empty (or `max` elapses: an error naming
    /// what is still pending).
    pub async fn run_until_idle(&self, max: Duration) -> Result<RunReport, O2cError> {
        self.run_until_idle_with(max, |_| {}).await
    }

    /// [`Runtime::run_until_idle`], telling `progress` how many messages are still queued
    /// each time it looks (every 20 ms), e.g. for a progress line.
    pub async fn run_until_idle_with(&self, max: Duration, progress: impl Fn(u64)) -> Result<RunReport, O2cError> {
        if let Some(clock) = self.inner.sim_clock.clone() {
            return self.run_sequentially(&clock).await;
        }
        let (tx, rx) = watch::channel(false);
        let mut set = self.start(rx);
        let started = Instant::now();
        let mut idle_checks = 0;
        let mut reported: Option<Instant> = None;
        let outcome = loop {
            tokio::time::sleep(Duration::from_millis(20)).await;
            // Whether anything is left costs an index probe per queue; counting it costs the
            // backlog, so it is done only for the progress line (every 0.5 s, by the clock: on
            // one busy thread a loop takes longer than its 20 ms sleep) and the error.
            match self.has_pending().await {
                Ok(false) => {
                    idle_checks += 1;
                    if idle_checks >= 2 {
                        break Ok(());
                    }
                }
                Ok(true) => {
                    idle_checks = 0;
                    let overdue = started.elapsed() > max;
                    let due = reported.is_none_or(|at| at.elapsed() >= Duration::from_millis(500));
                    if due || overdue {
                        reported = Some(Instant::now());
                        match self.pending().await {
                            Ok(n) if overdue => {
                                break Err(O2cError::dependency("runtime", format!("{n} message(s) still pending after {max:?}")));
                            }
                            Ok(n) => progress(n),
                            Err(e) => break Err(e),
                        }
                    }
                }
                Err(e) => break Err(e),
            }
        };
        let _ = tx.send(true);
        let mut report = RunReport::default();
        while let Some(r) = set.join_next().await {
            if let Ok(r) = r {
                report.batches += r.batches;
                report.succeeded += r.succeeded;
                report.parked += r.parked;
                report.retried += r.retried;
            }
        }
        outcome?;
        report.dead_letters = self.dead_letters().await?;
        Ok(report)
    }

    async fn worker(&self, f: FunctionDef, stop: &mut watch::Receiver<bool>) -> RunReport {
        let mut report = RunReport::default();
        let Some(step) = Step::from_name(&f.binary) else {
            return report;
        };
        while let Some(msgs) = self.next_batch(&f.queue, f.batch_size as usize, stop, Some(step)).await {
            self.function_batch(&f, step, msgs, &mut report).await;
            tokio::task::yield_now().await;
        }
        report
    }

    /// One invocation of `f` on `msgs` through the shared event-source-mapping driver.
    pub(crate) async fn function_batch(&self, f: &FunctionDef, step: Step, msgs: Vec<ReceivedMessage>, report: &mut RunReport) {
        report.batches += 1;
        if self.inner.options.planted_bug == Some(crate::simulation::PlantedBug::AckBeforeProcessing) {
            // The planted defect: at-most-once delivery (the messages are gone before the
            // step has done its work; a crash in between loses them).
            let _ = self.inner.bus.delete(msgs.iter().map(|m| m.message_id.clone()).collect()).await;
        }
        let redrive = self.inner.topology.queues.get(&f.queue).and_then(|q| q.redrive.clone());
        let fq = FunctionQueue {
            step,
            timeout: Duration::from_secs(u64::from(f.timeout_secs)),
            max_receive_count: redrive.as_ref().map(|r| r.max_receive_count),
            dead_letter_queue: redrive.map(|r| r.dead_letter_queue),
        };
        let records = msgs.iter().map(|m| to_sqs(&f.queue, m)).collect();
        let now = self.inner.services.platform().clock().now();
        let invoked = esm::invoke(&self.inner.services, &fq, records, &EmbeddedQueue { rt: self }, now).await;
        report.succeeded += invoked.succeeded;
        report.parked += invoked.parked;
        report.retried += invoked.failed;
    }

    /// Deterministic mode: one scheduler visits every function queue, then every pipe, in
    /// template order, one batch each, until nothing is visible; then it moves the virtual
    /// clock to the next message due (a redelivery after backoff) or stops when none is left.
    async fn run_sequentially(&self, clock: &SimClock) -> Result<RunReport, O2cError> {
        let topo = self.inner.topology.clone();
        let mut report = RunReport::default();
        loop {
            let mut progressed = false;
            for f in &topo.functions {
                let Some(step) = Step::from_name(&f.binary) else { continue };
                let received = self.inner.bus.receive_batch(&f.queue, f.batch_size as usize, self.visibility(&f.queue)).await?;
                for d in received.dead_lettered {
                    progressed = true;
                    self.dead_lettered(step, d).await;
                }
                if !received.messages.is_empty() {
                    progressed = true;
                    self.function_batch(f, step, received.messages, &mut report).await;
                }
            }
            for p in &topo.pipes {
                let msgs = self.inner.bus.receive(&p.source, p.batch_size as usize, self.visibility(&p.source)).await?;
                if !msgs.is_empty() {
                    progressed = true;
                    self.pipe_batch(p, msgs, &mut report).await;
                }
            }
            if progressed {
                continue;
            }
            match self.inner.bus.next_due(&topo.consumed_queues()).await? {
                Some(due) if due <= clock.now().timestamp_millis() => {
                    // Something is due now yet nothing was received: the scheduler would spin.
                    return Err(O2cError::Bug(format!("deterministic scheduler stalled: a message is due at {due} but none was received")));
                }
                Some(due) => clock.advance_to(chrono::DateTime::from_timestamp_millis(due).unwrap_or_default()),
                None => break,
            }
        }
        report.dead_letters = self.dead_letters().await?;
        Ok(report)
    }
}

/// Releases every reservation in progress as of `?1` (after a crash). The status is spelled
/// in the SQL, not bound, so the partial index of reservations in progress applies: the
/// cost follows what is in flight, not every idempotency record ever written.
pub(crate) fn release_reservations_sql() -> String {
    format!(
        "UPDATE idempotency SET in_progress_until = ?1 WHERE status = '{}' AND in_progress_until > ?1",
        o2c_app::idempotency::IdempotencyStatus::InProgress.as_str()
    )
}
