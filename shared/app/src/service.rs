//! The step service: the imperative shell that drives every step's pure logic
//! ([`o2c_domain::workflow::WorkflowStep`]) through one at-least-once protocol.
//!
//! 1. **Duplicate check** — a live completed idempotency record for
//!    `<step>#<event idempotency key>` answers the event: its stored events are re-published
//!    (the original may have crashed between commit and publish) and nothing else is
//!    written (two reads: the key, and the engagement — a redelivery closes the
//!    dead-letter exception its failed publish left open, the only write it may make). Same key with a different payload hash is a permanent conflict.
//!    A record in progress (another invocation holds it) hands the message back with a
//!    short, growing delay instead of the queue's visibility timeout.
//! 2. **Decide** on a strongly consistent read of the engagement.
//! 3. **Done** → one atomic commit (state + audit + completed record, conditional on the key
//!    being free): **one write request**.
//! 4. **Run** → reserve the key (claiming the engagement in the same write when the plan
//!    says so), run the commands (transient failures retried inside the invocation, see
//!    [`crate::retry`]), **finalize** the results on the current state and commit:
//!    **two write requests**. A commit that loses a version race re-finalizes the *same
//!    results* on fresh state — side effects are never repeated for a lost race.
//! 5. **Checkpoint** → commit state + audit while keeping the key reserved (the commit
//!    fails unless the reservation is still ours), then decide again on the new state:
//!    how a failure is made durable before its compensation runs.
//! 6. **Publish** the committed decision's events.
//!
//! Any failure after the key was reserved releases the reservation (unless another
//! invocation took it over), so a redelivery, or the resubmission of a parked message,
//! re-executes at once; create-or-get by external key makes that safe.

use std::time::Duration;

use chrono::{DateTime, Utc};
use o2c_domain::aggregate::{AggregateBody, Load, Loaded};
use o2c_domain::engagement::Action;
use o2c_domain::engagement::Engagement;
use o2c_domain::events::{BusinessEvent, Issue, payload_hash};
use o2c_domain::workflow::{Decision, GaveUp, Input, Next, Outcome, Snapshot, Step, StepContext, WorkflowStep, dead_lettered};
use tracing::{Instrument, debug, info, info_span, warn};

use crate::error::O2cError;
use crate::executor::execute;
use crate::ports::{
    AggregateWrite, Commit, CommitOutcome, Completion, CompletionMode, EngagementStore, EventPublisher, ExpectedVersion, IdempotencyRecord,
    IdempotencyStore, KeyState, KeyWrite, Platform, ReferenceDataSource, Reservation, ReserveOutcome, StateWrite, StoredResult, Versioned,
    load_all_of,
};
use crate::retry::RetryPolicy;

/// Tunables of the protocol.
#[derive(Debug, Clone)]
pub struct ServiceConfig {
    /// How long a completed key absorbs duplicates (EventBridge archive replays older
    /// events; those are absorbed by the business state checks instead).
    pub idempotency_ttl: chrono::Duration,
    /// How many decide / finalize rounds (version races, checkpoints) one event may take
    /// before giving up (retryable).
    pub max_rounds: u32,
    /// In-invocation retry of transient connector failures.
    pub connector_retry: RetryPolicy,
    /// First delay before a message that met an in-progress record comes back (doubles
    /// per receive).
    pub in_progress_delay: Duration,
}

impl Default for ServiceConfig {
    fn default() -> Self {
        Self {
            idempotency_ttl: chrono::Duration::days(7),
            max_rounds: 12,
            connector_retry: RetryPolicy::default(),
            in_progress_delay: Duration::from_secs(1),
        }
    }
}

/// How the event reached the step: its queue delivery.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Delivery {
    /// The invocation's deadline (Lambda's, or the function timeout of the embedded
    /// runtime); bounds reservations and in-invocation retries.
    pub deadline: DateTime<Utc>,
    /// `ApproximateReceiveCount` of the message (1 on the first delivery).
    pub receive_count: u32,
    /// The queue's `maxReceiveCount` (the message dead-letters after that many receives).
    pub max_receive_count: Option<u32>,
}

impl Delivery {
    /// A first delivery with `deadline` (direct calls, tests).
    pub fn once(deadline: DateTime<Utc>) -> Self {
        Self { deadline, receive_count: 1, max_receive_count: None }
    }

    /// True on the message's last receive before its queue dead-letters it.
    pub fn is_last(&self) -> bool {
        self.max_receive_count.is_some_and(|m| self.receive_count >= m)
    }
}

/// What handling an event did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Handled {
    /// Audit action.
    pub action: String,
    /// True when the event was a duplicate answered from the idempotency store.
    pub duplicate: bool,
    /// Events published.
    pub published: usize,
}

/// What raising a dead-letter exception did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DeadLetterOutcome {
    /// Raised (or reopened) on the engagement.
    Raised,
    /// It was already open.
    AlreadyOpen,
    /// The engagement does not exist: the caller keeps the message visible elsewhere.
    NoEngagement,
}

/// The step services over one platform.
pub struct StepService<P: Platform> {
    platform: P,
    config: ServiceConfig,
    steps: Steps,
}

/// Which steps' logic a service runs. A Lambda function runs one, named statically in its
/// `main.rs`, so its binary links that step's code only: [`Step::logic`], which names
/// every step, is reached through a function pointer set by [`StepService::new`] alone.
#[derive(Clone, Copy)]
enum Steps {
    /// Every step (the embedded runtime, tools, tests).
    All(fn(Step) -> &'static dyn WorkflowStep),
    /// One step (a Lambda function).
    One(&'static dyn WorkflowStep),
}

/// What a step reads: the engagement and its other aggregates, with versions.
struct World {
    state: Option<Versioned<Engagement>>,
    others: Loaded,
}

struct Run<'a> {
    key: String,
    hash: String,
    engagement_id: o2c_domain::ids::EngagementId,
    delivery: &'a Delivery,
    /// Set when a commit found the reservation gone: expired and taken over for another
    /// payload, or completed. (The stores recognise a reservation by its payload hash, so a
    /// takeover by a redelivery of the same event still looks like ours; on Lambda the
    /// reservation lasts until the invocation's deadline, so the two never overlap.)
    lost: std::sync::atomic::AtomicBool,
}

enum Committed {
    Done(Handled),
    Checkpointed,
    Conflict,
    Duplicate(IdempotencyRecord),
}

impl<P: Platform> StepService<P> {
    /// Services of every step over `platform`.
    pub fn new(platform: P, config: ServiceConfig) -> Self {
        Self { platform, config, steps: Steps::All(Step::logic) }
    }

    /// The service of one step over `platform` (a Lambda function): events of other steps
    /// are refused as not consumed.
    pub fn single(platform: P, config: ServiceConfig, logic: &'static dyn WorkflowStep) -> Self {
        Self { platform, config, steps: Steps::One(logic) }
    }

    /// The logic of `step`, if this service runs it.
    fn logic(&self, step: Step) -> Option<&'static dyn WorkflowStep> {
        match self.steps {
            Steps::All(of) => Some(of(step)),
            Steps::One(logic) => (logic.step() == step).then_some(logic),
        }
    }

    /// The platform (adapters).
    pub fn platform(&self) -> &P {
        &self.platform
    }

    /// The protocol tunables.
    pub fn config(&self) -> &ServiceConfig {
        &self.config
    }

    /// Handles one decoded event for `step`.
    pub async fn handle(&self, step: Step, event: &BusinessEvent, delivery: &Delivery) -> Result<Handled, O2cError> {
        let event_type = event.event_type();
        let meta = event.meta();
        let engagement_id = event.engagement_id();
        let span = info_span!(
            "handle",
            step = step.name(),
            detail_type = event_type.detail_type(),
            event_id = %meta.event_id,
            correlation_id = %meta.correlation_id,
            causation_id = meta.causation_id.as_deref().unwrap_or_default(),
            engagement_id = %engagement_id,
            receive_count = delivery.receive_count,
        );
        async move {
            if !self.logic(step).is_some_and(|logic| logic.consumes().contains(&event_type)) {
                return Err(O2cError::Validation(vec![Issue::new(
                    "detail-type",
                    "not_handled_by_step",
                    format!("{} does not consume {}: check the rule that routed it", step.name(), event_type.detail_type()),
                )]));
            }
            let fans_out = match event {
                BusinessEvent::InvoiceRunRequested(env) => env.payload.engagement_id.is_none(),
                BusinessEvent::RevenueRunRequested(env) => env.payload.engagement_id.is_none(),
                BusinessEvent::ReconciliationRequested(env) => env.payload.engagement_id.is_none(),
                _ => false,
            };
            if fans_out {
                let ctx = StepContext { step, event_type, meta: &meta, now: self.platform.clock().now(), event: Some(event) };
                return self.fan_out_runs(event, &ctx).await;
            }
            let run = Run {
                key: key_of(step, &meta),
                hash: payload_hash(event_type, &event.payload_json()),
                engagement_id,
                delivery,
                lost: std::sync::atomic::AtomicBool::new(false),
            };
            let ctx = StepContext { step, event_type, meta: &meta, now: self.platform.clock().now(), event: Some(event) };
            let mut reserved = false;
            let result = self.protocol(&run, &ctx, event, &mut reserved).await;
            // Any failure with the key still ours releases it: a retry (or, after a permanent
            // refusal, the parked message's resubmission) runs at once instead of waiting for
            // the reservation to expire. A reservation lost to a takeover is the other
            // invocation's now, and stays.
            if result.is_err()
                && reserved
                && !run.lost.load(std::sync::atomic::Ordering::Relaxed)
                && let Err(release) = self.platform.store().release(&run.key).await
            {
                warn!(error = %release, "could not release the reservation; a retry waits for its expiry");
            }
            self.platform.metrics().emit(&handling_metrics(step, &meta, &result, ctx.now));
            let handled = result?;
            info!(action = %handled.action, duplicate = handled.duplicate, published = handled.published, "handled");
            Ok(handled)
        }
        .instrument(span)
        .await
    }

    async fn protocol(
        &self,
        run: &Run<'_>,
        ctx: &StepContext<'_>,
        event: &BusinessEvent,
        reserved: &mut bool,
    ) -> Result<Handled, O2cError> {
        let store = self.platform.store();
        let logic = self.logic(ctx.step).ok_or_else(|| O2cError::Bug(format!("this service does not run {}", ctx.step)))?;
        if let Some(rec) = store.get(&run.key).await?
            && rec.is_live(ctx.now)
        {
            return self.duplicate(rec, run, ctx).await;
        }
        let reference = self.platform.reference().snapshot().await?;
        let mut keys = logic.loads(event);
        let mut world = self.load(run, &keys).await?;
        let mut rounds = 0;
        'decide: loop {
            self.count_round(&mut rounds, run)?;
            let input = Input { current: snapshot(&world.state), others: &world.others, event, reference: &reference };
            let plan = match logic.decide(&input, ctx)? {
                Next::Done(d) => match self.commit(run, ctx, d, &world, *reserved, true).await? {
                    Committed::Done(h) => return Ok(h),
                    Committed::Duplicate(rec) => return self.duplicate(rec, run, ctx).await,
                    Committed::Conflict | Committed::Checkpointed => {
                        world = self.load(run, &keys).await?;
                        continue 'decide;
                    }
                },
                Next::Checkpoint(d) => {
                    if let Some(rec) = self.reserve(run, ctx, None, &[], reserved, &mut world).await? {
                        return self.duplicate(rec, run, ctx).await;
                    }
                    self.commit(run, ctx, d, &world, true, false).await?;
                    world = self.load(run, &keys).await?;
                    continue 'decide;
                }
                Next::Run(plan) => plan,
                Next::Need(more) => {
                    for l in more {
                        if !keys.contains(&l) {
                            keys.push(l);
                        }
                    }
                    world = self.load(run, &keys).await?;
                    continue 'decide;
                }
            };
            let claimed_others = !plan.claim_others.is_empty();
            if let Some(rec) = self.reserve(run, ctx, plan.claim.clone(), &plan.claim_others, reserved, &mut world).await? {
                return self.duplicate(rec, run, ctx).await;
            }
            if !*reserved {
                // The claim lost a version race and nothing was reserved — even when the
                // winner wrote the very same state (one payment notified twice): decide
                // again on what won, never call out without a reservation.
                world = self.load(run, &keys).await?;
                continue 'decide;
            }
            if plan.claim.is_some() && world.state.as_ref().map(|v| &v.value) != plan.claim.as_ref() {
                // The claim lost a version race: nothing was written; decide again.
                continue 'decide;
            }
            if claimed_others {
                // Read back what the claim wrote (its versions) — or, when it lost a race,
                // the state that won it, and decide again.
                world = self.load(run, &keys).await?;
                if plan.claim_others.iter().any(|b| world.others.get(&b.key()) != Some(b)) {
                    continue 'decide;
                }
            }
            let results = execute(&self.platform, &self.config.connector_retry, &plan, &run.key, run.delivery.deadline).await?;
            loop {
                self.count_round(&mut rounds, run)?;
                let done = Outcome {
                    current: snapshot(&world.state),
                    others: &world.others,
                    event,
                    reference: &reference,
                    plan: &plan,
                    results: &results,
                };
                match logic.finalize(&done, ctx)? {
                    Next::Done(d) => match self.commit(run, ctx, d, &world, true, true).await? {
                        Committed::Done(h) => return Ok(h),
                        Committed::Duplicate(rec) => return self.duplicate(rec, run, ctx).await,
                        // Same results, fresh state: never repeat the side effects for a lost race.
                        _ => world = self.load(run, &keys).await?,
                    },
                    Next::Checkpoint(d) => {
                        let checkpointed = matches!(self.commit(run, ctx, d, &world, true, false).await?, Committed::Checkpointed);
                        world = self.load(run, &keys).await?;
                        if checkpointed {
                            continue 'decide;
                        }
                    }
                    Next::Run(_) => return Err(O2cError::Bug(format!("{} finalize returned a plan", ctx.step))),
                    // The results no longer fit the state (it moved on): decide again from scratch.
                    Next::Need(more) => {
                        keys.extend(more.into_iter().filter(|l| !keys.contains(l)).collect::<Vec<_>>());
                        world = self.load(run, &keys).await?;
                        continue 'decide;
                    }
                }
            }
        }
    }

    fn count_round(&self, rounds: &mut u32, run: &Run<'_>) -> Result<(), O2cError> {
        *rounds += 1;
        if *rounds > self.config.max_rounds {
            return Err(O2cError::dependency(
                "state-store",
                format!("engagement {} kept changing: gave up after {} rounds", run.engagement_id, self.config.max_rounds),
            ));
        }
        Ok(())
    }

    /// Reserves the key (with `claim` in the same write) unless already held; writes a claim
    /// under a held reservation as a checkpoint. `Some(record)` when the key turned out
    /// to be completed by someone else. On success `state` holds what was written.
    async fn reserve(
        &self,
        run: &Run<'_>,
        ctx: &StepContext<'_>,
        claim: Option<Engagement>,
        claim_others: &[AggregateBody],
        reserved: &mut bool,
        world: &mut World,
    ) -> Result<Option<IdempotencyRecord>, O2cError> {
        let state = &mut world.state;
        let expected = expected(state);
        let others: Vec<AggregateWrite> = claim_others
            .iter()
            .map(|body| AggregateWrite {
                body: body.clone(),
                expected: world.others.version(&body.key()).map_or(ExpectedVersion::New, ExpectedVersion::Is),
            })
            .collect();
        if *reserved {
            if claim.is_some() || !others.is_empty() {
                let commit = Commit {
                    state: claim.clone().map(|engagement| StateWrite { engagement, expected }),
                    others,
                    audit: None,
                    key: self.hold(run),
                };
                match self.platform.store().commit(commit).await? {
                    CommitOutcome::Committed { .. } => advance(state, claim),
                    CommitOutcome::VersionConflict => *state = self.platform.store().load(&run.engagement_id).await?,
                    CommitOutcome::ReservationLost | CommitOutcome::AlreadyCompleted(_) => return Err(lost(run)),
                }
            }
            return Ok(None);
        }
        let reservation = Reservation {
            key: run.key.clone(),
            payload_hash: run.hash.clone(),
            now: ctx.now,
            in_progress_until: run.delivery.deadline.max(ctx.now + chrono::Duration::seconds(30)),
            expires_at: ctx.now + self.config.idempotency_ttl,
            claim: claim.clone().map(|engagement| StateWrite { engagement, expected }),
            others,
        };
        match self.platform.store().reserve(reservation).await? {
            ReserveOutcome::Reserved { .. } => {
                *reserved = true;
                if claim.is_some() {
                    advance(state, claim);
                }
                Ok(None)
            }
            ReserveOutcome::AlreadyCompleted(rec) => Ok(Some(rec)),
            ReserveOutcome::InProgress { until } => Err(self.in_progress(run, ctx, until)),
            ReserveOutcome::PayloadMismatch { .. } => Err(mismatch(&run.key)),
            ReserveOutcome::StateConflict => {
                debug!("claim lost a version race; deciding again");
                *state = self.platform.store().load(&run.engagement_id).await?;
                Ok(None)
            }
        }
    }

    fn hold(&self, run: &Run<'_>) -> KeyWrite {
        KeyWrite::Hold { key: run.key.clone(), payload_hash: run.hash.clone() }
    }

    /// Commits a decision: final (`complete`: the key is completed, events published) or
    /// a checkpoint (the key stays reserved; a checkpoint carries no events).
    /// The engagement and the other aggregates the step reads.
    async fn load(&self, run: &Run<'_>, loads: &[Load]) -> Result<World, O2cError> {
        let store = self.platform.store();
        let state = store.load(&run.engagement_id).await?;
        let others = if loads.is_empty() { Loaded::default() } else { load_all_of(store, loads).await? };
        Ok(World { state, others })
    }

    async fn commit(
        &self,
        run: &Run<'_>,
        ctx: &StepContext<'_>,
        decision: Decision,
        world: &World,
        reserved: bool,
        complete: bool,
    ) -> Result<Committed, O2cError> {
        let state = &world.state;
        let decision = if complete { decision.settle(state.as_ref().map(|v| &v.value), ctx) } else { decision };
        if !complete && !decision.events.is_empty() {
            return Err(O2cError::Bug(format!("{}: a checkpoint carries events ({})", ctx.step, decision.action())));
        }
        let action = decision.action().to_string();
        let events = decision.events;
        let metrics = decision.metrics;
        let key = if complete {
            KeyWrite::Complete(Completion {
                key: run.key.clone(),
                payload_hash: run.hash.clone(),
                result: StoredResult { action: action.clone(), events: events.clone() },
                now: ctx.now,
                expires_at: ctx.now + self.config.idempotency_ttl,
                mode: if reserved { CompletionMode::Reserved } else { CompletionMode::Fresh },
            })
        } else {
            self.hold(run)
        };
        let commit = Commit {
            state: decision.engagement.map(|engagement| StateWrite { engagement, expected: expected(state) }),
            others: decision
                .others
                .into_iter()
                .map(|body| {
                    let expected = world.others.version(&body.key()).map_or(ExpectedVersion::New, ExpectedVersion::Is);
                    AggregateWrite { body, expected }
                })
                .collect(),
            audit: Some(decision.audit),
            key,
        };
        match self.platform.store().commit(commit).await? {
            CommitOutcome::Committed { .. } if complete => {
                self.platform.publisher().publish(&events).await?;
                self.platform.metrics().emit(&metrics);
                Ok(Committed::Done(Handled { action, duplicate: false, published: events.len() }))
            }
            CommitOutcome::Committed { .. } => {
                debug!(action = %action, "checkpoint committed");
                Ok(Committed::Checkpointed)
            }
            CommitOutcome::VersionConflict => {
                debug!("version conflict; finalizing again on fresh state");
                Ok(Committed::Conflict)
            }
            CommitOutcome::AlreadyCompleted(rec) => Ok(Committed::Duplicate(rec)),
            CommitOutcome::ReservationLost => Err(lost(run)),
        }
    }

    async fn duplicate(&self, rec: IdempotencyRecord, run: &Run<'_>, ctx: &StepContext<'_>) -> Result<Handled, O2cError> {
        match rec.classify(&run.hash, ctx.now) {
            KeyState::Mismatch { .. } => Err(mismatch(&rec.key)),
            KeyState::Completed(IdempotencyRecord { result: Some(result), .. }) => {
                // Re-publish: at-least-once across a crash between commit and publish.
                // Event ids are deterministic, so consumers deduplicate them.
                self.platform.publisher().publish(&result.events).await?;
                self.settle_redelivery(run, ctx).await?;
                Ok(Handled { action: result.action, duplicate: true, published: result.events.len() })
            }
            KeyState::InProgress { until } => Err(self.in_progress(run, ctx, until)),
            // Completed without a result (a store defect) or expired meanwhile: retry.
            _ => Err(self.in_progress(run, ctx, rec.in_progress_until)),
        }
    }

    /// Another invocation holds the key: come back soon (1 s, 2 s, 4 s… per receive), and
    /// on the last receive before the DLQ not before the holder's deadline has passed.
    fn in_progress(&self, run: &Run<'_>, ctx: &StepContext<'_>, holder_until: Option<DateTime<Utc>>) -> O2cError {
        let n = run.delivery.receive_count.max(1);
        let mut wait = self.config.in_progress_delay.saturating_mul(1u32 << (n - 1).min(5));
        if run.delivery.max_receive_count.is_some_and(|m| n + 1 >= m)
            && let Some(until) = holder_until
            && let Ok(left) = (until - ctx.now + chrono::Duration::seconds(1)).to_std()
        {
            wait = wait.max(left);
        }
        O2cError::InProgress { key: run.key.clone(), retry_after: wait }
    }

    /// A completed event came again and its events are re-published: what its earlier
    /// failed delivery left open (its dead-letter exception, raised when the publish failed
    /// on the last receive) is settled. One read; a write only when something was open.
    async fn settle_redelivery(&self, run: &Run<'_>, ctx: &StepContext<'_>) -> Result<(), O2cError> {
        let store = self.platform.store();
        for _ in 0..self.config.max_rounds {
            let Some(current) = store.load(&run.engagement_id).await? else { return Ok(()) };
            let settled = Decision::unchanged(ctx, &run.engagement_id, Action::Redelivered, "stored events re-published")
                .settle(Some(&current.value), ctx);
            if settled.engagement.is_none() {
                return Ok(());
            }
            let events = settled.events;
            let commit = Commit {
                state: settled.engagement.map(|engagement| StateWrite { engagement, expected: ExpectedVersion::Is(current.version) }),
                others: Vec::new(),
                audit: Some(settled.audit),
                key: KeyWrite::Untracked,
            };
            match store.commit(commit).await? {
                CommitOutcome::Committed { .. } => return self.platform.publisher().publish(&events).await,
                CommitOutcome::VersionConflict => continue,
                other => return Err(O2cError::Bug(format!("untracked commit answered {other:?}"))),
            }
        }
        Err(O2cError::dependency("state-store", format!("engagement {} kept changing while settling a redelivery", run.engagement_id)))
    }

    /// Whether `step` completed `event` (its idempotency key holds a completed record): a
    /// message that dead-letters after all (its batch was never acknowledged) needs nothing.
    pub async fn processed(&self, step: Step, event: &BusinessEvent) -> Result<bool, O2cError> {
        let key = key_of(step, &event.meta());
        Ok(self.platform.store().get(&key).await?.is_some_and(|r| r.status == crate::ports::IdempotencyStatus::Completed))
    }

    /// A message of `step` exhausted its receives: raises (or reopens, with
    /// `reopen`) the dead-letter exception on its engagement with `last_error`, and
    /// announces it. A claim is released only when no live invocation holds the event's key.
    pub async fn dead_lettered(
        &self,
        step: Step,
        event: &BusinessEvent,
        last_error: &str,
        receives: u32,
        queue: Option<&str>,
        reopen: bool,
    ) -> Result<DeadLetterOutcome, O2cError> {
        let meta = event.meta();
        let ctx = StepContext { step, event_type: event.event_type(), meta: &meta, now: self.platform.clock().now(), event: Some(event) };
        let store = self.platform.store();
        let engagement_id = event.engagement_id();
        let key = key_of(step, &meta);
        let holder_live =
            store.get(&key).await?.is_some_and(|r| r.status == crate::ports::IdempotencyStatus::InProgress && r.is_live(ctx.now));
        let gave_up = GaveUp { last_error, receives, queue, holder_live, reopen };
        for _ in 0..self.config.max_rounds {
            let Some(current) = store.load(&engagement_id).await? else {
                return Ok(DeadLetterOutcome::NoEngagement);
            };
            let Some(d) = dead_lettered(&current.value, &gave_up, &ctx) else {
                return Ok(DeadLetterOutcome::AlreadyOpen);
            };
            let events = d.events.clone();
            let commit = Commit {
                state: d.engagement.map(|engagement| StateWrite { engagement, expected: ExpectedVersion::Is(current.version) }),
                others: Vec::new(),
                audit: Some(d.audit),
                key: KeyWrite::Untracked,
            };
            match store.commit(commit).await? {
                CommitOutcome::Committed { .. } => {
                    self.platform.publisher().publish(&events).await?;
                    warn!(step = step.name(), engagement_id = %engagement_id, event_id = %meta.event_id, receives, "dead-letter exception raised");
                    return Ok(DeadLetterOutcome::Raised);
                }
                CommitOutcome::VersionConflict => continue,
                other => return Err(O2cError::Bug(format!("untracked commit answered {other:?}"))),
            }
        }
        Err(O2cError::dependency("state-store", format!("engagement {engagement_id} kept changing while raising a dead-letter exception")))
    }
}

/// What every handled event reports: `EventsHandled` per step and outcome (`processed`,
/// `duplicate`, `rejected` — permanent, parked — or `retried`), and for what was
/// processed `EventAgeSeconds`, from the event's `occurred_at` to now (end-to-end latency
/// across the flow's hops).
fn handling_metrics(
    step: Step,
    meta: &o2c_domain::events::EventMeta,
    result: &Result<Handled, O2cError>,
    now: DateTime<Utc>,
) -> Vec<o2c_domain::metrics::Metric> {
    use o2c_domain::metrics::{Metric, MetricUnit};
    use rust_decimal::Decimal;
    let outcome = match result {
        Ok(h) if h.duplicate => "duplicate",
        Ok(_) => "processed",
        Err(e) if e.is_retryable() => "retried",
        Err(_) => "rejected",
    };
    let mut out = vec![Metric::new("EventsHandled", MetricUnit::Count, Decimal::ONE, &[("Step", step.name()), ("Outcome", outcome)])];
    if outcome == "processed" {
        let age = Decimal::from((now - meta.occurred_at).num_milliseconds().max(0)) / Decimal::from(1000);
        out.push(Metric::new("EventAgeSeconds", MetricUnit::Seconds, age, &[("Step", step.name())]));
    }
    out
}

/// The idempotency key of `step` handling the event described by `meta`.
fn key_of(step: Step, meta: &o2c_domain::events::EventMeta) -> String {
    format!("{}#{}", step.name(), meta.idempotency_key)
}

fn snapshot(state: &Option<Versioned<Engagement>>) -> Option<Snapshot<'_>> {
    state.as_ref().map(|v| Snapshot { engagement: &v.value, version: v.version })
}

fn expected(state: &Option<Versioned<Engagement>>) -> ExpectedVersion {
    state.as_ref().map_or(ExpectedVersion::New, |v| ExpectedVersion::Is(v.version))
}

/// The state after our own write of `written` (no re-read needed).
fn advance(state: &mut Option<Versioned<Engagement>>, written: Option<Engagement>) {
    if let Some(value) = written {
        let version = expected(state).next();
        *state = Some(Versioned { value, version });
    }
}

fn lost(run: &Run<'_>) -> O2cError {
    run.lost.store(true, std::sync::atomic::Ordering::Relaxed);
    O2cError::dependency("idempotency", format!("reservation {} was lost (expired and taken over) before commit", run.key))
}

fn mismatch(key: &str) -> O2cError {
    O2cError::Conflict(format!("idempotency key {key} was already used for a different payload"))
}
