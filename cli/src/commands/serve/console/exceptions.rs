//! The exception queue, one case, and the actions on it (assign, comment, retry, resolve,
//! waive): each action is the `ExceptionActionRequested` the API and the CLI publish, by
//! the signed-in operator, so the workflow's rules decide and its refusals are shown.

use std::sync::Arc;
use std::time::Duration;

use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::Response;
use axum::{Extension, Form};
use chrono::{DateTime, Utc};
use maud::{Markup, html};
use o2c_domain::events::{ExceptionAction, ExceptionKind};
use o2c_domain::exception_case::{CaseEntry, CaseStatus, ExceptionCase};
use serde::Deserialize;

use super::layout::{age, at, badge, csrf, seg, thead};
use super::session::{Flash, Session};
use super::source::with_store;
use super::{Console, Viewer, after, audit, check_csrf, failed, render};
use crate::commands::exceptions::{Filter, action_entry, case as load_case};
use crate::commands::serve::auth::Caller;

const SECTION: &str = "/console/exceptions";

/// The queue's filters as a form sends them (empty fields are no filter).
#[derive(Deserialize, Default)]
pub struct QueueQuery {
    status: Option<String>,
    kind: Option<String>,
    legal_entity: Option<String>,
    engagement: Option<String>,
    assignee: Option<String>,
    older_than_hours: Option<String>,
    all: Option<String>,
}

fn some(v: &Option<String>) -> Option<String> {
    v.as_deref().map(str::trim).filter(|s| !s.is_empty()).map(str::to_owned)
}

impl QueueQuery {
    fn filter(&self) -> Result<Filter, String> {
        let older = match some(&self.older_than_hours) {
            Some(h) => Some(h.parse::<i64>().map_err(|_| format!("`{h}` is not a number of hours"))?),
            None => None,
        };
        Ok(Filter {
            all: self.all.is_some() || some(&self.status).is_some_and(|s| s != "open" && s != "assigned"),
            status: some(&self.status),
            kind: some(&self.kind),
            legal_entity: some(&self.legal_entity),
            engagement: some(&self.engagement),
            older_than_hours: older,
            assignee: some(&self.assignee),
            limit: 200,
        })
    }
}

/// `GET /console/exceptions`.
pub async fn queue(
    State(s): State<Arc<Console>>,
    Extension(caller): Extension<Caller>,
    Extension(session): Extension<Session>,
    Query(q): Query<QueueQuery>,
) -> Response {
    let v = Viewer::from(caller, session);
    let title = "Exception queue";
    let filter = match q.filter() {
        Ok(f) => f,
        Err(e) => return failed(&s, &v, title, SECTION, StatusCode::BAD_REQUEST, e),
    };
    let now = s.source.now();
    match with_store!(s.source, store => filter.apply(store, now).await) {
        Ok(cases) => render(&s, &v, title, SECTION, queue_view(&q, &cases, now)),
        Err(e) => failed(&s, &v, title, SECTION, StatusCode::BAD_REQUEST, format!("{e:#}")),
    }
}

fn queue_view(q: &QueueQuery, cases: &[ExceptionCase], now: DateTime<Utc>) -> Markup {
    let selected = |v: &Option<String>, x: &str| v.as_deref() == Some(x);
    html! {
        form.filters method="get" action=(SECTION) aria-label="Filter the queue" {
            label { "Status"
                select name="status" {
                    option value="" { "open and assigned" }
                    @for st in ["open", "assigned", "cleared", "resolved", "waived"] {
                        option value=(st) selected[selected(&q.status, st)] { (st) }
                    }
                }
            }
            label { "Kind"
                select name="kind" {
                    option value="" { "any" }
                    @for k in ExceptionKind::ALL {
                        option value=(k.as_str()) selected[selected(&q.kind, k.as_str())] { (k.as_str()) }
                    }
                }
            }
            label { "Legal entity" input name="legal_entity" value=[q.legal_entity.as_deref()] size="10"; }
            label { "Engagement or opportunity" input name="engagement" value=[q.engagement.as_deref()] size="18"; }
            label { "Assignee" input name="assignee" value=[q.assignee.as_deref()] size="10"; }
            label { "Older than (hours)" input name="older_than_hours" inputmode="numeric" value=[q.older_than_hours.as_deref()] size="4"; }
            label { "Closed too" input type="checkbox" name="all" value="true" checked[q.all.is_some()]; }
            button type="submit" { "Filter" }
        }
        @if cases.is_empty() {
            p #empty { "No exception matches." }
        } @else {
            table #cases {
                caption { (cases.len()) " case(s), newest first" }
                (thead(&["Exception", "Kind", "Status", "Engagement", "Legal entity", "At stake#", "Assignee", "Age", "Reason"]))
                tbody {
                    @for c in cases {
                        tr data-exception=(c.exception_id.as_str()) {
                            td { a href={ "/console/exceptions/" (seg(c.exception_id.as_str())) } { (c.exception_id.as_str()) } }
                            td { (c.kind.as_str()) }
                            td { (badge(c.status.as_str())) }
                            td { a href={ "/console/engagements/" (seg(c.engagement_id.as_str())) } { (c.engagement_id.as_str()) } }
                            td { (c.legal_entity_id.as_deref().unwrap_or("—")) }
                            td.num { @if let Some(m) = &c.amount_at_stake { (m) } @else { "—" } }
                            td { (c.assignee.as_deref().unwrap_or("—")) }
                            td { (age(c.first_raised_at, now)) }
                            td { (c.message) }
                        }
                    }
                }
            }
        }
    }
}

/// `GET /console/exceptions/{id}`.
pub async fn case(
    State(s): State<Arc<Console>>,
    Extension(caller): Extension<Caller>,
    Extension(session): Extension<Session>,
    Path(id): Path<String>,
) -> Response {
    let v = Viewer::from(caller, session);
    match with_store!(s.source, store => load_case(store, &id).await) {
        Ok(Some(c)) => {
            let now = s.source.now();
            let content = case_view(&c, &v.session, v.name(), now);
            render(&s, &v, &format!("Exception {}", c.exception_id.as_str()), SECTION, content)
        }
        Ok(None) => failed(&s, &v, "Exception", SECTION, StatusCode::NOT_FOUND, format!("No exception {id}.")),
        Err(e) => failed(&s, &v, "Exception", SECTION, StatusCode::SERVICE_UNAVAILABLE, format!("{e:#}")),
    }
}

fn case_view(c: &ExceptionCase, session: &Session, me: &str, now: DateTime<Utc>) -> Markup {
    let id = c.exception_id.as_str();
    let action = format!("/console/exceptions/{}/actions", seg(id));
    let closed = matches!(c.status, CaseStatus::Resolved | CaseStatus::Waived | CaseStatus::Cleared);
    html! {
        dl.facts {
            dt { "Status" } dd #status { (badge(c.status.as_str())) }
            dt { "Kind" } dd { (c.kind.as_str()) @if c.kind.is_financial() { " (financial: whoever caused it may not resolve or waive it)" } }
            dt { "Engagement" } dd { a href={ "/console/engagements/" (seg(c.engagement_id.as_str())) } { (c.engagement_id.as_str()) } }
            dt { "Raised by step" } dd { (c.step) }
            dt { "Reason" } dd { (c.message) }
            dt { "Legal entity" } dd { (c.legal_entity_id.as_deref().unwrap_or("—")) }
            dt { "Money at stake" } dd { @if let Some(m) = &c.amount_at_stake { (m) } @else { "—" } }
            dt { "Caused by" } dd { @if c.caused_by.is_empty() { "—" } @else { (c.caused_by.join(", ")) } }
            dt { "Assignee" } dd #assignee { (c.assignee.as_deref().unwrap_or("—")) }
            dt { "First raised" } dd { (at(c.first_raised_at)) " (" (age(c.first_raised_at, now)) " ago)" }
            dt { "Correlation id" } dd { code { (c.correlation_id) } }
            dt { "Retries" } dd { (c.retries) }
            @if let Some(src) = &c.source_event {
                dt { "Source event" } dd { (src.detail_type) " " code { (src.event_id) } }
            }
            @if !c.compensations.is_empty() {
                dt { "Compensations" } dd { ul { @for k in &c.compensations { li { (k.system) " " (k.action) " " (k.object_id) " → " (k.outcome) } } } }
            }
        }
        h2 { "Act on it" }
        @if closed {
            p { "The case is closed: comments only." }
        }
        div.actions {
            @if !closed {
                form.action method="post" action=(action) aria-label="Assign" {
                    (csrf(session)) input type="hidden" name="action" value="assign";
                    label { "Assign to" input name="to" value=(me) required; }
                    button type="submit" { "Assign" }
                }
                form.action method="post" action=(action) aria-label="Retry" {
                    (csrf(session)) input type="hidden" name="action" value="retry";
                    p.hint { "Re-drive the source event (same payload, same correlation id)." }
                    button type="submit" { "Retry" }
                }
                form.action method="post" action=(action) aria-label="Resolve" {
                    (csrf(session)) input type="hidden" name="action" value="resolve";
                    label { "What was done" textarea #resolve-reason name="reason" rows="2" required {} }
                    button #resolve type="submit" { "Resolve" }
                }
                form.action method="post" action=(action) aria-label="Waive" {
                    (csrf(session)) input type="hidden" name="action" value="waive";
                    label { "Why it may stand" textarea name="reason" rows="2" required {} }
                    button type="submit" { "Waive" }
                }
            }
            form.action method="post" action=(action) aria-label="Comment" {
                (csrf(session)) input type="hidden" name="action" value="comment";
                label { "Comment" textarea name="text" rows="2" required {} }
                button type="submit" { "Comment" }
            }
        }
        h2 { "History" }
        table #history {
            caption { "Oldest first" @if c.history_dropped > 0 { " (" (c.history_dropped) " earlier entries dropped)" } }
            (thead(&["At", "Who", "What", "Note"]))
            tbody {
                @for h in &c.history {
                    tr { td { (at(h.at)) } td { (h.actor) } td { (badge(&h.action)) } td { (h.note) } }
                }
            }
        }
    }
}

/// An action form.
#[derive(Deserialize)]
pub struct ActForm {
    csrf: String,
    action: String,
    to: Option<String>,
    text: Option<String>,
    reason: Option<String>,
}

impl ActForm {
    fn action(&self) -> Result<ExceptionAction, String> {
        let need = |v: &Option<String>, what: &str| some(v).ok_or_else(|| format!("{} needs {what}", self.action));
        Ok(match self.action.as_str() {
            "assign" => ExceptionAction::Assign { assignee: need(&self.to, "someone to assign it to")? },
            "comment" => ExceptionAction::Comment { text: need(&self.text, "a comment")? },
            "retry" => ExceptionAction::Retry,
            "resolve" => ExceptionAction::Resolve { reason: need(&self.reason, "what was done")? },
            "waive" => ExceptionAction::Waive { reason: need(&self.reason, "why it may stand")? },
            other => return Err(format!("no action `{other}`")),
        })
    }
}

/// `POST /console/exceptions/{id}/actions`: published as the operator, then — once the
/// workflow has processed it — back to the case with what came of it.
pub async fn act(
    State(s): State<Arc<Console>>,
    Extension(caller): Extension<Caller>,
    Extension(session): Extension<Session>,
    Path(id): Path<String>,
    Form(f): Form<ActForm>,
) -> Response {
    let v = Viewer::from(caller, session);
    if let Err(r) = check_csrf(&s, &v, &f.csrf).await {
        return r;
    }
    let back = format!("/console/exceptions/{}", seg(&id));
    let verb = format!("exception.{}", f.action);
    let action = match f.action() {
        Ok(a) => a,
        Err(e) => return after(&s, &v, &back, Flash { error: true, text: e }),
    };
    let before = match with_store!(s.source, store => load_case(store, &id).await) {
        Ok(Some(c)) => c,
        Ok(None) => return failed(&s, &v, "Exception", SECTION, StatusCode::NOT_FOUND, format!("No exception {id}.")),
        Err(e) => return failed(&s, &v, "Exception", SECTION, StatusCode::SERVICE_UNAVAILABLE, format!("{e:#}")),
    };
    let published = match action_entry(&before, &action, v.name()) {
        Ok(entry) => s.source.publish(entry).await,
        Err(e) => Err(format!("{e:#}")),
    };
    let event_id = match published {
        Ok(id) => id,
        Err(e) => {
            audit(&s, &v, &verb, Some(&id), &format!("not published: {e}")).await;
            return after(&s, &v, &back, Flash { error: true, text: format!("Cannot publish the action now: {e}") });
        }
    };
    let flash = match processed(&s, &id, &before, v.name(), &f.action).await {
        Some(c) => outcome(&before, &c, v.name(), &f.action),
        None => Flash { error: false, text: format!("Submitted ({event_id}); not processed yet — reload in a moment.") },
    };
    audit(&s, &v, &verb, Some(&id), &format!("{} (event {event_id})", flash.text)).await;
    after(&s, &v, &back, flash)
}

/// The history entry an action by `me` adds: its own (`resolved` for `resolve`, …) or its
/// refusal.
fn mine<'c>(c: &'c ExceptionCase, before: &ExceptionCase, me: &str, verb: &str) -> Option<&'c CaseEntry> {
    let done = match verb {
        "assign" => "assigned",
        "comment" => "commented",
        "retry" => "retried",
        "resolve" => "resolved",
        "waive" => "waived",
        _ => return None,
    };
    let refused = format!("{verb} refused");
    c.history
        .iter()
        .rev()
        .take_while(|h| h.at > before.updated_at)
        .find(|h| h.actor == me && (h.action == done || (h.action == "refused" && h.note.starts_with(&refused))))
}

/// The case once the workflow recorded this operator's action, within the source's
/// `processed_within` (another operator's change to the case meanwhile is not taken for it).
async fn processed(s: &Console, id: &str, before: &ExceptionCase, me: &str, verb: &str) -> Option<ExceptionCase> {
    let deadline = tokio::time::Instant::now() + s.source.processed_within();
    let mut pause = Duration::from_millis(25);
    loop {
        if let Ok(Some(c)) = with_store!(s.source, store => load_case(store, id).await)
            && mine(&c, before, me, verb).is_some()
        {
            return Some(c);
        }
        if tokio::time::Instant::now() >= deadline {
            return None;
        }
        tokio::time::sleep(pause).await;
        pause = (pause * 2).min(Duration::from_secs(1));
    }
}

/// What the action did, from the entry it added.
fn outcome(before: &ExceptionCase, after: &ExceptionCase, me: &str, verb: &str) -> Flash {
    match mine(after, before, me, verb) {
        Some(h) if h.action == "refused" => Flash { error: true, text: format!("Refused: {}", h.note) },
        _ => Flash { error: false, text: format!("{verb}: done — the case is {}", after.status.as_str()) },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn when_a_form_names_no_reason_should_refuse_to_resolve_before_publishing() {
        let f = ActForm { csrf: String::new(), action: "resolve".into(), to: None, text: None, reason: Some("  ".into()) };
        assert_eq!(f.action(), Err("resolve needs what was done".to_owned()));
        let f = ActForm { csrf: String::new(), action: "drop-table".into(), to: None, text: None, reason: None };
        assert!(f.action().is_err());
        let f = ActForm { csrf: String::new(), action: "assign".into(), to: Some("U-AR-01".into()), text: None, reason: None };
        assert_eq!(f.action(), Ok(ExceptionAction::Assign { assignee: "U-AR-01".into() }));
    }

    #[test]
    fn when_the_queue_filter_asks_for_a_closed_status_should_include_closed_cases() {
        let q = QueueQuery { status: Some("resolved".into()), older_than_hours: Some("".into()), ..Default::default() };
        let f = q.filter().expect("filter");
        assert!(f.all && f.older_than_hours.is_none());
        let q = QueueQuery { older_than_hours: Some("x".into()), ..Default::default() };
        assert!(q.filter().is_err());
    }

    #[test]
    fn when_another_operator_changes_the_case_meanwhile_should_not_take_it_for_my_action() {
        use o2c_domain::events::{ExceptionKind, ExceptionRaised};
        let t = |m: i64| chrono::DateTime::<chrono::Utc>::from_timestamp(1_800_000_000 + m * 60, 0).expect("time");
        let raised: ExceptionRaised = serde_json::from_value(serde_json::json!({
            "exception_id": "EXC-1", "engagement_id": "ENG-1", "kind": ExceptionKind::InvoicePostingFailed.as_str(), "step": "invoice-posting",
            "message": "ERP refused", "caused_by": ["U-FIN-DE-01"]
        }))
        .expect("raised");
        let before = ExceptionCase::raised(&raised, "corr", t(0));
        let mut after = before.clone();
        // Someone else's refused resolve lands first: not mine.
        after.act(&ExceptionAction::Resolve { reason: "x".into() }, "U-FIN-DE-01", t(1));
        assert!(mine(&after, &before, "U-CTRL-01", "resolve").is_none());
        after.act(&ExceptionAction::Resolve { reason: "period reopened".into() }, "U-CTRL-01", t(2));
        assert_eq!(mine(&after, &before, "U-CTRL-01", "resolve").map(|h| h.action.as_str()), Some("resolved"));
        assert!(!outcome(&before, &after, "U-CTRL-01", "resolve").error);
        assert!(outcome(&before, &after, "U-FIN-DE-01", "resolve").error, "the causer's own refusal is theirs");
    }
}
