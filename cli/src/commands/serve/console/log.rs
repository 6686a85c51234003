//! What operators did through the console, by whom, and the requests the gate refused.

use std::sync::Arc;

use axum::Extension;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::Response;
use maud::{Markup, html};
use o2c_embedded::access::{self, OperatorAction, Refusals};

use super::layout::{at, thead};
use super::session::Session;
use super::source::Source;
use super::{Console, Viewer, failed, render};
use crate::commands::serve::auth::Caller;

const SECTION: &str = "/console/log";

/// `GET /console/log`.
pub async fn page(State(s): State<Arc<Console>>, Extension(caller): Extension<Caller>, Extension(session): Extension<Session>) -> Response {
    let v = Viewer::from(caller, session);
    let title = "Operator log";
    let Source::Embedded(rt) = &s.source else {
        let why = "On AWS the console's actions are log lines of this process (`console action`), the AWS calls it made are \
                   in CloudTrail under your identity, and each exception action is on its case's history.";
        return failed(&s, &v, title, SECTION, StatusCode::NOT_FOUND, why);
    };
    let (actions, refusals) = match (access::actions(rt.db(), 200).await, access::refusals(rt.db(), 100).await) {
        (Ok(a), Ok(r)) => (a, r),
        (Err(e), _) | (_, Err(e)) => return failed(&s, &v, title, SECTION, StatusCode::SERVICE_UNAVAILABLE, e),
    };
    render(&s, &v, title, SECTION, view(&actions, &refusals))
}

fn view(actions: &[OperatorAction], refusals: &Refusals) -> Markup {
    html! {
        h2 { "Console actions" }
        table #actions {
            caption { "Latest first (exception actions are also on each case's history and its engagement's timeline)" }
            (thead(&["At", "Operator", "Action", "On", "Outcome", "From"]))
            tbody {
                @for a in actions {
                    tr { td { (at(a.at)) } td { (a.actor) } td { (a.action) } td { (a.object.as_deref().unwrap_or("—")) } td { (a.outcome) } td { (a.remote.as_deref().unwrap_or("—")) } }
                }
            }
        }
        h2 { "Refused requests" }
        p { (refusals.total) " refused since the database began; the latest:" }
        table #refusals {
            (thead(&["At", "Status#", "Code", "Key", "Request", "Reason"]))
            tbody {
                @for r in &refusals.latest {
                    tr {
                        td { (at(r.at)) } td.num { (r.status) } td { (r.code) }
                        td { (r.name.as_deref().or(r.key_id.as_deref()).unwrap_or("—")) }
                        td { (r.method) " " (r.path) } td { (r.reason) }
                    }
                }
            }
        }
    }
}
