//! `o2c exceptions`: the operator queue — list and filter, show one case with its history,
//! and work it: assign, comment, retry (re-drive its source event), resolve, waive.
//!
//! Actions are events (`ExceptionActionRequested`, source `o2c.operator`) handled by the
//! `exceptions` step, on either target: embedded, they are processed before the command
//! returns and the case is shown; on AWS they are published to the stage's bus. An action
//! the step refuses (segregation of duties, a closed case) is recorded on the case, and on
//! the embedded target the command exits with 3.

use std::process::ExitCode;

use anyhow::{Result, bail};
use chrono::{DateTime, Utc};
use clap::{Args as ClapArgs, Subcommand};
use o2c_app::clock::{Clock, IdGenerator, RandomIds, SystemClock};
use o2c_app::ports::{CaseFilter, EngagementStore};
use o2c_domain::aggregate::AggregateKey;
use o2c_domain::events::{ExceptionAction, ExceptionKind};
use o2c_domain::exception_case::{CaseStatus, ExceptionCase};

use super::publish::{entry, envelope, publish};
use crate::backend::Backend;
use crate::{Target, engagement_id, print, with_backend};

/// Exit code of an action the exception workflow refused.
pub const REFUSED: u8 = crate::exit::REFUSED;

/// Which cases to list (command-line flags, or the query string of `GET /v1/exceptions`).
#[derive(ClapArgs, Clone, Default, serde::Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Filter {
    /// Closed ones too (cleared, resolved, waived).
    #[arg(long)]
    pub all: bool,
    /// Only this status (`open`, `assigned`, `cleared`, `resolved`, `waived`).
    #[arg(long)]
    pub status: Option<String>,
    /// Only this kind (`tax_failed`, `dead_lettered`, …).
    #[arg(long)]
    pub kind: Option<String>,
    /// Only this legal entity.
    #[arg(long = "legal-entity")]
    pub legal_entity: Option<String>,
    /// Only this engagement (or opportunity id).
    #[arg(long)]
    pub engagement: Option<String>,
    /// Only cases first raised at least this many hours ago.
    #[arg(long = "older-than-hours")]
    pub older_than_hours: Option<i64>,
    /// Only cases assigned to this user.
    #[arg(long)]
    pub assignee: Option<String>,
    /// At most this many.
    #[arg(long, default_value_t = 100)]
    pub limit: usize,
}

impl Filter {
    /// The store-level filter (status group and limit); the rest is [`Filter::keeps`].
    pub fn store(&self) -> Result<CaseFilter> {
        if let Some(s) = &self.status
            && CaseStatus::parse(s).is_none()
        {
            usage!("unknown status `{s}` (open, assigned, cleared, resolved, waived)");
        }
        if let Some(k) = &self.kind
            && ExceptionKind::parse(k).is_none()
        {
            usage!("unknown kind `{k}` ({})", ExceptionKind::ALL.map(|k| k.as_str()).join(", "));
        }
        let status = self.status.as_deref().and_then(CaseStatus::parse);
        // Finer filters apply after the read (newest first per index partition): read
        // enough to fill the page — at most 1000 per partition.
        Ok(CaseFilter { open_only: !self.all, status, limit: (self.limit.max(100) * 4).min(1000) })
    }

    /// True when `c` passes every filter at `now`.
    pub fn keeps(&self, c: &ExceptionCase, now: DateTime<Utc>) -> bool {
        let eng = self.engagement.as_deref().map(engagement_id);
        self.status.as_deref().is_none_or(|s| c.status.as_str() == s)
            && self.kind.as_deref().is_none_or(|k| c.kind.as_str() == k)
            && self.legal_entity.as_deref().is_none_or(|le| c.legal_entity_id.as_deref() == Some(le))
            && eng.as_deref().is_none_or(|e| c.engagement_id == e)
            && self.older_than_hours.is_none_or(|h| c.age_hours(now) >= h)
            && self.assignee.as_deref().is_none_or(|a| c.assignee.as_deref() == Some(a))
    }

    /// The page: filtered, in queue order, at most `limit` (100 when 0).
    pub async fn apply<S: EngagementStore>(&self, store: &S, now: DateTime<Utc>) -> Result<Vec<ExceptionCase>> {
        let mut cases: Vec<ExceptionCase> =
            store.exception_cases(&self.store()?).await?.into_iter().filter(|c| self.keeps(c, now)).collect();
        cases.truncate(if self.limit == 0 { 100 } else { self.limit });
        Ok(cases)
    }
}

/// Who acts, and where.
#[derive(ClapArgs)]
pub struct Acting {
    #[command(flatten)]
    target: Target,
    /// Exception id (`EXC-…`).
    exception: String,
    /// The operator's user id (recorded; checked for segregation of duties).
    #[arg(long = "as")]
    actor: String,
    /// Embedded: a running `o2c serve` to send the action to.
    #[arg(long)]
    url: Option<String>,
}

/// Subcommands.
#[derive(Subcommand)]
pub enum Cmd {
    /// The queue: open cases, newest first (filters: status, kind, legal entity, engagement, age, assignee).
    List {
        #[command(flatten)]
        target: Target,
        #[command(flatten)]
        filter: Filter,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// One case: what, where, money at stake, source event, status and history.
    Show {
        #[command(flatten)]
        target: Target,
        /// Exception id.
        exception: String,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Take a case or hand it to someone.
    Assign {
        #[command(flatten)]
        acting: Acting,
        /// Who works it.
        #[arg(long)]
        to: String,
    },
    /// Note something on a case.
    Comment {
        #[command(flatten)]
        acting: Acting,
        /// The note.
        #[arg(long)]
        text: String,
    },
    /// Re-drive the event the case came from (same payload and correlation id).
    Retry {
        #[command(flatten)]
        acting: Acting,
    },
    /// Close a case: fixed.
    Resolve {
        #[command(flatten)]
        acting: Acting,
        /// What was done.
        #[arg(long)]
        reason: String,
    },
    /// Close a case: accepted as is.
    Waive {
        #[command(flatten)]
        acting: Acting,
        /// Why it may stand.
        #[arg(long)]
        reason: String,
    },
}

/// Runs the command.
pub async fn run(cmd: Cmd) -> Result<ExitCode> {
    match cmd {
        Cmd::List { target, filter, json } => with_backend!(target, b => list(&b, &filter, json).await),
        Cmd::Show { target, exception, json } => with_backend!(target, b => show(&b, &exception, json).await),
        Cmd::Assign { acting, to } => act(acting, ExceptionAction::Assign { assignee: to }).await,
        Cmd::Comment { acting, text } => act(acting, ExceptionAction::Comment { text }).await,
        Cmd::Retry { acting } => act(acting, ExceptionAction::Retry).await,
        Cmd::Resolve { acting, reason } => act(acting, ExceptionAction::Resolve { reason }).await,
        Cmd::Waive { acting, reason } => act(acting, ExceptionAction::Waive { reason }).await,
    }
}

async fn list<B: Backend>(b: &B, filter: &Filter, json: bool) -> Result<ExitCode> {
    let now = SystemClock.now();
    let cases = filter.apply(b.store(), now).await?;
    if json {
        outln!("{}", serde_json::to_string_pretty(&cases)?);
    } else {
        print::case_table(&cases, now);
    }
    Ok(ExitCode::SUCCESS)
}

/// One case from the store.
pub async fn case<S: EngagementStore>(store: &S, id: &str) -> Result<Option<ExceptionCase>> {
    Ok(store.load_aggregates(&[AggregateKey::exception_case(id)]).await?.exception_case(id).cloned())
}

async fn show<B: Backend>(b: &B, id: &str, json: bool) -> Result<ExitCode> {
    let Some(c) = case(b.store(), id).await? else { bail!("no exception {id} in {}", b.label()) };
    if json {
        outln!("{}", serde_json::to_string_pretty(&c)?);
    } else {
        print::case(&c, SystemClock.now());
    }
    Ok(ExitCode::SUCCESS)
}

/// The `ExceptionActionRequested` entry for `action` on case `c` by `actor`.
pub fn action_entry(c: &ExceptionCase, action: &ExceptionAction, actor: &str) -> Result<o2c_app::bus::PutEventsEntry> {
    let id = RandomIds.new_id();
    let payload = serde_json::json!({
        "exception_id": c.exception_id, "engagement_id": c.engagement_id, "action": action, "actor": actor,
    });
    // The case's correlation id: the action is part of the flow that failed.
    let detail = envelope(&id, &c.correlation_id, &format!("operator:{}:{}:{id}", c.exception_id, action.name()), payload);
    Ok(entry("o2c.operator", "ExceptionActionRequested", &detail))
}

async fn act(a: Acting, action: ExceptionAction) -> Result<ExitCode> {
    let Some(c) = with_backend!(a.target, b => case(b.store(), &a.exception).await)? else {
        bail!("no exception {}", a.exception);
    };
    let entries = vec![action_entry(&c, &action, &a.actor)?];
    let (code, rt) = publish(&a.target, a.url.as_deref(), entries).await?;
    let Some(rt) = rt else { return Ok(code) };
    let Some(after) = case(rt.store(), &a.exception).await? else { bail!("exception {} vanished", a.exception) };
    print::case(&after, SystemClock.now());
    // What this action added: the entries after the case's last change (the history may
    // be at its cap, so counting entries would not tell).
    let refusal = after.history.iter().filter(|h| h.at > c.updated_at).find(|h| h.action == "refused");
    if let Some(r) = refusal {
        eprintln!("o2c: {}", r.note);
        return Ok(ExitCode::from(REFUSED));
    }
    Ok(code)
}
