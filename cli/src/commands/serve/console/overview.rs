//! The overview: what needs an operator now (open exceptions, parked messages, dead
//! letters, reconciliation breaks, overdue receivables), engagements by status, and three
//! charts — activation lead time, exceptions by kind over the last two weeks, ageing.

use std::collections::BTreeMap;
use std::sync::Arc;

use axum::Extension;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::Response;
use chrono::{DateTime, Duration, NaiveDate, Utc};
use maud::{Markup, html};
use o2c_app::ports::{CaseFilter, EngagementFilter, EngagementStore, RejectionStore};
use o2c_domain::engagement::{Action, EngagementStatus};
use o2c_domain::exception_case::ExceptionCase;
use rust_decimal::Decimal;

use super::charts::{Bar, bars};
use super::layout::{seg, thead};
use super::session::Session;
use super::source::with_store;
use super::{Console, Viewer, failed, render};
use crate::commands::serve::auth::Caller;

const SECTION: &str = "/console";

/// How many engagements the overview reads (most recently changed first).
const ENGAGEMENTS_READ: usize = 1000;
/// How many active engagements' timelines the lead-time chart reads.
const LEAD_TIMES_READ: usize = 200;
/// How many cases the overview reads (newest first): the open ones for the count, every
/// status for the chart of the last [`DAYS`] days. On DynamoDB each case is a read, so this
/// bounds the page's cost (a count beyond it shows the bound).
const CASES_READ: usize = 1000;
/// Days of exceptions charted.
const DAYS: i64 = 14;

/// Lead-time buckets: (upper bound in seconds, label).
const LEAD_BUCKETS: [(i64, &str); 6] =
    [(60, "< 1 min"), (600, "1–10 min"), (3_600, "10–60 min"), (86_400, "1–24 h"), (604_800, "1–7 d"), (i64::MAX, "> 7 d")];

struct Counts {
    by_status: BTreeMap<String, u64>,
    open_cases: usize,
    parked: usize,
    dead_letters: u64,
    breaks: usize,
    overdue: usize,
}

/// `GET /console`.
pub async fn page(State(s): State<Arc<Console>>, Extension(caller): Extension<Caller>, Extension(session): Extension<Session>) -> Response {
    let v = Viewer::from(caller, session);
    let title = "Overview";
    match gather(&s).await {
        Ok((counts, leads, cases, ageing, now)) => render(&s, &v, title, SECTION, view(&counts, &leads, &cases, ageing, now)),
        Err(e) => failed(&s, &v, title, SECTION, StatusCode::SERVICE_UNAVAILABLE, format!("{e:#}")),
    }
}

type Gathered = (Counts, Vec<i64>, Vec<ExceptionCase>, BTreeMap<&'static str, Vec<Bar>>, DateTime<Utc>);

async fn gather(s: &Console) -> anyhow::Result<Gathered> {
    let now = s.source.now();
    let dead_letters = s.source.dead_letters().await?;
    with_store!(s.source, store => gather_from(store, s.reference.legal_entities.keys().cloned(), dead_letters, now).await)
}

async fn gather_from<S: EngagementStore + RejectionStore>(
    store: &S,
    entities: impl Iterator<Item = String>,
    dead_letters: u64,
    now: DateTime<Utc>,
) -> anyhow::Result<Gathered> {
    let rows = store.list(&EngagementFilter { status: None, open_exceptions: false, limit: ENGAGEMENTS_READ, after: None }).await?;
    let mut by_status: BTreeMap<String, u64> = BTreeMap::new();
    for r in &rows {
        *by_status.entry(r.status.clone()).or_default() += 1;
    }
    let mut leads = Vec::new();
    for r in rows.iter().filter(|r| r.status == EngagementStatus::Active.as_str()).take(LEAD_TIMES_READ) {
        let trail = store.audit_trail(&r.engagement_id).await?;
        let first = trail.first().map(|a| a.at);
        let active = trail.iter().find(|a| a.action == Action::Activated).map(|a| a.at);
        if let (Some(a), Some(b)) = (first, active) {
            leads.push((b - a).num_seconds().max(0));
        }
    }
    // The open cases read on their own: the newest thousand of every status could leave
    // out the oldest open ones, the ones most in need of an operator.
    let open_cases = store.exception_cases(&CaseFilter { open_only: true, status: None, limit: CASES_READ }).await?.len();
    let cases = store.exception_cases(&CaseFilter { open_only: false, status: None, limit: CASES_READ }).await?;
    let parked = store.rejections(1000).await?.len();
    let (reports, _) = crate::commands::reconcile::reports(store, None, None).await?;
    let breaks = reports.iter().filter(|r| !r.is_clean()).count();
    let receivables = super::receivables::all(store, entities).await?;
    let today = now.date_naive();
    let overdue = receivables.iter().map(|r| r.overdue(today).len()).sum();
    let ageing = super::receivables::ageing_bars(&receivables, today);
    Ok((Counts { by_status, open_cases, parked, dead_letters, breaks, overdue }, leads, cases, ageing, now))
}

/// The lead times counted into [`LEAD_BUCKETS`].
fn lead_bars(leads: &[i64]) -> Vec<Bar> {
    LEAD_BUCKETS
        .iter()
        .enumerate()
        .map(|(i, (upper, label))| {
            let lower = if i == 0 { 0 } else { LEAD_BUCKETS[i - 1].0 };
            let n = leads.iter().filter(|s| **s >= lower && **s < *upper).count();
            Bar { label: (*label).to_owned(), parts: vec![("engagements".to_owned(), Decimal::from(n))] }
        })
        .collect()
}

/// Cases first raised on each of the last [`DAYS`] days, per kind.
fn exception_bars(cases: &[ExceptionCase], today: NaiveDate) -> Vec<Bar> {
    (0..DAYS)
        .rev()
        .map(|back| {
            let day = today - Duration::days(back);
            let mut kinds: BTreeMap<&str, u64> = BTreeMap::new();
            for c in cases.iter().filter(|c| c.first_raised_at.date_naive() == day) {
                *kinds.entry(c.kind.as_str()).or_default() += 1;
            }
            Bar {
                label: day.format("%m-%d").to_string(),
                parts: kinds.into_iter().map(|(k, n)| (k.to_owned(), Decimal::from(n))).collect(),
            }
        })
        .collect()
}

fn card(id: &str, n: impl std::fmt::Display, label: &str, href: &str) -> Markup {
    html! { a.card #(id) href=(href) { div.n { (n) } div { (label) } } }
}

fn view(c: &Counts, leads: &[i64], cases: &[ExceptionCase], ageing: BTreeMap<&'static str, Vec<Bar>>, now: DateTime<Utc>) -> Markup {
    html! {
        h2 { "Needs an operator" }
        div.cards {
            (card("open-exceptions", c.open_cases, "open exceptions", "/console/exceptions"))
            (card("parked", c.parked, "parked messages", "/console/queues"))
            (card("dead-letters", c.dead_letters, "dead letters", "/console/queues"))
            (card("breaks", c.breaks, "reconciliation breaks", "/console/reconciliation"))
            (card("overdue", c.overdue, "overdue invoices", "/console/receivables"))
        }
        h2 { "Engagements by status" }
        table #by-status {
            (thead(&["Status", "Engagements#"]))
            tbody {
                @for (st, n) in &c.by_status {
                    tr { td { a href={ "/console/engagements?status=" (seg(st)) } { (st) } } td.num { (n) } }
                }
            }
        }
        (bars("lead-time-chart", "Activation lead time", &format!("Time from the first event to activation, {} active engagement(s)", leads.len()), "engagements", &lead_bars(leads)))
        (bars("exceptions-chart", "Exceptions raised per day, by kind", "Exceptions first raised on each of the last fourteen days, stacked by kind", "cases", &exception_bars(cases, now.date_naive())))
        (super::receivables::ageing_charts("overview-ageing-chart", &ageing))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn when_lead_times_straddle_bucket_bounds_should_count_each_in_exactly_one_bucket() {
        let b = lead_bars(&[0, 59, 60, 599, 600, 86_399, 86_400, 10_000_000]);
        let n: Vec<String> = b.iter().map(|b| b.parts[0].1.to_string()).collect();
        assert_eq!(n, ["2", "2", "1", "1", "1", "1"]);
    }
}
