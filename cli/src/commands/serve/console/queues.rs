//! What did not go through: parked messages (rejected with every reason, kept for repair),
//! each queue's depth, and the dead letters with the failure recorded on each — with a
//! redrive per dead-letter queue.

use std::sync::Arc;

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::Response;
use axum::{Extension, Form};
use maud::{Markup, html};
use o2c_app::bus::entries_from_json;
use o2c_app::ports::{RejectedMessage, RejectionStore};

use super::source::{QueueView, with_store};
use serde::Deserialize;

use super::layout::{at, badge, csrf, seg, thead};
use super::session::{Flash, Session};
use super::{Console, Viewer, after, audit, check_csrf, failed, render};
use crate::commands::serve::auth::Caller;

const SECTION: &str = "/console/queues";

/// `GET /console/queues`.
pub async fn page(State(s): State<Arc<Console>>, Extension(caller): Extension<Caller>, Extension(session): Extension<Session>) -> Response {
    let v = Viewer::from(caller, session);
    let title = "Parked messages and dead letters";
    let parked = match with_store!(s.source, store => store.rejections(PARKED_LISTED).await) {
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
        @if queues.iter().all(|q| !q.dead_letter || q.visible + q.in_flight == 0) {
            p #no-dead-letters { "No dead letter." }
        }
        @for q in queues.iter().filter(|q| q.dead_letter && q.visible + q.in_flight > 0) {
            h3 { (q.name) " (" (q.visible) ")" }
            @if q.visible > 0 {
                form method="post" action={ (SECTION) "/" (seg(&q.name)) "/redrive" } aria-label={ "Redrive " (q.name) } {
                    (csrf(session))
                    button type="submit" { "Redrive " (q.visible) " to " (q.source.as_deref().unwrap_or("the bus")) }
                }
            }
            @if q.messages.is_empty() {
                p.hint { "Its messages cannot be read just now (in flight, or being read by another operator): reload in a moment." }
            }
            table.dead-letters id={ "dl-" (q.name) } {
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
                caption { (parked.len()) " parked message(s), latest first; once the cause is fixed, resubmit one: its event again under a fresh key, same correlation id (" code { "o2c resubmit" } ")" }
                (thead(&["Rejected", "Step", "Event", "Engagement", "Deliveries#", "Every reason", "Once repaired"]))
                tbody {
                    @for p in parked {
                        tr {
                            td { (at(p.last_rejected_at.unwrap_or(p.rejected_at))) }
                            td { (p.step) }
                            td { (p.detail_type.as_deref().unwrap_or("—")) " " code { (p.event_id.as_deref().unwrap_or("")) } }
                            td { @if let Some(e) = &p.engagement_id { a href={ "/console/engagements/" (seg(e)) } { (e) } } @else { "—" } }
                            td.num { (p.deliveries) }
                            td { ul { @for i in &p.reasons { li { code { (i.field) } " [" (i.code) "] " (i.message) } } } }
                            td {
                                form method="post" action={ (SECTION) "/parked/" (seg(&p.rejection_id)) "/resubmit" } aria-label={ "Resubmit " (p.rejection_id) } {
                                    (csrf(session))
                                    button type="submit" { "Resubmit" }
                                }
                            }
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

/// How many parked messages the page lists.
const PARKED_LISTED: usize = 200;

/// `POST /console/queues/parked/{rejection_id}/resubmit`: the parked message's events
/// again, each under a fresh event id and idempotency key, caused by the original, same
/// payload and correlation id (what `o2c resubmit` sends).
pub async fn resubmit(
    State(s): State<Arc<Console>>,
    Extension(caller): Extension<Caller>,
    Extension(session): Extension<Session>,
    Path(rejection_id): Path<String>,
    Form(f): Form<RedriveForm>,
) -> Response {
    let v = Viewer::from(caller, session);
    if let Err(r) = check_csrf(&s, &v, &f.csrf).await {
        return r;
    }
    let parked = match with_store!(s.source, store => store.rejections(PARKED_SEARCHED).await) {
        Ok(p) => p.into_iter().find(|p| p.rejection_id == rejection_id),
        Err(e) => return after(&s, &v, SECTION, Flash { error: true, text: format!("Cannot read the parked messages: {e}") }),
    };
    let Some(parked) = parked else {
        return after(&s, &v, SECTION, Flash { error: true, text: format!("No parked message {rejection_id}") });
    };
    let entries = serde_json::from_str::<serde_json::Value>(&parked.body).ok().and_then(|v| entries_from_json(&v).ok()).unwrap_or_default();
    if entries.is_empty() {
        let text = format!("{rejection_id} holds no event to resubmit (its body is not an event): repair it and send it with o2c send");
        return after(&s, &v, SECTION, Flash { error: true, text });
    }
    // Ids derived from the parked record and how often it was delivered: a double click or a
    // second operator sends the same events again, and the steps absorb the copies. (A copy
    // rejected again is parked under a record of its own — its body differs — and is
    // resubmitted from there.)
    let mut sent = Vec::new();
    for (n, e) in entries.into_iter().enumerate() {
        let id = uuid::Uuid::new_v5(&uuid::Uuid::NAMESPACE_OID, format!("resubmit|{rejection_id}|{}|{n}", parked.deliveries).as_bytes());
        match s.source.publish(crate::commands::resubmit::fresh_as(e, &id.to_string())).await {
            Ok(id) => sent.push(id),
            Err(why) => {
                let text = format!("Resubmitted {} event(s) of {rejection_id}, then the bus refused one: {why}", sent.len());
                audit(&s, &v, "parked.resubmit", Some(&rejection_id), &text).await;
                return after(&s, &v, SECTION, Flash { error: true, text });
            }
        }
    }
    let text = format!("Resubmitted {} event(s) of {rejection_id}: {}", sent.len(), sent.join(", "));
    audit(&s, &v, "parked.resubmit", Some(&rejection_id), &text).await;
    after(&s, &v, SECTION, Flash { error: false, text })
}

/// How many parked messages the page lists and a resubmit searches for its id (newest
/// first): a resubmit acts on what the page showed (each is a read on DynamoDB).
const PARKED_SEARCHED: usize = PARKED_LISTED;
