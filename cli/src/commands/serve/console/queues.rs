//! What did not go through: parked messages (rejected with every reason, kept for repair),
//! each queue's depth, and the dead letters with the failure recorded on each — with a
//! redrive per dead-letter queue.

use std::sync::Arc;

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::Response;
use axum::{Extension, Form};
use maud::{Markup, html};
use o2c_app::ports::{RejectedMessage, RejectionStore};

use super::source::{QueueView, with_store};
use serde::Deserialize;

use super::layout::{at, badge, csrf, thead};
use super::session::{Flash, Session};
use super::{Console, Viewer, after, audit, check_csrf, failed, render};
use crate::commands::serve::auth::Caller;

const SECTION: &str = "/console/queues";

/// `GET /console/queues`.
pub async fn page(State(s): State<Arc<Console>>, Extension(caller): Extension<Caller>, Extension(session): Extension<Session>) -> Response {
    let v = Viewer::from(caller, session);
    let title = "Parked messages and dead letters";
    let parked = match with_store!(s.source, store => store.rejections(200).await) {
        Ok(p) => p,
        Err(e) => return failed(&s, &v, title, SECTION, StatusCode::SERVICE_UNAVAILABLE, e),
    };
    let queues = match s.source.queues(100).await {
        Ok(q) => q,
        Err(e) => return failed(&s, &v, title, SECTION, StatusCode::SERVICE_UNAVAILABLE, format!("{e:#}")),
    };
    render(&s, &v, title, SECTION, view(&parked, &queues, &v.session))
}

fn queue_rows(queues: &[&QueueView]) -> Markup {
    html! {
        @for q in queues {
            tr {
                td { (q.name) }
                td.num { (q.visible) }
                td.num { (q.in_flight) }
                td { @if q.dead_letter { (badge("dead-letter")) " of " (q.source.as_deref().unwrap_or("the bus")) } @else { "work" } }
            }
        }
    }
}

fn view(parked: &[RejectedMessage], queues: &[QueueView], session: &Session) -> Markup {
    let busy: Vec<&QueueView> = queues.iter().filter(|q| q.visible + q.in_flight > 0).collect();
    let head = html! { (thead(&["Queue", "Visible#", "In flight#", "Kind"])) };
    html! {
        h2 { "Dead letters" }
        @if queues.iter().all(|q| q.messages.is_empty()) {
            p #no-dead-letters { "No dead letter." }
        }
        @for q in queues.iter().filter(|q| !q.messages.is_empty()) {
            h3 { (q.name) " (" (q.visible) ")" }
            form method="post" action={ (SECTION) "/" (q.name) "/redrive" } aria-label={ "Redrive " (q.name) } {
                (csrf(session))
                button type="submit" { "Redrive " (q.visible) " to " (q.source.as_deref().unwrap_or("the bus")) }
            }
            table.dead-letters {
                (thead(&["Sent", "Event", "Receives#", "Last failure"]))
                tbody {
                    @for m in &q.messages {
                        tr {
                            td { @if let Some(t) = m.sent_at { (at(t)) } @else { "—" } }
                            td { (m.detail_type.as_deref().unwrap_or("—")) " " code { (m.event_id.as_deref().unwrap_or("")) } }
                            td.num { @if let Some(n) = m.receive_count { (n) } @else { "—" } }
                            td { (m.reason.as_deref().unwrap_or("—")) }
                        }
                    }
                }
            }
        }
        h2 { "Parked (rejected with their reasons)" }
        @if parked.is_empty() {
            p #no-parked { "Nothing parked." }
        } @else {
            table #parked {
                caption { (parked.len()) " parked message(s), latest first; repair and resend with " code { "o2c resubmit" } }
                (thead(&["Rejected", "Step", "Event", "Engagement", "Deliveries", "Every reason"]))
                tbody {
                    @for p in parked {
                        tr {
                            td { (at(p.last_rejected_at.unwrap_or(p.rejected_at))) }
                            td { (p.step) }
                            td { (p.detail_type.as_deref().unwrap_or("—")) " " code { (p.event_id.as_deref().unwrap_or("")) } }
                            td { @if let Some(e) = &p.engagement_id { a href={ "/console/engagements/" (e) } { (e) } } @else { "—" } }
                            td.num { (p.deliveries) }
                            td { ul { @for i in &p.reasons { li { code { (i.field) } " [" (i.code) "] " (i.message) } } } }
                        }
                    }
                }
            }
        }
        h2 { "Queues" }
        @if busy.is_empty() {
            p #queues-idle { "All " (queues.len()) " queues are empty." }
        } @else {
            table #queues { caption { "Queues holding messages" } (head) tbody { (queue_rows(&busy)) } }
        }
        details {
            summary { "Every queue (" (queues.len()) ")" }
            table #all-queues { (head) tbody { (queue_rows(&queues.iter().collect::<Vec<_>>())) } }
        }
    }
}

/// The redrive form.
#[derive(Deserialize)]
pub struct RedriveForm {
    csrf: String,
}

/// How many messages one redrive moves at most.
const REDRIVE_AT_MOST: usize = 1000;

/// `POST /console/queues/{queue}/redrive`.
pub async fn redrive(
    State(s): State<Arc<Console>>,
    Extension(caller): Extension<Caller>,
    Extension(session): Extension<Session>,
    Path(queue): Path<String>,
    Form(f): Form<RedriveForm>,
) -> Response {
    let v = Viewer::from(caller, session);
    if let Err(r) = check_csrf(&s, &v, &f.csrf).await {
        return r;
    }
    if !s.source.is_dlq(&queue) {
        return after(&s, &v, SECTION, Flash { error: true, text: format!("{queue} is not a dead-letter queue") });
    }
    let flash = match s.source.redrive(&queue, REDRIVE_AT_MOST).await {
        Ok((n, to)) => Flash { error: false, text: format!("Redrove {n} message(s) from {queue} to {to}") },
        Err(e) => Flash { error: true, text: format!("Cannot redrive {queue}: {e:#}") },
    };
    audit(&s, &v, "dlq.redrive", Some(&queue), &flash.text).await;
    after(&s, &v, SECTION, flash)
}
